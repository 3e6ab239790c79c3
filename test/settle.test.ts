// Settlement (agent/ledger/settle.ts) over statements made by real ledgers on a real filesystem: honest work priced
// line by line; a device that inflates its receipts, one that claims another device's order or a serial already
// claimed, one that claims storage it was not assigned or never proved; gaps and forks in a statement chain, a
// forged statement, records that do not match; exact amounts past 2^53; the signed settlement opened again.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DeviceIdentity, loadOrCreateDeviceIdentity } from "../agent/identity/device-key";
import { Ledger } from "../agent/ledger/ledger";
import type { ServeWork, Work } from "../agent/ledger/record";
import { openSettlement, type PriceTable, settle, type SettlementInputs, signSettlement } from "../agent/ledger/settle";
import { signOrder } from "../agent/protocol/order";
import { signReceipt } from "../agent/protocol/receipt";
import { statementHash } from "../agent/ledger/statement";

const hashOf = (e: Uint8Array | string) => statementHash(typeof e === "string" ? new TextEncoder().encode(e) : e);

let root = "";
let a: DeviceIdentity;
let b: DeviceIdentity;
let fleet: DeviceIdentity;
let client: DeviceIdentity;
let n = 0;
const OBJECT = "cd".repeat(32);
const OTHER = "ef".repeat(32);
const HOUR = 3_600_000;
const prices: PriceTable = { perByteServed: 3n, perByteHourStored: 7200n, perProof: 10n };

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "sharenode-settle-"));
  [a, b, fleet, client] = await Promise.all(
    ["a", "b", "fleet", "client"].map((d) => loadOrCreateDeviceIdentity(join(root, d))),
  );
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

function order(serial: string, device: DeviceIdentity, maxBytes = 1_000_000): string {
  return signOrder(
    {
      serial,
      deviceId: device.deviceId,
      objectId: OBJECT,
      clientKey: client.publicKeyHex,
      maxBytes,
      expiresAt: 10 * HOUR,
      rightsId: "label",
    },
    fleet,
  );
}

function serve(serial: string, orderToken: string, bytes: number, receipted: number): ServeWork {
  return {
    kind: "serve",
    serial,
    rightsId: "label",
    objectId: OBJECT,
    bytes: String(bytes),
    receipt: signReceipt({ serial, bytes: receipted }, client),
    order: orderToken,
  };
}

/** One device's ledger with one window per list of work; returns its statements with their records. */
async function statements(device: DeviceIdentity, windows: Work[][]) {
  const { ledger } = await Ledger.open({ dir: join(root, `ledger-${n++}`), deviceId: device.deviceId });
  const out: SettlementInputs["statements"][number][] = [];
  for (const [w, work] of windows.entries()) {
    for (const item of work) await ledger.append(item);
    const kept = await ledger.closeWindow({ start: w * HOUR, seconds: 3600 }, device, true);
    const { records } = await ledger.recordsOf(ledger.statements().length - 1, 0, 10_000);
    out.push({ envelope: kept.envelope, records: records.map((r) => r.record) });
  }
  await ledger.close();
  return out;
}

function inputs(list: SettlementInputs["statements"], extra: Partial<SettlementInputs> = {}): SettlementInputs {
  return {
    fleetPublicKey: fleet.publicKeyHex,
    devices: new Map([
      [a.deviceId, a.publicKey],
      [b.deviceId, b.publicKey],
    ]),
    statements: list,
    assignments: new Map([[a.deviceId, new Set([OBJECT])]]),
    challenges: [{ deviceId: a.deviceId, objectId: OBJECT, nonce: "11".repeat(32), at: 1000, ok: true }],
    prices,
    ...extra,
  };
}

