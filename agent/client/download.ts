// The verified downloader behind `sharenode get` and `sharenode/client`: one object from one or more boxes, each
// under its own order, in parallel ranges, every byte checked before it is written where OUT will be.
//
// Order of work:
//   1. The outboard (GET {box}/v1/objects/{id}/outboard), from the first box whose outboard checks against the id
//      (verify.ts). A box whose outboard does not is a liar and is dropped.
//   2. The object's groups not yet verified, in ranges of `rangeBytes` (whole groups), handed to per-box workers
//      (`perBox` requests in flight per box) from one queue. Each 16 KiB group is checked as soon as its bytes are
//      in. A box that sends a bad group, stalls (no byte for `stallMs`), errs or answers short is dropped at once;
//      the verified groups before the fault are kept and the rest of its range goes back to the queue for the
//      other boxes.
//   3. Once every group is verified: fsync OUT.part, rename it to OUT, fsync the directory (agent/durable), remove
//      the resume log. Until then OUT is not touched.
//
// Durability and resume: OUT.part holds the object's bytes at their offsets; OUT.part.log (a CRC-framed
// agent/durable record log) says which groups of it are verified. A range's verified groups are written, OUT.part
// is fsynced, and only then is their record appended (and fsynced): after a power cut the log never names a group
// whose bytes are not on disk. A restart reads the log and asks for the rest only.
//
// Receipts: per order, the client signs the cumulative bytes it accepted (outboard plus verified groups) after
// every range, and shows the latest on its next request to that box (header `Sharenode-Receipt`); when a box's
// work is done its final receipt is POSTed to /v1/receipts. The count survives restarts (it is in the resume log),
// so a resumed download never signs less than it did before. Bytes of a bad group are not receipted.
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { open, rename, rm, stat, type FileHandle } from "node:fs/promises";
import { dirname } from "node:path";
import { fsyncDir } from "../durable/atomic.js";
import { RecordLog } from "../durable/record-log.js";
import type { Signer } from "../protocol/envelope.js";
import { signReceipt } from "../protocol/receipt.js";
import { errorMessage } from "../util/errors.js";
import { orderTerms, type BoxOrder, type OrderTerms } from "./orders.js";
import { GroupVerifier } from "./verify.js";

export interface DownloadOptions {
  /** The object's id: 64 lowercase hex digits (its BLAKE3). */
  objectId: string;
  /** The boxes to download from, each with its order for this object and this client. */
  orders: BoxOrder[];
  /** Where the object ends up. OUT.part and OUT.part.log sit beside it while the download runs. */
  out: string;
  /** The client key: signs receipts; orders must name its public key. */
  clientKey: Signer & { publicKeyHex: string };
  /** Bytes per range request, rounded down to whole groups (at least one). Default 1 MiB. */
  rangeBytes?: number;
  /** Requests in flight per box. Default 2. */
  perBox?: number;
  /** A box that sends nothing for this long is dropped. Default 10 s. */
  stallMs?: number;
  /** Called as verified bytes come in (resumed bytes count from the start). */
  onProgress?: (verifiedBytes: number, length: number) => void;
  /** Called once per box dropped, with a one-line reason. */
  onDrop?: (url: string, reason: string) => void;
  /** Epoch ms now (orders' expiry). Default Date.now. */
  now?: () => number;
}

export interface BoxReport {
  url: string;
  serial: string;
  /** Cumulative bytes receipted under the order (outboard and verified groups). */
  receipted: number;
  /** Why the box was dropped; undefined when it was not. */
  dropped?: string;
}

export interface DownloadResult {
  length: number;
  /** Bytes verified in an earlier run and not fetched again. */
  resumedBytes: number;
  boxes: BoxReport[];
}

/** A failure the user should read (one line); the download can be resumed when `resumable`. */
export class DownloadError extends Error {
  override name = "DownloadError";
}

const DEFAULT_RANGE = 1024 * 1024;
/** Verified bytes waiting for their commit before workers wait too. */
const MAX_UNCOMMITTED = 32 * 1024 * 1024;
const LOG_VERSION = 1;
/** Outboards are about 0.4 % of their object; this bounds what a box can make the client buffer. */
const MAX_OUTBOARD = 64 * 1024 * 1024;

