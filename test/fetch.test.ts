// The fetcher against a real HTTP origin (node:http on loopback): several sources at once, each group checked
// against the outboard as it arrives, and every way a source goes wrong (a bad group, a stall, a dropped
// connection, short content, 404) dropping that source with its reason while the good ones finish the object.
// Without an outboard the object is checked whole, and a liar is found by fetching from one source at a time.
// A box as a source (agent/serve's real ObjectServer and OrderGate, in process) is paid in receipts: a fetch past
// its receipt window finishes only with them, and a resumed fetch never signs less than the run before it.
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { GroupChecker, OutboardMismatch } from "../agent/fetch/group-check";
import { Fetcher, type FetchResult, type FetcherOptions, type ReceiptSigner } from "../agent/fetch/fetcher";
import { PartialObject } from "../agent/fetch/partial";
import { type DeviceIdentity, loadOrCreateDeviceIdentity } from "../agent/identity/device-key";
import { blake3 } from "../agent/kernels/blake3";
import { createOutboard, OutboardError } from "../agent/kernels/outboard";
import { signOrder } from "../agent/protocol/order";
import { openReceipt, signReceipt, verifyServed } from "../agent/protocol/receipt";
import { OrderGate } from "../agent/serve/order-gate";
import { ReceiptBook } from "../agent/serve/receipt-book";
import { ObjectServer } from "../agent/serve/server";
import { ObjectStore } from "../agent/store/object-store";
import { Origin } from "./helpers/origin";
import { seededBytes } from "./helpers/random";
import { waitFor } from "./helpers/wait";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const GROUP = 16 * 1024;

let origin: Origin;
let dir = "";
let agent: http.Agent;

beforeAll(async () => {
  origin = await Origin.start();
});
afterAll(async () => {
  await origin?.stop();
});
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "sharenode-fetch-"));
  agent = new http.Agent({ keepAlive: true });
});
afterEach(() => {
  agent.destroy();
  rmSync(dir, { recursive: true, force: true });
});

/** An object, its id and outboard, served by the origin under `name` (the outboard at `name.obao`). */
function object(name: string, length: number, seed: number) {
  const data = seededBytes(length, seed);
  const { id, outboard } = createOutboard(data);
  const outboardUrl = origin.serve(`${name}.obao`, outboard);
  return { data, id, objectId: hex(id), outboard, outboardUrl };
}

const fetcher = (options: FetcherOptions = {}) =>
  new Fetcher({ stallMs: 300, pieceBytes: 64 * 1024, agents: { http: agent }, ...options });

async function bytesOf(result: FetchResult): Promise<Buffer> {
  if (!result.ok) throw new Error(`fetch failed: ${result.code}: ${result.reason}`);
  const parts: Uint8Array[] = [];
  for await (const p of result.partial.read()) parts.push(p);
  await result.partial.remove();
  return Buffer.concat(parts);
}

describe("GroupChecker", () => {
  it("checks an outboard against the id, then each group; a changed byte or node fails", () => {
    for (const length of [0, 1, 1024, GROUP, GROUP + 1, 5 * GROUP + 777, 300_000]) {
      const data = seededBytes(length, length + 1);
      const { id, outboard } = createOutboard(data);
      const checker = GroupChecker.fromOutboard(outboard, id, length);
      for (let g = 0; g < checker.groups; g++) {
        const { offset, length: n } = checker.span(g);
        const group = data.subarray(offset, offset + n);
        expect(checker.check(g, group), `length ${length} group ${g}`).toBe(true);
        if (n > 0) {
          const bad = Buffer.from(group);
          bad[n >> 1]! ^= 1;
          expect(checker.check(g, bad), `length ${length} group ${g} flipped`).toBe(false);
        }
        // Right bytes at the wrong place: the chunk counter is part of the hash.
        if (checker.groups > 2 && g === 0) expect(checker.check(1, group)).toBe(false);
      }
      if (checker.groups > 1) {
        const forged = Buffer.from(outboard);
        forged[48 + 5]! ^= 1; // a parent above the groups
        expect(() => GroupChecker.fromOutboard(forged, id, length)).toThrow(OutboardMismatch);
      }
    }
  });

  it("refuses an outboard of another object or length, and one that is not an outboard", () => {
    const a = createOutboard(seededBytes(50_000, 1));
    const b = createOutboard(seededBytes(50_000, 2));
    expect(() => GroupChecker.fromOutboard(a.outboard, b.id, 50_000)).toThrow(/is for object/);
    expect(() => GroupChecker.fromOutboard(a.outboard, a.id, 50_001)).toThrow(/is for 50000 bytes/);
    expect(() => GroupChecker.fromOutboard(new Uint8Array(100), a.id, 50_000)).toThrow(OutboardError);
  });
});

