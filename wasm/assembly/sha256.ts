// SHA-256 (FIPS 180-4), streaming, over static buffers in linear memory.
//
// JS writes input into the buffer at inputPtr() and calls update(len); final() writes the digest at outputPtr().
// Nothing is allocated (runtime stub, no memory.grow), so views the wrapper makes of this memory stay valid.
// All streaming state lives in the STATE_SIZE bytes at statePtr(): copying those bytes out and back in is all
// it takes to interleave many hashers over one instance.
//
// Speed notes (measured on x64, Node 20 TurboFan, 4 MiB input): the 64 rounds are written out with the eight
// working variables renamed instead of shifted, and the message schedule is a rolling window of 16 locals, so a
// round is register arithmetic; this runs level with hash-wasm (clang). TurboFan still spills some working
// variables to the stack, so the rounds wait on store-to-load forwarding; every variant that moved work to memory
// or lengthened the rounds lost: W[64] precomputed in memory -20 % (TurboFan hoists the loads and spills them),
// a 16-word ring in memory -7 %, the schedule computed 4-12 rounds ahead through memory -3 to -5 %, nested sigma
// rotations rotr(x ^ rotr(x ^ rotr(x))) -16 % (longer chain), extra adds to shorten the e chain -5 %, a loop
// over 16 unrolled rounds with K in memory -3 %. Computing the schedule in v128 (4 words per vector, freeing the
// general registers) gained 5-9 %, but this target must run without SIMD.

// Layout of the state block: H0..H7 as native (little-endian) words, the total byte count as u64, then the
// pending partial block (fewer than 64 bytes, its length is count & 63).
const H_OFFSET: usize = 0;
const COUNT_OFFSET: usize = 32;
const PENDING_OFFSET: usize = 40;
const STATE_SIZE: i32 = 104;
// 64 KiB keeps a piece in L1/L2 between the wrapper's copy and the compression, and makes the JS-to-WASM call
// cost per byte negligible.
const INPUT_SIZE: i32 = 65536;

const INPUT: usize = memory.data(INPUT_SIZE, 16);
const OUTPUT: usize = memory.data(32, 16);
const STATE: usize = memory.data(STATE_SIZE, 16);
const PENDING: usize = STATE + PENDING_OFFSET;

@inline function S0(x: u32): u32 { return rotr<u32>(x, 2) ^ rotr<u32>(x, 13) ^ rotr<u32>(x, 22); }
@inline function S1(x: u32): u32 { return rotr<u32>(x, 6) ^ rotr<u32>(x, 11) ^ rotr<u32>(x, 25); }
@inline function s0(x: u32): u32 { return rotr<u32>(x, 7) ^ rotr<u32>(x, 18) ^ (x >>> 3); }
@inline function s1(x: u32): u32 { return rotr<u32>(x, 17) ^ rotr<u32>(x, 19) ^ (x >>> 10); }
@inline function ch(e: u32, f: u32, g: u32): u32 { return g ^ (e & (f ^ g)); }
// Maj(a, b, c) = ((a ^ b) & (b ^ c)) ^ b; this round's a ^ b is the next round's b ^ c, so each round passes it
// on in `bc` and Maj costs 3 operations instead of 4.
@inline function maj(a: u32, b: u32, bc: u32): u32 { return ((a ^ b) & bc) ^ b; }

