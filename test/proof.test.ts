// Verified streaming: proofs of chunk ranges (agent/kernels/proof.ts), their tree walk (tree.ts) and outboards
// (outboard.ts), for both kernel builds. The encodings are specified byte by byte in wasm/README.md; this file
// checks them against a reference written here from that text and from the BLAKE3 specification (a plain-JS
// compression function, itself checked against @noble/hashes), so that prover and verifier cannot agree on a
// wrong format.
import { blake3 as nobleBlake3 } from "@noble/hashes/blake3.js";
import { describe, expect, it } from "vitest";
import { type Blake3Build, type Blake3Kernel, blake3, blake3Kernel } from "../agent/kernels/blake3";
import {
  DEFAULT_GROUP_LOG,
  OUTBOARD_HEADER_LEN,
  type Outboard,
  OutboardBuilder,
  OutboardError,
  createOutboard,
  groupsToRead,
  makeProof,
  makeProofAsync,
  outboardLength,
  parseOutboard,
} from "../agent/kernels/outboard";
import { ProofError, ProofVerifier, makeProofFromData, verifyProof } from "../agent/kernels/proof";
import { chunkCount, leftChunks, proofLength } from "../agent/kernels/tree";
import { randomBytes, rngFor, testSeed } from "./helpers/random";
import { errorMessage } from "../agent/util/errors";

// Every random input comes from this seed: a failure prints it, and PROOF_TEST_SEED=<seed> replays the run.
const SEED = testSeed("PROOF_TEST_SEED");
const BUILDS: readonly Blake3Build[] = ["simd", "scalar"];
const CHUNK = 1024;
const KiB = 1024;
const MiB = 1024 * 1024;

// --- seeded randomness ------------------------------------------------------------------------------------------

const objects = new Map<number, Uint8Array>();
/** The random object of `length` bytes (the same one for every test and build of a run). */
function objectOf(length: number): Uint8Array {
  let data = objects.get(length);
  if (!data) {
    data = randomBytes(rngFor(SEED, `object ${length}`), length);
    objects.set(length, data);
  }
  return data;
}

/** Splits `bytes` into pieces of random sizes, with many 1-byte and empty pieces; at least one piece. */
function randomPieces(next: () => number, bytes: Uint8Array, large = 3000): Uint8Array[] {
  const pieces: Uint8Array[] = [];
  for (let offset = 0; offset < bytes.length || pieces.length === 0;) {
    const r = next() % 5;
    const size =
      r === 0
        ? 1
        : r === 1
          ? next() % 8
          : r === 2
            ? next() % 200
            : r === 3
              ? 64 + (next() % 3) - 1
              : next() % (large + 1);
    pieces.push(bytes.subarray(offset, offset + size));
    offset += size;
  }
  return pieces;
}

// --- small helpers ----------------------------------------------------------------------------------------------

const hex = (bytes: Uint8Array): string =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/** "equal", or where two byte strings first differ (readable in a failure, unlike a megabyte of hex). */
function compareBytes(actual: Uint8Array | null | undefined, expected: Uint8Array): string {
  if (!actual) return `got ${String(actual)}`;
  const n = Math.min(actual.length, expected.length);
  for (let i = 0; i < n; i++) {
    if (actual[i] !== expected[i])
      return `first difference at byte ${i} of ${actual.length} (expected length ${expected.length})`;
  }
  return actual.length === expected.length ? "equal" : `lengths differ: ${actual.length} vs ${expected.length}`;
}

function chunkOf(data: Uint8Array, index: number): Uint8Array {
  return data.subarray(index * CHUNK, Math.min(data.length, (index + 1) * CHUNK));
}

function rangeOf(data: Uint8Array, start: number, count: number): Uint8Array {
  return data.subarray(start * CHUNK, Math.min(data.length, (start + count) * CHUNK));
}

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

async function rejected(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  return undefined;
}

/** Asserts an error of the given class whose message is a single non-empty line; returns the message. */
function expectOneLineError(err: unknown, type: new (...args: never[]) => Error, context: string): string {
  expect(err, `${context}: expected ${type.name}, got ${String(err)}`).toBeInstanceOf(type);
  const message = errorMessage(err);
  expect(message.length, `${context}: empty message`).toBeGreaterThan(0);
  expect(message, `${context}: message is not one line`).not.toMatch(/[\r\n]/);
  return message;
}

/** Flips bit `bit` (0 = least significant) of a safe integer without 32-bit wrap-around. */
function flipBit(value: number, bit: number): number {
  return Number(BigInt(value) ^ (1n << BigInt(bit)));
}

// --- reference: BLAKE3 in plain JS (specification sections 2.1 to 2.5), and the encodings of wasm/README.md -----

const IV = new Uint32Array([
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
]);
const MSG_PERMUTATION = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
const CHUNK_START = 1;
const CHUNK_END = 2;
const PARENT = 4;
const ROOT = 8;

function g(v: Uint32Array, a: number, b: number, c: number, d: number, x: number, y: number): void {
  v[a] = v[a]! + v[b]! + x;
  v[d] = ((v[d]! ^ v[a]!) >>> 16) | ((v[d]! ^ v[a]!) << 16);
  v[c] = v[c]! + v[d]!;
  v[b] = ((v[b]! ^ v[c]!) >>> 12) | ((v[b]! ^ v[c]!) << 20);
  v[a] = v[a]! + v[b]! + y;
  v[d] = ((v[d]! ^ v[a]!) >>> 8) | ((v[d]! ^ v[a]!) << 24);
  v[c] = v[c]! + v[d]!;
  v[b] = ((v[b]! ^ v[c]!) >>> 7) | ((v[b]! ^ v[c]!) << 25);
}

