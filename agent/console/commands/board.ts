// `board`: the board profile: how it was detected, its serial console, its thermal limits, its problems.
import type { ConsoleCommand } from "../command-api.js";
import type { ConsoleContext } from "../context.js";
import { fields } from "../format.js";
import { noArgs } from "./common.js";

export function boardCommand(ctx: ConsoleContext): ConsoleCommand {
  return {
    name: "board",
    args: "",
    summary: "the board profile: how it was detected, serial console, thermal limits, problems",
    async run(args, io) {
      noArgs("board", args);
      const opened = await ctx.board();
      if (!opened.board) {
        io.print(
          fields([
            ["board", `could not be opened: ${opened.error}`],
            ["config", `board = "${ctx.config.board}"`],
          ]),
        );
        return;
      }
      const b = opened.board;
      io.print(
        fields([
          ["board", b.name],
          ["description", b.description],
          ["detected by", b.detectedBy],
          ["console", b.console ? `/dev/${b.console.tty} at ${b.console.baud} baud` : "none known"],
          ["thermal", `work pauses at ${b.thermalLimits.pauseAtC} C, resumes below ${b.thermalLimits.resumeAtC} C`],
          ["problems", b.problems.length === 0 ? "none" : b.problems.join("\n")],
        ]),
      );
    },
  };
}
