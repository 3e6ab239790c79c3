// The console without a terminal: `printf 'status\nlog 100\n' | sharenode console > report.txt`. A support
// person (or a vendor's diagnostics script over ssh) gets the same commands as at the serial line, one per input
// line, run in order and each to completion; what the script needs is an exit status and clean output, so there
// is no banner, no prompt, no echo and no line editing. Errors go to the error stream, one line each, and the run
// goes on with the next line, like sh; the exit status is 1 if any line failed.
//
// A command's question (ConsoleIo.ask: the typed word before reboot or factory-reset) is answered by the next
// input line, so a script confirms deliberately, in writing; at the end of the input it is unanswered.
import type { Readable, Writable } from "node:stream";
import type { ConsoleCommand, ConsoleIo } from "./command-api.js";
import { commandHelp, sanitize, splitWords, unknownCommand } from "./shell.js";
import { errorLine, errorMessage } from "../util/errors.js";

export interface BatchOptions {
  input: Readable;
  output: Writable;
  /** Where `error: ...` lines go (the CLI's stderr). */
  errors: Writable;
  commands: readonly ConsoleCommand[];
  /** Aborting it (SIGTERM, Ctrl-C in the CLI) stops the running command and ends the run. */
  signal?: AbortSignal;
  /** Default 1024 characters, as at the terminal. */
  maxLineLength?: number;
}

/** Runs the input's lines as console commands; resolves with the exit status: 0 if every line succeeded, else 1. */
export async function runBatch(options: BatchOptions): Promise<number> {
  const { output, errors, signal } = options;
  const maxLineLength = options.maxLineLength ?? 1024;
  const commands = new Map<string, ConsoleCommand>();
  for (const command of options.commands) if (!commands.has(command.name)) commands.set(command.name, command);
  const lines = readLines(options.input, maxLineLength);
  let failed = false;
  let lineNumber = 0;
  const fail = (message: string) => {
    failed = true;
    errors.write(`error: line ${lineNumber}: ${sanitize(message.replace(/\r?\n/g, " "))}\n`);
  };
  const stopped = new Promise<void>((resolve) => {
    if (signal?.aborted) resolve();
    signal?.addEventListener("abort", () => resolve(), { once: true });
  });

  try {
    while (!signal?.aborted) {
      const next = await Promise.race([lines.next(), stopped.then(() => undefined)]);
      if (next === undefined || next.done) break;
      lineNumber++;
      const line = next.value;
      if (line === TOO_LONG) {
        fail(`line too long (max ${maxLineLength} characters)`);
        continue;
      }
      let words: string[];
      try {
        words = splitWords(line);
      } catch (err) {
        fail(errorLine(err));
        continue;
      }
      const [name, ...args] = words;
      if (name === undefined || name.startsWith("#")) continue; // blank lines and comments, as in sh
      if (name === "exit" || name === "quit") break;
      if (name === "help") {
        try {
          output.write(commandHelp(commands.values(), args));
        } catch (err) {
          fail(errorLine(err));
        }
        continue;
      }
      const command = commands.get(name);
      if (!command) {
        fail(unknownCommand(name));
        continue;
      }

      const controller = new AbortController();
      const onStop = () => controller.abort();
      signal?.addEventListener("abort", onStop, { once: true });
      let active = true;
      const io: ConsoleIo = {
        print: (text) => {
          // A command that outlives its run (a stray timer) prints nothing into the next command's output.
          if (active) output.write(sanitize(text, true));
        },
        ask: async (question) => {
          if (!active) return undefined;
          output.write(sanitize(question, true));
          const answer = await Promise.race([lines.next(), stopped.then(() => undefined)]);
          output.write("\n");
          if (answer === undefined || answer.done) return undefined;
          lineNumber++;
          return answer.value === TOO_LONG ? "" : answer.value;
        },
        signal: controller.signal,
        columns: undefined,
      };
      try {
        const outcome = await Promise.race([(async () => command.run(args, io))(), stopped.then(() => undefined)]);
        if (outcome && outcome.ok === false) failed = true;
      } catch (err) {
        if (!(controller.signal.aborted && (err as Error)?.name === "AbortError")) {
          fail(errorMessage(err));
        }
      } finally {
        active = false;
        signal?.removeEventListener("abort", onStop);
      }
    }
  } finally {
    // A stop can come while a read is pending (a script whose input never ends): the stream is ended so that
    // read completes and nothing keeps the process waiting for input nobody will act on.
    if (signal?.aborted) options.input.destroy();
    await lines.return(undefined).catch(() => {});
  }
  return failed ? 1 : 0;
}

/** Marks a line longer than the limit: its text was not kept. */
const TOO_LONG = Symbol("too long");

/**
 * The input's lines (UTF-8; "\r\n" or "\n"; a last line without a newline counts), never holding more than
 * `max` characters of one line in memory: a longer line is skipped and reported as TOO_LONG.
 */
async function* readLines(input: Readable, max: number): AsyncGenerator<string | typeof TOO_LONG, void, undefined> {
  const decoder = new TextDecoder("utf-8");
  let line = "";
  let tooLong = false;
  const finish = (): string | typeof TOO_LONG => {
    const text = line.endsWith("\r") ? line.slice(0, -1) : line;
    const result = tooLong ? TOO_LONG : text;
    line = "";
    tooLong = false;
    return result;
  };
  for await (const chunk of input) {
    let text = typeof chunk === "string" ? chunk : decoder.decode(chunk as Uint8Array, { stream: true });
    for (;;) {
      const newline = text.indexOf("\n");
      const piece = newline < 0 ? text : text.slice(0, newline);
      if (!tooLong) {
        line += piece;
        // One more than the limit: the "\r" of a "\r\n" ending may still be in the line.
        if (line.length > max + 1) {
          tooLong = true;
          line = "";
        }
      }
      if (newline < 0) break;
      const done = finish();
      if (done !== TOO_LONG && done.length > max) yield TOO_LONG;
      else yield done;
      text = text.slice(newline + 1);
    }
  }
  line += decoder.decode();
  if (line !== "" || tooLong) {
    const done = finish();
    yield done !== TOO_LONG && done.length > max ? TOO_LONG : done;
  }
}
