// Disk discovery and the data-disk guard. Two halves: mountinfo fixtures of the boards we target under a fake
// /proc + /sys + /dev tree (parsing, classification, refusal messages), and real filesystems mounted by the test
// (a loop-mounted ext4 image and tmpfs; needs root, as CI is) read through the real HostPaths("/"): the USB disk
// that is not mounted, read-only remounts, another node's disk, tmpfs.
import { execFileSync } from "node:child_process";
import { existsSync, promises as fsp } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HostPaths, blockDeviceByName, blockDeviceByNumber, parseMountInfo, readMountInfo } from "../board/host-paths";
import { ADOPTION_STATE_NAME, MARKER_NAME, checkDataDisk, type DiskMarker } from "../agent/store/disk-marker";
import {
  DiskError,
  chooseDataDisk,
  describeMounts,
  filesystemOf,
  isDiskError,
  listFilesystems,
  pickMount,
  refuseDataDisk,
  type Filesystem,
  type StatfsFn,
} from "../agent/store/disks";
import { errorMessage } from "../agent/util/errors";

const FIXTURES = new URL("fixtures/mountinfo/", import.meta.url).pathname;
const fixture = (name: string) => fsp.readFile(join(FIXTURES, name), "utf8");

// ---------------------------------------------------------------------------------------------------------------
// Fake host trees

/** A block device of a fake /sys: its resolved path under /sys (".../block/<disk>[/<part>]") and numbers. */
interface FakeDev {
  dev: string;
  path: string;
  removable?: "0" | "1";
}

const MESON8B_EMMC = "devices/platform/soc/c1108c00.mmc/mmc_host/mmc1/mmc1:0001/block/mmcblk1";
const MESON8B_USB_SDA = "devices/platform/soc/c9040000.usb/usb1/1-1/1-1:1.0/host0/target0:0:0/0:0:0:0/block/sda";
const ONECLOUD_DEVS: FakeDev[] = [
  { dev: "179:8", path: MESON8B_EMMC, removable: "0" },
  { dev: "179:9", path: `${MESON8B_EMMC}/mmcblk1p1` },
  { dev: "179:10", path: `${MESON8B_EMMC}/mmcblk1p2` },
  { dev: "254:1", path: "devices/virtual/block/zram1", removable: "0" },
  { dev: "8:0", path: MESON8B_USB_SDA, removable: "0" },
  { dev: "8:1", path: `${MESON8B_USB_SDA}/sda1` },
];

const RPI4_SD = "devices/platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0";
// The Pi 4's USB ports hang off a PCIe xHCI controller (VL805): the path still has a "/usb" component.
const RPI4_USB_SDA =
  "devices/platform/scb/fd500000.pcie/pci0000:00/0000:00:00.0/0000:01:00.0/usb2/2-1/2-1:1.0/host0/target0:0:0/0:0:0:0/block/sda";
const RPI_DEVS: FakeDev[] = [
  { dev: "179:0", path: RPI4_SD, removable: "0" },
  { dev: "179:1", path: `${RPI4_SD}/mmcblk0p1` },
  { dev: "179:2", path: `${RPI4_SD}/mmcblk0p2` },
  { dev: "8:0", path: RPI4_USB_SDA, removable: "0" },
  { dev: "8:1", path: `${RPI4_USB_SDA}/sda1` },
];

const PC_NVME = "devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1";
const PC_SATA_SDA = "devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda";
const PC_USB_SDB = "devices/pci0000:00/0000:00:14.0/usb2/2-3/2-3:1.0/host6/target6:0:0/6:0:0:0/block/sdb";
const PC_DEVS: FakeDev[] = [
  { dev: "259:0", path: PC_NVME, removable: "0" },
  { dev: "259:1", path: `${PC_NVME}/nvme0n1p1` },
  { dev: "259:2", path: `${PC_NVME}/nvme0n1p2` },
  { dev: "8:0", path: PC_SATA_SDA, removable: "0" },
  { dev: "8:2", path: `${PC_SATA_SDA}/sda2` },
  { dev: "8:16", path: PC_USB_SDB, removable: "1" },
  { dev: "8:17", path: `${PC_USB_SDB}/sdb1` },
  { dev: "7:0", path: "devices/virtual/block/loop0", removable: "0" },
];

const ESCAPED_USB = "devices/platform/soc/3f980000.usb/usb1/1-1/1-1.2/1-1.2:1.0/host0/target0:0:0/0:0:0:0/block";
const ESCAPED_DEVS: FakeDev[] = [
  { dev: "179:0", path: "devices/platform/soc/3f202000.mmc/mmc_host/mmc0/mmc0:0001/block/mmcblk0", removable: "0" },
  { dev: "179:2", path: "devices/platform/soc/3f202000.mmc/mmc_host/mmc0/mmc0:0001/block/mmcblk0/mmcblk0p2" },
  { dev: "8:0", path: `${ESCAPED_USB}/sda`, removable: "1" },
  ...[1, 2, 3, 4].map((n) => ({ dev: `8:${n}`, path: `${ESCAPED_USB}/sda/sda${n}` })),
  { dev: "8:32", path: `${ESCAPED_USB.replace("1-1.2", "1-1.3")}/sdc`, removable: "0" },
  { dev: "8:33", path: `${ESCAPED_USB.replace("1-1.2", "1-1.3")}/sdc/sdc1` },
];

