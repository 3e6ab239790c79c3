// Ledger records: one unit of work the box claims, as one JSON payload in a CRC-framed log (agent/durable), chained
// by hash. A record's hash is BLAKE3 of its payload bytes exactly as stored, so nothing is re-encoded to check it,
// and each record names the hash of the one before (`prev`): a record changed, removed or inserted anywhere breaks
// the chain at that point. The first record of a ledger has prev = 64 zeros.
//
// Amounts (bytes, byte-seconds) are decimal strings: one record's never pass 2^53, but the same form as the
// statements' totals (which can) keeps one code path, bigint, for every sum. No floats anywhere.
import { blake3 } from "../kernels/blake3.js";
import { describeType, describeValue } from "../util/describe.js";
import { isPlainObject, isUint } from "../util/guards.js";
import { toHex } from "../util/hex.js";
import { TASK_ID } from "../protocol/compute-result.js";
import { RIGHTS_ID, SERIAL } from "../protocol/order.js";

export const GENESIS_PREV = "0".repeat(64);
const HEX_64 = /^[0-9a-f]{64}$/;
const DECIMAL = /^(0|[1-9][0-9]{0,38})$/;
const NONCE = /^[A-Za-z0-9_-]{1,128}$/;
const MAX_TOKEN = 4096;

/** Bytes served under one order: the best (largest) client receipt backs them (agent/serve's ReceiptBook). */
export interface ServeWork {
  kind: "serve";
  serial: string;
  rightsId: string;
  objectId: string;
  /** Bytes the receipt covers that earlier serve records of this order did not: the new part only. */
  bytes: string;
  /** The client's receipt token (cumulative: its count covers this record and the order's earlier ones). */
  receipt: string;
  /** The order token the receipt is under. */
  order: string;
}

/** Bytes held for part of a window: units are byte-seconds (bytes x seconds held). */
export interface StoreWork {
  kind: "store";
  objectId: string;
  bytes: string;
  seconds: number;
}

/** A storage challenge answered (or failed) for the fleet. */
export interface ProofWork {
  kind: "proof";
  nonce: string;
  objectId: string;
  ok: boolean;
  ms: number;
}

/** Bytes fetched for a task: counted, normally unpaid. */
export interface FetchWork {
  kind: "fetch";
  objectId: string;
  bytes: string;
}

/**
 * A compute task done (agent/compute): the unit is CPU milliseconds. The fleet pays it only when the task's quorum
 * agrees with outputId (agent/fleet/quorum.ts); the device's signed result token carries the same fields.
 */
export interface ComputeWork {
  kind: "compute";
  taskId: string;
  moduleId: string;
  inputId: string;
  outputId: string;
  /** CPU milliseconds of the task's thread, a decimal string like every amount. */
  cpuMs: string;
  wallMs: number;
}

/** What a feature hands the ledger. */
export type Work = ServeWork | StoreWork | ProofWork | FetchWork | ComputeWork;
export type WorkKind = Work["kind"];
export const WORK_KINDS: readonly WorkKind[] = ["serve", "store", "proof", "fetch", "compute"];

/** A record as stored: the work, its place in the chain and when it was written (epoch ms, the box's clock). */
export type LedgerRecord = Work & { v: 1; seq: number; at: number; prev: string };

const FIELDS: Record<WorkKind, readonly string[]> = {
  serve: ["serial", "rightsId", "objectId", "bytes", "receipt", "order"],
  store: ["objectId", "bytes", "seconds"],
  proof: ["nonce", "objectId", "ok", "ms"],
  fetch: ["objectId", "bytes"],
  compute: ["taskId", "moduleId", "inputId", "outputId", "cpuMs", "wallMs"],
};
const COMMON = ["v", "seq", "at", "prev", "kind"];

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** The record's payload: its JSON, fields in a fixed order (the hash is over these bytes). */
export function encodeRecord(record: LedgerRecord): Uint8Array {
  const defect = recordDefect(record);
  if (defect !== undefined) throw new RangeError(defect);
  const ordered: Record<string, unknown> = {};
  for (const key of [...COMMON, ...FIELDS[record.kind]])
    ordered[key] = (record as unknown as Record<string, unknown>)[key];
  return encoder.encode(JSON.stringify(ordered));
}

