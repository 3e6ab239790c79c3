// `npm start`: the agent on this development machine, as a box would run it, with everything local:
//   - a data directory and a state directory under .sharenode-dev/ in the checkout (or SHARENODE_DEV_DIR; the data "disk" is the
//     development machine's own, so store.allowSystemDisk is on: a real box refuses that);
//   - a fleet key for this checkout, so that `sharenode fleet send` can command the agent;
//   - the sim board (config board "sim"): a fake /sys and /dev under the data directory (sim-board/), so the status
//     LED, the temperature and the hardware watchdog run their real code and never touch this machine's own;
//   - the broker in SHARENODE_BROKER, or an embedded MQTT broker (aedes, a development dependency that is never
//     in the device bundle) on 127.0.0.1:1883 (or a free port when 1883 is taken);
//   - the object server (agent/serve) on 127.0.0.1 only, at serve.port (SHARENODE_SERVE_PORT; default 8470).
// Ctrl-C stops the agent cleanly, then the broker.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "../..");
const bin = join(root, "dist/sharenode.js");
if (!existsSync(bin)) {
  console.error("npm start: dist/sharenode.js is missing; run `npm install` (or `npm run build`) first");
  process.exit(1);
}
const dev = process.env.SHARENODE_DEV_DIR || join(root, ".sharenode-dev");
const stateDir = join(dev, "state");
const dataDir = join(dev, "data");
const fleetKeyDir = join(dev, "fleet");
mkdirSync(dataDir, { recursive: true });

let broker = process.env.SHARENODE_BROKER;
let embedded;
if (!broker) {
  const { Aedes } = await import("aedes");
  const aedes = await Aedes.createBroker();
  const server = createServer(aedes.handle);
  const port = await new Promise((resolve) => {
    server.once("error", () => server.listen(0, "127.0.0.1", () => resolve(server.address().port)));
    server.listen(1883, "127.0.0.1", () => resolve(server.address().port));
  });
  broker = `mqtt://127.0.0.1:${port}`;
  embedded = { aedes, server };
  // aedes speaks MQTT 3.1.1 only.
  process.env.SHARENODE_MQTT_VERSION = "4";
  console.log(`npm start: embedded MQTT broker (aedes) on ${broker}`);
}

const keygen = spawnSync(process.execPath, [bin, "fleet", "keygen", "--key-dir", fleetKeyDir], { encoding: "utf8" });
if (keygen.status !== 0) {
  console.error(keygen.stderr.trim());
  process.exit(1);
}
const fleetKey = keygen.stdout.trim();

console.log(`npm start: data in ${dataDir}, state in ${stateDir}, sim board in ${join(dataDir, "sim-board")}
Watch it:
  node ${bin} fleet watch --broker ${broker}${embedded ? " --mqtt-version 4" : ""}
  mosquitto_sub -L '${broker}/sharenode/v1/#' -v
Command it (its device id is in the first log line):
  node ${bin} fleet send DEVICE_ID status --broker ${broker} --key-dir ${fleetKeyDir}${embedded ? " --mqtt-version 4" : ""}
Diagnose it as a person at the box would (status, link, log -f, temp, selftest; type help):
  SHARENODE_STATE=${stateDir} SHARENODE_DATA=${dataDir} SHARENODE_BOARD=sim SHARENODE_BROKER=${broker}${embedded ? " SHARENODE_MQTT_VERSION=4" : ""} node ${bin} console
Make the sim board hot (the agent pauses its scrub above 75 C, resumes below 65 C):
  echo 80000 > ${join(dataDir, "sim-board", "sys/class/thermal/thermal_zone0/temp")}
`);

// Its own process group: Ctrl-C reaches only this launcher, which passes it on once (the agent takes a second
// signal as "exit now, without a clean stop").
const agent = spawn(process.execPath, [bin, "run"], {
  stdio: "inherit",
  detached: true,
  env: {
    ...process.env,
    SHARENODE_BROKER: broker,
    SHARENODE_STATE: stateDir,
    SHARENODE_DATA: dataDir,
    SHARENODE_FLEET_KEY: fleetKey,
    SHARENODE_ALLOW_SYSTEM_DISK: "true",
    SHARENODE_BOARD: process.env.SHARENODE_BOARD || "sim",
    SHARENODE_TELEMETRY_INTERVAL: process.env.SHARENODE_TELEMETRY_INTERVAL ?? "10",
    // Serving: this machine only (a development checkout is not a box on the owner's network).
    SHARENODE_SERVE_BIND: process.env.SHARENODE_SERVE_BIND ?? "127.0.0.1",
  },
});
// Stop the broker only after the agent's clean stop (it publishes its offline state on the way out).
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => agent.kill(signal));
process.on("exit", () => agent.exitCode === null && agent.kill("SIGKILL"));
const code = await new Promise((resolve) => agent.on("exit", (c, s) => resolve(c ?? (s ? 0 : 1))));
if (embedded) {
  await new Promise((resolve) => embedded.server.close(resolve));
  embedded.aedes.close();
}
process.exit(code);