const scratch: string[] = [];
afterAll(async () => {
  for (const dir of scratch) await fsp.rm(dir, { recursive: true, force: true });
});

/**
 * A fake host root: /proc/self/mountinfo from the fixture, and for every device a /sys/devices directory with
 * its `dev` (and `partition`, `removable`) attributes and the /sys/dev/block and /sys/class/block links the
 * kernel makes; `devLinks` adds udev-style /dev symlinks ("disk/by-label/X" -> "../../sdc1").
 */
async function fakeHost(mountinfo: string, devs: FakeDev[], devLinks: Record<string, string> = {}): Promise<HostPaths> {
  const root = await fsp.mkdtemp(join(tmpdir(), "sharenode-fakehost-"));
  scratch.push(root);
  await fsp.mkdir(join(root, "proc/self"), { recursive: true });
  await fsp.writeFile(join(root, "proc/self/mountinfo"), mountinfo);
  for (const d of devs) {
    const dir = join(root, "sys", d.path);
    await fsp.mkdir(dir, { recursive: true });
    await fsp.writeFile(join(dir, "dev"), `${d.dev}\n`);
    const name = d.path.split("/").at(-1)!;
    const isPartition = devs.some((whole) => whole.path === dirname(d.path));
    if (isPartition) await fsp.writeFile(join(dir, "partition"), `${/(\d+)$/.exec(name)![1]}\n`);
    if (d.removable) await fsp.writeFile(join(dir, "removable"), `${d.removable}\n`);
    for (const linkDir of ["sys/dev/block", "sys/class/block"]) {
      await fsp.mkdir(join(root, linkDir), { recursive: true });
      const link = join(root, linkDir, linkDir === "sys/dev/block" ? d.dev : name);
      await fsp.symlink(`../../${d.path}`, link);
    }
    await fsp.mkdir(join(root, "dev"), { recursive: true });
    await fsp.writeFile(join(root, "dev", name), "");
  }
  for (const [link, target] of Object.entries(devLinks)) {
    await fsp.mkdir(dirname(join(root, "dev", link)), { recursive: true });
    await fsp.symlink(target, join(root, "dev", link));
  }
  return new HostPaths(root);
}

/** statfs of the fake host: every filesystem has 1000 blocks of 4 KiB, 500 free, 400 available to users. */
const fakeStatfs: StatfsFn = async () => ({ bsize: 4096, blocks: 1000, bfree: 500, bavail: 400 });

function byMountPoint(list: Filesystem[]): Map<string, Filesystem> {
  return new Map(list.map((f) => [f.mountPoint, f]));
}

function kinds(list: Filesystem[]): Record<string, string> {
  return Object.fromEntries(list.map((f) => [f.mountPoint, `${f.kind} ${f.device} ${f.fstype}`]));
}

// ---------------------------------------------------------------------------------------------------------------

describe("HostPaths", () => {
  it("resolves /proc, /sys and /dev under its root and spells paths back as the host does", () => {
    const host = new HostPaths();
    expect(host.proc("self", "mountinfo")).toBe("/proc/self/mountinfo");
    expect(host.sys("dev/block", "8:1")).toBe("/sys/dev/block/8:1");
    expect(host.dev("sda1")).toBe("/dev/sda1");
    const fake = new HostPaths("/tmp/fake/");
    expect(fake.proc("self/mountinfo")).toBe("/tmp/fake/proc/self/mountinfo");
    expect(fake.sys("block", "sda", "removable")).toBe("/tmp/fake/sys/block/sda/removable");
    expect(fake.dev("disk", "by-uuid", "x")).toBe("/tmp/fake/dev/disk/by-uuid/x");
    expect(fake.toHost("/tmp/fake/sys/devices/x")).toBe("/sys/devices/x");
    expect(fake.toHost("/tmp/fake")).toBe("/");
  });

  it("missing or unreadable sysfs nodes give undefined, and a missing mountinfo a one-line error", async () => {
    const empty = await fakeHost("", []);
    expect(await blockDeviceByNumber(empty, 8, 1)).toBeUndefined();
    expect(await blockDeviceByName(empty, "sda1")).toBeUndefined();
    expect(await blockDeviceByName(empty, "../../etc")).toBeUndefined();
    await fsp.rm(empty.proc("self/mountinfo"));
    await expect(readMountInfo(empty)).rejects.toThrow(/^cannot read \/proc\/self\/mountinfo: ENOENT/);
  });

  it("describes a block device from /sys/dev/block: name, disk, partition, removable, bus", async () => {
    const host = await fakeHost("", [...PC_DEVS]);
    expect(await blockDeviceByNumber(host, 8, 17)).toEqual({
      name: "sdb1",
      disk: "sdb",
      major: 8,
      minor: 17,
      sysPath: `/sys/${PC_USB_SDB}/sdb1`,
      partition: true,
      removable: true,
      bus: "usb",
    });
    expect(await blockDeviceByNumber(host, 259, 2)).toMatchObject({
      name: "nvme0n1p2",
      disk: "nvme0n1",
      removable: false,
      bus: "other",
    });
    expect(await blockDeviceByNumber(host, 259, 0)).toMatchObject({
      name: "nvme0n1",
      disk: "nvme0n1",
      partition: false,
    });
    expect(await blockDeviceByName(host, "loop0")).toMatchObject({ major: 7, minor: 0, bus: "loop" });
  });
});

