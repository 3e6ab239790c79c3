// `sharenode ledger`: the owner's view of the box's work ledger, from its files alone (read only; the daemon may be
// running): the work and the pay per window, the box's own totals beside the fleet's settlement and every line the
// fleet refused with its reason; `verify` checks the whole chain, every statement and settlement signature and every
// receipt; `export` writes the evidence to one file that `verify --from FILE` checks on any machine.
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeFileAtomic } from "../durable/atomic.js";
import { readRecordLog } from "../durable/record-log.js";
import { publicKeyFromHex } from "../identity/device-key.js";
import { readDeviceIdentity } from "../console/local-state.js";
import { openSettlement } from "../ledger/settle.js";
import { readLedgerWindows, renderLedgerWindows } from "../console/ledger-view.js";
import { verifyLedger } from "../ledger/verify.js";
import { errorMessage } from "../util/errors.js";
import { CliError, parseCommandArgs, usageError, type CliIo, type Command } from "./io.js";
import { defaultStateDir } from "./store.js";

const USAGE = `Usage: sharenode ledger [today | window MS | month YYYY-MM] [--state DIR] [--fleet-key HEX] [--json]
       sharenode ledger verify [--state DIR | --from FILE] [--fleet-key HEX]
       sharenode ledger export FILE [--state DIR]

The box's work ledger (STATE/ledger): for each window, what the box claims (its signed statement: bytes served,
byte-hours held, proofs, bytes fetched, compute CPU ms) beside what the fleet settled (its signed settlement: the amount paid, and
every line it refused with the reason). With no period: every window kept.

verify   checks the chain of records, every statement (signature, chain, Merkle root, totals), every settlement
         (the fleet's signature, and that it settles a statement of this box) and, with the fleet key, every
         client receipt behind the bytes served; one line per problem, exit 1 if there is any
export   writes the ledger's files, the device's public key and id to FILE (JSON), for 'verify --from FILE'

Options:
  --state DIR       the agent's state directory (or SHARENODE_STATE; default /var/lib/sharenode as root)
  --fleet-key HEX   the fleet's public key (or SHARENODE_FLEET_KEY): settlements and receipts are checked with it
  --from FILE       verify an export instead of this box's files
  --json            one JSON object instead of the table
  -h, --help        show this help

Exit status: 0 shown or verified, 1 a problem found or the ledger unreadable, 2 usage error.
`;

export const ledgerCommand: Command = {
  summary: "the box's work and pay per window, the fleet's settlement beside it; verify; export",
  usage: USAGE,
  run: runLedger,
};

async function runLedger(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs(
    "ledger",
    args,
    {
      state: { type: "string" },
      "fleet-key": { type: "string" },
      from: { type: "string" },
      json: { type: "boolean" },
    },
    true,
  );
  const stateDir = values.state ?? defaultStateDir(io.env);
  const fleetHex = values["fleet-key"] ?? io.env.SHARENODE_FLEET_KEY;
  let fleetKey: Uint8Array | undefined;
  if (fleetHex !== undefined) {
    try {
      fleetKey = publicKeyFromHex(fleetHex);
    } catch (err) {
      throw usageError(`ledger: --fleet-key: ${errorMessage(err)}`);
    }
  }
  const [action, arg, ...extra] = positionals;
  if (extra.length > 0) throw usageError(`ledger: unexpected argument '${extra[0]}'`);
  if (action === "verify") return verify(values.from, stateDir, fleetKey, io);
  if (values.from !== undefined) throw usageError("ledger: --from goes with verify");
  if (action === "export") {
    if (arg === undefined) throw usageError("ledger export: FILE is required");
    return exportLedger(stateDir, arg, io);
  }
  let from = 0;
  let to = Number.MAX_SAFE_INTEGER;
  if (action === "today") {
    from = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate());
    to = from + 86_400_000;
  } else if (action === "window") {
    if (arg === undefined || !/^\d+$/.test(arg))
      throw usageError("ledger window: MS (a window's start, epoch ms) is required");
    from = Number(arg);
    to = from + 1;
  } else if (action === "month") {
    const m = arg === undefined ? null : /^(\d{4})-(\d{2})$/.exec(arg);
    if (!m || Number(m[2]) < 1 || Number(m[2]) > 12) throw usageError("ledger month: YYYY-MM is required");
    from = Date.UTC(Number(m[1]), Number(m[2]) - 1, 1);
    to = Date.UTC(Number(m[1]), Number(m[2]), 1);
  } else if (action !== undefined) {
    throw usageError(`ledger: unknown period '${action}' (expected today, window MS, month YYYY-MM, verify or export)`);
  }
  return show(join(stateDir, "ledger"), stateDir, fleetKey, from, to, values.json === true, io);
}