describe("Fetcher", () => {
  it("fetches from three good sources in parallel, checking every group", async () => {
    const o = object("three", 1024 * 1024 + 5000, 11);
    const urls = ["a", "b", "c"].map((n) => origin.serve(`three-${n}`, o.data));
    const checkpoints: number[] = [];
    const result = await fetcher().fetch(
      { objectId: o.objectId, length: o.data.length, sources: urls, outboard: o.outboardUrl },
      dir,
      { onCheckpoint: (p) => checkpoints.push(p.bytesDurable) },
    );
    expect(result.ok && result.verifiedBy).toBe("groups");
    expect(result.dropped).toEqual([]);
    expect((await bytesOf(result)).equals(o.data)).toBe(true);
    // Each source carried part of it, and nothing was fetched twice.
    const served = ["a", "b", "c"].map((n) => origin.servedAt(`three-${n}`).bytes);
    for (const s of served) expect(s).toBeGreaterThan(0);
    expect(served.reduce((x, y) => x + y)).toBe(o.data.length);
    expect(checkpoints.at(-1)).toBe(o.data.length);
    // Removed after use: nothing left in the fetch directory.
    expect(readdirSync(dir)).toEqual([]);
  });

  it("drops a source that sends one bad group, naming it and the group; the good source finishes", async () => {
    const o = object("badgroup", 600_000, 12);
    const liar = origin.serve("badgroup-liar", o.data, { kind: "corrupt", offset: 3 * GROUP + 100 });
    const good = origin.serve("badgroup-good", o.data);
    // The liar is asked first, for the piece that holds its bad group.
    const result = await fetcher().fetch(
      { objectId: o.objectId, length: o.data.length, sources: [liar, good], outboard: o.outboardUrl },
      dir,
    );
    expect(result.dropped).toEqual([
      {
        url: liar,
        code: "bad-data",
        reason: `group 3 (bytes ${3 * GROUP}-${4 * GROUP - 1}) does not match the outboard`,
      },
    ]);
    expect((await bytesOf(result)).equals(o.data)).toBe(true);
  });

  for (const [kind, behaviour, code, reason] of [
    ["stalls", { kind: "stall", after: 100_000 }, "stalled", /^no bytes for 300 ms$/],
    ["drops the connection", { kind: "drop", after: 100_000 }, "connection", /connection|aborted|socket hang up/],
    [
      "sends short content",
      { kind: "short", keep: 40_000 },
      "short",
      /^sent 40000 of the 65536 bytes asked for \(bytes 0-65535\)$/,
    ],
    ["answers 404", { kind: "not-found" }, "not-found", /^HTTP 404$/],
  ] as const) {
    it(`drops a source that ${kind}; the good source finishes the object`, async () => {
      const name = `bad-${code}`;
      const o = object(name, 700_000, 13);
      const bad = origin.serve(`${name}-bad`, o.data, behaviour);
      const good = origin.serve(`${name}-good`, o.data);
      const result = await fetcher().fetch(
        { objectId: o.objectId, length: o.data.length, sources: [bad, good], outboard: o.outboardUrl },
        dir,
      );
      expect(result.dropped.map((d) => [d.url, d.code])).toEqual([[bad, code]]);
      expect(result.dropped[0]!.reason).toMatch(reason);
      expect((await bytesOf(result)).equals(o.data)).toBe(true);
    });
  }

  it("follows a source's redirects (at most 3), without its order token to another origin", async () => {
    const o = object("redir", 300_000, 23);
    origin.serve("redir-final", o.data);
    const hop = origin.serve("redir-hop", o.data, { kind: "redirect", to: "/redir-final" });
    // Another origin (by port) that redirects here: the token must not follow.
    const other = await Origin.start();
    try {
      const first = other.serve("redir-first", o.data, { kind: "redirect", to: hop });
      const result = await fetcher().fetch(
        {
          objectId: o.objectId,
          length: o.data.length,
          sources: [first],
          outboard: o.outboardUrl,
          headersFor: (url) => (url === first ? { "sharenode-order": "tok" } : undefined),
        },
        dir,
      );
      expect((await bytesOf(result)).equals(o.data)).toBe(true);
      expect(other.servedAt("redir-first").orders.every((t) => t === "tok")).toBe(true);
      expect(origin.servedAt("redir-final").orders.every((t) => t === undefined)).toBe(true);
      const loop = origin.serve("redir-loop", o.data, { kind: "redirect", to: "/redir-loop" });
      const looped = await fetcher().fetch(
        { objectId: o.objectId, length: o.data.length, sources: [loop], outboard: o.outboardUrl },
        dir,
      );
      expect(looped.dropped).toEqual([{ url: loop, code: "http-error", reason: "HTTP 302: too many redirects" }]);
    } finally {
      await other.stop();
    }
  });

  it("fails not-found when every source answers 404, all-sources-failed when they fail differently", async () => {
    const o = object("gone", 100_000, 14);
    const a = origin.serve("gone-a", o.data, { kind: "not-found" });
    const b = origin.serve("gone-b", o.data, { kind: "not-found" });
    const c = origin.serve("gone-c", o.data, { kind: "short", keep: 10 });
    const spec = { objectId: o.objectId, length: o.data.length, outboard: o.outboardUrl };
    const notFound = await fetcher().fetch({ ...spec, sources: [a, b] }, dir);
    expect(notFound.ok).toBe(false);
    expect(!notFound.ok && notFound.code).toBe("not-found");
    const mixed = await fetcher().fetch({ ...spec, sources: [a, c] }, dir);
    expect(!mixed.ok && mixed.code).toBe("all-sources-failed");
    expect(!mixed.ok && mixed.reason).toContain(`${c}: short`);
    // Nothing unverified was kept: the partial file holds no block.
    const partial = await PartialObject.open(dir, o.objectId, o.data.length, GROUP, "groups");
    expect(partial.bytesIn).toBe(0);
    await partial.close();
  });

  it("without an outboard checks the whole object at the end", async () => {
    const data = seededBytes(400_000, 15);
    const objectId = hex(blake3(data));
    const urls = [origin.serve("whole-a", data), origin.serve("whole-b", data)];
    const result = await fetcher().fetch({ objectId, length: data.length, sources: urls }, dir);
    expect(result.ok && result.verifiedBy).toBe("whole");
    expect((await bytesOf(result)).equals(data)).toBe(true);
  });

  it("without an outboard, finds the liar by fetching from one source at a time", async () => {
    const data = seededBytes(400_000, 16);
    const objectId = hex(blake3(data));
    const liar = origin.serve("liar-a", data, { kind: "corrupt", offset: 1000 });
    const good = origin.serve("liar-b", data);
    const result = await fetcher().fetch({ objectId, length: data.length, sources: [liar, good] }, dir);
    expect(result.dropped.map((d) => [d.url, d.code])).toEqual([[liar, "bad-data"]]);
    expect((await bytesOf(result)).equals(data)).toBe(true);
    // The honest source first: its copy checks out, and the liar is named by the blocks it sent in the first
    // pass, which differ from that copy (it is never asked for the whole object alone). Each source takes one
    // piece at the start, in order: the liar's first is the object's second (bytes 65536-131071), with its bad byte.
    const liar2 = origin.serve("liar-c", data, { kind: "corrupt", offset: 70_000 });
    const named = await fetcher().fetch({ objectId, length: data.length, sources: [good, liar2] }, dir);
    expect(named.dropped).toEqual([
      { url: liar2, code: "bad-data", reason: "bytes 65536-81919 differ from the copy that hashes to the object id" },
    ]);
    expect((await bytesOf(named)).equals(data)).toBe(true);
    expect(origin.servedAt("liar-c").bytes).toBeLessThan(data.length);
    // A lone liar fails the fetch with bad-data, after one download.
    const before = origin.servedAt("liar-a").bytes;
    const alone = await fetcher().fetch({ objectId, length: data.length, sources: [liar] }, dir);
    expect(!alone.ok && alone.code).toBe("bad-data");
    expect(origin.servedAt("liar-a").bytes - before).toBe(data.length);
  });

  it("an outboard that does not check out is dropped and the object is checked whole", async () => {
    const o = object("badob", 300_000, 17);
    const other = createOutboard(seededBytes(300_000, 18));
    const badOutboard = origin.serve("badob-other.obao", other.outboard);
    const src = origin.serve("badob-src", o.data);
    const result = await fetcher().fetch(
      { objectId: o.objectId, length: o.data.length, sources: [src], outboard: badOutboard },
      dir,
    );
    expect(result.ok && result.verifiedBy).toBe("whole");
    expect(result.dropped).toEqual([
      { url: badOutboard, code: "bad-outboard", reason: `outboard is for object ${hex(other.id)}` },
    ]);
    expect((await bytesOf(result)).equals(o.data)).toBe(true);
  });

  it("resumes from the verified groups: a second run fetches only what the first did not make durable", async () => {
    const o = object("resume", 1024 * 1024, 19);
    const url = origin.serve("resume-src", o.data, { kind: "stall", after: 10 * GROUP });
    const spec = { objectId: o.objectId, length: o.data.length, sources: [url], outboard: o.outboardUrl };
    const first = await fetcher({ stallMs: 500, checkpointMs: 50 }).fetch(spec, dir);
    expect(!first.ok && first.code).toBe("all-sources-failed");
    const partial = await PartialObject.open(dir, o.objectId, o.data.length, GROUP, "groups");
    const durable = partial.bytesDurable;
    await partial.close();
    expect(durable).toBe(10 * GROUP);
    origin.behave("resume-src", { kind: "good" });
    const before = origin.servedAt("resume-src").bytes;
    const obaoBefore = origin.servedAt("resume.obao").requests;
    const second = await fetcher().fetch(spec, dir);
    expect((await bytesOf(second)).equals(o.data)).toBe(true);
    expect(origin.servedAt("resume-src").bytes - before).toBe(o.data.length - durable);
    expect(origin.servedAt("resume-src").ranges.at(-1)![1]).toBe(o.data.length);
    // The outboard was kept beside the partial file: not fetched again.
    expect(origin.servedAt("resume.obao").requests).toBe(obaoBefore);
  });

  it("an abort keeps the verified groups durable and stops at once", async () => {
    const o = object("abort", 512 * 1024, 20);
    const url = origin.serve("abort-src", o.data, { kind: "slow", bytesPerSecond: 1024 * 1024 });
    const controller = new AbortController();
    const spec = { objectId: o.objectId, length: o.data.length, sources: [url], outboard: o.outboardUrl };
    const running = fetcher({ stallMs: 5000 }).fetch(spec, dir, { signal: controller.signal });
    await waitFor("some groups", () => origin.servedAt("abort-src").bytes >= 64 * 1024 || undefined);
    controller.abort();
    const result = await running;
    expect(!result.ok && result.code).toBe("aborted");
    expect(result.dropped).toEqual([]);
    const partial = await PartialObject.open(dir, o.objectId, o.data.length, GROUP, "groups");
    expect(partial.bytesDurable).toBeGreaterThan(0);
    expect(partial.bytesDurable).toBeLessThan(o.data.length);
    await partial.close();
  });

  it("time spent in the throttle is not the source stalling", async () => {
    const o = object("slowtake", 100_000, 22);
    // In 16 KiB writes: the body arrives in several pieces per request.
    const url = origin.serve("slowtake-src", o.data, { kind: "slow", bytesPerSecond: 4 << 20 });
    // Each piece waits longer than the stall timeout in the throttle, as a low download rate makes it.
    const throttle = { take: () => new Promise<void>((resolve) => setTimeout(resolve, 500)) };
    const result = await fetcher({ throttle, stallMs: 400 }).fetch(
      { objectId: o.objectId, length: o.data.length, sources: [url], outboard: o.outboardUrl },
      dir,
    );
    expect(result.dropped).toEqual([]);
    expect((await bytesOf(result)).equals(o.data)).toBe(true);
  });

  it("every arriving byte passes the throttle hook", async () => {
    const o = object("throttle", 200_000, 21);
    const urls = [origin.serve("throttle-a", o.data), origin.serve("throttle-b", o.data)];
    let taken = 0;
    const throttle = { take: async (n: number) => void (taken += n) };
    const result = await fetcher({ throttle }).fetch(
      { objectId: o.objectId, length: o.data.length, sources: urls, outboard: o.outboardUrl },
      dir,
    );
    expect((await bytesOf(result)).equals(o.data)).toBe(true);
    expect(taken).toBe(o.data.length);
  });
});

