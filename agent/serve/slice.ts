// Verified-streaming slices: the proof of a chunk range (wasm/README.md, "Proof encoding") produced piece by piece,
// so a slice of a 64 MiB object costs one batch of groups in memory, never the whole proof. The same walk as
// agent/kernels/outboard.ts makeProof (parents from the outboard, the touched groups' items from their bytes, the
// outboard's tail section for an untouched last group), cut into a plan the server writes as it reads.
import { type Blake3Kernel, blake3Kernel, CHUNK_LEN } from "../kernels/blake3.js";
import { OUTBOARD_HEADER_LEN, type Outboard } from "../kernels/outboard.js";
import { emitFromData, ProofWriter } from "../kernels/proof.js";
import { chunkCount, leftChunks, proofTarget, type Target } from "../kernels/tree.js";

/** A piece of the proof: bytes copied from the outboard, or the items of one group computed from its bytes. */
export type SlicePart =
  | { kind: "copy"; bytes: Uint8Array }
  | { kind: "group"; first: number; n: number; offset: number; length: number; itemsLength: number; root: boolean };

export interface SlicePlan {
  /** The chunk range the proof covers: every chunk the byte range touches. */
  chunkStart: number;
  chunkCount: number;
  /** The proof's exact size (the response's Content-Length). */
  proofLength: number;
  target: Target;
  parts: SlicePart[];
}

/**
 * The plan of a proof of every chunk that bytes [start, end) touch, or a one-line reason the range is wrong
 * (end exclusive; 0 <= start < end <= length, or start = end = 0 for an empty object).
 */
export function planSlice(outboard: Outboard, start: number, end: number): SlicePlan | string {
  const { length, groupChunks, groups, bytes } = outboard;
  if (!(start >= 0 && end <= length && (start < end || (length === 0 && end === 0)))) {
    return `slice ${start}-${end} is not within the object's ${length} bytes (start < end <= length)`;
  }
  const chunkStart = Math.floor(start / CHUNK_LEN);
  const count = Math.max(1, Math.ceil(end / CHUNK_LEN) - chunkStart);
  const target = proofTarget(length, chunkStart, count);
  const parts: SlicePart[] = [];
  const copy = (from: number, to: number) => {
    const last = parts[parts.length - 1];
    // Neighbouring outboard pieces are contiguous in pre-order only by chance; merging views keeps writes few.
    if (last?.kind === "copy" && last.bytes.byteOffset + last.bytes.length === bytes.byteOffset + from) {
      last.bytes = bytes.subarray(last.bytes.byteOffset - bytes.byteOffset, to);
    } else parts.push({ kind: "copy", bytes: bytes.subarray(from, to) });
  };
  const walk = (first: number, n: number, index: number): void => {
    if (n > groupChunks) {
      copy(OUTBOARD_HEADER_LEN + 64 * index, OUTBOARD_HEADER_LEN + 64 * index + 64);
      const left = leftChunks(n);
      if (target.overlaps(first, left)) walk(first, left, index + 1);
      if (target.overlaps(first + left, n - left)) walk(first + left, n - left, index + left / groupChunks);
      return;
    }
    if (first < target.end && target.start < first + n) {
      const offset = first * CHUNK_LEN;
      parts.push({
        kind: "group",
        first,
        n,
        offset,
        length: Math.min(n * CHUNK_LEN, length - offset),
        itemsLength: groupLayout(target, first, n, Math.min(n * CHUNK_LEN, length - offset)).itemsLength,
        root: groups === 1,
      });
    } else copy(outboard.tailOffset, bytes.length);
  };
  walk(0, chunkCount(length), 0);
  let total = 0;
  for (const part of parts) total += part.kind === "copy" ? part.bytes.length : part.itemsLength;
  return { chunkStart, chunkCount: count, proofLength: total, target, parts };
}

/** Writes one group's proof items, computed from its bytes, into out (exactly part.itemsLength bytes). */
export function groupItems(
  part: Extract<SlicePart, { kind: "group" }>,
  target: Target,
  data: Uint8Array,
  out: Uint8Array,
  kernel: Blake3Kernel = blake3Kernel(),
): void {
  const writer = new ProofWriter(out);
  emitFromData(kernel, target, data, part.first, part.n, part.root, writer, new Uint8Array(32));
  if (writer.offset !== part.itemsLength) throw new Error("slice group items length mismatch (internal error)");
}

/**
 * The parent nodes inside one group (its subtree of n chunks), in pre-order, 64 bytes each (n - 1 of them):
 * everything a proof needs from the group besides chunk bytes. Computed once by hashing the group; a slice that
 * has it only copies (groupItemsFromTree), which is what keeps verified streaming near plain serving.
 */
