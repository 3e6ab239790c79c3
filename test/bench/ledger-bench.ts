// The work ledger and settlement (issue 12). Three figures:
// - ledger append: records/s into a real ledger on disk (this machine's /tmp), group commit (many appends in
//   flight share one write and one fsync), target >= 50,000/s; also one at a time, each waiting for its fsync.
// - settlement: statements verified and settled per second on one core (device-hours/s), with 1, 10 and 100 orders
//   per device-hour; each order claimed by one serve record carrying its order and client receipt, so a
//   device-hour costs one statement signature and, per order, a receipt signature. The fleet knows the orders it
//   issued (issuedOrders) and keeps its devices' keys imported (setPublicKeyCacheSize); the rate with every
//   order's signature verified as well is printed beside it. Target >= 5,000 device-hours/s at 1 order.
// - disk: the ledger's bytes per day at 1,000 served requests an hour (spread over 100 orders an hour), 1,000
//   objects held and 100 proofs an hour, written by a real ledger for 24 windows.
// Run by `npm run bench` (test/bench/run.mjs through ts-bench.mjs), or alone:
//   node test/bench/ts-bench.mjs ledger-bench [--quick] [--json]
import { createPublicKey, generateKeyPairSync, sign, verify } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import {
  loadOrCreateDeviceIdentity,
  setPublicKeyCacheSize,
  type DeviceIdentity,
} from "../../agent/identity/device-key";
import { Ledger } from "../../agent/ledger/ledger";
import { encodeRecord, GENESIS_PREV, recordHash, type LedgerRecord } from "../../agent/ledger/record";
import { settle, type SettlementInputs } from "../../agent/ledger/settle";
import { buildStatement, signStatement } from "../../agent/ledger/statement";
import { signOrder, type Order } from "../../agent/protocol/order";
import { signReceipt } from "../../agent/protocol/receipt";
import { median } from "./box-server";

const OBJECT = "cd".repeat(32);
const HOUR = 3_600_000;

