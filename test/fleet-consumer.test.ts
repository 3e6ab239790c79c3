// The fleet side of the device streams: topics (agent/protocol/topics.ts), strict payload decoding, sequence
// tracking checked against a plain reference model on shuffled streams, and the device table's folding of
// sessions (stale deaths and births ignored), telemetry and events (agent/fleet/consumer.ts).
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  DeviceTable,
  parseEvent,
  parseState,
  parseTelemetry,
  SequenceTracker,
  type SequenceVerdict,
} from "../agent/fleet/consumer";
import { fleetFilter, parseTopic, sharedFilter, topicsFor } from "../agent/protocol/topics";
import { below, rngFor, seedNote, testSeed } from "./helpers/random";

// The reference-model test's streams come from this seed; FLEET_TEST_SEED=<seed> replays them.
const SEED_VAR = "FLEET_TEST_SEED";
const SEED = testSeed(SEED_VAR);

const ID = "0123456789abcdef0123456789abcdef";
const ID2 = "fedcba9876543210fedcba9876543210";
const json = (value: unknown): Uint8Array => Buffer.from(JSON.stringify(value));

describe("topics", () => {
  it("builds the README's topics and parses them back", () => {
    const t = topicsFor(ID);
    expect(t.state).toBe(`sharenode/v1/${ID}/state`);
    expect(t.telemetry).toBe(`sharenode/v1/${ID}/telemetry`);
    expect(t.events).toBe(`sharenode/v1/${ID}/events`);
    expect(t.reply).toBe(`sharenode/v1/${ID}/reply`);
    expect(t.cmdFilter).toBe(`sharenode/v1/${ID}/cmd/+`);
    expect(t.cmd("store.challenge")).toBe(`sharenode/v1/${ID}/cmd/store.challenge`);
    expect(t.replyTo("svc-1")).toBe(`sharenode/v1/${ID}/reply/svc-1`);
    expect(parseTopic(t.state)).toEqual({ deviceId: ID, kind: "state" });
    expect(parseTopic(t.telemetry)).toEqual({ deviceId: ID, kind: "telemetry" });
    expect(parseTopic(t.events)).toEqual({ deviceId: ID, kind: "events" });
    expect(parseTopic(t.reply)).toEqual({ deviceId: ID, kind: "reply" });
    expect(parseTopic(t.replyTo("svc-1"))).toEqual({ deviceId: ID, kind: "reply", name: "svc-1" });
    expect(parseTopic(t.cmd("log.tail"))).toEqual({ deviceId: ID, kind: "cmd", name: "log.tail" });
    expect(parseTopic(`sharenode/v1/${ID}/cmd/é✓😀`)).toEqual({ deviceId: ID, kind: "cmd", name: "é✓😀" });
  });

  it("rejects what is not a topic of ours", () => {
    const bad = [
      `sharenode/v2/${ID}/state`,
      `sharenode/v1/${ID.toUpperCase()}/state`,
      `sharenode/v1/${ID}0/state`,
      `sharenode/v1/${ID}/state/x`,
      `sharenode/v1/${ID}/events/`,
      `sharenode/v1/${ID}/cmd`,
      `sharenode/v1/${ID}/cmd/`,
      `sharenode/v1/${ID}/cmd/a/b`,
      `sharenode/v1/${ID}/cmd/+`,
      `sharenode/v1/${ID}/cmd/#`,
      `sharenode/v1/${ID}/cmd/a\u0000b`,
      `sharenode/v1/${ID}/cmd/a\u001bb`,
      `sharenode/v1/${ID}/cmd/\ud800`,
      `sharenode/v1/${ID}/cmd/${"x".repeat(129)}`,
      `sharenode/v1/${ID}/reply/a/b`,
      `sharenode/v1/${ID}/other`,
      `sharenode/v1/+/state`,
      `/sharenode/v1/${ID}/state`,
      `$share/g/sharenode/v1/${ID}/state`,
      "",
      undefined,
      42,
    ];
    for (const topic of bad) expect(parseTopic(topic), String(topic)).toBeUndefined();
    expect(parseTopic(`sharenode/v1/${ID}/cmd/${"x".repeat(128)}`)?.name).toHaveLength(128);
  });

  it("refuses names that would widen or move a topic", () => {
    const t = topicsFor(ID);
    for (const name of [
      "",
      "a/b",
      "+",
      "#",
      "a+b",
      "a#",
      "nul\u0000",
      "tab\t",
      "del\u007f",
      "\u0085",
      "\udc00",
      "x".repeat(129),
    ]) {
      expect(() => t.cmd(name), JSON.stringify(name)).toThrow(RangeError);
      expect(() => t.replyTo(name)).toThrow(RangeError);
      expect(() => sharedFilter(name, "events")).toThrow(RangeError);
    }
    expect(() => topicsFor("nope")).toThrow(RangeError);
    expect(() => topicsFor(ID.toUpperCase())).toThrow(RangeError);
  });

  it("gives consumers plain and shared filters", () => {
    expect(fleetFilter("events")).toBe("sharenode/v1/+/events");
    expect(fleetFilter("reply")).toBe("sharenode/v1/+/reply/#");
    expect(sharedFilter("ledger", "events")).toBe("$share/ledger/sharenode/v1/+/events");
    expect(sharedFilter("metrics", "telemetry")).toBe("$share/metrics/sharenode/v1/+/telemetry");
    expect(sharedFilter("g", "state")).toBe("$share/g/sharenode/v1/+/state");
  });
});

