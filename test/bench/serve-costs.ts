// What serving costs the box besides the bytes (issue 11, "also report"): the CPU of an order check per request
// (the first sight of an order's token, which verifies its Ed25519 signature, and every later request of the same
// order, found in the gate's cache), the CPU of receipt handling per request (the client's receipt verified under
// its order's client key and made durable in the receipt book, fsynced, before the request is served; one at a
// time and 64 at once, as 64 connections bring them), and memory: the box's server (box-server.ts, its own
// process) idle, then holding 200 connections (targets: <= 64 KB per connection, RSS <= 1.3x idle). Two kinds of
// connection: keep-alive after one 64 KiB range (a client between requests) and in the middle of a 4 MiB answer
// that the client has stopped reading (the worst case: the socket's buffers are full).
// Run by `npm run bench` (test/bench/run.mjs through ts-bench.mjs), or alone:
//   node test/bench/ts-bench.mjs serve-costs [--quick] [--json]
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { IncomingMessage } from "node:http";
import { Socket } from "node:net";
import { join } from "node:path";
import { loadOrCreateDeviceIdentity } from "../../agent/identity/device-key";
import { createOutboard } from "../../agent/kernels/outboard";
import { signOrder } from "../../agent/protocol/order";
import { signReceipt } from "../../agent/protocol/receipt";
import { OrderGate } from "../../agent/serve/order-gate";
import { ReceiptBook } from "../../agent/serve/receipt-book";
import { toHex } from "../../agent/util/hex";
import { seededBytes } from "../helpers/prng.mjs";
import { median, startBox } from "./box-server";

const DEVICE = "c057".repeat(8);
const OBJECT_BYTES = 4 << 20;
const CONNECTIONS = 200;

/** The two headers and the URL the gate reads of a request. */
function request(objectId: string, order: string, receipt?: string): IncomingMessage {
  const headers: Record<string, string> = { "sharenode-order": order };
  if (receipt) headers["sharenode-receipt"] = receipt;
  return { headers, url: `/v1/objects/${objectId}` } as unknown as IncomingMessage;
}

function rssBytes(pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  if (!kb) throw new Error(`serve-costs: no VmRSS for process ${pid}`);
  return Number(kb) * 1024;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The median of a few RSS readings a little apart, after a full collection in the box (box-server.ts: SIGUSR2):
 * what the connections hold, not garbage V8 has not collected yet (a 64 KiB answer's buffer, once sent).
 */
async function settledRss(pid: number): Promise<number> {
  process.kill(pid, "SIGUSR2");
  await sleep(1000);
  const readings: number[] = [];
  for (let i = 0; i < 5; i++, await sleep(200)) readings.push(rssBytes(pid));
  return median(readings);
}

/** Opens a connection and sends one GET; resolves once `ready` says the answer is where the test wants it. */
function connect(port: number, head: string, ready: (got: number) => boolean): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = new Socket();
    let got = 0;
    let done = false;
    socket.on("error", reject);
    socket.on("data", (d: Buffer) => {
      got += d.length;
      if (!done && ready(got)) {
        done = true;
        resolve(socket);
      }
    });
    socket.connect(port, "127.0.0.1", () => socket.write(head));
  });
}

