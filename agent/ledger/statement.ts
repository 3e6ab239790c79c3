// Statements: what the box claims for one window, signed by the device key. A statement covers a contiguous run of
// ledger records (every record appended since the previous statement), names their Merkle root (merkle.ts) so that
// sampling a few records with their paths checks the whole, sums them by category and by rightsId, and names the
// previous statement's hash: statements form a chain of their own, and a gap or a fork shows.
//
// Envelope: `{"body":"<JSON>","sig":"<base64>"}` signed over "sharenode statement v1\n" || UTF-8(body), as
// commands, orders and receipts are (agent/protocol/envelope.ts). Totals are decimal strings, summed as bigint.
import { blake3 } from "../kernels/blake3.js";
import { openEnvelope, sealEnvelope, fieldsDefect, type Signer } from "../protocol/envelope.js";
import { describeType, describeValue } from "../util/describe.js";
import { isPlainObject, isUint } from "../util/guards.js";
import { toHex } from "../util/hex.js";
import { merkleRoot } from "./merkle.js";
import { GENESIS_PREV, type LedgerRecord } from "./record.js";

export const STATEMENT_DOMAIN = "sharenode statement v1\n";
const STATEMENT_DOMAIN_BYTES = new TextEncoder().encode(STATEMENT_DOMAIN);
export const MAX_STATEMENT_BYTES = 1024 * 1024;
const HEX_64 = /^[0-9a-f]{64}$/;
const DEVICE_ID = /^[0-9a-f]{32}$/;
const DECIMAL = /^(0|[1-9][0-9]{0,76})$/;

/** Sums by category; every amount a decimal string (bigint in code). */
export interface StatementTotals {
  /** Bytes served and backed by receipts. */
  serveBytes: string;
  /** Byte-seconds held. */
  storeByteSeconds: string;
  proofsPassed: string;
  proofsFailed: string;
  /** Bytes fetched for tasks (counted, normally unpaid). */
  fetchBytes: string;
  /** CPU milliseconds of compute tasks done. */
  computeCpuMs: string;
}
const TOTAL_FIELDS = [
  "serveBytes",
  "storeByteSeconds",
  "proofsPassed",
  "proofsFailed",
  "fetchBytes",
  "computeCpuMs",
] as const;

export interface StatementBody {
  v: 1;
  deviceId: string;
  /** The window: its start (epoch ms, UTC-aligned) and length in seconds. */
  window: { start: number; seconds: number };
  /** The records covered: seq firstSeq .. lastSeq inclusive (count 0: none, and firstSeq = lastSeq + 1). */
  firstSeq: number;
  lastSeq: number;
  count: number;
  /** Merkle root of the covered records' hashes. */
  recordsRoot: string;
  /** Hash of the last covered record (the chain's head at the end of the window), or the previous head. */
  chainHead: string;
  totals: StatementTotals;
  /** Serve bytes per rightsId (who holds the rights to what was served). */
  rights: Record<string, string>;
  /** Hash of the previous statement's envelope bytes (64 zeros for the first). */
  prevStatement: string;
  /** False while the box's clock has not been set by NTP: `at` and the window may then be wrong. */
  clockSynced: boolean;
}
const BODY_FIELDS = [
  "v",
  "deviceId",
  "window",
  "firstSeq",
  "lastSeq",
  "count",
  "recordsRoot",
  "chainHead",
  "totals",
  "rights",
  "prevStatement",
  "clockSynced",
] as const;

export interface StatementInput {
  deviceId: string;
  window: { start: number; seconds: number };
  /** The records covered, in seq order, with their hashes; firstSeq is given for an empty window. */
  records: readonly { record: LedgerRecord; hash: string }[];
  firstSeq: number;
  /** The chain head before these records (the previous record's hash, or GENESIS_PREV). */
  headBefore: string;
  prevStatement: string;
  clockSynced: boolean;
}

