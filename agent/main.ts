// The composition root: builds every feature from the config, wires their events, and starts and stops them in
// order. The only place that knows all the features; they do not import each other (the store does not know
// MQTT exists: its events reach the link's outbox through here).
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { HostPaths } from "../board/host-paths.js";
import { redactConfig, type Config } from "./config/config.js";
import { PidLock } from "./durable/pid-lock.js";
import { loadOrCreateDeviceIdentity, type DeviceIdentity } from "./identity/device-key.js";
import { CommandGate, type CommandHandler } from "./link/commands.js";
import { MqttLink } from "./link/mqtt-link.js";
import { Outbox } from "./link/outbox.js";
import { parseTopic, topicsFor } from "./protocol/topics.js";
import { answerChallenge, parseChallenge } from "./protocol/storage-proof.js";
import { checkDataDisk } from "./store/disk-marker.js";
import { defaultReserveBytes, ObjectStore } from "./store/object-store.js";
import { Scrubber } from "./store/scrub.js";
import { TelemetryCollector } from "./telemetry/collector.js";
import type { LogHub, Logger } from "./util/log.js";

export interface AgentDeps {
  logs: LogHub;
  version: string;
  /** Where /proc, /sys and /dev are (the sim board points this at a fake tree). */
  hostPaths?: HostPaths;
  now?: () => number;
}

/** Why the store is not running, for `status` and telemetry; undefined when it runs. */
interface StoreRefusal {
  code: string;
  reason: string;
}

/** A handler's error with a code, which the command gate turns into an error reply. */
class CommandFailure extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export class Agent {
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly hostPaths: HostPaths;
  private readonly startedAt: number;
  private identity!: DeviceIdentity;
  private store: ObjectStore | undefined;
  private storeRefusal: StoreRefusal | undefined;
  private link!: MqttLink;
  private outbox!: Outbox;
  private gate!: CommandGate;
  private collector!: TelemetryCollector;
  private readonly timers: NodeJS.Timeout[] = [];
  private scrubber: Scrubber | undefined;
  private proofsPassed = 0;
  private proofsFailed = 0;
  private stopping: Promise<void> | undefined;
  private stateLock: PidLock | undefined;

  constructor(
    readonly config: Config,
    private readonly deps: AgentDeps,
  ) {
    this.log = deps.logs.logger("agent");
    this.now = deps.now ?? Date.now;
    this.hostPaths = deps.hostPaths ?? new HostPaths();
    this.startedAt = this.now();
  }

  get deviceId(): string {
    return this.identity.deviceId;
  }