interface Box extends BoxReport {
  token: string;
  terms: OrderTerms;
  /** Bytes requested under the order so far (this run, plus what earlier runs had receipted). */
  requested: number;
  receipt: string | undefined;
  agent: HttpAgent;
}

/** A box's fault: it is dropped with this reason. */
class BoxFault extends Error {}

/** Downloads and verifies the object; resolves once OUT holds it, durably. */
export async function download(options: DownloadOptions): Promise<DownloadResult> {
  const { objectId, out, clientKey } = options;
  const stallMs = options.stallMs ?? 10_000;
  const perBox = options.perBox ?? 2;
  const now = options.now ?? Date.now;
  if (!/^[0-9a-f]{64}$/.test(objectId)) throw new DownloadError(`object id must be 64 lowercase hex digits`);
  if (options.orders.length === 0) throw new DownloadError("no order: nothing to download from");

  const boxes: Box[] = options.orders.map(({ url, token }) => {
    const terms = orderTerms(token);
    if (typeof terms === "string") throw new DownloadError(`order for ${url}: ${terms}`);
    if (terms.objectId !== objectId)
      throw new DownloadError(`order ${terms.serial} is for object ${terms.objectId}, not ${objectId}`);
    if (terms.clientKey !== clientKey.publicKeyHex)
      throw new DownloadError(
        `order ${terms.serial} is for client key ${terms.clientKey}, not this client's (${clientKey.publicKeyHex})`,
      );
    const agent = url.startsWith("https:")
      ? new HttpsAgent({ keepAlive: true, maxSockets: perBox })
      : new HttpAgent({ keepAlive: true, maxSockets: perBox });
    return { url, token, terms, serial: terms.serial, receipted: 0, requested: 0, receipt: undefined, agent };
  });
  const drop = (box: Box, reason: string) => {
    if (box.dropped !== undefined) return;
    box.dropped = reason;
    options.onDrop?.(box.url, reason);
  };
  for (const box of boxes) if (box.terms.expiresAt <= now()) drop(box, `order ${box.serial} has expired`);

  const partPath = `${out}.part`;
  const logPath = `${out}.part.log`;
  const opened = await openResume(partPath, logPath, objectId);
  const { log } = opened;
  let part: FileHandle | undefined;
  try {
    // Receipt counts carried over from an earlier run: a receipt never goes down.
    for (const box of boxes) {
      const earlier = opened.receipted.get(box.serial) ?? 0;
      box.receipted = box.requested = earlier;
      if (earlier > 0) box.receipt = signReceipt({ serial: box.serial, bytes: earlier }, clientKey);
    }

    const verifier = await fetchOutboard(boxes, objectId, stallMs, drop, clientKey);
    const length = verifier.length;
    if (opened.length !== undefined && opened.length !== length)
      throw new DownloadError(`${partPath} is of a ${opened.length}-byte object, the outboard says ${length}`);
    if (opened.length === undefined) await log.append(encode({ v: LOG_VERSION, objectId, length }));
    part = await open(partPath, opened.fresh ? "w+" : "r+");
    if ((await part.stat()).size !== length) await part.truncate(length);

    const verified = new Uint8Array(verifier.groups);
    let verifiedBytes = 0;
    for (const g of opened.groups) {
      if (g < verifier.groups && verified[g] === 0) {
        verified[g] = 1;
        verifiedBytes += verifier.groupRange(g).length;
      }
    }
    const resumedBytes = verifiedBytes;
    options.onProgress?.(verifiedBytes, length);

    // The queue: runs of unverified groups, at most rangeGroups each.
    const rangeGroups = Math.max(1, Math.floor((options.rangeBytes ?? DEFAULT_RANGE) / verifier.groupBytes));
    const queue: Array<[number, number]> = [];
    for (let g = 0; g < verifier.groups;) {
      if (verified[g]) {
        g++;
        continue;
      }
      let n = 0;
      while (g + n < verifier.groups && n < rangeGroups && !verified[g + n]) n++;
      queue.push([g, n]);
      g += n;
    }
    if (length === 0 && !verified[0]) {
      // The empty object: its one (empty) group is checked against the id, no request needed.
      if (!verifier.check(0, new Uint8Array(0))) throw new DownloadError("the empty object does not hash to the id");
      queue.length = 0;
      verified[0] = 1;
    }

    const partHandle = part;
    // Verified ranges are committed in batches by one writer: their bytes written at their offsets, one fdatasync
    // of OUT.part, then their records appended with one fsync. Downloading goes on meanwhile; a worker waits for
    // its range's commit only when more than MAX_UNCOMMITTED bytes are waiting (bounded memory).
    interface Pending {
      first: number;
      /** The range's verified bytes as the socket delivered them (no copy), written with one writev. */
      parts: Uint8Array[];
      bytes: number;
      record: Uint8Array;
    }
    let pending: Pending[] = [];
    let pendingBytes = 0;
    let writer: Promise<void> | undefined;
    let writeFailure: unknown;
    const flush = async (): Promise<void> => {
      while (pending.length > 0 && writeFailure === undefined) {
        const batch = pending;
        pending = [];
        try {
          for (const p of batch) await writevAll(partHandle, p.parts, verifier.groupRange(p.first).offset);
          await partHandle.datasync();
          await log.appendMany(batch.map((p) => p.record));
        } catch (err) {
          writeFailure = err;
          return;
        }
        for (const p of batch) {
          const count = Math.ceil(p.bytes / verifier.groupBytes);
          for (let g = p.first; g < p.first + count; g++) verified[g] = 1;
          verifiedBytes += p.bytes;
          pendingBytes -= p.bytes;
        }
        options.onProgress?.(verifiedBytes, length);
      }
    };
    const commit = (first: number, parts: Uint8Array[], bytes: number, box: Box): Promise<void> => {
      const count = Math.ceil(bytes / verifier.groupBytes);
      pending.push({ first, parts, bytes, record: encode({ g: first, n: count, s: box.serial, b: box.receipted }) });
      pendingBytes += bytes;
      writer ??= flush().finally(() => (writer = undefined));
      return pendingBytes > MAX_UNCOMMITTED ? writer : Promise.resolve();
    };
    const drained = async (): Promise<void> => {
      while (writer !== undefined) await writer;
      if (writeFailure !== undefined) throw writeFailure;
    };

    // Ranges in flight may come back to the queue (their box failed): an idle worker waits for them to settle
    // before it gives up.
    let inFlight = 0;
    let wakeIdle: Array<() => void> = [];
    const settled = () => {
      const waiting = wakeIdle;
      wakeIdle = [];
      for (const wake of waiting) wake();
    };
    const worker = async (box: Box): Promise<void> => {
      while (box.dropped === undefined) {
        const range = queue.shift();
        if (range === undefined) {
          if (inFlight === 0) return;
          await new Promise<void>((resolve) => wakeIdle.push(resolve));
          continue;
        }
        inFlight++;
        try {
          await work(box, range);
        } finally {
          inFlight--;
          settled();
        }
      }
    };
    const work = async (box: Box, range: [number, number]): Promise<void> => {
      const [first, count] = range;
      const offset = verifier.groupRange(first).offset;
      const end = Math.min(length, (first + count) * verifier.groupBytes);
      if (box.requested + (end - offset) > box.terms.maxBytes) {
        queue.unshift(range);
        drop(box, `its order ${box.serial} allows no more bytes (maxBytes ${box.terms.maxBytes})`);
        return;
      }
      box.requested += end - offset;
      const got = await fetchRange(box, objectId, offset, end, verifier, first, stallMs);
      // The verified prefix is kept whatever happened after it.
      if (got.bytes > 0) {
        box.receipted += got.bytes;
        box.receipt = signReceipt({ serial: box.serial, bytes: box.receipted }, clientKey);
        await commit(first, got.parts, got.bytes, box);
      }
      if (got.fault !== undefined) {
        const doneGroups = got.bytes / verifier.groupBytes;
        queue.unshift([first + doneGroups, count - doneGroups]);
        drop(box, got.fault);
        return;
      }
    };
    await Promise.all(boxes.flatMap((box) => Array.from({ length: perBox }, () => worker(box))));
    await drained();

    const missing = verified.indexOf(0);
    if (missing >= 0) {
      const reasons = boxes.map((b) => `${b.url}: ${b.dropped ?? "no answer"}`).join("; ");
      throw new DownloadError(
        `${verifiedBytes} of ${length} bytes verified, no box left to ask for the rest (${reasons}); run again to resume`,
      );
    }
    await Promise.all(boxes.map((box) => postReceipt(box, stallMs)));
    await part.sync();
    await part.close();
    part = undefined;
    await rename(partPath, out);
    await fsyncDir(dirname(out));
    await log.close();
    await rm(logPath, { force: true });
    return {
      length,
      resumedBytes,
      boxes: boxes.map(({ url, serial, receipted, dropped }) => ({ url, serial, receipted, dropped })),
    };
  } finally {
    await part?.close().catch(() => undefined);
    await log.close().catch(() => undefined);
    for (const box of boxes) box.agent.destroy();
  }
}

