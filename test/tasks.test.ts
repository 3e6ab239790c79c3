// The task queue with its real parts: a real object store on a temp directory, the real fetcher, and a real
// node:http origin. Events in order, concurrency, durability across a restart of the queue, pause, deadline,
// no-space, drop, and refusals of bad arguments. With this box's key (receipts), a task's orders are checked when it
// is accepted, and one accepted before that check with another client key gets no receipts and one warning.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { RecordLog } from "../agent/durable/record-log";
import { Fetcher } from "../agent/fetch/fetcher";
import { type DeviceIdentity, loadOrCreateDeviceIdentity } from "../agent/identity/device-key";
import { createOutboard } from "../agent/kernels/outboard";
import { CommandRefused } from "../agent/link/command-gate";
import { signOrder } from "../agent/protocol/order";
import { ObjectStore } from "../agent/store/object-store";
import { MAX_TASKS, TaskQueue, type TaskQueueOptions } from "../agent/tasks/task-queue";
import { Origin } from "./helpers/origin";
import { seededBytes } from "./helpers/random";
import { waitFor } from "./helpers/wait";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

let origin: Origin;
let dir = "";
let agent: http.Agent;
let store: ObjectStore;
let queues: TaskQueue[] = [];
let events: Record<string, unknown>[] = [];

beforeAll(async () => {
  origin = await Origin.start();
});
afterAll(async () => {
  await origin?.stop();
});
beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "sharenode-tasks-"));
  mkdirSync(join(dir, "data"));
  agent = new http.Agent({ keepAlive: true });
  store = await openStore();
  queues = [];
  events = [];
});
afterEach(async () => {
  for (const q of queues) await q.stop().catch(() => {});
  await store.stop().catch(() => {});
  agent.destroy();
  rmSync(dir, { recursive: true, force: true });
});

async function openStore(quotaBytes = 1 << 30): Promise<ObjectStore> {
  const s = new ObjectStore({ dataDir: join(dir, "data"), quota: { bytes: quotaBytes }, reserveBytes: 0 });
  await s.start();
  return s;
}

async function openQueue(extra: Partial<TaskQueueOptions> = {}): Promise<TaskQueue> {
  const queue = new TaskQueue({
    logPath: join(dir, "tasks.log"),
    partialDir: join(dir, "data", "fetch"),
    store,
    fetcher: new Fetcher({ stallMs: 2000, pieceBytes: 64 * 1024, checkpointMs: 50, agents: { http: agent } }),
    concurrency: 2,
    event: (e) => events.push(e),
    ...extra,
  });
  await queue.start();
  queues.push(queue);
  return queue;
}

function object(name: string, length: number, seed: number, behaviour?: Parameters<Origin["serve"]>[2]) {
  const data = seededBytes(length, seed);
  const { id, outboard } = createOutboard(data);
  const objectId = hex(id);
  return {
    data,
    objectId,
    args: {
      objectId,
      length,
      sources: [origin.serve(name, data, behaviour)],
      outboard: origin.serve(`${name}.obao`, outboard),
    },
  };
}

const typesFor = (objectId: string) => events.filter((e) => e.objectId === objectId).map((e) => e.type);
const ended = (objectId: string) =>
  waitFor(`task ${objectId} ends`, () =>
    events.find((e) => e.objectId === objectId && (e.type === "task.done" || e.type === "task.failed")),
  );

