// The work ledger (agent/ledger) on a real filesystem: the hash chain, statements and their Merkle paths, exact
// totals past 2^53, recovery from truncation at every byte of the tail and from SIGKILL of a real process, and
// tampering of records, statements and receipts caught by verifyLedger with its reason.
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RecordLog } from "../agent/durable/record-log";
import { type DeviceIdentity, loadOrCreateDeviceIdentity } from "../agent/identity/device-key";
import { type KeptReceipt, LedgerKeeper } from "../agent/ledger/keeper";
import { type KeptStatement, Ledger } from "../agent/ledger/ledger";
import { merklePath, merkleRoot, verifyMerklePath } from "../agent/ledger/merkle";
import { encodeRecord, recordHash, type LedgerRecord } from "../agent/ledger/record";
import { openStatement } from "../agent/ledger/statement";
import { verifyLedger } from "../agent/ledger/verify";
import { signOrder } from "../agent/protocol/order";
import { signReceipt } from "../agent/protocol/receipt";
import { bundleFixture } from "./helpers/child";

let root = "";
let device: DeviceIdentity;
let fleet: DeviceIdentity;
let client: DeviceIdentity;
let n = 0;
const fresh = () => join(root, `ledger-${n++}`);
const OBJECT = "cd".repeat(32);

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "sharenode-ledger-"));
  device = await loadOrCreateDeviceIdentity(join(root, "device"));
  fleet = await loadOrCreateDeviceIdentity(join(root, "fleet"));
  client = await loadOrCreateDeviceIdentity(join(root, "client"));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

function order(serial: string, rightsId = "label-a", maxBytes = 10_000_000): string {
  return signOrder(
    {
      serial,
      deviceId: device.deviceId,
      objectId: OBJECT,
      clientKey: client.publicKeyHex,
      maxBytes,
      expiresAt: Date.now() + 3600_000,
      rightsId,
    },
    fleet,
  );
}

/** A serve record of `bytes` more under `serial`, whose receipt covers `receipted` in all. */
function serve(serial: string, bytes: number, receipted: number, rightsId = "label-a") {
  return {
    kind: "serve" as const,
    serial,
    rightsId,
    objectId: OBJECT,
    bytes: String(bytes),
    receipt: signReceipt({ serial, bytes: receipted }, client),
    order: order(serial, rightsId),
  };
}

async function segmentFile(dir: string): Promise<string> {
  return join(
    dir,
    readdirSync(dir)
      .filter((f) => f.startsWith("records-"))
      .sort()
      .at(-1)!,
  );
}

describe("Merkle paths", () => {
  it("prove every leaf of trees of 1..40 leaves, and nothing else", () => {
    for (let count = 1; count <= 40; count++) {
      const leaves = Array.from({ length: count }, (_, i) =>
        recordHash(new TextEncoder().encode(`leaf ${count}.${i}`)),
      );
      const root = merkleRoot(leaves);
      for (let i = 0; i < count; i++) {
        const path = merklePath(leaves, i);
        expect(verifyMerklePath(leaves[i]!, i, count, path, root), `${count}/${i}`).toBe(true);
        if (count > 1) {
          expect(verifyMerklePath(leaves[(i + 1) % count]!, i, count, path, root)).toBe(false);
          expect(verifyMerklePath(leaves[i]!, (i + 1) % count, count, path, root)).toBe(false);
        }
        expect(verifyMerklePath(leaves[i]!, i, count, [...path, leaves[i]!], root)).toBe(false);
        if (path.length > 0) expect(verifyMerklePath(leaves[i]!, i, count, path.slice(1), root)).toBe(false);
      }
    }
  });
});

