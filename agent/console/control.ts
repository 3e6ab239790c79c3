// The daemon's local control socket: how `sharenode console` sees a running agent without the network. A unix
// stream socket, `<stateDir>/control.sock`, mode 0600 (the state directory is 0700 besides), speaking one JSON
// object per line:
//
//   request                              reply
//   {"op":"status"}                      {"ok":true,"result":{...Agent.status()...}}
//   {"op":"log.tail","lines":N}          {"ok":true,"result":{"lines":["...", ...]}}          N: 1..500, default 50
//   {"op":"log.follow","lines":N}        {"ok":true,"result":{"lines":[the last N]}}, then {"line":"..."} per new
//                                        log line until the client closes (N: 0..500, default 0)
//   {"op":"proofs"}                      {"ok":true,"result":{"passed":n,"failed":n,"recent":[...]}}
//   {"op":"ota","action":A,"dir":D}      A: status, commit, rollback, apply (D: a 'release pack' directory);
//                                        a refusal is {"ok":false,"error":{"code":<its code>,...}}
//   anything else                        {"ok":false,"error":{"code":"...","message":"..."}}
//
// Requests on one connection are answered in order. A request line over 4 KiB gets a `too-large` error and the
// connection is closed; a line that is not JSON gets `malformed` and the connection stays open. Nothing a client
// sends can take the daemon down: every handler failure is an `internal` error reply.
//
// The server does no work of its own: the composition root (agent/agent.ts) hands it the handlers.
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { chmod, lstat, unlink } from "node:fs/promises";
import { join } from "node:path";
import type { ReportedStatus } from "../protocol/daemon-status.js";
import type { ProofsSnapshot } from "../store/proofs.js";
import { errnoCode, errorLine } from "../util/errors.js";

export const CONTROL_SOCKET_NAME = "control.sock";
/** A request line longer than this is refused and its connection closed. */
export const MAX_REQUEST_BYTES = 4096;
/** The most log lines one request may ask for (the LogHub's ring holds 500). */
export const MAX_LOG_LINES = 500;
/** A follower that stops reading is dropped once this much output waits for it. */
const MAX_PENDING_OUTPUT = 1024 * 1024;
/** Connections at once: the console opens one or two; anything more is a runaway client. */
const MAX_CONNECTIONS = 32;

export function controlSocketPath(stateDir: string): string {
  return join(stateDir, CONTROL_SOCKET_NAME);
}

/** What the composition root gives the server. */
export interface ControlHandlers {
  /** The daemon's status: Agent.status(), a DaemonStatus (agent/protocol/daemon-status.ts). */
  status(): Promise<ReportedStatus>;
  /** The last n log lines, oldest first (LogHub.tail). */
  logTail(n: number): string[];
  /** Calls listener with every new log line; returns the unsubscribe function (LogHub.subscribe). */
  onLog(listener: (line: string) => void): () => void;
  proofs(): ProofsSnapshot | Promise<ProofsSnapshot>;
  /** Updates (agent/ota): `{op:"ota", action: "status" | "commit" | "rollback" | "apply", dir?}`; absent: unknown-op. */
  ota?(request: Record<string, unknown>): Promise<unknown>;
  /** Compute (agent/compute): `{op:"compute"}`, the queue as compute.list answers it; absent: unknown-op. */
  compute?(): unknown;
}

export class ControlError extends Error {
  override readonly name = "ControlError";
  constructor(
    message: string,
    /** not-running, no-access, timeout, closed, too-large, malformed, unknown-op, bad-args, internal, ... */
    readonly code: string,
  ) {
    super(message);
  }
}

export interface ControlServerOptions {
  /** The state directory; the socket is `<stateDir>/control.sock`. */
  stateDir: string;
  handlers: ControlHandlers;
  /** Told about a client's failure or a handler's exception (the agent logs it as a warning). */
  onError?: (message: string) => void;
}

type Reply = { ok: true; result: unknown } | { ok: false; error: { code: string; message: string } };

export class ControlServer {
  readonly path: string;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly unsubscribers = new Set<() => void>();
  private stopping: Promise<void> | undefined;

  constructor(private readonly options: ControlServerOptions) {
    this.path = controlSocketPath(options.stateDir);
  }