  async start(): Promise<void> {
    const { config, deps } = this;
    await mkdir(config.stateDir, { recursive: true, mode: 0o700 });
    // One agent per state directory: two would interleave the outbox and nonce logs.
    this.stateLock = new PidLock(join(config.stateDir, "agent.lock"), `the agent state in ${config.stateDir}`);
    await this.stateLock.acquire();
    this.identity = await loadOrCreateDeviceIdentity(config.stateDir);
    this.log.info(`device ${this.identity.deviceId} (public key ${this.identity.publicKeyHex}), sharenode ${deps.version}`);
    await this.startStore();
    const topics = topicsFor(this.identity.deviceId);
    const linkLog = deps.logs.logger("link");
    this.link = new MqttLink({
      url: config.link.url,
      deviceId: this.identity.deviceId,
      protocolVersion: config.link.protocolVersion,
      username: config.link.username,
      password: config.link.password,
      ca: await readOptional(config.link.ca),
      cert: await readOptional(config.link.cert),
      key: await readOptional(config.link.key),
      keepaliveSeconds: config.link.keepaliveSeconds,
      version: deps.version,
      publicKeyHex: this.identity.publicKeyHex,
      stateDir: config.stateDir,
      log: linkLog,
    });
    this.outbox = new Outbox({
      path: join(config.stateDir, "outbox.log"),
      deviceId: this.identity.deviceId,
      publisher: this.link,
      maxBytes: config.link.outboxMaxBytes,
      log: deps.logs.logger("outbox"),
    });
    await this.outbox.start();
    this.gate = new CommandGate({
      deviceId: this.identity.deviceId,
      fleetPublicKey: config.link.fleetPublicKey,
      nonceLogPath: join(config.stateDir, "nonces.log"),
      clock: this.now,
      signer: this.identity,
    });
    await this.gate.start();
    const handlers = this.commandHandlers();
    const cmdLog = deps.logs.logger("commands");
    this.link.onMessage(async (topic, payload, packet) => {
      const handled = await this.gate.handle(topic, payload, handlers);
      cmdLog.info(`${handled.cmd ?? "?"} ${handled.ok ? "ok" : `refused: ${handled.code}`}`);
      // A response topic is honoured only under the device's own reply namespace: the ACL allows nothing else.
      const asked = parseTopic(packet.properties?.responseTopic);
      const replyTopic = asked?.kind === "reply" && asked.deviceId === this.identity.deviceId ? packet.properties!.responseTopic! : topics.reply;
      const correlationData = packet.properties?.correlationData;
      await this.link
        .publish(replyTopic, handled.replyPayload, { qos: 1, retain: false, properties: correlationData ? { correlationData } : undefined })
        .catch((err: Error) => cmdLog.warn(`reply to ${handled.cmd ?? "?"} not delivered: ${err.message}`));
    });
    await this.link.start();
    this.collector = new TelemetryCollector({
      paths: this.hostPaths,
      dataDir: this.store ? config.store.dataDir : undefined,
      now: this.now,
      sources: [{ telemetryCounters: () => this.counters() }],
      onSourceError: (err) => this.log.warn(`telemetry counter source failed: ${(err as Error).message}`),
    });
    await this.collector.start();
    this.every(config.link.telemetryIntervalSeconds * 1000, () => this.publishTelemetry());
    if (this.store && config.store.scrubBytesPerSecond > 0) this.scheduleScrub(this.store);
    this.log.info("started");
  }

