// Disk discovery through df (agent/store/disk-discovery.ts) and store.dataDir "auto" (agent/store/auto-data-dir.ts).
// Real parts: loop-mounted ext4 images and a tmpfs at paths with a space, a newline and a tab, read by the real GNU
// df and the real BusyBox df (the Debian package busybox), and `sharenode disks` from the bundle with df removed
// from PATH. USB-ness is the one fake: the boxes' sysfs trees are written under a fake host root whose mount table
// holds the real lines of the real loop mounts, so the data disk that "auto" adopts is a real ext4 filesystem.
// Needs root (mount), as CI has.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, promises as fsp } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HostPaths, parseMountInfo } from "../board/host-paths";
import { Agent } from "../agent/agent";
import { loadConfig } from "../agent/config/config";
import { LogHub } from "../agent/util/log";
import { AUTO_DIR_NAME, chooseAutoDisk, resolveAutoDataDir } from "../agent/store/auto-data-dir";
import { DiskDiscovery, dfRunner, parseDf, type DfRunner } from "../agent/store/disk-discovery";
import { ADOPTION_STATE_NAME, MARKER_NAME, checkDataDisk } from "../agent/store/disk-marker";
import { listFilesystems, type Filesystem } from "../agent/store/disks";
import { Broker } from "./helpers/mosquitto";
import { errorMessage } from "../agent/util/errors";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "dist/sharenode.js");
const NODE_ID = "ab".repeat(16);

/** The path of a tool, or a failure naming the Debian package that has it (a missing tool fails, never skips). */
function tool(name: string, debianPackage: string): string {
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/sbin", "/usr/bin", "/bin"];
  for (const dir of dirs) if (dir && existsSync(join(dir, name))) return join(dir, name);
  throw new Error(`${name} not found: install the Debian package ${debianPackage}`);
}

function run(cmd: string, ...args: string[]): string {
  return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 20_000 });
}

function byMountPoint(list: readonly Filesystem[]): Map<string, Filesystem> {
  return new Map(list.map((f) => [f.mountPoint, f]));
}

let base = "";
const mounts: string[] = [];
const cleanups: Array<() => Promise<unknown>> = [];

/** Mounts an ext4 image of `mib` MiB (or, with `tmpfsSource`, a tmpfs of that name) at `at`, made first. */
let images = 0;

/**
 * Mounts at `at` (made first): the ext4 image `opts.image`, or a new one of `mib` MiB, or with `tmpfsSource` a tmpfs
 * of that name. Resolves the image's path.
 */
async function mountAt(
  at: string,
  opts: { mib?: number; readOnly?: boolean; tmpfsSource?: string; image?: string } = {},
): Promise<string> {
  await fsp.mkdir(at, { recursive: true });
  let img = opts.image ?? "";
  if (opts.tmpfsSource !== undefined) {
    run(tool("mount", "mount"), "-t", "tmpfs", "-o", "size=1m", opts.tmpfsSource, at);
  } else {
    if (!img) {
      img = join(base, `img-${++images}.img`);
      await fsp.writeFile(img, "");
      await fsp.truncate(img, (opts.mib ?? 16) << 20);
      run(tool("mkfs.ext4", "e2fsprogs"), "-q", "-F", img);
    }
    run(tool("mount", "mount"), "-o", opts.readOnly ? "loop,ro" : "loop", img, at);
  }
  mounts.push(at);
  return img;
}

async function umount(at: string): Promise<void> {
  run(tool("umount", "mount"), at);
  mounts.splice(mounts.lastIndexOf(at), 1);
}

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error("these tests mount filesystems: run them as root (CI does)");
  base = await fsp.realpath(await fsp.mkdtemp(join(tmpdir(), "sharenode-discovery-")));
});

afterAll(async () => {
  const failures: string[] = [];
  for (const at of [...mounts].reverse()) {
    try {
      run(tool("umount", "mount"), at);
    } catch {
      try {
        run(tool("umount", "mount"), "-l", at);
      } catch (err) {
        failures.push(`${at}: ${errorMessage(err)}`);
      }
    }
  }
  for (const c of cleanups) await c();
  if (base) await fsp.rm(base, { recursive: true, force: true });
  if (failures.length) throw new Error(`could not unmount: ${failures.join("; ")}`);
});