  /**
   * Listens on the socket. A socket file left by a daemon that died is removed; one that answers belongs to a
   * running agent, and start() fails rather than steal it.
   */
  async start(): Promise<void> {
    if (this.server) throw new ControlError("control socket: already started", "started");
    await this.removeStaleSocket();
    const server = createServer({ allowHalfOpen: false }, (socket) => this.accept(socket));
    server.maxConnections = MAX_CONNECTIONS;
    await new Promise<void>((resolve, reject) => {
      server.once("error", (err: NodeJS.ErrnoException) =>
        reject(
          new ControlError(
            `control socket ${this.path}: ${err.code === "EADDRINUSE" ? "in use by another process" : err.message}`,
            "listen",
          ),
        ),
      );
      server.listen(this.path, () => resolve());
    });
    server.on("error", (err) => this.options.onError?.(`control socket: ${err.message}`));
    this.server = server;
    // The state directory is 0700 already; the socket's own mode says the same to anyone who looks.
    await chmod(this.path, 0o600);
  }

  /** Stops listening, ends every connection (followers included) and removes the socket file. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const server = this.server;
      if (!server) return;
      for (const off of this.unsubscribers) off();
      this.unsubscribers.clear();
      for (const socket of this.sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      // server.close() unlinks the path on Linux; a leftover is removed here.
      await unlink(this.path).catch(() => {});
      this.server = undefined;
    })();
    return this.stopping;
  }

  private async removeStaleSocket(): Promise<void> {
    let isSocket: boolean;
    try {
      isSocket = (await lstat(this.path)).isSocket();
    } catch (err) {
      if (errnoCode(err) === "ENOENT") return;
      throw err;
    }
    if (!isSocket)
      throw new ControlError(`control socket ${this.path} exists and is not a socket: move it away`, "listen");
    const answered = await new Promise<boolean>((resolve) => {
      const probe = createConnection(this.path);
      probe.once("connect", () => {
        probe.destroy();
        resolve(true);
      });
      probe.once("error", () => resolve(false));
    });
    if (answered)
      throw new ControlError(
        `control socket ${this.path} answers: another agent runs with this state directory`,
        "in-use",
      );
    await unlink(this.path).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== "ENOENT") throw err;
    });
  }

  private accept(socket: Socket): void {
    if (this.stopping) {
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    let buffer = "";
    let following = false;
    let unsubscribe: (() => void) | undefined;
    // One request at a time per connection: replies come back in request order.
    let chain = Promise.resolve();
    const cleanup = () => {
      this.sockets.delete(socket);
      if (unsubscribe) {
        unsubscribe();
        this.unsubscribers.delete(unsubscribe);
        unsubscribe = undefined;
      }
    };
    socket.on("close", cleanup);
    socket.on("error", () => socket.destroy());
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      buffer += chunk;
      for (;;) {
        const nl = buffer.indexOf("\n");
        if (nl < 0) break;
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (Buffer.byteLength(line) > MAX_REQUEST_BYTES) return this.refuseTooLarge(socket);
        // After log.follow the connection only streams: further input is read and ignored.
        if (following || line.trim() === "") continue;
        chain = chain.then(async () => {
          const outcome = await this.handle(line);
          if (socket.destroyed) return;
          this.send(socket, outcome.reply);
          if (outcome.follow && !socket.destroyed) {
            following = true;
            const off = this.options.handlers.onLog((logLine) => this.send(socket, { line: logLine }));
            let done = false;
            // Called from close and from stop(): the handler's unsubscribe runs once.
            unsubscribe = () => {
              if (done) return;
              done = true;
              off();
            };
            this.unsubscribers.add(unsubscribe);
          }
        });
      }
      if (Buffer.byteLength(buffer) > MAX_REQUEST_BYTES) this.refuseTooLarge(socket);
    });
  }

  private refuseTooLarge(socket: Socket): void {
    const reply: Reply = {
      ok: false,
      error: { code: "too-large", message: `a request is at most ${MAX_REQUEST_BYTES} bytes` },
    };
    socket.end(JSON.stringify(reply) + "\n");
    socket.removeAllListeners("data");
    // end() flushes the reply; a client that never reads must not keep the socket.
    setTimeout(() => socket.destroy(), 1000).unref();
  }

  private send(socket: Socket, message: object): void {
    if (socket.destroyed || !socket.writable) return;
    if (socket.writableLength > MAX_PENDING_OUTPUT) {
      this.options.onError?.("control socket: dropped a client that stopped reading");
      socket.destroy();
      return;
    }
    socket.write(JSON.stringify(message) + "\n");
  }

  private async handle(line: string): Promise<{ reply: Reply; follow?: boolean }> {
    const fail = (code: string, message: string) => ({ reply: { ok: false as const, error: { code, message } } });
    let request: unknown;
    try {
      request = JSON.parse(line);
    } catch {
      return fail("malformed", "a request is one JSON object per line");
    }
    if (typeof request !== "object" || request === null || Array.isArray(request))
      return fail("malformed", "a request is a JSON object");
    const { op, lines } = request as { op?: unknown; lines?: unknown };
    const { handlers } = this.options;
    const lineCount = (min: number, fallback: number): number | undefined => {
      if (lines === undefined) return fallback;
      return typeof lines === "number" && Number.isInteger(lines) && lines >= min && lines <= MAX_LOG_LINES
        ? lines
        : undefined;
    };
    try {
      switch (op) {
        case "status":
          return { reply: { ok: true, result: await handlers.status() } };
        case "log.tail": {
          const n = lineCount(1, 50);
          if (n === undefined) return fail("bad-args", `lines must be an integer 1..${MAX_LOG_LINES}`);
          return { reply: { ok: true, result: { lines: handlers.logTail(n) } } };
        }
        case "log.follow": {
          const n = lineCount(0, 0);
          if (n === undefined) return fail("bad-args", `lines must be an integer 0..${MAX_LOG_LINES}`);
          return { reply: { ok: true, result: { lines: n > 0 ? handlers.logTail(n) : [] } }, follow: true };
        }
        case "proofs":
          return { reply: { ok: true, result: await handlers.proofs() } };
        case "ota":
        case "compute": {
          const handler =
            op === "ota"
              ? handlers.ota && (() => handlers.ota!(request as Record<string, unknown>))
              : handlers.compute && (() => handlers.compute!());
          if (!handler) break;
          try {
            return { reply: { ok: true, result: await handler() } };
          } catch (err) {
            // A refusal (not on trial, no compute without a store) is an answer, not an internal failure.
            const code = (err as { code?: unknown }).code;
            if (err instanceof Error && err.name === "CommandRefused" && typeof code === "string")
              return fail(code, errorLine(err));
            throw err;
          }
        }
      }
      return fail("unknown-op", `unknown op ${JSON.stringify(op)}: status, log.tail, log.follow, proofs, ota, compute`);
    } catch (err) {
      const message = errorLine(err);
      this.options.onError?.(`control socket: ${String(op)} failed: ${message}`);
      return fail("internal", message);
    }
  }
}

// --- the client ------------------------------------------------------------------------------------------------

export interface ControlClientOptions {
  /** Connecting gives up after this (default 1000 ms): a daemon that does not answer counts as not running. */
  connectTimeoutMs?: number;
  /** Each reply must come within this (default 5000 ms). */
  replyTimeoutMs?: number;
  signal?: AbortSignal;
}

