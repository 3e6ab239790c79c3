// Compute tasks as the fleet sends them (compute.run, compute.list, compute.drop) to `sharenode run` (the built
// bundle) on a real mosquitto, modules and input objects fetched from a real HTTP origin: the result signed by the
// device and equal to the sandbox's here, a large output kept in the store; hostile modules each reported with
// their code while the agent keeps running and its memory returns to where it was; a task cut by SIGKILL runs again
// after the restart and is claimed once in the ledger; a thermal pause stops a task and queues it again.
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runTask } from "../agent/compute/sandbox";
import { blake3 } from "../agent/kernels/blake3";
import { Ledger } from "../agent/ledger/ledger";
import { openComputeResult } from "../agent/protocol/compute-result";
import { loadOrCreateFleetKey, type FleetKey, type Reply } from "../agent/protocol/envelope";
import { toHex } from "../agent/util/hex";
import { AgentProcess } from "./helpers/agent-process";
import { compileTask, spinInput, spinTask } from "./helpers/compute-tasks";
import { agentEnv, FleetSide } from "./helpers/fleet-side";
import { Broker } from "./helpers/mosquitto";
import { Origin } from "./helpers/origin";
import { seededBytes } from "./helpers/random";
import { waiter } from "./helpers/wait";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "dist/sharenode.js");

let broker: Broker;
let origin: Origin;
let work: string;
let agent: AgentProcess;
let fleet: FleetKey;
let side: FleetSide;

const compile = compileTask;

/** Each input byte plus one, repeated `times` (the first input byte) times: output = input length x times. */
const REPEAT = `
export function run(): void {
  const n = input_length();
  const buf = new Uint8Array(n);
  read_input(buf.dataStart, 0, n);
  for (let i = 0; i < n; i++) buf[i] = <u8>(buf[i] + 1);
  const times = n > 0 ? <i32>buf[0] : 0;
  for (let t = 0; t < times; t++) write_output(buf.dataStart, n);
}`;

const SPIN = spinTask(1_000_000);

const env = () =>
  agentEnv({ brokerUrl: broker.url, fleetKeyHex: fleet.publicKeyHex, home: work }, { SHARENODE_CPU_SHARE: "100" });

const waitFor = waiter({
  timeoutMs: 30_000,
  intervalMs: 50,
  detail: () => `agent log:\n${agent?.log.slice(-3000) ?? ""}`,
});

const command = (cmd: string, args: Record<string, unknown> = {}): Promise<Reply> => side.command(agent, cmd, args);
const result = <T>(cmd: string, args: Record<string, unknown> = {}): Promise<T> => side.result<T>(agent, cmd, args);
const events = () => side.events();

const ended = (taskId: string) =>
  events().find((e) => (e.type === "compute.done" || e.type === "compute.failed") && e.taskId === taskId);

/** Serves `bytes` at the origin as objects/<id>; returns the object reference a task names. */
function published(bytes: Uint8Array): { id: string; length: number; sources: string[] } {
  const id = toHex(blake3(bytes));
  return { id, length: bytes.length, sources: [origin.serve(`objects/${id}`, bytes)] };
}

/** The agent's resident memory, KiB (VmRSS). */
function rssKiB(): number {
  const status = readFileSync(`/proc/${agent.child.pid}/status`, "utf8");
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)![1]);
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "sharenode-compute-agent-"));
  broker = await Broker.start();
  origin = await Origin.start();
  fleet = await loadOrCreateFleetKey(join(work, "fleet", "device-key.pem"));
  side = await FleetSide.connect(broker.url, fleet, waitFor, "fleet-compute-test");
  agent = await AgentProcess.start(BIN, env(), waitFor);
});

