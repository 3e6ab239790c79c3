// The durable outbox: unit tests against a fake publisher (order, window, acks, drop policy, back-pressure,
// replay, counters across compaction and restart, torn tails), then the two crash tests against a real
// mosquitto: the broker SIGKILLed while 10,000 events are enqueued, and the agent process SIGKILLed mid-stream.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import {
  appendFileSync,
  chmodSync,
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  truncateSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectAsync } from "mqtt";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { RecordLog } from "../agent/durable/record-log";
import { MqttLink } from "../agent/link/mqtt-link";
import { Outbox, toRanges, type OutboxOptions, type OutboxPublisher } from "../agent/link/outbox";
import { Broker } from "./helpers/mosquitto";
import { spawnLineChild, type LineChild, bundleFixture } from "./helpers/child";
import { waitFor } from "./helpers/wait";
import { errorMessage } from "../agent/util/errors";

let work = "";
let child = "";
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "sharenode-outbox-"));
  child = join(work, "link-child.mjs");
  await bundleFixture("link-child.ts", child, {
    banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  });
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

const ID = "0123456789abcdef0123456789abcdef";
let fileNo = 0;
const newPath = () => join(work, `outbox-${++fileNo}.log`);

interface Sent {
  topic: string;
  msg: { seq: number; ts: number; [k: string]: unknown };
  resolve(): void;
  reject(err: Error): void;
}

/** A link whose PUBACKs the test hands out (or, with autoAck, answers at once). */
class FakePublisher extends EventEmitter implements OutboxPublisher {
  connected = false;
  autoAck = false;
  maxInFlight?: number;
  readonly sent: Sent[] = [];
  readonly waiting: Sent[] = [];

  publish(topic: string, payload: Buffer): Promise<void> {
    if (!this.connected) return Promise.reject(new Error("not connected"));
    return new Promise((resolve, reject) => {
      const s: Sent = { topic, msg: JSON.parse(payload.toString()), resolve, reject };
      this.sent.push(s);
      if (this.autoAck) resolve();
      else this.waiting.push(s);
    });
  }
  up(): void {
    this.connected = true;
    this.emit("connected");
  }
  /** The connection drops: everything awaiting a PUBACK is rejected. */
  down(): void {
    this.connected = false;
    this.emit("disconnected");
    for (const s of this.waiting.splice(0)) s.reject(new Error("connection lost before PUBACK"));
  }
  ack(n = Infinity): void {
    for (const s of this.waiting.splice(0, n)) s.resolve();
  }
  seqs(stream = "events"): number[] {
    return this.sent.filter((s) => s.topic.endsWith(`/${stream}`)).map((s) => s.msg.seq);
  }
}

