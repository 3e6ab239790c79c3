// Waiting for what arrives asynchronously (a broker message, a child's output, a log line) by polling with a
// deadline. One home, so that every timeout says the same thing: how long, waiting for what, and what was seen.

export interface WaitOptions {
  /** Give up after this long. Default 10 s. */
  timeoutMs?: number;
  /** Time between two probes. Default 10 ms. */
  intervalMs?: number;
  /** More for the timeout message: a child's log, what arrived instead. */
  detail?: () => string;
  /** A probe that throws is tried again (a server not listening yet); the last error goes in the timeout message. */
  retryOnError?: boolean;
}

/** Something that is not there yet: undefined or false. */
type Pending = undefined | false;

/**
 * Calls `probe` until it returns something other than undefined or false, and resolves to that; rejects with
 * "timed out after N ms waiting for WHAT[; DETAIL]" at the deadline. A number for `options` is the timeout.
 */
export async function waitFor<T>(
  what: string | (() => string),
  probe: () => T | Pending | Promise<T | Pending>,
  options: number | WaitOptions = {},
): Promise<T> {
  const { timeoutMs = 10_000, intervalMs = 10, detail, retryOnError = false } = asOptions(options);
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value as T;
    } catch (err) {
      if (!retryOnError) throw err;
      lastError = err;
    }
    if (Date.now() > deadline) {
      let message = `timed out after ${timeoutMs} ms waiting for ${typeof what === "string" ? what : what()}`;
      if (detail) message += `; ${detail()}`;
      if (lastError !== undefined) message += `; last error: ${String(lastError)}`;
      throw new Error(message);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** waitFor() with other defaults (a file's usual timeout, its child's log in every timeout message). */
export function waiter(defaults: WaitOptions): typeof waitFor {
  return (what, probe, options = {}) => waitFor(what, probe, { ...defaults, ...asOptions(options) });
}

function asOptions(options: number | WaitOptions): WaitOptions {
  return typeof options === "number" ? { timeoutMs: options } : options;
}
