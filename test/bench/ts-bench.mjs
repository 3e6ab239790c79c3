// Runs a TypeScript benchmark (the storage node and the daemon are device code, not in the library bundle):
// bundles test/bench/NAME.ts with esbuild and imports it. Arguments pass through (--json, --quick, --dir DIR).
//   node test/bench/ts-bench.mjs store-bench [--quick]
import { mkdtempSync, rmSync } from "node:fs";

import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "../..");

export async function runTsBench(name) {
  // Bundled next to the sources' node_modules so that packages left external (mqtt) resolve.
  const out = mkdtempSync(join(root, "node_modules", ".sharenode-bench-"));
  try {
    const file = join(out, `${name}.mjs`);
    await build({ entryPoints: [join(here, `${name}.ts`)], bundle: true, platform: "node", format: "esm", target: "node20", outfile: file, logLevel: "error", packages: "external" });
    const module = await import(pathToFileURL(file).href);
    // Benches that export main() run only when asked to (they also run stand-alone).
    if (typeof module.main === "function") await module.main(process.argv.slice(2).filter((a) => a !== name));
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] && !process.argv[2].startsWith("-")) {
  await runTsBench(process.argv[2]);
}
