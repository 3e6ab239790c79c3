// The typed wrapper around the BLAKE3 WebAssembly kernel (wasm/assembly/blake3.ts).
//
// One kernel instance per build (SIMD or scalar) serves any number of hashers: a hasher's streaming state
// lives in the kernel's memory while that hasher is in use, and is copied out only when another hasher (or a
// one-shot call) needs the kernel. Views of the kernel's memory are made once: the kernel never grows it, and
// only readRegions() does (once per size asked), for a caller that reads files straight into kernel memory.
import { instantiateKernel, kernelBytes } from "./instantiate.js";
import { BLAKE3_SCALAR_WASM, BLAKE3_SIMD_WASM } from "./wasm-bytes.generated.js";

export const BLAKE3_OUT_LEN = 32;
export const BLAKE3_KEY_LEN = 32;
export const CHUNK_LEN = 1024;

// Mode flags (BLAKE3 specification, section 2.1).
const KEYED_HASH = 1 << 4;
const DERIVE_KEY_CONTEXT = 1 << 5;
const DERIVE_KEY_MATERIAL = 1 << 6;

const IV_BYTES = new Uint8Array(
  new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19])
    .buffer,
);
const MAX_STACK = 54;
const ROOT_NODE_LEN = 112;

export type Blake3Build = "simd" | "scalar";

interface Blake3Exports {
  memory: WebAssembly.Memory;
  inputPtr(): number;
  inputLen(): number;
  outPtr(): number;
  outLen(): number;
  statePtr(): number;
  stateHeaderLen(): number;
  stackLen(): number;
  rootNodePtr(): number;
  simd(): number;
  init(flags: number): void;
  update(ptr: number, len: number, moreFollows: number): void;
  finalize(): void;
  output(nBlocks: number, block: bigint): void;
  chunkCvAt(ptr: number, len: number, counter: bigint, root: number, outPtr: number): void;
  parentCvAt(pairPtr: number, root: number, outPtr: number): void;
  subtreeCvAt(ptr: number, len: number, counter: bigint, outPtr: number): void;
}

let simdVerdict: boolean | undefined;

/** Whether this runtime accepts WebAssembly SIMD (an armv7 core without NEON does not). Asked once. */
export function simdSupported(): boolean {
  simdVerdict ??= WebAssembly.validate(kernelBytes(BLAKE3_SIMD_WASM));
  return simdVerdict;
}

const kernels = new Map<Blake3Build, Blake3Kernel>();
let defaultKernel: Blake3Kernel | undefined;

/** The kernel of the given build, or the fastest this runtime accepts. Compiled on first use. */
export function blake3Kernel(build?: Blake3Build): Blake3Kernel {
  if (build === undefined) {
    defaultKernel ??= blake3Kernel(simdSupported() ? "simd" : "scalar");
    return defaultKernel;
  }
  const chosen = build;
  let kernel = kernels.get(chosen);
  if (!kernel) {
    kernel = new Blake3Kernel(chosen);
    kernels.set(chosen, kernel);
  }
  return kernel;
}

export class Blake3Kernel {
  readonly build: Blake3Build;
  /** Bytes the input region holds: callers that fill it themselves (inputView) use at most this much. */
  readonly inputLen: number;
  private readonly k: Blake3Exports;
  private mem: Uint8Array;
  private readonly input: number;
  private readonly out: number;
  /** The first 32 bytes of the output region, where the tree primitives leave a chaining value. */
  private outCv: Uint8Array;
  /** Where the memory readRegions() added begins (the kernel's own memory ends there), and its length. */
  private regionBase = 0;
  private regionBytes = 0;
  private readonly state: number;
  private readonly stateHeaderLen: number;
  private readonly rootNode: number;
  /** The hasher whose state is in the kernel's memory now; null when none is. */
  private resident: Blake3Hasher | null = null;

  constructor(build: Blake3Build) {
    const bytes = kernelBytes(build === "simd" ? BLAKE3_SIMD_WASM : BLAKE3_SCALAR_WASM);
    this.k = instantiateKernel(bytes, `blake3-${build}`).exports as unknown as Blake3Exports;
    this.build = build;
    this.mem = new Uint8Array(this.k.memory.buffer);
    this.input = this.k.inputPtr();
    this.inputLen = this.k.inputLen();
    this.out = this.k.outPtr();
    this.outCv = this.mem.subarray(this.out, this.out + 32);
    this.state = this.k.statePtr();
    this.stateHeaderLen = this.k.stateHeaderLen();
    this.rootNode = this.k.rootNodePtr();
  }

