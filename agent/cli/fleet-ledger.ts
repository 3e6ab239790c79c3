// The ledger's fleet side from a terminal: `fleet collect` keeps the boxes' statements with their records (asked of
// each box with ledger.records) as JSON lines, `fleet settle` settles a window (asked of one box, or from a collected
// file, every device at once) and can send the settlement back, `fleet royalties` reports per rightsId what was
// served, by which devices, under which orders, with the client receipts as evidence.
import { open, readFile } from "node:fs/promises";
import { join } from "node:path";
import { deviceIdOf, publicKeyFromHex } from "../identity/device-key.js";
import type { LedgerRecord } from "../ledger/record.js";
import {
  settle,
  signSettlement,
  type ComputeVerdict,
  type PriceTable,
  type SettlementInputs,
} from "../ledger/settle.js";
import { openStatement } from "../ledger/statement.js";
import { loadOrCreateFleetKey } from "../protocol/envelope.js";
import { verifyServed } from "../protocol/receipt.js";
import { fleetFilter, isDeviceId, parseTopic } from "../protocol/topics.js";
import { errorMessage } from "../util/errors.js";
import { isPlainObject } from "../util/guards.js";
import { CONNECTION, connect, defaultKeyDir, deviceSession, seconds, type DeviceSession } from "./fleet.js";
import { CliError, parseCommandArgs, systemErrorText, usageError, type CliIo } from "./io.js";

/** One line of a collected file: a statement as the device signed it, with the records it covers. */
interface Collected {
  deviceId: string;
  publicKey: string;
  statement: string;
  records: LedgerRecord[];
}

/**
 * `fleet settle DEVICE --window MS` (asks the device) or `fleet settle --from FILE [--window MS]` (every statement
 * collected, all devices at once, so one serial claimed on two devices is caught): settled, signed, printed as JSON
 * lines; --send sends each settlement to its device (ledger.settlement).
 */
