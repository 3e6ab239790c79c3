// The background scrub: re-reads every stored object at a bounded I/O rate, re-hashes it, and quarantines the
// ones whose bytes no longer match their id (bit rot, a bad USB cable, a disk that lies). Reading is paced so
// the scrub never takes the disk from serving: the average read rate stays at the configured bytes/second.
// pause() holds a pass between reads (a hot box: agent/health) until resume(); the time spent paused does not
// count towards the pacing, so a resumed pass does not burst to catch up.
import { StoreError, type ObjectStore } from "./object-store.js";
import { errnoCode, errorMessage } from "../util/errors.js";

export interface ScrubOptions {
  /** Average read rate, bytes per second. */
  bytesPerSecond: number;
  /** Injected time: milliseconds now, and a way to wait. */
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

export interface ScrubReport {
  checked: number;
  bytes: number;
  corrupt: string[];
  missing: string[];
  elapsedMs: number;
}

/** Thrown through the store's read loop to end a pass that was asked to stop. */
const STOPPED = Symbol("scrub stopped");

export class Scrubber {
  private readonly now: () => number;
  private readonly sleep: (ms: number) => Promise<void>;
  private stopping = false;
  private pausedFlag = false;
  private resumed: { promise: Promise<void>; resolve: () => void } | undefined;

  constructor(
    private readonly store: ObjectStore,
    private readonly options: ScrubOptions,
  ) {
    if (!(options.bytesPerSecond > 0))
      throw new RangeError(`scrub rate must be positive, got ${options.bytesPerSecond}`);
    this.now = options.now ?? (() => performance.now());
    this.sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
  }

  /** Asks a running pass to stop before its next read (the object being read is left unjudged). */
  stop(): void {
    this.stopping = true;
    this.wake();
  }

  /** Holds the pass (a running one, or the next) before its next read, until resume(). */
  pause(): void {
    if (this.pausedFlag) return;
    this.pausedFlag = true;
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    this.resumed = { promise, resolve };
  }

  resume(): void {
    this.pausedFlag = false;
    this.wake();
  }

  get paused(): boolean {
    return this.pausedFlag;
  }

  private wake(): void {
    this.resumed?.resolve();
    this.resumed = undefined;
  }

  /** Waits while paused; returns the milliseconds it waited. */
  private async whilePaused(): Promise<number> {
    if (!this.pausedFlag || this.stopping) return 0;
    const since = this.now();
    while (this.pausedFlag && !this.stopping && this.resumed) await this.resumed.promise;
    return this.now() - since;
  }

  /** One pass over every object stored when the pass starts. */
  async runOnce(): Promise<ScrubReport> {
    this.stopping = false;
    const started = this.now();
    let pausedMs = 0;
    const report: ScrubReport = { checked: 0, bytes: 0, corrupt: [], missing: [], elapsedMs: 0 };
    // Pacing: after n bytes the pass may be no earlier than n / rate seconds after it started (plus the pauses).
    const pace = async (bytes: number): Promise<void> => {
      report.bytes += bytes;
      const due = started + pausedMs + (report.bytes / this.options.bytesPerSecond) * 1000;
      const wait = due - this.now();
      if (wait > 0) await this.sleep(wait);
      pausedMs += await this.whilePaused();
      if (this.stopping) throw STOPPED;
    };
    for (const object of this.store.list()) {
      pausedMs += await this.whilePaused();
      if (this.stopping) break;
      if (!this.store.has(object.id)) continue; // deleted while the pass ran
      let valid: boolean;
      try {
        valid = await this.store.verifyFiles(object.id, object.length, pace);
      } catch (err) {
        if (err === STOPPED) break;
        if (errnoCode(err) === "ENOENT") {
          report.missing.push(object.id);
          await this.store.forgetMissing(object.id);
          continue;
        }
        if (err instanceof StoreError) throw err;
        throw new StoreError(`scrub of ${object.id}: ${errorMessage(err)}`, "io");
      }
      report.checked++;
      if (!valid) {
        report.corrupt.push(object.id);
        await this.store.quarantine(object.id, "scrub: content does not match its id or outboard");
      }
    }
    report.elapsedMs = Math.round(this.now() - started);
    return report;
  }
}
