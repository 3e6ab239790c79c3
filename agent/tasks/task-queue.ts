// The durable task queue: what the scheduler told the box to fetch (`task.fetch`), kept across restarts, run a few
// at a time, each through agent/fetch into a partial file and then into the store.
//
// Guarantees:
// - An accepted task is durable before the command is answered: a record in `<stateDir>/tasks.log` (a CRC-framed
//   record log), removed (an "end" record) only when the task is done, failed or dropped. A power cut loses no
//   accepted task; a restart runs the live ones again, and each resumes from the groups its partial file had
//   made durable (agent/fetch/partial.ts).
// - No unverified byte becomes an object: the store takes only a partial file the fetcher reports complete and
//   verified. It is moved in (ObjectStore.adopt: no second write or hash) with the outboard it was checked against
//   or built with; an outboard of another group size than the store's goes by ingest, which hashes it once more.
// - At most `concurrency` tasks run at once. While paused (the box is too hot: hashing is CPU work) running tasks
//   stop at their next byte, keeping their verified groups, and nothing starts until the pause ends.
// - Room is checked before a byte is fetched (quota, reserve and what eviction could free, as the store counts
//   them, with the whole length of every other running fetch counted as taken: partial files are not in the
//   store's count) and again by the store's ingest, which evicts least recently used unpinned objects: `no-space`
//   either way. A task that fits only without the other running fetches waits for one of them to end.
//
// tasks.log records (JSON): {"o":"add","task":{objectId,length,sources,outboard?,pin,deadline?,orders?,acceptedAt}}
// and {"o":"end","objectId":...}. Compacted at start when ended records outnumber the live ones.
import { mkdir } from "node:fs/promises";
import { RecordLog } from "../durable/record-log.js";
import { CommandRefused } from "../link/command-gate.js";
import type { DroppedSource, FetchHooks, FetchResult, FetchSpec } from "../fetch/fetcher.js";
import { PartialObject } from "../fetch/partial.js";
import { DEFAULT_GROUP_LOG, parseOutboard } from "../kernels/outboard.js";
import { footprint, MAX_OBJECT_LEN, type StoredObject } from "../store/object-store.js";
import type { TaskCounters } from "../telemetry/work-counters.js";
import { errorLine } from "../util/errors.js";
import { isPlainObject } from "../util/guards.js";
import type { Logger } from "../util/log.js";
import { atTime, realTimeouts, type Timeouts } from "../util/timeouts.js";
import { checkOrder, receiptSigner, type ReceiptKeys } from "./box-orders.js";

export const MAX_SOURCES = 16;
/** Live tasks at most: more is a fleet gone wrong, and task.list must fit in a reply (1 MiB). */
export const MAX_TASKS = 256;
const MAX_URL = 2048;
const ID_HEX = /^[0-9a-f]{64}$/;
/** Ended tasks task.list still shows (newest first), for the fleet to see why one failed. */
const HISTORY = 32;

export interface TaskSpec {
  objectId: string;
  length: number;
  sources: string[];
  outboard?: string;
  pin: boolean;
  /** Epoch ms after which the task fails `expired`. */
  deadline?: number;
  /** Order tokens by source URL: sent as `Sharenode-Order` to a box that serves the object. */
  orders?: Record<string, string>;
  acceptedAt: number;
}

export type TaskStateName = "queued" | "running" | "done" | "failed";

export type FailCode =
  "not-found" | "bad-data" | "no-space" | "expired" | "all-sources-failed" | "store-unavailable" | "io";

export interface TaskView {
  objectId: string;
  length: number;
  state: TaskStateName;
  /** Bytes verified and durable in the partial file (as of the last checkpoint). */
  bytesDone: number;
  sources: number;
  pin: boolean;
  acceptedAt: number;
  deadline?: number;
  code?: FailCode;
  reason?: string;
  dropped?: DroppedSource[];
}

export interface TaskStats {
  queued: number;
  running: number;
  /** Since the agent started. */
  done: number;
  failed: number;
}