async function appendRate(dir: string, total: number, inFlight: number): Promise<number> {
  const { ledger } = await Ledger.open({ dir, deviceId: "0".repeat(32) });
  const t0 = performance.now();
  let issued = 0;
  const worker = async () => {
    while (issued < total) {
      issued++;
      await ledger.append({ kind: "fetch", objectId: OBJECT, bytes: "65536" });
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  const seconds = (performance.now() - t0) / 1000;
  await ledger.close();
  return total / seconds;
}

/** A signer over a fresh Ed25519 key, without files (thousands of devices). */
function memoryKey(): { publicKey: Uint8Array; sign(m: Uint8Array): Uint8Array; deviceId: string } {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const raw = new Uint8Array(publicKey.export({ format: "der", type: "spki" }).subarray(12));
  const deviceId = Buffer.from(raw.subarray(0, 16)).toString("hex");
  return { publicKey: raw, deviceId, sign: (m) => new Uint8Array(sign(null, m, privateKey)) };
}

function settlementInputs(
  devices: number,
  ordersPerHour: number,
  fleet: DeviceIdentity,
  client: DeviceIdentity,
): SettlementInputs {
  const registry = new Map<string, Uint8Array>();
  const issuedOrders = new Map<string, Order>();
  const statements: SettlementInputs["statements"][number][] = [];
  for (let d = 0; d < devices; d++) {
    const key = memoryKey();
    registry.set(key.deviceId, key.publicKey);
    const records: LedgerRecord[] = [];
    let prev = GENESIS_PREV;
    const hashed: { record: LedgerRecord; hash: string }[] = [];
    for (let o = 0; o < ordersPerHour; o++) {
      const serial = `d${d}-o${o}`;
      const input = {
        serial,
        deviceId: key.deviceId,
        objectId: OBJECT,
        clientKey: client.publicKeyHex,
        maxBytes: 1 << 20,
        expiresAt: 10 * HOUR,
        rightsId: "label",
      };
      const orderToken = signOrder(input, fleet);
      issuedOrders.set(orderToken, { v: 1, ...input });
      const record = {
        v: 1 as const,
        seq: o,
        at: HOUR,
        prev,
        kind: "serve" as const,
        serial,
        rightsId: "label",
        objectId: OBJECT,
        bytes: "65536",
        receipt: signReceipt({ serial, bytes: 65536 }, client),
        order: orderToken,
      };
      prev = recordHash(encodeRecord(record));
      records.push(record);
      hashed.push({ record, hash: prev });
    }
    const body = buildStatement({
      deviceId: key.deviceId,
      window: { start: 0, seconds: 3600 },
      records: hashed,
      firstSeq: 0,
      headBefore: GENESIS_PREV,
      prevStatement: GENESIS_PREV,
      clockSynced: true,
    });
    statements.push({ envelope: signStatement(body, key), records });
  }
  return {
    fleetPublicKey: fleet.publicKeyHex,
    devices: registry,
    statements,
    assignments: new Map(),
    challenges: [],
    prices: { perByteServed: 1n, perByteHourStored: 1n, perProof: 1n },
    issuedOrders,
  };
}

async function diskPerDay(dir: string): Promise<number> {
  const key = await loadOrCreateDeviceIdentity(join(dir, "key"));
  const fleet = await loadOrCreateDeviceIdentity(join(dir, "fleet"));
  const client = await loadOrCreateDeviceIdentity(join(dir, "client"));
  const ledgerDir = join(dir, "ledger");
  const { ledger } = await Ledger.open({ dir: ledgerDir, deviceId: key.deviceId });
  for (let hour = 0; hour < 24; hour++) {
    // 1,000 requests an hour over 100 orders: one serve record per order per window (its best receipt).
    for (let o = 0; o < 100; o++) {
      const serial = `h${hour}-o${o}`;
      const order = signOrder(
        {
          serial,
          deviceId: key.deviceId,
          objectId: OBJECT,
          clientKey: client.publicKeyHex,
          maxBytes: 1 << 30,
          expiresAt: Date.now() + 86_400_000,
          rightsId: "label:example",
        },
        fleet,
      );
      const bytes = 10 * 65536;
      await ledger.append({
        kind: "serve",
        serial,
        rightsId: "label:example",
        objectId: OBJECT,
        bytes: String(bytes),
        receipt: signReceipt({ serial, bytes }, client),
        order,
      });
    }
    for (let i = 0; i < 1000; i++) {
      void ledger.append({
        kind: "store",
        objectId: i.toString(16).padStart(64, "0"),
        bytes: "4194304",
        seconds: 3600,
      });
    }
    for (let i = 0; i < 100; i++) {
      void ledger.append({
        kind: "proof",
        nonce: `${hour}x${i}`.padEnd(64, "0").slice(0, 64),
        objectId: OBJECT,
        ok: true,
        ms: 12,
      });
    }
    await ledger.closeWindow({ start: hour * HOUR, seconds: 3600 }, key, true);
  }
  await ledger.close();
  return readdirSync(ledgerDir).reduce((sum, f) => sum + statSync(join(ledgerDir, f)).size, 0);
}

export async function main(args: string[]): Promise<void> {
  const quick = args.includes("--quick");
  const json = args.includes("--json");
  const work = mkdtempSync(join(process.env.TMPDIR ?? "/tmp", "sharenode-bench-ledger-"));
  try {
    const rounds = quick ? 3 : 7;
    const grouped: number[] = [];
    const single: number[] = [];
    for (let r = 0; r < rounds; r++) {
      grouped.push(await appendRate(join(work, `g${r}`), quick ? 20_000 : 100_000, 256));
      single.push(await appendRate(join(work, `s${r}`), quick ? 300 : 1000, 1));
    }
    const fleet = await loadOrCreateDeviceIdentity(join(work, "fleet"));
    const client = await loadOrCreateDeviceIdentity(join(work, "client"));
    // The bound: node:crypto's Ed25519 verifications per second on this core now (a device-hour at 1 order needs 2).
    const probe = memoryKey();
    const message = new Uint8Array(300).fill(7);
    const signature = probe.sign(message);
    const probeKey = createPublicKey({
      key: Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), probe.publicKey]),
      format: "der",
      type: "spki",
    });
    const verifyRates: number[] = [];
    for (let r = 0; r < 5; r++) {
      const t0 = performance.now();
      for (let i = 0; i < 3000; i++) verify(null, message, probeKey, signature);
      verifyRates.push(3000 / ((performance.now() - t0) / 1000));
    }
    const verifyRate = median(verifyRates);
    // A fleet service keeps its devices' keys imported (setPublicKeyCacheSize) and knows the orders it issued.
    setPublicKeyCacheSize(20_000);
    const settleRates: Record<string, number> = {};
    const unknownOrderRates: Record<string, number> = {};
    for (const orders of [1, 10, 100]) {
      const devices = Math.max(20, Math.floor((quick ? 2000 : 6000) / orders));
      const inputs = settlementInputs(devices, orders, fleet, client);
      const rate = (i: SettlementInputs) => {
        const rates: number[] = [];
        // The first round imports every device key: untimed.
        for (let r = -1; r < (quick ? 2 : 3); r++) {
          const t0 = performance.now();
          const result = settle(i);
          const seconds = (performance.now() - t0) / 1000;
          if (result.findings.length > 0 || result.settlements.some((s) => s.lines.some((l) => l.rejected)))
            throw new Error(`ledger-bench: settlement rejected honest input: ${result.findings[0] ?? ""}`);
          if (r >= 0) rates.push(devices / seconds);
        }
        return median(rates);
      };
      settleRates[String(orders)] = rate(inputs);
      unknownOrderRates[String(orders)] = rate({ ...inputs, issuedOrders: undefined });
    }
    const perDay = await diskPerDay(join(work, "disk"));
    const statementsPerSecond = (1_000_000 * 24) / 86_400;
    const rows = {
      appendGrouped: median(grouped),
      appendOneAtATime: median(single),
      settle: settleRates,
      settleVerifyingOrders: unknownOrderRates,
      coresForAMillionBoxes: Object.fromEntries(
        Object.entries(settleRates).map(([o, rate]) => [o, statementsPerSecond / rate]),
      ),
      diskBytesPerDay: perDay,
      ed25519VerifyPerSecond: verifyRate,
    };
    const targets = [
      {
        what: "ledger append, group commit",
        value: rows.appendGrouped,
        goal: ">= 50,000/s",
        met: rows.appendGrouped >= 50_000,
      },
      {
        what: "settlement at 1 order per device-hour",
        value: settleRates["1"]!,
        goal: ">= 5,000/s",
        met: settleRates["1"]! >= 5000,
      },
    ];
    if (json) {
      console.log(JSON.stringify({ rows, targets }, null, 2));
      return;
    }
    console.log(`\nthe work ledger (a real ledger in ${work}) and settlement (one core), medians of ${rounds} rounds`);
    console.log(
      `  ledger append, 256 in flight (group commit)      ${rows.appendGrouped.toFixed(0).padStart(10)} records/s`,
    );
    console.log(
      `  ledger append, one at a time (an fsync each)      ${rows.appendOneAtATime.toFixed(0).padStart(10)} records/s`,
    );
    for (const [o, rate] of Object.entries(settleRates)) {
      console.log(
        `  settlement, ${o.padStart(3)} order(s) per device-hour            ${rate.toFixed(0).padStart(10)} device-hours/s` +
          `  (a million boxes, 278 statements/s: ${(statementsPerSecond / rate).toFixed(2)} cores; ` +
          `${unknownOrderRates[o]!.toFixed(0)}/s verifying every order's signature too)`,
      );
    }
    console.log(
      `  (Ed25519 verifications on this core now: ${verifyRate.toFixed(0)}/s, so at most ${(verifyRate / 2).toFixed(0)} device-hours/s at 1 order)`,
    );
    console.log(
      `  ledger disk use a day (1,000 requests/h over 100 orders, 1,000 objects, 100 proofs/h)  ${(perDay / 1e6).toFixed(2)} MB`,
    );
    console.log("\ntargets (issue 12)");
    for (const t of targets)
      console.log(
        `  ${t.met ? "met   " : "MISSED"} ${t.what.padEnd(40)} ${t.value.toFixed(0).padStart(10)}/s (target ${t.goal})`,
      );
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
