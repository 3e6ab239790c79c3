// The daemon's footprint (issue 4): bytes per device per day at default settings, resident memory after an
// hour-equivalent of telemetry against a bare node process holding one mqtt.js connection, and idle CPU.
// Runs the built bundle (dist/sharenode.js) against a real mosquitto. An "hour-equivalent" is 60 telemetry
// messages, sent at 1 s intervals instead of 60 s (the fast clock): memory growth comes from messages, not time.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import mqtt from "mqtt";
import { Broker } from "../helpers/mosquitto";

const args = process.argv.slice(2);
const json = args.includes("--json");
const quick = args.includes("--quick");
const root = fileURLToPath(new URL("../..", import.meta.url));
const bin = join(root, "dist/sharenode.js");
const TICKS = (() => {
  const hz = 100; // USER_HZ on Linux
  return hz;
})();

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : NaN;
}

function cpuTicks(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return Number(fields[11]) + Number(fields[12]); // utime + stime
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function startAgent(work: string, broker: Broker, env: Record<string, string>): ChildProcess {
  mkdirSync(join(work, "data"), { recursive: true });
  return spawn(process.execPath, [bin, "run"], {
    stdio: "ignore",
    env: {
      ...process.env,
      SHARENODE_BROKER: broker.url,
      SHARENODE_STATE: join(work, "state"),
      SHARENODE_DATA: join(work, "data"),
      SHARENODE_FLEET_KEY: "00".repeat(32),
      SHARENODE_ALLOW_SYSTEM_DISK: "true",
      SHARENODE_LOG_LEVEL: "warn",
      ...env,
    },
  });
}

const rows: Array<{ name: string; value: number; unit: string }> = [];
const targets: Array<{ what: string; value: number; goal: string; met: boolean }> = [];
const broker = await Broker.start();
const work = mkdtempSync(join(tmpdir(), "sharenode-bench-agent-"));
const procs: ChildProcess[] = [];
try {
  // --- bytes on the wire per telemetry message, and memory after 60 messages ------------------------------
  const consumer = await mqtt.connectAsync(broker.url, { protocolVersion: 5 });
  const telemetry: Buffer[] = [];
  const topics: string[] = [];
  consumer.on("message", (topic, payload) => {
    if (topic.endsWith("/telemetry")) {
      telemetry.push(payload);
      topics.push(topic);
    }
  });
  await consumer.subscribeAsync("sharenode/v1/+/telemetry", { qos: 1 });
  const messages = quick ? 15 : 60;
  const agent = startAgent(join(work, "fast"), broker, { SHARENODE_TELEMETRY_INTERVAL: "1" });
  procs.push(agent);
  const deadline = Date.now() + (messages + 30) * 1000;
  while (telemetry.length < messages && Date.now() < deadline) await sleep(200);
  if (telemetry.length < messages) throw new Error(`only ${telemetry.length} telemetry messages arrived`);
  const agentRss = rssBytes(agent.pid!);
  // MQTT 5 PUBLISH (QoS 1): fixed header (2, or 3 past 127 bytes), topic (2 + length), packet id (2), properties
  // length (1), payload; PUBACK 4 bytes. Keepalive: PINGREQ + PINGRESP, 2 bytes each, once a minute.
  const avgPayload = telemetry.reduce((s, p) => s + p.length, 0) / telemetry.length;
  const topicLen = topics[0]!.length;
  const publishBytes = (avgPayload + 2 + topicLen + 2 + 1) + (avgPayload + topicLen > 120 ? 3 : 2);
  const perDay = 1440 * (publishBytes + 4) + 1440 * 4;
  rows.push({ name: "telemetry payload (JSON)", value: avgPayload, unit: "B" });
  rows.push({ name: "MQTT bytes per telemetry message (PUBLISH + PUBACK)", value: publishBytes + 4, unit: "B" });
  rows.push({ name: "bytes per device per day at 60 s (telemetry + keepalive)", value: perDay, unit: "B" });
  targets.push({ what: "bytes per device per day", value: perDay, goal: "<= 150,000 B", met: perDay <= 150_000 });

  // A bare node process holding one mqtt.js connection: the floor the agent is compared against.
  const bare = spawn(process.execPath, ["--input-type=module", "-e", `import mqtt from "mqtt"; const c = await mqtt.connectAsync(${JSON.stringify(broker.url)}); setInterval(() => {}, 1000);`], { cwd: root, stdio: "ignore" });
  procs.push(bare);
  await sleep(3000);
  const bareRss = rssBytes(bare.pid!);
  rows.push({ name: `agent RSS after ${messages} telemetry messages`, value: agentRss / 1e6, unit: "MB" });
  rows.push({ name: "bare node + one mqtt.js connection RSS", value: bareRss / 1e6, unit: "MB" });
  targets.push({ what: "agent RSS vs bare mqtt.js process", value: agentRss / bareRss, goal: "<= 1.5x", met: agentRss / bareRss <= 1.5 });
  agent.kill("SIGTERM");
  bare.kill("SIGTERM");
  await consumer.endAsync();

  // --- idle CPU at default settings --------------------------------------------------------------------------
  const idle = startAgent(join(work, "idle"), broker, {});
  procs.push(idle);
  await sleep(5000); // past start-up
  const windowS = quick ? 15 : 60;
  const t0 = cpuTicks(idle.pid!);
  await sleep(windowS * 1000);
  const cpuPct = ((cpuTicks(idle.pid!) - t0) / TICKS / windowS) * 100;
  rows.push({ name: `idle CPU at default settings (${windowS} s window, one x86 core)`, value: cpuPct, unit: "%" });
  idle.kill("SIGTERM");
} finally {
  for (const p of procs) if (p.exitCode === null) p.kill("SIGKILL");
  await broker.stop();
  rmSync(work, { recursive: true, force: true });
}

if (json) {
  console.log(JSON.stringify({ rows, targets }, null, 2));
} else {
  const fmt = (v: number) => (v >= 100 ? Math.round(v).toLocaleString("en-US") : v.toFixed(2));
  console.log("\nagent daemon (sharenode run against a local mosquitto)");
  for (const r of rows) console.log(`  ${r.name.padEnd(60)} ${fmt(r.value).padStart(10)} ${r.unit}`);
  console.log("\ntargets (issue 4)");
  for (const t of targets) console.log(`  ${t.met ? "met   " : "MISSED"} ${t.what.padEnd(44)} ${fmt(t.value).padStart(10)} (target ${t.goal})`);
}
