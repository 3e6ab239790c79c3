// The health features wired into the agent (agent/agent.ts), in-process against a real mosquitto: the sim board
// opened by the agent itself (its LED files, its watchdog file, a simulated hot CPU), READY/STATUS/STOPPING through
// the real systemd-notify into a socket (socat); and a board with nothing working (no LED, no thermal zone, no
// watchdog) plus a refused store: the agent still starts, reports, and shows "error".
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import mqtt, { type MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openBoard } from "../board/board";
import { HostPaths } from "../board/host-paths";
import { loadConfig } from "../agent/config/config";
import { Agent } from "../agent/agent";
import { LogHub } from "../agent/util/log";
import { Broker } from "./helpers/mosquitto";
import { waiter } from "./helpers/wait";

const FLEET_KEY = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";

let broker: Broker;
let work: string;
let client: MqttClient;
const telemetry: Array<{ deviceId: string; body: Record<string, number> }> = [];
const socats: ChildProcess[] = [];

const waitFor = waiter({ timeoutMs: 20_000, intervalMs: 25 });

function captureLogs(): { hub: LogHub; lines: string[] } {
  const lines: string[] = [];
  return { hub: new LogHub({ write: (l) => lines.push(l.trimEnd()) }, "info"), lines };
}

function env(dir: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    SHARENODE_BROKER: broker.url,
    SHARENODE_STATE: join(dir, "state"),
    SHARENODE_DATA: join(dir, "data"),
    SHARENODE_FLEET_KEY: FLEET_KEY,
    SHARENODE_ALLOW_SYSTEM_DISK: "true",
    SHARENODE_TELEMETRY_INTERVAL: "1",
    // Any free port: other test files' agents serve at the same time.
    SHARENODE_SERVE_BIND: "127.0.0.1",
    SHARENODE_SERVE_PORT: "0",
    ...extra,
  };
}

beforeAll(async () => {
  if (spawnSync("socat", ["-V"], { stdio: "ignore" }).error)
    throw new Error("socat is not installed: apt-get install socat");
  if (spawnSync("systemd-notify", ["--version"], { stdio: "ignore" }).error)
    throw new Error("systemd-notify is not installed: apt-get install systemd");
  work = mkdtempSync(join(tmpdir(), "sharenode-health-agent-"));
  broker = await Broker.start();
  client = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: "health-test" });
  client.on("message", (topic, payload) => {
    const m = /^sharenode\/v1\/([^/]+)\/telemetry$/.exec(topic);
    if (m) telemetry.push({ deviceId: m[1]!, body: JSON.parse(payload.toString()) });
  });
  await client.subscribeAsync("sharenode/v1/+/telemetry", { qos: 1 });
});

