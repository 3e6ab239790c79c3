// The durable outbox (README "Outbox records and sequence numbers"): what must reach the fleet is appended to a
// RecordLog before it is published, and forgotten only after the broker's PUBACK. After a broker outage, an agent
// restart or a power cut it is published again, in order, from the oldest record not acknowledged.
//
// Records (one JSON object each):
//   {"op":"put","stream":"events","msg":{"seq":12,"ts":...,...}}   msg is the published payload, byte for byte
//   {"op":"ack","events":[[1,64]],"telemetry":[[3,3]]}             PUBACKs, as seq ranges, one record per batch
//   {"op":"next","events":13,"telemetry":4}                        the counters, first record after a compaction
//
// Why no gaps and no repeats:
//   - seq is per stream, assigned in enqueue order; a record is published only once its put is durable, so a
//     seq that anyone has seen is in the log. Replay resumes each counter after the highest seq in the log (or in
//     the "next" record a compaction wrote). A put torn off by a crash was never acknowledged nor published: its
//     seq is free for reuse.
//   - The pump publishes strictly in log order with up to `window` in flight. When the link drops (or the broker
//     refuses a publish) every in-flight record goes back to the queue and publishing restarts from the oldest
//     record not acknowledged: the consumer may see duplicates (it drops a seq it has seen), never a hole.
//   - Compaction rewrites the log as the counters plus the records not acknowledged, atomically.
// Bounds: the log file stays under maxBytes. When a record would not fit, the oldest telemetry records are dropped
// (their seq gaps are expected; the compaction that reclaims their space also makes the drop durable); events are
// never dropped: their enqueue waits until PUBACKs free space.
import { RecordLog, HEADER_BYTES, FRAME_HEADER_BYTES, readRecordLog, type Recovery } from "../durable/record-log.js";
import { topicsFor } from "../protocol/topics.js";
import { realTimeouts, type Timeouts } from "../util/timeouts.js";
import { errorLine } from "../util/errors.js";

export type OutboxStream = "events" | "telemetry";

export class OutboxError extends Error {
  override readonly name = "OutboxError";
}

/** The link as the outbox sees it (MqttLink fits; tests use a fake). */
export interface OutboxPublisher {
  readonly connected: boolean;
  /** How many QoS 1 publishes the broker accepts unacknowledged (MQTT 5 receive maximum), if known. */
  readonly maxInFlight?: number;
  /** Resolves on PUBACK; rejects when refused or when the connection drops first. */
  publish(topic: string, payload: Buffer, options: { qos: 1; retain: false }): Promise<void>;
  on(event: "connected" | "disconnected", listener: () => void): unknown;
  off(event: "connected" | "disconnected", listener: () => void): unknown;
}

export interface OutboxLog {
  info(message: string | (() => string)): void;
  warn(message: string | (() => string)): void;
}

/** The timers the outbox waits on (agent/util/timeouts.ts). */
export type OutboxTimers = Timeouts;

export interface OutboxOptions {
  /** The RecordLog file. */
  path: string;
  deviceId: string;
  publisher: OutboxPublisher;
  /** The log file never grows past this (default 8 MiB). */
  maxBytes?: number;
  /** Publishes awaiting their PUBACK at once (default 64; also capped by the broker's receive maximum). */
  window?: number;
  /** After the broker refuses a publish on a live connection, wait this long before re-sending (default 5000 ms). */
  retryMs?: number;
  now?: () => number;
  timers?: OutboxTimers;
  log?: OutboxLog;
}

export interface OutboxStats {
  depth: number;
  bytes: number;
  pendingBytes: number;
  dropped: number;
  waiting: number;
  inFlight: number;
  compactions: number;
  next: Record<OutboxStream, number>;
}

const QUEUED = 0;
const IN_FLIGHT = 1;
const DONE = 2; // acknowledged or dropped

interface Entry {
  stream: OutboxStream;
  seq: number;
  /** The put record as stored. */
  record: Buffer;
  /** The message JSON inside `record`: what is published. */
  payload: Buffer;
  state: typeof QUEUED | typeof IN_FLIGHT | typeof DONE;
  durable: boolean;
}

interface Waiter {
  stream: OutboxStream;
  ts: number;
  rest: string;
  resolve(seq: number): void;
  reject(err: Error): void;
}

