// Hex text for ids and digests: lower case, as b3sum and sha256sum print them.

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

/** Parses hex of exactly `expectedBytes` bytes when given; throws a one-line error naming what is wrong. */
export function fromHex(text: string, expectedBytes?: number, what = "hex value"): Uint8Array {
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(text)) {
    throw new Error(`${what} is not hex: ${JSON.stringify(text.length > 80 ? text.slice(0, 77) + "..." : text)}`);
  }
  if (expectedBytes !== undefined && text.length !== expectedBytes * 2) {
    throw new Error(`${what} must be ${expectedBytes * 2} hex digits, got ${text.length}`);
  }
  return new Uint8Array(Buffer.from(text, "hex"));
}
