// agent/health/ on injected timers and clocks (no sleeping, nothing that depends on how fast the machine is): the
// thermal governor's hysteresis on a scripted temperature, the owner's upload windows (midnight, days, the week's
// wrap, a daylight-saving change) combined with throttling, the scrub paused and resumed, the watchdog keeper on the
// real sim board's device file, and sd_notify through the real systemd-notify into a real socket (socat).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { openBoard, type Board, type HardwareWatchdog } from "../board/board";
import { HostPaths } from "../board/host-paths";
import type { Config, UploadWindow } from "../agent/config/config";
import {
  activeWindow,
  localMinuteOfWeek,
  ResourceGovernor,
  THROTTLED_UPLOAD_WITHOUT_LIMIT,
  type ResourceLimits,
  type ThermalSource,
} from "../agent/health/resource-policy";
import { SdNotify, watchdogInterval } from "../agent/health/sd-notify";
import { ThermalGovernor, type ThermalState } from "../agent/health/thermal-governor";
import type { TimerHandle, Timers } from "../agent/health/timers";
import { petIntervalMs, UNKNOWN_TIMEOUT_PET_MS, WatchdogKeeper } from "../agent/health/watchdog-keeper";
import { ObjectStore } from "../agent/store/object-store";
import { Scrubber } from "../agent/store/scrub";
import { LogHub } from "../agent/util/log";
import { seededBytes as bytes } from "./helpers/random";
import { waitFor } from "./helpers/wait";

/** Timers driven by hand on a clock of their own (milliseconds, monotonic). */
class ManualTimers implements Timers {
  now = 1_000_000;
  private seq = 0;
  private readonly timers = new Map<number, { fn: () => unknown; ms: number; due: number }>();

  setInterval = (fn: () => unknown, ms: number): TimerHandle => {
    const id = ++this.seq;
    this.timers.set(id, { fn, ms, due: this.now + ms });
    return id;
  };

  clearInterval = (handle: TimerHandle): void => {
    this.timers.delete(handle as number);
  };

  get count(): number {
    return this.timers.size;
  }

  /** Time passes with the event loop free: every timer fires when due, in order, and its work is awaited. */
  async advance(ms: number): Promise<void> {
    const end = this.now + ms;
    for (;;) {
      const next = [...this.timers.values()].filter((t) => t.due <= end).sort((a, b) => a.due - b.due)[0];
      if (!next) break;
      this.now = Math.max(this.now, next.due);
      next.due = this.now + next.ms;
      await next.fn();
    }
    this.now = end;
  }

  /** The event loop is blocked for `ms`: nothing runs; then each overdue timer fires once, the longest overdue first. */
  async block(ms: number): Promise<void> {
    this.now += ms;
    const overdue = [...this.timers.values()].filter((t) => t.due <= this.now).sort((a, b) => a.due - b.due);
    for (const t of overdue) {
      t.due = this.now + t.ms;
      await t.fn();
    }
  }
}

function captureLogs(): { hub: LogHub; lines: string[] } {
  const lines: string[] = [];
  const hub = new LogHub({ write: (line) => lines.push(line.trimEnd()) }, "debug", () => 0);
  return { hub, lines };
}

let tmp = "";
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), "sharenode-health-"));
});
afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});
let n = 0;
const freshDir = (name: string) => {
  const dir = join(tmp, `${name}-${n++}`);
  mkdirSync(dir, { recursive: true });
  return dir;
};

// --- the thermal governor ------------------------------------------------------------------------------------

/** A board whose temperature follows a script, one value per reading (undefined: unreadable). */
function scriptedBoard(script: (number | undefined)[], limits = { pauseAtC: 75, resumeAtC: 65 }) {
  const readings = [...script];
  return {
    thermalLimits: limits,
    reads: 0,
    async readTemperatureC(): Promise<number | undefined> {
      this.reads++;
      if (readings.length === 0) throw new Error("the script ran out");
      return readings.shift();
    },
  };
}

