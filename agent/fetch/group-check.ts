// Checks an untrusted outboard against an object's id, then each group of the object's bytes against the
// outboard, with the kernels' own tree primitives (the same ones OutboardBuilder and the proofs use): a fetcher
// knows a lying source at its first bad group instead of at the end of the object.
//
// The outboard's parents above the groups (wasm/README.md) are walked top-down once: every parent block must
// hash to the chaining value its own parent vouched for, the root to the id. The leaves of that walk are the
// groups' chaining values, which each arriving group is then compared with. The tail section is not needed
// here (proofs use it) and is not trusted: the store builds its own outboard from the verified bytes.
import { type Blake3Kernel, blake3Kernel, CHUNK_LEN } from "../kernels/blake3.js";
import { OUTBOARD_HEADER_LEN, parseOutboard, type Outboard } from "../kernels/outboard.js";
import { leftChunks } from "../kernels/tree.js";
import { toHex } from "../util/hex.js";

export class OutboardMismatch extends Error {
  override name = "OutboardMismatch";
}

export class GroupChecker {
  /** Bytes per group (the last group may be shorter). */
  readonly groupBytes: number;
  readonly groups: number;
  private readonly cvs: Uint8Array;
  private readonly scratch = new Uint8Array(32);

  private constructor(
    readonly outboard: Outboard,
    private readonly id: Uint8Array,
    private readonly kernel: Blake3Kernel,
  ) {
    this.groupBytes = outboard.groupChunks * CHUNK_LEN;
    this.groups = outboard.groups;
    this.cvs = new Uint8Array(32 * outboard.groups);
  }

  /**
   * Parses `bytes` as the outboard of the object (id, length) and checks it against the id; throws
   * OutboardMismatch (or OutboardError for a malformed one) with a one-line reason.
   */
  static fromOutboard(bytes: Uint8Array, id: Uint8Array, length: number, kernel = blake3Kernel()): GroupChecker {
    const outboard = parseOutboard(bytes);
    if (outboard.length !== length)
      throw new OutboardMismatch(`outboard is for ${outboard.length} bytes, the object has ${length}`);
    if (!equal(outboard.id, id)) throw new OutboardMismatch(`outboard is for object ${toHex(outboard.id)}`);
    const checker = new GroupChecker(outboard, id, kernel);
    checker.walk(0, outboard.groups, 0, true, id);
    return checker;
  }

  /** Offset and length of group g. */
  span(g: number): { offset: number; length: number } {
    const offset = g * this.groupBytes;
    return { offset, length: Math.min(this.groupBytes, this.outboard.length - offset) };
  }

  /** True when `data` is exactly group g of the object. */
  check(g: number, data: Uint8Array): boolean {
    const { offset, length } = this.span(g);
    if (data.length !== length) return false;
    // One group: the group is the whole object and its hash is the id.
    if (this.groups === 1) return equal(this.kernel.hash(data), this.id);
    this.kernel.subtreeCv(data, offset / CHUNK_LEN, this.scratch);
    return equal(this.scratch, this.cvs.subarray(32 * g, 32 * g + 32));
  }

  /** Node (first group, n groups) at pre-order entry `index` must have chaining value `expected`. */
  private walk(first: number, n: number, index: number, root: boolean, expected: Uint8Array): void {
    if (n === 1) {
      this.cvs.set(expected, 32 * first);
      return;
    }
    const at = OUTBOARD_HEADER_LEN + 64 * index;
    const pair = this.outboard.bytes.subarray(at, at + 64);
    if (!equal(this.kernel.parentCvView(pair, root), expected)) {
      throw new OutboardMismatch(`outboard parent over groups ${first}..${first + n - 1} does not match the id`);
    }
    const left = leftChunks(n);
    const copy = pair.slice();
    this.walk(first, left, index + 1, false, copy.subarray(0, 32));
    this.walk(first + left, n - left, index + left, false, copy.subarray(32, 64));
  }
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}