describe("the ledger", () => {
  it("chains records, closes windows into signed statements whose totals, root and chain verify, and keeps them across a reopen", async () => {
    const dir = fresh();
    let { ledger, problems } = await Ledger.open({ dir, deviceId: device.deviceId });
    expect(problems).toEqual([]);
    await Promise.all([
      ledger.append(serve("s-1", 1000, 1000)),
      ledger.append({ kind: "store", objectId: OBJECT, bytes: "4096", seconds: 3600 }),
      ledger.append({ kind: "proof", nonce: "n1", objectId: OBJECT, ok: true, ms: 12 }),
      ledger.append({ kind: "proof", nonce: "n2", objectId: OBJECT, ok: false, ms: 40 }),
      ledger.append({ kind: "fetch", objectId: OBJECT, bytes: "777" }),
      ledger.append(serve("s-1", 500, 1500)),
      ledger.append(serve("s-2", 300, 300, "label-b")),
    ]);
    const first = await ledger.closeWindow({ start: 0, seconds: 3600 }, device, true);
    expect(first.statement).toMatchObject({
      deviceId: device.deviceId,
      firstSeq: 0,
      lastSeq: 6,
      count: 7,
      totals: {
        serveBytes: "1800",
        storeByteSeconds: String(4096 * 3600),
        proofsPassed: "1",
        proofsFailed: "1",
        fetchBytes: "777",
      },
      rights: { "label-a": "1500", "label-b": "300" },
      prevStatement: "0".repeat(64),
      clockSynced: true,
    });
    expect(openStatement(first.envelope, device.publicKey)).toMatchObject({ ok: true });
    await ledger.append({ kind: "fetch", objectId: OBJECT, bytes: "1" });
    await ledger.close();

    ({ ledger, problems } = await Ledger.open({ dir, deviceId: device.deviceId }));
    expect(problems).toEqual([]);
    expect(ledger.statements()).toHaveLength(1);
    expect(ledger.openRecords().map((r) => r.record.seq)).toEqual([7]);
    await ledger.append({ kind: "fetch", objectId: OBJECT, bytes: "2" });
    const second = await ledger.closeWindow({ start: 3600_000, seconds: 3600 }, device, true);
    expect(second.statement).toMatchObject({ firstSeq: 7, lastSeq: 8, count: 2 });
    expect(second.statement.totals.fetchBytes).toBe("3");
    const empty = await ledger.closeWindow({ start: 7200_000, seconds: 3600 }, device, true);
    expect(empty.statement).toMatchObject({ firstSeq: 9, lastSeq: 8, count: 0, chainHead: second.statement.chainHead });

    // Every record of a statement with its path to the signed root.
    const { records, statement } = await ledger.recordsOf(0, 0, 100);
    expect(records).toHaveLength(7);
    for (const r of records) {
      expect(
        verifyMerklePath(r.hash, r.index, statement.statement.count, r.path, statement.statement.recordsRoot),
      ).toBe(true);
    }
    await ledger.close();
    const check = await verifyLedger(dir, device.publicKey, fleet.publicKeyHex);
    expect(check).toMatchObject({ ok: true, records: 9, statements: 3, receiptsChecked: 3 });
  });

  it("keeps totals past 2^53 exact (bigint sums, decimal strings)", async () => {
    const dir = fresh();
    const { ledger } = await Ledger.open({ dir, deviceId: device.deviceId });
    const big = 2 ** 53 - 1;
    await ledger.append({ kind: "fetch", objectId: OBJECT, bytes: String(big) });
    await ledger.append({ kind: "fetch", objectId: OBJECT, bytes: String(big) });
    await ledger.append({ kind: "fetch", objectId: OBJECT, bytes: "3" });
    await ledger.append({ kind: "store", objectId: OBJECT, bytes: String(big), seconds: 3600 });
    const kept = await ledger.closeWindow({ start: 0, seconds: 3600 }, device, true);
    expect(kept.statement.totals.fetchBytes).toBe((2n * BigInt(big) + 3n).toString());
    expect(kept.statement.totals.fetchBytes).toBe("18014398509481985");
    expect(kept.statement.totals.storeByteSeconds).toBe((BigInt(big) * 3600n).toString());
    await ledger.close();
    expect((await verifyLedger(dir, device.publicKey)).ok).toBe(true);
  });

  it("rotates segments after a statement and reads a statement's records from its own segment", async () => {
    const dir = fresh();
    const { ledger } = await Ledger.open({ dir, deviceId: device.deviceId, segmentBytes: 2000 });
    for (let w = 0; w < 4; w++) {
      for (let i = 0; i < 20; i++) await ledger.append({ kind: "fetch", objectId: OBJECT, bytes: String(i) });
      await ledger.closeWindow({ start: w * 1000, seconds: 1 }, device, false);
    }
    expect(readdirSync(dir).filter((f) => f.startsWith("records-")).length).toBeGreaterThan(2);
    for (let s = 0; s < 4; s++) {
      const { records } = await ledger.recordsOf(s, 1, 8);
      expect(records.map((r) => r.record.seq)).toEqual(Array.from({ length: 8 }, (_, i) => s * 20 + 8 + i));
    }
    await ledger.close();
    expect(await verifyLedger(dir, device.publicKey)).toMatchObject({ ok: true, records: 80, statements: 4 });
    const reopened = await Ledger.open({ dir, deviceId: device.deviceId, segmentBytes: 2000 });
    expect(reopened.problems).toEqual([]);
    expect(reopened.ledger.chain.nextSeq).toBe(80);
    await reopened.ledger.close();
  });
});