export async function main(args: string[]): Promise<void> {
  const quick = args.includes("--quick");
  const json = args.includes("--json");
  const work = mkdtempSync(join(process.env.TMPDIR ?? "/tmp", "sharenode-bench-costs-"));
  try {
    const fleet = await loadOrCreateDeviceIdentity(join(work, "fleet"));
    const client = await loadOrCreateDeviceIdentity(join(work, "client"));
    const objectId = "ab".repeat(32);
    let serial = 0;
    const order = () =>
      signOrder(
        {
          serial: `costs-${serial++}`,
          deviceId: DEVICE,
          objectId,
          clientKey: client.publicKeyHex,
          maxBytes: 2 ** 50,
          expiresAt: Date.now() + 3600_000,
          rightsId: "bench",
        },
        fleet,
      );

    // --- CPU per request, in this process ------------------------------------------------------------------
    const book = new ReceiptBook(join(work, "receipts.log"));
    await book.start();
    const gate = new OrderGate({ fleetPublicKey: fleet.publicKeyHex, deviceId: DEVICE, book, windowBytes: 2 ** 50 });
    const batches = quick ? 3 : 9;
    const perBatch = quick ? 300 : 1000;
    const firstSight: number[] = [];
    const cached: number[] = [];
    const receiptOne: number[] = [];
    const receiptMany: number[] = [];
    for (let b = 0; b < batches; b++) {
      const tokens = Array.from({ length: perBatch }, order);
      let t = performance.now();
      // Without a receipt the gate answers synchronously: `void` marks the result as not awaited on purpose.
      for (const token of tokens) void gate.open(request(objectId, token), objectId);
      firstSight.push(((performance.now() - t) * 1000) / perBatch);
      const req = request(objectId, tokens[0]!);
      const cachedRounds = perBatch * 100;
      const opened = gate.open(req, objectId);
      if (opened instanceof Promise || !opened.ok) throw new Error("serve-costs: the bench's order was refused");
      t = performance.now();
      for (let i = 0; i < cachedRounds; i++) void gate.open(req, objectId);
      cached.push(((performance.now() - t) * 1000) / cachedRounds);
      // Receipts: each request carries a larger one (signed beforehand: that is the client's cost, not the box's).
      const few = quick ? 50 : 200;
      const one = Array.from({ length: few }, (_, i) =>
        signReceipt({ serial: `costs-${serial - 1}`, bytes: i + 1 }, client),
      );
      const oneReq = tokens.at(-1)!;
      t = performance.now();
      for (const r of one) {
        const result = await gate.open(request(objectId, oneReq, r), objectId);
        if (!result.ok) throw new Error(`serve-costs: a receipt was refused: ${result.reason}`);
      }
      receiptOne.push(((performance.now() - t) * 1000) / few);
      // 64 orders, each with a receipt in flight at once: the book's group commit shares one fsync among them.
      const orders = tokens.slice(1, 65);
      const many = orders.map((token, i) =>
        signReceipt({ serial: `costs-${serial - perBatch + 1 + i}`, bytes: 1000 + b }, client),
      );
      t = performance.now();
      const results = await Promise.all(
        orders.map((token, i) => Promise.resolve(gate.open(request(objectId, token, many[i]), objectId))),
      );
      receiptMany.push(((performance.now() - t) * 1000) / orders.length);
      if (results.some((r) => !r.ok)) throw new Error("serve-costs: a receipt in the batch was refused");
    }
    await book.stop();

    // --- memory, the server in its own process ---------------------------------------------------------------
    mkdirSync(join(work, "box"));
    const data = seededBytes(OBJECT_BYTES, 0xc057);
    const built = createOutboard(data);
    const id = toHex(built.id);
    const path = join(work, "box", id);
    writeFileSync(path, data);
    writeFileSync(`${path}.obao`, built.outboard);
    const box = await startBox(
      {
        stateDir: join(work, "box"),
        objects: [{ id, length: OBJECT_BYTES, path, outboardPath: `${path}.obao` }],
        fleetPublicKey: fleet.publicKeyHex,
        deviceId: DEVICE,
        windowBytes: 2 ** 50,
      },
      "sharenode serve",
    );
    const memory: Record<string, { idle: number; loaded: number }> = {};
    try {
      const token = signOrder(
        {
          serial: "costs-memory",
          deviceId: DEVICE,
          objectId: id,
          clientKey: client.publicKeyHex,
          maxBytes: 2 ** 50,
          expiresAt: Date.now() + 3600_000,
          rightsId: "bench",
        },
        fleet,
      );
      const get = (range: string) =>
        `GET /v1/objects/${id} HTTP/1.1\r\nHost: box\r\nSharenode-Order: ${token}\r\n${range}\r\n`;
      // Warm-up: the code paths, the order in the cache, the file's descriptor.
      for (let i = 0; i < 20; i++)
        (await connect(box.port, get("Range: bytes=0-65535\r\n"), (n) => n > 65536)).destroy();
      const kinds: Array<[string, string, (n: number) => boolean]> = [
        ["keep-alive after a 64 KiB range", get("Range: bytes=0-65535\r\n"), (n) => n > 65536],
        ["in a 4 MiB answer the client stopped reading", get(""), (n) => n > 256 * 1024],
      ];
      for (const [name, head, ready] of kinds) {
        const idle = await settledRss(box.pid!);
        const sockets: Socket[] = [];
        for (let i = 0; i < CONNECTIONS; i++) {
          const socket = await connect(box.port, head, ready);
          socket.pause();
          sockets.push(socket);
        }
        const loaded = await settledRss(box.pid!);
        memory[name] = { idle, loaded };
        for (const s of sockets) s.destroy();
        await sleep(500);
      }
    } finally {
      await box.stop();
    }

    const rows = [
      { what: "order check, first sight of a token (Ed25519 verify)", value: median(firstSight), unit: "µs/request" },
      { what: "order check, the same order again (cached)", value: median(cached), unit: "µs/request" },
      { what: "receipt handling, one at a time (verify + fsync)", value: median(receiptOne), unit: "µs/request" },
      { what: "receipt handling, 64 at once (verify + shared fsync)", value: median(receiptMany), unit: "µs/request" },
    ];
    const targets = Object.entries(memory).flatMap(([name, m]) => {
      const perConnection = (m.loaded - m.idle) / CONNECTIONS;
      const ratio = m.loaded / m.idle;
      return [
        {
          what: `memory per connection, ${name}`,
          value: perConnection / 1024,
          unit: "KiB",
          met: perConnection <= 64 * 1024,
          goal: "<= 64 KB",
        },
        {
          what: `RSS with ${CONNECTIONS} connections / idle, ${name}`,
          value: ratio,
          unit: "x",
          met: ratio <= 1.3,
          goal: "<= 1.3x",
          detail: `${(m.loaded / 2 ** 20).toFixed(1)} vs ${(m.idle / 2 ** 20).toFixed(1)} MiB`,
        },
      ];
    });
    if (json) {
      console.log(JSON.stringify({ rows, targets, memory }, null, 2));
      return;
    }
    console.log(
      `\nserving costs: ${batches} batches of ${perBatch} orders, medians of the batches; memory of the box's server process`,
    );
    for (const r of rows) console.log(`  ${r.what.padEnd(58)} ${r.value.toFixed(2).padStart(9)} ${r.unit}`);
    console.log("\ntargets (issue 11)");
    for (const t of targets) {
      const detail = "detail" in t ? ` (${t.detail})` : "";
      console.log(
        `  ${t.met ? "met   " : "MISSED"} ${t.what.padEnd(70)} ${t.value.toFixed(2).padStart(8)} ${t.unit} (target ${t.goal})${detail}`,
      );
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
