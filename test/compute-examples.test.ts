// The example compute tasks (wasm/tasks/, agent/compute/README.md "Examples"), as `npm run build` leaves them in
// dist/tasks/: the module check accepts them, and their outputs, in the sandbox and through `sharenode compute
// run`, equal an independent computation: Debian's b3sum for blake3-range, a plain TypeScript box filter written
// from the format's definition (every source pixel's overlap with every target pixel) for thumbnail.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { checkModule, memoryLimits } from "../agent/compute/module-check";
import { DEFAULT_LIMITS, runTask, type TaskOutcome } from "../agent/compute/sandbox";
import { below, randomBytes, replayHintOnFailure, rngFor, seedNote, testSeed } from "./helpers/random";

const SEED = testSeed("COMPUTE_EXAMPLES_TEST_SEED");
const root = fileURLToPath(new URL("..", import.meta.url));
const bin = join(root, "dist/sharenode.js");
const TASKS = ["blake3-range", "blake3-range-simd", "thumbnail"];
const taskBytes = (name: string): Uint8Array => readFileSync(join(root, "dist/tasks", `${name}.wasm`));

/** Debian's b3sum of `bytes`, as hex. */
function b3sum(bytes: Uint8Array): string {
  const r = spawnSync("b3sum", ["--no-names"], { input: bytes, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`b3sum failed (exit ${r.status}): ${r.stderr}`);
  return r.stdout.trim();
}

function outputOf(outcome: TaskOutcome): Uint8Array {
  if (!outcome.ok) throw new Error(`the task failed: ${outcome.code}: ${outcome.reason}`);
  return outcome.output;
}

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex");

/** blake3-range's input: the expected hash, then the content. */
const rangeInput = (expectedHex: string, content: Uint8Array): Uint8Array =>
  Buffer.concat([Buffer.from(expectedHex, "hex"), content]);

interface Image {
  w: number;
  h: number;
  c: number;
  pixels: Uint8Array;
}

/** thumbnail's input: the 16-byte header, then the pixels. */
function thumbnailInput({ w, h, c, pixels }: Image, tw: number, th: number): Uint8Array {
  const header = Buffer.alloc(16);
  header.writeUInt32LE(w, 0);
  header.writeUInt32LE(h, 4);
  header.writeUInt32LE(c, 8);
  header.writeUInt16LE(tw, 12);
  header.writeUInt16LE(th, 14);
  return Buffer.concat([header, pixels]);
}

/**
 * The thumbnail by its definition: on an axis where source pixel x covers [x*TW, (x+1)*TW) and target pixel o
 * covers [o*W, (o+1)*W) (rows likewise with TH and H), a target value is the sum of the source values weighted
 * by their overlap across times their overlap down, over W*H, rounded half up. Direct, not separable and not
 * incremental as the task is.
 */
function thumbnailReference({ w, h, c, pixels }: Image, tw: number, th: number): Uint8Array {
  const out = Buffer.alloc(12 + tw * th * c);
  out.writeUInt32LE(tw, 0);
  out.writeUInt32LE(th, 4);
  out.writeUInt32LE(c, 8);
  const overlap = (a0: number, a1: number, b0: number, b1: number) => Math.max(0, Math.min(a1, b1) - Math.max(a0, b0));
  const area = w * h;
  for (let oy = 0; oy < th; oy++) {
    const y0 = Math.floor((oy * h) / th);
    const y1 = Math.ceil(((oy + 1) * h) / th);
    for (let ox = 0; ox < tw; ox++) {
      const x0 = Math.floor((ox * w) / tw);
      const x1 = Math.ceil(((ox + 1) * w) / tw);
      for (let k = 0; k < c; k++) {
        let sum = 0;
        for (let y = y0; y < y1; y++) {
          const wy = overlap(y * th, (y + 1) * th, oy * h, (oy + 1) * h);
          for (let x = x0; x < x1; x++)
            sum += wy * overlap(x * tw, (x + 1) * tw, ox * w, (ox + 1) * w) * pixels[(y * w + x) * c + k]!;
        }
        out[12 + (oy * tw + ox) * c + k] = Math.floor((sum + Math.floor(area / 2)) / area);
      }
    }
  }
  return out;
}

function randomImage(next: () => number, w: number, h: number, c: number): Image {
  return { w, h, c, pixels: randomBytes(next, w * h * c) };
}

describe("the example compute tasks", () => {
  it("are in dist/tasks/ after the build, as built in wasm/build/tasks/, and pass the module check", () => {
    for (const name of TASKS) {
      const bytes = taskBytes(name);
      expect(Buffer.from(bytes).equals(readFileSync(join(root, "wasm/build/tasks", `${name}.wasm`))), name).toBe(true);
      // Nothing imported but the host API (no env.seed or env.trace, which some AssemblyScript code pulls in).
      const verdict = checkModule(bytes, DEFAULT_LIMITS.memoryBytes);
      expect(verdict.ok, `${name}: ${JSON.stringify(verdict)}`).toBe(true);
      const [memory] = memoryLimits(bytes);
      expect(memory?.max, name).toBeGreaterThan(0);
      expect(memory!.max! * 65536, name).toBeLessThanOrEqual(DEFAULT_LIMITS.memoryBytes);
    }
  });

  describe("blake3-range", () => {
    // Around the kernel's edges: empty, one chunk, a block, chunk and 256 KiB input-region boundaries, and a
    // random length past a few regions.
    const lengths = [0, 1, 63, 64, 65, 1023, 1024, 1025, 2048, 3073, 262143, 262144, 262145, 524288 + 4097];

    it("gives b3sum's hash of the content and says whether it is the expected one (scalar and SIMD builds)", async () => {
      replayHintOnFailure("COMPUTE_EXAMPLES_TEST_SEED", SEED);
      const next = rngFor(SEED, "blake3-range");
      const sizes = [...lengths, 1_000_000 + below(next, 2_000_000)];
      const scalar = taskBytes("blake3-range");
      const simd = taskBytes("blake3-range-simd");
      for (const size of sizes) {
        const content = randomBytes(next, size);
        const expected = b3sum(content);
        const wrong = Buffer.from(expected, "hex");
        wrong[below(next, 32)]! ^= 1 << below(next, 8);
        for (const [build, module] of [
          ["scalar", scalar],
          ["simd", simd],
        ] as const) {
          const what = `${build}, ${size} bytes, ${seedNote("COMPUTE_EXAMPLES_TEST_SEED", SEED)}`;
          const match = outputOf(await runTask(module, rangeInput(expected, content)));
          expect(match.length, what).toBe(33);
          expect(match[0], what).toBe(1);
          expect(hex(match.subarray(1)), what).toBe(expected);
          const mismatch = outputOf(await runTask(module, rangeInput(hex(wrong), content)));
          expect(mismatch[0], what).toBe(0);
          expect(hex(mismatch.subarray(1)), what).toBe(expected);
        }
      }
    }, 60_000);

    it("aborts with code 1 on an input shorter than the expected hash", async () => {
      const outcome = await runTask(taskBytes("blake3-range"), new Uint8Array(31));
      expect(outcome).toMatchObject({ ok: false, code: "aborted", reason: expect.stringMatching(/code 1\b/) });
    });
  });

  describe("thumbnail", () => {
    it("equals the box filter by its definition: whole and fractional ratios, 1 to 4 channels, 1x1 and 1:1", async () => {
      replayHintOnFailure("COMPUTE_EXAMPLES_TEST_SEED", SEED);
      const next = rngFor(SEED, "thumbnail");
      const module = taskBytes("thumbnail");
      const cases: [number, number, number, number, number][] = [
        [8, 6, 1, 4, 3], // whole factor 2
        [37, 23, 3, 7, 5], // fractional both ways
        [64, 48, 4, 64, 48], // 1:1: the image itself
        [50, 40, 3, 1, 1], // the whole image into one pixel
        [1, 200, 2, 1, 17], // one column
        [300, 200, 3, 97, 61],
      ];
      for (let i = 0; i < 4; i++) {
        const w = 1 + below(next, 160);
        const h = 1 + below(next, 160);
        cases.push([w, h, 1 + below(next, 4), 1 + below(next, w), 1 + below(next, h)]);
      }
      for (const [w, h, c, tw, th] of cases) {
        const what = `${w}x${h}x${c} -> ${tw}x${th}, ${seedNote("COMPUTE_EXAMPLES_TEST_SEED", SEED)}`;
        const image = randomImage(next, w, h, c);
        const output = outputOf(await runTask(module, thumbnailInput(image, tw, th)));
        expect(hex(output), what).toBe(hex(thumbnailReference(image, tw, th)));
      }
    }, 60_000);

    it("a whole factor is the rounded mean of each block (a second, simpler reference)", async () => {
      const next = rngFor(SEED, "thumbnail-blocks");
      const image = randomImage(next, 12, 9, 3);
      const output = outputOf(await runTask(taskBytes("thumbnail"), thumbnailInput(image, 4, 3)));
      for (let oy = 0; oy < 3; oy++)
        for (let ox = 0; ox < 4; ox++)
          for (let k = 0; k < 3; k++) {
            let sum = 0;
            for (let y = oy * 3; y < oy * 3 + 3; y++)
              for (let x = ox * 3; x < ox * 3 + 3; x++) sum += image.pixels[(y * 12 + x) * 3 + k]!;
            expect(output[12 + (oy * 4 + ox) * 3 + k], `${ox},${oy},${k}`).toBe(Math.floor((sum + 4) / 9));
          }
    });

    it("aborts on a bad input: a short header (1), a size out of range (2), a length that is not the header's (3)", async () => {
      const module = taskBytes("thumbnail");
      const image = randomImage(rngFor(SEED, "thumbnail-bad"), 10, 10, 3);
      const good = thumbnailInput(image, 5, 5);
      const bad: [string, Uint8Array, number][] = [
        ["a short header", good.subarray(0, 15), 1],
        ["five channels", thumbnailInput({ ...image, c: 5 }, 5, 5), 2],
        ["a target wider than the image", thumbnailInput(image, 11, 5), 2],
        ["a target of zero rows", thumbnailInput(image, 5, 0), 2],
        ["a pixel missing", good.subarray(0, good.length - 1), 3],
        ["a byte too many", Buffer.concat([good, Buffer.alloc(1)]), 3],
      ];
      expect(outputOf(await runTask(module, good)).length).toBe(12 + 5 * 5 * 3);
      for (const [what, input, code] of bad) {
        const outcome = await runTask(module, input);
        expect(outcome, what).toMatchObject({
          ok: false,
          code: "aborted",
          reason: expect.stringMatching(new RegExp(`code ${code}\\b`)),
        });
      }
    });
  });

  it("sharenode compute run: each example's output, and the printed id is b3sum's of it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sharenode-compute-examples-"));
    try {
      const next = rngFor(SEED, "cli");
      const content = randomBytes(next, 3 * 1024 * 1024 + below(next, 1024));
      const expected = b3sum(content);
      const image = randomImage(next, 640, 480, 3);
      const runs: [string, Uint8Array, Uint8Array][] = [
        [
          "blake3-range",
          rangeInput(expected, content),
          Buffer.concat([Buffer.from([1]), Buffer.from(expected, "hex")]),
        ],
        ["thumbnail", thumbnailInput(image, 100, 75), thumbnailReference(image, 100, 75)],
      ];
      for (const [name, input, want] of runs) {
        writeFileSync(join(dir, `${name}.in`), input);
        const r = spawnSync(
          process.execPath,
          [
            bin,
            "compute",
            "run",
            join(root, "dist/tasks", `${name}.wasm`),
            "--input",
            `${name}.in`,
            "--output",
            `${name}.out`,
          ],
          { cwd: dir, encoding: "utf8" },
        );
        expect(r.stderr, name).toBe("");
        expect(r.status, name).toBe(0);
        const output = readFileSync(join(dir, `${name}.out`));
        expect(hex(output), name).toBe(hex(want));
        expect(r.stdout, name).toMatch(
          new RegExp(`^output ${b3sum(output)}\nbytes ${want.length}\ncpu_ms \\d+\nwall_ms \\d+\n$`),
        );
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
