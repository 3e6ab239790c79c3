// `store`: objects, bytes, quota, reserve, quarantine and the last scrub: from the running daemon, or read from the
// index on the data disk (then also interrupted ingests, a torn index tail, a process holding the store).
import { countQuarantined } from "../../store/object-store.js";
import type { ConsoleCommand } from "../command-api.js";
import type { ConsoleContext } from "../context.js";
import { bytes, fields, plural, time } from "../format.js";
import { readLocalStore } from "../local-state.js";
import { filesystemLine, noArgs, notRunningNote, num, str } from "./common.js";

export function storeCommand(ctx: ConsoleContext): ConsoleCommand {
  return {
    name: "store",
    args: "",
    summary: "objects, bytes, quota, reserve, quarantine, last scrub",
    async run(args, io) {
      noArgs("store", args);
      const [identity, daemon] = await Promise.all([ctx.identity(), ctx.daemon(io.signal)]);
      const preview = await ctx.preview(identity);
      const rows: [string, string][] = [];
      if (preview) rows.push(["data dir", filesystemLine(preview)]);
      else rows.push(["data dir", "not configured (store.dataDir)"]);
      if (daemon.running) {
        const s = daemon.status.store ?? {};
        rows.push(["source", "the running daemon"]);
        if (s.running === false) {
          rows.push(["store", `not running: ${str(s.reason) ?? "no reason given"}${s.code ? ` (${s.code})` : ""}`]);
          io.print(fields(rows));
          return;
        }
        const quarantined = num(s.quarantined) ?? (preview ? await countQuarantined(preview.dataDir) : undefined);
        const scrub = s.lastScrub;
        const scrubAt = num(scrub?.at);
        const reserve = num(s.reserveBytes);
        rows.push(
          ["objects", `${num(s.objects) ?? "?"}${num(s.pinned) !== undefined ? ` (${s.pinned} pinned)` : ""}`],
          ["used", bytes(num(s.usedBytes))],
          ["quota", bytes(num(s.quotaBytes))],
          ["disk free", bytes(num(s.availableBytes))],
          [
            "reserve",
            reserve !== undefined
              ? `${bytes(reserve)} kept free`
              : ctx.config.store.reserveBytes !== undefined
                ? `${bytes(ctx.config.store.reserveBytes)} kept free (config)`
                : "5% of the disk, at most 1 GiB (default)",
          ],
          ["quarantined", quarantined !== undefined ? plural(quarantined, "object") : "?"],
          [
            "last scrub",
            scrub && scrubAt !== undefined
              ? `${time(scrubAt)}: ${scrub.checked} checked, ${scrub.corrupt} corrupt, ${scrub.missing} missing`
              : s.lastScrub === null
                ? "none since the daemon started (a pass a day)"
                : "not reported by this daemon",
          ],
        );
        io.print(fields(rows));
        return;
      }
      rows.push(["source", `the data directory, read now (${notRunningNote(daemon)})`]);
      if (!preview) {
        io.print(fields(rows));
        return;
      }
      if (!preview.accepted) {
        rows.push(["store", `refused (${preview.code}): ${preview.reason}`]);
        io.print(fields(rows));
        return;
      }
      const local = await readLocalStore(ctx.config, preview);
      if (!local.ok) {
        rows.push(["store", local.reason]);
        io.print(fields(rows));
        return;
      }
      const l = local.status;
      rows.push(
        ["objects", `${l.objects} (${l.pinned} pinned)`],
        ["used", bytes(l.usedBytes)],
        ["quota", bytes(l.quotaBytes)],
        ["disk free", bytes(l.availableBytes)],
        ["reserve", `${bytes(l.reserveBytes)} kept free`],
        ["quarantined", plural(l.quarantined, "object")],
        ["last scrub", "unknown (only the running daemon knows)"],
      );
      if (l.interrupted > 0)
        rows.push(["interrupted", `${plural(l.interrupted, "ingest")} (settled at the store's next start)`]);
      if (l.tornBytes > 0)
        rows.push([
          "index",
          `${bytes(l.tornBytes)} torn off the end of index.log (a cut write; dropped at the next start)`,
        ]);
      if (l.lockedBy !== undefined)
        rows.push(["in use", `by process ${l.lockedBy}: these figures are from its last write to the index`]);
      io.print(fields(rows));
    },
  };
}
