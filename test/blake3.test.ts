import { readFileSync } from "node:fs";
import { blake3 as nobleBlake3 } from "@noble/hashes/blake3.js";
import { describe, expect, it } from "vitest";
import {
  BLAKE3_KEY_LEN,
  Blake3Hasher,
  Blake3Kernel,
  CHUNK_LEN,
  blake3,
  blake3DeriveKey,
  blake3Kernel,
  blake3Keyed,
  createBlake3,
  createBlake3DeriveKey,
  createBlake3Keyed,
  simdSupported,
  type Blake3Build,
} from "../agent/kernels/blake3";
import { instantiateKernel, kernelBytes } from "../agent/kernels/instantiate";
import { BLAKE3_SCALAR_WASM, BLAKE3_SIMD_WASM } from "../agent/kernels/wasm-bytes.generated";
import { randomBytes, rngFor, testSeed } from "./helpers/random";

// Every random input comes from this seed: a failure prints it, and BLAKE3_TEST_SEED=<seed> replays the run.
const SEED = testSeed("BLAKE3_TEST_SEED");
const BUILDS: readonly Blake3Build[] = ["simd", "scalar"];
/** The kernel's input region (256 chunks): updates are fed through it in pieces of at most this size. */
const REGION = 256 * 1024;
const MiB = 1024 * 1024;

// --- official test vectors (BLAKE3-team/BLAKE3, test_vectors/test_vectors.json) -------------------------------

interface VectorCase {
  input_len: number;
  hash: string;
  keyed_hash: string;
  derive_key: string;
}
const vectors = JSON.parse(readFileSync(new URL("./fixtures/blake3-test-vectors.json", import.meta.url), "utf8")) as {
  key: string;
  context_string: string;
  cases: VectorCase[];
};
/** The official inputs: a repeating sequence of the 251 bytes 0..250. */
function vectorInput(length: number): Uint8Array {
  const input = new Uint8Array(length);
  for (let i = 0; i < length; i++) input[i] = i % 251;
  return input;
}

// --- random inputs ----------------------------------------------------------------------------------------

type Rand = () => number;

/** Uniform integer in [lo, hi]. */
function int(rand: Rand, lo: number, hi: number): number {
  return lo + Math.floor((rand() / 2 ** 32) * (hi - lo + 1));
}

/** A piece size from a mix: tiny, around a block, around a chunk, medium, around the input region, several regions. */
function randomPieceSize(rand: Rand): number {
  switch (int(rand, 0, 5)) {
    case 0:
      return int(rand, 1, 8);
    case 1:
      return int(rand, 1, 130);
    case 2:
      return int(rand, CHUNK_LEN - 30, CHUNK_LEN + 30);
    case 3:
      return int(rand, 1, 70_000);
    case 4:
      return int(rand, REGION - 3, REGION + 3);
    default:
      return int(rand, 1, 3 * REGION);
  }
}

/**
 * Piece sizes that add up to `length`: random sizes, plus, at chunk (1 KiB) and input-region (256 KiB) boundaries,
 * pieces that end exactly there or straddle them. A few empty pieces too.
 */
function randomPieces(rand: Rand, length: number): number[] {
  const cuts = new Set<number>([0, length]);
  for (let pos = randomPieceSize(rand); pos < length; pos += randomPieceSize(rand)) cuts.add(pos);
  const boundaries: number[] = [];
  for (let b = REGION; b < length; b += REGION) boundaries.push(b);
  for (let i = 1; i <= 8; i++) boundaries.push(i * CHUNK_LEN);
  for (let i = 0; i < 16; i++) boundaries.push(int(rand, 1, Math.floor(length / CHUNK_LEN)) * CHUNK_LEN);
  for (const b of boundaries) {
    if (b <= 0 || b >= length) continue;
    const choice = int(rand, 0, 2);
    if (choice === 0) cuts.add(b);
    if (choice === 1) {
      cuts.add(Math.max(1, b - int(rand, 1, 1100)));
      cuts.add(Math.min(length - 1, b + int(rand, 1, 1100)));
    }
  }
  const sorted = [...cuts].sort((a, b) => a - b);
  const sizes: number[] = [];
  for (let i = 1; i < sorted.length; i++) {
    if (int(rand, 0, 15) === 0) sizes.push(0);
    sizes.push(sorted[i] - sorted[i - 1]);
  }
  return sizes;
}

/** Fixed-size pieces (the last one shorter). */
function evenPieces(length: number, size: number): number[] {
  const sizes: number[] = [];
  for (let pos = 0; pos < length; pos += size) sizes.push(Math.min(size, length - pos));
  return sizes;
}

/** The streaming strategies worth running for an input of `length` bytes. */
function strategies(rand: Rand, length: number): [string, number[]][] {
  const list: [string, number[]][] = [
    ["one update", [length]],
    ["random pieces", randomPieces(rand, length)],
  ];
  if (length <= 4097) list.push(["1-byte pieces", evenPieces(length, 1)]);
  if (length >= 2 * CHUNK_LEN && length <= 2 * MiB) list.push(["1 KiB pieces", evenPieces(length, CHUNK_LEN)]);
  if (length >= REGION) list.push(["256 KiB pieces", evenPieces(length, REGION)]);
  return list;
}

function feed(hasher: Blake3Hasher, input: Uint8Array, sizes: number[]): Blake3Hasher {
  let offset = 0;
  for (const size of sizes) {
    hasher.update(input.subarray(offset, offset + size));
    offset += size;
  }
  if (offset !== input.length) throw new Error(`test bug: pieces add up to ${offset}, not ${input.length}`);
  return hasher;
}

