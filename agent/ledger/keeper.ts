// The ledger at work in the agent: the composition root hands it the box's work as it happens (proofs answered,
// fetches done) and, at each window's end (UTC-aligned), it adds what is counted per window (bytes served under each
// order beyond what the ledger already holds, backed by the order's best receipt; bytes held per object), closes the
// window into a signed statement and hands the statement out (the agent sends it as a `ledger.statement` event,
// which the outbox never drops). It knows the receipt book's records and the store's objects only by their shape.
import type { Signer } from "../protocol/envelope.js";
import { errorLine } from "../util/errors.js";
import type { KeptStatement, Ledger } from "./ledger.js";
import type { ComputeWork } from "./record.js";

/** A receipt as the box keeps it (agent/serve ReceiptBook's records have these fields). */
export interface KeptReceipt {
  serial: string;
  bytes: number;
  receipt: string;
  order: string;
  objectId: string;
  rightsId: string;
}

export interface HeldObject {
  id: string;
  length: number;
  addedAt: number;
}

export interface LedgerKeeperOptions {
  ledger: Ledger;
  windowSeconds: number;
  signer: Signer;
  now: () => number;
  /** Whether the clock can be trusted (set by NTP); goes into each statement. */
  clockSynced: () => boolean;
  receipts: () => readonly KeptReceipt[];
  objects: () => readonly HeldObject[];
  /** A statement made durable: send it. */
  onStatement: (kept: KeptStatement) => void;
  warn: (line: string) => void;
  setTimer?: (fn: () => void, ms: number) => { unref?(): void };
  clearTimer?: (t: unknown) => void;
}

export class LedgerKeeper {
  private timer: unknown;
  private closing: Promise<void> = Promise.resolve();
  private stopped = false;
  /** Objects counted up to here already (the last window closed, or the start). */
  private countedUpTo: number;

  constructor(private readonly options: LedgerKeeperOptions) {
    this.countedUpTo = this.windowStart(options.now());
  }

  get windowMs(): number {
    return this.options.windowSeconds * 1000;
  }

  /** The start of the window `at` falls in. */
  windowStart(at: number): number {
    return Math.floor(at / this.windowMs) * this.windowMs;
  }

  start(): void {
    this.arm();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    (this.options.clearTimer ?? clearTimeout)(this.timer as NodeJS.Timeout);
    await this.closing;
  }

  /** A proof answered (or failed) for the fleet. */
  proof(outcome: { objectId: string; nonce: string; ok: boolean; ms: number }): void {
    this.append({ kind: "proof", ...outcome });
  }

  /** A fetch task done: its bytes. */
  fetched(objectId: string, bytes: number): void {
    this.append({ kind: "fetch", objectId, bytes: String(bytes) });
  }

  /**
   * A compute task done (agent/compute): resolves once its record is durable, so the task queue ends the task only
   * after it (a power cut in between runs the task again, and `hasCompute` keeps the record from being claimed twice).
   */
  async computed(work: Omit<ComputeWork, "kind">): Promise<void> {
    await this.options.ledger.append({ kind: "compute", ...work });
  }

  /** Whether a compute record of `taskId` is in the window still open (a task ended by a power cut right after it). */
  hasCompute(taskId: string): boolean {
    return this.options.ledger.openRecords().some((r) => r.record.kind === "compute" && r.record.taskId === taskId);
  }

  /** Closes the window that began at `start` (the timer does this at each window's end). */
  closeWindow(start: number): Promise<void> {
    this.closing = this.closing
      .then(() => this.close(start))
      .catch((err) => this.options.warn(`ledger: ${errorLine(err)}`));
    return this.closing;
  }

  private append(work: Parameters<Ledger["append"]>[0]): void {
    this.options.ledger
      .append(work)
      .catch((err) => this.options.warn(`ledger: ${work.kind} not recorded: ${errorLine(err)}`));
  }

  private arm(): void {
    if (this.stopped) return;
    const now = this.options.now();
    const end = this.windowStart(now) + this.windowMs;
    // A little past the boundary, so that the window that ended is the one before `now`.
    const t = (this.options.setTimer ?? setTimeout)(
      () => {
        void this.closeWindow(this.windowStart(this.options.now()) - this.windowMs).then(() => this.arm());
      },
      end - now + 50,
    );
    t.unref?.();
    this.timer = t;
  }

  private async close(start: number): Promise<void> {
    const { ledger } = this.options;
    const end = start + this.windowMs;
    // Served: each order's best receipt beyond what the ledger holds for it.
    const appends: Promise<unknown>[] = [];
    for (const r of this.options.receipts()) {
      const delta = BigInt(r.bytes) - ledger.servedBytes(r.serial);
      if (delta <= 0n) continue;
      appends.push(
        ledger.append({
          kind: "serve",
          serial: r.serial,
          rightsId: r.rightsId,
          objectId: r.objectId,
          bytes: delta.toString(),
          receipt: r.receipt,
          order: r.order,
        }),
      );
    }
    // Held: every object, for the part of [countedUpTo, end) it was there.
    const from = Math.max(this.countedUpTo, start);
    for (const o of this.options.objects()) {
      const seconds = Math.floor((end - Math.max(from, o.addedAt)) / 1000);
      if (seconds > 0) appends.push(ledger.append({ kind: "store", objectId: o.id, bytes: String(o.length), seconds }));
    }
    this.countedUpTo = end;
    await Promise.all(appends);
    const kept = await ledger.closeWindow(
      { start, seconds: this.options.windowSeconds },
      this.options.signer,
      this.options.clockSynced(),
    );
    this.options.onStatement(kept);
  }
}