describe("parseMountInfo", () => {
  it("reads every field of a OneThing Cloud table", async () => {
    const entries = parseMountInfo(await fixture("onecloud-ext4.txt"));
    expect(entries).toHaveLength(22);
    expect(entries[0]).toEqual({
      id: 21,
      parentId: 1,
      major: 179,
      minor: 10,
      root: "/",
      mountPoint: "/",
      options: ["rw", "noatime"],
      optional: ["shared:1"],
      fstype: "ext4",
      source: "/dev/mmcblk1p2",
      superOptions: ["rw", "commit=600", "errors=remount-ro"],
    });
    // A bind mount of a subdirectory: root is the directory inside the filesystem.
    expect(entries.find((e) => e.mountPoint === "/var/log.hdd")).toMatchObject({
      root: "/var/log",
      major: 179,
      minor: 10,
    });
    // No optional fields at all (a mount made in a private namespace).
    const pc = parseMountInfo(await fixture("pc.txt"));
    expect(pc.find((e) => e.fstype === "overlay")).toMatchObject({ optional: [], source: "overlay" });
  });

  it("unescapes \\040 \\011 \\012 \\134 in mount points and sources", async () => {
    const entries = parseMountInfo(await fixture("escaped.txt"));
    expect(entries.map((e) => e.mountPoint)).toEqual([
      "/",
      "/media/pi/My Passport",
      "/mnt/tab\there",
      "/mnt/new\nline",
      "/mnt/back\\slash",
      "/mnt/ntfs disk",
    ]);
    expect(entries.at(-1)!.source).toBe("/dev/disk/by-label/Win Data");
  });

  it("refuses a malformed line, naming it", () => {
    expect(() => parseMountInfo("21 1 179:10 / / rw shared:1 - ext4 /dev/mmcblk1p2 rw\n22 21 0:6 / /dev rw\n")).toThrow(
      /^mountinfo line 2 is malformed: "22 21 0:6/,
    );
    expect(() => parseMountInfo("21 1 179-10 / / rw - ext4 /dev/x rw")).toThrow(/line 1/);
    expect(parseMountInfo("\n\n")).toEqual([]);
  });
});

