// SHA-256 over the AssemblyScript kernel in wasm/assembly/sha256.ts.
//
// One module instance serves every caller. Its streaming state is a small block of kernel memory; a hasher
// copies that block out only when another hasher (or a one-shot call) needs the kernel, so a single hasher fed
// in a loop never pays for the copy.
import { instantiateKernel, kernelBytes } from "./instantiate.js";
import { SHA256_WASM } from "./wasm-bytes.generated.js";

/** Digest length in bytes. */
export const SHA256_SIZE = 32;

interface Sha256Exports {
  // Only the buffer is used; typed structurally because tsconfig's libs (ES2022, no DOM) lack WebAssembly types.
  readonly memory: { readonly buffer: ArrayBuffer };
  inputPtr(): number;
  inputSize(): number;
  outputPtr(): number;
  statePtr(): number;
  stateSize(): number;
  init(): void;
  update(len: number): void;
  final(): void;
  hashInput(len: number): void;
}

interface Kernel {
  readonly x: Sha256Exports;
  // Views made once: the kernel never allocates or grows its memory, so its buffer never detaches.
  readonly input: Uint8Array;
  readonly output: Uint8Array;
  readonly state: Uint8Array;
  /** The save slot of the hasher whose state is in kernel memory, or null if none is. */
  owner: Uint8Array | null;
}

let kernel: Kernel | undefined;

// Instantiated on first use, not at import: importing stays free for processes that never hash.
function getKernel(): Kernel {
  if (kernel === undefined) {
    const x = instantiateKernel(kernelBytes(SHA256_WASM), "sha256").exports as unknown as Sha256Exports;
    const buffer = x.memory.buffer;
    kernel = {
      x,
      input: new Uint8Array(buffer, x.inputPtr(), x.inputSize()),
      output: new Uint8Array(buffer, x.outputPtr(), SHA256_SIZE),
      state: new Uint8Array(buffer, x.statePtr(), x.stateSize()),
      owner: null,
    };
  }
  return kernel;
}

/** Saves the resident hasher's state so the kernel can be used for something else. */
function evict(k: Kernel): void {
  if (k.owner !== null) {
    k.owner.set(k.state);
    k.owner = null;
  }
}

/** Feeds `data` through the fixed-size input buffer, one buffer-full per call into the kernel. */
function feed(k: Kernel, data: Uint8Array): void {
  const size = k.input.length;
  for (let offset = 0; offset < data.length; offset += size) {
    const piece = data.subarray(offset, offset + size);
    k.input.set(piece);
    k.x.update(piece.length);
  }
}

function checkOutput(out: Uint8Array): void {
  if (out.length < SHA256_SIZE) {
    throw new RangeError(`sha256: output buffer has ${out.length} bytes, needs at least ${SHA256_SIZE}`);
  }
}

/** Writes the SHA-256 digest of `data` to the first 32 bytes of `out`. */
export function sha256Into(data: Uint8Array, out: Uint8Array): void {
  checkOutput(out);
  const k = getKernel();
  evict(k);
  if (data.length <= k.input.length) {
    // Small inputs dominate Merkle trees: one call into the kernel instead of three.
    k.input.set(data);
    k.x.hashInput(data.length);
  } else {
    k.x.init();
    feed(k, data);
    k.x.final();
  }
  out.set(k.output);
}

/** Returns the SHA-256 digest of `data` (32 bytes). */
export function sha256(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(SHA256_SIZE);
  sha256Into(data, out);
  return out;
}

/** Incremental SHA-256. Many hashers may be used at once, interleaved in any order. */
export class Sha256Hasher {
  // Where this hasher's state waits while another one uses the kernel; made on first use.
  #saved: Uint8Array | null = null;
  #finished = false;

  update(data: Uint8Array): this {
    feed(this.#resident(), data);
    return this;
  }

  /** Writes the digest to the first 32 bytes of `out`. The hasher cannot be used afterwards. */
  digestInto(out: Uint8Array): void {
    checkOutput(out);
    const k = this.#resident();
    k.x.final();
    out.set(k.output);
    // final() spent the state in kernel memory: there is nothing left to save for anyone.
    k.owner = null;
    this.#saved = null;
    this.#finished = true;
  }

  /** Returns the digest (32 bytes). The hasher cannot be used afterwards. */
  digest(): Uint8Array {
    const out = new Uint8Array(SHA256_SIZE);
    this.digestInto(out);
    return out;
  }

  /** Makes this hasher's state the one in kernel memory and returns the kernel. */
  #resident(): Kernel {
    if (this.#finished) {
      throw new Error("Sha256Hasher: already digested; create a new hasher for another message");
    }
    const k = getKernel();
    if (this.#saved === null) {
      evict(k);
      this.#saved = new Uint8Array(k.state.length);
      k.x.init();
      k.owner = this.#saved;
    } else if (k.owner !== this.#saved) {
      evict(k);
      k.state.set(this.#saved);
      k.owner = this.#saved;
    }
    return k;
  }
}

export function createSha256(): Sha256Hasher {
  return new Sha256Hasher();
}
