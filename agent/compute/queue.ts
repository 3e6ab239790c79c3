// The compute queue: what the fleet told the box to run (`compute.run`), kept across restarts, run in the sandbox
// (sandbox.ts) within the owner's CPU share, each result signed, put in the ledger and reported.
//
// Guarantees:
// - An accepted task is durable before the command is answered: a record in `<stateDir>/compute.log` (a CRC-framed
//   record log), ended only when the task is done, failed or dropped. A power cut loses no accepted task; a task
//   cut short runs again from the start (tasks are deterministic: the same output).
// - A result is claimed once: its event is queued (durable), then its ledger record is appended (durable), then the
//   task ends. A power cut before the ledger record runs the task again (the fleet drops the second event of the
//   same task); one after it finds the record (`alreadyRecorded`) and only ends the task.
// - The owner's CPU share (`share.cpuPercent`, of the whole box): `lanes` tasks at most run at once, ceil(share x
//   cores), and each lane holds its part of the share by resting after a task until its CPU time over the task's
//   wall time plus the rest is that part (a duty cycle at task granularity: a running WebAssembly task cannot be
//   paused, so a long one is paid back by a long rest). Task threads run at nice 19.
// - While compute is not allowed (the box is too hot) running tasks are stopped and queued again, and none starts.
//
// compute.log records (JSON): {"o":"add","task":ComputeSpec} and {"o":"end","taskId":...}.
import { mkdir } from "node:fs/promises";
import { dirname } from "node:path";
import { RecordLog } from "../durable/record-log.js";
import { blake3 } from "../kernels/blake3.js";
import type { ComputeWork } from "../ledger/record.js";
import { CommandRefused } from "../link/command-gate.js";
import { signComputeResult, TASK_ID } from "../protocol/compute-result.js";
import type { ComputeStatus } from "../protocol/daemon-status.js";
import type { Signer } from "../protocol/envelope.js";
import { checkSourceUrl, MAX_SOURCES } from "../tasks/task-queue.js";
import { decodeBase64Any, toBase64 } from "../util/base64.js";
import { errorLine } from "../util/errors.js";
import { isPlainObject } from "../util/guards.js";
import { toHex } from "../util/hex.js";
import type { Logger } from "../util/log.js";
import { atTime, realTimeouts, type Timeouts } from "../util/timeouts.js";
import { DEFAULT_LIMITS, type TaskLimits, type TaskOutcome } from "./sandbox.js";

/** Live tasks at most: compute.list must fit in a reply, and each waits with its inline input in memory. */
export const MAX_COMPUTE_TASKS = 256;
/** Inline input, decoded (the 64 KiB; larger input comes as an object). */
export const MAX_INLINE_INPUT = 64 * 1024;
/** A module or an input object: held in memory while the task runs. */
export const MAX_COMPUTE_OBJECT = 16 * 1024 * 1024;
/** Outputs up to this size travel in the compute.done event (base64); larger ones go to the store. */
export const MAX_INLINE_OUTPUT = 64 * 1024;
/** The most a task may ask for, whatever the fleet sends: a box of 1 GB runs the agent and serving too. */
export const MAX_LIMITS: TaskLimits = {
  cpuMs: 600_000,
  wallMs: 3_600_000,
  memoryBytes: 256 * 1024 * 1024,
  outputBytes: 16 * 1024 * 1024,
};
/** Task threads yield to everything else on the box. */
export const TASK_NICE = 19;
const ID_HEX = /^[0-9a-f]{64}$/;
/** Ended tasks compute.list still shows, newest first. */
const HISTORY = 32;

export interface ObjectRef {
  id: string;
  length: number;
  sources: string[];
}

export interface ComputeSpec {
  taskId: string;
  module: ObjectRef;
  /** Inline bytes (base64) or an object. */
  input: { data: string } | ObjectRef;
  limits: TaskLimits;
  deadline?: number;
  acceptedAt: number;
}

export type ComputeState = "queued" | "running" | "done" | "failed";

export interface ComputeView {
  taskId: string;
  state: ComputeState;
  moduleId: string;
  acceptedAt: number;
  deadline?: number;
  outputId?: string;
  cpuMs?: number;
  wallMs?: number;
  code?: string;
  reason?: string;
}