/** A directory holding executables for a PATH of its own: `df` as given by `links` (name -> target) or scripts. */
async function binDir(entries: Record<string, { link: string } | { script: string }>): Promise<string> {
  const dir = await fsp.mkdtemp(join(base, "bin-"));
  for (const [name, e] of Object.entries(entries)) {
    if ("link" in e) await fsp.symlink(e.link, join(dir, name));
    else await fsp.writeFile(join(dir, name), `#!/bin/sh\n${e.script}\n`, { mode: 0o755 });
  }
  return dir;
}

// ---------------------------------------------------------------------------------------------------------------

describe("df through node-disk-info, on real mounts with awkward names", () => {
  let passport = "",
    newline = "",
    tabbed = "";

  beforeAll(async () => {
    passport = join(base, "awkward", "My Passport");
    newline = join(base, "awkward", "new\nline");
    tabbed = join(base, "awkward", "tab\there");
    await mountAt(passport);
    await mountAt(newline);
    // A source with a space too: node-disk-info then misreads every column of the row.
    await mountAt(tabbed, { tmpfsSource: "ram disk" });
  });

  it("node-disk-info alone cuts a mount point at its first space and shifts a source with one: the weak spot is real", () => {
    const rows = parseDf(run("df", "-kP"));
    expect(rows.find((r) => r.line.includes("My Passport"))!.mounted).toBe(join(base, "awkward", "My"));
    const ram = rows.find((r) => r.line.startsWith("ram disk "))!;
    expect(ram.filesystem).toBe("ram");
    expect(ram.mounted).toMatch(/^\d+%$/); // the capacity column, taken for the mount point
  });

  it.each([
    ["GNU df", ["df", "-kP"]],
    ["BusyBox df", ["busybox", "df", "-kP"]],
  ])("%s: every mount under its real name, identity from mountinfo, numbers from statfs", async (_, argv) => {
    if (argv[0] === "busybox") tool("busybox", "busybox");
    const listing = await new DiskDiscovery({ df: dfRunner(process.env, argv) }).list();
    expect(listing.source).toBe("df");
    expect(listing.note).toBeUndefined();
    const fromDf = byMountPoint(listing.filesystems);
    const fromMountinfo = byMountPoint(await listFilesystems());
    for (const at of [passport, newline, tabbed]) {
      const fs = fromDf.get(at);
      expect(fs, `${JSON.stringify(at)} listed`).toBeDefined();
      // The same entry the mount table gives (sizes of a filesystem nobody writes to do not move).
      expect(fs).toEqual(fromMountinfo.get(at));
      const s = await fsp.statfs(at);
      expect(fs!.size).toBe(s.blocks * s.bsize);
      expect(fs!.available).toBe(s.bavail * s.bsize);
    }
    expect(fromDf.get(passport)).toMatchObject({
      fstype: "ext4",
      kind: "other-block",
      device: expect.stringMatching(/^\/dev\/loop\d+$/),
    });
    expect(fromDf.get(tabbed)).toMatchObject({ fstype: "tmpfs", source: "ram disk", kind: "virtual" });
    expect(fromDf.get("/")!.kind).toBe("root");
    // GNU df prints the newline as "?"; BusyBox prints it, and its second half is a row of its own that names nothing.
    const ours = listing.unmatched.filter((l) => l.includes(base) || l === "line");
    expect(ours).toEqual(argv[0] === "busybox" ? ["line"] : []);
  });

  it("df missing from PATH: the mount table, said once; df is not asked again", async () => {
    let calls = 0;
    const missing = dfRunner({ PATH: join(base, "nowhere") });
    const df: DfRunner = () => (calls++, missing());
    const discovery = new DiskDiscovery({ df });
    const first = await discovery.list();
    expect(first.source).toBe("mountinfo");
    expect(first.note).toBe("df unavailable (df not found): listing the mount table instead");
    expect(byMountPoint(first.filesystems).get(passport)).toMatchObject({ fstype: "ext4", mountPoint: passport });
    const second = await discovery.list();
    expect(second.source).toBe("mountinfo");
    expect(second.note).toBeUndefined();
    expect(second.filesystems.map((f) => f.mountPoint)).toEqual(first.filesystems.map((f) => f.mountPoint));
    expect(calls).toBe(1);
  });

  it.each([
    [
      "fails",
      'echo "df: /srv/nas: Stale file handle" >&2; echo "Filesystem 1024-blocks Used Available Capacity Mounted on"; exit 1',
      "df unavailable (df exited with 1: df: /srv/nas: Stale file handle): listing the mount table instead",
    ],
    ["hangs", "exec /bin/sleep 30", "df unavailable (df did not answer within 0.3 s): listing the mount table instead"],
    [
      "prints no table",
      "echo hello",
      'df unavailable (df printed no table ("hello\\n")): listing the mount table instead',
    ],
  ])("df that %s: the same fallback, with the reason", async (_, script, note) => {
    const dir = await binDir({ df: { script } });
    const listing = await new DiskDiscovery({ df: dfRunner({ PATH: dir }, ["df", "-kP"], 300) }).list();
    expect(listing).toMatchObject({ source: "mountinfo", note });
    expect(byMountPoint(listing.filesystems).has(passport)).toBe(true);
  });

  describe("sharenode disks (the bundle)", () => {
    beforeAll(() => {
      if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run \`npm run build\` first`);
    });

    function sharenode(env: Record<string, string>, ...args: string[]) {
      const r = spawnSync(process.execPath, [BIN, "disks", ...args], { encoding: "utf8", env, timeout: 30_000 });
      if (r.error) throw r.error;
      return { status: r.status, stdout: r.stdout, stderr: r.stderr };
    }

    it("with BusyBox as the only df on PATH: the mount point with a space whole, sizes, kinds", async () => {
      const dir = await binDir({ df: { link: tool("busybox", "busybox") } });
      const out = sharenode({ PATH: dir });
      expect(out.stderr).toBe("");
      expect(out.status).toBe(0);
      expect(out.stdout).toMatch(/^mount point\s+device\s+type\s+kind\s+size\s+avail/);
      expect(out.stdout).toMatch(new RegExp(`^${passport}\\s+/dev/loop\\d+\\s+ext4\\s+other-block\\s+\\d`, "m"));
      expect(out.stdout).toContain(JSON.stringify(newline)); // one line per filesystem, whatever its name
      expect(out.stdout).toMatch(/^auto: none: store.dataDir is "auto" but no writable USB disk is mounted/m);
      const json = JSON.parse(sharenode({ PATH: dir }, "--json").stdout) as {
        source: string;
        filesystems: Filesystem[];
      };
      expect(json.source).toBe("df");
      expect(json.filesystems.find((f) => f.mountPoint === passport)).toMatchObject({
        fstype: "ext4",
        kind: "other-block",
      });
    });

    it("without df on PATH: one note line on stderr, the listing from the mount table, exit 0", () => {
      const out = sharenode({ PATH: join(base, "nowhere") });
      expect(out.status).toBe(0);
      expect(out.stderr).toBe("sharenode: note: df unavailable (df not found): listing the mount table instead\n");
      expect(out.stdout).toMatch(new RegExp(`^${passport}\\s+/dev/loop\\d+\\s+ext4\\s+other-block`, "m"));
      const json = JSON.parse(sharenode({ PATH: join(base, "nowhere") }, "--json").stdout) as {
        source: string;
        note: string;
      };
      expect(json).toMatchObject({
        source: "mountinfo",
        note: "df unavailable (df not found): listing the mount table instead",
      });
    });

    it("no mount table (a host root without /proc): one line, exit 1", async () => {
      const empty = await fsp.mkdtemp(join(base, "empty-host-"));
      const out = sharenode({ PATH: process.env.PATH ?? "", SHARENODE_HOST_ROOT: empty });
      expect(out.status).toBe(1);
      expect(out.stdout).toBe("");
      expect(out.stderr).toMatch(/^sharenode: disks: cannot read \/proc\/self\/mountinfo: ENOENT[^\n]*\n$/);
    });

    it("bad usage: one line, exit 2", () => {
      const out = sharenode({ PATH: process.env.PATH ?? "" }, "extra");
      expect(out.status).toBe(2);
      expect(out.stderr).toMatch(/^sharenode: disks: unexpected argument 'extra'\n$/);
    });
  });
});

