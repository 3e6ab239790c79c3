// The client's verified download (issue 11: >= 0.8x an unverified download of the same bytes). Verified: the
// `sharenode/client` library's download() (agent/client/download.ts, what `sharenode get` runs) of a 64 MiB object
// from the box's real server (box-server.ts: ObjectServer, OrderGate and ReceiptBook in a process of their own)
// under a fleet-signed order for this client's key: outboard checked against the id, every 16 KiB group checked,
// OUT.part and its resume log fsynced as it goes, a receipt signed after every range and verified and logged
// (fsynced) by the box, the final rename. Unverified: the same bytes from the same server under an order of their
// own, fetched plainly: node:http GETs of the same ranges (the client's defaults: 1 MiB, 2 in flight on 2
// connections), each range written once at its offset into a file in the same directory, one fsync at the end:
// the same end state as the client's (the bytes durable in the file). Its time without that fsync is printed too
// (same runs), and for reference curl: one connection, the whole object in one GET, no fsync.
// A plain download signs no receipts, so the box's receipt window is set larger than the run (2^50 bytes); the
// client signs and sends its receipts all the same (the box checks each one and makes it durable before it
// answers), so their cost is in the verified figure. A third line is the plain download signing receipts as the
// client does (after every range, shown with the next request, POSTed at the end): the ratio to it is the cost of
// verification alone, the receipts being on both sides. Every download is checked byte for byte afterwards
// (untimed). Rounds run the candidates in a fresh random order each; medians; the ratio is the median of per-round ratios.
// Run by `npm run bench` (test/bench/run.mjs through ts-bench.mjs), or alone:
//   node test/bench/ts-bench.mjs client-bench [--quick] [--json]
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
import http from "node:http";
import { join } from "node:path";
import { download } from "../../agent/client/download";
import { type ClientKey, loadOrCreateClientKey } from "../../agent/client/key";
import { loadOrCreateDeviceIdentity } from "../../agent/identity/device-key";
import { createOutboard } from "../../agent/kernels/outboard";
import { signOrder } from "../../agent/protocol/order";
import { signReceipt } from "../../agent/protocol/receipt";
import { toHex } from "../../agent/util/hex";
import { prng, seededBytes, shuffled } from "../helpers/prng.mjs";
import { median, startBox } from "./box-server";

const OBJECT_BYTES = 64 << 20;
/** The client's defaults (download.ts): 1 MiB ranges, 2 requests in flight per box. */
const RANGE_BYTES = 1 << 20;
const CONNECTIONS = 2;
const BENCH_DEVICE = "c11e".repeat(8);
const VERIFIED = "verified (sharenode/client download)";
const PLAIN = "unverified (node:http, same ranges and connections)";
const PLAIN_UNSYNCED = "unverified (the same, without its final fsync)";
const PLAIN_RECEIPTS = "unverified, signing receipts as the client does";

/**
 * The unverified download: the same ranges over the same number of connections, each written once, one fsync.
 * Returns performance.now() when every byte was written, before the fsync.
 */