const hex = (bytes: Uint8Array): string =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
const utf8 = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, "utf8"));
const concat = (parts: Uint8Array[]): Uint8Array => new Uint8Array(Buffer.concat(parts));

// --- the three modes, each against the kernel and against @noble/hashes --------------------------------------

interface Mode {
  name: "hash" | "keyed_hash" | "derive_key";
  oneShot(kernel: Blake3Kernel, input: Uint8Array, outLen?: number): Uint8Array;
  hasher(kernel: Blake3Kernel): Blake3Hasher;
  /** The same output from @noble/hashes, an independent implementation. */
  noble(input: Uint8Array, outLen: number): Uint8Array;
}

function modes(key: Uint8Array, context: string): Mode[] {
  const contextBytes = utf8(context);
  return [
    {
      name: "hash",
      oneShot: (k, input, outLen) => k.hash(input, outLen),
      hasher: (k) => k.createHasher(),
      noble: (input, dkLen) => nobleBlake3(input, { dkLen }),
    },
    {
      name: "keyed_hash",
      oneShot: (k, input, outLen) => k.keyedHash(key, input, outLen),
      hasher: (k) => k.createKeyedHasher(key),
      noble: (input, dkLen) => nobleBlake3(input, { key, dkLen }),
    },
    {
      name: "derive_key",
      oneShot: (k, input, outLen) => k.deriveKey(context, input, outLen),
      hasher: (k) => k.createDeriveKeyHasher(context),
      noble: (input, dkLen) => nobleBlake3(input, { context: contextBytes, dkLen }),
    },
  ];
}

const VECTOR_MODES = modes(utf8(vectors.key), vectors.context_string);
// A non-ASCII context: the kernel must hash its UTF-8 bytes.
const MODES = modes(
  randomBytes(rngFor(SEED, "key"), BLAKE3_KEY_LEN),
  "sharenode tests 2024-06-01 blake3 \u00e9t\u00e9 \u{1F511}",
);

// --- differential inputs, shared by both builds (the @noble/hashes side is the slow one) --------------------

const DIFFERENTIAL_LENGTHS = (() => {
  const rand = rngFor(SEED, "lengths");
  const fixed = [0, 1, 63, 64, 65, 1023, 1024, 1025, 2048, 2049, 3072, 4095, 4096, 4097];
  const region = [REGION - 1, REGION, REGION + 1];
  const random = [int(rand, 2, 4000), int(rand, 4098, REGION - 2), int(rand, REGION + 2, 2 * MiB)];
  return [...fixed, ...region, ...random, MiB + 7, 16 * MiB + 3];
})();

const inputs = new Map<number, Uint8Array>();
function differentialInput(length: number): Uint8Array {
  let input = inputs.get(length);
  if (!input) inputs.set(length, (input = randomBytes(rngFor(SEED, `input ${length}`), length)));
  return input;
}
const nobleOutputs = new Map<string, Uint8Array>();
function nobleOutput(mode: Mode, length: number): Uint8Array {
  const id = `${mode.name} ${length}`;
  let out = nobleOutputs.get(id);
  if (!out) nobleOutputs.set(id, (out = mode.noble(differentialInput(length), 131)));
  return out;
}

// --- a reference BLAKE3 compression (specification, section 2.2), for what @noble/hashes cannot reach: output at
// positions past 2^38 bytes, and chunk counters past 2^32 ------------------------------------------------------

const IV = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
const PERMUTATION = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
const CHUNK_START = 1;
const CHUNK_END = 2;
const PARENT = 4;
const ROOT = 8;
const KEYED_HASH = 16;

const words = (bytes: Uint8Array): number[] =>
  Array.from({ length: 16 }, (_, i) => Buffer.from(bytes).readUInt32LE(i * 4) >>> 0);

/** The 16-word result of compressing `block` (64 bytes, zero-padded) into chaining value cv. */
function referenceCompress(
  cv: number[],
  block: Uint8Array,
  counter: bigint,
  blockLen: number,
  flags: number,
): number[] {
  const padded = new Uint8Array(64);
  padded.set(block);
  let m = words(padded);
  const s = [...cv, ...IV.slice(0, 4), Number(counter & 0xffffffffn), Number(counter >> 32n), blockLen, flags];
  const rotr = (x: number, n: number) => ((x >>> n) | (x << (32 - n))) >>> 0;
  const g = (a: number, b: number, c: number, d: number, x: number, y: number) => {
    s[a] = (s[a] + s[b] + x) >>> 0;
    s[d] = rotr(s[d] ^ s[a], 16);
    s[c] = (s[c] + s[d]) >>> 0;
    s[b] = rotr(s[b] ^ s[c], 12);
    s[a] = (s[a] + s[b] + y) >>> 0;
    s[d] = rotr(s[d] ^ s[a], 8);
    s[c] = (s[c] + s[d]) >>> 0;
    s[b] = rotr(s[b] ^ s[c], 7);
  };
  for (let round = 0; round < 7; round++) {
    g(0, 4, 8, 12, m[0], m[1]);
    g(1, 5, 9, 13, m[2], m[3]);
    g(2, 6, 10, 14, m[4], m[5]);
    g(3, 7, 11, 15, m[6], m[7]);
    g(0, 5, 10, 15, m[8], m[9]);
    g(1, 6, 11, 12, m[10], m[11]);
    g(2, 7, 8, 13, m[12], m[13]);
    g(3, 4, 9, 14, m[14], m[15]);
    m = PERMUTATION.map((i) => m[i]);
  }
  return [...s.slice(0, 8).map((x, i) => (x ^ s[i + 8]) >>> 0), ...s.slice(8).map((x, i) => (x ^ cv[i]) >>> 0)];
}

