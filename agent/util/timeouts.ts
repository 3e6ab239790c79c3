// One-shot timers, injected where a module waits (the link's reconnect backoff, the outbox's batching), so tests
// can drive time by hand; the real ones are Node's.

export interface Timeouts {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realTimeouts: Timeouts = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/**
 * Calls `fn` once the clock (`now`, epoch ms) reaches `at`; at once when it has. setTimeout takes at most 2^31 - 1
 * ms, so a far time is reached in steps; `keep` gets each step's handle, the one to clear to cancel.
 */
export function atTime(
  timeouts: Timeouts,
  now: () => number,
  at: number,
  fn: () => void,
  keep: (handle: unknown) => void,
): void {
  const step = (): void => {
    const left = at - now();
    if (left > 0) keep(timeouts.setTimeout(step, Math.min(left, 2 ** 31 - 1)));
    else fn();
  };
  step();
}
