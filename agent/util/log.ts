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
  private readonly listeners = new Set<(line: string) => void>();
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
    const count = Math.max(0, Math.min(n, this.ringSize));
    // slice(-0) is the whole ring: zero lines must be asked for explicitly.
    return count === 0 ? [] : this.ring.slice(-count);
  }

  /**
   * Calls `listener` with every line logged from now on (the control socket's `log.follow`); returns the function
   * that unsubscribes. A throwing listener is ignored: logging never fails because of a reader.
   */
  subscribe(listener: (line: string) => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
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
    for (const listener of this.listeners) {
      try {
        listener(line);
      } catch {
        // a reader's failure is its own
      }
    }
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