function wordsToBytes(w: number[]): Uint8Array {
  const out = Buffer.alloc(w.length * 4);
  w.forEach((x, i) => out.writeUInt32LE(x, i * 4));
  return new Uint8Array(out);
}

/** Non-root chaining value (8 words) of chunk `counter` of the plain-hash tree: data is its 1..1024 bytes. */
function referenceChunkCv(data: Uint8Array, counter: bigint): number[] {
  let cv = IV;
  const blocks = Math.max(1, Math.ceil(data.length / 64));
  for (let b = 0; b < blocks; b++) {
    const block = data.subarray(b * 64, b * 64 + 64);
    const flags = (b === 0 ? CHUNK_START : 0) | (b === blocks - 1 ? CHUNK_END : 0);
    cv = referenceCompress(cv, block, counter, block.length, flags).slice(0, 8);
  }
  return cv;
}

/** Non-root chaining value of the plain-hash subtree of `data` whose first chunk is `firstChunk`. */
function referenceSubtreeCv(data: Uint8Array, firstChunk: bigint): number[] {
  const chunks = Math.ceil(data.length / CHUNK_LEN);
  if (chunks <= 1) return referenceChunkCv(data, firstChunk);
  const left = 2 ** Math.floor(Math.log2(chunks - 1));
  const pair = concat([
    wordsToBytes(referenceSubtreeCv(data.subarray(0, left * CHUNK_LEN), firstChunk)),
    wordsToBytes(referenceSubtreeCv(data.subarray(left * CHUNK_LEN), firstChunk + BigInt(left))),
  ]);
  return referenceCompress(IV, pair, 0n, 64, PARENT).slice(0, 8);
}

/** Output bytes [position, position + length) of a one-block input (at most 64 bytes), plain or keyed. */
function referenceOutput(key: Uint8Array | null, input: Uint8Array, position: number, length: number): Uint8Array {
  const cv = key ? words(concat([key, new Uint8Array(32)])).slice(0, 8) : IV;
  const flags = CHUNK_START | CHUNK_END | ROOT | (key ? KEYED_HASH : 0);
  const first = Math.floor(position / 64);
  const blocks: Uint8Array[] = [];
  for (let b = first; b * 64 < position + length; b++)
    blocks.push(wordsToBytes(referenceCompress(cv, input, BigInt(b), input.length, flags)));
  const skip = position - first * 64;
  return concat(blocks).subarray(skip, skip + length);
}

// =============================================================================================================

