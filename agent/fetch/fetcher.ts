// Multi-source verified fetch of one object of known id and length, the way download accelerators do it:
// ranges from every source at once, a source that stalls, errs or lies dropped while the others carry on.
//
// With an outboard (the task's `outboard` URL: the .obao `sharenode proof outboard` makes, or a box's
// /outboard), the outboard is first checked against the id, then every group (16 KiB by default) against the
// outboard as it arrives: a bad group drops its source at once, and only verified groups are written to the
// partial file. Without one (or when it does not check out), bytes are written as they come and the whole object
// is hashed at the end; on a mismatch it is fetched again from one source at a time until a copy checks out, and
// every source that sent a block differing from that copy is named the liar. Either way nothing is an object
// yet: the caller hands the complete, verified partial file to the store (agent/tasks).
//
// Scheduling: the missing blocks are cut into pieces (1 MiB by default, smaller when the object is too small to
// give every source one) in order; each source has one Range request in flight and takes the next piece when it
// is done. A dropped source's unfinished piece goes back to the front of the queue for the others.
//
// Receipts: a box serves under an order and stops at its receipt window (agent/serve/order-gate.ts) unless the
// fetcher pays in receipts, as `sharenode get` does (agent/client/download.ts). For each source the caller's
// ReceiptSigner names an order serial for, the fetcher counts the bytes it took under that serial (the outboard
// once it checked out; each group that checked out; in whole mode, each block that arrived) and shows the box a
// receipt of that count with every later request to it (`Sharenode-Receipt`), then POSTs the final one to the
// box's /v1/receipts. A bad group is never counted. The count is written to the partial's log (partial.ts, "rc")
// before a receipt carrying it leaves: a resumed fetch starts from it, so no receipt is ever smaller than one the
// box was shown. The fetcher holds no key: the caller signs.
import { readFile } from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import { type Blake3Kernel, blake3Kernel } from "../kernels/blake3.js";
import { DEFAULT_GROUP_LOG, OutboardBuilder, OutboardError, outboardLength } from "../kernels/outboard.js";
import { fromHex, toHex } from "../util/hex.js";
import { errorLine } from "../util/errors.js";
import { realTimeouts, type Timeouts } from "../util/timeouts.js";
import { GroupChecker, OutboardMismatch } from "./group-check.js";
import { httpGet, httpPost, SourceError, type SourceCode } from "./http-get.js";
import { PartialObject } from "./partial.js";

/** Where bytes arrive, before anything else happens to them: the download rate limit's hook. */
export interface Throttle {
  take(bytes: number): Promise<void>;
}

export const noThrottle: Throttle = { take: () => Promise.resolve() };

/** Block size when there is no outboard: the default group size, so the progress log stays small. */
export const WHOLE_MODE_BLOCK = 16 * 1024;

export interface FetchSpec {
  objectId: string;
  length: number;
  sources: readonly string[];
  outboard?: string;
  /** Extra request headers for a URL (a box's source wants its order: `Sharenode-Order`). */
  headersFor?: (url: string) => Record<string, string> | undefined;
  /** Receipts for the sources that are boxes (absent: none are sent). */
  receipts?: ReceiptSigner;
}

/** The caller's side of receipts (agent/protocol/receipt.ts): which URLs are under which order, and the key. */
export interface ReceiptSigner {
  /** The serial of the order `url` is fetched under (a box's object or outboard URL); undefined: no receipts. */
  serialOf(url: string): string | undefined;
  /** A receipt token: `bytes` taken under order `serial` so far. */
  sign(serial: string, bytes: number): string;
}

export interface DroppedSource {
  url: string;
  code: SourceCode | "bad-outboard";
  reason: string;
}

export type FetchFailure = "not-found" | "bad-data" | "all-sources-failed" | "aborted";

export type FetchResult =
  | {
      ok: true;
      partial: PartialObject;
      verifiedBy: "groups" | "whole";
      /** The outboard the bytes were checked against (groups), or built while hashing them (whole). */
      outboard: Uint8Array;
      dropped: DroppedSource[];
    }
  | { ok: false; code: FetchFailure; reason: string; dropped: DroppedSource[] };

