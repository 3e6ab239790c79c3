// The Range header, as nginx reads it (src/http/modules/ngx_http_range_filter_module.c, ngx_http_range_parse,
// with `max_ranges 1`): the same answer for the same header, so a client written against nginx works here.
//
// - No header, a value shorter than 7 characters, or one not starting with "bytes=" (any case): ignored, 200.
// - Each range is "S-E", "S-" or "-N", spaces allowed around the numbers and the dash. Anything else after
//   "bytes=" (letters, a second dash, a number past 2^63 - 1) is 416, not ignored: nginx's choice, kept.
// - "-N" is the last N bytes (all of them when N >= length); an end past the object is cut to its last byte.
// - A range that selects nothing (S >= length, E < S, "-0") is skipped; if nothing is left: 416 with
//   `Content-Range: bytes */LENGTH`. Except a skipped range starting at 0 (an empty object): ignored, 200.
// - More than one satisfiable range: ignored, the whole object with 200 (nginx with max_ranges 1; we send no
//   multipart bodies).

export type RangeAnswer =
  /** Serve the whole object, 200. */
  | { kind: "whole" }
  /** Serve bytes [start, end) with 206. */
  | { kind: "part"; start: number; end: number }
  /** 416, nothing served. */
  | { kind: "unsatisfiable" };

const WHOLE: RangeAnswer = { kind: "whole" };
const UNSATISFIABLE: RangeAnswer = { kind: "unsatisfiable" };
/** nginx's off_t limit: a number past it makes the header 416. */
const MAX_OFF_T = 9223372036854775807n;
const MAX_OFF_T_DIGITS = 19;

/** Reads one number at `p`; NaN when it overflows off_t. Numbers above 2^53 lose precision, which is harmless:
 * they are far past any object's length, and only compared with it. */
function readNumber(s: string, p: number): { value: number; next: number } {
  let q = p;
  while (q < s.length && s.charCodeAt(q) >= 48 && s.charCodeAt(q) <= 57) q++;
  const digits = s.slice(p, q);
  let value = Number(digits);
  if (digits.length >= MAX_OFF_T_DIGITS && BigInt(digits) > MAX_OFF_T) value = NaN;
  return { value, next: q };
}

function isDigit(s: string, p: number): boolean {
  const c = s.charCodeAt(p);
  return c >= 48 && c <= 57;
}

function skipSpaces(s: string, p: number): number {
  while (s.charCodeAt(p) === 32) p++;
  return p;
}

/** The answer to a Range header value for an object of `length` bytes. */
export function parseRange(header: string | undefined, length: number): RangeAnswer {
  if (header === undefined || header.length < 7) return WHOLE;
  if (header.slice(0, 6).toLowerCase() !== "bytes=") return WHOLE;
  const s = header;
  let p = 6;
  let found: { start: number; end: number } | undefined;
  for (;;) {
    let start = 0;
    let end = 0;
    let suffix = false;
    let open = false;
    p = skipSpaces(s, p);
    if (s.charCodeAt(p) !== 45 /* - */) {
      if (!isDigit(s, p)) return UNSATISFIABLE;
      const n = readNumber(s, p);
      if (Number.isNaN(n.value)) return UNSATISFIABLE;
      start = n.value;
      p = skipSpaces(s, n.next);
      if (s.charCodeAt(p++) !== 45) return UNSATISFIABLE;
      p = skipSpaces(s, p);
      if (p >= s.length || s.charCodeAt(p) === 44 /* , */) {
        end = length;
        open = true;
      }
    } else {
      suffix = true;
      p++;
    }
    if (!open) {
      if (!isDigit(s, p)) return UNSATISFIABLE;
      const n = readNumber(s, p);
      if (Number.isNaN(n.value)) return UNSATISFIABLE;
      end = n.value;
      p = skipSpaces(s, n.next);
      if (p < s.length && s.charCodeAt(p) !== 44) return UNSATISFIABLE;
      if (suffix) {
        start = end < length ? length - end : 0;
        end = length - 1;
      }
      end = end >= length ? length : end + 1;
    }
    if (start < end) {
      // A second satisfiable range: nginx with max_ranges 1 declines, and serves the whole object.
      if (found) return WHOLE;
      found = { start, end };
    } else if (start === 0) {
      return WHOLE;
    }
    if (p >= s.length || s.charCodeAt(p++) !== 44) break;
  }
  if (!found) return UNSATISFIABLE;
  return { kind: "part", start: found.start, end: found.end };
}
