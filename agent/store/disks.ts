// Which filesystems are mounted, what each one is (system flash, USB disk, RAM), and whether a data directory may
// live on it. The failure this exists to prevent: the USB disk did not mount, its mount point is an empty
// directory on the eMMC/SD card, and the store fills the system flash. Discovery reads /proc/self/mountinfo and
// calls statfs(2); it spawns no `df` (mount points with spaces) and needs no native addon.
import { promises as fsp } from "node:fs";
import { dirname, resolve } from "node:path";
import {
  HostPaths,
  blockBus,
  blockDeviceByName,
  blockDeviceByNumber,
  kernelNameOfDevPath,
  readMountInfo,
  type BlockDevice,
  type MountEntry,
} from "../../board/host-paths.js";
import { errnoCode } from "../util/errors.js";

/**
 * - `root`: the filesystem holding "/" (and any other mount of the same device, e.g. a bind mount of it)
 * - `system-flash`: eMMC or SD card (mmcblk*, major 179), raw flash (mtdblock*, ubifs, jffs2)
 * - `usb`: a block device behind a USB controller
 * - `other-block`: any other block device (SATA, NVMe, virtio, loop images)
 * - `virtual`: lives in RAM (tmpfs, ramfs, zram) or is a kernel pseudo filesystem (proc, sysfs, ...)
 * - `other`: no local block device found: NFS, CIFS, sshfs, FUSE pools such as mergerfs
 */
export type DiskKind = "root" | "system-flash" | "usb" | "other-block" | "virtual" | "other";

export interface Filesystem {
  mountId: number;
  parentId: number;
  mountPoint: string;
  /** "/dev/<kernel name>" when the block device is known ("/dev/root" becomes "/dev/mmcblk0p2"), else the source. */
  device: string;
  /** The source field of the mount table, as mounted: "/dev/root", "tmpfs", "nas:/export". */
  source: string;
  fstype: string;
  /** st_dev of the filesystem (what stat(2) reports for every file in it). */
  major: number;
  minor: number;
  readOnly: boolean;
  kind: DiskKind;
  block: BlockDevice | undefined;
  /** Bytes from statfs(2); undefined when not asked for or when statfs failed (a hung NFS server, EACCES). */
  size: number | undefined;
  free: number | undefined;
  /** Free bytes an unprivileged writer may use (ext4 keeps 5 % for root). */
  available: number | undefined;
}

export type StatfsFn = (path: string) => Promise<{ bsize: number; blocks: number; bfree: number; bavail: number }>;

const defaultStatfs: StatfsFn = (path) => fsp.statfs(path);

/** Kernel pseudo filesystems: never storage, left out of listFilesystems. */
const PSEUDO_FS = new Set([
  "proc",
  "sysfs",
  "cgroup",
  "cgroup2",
  "devpts",
  "devtmpfs",
  "mqueue",
  "debugfs",
  "tracefs",
  "securityfs",
  "pstore",
  "bpf",
  "configfs",
  "fusectl",
  "hugetlbfs",
  "autofs",
  "binfmt_misc",
  "efivarfs",
  "selinuxfs",
  "rpc_pipefs",
  "nsfs",
  "nfsd",
  "rootfs",
  "fuse.lxcfs",
  "fuse.gvfsd-fuse",
  "fuse.portal",
]);
/** Filesystems whose contents live in RAM: listed, classified `virtual`. */
const RAM_FS = new Set(["tmpfs", "ramfs"]);
/** Filesystems that only exist on raw flash chips. */
const FLASH_FS = new Set(["ubifs", "jffs2", "yaffs", "yaffs2"]);

export type DiskRefusalCode =
  | "marker-missing"
  | "foreign-node"
  | "disk-replaced"
  | "bad-marker"
  | "system-disk"
  | "read-only"
  | "not-a-directory"
  | "no-data-disk"
  | "several-data-disks";