/** Compresses `n` consecutive 64-byte blocks at `p` into the state. */
function compress(p: usize, n: usize): void {
  let a = load<u32>(STATE, H_OFFSET + 0), b = load<u32>(STATE, H_OFFSET + 4);
  let c = load<u32>(STATE, H_OFFSET + 8), d = load<u32>(STATE, H_OFFSET + 12);
  let e = load<u32>(STATE, H_OFFSET + 16), f = load<u32>(STATE, H_OFFSET + 20);
  let g = load<u32>(STATE, H_OFFSET + 24), h = load<u32>(STATE, H_OFFSET + 28);
  const end = p + (n << 6);
  while (p < end) {
    // Message words are big-endian.
    let w0 = bswap<u32>(load<u32>(p,  0));
    let w1 = bswap<u32>(load<u32>(p,  4));
    let w2 = bswap<u32>(load<u32>(p,  8));
    let w3 = bswap<u32>(load<u32>(p, 12));
    let w4 = bswap<u32>(load<u32>(p, 16));
    let w5 = bswap<u32>(load<u32>(p, 20));
    let w6 = bswap<u32>(load<u32>(p, 24));
    let w7 = bswap<u32>(load<u32>(p, 28));
    let w8 = bswap<u32>(load<u32>(p, 32));
    let w9 = bswap<u32>(load<u32>(p, 36));
    let w10 = bswap<u32>(load<u32>(p, 40));
    let w11 = bswap<u32>(load<u32>(p, 44));
    let w12 = bswap<u32>(load<u32>(p, 48));
    let w13 = bswap<u32>(load<u32>(p, 52));
    let w14 = bswap<u32>(load<u32>(p, 56));
    let w15 = bswap<u32>(load<u32>(p, 60));
    let bc = b ^ c;
    h += S1(e) + ch(e, f, g) + 0x428a2f98 + w0; d += h; h += S0(a) + maj(a, b, bc); bc = a ^ b;
    g += S1(d) + ch(d, e, f) + 0x71374491 + w1; c += g; g += S0(h) + maj(h, a, bc); bc = h ^ a;
    f += S1(c) + ch(c, d, e) + 0xb5c0fbcf + w2; b += f; f += S0(g) + maj(g, h, bc); bc = g ^ h;
    e += S1(b) + ch(b, c, d) + 0xe9b5dba5 + w3; a += e; e += S0(f) + maj(f, g, bc); bc = f ^ g;
    d += S1(a) + ch(a, b, c) + 0x3956c25b + w4; h += d; d += S0(e) + maj(e, f, bc); bc = e ^ f;
    c += S1(h) + ch(h, a, b) + 0x59f111f1 + w5; g += c; c += S0(d) + maj(d, e, bc); bc = d ^ e;
    b += S1(g) + ch(g, h, a) + 0x923f82a4 + w6; f += b; b += S0(c) + maj(c, d, bc); bc = c ^ d;
    a += S1(f) + ch(f, g, h) + 0xab1c5ed5 + w7; e += a; a += S0(b) + maj(b, c, bc); bc = b ^ c;
    h += S1(e) + ch(e, f, g) + 0xd807aa98 + w8; d += h; h += S0(a) + maj(a, b, bc); bc = a ^ b;
    g += S1(d) + ch(d, e, f) + 0x12835b01 + w9; c += g; g += S0(h) + maj(h, a, bc); bc = h ^ a;
    f += S1(c) + ch(c, d, e) + 0x243185be + w10; b += f; f += S0(g) + maj(g, h, bc); bc = g ^ h;
    e += S1(b) + ch(b, c, d) + 0x550c7dc3 + w11; a += e; e += S0(f) + maj(f, g, bc); bc = f ^ g;
    d += S1(a) + ch(a, b, c) + 0x72be5d74 + w12; h += d; d += S0(e) + maj(e, f, bc); bc = e ^ f;
    c += S1(h) + ch(h, a, b) + 0x80deb1fe + w13; g += c; c += S0(d) + maj(d, e, bc); bc = d ^ e;
    b += S1(g) + ch(g, h, a) + 0x9bdc06a7 + w14; f += b; b += S0(c) + maj(c, d, bc); bc = c ^ d;
    a += S1(f) + ch(f, g, h) + 0xc19bf174 + w15; e += a; a += S0(b) + maj(b, c, bc); bc = b ^ c;
    // Rounds 16-63 extend the schedule in place: w[i & 15] becomes W[i].
    w0 += s1(w14) + w9 + s0(w1);
    h += S1(e) + ch(e, f, g) + 0xe49b69c1 + w0; d += h; h += S0(a) + maj(a, b, bc); bc = a ^ b;
    w1 += s1(w15) + w10 + s0(w2);
    g += S1(d) + ch(d, e, f) + 0xefbe4786 + w1; c += g; g += S0(h) + maj(h, a, bc); bc = h ^ a;
    w2 += s1(w0) + w11 + s0(w3);
    f += S1(c) + ch(c, d, e) + 0x0fc19dc6 + w2; b += f; f += S0(g) + maj(g, h, bc); bc = g ^ h;
    w3 += s1(w1) + w12 + s0(w4);
    e += S1(b) + ch(b, c, d) + 0x240ca1cc + w3; a += e; e += S0(f) + maj(f, g, bc); bc = f ^ g;
    w4 += s1(w2) + w13 + s0(w5);
    d += S1(a) + ch(a, b, c) + 0x2de92c6f + w4; h += d; d += S0(e) + maj(e, f, bc); bc = e ^ f;
    w5 += s1(w3) + w14 + s0(w6);
    c += S1(h) + ch(h, a, b) + 0x4a7484aa + w5; g += c; c += S0(d) + maj(d, e, bc); bc = d ^ e;
    w6 += s1(w4) + w15 + s0(w7);
    b += S1(g) + ch(g, h, a) + 0x5cb0a9dc + w6; f += b; b += S0(c) + maj(c, d, bc); bc = c ^ d;
    w7 += s1(w5) + w0 + s0(w8);
    a += S1(f) + ch(f, g, h) + 0x76f988da + w7; e += a; a += S0(b) + maj(b, c, bc); bc = b ^ c;
    w8 += s1(w6) + w1 + s0(w9);
    h += S1(e) + ch(e, f, g) + 0x983e5152 + w8; d += h; h += S0(a) + maj(a, b, bc); bc = a ^ b;
    w9 += s1(w7) + w2 + s0(w10);
    g += S1(d) + ch(d, e, f) + 0xa831c66d + w9; c += g; g += S0(h) + maj(h, a, bc); bc = h ^ a;
    w10 += s1(w8) + w3 + s0(w11);
    f += S1(c) + ch(c, d, e) + 0xb00327c8 + w10; b += f; f += S0(g) + maj(g, h, bc); bc = g ^ h;
    w11 += s1(w9) + w4 + s0(w12);
    e += S1(b) + ch(b, c, d) + 0xbf597fc7 + w11; a += e; e += S0(f) + maj(f, g, bc); bc = f ^ g;
    w12 += s1(w10) + w5 + s0(w13);
    d += S1(a) + ch(a, b, c) + 0xc6e00bf3 + w12; h += d; d += S0(e) + maj(e, f, bc); bc = e ^ f;
    w13 += s1(w11) + w6 + s0(w14);
    c += S1(h) + ch(h, a, b) + 0xd5a79147 + w13; g += c; c += S0(d) + maj(d, e, bc); bc = d ^ e;
    w14 += s1(w12) + w7 + s0(w15);
    b += S1(g) + ch(g, h, a) + 0x06ca6351 + w14; f += b; b += S0(c) + maj(c, d, bc); bc = c ^ d;
    w15 += s1(w13) + w8 + s0(w0);
    a += S1(f) + ch(f, g, h) + 0x14292967 + w15; e += a; a += S0(b) + maj(b, c, bc); bc = b ^ c;
    w0 += s1(w14) + w9 + s0(w1);
    h += S1(e) + ch(e, f, g) + 0x27b70a85 + w0; d += h; h += S0(a) + maj(a, b, bc); bc = a ^ b;
    w1 += s1(w15) + w10 + s0(w2);
    g += S1(d) + ch(d, e, f) + 0x2e1b2138 + w1; c += g; g += S0(h) + maj(h, a, bc); bc = h ^ a;
    w2 += s1(w0) + w11 + s0(w3);
    f += S1(c) + ch(c, d, e) + 0x4d2c6dfc + w2; b += f; f += S0(g) + maj(g, h, bc); bc = g ^ h;
    w3 += s1(w1) + w12 + s0(w4);
    e += S1(b) + ch(b, c, d) + 0x53380d13 + w3; a += e; e += S0(f) + maj(f, g, bc); bc = f ^ g;
    w4 += s1(w2) + w13 + s0(w5);
    d += S1(a) + ch(a, b, c) + 0x650a7354 + w4; h += d; d += S0(e) + maj(e, f, bc); bc = e ^ f;
    w5 += s1(w3) + w14 + s0(w6);
    c += S1(h) + ch(h, a, b) + 0x766a0abb + w5; g += c; c += S0(d) + maj(d, e, bc); bc = d ^ e;
    w6 += s1(w4) + w15 + s0(w7);
    b += S1(g) + ch(g, h, a) + 0x81c2c92e + w6; f += b; b += S0(c) + maj(c, d, bc); bc = c ^ d;
    w7 += s1(w5) + w0 + s0(w8);
    a += S1(f) + ch(f, g, h) + 0x92722c85 + w7; e += a; a += S0(b) + maj(b, c, bc); bc = b ^ c;
    w8 += s1(w6) + w1 + s0(w9);
    h += S1(e) + ch(e, f, g) + 0xa2bfe8a1 + w8; d += h; h += S0(a) + maj(a, b, bc); bc = a ^ b;
    w9 += s1(w7) + w2 + s0(w10);
    g += S1(d) + ch(d, e, f) + 0xa81a664b + w9; c += g; g += S0(h) + maj(h, a, bc); bc = h ^ a;
    w10 += s1(w8) + w3 + s0(w11);
    f += S1(c) + ch(c, d, e) + 0xc24b8b70 + w10; b += f; f += S0(g) + maj(g, h, bc); bc = g ^ h;
    w11 += s1(w9) + w4 + s0(w12);
    e += S1(b) + ch(b, c, d) + 0xc76c51a3 + w11; a += e; e += S0(f) + maj(f, g, bc); bc = f ^ g;
    w12 += s1(w10) + w5 + s0(w13);
    d += S1(a) + ch(a, b, c) + 0xd192e819 + w12; h += d; d += S0(e) + maj(e, f, bc); bc = e ^ f;
    w13 += s1(w11) + w6 + s0(w14);
    c += S1(h) + ch(h, a, b) + 0xd6990624 + w13; g += c; c += S0(d) + maj(d, e, bc); bc = d ^ e;
    w14 += s1(w12) + w7 + s0(w15);
    b += S1(g) + ch(g, h, a) + 0xf40e3585 + w14; f += b; b += S0(c) + maj(c, d, bc); bc = c ^ d;
    w15 += s1(w13) + w8 + s0(w0);
    a += S1(f) + ch(f, g, h) + 0x106aa070 + w15; e += a; a += S0(b) + maj(b, c, bc); bc = b ^ c;
    w0 += s1(w14) + w9 + s0(w1);
    h += S1(e) + ch(e, f, g) + 0x19a4c116 + w0; d += h; h += S0(a) + maj(a, b, bc); bc = a ^ b;
    w1 += s1(w15) + w10 + s0(w2);
    g += S1(d) + ch(d, e, f) + 0x1e376c08 + w1; c += g; g += S0(h) + maj(h, a, bc); bc = h ^ a;
    w2 += s1(w0) + w11 + s0(w3);
    f += S1(c) + ch(c, d, e) + 0x2748774c + w2; b += f; f += S0(g) + maj(g, h, bc); bc = g ^ h;
    w3 += s1(w1) + w12 + s0(w4);
    e += S1(b) + ch(b, c, d) + 0x34b0bcb5 + w3; a += e; e += S0(f) + maj(f, g, bc); bc = f ^ g;
    w4 += s1(w2) + w13 + s0(w5);
    d += S1(a) + ch(a, b, c) + 0x391c0cb3 + w4; h += d; d += S0(e) + maj(e, f, bc); bc = e ^ f;
    w5 += s1(w3) + w14 + s0(w6);
    c += S1(h) + ch(h, a, b) + 0x4ed8aa4a + w5; g += c; c += S0(d) + maj(d, e, bc); bc = d ^ e;
    w6 += s1(w4) + w15 + s0(w7);
    b += S1(g) + ch(g, h, a) + 0x5b9cca4f + w6; f += b; b += S0(c) + maj(c, d, bc); bc = c ^ d;
    w7 += s1(w5) + w0 + s0(w8);
    a += S1(f) + ch(f, g, h) + 0x682e6ff3 + w7; e += a; a += S0(b) + maj(b, c, bc); bc = b ^ c;
    w8 += s1(w6) + w1 + s0(w9);
    h += S1(e) + ch(e, f, g) + 0x748f82ee + w8; d += h; h += S0(a) + maj(a, b, bc); bc = a ^ b;
    w9 += s1(w7) + w2 + s0(w10);
    g += S1(d) + ch(d, e, f) + 0x78a5636f + w9; c += g; g += S0(h) + maj(h, a, bc); bc = h ^ a;
    w10 += s1(w8) + w3 + s0(w11);
    f += S1(c) + ch(c, d, e) + 0x84c87814 + w10; b += f; f += S0(g) + maj(g, h, bc); bc = g ^ h;
    w11 += s1(w9) + w4 + s0(w12);
    e += S1(b) + ch(b, c, d) + 0x8cc70208 + w11; a += e; e += S0(f) + maj(f, g, bc); bc = f ^ g;
    w12 += s1(w10) + w5 + s0(w13);
    d += S1(a) + ch(a, b, c) + 0x90befffa + w12; h += d; d += S0(e) + maj(e, f, bc); bc = e ^ f;
    w13 += s1(w11) + w6 + s0(w14);
    c += S1(h) + ch(h, a, b) + 0xa4506ceb + w13; g += c; c += S0(d) + maj(d, e, bc); bc = d ^ e;
    w14 += s1(w12) + w7 + s0(w15);
    b += S1(g) + ch(g, h, a) + 0xbef9a3f7 + w14; f += b; b += S0(c) + maj(c, d, bc); bc = c ^ d;
    w15 += s1(w13) + w8 + s0(w0);
    a += S1(f) + ch(f, g, h) + 0xc67178f2 + w15; e += a; a += S0(b) + maj(b, c, bc); bc = b ^ c;
    a += load<u32>(STATE, H_OFFSET + 0); b += load<u32>(STATE, H_OFFSET + 4);
    c += load<u32>(STATE, H_OFFSET + 8); d += load<u32>(STATE, H_OFFSET + 12);
    e += load<u32>(STATE, H_OFFSET + 16); f += load<u32>(STATE, H_OFFSET + 20);
    g += load<u32>(STATE, H_OFFSET + 24); h += load<u32>(STATE, H_OFFSET + 28);
    store<u32>(STATE, a, H_OFFSET + 0); store<u32>(STATE, b, H_OFFSET + 4);
    store<u32>(STATE, c, H_OFFSET + 8); store<u32>(STATE, d, H_OFFSET + 12);
    store<u32>(STATE, e, H_OFFSET + 16); store<u32>(STATE, f, H_OFFSET + 20);
    store<u32>(STATE, g, H_OFFSET + 24); store<u32>(STATE, h, H_OFFSET + 28);
    p += 64;
  }
}