export async function settleCommand(args: string[], io: CliIo): Promise<number> {
  const label = "fleet settle";
  const { values, positionals } = parseCommandArgs(
    label,
    args,
    {
      ...CONNECTION,
      window: { type: "string" },
      from: { type: "string" },
      prices: { type: "string" },
      assignments: { type: "string" },
      challenges: { type: "string" },
      compute: { type: "string" },
      send: { type: "boolean" },
      "device-key": { type: "string" },
      "key-dir": { type: "string" },
      timeout: { type: "string" },
    },
    true,
  );
  const window = values.window === undefined ? undefined : /^\d+$/.test(values.window) ? Number(values.window) : NaN;
  if (window !== undefined && !Number.isSafeInteger(window))
    throw usageError(`${label}: --window must be a window's start in epoch ms`);
  const prices = parsePrices(label, values.prices);
  const assignments = new Map<string, Set<string>>();
  if (values.assignments !== undefined) {
    const parsed = await readJsonFile(label, values.assignments);
    if (!isPlainObject(parsed)) throw usageError(`${label}: --assignments must hold a JSON object`);
    for (const [device, ids] of Object.entries(parsed)) {
      if (!Array.isArray(ids) || !ids.every((i) => typeof i === "string"))
        throw usageError(`${label}: --assignments: ${device} must map to an array of object ids`);
      assignments.set(device, new Set(ids as string[]));
    }
  }
  let challenges: SettlementInputs["challenges"] = [];
  if (values.challenges !== undefined) {
    const parsed = await readJsonFile(label, values.challenges);
    if (!Array.isArray(parsed)) throw usageError(`${label}: --challenges must hold a JSON array`);
    challenges = parsed as SettlementInputs["challenges"];
  }
  const compute = new Map<string, ComputeVerdict>();
  if (values.compute !== undefined) {
    const parsed = await readJsonFile(label, values.compute);
    if (!Array.isArray(parsed)) throw usageError(`${label}: --compute must hold a JSON array of verdicts`);
    for (const v of parsed as ComputeVerdict[]) {
      if (!isPlainObject(v) || typeof v.taskId !== "string" || !Array.isArray(v.devices))
        throw usageError(
          `${label}: --compute: each verdict needs taskId and devices ('fleet compute submit' writes them)`,
        );
      compute.set(v.taskId, v);
    }
  }
  const fleetKey = await loadOrCreateFleetKey(join(values["key-dir"] ?? defaultKeyDir(), "device-key.pem")).catch(
    (err: Error) => {
      throw new CliError(`${label}: ${err.message}`);
    },
  );

  const devices = new Map<string, Uint8Array>();
  const statements: SettlementInputs["statements"][number][] = [];
  const sessions = new Map<string, DeviceSession>();
  try {
    if (values.from !== undefined) {
      if (positionals.length > 0) throw usageError(`${label}: --from settles every device in the file: no DEVICE`);
      for (const c of await readCollected(label, values.from)) {
        if (window !== undefined && statementWindow(c.statement) !== window) continue;
        devices.set(c.deviceId, publicKeyFromHex(c.publicKey));
        statements.push({ envelope: c.statement, records: c.records });
      }
      if (statements.length === 0)
        throw new CliError(`${label}: no statement in ${values.from}${window === undefined ? "" : " for that window"}`);
    } else {
      if (positionals.length !== 1) throw usageError(`${label}: expected DEVICE (or --from FILE)`);
      const deviceId = positionals[0]!;
      if (!isDeviceId(deviceId))
        throw usageError(`${label}: DEVICE must be a device id (32 lowercase hex digits), got '${deviceId}'`);
      if (window === undefined) throw usageError(`${label}: --window MS is required with DEVICE`);
      const session = await deviceSession(label, deviceId, values, io);
      sessions.set(deviceId, session);
      devices.set(deviceId, session.deviceKey);
      const got = await statementWithRecords(label, session, window);
      statements.push({ envelope: got.statement, records: got.records });
    }
    const result = settle({
      fleetPublicKey: fleetKey.publicKeyHex,
      devices,
      statements,
      assignments,
      challenges,
      prices,
      compute,
    });
    for (const f of result.findings) io.stderr.write(`sharenode: ${label}: ${f}\n`);
    let failed = result.findings.length > 0 ? 1 : 0;
    for (const body of result.settlements) {
      const text = new TextDecoder().decode(signSettlement(body, fleetKey));
      io.stdout.write(
        JSON.stringify({
          settlement: JSON.parse((JSON.parse(text) as { body: string }).body) as unknown,
          envelope: text,
        }) + "\n",
      );
      if (!values.send) continue;
      let session = sessions.get(body.deviceId);
      if (!session) {
        session = await deviceSession(label, body.deviceId, { ...values, "device-key": undefined }, io);
        sessions.set(body.deviceId, session);
      }
      const reply = await session.ask("ledger.settlement", { settlement: text });
      if (!reply.ok) {
        io.stderr.write(
          `sharenode: ${label}: ${body.deviceId}: ledger.settlement refused: ${reply.error.code}: ${reply.error.message}\n`,
        );
        failed = 1;
      }
    }
    return failed;
  } finally {
    for (const s of sessions.values()) await s.close();
  }
}

/**
 * `fleet collect --out FILE [--count N] [--duration S]`: every ledger.statement event on the broker, its signature
 * checked under the device's key (from its retained state record), its records asked of the device
 * (ledger.records), appended to FILE as one JSON line (fsynced).
 */
