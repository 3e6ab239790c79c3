// The box's HTTP/1.1 server (node:http), the only one on the box: objects, their outboards and verified-streaming
// slices, to whoever holds an order for them (order-gate.ts). Endpoints and headers: agent/protocol/README.md,
// "Orders and receipts on HTTP"; ranges as nginx answers them (http-range.ts).
//
// Per request work is kept small (the bench's 64 KiB ranges are bound by it): the path is cut by hand, never
// parsed as a URL; an id is checked with one regular expression before anything touches the disk; headers are
// written as one flat array; a range of up to PIECE_BYTES is one fs.read and one write. Larger answers are read
// PIECE_BYTES at a time, each piece written when the socket has taken the last one, so a connection holds at most
// one piece in memory, and a client that stops reading is cut off by the idle timeout.
//
// Robustness: a header timeout (slowloris: Node answers 408 and closes), an idle timeout on every socket, a cap on
// connections in all and per client address (the one over the cap gets a 503 and is closed before any request is
// read).
import { close, open, read, readFile } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { networkInterfaces } from "node:os";
import { parseOutboard, type Outboard } from "../kernels/outboard.js";
import type { ServeCounters } from "../telemetry/work-counters.js";
import { errnoCode, errorLine } from "../util/errors.js";
import { parseRange } from "./http-range.js";
import { PiecePool } from "./piece-pool.js";
import { groupItemsFromTree, groupTree, planSlice, type SlicePart, type SlicePlan } from "./slice.js";

/** What the server reads objects through: agent/store/object-store.ts's ObjectStore.locate. */
export interface ObjectSource {
  locate(id: string): { length: number; path: string; outboardPath: string } | undefined;
}

/**
 * The order gate as the server uses it (order-gate.ts): open() checks the request's order (and takes a receipt it
 * carries) before anything is read; the pass then admits a number of bytes (metering, the receipt window) and is
 * told how many were really written.
 */
export interface Gate {
  open(req: IncomingMessage, objectId: string): Promise<GateResult> | GateResult;
  receipt(req: IncomingMessage, body: string): Promise<ReceiptResult> | ReceiptResult;
  /** Bytes sent but not yet receipted, over every order (telemetry's receipt lag). */
  receiptLag?(): number;
}
export type GateResult = { ok: true; pass: Pass } | Refusal;
export type ReceiptResult = { ok: true; serial: string; bytes: number } | Refusal;
export interface Refusal {
  ok: false;
  status: number;
  code: string;
  reason: string;
}
export interface Pass {
  /** Reserves n bytes under the order; a refusal when that would pass its maxBytes or the receipt window. */
  admit(n: number): Refusal | undefined;
  /** Bytes reserved by admit() that were never written (the client went away): given back. */
  unsent(n: number): void;
  /** Headers to add to the answer (the receipted bytes so far). */
  readonly headers: readonly string[];
}

/** Waits before n bytes go out (the owner's upload limit, agent.ts injects it); absent: no limit. */
export type Throttle = (n: number) => Promise<void>;

export interface ServeLimits {
  /** Connections open at once, in all (default 256). */
  maxConnections: number;
  /** Connections open at once from one client address (default 64). */
  maxConnectionsPerAddress: number;
  /** The request's headers must be in within this (slowloris; default 10 000 ms). */
  headersTimeoutMs: number;
  /** A socket with no traffic either way for this long is closed (default 30 000 ms). */
  idleTimeoutMs: number;
  /** An idle keep-alive connection is closed after this (default 5 000 ms). */
  keepAliveTimeoutMs: number;
}

export const DEFAULT_LIMITS: ServeLimits = {
  maxConnections: 256,
  maxConnectionsPerAddress: 64,
  headersTimeoutMs: 10_000,
  idleTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
};

export interface ObjectServerOptions {
  store: ObjectSource;
  /** Address to listen on ("0.0.0.0", "::", "127.0.0.1", ...). */
  bind: string;
  /** 0: an ephemeral port (see port after start()). */
  port: number;
  limits?: Partial<ServeLimits>;
  /** Absent only in tests of the HTTP layer: every request is then served without an order. */
  gate?: Gate;
  throttle?: Throttle;
  /** The agent's work counters (telemetry): requests, bytes served, order refusals. */
  counters?: ServeCounters;
  onError?: (line: string) => void;
}

