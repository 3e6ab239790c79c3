// RecordLog: the agent's one durable append-only log of opaque records (the store index; later the MQTT outbox and
// the work ledger). A power cut may tear the last write; open() finds the tear and cuts it off.
//
// File format, version 1 (all integers little-endian):
//
//   header  8 bytes   "SNLOG" (53 4E 4C 4F 47), version 0x01, two reserved bytes 0x00 0x00
//   frame*            u32 length | u32 CRC-32C over (the 4 length bytes + payload) | payload (length bytes)
//
// A length above MAX_RECORD_BYTES is corruption, not a record. Zero-filled space (what an extended but unwritten
// file reads as) never passes: a zero length has the CRC 0x48674BC7, not 0. The first frame that is short, too long
// or fails its CRC ends the log: it and everything after it are a torn tail, dropped and truncated away by open().
//
// Durability: an append's promise resolves after its bytes are written and fsynced. Appends issued while the log is
// busy (same tick, or during an fsync) are written with one write and share one fsync (group commit), in call order.
// A record whose append rejected, or never settled before a crash, may or may not be there after reopening: callers
// that retry must tolerate a duplicate.
import { open, readFile, rename, unlink, type FileHandle } from "node:fs/promises";
import { constants as bufferConstants } from "node:buffer";
import { dirname, resolve } from "node:path";
import { crc32c } from "../util/crc32c.js";
import { errnoCode, errorMessage } from "../util/errors.js";
import { fsyncDir, removeStaleTemps, tempPathFor, writeAll, writeFileAtomic } from "./atomic.js";

export const HEADER_BYTES = 8;
export const FRAME_HEADER_BYTES = 8;
/** The largest payload; a frame claiming more is treated as corruption. */
export const MAX_RECORD_BYTES = 16 * 1024 * 1024;

const MAGIC = Buffer.from("SNLOG", "latin1");
const VERSION = 1;
// One batch's write is bounded so that a torn tail, and the memory a burst of appends pins, stay small.
const MAX_BATCH_BYTES = 4 * 1024 * 1024;
// Rewrites stream the new file in chunks of about this size rather than building it whole in memory.
const REWRITE_CHUNK_BYTES = 1024 * 1024;

