// The owner's view of the work ledger, shared by `sharenode ledger` and the console's `ledger`: each window's
// statement (what the box claims) beside the fleet's settlement of it (what was paid, every refused line with its
// reason), read from the ledger's files only (the daemon may be running; nothing is written).
import { join } from "node:path";
import { readRecordLog } from "../durable/record-log.js";
import { openSettlement, type SettlementBody } from "../ledger/settle.js";
import { openStatement, statementHash, type StatementBody } from "../ledger/statement.js";
import { table } from "./format.js";

export interface LedgerWindow {
  statement: StatementBody;
  hash: string;
  settlement?: SettlementBody;
}

const decoder = new TextDecoder();

/**
 * The statements in `dir` that open under the device key, each with its settlement when one is kept. Without the
 * fleet key a settlement is shown as stored, unchecked (`sharenode ledger verify` checks it).
 */
export async function readLedgerWindows(
  dir: string,
  devicePublicKey: Uint8Array,
  fleetKey: Uint8Array | undefined,
): Promise<{ ok: true; windows: LedgerWindow[] } | { ok: false; reason: string }> {
  const statements = await readRecordLog(join(dir, "statements.log"));
  if (!statements.ok) return { ok: false, reason: statements.missing ? `no ledger in ${dir} yet` : statements.reason };
  const windows: LedgerWindow[] = [];
  for (const raw of statements.records) {
    try {
      const envelope = new TextEncoder().encode((JSON.parse(decoder.decode(raw)) as { envelope: string }).envelope);
      const opened = openStatement(envelope, devicePublicKey);
      if (opened.ok) windows.push({ statement: opened.statement, hash: statementHash(envelope) });
    } catch {
      // not a statement entry: `ledger verify` names it
    }
  }
  const settlements = await readRecordLog(join(dir, "settlements.log"));
  for (const raw of settlements.ok ? settlements.records : []) {
    let body: SettlementBody | undefined;
    if (fleetKey) {
      const o = openSettlement(raw, fleetKey);
      body = o.ok ? o.settlement : undefined;
    } else {
      try {
        body = JSON.parse((JSON.parse(decoder.decode(raw)) as { body: string }).body) as SettlementBody;
      } catch {
        body = undefined;
      }
    }
    const w = body && windows.find((s) => s.hash === body.statement);
    if (w) w.settlement = body;
  }
  return { ok: true, windows };
}

/** The table and the refused lines, as text. */
export function renderLedgerWindows(windows: readonly LedgerWindow[]): string {
  if (windows.length === 0) return "no statements in that period\n";
  const rows = windows.map((s) => {
    const t = s.statement.totals;
    return [
      new Date(s.statement.window.start).toISOString().replace(".000Z", "Z"),
      String(s.statement.count),
      t.serveBytes,
      (BigInt(t.storeByteSeconds) / 3600n).toString(),
      `${t.proofsPassed}/${BigInt(t.proofsPassed) + BigInt(t.proofsFailed)}`,
      t.fetchBytes,
      t.computeCpuMs,
      s.settlement ? s.settlement.totals.amount : "not settled",
      String(s.settlement ? s.settlement.lines.filter((l) => l.rejected).length : 0),
    ];
  });
  let out =
    table(
      ["window (UTC)", "records", "served B", "held B-h", "proofs ok", "fetched B", "CPU ms", "paid", "refused"],
      rows,
    ) + "\n";
  let total = 0n;
  for (const s of windows) if (s.settlement) total += BigInt(s.settlement.totals.amount);
  const settled = windows.filter((s) => s.settlement).length;
  out += `paid ${total} base units for ${settled} of ${windows.length} windows\n`;
  for (const s of windows) {
    for (const l of s.settlement?.lines ?? []) {
      if (!l.rejected) continue;
      out +=
        `  ${new Date(s.statement.window.start).toISOString()} record ${l.seq} (${l.kind} ${l.ref.slice(0, 16)}): ` +
        `${l.rejected.units} refused, ${l.rejected.reason}: ${l.rejected.detail}\n`;
    }
  }
  return out;
}
