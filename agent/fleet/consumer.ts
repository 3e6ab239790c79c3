// The fleet side of the device streams (agent/link/README.md): strict decoding of state, telemetry and events
// payloads, per-stream sequence tracking (duplicates, gaps, reordering), and a table that folds every message into
// one row per device. Pure: the consumer's MQTT client hands in topics and payload bytes, the clock is injected.
// Payloads are untrusted (any device, or anyone the broker lets publish): nothing here throws on them.
import { describeValue, errorLine } from "../protocol/envelope.js";
import { parseTopic } from "../protocol/topics.js";
import { isUint } from "../util/guards.js";

/** The largest state, telemetry or events payload the parsers read. */
export const MAX_MESSAGE_BYTES = 256 * 1024;
/** Telemetry keys: Prometheus metric names, at most 128 characters; at most 256 of them. */
export const TELEMETRY_KEY = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
export const MAX_TELEMETRY_KEYS = 256;
/** How many sequence numbers below the highest one a tracker remembers. */
export const DEFAULT_WINDOW = 1024;

export type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

export interface StateRecord {
  state: "online" | "offline";
  bdSeq: number;
  /** Absent from a last will. */
  ts: number | null;
  version: string | null;
  /** The release running (agent/ota): its build (0: installed by hand) and slot; null from older agents and wills. */
  build: number | null;
  slot: "A" | "B" | null;
}

export interface TelemetryRecord {
  seq: number;
  ts: number;
  /** Every other field: all numbers. */
  metrics: Record<string, number>;
}

export interface EventRecord {
  seq: number;
  ts: number;
  type: string;
  /** Every other field, as sent. */
  fields: Record<string, unknown>;
}

const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** A state record: `{"state":"online"|"offline","bdSeq":n,"ts":ms,"version":"x.y.z"}` (ts, version optional). */
export function parseState(payload: Uint8Array | string): Parsed<StateRecord> {
  return parseWith(payload, "state", (o) => {
    if (o.state !== "online" && o.state !== "offline")
      return `state 'state' must be "online" or "offline", got ${describeValue(o.state)}`;
    if (!isUint(o.bdSeq)) return `state 'bdSeq' must be a non-negative integer, got ${describeValue(o.bdSeq)}`;
    if (o.ts !== undefined && !isUint(o.ts)) return `state 'ts' must be epoch milliseconds, got ${describeValue(o.ts)}`;
    if (o.version !== undefined && !(typeof o.version === "string" && o.version.length > 0 && o.version.length <= 64)) {
      return `state 'version' must be a string of 1..64 characters, got ${describeValue(o.version)}`;
    }
    if (o.build !== undefined && !isUint(o.build))
      return `state 'build' must be a non-negative integer, got ${describeValue(o.build)}`;
    if (o.slot !== undefined && o.slot !== null && o.slot !== "A" && o.slot !== "B")
      return `state 'slot' must be "A", "B" or null, got ${describeValue(o.slot)}`;
    // Unknown fields are ignored: a newer agent may add some.
    return {
      state: o.state,
      bdSeq: o.bdSeq,
      ts: (o.ts as number | undefined) ?? null,
      version: (o.version as string | undefined) ?? null,
      build: (o.build as number | undefined) ?? null,
      slot: (o.slot as "A" | "B" | null | undefined) ?? null,
    };
  });
}

/** A telemetry record: one flat JSON object of numbers, `seq` and `ts` among them. */
export function parseTelemetry(payload: Uint8Array | string): Parsed<TelemetryRecord> {
  return parseWith(payload, "telemetry", (o) => {
    const sequenced = seqAndTs(o, "telemetry");
    if (typeof sequenced === "string") return sequenced;
    const keys = Object.keys(o);
    if (keys.length > MAX_TELEMETRY_KEYS) return `telemetry has ${keys.length} fields, more than ${MAX_TELEMETRY_KEYS}`;
    const metrics: [string, number][] = [];
    for (const key of keys) {
      if (!TELEMETRY_KEY.test(key)) return `telemetry field name ${describeValue(key)} is not a metric name`;
      const value = o[key];
      if (typeof value !== "number" || !Number.isFinite(value))
        return `telemetry '${key}' must be a number, got ${describeValue(value)}`;
      if (key !== "seq" && key !== "ts") metrics.push([key, value]);
    }
    // fromEntries defines own properties: a "__proto__" key stays a key.
    return { ...sequenced, metrics: Object.fromEntries(metrics) };
  });
}

