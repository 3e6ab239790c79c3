// Seeded randomness for tests: the same bytes on every platform and run for a given seed, so a failure replays.
// A file draws one seed per run (testSeed), takes a generator per test from it (rngFor), and says the seed when a
// test fails (replayHintOnFailure, and the assertion messages), so `NAME=<seed> npx vitest run ...` replays it.
import { randomInt } from "node:crypto";
import { onTestFailed } from "vitest";
import { prng } from "./prng.mjs";

export { prng, randomBytes, seededBytes } from "./prng.mjs";

const MAX_SEED = 2 ** 32 - 1;

/** The run's seed: the environment variable `name` when set (to replay a failure), else a fresh random one. */
export function testSeed(name: string): number {
  const text = process.env[name];
  if (text === undefined || text === "") return randomInt(MAX_SEED + 1);
  const seed = Number(text);
  if (!/^\d+$/.test(text) || seed > MAX_SEED)
    throw new Error(`${name}=${text}: a seed is an integer from 0 to ${MAX_SEED}`);
  return seed;
}

/** "seed 123 (NAME=123 replays it)": for assertion messages. */
export function seedNote(name: string, seed: number): string {
  return `seed ${seed} (${name}=${seed} replays it)`;
}

/**
 * When the calling test fails, prints the seed its random choices came from (stderr, next to the failure). Call
 * it in the test, or in a beforeEach for every test of a suite.
 */
export function replayHintOnFailure(name: string, seed: number): void {
  onTestFailed(() => console.error(`random choices from ${seedNote(name, seed)}`));
}

/** A generator per label under one run's seed, so each test replays the same way whatever else runs. */
export function rngFor(seed: number, label: string): () => number {
  let h = seed >>> 0;
  for (let i = 0; i < label.length; i++) h = Math.imul(h ^ label.charCodeAt(i), 0x01000193);
  return prng(h);
}

/** A whole number from 0 to n - 1 (n at most 2^32). */
export function below(next: () => number, n: number): number {
  return Math.floor((next() / 2 ** 32) * n);
}
