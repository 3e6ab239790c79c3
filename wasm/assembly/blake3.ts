// BLAKE3 kernel: the streaming hasher (hash, keyed hash, derive key, extendable output) and the tree
// primitives that verified streaming (proofs, outboards) is built from.
//
// Pointer API over static buffers: JavaScript writes input into the INPUT region (or any region it owns) and
// reads results from OUT; nothing is allocated per call. Compiled twice: with SIMD, where four chunks (or four
// parent nodes) are compressed at once, one per 32-bit lane; and without, for cores that reject SIMD.
import { compress, compress4 } from "../build/blake3-compress";
import {
  BLOCK_LEN, CHUNK_END, CHUNK_LEN, CHUNK_START, IV0, IV1, IV2, IV3, IV4, IV5, IV6, IV7, PARENT, ROOT,
} from "./blake3-constants";

/** Deepest possible tree: 2^64 bytes / 1 KiB chunks = 54 levels of chaining values on the stack. */
const MAX_STACK = 54;

// Streaming state, one block so that the wrapper can save and restore it when several JavaScript hashers share
// this instance. Only the header and the first stackLen stack entries are live.
const S_KEY = 0; //          8 words: the key words of this mode
const S_FLAGS = 32; //       u32: mode flags (0, KEYED_HASH, DERIVE_KEY_CONTEXT or DERIVE_KEY_MATERIAL)
const S_STACK_LEN = 36; //   u32: chaining values on the stack
const S_COUNTER = 40; //     u64: index of the chunk being filled (= chunks completed)
const S_BLOCKS = 48; //      u32: blocks of the current chunk already compressed
const S_BUF_LEN = 52; //     u32: bytes in the block buffer
const S_CHUNK_CV = 64; //    8 words: chaining value of the current chunk
const S_BUF = 96; //         64 bytes: the block buffer (the last block of a chunk is held back until its end)
const S_STACK = 160; //      MAX_STACK x 32 bytes: completed subtrees, left to right
const STATE_HEADER = S_STACK;
const STATE = memory.data(S_STACK + MAX_STACK * 32, 16);

/** JavaScript copies input here; 256 KiB = 256 chunks, the largest subtree hashed in one batch. */
const INPUT_LEN = 256 * 1024;
const INPUT = memory.data(INPUT_LEN, 16);
const MAX_BATCH_CHUNKS: i32 = INPUT_LEN / CHUNK_LEN;
/** One chaining value per chunk of a batch, reduced in place level by level. */
const BATCH_CVS = memory.data(MAX_BATCH_CHUNKS * 32, 16);

// A node's final compression inputs (chaining value, block, counter, block length, flags). The root node is
// kept like this because extendable output compresses it again with counters 0, 1, 2, ...
const N_CV = 0;
const N_BLOCK = 32;
const N_COUNTER = 96;
const N_BLOCK_LEN = 104;
const N_FLAGS = 108;
const NODE_LEN = 112;
const ROOT_NODE = memory.data(NODE_LEN, 16);
const LAST_CHUNK_NODE = memory.data(NODE_LEN, 16);

/** Extendable output is written here, up to 16 blocks (1 KiB) per call. */
const OUT_LEN = 1024;
const OUT = memory.data(OUT_LEN, 16);

/** Two chaining values side by side: the 64-byte block of a parent node. */
const PAIR = memory.data(64, 16);
/** Per-recursion-depth pairs for subtrees that are not a power of two chunks. */
const MAX_DEPTH = 64;
const DEPTH_PAIRS = memory.data(MAX_DEPTH * 64, 16);
const PADDED_BLOCK = memory.data(BLOCK_LEN, 16);
const IV_KEY = memory.data<u32>([IV0, IV1, IV2, IV3, IV4, IV5, IV6, IV7], 16);

// ---------------------------------------------------------------------------------------------------------
// Addresses for the wrapper.
export function inputPtr(): usize { return INPUT; }
export function inputLen(): i32 { return INPUT_LEN; }
export function outPtr(): usize { return OUT; }
export function outLen(): i32 { return OUT_LEN; }
export function statePtr(): usize { return STATE; }
export function stateHeaderLen(): i32 { return STATE_HEADER; }
export function stackLen(): i32 { return load<u32>(STATE + S_STACK_LEN); }
export function simd(): bool { return ASC_FEATURE_SIMD; }
export function rootNodePtr(): usize { return ROOT_NODE; }

