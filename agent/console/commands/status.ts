// `status`: the one-screen summary: who the box is, its versions, the daemon, the board, the store, the link, the
// outbox, the temperature and the config's problems. Live facts from the daemon; without one, from the disks.
import { arch } from "node:os";
import { version } from "../../../package.json";
import type { ConsoleCommand } from "../command-api.js";
import type { ConsoleContext } from "../context.js";
import { bytes, fields, plural, time } from "../format.js";
import { readLocalStore, scanOutbox, showUrl, type IdentityRead } from "../local-state.js";
import { daemonLine, noArgs, notRunningNote, num, storeSummary, str, temperature } from "./common.js";

export function statusCommand(ctx: ConsoleContext): ConsoleCommand {
  async function offlineStoreLine(identity: IdentityRead): Promise<string> {
    const preview = await ctx.preview(identity);
    if (!preview) return "no data directory configured (store.dataDir)";
    if (!preview.accepted) return `refused: ${preview.reason}`;
    const local = await readLocalStore(ctx.config, preview);
    return local.ok ? `${storeSummary(local.status)} (read from the disk)` : local.reason;
  }

  return {
    name: "status",
    args: "",
    summary: "one-screen summary: device, daemon, board, store, link, temperature, config",
    async run(args, io) {
      noArgs("status", args);
      const [identity, daemon, opened] = await Promise.all([ctx.identity(), ctx.daemon(io.signal), ctx.board()]);
      const rows: [string, string][] = [...identityLines(identity)];
      rows.push(["version", `sharenode ${version} (node ${process.version}, ${arch()})`]);
      rows.push(["daemon", daemonLine(daemon, ctx.now())]);
      rows.push([
        "board",
        opened.board ? `${opened.board.name}: ${opened.board.description}` : `unknown: ${opened.error}`,
      ]);
      if (daemon.running) {
        const s = daemon.status;
        const store = s.store ?? {};
        rows.push([
          "store",
          store.running === false ? `not running: ${str(store.reason) ?? "no reason given"}` : storeSummary(store),
        ]);
        const link = s.link ?? {};
        const since = num(link.connectedSince);
        const lastError = str(link.lastError);
        rows.push([
          "link",
          link.connected
            ? `connected to ${showUrl(str(link.url) ?? ctx.config.link.url)}${since !== undefined ? ` since ${time(since)}` : ""}`
            : `not connected to ${showUrl(str(link.url) ?? ctx.config.link.url)}${lastError ? `: ${lastError}` : ""}`,
        ]);
        rows.push([
          "outbox",
          `${plural(num(s.outbox?.depth) ?? 0, "message")} waiting (${bytes(num(s.outbox?.bytes))})`,
        ]);
        const c = s.compute;
        if (c && typeof c === "object") {
          rows.push([
            "compute",
            `${num(c.queued) ?? 0} waiting, ${num(c.running) ?? 0} running; ${num(c.done) ?? 0} done, ` +
              `${num(c.failed) ?? 0} failed, ${((num(c.cpuMs) ?? 0) / 1000).toFixed(1)} s of CPU since the start; ` +
              `${plural(num(c.lanes) ?? 0, "lane")} for ${num(c.cpuPercent) ?? "?"} % of the box` +
              (c.paused === true ? " (paused: hot)" : ""),
          ]);
        }
      } else {
        rows.push(["store", await offlineStoreLine(identity)]);
        rows.push(["link", `no connection: ${notRunningNote(daemon)} (broker ${showUrl(ctx.config.link.url)})`]);
        const outbox = await scanOutbox(ctx.stateDir);
        rows.push([
          "outbox",
          outbox.ok ? `${plural(outbox.depth, "message")} waiting on disk (${bytes(outbox.bytes)})` : outbox.reason,
        ]);
      }
      if (opened.board) {
        const c = await opened.board.readTemperatureC();
        const { pauseAtC } = opened.board.thermalLimits;
        rows.push([
          "temp",
          `${temperature(c)}${c !== undefined && c >= pauseAtC ? " (hot: work pauses)" : ""} (work pauses at ${pauseAtC} C)`,
        ]);
      }
      const where = ctx.configFile ?? "(no config file: defaults and environment)";
      rows.push([
        "config",
        ctx.configProblems.length === 0
          ? `${where}: ok`
          : `${where}: ${plural(ctx.configProblems.length, "problem")}\n${ctx.configProblems.join("\n")}`,
      ]);
      io.print(fields(rows));
    },
  };
}

function identityLines(identity: IdentityRead): [string, string][] {
  if (!identity.ok) return [["device", identity.reason]];
  const rows: [string, string][] = [
    ["device", identity.deviceId],
    ["public key", identity.publicKeyHex],
  ];
  if (identity.problem) rows.push(["key problem", identity.problem]);
  return rows;
}