describe("segments under load", () => {
  it("records appended while a window closes and a new segment begins all land in the chain, none lost at reopen", async () => {
    const dir = fresh();
    const { ledger } = await Ledger.open({ dir, deviceId: device.deviceId, segmentBytes: 1500 });
    const acked: number[] = [];
    let stop = false;
    const writer = (async () => {
      while (!stop) {
        const r = await ledger.append({ kind: "fetch", objectId: OBJECT, bytes: "1" });
        acked.push(r.record.seq);
        if (acked.length % 3 === 0) await new Promise((resolve) => setImmediate(resolve));
      }
    })();
    for (let w = 0; w < 40; w++) {
      await ledger.closeWindow({ start: w * 1000, seconds: 1 }, device, true);
      await new Promise((resolve) => setImmediate(resolve));
    }
    stop = true;
    await writer;
    await ledger.closeWindow({ start: 40_000, seconds: 1 }, device, true);
    await ledger.close();
    expect(readdirSync(dir).filter((f) => f.startsWith("records-")).length).toBeGreaterThan(3);
    const reopened = await Ledger.open({ dir, deviceId: device.deviceId, segmentBytes: 1500 });
    expect(reopened.problems).toEqual([]);
    expect(reopened.ledger.chain.nextSeq).toBe(acked.length);
    const covered = reopened.ledger.statements().reduce((n, s) => n + s.statement.count, 0);
    expect(covered).toBe(acked.length);
    for (let i = 0; i < reopened.ledger.statements().length; i++) await reopened.ledger.recordsOf(i, 0, 1000);
    await reopened.ledger.close();
    expect((await verifyLedger(dir, device.publicKey)).problems).toEqual([]);
  });
});

