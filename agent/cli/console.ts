// `sharenode console`: the diagnostics shell (agent/console/shell.ts) on this terminal, or on a serial line served
// like a getty. The commands come from agent/console/commands.ts; runConsole takes them as a parameter so the
// pty tests run this very code with test commands.
import { execFile } from "node:child_process";
import { closeSync, constants, createWriteStream, open, openSync } from "node:fs";
import type { Readable, Writable } from "node:stream";
import { isatty, ReadStream as TtyReadStream } from "node:tty";
import { promisify } from "node:util";
import type { ConsoleCommand } from "../console/command-api.js";
import { runBatch } from "../console/batch.js";
import { runShell, type ShellEnd } from "../console/shell.js";
import { CliError, parseCommandArgs, systemErrorText, usageError, type CliIo, type Command } from "./io.js";
import { errorMessage } from "../util/errors.js";

const USAGE = `Usage: sharenode console [--tty DEVICE [--baud RATE]] [--config FILE]

A diagnostics shell for the person at the box with a serial cable and no network: status, disks, the link,
logs, self-test, reboot, factory reset. Type help in it for the commands; exit or Ctrl-D leaves.

Without --tty it runs on this terminal (raw mode, restored when it ends). With --tty it sets the line up
with stty (RATE baud, 8 data bits, no parity, 1 stop bit, raw, no echo, no XON/XOFF, no modem control) and
serves it like a getty: after a hangup it opens the device again and waits for the next person; exit or
Ctrl-D ends the process (the service manager starts it again).

With its input from a pipe or a file (and no --tty) it runs one command per input line, in order, with no
banner, prompt or echo, for scripts: errors go to stderr ("error: line N: ..."), blank lines and lines
starting with # are skipped, a question (reboot, factory-reset) is answered by the next line, and the exit
status is 1 if any line failed:
  printf 'status\\ndisks\\nlog 200\\n' | sharenode console > report.txt

Options:
  -t, --tty DEVICE     serve this serial line (e.g. /dev/ttyAML0) instead of this terminal
  -b, --baud RATE      line speed for --tty (default 115200)
  -c, --config FILE    the agent's config file (default: none: defaults and the environment only)
  -h, --help           show this help
`;

/** What agent/console/commands.ts gives the console: its commands, the banner, and cleanup. */
export interface ConsoleSession {
  commands: ConsoleCommand[];
  banner: string;
  close(): Promise<void>;
}

export type OpenConsoleCommands = (options: {
  env: Record<string, string | undefined>;
  configFile?: string;
}) => Promise<ConsoleSession>;

export const consoleCommand: Command = {
  summary: "diagnostics shell on this terminal or a serial line (--tty)",
  usage: USAGE,
  run: (args, io) =>
    runConsole(args, io, async (options) => (await import("../console/commands.js")).createConsoleCommands(options)),
};

const BAUD_RATES = new Set([
  1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 921600, 1000000, 1500000,
]);
/** After a hangup, wait this long before opening the line again (a line that keeps hanging up must not spin). */
const REOPEN_DELAY_MS = 1000;
const HINT = 'Type "help" for the commands; "exit" or Ctrl-D leaves.\n';

export async function runConsole(args: string[], io: CliIo, openCommands: OpenConsoleCommands): Promise<number> {
  const { values } = parseCommandArgs(
    "console",
    args,
    {
      tty: { type: "string", short: "t" },
      baud: { type: "string", short: "b" },
      config: { type: "string", short: "c" },
    },
    false,
  );
  if (values.baud !== undefined && values.tty === undefined) throw usageError("console: --baud needs --tty");
  const baud = Number(values.baud ?? "115200");
  if (!/^\d+$/.test(values.baud ?? "115200") || !BAUD_RATES.has(baud)) {
    throw usageError(`console: unsupported baud rate '${values.baud}' (expected one of ${[...BAUD_RATES].join(", ")})`);
  }

  // A broken config never stops the console (it shows the problems and runs on defaults): a bad config may be
  // exactly why someone is at the box.
  const session = await openCommands({ env: io.env, configFile: values.config });
  const banner = session.banner.replace(/\n?$/, "\n") + HINT;

  const stop = new AbortController();
  const onSignal = () => stop.abort();
  const signals = ["SIGTERM", "SIGINT", "SIGHUP"] as const;
  for (const s of signals) process.on(s, onSignal);
  try {
    if (values.tty === undefined && (io.stdin as { isTTY?: boolean }).isTTY !== true) {
      return await runBatch({
        input: io.stdin,
        output: io.stdout,
        errors: io.stderr,
        commands: session.commands,
        signal: stop.signal,
      });
    }
    if (values.tty === undefined) {
      await serveTerminal(io, session.commands, banner, stop.signal);
      return 0;
    }
    return await serveLine(values.tty, baud, io, session.commands, banner, stop.signal);
  } finally {
    for (const s of signals) process.off(s, onSignal);
    await session.close();
  }
}