describe("classification on the boards' mount tables", () => {
  it("OneThing Cloud (Armbian): root and /boot on eMMC, zram /var/log, tmpfs, the USB disk; pseudo filesystems left out", async () => {
    const host = await fakeHost(await fixture("onecloud-ext4.txt"), ONECLOUD_DEVS);
    const list = await listFilesystems(host, fakeStatfs);
    expect(kinds(list)).toEqual({
      "/": "root /dev/mmcblk1p2 ext4",
      "/dev/shm": "virtual tmpfs tmpfs",
      "/run": "virtual tmpfs tmpfs",
      "/run/lock": "virtual tmpfs tmpfs",
      "/tmp": "virtual tmpfs tmpfs",
      "/boot": "system-flash /dev/mmcblk1p1 ext4",
      "/var/log": "virtual /dev/zram1 ext4",
      // Armbian's bind mount of the eMMC's /var/log: same device as "/", so it is the root filesystem.
      "/var/log.hdd": "root /dev/mmcblk1p2 ext4",
      "/run/user/0": "virtual tmpfs tmpfs",
      "/mnt/usb": "usb /dev/sda1 ext4",
    });
    const usb = byMountPoint(list).get("/mnt/usb")!;
    expect(usb).toMatchObject({
      major: 8,
      minor: 1,
      readOnly: false,
      size: 4096_000,
      free: 2048_000,
      available: 1638_400,
    });
    expect(usb.block).toMatchObject({ name: "sda1", disk: "sda", bus: "usb", removable: false, partition: true });
    expect(byMountPoint(list).get("/")!.block).toMatchObject({ bus: "mmc", disk: "mmcblk1" });
  });

  it.each([
    ["onecloud-vfat.txt", "vfat", 8],
    ["onecloud-exfat.txt", "exfat", 8],
    // exfat-fuse reports an anonymous 0:N device; the source names the USB partition.
    ["onecloud-exfat-fuse.txt", "fuseblk", 0],
  ])("OneThing Cloud with the USB disk as %s", async (file, fstype, major) => {
    const host = await fakeHost(await fixture(file), ONECLOUD_DEVS);
    const usb = byMountPoint(await listFilesystems(host, fakeStatfs)).get("/mnt/usb")!;
    expect(usb).toMatchObject({ kind: "usb", device: "/dev/sda1", source: "/dev/sda1", fstype, major });
    expect(usb.block?.name).toBe("sda1");
  });

  it("Raspberry Pi: /dev/root resolved to the SD card partition through its device numbers; USB behind PCIe", async () => {
    const host = await fakeHost(await fixture("rpi.txt"), RPI_DEVS);
    const list = await listFilesystems(host, fakeStatfs);
    const fs = byMountPoint(list);
    expect(fs.get("/")).toMatchObject({ kind: "root", device: "/dev/mmcblk0p2", source: "/dev/root", fstype: "ext4" });
    expect(fs.get("/boot")).toMatchObject({ kind: "system-flash", device: "/dev/mmcblk0p1", fstype: "vfat" });
    expect(fs.get("/mnt/usb")).toMatchObject({ kind: "usb", device: "/dev/sda1" });
    expect(list.every((f) => f.fstype !== "autofs" && f.fstype !== "binfmt_misc" && f.fstype !== "fusectl")).toBe(true);
    // binfmt_misc is mounted over the autofs trigger at the same mount point: the table has both.
    const all = await describeMounts(host);
    expect(all.filter((f) => f.mountPoint === "/proc/sys/fs/binfmt_misc")).toHaveLength(2);
  });

  it("generic PC: NVMe root, SATA btrfs by its source, NFS, snap loop, docker overlay, USB stick", async () => {
    const host = await fakeHost(await fixture("pc.txt"), PC_DEVS);
    const list = await listFilesystems(host, fakeStatfs);
    expect(kinds(list)).toEqual({
      "/run": "virtual tmpfs tmpfs",
      "/": "root /dev/nvme0n1p2 ext4",
      "/dev/shm": "virtual tmpfs tmpfs",
      "/snap/core22/1380": "other-block /dev/loop0 squashfs",
      "/boot/efi": "other-block /dev/nvme0n1p1 vfat",
      "/home": "other-block /dev/sda2 btrfs",
      "/srv/nas": "other nas.lan:/export/media nfs4",
      "/run/user/1000": "virtual tmpfs tmpfs",
      "/media/alice/STICK": "usb /dev/sdb1 vfat",
    });
    const fs = byMountPoint(list);
    expect(fs.get("/snap/core22/1380")!.readOnly).toBe(true);
    expect(fs.get("/media/alice/STICK")!.block?.removable).toBe(true);
  });

  it("escaped mount points; a FUSE source given as a udev by-label link", async () => {
    const host = await fakeHost(await fixture("escaped.txt"), ESCAPED_DEVS, { "disk/by-label/Win Data": "../../sdc1" });
    expect(kinds(await listFilesystems(host, fakeStatfs))).toEqual({
      "/": "root /dev/mmcblk0p2 ext4",
      "/media/pi/My Passport": "usb /dev/sda1 exfat",
      "/mnt/tab\there": "usb /dev/sda2 ext4",
      "/mnt/new\nline": "usb /dev/sda3 ext4",
      "/mnt/back\\slash": "usb /dev/sda4 ext4",
      "/mnt/ntfs disk": "usb /dev/sdc1 fuseblk",
    });
  });

  it("without /sys, device names and numbers still tell the system flash and RAM apart; nothing crashes", async () => {
    const host = await fakeHost(await fixture("onecloud-ext4.txt"), []);
    const fs = byMountPoint(await listFilesystems(host, fakeStatfs));
    expect(fs.get("/")).toMatchObject({ kind: "root", device: "/dev/mmcblk1p2", block: undefined });
    expect(fs.get("/boot")!.kind).toBe("system-flash");
    expect(fs.get("/var/log")!.kind).toBe("virtual");
    // USB cannot be told from SATA without sysfs: an unknown block device is still a data disk.
    expect(fs.get("/mnt/usb")!.kind).toBe("other-block");
  });

  it("a failing statfs leaves the sizes undefined instead of failing the listing", async () => {
    const host = await fakeHost(await fixture("rpi.txt"), RPI_DEVS);
    const list = await listFilesystems(host, async (p) => {
      if (p === "/mnt/usb") throw Object.assign(new Error("EIO"), { code: "EIO" });
      return fakeStatfs(p);
    });
    expect(byMountPoint(list).get("/mnt/usb")).toMatchObject({
      size: undefined,
      free: undefined,
      available: undefined,
    });
    expect(byMountPoint(list).get("/")!.size).toBe(4096_000);
  });
});

