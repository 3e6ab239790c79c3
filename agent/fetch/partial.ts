// A fetch in progress on the data disk: the bytes received so far, at their offsets, and a durable account of
// which blocks are in (so a restart resumes from there). Nothing here is an object: the store ingests the file
// only once the whole object is verified (agent/tasks).
//
// Files, in the directory the caller gives (the agent's `<dataDir>/fetch/`: not the store's tmp/, which the
// store empties at every start):
//   <id>.part    the object's bytes at their offsets; blocks not yet in read as zeros (a sparse file)
//   <id>.obao    the outboard once it checked out against the id (written atomically)
//   <id>.log     a record log (agent/durable/record-log.ts) of JSON records:
//                {"k":"meta","block":B,"mode":"groups"|"whole","length":L}, first; then
//                {"k":"in","r":[[first,end],...]}: blocks [first, end) are in (block indices, end exclusive)
//                {"k":"rc","s":SERIAL,"b":BYTES}: the receipt count of a box's order (fetcher.ts, "Receipts"):
//                bytes taken so far under order SERIAL; the largest per serial counts. Written before a receipt
//                with that count leaves the box, and kept across a fresh start and a reset: it never goes down.
//
// In "groups" mode a block is a group that checked out against the outboard: verified. In "whole" mode (no
// outboard) a block only arrived: the whole object is checked at the end. A checkpoint fsyncs the .part file
// before it appends the record naming its blocks, so a block named in the log is on disk. Blocks received after
// the last checkpoint are fetched again after a crash: checkpoints are batched (agent/tasks decides when) because
// an fsync per 16 KiB group would cost an SD card more than the download.
import { open, readFile, rm, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { removeStaleTemps, writeAll, writeFileAtomic } from "../durable/atomic.js";
import { RecordLog } from "../durable/record-log.js";

export type PartialMode = "groups" | "whole";

interface Meta {
  k: "meta";
  block: number;
  mode: PartialMode;
  length: number;
}

export class PartialObject {
  /** Blocks in (verified, in "groups" mode) in memory, including those not yet checkpointed. */
  private readonly have: Uint8Array;
  /** Blocks named in the log: on disk and durable. */
  private readonly durable: Uint8Array;
  private haveCount = 0;
  private durableCount = 0;
  private closed = false;
  /** Receipt counts by order serial, as durable in the log. */
  private readonly receipts = new Map<string, number>();

  private constructor(
    readonly objectId: string,
    readonly length: number,
    readonly blockBytes: number,
    readonly mode: PartialMode,
    readonly paths: { part: string; outboard: string; log: string },
    private readonly fh: FileHandle,
    private log: RecordLog,
  ) {
    const blocks = Math.max(1, Math.ceil(length / blockBytes));
    this.have = new Uint8Array(blocks);
    this.durable = new Uint8Array(blocks);
  }

  static pathsFor(dir: string, objectId: string): { part: string; outboard: string; log: string } {
    return {
      part: join(dir, `${objectId}.part`),
      outboard: join(dir, `${objectId}.obao`),
      log: join(dir, `${objectId}.log`),
    };
  }

  /**
   * Opens (or creates) the partial fetch of `objectId`. Progress recorded with another block size, mode or length
   * is discarded (the task changed: say, an outboard appeared), and so is the .part file then.
   */
  static async open(
    dir: string,
    objectId: string,
    length: number,
    blockBytes: number,
    mode: PartialMode,
  ): Promise<PartialObject> {
    const paths = PartialObject.pathsFor(dir, objectId);
    await removeStaleTemps(paths.outboard);
    const opened = await RecordLog.open(paths.log);
    const records = opened.records.map((r) => JSON.parse(Buffer.from(r).toString("utf8")) as Record<string, unknown>);
    const meta = records[0] as Partial<Meta> | undefined;
    const same = meta?.k === "meta" && meta.block === blockBytes && meta.mode === mode && meta.length === length;
    const receipts = new Map<string, number>();
    for (const rec of records) {
      if (rec.k === "rc" && typeof rec.s === "string" && typeof rec.b === "number")
        receipts.set(rec.s, Math.max(receipts.get(rec.s) ?? 0, rec.b));
    }
    if (!same) {
      // A fresh start: the old bytes are dropped with their account, but not the receipt counts (the boxes did
      // send those bytes, and a receipt must never go down).
      await rm(paths.part, { force: true });
      await opened.log.rewrite([
        encode({ k: "meta", block: blockBytes, mode, length } satisfies Meta),
        ...receiptRecords(receipts),
      ]);
    }
    const fh = await open(paths.part, "a+").then(async (h) => {
      await h.close();
      return open(paths.part, "r+");
    });
    const partial = new PartialObject(objectId, length, blockBytes, mode, paths, fh, opened.log);
    for (const [serial, bytes] of receipts) partial.receipts.set(serial, bytes);
    if (same) {
      for (const rec of records.slice(1)) {
        if (rec.k !== "in" || !Array.isArray(rec.r)) continue;
        for (const [first, end] of rec.r as [number, number][]) {
          for (let b = first; b < end && b < partial.have.length; b++) partial.markDurable(b);
        }
      }
    }
    return partial;
  }

  get blocks(): number {
    return this.have.length;
  }

  has(block: number): boolean {
    return this.have[block] === 1;
  }

  /** Bytes of the blocks in (in memory). */
  get bytesIn(): number {
    return this.bytesOf(this.have, this.haveCount);
  }

  /** Bytes of the blocks the log names (survive a crash). */
  get bytesDurable(): number {
    return this.bytesOf(this.durable, this.durableCount);
  }

  get complete(): boolean {
    return this.haveCount === this.have.length;
  }

  /** Offset and length of block b. */
  span(b: number): { offset: number; length: number } {
    const offset = b * this.blockBytes;
    return { offset, length: Math.min(this.blockBytes, this.length - offset) };
  }

  /** Writes block b's bytes (already checked, in "groups" mode) and counts it in. */
  async put(b: number, bytes: Uint8Array): Promise<void> {
    await writeAll(this.fh, bytes, b * this.blockBytes);
    if (this.have[b] === 0) {
      this.have[b] = 1;
      this.haveCount++;
    }
  }

  /**
   * Makes every block in so far durable: fsync the bytes, then one record naming them. Returns the bytes added.
   * `receipts` (counts by order serial, read now, with the blocks) are written first, in the same append: a block
   * named durable is never missing from the durable count of the bytes taken.
   */
  async checkpoint(receipts?: ReadonlyMap<string, number>): Promise<number> {
    const ranges: [number, number][] = [];
    for (let b = 0; b < this.have.length; b++) {
      if (this.have[b] === 1 && this.durable[b] === 0) {
        const last = ranges[ranges.length - 1];
        if (last && last[1] === b) last[1] = b + 1;
        else ranges.push([b, b + 1]);
      }
    }
    const counts = [...(receipts ?? [])].filter(([serial, bytes]) => bytes > this.receipted(serial));
    if (ranges.length === 0 && counts.length === 0) return 0;
    const before = this.bytesDurable;
    if (ranges.length > 0) await this.fh.datasync();
    const records = counts.map(([s, b]) => encode({ k: "rc", s, b }));
    if (ranges.length > 0) records.push(encode({ k: "in", r: ranges }));
    await this.log.appendMany(records);
    for (const [serial, bytes] of counts) if (bytes > this.receipted(serial)) this.receipts.set(serial, bytes);
    for (const [first, end] of ranges) for (let b = first; b < end; b++) this.markDurable(b);
    return this.bytesDurable - before;
  }

  /** Forgets every block (a whole-mode object that did not hash to its id is fetched again); receipt counts stay. */
  async reset(): Promise<void> {
    this.have.fill(0);
    this.durable.fill(0);
    this.haveCount = 0;
    this.durableCount = 0;
    await this.log.rewrite([
      encode({ k: "meta", block: this.blockBytes, mode: this.mode, length: this.length }),
      ...receiptRecords(this.receipts),
    ]);
  }

  /** The durable receipt count of order `serial` (0 when none). */
  receipted(serial: string): number {
    return this.receipts.get(serial) ?? 0;
  }

  /** Makes `bytes` the receipt count of order `serial`, durably (a smaller count than the durable one is a no-op). */
  async noteReceipted(serial: string, bytes: number): Promise<void> {
    if (bytes <= this.receipted(serial)) return;
    await this.log.append(encode({ k: "rc", s: serial, b: bytes }));
    if (bytes > this.receipted(serial)) this.receipts.set(serial, bytes);
  }

  /** The bytes as they stand, in pieces, for hashing or for the store's ingest. */
  async *read(pieceBytes = 1024 * 1024): AsyncGenerator<Uint8Array> {
    for (let offset = 0; offset < this.length; offset += pieceBytes) {
      const want = Math.min(pieceBytes, this.length - offset);
      const buf = new Uint8Array(want);
      let got = 0;
      while (got < want) {
        const { bytesRead } = await this.fh.read(buf, got, want - got, offset + got);
        if (bytesRead === 0)
          throw new Error(`partial file ${this.paths.part} ends at ${offset + got} of ${this.length}`);
        got += bytesRead;
      }
      yield buf;
    }
  }

  async saveOutboard(bytes: Uint8Array): Promise<void> {
    await writeFileAtomic(this.paths.outboard, bytes);
  }

  /** The outboard saved by an earlier run, if any (still to be checked against the id: it is only a file). */
  async savedOutboard(): Promise<Uint8Array | undefined> {
    return readFile(this.paths.outboard).catch(() => undefined);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close().catch(() => {});
    await this.log.close();
  }

  /** Closes and deletes every file of this fetch. */
  async remove(): Promise<void> {
    await this.close();
    await PartialObject.removeFiles(this.paths);
  }

  static async removeFiles(paths: { part: string; outboard: string; log: string }): Promise<void> {
    for (const p of [paths.part, paths.outboard, paths.log]) await rm(p, { force: true });
  }

  private markDurable(b: number): void {
    if (this.durable[b] === 0) {
      this.durable[b] = 1;
      this.durableCount++;
    }
    if (this.have[b] === 0) {
      this.have[b] = 1;
      this.haveCount++;
    }
  }

  private bytesOf(bits: Uint8Array, count: number): number {
    // Every block is full size except the last.
    if (count === 0) return 0;
    const last = bits.length - 1;
    return bits[last] === 1 ? (count - 1) * this.blockBytes + this.span(last).length : count * this.blockBytes;
  }
}

function receiptRecords(receipts: Map<string, number>): Uint8Array[] {
  return [...receipts].map(([s, b]) => encode({ k: "rc", s, b }));
}

function encode(record: object): Uint8Array {
  return Buffer.from(JSON.stringify(record), "utf8");
}
