// The one seeded generator of the tests, in plain JavaScript so that scripts run by plain Node use it too (the
// bench, test/bench/run.mjs, and the ARM check, test/arm/check.mjs, run on Node builds that load no TypeScript).
// TypeScript sees it through prng.d.mts; tests import it from random.ts.

/** splitmix32: small, fast, and the same on every platform. Returns unsigned 32-bit integers. */
export function prng(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** A copy of `items` in a random order drawn from the generator (Fisher-Yates): the benches' round orders. */
export function shuffled(items, next) {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor((next() / 2 ** 32) * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/** `length` bytes from a generator, four at a time (little-endian words, as on every platform we run on). */
export function randomBytes(next, length) {
  const bytes = new Uint8Array(length);
  const words = new Uint32Array(bytes.buffer, 0, length >>> 2);
  for (let i = 0; i < words.length; i++) words[i] = next();
  for (let i = words.length * 4; i < length; i++) bytes[i] = next() & 0xff;
  return bytes;
}

/** `length` bytes that depend only on `seed`: object and file contents. */
export function seededBytes(length, seed) {
  const bytes = randomBytes(prng(seed), length);
  return Buffer.from(bytes.buffer, 0, length);
}