/** An outbox record from the events stream: `{"seq":n,"ts":ms,"type":"...",...}`. */
export function parseEvent(payload: Uint8Array | string): Parsed<EventRecord> {
  return parseWith(payload, "event", (o) => {
    const sequenced = seqAndTs(o, "event");
    if (typeof sequenced === "string") return sequenced;
    if (typeof o.type !== "string" || o.type.length === 0 || o.type.length > 128) {
      return `event 'type' must be a string of 1..128 characters, got ${describeValue(o.type)}`;
    }
    const fields = Object.fromEntries(
      Object.entries(o).filter(([key]) => key !== "seq" && key !== "ts" && key !== "type"),
    );
    return { ...sequenced, type: o.type, fields };
  });
}

function seqAndTs(o: Record<string, unknown>, what: string): { seq: number; ts: number } | string {
  if (!isUint(o.seq)) return `${what} 'seq' must be a non-negative integer, got ${describeValue(o.seq)}`;
  if (!isUint(o.ts)) return `${what} 'ts' must be epoch milliseconds, got ${describeValue(o.ts)}`;
  return { seq: o.seq, ts: o.ts };
}

function parseWith<T>(payload: unknown, what: string, check: (o: Record<string, unknown>) => T | string): Parsed<T> {
  try {
    let text: string;
    if (typeof payload === "string") text = payload;
    else if (payload instanceof Uint8Array) {
      if (payload.length > MAX_MESSAGE_BYTES)
        return { ok: false, reason: `${what} payload of ${payload.length} bytes exceeds ${MAX_MESSAGE_BYTES}` };
      if (payload.length === 0) return { ok: false, reason: `${what} payload is empty (a cleared retained message)` };
      try {
        text = decoder.decode(payload);
      } catch {
        return { ok: false, reason: `${what} payload is not valid UTF-8` };
      }
    } else return { ok: false, reason: `${what} payload is not bytes or text` };
    if (text.length > MAX_MESSAGE_BYTES)
      return { ok: false, reason: `${what} payload exceeds ${MAX_MESSAGE_BYTES} bytes` };
    if (text.length === 0) return { ok: false, reason: `${what} payload is empty (a cleared retained message)` };
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      return { ok: false, reason: `${what} payload is not valid JSON` };
    }
    if (typeof value !== "object" || value === null || Array.isArray(value))
      return { ok: false, reason: `${what} payload is not a JSON object` };
    const checked = check(value as Record<string, unknown>);
    return typeof checked === "string" ? { ok: false, reason: checked } : { ok: true, value: checked };
  } catch (err) {
    return { ok: false, reason: `${what} payload could not be read: ${errorLine(err)}` };
  }
}

// --- sequence numbers -------------------------------------------------------------------------------------------

/**
 * "new": first arrival, process it. "duplicate": seen before (or too old to tell: more than the window below the
 * highest seq), drop it. { gap: [from, to] }: new, and it skips seqs from..to, which have not arrived (yet).
 */
export type SequenceVerdict = "new" | "duplicate" | { gap: [number, number] };

/**
 * One device's one stream (events or telemetry). Remembers which of the last `window` seqs below the highest have
 * arrived, so reordering within the window is told apart from duplicates. The first seq accepted is the baseline:
 * what came before it is nobody's gap.
 */
export class SequenceTracker {
  private readonly window: number;
  private readonly arrived: Uint8Array;
  private first: number | null = null;
  private high: number | null = null;
  private missingCount = 0;

  constructor(window = DEFAULT_WINDOW) {
    if (!Number.isSafeInteger(window) || window < 1 || window > 1 << 24)
      throw new RangeError(`window must be an integer 1..${1 << 24}, got ${window}`);
    this.window = window;
    this.arrived = new Uint8Array(window);
  }

