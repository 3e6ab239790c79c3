// Settlement: the fleet's side of the ledger, a library function over plain inputs (statements with their records,
// the fleet's device registry, assignments and challenge outcomes, a price table) that checks what each device
// claims and prices what holds up, line by line, each rejection with its reason. The result per device and window
// is signed by the fleet key and sent back to the device (`ledger.settlement`), so the owner sees both sides.
//
// Money and units are bigint; prices are integer base units: per byte served, per byte-hour held (byte-seconds
// x price / 3600, rounded down), per proof. A later reference scheduler keeps the same inputs in a database and
// calls the same function.
import { blake3 } from "../kernels/blake3.js";
import type { ComputeVerdict } from "../protocol/compute-result.js";
import { fieldsDefect, openEnvelope, sealEnvelope, type Signer } from "../protocol/envelope.js";
import type { Order } from "../protocol/order.js";
import { openReceipt, verifyServed, type ServedCheck } from "../protocol/receipt.js";
import { describeType } from "../util/describe.js";
import { errorLine } from "../util/errors.js";
import { isPlainObject } from "../util/guards.js";
import { toHex } from "../util/hex.js";
import { encodeRecord, recordHash, WORK_KINDS, type LedgerRecord } from "./record.js";
import { buildStatement, openStatement, statementHash, type StatementBody } from "./statement.js";

export type { ComputeVerdict } from "../protocol/compute-result.js";

export const SETTLEMENT_DOMAIN = "sharenode settlement v1\n";
const SETTLEMENT_DOMAIN_BYTES = new TextEncoder().encode(SETTLEMENT_DOMAIN);
export const MAX_SETTLEMENT_BYTES = 4 * 1024 * 1024;

export interface PriceTable {
  perByteServed: bigint;
  perByteHourStored: bigint;
  perProof: bigint;
  /** Per CPU millisecond of a compute task the quorum agreed with; absent: 0. */
  perCpuMs?: bigint;
}

export interface SettlementInputs {
  fleetPublicKey: Uint8Array | string;
  /** deviceId -> the device's raw public key (the fleet's registry). */
  devices: ReadonlyMap<string, Uint8Array>;
  /** Statements as the devices sent them (envelope bytes or text), each with the records it covers when known. */
  statements: ReadonlyArray<{ envelope: Uint8Array | string; records?: readonly LedgerRecord[] }>;
  /** deviceId -> the objects the fleet assigned to it. */
  assignments: ReadonlyMap<string, ReadonlySet<string>>;
  /** The fleet's own challenge outcomes. */
  challenges: ReadonlyArray<{ deviceId: string; objectId: string; nonce: string; at: number; ok: boolean }>;
  prices: PriceTable;
  /**
   * Orders the fleet issued, by token (the scheduler's own records): a presented order equal to one of these is
   * known to be the fleet's without checking its signature again. Others are verified under fleetPublicKey.
   */
  issuedOrders?: ReadonlyMap<string, Order>;
  /** Compute tasks the fleet ran, by taskId, with their quorum's outcome. */
  compute?: ReadonlyMap<string, ComputeVerdict>;
}

export type LineKind = "serve" | "store" | "proof" | "fetch" | "compute";

/** Why a line (or part of one) is not paid. */
export type Rejection =
  | "bad-order" // the order is not the fleet's, or is malformed
  | "bad-receipt" // not signed by the order's client key, or not for the order
  | "over-max-bytes" // the order's maxBytes passed (the receipt, or all devices' claims together)
  | "over-receipt" // the device claims more than the client's receipt covers
  | "order-expired" // served in a window that began after the order expired
  | "wrong-device" // the order names another device
  | "serial-elsewhere" // the serial is already claimed by another device
  | "unassigned" // storage of an object the fleet did not assign to the device
  | "no-passed-challenge" // storage with no passed challenge in the window
  | "unknown-challenge" // a proof the fleet has no passed outcome for
  | "unknown-task" // a compute task the fleet did not send to the device
  | "no-quorum" // a compute task whose replicas did not agree
  | "disagrees-with-quorum" // a compute result other than the one the quorum agreed on
  | "duplicate-task" // the same compute task claimed again
  | "over-cpu-budget" // more CPU claimed than the task's budget
  | "statement"; // the whole statement was refused (see findings)