describe("pickMount", () => {
  it("an empty mount point (USB disk not mounted) belongs to the root filesystem", async () => {
    const host = await fakeHost(await fixture("onecloud-unmounted.txt"), ONECLOUD_DEVS);
    const all = await describeMounts(host);
    expect(pickMount(all, "/mnt/usb/sharenode", { major: 179, minor: 10 })).toMatchObject({
      mountPoint: "/",
      kind: "root",
    });
    const mounted = await describeMounts(await fakeHost(await fixture("onecloud-ext4.txt"), ONECLOUD_DEVS));
    expect(pickMount(mounted, "/mnt/usb/sharenode", { major: 8, minor: 1 })).toMatchObject({
      mountPoint: "/mnt/usb",
      kind: "usb",
    });
    expect(pickMount(mounted, "/mnt/usbx", { major: 179, minor: 10 })!.mountPoint).toBe("/");
  });

  it("the device numbers win over a longer mount point hidden by a later mount above it", async () => {
    const text = (await fixture("onecloud-ext4.txt")) + "43 21 8:2 / /mnt rw,relatime shared:301 - ext4 /dev/sda2 rw\n";
    const all = await describeMounts(await fakeHost(text, ONECLOUD_DEVS));
    expect(pickMount(all, "/mnt/usb/sharenode", { major: 8, minor: 2 })!.mountPoint).toBe("/mnt");
    // No mount has the numbers (a btrfs subvolume): the longest prefix.
    expect(pickMount(all, "/mnt/usb/sharenode", { major: 0, minor: 99 })!.mountPoint).toBe("/mnt/usb");
  });

  it("of two mounts on one mount point, the one on top", () => {
    const all: Filesystem[] = parseMountInfo(
      "1 0 179:2 / / rw - ext4 /dev/mmcblk0p2 rw\n5 1 8:1 / /mnt/usb rw - ext4 /dev/sda1 rw\n6 5 8:17 / /mnt/usb rw - ext4 /dev/sdb1 rw\n",
    ).map((e) => ({
      mountId: e.id,
      parentId: e.parentId,
      mountPoint: e.mountPoint,
      device: e.source,
      source: e.source,
      fstype: e.fstype,
      major: e.major,
      minor: e.minor,
      readOnly: false,
      kind: "usb",
      block: undefined,
      size: undefined,
      free: undefined,
      available: undefined,
    }));
    expect(pickMount(all, "/mnt/usb/x", { major: 0, minor: 1 })!.device).toBe("/dev/sdb1");
  });
});