afterAll(async () => {
  if (agent?.running) agent.child.kill("SIGKILL");
  await side?.end();
  await origin?.stop();
  await broker?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("compute tasks over MQTT", () => {
  it("runs a module fetched from an origin on inline input: compute.accepted, then compute.done with the device's signed result, equal to the sandbox's here", async () => {
    const module = await compile(REPEAT);
    const input = new Uint8Array([2, 10, 20, 30]);
    const expected = await runTask(module, input);
    expect(expected.ok).toBe(true);
    if (!expected.ok) return;
    const accepted = await result<{ taskId: string; state: string }>("compute.run", {
      taskId: "inline-1",
      module: published(module),
      input: { data: Buffer.from(input).toString("base64") },
      limits: { cpuMs: 2000, memoryMb: 4 },
    });
    expect(accepted.taskId).toBe("inline-1");
    const done = await waitFor("compute.done", () => ended("inline-1"));
    expect(done.type, JSON.stringify(done)).toBe("compute.done");
    expect(done.outputId).toBe(expected.outputId);
    expect(Buffer.from(done.output as string, "base64").equals(Buffer.from(expected.output))).toBe(true);
    const opened = openComputeResult(done.result, agent.publicKey);
    expect(opened.ok && opened.result).toMatchObject({
      deviceId: agent.deviceId,
      taskId: "inline-1",
      moduleId: toHex(blake3(module)),
      inputId: toHex(blake3(input)),
      outputId: expected.outputId,
      outputLength: expected.output.length,
    });
    const order = events()
      .filter((e) => e.taskId === "inline-1")
      .map((e) => e.type);
    expect(order).toEqual(["compute.accepted", "compute.done"]);
    // The module is an object of the store now; a second task with it fetches nothing.
    const before = origin.servedAt(`objects/${toHex(blake3(module))}`).requests;
    await result("compute.run", {
      taskId: "inline-2",
      module: { id: toHex(blake3(module)), length: module.length },
      input: { data: Buffer.from([1, 5]).toString("base64") },
    });
    expect((await waitFor("inline-2", () => ended("inline-2"))).type).toBe("compute.done");
    expect(origin.servedAt(`objects/${toHex(blake3(module))}`).requests).toBe(before);
    // Sent again, it is the same task.
    const again = await result<{ duplicate?: boolean; state: string }>("compute.run", {
      taskId: "inline-1",
      module: published(module),
      input: { data: Buffer.from(input).toString("base64") },
    });
    expect(again).toMatchObject({ duplicate: true, state: "done" });
  });

  it("an input object from the origin and an output over 64 KiB: the output goes to the store, not the event", async () => {
    const module = await compile(REPEAT);
    const input = seededBytes(40_000, 3);
    input[0] = 2; // three copies (the first byte plus one): 120 000 bytes out
    const expected = await runTask(module, input);
    if (!expected.ok) throw new Error(expected.reason);
    await result("compute.run", { taskId: "big-out", module: published(module), input: published(input) });
    const done = await waitFor("compute.done", () => ended("big-out"));
    expect(done).toMatchObject({ type: "compute.done", outputId: expected.outputId, outputLength: 120_000 });
    expect(done.stored).toBe(true);
    expect(done.output).toBeUndefined();
    expect(events().some((e) => e.type === "object-added" && e.id === expected.outputId)).toBe(true);
  });

  it("refuses a bad compute.run in one line with its code; the agent keeps running", async () => {
    const reply = await command("compute.run", { taskId: "x", module: { id: "nope", length: 1 }, input: { data: "" } });
    expect(!reply.ok && reply.error).toEqual({
      code: "bad-args",
      message: "module.id must be 64 lowercase hex digits",
    });
    const big = await command("compute.run", {
      taskId: "too-big",
      module: { id: "ab".repeat(32), length: 1 },
      input: { data: Buffer.alloc(64 * 1024 + 1).toString("base64") },
    });
    expect(!big.ok && big.error.code).toBe("too-large");
    expect(agent.running).toBe(true);
  });

  it("hostile modules are each contained and reported with their code; the agent runs on, its memory returns to where it was, and the next task runs", async () => {
    const good = await compile(REPEAT);
    // Warm: a task has run, so the baseline includes what running any task leaves (the compiled worker source).
    await result("compute.run", { taskId: "warm", module: published(good), input: { data: "AQI=" } });
    await waitFor("warm", () => ended("warm"));
    await new Promise((r) => setTimeout(r, 500));
    const baseline = rssKiB();
    const hostile: Array<[string, Uint8Array, string, Record<string, number>]> = [
      [
        "forbidden",
        await compile(
          `@external("env", "seed") declare function seed(): f64;\nexport function run(): void { if (seed() > 0) unreachable(); }`,
        ),
        "forbidden-import",
        {},
      ],
      [
        "loop",
        await compile(`export function run(): void { let i = 0; while (true) { i++; } }`),
        "cpu-time",
        { cpuMs: 500 },
      ],
      [
        "allocate",
        await compile(
          `const keep: Uint8Array[] = [];\nexport function run(): void { while (true) keep.push(new Uint8Array(65536)); }`,
          1024,
        ),
        "trap|aborted",
        { memoryMb: 64 },
      ],
      ["over-cap", await compile(REPEAT, 2048), "memory-over-cap", { memoryMb: 64 }],
      [
        "oversized",
        await compile(
          `export function run(): void { const b = new Uint8Array(65536); while (true) write_output(b.dataStart, 65536); }`,
        ),
        "output-too-large",
        { outputKb: 1024 },
      ],
      ["trap", await compile(`export function run(): void { unreachable(); }`), "trap", {}],
    ];
    let peak = baseline;
    for (const [name, module, code, limits] of hostile) {
      await result("compute.run", {
        taskId: `hostile-${name}`,
        module: published(module),
        input: { data: "AAAA" },
        limits,
      });
      const e = await waitFor(`hostile-${name}`, () => {
        peak = Math.max(peak, rssKiB());
        return ended(`hostile-${name}`);
      });
      expect(e.type, `${name}: ${JSON.stringify(e)}`).toBe("compute.failed");
      expect(e.code).toMatch(new RegExp(`^(${code})$`));
      expect(e.reason).toMatch(/^[^\n]+$/);
    }
    expect(agent.running).toBe(true);
    // The next task runs as before.
    await result("compute.run", { taskId: "after-hostile", module: published(good), input: { data: "AQI=" } });
    expect((await waitFor("after-hostile", () => ended("after-hostile"))).type).toBe("compute.done");
    // Memory: the 64 MiB module's pages were resident while it ran; once the workers are gone the agent is back
    // within 16 MiB of where it was.
    const back = await waitFor("RSS back near the baseline", () => {
      const now = rssKiB();
      return now <= baseline + 16 * 1024 ? now : undefined;
    });
    console.log(`RSS: baseline ${baseline} KiB, peak ${peak} KiB, after ${back} KiB`);
    const list = await result<{ tasks: unknown[]; ended: Array<{ taskId: string; state: string }> }>("compute.list");
    expect(list.tasks).toEqual([]);
    expect(list.ended.filter((t) => t.taskId.startsWith("hostile-")).every((t) => t.state === "failed")).toBe(true);
  }, 90_000);

  it("status and the console show the queue: waiting, running, done, failed, CPU, the lanes and the share", async () => {
    const status = await result<{ compute?: Record<string, unknown> }>("status");
    // 100 % of the box: a lane per core.
    const lanes = availableParallelism();
    expect(status.compute).toMatchObject({ queued: 0, running: 0, lanes, cpuPercent: 100, paused: false });
    expect(status.compute!.done).toBeGreaterThanOrEqual(5);
    expect(status.compute!.failed).toBeGreaterThanOrEqual(6);
    const consoleRun = spawnSync(process.execPath, [BIN, "console"], {
      input: "status\ncompute\n",
      env: env(),
      encoding: "utf8",
    });
    expect(consoleRun.status, consoleRun.stderr).toBe(0);
    expect(consoleRun.stdout).toMatch(
      new RegExp(
        `^compute +0 waiting, 0 running; \\d+ done, \\d+ failed, \\d+\\.\\d s of CPU since the start; ${lanes} lanes? for 100 % of the box$`,
        "m",
      ),
    );
    // The console's compute: the share, nothing waiting, and the last ended tasks with their reasons.
    expect(consoleRun.stdout).toMatch(
      new RegExp(
        `^${lanes} lane\\(s\\) for 100 % of the box\nno task waiting or running\nended \\(newest first\\):$`,
        "m",
      ),
    );
    expect(consoleRun.stdout).toMatch(/^ +hostile-loop +failed +.+ +\d+ +cpu-time: used more than 500 ms of CPU$/m);
    expect(consoleRun.stdout).toMatch(/^ +after-hostile +done +.+ +\d+ +[0-9a-f]{16}$/m);
  });

  it("a thermal pause stops the running task and queues it again; once cool, it runs again from the start", async () => {
    const spin = await compile(SPIN);
    // Far longer than the thermal governor's 10 s between readings: the pause always finds it running.
    const rounds = spinInput(40_000);
    await result("compute.run", {
      taskId: "hot",
      module: published(spin),
      input: { data: Buffer.from(rounds).toString("base64") },
      limits: { cpuMs: 600_000, wallMs: 1_800_000 },
    });
    const stateOf = async () =>
      (await result<{ tasks: Array<{ taskId: string; state: string }> }>("compute.list")).tasks.find(
        (t) => t.taskId === "hot",
      )?.state;
    await waitFor("running", async () => (await stateOf()) === "running" || undefined);
    const zone = join(work, "data", "sim-board", "sys/class/thermal/thermal_zone0");
    mkdirSync(zone, { recursive: true });
    writeFileSync(join(zone, "temp"), "80000\n");
    await waitFor(
      "queued again",
      () => (/compute hot: paused: the box is too hot; queued again/.test(agent.log) ? true : undefined),
      { timeoutMs: 30_000 },
    );
    expect(await stateOf()).toBe("queued");
    // Held while hot: still queued a while later, nothing ended.
    await new Promise((r) => setTimeout(r, 1500));
    expect(await stateOf()).toBe("queued");
    expect(ended("hot")).toBeUndefined();
    writeFileSync(join(zone, "temp"), "40000\n");
    await waitFor("running again once cool", async () => (await stateOf()) === "running" || undefined, {
      timeoutMs: 30_000,
    });
    // Dropped by the fleet, rather than waited for: compute.failed with the code.
    expect(await result("compute.drop", { taskId: "hot" })).toEqual({ taskId: "hot", dropped: true });
    expect(await waitFor("the drop reported", () => ended("hot"))).toMatchObject({
      type: "compute.failed",
      code: "dropped",
    });
  }, 120_000);

  it("SIGKILL while a task runs: after the restart it runs again, and the ledger holds its result once", async () => {
    const spin = await compile(SPIN);
    const rounds = spinInput(1500);
    const expected = await runTask(spin, rounds, {
      cpuMs: 120_000,
      wallMs: 300_000,
      memoryBytes: 1 << 20,
      outputBytes: 64,
    });
    if (!expected.ok) throw new Error(expected.reason);
    await result("compute.run", {
      taskId: "killed",
      module: published(spin),
      input: { data: Buffer.from(rounds).toString("base64") },
      limits: { cpuMs: 120_000, wallMs: 300_000 },
    });
    await waitFor("running", async () => {
      const list = await result<{ tasks: Array<{ taskId: string; state: string }> }>("compute.list");
      return list.tasks.find((t) => t.taskId === "killed" && t.state === "running");
    });
    const killed = new Promise((resolve) => agent.child.once("exit", resolve));
    agent.child.kill("SIGKILL");
    await killed;
    expect(ended("killed")).toBeUndefined();
    agent = await AgentProcess.start(BIN, env(), waitFor);
    await waitFor("the queue resumed", () => /resuming 1 compute task/.test(agent.log) || undefined);
    const done = await waitFor("done after the restart", () => ended("killed"), { timeoutMs: 60_000 });
    expect(done).toMatchObject({ type: "compute.done", outputId: expected.outputId });
    // The ledger, read once the agent has stopped: one compute record per task done, this one included.
    const exited = new Promise((resolve) => agent.child.once("exit", resolve));
    agent.child.kill("SIGTERM");
    await exited;
    const { ledger } = await Ledger.open({ dir: join(work, "state", "ledger"), deviceId: agent.deviceId });
    const records = [...ledger.openRecords()];
    for (let i = 0; i < ledger.statements().length; i++)
      records.push(...(await ledger.recordsOf(i, 0, 100_000)).records);
    await ledger.close();
    const taskIds = records.flatMap((r) => (r.record.kind === "compute" ? [r.record.taskId] : []));
    const doneIds = events()
      .filter((e) => e.type === "compute.done")
      .map((e) => e.taskId as string);
    expect(taskIds.filter((t) => t === "killed")).toHaveLength(1);
    expect(new Set(taskIds)).toEqual(new Set(doneIds));
    expect(taskIds).toHaveLength(new Set(taskIds).size);
  }, 150_000);
});
