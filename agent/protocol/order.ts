// Orders: the fleet's permission for one client to download one object from one box, up to a byte budget and a
// time (agent/protocol/README.md, "Orders and receipts"). The box serves nothing without one; the client's signed
// receipts under it (receipt.ts) are the box's evidence of bytes served.
//
// An order is an envelope like a command's, `{"body":"<JSON text>","sig":"<base64 Ed25519>"}`, signed by the fleet
// key over "sharenode order v1\n" || UTF-8(body). On HTTP it travels as a token: base64url, without padding, of the
// envelope's UTF-8 JSON (one spelling per token: a token is a cache key).
//
// openOrder() takes a token off the network and never throws on it: any defect is { ok: false, code, reason } with a
// one-line reason. It throws only when the caller's own options are invalid.
import { describeType, describeValue } from "../util/describe.js";
import { errorLine } from "../util/errors.js";
import { isPlainObject, isUint } from "../util/guards.js";
import { fieldsDefect, openEnvelope, publicKeyOption, sealEnvelope, type Signer } from "./envelope.js";
import { isDeviceId } from "./topics.js";

export const ORDER_DOMAIN = "sharenode order v1\n";
/** The longest order token a box reads (a real one is about 600 characters). */
export const MAX_ORDER_TOKEN = 2048;

const ORDER_DOMAIN_BYTES = new TextEncoder().encode(ORDER_DOMAIN);
const ORDER_FIELDS = ["v", "serial", "deviceId", "objectId", "clientKey", "maxBytes", "expiresAt", "rightsId"] as const;
/** Serials and receipts' serials: short, printable, safe in a header, a file name and a log line. */
export const SERIAL = /^[A-Za-z0-9._-]{1,64}$/;
/** Rights holders' ids, as orders and ledger records spell them. */
export const RIGHTS_ID = /^[A-Za-z0-9._:/-]{1,128}$/;
const HEX_64 = /^[0-9a-f]{64}$/;
const BASE64URL = /^[A-Za-z0-9_-]*$/;

export interface OrderInput {
  /** Unique per fleet: receipts and settlement (issue 12) refer to the order by it. */
  serial: string;
  /** The box that may serve (32 lowercase hex). */
  deviceId: string;
  /** The object it may serve (64 lowercase hex: its BLAKE3). */
  objectId: string;
  /** The client's raw Ed25519 public key, 64 lowercase hex: receipts must verify under it. */
  clientKey: string;
  /** The most bytes the box may send under this order, over all requests. */
  maxBytes: number;
  /** Epoch ms after which the box refuses the order. */
  expiresAt: number;
  /** Who holds the rights to this content: per-rights totals (issue 12) are kept by it. */
  rightsId: string;
}

export type Order = OrderInput & { v: 1 };

export type OrderRefusal = "malformed" | "bad-signature" | "expired" | "wrong-device" | "wrong-object";

export type OpenedOrder = { ok: true; order: Order } | { ok: false; code: OrderRefusal; reason: string };

export interface OpenOrderOptions {
  /** The fleet's public key: 32 raw bytes or 64 hex digits. */
  fleetPublicKey: Uint8Array | string;
  /** This box. */
  deviceId: string;
  /** Epoch ms. */
  now: number;
  /** The object requested, when the order must be for it. */
  objectId?: string;
}

/** Signs an order; returns its token. Throws a RangeError naming the first invalid field. */
export function signOrder(input: OrderInput, fleetSigner: Signer): string {
  const defect = orderDefect(input);
  if (defect !== undefined) throw new RangeError(defect);
  const { serial, deviceId, objectId, clientKey, maxBytes, expiresAt, rightsId } = input;
  const body = JSON.stringify({ v: 1, serial, deviceId, objectId, clientKey, maxBytes, expiresAt, rightsId });
  return toToken(sealEnvelope(body, ORDER_DOMAIN_BYTES, fleetSigner));
}

/** Verifies an order token: form, signature, fields, then device, object and expiry, in that order. */
export function openOrder(token: unknown, options: OpenOrderOptions): OpenedOrder {
  const key = publicKeyOption(options.fleetPublicKey, "fleet public key");
  const { deviceId, now, objectId } = options;
  if (!isDeviceId(deviceId)) {
    throw new RangeError(`device id must be 32 lowercase hex digits, got ${describeValue(deviceId)}`);
  }
  if (typeof now !== "number" || !Number.isFinite(now)) {
    throw new RangeError(`now must be epoch milliseconds, got ${describeValue(now)}`);
  }
  if (objectId !== undefined && !HEX_64.test(objectId))
    throw new RangeError("object id must be 64 lowercase hex digits");
  const read = readOrder(token, key);
  if (!read.ok) return read;
  const { order } = read;
  if (order.deviceId !== deviceId) {
    return {
      ok: false,
      code: "wrong-device",
      reason: `order ${order.serial} is for device ${order.deviceId}, not ${deviceId}`,
    };
  }
  if (objectId !== undefined && order.objectId !== objectId) {
    return {
      ok: false,
      code: "wrong-object",
      reason: `order ${order.serial} is for object ${order.objectId}, not ${objectId}`,
    };
  }
  if (order.expiresAt <= now) {
    const at = new Date(order.expiresAt).toISOString();
    return {
      ok: false,
      code: "expired",
      reason: `order ${order.serial} expired at ${at}, ${now - order.expiresAt} ms ago`,
    };
  }
  return read;
}

