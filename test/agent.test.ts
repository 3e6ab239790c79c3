// The daemon as it runs on a box: `sharenode run` (the built bundle) against a real mosquitto, commanded and
// watched from the fleet side. Announces itself, sends telemetry, answers signed commands, refuses everything
// else with a signed error reply and keeps running, proves storage, and stops cleanly on SIGTERM.
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import mqtt, { type MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { blake3 } from "../agent/kernels/blake3";
import { loadOrCreateFleetKey, openReply, signCommand, type FleetKey, type Reply } from "../agent/protocol/envelope";
import { topicsFor } from "../agent/protocol/topics";
import { verifyStorageResponse } from "../agent/protocol/storage-proof";
import { AgentProcess } from "./helpers/agent-process";
import { Broker } from "./helpers/mosquitto";
import { waiter } from "./helpers/wait";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "dist/sharenode.js");

let broker: Broker;
let work: string;
let agent: AgentProcess;
let fleet: FleetKey;
let forger: FleetKey;
let client: MqttClient;
let deviceId = "";
let devicePublicKey = "";
const inbox: Array<{ topic: string; payload: Buffer; correlationData?: Buffer }> = [];
/** An object the CLI stores before the agent first starts (the CLI is refused while the agent owns the store). */
const stored = { data: objectBytes(200_000, 31), objectId: "" };

/** `length` bytes of a pattern set by `step`: object contents that differ between tests. */
function objectBytes(length: number, step: number): Uint8Array {
  return new Uint8Array(length).map((_, i) => (i * step) & 0xff);
}

/** `sharenode store add` of `data` into the test's data directory, with the agent stopped. */
function storeAdd(data: Uint8Array, name: string): string {
  const file = join(work, name);
  writeFileSync(file, data);
  const add = spawnSync(
    process.execPath,
    [BIN, "store", "add", file, "--data", join(work, "data"), "--state", join(work, "state"), "--allow-system-disk"],
    { encoding: "utf8" },
  );
  expect(add.stderr).toBe("");
  expect(add.status).toBe(0);
  return Buffer.from(blake3(data)).toString("hex");
}

/** The state messages (births and deaths) received so far, parsed. */
const states = (): Array<{ state: string; bdSeq: number }> =>
  inbox
    .filter((m) => m.topic === topicsFor(deviceId).state)
    .map((m) => JSON.parse(m.payload.toString()) as { state: string; bdSeq: number });

/** The bdSeq counter the agent persisted before its last connection attempt. */
const persistedBdSeq = (): number => Number(readFileSync(join(work, "state", "bdseq"), "utf8"));

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    SHARENODE_BROKER: broker.url,
    SHARENODE_STATE: join(work, "state"),
    SHARENODE_DATA: join(work, "data"),
    SHARENODE_FLEET_KEY: fleet.publicKeyHex,
    SHARENODE_ALLOW_SYSTEM_DISK: "true",
    // The sim board: a test must never arm this machine's own /dev/watchdog (a SIGKILLed agent would reset it).
    SHARENODE_BOARD: "sim",
    // The test broker takes anonymous clients; the password is here to show that it never leaks.
    SHARENODE_MQTT_USERNAME: "device",
    SHARENODE_MQTT_PASSWORD: "s3cret-never-shown",
    ...extra,
  };
}

const waitFor = waiter({
  timeoutMs: 20_000,
  intervalMs: 50,
  detail: () => `agent log:\n${agent?.log.slice(-2000) ?? ""}`,
});

/** Sends a raw command payload with a fresh response topic and returns the verified reply. */
async function command(name: string, payload: Uint8Array): Promise<Reply> {
  const topics = topicsFor(deviceId);
  const responseTopic = topics.replyTo(`t${Math.random().toString(16).slice(2)}`);
  await client.subscribeAsync(responseTopic, { qos: 1 });
  await client.publishAsync(topics.cmd(name), Buffer.from(payload), {
    qos: 1,
    properties: { responseTopic, correlationData: Buffer.from("corr-1") },
  });
  const message = await waitFor(`a reply to ${name}`, () => inbox.find((m) => m.topic === responseTopic));
  expect(message.correlationData?.toString()).toBe("corr-1");
  const opened = openReply(message.payload, { devicePublicKey, deviceId });
  if (!opened.ok) throw new Error(`reply does not verify: ${opened.reason}`);
  return opened.reply;
}