// ---------------------------------------------------------------------------------------------------------------

/** Where a block device sits in a fake sysfs: its /sys/devices path (".../block/<disk>/<partition>"). */
const SD = "devices/platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0";
const usbDisk = (port: number, disk: string) =>
  `devices/platform/scb/fd500000.pcie/pci0000:00/0000:00:00.0/0000:01:00.0/usb2/2-${port}/2-${port}:1.0/host${port}/target${port}:0:0/${port}:0:0:0/block/${disk}`;
const SATA = "devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sdz";

/**
 * A fake host root: its mount table is the real lines of `mountPoints` (and "/"), its sysfs puts each one's real
 * device numbers at the given /sys/devices path (a partition "…/block/sda/sda1" or a whole disk).
 */
async function fakeHost(layout: Array<[mountPoint: string, sysPath: string]>): Promise<HostPaths> {
  const root = await fsp.mkdtemp(join(base, "host-"));
  const text = await fsp.readFile("/proc/self/mountinfo", "utf8");
  const lines = text.split("\n").filter((l) => l !== "");
  const entries = parseMountInfo(text);
  const pick = (mp: string) => {
    const i = entries.map((e) => e.mountPoint).lastIndexOf(mp);
    if (i < 0) throw new Error(`${mp} is not mounted`);
    return { line: lines[i]!, entry: entries[i]! };
  };
  const chosen = [pick("/"), ...layout.filter(([mp]) => mp !== "/").map(([mp]) => pick(mp))];
  await fsp.mkdir(join(root, "proc/self"), { recursive: true });
  await fsp.writeFile(join(root, "proc/self/mountinfo"), chosen.map((c) => c.line).join("\n") + "\n");
  for (const [mp, sysPath] of layout) {
    const { entry } = pick(mp);
    const dir = join(root, "sys", sysPath);
    await fsp.mkdir(dir, { recursive: true });
    await fsp.writeFile(join(dir, "dev"), `${entry.major}:${entry.minor}\n`);
    const name = sysPath.split("/").at(-1)!;
    const isPartition = basenameOf(dirname(sysPath)) !== "block";
    if (isPartition) await fsp.writeFile(join(dir, "partition"), `${/(\d+)$/.exec(name)![1]}\n`);
    for (const linkDir of ["sys/dev/block", "sys/class/block"]) {
      await fsp.mkdir(join(root, linkDir), { recursive: true });
      await fsp.symlink(
        `../../${sysPath}`,
        join(root, linkDir, linkDir === "sys/dev/block" ? `${entry.major}:${entry.minor}` : name),
      );
    }
  }
  return new HostPaths(root);
}