const STREAMS: readonly OutboxStream[] = ["events", "telemetry"];
const PUT_PREFIX: Record<OutboxStream, Buffer> = {
  events: Buffer.from('{"op":"put","stream":"events","msg":'),
  telemetry: Buffer.from('{"op":"put","stream":"telemetry","msg":'),
};
const PUT_SUFFIX = Buffer.from("}");
// Room kept for the "next" record a compaction writes first (two 16-digit counters fit).
const COUNTER_RESERVE = FRAME_HEADER_BYTES + 80;

export class Outbox {
  private readonly options: OutboxOptions;
  private readonly maxBytes: number;
  private readonly window: number;
  private readonly topics: Record<OutboxStream, string>;
  private readonly now: () => number;
  private readonly timers: OutboxTimers;
  private log: RecordLog | null = null;
  private running = false;
  private failure: Error | null = null;
  private recoveryInfo: Recovery | null = null;

  // Records not yet acknowledged, in log order, from `head`; `cursor` is the next one to publish.
  private entries: Entry[] = [];
  private head = 0;
  private cursor = 0;
  // The telemetry records among them, oldest first from `telemetryHead`: the drop candidates.
  private telemetry: Entry[] = [];
  private telemetryHead = 0;
  private live = 0;
  private liveBytes = 0; // frames of the records not acknowledged
  private fileBytes = 0; // the log's size once every issued append and rewrite is done
  private readonly next: Record<OutboxStream, number> = { events: 1, telemetry: 1 };

  private inFlight = 0;
  private generation = 0;
  private paused = false;
  private retryTimer: unknown = null;
  private acks: Record<OutboxStream, number[]> = { events: [], telemetry: [] };
  private ackScheduled = false;
  private waiters: Waiter[] = [];
  private idleWaiters: (() => void)[] = [];
  private droppedCount = 0;
  private compactions = 0;

  private readonly onConnected = (): void => {
    this.paused = false;
    this.clearRetry();
    // Anything still in flight belongs to a connection that is gone.
    this.rewind();
    this.pump();
  };
  private readonly onDisconnected = (): void => this.rewind();

  constructor(options: OutboxOptions) {
    this.options = options;
    this.maxBytes = options.maxBytes ?? 8 * 1024 * 1024;
    this.window = options.window ?? 64;
    if (!(this.maxBytes >= 64 * 1024)) throw new RangeError("outbox: maxBytes must be at least 64 KiB");
    if (!(Number.isInteger(this.window) && this.window >= 1))
      throw new RangeError("outbox: window must be an integer >= 1");
    const t = topicsFor(options.deviceId);
    this.topics = { events: t.events, telemetry: t.telemetry };
    this.now = options.now ?? Date.now;
    this.timers = options.timers ?? realTimeouts;
  }

  /** Records not acknowledged by the broker (events and telemetry). */
  get depth(): number {
    return this.live;
  }

  /** The log file's size in bytes (including appends in flight); at most maxBytes. */
  get bytes(): number {
    return this.fileBytes;
  }

  /** Telemetry records dropped to make room since start(). */
  get dropped(): number {
    return this.droppedCount;
  }

  /** What opening the log cut off its torn tail (null if nothing): one line for the caller to log. */
  get recovery(): Recovery | null {
    return this.recoveryInfo;
  }

  get stats(): OutboxStats {
    return {
      depth: this.live,
      bytes: this.fileBytes,
      pendingBytes: this.liveBytes,
      dropped: this.droppedCount,
      waiting: this.waiters.length,
      inFlight: this.inFlight,
      compactions: this.compactions,
      next: { ...this.next },
    };
  }

  /** Opens the log, replays the records not acknowledged, resumes the counters and starts publishing. */
  async start(): Promise<void> {
    if (this.log) throw new OutboxError("outbox: already started");
    const { log, records, recovery } = await RecordLog.open(this.options.path);
    try {
      this.replay(records);
    } catch (err) {
      await log.close();
      throw err;
    }
    this.log = log;
    this.recoveryInfo = recovery;
    this.fileBytes = log.size;
    this.failure = null;
    this.running = true;
    if (recovery)
      this.options.log?.warn(
        `outbox ${this.options.path}: dropped a torn tail of ${recovery.droppedBytes} bytes (${recovery.reason})`,
      );
    if (this.live > 0)
      this.options.log?.info(
        `outbox: ${this.live} records to re-send, next seq events ${this.next.events}, telemetry ${this.next.telemetry}`,
      );
    if (this.shouldCompact()) this.compact();
    this.options.publisher.on("connected", this.onConnected);
    this.options.publisher.on("disconnected", this.onDisconnected);
    this.pump();
  }

