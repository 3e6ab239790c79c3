// Orders and receipts on the box's HTTP server, with stock curl and real signatures: every bad order refused with
// its status and code and nothing served, maxBytes metered, a client that stops signing gets at most the window,
// receipts kept durably (a child appending receipts is SIGKILLed; every acknowledged one survives).
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DeviceIdentity, loadOrCreateDeviceIdentity } from "../agent/identity/device-key";
import { signOrder, type OrderInput } from "../agent/protocol/order";
import { signReceipt, verifyServed } from "../agent/protocol/receipt";
import { OrderGate } from "../agent/serve/order-gate";
import { ReceiptBook } from "../agent/serve/receipt-book";
import { ObjectServer } from "../agent/serve/server";
import { ObjectStore } from "../agent/store/object-store";
import { seededBytes } from "./helpers/random";
import { bundleFixture } from "./helpers/child";

const run = promisify(execFile);
const WINDOW = 256 * 1024;
let dir = "";
let fleet: DeviceIdentity;
let client: DeviceIdentity;
let stranger: DeviceIdentity;
let store: ObjectStore;
let book: ReceiptBook;
let gate: OrderGate;
let server: ObjectServer;
let base = "";
const DEVICE = "0123456789abcdef0123456789abcdef";
let objectId = "";
let otherId = "";
let data: Uint8Array;
let serials = 0;

async function* once(d: Uint8Array) {
  yield d;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "sharenode-serve-orders-"));
  [fleet, client, stranger] = await Promise.all(
    ["fleet", "client", "stranger"].map((n) => loadOrCreateDeviceIdentity(join(dir, n))),
  );
  store = new ObjectStore({ dataDir: join(dir, "data"), quota: { bytes: 1 << 30 }, reserveBytes: 0 });
  await store.start();
  data = seededBytes(1024 * 1024, 42);
  objectId = (await store.ingest(once(data))).object.id;
  otherId = (await store.ingest(once(seededBytes(5000, 43)))).object.id;
  book = new ReceiptBook(join(dir, "receipts.log"));
  await book.start();
  gate = new OrderGate({ fleetPublicKey: fleet.publicKeyHex, deviceId: DEVICE, book, windowBytes: WINDOW });
  server = new ObjectServer({ store, bind: "127.0.0.1", port: 0, gate });
  await server.start();
  base = `http://127.0.0.1:${server.port}`;
});

