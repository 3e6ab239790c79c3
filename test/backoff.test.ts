import { describe, expect, it } from "vitest";
import { Backoff } from "../agent/link/backoff";

describe("Backoff", () => {
  it("grows the ceiling by the factor up to the cap (full jitter: random() * ceiling)", () => {
    const b = new Backoff({ baseMs: 1000, factor: 2, capMs: 60_000, random: () => 0.999999 });
    const delays = Array.from({ length: 10 }, () => b.next());
    expect(delays).toEqual([999, 1999, 3999, 7999, 15_999, 31_999, 59_999, 59_999, 59_999, 59_999]);
    expect(b.attempts).toBe(10);
  });

  it("draws every delay in [0, ceiling)", () => {
    let x = 12345;
    const random = () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32;
    const b = new Backoff({ baseMs: 500, capMs: 8000, random });
    for (let n = 0; n < 1000; n++) {
      const ceiling = b.ceilingMs;
      const d = b.next();
      expect(d).toBeGreaterThanOrEqual(0);
      expect(d).toBeLessThan(ceiling);
      expect(ceiling).toBe(Math.min(8000, 500 * 2 ** Math.min(n, 64)));
    }
    expect(b.next()).toBeLessThan(8000);
  });

  it("with random() = 0 retries at once (full jitter's lower end)", () => {
    const b = new Backoff({ random: () => 0 });
    expect([b.next(), b.next(), b.next()]).toEqual([0, 0, 0]);
  });

  it("resets only after a connection stayed up resetAfterMs", () => {
    let now = 0;
    const b = new Backoff({ baseMs: 1000, capMs: 60_000, resetAfterMs: 30_000, random: () => 0.5, now: () => now });
    for (let i = 0; i < 5; i++) b.next();
    expect(b.ceilingMs).toBe(32_000);
    // Up for 10 s, then lost: keeps growing (a link that flaps right after CONNACK).
    b.connected();
    now += 10_000;
    expect(b.next()).toBe(16_000);
    expect(b.ceilingMs).toBe(60_000);
    // Up for 30 s: the next delay starts from base again.
    b.connected();
    now += 30_000;
    expect(b.next()).toBe(500);
    expect(b.next()).toBe(1000);
    b.reset();
    expect(b.next()).toBe(500);
  });

  it("does not overflow after very many failures", () => {
    const b = new Backoff({ random: () => 0.5 });
    for (let i = 0; i < 5000; i++) b.next();
    expect(b.next()).toBe(30_000);
  });

  it("rejects nonsense settings", () => {
    expect(() => new Backoff({ baseMs: 0 })).toThrow(RangeError);
    expect(() => new Backoff({ baseMs: 1000, capMs: 10 })).toThrow(RangeError);
    expect(() => new Backoff({ factor: 0.5 })).toThrow(RangeError);
  });
});
