// The agent's one way out to HTTP: a GET of a byte range (or a whole small file) with a stall timeout, whose body
// is read as an async iterable. node:http and node:https, no dependency. Every failure is a SourceError with a
// code the fetcher turns into "this source is dropped, because ...".
import http from "node:http";
import https from "node:https";
import { realTimeouts, type Timeouts } from "../util/timeouts.js";
import { errorLine } from "../util/errors.js";

/** Why a source was dropped. */
export type SourceCode = "not-found" | "bad-data" | "stalled" | "short" | "http-error" | "connection";

export class SourceError extends Error {
  override name = "SourceError";
  constructor(
    readonly code: SourceCode,
    message: string,
  ) {
    super(message);
  }
}

export interface HttpGetOptions {
  /** Byte range [start, end) to ask for; absent: the whole resource. */
  range?: { start: number; end: number };
  headers?: Record<string, string>;
  /** No byte (nor headers) for this long: the source stalled. */
  stallMs: number;
  /** Keep-alive agents (injected: tests and the agent share connections per origin). */
  agents?: { http?: http.Agent; https?: https.Agent };
  timeouts?: Timeouts;
  signal?: AbortSignal;
  /** Redirects still followed (default 3): origins behind a CDN or object store often answer with one. */
  redirects?: number;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
/** Headers that are for the first origin only: a redirect elsewhere does not get the box's order. */
const ORIGIN_ONLY = ["sharenode-order", "sharenode-receipt", "authorization", "cookie"];

export interface HttpBody {
  /** Bytes the body will carry (Content-Length, or the range's length), when known. */
  length: number | undefined;
  /** The body, in pieces as they arrive; throws SourceError on a stall or a broken connection. */
  chunks: AsyncIterable<Uint8Array>;
  /** Stops reading (and drops the connection if the body is not finished). */
  close(): void;
}

const CONTENT_RANGE = /^bytes (\d+)-(\d+)\/(\d+|\*)$/;

/**
 * GETs `url`. With a range the answer must be 206 with that Content-Range (a 200 is taken when the range starts
 * at 0: the first bytes of the whole body are the range's). `total`, when given, is the length the resource must
 * have. 404 and 410 are "not-found"; any other status is "http-error".
 */
export function httpGet(url: string, options: HttpGetOptions, total?: number): Promise<HttpBody> {
  const timeouts = options.timeouts ?? realTimeouts;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return Promise.reject(new SourceError("http-error", `not a URL: ${JSON.stringify(url.slice(0, 100))}`));
  }
  const secure = parsed.protocol === "https:";
  if (!secure && parsed.protocol !== "http:") {
    return Promise.reject(new SourceError("http-error", `not an http(s) URL: ${parsed.protocol}`));
  }
  const headers: Record<string, string> = { ...options.headers };
  const { range } = options;
  if (range) headers.range = `bytes=${range.start}-${range.end - 1}`;
  return new Promise<HttpBody>((resolve, reject) => {
    let stallTimer: unknown;
    let settled = false;
    let failure: SourceError | undefined;
    const fail = (err: SourceError): void => {
      failure ??= err;
      req.destroy(err);
      if (!settled) {
        settled = true;
        reject(err);
      }
    };
    const arm = (): void => {
      if (stallTimer !== undefined) timeouts.clearTimeout(stallTimer);
      stallTimer = timeouts.setTimeout(
        () => fail(new SourceError("stalled", `no bytes for ${options.stallMs} ms`)),
        options.stallMs,
      );
    };
    const disarm = (): void => {
      if (stallTimer !== undefined) timeouts.clearTimeout(stallTimer);
      stallTimer = undefined;
    };
    const onAbort = (): void => fail(new SourceError("connection", "aborted"));
    const req = (secure ? https : http).request(parsed, {
      method: "GET",
      headers,
      agent: secure ? options.agents?.https : options.agents?.http,
    });
    options.signal?.addEventListener("abort", onAbort, { once: true });
    req.on("error", (err) => {
      disarm();
      options.signal?.removeEventListener("abort", onAbort);
      const e = err instanceof SourceError ? err : new SourceError("connection", errorLine(err));
      failure ??= e;
      if (!settled) {
        settled = true;
        reject(e);
      }
    });
    req.on("response", (res) => {
      const status = res.statusCode ?? 0;
      const refuse = (code: SourceCode, message: string): void => {
        res.resume();
        disarm();
        fail(new SourceError(code, message));
      };
      if (status === 404 || status === 410) return refuse("not-found", `HTTP ${status}`);
      // A box says why it refused (agent/serve): "HTTP 402 (receipt-window)" tells the fleet what went wrong.
      const refused = res.headers["sharenode-refused"];
      const answered = `HTTP ${status}${typeof refused === "string" ? ` (${refused.slice(0, 40)})` : ""}`;
      const location = res.headers.location;
      if (REDIRECTS.has(status) && location !== undefined) {
        const left = options.redirects ?? 3;
        if (left <= 0) return refuse("http-error", `HTTP ${status}: too many redirects`);
        let next: URL;
        try {
          next = new URL(location, parsed);
        } catch {
          return refuse("http-error", `HTTP ${status} to a bad Location`);
        }
        res.resume();
        disarm();
        options.signal?.removeEventListener("abort", onAbort);
        settled = true;
        const forward = { ...options.headers };
        if (next.origin !== parsed.origin) for (const h of ORIGIN_ONLY) delete forward[h];
        resolve(httpGet(next.href, { ...options, headers: forward, redirects: left - 1 }, total));
        return;
      }
      let length: number | undefined;
      const declared = res.headers["content-length"] === undefined ? undefined : Number(res.headers["content-length"]);
      if (range) {
        if (status === 206) {
          const m = CONTENT_RANGE.exec(String(res.headers["content-range"] ?? ""));
          if (!m || Number(m[1]) !== range.start || Number(m[2]) !== range.end - 1) {
            return refuse(
              "http-error",
              `Content-Range ${JSON.stringify(res.headers["content-range"] ?? null)} is not the range asked for`,
            );
          }
          if (total !== undefined && m[3] !== "*" && Number(m[3]) !== total) {
            return refuse("bad-data", `the resource is ${m[3]} bytes, the object ${total}`);
          }
          length = range.end - range.start;
        } else if (status === 200 && range.start === 0) {
          if (total !== undefined && declared !== undefined && declared !== total) {
            return refuse("bad-data", `the resource is ${declared} bytes, the object ${total}`);
          }
          length = declared;
        } else {
          return refuse("http-error", status === 200 ? "answered 200 to a Range request (no ranges)" : answered);
        }
      } else {
        if (status !== 200) return refuse("http-error", answered);
        length = declared;
      }
      arm();
      settled = true;
      resolve({
        length,
        chunks: (async function* () {
          try {
            for await (const chunk of res as AsyncIterable<Buffer>) {
              // The clock runs only while waiting for the source: time the consumer spends on a piece (the
              // download rate limit, hashing, the disk) is not the source stalling.
              disarm();
              yield new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
              arm();
            }
          } catch (err) {
            throw failure ?? new SourceError("connection", `connection lost: ${errorLine(err)}`);
          } finally {
            disarm();
            options.signal?.removeEventListener("abort", onAbort);
          }
          // A body cut short by the server ending the connection ends the loop without an error on some paths.
          if (failure) throw failure;
          if (!res.complete) throw new SourceError("connection", "connection closed before the body ended");
        })(),
        close: () => {
          disarm();
          options.signal?.removeEventListener("abort", onAbort);
          if (!res.complete) req.destroy();
        },
      });
    });
    arm();
    req.end();
  });
}