function basenameOf(p: string): string {
  return p.split("/").at(-1)!;
}

describe('store.dataDir "auto": USB-ness from a fake sysfs, the disks real', () => {
  let big = "",
    small = "",
    readOnly = "",
    other = "",
    otherImage = "";

  beforeAll(async () => {
    big = join(base, "media", "big disk");
    small = join(base, "media", "small");
    readOnly = join(base, "media", "ro");
    other = join(base, "media", "other");
    await mountAt(big, { mib: 64 });
    await mountAt(small, { mib: 32 });
    await mountAt(readOnly, { mib: 48, readOnly: true });
    otherImage = await mountAt(other, { mib: 16 });
  });

  /** A fresh agent state dir (on the real parent filesystem); nothing adopted. */
  async function stateDir(): Promise<string> {
    return fsp.mkdtemp(join(base, "state-"));
  }

  async function clearMarkers(): Promise<void> {
    for (const at of [big, small, other]) await fsp.rm(join(at, AUTO_DIR_NAME), { recursive: true, force: true });
  }

  it("one USB disk: its largest writable filesystem, adopted at first start; later starts keep it", async () => {
    await clearMarkers();
    // Two partitions of one USB disk, and the system on the SD card.
    const host = await fakeHost([
      ["/", `${SD}/mmcblk0p2`],
      [big, `${usbDisk(1, "sda")}/sda1`],
      [small, `${usbDisk(1, "sda")}/sda2`],
    ]);
    const state = await stateDir();
    const auto = await resolveAutoDataDir({
      stateDir: state,
      nodeId: NODE_ID,
      discovery: new DiskDiscovery({ paths: host }),
    });
    expect(auto).toEqual({
      ok: true,
      dataDir: join(big, AUTO_DIR_NAME),
      how: "chosen",
      reason: expect.stringMatching(/^the only USB disk: \/dev\/sda1 on .*\/media\/big disk \(ext4, \d+\.\d MB\)$/),
    });
    if (!auto.ok) return;
    const check = await checkDataDisk({ dataDir: auto.dataDir, stateDir: state, nodeId: NODE_ID }, host);
    expect(check).toMatchObject({
      ok: true,
      adopted: "new",
      filesystem: { kind: "usb", device: "/dev/sda1", mountPoint: big },
    });
    // The marker is on the real ext4 filesystem, the record in the state dir.
    expect((await fsp.stat(join(auto.dataDir, MARKER_NAME))).dev).toBe((await fsp.stat(big)).dev);
    expect(JSON.parse(await fsp.readFile(join(state, ADOPTION_STATE_NAME), "utf8"))).toMatchObject({
      dataDir: auto.dataDir,
    });

    // The next start: a larger USB disk is plugged in as well. The adopted disk stays.
    const later = await fakeHost([
      ["/", `${SD}/mmcblk0p2`],
      [big, `${usbDisk(1, "sda")}/sda1`],
      [small, `${usbDisk(2, "sdb")}/sdb1`],
    ]);
    const again = await resolveAutoDataDir({
      stateDir: state,
      nodeId: NODE_ID,
      discovery: new DiskDiscovery({ paths: later }),
    });
    expect(again).toMatchObject({ ok: true, dataDir: join(big, AUTO_DIR_NAME), how: "adopted" });
    expect(
      await checkDataDisk({ dataDir: join(big, AUTO_DIR_NAME), stateDir: state, nodeId: NODE_ID }, later),
    ).toMatchObject({
      ok: true,
      adopted: "known",
    });
  });

  it("adopted first, a larger disk later: the adopted one is kept, even though the larger would have been chosen", async () => {
    await clearMarkers();
    const state = await stateDir();
    const first = await fakeHost([
      ["/", `${SD}/mmcblk0p2`],
      [small, `${usbDisk(2, "sdb")}/sdb1`],
    ]);
    const auto = await resolveAutoDataDir({
      stateDir: state,
      nodeId: NODE_ID,
      discovery: new DiskDiscovery({ paths: first }),
    });
    expect(auto).toMatchObject({ ok: true, dataDir: join(small, AUTO_DIR_NAME), how: "chosen" });
    expect(
      await checkDataDisk({ dataDir: join(small, AUTO_DIR_NAME), stateDir: state, nodeId: NODE_ID }, first),
    ).toMatchObject({ ok: true });
    const both = await fakeHost([
      ["/", `${SD}/mmcblk0p2`],
      [big, `${usbDisk(1, "sda")}/sda1`],
      [small, `${usbDisk(2, "sdb")}/sdb1`],
    ]);
    // Without the adoption, the same disks are ambiguous:
    expect(
      await resolveAutoDataDir({
        stateDir: await stateDir(),
        nodeId: NODE_ID,
        discovery: new DiskDiscovery({ paths: both }),
      }),
    ).toMatchObject({
      ok: false,
      code: "several-data-disks",
    });
    expect(
      await resolveAutoDataDir({ stateDir: state, nodeId: NODE_ID, discovery: new DiskDiscovery({ paths: both }) }),
    ).toMatchObject({
      ok: true,
      dataDir: join(small, AUTO_DIR_NAME),
      how: "adopted",
    });
  });

  it("several USB disks and nothing adopted: none is chosen, and one line names them, largest first", async () => {
    await clearMarkers();
    const host = await fakeHost([
      ["/", `${SD}/mmcblk0p2`],
      [small, `${usbDisk(2, "sdb")}/sdb1`],
      [big, `${usbDisk(1, "sda")}/sda1`],
    ]);
    const auto = await resolveAutoDataDir({
      stateDir: await stateDir(),
      nodeId: NODE_ID,
      discovery: new DiskDiscovery({ paths: host }),
    });
    expect(auto.ok).toBe(false);
    expect(auto).toMatchObject({ code: "several-data-disks" });
    expect(auto.reason).toMatch(
      new RegExp(
        `^store.dataDir is "auto" and 2 USB disks could hold the store: /dev/sda1 on ${big} \\(ext4, \\d+\\.\\d MB\\), ` +
          `/dev/sdb1 on ${small} \\(ext4, \\d+\\.\\d MB\\); none is adopted yet, so none was chosen: set store.dataDir to a directory on one of them$`,
      ),
    );
    expect(auto.reason).not.toContain("\n");
    // Nothing was written anywhere.
    for (const at of [big, small]) expect(existsSync(join(at, AUTO_DIR_NAME))).toBe(false);
  });

  it("not candidates: a read-only USB filesystem, one on the USB disk the system runs from, a SATA disk, none at all", async () => {
    await clearMarkers();
    // A Pi booted from a USB SSD: "/" is sda2; sda3 on the same disk is the system disk too.
    const host = await fakeHost([
      ["/", `${usbDisk(1, "sda")}/sda2`],
      [big, `${usbDisk(1, "sda")}/sda3`],
      [readOnly, `${usbDisk(2, "sdb")}/sdb1`],
      [other, SATA],
      [small, `${usbDisk(3, "sdc")}/sdc1`],
    ]);
    const listing = await new DiskDiscovery({ paths: host }).list();
    const fs = byMountPoint(listing.filesystems);
    expect(fs.get(big)).toMatchObject({ kind: "usb", block: { disk: "sda" } });
    expect(fs.get(readOnly)).toMatchObject({ kind: "usb", readOnly: true });
    expect(fs.get(other)).toMatchObject({ kind: "other-block" });
    expect(chooseAutoDisk(listing.filesystems)).toMatchObject({ ok: true, dataDir: join(small, AUTO_DIR_NAME) });
    const none = await fakeHost([
      ["/", `${usbDisk(1, "sda")}/sda2`],
      [big, `${usbDisk(1, "sda")}/sda3`],
      [readOnly, `${usbDisk(2, "sdb")}/sdb1`],
      [other, SATA],
    ]);
    expect(
      await resolveAutoDataDir({
        stateDir: await stateDir(),
        nodeId: NODE_ID,
        discovery: new DiskDiscovery({ paths: none }),
      }),
    ).toEqual({
      ok: false,
      code: "no-data-disk",
      reason:
        'store.dataDir is "auto" but no writable USB disk is mounted besides the system disk; plug one in, or set store.dataDir',
    });
  });

  it("the adopted disk mounted elsewhere is found by its marker; not mounted at all: the recorded dir, which the disk check refuses", async () => {
    await clearMarkers();
    const state = await stateDir();
    const host = await fakeHost([
      ["/", `${SD}/mmcblk0p2`],
      [other, `${usbDisk(1, "sda")}/sda1`],
    ]);
    const auto = await resolveAutoDataDir({
      stateDir: state,
      nodeId: NODE_ID,
      discovery: new DiskDiscovery({ paths: host }),
    });
    expect(auto).toMatchObject({ ok: true, dataDir: join(other, AUTO_DIR_NAME), how: "chosen" });
    expect(
      await checkDataDisk({ dataDir: join(other, AUTO_DIR_NAME), stateDir: state, nodeId: NODE_ID }, host),
    ).toMatchObject({ ok: true });

    // The same disk at another mount point (the automounter named it differently this boot).
    await umount(other);
    const moved = join(base, "media", "other moved");
    try {
      await mountAt(moved, { image: otherImage });
      const movedHost = await fakeHost([
        ["/", `${SD}/mmcblk0p2`],
        [moved, `${usbDisk(1, "sda")}/sda1`],
      ]);
      const found = await resolveAutoDataDir({
        stateDir: state,
        nodeId: NODE_ID,
        discovery: new DiskDiscovery({ paths: movedHost }),
      });
      expect(found).toMatchObject({ ok: true, dataDir: join(moved, AUTO_DIR_NAME), how: "moved" });
      // checkDataDisk then records the new place: the same disk, re-adopted.
      expect(
        await checkDataDisk({ dataDir: join(moved, AUTO_DIR_NAME), stateDir: state, nodeId: NODE_ID }, movedHost),
      ).toMatchObject({
        ok: true,
        adopted: "re-adopted",
      });
      await umount(moved);

      // Not mounted: the recorded dir, an empty directory on the parent filesystem, is what checkDataDisk refuses.
      const bare = await fakeHost([["/", `${SD}/mmcblk0p2`]]);
      const gone = await resolveAutoDataDir({
        stateDir: state,
        nodeId: NODE_ID,
        discovery: new DiskDiscovery({ paths: bare }),
      });
      expect(gone).toMatchObject({ ok: true, dataDir: join(moved, AUTO_DIR_NAME), how: "adopted" });
      await fsp.mkdir(join(moved, AUTO_DIR_NAME), { recursive: true });
      const check = await checkDataDisk(
        { dataDir: join(moved, AUTO_DIR_NAME), stateDir: state, nodeId: NODE_ID },
        bare,
      );
      expect(check).toMatchObject({ ok: false, code: "marker-missing" });
      expect(check.ok ? "" : check.reason).toContain("is the USB disk mounted?");
      expect(existsSync(join(moved, AUTO_DIR_NAME, MARKER_NAME))).toBe(false);
    } finally {
      if (mounts.includes(moved)) await umount(moved);
      await fsp.rm(join(moved, AUTO_DIR_NAME), { recursive: true, force: true });
      await mountAt(other, { image: otherImage });
    }
  });

  it("the agent: several disks leave it running without a store, saying why; one disk is adopted and stored on", async () => {
    await clearMarkers();
    const broker = await Broker.start();
    cleanups.push(() => broker.stop());
    async function startAgent(host: HostPaths, state: string) {
      const { config } = loadConfig(undefined, {
        SHARENODE_BROKER: broker.url,
        SHARENODE_STATE: state,
        SHARENODE_DATA: "auto",
        SHARENODE_BOARD: "sim",
        SHARENODE_FLEET_KEY: "3b".repeat(32),
        // Any free port: other test files' agents serve at the same time.
        SHARENODE_SERVE_BIND: "127.0.0.1",
        SHARENODE_SERVE_PORT: "0",
      });
      const lines: string[] = [];
      const agent = new Agent(config, {
        logs: new LogHub({ write: (l) => lines.push(l.trimEnd()) }, "info"),
        version: "0.0.0-test",
        hostPaths: host,
        env: {},
      });
      await agent.start();
      return { agent, lines };
    }
    const state = await stateDir();
    const two = await fakeHost([
      ["/", `${SD}/mmcblk0p2`],
      [big, `${usbDisk(1, "sda")}/sda1`],
      [small, `${usbDisk(2, "sdb")}/sdb1`],
    ]);
    const first = await startAgent(two, state);
    try {
      const status = await first.agent.status();
      expect(status.store).toMatchObject({ running: false, code: "several-data-disks" });
      expect(first.agent.ledStatus).toBe("error");
      const said = first.lines.filter((l) =>
        /store not started: store.dataDir is "auto" and 2 USB disks could hold the store: /.test(l),
      );
      expect(said).toHaveLength(1);
      expect(said[0]).toContain(`/dev/sda1 on ${big} (ext4, `);
      expect(said[0]).toContain(`/dev/sdb1 on ${small} (ext4, `);
      // The sim board's files went to the state dir, not to a directory named "auto".
      expect(existsSync(join(state, "sim-board"))).toBe(true);
      expect(existsSync(join(process.cwd(), "auto"))).toBe(false);
    } finally {
      await first.agent.stop();
    }
    for (const at of [big, small]) expect(existsSync(join(at, AUTO_DIR_NAME))).toBe(false);

    const one = await fakeHost([
      ["/", `${SD}/mmcblk0p2`],
      [small, `${usbDisk(2, "sdb")}/sdb1`],
    ]);
    const second = await startAgent(one, state);
    try {
      const status = await second.agent.status();
      expect(status.store).toMatchObject({ running: true, objects: 0 });
      expect(
        second.lines.filter((l) => / info  agent: store.dataDir "auto": the only USB disk: \/dev\/sdb1 on /.test(l)),
      ).toHaveLength(1);
      expect(second.lines.some((l) => l.endsWith(`store on ${join(small, AUTO_DIR_NAME)} (ext4, new disk)`))).toBe(
        true,
      );
    } finally {
      await second.agent.stop();
    }
    expect(existsSync(join(small, AUTO_DIR_NAME, MARKER_NAME))).toBe(true);
    expect(existsSync(join(small, AUTO_DIR_NAME, "index.log"))).toBe(true);
  }, 60_000);
});