  // --- one-shot -------------------------------------------------------------------------------------------

  hash(input: Uint8Array, outputLength = BLAKE3_OUT_LEN): Uint8Array {
    return this.oneShot(IV_BYTES, 0, input, new Uint8Array(outputLength));
  }

  hashInto(input: Uint8Array, out: Uint8Array): void {
    this.oneShot(IV_BYTES, 0, input, out);
  }

  keyedHash(key: Uint8Array, input: Uint8Array, outputLength = BLAKE3_OUT_LEN): Uint8Array {
    return this.oneShot(checkKey(key), KEYED_HASH, input, new Uint8Array(outputLength));
  }

  deriveKey(context: string, keyMaterial: Uint8Array, outputLength = BLAKE3_OUT_LEN): Uint8Array {
    return this.oneShot(this.contextKey(context), DERIVE_KEY_MATERIAL, keyMaterial, new Uint8Array(outputLength));
  }

  // --- streaming ------------------------------------------------------------------------------------------

  createHasher(): Blake3Hasher {
    return new Blake3Hasher(this, IV_BYTES, 0);
  }

  createKeyedHasher(key: Uint8Array): Blake3Hasher {
    return new Blake3Hasher(this, checkKey(key), KEYED_HASH);
  }

  createDeriveKeyHasher(context: string): Blake3Hasher {
    return new Blake3Hasher(this, this.contextKey(context), DERIVE_KEY_MATERIAL);
  }

  /**
   * The kernel's input region, for callers that read file data straight into it (saves a copy, about 8 % at
   * these speeds). Valid until the next call into this kernel; pass the bytes to Blake3Hasher.updateFromInput.
   */
  inputView(): Uint8Array {
    return this.mem.subarray(this.input, this.input + this.inputLen);
  }

  /**
   * `count` separate regions of `length` bytes in the kernel's memory, past everything the kernel itself
   * uses, for a caller that keeps a file read in flight into one region while the kernel hashes another
   * (Blake3Hasher.updateFromRegion): the read lands where the kernel hashes, no copy, and the two overlap.
   * The first call (and any asking for more) grows the memory, which leaves views made earlier (inputView,
   * earlier regions) stale: take the regions first, and only once per run.
   */
  readRegions(count: number, length: number): Uint8Array[] {
    const bytes = count * length;
    if (!(Number.isSafeInteger(bytes) && count > 0 && length > 0))
      throw new RangeError(`bad regions ${count} x ${length}`);
    if (bytes > this.regionBytes) {
      const memory = this.k.memory;
      if (this.regionBytes === 0) this.regionBase = memory.buffer.byteLength;
      const have = memory.buffer.byteLength - this.regionBase;
      if (bytes > have) memory.grow(Math.ceil((bytes - have) / 65536));
      this.regionBytes = memory.buffer.byteLength - this.regionBase;
      this.mem = new Uint8Array(memory.buffer);
      this.outCv = this.mem.subarray(this.out, this.out + 32);
    }
    return Array.from({ length: count }, (_, i) =>
      this.mem.subarray(this.regionBase + i * length, this.regionBase + (i + 1) * length),
    );
  }

  // --- tree primitives for verified streaming (plain-hash tree only) --------------------------------------

  /** Chaining value of chunk `index` (data: its 0..1024 bytes); with root, the hash of a one-chunk object. */
  chunkCv(data: Uint8Array, index: number, root: boolean, out: Uint8Array, outOffset = 0): void {
    out.set(this.chunkCvView(data, index, root), outOffset);
  }

  /** chunkCv into a view of the kernel's memory, valid until the next call into this kernel (saves a copy). */
  chunkCvView(data: Uint8Array, index: number, root: boolean): Uint8Array {
    this.mem.set(data, this.input);
    this.k.chunkCvAt(this.input, data.length, BigInt(index), root ? 1 : 0, this.out);
    return this.outCv;
  }

  /** Chaining value of the parent whose 64-byte block (left and right chaining values) is pair. */
  parentCv(pair: Uint8Array, root: boolean, out: Uint8Array, outOffset = 0): void {
    out.set(this.parentCvView(pair, root), outOffset);
  }

