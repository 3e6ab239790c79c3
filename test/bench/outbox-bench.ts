// The outbox's throughput to a local mosquitto (not part of `npm test`): each round enqueues `records` events of
// about `recordBytes` bytes with `concurrency` enqueues outstanding, through a real RecordLog (fsync, group commit)
// and a real MqttLink, and times three things from the first enqueue:
//   durable    every enqueue resolved (the records are fsynced)
//   acked      every record PUBACKed (outbox depth 0)
//   delivered  a subscriber (QoS 1) received every seq
// Figures are medians over the rounds. Run directly (bundled) or call run().
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { connectAsync } from "mqtt";
import { MqttLink } from "../../agent/link/mqtt-link";
import { Outbox } from "../../agent/link/outbox";
import { Broker } from "../helpers/mosquitto";

export interface OutboxBenchOptions {
  /** Records per round (default 20 000). */
  records?: number;
  /** Approximate size of each published record in bytes (default 200). */
  recordBytes?: number;
  /** Enqueues outstanding at once (default 1000). */
  concurrency?: number;
  rounds?: number;
  /** Outbox window (default: the outbox's own, 64, capped by the broker's receive maximum). */
  window?: number;
  protocolVersion?: 4 | 5;
  /** Directory for the outbox files (default TMPDIR or /tmp): put it on the disk you care about. */
  dir?: string;
}

export interface OutboxBenchResult {
  records: number;
  recordBytes: number;
  rounds: number;
  protocolVersion: 4 | 5;
  /** Medians, records per second. */
  durablePerSecond: number;
  ackedPerSecond: number;
  deliveredPerSecond: number;
  /** Per round, for the curious. */
  samples: { durableMs: number; ackedMs: number; deliveredMs: number; compactions: number }[];
  target: { what: string; goal: number; value: number; met: boolean };
}

const median = (v: number[]) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

export async function run(options: OutboxBenchOptions = {}): Promise<OutboxBenchResult> {
  const records = options.records ?? 20_000;
  const recordBytes = options.recordBytes ?? 200;
  const concurrency = options.concurrency ?? 1000;
  const rounds = options.rounds ?? 5;
  const protocolVersion = options.protocolVersion ?? 5;
  const work = mkdtempSync(join(options.dir ?? process.env.TMPDIR ?? "/tmp", "sharenode-bench-outbox-"));
  const broker = await Broker.start({ config: ["allow_anonymous true", "max_queued_messages 0"] });
  const samples: OutboxBenchResult["samples"] = [];
  try {
    for (let round = 0; round < rounds; round++) {
      const deviceId = randomBytes(16).toString("hex");
      const consumer = await connectAsync(broker.url, { protocolVersion: 5, reconnectPeriod: 0 });
      let delivered = 0;
      let lastSeq = 0;
      let deliveredAt = 0;
      consumer.on("message", (_topic, payload) => {
        const seq = JSON.parse(payload.toString()).seq as number;
        if (seq > lastSeq) {
          lastSeq = seq;
          if (++delivered === records) deliveredAt = performance.now();
        }
      });
      await consumer.subscribeAsync(`sharenode/v1/${deviceId}/events`, { qos: 1 });

      const link = new MqttLink({
        url: broker.url,
        deviceId,
        version: "bench",
        stateDir: join(work, `state-${round}`),
        protocolVersion,
      });
      const outbox = new Outbox({
        path: join(work, `outbox-${round}.log`),
        deviceId,
        publisher: link,
        ...(options.window ? { window: options.window } : {}),
      });
      await outbox.start();
      const up = new Promise<void>((resolve) => link.once("connected", () => resolve()));
      await link.start();
      await up;

      // {"seq":n,"ts":...,"type":"bench","i":n,"pad":"..."} comes to about recordBytes.
      const pad = "x".repeat(Math.max(0, recordBytes - 75));
      const t0 = performance.now();
      let next = 0;
      const producer = async () => {
        while (next < records) {
          const i = next++;
          await outbox.enqueue("events", { type: "bench", i, pad });
        }
      };
      await Promise.all(Array.from({ length: Math.min(concurrency, records) }, producer));
      const durableMs = performance.now() - t0;
      await outbox.idle();
      const ackedMs = performance.now() - t0;
      const deadline = Date.now() + 60_000;
      while (delivered < records && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
      const deliveredMs = delivered === records ? deliveredAt - t0 : NaN;
      samples.push({ durableMs, ackedMs, deliveredMs, compactions: outbox.stats.compactions });
      await outbox.stop();
      await link.stop();
      await consumer.endAsync();
    }
  } finally {
    await broker.stop();
    rmSync(work, { recursive: true, force: true });
  }
  const rate = (ms: number) => records / (ms / 1000);
  const ackedPerSecond = median(samples.map((s) => rate(s.ackedMs)));
  return {
    records,
    recordBytes,
    rounds,
    protocolVersion,
    durablePerSecond: median(samples.map((s) => rate(s.durableMs))),
    ackedPerSecond,
    deliveredPerSecond: median(samples.map((s) => rate(s.deliveredMs))),
    samples,
    target: {
      what: "outbox records/s, enqueued to PUBACKed",
      goal: 5000,
      value: ackedPerSecond,
      met: ackedPerSecond >= 5000,
    },
  };
}

/** `node outbox-bench.mjs [--json] [--quick] [--dir DIR] [--v4]` once bundled. */
export async function main(args: string[] = process.argv.slice(2)): Promise<OutboxBenchResult> {
  const dirArg = args.indexOf("--dir");
  const result = await run({
    rounds: args.includes("--quick") ? 3 : 5,
    protocolVersion: args.includes("--v4") ? 4 : 5,
    ...(dirArg >= 0 ? { dir: args[dirArg + 1]! } : {}),
  });
  if (args.includes("--json")) {
    console.log(JSON.stringify(result, null, 2));
  } else {
    const fmt = (v: number) => (Number.isNaN(v) ? "n/a" : Math.round(v).toLocaleString("en-US"));
    console.log(
      `\noutbox to local mosquitto (MQTT ${result.protocolVersion === 5 ? "5" : "3.1.1"}): ${result.records} records of ~${result.recordBytes} B, ${result.rounds} rounds, medians`,
    );
    console.log(
      `  ${"enqueued and durable (fsynced)".padEnd(52)} ${fmt(result.durablePerSecond).padStart(10)} records/s`,
    );
    console.log(`  ${"enqueued to PUBACKed".padEnd(52)} ${fmt(result.ackedPerSecond).padStart(10)} records/s`);
    console.log(
      `  ${"enqueued to delivered to a QoS 1 subscriber".padEnd(52)} ${fmt(result.deliveredPerSecond).padStart(10)} records/s`,
    );
    const t = result.target;
    console.log(
      `  ${t.met ? "met   " : "MISSED"} ${t.what.padEnd(45)} ${fmt(t.value).padStart(10)} (target >= ${fmt(t.goal)})`,
    );
  }
  return result;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