describe.each(BUILDS)("BLAKE3 %s build", (build) => {
  // Compiled inside each test: on a runtime that rejects SIMD every simd test fails (never skips).
  const kernel = () => blake3Kernel(build);
  const where = (what: string) => `${build} build, ${what}, seed ${SEED} (BLAKE3_TEST_SEED=${SEED} replays)`;

  it("is the requested build and runs on this machine", () => {
    if (build === "simd") {
      expect(simdSupported(), "this runtime rejects WebAssembly SIMD, so the simd build cannot run here").toBe(true);
    }
    const raw = instantiateKernel(kernelBytes(build === "simd" ? BLAKE3_SIMD_WASM : BLAKE3_SCALAR_WASM), build)
      .exports as {
      simd(): number;
    };
    expect(raw.simd(), "the kernel's own simd() flag").toBe(build === "simd" ? 1 : 0);
    expect(kernel().build).toBe(build);
    expect(blake3Kernel(build), "one kernel instance per build").toBe(kernel());
    // The boundary lengths of the differential tests (REGION +- 1) are chosen for this region size.
    expect(kernel().inputLen).toBe(REGION);
    expect(kernel().inputView().length).toBe(REGION);
  });

  // --- official vectors -----------------------------------------------------------------------------------

  it.each(vectors.cases)("official vector: input_len $input_len, all modes, one-shot and streamed", (c) => {
    const k = kernel();
    const input = vectorInput(c.input_len);
    const rand = rngFor(SEED, `${build} vector ${c.input_len}`);
    for (const mode of VECTOR_MODES) {
      const full = c[mode.name];
      const prefix = full.slice(0, 64);
      const at = (how: string) => where(`${mode.name}, input_len ${c.input_len}, ${how}`);
      expect(hex(mode.oneShot(k, input, 131)), at("one-shot, 131 bytes")).toBe(full);
      expect(hex(mode.oneShot(k, input)), at("one-shot, default length")).toBe(prefix);
      if (mode.name === "hash") {
        const out = new Uint8Array(131);
        k.hashInto(input, out);
        expect(hex(out), at("hashInto")).toBe(full);
      }
      const pieceSets: [string, number[]][] = [
        ["one update", [c.input_len]],
        ["random pieces", randomPieces(rand, c.input_len)],
        ["63-byte pieces", evenPieces(c.input_len, 63)],
        ["1025-byte pieces", evenPieces(c.input_len, 1025)],
      ];
      if (c.input_len <= 8193) pieceSets.push(["1-byte pieces", evenPieces(c.input_len, 1)]);
      for (const [how, sizes] of pieceSets) {
        const hasher = feed(mode.hasher(k), input, sizes);
        expect(hex(hasher.digest(131)), at(`streamed, ${how}, digest(131)`)).toBe(full);
        expect(hex(hasher.digest()), at(`streamed, ${how}, digest()`)).toBe(prefix);
        const out = new Uint8Array(131);
        hasher.digestInto(out);
        expect(hex(out), at(`streamed, ${how}, digestInto`)).toBe(full);
        expect(hex(hasher.xof().read(131)), at(`streamed, ${how}, xof().read(131)`)).toBe(full);
      }
    }
  });

  // --- differential against @noble/hashes -------------------------------------------------------------------

  it.each(DIFFERENTIAL_LENGTHS)(
    "equals @noble/hashes on random input of %i bytes, all modes, one-shot and streamed",
    (length) => {
      const k = kernel();
      const input = differentialInput(length);
      const rand = rngFor(SEED, `${build} differential ${length}`);
      for (const mode of MODES) {
        const expected = hex(nobleOutput(mode, length));
        const at = (how: string) => where(`${mode.name}, ${length} bytes, ${how}`);
        expect(hex(mode.oneShot(k, input, 131)), at("one-shot")).toBe(expected);
        expect(hex(mode.oneShot(k, input)), at("one-shot, default length")).toBe(expected.slice(0, 64));
        for (const [how, sizes] of strategies(rand, length)) {
          expect(hex(feed(mode.hasher(k), input, sizes).digest(131)), at(`streamed, ${how}`)).toBe(expected);
        }
      }
    },
  );

  // --- extendable output ------------------------------------------------------------------------------------

  it("XOF: pieces equal one read, seek() reaches any position, and 10,000 bytes equal @noble/hashes", () => {
    const k = kernel();
    const rand = rngFor(SEED, `${build} xof`);
    const OUT = 10_000;
    for (const length of [0, 64, 1025, int(rand, 1, 70_000), REGION + int(rand, 1, 5000)]) {
      const input = randomBytes(rand, length);
      for (const mode of MODES) {
        const at = (how: string) => where(`${mode.name}, ${length}-byte input, ${how}`);
        const expected = mode.noble(input, OUT);
        const hasher = feed(mode.hasher(k), input, randomPieces(rand, length));
        expect(hex(hasher.xof().read(OUT)), at(`one read of ${OUT}`)).toBe(hex(expected));
        expect(hex(hasher.digest(OUT)), at(`digest(${OUT})`)).toBe(hex(expected));
        expect(hex(mode.oneShot(k, input, OUT)), at(`one-shot, ${OUT} bytes`)).toBe(hex(expected));

        for (const [total, pattern] of [
          [131, [1, 7, 63, 64, 65]],
          [4000, [1, 7, 63, 64, 65, 127, 128, 129, 1023, 1024, 1025]],
          [OUT, [int(rand, 1, 2000), int(rand, 1, 64), int(rand, 1000, 1100)]],
        ] as [number, number[]][]) {
          const reader = hasher.xof();
          const parts: Uint8Array[] = [];
          for (let got = 0, i = 0; got < total; i++) {
            const n = Math.min(pattern[i % pattern.length], total - got);
            if (i % 2 === 0) {
              parts.push(reader.read(n));
            } else {
              const into = new Uint8Array(n);
              reader.readInto(into);
              parts.push(into);
            }
            got += n;
          }
          expect(hex(concat(parts)), at(`${total} bytes read in pieces of ${pattern.join(", ")}`)).toBe(
            hex(expected.subarray(0, total)),
          );
        }

        const reader = hasher.xof();
        const positions = [
          0,
          1,
          63,
          64,
          65,
          1023,
          1024,
          1025,
          4095,
          9000,
          int(rand, 0, OUT - 1),
          int(rand, 0, OUT - 1),
        ];
        for (const position of positions) {
          const n = int(rand, 0, Math.min(1100, OUT - position));
          reader.seek(position);
          expect(hex(reader.read(n)), at(`seek(${position}), read(${n})`)).toBe(
            hex(expected.subarray(position, position + n)),
          );
          // Reading on continues from where the last read ended.
          const m = Math.min(100, OUT - position - n);
          expect(hex(reader.read(m)), at(`seek(${position}), read(${n}), read(${m})`)).toBe(
            hex(expected.subarray(position + n, position + n + m)),
          );
        }
      }
    }
  });

  it("XOF: seek() beyond what @noble/hashes reads, checked against a reference compression", () => {
    const k = kernel();
    const rand = rngFor(SEED, `${build} xof far`);
    const key = randomBytes(rand, 32);
    for (const keyed of [false, true]) {
      const input = randomBytes(rand, int(rand, 0, 64));
      const hasher = keyed ? k.createKeyedHasher(key).update(input) : k.createHasher().update(input);
      const refKey = keyed ? key : null;
      // First the reference itself, against @noble/hashes.
      const noble = keyed ? nobleBlake3(input, { key, dkLen: 1000 }) : nobleBlake3(input, { dkLen: 1000 });
      expect(hex(referenceOutput(refKey, input, 0, 1000)), "the test's reference compression").toBe(hex(noble));
      const reader = hasher.xof();
      // Block counters past 2^32 (the high counter word) and near the largest safe position.
      for (const position of [
        2 ** 32 * 64 - 100,
        2 ** 32 * 64,
        2 ** 40 + 3,
        2 ** 50 + int(rand, 0, 2 ** 20),
        Number.MAX_SAFE_INTEGER - 3000,
      ]) {
        reader.seek(position);
        const n = int(rand, 1, 2000);
        expect(
          hex(reader.read(n)),
          where(`${keyed ? "keyed" : "plain"}, ${input.length}-byte input, seek(${position}), read(${n})`),
        ).toBe(hex(referenceOutput(refKey, input, position, n)));
      }
    }
  });

  it("XOF: seek() rejects a negative or fractional position; a reader outlives later updates", () => {
    const k = kernel();
    const rand = rngFor(SEED, `${build} xof reader`);
    const first = randomBytes(rand, 3000);
    const more = randomBytes(rand, 5000);
    const hasher = k.createHasher().update(first);
    const reader = hasher.xof();
    for (const bad of [-1, 0.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => reader.seek(bad), `seek(${bad})`).toThrow(RangeError);
    }
    hasher.update(more);
    k.hash(randomBytes(rand, 70_000));
    expect(hex(reader.read(200)), where("reader made before more updates")).toBe(
      hex(nobleBlake3(first, { dkLen: 200 })),
    );
    expect(hex(hasher.digest(200)), where("digest after the reader")).toBe(
      hex(nobleBlake3(concat([first, more]), { dkLen: 200 })),
    );
  });

  // --- several hashers sharing the kernel -------------------------------------------------------------------

  it("hashers of every mode updated alternately equal each alone, whatever runs in between", () => {
    const k = kernel();
    const rand = rngFor(SEED, `${build} interleave`);
    const lengths = [
      1023 * CHUNK_LEN + int(rand, 1, 1023),
      int(rand, REGION, 2 * REGION),
      int(rand, 1, 5000),
      0,
      int(rand, 60_000, 70_000),
      2 * REGION,
    ];
    const jobs = lengths.map((length, i) => {
      const mode = MODES[i % MODES.length];
      const input = randomBytes(rand, length);
      return { mode, input, sizes: randomPieces(rand, length), next: 0, offset: 0, hasher: mode.hasher(k) };
    });
    let prefixChecks = 0;
    for (
      let live = jobs.filter((j) => j.next < j.sizes.length);
      live.length > 0;
      live = jobs.filter((j) => j.next < j.sizes.length)
    ) {
      const job = live[int(rand, 0, live.length - 1)];
      const size = job.sizes[job.next++];
      job.hasher.update(job.input.subarray(job.offset, job.offset + size));
      job.offset += size;
      switch (int(rand, 0, 11)) {
        case 0: {
          // A one-shot call of any mode, long enough to overwrite the whole input region.
          const mode = MODES[int(rand, 0, 2)];
          const other = randomBytes(rand, int(rand, 0, REGION + 100));
          expect(hex(mode.oneShot(k, other, 40)), where(`one-shot ${mode.name} between updates`)).toBe(
            hex(mode.noble(other, 40)),
          );
          break;
        }
        case 1:
          // Creating a derive-key hasher hashes its context on the kernel.
          k.createDeriveKeyHasher(`context ${rand()}`);
          k.createKeyedHasher(randomBytes(rand, 32));
          break;
        case 2: {
          const out = new Uint8Array(32);
          k.subtreeCv(randomBytes(rand, int(rand, 1, 3 * REGION)), 0, out);
          k.chunkCv(randomBytes(rand, int(rand, 0, CHUNK_LEN)), int(rand, 0, 1000), false, out);
          k.parentCv(randomBytes(rand, 64), true, out);
          break;
        }
        case 3: {
          // The digest of everything so far, from a hasher that may or may not be the resident one.
          if (prefixChecks >= 8) break;
          prefixChecks++;
          const other = jobs[int(rand, 0, jobs.length - 1)];
          const so = other.input.subarray(0, other.offset);
          expect(
            hex(other.hasher.digest(50)),
            where(`${other.mode.name} digest after ${other.offset} of ${other.input.length} bytes`),
          ).toBe(hex(other.mode.noble(so, 50)));
          break;
        }
        default:
          break;
      }
    }
    for (const job of jobs) {
      const at = where(`${job.mode.name}, ${job.input.length} bytes, interleaved`);
      const expected = hex(job.mode.noble(job.input, 131));
      expect(hex(job.hasher.digest(131)), at).toBe(expected);
      expect(hex(feed(job.mode.hasher(k), job.input, job.sizes).digest(131)), `${at} (same pieces, alone)`).toBe(
        expected,
      );
    }
  });

  it("one-shot calls between a streaming hasher's updates do not disturb it", () => {
    const k = kernel();
    const rand = rngFor(SEED, `${build} one-shot between`);
    for (const mode of MODES) {
      const a = randomBytes(rand, int(rand, 1, 3000));
      const b = randomBytes(rand, int(rand, REGION, REGION + 3000));
      const hasher = mode.hasher(k).update(a);
      for (const other of MODES) other.oneShot(k, randomBytes(rand, int(rand, 0, REGION + 10)), 64);
      hasher.update(b);
      for (const other of MODES) other.oneShot(k, randomBytes(rand, int(rand, 0, 5000)));
      expect(hex(hasher.digest(131)), where(`${mode.name}, one-shot calls of every mode between updates`)).toBe(
        hex(mode.noble(concat([a, b]), 131)),
      );
    }
  });

  it("digest() twice gives the same answer, and updates after digest() continue the stream", () => {
    const k = kernel();
    const rand = rngFor(SEED, `${build} digest continues`);
    const input = randomBytes(rand, 3 * REGION + 1000);
    for (const mode of MODES) {
      // Stops on chunk and region boundaries, where a complete chunk is held back as a possible root.
      for (const stop of [
        0,
        1,
        64,
        CHUNK_LEN,
        2 * CHUNK_LEN,
        3 * CHUNK_LEN + 1,
        REGION,
        REGION + 1,
        2 * REGION,
        3 * REGION + 1000,
      ]) {
        const at = (how: string) => where(`${mode.name}, digest after ${stop} of ${input.length} bytes, ${how}`);
        const head = input.subarray(0, stop);
        const hasher = mode.hasher(k).update(head);
        const expectedHead = hex(mode.noble(head, 131));
        expect(hex(hasher.digest(131)), at("first digest")).toBe(expectedHead);
        expect(hex(hasher.digest(131)), at("second digest")).toBe(expectedHead);
        expect(hex(hasher.xof().read(131)), at("xof after digest")).toBe(expectedHead);
        feed(hasher, input.subarray(stop), randomPieces(rand, input.length - stop));
        expect(hex(hasher.digest(131)), at("digest of the whole stream")).toBe(hex(mode.noble(input, 131)));
      }
    }
  });

  it("reset() starts over in the same mode, whether or not the hasher is the resident one", () => {
    const k = kernel();
    const rand = rngFor(SEED, `${build} reset`);
    for (const mode of MODES) {
      const at = (how: string) => where(`${mode.name}, ${how}`);
      const first = randomBytes(rand, int(rand, 1, 2 * REGION));
      const second = randomBytes(rand, int(rand, 1, 2 * REGION));
      const hasher = mode.hasher(k);
      expect(hex(hasher.update(first).reset().digest()), at("reset then digest")).toBe(
        hex(mode.noble(new Uint8Array(0), 32)),
      );
      // Resident when reset.
      hasher.update(first).reset().update(second);
      expect(hex(hasher.digest(131)), at("reset while resident")).toBe(hex(mode.noble(second, 131)));
      // Evicted (another hasher used the kernel) when reset; then it must not inherit the other's state.
      const other = MODES[int(rand, 0, 2)].hasher(k);
      hasher.reset().update(first);
      other.update(second);
      hasher.reset();
      other.update(first);
      hasher.update(second);
      expect(hex(hasher.digest(131)), at("reset while evicted")).toBe(hex(mode.noble(second, 131)));
      // Reset of a hasher that was evicted and restored before.
      hasher.reset().update(first);
      other.update(second);
      hasher.update(second);
      hasher.reset();
      other.update(first);
      hasher.update(first);
      expect(hex(hasher.digest(131)), at("reset after a restore")).toBe(hex(mode.noble(first, 131)));
    }
  });

  // --- input written straight into the kernel's memory ------------------------------------------------------

  it("updateFromInput (caller writes into inputView()) equals update()", () => {
    const k = kernel();
    const rand = rngFor(SEED, `${build} update from input`);
    const input = randomBytes(rand, MiB + 7 + int(rand, 0, 3000));
    for (const mode of MODES) {
      const viaView = mode.hasher(k);
      const viaUpdate = mode.hasher(k);
      const other = MODES[int(rand, 0, 2)].hasher(k);
      for (let offset = 0; offset < input.length;) {
        const choice = int(rand, 0, 4);
        const n = Math.min(
          input.length - offset,
          choice === 0 ? REGION : choice === 1 ? 0 : choice === 2 ? CHUNK_LEN : int(rand, 1, REGION),
        );
        const piece = input.subarray(offset, offset + n);
        // Another hasher holds the kernel before the caller fills the region.
        if (int(rand, 0, 2) === 0) other.update(randomBytes(rand, int(rand, 0, 2000)));
        k.inputView().set(piece);
        viaView.updateFromInput(n);
        viaUpdate.update(piece);
        offset += n;
      }
      const expected = hex(mode.noble(input, 131));
      expect(hex(viaView.digest(131)), where(`${mode.name}, updateFromInput`)).toBe(expected);
      expect(hex(viaUpdate.digest(131)), where(`${mode.name}, update`)).toBe(expected);
    }
    const hasher = k.createHasher();
    expect(() => hasher.updateFromInput(REGION + 1)).toThrow(RangeError);
    expect(() => hasher.updateFromInput(-1)).toThrow(RangeError);
  });

  it("updateFromRegion (reads land in readRegions(), as the CLI's) equals @noble/hashes; other memory is refused", () => {
    const k = kernel();
    const rand = rngFor(SEED, `${build} update from region`);
    // Regions larger than the kernel's own input region, as the CLI uses them (two of 1 MiB).
    const regions = k.readRegions(2, MiB);
    expect(regions.map((r) => r.length)).toEqual([MiB, MiB]);
    // Asking again for no more does not grow the memory: the same bytes come back.
    const again = k.readRegions(2, MiB);
    expect(again[1]!.byteOffset).toBe(regions[1]!.byteOffset);
    expect(again[0]!.buffer).toBe(regions[0]!.buffer);
    const input = randomBytes(rand, 3 * MiB + int(rand, 0, 5000));
    for (const mode of MODES) {
      const hasher = mode.hasher(k);
      const other = MODES[int(rand, 0, 2)].hasher(k);
      let which = 0;
      for (let offset = 0; offset < input.length;) {
        const choice = int(rand, 0, 3);
        const n = Math.min(input.length - offset, choice === 0 ? MiB : choice === 1 ? CHUNK_LEN : int(rand, 1, MiB));
        const region = again[which]!;
        which ^= 1;
        region.set(input.subarray(offset, offset + n));
        // Another hasher (and one-shot calls) may use the kernel in between, as in the daemon.
        if (int(rand, 0, 2) === 0) other.update(randomBytes(rand, int(rand, 0, 2000)));
        if (int(rand, 0, 4) === 0) k.hash(randomBytes(rand, int(rand, 0, 3000)));
        hasher.updateFromRegion(region.subarray(0, n));
        offset += n;
      }
      expect(hex(hasher.digest(131)), where(`${mode.name}, updateFromRegion`)).toBe(hex(mode.noble(input, 131)));
    }
    const hasher = k.createHasher();
    expect(() => hasher.updateFromRegion(new Uint8Array(10))).toThrow(RangeError);
    expect(() => hasher.updateFromRegion(k.inputView())).toThrow(RangeError);
    // Straddling the start of the regions: the first bytes are the kernel's own.
    const first = again[0]!;
    expect(() => hasher.updateFromRegion(new Uint8Array(first.buffer, first.byteOffset - 8, 16))).toThrow(RangeError);
    expect(() => k.readRegions(0, MiB)).toThrow(RangeError);
  });

  // --- tree primitives (plain-hash tree) --------------------------------------------------------------------

  it("tree primitives rebuild the plain hash", () => {
    const k = kernel();
    const rand = rngFor(SEED, `${build} tree`);
    const cv = (fill: (out: Uint8Array) => void) => {
      const out = new Uint8Array(32);
      fill(out);
      return out;
    };
    // One chunk: its root chaining value is the hash.
    for (const length of [0, 1, 63, 64, 65, 1000, CHUNK_LEN]) {
      const data = randomBytes(rand, length);
      expect(hex(cv((o) => k.chunkCv(data, 0, true, o))), where(`chunkCv root, ${length} bytes`)).toBe(
        hex(nobleBlake3(data)),
      );
    }
    // Several chunks: root = parent(left subtree, right subtree), left being the largest power of two chunks below.
    for (const length of [
      CHUNK_LEN + 1,
      2 * CHUNK_LEN,
      4097,
      int(rand, 5000, REGION),
      REGION + 5,
      2 * REGION + 5,
      int(rand, 2 * REGION, 5 * REGION),
    ]) {
      const data = randomBytes(rand, length);
      const chunks = Math.ceil(length / CHUNK_LEN);
      const left = 2 ** Math.floor(Math.log2(chunks - 1));
      const pair = new Uint8Array(64);
      k.subtreeCv(data.subarray(0, left * CHUNK_LEN), 0, pair, 0);
      k.subtreeCv(data.subarray(left * CHUNK_LEN), left, pair, 32);
      expect(hex(cv((o) => k.parentCv(pair, true, o))), where(`subtreeCv + parentCv root, ${length} bytes`)).toBe(
        hex(nobleBlake3(data)),
      );
    }
    // Chunk indexes past 2^32 (the counter's high word), against the reference compression: a 4-lane batch that
    // crosses 2^32, and single chunks.
    for (const firstChunk of [0, 2 ** 32 - 2, 2 ** 32 + 4, 2 ** 40 + 8 * int(rand, 0, 2 ** 20)]) {
      const data = randomBytes(rand, 8 * CHUNK_LEN + int(rand, 1, CHUNK_LEN));
      expect(hex(cv((o) => k.subtreeCv(data, firstChunk, o))), where(`subtreeCv at chunk ${firstChunk}`)).toBe(
        hex(wordsToBytes(referenceSubtreeCv(data, BigInt(firstChunk)))),
      );
      const chunk = data.subarray(0, int(rand, 1, CHUNK_LEN));
      expect(
        hex(cv((o) => k.chunkCv(chunk, firstChunk + 1, false, o))),
        where(`chunkCv at chunk ${firstChunk + 1}`),
      ).toBe(hex(wordsToBytes(referenceChunkCv(chunk, BigInt(firstChunk + 1)))));
    }
    // Two chunks from chunkCv at indexes 0 and 1 (the index enters the chunk's compressions).
    for (const length of [CHUNK_LEN + 1, CHUNK_LEN + 64, CHUNK_LEN + 65, 2 * CHUNK_LEN]) {
      const data = randomBytes(rand, length);
      const pair = new Uint8Array(64);
      k.chunkCv(data.subarray(0, CHUNK_LEN), 0, false, pair, 0);
      k.chunkCv(data.subarray(CHUNK_LEN), 1, false, pair, 32);
      expect(hex(cv((o) => k.parentCv(pair, true, o))), where(`chunkCv x2 + parentCv root, ${length} bytes`)).toBe(
        hex(nobleBlake3(data)),
      );
    }
  });

  // --- bad input --------------------------------------------------------------------------------------------

  it("a key of the wrong length (or not bytes) throws a TypeError naming the expected length", () => {
    const k = kernel();
    const rand = rngFor(SEED, `${build} bad key`);
    const data = randomBytes(rand, 5000);
    const inFlight = k.createHasher().update(data.subarray(0, 2000));
    for (const length of [0, 16, 31, 33, 64]) {
      const key = randomBytes(rand, length);
      const message = new RegExp(`key must be 32 bytes, got ${length}`);
      expect(() => k.keyedHash(key, data), `keyedHash, ${length}-byte key`).toThrow(TypeError);
      expect(() => k.keyedHash(key, data), `keyedHash, ${length}-byte key`).toThrow(message);
      expect(() => k.createKeyedHasher(key), `createKeyedHasher, ${length}-byte key`).toThrow(TypeError);
      expect(() => k.createKeyedHasher(key), `createKeyedHasher, ${length}-byte key`).toThrow(message);
    }
    expect(
      () => k.keyedHash(Array.from(randomBytes(rand, 32)) as unknown as Uint8Array, data),
      "a plain array",
    ).toThrow(TypeError);
    expect(() => k.createKeyedHasher(new Uint16Array(16) as unknown as Uint8Array), "a Uint16Array").toThrow(TypeError);
    expect(() => k.keyedHash(undefined as unknown as Uint8Array, data), "undefined").toThrow(TypeError);
    // The failed calls left the kernel and the hasher in flight intact.
    inFlight.update(data.subarray(2000));
    expect(hex(inFlight.digest()), where("hasher in flight across bad-key calls")).toBe(hex(nobleBlake3(data)));
    // A good key is copied: changing the caller's array afterwards changes nothing.
    const key = randomBytes(rand, 32);
    const original = key.slice();
    const keyed = k.createKeyedHasher(key);
    key.fill(0);
    expect(hex(keyed.update(data).digest()), where("keyed hasher after the caller changed its key array")).toBe(
      hex(nobleBlake3(data, { key: original })),
    );
  });
});

