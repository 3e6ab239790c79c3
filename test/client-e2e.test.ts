// The work loop end to end (issue 11, "Stock clients"), every part real: `sharenode fleet task` makes a running
// agent (the built bundle, a real mosquitto) fetch an object from an HTTP origin, `sharenode fleet order`
// authorises a client, `sharenode get` downloads it from the agent's server, verified. The object is 10 MiB, past
// the box's 4 MiB receipt window: the download finishes only if the box accepts the client's receipts. The box
// runs with an upload limit, so the download also shows the owner's rate applied to serving, and telemetry counts
// the bytes served.
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import mqtt, { type MqttClient } from "mqtt";
import { afterAll, beforeAll, expect, it } from "vitest";
import { blake3 } from "../agent/kernels/blake3";
import { outboardLength } from "../agent/kernels/outboard";
import { verifyMerklePath } from "../agent/ledger/merkle";
import type { SettlementBody } from "../agent/ledger/settle";
import { openStatement } from "../agent/ledger/statement";
import { verifyServed } from "../agent/protocol/receipt";
import { AgentProcess } from "./helpers/agent-process";
import { Broker } from "./helpers/mosquitto";
import { Origin } from "./helpers/origin";
import { seededBytes } from "./helpers/random";
import { waitFor as waiter } from "./helpers/wait";

const BIN = join(fileURLToPath(new URL("..", import.meta.url)), "dist/sharenode.js");
let work = "";
let broker: Broker;
let agent: AgentProcess | undefined;
let origin: Origin;
let mq: MqttClient;
let fleetKey = "";
const births: Array<{ state: string; serve?: string[] }> = [];
const events: Array<Record<string, unknown>> = [];
const telemetry: Array<Record<string, number>> = [];
/** The box's upload limit (share.uploadBytesPerSecond) in this test: a 10 MiB download takes about 2 s. */
const UPLOAD_RATE = 5_000_000;
const data = new Uint8Array(seededBytes(10 * 1024 * 1024 + 777, 5));
const objectId = Buffer.from(blake3(data)).toString("hex");
const waitFor = <T>(what: string, probe: () => T | undefined | false) =>
  waiter(what, probe, {
    timeoutMs: 30_000,
    intervalMs: 50,
    detail: () => `agent log:\n${agent?.log.slice(-3000) ?? ""}`,
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

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "sharenode-client-e2e-"));
  mkdirSync(join(work, "data"));
  broker = await Broker.start();
  fleetKey = spawnSync(process.execPath, [BIN, "fleet", "keygen", "--key-dir", join(work, "fleet")], {
    encoding: "utf8",
  }).stdout.trim();
  mq = await mqtt.connectAsync(broker.url, { protocolVersion: 5 });
  mq.on("message", (topic, payload) => {
    const body = JSON.parse(payload.toString()) as Record<string, unknown>;
    if (topic.endsWith("/state")) births.push(body as { state: string; serve?: string[] });
    else if (topic.endsWith("/events")) events.push(body);
    else if (topic.endsWith("/telemetry")) telemetry.push(body as Record<string, number>);
  });
  await mq.subscribeAsync(["sharenode/v1/+/state", "sharenode/v1/+/events", "sharenode/v1/+/telemetry"], { qos: 1 });
  origin = await Origin.start();
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
    SHARENODE_UPLOAD_RATE: String(UPLOAD_RATE),
    SHARENODE_TELEMETRY_INTERVAL: "2",
    // Statements every 10 s (the shortest window the config takes).
    SHARENODE_LEDGER_WINDOW: "10",
  };
  agent = await AgentProcess.start(BIN, env, waiter);
}, 90_000);

afterAll(async () => {
  if (agent?.running) agent.child.kill("SIGKILL");
  await mq?.endAsync();
  await origin?.stop();
  await broker?.stop();
  rmSync(work, { recursive: true, force: true });
});

