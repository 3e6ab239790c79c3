// agent/health/byte-rate.ts on an injected clock (nothing sleeps, every figure exact): the rate held over 10 s,
// fairness between 200 callers, a late timer losing nothing, no limit costing nothing, live changes (by hand and
// through the real ResourceGovernor when the box gets hot or a window begins), aborted waiters; the download rate's
// windows; and the work counters in the collected telemetry. The rate on real TCP: test/rate-limit-tcp.test.ts.
import { EventEmitter, setMaxListeners } from "node:events";
import { describe, expect, it } from "vitest";
import type { Config, UploadWindow } from "../agent/config/config";
import { BURST_MS, ByteRateLimiter, DEFAULT_MAX_QUANTUM, followRate, type WakeTimers } from "../agent/health/byte-rate";
import { ResourceGovernor, type ThermalSource } from "../agent/health/resource-policy";
import type { ThermalState } from "../agent/health/thermal-governor";
import { COUNTER_FIELDS, TelemetryCollector } from "../agent/telemetry/collector";
import { WorkCounters } from "../agent/telemetry/work-counters";

/** setTimeout on a clock of its own (milliseconds); time passes only in advance(). */
class ManualClock implements WakeTimers {
  now = 5_000;
  private seq = 0;
  private readonly timers = new Map<number, { fn: () => void; due: number }>();

  setTimeout = (fn: () => void, ms: number): unknown => {
    const id = ++this.seq;
    this.timers.set(id, { fn, due: this.now + ms });
    return id;
  };

  clearTimeout = (handle: unknown): void => {
    this.timers.delete(handle as number);
  };

  get pending(): number {
    return this.timers.size;
  }

  /**
   * `ms` pass. Each timer fires when due (or, with `step`, only at the end of each step: a busy event loop whose
   * timers fire up to `step` ms late); what it resolved runs before the next one.
   */
  async advance(ms: number, step?: number): Promise<void> {
    const end = this.now + ms;
    let until = step ? Math.min(end, this.now + step) : end;
    for (;;) {
      const due = [...this.timers].filter(([, t]) => t.due <= until).sort((a, b) => a[1].due - b[1].due)[0];
      if (due) {
        this.timers.delete(due[0]);
        this.now = step ? until : Math.max(this.now, due[1].due);
        due[1].fn();
        await settle();
        continue;
      }
      if (until >= end) break;
      until = Math.min(end, until + step!);
    }
    this.now = end;
    await settle();
  }
}

/** Every promise continuation that can run now has run. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

function limiterOn(clock: ManualClock, rate: number | null, maxQuantum?: number): ByteRateLimiter {
  return new ByteRateLimiter({ rate, now: () => clock.now, timers: clock, maxQuantum });
}

/** `count` callers, each asking for `ask` bytes again as soon as it got a grant; what each received. */
function consumers(limiter: ByteRateLimiter, count: number, ask: number) {
  const got = new Array<number>(count).fill(0);
  const grants: number[] = [];
  const controller = new AbortController();
  setMaxListeners(0, controller.signal); // every caller waits on the one signal
  const done = Array.from({ length: count }, async (_, i) => {
    for (;;) {
      let n: number;
      try {
        n = await limiter.grant(ask, controller.signal);
      } catch {
        return;
      }
      got[i] += n;
      grants.push(n);
    }
  });
  return {
    got,
    grants,
    total: () => got.reduce((a, b) => a + b, 0),
    stop: async () => {
      controller.abort();
      await Promise.all(done);
    },
  };
}

