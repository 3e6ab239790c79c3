// share.cpuPercent, measured from /proc (issue 14): an agent (the built bundle) given more CPU-bound compute tasks
// than its share allows, its CPU time (utime + stime of the whole process, /proc/PID/stat) read over 60 s. With 25 %
// of this machine's cores the agent must use 25 % of them, within 10 % of the setting, over the minute: one lane,
// busy half the time (the duty cycle), its threads at nice 19.
//
// An "exclusive" file (test/vitest.config.ts): it runs after every other test file has finished, alone, because a
// share of the machine can only be measured on a machine nothing else is loading (nice 19 yields to everything).
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runTask } from "../agent/compute/sandbox";
import { blake3 } from "../agent/kernels/blake3";
import { loadOrCreateFleetKey, type FleetKey } from "../agent/protocol/envelope";
import { toHex } from "../agent/util/hex";
import { AgentProcess } from "./helpers/agent-process";
import { compileTask, spinInput, spinTask } from "./helpers/compute-tasks";
import { agentEnv, FleetSide } from "./helpers/fleet-side";
import { Broker } from "./helpers/mosquitto";
import { Origin } from "./helpers/origin";
import { waiter } from "./helpers/wait";

const BIN = join(fileURLToPath(new URL("..", import.meta.url)), "dist/sharenode.js");
const SHARE = 25;
const WINDOW_MS = 60_000;
/** USER_HZ: the unit of /proc's utime and stime. */
const HZ = 100;

let broker: Broker;
let origin: Origin;
let work: string;
let agent: AgentProcess;
let fleet: FleetKey;
let side: FleetSide;

const waitFor = waiter({ timeoutMs: 30_000, intervalMs: 50, detail: () => `agent log:\n${agent?.log.slice(-3000)}` });

/** CPU time of a process (all its threads), ms. */
function cpuMsOf(pid: number | string): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(f[11]) + Number(f[12])) * 1000) / HZ;
}

/** CPU ms of a process's main thread and of its other live threads (ended threads are in neither). */
function cpuByThread(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      // Every thread of node is called "node": the main thread (its id is the pid's) and the others.
      const name = tid === String(pid) ? "main" : "other";
      out[name] = (out[name] ?? 0) + cpuMsOf(`${pid}/task/${tid}`);
    } catch {
      // the thread ended
    }
  }
  return out;
}

/** The nice values of a process's threads. */
function niceValues(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`).flatMap((tid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      return [Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16])];
    } catch {
      return [];
    }
  });
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "sharenode-compute-share-"));
  broker = await Broker.start();
  origin = await Origin.start();
  fleet = await loadOrCreateFleetKey(join(work, "fleet", "device-key.pem"));
  side = await FleetSide.connect(broker.url, fleet, waitFor, "fleet-share-test");
  agent = await AgentProcess.start(
    BIN,
    agentEnv(
      { brokerUrl: broker.url, fleetKeyHex: fleet.publicKeyHex, home: work },
      { SHARENODE_CPU_SHARE: String(SHARE) },
    ),
    waitFor,
  );
});

afterAll(async () => {
  if (agent?.running) agent.child.kill("SIGKILL");
  await side?.end();
  await origin?.stop();
  await broker?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("share.cpuPercent", () => {
  it(`${SHARE} % of the box, measured from /proc over 60 s, is within 10 % of the setting`, async () => {
    const module = await compileTask(spinTask(100_000), 1);
    const id = toHex(blake3(module));
    const source = origin.serve(`objects/${id}`, module);
    // Tasks of about 0.5 s of CPU here: calibrated on this machine.
    const measured = await runTask(module, spinInput(1000));
    if (!measured.ok) throw new Error(measured.reason);
    const units = Math.max(1, Math.round((1000 * 500) / Math.max(1, measured.cpuMs)));
    const cores = availableParallelism();
    // More work than the share gives in the window, so the queue never runs dry.
    const tasks = Math.ceil((2 * WINDOW_MS * cores * SHARE) / 100 / 500);
    for (let i = 0; i < tasks; i++) {
      const input = spinInput(units + i);
      await side.result(agent, "compute.run", {
        taskId: `share-${i}`,
        module: { id, length: module.length, sources: [source] },
        input: { data: Buffer.from(input).toString("base64") },
      });
    }
    await waitFor("the first task done", () => side.events().some((e) => e.type === "compute.done"));
    const pid = agent.child.pid!;
    const cpuBefore = cpuMsOf(pid);
    const threadsBefore = cpuByThread(pid);
    const wallBefore = performance.now();
    let niceSeen = false;
    while (performance.now() - wallBefore < WINDOW_MS) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      if (niceValues(pid).includes(19)) niceSeen = true;
    }
    const cpu = cpuMsOf(pid) - cpuBefore;
    const threadsAfter = cpuByThread(pid);
    const byThread = Object.entries(threadsAfter)
      .map(([name, ms]) => `${name} ${ms - (threadsBefore[name] ?? 0)}`)
      .join(", ");
    const wall = performance.now() - wallBefore;
    const share = (100 * cpu) / (wall * cores);
    const done = side.events().filter((e) => e.type === "compute.done").length;
    console.log(
      `cpuPercent ${SHARE}: ${cpu} ms of CPU in ${Math.round(wall)} ms on ${cores} cores = ${share.toFixed(1)} % ` +
        `(${done} of ${tasks} tasks of ~500 ms done); by thread (ms): ${byThread}`,
    );
    expect(niceSeen, "a task thread at nice 19").toBe(true);
    expect(share).toBeGreaterThanOrEqual(SHARE * 0.9);
    expect(share).toBeLessThanOrEqual(SHARE * 1.1);
  }, 180_000);
});