describe("payload decoding", () => {
  it("parses state, birth and will", () => {
    expect(parseState(json({ state: "online", bdSeq: 3, ts: 1000, version: "0.1.0" }))).toEqual({
      ok: true,
      value: { state: "online", bdSeq: 3, ts: 1000, version: "0.1.0", build: null, slot: null },
    });
    // The release running (agent/ota): its build and slot.
    expect(parseState(json({ state: "online", bdSeq: 4, ts: 1000, version: "0.2.0", build: 2, slot: "B" }))).toEqual({
      ok: true,
      value: { state: "online", bdSeq: 4, ts: 1000, version: "0.2.0", build: 2, slot: "B" },
    });
    expect(parseState('{"state":"offline","bdSeq":3}')).toEqual({
      ok: true,
      value: { state: "offline", bdSeq: 3, ts: null, version: null, build: null, slot: null },
    });
    expect(parseState(json({ state: "online", bdSeq: 1, future: "field" })).ok).toBe(true);
    for (const bad of [
      { state: "gone", bdSeq: 1 },
      { state: "online" },
      { state: "online", bdSeq: -1 },
      { state: "online", bdSeq: 1.5 },
      { state: "online", bdSeq: "1" },
      { state: "online", bdSeq: 1, ts: "now" },
      { state: "online", bdSeq: 1, version: 1 },
      { state: "online", bdSeq: 1, build: -2 },
      { state: "online", bdSeq: 1, build: "7" },
      { state: "online", bdSeq: 1, slot: "C" },
      [1],
      null,
    ]) {
      const result = parseState(json(bad));
      expect(result.ok, JSON.stringify(bad)).toBe(false);
      if (!result.ok) expect(result.reason).toMatch(/^[^\n]+$/);
    }
    expect(parseState(new Uint8Array(0))).toMatchObject({ ok: false, reason: expect.stringMatching(/empty/) });
  });

  it("parses flat numeric telemetry only", () => {
    const good = { seq: 7, ts: 1000, uptime_s: 12, cpu_pct: 3.5, temp_c: -4, outbox_depth: 2 };
    expect(parseTelemetry(json(good))).toEqual({
      ok: true,
      value: { seq: 7, ts: 1000, metrics: { uptime_s: 12, cpu_pct: 3.5, temp_c: -4, outbox_depth: 2 } },
    });
    for (const bad of [
      { ts: 1, a: 1 },
      { seq: 1, a: 1 },
      { seq: 1, ts: 1, a: "1" },
      { seq: 1, ts: 1, a: null },
      { seq: 1, ts: 1, a: { nested: 1 } },
      { seq: 1, ts: 1, a: [1] },
      { seq: 1, ts: 1, "bad-name": 1 },
      { seq: 1, ts: 1, "": 1 },
      Object.fromEntries([["seq", 1], ["ts", 1], ...Array.from({ length: 300 }, (_, i) => [`m${i}`, i])]),
    ]) {
      expect(parseTelemetry(json(bad)).ok, JSON.stringify(bad).slice(0, 80)).toBe(false);
    }
    // A "__proto__" field stays an own field and never becomes a prototype.
    const proto = parseTelemetry('{"seq":1,"ts":1,"__proto__":5}');
    expect(proto.ok).toBe(true);
    if (proto.ok) {
      expect(Object.getPrototypeOf(proto.value.metrics)).toBe(Object.prototype);
      expect(Object.keys(proto.value.metrics)).toEqual(["__proto__"]);
    }
  });

  it("parses events, keeping the other fields", () => {
    expect(parseEvent('{"seq":0,"ts":5,"type":"proof.failed","objectId":"ab","n":2}')).toEqual({
      ok: true,
      value: { seq: 0, ts: 5, type: "proof.failed", fields: { objectId: "ab", n: 2 } },
    });
    expect(parseEvent(json({ seq: 1, ts: 5 })).ok).toBe(false);
    expect(parseEvent(json({ seq: 1, ts: 5, type: "" })).ok).toBe(false);
    expect(parseEvent(json({ seq: 1, ts: 5, type: 3 })).ok).toBe(false);
  });

  it("never throws on garbage", () => {
    const throwing = new Proxy(new Uint8Array(4), {
      get: () => {
        throw new Error("trap");
      },
    });
    const garbage: unknown[] = [
      undefined,
      null,
      1,
      {},
      throwing,
      Buffer.from([0xff, 0xfe]),
      Buffer.from("\ufeff{}"),
      new Uint8Array(300 * 1024),
      "x".repeat(300 * 1024),
    ];
    for (let i = 0; i < 500; i++) garbage.push(randomBytes(i % 64));
    for (const value of garbage) {
      for (const parse of [parseState, parseTelemetry, parseEvent]) {
        const result = parse(value as Uint8Array);
        expect(result.ok).toBe(false);
        if (!result.ok) expect(result.reason).toMatch(/^[^\n]+$/);
      }
    }
    const table = new DeviceTable({ clock: () => 0 });
    for (const value of garbage) expect(table.apply(topicsFor(ID).events, value as Uint8Array).kind).toBe("ignored");
    expect(table.size).toBe(0);
  });
});

