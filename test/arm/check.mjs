// Runs on the emulated ARM node (started by test/arm/run-arm.sh): the BUILT library, dist/index.js, against
// official vectors. Plain Node, no test framework: it must run on the node binary that boxes run.
//
//   node test/arm/check.mjs --arch arm|arm64 --kernel simd|scalar
//
// --arch is the process.arch this must be running on (so a host node can't pass for ARM); --kernel is the
// BLAKE3 build that must be chosen here. On success prints one line "ok key=value...": the kernel chosen and
// how many checks passed; on the first mismatch prints one line "check: <what>" on stderr and exits 1.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { seededBytes } from "../helpers/prng.mjs";

const started = performance.now();

function fail(message) {
  process.stderr.write(`check: ${message}\n`);
  process.exit(1);
}
process.on("uncaughtException", (err) =>
  fail(`unexpected error: ${err?.stack?.split("\n").slice(0, 2).join(" | ") ?? err}`),
);

let args;
try {
  args = parseArgs({ options: { arch: { type: "string" }, kernel: { type: "string" } } }).values;
} catch (err) {
  fail(`bad arguments: ${err.message}`);
}
if (!["arm", "arm64"].includes(args.arch)) fail("--arch arm|arm64 is required");
if (!["simd", "scalar"].includes(args.kernel)) fail("--kernel simd|scalar is required");
if (process.arch !== args.arch)
  fail(`running on process.arch '${process.arch}', expected '${args.arch}' (not the emulated ARM node?)`);

const distUrl = new URL("../../dist/index.js", import.meta.url);
let lib;
try {
  lib = await import(distUrl);
} catch (err) {
  fail(`cannot import ${distUrl.pathname}: ${err.message}`);
}
const vectors = JSON.parse(readFileSync(new URL("../fixtures/blake3-test-vectors.json", import.meta.url), "utf8"));

const hex = (bytes) => Buffer.from(bytes).toString("hex");
const utf8 = (s) => new TextEncoder().encode(s);
function expectHex(what, got, want) {
  const g = hex(got);
  if (g !== want) fail(`${what}: got ${g.slice(0, 32)}..., want ${want.slice(0, 32)}...`);
}
function patternInput(length) {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = i % 251;
  return out;
}
const equalBytes = (a, b) => a !== null && b !== null && a.length === b.length && Buffer.from(a).equals(Buffer.from(b));

// --- which kernel --------------------------------------------------------------------------------------------

const simd = lib.simdSupported();
const chosen = lib.blake3Kernel().build;
if (args.kernel === "scalar" && simd)
  fail("simdSupported() is true on a core without NEON: the scalar kernel is never exercised here");
if (args.kernel === "simd" && !simd) fail("simdSupported() is false on a core with NEON: expected the SIMD kernel");
if (chosen !== args.kernel) fail(`blake3Kernel() chose the ${chosen} build, expected ${args.kernel}`);
// Where SIMD is refused, compiling the SIMD build must fail (the fallback is needed, not just preferred).
if (!simd) {
  let compiled = true;
  try {
    lib.blake3Kernel("simd");
  } catch {
    compiled = false;
  }
  if (compiled) fail("simdSupported() is false, yet the SIMD kernel compiled");
}
const builds = simd ? ["simd", "scalar"] : ["scalar"];

// --- BLAKE3: official vectors, full 131-byte outputs, every available build ----------------------------------

const key = utf8(vectors.key);
const context = vectors.context_string;
const OUT = 131;
let blake3Checks = 0;
const pieceSizes = [1, 63, 64, 1000, 1024, 4097];
function feed(hasher, input) {
  for (let at = 0, i = 0; at < input.length; i++) {
    const n = pieceSizes[i % pieceSizes.length];
    hasher.update(input.subarray(at, at + n));
    at += n;
  }
  return hasher;
}
for (const build of builds) {
  const kernel = lib.blake3Kernel(build);
  if (kernel.build !== build) fail(`blake3Kernel("${build}") returned the ${kernel.build} build`);
  for (const c of vectors.cases) {
    const input = patternInput(c.input_len);
    const at = `blake3 ${build} input_len ${c.input_len}`;
    expectHex(`${at} hash`, kernel.hash(input, OUT), c.hash);
    expectHex(`${at} hash (32 bytes)`, kernel.hash(input), c.hash.slice(0, 64));
    expectHex(`${at} keyed_hash`, kernel.keyedHash(key, input, OUT), c.keyed_hash);
    expectHex(`${at} derive_key`, kernel.deriveKey(context, input, OUT), c.derive_key);
    blake3Checks += 4;
    if ([1025, 8193, 31744, 102400].includes(c.input_len)) {
      expectHex(`${at} streamed hash`, feed(kernel.createHasher(), input).digest(OUT), c.hash);
      expectHex(`${at} streamed keyed_hash`, feed(kernel.createKeyedHasher(key), input).digest(OUT), c.keyed_hash);
      expectHex(
        `${at} streamed derive_key`,
        feed(kernel.createDeriveKeyHasher(context), input).digest(OUT),
        c.derive_key,
      );
      blake3Checks += 3;
    }
  }
}
// The public one-shot and streaming functions (the default kernel).
for (const c of vectors.cases) {
  const input = patternInput(c.input_len);
  const at = `blake3 public API input_len ${c.input_len}`;
  expectHex(`${at} blake3`, lib.blake3(input, OUT), c.hash);
  expectHex(`${at} blake3Keyed`, lib.blake3Keyed(key, input, OUT), c.keyed_hash);
  expectHex(`${at} blake3DeriveKey`, lib.blake3DeriveKey(context, input, OUT), c.derive_key);
  expectHex(`${at} createBlake3`, feed(lib.createBlake3(), input).digest(OUT), c.hash);
  blake3Checks += 4;
}

