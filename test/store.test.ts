// The object store on a real filesystem: ingest, dedupe, rejection leaving nothing behind, delete, pins and
// eviction, quota, restart, crash repair, scrub.
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { RecordLog } from "../agent/durable/record-log";
import { blake3 } from "../agent/kernels/blake3";
import { createOutboard } from "../agent/kernels/outboard";
import { encodeRecord } from "../agent/store/index-log";
import { MAX_OBJECT_LEN, ObjectStore, StoreError, type StoreConfig } from "../agent/store/object-store";
import { Scrubber } from "../agent/store/scrub";
import { seededBytes as bytes } from "./helpers/random";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

async function* pieces(data: Uint8Array, size = 7000): AsyncIterable<Uint8Array> {
  for (let o = 0; o < data.length; o += size) yield data.subarray(o, o + size);
}

let dir = "";
let stores: ObjectStore[] = [];

function config(extra: Partial<StoreConfig> = {}): StoreConfig {
  return { dataDir: dir, quota: { bytes: 1 << 30 }, reserveBytes: 0, ...extra };
}

async function open(extra: Partial<StoreConfig> = {}, now = () => Date.now()): Promise<ObjectStore> {
  const store = new ObjectStore(config(extra), { now });
  await store.start();
  stores.push(store);
  return store;
}

const filesUnder = (sub: string) =>
  existsSync(join(dir, sub)) ? readdirSync(join(dir, sub), { recursive: true }).map(String) : [];
const objectFiles = () => filesUnder("objects").filter((f) => /[0-9a-f]{64}/.test(f));

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "sharenode-store-"));
  stores = [];
});