/** What the queue needs of the store (agent/store/object-store.ts's ObjectStore). */
export interface TaskStore {
  has(id: string): boolean;
  pin(id: string, pinned?: boolean): Promise<void>;
  delete(id: string): Promise<void>;
  list(): StoredObject[];
  status(): Promise<{ usedBytes: number; quotaBytes: number }>;
  ingest(
    source: AsyncIterable<Uint8Array>,
    options: { expectedId?: string; declaredLength?: number; pin?: boolean },
  ): Promise<{ object: StoredObject; created: boolean }>;
  /** A verified file on the data disk moved in whole (ObjectStore.adopt); absent: every object goes by ingest. */
  adopt?(
    path: string,
    options: { outboard: Uint8Array; pin?: boolean },
  ): Promise<{ object: StoredObject; created: boolean }>;
}

/** What the queue needs of agent/fetch's Fetcher. */
export interface TaskFetcher {
  fetch(spec: FetchSpec, dir: string, hooks?: FetchHooks): Promise<FetchResult>;
}

export interface TaskQueueOptions {
  /** `<stateDir>/tasks.log`. */
  logPath: string;
  /** Where partial files live: on the data disk, outside the store's tmp/ (emptied at every start). */
  partialDir: string;
  store: TaskStore;
  fetcher: TaskFetcher;
  concurrency: number;
  /** Events for the outbox: {type: "task.accepted" | "task.progress" | "task.done" | "task.failed", ...}. */
  event: (body: Record<string, unknown>) => void;
  now?: () => number;
  timeouts?: Timeouts;
  log?: Pick<Logger, "info" | "warn" | "error">;
  /** A progress event at most this often, unless a tenth of the object more is done (default 5 s). */
  progressEveryMs?: number;
  /** The agent's work counters (telemetry's tasks_failed); queued and running are read from stats(). */
  counters?: Pick<TaskCounters, "taskFailed">;
  /**
   * This box's key and the fleet's: a task's orders are checked when it is accepted, and boxes serving under them
   * are paid in receipts (box-orders.ts). Absent: orders are only passed on, and no receipt is signed.
   */
  receipts?: ReceiptKeys;
}

interface Task {
  spec: TaskSpec;
  state: TaskStateName;
  bytesDone: number;
  controller?: AbortController;
  running?: Promise<void>;
  /** Its room was found and is held: other tasks count its whole length as taken until its run ends. */
  holdsRoom?: boolean;
  deadlineTimer?: unknown;
  lastProgressAt: number;
  lastProgressTenth: number;
  code?: FailCode;
  reason?: string;
  dropped?: DroppedSource[];
}

type StopReason = "paused" | "stopping" | "dropped" | "expired";

export class TaskQueue {
  private readonly tasks = new Map<string, Task>();
  private readonly history: Task[] = [];
  private log!: RecordLog;
  private paused = false;
  private stopped = false;
  private readonly counts = { done: 0, failed: 0 };
  private readonly now: () => number;
  private readonly timeouts: Timeouts;

  constructor(private readonly options: TaskQueueOptions) {
    this.now = options.now ?? Date.now;
    this.timeouts = options.timeouts ?? realTimeouts;
  }

  async start(): Promise<void> {
    await mkdir(this.options.partialDir, { recursive: true });
    const opened = await RecordLog.open(this.options.logPath);
    this.log = opened.log;
    if (opened.recovery) this.options.log?.warn(`tasks.log: dropped a torn tail (${opened.recovery.reason})`);
    for (const raw of opened.records) {
      const rec = JSON.parse(Buffer.from(raw).toString("utf8")) as { o: string; task?: TaskSpec; objectId?: string };
      if (rec.o === "add" && rec.task) this.tasks.set(rec.task.objectId, this.newTask(rec.task));
      else if (rec.o === "end" && rec.objectId) this.tasks.delete(rec.objectId);
    }
    if (opened.records.length > 2 * this.tasks.size + 16) {
      await this.log.rewrite([...this.tasks.values()].map((t) => encode({ o: "add", task: t.spec })));
    }
    if (this.tasks.size > 0) this.options.log?.info(`resuming ${this.tasks.size} task(s)`);
    for (const task of this.tasks.values()) this.armDeadline(task);
    this.pump();
  }

  /** Stops the running tasks (their verified groups stay durable) and closes the log. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const task of this.tasks.values()) {
      this.timeouts.clearTimeout(task.deadlineTimer);
      task.controller?.abort("stopping" satisfies StopReason);
    }
    await Promise.allSettled([...this.tasks.values()].flatMap((t) => (t.running ? [t.running] : [])));
    await this.log?.close();
  }

  /** Thermal pause: running tasks stop (keeping their progress) and none starts until it ends. */
  setPaused(paused: boolean): void {
    if (this.paused === paused) return;
    this.paused = paused;
    if (paused) for (const task of this.tasks.values()) task.controller?.abort("paused" satisfies StopReason);
    else this.pump();
  }

