// Outboards: the part of an object's BLAKE3 tree above its chunk groups, stored beside the object so that a
// proof reads only the challenged group (16 KiB by default) from disk, never the whole object. The encoding is
// documented byte by byte in wasm/README.md.
//
// Groups are 2^groupLog chunks. Every tree node wider than a group is a union of whole groups (its left child
// is a power of two chunks >= the group size), so the nodes above the groups form a binary tree whose leaves
// are the groups: an object of g groups has g - 1 of them, stored in pre-order as 64-byte blocks. The tail
// section holds what a proof needs from the last group when the range does not touch it.
import { type Blake3Kernel, blake3Kernel, CHUNK_LEN } from "./blake3.js";
import { emitFromData, ProofWriter } from "./proof.js";
import { chunkCount, itemsLength, leftChunks, proofLength, proofTarget, Target } from "./tree.js";

export const OUTBOARD_MAGIC = "B3OB";
export const OUTBOARD_VERSION = 1;
export const OUTBOARD_HEADER_LEN = 48;
export const DEFAULT_GROUP_LOG = 4;
const MAX_GROUP_LOG = 16;

export class OutboardError extends Error {
  override name = "OutboardError";
}

/** A parsed outboard: a view over its bytes. */
export interface Outboard {
  readonly bytes: Uint8Array;
  readonly id: Uint8Array;
  readonly length: number;
  readonly groupLog: number;
  /** Chunks per group. */
  readonly groupChunks: number;
  readonly groups: number;
  /** Byte offset of the tail section. */
  readonly tailOffset: number;
}

function groupsOf(length: number, groupLog: number): number {
  return Math.ceil(chunkCount(length) / 2 ** groupLog);
}

/** The tail section: the proof items of the last group for a target of the tail alone. */
function tailSectionLength(length: number, groupLog: number): number {
  const chunks = chunkCount(length);
  const groups = groupsOf(length, groupLog);
  // With one group every proof reads the whole object, so the section would never be used.
  if (groups === 1) return 0;
  const first = (groups - 1) * 2 ** groupLog;
  return itemsLength(Target.tailOnly(length), first, chunks - first);
}

/** Total size of the outboard of an object of `length` bytes. */
export function outboardLength(length: number, groupLog = DEFAULT_GROUP_LOG): number {
  return OUTBOARD_HEADER_LEN + 64 * (groupsOf(length, groupLog) - 1) + tailSectionLength(length, groupLog);
}

/** Validates an outboard's header and size; throws OutboardError with a one-line reason. */
export function parseOutboard(bytes: Uint8Array): Outboard {
  if (bytes.length < OUTBOARD_HEADER_LEN)
    throw new OutboardError(`outboard is ${bytes.length} bytes, shorter than its ${OUTBOARD_HEADER_LEN}-byte header`);
  const magic = Buffer.from(bytes.subarray(0, 4)).toString("latin1");
  if (magic !== OUTBOARD_MAGIC)
    throw new OutboardError(`not an outboard (magic ${JSON.stringify(magic)}, expected "${OUTBOARD_MAGIC}")`);
  if (bytes[4] !== OUTBOARD_VERSION)
    throw new OutboardError(`outboard version ${bytes[4]} is not supported (expected ${OUTBOARD_VERSION})`);
  const groupLog = bytes[5]!;
  if (groupLog > MAX_GROUP_LOG)
    throw new OutboardError(`outboard group size 2^${groupLog} chunks is out of range (at most 2^${MAX_GROUP_LOG})`);
  if (bytes[6] !== 0 || bytes[7] !== 0) throw new OutboardError("outboard reserved header bytes are not zero");
  const length64 = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(8, true);
  if (length64 > BigInt(Number.MAX_SAFE_INTEGER))
    throw new OutboardError(`outboard object length ${length64} is too large`);
  const length = Number(length64);
  const expected = outboardLength(length, groupLog);
  if (bytes.length !== expected) {
    throw new OutboardError(`outboard is ${bytes.length} bytes, expected ${expected} for an object of ${length} bytes`);
  }
  const groups = groupsOf(length, groupLog);
  return {
    bytes,
    id: bytes.subarray(16, 48),
    length,
    groupLog,
    groupChunks: 2 ** groupLog,
    groups,
    tailOffset: OUTBOARD_HEADER_LEN + 64 * (groups - 1),
  };
}

/**
 * Builds an object's id and outboard in one pass over its bytes, in memory bounded by one group plus the
 * outboard itself. update() may be called with pieces of any size.
 */
