// The work ledger on the box: records appended to a hash chain (record.ts) in CRC-framed logs (agent/durable), and
// the signed statements (statement.ts) that close each window over them.
//
// Files, in the ledger's directory:
//   records-000001.log, records-000002.log, ...  record segments; only the last is appended to. A new segment is
//                                                begun after a statement once the current one passes SEGMENT_BYTES
//                                                (appends wait while it is); a statement's records run from the
//                                                segment of its first record on.
//   statements.log                               one record per statement: {"segment": N, "envelope": "<JSON>"}
//
// Durability: append() resolves once its record is fsynced (concurrent appends share one write and one fsync: the
// record log's group commit), so an acknowledged record survives a power cut; a torn tail is cut off at open. A
// statement is durable before closeWindow() resolves; records appended while it is being made belong to the next.
// A record that is whole (its CRC holds) but breaks the chain is not repaired: open() reports it in `problems`,
// appending goes on after the last record, and every later check (the fleet's, `sharenode ledger verify`) sees it.
import { mkdir, readdir } from "node:fs/promises";
import { join } from "node:path";
import { RecordLog, readRecordLog } from "../durable/record-log.js";
import { errorLine } from "../util/errors.js";
import type { Signer } from "../protocol/envelope.js";
import { merklePath } from "./merkle.js";
import { decodeRecord, encodeRecord, GENESIS_PREV, recordHash, type LedgerRecord, type Work } from "./record.js";
import { buildStatement, signStatement, statementHash, type StatementBody } from "./statement.js";

/** A segment past this many bytes is followed by a new one after the next statement. */
export const SEGMENT_BYTES = 8 * 1024 * 1024;
const STATEMENTS_FILE = "statements.log";
const SEGMENT = /^records-(\d{6})\.log$/;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

export const segmentName = (n: number): string => `records-${String(n).padStart(6, "0")}.log`;

export interface LedgerOptions {
  dir: string;
  deviceId: string;
  now?: () => number;
  /** For tests: a smaller segment size. */
  segmentBytes?: number;
}

export interface KeptStatement {
  /** The signed envelope's bytes (as sent and as hashed into the next statement's prevStatement). */
  envelope: Uint8Array;
  statement: StatementBody;
  segment: number;
  /** statementHash(envelope), computed once. */
  hash: string;
}

export interface HashedRecord {
  record: LedgerRecord;
  hash: string;
  /** The segment the record was written to (records of the open window only). */
  segment?: number;
}

export interface OpenedLedger {
  ledger: Ledger;
  /** Bytes cut off torn tails (the records log's and the statements log's), when any. */
  recovered: string[];
  /** Whole records or statements that do not fit the chain: evidence of tampering or a bug, one line each. */
  problems: string[];
}

export class Ledger {
  private records: RecordLog;
  private segment: number;
  /** Records since the last statement, with their hashes, in seq order (durable ones only). */
  private open: HashedRecord[] = [];
  private nextSeq: number;
  private head: string;
  private readonly kept: KeptStatement[];
  private pending = new Set<Promise<unknown>>();
  /** A new segment being begun (closeWindow): appends wait for it. */
  private rotating: Promise<void> | undefined;
  /** Serve bytes claimed per order serial over the whole ledger (what a receipt's new bytes are counted from). */
  private readonly served: Map<string, bigint>;
  private readonly now: () => number;
  private readonly segmentBytes: number;

  private constructor(
    private readonly options: LedgerOptions,
    private readonly statementsLog: RecordLog,
    records: RecordLog,
    segment: number,
    state: {
      open: HashedRecord[];
      nextSeq: number;
      head: string;
      kept: KeptStatement[];
      served: Map<string, bigint>;
    },
  ) {
    this.records = records;
    this.segment = segment;
    this.open = state.open;
    this.nextSeq = state.nextSeq;
    this.head = state.head;
    this.kept = state.kept;
    this.served = state.served;
    this.now = options.now ?? Date.now;
    this.segmentBytes = options.segmentBytes ?? SEGMENT_BYTES;
  }