export interface SettlementLine {
  seq: number;
  kind: LineKind;
  /** The serial (serve), the object (store, fetch), the nonce (proof) or the task (compute). */
  ref: string;
  /** Units claimed: bytes, byte-seconds, 1 proof or CPU ms (decimal). */
  units: string;
  /** Units accepted and their price (decimal, base units). */
  acceptedUnits: string;
  amount: string;
  rejected?: { units: string; reason: Rejection; detail: string };
}

export interface SettlementBody {
  v: 1;
  deviceId: string;
  window: { start: number; seconds: number };
  /** Hash of the statement settled (statementHash of its envelope). */
  statement: string;
  prices: { perByteServed: string; perByteHourStored: string; perProof: string; perCpuMs: string };
  lines: SettlementLine[];
  totals: { amount: string; rejectedUnits: Record<LineKind, string> };
  /** Findings about the statement itself: a bad signature, a gap or fork in the chain, records that do not match. */
  findings: string[];
}

export interface SettlementResult {
  settlements: SettlementBody[];
  /** Findings that belong to no one statement (an unknown device, a statement that does not open). */
  findings: string[];
}

/** Checks and prices every statement; pure (no I/O), deterministic for the same inputs in the same order. */
export function settle(inputs: SettlementInputs): SettlementResult {
  const findings: string[] = [];
  const opened: Array<{ deviceId: string; body: StatementBody; hash: string; records?: readonly LedgerRecord[] }> = [];
  const seenHashes = new Set<string>();
  for (const [i, s] of inputs.statements.entries()) {
    const bytes = typeof s.envelope === "string" ? new TextEncoder().encode(s.envelope) : s.envelope;
    const deviceId = statementDevice(bytes);
    if (deviceId === undefined) {
      findings.push(`statement ${i}: not a statement`);
      continue;
    }
    const key = inputs.devices.get(deviceId);
    if (!key) {
      findings.push(`statement ${i}: unknown device ${deviceId}`);
      continue;
    }
    const o = openStatement(bytes, key);
    if (!o.ok) {
      findings.push(`statement ${i} of ${deviceId}: ${o.reason}`);
      continue;
    }
    const hash = statementHash(bytes);
    // The same statement twice (an event delivered again, a file collected twice) is one statement, not a fork.
    if (seenHashes.has(hash)) continue;
    seenHashes.add(hash);
    opened.push({ deviceId, body: o.statement, hash, records: s.records });
  }

  // Chains per device: ordered by firstSeq; a statement whose prevStatement is not its predecessor's hash is a gap,
  // two that follow the same one are a fork.
  const byDevice = new Map<string, typeof opened>();
  for (const o of opened) {
    const list = byDevice.get(o.deviceId);
    if (list) list.push(o);
    else byDevice.set(o.deviceId, [o]);
  }
  const chainFindings = new Map<string, string[]>();
  for (const [, list] of byDevice) {
    list.sort((a, b) => a.body.firstSeq - b.body.firstSeq || a.body.window.start - b.body.window.start);
    const seen = new Map<string, string>();
    for (let i = 0; i < list.length; i++) {
      const s = list[i]!;
      const notes: string[] = [];
      const other = seen.get(s.body.prevStatement);
      if (other !== undefined) notes.push(`fork: statement ${other} already follows ${s.body.prevStatement}`);
      seen.set(s.body.prevStatement, s.hash);
      if (i > 0) {
        const prev = list[i - 1]!;
        if (s.body.prevStatement !== prev.hash && other === undefined)
          notes.push(`gap: the statement this one follows (${s.body.prevStatement}) is missing`);
      }
      chainFindings.set(s.hash, notes);
    }
  }

  // Claims per serial across every device and window, in input order.
  const serialOwner = new Map<string, string>();
  const serialClaimed = new Map<string, bigint>();
  const passed = new Map<string, Array<SettlementInputs["challenges"][number]>>();
  for (const c of inputs.challenges) {
    if (!c.ok) continue;
    const k = `${c.deviceId}:${c.objectId}`;
    const list = passed.get(k);
    if (list) list.push(c);
    else passed.set(k, [c]);
  }
  const passedNonces = new Set(inputs.challenges.filter((c) => c.ok).map((c) => `${c.deviceId}:${c.nonce}`));
  /** deviceId:taskId of every compute line claimed so far: a task is paid once per device. */
  const computeClaimed = new Set<string>();

  const byHash = new Map(opened.map((o) => [o.hash, o]));
  const settlements: SettlementBody[] = [];
  for (const s of opened) {
    const { body, deviceId } = s;
    const notes = [...(chainFindings.get(s.hash) ?? [])];
    const lines: SettlementLine[] = [];
    const records = s.records;
    let refuseAll: string | undefined;
    if (!records) refuseAll = "the statement's records were not given (ledger.records)";
    else {
      try {
        const hashed = records.map((r) => ({ record: r, hash: recordHash(encodeRecord(r)) }));
        // Hash-chained: each record names the one before it, the first the previous statement's chain head.
        for (let i = 1; i < hashed.length; i++)
          if (hashed[i]!.record.prev !== hashed[i - 1]!.hash)
            throw new Error(`its record ${hashed[i]!.record.seq} does not follow the one before it`);
        const before = byHash.get(body.prevStatement)?.body.chainHead;
        if (before !== undefined && hashed.length > 0 && hashed[0]!.record.prev !== before)
          throw new Error("its first record does not follow the previous statement's chain head");
        const again = buildStatement({
          deviceId,
          window: body.window,
          records: hashed,
          firstSeq: body.firstSeq,
          headBefore: records[0]?.prev ?? body.chainHead,
          prevStatement: body.prevStatement,
          clockSynced: body.clockSynced,
        });
        if (again.recordsRoot !== body.recordsRoot) refuseAll = "its records do not match its recordsRoot";
        else if (JSON.stringify(again.totals) !== JSON.stringify(body.totals))
          refuseAll = "its totals do not match its records";
      } catch (err) {
        // A record that is not one, seqs that skip, a broken chain: the statement is not settled.
        refuseAll = errorLine(err);
      }
    }
    if (refuseAll !== undefined) notes.push(refuseAll);
    const windowEnd = body.window.start + body.window.seconds * 1000;
    for (const r of records ?? []) {
      let line: SettlementLine;
      try {
        line = priceLine(r);
      } catch {
        // Not a record (the statement is refused for it): a line of nothing, so that it still shows.
        const kind = (WORK_KINDS as readonly string[]).includes(r.kind) ? r.kind : "fetch";
        line = {
          seq: Number.isSafeInteger(r.seq) ? r.seq : -1,
          kind,
          ref: "",
          units: "0",
          acceptedUnits: "0",
          amount: "0",
        };
      }
      if (refuseAll !== undefined) {
        lines.push(reject(line, "statement", refuseAll));
        continue;
      }
      lines.push(check(line, r));
    }
    settlements.push(summarize(deviceId, body, s.hash, lines, notes, inputs.prices));

    function check(line: SettlementLine, r: LedgerRecord): SettlementLine {
      switch (r.kind) {
        case "serve": {
          const served = checkServed(r.order, r.receipt);
          if (!served.ok) {
            const reason: Rejection =
              served.code === "bad-order"
                ? "bad-order"
                : served.code === "over-max-bytes"
                  ? "over-max-bytes"
                  : "bad-receipt";
            return reject(line, reason, served.reason);
          }
          const { order, receipt } = served;
          if (order.serial !== r.serial) return reject(line, "bad-order", `the order's serial is ${order.serial}`);
          if (order.deviceId !== deviceId)
            return reject(line, "wrong-device", `order ${order.serial} is for ${order.deviceId}`);
          const owner = serialOwner.get(order.serial);
          if (owner !== undefined && owner !== deviceId)
            return reject(line, "serial-elsewhere", `order ${order.serial} is already claimed by ${owner}`);
          serialOwner.set(order.serial, deviceId);
          if (body.window.start > order.expiresAt)
            return reject(line, "order-expired", `order ${order.serial} expired before the window began`);
          const before = serialClaimed.get(order.serial) ?? 0n;
          const claim = BigInt(r.bytes);
          const cap = BigInt(Math.min(receipt.bytes, order.maxBytes));
          const room = cap > before ? cap - before : 0n;
          const take = claim < room ? claim : room;
          serialClaimed.set(order.serial, before + take);
          if (take < claim) {
            const why: Rejection = BigInt(receipt.bytes) <= BigInt(order.maxBytes) ? "over-receipt" : "over-max-bytes";
            return partial(
              line,
              take,
              claim - take,
              why,
              `${before + claim} claimed under ${order.serial}; the receipt covers ${receipt.bytes}`,
            );
          }
          return line;
        }
        case "store": {
          if (!inputs.assignments.get(deviceId)?.has(r.objectId))
            return reject(line, "unassigned", `object ${r.objectId} was not assigned to ${deviceId}`);
          const ok = (passed.get(`${deviceId}:${r.objectId}`) ?? []).some(
            (c) => c.at >= body.window.start && c.at < windowEnd,
          );
          if (!ok) return reject(line, "no-passed-challenge", `no passed challenge of ${r.objectId} in the window`);
          return line;
        }
        case "proof":
          if (!r.ok) return { ...line, acceptedUnits: "0", amount: "0" };
          if (!passedNonces.has(`${deviceId}:${r.nonce}`))
            return reject(line, "unknown-challenge", `the fleet has no passed challenge ${r.nonce} of ${deviceId}`);
          return line;
        case "fetch":
          return line;
        case "compute": {
          const verdict = inputs.compute?.get(r.taskId);
          if (!verdict || !verdict.devices.includes(deviceId))
            return reject(line, "unknown-task", `the fleet did not send task ${r.taskId} to ${deviceId}`);
          const key = `${deviceId}:${r.taskId}`;
          if (computeClaimed.has(key))
            return reject(line, "duplicate-task", `task ${r.taskId} is already claimed by ${deviceId}`);
          computeClaimed.add(key);
          if (r.moduleId !== verdict.moduleId || r.inputId !== verdict.inputId)
            return reject(line, "unknown-task", `task ${r.taskId} was another module or input`);
          if (verdict.outputId === null)
            return reject(line, "no-quorum", `the replicas of task ${r.taskId} did not reach a quorum`);
          if (r.outputId !== verdict.outputId)
            return reject(
              line,
              "disagrees-with-quorum",
              `output ${r.outputId} of task ${r.taskId}; the quorum agreed on ${verdict.outputId}`,
            );
          const claim = BigInt(r.cpuMs);
          const budget = BigInt(verdict.cpuMs);
          if (claim > budget)
            return partial(
              line,
              budget,
              claim - budget,
              "over-cpu-budget",
              `${claim} CPU ms claimed for task ${r.taskId}, whose budget was ${budget}`,
            );
          return line;
        }
      }
    }
  }
  return { settlements, findings };

  /** verifyServed, with an order the fleet issued taken from its own records instead of checked again. */
  function checkServed(orderToken: string, receiptToken: string): ServedCheck {
    const issued = inputs.issuedOrders?.get(orderToken);
    if (!issued) return verifyServed(orderToken, receiptToken, inputs.fleetPublicKey);
    const receipt = openReceipt(receiptToken, { clientKey: issued.clientKey, serial: issued.serial });
    if (!receipt.ok) return receipt;
    if (receipt.receipt.bytes > issued.maxBytes)
      return {
        ok: false,
        code: "over-max-bytes",
        reason: `receipt claims ${receipt.receipt.bytes} bytes under order ${issued.serial}, which allows ${issued.maxBytes}`,
      };
    return { ok: true, order: issued, receipt: receipt.receipt };
  }

  function priceLine(r: LedgerRecord): SettlementLine {
    const p = inputs.prices;
    switch (r.kind) {
      case "serve":
        return line(r.seq, "serve", r.serial, BigInt(r.bytes), BigInt(r.bytes) * p.perByteServed);
      case "store": {
        const units = BigInt(r.bytes) * BigInt(r.seconds);
        return line(r.seq, "store", r.objectId, units, (units * p.perByteHourStored) / 3600n);
      }
      case "proof":
        return line(r.seq, "proof", r.nonce, 1n, r.ok ? p.perProof : 0n);
      case "fetch":
        return line(r.seq, "fetch", r.objectId, BigInt(r.bytes), 0n);
      case "compute":
        return line(r.seq, "compute", r.taskId, BigInt(r.cpuMs), BigInt(r.cpuMs) * (p.perCpuMs ?? 0n));
    }
  }

  function partial(l: SettlementLine, take: bigint, rest: bigint, reason: Rejection, detail: string): SettlementLine {
    const units = BigInt(l.units);
    const amount = units === 0n ? 0n : (BigInt(l.amount) * take) / units;
    return {
      ...l,
      acceptedUnits: take.toString(),
      amount: amount.toString(),
      rejected: { units: rest.toString(), reason, detail },
    };
  }
}

