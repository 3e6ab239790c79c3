// What every subcommand gets and gives: its streams and environment (injected, so tests run commands
// in-process on fake streams), the typed error that becomes the one-line message, and option parsing.
import type { Readable, Writable } from "node:stream";
import { parseArgs, type ParseArgsConfig } from "node:util";

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
export function parseCommandArgs<O extends Options>(command: string, args: string[], options: O, allowPositionals: boolean) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals });
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS_")) {
      throw usageError(`${command}: ${firstSentence((err as Error).message)}`);
    }
    throw err;
  }
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
};

/** The strerror text of a system (errno) error, or undefined for anything else (a bug, not a bad file). */
export function systemErrorText(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== "string" || !/^E[A-Z0-9]+$/.test(code)) return undefined;
  if (STRERROR[code]) return STRERROR[code];
  // "EXDEV: cross-device link not permitted, rename ..." -> "Cross-device link not permitted"
  const match = /^E[A-Z0-9]+: ([^,]+)/.exec((err as Error).message ?? "");
  const text = match ? match[1] : code;
  return text.charAt(0).toUpperCase() + text.slice(1);
}
