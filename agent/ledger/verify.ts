// Checking a ledger from its files alone, as the owner does on the box (`sharenode ledger verify`) or on a PC with
// an export, and as the fleet does with what the box sent: the chain of records across every segment, each
// statement's signature, its place in the statements' chain, its Merkle root and its totals recomputed from the
// records, and, with the fleet's public key, every serve record's order and client receipt. Reads only; each
// problem is one line naming the record or statement.
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { readRecordLog } from "../durable/record-log.js";
import { verifyServed } from "../protocol/receipt.js";
import { decodeRecord, GENESIS_PREV, recordHash, type LedgerRecord } from "./record.js";
import { buildStatement, openStatement, statementHash, type StatementBody } from "./statement.js";

const SEGMENT = /^records-(\d{6})\.log$/;
const decoder = new TextDecoder();

export interface LedgerCheck {
  ok: boolean;
  problems: string[];
  records: number;
  statements: number;
  /** Serve records whose order and receipt were checked (0 without the fleet key). */
  receiptsChecked: number;
}

export async function verifyLedger(
  dir: string,
  devicePublicKey: Uint8Array,
  fleetPublicKey?: Uint8Array | string,
): Promise<LedgerCheck> {
  const problems: string[] = [];
  const segments = (await readdir(dir))
    .map((f) => SEGMENT.exec(f))
    .flatMap((m) => (m ? [Number(m[1])] : []))
    .sort((a, b) => a - b);
  // Every record in seq order, with its hash.
  const all: { record: LedgerRecord; hash: string }[] = [];
  let head = GENESIS_PREV;
  for (const n of segments) {
    const name = `records-${String(n).padStart(6, "0")}.log`;
    const read = await readRecordLog(join(dir, name));
    if (!read.ok) {
      problems.push(read.reason);
      continue;
    }
    // The last segment's tail may be an append still being written by a running agent (or cut by a power cut,
    // which the agent drops at its next start): only an older segment's torn tail is a problem.
    if (read.tornBytes > 0 && n !== segments.at(-1))
      problems.push(`${name}: a torn tail of ${read.tornBytes} bytes (${read.tornReason})`);
    for (const raw of read.records) {
      const record = decodeRecord(raw);
      if (typeof record === "string") {
        problems.push(`${name}: record ${all.length}: not a ledger record (${record})`);
        continue;
      }
      if (record.seq !== all.length) problems.push(`record ${record.seq} where ${all.length} was due`);
      if (record.prev !== head) problems.push(`record ${record.seq} does not follow the one before it (prev differs)`);
      head = recordHash(raw);
      all.push({ record, hash: head });
    }
  }

  // Serve records: the order is the fleet's, the receipt its client's, and no order claims more than its receipt.
  let receiptsChecked = 0;
  const claimed = new Map<string, bigint>();
  for (const { record } of all) {
    if (record.kind !== "serve") continue;
    const total = (claimed.get(record.serial) ?? 0n) + BigInt(record.bytes);
    claimed.set(record.serial, total);
    if (fleetPublicKey === undefined) continue;
    receiptsChecked++;
    const served = verifyServed(record.order, record.receipt, fleetPublicKey);
    if (!served.ok) {
      problems.push(`record ${record.seq}: ${served.reason}`);
      continue;
    }
    const { order, receipt } = served;
    if (order.serial !== record.serial || order.objectId !== record.objectId || order.rightsId !== record.rightsId)
      problems.push(`record ${record.seq}: its order does not match its serial, object or rightsId`);
    if (total > BigInt(receipt.bytes))
      problems.push(
        `record ${record.seq}: order ${record.serial} claims ${total} bytes in all, its receipt covers ${receipt.bytes}`,
      );
  }

  // Statements: signed by the device, chained, and each one's root and totals as its records give them.
  const read = await readRecordLog(join(dir, "statements.log"));
  let statements = 0;
  if (!read.ok) {
    if (!read.missing) problems.push(read.reason);
  } else {
    let prev = GENESIS_PREV;
    let nextSeq = 0;
    for (const raw of read.records) {
      const index = statements++;
      let envelope: Uint8Array;
      try {
        envelope = new TextEncoder().encode((JSON.parse(decoder.decode(raw)) as { envelope: string }).envelope);
      } catch {
        problems.push(`statement ${index}: not a statement entry`);
        continue;
      }
      const opened = openStatement(envelope, devicePublicKey);
      if (!opened.ok) {
        problems.push(`statement ${index}: ${opened.reason}`);
        continue;
      }
      const s = opened.statement;
      if (s.prevStatement !== prev) problems.push(`statement ${index} does not follow the one before it`);
      prev = statementHash(envelope);
      if (s.firstSeq !== nextSeq)
        problems.push(`statement ${index} starts at record ${s.firstSeq}, ${nextSeq} was due`);
      nextSeq = s.lastSeq + 1;
      const covered = all.slice(s.firstSeq, s.firstSeq + s.count);
      if (covered.length !== s.count || covered.some((r, i) => r.record.seq !== s.firstSeq + i)) {
        problems.push(`statement ${index}: records ${s.firstSeq}..${s.lastSeq} are not all in the ledger`);
        continue;
      }
      const again: StatementBody = buildStatement({
        deviceId: s.deviceId,
        window: s.window,
        records: covered,
        firstSeq: s.firstSeq,
        headBefore: s.firstSeq === 0 ? GENESIS_PREV : all[s.firstSeq - 1]!.hash,
        prevStatement: s.prevStatement,
        clockSynced: s.clockSynced,
      });
      if (again.recordsRoot !== s.recordsRoot)
        problems.push(`statement ${index}: recordsRoot does not match its records`);
      if (again.chainHead !== s.chainHead) problems.push(`statement ${index}: chainHead does not match its records`);
      if (JSON.stringify(again.totals) !== JSON.stringify(s.totals))
        problems.push(`statement ${index}: totals do not match its records`);
      if (JSON.stringify(again.rights) !== JSON.stringify(s.rights))
        problems.push(`statement ${index}: per-rightsId totals do not match its records`);
    }
  }
  return { ok: problems.length === 0, problems, records: all.length, statements, receiptsChecked };
}
