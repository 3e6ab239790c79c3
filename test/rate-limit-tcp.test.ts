// The upload limit measured on real TCP over loopback: node:http servers write an endless body through one
// ByteRateLimiter each (limiter.pace, as serving does), real clients read as fast as they can, and the bytes the
// clients receive are counted. Over 10 s the aggregate rate must be within 5 % of the configured one, with 1
// connection and with 50 (both servers run side by side, each with its own limiter, to keep the file short);
// then the box gets hot and cools down again (a real ResourceGovernor, followed by followRate), and each new rate
// must hold from one second after the change. About 17 s in all.
import { EventEmitter } from "node:events";
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { afterAll, describe, expect, it } from "vitest";
import { ByteRateLimiter, followRate } from "../agent/health/byte-rate";
import { ResourceGovernor, type ThermalSource } from "../agent/health/resource-policy";
import type { ThermalState } from "../agent/health/thermal-governor";

const RATE = 5_000_000;
const CHUNK = new Uint8Array(64 * 1024).fill(0x5a);

async function* endless(): AsyncGenerator<Uint8Array> {
  for (;;) yield CHUNK;
}

/** An HTTP server whose every response is an endless body written through `limiter`. */
async function pacedServer(limiter: ByteRateLimiter): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    res.writeHead(200, { "content-type": "application/octet-stream" });
    const gone = new AbortController();
    res.on("close", () => gone.abort());
    pipeline(Readable.from(limiter.pace(endless(), gone.signal)), res).catch(() => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

/** `count` real HTTP clients reading as fast as they can; the bytes each received. */
async function readers(port: number, count: number) {
  const got = new Array<number>(count).fill(0);
  const requests = Array.from({ length: count }, (_, i) =>
    request({ host: "127.0.0.1", port, path: "/", agent: false }, (res) => {
      res.on("data", (chunk: Buffer) => (got[i] += chunk.length));
      res.on("error", () => {});
    }),
  );
  for (const r of requests) {
    r.on("error", () => {});
    r.end();
  }
  // Every connection has its first bytes before any measuring starts.
  const deadline = Date.now() + 10_000;
  while (got.some((n) => n === 0)) {
    if (Date.now() > deadline) throw new Error(`only ${got.filter((n) => n > 0).length} of ${count} connected`);
    await sleep(20);
  }
  return { got, total: () => got.reduce((a, b) => a + b, 0), close: () => requests.forEach((r) => r.destroy()) };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Bytes per second received over `ms` from now, on the monotonic clock. */
async function measure(total: () => number, ms: number): Promise<number> {
  const b0 = total();
  const t0 = performance.now();
  await sleep(ms);
  return ((total() - b0) * 1000) / (performance.now() - t0);
}

class FakeThermal extends EventEmitter<{ change: [ThermalState] }> implements ThermalSource {
  state: ThermalState = { throttled: false, temperatureC: 50, reason: "50 °C: below 75 °C" };
  set(throttled: boolean): void {
    this.state = { throttled, temperatureC: throttled ? 80 : 60, reason: throttled ? "80 °C: hot" : "60 °C: cool" };
    this.emit("change", this.state);
  }
}

const closers: Array<() => unknown> = [];
afterAll(async () => {
  for (const close of closers.reverse()) await close();
});

describe("the upload limit on real TCP (loopback)", () => {
  it("holds 5 MB/s within 5 % over 10 s with 1 and with 50 connections, and follows a live change within a second", async () => {
    const thermal = new FakeThermal();
    const governor = new ResourceGovernor({
      share: { cpuPercent: 50, uploadBytesPerSecond: RATE, downloadBytesPerSecond: 0, uploadWindows: [] },
      diskQuota: { share: 1 },
      thermal,
    });
    governor.start();
    closers.push(() => governor.stop());
    const one = new ByteRateLimiter({ rate: null });
    const fifty = new ByteRateLimiter({ rate: null });
    closers.push(followRate(one, governor, (l) => l.uploadBytesPerSecond));
    closers.push(followRate(fifty, governor, (l) => l.uploadBytesPerSecond));
    expect([one.rate, fifty.rate]).toEqual([RATE, RATE]);

    const a = await pacedServer(one);
    const b = await pacedServer(fifty);
    for (const { server } of [a, b]) {
      closers.push(() => new Promise((resolve) => server.close(resolve)));
      closers.push(() => server.closeAllConnections());
    }
    const single = await readers(a.port, 1);
    const many = await readers(b.port, 50);
    closers.push(single.close, many.close);

    const before = [...many.got];
    const [rateOne, rateFifty] = await Promise.all([measure(single.total, 10_000), measure(many.total, 10_000)]);
    const perConnection = many.got.map((n, i) => n - before[i]!);
    console.log(
      `10 s at ${RATE} B/s: 1 connection ${Math.round(rateOne)} B/s (${((rateOne / RATE - 1) * 100).toFixed(2)} %), ` +
        `50 connections ${Math.round(rateFifty)} B/s (${((rateFifty / RATE - 1) * 100).toFixed(2)} %), ` +
        `per connection ${Math.min(...perConnection)}..${Math.max(...perConnection)} B`,
    );
    expect(Math.abs(rateOne / RATE - 1)).toBeLessThan(0.05);
    expect(Math.abs(rateFifty / RATE - 1)).toBeLessThan(0.05);
    // Every connection progressed, each near its fair share (a fiftieth: 1 MB in 10 s).
    expect(Math.min(...perConnection)).toBeGreaterThan((0.8 * RATE * 10) / 50);

    // Hot: the governor quarters the upload rate; from one second after the change the new rate holds.
    thermal.set(true);
    expect(fifty.rate).toBe(RATE / 4);
    await sleep(1_000);
    const hot = await measure(many.total, 2_000);
    // Cool again: back up to the full rate, as fast (the waiting connections are not held to the slow schedule).
    thermal.set(false);
    expect(fifty.rate).toBe(RATE);
    await sleep(1_000);
    const cool = await measure(many.total, 2_000);
    console.log(`after the change: hot ${Math.round(hot)} B/s (limit ${RATE / 4}), cool ${Math.round(cool)} B/s`);
    expect(Math.abs(hot / (RATE / 4) - 1)).toBeLessThan(0.05);
    expect(Math.abs(cool / RATE - 1)).toBeLessThan(0.05);
  }, 40_000);
});
