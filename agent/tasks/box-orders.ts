// Orders of box-to-box fetches: a task's source that is another box comes with the fleet's order for it
// (`orders: {url: token}`), naming THIS box's device key as the order's client key. The box pays the serving box
// in receipts signed with that key (agent/protocol/receipt.ts), as `sharenode get` does; agent/fetch counts the
// bytes and shows the receipts, this module holds the key for it (agent/fetch imports no key).
//
// task.fetch checks every order when it is accepted (checkOrder): fleet-signed, for this object, and for this
// box's key. An order for another client key is refused (`bad-args`) rather than run: its receipts could only come
// from that other client, so the serving box would stop at its receipt window (4 MiB by default) and the fetch
// would fail there, after wasting that much; the fleet learns at once, in the reply, what to sign instead.
import { readOrder, type Order } from "../protocol/order.js";
import type { Signer } from "../protocol/envelope.js";
import { signReceipt } from "../protocol/receipt.js";
import type { ReceiptSigner } from "../fetch/fetcher.js";

/** What receipts need: this box's key (its device identity) and the fleet's public key (orders are checked). */
export interface ReceiptKeys {
  clientKey: Signer & { publicKeyHex: string };
  fleetPublicKey: string;
}

/** The order of a task's source `url`, checked; a one-line reason (under 200 characters) when it cannot be used. */
export function checkOrder(url: string, token: string, objectId: string, keys: ReceiptKeys): Order | string {
  const read = readOrder(token, keys.fleetPublicKey);
  if (!read.ok) return `the order for ${JSON.stringify(url.slice(0, 80))}: ${read.reason}`;
  const { order } = read;
  if (order.objectId !== objectId)
    return `order ${order.serial} is for object ${order.objectId.slice(0, 16)}..., not this task's`;
  if (order.clientKey !== keys.clientKey.publicKeyHex)
    return (
      `order ${order.serial} is for client key ${order.clientKey.slice(0, 16)}..., not this box's: ` +
      `sign it with --client-key ${keys.clientKey.publicKeyHex}`
    );
  return order;
}

/**
 * The receipts of a task's orders: the serial of each URL whose order is for this object and this box's key.
 * An order that is not (a task accepted before orders were checked) gets no receipts: `skipped` says why, once.
 */
export function receiptSigner(
  orders: Record<string, string> | undefined,
  objectId: string,
  keys: ReceiptKeys,
  skipped: (url: string, reason: string) => void,
): ReceiptSigner | undefined {
  if (orders === undefined) return undefined;
  const byUrl = new Map<string, Order>();
  const bySerial = new Map<string, Order>();
  for (const [url, token] of Object.entries(orders)) {
    const order = checkOrder(url, token, objectId, keys);
    if (typeof order === "string") {
      skipped(url, order);
      continue;
    }
    byUrl.set(url, order);
    bySerial.set(order.serial, order);
  }
  if (byUrl.size === 0) return undefined;
  return {
    serialOf: (url) => byUrl.get(url)?.serial,
    // Never more than the order allows: the box would refuse such a receipt (and the request carrying it).
    sign: (serial, bytes) =>
      signReceipt({ serial, bytes: Math.min(bytes, bySerial.get(serial)!.maxBytes) }, keys.clientKey),
  };
}
