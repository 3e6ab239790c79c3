// Receipts: the client's signed statement "under order SERIAL I have received BYTES bytes so far" (cumulative, so
// only the largest counts, as with Storj's orders and Swarm's cheques). Signed by the order's client key over
// "sharenode receipt v1\n" || UTF-8(body), in the envelope and token form of orders (order.ts). With the order and
// the fleet key, anyone can check one: verifyServed().
import { describeType, describeValue } from "../util/describe.js";
import { errorLine } from "../util/errors.js";
import { isPlainObject, isUint } from "../util/guards.js";
import { fieldsDefect, openEnvelope, publicKeyOption, sealEnvelope, type Signer } from "./envelope.js";
import { fromToken, readOrder, SERIAL, toToken, type Order } from "./order.js";

export const RECEIPT_DOMAIN = "sharenode receipt v1\n";
/** The longest receipt token a box reads (a real one is about 170 characters). */
export const MAX_RECEIPT_TOKEN = 512;

const RECEIPT_DOMAIN_BYTES = new TextEncoder().encode(RECEIPT_DOMAIN);
const RECEIPT_FIELDS = ["v", "serial", "bytes"] as const;

export interface ReceiptInput {
  serial: string;
  /** Bytes received under the order so far, over all requests and boxes' answers to it. */
  bytes: number;
}

export type Receipt = ReceiptInput & { v: 1 };

export type ReceiptRefusal = "malformed" | "bad-signature" | "wrong-serial";

export type OpenedReceipt = { ok: true; receipt: Receipt } | { ok: false; code: ReceiptRefusal; reason: string };

/** Signs a receipt with the client key; returns its token. Throws a RangeError naming an invalid field. */
export function signReceipt(input: ReceiptInput, clientSigner: Signer): string {
  const defect = receiptDefect(input);
  if (defect !== undefined) throw new RangeError(defect);
  const body = JSON.stringify({ v: 1, serial: input.serial, bytes: input.bytes });
  return toToken(sealEnvelope(body, RECEIPT_DOMAIN_BYTES, clientSigner));
}

/** Verifies a receipt token under the order's client key (and, when given, that it is for `serial`). */
export function openReceipt(
  token: unknown,
  options: { clientKey: Uint8Array | string; serial?: string },
): OpenedReceipt {
  const key = publicKeyOption(options.clientKey, "client key");
  const fail = (code: ReceiptRefusal, reason: string): OpenedReceipt => ({ ok: false, code, reason });
  try {
    const payload = fromToken(token, MAX_RECEIPT_TOKEN, "receipt");
    if (typeof payload === "string") return fail("malformed", payload);
    const opened = openEnvelope(payload, MAX_RECEIPT_TOKEN, RECEIPT_DOMAIN_BYTES, key, "receipt", "client");
    if (!opened.ok) return fail(opened.code === "bad-signature" ? "bad-signature" : "malformed", opened.reason);
    const body = opened.body;
    if (!isPlainObject(body)) return fail("malformed", `receipt body is ${describeType(body)}, not an object`);
    const shape = fieldsDefect(body, RECEIPT_FIELDS, "receipt body");
    if (shape !== undefined) return fail("malformed", shape);
    if (body.v !== 1)
      return fail("malformed", `receipt version ${describeValue(body.v)} is not supported (expected 1)`);
    const defect = receiptDefect(body);
    if (defect !== undefined) return fail("malformed", defect);
    const receipt: Receipt = { v: 1, serial: body.serial as string, bytes: body.bytes as number };
    if (options.serial !== undefined && receipt.serial !== options.serial) {
      return fail("wrong-serial", `receipt is for order ${receipt.serial}, not ${options.serial}`);
    }
    return { ok: true, receipt };
  } catch (err) {
    return fail("malformed", `receipt could not be read: ${errorLine(err)}`);
  }
}

export type ServedCheck =
  | { ok: true; order: Order; receipt: Receipt }
  | { ok: false; code: "bad-order" | ReceiptRefusal | "over-max-bytes"; reason: string };

/**
 * What a verifier checks of one receipt, with nothing but public inputs: the order is the fleet's (its expiry is
 * not checked here: a settlement compares it with when the bytes were served), the receipt is the order's client's
 * and for its serial, and claims no more than the order allowed.
 */
export function verifyServed(
  orderToken: string,
  receiptToken: string,
  fleetPublicKey: Uint8Array | string,
): ServedCheck {
  const order = readOrder(orderToken, fleetPublicKey);
  if (!order.ok) return { ok: false, code: "bad-order", reason: order.reason };
  const receipt = openReceipt(receiptToken, { clientKey: order.order.clientKey, serial: order.order.serial });
  if (!receipt.ok) return receipt;
  if (receipt.receipt.bytes > order.order.maxBytes) {
    return {
      ok: false,
      code: "over-max-bytes",
      reason: `receipt claims ${receipt.receipt.bytes} bytes under order ${order.order.serial}, which allows ${order.order.maxBytes}`,
    };
  }
  return { ok: true, order: order.order, receipt: receipt.receipt };
}

function receiptDefect(o: Record<string, unknown> | ReceiptInput): string | undefined {
  const b = o as Record<string, unknown>;
  if (typeof b.serial !== "string" || !SERIAL.test(b.serial))
    return `receipt 'serial' must be 1..64 characters of A-Z a-z 0-9 . _ -, got ${describeValue(b.serial)}`;
  if (!isUint(b.bytes)) return `receipt 'bytes' must be an integer from 0 to 2^53 - 1, got ${describeValue(b.bytes)}`;
  return undefined;
}