  stats(): TaskStats {
    let queued = 0;
    let running = 0;
    for (const t of this.tasks.values()) {
      if (t.state === "running") running++;
      else queued++;
    }
    return { queued, running, ...this.counts };
  }

  /** `task.fetch`: validates, makes the task durable, then answers. */
  async fetch(args: Record<string, unknown>): Promise<TaskView & { duplicate?: boolean; alreadyStored?: boolean }> {
    const spec = this.parseFetch(args);
    const existing = this.tasks.get(spec.objectId);
    if (existing) return { ...view(existing), duplicate: true };
    if (this.options.store.has(spec.objectId)) {
      if (spec.pin) await this.options.store.pin(spec.objectId, true);
      const task = this.newTask(spec);
      task.state = "done";
      task.bytesDone = spec.length;
      this.options.event({ type: "task.done", objectId: spec.objectId, length: spec.length, alreadyStored: true });
      return { ...view(task), alreadyStored: true };
    }
    if (this.tasks.size >= MAX_TASKS)
      throw new CommandRefused("queue-full", `${MAX_TASKS} tasks are queued already; drop some or wait`);
    await this.log.append(encode({ o: "add", task: spec }));
    const task = this.newTask(spec);
    this.tasks.set(spec.objectId, task);
    this.options.event({
      type: "task.accepted",
      objectId: spec.objectId,
      length: spec.length,
      sources: spec.sources.length,
      ...(spec.deadline !== undefined ? { deadline: spec.deadline } : {}),
    });
    this.armDeadline(task);
    this.pump();
    return view(task);
  }

  /**
   * `task.drop`: the box need not hold the object any more. A live task is cancelled (its partial file deleted);
   * a stored object is deleted.
   */
  async drop(
    args: Record<string, unknown>,
  ): Promise<{ objectId: string; task: "cancelled" | "none"; object: "deleted" | "absent" }> {
    const keys = Object.keys(args).filter((k) => k !== "objectId");
    if (keys.length > 0) throw new CommandRefused("bad-args", `unknown argument ${keys[0]}`);
    const objectId = args.objectId;
    if (typeof objectId !== "string" || !ID_HEX.test(objectId))
      throw new CommandRefused("bad-args", "objectId must be 64 lowercase hex digits");
    const task = this.tasks.get(objectId);
    if (task) {
      await this.end(task);
      task.controller?.abort("dropped" satisfies StopReason);
      await task.running?.catch(() => {});
      await this.removePartial(objectId);
    }
    const stored = this.options.store.has(objectId);
    if (stored) await this.options.store.delete(objectId);
    return { objectId, task: task ? "cancelled" : "none", object: stored ? "deleted" : "absent" };
  }

  /** `task.list`: the live tasks in the order they were accepted, then the last ones that ended. */
  list(): { tasks: TaskView[]; ended: TaskView[]; stats: TaskStats } {
    const live = [...this.tasks.values()].sort((a, b) => a.spec.acceptedAt - b.spec.acceptedAt);
    return { tasks: live.map(view), ended: this.history.map(view), stats: this.stats() };
  }

  // --- running -------------------------------------------------------------------------------------------------

  private pump(): void {
    if (this.stopped || this.paused) return;
    let running = 0;
    for (const t of this.tasks.values()) if (t.state === "running") running++;
    const queued = [...this.tasks.values()]
      .filter((t) => t.state === "queued")
      .sort((a, b) => a.spec.acceptedAt - b.spec.acceptedAt);
    for (const task of queued) {
      if (running >= this.options.concurrency) break;
      running++;
      task.state = "running";
      task.controller = new AbortController();
      task.running = this.run(task, task.controller.signal)
        // An error no source explains (the data disk, the store): the task fails rather than being retried in a
        // loop; the fleet may send it again.
        .catch((err) =>
          this.stopped || this.tasks.get(task.spec.objectId) !== task
            ? this.options.log?.error(`task ${task.spec.objectId}: ${errorLine(err)}`)
            : this.fail(task, "io", errorLine(err)),
        )
        .catch((err) => this.options.log?.error(`task ${task.spec.objectId}: ${errorLine(err)}`))
        .finally(() => {
          task.controller = undefined;
          task.running = undefined;
          task.holdsRoom = false;
          if (task.state === "running") task.state = "queued";
          this.pump();
        });
    }
  }