const sign = (
  cmd: string,
  args: Record<string, unknown> = {},
  key: FleetKey = fleet,
  exp = Date.now() + 60_000,
  nonce?: string,
) => signCommand({ cmd, deviceId, args, exp, nonce }, key);

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "sharenode-agent-"));
  mkdirSync(join(work, "data"));
  broker = await Broker.start();
  fleet = await loadOrCreateFleetKey(join(work, "fleet", "device-key.pem"));
  forger = await loadOrCreateFleetKey(join(work, "forger", "device-key.pem"));
  client = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: "fleet-test" });
  client.on("message", (topic, payload, packet) =>
    inbox.push({ topic, payload, correlationData: packet.properties?.correlationData }),
  );
  await client.subscribeAsync(["sharenode/v1/+/state", "sharenode/v1/+/telemetry", "sharenode/v1/+/events"], {
    qos: 1,
  });
  stored.objectId = storeAdd(stored.data, "stored.bin");
  // Subscribed to its commands once started: any test may send one first.
  agent = await AgentProcess.start(BIN, env(), waitFor);
  deviceId = agent.deviceId;
  devicePublicKey = agent.publicKey;
});

afterAll(async () => {
  if (agent?.running) agent.child.kill("SIGKILL");
  await client?.endAsync();
  await broker?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("sharenode run", () => {
  it("announces itself online (retained, with a session number)", async () => {
    const state = await waitFor("the birth", () => states().find((m) => m.state === "online"));
    // The session number the agent persisted before connecting (the broker was up: one attempt, the first).
    expect(state.bdSeq).toBe(persistedBdSeq());
    expect(state.bdSeq).toBe(1);
    // Retained: a consumer that comes later still sees it.
    const late = await mqtt.connectAsync(broker.url, { protocolVersion: 5 });
    const seen: string[] = [];
    late.on("message", (_t, p) => seen.push(p.toString()));
    await late.subscribeAsync(topicsFor(deviceId).state, { qos: 1 });
    await waitFor("the retained state", () => (seen.length > 0 ? seen : undefined));
    expect(JSON.parse(seen[0]!).state).toBe("online");
    await late.endAsync();
  });

  it("publishes telemetry, the first round seconds after start at the default 60 s interval: a flat object of numbers with a sequence number", async () => {
    // 30 s after the device id was logged at most: well inside the first regular round at 60 s.
    const message = await waitFor(
      "telemetry",
      () => inbox.find((m) => m.topic === topicsFor(deviceId).telemetry),
      30_000,
    );
    const t = JSON.parse(message.payload.toString()) as Record<string, unknown>;
    for (const [k, v] of Object.entries(t)) expect(typeof v, k).toBe("number");
    for (const k of [
      "seq",
      "ts",
      "uptime_s",
      "cpu_pct",
      "mem_total_bytes",
      "store_objects",
      "outbox_depth",
      "reconnects",
      "throttled",
    ])
      expect(t).toHaveProperty(k);
    expect(t.seq).toBe(1);
    // The sim board's zone reads 45 °C: not throttled.
    expect(t.throttled).toBe(0);
  }, 35_000);

  it("answers a signed ping, and refuses forged, replayed, expired, malformed, unknown and oversized commands", async () => {
    const ok = await command("ping", sign("ping"));
    expect(ok.ok).toBe(true);
    const refusals: Array<[string, Uint8Array, string]> = [];
    refusals.push(["ping", sign("ping", {}, forger), "bad-signature"]);
    const once = sign("ping", {}, fleet, Date.now() + 60_000, "ab".repeat(16));
    expect((await command("ping", once)).ok).toBe(true);
    refusals.push(["ping", once, "replayed"]);
    refusals.push(["ping", sign("ping", {}, fleet, Date.now() - 1000), "expired"]);
    refusals.push(["ping", Buffer.from("{not json"), "malformed"]);
    refusals.push(["reboot.now", sign("reboot.now"), "unknown-command"]);
    refusals.push(["ping", Buffer.alloc(140_000, 0x20), "too-large"]);
    refusals.push(["status", sign("ping"), "wrong-command"]);
    for (const [name, payload, code] of refusals) {
      const reply = await command(name, payload);
      expect(reply.ok, code).toBe(false);
      if (!reply.ok) expect(reply.error.code).toBe(code);
    }
    // Still running and answering.
    expect((await command("status", sign("status"))).ok).toBe(true);
    expect(agent.running).toBe(true);
  });

  it("answers status, config.get (secrets redacted) and log.tail", async () => {
    const status = await command("status", sign("status"));
    expect(status.ok).toBe(true);
    if (status.ok) {
      expect(status.result).toMatchObject({
        deviceId,
        publicKey: devicePublicKey,
        store: { running: true },
        board: { name: "sim", led: "online" },
        health: {
          thermal: { throttled: false, temperatureC: 45 },
          limits: { scrubAllowed: true },
          watchdog: { device: "/dev/watchdog", petIntervalMs: 10_000 },
        },
      });
    }
    const config = await command("config.get", sign("config.get"));
    expect(config.ok).toBe(true);
    if (config.ok) {
      expect(JSON.stringify(config.result)).not.toContain("s3cret-never-shown");
      expect((config.result as { link: { password: string } }).link.password).toBe("<redacted>");
    }
    expect(agent.log).not.toContain("s3cret-never-shown");
    const tail = await command("log.tail", sign("log.tail", { lines: 5 }));
    expect(tail.ok).toBe(true);
    if (tail.ok) expect((tail.result as { lines: string[] }).lines.length).toBeGreaterThan(0);
    const bad = await command("log.tail", sign("log.tail", { lines: "many" }));
    expect(bad.ok).toBe(false);
  });

  it("proves storage: store.challenge returns a signed response that verifies; a missing object is an error reply", async () => {
    const { data, objectId } = stored;
    const nonce = "11".repeat(32);
    const reply = await command("store.challenge", sign("store.challenge", { objectId, nonce, count: 4 }));
    expect(reply.ok, JSON.stringify(reply)).toBe(true);
    if (!reply.ok) return;
    const expected = { objectId, length: data.length, nonce, count: 4, publicKey: Buffer.from(devicePublicKey, "hex") };
    expect(verifyStorageResponse(reply.result, expected)).toMatchObject({ ok: true });
    // The check is real: the same response does not verify for another challenge, or under another key.
    expect(verifyStorageResponse(reply.result, { ...expected, nonce: "12".repeat(32) })).toMatchObject({ ok: false });
    expect(
      verifyStorageResponse(reply.result, { ...expected, publicKey: Buffer.from(fleet.publicKeyHex, "hex") }),
    ).toMatchObject({ ok: false });

    const absent = objectBytes(200_000, 37);
    const file = join(work, "absent.bin");
    writeFileSync(file, absent);
    // While the agent runs, it owns the store: the CLI is refused (one process per data directory).
    const add = spawnSync(
      process.execPath,
      [BIN, "store", "add", file, "--data", join(work, "data"), "--state", join(work, "state"), "--allow-system-disk"],
      { encoding: "utf8" },
    );
    expect(add.status).toBe(1);
    expect(add.stderr).toMatch(/in use by process/);
    const missing = await command(
      "store.challenge",
      sign("store.challenge", { objectId: Buffer.from(blake3(absent)).toString("hex"), nonce, count: 1 }),
    );
    expect(missing.ok).toBe(false);
    if (!missing.ok) expect(missing.error.code).toBe("not-found");
  });

  it("the fleet CLI: send (device key from the retained birth, or given) and watch", () => {
    const base = ["--broker", broker.url, "--key-dir", join(work, "fleet")];
    const ping = spawnSync(process.execPath, [BIN, "fleet", "send", deviceId, "ping", ...base], { encoding: "utf8" });
    expect(ping.stderr).toBe("");
    expect(ping.status).toBe(0);
    expect(JSON.parse(ping.stdout)).toMatchObject({ pong: true });
    const tail = spawnSync(
      process.execPath,
      [BIN, "fleet", "send", deviceId, "log.tail", "--args", '{"lines":2}', "--device-key", devicePublicKey, ...base],
      { encoding: "utf8" },
    );
    expect(tail.status).toBe(0);
    expect(JSON.parse(tail.stdout).lines).toHaveLength(2);
    // A command the device refuses: exit 1 with the device's code, one line.
    const bad = spawnSync(
      process.execPath,
      [BIN, "fleet", "send", deviceId, "log.tail", "--args", '{"lines":0}', ...base],
      { encoding: "utf8" },
    );
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/^sharenode: fleet send: log.tail refused by the device: bad-args: /);
    // A key that is not the device's is refused before anything is sent.
    const wrongKey = spawnSync(
      process.execPath,
      [BIN, "fleet", "send", deviceId, "ping", "--device-key", "ab".repeat(32), ...base],
      { encoding: "utf8" },
    );
    expect(wrongKey.status).toBe(2);
    const watch = spawnSync(process.execPath, [BIN, "fleet", "watch", "--broker", broker.url, "--duration", "3"], {
      encoding: "utf8",
    });
    expect(watch.status).toBe(0);
    const row = watch.stdout.split("\n").find((l) => l.startsWith(deviceId));
    expect(row, watch.stdout).toMatch(new RegExp(`^${deviceId}\\s+yes\\s`));
  }, 30_000);

  // A service manager may stop the agent at any moment of its start (a slow disk, a broker that answers late). A
  // stop during the start once left the steps after the signal running with nothing to stop them: the process never
  // exited (a CI run's 60 s timeout in ota.test.ts).
  it.each([
    ["its device is known", /agent: device /],
    ["its board is open", /board: sim/],
    ["the link connected", /link: connected/],
    ["it started", /agent: started/],
  ])(
    "SIGTERM just after %s: a clean stop, exit 0",
    async (_step, line) => {
      const home = mkdtempSync(join(work, "start-stop-"));
      const child = spawn(process.execPath, [BIN, "run"], {
        env: env({
          SHARENODE_STATE: join(home, "state"),
          SHARENODE_DATA: join(home, "data"),
          SHARENODE_SERVE_PORT: "0",
        }),
        stdio: ["ignore", "pipe", "pipe"],
      });
      let log = "";
      let signalled = false;
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
      const collect = (d: Buffer) => {
        log += d.toString();
        if (!signalled && line.test(log)) {
          signalled = true;
          child.kill("SIGTERM");
        }
      };
      child.stdout.on("data", collect);
      child.stderr.on("data", collect);
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      const code = await exited;
      clearTimeout(timer);
      expect(signalled, log).toBe(true);
      expect(code, log).toBe(0);
      expect(log).toMatch(/agent: SIGTERM: stopping/);
      expect(log).toMatch(/agent: stopped\n/);
    },
    30_000,
  );

  it("stops cleanly on SIGTERM: publishes offline itself and exits 0; then an object added meanwhile can be challenged", async () => {
    const birth = await waitFor("the birth", () =>
      states()
        .filter((m) => m.state === "online")
        .at(-1),
    );
    const exited = new Promise<number | null>((resolve) => agent.child.once("exit", (code) => resolve(code)));
    agent.child.kill("SIGTERM");
    expect(await exited).toBe(0);
    // The sim board's watchdog file: pets (NUL bytes), then the magic close of a clean stop.
    expect(readFileSync(join(work, "data", "sim-board", "dev", "watchdog"), "latin1")).toMatch(/^\0+V$/);
    const offline = await waitFor("the offline state", () => states().find((m) => m.state === "offline"));
    // The death carries the session number of the birth it ends, the one persisted before that connection.
    expect(offline.bdSeq).toBe(birth.bdSeq);
    expect(offline.bdSeq).toBe(persistedBdSeq());
    // With the agent stopped, the CLI can add; a restarted agent proves the object over MQTT.
    const data = objectBytes(200_000, 41);
    const objectId = storeAdd(data, "added-while-stopped.bin");
    agent = await AgentProcess.start(BIN, env(), waitFor);
    expect(agent.deviceId).toBe(deviceId);
    // A new session: the next number, persisted before it connected.
    const rebirth = await waitFor("the new birth", () =>
      states().find((m) => m.state === "online" && m.bdSeq > offline.bdSeq),
    );
    expect(rebirth.bdSeq).toBe(persistedBdSeq());
    expect(rebirth.bdSeq).toBe(offline.bdSeq + 1);
    const nonce = "22".repeat(32);
    const reply = await command("store.challenge", sign("store.challenge", { objectId, nonce, count: 4 }));
    expect(reply.ok).toBe(true);
    if (reply.ok) {
      const verdict = verifyStorageResponse(reply.result, {
        objectId,
        length: data.length,
        nonce,
        count: 4,
        publicKey: Buffer.from(devicePublicKey, "hex"),
      });
      expect(verdict).toMatchObject({ ok: true });
    }
  }, 60_000);

  it("refuses a bad config with every problem at once, one line each, exit 2", () => {
    const file = join(work, "bad.json");
    writeFileSync(
      file,
      JSON.stringify({
        link: { url: "http://x", protocolVersion: 6, keepaliveSeconds: -1 },
        store: { quota: "200%" },
        colour: "blue",
      }),
    );
    const r = spawnSync(process.execPath, [BIN, "run", "--config", file], {
      encoding: "utf8",
      env: { PATH: process.env.PATH },
    });
    expect(r.status).toBe(2);
    const lines = r.stderr.trimEnd().split("\n");
    expect(lines.length).toBeGreaterThanOrEqual(5);
    for (const line of lines) expect(line).toMatch(/^sharenode: config: /);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});