describe("ThermalGovernor", () => {
  it("throttles at pauseAtC, stays throttled while the temperature hovers between the limits, resumes at resumeAtC", async () => {
    const { hub, lines } = captureLogs();
    const timers = new ManualTimers();
    const board = scriptedBoard([50, 74.9, 75, 72, 68, 65.5, 65, 70, 74, 80, 90]);
    const governor = new ThermalGovernor({ board, log: hub.logger("thermal"), timers, intervalMs: 10_000 });
    const changes: ThermalState[] = [];
    governor.on("change", (s) => changes.push(s));

    await governor.start(); // the first reading at once: 50
    expect(board.reads).toBe(1);
    expect(governor.state).toMatchObject({ throttled: false, temperatureC: 50 });
    const seen: boolean[] = [governor.throttled];
    for (let i = 0; i < 10; i++) {
      await timers.advance(10_000);
      seen.push(governor.throttled);
    }
    expect(board.reads).toBe(11);
    //            50     74.9   75    72    68    65.5  65     70     74     80    90
    expect(seen).toEqual([false, false, true, true, true, true, false, false, false, true, true]);
    expect(changes.map((c) => [c.throttled, c.temperatureC])).toEqual([
      [true, 75],
      [false, 65],
      [true, 80],
    ]);
    expect(changes[0]!.reason).toMatch(/75 °C: throttled at 75 °C, resumes at or below 65 °C/);
    expect(lines.filter((l) => / warn /.test(l))).toHaveLength(2); // two throttle starts
    expect(lines.filter((l) => /throttling ends: cooled to 65 °C/.test(l))).toHaveLength(1);

    governor.stop();
    expect(timers.count).toBe(0);
  });

  it("keeps the state it has while the temperature cannot be read, and says so once", async () => {
    const { hub, lines } = captureLogs();
    const timers = new ManualTimers();
    // Hot, then the sensor fails (three readings), then it reads 60: only that reading may resume the work.
    const board = scriptedBoard([80, undefined, undefined, Number.NaN, 60, undefined, 90]);
    const governor = new ThermalGovernor({ board, log: hub.logger("thermal"), timers, intervalMs: 1000 });
    const changes: boolean[] = [];
    governor.on("change", (s) => changes.push(s.throttled));
    await governor.start();
    expect(governor.throttled).toBe(true);
    for (let i = 0; i < 3; i++) {
      await timers.advance(1000);
      expect(governor.throttled).toBe(true);
      expect(governor.state.temperatureC).toBeUndefined();
      expect(governor.state.reason).toMatch(/unreadable/);
    }
    expect(lines.filter((l) => /temperature unreadable: staying throttled/.test(l))).toHaveLength(1);
    await timers.advance(1000);
    expect(governor.throttled).toBe(false);
    expect(lines.filter((l) => /temperature readable again: 60 °C/.test(l))).toHaveLength(1);
    // Unreadable while cool: stays cool (work is not paused for good on a flaky sensor), one more line.
    await timers.advance(1000);
    expect(governor.throttled).toBe(false);
    expect(lines.filter((l) => /temperature unreadable: staying unthrottled/.test(l))).toHaveLength(1);
    await timers.advance(1000);
    expect(governor.throttled).toBe(true);
    expect(changes).toEqual([true, false, true]);
    governor.stop();
  });

  it("survives a board that throws and a listener that throws", async () => {
    const { hub, lines } = captureLogs();
    const board = {
      thermalLimits: { pauseAtC: 70, resumeAtC: 60 },
      temps: [Promise.reject(new Error("EIO")), Promise.resolve(99)],
      readTemperatureC(): Promise<number | undefined> {
        return this.temps.shift()!;
      },
    };
    board.temps[0]!.catch(() => {});
    const governor = new ThermalGovernor({ board, log: hub.logger("thermal"), timers: new ManualTimers() });
    governor.on("change", () => {
      throw new Error("listener broke");
    });
    await governor.sample();
    expect(governor.throttled).toBe(false);
    await governor.sample();
    expect(governor.throttled).toBe(true);
    expect(lines.some((l) => /a thermal change listener failed: listener broke/.test(l))).toBe(true);
  });
});

// --- the resource policy -------------------------------------------------------------------------------------

// Monday 1 January 2024, 00:00 UTC.
const MONDAY = Date.UTC(2024, 0, 1);
const at = (day: number, hh: number, mm: number, offsetMinutes = 0) =>
  new Date(MONDAY + ((day * 24 + hh) * 60 + mm - offsetMinutes) * 60_000);

function share(overrides: Partial<Config["share"]> = {}): Config["share"] {
  return { cpuPercent: 50, uploadBytesPerSecond: 0, downloadBytesPerSecond: 0, uploadWindows: [], ...overrides };
}

class FakeThermal extends EventEmitter<{ change: [ThermalState] }> implements ThermalSource {
  state: ThermalState = { throttled: false, temperatureC: 50, reason: "50 °C: below 75 °C" };
  set(throttled: boolean, c: number): void {
    this.state = {
      throttled,
      temperatureC: c,
      reason: throttled ? `${c} °C: throttled at 75 °C, resumes at or below 65 °C` : `${c} °C: below 75 °C`,
    };
    this.emit("change", this.state);
  }
}

