// Which data disks there are: the filesystems `df` reports (parsed by node-disk-info), each resolved to its entry of
// /proc/self/mountinfo, with its numbers from statfs(2). df is asked because it is what the owner sees and trusts;
// it is not trusted for anything else:
// - node-disk-info splits df's lines on spaces, so "/media/pi/My Passport" comes back as "/media/pi/My". Rows it
//   parses losslessly (six fields) are matched by device and mount point; the others are matched by their raw
//   line: it starts with a mount's source and ends with its mount point (as GNU df spells it, control characters
//   as "?", or as BusyBox does, cut at a newline). A row that matches no mount is left out.
// - Identity (device numbers, kind, read-only) comes from mountinfo and sysfs (disks.ts), sizes from statfs: df's
//   1K-block figures are rounded, and 512-byte blocks when POSIXLY_CORRECT is set.
// - node-disk-info runs `df -P | awk` through a shell with execSync: the event loop stops until df returns (never,
//   under a hung NFS mount), its stderr lands on ours, and df's failure is hidden by awk's exit status. So we run
//   df ourselves (no shell, a timeout, stderr kept, `LC_ALL=C`) and hand its text to node-disk-info's parser.
// - When df is missing, fails or hangs, the listing comes from mountinfo alone, and says so once: a DiskDiscovery
//   that saw df fail does not ask it again.
// Only the Linux parser of node-disk-info is imported: its index pulls in iconv-lite for Windows.
import { execFile } from "node:child_process";
import { Linux } from "node-disk-info/dist/platforms/linux.js";
import { Utils } from "node-disk-info/dist/utils/utils.js";
import { HostPaths } from "../../board/host-paths.js";
import {
  describeMounts,
  listFilesystems,
  showPath,
  visibleFilesystems,
  withSpace,
  type Filesystem,
  type StatfsFn,
} from "./disks.js";
import { errorMessage } from "../util/errors.js";

/** Runs `df -kP` and resolves its standard output; rejects with a one-line reason when df is missing or fails. */
export type DfRunner = () => Promise<string>;

const DF_TIMEOUT_MS = 5_000;

/**
 * The real df: `argv` (default `df -kP`) run without a shell, found on `env.PATH`, in the C locale, killed after
 * `timeoutMs`. A non-zero exit counts as a failure even with output: the listing would miss what df could not read.
 */
export function dfRunner(
  env: Record<string, string | undefined> = process.env,
  argv: readonly string[] = ["df", "-kP"],
  timeoutMs = DF_TIMEOUT_MS,
): DfRunner {
  return () =>
    new Promise((resolve, reject) => {
      const [cmd, ...args] = argv as [string, ...string[]];
      const options = { env: { ...env, LC_ALL: "C" }, timeout: timeoutMs, killSignal: "SIGKILL" as const };
      execFile(cmd, args, { ...options, maxBuffer: 4 << 20, encoding: "utf8" }, (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: string | number };
        if (e.code === "ENOENT") return reject(new Error(`${cmd} not found`));
        if (e.killed) return reject(new Error(`${cmd} did not answer within ${timeoutMs / 1000} s`));
        const said = stderr
          .split("\n")
          .find((l) => l.trim() !== "")
          ?.trim();
        const how = typeof e.code === "number" ? `exited with ${e.code}` : "failed";
        reject(new Error(`${cmd} ${how}${said ? `: ${said}` : ""}`));
      });
    });
}

/** One data row of df as node-disk-info parsed it, with the raw line it came from. */
export interface DfRow {
  line: string;
  filesystem: string;
  mounted: string;
}

/**
 * df's output (header and all) through node-disk-info's Linux parser. The parser only runs a command and splits
 * its lines; its command runner is swapped for one returning `text` for the duration of the (synchronous) call,
 * so nothing else can observe the swap.
 */
export function parseDf(text: string): DfRow[] {
  const lines = text.split("\n");
  if (!/^Filesystem\s/.test(lines[0] ?? "")) {
    throw new Error(`df printed no table (${JSON.stringify(text.slice(0, 60))})`);
  }
  // What `df -P | awk 'NR > 1'` hands the parser: every line but the header.
  const body = lines.slice(1).join("\n");
  const run = Utils.execute;
  let drives;
  try {
    Utils.execute = () => Buffer.from(body);
    drives = Linux.run();
  } finally {
    Utils.execute = run;
  }
  // The parser keeps one drive per non-empty line, in order.
  const raw = lines.slice(1).filter((l) => l !== "");
  return drives.map((d, i) => ({ line: raw[i]!, filesystem: d.filesystem, mounted: d.mounted }));
}

/** How df may print a mount point: as is, with control characters as "?" (GNU), cut at a newline (BusyBox). */
function dfSpellings(mountPoint: string): string[] {
  return [...new Set([mountPoint, mountPoint.replace(/[\x00-\x1f\x7f]/g, "?"), mountPoint.split("\n")[0]!])];
}

/** The mount a df row names, among the visible mounts (the last listed wins: the one on top); undefined: none. */
export function matchDfRow(row: DfRow, mounts: readonly Filesystem[]): Filesystem | undefined {
  const topFirst = [...mounts].reverse();
  const lossless = row.line.trim().split(/ +/).length === 6;
  if (lossless) {
    const exact = topFirst.find((f) => f.source === row.filesystem && dfSpellings(f.mountPoint).includes(row.mounted));
    if (exact) return exact;
  }
  // Spaces in the source or the mount point: the longest mount point the line ends with, from that source.
  const line = row.line.trimEnd();
  const named = topFirst.filter(
    (f) => line.startsWith(`${f.source} `) && dfSpellings(f.mountPoint).some((s) => s !== "" && line.endsWith(` ${s}`)),
  );
  return named.reduce<Filesystem | undefined>(
    (best, f) => (!best || f.mountPoint.length > best.mountPoint.length ? f : best),
    undefined,
  );
}

