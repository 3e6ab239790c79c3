// The compute sandbox (issue 14): what running a task costs besides the task.
// - start overhead: the sandbox (agent/compute/sandbox.ts) on a trivial module (an empty run(), one page of memory):
//   cold, the first task of a process (`sharenode compute run` of the built bundle, a fresh process each, its own
//   wall_ms), and warm (the agent's Sandbox again and again in this process: a warm worker, the input shared). Target: <= 20 ms on x86. Then where the time
//   goes, each piece alone: the module check (compile), a bare eval'd worker to its first message (without and
//   with the sandbox's resourceLimits, and with the AssemblyScript loader's source evaluated in it as the sandbox's
//   worker does), terminating it, a task sent to a worker that is already running (what a pool would cost), and a
//   worker given 16 MiB of input in workerData, by postMessage, or in a SharedArrayBuffer.
// - sandbox cost: the blake3-range example (dist/tasks/) on 1 MiB and 16 MiB inside the agent's Sandbox against the same
//   kernel outside it (agent/kernels/blake3.ts, the same AssemblyScript source instantiated in this thread), like
//   with like: the scalar task against the scalar kernel, the SIMD task against the SIMD kernel. Rounds in a fresh
//   random order, medians, ratios = median of per-round ratios (kernel time / sandbox time). Target >= 0.9x. The
//   marginal rate (the 15 MiB between the two sizes over the time between them) leaves the fixed costs out. The
//   16 MiB task again in a worker already running shows what is left without a worker start: its input cloned by
//   postMessage (the module compiled per task, or once: compile and tier-up), or already in shared memory. And the
//   task alone, run() timed inside one instance, in this thread and in a worker: what a thread costs by itself.
// Run by `npm run bench` (test/bench/run.mjs through ts-bench.mjs), or alone:
//   node test/bench/ts-bench.mjs compute-bench [--quick] [--json]
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { AS_LOADER_SOURCE } from "../../agent/compute/loader-source.generated";
import { checkModule } from "../../agent/compute/module-check";
import { DEFAULT_LIMITS, Sandbox } from "../../agent/compute/sandbox";
import { blake3Kernel, simdSupported, type Blake3Build } from "../../agent/kernels/blake3";
import { prng, seededBytes, shuffled } from "../helpers/prng.mjs";
import { median } from "./box-server";

const root = fileURLToPath(new URL("../..", import.meta.url));
const bin = join(root, "dist/sharenode.js");
const MIB = 1 << 20;

// The smallest task: (type () -> ()), one function, memory of 1 page with a maximum of 1, exports run and memory,
// run's body empty. Hand-written (WebAssembly core spec 5.5) so that nothing but the sandbox is measured.
// prettier-ignore
const TRIVIAL = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
  0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: func () -> ()
  0x03, 0x02, 0x01, 0x00, // function section: one, of type 0
  0x05, 0x04, 0x01, 0x01, 0x01, 0x01, // memory section: min 1, max 1
  0x07, 0x10, 0x02, 0x03, 0x72, 0x75, 0x6e, 0x00, 0x00, 0x06, 0x6d, 0x65, 0x6d, 0x6f, 0x72, 0x79, 0x02, 0x00, // exports
  0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code section: an empty body
]);

// What the sandbox's worker gives a task (the host API), without its budgets: one instance of the module on its
// input, run() timed inside. Plain JavaScript, used by the workers below and, the same source, in this thread.
const RUN_ONCE = `(module, input) => {
  let memory;
  const chunks = [];
  const imports = {
    sharenode: {
      input_length: () => input.length,
      read_input: (ptr, offset, len) => {
        const n = Math.max(0, Math.min(len, input.length - offset));
        new Uint8Array(memory.buffer, ptr, n).set(input.subarray(offset, offset + n));
        return n;
      },
      write_output: (ptr, len) => { chunks.push(new Uint8Array(memory.buffer, ptr, len).slice()); },
      abort: (code) => { throw new Error("aborted " + code); },
    },
    env: { abort: () => { throw new Error("aborted"); } },
  };
  const instance = new WebAssembly.Instance(module, imports);
  memory = instance.exports.memory;
  const t0 = performance.now();
  instance.exports.run();
  return { ms: performance.now() - t0, output: Buffer.concat(chunks) };
}`;

