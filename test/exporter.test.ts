// board/prometheus-mqtt-exporter.yaml with the real exporter (Debian's prometheus-mqtt-exporter, which is
// mqtt2prometheus) and a real mosquitto: telemetry of two devices in, every field out of /metrics as a gauge with
// help text, labelled with the device id from the topic. Only the broker address and the listen port differ from
// the shipped file. A missing exporter fails the test (never a skip).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import mqtt from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TELEMETRY_FIELDS, type Telemetry } from "../agent/telemetry/collector";
import { Broker, freePort } from "./helpers/mosquitto";
import { waiter } from "./helpers/wait";

const EXPORTER = "/usr/bin/prometheus-mqtt-exporter";
const CONFIG = new URL("../board/prometheus-mqtt-exporter.yaml", import.meta.url);

const DEVICE_A = "3f1c0d6e9b2a4c5d8e7f60718293a4b5";
const DEVICE_B = "b7e2a90c41d35f68a0c2e4f6183b5d79";

// A OneThing Cloud two days up, storing 600 GB.
const TELEMETRY_A: Telemetry = {
  seq: 2881,
  ts: 1764313273480,
  uptime_s: 183273.48,
  cpu_pct: 25,
  load1: 0.52,
  load5: 0.61,
  load15: 0.58,
  mem_total_bytes: 1046896640,
  mem_available_bytes: 676773888,
  temp_c: 51.2,
  disk_used_bytes: 600014520320,
  disk_free_bytes: 350168047616,
  store_objects: 14233,
  store_used_bytes: 598334201856,
  net_rx_bytes: 1894353375,
  net_tx_bytes: 924293436,
  proofs_passed: 8812,
  proofs_failed: 3,
  outbox_depth: 2,
  outbox_bytes: 1312,
  reconnects: 5,
  // Hot: 2 TB of scrubbing in a closed cupboard.
  throttled: 1,
  served_bytes: 73_014_444_032,
  requests: 1_180_214,
  orders_refused: 17,
  receipt_lag_bytes: 2_097_152,
  tasks_queued: 3,
  tasks_running: 2,
  tasks_failed: 1,
  compute_queued: 5,
  compute_failed: 2,
  compute_cpu_ms: 987_654,
  ledger_unsettled: 1234,
  ledger_rejected: 3,
};
// A Raspberry Pi without a thermal zone the kernel exposes (temp_c absent), freshly booted.
const TELEMETRY_B: Telemetry = {
  seq: 4,
  ts: 1764313281007,
  uptime_s: 242.9,
  cpu_pct: 3.4,
  load1: 0.08,
  load5: 0.11,
  load15: 0.05,
  mem_total_bytes: 4025114624,
  mem_available_bytes: 3499982848,
  disk_used_bytes: 1048576,
  disk_free_bytes: 31914983424,
  store_objects: 0,
  store_used_bytes: 0,
  net_rx_bytes: 5529331,
  net_tx_bytes: 210044,
  proofs_passed: 0,
  proofs_failed: 0,
  outbox_depth: 0,
  outbox_bytes: 0,
  reconnects: 0,
  throttled: 0,
  served_bytes: 0,
  requests: 0,
  orders_refused: 0,
  receipt_lag_bytes: 0,
  tasks_queued: 0,
  tasks_running: 0,
  tasks_failed: 0,
  compute_queued: 0,
  compute_failed: 0,
  compute_cpu_ms: 0,
};

interface Sample {
  labels: Record<string, string>;
  value: number;
}
interface Family {
  help?: string;
  type?: string;
  samples: Sample[];
}

/** The Prometheus text format, as much of it as this test reads. */
function parseExposition(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const family = (name: string) => {
    let f = families.get(name);
    if (!f) families.set(name, (f = { samples: [] }));
    return f;
  };
  for (const line of text.split("\n")) {
    let m = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
    if (m) {
      if (m[1] === "HELP") family(m[2]!).help = m[3];
      else family(m[2]!).type = m[3];
      continue;
    }
    m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)(?: \d+)?$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    family(m[1]!).samples.push({ labels, value: Number(m[3]) });
  }
  return families;
}

let broker: Broker | undefined;
let exporter: ChildProcess | undefined;
let exporterLog = "";
let metricsUrl = "";
let dir = "";

async function scrape(): Promise<string> {
  const res = await fetch(metricsUrl);
  return res.text();
}

/** The exporter answers ECONNREFUSED until it listens: a failed probe is tried again. */
const waitFor = waiter({
  intervalMs: 100,
  retryOnError: true,
  detail: () => `the exporter said: ${exporterLog.trim().slice(-800)}`,
});

