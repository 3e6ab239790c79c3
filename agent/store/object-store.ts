// The object store: content objects (up to 64 MiB) on the data disk, named by their BLAKE3 id, each with its
// outboard beside it, listed in a crash-safe index (index-log.ts).
//
// Layout under the data directory:
//   objects/ab/<id>        the object's bytes (ab = the id's first two hex digits: at most a few thousand
//   objects/ab/<id>.obao   entries per directory, which vfat and exFAT handle well)
//   tmp/                   ingests in progress; emptied at every start
//   quarantine/            objects that failed a scrub, kept for inspection, not counted as stored
//   index.log              the index
//
// An ingest hashes while it writes, in one pass; nothing appears under objects/ before a "begin" record is
// durable, and the object counts as stored only after its "add" record is. Start-up therefore needs no walk
// of the disk: it empties tmp/, finishes or rolls back the begun ingests, and unlinks what deletes left.
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { constants as fsConstants } from "node:fs";
import { mkdir, open, readdir, readFile, rename, rm, stat, statfs, unlink } from "node:fs/promises";
import { join } from "node:path";
import { CHUNK_LEN } from "../kernels/blake3.js";
import {
  DEFAULT_GROUP_LOG,
  OutboardBuilder,
  outboardLength,
  parseOutboard,
  type Outboard,
} from "../kernels/outboard.js";
import { fromHex, toHex } from "../util/hex.js";
import { fsyncDir, removeStaleTemps, writeAll, writeFileAtomic } from "../durable/atomic.js";
import { LockedError, PidLock, STORE_LOCK_FILE } from "../durable/pid-lock.js";
import { RecordLog } from "../durable/record-log.js";
import { decodeRecord, encodeRecord, replay, type IndexEntry, type IndexRecord } from "./index-log.js";
import { errnoCode, errorMessage } from "../util/errors.js";

export const MAX_OBJECT_LEN = 64 * 1024 * 1024;

/** The reserve when the owner sets none: 5 % of the filesystem, at most 1 GiB. */
export function defaultReserveBytes(filesystemSize: number): number {
  return Math.min(2 ** 30, Math.floor(filesystemSize * 0.05));
}
const ID_HEX = /^[0-9a-f]{64}$/;

export class StoreError extends Error {
  constructor(
    message: string,
    /** Machine-readable reason: not-found, bad-id, bad-outboard, hash-mismatch, too-large, quota, truncated, disk-full, locked, closed, io */
    readonly code: string,
  ) {
    super(message);
    this.name = "StoreError";
  }
}

export interface StoreConfig {
  /** The data directory on the data disk (already checked by checkDataDisk). */
  dataDir: string;
  /** Most bytes the store may use: a number of bytes, or a share (0..1] of the space the store could have. */
  quota: { bytes: number } | { share: number };
  /** Free space on the disk that the store never uses (bytes). */
  reserveBytes: number;
  /** Emit "quota-near" when used space crosses this share of the quota (default 0.9). */
  nearQuotaShare?: number;
  /** Evict least recently used unpinned objects to make room for an ingest (default true). */
  evict?: boolean;
}

export interface StoredObject {
  id: string;
  length: number;
  pinned: boolean;
  addedAt: number;
  usedAt: number;
}

export interface StoreEvents {
  "object-added": [StoredObject];
  "object-removed": [{ id: string; reason: "deleted" | "evicted" | "missing" | "corrupt" }];
  "quota-near": [{ usedBytes: number; quotaBytes: number }];
  "disk-low": [{ availableBytes: number; reserveBytes: number }];
  recovered: [{ message: string }];
}

export interface StoreStatus {
  objects: number;
  usedBytes: number;
  quotaBytes: number;
  availableBytes: number;
  pinned: number;
  /** Free space the store never uses. */
  reserveBytes: number;
  /** Objects moved to quarantine/ by scrubs (kept for inspection, not counted as stored). */
  quarantined: number;
}

