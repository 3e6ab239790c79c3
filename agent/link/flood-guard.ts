// What anyone who can publish on a device's command topics gets out of it for nothing (agent/link/README.md, "What
// a broker client can make the device do"). The command gate refuses unauthenticated messages; these two bound the
// work and the noise a flood of them causes. Both run on an injected clock, so their tests need no waiting.
//
//   TokenBucket  the error replies to unauthenticated messages: at most `burst` at once, then `perSecond` (the gate
//                uses 10, then 1 a second). Replies to commands the fleet signed are never limited.
//   RefusalLog   refusals counted by code and written as one summary line per interval (60 s), nothing when there
//                were none. The first refusal of each code in an interval is written at once, with its reason, for
//                whoever debugs a fleet whose commands are all refused; at most 5 such lines an interval. A flood
//                thus costs at most 6 lines a minute, instead of one per message.

/** Error replies to unauthenticated messages: at most 10 at once ... */
export const ERROR_REPLY_BURST = 10;
/** ... then 1 a second. */
export const ERROR_REPLIES_PER_SECOND = 1;
/** One summary line a minute at most. */
export const REFUSAL_SUMMARY_MS = 60_000;
/** The first refusals of distinct codes written at once in an interval, at most. */
export const REFUSAL_PROMPT_LINES = 5;

export interface TokenBucketOptions {
  /** Tokens when full (and at first use). */
  burst: number;
  /** Tokens added a second, up to `burst`. */
  perSecond: number;
  /** Milliseconds (epoch or monotonic). */
  clock: () => number;
}

export class TokenBucket {
  private readonly burst: number;
  private readonly perSecond: number;
  private readonly clock: () => number;
  private tokens: number;
  private last: number | undefined;

  constructor(options: TokenBucketOptions) {
    const { burst, perSecond } = options;
    if (!Number.isSafeInteger(burst) || burst < 1) {
      throw new RangeError(`burst must be a positive integer, got ${String(burst)}`);
    }
    if (typeof perSecond !== "number" || !Number.isFinite(perSecond) || perSecond <= 0) {
      throw new RangeError(`perSecond must be a positive number, got ${String(perSecond)}`);
    }
    this.burst = burst;
    this.perSecond = perSecond;
    this.clock = options.clock;
    this.tokens = burst;
  }

  /** Takes one token if there is one: true means go ahead. */
  take(): boolean {
    const now = this.clock();
    if (typeof now === "number" && Number.isFinite(now)) {
      // A clock that steps back (NTP correcting a box without a battery-backed clock) adds nothing, and must not
      // stall the refill until it catches up again: start counting from the new reading.
      if (this.last !== undefined && now > this.last) {
        this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.perSecond) / 1000);
      }
      this.last = now;
    }
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

export interface RefusalLogOptions {
  log: { info(message: string): void };
  /** Milliseconds; says how long the summarized interval was. */
  clock: () => number;
  /** How often start()'s timer writes the summary (default REFUSAL_SUMMARY_MS). */
  intervalMs?: number;
  /** Default REFUSAL_PROMPT_LINES. */
  promptLines?: number;
}

export class RefusalLog {
  private readonly log: { info(message: string): void };
  private readonly clock: () => number;
  private readonly intervalMs: number;
  private readonly promptLines: number;
  private readonly counts = new Map<string, number>();
  /** Codes written at once in this interval. */
  private readonly prompted = new Set<string>();
  private unanswered = 0;
  private since: number | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(options: RefusalLogOptions) {
    this.log = options.log;
    this.clock = options.clock;
    this.intervalMs = options.intervalMs ?? REFUSAL_SUMMARY_MS;
    this.promptLines = options.promptLines ?? REFUSAL_PROMPT_LINES;
  }

  /** Writes the summary every interval from now on. */
  start(): void {
    if (this.timer !== undefined) return;
    this.since = this.read() ?? this.since;
    this.timer = setInterval(() => this.flush(), this.intervalMs);
    this.timer.unref();
  }

  /** Stops the timer and writes what has been counted since the last summary. */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.flush();
  }

  /**
   * Counts one refusal. `line` (built only when written) is the refusal's one-line description; `answered` says
   * whether an error reply went out.
   */
  record(code: string, line: () => string, answered: boolean): void {
    this.since ??= this.read();
    this.counts.set(code, (this.counts.get(code) ?? 0) + 1);
    if (!answered) this.unanswered++;
    if (this.prompted.has(code) || this.prompted.size >= this.promptLines) return;
    this.prompted.add(code);
    this.log.info(line());
  }

  /**
   * Writes one line with the refusals counted since the last summary, by code, most frequent first, and starts a
   * new interval. Writes nothing when there were none, or when each was already written at once.
   */
  flush(): void {
    const now = this.read();
    const since = this.since;
    this.since = now;
    let total = 0;
    for (const n of this.counts.values()) total += n;
    // One refusal written at once per code in `prompted`.
    const writtenAtOnce = this.prompted.size;
    const unanswered = this.unanswered;
    const counts = [...this.counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
    this.counts.clear();
    this.prompted.clear();
    this.unanswered = 0;
    if (total === writtenAtOnce) return;
    const parts = counts.map(([code, n]) => `${n} ${code}`).join(", ");
    const seconds = now === undefined || since === undefined ? undefined : Math.round((now - since) / 1000);
    const window = seconds === undefined ? "since the last summary" : `in the last ${Math.max(0, seconds)} s`;
    const unansweredText = unanswered > 0 ? `; ${unanswered} unauthenticated got no error reply (rate limit)` : "";
    this.log.info(`refused ${parts} ${window}${unansweredText}`);
  }

  private read(): number | undefined {
    try {
      const t = this.clock();
      return typeof t === "number" && Number.isFinite(t) ? t : undefined;
    } catch {
      return undefined;
    }
  }
}