// A worker that runs every task it is sent, to measure a pool's cost and compile/tier-up against a module compiled
// once: it answers with the output.
const POOL_WORKER = `const runOnce = ${RUN_ONCE};
const { parentPort } = require("node:worker_threads");
parentPort.on("message", ({ module, input }) => parentPort.postMessage(runOnce(module, input).output));
`;

// The task alone, in this thread and in a worker (that one answers with run()'s own time): whether a task is slower
// in a worker than in the main thread by itself.
const TIMED_WORKER = `const runOnce = ${RUN_ONCE};
const { parentPort } = require("node:worker_threads");
parentPort.on("message", ({ module, input }) => parentPort.postMessage(runOnce(module, input).ms));`;

const SANDBOX_LIMITS = { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 4, stackSizeMb: 1 };

/** Milliseconds from new Worker(source) to its first message, and then to terminate() resolving. */
async function workerStart(source: string, limits: boolean): Promise<{ start: number; terminate: number }> {
  const t0 = performance.now();
  const worker = new Worker(source, { eval: true, ...(limits ? { resourceLimits: SANDBOX_LIMITS } : {}) });
  await new Promise((resolve, reject) => {
    worker.once("message", resolve);
    worker.once("error", reject);
  });
  const t1 = performance.now();
  await worker.terminate();
  return { start: t1 - t0, terminate: performance.now() - t1 };
}

class PoolWorker {
  private readonly worker = new Worker(POOL_WORKER, { eval: true, resourceLimits: SANDBOX_LIMITS });
  private pending: { resolve(output: Uint8Array): void; reject(err: Error): void } | undefined;
  constructor() {
    this.worker.on("message", (output: Uint8Array) => this.pending?.resolve(output));
    this.worker.on("error", (err) => this.pending?.reject(err));
  }
  run(module: WebAssembly.Module, input: Uint8Array): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      this.worker.postMessage({ module, input });
    });
  }
  stop(): Promise<number> {
    return this.worker.terminate();
  }
}

/** Milliseconds from new Worker to its first message when it is given `input` (16 MiB) one way or another. */
async function workerWithInput(input: Uint8Array, how: "workerData" | "message" | "shared"): Promise<number> {
  const t0 = performance.now();
  let data: Uint8Array = input;
  if (how === "shared") {
    data = new Uint8Array(new SharedArrayBuffer(input.length));
    data.set(input);
  }
  const worker = new Worker(
    `const { parentPort, workerData } = require("node:worker_threads");
if (workerData) parentPort.postMessage(workerData.input.length);
else parentPort.once("message", (m) => parentPort.postMessage(m.input.length));`,
    { eval: true, resourceLimits: SANDBOX_LIMITS, ...(how === "message" ? {} : { workerData: { input: data } }) },
  );
  if (how === "message") worker.postMessage({ input: data });
  await new Promise((resolve, reject) => {
    worker.once("message", resolve);
    worker.once("error", reject);
  });
  const t1 = performance.now();
  await worker.terminate();
  return t1 - t0;
}

async function timed<T>(fn: () => Promise<T> | T): Promise<[number, T]> {
  const t0 = performance.now();
  const value = await fn();
  return [performance.now() - t0, value];
}

