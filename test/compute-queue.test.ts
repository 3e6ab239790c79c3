// The compute queue (agent/compute/queue.ts) with a stand-in sandbox whose tasks end when the test says: commands
// checked and refused in one line, tasks durable across a restart of the queue (the log on a real file), lanes and
// the duty cycle's rest from the owner's share, a thermal pause that stops and queues again, drop, deadline, and a
// result claimed once (the ledger's record found after a power cut).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ComputeQueue, MAX_INLINE_INPUT, type ComputeQueueOptions, type ComputeRecord } from "../agent/compute/queue";
import type { TaskLimits, TaskOutcome } from "../agent/compute/sandbox";
import { loadOrCreateDeviceIdentity, type DeviceIdentity } from "../agent/identity/device-key";
import { blake3 } from "../agent/kernels/blake3";
import { CommandRefused } from "../agent/link/command-gate";
import { openComputeResult } from "../agent/protocol/compute-result";
import { toHex } from "../agent/util/hex";

const MODULE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]);
const MODULE_ID = toHex(blake3(MODULE));

interface Pending {
  input: Uint8Array;
  limits: TaskLimits;
  nice: number;
  signal: AbortSignal;
  finish(outcome: TaskOutcome): void;
}

let dir: string;
let identity: DeviceIdentity;
let running: Pending[];
let events: Array<Record<string, unknown>>;
let records: ComputeRecord[];
let queues: ComputeQueue[];

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "sharenode-compute-queue-"));
  identity = await loadOrCreateDeviceIdentity(join(dir, "state"));
  running = [];
  events = [];
  records = [];
  queues = [];
});

