// Serving (issue 11): the box's HTTP server against Debian's nginx serving the same files, one load generator
// (wrk: 1 thread, 64 connections) for both, whole 4 MiB objects and 64 KiB ranges, rounds in shuffled order,
// medians. Also a minimal node:http range server (no checks): the floor of what one Node process does here, so that
// the cost of orders, metering and receipts shows as the gap between it and ours. And the box's verified-streaming
// slices of the same spans (wasm/README.md format), against its plain answers of them.
// Each server runs in its own process: one Node process against one nginx worker (sendfile on).
// wrk's request timeout is the run's length: with its default of 2 s, 64 whole 4 MiB answers at once on this
// loaded 2-core machine left a few requests of every Node server (the box's too) unanswered in time and the bench
// failed. A request that takes longer than a whole run is counted and printed as a timeout, not a crash; the p99
// latency is printed beside it.
// Run by `npm run bench` (test/bench/run.mjs through ts-bench.mjs), or alone:
//   node test/bench/ts-bench.mjs serve-bench [--quick] [--json]
// Needs nginx and wrk (Debian: nginx, wrk); says which is missing.
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createOutboard } from "../../agent/kernels/outboard";
import { toHex } from "../../agent/util/hex";
import { loadOrCreateDeviceIdentity } from "../../agent/identity/device-key";
import { signOrder } from "../../agent/protocol/order";
import { prng, shuffled } from "../helpers/prng.mjs";
import { freePort, median, startBox, stopChild, waitForPort, type Server } from "./box-server";

const OBJECT_BYTES = 4 << 20;
const RANGE_BYTES = 64 << 10;
const OBJECTS = 16;
const CONNECTIONS = 64;
/** The box's device id in the bench (any will do: the orders name it). */
const BENCH_DEVICE = "5e7e".repeat(8);

/** The objects every server serves: the same files (nginx's root is work/www). */
interface ServeFixture {
  work: string;
  ids: string[];
  objectsDir: string;
  outboardsDir: string;
}

/** One measured line: a server, the headers its requests carry, plain answers or verified slices. */
interface Candidate {
  name: string;
  server: Server;
  headers: Map<string, string>;
  slice: boolean;
}