export interface FetcherOptions {
  /** No byte from a source for this long: it is dropped (default 30 s). */
  stallMs?: number;
  /** Bytes per Range request at most (rounded to whole blocks; default 1 MiB). */
  pieceBytes?: number;
  /** Verified bytes not yet durable that trigger a checkpoint (default 4 MiB: an fsync costs)... */
  checkpointBytes?: number;
  /** ...or this long since the last one (default 1 s). */
  checkpointMs?: number;
  throttle?: Throttle;
  agents?: { http?: http.Agent; https?: https.Agent };
  timeouts?: Timeouts;
  now?: () => number;
  kernel?: Blake3Kernel;
}

export interface FetchHooks {
  signal?: AbortSignal;
  /** After each checkpoint: the bytes now durable in the partial file. */
  onCheckpoint?: (partial: PartialObject) => void;
}

interface Piece {
  first: number;
  end: number;
}

/** One fetch's shared state: the partial file, the queue, the checkpoint chain. */
interface Run {
  partial: PartialObject;
  checker: GroupChecker | undefined;
  spec: FetchSpec;
  hooks: FetchHooks;
  dropped: DroppedSource[];
  checkpointing: Promise<void>;
  checkpointError: unknown;
  lastCheckpoint: number;
  /** Bytes taken under each order serial (receipts), from the partial's durable count on. */
  taken: Map<string, number>;
  /** The last receipt signed per serial: a request that has nothing new to receipt shows it again. */
  signed: Map<string, { bytes: number; token: string }>;
}

export class Fetcher {
  private readonly stallMs: number;
  private readonly pieceBytes: number;
  private readonly checkpointBytes: number;
  private readonly checkpointMs: number;
  private readonly throttle: Throttle;
  private readonly timeouts: Timeouts;
  private readonly now: () => number;
  private readonly kernel: Blake3Kernel;
  private readonly agents: { http?: http.Agent; https?: https.Agent };
  /** The agents this fetcher made (and so closes). */
  private readonly ownAgents: boolean;

  constructor(options: FetcherOptions = {}) {
    this.stallMs = options.stallMs ?? 30_000;
    this.pieceBytes = options.pieceBytes ?? 1024 * 1024;
    this.checkpointBytes = options.checkpointBytes ?? 4 * 1024 * 1024;
    this.checkpointMs = options.checkpointMs ?? 1000;
    this.throttle = options.throttle ?? noThrottle;
    this.timeouts = options.timeouts ?? realTimeouts;
    this.now = options.now ?? Date.now;
    this.kernel = options.kernel ?? blake3Kernel();
    // Keep-alive: a source's next piece reuses its connection.
    this.ownAgents = options.agents === undefined;
    this.agents = options.agents ?? {
      http: new http.Agent({ keepAlive: true }),
      https: new https.Agent({ keepAlive: true }),
    };
  }

  /** Closes the idle connections of the agents it made. */
  close(): void {
    if (!this.ownAgents) return;
    this.agents.http?.destroy();
    this.agents.https?.destroy();
  }

  /**
   * Fetches the object into `<dir>/<id>.part`, resuming what an earlier run left there. On success the partial
   * file is complete and verified, and open: the caller ingests it, then removes it. On failure or abort it is
   * closed and kept (a later run resumes from it).
   */
  async fetch(spec: FetchSpec, dir: string, hooks: FetchHooks = {}): Promise<FetchResult> {
    const dropped: DroppedSource[] = [];
    const id = fromHex(spec.objectId, 32);
    const { checker, fresh } = await this.outboard(spec, dir, id, dropped, hooks.signal);
    const partial = await PartialObject.open(
      dir,
      spec.objectId,
      spec.length,
      checker?.groupBytes ?? WHOLE_MODE_BLOCK,
      checker ? "groups" : "whole",
    );
    const run: Run = {
      partial,
      checker,
      spec,
      hooks,
      dropped,
      checkpointing: Promise.resolve(),
      checkpointError: undefined,
      lastCheckpoint: this.now(),
      taken: new Map(),
      signed: new Map(),
    };
    let result: FetchResult | undefined;
    try {
      if (fresh) {
        await partial.saveOutboard(fresh);
        // The box's outboard counts as bytes taken, durably now: a resume reuses the saved outboard.
        const serial = this.took(run, spec.outboard!, fresh.length);
        if (serial !== undefined) await partial.noteReceipted(serial, this.takenOf(run, serial));
      }
      result = await this.fetchInto(run);
      if (result.ok) await this.postReceipts(run);
      return result;
    } finally {
      await this.checkpoint(run, true).catch(() => {});
      if (!result?.ok) await partial.close();
    }
  }

