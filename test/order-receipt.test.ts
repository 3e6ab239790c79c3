// Orders and receipts (agent/protocol/order.ts, receipt.ts): what a box accepts and refuses, each refusal with its
// code and one line; tokens have one spelling; any flipped bit is refused; anyone can check a receipt with its
// order and the fleet key.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DeviceIdentity, loadOrCreateDeviceIdentity } from "../agent/identity/device-key";
import {
  MAX_ORDER_TOKEN,
  openOrder,
  orderStatus,
  readOrder,
  signOrder,
  type OrderInput,
} from "../agent/protocol/order";
import { openReceipt, signReceipt, verifyServed } from "../agent/protocol/receipt";

let dir = "";
let fleet: DeviceIdentity;
let client: DeviceIdentity;
let other: DeviceIdentity;
const NOW = Date.UTC(2026, 11, 5, 12, 0, 0);
const DEVICE = "0123456789abcdef0123456789abcdef";
const OBJECT = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sharenode-order-"));
  [fleet, client, other] = await Promise.all(
    ["fleet", "client", "other"].map((n) => loadOrCreateDeviceIdentity(join(dir, n))),
  );
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

function input(overrides: Partial<OrderInput> = {}): OrderInput {
  return {
    serial: "ord-2026-12-05.0001",
    deviceId: DEVICE,
    objectId: OBJECT,
    clientKey: client.publicKeyHex,
    maxBytes: 4 * 1024 * 1024,
    expiresAt: NOW + 3_600_000,
    rightsId: "label:acme/records",
    ...overrides,
  };
}

const open = (token: unknown, objectId: string | null = OBJECT, now = NOW) =>
  openOrder(token, { fleetPublicKey: fleet.publicKey, deviceId: DEVICE, now, ...(objectId ? { objectId } : {}) });

describe("orders", () => {
  it("a signed order opens with every field; the token is base64url without padding, well under the limit", () => {
    const token = signOrder(input(), fleet);
    expect(token).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(token.length).toBeLessThan(MAX_ORDER_TOKEN / 2);
    expect(open(token)).toEqual({ ok: true, order: { v: 1, ...input() } });
    expect(readOrder(token, fleet.publicKeyHex)).toEqual({ ok: true, order: { v: 1, ...input() } });
  });

  it("refuses, each with its code, one line and its HTTP status: forged, expired, wrong device, wrong object", () => {
    const cases: Array<[string, ReturnType<typeof open>, string, number]> = [
      ["forged", open(signOrder(input(), other)), "bad-signature", 403],
      ["expired", open(signOrder(input({ expiresAt: NOW }), fleet)), "expired", 403],
      ["wrong device", open(signOrder(input({ deviceId: "f".repeat(32) }), fleet)), "wrong-device", 403],
      ["wrong object", open(signOrder(input({ objectId: "0".repeat(64) }), fleet)), "wrong-object", 403],
      ["not a token", open("not a token!"), "malformed", 400],
      ["padded", open(`${signOrder(input(), fleet)}=`), "malformed", 400],
      ["too long", open("A".repeat(MAX_ORDER_TOKEN + 1)), "malformed", 400],
      ["not a string", open(42), "malformed", 400],
      ["a receipt", open(signReceipt({ serial: "x", bytes: 1 }, fleet)), "bad-signature", 403],
    ];
    for (const [what, got, code, status] of cases) {
      expect(got, what).toMatchObject({ ok: false, code });
      if (got.ok) continue;
      expect(got.reason, what).not.toContain("\n");
      expect(orderStatus(got.code), what).toBe(status);
    }
    expect(open(signOrder(input({ expiresAt: NOW + 1 }), fleet))).toMatchObject({ ok: true });
    // Without an object to match, any object's order of this device opens.
    expect(open(signOrder(input({ objectId: "0".repeat(64) }), fleet), null)).toMatchObject({ ok: true });
  });

  it("every single-bit flip of a token is refused", () => {
    const bytes = Buffer.from(signOrder(input(), fleet), "base64url");
    for (let i = 0; i < bytes.length; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const flipped = Buffer.from(bytes);
        flipped[i]! ^= 1 << bit;
        const got = open(flipped.toString("base64url"));
        expect(got.ok, `byte ${i} bit ${bit}`).toBe(false);
      }
    }
  });

  it("signOrder refuses bad fields with a RangeError naming the field", () => {
    expect(() => signOrder(input({ serial: "has space" }), fleet)).toThrow(/'serial'/);
    expect(() => signOrder(input({ maxBytes: 0 }), fleet)).toThrow(/'maxBytes'/);
    expect(() => signOrder(input({ maxBytes: 2 ** 53 }), fleet)).toThrow(/'maxBytes'/);
    expect(() => signOrder(input({ clientKey: "AB".repeat(32) }), fleet)).toThrow(/'clientKey'/);
    expect(() => signOrder(input({ rightsId: "" }), fleet)).toThrow(/'rightsId'/);
    expect(() => signOrder(input({ expiresAt: 1.5 }), fleet)).toThrow(/'expiresAt'/);
  });
});

describe("receipts", () => {
  it("open under the client key for the order's serial; refused under another key or for another serial", () => {
    const token = signReceipt({ serial: input().serial, bytes: 65_536 }, client);
    expect(openReceipt(token, { clientKey: client.publicKey, serial: input().serial })).toEqual({
      ok: true,
      receipt: { v: 1, serial: input().serial, bytes: 65_536 },
    });
    expect(openReceipt(token, { clientKey: other.publicKey })).toMatchObject({ ok: false, code: "bad-signature" });
    expect(openReceipt(token, { clientKey: client.publicKeyHex, serial: "another" })).toMatchObject({
      ok: false,
      code: "wrong-serial",
    });
    expect(openReceipt(`${token}x`, { clientKey: client.publicKey })).toMatchObject({ ok: false, code: "malformed" });
    expect(() => signReceipt({ serial: input().serial, bytes: -1 }, client)).toThrow(/'bytes'/);
  });

  it("verifyServed: the fleet's order, its client's receipt, no more than maxBytes; expiry left to settlement", () => {
    const order = signOrder(input({ expiresAt: 1 }), fleet);
    const receipt = (bytes: number, by = client) => signReceipt({ serial: input().serial, bytes }, by);
    expect(verifyServed(order, receipt(4 * 1024 * 1024), fleet.publicKey)).toMatchObject({
      ok: true,
      receipt: { bytes: 4 * 1024 * 1024 },
      order: { serial: input().serial, rightsId: "label:acme/records" },
    });
    expect(verifyServed(order, receipt(4 * 1024 * 1024 + 1), fleet.publicKey)).toMatchObject({
      ok: false,
      code: "over-max-bytes",
    });
    expect(verifyServed(order, receipt(10, other), fleet.publicKey)).toMatchObject({
      ok: false,
      code: "bad-signature",
    });
    expect(verifyServed(order, receipt(10), other.publicKey)).toMatchObject({ ok: false, code: "bad-order" });
    const otherSerial = signReceipt({ serial: "ord-other", bytes: 10 }, client);
    expect(verifyServed(order, otherSerial, fleet.publicKey)).toMatchObject({ ok: false, code: "wrong-serial" });
  });
});