// ---------------------------------------------------------------------------------------------------------
// Tree building blocks. keyPtr points at 8 key words; flags are the mode flags.

/** Chaining value of one chunk (1..1024 bytes, or 0 for the empty input's only chunk), not the root. */
function chunkCv(keyPtr: usize, flags: u32, ptr: usize, len: i32, counter: u64, outPtr: usize): void {
  chunkNode(keyPtr, flags, ptr, len, counter, LAST_CHUNK_NODE);
  nodeCv(LAST_CHUNK_NODE, outPtr);
}

/** Compresses all blocks of a chunk but the last and records the last one's compression inputs in node. */
function chunkNode(keyPtr: usize, flags: u32, ptr: usize, len: i32, counter: u64, node: usize): void {
  const blocks = len == 0 ? 1 : (len + BLOCK_LEN - 1) >> 6;
  memory.copy(node + N_CV, keyPtr, 32);
  for (let b = 0; b < blocks - 1; b++) {
    compress(node + N_CV, ptr + (<usize>b << 6), counter, BLOCK_LEN, flags | (b == 0 ? CHUNK_START : 0), node + N_CV, false);
  }
  const lastLen = len - ((blocks - 1) << 6);
  memory.copy(node + N_BLOCK, ptr + (<usize>(blocks - 1) << 6), lastLen);
  memory.fill(node + N_BLOCK + lastLen, 0, BLOCK_LEN - lastLen);
  store<u64>(node + N_COUNTER, counter);
  store<u32>(node + N_BLOCK_LEN, lastLen);
  store<u32>(node + N_FLAGS, flags | CHUNK_END | (blocks == 1 ? CHUNK_START : 0));
}

/** Non-root chaining value of a recorded node. */
@inline function nodeCv(node: usize, outPtr: usize): void {
  compress(node + N_CV, node + N_BLOCK, load<u64>(node + N_COUNTER), load<u32>(node + N_BLOCK_LEN), load<u32>(node + N_FLAGS), outPtr, false);
}

/** Records a parent node (its block is the 64 bytes at pairPtr) as the root node. */
function parentRootNode(keyPtr: usize, flags: u32, pairPtr: usize): void {
  memory.copy(ROOT_NODE + N_CV, keyPtr, 32);
  memory.copy(ROOT_NODE + N_BLOCK, pairPtr, 64);
  store<u64>(ROOT_NODE + N_COUNTER, 0);
  store<u32>(ROOT_NODE + N_BLOCK_LEN, BLOCK_LEN);
  store<u32>(ROOT_NODE + N_FLAGS, flags | PARENT);
}

/** Chaining values of n full chunks at ptr, the first with index counter, into cvs (n x 32 bytes). */
function fullChunkCvs(keyPtr: usize, flags: u32, ptr: usize, n: i32, counter: u64, cvs: usize): void {
  let i = 0;
  if (ASC_FEATURE_SIMD) {
    for (; i + 4 <= n; i += 4) {
      compress4(ptr + (<usize>i << 10), CHUNK_LEN, 16, counter + <u64>i, 1, keyPtr, flags, CHUNK_START, CHUNK_END, cvs + (<usize>i << 5));
    }
  }
  for (; i < n; i++) {
    const p = ptr + (<usize>i << 10);
    const cv = cvs + (<usize>i << 5);
    memory.copy(cv, keyPtr, 32);
    for (let b = 0; b < 16; b++) {
      compress(cv, p + (<usize>b << 6), counter + <u64>i, BLOCK_LEN, flags | (b == 0 ? CHUNK_START : b == 15 ? CHUNK_END : 0), cv, false);
    }
  }
}

