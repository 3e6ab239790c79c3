// `reboot`: asks for the word `reboot` (anything else, or Ctrl-C, cancels), then SystemActions.reboot().
import { ConsoleError, type ConsoleCommand, type ConsoleIo } from "../command-api.js";
import type { ConsoleContext } from "../context.js";
import { noArgs } from "./common.js";
import { errorLine } from "../../util/errors.js";

export function rebootCommand(ctx: ConsoleContext): ConsoleCommand {
  return {
    name: "reboot",
    args: "",
    summary: "reboot the box (asks you to type 'reboot')",
    async run(args, io) {
      noArgs("reboot", args);
      io.print("This reboots the box now; the daemon is stopped cleanly by the init system.\n");
      const answer = await io.ask("Type reboot to reboot, anything else to cancel: ");
      if (answer?.trim() !== "reboot") {
        io.print("cancelled: nothing was done\n");
        return;
      }
      await rebootNow(ctx, io);
    },
  };
}

/** Reboots without asking (the caller asked); a failure is the command's error. */
export async function rebootNow(ctx: ConsoleContext, io: ConsoleIo): Promise<void> {
  io.print("rebooting...\n");
  try {
    await ctx.system.reboot();
  } catch (err) {
    throw new ConsoleError(`reboot failed: ${errorLine(err)}`);
  }
}
