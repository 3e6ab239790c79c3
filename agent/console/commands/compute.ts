// `compute`: the compute tasks on the box (agent/compute), through the running daemon's control socket: the owner's
// share and the lanes, the tasks waiting or running, and the last ones that ended, each failure with its code and
// reason (a module refused, a budget passed, a deadline missed).
import { ConsoleError, type ConsoleCommand } from "../command-api.js";
import type { ConsoleContext } from "../context.js";
import { table, time } from "../format.js";
import { noArgs, num, str } from "./common.js";

export function computeCommand(ctx: ConsoleContext): ConsoleCommand {
  return {
    name: "compute",
    args: "",
    summary: "compute tasks: the share, the tasks waiting or running, the last ended with their reasons",
    async run(args, io) {
      noArgs("compute", args);
      const answer = await ctx.ask("compute", io.signal);
      if (!answer.running) throw new ConsoleError(`the daemon is not running (${answer.why}): compute runs in it`);
      const r = (answer.result ?? {}) as { tasks?: unknown; ended?: unknown; lanes?: unknown; cpuPercent?: unknown };
      const rows = (list: unknown) =>
        (Array.isArray(list) ? list : []).map((t: Record<string, unknown>) => [
          str(t.taskId) ?? "?",
          str(t.state) ?? "?",
          num(t.acceptedAt) !== undefined ? time(num(t.acceptedAt)!) : "?",
          num(t.cpuMs) !== undefined ? String(num(t.cpuMs)) : "-",
          str(t.code) !== undefined ? `${str(t.code)}: ${str(t.reason) ?? ""}` : (str(t.outputId)?.slice(0, 16) ?? ""),
        ]);
      const header = ["task", "state", "accepted", "cpu_ms", "output or reason"];
      const live = rows(r.tasks);
      const ended = rows(r.ended);
      let out = `${num(r.lanes) ?? "?"} lane(s) for ${num(r.cpuPercent) ?? "?"} % of the box\n`;
      out += live.length > 0 ? table(header, live) + "\n" : "no task waiting or running\n";
      if (ended.length > 0) out += `ended (newest first):\n${table(header, ended, "  ")}\n`;
      io.print(out);
    },
  };
}