describe("ByteRateLimiter", () => {
  it("holds the rate exactly over 10 s: granted bytes within one quantum of rate x time, whole bytes only", async () => {
    const clock = new ManualClock();
    const limiter = limiterOn(clock, 1_000_000);
    const c = consumers(limiter, 3, 50_000);
    await clock.advance(10_000);
    // Empty at the start, refilled on the clock: 10 MB in 10 s, less at most the quantum still accruing.
    expect(c.total()).toBeLessThanOrEqual(10_000_000);
    expect(c.total()).toBeGreaterThanOrEqual(10_000_000 - 20_000);
    expect(c.grants.every((n) => Number.isInteger(n) && n === 20_000)).toBe(true); // 1/50 s of the rate
    expect(limiter.stats).toMatchObject({ rate: 1_000_000, grantedBytes: c.total(), waiting: 3 });
    await c.stop();
    expect(limiter.stats.waiting).toBe(0);
    expect(clock.pending).toBe(0);
  });

  it("is fair between 200 callers: each one progresses, none gets more than one turn ahead of another", async () => {
    const clock = new ManualClock();
    const limiter = limiterOn(clock, 10_000_000);
    const c = consumers(limiter, 200, 1 << 20);
    await clock.advance(10_000);
    const quantum = DEFAULT_MAX_QUANTUM; // 1/50 s of 10 MB/s is more than the largest grant
    expect(Math.min(...c.got)).toBeGreaterThan(0);
    expect(Math.max(...c.got) - Math.min(...c.got)).toBeLessThanOrEqual(quantum);
    expect(c.total()).toBeLessThanOrEqual(100_000_000);
    expect(c.total()).toBeGreaterThanOrEqual(100_000_000 - quantum);
    // One timer for the whole queue, not one per caller.
    expect(clock.pending).toBe(1);
    await c.stop();
  });

  it("loses nothing to timers that fire late, as long as they are less than the bucket's depth late", async () => {
    const clock = new ManualClock();
    const limiter = limiterOn(clock, 2_000_000);
    const c = consumers(limiter, 10, 1 << 20);
    // Every timer fires up to 150 ms late (BURST_MS is 200): the tokens accrued meanwhile are still there.
    expect(BURST_MS).toBeGreaterThan(150);
    await clock.advance(10_000, 150);
    expect(c.total()).toBeLessThanOrEqual(20_000_000 + 2_000_000 * (BURST_MS / 1000));
    expect(c.total()).toBeGreaterThanOrEqual(20_000_000 - 40_000);
    await c.stop();
  });

  it("bounds a burst after a quiet spell to the bucket's depth (BURST_MS of the rate)", async () => {
    const clock = new ManualClock();
    const limiter = limiterOn(clock, 1_000_000);
    await clock.advance(60_000); // nobody asked for a minute
    let now = 0;
    for (let n = limiter.grantNow(1 << 20); n > 0; n = limiter.grantNow(1 << 20)) now += n;
    expect(now).toBe(1_000_000 * (BURST_MS / 1000));
  });

  it("costs nothing without a limit: grantNow gives all, take() is one shared resolved promise, no timer", async () => {
    const clock = new ManualClock();
    const limiter = limiterOn(clock, null);
    expect(limiter.grantNow(123_456_789)).toBe(123_456_789);
    const a = limiter.take(1 << 30);
    const b = limiter.take(5);
    expect(a).toBe(b);
    expect(await limiter.grant(7)).toBe(7);
    expect(clock.pending).toBe(0);
    expect(limiter.stats).toEqual({ rate: null, grantedBytes: 123_456_789 + (1 << 30) + 5 + 7, waiting: 0 });
  });

  it("take(n) pays a large n in turns, so a big request does not starve a small one", async () => {
    const clock = new ManualClock();
    const limiter = limiterOn(clock, 100_000); // a quantum of 2,000 B
    let bigDone = false;
    void limiter.take(1_000_000).then(() => (bigDone = true));
    const small = consumers(limiter, 1, 500);
    await clock.advance(1_000);
    expect(bigDone).toBe(false);
    // They alternate: 500 B for the small one per 2,000 B for the big one, within the second's 100,000 B.
    expect(small.total()).toBeGreaterThanOrEqual(18_000);
    expect(small.total()).toBeLessThanOrEqual(21_000);
    await small.stop();
    await clock.advance(11_000);
    expect(bigDone).toBe(true);
  });

  it("pace() cuts a stream's chunks to the grants and passes them through whole without a limit", async () => {
    const clock = new ManualClock();
    async function* source() {
      yield new Uint8Array(100_000).fill(1);
      yield new Uint8Array(10).fill(2);
    }
    const free = limiterOn(clock, null);
    const whole: number[] = [];
    for await (const chunk of free.pace(source())) whole.push(chunk.length);
    expect(whole).toEqual([100_000, 10]);

    const limiter = limiterOn(clock, 1_000_000, 16_384);
    const pieces: number[] = [];
    const run = (async () => {
      for await (const chunk of limiter.pace(source())) pieces.push(chunk.length);
    })();
    await clock.advance(1_000);
    await run;
    expect(pieces.reduce((a, b) => a + b, 0)).toBe(100_010);
    expect(Math.max(...pieces)).toBe(16_384);
  });

  it("takes a rate change at once, for the callers already waiting too (down, up, to no limit)", async () => {
    const clock = new ManualClock();
    const limiter = limiterOn(clock, 1_000_000);
    const c = consumers(limiter, 50, 1 << 20);
    await clock.advance(1_000);
    let before = c.total();
    limiter.setRate(250_000);
    await clock.advance(1_000);
    expect(c.total() - before).toBeGreaterThanOrEqual(250_000 - 5_000);
    expect(c.total() - before).toBeLessThanOrEqual(250_000 + 5_000);
    // Up from a slow rate: the waiting head is not held to the old rate's schedule.
    limiter.setRate(4);
    await clock.advance(1_000);
    before = c.total();
    limiter.setRate(5_000_000);
    await clock.advance(100);
    expect(c.total() - before).toBeGreaterThanOrEqual(500_000 - 65_536);
    expect(c.total() - before).toBeLessThanOrEqual(500_000);
    await c.stop();
    // To no limit: every waiter is answered now with all it asked for.
    limiter.setRate(4);
    const waiting = Array.from({ length: 50 }, () => limiter.grant(1 << 20));
    await clock.advance(1_000);
    const queued = limiter.stats.waiting; // 4 B/s: a few got a byte, the rest wait
    expect(queued).toBeGreaterThan(40);
    limiter.setRate(null);
    const answers = await Promise.all(waiting);
    expect(answers.filter((n) => n === 1 << 20)).toHaveLength(queued);
    expect(answers.filter((n) => n !== 1 << 20)).toEqual(new Array(50 - queued).fill(1));
    expect(clock.pending).toBe(0);
  });

  it("an aborted waiter leaves the queue and the next one is served in its place", async () => {
    const clock = new ManualClock();
    const limiter = limiterOn(clock, 50_000, 1_000);
    const controller = new AbortController();
    const first = limiter.grant(1_000, controller.signal);
    const second = limiter.grant(500);
    expect(limiter.stats.waiting).toBe(2);
    controller.abort(new Error("client went away"));
    await expect(first).rejects.toThrow("client went away");
    expect(limiter.stats.waiting).toBe(1);
    await clock.advance(500);
    expect(await second).toBe(500);
    expect(clock.pending).toBe(0);
    await expect(limiter.grant(1, AbortSignal.abort(new Error("already")))).rejects.toThrow("already");
  });

  it("refuses rates and grants that are not whole bytes", async () => {
    const clock = new ManualClock();
    for (const rate of [0, -1, 1.5, Number.NaN, 2 ** 53]) {
      expect(() => limiterOn(clock, rate), String(rate)).toThrow(RangeError);
    }
    await expect(limiterOn(clock, 10).grant(0)).rejects.toThrow(RangeError);
    await expect(limiterOn(clock, 10).grant(2.5)).rejects.toThrow(RangeError);
  });
});