function line(seq: number, kind: LineKind, ref: string, units: bigint, amount: bigint): SettlementLine {
  return { seq, kind, ref, units: units.toString(), acceptedUnits: units.toString(), amount: amount.toString() };
}

function reject(l: SettlementLine, reason: Rejection, detail: string): SettlementLine {
  return { ...l, acceptedUnits: "0", amount: "0", rejected: { units: l.units, reason, detail } };
}

function summarize(
  deviceId: string,
  body: StatementBody,
  hash: string,
  lines: SettlementLine[],
  findings: string[],
  prices: PriceTable,
): SettlementBody {
  let amount = 0n;
  const rejectedUnits: Record<LineKind, bigint> = { serve: 0n, store: 0n, proof: 0n, fetch: 0n, compute: 0n };
  for (const l of lines) {
    amount += BigInt(l.amount);
    if (l.rejected) rejectedUnits[l.kind] += BigInt(l.rejected.units);
  }
  return {
    v: 1,
    deviceId,
    window: body.window,
    statement: hash,
    prices: {
      perByteServed: prices.perByteServed.toString(),
      perByteHourStored: prices.perByteHourStored.toString(),
      perProof: prices.perProof.toString(),
      perCpuMs: (prices.perCpuMs ?? 0n).toString(),
    },
    lines,
    totals: {
      amount: amount.toString(),
      rejectedUnits: {
        serve: rejectedUnits.serve.toString(),
        store: rejectedUnits.store.toString(),
        proof: rejectedUnits.proof.toString(),
        fetch: rejectedUnits.fetch.toString(),
        compute: rejectedUnits.compute.toString(),
      },
    },
    findings,
  };
}