/** Injected so tests control time; defaults to the real clock. */
export interface Clock {
  now(): number;
}

interface Paths {
  objects: string;
  tmp: string;
  quarantine: string;
  index: string;
  lock: string;
}

function roundUp(n: number, blockSize: number): number {
  return Math.ceil(n / blockSize) * blockSize;
}

/** Bytes an object occupies: its file and its outboard, each rounded up to the filesystem block. */
export function footprint(length: number, blockSize: number): number {
  return roundUp(length, blockSize) + roundUp(outboardLength(length), blockSize);
}

/**
 * The most the store may use: the owner's quota, and never the reserve. Pure, so whoever reads the store without
 * opening it (the console) computes the same figure.
 */
export function quotaLimit(
  quota: StoreConfig["quota"],
  usedBytes: number,
  availableBytes: number,
  reserveBytes: number,
): number {
  // What the store could grow to without touching the reserve.
  const reachable = usedBytes + Math.max(0, availableBytes - reserveBytes);
  const owner = "bytes" in quota ? quota.bytes : Math.floor(quota.share * reachable);
  return Math.min(owner, reachable);
}

export class ObjectStore extends EventEmitter<StoreEvents> {
  private readonly paths: Paths;
  private log!: RecordLog;
  private live = new Map<string, IndexEntry>();
  private usedBytes = 0;
  private quarantinedCount = 0;
  private blockSize = 4096;
  private closed = false;
  private nearQuotaSignalled = false;
  /** Ids with an ingest or removal in flight: a second one for the same id waits for the first. */
  private readonly busy = new Map<string, Promise<unknown>>();
  private logRecords = 0;
  private readonly lock: PidLock;

  constructor(
    readonly config: StoreConfig,
    private readonly clock: Clock = { now: () => Date.now() },
  ) {
    super();
    const d = config.dataDir;
    this.paths = {
      objects: join(d, "objects"),
      tmp: join(d, "tmp"),
      quarantine: join(d, "quarantine"),
      index: join(d, "index.log"),
      lock: join(d, STORE_LOCK_FILE),
    };
    this.lock = new PidLock(this.paths.lock, `the store in ${d}`);
  }

  /** Opens the index, repairs what a crash left, and measures the disk. */
  async start(): Promise<void> {
    const { paths } = this;
    for (const dir of [paths.objects, paths.tmp, paths.quarantine]) await mkdir(dir, { recursive: true });
    // One store per data directory: a second process (the CLI while the daemon runs) would interleave records.
    await this.lock.acquire().catch((err) => {
      throw err instanceof LockedError ? new StoreError(err.message, "locked") : asStoreError(err, "store lock");
    });
    const opened = await RecordLog.open(paths.index);
    this.log = opened.log;
    // Counted once here, then by quarantine(): status() runs every telemetry round and lists no directory.
    this.quarantinedCount = await countQuarantined(this.config.dataDir);
    if (opened.recovery)
      this.emit("recovered", {
        message: `index.log: dropped a torn tail of ${opened.recovery.droppedBytes} bytes (${opened.recovery.reason})`,
      });
    const records = opened.records.map(decodeRecord);
    this.logRecords = records.length;
    const state = replay(records);
    this.live = state.live;
    this.blockSize = (await statfs(this.config.dataDir)).bsize || 4096;
    // Ingests that never finished: nothing of them is trusted, but a complete, valid object is kept.
    await this.emptyDirectory(paths.tmp);
    for (const [id, length] of state.pending) await this.settlePending(id, length);
    // Deletes whose unlink may not have happened before the power went.
    for (const id of state.removed) await this.unlinkObjectFiles(id);
    this.usedBytes = 0;
    for (const entry of this.live.values()) this.usedBytes += footprint(entry.length, this.blockSize);
    await this.compactIfWorthIt();
    // A store that starts near its quota or on a nearly full disk says so at once.
    await this.checkQuota();
  }

