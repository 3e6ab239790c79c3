// `sharenode disks`: the mounted filesystems as the agent sees them (agent/store/disk-discovery.ts), and the disk
// `store.dataDir: "auto"` would take at a first start. Reads only: nothing is mounted, created or adopted.
import { HostPaths } from "../../board/host-paths.js";
import { bytes, table } from "../console/format.js";
import { chooseAutoDisk } from "../store/auto-data-dir.js";
import { candidateDisks, hostDiskDiscovery, type DiskListing } from "../store/disk-discovery.js";
import { showPath } from "../store/disks.js";
import { CliError, parseCommandArgs, type CliIo, type Command } from "./io.js";
import { errorMessage } from "../util/errors.js";

const USAGE = `Usage: sharenode disks [--json]

List the mounted filesystems: df's list (read with node-disk-info), each matched to /proc/self/mountinfo for its
device and kind (root, system-flash, usb, other-block, virtual, other), with sizes from statfs(2). Pseudo
filesystems are left out. When df is missing or fails, the mount table alone is listed and a note on stderr says so.

"auto candidate" marks the disks store.dataDir "auto" may take: writable, USB-backed, not the system disk. The
last line says what "auto" would take at a first start: the one candidate disk (its largest filesystem), or none
when there are none or several. Once a disk is adopted, "auto" keeps it (the console's 'disks' shows it).

Options:
  --json       one JSON object: source ("df" or "mountinfo"), note, filesystems, auto
  -h, --help   show this help

Exit status: 0 listed (also when df was missing), 1 the mount table cannot be read, 2 usage error.
`;

export const disksCommand: Command = {
  summary: 'mounted filesystems, and the disk store.dataDir "auto" would take',
  usage: USAGE,
  run: runDisks,
};

async function runDisks(args: string[], io: CliIo): Promise<number> {
  const { values } = parseCommandArgs("disks", args, { json: { type: "boolean" } }, false);
  const paths = new HostPaths(io.env.SHARENODE_HOST_ROOT || "/");
  let listing: DiskListing;
  try {
    listing = await hostDiskDiscovery(paths, io.env).list();
  } catch (err) {
    throw new CliError(`disks: ${errorMessage(err)}`);
  }
  const auto = chooseAutoDisk(listing.filesystems);
  const candidates = new Set(candidateDisks(listing.filesystems).map((c) => c.filesystem.mountId));
  if (listing.note) io.stderr.write(`sharenode: note: ${listing.note}\n`);
  if (values.json) {
    const filesystems = listing.filesystems.map(({ block, ...f }) => ({
      ...f,
      disk: block?.disk ?? null,
      removable: block?.removable ?? null,
      autoCandidate: candidates.has(f.mountId),
    }));
    const out = { source: listing.source, note: listing.note ?? null, filesystems, auto };
    io.stdout.write(JSON.stringify(out, null, 2) + "\n");
    return 0;
  }
  io.stdout.write(
    table(
      ["mount point", "device", "type", "kind", "size", "avail", ""],
      listing.filesystems.map((f) => [
        showPath(f.mountPoint),
        showPath(f.device),
        f.fstype,
        f.kind,
        bytes(f.size),
        bytes(f.available),
        [f.readOnly ? "read-only" : "", candidates.has(f.mountId) ? "auto candidate" : ""].filter(Boolean).join(", "),
      ]),
    ),
  );
  io.stdout.write(`\nauto: ${auto.ok ? `${showPath(auto.dataDir)} (${auto.reason})` : `none: ${auto.reason}`}\n`);
  return 0;
}
