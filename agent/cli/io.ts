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
