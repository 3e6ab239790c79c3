// The order gate: nothing is served without a fleet-signed order for this box and this object (agent/protocol/
// order.ts), and no order gets more than its maxBytes, nor more than `windowBytes` past what its client has
// receipted (a client that never signs gets at most the window). Receipts ride on any request of the order
// (header Sharenode-Receipt) or come by POST /v1/receipts; the largest per order is kept in the ReceiptBook.
//
// Cost per request (the bench's 64 KiB ranges are bound by it): an order verified once is found again by its token
// in a bounded map (first in, first out: an evicted order is verified again, nothing else is lost), so a range
// costs a map lookup, an expiry and object comparison and a few additions. The meters (bytes sent per serial) live
// apart from that cache, so evicting a token never resets what its order was sent. Bytes sent are counted in
// memory; after a restart a meter starts at the order's largest receipt, so a restart opens at most one more window.
import type { IncomingMessage } from "node:http";
import { errorLine } from "../util/errors.js";
import { openOrder, orderStatus, type Order } from "../protocol/order.js";
import { openReceipt } from "../protocol/receipt.js";
import type { ReceiptBook } from "./receipt-book.js";
import type { Gate, GateResult, Pass, ReceiptResult, Refusal } from "./server.js";

export const DEFAULT_WINDOW_BYTES = 4 * 1024 * 1024;
/** Verified tokens kept (a token is at most 2 KiB: at most ~8 MiB of keys). */
const TOKEN_CACHE_ENTRIES = 4096;
/** Meters of expired orders are dropped on the next sweep after this long past expiry. */
const SWEEP_MS = 60_000;

export interface OrderGateOptions {
  fleetPublicKey: string;
  deviceId: string;
  book: ReceiptBook;
  windowBytes?: number;
  now?: () => number;
}

/** What the box has sent and been receipted under one order. */
class Meter implements Pass {
  sent: number;
  readonly headers: string[] = [];
  /** The gate's answer for this order, made once. */
  readonly passed: GateResult = { ok: true, pass: this };

  constructor(
    readonly order: Order,
    readonly token: string,
    private readonly gate: OrderGate,
    receipted: number,
  ) {
    this.sent = receipted;
  }

  get receipted(): number {
    return this.gate.book.bytes(this.order.serial);
  }

  admit(n: number): Refusal | undefined {
    const { order } = this;
    if (this.sent + n > order.maxBytes) {
      return refusal(
        403,
        "over-max-bytes",
        `order ${order.serial} allows ${order.maxBytes} bytes; ${this.sent} sent, ${n} more asked`,
      );
    }
    const receipted = this.receipted;
    const window = this.gate.windowBytes;
    if (this.sent + n - receipted > window) {
      return refusal(
        402,
        "receipt-window",
        `order ${order.serial}: ${this.sent - receipted} bytes sent are not receipted; ` +
          `${n} more would pass the window of ${window}: send a receipt (Sharenode-Receipt)`,
      );
    }
    this.sent += n;
    this.headers[0] = "Sharenode-Receipted";
    this.headers[1] = String(receipted);
    return undefined;
  }

  unsent(n: number): void {
    this.sent -= n;
  }
}

function refusal(status: number, code: string, reason: string): Refusal {
  return { ok: false, status, code, reason };
}

export class OrderGate implements Gate {
  readonly windowBytes: number;
  readonly book: ReceiptBook;
  private readonly now: () => number;
  private readonly tokens = new Map<string, Meter>();
  private readonly meters = new Map<string, Meter>();
  private lastSweep = 0;
  /** Signature checks done (the rest were cache hits): for the bench and telemetry. */
  verifications = 0;
  receiptsTaken = 0;

  constructor(private readonly options: OrderGateOptions) {
    this.book = options.book;
    this.windowBytes = options.windowBytes ?? DEFAULT_WINDOW_BYTES;
    this.now = options.now ?? Date.now;
  }

  /** Bytes sent but not receipted, over every order in memory. */
  receiptLag(): number {
    let lag = 0;
    for (const m of this.meters.values()) lag += Math.max(0, m.sent - m.receipted);
    return lag;
  }