/** A connection to a running daemon's control socket. */
export class ControlClient {
  private buffer = "";
  private readonly queue: string[] = [];
  private waiter: ((line: string | undefined) => void) | undefined;
  private ended = false;
  private endReason = "the daemon closed the connection";

  private constructor(
    private readonly socket: Socket,
    private readonly options: ControlClientOptions,
  ) {
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      this.buffer += chunk;
      for (;;) {
        const nl = this.buffer.indexOf("\n");
        if (nl < 0) break;
        this.push(this.buffer.slice(0, nl));
        this.buffer = this.buffer.slice(nl + 1);
      }
    });
    const end = (reason?: string) => {
      if (reason) this.endReason = reason;
      this.ended = true;
      this.push(undefined);
    };
    socket.on("end", () => end());
    socket.on("close", () => end());
    socket.on("error", (err) => end(`control socket: ${err.message}`));
  }

  /**
   * Connects to `<stateDir>/control.sock`. Throws ControlError `not-running` when nothing listens there (no
   * socket file, or a stale one), `no-access` when the console may not open it, `timeout` when it does not answer.
   */
  static async connect(stateDir: string, options: ControlClientOptions = {}): Promise<ControlClient> {
    const path = controlSocketPath(stateDir);
    const timeoutMs = options.connectTimeoutMs ?? 1000;
    const socket = await new Promise<Socket>((resolve, reject) => {
      if (options.signal?.aborted) return reject(new ControlError("interrupted", "aborted"));
      const s = createConnection(path);
      const timer = setTimeout(() => {
        s.destroy();
        reject(new ControlError(`the daemon does not answer on ${path} (waited ${timeoutMs} ms)`, "timeout"));
      }, timeoutMs);
      const onAbort = () => {
        clearTimeout(timer);
        s.destroy();
        reject(new ControlError("interrupted", "aborted"));
      };
      options.signal?.addEventListener("abort", onAbort, { once: true });
      s.once("connect", () => {
        clearTimeout(timer);
        options.signal?.removeEventListener("abort", onAbort);
        resolve(s);
      });
      s.once("error", (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        options.signal?.removeEventListener("abort", onAbort);
        if (err.code === "ENOENT" || err.code === "ECONNREFUSED" || err.code === "ENOTDIR") {
          reject(new ControlError(`no daemon answers on ${path}`, "not-running"));
        } else if (err.code === "EACCES" || err.code === "EPERM") {
          reject(
            new ControlError(
              `may not open ${path} (permission denied): run the console as root or as the agent's user`,
              "no-access",
            ),
          );
        } else {
          reject(new ControlError(`cannot reach the daemon on ${path}: ${err.message}`, "unreachable"));
        }
      });
    });
    return new ControlClient(socket, options);
  }

  /** Sends one request and returns its result; an error reply throws ControlError with its code. */
  async request(op: string, args: Record<string, unknown> = {}): Promise<unknown> {
    this.socket.write(JSON.stringify({ ...args, op }) + "\n");
    const line = await this.next(this.options.replyTimeoutMs ?? 5000);
    return resultOf(line);
  }

  /**
   * Streams the daemon's log: `lines` earlier lines first, then every new one, until `signal` aborts (resolves
   * "aborted") or the daemon closes the connection (resolves "closed").
   */
  async follow(lines: number, onLine: (line: string) => void, signal: AbortSignal): Promise<"aborted" | "closed"> {
    const first = (await this.request("log.follow", { lines })) as { lines?: unknown };
    for (const l of Array.isArray(first?.lines) ? first.lines : []) onLine(String(l));
    for (;;) {
      if (signal.aborted) return "aborted";
      const line = await new Promise<string | undefined | "aborted">((resolve) => {
        const onAbort = () => resolve("aborted");
        signal.addEventListener("abort", onAbort, { once: true });
        void this.next(0).then(
          (l) => {
            signal.removeEventListener("abort", onAbort);
            resolve(l);
          },
          () => {
            signal.removeEventListener("abort", onAbort);
            resolve(undefined);
          },
        );
      });
      if (line === "aborted") return "aborted";
      if (line === undefined) return "closed";
      let message: { line?: unknown };
      try {
        message = JSON.parse(line) as { line?: unknown };
      } catch {
        continue;
      }
      if (typeof message?.line === "string") onLine(message.line);
    }
  }

  close(): void {
    this.socket.destroy();
  }

  private push(line: string | undefined): void {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w(line);
    } else if (line !== undefined) {
      this.queue.push(line);
    }
  }

  /** The next line from the daemon; rejects on timeout (0: none) or when the connection is gone. */
  private next(timeoutMs: number): Promise<string> {
    const queued = this.queue.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.ended) return Promise.reject(new ControlError(this.endReason, "closed"));
    return new Promise<string>((resolve, reject) => {
      const timer =
        timeoutMs > 0
          ? setTimeout(() => {
              this.waiter = undefined;
              reject(new ControlError(`the daemon did not reply within ${timeoutMs} ms`, "timeout"));
            }, timeoutMs)
          : undefined;
      this.waiter = (line) => {
        if (timer) clearTimeout(timer);
        if (line === undefined) reject(new ControlError(this.endReason, "closed"));
        else resolve(line);
      };
    });
  }
}