  /**
   * Stops publishing, writes the acknowledgements received so far, rejects enqueues still waiting for space and
   * closes the log. Records in flight are re-sent after the next start.
   */
  async stop(): Promise<void> {
    const log = this.log;
    if (!log) return;
    this.running = false;
    this.options.publisher.off("connected", this.onConnected);
    this.options.publisher.off("disconnected", this.onDisconnected);
    this.clearRetry();
    this.flushAcks();
    const stopped = new OutboxError("outbox: stopped");
    for (const w of this.waiters.splice(0)) w.reject(stopped);
    this.log = null;
    await log.close();
    this.resetMemory();
  }

  /**
   * Appends a record and resolves with its seq once it is durable. `seq` is assigned here; `ts` is the message's
   * own `ts` if it is a finite number, else the clock. Telemetry may be dropped to make room (it still consumes its
   * seq and counts in `dropped`); events wait for room instead.
   */
  enqueue(stream: OutboxStream, message: object): Promise<number> {
    if (!this.running || !this.log) return Promise.reject(new OutboxError("outbox: not started"));
    if (this.failure) return Promise.reject(this.failure);
    if (stream !== "events" && stream !== "telemetry") {
      return Promise.reject(new OutboxError(`outbox: unknown stream ${JSON.stringify(String(stream))}`));
    }
    if (message === null || typeof message !== "object" || Array.isArray(message)) {
      return Promise.reject(new OutboxError("outbox: a message must be a JSON object"));
    }
    const { seq: _seq, ts: ownTs, ...fields } = message as Record<string, unknown>;
    let rest: string;
    try {
      rest = JSON.stringify(fields);
    } catch (err) {
      return Promise.reject(new OutboxError(`outbox: message is not JSON-serialisable (${errorLine(err)})`));
    }
    const ts = typeof ownTs === "number" && Number.isFinite(ownTs) ? ownTs : this.now();
    // A record must leave room for others; a quarter of the bound is generous (telemetry is ~1 KiB).
    const restBytes = Buffer.byteLength(rest);
    if (restBytes + 128 > this.maxBytes / 4) {
      return Promise.reject(
        new OutboxError(
          `outbox: a message of ${restBytes} bytes is over the limit of ${Math.floor(this.maxBytes / 4) - 128}`,
        ),
      );
    }
    return new Promise<number>((resolve, reject) => {
      const item: Waiter = { stream, ts, rest, resolve, reject };
      if (this.waiters.length > 0) {
        // Events queue behind events already waiting (order); telemetry gets no room while events wait for it.
        if (stream === "events") this.waiters.push(item);
        else this.dropNew(item);
        return;
      }
      if (!this.tryAppend(item)) {
        if (stream === "events") this.waiters.push(item);
        else this.dropNew(item);
      }
    });
  }

