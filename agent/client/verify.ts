// Checking what an untrusted box sends, with the kernels (agent/kernels) and nothing else: first its outboard
// against the object id, then every group of the object against the outboard, each as soon as its bytes are in.
//
// An outboard (wasm/README.md, "Outboard encoding") holds the parents above the object's 16 KiB groups in
// pre-order. Walking that tree from the root, each parent pair must hash (parentCv) to the value one level up, the
// root pair to the id itself; a box that changes any entry would have to find a BLAKE3 preimage. The leaves of the
// walk are the groups' chaining values: a group is then checked by computing its own (subtreeCv) and comparing.
// An object of one group has no parents: the group is hashed as the root and compared with the id. The outboard's
// tail section (proof items for the last group) is not needed to check data and is not checked here.
import { blake3Kernel, type Blake3Kernel } from "../kernels/blake3.js";
import { OUTBOARD_HEADER_LEN, parseOutboard, type Outboard } from "../kernels/outboard.js";
import { leftChunks } from "../kernels/tree.js";
import { CHUNK_LEN } from "../kernels/blake3.js";
import { errorMessage } from "../util/errors.js";
import { toHex } from "../util/hex.js";

export class GroupVerifier {
  /** Bytes per group (16 KiB with the default group log); the last group may be shorter. */
  readonly groupBytes: number;
  readonly groups: number;
  readonly length: number;
  private readonly scratch = new Uint8Array(32);

  private constructor(
    private readonly outboard: Outboard,
    /** The chaining value of every group, 32 bytes each (empty for a one-group object). */
    private readonly groupCvs: Uint8Array,
    private readonly kernel: Blake3Kernel,
  ) {
    this.groupBytes = outboard.groupChunks * CHUNK_LEN;
    this.groups = outboard.groups;
    this.length = outboard.length;
  }

  /**
   * Parses `bytes` as the outboard of object `objectId` (64 hex) and checks its tree against the id. Returns a
   * verifier, or a one-line reason the outboard is not this object's.
   */
  static fromOutboard(
    bytes: Uint8Array,
    objectId: string,
    kernel: Blake3Kernel = blake3Kernel(),
  ): GroupVerifier | string {
    let outboard: Outboard;
    try {
      outboard = parseOutboard(bytes);
    } catch (err) {
      return errorMessage(err);
    }
    if (toHex(outboard.id) !== objectId) return `the outboard is of object ${toHex(outboard.id)}, not ${objectId}`;
    const groupCvs = new Uint8Array(outboard.groups > 1 ? outboard.groups * 32 : 0);
    const pair = (index: number) =>
      outboard.bytes.subarray(OUTBOARD_HEADER_LEN + 64 * index, OUTBOARD_HEADER_LEN + 64 * index + 64);
    const cv = new Uint8Array(32);
    // Iterative pre-order walk: (first group, groups, pre-order index, the value the node must hash to, root?).
    const stack: Array<[number, number, number, Uint8Array, boolean]> = [];
    if (outboard.groups > 1) stack.push([0, outboard.groups, 0, outboard.id, true]);
    while (stack.length > 0) {
      const [first, n, index, expected, root] = stack.pop()!;
      if (n === 1) {
        groupCvs.set(expected, first * 32);
        continue;
      }
      const p = pair(index);
      kernel.parentCv(p, root, cv, 0);
      if (!equal(cv, expected)) return `the outboard's tree does not hash to the id (entry ${index} is wrong)`;
      const left = leftChunks(n);
      stack.push([first + left, n - left, index + left, p.subarray(32, 64), false]);
      stack.push([first, left, index + 1, p.subarray(0, 32), false]);
    }
    return new GroupVerifier(outboard, groupCvs, kernel);
  }

  /** The byte range of group g. */
  groupRange(g: number): { offset: number; length: number } {
    const offset = g * this.groupBytes;
    return { offset, length: Math.min(this.groupBytes, this.length - offset) };
  }

  /** Whether `data` is exactly group g of the object. */
  check(g: number, data: Uint8Array): boolean {
    if (g < 0 || g >= this.groups || data.length !== this.groupRange(g).length) return false;
    if (this.groups === 1) {
      this.kernel.hashInto(data, this.scratch);
      return equal(this.scratch, this.outboard.id);
    }
    this.kernel.subtreeCv(data, g * this.outboard.groupChunks, this.scratch, 0);
    return equal(this.scratch, this.groupCvs.subarray(g * 32, g * 32 + 32));
  }
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
