// Serving (issue 11): the box's HTTP server against Debian's nginx serving the same files, one load generator
// (wrk: 1 thread, 64 connections) for both, whole 4 MiB objects and 64 KiB ranges, rounds in shuffled order,
// medians. Also a minimal node:http range server (one fs.read per request, no checks): the floor of what one Node
// process does here, so that the cost of orders, metering and receipts shows as the gap between it and ours.
// Each server runs in its own process: one Node process against one nginx worker (sendfile on).
// Run by `npm run bench` (test/bench/run.mjs through ts-bench.mjs), or alone:
//   node test/bench/ts-bench.mjs serve-bench [--quick] [--json]
// Needs nginx and wrk (Debian: nginx, wrk); says which is missing.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { blake3 } from "../../agent/kernels/blake3";
import { toHex } from "../../agent/util/hex";
import { loadOrCreateDeviceIdentity } from "../../agent/identity/device-key";
import { signOrder } from "../../agent/protocol/order";
import { OrderGate } from "../../agent/serve/order-gate";
import { ReceiptBook } from "../../agent/serve/receipt-book";
import { ObjectServer } from "../../agent/serve/server";
import { prng, shuffled } from "../helpers/prng.mjs";

const OBJECT_BYTES = 4 << 20;
const RANGE_BYTES = 64 << 10;
const OBJECTS = 16;
const CONNECTIONS = 64;

export interface Server {
  name: string;
  port: number;
  stop(): Promise<void>;
}

/** What a server under test is given: the objects (id -> path of its bytes) and a port. */
export interface ServeFixture {
  work: string;
  ids: string[];
  pathOf(id: string): string;
}

const median = (v: number[]) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

function need(tool: string, debianPackage: string): void {
  const r = spawnSync(tool, ["-v"], { stdio: "ignore" });
  if (r.error)
    throw new Error(
      `serve-bench: ${tool} is missing (Debian package ${debianPackage}: apt-get install ${debianPackage})`,
    );
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, child: ChildProcess, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`serve-bench: ${what} exited with ${child.exitCode}`);
    const up = await new Promise<boolean>((resolve) => {
      const socket = new Socket();
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
      socket.connect(port, "127.0.0.1");
    });
    if (up) return;
    if (Date.now() > deadline) throw new Error(`serve-bench: ${what} did not listen on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
    setTimeout(() => child.kill("SIGKILL"), 3000).unref();
  });
}

async function startNginx(f: ServeFixture): Promise<Server> {
  const port = await freePort();
  const prefix = join(f.work, "nginx");
  mkdirSync(join(prefix, "logs"), { recursive: true });
  const conf = join(prefix, "nginx.conf");
  writeFileSync(
    conf,
    `worker_processes 1;
daemon off;
pid ${join(prefix, "nginx.pid")};
error_log ${join(prefix, "logs", "error.log")} warn;
events { worker_connections 1024; }
http {
  sendfile on;
  tcp_nopush on;
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path ${prefix}/body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:${port};
    root ${join(f.work, "www")};
  }
}
`,
  );
  const child = spawn("nginx", ["-p", prefix, "-c", conf], { stdio: ["ignore", "ignore", "inherit"] });
  await waitForPort(port, child, "nginx");
  return { name: "nginx (1 worker, sendfile)", port, stop: () => stopChild(child) };
}

/** The floor: node:http, a cached fd per object, one fs.read per request into one buffer, no checks at all. */
const MINIMAL_SERVER = `
const http = require("node:http"), fs = require("node:fs"), path = require("node:path");
const dir = process.argv[1], port = Number(process.argv[2]), fds = new Map();
http.createServer((req, res) => {
  const id = req.url.slice("/v1/objects/".length);
  let fd = fds.get(id);
  if (fd === undefined) { fd = fs.openSync(path.join(dir, id), "r"); fds.set(id, fd); }
  const size = fs.fstatSync(fd).size;
  let start = 0, end = size - 1, status = 200;
  const m = /^bytes=(\\d+)-(\\d+)$/.exec(req.headers.range || "");
  if (m) { start = Number(m[1]); end = Math.min(Number(m[2]), size - 1); status = 206; }
  const buf = Buffer.allocUnsafe(end - start + 1);
  fs.read(fd, buf, 0, buf.length, start, (err) => {
    if (err) { res.statusCode = 500; return res.end(); }
    const headers = { "content-length": buf.length, "content-type": "application/octet-stream" };
    if (status === 206) headers["content-range"] = "bytes " + start + "-" + end + "/" + size;
    res.writeHead(status, headers);
    res.end(buf);
  });
}).listen(port, "127.0.0.1");
`;

async function startMinimal(f: ServeFixture): Promise<Server> {
  const port = await freePort();
  const child = spawn(process.execPath, ["-e", MINIMAL_SERVER, join(f.work, "www", "v1", "objects"), String(port)], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  await waitForPort(port, child, "the minimal node:http server");
  return { name: "minimal node:http (no checks)", port, stop: () => stopChild(child) };
}

interface Load {
  requestsPerSecond: number;
  bytesPerSecond: number;
}

/** One wrk run: random objects, whole or a random aligned range; per-object headers (orders) when given. */
function wrk(port: number, seconds: number, rangeBytes: number, f: ServeFixture, headers: Map<string, string>): Load {
  const script = join(f.work, `wrk-${rangeBytes}.lua`);
  const ids = f.ids.map((id) => `"${id}"`).join(",");
  const perId = f.ids.map((id) => `["${id}"]="${headers.get(id) ?? ""}"`).join(",");
  writeFileSync(
    script,
    `local ids = {${ids}}