/** The compression function, truncated to the 8-word chaining value. block: up to 64 bytes (zero-padded). */
function compress(cv: Uint32Array, block: Uint8Array, counter: number, flags: number): Uint32Array {
  const padded = new Uint8Array(64);
  padded.set(block);
  let m = new Uint32Array(16);
  const view = new DataView(padded.buffer);
  for (let i = 0; i < 16; i++) m[i] = view.getUint32(4 * i, true);
  const v = new Uint32Array(16);
  v.set(cv);
  v.set(IV.subarray(0, 4), 8);
  v[12] = counter >>> 0;
  v[13] = Math.floor(counter / 2 ** 32);
  v[14] = block.length;
  v[15] = flags;
  for (let round = 0; round < 7; round++) {
    g(v, 0, 4, 8, 12, m[0]!, m[1]!);
    g(v, 1, 5, 9, 13, m[2]!, m[3]!);
    g(v, 2, 6, 10, 14, m[4]!, m[5]!);
    g(v, 3, 7, 11, 15, m[6]!, m[7]!);
    g(v, 0, 5, 10, 15, m[8]!, m[9]!);
    g(v, 1, 6, 11, 12, m[10]!, m[11]!);
    g(v, 2, 7, 8, 13, m[12]!, m[13]!);
    g(v, 3, 4, 9, 14, m[14]!, m[15]!);
    const permuted = new Uint32Array(16);
    for (let i = 0; i < 16; i++) permuted[i] = m[MSG_PERMUTATION[i]!]!;
    m = permuted;
  }
  const out = new Uint32Array(8);
  for (let i = 0; i < 8; i++) out[i] = v[i]! ^ v[i + 8]!;
  return out;
}

function wordsToBytes(words: Uint32Array): Uint8Array {
  const out = new Uint8Array(32);
  const view = new DataView(out.buffer);
  for (let i = 0; i < 8; i++) view.setUint32(4 * i, words[i]!, true);
  return out;
}

function refChunkCv(chunk: Uint8Array, index: number, root: boolean): Uint8Array {
  const blocks = Math.max(1, Math.ceil(chunk.length / 64));
  let cv: Uint32Array = IV;
  for (let b = 0; b < blocks; b++) {
    const last = b === blocks - 1;
    const flags = (b === 0 ? CHUNK_START : 0) | (last ? CHUNK_END | (root ? ROOT : 0) : 0);
    cv = compress(cv, chunk.subarray(64 * b, 64 * b + 64), index, flags);
  }
  return wordsToBytes(cv);
}

function refParentCv(pair: Uint8Array, root: boolean): Uint8Array {
  return wordsToBytes(compress(IV, pair, 0, PARENT | (root ? ROOT : 0)));
}

/** Left child of a node of n >= 2 chunks: the largest power of two below n (computed without the code under test). */
function refLeft(n: number): number {
  let left = 1;
  while (left * 2 < n) left *= 2;
  return left;
}

/** The BLAKE3 tree of one object, with every node's chaining value, and the encodings built from it. */
class RefTree {
  readonly chunks: number;
  readonly id: Uint8Array;
  private readonly cvs = new Map<string, Uint8Array>();

  constructor(readonly data: Uint8Array) {
    this.chunks = Math.max(1, Math.ceil(data.length / CHUNK));
    this.id = this.cv(0, this.chunks, true);
  }

  cv(first: number, n: number, root = false): Uint8Array {
    const key = `${first}:${n}:${root}`;
    let cv = this.cvs.get(key);
    if (!cv) {
      if (n === 1) {
        cv = refChunkCv(chunkOf(this.data, first), first, root);
      } else {
        const left = refLeft(n);
        cv = refParentCv(concat([this.cv(first, left), this.cv(first + left, n - left)]), root);
      }
      this.cvs.set(key, cv);
    }
    return cv;
  }

  /** Proof items, in pre-order, of the nodes under (first, n) that cover a chunk of [start, end) or the tail. */
  private items(start: number, end: number, first: number, n: number, out: Uint8Array[]): void {
    const tail = end >= this.chunks ? -1 : this.chunks - 1;
    const covers = (f: number, k: number): boolean => (f < end && start < f + k) || (tail >= f && tail < f + k);
    if (!covers(first, n)) return;
    if (n === 1) {
      out.push(chunkOf(this.data, first));
      return;
    }
    const left = refLeft(n);
    out.push(this.cv(first, left), this.cv(first + left, n - left));
    this.items(start, end, first, left, out);
    this.items(start, end, first + left, n - left, out);
  }

  proof(start: number, count: number): Uint8Array {
    const out: Uint8Array[] = [];
    this.items(start, start + count, 0, this.chunks, out);
    return concat(out);
  }

  outboard(groupLog: number): Uint8Array {
    const groupChunks = 2 ** groupLog;
    const groups = Math.ceil(this.chunks / groupChunks);
    const header = new Uint8Array(OUTBOARD_HEADER_LEN);
    header.set([0x42, 0x33, 0x4f, 0x42, 1, groupLog, 0, 0]);
    new DataView(header.buffer).setBigUint64(8, BigInt(this.data.length), true);
    header.set(this.id, 16);
    const parts: Uint8Array[] = [header];
    const above = (first: number, n: number): void => {
      if (n <= groupChunks) return;
      const left = refLeft(n);
      parts.push(this.cv(first, left), this.cv(first + left, n - left));
      above(first, left);
      above(first + left, n - left);
    };
    above(0, this.chunks);
    if (groups > 1) {
      const lastFirst = (groups - 1) * groupChunks;
      this.items(0, 0, lastFirst, this.chunks - lastFirst, parts);
    }
    return concat(parts);
  }
}

const trees = new Map<number, RefTree>();
function treeOf(length: number): RefTree {
  let tree = trees.get(length);
  if (!tree) {
    tree = new RefTree(objectOf(length));
    trees.set(length, tree);
  }
  return tree;
}

// --- the verifier, driven the way a stream drives it -----------------------------------------------------------

interface StreamResult {
  chunks: Uint8Array[];
  error: unknown;
  /** True when every push passed and finish() passed. */
  accepted: boolean;
}

/**
 * Feeds `pieces` to a fresh verifier through one reused buffer that is scribbled over after every push (as a
 * socket reader reuses its buffer), then calls finish().
 */
function stream(
  kernel: Blake3Kernel,
  id: Uint8Array,
  length: number,
  start: number,
  count: number,
  pieces: readonly Uint8Array[],
): StreamResult {
  const chunks: Uint8Array[] = [];
  const scratch = new Uint8Array(Math.max(1, ...pieces.map((p) => p.length)));
  try {
    const verifier = new ProofVerifier(id, length, start, count, kernel);
    for (const piece of pieces) {
      scratch.set(piece);
      chunks.push(...verifier.push(scratch.subarray(0, piece.length)));
      scratch.fill(0xa5);
    }
    verifier.finish();
    return { chunks, error: undefined, accepted: true };
  } catch (err) {
    return { chunks, error: err, accepted: false };
  }
}

/** verifyProof, with a RangeError counted as a refusal. */
function verifyOrRefuse(
  kernel: Blake3Kernel,
  id: Uint8Array,
  length: number,
  start: number,
  count: number,
  proof: Uint8Array,
): Uint8Array | null | RangeError {
  try {
    return verifyProof(id, length, start, count, proof, kernel);
  } catch (err) {
    if (err instanceof RangeError) return err;
    throw err;
  }
}