  private async fetchInto(run: Run): Promise<FetchResult> {
    const { partial, spec, dropped } = run;
    const signal = run.hooks.signal;
    const aborted = (): FetchResult => ({ ok: false, code: "aborted", reason: "stopped", dropped });
    // Which source sent each block in this run (blocks from an earlier run have none): on a whole-object mismatch
    // this names every source whose blocks differ from the copy that checks out.
    const owners: (string | undefined)[] = new Array<string | undefined>(partial.blocks);
    if (spec.length === 0 && !partial.complete) await this.putBlock(run, 0, new Uint8Array(0));
    if (!(await this.fetchFrom(run, unique(spec.sources), owners))) {
      return signal?.aborted ? aborted() : this.failure(run);
    }
    // (The empty object has no group to check as it arrives: it is hashed below like a whole object.)
    if (run.checker && spec.length > 0) {
      return { ok: true, partial, verifiedBy: "groups", outboard: run.checker.outboard.bytes, dropped };
    }
    // No outboard: the whole object is checked now, and on a mismatch each source alone finds the liar.
    const built = await this.wholeMatches(run);
    if (built) return { ok: true, partial, verifiedBy: "whole", outboard: built, dropped };
    if (signal?.aborted) return aborted();
    const senders = new Set(owners);
    if (senders.size === 1 && !senders.has(undefined)) {
      // One source sent it all: no need to fetch it again to know who lied.
      const [liar] = senders;
      this.drop(run, liar!, new SourceError("bad-data", "its bytes do not hash to the object id"));
    }
    const suspect = await this.blockHashes(run);
    for (const url of unique(spec.sources)) {
      if (dropped.some((d) => d.url === url)) continue;
      await partial.reset();
      if (!(await this.fetchFrom(run, [url], []))) {
        if (signal?.aborted) return aborted();
        continue;
      }
      const outboard = await this.wholeMatches(run);
      if (outboard) {
        // A copy that checks out: every source that sent a block differing from it lied.
        const good = await this.blockHashes(run);
        for (let b = 0; b < owners.length; b++) {
          const owner = owners[b];
          if (owner === undefined || equalBytes(good[b]!, suspect[b]!)) continue;
          const { offset, length } = partial.span(b);
          const reason = `bytes ${offset}-${offset + length - 1} differ from the copy that hashes to the object id`;
          this.drop(run, owner, new SourceError("bad-data", reason));
        }
        return { ok: true, partial, verifiedBy: "whole", outboard, dropped };
      }
      if (signal?.aborted) return aborted();
      this.drop(run, url, new SourceError("bad-data", "its copy of the object does not hash to the object id"));
    }
    return { ok: false, code: "bad-data", reason: "no source sent bytes that hash to the object id", dropped };
  }

  /** The failure after every source was dropped: their common reason, if they share one. */
  private failure(run: Run): FetchResult {
    const sources = run.dropped.filter((d) => d.url !== run.spec.outboard);
    const codes = new Set(sources.map((d) => d.code));
    const code: FetchFailure =
      codes.size === 1 && codes.has("not-found")
        ? "not-found"
        : codes.size === 1 && codes.has("bad-data")
          ? "bad-data"
          : "all-sources-failed";
    const reason = sources.map((d) => `${d.url}: ${d.code} (${d.reason})`).join("; ") || "no sources";
    return { ok: false, code, reason, dropped: run.dropped };
  }

