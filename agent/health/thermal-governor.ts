// Thermal throttling with hysteresis: the board's governing temperature is sampled every `intervalMs`; work that
// heats the box (scrubs, compute, fast serving) pauses when it reaches `pauseAtC` and resumes only once it has
// cooled to `resumeAtC`. The gap between the two keeps a box that hovers around one limit from flapping its work
// on and off every sample. What "throttled" means for the work is the resource governor's business, not this one's.
import { EventEmitter } from "node:events";
import type { Board } from "../../board/board.js";
import { realTimers, type HealthLog, type TimerHandle, type Timers } from "./timers.js";
import { errorMessage } from "../util/errors.js";

export interface ThermalState {
  throttled: boolean;
  /** The last reading, °C; undefined before the first one and while the sensor cannot be read. */
  temperatureC: number | undefined;
  /** One line: why the state is what it is. */
  reason: string;
}

export interface ThermalGovernorOptions {
  board: Pick<Board, "readTemperatureC" | "thermalLimits">;
  log: HealthLog;
  timers?: Timers;
  /** Between samples; default 10 s (a passively cooled box heats over minutes, not seconds). */
  intervalMs?: number;
}

export interface ThermalEvents {
  change: [ThermalState];
}

export const DEFAULT_THERMAL_INTERVAL_MS = 10_000;

export class ThermalGovernor extends EventEmitter<ThermalEvents> {
  private readonly timers: Timers;
  private readonly intervalMs: number;
  private readonly pauseAtC: number;
  private readonly resumeAtC: number;
  private handle: TimerHandle | undefined;
  private sampling: Promise<ThermalState> | undefined;
  private unreadable = false;
  private current: ThermalState = { throttled: false, temperatureC: undefined, reason: "no reading yet" };

  constructor(private readonly options: ThermalGovernorOptions) {
    super();
    this.timers = options.timers ?? realTimers;
    this.intervalMs = options.intervalMs ?? DEFAULT_THERMAL_INTERVAL_MS;
    const { pauseAtC, resumeAtC } = options.board.thermalLimits;
    this.pauseAtC = pauseAtC;
    // A profile whose resume limit is above its pause limit would throttle and resume on the same reading.
    this.resumeAtC = Math.min(resumeAtC, pauseAtC);
  }

  get state(): ThermalState {
    return this.current;
  }

  get throttled(): boolean {
    return this.current.throttled;
  }

  get limits(): { pauseAtC: number; resumeAtC: number } {
    return { pauseAtC: this.pauseAtC, resumeAtC: this.resumeAtC };
  }

  /** Takes the first sample (so the state is known before work starts), then one every interval. */
  async start(): Promise<void> {
    if (this.handle !== undefined) return;
    await this.sample();
    this.handle = this.timers.setInterval(() => this.sample(), this.intervalMs);
  }

  stop(): void {
    if (this.handle !== undefined) this.timers.clearInterval(this.handle);
    this.handle = undefined;
  }

  /** One sample now; a sample still running (a slow sysfs read) is joined, not doubled. */
  sample(): Promise<ThermalState> {
    this.sampling ??= this.readAndApply().finally(() => (this.sampling = undefined));
    return this.sampling;
  }

  private async readAndApply(): Promise<ThermalState> {
    let celsius: number | undefined;
    try {
      celsius = await this.options.board.readTemperatureC();
    } catch {
      celsius = undefined; // the Board contract says it never throws; a broken one is an unreadable sensor
    }
    const previous = this.current;
    if (celsius === undefined || !Number.isFinite(celsius)) {
      // An unreadable sensor says nothing about the heat, so the state stays as it is: resuming on a read error
      // would restart heating work on a box that was too hot a moment ago, and throttling on one would pause
      // work for good on boards whose sensor is flaky or absent.
      if (!this.unreadable) {
        this.unreadable = true;
        this.options.log.warn(
          `temperature unreadable: staying ${previous.throttled ? "throttled" : "unthrottled"} until it can be read`,
        );
      }
      this.current = {
        ...previous,
        temperatureC: undefined,
        reason: `${previous.throttled ? "throttled" : "not throttled"}; temperature unreadable`,
      };
      return this.current;
    }
    if (this.unreadable) {
      this.unreadable = false;
      this.options.log.info(`temperature readable again: ${celsius} °C`);
    }
    let throttled = previous.throttled;
    if (!throttled && celsius >= this.pauseAtC) throttled = true;
    else if (throttled && celsius <= this.resumeAtC) throttled = false;
    const reason = throttled
      ? `${celsius} °C: throttled at ${this.pauseAtC} °C, resumes at or below ${this.resumeAtC} °C`
      : `${celsius} °C: below ${this.pauseAtC} °C`;
    this.current = { throttled, temperatureC: celsius, reason };
    if (throttled !== previous.throttled) {
      if (throttled) this.options.log.warn(`throttling: ${celsius} °C reached the pause limit ${this.pauseAtC} °C`);
      else this.options.log.info(`throttling ends: cooled to ${celsius} °C (resume limit ${this.resumeAtC} °C)`);
      this.emitSafely(this.current);
    }
    return this.current;
  }

  /** A listener that throws is logged, never allowed to stop the sampling. */
  private emitSafely(state: ThermalState): void {
    for (const listener of this.listeners("change") as Array<(s: ThermalState) => void>) {
      try {
        listener(state);
      } catch (err) {
        this.options.log.warn(`a thermal change listener failed: ${errorMessage(err)}`);
      }
    }
  }
}
