// `proofs`: the running daemon's storage-proof counters and its last challenges (control socket `proofs`: the
// daemon's ProofLedger, agent/store/proofs.ts). They live in the daemon only and start at 0 with it.
import type { ProofsSnapshot } from "../../store/proofs.js";
import type { ConsoleCommand } from "../command-api.js";
import type { ConsoleContext } from "../context.js";
import { fields, plural, table, time } from "../format.js";
import { noArgs, num, str } from "./common.js";
import { errorLine } from "../../util/errors.js";

export function proofsCommand(ctx: ConsoleContext): ConsoleCommand {
  return {
    name: "proofs",
    args: "",
    summary: "storage-proof counters and the last challenges answered",
    async run(args, io) {
      noArgs("proofs", args);
      const answer = await ctx.ask("proofs", io.signal);
      if (!answer.running) {
        io.print(
          `${answer.lockPid !== undefined ? `the daemon (pid ${answer.lockPid}) does not answer` : "the daemon is not running"}: ${answer.why}\n`,
        );
        io.print("proof counters live in the running daemon (they start at 0 with it)\n");
        return;
      }
      const p = (answer.result ?? {}) as Partial<ProofsSnapshot>;
      const recent = Array.isArray(p.recent) ? p.recent : [];
      io.print(
        fields([
          ["passed", String(num(p.passed) ?? "?")],
          ["failed", String(num(p.failed) ?? "?")],
        ]),
      );
      if (recent.length === 0) {
        io.print("no challenges answered since the daemon started\n");
        return;
      }
      io.print(`\nlast ${plural(recent.length, "challenge")}, oldest first:\n`);
      io.print(
        table(
          ["time", "object", "result"],
          recent.map((r) => [
            num(r.ts) !== undefined ? time(r.ts) : "?",
            str(r.objectId) ?? "?",
            r.ok ? "ok" : `FAIL ${str(r.code) ?? ""}${r.message ? `: ${errorLine(r.message)}` : ""}`.trim(),
          ]),
          "  ",
        ),
      );
    },
  };
}
