// One byte-rate limit shared by every connection of one direction: the owner's upload rate for everything the
// box serves, the download rate for everything it fetches (`share.*`, as agent/health/resource-policy.ts turns
// it into `uploadBytesPerSecond` / `downloadBytesPerSecond` for the active window and the thermal state).
//
// A token bucket with one FIFO queue of waiters. A caller asks for up to n bytes and is granted at most one
// quantum (about 1/50 s of the rate, at most 64 KiB) per turn, then asks again at the back of the queue: with 200
// connections every one of them gets a turn in every round, whatever sizes they ask for. One timer, for the head
// of the queue only, however many wait. Tokens accrue on the clock, not on timer ticks, so a timer that fires
// late (a busy box) loses nothing as long as it is less than the bucket's depth (BURST_MS) late. The bucket starts
// empty and is refilled only up to that depth: over any stretch of time T the bytes granted are at most
// rate x T + rate x BURST_MS / 1000.
//
// Unlimited (rate null, "0" in the config) costs nothing: grantNow(n) returns n, take(n) returns one shared
// resolved promise, nothing is counted but the bytes. A rate change (setRate, from the governor's "change") takes
// effect at once, for the callers already waiting too.
//
// Integers only: rates and grants are whole bytes; the bucket is kept in byte-milliseconds (bytes x 1000), so a
// refill is rate x elapsed ms, rounded once.

/** What the limiter waits with; real: setTimeout, unref'd (a waiting grant never keeps the process alive alone). */
export interface WakeTimers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realWakeTimers: WakeTimers = {
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clearTimeout(handle) {
    clearTimeout(handle as NodeJS.Timeout);
  },
};

export interface ByteRateOptions {
  /** Bytes per second (an integer >= 1); null: no limit. */
  rate: number | null;
  /** Monotonic milliseconds (default performance.now: NTP's jump at boot is no burst). */
  now?: () => number;
  timers?: WakeTimers;
  /** Largest grant per turn, bytes (default 64 KiB). */
  maxQuantum?: number;
}

/** How much the bucket holds: this many milliseconds of the rate (and at least one quantum). */
export const BURST_MS = 200;
/** A turn is about this share of a second of the rate. */
const TURNS_PER_SECOND = 50;
export const DEFAULT_MAX_QUANTUM = 64 * 1024;

const RESOLVED: Promise<void> = Promise.resolve();

interface Waiter {
  max: number;
  resolve: (granted: number) => void;
  reject: (err: unknown) => void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

export interface ByteRateStats {
  /** Bytes per second now; null: no limit. */
  rate: number | null;
  /** Every byte granted since the limiter was made. */
  grantedBytes: number;
  /** Callers waiting for a grant now. */
  waiting: number;
}

export class ByteRateLimiter {
  private readonly now: () => number;
  private readonly timers: WakeTimers;
  private readonly maxQuantum: number;
  private rateNow: number | null = null;
  private quantum = 0;
  /** Bucket depth and content, in byte-milliseconds. */
  private capacityMilli = 0;
  private milli = 0;
  private last = 0;
  private readonly queue: Waiter[] = [];
  private timer: unknown;
  private granted = 0;

  constructor(options: ByteRateOptions) {
    this.now = options.now ?? (() => performance.now());
    this.timers = options.timers ?? realWakeTimers;
    this.maxQuantum = options.maxQuantum ?? DEFAULT_MAX_QUANTUM;
    if (!Number.isSafeInteger(this.maxQuantum) || this.maxQuantum < 1) {
      throw new RangeError(`maxQuantum must be an integer >= 1, got ${String(options.maxQuantum)}`);
    }
    this.setRate(options.rate);
  }

  /** Bytes per second now; null: no limit. */
  get rate(): number | null {
    return this.rateNow;
  }

  get stats(): ByteRateStats {
    return { rate: this.rateNow, grantedBytes: this.granted, waiting: this.queue.length };
  }

  /**
   * Changes the rate at once, for the callers already waiting too. What accrued so far counts at the old rate;
   * a switch from no limit starts with an empty bucket (no burst at a window's start).
   */
  setRate(rate: number | null): void {
    if (rate !== null && (!Number.isSafeInteger(rate) || rate < 1)) {
      throw new RangeError(`a byte rate must be an integer >= 1 or null (no limit), got ${String(rate)}`);
    }
    const now = this.now();
    if (this.rateNow !== null) this.refill(now);
    else this.milli = 0;
    this.last = now;
    this.rateNow = rate;
    if (this.timer !== undefined) this.timers.clearTimeout(this.timer);
    this.timer = undefined;
    if (rate === null) {
      this.quantum = 0;
      this.capacityMilli = 0;
      this.milli = 0;
      for (const w of this.queue.splice(0)) this.settle(w, w.max);
      return;
    }
    this.quantum = Math.max(1, Math.min(this.maxQuantum, Math.floor(rate / TURNS_PER_SECOND)));
    this.capacityMilli = Math.max(this.quantum * 1000, rate * BURST_MS);
    this.milli = Math.min(this.milli, this.capacityMilli);
    this.pump();
  }

