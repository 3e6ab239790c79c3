// What was thrown, as text. JavaScript can throw anything (a string, a number, null, an object with a throwing
// getter, a revoked Proxy), so these never assume an Error and never throw themselves.
import { describeType } from "./describe.js";

/**
 * The message of something thrown: an Error's message; a thrown string as it is; a number, boolean, null or
 * undefined as text; an object's string `message` (errors from another realm are no `instanceof Error`); else
 * what it is ("an object"). Never throws.
 */
export function errorMessage(err: unknown): string {
  try {
    if (err instanceof Error) return String(err.message);
    if (typeof err === "string") return err;
    const t = typeof err;
    if (err === null || t === "undefined" || t === "number" || t === "boolean" || t === "bigint") return String(err);
    const message = typeof err === "object" ? (err as { message?: unknown }).message : undefined;
    return typeof message === "string" ? message : describeType(err);
  } catch {
    return "an unreadable error";
  }
}

/**
 * errorMessage() on one line, for logs, replies and the CLI's error line: line breaks and runs of white space
 * become one space (a message can quote hostile input), cut to `max` characters; "no message" when empty.
 */
export function errorLine(err: unknown, max = 200): string {
  const line = errorMessage(err).replace(/\s+/g, " ").trim() || "no message";
  return line.length > max ? `${line.slice(0, max - 3)}...` : line;
}

/** The errno code of a Node system error ("ENOENT"), or undefined for anything else. Never throws. */
export function errnoCode(err: unknown): string | undefined {
  try {
    const code = typeof err === "object" && err !== null ? (err as { code?: unknown }).code : undefined;
    return typeof code === "string" ? code : undefined;
  } catch {
    return undefined;
  }
}
