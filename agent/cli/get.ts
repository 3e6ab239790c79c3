// `sharenode get`: download one object from the boxes named in orders, verified, resumable (agent/client).
import { readFile } from "node:fs/promises";
import { download, DownloadError } from "../client/download.js";
import { defaultClientKeyDir, loadOrCreateClientKey } from "../client/key.js";
import { boxUrl, orderTerms, parseOrderFile, type BoxOrder, type OrderTerms } from "../client/orders.js";
import { errorMessage } from "../util/errors.js";
import { CliError, parseCommandArgs, systemErrorText, usageError, type CliIo, type Command } from "./io.js";
import { Progress } from "./progress.js";

const USAGE = `Usage: sharenode get ID --order FILE... [--box URL...] -o OUT [--key-dir DIR]

Download object ID (64 hex digits) into OUT from the boxes named in the order files, in parallel ranges, every
16 KiB checked against the object's outboard before it is written. OUT appears only once the whole object is
verified (OUT.part, fsync, rename); until then OUT.part and OUT.part.log hold the verified part, and running the
same command again resumes. A box that sends a bad byte, stalls or fails is dropped and the others carry on.
Receipts for the bytes received are signed with the client key and handed to each box.

An order file holds one order per line: 'URL TOKEN', the box's base URL (http://host:port) and the token
'sharenode fleet order' printed, or a bare TOKEN when --box gives the file's box (the Nth --box goes with the
Nth --order). Blank lines and lines starting with # are skipped.

Options:
  --order FILE       an order file (repeatable; at least one)
  --box URL          the box of a bare-token order file, in the order of the --order options
  -o, --output OUT   where the object goes
  --key-dir DIR      the client key (default ~/.config/sharenode-client; 'sharenode client keygen' makes it)
  --range BYTES      bytes per range request (default 1048576)
  --per-box N        requests in flight per box (default 2)
  --stall SECONDS    drop a box that sends nothing for this long (default 10)
  -h, --help         show this help

A progress line is drawn on stderr when it is a terminal. Exit status: 0 when OUT holds the verified object,
1 when the download failed (run it again to resume), 2 on a usage error.
`;

export const getCommand: Command = {
  summary: "download an object from boxes under orders, verified and resumable",
  usage: USAGE,
  run: runGet,
};

function positive(name: string, value: string | undefined, fallback: number, integer: boolean): number {
  if (value === undefined) return fallback;
  const n = (integer ? /^\d+$/ : /^\d+(\.\d+)?$/).test(value) ? Number(value) : NaN;
  if (!(n > 0) || !Number.isFinite(n) || (integer && !Number.isSafeInteger(n)))
    throw usageError(`get: --${name} must be a positive ${integer ? "whole " : ""}number, got '${value}'`);
  return n;
}

async function runGet(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs(
    "get",
    args,
    {
      order: { type: "string", multiple: true },
      box: { type: "string", multiple: true },
      output: { type: "string", short: "o" },
      "key-dir": { type: "string" },
      range: { type: "string" },
      "per-box": { type: "string" },
      stall: { type: "string" },
    },
    true,
  );
  if (positionals.length !== 1) throw usageError(`get: expected one object ID, got ${positionals.length} arguments`);
  const objectId = positionals[0]!;
  if (!/^[0-9a-f]{64}$/.test(objectId))
    throw usageError(`get: ID must be an object id (64 lowercase hex digits), got '${objectId}'`);
  const files = values.order ?? [];
  if (files.length === 0) throw usageError("get: at least one --order FILE is required");
  const out = values.output;
  if (out === undefined) throw usageError("get: -o OUT is required");
  const boxes = values.box ?? [];
  if (boxes.length > files.length)
    throw usageError(`get: ${boxes.length} --box for ${files.length} --order: at most one --box per order file`);
  for (const b of boxes) if (boxUrl(b) === undefined) throw usageError(`get: --box must be an http(s) URL, got '${b}'`);
  const rangeBytes = positive("range", values.range, 1024 * 1024, true);
  const perBox = positive("per-box", values["per-box"], 2, true);
  const stallMs = positive("stall", values.stall, 10, false) * 1000;

  const orders: BoxOrder[] = [];
  for (let i = 0; i < files.length; i++) {
    const file = files[i]!;
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      throw usageError(`get: --order ${file}: ${systemErrorText(err) ?? errorMessage(err)}`);
    }
    try {
      orders.push(...parseOrderFile(text, file, boxes[i] === undefined ? undefined : boxUrl(boxes[i]!)));
    } catch (err) {
      throw usageError(`get: ${errorMessage(err)}`);
    }
  }
  const key = await loadOrCreateClientKey(values["key-dir"] ?? defaultClientKeyDir()).catch((err: unknown) => {
    throw new CliError(`get: ${errorMessage(err)}`);
  });
  // The orders must be for this object and this client: a mix-up is the user's, found before any request.
  for (const { token } of orders) {
    const terms = orderTerms(token) as OrderTerms;
    if (terms.objectId !== objectId)
      throw usageError(`get: order ${terms.serial} is for object ${terms.objectId}, not ${objectId}`);
    if (terms.clientKey !== key.publicKeyHex)
      throw usageError(
        `get: order ${terms.serial} is for client key ${terms.clientKey}, not this client's (${key.publicKeyHex}): pass its --key-dir`,
      );
  }
  // Any size is worth a line: a network download is slow next to hashing.
  const progress = new Progress(io.stderr, undefined, 0);
  let shown: number | undefined;
  try {
    await download({
      objectId,
      orders,
      out,
      clientKey: key,
      rangeBytes,
      perBox,
      stallMs,
      onProgress: (done, total) => {
        if (shown === undefined) progress.begin(out, total);
        progress.advance(done - (shown ?? 0));
        shown = done;
      },
      onDrop: (url, reason) => {
        progress.end();
        io.stderr.write(`sharenode: get: dropped ${url}: ${reason}\n`);
      },
    });
    progress.end();
    return 0;
  } catch (err) {
    progress.end();
    if (err instanceof DownloadError) throw new CliError(`get: ${err.message}`);
    const text = systemErrorText(err);
    if (text !== undefined) throw new CliError(`get: ${out}: ${text}`);
    throw err;
  }
}
