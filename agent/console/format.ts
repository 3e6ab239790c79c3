// Plain text for a serial terminal: aligned "label  value" lines, sizes, durations, times. No colours, no
// box-drawing characters (a 1990s terminal emulator on the other end of the cable must show it as is).

/** "label   value" lines with the labels padded to one column; a value with "\n" continues under itself. */
export function fields(rows: readonly (readonly [string, string])[], indent = ""): string {
  const width = Math.max(0, ...rows.map(([k]) => k.length));
  const pad = " ".repeat(width + 2);
  return rows
    .map(([k, v]) => `${indent}${k.padEnd(width)}  ${v.split("\n").join(`\n${indent}${pad}`)}`.trimEnd() + "\n")
    .join("");
}

/** A table: a header row and rows, columns padded to their widest cell; the last column is not padded. */
export function table(header: readonly string[], rows: readonly (readonly string[])[], indent = ""): string {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
  return all
    .map(
      (r) =>
        indent +
        r
          .map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!)))
          .join("  ")
          .trimEnd() +
        "\n",
    )
    .join("");
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/** 1536 -> "1.5 KiB"; exact bytes below 1 KiB. */
export function bytes(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return "?";
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${UNITS[u]}`;
}

/** 11520 -> "3h 12m"; 45 -> "45s"; 200000 -> "2d 7h". */
export function duration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

/** Epoch ms -> "2026-05-01 10:00:00Z". */
export function time(ms: number): string {
  if (!Number.isFinite(ms)) return "?";
  return new Date(ms)
    .toISOString()
    .replace("T", " ")
    .replace(/\.\d+Z$/, "Z");
}

/** Milliseconds with one decimal: "12.3 ms". */
export function millis(ms: number): string {
  return `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
}

/** Bytes per second over ms: "43.1 MB/s" (decimal megabytes, as disk vendors and dd count). */
export function rate(byteCount: number, ms: number): string {
  if (ms <= 0) return "? MB/s";
  const mbps = byteCount / 1e6 / (ms / 1000);
  return `${mbps < 10 ? mbps.toFixed(1) : Math.round(mbps)} MB/s`;
}

/** "1 object", "2 objects". */
export function plural(n: number, word: string, many = `${word}s`): string {
  return `${n} ${n === 1 ? word : many}`;
}