describe("refuseDataDisk messages", () => {
  async function onecloud(file = "onecloud-ext4.txt") {
    return byMountPoint(await listFilesystems(await fakeHost(await fixture(file), ONECLOUD_DEVS), fakeStatfs));
  }

  it("names the root filesystem's real device and what to do", async () => {
    const fs = await onecloud("onecloud-unmounted.txt");
    const err = refuseDataDisk(fs.get("/")!, "/mnt/usb/sharenode");
    expect(err).toBeInstanceOf(DiskError);
    expect(err!.code).toBe("system-disk");
    expect(err!.message).toBe(
      "data directory /mnt/usb/sharenode is on the root filesystem (/dev/mmcblk1p2), not on a data disk; " +
        "is the USB disk mounted? set store.allowSystemDisk to store there anyway",
    );
    expect(refuseDataDisk(fs.get("/")!, "/mnt/usb/sharenode", true)).toBeUndefined();
  });

  it("system flash, RAM, read-only; a USB disk is accepted", async () => {
    const fs = await onecloud();
    expect(refuseDataDisk(fs.get("/boot")!, "/boot/data")!.message).toBe(
      "data directory /boot/data is on the system flash (/dev/mmcblk1p1 on /boot), not on a data disk; " +
        "is the USB disk mounted? set store.allowSystemDisk to store there anyway",
    );
    expect(refuseDataDisk(fs.get("/tmp")!, "/tmp/data")!.message).toBe(
      "data directory /tmp/data is on tmpfs on /tmp, which lives in RAM and is lost at power-off, not on a data disk; " +
        "is the USB disk mounted? set store.allowSystemDisk to store there anyway",
    );
    expect(refuseDataDisk(fs.get("/var/log")!, "/var/log/x")!.code).toBe("system-disk");
    expect(refuseDataDisk(fs.get("/mnt/usb")!, "/mnt/usb/sharenode")).toBeUndefined();
    const ro = { ...fs.get("/mnt/usb")!, readOnly: true };
    for (const allow of [false, true]) {
      const err = refuseDataDisk(ro, "/mnt/usb/sharenode", allow)!;
      expect(err.code).toBe("read-only");
      expect(err.message).toBe(
        "data directory /mnt/usb/sharenode is on a read-only filesystem (/dev/sda1 on /mnt/usb); " +
          "remount it read-write (a disk with errors is often remounted read-only: see dmesg)",
      );
    }
  });

  it("stays one line when a path holds a newline", async () => {
    const host = await fakeHost(await fixture("escaped.txt"), ESCAPED_DEVS);
    const fs = byMountPoint(await listFilesystems(host, fakeStatfs));
    const err = refuseDataDisk({ ...fs.get("/mnt/new\nline")!, readOnly: true }, "/mnt/new\nline/data")!;
    expect(err.message).not.toContain("\n");
    expect(err.message).toContain('"/mnt/new\\nline/data"');
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Real filesystems

/** The path of a tool, or a failure naming the Debian package that has it (a missing tool fails, never skips). */
function tool(name: string, debianPackage: string): string {
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/sbin", "/usr/bin", "/bin"];
  for (const dir of dirs) if (dir && existsSync(join(dir, name))) return join(dir, name);
  throw new Error(`${name} not found: install the Debian package ${debianPackage}`);
}

function run(cmd: string, ...args: string[]): string {
  return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 20_000 });
}

describe("real filesystems: a loop-mounted ext4 image and tmpfs, through HostPaths('/')", () => {
  const host = new HostPaths("/");
  const mounts: string[] = []; // mount points, in mount order
  let MOUNT = "",
    UMOUNT = "",
    base = "",
    img = "",
    ext4 = "",
    ram = "";

  async function mount(args: string[], at: string) {
    run(MOUNT, ...args, at);
    mounts.push(at);
  }
  async function umount(at: string) {
    run(UMOUNT, at);
    mounts.splice(mounts.lastIndexOf(at), 1);
  }
  const mountExt4 = () => mount(["-o", "loop", img], ext4);

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error("these tests mount filesystems: run them as root (CI does)");
    MOUNT = tool("mount", "mount");
    UMOUNT = tool("umount", "mount");
    const MKFS = tool("mkfs.ext4", "e2fsprogs");
    base = await fsp.realpath(await fsp.mkdtemp(join(tmpdir(), "sharenode-disks-")));
    img = join(base, "disk.img");
    ext4 = join(base, "usb");
    ram = join(base, "ram");
    await fsp.mkdir(ext4);
    await fsp.mkdir(ram);
    await fsp.writeFile(img, "");
    await fsp.truncate(img, 64 << 20);
    run(MKFS, "-q", "-F", img);
    await mountExt4();
    await mount(["-t", "tmpfs", "-o", "size=4m", "sharenode-test"], ram);
  });

  afterAll(async () => {
    const failures: string[] = [];
    for (const at of [...mounts].reverse()) {
      try {
        run(UMOUNT, at);
      } catch {
        try {
          run(UMOUNT, "-l", at);
        } catch (err) {
          failures.push(`${at}: ${errorMessage(err)}`);
        }
      }
    }
    mounts.length = 0;
    if (base) await fsp.rm(base, { recursive: true, force: true });
    if (failures.length) throw new Error(`could not unmount: ${failures.join("; ")}`);
  });

  /** A fresh data dir on the ext4 disk and a fresh agent state dir (on the parent filesystem). */
  let counter = 0;
  async function dirs(on = () => ext4) {
    const n = ++counter;
    const stateDir = join(base, `state-${n}`);
    return { dataDir: join(on(), `sharenode-${n}`), stateDir };
  }

  function df(dir: string): { size: number; available: number } {
    const [, line] = run("df", "-B1", "--output=size,avail", dir).trim().split("\n");
    const [size, available] = line!.trim().split(/\s+/).map(Number);
    return { size: size!, available: available! };
  }

  it("listFilesystems sees both with df's sizes; the ext4 is a loop block device, tmpfs is virtual", async () => {
    const fs = byMountPoint(await listFilesystems(host));
    const disk = fs.get(ext4)!;
    expect(disk).toMatchObject({ fstype: "ext4", kind: "other-block", readOnly: false });
    expect(disk.device).toMatch(/^\/dev\/loop\d+$/);
    expect(disk.block).toMatchObject({ bus: "loop", partition: false });
    expect(disk.major).toBe(disk.block!.major);
    expect({ size: disk.size, available: disk.available }).toEqual(df(ext4));
    expect(disk.free!).toBeGreaterThanOrEqual(disk.available!);
    expect(disk.size!).toBeGreaterThan(50 << 20);
    expect(fs.get(ram)).toMatchObject({ fstype: "tmpfs", kind: "virtual", device: "sharenode-test", size: 4 << 20 });
    expect(fs.get("/")!.kind).toBe("root");
    expect([...fs.values()].some((f) => f.fstype === "proc" || f.fstype === "sysfs")).toBe(false);
  });

  it("filesystemOf: a directory inside the ext4 mount, and one not created yet", async () => {
    await fsp.mkdir(join(ext4, "a/b"), { recursive: true });
    expect(await filesystemOf(join(ext4, "a/b"), host)).toMatchObject({ mountPoint: ext4, fstype: "ext4" });
    expect(await filesystemOf(join(ext4, "a/b/not/yet"), host)).toMatchObject({ mountPoint: ext4 });
    expect((await filesystemOf(base, host)).mountPoint).not.toBe(ext4);
    const link = join(base, "link-to-usb");
    await fsp.symlink(join(ext4, "a"), link);
    expect((await filesystemOf(join(link, "b"), host)).mountPoint).toBe(ext4);
    expect(await chooseDataDisk({ dataDir: join(ext4, "a/b") }, host)).toMatchObject({
      mountPoint: ext4,
      kind: "other-block",
    });
  });

  it("first use adopts the disk (marker, then state); later checks know it; a wiped state dir re-adopts it", async () => {
    const { dataDir, stateDir } = await dirs();
    const now = () => new Date("2026-11-28T12:00:00Z");
    const first = await checkDataDisk({ dataDir, stateDir, nodeId: "node-a", now }, host);
    if (!first.ok) throw new Error(first.reason);
    expect(first.adopted).toBe("new");
    const marker = JSON.parse(await fsp.readFile(join(dataDir, MARKER_NAME), "utf8")) as DiskMarker;
    expect(marker).toEqual({
      v: 1,
      nodeId: "node-a",
      diskId: expect.stringMatching(/^[0-9a-f]{32}$/),
      createdAt: "2026-11-28T12:00:00.000Z",
      fstype: "ext4",
      device: first.filesystem.device,
    });
    expect(first.marker).toEqual(marker);
    const state = JSON.parse(await fsp.readFile(join(stateDir, ADOPTION_STATE_NAME), "utf8"));
    expect(state).toMatchObject({ v: 1, nodeId: "node-a", diskId: marker.diskId, dataDir });
    expect(await fsp.readdir(dataDir)).toEqual([MARKER_NAME]); // no temp file left behind

    const again = await checkDataDisk({ dataDir, stateDir, nodeId: "node-a" }, host);
    expect(again).toMatchObject({ ok: true, adopted: "known", marker: { diskId: marker.diskId } });

    await fsp.rm(stateDir, { recursive: true });
    const readopt = await checkDataDisk({ dataDir, stateDir, nodeId: "node-a" }, host);
    expect(readopt).toMatchObject({ ok: true, adopted: "re-adopted", marker: { diskId: marker.diskId } });
    expect(JSON.parse(await fsp.readFile(join(stateDir, ADOPTION_STATE_NAME), "utf8")).diskId).toBe(marker.diskId);
  });

  it("another node's marker: foreign-node, and the marker is left alone", async () => {
    const { dataDir, stateDir } = await dirs();
    expect((await checkDataDisk({ dataDir, stateDir, nodeId: "node-a" }, host)).ok).toBe(true);
    const before = await fsp.readFile(join(dataDir, MARKER_NAME), "utf8");
    const other = await checkDataDisk({ dataDir, stateDir: join(base, "state-of-b"), nodeId: "node-b" }, host);
    expect(other).toMatchObject({ ok: false, code: "foreign-node" });
    if (!other.ok) {
      expect(other.reason).toMatch(/^data directory \S+ holds the disk of device node-a, not of this device node-b; /);
      expect(other.reason).not.toContain("\n");
    }
    expect(await fsp.readFile(join(dataDir, MARKER_NAME), "utf8")).toBe(before);
  });

  it("a marker with another disk id than the one adopted: disk-replaced; an unreadable marker: bad-marker", async () => {
    const { dataDir, stateDir } = await dirs();
    const first = await checkDataDisk({ dataDir, stateDir, nodeId: "node-a" }, host);
    if (!first.ok) throw new Error(first.reason);
    const swapped = { ...first.marker, diskId: "ab".repeat(16) };
    await fsp.writeFile(join(dataDir, MARKER_NAME), JSON.stringify(swapped));
    const check = await checkDataDisk({ dataDir, stateDir, nodeId: "node-a" }, host);
    expect(check).toMatchObject({ ok: false, code: "disk-replaced" });
    if (!check.ok)
      expect(check.reason).toContain(
        `holds disk ${"ab".repeat(16)}, but this device adopted disk ${first.marker.diskId}`,
      );
    await fsp.writeFile(join(dataDir, MARKER_NAME), "{ torn");
    expect(await checkDataDisk({ dataDir, stateDir, nodeId: "node-a" }, host)).toMatchObject({
      ok: false,
      code: "bad-marker",
    });
  });

  it("a read-only remount: read-only, even with allowSystemDisk", async () => {
    const { dataDir, stateDir } = await dirs();
    expect((await checkDataDisk({ dataDir, stateDir, nodeId: "node-a" }, host)).ok).toBe(true);
    run(MOUNT, "-o", "remount,ro", ext4);
    try {
      for (const allowSystemDisk of [false, true]) {
        const check = await checkDataDisk({ dataDir, stateDir, nodeId: "node-a", allowSystemDisk }, host);
        expect(check).toMatchObject({ ok: false, code: "read-only" });
      }
      const err = await chooseDataDisk({ dataDir }, host).catch((e: unknown) => e);
      expect(isDiskError(err, "read-only")).toBe(true);
      expect((err as DiskError).message).toMatch(
        /^data directory \S+ is on a read-only filesystem \(\/dev\/loop\d+ on /,
      );
      // First use on a read-only disk writes nothing either.
      const fresh = await dirs();
      expect(await checkDataDisk({ ...fresh, nodeId: "node-a" }, host)).toMatchObject({ ok: false, code: "read-only" });
    } finally {
      run(MOUNT, "-o", "remount,rw", ext4);
    }
  });

  it("after umount the empty mount point is the parent filesystem's: marker-missing, and nothing is written", async () => {
    const { dataDir, stateDir } = await dirs();
    expect((await checkDataDisk({ dataDir, stateDir, nodeId: "node-a" }, host)).ok).toBe(true);
    await umount(ext4);
    try {
      expect(await fsp.readdir(ext4)).toEqual([]);
      const parent = await filesystemOf(base, host);
      const now = await filesystemOf(ext4, host);
      expect(now.mountPoint).toBe(parent.mountPoint);
      expect(now.mountPoint).not.toBe(ext4);
      expect((await filesystemOf(dataDir, host)).mountPoint).toBe(parent.mountPoint);

      const check = await checkDataDisk({ dataDir, stateDir, nodeId: "node-a" }, host);
      expect(check).toMatchObject({ ok: false, code: "marker-missing" });
      if (!check.ok) {
        expect(check.reason).toMatch(
          /^data directory \S+ has no disk marker but this device adopted disk [0-9a-f]{32} there; /,
        );
        expect(check.reason).toContain("is the USB disk mounted?");
      }
      // Even allowing the system disk does not let a known disk's absence pass.
      expect(await checkDataDisk({ dataDir, stateDir, nodeId: "node-a", allowSystemDisk: true }, host)).toMatchObject({
        ok: false,
        code: "marker-missing",
      });
      // First use here (no state): the parent is this machine's system disk (or RAM), so it is refused too.
      expect(["root", "virtual", "system-flash"]).toContain(parent.kind);
      const fresh = await checkDataDisk({ dataDir, stateDir: join(base, "state-fresh"), nodeId: "node-a" }, host);
      expect(fresh).toMatchObject({ ok: false, code: "system-disk" });
      expect(existsSync(dataDir)).toBe(false);
      expect(await fsp.readdir(ext4)).toEqual([]);
    } finally {
      await mountExt4();
    }
    // Mounted again, the disk is known again.
    expect(await checkDataDisk({ dataDir, stateDir, nodeId: "node-a" }, host)).toMatchObject({
      ok: true,
      adopted: "known",
    });
  });

  it("tmpfs is refused without allowSystemDisk and accepted with it", async () => {
    const { dataDir, stateDir } = await dirs(() => ram);
    const check = await checkDataDisk({ dataDir, stateDir, nodeId: "node-a" }, host);
    expect(check).toMatchObject({ ok: false, code: "system-disk" });
    if (!check.ok)
      expect(check.reason).toContain(`is on sharenode-test on ${ram}, which lives in RAM and is lost at power-off`);
    expect(existsSync(dataDir)).toBe(false);
    await expect(chooseDataDisk({ dataDir }, host)).rejects.toMatchObject({ name: "DiskError", code: "system-disk" });
    expect(await checkDataDisk({ dataDir, stateDir, nodeId: "node-a", allowSystemDisk: true }, host)).toMatchObject({
      ok: true,
      adopted: "new",
      filesystem: { mountPoint: ram, kind: "virtual" },
    });
  });

  it("a data dir path that is a file: not-a-directory", async () => {
    const file = join(ext4, "plain-file");
    await fsp.writeFile(file, "x");
    const stateDir = join(base, "state-file");
    expect(await checkDataDisk({ dataDir: file, stateDir, nodeId: "node-a" }, host)).toMatchObject({
      ok: false,
      code: "not-a-directory",
      reason: `data directory ${file} is not a directory`,
    });
    await expect(chooseDataDisk({ dataDir: join(file, "sub") }, host)).rejects.toThrow(
      `data directory ${join(file, "sub")} cannot be created: ${file} is not a directory`,
    );
  });

  it("a mount hidden under a later mount: stat's device numbers pick the visible one", async () => {
    const outer = join(base, "outer");
    const inner = join(outer, "inner");
    await fsp.mkdir(inner, { recursive: true });
    await mount(["-t", "tmpfs", "-o", "size=1m", "sharenode-inner"], inner);
    await mount(["-t", "tmpfs", "-o", "size=2m", "sharenode-outer"], outer);
    await fsp.mkdir(inner); // now a plain directory on the outer tmpfs, over the hidden mount point
    const fs = await filesystemOf(inner, host);
    expect(fs).toMatchObject({ mountPoint: outer, device: "sharenode-outer", size: 2 << 20 });
    await umount(outer);
    await umount(inner);
  });
});
