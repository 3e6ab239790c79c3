// Orders as the client holds them: which box to ask (its base URL) and the token to show it. The client reads an
// order's body (which object, which serial, how many bytes, for which client key) without checking the fleet's
// signature: that is the box's check (openOrder), and a client holds orders it was handed, not the fleet key.
//
// Order file format (what `sharenode get --order FILE` reads): one order per line, `URL TOKEN` (the box's base URL,
// e.g. http://192.168.1.20:8080, and the token `sharenode fleet order` prints), or a bare `TOKEN` when the command
// line gives the file's box with --box. Blank lines and lines starting with # are skipped.
import { isPlainObject, isUint } from "../util/guards.js";
import { fromToken, MAX_ORDER_TOKEN, SERIAL } from "../protocol/order.js";

export interface BoxOrder {
  /** The box's base URL: requests go to `${url}/v1/objects/{id}`. */
  url: string;
  /** The order token, sent as the `Sharenode-Order` header. */
  token: string;
}

/** What the client reads of an order's body. */
export interface OrderTerms {
  serial: string;
  objectId: string;
  clientKey: string;
  maxBytes: number;
  expiresAt: number;
}

const HEX_64 = /^[0-9a-f]{64}$/;

/** The body of an order token, unverified; a one-line reason when it is not an order. */
export function orderTerms(token: string): OrderTerms | string {
  const envelope = fromToken(token, MAX_ORDER_TOKEN, "order");
  if (typeof envelope === "string") return envelope;
  let body: unknown;
  try {
    const outer = JSON.parse(Buffer.from(envelope).toString("utf8")) as unknown;
    body = isPlainObject(outer) && typeof outer.body === "string" ? JSON.parse(outer.body) : undefined;
  } catch {
    return "order token does not hold a JSON envelope";
  }
  if (!isPlainObject(body)) return "order token does not hold an order body";
  const { serial, objectId, clientKey, maxBytes, expiresAt } = body;
  if (typeof serial !== "string" || !SERIAL.test(serial)) return "order has no valid 'serial'";
  if (typeof objectId !== "string" || !HEX_64.test(objectId)) return "order has no valid 'objectId'";
  if (typeof clientKey !== "string" || !HEX_64.test(clientKey)) return "order has no valid 'clientKey'";
  if (!isUint(maxBytes) || maxBytes === 0) return "order has no valid 'maxBytes'";
  if (!isUint(expiresAt)) return "order has no valid 'expiresAt'";
  return { serial, objectId, clientKey, maxBytes, expiresAt };
}

/** A box's base URL: http(s), no query or fragment; a trailing slash is dropped. Undefined when it is not one. */
export function boxUrl(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return undefined;
  }
  if ((url.protocol !== "http:" && url.protocol !== "https:") || url.search !== "" || url.hash !== "") return undefined;
  return text.replace(/\/+$/, "");
}

/**
 * The orders in an order file's text; throws an Error whose one-line message names `name` and the line. `box` is
 * the URL for bare-token lines (--box), if the command line gave one.
 */
export function parseOrderFile(text: string, name: string, box: string | undefined): BoxOrder[] {
  const orders: BoxOrder[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "" || line.startsWith("#")) continue;
    const fields = line.split(/\s+/);
    const where = `${name} line ${i + 1}`;
    if (fields.length > 2) throw new Error(`${where}: expected 'URL TOKEN' or 'TOKEN', got ${fields.length} fields`);
    const [first, second] = fields as [string, string | undefined];
    const url = second === undefined ? box : boxUrl(first);
    const token = second ?? first;
    if (second === undefined && box === undefined)
      throw new Error(`${where}: a bare order token needs its box: write 'URL TOKEN' or pass --box URL`);
    if (url === undefined) throw new Error(`${where}: '${first}' is not an http:// or https:// box URL`);
    const terms = orderTerms(token);
    if (typeof terms === "string") throw new Error(`${where}: ${terms}`);
    orders.push({ url, token });
  }
  if (orders.length === 0) throw new Error(`${name} holds no order`);
  return orders;
}
