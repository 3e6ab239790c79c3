// The bundles (npm run build: `tsup --config agent/tsup.config.mjs`). Plain JavaScript, so that building needs
// nothing compiled first.
//   dist/sharenode.js  the device bundle: the CLI and the daemon in one file that needs no node_modules (mqtt.js
//                      and its dependencies, node-disk-info's df parser inside), minified: every KB is stored on the
//                      box's eMMC (twice: two release slots) and parsed by a slow CPU at every start.
//   dist/index.js, dist/fleet.js, dist/client.js  the library, the fleet side and the downloader (sharenode/client),
//                      with types; their dependencies stay packages.
import { fileURLToPath } from "node:url";
import { defineConfig } from "tsup";

const absentInNode = fileURLToPath(new URL("./link/absent-in-node.cjs", import.meta.url));
const lruForMqtt = fileURLToPath(new URL("./link/lru-for-mqtt.cjs", import.meta.url));

const common = {
  format: ["esm"],
  target: "node20",
  platform: "node",
  splitting: false,
  sourcemap: false,
  clean: false,
};

export default defineConfig([
  {
    ...common,
    entry: { sharenode: "agent/cli.ts" },
    noExternal: ["mqtt", "node-disk-info"],
    // CommonJS dependencies (mqtt.js's) call require(): give the ES module bundle one.
    banner: {
      js: "import { createRequire as __snCreateRequire } from 'node:module'; const require = __snCreateRequire(import.meta.url);",
    },
    minify: true,
    esbuildOptions(options) {
      options.alias = {
        // mqtt.js's copy of Node's streams for browsers (readable-stream 4 mirrors Node's own): Node's are here.
        "readable-stream": "stream",
        // Browser-only and SOCKS-only code (see the stub's comment).
        "worker-timers": absentInNode,
        socks: absentInNode,
        // mqtt.js's topic-alias table, which the agent leaves empty: 0.6 KB instead of 16.7 KB (see the file).
        "lru-cache": lruForMqtt,
      };
    },
  },
  {
    ...common,
    entry: { index: "agent/index.ts", fleet: "agent/fleet/index.ts", client: "agent/client/index.ts" },
    dts: { entry: { index: "agent/index.ts", fleet: "agent/fleet/index.ts", client: "agent/client/index.ts" } },
  },
]);
