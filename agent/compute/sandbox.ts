// Runs compute tasks (issue 14) in worker threads: the module checked first (module-check.ts), instantiated with the
// host API only, its `run` export called. Budgets: wall-clock time (a timer), CPU time (the worker's thread, read
// from /proc/self/task/<tid>/stat while it runs: a module spinning in a loop cannot stop it), memory (the module's
// declared maximum, checked before it runs; V8's resourceLimits for the worker's own heap) and output bytes
// (checked at each write). Past any of them the worker is terminated and the task fails with a code.
//
// Warm workers: starting a worker (a thread with its own V8 isolate and Node environment) costs about 40 ms of CPU
// on x86 and far more on a Cortex-A5, more than many tasks. A worker whose task ended by itself (done, trapped,
// aborted: nothing the module did outlives its instance) takes the next task; one stopped from outside (a budget,
// an abort) is terminated, and idle ones are ended after a while. Compiled modules are kept by BLAKE3 id, a few.
//
// The host API, imported from module "sharenode":
//   input_length() -> i32                      the input's length in bytes
//   read_input(ptr: i32, offset: i32, len: i32) -> i32   copies input[offset..offset+len) to memory at ptr,
//                                              returns the bytes copied (0 at the end)
//   write_output(ptr: i32, len: i32)           appends memory[ptr..ptr+len) to the output
//   abort(code: i32)                           ends the task as failed
// and `env.abort` (AssemblyScript's assertion hook) as abort, its message read from the module's memory. The module
// exports `memory` and `run()`.
//
// Modules load through @assemblyscript/loader (its source embedded: loader-source.generated.ts), which gives
// AssemblyScript's strings and arrays across the boundary: a module that exports `Uint8Array_ID` (and its runtime,
// asc --exportRuntime) is called as `run(input: Uint8Array): Uint8Array`, the input passed in and the output read
// out by the loader. Plain modules are instantiated the same way (the loader adds nothing they do not export).
import { readFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { setPriority } from "node:os";
import { Worker } from "node:worker_threads";
import { HostPaths } from "../../board/host-paths.js";
import { blake3 } from "../kernels/blake3.js";
import { toHex } from "../util/hex.js";
import { AS_LOADER_SOURCE } from "./loader-source.generated.js";
import { checkModule } from "./module-check.js";

export interface TaskLimits {
  cpuMs: number;
  wallMs: number;
  memoryBytes: number;
  outputBytes: number;
}

export const DEFAULT_LIMITS: TaskLimits = {
  cpuMs: 10_000,
  wallMs: 30_000,
  memoryBytes: 64 * 1024 * 1024,
  outputBytes: 1024 * 1024,
};

export type TaskOutcome =
  | { ok: true; outputId: string; output: Uint8Array; cpuMs: number; wallMs: number }
  | { ok: false; code: string; reason: string; cpuMs: number; wallMs: number };

/** Clock ticks per second of /proc's utime and stime: USER_HZ, 100 on every Linux these boxes run. */
const USER_HZ = 100;

// The worker: plain JavaScript (eval'd), so the one-file bundle needs no second file for it. The loader's UMD build
// sees an "exports" object and no "define" or "module", and fills the object. Each task is a message; nothing of
// one task is left for the next (a new instance, new memory, new output).
const WORKER_SOURCE = `
const loader = (function () {
  const exports = {}, module = undefined, define = undefined;
  ${AS_LOADER_SOURCE};
  return exports.default || exports;
})();
const { parentPort, workerData } = require("node:worker_threads");
const { readlinkSync } = require("node:fs");
parentPort.postMessage({ tid: Number(readlinkSync(workerData.threadSelf).split("/").pop()) });
class TaskFailure extends Error { constructor(code, message) { super(message); this.code = code; } }
function runOne({ module, inputBuffer, inputOffset, inputLength, outputBytes }) {
  const input = new Uint8Array(inputBuffer, inputOffset, inputLength);
  let memory;
  let loaded;
  const chunks = [];
  let written = 0;
  const view = (ptr, len) => {
    if (!Number.isInteger(ptr) || !Number.isInteger(len) || ptr < 0 || len < 0 || ptr + len > memory.buffer.byteLength)
      throw new TaskFailure("trap", "the task passed a range outside its memory");
    return new Uint8Array(memory.buffer, ptr, len);
  };
  const imports = {
    sharenode: {
      input_length: () => input.length,
      read_input: (ptr, offset, len) => {
        const n = Math.max(0, Math.min(len, input.length - offset));
        view(ptr, n).set(input.subarray(offset, offset + n));
        return n;
      },
      write_output: (ptr, len) => {
        written += len;
        if (written > outputBytes) throw new TaskFailure("output-too-large", "the output passed its cap of " + outputBytes + " bytes");
        chunks.push(view(ptr, len).slice());
      },
      abort: (code) => { throw new TaskFailure("aborted", "the task aborted (code " + code + ")"); },
    },
    env: {
      abort: (message, _file, line, column) => {
        let text = "";
        try { if (message && loaded) text = String(loaded.exports.__getString(message)).slice(0, 200) + " "; } catch {}
        throw new TaskFailure("aborted", "the task aborted: " + text + "at " + line + ":" + column);
      },
    },
  };
  try {
    loaded = loader.instantiateSync(module, imports);
    const x = loaded.exports;
    memory = x.memory;
    if (typeof x.run !== "function" || !(memory instanceof WebAssembly.Memory))
      throw new TaskFailure("bad-module", "the module exports no run() or no memory");
    if (x.Uint8Array_ID !== undefined) {
      // AssemblyScript's run(input: Uint8Array): Uint8Array, through the loader.
      const id = x.Uint8Array_ID instanceof WebAssembly.Global ? x.Uint8Array_ID.value : x.Uint8Array_ID;
      let result;
      try {
        const inputPtr = x.__pin(x.__newArray(id, input));
        result = x.__getUint8Array(x.run(inputPtr));
        x.__unpin(inputPtr);
      } catch (err) {
        if (err instanceof TaskFailure || err instanceof WebAssembly.RuntimeError) throw err;
        throw new TaskFailure("bad-module", "run(input: Uint8Array): Uint8Array through the loader: " + String(err && err.message || err).split("\\n")[0]);
      }
      written += result.length;
      if (written > outputBytes) throw new TaskFailure("output-too-large", "the output passed its cap of " + outputBytes + " bytes");
      chunks.push(result);
    } else x.run();
    const output = new Uint8Array(written);
    let at = 0;
    for (const c of chunks) { output.set(c, at); at += c.length; }
    parentPort.postMessage({ ok: true, output }, [output.buffer]);
  } catch (err) {
    const code = err instanceof TaskFailure ? err.code : err instanceof WebAssembly.RuntimeError ? "trap" : "failed";
    parentPort.postMessage({ ok: false, code, reason: String(err && err.message || err).split("\\n")[0] });
  }
}
parentPort.on("message", runOne);
`;

export interface SandboxOptions {
  paths?: HostPaths;
  /** How often the worker's CPU time is read (default 20 ms). */
  pollMs?: number;
  /**
   * The worker threads' nice value (Linux: setpriority on a thread's id moves that thread only), so that tasks yield
   * the CPU to serving and to the owner's own use; default: the agent's own.
   */
  nice?: number;
  /** Idle workers kept for the next tasks (default 2); 0: a new worker per task. */
  idleWorkers?: number;
  /** An idle worker is ended after this long without a task (default 30 s): its memory goes back. */
  idleMs?: number;
}

export interface RunOptions {
  /** Aborting stops the task at once (the worker terminated): it ends `stopped`, with the reason given. */
  signal?: AbortSignal;
}

interface WarmWorker {
  worker: Worker;
  /** The thread's id, once the worker has said it. */
  tid: Promise<number>;
  idleTimer?: NodeJS.Timeout;
  /**
   * The worker's input, shared rather than copied at each task: a copy lands in fresh pages in the worker, and
   * their faults cost more than hashing the bytes (16 MiB: about 47 ms on x86). Reused while big enough.
   */
  input?: SharedArrayBuffer;
}

type Finished = { ok: true; outputId: string; output: Uint8Array } | { ok: false; code: string; reason: string };

/** A few compiled modules, by BLAKE3 id: a fleet sends many tasks of one module. */
const MODULE_CACHE = 8;

export class Sandbox {
  private readonly idle: WarmWorker[] = [];
  private readonly busy = new Set<WarmWorker>();
  private readonly modules = new Map<string, WebAssembly.Module>();
  private readonly paths: HostPaths;
  private closed = false;

  constructor(private readonly options: SandboxOptions = {}) {
    this.paths = options.paths ?? new HostPaths();
  }

  /** Runs `moduleBytes` on `input` within `limits`; never throws for anything the module does. */
  async run(
    moduleBytes: Uint8Array,
    input: Uint8Array,
    limits: TaskLimits = DEFAULT_LIMITS,
    runOptions: RunOptions = {},
  ): Promise<TaskOutcome> {
    const started = performance.now();
    const wallMs = () => Math.round(performance.now() - started);
    if (this.closed) return { ok: false, code: "stopped", reason: "the sandbox is closed", cpuMs: 0, wallMs: 0 };
    const checked = this.compiled(moduleBytes, limits.memoryBytes);
    if (!checked.ok) return { ok: false, code: checked.code, reason: checked.reason, cpuMs: 0, wallMs: wallMs() };
    const warm = this.take();
    this.busy.add(warm);
    const tid = await warm.tid;
    const cpuAtStart = this.threadCpuMs(tid);
    let cpuMs = 0;
    const readCpu = (): void => {
      const now = this.threadCpuMs(tid);
      if (now !== undefined && cpuAtStart !== undefined) cpuMs = Math.max(cpuMs, now - cpuAtStart);
    };
    return new Promise<TaskOutcome>((resolve) => {
      let settled = false;
      const { worker } = warm;
      /** `stopped`: ended from outside (a budget, an abort), so the worker may be mid-task: it is terminated. */
      const finish = (outcome: Finished, stopped: boolean) => {
        if (settled) return;
        settled = true;
        clearTimeout(wallTimer);
        clearInterval(cpuTimer);
        runOptions.signal?.removeEventListener("abort", onAbort);
        worker.off("message", onMessage);
        worker.off("error", onError);
        worker.off("exit", onExit);
        readCpu();
        this.busy.delete(warm);
        // The result first: ending a worker takes about 10 ms, and nothing waits on it.
        if (stopped) void worker.terminate();
        else this.release(warm);
        resolve({ ...outcome, cpuMs: Math.round(cpuMs), wallMs: wallMs() });
      };
      const wallTimer = setTimeout(
        () =>
          finish(
            { ok: false, code: "wall-time", reason: `still running after ${limits.wallMs} ms of wall time` },
            true,
          ),
        limits.wallMs,
      );
      const cpuTimer = setInterval(() => {
        readCpu();
        if (cpuMs > limits.cpuMs)
          finish({ ok: false, code: "cpu-time", reason: `used more than ${limits.cpuMs} ms of CPU` }, true);
      }, this.options.pollMs ?? 20);
      // After the timers: finish() clears them.
      const onAbort = () =>
        finish({ ok: false, code: "stopped", reason: String(runOptions.signal?.reason ?? "stopped") }, true);
      const onMessage = (m: { tid?: number; ok?: boolean; output?: Uint8Array; code?: string; reason?: string }) => {
        if (m.tid !== undefined) return;
        if (m.ok && m.output) {
          const output = new Uint8Array(m.output);
          finish({ ok: true, outputId: toHex(blake3(output)), output }, false);
        } else finish({ ok: false, code: m.code ?? "failed", reason: m.reason ?? "the task failed" }, false);
      };
      const onError = (err: Error & { code?: string }) =>
        finish(
          {
            ok: false,
            code: err.code === "ERR_WORKER_OUT_OF_MEMORY" ? "out-of-memory" : "failed",
            reason: err.message.split("\n")[0]!,
          },
          true,
        );
      const onExit = () => finish({ ok: false, code: "failed", reason: "the worker exited without a result" }, true);
      worker.on("message", onMessage);
      worker.on("error", onError);
      worker.on("exit", onExit);
      if (runOptions.signal?.aborted) onAbort();
      else {
        runOptions.signal?.addEventListener("abort", onAbort, { once: true });
        let inputBuffer: SharedArrayBuffer;
        let inputOffset = 0;
        if (input.buffer instanceof SharedArrayBuffer) {
          // Already shared (the caller read it there, sharedBytes()): the worker reads it in place.
          inputBuffer = input.buffer;
          inputOffset = input.byteOffset;
        } else {
          if (!warm.input || warm.input.byteLength < input.length)
            warm.input = new SharedArrayBuffer(Math.max(64 * 1024, 2 ** Math.ceil(Math.log2(input.length || 1))));
          new Uint8Array(warm.input, 0, input.length).set(input);
          inputBuffer = warm.input;
        }
        worker.postMessage({
          module: checked.module,
          inputBuffer,
          inputOffset,
          inputLength: input.length,
          outputBytes: limits.outputBytes,
        });
      }
    });
  }

  /** Ends every worker (a task still running ends `failed`: its worker exited). */
  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.idle.splice(0), ...this.busy];
    for (const w of all) clearTimeout(w.idleTimer);
    await Promise.all(all.map((w) => w.worker.terminate()));
  }

  /**
   * Starts workers until `count` are alive (idle or busy), so that tasks about to come do not wait for one: the
   * queue asks for its lanes while tasks wait (a worker's start is 40 ms here, far more on a Cortex-A5).
   */
  prepare(count: number): void {
    const max = Math.min(count, this.options.idleWorkers ?? 2);
    while (!this.closed && this.workers < max) this.release(this.start());
  }

  /** Workers alive now (idle and busy): for tests and status. */
  get workers(): number {
    return this.idle.length + this.busy.size;
  }

  private compiled(bytes: Uint8Array, memoryCap: number): ReturnType<typeof checkModule> {
    const id = toHex(blake3(bytes));
    const cached = this.modules.get(id);
    // The cache holds compiled code only: the memory cap is checked against each task's own limit.
    const checked = checkModule(bytes, memoryCap, cached);
    if (checked.ok && !cached) {
      this.modules.set(id, checked.module);
      if (this.modules.size > MODULE_CACHE) this.modules.delete(this.modules.keys().next().value!);
    }
    return checked;
  }

  private take(): WarmWorker {
    const warm = this.idle.pop();
    if (warm) {
      clearTimeout(warm.idleTimer);
      return warm;
    }
    return this.start();
  }

  private start(): WarmWorker {
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { threadSelf: this.paths.proc("thread-self") },
      // The worker's own JavaScript heap: a module's memory is its declared maximum, checked before it runs.
      resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 4, stackSizeMb: 1 },
      stdout: true,
      stderr: true,
    });
    // Workers never keep the agent's process alive; a crash of one is its task's `failed`.
    worker.unref();
    worker.on("error", () => {});
    const tid = new Promise<number>((resolve) => {
      const first = (m: { tid?: number }) => {
        if (m.tid === undefined) return;
        worker.off("message", first);
        if (this.options.nice !== undefined) {
          try {
            setPriority(m.tid, this.options.nice);
          } catch {
            // Not permitted (a lower value than the agent's needs CAP_SYS_NICE): the task runs at the agent's.
          }
        }
        resolve(m.tid);
      };
      worker.on("message", first);
      // A worker that dies before saying its thread id: the task's exit handler reports it.
      worker.once("exit", () => resolve(-1));
    });
    return { worker, tid };
  }

  private release(warm: WarmWorker): void {
    if (this.closed || this.idle.length >= (this.options.idleWorkers ?? 2)) {
      void warm.worker.terminate();
      return;
    }
    warm.idleTimer = setTimeout(() => {
      const i = this.idle.indexOf(warm);
      if (i >= 0) this.idle.splice(i, 1);
      void warm.worker.terminate();
    }, this.options.idleMs ?? 30_000);
    warm.idleTimer.unref();
    this.idle.push(warm);
  }

  /**
   * CPU time (user + system) of one thread of this process, ms; undefined when it cannot be read. Read synchronously:
   * procfs answers from memory (no disk to wait on), and a hop through the thread pool costs more than the read.
   */
  private threadCpuMs(tid: number): number | undefined {
    if (tid < 0) return undefined;
    let stat: string;
    try {
      stat = readFileSync(this.paths.proc("self", "task", String(tid), "stat"), "utf8");
    } catch {
      return undefined;
    }
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / USER_HZ;
  }
}

/**
 * A file's bytes in shared memory, for a task's input: the sandbox hands such input to its worker without a copy
 * (a task's input object, read from the store).
 */
export async function sharedBytes(path: string): Promise<Uint8Array> {
  const fh = await open(path, "r");
  try {
    const { size } = await fh.stat();
    const bytes = new Uint8Array(new SharedArrayBuffer(size));
    for (let at = 0; at < size;) {
      const { bytesRead } = await fh.read(bytes, at, size - at, at);
      if (bytesRead === 0) throw new Error(`${path}: ended at ${at} of ${size} bytes`);
      at += bytesRead;
    }
    return bytes;
  } finally {
    await fh.close();
  }
}

/** One task in a worker of its own, ended after it (the CLI; tests). */
export async function runTask(
  moduleBytes: Uint8Array,
  input: Uint8Array,
  limits: TaskLimits = DEFAULT_LIMITS,
  options: SandboxOptions & RunOptions = {},
): Promise<TaskOutcome> {
  const sandbox = new Sandbox({ ...options, idleWorkers: 0 });
  try {
    return await sandbox.run(moduleBytes, input, limits, { signal: options.signal });
  } finally {
    await sandbox.close();
  }
}
