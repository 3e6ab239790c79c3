// Reconnect backoff: capped exponential with full jitter (delay = random() * min(cap, base * factor^n)), so a
// fleet whose broker restarts does not reconnect in lockstep. The attempt count resets once a connection has
// stayed up for `resetAfterMs`; a link that flaps right after CONNACK keeps backing off. Random and clock are
// injected so tests are exact.

export interface BackoffOptions {
  /** The first ceiling (default 1000 ms). */
  baseMs?: number;
  /** Growth of the ceiling per failed attempt (default 2). */
  factor?: number;
  /** The largest ceiling (default 60 000 ms). */
  capMs?: number;
  /** A connection that stays up this long resets the backoff (default 30 000 ms). */
  resetAfterMs?: number;
  /** Uniform in [0, 1) (default Math.random). */
  random?: () => number;
  /** Milliseconds (default Date.now). */
  now?: () => number;
}

export class Backoff {
  private readonly baseMs: number;
  private readonly factor: number;
  private readonly capMs: number;
  private readonly resetAfterMs: number;
  private readonly random: () => number;
  private readonly now: () => number;
  private failures = 0;
  private upSince: number | null = null;

  constructor(options: BackoffOptions = {}) {
    this.baseMs = options.baseMs ?? 1000;
    this.factor = options.factor ?? 2;
    this.capMs = options.capMs ?? 60_000;
    this.resetAfterMs = options.resetAfterMs ?? 30_000;
    this.random = options.random ?? Math.random;
    this.now = options.now ?? Date.now;
    if (!(this.baseMs > 0) || !(this.factor >= 1) || !(this.capMs >= this.baseMs) || !(this.resetAfterMs >= 0)) {
      throw new RangeError("backoff: need baseMs > 0, factor >= 1, capMs >= baseMs, resetAfterMs >= 0");
    }
  }

  /** Attempts that failed (or connections that died young) since the last reset. */
  get attempts(): number {
    return this.failures;
  }

  /** The ceiling the next delay is drawn under. */
  get ceilingMs(): number {
    // Stop growing the exponent once past the cap: factor^n would overflow to Infinity after ~1000 failures.
    const grown = this.baseMs * Math.pow(this.factor, Math.min(this.failures, 64));
    return Math.min(this.capMs, grown);
  }

  /** The delay before the next attempt, in [0, ceiling); each call counts one more failure. */
  next(): number {
    // A connection that was up long enough before it dropped earns a fresh start.
    if (this.upSince !== null) {
      if (this.now() - this.upSince >= this.resetAfterMs) this.failures = 0;
      this.upSince = null;
    }
    const delay = Math.floor(this.random() * this.ceilingMs);
    this.failures++;
    return delay;
  }

  /** A connection came up; if it lasts resetAfterMs, the next delay starts from base again. */
  connected(): void {
    this.upSince = this.now();
  }

  reset(): void {
    this.failures = 0;
    this.upSince = null;
  }
}