/** BLAKE3 of a payload, hex: what the next record's `prev` names, and a leaf of the statement's Merkle tree. */
export function recordHash(payload: Uint8Array): string {
  return toHex(blake3(payload));
}

/** A payload read back: the record, or a one-line reason it is not one. */
export function decodeRecord(payload: Uint8Array): LedgerRecord | string {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(payload)) as unknown;
  } catch {
    return "not UTF-8 JSON";
  }
  if (!isPlainObject(value)) return `a ${describeType(value)}, not an object`;
  const defect = recordDefect(value);
  return defect ?? (value as unknown as LedgerRecord);
}

/** The first thing wrong with a record, or undefined. */
export function recordDefect(value: unknown): string | undefined {
  if (!isPlainObject(value)) return `record is ${describeType(value)}, not an object`;
  const kind = value.kind;
  if (typeof kind !== "string" || !Object.hasOwn(FIELDS, kind)) return `record kind ${describeValue(kind)} is unknown`;
  const fields = [...COMMON, ...FIELDS[kind as WorkKind]];
  for (const key of Object.keys(value)) if (!fields.includes(key)) return `${kind} record has an unknown field ${key}`;
  for (const key of fields) if (!Object.hasOwn(value, key)) return `${kind} record has no '${key}'`;
  if (value.v !== 1) return `record version ${describeValue(value.v)} is not supported (expected 1)`;
  if (!isUint(value.seq)) return `record 'seq' must be a non-negative integer`;
  if (!isUint(value.at)) return `record 'at' must be epoch milliseconds`;
  if (typeof value.prev !== "string" || !HEX_64.test(value.prev))
    return `record 'prev' must be 64 lowercase hex digits`;
  const hex = (key: string) =>
    typeof value[key] === "string" && HEX_64.test(value[key]) ? undefined : `${kind} '${key}' must be 64 hex digits`;
  const amount = (key: string) =>
    typeof value[key] === "string" && DECIMAL.test(value[key])
      ? undefined
      : `${kind} '${key}' must be a decimal integer string`;
  switch (kind as WorkKind) {
    case "serve":
      if (typeof value.serial !== "string" || !SERIAL.test(value.serial))
        return "serve 'serial' is not an order serial";
      if (typeof value.rightsId !== "string" || !RIGHTS_ID.test(value.rightsId))
        return "serve 'rightsId' is not a rights id";
      for (const key of ["receipt", "order"])
        if (typeof value[key] !== "string" || value[key].length === 0 || value[key].length > MAX_TOKEN)
          return `serve '${key}' must be a token of at most ${MAX_TOKEN} characters`;
      return hex("objectId") ?? amount("bytes");
    case "store":
      if (!isUint(value.seconds)) return "store 'seconds' must be a non-negative integer";
      return hex("objectId") ?? amount("bytes");
    case "proof":
      if (typeof value.nonce !== "string" || !NONCE.test(value.nonce)) return "proof 'nonce' is not a nonce";
      if (typeof value.ok !== "boolean") return "proof 'ok' must be true or false";
      if (!isUint(value.ms)) return "proof 'ms' must be a non-negative integer";
      return hex("objectId");
    case "fetch":
      return hex("objectId") ?? amount("bytes");
    case "compute":
      if (typeof value.taskId !== "string" || !TASK_ID.test(value.taskId)) return "compute 'taskId' is not a task id";
      if (!isUint(value.wallMs)) return "compute 'wallMs' must be a non-negative integer";
      return hex("moduleId") ?? hex("inputId") ?? hex("outputId") ?? amount("cpuMs");
  }
}