describe("a box as a source: receipts", () => {
  const WINDOW = 256 * 1024;
  const DEVICE = "0123456789abcdef0123456789abcdef";
  let boxDir = "";
  let fleet: DeviceIdentity;
  let client: DeviceIdentity;
  let store: ObjectStore;
  let book: ReceiptBook;
  let server: ObjectServer;
  let base = "";
  let serials = 0;
  /** What the box saw: the receipt header of each request (undefined when none), and each POSTed receipt. */
  const shown: { url: string; receipt: string | undefined }[] = [];
  const posted: string[] = [];

  beforeAll(async () => {
    boxDir = mkdtempSync(join(tmpdir(), "sharenode-fetch-box-"));
    [fleet, client] = await Promise.all(["fleet", "client"].map((n) => loadOrCreateDeviceIdentity(join(boxDir, n))));
    store = new ObjectStore({ dataDir: join(boxDir, "data"), quota: { bytes: 1 << 30 }, reserveBytes: 0 });
    await store.start();
    book = new ReceiptBook(join(boxDir, "receipts.log"));
    await book.start();
    const gate = new OrderGate({ fleetPublicKey: fleet.publicKeyHex, deviceId: DEVICE, book, windowBytes: WINDOW });
    server = new ObjectServer({
      store,
      bind: "127.0.0.1",
      port: 0,
      gate: {
        open: (req, id) => {
          const r = req.headers["sharenode-receipt"];
          shown.push({ url: req.url ?? "", receipt: typeof r === "string" ? r : undefined });
          return gate.open(req, id);
        },
        receipt: (req, body) => {
          posted.push(body);
          return gate.receipt(req, body);
        },
      },
    });
    await server.start();
    base = `http://127.0.0.1:${server.port}`;
  });
  afterAll(async () => {
    await server?.stop();
    await book?.stop();
    await store?.stop();
    if (boxDir) rmSync(boxDir, { recursive: true, force: true });
  });
  beforeEach(() => {
    shown.length = 0;
    posted.length = 0;
  });

  /** An object the box stores, and an order for it naming `clientKey` (a new serial for each call). */
  async function boxObject(length: number, seed: number, clientKey = client.publicKeyHex) {
    const data = seededBytes(length, seed);
    const { object: stored } = await store.ingest(
      (async function* () {
        yield data;
      })(),
    );
    const objectId = stored.id;
    const serial = `f-${++serials}`;
    const token = signOrder(
      {
        serial,
        deviceId: DEVICE,
        objectId,
        clientKey,
        maxBytes: 1 << 30,
        expiresAt: Date.now() + 600_000,
        rightsId: "rights:test",
      },
      fleet,
    );
    const url = `${base}/v1/objects/${objectId}`;
    const orders: Record<string, string> = { [url]: token, [`${url}/outboard`]: token };
    return {
      data,
      objectId,
      serial,
      url,
      spec: {
        objectId,
        length,
        sources: [url],
        outboard: `${url}/outboard`,
        headersFor: (u: string) => (orders[u] ? { "sharenode-order": orders[u] } : undefined),
      },
    };
  }

  /** Receipts for the box's URLs, signed with the client key; `signed` lists every count signed. */
  function signer(box: { url: string; serial: string }, signed: number[] = []): ReceiptSigner {
    return {
      serialOf: (u) => (u.startsWith(box.url) ? box.serial : undefined),
      sign: (serial, bytes) => {
        signed.push(bytes);
        return signReceipt({ serial, bytes }, client);
      },
    };
  }

  const counts = () =>
    shown.map((s) => {
      if (s.receipt === undefined) return 0;
      const opened = openReceipt(s.receipt, { clientKey: client.publicKeyHex });
      if (!opened.ok) throw new Error(opened.reason);
      return opened.receipt.bytes;
    });

  it("a fetch past the box's receipt window finishes only when it signs receipts", async () => {
    const unpaidBox = await boxObject(1024 * 1024 + 777, 31);
    // Without receipts: the box stops at its window, and the source is dropped with the box's reason.
    const unpaid = await fetcher().fetch(unpaidBox.spec, dir);
    expect(!unpaid.ok && unpaid.code).toBe("all-sources-failed");
    expect(unpaid.dropped).toMatchObject([
      { url: unpaidBox.url, code: "http-error", reason: "HTTP 402 (receipt-window)" },
    ]);
    expect(shown.length).toBeGreaterThan(1);
    expect(shown.every((s) => s.receipt === undefined)).toBe(true);
    expect(book.bytes(unpaidBox.serial)).toBe(0);
    await PartialObject.removeFiles(PartialObject.pathsFor(dir, unpaidBox.objectId));

    // The same object under a new order, with receipts.
    const box = await boxObject(1024 * 1024 + 777, 31);
    const outboardLength = statSync(store.outboardPath(box.objectId)).size;
    shown.length = 0;
    const signed: number[] = [];
    const paid = await fetcher().fetch({ ...box.spec, receipts: signer(box, signed) }, dir);
    expect((await bytesOf(paid)).equals(box.data)).toBe(true);
    expect(paid.dropped).toEqual([]);
    // Every request after the first carries a receipt, never smaller than the one before.
    const seen = counts();
    expect(seen.slice(1).every((b) => b > 0)).toBe(true);
    for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThanOrEqual(seen[i - 1]!);
    // The final receipt, POSTed, covers the whole object and its outboard: what the box sent, no more.
    expect(posted).toHaveLength(1);
    const last = openReceipt(posted[0]!, { clientKey: client.publicKeyHex, serial: box.serial });
    expect(last.ok && last.receipt.bytes).toBe(Math.max(...signed));
    expect(book.bytes(box.serial)).toBeGreaterThanOrEqual(box.data.length);
    expect(book.bytes(box.serial)).toBe(box.data.length + outboardLength);
    const record = book.get(box.serial)!;
    expect(verifyServed(record.order, record.receipt, fleet.publicKeyHex)).toMatchObject({ ok: true });
  });

  it("a resumed fetch never signs less than the run before it showed the box", async () => {
    const box = await boxObject(1024 * 1024, 32);
    const controller = new AbortController();
    const signedFirst: number[] = [];
    const first = await fetcher({ checkpointBytes: 64 * 1024 }).fetch(
      { ...box.spec, receipts: signer(box, signedFirst) },
      dir,
      { signal: controller.signal, onCheckpoint: (p) => p.bytesDurable >= 400 * 1024 && controller.abort() },
    );
    expect(!first.ok && first.code).toBe("aborted");
    const before = counts();
    const lastShown = Math.max(...before);
    expect(lastShown).toBeGreaterThan(0);
    expect(posted).toEqual([]);

    shown.length = 0;
    const signedSecond: number[] = [];
    const second = await fetcher().fetch({ ...box.spec, receipts: signer(box, signedSecond) }, dir);
    expect((await bytesOf(second)).equals(box.data)).toBe(true);
    expect(Math.min(...signedSecond)).toBeGreaterThanOrEqual(lastShown);
    expect(Math.min(...signedSecond)).toBeGreaterThanOrEqual(Math.max(...signedFirst));
    const after = counts().filter((b) => b > 0);
    expect(Math.min(...after)).toBeGreaterThanOrEqual(lastShown);
    // Bytes taken again after the abort are receipted again (the box sent them again): at least the object.
    expect(book.bytes(box.serial)).toBeGreaterThanOrEqual(box.data.length);
  });

  it("plain origins get neither an order nor a receipt", async () => {
    const box = await boxObject(600_000, 33);
    const originUrl = origin.serve("receipts-origin", box.data);
    const result = await fetcher().fetch({ ...box.spec, sources: [box.url, originUrl], receipts: signer(box) }, dir);
    expect((await bytesOf(result)).equals(box.data)).toBe(true);
    expect(origin.servedAt("receipts-origin").requests).toBeGreaterThan(0);
    expect(origin.servedAt("receipts-origin").orders.every((t) => t === undefined)).toBe(true);
    expect(origin.servedAt("receipts-origin").receipts.every((t) => t === undefined)).toBe(true);
    expect(counts().some((b) => b > 0)).toBe(true);
  });
});

describe("PartialObject receipt counts", () => {
  it("survive a reopen, a fresh start (another mode) and a reset; a smaller count is not written", async () => {
    const id = "ab".repeat(32);
    const a = await PartialObject.open(dir, id, 100_000, GROUP, "groups");
    await a.noteReceipted("s1", 5000);
    await a.noteReceipted("s1", 3000);
    await a.noteReceipted("s2", 7);
    await a.close();
    const b = await PartialObject.open(dir, id, 100_000, GROUP, "groups");
    expect([b.receipted("s1"), b.receipted("s2"), b.receipted("s3")]).toEqual([5000, 7, 0]);
    await b.close();
    const c = await PartialObject.open(dir, id, 100_000, GROUP, "whole");
    expect(c.receipted("s1")).toBe(5000);
    await c.reset();
    await c.close();
    const d = await PartialObject.open(dir, id, 100_000, GROUP, "whole");
    expect([d.receipted("s1"), d.receipted("s2")]).toEqual([5000, 7]);
    await d.remove();
  });
});
