// Floods anyone on the broker can cause (agent/link/flood-guard.ts, agent/link/README.md "What a broker client can
// make the device do"): the token bucket and the refusal summary on an injected clock, then `sharenode run` (the
// built bundle) against a real mosquitto while 3,000 unauthenticated messages arrive on its command topic: error
// replies and log lines stay within the bucket's and the summary's bounds, and signed commands are answered as ever.
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import mqtt, { type MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ERROR_REPLIES_PER_SECOND,
  ERROR_REPLY_BURST,
  REFUSAL_PROMPT_LINES,
  RefusalLog,
  TokenBucket,
} from "../agent/link/flood-guard";
import { loadOrCreateFleetKey, openReply, signCommand, type FleetKey, type Reply } from "../agent/protocol/envelope";
import { topicsFor } from "../agent/protocol/topics";
import { AgentProcess } from "./helpers/agent-process";
import { Broker } from "./helpers/mosquitto";
import { rngFor } from "./helpers/random";
import { waiter } from "./helpers/wait";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "dist/sharenode.js");
const SEED = Number(process.env.SHARENODE_TEST_SEED ?? 0x5eed);

describe("TokenBucket", () => {
  it("gives `burst` at once, then `perSecond`, never more than `burst` banked", () => {
    let now = 1_000_000;
    const bucket = new TokenBucket({ burst: 10, perSecond: 1, clock: () => now });
    for (let i = 0; i < 10; i++) expect(bucket.take(), `take ${i}`).toBe(true);
    expect(bucket.take()).toBe(false);
    now += 999;
    expect(bucket.take()).toBe(false);
    now += 1;
    expect(bucket.take()).toBe(true);
    expect(bucket.take()).toBe(false);
    now += 3_600_000;
    let granted = 0;
    while (bucket.take()) granted++;
    expect(granted).toBe(10);
  });

  it("a slower rate: 1 every 2 s", () => {
    let now = 0;
    const bucket = new TokenBucket({ burst: 1, perSecond: 0.5, clock: () => now });
    expect(bucket.take()).toBe(true);
    now += 1999;
    expect(bucket.take()).toBe(false);
    now += 1;
    expect(bucket.take()).toBe(true);
  });

  it("a clock that steps back adds nothing and does not stall the refill", () => {
    let now = 10_000_000;
    const bucket = new TokenBucket({ burst: 2, perSecond: 1, clock: () => now });
    expect(bucket.take() && bucket.take()).toBe(true);
    expect(bucket.take()).toBe(false);
    now -= 3_600_000; // NTP steps the clock back an hour
    expect(bucket.take()).toBe(false);
    now += 1000;
    expect(bucket.take()).toBe(true);
  });

  it("over any schedule, grants at most burst + rate x elapsed (seeded; SHARENODE_TEST_SEED replays)", () => {
    const next = rngFor(SEED, "bucket-schedule");
    for (let round = 0; round < 50; round++) {
      const burst = 1 + (next() % 20);
      const perSecond = 0.25 * (1 + (next() % 16));
      let now = next();
      const start = now;
      const bucket = new TokenBucket({ burst, perSecond, clock: () => now });
      let granted = 0;
      for (let i = 0; i < 2000; i++) {
        now += next() % 300;
        if (bucket.take()) granted++;
      }
      const bound = burst + Math.floor(((now - start) * perSecond) / 1000);
      expect(granted, `seed ${SEED} round ${round}`).toBeLessThanOrEqual(bound);
      // ... and the limit is not simply "never": a steady flood gets about the rate.
      expect(granted, `seed ${SEED} round ${round}`).toBeGreaterThanOrEqual(bound - 1);
    }
  });

  it("refuses a bucket that could never grant", () => {
    expect(() => new TokenBucket({ burst: 0, perSecond: 1, clock: () => 0 })).toThrow(RangeError);
    expect(() => new TokenBucket({ burst: 1, perSecond: 0, clock: () => 0 })).toThrow(RangeError);
    expect(() => new TokenBucket({ burst: 1, perSecond: Number.NaN, clock: () => 0 })).toThrow(RangeError);
  });
});