// --- the objects ------------------------------------------------------------------------------------------------

const LENGTHS = [
  0,
  1,
  63,
  64,
  65,
  1023,
  1024,
  1025,
  2047,
  2048,
  2049,
  3072,
  4095,
  4096,
  4097,
  16383,
  16384,
  16385,
  16384 * 3 + 1,
  65536,
  100000,
  MiB + 7,
];
const GROUP_LOGS = [0, 1, 4, 6];

/** The chunks challenged alone: all of them, or every 61st (and the last) for the 1 MiB object. */
function singleChunks(chunks: number): number[] {
  const step = chunks > 200 ? 61 : 1;
  const out: number[] = [];
  for (let i = 0; i < chunks; i += step) out.push(i);
  if (out[out.length - 1] !== chunks - 1) out.push(chunks - 1);
  return out;
}

/** Multi-chunk ranges: counts 2, 3 and 17 at the start, at a random place and at the end; and the whole object. */
function multiRanges(next: () => number, chunks: number): [number, number][] {
  const ranges: [number, number][] = [];
  for (const count of [2, 3, 17]) {
    if (count > chunks) continue;
    ranges.push([0, count], [next() % (chunks - count + 1), count], [chunks - count, count]);
  }
  if (chunks > 1) ranges.push([0, chunks]);
  return ranges;
}

// ==================================================================================================================

describe("the reference used by these tests", () => {
  it.each(LENGTHS)("computes BLAKE3 of %i bytes as @noble/hashes does", (length) => {
    expect(hex(treeOf(length).id), `seed ${SEED}, length ${length}`).toBe(hex(nobleBlake3(objectOf(length))));
  });

  it("matches the documented proof sizes of a 4 MiB object (wasm/README.md)", () => {
    expect(proofLength(4 * MiB, 0, 1)).toBe(23 * 64 + 2 * 1024);
    expect(proofLength(4 * MiB, 4095, 1)).toBe(12 * 64 + 1024);
    expect(outboardLength(4 * MiB)).toBe(48 + 255 * 64 + 4 * 64 + 1024);
  });
});

describe("tree shape", () => {
  it("splits a node at the largest power of two below its width, up to the largest safe object", () => {
    const widths: number[] = [2, 3, 4, 5, 6, 7, 8, 9, 1023, 1024, 1025];
    for (let k = 2; k <= 43; k++) widths.push(2 ** k - 1, 2 ** k, 2 ** k + 1);
    const next = rngFor(SEED, "widths");
    for (let i = 0; i < 2000; i++) widths.push(2 + ((next() * 2 ** 11 + (next() >>> 21)) % (2 ** 43 - 1)));
    const wrong = widths.filter((n) => leftChunks(n) !== refLeft(n)).map((n) => `${n}: ${leftChunks(n)}`);
    expect(wrong, `seed ${SEED}`).toEqual([]);
  });

  it("sizes proofs of huge objects as the documented walk does", () => {
    // Lengths up to 2^53 - 1 bytes: the proof walk must not lose precision where chunk counts pass 2^31.
    const countItems = (length: number, start: number, count: number): number => {
      const chunks = Math.max(1, Math.ceil(length / CHUNK));
      const end = start + count;
      const tail = end >= chunks ? -1 : chunks - 1;
      const covers = (f: number, k: number): boolean => (f < end && start < f + k) || (tail >= f && tail < f + k);
      const walk = (f: number, k: number): number => {
        if (!covers(f, k)) return 0;
        if (k === 1) return Math.min(CHUNK, length - f * CHUNK);
        const left = refLeft(k);
        return 64 + walk(f, left) + walk(f + left, k - left);
      };
      return walk(0, chunks);
    };
    const lengths = [2 ** 31 * CHUNK + 1, 2 ** 32 * CHUNK - 5, 2 ** 40 + 77, Number.MAX_SAFE_INTEGER, 2 ** 52 + 3];
    for (const length of lengths) {
      const chunks = Math.ceil(length / CHUNK);
      for (const [start, count] of [
        [0, 1],
        [chunks - 1, 1],
        [2 ** 31 - 1, 2],
        [2 ** 31 - 2, 3],
        [Math.floor(chunks / 3), 17],
        [chunks - 3, 3],
      ] as const) {
        if (start + count > chunks) continue;
        expect(proofLength(length, start, count), `length ${length}, chunks ${start}+${count}`).toBe(
          countItems(length, start, count),
        );
      }
    }
  });
});