afterEach(async () => {
  for (const q of queues) await q.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function open(overrides: Partial<ComputeQueueOptions> = {}): Promise<ComputeQueue> {
  const queue = new ComputeQueue({
    logPath: join(dir, "state", "compute.log"),
    deviceId: identity.deviceId,
    signer: identity,
    objectBytes: async (ref) => {
      if (ref.id === MODULE_ID) return MODULE;
      throw new CommandRefused("not-found", `no object ${ref.id}`);
    },
    run: (_module, input, limits, options) =>
      new Promise<TaskOutcome>((resolve) => {
        const pending: Pending = { input, limits, ...options, finish: resolve };
        running.push(pending);
        options.signal.addEventListener("abort", () =>
          resolve({ ok: false, code: "stopped", reason: String(options.signal.reason), cpuMs: 5, wallMs: 5 }),
        );
      }),
    record: async (work) => {
      records.push(work);
    },
    alreadyRecorded: (taskId) => records.some((r) => r.taskId === taskId),
    event: (body) => events.push(body),
    cpuPercent: 100,
    cores: 2,
    ...overrides,
  });
  await queue.start();
  queues.push(queue);
  return queue;
}

const task = (taskId: string, input = "AQID", extra: Record<string, unknown> = {}) => ({
  taskId,
  module: { id: MODULE_ID, length: MODULE.length, sources: ["http://origin.test/objects/x"] },
  input: { data: input },
  ...extra,
});

const tick = () => new Promise((r) => setTimeout(r, 5));
async function until<T>(what: string, check: () => T | undefined): Promise<T> {
  for (let i = 0; i < 400; i++) {
    const v = check();
    if (v !== undefined && v !== false) return v;
    await tick();
  }
  throw new Error(`timed out waiting for ${what}`);
}

function succeed(p: Pending, output: Uint8Array, cpuMs: number, wallMs: number): void {
  p.finish({ ok: true, outputId: toHex(blake3(output)), output, cpuMs, wallMs });
}

describe("the compute queue", () => {
  it("refuses a bad command in one line with its code, and accepts nothing of it", async () => {
    const queue = await open();
    const refusal = async (args: Record<string, unknown>) => {
      try {
        await queue.run(args);
      } catch (err) {
        if (err instanceof CommandRefused) return `${err.code}: ${err.message}`;
        throw err;
      }
      return "accepted";
    };
    expect(await refusal({ ...task("ok"), taskId: "no spaces" })).toMatch(/^bad-args: taskId must be/);
    expect(await refusal({ ...task("a"), module: { id: "zz", length: 1 } })).toMatch(/^bad-args: module.id must be/);
    expect(await refusal({ ...task("b"), module: { id: MODULE_ID, length: 1, sources: ["ftp://x/"] } })).toMatch(
      /^bad-args: module.sources\[0\] must be an http\(s\) URL/,
    );
    const big = Buffer.alloc(MAX_INLINE_INPUT + 1).toString("base64");
    expect(await refusal(task("c", big))).toMatch(/^too-large: input.data must be base64 of at most 65536 bytes/);
    expect(await refusal(task("d", "not base64!"))).toMatch(/^bad-args: input.data must be base64/);
    expect(await refusal(task("e", "AQID", { limits: { cpuMs: 0 } }))).toMatch(/^bad-args: limits.cpuMs must be/);
    expect(await refusal(task("f", "AQID", { limits: { memoryMb: 100_000 } }))).toMatch(
      /^bad-args: limits.memoryMb must be an integer from 1 to 256/,
    );
    expect(await refusal(task("g", "AQID", { deadline: Date.now() - 1 }))).toMatch(/^expired: /);
    expect(await refusal(task("h", "AQID", { extra: 1 }))).toMatch(/^bad-args: unknown argument extra/);
    expect(queue.list().tasks).toEqual([]);
    expect(events).toEqual([]);
    // The biggest inline input fits.
    expect(await refusal(task("max", Buffer.alloc(MAX_INLINE_INPUT).toString("base64")))).toBe("accepted");
  });

  it("runs a task at nice 19: compute.accepted, then compute.done with a result the device signed, then its ledger record", async () => {
    const queue = await open();
    const accepted = await queue.run(task("t1", "AQID", { limits: { cpuMs: 777, memoryMb: 8 } }));
    expect(accepted).toMatchObject({ taskId: "t1", moduleId: MODULE_ID });
    const p = await until("the task to run", () => running[0]);
    expect(Array.from(p.input)).toEqual([1, 2, 3]);
    expect(p.nice).toBe(19);
    expect(p.limits).toMatchObject({ cpuMs: 777, memoryBytes: 8 * 1024 * 1024 });
    const output = new Uint8Array([9, 9]);
    succeed(p, output, 120, 150);
    const done = await until("compute.done", () => events.find((e) => e.type === "compute.done"));
    expect(events.map((e) => e.type)).toEqual(["compute.accepted", "compute.done"]);
    const opened = openComputeResult(done.result, identity.publicKey);
    expect(opened.ok && opened.result).toMatchObject({
      deviceId: identity.deviceId,
      taskId: "t1",
      moduleId: MODULE_ID,
      inputId: toHex(blake3(new Uint8Array([1, 2, 3]))),
      outputId: toHex(blake3(output)),
      outputLength: 2,
      cpuMs: 120,
      wallMs: 150,
    });
    expect(done.output).toBe("CQk=");
    await until("the ledger record", () => records[0]);
    expect(records).toEqual([
      {
        taskId: "t1",
        moduleId: MODULE_ID,
        inputId: toHex(blake3(new Uint8Array([1, 2, 3]))),
        outputId: toHex(blake3(output)),
        cpuMs: "120",
        wallMs: 150,
      },
    ]);
    // Sent again (the fleet retries): the same task, not a second one.
    expect(await queue.run(task("t1"))).toMatchObject({ taskId: "t1", state: "done", duplicate: true });
    expect(queue.stats()).toMatchObject({ done: 1, failed: 0, cpuMs: 120 });
  });

  it("keeps accepted tasks across a restart: the one cut short runs again, and a result already in the ledger is not claimed twice", async () => {
    let queue = await open({ cpuPercent: 50 }); // one lane
    await queue.run(task("a"));
    await queue.run(task("b"));
    await queue.run(task("c"));
    await until("a running", () => running[0]);
    await queue.stop(); // the power goes: a was running, b and c waiting
    queues = [];
    // b's record reached the ledger before the cut, its end in compute.log did not (it ran on another start).
    records.push({
      taskId: "b",
      moduleId: MODULE_ID,
      inputId: "0".repeat(64),
      outputId: "0".repeat(64),
      cpuMs: "1",
      wallMs: 1,
    });
    running = [];
    events = [];
    queue = await open({ cpuPercent: 50 });
    expect(queue.list().tasks.map((t) => t.taskId)).toEqual(["a", "b", "c"]);
    const first = await until("a again", () => running[0]);
    succeed(first, new Uint8Array([1]), 1, 1);
    // b is ended without running (its record is there); c runs.
    const second = await until("c", () => running[1]);
    expect(Array.from(second.input)).toEqual([1, 2, 3]);
    succeed(second, new Uint8Array([2]), 1, 1);
    await until("c done", () => events.filter((e) => e.type === "compute.done").length === 2 || undefined);
    expect(records.map((r) => r.taskId).sort()).toEqual(["a", "b", "c"]);
    expect(events.filter((e) => e.type === "compute.done").map((e) => e.taskId)).toEqual(["a", "c"]);
    await until("the queue empty", () => queue.list().tasks.length === 0 || undefined);
    // And after another restart nothing is left.
    await queue.stop();
    queues = [];
    queue = await open();
    expect(queue.list().tasks).toEqual([]);
  });

  it("lanes and the duty cycle: 100 % of 2 cores runs 2 at once; 25 % runs 1 and rests 3x its CPU time after each task", async () => {
    const prepared: number[] = [];
    const full = await open({ cpuPercent: 100, cores: 2, prepare: (n) => prepared.push(n) });
    expect(full.laneCount).toBe(2);
    await full.run(task("x1"));
    await full.run(task("x2"));
    await full.run(task("x3"));
    await until("two running", () => running.length === 2 || undefined);
    // Workers asked for ahead of the tasks: one for the first task, then both lanes.
    expect(prepared.slice(0, 3)).toEqual([1, 2, 2]);
    await tick();
    expect(running).toHaveLength(2);
    succeed(running[0]!, new Uint8Array([0]), 1, 1);
    succeed(running[1]!, new Uint8Array([0]), 1, 1);
    await until("x3", () => running[2]);
    succeed(running[2]!, new Uint8Array([0]), 1, 1);
    await full.stop();
    queues = [];
    running = [];

    // 25 % of 2 cores: half a core, one lane at 50 %: a task of 100 ms CPU over 100 ms wall rests 100 ms more.
    const quarter = await open({ cpuPercent: 25, cores: 2 });
    expect(quarter.laneCount).toBe(1);
    await quarter.run(task("y1"));
    await quarter.run(task("y2"));
    const y1 = await until("y1", () => running[0]);
    const ended = performance.now();
    succeed(y1, new Uint8Array([0]), 100, 100);
    await until("y2", () => running[1]);
    const rested = performance.now() - ended;
    expect(rested).toBeGreaterThanOrEqual(95);
    expect(rested).toBeLessThan(1000);
    // Following the share: 100 % gives two lanes.
    quarter.setCpuPercent(100);
    expect(quarter.laneCount).toBe(2);
  });

  it("a thermal pause stops the running task and queues it again; it runs from the start when the pause ends", async () => {
    const queue = await open({ cpuPercent: 50 });
    await queue.run(task("hot"));
    await until("running", () => running[0]);
    queue.setPaused(true);
    await until("queued again", () => queue.list().tasks[0]?.state === "queued" || undefined);
    await tick();
    expect(running).toHaveLength(1);
    expect(events.map((e) => e.type)).toEqual(["compute.accepted"]);
    queue.setPaused(false);
    const again = await until("running again", () => running[1]);
    succeed(again, new Uint8Array([7]), 1, 1);
    await until("done", () => events.find((e) => e.type === "compute.done"));
  });

  it("drop stops a running task and ends it; a missing module fails the task with its code; a passed deadline fails it expired", async () => {
    const queue = await open({ cpuPercent: 100 });
    await queue.run(task("dropme"));
    await until("running", () => running[0]);
    expect(await queue.drop({ taskId: "dropme" })).toEqual({ taskId: "dropme", dropped: true });
    expect(await queue.drop({ taskId: "dropme" })).toEqual({ taskId: "dropme", dropped: false });
    await queue.run({ ...task("nomodule"), module: { id: "ab".repeat(32), length: 5, sources: [] } });
    await until("failed", () => events.find((e) => e.type === "compute.failed" && e.taskId === "nomodule"));
    const failures = events.filter((e) => e.type === "compute.failed");
    expect(failures.map((e) => [e.taskId, e.code])).toEqual([
      ["dropme", "dropped"],
      ["nomodule", "not-found"],
    ]);
    await queue.run(task("late", "AQID", { deadline: Date.now() + 30 }));
    // Held by a pause past its deadline.
    queue.setPaused(true);
    await new Promise((r) => setTimeout(r, 60));
    queue.setPaused(false);
    await until("expired", () => events.find((e) => e.type === "compute.failed" && e.code === "expired"));
    expect(records).toEqual([]);
    // Running past its deadline: stopped, and failed expired (the fleet gives the task to another box).
    await queue.run(task("slow", "AQID", { deadline: Date.now() + 50 }));
    await until("expired while running", () => events.find((e) => e.type === "compute.failed" && e.taskId === "slow"));
    expect(events.find((e) => e.taskId === "slow" && e.type === "compute.failed")).toMatchObject({
      code: "expired",
      reason: "the deadline passed while the task ran",
    });
    // Queued behind a running task past its deadline: failed expired when the deadline passes, not when a lane frees.
    await queue.stop();
    queues = [];
    const one = await open({ cpuPercent: 50 });
    await one.run(task("busy"));
    await one.run(task("waiting", "AQID", { deadline: Date.now() + 50 }));
    await until("expired while queued", () =>
      events.find((e) => e.taskId === "waiting" && e.type === "compute.failed"),
    );
    expect(events.find((e) => e.taskId === "waiting" && e.type === "compute.failed")).toMatchObject({
      code: "expired",
      reason: "the deadline passed while the task was queued",
    });
    expect(one.list().tasks.map((t) => [t.taskId, t.state])).toEqual([["busy", "running"]]);
  });
});