export interface DiskListing {
  /** The filesystems, in mount-table order, with statfs's numbers (listFilesystems' selection and shape). */
  filesystems: Filesystem[];
  /** `df`: the filesystems df reported; `mountinfo`: the mount table alone (no df asked, or df failed). */
  source: "df" | "mountinfo";
  /** One line, on the listing where df failed: why, and that the mount table was used. */
  note?: string;
  /** df rows that match no mount (a line cut by a newline in a mount point), raw. */
  unmatched: string[];
}

export interface DiskDiscoveryOptions {
  paths?: HostPaths;
  statfs?: StatfsFn;
  /** Absent: the mount table alone (a fake host tree has no df of its own). */
  df?: DfRunner;
}

/** Lists the mounted filesystems through df, or the mount table once df has failed. */
export class DiskDiscovery {
  private readonly paths: HostPaths;
  private readonly statfs: StatfsFn | undefined;
  private readonly df: DfRunner | undefined;
  private dfFailed = false;

  constructor(options: DiskDiscoveryOptions = {}) {
    this.paths = options.paths ?? new HostPaths();
    this.statfs = options.statfs;
    this.df = options.df;
  }

  async list(): Promise<DiskListing> {
    const fromMountinfo = async (note?: string): Promise<DiskListing> => ({
      filesystems: await listFilesystems(this.paths, this.statfs),
      source: "mountinfo",
      ...(note ? { note } : {}),
      unmatched: [],
    });
    if (!this.df || this.dfFailed) return fromMountinfo();
    let rows: DfRow[];
    try {
      rows = parseDf(await this.df());
    } catch (err) {
      this.dfFailed = true;
      const why = errorMessage(err).split("\n")[0];
      return fromMountinfo(`df unavailable (${why}): listing the mount table instead`);
    }
    // df also lists pseudo filesystems (devtmpfs on /dev): matched against every mount, kept if listFilesystems would.
    const all = await describeMounts(this.paths);
    const shown = visibleFilesystems(all);
    const named = new Set<number>();
    const unmatched: string[] = [];
    for (const row of rows) {
      const fs = matchDfRow(row, all);
      if (fs) named.add(fs.mountId);
      else unmatched.push(row.line);
    }
    const picked = shown.filter((f) => named.has(f.mountId));
    return { filesystems: await Promise.all(picked.map((f) => withSpace(f, this.statfs))), source: "df", unmatched };
  }
}

/**
 * A discovery of `paths`' host: through df on the real host; under a fake host root (tests, the sim) the mount table
 * alone, as df would describe the real host, not the tree.
 */
export function hostDiskDiscovery(
  paths = new HostPaths(),
  env: Record<string, string | undefined> = process.env,
): DiskDiscovery {
  return new DiskDiscovery({ paths, ...(paths.root === "/" ? { df: dfRunner(env) } : {}) });
}

let shared: DiskDiscovery | undefined;

/**
 * The process's disk listing (the console's `disks`, asked again at each command): df is not asked again once
 * it failed, so its note comes once per process.
 */
export function discoverDisks(paths = new HostPaths()): Promise<DiskListing> {
  if (paths.root !== "/") return hostDiskDiscovery(paths).list();
  shared ??= hostDiskDiscovery(paths);
  return shared.list();
}

/** A disk that could hold the store, by its largest writable filesystem. */
export interface CandidateDisk {
  /** The whole disk's kernel name ("sda"), or the filesystem's device when sysfs does not say. */
  disk: string;
  filesystem: Filesystem;
}

/**
 * The disks `store.dataDir: "auto"` may choose from: writable USB-backed filesystems with a known size, not on
 * the disk that holds "/" (a Pi booted from a USB SSD has its /boot and any /data there), grouped by whole disk;
 * each disk is represented by its largest filesystem. Largest first.
 */
export function candidateDisks(filesystems: readonly Filesystem[]): CandidateDisk[] {
  const systemDisks = new Set(filesystems.filter((f) => f.kind === "root" && f.block).map((f) => f.block!.disk));
  const best = new Map<string, Filesystem>();
  for (const f of filesystems) {
    if (f.kind !== "usb" || f.readOnly || f.size === undefined) continue;
    const disk = f.block?.disk ?? f.device;
    if (systemDisks.has(disk)) continue;
    const seen = best.get(disk);
    if (!seen || f.size > seen.size!) best.set(disk, f);
  }
  return [...best]
    .map(([disk, filesystem]) => ({ disk, filesystem }))
    .sort((a, b) => b.filesystem.size! - a.filesystem.size!);
}

/** "/dev/sda1 on /mnt/usb (ext4, 500.1 GB)": disks are sold in decimal units. */
export function describeCandidate(fs: Filesystem): string {
  const gb = (fs.size ?? 0) / 1e9;
  const size = gb >= 1 ? `${gb.toFixed(1)} GB` : `${((fs.size ?? 0) / 1e6).toFixed(1)} MB`;
  return `${showPath(fs.device)} on ${showPath(fs.mountPoint)} (${fs.fstype}, ${size})`;
}