/** The input buffer JS writes into before update(len) or hashInput(len). */
export function inputPtr(): usize { return INPUT; }
export function inputSize(): i32 { return INPUT_SIZE; }
/** The 32-byte digest written by final() and hashInput(). */
export function outputPtr(): usize { return OUTPUT; }
/** The whole streaming state: save and restore these bytes to switch between hashers. */
export function statePtr(): usize { return STATE; }
export function stateSize(): i32 { return STATE_SIZE; }

export function init(): void {
  store<u32>(STATE, 0x6a09e667, H_OFFSET + 0); store<u32>(STATE, 0xbb67ae85, H_OFFSET + 4);
  store<u32>(STATE, 0x3c6ef372, H_OFFSET + 8); store<u32>(STATE, 0xa54ff53a, H_OFFSET + 12);
  store<u32>(STATE, 0x510e527f, H_OFFSET + 16); store<u32>(STATE, 0x9b05688c, H_OFFSET + 20);
  store<u32>(STATE, 0x1f83d9ab, H_OFFSET + 24); store<u32>(STATE, 0x5be0cd19, H_OFFSET + 28);
  store<u64>(STATE, 0, COUNT_OFFSET);
}

/** Absorbs the first `len` bytes of the input buffer (0 <= len <= inputSize()). */
export function update(len: i32): void {
  // --noAssert strips assert(); a bad length from JS must trap rather than read past the input buffer.
  if (<u32>len > <u32>INPUT_SIZE) unreachable();
  let p = INPUT;
  let n = <usize>len;
  const count = load<u64>(STATE, COUNT_OFFSET);
  store<u64>(STATE, count + <u64>n, COUNT_OFFSET);
  const pending = <usize>(count & 63);
  if (pending != 0) {
    const take = min<usize>(64 - pending, n);
    memory.copy(PENDING + pending, p, take);
    if (pending + take < 64) return;
    compress(PENDING, 1);
    p += take;
    n -= take;
  }
  // Whole blocks are compressed straight from the input buffer, without a copy.
  const blocks = n >>> 6;
  if (blocks != 0) compress(p, blocks);
  const rest = n & 63;
  if (rest != 0) memory.copy(PENDING, p + (blocks << 6), rest);
}

/** Pads, compresses the last block(s) and writes the digest to the output buffer. The state is spent. */
export function final(): void {
  const count = load<u64>(STATE, COUNT_OFFSET);
  const pending = <usize>(count & 63);
  store<u8>(PENDING + pending, 0x80);
  if (pending >= 56) {
    // No room for the 8-byte length: it goes in one more block.
    memory.fill(PENDING + pending + 1, 0, 63 - pending);
    compress(PENDING, 1);
    memory.fill(PENDING, 0, 56);
  } else {
    memory.fill(PENDING + pending + 1, 0, 55 - pending);
  }
  store<u64>(PENDING, bswap<u64>(count << 3), 56);
  compress(PENDING, 1);
  for (let i: usize = 0; i < 32; i += 4) store<u32>(OUTPUT + i, bswap<u32>(load<u32>(STATE + H_OFFSET + i)));
}

/** One-shot hash of the first `len` bytes of the input buffer: one call instead of three for small inputs. */
export function hashInput(len: i32): void {
  init();
  update(len);
  final();
}