  /** Stops everything in the reverse order; safe to call twice. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      for (const t of this.timers) clearInterval(t);
      this.scrubber?.stop();
      await this.collector?.stop().catch(() => {});
      // Give records in flight a moment to be acknowledged, so a restart does not send them again.
      await Promise.race([this.outbox?.idle(), new Promise((resolve) => setTimeout(resolve, 2000).unref())]).catch(() => {});
      await this.link?.stop().catch((err: Error) => this.log.warn(`link stop: ${err.message}`));
      await this.gate?.stop().catch(() => {});
      await this.outbox?.stop().catch(() => {});
      await this.store?.stop().catch((err: Error) => this.log.warn(`store stop: ${err.message}`));
      await this.stateLock?.release();
      this.log.info("stopped");
    })();
    return this.stopping;
  }

  private async startStore(): Promise<void> {
    const { config } = this;
    const check = await checkDataDisk(
      { dataDir: config.store.dataDir, stateDir: config.stateDir, nodeId: this.identity.deviceId, allowSystemDisk: config.store.allowSystemDisk },
      this.hostPaths,
    );
    if (!check.ok) {
      // The agent runs on without a store (it still reports, and says why in status and logs): never store on
      // the wrong disk.
      this.storeRefusal = { code: check.code, reason: check.reason };
      this.log.error(`store not started: ${check.reason}`);
      return;
    }
    const size = check.filesystem.size ?? 0;
    const store = new ObjectStore({
      dataDir: check.dataDir,
      quota: config.store.quota,
      reserveBytes: config.store.reserveBytes ?? defaultReserveBytes(size),
    }, { now: this.now });
    const storeLog = this.deps.logs.logger("store");
    store.on("recovered", (e) => storeLog.warn(e.message));
    store.on("object-added", (o) => void this.event({ type: "object-added", id: o.id, length: o.length }));
    store.on("object-removed", (e) => void this.event({ type: "object-removed", id: e.id, reason: e.reason }));
    store.on("quota-near", (e) => void this.event({ type: "quota-near", ...e }));
    store.on("disk-low", (e) => void this.event({ type: "disk-low", ...e }));
    try {
      await store.start();
      this.store = store;
      this.log.info(`store on ${check.dataDir} (${check.filesystem.fstype}, ${check.adopted} disk)`);
    } catch (err) {
      this.storeRefusal = { code: "start-failed", reason: (err as Error).message };
      this.log.error(`store not started: ${(err as Error).message}`);
      await store.stop().catch(() => {});
    }
  }

  private scheduleScrub(store: ObjectStore): void {
    const scrubLog = this.deps.logs.logger("scrub");
    const scrubber = new Scrubber(store, { bytesPerSecond: this.config.store.scrubBytesPerSecond });
    this.scrubber = scrubber;
    let running = false;
    // A pass a day is plenty for bit rot; the pacing keeps each pass from competing with serving.
    this.every(24 * 3600 * 1000, async () => {
      if (running) return;
      running = true;
      try {
        const r = await scrubber.runOnce();
        scrubLog.info(`checked ${r.checked} objects (${r.bytes} bytes); corrupt ${r.corrupt.length}, missing ${r.missing.length}`);
      } catch (err) {
        scrubLog.error(`scrub failed: ${(err as Error).message}`);
      } finally {
        running = false;
      }
    });
  }

  private every(ms: number, fn: () => unknown): void {
    const t = setInterval(() => void Promise.resolve().then(fn).catch((err: Error) => this.log.error(err.message)), ms);
    t.unref();
    this.timers.push(t);
  }

  private async event(body: Record<string, unknown>): Promise<void> {
    try {
      await this.outbox.enqueue("events", body);
    } catch (err) {
      this.log.error(`event ${String(body.type)} not queued: ${(err as Error).message}`);
    }
  }

  private async publishTelemetry(): Promise<void> {
    const sample = await this.collector.collect();
    await this.outbox.enqueue("telemetry", sample);
  }

  private async counters() {
    const status = this.store ? await this.store.status() : undefined;
    return {
      store_objects: status?.objects ?? 0,
      store_used_bytes: status?.usedBytes ?? 0,
      proofs_passed: this.proofsPassed,
      proofs_failed: this.proofsFailed,
      outbox_depth: this.outbox.depth,
      outbox_bytes: this.outbox.bytes,
      reconnects: this.link.stats.reconnects,
    };
  }

  async status(): Promise<Record<string, unknown>> {
    return {
      deviceId: this.identity.deviceId,
      publicKey: this.identity.publicKeyHex,
      version: this.deps.version,
      uptimeSeconds: Math.floor((this.now() - this.startedAt) / 1000),
      link: { connected: this.link.connected, ...this.link.stats },
      outbox: this.outbox.stats,
      store: this.store ? { running: true, ...(await this.store.status()) } : { running: false, ...this.storeRefusal },
    };
  }

  private commandHandlers(): Record<string, CommandHandler> {
    return {
      ping: async () => ({ pong: true, ts: this.now() }),
      status: async () => this.status(),
      "config.get": async () => redactConfig(this.config),
      "log.tail": async (args) => {
        const lines = args.lines === undefined ? 50 : args.lines;
        if (typeof lines !== "number" || !Number.isInteger(lines) || lines < 1 || lines > 500) {
          throw new CommandFailure("bad-args", "lines must be an integer 1..500");
        }
        return { lines: this.deps.logs.tail(lines) };
      },
      "store.challenge": async (args) => {
        const store = this.store;
        if (!store) throw new CommandFailure("store-unavailable", this.storeRefusal?.reason ?? "the store is not running");
        let challenge;
        try {
          challenge = parseChallenge(args);
        } catch (err) {
          throw new CommandFailure("bad-args", (err as Error).message);
        }
        let object;
        try {
          object = await store.openForProof(challenge.objectId);
        } catch (err) {
          this.proofsFailed++;
          throw new CommandFailure((err as { code?: string }).code ?? "io", (err as Error).message);
        }
        try {
          const response = await answerChallenge(challenge, object, this.identity, this.now);
          this.proofsPassed++;
          return response;
        } catch (err) {
          this.proofsFailed++;
          throw new CommandFailure("challenge-failed", (err as Error).message);
        } finally {
          await object.close();
        }
      },
    };
  }
}

async function readOptional(path: string | undefined): Promise<string | undefined> {
  return path === undefined ? undefined : readFile(path, "utf8");
}