function need(tool: string, debianPackage: string): void {
  const r = spawnSync(tool, ["-v"], { stdio: "ignore" });
  if (r.error)
    throw new Error(
      `serve-bench: ${tool} is missing (Debian package ${debianPackage}: apt-get install ${debianPackage})`,
    );
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

/**
 * The floor: node:http, a cached fd per object, no checks at all. A range of up to a piece (256 KiB, the box's
 * piece) is one fs.read and one end(); a larger answer is read and written a piece at a time, each piece when the
 * socket has taken the last, as the box does: one piece per connection in memory, not a whole 4 MiB object (this
 * server first read each object whole and handed it to the socket at once, 256 MiB queued for 64 connections).
 */
const MINIMAL_SERVER = `
const http = require("node:http"), fs = require("node:fs"), path = require("node:path");
const dir = process.argv[1], port = Number(process.argv[2]), fds = new Map(), PIECE = 256 * 1024;
http.createServer((req, res) => {
  const id = req.url.slice("/v1/objects/".length);
  let fd = fds.get(id);
  if (fd === undefined) { fd = fs.openSync(path.join(dir, id), "r"); fds.set(id, fd); }
  const size = fs.fstatSync(fd).size;
  let start = 0, end = size - 1, status = 200;
  const m = /^bytes=(\\d+)-(\\d+)$/.exec(req.headers.range || "");
  if (m) { start = Number(m[1]); end = Math.min(Number(m[2]), size - 1); status = 206; }
  let pos = start;
  const next = () => {
    const want = Math.min(PIECE, end + 1 - pos);
    const buf = Buffer.allocUnsafe(want);
    fs.read(fd, buf, 0, want, pos, (err, got) => {
      if (res.destroyed) return;
      if (err || got !== want) { if (pos === start) { res.statusCode = 500; return res.end(); } return res.destroy(); }
      if (pos === start) {
        const headers = { "content-length": end - start + 1, "content-type": "application/octet-stream" };
        if (status === 206) headers["content-range"] = "bytes " + start + "-" + end + "/" + size;
        res.writeHead(status, headers);
      }
      pos += got;
      if (pos > end) res.end(buf);
      else if (res.write(buf)) next();
      else res.once("drain", next);
    });
  };
  next();
}).listen(port, "127.0.0.1");
`;

async function startMinimal(f: ServeFixture): Promise<Server> {
  const port = await freePort();
  const child = spawn(process.execPath, ["-e", MINIMAL_SERVER, f.objectsDir, String(port)], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  await waitForPort(port, child, "the minimal node:http server");
  return { name: "minimal node:http (no checks)", port, stop: () => stopChild(child) };
}

interface Load {
  requestsPerSecond: number;
  bytesPerSecond: number;
  /** Requests not answered within wrk's timeout (the run's length). */
  timeouts: number;
  /** wrk's 99th percentile latency, ms. */
  p99Ms: number;
}

const LATENCY_UNITS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 };

/**
 * One wrk run: random objects, whole (span 0) or a random aligned span of that many bytes; plain answers (Range)
 * or the box's verified slices of the same bytes; per-object headers (orders) when given.
 */
function wrk(port: number, seconds: number, span: number, f: ServeFixture, c: Candidate): Load {
  const script = join(f.work, `wrk-${span}-${c.slice ? "slice" : "plain"}.lua`);
  const ids = f.ids.map((id) => `"${id}"`).join(",");
  const perId = f.ids.map((id) => `["${id}"]="${c.headers.get(id) ?? ""}"`).join(",");
  writeFileSync(
    script,
    `local ids = {${ids}}
local orders = {${perId}}
local span = ${span}
local slice = ${c.slice}
local slots = ${OBJECT_BYTES} / math.max(span, 1)
request = function()
  local id = ids[math.random(#ids)]
  local h = {}
  if orders[id] ~= "" then h["Sharenode-Order"] = orders[id] end
  local off, len = 0, ${OBJECT_BYTES}
  if span > 0 then off, len = math.random(0, slots - 1) * span, span end
  if slice then
    return wrk.format("GET", "/v1/objects/" .. id .. "/slice?start=" .. off .. "&end=" .. (off + len), h)
  end
  if span > 0 then h["Range"] = "bytes=" .. off .. "-" .. (off + len - 1) end
  return wrk.format("GET", "/v1/objects/" .. id, h)
end
`,
  );
  const r = spawnSync(
    "wrk",
    [
      "-t1",
      `-c${CONNECTIONS}`,
      `-d${seconds}s`,
      `--timeout`,
      `${seconds}s`,
      "--latency",
      "-s",
      script,
      `http://127.0.0.1:${port}/`,
    ],
    { encoding: "utf8" },
  );
  if (r.status !== 0) throw new Error(`serve-bench: wrk exited ${r.status}: ${r.stderr.trim()}`);
  const bad = /Non-2xx or 3xx responses: (\d+)/.exec(r.stdout);
  if (bad) throw new Error(`serve-bench: ${bad[1]} answers were not 2xx on port ${port}:\n${r.stdout}`);
  let timeouts = 0;
  const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(r.stdout);
  if (errors) {
    // A timeout is a figure (a server too slow for some connection); a broken connection is a failure.
    if (errors[1] !== "0" || errors[2] !== "0" || errors[3] !== "0")
      throw new Error(`serve-bench: wrk socket errors on port ${port}: ${errors[0]}`);
    timeouts = Number(errors[4]);
  }
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(r.stdout);
  const transferred = /(\d+) requests in ([\d.]+)s, ([\d.]+)([KMG]?B) read/.exec(r.stdout);
  const p99 = /^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$/m.exec(r.stdout);
  if (!rps || !transferred || !p99) throw new Error(`serve-bench: cannot read wrk's output:\n${r.stdout}`);
  const unit = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 }[transferred[4]!]!;
  return {
    requestsPerSecond: Number(rps[1]),
    bytesPerSecond: (Number(transferred[3]) * unit) / Number(transferred[2]),
    timeouts,
    p99Ms: Number(p99[1]) * LATENCY_UNITS[p99[2]!]!,
  };
}

interface Row {
  what: string;
  name: string;
  rps: number;
  mbps: number;
  /** Requests/s against nginx's in the same round, median. */
  ratio: number;
  /** Verified slices only: requests/s against the box's plain answers of the same spans, same round, median. */
  ratioToPlain?: number;
  timeouts: number;
  p99Ms: number;
}