// --- the resume log --------------------------------------------------------------------------------------------

function encode(record: object): Uint8Array {
  return Buffer.from(JSON.stringify(record), "utf8");
}

interface Resume {
  log: RecordLog;
  /** True when OUT.part is to be created anew. */
  fresh: boolean;
  length: number | undefined;
  groups: number[];
  receipted: Map<string, number>;
}

/**
 * Opens OUT.part.log. A log without its OUT.part (or an OUT.part without its log) is a fresh start: nothing of it
 * can be trusted. A log of another object is refused rather than thrown away.
 */
async function openResume(partPath: string, logPath: string, objectId: string): Promise<Resume> {
  const partExists = await stat(partPath).then(
    () => true,
    () => false,
  );
  if (!partExists) await rm(logPath, { force: true });
  const { log, records } = await RecordLog.open(logPath, { mode: 0o600 });
  const resume: Resume = { log, fresh: records.length === 0, length: undefined, groups: [], receipted: new Map() };
  if (records.length === 0) return resume;
  try {
    const head = JSON.parse(Buffer.from(records[0]!).toString("utf8")) as {
      v?: unknown;
      objectId?: unknown;
      length?: unknown;
    };
    if (head.v !== LOG_VERSION || typeof head.length !== "number") throw new Error("bad header");
    if (head.objectId !== objectId) {
      await log.close();
      throw new DownloadError(
        `${partPath} is a download of object ${String(head.objectId)}, not ${objectId}: remove it and its .log first`,
      );
    }
    resume.length = head.length;
    for (const r of records.slice(1)) {
      const rec = JSON.parse(Buffer.from(r).toString("utf8")) as { g: number; n: number; s: string; b: number };
      for (let g = rec.g; g < rec.g + rec.n; g++) resume.groups.push(g);
      resume.receipted.set(rec.s, Math.max(resume.receipted.get(rec.s) ?? 0, rec.b));
    }
  } catch (err) {
    if (err instanceof DownloadError) throw err;
    await log.close();
    throw new DownloadError(`${logPath} is not a resume log of this client (${errorMessage(err)}): remove it`);
  }
  return resume;
}