afterAll(async () => {
  await server?.stop();
  await book?.stop();
  await store?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function order(over: Partial<OrderInput> = {}, signer: DeviceIdentity = fleet): string {
  return signOrder(
    {
      serial: `t-${++serials}`,
      deviceId: DEVICE,
      objectId,
      clientKey: client.publicKeyHex,
      maxBytes: 1 << 30,
      expiresAt: Date.now() + 600_000,
      rightsId: "rights:test",
      ...over,
    },
    signer,
  );
}

async function curl(args: string[]): Promise<{ status: number; headers: Record<string, string>; body: Buffer }> {
  const out = join(dir, "curl.out");
  const { stdout } = await run("curl", ["-s", "-D", "-", "-o", out, ...args], { encoding: "buffer" });
  const lines = stdout.toString("latin1").split("\r\n");
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) {
    const c = l.indexOf(":");
    if (c > 0) headers[l.slice(0, c).toLowerCase()] = l.slice(c + 1).trim();
  }
  return { status: Number(lines[0]!.split(" ")[1]), headers, body: readFileSync(out) };
}

const url = (id = objectId) => `${base}/v1/objects/${id}`;

describe("orders", () => {
  it("serves with a good order, in the header or the query", async () => {
    const token = order();
    const a = await curl(["-H", `Sharenode-Order: ${token}`, "-H", "Range: bytes=0-999", url()]);
    expect(a.status).toBe(206);
    expect(Buffer.compare(a.body, Buffer.from(data.subarray(0, 1000)))).toBe(0);
    const b = await curl([`${url()}?order=${token}`, "-H", "Range: bytes=1000-1999"]);
    expect(b.status).toBe(206);
    expect(b.headers["sharenode-receipted"]).toBe("0");
  });

  const bad: [string, () => string, number, string][] = [
    ["no order", () => "", 401, "no-order"],
    ["garbage", () => "not-a-token", 400, "malformed"],
    ["forged (signed by another key)", () => order({}, stranger), 403, "bad-signature"],
    ["expired", () => order({ expiresAt: Date.now() - 1 }), 403, "expired"],
    ["for another device", () => order({ deviceId: "f".repeat(32) }), 403, "wrong-device"],
    ["for another object", () => order({ objectId: otherId }), 403, "wrong-object"],
    ["over maxBytes", () => order({ maxBytes: 999 }), 403, "over-max-bytes"],
  ];
  for (const [what, make, status, code] of bad) {
    it(`refuses an order ${what}: ${status} ${code}, nothing served`, async () => {
      const token = make();
      const r = await curl([...(token ? ["-H", `Sharenode-Order: ${token}`] : []), "-H", "Range: bytes=0-999", url()]);
      expect(r.status).toBe(status);
      expect(r.headers["sharenode-refused"]).toBe(code);
      expect(r.headers["content-type"]).toMatch(/^text\/plain/);
      expect(r.body.toString().trim().split("\n")).toHaveLength(1);
      expect(r.body.length).toBeLessThan(400);
      for (const path of ["/outboard", "/slice?start=0&end=1000"]) {
        expect((await curl([...(token ? ["-H", `Sharenode-Order: ${token}`] : []), url() + path])).status).toBe(status);
      }
    });
  }

  it("meters maxBytes over requests, and a cached order still expires", async () => {
    let now = Date.now();
    const local = new OrderGate({ fleetPublicKey: fleet.publicKeyHex, deviceId: DEVICE, book, now: () => now });
    const s = new ObjectServer({ store, bind: "127.0.0.1", port: 0, gate: local });
    await s.start();
    try {
      const token = order({ maxBytes: 2500, expiresAt: now + 10_000 });
      const get = (range: string) =>
        curl([
          "-H",
          `Sharenode-Order: ${token}`,
          "-H",
          `Range: ${range}`,
          `http://127.0.0.1:${s.port}/v1/objects/${objectId}`,
        ]);
      expect((await get("bytes=0-999")).status).toBe(206);
      expect((await get("bytes=0-999")).status).toBe(206);
      const over = await get("bytes=0-999");
      expect(over.status).toBe(403);
      expect(over.headers["sharenode-refused"]).toBe("over-max-bytes");
      expect((await get("bytes=0-499")).status).toBe(206);
      expect(local.verifications).toBe(1);
      now += 20_000;
      expect((await get("bytes=0-0")).headers["sharenode-refused"]).toBe("expired");
    } finally {
      await s.stop();
    }
  });
});

describe("receipts", () => {
  it("a client that stops signing gets at most the window; receipts reopen it", async () => {
    const token = order();
    let got = 0;
    let last = 0;
    for (let i = 0; i < 100; i++) {
      const r = await curl(["-H", `Sharenode-Order: ${token}`, "-H", `Range: bytes=${got}-${got + 16383}`, url()]);
      if (r.status !== 206) {
        last = r.status;
        expect(r.headers["sharenode-refused"]).toBe("receipt-window");
        break;
      }
      got += r.body.length;
    }
    expect(last).toBe(402);
    expect(got).toBe(WINDOW);
    // A receipt in the header of the next request: served again.
    const serial = `t-${serials}`;
    const receipt = signReceipt({ serial, bytes: got }, client);
    const r = await curl([
      "-H",
      `Sharenode-Order: ${token}`,
      "-H",
      `Sharenode-Receipt: ${receipt}`,
      "-H",
      "Range: bytes=0-99",
      url(),
    ]);
    expect(r.status).toBe(206);
    expect(r.headers["sharenode-receipted"]).toBe(String(WINDOW));
    // Kept, in a form anyone can check with the order and the fleet key.
    const kept = book.get(serial)!;
    expect(kept.bytes).toBe(WINDOW);
    expect(verifyServed(kept.order, kept.receipt, fleet.publicKeyHex).ok).toBe(true);
  });

  it("POST /v1/receipts takes a receipt; forged, wrong-serial and smaller ones do not count", async () => {
    const token = order();
    const serial = `t-${serials}`;
    const post = (body: string) =>
      curl(["-X", "POST", "-H", `Sharenode-Order: ${token}`, "--data-binary", body, `${base}/v1/receipts`]);
    const ok = await post(signReceipt({ serial, bytes: 5000 }, client));
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body.toString())).toEqual({ serial, bytes: 5000 });
    const smaller = await post(signReceipt({ serial, bytes: 10 }, client));
    expect(JSON.parse(smaller.body.toString()).bytes).toBe(5000);
    const forged = await post(signReceipt({ serial, bytes: 9000 }, stranger));
    expect(forged.status).toBe(403);
    expect(forged.headers["sharenode-refused"]).toBe("bad-receipt");
    const wrong = await post(signReceipt({ serial: "other", bytes: 9000 }, client));
    expect(wrong.headers["sharenode-refused"]).toBe("bad-receipt");
    expect(book.bytes(serial)).toBe(5000);
    const noOrder = await curl(["-X", "POST", "--data-binary", "x", `${base}/v1/receipts`]);
    expect(noOrder.status).toBe(401);
  });

  it("keeps every acknowledged receipt across SIGKILLs, and reopens with the largest", async () => {
    const child = join(dir, "receipt-child.mjs");
    await bundleFixture("receipt-crash-child.ts", child);
    const path = join(dir, "crash-receipts.log");
    let acked = 0;
    let totalAcks = 0;
    for (let trial = 0; trial < 5; trial++) {
      const lines = await new Promise<string[]>((resolve) => {
        const proc = spawn(process.execPath, [child, path, "crash"], { stdio: ["ignore", "pipe", "inherit"] });
        let out = "";
        proc.stdout.on("data", (d: Buffer) => {
          out += d.toString();
          if (out.split("\n").length > 30 + trial * 7) proc.kill("SIGKILL");
        });
        proc.on("exit", () => resolve(out.split("\n").slice(0, -1)));
      });
      const ready = Number(lines[0]!.split(" ")[1]);
      expect(ready, `trial ${trial}: reopened below an acknowledged receipt`).toBeGreaterThanOrEqual(acked);
      for (const l of lines.slice(1)) {
        acked = Math.max(acked, Number(l.split(" ")[1]));
        totalAcks++;
      }
    }
    expect(totalAcks).toBeGreaterThan(100);
    const reopened = new ReceiptBook(path);
    await reopened.start();
    expect(reopened.bytes("crash")).toBeGreaterThanOrEqual(acked);
    await reopened.stop();
  });
});