describe("settle", () => {
  it("prices honest work line by line, and the signed settlement opens under the fleet key", async () => {
    const list = await statements(a, [
      [
        serve("h-1", order("h-1", a), 1000, 1000),
        { kind: "store", objectId: OBJECT, bytes: "4096", seconds: 3600 },
        { kind: "proof", nonce: "11".repeat(32), objectId: OBJECT, ok: true, ms: 3 },
        { kind: "fetch", objectId: OBJECT, bytes: "500" },
      ],
    ]);
    const { settlements, findings } = settle(inputs(list));
    expect(findings).toEqual([]);
    // The same statement given twice (an event delivered again) is settled once, not taken for a fork.
    expect(settle(inputs([...list, ...list])).settlements).toEqual(settlements);
    const [s] = settlements;
    expect(s!.findings).toEqual([]);
    expect(s!.lines.map((l) => [l.kind, l.acceptedUnits, l.amount, l.rejected])).toEqual([
      ["serve", "1000", "3000", undefined],
      ["store", String(4096 * 3600), String(4096 * 7200), undefined],
      ["proof", "1", "10", undefined],
      ["fetch", "500", "0", undefined],
    ]);
    expect(s!.totals.amount).toBe(String(3000 + 4096 * 7200 + 10));
    const envelope = signSettlement(s!, fleet);
    const opened = openSettlement(envelope, fleet.publicKey);
    expect(opened).toMatchObject({ ok: true, settlement: { deviceId: a.deviceId, prices: { perProof: "10" } } });
    expect(openSettlement(envelope, a.publicKey)).toMatchObject({ ok: false });
    // Tampered: a paid amount changed after signing.
    const tampered = new TextEncoder().encode(
      new TextDecoder().decode(envelope).replace(`\\"amount\\":\\"3000\\"`, `\\"amount\\":\\"9000\\"`),
    );
    expect(Buffer.compare(Buffer.from(tampered), Buffer.from(envelope))).not.toBe(0);
    expect(openSettlement(tampered, fleet.publicKey)).toEqual({
      ok: false,
      reason: "settlement signature does not verify under the fleet key",
    });
  });

  it("a device that inflates its receipts is paid what the receipts cover, the rest rejected over-receipt", async () => {
    const token = order("i-1", a);
    const list = await statements(a, [[serve("i-1", token, 1000, 1000)], [serve("i-1", token, 5000, 2000)]]);
    const lines = settle(inputs(list)).settlements.flatMap((s) => s.lines);
    expect(lines.map((l) => [l.acceptedUnits, l.rejected?.reason, l.rejected?.units])).toEqual([
      ["1000", undefined, undefined],
      ["1000", "over-receipt", "4000"],
    ]);
  });

  it("a device that claims another device's order, or a serial already claimed elsewhere, is rejected", async () => {
    const forA = order("d-1", a);
    const fromA = await statements(a, [[serve("d-1", forA, 800, 800)]]);
    // B shows A's order and receipt as its own.
    const stolen = await statements(b, [[serve("d-1", forA, 800, 800)]]);
    // The fleet (by mistake) issued the same serial to B too: the first device to claim it keeps it.
    const reused = await statements(b, [[serve("d-1", order("d-1", b), 300, 300)]]);
    const { settlements } = settle(inputs([...fromA, ...stolen, ...reused]));
    expect(settlements.map((s) => s.lines[0]!.rejected?.reason)).toEqual([
      undefined,
      "wrong-device",
      "serial-elsewhere",
    ]);
    expect(settlements.map((s) => s.totals.amount)).toEqual(["2400", "0", "0"]);
  });

  it("storage of an unassigned object, or one with no passed challenge in the window, is rejected", async () => {
    const list = await statements(a, [
      [
        { kind: "store", objectId: OTHER, bytes: "100", seconds: 3600 },
        { kind: "store", objectId: OBJECT, bytes: "100", seconds: 3600 },
      ],
      [{ kind: "store", objectId: OBJECT, bytes: "100", seconds: 3600 }],
      [{ kind: "proof", nonce: "22".repeat(32), objectId: OBJECT, ok: true, ms: 1 }],
    ]);
    const lines = settle(inputs(list)).settlements.flatMap((s) => s.lines);
    expect(lines.map((l) => l.rejected?.reason)).toEqual([
      "unassigned",
      undefined, // the fleet's passed challenge at 1000 ms lies in the first window
      "no-passed-challenge",
      "unknown-challenge",
    ]);
  });

  it("names gaps, forks, forged statements and records that do not match", async () => {
    const list = await statements(a, [[], [], []]);
    let result = settle(inputs([list[0]!, list[2]!]));
    expect(result.settlements[1]!.findings).toEqual([
      `gap: the statement this one follows (${hashOf(list[1]!.envelope)}) is missing`,
    ]);
    // A fork: another ledger of the same device key, from the same start.
    const fork = await statements(a, [[{ kind: "fetch", objectId: OBJECT, bytes: "1" }]]);
    result = settle(inputs([list[0]!, fork[0]!]));
    expect(result.settlements[1]!.findings[0]).toMatch(/^fork: statement [0-9a-f]{64} already follows/);
    // Forged: signed by B for A's device id.
    const forged = await statements(b, [[]]);
    const text = new TextDecoder().decode(forged[0]!.envelope as Uint8Array).replace(b.deviceId, a.deviceId);
    result = settle(inputs([{ envelope: text, records: [] }]));
    expect(result.findings).toEqual([
      `statement 0 of ${a.deviceId}: statement signature does not verify under the device key`,
    ]);
    // Records that are not the ones the statement was made over: every line is refused.
    const honest = await statements(a, [[{ kind: "fetch", objectId: OBJECT, bytes: "10" }]]);
    const changed = honest[0]!.records!.map((r) => (r.kind === "fetch" ? { ...r, bytes: "99" } : r));
    result = settle(inputs([{ envelope: honest[0]!.envelope, records: changed }]));
    expect(result.settlements[0]!.findings).toEqual(["its records do not match its recordsRoot"]);
    expect(result.settlements[0]!.lines[0]!.rejected?.reason).toBe("statement");
  });

  it("takes an order the fleet issued from its own records, and still checks the receipt against it", async () => {
    const token = order("k-1", a);
    const list = await statements(a, [[serve("k-1", token, 700, 700)], [serve("k-1", token, 600, 900)]]);
    const issued = new Map([
      [
        token,
        {
          v: 1 as const,
          serial: "k-1",
          deviceId: a.deviceId,
          objectId: OBJECT,
          clientKey: client.publicKeyHex,
          maxBytes: 1_000_000,
          expiresAt: 10 * HOUR,
          rightsId: "label",
        },
      ],
    ]);
    const known = settle(inputs(list, { issuedOrders: issued })).settlements.flatMap((s) => s.lines);
    const checked = settle(inputs(list)).settlements.flatMap((s) => s.lines);
    expect(known).toEqual(checked);
    expect(known.map((l) => [l.acceptedUnits, l.rejected?.reason])).toEqual([
      ["700", undefined],
      ["200", "over-receipt"],
    ]);
    // A receipt signed by someone else is refused whichever way the order was found.
    const forged = await statements(a, [
      [{ ...serve("k-1", token, 10, 10), receipt: signReceipt({ serial: "k-1", bytes: 10 }, b) }],
    ]);
    expect(settle(inputs(forged, { issuedOrders: issued })).settlements[0]!.lines[0]!.rejected?.reason).toBe(
      "bad-receipt",
    );
  });

  it("refuses a statement whose records do not form a chain, or are not records at all, without throwing", async () => {
    const [first, second] = await statements(a, [
      [{ kind: "fetch", objectId: OBJECT, bytes: "1" }],
      [
        { kind: "fetch", objectId: OBJECT, bytes: "2" },
        { kind: "fetch", objectId: OBJECT, bytes: "3" },
      ],
    ]);
    // The second window's records re-chained by the device to start from nowhere: its signed root still matches
    // (the device signs whatever it likes), but the chain from the first window is broken.
    const rechained = second!.records!.map((r, i) => (i === 0 ? { ...r, prev: "0".repeat(64) } : r));
    let result = settle(inputs([first!, { envelope: second!.envelope, records: rechained }]));
    expect(result.settlements[1]!.findings).toContain("its record 2 does not follow the one before it");
    // A first record that does not continue the first statement's chain head.
    const [, lone] = await statements(a, [[], [{ kind: "fetch", objectId: OBJECT, bytes: "4" }]]);
    result = settle(inputs([first!, { envelope: lone!.envelope, records: lone!.records }]));
    // (lone's statement follows another first statement: a gap, not a broken record chain)
    expect(result.settlements[1]!.findings[0]).toMatch(/^gap: /);
    const garbage = [{ ...second!.records![0]!, bytes: "1.5" }];
    result = settle(inputs([first!, { envelope: second!.envelope, records: garbage }]));
    expect(result.settlements[1]!.findings).toEqual(["fetch 'bytes' must be a decimal integer string"]);
    expect(result.settlements[1]!.lines.every((l) => l.rejected?.reason === "statement")).toBe(true);
  });

  it("keeps amounts past 2^53 exact", async () => {
    const big = 2 ** 53 - 1;
    const list = await statements(a, [[{ kind: "store", objectId: OBJECT, bytes: String(big), seconds: 3600 }]]);
    const [s] = settle(inputs(list)).settlements;
    expect(s!.totals.amount).toBe(((BigInt(big) * 3600n * 7200n) / 3600n).toString());
    expect(s!.totals.amount).toBe("64851834634135135200");
  });

  it("compute: paid per CPU ms when the task's quorum agreed with the output; refused otherwise, with the reason", async () => {
    const M = "1a".repeat(32);
    const I = "2b".repeat(32);
    const GOOD = "3c".repeat(32);
    const BAD = "4d".repeat(32);
    const compute = (taskId: string, outputId: string, cpuMs: number, moduleId = M): Work => ({
      kind: "compute",
      taskId,
      moduleId,
      inputId: I,
      outputId,
      cpuMs: String(cpuMs),
      wallMs: cpuMs + 10,
    });
    const verdict = (taskId: string, outputId: string | null, devices = [a.deviceId, b.deviceId]) => ({
      taskId,
      moduleId: M,
      inputId: I,
      outputId,
      devices,
      cpuMs: 1000,
    });
    const list = await statements(a, [
      [
        compute("ok", GOOD, 400),
        compute("liar", BAD, 300),
        compute("ok", GOOD, 400), // the same task claimed again
        compute("nobody-sent-it", GOOD, 50),
        compute("not-to-a", GOOD, 50),
        compute("undecided", GOOD, 70),
        compute("greedy", GOOD, 2500),
        compute("swapped", GOOD, 10, "5e".repeat(32)),
      ],
    ]);
    const verdicts = new Map(
      [
        verdict("ok", GOOD),
        verdict("liar", GOOD),
        verdict("not-to-a", GOOD, [b.deviceId]),
        verdict("undecided", null),
        verdict("greedy", GOOD),
        verdict("swapped", GOOD),
      ].map((v) => [v.taskId, v]),
    );
    const [s] = settle(inputs(list, { compute: verdicts, prices: { ...prices, perCpuMs: 2n } })).settlements;
    const byRef = s!.lines.map((l) => [l.ref, l.acceptedUnits, l.amount, l.rejected?.reason ?? null]);
    expect(byRef).toEqual([
      ["ok", "400", "800", null],
      ["liar", "0", "0", "disagrees-with-quorum"],
      ["ok", "0", "0", "duplicate-task"],
      ["nobody-sent-it", "0", "0", "unknown-task"],
      ["not-to-a", "0", "0", "unknown-task"],
      ["undecided", "0", "0", "no-quorum"],
      ["greedy", "1000", "2000", "over-cpu-budget"],
      ["swapped", "0", "0", "unknown-task"],
    ]);
    expect(s!.prices.perCpuMs).toBe("2");
    expect(s!.totals.amount).toBe("2800");
    expect(s!.totals.rejectedUnits.compute).toBe(String(300 + 400 + 50 + 50 + 70 + 1500 + 10));
    // Without verdicts (a fleet that runs no compute), every compute line is unknown to it.
    const [none] = settle(inputs(list)).settlements;
    expect(none!.lines.every((l) => l.rejected?.reason === "unknown-task")).toBe(true);
  });
});