describe("power cuts", () => {
  it("recovers from a cut at every byte of the last records: whole records kept, the chain verifies, appending goes on", async () => {
    const dir = fresh();
    const { ledger } = await Ledger.open({ dir, deviceId: device.deviceId });
    for (let i = 0; i < 5; i++) await ledger.append({ kind: "fetch", objectId: OBJECT, bytes: String(i) });
    await ledger.closeWindow({ start: 0, seconds: 60 }, device, true);
    const sizes: number[] = [];
    for (let i = 0; i < 3; i++) {
      await ledger.append({ kind: "proof", nonce: `n${i}`, objectId: OBJECT, ok: true, ms: i });
      sizes.push(statSync(await segmentFile(dir)).size);
    }
    await ledger.close();
    const segment = await segmentFile(dir);
    const full = readFileSync(segment);
    const statements = readFileSync(join(dir, "statements.log"));
    // From the end of the records the statement covers (acknowledged, never torn) to the end of the file.
    const start = sizes[0]! - (sizes[1]! - sizes[0]!);
    for (let cut = start; cut <= full.length; cut++) {
      const copy = fresh();
      mkdirSync(copy);
      writeFileSync(join(copy, "statements.log"), statements);
      writeFileSync(join(copy, segment.split("/").at(-1)!), full.subarray(0, cut));
      const wholeProofs = sizes.filter((s) => s <= cut).length;
      const opened = await Ledger.open({ dir: copy, deviceId: device.deviceId });
      expect(opened.problems, `cut at ${cut}`).toEqual([]);
      expect(opened.ledger.chain.nextSeq, `cut at ${cut}`).toBe(5 + wholeProofs);
      await opened.ledger.append({ kind: "fetch", objectId: OBJECT, bytes: "9" });
      await opened.ledger.close();
      const check = await verifyLedger(copy, device.publicKey);
      expect(check.problems, `cut at ${cut}`).toEqual([]);
      expect(check.records).toBe(6 + wholeProofs);
    }
  });

  it("keeps every acknowledged record and statement of a process SIGKILLed while appending (5 kills)", async () => {
    const child = join(root, "ledger-crash-child.mjs");
    await bundleFixture("ledger-crash-child.ts", child);
    const dir = fresh();
    const keyDir = join(root, "device");
    let acked = -1;
    let statementsAcked = 0;
    let acks = 0;
    for (let trial = 0; trial < 5; trial++) {
      const lines = await new Promise<string[]>((resolve) => {
        const proc = spawn(process.execPath, [child, dir, keyDir], { stdio: ["ignore", "pipe", "inherit"] });
        let out = "";
        proc.stdout.on("data", (d: Buffer) => {
          out += d.toString();
          if (out.split("\n").length > 120 + trial * 37) proc.kill("SIGKILL");
        });
        proc.on("exit", () => resolve(out.split("\n").slice(0, -1)));
      });
      const [, next, kept] = lines[0]!.split(" ").map(Number) as [number, number, number];
      expect(next, `trial ${trial}: reopened below an acknowledged record`).toBeGreaterThan(acked);
      expect(kept, `trial ${trial}: a statement acknowledged was lost`).toBeGreaterThanOrEqual(statementsAcked);
      for (const l of lines.slice(1)) {
        const [what, value] = l.split(" ");
        if (what === "ack") {
          acked = Math.max(acked, Number(value));
          acks++;
        } else if (what === "statement") statementsAcked++;
      }
      statementsAcked = Math.max(statementsAcked, kept);
    }
    expect(acks).toBeGreaterThan(400);
    expect(statementsAcked).toBeGreaterThan(2);
    const opened = await Ledger.open({ dir, deviceId: device.deviceId, segmentBytes: 64 * 1024 });
    expect(opened.problems).toEqual([]);
    expect(opened.ledger.chain.nextSeq).toBeGreaterThan(acked);
    await opened.ledger.close();
    const check = await verifyLedger(dir, device.publicKey);
    expect(check.problems).toEqual([]);
  });
});

