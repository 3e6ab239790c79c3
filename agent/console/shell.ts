// The console's shell: banner, prompt, line editing (line-editor.ts), history, and running one ConsoleCommand at a
// time, over any pair of streams: a serial tty, a pty, or PassThroughs in the tests. It never asks whether the
// input is a TTY; the caller puts the terminal in raw mode, and the shell writes "\r\n" itself.
//
// Keys typed while a command runs are kept (at most MAX_TYPEAHEAD keys) and replayed at the next prompt, like a
// terminal's type-ahead, except Ctrl-C, which aborts the command (ConsoleIo.signal) and drops the type-ahead. A
// question (ConsoleIo.ask) drops the type-ahead too: only keys typed after it appears can answer it.
//
// Noise on the line (bytes no keyboard sends: invalid UTF-8, C1 controls, broken escape sequences) discards the
// line being edited, prints one error line, and then every byte is ignored until the line has been quiet for
// `noiseQuietMs`: a burst of garbage from a wrong baud rate or a loose cable prints one error, never runs a command
// and never answers a question. Every buffer is bounded: the line (maxLineLength), the type-ahead, the decoder.
import type { Readable, Writable } from "node:stream";
import { ConsoleError, type ConsoleCommand, type ConsoleIo } from "./command-api.js";
import { History, KeyDecoder, LineEditor, type EditResult, type Key } from "./line-editor.js";
import { errorLine } from "../util/errors.js";

export interface ShellOptions {
  input: Readable;
  output: Writable;
  commands: readonly ConsoleCommand[];
  /** Printed once at the start ("\n" ends a line). */
  banner?: string;
  /** Default "sharenode> ". */
  prompt?: string;
  /** Terminal width when known (read at each use: a pty can be resized). Layout assumes 80 when unknown. */
  columns?: () => number | undefined;
  /** Aborting it ends the shell (SIGTERM in the CLI); the running command's signal is aborted too. */
  signal?: AbortSignal;
  /** Default 100 lines. */
  historySize?: number;
  /** Default 1024 characters. */
  maxLineLength?: number;
  /** How long input may stop inside an escape sequence before a lone ESC is assumed. Default 100 ms. */
  escapeTimeoutMs?: number;
  /** Quiet time that ends a noise burst. Default 1000 ms. */
  noiseQuietMs?: number;
  /** Monotonic milliseconds; injected by tests. Default performance.now. */
  now?: () => number;
}

/** Why the shell ended: "exit" (exit, quit, Ctrl-D) or "closed" (the input ended or failed, or `signal` aborted). */
export type ShellEnd = "exit" | "closed";

export const DEFAULT_PROMPT = "sharenode> ";
/** Keys kept while a command runs; more are dropped. */
export const MAX_TYPEAHEAD = 1024;
/** Command output waiting in the output stream beyond this is dropped (a slow line must not fill memory). */
const MAX_PENDING_OUTPUT = 256 * 1024;
const DEFAULT_COLUMNS = 80;

const NOISE_ERROR =
  "error: noise on the line (bytes that are not text): input ignored until it stops; check the baud rate";

export function runShell(options: ShellOptions): Promise<ShellEnd> {
  return new Shell(options).run();
}

type ReadResult = EditResult | { kind: "noise" } | { kind: "closed" };

class Shell {
  private readonly decoder = new KeyDecoder();
  private readonly history: History;
  private readonly prompt: string;
  private readonly maxLineLength: number;
  private readonly escapeTimeoutMs: number;
  private readonly noiseQuietMs: number;
  private readonly now: () => number;
  private readonly commands = new Map<string, ConsoleCommand>();

  private editor: LineEditor | undefined;
  private reading: ((result: ReadResult) => void) | undefined;
  private readonly typeahead: Key[] = [];
  private running: AbortController | undefined;
  private escapeTimer: NodeJS.Timeout | undefined;
  /** Input is ignored until this time (monotonic ms): the end of a noise burst. */
  private quietAt = -Infinity;
  private atLineStart = true;
  private droppedOutput = 0;
  private closed = false;
  private readonly closing: Promise<void>;
  private close!: () => void;

  constructor(private readonly options: ShellOptions) {
    this.history = new History(options.historySize ?? 100);
    this.prompt = sanitize(options.prompt ?? DEFAULT_PROMPT);
    this.maxLineLength = options.maxLineLength ?? 1024;
    this.escapeTimeoutMs = options.escapeTimeoutMs ?? 100;
    this.noiseQuietMs = options.noiseQuietMs ?? 1000;
    this.now = options.now ?? (() => performance.now());
    for (const command of options.commands) {
      if (!this.commands.has(command.name)) this.commands.set(command.name, command);
    }
    this.closing = new Promise((resolve) => {
      this.close = () => {
        if (this.closed) return;
        this.closed = true;
        this.running?.abort();
        this.finishRead({ kind: "closed" });
        resolve();
      };
    });
  }