  /** The highest seq accepted, null before the first. */
  get highest(): number | null {
    return this.high;
  }

  /** Seqs skipped since the baseline that have not arrived: reordered ones still on their way, or lost ones. */
  get missing(): number {
    return this.missingCount;
  }

  /** Throws a RangeError when seq is not a non-negative safe integer (parse the message first). */
  accept(seq: number): SequenceVerdict {
    if (!isUint(seq)) throw new RangeError(`seq must be a non-negative integer, got ${describeValue(seq)}`);
    const w = this.window;
    if (this.high === null || this.first === null) {
      this.first = this.high = seq;
      this.arrived[seq % w] = 1;
      return "new";
    }
    const high = this.high;
    if (seq > high) {
      // The slots of seqs high+1..seq now stand for those seqs: none has arrived, but seq.
      if (seq - high >= w) this.arrived.fill(0);
      else for (let s = high + 1; s < seq; s++) this.arrived[s % w] = 0;
      this.arrived[seq % w] = 1;
      this.high = seq;
      if (seq === high + 1) return "new";
      this.missingCount += seq - high - 1;
      return { gap: [high + 1, seq - 1] };
    }
    if (high - seq >= w || this.arrived[seq % w] === 1) return "duplicate";
    this.arrived[seq % w] = 1;
    if (seq > this.first) this.missingCount--;
    return "new";
  }
}

// --- the device table -------------------------------------------------------------------------------------------

export interface StreamCounts {
  events: number;
  telemetry: number;
}

export interface DeviceRow {
  deviceId: string;
  /** From the state topic only. */
  online: boolean;
  /** The current session's birth/death sequence; null until a state arrives. */
  bdSeq: number | null;
  version: string | null;
  /** The consumer's clock when the device's last accepted message arrived. */
  lastSeen: number;
  /** The newest telemetry (by seq), without seq and ts. */
  metrics: Record<string, number>;
  /** The seq of that telemetry; null before any. */
  metricsSeq: number | null;
  /** outbox_depth from the newest telemetry. */
  outboxDepth: number | null;
  /** Seqs skipped and not (yet) arrived. Telemetry gaps are expected when a full outbox drops telemetry. */
  gaps: StreamCounts;
  /** Messages that arrived again (at-least-once delivery). */
  duplicates: StreamCounts;
}

export type Applied =
  | { kind: "state"; deviceId: string; state: StateRecord; stale: boolean }
  | { kind: "telemetry"; deviceId: string; telemetry: TelemetryRecord; verdict: SequenceVerdict }
  | { kind: "event"; deviceId: string; event: EventRecord; verdict: SequenceVerdict }
  | { kind: "ignored"; reason: string };

export interface DeviceTableOptions {
  /** Epoch milliseconds; Date.now when absent. */
  clock?: () => number;
  window?: number;
  /** Messages of devices beyond this many are ignored (the broker's ACL should keep strangers out anyway). */
  maxDevices?: number;
}

interface Entry {
  row: DeviceRow;
  events: SequenceTracker;
  telemetry: SequenceTracker;
}

/**
 * Folds state, telemetry and events messages into one row per device. Events and telemetry are deduplicated:
 * apply() says whether an event is new (process it) or a duplicate (drop it).
 *
 * Sessions (README, "State and session sequence"): a death (offline) whose bdSeq is older than the current one is
 * a stale session's last will delivered late, and is ignored; so is a birth older than the current one, or a birth
 * of the session whose death was already seen (a redelivery). A death newer than the current birth ends a
 * session whose birth we missed.
 */
export class DeviceTable {
  private readonly clock: () => number;
  private readonly window: number;
  private readonly maxDevices: number;
  private readonly entries = new Map<string, Entry>();

  constructor(options: DeviceTableOptions = {}) {
    this.clock = options.clock ?? Date.now;
    this.window = options.window ?? DEFAULT_WINDOW;
    this.maxDevices = options.maxDevices ?? 100_000;
  }

