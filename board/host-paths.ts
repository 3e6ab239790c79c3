// The one owner of every /proc, /sys, /dev (and /etc, /run) path the agent reads. Everything resolves under `root`, so tests
// point a HostPaths at a fake tree in a temporary directory and the rest of the agent never spells a host path.
// Readers of kernel nodes answer `undefined` for a node that is missing or unreadable: sysfs differs between the
// 3.10 Amlogic kernels and current ones, and a missing attribute must never take the agent down.
import { readFileSync } from "node:fs";
import { access, readFile, realpath } from "node:fs/promises";
import { basename, dirname, join, relative, resolve, sep } from "node:path";

export class HostPaths {
  readonly root: string;

  constructor(root = "/") {
    this.root = resolve(root);
  }

  proc(...parts: string[]): string {
    return join(this.root, "proc", ...parts);
  }

  sys(...parts: string[]): string {
    return join(this.root, "sys", ...parts);
  }

  dev(...parts: string[]): string {
    return join(this.root, "dev", ...parts);
  }

  /** Host configuration the kernel does not own but the console reports (resolv.conf). */
  etc(...parts: string[]): string {
    return join(this.root, "etc", ...parts);
  }

  /** Runtime state other daemons publish (systemd-timesyncd's "synchronized" flag). */
  run(...parts: string[]): string {
    return join(this.root, "run", ...parts);
  }

  /** A path under the root as the host spells it: `<root>/sys/devices/x` -> `/sys/devices/x`. */
  toHost(path: string): string {
    const rel = relative(this.root, path);
    if (rel === "") return "/";
    if (rel.startsWith("..")) return path;
    return "/" + rel.split(sep).join("/");
  }
}

/**
 * Whether process `pid` is a zombie (exited, not yet reaped), from the state field of /proc/PID/stat (proc(5)): it
 * still answers kill(pid, 0), yet holds no file. An orphan whose new parent does not reap (a container's PID 1)
 * stays one. Synchronous: lock checks are. False when the file cannot be read (no /proc, or no such process).
 */
export function isZombie(pid: number, paths: HostPaths = new HostPaths()): boolean {
  try {
    const stat = readFileSync(paths.proc(String(pid), "stat"), "utf8");
    // "PID (COMM) STATE ...": COMM may hold spaces and parentheses, so the state follows the last ')'.
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) === "Z";
  } catch {
    return false;
  }
}

/** One line of /proc/self/mountinfo (proc(5)); paths are unescaped. */
export interface MountEntry {
  id: number;
  parentId: number;
  /** st_dev of the filesystem: for a block filesystem the device's numbers; 0:N for tmpfs, FUSE, NFS, btrfs. */
  major: number;
  minor: number;
  /** The directory of the filesystem mounted here: "/" unless this is a bind mount of a subdirectory. */
  root: string;
  mountPoint: string;
  /** Per-mount options ("rw", "nosuid", ...). */
  options: string[];
  /** Propagation tags ("shared:1", "master:2", ...). */
  optional: string[];
  /** "ext4", "vfat", "fuseblk", "fuse.sshfs", ... */
  fstype: string;
  /** "/dev/sda1", "/dev/root", "tmpfs", "nas:/export", ... */
  source: string;
  /** Per-superblock options. */
  superOptions: string[];
}

// The kernel escapes space, tab, newline and backslash as \ooo (seq_escape in fs/proc_namespace.c).
function unescapeOctal(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Parses the text of /proc/self/mountinfo; a malformed line throws naming its number. */
export function parseMountInfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.trim() === "") continue;
    const f = line.split(" ");
    const dash = f.indexOf("-", 6);
    const devNums = /^(\d+):(\d+)$/.exec(f[2] ?? "");
    if (f.length < 10 || dash < 0 || dash + 2 >= f.length || !devNums || !/^\d+$/.test(f[0]!) || !/^\d+$/.test(f[1]!)) {
      throw new Error(`mountinfo line ${i + 1} is malformed: ${JSON.stringify(line.slice(0, 120))}`);
    }
    entries.push({
      id: Number(f[0]),
      parentId: Number(f[1]),
      major: Number(devNums[1]),
      minor: Number(devNums[2]),
      root: unescapeOctal(f[3]!),
      mountPoint: unescapeOctal(f[4]!),
      options: f[5]!.split(",").map(unescapeOctal),
      optional: f.slice(6, dash),
      fstype: unescapeOctal(f[dash + 1]!),
      source: unescapeOctal(f[dash + 2]!),
      superOptions: (f[dash + 3] ?? "")
        .split(",")
        .filter((o) => o !== "")
        .map(unescapeOctal),
    });
  }
  return entries;
}

/**
 * The mount table of this process's namespace, from /proc/self/mountinfo (every kernel since 2.6.26, so every
 * board we run on). There is no fallback to /proc/mounts: it lacks the device numbers that tell "nothing is
 * mounted here" apart, and without a mount table no data-disk decision is safe, so a failure throws.
 */
export async function readMountInfo(paths: HostPaths): Promise<MountEntry[]> {
  const file = paths.proc("self", "mountinfo");
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new Error(`cannot read ${paths.toHost(file)}: ${errnoText(err)}`, { cause: err });
  }
  return parseMountInfo(text);
}

