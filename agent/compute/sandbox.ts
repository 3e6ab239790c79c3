// Runs one compute task (issue 14) in a worker thread: the module checked first (module-check.ts), instantiated
// with the host API only, its `run` export called. Budgets: wall-clock time (a timer), CPU time (the worker's
// thread, read from /proc/self/task/<tid>/stat while it runs: a module spinning in a loop cannot stop it), memory
// (the module's declared maximum, checked before it runs; V8's resourceLimits for the worker's own heap) and output
// bytes (checked at each write). Past any of them the worker is terminated and the task fails with a code.
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
import { readFile } from "node:fs/promises";
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
// sees an "exports" object and no "define" or "module", and fills the object.
const WORKER_SOURCE = `
const loader = (function () {
  const exports = {}, module = undefined, define = undefined;
  ${AS_LOADER_SOURCE};
  return exports.default || exports;
})();
const { parentPort, workerData } = require("node:worker_threads");
const { readlinkSync } = require("node:fs");
const { module, input, outputBytes, threadSelf } = workerData;
parentPort.postMessage({ tid: Number(readlinkSync(threadSelf).split("/").pop()) });
let memory;
let loaded;
const chunks = [];
let written = 0;
class TaskFailure extends Error { constructor(code, message) { super(message); this.code = code; } }
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
`;

export interface SandboxOptions {
  paths?: HostPaths;
  /** How often the worker's CPU time is read (default 20 ms). */
  pollMs?: number;
  /**
   * The worker thread's nice value (Linux: setpriority on the thread's id moves that thread only), so that a task
   * yields the CPU to serving and to the owner's own use; default: the agent's own.
   */
  nice?: number;
  /** Aborting stops the task at once (the worker terminated): it ends `stopped`, with the reason given. */
  signal?: AbortSignal;
}

/** Runs `moduleBytes` on `input` within `limits`; never throws for anything the module does. */
export async function runTask(
  moduleBytes: Uint8Array,
  input: Uint8Array,
  limits: TaskLimits = DEFAULT_LIMITS,
  options: SandboxOptions = {},
): Promise<TaskOutcome> {
  const started = performance.now();
  const wallMs = () => Math.round(performance.now() - started);
  const checked = checkModule(moduleBytes, limits.memoryBytes);
  if (!checked.ok) return { ok: false, code: checked.code, reason: checked.reason, cpuMs: 0, wallMs: wallMs() };
  const paths = options.paths ?? new HostPaths();
  const worker = new Worker(WORKER_SOURCE, {
    eval: true,
    workerData: {
      module: checked.module,
      input,
      outputBytes: limits.outputBytes,
      threadSelf: paths.proc("thread-self"),
    },
    // The worker's own JavaScript heap: the module's memory is its declared maximum, checked above.
    resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 4, stackSizeMb: 1 },
    stdout: true,
    stderr: true,
  });
  let tid: number | undefined;
  let cpuMs = 0;
  const readCpu = async (): Promise<void> => {
    if (tid === undefined) return;
    const stat = await readFile(paths.proc("self", "task", String(tid), "stat"), "utf8").catch(() => undefined);
    if (!stat) return;
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    cpuMs = Math.max(cpuMs, ((Number(fields[11]) + Number(fields[12])) * 1000) / USER_HZ);
  };
  return new Promise<TaskOutcome>((resolve) => {
    let settled = false;
    const finish = (
      outcome: { ok: true; outputId: string; output: Uint8Array } | { ok: false; code: string; reason: string },
      terminate: boolean,
    ) => {
      if (settled) return;
      settled = true;
      clearTimeout(wallTimer);
      clearInterval(cpuTimer);
      options.signal?.removeEventListener("abort", onAbort);
      void (async () => {
        await readCpu();
        if (terminate) await worker.terminate();
        resolve({ ...outcome, cpuMs: Math.round(cpuMs), wallMs: wallMs() });
      })();
    };
    const wallTimer = setTimeout(
      () =>
        finish({ ok: false, code: "wall-time", reason: `still running after ${limits.wallMs} ms of wall time` }, true),
      limits.wallMs,
    );
    const cpuTimer = setInterval(() => {
      void readCpu().then(() => {
        if (cpuMs > limits.cpuMs)
          finish({ ok: false, code: "cpu-time", reason: `used more than ${limits.cpuMs} ms of CPU` }, true);
      });
    }, options.pollMs ?? 20);
    // After the timers: finish() clears them.
    const onAbort = () =>
      finish({ ok: false, code: "stopped", reason: String(options.signal?.reason ?? "stopped") }, true);
    if (options.signal?.aborted) onAbort();
    else options.signal?.addEventListener("abort", onAbort, { once: true });
    worker.on("message", (m: { tid?: number; ok?: boolean; output?: Uint8Array; code?: string; reason?: string }) => {
      if (m.tid !== undefined) {
        tid = m.tid;
        if (options.nice !== undefined) {
          try {
            setPriority(tid, options.nice);
          } catch {
            // Not permitted (a lower value than the agent's needs CAP_SYS_NICE): the task runs at the agent's.
          }
        }
        return;
      }
      if (m.ok && m.output) {
        const output = new Uint8Array(m.output);
        finish({ ok: true, outputId: toHex(blake3(output)), output }, true);
      } else finish({ ok: false, code: m.code ?? "failed", reason: m.reason ?? "the task failed" }, true);
    });
    worker.on("error", (err: Error & { code?: string }) =>
      finish(
        {
          ok: false,
          code: err.code === "ERR_WORKER_OUT_OF_MEMORY" ? "out-of-memory" : "failed",
          reason: err.message.split("\n")[0]!,
        },
        false,
      ),
    );
    worker.on("exit", () => finish({ ok: false, code: "failed", reason: "the worker exited without a result" }, false));
  });
}