/** What a done task hands the ledger: its compute record, without the kind. */
export type ComputeRecord = Omit<ComputeWork, "kind">;

export interface ComputeQueueOptions {
  logPath: string;
  deviceId: string;
  signer: Signer;
  /** The bytes of an object the box holds, fetching it first (a fetch task) when it does not. */
  objectBytes(ref: ObjectRef): Promise<Uint8Array>;
  /** The sandbox (sandbox.ts runTask). */
  run(
    module: Uint8Array,
    input: Uint8Array,
    limits: TaskLimits,
    options: { nice: number; signal: AbortSignal },
  ): Promise<TaskOutcome>;
  /** Tasks are waiting or running: have this many workers ready (the sandbox's prepare). */
  prepare?(workers: number): void;
  /** The ledger record of a done task; resolves once durable. */
  record(work: ComputeRecord): Promise<void>;
  /** Whether the ledger already holds the task's record (a power cut between it and the task's end). */
  alreadyRecorded(taskId: string): boolean;
  /** An output too large for its event goes to the store (unpinned); undefined when there is no store. */
  keepOutput?(output: Uint8Array, outputId: string): Promise<void>;
  event(body: Record<string, unknown>): void;
  /** Percent of the whole box compute may use, and the box's cores. */
  cpuPercent: number;
  cores: number;
  now?: () => number;
  timeouts?: Timeouts;
  log?: Logger;
}

interface Task {
  spec: ComputeSpec;
  state: ComputeState;
  controller?: AbortController;
  deadlineTimer?: unknown;
  running?: Promise<void>;
  outputId?: string;
  cpuMs?: number;
  wallMs?: number;
  code?: string;
  reason?: string;
}

export interface ComputeStats {
  queued: number;
  running: number;
  /** Since the agent started. */
  done: number;
  failed: number;
  cpuMs: number;
}

export class ComputeQueue {
  private log!: RecordLog;
  private readonly tasks = new Map<string, Task>();
  private readonly history: Task[] = [];
  /** Per lane: when it may start its next task (monotonic ms), and whether it runs one. */
  private lanes: Array<{ busy: boolean; restUntil: number }> = [];
  private cpuPercent: number;
  private paused = false;
  private stopped = false;
  private pumpTimer: unknown;
  private readonly counts = { done: 0, failed: 0, cpuMs: 0 };
  private readonly now: () => number;
  private readonly timeouts: Timeouts;

  constructor(private readonly options: ComputeQueueOptions) {
    this.now = options.now ?? Date.now;
    this.timeouts = options.timeouts ?? realTimeouts;
    this.cpuPercent = options.cpuPercent;
    this.resizeLanes();
  }

  async start(): Promise<void> {
    await mkdir(dirname(this.options.logPath), { recursive: true });
    const opened = await RecordLog.open(this.options.logPath);
    this.log = opened.log;
    if (opened.recovery) this.options.log?.warn(`compute.log: dropped a torn tail (${opened.recovery.reason})`);
    for (const raw of opened.records) {
      const rec = JSON.parse(Buffer.from(raw).toString("utf8")) as { o: string; task?: ComputeSpec; taskId?: string };
      if (rec.o === "add" && rec.task) this.tasks.set(rec.task.taskId, { spec: rec.task, state: "queued" });
      else if (rec.o === "end" && rec.taskId) this.tasks.delete(rec.taskId);
    }
    if (opened.records.length > 2 * this.tasks.size + 16)
      await this.log.rewrite([...this.tasks.values()].map((t) => encode({ o: "add", task: t.spec })));
    if (this.tasks.size > 0) this.options.log?.info(`resuming ${this.tasks.size} compute task(s)`);
    for (const task of this.tasks.values()) this.armDeadline(task);
    this.pump();
  }