describe("TaskQueue", () => {
  it("fetches into the store: accepted, progress, done; the object is stored and pinned", async () => {
    const queue = await openQueue();
    const o = object("t-basic", 700_000, 1);
    const reply = await queue.fetch({ ...o.args, pin: true });
    expect(reply).toMatchObject({ objectId: o.objectId, length: 700_000, state: "running", bytesDone: 0 });
    await ended(o.objectId);
    const types = typesFor(o.objectId);
    expect(types[0]).toBe("task.accepted");
    expect(types.at(-1)).toBe("task.done");
    expect(types.filter((t) => t === "task.progress").length).toBeGreaterThan(0);
    expect(events.find((e) => e.type === "task.progress" && e.bytes === 700_000)).toBeDefined();
    expect(store.get(o.objectId)).toMatchObject({ length: 700_000, pinned: true });
    expect(readFileSync(store.objectPath(o.objectId)).equals(o.data)).toBe(true);
    expect(readdirSync(join(dir, "data", "fetch"))).toEqual([]);
    const list = queue.list();
    expect(list.tasks).toEqual([]);
    expect(list.ended[0]).toMatchObject({ objectId: o.objectId, state: "done", bytesDone: 700_000 });
    expect(list.stats).toEqual({ queued: 0, running: 0, done: 1, failed: 0 });
    // The same task again: the object is already stored.
    expect(await queue.fetch(o.args)).toMatchObject({ state: "done", alreadyStored: true });
  });

  it("moves the verified file into the store (adopt), with or without an outboard; another group size is ingested", async () => {
    const queue = await openQueue();
    const adopt = vi.spyOn(store, "adopt");
    const ingest = vi.spyOn(store, "ingest");
    // Groups mode: the outboard the groups were checked against goes with the file.
    const groups = object("t-adopt-groups", 300_000, 5);
    await queue.fetch(groups.args);
    expect(await ended(groups.objectId)).toMatchObject({ type: "task.done", verifiedBy: "groups" });
    // Whole mode: the outboard built while hashing the whole file.
    const whole = object("t-adopt-whole", 300_000, 6);
    await queue.fetch({ ...whole.args, outboard: undefined });
    expect(await ended(whole.objectId)).toMatchObject({ type: "task.done", verifiedBy: "whole" });
    expect(adopt).toHaveBeenCalledTimes(2);
    expect(ingest).not.toHaveBeenCalled();
    for (const o of [groups, whole]) {
      expect(readFileSync(store.objectPath(o.objectId)).equals(o.data)).toBe(true);
      expect(readFileSync(store.outboardPath(o.objectId)).equals(createOutboard(o.data).outboard)).toBe(true);
    }
    // An outboard with groups of 32 chunks checks the fetch, but the store keeps 16: it is ingested (hashed again).
    const data = seededBytes(300_000, 7);
    const coarse = createOutboard(data, 5);
    const objectId = hex(coarse.id);
    const sources = [origin.serve("t-coarse", data)];
    await queue.fetch({
      objectId,
      length: data.length,
      sources,
      outboard: origin.serve("t-coarse.obao", coarse.outboard),
    });
    expect(await ended(objectId)).toMatchObject({ type: "task.done", verifiedBy: "groups" });
    expect(ingest).toHaveBeenCalledTimes(1);
    expect(readFileSync(store.outboardPath(objectId)).equals(createOutboard(data).outboard)).toBe(true);
    expect(readdirSync(join(dir, "data", "fetch"))).toEqual([]);
  });

  it("sends a source's order token with every request to it, and to no other source", async () => {
    const queue = await openQueue();
    const o = object("t-order", 300_000, 2);
    const box = origin.serve("t-order-box", o.data);
    const token = "eyJib2R5IjoieyJ2IjoxfSJ9";
    await queue.fetch({ ...o.args, sources: [...o.args.sources, box], orders: { [box]: token } });
    expect(await ended(o.objectId)).toMatchObject({ type: "task.done" });
    expect(origin.servedAt("t-order-box").orders.length).toBeGreaterThan(0);
    expect(origin.servedAt("t-order-box").orders.every((t) => t === token)).toBe(true);
    expect(origin.servedAt("t-order").orders.every((t) => t === undefined)).toBe(true);
  });

  it("runs at most `concurrency` tasks at once, the rest queued in order", async () => {
    const queue = await openQueue({ concurrency: 2 });
    const objs = [0, 1, 2].map((i) =>
      object(`t-conc-${i}`, 256 * 1024, 10 + i, { kind: "slow", bytesPerSecond: 1 << 20 }),
    );
    for (const o of objs) await queue.fetch(o.args);
    expect(queue.stats()).toMatchObject({ running: 2, queued: 1 });
    expect(queue.list().tasks.map((t) => t.state)).toEqual(["running", "running", "queued"]);
    let most = 0;
    await waitFor("all three done", () => {
      most = Math.max(most, queue.stats().running);
      return queue.stats().done === 3 || undefined;
    });
    expect(most).toBe(2);
    for (const o of objs) expect(readFileSync(store.objectPath(o.objectId)).equals(o.data)).toBe(true);
    expect(queue.stats()).toMatchObject({ running: 0, queued: 0, done: 3 });
  });

  it("keeps accepted tasks across a restart and resumes from the verified groups", async () => {
    const o = object("t-restart", 1024 * 1024, 20, { kind: "slow", bytesPerSecond: 2 << 20 });
    let queue = await openQueue();
    await queue.fetch(o.args);
    await waitFor("some progress durable", () => (queue.list().tasks[0]!.bytesDone >= 256 * 1024 ? true : undefined));
    await queue.stop();
    const done = queue.list().tasks[0]!.bytesDone;
    const servedBefore = origin.servedAt("t-restart").bytes;
    origin.behave("t-restart", { kind: "good" });
    events = [];
    queue = await openQueue();
    expect(queue.list().tasks[0]).toMatchObject({ objectId: o.objectId });
    await ended(o.objectId);
    expect(typesFor(o.objectId).at(-1)).toBe("task.done");
    expect(readFileSync(store.objectPath(o.objectId)).equals(o.data)).toBe(true);
    // Fetched again: at most what was not yet durable when the queue stopped (its stop checkpoints).
    expect(origin.servedAt("t-restart").bytes - servedBefore).toBeLessThanOrEqual(o.data.length - done);
    expect(servedBefore + (origin.servedAt("t-restart").bytes - servedBefore)).toBeLessThanOrEqual(
      o.data.length + 64 * 1024,
    );
  });

  it("fails with the sources' reason: not-found; bad-data names the source; the good source finishes", async () => {
    const queue = await openQueue();
    const gone = object("t-gone", 100_000, 30, { kind: "not-found" });
    await queue.fetch(gone.args);
    expect(await ended(gone.objectId)).toMatchObject({ type: "task.failed", code: "not-found" });
    const mixed = object("t-mixed", 300_000, 31, { kind: "corrupt", offset: 20_000 });
    const good = origin.serve("t-mixed-good", mixed.data);
    await queue.fetch({ ...mixed.args, sources: [...mixed.args.sources, good] });
    const done = await ended(mixed.objectId);
    expect(done).toMatchObject({ type: "task.done", dropped: [{ url: mixed.args.sources[0], code: "bad-data" }] });
    expect(store.has(mixed.objectId)).toBe(true);
    expect(queue.stats()).toMatchObject({ done: 1, failed: 1 });
    expect(queue.list().ended.map((t) => [t.objectId, t.state, t.code])).toEqual([
      [mixed.objectId, "done", undefined],
      [gone.objectId, "failed", "not-found"],
    ]);
  });

  it("fails no-space before fetching a byte when the object cannot fit", async () => {
    await store.stop();
    store = await openStore(100_000);
    const queue = await openQueue();
    const o = object("t-nospace", 500_000, 40);
    await queue.fetch(o.args);
    expect(await ended(o.objectId)).toMatchObject({ type: "task.failed", code: "no-space" });
    expect(origin.servedAt("t-nospace").bytes).toBe(0);
  });

  it("counts a running fetch's whole length as taken: a second pinned object that cannot fit beside it waits, then fails no-space without fetching a byte", async () => {
    await store.stop();
    store = await openStore(1_000_000);
    const queue = await openQueue({ concurrency: 2 });
    const first = object("t-room-a", 600_000, 42, { kind: "slow", bytesPerSecond: 1_000_000 });
    const second = object("t-room-b", 600_000, 43);
    let secondBytesWhenFirstEnded = -1;
    events = new Proxy(events, {
      get(target, key, receiver) {
        if (key === "push")
          return (e: Record<string, unknown>) => {
            if (e.objectId === first.objectId && e.type === "task.done")
              secondBytesWhenFirstEnded = origin.servedAt("t-room-b").bytes;
            return target.push(e);
          };
        return Reflect.get(target, key, receiver) as unknown;
      },
    });
    await queue.fetch({ ...first.args, pin: true });
    await queue.fetch({ ...second.args, pin: true });
    expect(await ended(first.objectId)).toMatchObject({ type: "task.done" });
    const failed = await ended(second.objectId);
    expect(failed).toMatchObject({ type: "task.failed", code: "no-space" });
    expect(secondBytesWhenFirstEnded).toBe(0);
    expect(origin.servedAt("t-room-b").bytes).toBe(0);
    expect(store.has(first.objectId)).toBe(true);
  });

  it("fails expired when the deadline passes mid-fetch; refuses a deadline already past", async () => {
    const queue = await openQueue();
    const o = object("t-late", 1024 * 1024, 50, { kind: "slow", bytesPerSecond: 512 * 1024 });
    await queue.fetch({ ...o.args, deadline: Date.now() + 300 });
    expect(await ended(o.objectId)).toMatchObject({ type: "task.failed", code: "expired" });
    expect(existsSync(join(dir, "data", "fetch", `${o.objectId}.part`))).toBe(false);
    const p = object("t-past", 1000, 51);
    await expect(queue.fetch({ ...p.args, deadline: Date.now() - 1 })).rejects.toMatchObject({ code: "expired" });
  });

  it("pauses (thermal): running tasks stop fetching and resume when the pause ends", async () => {
    const queue = await openQueue();
    const o = object("t-pause", 1024 * 1024, 60, { kind: "slow", bytesPerSecond: 2 << 20 });
    await queue.fetch(o.args);
    await waitFor("some bytes", () => (origin.servedAt("t-pause").bytes > 64 * 1024 ? true : undefined));
    queue.setPaused(true);
    await waitFor("stopped", () => (queue.stats().running === 0 ? true : undefined));
    const served = origin.servedAt("t-pause").bytes;
    await new Promise((r) => setTimeout(r, 300));
    expect(origin.servedAt("t-pause").bytes).toBe(served);
    expect(queue.list().tasks[0]!.state).toBe("queued");
    queue.setPaused(false);
    expect(await ended(o.objectId)).toMatchObject({ type: "task.done" });
  });

  it("drop cancels a running task (its partial file deleted, no done) and deletes a stored object", async () => {
    const queue = await openQueue();
    const o = object("t-drop", 1024 * 1024, 70, { kind: "slow", bytesPerSecond: 1 << 20 });
    await queue.fetch(o.args);
    await waitFor("running", () => (origin.servedAt("t-drop").bytes > 0 ? true : undefined));
    expect(await queue.drop({ objectId: o.objectId })).toEqual({
      objectId: o.objectId,
      task: "cancelled",
      object: "absent",
    });
    expect(readdirSync(join(dir, "data", "fetch"))).toEqual([]);
    expect(queue.list().tasks).toEqual([]);
    const s = object("t-drop-stored", 10_000, 71);
    await queue.fetch(s.args);
    await ended(s.objectId);
    expect(await queue.drop({ objectId: s.objectId })).toMatchObject({ task: "none", object: "deleted" });
    expect(store.has(s.objectId)).toBe(false);
    expect(typesFor(o.objectId)).not.toContain("task.done");
    // Dropped tasks do not come back after a restart.
    await queue.stop();
    const again = await openQueue();
    expect(again.list().tasks).toEqual([]);
  });

  it("refuses a task past the queue's bound (queue-full), none lost", async () => {
    const queue = await openQueue();
    queue.setPaused(true);
    const url = origin.serve("t-full", new Uint8Array(10));
    for (let i = 0; i < MAX_TASKS; i++) {
      await queue.fetch({ objectId: i.toString(16).padStart(64, "0"), length: 10, sources: [url] });
    }
    const err = await queue.fetch({ objectId: "f".repeat(64), length: 10, sources: [url] }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "queue-full" });
    expect(queue.stats()).toMatchObject({ queued: MAX_TASKS, running: 0 });
    await queue.stop();
    const again = await openQueue();
    again.setPaused(true);
    expect(again.list().tasks.length).toBe(MAX_TASKS);
  });

  it("a failure no source explains (the data disk) fails the task with io, once", async () => {
    const queue = await openQueue();
    // The fetch directory is gone and a file stands in its place: the partial file cannot be opened.
    rmSync(join(dir, "data", "fetch"), { recursive: true });
    writeFileSync(join(dir, "data", "fetch"), "not a directory");
    const o = object("t-io", 10_000, 90);
    await queue.fetch(o.args);
    expect(await ended(o.objectId)).toMatchObject({ type: "task.failed", code: "io" });
    expect(queue.stats()).toMatchObject({ queued: 0, running: 0, failed: 1 });
    expect(events.filter((e) => e.type === "task.failed").length).toBe(1);
  });

  it("refuses bad arguments with a one-line reason", async () => {
    const queue = await openQueue();
    const ok = object("t-args", 1000, 80).args;
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ ...ok, objectId: "xyz" }, "bad-args", /objectId/],
      [{ ...ok, length: -1 }, "bad-args", /length/],
      [{ ...ok, length: 65 * 1024 * 1024 }, "too-large", /over the/],
      [{ ...ok, sources: [] }, "bad-args", /sources/],
      [{ ...ok, sources: ["ftp://x/y"] }, "bad-args", /sources\[0\]/],
      [{ ...ok, sources: ["http://user:pw@x/y"] }, "bad-args", /without credentials/],
      [{ ...ok, outboard: 5 }, "bad-args", /outboard/],
      [{ ...ok, pin: "yes" }, "bad-args", /pin/],
      [{ ...ok, extra: 1 }, "bad-args", /unknown argument extra/],
      [{ ...ok, orders: { a: "not a token!" } }, "bad-args", /orders/],
    ];
    for (const [args, code, message] of cases) {
      const err = await queue.fetch(args).catch((e: unknown) => e);
      expect(err, JSON.stringify(args)).toBeInstanceOf(CommandRefused);
      expect((err as CommandRefused).code).toBe(code);
      expect((err as CommandRefused).message).toMatch(message);
    }
    await expect(queue.drop({ objectId: "nope" })).rejects.toMatchObject({ code: "bad-args" });
    expect(events).toEqual([]);
  });

  describe("orders, with this box's key", () => {
    let fleet: DeviceIdentity;
    let me: DeviceIdentity;
    let other: DeviceIdentity;
    beforeEach(async () => {
      [fleet, me, other] = await Promise.all(
        ["fleet", "me", "other"].map((n) => loadOrCreateDeviceIdentity(join(dir, "keys", n))),
      );
    });
    const order = (objectId: string, clientKey: string, signer: DeviceIdentity = fleet) =>
      signOrder(
        {
          serial: "s-1",
          deviceId: "0123456789abcdef0123456789abcdef",
          objectId,
          clientKey,
          maxBytes: 1 << 30,
          expiresAt: Date.now() + 600_000,
          rightsId: "rights:test",
        },
        signer,
      );
    const withKeys = () => openQueue({ receipts: { clientKey: me, fleetPublicKey: fleet.publicKeyHex } });

    it("refuses a forged order, another object's and another client's (bad-args); takes a good one", async () => {
      const queue = await withKeys();
      const o = object("t-orders", 1000, 81);
      const box = o.args.sources[0]!;
      const cases: [string, RegExp][] = [
        [order(o.objectId, me.publicKeyHex, other), /signature/],
        [order("ab".repeat(32), me.publicKeyHex), /^order s-1 is for object abababababababab\.\.\., not this task's$/],
        [
          order(o.objectId, other.publicKeyHex),
          new RegExp(
            `^order s-1 is for client key ${other.publicKeyHex.slice(0, 16)}\\.\\.\\., not this box's: ` +
              `sign it with --client-key ${me.publicKeyHex}$`,
          ),
        ],
      ];
      for (const [token, message] of cases) {
        const err = await queue.fetch({ ...o.args, orders: { [box]: token } }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(CommandRefused);
        expect((err as CommandRefused).code).toBe("bad-args");
        expect((err as CommandRefused).message).toMatch(message);
      }
      expect(events).toEqual([]);
      await queue.fetch({ ...o.args, orders: { [box]: order(o.objectId, me.publicKeyHex) } });
      expect(await ended(o.objectId)).toMatchObject({ type: "task.done" });
    });

    it("a task accepted before its orders were checked, for another client key: no receipts, one warning", async () => {
      const o = object("t-old-order", 300_000, 82);
      const box = o.args.sources[0]!;
      const token = order(o.objectId, other.publicKeyHex);
      const { log } = await RecordLog.open(join(dir, "tasks.log"));
      const spec = { ...o.args, pin: false, orders: { [box]: token }, acceptedAt: Date.now() };
      await log.append(Buffer.from(JSON.stringify({ o: "add", task: spec })));
      await log.close();
      const warnings: string[] = [];
      await openQueue({
        receipts: { clientKey: me, fleetPublicKey: fleet.publicKeyHex },
        log: { info: () => {}, warn: (line: string) => warnings.push(line), error: () => {} },
      });
      expect(await ended(o.objectId)).toMatchObject({ type: "task.done" });
      expect(warnings).toEqual([
        expect.stringMatching(
          new RegExp(`^task ${o.objectId}: no receipts under 1 order\\(s\\): ${box}: order s-1 is for client key`),
        ),
      ]);
      const served = origin.servedAt("t-old-order");
      expect(served.orders.every((t) => t === token)).toBe(true);
      expect(served.receipts.every((r) => r === undefined)).toBe(true);
    });
  });
});
