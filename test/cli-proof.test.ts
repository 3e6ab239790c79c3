// `sharenode proof`, run as users run it: the built bundle in a child process on real files, including a copy
// of the bundle alone in a directory without node_modules (what is flashed onto a box).
import { spawnSync, type SpawnSyncOptions } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { blake3 } from "../agent/kernels/blake3";
import { proofLength } from "../agent/kernels/tree";
import { seededBytes as bytes } from "./helpers/random";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "dist/sharenode.js");

let dir = "";
let standaloneBin = "";

function run(bin: string, args: string[], options: SpawnSyncOptions = {}) {
  const r = spawnSync(process.execPath, [bin, ...args], {
    cwd: dir,
    maxBuffer: 256 << 20,
    timeout: 120_000,
    ...options,
  });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout as Buffer, stderr: (r.stderr as Buffer).toString("utf8") };
}
const sharenode = (args: string[], options: SpawnSyncOptions = {}) => run(BIN, args, options);

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const OBJECTS = { small: 700, mid: 40_000, big: 5_000_000 } as const;
const data: Record<string, Buffer> = {};

beforeAll(() => {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run \`npm run build\` first`);
  dir = mkdtempSync(join(tmpdir(), "sharenode-cli-proof-"));
  Object.entries(OBJECTS).forEach(([name, length], i) => {
    data[name] = bytes(length, 1000 + i);
    writeFileSync(join(dir, name), data[name]);
  });
  mkdirSync(join(dir, "a-directory"));
  // The bundle alone: no node_modules beside or above it (tmpdir has none).
  const lone = mkdtempSync(join(tmpdir(), "sharenode-standalone-"));
  standaloneBin = join(lone, "sharenode.js");
  copyFileSync(BIN, standaloneBin);
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  if (standaloneBin) rmSync(join(standaloneBin, ".."), { recursive: true, force: true });
});

describe("proof make | proof check", () => {
  const cases: Array<[keyof typeof OBJECTS, number, number]> = [
    ["small", 0, 1],
    ["mid", 0, 1],
    ["mid", 16, 3],
    ["mid", 39, 1],
    ["big", 0, 1],
    ["big", 1234, 1],
    ["big", 4882, 1],
    ["big", 100, 40],
  ];
  it.each(cases)("%s chunk %i count %i: valid, the right size, and checks out", (name, chunk, count) => {
    const length = OBJECTS[name];
    const id = hex(blake3(data[name]));
    const made = sharenode(["proof", "make", name, "--chunk", String(chunk), "--count", String(count)]);
    expect(made.stderr).toBe("");
    expect(made.status).toBe(0);
    expect(made.stdout.length).toBe(proofLength(length, chunk, count));
    const check = sharenode(
      ["proof", "check", "--id", id, "--len", String(length), "--chunk", String(chunk), "--count", String(count)],
      { input: made.stdout },
    );
    expect(check.stderr).toBe("");
    expect(check.status).toBe(0);
    expect(check.stdout.toString()).toMatch(/^valid: chunk/);
    // --output - writes exactly the verified chunk bytes.
    const out = sharenode(
      [
        "proof",
        "check",
        "--id",
        id,
        "--len",
        String(length),
        "--chunk",
        String(chunk),
        "--count",
        String(count),
        "--output",
        "-",
      ],
      { input: made.stdout },
    );
    expect(out.status).toBe(0);
    expect(out.stdout.equals(data[name].subarray(chunk * 1024, Math.min(length, (chunk + count) * 1024)))).toBe(true);
  });

  it("with --outboard, the proof is byte-identical to one made from the file alone", () => {
    const ob = sharenode(["proof", "outboard", "big"]);
    expect(ob.status).toBe(0);
    writeFileSync(join(dir, "big.obao"), ob.stdout);
    for (const chunk of [0, 777, 4882]) {
      const plain = sharenode(["proof", "make", "big", "--chunk", String(chunk)]);
      const viaOutboard = sharenode(["proof", "make", "big", "--chunk", String(chunk), "--outboard", "big.obao"]);
      expect(viaOutboard.status).toBe(0);
      expect(viaOutboard.stdout.equals(plain.stdout)).toBe(true);
    }
  });

  it("rejects a tampered proof, a wrong id, a wrong length and a wrong chunk with exit 1", () => {
    const id = hex(blake3(data.big));
    const proof = sharenode(["proof", "make", "big", "--chunk", "42"]).stdout;
    const check = (args: string[], input: Buffer) => sharenode(["proof", "check", ...args], { input });
    const good = ["--id", id, "--len", "5000000", "--chunk", "42"];
    expect(check(good, proof).status).toBe(0);
    const flipped = Buffer.from(proof);
    flipped[flipped.length >> 1]! ^= 0x10;
    for (const [args, input] of [
      [good, flipped],
      [good, proof.subarray(0, proof.length - 1)],
      [good, Buffer.concat([proof, Buffer.from([0])])],
      [["--id", hex(blake3(data.mid)), "--len", "5000000", "--chunk", "42"], proof],
      [["--id", id, "--len", "4999999", "--chunk", "42"], proof],
      [["--id", id, "--len", "5000000", "--chunk", "43"], proof],
    ] as Array<[string[], Buffer]>) {
      const r = check(args, input);
      expect(r.status).toBe(1);
      expect(r.stdout.length).toBe(0);
      expect(r.stderr.trimEnd().split("\n")).toHaveLength(1);
      expect(r.stderr).toMatch(/^sharenode: proof check: invalid proof: /);
    }
  });
});