// --- HTTP -----------------------------------------------------------------------------------------------------

interface Answer {
  res: IncomingMessage;
  /** The body, the stall timer re-armed by every chunk (a 'data' listener would start the flow before the reader). */
  body: () => AsyncGenerator<Buffer>;
  abort: (reason: string) => void;
  /** Resolves with the stall reason if the answer stalls; the caller races it against reading. */
  stalled: () => string | undefined;
  done: () => void;
}

/** Starts a GET (or POST) and waits for the response head, with the stall timer running throughout. */
function requestBox(
  box: Box,
  path: string,
  headers: Record<string, string>,
  stallMs: number,
  method = "GET",
  body?: string,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const url = new URL(box.url + path);
    const request = url.protocol === "https:" ? httpsRequest : httpRequest;
    // Destroyed without an error object: the reader learns the reason from here, and no stream is left to emit
    // an error that nobody hears.
    let reason: string | undefined;
    let timer: NodeJS.Timeout | undefined;
    const abort = (why: string) => {
      reason ??= why;
      clearTimeout(timer);
      req.destroy();
    };
    const req = request(url, {
      method,
      agent: box.agent,
      headers: {
        "Sharenode-Order": box.token,
        ...(box.receipt !== undefined ? { "Sharenode-Receipt": box.receipt } : {}),
        ...headers,
      },
    });
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => abort(`stalled: no data for ${stallMs / 1000} s`), stallMs);
    };
    arm();
    req.on("error", (err) => {
      clearTimeout(timer);
      reject(new BoxFault(reason ?? `request failed: ${errorMessage(err)}`));
    });
    req.on("response", (res) => {
      // Its errors reach the reader through the body's iterator; this listener keeps them from being uncaught.
      res.on("error", () => undefined);
      res.on("end", () => clearTimeout(timer));
      res.on("close", () => clearTimeout(timer));
      resolve({
        res,
        body: async function* () {
          for await (const chunk of res) {
            arm();
            yield chunk as Buffer;
          }
        },
        abort,
        stalled: () => reason,
        done: () => clearTimeout(timer),
      });
    });
    req.end(body);
  });
}