afterEach(async () => {
  for (const s of stores) await s.stop().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

describe("ingest", () => {
  it("stores an object under its BLAKE3 id with its outboard, and counts it from the index", async () => {
    const store = await open();
    const data = bytes(100_000, 1);
    const { object, created } = await store.ingest(pieces(data));
    expect(created).toBe(true);
    expect(object.id).toBe(hex(blake3(data)));
    expect(object.length).toBe(100_000);
    expect(Buffer.from(readFileSync(store.objectPath(object.id))).equals(Buffer.from(data))).toBe(true);
    expect(existsSync(store.outboardPath(object.id))).toBe(true);
    expect(store.list().map((o) => o.id)).toEqual([object.id]);
    const status = await store.status();
    expect(status.objects).toBe(1);
    expect(status.usedBytes).toBeGreaterThanOrEqual(100_000);
    expect(filesUnder("tmp")).toEqual([]);
  });

  it("deduplicates identical content", async () => {
    const store = await open();
    const data = bytes(5000, 2);
    const first = await store.ingest(pieces(data));
    const used = (await store.status()).usedBytes;
    const again = await store.ingest(pieces(data, 13));
    expect(again.created).toBe(false);
    expect(again.object.id).toBe(first.object.id);
    expect((await store.status()).usedBytes).toBe(used);
  });

  it("rejects content whose hash is not the expected id and leaves nothing behind", async () => {
    const store = await open();
    const data = bytes(50_000, 3);
    const wrong = "00".repeat(32);
    await expect(store.ingest(pieces(data), { expectedId: wrong })).rejects.toMatchObject({ code: "hash-mismatch" });
    expect(objectFiles()).toEqual([]);
    expect(filesUnder("tmp")).toEqual([]);
    expect((await store.status()).usedBytes).toBe(0);
    const right = await store.ingest(pieces(data), { expectedId: hex(blake3(data)) });
    expect(right.created).toBe(true);
  });

  it("rejects a truncated source (declared length not reached) and leaves nothing behind", async () => {
    const store = await open();
    const data = bytes(30_000, 4);
    await expect(store.ingest(pieces(data.subarray(0, 20_000)), { declaredLength: 30_000 })).rejects.toMatchObject({
      code: "truncated",
    });
    await expect(store.ingest(pieces(data), { declaredLength: 20_000 })).rejects.toMatchObject({ code: "truncated" });
    expect(objectFiles()).toEqual([]);
    expect(filesUnder("tmp")).toEqual([]);
  });

  it("refuses objects over 64 MiB, declared or streamed", async () => {
    const store = await open();
    await expect(store.ingest(pieces(new Uint8Array(1)), { declaredLength: MAX_OBJECT_LEN + 1 })).rejects.toMatchObject(
      { code: "too-large" },
    );
    const block = new Uint8Array(1 << 20);
    async function* big() {
      for (let i = 0; i <= 64; i++) yield block;
    }
    await expect(store.ingest(big())).rejects.toMatchObject({ code: "too-large" });
    expect(filesUnder("tmp")).toEqual([]);
  });

  it("rejects a malformed expected id with a one-line error", async () => {
    const store = await open();
    const err = await store.ingest(pieces(bytes(10, 1)), { expectedId: "xyz" }).catch((e) => e);
    expect(err).toBeInstanceOf(StoreError);
    expect(err.code).toBe("bad-id");
    expect(err.message).not.toContain("\n");
  });
});

describe("delete, pins, eviction, quota", () => {
  it("deletes an object and its files", async () => {
    const store = await open();
    const { object } = await store.ingest(pieces(bytes(20_000, 5)));
    await store.delete(object.id);
    expect(store.has(object.id)).toBe(false);
    expect(objectFiles()).toEqual([]);
    expect((await store.status()).usedBytes).toBe(0);
    await expect(store.delete(object.id)).rejects.toMatchObject({ code: "not-found" });
  });

  it("evicts the least recently used unpinned objects to make room, never pinned ones", async () => {
    let t = 1000;
    const store = await open({ quota: { bytes: 3 * 40_960 + 3 * 4096 } }, () => t);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      t += 1000;
      ids.push((await store.ingest(pieces(bytes(40_000, 10 + i)), { pin: i === 0 })).object.id);
    }
    // Use object 1 so that object 2 becomes the least recently used unpinned one.
    t += 1000;
    await (await store.openForProof(ids[1]!)).close();
    t += 1000;
    const removed: string[] = [];
    store.on("object-removed", (e) => removed.push(`${e.id}:${e.reason}`));
    const fourth = await store.ingest(pieces(bytes(40_000, 20)));
    expect(removed).toEqual([`${ids[2]}:evicted`]);
    expect(store.has(ids[0]!)).toBe(true);
    expect(store.has(ids[1]!)).toBe(true);
    expect(store.has(fourth.object.id)).toBe(true);
  });

  it("refuses with a quota error when nothing can be evicted", async () => {
    const store = await open({ quota: { bytes: 2 * 40_960 + 2 * 4096 } });
    await store.ingest(pieces(bytes(40_000, 30)), { pin: true });
    await store.ingest(pieces(bytes(40_000, 31)), { pin: true });
    const err = await store.ingest(pieces(bytes(40_000, 32)), { declaredLength: 40_000 }).catch((e) => e);
    expect(err).toMatchObject({ code: "quota" });
    expect(err.message).toMatch(/no room/);
    expect(store.list()).toHaveLength(2);
    expect(filesUnder("tmp")).toEqual([]);
  });

  it("emits quota-near when used space crosses the threshold", async () => {
    const store = await open({ quota: { bytes: 100_000 }, nearQuotaShare: 0.5 });
    const events: unknown[] = [];
    store.on("quota-near", (e) => events.push(e));
    await store.ingest(pieces(bytes(10_000, 40)));
    expect(events).toHaveLength(0);
    await store.ingest(pieces(bytes(50_000, 41)));
    expect(events).toHaveLength(1);
  });
});

describe("disk-low", () => {
  it("is emitted at start when free space on the disk is below the reserve, and the reserve is never used", async () => {
    const probe = await open();
    const free = (await probe.status()).availableBytes;
    await probe.stop();
    const store = new ObjectStore(config({ reserveBytes: free * 2 }));
    const events: Array<{ availableBytes: number; reserveBytes: number }> = [];
    store.on("disk-low", (e) => events.push(e));
    await store.start();
    stores.push(store);
    expect(events).toHaveLength(1);
    expect(events[0]!.reserveBytes).toBe(free * 2);
    // With the reserve out of reach, nothing fits: the store refuses rather than eat into it.
    await expect(store.ingest(pieces(bytes(1000, 1)), { declaredLength: 1000 })).rejects.toMatchObject({
      code: "quota",
    });
  });
});

describe("restart and crash repair", () => {
  it("reopens with the same objects and used bytes", async () => {
    const store = await open();
    const a = await store.ingest(pieces(bytes(3000, 50)), { pin: true });
    const b = await store.ingest(pieces(bytes(70_000, 51)));
    await store.ingest(pieces(bytes(9000, 52)));
    await store.delete(b.object.id);
    const before = await store.status();
    await store.stop();
    const again = await open();
    expect(
      again
        .list()
        .map((o) => o.id)
        .sort(),
    ).toEqual(
      store
        .list()
        .map((o) => o.id)
        .sort(),
    );
    expect(again.get(a.object.id)?.pinned).toBe(true);
    expect((await again.status()).usedBytes).toBe(before.usedBytes);
  });

  it("compacts the index when dead records dominate, and keeps the state", async () => {
    const store = await open();
    const keep = await store.ingest(pieces(bytes(2000, 60)));
    for (let i = 0; i < 60; i++) {
      const { object } = await store.ingest(pieces(bytes(100 + i, 100 + i)));
      await store.delete(object.id);
    }
    await store.stop();
    // 181 records were appended; compaction keeps the log below its 64-record trigger.
    const { log, records } = await RecordLog.open(join(dir, "index.log"));
    await log.close();
    expect(records.length).toBeLessThan(64);
    const again = await open();
    expect(again.list().map((o) => o.id)).toEqual([keep.object.id]);
  });

  it("rolls back a begun ingest whose files are incomplete, keeps one that is complete, empties tmp/, finishes deletes", async () => {
    // Build the on-disk state a power cut leaves, then start.
    const first = await open();
    const complete = bytes(30_000, 70);
    const deleted = bytes(20_000, 71);
    const { object: del } = await first.ingest(pieces(deleted));
    const { object: done } = await first.ingest(pieces(complete));
    await first.stop();
    // "done": pretend its add record never made it: rewrite the log with begin only.
    const { log } = await RecordLog.open(join(dir, "index.log"));
    await log.rewrite([
      encodeRecord({ o: "add", id: del.id, len: del.length, pin: false, at: 1 }),
      encodeRecord({ o: "begin", id: done.id, len: done.length }),
      encodeRecord({ o: "begin", id: "ab".repeat(32), len: 5000 }),
      encodeRecord({ o: "del", id: del.id }),
    ]);
    await log.close();
    // The half-placed one: an outboard without its object.
    mkdirSync(join(dir, "objects", "ab"), { recursive: true });
    writeFileSync(join(dir, "objects", "ab", `${"ab".repeat(32)}.obao`), "partial");
    writeFileSync(join(dir, "tmp", "deadbeef.part"), "half an ingest");
    const messages: string[] = [];
    const again = new ObjectStore(config());
    again.on("recovered", (e) => messages.push(e.message));
    await again.start();
    stores.push(again);
    expect(again.list().map((o) => o.id)).toEqual([done.id]);
    expect(objectFiles().sort()).toEqual(
      [`${done.id.slice(0, 2)}/${done.id}`, `${done.id.slice(0, 2)}/${done.id}.obao`].sort(),
    );
    expect(filesUnder("tmp")).toEqual([]);
    expect(messages.some((m) => m.includes("kept object"))).toBe(true);
    expect(messages.some((m) => m.includes("rolled back"))).toBe(true);
  });
});

describe("adopt (a file already verified on the data disk, moved in)", () => {
  /** A verified fetch's file as agent/fetch leaves it: on the data disk, outside tmp/. */
  function fetched(data: Uint8Array, name = "x.part"): string {
    mkdirSync(join(dir, "fetch"), { recursive: true });
    const path = join(dir, "fetch", name);
    writeFileSync(path, data);
    return path;
  }

  it("moves the file into place under its id with its outboard: the same object ingest makes, a proof checks", async () => {
    const store = await open();
    const data = bytes(300_000, 90);
    const { outboard } = createOutboard(data);
    const path = fetched(data);
    const { object, created } = await store.adopt(path, { outboard, pin: true });
    expect([created, object.id, object.length, object.pinned]).toEqual([true, hex(blake3(data)), 300_000, true]);
    expect(existsSync(path)).toBe(false);
    expect(Buffer.from(readFileSync(store.objectPath(object.id))).equals(Buffer.from(data))).toBe(true);
    expect(Buffer.from(readFileSync(store.outboardPath(object.id))).equals(Buffer.from(outboard))).toBe(true);
    expect((await new Scrubber(store, { bytesPerSecond: 1e12 }).runOnce()).corrupt).toEqual([]);
    // Kept across a restart like an ingested object.
    await store.stop();
    const again = await open();
    expect(again.get(object.id)).toMatchObject({ length: 300_000, pinned: true });
    // A second copy of an object already stored is dropped, the object kept.
    const dup = fetched(data, "dup.part");
    expect((await again.adopt(dup, { outboard })).created).toBe(false);
    expect(existsSync(dup)).toBe(false);
  });

  it("refuses an outboard of another group size, or a file of another length, leaving the file where it was", async () => {
    const store = await open();
    const data = bytes(100_000, 91);
    const path = fetched(data);
    const coarse = createOutboard(data, 5).outboard;
    expect(await store.adopt(path, { outboard: coarse }).catch((e) => e)).toMatchObject({ code: "bad-outboard" });
    expect(await store.adopt(path, { outboard: new Uint8Array(10) }).catch((e) => e)).toMatchObject({
      code: "bad-outboard",
    });
    const other = createOutboard(bytes(100_001, 91)).outboard;
    const err = await store.adopt(path, { outboard: other }).catch((e) => e);
    expect(err).toMatchObject({ code: "truncated" });
    expect(err.message).toMatch(/has 100000 bytes, the outboard 100001/);
    expect(existsSync(path)).toBe(true);
    expect(store.list()).toEqual([]);
  });

  it("makes room like ingest, and refuses with quota (the file deleted) when nothing can be evicted", async () => {
    const store = await open({ quota: { bytes: 2 * 40_960 + 2 * 4096 } });
    await store.ingest(pieces(bytes(40_000, 92)), { pin: true });
    const old = await store.ingest(pieces(bytes(40_000, 93)));
    const data = bytes(40_000, 94);
    const made = await store.adopt(fetched(data), { outboard: createOutboard(data).outboard });
    expect(store.has(old.object.id)).toBe(false);
    expect(store.has(made.object.id)).toBe(true);
    await store.pin(made.object.id, true);
    const more = bytes(40_000, 95);
    const path = fetched(more, "more.part");
    expect(await store.adopt(path, { outboard: createOutboard(more).outboard }).catch((e) => e)).toMatchObject({
      code: "quota",
    });
    expect(existsSync(path)).toBe(false);
    expect(store.list()).toHaveLength(2);
  });
});

describe("scrub", () => {
  it("finds a corrupted object, quarantines it, and leaves the others", async () => {
    const store = await open();
    const good = await store.ingest(pieces(bytes(40_000, 80)));
    const bad = await store.ingest(pieces(bytes(40_000, 81)));
    const path = store.objectPath(bad.object.id);
    const content = readFileSync(path);
    content[12_345] ^= 1;
    writeFileSync(path, content);
    const report = await new Scrubber(store, { bytesPerSecond: 1e12 }).runOnce();
    expect(report.corrupt).toEqual([bad.object.id]);
    expect(report.checked).toBe(2);
    expect(store.has(bad.object.id)).toBe(false);
    expect(store.has(good.object.id)).toBe(true);
    expect(filesUnder("quarantine").some((f) => f.startsWith(bad.object.id))).toBe(true);
    expect((await store.status()).quarantined).toBe(1);
    await store.stop();
    const again = await open();
    expect(again.has(bad.object.id)).toBe(false);
    // Counted from the directory at start, not only by this process.
    expect((await again.status()).quarantined).toBe(1);
  });

  it("treats a missing outboard as corrupt and a missing object file as missing", async () => {
    const store = await open();
    const a = await store.ingest(pieces(bytes(5000, 90)));
    const b = await store.ingest(pieces(bytes(5000, 91)));
    unlinkSync(store.outboardPath(a.object.id));
    unlinkSync(store.objectPath(b.object.id));
    const report = await new Scrubber(store, { bytesPerSecond: 1e12 }).runOnce();
    expect(report.corrupt).toEqual([a.object.id]);
    expect(report.missing).toEqual([b.object.id]);
    expect(store.list()).toEqual([]);
  });

  it("paces its reads at the configured rate (injected clock)", async () => {
    const store = await open();
    for (let i = 0; i < 4; i++) await store.ingest(pieces(bytes(100_000, 100 + i)));
    let now = 0;
    const report = await new Scrubber(store, {
      bytesPerSecond: 50_000,
      now: () => now,
      sleep: async (ms) => {
        now += ms;
      },
    }).runOnce();
    expect(report.bytes).toBe(400_000);
    // 400,000 bytes at 50,000 B/s: 8 s of pacing, none of it skipped or doubled.
    expect(now).toBeCloseTo(8000, 6);
  });
});