afterAll(async () => {
  for (const s of socats) if (s.exitCode === null) s.kill("SIGTERM");
  await client?.endAsync();
  await broker?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("the agent's health wiring", () => {
  it("sim board: LED follows the link, the watchdog file is petted and closed with V, a hot CPU throttles, systemd hears READY and STOPPING", async () => {
    const dir = join(work, "sim");
    mkdirSync(join(dir, "data"), { recursive: true });
    // A hot box from the start: the sim's zone says 80 °C (pause at 75).
    const sim = join(dir, "data", "sim-board");
    mkdirSync(join(sim, "sys/class/thermal/thermal_zone0"), { recursive: true });
    writeFileSync(join(sim, "sys/class/thermal/thermal_zone0/temp"), "80000\n");

    const socket = join(dir, "notify.sock");
    const received = join(dir, "received");
    const socat = spawn("socat", ["-u", `UNIX-RECV:${socket}`, `OPEN:${received},creat,append`], { stdio: "ignore" });
    socats.push(socat);
    await waitFor("the notify socket", () => existsSync(socket) || undefined);
    const notified = () => (existsSync(received) ? readFileSync(received, "utf8") : "");

    const { config } = loadConfig(undefined, env(dir, { SHARENODE_BOARD: "sim" }));
    const { hub, lines } = captureLogs();
    const agent = new Agent(config, {
      logs: hub,
      version: "0.0.0-test",
      env: { ...process.env, NOTIFY_SOCKET: socket },
    });
    const led = (name: string, attr: string) => readFileSync(join(sim, "sys/class/leds", name, attr), "utf8").trim();
    const watchdogFile = join(sim, "dev/watchdog");
    try {
      await agent.start();
      // READY only once everything is up, with the status line and our PID.
      expect(notified()).toContain(`READY=1\nSTATUS=online; store running; throttled (hot)\nMAINPID=${process.pid}`);
      expect(agent.ledStatus).toBe("online");
      expect([led("sim:green:status", "trigger"), led("sim:green:status", "brightness")]).toEqual(["none", "1"]);
      expect(led("sim:red:error", "brightness")).toBe("0");
      expect(readFileSync(watchdogFile, "latin1")).toMatch(/^\0+$/);

      const status = await agent.status();
      expect(status.board).toMatchObject({ name: "sim", led: "online", problems: [] });
      expect(status.health.thermal).toMatchObject({ throttled: true, temperatureC: 80 });
      expect(status.health.limits).toMatchObject({
        throttled: true,
        scrubAllowed: false,
        computeAllowed: false,
        uploadBytesPerSecond: 3_125_000,
        cpuPercent: 50,
      });
      expect(status.health.watchdog).toMatchObject({
        device: "/dev/watchdog",
        timeoutSeconds: 30,
        petIntervalMs: 10_000,
        skipping: undefined,
      });
      expect(status.health.systemd).toMatchObject({ notify: true });
      const t = await waitFor("telemetry", () => telemetry.find((m) => m.deviceId === agent.deviceId));
      expect(t.body.throttled).toBe(1);
      // The byte-rate limiters follow the governor (hot: serving at a quarter of a 100 Mbit/s port, no download
      // limit set); what serving and the tasks count reaches the published telemetry, and the states (receipt lag,
      // tasks queued and running) are read from the server and the queue at each round: nothing open here.
      expect([agent.uploadLimiter.rate, agent.downloadLimiter.rate]).toEqual([3_125_000, null]);
      agent.work.served(1_234);
      agent.work.request();
      agent.work.orderRefused();
      agent.work.setReceiptLag(77);
      agent.work.setTasks(3, 1);
      agent.work.taskFailed();
      expect(agent.serveStats()).toMatchObject({ receiptLagBytes: 0 });
      const w = await waitFor("telemetry with the work counters", () =>
        telemetry.find((m) => m.deviceId === agent.deviceId && m.body.served_bytes === 1_234),
      );
      expect(w.body).toMatchObject({
        requests: 1,
        orders_refused: 1,
        receipt_lag_bytes: 0,
        tasks_queued: 0,
        tasks_running: 0,
        tasks_failed: 1,
      });

      // updating wins while it lasts.
      await agent.setUpdating(true);
      expect(led("sim:green:status", "trigger")).toBe("heartbeat");
      await agent.setUpdating(false);
      expect(led("sim:green:status", "trigger")).toBe("none");

      // The broker goes away: offline (slow blink); it comes back: online.
      await broker.kill();
      await waitFor("the LED offline", () => (agent.ledStatus === "offline" ? true : undefined));
      await waitFor("the LED file blinking", () => (led("sim:green:status", "trigger") === "timer" ? true : undefined));
      await broker.restart();
      await waitFor("the LED online again", () => (agent.ledStatus === "online" ? true : undefined), 30_000);
      await waitFor("the LED file on", () => (led("sim:green:status", "trigger") === "none" ? true : undefined));
    } finally {
      await agent.stop();
    }
    // STOPPING came first thing in the stop; the watchdog was disarmed with the magic character; the LED says offline.
    expect(notified()).toMatch(/STOPPING=1\nSTATUS=stopping/);
    expect(notified().indexOf("STOPPING=1")).toBeGreaterThan(notified().indexOf("READY=1"));
    expect(readFileSync(watchdogFile, "latin1")).toMatch(/^\0+V$/);
    expect(led("sim:green:status", "trigger")).toBe("timer");
    expect(lines.some((l) => /watchdog: petting \/dev\/watchdog every 10 s \(timeout 30 s\)/.test(l))).toBe(true);
    expect(lines.some((l) => /thermal: throttling: 80 °C reached the pause limit 75 °C/.test(l))).toBe(true);
    expect(lines.filter((l) => / (warn|error) (board|watchdog|resources|agent): /.test(l))).toEqual([]);
  }, 90_000);

  it("a board with no LED, no thermal zone and no watchdog, and a refused store: starts, reports, shows error", async () => {
    const dir = join(work, "broken");
    mkdirSync(join(dir, "state"), { recursive: true });
    // The data "directory" is a file: the store refuses it (and stays refused until a restart).
    writeFileSync(join(dir, "data"), "not a directory\n");
    const { config } = loadConfig(undefined, env(dir));
    const { hub, lines } = captureLogs();
    const boardLog = hub.logger("board");
    // A Raspberry Pi profile on a host tree with nothing in it: its LED directory is missing, /dev/watchdog too.
    const emptyRoot = join(dir, "empty-host");
    mkdirSync(emptyRoot);
    const board = await openBoard({ paths: new HostPaths(emptyRoot), name: "rpi", onProblem: (l) => boardLog.warn(l) });
    const agent = new Agent(config, { logs: hub, version: "0.0.0-test", board, env: {} });
    try {
      await agent.start();
      await waitFor("the link", () => (lines.some((l) => /link: connected/.test(l)) ? true : undefined));
      // The store's refusal wins over the link on the LED.
      expect(agent.ledStatus).toBe("error");
      const t = await waitFor("telemetry", () => telemetry.find((m) => m.deviceId === agent.deviceId));
      expect(t.body.throttled).toBe(0);
      expect(t.body).not.toHaveProperty("temp_c");
      const status = await agent.status();
      expect(status.store).toMatchObject({ running: false, code: "not-a-directory" });
      expect(status.board.name).toBe("rpi");
      expect(status.board.led).toBe("error");
      expect(status.board.problems).toEqual(
        expect.arrayContaining([expect.stringMatching(/^cannot open watchdog \/dev\/watchdog: /)]),
      );
      expect(status.health.watchdog).toMatchObject({ device: undefined, pets: 0 });
      expect(status.health.thermal).toMatchObject({ throttled: false, temperatureC: undefined });
      expect(status.health.systemd).toMatchObject({ notify: false });
    } finally {
      await agent.stop();
    }
    // One warning line per problem, each once; the agent said why it runs without a watchdog, and stopped cleanly.
    const warnings = lines.filter((l) => / warn  board: /.test(l));
    expect(warnings.length).toBeGreaterThanOrEqual(2);
    expect(new Set(warnings.map((l) => l.replace(/^\S+ /, ""))).size).toBe(warnings.length);
    expect(warnings.filter((l) => /cannot open watchdog/.test(l))).toHaveLength(1);
    expect(lines.filter((l) => /watchdog: running without a hardware watchdog/.test(l))).toHaveLength(1);
    expect(lines.filter((l) => /thermal: temperature unreadable/.test(l))).toHaveLength(1);
    expect(lines.some((l) => /error agent: store not started: /.test(l))).toBe(true);
    expect(lines.at(-1)).toMatch(/agent: stopped$/);
  }, 60_000);
});