export async function main(args: string[]): Promise<void> {
  const quick = args.includes("--quick");
  const json = args.includes("--json");
  need("nginx", "nginx");
  need("wrk", "wrk");
  const work = mkdtempSync(join(process.env.TMPDIR ?? "/tmp", "sharenode-bench-serve-"));
  // nginx's worker runs as another user (www-data) when started as root: it must be able to read the files.
  chmodSync(work, 0o755);
  const servers: Server[] = [];
  try {
    const objectsDir = join(work, "www", "v1", "objects");
    const outboardsDir = join(work, "outboards");
    mkdirSync(objectsDir, { recursive: true });
    mkdirSync(outboardsDir);
    const ids: string[] = [];
    for (let i = 0; i < OBJECTS; i++) {
      const data = randomBytes(OBJECT_BYTES);
      const { id, outboard } = createOutboard(data);
      const hex = toHex(id);
      writeFileSync(join(objectsDir, hex), data);
      writeFileSync(join(outboardsDir, `${hex}.obao`), outboard);
      ids.push(hex);
    }
    const f: ServeFixture = { work, ids, objectsDir, outboardsDir };

    // The box: order check and metering on (every request carries its object's order), rate limit off. A stock
    // load generator signs no receipts, so the orders' budget and the box's receipt window are set larger than the
    // run (2^50 bytes); receipt handling is measured by client-bench, where the client signs them.
    const fleet = await loadOrCreateDeviceIdentity(join(work, "fleet"));
    const client = await loadOrCreateDeviceIdentity(join(work, "client"));
    const orders = new Map(
      ids.map((id, i) => [
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
    );

    const nginx = await startNginx(f);
    servers.push(nginx);
    const minimal = await startMinimal(f);
    servers.push(minimal);
    const box = await startBox(
      {
        stateDir: work,
        objects: ids.map((id) => ({
          id,
          length: OBJECT_BYTES,
          path: join(objectsDir, id),
          outboardPath: join(outboardsDir, `${id}.obao`),
        })),
        fleetPublicKey: fleet.publicKeyHex,
        deviceId: BENCH_DEVICE,
        windowBytes: 2 ** 50,
      },
      "sharenode serve (orders, metering)",
    );
    servers.push(box);
    const none = new Map<string, string>();
    const candidates: Candidate[] = [
      { name: nginx.name, server: nginx, headers: none, slice: false },
      { name: minimal.name, server: minimal, headers: none, slice: false },
      { name: box.name, server: box, headers: orders, slice: false },
      { name: "sharenode serve, verified slices", server: box, headers: orders, slice: true },
    ];
    const [nginxLine, , boxLine, sliceLine] = candidates;

    const seconds = quick ? 2 : 5;
    const rounds = quick ? 1 : 3;
    const seed = Number(process.env.BENCH_SEED ?? Date.now() % 2 ** 31);
    const next = prng(seed);
    const spans = [0, RANGE_BYTES];
    const results = new Map<string, Load[]>();
    const key = (span: number, c: Candidate) => `${span}|${c.name}`;
    for (const span of spans) {
      // One untimed warm-up per line: page cache, JIT, connection pools, the box's group-tree cache.
      for (const c of candidates) wrk(c.server.port, 1, span, f, c);
      for (let r = 0; r < rounds; r++) {
        for (const c of shuffled(candidates, next)) {
          results.set(key(span, c), [...(results.get(key(span, c)) ?? []), wrk(c.server.port, seconds, span, f, c)]);
        }
      }
    }
    const perRound = (a: Load[], b: Load[]) => median(a.map((l, i) => l.requestsPerSecond / b[i]!.requestsPerSecond));
    const rows: Row[] = [];
    const targets: Array<{ what: string; value: number; goal: number; met: boolean }> = [];
    for (const span of spans) {
      const what = span ? "64 KiB ranges" : "whole 4 MiB objects";
      const base = results.get(key(span, nginxLine!))!;
      for (const c of candidates) {
        const loads = results.get(key(span, c))!;
        rows.push({
          what,
          name: c.name,
          rps: median(loads.map((l) => l.requestsPerSecond)),
          mbps: median(loads.map((l) => l.bytesPerSecond)) / 1e6,
          ratio: perRound(loads, base),
          ratioToPlain: c.slice ? perRound(loads, results.get(key(span, boxLine!))!) : undefined,
          timeouts: loads.reduce((sum, l) => sum + l.timeouts, 0),
          p99Ms: median(loads.map((l) => l.p99Ms)),
        });
      }
      const boxRatio = perRound(results.get(key(span, boxLine!))!, base);
      const goal = span ? 0.6 : 1.0;
      targets.push({ what: `serving ${what} vs nginx`, value: boxRatio, goal, met: boxRatio >= goal });
      const sliceRatio = perRound(results.get(key(span, sliceLine!))!, results.get(key(span, boxLine!))!);
      targets.push({
        what: `verified slices vs plain, ${what}`,
        value: sliceRatio,
        goal: 0.7,
        met: sliceRatio >= 0.7,
      });
    }
    if (json) {
      console.log(JSON.stringify({ seed, connections: CONNECTIONS, seconds, rounds, rows, targets }, null, 2));
      return;
    }
    console.log(
      `\nserving over loopback: wrk 1 thread, ${CONNECTIONS} connections, ${seconds} s x ${rounds} rounds in shuffled order (seed ${seed}), medians;\n` +
        `ratio = requests/s against nginx in the same round; MB/s on the wire (a slice carries its proof too); ` +
        `timeouts: requests over ${seconds} s, all rounds`,
    );
    for (const row of rows) {
      const plain = row.ratioToPlain === undefined ? "" : ` (${row.ratioToPlain.toFixed(2)}x plain)`;
      console.log(
        `  ${row.what.padEnd(20)} ${row.name.padEnd(36)} ${row.rps.toFixed(0).padStart(8)} req/s ` +
          `${row.mbps.toFixed(0).padStart(6)} MB/s ${row.ratio.toFixed(2).padStart(6)}x ` +
          `p99 ${row.p99Ms.toFixed(0).padStart(5)} ms ${String(row.timeouts).padStart(3)} timeouts${plain}`,
      );
    }
    console.log("\ntargets (issue 11)");
    for (const t of targets)
      console.log(
        `  ${t.met ? "met   " : "MISSED"} ${t.what.padEnd(44)} ${t.value.toFixed(2).padStart(8)}x (target >= ${t.goal.toFixed(1)}x)`,
      );
  } finally {
    for (const s of servers) await s.stop();
    rmSync(work, { recursive: true, force: true });
  }
}