  /** parentCv into a view of the kernel's memory, valid until the next call into this kernel. */
  parentCvView(pair: Uint8Array, root: boolean): Uint8Array {
    this.mem.set(pair, this.input);
    this.k.parentCvAt(this.input, root ? 1 : 0, this.out);
    return this.outCv;
  }

  /** Non-root chaining value of the subtree made of `data` (>= 1 byte) whose first chunk is `firstChunk`. */
  subtreeCv(data: Uint8Array, firstChunk: number, out: Uint8Array, outOffset = 0): void {
    if (data.length > this.inputLen) {
      // Split where BLAKE3 does (the largest power of two chunks that leaves a right side), then join.
      const chunks = Math.ceil(data.length / CHUNK_LEN);
      const leftBytes = 2 ** Math.floor(Math.log2(chunks - 1)) * CHUNK_LEN;
      const pair = new Uint8Array(64);
      this.subtreeCv(data.subarray(0, leftBytes), firstChunk, pair, 0);
      this.subtreeCv(data.subarray(leftBytes), firstChunk + leftBytes / CHUNK_LEN, pair, 32);
      this.parentCv(pair, false, out, outOffset);
      return;
    }
    this.mem.set(data, this.input);
    this.k.subtreeCvAt(this.input, data.length, BigInt(firstChunk), this.out);
    out.set(this.outCv, outOffset);
  }

  // --- internals shared with Blake3Hasher -----------------------------------------------------------------

  /** Makes `hasher`'s state the one in the kernel's memory, saving the previous owner's. */
  activate(hasher: Blake3Hasher): void {
    if (this.resident === hasher) return;
    this.evict();
    if (hasher.saved) {
      this.mem.set(hasher.saved, this.state);
    } else {
      this.mem.set(hasher.key, this.state);
      this.k.init(hasher.flags);
    }
    this.resident = hasher;
  }

  /** Feeds bytes to the resident hasher, in pieces that fit the input region. */
  feed(data: Uint8Array): void {
    const { mem, input, inputLen } = this;
    for (let offset = 0; offset < data.length;) {
      const take = Math.min(inputLen, data.length - offset);
      mem.set(data.subarray(offset, offset + take), input);
      offset += take;
      this.k.update(input, take, offset < data.length ? 1 : 0);
    }
  }

  feedFromInput(length: number): void {
    if (!(length >= 0 && length <= this.inputLen))
      throw new RangeError(`input length ${length} out of range 0..${this.inputLen}`);
    this.k.update(this.input, length, 0);
  }

  feedRegion(view: Uint8Array): void {
    const start = view.byteOffset;
    if (
      view.buffer !== this.mem.buffer ||
      start < this.regionBase ||
      start + view.length > this.regionBase + this.regionBytes
    ) {
      throw new RangeError("updateFromRegion: the bytes are not in a region of this kernel's readRegions()");
    }
    this.k.update(start, view.length, 0);
  }

  /** Finalizes the resident hasher and returns a copy of its root node, for output now or later (XOF). */
  finalizeRoot(): Uint8Array {
    this.k.finalize();
    return this.mem.slice(this.rootNode, this.rootNode + ROOT_NODE_LEN);
  }

  /** Writes output bytes [position, position + out.length) of the given root node into out. */
  outputInto(rootNode: Uint8Array, position: number, out: Uint8Array): void {
    this.mem.set(rootNode, this.rootNode);
    const maxBlocks = this.k.outLen() >> 6;
    let written = 0;
    while (written < out.length) {
      const pos = position + written;
      const block = Math.floor(pos / 64);
      const skip = pos % 64;
      const blocks = Math.min(maxBlocks, Math.ceil((skip + out.length - written) / 64));
      this.k.output(blocks, BigInt(block));
      const take = Math.min(blocks * 64 - skip, out.length - written);
      out.set(this.mem.subarray(this.out + skip, this.out + skip + take), written);
      written += take;
    }
  }

  private evict(): void {
    const owner = this.resident;
    if (!owner) return;
    const live = this.stateHeaderLen + this.k.stackLen() * 32;
    owner.saved ??= new Uint8Array(this.stateHeaderLen + MAX_STACK * 32);
    owner.saved.set(this.mem.subarray(this.state, this.state + live));
    this.resident = null;
  }

  private oneShot(key: Uint8Array, flags: number, input: Uint8Array, out: Uint8Array): Uint8Array {
    this.evict();
    this.mem.set(key, this.state);
    this.k.init(flags);
    this.feed(input);
    this.outputInto(this.finalizeRoot(), 0, out);
    return out;
  }

