// The compute sandbox (issue 14, first part: agent/compute/): modules compiled here from AssemblyScript with the
// project's compiler, run in a worker with the host API only. A good task's output and its BLAKE3 id; hostile
// modules each contained and reported with a code (a forbidden import, an endless loop, endless allocation,
// memory past the cap or without a maximum, oversized output, a trap), and the next task runs as before.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import asc from "assemblyscript/asc";
import { describe, expect, it } from "vitest";
import { blake3 } from "../agent/kernels/blake3";
import { checkModule, memoryLimits } from "../agent/compute/module-check";
import { runTask, Sandbox, type TaskLimits } from "../agent/compute/sandbox";
import { toHex } from "../agent/util/hex";
import { compileTask } from "./helpers/compute-tasks";

/** Compiles with a memory maximum in pages (null: none), optimization level 1 (quick to build). */
const compile = (body: string, maximumMemory: number | null = 16) => compileTask(body, maximumMemory, 1);

/** This process's threads (their ids), and a thread's nice value (field 19 of its stat). */
const threads = (): number[] => readdirSync("/proc/self/task").map(Number);
function niceOf(tid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]);
  } catch {
    return undefined;
  }
}

const LIMITS: TaskLimits = { cpuMs: 1000, wallMs: 5000, memoryBytes: 4 * 1024 * 1024, outputBytes: 64 * 1024 };

const XOR = `
export function run(): void {
  const n = input_length();
  const buf = new Uint8Array(n);
  read_input(buf.dataStart, 0, n);
  for (let i = 0; i < n; i++) buf[i] = buf[i] ^ 0xff;
  write_output(buf.dataStart, n);
}`;

