// The device bundle replaces lru-cache (mqtt.js's topic-alias table) with agent/link/lru-for-mqtt.cjs. The stand-in
// must answer every call mqtt.js makes exactly as lru-cache does: random operations on both, compared after each.
import { createRequire } from "node:module";
// lru-cache is mqtt.js's dependency (hoisted by npm): the reference is the very package the bundle leaves out.
import { LRUCache } from "lru-cache";
import { describe, expect, it } from "vitest";
import { below, replayHintOnFailure, rngFor, seedNote, testSeed } from "./helpers/random";

const { LRUCache: StandIn } = createRequire(import.meta.url)("../agent/link/lru-for-mqtt.cjs") as {
  LRUCache: new (options: { max: number }) => {
    get(key: number): string | undefined;
    set(key: number, value: string | undefined): unknown;
    has(key: number): boolean;
    delete(key: number): boolean;
    clear(): void;
    keys(): Iterable<number>;
    readonly size: number;
  };
};

const SEED_VAR = "LRU_TEST_SEED";
const SEED = testSeed(SEED_VAR);

describe("lru-for-mqtt.cjs against lru-cache", () => {
  it("the same answers to 20,000 random get/set/has/delete/clear calls, sizes and key orders, for max 1..12", () => {
    replayHintOnFailure(SEED_VAR, SEED);
    for (let max = 1; max <= 12; max++) {
      const next = rngFor(SEED, `max ${max}`);
      const real = new LRUCache<number, string>({ max });
      const ours = new StandIn({ max });
      for (let step = 0; step < 20_000 / 12; step++) {
        const key = 1 + below(next, max * 2);
        const op = below(next, 100);
        const at = `max ${max}, step ${step}, ${seedNote(SEED_VAR, SEED)}`;
        if (op < 40) expect(ours.get(key), at).toBe(real.get(key));
        else if (op < 85) {
          const value = below(next, 20) === 0 ? undefined : `topic/${below(next, 50)}`;
          real.set(key, value);
          ours.set(key, value);
        } else if (op < 92) expect(ours.has(key), at).toBe(real.has(key));
        else if (op < 99) expect(ours.delete(key), at).toBe(real.delete(key));
        else {
          real.clear();
          ours.clear();
        }
        expect(ours.size, at).toBe(real.size);
        expect([...ours.keys()], at).toEqual([...real.keys()]);
      }
    }
  });

  it("refuses a max lru-cache would also refuse", () => {
    for (const max of [0, -1, 1.5]) {
      expect(() => new LRUCache({ max })).toThrow();
      expect(() => new StandIn({ max })).toThrow(/max must be a positive integer/);
    }
  });
});
