// One progress line on a terminal: `sharenode hash` and `sharenode get` draw it (moved here from hash.ts so that
// subcommands share it without importing each other).
import type { Writable } from "node:stream";

/** Inputs smaller than this finish too fast to need a progress line (hash's default). */
export const PROGRESS_THRESHOLD = 64 * 1024 * 1024;
const REDRAW_MS = 100;

/**
 * One progress line on a terminal stream, redrawn in place at most every 100 ms and erased by end().
 * Draws nothing unless the stream is a TTY and the input is (or has turned out to be) at least `threshold` bytes
 * (64 MiB by default: hashing less is over before a line helps; a download over a network is worth one sooner).
 */
export class Progress {
  private readonly enabled: boolean;
  private name = "";
  private total: number | undefined;
  private done = 0;
  private started = 0;
  private lastDraw = 0;
  private shown = false;

  constructor(
    private readonly out: Writable & { isTTY?: boolean; columns?: number },
    private readonly now: () => number = () => performance.now(),
    private readonly threshold = PROGRESS_THRESHOLD,
  ) {
    this.enabled = out.isTTY === true;
  }

  begin(name: string, total: number | undefined): void {
    this.name = name;
    this.total = total;
    this.done = 0;
    this.started = this.lastDraw = this.enabled ? this.now() : 0;
  }

  advance(bytes: number): void {
    this.done += bytes;
    if (!this.enabled || (this.total ?? this.done) < this.threshold) return;
    const now = this.now();
    // The first line waits one interval too, so its rate is not a guess from a single read.
    if (now - this.lastDraw < REDRAW_MS) return;
    this.lastDraw = now;
    const line = formatProgress({
      name: this.name,
      done: this.done,
      total: this.total,
      elapsedMs: now - this.started,
      // A pty nobody has sized (script(1), CI) reports 0 columns.
      columns: this.out.columns || 80,
    });
    this.out.write(`\r${line}\x1b[K`);
    this.shown = true;
  }

  /** Erases the line if one was drawn, so the checksum line that follows starts on a clean line. */
  end(): void {
    if (this.shown) this.out.write("\r\x1b[K");
    this.shown = false;
  }
}

export interface ProgressState {
  name: string;
  done: number;
  /** Undefined when the input's size is not known (standard input, a pipe). */
  total: number | undefined;
  elapsedMs: number;
  columns: number;
}

/** `NAME  42%  118.3 MB/s  ETA 0:07`, or `NAME  1234 MB  118.3 MB/s` for unknown size; fits `columns - 1`. */
export function formatProgress({ name, done, total, elapsedMs, columns }: ProgressState): string {
  const rate = elapsedMs > 0 ? done / (elapsedMs / 1000) : 0;
  const speed = `${(rate / 1e6).toFixed(1)} MB/s`;
  let stats: string;
  if (total === undefined) {
    stats = `${Math.floor(done / 1e6)} MB  ${speed}`;
  } else {
    const percent = total > 0 ? Math.min(100, Math.floor((done / total) * 100)) : 100;
    const eta = rate > 0 ? formatDuration(Math.max(0, total - done) / rate) : "--:--";
    stats = `${String(percent).padStart(3)}%  ${speed}  ETA ${eta}`;
  }
  // A name can hold anything; keep the line one terminal row so \r redraws it in place.
  const shown = name.replace(/[\x00-\x1f\x7f]/g, "?");
  const room = Math.max(0, columns - 1 - stats.length - 2);
  const fitted = shown.length <= room ? shown : room > 3 ? "..." + shown.slice(shown.length - (room - 3)) : "";
  return fitted ? `${fitted}  ${stats}` : stats;
}

function formatDuration(seconds: number): string {
  const s = Math.ceil(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}