  private async run(task: Task, signal: AbortSignal): Promise<void> {
    const { spec } = task;
    const { store, partialDir } = this.options;
    if (spec.deadline !== undefined && this.now() >= spec.deadline)
      return this.fail(task, "expired", "the deadline passed before the fetch finished");
    // Room is held for every running fetch: its partial file grows to the whole length before the store counts
    // it, so two fetches that each fit alone could otherwise take the disk past the quota (or the reserve) at once.
    // One that fits only once the others' objects are counted waits for one of them to end, then looks again.
    for (;;) {
      const room = await this.room(task);
      if (room.fits) break;
      const holders = [...this.tasks.values()].filter((t) => t !== task && t.holdsRoom && t.running !== undefined);
      if (!room.fitsAlone || holders.length === 0) return this.fail(task, "no-space", room.reason);
      if (signal.aborted) return;
      await Promise.race([
        ...holders.map((t) => t.running!.catch(() => {})),
        new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true })),
      ]);
      if (signal.aborted) return;
    }
    task.holdsRoom = true;
    const keys = this.options.receipts;
    const skipped: string[] = [];
    const receipts =
      keys && receiptSigner(spec.orders, spec.objectId, keys, (url, why) => skipped.push(`${url}: ${why}`));
    // Only a task accepted before its orders were checked can get here: its boxes will stop at their windows.
    if (skipped.length > 0)
      this.options.log?.warn(`task ${spec.objectId}: no receipts under ${skipped.length} order(s): ${skipped[0]}`);
    const result = await this.options.fetcher.fetch(
      {
        objectId: spec.objectId,
        length: spec.length,
        sources: spec.sources,
        outboard: spec.outboard,
        headersFor: (url) => (spec.orders?.[url] ? { "sharenode-order": spec.orders[url] } : undefined),
        receipts,
      },
      partialDir,
      { signal, onCheckpoint: (p) => this.progress(task, p.bytesDurable) },
    );
    if (!result.ok) {
      if (result.code !== "aborted") return this.fail(task, result.code, result.reason, result.dropped);
      const why = signal.reason as StopReason;
      if (why === "expired") return this.fail(task, "expired", "the deadline passed before the fetch finished");
      // Paused, stopping or dropped: the partial file stays for a later run (drop deletes it itself).
      return;
    }
    try {
      await this.handOver(result.partial, result.outboard, spec);
    } catch (err) {
      await result.partial.remove().catch(() => {});
      const code = (err as { code?: unknown }).code;
      if (code === "quota" || code === "disk-full") return this.fail(task, "no-space", errorLine(err), result.dropped);
      if (code === "hash-mismatch") return this.fail(task, "bad-data", errorLine(err), result.dropped);
      if (code === "closed") return; // the agent is stopping: the task runs again at the next start
      return this.fail(task, "io", errorLine(err), result.dropped);
    }
    await result.partial.remove();
    // Dropped while the store took it: task.drop deletes the object once this run has ended; no "done" for it.
    if (signal.aborted && signal.reason === ("dropped" satisfies StopReason)) return;
    if (spec.pin && store.has(spec.objectId)) await store.pin(spec.objectId, true);
    task.bytesDone = spec.length;
    await this.end(task);
    task.state = "done";
    task.dropped = result.dropped;
    this.counts.done++;
    this.remember(task);
    this.options.event({
      type: "task.done",
      objectId: spec.objectId,
      length: spec.length,
      verifiedBy: result.verifiedBy,
      ...(result.dropped.length > 0 ? { dropped: result.dropped } : {}),
    });
  }

  /**
   * The verified partial file becomes an object: moved into the store (adopt: no second write or hash) when its
   * outboard has the store's group size, else copied in by ingest, which hashes it once more.
   */
  private async handOver(partial: PartialObject, outboard: Uint8Array, spec: TaskSpec): Promise<void> {
    const { store } = this.options;
    if (store.adopt && outboardGroupLog(outboard) === DEFAULT_GROUP_LOG) {
      // The file is renamed, not read: it must be closed first (a FUSE disk may refuse to move an open file).
      await partial.close();
      await store.adopt(partial.paths.part, { outboard, pin: spec.pin });
      return;
    }
    await store.ingest(partial.read(), { expectedId: spec.objectId, declaredLength: spec.length, pin: spec.pin });
  }

  /**
   * Whether the task's object fits after evicting every unpinned object, with the whole lengths of the running
   * fetches that hold room counted as taken (fits), and without them (fitsAlone); the reason when it does not fit.
   */
  private async room(task: Task): Promise<{ fits: boolean; fitsAlone: boolean; reason: string }> {
    const { store } = this.options;
    const { usedBytes, quotaBytes } = await store.status();
    // 4096: the usual block size; the store's ingest makes the exact check (and the eviction) anyway.
    const need = footprint(task.spec.length, 4096);
    const evictable = store
      .list()
      .filter((o) => !o.pinned)
      .reduce((sum, o) => sum + footprint(o.length, 4096), 0);
    let held = 0;
    for (const t of this.tasks.values()) if (t !== task && t.holdsRoom) held += footprint(t.spec.length, 4096);
    const base = usedBytes - evictable + need;
    return {
      fits: base + held <= quotaBytes,
      fitsAlone: base <= quotaBytes,
      reason:
        `no room for ${need} more bytes: ${usedBytes} of ${quotaBytes} bytes used and ${evictable} evictable` +
        (held > 0 ? `, ${held} held by running fetches` : ""),
    };
  }

  private progress(task: Task, bytes: number): void {
    task.bytesDone = bytes;
    const { length, objectId } = task.spec;
    const tenth = length === 0 ? 10 : Math.floor((bytes * 10) / length);
    const now = this.now();
    if (tenth <= task.lastProgressTenth && now - task.lastProgressAt < (this.options.progressEveryMs ?? 5000)) return;
    task.lastProgressTenth = tenth;
    task.lastProgressAt = now;
    this.options.event({ type: "task.progress", objectId, bytes, length });
  }

  private async fail(task: Task, code: FailCode, reason: string, dropped?: DroppedSource[]): Promise<void> {
    await this.end(task);
    await this.removePartial(task.spec.objectId);
    task.state = "failed";
    task.code = code;
    task.reason = reason;
    task.dropped = dropped;
    this.counts.failed++;
    this.options.counters?.taskFailed();
    this.remember(task);
    this.options.log?.warn(`task ${task.spec.objectId} failed: ${code}: ${reason}`);
    this.options.event({
      type: "task.failed",
      objectId: task.spec.objectId,
      code,
      reason,
      ...(dropped && dropped.length > 0 ? { dropped } : {}),
    });
  }

  /** Deletes a task's partial files; a failure (the data disk) is logged: the task has ended anyway. */
  private async removePartial(objectId: string): Promise<void> {
    await PartialObject.removeFiles(PartialObject.pathsFor(this.options.partialDir, objectId)).catch((err) =>
      this.options.log?.warn(`task ${objectId}: partial files not removed: ${errorLine(err)}`),
    );
  }

  /** The task leaves the queue, durably. */
  private async end(task: Task): Promise<void> {
    if (this.tasks.get(task.spec.objectId) !== task) return;
    this.tasks.delete(task.spec.objectId);
    this.timeouts.clearTimeout(task.deadlineTimer);
    await this.log.append(encode({ o: "end", objectId: task.spec.objectId }));
  }

  private remember(task: Task): void {
    this.history.unshift(task);
    if (this.history.length > HISTORY) this.history.pop();
  }

  private armDeadline(task: Task): void {
    const { deadline } = task.spec;
    if (deadline === undefined) return;
    const expire = (): void => {
      if (task.controller) task.controller.abort("expired" satisfies StopReason);
      else if (this.tasks.get(task.spec.objectId) === task)
        void this.fail(task, "expired", "the deadline passed while the task was queued").catch((err) =>
          this.options.log?.error(`task ${task.spec.objectId}: ${errorLine(err)}`),
        );
    };
    atTime(this.timeouts, this.now, deadline, expire, (handle) => (task.deadlineTimer = handle));
  }

  private newTask(spec: TaskSpec): Task {
    return { spec, state: "queued", bytesDone: 0, lastProgressAt: this.now(), lastProgressTenth: 0 };
  }

  private parseFetch(args: Record<string, unknown>): TaskSpec {
    const allowed = ["objectId", "length", "sources", "outboard", "pin", "deadline", "orders"];
    const unknown = Object.keys(args).find((k) => !allowed.includes(k));
    if (unknown !== undefined) throw new CommandRefused("bad-args", `unknown argument ${unknown}`);
    const { objectId, length, sources, outboard, pin, deadline, orders } = args;
    if (typeof objectId !== "string" || !ID_HEX.test(objectId))
      throw new CommandRefused("bad-args", "objectId must be 64 lowercase hex digits");
    if (typeof length !== "number" || !Number.isSafeInteger(length) || length < 0)
      throw new CommandRefused("bad-args", "length must be an integer >= 0");
    if (length > MAX_OBJECT_LEN)
      throw new CommandRefused("too-large", `length ${length} is over the ${MAX_OBJECT_LEN}-byte object limit`);
    if (!Array.isArray(sources) || sources.length < 1 || sources.length > MAX_SOURCES)
      throw new CommandRefused("bad-args", `sources must be a list of 1..${MAX_SOURCES} http(s) URLs`);
    sources.forEach((s, i) => checkSourceUrl(s, `sources[${i}]`));
    if (outboard !== undefined) checkSourceUrl(outboard, "outboard");
    if (pin !== undefined && typeof pin !== "boolean")
      throw new CommandRefused("bad-args", "pin must be true or false");
    if (deadline !== undefined) {
      if (typeof deadline !== "number" || !Number.isSafeInteger(deadline))
        throw new CommandRefused("bad-args", "deadline must be epoch milliseconds");
      if (deadline <= this.now()) throw new CommandRefused("expired", "the deadline has already passed");
    }
    if (orders !== undefined) {
      if (!isPlainObject(orders)) throw new CommandRefused("bad-args", "orders must be an object {url: token}");
      for (const [url, token] of Object.entries(orders)) {
        if (typeof token !== "string" || token.length > MAX_URL || !/^[A-Za-z0-9_-]+$/.test(token))
          throw new CommandRefused("bad-args", `orders[${JSON.stringify(url.slice(0, 80))}] must be an order token`);
        const order = this.options.receipts && checkOrder(url, token, objectId, this.options.receipts);
        if (typeof order === "string") throw new CommandRefused("bad-args", order);
      }
    }
    return {
      objectId,
      length,
      sources: [...new Set(sources as string[])],
      ...(outboard !== undefined ? { outboard: outboard as string } : {}),
      pin: pin === true,
      ...(deadline !== undefined ? { deadline } : {}),
      ...(orders !== undefined ? { orders: orders as Record<string, string> } : {}),
      acceptedAt: this.now(),
    };
  }
}