it("fleet task fetch, fleet order, get: fetched from an origin, served verified past the receipt window", async () => {
  const birth = (await waitFor("a birth with serve URLs", () =>
    births.find((b) => b.state === "online" && b.serve),
  )) as {
    serve: string[];
  };
  const box = birth.serve[0]!;
  // The fleet keeps every statement with its records from now on (fleet collect), for settlement and royalties.
  const collectedFile = join(work, "collected.jsonl");
  const collector = spawn(
    process.execPath,
    [
      BIN,
      "fleet",
      "collect",
      "--out",
      collectedFile,
      "--broker",
      broker.url,
      "--key-dir",
      join(work, "fleet"),
      "--duration",
      "80",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let collectorErr = "";
  collector.stderr.on("data", (d: Buffer) => (collectorErr += d.toString()));
  const collectorExit = new Promise<number | null>((resolve) => collector.on("close", resolve));
  const source = origin.serve("object.bin", data);
  const task = await run([
    "fleet",
    "task",
    agent!.deviceId,
    "fetch",
    "--object",
    objectId,
    "--length",
    String(data.length),
    "--source",
    source,
    "--broker",
    broker.url,
    "--key-dir",
    join(work, "fleet"),
  ]);
  expect(task.status, task.stderr).toBe(0);
  const done = await waitFor("task.done", () =>
    events.find((e) => (e.type === "task.done" || e.type === "task.failed") && e.objectId === objectId),
  );
  expect(done).toMatchObject({ type: "task.done", objectId });
  expect(origin.served.get("/object.bin")!.bytes).toBe(data.length);
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
  // The owner's rate holds the server back: past the limiter's burst (0.2 s of the rate), every byte waits its turn.
  // A lower bound only (a slow machine can take longer, never shorter): without the throttle this takes ~0.2 s.
  expect(ms).toBeGreaterThan(((data.length - 0.2 * UPLOAD_RATE) / UPLOAD_RATE) * 1000);
  // Telemetry counts what was served: the object and its outboard, under the client's order.
  const counted = await waitFor("telemetry with the bytes served", () =>
    telemetry.find((t) => t.served_bytes !== undefined && t.served_bytes >= data.length),
  );
  expect(counted.requests).toBeGreaterThan(0);
  expect(counted.orders_refused).toBe(0);
  expect(counted.tasks_failed).toBe(0);
  console.log(`get of ${data.length} bytes from the agent (upload limit ${UPLOAD_RATE} B/s): ${ms.toFixed(0)} ms`);

  // The work ledger: each window's statement comes as a ledger.statement event, signed by the device; together
  // they claim the fetched object, and the bytes served exactly as the client's receipts cover them (the outboard
  // and every byte of the object), all under the order's rightsId.
  const statements = () =>
    events
      .filter((e) => e.type === "ledger.statement")
      .map((e) => openStatement(new TextEncoder().encode(e.statement as string), Buffer.from(agent!.publicKey, "hex")));
  const sum = (key: "serveBytes" | "fetchBytes") =>
    statements().reduce((total, s) => total + (s.ok ? BigInt(s.statement.totals[key]) : 0n), 0n);
  const receipted = BigInt(data.length + outboardLength(data.length));
  await waitFor("statements claiming the bytes served", () => sum("serveBytes") >= receipted);
  expect(statements().every((s) => s.ok)).toBe(true);
  expect(sum("serveBytes")).toBe(receipted);
  expect(sum("fetchBytes")).toBe(BigInt(data.length));
  const rights = statements().reduce((t, s) => t + BigInt((s.ok && s.statement.rights["label:e2e"]) || "0"), 0n);
  expect(rights).toBe(receipted);
  // Chained: each statement names the one before it.
  const opened = statements().flatMap((s) => (s.ok ? [s.statement] : []));
  for (let i = 1; i < opened.length; i++) expect(opened[i]!.firstSeq).toBe(opened[i - 1]!.lastSeq + 1);

  // Audit by the fleet: the records of the window that claimed the serving, each proven into the signed root, and
  // the client's receipt behind the order's total.
  const servedIn = opened.find((s) => BigInt(s.totals.serveBytes) > 0n)!;
  const send = (cmd: string, args: Record<string, unknown>) =>
    run([
      "fleet",
      "send",
      agent!.deviceId,
      cmd,
      "--args",
      JSON.stringify(args),
      "--broker",
      broker.url,
      "--key-dir",
      join(work, "fleet"),
    ]);
  const audit = await send("ledger.records", { window: servedIn.window.start });
  expect(audit.status, audit.stderr).toBe(0);
  const page = JSON.parse(audit.stdout) as {
    statement: string;
    pages: number;
    records: Array<{ index: number; hash: string; path: string[]; record: { kind: string; serial?: string } }>;
  };
  expect(page.records.length).toBe(Math.min(servedIn.count, 100));
  for (const r of page.records)
    expect(verifyMerklePath(r.hash, r.index, servedIn.count, r.path, servedIn.recordsRoot)).toBe(true);
  const serial = page.records.find((r) => r.record.kind === "serve")!.record.serial!;
  const receipts = await send("ledger.receipts", { serial });
  expect(receipts.status, receipts.stderr).toBe(0);
  const claimed = JSON.parse(receipts.stdout) as {
    claimedBytes: string;
    records: Array<{ record: { receipt: string; order: string } }>;
  };
  expect(claimed.claimedBytes).toBe(receipted.toString());
  const last = claimed.records.at(-1)!.record;
  expect(verifyServed(last.order, last.receipt, fleetKey)).toMatchObject({
    ok: true,
    receipt: { bytes: Number(receipted) },
  });
  // Settlement by the fleet, sent back to the box: the served bytes are paid (2 base units a byte); the object is
  // assigned but the fleet has no passed challenge of it in the window, so its storage lines are not.
  writeFileSync(join(work, "assignments.json"), JSON.stringify({ [agent!.deviceId]: [objectId] }));
  const settled = await run([
    "fleet",
    "settle",
    agent!.deviceId,
    "--window",
    String(servedIn.window.start),
    "--prices",
    "2,3600,5",
    "--assignments",
    join(work, "assignments.json"),
    "--send",
    "--broker",
    broker.url,
    "--key-dir",
    join(work, "fleet"),
  ]);
  expect(settled.status, settled.stderr).toBe(0);
  const settlement = (JSON.parse(settled.stdout) as { settlement: SettlementBody }).settlement;
  const serveLines = settlement.lines.filter((l) => l.kind === "serve");
  expect(serveLines.reduce((t, l) => t + BigInt(l.acceptedUnits), 0n)).toBe(BigInt(servedIn.totals.serveBytes));
  expect(serveLines.every((l) => l.rejected === undefined)).toBe(true);
  const storeLines = settlement.lines.filter((l) => l.kind === "store");
  expect(storeLines.length).toBeGreaterThan(0);
  expect(storeLines.every((l) => l.rejected?.reason === "no-passed-challenge")).toBe(true);
  expect(BigInt(settlement.totals.amount)).toBe(2n * BigInt(servedIn.totals.serveBytes));
  // Telemetry counts the lines the fleet refused, over the settlements the box keeps.
  const refusedLines = settlement.lines.filter((l) => l.rejected).length;
  const counting = await waitFor("telemetry counting the refused lines", () =>
    telemetry.find((t) => t.ledger_rejected === refusedLines),
  );
  expect(counting.ledger_unsettled).toBeGreaterThanOrEqual(0);
  // The owner's view on the box (read from the running agent's files): the fleet's settlement beside the box's own
  // totals, every refused line with its reason; verify on the box and on an export.
  const state = ["--state", join(work, "state"), "--fleet-key", fleetKey];
  const view = await run(["ledger", ...state]);
  expect(view.status, view.stderr).toBe(0);
  expect(view.stdout).toContain(`paid ${settlement.totals.amount} base units for 1 of`);
  expect(view.stdout).toMatch(/store [0-9a-f]{16}\): \d+ refused, no-passed-challenge/);
  // The same view on the serial console (its config from the environment, as on a box).
  const onConsole = spawnSync(process.execPath, [BIN, "console"], {
    input: "ledger\n",
    encoding: "utf8",
    env: {
      ...process.env,
      SHARENODE_STATE: join(work, "state"),
      SHARENODE_DATA: join(work, "data"),
      SHARENODE_FLEET_KEY: fleetKey,
      SHARENODE_BROKER: broker.url,
    },
  });
  expect(onConsole.status, onConsole.stderr).toBe(0);
  expect(onConsole.stdout).toContain(`paid ${settlement.totals.amount} base units for 1 of`);
  const verified = await run(["ledger", "verify", ...state]);
  expect(verified.stdout).toMatch(/^ok: \d+ records, \d+ statements, 1 settlements, \d+ receipts checked\n$/);
  expect(verified.status).toBe(0);
  const exported = join(work, "ledger-export.json");
  expect((await run(["ledger", "export", exported, "--state", join(work, "state")])).status).toBe(0);
  const away = await run(["ledger", "verify", "--from", exported, "--fleet-key", fleetKey]);
  expect(away.stdout, away.stderr).toMatch(/^ok: /);
  // The export checked under another key (as if the box's key were not the one that signed): every statement fails.
  const other = JSON.parse(readFileSync(exported, "utf8")) as { publicKey: string };
  other.publicKey = fleetKey;
  writeFileSync(exported, JSON.stringify(other));
  const forged = await run(["ledger", "verify", "--from", exported, "--fleet-key", fleetKey]);
  expect(forged.status).toBe(1);
  expect(forged.stdout).toMatch(/problem: statement 0: statement signature does not verify under the device key/);
  // The collected statements: settled offline all at once (every device, every window), and the royalties report.
  const collected = () => {
    try {
      return readFileSync(collectedFile, "utf8")
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { records: Array<{ kind: string }> });
    } catch {
      return [];
    }
  };
  await waitFor("a collected statement with the serving", () =>
    collected().some((c) => c.records.some((r) => r.kind === "serve")),
  );
  collector.kill("SIGTERM");
  expect(await collectorExit, collectorErr).toBe(0);
  const offline = await run([
    "fleet",
    "settle",
    "--from",
    collectedFile,
    "--prices",
    "2,3600,5",
    "--key-dir",
    join(work, "fleet"),
  ]);
  expect(offline.status, offline.stderr).toBe(0);
  const offlineServe = offline.stdout
    .split("\n")
    .filter(Boolean)
    .flatMap((l) => (JSON.parse(l) as { settlement: SettlementBody }).settlement.lines)
    .filter((l) => l.kind === "serve");
  expect(offlineServe.every((l) => l.rejected === undefined)).toBe(true);
  expect(offlineServe.reduce((t, l) => t + BigInt(l.acceptedUnits), 0n)).toBe(receipted);
  // Every line twice, as a redelivered event would make it: counted once.
  const lines = readFileSync(collectedFile, "utf8");
  writeFileSync(collectedFile, lines + lines);
  const royalties = await run([
    "fleet",
    "royalties",
    "--collected",
    collectedFile,
    "--csv",
    "--key-dir",
    join(work, "fleet"),
  ]);
  expect(royalties.status, royalties.stderr).toBe(0);
  expect(royalties.stdout).toBe(`rightsId,bytes,devices,orders,verifiedOrders\nlabel:e2e,${receipted},1,1,1\n`);
  const missing = await send("ledger.records", { window: 1 });
  expect(missing.status).toBe(1);
  expect(missing.stderr).toMatch(/ledger.records refused by the device: not-found: no statement for the window/);
}, 90_000);