describe("tampering", () => {
  async function ledgerWithWork(): Promise<string> {
    const dir = fresh();
    const { ledger } = await Ledger.open({ dir, deviceId: device.deviceId });
    await ledger.append(serve("t-1", 1000, 1000));
    await ledger.append({ kind: "fetch", objectId: OBJECT, bytes: "10" });
    await ledger.append(serve("t-1", 1000, 2000));
    await ledger.closeWindow({ start: 0, seconds: 60 }, device, true);
    await ledger.close();
    return dir;
  }

  /** Rewrites a record log's records through fn (frames and CRCs stay valid: only the chain can tell). */
  async function rewrite(path: string, fn: (records: Uint8Array[]) => Uint8Array[]): Promise<void> {
    const opened = await RecordLog.open(path);
    const copies = opened.records.map((r) => Uint8Array.from(r));
    await opened.log.rewrite(fn(copies));
    await opened.log.close();
  }

  const edit = (payload: Uint8Array, f: (r: LedgerRecord) => void): Uint8Array => {
    const record = JSON.parse(new TextDecoder().decode(payload)) as LedgerRecord;
    f(record);
    return encodeRecord(record);
  };

  it("a record changed, removed or re-chained is named", async () => {
    let dir = await ledgerWithWork();
    await rewrite(await segmentFile(dir), (rs) => [
      rs[0]!,
      edit(rs[1]!, (r) => {
        if (r.kind === "fetch") r.bytes = "99999";
      }),
      rs[2]!,
    ]);
    let check = await verifyLedger(dir, device.publicKey, fleet.publicKeyHex);
    expect(check.problems).toContain("record 2 does not follow the one before it (prev differs)");
    expect(check.problems).toContain("statement 0: recordsRoot does not match its records");

    dir = await ledgerWithWork();
    await rewrite(await segmentFile(dir), (rs) => [rs[0]!, rs[2]!]);
    check = await verifyLedger(dir, device.publicKey);
    expect(check.problems).toContain("record 2 where 1 was due");

    // Re-chained after the change (the forger recomputes prev): the signed statement still catches it.
    dir = await ledgerWithWork();
    await rewrite(await segmentFile(dir), (rs) => {
      const changed = edit(rs[1]!, (r) => {
        if (r.kind === "fetch") r.bytes = "99999";
      });
      const third = edit(rs[2]!, (r) => (r.prev = recordHash(changed)));
      return [rs[0]!, changed, third];
    });
    check = await verifyLedger(dir, device.publicKey);
    expect(check.problems).toEqual([
      "statement 0: recordsRoot does not match its records",
      "statement 0: chainHead does not match its records",
      "statement 0: totals do not match its records",
    ]);
    const reopened = await Ledger.open({ dir, deviceId: device.deviceId });
    await reopened.ledger.close();
  });

  it("a statement changed or not signed by the device is named", async () => {
    const dir = await ledgerWithWork();
    await rewrite(join(dir, "statements.log"), (rs) =>
      rs.map((raw) => {
        const entry = JSON.parse(new TextDecoder().decode(raw)) as { segment: number; envelope: string };
        const envelope = JSON.parse(entry.envelope) as { body: string; sig: string };
        envelope.body = envelope.body.replace('"serveBytes":"2000"', '"serveBytes":"3000"');
        return new TextEncoder().encode(JSON.stringify({ ...entry, envelope: JSON.stringify(envelope) }));
      }),
    );
    const check = await verifyLedger(dir, device.publicKey);
    expect(check.problems).toEqual(["statement 0: statement signature does not verify under the device key"]);
    const other = await verifyLedger(await ledgerWithWork(), fleet.publicKey);
    expect(other.problems).toEqual(["statement 0: statement signature does not verify under the device key"]);
  });

  it("a box that inflates its receipts, or shows a receipt of another key, is named", async () => {
    const dir = fresh();
    const { ledger } = await Ledger.open({ dir, deviceId: device.deviceId });
    await ledger.append(serve("i-1", 1000, 1000));
    await ledger.append(serve("i-1", 5000, 2000)); // claims 6000 in all, the receipt covers 2000
    await ledger.append({ ...serve("i-2", 10, 10), receipt: signReceipt({ serial: "i-2", bytes: 10 }, device) });
    await ledger.closeWindow({ start: 0, seconds: 60 }, device, true);
    await ledger.close();
    const check = await verifyLedger(dir, device.publicKey, fleet.publicKeyHex);
    expect(check.problems).toEqual([
      "record 1: order i-1 claims 6000 bytes in all, its receipt covers 2000",
      "record 2: receipt signature does not verify under the client key",
    ]);
  });
});

describe("records", () => {
  it("refuse unknown kinds, unknown fields, floats and non-decimal amounts, each with a one-line reason", () => {
    const base = { v: 1 as const, seq: 0, at: 1, prev: "0".repeat(64) };
    expect(() => encodeRecord({ ...base, kind: "fetch", objectId: OBJECT, bytes: "1.5" })).toThrow(
      "fetch 'bytes' must be a decimal integer string",
    );
    expect(() => encodeRecord({ ...base, kind: "fetch", objectId: OBJECT, bytes: "01" })).toThrow(/decimal/);
    expect(() => encodeRecord({ ...base, kind: "store", objectId: OBJECT, bytes: "1", seconds: 1.5 })).toThrow(
      "store 'seconds' must be a non-negative integer",
    );
    expect(() => encodeRecord({ ...base, kind: "nope" } as unknown as LedgerRecord)).toThrow(/kind "nope" is unknown/);
    expect(() =>
      encodeRecord({ ...base, kind: "fetch", objectId: OBJECT, bytes: "1", extra: 1 } as unknown as LedgerRecord),
    ).toThrow("fetch record has an unknown field extra");
  });
});