describe("the compute sandbox", () => {
  it("runs a task on its input: the output, its BLAKE3 id, CPU and wall time", async () => {
    const input = new Uint8Array(10_000).map((_, i) => i & 0xff);
    const outcome = await runTask(await compile(XOR), input, LIMITS);
    expect(outcome.ok, JSON.stringify(outcome)).toBe(true);
    if (!outcome.ok) return;
    const expected = input.map((b) => b ^ 0xff);
    expect(Buffer.from(outcome.output).equals(Buffer.from(expected))).toBe(true);
    expect(outcome.outputId).toBe(toHex(blake3(expected)));
    expect(outcome.wallMs).toBeGreaterThanOrEqual(0);
    expect(outcome.cpuMs).toBeGreaterThanOrEqual(0);
  });

  it("reads the memory limits from the binary: the declared maximum, or none", async () => {
    expect(memoryLimits(await compile(XOR, 16))).toEqual([{ min: expect.any(Number), max: 16 }]);
    expect(memoryLimits(await compile(XOR, null))[0]!.max).toBeUndefined();
    expect(() => memoryLimits(new Uint8Array([1, 2, 3, 4]))).toThrow(/bad magic/);
  });

  const hostile: Array<[string, () => Promise<Uint8Array>, string]> = [
    [
      "imports a forbidden function (a clock)",
      () =>
        compile(
          `@external("env", "now") declare function now(): f64;\nexport function run(): void { if (now() > 0) unreachable(); }`,
        ),
      "forbidden-import",
    ],
    ["loops forever", () => compile(`export function run(): void { let i = 0; while (true) { i++; } }`), "cpu-time"],
    [
      "allocates without end",
      () =>
        compile(
          `const keep: Uint8Array[] = [];\nexport function run(): void { while (true) keep.push(new Uint8Array(65536)); }`,
        ),
      "trap|aborted",
    ],
    ["declares memory past the cap", () => compile(XOR, 1024), "memory-over-cap"],
    ["declares no memory maximum", () => compile(XOR, null), "unbounded-memory"],
    [
      "writes oversized output",
      () =>
        compile(
          `export function run(): void { const b = new Uint8Array(32768); for (let i = 0; i < 8; i++) write_output(b.dataStart, 32768); }`,
        ),
      "output-too-large",
    ],
    ["traps", () => compile(`export function run(): void { unreachable(); }`), "trap"],
    [
      "passes a pointer outside its memory",
      () => compile(`export function run(): void { write_output(0x7ffffff0, 64); }`),
      "trap",
    ],
  ];
  for (const [what, make, code] of hostile) {
    it(`a module that ${what} is contained and reported (${code}); the next task runs`, async () => {
      const outcome = await runTask(await make(), new Uint8Array(16), LIMITS);
      expect(outcome.ok).toBe(false);
      if (outcome.ok) return;
      expect(outcome.code).toMatch(new RegExp(`^(${code})$`));
      expect(outcome.reason).toMatch(/^[^\n]+$/);
      // Contained: the wall clock did not run out for a CPU-bound module, the CPU limit held it.
      if (code === "cpu-time") expect(outcome.wallMs).toBeLessThan(LIMITS.wallMs);
      const next = await runTask(await compile(XOR), new Uint8Array([1, 2, 3]), LIMITS);
      expect(next.ok && Array.from(next.output)).toEqual([254, 253, 252]);
    }, 30_000);
  }

  it("sharenode compute run: the output id and metering, exit 0; a stopped task exit 1 with its code; bad usage exit 2", async () => {
    const bin = fileURLToPath(new URL("../dist/sharenode.js", import.meta.url));
    const dir = mkdtempSync(join(tmpdir(), "sharenode-compute-"));
    try {
      writeFileSync(join(dir, "xor.wasm"), await compile(XOR));
      writeFileSync(join(dir, "loop.wasm"), await compile(`export function run(): void { while (true) {} }`));
      writeFileSync(join(dir, "in.bin"), new Uint8Array([0, 1, 2]));
      const cli = (...args: string[]) =>
        spawnSync(process.execPath, [bin, "compute", ...args], { cwd: dir, encoding: "utf8" });
      const ok = cli("run", "xor.wasm", "--input", "in.bin", "--output", "out.bin");
      expect(ok.stderr).toBe("");
      expect(ok.status).toBe(0);
      const id = toHex(blake3(new Uint8Array([255, 254, 253])));
      expect(ok.stdout).toMatch(new RegExp(`^output ${id}\nbytes 3\ncpu_ms \\d+\nwall_ms \\d+\n$`));
      expect(Array.from(readFileSync(join(dir, "out.bin")))).toEqual([255, 254, 253]);
      const stopped = cli("run", "loop.wasm", "--cpu-ms", "200");
      expect(stopped.status).toBe(1);
      expect(stopped.stderr).toMatch(
        /^sharenode: compute run: cpu-time: used more than 200 ms of CPU \(cpu \d+ ms, wall \d+ ms\)\n$/,
      );
      const bad = cli("run", "xor.wasm", "--cpu-ms", "0");
      expect(bad.status).toBe(2);
      expect(bad.stderr).toMatch(/--cpu-ms must be a whole number from 1/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it("an AssemblyScript module exporting Uint8Array_ID runs as run(input: Uint8Array): Uint8Array through @assemblyscript/loader", async () => {
    const r = await asc.compileString(
      {
        "task.ts": `
export const Uint8Array_ID = idof<Uint8Array>();
export function run(input: Uint8Array): Uint8Array {
  const out = new Uint8Array(input.length * 2);
  for (let i = 0; i < input.length; i++) { out[2 * i] = input[i]; out[2 * i + 1] = <u8>(input[i] + 1); }
  return out;
}`,
      },
      // exportRuntime (the loader's __new and __pin) is an asc option its CompilerOptions type does not list.
      { optimizeLevel: 1, runtime: "stub", exportRuntime: true, maximumMemory: 16 } as Parameters<
        typeof asc.compileString
      >[1],
    );
    if (r.error || !r.binary) throw new Error(`asc: ${r.error?.message}`);
    const input = new Uint8Array(5000).map((_, i) => (i * 7) & 0xff);
    const outcome = await runTask(r.binary, input, LIMITS);
    expect(outcome.ok, JSON.stringify(outcome)).toBe(true);
    if (!outcome.ok) return;
    const expected = new Uint8Array(10_000);
    input.forEach((b, i) => {
      expected[2 * i] = b;
      expected[2 * i + 1] = (b + 1) & 0xff;
    });
    expect(Buffer.from(outcome.output).equals(Buffer.from(expected))).toBe(true);
    // The output cap holds for a returned array too.
    const capped = await runTask(r.binary, input, { ...LIMITS, outputBytes: 9999 });
    expect(capped).toMatchObject({ ok: false, code: "output-too-large" });
  }, 30_000);

  it("an AssemblyScript assertion's message reaches the reason (read by the loader from the module's memory)", async () => {
    const outcome = await runTask(
      await compile(`export function run(): void { assert(input_length() == 3, "wanted three bytes"); }`),
      new Uint8Array(5),
      LIMITS,
    );
    expect(outcome).toMatchObject({ ok: false, code: "aborted" });
    if (!outcome.ok) expect(outcome.reason).toMatch(/^the task aborted: wanted three bytes at \d+:\d+$/);
  });

  it("runs the task's thread at the nice value asked for, and only that thread", async () => {
    // A task that spins until stopped; its thread's nice value is read from /proc while it runs.
    const spin = await compile(`export function run(): void { while (true) {} }`);
    const before = new Set(threads());
    const running = runTask(spin, new Uint8Array(0), { ...LIMITS, cpuMs: 600, wallMs: 5000 }, { nice: 15 });
    let seen: number | undefined;
    for (let i = 0; i < 100 && seen === undefined; i++) {
      await new Promise((r) => setTimeout(r, 20));
      for (const tid of threads()) if (!before.has(tid) && niceOf(tid) === 15) seen = tid;
    }
    expect(seen, "a new thread at nice 15").toBeDefined();
    expect(niceOf(process.pid)).toBe(0);
    expect(await running).toMatchObject({ ok: false, code: "cpu-time" });
  }, 30_000);

  it("warm workers: a worker whose task ended by itself takes the next task, one stopped from outside is ended; nothing of a task is left for the next", async () => {
    const sandbox = new Sandbox({ idleWorkers: 1 });
    try {
      // A module with state: its global counts the runs of this instance. A fresh instance per task says 1 every time.
      const counter = await compile(`let runs: i32 = 0;
export function run(): void { runs++; const b = new Uint8Array(4); store<i32>(b.dataStart, runs); write_output(b.dataStart, 4); }`);
      const first = await sandbox.run(counter, new Uint8Array(0), LIMITS);
      expect(sandbox.workers).toBe(1);
      const second = await sandbox.run(counter, new Uint8Array(0), LIMITS);
      expect(sandbox.workers).toBe(1);
      for (const o of [first, second]) expect(o.ok && Array.from(o.output)).toEqual([1, 0, 0, 0]);
      // A trap ends the task by itself: the worker is kept.
      expect(
        await sandbox.run(await compile(`export function run(): void { unreachable(); }`), new Uint8Array(0), LIMITS),
      ).toMatchObject({ ok: false, code: "trap" });
      expect(sandbox.workers).toBe(1);
      // Stopped past its CPU budget: that worker is ended; the next task gets a new one.
      const spin = await compile(`export function run(): void { while (true) {} }`);
      expect(await sandbox.run(spin, new Uint8Array(0), { ...LIMITS, cpuMs: 100 })).toMatchObject({
        ok: false,
        code: "cpu-time",
      });
      expect(sandbox.workers).toBe(0);
      // Started ahead of the next task (the queue does this while tasks wait): that task takes it.
      sandbox.prepare(1);
      expect(sandbox.workers).toBe(1);
      const after = await sandbox.run(counter, new Uint8Array(0), LIMITS);
      expect(sandbox.workers).toBe(1);
      expect(after.ok && Array.from(after.output)).toEqual([1, 0, 0, 0]);
      // An abort stops a task at once.
      const controller = new AbortController();
      const stopping = sandbox.run(spin, new Uint8Array(0), { ...LIMITS, cpuMs: 5000 }, { signal: controller.signal });
      setTimeout(() => controller.abort("enough"), 100);
      expect(await stopping).toMatchObject({ ok: false, code: "stopped", reason: "enough" });
    } finally {
      await sandbox.close();
    }
    expect(sandbox.workers).toBe(0);
  }, 30_000);

  it("refuses bytes that are not a module", () => {
    expect(checkModule(new Uint8Array([0, 97, 115, 109, 9, 9]), 1 << 20)).toMatchObject({
      ok: false,
      code: "bad-module",
    });
  });
});
