// How a problem line names what it found: values shortened (a 1 MB string is not echoed), secrets never shown,
// key names that are not plain words quoted (a key holding a terminal escape or a line break shows as JSON).

/** Longest key name shown as it is; longer ones are cut (no schema key comes close). */
const MAX_KEY_TEXT = 64;

/** A value as a problem line shows it: JSON, at most 60 characters; a secret shows only its kind. */
export function shown(value: unknown, secret = false): string {
  if (secret)
    return typeof value === "string"
      ? "a string"
      : value === null
        ? "null"
        : Array.isArray(value)
          ? "an array"
          : typeof value;
  if (value === undefined) return "nothing";
  // JSON.parse reads 1e400 as Infinity, which JSON.stringify would show as "null".
  if (typeof value === "number" && !Number.isFinite(value)) return `${value} (out of range: not a finite number)`;
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 60 ? text.slice(0, 57) + "..." : text;
}

/** A key name as a path shows it: plain words as they are, anything else as (shortened) JSON. */
export function keyText(name: string): string {
  const cut = name.length > MAX_KEY_TEXT ? name.slice(0, MAX_KEY_TEXT - 3) + "..." : name;
  return /^[\w$-]+$/.test(name) ? cut : JSON.stringify(cut);
}

/** "a, b or c". */
export function listOf(items: readonly string[], last: string): string {
  return items.length <= 1 ? items.join("") : `${items.slice(0, -1).join(", ")} ${last} ${items[items.length - 1]}`;
}