  /** Stops the running tasks (they stay in the log, to run again after the restart) and closes the log. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.timeouts.clearTimeout(this.pumpTimer);
    for (const task of this.tasks.values()) {
      this.timeouts.clearTimeout(task.deadlineTimer);
      task.controller?.abort("the agent is stopping");
    }
    await Promise.allSettled([...this.tasks.values()].flatMap((t) => (t.running ? [t.running] : [])));
    await this.log?.close();
  }

  /** Thermal pause: running tasks stop and go back to the queue; none starts until it ends. */
  setPaused(paused: boolean): void {
    if (this.paused === paused) return;
    this.paused = paused;
    if (paused) for (const task of this.tasks.values()) task.controller?.abort("paused: the box is too hot");
    else this.pump();
  }

  /** The owner's share changed (config reload, another upload window): lanes follow from the next task on. */
  setCpuPercent(percent: number): void {
    if (percent === this.cpuPercent) return;
    this.cpuPercent = percent;
    this.resizeLanes();
    this.pump();
  }

  /** How many tasks may run at once under the share: ceil(share x cores), at least one. */
  get laneCount(): number {
    return this.lanes.length;
  }

  stats(): ComputeStats {
    let queued = 0;
    let running = 0;
    for (const t of this.tasks.values()) {
      if (t.state === "running") running++;
      else queued++;
    }
    return { queued, running, ...this.counts };
  }

  /** The queue for the daemon's status (agent/protocol/daemon-status.ts). */
  status(): ComputeStatus {
    return { ...this.stats(), lanes: this.lanes.length, cpuPercent: this.cpuPercent, paused: this.paused };
  }

  /** `compute.run`: validates, makes the task durable, then answers. */
  async run(args: Record<string, unknown>): Promise<ComputeView & { duplicate?: boolean }> {
    if (this.stopped) throw new CommandRefused("stopping", "the agent is stopping");
    const spec = this.parse(args);
    const existing = this.tasks.get(spec.taskId) ?? this.history.find((t) => t.spec.taskId === spec.taskId);
    if (existing) return { ...view(existing), duplicate: true };
    if (this.tasks.size >= MAX_COMPUTE_TASKS)
      throw new CommandRefused("queue-full", `${MAX_COMPUTE_TASKS} compute tasks are queued already; wait`);
    await this.log.append(encode({ o: "add", task: spec }));
    const task: Task = { spec, state: "queued" };
    this.tasks.set(spec.taskId, task);
    this.armDeadline(task);
    this.options.event({
      type: "compute.accepted",
      taskId: spec.taskId,
      moduleId: spec.module.id,
      ...(spec.deadline !== undefined ? { deadline: spec.deadline } : {}),
    });
    this.pump();
    return view(task);
  }

  /** `compute.drop {taskId}`: a queued task leaves; a running one is stopped first. */
  async drop(args: Record<string, unknown>): Promise<{ taskId: string; dropped: boolean }> {
    const { taskId } = args;
    if (typeof taskId !== "string" || !TASK_ID.test(taskId))
      throw new CommandRefused("bad-args", "taskId must be 1..64 characters of A-Z a-z 0-9 . _ -");
    const task = this.tasks.get(taskId);
    if (!task) return { taskId, dropped: false };
    task.controller?.abort("dropped");
    await task.running;
    if (this.tasks.get(taskId) === task) await this.fail(task, "dropped", "dropped by the fleet", 0, 0);
    return { taskId, dropped: true };
  }

  /** `compute.list`: live tasks, then the most recent ended ones. */
  list(): { tasks: ComputeView[]; ended: ComputeView[]; lanes: number; cpuPercent: number } {
    return {
      tasks: [...this.tasks.values()].map(view),
      ended: this.history.map(view),
      lanes: this.lanes.length,
      cpuPercent: this.cpuPercent,
    };
  }

  private resizeLanes(): void {
    const cores = Math.max(1, this.options.cores);
    const count = Math.max(1, Math.min(cores, Math.ceil((this.cpuPercent * cores) / 100)));
    const lanes = this.lanes.slice(0, count);
    while (lanes.length < count) lanes.push({ busy: false, restUntil: 0 });
    // A lane dropped while busy finishes its task; the busy flags of those kept stay.
    this.lanes = lanes;
  }

