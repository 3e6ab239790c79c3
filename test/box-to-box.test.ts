// A box fetching from another box (issue 11, items 1 and 3), every part real: two `sharenode run` agents (the built
// bundle) on one mosquitto, each serving on a free loopback port. Box B fetches an object from an HTTP origin;
// `sharenode fleet order` authorises box A (its device key as the client key) to take it from B; `sharenode fleet
// task A fetch --order FILE` makes A fetch it from B. The object is 10 MiB, past B's 4 MiB receipt window: the task
// ends in task.done only if A signs receipts and B takes them. B's receipts.log then holds A's receipt for the whole
// object, which anyone checks with the order and the fleet key. An order for another client key is refused by A.
// A SIGKILLed mid-fetch resumes after its restart and still finishes: its receipt count did not go down (had it
// started again from 0, B would stop it at the window: every receipt below the largest B holds is worth nothing).
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import mqtt, { type MqttClient } from "mqtt";
import { afterAll, beforeAll, expect, it } from "vitest";
import { readRecordLog } from "../agent/durable/record-log";
import { blake3 } from "../agent/kernels/blake3";
import { verifyServed } from "../agent/protocol/receipt";
import type { ReceiptRecord } from "../agent/serve/receipt-book";
import { AgentProcess } from "./helpers/agent-process";
import { Broker } from "./helpers/mosquitto";
import { Origin } from "./helpers/origin";
import { seededBytes } from "./helpers/random";
import { waiter } from "./helpers/wait";

const BIN = join(fileURLToPath(new URL("..", import.meta.url)), "dist/sharenode.js");
let work = "";
let broker: Broker;
let origin: Origin;
let mq: MqttClient;
let fleetKey = "";
const boxes: Record<"a" | "b", AgentProcess | undefined> = { a: undefined, b: undefined };
/** Births and events, with the device id of their topic. */
const births: Array<{ device: string; state: string; serve?: string[] }> = [];
const events: Array<Record<string, unknown> & { device: string }> = [];
const data = new Uint8Array(seededBytes(10 * 1024 * 1024 + 333, 12));
const objectId = Buffer.from(blake3(data)).toString("hex");
const waitFor = waiter({
  timeoutMs: 60_000,
  intervalMs: 50,
  detail: () => `box A log:\n${boxes.a?.log.slice(-2500) ?? ""}\nbox B log:\n${boxes.b?.log.slice(-2500) ?? ""}`,
});

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

const stateDir = (name: "a" | "b") => join(work, name, "state");
const dataDir = (name: "a" | "b") => join(work, name, "data");

function env(name: "a" | "b", extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  mkdirSync(dataDir(name), { recursive: true });
  return {
    ...process.env,
    SHARENODE_BROKER: broker.url,
    SHARENODE_STATE: stateDir(name),
    SHARENODE_DATA: dataDir(name),
    SHARENODE_FLEET_KEY: fleetKey,
    SHARENODE_ALLOW_SYSTEM_DISK: "true",
    SHARENODE_BOARD: "sim",
    SHARENODE_SERVE_BIND: "127.0.0.1",
    SHARENODE_SERVE_PORT: "0",
    ...extra,
  };
}

/** `sharenode fleet task DEVICE ...` with this test's broker and fleet key. */
const task = (device: string, args: string[]) =>
  run(["fleet", "task", device, ...args, "--broker", broker.url, "--key-dir", join(work, "fleet")]);

const ended = (device: string, id = objectId) =>
  waitFor(`task of ${device} ends`, () =>
    events.find(
      (e) => e.device === device && e.objectId === id && (e.type === "task.done" || e.type === "task.failed"),
    ),
  );

/** B's receipts for `serial`, in the order written (each larger than the one before). */
async function receiptsAtB(serial: string): Promise<ReceiptRecord[]> {
  const read = await readRecordLog(join(stateDir("b"), "receipts.log"));
  if (!read.ok) return [];
  return read.records.map((r) => JSON.parse(r.toString("utf8")) as ReceiptRecord).filter((r) => r.serial === serial);
}