export class OutboardBuilder {
  private readonly groupBytes: number;
  private readonly pending: Uint8Array;
  private pendingLen = 0;
  private length = 0;
  /** Chaining values of the completed groups, 32 bytes each, grown by doubling. */
  private groupCvs = new Uint8Array(32 * 64);
  private groupsDone = 0;
  private finished = false;

  constructor(
    readonly groupLog = DEFAULT_GROUP_LOG,
    private readonly kernel: Blake3Kernel = blake3Kernel(),
  ) {
    if (!Number.isInteger(groupLog) || groupLog < 0 || groupLog > MAX_GROUP_LOG) {
      throw new RangeError(`group log must be an integer 0..${MAX_GROUP_LOG}, got ${groupLog}`);
    }
    this.groupBytes = CHUNK_LEN * 2 ** groupLog;
    this.pending = new Uint8Array(this.groupBytes);
  }

  update(data: Uint8Array): this {
    if (this.finished) throw new Error("OutboardBuilder.update after finish");
    this.length += data.length;
    let offset = 0;
    // A full group is hashed only once more bytes arrive: the last group is special (it may be the root).
    if (this.pendingLen > 0) {
      const take = Math.min(this.groupBytes - this.pendingLen, data.length);
      this.pending.set(data.subarray(0, take), this.pendingLen);
      this.pendingLen += take;
      offset = take;
      if (this.pendingLen === this.groupBytes && offset < data.length) {
        this.addGroup(this.pending);
        this.pendingLen = 0;
      }
    }
    for (; data.length - offset > this.groupBytes; offset += this.groupBytes) {
      this.addGroup(data.subarray(offset, offset + this.groupBytes));
    }
    if (offset < data.length) {
      this.pending.set(data.subarray(offset), this.pendingLen);
      this.pendingLen += data.length - offset;
    }
    return this;
  }

  private addGroup(group: Uint8Array): void {
    if ((this.groupsDone + 1) * 32 > this.groupCvs.length) {
      const grown = new Uint8Array(this.groupCvs.length * 2);
      grown.set(this.groupCvs);
      this.groupCvs = grown;
    }
    const firstChunk = this.groupsDone * 2 ** this.groupLog;
    this.kernel.subtreeCv(group, firstChunk, this.groupCvs, this.groupsDone * 32);
    this.groupsDone++;
  }

  /** The object's id, length and outboard bytes. The builder cannot be updated afterwards. */
  finish(): { id: Uint8Array; length: number; outboard: Uint8Array } {
    if (this.finished) throw new Error("OutboardBuilder.finish called twice");
    this.finished = true;
    const { kernel, length, groupLog } = this;
    const last = this.pending.subarray(0, this.pendingLen);
    const outboard = new Uint8Array(outboardLength(length, groupLog));
    outboard.set(Buffer.from(OUTBOARD_MAGIC, "latin1"), 0);
    outboard[4] = OUTBOARD_VERSION;
    outboard[5] = groupLog;
    new DataView(outboard.buffer).setBigUint64(8, BigInt(length), true);
    const id = outboard.subarray(16, 48);
    if (this.groupsDone === 0) {
      kernel.hashInto(last, id);
      return { id: id.slice(), length, outboard };
    }
    const groupChunks = 2 ** groupLog;
    const chunks = chunkCount(length);
    const lastFirst = this.groupsDone * groupChunks;
    this.addGroup(last);
    // The tail section, written by the same walk that proofs use.
    const tail = new ProofWriter(outboard.subarray(OUTBOARD_HEADER_LEN + 64 * (this.groupsDone - 1)));
    emitFromData(kernel, Target.tailOnly(length), last, lastFirst, chunks - lastFirst, false, tail, new Uint8Array(32));
    // Parents above the groups, in pre-order: node (firstGroup, nGroups) at index p has its left child at p + 1
    // and its right child at p + (groups in the left child).
    const cvs = this.groupCvs;
    const build = (
      firstGroup: number,
      nGroups: number,
      index: number,
      root: boolean,
      out: Uint8Array,
      outOffset: number,
    ): void => {
      if (nGroups === 1) {
        out.set(cvs.subarray(firstGroup * 32, firstGroup * 32 + 32), outOffset);
        return;
      }
      const leftGroups = leftChunks(nGroups);
      const pair = outboard.subarray(OUTBOARD_HEADER_LEN + 64 * index, OUTBOARD_HEADER_LEN + 64 * index + 64);
      build(firstGroup, leftGroups, index + 1, false, pair, 0);
      build(firstGroup + leftGroups, nGroups - leftGroups, index + leftGroups, false, pair, 32);
      kernel.parentCv(pair, root, out, outOffset);
    };
    build(0, this.groupsDone, 0, true, id, 0);
    return { id: id.slice(), length, outboard };
  }
}