describe("SequenceTracker", () => {
  it("tells new, duplicate and gaps apart, and counts what is missing", () => {
    const t = new SequenceTracker(8);
    expect(t.accept(10)).toBe("new");
    expect(t.accept(11)).toBe("new");
    expect(t.accept(11)).toBe("duplicate");
    expect(t.accept(14)).toEqual({ gap: [12, 13] });
    expect(t.missing).toBe(2);
    expect(t.accept(13)).toBe("new"); // reordered: fills half of the gap
    expect(t.missing).toBe(1);
    expect(t.accept(13)).toBe("duplicate");
    expect(t.accept(10)).toBe("duplicate");
    expect(t.accept(9)).toBe("new"); // before the baseline: first arrival, nobody's gap
    expect(t.missing).toBe(1);
    expect(t.accept(100)).toEqual({ gap: [15, 99] });
    expect(t.missing).toBe(86);
    expect(t.accept(12)).toBe("duplicate"); // too old to tell: dropped
    expect(t.accept(95)).toBe("new");
    expect(t.missing).toBe(85);
    expect(t.highest).toBe(100);
    expect(() => t.accept(-1)).toThrow(RangeError);
    expect(() => t.accept(1.5)).toThrow(RangeError);
  });

  it("matches a reference model on streams duplicated and reordered within the window", () => {
    const window = 64;
    const next = rngFor(SEED, "reference model");
    for (let round = 0; round < 50; round++) {
      // Seqs 0..499 with some lost (1 in 20), each delivered 1-3 times, shuffled locally (no further than 20 places).
      const sent: number[] = [];
      for (let s = 0; s < 500; s++) if (below(next, 20) > 0) for (let k = 1 + below(next, 3); k > 0; k--) sent.push(s);
      for (let i = 0; i < sent.length; i++) {
        const j = Math.min(sent.length - 1, i + below(next, 20));
        [sent[i], sent[j]] = [sent[j]!, sent[i]!];
      }
      const tracker = new SequenceTracker(window);
      const seen = new Set<number>();
      let high = -1;
      let first = -1;
      for (const seq of sent) {
        const verdict: SequenceVerdict = tracker.accept(seq);
        const expected =
          seen.has(seq) || (high >= 0 && high - seq >= window)
            ? "duplicate"
            : seq > high + 1 && high >= 0
              ? { gap: [high + 1, seq - 1] }
              : "new";
        expect(verdict, `round ${round}, seq ${seq}, ${seedNote(SEED_VAR, SEED)}`).toEqual(expected);
        if (expected !== "duplicate") seen.add(seq);
        if (first < 0) first = seq;
        high = Math.max(high, seq);
        let missing = 0;
        for (let s = first + 1; s < high; s++) if (!seen.has(s)) missing++;
        expect(tracker.missing, `round ${round}, seq ${seq}, ${seedNote(SEED_VAR, SEED)}`).toBe(missing);
      }
    }
  });
});