  static async open(options: LedgerOptions): Promise<OpenedLedger> {
    const { dir } = options;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const recovered: string[] = [];
    const problems: string[] = [];
    const st = await RecordLog.open(join(dir, STATEMENTS_FILE), { mode: 0o600 });
    if (st.recovery)
      recovered.push(`${STATEMENTS_FILE}: ${st.recovery.droppedBytes} bytes cut (${st.recovery.reason})`);
    const kept: KeptStatement[] = [];
    let prevStatement = GENESIS_PREV;
    for (const raw of st.records) {
      const entry = parseStatementEntry(raw);
      if (typeof entry === "string") {
        problems.push(`statement ${kept.length}: ${entry}`);
        continue;
      }
      if (entry.statement.prevStatement !== prevStatement)
        problems.push(`statement ${kept.length} does not follow the one before it (prevStatement differs)`);
      prevStatement = entry.hash;
      kept.push(entry);
    }
    const segments = (await readdir(dir))
      .map((f) => SEGMENT.exec(f))
      .flatMap((m) => (m ? [Number(m[1])] : []))
      .sort((a, b) => a - b);
    const segment = segments.at(-1) ?? 1;
    try {
      const opened = await RecordLog.open(join(dir, segmentName(segment)), { mode: 0o600 });
      if (opened.recovery)
        recovered.push(
          `${segmentName(segment)}: ${opened.recovery.droppedBytes} bytes cut (${opened.recovery.reason})`,
        );
      // Every record, segment by segment (older segments are read, never opened): serve bytes per order over the
      // whole ledger, and the records after the last statement (the open window, which may begin in an older
      // segment than the current one).
      const last = kept.at(-1);
      let head = last?.statement.chainHead ?? GENESIS_PREV;
      let nextSeq = last ? last.statement.lastSeq + 1 : 0;
      const open: HashedRecord[] = [];
      const served = new Map<string, bigint>();
      for (const n of segments.length > 0 ? segments : [segment]) {
        let raws: Uint8Array[];
        if (n === segment) raws = opened.records;
        else {
          const older = await readRecordLog(join(dir, segmentName(n)));
          if (!older.ok) {
            problems.push(older.reason);
            continue;
          }
          raws = older.records;
        }
        for (const raw of raws) {
          const record = decodeRecord(raw);
          if (typeof record === "string") {
            problems.push(`${segmentName(n)}: a whole record that is not a ledger record (${record})`);
            continue;
          }
          if (record.kind === "serve")
            served.set(record.serial, (served.get(record.serial) ?? 0n) + BigInt(record.bytes));
          if (last && record.seq <= last.statement.lastSeq) continue;
          const hash = recordHash(raw);
          if (record.seq !== nextSeq) problems.push(`record ${record.seq} where ${nextSeq} was due`);
          if (record.prev !== head) problems.push(`record ${record.seq} does not follow the one before it`);
          open.push({ record, hash, segment: n });
          head = hash;
          nextSeq = record.seq + 1;
        }
      }
      const ledger = new Ledger(options, st.log, opened.log, segment, { open, nextSeq, head, kept, served });
      return { ledger, recovered, problems };
    } catch (err) {
      await st.log.close().catch(() => {});
      throw err;
    }
  }

  /** The next record's seq and the chain's head (the last record's hash). */
  get chain(): { nextSeq: number; head: string } {
    return { nextSeq: this.nextSeq, head: this.head };
  }

  /** The statements kept, oldest first. */
  statements(): readonly KeptStatement[] {
    return this.kept;
  }

  /** Serve bytes the ledger holds for an order serial (appended records count once issued). */
  servedBytes(serial: string): bigint {
    return this.served.get(serial) ?? 0n;
  }

  /** Records appended since the last statement (durable ones). */
  openRecords(): readonly HashedRecord[] {
    return this.open;
  }

  /**
   * Appends one record of work; resolves with its seq and hash once it is durable. Records are chained in the order
   * of the calls; concurrent calls share one fsync.
   */
  append(work: Work): Promise<HashedRecord> {
    const record = { ...work, v: 1, seq: this.nextSeq, at: this.now(), prev: this.head } as LedgerRecord;
    const payload = encodeRecord(record);
    const hash = recordHash(payload);
    this.nextSeq++;
    this.head = hash;
    if (record.kind === "serve")
      this.served.set(record.serial, (this.served.get(record.serial) ?? 0n) + BigInt(record.bytes));
    // While a new segment is being begun, appends wait for it (the old one is being closed).
    const entry: HashedRecord = { record, hash };
    const writeNow = () => {
      entry.segment = this.segment;
      return this.records.append(payload);
    };
    const write = this.rotating ? this.rotating.then(writeNow) : writeNow();
    const done = write.then(() => {
      // The log resolves appends in the order they were made, so this is nearly always the end.
      let at = this.open.length;
      while (at > 0 && this.open[at - 1]!.record.seq > record.seq) at--;
      this.open.splice(at, 0, entry);
      return entry;
    });
    this.track(done);
    return done;
  }

  /**
   * Closes a window: a statement over every record appended (and durable) since the last one, signed with the
   * device key and made durable. Resolves with it; its envelope is what goes out as an event.
   */
  async closeWindow(
    window: { start: number; seconds: number },
    signer: Signer,
    clockSynced: boolean,
  ): Promise<KeptStatement> {
    // Appends already issued are part of this window: wait for them.
    await Promise.allSettled([...this.pending]);
    const covered = this.open;
    const last = this.kept.at(-1);
    const firstSeq = last ? last.statement.lastSeq + 1 : 0;
    const upTo = covered.findIndex((r, i) => r.record.seq !== firstSeq + i);
    // A copy: appends that become durable while the statement is written join this.open, not this statement.
    const records = covered.slice(0, upTo < 0 ? covered.length : upTo);
    const statement = buildStatement({
      deviceId: this.options.deviceId,
      window,
      records,
      firstSeq,
      headBefore: last?.statement.chainHead ?? GENESIS_PREV,
      prevStatement: last ? last.hash : GENESIS_PREV,
      clockSynced,
    });
    const envelope = signStatement(statement, signer);
    // The segment of the statement's first record: its records run from there (a new segment may begin inside).
    const kept: KeptStatement = {
      envelope,
      statement,
      segment: records[0]?.segment ?? this.segment,
      hash: statementHash(envelope),
    };
    await this.statementsLog.append(
      encoder.encode(JSON.stringify({ segment: kept.segment, envelope: decoder.decode(envelope) })),
    );
    this.kept.push(kept);
    this.open = this.open.slice(records.length);
    if (this.records.size > this.segmentBytes && !this.rotating) {
      // Set before the first await: every append from here on waits for the new segment.
      this.rotating = this.rotate().finally(() => (this.rotating = undefined));
      await this.rotating;
    }
    return kept;
  }