export interface ServeStats {
  requests: number;
  /** Body bytes written to sockets (objects, outboards, slices). */
  bytesServed: number;
  /** Refused requests by code (not-found, bad-id, expired, receipt-window, ...). */
  refused: Record<string, number>;
  connections: number;
  /** Connections refused by the caps. */
  connectionsRefused: number;
  /** Bytes sent but not yet receipted, over every order in memory. */
  receiptLagBytes: number;
}

/** Bytes read and written at a time for answers larger than that. */
const PIECE_BYTES = 256 * 1024;
const ID = /^[0-9a-f]{64}$/;
/** Refusals for the order (the gate's codes), as telemetry counts them; a bad path or range is not one. */
const ORDER_REFUSALS = new Set([
  "no-order",
  "malformed",
  "bad-signature",
  "expired",
  "wrong-device",
  "wrong-object",
  "serial-reused",
  "over-max-bytes",
  "receipt-window",
]);
const OBJECTS = "/v1/objects/";
/** Parsed outboards kept for slices (objects are immutable by id, so an entry never goes stale). */
const OUTBOARD_CACHE_ENTRIES = 64;
/**
 * Bytes of group trees kept: 960 bytes per 16 KiB group, so 8 MiB covers about 140 MiB of objects. A tree is
 * derived from the object's bytes, which never change under its id, so an entry never goes stale.
 */
const GROUP_TREE_CACHE_BYTES = 8 * 1024 * 1024;
/** Room past PIECE_BYTES in a slice's answer buffer: the piece ends with a whole group's items (16 KiB + 960 B). */
const SLICE_PIECE_SLACK = 32 * 1024;
/** Slice buffers kept for reuse while unused: about 9 MiB at most. */
const SLICE_BUFFERS_KEPT = 32;
/** The receipts endpoint's body: a receipt token (at most 512 characters) and some slack. */
const MAX_RECEIPT_BODY = 1024;
const BUSY_RESPONSE =
  "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 22\r\nSharenode-Refused: busy\r\n" +
  "Connection: close\r\n\r\ntoo many connections\r\n";

export class ObjectServer {
  private server: Server | undefined;
  private readonly limits: ServeLimits;
  private readonly perAddress = new Map<string, number>();
  private readonly outboards = new Map<string, Outboard>();
  private readonly fds = new FdCache();
  /** Groups' inner trees (slice.ts groupTree), so a group is hashed once, not on every slice that touches it. */
  private readonly groupTrees = new ByteBoundedMap(GROUP_TREE_CACHE_BYTES);
  /** Slices' read and answer buffers (a piece plus the group items that end it). */
  private readonly pieces = new PiecePool(PIECE_BYTES + SLICE_PIECE_SLACK, SLICE_BUFFERS_KEPT);
  private open = 0;
  private readonly counters: ServeStats = {
    requests: 0,
    bytesServed: 0,
    refused: {},
    connections: 0,
    connectionsRefused: 0,
    receiptLagBytes: 0,
  };

  constructor(private readonly options: ObjectServerOptions) {
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
  }

  /** Sets (or, with undefined, removes) the wait before bytes go out: the owner's upload limit. */
  setThrottle(throttle: Throttle | undefined): void {
    this.options.throttle = throttle;
  }

  /** The port listened on (the ephemeral one when port 0 was asked for). */
  get port(): number {
    return (this.server?.address() as AddressInfo | null)?.port ?? 0;
  }