/** Repeats fn for at least `ms` (at least once); returns milliseconds per call. */
async function sample(fn: () => Promise<unknown> | unknown, ms: number): Promise<number> {
  let calls = 0;
  const t0 = performance.now();
  let elapsed: number;
  do {
    await fn();
    calls++;
    elapsed = performance.now() - t0;
  } while (elapsed < ms);
  return elapsed / calls;
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

export async function main(args: string[]): Promise<void> {
  const quick = args.includes("--quick");
  const json = args.includes("--json");
  const rounds = quick ? 3 : 9;
  const sampleMs = quick ? 100 : 300;
  const seed = Number(process.env.BENCH_SEED ?? Date.now() % 2 ** 31);
  const random = prng(seed);
  // The agent's sandbox: warm workers (a worker whose task ended by itself takes the next), inputs shared.
  const sandbox = new Sandbox({ idleWorkers: 1 });
  const mustRun = async (module: Uint8Array, input: Uint8Array): Promise<Uint8Array> => {
    const outcome = await sandbox.run(module, input, { ...DEFAULT_LIMITS, cpuMs: 60_000, wallMs: 120_000 });
    if (!outcome.ok) throw new Error(`compute-bench: the task failed: ${outcome.code}: ${outcome.reason}`);
    return outcome.output;
  };

  // --- start overhead -----------------------------------------------------------------------------------------
  const [firstInProcess] = await timed(() => mustRun(TRIVIAL, new Uint8Array(0)));
  const work = mkdtempSync(join(tmpdir(), "sharenode-bench-compute-"));
  const cold: number[] = [];
  try {
    writeFileSync(join(work, "trivial.wasm"), TRIVIAL);
    for (let i = 0; i < (quick ? 5 : 15); i++) {
      const r = spawnSync(process.execPath, [bin, "compute", "run", join(work, "trivial.wasm")], { encoding: "utf8" });
      const wall = /^wall_ms (\d+)$/m.exec(r.stdout)?.[1];
      if (r.status !== 0 || wall === undefined)
        throw new Error(`compute-bench: sharenode compute run failed (exit ${r.status}): ${r.stderr}`);
      cold.push(Number(wall));
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const warm: number[] = [];
  for (let i = 0; i < (quick ? 10 : 40); i++) warm.push((await timed(() => mustRun(TRIVIAL, new Uint8Array(0))))[0]);

  // Where it goes: each piece alone, warm, in a fresh random order per round.
  const bare = `require("node:worker_threads").parentPort.postMessage(0);`;
  const withLoader = `const loader = (function () { const exports = {}, module = undefined, define = undefined;
${AS_LOADER_SOURCE};
return exports.default || exports; })();
require("node:worker_threads").parentPort.postMessage(typeof loader.instantiateSync);`;
  const pool = new PoolWorker();
  const big = seededBytes(16 * MIB, 14);
  const trivialModule = new WebAssembly.Module(TRIVIAL);
  const pieces: Record<string, () => Promise<number>> = {
    "module check (compile), trivial module": async () => (await timed(() => checkModule(TRIVIAL, 1 << 20)))[0],
    "bare worker to its first message": async () => (await workerStart(bare, false)).start,
    "  with the sandbox's resourceLimits": async () => (await workerStart(bare, true)).start,
    "  and the loader's source evaluated": async () => (await workerStart(withLoader, true)).start,
    "terminate() of that worker": async () => (await workerStart(withLoader, true)).terminate,
    "a task sent to a running worker (a pool)": async () => (await timed(() => pool.run(trivialModule, TRIVIAL)))[0],
    "a worker given 16 MiB of input in workerData": () => workerWithInput(big, "workerData"),
    "  by postMessage instead (cloned)": () => workerWithInput(big, "message"),
    "  in a SharedArrayBuffer instead (copied once here)": () => workerWithInput(big, "shared"),
  };
  const pieceTimes: Record<string, number[]> = Object.fromEntries(Object.keys(pieces).map((k) => [k, []]));
  for (const name of Object.keys(pieces)) await pieces[name]!();
  for (let r = 0; r < (quick ? 5 : 15); r++)
    for (const name of shuffled(Object.keys(pieces), random)) pieceTimes[name]!.push(await pieces[name]!());

  // --- sandbox cost -------------------------------------------------------------------------------------------
  const builds: Blake3Build[] = simdSupported() ? ["scalar", "simd"] : ["scalar"];
  const sizes = [MIB, 16 * MIB];
  const content = big;
  const cost: Record<string, { kernel: number; sandbox: number; ratio: number }> = {};
  const marginal: Record<string, { kernel: number; sandbox: number }> = {};
  const inWorker: Record<string, Record<string, { ms: number; ratio: number }>> = {};
  const taskAlone: Record<string, { here: number; worker: number }> = {};
  for (const build of builds) {
    const kernel = blake3Kernel(build);
    const task = readFileSync(
      join(root, "dist/tasks", build === "simd" ? "blake3-range-simd.wasm" : "blake3-range.wasm"),
    );
    const perSize: Record<number, { kernel: number[]; sandbox: number[] }> = {};
    for (const size of sizes) {
      const data = content.subarray(0, size);
      const expected = kernel.hash(data);
      // The task's input as the agent hands it over: read into shared memory (from the store), not copied again.
      const input = new Uint8Array(new SharedArrayBuffer(32 + size));
      input.set(expected);
      input.set(data, 32);
      // The same work on both sides, or the race means nothing.
      const got = await mustRun(task, input);
      if (got[0] !== 1 || hex(got.subarray(1)) !== hex(expected))
        throw new Error(`compute-bench: blake3-range (${build}) gives ${hex(got)}, the kernel ${hex(expected)}`);
      const candidates = {
        kernel: () => kernel.hash(data),
        sandbox: () => mustRun(task, input),
      };
      const times: { kernel: number[]; sandbox: number[] } = { kernel: [], sandbox: [] };
      for (const name of shuffled(["kernel", "sandbox"] as const, random)) await sample(candidates[name], sampleMs);
      for (let r = 0; r < rounds; r++)
        for (const name of shuffled(["kernel", "sandbox"] as const, random))
          times[name].push(await sample(candidates[name], sampleMs));
      perSize[size] = times;
      cost[`${build}, ${size / MIB} MiB`] = {
        kernel: median(times.kernel),
        sandbox: median(times.sandbox),
        ratio: median(times.kernel.map((k, i) => k / times.sandbox[i]!)),
      };
    }
    const span = (sizes[1]! - sizes[0]!) / 1e6;
    marginal[build] = {
      kernel: span / ((median(perSize[sizes[1]!]!.kernel) - median(perSize[sizes[0]!]!.kernel)) / 1000),
      sandbox: span / ((median(perSize[sizes[1]!]!.sandbox) - median(perSize[sizes[0]!]!.sandbox)) / 1000),
    };
    // The same 16 MiB in a worker that is already running (what is left without a worker start per task): the
    // input cloned by postMessage (into fresh memory in the worker, as workerData is), the module compiled for
    // each task (V8 compiles lazily, then tiers hot code up) or once; and the input already in a SharedArrayBuffer
    // (as if the caller had read it there), which the worker reads in place, as the kernel reads its caller's.
    const data = content.subarray(0, 16 * MIB);
    const input = Buffer.concat([kernel.hash(data), data]);
    const shared = new Uint8Array(new SharedArrayBuffer(input.length));
    shared.set(input);
    const once = new WebAssembly.Module(task);
    const variants: Record<string, () => unknown> = {
      kernel: () => kernel.hash(data),
      "input cloned, module compiled per task": () => pool.run(new WebAssembly.Module(task), input),
      "input cloned, module compiled once": () => pool.run(once, input),
      "input shared, module compiled per task": () => pool.run(new WebAssembly.Module(task), shared),
    };
    const got = await pool.run(once, input);
    if (got[0] !== 1) throw new Error(`compute-bench: blake3-range (${build}) in the running worker: no match`);
    const times: Record<string, number[]> = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
    for (const name of shuffled(Object.keys(variants), random)) await sample(variants[name]!, sampleMs);
    for (let r = 0; r < rounds; r++)
      for (const name of shuffled(Object.keys(variants), random))
        times[name]!.push(await sample(variants[name]!, sampleMs));
    // The task alone, run() timed inside an instance, in this thread and in a worker (the input shared).
    const runHere = new Function(`return ${RUN_ONCE}`)() as (m: WebAssembly.Module, i: Uint8Array) => { ms: number };
    const timedHere = (m: WebAssembly.Module, i: Uint8Array) => runHere(m, i).ms;
    const timedWorker = new Worker(TIMED_WORKER, { eval: true });
    const timedThere = (m: WebAssembly.Module, i: Uint8Array) =>
      new Promise<number>((resolve) => {
        timedWorker.once("message", resolve);
        timedWorker.postMessage({ module: m, input: i });
      });
    const alone = { here: [] as number[], worker: [] as number[] };
    for (let r = 0; r < rounds + 2; r++) {
      const h = timedHere(once, shared);
      const w = await timedThere(once, shared);
      if (r >= 2) {
        alone.here.push(h);
        alone.worker.push(w);
      }
    }
    await timedWorker.terminate();
    taskAlone[build] = { here: median(alone.here), worker: median(alone.worker) };
    inWorker[build] = Object.fromEntries(
      Object.keys(variants)
        .filter((k) => k !== "kernel")
        .map((k) => [k, { ms: median(times[k]!), ratio: median(times.kernel!.map((v, i) => v / times[k]![i]!)) }]),
    );
  }
  await pool.stop();
  await sandbox.close();

  const start = {
    coldMs: median(cold),
    firstInProcessMs: firstInProcess,
    warmMs: median(warm),
    pieces: Object.fromEntries(Object.entries(pieceTimes).map(([k, v]) => [k.trim(), median(v)])),
  };
  const targets = [
    { what: "start overhead, warm (x86)", value: start.warmMs, goal: "<= 20 ms", met: start.warmMs <= 20 },
    { what: "start overhead, cold (x86)", value: start.coldMs, goal: "<= 20 ms", met: start.coldMs <= 20 },
    ...Object.entries(cost)
      .filter(([k]) => k.endsWith("16 MiB"))
      .map(([k, c]) => ({ what: `sandbox/kernel, ${k}`, value: c.ratio, goal: ">= 0.9x", met: c.ratio >= 0.9 })),
  ];
  if (json) {
    console.log(JSON.stringify({ seed, start, cost, marginal, inWorker, taskAlone, targets }, null, 2));
    return;
  }
  const ms = (v: number) => `${v.toFixed(1).padStart(8)} ms`;
  console.log(`\nthe compute sandbox (issue 14): node ${process.version} ${process.arch}, medians (seed ${seed})`);
  console.log(`  start overhead, trivial module, wall`);
  console.log(`    cold: first task of a process (sharenode compute run x${cold.length})  ${ms(start.coldMs)}`);
  console.log(`    first task of this process (a new worker)                     ${ms(start.firstInProcessMs)}`);
  console.log(`    warm: the agent's sandbox again, a warm worker (x${warm.length})            ${ms(start.warmMs)}`);
  console.log(`  where it goes (each piece alone, warm)`);
  for (const [name, v] of Object.entries(pieceTimes)) console.log(`    ${name.padEnd(61)}${ms(median(v))}`);
  console.log(`  sandbox cost: blake3-range in the agent's sandbox (warm) against the same kernel here (like builds)`);
  for (const [name, c] of Object.entries(cost)) {
    console.log(
      `    ${name.padEnd(16)} kernel ${ms(c.kernel)}  sandbox ${ms(c.sandbox)}  kernel/sandbox ${c.ratio.toFixed(2)}x`,
    );
  }
  for (const [build, m] of Object.entries(marginal)) {
    console.log(
      `    ${build.padEnd(6)} marginal rate (1 -> 16 MiB): kernel ${m.kernel.toFixed(0)} MB/s, sandbox ${m.sandbox.toFixed(0)} MB/s` +
        ` (${(m.sandbox / m.kernel).toFixed(2)}x)`,
    );
  }
  console.log(`  the same 16 MiB in a worker already running (no worker start), kernel/that`);
  for (const [build, variants] of Object.entries(inWorker))
    for (const [name, v] of Object.entries(variants))
      console.log(`    ${build.padEnd(6)} ${name.padEnd(50)} ${ms(v.ms)}  ${v.ratio.toFixed(2)}x`);
  console.log(`  the task alone, 16 MiB, run() timed inside one instance: this thread against a worker`);
  for (const [build, t] of Object.entries(taskAlone))
    console.log(
      `    ${build.padEnd(6)} this thread ${ms(t.here)}  a worker ${ms(t.worker)}  (${(t.here / t.worker).toFixed(2)}x)`,
    );
  console.log("\ntargets (issue 14)");
  for (const t of targets)
    console.log(
      `  ${t.met ? "met   " : "MISSED"} ${t.what.padEnd(40)} ${t.value.toFixed(2).padStart(10)} (target ${t.goal})`,
    );
}
