// `temp`: every thermal zone, the temperature that governs throttling, and the limits.
import type { ConsoleCommand } from "../command-api.js";
import type { ConsoleContext } from "../context.js";
import { fields, table } from "../format.js";
import { noArgs, temperature } from "./common.js";

export function tempCommand(ctx: ConsoleContext): ConsoleCommand {
  return {
    name: "temp",
    args: "",
    summary: "every thermal zone, and the throttling limits",
    async run(args, io) {
      noArgs("temp", args);
      const opened = await ctx.board();
      if (!opened.board) {
        io.print(`board could not be opened: ${opened.error}\n`);
        return;
      }
      const b = opened.board;
      const zones = await b.readThermalZones();
      if (zones.length === 0) io.print("no thermal zones\n");
      else {
        io.print(
          table(
            ["zone", "type", "temperature"],
            zones.map((z) => [
              z.zone,
              z.type ?? "?",
              z.celsius !== undefined ? temperature(z.celsius) : `unreadable: ${z.error ?? "no reading"}`,
            ]),
          ),
        );
      }
      const governing = await b.readTemperatureC();
      const { pauseAtC, resumeAtC } = b.thermalLimits;
      const state =
        governing === undefined
          ? ""
          : governing >= pauseAtC
            ? " (at or above the pause limit: work that heats the box pauses)"
            : "";
      io.print(
        "\n" +
          fields([
            ["governing", `${temperature(governing)}${state}`],
            ["limits", `work pauses at ${pauseAtC} C, resumes below ${resumeAtC} C`],
          ]),
      );
    },
  };
}