  /** Starts queued tasks on free lanes that have rested; arms a timer for the next lane's rest to end. */
  private pump(): void {
    if (this.stopped || this.paused) return;
    this.timeouts.clearTimeout(this.pumpTimer);
    this.pumpTimer = undefined;
    const now = performance.now();
    let nextRestEnd = Infinity;
    let live = 0;
    for (const t of this.tasks.values()) if (t.state === "queued" || t.state === "running") live++;
    if (live > 0) this.options.prepare?.(Math.min(this.lanes.length, live));
    for (const [index, lane] of this.lanes.entries()) {
      if (lane.busy) continue;
      const task = [...this.tasks.values()].find((t) => t.state === "queued");
      if (!task) return;
      if (lane.restUntil > now) {
        nextRestEnd = Math.min(nextRestEnd, lane.restUntil);
        continue;
      }
      lane.busy = true;
      task.state = "running";
      task.controller = new AbortController();
      task.running = this.execute(task, task.controller.signal)
        .catch((err) => this.options.log?.error(`compute ${task.spec.taskId}: ${errorLine(err)}`))
        .finally(() => {
          task.controller = undefined;
          task.running = undefined;
          const l = this.lanes[index];
          if (l === lane) {
            lane.busy = false;
            lane.restUntil = performance.now() + this.restMs(task);
          }
          this.pump();
        });
    }
    if (nextRestEnd !== Infinity)
      this.pumpTimer = this.timeouts.setTimeout(() => this.pump(), Math.max(1, Math.ceil(nextRestEnd - now)));
  }

  /**
   * The rest after a task, so that the lane's CPU over its busy and rest time is its part of the share: CPU ms x
   * lanes x 100 / (percent x cores), less the wall time the task took.
   */
  private restMs(task: Task): number {
    const cpu = task.cpuMs ?? 0;
    const cores = Math.max(1, this.options.cores);
    const cycle = Math.ceil((cpu * this.lanes.length * 100) / (this.cpuPercent * cores));
    return Math.max(0, cycle - (task.wallMs ?? 0));
  }

  private async execute(task: Task, signal: AbortSignal): Promise<void> {
    const { spec } = task;
    if (spec.deadline !== undefined && spec.deadline <= this.now())
      return this.fail(task, "expired", "the deadline passed while the task was queued", 0, 0);
    if (this.options.alreadyRecorded(spec.taskId)) {
      this.options.log?.info(`compute ${spec.taskId}: its result is in the ledger already; ended`);
      return this.end(task, "done");
    }
    let moduleBytes: Uint8Array;
    let input: Uint8Array;
    try {
      moduleBytes = await this.options.objectBytes(spec.module);
      input = "data" in spec.input ? decodeBase64Any(spec.input.data)! : await this.options.objectBytes(spec.input);
    } catch (err) {
      if (signal.aborted) return this.afterStop(task, signal, 0, 0);
      const code = err instanceof CommandRefused ? err.code : "fetch-failed";
      return this.fail(task, code, `module or input not fetched: ${errorLine(err)}`, 0, 0);
    }
    if (signal.aborted) return this.afterStop(task, signal, 0, 0);
    const outcome = await this.options.run(moduleBytes, input, spec.limits, { nice: TASK_NICE, signal });
    task.cpuMs = outcome.cpuMs;
    task.wallMs = outcome.wallMs;
    this.counts.cpuMs += outcome.cpuMs;
    if (!outcome.ok) {
      if (outcome.code === "stopped") return this.afterStop(task, signal, outcome.cpuMs, outcome.wallMs);
      return this.fail(task, outcome.code, outcome.reason, outcome.cpuMs, outcome.wallMs);
    }
    const inputId = toHex(blake3(input));
    const result = {
      deviceId: this.options.deviceId,
      taskId: spec.taskId,
      moduleId: spec.module.id,
      inputId,
      outputId: outcome.outputId,
      outputLength: outcome.output.length,
      cpuMs: outcome.cpuMs,
      wallMs: outcome.wallMs,
      at: this.now(),
    };
    const token = signComputeResult(result, this.options.signer);
    const inline = outcome.output.length <= MAX_INLINE_OUTPUT;
    let stored = false;
    if (!inline && this.options.keepOutput) {
      try {
        await this.options.keepOutput(outcome.output, outcome.outputId);
        stored = true;
      } catch (err) {
        this.options.log?.warn(`compute ${spec.taskId}: output not stored: ${errorLine(err)}`);
      }
    }
    task.outputId = outcome.outputId;
    this.options.event({
      type: "compute.done",
      taskId: spec.taskId,
      result: token,
      outputId: outcome.outputId,
      outputLength: outcome.output.length,
      cpuMs: outcome.cpuMs,
      wallMs: outcome.wallMs,
      ...(inline ? { output: toBase64(outcome.output) } : { stored }),
    });
    await this.options.record({
      taskId: spec.taskId,
      moduleId: spec.module.id,
      inputId,
      outputId: outcome.outputId,
      cpuMs: String(outcome.cpuMs),
      wallMs: outcome.wallMs,
    });
    this.counts.done++;
    this.options.log?.info(
      `compute ${spec.taskId} done: output ${outcome.outputId} (${outcome.output.length} bytes), ` +
        `cpu ${outcome.cpuMs} ms, wall ${outcome.wallMs} ms`,
    );
    await this.end(task, "done");
  }

