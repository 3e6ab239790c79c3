// A node child process whose stdout the test reads line by line (the crash tests' children print what they
// acknowledged), killed with SIGKILL at cleanup if it still runs.
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { build, type BuildOptions } from "esbuild";

export interface LineChild {
  proc: ChildProcess;
  /** Complete stdout lines so far. */
  lines: string[];
  exited: Promise<void>;
}

/**
 * Runs `node script ...args`. An exit other than 0 or SIGKILL (the tests' own kill) prints the child's stderr,
 * named by `label`, so a crash in the child is visible next to the failing assertion.
 */
export function spawnLineChild(
  script: string,
  args: string[],
  cleanups: Array<() => unknown>,
  label: string,
): LineChild {
  const proc = spawn(process.execPath, [script, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  const lines: string[] = [];
  let out = "";
  let err = "";
  proc.stdout!.on("data", (d: Buffer) => {
    out += d.toString();
    const parts = out.split("\n");
    out = parts.pop()!;
    lines.push(...parts);
  });
  proc.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((resolve) =>
    proc.on("exit", (code, signal) => {
      if (code !== 0 && signal !== "SIGKILL") console.error(`${label} exited with ${code ?? signal}: ${err}`);
      resolve();
    }),
  );
  cleanups.push(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill("SIGKILL");
      await exited;
    }
  });
  return { proc, lines, exited };
}

/**
 * Bundles test/fixtures/NAME (a TypeScript child for a crash or pty test) into one ESM file at `outfile`, as the
 * crash tests run their children: node alone, no TypeScript loader. `extra` adds esbuild options (externals, a
 * banner).
 */
export async function bundleFixture(name: string, outfile: string, extra: BuildOptions = {}): Promise<string> {
  await build({
    entryPoints: [fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url))],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outfile,
    logLevel: "error",
    ...extra,
  });
  return outfile;
}

export interface Ran {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * `node script ...args` without blocking this process (spawnSync would: a test's in-process origin or broker
 * client could not answer the child meanwhile); resolves once its output is closed.
 */
export function runNode(script: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Ran> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [script, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}
