// Fetch tasks as the fleet sends them: `sharenode run` (the built bundle) against a real mosquitto, signed
// task.fetch / task.list / task.drop commands, events on the device's events topic, and a real HTTP origin.
// The crash test SIGKILLs the agent in the middle of a fetch: after the restart the origin is asked only for the
// bytes that were not yet verified and durable.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import mqtt, { type MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOutboard } from "../agent/kernels/outboard";
import { loadOrCreateFleetKey, openReply, signCommand, type FleetKey, type Reply } from "../agent/protocol/envelope";
import { topicsFor } from "../agent/protocol/topics";
import { AgentProcess } from "./helpers/agent-process";
import { Broker } from "./helpers/mosquitto";
import { Origin } from "./helpers/origin";
import { seededBytes } from "./helpers/random";
import { waiter } from "./helpers/wait";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "dist/sharenode.js");
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

let broker: Broker;
let origin: Origin;
let work: string;
let agent: AgentProcess;
let fleet: FleetKey;
let client: MqttClient;
const inbox: Array<{ topic: string; payload: Buffer }> = [];

function env(): NodeJS.ProcessEnv {
  return {
    ...process.env,
    SHARENODE_BROKER: broker.url,
    SHARENODE_STATE: join(work, "state"),
    SHARENODE_DATA: join(work, "data"),
    SHARENODE_FLEET_KEY: fleet.publicKeyHex,
    SHARENODE_ALLOW_SYSTEM_DISK: "true",
    // The sim board: a SIGKILLed agent must never leave this machine's own /dev/watchdog armed.
    SHARENODE_BOARD: "sim",
  };
}

const waitFor = waiter({
  timeoutMs: 30_000,
  intervalMs: 50,
  detail: () => `agent log:\n${agent?.log.slice(-3000) ?? ""}`,
});

/** Sends a signed command and returns the device's verified reply. */
async function command(cmd: string, args: Record<string, unknown> = {}): Promise<Reply> {
  const topics = topicsFor(agent.deviceId);
  const responseTopic = topics.replyTo(`t${Math.random().toString(16).slice(2)}`);
  await client.subscribeAsync(responseTopic, { qos: 1 });
  const payload = signCommand({ cmd, deviceId: agent.deviceId, args, exp: Date.now() + 60_000 }, fleet);
  await client.publishAsync(topics.cmd(cmd), Buffer.from(payload), { qos: 1, properties: { responseTopic } });
  const message = await waitFor(`a reply to ${cmd}`, () => inbox.find((m) => m.topic === responseTopic));
  const opened = openReply(message.payload, { devicePublicKey: agent.publicKey, deviceId: agent.deviceId });
  if (!opened.ok) throw new Error(`reply does not verify: ${opened.reason}`);
  return opened.reply;
}

async function result<T>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
  const reply = await command(cmd, args);
  if (!reply.ok) throw new Error(`${cmd} refused: ${reply.error.code}: ${reply.error.message}`);
  return reply.result as T;
}

/** The events the device published, parsed. */
const events = (): Array<Record<string, unknown>> =>
  inbox
    .filter((m) => m.topic.endsWith("/events"))
    .map((m) => JSON.parse(m.payload.toString()) as Record<string, unknown>);

interface ListResult {
  tasks: Array<{ objectId: string; state: string; bytesDone: number }>;
  ended: Array<{ objectId: string; state: string; code?: string }>;
  stats: { queued: number; running: number; done: number; failed: number };
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "sharenode-tasks-agent-"));
  mkdirSync(join(work, "data"));
  broker = await Broker.start();
  origin = await Origin.start();
  fleet = await loadOrCreateFleetKey(join(work, "fleet", "device-key.pem"));
  client = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: "fleet-tasks-test" });
  client.on("message", (topic, payload) => inbox.push({ topic, payload }));
  await client.subscribeAsync("sharenode/v1/+/events", { qos: 1 });
  agent = await AgentProcess.start(BIN, env(), waitFor);
});