  /**
   * Stopped from outside: past its deadline it fails `expired`; a pause queues it again, to run from the start
   * later; the agent stopping leaves it queued in the log; a drop is ended by drop().
   */
  private async afterStop(task: Task, signal: AbortSignal, cpuMs: number, wallMs: number): Promise<void> {
    if (signal.reason === "expired")
      return this.fail(task, "expired", "the deadline passed while the task ran", cpuMs, wallMs);
    task.state = "queued";
    if (!this.stopped && signal.reason !== "dropped")
      this.options.log?.info(`compute ${task.spec.taskId}: ${String(signal.reason)}; queued again`);
  }

  /** At the deadline a queued task fails `expired`, and a running one is stopped to fail so. */
  private armDeadline(task: Task): void {
    const { deadline } = task.spec;
    if (deadline === undefined) return;
    const expire = (): void => {
      if (task.controller) task.controller.abort("expired");
      else if (this.tasks.get(task.spec.taskId) === task)
        void this.fail(task, "expired", "the deadline passed while the task was queued", 0, 0).catch((err) =>
          this.options.log?.error(`compute ${task.spec.taskId}: ${errorLine(err)}`),
        );
    };
    atTime(this.timeouts, this.now, deadline, expire, (handle) => (task.deadlineTimer = handle));
  }

  private async fail(task: Task, code: string, reason: string, cpuMs: number, wallMs: number): Promise<void> {
    task.code = code;
    task.reason = reason;
    this.counts.failed++;
    this.options.log?.warn(`compute ${task.spec.taskId} failed: ${code}: ${reason}`);
    this.options.event({ type: "compute.failed", taskId: task.spec.taskId, code, reason, cpuMs, wallMs });
    await this.end(task, "failed");
  }

  /** The task leaves the queue, durably. */
  private async end(task: Task, state: "done" | "failed"): Promise<void> {
    task.state = state;
    this.timeouts.clearTimeout(task.deadlineTimer);
    if (this.tasks.get(task.spec.taskId) !== task) return;
    this.tasks.delete(task.spec.taskId);
    this.history.unshift(task);
    if (this.history.length > HISTORY) this.history.pop();
    await this.log.append(encode({ o: "end", taskId: task.spec.taskId }));
  }

  private parse(args: Record<string, unknown>): ComputeSpec {
    const allowed = ["taskId", "module", "input", "limits", "deadline"];
    const unknown = Object.keys(args).find((k) => !allowed.includes(k));
    if (unknown !== undefined) throw new CommandRefused("bad-args", `unknown argument ${unknown}`);
    const { taskId, module, input, limits, deadline } = args;
    if (typeof taskId !== "string" || !TASK_ID.test(taskId))
      throw new CommandRefused("bad-args", "taskId must be 1..64 characters of A-Z a-z 0-9 . _ -");
    const moduleRef = objectRef(module, "module");
    let inputSpec: ComputeSpec["input"];
    if (isPlainObject(input) && Object.hasOwn(input, "data")) {
      if (Object.keys(input).length !== 1)
        throw new CommandRefused("bad-args", "input: {data} or {id, length, sources}");
      const bytes = decodeBase64Any(input.data);
      if (bytes === null) throw new CommandRefused("bad-args", "input.data must be base64");
      if (bytes.length > MAX_INLINE_INPUT)
        throw new CommandRefused("too-large", `input.data must be base64 of at most ${MAX_INLINE_INPUT} bytes`);
      inputSpec = { data: input.data as string };
    } else inputSpec = objectRef(input, "input");
    if (deadline !== undefined) {
      if (typeof deadline !== "number" || !Number.isSafeInteger(deadline))
        throw new CommandRefused("bad-args", "deadline must be epoch milliseconds");
      if (deadline <= this.now()) throw new CommandRefused("expired", "the deadline has already passed");
    }
    return {
      taskId,
      module: moduleRef,
      input: inputSpec,
      limits: parseLimits(limits),
      ...(deadline !== undefined ? { deadline } : {}),
      acceptedAt: this.now(),
    };
  }
}