  async start(): Promise<void> {
    const { limits } = this;
    const server = createServer({
      headersTimeout: limits.headersTimeoutMs,
      // Requests have no bodies but a receipt: the whole request may take a little longer than its headers.
      requestTimeout: limits.headersTimeoutMs + 5000,
      // Between requests Node uses this instead of the idle timeout: never longer than that.
      keepAliveTimeout: Math.min(limits.keepAliveTimeoutMs, limits.idleTimeoutMs),
      // Node checks the two timeouts above only this often (default 30 s): often enough to honour them.
      connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(limits.headersTimeoutMs / 4))),
    });
    server.setTimeout(limits.idleTimeoutMs);
    server.on("connection", (socket) => this.onConnection(socket));
    server.on("request", (req, res) => this.onRequest(req, res));
    server.on("clientError", (err: NodeJS.ErrnoException, socket) => {
      // Node's own answers (408 for a header timeout, 400 for garbage) when the socket can still take one.
      if (err.code === "ERR_HTTP_REQUEST_TIMEOUT" && socket.writable) {
        socket.end("HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
      } else if (socket.writable) {
        socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
      } else socket.destroy();
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.options.port, this.options.bind, () => {
        server.off("error", reject);
        resolve();
      });
    });
    server.on("error", (err) => this.options.onError?.(`serve: ${errorLine(err)}`));
    this.server = server;
    this.fds.start();
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    this.fds.closeAll();
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  /** The URLs the server is reachable at: its bind address, or every non-loopback address when bound to all. */
  urls(): string[] {
    return reachableUrls(this.options.bind, this.port);
  }

  stats(): ServeStats {
    return {
      ...this.counters,
      refused: { ...this.counters.refused },
      connections: this.open,
      receiptLagBytes: this.options.gate?.receiptLag?.() ?? 0,
    };
  }

  private onConnection(socket: Socket): void {
    const address = socket.remoteAddress ?? "?";
    const mine = (this.perAddress.get(address) ?? 0) + 1;
    if (this.open + 1 > this.limits.maxConnections || mine > this.limits.maxConnectionsPerAddress) {
      this.counters.connectionsRefused++;
      // Written before the parser reads a byte; destroying after the flush keeps Node from answering as well.
      socket.write(BUSY_RESPONSE, () => socket.destroy());
      socket.pause();
      return;
    }
    this.open++;
    this.counters.connections++;
    this.perAddress.set(address, mine);
    socket.once("close", () => {
      this.open--;
      const left = (this.perAddress.get(address) ?? 1) - 1;
      if (left === 0) this.perAddress.delete(address);
      else this.perAddress.set(address, left);
    });
  }

  private refuse(res: ServerResponse, status: number, code: string, reason: string): void {
    this.counters.refused[code] = (this.counters.refused[code] ?? 0) + 1;
    if (ORDER_REFUSALS.has(code)) this.options.counters?.orderRefused();
    const body = reason + "\n";
    res.writeHead(status, [
      "Content-Type",
      "text/plain; charset=utf-8",
      "Content-Length",
      String(Buffer.byteLength(body)),
      "Sharenode-Refused",
      code,
    ]);
    res.end(res.req.method === "HEAD" ? undefined : body);
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    this.counters.requests++;
    this.options.counters?.request();
    const url = req.url ?? "";
    const method = req.method;
    if (url === "/v1/receipts" || url.startsWith("/v1/receipts?")) {
      if (method !== "POST") return this.refuse(res, 405, "method", `${method} /v1/receipts: use POST`);
      return void this.postReceipt(req, res).catch((err) => this.fail(res, err));
    }
    if (!url.startsWith(OBJECTS))
      return this.refuse(res, 404, "no-route", "not found: the endpoints are /v1/objects/{id}");
    const q = url.indexOf("?", OBJECTS.length);
    const path = q < 0 ? url.slice(OBJECTS.length) : url.slice(OBJECTS.length, q);
    const id = path.slice(0, 64);
    const rest = path.slice(64);
    // Before anything else: nothing that is not an id reaches a file name.
    if (!ID.test(id) || (rest !== "" && rest !== "/outboard" && rest !== "/slice")) {
      return this.refuse(res, 400, "bad-id", "not an object path: /v1/objects/ then 64 lowercase hex digits");
    }
    if (method !== "GET" && (method !== "HEAD" || rest !== "")) {
      return this.refuse(res, 405, "method", `${method} is not allowed here`);
    }
    const query = q < 0 ? "" : url.slice(q + 1);
    try {
      const served = this.serve(req, res, id, rest, query);
      if (served instanceof Promise) served.catch((err) => this.fail(res, err));
    } catch (err) {
      this.fail(res, err);
    }
  }

  /** POST /v1/receipts: the body is a receipt token; the request carries its order like any other. */
  private async postReceipt(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req, MAX_RECEIPT_BODY);
    if (body === undefined) return this.refuse(res, 413, "too-large", `a receipt is at most ${MAX_RECEIPT_BODY} bytes`);
    const gate = this.options.gate;
    if (!gate) return this.refuse(res, 404, "no-route", "this server takes no receipts");
    const taken = await gate.receipt(req, body.trim());
    if (!taken.ok) return this.refuse(res, taken.status, taken.code, taken.reason);
    const answer = JSON.stringify({ serial: taken.serial, bytes: taken.bytes }) + "\n";
    res.writeHead(200, ["Content-Type", "application/json", "Content-Length", String(answer.length)]);
    res.end(answer);
  }

  private fail(res: ServerResponse, err: unknown): void {
    this.options.onError?.(`serve ${res.req.url?.slice(0, 90) ?? ""}: ${errorLine(err)}`);
    if (!res.headersSent) this.refuse(res, 500, "internal", "internal error");
    else res.destroy();
  }

  /** Synchronous when the order is a cached one and carries no receipt (the common range request). */
  private serve(req: IncomingMessage, res: ServerResponse, id: string, rest: string, query: string): unknown {
    const gate = this.options.gate;
    if (!gate) return this.serveWith(req, res, id, rest, query, undefined);
    const opened = gate.open(req, id);
    if (opened instanceof Promise) {
      return opened.then((o) =>
        o.ok ? this.serveWith(req, res, id, rest, query, o.pass) : this.refuse(res, o.status, o.code, o.reason),
      );
    }
    if (!opened.ok) return this.refuse(res, opened.status, opened.code, opened.reason);
    return this.serveWith(req, res, id, rest, query, opened.pass);
  }

  private serveWith(
    req: IncomingMessage,
    res: ServerResponse,
    id: string,
    rest: string,
    query: string,
    pass: Pass | undefined,
  ): unknown {
    const found = this.options.store.locate(id);
    if (!found) return this.refuse(res, 404, "not-found", `no object ${id} here`);
    if (rest === "") return this.serveObject(req, res, id, found.path, found.length, pass);
    if (rest === "/outboard") return this.serveOutboard(res, id, found.outboardPath, pass);
    return this.serveSlice(res, id, found, query, pass);
  }

  private serveObject(
    req: IncomingMessage,
    res: ServerResponse,
    id: string,
    path: string,
    length: number,
    pass: Pass | undefined,
  ): void {
    const etag = `"${id}"`;
    const ifRange = req.headers["if-range"];
    // nginx: a range applies only when If-Range is absent or names the current ETag (we send no Last-Modified,
    // so a date never matches).
    const answer = ifRange === undefined || ifRange === etag ? parseRange(req.headers.range, length) : undefined;
    if (answer?.kind === "unsatisfiable") {
      this.counters.refused["range"] = (this.counters.refused["range"] ?? 0) + 1;
      const body = "range not satisfiable\n";
      res.writeHead(416, [
        "Content-Type",
        "text/plain; charset=utf-8",
        "Content-Length",
        String(body.length),
        "Content-Range",
        `bytes */${length}`,
        "Accept-Ranges",
        "bytes",
      ]);
      res.end(req.method === "HEAD" ? undefined : body);
      return;
    }
    const part = answer?.kind === "part";
    const start = part ? answer.start : 0;
    const end = part ? answer.end : length;
    const head = req.method === "HEAD";
    const n = head ? 0 : end - start;
    if (pass) {
      const refused = pass.admit(n);
      if (refused) return this.refuse(res, refused.status, refused.code, refused.reason);
    }
    const headers = [
      "Content-Type",
      "application/octet-stream",
      "Content-Length",
      String(end - start),
      "Accept-Ranges",
      "bytes",
      "ETag",
      etag,
    ];
    if (part) headers.push("Content-Range", `bytes ${start}-${end - 1}/${length}`);
    if (pass) headers.push(...pass.headers);
    if (head || n === 0) {
      res.writeHead(part ? 206 : 200, headers);
      res.end();
      return;
    }
    this.fds.acquire(path, (err, fd) => {
      if (err) {
        pass?.unsent(n);
        if (errnoCode(err) === "ENOENT") return this.refuse(res, 404, "not-found", `no object ${id} here`);
        return this.fail(res, err);
      }
      res.writeHead(part ? 206 : 200, headers);
      this.stream(res, fd, start, end, pass);
    });
  }

  /**
   * The common small answer (a range of up to a piece, no throttle): one read, one end(), no listener. The bytes
   * are handed to the socket whole, so nothing is left to give back if the client goes.
   */
  private sendOnce(res: ServerResponse, fd: number, start: number, end: number, pass: Pass | undefined): void {
    const want = end - start;
    const buf = Buffer.allocUnsafe(want);
    read(fd, buf, 0, want, start, (err, got) => {
      this.fds.release(fd);
      if (err || got !== want) {
        this.options.onError?.(`serve: reading ${res.req.url ?? ""}: ${err ? errorLine(err) : "file is short"}`);
        pass?.unsent(want);
        res.destroy();
        return;
      }
      this.counters.bytesServed += want;
      this.options.counters?.served(want);
      res.end(buf);
    });
  }

  /** Writes bytes [start, end) of fd, a piece at a time, closing fd at the end or when the client goes. */
  private stream(res: ServerResponse, fd: number, start: number, end: number, pass: Pass | undefined): void {
    const throttle = this.options.throttle;
    if (end - start <= PIECE_BYTES && !throttle) return this.sendOnce(res, fd, start, end, pass);
    let pos = start;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      this.fds.release(fd);
      if (pos < end) pass?.unsent(end - pos);
    };
    res.once("close", finish);
    const next = (): void => {
      if (done) return;
      const want = Math.min(PIECE_BYTES, end - pos);
      const buf = Buffer.allocUnsafe(want);
      read(fd, buf, 0, want, pos, (err, got) => {
        if (done) return;
        if (err || got === 0) {
          // A file shorter than the index says (a damaged disk): the answer cannot be completed honestly.
          this.options.onError?.(`serve: reading ${res.req.url ?? ""}: ${err ? errorLine(err) : "file is short"}`);
          res.destroy();
          return finish();
        }
        const send = () => {
          if (done) return;
          pos += got;
          this.counters.bytesServed += got;
          this.options.counters?.served(got);
          const piece = got === want ? buf : buf.subarray(0, got);
          if (pos >= end) {
            res.end(piece);
            finish();
          } else if (res.write(piece)) next();
          else res.once("drain", next);
        };
        if (throttle) throttle(got).then(send, () => res.destroy());
        else send();
      });
    };
    next();
  }

  private serveOutboard(res: ServerResponse, id: string, path: string, pass: Pass | undefined): void {
    readFile(path, (err, bytes) => {
      if (err) {
        if (errnoCode(err) === "ENOENT") return this.refuse(res, 404, "not-found", `no object ${id} here`);
        return this.fail(res, err);
      }
      if (pass) {
        const refused = pass.admit(bytes.length);
        if (refused) return this.refuse(res, refused.status, refused.code, refused.reason);
      }
      const headers = ["Content-Type", "application/octet-stream", "Content-Length", String(bytes.length)];
      if (pass) headers.push(...pass.headers);
      res.writeHead(200, headers);
      const send = () => {
        this.counters.bytesServed += bytes.length;
        this.options.counters?.served(bytes.length);
        res.end(bytes);
      };
      const throttle = this.options.throttle;
      if (throttle) throttle(bytes.length).then(send, () => res.destroy());
      else send();
    });
  }

  private async outboardOf(id: string, path: string): Promise<Outboard> {
    const bytes = await new Promise<Buffer>((resolve, reject) =>
      readFile(path, (err, b) => (err ? reject(err) : resolve(b))),
    );
    const outboard = parseOutboard(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    if (this.outboards.size >= OUTBOARD_CACHE_ENTRIES) this.outboards.delete(this.outboards.keys().next().value!);
    this.outboards.set(id, outboard);
    return outboard;
  }

  private async serveSlice(
    res: ServerResponse,
    id: string,
    found: { length: number; path: string; outboardPath: string },
    query: string,
    pass: Pass | undefined,
  ): Promise<void> {
    const params = new URLSearchParams(query);
    const start = decimal(params.get("start"));
    const end = decimal(params.get("end"));
    if (start === undefined || end === undefined) {
      return this.refuse(res, 400, "bad-slice", "slice needs start=S&end=E: decimal byte offsets, end exclusive");
    }
    let outboard: Outboard;
    try {
      outboard = this.outboards.get(id) ?? (await this.outboardOf(id, found.outboardPath));
    } catch (err) {
      if (errnoCode(err) === "ENOENT") return this.refuse(res, 404, "not-found", `no object ${id} here`);
      throw err;
    }
    const plan = planSlice(outboard, start, end);
    if (typeof plan === "string") {
      this.counters.refused["range"] = (this.counters.refused["range"] ?? 0) + 1;
      return this.refuse(res, 416, "range", plan);
    }
    if (pass) {
      const refused = pass.admit(plan.proofLength);
      if (refused) return this.refuse(res, refused.status, refused.code, refused.reason);
    }
    const fd = await new Promise<number>((resolve, reject) =>
      this.fds.acquire(found.path, (err, f) => (err ? reject(err) : resolve(f))),
    ).catch((err) => {
      pass?.unsent(plan.proofLength);
      throw err;
    });
    const headers = [
      "Content-Type",
      "application/octet-stream",
      "Content-Length",
      String(plan.proofLength),
      "Sharenode-Object-Length",
      String(found.length),
      "Sharenode-Chunk-Start",
      String(plan.chunkStart),
      "Sharenode-Chunk-Count",
      String(plan.chunkCount),
    ];
    if (pass) headers.push(...pass.headers);
    res.writeHead(200, headers);
    let written = 0;
    try {
      written = await this.streamSlice(res, fd, id, plan);
    } finally {
      this.fds.release(fd);
      if (written < plan.proofLength) pass?.unsent(plan.proofLength - written);
    }
  }

  /**
   * Writes a slice's proof as its groups are read and hashed; returns the bytes written. Each answer piece (about
   * PIECE_BYTES of proof) is built in one fresh buffer and written once: outboard nodes, cached group parents and
   * chunk bytes copied in as runs, read from the file a batch of groups at a time into one reused buffer. No buffer
   * per group or chunk (the allocations and the collector cost more than the copying); one piece is in memory at a
   * time, the next built only when the socket has taken the last.
   */
  private async streamSlice(res: ServerResponse, fd: number, id: string, plan: SlicePlan): Promise<number> {
    const throttle = this.options.throttle;
    let closed = false;
    res.once("close", () => (closed = true));
    const parts = plan.parts;
    const size = (p: SlicePart) => (p.kind === "copy" ? p.bytes.length : p.itemsLength);
    // The touched groups are contiguous in the file: read in batches of up to PIECE_BYTES (at least one group).
    let firstByte = -1;
    let lastByte = 0;
    let groupBytes = 0;
    for (const p of parts) {
      if (p.kind !== "group") continue;
      if (firstByte < 0) firstByte = p.offset;
      lastByte = p.offset + p.length;
      groupBytes = Math.max(groupBytes, p.length);
    }
    const read = this.pieces.take(Math.min(Math.max(PIECE_BYTES, groupBytes), lastByte - Math.max(firstByte, 0)));
    let batchAt = 0;
    let batchLength = 0;
    let written = 0;
    let i = 0;
    while (i < parts.length && !closed) {
      let pieceLength = 0;
      let j = i;
      while (j < parts.length && pieceLength < PIECE_BYTES) pieceLength += size(parts[j++]!);
      const out = this.pieces.take(pieceLength);
      let at = 0;
      for (; i < j; i++) {
        const part = parts[i]!;
        if (part.kind === "copy") {
          out.set(part.bytes, at);
          at += part.bytes.length;
          continue;
        }
        if (part.offset < batchAt || part.offset + part.length > batchAt + batchLength) {
          batchAt = part.offset;
          batchLength = Math.min(read.length, lastByte - batchAt);
          await readInto(fd, read, batchLength, batchAt);
        }
        const data = read.subarray(part.offset - batchAt, part.offset - batchAt + part.length);
        const key = `${id}:${part.first}`;
        let tree = this.groupTrees.get(key);
        if (!tree) {
          tree = groupTree(part.first, part.n, data);
          this.groupTrees.set(key, tree);
        }
        groupItemsFromTree(part, plan.target, data, tree, out, at);
        at += part.itemsLength;
      }
      if (throttle) await throttle(pieceLength);
      if (closed) break;
      written += pieceLength;
      this.counters.bytesServed += pieceLength;
      this.options.counters?.served(pieceLength);
      // The socket has the piece until the write's callback; only then may the buffer be written again.
      const giveBack = (err?: Error | null) => {
        if (!err) this.pieces.give(out);
      };
      if (i === parts.length) res.end(out, giveBack);
      else if (!res.write(out, giveBack)) await drained(res);
    }
    // No read is in flight any more (each was awaited).
    this.pieces.give(read);
    return written;
  }
}