// =============================================================================================================

describe("BLAKE3 SIMD and scalar builds", () => {
  it("return identical bytes for the same random inputs, in every mode, one-shot, streamed and XOF", () => {
    const simd = blake3Kernel("simd");
    const scalar = blake3Kernel("scalar");
    const rand = rngFor(SEED, "cross-build");
    const lengths = [
      0,
      1,
      64,
      1023,
      1024,
      1025,
      4096,
      4097,
      int(rand, 4098, 70_000),
      REGION - 1,
      REGION,
      REGION + 1,
      int(rand, REGION, 3 * REGION),
      MiB + 7,
    ];
    for (const length of lengths) {
      const input = randomBytes(rand, length);
      const sizes = randomPieces(rand, length);
      for (const mode of MODES) {
        const at = (how: string) => `${mode.name}, ${length} bytes, ${how}, seed ${SEED}`;
        expect(hex(mode.oneShot(simd, input, 131)), at("one-shot")).toBe(hex(mode.oneShot(scalar, input, 131)));
        expect(hex(feed(mode.hasher(simd), input, sizes).digest(131)), at("streamed")).toBe(
          hex(feed(mode.hasher(scalar), input, sizes).digest(131)),
        );
        const position = int(rand, 0, 2 ** 40);
        const [a, b] = [simd, scalar].map((k) => {
          const reader = feed(mode.hasher(k), input, sizes).xof();
          reader.seek(position);
          return reader.read(3000);
        });
        expect(hex(a), at(`xof at ${position}`)).toBe(hex(b));
      }
      if (length > 0) {
        const [a, b] = [simd, scalar].map((k) => {
          const out = new Uint8Array(32);
          k.subtreeCv(input, 64, out);
          return out;
        });
        expect(hex(a), `subtreeCv, ${length} bytes, seed ${SEED}`).toBe(hex(b));
      }
    }
    // One large input: 16 MiB + 3, plain mode, one-shot and streamed.
    const big = differentialInput(16 * MiB + 3);
    const sizes = randomPieces(rand, big.length);
    expect(hex(simd.hash(big, 131)), `16 MiB + 3, one-shot, seed ${SEED}`).toBe(hex(scalar.hash(big, 131)));
    expect(hex(feed(simd.createHasher(), big, sizes).digest(131)), `16 MiB + 3, streamed, seed ${SEED}`).toBe(
      hex(feed(scalar.createHasher(), big, sizes).digest(131)),
    );
  });
});

