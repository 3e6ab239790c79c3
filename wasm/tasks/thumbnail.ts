// thumbnail: a compute task (agent/compute/README.md, "Examples") that scales raw pixels down with an exact
// area-weighted box filter, in integers only, so every box computes the same bytes.
//
// Input (little-endian): width W (u32), height H (u32), channels C (u32, 1..4), target width TW (u16, 1..W),
// target height TH (u16, 1..H), then W x H pixels, row-major, C bytes each (16 + W*H*C bytes in all).
// Output: TW (u32), TH (u32), C (u32), then TW x TH pixels, row-major, C bytes each.
//
// Source pixel x covers [x*TW, (x+1)*TW) and target pixel o covers [o*W, (o+1)*W) on a common axis (the same for
// rows with TH and H), so every weight is the integer length of an overlap and a target pixel's weights sum to
// W*H: its value is the weighted sum divided by W*H, rounded half up. As TW <= W, a source pixel overlaps at most
// two target pixels across and two down. The image streams through one source row at a time; memory holds a
// few rows of the target (at most about 6 MiB at W = 65535, C = 4), never the image.
//
// Abort codes: 1 the input is shorter than its header; 2 a size or channel count out of range; 3 the input's
// length is not 16 + W*H*C.

@external("sharenode", "input_length") declare function input_length(): i32;
@external("sharenode", "read_input") declare function read_input(ptr: usize, offset: i32, len: i32): i32;
@external("sharenode", "write_output") declare function write_output(ptr: usize, len: i32): void;
@external("sharenode", "abort") declare function task_abort(code: i32): void;

const HEADER_LEN = 16;
const HEADER = memory.data(HEADER_LEN, 16);
const OUT_HEADER = memory.data(12, 16);

export function run(): void {
  const total = input_length();
  if (total < HEADER_LEN) {
    task_abort(1);
    return;
  }
  read_input(HEADER, 0, HEADER_LEN);
  const w = load<u32>(HEADER, 0);
  const h = load<u32>(HEADER, 4);
  const c = load<u32>(HEADER, 8);
  const tw = <u32>load<u16>(HEADER, 12);
  const th = <u32>load<u16>(HEADER, 14);
  if (w < 1 || w > 65535 || h < 1 || h > 65535 || c < 1 || c > 4 || tw < 1 || tw > w || th < 1 || th > h) {
    task_abort(2);
    return;
  }
  // read_input takes i32 offsets: the whole input must stay below 2 GiB.
  const pixels = <u64>w * <u64>h * <u64>c;
  if (pixels + HEADER_LEN > <u64>i32.MAX_VALUE || <u64>total != pixels + HEADER_LEN) {
    task_abort(3);
    return;
  }
  const rowLen = w * c;
  const outLen = tw * c;
  const row = heap.alloc(rowLen);
  // Per source column: the first target column it overlaps and its weight there (the rest, TW - that, goes to
  // the next column). The same for every row, so computed once; products stay below 2^32 (W, TW < 2^16).
  const col0 = heap.alloc(<usize>w << 2);
  const colW = heap.alloc(<usize>w << 2);
  {
    let o: u32 = 0;
    let bound: u32 = w; // (o + 1) * W: where target column o ends
    for (let x: u32 = 0; x < w; x++) {
      const start = x * tw;
      const end = start + tw;
      store<u32>(col0 + (<usize>x << 2), o);
      if (end <= bound) {
        store<u32>(colW + (<usize>x << 2), tw);
        if (end == bound) {
          o++;
          bound += w;
        }
      } else {
        store<u32>(colW + (<usize>x << 2), bound - start);
        o++;
        bound += w;
      }
    }
  }
  // One source row summed across (at most W*255 per value), and two target rows summed down (up to W*H*255).
  const hsum = heap.alloc(<usize>outLen << 2);
  let acc = heap.alloc(<usize>outLen << 3);
  let accNext = heap.alloc(<usize>outLen << 3);
  const outRow = heap.alloc(outLen);
  memory.fill(acc, 0, <usize>outLen << 3);
  memory.fill(accNext, 0, <usize>outLen << 3);
  const area = <u64>w * <u64>h;
  const half = area >> 1;

  store<u32>(OUT_HEADER, tw, 0);
  store<u32>(OUT_HEADER, th, 4);
  store<u32>(OUT_HEADER, c, 8);
  write_output(OUT_HEADER, 12);

  let bound: u32 = h; // (r + 1) * H: where the target row r being summed ends
  for (let y: u32 = 0; y < h; y++) {
    read_input(row, HEADER_LEN + <i32>(y * rowLen), <i32>rowLen);
    memory.fill(hsum, 0, <usize>outLen << 2);
    for (let x: u32 = 0; x < w; x++) {
      const o = load<u32>(col0 + (<usize>x << 2));
      const w0 = load<u32>(colW + (<usize>x << 2));
      const w1 = tw - w0;
      const src = row + <usize>(x * c);
      const dst = hsum + (<usize>(o * c) << 2);
      for (let k: u32 = 0; k < c; k++) {
        const v = <u32>load<u8>(src + k);
        const p = dst + (<usize>k << 2);
        store<u32>(p, load<u32>(p) + w0 * v);
        if (w1 != 0) store<u32>(p + (<usize>c << 2), load<u32>(p + (<usize>c << 2)) + w1 * v);
      }
    }
    const start = y * th;
    const end = start + th;
    const wy0 = end <= bound ? th : bound - start;
    const wy1 = th - wy0;
    for (let i: u32 = 0; i < outLen; i++) {
      const s = <u64>load<u32>(hsum + (<usize>i << 2));
      const a = acc + (<usize>i << 3);
      store<u64>(a, load<u64>(a) + <u64>wy0 * s);
      if (wy1 != 0) {
        const b = accNext + (<usize>i << 3);
        store<u64>(b, load<u64>(b) + <u64>wy1 * s);
      }
    }
    if (end >= bound) {
      // Target row r is complete: divide, round, send, and move on to the next.
      for (let i: u32 = 0; i < outLen; i++) {
        store<u8>(outRow + i, <u8>((load<u64>(acc + (<usize>i << 3)) + half) / area));
      }
      write_output(outRow, <i32>outLen);
      const done = acc;
      acc = accNext;
      accNext = done;
      memory.fill(accNext, 0, <usize>outLen << 3);
      bound += h;
    }
  }
}