// --- the governor's rates, followed live ------------------------------------------------------------------------

const MONDAY = Date.UTC(2024, 0, 1);
const at = (day: number, hh: number, mm: number) => MONDAY + ((day * 24 + hh) * 60 + mm) * 60_000;

function share(overrides: Partial<Config["share"]> = {}): Config["share"] {
  return { cpuPercent: 50, uploadBytesPerSecond: 0, downloadBytesPerSecond: 0, uploadWindows: [], ...overrides };
}

class FakeThermal extends EventEmitter<{ change: [ThermalState] }> implements ThermalSource {
  state: ThermalState = { throttled: false, temperatureC: 50, reason: "50 °C: below 75 °C" };
  set(throttled: boolean): void {
    this.state = { throttled, temperatureC: throttled ? 80 : 60, reason: throttled ? "80 °C: hot" : "60 °C: cool" };
    this.emit("change", this.state);
  }
}

describe("the download rate's windows, and the limiters following the governor", () => {
  it("a window's downloadBytesPerSecond, absent: the rate outside the windows; 0: no limit; fetching pauses when hot", () => {
    const windows: UploadWindow[] = [
      { from: "01:00", to: "07:00", bytesPerSecond: 0, downloadBytesPerSecond: 0 },
      { from: "18:00", to: "23:00", bytesPerSecond: 250_000 },
      { from: "12:00", to: "13:00", bytesPerSecond: 1_000, downloadBytesPerSecond: 9_000_000, days: ["sat"] },
    ];
    let now = at(0, 10, 0);
    const thermal = new FakeThermal();
    const governor = new ResourceGovernor({
      share: share({ uploadBytesPerSecond: 2_000_000, downloadBytesPerSecond: 3_000_000, uploadWindows: windows }),
      diskQuota: { share: 1 },
      thermal,
      now: () => now,
      localOffsetMinutes: () => 0,
    });
    expect(governor.limits()).toMatchObject({
      uploadBytesPerSecond: 2_000_000,
      downloadBytesPerSecond: 3_000_000,
      fetchAllowed: true,
      reason: "outside the upload windows: upload 2000000 B/s, download 3000000 B/s",
    });
    now = at(0, 3, 0);
    expect(governor.limits()).toMatchObject({ window: 0, uploadBytesPerSecond: null, downloadBytesPerSecond: null });
    now = at(0, 19, 0);
    expect(governor.limits()).toMatchObject({ window: 1, uploadBytesPerSecond: 250_000, downloadBytesPerSecond: 3e6 });
    now = at(5, 12, 30);
    expect(governor.limits()).toMatchObject({ window: 2, uploadBytesPerSecond: 1_000, downloadBytesPerSecond: 9e6 });
    thermal.set(true);
    // Hot: serving slowed to a quarter, fetching paused (its rate is what applies when it may run again).
    expect(governor.limits()).toMatchObject({
      uploadBytesPerSecond: 250,
      downloadBytesPerSecond: 9_000_000,
      fetchAllowed: false,
      scrubAllowed: false,
    });
    expect(governor.limits().reason).toMatch(/scrub, compute and fetching paused/);
  });

  it("followRate keeps the limiters at the governor's rates when the box gets hot, cools down, or a window begins", async () => {
    const clock = new ManualClock();
    let wall = at(0, 0, 59);
    const thermal = new FakeThermal();
    const governor = new ResourceGovernor({
      share: share({
        uploadBytesPerSecond: 1_000_000,
        downloadBytesPerSecond: 500_000,
        uploadWindows: [{ from: "01:00", to: "02:00", bytesPerSecond: 0, downloadBytesPerSecond: 2_000_000 }],
      }),
      diskQuota: { share: 1 },
      thermal,
      now: () => wall,
      localOffsetMinutes: () => 0,
      timers: { setInterval: () => 0, clearInterval: () => {} }, // checked by hand below
    });
    governor.start();
    const up = limiterOn(clock, null);
    const down = limiterOn(clock, null);
    const unfollow = [
      followRate(up, governor, (l) => l.uploadBytesPerSecond),
      followRate(down, governor, (l) => l.downloadBytesPerSecond),
    ];
    expect([up.rate, down.rate]).toEqual([1_000_000, 500_000]);

    const c = consumers(up, 20, 1 << 20);
    await clock.advance(1_000);
    thermal.set(true); // the governor emits "change" at once
    expect(up.rate).toBe(250_000);
    let before = c.total();
    await clock.advance(1_000);
    expect(c.total() - before).toBeGreaterThanOrEqual(250_000 - 5_000);
    expect(c.total() - before).toBeLessThanOrEqual(250_000 + 5_000);
    thermal.set(false);
    expect(up.rate).toBe(1_000_000);
    before = c.total();
    await clock.advance(1_000);
    expect(c.total() - before).toBeGreaterThanOrEqual(1_000_000 - 20_000);
    expect(c.total() - before).toBeLessThanOrEqual(1_000_000 + 20_000);

    await c.stop();
    wall = at(0, 1, 0);
    governor.check(); // the 30 s poll
    expect([up.rate, down.rate]).toEqual([null, 2_000_000]);
    unfollow.forEach((f) => f());
    governor.stop();
    thermal.set(true);
    expect(up.rate).toBeNull(); // no longer following
  });
});