describe("BLAKE3 default kernel", () => {
  it("is the SIMD build where the runtime accepts it, else the scalar one", () => {
    expect(blake3Kernel()).toBe(blake3Kernel(simdSupported() ? "simd" : "scalar"));
  });

  it.each(vectors.cases)("module-level functions match the official vector: input_len $input_len", (c) => {
    const input = vectorInput(c.input_len);
    const key = utf8(vectors.key);
    const context = vectors.context_string;
    expect(hex(blake3(input, 131))).toBe(c.hash);
    expect(hex(blake3(input))).toBe(c.hash.slice(0, 64));
    expect(hex(blake3Keyed(key, input, 131))).toBe(c.keyed_hash);
    expect(hex(blake3Keyed(key, input))).toBe(c.keyed_hash.slice(0, 64));
    expect(hex(blake3DeriveKey(context, input, 131))).toBe(c.derive_key);
    expect(hex(blake3DeriveKey(context, input))).toBe(c.derive_key.slice(0, 64));
    expect(hex(createBlake3().update(input).digest(131))).toBe(c.hash);
    expect(hex(createBlake3Keyed(key).update(input).digest(131))).toBe(c.keyed_hash);
    expect(hex(createBlake3DeriveKey(context).update(input).digest(131))).toBe(c.derive_key);
  });

  it("module-level keyed functions reject a key of the wrong length with a TypeError", () => {
    expect(() => blake3Keyed(new Uint8Array(31), new Uint8Array(1))).toThrow(TypeError);
    expect(() => blake3Keyed(new Uint8Array(31), new Uint8Array(1))).toThrow(/key must be 32 bytes, got 31/);
    expect(() => createBlake3Keyed(new Uint8Array(33))).toThrow(/key must be 32 bytes, got 33/);
  });
});