afterAll(async () => {
  if (agent?.running) agent.child.kill("SIGKILL");
  await client?.endAsync();
  await origin?.stop();
  await broker?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("fetch tasks over MQTT", () => {
  it("refuses a bad task with the handler's code; the agent keeps running", async () => {
    const reply = await command("task.fetch", { objectId: "nope", length: 1, sources: ["http://x/"] });
    expect(reply.ok).toBe(false);
    expect(!reply.ok && reply.error).toEqual({ code: "bad-args", message: "objectId must be 64 lowercase hex digits" });
    expect((await result<ListResult>("task.list")).tasks).toEqual([]);
  });

  it("SIGKILL mid-fetch: after the restart the origin serves only the bytes not yet verified", async () => {
    const length = 4 * 1024 * 1024;
    const data = seededBytes(length, 7);
    const { id, outboard } = createOutboard(data);
    const objectId = hex(id);
    // The origin sends the first MiB, then holds the connection open without a byte more: the agent is
    // mid-fetch, with 1 MiB verified (it checkpoints every second) and a request in flight.
    const held = 1024 * 1024;
    const source = origin.serve("kill.bin", data, { kind: "stall", after: held });
    const outboardUrl = origin.serve("kill.bin.obao", outboard);
    const accepted = await result<{ state: string }>("task.fetch", {
      objectId,
      length,
      sources: [source],
      outboard: outboardUrl,
      pin: true,
    });
    expect(accepted.state).toBe("running");
    await waitFor("1 MiB verified and durable", async () => {
      const list = await result<ListResult>("task.list");
      return list.tasks[0]?.bytesDone === held || undefined;
    });
    expect(
      events()
        .filter((e) => e.objectId === objectId)
        .map((e) => e.type)[0],
    ).toBe("task.accepted");
    expect(origin.servedAt("kill.bin").bytes).toBe(held);

    const killed = new Promise((resolve) => agent.child.once("exit", resolve));
    agent.child.kill("SIGKILL");
    await killed;
    origin.behave("kill.bin", { kind: "good" });
    const requestsBefore = origin.servedAt("kill.bin").requests;
    agent = await AgentProcess.start(BIN, env(), waitFor);
    const done = await waitFor("task.done", () =>
      events().find((e) => e.type === "task.done" && e.objectId === objectId),
    );
    expect(done).toMatchObject({ length, verifiedBy: "groups" });
    // Only the unverified tail was served again: nothing before the held MiB, every byte after it once.
    const served = origin.servedAt("kill.bin");
    expect(served.bytes - held).toBe(length - held);
    const after = served.ranges.slice(requestsBefore);
    expect(Math.min(...after.map(([start]) => start))).toBe(held);
    expect(readFileSync(join(work, "data", "objects", objectId.slice(0, 2), objectId)).equals(data)).toBe(true);
    const list = await result<ListResult>("task.list");
    expect(list.tasks).toEqual([]);
    expect(list.stats).toMatchObject({ queued: 0, running: 0, done: 1, failed: 0 });
  });

  it("a hot box holds its fetch tasks (the thermal pause) and runs them once it has cooled", async () => {
    // The sim board's thermal zone says 80 °C (pause at 75) from the restart on.
    const zone = join(work, "data", "sim-board", "sys", "class", "thermal", "thermal_zone0");
    mkdirSync(zone, { recursive: true });
    writeFileSync(join(zone, "temp"), "80000\n");
    const killed = new Promise((resolve) => agent.child.once("exit", resolve));
    agent.child.kill("SIGKILL");
    await killed;
    agent = await AgentProcess.start(BIN, env(), waitFor);
    await waitFor("throttled", () => (/thermal: throttling/.test(agent.log) ? true : undefined));
    const data = seededBytes(200_000, 9);
    const { id, outboard } = createOutboard(data);
    const objectId = hex(id);
    const source = origin.serve("hot.bin", data);
    const outboardUrl = origin.serve("hot.bin.obao", outboard);
    const reply = await result<{ state: string }>("task.fetch", {
      objectId,
      length: data.length,
      sources: [source],
      outboard: outboardUrl,
    });
    expect(reply.state).toBe("queued");
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect((await result<ListResult>("task.list")).tasks).toMatchObject([{ objectId, state: "queued" }]);
    expect(origin.servedAt("hot.bin").requests).toBe(0);
    // Cooled: the governor's next reading (every 10 s) lets the task run.
    writeFileSync(join(zone, "temp"), "40000\n");
    await waitFor("task.done", () => events().find((e) => e.type === "task.done" && e.objectId === objectId));
    expect(origin.servedAt("hot.bin").bytes).toBe(data.length);
  });

  it("task.fetch, task.list and task.drop: a failed task's reason, and a dropped object deleted", async () => {
    const data = seededBytes(300_000, 8);
    const { id, outboard } = createOutboard(data);
    const objectId = hex(id);
    const gone = origin.serve("drop-gone.bin", data, { kind: "not-found" });
    await result("task.fetch", { objectId, length: data.length, sources: [gone] });
    const failed = await waitFor("task.failed", () =>
      events().find((e) => e.type === "task.failed" && e.objectId === objectId),
    );
    expect(failed).toMatchObject({ code: "not-found", dropped: [{ url: gone, code: "not-found" }] });
    expect((await result<ListResult>("task.list")).ended[0]).toMatchObject({
      objectId,
      state: "failed",
      code: "not-found",
    });

    const good = origin.serve("drop-good.bin", data);
    const outboardUrl = origin.serve("drop-good.bin.obao", outboard);
    await result("task.fetch", { objectId, length: data.length, sources: [good], outboard: outboardUrl });
    await waitFor("task.done", () => events().find((e) => e.type === "task.done" && e.objectId === objectId));
    expect(await result("task.drop", { objectId })).toEqual({ objectId, task: "none", object: "deleted" });
    await waitFor("object-removed", () =>
      events().find((e) => e.type === "object-removed" && e.id === objectId && e.reason === "deleted"),
    );
    expect(await result("task.drop", { objectId })).toEqual({ objectId, task: "none", object: "absent" });
  });
});
