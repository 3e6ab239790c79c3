// Runs one TypeScript benchmark of test/bench (store-bench, outbox-bench, agent-bench: device code that is not in
// the library bundle dist/index.js): bundles test/bench/NAME.ts with esbuild into a temporary directory under
// node_modules (packages stay external and resolve from there) and imports it. A bench that exports main(args)
// is called with the command line's flags; the others run on import and read process.argv themselves. Flags:
// --json, --quick, and for store-bench --dir DIR (the filesystem to measure). run.mjs calls it for each; alone:
//   node test/bench/ts-bench.mjs store-bench [--quick] [--json] [--dir DIR]
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
    await build({
      entryPoints: [join(here, `${name}.ts`)],
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      outfile: file,
      logLevel: "error",
      packages: "external",
    });
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