/** The id and outboard of an object held in memory. */
export function createOutboard(
  data: Uint8Array,
  groupLog = DEFAULT_GROUP_LOG,
  kernel?: Blake3Kernel,
): { id: Uint8Array; outboard: Uint8Array } {
  const { id, outboard } = new OutboardBuilder(groupLog, kernel).update(data).finish();
  return { id, outboard };
}

/** A byte range of the object that a proof needs: one group. */
export interface GroupRead {
  group: number;
  offset: number;
  length: number;
}

/** The groups a proof of chunks [start, start + count) reads from the object (the tail comes from the outboard). */
export function groupsToRead(outboard: Outboard, start: number, count = 1): GroupRead[] {
  proofTarget(outboard.length, start, count);
  const groupBytes = outboard.groupChunks * CHUNK_LEN;
  const reads: GroupRead[] = [];
  const firstGroup = Math.floor(start / outboard.groupChunks);
  const lastGroup = Math.floor((start + count - 1) / outboard.groupChunks);
  for (let g = firstGroup; g <= lastGroup; g++) {
    const offset = g * groupBytes;
    reads.push({ group: g, offset, length: Math.min(groupBytes, outboard.length - offset) });
  }
  return reads;
}

/**
 * A proof of chunks [start, start + count) from an outboard and the object's groups that the range touches.
 * readGroup(offset, length) returns those bytes of the object (see groupsToRead); nothing else is read.
 */
export function makeProof(
  outboard: Outboard,
  readGroup: (offset: number, length: number) => Uint8Array,
  start: number,
  count = 1,
  kernel: Blake3Kernel = blake3Kernel(),
): Uint8Array {
  const { length, groupChunks, groups, bytes } = outboard;
  const target = proofTarget(length, start, count);
  const proof = new Uint8Array(proofLength(length, start, count));
  const writer = new ProofWriter(proof);
  const chunks = chunkCount(length);
  const scratch = new Uint8Array(32);
  const groupData = (first: number, n: number): Uint8Array => {
    const offset = first * CHUNK_LEN;
    const want = Math.min(n * CHUNK_LEN, length - offset);
    const data = readGroup(offset, want);
    if (data.length !== want)
      throw new OutboardError(
        `read ${data.length} bytes of the object at ${offset}, expected ${want}: the object is shorter than its outboard says`,
      );
    return data;
  };
  const walk = (first: number, n: number, index: number): void => {
    if (n > groupChunks) {
      writer.take(64).set(bytes.subarray(OUTBOARD_HEADER_LEN + 64 * index, OUTBOARD_HEADER_LEN + 64 * index + 64));
      const left = leftChunks(n);
      if (target.overlaps(first, left)) walk(first, left, index + 1);
      if (target.overlaps(first + left, n - left)) walk(first + left, n - left, index + left / groupChunks);
      return;
    }
    // A whole group (the last one may be short).
    if (first < target.end && target.start < first + n) {
      emitFromData(kernel, target, groupData(first, n), first, n, groups === 1, writer, scratch);
    } else {
      // Only the tail is wanted from this (last) group: the outboard's tail section holds exactly those items.
      writer.take(bytes.length - outboard.tailOffset).set(bytes.subarray(outboard.tailOffset));
    }
  };
  walk(0, chunks, 0);
  if (writer.offset !== proof.length) throw new Error("proof length mismatch (internal error)");
  return proof;
}

/** makeProof for objects read asynchronously (from disk): fetches the groups first, then builds the proof. */
export async function makeProofAsync(
  outboard: Outboard,
  readAt: (offset: number, length: number) => Promise<Uint8Array>,
  start: number,
  count = 1,
  kernel?: Blake3Kernel,
): Promise<Uint8Array> {
  const reads = groupsToRead(outboard, start, count);
  const fetched = new Map<number, Uint8Array>();
  for (const r of reads) fetched.set(r.offset, await readAt(r.offset, r.length));
  return makeProof(
    outboard,
    (offset, len) => {
      const data = fetched.get(offset);
      if (!data) throw new Error(`proof walk wanted bytes at ${offset} that were not prefetched (internal error)`);
      return data.subarray(0, len);
    },
    start,
    count,
    kernel,
  );
}