/** How a block device is attached, as far as sysfs and the kernel's device names tell. */
export type BlockBus =
  | "mmc" // eMMC or SD card (mmcblk*): the system flash of every board we target
  | "mtd" // raw NAND/NOR flash (mtdblock*, ubiblock*): system flash on older boxes
  | "usb" // anything behind a USB controller (its sysfs path contains "/usb")
  | "loop" // loop device (an image file)
  | "ram" // zram / ram disk: contents die with the power
  | "other"; // SATA, NVMe, virtio, SCSI, ...

/** A block device as sysfs describes it. */
export interface BlockDevice {
  /** Kernel name: "sda1", "mmcblk1p2". */
  name: string;
  /** The whole disk it belongs to: "sda", "mmcblk1" (its own name when it is not a partition). */
  disk: string;
  major: number;
  minor: number;
  /** Resolved sysfs device path as the host spells it: "/sys/devices/platform/.../block/sda/sda1". */
  sysPath: string;
  partition: boolean;
  /** /sys/block/<disk>/removable; undefined when the kernel does not say. */
  removable: boolean | undefined;
  bus: BlockBus;
}

/** Classifies a block device from its kernel name, major number and (when known) resolved sysfs path. */
export function blockBus(name: string, major: number | undefined, sysPath: string | undefined): BlockBus {
  if (/^(zram|ram)\d/.test(name)) return "ram";
  if (/^loop\d/.test(name)) return "loop";
  if (/^(mtdblock|ubiblock)\d/.test(name) || major === 31) return "mtd";
  // 179 is the MMC block major; Amlogic vendor kernels also name eMMC partitions ("/dev/system", "/dev/data").
  if (/^mmcblk\d/.test(name) || major === 179 || sysPath?.includes("/mmc_host/")) return "mmc";
  if (sysPath?.includes("/usb")) return "usb";
  return "other";
}

async function readSysText(file: string): Promise<string | undefined> {
  try {
    return (await readFile(file, "utf8")).trim();
  } catch {
    return undefined;
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await access(file);
    return true;
  } catch {
    return false;
  }
}

async function describeSysDevice(paths: HostPaths, link: string): Promise<BlockDevice | undefined> {
  let resolved: string;
  try {
    resolved = await realpath(link);
  } catch {
    return undefined;
  }
  const name = basename(resolved);
  const partition = await exists(join(resolved, "partition"));
  const diskDir = partition ? dirname(resolved) : resolved;
  const nums = /^(\d+):(\d+)$/.exec((await readSysText(join(resolved, "dev"))) ?? "");
  const removable = await readSysText(join(diskDir, "removable"));
  const sysPath = paths.toHost(resolved);
  const major = nums ? Number(nums[1]) : -1;
  return {
    name,
    disk: basename(diskDir),
    major,
    minor: nums ? Number(nums[2]) : -1,
    sysPath,
    partition,
    removable: removable === "1" ? true : removable === "0" ? false : undefined,
    bus: blockBus(name, nums ? major : undefined, sysPath),
  };
}

/** The block device with these numbers, through /sys/dev/block/MAJ:MIN; undefined when sysfs has none. */
export async function blockDeviceByNumber(
  paths: HostPaths,
  major: number,
  minor: number,
): Promise<BlockDevice | undefined> {
  const dev = await describeSysDevice(paths, paths.sys("dev", "block", `${major}:${minor}`));
  if (dev && dev.major < 0) {
    dev.major = major;
    dev.minor = minor;
    dev.bus = blockBus(dev.name, major, dev.sysPath);
  }
  return dev;
}

/** The block device of this kernel name ("sda1"), through /sys/class/block/<name>. */
export async function blockDeviceByName(paths: HostPaths, name: string): Promise<BlockDevice | undefined> {
  if (name === "" || name.includes("/") || name === "." || name === "..") return undefined;
  return describeSysDevice(paths, paths.sys("class", "block", name));
}

/**
 * The kernel name behind a /dev path from the mount table, following udev's symlinks
 * (/dev/disk/by-uuid/..., /dev/mapper/...): "/dev/disk/by-label/USB" -> "sda1". Undefined for non-/dev sources.
 */
export async function kernelNameOfDevPath(paths: HostPaths, source: string): Promise<string | undefined> {
  if (!source.startsWith("/dev/")) return undefined;
  const rest = source.slice("/dev/".length);
  try {
    return basename(await realpath(paths.dev(rest)));
  } catch {
    return basename(rest);
  }
}

/**
 * Something thrown, on one line, for board problem lines: a Node fs error as its errno part without the path and
 * the temporary root a test tree lives under, "ENOENT: no such file or directory" (Node appends ", open '<path>'",
 * which the caller names as the host spells it); anything else as the first line of its message. board/ imports
 * nothing from agent/, so this is board's copy of agent/util/errors.ts's errorLine. Never throws.
 */
export function errnoText(err: unknown): string {
  let message: string;
  let code: unknown;
  try {
    message = err instanceof Error ? String(err.message) : String(err);
    code = typeof err === "object" && err !== null ? (err as { code?: unknown }).code : undefined;
  } catch {
    return "an unreadable error";
  }
  const first = message.split("\n")[0]!.trim() || "no message";
  if (typeof code !== "string") return first;
  const head = first.split(", ")[0]!;
  return head.startsWith(code) ? head : `${code}: ${head}`;
}