/** The box's refusal as one line: status, its Sharenode-Refused code, the first line of its body. */
async function refusal(res: IncomingMessage, what: string): Promise<string> {
  let text = "";
  try {
    for await (const chunk of res) {
      text += (chunk as Buffer).toString("utf8");
      if (text.length > 300) break;
    }
  } catch {
    // The status says enough.
  }
  res.destroy();
  const code = res.headers["sharenode-refused"];
  const line = text.split("\n")[0]!.trim().slice(0, 200);
  return `${what}: HTTP ${res.statusCode}${typeof code === "string" ? ` (${code})` : ""}${line ? `: ${line}` : ""}`;
}

/** The outboard, from the first box whose outboard checks against the id; boxes that fail are dropped. */
async function fetchOutboard(
  boxes: Box[],
  objectId: string,
  stallMs: number,
  drop: (box: Box, reason: string) => void,
  clientKey: Signer,
): Promise<GroupVerifier> {
  for (const box of boxes) {
    if (box.dropped !== undefined) continue;
    try {
      const answer = await requestBox(box, `/v1/objects/${objectId}/outboard`, {}, stallMs);
      const { res } = answer;
      if (res.statusCode !== 200) throw new BoxFault(await refusal(res, "outboard refused"));
      const declared = Number(res.headers["content-length"] ?? 0);
      if (declared > MAX_OUTBOARD) {
        answer.abort("outboard too large");
        throw new BoxFault(`its outboard of ${declared} bytes is over the ${MAX_OUTBOARD}-byte limit`);
      }
      const parts: Buffer[] = [];
      let size = 0;
      try {
        for await (const chunk of answer.body()) {
          size += chunk.length;
          if (size > MAX_OUTBOARD) answer.abort("outboard too large");
          parts.push(chunk);
        }
      } catch (err) {
        throw new BoxFault(answer.stalled() ?? `outboard: ${errorMessage(err)}`);
      }
      answer.done();
      const bytes = new Uint8Array(Buffer.concat(parts));
      const verifier = GroupVerifier.fromOutboard(bytes, objectId);
      if (typeof verifier === "string") throw new BoxFault(`sent a bad outboard: ${verifier}`);
      box.requested += bytes.length;
      box.receipted += bytes.length;
      box.receipt = signReceipt({ serial: box.serial, bytes: box.receipted }, clientKey);
      return verifier;
    } catch (err) {
      drop(box, err instanceof BoxFault ? err.message : `outboard: ${errorMessage(err)}`);
    }
  }
  const reasons = boxes.map((b) => `${b.url}: ${b.dropped ?? "not asked"}`).join("; ");
  throw new DownloadError(`no box gave an outboard that checks against ${objectId} (${reasons})`);
}

/** A range's verified prefix: views of the socket's chunks (whole groups from the range's first on), and why the
 * box failed when it did. */
interface RangeResult {
  parts: Uint8Array[];
  bytes: number;
  fault?: string;
}

/**
 * Bytes [offset, end) of the object from one box, checked group by group as they arrive. The socket's chunks are
 * kept as they come (Node hands each read a buffer of its own) and written from there: no copy of the range is
 * assembled. A group inside one chunk is hashed from it; only a group split across chunks is gathered into a
 * 16 KiB scratch first.
 */