/** The request body as text, or undefined when it passes max bytes. */
function readBody(req: IncomingMessage, max: number): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    req.on("data", (d: Buffer) => {
      size += d.length;
      // Past the cap the rest is read and dropped: the answer (413) still reaches the client.
      if (size > max) resolve(undefined);
      else parts.push(d);
    });
    req.on("end", () => resolve(Buffer.concat(parts).toString("utf8")));
    req.on("error", reject);
  });
}

/** A map that drops its oldest entries past a byte budget. */
class ByteBoundedMap {
  private readonly map = new Map<string, Uint8Array>();
  private bytes = 0;
  constructor(private readonly budget: number) {}

  get(key: string): Uint8Array | undefined {
    return this.map.get(key);
  }

  set(key: string, value: Uint8Array): void {
    this.map.set(key, value);
    this.bytes += value.length;
    for (const [k, v] of this.map) {
      if (this.bytes <= this.budget) break;
      this.map.delete(k);
      this.bytes -= v.length;
    }
  }
}

/**
 * Open object files, shared by the requests that read them: an open and a close per 64 KiB range cost more than
 * the read. Objects are immutable by id, so a cached descriptor never reads stale bytes; one whose object was
 * deleted meanwhile is not used (the store is asked first) and is closed within SWEEP_MS, which bounds how long a
 * deleted file's space stays held. At most MAX_FDS are kept open when unused.
 */