/**
 * POSTs a small text body (a receipt to a box's /v1/receipts) and resolves with the answer's status once its body
 * is read and thrown away. No redirects: the body is for this origin only. Rejects with a SourceError on a stall,
 * an abort or a broken connection.
 */
export function httpPost(
  url: string,
  body: string,
  options: Pick<HttpGetOptions, "headers" | "stallMs" | "agents" | "timeouts" | "signal">,
): Promise<number> {
  const timeouts = options.timeouts ?? realTimeouts;
  return new Promise<number>((resolve, reject) => {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      reject(new SourceError("http-error", `not a URL: ${JSON.stringify(url.slice(0, 100))}`));
      return;
    }
    const secure = parsed.protocol === "https:";
    let status = 0;
    let done = false;
    const finish = (err?: SourceError): void => {
      if (done) return;
      done = true;
      timeouts.clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      if (err) {
        req.destroy();
        reject(err);
      } else resolve(status);
    };
    const onAbort = (): void => finish(new SourceError("connection", "aborted"));
    const timer = timeouts.setTimeout(
      () => finish(new SourceError("stalled", `no answer for ${options.stallMs} ms`)),
      options.stallMs,
    );
    const req = (secure ? https : http).request(parsed, {
      method: "POST",
      headers: { ...options.headers, "content-type": "text/plain", "content-length": String(Buffer.byteLength(body)) },
      agent: secure ? options.agents?.https : options.agents?.http,
    });
    options.signal?.addEventListener("abort", onAbort, { once: true });
    req.on("error", (err) => finish(new SourceError("connection", errorLine(err))));
    req.on("response", (res) => {
      status = res.statusCode ?? 0;
      res.on("error", (err) => finish(new SourceError("connection", errorLine(err))));
      res.on("end", () => finish());
      res.resume();
    });
    req.end(body);
  });
}
