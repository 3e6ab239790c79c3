// Logging: one line per message, namespaced by module, levels, and a ring of recent lines for the `log.tail`
// command and the serial console. Messages are built lazily (a function) where they cost something, so debug
// lines cost nothing on a slow CPU when debug is off. Nothing here knows about secrets: callers never pass them.

export type LogLevel = "debug" | "info" | "warn" | "error";
const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface LogSink {
  write(line: string): void;
}

export class LogHub {
  private readonly ring: string[] = [];
  private level: number;

  constructor(
    private readonly sink: LogSink,
    level: LogLevel = "info",
    private readonly clock: () => number = Date.now,
    private readonly ringSize = 500,
  ) {
    this.level = RANK[level];
  }

  setLevel(level: LogLevel): void {
    this.level = RANK[level];
  }

  logger(namespace: string): Logger {
    return new Logger(this, namespace);
  }

  /** The last `n` lines (at most the ring's size), oldest first. */
  tail(n: number): string[] {
    return this.ring.slice(-Math.max(0, Math.min(n, this.ringSize)));
  }

  /** @internal */
  emit(level: LogLevel, namespace: string, message: string | (() => string)): void {
    if (RANK[level] < this.level) return;
    const text = typeof message === "function" ? message() : message;
    // One line per message, whatever the message contains.
    const line = `${new Date(this.clock()).toISOString()} ${level.padEnd(5)} ${namespace}: ${text.replace(/\r?\n/g, "\\n")}`;
    this.ring.push(line);
    if (this.ring.length > this.ringSize) this.ring.shift();
    this.sink.write(line + "\n");
  }
}

export class Logger {
  constructor(
    private readonly hub: LogHub,
    readonly namespace: string,
  ) {}

  debug(message: string | (() => string)): void {
    this.hub.emit("debug", this.namespace, message);
  }
  info(message: string | (() => string)): void {
    this.hub.emit("info", this.namespace, message);
  }
  warn(message: string | (() => string)): void {
    this.hub.emit("warn", this.namespace, message);
  }
  error(message: string | (() => string)): void {
    this.hub.emit("error", this.namespace, message);
  }
}