function resultOf(line: string): unknown {
  let reply: { ok?: unknown; result?: unknown; error?: { code?: unknown; message?: unknown } };
  try {
    reply = JSON.parse(line) as typeof reply;
  } catch {
    throw new ControlError("the daemon sent a reply that is not JSON", "malformed");
  }
  if (reply?.ok === true) return reply.result;
  const code = typeof reply?.error?.code === "string" ? reply.error.code : "error";
  const message = typeof reply?.error?.message === "string" ? reply.error.message : "the daemon refused the request";
  throw new ControlError(message, code);
}

/**
 * One request to the daemon, for commands that need one answer: `{ running: false, why }` when no daemon answers
 * (not running, no access, no answer), `{ running: true, result }` otherwise. Errors the daemon replies with throw.
 */
export async function askDaemon(
  stateDir: string,
  op: string,
  args: Record<string, unknown> = {},
  options: ControlClientOptions = {},
): Promise<{ running: true; result: unknown } | { running: false; code: string; why: string }> {
  let client: ControlClient;
  try {
    client = await ControlClient.connect(stateDir, options);
  } catch (err) {
    if (err instanceof ControlError) return { running: false, code: err.code, why: err.message };
    throw err;
  }
  try {
    return { running: true, result: await client.request(op, args) };
  } finally {
    client.close();
  }
}