  /**
   * The outboard that checks out against the id: the one an earlier run saved, else the task's URL. A bad or
   * missing one is noted in `dropped` and the fetch goes on without it (verified whole at the end).
   */
  private async outboard(
    spec: FetchSpec,
    dir: string,
    id: Uint8Array,
    dropped: DroppedSource[],
    signal: AbortSignal | undefined,
  ): Promise<{ checker: GroupChecker | undefined; fresh: Uint8Array | undefined }> {
    if (spec.outboard === undefined) return { checker: undefined, fresh: undefined };
    const saved = await readSaved(PartialObject.pathsFor(dir, spec.objectId).outboard);
    if (saved) {
      try {
        return { checker: GroupChecker.fromOutboard(saved, id, spec.length, this.kernel), fresh: undefined };
      } catch {
        // Fetched again below.
      }
    }
    const url = spec.outboard;
    try {
      // The largest outboard an object of this length can have (one chunk per group), and a little more.
      const bytes = await this.download(url, outboardLength(spec.length, 0) + 64, spec.headersFor?.(url), signal);
      return { checker: GroupChecker.fromOutboard(bytes, id, spec.length, this.kernel), fresh: bytes };
    } catch (err) {
      const code =
        err instanceof SourceError
          ? err.code
          : err instanceof OutboardMismatch || err instanceof OutboardError
            ? "bad-outboard"
            : "http-error";
      dropped.push({ url, code, reason: errorLine(err) });
      return { checker: undefined, fresh: undefined };
    }
  }