export class RecordLogError extends Error {
  override readonly name = "RecordLogError";
  constructor(
    message: string,
    readonly path: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isRecordLogError(err: unknown): err is RecordLogError {
  return err instanceof RecordLogError;
}

export interface RecordLogOptions {
  /** Permission bits of the file when open() creates it (exact, not narrowed by the umask). */
  mode?: number;
}

/** What open() cut off the end of the file. */
export interface Recovery {
  /** Offset of the first invalid frame: the file's new length. */
  offset: number;
  droppedBytes: number;
  /** One line, e.g. "CRC mismatch in the frame at offset 1234". */
  reason: string;
}

export interface OpenedRecordLog {
  log: RecordLog;
  /** Every valid record, in order: views into one buffer holding the file (copy those you keep long-term). */
  records: Uint8Array[];
  /** null when the file ended cleanly. */
  recovery: Recovery | null;
}

interface Pending {
  resolve(): void;
  reject(err: Error): void;
}
type Op =
  | ({ kind: "append"; frames: Buffer; records: number } & Pending)
  | ({ kind: "rewrite"; records: readonly Uint8Array[] } & Pending);

// One RecordLog per file per process: two would interleave frames. (Across processes nothing stops it; the agent
// is the file's only writer.)
const openPaths = new Set<string>();

export class RecordLog {
  readonly path: string;
  private readonly key: string;
  private fh: FileHandle;
  private fileMode: number;
  private bytes: number;
  private records: number;
  private readonly queue: Op[] = [];
  private running = false;
  private idleWaiters: (() => void)[] = [];
  private failure: RecordLogError | null = null;
  private closing: Promise<void> | null = null;

  private constructor(path: string, key: string, fh: FileHandle, fileMode: number, bytes: number, records: number) {
    this.path = path;
    this.key = key;
    this.fh = fh;
    this.fileMode = fileMode;
    this.bytes = bytes;
    this.records = records;
  }

  /**
   * Opens the log at `path`, creating it (atomically, header only) if absent; reads every record and truncates a
   * torn tail. Removes temp files a crashed rewrite left. A file that does not start with a valid header is a
   * RecordLogError, never reset.
   */
  static async open(path: string, options: RecordLogOptions = {}): Promise<OpenedRecordLog> {
    const key = resolve(path);
    if (openPaths.has(key)) throw new RecordLogError(`record log ${path}: already open in this process`, path);
    openPaths.add(key);
    let fh: FileHandle | undefined;
    try {
      await removeStaleTemps(path);
      try {
        fh = await open(path, "r+");
      } catch (err) {
        if (errnoCode(err) !== "ENOENT") throw err;
        await writeFileAtomic(path, encodeHeader(), options.mode === undefined ? {} : { mode: options.mode });
        fh = await open(path, "r+");
      }
      const st = await fh.stat();
      if (st.size > bufferConstants.MAX_LENGTH) {
        throw new RecordLogError(`record log ${path}: ${st.size} bytes is too large to load`, path);
      }
      const data = await readAll(fh, st.size);
      const headerProblem = checkHeader(data);
      if (headerProblem !== null) throw new RecordLogError(`record log ${path}: bad header (${headerProblem})`, path);
      const { records, end, reason } = scanFrames(data);
      let recovery: Recovery | null = null;
      if (end < data.length) {
        await fh.truncate(end);
        await fh.sync();
        recovery = { offset: end, droppedBytes: data.length - end, reason: reason! };
      }
      const log = new RecordLog(path, key, fh, st.mode & 0o7777, end, records.length);
      return { log, records, recovery };
    } catch (err) {
      await fh?.close().catch(() => undefined);
      openPaths.delete(key);
      throw err;
    }
  }

  /** Bytes in the file that are durable (header included); appends still in flight are not counted. */
  get size(): number {
    return this.bytes;
  }

  /** Records that are durable; appends still in flight are not counted. */
  get count(): number {
    return this.records;
  }

  /**
   * Appends one record; resolves when it is durable. The payload is copied at the call, so the caller may reuse it.
   * Rejects if the log failed earlier, is closed, or the payload is over MAX_RECORD_BYTES.
   */
  append(payload: Uint8Array): Promise<void> {
    return this.appendMany([payload]);
  }

  /**
   * Appends records in order with one write and one fsync; resolves when all are durable. Not a transaction: after
   * a crash before it resolves, any prefix of them may be present.
   */
  appendMany(payloads: readonly Uint8Array[]): Promise<void> {
    const refusal = this.refusal() ?? this.checkPayloads(payloads);
    if (refusal !== null) return Promise.reject(refusal);
    if (payloads.length === 0) return Promise.resolve();
    const frames = encodeFrames(payloads, 0, payloads.length, false);
    return this.enqueue((pending) => ({ kind: "append", frames, records: payloads.length, ...pending }));
  }

  /**
   * Compaction: atomically replaces the whole log with exactly `records` (temp file, fsync, rename, directory
   * fsync); resolves when the new file is durable. Operations apply in call order: appends issued before the call
   * are written (to the old file) first, so `records` should already account for them; appends issued after it,
   * even while the rewrite is in progress, wait for it and land after `records` in the new file. The payloads are
   * read when the rewrite runs, so they must not change until it settles. If it fails before the rename the old
   * file is intact and the log stays usable; a failure after the rename fails the log like a failed append.
   */
  rewrite(records: readonly Uint8Array[]): Promise<void> {
    const refusal = this.refusal() ?? this.checkPayloads(records);
    if (refusal !== null) return Promise.reject(refusal);
    const snapshot = records.slice();
    return this.enqueue((pending) => ({ kind: "rewrite", records: snapshot, ...pending }));
  }

  /**
   * Waits for the operations already issued to settle, then closes the file. Operations issued after close() are
   * rejected. Closing is how a failed log is released before reopening it.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.running) await new Promise<void>((done) => this.idleWaiters.push(done));
      try {
        await this.fh.close();
      } finally {
        openPaths.delete(this.key);
      }
    })();
    return this.closing;
  }

  private refusal(): RecordLogError | null {
    if (this.closing !== null) return new RecordLogError(`record log ${this.path}: closed`, this.path);
    return this.failure;
  }

  private checkPayloads(payloads: readonly Uint8Array[]): RecordLogError | null {
    for (const p of payloads) {
      if (!(p instanceof Uint8Array)) {
        return new RecordLogError(`record log ${this.path}: a record must be a Uint8Array`, this.path);
      }
      if (p.length > MAX_RECORD_BYTES) {
        return new RecordLogError(
          `record log ${this.path}: record of ${p.length} bytes exceeds the maximum of ${MAX_RECORD_BYTES}`,
          this.path,
        );
      }
    }
    return null;
  }

  private enqueue(make: (pending: Pending) => Op): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push(make({ resolve, reject }));
      if (!this.running) {
        this.running = true;
        // setImmediate, not a microtask: it lets every append issued in this turn of the event loop, even behind a
        // few awaits, join the first batch.
        setImmediate(() => void this.drain());
      }
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0 && this.failure === null) {
      const head = this.queue[0]!;
      if (head.kind === "rewrite") {
        this.queue.shift();
        await this.runRewrite(head);
        continue;
      }
      // Everything queued up to the next rewrite, within the batch bound, goes in one write and one fsync.
      let n = 0;
      let total = 0;
      for (const op of this.queue) {
        if (op.kind !== "append" || (n > 0 && total + op.frames.length > MAX_BATCH_BYTES)) break;
        total += op.frames.length;
        n++;
      }
      await this.runAppends(this.queue.splice(0, n) as Extract<Op, { kind: "append" }>[], total);
    }
    if (this.failure !== null) for (const op of this.queue.splice(0)) op.reject(this.failure);
    this.running = false;
    for (const done of this.idleWaiters.splice(0)) done();
  }

  private async runAppends(batch: Extract<Op, { kind: "append" }>[], total: number): Promise<void> {
    const bytes =
      batch.length === 1
        ? batch[0]!.frames
        : Buffer.concat(
            batch.map((op) => op.frames),
            total,
          );
    try {
      await writeAll(this.fh, bytes, this.bytes);
      await this.fh.sync();
    } catch (err) {
      // The file may now hold part of the batch, or (after a failed fsync) bytes the kernel will not vouch for.
      // Appending past them could acknowledge records behind a hole, so the log stops; open() sorts the tail out.
      this.fail("append", err);
      for (const op of batch) op.reject(this.failure!);
      return;
    }
    this.bytes += bytes.length;
    for (const op of batch) {
      this.records += op.records;
      op.resolve();
    }
  }

  private async runRewrite(op: Extract<Op, { kind: "rewrite" }>): Promise<void> {
    const tmp = tempPathFor(this.path);
    let tfh: FileHandle | undefined;
    let length = 0;
    try {
      tfh = await open(tmp, "wx", this.fileMode);
      await tfh.chmod(this.fileMode);
      for (const chunk of rewriteChunks(op.records)) {
        await writeAll(tfh, chunk, length);
        length += chunk.length;
      }
      await tfh.sync();
      await rename(tmp, this.path);
    } catch (err) {
      await tfh?.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
      const reason = errnoCode(err) ?? errorMessage(err);
      const message = `record log ${this.path}: rewrite failed (${reason}); the log is unchanged`;
      op.reject(new RecordLogError(message, this.path, { cause: err }));
      return;
    }
    // Renamed: the path now names the new file and the handle we wrote it through is the one to append to.
    const old = this.fh;
    this.fh = tfh;
    this.bytes = length;
    this.records = op.records.length;
    // The old file is unlinked and its data was fsynced; a failing close cannot lose anything.
    await old.close().catch(() => undefined);
    try {
      await fsyncDir(dirname(this.path));
    } catch (err) {
      // The rename may not survive a power cut, so neither may appends made after it: stop.
      this.fail("directory fsync after rewrite", err);
      op.reject(this.failure!);
      return;
    }
    op.resolve();
  }

  private fail(what: string, err: unknown): void {
    const reason = errnoCode(err) ?? errorMessage(err);
    this.failure = new RecordLogError(
      `record log ${this.path}: ${what} failed (${reason}); the log refuses writes until reopened`,
      this.path,
      { cause: err },
    );
  }
}

/** A record log's contents as read without opening it for writing: nothing is locked, cut off or repaired. */
export type RecordLogContents =
  | { ok: true; records: Buffer[]; bytes: number; tornBytes: number; tornReason: string | null }
  | { ok: false; missing: boolean; reason: string };

/**
 * Reads the records of the log at `path` for someone who must not change it (the console, while the daemon may
 * own the log): a torn tail ends the records, as it does in open(), but is only reported.
 */
export async function readRecordLog(path: string): Promise<RecordLogContents> {
  let data: Buffer;
  try {
    data = await readFile(path);
  } catch (err) {
    const code = errnoCode(err);
    return { ok: false, missing: code === "ENOENT", reason: `cannot read ${path}: ${code ?? errorMessage(err)}` };
  }
  const bad = checkHeader(data);
  if (bad) return { ok: false, missing: false, reason: `${path} is not a record log: ${bad}` };
  const { records, end, reason } = scanFrames(data);
  return { ok: true, records, bytes: data.length, tornBytes: data.length - end, tornReason: reason };
}

function encodeHeader(): Buffer {
  const h = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(h, 0);
  h[5] = VERSION;
  return h;
}

/** null if `data` starts with a valid header, else what is wrong with it. */
function checkHeader(data: Buffer): string | null {
  if (data.length < HEADER_BYTES) return `file is ${data.length} bytes, shorter than the ${HEADER_BYTES}-byte header`;
  if (!data.subarray(0, MAGIC.length).equals(MAGIC)) {
    return `magic is ${data.subarray(0, MAGIC.length).toString("hex")}, expected ${MAGIC.toString("hex")} ("SNLOG")`;
  }
  if (data[5] !== VERSION) return `version ${data[5]}, this build reads version ${VERSION}`;
  if (data[6] !== 0 || data[7] !== 0) return `reserved bytes are ${data.subarray(6, 8).toString("hex")}, expected 0000`;
  return null;
}

/** Every valid frame after the header, and where (and why) the valid part ends. */
function scanFrames(data: Buffer): { records: Buffer[]; end: number; reason: string | null } {
  const records: Buffer[] = [];
  let pos = HEADER_BYTES;
  let reason: string | null = null;
  while (pos < data.length && reason === null) {
    const remaining = data.length - pos;
    const length = remaining < FRAME_HEADER_BYTES ? -1 : data.readUInt32LE(pos);
    const payload = data.subarray(pos + FRAME_HEADER_BYTES, pos + FRAME_HEADER_BYTES + Math.max(length, 0));
    if (length < 0) reason = `partial frame header at offset ${pos} (${remaining} of ${FRAME_HEADER_BYTES} bytes)`;
    else if (length > MAX_RECORD_BYTES) {
      reason = `frame at offset ${pos} claims ${length} bytes, over the maximum of ${MAX_RECORD_BYTES}`;
    } else if (payload.length < length) {
      reason = `frame at offset ${pos} claims ${length} bytes, only ${payload.length} follow`;
    } else if (crc32c(payload, crc32c(data.subarray(pos, pos + 4))) !== data.readUInt32LE(pos + 4)) {
      reason = `CRC mismatch in the frame at offset ${pos}`;
    } else {
      records.push(payload);
      pos += FRAME_HEADER_BYTES + length;
    }
  }
  return { records, end: pos, reason };
}

/** Frames for payloads[from, to), optionally preceded by the file header, in one buffer. */
function encodeFrames(payloads: readonly Uint8Array[], from: number, to: number, withHeader: boolean): Buffer {
  let total = withHeader ? HEADER_BYTES : 0;
  for (let i = from; i < to; i++) total += FRAME_HEADER_BYTES + payloads[i]!.length;
  const out = Buffer.allocUnsafe(total);
  let pos = 0;
  if (withHeader) pos = encodeHeader().copy(out, 0);
  for (let i = from; i < to; i++) {
    const p = payloads[i]!;
    out.writeUInt32LE(p.length, pos);
    out.writeUInt32LE(crc32c(p, crc32c(out.subarray(pos, pos + 4))), pos + 4);
    out.set(p, pos + FRAME_HEADER_BYTES);
    pos += FRAME_HEADER_BYTES + p.length;
  }
  return out;
}

/** A rewritten file's bytes (header, then frames) in chunks of about REWRITE_CHUNK_BYTES. */
function* rewriteChunks(records: readonly Uint8Array[]): Generator<Buffer> {
  let from = 0;
  let first = true;
  do {
    let to = from;
    let size = 0;
    while (to < records.length) {
      const frameBytes = FRAME_HEADER_BYTES + records[to]!.length;
      if (to > from && size + frameBytes > REWRITE_CHUNK_BYTES) break;
      size += frameBytes;
      to++;
    }
    yield encodeFrames(records, from, to, first);
    first = false;
    from = to;
  } while (from < records.length);
}

async function readAll(fh: FileHandle, size: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(size);
  let got = 0;
  while (got < size) {
    const { bytesRead } = await fh.read(buf, got, size - got, got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return buf.subarray(0, got);
}
