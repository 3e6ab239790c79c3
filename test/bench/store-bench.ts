// The storage node's figures (issue 3): ingest against a plain copy of the same bytes to the same filesystem,
// storage proofs answered per second and bytes read per proof, and the scrub's read rate against its setting.
// Ingest and copy alternate which goes first from round to round, so neither always meets a cold or a busy disk;
// medians. Run by `npm run bench` (test/bench/run.mjs through ts-bench.mjs), or alone:
//   node test/bench/ts-bench.mjs store-bench [--quick] [--json] [--dir DIR]
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { open, unlink } from "node:fs/promises";
import { join } from "node:path";
import { loadOrCreateDeviceIdentity } from "../../agent/identity/device-key";
import { answerChallenge } from "../../agent/protocol/storage-proof";
import { ObjectStore } from "../../agent/store/object-store";
import { Scrubber } from "../../agent/store/scrub";

const args = process.argv.slice(2);
const json = args.includes("--json");
const quick = args.includes("--quick");
const dirArg = args.indexOf("--dir");
const base = dirArg >= 0 ? args[dirArg + 1]! : (process.env.TMPDIR ?? "/tmp");

const median = (v: number[]) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const rows: Array<{ name: string; value: number; unit: string }> = [];
const targets: Array<{ what: string; value: number; goal: string; met: boolean }> = [];

const work = mkdtempSync(join(base, "sharenode-bench-store-"));
try {
  const dataDir = join(work, "data");
  const stateDir = join(work, "state");
  const store = new ObjectStore({ dataDir, quota: { bytes: 2 ** 40 }, reserveBytes: 0 });
  await store.start();
  const identity = await loadOrCreateDeviceIdentity(stateDir);

  // --- ingest vs plain copy -------------------------------------------------------------------------------
  const OBJECT = 16 << 20;
  const PIECE = 256 << 10;
  const rounds = quick ? 3 : 7;
  const ingestRates: number[] = [];
  const copyRates: number[] = [];
  const ratios: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const data = randomBytes(OBJECT);
    const pieces = async function* () {
      for (let o = 0; o < data.length; o += PIECE) yield data.subarray(o, o + PIECE);
    };
    // Plain copy: the same bytes, the same piece size, to the same filesystem, made durable (fsync) as the
    // store's are.
    const plainCopy = async () => {
      const t = performance.now();
      const copyPath = join(dataDir, "tmp", `copy-${r}`);
      const fh = await open(copyPath, "w");
      for await (const p of pieces()) await fh.write(p);
      await fh.sync();
      await fh.close();
      const rate = OBJECT / ((performance.now() - t) / 1000);
      await unlink(copyPath);
      return rate;
    };
    const storeIngest = async () => {
      const t = performance.now();
      await store.ingest(pieces(), { declaredLength: OBJECT });
      return OBJECT / ((performance.now() - t) / 1000);
    };
    let copy: number;
    let ingest: number;
    if (r % 2 === 0) {
      copy = await plainCopy();
      ingest = await storeIngest();
    } else {
      ingest = await storeIngest();
      copy = await plainCopy();
    }
    copyRates.push(copy);
    ingestRates.push(ingest);
    ratios.push(ingest / copy);
  }
  rows.push({
    name: "ingest 16 MiB objects (hash + outboard + fsync + index)",
    value: median(ingestRates) / 1e6,
    unit: "MB/s",
  });
  rows.push({ name: "plain copy of the same bytes (write + fsync)", value: median(copyRates) / 1e6, unit: "MB/s" });
  targets.push({ what: "ingest vs plain copy", value: median(ratios), goal: ">= 0.8x", met: median(ratios) >= 0.8 });

  // --- storage proofs from stored 4 MiB objects, warm page cache, k = 1 --------------------------------------
  const ids: string[] = [];
  for (let i = 0; i < 8; i++)
    ids.push(
      (
        await store.ingest(
          (async function* () {
            yield randomBytes(4 << 20);
          })(),
        )
      ).object.id,
    );
  const opened = await Promise.all(ids.map((id) => store.openForProof(id)));
  let bytesRead = 0;
  let reads = 0;
  const objects = opened.map((o) => ({
    ...o,
    readAt: async (offset: number, length: number) => {
      bytesRead += length;
      reads++;
      return o.readAt(offset, length);
    },
  }));
  const proofRates: number[] = [];
  let answered = 0;
  for (let r = 0; r < (quick ? 3 : 9); r++) {
    const start = performance.now();
    let n = 0;
    while (performance.now() - start < 300) {
      const object = objects[n % objects.length]!;
      const nonce = randomBytes(32).toString("hex");
      await answerChallenge({ objectId: ids[n % ids.length]!, nonce, count: 1 }, object, identity, () => Date.now());
      n++;
    }
    answered += n;
    proofRates.push(n / ((performance.now() - start) / 1000));
  }
  for (const o of opened) await o.close();
  rows.push({ name: "storage proofs answered (4 MiB objects, k = 1, signed)", value: median(proofRates), unit: "/s" });
  rows.push({ name: "bytes read per proof", value: bytesRead / answered, unit: "B" });
  rows.push({ name: "reads per proof", value: reads / answered, unit: "" });
  targets.push({
    what: "storage proofs per second",
    value: median(proofRates),
    goal: ">= 2,000/s",
    met: median(proofRates) >= 2000,
  });
  targets.push({
    what: "bytes read per proof (one 16 KiB group)",
    value: bytesRead / answered,
    goal: "<= 16,384 B",
    met: bytesRead / answered <= 16384,
  });

  // --- scrub rate --------------------------------------------------------------------------------------------
  const rate = 40e6;
  const scrub = await new Scrubber(store, { bytesPerSecond: rate }).runOnce();
  const actual = scrub.bytes / (scrub.elapsedMs / 1000);
  rows.push({
    name: `scrub read rate (configured ${rate / 1e6} MB/s, ${Math.round(scrub.bytes / 1e6)} MB)`,
    value: actual / 1e6,
    unit: "MB/s",
  });
  targets.push({
    what: "scrub rate within 10% of its setting",
    value: actual / rate,
    goal: "0.9x..1.1x",
    met: actual / rate >= 0.9 && actual / rate <= 1.1,
  });
  await store.stop();
} finally {
  rmSync(work, { recursive: true, force: true });
}

if (json) {
  console.log(JSON.stringify({ dir: base, rows, targets }, null, 2));
} else {
  const fmt = (v: number) => (v >= 100 ? Math.round(v).toLocaleString("en-US") : v.toFixed(2));
  console.log(`\nstorage node (data in ${base}; --dir DIR to measure another filesystem)`);
  for (const r of rows) console.log(`  ${r.name.padEnd(60)} ${fmt(r.value).padStart(10)} ${r.unit}`);
  console.log("\ntargets (issue 3)");
  for (const t of targets)
    console.log(
      `  ${t.met ? "met   " : "MISSED"} ${t.what.padEnd(44)} ${fmt(t.value).padStart(10)} (target ${t.goal})`,
    );
}