  /** A small whole resource (an outboard), at most `max` bytes. */
  private async download(
    url: string,
    max: number,
    headers: Record<string, string> | undefined,
    signal: AbortSignal | undefined,
  ): Promise<Uint8Array> {
    const body = await httpGet(url, this.getOptions(headers, signal));
    if (body.length !== undefined && body.length > max) {
      body.close();
      throw new SourceError("bad-data", `${body.length} bytes is more than an outboard of this object can be`);
    }
    const parts: Uint8Array[] = [];
    let got = 0;
    try {
      for await (const chunk of body.chunks) {
        got += chunk.length;
        if (got > max)
          throw new SourceError("bad-data", `more than the ${max} bytes an outboard of this object can be`);
        parts.push(chunk.slice());
      }
    } finally {
      body.close();
    }
    const out = new Uint8Array(got);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  /** Fetches every missing block from `sources` in parallel; true when the partial file is complete. */
  private async fetchFrom(run: Run, sources: string[], owners: (string | undefined)[]): Promise<boolean> {
    const { partial } = run;
    const signal = run.hooks.signal;
    // Big pieces cost fewer requests; an object smaller than a piece per source is still shared by all of them.
    const perPiece = Math.max(
      1,
      Math.min(Math.floor(this.pieceBytes / partial.blockBytes), Math.ceil(partial.blocks / sources.length)),
    );
    const queue: Piece[] = [];
    for (let b = 0; b < partial.blocks;) {
      if (partial.has(b)) {
        b++;
        continue;
      }
      let end = b;
      while (end < partial.blocks && !partial.has(end) && end - b < perPiece) end++;
      queue.push({ first: b, end });
      b = end;
    }
    let inFlight = 0;
    let waiters: (() => void)[] = [];
    const changed = (): void => {
      const w = waiters;
      waiters = [];
      for (const wake of w) wake();
    };
    const nextChange = (): Promise<void> => new Promise((resolve) => waiters.push(resolve));
    signal?.addEventListener("abort", changed);
    // A stalled source holds no checkpoint back: progress becomes durable on time, not only as bytes arrive.
    let ticker: unknown;
    const tick = (): void => {
      void this.checkpoint(run, false).catch(() => {});
      ticker = this.timeouts.setTimeout(tick, this.checkpointMs);
    };
    ticker = this.timeouts.setTimeout(tick, this.checkpointMs);
    const worker = async (url: string): Promise<void> => {
      while (!signal?.aborted) {
        const piece = queue.shift();
        if (!piece) {
          if (inFlight === 0) return;
          await nextChange();
          continue;
        }
        inFlight++;
        try {
          await this.fetchPiece(run, url, piece, owners);
        } catch (err) {
          // What the source did not deliver goes back, first in line, for the others.
          let first = piece.first;
          while (first < piece.end && partial.has(first)) first++;
          if (first < piece.end) queue.unshift({ first, end: piece.end });
          if (!signal?.aborted) this.drop(run, url, err);
          return;
        } finally {
          inFlight--;
          changed();
        }
      }
    };
    try {
      await Promise.all(sources.map(worker));
    } finally {
      this.timeouts.clearTimeout(ticker);
      signal?.removeEventListener("abort", changed);
      // A checkpoint the ticker started must land before the caller goes on (a reset of the partial file would
      // otherwise see its blocks marked in again when it completes).
      await run.checkpointing.catch(() => {});
    }
    if (run.checkpointError !== undefined) throw run.checkpointError;
    return partial.complete && !signal?.aborted;
  }

  private async fetchPiece(run: Run, url: string, piece: Piece, owners: (string | undefined)[]): Promise<void> {
    const { partial, checker, spec } = run;
    const start = partial.span(piece.first).offset;
    const last = partial.span(piece.end - 1);
    const end = last.offset + last.length;
    const body = await httpGet(
      url,
      { ...this.getOptions(await this.headersFor(run, url), run.hooks.signal), range: { start, end } },
      spec.length,
    );
    const buf = new Uint8Array(partial.blockBytes);
    let fill = 0;
    let b = piece.first;
    try {
      for await (const chunk of body.chunks) {
        await this.throttle.take(chunk.length);
        for (let off = 0; off < chunk.length && b < piece.end;) {
          const want = partial.span(b).length;
          const take = Math.min(want - fill, chunk.length - off);
          buf.set(chunk.subarray(off, off + take), fill);
          fill += take;
          off += take;
          if (fill < want) continue;
          const block = buf.subarray(0, want);
          if (checker && !checker.check(b, block)) {
            const { offset, length } = partial.span(b);
            throw new SourceError(
              "bad-data",
              `group ${b} (bytes ${offset}-${offset + length - 1}) does not match the outboard`,
            );
          }
          // Counted as it is taken, before it is written: a checkpoint's count then covers every block it names.
          this.took(run, url, want);
          await this.putBlock(run, b, block);
          owners[b] = url;
          fill = 0;
          b++;
        }
        // A 200 answer to a range from 0 carries the whole object: stop once the piece is in.
        if (b >= piece.end) break;
      }
    } finally {
      body.close();
    }
    if (b < piece.end) {
      const got = partial.span(b).offset + fill - start;
      throw new SourceError("short", `sent ${got} of the ${end - start} bytes asked for (bytes ${start}-${end - 1})`);
    }
  }

  /** Counts `bytes` taken from `url` under its order, if it has one; returns the order's serial. */
  private took(run: Run, url: string, bytes: number): string | undefined {
    const serial = run.spec.receipts?.serialOf(url);
    if (serial !== undefined) run.taken.set(serial, this.takenOf(run, serial) + bytes);
    return serial;
  }

  private takenOf(run: Run, serial: string): number {
    return run.taken.get(serial) ?? run.partial.receipted(serial);
  }

  /** The headers of a request to `url`: the caller's (its order), and for a box the receipt of all taken so far. */
  private async headersFor(run: Run, url: string): Promise<Record<string, string> | undefined> {
    const headers = run.spec.headersFor?.(url);
    const serial = run.spec.receipts?.serialOf(url);
    const token = serial === undefined ? undefined : await this.receipt(run, serial);
    return token === undefined ? headers : { ...headers, "sharenode-receipt": token };
  }

  /** A receipt of the bytes taken under `serial` (undefined when none), its count made durable before it is out. */
  private async receipt(run: Run, serial: string): Promise<string | undefined> {
    const bytes = this.takenOf(run, serial);
    if (bytes === 0) return undefined;
    await run.partial.noteReceipted(serial, bytes);
    const last = run.signed.get(serial);
    if (last !== undefined && last.bytes >= bytes) return last.token;
    const token = run.spec.receipts!.sign(serial, bytes);
    run.signed.set(serial, { bytes, token });
    return token;
  }

  /**
   * Hands each box that was not dropped its final receipt: POST {box}/v1/receipts with its order. Best effort: the
   * box holds the receipt shown with the last request, and the count is durable for a resume.
   */
  private async postReceipts(run: Run): Promise<void> {
    const { spec } = run;
    if (!spec.receipts) return;
    const posted = new Set<string>();
    for (const url of unique([...spec.sources, ...(spec.outboard === undefined ? [] : [spec.outboard])])) {
      const serial = spec.receipts.serialOf(url);
      const target = receiptsUrl(url);
      if (serial === undefined || target === undefined || posted.has(serial)) continue;
      if (run.dropped.some((d) => d.url === url)) continue;
      posted.add(serial);
      try {
        const token = await this.receipt(run, serial);
        if (token !== undefined)
          await httpPost(target, token, this.getOptions(spec.headersFor?.(url), run.hooks.signal));
      } catch {
        // Best effort: the object is in either way.
      }
    }
  }

  /** Writes a block that checked out (or, in whole mode, arrived). */
  private async putBlock(run: Run, b: number, bytes: Uint8Array): Promise<void> {
    await run.partial.put(b, bytes);
    if (run.partial.bytesIn - run.partial.bytesDurable >= this.checkpointBytes) await this.checkpoint(run, false);
  }

  /** Makes the blocks in durable (one at a time: a checkpoint asked for while one runs waits for it). */
  private checkpoint(run: Run, final: boolean): Promise<void> {
    run.checkpointing = run.checkpointing.then(async () => {
      if (!final && run.partial.bytesIn === run.partial.bytesDurable) return;
      try {
        const added = await run.partial.checkpoint(run.taken);
        run.lastCheckpoint = this.now();
        if (added > 0) run.hooks.onCheckpoint?.(run.partial);
      } catch (err) {
        run.checkpointError ??= err;
        throw err;
      }
    });
    return run.checkpointing;
  }

  /** BLAKE3 of each block of the partial file as it stands. */
  private async blockHashes(run: Run): Promise<Uint8Array[]> {
    const hashes: Uint8Array[] = [];
    for await (const block of run.partial.read(run.partial.blockBytes)) hashes.push(this.kernel.hash(block));
    // The empty object: one empty block, which read() does not yield.
    while (hashes.length < run.partial.blocks) hashes.push(this.kernel.hash(new Uint8Array(0)));
    return hashes;
  }

  /**
   * Hashes the whole partial file; its outboard (the store's group size) when it is the object, else undefined.
   * Building the outboard while hashing costs little more than the hash (0.94x, README) and spares the store a
   * second read and hash of the object (ObjectStore.adopt).
   */
  private async wholeMatches(run: Run): Promise<Uint8Array | undefined> {
    const builder = new OutboardBuilder(DEFAULT_GROUP_LOG, this.kernel);
    for await (const piece of run.partial.read()) builder.update(piece);
    const { id, outboard } = builder.finish();
    return toHex(id) === run.spec.objectId ? outboard : undefined;
  }

  private drop(run: Run, url: string, err: unknown): void {
    if (run.dropped.some((d) => d.url === url)) return;
    const code = err instanceof SourceError ? err.code : "connection";
    run.dropped.push({ url, code, reason: errorLine(err) });
  }

  private getOptions(headers: Record<string, string> | undefined, signal: AbortSignal | undefined) {
    return {
      headers,
      stallMs: this.stallMs,
      agents: this.agents,
      timeouts: this.timeouts,
      signal,
    };
  }
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** A box's receipts endpoint, from its object URL (`{box}/v1/objects/{id}`, or its `/outboard`). */
function receiptsUrl(url: string): string | undefined {
  try {
    const u = new URL(url);
    const at = u.pathname.lastIndexOf("/v1/objects/");
    if (at < 0) return undefined;
    return `${u.origin}${u.pathname.slice(0, at)}/v1/receipts`;
  } catch {
    return undefined;
  }
}

function unique(urls: readonly string[]): string[] {
  return [...new Set(urls)];
}

async function readSaved(path: string): Promise<Uint8Array | undefined> {
  return readFile(path).catch(() => undefined);
}