export async function collectCommand(args: string[], io: CliIo): Promise<number> {
  const label = "fleet collect";
  const { values } = parseCommandArgs(
    label,
    args,
    {
      ...CONNECTION,
      out: { type: "string" },
      count: { type: "string" },
      duration: { type: "string" },
      "key-dir": { type: "string" },
      timeout: { type: "string" },
    },
    false,
  );
  if (values.out === undefined) throw usageError(`${label}: --out FILE is required`);
  const count = values.count === undefined ? undefined : seconds("count", values.count, 0);
  const duration = values.duration === undefined ? undefined : seconds("duration", values.duration, 0);
  const conn = await connect(values, io);
  const file = await open(values.out, "a", 0o600).catch((err) => {
    throw new CliError(`${label}: cannot open ${values.out}: ${systemErrorText(err) ?? errorMessage(err)}`);
  });
  const keys = new Map<string, string>();
  const queue: Array<{ deviceId: string; statement: string }> = [];
  let wake: (() => void) | undefined;
  conn.onMessage((m) => {
    const topic = parseTopic(m.topic);
    if (!topic || topic.kind === "reply") return;
    try {
      const body = JSON.parse(m.payload.toString()) as Record<string, unknown>;
      if (
        topic.kind === "state" &&
        typeof body.pub === "string" &&
        deviceIdOf(publicKeyFromHex(body.pub)) === topic.deviceId
      )
        keys.set(topic.deviceId, body.pub);
      else if (topic.kind === "events" && body.type === "ledger.statement" && typeof body.statement === "string")
        queue.push({ deviceId: topic.deviceId, statement: body.statement });
    } catch {
      // not JSON, or a key that is not the device's: not ours to collect
    }
    wake?.();
  });
  await conn.subscribe([fleetFilter("state"), fleetFilter("events")]);
  let stop = false;
  const stopNow = () => {
    stop = true;
    wake?.();
  };
  process.once("SIGINT", stopNow);
  process.once("SIGTERM", stopNow);
  const timer = duration === undefined ? undefined : setTimeout(stopNow, duration * 1000);
  let collected = 0;
  const collectedNow = new Set<string>();
  try {
    while (!stop && (count === undefined || collected < count)) {
      const next = queue.shift();
      if (!next) {
        await new Promise<void>((resolve) => {
          wake = resolve;
          setTimeout(resolve, 250);
        });
        continue;
      }
      if (collectedNow.has(next.statement)) continue; // delivered again (QoS 1)
      const pub = keys.get(next.deviceId);
      if (!pub) {
        io.stderr.write(`sharenode: ${label}: no key for ${next.deviceId} (no retained state record): skipped\n`);
        continue;
      }
      const opened = openStatement(new TextEncoder().encode(next.statement), publicKeyFromHex(pub));
      if (!opened.ok) {
        io.stderr.write(`sharenode: ${label}: ${next.deviceId}: ${opened.reason}: skipped\n`);
        continue;
      }
      const session = await deviceSession(label, next.deviceId, { ...values, "device-key": pub }, io);
      try {
        const got = await statementWithRecords(label, session, opened.statement.window.start);
        const line: Collected = {
          deviceId: next.deviceId,
          publicKey: pub,
          statement: next.statement,
          records: got.records,
        };
        await file.appendFile(JSON.stringify(line) + "\n");
        await file.sync();
      } finally {
        await session.close();
      }
      collected++;
      collectedNow.add(next.statement);
      io.stdout.write(
        `collected ${next.deviceId} window ${new Date(opened.statement.window.start).toISOString()}: ${opened.statement.count} records\n`,
      );
    }
  } finally {
    if (timer) clearTimeout(timer);
    process.off("SIGINT", stopNow);
    process.off("SIGTERM", stopNow);
    await file.close();
    await conn.close();
  }
  return 0;
}

/**
 * `fleet royalties --collected FILE [--from MS] [--to MS] [--csv]`: per rightsId, the bytes served in windows
 * starting in [from, to), by which devices, under which orders, each order's best receipt as evidence (checked
 * under the fleet key: `verified`).
 */