/** This terminal: raw mode while the shell runs (restored on every way out), exit on Ctrl-D, exit or EOF. */
async function serveTerminal(
  io: CliIo,
  commands: ConsoleCommand[],
  banner: string,
  signal: AbortSignal,
): Promise<ShellEnd> {
  const stdin = io.stdin as Readable & { isTTY?: boolean; setRawMode?(raw: boolean): unknown };
  const raw = stdin.isTTY === true && typeof stdin.setRawMode === "function";
  if (raw) stdin.setRawMode!(true);
  try {
    return await runShell({
      input: io.stdin,
      output: io.stdout,
      commands,
      banner,
      signal,
      columns: () => (io.stdout as { columns?: number }).columns || undefined, // a pty without a size says 0
    });
  } finally {
    if (raw) stdin.setRawMode!(false);
  }
}

/**
 * A serial line, getty-like: open, configure, serve; when the line hangs up (EOF or EIO, as a pty does when
 * its other end closes) open it again and wait for the next person. The first open must work (a wrong device
 * name is an error); later failures are retried every second, reported once.
 */
async function serveLine(
  device: string,
  baud: number,
  io: CliIo,
  commands: ConsoleCommand[],
  banner: string,
  signal: AbortSignal,
): Promise<number> {
  let first = true;
  let failing = false;
  while (!signal.aborted) {
    let line: SerialLine;
    try {
      line = await openLine(device, baud);
    } catch (err) {
      const message = `console: ${device}: ${err instanceof CliError ? err.message : (systemErrorText(err) ?? errorMessage(err))}`;
      if (first) throw new CliError(message);
      if (!failing) io.stderr.write(`sharenode: ${message}; trying again every second\n`);
      failing = true;
      await delay(REOPEN_DELAY_MS, signal);
      continue;
    }
    first = false;
    failing = false;
    const end = await runShell({ input: line.input, output: line.output, commands, banner, signal });
    await line.close();
    if (end === "exit" || signal.aborted) return 0;
    io.stderr.write(`sharenode: console: ${device}: the line hung up; opening it again\n`);
    await delay(REOPEN_DELAY_MS, signal);
  }
  return 0;
}

interface SerialLine {
  input: Readable;
  output: Writable;
  /** Flushes what is still queued for the line (at most CLOSE_TIMEOUT_MS: a stalled line is cut), closes both. */
  close(): Promise<void>;
}

const CLOSE_TIMEOUT_MS = 2000;

/**
 * Two descriptors on the device: reads through a tty stream (non-blocking, polled: no thread parked in read()),
 * writes through an fs stream (Node makes tty writes blocking: a stalled line must not freeze the shell, and
 * Ctrl-C must still be read). O_NOCTTY: a service is a session leader and must not adopt the line as its
 * controlling terminal (a hangup would then SIGHUP it). O_NONBLOCK on the first open: without CLOCAL, open()
 * waits for carrier; stty sets clocal before the second, blocking, open.
 */
async function openLine(device: string, baud: number): Promise<SerialLine> {
  const readFd = openSync(device, constants.O_RDWR | constants.O_NOCTTY | constants.O_NONBLOCK);
  let writeFd: number;
  try {
    if (!isatty(readFd)) throw new CliError("not a terminal");
    await stty(device, baud);
    writeFd = await openAsync(device, constants.O_WRONLY | constants.O_NOCTTY); // off the event loop, should it block
  } catch (err) {
    closeSync(readFd);
    throw err;
  }
  const input = new TtyReadStream(readFd);
  const output = createWriteStream(device, { fd: writeFd });
  return {
    input,
    output,
    async close() {
      input.destroy();
      if (!output.destroyed) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, CLOSE_TIMEOUT_MS);
          output.end(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
      output.destroy();
    },
  };
}

const execFileAsync = promisify(execFile);
const openAsync = promisify(open);

async function stty(device: string, baud: number): Promise<void> {
  const args = ["-F", device, String(baud), "cs8", "-cstopb", "-parenb", "raw", "-echo", "-ixon", "clocal"];
  try {
    await execFileAsync("stty", args, { timeout: 10_000 });
  } catch (err) {
    const e = err as { code?: unknown; stderr?: string; message: string };
    if (e.code === "ENOENT") throw new CliError("stty not found (Debian package coreutils)");
    throw new CliError(`stty ${args.join(" ")} failed: ${(e.stderr ?? "").trim() || e.message}`);
  }
}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}