async function fetchRange(
  box: Box,
  objectId: string,
  offset: number,
  end: number,
  verifier: GroupVerifier,
  first: number,
  stallMs: number,
): Promise<RangeResult> {
  const size = end - offset;
  const chunks: Uint8Array[] = [];
  let filled = 0;
  let checked = 0;
  let group = first;
  const verifiedPrefix = (fault: string): RangeResult => ({ parts: prefix(chunks, checked), bytes: checked, fault });
  let answer: Answer;
  try {
    answer = await requestBox(box, `/v1/objects/${objectId}`, { Range: `bytes=${offset}-${end - 1}` }, stallMs);
  } catch (err) {
    return verifiedPrefix(err instanceof BoxFault ? err.message : errorMessage(err));
  }
  const { res } = answer;
  const wholeObject = offset === 0 && end === verifier.length;
  if (!(res.statusCode === 206 || (res.statusCode === 200 && wholeObject))) {
    return verifiedPrefix(await refusal(res, `range ${offset}-${end - 1} refused`));
  }
  if (res.statusCode === 206) {
    const contentRange = res.headers["content-range"];
    if (contentRange !== `bytes ${offset}-${end - 1}/${verifier.length}`) {
      answer.abort("wrong Content-Range");
      return verifiedPrefix(
        `answered range ${offset}-${end - 1} with Content-Range ${JSON.stringify(contentRange ?? null)}`,
      );
    }
  }
  const scratch = new Uint8Array(verifier.groupBytes);
  let gathered = 0;
  try {
    for await (const bytes of answer.body()) {
      if (filled + bytes.length > size) {
        answer.abort("too much data");
        return verifiedPrefix(`sent more than the ${size} bytes of range ${offset}-${end - 1}`);
      }
      chunks.push(bytes);
      filled += bytes.length;
      // Check every group that is complete now: a lie is found one group after it is told.
      let at = 0;
      while (at < bytes.length) {
        const { length } = verifier.groupRange(group);
        let whole: Uint8Array;
        if (gathered === 0 && bytes.length - at >= length) {
          whole = bytes.subarray(at, at + length);
          at += length;
        } else {
          const take = Math.min(length - gathered, bytes.length - at);
          scratch.set(bytes.subarray(at, at + take), gathered);
          gathered += take;
          at += take;
          if (gathered < length) break;
          whole = scratch.subarray(0, length);
          gathered = 0;
        }
        if (!verifier.check(group, whole)) {
          answer.abort("bad data");
          const from = offset + checked;
          return verifiedPrefix(`sent bad data: group ${group} (bytes ${from}-${from + length - 1})`);
        }
        checked += length;
        group++;
      }
    }
  } catch (err) {
    return verifiedPrefix(answer.stalled() ?? `connection failed: ${errorMessage(err)}`);
  }
  answer.done();
  if (checked < size) return verifiedPrefix(`sent short content: ${filled} of ${size} bytes`);
  return { parts: chunks, bytes: checked };
}

/** The first `bytes` bytes of `chunks`, as views. */
function prefix(chunks: Uint8Array[], bytes: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const chunk of chunks) {
    if (bytes <= 0) break;
    out.push(chunk.length <= bytes ? chunk : chunk.subarray(0, bytes));
    bytes -= chunk.length;
  }
  return out;
}

/** Writes `parts` back to back from `position`: one pwritev per call, again from where a short write stopped. */
async function writevAll(fh: FileHandle, parts: Uint8Array[], position: number): Promise<void> {
  let rest = parts.filter((p) => p.length > 0);
  while (rest.length > 0) {
    // Linux takes at most IOV_MAX (1024) buffers per call.
    const batch = rest.slice(0, 1024);
    let { bytesWritten } = await fh.writev(batch, position);
    if (bytesWritten <= 0) throw new Error(`write returned ${bytesWritten} bytes`);
    position += bytesWritten;
    let i = 0;
    while (i < batch.length && bytesWritten >= batch[i]!.length) bytesWritten -= batch[i++]!.length;
    rest = [
      ...(bytesWritten > 0 ? [batch[i]!.subarray(bytesWritten)] : []),
      ...rest.slice(i + (bytesWritten > 0 ? 1 : 0)),
    ];
  }
}

/** Hands the box its final receipt (best effort: it also has the last one shown with a request). */
async function postReceipt(box: Box, stallMs: number): Promise<void> {
  if (box.receipt === undefined || box.dropped !== undefined) return;
  try {
    const answer = await requestBox(
      box,
      "/v1/receipts",
      { "Content-Type": "text/plain" },
      stallMs,
      "POST",
      box.receipt,
    );
    answer.res.resume();
    await new Promise<void>((resolve) => answer.res.on("close", resolve));
    answer.done();
  } catch {
    // A box that does not take it keeps the receipt of the last range request.
  }
}