export async function royaltiesCommand(args: string[], io: CliIo): Promise<number> {
  const label = "fleet royalties";
  const { values } = parseCommandArgs(
    label,
    args,
    {
      collected: { type: "string" },
      from: { type: "string" },
      to: { type: "string" },
      csv: { type: "boolean" },
      "key-dir": { type: "string" },
    },
    false,
  );
  if (values.collected === undefined) throw usageError(`${label}: --collected FILE is required (from fleet collect)`);
  const bound = (name: string, v: string | undefined, fallback: number) => {
    if (v === undefined) return fallback;
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v))) throw usageError(`${label}: --${name} must be epoch ms`);
    return Number(v);
  };
  const from = bound("from", values.from, 0);
  const to = bound("to", values.to, Number.MAX_SAFE_INTEGER);
  const fleetKey = await loadOrCreateFleetKey(join(values["key-dir"] ?? defaultKeyDir(), "device-key.pem")).catch(
    (err: Error) => {
      throw new CliError(`${label}: ${err.message}`);
    },
  );
  interface OrderLine {
    serial: string;
    deviceId: string;
    bytes: bigint;
    receipt: string;
    order: string;
  }
  const rights = new Map<string, { bytes: bigint; devices: Set<string>; orders: Map<string, OrderLine> }>();
  const seen = new Set<string>();
  for (const c of await readCollected(label, values.collected)) {
    // A statement collected twice (an event delivered again) counts once.
    if (seen.has(c.statement)) continue;
    seen.add(c.statement);
    const start = statementWindow(c.statement);
    if (start === undefined || start < from || start >= to) continue;
    for (const r of c.records) {
      if (r.kind !== "serve") continue;
      const entry = rights.get(r.rightsId) ?? { bytes: 0n, devices: new Set(), orders: new Map() };
      rights.set(r.rightsId, entry);
      entry.bytes += BigInt(r.bytes);
      entry.devices.add(c.deviceId);
      const o = entry.orders.get(r.serial);
      entry.orders.set(r.serial, {
        serial: r.serial,
        deviceId: c.deviceId,
        bytes: (o?.bytes ?? 0n) + BigInt(r.bytes),
        // The latest record carries the largest receipt (a receipt is cumulative).
        receipt: r.receipt,
        order: r.order,
      });
    }
  }
  const report = [...rights.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([rightsId, e]) => ({
      rightsId,
      bytes: e.bytes.toString(),
      devices: [...e.devices].sort(),
      orders: [...e.orders.values()].map((o) => ({
        serial: o.serial,
        deviceId: o.deviceId,
        bytes: o.bytes.toString(),
        verified: verifyServed(o.order, o.receipt, fleetKey.publicKeyHex).ok,
        receipt: o.receipt,
        order: o.order,
      })),
    }));
  if (values.csv) {
    io.stdout.write("rightsId,bytes,devices,orders,verifiedOrders\n");
    for (const r of report) {
      const quoted = /[",\n]/.test(r.rightsId) ? `"${r.rightsId.replace(/"/g, '""')}"` : r.rightsId;
      io.stdout.write(
        `${quoted},${r.bytes},${r.devices.length},${r.orders.length},${r.orders.filter((o) => o.verified).length}\n`,
      );
    }
  } else io.stdout.write(JSON.stringify({ from, to, rights: report }, null, 2) + "\n");
  return 0;
}

async function statementWithRecords(
  label: string,
  session: DeviceSession,
  window: number,
): Promise<{ statement: string; records: LedgerRecord[] }> {
  let statement = "";
  const records: LedgerRecord[] = [];
  for (let page = 0, pages = 1; page < pages; page++) {
    const reply = await session.ask("ledger.records", { window, page });
    if (!reply.ok) throw new CliError(`${label}: ledger.records refused: ${reply.error.code}: ${reply.error.message}`);
    const result = reply.result as { statement: string; pages: number; records: Array<{ record: LedgerRecord }> };
    statement = result.statement;
    pages = result.pages;
    records.push(...result.records.map((r) => r.record));
  }
  return { statement, records };
}

async function readCollected(label: string, path: string): Promise<Collected[]> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new CliError(`${label}: cannot read ${path}: ${systemErrorText(err) ?? errorMessage(err)}`);
  }
  const out: Collected[] = [];
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    try {
      const c = JSON.parse(line) as Collected;
      if (
        typeof c.deviceId === "string" &&
        typeof c.publicKey === "string" &&
        typeof c.statement === "string" &&
        Array.isArray(c.records)
      )
        out.push(c);
    } catch {
      // A torn last line (the collector was cut mid-write): skipped.
    }
  }
  return out;
}

function statementWindow(statement: string): number | undefined {
  try {
    const body = JSON.parse((JSON.parse(statement) as { body: string }).body) as { window?: { start?: unknown } };
    return typeof body.window?.start === "number" ? body.window.start : undefined;
  } catch {
    return undefined;
  }
}

function parsePrices(label: string, text = "1,1,1,0"): PriceTable {
  if (!/^\d+,\d+,\d+(,\d+)?$/.test(text))
    throw usageError(
      `${label}: --prices must be three or four whole numbers: served,hour,proof[,cpu-ms] (base units), got '${text}'`,
    );
  const [perByteServed, perByteHourStored, perProof, perCpuMs = 0n] = text.split(",").map((p) => BigInt(p)) as [
    bigint,
    bigint,
    bigint,
    bigint?,
  ];
  return { perByteServed, perByteHourStored, perProof, perCpuMs };
}

async function readJsonFile(label: string, path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new CliError(`${label}: cannot read ${path}: ${systemErrorText(err) ?? errorMessage(err)}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw usageError(`${label}: ${path} is not JSON`);
  }
}