function objectRef(value: unknown, what: string): ObjectRef {
  if (!isPlainObject(value)) throw new CommandRefused("bad-args", `${what} must be {id, length, sources}`);
  const unknown = Object.keys(value).find((k) => !["id", "length", "sources"].includes(k));
  if (unknown !== undefined) throw new CommandRefused("bad-args", `${what}: unknown field ${unknown}`);
  const { id, length, sources } = value;
  if (typeof id !== "string" || !ID_HEX.test(id))
    throw new CommandRefused("bad-args", `${what}.id must be 64 lowercase hex digits`);
  if (typeof length !== "number" || !Number.isSafeInteger(length) || length < 0)
    throw new CommandRefused("bad-args", `${what}.length must be an integer >= 0`);
  if (length > MAX_COMPUTE_OBJECT)
    throw new CommandRefused("too-large", `${what} of ${length} bytes is over ${MAX_COMPUTE_OBJECT}`);
  const list = sources ?? [];
  if (!Array.isArray(list) || list.length > MAX_SOURCES)
    throw new CommandRefused("bad-args", `${what}.sources must be a list of at most ${MAX_SOURCES} http(s) URLs`);
  list.forEach((s, i) => checkSourceUrl(s, `${what}.sources[${i}]`));
  return { id, length, sources: [...new Set(list as string[])] };
}

/** The task's limits: each at most the box's cap (MAX_LIMITS), absent ones the defaults. */
function parseLimits(value: unknown): TaskLimits {
  if (value === undefined) return { ...DEFAULT_LIMITS };
  if (!isPlainObject(value)) throw new CommandRefused("bad-args", "limits must be {cpuMs, wallMs, memoryMb, outputKb}");
  const fields: Array<[string, keyof TaskLimits, number]> = [
    ["cpuMs", "cpuMs", 1],
    ["wallMs", "wallMs", 1],
    ["memoryMb", "memoryBytes", 1024 * 1024],
    ["outputKb", "outputBytes", 1024],
  ];
  const unknown = Object.keys(value).find((k) => !fields.some(([name]) => name === k));
  if (unknown !== undefined) throw new CommandRefused("bad-args", `limits: unknown field ${unknown}`);
  const limits = { ...DEFAULT_LIMITS };
  for (const [name, key, unit] of fields) {
    const v = value[name];
    if (v === undefined) continue;
    const max = MAX_LIMITS[key] / unit;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1 || v > max)
      throw new CommandRefused("bad-args", `limits.${name} must be an integer from 1 to ${max}`);
    limits[key] = v * unit;
  }
  return limits;
}

function view(task: Task): ComputeView {
  const { spec } = task;
  return {
    taskId: spec.taskId,
    state: task.state,
    moduleId: spec.module.id,
    acceptedAt: spec.acceptedAt,
    ...(spec.deadline !== undefined ? { deadline: spec.deadline } : {}),
    ...(task.outputId !== undefined ? { outputId: task.outputId } : {}),
    ...(task.cpuMs !== undefined ? { cpuMs: task.cpuMs, wallMs: task.wallMs } : {}),
    ...(task.code !== undefined ? { code: task.code, reason: (task.reason ?? "").slice(0, 500) } : {}),
  };
}

function encode(record: object): Uint8Array {
  return Buffer.from(JSON.stringify(record), "utf8");
}
