// A real HTTP origin (node:http on loopback) for the fetch tests: it serves one object at /<name> with single
// Range requests, and each path can misbehave the way real sources do: a bad group, a stall, a dropped
// connection, short content, 404. It counts the body bytes it sends, per path, so a test can tell what was
// fetched again.
import http from "node:http";
import type { AddressInfo } from "node:net";

export type Behaviour =
  | { kind: "good" }
  /** Flips a byte at `offset` of the object in every answer that covers it. */
  | { kind: "corrupt"; offset: number }
  /** Sends `after` bytes of the body (over all requests), then nothing more, holding the connection open. */
  | { kind: "stall"; after: number }
  /** Sends `after` bytes of the body (over all requests), then destroys the connection. */
  | { kind: "drop"; after: number }
  /** A complete answer with the asked-for Content-Range, but only `keep` bytes of it (Content-Length says so). */
  | { kind: "short"; keep: number }
  | { kind: "not-found" }
  /** Answers 302 to `to` (a path of this origin, or a URL). */
  | { kind: "redirect"; to: string }
  /** Sends at most `bytesPerSecond` per answer, in 16 KiB writes. */
  | { kind: "slow"; bytesPerSecond: number };

export interface Served {
  requests: number;
  bytes: number;
  ranges: [number, number][];
  /** The `Sharenode-Order` header of each request (undefined when absent). */
  orders: (string | undefined)[];
  /** The `Sharenode-Receipt` header of each request (undefined when absent). */
  receipts: (string | undefined)[];
}

export class Origin {
  readonly served = new Map<string, Served>();
  private readonly behaviours = new Map<string, { data: Uint8Array; behaviour: Behaviour }>();
  private readonly sockets = new Set<import("node:net").Socket>();

  private constructor(private readonly server: http.Server) {}

  static async start(): Promise<Origin> {
    const server = http.createServer();
    const origin = new Origin(server);
    server.on("request", (req, res) => origin.handle(req, res));
    server.on("connection", (s) => {
      origin.sockets.add(s);
      s.on("close", () => origin.sockets.delete(s));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return origin;
  }

  get base(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Serves `data` at /<name> with `behaviour`; returns its URL. */
  serve(name: string, data: Uint8Array, behaviour: Behaviour = { kind: "good" }): string {
    this.behaviours.set(`/${name}`, { data, behaviour });
    this.served.set(`/${name}`, { requests: 0, bytes: 0, ranges: [], orders: [], receipts: [] });
    return `${this.base}/${name}`;
  }

  /** Changes how /<name> behaves from now on (counts are kept). */
  behave(name: string, behaviour: Behaviour): void {
    this.behaviours.get(`/${name}`)!.behaviour = behaviour;
  }

  servedAt(name: string): Served {
    return this.served.get(`/${name}`)!;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const entry = this.behaviours.get(req.url ?? "");
    const count = this.served.get(req.url ?? "");
    if (!entry || !count || entry.behaviour.kind === "not-found") {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
      return;
    }
    count.requests++;
    const order = req.headers["sharenode-order"];
    count.orders.push(typeof order === "string" ? order : undefined);
    const receipt = req.headers["sharenode-receipt"];
    count.receipts.push(typeof receipt === "string" ? receipt : undefined);
    if (entry.behaviour.kind === "redirect") {
      res.writeHead(302, { location: entry.behaviour.to }).end();
      return;
    }
    const { data, behaviour } = entry;
    let start = 0;
    let end = data.length;
    let status = 200;
    const m = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ""));
    if (m) {
      start = Number(m[1]);
      end = m[2] === "" ? data.length : Math.min(data.length, Number(m[2]) + 1);
      if (start >= data.length || end <= start) {
        res.writeHead(416, { "content-range": `bytes */${data.length}` }).end();
        return;
      }
      status = 206;
    }
    let body = Buffer.from(data.subarray(start, end));
    if (behaviour.kind === "corrupt" && behaviour.offset >= start && behaviour.offset < end) {
      body = Buffer.from(body);
      body[behaviour.offset - start]! ^= 0xff;
    }
    const headers: Record<string, string> = { "content-type": "application/octet-stream", "accept-ranges": "bytes" };
    if (status === 206) headers["content-range"] = `bytes ${start}-${end - 1}/${data.length}`;
    if (behaviour.kind === "short") body = body.subarray(0, Math.min(body.length, behaviour.keep));
    headers["content-length"] = String(body.length);
    count.ranges.push([start, end]);
    res.writeHead(status, headers);
    if (behaviour.kind === "stall" || behaviour.kind === "drop") {
      const room = Math.max(0, behaviour.after - count.bytes);
      const part = body.subarray(0, Math.min(room, body.length));
      count.bytes += part.length;
      if (part.length === body.length) {
        res.end(part);
        return;
      }
      res.write(part, () => {
        if (behaviour.kind === "drop") res.socket?.destroy();
        // A stall: nothing more is written; the client's stall timeout (or the test's stop) ends it.
      });
      return;
    }
    if (behaviour.kind === "slow") {
      const step = 16 * 1024;
      // Paced against the start of the answer, not step by step: timer lateness does not add up.
      const started = performance.now();
      let at = 0;
      const next = (): void => {
        if (res.destroyed) return;
        // Re-read each step: a test may change the behaviour (stall) while a response is under way.
        const now = entry.behaviour;
        if (now.kind === "stall" && count.bytes >= now.after) return;
        const piece = body.subarray(at, Math.min(body.length, at + step));
        at += piece.length;
        count.bytes += piece.length;
        if (at >= body.length) res.end(piece);
        else {
          const due = started + (at / behaviour.bytesPerSecond) * 1000;
          res.write(piece, () => setTimeout(next, Math.max(0, due - performance.now())));
        }
      };
      next();
      return;
    }
    count.bytes += body.length;
    res.end(body);
  }
}