/** A data directory the store must not use; `message` is one line naming the directory and what to do. */
export class DiskError extends Error {
  constructor(
    readonly code: DiskRefusalCode,
    message: string,
  ) {
    super(message);
    this.name = "DiskError";
  }
}

export function isDiskError(err: unknown, code?: DiskRefusalCode): err is DiskError {
  return err instanceof DiskError && (code === undefined || err.code === code);
}

/** A path for a one-line message: control characters (a newline in a mount point) would break the line. */
export function showPath(path: string): string {
  return /[\x00-\x1f\x7f]/.test(path) ? JSON.stringify(path) : path;
}

/** Mounts covered by a later mount on the same mount point: the kernel lists both, only the top one is visible. */
function coveredIds(entries: readonly { mountId: number; parentId: number; mountPoint: string }[]): Set<number> {
  const byId = new Map(entries.map((e) => [e.mountId, e]));
  const covered = new Set<number>();
  for (const e of entries) {
    const parent = byId.get(e.parentId);
    if (parent && parent !== e && parent.mountPoint === e.mountPoint) covered.add(parent.mountId);
  }
  return covered;
}

async function blockOf(paths: HostPaths, e: MountEntry): Promise<BlockDevice | undefined> {
  if (e.major !== 0) {
    const byNumber = await blockDeviceByNumber(paths, e.major, e.minor);
    if (byNumber) return byNumber;
  }
  // FUSE (fuseblk: ntfs-3g, exfat-fuse) and btrfs report an anonymous 0:N; the source names the device.
  if (e.major !== 0 || e.source.startsWith("/dev/")) {
    const name = await kernelNameOfDevPath(paths, e.source);
    if (name) return blockDeviceByName(paths, name);
  }
  return undefined;
}

