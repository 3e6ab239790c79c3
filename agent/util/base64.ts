// Base64 for signatures and proofs on the wire: the standard alphabet with padding, one spelling per value.

export function toBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}

/** Canonical base64 (standard alphabet, padded) of exactly `bytes` bytes; null for anything else. */
export function decodeBase64(value: unknown, bytes: number): Uint8Array | null {
  // The length test comes first so that a huge string costs nothing; the round trip rejects the characters and
  // padding variants that Buffer's lenient decoder would skip, so one value has one spelling.
  if (typeof value !== "string" || value.length !== 4 * Math.ceil(bytes / 3)) return null;
  const decoded = Buffer.from(value, "base64");
  if (decoded.length !== bytes || decoded.toString("base64") !== value) return null;
  return new Uint8Array(decoded.buffer, decoded.byteOffset, decoded.byteLength);
}

/** Canonical base64 of any length up to `maxBytes` (decoded); null for anything else. */
export function decodeBase64Any(value: unknown, maxBytes = Number.MAX_SAFE_INTEGER): Uint8Array | null {
  if (typeof value !== "string" || value.length % 4 !== 0 || value.length > 4 * Math.ceil(maxBytes / 3)) return null;
  const decoded = Buffer.from(value, "base64");
  if (decoded.toString("base64") !== value) return null;
  return new Uint8Array(decoded.buffer, decoded.byteOffset, decoded.byteLength);
}