// --- telemetry ------------------------------------------------------------------------------------------------

describe("WorkCounters", () => {
  it("shows served bytes, requests, refused orders, receipt lag and tasks in the collected telemetry", async () => {
    const work = new WorkCounters();
    work.request();
    work.request();
    work.request();
    work.served(65_536);
    work.served(1_000);
    work.orderRefused();
    work.setReceiptLag(4_194_304);
    work.setTasks(7, 2);
    work.taskFailed();
    const collector = new TelemetryCollector({
      paths: undefined,
      now: () => 42,
      sources: [{ telemetryCounters: () => ({ reconnects: 1 }) }, work],
    });
    const t = await collector.collect();
    expect(t).toMatchObject({
      ts: 42,
      reconnects: 1,
      served_bytes: 66_536,
      requests: 3,
      orders_refused: 1,
      receipt_lag_bytes: 4_194_304,
      tasks_queued: 7,
      tasks_running: 2,
      tasks_failed: 1,
    });
    for (const key of Object.keys(work.telemetryCounters())) expect(COUNTER_FIELDS).toContain(key);
    work.setReceiptLag(0);
    work.setTasks(0, 0);
    expect(await collector.collect()).toMatchObject({ receipt_lag_bytes: 0, tasks_queued: 0, tasks_running: 0 });
  });
});