  /** Resolves once every record is acknowledged and no enqueue waits (for tests, benchmarks and shutdown). */
  idle(): Promise<void> {
    if (this.live === 0 && this.waiters.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  // --- appending ---------------------------------------------------------------------------------------------

  private tryAppend(item: Waiter): boolean {
    const seq = this.next[item.stream];
    const msg = `{"seq":${seq},"ts":${item.ts}${item.rest === "{}" ? "}" : "," + item.rest.slice(1)}`;
    const record = encodePut(item.stream, msg);
    const frame = FRAME_HEADER_BYTES + record.length;
    if (!this.makeRoom(frame)) return false;
    this.next[item.stream] = seq + 1;
    const entry: Entry = {
      stream: item.stream,
      seq,
      record,
      payload: record.subarray(PUT_PREFIX[item.stream].length, record.length - PUT_SUFFIX.length),
      state: QUEUED,
      durable: false,
    };
    this.entries.push(entry);
    if (item.stream === "telemetry") this.telemetry.push(entry);
    this.live++;
    this.liveBytes += frame;
    this.fileBytes += frame;
    this.log!.append(record).then(
      () => {
        entry.durable = true;
        item.resolve(seq);
        this.pump();
      },
      (err: unknown) => {
        this.fail(err);
        item.reject(this.failure!);
      },
    );
    return true;
  }

  /** A telemetry record with no room: it takes its seq (the gap says it was dropped) and is not written. */
  private dropNew(item: Waiter): void {
    const seq = this.next.telemetry++;
    this.droppedCount++;
    this.options.log?.warn(() => `outbox full: dropped telemetry seq ${seq}`);
    item.resolve(seq);
  }

  /**
   * Makes the file able to take `frame` more bytes under maxBytes: drops the oldest telemetry (down to three
   * quarters of the bound, so this does not run on every enqueue) and compacts. False if there is no room.
   */
  private makeRoom(frame: number): boolean {
    if (this.fileBytes + frame <= this.maxBytes) return true;
    const low = (this.maxBytes * 3) / 4;
    let dropped = 0;
    while (this.liveTotal + frame > low) {
      const victim = this.oldestTelemetry();
      if (!victim) break;
      this.markDone(victim);
      dropped++;
    }
    if (dropped > 0) {
      this.droppedCount += dropped;
      this.options.log?.warn(`outbox full: dropped the ${dropped} oldest telemetry records`);
      this.advanceHead();
    }
    const fits = this.liveTotal + frame <= this.maxBytes;
    const worthIt = this.liveTotal + frame <= low || this.fileBytes - this.liveTotal >= this.maxBytes / 8;
    // A drop is made durable by the compaction that reclaims its space, so drops always compact.
    if (dropped > 0 || (fits && worthIt)) this.compact();
    return fits && this.fileBytes + frame <= this.maxBytes;
  }

  private get liveTotal(): number {
    return HEADER_BYTES + COUNTER_RESERVE + this.liveBytes;
  }

  private oldestTelemetry(): Entry | undefined {
    while (this.telemetryHead < this.telemetry.length) {
      const e = this.telemetry[this.telemetryHead]!;
      if (e.state !== DONE) return e;
      this.telemetryHead++;
    }
    return undefined;
  }

  private shouldCompact(): boolean {
    const garbage = this.fileBytes - this.liveTotal;
    return garbage > this.liveTotal && garbage >= Math.min(1024 * 1024, this.maxBytes / 8);
  }

  /** Rewrites the log as the counters and every record not acknowledged (issued now; RecordLog orders it). */
  private compact(): void {
    const log = this.log!;
    const records: Buffer[] = [
      Buffer.from(JSON.stringify({ op: "next", events: this.next.events, telemetry: this.next.telemetry })),
    ];
    let size = HEADER_BYTES + FRAME_HEADER_BYTES + records[0]!.length;
    for (let i = this.head; i < this.entries.length; i++) {
      const e = this.entries[i]!;
      if (e.state === DONE) continue;
      records.push(e.record);
      size += FRAME_HEADER_BYTES + e.record.length;
    }
    const before = this.fileBytes;
    this.fileBytes = size;
    this.compactions++;
    log.rewrite(records).catch((err: unknown) => {
      // Failed before the rename: the old file (and everything appended to it since) is still the log.
      this.fileBytes += before - size;
      this.options.log?.warn(`outbox compaction failed: ${errorLine(err)}`);
    });
  }

  // --- publishing --------------------------------------------------------------------------------------------

  private pump(): void {
    if (!this.running || this.failure || this.paused || !this.options.publisher.connected) return;
    const limit = Math.min(this.window, this.options.publisher.maxInFlight ?? Infinity);
    while (this.inFlight < limit && this.cursor < this.entries.length) {
      const e = this.entries[this.cursor]!;
      if (e.state !== QUEUED) {
        this.cursor++;
        continue;
      }
      // Only durable records go out: a seq someone has seen must survive a crash.
      if (!e.durable) break;
      e.state = IN_FLIGHT;
      this.inFlight++;
      this.cursor++;
      const generation = this.generation;
      let sent: Promise<void>;
      try {
        sent = this.options.publisher.publish(this.topics[e.stream], e.payload, { qos: 1, retain: false });
      } catch (err) {
        sent = Promise.reject(err);
      }
      sent.then(
        () => this.settled(e, generation, null),
        (err: unknown) => this.settled(e, generation, err instanceof Error ? err : new Error(String(err))),
      );
    }
    this.trim();
  }

  private settled(e: Entry, generation: number, err: Error | null): void {
    if (!this.running) return;
    const current = generation === this.generation;
    if (current) this.inFlight--;
    if (err === null) {
      // A PUBACK is good news whichever connection it came on.
      if (e.state !== DONE) {
        this.markDone(e);
        this.acks[e.stream].push(e.seq);
        this.scheduleAckFlush();
        this.advanceHead();
      }
      this.serveWaiters();
      if (this.live === 0 && this.waiters.length === 0) for (const done of this.idleWaiters.splice(0)) done();
    } else if (current) {
      // Refused, or the connection is going: start over from the oldest record not acknowledged. If the link is
      // still up (the broker refused this one), wait a little rather than spin.
      this.options.log?.warn(
        () => `outbox: publish of ${e.stream} seq ${e.seq} failed (${err.message}); re-sending from the oldest`,
      );
      this.rewind();
      if (this.options.publisher.connected) this.pauseForRetry();
    }
    this.pump();
  }

  private rewind(): void {
    this.generation++;
    this.inFlight = 0;
    for (let i = this.head; i < this.cursor && i < this.entries.length; i++) {
      const e = this.entries[i]!;
      if (e.state === IN_FLIGHT) e.state = QUEUED;
    }
    this.cursor = this.head;
  }

  private pauseForRetry(): void {
    this.paused = true;
    this.clearRetry();
    this.retryTimer = this.timers.setTimeout(() => {
      this.retryTimer = null;
      this.paused = false;
      this.pump();
    }, this.options.retryMs ?? 5000);
  }

  private clearRetry(): void {
    if (this.retryTimer !== null) this.timers.clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  private markDone(e: Entry): void {
    e.state = DONE;
    this.live--;
    this.liveBytes -= FRAME_HEADER_BYTES + e.record.length;
  }

  private advanceHead(): void {
    while (this.head < this.entries.length && this.entries[this.head]!.state === DONE) this.head++;
    if (this.cursor < this.head) this.cursor = this.head;
  }

  /** Drops acknowledged entries from the front of the arrays once they are the bigger part. */
  private trim(): void {
    if (this.head > 1024 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.cursor -= this.head;
      this.head = 0;
    }
    if (this.telemetryHead > 1024 && this.telemetryHead * 2 > this.telemetry.length) {
      this.telemetry = this.telemetry.slice(this.telemetryHead);
      this.telemetryHead = 0;
    }
  }

  private serveWaiters(): void {
    while (this.waiters.length > 0 && this.running && !this.failure) {
      if (!this.tryAppend(this.waiters[0]!)) return;
      this.waiters.shift();
    }
  }

  // --- acknowledgements --------------------------------------------------------------------------------------

  private scheduleAckFlush(): void {
    if (this.ackScheduled) return;
    this.ackScheduled = true;
    // setImmediate: every PUBACK of one socket read lands in one ack record.
    setImmediate(() => {
      this.ackScheduled = false;
      if (this.running) this.flushAcks();
    });
  }

  /**
   * Writes one ack record for the PUBACKs collected, or compacts instead when that is due (the rewrite leaves the
   * acknowledged records out, which says the same). Losing it to a crash only means duplicates after a restart.
   */
  private flushAcks(): void {
    const log = this.log;
    if (!log || this.failure) return;
    if (this.acks.events.length === 0 && this.acks.telemetry.length === 0) return;
    const record = Buffer.from(
      JSON.stringify({ op: "ack", events: toRanges(this.acks.events), telemetry: toRanges(this.acks.telemetry) }),
    );
    this.acks = { events: [], telemetry: [] };
    const frame = FRAME_HEADER_BYTES + record.length;
    if (this.fileBytes + frame > this.maxBytes || this.shouldCompact()) {
      this.compact();
      return;
    }
    this.fileBytes += frame;
    log.append(record).catch((err: unknown) => this.fail(err));
  }

  // --- start-up and failure ----------------------------------------------------------------------------------

  private replay(records: Uint8Array[]): void {
    const { pending, next } = replayOutboxRecords(records, this.options.path);
    this.resetMemory();
    this.next.events = next.events;
    this.next.telemetry = next.telemetry;
    for (const { stream, seq, msg } of pending) {
      const record = encodePut(stream, msg);
      const e: Entry = {
        stream,
        seq,
        record,
        payload: record.subarray(PUT_PREFIX[stream].length, record.length - PUT_SUFFIX.length),
        state: QUEUED,
        durable: true,
      };
      this.entries.push(e);
      if (e.stream === "telemetry") this.telemetry.push(e);
      this.live++;
      this.liveBytes += FRAME_HEADER_BYTES + e.record.length;
    }
  }

  private resetMemory(): void {
    this.entries = [];
    this.telemetry = [];
    this.head = this.cursor = this.telemetryHead = 0;
    this.live = this.liveBytes = 0;
    this.inFlight = 0;
    this.generation++;
    this.paused = false;
    this.acks = { events: [], telemetry: [] };
  }

  private fail(err: unknown): void {
    if (this.failure) return;
    this.failure = new OutboxError(`outbox: the log failed, restart the outbox (${errorLine(err)})`);
    this.options.log?.warn(this.failure.message);
    for (const w of this.waiters.splice(0)) w.reject(this.failure);
  }
}

function encodePut(stream: OutboxStream, msg: string): Buffer {
  return Buffer.concat([PUT_PREFIX[stream], Buffer.from(msg), PUT_SUFFIX]);
}

/** Sorted, merged [from, to] ranges of the seqs. */
export function toRanges(seqs: number[]): [number, number][] {
  if (seqs.length === 0) return [];
  const sorted = seqs.slice().sort((a, b) => a - b);
  const out: [number, number][] = [[sorted[0]!, sorted[0]!]];
  for (let i = 1; i < sorted.length; i++) {
    const last = out[out.length - 1]!;
    const s = sorted[i]!;
    if (s <= last[1] + 1) last[1] = Math.max(last[1], s);
    else out.push([s, s]);
  }
  return out;
}

function isRanges(v: unknown): v is [number, number][] {
  return (
    Array.isArray(v) &&
    v.every(
      (r) =>
        Array.isArray(r) && r.length === 2 && Number.isSafeInteger(r[0]) && Number.isSafeInteger(r[1]) && r[0] <= r[1],
    )
  );
}

/** What an outbox log holds: the records not acknowledged, in log order, and each stream's next seq. */
export interface OutboxReplay {
  pending: Array<{ stream: OutboxStream; seq: number; msg: string }>;
  next: Record<OutboxStream, number>;
}

/** The outbox's records replayed (puts less acks, counters); a malformed record throws naming its index. */
export function replayOutboxRecords(records: readonly Uint8Array[], path: string): OutboxReplay {
  const byKey = new Map<string, { stream: OutboxStream; seq: number; msg: string }>();
  const max: Record<OutboxStream, number> = { events: 0, telemetry: 0 };
  const counters: Record<OutboxStream, number> = { events: 1, telemetry: 1 };
  const bad = (i: number, why: string) => new OutboxError(`outbox ${path}: record ${i} ${why}`);
  records.forEach((bytes, i) => {
    let r: { op?: unknown; stream?: unknown; msg?: { seq?: unknown }; events?: unknown; telemetry?: unknown };
    try {
      r = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("utf8"));
    } catch {
      throw bad(i, "is not JSON");
    }
    switch (r?.op) {
      case "put": {
        const stream = r.stream as OutboxStream;
        const seq = r.msg?.seq;
        if (!STREAMS.includes(stream) || !Number.isSafeInteger(seq) || (seq as number) < 1)
          throw bad(i, "is a malformed put");
        byKey.set(`${stream}:${seq}`, { stream, seq: seq as number, msg: JSON.stringify(r.msg) });
        if ((seq as number) > max[stream]) max[stream] = seq as number;
        break;
      }
      case "ack":
        for (const stream of STREAMS) {
          const ranges = r[stream];
          if (!isRanges(ranges)) throw bad(i, "is a malformed ack");
          for (const [from, to] of ranges) {
            if (to - from < byKey.size) for (let s = from; s <= to; s++) byKey.delete(`${stream}:${s}`);
            else
              for (const [key, e] of byKey) if (e.stream === stream && e.seq >= from && e.seq <= to) byKey.delete(key);
          }
        }
        break;
      case "next":
        for (const stream of STREAMS) {
          const n = r[stream];
          if (!Number.isSafeInteger(n) || (n as number) < 1) throw bad(i, "is a malformed counter");
          counters[stream] = Math.max(counters[stream], n as number);
        }
        break;
      default:
        throw bad(i, `has an unknown op ${JSON.stringify(r?.op)}`);
    }
  });
  const next = {
    events: Math.max(counters.events, max.events + 1),
    telemetry: Math.max(counters.telemetry, max.telemetry + 1),
  };
  // Map iteration is insertion order, i.e. log order.
  return { pending: [...byKey.values()], next };
}

/**
 * The outbox at `path` as read by someone who must not open it (the console, while the daemon owns it): records
 * waiting for a PUBACK and the file's size. A missing file is an empty outbox.
 */
export async function scanOutboxFile(
  path: string,
): Promise<{ ok: true; depth: number; bytes: number } | { ok: false; reason: string }> {
  const read = await readRecordLog(path);
  if (!read.ok) return read.missing ? { ok: true, depth: 0, bytes: 0 } : { ok: false, reason: read.reason };
  try {
    return { ok: true, depth: replayOutboxRecords(read.records, path).pending.length, bytes: read.bytes };
  } catch (err) {
    return { ok: false, reason: errorLine(err) };
  }
}