describe("upload windows and the resource governor", () => {
  it("turns an instant into the minute of the local week", () => {
    expect(localMinuteOfWeek(new Date(MONDAY), 0)).toBe(0);
    expect(localMinuteOfWeek(at(2, 13, 45), 0)).toBe(2 * 1440 + 13 * 60 + 45);
    // Sunday 23:30 UTC is Monday 00:30 in UTC+1, and Monday 00:30 UTC is Sunday 19:30 in UTC-5.
    expect(localMinuteOfWeek(at(6, 23, 30), 60)).toBe(30);
    expect(localMinuteOfWeek(at(7, 0, 30), -300)).toBe(6 * 1440 + 19 * 60 + 30);
    expect(localMinuteOfWeek(at(3, 8, 0, 330), 330)).toBe(3 * 1440 + 8 * 60); // India: +5:30
  });

  it("a window that crosses midnight belongs to the day it starts on; half-open at minute resolution", () => {
    const windows: UploadWindow[] = [{ from: "22:00", to: "06:00", bytesPerSecond: 1, days: ["fri"] }];
    const m = (day: number, hh: number, mm: number) => localMinuteOfWeek(at(day, hh, mm), 0);
    expect(activeWindow(windows, m(4, 21, 59))).toBeUndefined(); // Friday 21:59
    expect(activeWindow(windows, m(4, 22, 0))).toBe(0);
    expect(activeWindow(windows, m(4, 23, 59))).toBe(0);
    expect(activeWindow(windows, m(5, 0, 0))).toBe(0); // Saturday, after midnight
    expect(activeWindow(windows, m(5, 5, 59))).toBe(0);
    expect(activeWindow(windows, m(5, 6, 0))).toBeUndefined();
    expect(activeWindow(windows, m(5, 22, 30))).toBeUndefined(); // Saturday night: not a window day
    expect(activeWindow(windows, m(3, 23, 0))).toBeUndefined(); // Thursday night
    expect(activeWindow(windows, m(4, 3, 0))).toBeUndefined(); // Friday morning belongs to Thursday's window
  });

  it("Sunday's window runs into Monday morning across the week's wrap; a whole day is 00:00 to 24:00", () => {
    const windows: UploadWindow[] = [
      { from: "23:00", to: "01:00", bytesPerSecond: 1, days: ["sun"] },
      { from: "00:00", to: "24:00", bytesPerSecond: 2, days: ["wed"] },
    ];
    const m = (day: number, hh: number, mm: number) => localMinuteOfWeek(at(day, hh, mm), 0);
    expect(activeWindow(windows, m(6, 23, 0))).toBe(0);
    expect(activeWindow(windows, m(0, 0, 30))).toBe(0); // Monday 00:30
    expect(activeWindow(windows, m(0, 1, 0))).toBeUndefined();
    expect(activeWindow(windows, m(1, 23, 59))).toBeUndefined(); // Tuesday
    expect(activeWindow(windows, m(2, 0, 0))).toBe(1);
    expect(activeWindow(windows, m(2, 23, 59))).toBe(1);
    expect(activeWindow(windows, m(3, 0, 0))).toBeUndefined();
  });

  it("limits(): the window's rate or the default, 0 meaning no limit; disk quota and CPU share from the config", () => {
    const windows: UploadWindow[] = [
      { from: "01:00", to: "07:00", bytesPerSecond: 0 },
      { from: "18:00", to: "23:00", bytesPerSecond: 250_000, days: ["mon", "tue", "wed", "thu", "fri"] },
    ];
    const governor = new ResourceGovernor({
      share: share({ cpuPercent: 30, uploadBytesPerSecond: 2_000_000, uploadWindows: windows }),
      diskQuota: { share: 0.8 },
      localOffsetMinutes: () => 0,
    });
    const noon = governor.limits(at(0, 12, 0));
    expect(noon).toEqual<ResourceLimits>({
      uploadBytesPerSecond: 2_000_000,
      downloadBytesPerSecond: null,
      fetchAllowed: true,
      cpuPercent: 30,
      scrubAllowed: true,
      computeAllowed: true,
      diskQuota: { share: 0.8 },
      throttled: false,
      window: undefined,
      reason: "outside the upload windows: upload 2000000 B/s",
    });
    expect(governor.limits(at(0, 3, 0))).toMatchObject({
      uploadBytesPerSecond: null,
      window: 0,
      reason: "upload window 0 (01:00-07:00): no upload limit",
    });
    expect(governor.limits(at(4, 19, 0))).toMatchObject({ uploadBytesPerSecond: 250_000, window: 1 });
    expect(governor.limits(at(5, 19, 0))).toMatchObject({ uploadBytesPerSecond: 2_000_000, window: undefined }); // Saturday
    // No windows and the default rate 0: no limit at all.
    expect(new ResourceGovernor({ share: share(), diskQuota: { bytes: 10 } }).limits()).toMatchObject({
      uploadBytesPerSecond: null,
      diskQuota: { bytes: 10 },
    });
  });

  it("follows the local wall clock through a daylight-saving change (the offset function is the only calendar)", () => {
    // Central Europe on 31 March 2024: 02:00 CET (01:00 UTC) becomes 03:00 CEST.
    const switchAt = Date.UTC(2024, 2, 31, 1, 0);
    const offset = (d: Date) => (d.getTime() < switchAt ? 60 : 120);
    const governor = new ResourceGovernor({
      share: share({ uploadBytesPerSecond: 100, uploadWindows: [{ from: "01:30", to: "03:30", bytesPerSecond: 900 }] }),
      diskQuota: { share: 1 },
      localOffsetMinutes: offset,
    });
    const utc = (hh: number, mm: number) => new Date(Date.UTC(2024, 2, 31, hh, mm));
    expect(governor.limits(utc(0, 29)).window).toBeUndefined(); // 01:29 CET
    expect(governor.limits(utc(0, 30)).window).toBe(0); // 01:30 CET
    expect(governor.limits(utc(0, 59)).window).toBe(0); // 01:59 CET
    expect(governor.limits(utc(1, 0)).window).toBe(0); // 03:00 CEST: the hour 02:00-03:00 did not happen
    expect(governor.limits(utc(1, 29)).window).toBe(0); // 03:29 CEST
    expect(governor.limits(utc(1, 30)).window).toBeUndefined(); // 03:30 CEST: one real hour after it began
  });

  it("throttled: scrub and compute paused, serving at a quarter (or a quarter of 100 Mbit/s without a limit)", () => {
    const thermal = new FakeThermal();
    thermal.state = {
      throttled: true,
      temperatureC: 81,
      reason: "81 °C: throttled at 75 °C, resumes at or below 65 °C",
    };
    const windows: UploadWindow[] = [{ from: "01:00", to: "07:00", bytesPerSecond: 5_000_001 }];
    const governor = new ResourceGovernor({
      share: share({ uploadWindows: windows }),
      diskQuota: { share: 1 },
      thermal,
      localOffsetMinutes: () => 0,
    });
    const night = governor.limits(at(1, 2, 0));
    expect(night).toMatchObject({
      throttled: true,
      scrubAllowed: false,
      computeAllowed: false,
      cpuPercent: 50,
      uploadBytesPerSecond: 1_250_000,
      window: 0,
    });
    expect(Number.isInteger(night.uploadBytesPerSecond)).toBe(true);
    expect(night.reason).toBe(
      "throttled (81 °C: throttled at 75 °C, resumes at or below 65 °C): scrub, compute and fetching paused, upload 1250000 B/s (upload window 0 (01:00-07:00): upload 5000001 B/s)",
    );
    expect(governor.limits(at(1, 12, 0)).uploadBytesPerSecond).toBe(THROTTLED_UPLOAD_WITHOUT_LIMIT);
    expect(THROTTLED_UPLOAD_WITHOUT_LIMIT).toBe(3_125_000);
  });

  it('emits "change" when a window begins or ends (polled) and at once when the thermal state changes', async () => {
    const timers = new ManualTimers();
    let now = at(0, 0, 58).getTime(); // Monday 00:58
    const thermal = new FakeThermal();
    const governor = new ResourceGovernor({
      share: share({
        uploadBytesPerSecond: 1000,
        uploadWindows: [{ from: "01:00", to: "02:00", bytesPerSecond: 8000 }],
      }),
      diskQuota: { share: 1 },
      thermal,
      now: () => now,
      localOffsetMinutes: () => 0,
      timers,
      checkEveryMs: 30_000,
    });
    const changes: ResourceLimits[] = [];
    governor.on("change", (l) => changes.push(l));
    governor.start();
    const tick = async () => {
      now += 30_000;
      await timers.advance(30_000);
    };
    for (let i = 0; i < 4; i++) await tick(); // 01:00 reached on the fourth check
    expect(changes.map((c) => c.uploadBytesPerSecond)).toEqual([8000]);
    thermal.set(true, 80);
    expect(changes.map((c) => [c.uploadBytesPerSecond, c.throttled, c.scrubAllowed])).toEqual([
      [8000, false, true],
      [2000, true, false],
    ]);
    for (let i = 0; i < 10; i++) await tick(); // no change while nothing changes
    expect(changes).toHaveLength(2);
    thermal.set(false, 64);
    now = at(0, 2, 0).getTime() - 1;
    await timers.advance(30_000);
    expect(changes.at(-1)).toMatchObject({ throttled: false, window: 0 });
    now += 1;
    await timers.advance(30_000);
    expect(changes.at(-1)).toMatchObject({ window: undefined, uploadBytesPerSecond: 1000 });
    expect(changes).toHaveLength(4);
    governor.stop();
    thermal.set(true, 90);
    expect(changes).toHaveLength(4);
    expect(timers.count).toBe(0);
  });
});