/**
 * An order token's form, signature and fields, without asking whose or until when: for verifiers after the fact
 * (receipt.ts verifyServed, settlement). A box uses openOrder.
 */
export function readOrder(
  token: unknown,
  fleetPublicKey: Uint8Array | string,
): { ok: true; order: Order } | { ok: false; code: "malformed" | "bad-signature"; reason: string } {
  const key = publicKeyOption(fleetPublicKey, "fleet public key");
  const fail = (code: "malformed" | "bad-signature", reason: string) => ({ ok: false as const, code, reason });
  try {
    const payload = fromToken(token, MAX_ORDER_TOKEN, "order");
    if (typeof payload === "string") return fail("malformed", payload);
    const opened = openEnvelope(payload, MAX_ORDER_TOKEN, ORDER_DOMAIN_BYTES, key, "order", "fleet");
    if (!opened.ok) return fail(opened.code === "bad-signature" ? "bad-signature" : "malformed", opened.reason);
    const body = opened.body;
    if (!isPlainObject(body)) return fail("malformed", `order body is ${describeType(body)}, not an object`);
    const shape = fieldsDefect(body, ORDER_FIELDS, "order body");
    if (shape !== undefined) return fail("malformed", shape);
    if (body.v !== 1) return fail("malformed", `order version ${describeValue(body.v)} is not supported (expected 1)`);
    const defect = orderDefect(body);
    if (defect !== undefined) return fail("malformed", defect);
    const b = body as unknown as Order;
    const order: Order = {
      v: 1,
      serial: b.serial,
      deviceId: b.deviceId,
      objectId: b.objectId,
      clientKey: b.clientKey,
      maxBytes: b.maxBytes,
      expiresAt: b.expiresAt,
      rightsId: b.rightsId,
    };
    return { ok: true, order };
  } catch (err) {
    // Strings from the wire cannot get here; a hostile object (a Proxy, a throwing getter) can.
    return fail("malformed", `order could not be read: ${errorLine(err)}`);
  }
}

/** The HTTP status a box answers a refused order with. */
export function orderStatus(code: OrderRefusal): number {
  return code === "malformed" ? 400 : 403;
}

/** The first invalid field of an order body (without `v`), as a one-line reason. */
function orderDefect(o: Record<string, unknown> | OrderInput): string | undefined {
  const b = o as Record<string, unknown>;
  if (typeof b.serial !== "string" || !SERIAL.test(b.serial))
    return `order 'serial' must be 1..64 characters of A-Z a-z 0-9 . _ -, got ${describeValue(b.serial)}`;
  if (!isDeviceId(b.deviceId))
    return `order 'deviceId' must be 32 lowercase hex digits, got ${describeValue(b.deviceId)}`;
  if (typeof b.objectId !== "string" || !HEX_64.test(b.objectId))
    return `order 'objectId' must be 64 lowercase hex digits, got ${describeValue(b.objectId)}`;
  if (typeof b.clientKey !== "string" || !HEX_64.test(b.clientKey))
    return `order 'clientKey' must be 64 lowercase hex digits (a raw Ed25519 public key), got ${describeValue(b.clientKey)}`;
  if (!isUint(b.maxBytes) || b.maxBytes === 0)
    return `order 'maxBytes' must be an integer from 1 to 2^53 - 1, got ${describeValue(b.maxBytes)}`;
  if (!isUint(b.expiresAt)) return `order 'expiresAt' must be epoch milliseconds, got ${describeValue(b.expiresAt)}`;
  if (typeof b.rightsId !== "string" || !RIGHTS_ID.test(b.rightsId))
    return `order 'rightsId' must be 1..128 characters of A-Z a-z 0-9 . _ : / -, got ${describeValue(b.rightsId)}`;
  return undefined;
}

/** base64url without padding: the one spelling of a token. */
export function toToken(envelope: Uint8Array): string {
  return Buffer.from(envelope.buffer, envelope.byteOffset, envelope.byteLength).toString("base64url");
}

/**
 * The envelope bytes of a token, or a one-line reason it is not one: not a string, too long, not base64url, or
 * not in its one spelling (padding, stray bits in the last character).
 */
export function fromToken(token: unknown, maxLength: number, what: string): Uint8Array | string {
  if (typeof token !== "string") return `${what} token is ${describeType(token)}, not a string`;
  if (token.length > maxLength)
    return `${what} token of ${token.length} characters exceeds the maximum of ${maxLength}`;
  if (token.length === 0 || !BASE64URL.test(token))
    return `${what} token is not base64url (A-Z a-z 0-9 - _, no padding)`;
  const bytes = Buffer.from(token, "base64url");
  if (bytes.toString("base64url") !== token) return `${what} token is not canonical base64url`;
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