function kindOf(e: MountEntry, block: BlockDevice | undefined, isRoot: boolean): DiskKind {
  if (isRoot) return "root";
  if (PSEUDO_FS.has(e.fstype) || RAM_FS.has(e.fstype)) return "virtual";
  // A device number sysfs does not describe is still a block device; its name and major tell what it is.
  const bus =
    block?.bus ?? (e.major !== 0 ? blockBus(e.source.replace(/^\/dev\//, ""), e.major, undefined) : undefined);
  if (bus !== undefined) {
    switch (bus) {
      case "ram":
        return "virtual";
      case "mmc":
      case "mtd":
        return "system-flash";
      case "usb":
        return "usb";
      default:
        return "other-block";
    }
  }
  if (FLASH_FS.has(e.fstype)) return "system-flash";
  return "other";
}

/**
 * Every mount of the table, in its order, classified; no statfs. Includes what listFilesystems leaves out
 * (pseudo filesystems, covered mounts), so that a path is always matched to the filesystem really holding it.
 */
export async function describeMounts(paths: HostPaths, entries?: MountEntry[]): Promise<Filesystem[]> {
  const table = entries ?? (await readMountInfo(paths));
  const covered = coveredIds(table.map((e) => ({ mountId: e.id, parentId: e.parentId, mountPoint: e.mountPoint })));
  const rootEntry = table.filter((e) => e.mountPoint === "/" && !covered.has(e.id)).at(-1);
  const blocks = new Map<string, Promise<BlockDevice | undefined>>();
  const result: Filesystem[] = [];
  for (const e of table) {
    const key = e.major !== 0 ? `${e.major}:${e.minor}` : `source ${e.source}`;
    let block = blocks.get(key);
    if (!block) blocks.set(key, (block = blockOf(paths, e)));
    const dev = await block;
    const isRoot = rootEntry !== undefined && e.major === rootEntry.major && e.minor === rootEntry.minor;
    result.push({
      mountId: e.id,
      parentId: e.parentId,
      mountPoint: e.mountPoint,
      device: dev ? `/dev/${dev.name}` : e.source,
      source: e.source,
      fstype: e.fstype,
      major: e.major,
      minor: e.minor,
      readOnly: e.options.includes("ro") || e.superOptions.includes("ro"),
      kind: kindOf(e, dev, isRoot),
      block: dev,
      size: undefined,
      free: undefined,
      available: undefined,
    });
  }
  return result;
}

/** `fs` with its size, free and available bytes from statfs(2) at `at`; unchanged when statfs fails. */
export async function withSpace(
  fs: Filesystem,
  statfs: StatfsFn = defaultStatfs,
  at = fs.mountPoint,
): Promise<Filesystem> {
  try {
    const s = await statfs(at);
    return { ...fs, size: s.blocks * s.bsize, free: s.bfree * s.bsize, available: s.bavail * s.bsize };
  } catch {
    return fs;
  }
}

/**
 * The mounted filesystems worth showing: kernel pseudo filesystems (proc, sysfs, cgroup, devpts, devtmpfs, ...),
 * overlay mounts other than "/" (container layers whose data lives on another listed filesystem) and mounts
 * covered by another on the same mount point are left out; tmpfs and ramfs stay, classified `virtual`.
 */
export async function listFilesystems(
  paths = new HostPaths(),
  statfs: StatfsFn = defaultStatfs,
): Promise<Filesystem[]> {
  return Promise.all(visibleFilesystems(await describeMounts(paths)).map((f) => withSpace(f, statfs)));
}

/** listFilesystems' selection of describeMounts' list, without statfs. */
export function visibleFilesystems(all: readonly Filesystem[]): Filesystem[] {
  const covered = coveredIds(all);
  return all.filter(
    (f) => !covered.has(f.mountId) && !PSEUDO_FS.has(f.fstype) && !(f.fstype === "overlay" && f.kind !== "root"),
  );
}

function contains(mountPoint: string, path: string): boolean {
  return mountPoint === "/" || path === mountPoint || path.startsWith(mountPoint + "/");
}

/**
 * The filesystem holding `realPath` (already resolved by realpath(3)) whose files have device numbers `dev`.
 * Among the mounts whose mount point is a prefix of the path, the longest one with the same device numbers wins
 * (the last listed on a tie: the one on top). The device comparison is what catches a mount point that is in
 * the table but hidden by a later mount above it. When no mount has the device numbers (a btrfs subvolume has
 * its own), the longest prefix wins.
 */
export function pickMount(
  filesystems: readonly Filesystem[],
  realPath: string,
  dev: { major: number; minor: number },
): Filesystem | undefined {
  const covered = coveredIds(filesystems);
  const candidates = filesystems.filter((f) => !covered.has(f.mountId) && contains(f.mountPoint, realPath));
  const longest = (list: Filesystem[]) =>
    list.reduce<Filesystem | undefined>(
      (best, f) => (!best || f.mountPoint.length >= best.mountPoint.length ? f : best),
      undefined,
    );
  return longest(candidates.filter((f) => f.major === dev.major && f.minor === dev.minor)) ?? longest(candidates);
}

// glibc's gnu_dev_major/minor; libuv builds st_dev with makedev() from statx's major and minor.
function splitDev(dev: bigint): { major: number; minor: number } {
  return {
    major: Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn)),
    minor: Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn)),
  };
}

/** Where a directory that may not exist yet would live: its nearest existing ancestor, and that one's filesystem. */
export interface DirLocation {
  /** The path asked about, made absolute. */
  path: string;
  /** Its nearest existing ancestor (the path itself when it exists), resolved by realpath. */
  existing: string;
  exists: boolean;
  /** Whether `existing` is a directory (so `path` is or can become one). */
  isDirectory: boolean;
  filesystem: Filesystem;
}