// --- the scrub, paused --------------------------------------------------------------------------------------

async function* once(data: Uint8Array): AsyncIterable<Uint8Array> {
  yield data;
}

describe("Scrubber pause and resume", () => {
  let store: ObjectStore;
  beforeEach(async () => {
    store = new ObjectStore(
      { dataDir: freshDir("store"), quota: { bytes: 1 << 30 }, reserveBytes: 0 },
      { now: () => Date.now() },
    );
    await store.start();
    for (let i = 0; i < 4; i++) await store.ingest(once(bytes(100_000, 10 + i)));
  });
  afterEach(async () => {
    await store.stop();
  });

  it("holds a pass between reads while paused; the pause does not count towards the pacing", async () => {
    let now = 0;
    let reads = 0;
    const sleeps: number[] = [];
    const scrubber = new Scrubber(store, {
      bytesPerSecond: 50_000,
      now: () => now,
      sleep: async (ms) => {
        sleeps.push(ms);
        now += ms;
      },
    });
    const verify = store.verifyFiles.bind(store);
    store.verifyFiles = (id, length, onRead) => {
      reads++;
      return verify(id, length, onRead);
    };
    scrubber.pause();
    expect(scrubber.paused).toBe(true);
    const pass = scrubber.runOnce();
    let done = false;
    void pass.then(() => (done = true));
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    expect(reads).toBe(0);
    expect(done).toBe(false);
    // An hour passes while it is held.
    now += 3_600_000;
    scrubber.resume();
    const report = await pass;
    expect(reads).toBe(4);
    expect(report).toMatchObject({ checked: 4, bytes: 400_000, corrupt: [], missing: [] });
    // 400,000 bytes at 50,000 B/s: 8 s of pacing, as without the pause (no burst to "catch up" the hour).
    expect(sleeps.reduce((a, b) => a + b, 0)).toBeCloseTo(8000, 6);
    expect(now).toBeCloseTo(3_608_000, 6);
  });

  it("pauses in the middle of a pass (inside an object) and stop() ends a paused pass", async () => {
    let now = 0;
    const scrubber: Scrubber = new Scrubber(store, {
      bytesPerSecond: 1_000_000,
      now: () => now,
      sleep: async (ms) => {
        now += ms;
        // Hot after the first 100,000 bytes' worth of pacing.
        if (now >= 100) scrubber.pause();
      },
    });
    const pass = scrubber.runOnce();
    await waitFor("the scrub to pause itself", () => scrubber.paused || undefined);
    scrubber.stop();
    const report = await pass;
    expect(report.checked).toBeLessThan(4);
    expect(report.corrupt).toEqual([]);
    // Nothing was judged from a half-read object, and everything is still stored.
    expect(store.list()).toHaveLength(4);
  });
});