/** `sharenode fleet order`: B may serve `id` to the holder of `clientKey`. */
const order = (id: string, clientKey: string, serial: string) =>
  run([
    "fleet",
    "order",
    "--device",
    boxes.b!.deviceId,
    "--object",
    id,
    "--client-key",
    clientKey,
    "--max-bytes",
    String(64 * 1024 * 1024),
    "--rights",
    "label:box-to-box",
    "--ttl",
    "600",
    "--serial",
    serial,
    "--key-dir",
    join(work, "fleet"),
  ]);

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "sharenode-box-to-box-"));
  broker = await Broker.start();
  fleetKey = spawnSync(process.execPath, [BIN, "fleet", "keygen", "--key-dir", join(work, "fleet")], {
    encoding: "utf8",
  }).stdout.trim();
  mq = await mqtt.connectAsync(broker.url, { protocolVersion: 5 });
  mq.on("message", (topic, payload) => {
    const device = topic.split("/")[2]!;
    const body = JSON.parse(payload.toString()) as Record<string, unknown>;
    if (topic.endsWith("/state")) births.push({ ...(body as { state: string; serve?: string[] }), device });
    else if (topic.endsWith("/events")) events.push({ ...body, device });
  });
  await mq.subscribeAsync(["sharenode/v1/+/state", "sharenode/v1/+/events"], { qos: 1 });
  origin = await Origin.start();
  boxes.b = await AgentProcess.start(BIN, env("b"), waitFor);
  boxes.a = await AgentProcess.start(BIN, env("a"), waitFor);
}, 120_000);

