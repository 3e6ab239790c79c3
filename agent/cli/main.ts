// The `sharenode` command line: one table of subcommands, help and version, and the one place that turns any
// failure into a single line on stderr and an exit code.
import { version } from "../../package.json";
import { clientCommand } from "./client.js";
import { consoleCommand } from "./console.js";
import { disksCommand } from "./disks.js";
import { selftestCommand } from "./selftest.js";
import { hashCommand } from "./hash.js";
import { ledgerCommand } from "./ledger.js";
import { fleetCommand } from "./fleet.js";
import { getCommand } from "./get.js";
import { proofCommand } from "./proof.js";
import { releaseCommand } from "./release.js";
import { otaCommand } from "./ota.js";
import { computeCommand } from "./compute.js";
import { runCommand } from "./run.js";
import { storeCommand, verifyResponseCommand } from "./store.js";
import {
  CliError,
  flushOutput,
  isClosedOutput,
  outputFailure,
  systemErrorText,
  usageError,
  watchOutput,
  type CliIo,
  type Command,
} from "./io.js";
import { errorLine } from "../util/errors.js";

export { CliError, type CliIo, type Command } from "./io.js";

/** Every subcommand, in the order `sharenode --help` lists them. Features add their entry here. */
const commands: Record<string, Command> = {
  run: runCommand,
  hash: hashCommand,
  proof: proofCommand,
  store: storeCommand,
  "verify-response": verifyResponseCommand,
  ledger: ledgerCommand,
  release: releaseCommand,
  ota: otaCommand,
  compute: computeCommand,
  fleet: fleetCommand,
  client: clientCommand,
  get: getCommand,
  console: consoleCommand,
  disks: disksCommand,
  selftest: selftestCommand,
};

const TOP_USAGE_HEAD = `Usage: sharenode <command> [options] [arguments]
       sharenode --help | --version

Agent for home sharing boxes.

Commands:
`;

const TOP_USAGE_TAIL = `
Options:
  -h, --help      show this help ('sharenode help <command>' or 'sharenode <command> --help' for one command)
  -V, --version   print the version

Exit status: 0 on success, 1 on failure, 2 on a usage error.
`;

export function topUsage(): string {
  const names = Object.keys(commands);
  const width = Math.max(...names.map((n) => n.length));
  const list = names.map((n) => `  ${n.padEnd(width)}   ${commands[n].summary}\n`).join("");
  return TOP_USAGE_HEAD + list + TOP_USAGE_TAIL;
}

/**
 * Runs `sharenode ARGV...`; resolves to the exit code. Never throws and never prints a stack trace (unless
 * SHARENODE_DEBUG=1). A failed write to stdout is one line and exit 1 whatever the command returned, except a
 * reader that went away (`| head -1`): then output is lost by design and the command ends quietly.
 */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const debug = io.env.SHARENODE_DEBUG === "1";
  watchOutput(io.stdout);
  // Nowhere is left to report a failing stderr; watching it keeps its error from crashing the process.
  watchOutput(io.stderr);
  let code: number;
  try {
    code = await dispatch(argv, io);
  } catch (err) {
    return report(err, io, debug);
  }
  try {
    await flushOutput(io.stdout);
  } catch (err) {
    // A reader that went away after the last write leaves the command's own verdict standing.
    return isClosedOutput(err) ? code : report(err, io, debug);
  }
  return code;
}

function report(err: unknown, io: CliIo, debug: boolean): number {
  // The command stopped because stdout failed (writeOutput, flushOutput threw its error).
  if (err !== undefined && err === outputFailure(io.stdout)) {
    if (isClosedOutput(err)) return 0;
    io.stderr.write(`sharenode: write error: ${systemErrorText(err) ?? errorLine(err, Infinity)}\n`);
    return 1;
  }
  if (err instanceof CliError) {
    // A message can quote user input (a file name with a newline): the error line stays one line.
    io.stderr.write(`sharenode: ${errorLine(err, Infinity)}\n`);
    if (debug && err.stack) io.stderr.write(err.stack + "\n");
    return err.exitCode;
  }
  io.stderr.write(
    `sharenode: internal error: ${errorLine(err, Infinity)}${debug ? "" : " (set SHARENODE_DEBUG=1 for details)"}\n`,
  );
  if (debug) io.stderr.write((err instanceof Error && err.stack ? err.stack : String(err)) + "\n");
  return 1;
}

async function dispatch(argv: string[], io: CliIo): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined) throw usageError("missing command (see 'sharenode --help')");
  if (first === "--help" || first === "-h") return print(io, topUsage());
  if (first === "--version" || first === "-V") return print(io, `sharenode ${version}\n`);
  if (first === "help") {
    if (rest.length > 1) throw usageError("help: expected at most one command name");
    return print(io, rest.length === 0 || wantsHelp(rest) ? topUsage() : lookup(rest[0]).usage);
  }
  if (first.startsWith("-") && first !== "-") throw usageError(`unknown option '${first}' (see 'sharenode --help')`);
  const command = lookup(first);
  if (wantsHelp(rest)) return print(io, command.usage);
  return command.run(rest, io);
}

function lookup(name: string): Command {
  // Own properties only: `sharenode toString` is an unknown command, not Object.prototype's.
  if (!Object.hasOwn(commands, name)) throw usageError(`unknown command '${name}' (see 'sharenode --help')`);
  return commands[name];
}

/** `--help` or `-h` anywhere before a `--` asks for the command's usage instead of running it. */
function wantsHelp(args: string[]): boolean {
  for (const arg of args) {
    if (arg === "--") return false;
    if (arg === "--help" || arg === "-h") return true;
  }
  return false;
}

function print(io: CliIo, text: string): number {
  io.stdout.write(text);
  return 0;
}