  /** Synchronous unless the request carries a receipt (which is made durable first). */
  open(req: IncomingMessage, objectId: string): GateResult | Promise<GateResult> {
    const found = this.orderOf(req, objectId);
    if (!found.ok) return found;
    const meter = found.meter;
    const receipt = req.headers["sharenode-receipt"];
    if (typeof receipt === "string") {
      return this.take(meter, receipt).then((taken) => (taken.ok ? meter.passed : taken));
    }
    return meter.passed;
  }

  async receipt(req: IncomingMessage, body: string): Promise<ReceiptResult> {
    const found = this.orderOf(req, undefined);
    if (!found.ok) return found;
    return this.take(found.meter, body);
  }

  /** The request's order, verified (or found verified), for this box and object and not expired. */
  private orderOf(req: IncomingMessage, objectId: string | undefined): { ok: true; meter: Meter } | Refusal {
    let token = req.headers["sharenode-order"];
    if (token === undefined) {
      const url = req.url ?? "";
      const at = url.indexOf("order=");
      if (at > 0 && (url[at - 1] === "?" || url[at - 1] === "&")) {
        const end = url.indexOf("&", at);
        token = url.slice(at + 6, end < 0 ? undefined : end);
      }
    }
    if (typeof token !== "string" || token === "") {
      return refusal(401, "no-order", "every request needs an order: header Sharenode-Order or ?order=");
    }
    const now = this.now();
    let meter = this.tokens.get(token);
    if (meter) {
      const { order } = meter;
      if (order.expiresAt <= now) {
        return refusal(403, "expired", `order ${order.serial} expired at ${new Date(order.expiresAt).toISOString()}`);
      }
      if (objectId !== undefined && order.objectId !== objectId) {
        return refusal(403, "wrong-object", `order ${order.serial} is for object ${order.objectId}, not ${objectId}`);
      }
      return { ok: true, meter };
    }
    this.verifications++;
    const opened = openOrder(token, {
      fleetPublicKey: this.options.fleetPublicKey,
      deviceId: this.options.deviceId,
      now,
      objectId,
    });
    if (!opened.ok) return refusal(orderStatus(opened.code), opened.code, opened.reason);
    const { order } = opened;
    this.sweep(now);
    meter = this.meters.get(order.serial);
    if (meter && !sameOrder(meter.order, order)) {
      return refusal(409, "serial-reused", `order serial ${order.serial} was already used for another order`);
    }
    if (!meter) {
      meter = new Meter(order, token, this, this.book.bytes(order.serial));
      this.meters.set(order.serial, meter);
    }
    if (this.tokens.size >= TOKEN_CACHE_ENTRIES) this.tokens.delete(this.tokens.keys().next().value!);
    this.tokens.set(token, meter);
    return { ok: true, meter };
  }

  /** Verifies a receipt under the meter's order and keeps it if it is the largest; durable when this resolves. */
  private async take(meter: Meter, token: string): Promise<ReceiptResult> {
    const { order } = meter;
    const opened = openReceipt(token, { clientKey: order.clientKey, serial: order.serial });
    if (!opened.ok) {
      return refusal(opened.code === "malformed" ? 400 : 403, "bad-receipt", `receipt refused: ${opened.reason}`);
    }
    const { bytes } = opened.receipt;
    if (bytes > order.maxBytes) {
      return refusal(
        400,
        "bad-receipt",
        `receipt claims ${bytes} bytes; order ${order.serial} allows ${order.maxBytes}`,
      );
    }
    try {
      const largest = await this.book.add(order, meter.token, bytes, token, this.now());
      this.receiptsTaken++;
      return { ok: true, serial: order.serial, bytes: largest };
    } catch (err) {
      return refusal(503, "receipt-not-kept", `receipt not kept: ${errorLine(err)}`);
    }
  }

  /** Drops meters (and their cached tokens) of orders expired for a while: they can never be served again. */
  private sweep(now: number): void {
    if (now - this.lastSweep < SWEEP_MS) return;
    this.lastSweep = now;
    for (const [serial, m] of this.meters) {
      if (m.order.expiresAt + SWEEP_MS < now) this.meters.delete(serial);
    }
    for (const [token, m] of this.tokens) if (!this.meters.has(m.order.serial)) this.tokens.delete(token);
  }
}

function sameOrder(a: Order, b: Order): boolean {
  return (
    a.objectId === b.objectId &&
    a.clientKey === b.clientKey &&
    a.maxBytes === b.maxBytes &&
    a.expiresAt === b.expiresAt &&
    a.rightsId === b.rightsId
  );
}