  /**
   * The records a kept statement covers, each with its Merkle path to the statement's recordsRoot, a page at a
   * time (page size `pageSize`).
   */
  async recordsOf(
    statementIndex: number,
    page = 0,
    pageSize = 100,
  ): Promise<{
    statement: KeptStatement;
    records: (HashedRecord & { index: number; path: string[] })[];
    pages: number;
  }> {
    const kept = this.kept[statementIndex];
    if (!kept) throw new RangeError(`no statement ${statementIndex} (${this.kept.length} kept)`);
    const { firstSeq, count } = kept.statement;
    const all = await this.readSegment(kept.segment, firstSeq, count);
    const hashes = all.map((r) => r.hash);
    const pages = Math.max(1, Math.ceil(count / pageSize));
    const from = page * pageSize;
    const records = all.slice(from, from + pageSize).map((r, i) => ({
      ...r,
      index: from + i,
      path: merklePath(hashes, from + i),
    }));
    return { statement: kept, records, pages };
  }

  /** The kept statements of the window that starts at `start` (epoch ms), by index. */
  statementsOf(start: number): number[] {
    const found: number[] = [];
    this.kept.forEach((k, i) => {
      if (k.statement.window.start === start) found.push(i);
    });
    return found;
  }

  /** Every serve record of an order serial, over every segment (read from the files; for audits, not hot paths). */
  async serveRecords(serial: string): Promise<HashedRecord[]> {
    const out: HashedRecord[] = [];
    const segments = (await readdir(this.options.dir))
      .map((f) => SEGMENT.exec(f))
      .flatMap((m) => (m ? [Number(m[1])] : []))
      .sort((a, b) => a - b);
    for (const n of segments) {
      const read = await readRecordLog(join(this.options.dir, segmentName(n)));
      if (!read.ok) throw new Error(read.reason);
      for (const raw of read.records) {
        const record = decodeRecord(raw);
        if (typeof record !== "string" && record.kind === "serve" && record.serial === serial)
          out.push({ record, hash: recordHash(raw) });
      }
    }
    return out;
  }

  async close(): Promise<void> {
    await this.rotating?.catch(() => {});
    await Promise.allSettled([...this.pending]);
    await this.records.close();
    await this.statementsLog.close();
  }

  private track(p: Promise<unknown>): void {
    this.pending.add(p);
    const drop = () => this.pending.delete(p);
    p.then(drop, drop);
  }

  /** A statement's records: from the segment of its first record on, as far as they go. */
  private async readSegment(segment: number, firstSeq: number, count: number): Promise<HashedRecord[]> {
    const out: HashedRecord[] = [];
    for (let n = segment; n <= this.segment && out.length < count; n++) {
      const read = await readRecordLog(join(this.options.dir, segmentName(n)));
      if (!read.ok) throw new Error(read.reason);
      for (const raw of read.records) {
        const record = decodeRecord(raw);
        if (typeof record === "string") continue;
        if (record.seq >= firstSeq && record.seq < firstSeq + count) out.push({ record, hash: recordHash(raw) });
      }
    }
    if (out.length !== count)
      throw new Error(
        `the ledger holds ${out.length} of the statement's ${count} records (from ${segmentName(segment)})`,
      );
    return out;
  }

  private async rotate(): Promise<void> {
    const next = this.segment + 1;
    const opened = await RecordLog.open(join(this.options.dir, segmentName(next)), { mode: 0o600 });
    await this.records.close().catch((err) => {
      throw new Error(`closing ${segmentName(this.segment)}: ${errorLine(err)}`);
    });
    this.records = opened.log;
    this.segment = next;
  }
}

function parseStatementEntry(raw: Uint8Array): KeptStatement | string {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(raw)) as unknown;
  } catch {
    return "not JSON";
  }
  const v = value as { segment?: unknown; envelope?: unknown };
  if (typeof v.segment !== "number" || typeof v.envelope !== "string") return "not a statement entry";
  const envelope = encoder.encode(v.envelope);
  try {
    const body = JSON.parse((JSON.parse(v.envelope) as { body: string }).body) as StatementBody;
    return { envelope, statement: body, segment: v.segment, hash: statementHash(envelope) };
  } catch {
    return "its envelope is not JSON";
  }
}