afterAll(async () => {
  for (const box of [boxes.a, boxes.b]) if (box?.running) box.child.kill("SIGKILL");
  await mq?.endAsync();
  await origin?.stop();
  await broker?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

it("box A fetches a 10 MiB object from box B past B's receipt window, paying in receipts B keeps", async () => {
  const a = boxes.a!;
  const b = boxes.b!;
  const birth = await waitFor("B's birth with its serve URL", () =>
    births.find((x) => x.device === b.deviceId && x.state === "online" && x.serve),
  );
  const bUrl = birth.serve![0]!;

  // B gets the object from a plain origin.
  const source = origin.serve("object.bin", data);
  const toB = await task(b.deviceId, [
    "fetch",
    "--object",
    objectId,
    "--length",
    String(data.length),
    "--source",
    source,
  ]);
  expect(toB.status, toB.stderr).toBe(0);
  expect(await ended(b.deviceId)).toMatchObject({ type: "task.done" });

  // An order for another client (B's own key): A refuses the task, naming why, and fetches nothing.
  const wrong = await order(objectId, b.publicKey, "b2b-wrong-key");
  expect(wrong.status, wrong.stderr).toBe(0);
  writeFileSync(join(work, "wrong.orders"), `${bUrl} ${wrong.stdout.trim()}\n`);
  const refused = await task(a.deviceId, [
    "fetch",
    "--object",
    objectId,
    "--length",
    String(data.length),
    "--order",
    join(work, "wrong.orders"),
  ]);
  expect(refused.status).toBe(1);
  expect(refused.stderr).toContain("task.fetch refused by the device: bad-args: ");
  expect(refused.stderr).toContain(
    `order b2b-wrong-key is for client key ${b.publicKey.slice(0, 16)}..., not this box's: ` +
      `sign it with --client-key ${a.publicKey}`,
  );

  // The fleet's order names A's device key: A fetches from B, signing receipts as it goes.
  const good = await order(objectId, a.publicKey, "b2b-1");
  expect(good.status, good.stderr).toBe(0);
  const token = good.stdout.trim();
  writeFileSync(join(work, "b.orders"), `${bUrl} ${token}\n`);
  const toA = await task(a.deviceId, [
    "fetch",
    "--object",
    objectId,
    "--length",
    String(data.length),
    "--order",
    join(work, "b.orders"),
  ]);
  expect(toA.status, toA.stderr).toBe(0);
  const end = await ended(a.deviceId);
  // Without receipts: task.failed, B's source dropped with "HTTP 402" (its receipt-window refusal) at 4 MiB.
  expect(end.type, JSON.stringify(end)).toBe("task.done");
  expect(end).toMatchObject({ length: data.length, verifiedBy: "groups" });
  expect(events.find((e) => e.device === a.deviceId && e.type === "task.done")!.dropped).toBeUndefined();
  const stored = readFileSync(join(dataDir("a"), "objects", objectId.slice(0, 2), objectId));
  expect(Buffer.compare(stored, Buffer.from(data))).toBe(0);
  // A took every byte from B: the origin served the object once, to B.
  expect(origin.served.get("/object.bin")!.bytes).toBe(data.length);

  // B's receipt book: A's largest receipt under the order covers the object (and its outboard), signed by A's key.
  const log = await waitFor("A's receipt for the whole object in B's receipts.log", async () => {
    const mine = await receiptsAtB("b2b-1");
    return mine.some((r) => r.bytes >= data.length) ? mine : undefined;
  });
  const largest = log.reduce((x, y) => (y.bytes > x.bytes ? y : x));
  expect(largest).toMatchObject({ objectId, clientKey: a.publicKey, order: token });
  // Receipts came as the fetch went (several records, each larger), not only at the end.
  expect(log.length).toBeGreaterThan(2);
  for (let i = 1; i < log.length; i++) expect(log[i]!.bytes).toBeGreaterThan(log[i - 1]!.bytes);
  // No more than B sent: the object and its outboard, each once.
  const outboardBytes = readFileSync(join(dataDir("b"), "objects", objectId.slice(0, 2), `${objectId}.obao`)).length;
  expect(largest.bytes).toBe(data.length + outboardBytes);
  expect(verifyServed(largest.order, largest.receipt, fleetKey)).toMatchObject({
    ok: true,
    receipt: { serial: "b2b-1", bytes: largest.bytes },
  });
}, 120_000);

it("A, SIGKILLed in the middle of a fetch from B, resumes after its restart and finishes: its receipts go on", async () => {
  const b = boxes.b!;
  const other = new Uint8Array(seededBytes(10 * 1024 * 1024, 13));
  const id = Buffer.from(blake3(other)).toString("hex");
  const toB = await task(b.deviceId, [
    "fetch",
    "--object",
    id,
    "--length",
    String(other.length),
    "--source",
    origin.serve("other.bin", other),
  ]);
  expect(toB.status, toB.stderr).toBe(0);
  expect(await ended(b.deviceId, id)).toMatchObject({ type: "task.done" });
  const bUrl = births.find((x) => x.device === b.deviceId && x.serve)!.serve![0]!;

  // A fetches at 3 MB/s (its download limit), so the kill lands mid-fetch, after some checkpoints.
  boxes.a!.child.kill("SIGKILL");
  await new Promise((resolve) => boxes.a!.child.once("exit", resolve));
  boxes.a = await AgentProcess.start(BIN, env("a", { SHARENODE_DOWNLOAD_RATE: "3000000" }), waitFor);
  const a = boxes.a;
  const good = await order(id, a.publicKey, "b2b-kill");
  expect(good.status, good.stderr).toBe(0);
  writeFileSync(join(work, "kill.orders"), `${bUrl} ${good.stdout.trim()}\n`);
  const toA = await task(a.deviceId, [
    "fetch",
    "--object",
    id,
    "--length",
    String(other.length),
    "--order",
    join(work, "kill.orders"),
  ]);
  expect(toA.status, toA.stderr).toBe(0);
  await waitFor("3 MiB verified and durable at A", () =>
    events.find(
      (e) => e.device === a.deviceId && e.objectId === id && e.type === "task.progress" && Number(e.bytes) >= 3 << 20,
    ),
  );
  const before = await receiptsAtB("b2b-kill");
  expect(before.length).toBeGreaterThan(0);
  a.child.kill("SIGKILL");
  await new Promise((resolve) => a.child.once("exit", resolve));
  expect(events.some((e) => e.device === a.deviceId && e.objectId === id && e.type === "task.done")).toBe(false);

  boxes.a = await AgentProcess.start(BIN, env("a"), waitFor);
  const end = await ended(a.deviceId, id);
  expect(end.type, JSON.stringify(end)).toBe("task.done");
  const stored = readFileSync(join(dataDir("a"), "objects", id.slice(0, 2), id));
  expect(Buffer.compare(stored, Buffer.from(other))).toBe(0);
  const after = await waitFor("A's receipt for the whole object", async () => {
    const mine = await receiptsAtB("b2b-kill");
    return mine.some((r) => r.bytes >= other.length) ? mine : undefined;
  });
  // Receipts went on from where they were before the kill, past the object's length.
  expect(after.length).toBeGreaterThan(before.length);
  const largest = after.at(-1)!;
  expect(largest.bytes).toBeGreaterThan(before.at(-1)!.bytes);
  expect(largest.clientKey).toBe(a.publicKey);
  expect(verifyServed(largest.order, largest.receipt, fleetKey)).toMatchObject({ ok: true });
}, 120_000);
