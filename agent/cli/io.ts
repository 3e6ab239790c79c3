// What every subcommand gets and gives: its streams and environment (injected, so tests run commands
// in-process on fake streams), the typed error that becomes the one-line message, option parsing, and writes
// to an output that notice when it fails.
import type { Readable, Writable } from "node:stream";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { errnoCode, errorMessage } from "../util/errors.js";
import type { ConsoleIo } from "../console/command-api.js";

export interface CliIo {
  stdin: Readable;
  stdout: Writable;
  stderr: Writable;
  env: Record<string, string | undefined>;
}

/** Exit code of a usage error (bad option, unknown command), as the coreutils and BSD sysexits use it. */
export const EXIT_USAGE = 2;

/** An error meant for the user: runCli prints `sharenode: <message>` and exits with `exitCode`. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = "CliError";
  }
}

export function usageError(message: string): CliError {
  return new CliError(message, EXIT_USAGE);
}

/** One entry of the subcommand table. */
export interface Command {
  /** One line for the top-level command list. */
  summary: string;
  /** The full text of `sharenode CMD --help`, starting with its "Usage:" line. */
  usage: string;
  /** Runs with the arguments after the command name; resolves to the exit code. */
  run(args: string[], io: CliIo): Promise<number>;
}

type Options = NonNullable<ParseArgsConfig["options"]>;

/**
 * node:util parseArgs in strict mode, its errors turned into one-line usage errors naming the bad option,
 * prefixed with the command's name. `--help` never gets here: runCli answers it before any command runs.
 */
export function parseCommandArgs<O extends Options>(
  command: string,
  args: string[],
  options: O,
  allowPositionals: boolean,
) {
  try {
    return parseArgs({ args: joinNegativeValues(args, options), options, strict: true, allowPositionals });
  } catch (err) {
    const code = errnoCode(err);
    if (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS_")) {
      throw usageError(`${command}: ${firstSentence(errorMessage(err))}`);
    }
    throw err;
  }
}

/**
 * `--len -1`: parseArgs refuses a value that starts with a dash as "ambiguous" (it could be an option), which
 * tells the user nothing. A string option followed by something shaped like a negative number takes it as its
 * value (`--len=-1`), so the command's own check names the option and the bad value. No option of ours is a
 * digit, so nothing that was meant as an option is swallowed.
 */
function joinNegativeValues(args: string[], options: Options): string[] {
  const takesValue = new Set<string>();
  for (const [name, option] of Object.entries(options)) {
    if (option.type !== "string") continue;
    takesValue.add(`--${name}`);
    if (option.short) takesValue.add(`-${option.short}`);
  }
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") return out.concat(args.slice(i));
    const next = args[i + 1];
    if (takesValue.has(arg) && next !== undefined && /^-[\d.]/.test(next)) {
      out.push(`${arg.startsWith("--") ? arg : `--${shortToLong(arg, options)}`}=${next}`);
      i++;
    } else {
      out.push(arg);
    }
  }
  return out;
}

function shortToLong(arg: string, options: Options): string {
  return Object.entries(options).find(([, o]) => `-${o.short}` === arg)![0];
}

// parseArgs messages run on with advice over several sentences and lines ("Unknown option '--x'. To specify
// a positional argument ..."); the first sentence names the problem.
function firstSentence(message: string): string {
  const end = message.search(/\.(\s|$)|\n/);
  const head = end < 0 ? message : message.slice(0, end);
  return head.charAt(0).toLowerCase() + head.slice(1);
}

// strerror(3) wording, which is what the coreutils print; Node's messages are lower case and add the call.
const STRERROR: Record<string, string> = {
  ENOENT: "No such file or directory",
  EISDIR: "Is a directory",
  EACCES: "Permission denied",
  EPERM: "Operation not permitted",
  ENOTDIR: "Not a directory",
  ELOOP: "Too many levels of symbolic links",
  ENAMETOOLONG: "File name too long",
  EIO: "Input/output error",
  ENXIO: "No such device or address",
  ENODEV: "No such device",
  EMFILE: "Too many open files",
  ENFILE: "Too many open files in system",
  EINVAL: "Invalid argument",
  EAGAIN: "Resource temporarily unavailable",
  ENOSPC: "No space left on device",
  EDQUOT: "Disk quota exceeded",
  EFBIG: "File too large",
  EPIPE: "Broken pipe",
  EROFS: "Read-only file system",
};

/** The strerror text of a system (errno) error, or undefined for anything else (a bug, not a bad file). */
export function systemErrorText(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== "string" || !/^E[A-Z0-9]+$/.test(code)) return undefined;
  if (STRERROR[code]) return STRERROR[code];
  // "EXDEV: cross-device link not permitted, rename ..." -> "Cross-device link not permitted"
  const match = /^E[A-Z0-9]+: ([^,]+)/.exec(errorMessage(err));
  const text = match ? match[1] : code;
  return text.charAt(0).toUpperCase() + text.slice(1);
}

