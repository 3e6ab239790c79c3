// The shape of BLAKE3's hash tree, and the walk that proofs and outboards share.
//
// An object of `length` bytes has max(1, ceil(length / 1024)) chunks. A node covering n > 1 chunks has a left
// child of the largest power of two chunks below n and a right child of the rest (BLAKE3 specification,
// section 2.5). A proof names a target: a range of chunks, plus the object's last chunk (the "tail") whenever the
// range does not include it, because only the last chunk says how long the object is. All of it is needed:
// a chunk's final compression records the final block's length but not how many blocks came before it, so
// a tail of just the final block would also verify under lengths 64, 128, ... bytes longer or shorter.
import { CHUNK_LEN } from "./blake3.js";

/** Number of chunks in an object of `length` bytes; the empty object has one (empty) chunk. */
export function chunkCount(length: number): number {
  return Math.max(1, Math.ceil(length / CHUNK_LEN));
}

/** Chunks in the left child of a node of n >= 2 chunks: the largest power of two below n. */
export function leftChunks(n: number): number {
  // clz32 covers objects up to 2 TiB (2^31 chunks) and is far cheaper than log2 on this hot path.
  return n <= 2 ** 31 ? 2 ** (31 - Math.clz32(n - 1)) : 2 ** Math.floor(Math.log2(n - 1));
}

/** Byte length of chunk `index` of an object of `length` bytes. */
export function chunkLength(length: number, index: number): number {
  return Math.min(CHUNK_LEN, length - index * CHUNK_LEN);
}

/** The chunks a proof covers: [start, end), and `tail` (the last chunk's index, or -1 when the range has it). */
export class Target {
  readonly tail: number;

  constructor(
    readonly length: number,
    readonly start: number,
    readonly end: number,
  ) {
    const last = chunkCount(length) - 1;
    this.tail = end > last ? -1 : last;
  }

  /** A target of the tail alone (an outboard's tail section). */
  static tailOnly(length: number): Target {
    return new Target(length, 0, 0);
  }

  overlaps(first: number, n: number): boolean {
    return (first < this.end && this.start < first + n) || (this.tail >= first && this.tail < first + n);
  }

  inRange(index: number): boolean {
    return index >= this.start && index < this.end;
  }
}

/**
 * Validates a chunk range against an object's length; throws a RangeError with a one-line reason.
 * Returns the target of a proof of chunks [start, start + count).
 */
export function proofTarget(length: number, start: number, count: number): Target {
  if (!Number.isSafeInteger(length) || length < 0)
    throw new RangeError(`object length must be a non-negative integer, got ${length}`);
  const chunks = chunkCount(length);
  if (!Number.isSafeInteger(start) || start < 0)
    throw new RangeError(`chunk index must be a non-negative integer, got ${start}`);
  if (!Number.isSafeInteger(count) || count < 1)
    throw new RangeError(`chunk count must be a positive integer, got ${count}`);
  if (start >= chunks) {
    throw new RangeError(
      `chunk ${start} is past the end: an object of ${length} bytes has ${chunks} chunk${chunks === 1 ? "" : "s"} (0..${chunks - 1})`,
    );
  }
  if (start + count > chunks) {
    throw new RangeError(
      `chunks ${start}..${start + count - 1} run past the end: an object of ${length} bytes has ${chunks} chunk${chunks === 1 ? "" : "s"} (0..${chunks - 1})`,
    );
  }
  return new Target(length, start, start + count);
}

/** Byte length of the proof items that a walk of the subtree (first, n) emits for `target`. */
export function itemsLength(target: Target, first: number, n: number): number {
  if (n === 1) return chunkLength(target.length, first);
  const left = leftChunks(n);
  let total = 64;
  if (target.overlaps(first, left)) total += itemsLength(target, first, left);
  if (target.overlaps(first + left, n - left)) total += itemsLength(target, first + left, n - left);
  return total;
}

/** Byte length of a proof of chunks [start, start + count) of an object of `length` bytes. */
export function proofLength(length: number, start: number, count = 1): number {
  return itemsLength(proofTarget(length, start, count), 0, chunkCount(length));
}
