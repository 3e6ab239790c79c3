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