async function plainDownload(
  url: string,
  objectId: string,
  token: string,
  out: string,
  receipts?: { serial: string; key: ClientKey },
): Promise<number> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONNECTIONS });
  const file = await open(out, "w");
  // With receipts: the cumulative bytes received, signed after every range and shown with the next request, as
  // download() does (the box makes each larger one durable before it answers), then POSTed once at the end.
  let received = 0;
  let receipt: string | undefined;
  try {
    let next = 0;
    const worker = async () => {
      while (next < OBJECT_BYTES) {
        const offset = next;
        const end = Math.min(OBJECT_BYTES, offset + RANGE_BYTES);
        next = end;
        const data = await new Promise<Buffer>((resolve, reject) => {
          const req = http.get(
            `${url}/v1/objects/${objectId}`,
            {
              agent,
              headers: {
                "Sharenode-Order": token,
                Range: `bytes=${offset}-${end - 1}`,
                ...(receipt !== undefined ? { "Sharenode-Receipt": receipt } : {}),
              },
            },
            (res) => {
              if (res.statusCode !== 206) {
                res.resume();
                return reject(new Error(`client-bench: plain download: HTTP ${res.statusCode}`));
              }
              const buf = Buffer.allocUnsafe(end - offset);
              let got = 0;
              res.on("data", (chunk: Buffer) => {
                chunk.copy(buf, got);
                got += chunk.length;
              });
              res.on("end", () =>
                got === buf.length ? resolve(buf) : reject(new Error(`client-bench: short range at ${offset}`)),
              );
              res.on("error", reject);
            },
          );
          req.on("error", reject);
        });
        if (receipts) {
          received += data.length;
          receipt = signReceipt({ serial: receipts.serial, bytes: received }, receipts.key);
        }
        await file.write(data, 0, data.length, offset);
      }
    };
    await Promise.all(Array.from({ length: CONNECTIONS }, worker));
    if (receipt !== undefined) await postReceipt(url, token, receipt);
    const written = performance.now();
    await file.sync();
    return written;
  } finally {
    await file.close();
    agent.destroy();
  }
}