// --- the watchdog keeper -------------------------------------------------------------------------------------

/** The sim board (board/sim-board.ts): /dev/watchdog is a plain file, a NUL byte per pet, "V" for a magic close. */
async function simBoard(): Promise<{ board: Board; device: string; root: string; problems: string[] }> {
  const root = freshDir("sim");
  const problems: string[] = [];
  const board = await openBoard({
    paths: new HostPaths("/nonexistent"),
    name: "sim",
    simRoot: root,
    onProblem: (l) => problems.push(l),
  });
  return { board, device: join(root, "dev", "watchdog"), root, problems };
}

const pets = (device: string) => [...readFileSync(device, "latin1")].filter((c) => c === "\0").length;

describe("WatchdogKeeper", () => {
  it("pets at a third of the driver's timeout, 2 s when it does not say", () => {
    expect(petIntervalMs(30)).toBe(10_000);
    expect(petIntervalMs(15)).toBe(5000);
    expect(petIntervalMs(60)).toBe(20_000);
    expect(petIntervalMs(1)).toBe(333);
    expect(petIntervalMs(undefined)).toBe(UNKNOWN_TIMEOUT_PET_MS);
    expect(UNKNOWN_TIMEOUT_PET_MS).toBe(2000);
    for (const t of [1, 2, 5, 8, 15, 30, 60, 600]) expect(petIntervalMs(t)).toBeLessThanOrEqual((t * 1000) / 2);
  });

  it("pets the sim board's device while healthy, skips while the loop is blocked or the check fails, closes with V", async () => {
    const { hub, lines } = captureLogs();
    const timers = new ManualTimers();
    const { board, device } = await simBoard();
    let problem: string | undefined;
    const keeper = new WatchdogKeeper({
      board,
      healthy: () => problem,
      log: hub.logger("watchdog"),
      timers,
      now: () => timers.now,
    });
    await keeper.start();
    // The sim's driver says 30 s: a pet every 10 s, the first at once.
    expect(keeper.status).toMatchObject({
      device: expect.stringMatching(/\/dev\/watchdog$/),
      timeoutSeconds: 30,
      petIntervalMs: 10_000,
      pets: 1,
    });
    expect(pets(device)).toBe(1);
    await timers.advance(30_000);
    expect(pets(device)).toBe(4);

    // The loop blocked for 12 s: the pet that runs when it is free again is skipped; then petting resumes.
    await timers.block(12_000);
    expect(pets(device)).toBe(4);
    expect(keeper.status.skipping).toMatch(/event loop ran 1\d\.\d s late/);
    await timers.advance(10_000);
    expect(pets(device)).toBe(5);
    expect(keeper.status.skipping).toBeUndefined();

    // A pet that runs before the loop's own tick (the tick is overdue right now) sees the block too.
    timers.now += 8000;
    await keeper.petIfHealthy();
    expect(pets(device)).toBe(5);
    await timers.advance(10_000);
    expect(pets(device)).toBe(6);

    // The agent's own check fails: no pets for as long as it fails, one warning for all of them.
    problem = "a telemetry round has been stuck for 130 s";
    await timers.advance(60_000);
    expect(pets(device)).toBe(6);
    problem = undefined;
    await timers.advance(10_000);
    expect(pets(device)).toBe(7);
    expect(lines.filter((l) => /not petting .*watchdog: event loop ran/.test(l))).toHaveLength(2);
    expect(lines.filter((l) => /not petting .*watchdog: a telemetry round has been stuck/.test(l))).toHaveLength(1);
    expect(lines.filter((l) => /healthy again/.test(l))).toHaveLength(3);

    // A clean stop: the magic "V" is the last byte; nothing is written after it.
    await keeper.stop();
    const after = readFileSync(device, "latin1");
    expect(after.at(-1)).toBe("V");
    expect(after.slice(0, -1)).toMatch(/^\0+$/);
    expect(timers.count).toBe(0);
    await timers.advance(60_000);
    expect(readFileSync(device, "latin1")).toBe(after);
  });

  it("a driver that does not say its timeout is petted every 2 s", async () => {
    const { hub } = captureLogs();
    const timers = new ManualTimers();
    const { board, device, root } = await simBoard();
    unlinkSync(join(root, "sys", "class", "watchdog", "watchdog0", "timeout"));
    const keeper = new WatchdogKeeper({
      board,
      healthy: () => undefined,
      log: hub.logger("watchdog"),
      timers,
      now: () => timers.now,
    });
    await keeper.start();
    expect(keeper.status).toMatchObject({ timeoutSeconds: undefined, petIntervalMs: 2000 });
    await timers.advance(10_000);
    expect(pets(device)).toBe(6);
    await keeper.stop();
  });

  it("a watchdog that cannot be opened is one warning (the board's), and the keeper runs without it", async () => {
    const { hub, lines } = captureLogs();
    const timers = new ManualTimers();
    const { board, device, problems } = await simBoard();
    unlinkSync(device);
    mkdirSync(device); // open(O_WRONLY) on a directory: EISDIR
    const keeper = new WatchdogKeeper({
      board,
      healthy: () => undefined,
      log: hub.logger("watchdog"),
      timers,
      now: () => timers.now,
    });
    await keeper.start();
    expect(problems).toEqual([expect.stringMatching(/^cannot open watchdog .*\/dev\/watchdog: /)]);
    expect(lines).toEqual([expect.stringMatching(/info  watchdog: running without a hardware watchdog$/)]);
    expect(keeper.status).toMatchObject({ device: undefined, pets: 0 });
    expect(timers.count).toBe(0);
    await keeper.stop();

    // A board that breaks its contract and throws: one warning line, no crash.
    const throwing = new WatchdogKeeper({
      board: { openWatchdog: () => Promise.reject(new Error("EBUSY: held by procd")) },
      healthy: () => undefined,
      log: hub.logger("watchdog"),
      timers,
    });
    await throwing.start();
    expect(lines.at(-1)).toMatch(/warn  watchdog: hardware watchdog not used: EBUSY: held by procd$/);
  });

  it("a pet that fails is logged once until one works again", async () => {
    const { hub, lines } = captureLogs();
    const timers = new ManualTimers();
    const written: string[] = [];
    let failing = true;
    const watchdog: HardwareWatchdog = {
      device: "/dev/watchdog1",
      timeoutSeconds: 3,
      pet: async () => {
        if (failing) throw new Error("EIO");
        written.push("pet");
      },
      close: async (magic) => {
        written.push(magic ? "V" : "close");
      },
    };
    const keeper = new WatchdogKeeper({
      board: { openWatchdog: async () => watchdog },
      healthy: () => undefined,
      log: hub.logger("watchdog"),
      timers,
      now: () => timers.now,
    });
    await keeper.start();
    await timers.advance(5000);
    expect(lines.filter((l) => /pet failed: EIO/.test(l))).toHaveLength(1);
    failing = false;
    await timers.advance(1000);
    expect(lines.filter((l) => /petting works again/.test(l))).toHaveLength(1);
    await keeper.stop();
    expect(written.at(-1)).toBe("V");
  });
});