// --- SHA-256: NIST vectors, and node:crypto (OpenSSL) as an independent reference ----------------------------

const NIST = [
  ["", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],
  ["abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"],
  [
    "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
  ],
  [
    "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
    "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
  ],
];
let shaChecks = 0;
for (const [message, want] of NIST) {
  expectHex(`sha256 NIST ${message.length * 8}-bit message`, lib.sha256(utf8(message)), want);
  expectHex(
    `sha256 NIST ${message.length * 8}-bit message, streamed`,
    lib.createSha256().update(utf8(message)).digest(),
    want,
  );
  shaChecks += 2;
}
{
  const million = new Uint8Array(1_000_000).fill(0x61);
  const want = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
  expectHex("sha256 NIST one million 'a'", lib.sha256(million), want);
  const h = lib.createSha256();
  for (let at = 0; at < million.length; at += 999) h.update(million.subarray(at, at + 999));
  expectHex("sha256 NIST one million 'a', streamed", h.digest(), want);
  shaChecks += 2;
}
for (let len = 0; len <= 200; len++) {
  const data = seededBytes(len, 7 + len);
  expectHex(`sha256 length ${len} vs node:crypto`, lib.sha256(data), createHash("sha256").update(data).digest("hex"));
  shaChecks++;
}

// --- proofs: make, verify, outboard path, tampering ---------------------------------------------------------

let proofChecks = 0;
const objects = [
  ["700 B", seededBytes(700, 1000), [[0, 1]]],
  [
    "40000 B",
    seededBytes(40_000, 1001),
    [
      [0, 1],
      [16, 3],
      [39, 1],
      [0, 40],
    ],
  ],
  [
    "102400 B pattern",
    patternInput(102_400),
    [
      [0, 1],
      [45, 5],
      [99, 1],
      [31, 2],
    ],
  ],
];
for (const [name, data, ranges] of objects) {
  const id = lib.blake3(data);
  if (data.length === 102_400)
    expectHex("proof object id", id, vectors.cases.find((c) => c.input_len === 102_400).hash.slice(0, 64));
  const { outboard } = lib.createOutboard(data);
  const parsed = lib.parseOutboard(outboard);
  if (hex(parsed.id) !== hex(id)) fail(`outboard of ${name}: its id is not the object's BLAKE3 hash`);
  for (const [start, count] of ranges) {
    const at = `proof of ${name} chunks ${start}+${count}`;
    const proof = lib.makeProofFromData(data, start, count);
    if (proof.length !== lib.proofLength(data.length, start, count))
      fail(`${at}: ${proof.length} bytes, proofLength says ${lib.proofLength(data.length, start, count)}`);
    const fromOutboard = lib.makeProof(
      parsed,
      (offset, length) => data.subarray(offset, offset + length),
      start,
      count,
    );
    if (!equalBytes(proof, fromOutboard))
      fail(`${at}: the proof made from the outboard differs from the one made from the data`);
    const want = data.subarray(start * 1024, Math.min(data.length, (start + count) * 1024));
    for (const build of builds) {
      const kernel = lib.blake3Kernel(build);
      if (!equalBytes(lib.makeProofFromData(data, start, count, kernel), proof))
        fail(`${at}: the ${build} kernel makes a different proof`);
      if (!equalBytes(lib.verifyProof(id, data.length, start, count, proof, kernel), want))
        fail(`${at}: ${build} verifyProof did not return the chunks`);
    }
    // Any flipped bit must be caught: one in the first, middle and last byte.
    for (const i of [0, proof.length >> 1, proof.length - 1]) {
      const bad = proof.slice();
      bad[i] ^= 0x01;
      if (lib.verifyProof(id, data.length, start, count, bad) !== null)
        fail(`${at}: a proof with byte ${i} flipped was accepted`);
    }
    proofChecks++;
  }
}

const ms = Math.round(performance.now() - started);
// One line of key=value fields for run-arm.sh's summary.
console.log(
  `ok kernel=${chosen} simdSupported=${simd} builds=${builds.join("+")} blake3=${blake3Checks} sha256=${shaChecks} ` +
    `proofs=${proofChecks} node=${process.version} ms=${ms}`,
);