describe("RefusalLog", () => {
  function rig(promptLines?: number) {
    const lines: string[] = [];
    const clock = { now: 5_000_000 };
    const log = new RefusalLog({ log: { info: (l) => lines.push(l) }, clock: () => clock.now, promptLines });
    return { lines, clock, log };
  }

  it("writes the first refusal of each code at once, then one summary line with the counts, most frequent first", () => {
    const { lines, clock, log } = rig();
    let built = 0;
    const line = (text: string) => () => {
      built++;
      return text;
    };
    for (let i = 0; i < 412; i++) log.record("malformed", line(`malformed #${i}`), i < 10);
    for (let i = 0; i < 37; i++) log.record("bad-signature", line(`bad-signature #${i}`), false);
    log.record("expired", line("expired #0"), true);
    expect(lines).toEqual(["malformed #0", "bad-signature #0", "expired #0"]);
    // The lines of refusals not written are never built.
    expect(built).toBe(3);
    clock.now += 60_000;
    log.flush();
    expect(lines.slice(3)).toEqual([
      "refused 412 malformed, 37 bad-signature, 1 expired in the last 60 s; 439 unauthenticated got no error reply (rate limit)",
    ]);
    // A new interval: the first of each code is written at once again.
    log.record("malformed", line("malformed again"), true);
    expect(lines.at(-1)).toBe("malformed again");
  });

  it("writes nothing when nothing was refused, and no summary when every refusal was already written", () => {
    const { lines, clock, log } = rig();
    log.flush();
    clock.now += 60_000;
    log.flush();
    expect(lines).toEqual([]);
    log.record("expired", () => "expired once", true);
    log.record("replayed", () => "replayed once", true);
    clock.now += 60_000;
    log.flush();
    expect(lines).toEqual(["expired once", "replayed once"]);
  });

  it(`writes at most ${REFUSAL_PROMPT_LINES} refusals at once per interval, whatever the number of codes`, () => {
    const { lines, clock, log } = rig();
    for (let i = 0; i < 50; i++) log.record(`code-${i}`, () => `code-${i} at once`, true);
    expect(lines).toHaveLength(REFUSAL_PROMPT_LINES);
    clock.now += 61_400;
    log.flush();
    expect(lines).toHaveLength(REFUSAL_PROMPT_LINES + 1);
    expect(lines.at(-1)).toMatch(/^refused 1 code-0, 1 code-1, 1 code-10, .* in the last 61 s$/);
  });

  it("start() writes the summary on its own timer; stop() writes what is left", async () => {
    const lines: string[] = [];
    const log = new RefusalLog({
      log: { info: (l) => lines.push(l) },
      clock: Date.now,
      intervalMs: 50,
      promptLines: 0,
    });
    log.start();
    log.record("malformed", () => "never written", false);
    for (let i = 0; i < 100 && lines.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(lines).toEqual([
      expect.stringMatching(
        /^refused 1 malformed in the last \d+ s; 1 unauthenticated got no error reply \(rate limit\)$/,
      ),
    ]);
    log.record("bad-signature", () => "never written", true);
    log.stop();
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(/^refused 1 bad-signature in the last \d+ s$/);
    // Stopped: no timer writes again.
    await new Promise((r) => setTimeout(r, 150));
    expect(lines).toHaveLength(2);
  });
});

// --- the daemon under a flood -------------------------------------------------------------------------------------

const FLOOD = 3000;

let broker: Broker | undefined;
let work = "";
let agent: AgentProcess | undefined;
let fleet: FleetKey;
let forger: FleetKey;
let client: MqttClient | undefined;
let deviceId = "";
let devicePublicKey = "";
const inbox: Array<{ topic: string; payload: Buffer; at: number }> = [];

const waitFor = waiter({
  timeoutMs: 30_000,
  intervalMs: 20,
  detail: () => `agent log:\n${agent?.log.slice(-2000) ?? ""}`,
});

function opened(payload: Buffer): Reply {
  const reply = openReply(payload, { devicePublicKey, deviceId });
  if (!reply.ok) throw new Error(`reply does not verify: ${reply.reason}`);
  return reply.reply;
}

/** The lines the commands logger wrote. */
const commandLines = (): string[] => (agent?.log ?? "").split("\n").filter((l) => / commands: /.test(l));

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "sharenode-flood-"));
  mkdirSync(join(work, "data"));
  broker = await Broker.start();
  fleet = await loadOrCreateFleetKey(join(work, "fleet", "device-key.pem"));
  forger = await loadOrCreateFleetKey(join(work, "forger", "device-key.pem"));
  client = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: "flood-test" });
  client.on("message", (topic, payload) => inbox.push({ topic, payload, at: Date.now() }));
  const env = {
    ...process.env,
    SHARENODE_BROKER: broker.url,
    SHARENODE_STATE: join(work, "state"),
    SHARENODE_DATA: join(work, "data"),
    SHARENODE_FLEET_KEY: fleet.publicKeyHex,
    SHARENODE_ALLOW_SYSTEM_DISK: "true",
    // The sim board: a test must never arm this machine's own /dev/watchdog.
    SHARENODE_BOARD: "sim",
  };
  agent = await AgentProcess.start(BIN, env, waitFor);
  deviceId = agent.deviceId;
  devicePublicKey = agent.publicKey;
  await client.subscribeAsync(`sharenode/v1/${deviceId}/reply/#`, { qos: 1 });
});