local orders = {${perId}}
local range = ${rangeBytes}
local slots = ${OBJECT_BYTES} / math.max(range, 1)
request = function()
  local id = ids[math.random(#ids)]
  local h = {}
  if orders[id] ~= "" then h["Sharenode-Order"] = orders[id] end
  if range > 0 then
    local off = math.random(0, slots - 1) * range
    h["Range"] = "bytes=" .. off .. "-" .. (off + range - 1)
  end
  return wrk.format("GET", "/v1/objects/" .. id, h)
end
`,
  );
  const r = spawnSync("wrk", ["-t1", `-c${CONNECTIONS}`, `-d${seconds}s`, "-s", script, `http://127.0.0.1:${port}/`], {
    encoding: "utf8",
  });
  if (r.status !== 0) throw new Error(`serve-bench: wrk exited ${r.status}: ${r.stderr.trim()}`);
  const bad = /Non-2xx or 3xx responses: (\d+)/.exec(r.stdout);
  if (bad) throw new Error(`serve-bench: ${bad[1]} answers were not 2xx on port ${port}:\n${r.stdout}`);
  const errors = /Socket errors: (.*)/.exec(r.stdout);
  if (errors) throw new Error(`serve-bench: wrk socket errors on port ${port}: ${errors[1]}`);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(r.stdout);
  const transferred = /(\d+) requests in ([\d.]+)s, ([\d.]+)([KMG]?B) read/.exec(r.stdout);
  if (!rps || !transferred) throw new Error(`serve-bench: cannot read wrk's output:\n${r.stdout}`);
  const unit = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 }[transferred[4]!]!;
  return {
    requestsPerSecond: Number(rps[1]),
    bytesPerSecond: (Number(transferred[3]) * unit) / Number(transferred[2]),
  };
}

export interface ServeBenchOptions {
  quick: boolean;
  json: boolean;
  /** More servers to measure against nginx (sharenode's own), with the headers each request of an object needs. */
  extra?: Array<{ start(f: ServeFixture): Promise<Server>; headers(f: ServeFixture): Map<string, string> }>;
}

