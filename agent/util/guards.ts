// Type guards for untrusted JSON (commands, replies, telemetry a fleet reads).

/** A JSON-safe unsigned integer: a number that is a whole number from 0 to 2^53 - 1. */
export function isUint(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/** A JSON object: not null, not an array. */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
