// `log [-f] [LINES]`: the daemon's last log lines from its in-memory ring (control socket `log.tail`); `-f` then
// follows (`log.follow`) until Ctrl-C or the daemon stops. Without a daemon: where earlier runs logged.
import { ConsoleError, type ConsoleCommand } from "../command-api.js";
import type { ConsoleContext } from "../context.js";
import { ControlError, MAX_LOG_LINES, type ControlClient } from "../control.js";
import { lockHolder } from "../local-state.js";

export function logCommand(ctx: ConsoleContext): ConsoleCommand {
  return {
    name: "log",
    args: "[-f] [LINES]",
    summary: "the daemon's last log lines (default 20); -f follows until Ctrl-C",
    async run(args, io) {
      let followMode = false;
      let lines = 20;
      for (const a of args) {
        if (a === "-f" || a === "--follow") followMode = true;
        else if (/^\d+$/.test(a)) lines = parseLines(a, "log");
        else throw new ConsoleError(`log: unknown argument '${a}' (usage: log [-f] [LINES])`);
      }
      let client: ControlClient;
      try {
        client = await ctx.connect(io.signal);
      } catch (err) {
        if (!(err instanceof ControlError)) throw err;
        if (err.code === "aborted") return;
        const lockPid = await lockHolder(ctx.stateDir);
        io.print(
          `${lockPid !== undefined ? `the daemon (pid ${lockPid}) does not answer` : "the daemon is not running"}: ${err.message}\n`,
        );
        io.print(
          "its log is kept in memory only; earlier runs: journalctl -u sharenode (systemd) or logread -e sharenode (OpenWrt)\n",
        );
        return;
      }
      try {
        if (!followMode) {
          const result = (await client.request("log.tail", { lines })) as { lines?: unknown };
          const got = Array.isArray(result?.lines) ? result.lines.map(String) : [];
          if (got.length === 0) io.print("(no log lines yet)\n");
          for (const l of got) io.print(l + "\n");
          return;
        }
        io.print(`following the daemon's log (Ctrl-C to stop)\n`);
        const ended = await client.follow(lines, (l) => io.print(l + "\n"), io.signal);
        if (ended === "closed") io.print("the daemon closed the connection (did it stop?)\n");
      } catch (err) {
        if (err instanceof ControlError) throw new ConsoleError(`log: ${err.message}`);
        throw err;
      } finally {
        ctx.release(client);
      }
    },
  };
}

function parseLines(text: string, what: string, max = MAX_LOG_LINES): number {
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > max)
    throw new ConsoleError(`${what}: LINES must be a number from 1 to ${max}, got '${text}'`);
  return Number(text);
}