/** Sums the records into a statement body. Integers only: bigint sums, decimal strings out. */
export function buildStatement(input: StatementInput): StatementBody {
  const sums = {
    serveBytes: 0n,
    storeByteSeconds: 0n,
    proofsPassed: 0n,
    proofsFailed: 0n,
    fetchBytes: 0n,
    computeCpuMs: 0n,
  };
  const rights = new Map<string, bigint>();
  let expected = input.firstSeq;
  for (const { record } of input.records) {
    if (record.seq !== expected) throw new RangeError(`statement records skip from seq ${expected} to ${record.seq}`);
    expected++;
    switch (record.kind) {
      case "serve": {
        const bytes = BigInt(record.bytes);
        sums.serveBytes += bytes;
        rights.set(record.rightsId, (rights.get(record.rightsId) ?? 0n) + bytes);
        break;
      }
      case "store":
        sums.storeByteSeconds += BigInt(record.bytes) * BigInt(record.seconds);
        break;
      case "proof":
        if (record.ok) sums.proofsPassed++;
        else sums.proofsFailed++;
        break;
      case "fetch":
        sums.fetchBytes += BigInt(record.bytes);
        break;
      case "compute":
        sums.computeCpuMs += BigInt(record.cpuMs);
        break;
    }
  }
  const hashes = input.records.map((r) => r.hash);
  const totals = Object.fromEntries(TOTAL_FIELDS.map((k) => [k, sums[k].toString()])) as unknown as StatementTotals;
  return {
    v: 1,
    deviceId: input.deviceId,
    window: { start: input.window.start, seconds: input.window.seconds },
    firstSeq: input.firstSeq,
    lastSeq: input.firstSeq + input.records.length - 1,
    count: input.records.length,
    recordsRoot: merkleRoot(hashes),
    chainHead: hashes.at(-1) ?? input.headBefore,
    totals,
    rights: Object.fromEntries(
      [...rights].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, v]) => [k, v.toString()]),
    ),
    prevStatement: input.prevStatement,
    clockSynced: input.clockSynced,
  };
}

/** The signed statement: envelope bytes (what goes out as an event and what the next statement's prev hashes). */
export function signStatement(body: StatementBody, deviceSigner: Signer): Uint8Array {
  const defect = statementDefect(body);
  if (defect !== undefined) throw new RangeError(defect);
  return sealEnvelope(JSON.stringify(body), STATEMENT_DOMAIN_BYTES, deviceSigner);
}

/** Hash of a statement's envelope bytes, hex: the next statement's prevStatement. */
export function statementHash(envelope: Uint8Array): string {
  return toHex(blake3(envelope));
}

export type OpenedStatement =
  | { ok: true; statement: StatementBody }
  | { ok: false; code: "malformed" | "bad-signature" | "too-large"; reason: string };

/** Checks a statement's envelope, signature (under the device's public key) and body; never throws on the payload. */
export function openStatement(payload: unknown, devicePublicKey: Uint8Array): OpenedStatement {
  const opened = openEnvelope(
    payload,
    MAX_STATEMENT_BYTES,
    STATEMENT_DOMAIN_BYTES,
    devicePublicKey,
    "statement",
    "device",
  );
  if (!opened.ok) return { ok: false, code: opened.code, reason: opened.reason };
  const defect = statementDefect(opened.body);
  if (defect !== undefined) return { ok: false, code: "malformed", reason: defect };
  return { ok: true, statement: opened.body as StatementBody };
}

/** The first thing wrong with a statement body, or undefined. */
export function statementDefect(value: unknown): string | undefined {
  if (!isPlainObject(value)) return `statement body is ${describeType(value)}, not an object`;
  const shape = fieldsDefect(value, BODY_FIELDS, "statement body");
  if (shape !== undefined) return shape;
  if (value.v !== 1) return `statement version ${describeValue(value.v)} is not supported (expected 1)`;
  if (typeof value.deviceId !== "string" || !DEVICE_ID.test(value.deviceId))
    return "statement 'deviceId' must be 32 hex digits";
  const w = value.window;
  if (!isPlainObject(w) || fieldsDefect(w, ["start", "seconds"], "window") !== undefined)
    return "statement 'window' must be {start, seconds}";
  if (!isUint(w.start) || !isUint(w.seconds) || w.seconds === 0)
    return "statement window start and seconds must be integers (seconds > 0)";
  if (!isUint(value.firstSeq) || !isUint(value.count) || !Number.isSafeInteger(value.lastSeq))
    return "statement seq range must be integers";
  if ((value.lastSeq as number) !== (value.firstSeq as number) + (value.count as number) - 1)
    return "statement lastSeq must be firstSeq + count - 1";
  for (const key of ["recordsRoot", "chainHead", "prevStatement"])
    if (typeof value[key] !== "string" || !HEX_64.test(value[key] as string))
      return `statement '${key}' must be 64 hex digits`;
  if (typeof value.clockSynced !== "boolean") return "statement 'clockSynced' must be true or false";
  const totals = value.totals;
  if (!isPlainObject(totals) || fieldsDefect(totals, TOTAL_FIELDS, "statement totals") !== undefined)
    return `statement 'totals' must have exactly ${TOTAL_FIELDS.join(", ")}`;
  for (const key of TOTAL_FIELDS)
    if (typeof totals[key] !== "string" || !DECIMAL.test(totals[key] as string))
      return `statement total '${key}' must be a decimal integer string`;
  if (!isPlainObject(value.rights)) return "statement 'rights' must be an object";
  for (const [k, v] of Object.entries(value.rights))
    if (typeof v !== "string" || !DECIMAL.test(v)) return `statement rights '${k}' must be a decimal integer string`;
  return undefined;
}

export { GENESIS_PREV };
