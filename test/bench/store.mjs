// `npm run bench` second part: bundles test/bench/store-bench.ts (the store is device code, not part of the
// library bundle) and runs it. Arguments pass through (--json, --quick, --dir DIR).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = mkdtempSync(join(tmpdir(), "sharenode-bench-"));
try {
  const file = join(out, "store-bench.mjs");
  await build({ entryPoints: [join(here, "store-bench.ts")], bundle: true, platform: "node", format: "esm", target: "node20", outfile: file, logLevel: "error" });
  await import(pathToFileURL(file).href);
} finally {
  rmSync(out, { recursive: true, force: true });
}
