// Redundant compute from the fleet's side: `sharenode fleet compute submit` sends one task to three devices on a
// real mosquitto, two of them real agents (the built bundle) fetching the module from a real HTTP origin, the third
// a faked device that signs a wrong output with its own key. The quorum (2 of 3) accepts the real output and names
// the liar; `fleet collect` then `fleet settle --compute` pays the real devices' compute lines and refuses the
// liar's (disagrees-with-quorum), from the statements the devices signed.
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import mqtt, { type MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runTask } from "../agent/compute/sandbox";
import { loadOrCreateDeviceIdentity, type DeviceIdentity } from "../agent/identity/device-key";
import { blake3 } from "../agent/kernels/blake3";
import { Ledger } from "../agent/ledger/ledger";
import type { ComputeVerdict, SettlementBody } from "../agent/ledger/settle";
import { signComputeResult } from "../agent/protocol/compute-result";
import { loadOrCreateFleetKey, openCommand, signReply, type FleetKey } from "../agent/protocol/envelope";
import { topicsFor } from "../agent/protocol/topics";
import { toHex } from "../agent/util/hex";
import { AgentProcess } from "./helpers/agent-process";
import { compileTask } from "./helpers/compute-tasks";
import { runNode } from "./helpers/child";
import { agentEnv } from "./helpers/fleet-side";
import { Broker } from "./helpers/mosquitto";
import { Origin } from "./helpers/origin";
import { seededBytes } from "./helpers/random";
import { waiter } from "./helpers/wait";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "dist/sharenode.js");

let broker: Broker;
let origin: Origin;
let work: string;
let fleet: FleetKey;
const agents: AgentProcess[] = [];
let liar: { identity: DeviceIdentity; client: MqttClient; ran: Array<Record<string, unknown>> };

const waitFor = waiter({
  timeoutMs: 30_000,
  intervalMs: 50,
  detail: () => agents.map((a, i) => `agent ${i} log:\n${a.log.slice(-1500)}`).join("\n"),
});

// Statements every 10 s: the test settles what the devices signed without waiting an hour.
const env = (name: string) =>
  agentEnv(
    { brokerUrl: broker.url, fleetKeyHex: fleet.publicKeyHex, home: join(work, name) },
    { SHARENODE_LEDGER_WINDOW: "10" },
  );

/** `sharenode ARGS`, asynchronously (the origin serving the module lives in this process). */
const sharenode = (args: string[]) => runNode(BIN, args);

/**
 * A device that answers compute.run like an agent and then signs a wrong output with its own (registered) key: the
 * cheat a quorum is there to catch. It announces itself with a retained state record, as agents do.
 */
async function startLiar(): Promise<typeof liar> {
  const identity = await loadOrCreateDeviceIdentity(join(work, "liar"));
  const topics = topicsFor(identity.deviceId);
  const client = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: `liar-${identity.deviceId}` });
  const ran: Array<Record<string, unknown>> = [];
  let seq = 0;
  client.on("message", (topic, payload, packet) => {
    const prefix = topics.cmdFilter.slice(0, -1);
    if (!topic.startsWith(prefix)) return;
    const opened = openCommand(new Uint8Array(payload), {
      fleetPublicKey: fleet.publicKey,
      deviceId: identity.deviceId,
      topicCmd: topic.slice(prefix.length),
      now: Date.now(),
    });
    if (!opened.ok) return;
    const { cmd, nonce, args } = opened.command;
    const reply = signReply(
      { cmd, deviceId: identity.deviceId, nonce, ok: true, result: { state: "queued" } },
      identity,
    );
    void client.publish(packet.properties!.responseTopic!, Buffer.from(reply), {
      qos: 1,
      properties: { correlationData: packet.properties?.correlationData },
    });
    if (cmd !== "compute.run") return;
    ran.push(args);
    const task = args as { taskId: string; module: { id: string }; input: { data: string } };
    const input = Buffer.from(task.input.data, "base64");
    const wrong = new Uint8Array([6, 6, 6]);
    const result = signComputeResult(
      {
        deviceId: identity.deviceId,
        taskId: task.taskId,
        moduleId: task.module.id,
        inputId: toHex(blake3(input)),
        outputId: toHex(blake3(wrong)),
        outputLength: wrong.length,
        cpuMs: 5,
        wallMs: 5,
        at: Date.now(),
      },
      identity,
    );
    const event = { seq: seq++, ts: Date.now(), type: "compute.done", taskId: task.taskId, result, output: "BgYG" };
    void client.publish(topics.events, JSON.stringify(event), { qos: 1 });
  });
  await client.subscribeAsync(topics.cmdFilter, { qos: 1 });
  await client.publishAsync(
    topics.state,
    JSON.stringify({ state: "online", bdSeq: 0, ts: Date.now(), version: "0.1.0", pub: identity.publicKeyHex }),
    { qos: 1, retain: true },
  );
  return { identity, client, ran };
}