  async run(): Promise<ShellEnd> {
    const { input, output, signal } = this.options;
    const onData = (chunk: Buffer | string) => this.onData(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
    const onClose = () => this.close();
    input.on("data", onData);
    input.on("end", onClose);
    input.on("close", onClose);
    input.on("error", onClose);
    output.on("error", onClose);
    output.on("close", onClose);
    signal?.addEventListener("abort", onClose);
    if (signal?.aborted) this.close();
    try {
      if (this.options.banner) this.print(this.options.banner);
      for (;;) {
        const read = await this.readLine(this.prompt, this.history);
        if (read.kind === "closed") return "closed";
        if (read.kind === "eof") return "exit";
        if (read.kind !== "line") continue;
        this.history.add(read.text);
        if ((await this.execute(read.text)) === "exit") return "exit";
        if (this.closed) return "closed";
      }
    } finally {
      clearTimeout(this.escapeTimer);
      input.off("data", onData);
      input.off("end", onClose);
      input.off("close", onClose);
      output.off("close", onClose);
      signal?.removeEventListener("abort", onClose);
      // The error listeners stay (closing twice is harmless): a late EIO after a hangup must not become an
      // uncaught exception.
      input.pause();
    }
  }

  // --- input ---

  private onData(chunk: Uint8Array): void {
    if (this.closed) return;
    clearTimeout(this.escapeTimer);
    this.escapeTimer = undefined;
    for (const key of this.decoder.feed(chunk)) this.onKey(key);
    if (this.decoder.pending) {
      this.escapeTimer = setTimeout(() => {
        this.escapeTimer = undefined;
        for (const key of this.decoder.flush()) this.onKey(key);
      }, this.escapeTimeoutMs);
      this.escapeTimer.unref?.();
    }
  }

  private onKey(key: Key): void {
    if (this.closed) return;
    const now = this.now();
    if (key === "noise") {
      const newBurst = now >= this.quietAt;
      this.quietAt = now + this.noiseQuietMs;
      this.typeahead.length = 0;
      if (newBurst && this.editor) {
        this.write(`\r\n${NOISE_ERROR}\r\n`);
        this.finishRead({ kind: "noise" });
      }
      return;
    }
    if (now < this.quietAt) return;
    if (this.editor) {
      const { output, result } = this.editor.handle(key);
      this.write(output);
      if (result) this.finishRead(result);
    } else if (key === "interrupt") {
      this.typeahead.length = 0;
      if (this.running && !this.running.signal.aborted) {
        this.write("^C\r\n");
        this.running.abort();
      }
    } else if (this.typeahead.length < MAX_TYPEAHEAD) {
      this.typeahead.push(key);
    }
  }

  /** Edits one line after `prompt` (its last line is what redraws show); resolves when the line ends. */
  private readLine(prompt: string, history?: History): Promise<ReadResult> {
    if (this.closed) return Promise.resolve({ kind: "closed" });
    const cut = prompt.lastIndexOf("\n");
    const head = prompt.slice(0, cut + 1);
    const tail = prompt.slice(cut + 1);
    const columns = this.options.columns?.() || DEFAULT_COLUMNS;
    const result = new Promise<ReadResult>((resolve) => {
      this.reading = resolve;
    });
    const start = () => {
      this.editor = new LineEditor({ prompt: tail, maxLength: this.maxLineLength, columns, history });
      this.write((this.atLineStart ? "" : "\r\n") + toTerminal(head) + tail);
      // Type-ahead is typed into the new line; keys after an Enter stay queued for the prompt after that.
      while (this.editor && this.typeahead.length > 0) this.onKey(this.typeahead.shift()!);
    };
    start();
    const tooLong = (read: ReadResult): Promise<ReadResult> | ReadResult => {
      if (read.kind !== "too-long") return read;
      this.write(`error: line too long (max ${this.maxLineLength} characters)\r\n`);
      const again = new Promise<ReadResult>((resolve) => {
        this.reading = resolve;
      });
      start();
      return again.then(tooLong);
    };
    return result.then(tooLong);
  }

  private finishRead(result: ReadResult): void {
    const reading = this.reading;
    this.editor = undefined;
    this.reading = undefined;
    reading?.(result);
  }

  // --- commands ---

  private async execute(line: string): Promise<"exit" | undefined> {
    let words: string[];
    try {
      words = splitWords(line);
    } catch (err) {
      this.printError(err);
      return;
    }
    const [name, ...args] = words;
    if (name === undefined) return;
    if (name === "exit" || name === "quit") return "exit";
    if (name === "help") return void this.help(args);
    const command = this.commands.get(name);
    if (!command) return void this.print(`error: ${unknownCommand(name)}\n`);

    const controller = new AbortController();
    this.running = controller;
    let active = true;
    const columns = () => this.options.columns?.();
    const io: ConsoleIo = {
      // A command that outlives its run (a stray timer) prints nothing over the next prompt.
      print: (text) => {
        if (active) this.print(text);
      },
      ask: (question) => (active ? this.ask(question) : Promise.resolve(undefined)),
      signal: controller.signal,
      get columns() {
        return columns();
      },
    };
    try {
      const done = (async () => command.run(args, io))();
      done.catch(() => {}); // failing after a hangup ended the shell: nobody to tell
      // Racing `closing`: after a hangup the shell ends even if the command ignores its aborted signal.
      await Promise.race([done, this.closing]);
    } catch (err) {
      if (!(controller.signal.aborted && (err as Error)?.name === "AbortError")) this.printError(err);
    } finally {
      active = false;
      this.running = undefined;
      this.reportDroppedOutput();
    }
  }

  private async ask(question: string): Promise<string | undefined> {
    if (this.editor || this.closed) return undefined; // one question at a time
    this.typeahead.length = 0;
    const read = await this.readLine(sanitize(question.replace(/\r\n/g, "\n"), true));
    return read.kind === "line" ? read.text : undefined;
  }

  private help(args: string[]): void {
    try {
      this.print(commandHelp(this.commands.values(), args) + (args.length === 0 ? KEYS_HELP : ""));
    } catch (err) {
      this.printError(err);
    }
  }

  // --- output ---

  /** Command and shell text: "\n" becomes "\r\n", control characters become "?" (nothing can drive the terminal). */
  private print(text: string): void {
    if (this.options.output.writableLength > MAX_PENDING_OUTPUT) {
      this.droppedOutput += text.length;
      return;
    }
    this.reportDroppedOutput();
    this.write(toTerminal(sanitize(text, true)));
  }

  private reportDroppedOutput(): void {
    if (this.droppedOutput === 0 || this.options.output.writableLength > MAX_PENDING_OUTPUT) return;
    const dropped = this.droppedOutput;
    this.droppedOutput = 0;
    this.write(
      `${this.atLineStart ? "" : "\r\n"}[${dropped} characters of output dropped: the line is slower than the output]\r\n`,
    );
  }

  private printError(err: unknown): void {
    this.print(`${this.atLineStart ? "" : "\n"}error: ${errorLine(err, Infinity)}\n`);
  }

  private write(text: string): void {
    if (text === "" || this.closed) return;
    this.atLineStart = text.endsWith("\n");
    this.options.output.write(text);
  }
}

/** Replaces control characters (C0 but tab and, when `lines`, newline; DEL; C1) with "?". */
export function sanitize(text: string, lines = false): string {
  return text.replace(lines ? /[\x00-\x08\x0b-\x1f\x7f-\x9f]/g : /[\x00-\x1f\x7f-\x9f]/g, (c) =>
    c === "\r" ? "" : "?",
  );
}

function toTerminal(text: string): string {
  return text.replace(/\n/g, "\r\n");
}

function clip(text: string): string {
  return text.length > 40 ? `${text.slice(0, 40)}...` : text;
}

/** Words separated by spaces or tabs; '...' and "..." group words (no escapes inside). */
export function splitWords(line: string): string[] {
  const words: string[] = [];
  let word: string | undefined;
  let quote: string | undefined;
  for (const c of line) {
    if (quote) {
      if (c === quote) quote = undefined;
      else word += c;
    } else if (c === " " || c === "\t") {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else if (c === "'" || c === '"') {
      quote = c;
      word ??= "";
    } else word = (word ?? "") + c;
  }
  if (quote) throw new ConsoleError(`unterminated ${quote === "'" ? "single" : "double"} quote`);
  if (word !== undefined) words.push(word);
  return words;
}

const KEYS_HELP = "Keys: Up/Down recall lines, Ctrl-C cancels a line or stops a command, Ctrl-L clears the screen.\n";

/**
 * `help` (every command, one line each) or `help COMMAND`, for the shell and the batch runner (batch.ts);
 * an unknown COMMAND is a ConsoleError.
 */
export function commandHelp(commands: Iterable<ConsoleCommand>, args: readonly string[]): string {
  const rows: [string, string][] = [...commands].map((c) => [`${c.name} ${c.args}`.trim(), c.summary]);
  rows.push(["help [COMMAND]", "list the commands, or show one"], ["exit", "leave the console (also quit, Ctrl-D)"]);
  if (args.length > 0) {
    const row = rows.find(([usage]) => usage.split(" ")[0] === args[0]);
    if (!row) throw new ConsoleError(unknownCommand(args[0]!));
    return `${row[0]}  ${row[1]}\n`;
  }
  const width = Math.max(...rows.map(([usage]) => usage.length));
  return "Commands:\n" + rows.map(([usage, summary]) => `  ${usage.padEnd(width)}  ${summary}\n`).join("");
}

export function unknownCommand(name: string): string {
  return `unknown command "${clip(name)}" (type help)`;
}
