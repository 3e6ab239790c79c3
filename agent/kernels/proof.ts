// Verified streaming on BLAKE3's own tree: proofs that chunks belong to an object known only by its id (its
// BLAKE3 hash) and its length, and the verifier. The encoding is documented byte by byte in wasm/README.md.
//
// A proof is the pre-order walk of the tree, restricted to the nodes that cover a target chunk: each such parent
// node contributes its block (the left and right children's chaining values, 64 bytes), each chunk of the range
// its bytes, and so does the last chunk (the tail, see tree.ts) when it is outside the range. The verifier checks every
// parent against the chaining value its own parent vouched for, top-down, so each chunk is verified as soon as
// its bytes arrive: a stream never has to be buffered whole.
import { type Blake3Kernel, blake3Kernel, CHUNK_LEN } from "./blake3.js";
import { chunkCount, chunkLength, leftChunks, proofLength, proofTarget, type Target } from "./tree.js";

/** Writes proof items for `target` into out, starting at out.offset. */
export class ProofWriter {
  offset = 0;
  constructor(readonly bytes: Uint8Array) {}

  take(n: number): Uint8Array {
    if (this.offset + n > this.bytes.length)
      throw new Error("proof buffer overflow (tree walk and proof length disagree)");
    const view = this.bytes.subarray(this.offset, this.offset + n);
    this.offset += n;
    return view;
  }
}

/**
 * Emits the proof items of the subtree (first, n) for `target`, computing every chaining value it needs from
 * `data`, the subtree's bytes (data[0] is the first byte of chunk `first`). Returns the subtree's chaining
 * value (with root, the object's id) into cvOut.
 */
export function emitFromData(
  kernel: Blake3Kernel,
  target: Target,
  data: Uint8Array,
  first: number,
  n: number,
  root: boolean,
  writer: ProofWriter,
  cvOut: Uint8Array,
  cvOffset = 0,
): void {
  if (n === 1) {
    // In the range or the tail: either way the whole chunk.
    writer.take(data.length).set(data);
    kernel.chunkCv(data, first, root, cvOut, cvOffset);
    return;
  }
  const left = leftChunks(n);
  const split = left * CHUNK_LEN;
  const pair = writer.take(64);
  const leftData = data.subarray(0, split);
  const rightData = data.subarray(split);
  if (target.overlaps(first, left)) emitFromData(kernel, target, leftData, first, left, false, writer, pair, 0);
  else kernel.subtreeCv(leftData, first, pair, 0);
  if (target.overlaps(first + left, n - left))
    emitFromData(kernel, target, rightData, first + left, n - left, false, writer, pair, 32);
  else kernel.subtreeCv(rightData, first + left, pair, 32);
  kernel.parentCv(pair, root, cvOut, cvOffset);
}

/** A proof of chunks [start, start + count) of `data`, the whole object, computed without an outboard. */
export function makeProofFromData(
  data: Uint8Array,
  start: number,
  count = 1,
  kernel: Blake3Kernel = blake3Kernel(),
): Uint8Array {
  const target = proofTarget(data.length, start, count);
  const proof = new Uint8Array(proofLength(data.length, start, count));
  const writer = new ProofWriter(proof);
  emitFromData(kernel, target, data, 0, chunkCount(data.length), true, writer, new Uint8Array(32));
  return proof;
}

export class ProofError extends Error {
  override name = "ProofError";
}

type Pending =
  | { kind: "parent"; first: number; n: number; expected: Uint8Array; root: boolean }
  | { kind: "chunk"; index: number; expected: Uint8Array; root: boolean; inRange: boolean };

/**
 * Verifies a proof as its bytes arrive. push() returns the chunks of the range verified so far, in order;
 * it throws ProofError at the first byte that does not check out. finish() throws unless the proof was
 * complete and had nothing extra.
 */
export class ProofVerifier {
  private readonly target: Target;
  private readonly pending: Pending[] = [];
  private buffered: Uint8Array = new Uint8Array(0);
  private failed = false;
  private received = 0;
  /** The proof's exact size, known from the length and range alone. */
  readonly expectedLength: number;

  constructor(
    id: Uint8Array,
    readonly length: number,
    start: number,
    count = 1,
    private readonly kernel: Blake3Kernel = blake3Kernel(),
  ) {
    if (id.length !== 32) throw new RangeError(`object id must be 32 bytes, got ${id.length}`);
    this.target = proofTarget(length, start, count);
    this.expectedLength = proofLength(length, start, count);
    const chunks = chunkCount(length);
    this.pending.push(
      chunks === 1
        ? { kind: "chunk", index: 0, expected: id.slice(), root: true, inRange: true }
        : { kind: "parent", first: 0, n: chunks, expected: id.slice(), root: true },
    );
  }