export function groupTree(
  first: number,
  n: number,
  data: Uint8Array,
  kernel: Blake3Kernel = blake3Kernel(),
): Uint8Array {
  const out = new Uint8Array(64 * (n - 1));
  let at = 0;
  const walk = (f: number, m: number, d: Uint8Array, cvOut: Uint8Array, cvOffset: number): void => {
    if (m === 1) return kernel.chunkCv(d, f, false, cvOut, cvOffset);
    const left = leftChunks(m);
    const pair = out.subarray(at, at + 64);
    at += 64;
    walk(f, left, d.subarray(0, left * CHUNK_LEN), pair, 0);
    walk(f + left, m - left, d.subarray(left * CHUNK_LEN), pair, 32);
    // The group's own chaining value is not part of any item: a scratch output (root or not makes no difference).
    kernel.parentCv(pair, false, cvOut, cvOffset);
  };
  walk(first, n, data, new Uint8Array(32), 0);
  return out;
}

/** Where one group's proof items come from, in output order: runs of its tree (groupTree) and of its bytes. */
export interface GroupLayout {
  /** Triples: source (TREE_RUN or DATA_RUN), from, to (byte offsets within that source). */
  runs: Int32Array;
  itemsLength: number;
}
const TREE_RUN = 0;
const DATA_RUN = 1;
/**
 * Layouts by the shape of a group's coverage. A slice's inner groups are all covered whole, so nearly every group
 * of every slice finds the same entry; only a slice's two edge groups may need a walk of their own.
 */
const layouts = new Map<string, GroupLayout>();
const MAX_LAYOUTS = 1024;

/**
 * The layout of the proof items of the group of n chunks at `first` (dataLength bytes) for `target`: the same walk
 * as groupItems, recorded as copy runs instead of done, and kept. Pieces that lie next to each other in their
 * source (consecutive parents in pre-order, sibling chunks) are one run: half the copies of a piecewise walk.
 */
export function groupLayout(target: Target, first: number, n: number, dataLength: number): GroupLayout {
  const lo = Math.max(target.start, first) - first;
  const hi = Math.min(target.end, first + n) - first;
  const tail = target.tail >= first && target.tail < first + n ? target.tail - first : -1;
  const key = lo < hi ? `${n}:${dataLength}:${lo}:${hi}:${tail}` : `${n}:${dataLength}:-:${tail}`;
  const known = layouts.get(key);
  if (known) return known;
  const runs: number[] = [];
  const take = (source: number, from: number, to: number): void => {
    const last = runs.length - 3;
    if (last >= 0 && runs[last] === source && runs[last + 2] === from) runs[last + 2] = to;
    else runs.push(source, from, to);
  };
  const walk = (f: number, m: number, index: number): void => {
    if (m === 1) {
      const start = (f - first) * CHUNK_LEN;
      return take(DATA_RUN, start, Math.min(start + CHUNK_LEN, dataLength));
    }
    take(TREE_RUN, 64 * index, 64 * index + 64);
    const left = leftChunks(m);
    if (target.overlaps(f, left)) walk(f, left, index + 1);
    // Pre-order: the left subtree of `left` chunks holds left - 1 parents.
    if (target.overlaps(f + left, m - left)) walk(f + left, m - left, index + left);
  };
  walk(first, n, 0);
  let length = 0;
  for (let k = 0; k < runs.length; k += 3) length += runs[k + 2]! - runs[k + 1]!;
  const layout = { runs: Int32Array.from(runs), itemsLength: length };
  if (layouts.size >= MAX_LAYOUTS) layouts.clear();
  layouts.set(key, layout);
  return layout;
}

/**
 * groupItems without hashing: the group's parents copied from its groupTree, the chunks from its bytes, written
 * into out at outOffset (so a batch of groups fills one answer buffer), run by run as groupLayout says.
 */
export function groupItemsFromTree(
  part: Extract<SlicePart, { kind: "group" }>,
  target: Target,
  data: Uint8Array,
  tree: Uint8Array,
  out: Uint8Array,
  outOffset = 0,
): void {
  const { runs, itemsLength } = groupLayout(target, part.first, part.n, data.length);
  if (itemsLength !== part.itemsLength) throw new Error("slice group items length mismatch (internal error)");
  let at = outOffset;
  for (let k = 0; k < runs.length; k += 3) {
    const from = runs[k + 1]!;
    const to = runs[k + 2]!;
    out.set((runs[k] === TREE_RUN ? tree : data).subarray(from, to), at);
    at += to - from;
  }
}