describe("bad input: one line on stderr, a non-zero exit, no stack trace", () => {
  const id = "ab".repeat(32);
  const cases: Array<[string, string[], number, RegExp]> = [
    ["missing file", ["proof", "make", "nope", "--chunk", "0"], 1, /proof make: nope: No such file or directory/],
    ["a directory", ["proof", "make", "a-directory", "--chunk", "0"], 1, /proof make: a-directory: Is a directory/],
    [
      "index past the end",
      ["proof", "make", "mid", "--chunk", "40"],
      2,
      /chunk 40 is past the end: an object of 40000 bytes has 40 chunks \(0\.\.39\)/,
    ],
    [
      "range past the end",
      ["proof", "make", "mid", "--chunk", "38", "--count", "3"],
      2,
      /chunks 38\.\.40 run past the end/,
    ],
    ["missing --chunk", ["proof", "make", "mid"], 2, /missing --chunk/],
    ["negative chunk", ["proof", "make", "mid", "--chunk", "-1"], 2, /proof make: /],
    ["count 0", ["proof", "make", "mid", "--chunk", "0", "--count", "0"], 2, /--count must be at least 1/],
    [
      "non-numeric chunk",
      ["proof", "make", "mid", "--chunk", "x1"],
      2,
      /--chunk must be a non-negative integer, got 'x1'/,
    ],
    ["bad hex id", ["proof", "check", "--id", "xyz", "--len", "5", "--chunk", "0"], 2, /--id is not hex/],
    [
      "short id",
      ["proof", "check", "--id", "abcd", "--len", "5", "--chunk", "0"],
      2,
      /--id must be 64 hex digits, got 4/,
    ],
    [
      "bad length",
      ["proof", "check", "--id", id, "--len", "5.5", "--chunk", "0"],
      2,
      /--len must be a non-negative integer, got '5.5'/,
    ],
    [
      "check index past the end",
      ["proof", "check", "--id", id, "--len", "1024", "--chunk", "1"],
      2,
      /chunk 1 is past the end/,
    ],
    ["missing action", ["proof"], 2, /missing action/],
    ["unknown action", ["proof", "frob"], 2, /unknown action 'frob'/],
    [
      "bad outboard",
      ["proof", "make", "mid", "--chunk", "0", "--outboard", "mid"],
      1,
      /mid: (not an outboard|outboard is)/,
    ],
    [
      "outboard of another object",
      ["proof", "make", "mid", "--chunk", "0", "--outboard", "big.obao"],
      1,
      /outboard of an object of 5000000 bytes, but mid has 40000/,
    ],
  ];
  beforeAll(() => {
    writeFileSync(join(dir, "big.obao"), sharenode(["proof", "outboard", "big"]).stdout);
  });
  it.each(cases)("%s", (_name, args, code, message) => {
    const r = sharenode(args, { input: Buffer.alloc(0) });
    expect(r.status).toBe(code);
    expect(r.stderr.trimEnd().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/^sharenode: /);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});

describe("the bundle alone, without node_modules", () => {
  it("hashes and proves", () => {
    const name = join(dir, "mid");
    const h = run(standaloneBin, ["hash", name]);
    expect(h.status).toBe(0);
    expect(h.stdout.toString()).toBe(`${hex(blake3(data.mid))}  ${name}\n`);
    const s = run(standaloneBin, ["hash", "--algo", "sha256", name]);
    expect(s.status).toBe(0);
    const p = run(standaloneBin, ["proof", "make", name, "--chunk", "7"]);
    expect(p.status).toBe(0);
    const c = run(standaloneBin, ["proof", "check", "--id", hex(blake3(data.mid)), "--len", "40000", "--chunk", "7"], {
      input: p.stdout,
    });
    expect(c.status).toBe(0);
  });

  it("does not read its kernels from disk", () => {
    expect(readFileSync(standaloneBin, "utf8")).not.toMatch(/\.wasm["'`]/);
  });
});