  /** True once every expected byte has arrived and checked out. */
  get done(): boolean {
    return this.pending.length === 0;
  }

  push(bytes: Uint8Array): Uint8Array[] {
    if (this.failed) throw new ProofError("proof already failed");
    this.received += bytes.length;
    let input = bytes;
    if (this.buffered.length > 0) {
      input = new Uint8Array(this.buffered.length + bytes.length);
      input.set(this.buffered);
      input.set(bytes, this.buffered.length);
    }
    const verified: Uint8Array[] = [];
    let offset = 0;
    try {
      while (this.pending.length > 0) {
        const item = this.pending[this.pending.length - 1]!;
        const need = this.itemLength(item);
        if (input.length - offset < need) break;
        this.pending.pop();
        const itemBytes = input.subarray(offset, offset + need);
        offset += need;
        const chunk = this.check(item, itemBytes);
        if (chunk) verified.push(chunk);
      }
      if (this.pending.length === 0 && offset < input.length) {
        throw new ProofError(
          `proof is longer than the ${this.expectedLength} bytes expected for this length and range`,
        );
      }
    } catch (err) {
      this.failed = true;
      throw err;
    }
    // Expected values still pending are views of this call's input, which the caller may reuse: keep copies.
    for (const item of this.pending) item.expected = item.expected.slice();
    this.buffered = input.slice(offset);
    return verified;
  }

  finish(): void {
    if (this.failed) throw new ProofError("proof failed");
    // An empty object's proof is zero bytes: a stream that delivered nothing still has that chunk to check.
    if (this.pending.length > 0) this.push(new Uint8Array(0));
    if (this.pending.length > 0) {
      throw new ProofError(
        `proof is truncated: ${this.received} of the ${this.expectedLength} bytes expected for this length and range`,
      );
    }
  }

  private itemLength(item: Pending): number {
    return item.kind === "parent" ? 64 : chunkLength(this.length, item.index);
  }

  /** Checks one item against the chaining value its parent vouched for; returns a verified chunk's bytes. */
  private check(item: Pending, bytes: Uint8Array): Uint8Array | undefined {
    const { kernel } = this;
    switch (item.kind) {
      case "parent": {
        if (!equal(kernel.parentCvView(bytes, item.root), item.expected)) {
          throw new ProofError(`parent node over chunks ${item.first}..${item.first + item.n - 1} does not match`);
        }
        const left = leftChunks(item.n);
        // Pushed right first so that the left subtree, which comes first in the proof, is checked first. The
        // expected values are views of the proof bytes, which push() never modifies.
        this.expect(item.first + left, item.n - left, bytes.subarray(32, 64));
        this.expect(item.first, left, bytes.subarray(0, 32));
        return undefined;
      }
      case "chunk": {
        if (!equal(kernel.chunkCvView(bytes, item.index, item.root), item.expected)) {
          throw new ProofError(
            item.inRange
              ? `chunk ${item.index} does not match`
              : `last chunk ${item.index} does not match: the length or the tail is wrong`,
          );
        }
        // The tail only vouches for the length; it is not part of the requested range.
        return item.inRange ? bytes.slice() : undefined;
      }
    }
  }

  private expect(first: number, n: number, expected: Uint8Array): void {
    const { target } = this;
    if (!target.overlaps(first, n)) return;
    if (n > 1) this.pending.push({ kind: "parent", first, n, expected, root: false });
    else this.pending.push({ kind: "chunk", index: first, expected, root: false, inRange: target.inRange(first) });
  }
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/**
 * Checks a whole proof of chunks [start, start + count) of the object (id, length). Returns the verified chunk
 * bytes (concatenated), or null when the proof is invalid. Throws RangeError on a bad range or id size.
 */
export function verifyProof(
  id: Uint8Array,
  length: number,
  start: number,
  count: number,
  proof: Uint8Array,
  kernel: Blake3Kernel = blake3Kernel(),
): Uint8Array | null {
  const verifier = new ProofVerifier(id, length, start, count, kernel);
  if (proof.length !== verifier.expectedLength) return null;
  try {
    const chunks = verifier.push(proof);
    verifier.finish();
    if (chunks.length === 1) return chunks[0]!;
    const joined = new Uint8Array(chunks.reduce((sum, c) => sum + c.length, 0));
    let at = 0;
    for (const c of chunks) {
      joined.set(c, at);
      at += c.length;
    }
    return joined;
  } catch (err) {
    if (err instanceof ProofError) return null;
    throw err;
  }
}