/** Reduces n (a power of two) chaining values at cvs to their subtree's chaining value at cvs, in place. */
function reduceParents(keyPtr: usize, flags: u32, cvs: usize, n: i32): void {
  // In place is safe: parent i reads bytes [64i, 64i+64) and writes [32i, 32i+32), which only parents before
  // i read; compress4 loads all four lanes before it stores.
  for (; n > 1; n >>= 1) {
    const pairs = n >> 1;
    let i = 0;
    if (ASC_FEATURE_SIMD) {
      for (; i + 4 <= pairs; i += 4) {
        compress4(cvs + (<usize>i << 6), 64, 1, 0, 0, keyPtr, flags | PARENT, 0, 0, cvs + (<usize>i << 5));
      }
    }
    for (; i < pairs; i++) {
      compress(keyPtr, cvs + (<usize>i << 6), 0, BLOCK_LEN, flags | PARENT, cvs + (<usize>i << 5), false);
    }
  }
}

/** Chaining value (not root) of the subtree of n full chunks at ptr; n is a power of two. */
function fullSubtreeCv(keyPtr: usize, flags: u32, ptr: usize, n: i32, counter: u64, outPtr: usize, depth: i32): void {
  if (n <= MAX_BATCH_CHUNKS) {
    fullChunkCvs(keyPtr, flags, ptr, n, counter, BATCH_CVS);
    reduceParents(keyPtr, flags, BATCH_CVS, n);
    memory.copy(outPtr, BATCH_CVS, 32);
    return;
  }
  const half = n >> 1;
  const pair = DEPTH_PAIRS + (<usize>depth << 6);
  fullSubtreeCv(keyPtr, flags, ptr, half, counter, pair, depth + 1);
  fullSubtreeCv(keyPtr, flags, ptr + (<usize>half << 10), half, counter + <u64>half, pair + 32, depth + 1);
  compress(keyPtr, pair, 0, BLOCK_LEN, flags | PARENT, outPtr, false);
}

/** Largest power of two strictly less than n (n >= 2): the left subtree's chunk count in BLAKE3's tree. */
@inline function leftChunks(n: u64): u64 {
  return <u64>1 << (63 - clz<u64>(n - 1));
}

/** Chaining value (not root) of any subtree: len bytes (>= 1) at ptr whose first chunk has index counter. */
function subtreeCv(keyPtr: usize, flags: u32, ptr: usize, len: u64, counter: u64, outPtr: usize, depth: i32): void {
  const n = (len + <u64>CHUNK_LEN - 1) >> 10;
  if (n <= 1) {
    chunkCv(keyPtr, flags, ptr, <i32>len, counter, outPtr);
    return;
  }
  if (len == n << 10 && popcnt<u64>(n) == 1) {
    fullSubtreeCv(keyPtr, flags, ptr, <i32>n, counter, outPtr, depth);
    return;
  }
  const left = leftChunks(n);
  const pair = DEPTH_PAIRS + (<usize>depth << 6);
  fullSubtreeCv(keyPtr, flags, ptr, <i32>left, counter, pair, depth + 1);
  subtreeCv(keyPtr, flags, ptr + (<usize>left << 10), len - (left << 10), counter + left, pair + 32, depth + 1);
  compress(keyPtr, pair, 0, BLOCK_LEN, flags | PARENT, outPtr, false);
}

// ---------------------------------------------------------------------------------------------------------
// The streaming hasher. The key words are written to statePtr() by the wrapper before init().

export function init(flags: u32): void {
  store<u32>(STATE + S_FLAGS, flags);
  store<u32>(STATE + S_STACK_LEN, 0);
  store<u64>(STATE + S_COUNTER, 0);
  resetChunk();
}

function resetChunk(): void {
  store<u32>(STATE + S_BLOCKS, 0);
  store<u32>(STATE + S_BUF_LEN, 0);
  memory.copy(STATE + S_CHUNK_CV, STATE + S_KEY, 32);
}

@inline function chunkLen(): i32 {
  return (load<i32>(STATE + S_BLOCKS) << 6) + load<i32>(STATE + S_BUF_LEN);
}

