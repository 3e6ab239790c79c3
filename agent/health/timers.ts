// The timers and the clock the health features run on, injected so tests drive them by hand (no sleeping, no
// timing-dependent assertions). The real ones are unref'd: a health timer never keeps the process alive on its own.
import type { Logger } from "../util/log.js";

export type TimerHandle = unknown;

export interface Timers {
  /**
   * Calls `fn` every `ms`. What it returns is ignored by the real timers (the health features' callbacks never
   * reject); fake timers in tests await it, so a test sees the work a tick started finished.
   */
  setInterval(fn: () => unknown, ms: number): TimerHandle;
  clearInterval(handle: TimerHandle): void;
}

export const realTimers: Timers = {
  setInterval(fn, ms) {
    const t = setInterval(fn, ms);
    t.unref();
    return t;
  },
  clearInterval(handle) {
    clearInterval(handle as NodeJS.Timeout);
  },
};

/**
 * Milliseconds on a clock that never jumps. Boxes without a battery-backed clock boot in 1970 and jump decades
 * when NTP answers: on the wall clock that would look like an event loop blocked for 50 years.
 */
export const monotonicNow = (): number => performance.now();

/** What the health features log through (agent/util/log's Logger fits). */
export type HealthLog = Pick<Logger, "info" | "warn">;

/** Undefined while healthy; otherwise why not, in one line. */
export type HealthCheck = () => string | undefined;