afterAll(async () => {
  if (agent?.running) agent.child.kill("SIGKILL");
  await client?.endAsync();
  await broker?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("sharenode run under a flood of unauthenticated commands", () => {
  it(`answers at most ${ERROR_REPLY_BURST} + ${ERROR_REPLIES_PER_SECOND}/s of ${FLOOD} garbage messages, logs a bounded number of lines, and answers signed commands as ever`, async () => {
    const topics = topicsFor(deviceId);
    const next = rngFor(SEED, "flood");
    const forged = Buffer.from(signCommand({ cmd: "ping", deviceId, args: {}, exp: Date.now() + 600_000 }, forger));
    // What the device receives: unreadable bytes, envelopes whose signature is not the fleet's, oversized payloads.
    const garbage = (i: number): Buffer => {
      if (i % 100 === 99) return Buffer.alloc(140_000, 0x20);
      if (i % 2 === 0) return Buffer.from(`{"body":${next()}`);
      return forged;
    };
    const expected = { malformed: 0, "bad-signature": 0, "too-large": 0 };
    for (let i = 0; i < FLOOD; i++)
      expected[i % 100 === 99 ? "too-large" : i % 2 === 0 ? "malformed" : "bad-signature"]++;
    const linesBefore = commandLines().length;
    const sign = (cmd: string, exp = Date.now() + 60_000) =>
      Buffer.from(signCommand({ cmd, deviceId, args: {}, exp }, fleet));
    const started = Date.now();
    const mid = FLOOD / 2;
    for (let i = 0; i < FLOOD; i++) {
      // Each to its own response topic, as an attacker would: the device answers under its own reply/ namespace.
      client!.publish(topics.cmd("ping"), garbage(i), {
        qos: 0,
        properties: { responseTopic: topics.replyTo(`flood-${i}`) },
      });
      if (i === mid) {
        // Signed commands in the middle of the flood: a ping, and one the device must refuse (expired): both answered.
        client!.publish(topics.cmd("ping"), sign("ping"), {
          qos: 1,
          properties: { responseTopic: topics.replyTo("during") },
        });
        client!.publish(topics.cmd("ping"), sign("ping", Date.now() - 1000), {
          qos: 1,
          properties: { responseTopic: topics.replyTo("expired") },
        });
      }
      if (i % 200 === 199) await new Promise((r) => setImmediate(r));
    }
    // After the flood, a signed ping on its own; its reply comes after every earlier message was handled (the device
    // handles garbage synchronously, and a signed command waits for its nonce's fsync).
    await client!.publishAsync(topics.cmd("ping"), sign("ping"), {
      qos: 1,
      properties: { responseTopic: topics.replyTo("after") },
    });
    const reply = (name: string) =>
      waitFor(`the reply to "${name}"`, () => inbox.find((m) => m.topic === topics.replyTo(name)));
    const during = opened((await reply("during")).payload);
    expect(during).toMatchObject({ ok: true, cmd: "ping", result: { pong: true } });
    const expired = opened((await reply("expired")).payload);
    expect(expired.ok).toBe(false);
    if (!expired.ok) expect(expired.error.code).toBe("expired");
    const after = opened((await reply("after")).payload);
    expect(after).toMatchObject({ ok: true, cmd: "ping", result: { pong: true } });
    // Stragglers get a moment to arrive before the count.
    await new Promise((r) => setTimeout(r, 500));
    const elapsedMs = Date.now() - started;

    const errorReplies = inbox.filter((m) => m.topic.startsWith(topics.replyTo("flood-")));
    for (const m of errorReplies) {
      const r = opened(m.payload);
      expect(r.ok).toBe(false);
      expect(r.nonce).toBe(null);
    }
    // The bucket starts with at most its burst and earns its rate while the flood lasts; without the limit every
    // message would be answered.
    const bound = ERROR_REPLY_BURST + Math.floor((elapsedMs * ERROR_REPLIES_PER_SECOND) / 1000);
    expect(errorReplies.length, `${errorReplies.length} error replies in ${elapsedMs} ms`).toBeLessThanOrEqual(bound);
    expect(errorReplies.length).toBeGreaterThanOrEqual(ERROR_REPLY_BURST);

    // Log lines while flooded: the two pings' "ok", and the first refusal of each of the 4 codes (malformed,
    // bad-signature, too-large, and the signed but expired ping) at once. No summary yet: it comes once a minute,
    // or at stop.
    expect(REFUSAL_PROMPT_LINES).toBeGreaterThanOrEqual(4);
    const floodLines = commandLines().slice(linesBefore);
    expect(floodLines.filter((l) => / ping ok$/.test(l))).toHaveLength(2);
    for (const code of ["malformed", "bad-signature", "too-large", "expired"]) {
      expect(
        floodLines.filter((l) => l.includes(` refused: ${code}: `)),
        code,
      ).toHaveLength(1);
    }
    expect(floodLines, floodLines.join("\n")).toHaveLength(6);

    // A clean stop writes the summary: every message counted, by code, in one line.
    const exited = new Promise<number | null>((resolve) => agent!.child.once("exit", (code) => resolve(code)));
    agent!.child.kill("SIGTERM");
    expect(await exited).toBe(0);
    const summary = commandLines().filter((l) => / commands: refused /.test(l));
    expect(summary, agent!.log.slice(-2000)).toHaveLength(1);
    const unanswered = FLOOD - errorReplies.length;
    const counts = Object.entries({ ...expected, expired: 1 })
      .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
      .map(([code, n]) => `${n} ${code}`)
      .join(", ");
    expect(summary[0]).toMatch(
      new RegExp(
        `commands: refused ${counts} in the last \\d+ s; ${unanswered} unauthenticated got no error reply \\(rate limit\\)$`,
      ),
    );
    // The whole run: seven command lines for 3,003 commands.
    expect(commandLines().slice(linesBefore)).toHaveLength(7);
  }, 120_000);
});