/** The deviceId a statement's body names (unverified: only to find its key). */
function statementDevice(envelope: Uint8Array): string | undefined {
  try {
    const e = JSON.parse(new TextDecoder().decode(envelope)) as { body?: unknown };
    if (typeof e.body !== "string") return undefined;
    const b = JSON.parse(e.body) as { deviceId?: unknown };
    return typeof b.deviceId === "string" ? b.deviceId : undefined;
  } catch {
    return undefined;
  }
}

/** Signs a settlement with the fleet key; returns the envelope bytes. */
export function signSettlement(body: SettlementBody, fleetSigner: Signer): Uint8Array {
  return sealEnvelope(JSON.stringify(body), SETTLEMENT_DOMAIN_BYTES, fleetSigner);
}

export type OpenedSettlement = { ok: true; settlement: SettlementBody } | { ok: false; reason: string };

/** Checks a settlement's envelope and the fleet's signature; the body's shape at the top level. */
export function openSettlement(payload: unknown, fleetPublicKey: Uint8Array): OpenedSettlement {
  const o = openEnvelope(payload, MAX_SETTLEMENT_BYTES, SETTLEMENT_DOMAIN_BYTES, fleetPublicKey, "settlement", "fleet");
  if (!o.ok) return { ok: false, reason: o.reason };
  if (!isPlainObject(o.body)) return { ok: false, reason: `settlement body is ${describeType(o.body)}` };
  const shape = fieldsDefect(
    o.body,
    ["v", "deviceId", "window", "statement", "prices", "lines", "totals", "findings"],
    "settlement body",
  );
  if (shape !== undefined) return { ok: false, reason: shape };
  return { ok: true, settlement: o.body as unknown as SettlementBody };
}

/** Hash of a settlement envelope, hex. */
export function settlementHash(envelope: Uint8Array): string {
  return toHex(blake3(envelope));
}
