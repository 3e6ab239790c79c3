// The server inside the daemon (the built bundle, `sharenode run`, against a real mosquitto): its URLs in the
// birth (state record), an object served to curl with a fleet-signed order and refused without one, a receipt
// kept in receipts.log across a SIGKILL of the agent.
import { execFile, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import mqtt, { type MqttClient } from "mqtt";
import { afterAll, beforeAll, expect, it } from "vitest";
import { blake3 } from "../agent/kernels/blake3";
import { readRecordLog } from "../agent/durable/record-log";
import { loadOrCreateDeviceIdentity, type DeviceIdentity } from "../agent/identity/device-key";
import { loadOrCreateFleetKey, type FleetKey } from "../agent/protocol/envelope";
import { signOrder } from "../agent/protocol/order";
import { signReceipt } from "../agent/protocol/receipt";
import { AgentProcess } from "./helpers/agent-process";
import { Broker } from "./helpers/mosquitto";
import { waiter } from "./helpers/wait";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "dist/sharenode.js");
const run = promisify(execFile);

let broker: Broker;
let work: string;
let agent: AgentProcess | undefined;
let fleet: FleetKey;
let clientKey: DeviceIdentity;
let mq: MqttClient;
const births: Array<{ state: string; serve?: string[] }> = [];
const data = new Uint8Array(300_000).map((_, i) => (i * 13) & 0xff);
let objectId = "";

const waitFor = waiter({ timeoutMs: 20_000, intervalMs: 50, detail: () => `agent log:\n${agent?.log.slice(-2000)}` });

function env(): NodeJS.ProcessEnv {
  return {
    ...process.env,
    SHARENODE_BROKER: broker.url,
    SHARENODE_STATE: join(work, "state"),
    SHARENODE_DATA: join(work, "data"),
    SHARENODE_FLEET_KEY: fleet.publicKeyHex,
    SHARENODE_ALLOW_SYSTEM_DISK: "true",
    SHARENODE_BOARD: "sim",
    SHARENODE_SERVE_BIND: "127.0.0.1",
    SHARENODE_SERVE_PORT: "0",
  };
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "sharenode-serve-agent-"));
  mkdirSync(join(work, "data"));
  broker = await Broker.start();
  fleet = await loadOrCreateFleetKey(join(work, "fleet", "device-key.pem"));
  clientKey = await loadOrCreateDeviceIdentity(join(work, "client"));
  mq = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: "fleet-test" });
  mq.on("message", (_topic, payload) => births.push(JSON.parse(payload.toString())));
  await mq.subscribeAsync("sharenode/v1/+/state", { qos: 1 });
  const file = join(work, "object.bin");
  writeFileSync(file, data);
  const add = spawnSync(
    process.execPath,
    [BIN, "store", "add", file, "--data", join(work, "data"), "--state", join(work, "state"), "--allow-system-disk"],
    { encoding: "utf8" },
  );
  expect(add.status, add.stderr).toBe(0);
  objectId = Buffer.from(blake3(data)).toString("hex");
  agent = await AgentProcess.start(BIN, env(), waitFor);
});

afterAll(async () => {
  if (agent?.running) agent.child.kill("SIGKILL");
  await mq?.endAsync();
  await broker?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

it("announces its URLs in the birth, serves with an order, refuses without, keeps receipts across SIGKILL", async () => {
  const birth = await waitFor("a birth with serve URLs", () => births.find((b) => b.state === "online" && b.serve));
  expect(birth.serve).toHaveLength(1);
  const base = birth.serve![0]!;
  expect(base).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  const url = `${base}/v1/objects/${objectId}`;
  const order = signOrder(
    {
      serial: "agent-1",
      deviceId: agent!.deviceId,
      objectId,
      clientKey: clientKey.publicKeyHex,
      maxBytes: 1_000_000,
      expiresAt: Date.now() + 600_000,
      rightsId: "r",
    },
    fleet,
  );
  const out = join(work, "out.bin");
  const ok = await run("curl", ["-s", "-o", out, "-w", "%{http_code}", "-H", `Sharenode-Order: ${order}`, url]);
  expect(ok.stdout).toBe("200");
  expect(Buffer.compare(readFileSync(out), Buffer.from(data))).toBe(0);
  const refused = await run("curl", ["-s", "-o", out, "-w", "%{http_code}", url]);
  expect(refused.stdout).toBe("401");
  const receipt = signReceipt({ serial: "agent-1", bytes: data.length }, clientKey);
  const posted = await run("curl", [
    "-s",
    "-H",
    `Sharenode-Order: ${order}`,
    "--data-binary",
    receipt,
    `${base}/v1/receipts`,
  ]);
  expect(JSON.parse(posted.stdout)).toEqual({ serial: "agent-1", bytes: data.length });
  agent!.child.kill("SIGKILL");
  await new Promise((resolve) => agent!.child.once("exit", resolve));
  const log = await readRecordLog(join(work, "state", "receipts.log"));
  expect(log.ok).toBe(true);
  const records = log.ok ? log.records.map((r) => JSON.parse(Buffer.from(r).toString())) : [];
  expect(records.at(-1)).toMatchObject({ serial: "agent-1", bytes: data.length, receipt, order, objectId });
});
