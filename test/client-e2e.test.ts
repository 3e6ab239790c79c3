// The client end to end against a running agent (issue 11, "Stock clients"): the box's real server (agent/serve)
// in the built bundle, an order from `sharenode fleet order`, the download by `sharenode get`. The object is 10 MiB,
// past the box's 4 MiB receipt window: the download finishes only if the box accepts the client's receipts.
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import mqtt, { type MqttClient } from "mqtt";
import { afterAll, beforeAll, expect, it } from "vitest";
import { blake3 } from "../agent/kernels/blake3";
import { AgentProcess } from "./helpers/agent-process";
import { Broker } from "./helpers/mosquitto";
import { seededBytes } from "./helpers/random";
import { waitFor as waiter } from "./helpers/wait";

const BIN = join(fileURLToPath(new URL("..", import.meta.url)), "dist/sharenode.js");
let work = "";
let broker: Broker;
let agent: AgentProcess | undefined;
let mq: MqttClient;
let fleetKey = "";
const births: Array<{ state: string; serve?: string[] }> = [];
const data = new Uint8Array(seededBytes(10 * 1024 * 1024 + 777, 5));
const objectId = Buffer.from(blake3(data)).toString("hex");
const waitFor = (what: string, probe: () => unknown) => waiter(what, probe, { timeoutMs: 20_000, intervalMs: 50 });

function run(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "sharenode-client-e2e-"));
  mkdirSync(join(work, "data"));
  broker = await Broker.start();
  fleetKey = spawnSync(process.execPath, [BIN, "fleet", "keygen", "--key-dir", join(work, "fleet")], {
    encoding: "utf8",
  }).stdout.trim();
  mq = await mqtt.connectAsync(broker.url, { protocolVersion: 5 });
  mq.on("message", (_t, payload) => births.push(JSON.parse(payload.toString())));
  await mq.subscribeAsync("sharenode/v1/+/state", { qos: 1 });
  writeFileSync(join(work, "object.bin"), data);
  const add = spawnSync(
    process.execPath,
    [
      BIN,
      "store",
      "add",
      join(work, "object.bin"),
      "--data",
      join(work, "data"),
      "--state",
      join(work, "state"),
      "--allow-system-disk",
    ],
    { encoding: "utf8" },
  );
  expect(add.status, add.stderr).toBe(0);
  const env = {
    ...process.env,
    SHARENODE_BROKER: broker.url,
    SHARENODE_STATE: join(work, "state"),
    SHARENODE_DATA: join(work, "data"),
    SHARENODE_FLEET_KEY: fleetKey,
    SHARENODE_ALLOW_SYSTEM_DISK: "true",
    SHARENODE_BOARD: "sim",
    SHARENODE_SERVE_BIND: "127.0.0.1",
    SHARENODE_SERVE_PORT: "0",
  };
  agent = await AgentProcess.start(BIN, env, waiter);
}, 60_000);

afterAll(async () => {
  if (agent?.running) agent.child.kill("SIGKILL");
  await mq?.endAsync();
  await broker?.stop();
  rmSync(work, { recursive: true, force: true });
});

it("client keygen, fleet order, get: the object from the agent's server, verified, past the receipt window", async () => {
  const birth = (await waitFor("a birth with serve URLs", () =>
    births.find((b) => b.state === "online" && b.serve),
  )) as {
    serve: string[];
  };
  const box = birth.serve[0]!;
  const clientKey = (await run(["client", "keygen", "--key-dir", join(work, "client")])).stdout.trim();
  const order = await run([
    "fleet",
    "order",
    "--device",
    agent!.deviceId,
    "--object",
    objectId,
    "--client-key",
    clientKey,
    "--max-bytes",
    String(20 * 1024 * 1024),
    "--rights",
    "label:e2e",
    "--ttl",
    "600",
    "--key-dir",
    join(work, "fleet"),
  ]);
  expect(order.status, order.stderr).toBe(0);
  writeFileSync(join(work, "orders"), `${box} ${order.stdout.trim()}\n`);
  const out = join(work, "out.bin");
  const started = performance.now();
  const got = await run([
    "get",
    objectId,
    "--order",
    join(work, "orders"),
    "-o",
    out,
    "--key-dir",
    join(work, "client"),
  ]);
  const ms = performance.now() - started;
  expect(got.stderr).toBe("");
  expect(got.status).toBe(0);
  expect(Buffer.compare(readFileSync(out), Buffer.from(data))).toBe(0);
  console.log(`get of ${data.length} bytes from the agent: ${ms.toFixed(0)} ms`);
}, 60_000);
