// `ledger`: the box's work and pay per window, its statements beside the fleet's settlements, from the ledger's
// files (agent/console/ledger-view.ts; the same view as `sharenode ledger`). With the fleet key in the config, the
// settlements shown are the ones that verify under it.
import type { ConsoleCommand } from "../command-api.js";
import type { ConsoleContext } from "../context.js";
import { readLedgerWindows, renderLedgerWindows } from "../ledger-view.js";
import { join } from "node:path";
import { publicKeyFromHex } from "../../identity/device-key.js";
import { noArgs } from "./common.js";

export function ledgerCommand(ctx: ConsoleContext): ConsoleCommand {
  return {
    name: "ledger",
    args: "",
    summary: "work and pay per window: the box's statements beside the fleet's settlements",
    async run(args, io) {
      noArgs("ledger", args);
      const identity = await ctx.identity();
      if (!identity.ok) {
        io.print(`${identity.reason}\n`);
        return;
      }
      let fleetKey: Uint8Array | undefined;
      try {
        const hex = ctx.config.link.fleetPublicKey;
        fleetKey = hex === undefined ? undefined : publicKeyFromHex(hex);
      } catch {
        fleetKey = undefined;
      }
      const read = await readLedgerWindows(
        join(ctx.stateDir, "ledger"),
        publicKeyFromHex(identity.publicKeyHex),
        fleetKey,
      );
      io.print(read.ok ? renderLedgerWindows(read.windows) : `${read.reason}\n`);
    },
  };
}