/** The device's id and public key, read without creating anything (the console's reader). */
async function deviceKey(stateDir: string): Promise<{ deviceId: string; publicKey: Uint8Array }> {
  const identity = await readDeviceIdentity(stateDir);
  if (!identity.ok) throw new CliError(`ledger: ${identity.reason} (is this the agent's state directory? --state DIR)`);
  return { deviceId: identity.deviceId, publicKey: publicKeyFromHex(identity.publicKeyHex) };
}

async function show(
  dir: string,
  stateDir: string,
  fleetKey: Uint8Array | undefined,
  from: number,
  to: number,
  json: boolean,
  io: CliIo,
): Promise<number> {
  const read = await readLedgerWindows(dir, (await deviceKey(stateDir)).publicKey, fleetKey);
  if (!read.ok) throw new CliError(`ledger: ${read.reason}`);
  const windows = read.windows.filter((s) => s.statement.window.start >= from && s.statement.window.start < to);
  if (json) {
    const out = { windows: windows.map((s) => ({ statement: s.statement, settlement: s.settlement ?? null })) };
    io.stdout.write(JSON.stringify(out, null, 2) + "\n");
    return 0;
  }
  io.stdout.write(renderLedgerWindows(windows));
  return 0;
}

async function verify(
  from: string | undefined,
  stateDir: string,
  fleetKey: Uint8Array | undefined,
  io: CliIo,
): Promise<number> {
  let dir = join(stateDir, "ledger");
  let key: Uint8Array;
  let cleanup: (() => Promise<void>) | undefined;
  if (from !== undefined) {
    let exported: { publicKey: string; files: Record<string, string> };
    try {
      exported = JSON.parse(await readFile(from, "utf8")) as typeof exported;
    } catch (err) {
      throw new CliError(`ledger verify: cannot read ${from}: ${errorMessage(err)}`);
    }
    dir = await mkdtemp(join(tmpdir(), "sharenode-ledger-verify-"));
    cleanup = () => rm(dir, { recursive: true, force: true });
    for (const [name, data] of Object.entries(exported.files ?? {})) {
      if (!/^[a-z0-9.-]+\.log$/.test(name)) throw new CliError(`ledger verify: ${from} names a file '${name}'`);
      await writeFile(join(dir, name), Buffer.from(data, "base64"));
    }
    key = publicKeyFromHex(exported.publicKey);
  } else key = (await deviceKey(stateDir)).publicKey;
  try {
    const check = await verifyLedger(dir, key, fleetKey);
    const problems = [...check.problems];
    // Settlements: the fleet's signature, and each settles a statement of this box.
    const read = await readLedgerWindows(dir, key, undefined);
    const statements = read.ok ? read.windows : [];
    const settlements = await readRecordLog(join(dir, "settlements.log"));
    let settled = 0;
    if (settlements.ok) {
      for (const [i, raw] of settlements.records.entries()) {
        settled++;
        if (!fleetKey) continue;
        const o = openSettlement(raw, fleetKey);
        if (!o.ok) problems.push(`settlement ${i}: ${o.reason}`);
        else if (!statements.some((s) => s.hash === o.settlement.statement))
          problems.push(`settlement ${i}: settles no statement of this box`);
      }
    }
    for (const p of problems) io.stdout.write(`problem: ${p}\n`);
    io.stdout.write(
      `${problems.length === 0 ? "ok" : `${problems.length} problem(s)`}: ${check.records} records, ${check.statements} statements, ` +
        `${settled} settlements, ${check.receiptsChecked} receipts checked` +
        (fleetKey ? "" : " (no fleet key: settlements and receipts not checked)") +
        "\n",
    );
    return problems.length === 0 ? 0 : 1;
  } finally {
    await cleanup?.();
  }
}

async function exportLedger(stateDir: string, file: string, io: CliIo): Promise<number> {
  const identity = await deviceKey(stateDir);
  const dir = join(stateDir, "ledger");
  const files: Record<string, string> = {};
  for (const name of (await readdir(dir)).sort()) {
    if (name.endsWith(".log")) files[name] = (await readFile(join(dir, name))).toString("base64");
  }
  await writeFileAtomic(
    file,
    JSON.stringify({ deviceId: identity.deviceId, publicKey: Buffer.from(identity.publicKey).toString("hex"), files }),
  );
  io.stdout.write(`exported ${Object.keys(files).length} files of ${identity.deviceId}'s ledger to ${file}\n`);
  return 0;
}