function makeOutbox(publisher: OutboxPublisher, options: Partial<OutboxOptions> = {}): Outbox {
  const outbox = new Outbox({ path: options.path ?? newPath(), deviceId: ID, publisher, ...options });
  cleanups.push(() => outbox.stop());
  return outbox;
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

async function readLog(path: string): Promise<any[]> {
  const { log, records } = await RecordLog.open(path);
  await log.close();
  return records.map((r) => JSON.parse(Buffer.from(r).toString()));
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe("Outbox with a fake publisher", () => {
  it("assigns seq per stream, resolves once durable, publishes in order with at most `window` in flight", async () => {
    const pub = new FakePublisher();
    const path = newPath();
    const outbox = makeOutbox(pub, { path, window: 8, now: () => 1000 });
    await outbox.start();
    const seqs = await Promise.all(range(1, 50).map((i) => outbox.enqueue("events", { type: "t", i })));
    expect(seqs).toEqual(range(1, 50));
    expect(await outbox.enqueue("telemetry", { cpu_pct: 3, ts: 77 })).toBe(1);
    expect(outbox.depth).toBe(51);
    // Durable before anything was published: the log holds every put.
    const puts = (await readLogWhileOpen(path)).filter((r) => r.op === "put");
    expect(puts).toHaveLength(51);
    expect(puts[0]).toEqual({ op: "put", stream: "events", msg: { seq: 1, ts: 1000, type: "t", i: 1 } });

    pub.up();
    expect(pub.sent).toHaveLength(8);
    expect(pub.seqs()).toEqual(range(1, 8));
    expect(pub.sent[0]!.topic).toBe(`sharenode/v1/${ID}/events`);
    // The published payload: seq and ts first, then the message.
    expect(pub.sent[0]!.msg).toEqual({ seq: 1, ts: 1000, type: "t", i: 1 });
    pub.ack(3);
    await tick();
    expect(pub.seqs()).toEqual(range(1, 11));
    expect(pub.waiting).toHaveLength(8);
    while (pub.waiting.length) {
      pub.ack();
      await tick();
    }
    expect(pub.seqs()).toEqual(range(1, 50));
    expect(pub.seqs("telemetry")).toEqual([1]);
    // The message's own ts is kept; a seq in the message is replaced.
    expect(pub.sent.at(-1)!.msg).toEqual({ seq: 1, ts: 77, cpu_pct: 3 });
    expect(await outbox.enqueue("events", { seq: 999, type: "x" })).toBe(51);
    await waitFor("the last publish", () => pub.sent.length === 52);
    pub.ack();
    await outbox.idle();
    expect(outbox.depth).toBe(0);
  });

  it("caps the window at the broker's receive maximum", async () => {
    const pub = new FakePublisher();
    pub.maxInFlight = 3;
    const outbox = makeOutbox(pub, { window: 64 });
    await outbox.start();
    await Promise.all(range(1, 10).map((i) => outbox.enqueue("events", { i })));
    pub.up();
    expect(pub.sent).toHaveLength(3);
  });

  it("re-publishes every unacknowledged record from the oldest, in order, after the link drops", async () => {
    const pub = new FakePublisher();
    const outbox = makeOutbox(pub, { window: 10 });
    await outbox.start();
    pub.up();
    await Promise.all(range(1, 30).map((i) => outbox.enqueue("events", { i })));
    await waitFor("a full window", () => pub.sent.length === 10);
    pub.ack(4);
    await tick();
    pub.down();
    await tick();
    expect(outbox.depth).toBe(26);
    pub.sent.length = 0;
    pub.up();
    await tick();
    expect(pub.seqs()).toEqual(range(5, 14));
    pub.autoAck = true;
    pub.ack();
    await outbox.idle();
    // Over both connections: 1..30, each seq at least once, first appearances in order.
    expect(pub.seqs()).toEqual(range(5, 30));
  });

  it("waits and re-sends from the oldest when the broker refuses a publish on a live connection", async () => {
    const pub = new FakePublisher();
    const timers: { fn: () => void; ms: number }[] = [];
    const outbox = makeOutbox(pub, {
      window: 4,
      retryMs: 1234,
      timers: { setTimeout: (fn, ms) => timers.push({ fn, ms }), clearTimeout: () => undefined },
    });
    await outbox.start();
    pub.up();
    await Promise.all(range(1, 6).map((i) => outbox.enqueue("events", { i })));
    await waitFor("a full window", () => pub.sent.length === 4);
    pub.waiting.shift()!.reject(new Error("Publish error: Quota exceeded"));
    await tick();
    expect(timers).toHaveLength(1);
    expect(timers[0]!.ms).toBe(1234);
    pub.ack(); // the rest of the old window is acknowledged after all
    await tick();
    expect(pub.seqs()).toEqual([1, 2, 3, 4]);
    pub.sent.length = 0;
    timers[0]!.fn();
    await tick();
    // 1 was refused; 2 to 4 are known to the broker, 5 and 6 were never sent.
    expect(pub.seqs()).toEqual([1, 5, 6]);
    pub.ack();
    await outbox.idle();
  });

  it("writes acknowledgements in batches and keeps them across a restart", async () => {
    const pub = new FakePublisher();
    const path = newPath();
    const outbox = makeOutbox(pub, { path, window: 64 });
    await outbox.start();
    await Promise.all(range(1, 100).map((i) => outbox.enqueue("events", { i })));
    await outbox.enqueue("telemetry", { load1: 1 });
    pub.up();
    pub.ack(40);
    await tick(20);
    await outbox.stop();
    const records = await readLog(path);
    const acks = records.filter((r) => r.op === "ack");
    expect(acks.length).toBeLessThanOrEqual(2);
    expect(acks.flatMap((a) => a.events)).toEqual([[1, 40]]);

    const pub2 = new FakePublisher();
    const again = makeOutbox(pub2, { path });
    await again.start();
    expect(again.depth).toBe(61);
    pub2.autoAck = true;
    pub2.up();
    await again.idle();
    expect(pub2.seqs()).toEqual(range(41, 100));
    expect(pub2.seqs("telemetry")).toEqual([1]);
    expect(await again.enqueue("events", {})).toBe(101);
    expect(await again.enqueue("telemetry", {})).toBe(2);
  });

  it("keeps the counters through compaction and restart (seq never repeats)", async () => {
    const pub = new FakePublisher();
    pub.autoAck = true;
    const path = newPath();
    const outbox = makeOutbox(pub, { path, maxBytes: 64 * 1024 });
    await outbox.start();
    pub.up();
    const pad = "x".repeat(200);
    for (let round = 0; round < 20; round++) {
      await Promise.all(range(1, 50).map((i) => outbox.enqueue(i % 5 ? "events" : "telemetry", { i, pad })));
    }
    await outbox.idle();
    expect(outbox.stats.compactions).toBeGreaterThan(3);
    expect(outbox.bytes).toBeLessThanOrEqual(64 * 1024);
    await outbox.stop();
    expect(statSync(path).size).toBeLessThanOrEqual(64 * 1024);
    expect(pub.seqs()).toEqual(range(1, 800));
    expect(pub.seqs("telemetry")).toEqual(range(1, 200));

    // Everything was acknowledged; a restart compacts (acknowledged records dominate) down to the counters alone,
    // and they carry on.
    const again = makeOutbox(new FakePublisher(), { path, maxBytes: 64 * 1024 });
    await again.start();
    expect(again.depth).toBe(0);
    expect(await again.enqueue("events", {})).toBe(801);
    expect(await again.enqueue("telemetry", {})).toBe(201);
    await again.stop();
    const records = await readLog(path);
    expect(records.map((r) => r.op)).toEqual(["next", "put", "put"]);
    expect(records[0]).toEqual({ op: "next", events: 801, telemetry: 201 });
    const third = makeOutbox(new FakePublisher(), { path });
    await third.start();
    expect(third.depth).toBe(2);
    expect(await third.enqueue("events", {})).toBe(802);
  });

  it("drops the oldest telemetry when full, keeps every event, and stays under maxBytes", async () => {
    const pub = new FakePublisher(); // never connected
    const path = newPath();
    const maxBytes = 64 * 1024;
    const outbox = makeOutbox(pub, { path, maxBytes });
    await outbox.start();
    const pad = "t".repeat(300);
    for (let i = 1; i <= 40; i++) await outbox.enqueue("events", { i });
    for (let i = 1; i <= 400; i++) expect(await outbox.enqueue("telemetry", { i, pad })).toBe(i);
    expect(outbox.dropped).toBeGreaterThan(200);
    expect(outbox.bytes).toBeLessThanOrEqual(maxBytes);
    expect(statSync(path).size).toBeLessThanOrEqual(maxBytes);
    expect(outbox.depth).toBe(40 + 400 - outbox.dropped);

    pub.autoAck = true;
    pub.up();
    await outbox.idle();
    expect(pub.seqs()).toEqual(range(1, 40));
    // What survived is the newest telemetry, contiguous, in order.
    const kept = pub.seqs("telemetry");
    expect(kept).toEqual(range(400 - kept.length + 1, 400));
    expect(kept.length).toBe(400 - outbox.dropped);
  });

  it("makes events wait for room (back-pressure) and never drops them; telemetry meanwhile is dropped", async () => {
    const pub = new FakePublisher();
    const maxBytes = 64 * 1024;
    const outbox = makeOutbox(pub, { maxBytes, window: 16 });
    await outbox.start();
    await outbox.enqueue("telemetry", { old: 1 });
    const pad = "e".repeat(500);
    const resolved: number[] = [];
    const pending = range(1, 200).map((i) =>
      outbox.enqueue("events", { i, pad }).then((seq) => (resolved.push(seq), seq)),
    );
    await tick(50);
    expect(resolved.length).toBeGreaterThan(50);
    expect(resolved.length).toBeLessThan(200);
    expect(resolved).toEqual(range(1, resolved.length));
    expect(outbox.stats.waiting).toBe(200 - resolved.length);
    expect(outbox.bytes).toBeLessThanOrEqual(maxBytes);
    // The old telemetry record made room first; a new one gets no room while events wait.
    expect(outbox.dropped).toBe(1);
    expect(await outbox.enqueue("telemetry", { fresh: 1 })).toBe(2);
    expect(outbox.dropped).toBe(2);

    pub.autoAck = true;
    pub.up();
    expect(await Promise.all(pending)).toEqual(range(1, 200));
    await outbox.idle();
    expect(pub.seqs()).toEqual(range(1, 200));
    expect(pub.seqs("telemetry")).toEqual([]);
    expect(outbox.bytes).toBeLessThanOrEqual(maxBytes);
  });

  it("rejects waiting enqueues on stop, and bad messages at once", async () => {
    const pub = new FakePublisher();
    const outbox = makeOutbox(pub, { maxBytes: 64 * 1024 });
    await expect(outbox.enqueue("events", {})).rejects.toThrow(/not started/);
    await outbox.start();
    const pad = "e".repeat(1000);
    const all = range(1, 100).map((i) =>
      outbox.enqueue("events", { i, pad }).then(
        () => "ok",
        (e: Error) => e.message,
      ),
    );
    await tick(30);
    await outbox.stop();
    const results = await Promise.all(all);
    expect(results.filter((r) => r === "ok").length).toBeGreaterThan(30);
    expect(results.filter((r) => r === "outbox: stopped").length).toBeGreaterThan(10);

    const o2 = makeOutbox(pub);
    await o2.start();
    await expect(o2.enqueue("logs" as "events", {})).rejects.toThrow(/unknown stream/);
    await expect(o2.enqueue("events", [] as unknown as object)).rejects.toThrow(/JSON object/);
    await expect(o2.enqueue("events", { n: 1n })).rejects.toThrow(/not JSON-serialisable/);
    await expect(o2.enqueue("events", { big: "x".repeat(3 * 1024 * 1024) })).rejects.toThrow(/over the limit/);
  });

  it("replays after a torn tail: a put torn off was never acknowledged, so its seq is reused", async () => {
    const pub = new FakePublisher();
    const path = newPath();
    const outbox = makeOutbox(pub, { path });
    await outbox.start();
    for (let i = 1; i <= 5; i++) await outbox.enqueue("events", { i });
    await outbox.stop();
    // Tear the last put in half, and add zeroes as a power cut might.
    const size = statSync(path).size;
    truncateSync(path, size - 10);
    appendFileSync(path, Buffer.alloc(100));
    const again = makeOutbox(pub, { path });
    await again.start();
    expect(again.recovery?.reason).toMatch(/frame at offset \d+/);
    expect(again.depth).toBe(4);
    expect(await again.enqueue("events", { i: "new" })).toBe(5);
    pub.autoAck = true;
    pub.up();
    await again.idle();
    expect(pub.sent.map((s) => s.msg.i)).toEqual([1, 2, 3, 4, "new"]);
  });

  it("refuses a log it cannot read rather than guess", async () => {
    const path = newPath();
    const { log } = await RecordLog.open(path);
    await log.append(Buffer.from('{"op":"mystery"}'));
    await log.close();
    const outbox = new Outbox({ path, deviceId: ID, publisher: new FakePublisher() });
    await expect(outbox.start()).rejects.toThrow(/record 0 has an unknown op "mystery"/);
    // And it released the file.
    const { log: again } = await RecordLog.open(path);
    await again.close();
  });

  it("toRanges merges seqs", () => {
    expect(toRanges([5, 1, 2, 3, 9, 8, 3])).toEqual([
      [1, 3],
      [5, 5],
      [8, 9],
    ]);
    expect(toRanges([])).toEqual([]);
  });
});

/** The log's records while an outbox has it open (RecordLog refuses a second open in one process). */
async function readLogWhileOpen(path: string): Promise<any[]> {
  const data = readFileSync(path);
  const out: any[] = [];
  for (let pos = 8; pos + 8 <= data.length;) {
    const len = data.readUInt32LE(pos);
    out.push(JSON.parse(data.subarray(pos + 8, pos + 8 + len).toString()));
    pos += 8 + len;
  }
  return out;
}

// --- against mosquitto ---------------------------------------------------------------------------------------

interface Received {
  seq: number;
  text: string;
}

/** First appearances of each seq, in arrival order, and a check that duplicates are byte-identical. */
function dedupe(received: Received[]): number[] {
  const seen = new Map<number, string>();
  const order: number[] = [];
  for (const r of received) {
    const before = seen.get(r.seq);
    if (before === undefined) {
      seen.set(r.seq, r.text);
      order.push(r.seq);
    } else if (before !== r.text) {
      throw new Error(`seq ${r.seq} arrived with two different payloads: ${before} and ${r.text}`);
    }
  }
  return order;
}

describe("Outbox against mosquitto", () => {
  it("delivers all 10,000 events in order when the broker is SIGKILLed mid-stream and restarted", async () => {
    // Which records could the consumer miss? (1) Those the broker acknowledged but had not handed to the consumer
    // when it died: mosquitto hands an online subscriber its copy (and writes it to the socket at once, unless
    // the socket is full) before it sends the PUBACK, so with no in-flight or queue limit and a consumer that
    // reads fast (a separate mosquitto_sub process) every acknowledged record is already on its way. (2) Those published after
    // the restart before the consumer is back: the consumer has a persistent session (clean session off, QoS 1)
    // that mosquitto saved (autosave every second, and we wait for one after subscribing), so the restarted
    // broker queues them for it. Everything else was not acknowledged, and the outbox re-sends it.
    const broker = await Broker.start({
      persistence: true,
      config: ["allow_anonymous true", "autosave_interval 1", "max_inflight_messages 0", "max_queued_messages 0"],
    });
    cleanups.push(() => broker.stop());
    // mosquitto started as root drops to the "mosquitto" user, which must be able to write its database.
    chmodSync(broker.dir, 0o777);
    const id = randomBytes(16).toString("hex");
    const topic = `sharenode/v1/${id}/events`;
    const received: Received[] = [];
    let consumerOut = "";
    // The consumer writes to a file, not a pipe to this process: a pipe fills whenever this busy test process
    // reads late, mosquitto_sub then stops reading its socket, and mosquitto holds acknowledged records in its own
    // memory, where the SIGKILL loses them (case 1 above). A file never pushes back.
    const consumerFile = join(work, `consumer-${id.slice(0, 8)}.out`);
    const consumerFd = openSync(consumerFile, "w+");
    const consumer = spawn(
      "mosquitto_sub",
      [
        "-h",
        "127.0.0.1",
        "-p",
        String(broker.port),
        "-t",
        topic,
        "-q",
        "1",
        "-c",
        "-i",
        `consumer-${id.slice(0, 8)}`,
        "-k",
        "5",
      ],
      {
        stdio: ["ignore", consumerFd, "pipe"],
      },
    );
    let consumerErr = "";
    consumer.stderr!.on("data", (d: Buffer) => (consumerErr += d.toString()));
    let readAt = 0;
    const chunk = Buffer.alloc(1 << 20);
    const drain = () => {
      for (let n; (n = readSync(consumerFd, chunk, 0, chunk.length, readAt)) > 0;) {
        readAt += n;
        consumerOut += chunk.toString("utf8", 0, n);
      }
      const lines = consumerOut.split("\n");
      consumerOut = lines.pop()!;
      for (const text of lines) {
        const msg = JSON.parse(text);
        if (typeof msg.seq === "number") received.push({ seq: msg.seq, text });
        else received.push({ seq: -1, text });
      }
    };
    const draining = setInterval(drain, 5);
    cleanups.push(() => {
      clearInterval(draining);
      consumer.kill("SIGKILL");
      closeSync(consumerFd);
    });
    // The consumer is subscribed once a probe gets through; then let an autosave record its session.
    const probe = await connectAsync(broker.url, { reconnectPeriod: 0 });
    for (let i = 0; !received.some((r) => r.seq === -1); i++) {
      if (i === 100) throw new Error(`mosquitto_sub did not subscribe: ${consumerErr}`);
      await probe.publishAsync(topic, '{"probe":1}', { qos: 1 });
      await tick(100);
    }
    await probe.endAsync();
    const subscribedAt = Date.now();
    const db = join(broker.dir, "mosquitto.db");
    await waitFor(
      "an autosave with the consumer's session",
      () => existsSync(db) && statSync(db).mtimeMs > subscribedAt + 50,
      5000,
    );

    const link = new MqttLink({
      url: broker.url,
      deviceId: id,
      version: "t",
      stateDir: join(work, `state-${id}`),
      keepaliveSeconds: 5,
      backoff: { baseMs: 100, capMs: 500 },
    });
    const outbox = new Outbox({ path: newPath(), deviceId: id, publisher: link });
    cleanups.push(async () => {
      await outbox.stop();
      await link.stop();
    });
    await outbox.start();
    await link.start();

    const N = 10_000;
    let enqueued = 0;
    const enqueuing = (async () => {
      // About 2.5 s of enqueueing: 100 records every 25 ms.
      const batches: Promise<number>[] = [];
      for (let i = 0; i < N; i += 100) {
        for (let j = i; j < i + 100; j++)
          batches.push(outbox.enqueue("events", { type: "test", i: j }).then((s) => (enqueued++, s)));
        await tick(25);
      }
      return Promise.all(batches);
    })();
    await waitFor("some records through", () => received.length > 1500);
    await broker.kill("SIGKILL");
    const atKill = received.length;
    const enqueuedAtKill = enqueued;
    await tick(2000);
    await broker.restart();
    const seqs = await enqueuing;
    expect(seqs).toEqual(range(1, N));
    await outbox.idle();
    try {
      await waitFor("every seq at the consumer", () => new Set(received.map((r) => r.seq)).size >= N + 1, 15_000);
    } catch (err) {
      const got = new Set(received.map((r) => r.seq));
      const missing = range(1, N).filter((s) => !got.has(s));
      throw new Error(
        `${errorMessage(err)}: ${received.length} received (${atKill} before the kill), ${missing.length} missing (${missing.slice(0, 10).join(",")}...), outbox depth ${outbox.depth}; mosquitto_sub: ${consumerErr.slice(-500)}; broker: ${broker.output.slice(-1000)}`,
        { cause: err },
      );
    }
    const order = dedupe(received.filter((r) => r.seq > 0));
    expect(order).toEqual(range(1, N));
    // The kill did land mid-stream, while records were still being enqueued.
    expect(atKill).toBeLessThan(N);
    expect(enqueuedAtKill).toBeLessThan(N);
    expect(enqueued).toBe(N);
    expect(link.stats.reconnects).toBeGreaterThan(0);
  }, 60_000);

  it("loses no acknowledged event and leaves no gap when the agent process is SIGKILLed mid-stream", async () => {
    const broker = await Broker.start();
    cleanups.push(() => broker.stop());
    const id = randomBytes(16).toString("hex");
    const consumer = await connectAsync(broker.url, { reconnectPeriod: 0 });
    cleanups.push(() => consumer.endAsync(true));
    const received: Received[] = [];
    consumer.on("message", (_t, payload) => {
      const text = payload.toString();
      received.push({ seq: JSON.parse(text).seq, text });
    });
    await consumer.subscribeAsync(`sharenode/v1/${id}/events`, { qos: 1 });
    const stateDir = join(work, `state-${id}`);
    const outboxPath = newPath();

    const acked: number[] = [];
    for (let run = 1; run <= 3; run++) {
      // A small bound (128 KiB) makes the outbox compact every few hundred records: kills land in compactions too.
      const c = runChild(["outbox", broker.url, id, stateDir, outboxPath, "1000000", String(run), String(128 * 1024)]);
      // Kill each run at a different point once it is well under way.
      await waitFor(
        `run ${run} to acknowledge records`,
        () => c.lines.filter((l) => l.startsWith("ack ")).length > 400 * run,
        20_000,
      );
      await tick(7 * run);
      c.proc.kill("SIGKILL");
      await c.exited;
      acked.push(...c.lines.filter((l) => l.startsWith("ack ")).map((l) => Number(l.slice(4))));
    }
    const last = runChild(["outbox", broker.url, id, stateDir, outboxPath, "500", "4", String(128 * 1024)]);
    await waitFor("the last run to drain", () => last.lines.some((l) => l.startsWith("drained ")), 30_000);
    await last.exited;
    expect(Number(last.lines.find((l) => l.startsWith("drained "))!.slice(8))).toBeGreaterThan(0);
    acked.push(...last.lines.filter((l) => l.startsWith("ack ")).map((l) => Number(l.slice(4))));
    const max = Math.max(...acked);
    await waitFor("the consumer to catch up", () => received.some((r) => r.seq === max));
    const order = dedupe(received);
    // No gap: every seq up to the highest acknowledged one arrived (acknowledged or merely durable before a
    // kill), first appearances in order, and every acknowledged seq is among them.
    expect(order).toEqual(range(1, max));
    expect(new Set(acked).size).toBe(acked.length);
    for (const s of acked) expect(s).toBeLessThanOrEqual(max);
    expect(received.length).toBeGreaterThanOrEqual(max);
  }, 60_000);
});

function runChild(args: string[]): LineChild {
  return spawnLineChild(child, args, cleanups, "outbox child");
}