export async function locateDir(
  path: string,
  paths = new HostPaths(),
  statfs: StatfsFn = defaultStatfs,
): Promise<DirLocation> {
  const abs = resolve(path);
  let probe = abs;
  for (;;) {
    try {
      const st = await fsp.stat(probe, { bigint: true });
      const existing = await fsp.realpath(probe);
      const mounts = await describeMounts(paths);
      const found = pickMount(mounts, existing, splitDev(st.dev));
      if (!found) throw new Error(`no mounted filesystem holds ${showPath(existing)} (is /proc mounted?)`);
      return {
        path: abs,
        existing,
        exists: probe === abs,
        isDirectory: st.isDirectory(),
        filesystem: await withSpace(found, statfs, existing),
      };
    } catch (err) {
      const code = errnoCode(err);
      if ((code !== "ENOENT" && code !== "ENOTDIR") || dirname(probe) === probe) throw err;
      probe = dirname(probe);
    }
  }
}

/**
 * The mounted filesystem that holds `path` (for a path that does not exist yet: the one it would be created
 * on), by realpath and the device numbers stat(2) reports, with its space from statfs.
 */
export async function filesystemOf(
  path: string,
  paths = new HostPaths(),
  statfs: StatfsFn = defaultStatfs,
): Promise<Filesystem> {
  return (await locateDir(path, paths, statfs)).filesystem;
}

/** Where a directory is, for one-line messages: "the root filesystem (/dev/mmcblk0p2)", "/dev/sda1 on /mnt/usb". */
export function whereIs(fs: Filesystem): string {
  switch (fs.kind) {
    case "root":
      return `the root filesystem (${showPath(fs.device)})`;
    case "system-flash":
      return `the system flash (${showPath(fs.device)} on ${showPath(fs.mountPoint)})`;
    case "virtual":
      return `${showPath(fs.device)} on ${showPath(fs.mountPoint)}, which lives in RAM and is lost at power-off`;
    default:
      return `${showPath(fs.device)} on ${showPath(fs.mountPoint)}`;
  }
}

/**
 * Why `fs` must not hold the data directory, or undefined when it may: the root filesystem, system flash and
 * RAM are refused unless `allowSystemDisk`; a read-only filesystem always is.
 */
export function refuseDataDisk(fs: Filesystem, dataDir: string, allowSystemDisk = false): DiskError | undefined {
  const dir = showPath(dataDir);
  if (!allowSystemDisk && (fs.kind === "root" || fs.kind === "system-flash" || fs.kind === "virtual")) {
    return new DiskError(
      "system-disk",
      `data directory ${dir} is on ${whereIs(fs)}, not on a data disk; ` +
        `is the USB disk mounted? set store.allowSystemDisk to store there anyway`,
    );
  }
  if (fs.readOnly) {
    return new DiskError(
      "read-only",
      `data directory ${dir} is on a read-only filesystem (${showPath(fs.device)} on ${showPath(fs.mountPoint)}); ` +
        `remount it read-write (a disk with errors is often remounted read-only: see dmesg)`,
    );
  }
  return undefined;
}

/**
 * The filesystem to keep the store's data on: the one holding `dataDir`, unless it is refused (DiskError:
 * `not-a-directory`, `system-disk`, `read-only`). Does not create the directory.
 */
export async function chooseDataDisk(
  config: { dataDir: string; allowSystemDisk?: boolean },
  paths = new HostPaths(),
  statfs: StatfsFn = defaultStatfs,
): Promise<Filesystem> {
  const loc = await locateDir(config.dataDir, paths, statfs);
  const notDir = notADirectory(loc);
  if (notDir) throw notDir;
  const refusal = refuseDataDisk(loc.filesystem, loc.path, config.allowSystemDisk);
  if (refusal) throw refusal;
  return loc.filesystem;
}

export function notADirectory(loc: DirLocation): DiskError | undefined {
  if (loc.isDirectory) return undefined;
  return new DiskError(
    "not-a-directory",
    loc.exists
      ? `data directory ${showPath(loc.path)} is not a directory`
      : `data directory ${showPath(loc.path)} cannot be created: ${showPath(loc.existing)} is not a directory`,
  );
}
