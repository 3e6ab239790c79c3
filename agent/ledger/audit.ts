// Audit by anyone holding the device's public key: the `ledger.records` and `ledger.receipts` commands. A statement
// names the Merkle root of its records; these answers give records with their paths, so a fleet (or an owner) can
// sample a few and check the whole statement, and the client receipts behind an order's serve total.
import { SERIAL } from "../protocol/order.js";
import { isPlainObject, isUint } from "../util/guards.js";
import type { Ledger } from "./ledger.js";

/** Records per page: a serve record with its order and receipt is about 1.5 KB, so a page is well under a reply's 1 MiB. */
export const RECORDS_PAGE = 100;

/** A refusal with a reply code (the command gate answers with it). */
export class AuditRefused extends Error {
  override readonly name = "AuditRefused";
  constructor(
    readonly code: "bad-args" | "not-found",
    message: string,
  ) {
    super(message);
  }
}

/**
 * `ledger.records {window, page?}`: the statement of the window that starts at `window` (epoch ms) and one page of
 * its records, each with its index and Merkle path to the statement's recordsRoot.
 */
export async function ledgerRecords(ledger: Ledger, args: unknown): Promise<unknown> {
  if (!isPlainObject(args)) throw new AuditRefused("bad-args", "args must be an object");
  const { window, page = 0 } = args;
  if (!isUint(window)) throw new AuditRefused("bad-args", "window must be a window's start in epoch milliseconds");
  if (!isUint(page)) throw new AuditRefused("bad-args", "page must be a non-negative integer");
  const found = ledger.statementsOf(window);
  if (found.length === 0)
    throw new AuditRefused("not-found", `no statement for the window starting ${new Date(window).toISOString()}`);
  // A window closed twice (a clock that stepped back) has two statements: the later one is answered.
  const index = found.at(-1)!;
  const { statement, records, pages } = await ledger.recordsOf(index, page, RECORDS_PAGE);
  if (page >= pages) throw new AuditRefused("not-found", `page ${page} of ${pages}: pages are 0..${pages - 1}`);
  return {
    statement: new TextDecoder().decode(statement.envelope),
    page,
    pages,
    records: records.map((r) => ({ index: r.index, record: r.record, hash: r.hash, path: r.path })),
  };
}

/** `ledger.receipts {serial}`: every serve record of the order, each with the client receipt it was claimed under. */
export async function ledgerReceipts(ledger: Ledger, args: unknown): Promise<unknown> {
  if (!isPlainObject(args)) throw new AuditRefused("bad-args", "args must be an object");
  const { serial } = args;
  if (typeof serial !== "string" || !SERIAL.test(serial))
    throw new AuditRefused("bad-args", "serial must be an order serial (1..64 of A-Z a-z 0-9 . _ -)");
  const records = await ledger.serveRecords(serial);
  if (records.length === 0) throw new AuditRefused("not-found", `no serve record for order ${serial}`);
  return {
    serial,
    claimedBytes: ledger.servedBytes(serial).toString(),
    records: records.map(({ record, hash }) => ({ seq: record.seq, hash, record })),
  };
}