describe("the keeper (the agent's wiring)", () => {
  it("claims each order's receipted bytes once, held bytes per window for the time held, proofs and fetches as they come", async () => {
    const dir = fresh();
    const { ledger } = await Ledger.open({ dir, deviceId: device.deviceId });
    let now = 3_600_000 * 10 + 1_000; // 1 s into a window of an hour
    const receipts: KeptReceipt[] = [];
    const sent: KeptStatement[] = [];
    const keeper = new LedgerKeeper({
      ledger,
      windowSeconds: 3600,
      signer: device,
      now: () => now,
      clockSynced: () => true,
      receipts: () => receipts,
      objects: () => [
        { id: OBJECT, length: 1000, addedAt: 0 },
        { id: "ef".repeat(32), length: 50, addedAt: 3_600_000 * 10 + 1_800_000 }, // half of the window
      ],
      onStatement: (kept) => sent.push(kept),
      warn: (line) => {
        throw new Error(line);
      },
    });
    const start = keeper.windowStart(now);
    const served = (bytes: number) => ({
      serial: "k-1",
      bytes,
      receipt: signReceipt({ serial: "k-1", bytes }, client),
      order: order("k-1", "label-k"),
      objectId: OBJECT,
      rightsId: "label-k",
    });
    receipts.push(served(4000));
    keeper.proof({ objectId: OBJECT, nonce: "ab".repeat(32), ok: true, ms: 5 });
    keeper.fetched(OBJECT, 1000);
    await keeper.computed({
      taskId: "task-1",
      moduleId: "1a".repeat(32),
      inputId: "2b".repeat(32),
      outputId: "3c".repeat(32),
      cpuMs: "1234",
      wallMs: 1500,
    });
    expect(keeper.hasCompute("task-1")).toBe(true);
    expect(keeper.hasCompute("task-2")).toBe(false);
    now = start + 3_600_000 + 50;
    await keeper.closeWindow(start);
    receipts[0] = served(6500);
    now += 3_600_000;
    await keeper.closeWindow(start + 3_600_000);
    await keeper.closeWindow(start + 7_200_000); // nothing new served: no second claim of the same receipt
    await keeper.stop();
    expect(sent.map((s) => s.statement.totals)).toEqual([
      {
        serveBytes: "4000",
        storeByteSeconds: String(1000 * 3600 + 50 * 1800),
        proofsPassed: "1",
        proofsFailed: "0",
        fetchBytes: "1000",
        computeCpuMs: "1234",
      },
      {
        serveBytes: "2500",
        storeByteSeconds: String(1050 * 3600),
        proofsPassed: "0",
        proofsFailed: "0",
        fetchBytes: "0",
        computeCpuMs: "0",
      },
      {
        serveBytes: "0",
        storeByteSeconds: String(1050 * 3600),
        proofsPassed: "0",
        proofsFailed: "0",
        fetchBytes: "0",
        computeCpuMs: "0",
      },
    ]);
    expect(sent[0]!.statement.rights).toEqual({ "label-k": "4000" });
    await ledger.close();
    expect(await verifyLedger(dir, device.publicKey, fleet.publicKeyHex)).toMatchObject({
      ok: true,
      receiptsChecked: 2,
    });
    // Reopened, the ledger still knows what it claimed per order: the same receipt is not claimed again.
    const again = await Ledger.open({ dir, deviceId: device.deviceId });
    expect(again.ledger.servedBytes("k-1")).toBe(6500n);
    await again.ledger.close();
  });
});
