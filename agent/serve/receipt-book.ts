// The receipt book: the largest receipt each order's client signed, kept durably, for the ledger (issue 12) to
// settle. A CRC-framed record log (agent/durable/record-log.ts): a receipt is acknowledged (its request answered,
// the window credited) only after its record is fsynced, so a power cut keeps every acknowledged receipt.
//
// Record: the UTF-8 JSON of one receipt, complete on its own, so a reader needs no other record or file:
//   {"serial":S,"bytes":N,"receipt":"<token>","order":"<token>","objectId":O,"clientKey":K,"rightsId":R,
//    "maxBytes":M,"expiresAt":T,"at":<epoch ms received>}
// Both tokens are as the client sent them (agent/protocol/order.ts, receipt.ts): with the fleet key, anyone can
// check a record with verifyServed(). Only larger receipts are appended; replay keeps the largest per serial, and
// compaction (when the log holds over twice the serials it needs, plus slack) rewrites one record per serial.
import { RecordLog } from "../durable/record-log.js";
import type { Order } from "../protocol/order.js";

export interface ReceiptRecord {
  serial: string;
  bytes: number;
  receipt: string;
  order: string;
  objectId: string;
  clientKey: string;
  rightsId: string;
  maxBytes: number;
  expiresAt: number;
  at: number;
}

const COMPACT_SLACK = 1000;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class ReceiptBook {
  private log: RecordLog | undefined;
  private readonly largest = new Map<string, ReceiptRecord>();
  private records = 0;
  private compacting: Promise<void> | undefined;
  /** Appends not yet durable: a rewrite started now would drop them, so compaction waits for none. */
  private inFlight = 0;

  constructor(private readonly path: string) {}

  async start(): Promise<{ droppedBytes: number } | undefined> {
    const opened = await RecordLog.open(this.path, { mode: 0o600 });
    this.log = opened.log;
    for (const raw of opened.records) {
      let r: ReceiptRecord;
      try {
        r = JSON.parse(decoder.decode(raw)) as ReceiptRecord;
      } catch {
        continue; // A CRC-valid record that is not JSON was never written by us: skipped, not fatal.
      }
      if (typeof r.serial !== "string" || typeof r.bytes !== "number") continue;
      this.records++;
      const had = this.largest.get(r.serial);
      if (!had || r.bytes > had.bytes) this.largest.set(r.serial, r);
    }
    return opened.recovery ? { droppedBytes: opened.recovery.droppedBytes } : undefined;
  }

  async stop(): Promise<void> {
    await this.compacting?.catch(() => {});
    await this.log?.close();
    this.log = undefined;
  }

  /** The largest receipted bytes under `serial` (0 when none). */
  bytes(serial: string): number {
    return this.largest.get(serial)?.bytes ?? 0;
  }

  get(serial: string): ReceiptRecord | undefined {
    return this.largest.get(serial);
  }

  /** Every order's largest receipt (for the ledger and the console). */
  all(): ReceiptRecord[] {
    return [...this.largest.values()];
  }

  /**
   * Keeps a verified receipt if it is the largest for its order: resolves once it is durable (and answers the
   * largest receipted bytes then). A smaller or equal one is not written.
   */
  async add(order: Order, orderToken: string, bytes: number, receiptToken: string, at: number): Promise<number> {
    const log = this.log;
    if (!log) throw new Error("the receipt book is stopped");
    if (bytes <= this.bytes(order.serial)) return this.bytes(order.serial);
    const record: ReceiptRecord = {
      serial: order.serial,
      bytes,
      receipt: receiptToken,
      order: orderToken,
      objectId: order.objectId,
      clientKey: order.clientKey,
      rightsId: order.rightsId,
      maxBytes: order.maxBytes,
      expiresAt: order.expiresAt,
      at,
    };
    this.inFlight++;
    try {
      await log.append(encoder.encode(JSON.stringify(record)));
    } finally {
      this.inFlight--;
    }
    this.records++;
    // Another receipt may have become durable meanwhile: the largest wins, whatever the order of fsyncs.
    if (bytes > this.bytes(order.serial)) this.largest.set(order.serial, record);
    if (this.records > 2 * this.largest.size + COMPACT_SLACK && !this.compacting && this.inFlight === 0) {
      this.compacting = this.compact().finally(() => (this.compacting = undefined));
    }
    return this.bytes(order.serial);
  }

  private async compact(): Promise<void> {
    const log = this.log;
    if (!log) return;
    const keep = [...this.largest.values()];
    await log.rewrite(keep.map((r) => encoder.encode(JSON.stringify(r))));
    this.records = keep.length;
  }
}