  /** Folds one message in. Never throws on the topic or the payload. */
  apply(topic: string, payload: Uint8Array | string): Applied {
    const parsed = parseTopic(topic);
    if (parsed === undefined) return ignored(`topic ${describeValue(topic)} is not a sharenode v1 topic`);
    const { deviceId, kind } = parsed;
    switch (kind) {
      case "state": {
        const state = parseState(payload);
        if (!state.ok) return ignored(state.reason);
        const entry = this.entry(deviceId);
        if (entry === undefined) return this.full();
        const stale = !foldState(entry.row, state.value);
        if (!stale) entry.row.lastSeen = this.clock();
        return { kind, deviceId, state: state.value, stale };
      }
      case "telemetry": {
        const telemetry = parseTelemetry(payload);
        if (!telemetry.ok) return ignored(telemetry.reason);
        const entry = this.entry(deviceId);
        if (entry === undefined) return this.full();
        const { row } = entry;
        const verdict = entry.telemetry.accept(telemetry.value.seq);
        row.lastSeen = this.clock();
        row.gaps.telemetry = entry.telemetry.missing;
        if (verdict === "duplicate") row.duplicates.telemetry++;
        else if (row.metricsSeq === null || telemetry.value.seq > row.metricsSeq) {
          // Older telemetry arriving late never overwrites newer figures.
          row.metrics = { ...telemetry.value.metrics };
          row.metricsSeq = telemetry.value.seq;
          const depth = telemetry.value.metrics.outbox_depth;
          if (depth !== undefined) row.outboxDepth = depth;
        }
        return { kind, deviceId, telemetry: telemetry.value, verdict };
      }
      case "events": {
        const event = parseEvent(payload);
        if (!event.ok) return ignored(event.reason);
        const entry = this.entry(deviceId);
        if (entry === undefined) return this.full();
        const verdict = entry.events.accept(event.value.seq);
        entry.row.lastSeen = this.clock();
        entry.row.gaps.events = entry.events.missing;
        if (verdict === "duplicate") entry.row.duplicates.events++;
        return { kind: "event", deviceId, event: event.value, verdict };
      }
      default:
        return ignored(`topic kind ${kind} is not a device stream`);
    }
  }

  /** A copy of one device's row. */
  get(deviceId: string): DeviceRow | undefined {
    const entry = this.entries.get(deviceId);
    return entry === undefined ? undefined : copyRow(entry.row);
  }

  /** Copies of every row, in the order the devices were first seen. */
  rows(): DeviceRow[] {
    return [...this.entries.values()].map((e) => copyRow(e.row));
  }

  get size(): number {
    return this.entries.size;
  }

  private entry(deviceId: string): Entry | undefined {
    let entry = this.entries.get(deviceId);
    if (entry === undefined) {
      if (this.entries.size >= this.maxDevices) return undefined;
      entry = {
        row: {
          deviceId,
          online: false,
          bdSeq: null,
          version: null,
          lastSeen: this.clock(),
          metrics: {},
          metricsSeq: null,
          outboxDepth: null,
          gaps: { events: 0, telemetry: 0 },
          duplicates: { events: 0, telemetry: 0 },
        },
        events: new SequenceTracker(this.window),
        telemetry: new SequenceTracker(this.window),
      };
      this.entries.set(deviceId, entry);
    }
    return entry;
  }

  private full(): Applied {
    return ignored(`device table is full (${this.maxDevices} devices)`);
  }
}

/** Applies a state record to a row; false when it is stale and ignored. */
function foldState(row: DeviceRow, state: StateRecord): boolean {
  const current = row.bdSeq;
  if (state.state === "online") {
    // The same bdSeq again is a redelivered birth: fine while online, stale once that session's death was seen.
    if (current !== null && (state.bdSeq < current || (state.bdSeq === current && !row.online))) return false;
    row.online = true;
  } else {
    if (current !== null && state.bdSeq < current) return false;
    row.online = false;
  }
  row.bdSeq = state.bdSeq;
  if (state.version !== null) row.version = state.version;
  return true;
}

function copyRow(row: DeviceRow): DeviceRow {
  return { ...row, metrics: { ...row.metrics }, gaps: { ...row.gaps }, duplicates: { ...row.duplicates } };
}

function ignored(reason: string): Applied {
  return { kind: "ignored", reason };
}
