// Event-loop lag, measured the only way a JavaScript thread can: a tick that should run every `tickMs` notes how
// late it ran. A loop that is blocked runs no ticks at all, so the probe also counts how overdue the next tick is
// right now (the consumer's own timer may fire before the tick when the loop comes back).
import { monotonicNow, realTimers, type HealthCheck, type TimerHandle, type Timers } from "./timers.js";
import { errorMessage } from "../util/errors.js";

export interface LoopLagOptions {
  timers?: Timers;
  /** Monotonic milliseconds. */
  now?: () => number;
  tickMs?: number;
}

export class LoopLag {
  private readonly timers: Timers;
  private readonly now: () => number;
  readonly tickMs: number;
  private handle: TimerHandle | undefined;
  private lastTick = 0;
  private worst = 0;

  constructor(options: LoopLagOptions = {}) {
    this.timers = options.timers ?? realTimers;
    this.now = options.now ?? monotonicNow;
    this.tickMs = options.tickMs ?? 1000;
  }

  start(): void {
    if (this.handle !== undefined) return;
    this.lastTick = this.now();
    this.worst = 0;
    this.handle = this.timers.setInterval(() => this.tick(), this.tickMs);
  }

  stop(): void {
    if (this.handle !== undefined) this.timers.clearInterval(this.handle);
    this.handle = undefined;
  }

  /** The worst lateness (ms) since the previous call, counting the tick that is overdue now; starts a new period. */
  takeWorst(): number {
    const now = this.now();
    const overdue = now - this.lastTick - this.tickMs;
    // Reported now: when the overdue tick finally runs it reports only the lateness beyond this, so one stall
    // costs one skipped pet, not two.
    if (overdue > 0) this.lastTick = now - this.tickMs;
    const worst = Math.max(this.worst, overdue, 0);
    this.worst = 0;
    return worst;
  }

  private tick(): void {
    const now = this.now();
    this.worst = Math.max(this.worst, now - this.lastTick - this.tickMs);
    this.lastTick = now;
  }
}

/**
 * Why neither watchdog may be told the agent is alive right now: the loop ran more than `maxLagMs` late since the
 * previous call (which starts a new period), or the composition root's check names a problem; undefined while
 * healthy. Shared by the hardware watchdog keeper and the systemd notifier.
 */
export function healthProblem(lag: LoopLag | undefined, maxLagMs: number, healthy: HealthCheck): string | undefined {
  const late = lag?.takeWorst() ?? 0;
  if (late > maxLagMs) return `event loop ran ${(late / 1000).toFixed(1)} s late`;
  try {
    return healthy();
  } catch (err) {
    return `health check failed: ${errorMessage(err)}`;
  }
}
