// `sharenode compute run`: one compute task in the sandbox (agent/compute/sandbox.ts), for people who write tasks
// and for tests. Exit 0 done, 1 when the task failed or was stopped (the code and reason on stderr), 2 bad usage.
import { readFile, writeFile } from "node:fs/promises";
import { DEFAULT_LIMITS, runTask } from "../compute/sandbox.js";
import { errorMessage } from "../util/errors.js";
import {
  CliError,
  parseCommandArgs,
  positiveInteger,
  systemErrorText,
  usageError,
  type CliIo,
  type Command,
} from "./io.js";

const USAGE = `Usage: sharenode compute run MODULE.wasm [--input FILE] [--output FILE] [--cpu-ms N] [--wall-ms N]
                             [--memory-mb N] [--output-kb N]

Run a compute task as a box runs it: MODULE.wasm may import only the host API (agent/compute/README.md), must
declare a memory maximum within --memory-mb, and runs in a worker thread stopped past its CPU or wall-clock
budget or its output cap. Prints the output's BLAKE3 id and length and the CPU and wall time used.

Options:
  --input FILE     the task's input (default: empty)
  --output FILE    also write the output there
  --cpu-ms N       CPU time budget (default ${DEFAULT_LIMITS.cpuMs})
  --wall-ms N      wall-clock budget (default ${DEFAULT_LIMITS.wallMs})
  --memory-mb N    the cap on the module's memory maximum (default ${DEFAULT_LIMITS.memoryBytes / 1024 / 1024})
  --output-kb N    the cap on the output (default ${DEFAULT_LIMITS.outputBytes / 1024})
  -h, --help       show this help

Exit status: 0 done, 1 the task failed or was stopped (its code and reason on stderr), 2 bad usage.
`;

export const computeCommand: Command = {
  summary: "run a compute task (a WebAssembly module) in the sandbox",
  usage: USAGE,
  run: runCompute,
};

async function runCompute(args: string[], io: CliIo): Promise<number> {
  const [action, ...rest] = args;
  if (action !== "run")
    throw usageError(
      action === undefined ? "compute: missing action: run" : `compute: unknown action '${action}' (expected run)`,
    );
  const label = "compute run";
  const { values, positionals } = parseCommandArgs(
    label,
    rest,
    {
      input: { type: "string" },
      output: { type: "string" },
      "cpu-ms": { type: "string" },
      "wall-ms": { type: "string" },
      "memory-mb": { type: "string" },
      "output-kb": { type: "string" },
    },
    true,
  );
  if (positionals.length !== 1) throw usageError(`${label}: expected one module to run (MODULE.wasm)`);
  const limits = {
    cpuMs: positiveInteger(label, "cpu-ms", values["cpu-ms"], DEFAULT_LIMITS.cpuMs),
    wallMs: positiveInteger(label, "wall-ms", values["wall-ms"], DEFAULT_LIMITS.wallMs),
    memoryBytes:
      positiveInteger(label, "memory-mb", values["memory-mb"], DEFAULT_LIMITS.memoryBytes / 1024 / 1024) * 1024 * 1024,
    outputBytes: positiveInteger(label, "output-kb", values["output-kb"], DEFAULT_LIMITS.outputBytes / 1024) * 1024,
  };
  const read = async (path: string): Promise<Uint8Array> => {
    try {
      return await readFile(path);
    } catch (err) {
      throw new CliError(`${label}: cannot read ${path}: ${systemErrorText(err) ?? errorMessage(err)}`);
    }
  };
  const moduleBytes = await read(positionals[0]!);
  const input = values.input === undefined ? new Uint8Array(0) : await read(values.input);
  const outcome = await runTask(moduleBytes, input, limits);
  if (!outcome.ok) {
    io.stderr.write(
      `sharenode: ${label}: ${outcome.code}: ${outcome.reason} (cpu ${outcome.cpuMs} ms, wall ${outcome.wallMs} ms)\n`,
    );
    return 1;
  }
  if (values.output !== undefined) {
    try {
      await writeFile(values.output, outcome.output);
    } catch (err) {
      throw new CliError(`${label}: cannot write ${values.output}: ${systemErrorText(err) ?? errorMessage(err)}`);
    }
  }
  io.stdout.write(
    `output ${outcome.outputId}\nbytes ${outcome.output.length}\ncpu_ms ${outcome.cpuMs}\nwall_ms ${outcome.wallMs}\n`,
  );
  return 0;
}