function postReceipt(url: string, token: string, receipt: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${url}/v1/receipts`,
      { method: "POST", headers: { "Sharenode-Order": token, "Content-Type": "text/plain" } },
      (res) => {
        res.resume();
        res.on("end", () =>
          res.statusCode === 204 || res.statusCode === 200
            ? resolve()
            : reject(new Error(`client-bench: receipt POST: HTTP ${res.statusCode}`)),
        );
      },
    );
    req.on("error", reject);
    req.end(receipt);
  });
}

function curlDownload(url: string, objectId: string, token: string, out: string): void {
  const r = spawnSync("curl", ["-sSf", "-H", `Sharenode-Order: ${token}`, "-o", out, `${url}/v1/objects/${objectId}`]);
  if (r.status !== 0) throw new Error(`client-bench: curl exited ${r.status}: ${r.stderr.toString().trim()}`);
}

export async function main(args: string[]): Promise<void> {
  const quick = args.includes("--quick");
  const json = args.includes("--json");
  const hasCurl = !spawnSync("curl", ["--version"], { stdio: "ignore" }).error;
  const work = mkdtempSync(join(process.env.TMPDIR ?? "/tmp", "sharenode-bench-client-"));
  let box: Awaited<ReturnType<typeof startBox>> | undefined;
  try {
    const data = seededBytes(OBJECT_BYTES, 0xc11e);
    const built = createOutboard(data);
    const objectId = toHex(built.id);
    mkdirSync(join(work, "box"));
    const objectPath = join(work, "box", objectId);
    const outboardPath = join(work, "box", `${objectId}.obao`);
    writeFileSync(objectPath, data);
    writeFileSync(outboardPath, built.outboard);
    const fleet = await loadOrCreateDeviceIdentity(join(work, "fleet"));
    const clientKey = await loadOrCreateClientKey(join(work, "client"));
    box = await startBox(
      {
        stateDir: join(work, "box"),
        objects: [{ id: objectId, length: OBJECT_BYTES, path: objectPath, outboardPath }],
        fleetPublicKey: fleet.publicKeyHex,
        deviceId: BENCH_DEVICE,
        windowBytes: 2 ** 50,
      },
      "sharenode serve",
    );
    const url = `http://127.0.0.1:${box.port}`;
    let serial = 0;
    // A fresh order per download: every download starts its order's meter and receipts from zero.
    const order = () =>
      signOrder(
        {
          serial: `client-bench-${serial++}`,
          deviceId: BENCH_DEVICE,
          objectId,
          clientKey: clientKey.publicKeyHex,
          maxBytes: 2 * OBJECT_BYTES,
          expiresAt: Date.now() + 3600_000,
          rightsId: "bench",
        },
        fleet,
      );
    const out = join(work, "out");
    let receipted = 0;
    /** When the plain download had written every byte (before its fsync). */
    let written = 0;
    const candidates: Record<string, () => Promise<void>> = {
      [VERIFIED]: async () => {
        const result = await download({ objectId, orders: [{ url, token: order() }], out, clientKey });
        receipted = result.boxes[0]!.receipted;
      },
      [PLAIN]: async () => {
        written = await plainDownload(url, objectId, order(), out);
      },
      [PLAIN_RECEIPTS]: async () => {
        const token = order();
        await plainDownload(url, objectId, token, out, { serial: `client-bench-${serial - 1}`, key: clientKey });
      },
    };
    if (hasCurl) {
      candidates["unverified (curl, 1 connection, no fsync)"] = async () => curlDownload(url, objectId, order(), out);
    }
    const names = Object.keys(candidates);
    const rates: Record<string, number[]> = Object.fromEntries([...names, PLAIN_UNSYNCED].map((n) => [n, []]));
    const rounds = quick ? 3 : 15;
    const seed = Number(process.env.BENCH_SEED ?? Date.now() % 2 ** 31);
    const next = prng(seed);
    // Round -1 is an untimed warm-up (page cache, JIT, the kernels).
    for (let r = -1; r < rounds; r++) {
      for (const name of shuffled(names, next)) {
        rmSync(out, { force: true });
        const t0 = performance.now();
        await candidates[name]!();
        const seconds = (performance.now() - t0) / 1000;
        if (!readFileSync(out).equals(data)) throw new Error(`client-bench: ${name} wrote other bytes`);
        if (r < 0) continue;
        rates[name]!.push(OBJECT_BYTES / seconds / 1e6);
        if (name === PLAIN) rates[PLAIN_UNSYNCED]!.push(OBJECT_BYTES / ((written - t0) / 1000) / 1e6);
      }
    }
    const ratioTo = (base: string) => median(rates[VERIFIED]!.map((v, i) => v / rates[base]![i]!));
    const ratio = ratioTo(PLAIN);
    const rows = [VERIFIED, PLAIN, PLAIN_UNSYNCED, ...names.slice(2)].map((name) => ({
      name,
      value: median(rates[name]!),
      unit: "MB/s",
    }));
    rows.push({ name: "verified / unverified without its fsync", value: ratioTo(PLAIN_UNSYNCED), unit: "x" });
    rows.push({ name: "verified / unverified signing receipts", value: ratioTo(PLAIN_RECEIPTS), unit: "x" });
    const receiptLog = statSync(join(work, "box", "receipts.log")).size;
    const targets = [
      { what: "client verified vs unverified download", value: ratio, goal: ">= 0.8x", met: ratio >= 0.8 },
    ];
    if (json) {
      console.log(JSON.stringify({ seed, rounds, rows, targets, receipted, receiptLog }, null, 2));
      return;
    }
    console.log(
      `\nclient download of a 64 MiB object from the box's server over loopback, to a file in ${work}: ` +
        `${rounds} rounds in shuffled order (seed ${seed}), medians`,
    );
    for (const r of rows) {
      console.log(`  ${r.name.padEnd(60)} ${r.value.toFixed(r.unit === "x" ? 2 : 0).padStart(8)} ${r.unit}`);
    }
    console.log(
      `  (the client receipted ${receipted} bytes per download; the box's receipt log grew to ${receiptLog} bytes)`,
    );
    console.log("\ntargets (issue 11)");
    for (const t of targets)
      console.log(
        `  ${t.met ? "met   " : "MISSED"} ${t.what.padEnd(44)} ${t.value.toFixed(2).padStart(8)}x (target ${t.goal})`,
      );
  } finally {
    await box?.stop();
    rmSync(work, { recursive: true, force: true });
  }
}
