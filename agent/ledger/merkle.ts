// The Merkle tree of a statement's records (RFC 6962's shape over BLAKE3): a leaf is a record's hash (BLAKE3 of
// its payload); a node is BLAKE3(0x01 || left || right); a tree of n > 1 leaves splits at the largest power of two
// below n. A record's audit path (its siblings, leaf to root) proves it is in the statement without the others.
// Leaves hash payloads (JSON, never starting with 0x01) and nodes hash 65 bytes starting with 0x01: one cannot be
// taken for the other. The root of no records is BLAKE3 of nothing.
import { blake3 } from "../kernels/blake3.js";
import { fromHex, toHex } from "../util/hex.js";

function node(left: Uint8Array, right: Uint8Array): Uint8Array {
  const input = new Uint8Array(65);
  input[0] = 1;
  input.set(left, 1);
  input.set(right, 33);
  return blake3(input);
}

function split(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

function rootOf(leaves: Uint8Array[], from: number, to: number): Uint8Array {
  if (to - from === 1) return leaves[from]!;
  const k = split(to - from);
  return node(rootOf(leaves, from, from + k), rootOf(leaves, from + k, to));
}

/** The root over leaf hashes (hex), hex. */
export function merkleRoot(leaves: readonly string[]): string {
  if (leaves.length === 0) return toHex(blake3(new Uint8Array(0)));
  return toHex(
    rootOf(
      leaves.map((l) => fromHex(l, 32)),
      0,
      leaves.length,
    ),
  );
}

/** The audit path of leaf `index`: sibling hashes (hex) from the leaf up. */
export function merklePath(leaves: readonly string[], index: number): string[] {
  if (!(Number.isInteger(index) && index >= 0 && index < leaves.length))
    throw new RangeError(`leaf ${index} is not in a tree of ${leaves.length}`);
  const bytes = leaves.map((l) => fromHex(l, 32));
  const path: string[] = [];
  const walk = (from: number, to: number): void => {
    if (to - from === 1) return;
    const k = split(to - from);
    if (index < from + k) {
      walk(from, from + k);
      path.push(toHex(rootOf(bytes, from + k, to)));
    } else {
      walk(from + k, to);
      path.push(toHex(rootOf(bytes, from, from + k)));
    }
  };
  walk(0, leaves.length);
  return path;
}

/** Whether `path` proves leaf `leaf` at `index` in a tree of `count` leaves with root `root`. */
export function verifyMerklePath(
  leaf: string,
  index: number,
  count: number,
  path: readonly string[],
  root: string,
): boolean {
  if (!(Number.isInteger(index) && Number.isInteger(count) && index >= 0 && index < count)) return false;
  let hash: Uint8Array;
  let siblings: Uint8Array[];
  try {
    hash = fromHex(leaf, 32);
    siblings = path.map((p) => fromHex(p, 32));
  } catch {
    return false;
  }
  // Recompute the same splits from the root down, then fold the siblings in from the leaf up.
  const sides: boolean[] = [];
  let from = 0;
  let to = count;
  while (to - from > 1) {
    const k = split(to - from);
    if (index < from + k) {
      sides.push(true); // the leaf is on the left: the sibling is on the right
      to = from + k;
    } else {
      sides.push(false);
      from = from + k;
    }
  }
  if (sides.length !== siblings.length) return false;
  for (let i = siblings.length - 1, s = 0; i >= 0; i--, s++) {
    const sibling = siblings[s]!;
    hash = sides[i] ? node(hash, sibling) : node(sibling, hash);
  }
  return toHex(hash) === root;
}