// --- output that notices when it fails ------------------------------------------------------------------
//
// Node reports a failed write (a full disk, /dev/full, a closed pipe) only as an 'error' event on a later
// tick, and its stdout never ends or drains after one: a command that ignores it exits 0 having printed
// nothing, and one that awaits 'drain' hangs until Node gives up on the top-level await (exit 13). So every
// output stream is watched from the first write: its first error is kept, writeOutput() and endOutput() throw
// it, and runCli reports stdout's once the command is done (or quietly exits for a reader that went away).

const failures = new WeakMap<Writable, Error>();
const watched = new WeakSet<Writable>();

/** Starts keeping `out`'s first write error; also keeps the error from becoming an uncaught exception. */
export function watchOutput(out: Writable): void {
  if (watched.has(out)) return;
  watched.add(out);
  // The listener stays: Node emits a late error after the command may have returned.
  out.on("error", (err: Error) => keepFailure(out, err));
}

function keepFailure(out: Writable, err: Error): Error {
  if (!failures.has(out)) failures.set(out, err);
  return failures.get(out)!;
}

/** Why writes to `out` stopped working: its first error, or a stand-in EPIPE when it was closed without one. */
export function outputFailure(out: Writable): Error | undefined {
  const failure = failures.get(out);
  if (failure) return failure;
  // The stream's own record comes before its 'error' event (an end() callback gets it first).
  if (out.errored) return keepFailure(out, out.errored);
  if (!out.destroyed) return undefined;
  // Kept, so every caller sees the same error and runCli can tell it is stdout's.
  return keepFailure(out, Object.assign(new Error("EPIPE: the output was closed"), { code: "EPIPE" }));
}

/** A reader that went away (`| head -1`, `| true`): output is lost by design, as for a process killed by SIGPIPE. */
export function isClosedOutput(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === "EPIPE";
}

/** Writes `chunk`; resolves when `out` can take more, rejects with the output's error once it has failed. */
export async function writeOutput(out: Writable, chunk: Uint8Array | string): Promise<void> {
  watchOutput(out);
  const before = outputFailure(out);
  if (before) throw before;
  if (out.write(chunk)) return;
  // false: the buffer is full, or the write failed and its error comes on the next tick; never drain then.
  await settled(out, "drain");
}

/** Waits until everything written to `out` has left, then throws its first error, if any. */
export async function flushOutput(out: Writable): Promise<void> {
  watchOutput(out);
  // Errors of writes that already returned arrive on a later tick.
  await new Promise<void>((resolve) => setImmediate(resolve));
  while (!outputFailure(out) && out.writableLength > 0) await settled(out, "drain");
  const failure = outputFailure(out);
  if (failure) throw failure;
}

/** Ends a stream the command opened (a file): resolves once its data is written, rejects with its error. */
export async function endOutput(out: Writable): Promise<void> {
  watchOutput(out);
  const before = failures.get(out);
  if (before) throw before;
  await new Promise<void>((resolve, reject) => {
    out.end((err?: Error | null) => (err ? reject(keepFailure(out, err)) : resolve()));
  });
  const after = failures.get(out);
  if (after) throw after;
}

function settled(out: Writable, event: "drain"): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const done = () => {
      out.off(event, done);
      out.off("error", done);
      out.off("close", done);
      const failure = outputFailure(out);
      if (failure) reject(failure);
      else resolve();
    };
    out.on(event, done);
    out.on("error", done);
    out.on("close", done);
  });
}

/**
 * A console command's io for a one-shot CLI run (`sharenode selftest`, `sharenode ota`): prints to stdout, and
 * nobody to answer a question or press Ctrl-C.
 */
export function consoleIoFor(io: CliIo): ConsoleIo {
  return {
    print: (text) => io.stdout.write(text),
    ask: async () => undefined,
    signal: new AbortController().signal,
    columns: undefined,
  };
}

/** A positive safe integer option (`fallback` when absent, else required), or a one-line usage error naming it. */
export function positiveInteger(
  command: string,
  name: string,
  value: string | undefined,
  fallback?: number,
  max: number = Number.MAX_SAFE_INTEGER,
): number {
  if (value === undefined) {
    if (fallback !== undefined) return fallback;
    throw usageError(`${command}: --${name} is required`);
  }
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < 1 || n > max)
    throw usageError(
      `${command}: --${name} must be a whole number from 1 to ${max === Number.MAX_SAFE_INTEGER ? "2^53 - 1" : max}, got '${value}'`,
    );
  return n;
}
