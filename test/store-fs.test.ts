// The object store on the filesystems a USB disk really carries: ext4 (a loop-mounted image), vfat and exFAT
// (FUSE drivers: this kernel has neither module, and a box may not either), and tmpfs. Then the failures a
// home box meets: the disk fills up, and the disk goes away under a running store.
//
// Needs root (mount, losetup) and the tools of TOOLS below; a missing tool fails the suite naming the Debian
// package to install, it never skips. Every mount is undone in afterAll, whatever failed.
import { spawnSync } from "node:child_process";
import {
  accessSync,
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { basename, delimiter, join } from "node:path";
import { blake3 as nobleBlake3 } from "@noble/hashes/blake3.js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { fsyncDir, removeStaleTemps, tempPathFor, writeFileAtomic } from "../agent/durable/atomic";
import { checkDataDisk } from "../agent/store/disk-marker";
import { filesystemOf } from "../agent/store/disks";
import { ObjectStore, StoreError, type StoreConfig } from "../agent/store/object-store";
import { Scrubber } from "../agent/store/scrub";
import { seededBytes as bytes } from "./helpers/random";
import { errorMessage } from "../agent/util/errors";

const MiB = 1024 * 1024;
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

/** Command -> the Debian package that has it. */
const TOOLS = {
  mount: "mount",
  umount: "mount",
  losetup: "mount",
  "mkfs.ext4": "e2fsprogs",
  "mkfs.vfat": "dosfstools",
  fusefat: "fusefat",
  "mkfs.exfat": "exfatprogs",
  "mount.exfat-fuse": "exfat-fuse",
  fusermount: "fuse",
} as const;
type Tool = keyof typeof TOOLS;

/** The tool's absolute path, or a failure naming the package to install. */
function tool(name: Tool): string {
  const dirs = [
    ...(process.env.PATH ?? "").split(delimiter),
    "/usr/local/sbin",
    "/usr/sbin",
    "/sbin",
    "/usr/bin",
    "/bin",
  ];
  for (const d of dirs) {
    if (!d) continue;
    const candidate = join(d, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  throw new Error(
    `${name} is not installed: this test needs the Debian package ${TOOLS[name]} (apt-get install -y ${TOOLS[name]})`,
  );
}

/** Runs a tool, output to a log file (FUSE daemons keep inherited pipes open); throws with the log on failure. */
function sh(
  name: Tool,
  args: string[],
  options: { allowFail?: boolean } = {},
): { status: number | null; output: string } {
  const log = join(work, `${name}.log`);
  const fd = openSync(log, "w");
  let r;
  try {
    r = spawnSync(tool(name), args, { stdio: ["ignore", fd, fd], timeout: 30_000 });
  } finally {
    closeSync(fd);
  }
  const output = existsSync(log) ? readFileSync(log, "utf8").trim() : "";
  if (r.error) throw new Error(`${name} ${args.join(" ")}: ${r.error.message}`);
  if (r.status !== 0 && !options.allowFail)
    throw new Error(`${name} ${args.join(" ")} exited with ${r.status ?? r.signal}: ${output}`);
  return { status: r.status, output };
}

/** The mount table's fstype at exactly `dir`, or undefined when nothing is mounted there. */
function mountedType(dir: string): string | undefined {
  const escaped = dir.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, "0")}`);
  let found: string | undefined;
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    const fields = line.split(" ");
    const sep = fields.indexOf("-");
    if (sep > 0 && fields[4] === escaped) found = fields[sep + 1];
  }
  return found;
}

let work = "";
/** Undo actions, run last-first in afterAll. Each is tried even when another failed. */
const cleanups: Array<{ what: string; run: () => void }> = [];

function image(name: string, bytes: number): string {
  const img = join(work, `${name}.img`);
  closeSync(openSync(img, "w"));
  truncateSync(img, bytes);
  return img;
}

function mountPoint(name: string): string {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  return dir;
}

function unmountLater(dir: string, fuse: boolean): void {
  cleanups.push({
    what: `unmount ${dir}`,
    run: () => {
      if (mountedType(dir) === undefined) return;
      if (fuse) sh("fusermount", ["-u", dir], { allowFail: true });
      if (mountedType(dir) !== undefined) sh("umount", [dir], { allowFail: true });
      if (mountedType(dir) !== undefined) sh("umount", ["-l", dir], { allowFail: true });
    },
  });
}

function detachLater(img: string): void {
  cleanups.push({
    what: `detach the loop devices of ${img}`,
    run: () => {
      const r = spawnSync(tool("losetup"), ["-j", img], { encoding: "utf8" });
      for (const line of (r.stdout ?? "").split("\n")) {
        const dev = /^(\/dev\/loop\d+):/.exec(line)?.[1];
        if (dev) spawnSync(tool("losetup"), ["-d", dev]);
      }
    },
  });
}

/** Waits (briefly) for a FUSE daemon's mount to appear in the mount table. */
async function waitMounted(dir: string): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const type = mountedType(dir);
    if (type) return type;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`nothing got mounted on ${dir}`);
}

interface Mounted {
  dir: string;
  /** What /proc/self/mountinfo says the filesystem is. */
  fstype: string;
}

const MOUNTERS: Record<string, () => Promise<Mounted>> = {
  async ext4() {
    const img = image("ext4", 64 * MiB);
    sh("mkfs.ext4", ["-q", "-F", img]);
    const dir = mountPoint("ext4");
    detachLater(img);
    unmountLater(dir, false);
    sh("mount", ["-o", "loop", img, dir]);
    return { dir, fstype: await waitMounted(dir) };
  },
  async vfat() {
    const img = image("vfat", 64 * MiB);
    sh("mkfs.vfat", [img]);
    const dir = mountPoint("vfat");
    unmountLater(dir, true);
    sh("fusefat", ["-o", "rw+", img, dir]);
    return { dir, fstype: await waitMounted(dir) };
  },
  async exfat() {
    const img = image("exfat", 64 * MiB);
    sh("mkfs.exfat", [img]);
    const dir = mountPoint("exfat");
    tool("mount.exfat-fuse");
    detachLater(img);
    const loop = sh("losetup", ["-f", "--show", img]).output.split("\n").at(-1)!.trim();
    if (!/^\/dev\/loop\d+$/.test(loop)) throw new Error(`losetup -f --show gave ${JSON.stringify(loop)}`);
    unmountLater(dir, true);
    sh("mount.exfat-fuse", [loop, dir]);
    return { dir, fstype: await waitMounted(dir) };
  },
  async tmpfs() {
    return tmpfs("tmpfs", "64m");
  },
};

async function tmpfs(name: string, size: string): Promise<Mounted> {
  const dir = mountPoint(name);
  unmountLater(dir, false);
  sh("mount", ["-t", "tmpfs", "-o", `size=${size},mode=0755`, "tmpfs", dir]);
  return { dir, fstype: await waitMounted(dir) };
}

const EXPECTED_FSTYPE: Record<string, RegExp> = {
  ext4: /^ext4$/,
  vfat: /^fuse\.fusefat$|^fuse$/,
  exfat: /^fuseblk$|^fuse\.exfat/,
  tmpfs: /^tmpfs$/,
};

beforeAll(() => {
  if (process.getuid?.() !== 0) throw new Error("test/store-fs.test.ts mounts filesystems: run it as root (CI does)");
  work = mkdtempSync(join(tmpdir(), "sharenode-store-fs-"));
});

afterAll(() => {
  const failures: string[] = [];
  for (const c of cleanups.reverse()) {
    try {
      c.run();
    } catch (err) {
      failures.push(`${c.what}: ${errorMessage(err)}`);
    }
  }
  cleanups.length = 0;
  // Never remove a directory that still has a filesystem mounted inside: that would delete its contents.
  const stillMounted = work
    ? readFileSync("/proc/self/mountinfo", "utf8")
        .split("\n")
        .filter((l) => l.split(" ")[4]?.startsWith(work + "/"))
    : [];
  if (work && stillMounted.length === 0) rmSync(work, { recursive: true, force: true });
  if (failures.length || stillMounted.length)
    throw new Error(`cleanup: ${[...failures, ...stillMounted.map((l) => `still mounted: ${l}`)].join("; ")}`);
});

// --- helpers ---------------------------------------------------------------------------------------------------

async function* pieces(data: Uint8Array, size = 64 * 1024 + 7): AsyncIterable<Uint8Array> {
  for (let o = 0; o < data.length; o += size) yield data.subarray(o, o + size);
}

const openStores = new Set<ObjectStore>();

async function openStore(dataDir: string, extra: Partial<StoreConfig> = {}): Promise<ObjectStore> {
  const store = new ObjectStore({ dataDir, quota: { bytes: 2 ** 40 }, reserveBytes: 0, ...extra });
  openStores.add(store);
  await store.start();
  return store;
}

async function stop(store: ObjectStore): Promise<void> {
  openStores.delete(store);
  await store.stop();
}

afterEach(async () => {
  for (const s of openStores) await s.stop().catch(() => {});
  openStores.clear();
});

/** Every name under `dir`, relative, with "/" after directories. */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const entry of readdirSync(join(dir, rel), { withFileTypes: true })) {
      const name = rel ? `${rel}/${entry.name}` : entry.name;
      if (!rel && entry.name === "lost+found") continue; // ext4's own
      if (entry.isDirectory()) {
        out.push(name + "/");
        walk(name);
      } else out.push(name);
    }
  };
  walk("");
  return out.sort();
}

/** What the store's directory must hold, exactly: no mangled (8.3, upper-cased) names, no leftovers. */
function expectedTree(ids: string[], extra: string[] = []): string[] {
  const names = ["index.log", "objects/", "quarantine/", "tmp/", ...extra];
  for (const id of ids) {
    names.push(`objects/${id.slice(0, 2)}/`, `objects/${id.slice(0, 2)}/${id}`, `objects/${id.slice(0, 2)}/${id}.obao`);
  }
  return [...new Set(names)].sort();
}

/** Prefix dirs of deleted objects may stay (empty): they are not leftovers. */
function withoutEmptyPrefixDirs(names: string[], dir: string): string[] {
  return names.filter((n) => !(/^objects\/[0-9a-f]{2}\/$/.test(n) && readdirSync(join(dir, n)).length === 0));
}

// --- the store on each filesystem ------------------------------------------------------------------------------

const OBJECTS: Array<[string, number]> = [
  ["5 MiB", 5 * MiB],
  ["empty", 0],
  ["1 byte", 1],
  ["one chunk", 1024],
  ["one chunk and a byte", 1025],
  ["100 kB", 100_000],
];

describe.each(Object.keys(MOUNTERS))("the store on %s", (fs) => {
  let mnt: Mounted;
  let dataDir = "";

  beforeAll(async () => {
    mnt = await MOUNTERS[fs]!();
    dataDir = mnt.dir;
  });

  it("is really on that filesystem", async () => {
    expect(mnt.fstype).toMatch(EXPECTED_FSTYPE[fs]!);
    const found = await filesystemOf(dataDir);
    expect(found.mountPoint).toBe(dataDir);
    expect(found.fstype).toBe(mnt.fstype);
  });

  it("ingests, lists, survives a restart, deletes, scrubs clean, with names the filesystem keeps as written", async () => {
    const data = OBJECTS.map(([, length], i) => bytes(length, 7000 + i));
    const ids = data.map((d) => hex(nobleBlake3(d)));
    let store = await openStore(dataDir);
    expect(existsSync(join(dataDir, "store.lock"))).toBe(true);
    for (let i = 0; i < data.length; i++) {
      const { object, created } = await store.ingest(pieces(data[i]!), {
        declaredLength: i % 2 ? data[i]!.length : undefined,
        pin: i === 1,
      });
      expect(created).toBe(true);
      expect(object.id).toBe(ids[i]);
      expect(object.length).toBe(data[i]!.length);
    }
    // A second copy of content already stored is recognized, and leaves nothing behind.
    expect((await store.ingest(pieces(data[3]!))).created).toBe(false);
    expect(store.list().map((o) => [o.id, o.length])).toEqual(
      ids.map((id, i) => [id, data[i]!.length]).sort((a, b) => (a[0]! < b[0]! ? -1 : 1)),
    );
    const status = await store.status();
    expect(status.objects).toBe(OBJECTS.length);
    expect(status.usedBytes).toBeGreaterThanOrEqual(5 * MiB + 100_000);
    expect(tree(dataDir)).toEqual(expectedTree(ids, ["store.lock"]));
    // The bytes on disk are the bytes ingested.
    for (let i = 0; i < data.length; i++) {
      expect(statSync(store.objectPath(ids[i]!)).size).toBe(data[i]!.length);
      expect(Buffer.compare(readFileSync(store.objectPath(ids[i]!)), data[i]!)).toBe(0);
    }
    await stop(store);
    expect(existsSync(join(dataDir, "store.lock"))).toBe(false);

    store = await openStore(dataDir);
    expect(
      store
        .list()
        .map((o) => o.id)
        .sort(),
    ).toEqual([...ids].sort());
    expect(store.get(ids[1]!)?.pinned).toBe(true);
    expect((await store.status()).usedBytes).toBe(status.usedBytes);
    // A proof read works from the reopened store.
    const big = await store.openForProof(ids[0]!);
    try {
      expect(big.length).toBe(5 * MiB);
      expect(
        Buffer.compare(await big.readAt(3 * MiB + 5, 4096), data[0]!.subarray(3 * MiB + 5, 3 * MiB + 5 + 4096)),
      ).toBe(0);
    } finally {
      await big.close();
    }

    await store.delete(ids[5]!);
    expect(store.has(ids[5]!)).toBe(false);
    expect(existsSync(store.objectPath(ids[5]!))).toBe(false);
    expect(existsSync(store.outboardPath(ids[5]!))).toBe(false);

    const report = await new Scrubber(store, { bytesPerSecond: 1e12 }).runOnce();
    expect(report).toMatchObject({ checked: OBJECTS.length - 1, corrupt: [], missing: [] });
    expect(report.bytes).toBe(data.slice(0, 5).reduce((n, d) => n + d.length, 0));
    const kept = ids.slice(0, 5);
    expect(withoutEmptyPrefixDirs(tree(dataDir), dataDir)).toEqual(expectedTree(kept, ["store.lock"]));
    await stop(store);

    store = await openStore(dataDir);
    expect(
      store
        .list()
        .map((o) => o.id)
        .sort(),
    ).toEqual([...kept].sort());
    await stop(store);
    expect(withoutEmptyPrefixDirs(tree(dataDir), dataDir)).toEqual(expectedTree(kept));
  });

  it("takes the durable primitives: writeFileAtomic (replacing, and modes), fsyncDir, removeStaleTemps", async () => {
    const d = join(dataDir, "durable");
    mkdirSync(d);
    const p = join(d, "state.json");
    const stale = tempPathFor(p);
    writeFileSync(stale, "partial");
    expect(await removeStaleTemps(p)).toEqual([basename(stale)]);
    await writeFileAtomic(p, "one");
    await writeFileAtomic(p, "two");
    expect(readFileSync(p, "utf8")).toBe("two");
    expect(readdirSync(d)).toEqual(["state.json"]);
    // A mode the filesystem cannot give (FAT has no permission bits) is refused, never silently dropped.
    const secret = await writeFileAtomic(p, "three", { mode: 0o600 }).then(() => "written", errorMessage);
    if (fs === "vfat" || fs === "exfat") {
      const refusal = fs === "vfat" ? /^ENOSYS: function not implemented, fchmod$/ : /: the filesystem keeps 0777$/;
      expect(secret).toMatch(refusal);
      expect(readFileSync(p, "utf8")).toBe("two");
    } else {
      expect(secret).toBe("written");
      expect(statSync(p).mode & 0o777).toBe(0o600);
    }
    expect(readdirSync(d)).toEqual(["state.json"]);
    await fsyncDir(d);
    await fsyncDir(dataDir);
    rmSync(d, { recursive: true });
  });
});

// --- a disk that fails its writes ------------------------------------------------------------------------------

describe("a disk that fails to write (ext4 on a loop image whose backing tmpfs is full)", () => {
  it("fsyncDir reports the failed directory write as EIO, never as 'not supported'", async () => {
    // 4 KiB blocks, as the tmpfs's pages: every block mkfs did not write is a hole that needs a new page. No
    // journal, so the directory fsync writes the directory's own block (with one, a commit could fail first).
    const { dir: backing } = await tmpfs("failing-backing", "4m");
    const img = join(backing, "ext4.img");
    closeSync(openSync(img, "w"));
    truncateSync(img, 64 * MiB);
    sh("mkfs.ext4", ["-q", "-F", "-b", "4096", "-O", "^has_journal", "-E", "lazy_itable_init=1,nodiscard", img]);
    const dir = mountPoint("failing");
    detachLater(img);
    unmountLater(dir, false);
    sh("mount", ["-o", "loop", img, dir]);
    expect(await waitMounted(dir)).toBe("ext4");
    // Fill the backing tmpfs: from here on the loop device cannot store a block the image never held.
    const filler = openSync(join(backing, "filler"), "w");
    let full = "";
    try {
      for (const size of [1 << 20, 4096]) for (;;) writeSync(filler, Buffer.alloc(size));
    } catch (err) {
      full = (err as NodeJS.ErrnoException).code ?? "";
    } finally {
      closeSync(filler);
    }
    expect(full).toBe("ENOSPC");
    const sub = join(dir, "entries");
    mkdirSync(sub);
    writeFileSync(join(sub, "new"), "");
    renameSync(join(sub, "new"), join(sub, "renamed"));
    await expect(fsyncDir(sub)).rejects.toMatchObject({ code: "EIO" });
  });
});

// --- a full disk -----------------------------------------------------------------------------------------------

describe("a full disk (a tmpfs of 2 MiB each)", () => {
  let disks = 0;
  const small = [bytes(10_000, 1), bytes(50_000, 2)];
  const smallIds = small.map((d) => hex(nobleBlake3(d)));

  /** A fresh 2 MiB tmpfs holding a store with the two small objects. */
  async function fullDisk(): Promise<{ dataDir: string; store: ObjectStore }> {
    const { dir: dataDir } = await tmpfs(`full-${++disks}`, "2m");
    const store = await openStore(dataDir);
    for (const d of small) await store.ingest(pieces(d));
    return { dataDir, store };
  }

  it("an undeclared 3 MB stream hits ENOSPC: disk-full, tmp/ empty, the index unchanged, the store still works", async () => {
    const disk = await fullDisk();
    const { dataDir } = disk;
    let { store } = disk;
    const indexBefore = readFileSync(join(dataDir, "index.log"));
    const listBefore = store.list();

    // No declared length and a quota far above the disk: nothing refuses it before the disk does.
    const err = await store.ingest(pieces(bytes(3_000_000, 3))).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).code).toBe("disk-full");
    expect((err as StoreError).message).not.toContain("\n");
    expect(readdirSync(join(dataDir, "tmp"))).toEqual([]);
    expect(Buffer.compare(readFileSync(join(dataDir, "index.log")), indexBefore)).toBe(0);
    expect(store.list()).toEqual(listBefore);

    // The store goes on working.
    const added = await store.ingest(pieces(bytes(20_000, 4)));
    expect(added.created).toBe(true);
    await stop(store);

    store = await openStore(dataDir);
    expect(
      store
        .list()
        .map((o) => o.id)
        .sort(),
    ).toEqual([...smallIds, added.object.id].sort());
    const report = await new Scrubber(store, { bytesPerSecond: 1e12 }).runOnce();
    expect(report).toMatchObject({ checked: 3, corrupt: [], missing: [] });
    expect(readdirSync(join(dataDir, "tmp"))).toEqual([]);
    await stop(store);
  });

  it("a declared length larger than the whole disk is refused before any byte is written, evicting nothing", async () => {
    const { dataDir, store } = await fullDisk();
    const listBefore = store.list();
    const removed: string[] = [];
    store.on("object-removed", (e) => removed.push(`${e.id}:${e.reason}`));
    const err = await store.ingest(pieces(bytes(3_000_000, 3)), { declaredLength: 3_000_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).code).toBe("quota");
    expect(readdirSync(join(dataDir, "tmp"))).toEqual([]);
    // Evicting every unpinned object could never make room for 3 MB on a 2 MiB disk: none may be evicted.
    expect(removed).toEqual([]);
    expect(store.list()).toEqual(listBefore);
  });

  it("a streamed object that fits on the disk is stored without evicting anything (its temp file is not counted twice)", async () => {
    // ~1.9 MiB free: an object of 1.1 MB fits once, but not twice. Without a declared length the store checks
    // the quota after writing the temp file, when statfs no longer counts the temp file's blocks as free.
    const { store } = await fullDisk();
    const free = (await store.status()).availableBytes;
    const length = 1_100_000;
    expect(free).toBeGreaterThan(length + 200_000);
    expect(free).toBeLessThan(2 * length);
    const removed: string[] = [];
    store.on("object-removed", (e) => removed.push(`${e.id}:${e.reason}`));
    const result = await store.ingest(pieces(bytes(length, 5))).then(
      () => "stored",
      (e: unknown) => String(e),
    );
    expect({ result, removed }).toEqual({ result: "stored", removed: [] });
    expect(store.list()).toHaveLength(3);
  });
});

// --- the data disk goes away -----------------------------------------------------------------------------------

describe("the mount point vanishes under a running store", () => {
  it("ingest and openForProof fail with a one-line StoreError; checkDataDisk then reports marker-missing", async () => {
    const { dir: dataDir } = await tmpfs("vanish", "16m");
    const stateDir = join(work, "vanish-state");
    const nodeId = "0123456789abcdef0123456789abcdef";
    const adopted = await checkDataDisk({ dataDir, stateDir, nodeId, allowSystemDisk: true });
    expect(adopted).toMatchObject({ ok: true, adopted: "new" });

    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on("unhandledRejection", onUnhandled);
    try {
      const store = await openStore(dataDir);
      const data = bytes(30_000, 9);
      const { object } = await store.ingest(pieces(data));

      sh("umount", ["-l", dataDir]);
      expect(mountedType(dataDir)).toBeUndefined();

      const ingestErr = await store.ingest(pieces(bytes(20_000, 10))).catch((e: unknown) => e);
      // soft: the checks below still run when this one fails
      expect.soft(ingestErr, `ingest threw ${String(ingestErr)}`).toBeInstanceOf(StoreError);
      expect.soft(errorMessage(ingestErr)).not.toContain("\n");
      expect.soft((ingestErr as StoreError).code).toBe("io");

      const proofErr = await store.openForProof(object.id).catch((e: unknown) => e);
      expect(proofErr, `openForProof threw ${String(proofErr)}`).toBeInstanceOf(StoreError);
      expect((proofErr as StoreError).message).not.toContain("\n");
      expect((proofErr as StoreError).code).toBe("io");
      expect((proofErr as StoreError).message).toMatch(/mounted/);

      // Nothing was written to the directory left behind (on the system disk).
      expect(readdirSync(dataDir)).toEqual([]);
      await stop(store);
      expect(readdirSync(dataDir)).toEqual([]);

      const check = await checkDataDisk({ dataDir, stateDir, nodeId, allowSystemDisk: true });
      expect(check).toMatchObject({ ok: false, code: "marker-missing" });
      expect(check.ok === false && check.reason).not.toContain("\n");
      expect(readdirSync(dataDir)).toEqual([]);
      await new Promise((r) => setTimeout(r, 50)); // let a stray rejection surface
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
    expect(unhandled).toEqual([]);
  });
});
