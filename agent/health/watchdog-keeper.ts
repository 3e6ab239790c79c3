// Keeps the board's hardware watchdog petted while the agent is healthy, so a box whose agent hangs (a blocked
// event loop, a filesystem stuck on a dying USB disk) resets itself instead of sitting dead in a cupboard.
//
// Petting interval: a third of the driver's timeout, so one late or skipped pet never resets the box but three in
// a row do. A driver that does not say its timeout (the 3.10 vendor kernels have no sysfs `timeout`, and Node
// cannot ask with WDIOC_GETTIMEOUT) gets a pet every 2 s: a guess of 60 s would pet every 20 s and reset a
// Raspberry Pi (bcm2835: 15 s at most) or an Amlogic box (meson: under 10 s), while a write of one byte every
// 2 s costs nothing.
//
// Health: before each pet the keeper asks its LoopLag probe how late the event loop ran since the last pet and
// the composition root's check (`healthy`); a loop late by more than `maxLagMs` or a failed check skips the pet
// (logged once, and once again when petting resumes). A one-off stall skips one pet; a lasting one lets the
// hardware reset the box.
//
// A clean stop closes with the magic character, which disarms drivers without nowayout; a crash closes without it
// and the box resets unless something else pets. Opening fails where another process owns the device (procd on
// OpenWrt, systemd with RuntimeWatchdogSec=): one warning, and the agent runs on without it.
import type { Board, HardwareWatchdog } from "../../board/board.js";
import { healthProblem, LoopLag } from "./loop-lag.js";
import { monotonicNow, realTimers, type HealthCheck, type HealthLog, type TimerHandle, type Timers } from "./timers.js";
import { errorMessage } from "../util/errors.js";

export interface WatchdogKeeperOptions {
  board: Pick<Board, "openWatchdog">;
  /** Undefined while the agent is healthy; otherwise why not (the pet is skipped). */
  healthy: HealthCheck;
  log: HealthLog;
  timers?: Timers;
  /** Monotonic milliseconds. */
  now?: () => number;
  /** Event-loop lateness that counts as unhealthy; default 5 s. */
  maxLagMs?: number;
}

export interface WatchdogStatus {
  /** The device as the host spells it, while it is held. */
  device: string | undefined;
  timeoutSeconds: number | undefined;
  petIntervalMs: number | undefined;
  pets: number;
  /** Why petting is skipped right now, if it is. */
  skipping: string | undefined;
}

/** Pet interval for a driver timeout: a third of it, or 2 s when the driver does not say. */
export function petIntervalMs(timeoutSeconds: number | undefined): number {
  if (timeoutSeconds === undefined || !Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0)
    return UNKNOWN_TIMEOUT_PET_MS;
  return Math.max(100, Math.floor((timeoutSeconds * 1000) / 3));
}

export const UNKNOWN_TIMEOUT_PET_MS = 2000;
export const DEFAULT_MAX_LAG_MS = 5000;

export class WatchdogKeeper {
  private readonly timers: Timers;
  private readonly now: () => number;
  private readonly maxLagMs: number;
  private watchdog: HardwareWatchdog | undefined;
  private lag: LoopLag | undefined;
  private handle: TimerHandle | undefined;
  private interval: number | undefined;
  private pets = 0;
  private skipping: string | undefined;
  private petFailing = false;
  private petting: Promise<void> | undefined;

  constructor(private readonly options: WatchdogKeeperOptions) {
    this.timers = options.timers ?? realTimers;
    this.now = options.now ?? monotonicNow;
    this.maxLagMs = options.maxLagMs ?? DEFAULT_MAX_LAG_MS;
  }

  get status(): WatchdogStatus {
    return {
      device: this.watchdog?.device,
      timeoutSeconds: this.watchdog?.timeoutSeconds,
      petIntervalMs: this.interval,
      pets: this.pets,
      skipping: this.skipping,
    };
  }

  /** Opens the watchdog and pets it once; without one, says so and returns (the agent runs on). */
  async start(): Promise<void> {
    if (this.watchdog) return;
    let watchdog: HardwareWatchdog | undefined;
    try {
      watchdog = await this.options.board.openWatchdog();
    } catch (err) {
      // The Board contract says openWatchdog never throws; a broken one still must not stop the agent.
      this.options.log.warn(`hardware watchdog not used: ${errorMessage(err)}`);
      return;
    }
    if (!watchdog) {
      // The board has already logged why (its problem line), as a warning.
      this.options.log.info("running without a hardware watchdog");
      return;
    }
    this.watchdog = watchdog;
    this.interval = petIntervalMs(watchdog.timeoutSeconds);
    this.lag = new LoopLag({
      timers: this.timers,
      now: this.now,
      tickMs: Math.min(1000, Math.max(50, Math.floor(this.interval / 2))),
    });
    this.lag.start();
    await this.petIfHealthy();
    this.handle = this.timers.setInterval(() => this.petIfHealthy(), this.interval);
    const timeout =
      watchdog.timeoutSeconds === undefined ? "timeout not reported" : `timeout ${watchdog.timeoutSeconds} s`;
    this.options.log.info(
      `petting ${watchdog.device} every ${this.interval / 1000} s (${timeout}) while the agent is healthy`,
    );
  }

  /** Stops petting and closes the device with the magic character (a clean stop disarms it). */
  async stop(): Promise<void> {
    if (this.handle !== undefined) this.timers.clearInterval(this.handle);
    this.handle = undefined;
    this.lag?.stop();
    const watchdog = this.watchdog;
    this.watchdog = undefined;
    if (!watchdog) return;
    await this.petting?.catch(() => {});
    try {
      await watchdog.close(true);
      this.options.log.info(`${watchdog.device} closed (disarmed)`);
    } catch (err) {
      this.options.log.warn(`${watchdog.device}: magic close failed, the box may reset: ${errorMessage(err)}`);
    }
  }

  /** One pet, if the loop and the agent are healthy. Exposed for tests; the timer calls it. */
  petIfHealthy(): Promise<void> {
    // A pet still in flight (a slow write) is not doubled.
    this.petting ??= this.petOnce().finally(() => (this.petting = undefined));
    return this.petting;
  }

  private async petOnce(): Promise<void> {
    const watchdog = this.watchdog;
    if (!watchdog) return;
    const problem = healthProblem(this.lag, this.maxLagMs, this.options.healthy);
    if (problem !== undefined) {
      if (this.skipping === undefined)
        this.options.log.warn(`not petting ${watchdog.device}: ${problem}; the box resets unless the agent recovers`);
      this.skipping = problem;
      return;
    }
    if (this.skipping !== undefined) {
      this.options.log.info(`healthy again: petting ${watchdog.device}`);
      this.skipping = undefined;
    }
    try {
      await watchdog.pet();
      this.pets++;
      if (this.petFailing) this.options.log.info(`${watchdog.device}: petting works again`);
      this.petFailing = false;
    } catch (err) {
      if (!this.petFailing) this.options.log.warn(`${watchdog.device}: pet failed: ${errorMessage(err)}`);
      this.petFailing = true;
    }
  }
}