class FdCache {
  private static readonly MAX_FDS = 64;
  private static readonly SWEEP_MS = 5000;
  private readonly byPath = new Map<string, { fd: number; users: number; used: boolean }>();
  private readonly paths = new Map<number, string>();
  private timer: NodeJS.Timeout | undefined;

  start(): void {
    this.timer = setInterval(() => this.sweep(false), FdCache.SWEEP_MS);
    this.timer.unref();
  }

  acquire(path: string, cb: (err: NodeJS.ErrnoException | null, fd: number) => void): void {
    const hit = this.byPath.get(path);
    if (hit) {
      hit.users++;
      hit.used = true;
      return cb(null, hit.fd);
    }
    open(path, "r", (err, fd) => {
      if (err) return cb(err, -1);
      const raced = this.byPath.get(path);
      if (raced) {
        // Two first requests opened it at once: keep one.
        close(fd, () => {});
        raced.users++;
        return cb(null, raced.fd);
      }
      this.byPath.set(path, { fd, users: 1, used: true });
      this.paths.set(fd, path);
      if (this.byPath.size > FdCache.MAX_FDS) this.sweep(true);
      cb(null, fd);
    });
  }

  release(fd: number): void {
    const path = this.paths.get(fd);
    // Not in the cache any more (closeAll while it was read): this was its last user.
    if (path === undefined) return close(fd, () => {});
    this.byPath.get(path)!.users--;
  }