/** Refuses (bad-args) anything but an http(s) URL without credentials, at most MAX_URL characters. */
export function checkSourceUrl(value: unknown, what: string): void {
  let ok = false;
  if (typeof value === "string" && value.length <= MAX_URL) {
    try {
      const u = new URL(value);
      ok = (u.protocol === "http:" || u.protocol === "https:") && u.username === "" && u.password === "";
    } catch {
      ok = false;
    }
  }
  if (!ok)
    throw new CommandRefused(
      "bad-args",
      `${what} must be an http(s) URL without credentials, at most ${MAX_URL} characters`,
    );
}

function view(task: Task): TaskView {
  const { spec } = task;
  return {
    objectId: spec.objectId,
    length: spec.length,
    state: task.state,
    bytesDone: task.bytesDone,
    sources: spec.sources.length,
    pin: spec.pin,
    acceptedAt: spec.acceptedAt,
    ...(spec.deadline !== undefined ? { deadline: spec.deadline } : {}),
    // Cut: 32 ended tasks with 16 dropped sources each must still fit in a reply (the events carry it all).
    ...(task.code !== undefined ? { code: task.code, reason: cut(task.reason ?? "", 1000) } : {}),
    ...(task.dropped && task.dropped.length > 0
      ? { dropped: task.dropped.map((d) => ({ url: cut(d.url, 256), code: d.code, reason: cut(d.reason, 200) })) }
      : {}),
  };
}

function cut(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 3)}...` : text;
}

function encode(record: object): Uint8Array {
  return Buffer.from(JSON.stringify(record), "utf8");
}

/** The group size of an outboard (2^groupLog chunks), or undefined when it does not parse. */
function outboardGroupLog(outboard: Uint8Array): number | undefined {
  try {
    return parseOutboard(outboard).groupLog;
  } catch {
    return undefined;
  }
}
