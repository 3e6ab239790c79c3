// The contract between the console's shell (line editing, history, dispatch: shell.ts) and the commands it runs
// (commands.ts): a command gets its arguments and a ConsoleIo and prints lines; it never touches the stream, the
// terminal modes or the history.

/** What a running console command may do with the person at the terminal. */
export interface ConsoleIo {
  /** Prints text; "\n" ends a line (the shell turns it into "\r\n" for the terminal). */
  print(text: string): void;
  /** Asks a question on its own line; resolves with the typed line, or undefined on Ctrl-C / Ctrl-D. */
  ask(prompt: string): Promise<string | undefined>;
  /** Aborted when the person presses Ctrl-C (a `log -f` runs until then). */
  readonly signal: AbortSignal;
  /** Columns of the terminal, when known (for tables). */
  readonly columns: number | undefined;
}

/** A command's failure meant for the person: the shell prints `error: <message>` and shows a new prompt. */
export class ConsoleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConsoleError";
  }
}

export interface ConsoleCommand {
  /** What the person types: "log". */
  readonly name: string;
  /** Its arguments, for help: "[-f] [LINES]". */
  readonly args: string;
  /** One line for `help`. */
  readonly summary: string;
  /**
   * Runs the command. A check-style command (selftest) resolves to `{ ok }` so that scripts can use it
   * (`sharenode selftest` exits 1 when a check failed); the shell ignores the value.
   */
  run(args: string[], io: ConsoleIo): Promise<void | CommandOutcome>;
}

export interface CommandOutcome {
  ok: boolean;
}