  /** Closes unused descriptors: those not used since the last sweep, or (over the cap) every idle one. */
  private sweep(overCap: boolean): void {
    for (const [path, e] of this.byPath) {
      if (e.users > 0) continue;
      if (overCap || !e.used) {
        this.byPath.delete(path);
        this.paths.delete(e.fd);
        close(e.fd, () => {});
      } else e.used = false;
    }
  }

  closeAll(): void {
    clearInterval(this.timer);
    for (const e of this.byPath.values()) if (e.users === 0) close(e.fd, () => {});
    this.byPath.clear();
    this.paths.clear();
  }
}

function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.on("drain", done);
    res.on("close", done);
  });
}

/** Reads length bytes at position into the start of buf. */
function readInto(fd: number, buf: Buffer, length: number, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = 0;
    const more = () =>
      read(fd, buf, got, length - got, position + got, (err, n) => {
        if (err) return reject(err);
        if (n === 0) return reject(new Error(`object file is shorter than its index says (${position + got})`));
        got += n;
        if (got < length) more();
        else resolve();
      });
    more();
  });
}

/** A decimal safe integer, or undefined. */
function decimal(text: string | null): number | undefined {
  if (text === null || !/^\d{1,16}$/.test(text)) return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** The URLs a server bound to `bind` is reachable at from other machines (loopback only when bound to it). */
export function reachableUrls(bind: string, port: number): string[] {
  const url = (address: string) => `http://${address.includes(":") ? `[${address}]` : address}:${port}`;
  if (bind !== "0.0.0.0" && bind !== "::") return [url(bind)];
  const urls: string[] = [];
  for (const addresses of Object.values(networkInterfaces())) {
    for (const a of addresses ?? []) {
      if (a.internal) continue;
      if (a.family === "IPv4") urls.push(url(a.address));
      // Link-local IPv6 needs a zone to be usable: not worth announcing.
      else if (bind === "::" && !a.address.startsWith("fe80:")) urls.push(url(a.address));
    }
  }
  return urls;
}