  async stop(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled(this.busy.values());
    await this.log?.close();
    await this.lock.release();
  }

  // --- queries ----------------------------------------------------------------------------------------------

  has(id: string): boolean {
    return this.live.has(id);
  }

  get(id: string): StoredObject | undefined {
    const e = this.live.get(id);
    return e && { ...e };
  }

  list(): StoredObject[] {
    return [...this.live.values()].map((e) => ({ ...e })).sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  async status(): Promise<StoreStatus> {
    const quotaBytes = await this.quotaBytes();
    let pinned = 0;
    for (const e of this.live.values()) if (e.pinned) pinned++;
    return {
      objects: this.live.size,
      usedBytes: this.usedBytes,
      quotaBytes,
      availableBytes: await this.diskAvailable(),
      pinned,
      reserveBytes: this.config.reserveBytes,
      quarantined: this.quarantinedCount,
    };
  }

  objectPath(id: string): string {
    return join(this.paths.objects, id.slice(0, 2), id);
  }

  outboardPath(id: string): string {
    return this.objectPath(id) + ".obao";
  }

  /**
   * For serving (agent/serve): where a stored object's bytes and outboard are, and its length; marks it used.
   * Synchronous and allocation-light: it runs on every request. Undefined when not stored (or not an id). The
   * caller opens the files itself; an object deleted in between is an ENOENT there, and an open one stays
   * readable until closed.
   */
  locate(id: string): { length: number; path: string; outboardPath: string } | undefined {
    const entry = this.live.get(id);
    if (!entry || this.closed) return undefined;
    entry.usedAt = this.clock.now();
    const path = this.objectPath(id);
    return { length: entry.length, path, outboardPath: path + ".obao" };
  }

  /** The object's outboard and a positional reader over its bytes, for proofs. Marks the object as used. */
  async openForProof(id: string): Promise<{
    id: Uint8Array;
    length: number;
    outboard: Outboard;
    readAt(offset: number, length: number): Promise<Uint8Array>;
    close(): Promise<void>;
  }> {
    const entry = this.requireLive(id);
    const outboard = parseOutboard(
      await readFile(this.outboardPath(id)).catch((err) => {
        throw this.ioError(id, err);
      }),
    );
    const fh = await open(this.objectPath(id), "r").catch((err) => {
      throw this.ioError(id, err);
    });
    entry.usedAt = this.clock.now();
    return {
      id: fromHex(id, 32),
      length: entry.length,
      outboard,
      async readAt(offset: number, length: number) {
        const buf = new Uint8Array(length);
        let got = 0;
        while (got < length) {
          const { bytesRead } = await fh.read(buf, got, length - got, offset + got);
          if (bytesRead === 0) break;
          got += bytesRead;
        }
        return got === length ? buf : buf.subarray(0, got);
      },
      close: () => fh.close(),
    };
  }

  // --- ingest -----------------------------------------------------------------------------------------------

  /**
   * Stores an object from a stream of bytes, hashing while writing. With expectedId, content whose hash differs
   * is rejected and leaves nothing behind. declaredLength (from a file size or Content-Length) lets quota and
   * size be refused before any byte is written, and a shorter stream is rejected as truncated.
   */
  async ingest(
    source: AsyncIterable<Uint8Array>,
    options: { expectedId?: string; declaredLength?: number; pin?: boolean } = {},
  ): Promise<{ object: StoredObject; created: boolean }> {
    this.assertOpen();
    const { expectedId, declaredLength } = options;
    if (expectedId !== undefined && !ID_HEX.test(expectedId))
      throw new StoreError(`object id must be 64 lowercase hex digits, got ${JSON.stringify(expectedId)}`, "bad-id");
    if (declaredLength !== undefined) {
      if (declaredLength > MAX_OBJECT_LEN)
        throw new StoreError(`object of ${declaredLength} bytes is over the ${MAX_OBJECT_LEN}-byte limit`, "too-large");
      if (expectedId && this.live.has(expectedId)) return { object: this.get(expectedId)!, created: false };
      await this.makeRoom(footprint(declaredLength, this.blockSize));
    }
    const tmpPath = join(this.paths.tmp, `${randomBytes(8).toString("hex")}.part`);
    const fh = await open(tmpPath, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o644).catch(
      (err) => {
        throw asStoreError(err, "ingest");
      },
    );
    let length = 0;
    let result: { id: Uint8Array; length: number; outboard: Uint8Array };
    try {
      const builder = new OutboardBuilder();
      for await (const piece of source) {
        length += piece.length;
        if (length > MAX_OBJECT_LEN)
          throw new StoreError(`object is over the ${MAX_OBJECT_LEN}-byte limit`, "too-large");
        if (declaredLength !== undefined && length > declaredLength)
          throw new StoreError(`source sent more than the ${declaredLength} bytes it declared`, "truncated");
        builder.update(piece);
        await writeAll(fh, piece, length - piece.length);
      }
      if (declaredLength !== undefined && length !== declaredLength) {
        throw new StoreError(`source ended after ${length} of ${declaredLength} bytes`, "truncated");
      }
      result = builder.finish();
      const id = toHex(result.id);
      if (expectedId !== undefined && id !== expectedId) {
        throw new StoreError(`content hash ${id} is not the expected id ${expectedId}`, "hash-mismatch");
      }
      await fh.sync();
    } catch (err) {
      await fh.close().catch(() => {});
      await unlink(tmpPath).catch(() => {});
      throw asStoreError(err, "ingest");
    }
    await fh.close();
    const id = toHex(result.id);
    return this.exclusive(id, async () => {
      if (this.live.has(id)) {
        await unlink(tmpPath).catch(() => {});
        return { object: this.get(id)!, created: false };
      }
      try {
        // The bytes are already on disk in tmp/: the free space statfs reports has them taken out.
        if (declaredLength === undefined)
          await this.makeRoom(footprint(length, this.blockSize), roundUp(length, this.blockSize));
      } catch (err) {
        await unlink(tmpPath).catch(() => {});
        throw err;
      }
      await this.place(id, length, result.outboard, tmpPath, options.pin ?? false);
      return { object: this.get(id)!, created: true };
    });
  }

  /**
   * Takes in a complete file whose bytes the caller has already verified against `outboard`, an outboard itself
   * checked against the id: agent/fetch checks every group of a fetched object as it arrives (or builds the
   * outboard while hashing the whole object at the end). The file is fsynced and renamed into place, so a fetched
   * object is written and hashed once, not copied and hashed again as ingest would: on a box's USB 2.0 disk the
   * copy costs as much as the fetch's own writes. The file must be on the data disk (rename within one filesystem),
   * outside tmp/ (emptied at start); it is consumed: moved into place, or deleted when refused after the checks
   * below. The outboard must have the store's group size (DEFAULT_GROUP_LOG: proofs read one 16 KiB group);
   * callers with another fall back to ingest. Its id and length are checked, and the file's size; its bytes are not
   * read again: the scrub finds any that rot later.
   */
  async adopt(
    path: string,
    options: { outboard: Uint8Array; pin?: boolean },
  ): Promise<{ object: StoredObject; created: boolean }> {
    this.assertOpen();
    let outboard: Outboard;
    try {
      outboard = parseOutboard(options.outboard);
    } catch (err) {
      throw new StoreError(`adopt: the outboard does not parse: ${errorMessage(err)}`, "bad-outboard");
    }
    if (outboard.groupLog !== DEFAULT_GROUP_LOG) {
      throw new StoreError(
        `adopt: the outboard has groups of 2^${outboard.groupLog} chunks, the store keeps 2^${DEFAULT_GROUP_LOG}`,
        "bad-outboard",
      );
    }
    const { length } = outboard;
    const id = toHex(outboard.id);
    if (length > MAX_OBJECT_LEN)
      throw new StoreError(`object of ${length} bytes is over the ${MAX_OBJECT_LEN}-byte limit`, "too-large");
    try {
      const fh = await open(path, fsConstants.O_RDONLY);
      try {
        const { size } = await fh.stat();
        if (size !== length)
          throw new StoreError(`adopt: ${path} has ${size} bytes, the outboard ${length}`, "truncated");
        // The caller's writes are durable before the rename makes them an object.
        await fh.sync();
      } finally {
        await fh.close();
      }
    } catch (err) {
      throw asStoreError(err, "adopt");
    }
    return this.exclusive(id, async () => {
      if (this.live.has(id)) {
        await unlink(path).catch(() => {});
        return { object: this.get(id)!, created: false };
      }
      try {
        // The bytes are on this disk already: the free space statfs reports has them taken out.
        await this.makeRoom(footprint(length, this.blockSize), roundUp(length, this.blockSize));
      } catch (err) {
        await unlink(path).catch(() => {});
        throw err;
      }
      await this.place(id, length, options.outboard, path, options.pin ?? false);
      return { object: this.get(id)!, created: true };
    });
  }

  /** Moves a complete, fsynced temp file into place under the begin/add protocol. */
  private async place(id: string, length: number, outboard: Uint8Array, tmpPath: string, pin: boolean): Promise<void> {
    await this.append({ o: "begin", id, len: length });
    try {
      const dir = join(this.paths.objects, id.slice(0, 2));
      await mkdir(dir, { recursive: true });
      await writeFileAtomic(this.outboardPath(id), outboard);
      await rename(tmpPath, this.objectPath(id));
      await fsyncDir(dir);
    } catch (err) {
      await this.unlinkObjectFiles(id);
      await unlink(tmpPath).catch(() => {});
      await this.append({ o: "abort", id });
      throw this.ioError(id, err);
    }
    const now = this.clock.now();
    await this.append({ o: "add", id, len: length, pin, at: now });
    this.live.set(id, { id, length, pinned: pin, addedAt: now, usedAt: now });
    this.usedBytes += footprint(length, this.blockSize);
    this.emit("object-added", this.get(id)!);
    await this.checkQuota();
  }

  // --- removal, pins, eviction --------------------------------------------------------------------------------

  async delete(id: string): Promise<void> {
    this.assertOpen();
    await this.exclusive(id, () => this.remove(id, "deleted"));
  }

  async pin(id: string, pinned = true): Promise<void> {
    this.assertOpen();
    const entry = this.requireLive(id);
    if (entry.pinned === pinned) return;
    await this.append({ o: "pin", id, pin: pinned });
    entry.pinned = pinned;
  }

  private async remove(id: string, reason: "deleted" | "evicted" | "missing"): Promise<void> {
    const entry = this.requireLive(id);
    // The record first: a power cut after it leaves files that start-up unlinks, never an index entry
    // pointing at half-deleted files.
    await this.append({ o: "del", id });
    this.live.delete(id);
    this.usedBytes -= footprint(entry.length, this.blockSize);
    await this.unlinkObjectFiles(id);
    this.emit("object-removed", { id, reason });
    await this.compactIfWorthIt();
  }

  /**
   * Evicts least recently used unpinned objects until `need` more bytes fit; throws a quota error otherwise, and
   * then evicts nothing. `onDiskAlready`: bytes of the new object already written (to tmp/), which statfs no
   * longer counts as free.
   */
  private async makeRoom(need: number, onDiskAlready = 0): Promise<void> {
    const limit = await this.quotaBytes(onDiskAlready);
    if (this.usedBytes + need <= limit) return;
    const candidates =
      this.config.evict === false
        ? []
        : [...this.live.values()].filter((e) => !e.pinned && !this.busy.has(e.id)).sort((a, b) => a.usedAt - b.usedAt);
    // Evicting moves bytes from used to free, so the limit (what the store could reach) stays put: decide first
    // whether evicting everything evictable would be enough, and evict nothing when it would not.
    const evictable = candidates.reduce((sum, e) => sum + footprint(e.length, this.blockSize), 0);
    if (this.usedBytes - evictable + need > limit) {
      throw new StoreError(
        `no room for ${need} more bytes: ${this.usedBytes} of ${limit} bytes used and ${evictable} evictable`,
        "quota",
      );
    }
    for (const victim of candidates) {
      if (this.usedBytes + need <= limit) break;
      await this.remove(victim.id, "evicted");
    }
  }

  // --- quota ---------------------------------------------------------------------------------------------------

  private async diskAvailable(): Promise<number> {
    const s = await statfs(this.config.dataDir);
    return s.bavail * s.bsize;
  }

  /** The most the store may use now: the owner's quota, and never the reserve. */
  async quotaBytes(onDiskAlready = 0): Promise<number> {
    return quotaLimit(
      this.config.quota,
      this.usedBytes,
      (await this.diskAvailable()) + onDiskAlready,
      this.config.reserveBytes,
    );
  }

  private async checkQuota(): Promise<void> {
    const quotaBytes = await this.quotaBytes();
    const near = this.usedBytes >= (this.config.nearQuotaShare ?? 0.9) * quotaBytes;
    if (near && !this.nearQuotaSignalled) this.emit("quota-near", { usedBytes: this.usedBytes, quotaBytes });
    this.nearQuotaSignalled = near;
    const availableBytes = await this.diskAvailable();
    if (availableBytes < this.config.reserveBytes)
      this.emit("disk-low", { availableBytes, reserveBytes: this.config.reserveBytes });
  }

  // --- scrub support ----------------------------------------------------------------------------------------

  /**
   * Moves a corrupt object to quarantine/ and drops it from the index. Its bytes no longer count as stored.
   */
  async quarantine(id: string, reason: string): Promise<void> {
    await this.exclusive(id, async () => {
      const entry = this.live.get(id);
      if (!entry) return;
      await this.append({ o: "bad", id, reason });
      this.live.delete(id);
      this.usedBytes -= footprint(entry.length, this.blockSize);
      const stamp = `${id}.${this.clock.now()}`;
      if (
        await rename(this.objectPath(id), join(this.paths.quarantine, stamp)).then(
          () => true,
          () => false,
        )
      )
        this.quarantinedCount++;
      await rename(this.outboardPath(id), join(this.paths.quarantine, stamp + ".obao")).catch(() => {});
      await fsyncDir(this.paths.quarantine).catch(() => {});
      this.emit("object-removed", { id, reason: "corrupt" });
    });
  }

  /** Drops an object whose file vanished (found by scrub or a proof). */
  async forgetMissing(id: string): Promise<void> {
    await this.exclusive(id, () => (this.live.has(id) ? this.remove(id, "missing") : Promise.resolve()));
  }

  // --- internals ----------------------------------------------------------------------------------------------

  private async append(record: IndexRecord): Promise<void> {
    await this.log.append(encodeRecord(record));
    this.logRecords++;
  }

  /** Rewrites the log as one record per live object once dead records outnumber live ones. */
  private async compactIfWorthIt(): Promise<void> {
    if (this.logRecords < 64 || this.logRecords < 2 * this.live.size) return;
    const records = [...this.live.values()].map((e) =>
      encodeRecord({ o: "add", id: e.id, len: e.length, pin: e.pinned, at: e.addedAt, used: e.usedAt }),
    );
    await this.log.rewrite(records);
    this.logRecords = records.length;
  }

  /** At start-up, for an ingest that began but never finished: keep a complete valid object, else roll back. */
  private async settlePending(id: string, length: number): Promise<void> {
    const valid = await this.verifyFiles(id, length).catch(() => false);
    if (valid) {
      const now = this.clock.now();
      await this.append({ o: "add", id, len: length, pin: false, at: now });
      this.live.set(id, { id, length, pinned: false, addedAt: now, usedAt: now });
      this.emit("recovered", { message: `kept object ${id}: its ingest was interrupted after the data was in place` });
    } else {
      await this.unlinkObjectFiles(id);
      await this.append({ o: "abort", id });
      this.emit("recovered", { message: `rolled back the interrupted ingest of ${id}` });
    }
  }

  /** True when the object file hashes to its id and its outboard matches. Reads the whole object. */
  async verifyFiles(id: string, length: number, onRead?: (bytes: number) => Promise<void>): Promise<boolean> {
    const st = await stat(this.objectPath(id));
    if (st.size !== length) return false;
    const builder = new OutboardBuilder();
    const fh = await open(this.objectPath(id), "r");
    try {
      const buf = new Uint8Array(64 * CHUNK_LEN);
      for (let offset = 0; offset < length;) {
        const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, length - offset), offset);
        if (bytesRead === 0) return false;
        builder.update(buf.subarray(0, bytesRead));
        offset += bytesRead;
        if (onRead) await onRead(bytesRead);
      }
    } finally {
      await fh.close();
    }
    const built = builder.finish();
    if (toHex(built.id) !== id) return false;
    const stored = await readFile(this.outboardPath(id)).catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return null; // an object without its outboard cannot be proven: corrupt
      throw err;
    });
    return stored !== null && Buffer.compare(stored, built.outboard) === 0;
  }

  private async unlinkObjectFiles(id: string): Promise<void> {
    await rm(this.objectPath(id), { force: true });
    await rm(this.outboardPath(id), { force: true });
    // An outboard write cut short leaves its temp file beside it. Callers hold the id exclusively, so no
    // writer of this outboard is running.
    await removeStaleTemps(this.outboardPath(id)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== "ENOENT") throw err;
    });
  }

  private async emptyDirectory(dir: string): Promise<void> {
    for (const name of await readdir(dir)) await rm(join(dir, name), { force: true, recursive: true });
  }

  private requireLive(id: string): IndexEntry {
    if (!ID_HEX.test(id))
      throw new StoreError(`object id must be 64 lowercase hex digits, got ${JSON.stringify(id)}`, "bad-id");
    const entry = this.live.get(id);
    if (!entry) throw new StoreError(`no object ${id} in the store`, "not-found");
    return entry;
  }

  private ioError(id: string, err: unknown): StoreError {
    return asStoreError(err, `object ${id}`);
  }

  private assertOpen(): void {
    if (this.closed) throw new StoreError("the store is stopped", "closed");
  }

  /** Runs fn with no other ingest/removal of the same id in flight. */
  private async exclusive<T>(id: string, fn: () => Promise<T>): Promise<T> {
    while (this.busy.has(id)) await this.busy.get(id)!.catch(() => {});
    const run = fn();
    this.busy.set(id, run);
    try {
      return await run;
    } finally {
      this.busy.delete(id);
    }
  }
}

/** Store errors pass through; a full disk and other I/O errors become one-line StoreErrors. */
function asStoreError(err: unknown, what: string): StoreError {
  if (err instanceof StoreError) return err;
  const code = errnoCode(err);
  if (code === "ENOSPC") return new StoreError(`${what}: the data disk is full`, "disk-full");
  if (code === "ENOENT" || code === "EIO" || code === "ENODEV") {
    return new StoreError(`${what}: ${errorMessage(err)} (is the data disk still mounted?)`, "io");
  }
  return new StoreError(`${what}: ${errorMessage(err)}`, "io");
}

/** Objects in `<dataDir>/quarantine/` (each has its outboard beside it); 0 when the directory is unreadable. */
export async function countQuarantined(dataDir: string): Promise<number> {
  try {
    return (await readdir(join(dataDir, "quarantine"))).filter((n) => !n.endsWith(".obao")).length;
  } catch {
    return 0;
  }
}
