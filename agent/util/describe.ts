// One-line renderings of untrusted values and thrown things, for error messages and refusal reasons: short,
// never multi-line, never throwing.

/** A short, one-line rendering of an untrusted value for a reason. */
export function describeValue(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value.length > 40 ? `${value.slice(0, 37)}...` : value);
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint" || value === null || value === undefined) return String(value);
  return describeType(value);
}

export function describeType(value: unknown): string {
  if (value === null) return "null";
  if (value === undefined) return "undefined";
  if (Array.isArray(value)) return "an array";
  if (value instanceof Uint8Array) return "bytes";
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}

/** The message of something thrown, on one line and short; never throws itself. */
export function errorLine(err: unknown, max = 200): string {
  let text: string;
  try {
    text = err instanceof Error ? String(err.message) : typeof err === "string" ? err : describeType(err);
  } catch {
    text = "an unreadable error";
  }
  const line = text.replace(/\s+/g, " ").trim() || "no message";
  return line.length > max ? `${line.slice(0, max - 3)}...` : line;
}
