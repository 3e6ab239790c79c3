// Multi-source verified fetch (issue 11): one 32 MiB object from three sources on loopback, every group checked
// against the outboard, written to the partial file and checkpointed, as agent/tasks runs it (the store's ingest
// is store-bench's). Two settings: each source capped at 10 MB/s (the target: >= 27 MB/s in all), and
// uncapped (what the fetcher itself costs). The sources are test/helpers/origin.ts, a node:http server in this
// process paced per answer. Rounds alternate the settings; medians. Run by `npm run bench` (test/bench/run.mjs
// through ts-bench.mjs), or alone:
//   node test/bench/ts-bench.mjs fetch-bench [--quick] [--json]
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Fetcher } from "../../agent/fetch/fetcher";
import { createOutboard } from "../../agent/kernels/outboard";
import { toHex } from "../../agent/util/hex";
import { Origin, type Behaviour } from "../helpers/origin";
import { seededBytes } from "../helpers/prng.mjs";

const args = process.argv.slice(2);
const json = args.includes("--json");
const quick = args.includes("--quick");

const median = (v: number[]) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const OBJECT = 32 << 20;
const CAP = 10_000_000;
const rounds = quick ? 2 : 5;
const origin = await Origin.start();
const data = seededBytes(OBJECT, 11);
const { id, outboard } = createOutboard(data);
const objectId = toHex(id);
const outboardUrl = origin.serve("bench.obao", outboard);
const settings: Array<[string, Behaviour]> = [
  ["capped", { kind: "slow", bytesPerSecond: CAP }],
  ["uncapped", { kind: "good" }],
];
const rates: Record<string, number[]> = { capped: [], uncapped: [] };
try {
  // One untimed round first: the kernels and the origin warm up.
  for (let r = -1; r < rounds; r++) {
    for (const [name, behaviour] of r % 2 === 0 ? settings : [...settings].reverse()) {
      const sources = ["a", "b", "c"].map((s) => origin.serve(`${name}-${s}`, data, behaviour));
      const dir = mkdtempSync(join(tmpdir(), "sharenode-bench-fetch-"));
      const agent = new http.Agent({ keepAlive: true });
      try {
        const t0 = performance.now();
        const result = await new Fetcher({ agents: { http: agent } }).fetch(
          { objectId, length: OBJECT, sources, outboard: outboardUrl },
          dir,
        );
        const seconds = (performance.now() - t0) / 1000;
        if (!result.ok) throw new Error(`fetch failed: ${result.code}: ${result.reason}`);
        await result.partial.remove();
        if (r >= 0) rates[name]!.push(OBJECT / seconds / 1e6);
      } finally {
        agent.destroy();
        rmSync(dir, { recursive: true, force: true });
      }
    }
  }
} finally {
  await origin.stop();
}

const capped = median(rates.capped!);
const uncapped = median(rates.uncapped!);
const rows = [
  { name: "fetch 32 MiB from 3 sources capped at 10 MB/s each, verified", value: capped, unit: "MB/s" },
  { name: "fetch 32 MiB from 3 uncapped loopback sources, verified", value: uncapped, unit: "MB/s" },
];
const targets = [{ what: "multi-source fetch, 3 x 10 MB/s", value: capped, goal: ">= 27 MB/s", met: capped >= 27 }];
if (json) {
  console.log(JSON.stringify({ rows, targets }, null, 2));
} else {
  console.log(`\nmulti-source fetch (${rounds} rounds, medians)`);
  for (const r of rows) console.log(`  ${r.name.padEnd(64)} ${r.value.toFixed(1).padStart(8)} ${r.unit}`);
  console.log("\ntargets (issue 11)");
  for (const t of targets)
    console.log(
      `  ${t.met ? "met   " : "MISSED"} ${t.what.padEnd(44)} ${t.value.toFixed(1).padStart(8)} (target ${t.goal})`,
    );
}