/** Adds len bytes (no more than the chunk has room for) to the current chunk. */
function chunkAbsorb(ptr: usize, len: i32): void {
  const flags = load<u32>(STATE + S_FLAGS);
  const counter = load<u64>(STATE + S_COUNTER);
  let blocks = load<i32>(STATE + S_BLOCKS);
  let bufLen = load<i32>(STATE + S_BUF_LEN);
  while (len > 0) {
    // A full block is compressed only once more input proves it is not the chunk's last.
    if (bufLen == BLOCK_LEN) {
      compress(STATE + S_CHUNK_CV, STATE + S_BUF, counter, BLOCK_LEN, flags | (blocks == 0 ? CHUNK_START : 0), STATE + S_CHUNK_CV, false);
      blocks++;
      bufLen = 0;
    }
    if (bufLen == 0 && len > BLOCK_LEN) {
      compress(STATE + S_CHUNK_CV, ptr, counter, BLOCK_LEN, flags | (blocks == 0 ? CHUNK_START : 0), STATE + S_CHUNK_CV, false);
      blocks++;
      ptr += BLOCK_LEN;
      len -= BLOCK_LEN;
      continue;
    }
    const take = min(BLOCK_LEN - bufLen, len);
    memory.copy(STATE + S_BUF + bufLen, ptr, take);
    bufLen += take;
    ptr += take;
    len -= take;
  }
  store<i32>(STATE + S_BLOCKS, blocks);
  store<i32>(STATE + S_BUF_LEN, bufLen);
}

/** Records the current chunk's final compression inputs in node (flags without ROOT). */
function chunkStateNode(node: usize): void {
  const bufLen = load<i32>(STATE + S_BUF_LEN);
  memory.copy(node + N_CV, STATE + S_CHUNK_CV, 32);
  memory.copy(node + N_BLOCK, STATE + S_BUF, bufLen);
  memory.fill(node + N_BLOCK + bufLen, 0, BLOCK_LEN - bufLen);
  store<u64>(node + N_COUNTER, load<u64>(STATE + S_COUNTER));
  store<u32>(node + N_BLOCK_LEN, bufLen);
  store<u32>(node + N_FLAGS, load<u32>(STATE + S_FLAGS) | CHUNK_END | (load<u32>(STATE + S_BLOCKS) == 0 ? CHUNK_START : 0));
}

/**
 * Merges the stack down to one entry per 1-bit of chunksBefore (the chunks left of whatever comes next):
 * BLAKE3's lazy merge, which never merges a node that could still turn out to be the root.
 */
function mergeStack(chunksBefore: u64): void {
  const key = STATE + S_KEY;
  const parentFlags = load<u32>(STATE + S_FLAGS) | PARENT;
  let len = load<i32>(STATE + S_STACK_LEN);
  const target = <i32>popcnt<u64>(chunksBefore);
  while (len > target) {
    // The top two entries are adjacent: together they are the parent's block.
    const left = STATE + S_STACK + (<usize>(len - 2) << 5);
    compress(key, left, 0, BLOCK_LEN, parentFlags, left, false);
    len--;
  }
  store<i32>(STATE + S_STACK_LEN, len);
}

/** Pushes the chaining value of a completed subtree whose first chunk is chunksBefore. */
function pushCv(cvPtr: usize, chunksBefore: u64): void {
  mergeStack(chunksBefore);
  const len = load<i32>(STATE + S_STACK_LEN);
  memory.copy(STATE + S_STACK + (<usize>len << 5), cvPtr, 32);
  store<i32>(STATE + S_STACK_LEN, len + 1);
}

/**
 * Absorbs len bytes at ptr. moreFollows promises that another update brings at least one more byte, which
 * lets the last complete chunk be compressed now instead of held back as a possible root.
 */