describe("DeviceTable", () => {
  function table(): { table: DeviceTable; clock: { now: number } } {
    const clock = { now: 1000 };
    return { table: new DeviceTable({ clock: () => clock.now }), clock };
  }
  const t = topicsFor(ID);

  it("folds births, telemetry and events into a row", () => {
    const { table: tab, clock } = table();
    expect(tab.apply(t.state, json({ state: "online", bdSeq: 1, ts: 5, version: "0.1.0" }))).toMatchObject({
      kind: "state",
      stale: false,
    });
    clock.now = 2000;
    expect(tab.apply(t.telemetry, json({ seq: 0, ts: 6, cpu_pct: 5, outbox_depth: 3 }))).toMatchObject({
      kind: "telemetry",
      verdict: "new",
    });
    const event = tab.apply(t.events, json({ seq: 0, ts: 7, type: "store.evicted", objectId: "ab" }));
    expect(event).toMatchObject({
      kind: "event",
      deviceId: ID,
      verdict: "new",
      event: { type: "store.evicted", fields: { objectId: "ab" } },
    });
    expect(tab.apply(t.events, json({ seq: 0, ts: 7, type: "store.evicted", objectId: "ab" }))).toMatchObject({
      verdict: "duplicate",
    });
    expect(tab.apply(t.events, json({ seq: 3, ts: 8, type: "x" }))).toMatchObject({ verdict: { gap: [1, 2] } });
    expect(tab.get(ID)).toEqual({
      deviceId: ID,
      online: true,
      bdSeq: 1,
      version: "0.1.0",
      lastSeen: 2000,
      metrics: { cpu_pct: 5, outbox_depth: 3 },
      metricsSeq: 0,
      outboxDepth: 3,
      gaps: { events: 2, telemetry: 0 },
      duplicates: { events: 1, telemetry: 0 },
    });
    // A late event fills the gap.
    tab.apply(t.events, json({ seq: 1, ts: 8, type: "x" }));
    expect(tab.get(ID)?.gaps.events).toBe(1);
  });

  it("ignores a stale death (older bdSeq than the current birth) and a redelivered birth of a dead session", () => {
    const { table: tab } = table();
    tab.apply(t.state, json({ state: "online", bdSeq: 4 }));
    tab.apply(t.state, json({ state: "online", bdSeq: 5 }));
    expect(tab.apply(t.state, json({ state: "offline", bdSeq: 4 }))).toMatchObject({ kind: "state", stale: true });
    expect(tab.get(ID)).toMatchObject({ online: true, bdSeq: 5 });
    expect(tab.apply(t.state, json({ state: "online", bdSeq: 5 }))).toMatchObject({ stale: false }); // a duplicate birth
    expect(tab.apply(t.state, json({ state: "offline", bdSeq: 5 }))).toMatchObject({ stale: false });
    expect(tab.get(ID)).toMatchObject({ online: false, bdSeq: 5 });
    expect(tab.apply(t.state, json({ state: "online", bdSeq: 5 }))).toMatchObject({ stale: true });
    expect(tab.apply(t.state, json({ state: "online", bdSeq: 3 }))).toMatchObject({ stale: true });
    expect(tab.get(ID)).toMatchObject({ online: false, bdSeq: 5 });
    // The death of a session whose birth was missed ends it; the next birth starts the next one.
    expect(tab.apply(t.state, json({ state: "offline", bdSeq: 7 }))).toMatchObject({ stale: false });
    expect(tab.get(ID)).toMatchObject({ online: false, bdSeq: 7 });
    expect(tab.apply(t.state, json({ state: "online", bdSeq: 8 }))).toMatchObject({ stale: false });
    expect(tab.get(ID)).toMatchObject({ online: true, bdSeq: 8 });
  });

  it("keeps the newest telemetry when older telemetry arrives late, and counts telemetry gaps apart", () => {
    const { table: tab } = table();
    tab.apply(t.telemetry, json({ seq: 5, ts: 1, cpu_pct: 50, outbox_depth: 9 }));
    expect(tab.apply(t.telemetry, json({ seq: 8, ts: 1, cpu_pct: 80 }))).toMatchObject({ verdict: { gap: [6, 7] } });
    expect(tab.apply(t.telemetry, json({ seq: 7, ts: 1, cpu_pct: 70, outbox_depth: 1 }))).toMatchObject({
      verdict: "new",
    });
    expect(tab.apply(t.telemetry, json({ seq: 7, ts: 1, cpu_pct: 70 }))).toMatchObject({ verdict: "duplicate" });
    expect(tab.get(ID)).toMatchObject({
      online: false,
      bdSeq: null,
      metrics: { cpu_pct: 80 },
      metricsSeq: 8,
      outboxDepth: 9,
      gaps: { events: 0, telemetry: 1 },
      duplicates: { events: 0, telemetry: 1 },
    });
  });

  it("keeps devices apart, hands out copies, ignores what is not a device stream, and has a size limit", () => {
    const tab = new DeviceTable({ clock: () => 0, maxDevices: 1 });
    tab.apply(t.telemetry, json({ seq: 1, ts: 1, a: 1 }));
    expect(tab.apply(topicsFor(ID2).telemetry, json({ seq: 1, ts: 1, a: 1 }))).toEqual({
      kind: "ignored",
      reason: "device table is full (1 devices)",
    });
    const row = tab.get(ID)!;
    row.metrics.a = 99;
    row.gaps.events = 99;
    expect(tab.get(ID)).toMatchObject({ metrics: { a: 1 }, gaps: { events: 0 } });
    expect(tab.apply(t.cmd("ping"), "{}")).toMatchObject({ kind: "ignored" });
    expect(tab.apply(t.reply, "{}")).toMatchObject({ kind: "ignored" });
    expect(tab.apply("elsewhere/topic", "{}")).toMatchObject({ kind: "ignored" });
    expect(tab.rows().map((r) => r.deviceId)).toEqual([ID]);
  });
});
