// `disks`: every mounted filesystem with its class, size and free space, the one holding the data directory, and
// whether the store accepts it. Discovery is here alone, so a change of how disks are found stays in this file.
import { discoverDisks } from "../../store/disk-discovery.js";
import { showPath } from "../../store/disks.js";
import type { ConsoleCommand } from "../command-api.js";
import type { ConsoleContext } from "../context.js";
import { bytes, fields, table } from "../format.js";
import { filesystemLine, noArgs } from "./common.js";
import { errorLine } from "../../util/errors.js";

export function disksCommand(ctx: ConsoleContext): ConsoleCommand {
  return {
    name: "disks",
    args: "",
    summary: "mounted filesystems, which one holds the data directory, and whether the store accepts it",
    async run(args, io) {
      noArgs("disks", args);
      const identity = await ctx.identity();
      const preview = await ctx.preview(identity);
      let list;
      try {
        const listing = await discoverDisks(ctx.hostPaths);
        if (listing.note) io.print(`note: ${listing.note}\n`);
        list = listing.filesystems;
      } catch (err) {
        io.print(`cannot list the filesystems: ${errorLine(err)}\n`);
        list = undefined;
      }
      if (list) {
        const dataMount = preview?.filesystem?.mountId;
        io.print(
          table(
            ["", "mount point", "device", "type", "kind", "size", "avail", ""],
            list.map((f) => [
              f.mountId === dataMount ? "*" : "",
              showPath(f.mountPoint),
              showPath(f.device),
              f.fstype,
              f.kind,
              bytes(f.size),
              bytes(f.available),
              f.readOnly ? "read-only" : "",
            ]),
          ),
        );
        io.print("\n");
      }
      if (!preview) {
        io.print("data dir  not configured (store.dataDir)\n");
        return;
      }
      const verdict = preview.accepted ? `accepted: ${preview.reason}` : `refused (${preview.code}): ${preview.reason}`;
      io.print(
        fields([
          ["data dir", `${filesystemLine(preview)}${list ? "  (* above)" : ""}`],
          ["store", verdict],
        ]),
      );
    },
  };
}