export function update(ptr: usize, len: i32, moreFollows: bool): void {
  const key = STATE + S_KEY;
  const flags = load<u32>(STATE + S_FLAGS);
  const held = chunkLen();
  if (held > 0) {
    const take = min(CHUNK_LEN - held, len);
    chunkAbsorb(ptr, take);
    ptr += take;
    len -= take;
    if (held + take < CHUNK_LEN || (len == 0 && !moreFollows)) return;
    chunkStateNode(LAST_CHUNK_NODE);
    nodeCv(LAST_CHUNK_NODE, PAIR);
    const counter = load<u64>(STATE + S_COUNTER);
    pushCv(PAIR, counter);
    store<u64>(STATE + S_COUNTER, counter + 1);
    resetChunk();
  }
  let counter = load<u64>(STATE + S_COUNTER);
  while (len > CHUNK_LEN || (moreFollows && len == CHUNK_LEN)) {
    // The largest subtree that fits, is aligned to its own size (so it is a subtree of the final tree) and,
    // unless more input follows, leaves at least one byte for the chunk state.
    const whole = (moreFollows ? len : len - 1) >> 10;
    let size: i32 = 1 << (31 - clz<i32>(min(whole, MAX_BATCH_CHUNKS)));
    while ((counter & <u64>(size - 1)) != 0) size >>= 1;
    fullSubtreeCv(key, flags, ptr, size, counter, PAIR, 0);
    pushCv(PAIR, counter);
    counter += <u64>size;
    ptr += <usize>size << 10;
    len -= size << 10;
  }
  store<u64>(STATE + S_COUNTER, counter);
  if (len > 0) {
    // A new chunk starts, so everything on the stack is left of it: merge now, as finalize() relies on a
    // merged stack whenever the chunk state holds bytes.
    mergeStack(counter);
    chunkAbsorb(ptr, len);
  }
}

/** Finishes the tree into the root node; the state is unchanged, so more updates may follow. */
export function finalize(): void {
  const key = STATE + S_KEY;
  const flags = load<u32>(STATE + S_FLAGS);
  let i = load<i32>(STATE + S_STACK_LEN);
  if (i == 0) {
    chunkStateNode(ROOT_NODE);
    return;
  }
  // PAIR[32..64) carries the right-hand chaining value up the right edge of the tree.
  if (chunkLen() > 0) {
    chunkStateNode(LAST_CHUNK_NODE);
    nodeCv(LAST_CHUNK_NODE, PAIR + 32);
  } else {
    // Only after update(..., moreFollows=true) broke its promise: the last pushed subtree is the rightmost.
    i--;
    memory.copy(PAIR + 32, STATE + S_STACK + (<usize>i << 5), 32);
  }
  while (i > 0) {
    i--;
    memory.copy(PAIR, STATE + S_STACK + (<usize>i << 5), 32);
    if (i == 0) break;
    compress(key, PAIR, 0, BLOCK_LEN, flags | PARENT, PAIR + 32, false);
  }
  parentRootNode(key, flags, PAIR);
}

/** Writes nBlocks (1..16) 64-byte blocks of output, starting at output block `block`, to OUT. */
export function output(nBlocks: i32, block: u64): void {
  const flags = load<u32>(ROOT_NODE + N_FLAGS) | ROOT;
  const blockLen = load<u32>(ROOT_NODE + N_BLOCK_LEN);
  for (let t = 0; t < nBlocks; t++) {
    compress(ROOT_NODE + N_CV, ROOT_NODE + N_BLOCK, block + <u64>t, blockLen, flags, OUT + (<usize>t << 6), true);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Primitives for verified streaming over the plain-hash tree (IV key, no mode flags). Input and output
// pointers are the caller's (regions it placed in INPUT or OUT).

/** 32-byte chaining value of one chunk; with root, the chunk is the whole object and this is its hash. */
export function chunkCvAt(ptr: usize, len: i32, counter: u64, root: bool, outPtr: usize): void {
  chunkNode(IV_KEY, 0, ptr, len, counter, LAST_CHUNK_NODE);
  if (root) store<u32>(LAST_CHUNK_NODE + N_FLAGS, load<u32>(LAST_CHUNK_NODE + N_FLAGS) | ROOT);
  nodeCv(LAST_CHUNK_NODE, outPtr);
}

/** 32-byte chaining value of the parent whose block (left and right chaining values) is at pairPtr. */
export function parentCvAt(pairPtr: usize, root: bool, outPtr: usize): void {
  compress(IV_KEY, pairPtr, 0, BLOCK_LEN, PARENT | (root ? ROOT : 0), outPtr, false);
}

/** Non-root chaining value of the subtree of len bytes (>= 1) at ptr whose first chunk has index counter. */
export function subtreeCvAt(ptr: usize, len: i32, counter: u64, outPtr: usize): void {
  subtreeCv(IV_KEY, 0, ptr, <u64>len, counter, outPtr, 0);
}