// --- sd_notify -----------------------------------------------------------------------------------------------

function requireTool(command: string, args: string[], pkg: string): void {
  if (spawnSync(command, args, { stdio: "ignore" }).error !== undefined) {
    throw new Error(`${command} is not installed: apt-get install ${pkg} (the Debian package ${pkg})`);
  }
}

/** A real notification socket: socat receives the datagrams and appends them to a file. */
class Receiver {
  readonly output: string;
  private readonly proc: ChildProcess;
  private log = "";

  constructor(
    readonly address: string,
    dir: string,
  ) {
    this.output = join(dir, `received-${n++}`);
    const listen = address.startsWith("@") ? `ABSTRACT-RECV:${address.slice(1)}` : `UNIX-RECV:${address}`;
    this.proc = spawn("socat", ["-u", listen, `OPEN:${this.output},creat,append`], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    this.proc.stderr!.on("data", (d: Buffer) => (this.log += d.toString()));
  }

  /** Until the socket exists: a path socket shows as a file; an abstract one in /proc/net/unix. */
  async ready(): Promise<void> {
    await waitFor(`socat listening on ${this.address} (${this.log})`, () => {
      if (this.address.startsWith("@"))
        return readFileSync("/proc/net/unix", "utf8").includes(` ${this.address}\n`) || undefined;
      return existsSync(this.address) || undefined;
    });
  }

  get text(): string {
    return existsSync(this.output) ? readFileSync(this.output, "utf8") : "";
  }

  /** Datagrams from systemd-notify have no trailing newline, so the file is the fields run together: split them. */
  fields(): string[] {
    return this.text.split(/(?=(?:READY|STATUS|MAINPID|WATCHDOG|STOPPING|BARRIER|ERRNO)=)|\n/).filter((f) => f !== "");
  }

  async waitFor(field: string): Promise<string[]> {
    return waitFor(`${field} at the socket; got ${JSON.stringify(this.text)}`, () =>
      this.fields().includes(field) ? this.fields() : undefined,
    );
  }

  stop(): void {
    if (this.proc.exitCode === null) this.proc.kill("SIGTERM");
  }
}

describe("SdNotify", () => {
  const receivers: Receiver[] = [];
  beforeAll(() => {
    // Missing tools fail the tests, never skip them.
    requireTool("socat", ["-V"], "socat");
    requireTool("systemd-notify", ["--version"], "systemd");
  });
  afterAll(() => {
    for (const r of receivers) r.stop();
  });
  const receiver = async (address: string) => {
    const r = new Receiver(address, freshDir("notify"));
    receivers.push(r);
    await r.ready();
    return r;
  };

  it("does nothing without NOTIFY_SOCKET; takes half of WATCHDOG_USEC, only when it is meant for this PID", async () => {
    const { hub } = captureLogs();
    const calls: string[][] = [];
    const sd = new SdNotify({
      env: {},
      healthy: () => undefined,
      log: hub.logger("systemd"),
      exec: async (_c, args) => void calls.push(args),
    });
    expect(sd.enabled).toBe(false);
    await sd.ready("online");
    await sd.status("x");
    await sd.ping();
    await sd.stopping();
    expect(calls).toEqual([]);
    expect(watchdogInterval({ WATCHDOG_USEC: "60000000" }, 42)).toBe(30_000);
    expect(watchdogInterval({ WATCHDOG_USEC: "60000000", WATCHDOG_PID: "42" }, 42)).toBe(30_000);
    expect(watchdogInterval({ WATCHDOG_USEC: "60000000", WATCHDOG_PID: "43" }, 42)).toBeUndefined();
    expect(watchdogInterval({ WATCHDOG_USEC: "soon" }, 42)).toBeUndefined();
    expect(watchdogInterval({}, 42)).toBeUndefined();
  });

  it("READY=1, WATCHDOG=1 at half of WATCHDOG_USEC while healthy, STOPPING=1: through the real systemd-notify into a socket", async () => {
    const { hub, lines } = captureLogs();
    const r = await receiver(join(freshDir("sock"), "notify.sock"));
    const timers = new ManualTimers();
    let problem: string | undefined;
    const sd = new SdNotify({
      env: { ...process.env, NOTIFY_SOCKET: r.address, WATCHDOG_USEC: "20000000" },
      pid: 4242,
      healthy: () => problem,
      log: hub.logger("systemd"),
      timers,
      now: () => timers.now,
      // socat keeps the barrier's descriptor and never answers it as systemd does (see the next test).
      barrier: false,
    });
    expect(sd.watchdogIntervalMs).toBe(10_000);
    await sd.ready("online; store running");
    expect(await r.waitFor("READY=1")).toEqual(["READY=1", "STATUS=online; store running", "MAINPID=4242"]);
    await timers.advance(20_000);
    expect(await r.waitFor("WATCHDOG=1")).toContain("WATCHDOG=1");
    expect(sd.stats.watchdog).toBe(2);

    problem = "a telemetry round has been stuck for 130 s";
    await timers.advance(30_000);
    expect(sd.stats.watchdog).toBe(2);
    problem = undefined;
    await timers.advance(10_000);
    expect(sd.stats.watchdog).toBe(3);
    await timers.block(12_000);
    expect(sd.stats.watchdog).toBe(3);
    expect(lines.filter((l) => /not sending WATCHDOG=1 to systemd: a telemetry round/.test(l))).toHaveLength(1);
    expect(
      lines.filter((l) => /not sending WATCHDOG=1 to systemd: event loop ran 1\d\.\d s late/.test(l)),
    ).toHaveLength(1);

    await sd.status("offline; store running");
    await sd.stopping("stopping: SIGTERM");
    const fields = await r.waitFor("STOPPING=1");
    expect(fields.filter((f) => f === "WATCHDOG=1")).toHaveLength(3);
    expect(fields.slice(-3)).toEqual(["STATUS=offline; store running", "STOPPING=1", "STATUS=stopping: SIGTERM"]);
    expect(fields.indexOf("READY=1")).toBe(0);
    expect(fields.indexOf("WATCHDOG=1")).toBeGreaterThan(fields.indexOf("READY=1"));
    // Nothing after STOPPING: the pings have ended.
    expect(timers.count).toBe(0);
    await timers.advance(60_000);
    await sd.ping();
    expect(sd.stats).toEqual({ ready: 1, watchdog: 3, status: 1, stopping: 1 });
    expect(lines.filter((l) => /sd_notify/.test(l))).toEqual([]);
  });

  it('an abstract socket ("@name") works the same way', async () => {
    const { hub } = captureLogs();
    const r = await receiver(`@sharenode-test-${process.pid}-${n++}`);
    const sd = new SdNotify({
      env: { ...process.env, NOTIFY_SOCKET: r.address },
      healthy: () => undefined,
      log: hub.logger("systemd"),
      barrier: false,
    });
    await sd.ready("online");
    await sd.stopping();
    expect(await r.waitFor("STOPPING=1")).toEqual([
      "READY=1",
      "STATUS=online",
      `MAINPID=${process.pid}`,
      "STOPPING=1",
      "STATUS=stopping",
    ]);
    expect(sd.watchdogIntervalMs).toBeUndefined();
  });

  it("by default systemd-notify waits for the manager to take the message (BARRIER); a receiver that never does costs one warning", async () => {
    const { hub, lines } = captureLogs();
    const r = await receiver(join(freshDir("sock"), "notify.sock"));
    const sd = new SdNotify({
      env: { ...process.env, NOTIFY_SOCKET: r.address },
      healthy: () => undefined,
      log: hub.logger("systemd"),
    });
    await sd.ready("online");
    // The message arrived; then systemd-notify's barrier (a pipe systemd closes once it has read the message) timed out.
    expect(await r.waitFor("BARRIER=1")).toContain("READY=1");
    expect(lines).toEqual([expect.stringMatching(/warn  systemd: sd_notify READY=1: Failed to invoke barrier: /)]);
  }, 20_000);

  it("a missing systemd-notify is one warning naming the Debian package", async () => {
    const { hub, lines } = captureLogs();
    const sd = new SdNotify({
      env: { NOTIFY_SOCKET: "/run/nothing" },
      command: join(tmp, "no-systemd-notify"),
      healthy: () => undefined,
      log: hub.logger("systemd"),
    });
    await sd.ready("online");
    await sd.status("again");
    expect(lines).toEqual([
      expect.stringMatching(
        /warn  systemd: sd_notify READY=1: .*no-systemd-notify not found \(Debian package systemd\)$/,
      ),
    ]);
  });
});