  /**
   * Up to `max` bytes that may go now without waiting, or 0 (then `grant()`); never jumps the queue. Unlimited:
   * `max`. The synchronous fast path: `const n = limiter.grantNow(len) || (await limiter.grant(len))`.
   */
  grantNow(max: number): number {
    if (this.rateNow === null) {
      this.granted += max;
      return max;
    }
    if (this.queue.length > 0 || max < 1) return 0;
    this.refill(this.now());
    const n = Math.min(max, this.quantum);
    if (this.milli < n * 1000) return 0;
    this.milli -= n * 1000;
    this.granted += n;
    return n;
  }

  /**
   * Waits for its turn and resolves with the bytes granted: 1..min(max, quantum), or `max` when unlimited. Write
   * (or count as read) exactly that many, then ask again for the rest. An aborted signal rejects with its reason
   * and gives the turn up (a closed connection must not hold the queue).
   */
  grant(max: number, signal?: AbortSignal): Promise<number> {
    if (!Number.isSafeInteger(max) || max < 1) {
      return Promise.reject(new RangeError(`a grant is for an integer >= 1 bytes, got ${String(max)}`));
    }
    if (signal?.aborted) return Promise.reject(signal.reason);
    const now = this.grantNow(max);
    if (now > 0) return Promise.resolve(now);
    return new Promise<number>((resolve, reject) => {
      const waiter: Waiter = { max, resolve, reject, signal, onAbort: undefined };
      if (signal) {
        waiter.onAbort = () => {
          const i = this.queue.indexOf(waiter);
          if (i < 0) return;
          this.queue.splice(i, 1);
          reject(signal.reason);
          // The head left: the next one may be due sooner.
          if (i === 0) this.rearm();
        };
        signal.addEventListener("abort", waiter.onAbort, { once: true });
      }
      this.queue.push(waiter);
      if (this.queue.length === 1) this.pump();
    });
  }

  /**
   * Resolves once all `n` bytes were granted (in turns, so a large n does not starve the others). For what has
   * already moved (bytes read from a socket) as well as what is about to (bytes to write).
   */
  take(n: number, signal?: AbortSignal): Promise<void> {
    if (n <= 0) return RESOLVED;
    if (this.rateNow === null) {
      this.granted += n;
      return RESOLVED;
    }
    const first = this.grantNow(n);
    if (first === n) return RESOLVED;
    return this.takeRest(n - first, signal);
  }

  /**
   * Yields the chunks of `source` cut to the grants: what a server writes through the upload limit. Unlimited:
   * the chunks as they are.
   */
  async *pace(source: AsyncIterable<Uint8Array>, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
    for await (const chunk of source) {
      let at = 0;
      while (at < chunk.length) {
        const left = chunk.length - at;
        const n = this.grantNow(left) || (await this.grant(left, signal));
        yield at === 0 && n === chunk.length ? chunk : chunk.subarray(at, at + n);
        at += n;
      }
    }
  }

  private async takeRest(n: number, signal: AbortSignal | undefined): Promise<void> {
    let left = n;
    while (left > 0) left -= await this.grant(left, signal);
  }

  private refill(now: number): void {
    const elapsed = now - this.last;
    if (elapsed <= 0) return;
    this.last = now;
    this.milli = Math.min(this.capacityMilli, this.milli + Math.round(elapsed * this.rateNow!));
  }

  /** Grants the queue's head while the bucket holds enough, then arms the one timer for the next head. */
  private pump(): void {
    this.timer = undefined;
    if (this.rateNow === null || this.queue.length === 0) return;
    this.refill(this.now());
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      const n = Math.min(head.max, this.quantum);
      if (this.milli < n * 1000) break;
      this.milli -= n * 1000;
      this.queue.shift();
      this.settle(head, n);
    }
    this.rearm();
  }

  private rearm(): void {
    if (this.timer !== undefined) this.timers.clearTimeout(this.timer);
    this.timer = undefined;
    const head = this.queue[0];
    if (!head || this.rateNow === null) return;
    const missing = Math.min(head.max, this.quantum) * 1000 - this.milli;
    const ms = Math.max(1, Math.ceil(missing / this.rateNow));
    this.timer = this.timers.setTimeout(() => this.pump(), ms);
  }

  private settle(w: Waiter, n: number): void {
    if (w.onAbort) w.signal!.removeEventListener("abort", w.onAbort);
    this.granted += n;
    w.resolve(n);
  }
}

/** What the limiter follows: agent/health/resource-policy.ts's ResourceGovernor fits. */
export interface RateSource<L> {
  limits(): L;
  on(event: "change", listener: (limits: L) => void): unknown;
  off(event: "change", listener: (limits: L) => void): unknown;
}

/**
 * Keeps `limiter` at `pick(limits)` now and on every "change" of the governor (a window begins or ends, the box
 * gets hot or cools down). Returns the function that stops following.
 */
export function followRate<L>(
  limiter: ByteRateLimiter,
  source: RateSource<L>,
  pick: (limits: L) => number | null,
): () => void {
  const apply = (limits: L) => {
    const rate = pick(limits);
    if (rate !== limiter.rate) limiter.setRate(rate);
  };
  apply(source.limits());
  source.on("change", apply);
  return () => source.off("change", apply);
}