  private contextKey(context: string): Uint8Array {
    return this.oneShot(IV_BYTES, DERIVE_KEY_CONTEXT, Buffer.from(context, "utf8"), new Uint8Array(32));
  }

  /** Forgets a hasher that is being reset, so its stale state is never saved over its fresh one. */
  release(hasher: Blake3Hasher): void {
    if (this.resident === hasher) this.resident = null;
  }
}

function checkKey(key: Uint8Array): Uint8Array {
  if (!(key instanceof Uint8Array) || key.length !== BLAKE3_KEY_LEN) {
    throw new TypeError(`BLAKE3 key must be ${BLAKE3_KEY_LEN} bytes, got ${key?.length ?? typeof key}`);
  }
  return key.slice();
}

/** Streaming BLAKE3 (plain, keyed or derive-key). digest() does not end the hasher: more updates may follow. */
export class Blake3Hasher {
  /** @internal the state saved while another hasher uses the kernel; null until first evicted. */
  saved: Uint8Array | null = null;

  constructor(
    private readonly kernel: Blake3Kernel,
    /** @internal */ readonly key: Uint8Array,
    /** @internal */ readonly flags: number,
  ) {}

  update(data: Uint8Array): this {
    this.kernel.activate(this);
    this.kernel.feed(data);
    return this;
  }

  /** Absorbs the first `length` bytes the caller wrote into kernel.inputView(). */
  updateFromInput(length: number): this {
    this.kernel.activate(this);
    this.kernel.feedFromInput(length);
    return this;
  }

  /** Absorbs `view`, which lies in one of kernel.readRegions(): hashed in place, without a copy. */
  updateFromRegion(view: Uint8Array): this {
    this.kernel.activate(this);
    this.kernel.feedRegion(view);
    return this;
  }

  digest(outputLength = BLAKE3_OUT_LEN): Uint8Array {
    const out = new Uint8Array(outputLength);
    this.digestInto(out);
    return out;
  }

  digestInto(out: Uint8Array): void {
    this.kernel.activate(this);
    this.kernel.outputInto(this.kernel.finalizeRoot(), 0, out);
  }

  /** An extendable-output reader over the hash of everything absorbed so far. */
  xof(): Blake3OutputReader {
    this.kernel.activate(this);
    return new Blake3OutputReader(this.kernel, this.kernel.finalizeRoot());
  }

  /** Starts over with the same mode and key. */
  reset(): this {
    this.kernel.release(this);
    this.saved = null;
    return this;
  }
}

/** Reads BLAKE3's extendable output from any position (up to 2^64 bytes). */
export class Blake3OutputReader {
  private position = 0;

  constructor(
    private readonly kernel: Blake3Kernel,
    private readonly rootNode: Uint8Array,
  ) {}

  read(length: number): Uint8Array {
    const out = new Uint8Array(length);
    this.readInto(out);
    return out;
  }

  readInto(out: Uint8Array): void {
    this.kernel.outputInto(this.rootNode, this.position, out);
    this.position += out.length;
  }

  seek(position: number): void {
    if (!Number.isSafeInteger(position) || position < 0) throw new RangeError(`bad output position ${position}`);
    this.position = position;
  }
}

// --- the default kernel: SIMD where the runtime accepts it, else scalar ------------------------------------

export function blake3(input: Uint8Array, outputLength = BLAKE3_OUT_LEN): Uint8Array {
  return blake3Kernel().hash(input, outputLength);
}

export function blake3Keyed(key: Uint8Array, input: Uint8Array, outputLength = BLAKE3_OUT_LEN): Uint8Array {
  return blake3Kernel().keyedHash(key, input, outputLength);
}

export function blake3DeriveKey(context: string, keyMaterial: Uint8Array, outputLength = BLAKE3_OUT_LEN): Uint8Array {
  return blake3Kernel().deriveKey(context, keyMaterial, outputLength);
}

export function createBlake3(): Blake3Hasher {
  return blake3Kernel().createHasher();
}

export function createBlake3Keyed(key: Uint8Array): Blake3Hasher {
  return blake3Kernel().createKeyedHasher(key);
}

export function createBlake3DeriveKey(context: string): Blake3Hasher {
  return blake3Kernel().createDeriveKeyHasher(context);
}
