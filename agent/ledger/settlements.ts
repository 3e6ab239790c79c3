// The fleet's settlements, kept on the box beside the statements they settle (`<ledger dir>/settlements.log`, a
// CRC-framed record log of the signed envelopes as the fleet sent them), so the owner sees both sides and can check
// the fleet's signature and each line against the box's own records (`sharenode ledger`).
import { join } from "node:path";
import { RecordLog } from "../durable/record-log.js";
import { publicKeyOption } from "../protocol/envelope.js";
import type { Ledger } from "./ledger.js";
import { openSettlement, settlementHash, type SettlementBody } from "./settle.js";

export const SETTLEMENTS_FILE = "settlements.log";
const encoder = new TextEncoder();
const decoder = new TextDecoder();

export interface KeptSettlement {
  envelope: string;
  settlement: SettlementBody;
  hash: string;
}

/** Why a settlement was not kept (the command's reply code and one line). */
export class SettlementRefused extends Error {
  override readonly name = "SettlementRefused";
  constructor(
    readonly code: "bad-args" | "bad-signature" | "wrong-device" | "unknown-statement",
    message: string,
  ) {
    super(message);
  }
}

export class SettlementBook {
  private log: RecordLog | undefined;
  private readonly kept: KeptSettlement[] = [];

  constructor(
    private readonly dir: string,
    private readonly fleetPublicKey: string,
    private readonly deviceId: string,
  ) {}

  /** Opens the log and reads the settlements kept (any that no longer open are skipped, and counted). */
  async start(): Promise<{ skipped: number }> {
    const opened = await RecordLog.open(join(this.dir, SETTLEMENTS_FILE), { mode: 0o600 });
    this.log = opened.log;
    let skipped = 0;
    for (const raw of opened.records) {
      const envelope = decoder.decode(raw);
      const o = openSettlement(encoder.encode(envelope), publicKeyOption(this.fleetPublicKey, "fleet key"));
      if (o.ok) this.kept.push({ envelope, settlement: o.settlement, hash: settlementHash(encoder.encode(envelope)) });
      else skipped++;
    }
    return { skipped };
  }

  async stop(): Promise<void> {
    await this.log?.close();
    this.log = undefined;
  }

  all(): readonly KeptSettlement[] {
    return this.kept;
  }

  /**
   * `ledger.settlement {settlement}`: keeps a settlement the fleet signed for one of this box's statements (durable
   * when this resolves; the same settlement twice is kept once). Returns what it settled.
   */
  async add(
    args: unknown,
    ledger: Ledger,
  ): Promise<{ statement: string; amount: string; lines: number; rejected: number }> {
    const text = (args as { settlement?: unknown } | undefined)?.settlement;
    if (typeof text !== "string")
      throw new SettlementRefused("bad-args", "settlement must be the signed envelope's JSON text");
    const bytes = encoder.encode(text);
    const o = openSettlement(bytes, publicKeyOption(this.fleetPublicKey, "fleet key"));
    if (!o.ok) throw new SettlementRefused("bad-signature", o.reason);
    const s = o.settlement;
    if (s.deviceId !== this.deviceId)
      throw new SettlementRefused("wrong-device", `settlement is for ${s.deviceId}, not ${this.deviceId}`);
    if (!ledger.statements().some((k) => k.hash === s.statement))
      throw new SettlementRefused("unknown-statement", `no statement ${s.statement} on this box`);
    const hash = settlementHash(bytes);
    if (!this.kept.some((k) => k.hash === hash)) {
      if (!this.log) throw new Error("the settlement book is stopped");
      await this.log.append(bytes);
      this.kept.push({ envelope: text, settlement: s, hash });
    }
    return {
      statement: s.statement,
      amount: s.totals.amount,
      lines: s.lines.length,
      rejected: s.lines.filter((l) => l.rejected).length,
    };
  }
}