export async function serveBench(options: ServeBenchOptions): Promise<void> {
  need("nginx", "nginx");
  need("wrk", "wrk");
  const work = mkdtempSync(join(process.env.TMPDIR ?? "/tmp", "sharenode-bench-serve-"));
  // nginx's worker runs as another user (www-data) when started as root: it must be able to read the files.
  chmodSync(work, 0o755);
  const servers: Server[] = [];
  try {
    const objectsDir = join(work, "www", "v1", "objects");
    mkdirSync(objectsDir, { recursive: true });
    const ids: string[] = [];
    for (let i = 0; i < OBJECTS; i++) {
      const data = randomBytes(OBJECT_BYTES);
      const id = toHex(blake3(data));
      writeFileSync(join(objectsDir, id), data);
      ids.push(id);
    }
    const fixture: ServeFixture = { work, ids, pathOf: (id) => join(objectsDir, id) };
    const candidates: Array<{ server: Server; headers: Map<string, string> }> = [];
    candidates.push({ server: await startNginx(fixture), headers: new Map() });
    candidates.push({ server: await startMinimal(fixture), headers: new Map() });
    for (const extra of options.extra ?? []) {
      candidates.push({ server: await extra.start(fixture), headers: extra.headers(fixture) });
    }
    servers.push(...candidates.map((c) => c.server));

    const seconds = options.quick ? 2 : 5;
    const rounds = options.quick ? 1 : 3;
    const seed = Number(process.env.BENCH_SEED ?? Date.now() % 2 ** 31);
    const next = prng(seed);
    const results = new Map<string, Load[]>();
    for (const range of [0, RANGE_BYTES]) {
      // One untimed warm-up per server: page cache, JIT, connection pools.
      for (const c of candidates) wrk(c.server.port, 1, range, fixture, c.headers);
      for (let r = 0; r < rounds; r++) {
        for (const c of shuffled(candidates, next)) {
          const key = `${range}|${c.server.name}`;
          results.set(key, [...(results.get(key) ?? []), wrk(c.server.port, seconds, range, fixture, c.headers)]);
        }
      }
    }
    const rows = [];
    for (const range of [0, RANGE_BYTES]) {
      const base = results.get(`${range}|${candidates[0]!.server.name}`)!;
      for (const c of candidates) {
        const loads = results.get(`${range}|${c.server.name}`)!;
        const rps = median(loads.map((l) => l.requestsPerSecond));
        const mbps = median(loads.map((l) => l.bytesPerSecond)) / 1e6;
        const ratio = median(loads.map((l, i) => l.requestsPerSecond / base[i]!.requestsPerSecond));
        rows.push({ what: range ? "64 KiB ranges" : "whole 4 MiB objects", server: c.server.name, rps, mbps, ratio });
      }
    }
    if (options.json) {
      console.log(JSON.stringify({ seed, connections: CONNECTIONS, seconds, rounds, rows }, null, 2));
      return;
    }
    console.log(
      `\nserving over loopback: wrk 1 thread, ${CONNECTIONS} connections, ${seconds} s x ${rounds} rounds in shuffled order (seed ${seed}), medians; ratio = requests/s against nginx in the same round`,
    );
    for (const row of rows) {
      console.log(
        `  ${row.what.padEnd(20)} ${row.server.padEnd(36)} ${row.rps.toFixed(0).padStart(8)} req/s ${row.mbps.toFixed(0).padStart(6)} MB/s ${row.ratio.toFixed(2).padStart(6)}x`,
      );
    }
  } finally {
    for (const s of servers) await s.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

/** The box's device id in the bench (any will do: the orders name it). */
const BENCH_DEVICE = "5e7e".repeat(8);

/**
 * The box's own server (agent/serve) in a child process: this bundle run again with SERVE_BENCH_CHILD set. Order
 * check and metering on (every request carries its object's order), rate limit off. A stock load generator signs
 * no receipts, so the orders' budget and the box's receipt window are set larger than the run (2^50 bytes).
 */
async function startBox(f: ServeFixture, fleetPublicKey: string): Promise<Server> {
  const port = await freePort();
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url)], {
    env: { ...process.env, SERVE_BENCH_CHILD: JSON.stringify({ work: f.work, ids: f.ids, port, fleetPublicKey }) },
    stdio: ["ignore", "ignore", "inherit"],
  });
  await waitForPort(port, child, "the box's server");
  return { name: "sharenode serve (orders, metering)", port, stop: () => stopChild(child) };
}

async function boxChild(spec: { work: string; ids: string[]; port: number; fleetPublicKey: string }): Promise<void> {
  const objects = join(spec.work, "www", "v1", "objects");
  const known = new Set(spec.ids);
  const book = new ReceiptBook(join(spec.work, "receipts.log"));
  await book.start();
  const server = new ObjectServer({
    store: {
      locate: (id) =>
        known.has(id) ? { length: OBJECT_BYTES, path: join(objects, id), outboardPath: join(objects, id) } : undefined,
    },
    bind: "127.0.0.1",
    port: spec.port,
    limits: { maxConnections: 1024, maxConnectionsPerAddress: 1024 },
    gate: new OrderGate({ fleetPublicKey: spec.fleetPublicKey, deviceId: BENCH_DEVICE, book, windowBytes: 2 ** 50 }),
  });
  await server.start();
}

if (process.env.SERVE_BENCH_CHILD) await boxChild(JSON.parse(process.env.SERVE_BENCH_CHILD));

export async function main(args: string[]): Promise<void> {
  const keys = mkdtempSync(join(process.env.TMPDIR ?? "/tmp", "sharenode-bench-fleet-"));
  try {
    const fleet = await loadOrCreateDeviceIdentity(keys);
    const client = await loadOrCreateDeviceIdentity(join(keys, "client"));
    const box = {
      start: (f: ServeFixture) => startBox(f, fleet.publicKeyHex),
      headers: (f: ServeFixture) =>
        new Map(
          f.ids.map((id, i) => [
            id,
            signOrder(
              {
                serial: `bench-${i}`,
                deviceId: BENCH_DEVICE,
                objectId: id,
                clientKey: client.publicKeyHex,
                maxBytes: 2 ** 50,
                expiresAt: Date.now() + 3600_000,
                rightsId: "bench",
              },
              fleet,
            ),
          ]),
        ),
    };
    await serveBench({ quick: args.includes("--quick"), json: args.includes("--json"), extra: [box] });
  } finally {
    rmSync(keys, { recursive: true, force: true });
  }
}