beforeAll(async () => {
  if (spawnSync(EXPORTER, ["-version"], { stdio: "ignore" }).error !== undefined) {
    throw new Error(
      `${EXPORTER} is missing: install the Debian package prometheus-mqtt-exporter (apt-get install prometheus-mqtt-exporter; .ci/run does)`,
    );
  }
  broker = await Broker.start();
  dir = await mkdtemp(join(tmpdir(), "sharenode-exporter-"));
  const shipped = await readFile(CONFIG, "utf8");
  let replaced = 0;
  const config = shipped.replace(/^(\s*server:\s*)tcp:\/\/\S+$/m, (_, head: string) => {
    replaced++;
    return `${head}tcp://127.0.0.1:${broker!.port}`;
  });
  expect(replaced, "board/prometheus-mqtt-exporter.yaml has one mqtt.server line").toBe(1);
  await writeFile(join(dir, "mqtt-exporter.yaml"), config);

  const port = await freePort();
  metricsUrl = `http://127.0.0.1:${port}/metrics`;
  exporter = spawn(
    EXPORTER,
    ["-config", join(dir, "mqtt-exporter.yaml"), "-listen-address", "127.0.0.1", "-listen-port", String(port)],
    {
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  exporter.stdout!.on("data", (d: Buffer) => (exporterLog += d.toString()));
  exporter.stderr!.on("data", (d: Buffer) => (exporterLog += d.toString()));
  // Subscribed once it says it is connected: only then can a published message reach it.
  await waitFor("the exporter to connect to the broker", async () =>
    /^mqtt2prometheus_connected 1$/m.test(await scrape()) && /Will subscribe/.test(exporterLog) ? true : undefined,
  );
});

afterAll(async () => {
  const proc = exporter;
  if (proc && proc.exitCode === null && proc.signalCode === null) {
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    proc.kill("SIGTERM");
    const timer = setTimeout(() => proc.kill("SIGKILL"), 3000);
    await exited;
    clearTimeout(timer);
  }
  await broker?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("board/prometheus-mqtt-exporter.yaml", () => {
  it("maps exactly the telemetry fields of agent/link/README.md, each a gauge with help text", async () => {
    const yaml = await readFile(CONFIG, "utf8");
    const names = [...yaml.matchAll(/^\s*mqtt_name:\s*(\S+)\s*$/gm)].map((m) => m[1]);
    expect(names).toEqual([...TELEMETRY_FIELDS]);
    expect([...yaml.matchAll(/^\s*type:\s*(\S+)\s*$/gm)].map((m) => m[1])).toEqual(TELEMETRY_FIELDS.map(() => "gauge"));
    expect([...yaml.matchAll(/^\s*help:\s*"[^"]{10,}"\s*$/gm)]).toHaveLength(TELEMETRY_FIELDS.length);
    expect(yaml).toMatch(/^\s*topic_path:\s*sharenode\/v1\/\+\/telemetry\s*$/m);
  });

  it("exports every field of two devices' telemetry with the device id from the topic", async () => {
    const client = await mqtt.connectAsync(broker!.url, { clientId: "sharenode-test-publisher", reconnectPeriod: 0 });
    const publish = async () => {
      await client.publishAsync(`sharenode/v1/${DEVICE_A}/telemetry`, JSON.stringify(TELEMETRY_A), { qos: 1 });
      await client.publishAsync(`sharenode/v1/${DEVICE_B}/telemetry`, JSON.stringify(TELEMETRY_B), { qos: 1 });
      // Not telemetry: the exporter must not pick this up.
      await client.publishAsync(`sharenode/v1/${DEVICE_A}/events`, JSON.stringify({ seq: 99, ts: 1, type: "x" }), {
        qos: 1,
      });
    };
    let families: Map<string, Family>;
    try {
      // The exporter logs "Will subscribe" just before its SUBSCRIBE: a first message may beat the subscription,
      // so the same messages go out again every second until they show (the values do not change).
      let attempt = 0;
      families = await waitFor("both devices' telemetry on /metrics", async () => {
        if (attempt++ % 10 === 0) await publish();
        const f = parseExposition(await scrape());
        const devices = new Set((f.get("sharenode_reconnects")?.samples ?? []).map((s) => s.labels.sensor));
        return devices.has(DEVICE_A) && devices.has(DEVICE_B) ? f : undefined;
      });
    } finally {
      await client.endAsync();
    }

    for (const [device, telemetry] of [
      [DEVICE_A, TELEMETRY_A],
      [DEVICE_B, TELEMETRY_B],
    ] as const) {
      for (const field of TELEMETRY_FIELDS) {
        const family = families.get(`sharenode_${field}`);
        const samples = (family?.samples ?? []).filter((s) => s.labels.sensor === device);
        if (telemetry[field] === undefined) {
          expect(samples, `${field} of ${device}`).toEqual([]);
          continue;
        }
        expect(family?.type, field).toBe("gauge");
        expect(family?.help?.length ?? 0, `help of ${field}`).toBeGreaterThan(10);
        expect(samples, `${field} of ${device}`).toHaveLength(1);
        expect(samples[0]!.value, `${field} of ${device}`).toBe(telemetry[field]);
        expect(samples[0]!.labels.topic).toBe(`sharenode/v1/${device}/telemetry`);
      }
    }
    // The events message was not subscribed to: seq is the telemetry's, and only two devices' series exist.
    expect(
      families
        .get("sharenode_seq")!
        .samples.map((s) => [s.labels.sensor, s.value])
        .sort(),
    ).toEqual([
      [DEVICE_A, 2881],
      [DEVICE_B, 4],
    ]);
  });
});