/** The task: every input byte times 3, plus its index. */
const taskModule = () =>
  compileTask(`
export function run(): void {
  const n = input_length();
  const buf = new Uint8Array(n);
  read_input(buf.dataStart, 0, n);
  for (let i = 0; i < n; i++) buf[i] = <u8>(buf[i] * 3 + i);
  write_output(buf.dataStart, n);
}`);

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "sharenode-compute-fleet-"));
  broker = await Broker.start();
  origin = await Origin.start();
  fleet = await loadOrCreateFleetKey(join(work, "fleet", "device-key.pem"));
  for (const name of ["box1", "box2"]) agents.push(await AgentProcess.start(BIN, env(name), waitFor));
  liar = await startLiar();
}, 60_000);

afterAll(async () => {
  for (const a of agents) if (a.running) a.child.kill("SIGKILL");
  await liar?.client.endAsync();
  await origin?.stop();
  await broker?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("fleet compute submit", () => {
  it("3 replicas, quorum 2: the real output is accepted, the faked device is named, and settlement refuses its compute line", async () => {
    const module = await taskModule();
    const moduleId = toHex(blake3(module));
    const base = origin.serve(`objects/${moduleId}`, module).replace(`objects/${moduleId}`, "");
    const input = seededBytes(3000, 5);
    writeFileSync(join(work, "task.wasm"), module);
    writeFileSync(join(work, "input.bin"), input);
    const expected = await runTask(module, input);
    expect(expected.ok).toBe(true);
    if (!expected.ok) return;
    const verdicts = join(work, "verdicts.json");
    const devices = [...agents.map((a) => a.deviceId), liar.identity.deviceId];
    // The fleet collects the devices' statements from before the task: the window its records fall in may close
    // at any moment (10 s windows).
    const collected = join(work, "collected.jsonl");
    const collect = sharenode([
      "fleet",
      "collect",
      "--out",
      collected,
      "--broker",
      broker.url,
      "--key-dir",
      join(work, "fleet"),
      "--duration",
      "30",
    ]);
    await new Promise((r) => setTimeout(r, 1000));
    const submit = await sharenode([
      "fleet",
      "compute",
      "submit",
      join(work, "task.wasm"),
      join(work, "input.bin"),
      "--replicas",
      "3",
      "--quorum",
      "2",
      "--source",
      base,
      "--task-id",
      "fleet-task-1",
      "--cpu-ms",
      "5000",
      "--broker",
      broker.url,
      "--key-dir",
      join(work, "fleet"),
      "--discover",
      "1",
      "--wait",
      "60",
      "--verdicts",
      verdicts,
      "--output",
      join(work, "output.bin"),
    ]);
    expect(submit.stderr).toBe("");
    expect(submit.status, submit.stdout).toBe(0);
    expect(submit.stdout).toContain(`accepted ${expected.outputId}: 2 of 3 agree\n`);
    const wrongId = toHex(blake3(new Uint8Array([6, 6, 6])));
    expect(submit.stdout).toContain(`disagrees: ${liar.identity.deviceId} (output ${wrongId})\n`);
    for (const a of agents) expect(submit.stdout).toMatch(new RegExp(`^${a.deviceId}\\s+done\\s.*agrees$`, "m"));
    expect(submit.stdout).toMatch(new RegExp(`^${liar.identity.deviceId}\\s+done\\s.*DISAGREES$`, "m"));
    expect(Buffer.from(readFileSync(join(work, "output.bin"))).equals(Buffer.from(expected.output))).toBe(true);
    const kept = JSON.parse(readFileSync(verdicts, "utf8")) as ComputeVerdict[];
    expect(kept).toEqual([
      {
        taskId: "fleet-task-1",
        moduleId,
        inputId: toHex(blake3(input)),
        outputId: expected.outputId,
        devices: expect.arrayContaining(devices) as string[],
        cpuMs: 5000,
      },
    ]);
    expect(liar.ran).toHaveLength(1);

    // The real devices' statements, as the fleet collected them (each window's, with its records).
    await waitFor("both devices' compute records collected", () => {
      if (!existsSync(collected)) return undefined;
      const withCompute = readFileSync(collected, "utf8")
        .split("\n")
        .filter((l) => l.includes('"kind":"compute"'));
      return withCompute.length >= 2 || undefined;
    });
    const collectedRun = await collect;
    expect(collectedRun.status, collectedRun.stderr).toBe(0);
    // The liar's statement, signed by its key over a compute record of its wrong output.
    const ledger = (await Ledger.open({ dir: join(work, "liar", "ledger"), deviceId: liar.identity.deviceId })).ledger;
    await ledger.append({
      kind: "compute",
      taskId: "fleet-task-1",
      moduleId,
      inputId: toHex(blake3(input)),
      outputId: wrongId,
      cpuMs: "5",
      wallMs: 5,
    });
    const start = Math.floor(Date.now() / 10_000) * 10_000;
    const statement = await ledger.closeWindow({ start, seconds: 10 }, liar.identity, true);
    const records = (await ledger.recordsOf(0)).records.map((r) => r.record);
    appendFileSync(
      collected,
      JSON.stringify({
        deviceId: liar.identity.deviceId,
        publicKey: liar.identity.publicKeyHex,
        statement: new TextDecoder().decode(statement.envelope),
        records,
      }) + "\n",
    );
    await ledger.close();

    const settled = await sharenode([
      "fleet",
      "settle",
      "--from",
      collected,
      "--compute",
      verdicts,
      "--prices",
      "1,1,1,2",
      "--key-dir",
      join(work, "fleet"),
    ]);
    expect(settled.stderr).toBe("");
    expect(settled.status).toBe(0);
    const lines = settled.stdout
      .trim()
      .split("\n")
      .map((l) => (JSON.parse(l) as { settlement: SettlementBody }).settlement)
      .flatMap((s) => s.lines.filter((l) => l.kind === "compute").map((l) => ({ deviceId: s.deviceId, ...l })));
    expect(lines).toHaveLength(3);
    for (const a of agents) {
      const line = lines.find((l) => l.deviceId === a.deviceId)!;
      expect(line.rejected).toBeUndefined();
      expect(line.ref).toBe("fleet-task-1");
      expect(line.amount).toBe(String(BigInt(line.units) * 2n));
    }
    const refused = lines.find((l) => l.deviceId === liar.identity.deviceId)!;
    expect(refused).toMatchObject({ acceptedUnits: "0", amount: "0", rejected: { reason: "disagrees-with-quorum" } });
  }, 120_000);

  it("refuses bad usage in one line with exit 2, and a module the devices would refuse before sending anything", async () => {
    const usage = await sharenode(["fleet", "compute", "submit", "only-one-file"]);
    expect(usage.status).toBe(2);
    expect(usage.stderr).toMatch(/^sharenode: fleet compute submit: expected MODULE.wasm and INPUT \(a file\)\n$/);
    writeFileSync(join(work, "not.wasm"), "not a module");
    const bad = await sharenode([
      "fleet",
      "compute",
      "submit",
      join(work, "not.wasm"),
      join(work, "input.bin"),
      "--source",
      "http://127.0.0.1:9/",
      "--broker",
      broker.url,
    ]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/^sharenode: fleet compute submit: .*not\.wasm: bad-module: not a WebAssembly module/);
    const quorum = await sharenode(["fleet", "compute", "submit", "a", "b", "--replicas", "2", "--quorum", "3"]);
    expect(quorum.status).toBe(2);
    expect(quorum.stderr).toMatch(/--quorum 3 is more than --replicas 2\n$/);
  });
});