describe.each(BUILDS)("verified streaming, %s build", (build) => {
  const kernel = blake3Kernel(build);

  it("uses the requested build", () => {
    expect(kernel.build).toBe(build);
  });

  // --- round trips ----------------------------------------------------------------------------------------------

  describe("round trips", () => {
    it.each(LENGTHS)("an object of %i bytes: every chunk and multi-chunk ranges, every group size", (length) => {
      const data = objectOf(length);
      const tree = treeOf(length);
      const next = rngFor(SEED, `round trip ${length} ${build}`);
      const chunks = chunkCount(length);
      expect(chunks).toBe(tree.chunks);
      const id = kernel.hash(data);
      expect(hex(id), `seed ${SEED}, length ${length}`).toBe(hex(tree.id));

      const outboards = GROUP_LOGS.map((groupLog) => {
        const { id: obId, outboard } = createOutboard(data, groupLog, kernel);
        expect(hex(obId), `length ${length}, group log ${groupLog}`).toBe(hex(tree.id));
        return { groupLog, parsed: parseOutboard(outboard) };
      });

      const ranges: [number, number][] = [
        ...singleChunks(chunks).map((i): [number, number] => [i, 1]),
        ...multiRanges(next, chunks),
      ];
      for (const [start, count] of ranges) {
        const context = `seed ${SEED}, ${build}, length ${length}, chunks ${start}..${start + count - 1}`;
        const expectedChunks = Array.from({ length: count }, (_, i) => chunkOf(data, start + i));
        const expectedBytes = rangeOf(data, start, count);

        const proof = makeProofFromData(data, start, count, kernel);
        expect(
          compareBytes(proof, tree.proof(start, count)),
          `${context}: makeProofFromData vs the documented encoding`,
        ).toBe("equal");
        expect(proof.length, `${context}: proofLength`).toBe(proofLength(length, start, count));

        for (const { groupLog, parsed } of outboards) {
          const reads: [number, number][] = [];
          const fromOutboard = makeProof(
            parsed,
            (offset, len) => {
              reads.push([offset, len]);
              return data.subarray(offset, offset + len);
            },
            start,
            count,
            kernel,
          );
          expect(
            compareBytes(fromOutboard, proof),
            `${context}, group log ${groupLog}: makeProof vs makeProofFromData`,
          ).toBe("equal");
          expect(reads, `${context}, group log ${groupLog}: reads`).toEqual(
            groupsToRead(parsed, start, count).map((r) => [r.offset, r.length]),
          );
        }

        expect(
          compareBytes(verifyProof(id, length, start, count, proof, kernel), expectedBytes),
          `${context}: verifyProof`,
        ).toBe("equal");

        for (let round = 0; round < 2; round++) {
          const pieces = randomPieces(next, proof, Math.max(3000, proof.length >> 3));
          const result = stream(kernel, id, length, start, count, pieces);
          expect(result.error, `${context}, piece round ${round}: ProofVerifier`).toBeUndefined();
          expect(result.chunks.length, `${context}, piece round ${round}: chunk count`).toBe(count);
          result.chunks.forEach((chunk, i) => {
            expect(
              compareBytes(chunk, expectedChunks[i]!),
              `${context}, piece round ${round}: chunk ${start + i}`,
            ).toBe("equal");
          });
        }
      }
    });

    it("releases each chunk on the push that delivers its last byte, fed one byte at a time", () => {
      for (const [length, start, count] of [
        [5000, 1, 3],
        [70000, 30, 5],
        [2049, 0, 3],
        [16385, 15, 2],
      ] as const) {
        const data = objectOf(length);
        const id = kernel.hash(data);
        const proof = makeProofFromData(data, start, count, kernel);
        const verifier = new ProofVerifier(id, length, start, count, kernel);
        const released: number[] = [];
        for (let p = 0; p < proof.length; p++) {
          expect(verifier.done, `length ${length}: done before byte ${p}`).toBe(false);
          for (const chunk of verifier.push(proof.subarray(p, p + 1))) {
            const index = start + released.length;
            expect(compareBytes(chunk, chunkOf(data, index)), `length ${length}, chunk ${index}`).toBe("equal");
            // The chunk's bytes end exactly where this push ended.
            expect(
              compareBytes(proof.subarray(p + 1 - chunk.length, p + 1), chunk),
              `length ${length}, chunk ${index} position`,
            ).toBe("equal");
            released.push(p);
          }
        }
        expect(released.length, `length ${length}`).toBe(count);
        expect(verifier.done).toBe(true);
        verifier.finish();
      }
    });

    it("verifies the empty object's empty proof", () => {
      const id = kernel.hash(new Uint8Array(0));
      expect(makeProofFromData(new Uint8Array(0), 0, 1, kernel).length).toBe(0);
      expect(verifyProof(id, 0, 0, 1, new Uint8Array(0), kernel)).toEqual(new Uint8Array(0));
      const verifier = new ProofVerifier(id, 0, 0, 1, kernel);
      expect(verifier.push(new Uint8Array(0))).toEqual([new Uint8Array(0)]);
      verifier.finish();
    });

    it("finish() accepts the empty object's proof when the stream delivered no bytes at all", () => {
      // A proof stream of zero bytes may produce no data events: the verifier is then finished without a push.
      const verifier = new ProofVerifier(kernel.hash(new Uint8Array(0)), 0, 0, 1, kernel);
      expect(() => verifier.finish()).not.toThrow();
    });
  });

  // --- ids and outboards, however the data arrives -------------------------------------------------------------

  describe("ids and outboards", () => {
    it.each(LENGTHS)(
      "an object of %i bytes: OutboardBuilder in random pieces equals createOutboard and the reference",
      (length) => {
        const data = objectOf(length);
        const tree = treeOf(length);
        const next = rngFor(SEED, `builder ${length} ${build}`);
        const noble = hex(nobleBlake3(data));
        expect(hex(blake3(data)), `seed ${SEED}, length ${length}: blake3()`).toBe(noble);
        expect(hex(kernel.hash(data)), `seed ${SEED}, length ${length}: kernel.hash`).toBe(noble);
        for (const groupLog of GROUP_LOGS) {
          const groupBytes = CHUNK * 2 ** groupLog;
          const context = `seed ${SEED}, ${build}, length ${length}, group log ${groupLog}`;
          const whole = createOutboard(data, groupLog, kernel);
          expect(hex(whole.id), `${context}: createOutboard id`).toBe(noble);
          expect(
            compareBytes(whole.outboard, tree.outboard(groupLog)),
            `${context}: createOutboard vs the documented encoding`,
          ).toBe("equal");
          expect(whole.outboard.length, `${context}: outboardLength`).toBe(outboardLength(length, groupLog));

          const splits: [string, Uint8Array[]][] = [
            ["one piece", [data]],
            ["no bytes then everything", [new Uint8Array(0), data, new Uint8Array(0)]],
            [
              "whole groups",
              Array.from({ length: Math.ceil(length / groupBytes) }, (_, i) =>
                data.subarray(i * groupBytes, (i + 1) * groupBytes),
              ),
            ],
            [
              "1 byte then whole groups (straddling every boundary)",
              [
                data.subarray(0, 1),
                ...Array.from({ length: Math.ceil(length / groupBytes) }, (_, i) =>
                  data.subarray(1 + i * groupBytes, 1 + (i + 1) * groupBytes),
                ),
              ],
            ],
            ["random pieces", randomPieces(next, data, 3 * groupBytes)],
            [
              "random pieces around the group size",
              (() => {
                const pieces: Uint8Array[] = [];
                for (let offset = 0; offset < length;) {
                  const size = Math.max(0, groupBytes + (next() % 7) - 3);
                  pieces.push(data.subarray(offset, offset + size));
                  offset += size;
                }
                return pieces;
              })(),
            ],
          ];
          for (const [name, pieces] of splits) {
            const builder = new OutboardBuilder(groupLog, kernel);
            for (const piece of pieces) builder.update(piece);
            const built = builder.finish();
            expect(hex(built.id), `${context}, ${name}: id`).toBe(noble);
            expect(built.length, `${context}, ${name}: length`).toBe(length);
            expect(compareBytes(built.outboard, whole.outboard), `${context}, ${name}: outboard bytes`).toBe("equal");
          }
        }
        // The default group size is 16 KiB.
        expect(
          compareBytes(createOutboard(data, undefined, kernel).outboard, tree.outboard(DEFAULT_GROUP_LOG)),
          `length ${length}: default group log`,
        ).toBe("equal");
        expect(DEFAULT_GROUP_LOG).toBe(4);
      },
    );

    it("keeps builders apart when they interleave on one kernel, with one-shot hashes in between", () => {
      const next = rngFor(SEED, `interleaved builders ${build}`);
      const lengths = [100000, 16385, 70000 + 3];
      const builders = lengths.map(() => new OutboardBuilder(1, kernel));
      const pieces = lengths.map((length) => randomPieces(next, objectOf(length), 40000));
      for (let round = 0; pieces.some((p) => round < p.length); round++) {
        pieces.forEach((list, i) => {
          if (round < list.length) builders[i]!.update(list[round]!);
          kernel.hash(objectOf(4097));
        });
      }
      builders.forEach((builder, i) => {
        const { outboard } = builder.finish();
        expect(compareBytes(outboard, treeOf(lengths[i]!).outboard(1)), `seed ${SEED}, length ${lengths[i]}`).toBe(
          "equal",
        );
      });
    });

    it("refuses updates after finish", () => {
      const builder = new OutboardBuilder(4, kernel).update(objectOf(5000));
      builder.finish();
      expect(() => builder.update(new Uint8Array(1))).toThrow();
      expect(() => builder.finish()).toThrow();
    });
  });

  // --- tampering ------------------------------------------------------------------------------------------------

  describe("tampering", () => {
    // [length, start, count]: the challenged chunk first, in the middle and last; ranges with the tail outside.
    const cases: [number, number, number][] = [
      [1, 0, 1],
      [1025, 0, 1],
      [1025, 1, 1],
      [5000, 0, 1],
      [5000, 2, 1],
      [5000, 4, 1],
      [5000, 1, 2],
      [16385 * 2 + 77, 0, 1],
      [16385 * 2 + 77, 16, 1],
      [16385 * 2 + 77, 32, 1],
      [70000, 0, 1],
      [70000, 34, 1],
      [70000, 68, 1],
      [70000, 10, 2],
    ];

    describe.each(cases)("an object of %i bytes, chunks %i (+%i)", (length, start, count) => {
      const data = objectOf(length);
      const chunks = chunkCount(length);
      const label = `seed ${SEED}, ${build}, length ${length}, chunks ${start}..${start + count - 1}`;
      const setup = () => {
        const id = kernel.hash(data);
        const proof = makeProofFromData(data, start, count, kernel);
        expect(
          compareBytes(verifyProof(id, length, start, count, proof, kernel), rangeOf(data, start, count)),
          label,
        ).toBe("equal");
        return { id, proof };
      };

      it("rejects every single-bit flip of the proof", () => {
        const { id, proof } = setup();
        const next = rngFor(SEED, `flips ${label}`);
        const trueChunks = Array.from({ length: count }, (_, i) => chunkOf(data, start + i));
        const problems: string[] = [];
        const bad = proof.slice();
        for (let byte = 0; byte < proof.length; byte++) {
          for (let bit = 0; bit < 8; bit++) {
            bad[byte] ^= 1 << bit;
            if (verifyProof(id, length, start, count, bad, kernel) !== null)
              problems.push(`verifyProof accepted a flip of byte ${byte} bit ${bit}`);
            const pieces = next() % 2 === 0 ? [bad] : randomPieces(next, bad, 700);
            const result = stream(kernel, id, length, start, count, pieces);
            if (result.accepted) problems.push(`ProofVerifier accepted a flip of byte ${byte} bit ${bit}`);
            else if (!(result.error instanceof ProofError))
              problems.push(`ProofVerifier threw ${String(result.error)} for byte ${byte} bit ${bit}`);
            // Nothing unverified is ever released: chunks returned before the failure are the object's own.
            result.chunks.forEach((chunk, i) => {
              if (compareBytes(chunk, trueChunks[i]!) !== "equal")
                problems.push(`ProofVerifier released a tampered chunk ${start + i} (byte ${byte} bit ${bit})`);
            });
            bad[byte] ^= 1 << bit;
          }
        }
        expect(problems.slice(0, 20), `${label} (${problems.length} problems)`).toEqual([]);
      });

      it("rejects every single-bit flip of the id", () => {
        const { id, proof } = setup();
        const problems: string[] = [];
        for (let bit = 0; bit < 256; bit++) {
          const badId = id.slice();
          badId[bit >> 3] ^= 1 << (bit & 7);
          if (verifyProof(badId, length, start, count, proof, kernel) !== null)
            problems.push(`verifyProof accepted id bit ${bit}`);
          const result = stream(kernel, badId, length, start, count, [proof]);
          if (result.accepted || !(result.error instanceof ProofError))
            problems.push(`ProofVerifier: id bit ${bit}: ${String(result.error)}`);
          if (result.chunks.length > 0) problems.push(`ProofVerifier released a chunk under id bit ${bit}`);
        }
        expect(problems, label).toEqual([]);
      });

      it("never accepts a wrong length (every single-bit flip, bits 0..40)", () => {
        const { id, proof } = setup();
        const next = rngFor(SEED, `length flips ${label}`);
        const problems: string[] = [];
        for (let bit = 0; bit <= 40; bit++) {
          const wrong = flipBit(length, bit);
          const result = verifyOrRefuse(kernel, id, wrong, start, count, proof);
          if (result !== null && !(result instanceof RangeError))
            problems.push(`verifyProof accepted length ${wrong} (bit ${bit})`);
          const streamed = stream(kernel, id, wrong, start, count, randomPieces(next, proof, 700));
          if (streamed.accepted) problems.push(`ProofVerifier accepted length ${wrong} (bit ${bit})`);
          else if (!(streamed.error instanceof ProofError || streamed.error instanceof RangeError)) {
            problems.push(`ProofVerifier threw ${String(streamed.error)} for length ${wrong}`);
          }
        }
        // Also every other length with the same number of chunks, and one chunk more or less.
        for (let wrong = Math.max(0, (chunks - 2) * CHUNK); wrong <= (chunks + 1) * CHUNK; wrong++) {
          if (wrong === length) continue;
          const result = verifyOrRefuse(kernel, id, wrong, start, count, proof);
          if (result !== null && !(result instanceof RangeError)) problems.push(`verifyProof accepted length ${wrong}`);
        }
        expect(problems, label).toEqual([]);
      });

      it("rejects the proof under any other chunk index or count, unless it is that range's own proof", () => {
        const { id, proof } = setup();
        const tree = treeOf(length);
        const problems: string[] = [];
        for (let s = 0; s < chunks; s++) {
          for (const c of [1, 2, 3, count - 1, count + 1]) {
            if ((s === start && c === count) || c < 1 || s + c > chunks) continue;
            const result = verifyOrRefuse(kernel, id, length, s, c, proof);
            const own = tree.proof(s, c);
            if (compareBytes(proof, own) === "equal") {
              // E.g. chunk 0 of a 2-chunk object whose last chunk is the tail: the same bytes prove [0, 2).
              if (compareBytes(result as Uint8Array, rangeOf(data, s, c)) !== "equal")
                problems.push(`chunks ${s}+${c}: identical proof not verified`);
            } else if (result !== null) {
              problems.push(`verifyProof accepted it as chunks ${s}+${c}`);
            }
            const streamed = stream(kernel, id, length, s, c, [proof]);
            if (streamed.accepted !== (compareBytes(proof, own) === "equal"))
              problems.push(`ProofVerifier as chunks ${s}+${c}: ${String(streamed.error)}`);
          }
        }
        // Out-of-range claims are refused, not verified.
        expect(() => verifyProof(id, length, chunks, 1, proof, kernel)).toThrow(RangeError);
        expect(problems, label).toEqual([]);
      });

      it("rejects truncated proofs and proofs with extra bytes", () => {
        const { id, proof } = setup();
        const next = rngFor(SEED, `truncation ${label}`);
        const problems: string[] = [];
        // Every prefix of small proofs; for larger ones, random prefixes and those around item boundaries.
        const prefixes = new Set<number>();
        if (proof.length <= 2200) {
          for (let n = 0; n < proof.length; n++) prefixes.add(n);
        } else {
          for (let i = 0; i < 300; i++) prefixes.add(next() % proof.length);
          for (let n = 0; n < proof.length; n += 64)
            for (const d of [-1, 0, 1]) if (n + d >= 0 && n + d < proof.length) prefixes.add(n + d);
          prefixes.add(proof.length - 1);
        }
        for (const n of prefixes) {
          const prefix = proof.subarray(0, n);
          if (verifyProof(id, length, start, count, prefix, kernel) !== null)
            problems.push(`verifyProof accepted a prefix of ${n} bytes`);
          const verifier = new ProofVerifier(id, length, start, count, kernel);
          // A prefix of a valid proof is valid so far: push() passes, and finish() says it is truncated.
          const pushError = thrown(() => verifier.push(prefix));
          if (pushError !== undefined) problems.push(`push of a ${n}-byte prefix threw ${String(pushError)}`);
          if (verifier.done) problems.push(`done after a ${n}-byte prefix`);
          const finishError = thrown(() => verifier.finish());
          if (!(finishError instanceof ProofError))
            problems.push(`finish after a ${n}-byte prefix: ${String(finishError)}`);
        }
        for (const extra of [
          new Uint8Array(1),
          new Uint8Array([0x5a]),
          randomBytes(next, 64),
          proof.subarray(0, Math.min(proof.length, 100)),
        ]) {
          const longer = concat([proof, extra]);
          if (verifyProof(id, length, start, count, longer, kernel) !== null)
            problems.push(`verifyProof accepted ${extra.length} extra bytes`);
          const together = stream(kernel, id, length, start, count, [longer]);
          if (together.accepted || !(together.error instanceof ProofError))
            problems.push(`ProofVerifier, ${extra.length} extra bytes in the same push: ${String(together.error)}`);
          const separately = stream(kernel, id, length, start, count, [proof, extra]);
          if (separately.accepted || !(separately.error instanceof ProofError))
            problems.push(`ProofVerifier, ${extra.length} extra bytes in a later push: ${String(separately.error)}`);
          const inPieces = stream(kernel, id, length, start, count, randomPieces(next, longer, 500));
          if (inPieces.accepted || !(inPieces.error instanceof ProofError))
            problems.push(`ProofVerifier, ${extra.length} extra bytes in pieces: ${String(inPieces.error)}`);
        }
        expect(problems.slice(0, 20), `${label} (${problems.length} problems)`).toEqual([]);
      });

      it("does not verify under another object's id", () => {
        const { proof } = setup();
        const problems: string[] = [];
        const variants: [string, Uint8Array][] = [
          ["other random bytes", randomBytes(rngFor(SEED, `other ${length}`), length)],
          [
            "last byte changed",
            (() => {
              const d = data.slice();
              d[length - 1] ^= 1;
              return d;
            })(),
          ],
          [
            "a chunk outside the range changed",
            (() => {
              const d = data.slice();
              const outside = [...Array(chunks).keys()].find((i) => i < start || i >= start + count);
              d[(outside ?? 0) * CHUNK] ^= 0x80;
              return d;
            })(),
          ],
          ["one byte longer", concat([data, new Uint8Array([7])])],
          ["one byte shorter", data.subarray(0, length - 1)],
        ];
        for (const [name, other] of variants) {
          if (compareBytes(other, data) === "equal") continue;
          const otherId = kernel.hash(other);
          for (const claimed of [length, other.length]) {
            const result = verifyOrRefuse(kernel, otherId, claimed, start, count, proof);
            if (result !== null && !(result instanceof RangeError))
              problems.push(`${name}: verifyProof accepted (claimed length ${claimed})`);
            const streamed = stream(kernel, otherId, claimed, start, count, [proof]);
            if (streamed.accepted) problems.push(`${name}: ProofVerifier accepted (claimed length ${claimed})`);
          }
        }
        expect(problems, label).toEqual([]);
      });
    });

    it("a failed verifier stays failed", () => {
      const data = objectOf(5000);
      const id = kernel.hash(data);
      const proof = makeProofFromData(data, 1, 1, kernel);
      const bad = proof.slice();
      bad[0] ^= 1;
      const verifier = new ProofVerifier(id, 5000, 1, 1, kernel);
      expect(() => verifier.push(bad)).toThrow(ProofError);
      expect(() => verifier.push(proof)).toThrow(ProofError);
      expect(() => verifier.finish()).toThrow(ProofError);
    });

    it("refuses an id that is not 32 bytes", () => {
      const data = objectOf(5000);
      const id = kernel.hash(data);
      const proof = makeProofFromData(data, 1, 1, kernel);
      for (const size of [0, 31, 33, 64]) {
        const badId = new Uint8Array(size);
        badId.set(id.subarray(0, size));
        expect(() => verifyProof(badId, 5000, 1, 1, proof, kernel), `id of ${size} bytes`).toThrow(RangeError);
        expect(() => new ProofVerifier(badId, 5000, 1, 1, kernel), `id of ${size} bytes`).toThrow(RangeError);
      }
    });
  });

  // --- outboards ------------------------------------------------------------------------------------------------

  describe("outboards", () => {
    const validOutboard = (length: number, groupLog = DEFAULT_GROUP_LOG): Uint8Array =>
      createOutboard(objectOf(length), groupLog, kernel).outboard;

    it("parses its own outboards, also from a view at an offset", () => {
      for (const [length, groupLog] of [
        [0, 4],
        [1025, 0],
        [16384, 4],
        [16385, 4],
        [100000, 1],
        [MiB + 7, 6],
      ] as const) {
        const bytes = validOutboard(length, groupLog);
        const backing = new Uint8Array(bytes.length + 13);
        backing.set(bytes, 5);
        for (const view of [bytes, backing.subarray(5, 5 + bytes.length)]) {
          const parsed = parseOutboard(view);
          const groups = Math.ceil(chunkCount(length) / 2 ** groupLog);
          expect(parsed.length, `length ${length}`).toBe(length);
          expect(parsed.groupLog).toBe(groupLog);
          expect(parsed.groupChunks).toBe(2 ** groupLog);
          expect(parsed.groups).toBe(groups);
          expect(parsed.tailOffset).toBe(OUTBOARD_HEADER_LEN + 64 * (groups - 1));
          expect(hex(parsed.id)).toBe(hex(treeOf(length).id));
        }
      }
    });

    it("rejects bad magic, version, group size, reserved bytes and sizes with a one-line OutboardError", () => {
      for (const length of [0, 5000, 16385, 70000]) {
        const good = validOutboard(length);
        const bad: [string, Uint8Array][] = [];
        for (let i = 0; i < 4; i++) {
          const b = good.slice();
          b[i] ^= 0x20;
          bad.push([`magic byte ${i}`, b]);
        }
        for (const version of [0, 2, 255]) {
          const b = good.slice();
          b[4] = version;
          bad.push([`version ${version}`, b]);
        }
        for (const groupLog of [17, 64, 255]) {
          const b = good.slice();
          b[5] = groupLog;
          bad.push([`group log ${groupLog}`, b]);
        }
        for (const at of [6, 7]) {
          for (const value of [1, 0x80]) {
            const b = good.slice();
            b[at] = value;
            bad.push([`reserved byte ${at} = ${value}`, b]);
          }
        }
        const huge = good.slice();
        new DataView(huge.buffer).setBigUint64(8, 2n ** 63n, true);
        bad.push(["length 2^63", huge]);
        bad.push(["one byte short", good.subarray(0, good.length - 1)]);
        bad.push(["one byte long", concat([good, new Uint8Array(1)])]);
        bad.push(["64 bytes long", concat([good, new Uint8Array(64)])]);
        bad.push(["header only, cut", good.subarray(0, OUTBOARD_HEADER_LEN - 1)]);
        bad.push(["empty", new Uint8Array(0)]);
        for (const [name, bytes] of bad) {
          expectOneLineError(
            thrown(() => parseOutboard(bytes)),
            OutboardError,
            `length ${length}, ${name}`,
          );
        }
        // The error's name says what it is (it reaches logs by name).
        expect((thrown(() => parseOutboard(new Uint8Array(3))) as Error).name).toBe("OutboardError");
      }
    });

    it("makeProof reads exactly the groups of the range, one 16 KiB group for one chunk of a 4 MiB object", () => {
      for (const length of [4 * MiB, 4 * MiB + 100, 4 * MiB - 1000]) {
        const data = objectOf(length);
        const id = kernel.hash(data);
        const parsed = parseOutboard(createOutboard(data, undefined, kernel).outboard);
        const chunks = chunkCount(length);
        const cases: [number, number][] = [
          [0, 1],
          [1, 1],
          [2049, 1],
          [chunks - 17, 1],
          [chunks - 1, 1],
          [15, 2],
          [16, 16],
          [100, 40],
          [chunks - 20, 20],
        ];
        for (const [start, count] of cases) {
          const context = `seed ${SEED}, ${build}, length ${length}, chunks ${start}+${count}`;
          const reads: [number, number][] = [];
          const proof = makeProof(
            parsed,
            (offset, len) => {
              reads.push([offset, len]);
              return data.subarray(offset, offset + len);
            },
            start,
            count,
            kernel,
          );
          // The groups the range touches, computed here, and nothing else: the tail comes from the outboard.
          const expected: [number, number][] = [];
          for (let g = Math.floor(start / 16); g <= Math.floor((start + count - 1) / 16); g++)
            expected.push([g * 16 * KiB, Math.min(16 * KiB, length - g * 16 * KiB)]);
          expect(
            groupsToRead(parsed, start, count).map((r) => [r.offset, r.length]),
            context,
          ).toEqual(expected);
          expect(
            groupsToRead(parsed, start, count).map((r) => r.group),
            context,
          ).toEqual(expected.map(([o]) => o / (16 * KiB)));
          expect(reads, context).toEqual(expected);
          if (count === 1 && start !== chunks - 1)
            expect(reads, `${context}: one group`).toEqual([[Math.floor(start / 16) * 16 * KiB, 16 * KiB]]);
          expect(
            compareBytes(verifyProof(id, length, start, count, proof, kernel), rangeOf(data, start, count)),
            context,
          ).toBe("equal");
          if (count === 1 && (start === 0 || start === chunks - 1)) {
            expect(
              compareBytes(proof, makeProofFromData(data, start, count, kernel)),
              `${context}: vs makeProofFromData`,
            ).toBe("equal");
          }
        }
      }
    });

    it("makeProofAsync equals makeProof and reads the same groups", async () => {
      for (const [length, groupLog] of [
        [0, 4],
        [5000, 0],
        [70000, 4],
        [100000, 1],
        [MiB + 7, 6],
      ] as const) {
        const data = objectOf(length);
        const parsed = parseOutboard(createOutboard(data, groupLog, kernel).outboard);
        const chunks = chunkCount(length);
        for (const [start, count] of [
          [0, 1],
          [chunks - 1, 1],
          [Math.floor(chunks / 2), 1],
          [0, chunks],
          [Math.floor(chunks / 3), Math.min(17, chunks - Math.floor(chunks / 3))],
        ] as const) {
          const context = `${build}, length ${length}, group log ${groupLog}, chunks ${start}+${count}`;
          const reads: [number, number][] = [];
          const asyncProof = await makeProofAsync(
            parsed,
            async (offset, len) => {
              reads.push([offset, len]);
              await new Promise((resolve) => setImmediate(resolve));
              return data.slice(offset, offset + len);
            },
            start,
            count,
            kernel,
          );
          const syncProof = makeProof(
            parsed,
            (offset, len) => data.subarray(offset, offset + len),
            start,
            count,
            kernel,
          );
          expect(compareBytes(asyncProof, syncProof), context).toBe("equal");
          expect(reads, context).toEqual(groupsToRead(parsed, start, count).map((r) => [r.offset, r.length]));
        }
      }
    });

    it("says OutboardError when the object is shorter (or longer) than its outboard says", async () => {
      for (const [length, groupLog] of [
        [5000, 0],
        [70000, 4],
        [16384 * 3 + 1, 4],
        [100000, 6],
      ] as const) {
        const data = objectOf(length);
        const parsed = parseOutboard(createOutboard(data, groupLog, kernel).outboard);
        const chunks = chunkCount(length);
        const short = data.subarray(0, length - 1);
        const readShort = (offset: number, len: number): Uint8Array => short.subarray(offset, offset + len);
        const context = `${build}, length ${length}, group log ${groupLog}`;
        expectOneLineError(
          thrown(() => makeProof(parsed, readShort, chunks - 1, 1, kernel)),
          OutboardError,
          `${context}: last chunk`,
        );
        expectOneLineError(
          thrown(() => makeProof(parsed, () => new Uint8Array(0), 0, 1, kernel)),
          OutboardError,
          `${context}: nothing read`,
        );
        expectOneLineError(
          thrown(() =>
            makeProof(parsed, (offset, len) => objectOf(length + 1).subarray(offset, offset + len + 1), 0, 1, kernel),
          ),
          OutboardError,
          `${context}: too much read`,
        );
        expectOneLineError(
          await rejected(makeProofAsync(parsed, async (offset, len) => readShort(offset, len), chunks - 1, 1, kernel)),
          OutboardError,
          `${context}: async`,
        );
      }
    });

    it("a proof from one object's outboard and another object's data does not verify", () => {
      const a = objectOf(70000);
      const b = randomBytes(rngFor(SEED, "another 70000"), 70000);
      const parsedA = parseOutboard(createOutboard(a, 4, kernel).outboard);
      for (const chunk of [0, 20, 68]) {
        const proof = makeProof(parsedA, (offset, len) => b.subarray(offset, offset + len), chunk, 1, kernel);
        expect(verifyProof(kernel.hash(a), 70000, chunk, 1, proof, kernel), `chunk ${chunk}`).toBeNull();
        expect(verifyProof(kernel.hash(b), 70000, chunk, 1, proof, kernel), `chunk ${chunk}`).toBeNull();
      }
    });

    it("rejects a bad group log in the builder", () => {
      for (const groupLog of [-1, 17, 1.5, Number.NaN]) {
        expectOneLineError(
          thrown(() => new OutboardBuilder(groupLog, kernel)),
          RangeError,
          `group log ${groupLog}`,
        );
      }
    });
  });

  // --- bad ranges -----------------------------------------------------------------------------------------------

  describe("bad ranges", () => {
    it.each([0, 1, 1024, 1025, 5000, 70000])(
      "an object of %i bytes: RangeError everywhere, one line, naming what is wrong",
      async (length) => {
        const data = objectOf(length);
        const chunks = chunkCount(length);
        const id = kernel.hash(data);
        const parsed: Outboard = parseOutboard(createOutboard(data, 0, kernel).outboard);
        const validProof = makeProofFromData(data, 0, 1, kernel);
        // [start, count, what the message must say]
        const has = new RegExp(`\\b${chunks} chunks?\\b`);
        const bad: [number, number, RegExp][] = [
          [chunks, 1, has],
          [chunks + 5, 1, has],
          [2 ** 40, 1, has],
          [0, chunks + 1, has],
          [chunks - 1, 2, has],
          [Math.max(0, chunks - 3), 17, has],
          [0, 0, /\bcount\b.*\b0\b/],
          [0, -1, /\bcount\b.*-1\b/],
          [-1, 1, /\bindex\b.*-1\b/],
          [1.5, 1, /1\.5/],
          [0, 1.5, /1\.5/],
          [Number.NaN, 1, /NaN/],
          [0, Number.NaN, /NaN/],
          [Number.POSITIVE_INFINITY, 1, /Infinity/],
          [0, Number.POSITIVE_INFINITY, /Infinity/],
        ];
        for (const [start, count, says] of bad) {
          const context = `${build}, length ${length} (${chunks} chunks), chunks ${start}+${count}`;
          const reads: number[] = [];
          const attempts: [string, unknown][] = [
            ["proofLength", thrown(() => proofLength(length, start, count))],
            ["makeProofFromData", thrown(() => makeProofFromData(data, start, count, kernel))],
            [
              "makeProof",
              thrown(() =>
                makeProof(
                  parsed,
                  (offset, len) => (reads.push(offset), data.subarray(offset, offset + len)),
                  start,
                  count,
                  kernel,
                ),
              ),
            ],
            [
              "makeProofAsync",
              await rejected(
                makeProofAsync(
                  parsed,
                  async (offset, len) => (reads.push(offset), data.subarray(offset, offset + len)),
                  start,
                  count,
                  kernel,
                ),
              ),
            ],
            ["groupsToRead", thrown(() => groupsToRead(parsed, start, count))],
            ["verifyProof", thrown(() => verifyProof(id, length, start, count, validProof, kernel))],
            ["ProofVerifier", thrown(() => new ProofVerifier(id, length, start, count, kernel))],
          ];
          for (const [name, err] of attempts) {
            const message = expectOneLineError(err, RangeError, `${context}: ${name}`);
            expect(message, `${context}: ${name}`).toMatch(says);
          }
          expect(reads, `${context}: nothing read for a bad range`).toEqual([]);
        }
      },
    );

    it("refuses a bad object length", () => {
      for (const length of [-1, 1.5, Number.NaN, 2 ** 53]) {
        expectOneLineError(
          thrown(() => proofLength(length, 0, 1)),
          RangeError,
          `length ${length}`,
        );
        expectOneLineError(
          thrown(() => new ProofVerifier(new Uint8Array(32), length, 0, 1, kernel)),
          RangeError,
          `length ${length}`,
        );
      }
    });
  });
});
