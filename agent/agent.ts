// The composition root: builds every feature from the config, wires their events, and starts and stops them in
// order. The only place that knows all the features; they do not import each other (the store does not know
// MQTT exists: its events reach the link's outbox through here).
import { createReadStream } from "node:fs";
import { availableParallelism } from "node:os";
import { Readable } from "node:stream";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { openBoard, type Board, type StatusPattern } from "../board/board.js";
import { HostPaths } from "../board/host-paths.js";
import { redactConfig, type Config } from "./config/config.js";
import { ControlServer } from "./console/control.js";
import { AGENT_LOCK_FILE, PidLock } from "./durable/pid-lock.js";
import { ByteRateLimiter, followRate } from "./health/byte-rate.js";
import { ResourceGovernor, type ResourceLimits } from "./health/resource-policy.js";
import { SdNotify } from "./health/sd-notify.js";
import { ThermalGovernor } from "./health/thermal-governor.js";
import { monotonicNow } from "./health/timers.js";
import { WatchdogKeeper } from "./health/watchdog-keeper.js";
import { loadOrCreateDeviceIdentity, type DeviceIdentity } from "./identity/device-key.js";
import { Fetcher } from "./fetch/fetcher.js";
import { CommandGate, type CommandHandler, CommandRefused } from "./link/command-gate.js";
import { MqttLink } from "./link/mqtt-link.js";
import { Outbox } from "./link/outbox.js";
import { parseTopic, topicsFor } from "./protocol/topics.js";
import type { DaemonStatus, ScrubSummary } from "./protocol/daemon-status.js";
import { AUTO_DATA_DIR, resolveAutoDataDir, simBoardRoot } from "./store/auto-data-dir.js";
import { hostDiskDiscovery } from "./store/disk-discovery.js";
import { checkDataDisk } from "./store/disk-marker.js";
import { defaultReserveBytes, ObjectStore } from "./store/object-store.js";
import { ChallengeResponder, ProofLedger } from "./store/proofs.js";
import { Scrubber } from "./store/scrub.js";
import { OrderGate } from "./serve/order-gate.js";
import { ReceiptBook } from "./serve/receipt-book.js";
import { ObjectServer, type ServeStats } from "./serve/server.js";
import { TaskQueue } from "./tasks/task-queue.js";
import { ComputeQueue, TASK_NICE, type ObjectRef } from "./compute/queue.js";
import { Sandbox, sharedBytes } from "./compute/sandbox.js";
import { Ledger } from "./ledger/ledger.js";
import { LedgerKeeper } from "./ledger/keeper.js";
import { ledgerReceipts, ledgerRecords } from "./ledger/audit.js";
import { SettlementBook } from "./ledger/settlements.js";
import { clockSynced } from "../board/clock.js";
import { TelemetryCollector } from "./telemetry/collector.js";
import { OtaStateStore } from "./ota/state.js";
import { OtaUpdater, type ObjectFetch } from "./ota/updater.js";
import type { RunningRelease } from "./ota/slots.js";
import { blake3 } from "./kernels/blake3.js";
import { toHex } from "./util/hex.js";
import { WorkCounters } from "./telemetry/work-counters.js";
import type { LogHub, Logger } from "./util/log.js";
import { errorLine } from "./util/errors.js";

export interface AgentDeps {
  logs: LogHub;
  version: string;
  /** Where /proc, /sys and /dev are (the sim board points this at a fake tree). */
  hostPaths?: HostPaths;
  now?: () => number;
  /** The board (status LED, temperature, hardware watchdog); absent: opened from config `board`. */
  board?: Board;
  /** Where NOTIFY_SOCKET and WATCHDOG_USEC come from (default process.env). */
  env?: Record<string, string | undefined>;
  /** The release that runs (agent/ota/slots.ts): a slot of a release tree, or none (a checkout, a test). */
  release?: RunningRelease;
  /**
   * Stops the agent and exits with RESTART_EXIT_STATUS, so that the launcher starts the release `current` names
   * (an update switched to, a rollback asked for). Absent (tests): the request is only logged.
   */
  restart?: (reason: string) => void;
}

/** A telemetry round (collect, then enqueue) running longer than this means a hung disk or filesystem. */
const TELEMETRY_STUCK_MS = 120_000;
/** When the first telemetry round runs after start, if the interval is longer. */
const FIRST_TELEMETRY_MS = 5_000;

/** Why the store is not running, for `status` and telemetry; undefined when it runs. */
interface StoreRefusal {
  code: string;
  reason: string;
}

/** What start() throws when stop() was asked for before it finished: not a failure, a stop. */
export class AgentStopped extends Error {
  constructor() {
    super("stopped before it had started");
    this.name = "AgentStopped";
  }
}

export class Agent {
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly hostPaths: HostPaths;
  private readonly startedAt: number;
  private identity!: DeviceIdentity;
  private store: ObjectStore | undefined;
  /** The store's directory once it runs (`store.dataDir`, or the disk "auto" found). */
  private dataDir: string | undefined;
  private storeRefusal: StoreRefusal | undefined;
  private link!: MqttLink;
  private outbox!: Outbox;
  private gate!: CommandGate;
  private collector!: TelemetryCollector;
  private readonly timers: NodeJS.Timeout[] = [];
  private scrubber: Scrubber | undefined;
  /** Fetch tasks from the fleet (task.fetch); undefined while the store does not run. */
  private tasks: TaskQueue | undefined;
  /** Compute tasks from the fleet (compute.run); undefined without a store or a ledger. */
  private compute: ComputeQueue | undefined;
  /** The compute tasks' worker threads (warm between tasks). */
  private sandbox: Sandbox | undefined;
  private fetcher: Fetcher | undefined;
  /** Storage-proof counters and the last challenges answered (telemetry, `status`, the console's `proofs`). */
  private readonly proofs = new ProofLedger();
  private lastScrub: ScrubSummary | undefined;
  /** The local socket the console (`sharenode console`) reads a running daemon through. */
  private control: ControlServer | undefined;
  private stopping: Promise<void> | undefined;
  /** The start in progress or done: stop() lets it settle first, so nothing it starts outlives the stop. */
  private starting: Promise<void> | undefined;
  /** Set by stop(): a start still in progress gives up at its next step (AgentStopped). */
  private stopAsked = false;
  private stateLock: PidLock | undefined;
  private board!: Board;
  private thermal: ThermalGovernor | undefined;
  private resources: ResourceGovernor | undefined;
  private watchdog: WatchdogKeeper | undefined;
  private systemd: SdNotify | undefined;
  /** The link as the LED shows it: "booting" until the first connection attempt ends. */
  private linkState: "booting" | "online" | "offline" = "booting";
  private updating = false;
  /** Set by stop(): the LED shows "offline" from then on. */
  private halted = false;
  private ledShown: StatusPattern | undefined;
  private ledWrites: Promise<void> = Promise.resolve();
  // --- serving (agent/serve): the HTTP server, its order gate and the receipt book ---
  private server: ObjectServer | undefined;
  private receipts: ReceiptBook | undefined;
  private ledger: Ledger | undefined;
  private ledgerKeeper: LedgerKeeper | undefined;
  private settlements: SettlementBook | undefined;
  /** Monotonic start of the telemetry round in flight, if one is. */
  private telemetryRoundSince: number | undefined;
  /** Updates over the air (agent/ota). */
  private ota: OtaUpdater | undefined;
  /** Whether the link has been up since this start: a release on trial must reach the broker. */
  private connectedOnce = false;
  /** Tasks fetching release files for the updater, by object id: settled by the task events. */
  private readonly objectWaiters = new Map<string, Array<{ resolve: () => void; reject: (err: Error) => void }>>();

  // --- the owner's byte rates and the work counters (issue 11: limits) -----------------------------------------
  // Made in the constructor, so whatever start() builds (the server, the fetcher, the task queue) can take them;
  // they follow the resource governor (window, thermal state) once it runs (startResources).
  /** Every byte the box serves, all connections together: `share.uploadBytesPerSecond` and its windows. */
  readonly uploadLimiter: ByteRateLimiter;
  /** Every byte the box fetches, all connections together: `share.downloadBytesPerSecond` and its windows. */
  readonly downloadLimiter: ByteRateLimiter;
  /** Serving and tasks report here (ServeCounters, TaskCounters); telemetry reads it. */
  readonly work = new WorkCounters();
  private unfollowRates: Array<() => void> = [];
  // --- end of the limits block ------------------------------------------------------------------------------------

  constructor(
    readonly config: Config,
    private readonly deps: AgentDeps,
  ) {
    this.log = deps.logs.logger("agent");
    this.now = deps.now ?? Date.now;
    this.hostPaths = deps.hostPaths ?? new HostPaths();
    this.startedAt = this.now();
    // The rates of the window that applies now (the governor, not started, only reads the config and the clock):
    // right from the first byte, before the thermal state is known.
    const initial = new ResourceGovernor({
      share: config.share,
      diskQuota: config.store.quota,
      now: this.now,
    }).limits();
    this.uploadLimiter = new ByteRateLimiter({ rate: initial.uploadBytesPerSecond });
    this.downloadLimiter = new ByteRateLimiter({ rate: initial.downloadBytesPerSecond });
  }

  get deviceId(): string {
    return this.identity.deviceId;
  }

  /**
   * Starts everything; once only. A stop() asked for meanwhile (a SIGTERM while a slow disk or broker holds the
   * start) ends it at its next step with AgentStopped, and the stop then tears down what had started.
   */
  start(): Promise<void> {
    this.starting ??= this.startSteps();
    return this.starting;
  }

  /** Throws AgentStopped once stop() was asked for: between the steps of start(). */
  private stillStarting(): void {
    if (this.stopAsked) throw new AgentStopped();
  }

  private async startSteps(): Promise<void> {
    const { config, deps } = this;
    await mkdir(config.stateDir, { recursive: true, mode: 0o700 });
    // One agent per state directory: two would interleave the outbox and nonce logs.
    this.stateLock = new PidLock(join(config.stateDir, AGENT_LOCK_FILE), `the agent state in ${config.stateDir}`);
    await this.stateLock.acquire();
    this.stillStarting();
    this.identity = await loadOrCreateDeviceIdentity(config.stateDir);
    this.log.info(
      `device ${this.identity.deviceId} (public key ${this.identity.publicKeyHex}), sharenode ${deps.version}`,
    );
    await this.startBoard();
    this.stillStarting();
    await this.startStore();
    this.stillStarting();
    await this.startServe();
    this.stillStarting();
    await this.refreshLed();
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
      release: { build: deps.release?.build ?? 0, slot: deps.release?.slot ?? null },
      publicKeyHex: this.identity.publicKeyHex,
      stateDir: config.stateDir,
      serveUrls: this.server?.urls(),
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
    this.stillStarting();
    const cmdLog = deps.logs.logger("commands");
    this.gate = new CommandGate({
      deviceId: this.identity.deviceId,
      fleetPublicKey: config.link.fleetPublicKey,
      nonceLogPath: join(config.stateDir, "nonces.log"),
      clock: this.now,
      signer: this.identity,
      // The gate logs refusals, summarized: a line per message would let anyone on the broker flood the log.
      log: cmdLog,
    });
    await this.gate.start();
    this.stillStarting();
    const handlers = this.commandHandlers();
    this.link.onMessage(async (topic, payload, packet) => {
      const handled = await this.gate.handle(topic, payload, handlers);
      if (handled.ok) cmdLog.info(`${handled.cmd ?? "?"} ok`);
      // No reply: an unauthenticated message past the error-reply rate limit (agent/link/flood-guard.ts).
      if (handled.replyPayload === null) return;
      // A response topic is honoured only under the device's own reply namespace: the ACL allows nothing else.
      const asked = parseTopic(packet.properties?.responseTopic);
      const replyTopic =
        asked?.kind === "reply" && asked.deviceId === this.identity.deviceId
          ? packet.properties!.responseTopic!
          : topics.reply;
      const correlationData = packet.properties?.correlationData;
      await this.link
        .publish(replyTopic, handled.replyPayload, {
          qos: 1,
          retain: false,
          properties: correlationData ? { correlationData } : undefined,
        })
        .catch((err: Error) => cmdLog.warn(`reply to ${handled.cmd ?? "?"} not delivered: ${err.message}`));
    });
    this.link.on("connected", () => this.onLink("online"));
    this.link.on("disconnected", () => this.onLink("offline"));
    // Before the link: ota.status is answered from the first command on.
    await this.startOta();
    this.stillStarting();
    await this.link.start();
    this.stillStarting();
    this.collector = new TelemetryCollector({
      paths: this.hostPaths,
      dataDir: this.store ? this.dataDir : undefined,
      now: this.now,
      sources: [
        { telemetryCounters: () => this.counters() },
        {
          // Receipt lag and the task queue's depth are states, read at each round; the rest are counted as they
          // happen.
          telemetryCounters: () => {
            this.work.setReceiptLag(this.server?.stats().receiptLagBytes ?? 0);
            const tasks = this.tasks?.stats();
            this.work.setTasks(tasks?.queued ?? 0, tasks?.running ?? 0);
            return { ...this.work.telemetryCounters(), ...this.computeCounters() };
          },
        },
        { telemetryCounters: () => this.ledgerCounters() },
      ],
      temperature: () => this.board.readTemperatureC(),
      onSourceError: (err) => this.log.warn(`telemetry counter source failed: ${errorLine(err)}`),
    });
    await this.collector.start();
    this.stillStarting();
    await this.startResources();
    this.stillStarting();
    await this.startTasks();
    this.stillStarting();
    await this.startLedger();
    this.stillStarting();
    await this.startCompute();
    this.stillStarting();
    const telemetryMs = config.link.telemetryIntervalSeconds * 1000;
    // One early round: a box that has just started shows its numbers (fleet watch, the exporter) within seconds
    // rather than a whole interval later; a few seconds give cpu_pct ticks to measure.
    if (telemetryMs > FIRST_TELEMETRY_MS) this.after(FIRST_TELEMETRY_MS, () => this.publishTelemetry());
    this.every(telemetryMs, () => this.publishTelemetry());
    if (this.store && config.store.scrubBytesPerSecond > 0) this.scheduleScrub(this.store);
    await this.startControl();
    this.stillStarting();
    await this.startSupervision();
    this.stillStarting();
    this.log.info("started");
    // Last: taking up an update may restart the agent at once (a switch a power cut interrupted).
    await this.ota
      ?.start()
      .catch((err: unknown) => this.deps.logs.logger("ota").error(`update not taken up: ${errorLine(err)}`));
  }

  /** What the status LED shows now. */
  get ledStatus(): StatusPattern {
    return this.ledPattern();
  }

  /**
   * Shows "updating" on the status LED while `active` (agent/ota: while a release is fetched and written): it wins
   * over every other pattern, so nobody pulls the plug during an update.
   */
  async setUpdating(active: boolean): Promise<void> {
    this.updating = active;
    await this.refreshLed();
  }

  /** Stops everything in the reverse order; safe to call twice. */
  stop(): Promise<void> {
    this.stopAsked = true;
    this.stopping ??= (async () => {
      // A start in progress ends at its next step; whatever it had started is torn down below.
      await this.starting?.catch(() => {});
      // First what started last: systemd hears STOPPING (no watchdog kill during a slow stop), the hardware
      // watchdog is disarmed.
      await this.systemd?.stopping().catch(() => {});
      await this.watchdog?.stop().catch(() => {});
      await this.control?.stop().catch(() => {});
      for (const t of this.timers) clearInterval(t);
      for (const unfollow of this.unfollowRates) unfollow();
      // Serving stops before the store it reads and the receipt book it writes.
      await this.server?.stop().catch(() => {});
      await this.receipts?.stop().catch((err: Error) => this.log.warn(`receipt book stop: ${err.message}`));
      this.ota?.stop();
      for (const waiters of this.objectWaiters.values())
        for (const w of waiters) w.reject(new Error("the agent is stopping"));
      this.objectWaiters.clear();
      this.resources?.stop();
      this.thermal?.stop();
      this.scrubber?.stop();
      // Before the store: a task in its last step is ingesting into it.
      // Before the task queue (a compute task may wait on a fetch) and the ledger (its results are recorded there).
      await this.compute?.stop().catch((err: Error) => this.log.warn(`compute stop: ${err.message}`));
      await this.sandbox?.close();
      await this.tasks?.stop().catch((err: Error) => this.log.warn(`tasks stop: ${err.message}`));
      await this.ledgerKeeper?.stop().catch(() => {});
      await this.ledger?.close().catch((err: Error) => this.log.warn(`ledger close: ${err.message}`));
      await this.settlements?.stop().catch(() => {});
      this.fetcher?.close();
      await this.collector?.stop().catch(() => {});
      // Give records in flight a moment to be acknowledged, so a restart does not send them again.
      await Promise.race([this.outbox?.idle(), new Promise((resolve) => setTimeout(resolve, 2000).unref())]).catch(
        () => {},
      );
      await this.link?.stop().catch((err: Error) => this.log.warn(`link stop: ${err.message}`));
      // Not serving any more: whatever the LED showed, the box is now offline.
      this.halted = true;
      await this.refreshLed();
      await this.gate?.stop().catch(() => {});
      await this.outbox?.stop().catch(() => {});
      await this.store?.stop().catch((err: Error) => this.log.warn(`store stop: ${err.message}`));
      await this.stateLock?.release();
      this.log.info("stopped");
    })();
    return this.stopping;
  }

  private async startBoard(): Promise<void> {
    const boardLog = this.deps.logs.logger("board");
    this.board =
      this.deps.board ??
      (await openBoard({
        paths: this.hostPaths,
        name: this.config.board,
        simRoot: simBoardRoot(this.config.store.dataDir, this.config.stateDir),
        onProblem: (line) => boardLog.warn(line),
      }));
    boardLog.info(`${this.board.name}: ${this.board.description} (${this.board.detectedBy})`);
  }

  /** The thermal governor and the owner's share policy; their changes gate the scrub and go to systemd's status. */
  private async startResources(): Promise<void> {
    const { deps, config } = this;
    this.thermal = new ThermalGovernor({ board: this.board, log: deps.logs.logger("thermal") });
    await this.thermal.start();
    const resourceLog = deps.logs.logger("resources");
    this.resources = new ResourceGovernor({
      share: config.share,
      diskQuota: config.store.quota,
      thermal: this.thermal,
      onListenerError: (err) => resourceLog.error(`a limits listener failed: ${errorLine(err)}`),
    });
    this.resources.on("change", (limits) => this.onLimits(limits));
    this.resources.start();
    this.unfollowRates = [
      followRate(this.uploadLimiter, this.resources, (l) => l.uploadBytesPerSecond),
      followRate(this.downloadLimiter, this.resources, (l) => l.downloadBytesPerSecond),
    ];
    resourceLog.info(this.resources.limits().reason);
  }

  /**
   * The console's window on the running daemon. A failure (a socket path another process answers on, a read-only
   * state dir) costs only the live view: the console then reads the state and data directories itself.
   */
  private async startControl(): Promise<void> {
    const { deps, config } = this;
    const controlLog = deps.logs.logger("control");
    const control = new ControlServer({
      stateDir: config.stateDir,
      onError: (message) => controlLog.warn(message),
      handlers: {
        status: () => this.status(),
        logTail: (n) => deps.logs.tail(n),
        onLog: (listener) => deps.logs.subscribe(listener),
        proofs: () => this.proofs.snapshot(),
        compute: () => this.computeOrRefuse().list(),
        ota: (request) => {
          const ota = this.otaOrRefuse();
          switch (request.action) {
            case "status":
              return ota.status();
            case "commit":
              return ota.commitNow();
            case "rollback":
              return ota.rollbackNow("asked for at the console");
            case "apply":
              if (typeof request.dir !== "string" || !request.dir.startsWith("/"))
                throw new CommandRefused("bad-args", "apply: dir must be an absolute path");
              return ota.apply(request.dir);
            default:
              throw new CommandRefused("bad-args", "action: status, commit, rollback or apply");
          }
        },
      },
    });
    try {
      await control.start();
      this.control = control;
    } catch (err) {
      controlLog.warn(`console socket not started: ${errorLine(err)}`);
    }
  }

  /** Last: the watchdogs hold the agent to being healthy from here on, and READY tells systemd everything is up. */
  private async startSupervision(): Promise<void> {
    const { deps } = this;
    this.watchdog = new WatchdogKeeper({
      board: this.board,
      healthy: () => this.unhealthy(),
      log: deps.logs.logger("watchdog"),
    });
    await this.watchdog.start();
    this.systemd = new SdNotify({
      env: deps.env ?? process.env,
      healthy: () => this.unhealthy(),
      log: deps.logs.logger("systemd"),
    });
    await this.systemd.ready(this.statusLine());
  }

  private onLimits(limits: ResourceLimits): void {
    this.deps.logs.logger("resources").info(limits.reason);
    if (limits.scrubAllowed) this.scrubber?.resume();
    else this.scrubber?.pause();
    // Serving goes on in a thermal pause (it is I/O); only the owner's rate for the hour applies.
    this.applyServeThrottle(limits.uploadBytesPerSecond);
    // Fetching hashes every byte: a hot box holds its tasks like its scrub (their verified groups are kept).
    this.tasks?.setPaused(!limits.fetchAllowed);
    // Compute is CPU and heat only: stopped in a thermal pause (tasks queued again), its share followed.
    this.compute?.setPaused(!limits.computeAllowed);
    this.compute?.setCpuPercent(limits.cpuPercent);
    void this.systemd?.status(this.statusLine());
  }

  private onLink(state: "online" | "offline"): void {
    this.linkState = state;
    if (state === "online") this.connectedOnce = true;
    void this.refreshLed();
    void this.systemd?.status(this.statusLine());
  }

  /**
   * "updating" wins (nobody should pull the plug), then "error" while the store is not running (it is not retried
   * in-process, so the error shows until a restart finds the disk), then the link; "offline" once stopped.
   */
  private ledPattern(): StatusPattern {
    if (this.halted) return "offline";
    if (this.updating) return "updating";
    if (this.storeRefusal) return "error";
    return this.linkState;
  }

  /** Shows the current pattern if it changed; writes are serialized so the last state is the one shown. */
  private refreshLed(): Promise<void> {
    this.ledWrites = this.ledWrites
      .then(async () => {
        const pattern = this.ledPattern();
        // No board when start() failed before opening it (stop() still comes here).
        if (pattern === this.ledShown || !this.board) return;
        this.ledShown = pattern;
        await this.board.setStatus(pattern);
      })
      .catch((err: Error) => this.log.warn(`status LED: ${err.message}`));
    return this.ledWrites;
  }

  /** systemd's STATUS= line: link, store, thermal state. */
  private statusLine(): string {
    const store = this.store ? "store running" : `store not running: ${this.storeRefusal?.reason ?? "not started"}`;
    const link = this.linkState === "booting" ? "connecting" : this.linkState;
    return `${link}; ${store}${this.resources?.throttled ? "; throttled (hot)" : ""}`;
  }

  /**
   * The agent's own health for the watchdogs (the event loop's lag they measure themselves): undefined while
   * healthy. A telemetry round that never finishes means the disk or a filesystem hangs, which only a reset cures.
   */
  private unhealthy(): string | undefined {
    const since = this.telemetryRoundSince;
    if (since !== undefined && monotonicNow() - since > TELEMETRY_STUCK_MS) {
      return `a telemetry round has been stuck for ${Math.round((monotonicNow() - since) / 1000)} s (a hung disk or filesystem?)`;
    }
    return undefined;
  }

  private async startStore(): Promise<void> {
    const { config } = this;
    let dataDir = config.store.dataDir;
    if (dataDir === AUTO_DATA_DIR) {
      const discovery = hostDiskDiscovery(this.hostPaths);
      const auto = await resolveAutoDataDir({ stateDir: config.stateDir, nodeId: this.identity.deviceId, discovery });
      if (auto.note) this.log.warn(auto.note);
      // No disk, or no one disk to pick: the refusal path of a disk that is not there (the agent runs on).
      if (!auto.ok) {
        this.storeRefusal = { code: auto.code, reason: auto.reason };
        this.log.error(`store not started: ${auto.reason}`);
        return;
      }
      this.log.info(`store.dataDir "auto": ${auto.reason}`);
      dataDir = auto.dataDir;
    }
    const check = await checkDataDisk(
      {
        dataDir,
        stateDir: config.stateDir,
        nodeId: this.identity.deviceId,
        allowSystemDisk: config.store.allowSystemDisk,
      },
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
    const store = new ObjectStore(
      {
        dataDir: check.dataDir,
        quota: config.store.quota,
        reserveBytes: config.store.reserveBytes ?? defaultReserveBytes(size),
      },
      { now: this.now },
    );
    const storeLog = this.deps.logs.logger("store");
    store.on("recovered", (e) => storeLog.warn(e.message));
    store.on("object-added", (o) => void this.event({ type: "object-added", id: o.id, length: o.length }));
    store.on("object-removed", (e) => void this.event({ type: "object-removed", id: e.id, reason: e.reason }));
    store.on("quota-near", (e) => void this.event({ type: "quota-near", ...e }));
    store.on("disk-low", (e) => void this.event({ type: "disk-low", ...e }));
    try {
      await store.start();
      this.store = store;
      this.dataDir = check.dataDir;
      this.log.info(`store on ${check.dataDir} (${check.filesystem.fstype}, ${check.adopted} disk)`);
    } catch (err) {
      this.storeRefusal = { code: "start-failed", reason: errorLine(err) };
      this.log.error(`store not started: ${errorLine(err)}`);
      await store.stop().catch(() => {});
    }
  }

  /**
   * The HTTP server (agent/serve/README.md), once the store runs: no store, nothing to serve. A port that is taken
   * or an address the box lacks costs only serving: the agent runs on and says why, as for a missing data disk.
   */
  private async startServe(): Promise<void> {
    const { config } = this;
    const serveLog = this.deps.logs.logger("serve");
    const store = this.store;
    if (!store) {
      serveLog.warn("not serving: the store is not running");
      return;
    }
    const receipts = new ReceiptBook(join(config.stateDir, "receipts.log"));
    const server = new ObjectServer({
      store,
      bind: config.serve.bind,
      port: config.serve.port,
      limits: {
        maxConnections: config.serve.maxConnections,
        maxConnectionsPerAddress: config.serve.maxConnectionsPerAddress,
        headersTimeoutMs: config.serve.headersTimeoutSeconds * 1000,
        idleTimeoutMs: config.serve.idleTimeoutSeconds * 1000,
      },
      gate: new OrderGate({
        fleetPublicKey: config.link.fleetPublicKey,
        deviceId: this.identity.deviceId,
        book: receipts,
        windowBytes: config.serve.receiptWindowBytes,
        now: this.now,
      }),
      counters: this.work,
      onError: (line) => serveLog.warn(line),
    });
    try {
      const recovered = await receipts.start();
      if (recovered) serveLog.warn(`receipts.log: dropped a torn tail of ${recovered.droppedBytes} bytes`);
      await server.start();
      this.receipts = receipts;
      this.server = server;
      this.applyServeThrottle(this.uploadLimiter.rate);
      serveLog.info(`serving on ${config.serve.bind}:${server.port}: ${server.urls().join(" ") || "(no address)"}`);
    } catch (err) {
      serveLog.error(`not serving: ${errorLine(err)}`);
      await server.stop().catch(() => {});
      await receipts.stop().catch(() => {});
    }
  }

  /**
   * The owner's upload limit on served bytes (uploadLimiter, all connections together). With no limit the server
   * gets no throttle at all, so its hot path (one read, one write) pays nothing for the limiter.
   */
  private applyServeThrottle(rate: number | null): void {
    this.server?.setThrottle(rate === null ? undefined : this.takeUpload);
  }

  private readonly takeUpload = (bytes: number): Promise<void> => this.uploadLimiter.take(bytes);

  /** The server's counters (bytes served, requests, refusals by code, receipt lag); undefined when not serving. */
  serveStats(): ServeStats | undefined {
    return this.server?.stats();
  }

  /**
   * The fetch task queue, on the store's disk (partial files in `<dataDir>/fetch/`, outside the store's tmp/,
   * which the store empties at every start) with its durable list in the state directory. Without a store there
   * is nowhere to fetch to: the task commands say why.
   */
  private async startTasks(): Promise<void> {
    const { store, dataDir, config } = this;
    if (!store || dataDir === undefined) return;
    // Every fetched byte waits for the owner's download rate (share.downloadBytesPerSecond and its windows).
    this.fetcher = new Fetcher({
      stallMs: config.tasks.stallSeconds * 1000,
      throttle: { take: (bytes) => this.downloadLimiter.take(bytes) },
    });
    const tasks = new TaskQueue({
      logPath: join(config.stateDir, "tasks.log"),
      partialDir: join(dataDir, "fetch"),
      store,
      fetcher: this.fetcher,
      concurrency: config.tasks.concurrency,
      now: this.now,
      event: (body) => {
        if (body.type === "task.done" && typeof body.objectId === "string" && typeof body.length === "number")
          this.ledgerKeeper?.fetched(body.objectId, body.length);
        if ((body.type === "task.done" || body.type === "task.failed") && typeof body.objectId === "string")
          this.settleObjectWaiters(body.objectId, body.type === "task.done" ? undefined : body);
        void this.event(body);
      },
      log: this.deps.logs.logger("tasks"),
      counters: this.work,
      // Another box serving a task's object is paid in receipts signed with this device's key (its orders name it).
      receipts: { clientKey: this.identity, fleetPublicKey: config.link.fleetPublicKey },
    });
    tasks.setPaused(!(this.resources?.limits().fetchAllowed ?? true));
    try {
      await tasks.start();
      this.tasks = tasks;
    } catch (err) {
      this.log.error(`tasks not started: ${errorLine(err)}`);
      await tasks.stop().catch(() => {});
    }
  }

  /**
   * The work ledger (<stateDir>/ledger): proofs and fetches as they happen, served bytes (from the receipt book) and
   * held bytes (from the store) at each window's end, then the window's statement, signed and sent as an event.
   */
  private async startLedger(): Promise<void> {
    const { config } = this;
    const log = this.deps.logs.logger("ledger");
    try {
      const opened = await Ledger.open({ dir: join(config.stateDir, "ledger"), deviceId: this.identity.deviceId });
      for (const line of opened.recovered) log.warn(`recovered: ${line}`);
      for (const line of opened.problems) log.error(`ledger problem: ${line}`);
      this.ledger = opened.ledger;
      const settlements = new SettlementBook(
        join(config.stateDir, "ledger"),
        config.link.fleetPublicKey,
        this.identity.deviceId,
      );
      const { skipped } = await settlements.start();
      if (skipped > 0) log.error(`settlements.log: ${skipped} settlement(s) that do not open under the fleet key`);
      this.settlements = settlements;
    } catch (err) {
      log.error(`no ledger: ${errorLine(err)}`);
      return;
    }
    this.ledgerKeeper = new LedgerKeeper({
      ledger: this.ledger,
      windowSeconds: config.ledger.windowSeconds,
      signer: this.identity,
      now: this.now,
      clockSynced: () => clockSynced(this.hostPaths, this.now()),
      receipts: () => this.receipts?.all() ?? [],
      objects: () => this.store?.list() ?? [],
      onStatement: (kept) => {
        const { statement } = kept;
        log.info(
          `statement for ${new Date(statement.window.start).toISOString()}: records ${statement.firstSeq}..${statement.lastSeq}`,
        );
        void this.event({
          type: "ledger.statement",
          window: statement.window,
          statement: new TextDecoder().decode(kept.envelope),
        });
      },
      warn: (line) => log.warn(line),
    });
    this.ledgerKeeper.start();
  }

  /**
   * Compute tasks (agent/compute/queue.ts): modules and inputs are objects of the store (fetched by a task when the
   * box lacks them), results go into the ledger, so both must run. Task threads run at nice 19, within the owner's
   * share of the CPU and outside thermal pauses.
   */
  private async startCompute(): Promise<void> {
    const { store, ledgerKeeper, config } = this;
    const log = this.deps.logs.logger("compute");
    if (!store || !ledgerKeeper) {
      log.warn("compute not available: it needs the store and the ledger");
      return;
    }
    const limits = this.resources?.limits();
    const cores = availableParallelism();
    // Warm workers for as many lanes as the whole box could give (the share may grow).
    const sandbox = new Sandbox({ paths: this.hostPaths, nice: TASK_NICE, idleWorkers: cores });
    this.sandbox = sandbox;
    const compute = new ComputeQueue({
      logPath: join(config.stateDir, "compute.log"),
      deviceId: this.identity.deviceId,
      signer: this.identity,
      objectBytes: (ref) => this.computeObject(ref),
      run: (module, input, taskLimits, options) => sandbox.run(module, input, taskLimits, { signal: options.signal }),
      prepare: (workers) => sandbox.prepare(workers),
      record: (work) => ledgerKeeper.computed(work),
      alreadyRecorded: (taskId) => ledgerKeeper.hasCompute(taskId),
      keepOutput: async (output, outputId) => {
        await store.ingest(Readable.from([Buffer.from(output)]), {
          expectedId: outputId,
          declaredLength: output.length,
          pin: false,
        });
      },
      event: (body) => void this.event(body),
      cpuPercent: limits?.cpuPercent ?? config.share.cpuPercent,
      cores,
      now: this.now,
      log,
    });
    compute.setPaused(!(limits?.computeAllowed ?? true));
    try {
      await compute.start();
      this.compute = compute;
      log.info(`${compute.laneCount} lane(s) for ${compute.list().cpuPercent} % of ${availableParallelism()} cores`);
    } catch (err) {
      log.error(`compute not started: ${errorLine(err)}`);
      await compute.stop().catch(() => {});
    }
  }

  /** A compute task's module or input: from the store, fetched into it (unpinned) first when the box lacks it. */
  private async computeObject(ref: ObjectRef): Promise<Uint8Array> {
    const store = this.storeOrRefuse();
    if (!store.has(ref.id)) {
      if (ref.sources.length === 0)
        throw new CommandRefused("not-found", `object ${ref.id} is not here and the task names no source`);
      await this.fetchObject({ objectId: ref.id, length: ref.length, sources: ref.sources }, false);
    }
    const file = store.locate(ref.id)?.path;
    if (!file) throw new CommandRefused("not-found", `object ${ref.id} left the store before the task read it`);
    // In shared memory: the sandbox's worker reads it there, without a copy (modules are compiled from it too).
    return sharedBytes(file);
  }

  private computeOrRefuse(): ComputeQueue {
    if (this.compute) return this.compute;
    throw new CommandRefused("compute-unavailable", "compute needs the store and the ledger (see the agent's log)");
  }

  /** Compute in telemetry: tasks waiting or running now; failed tasks and CPU ms since the start. */
  private computeCounters(): { compute_queued?: number; compute_failed?: number; compute_cpu_ms?: number } {
    const s = this.compute?.stats();
    if (!s) return {};
    return { compute_queued: s.queued + s.running, compute_failed: s.failed, compute_cpu_ms: s.cpuMs };
  }

  /**
   * The ledger in telemetry: records the fleet has not settled yet (the open window's, and those of statements
   * with no settlement kept), and settlement lines the fleet refused, over every settlement kept. State now.
   */
  private ledgerCounters(): { ledger_unsettled?: number; ledger_rejected?: number } {
    const ledger = this.ledger;
    if (!ledger) return {};
    const settled = new Set(this.settlements?.all().map((k) => k.settlement.statement));
    let unsettled = ledger.openRecords().length;
    for (const kept of ledger.statements()) if (!settled.has(kept.hash)) unsettled += kept.statement.count;
    let rejected = 0;
    for (const k of this.settlements?.all() ?? []) for (const l of k.settlement.lines) if (l.rejected) rejected++;
    return { ledger_unsettled: unsettled, ledger_rejected: rejected };
  }

  /** The ledger, or the refusal the ledger commands answer with. */
  private ledgerOrRefuse(): Ledger {
    if (this.ledger) return this.ledger;
    throw new CommandRefused("ledger-unavailable", "the work ledger could not be opened (see the agent's log)");
  }

  /**
   * Updates over the air: the updater takes up whatever step the last run left (agent/ota/updater.ts). A state
   * file it cannot read costs only updates: the agent runs on and says why.
   */
  private async startOta(): Promise<void> {
    const { config, deps } = this;
    const log = deps.logs.logger("ota");
    const release = deps.release ?? { tree: undefined, slot: undefined, build: 0, version: deps.version };
    const updater = new OtaUpdater({
      running: release,
      state: new OtaStateStore(join(config.stateDir, "ota-state.json"), this.now),
      offerPath: join(config.stateDir, "ota-offer.json"),
      releasePublicKey: config.ota.releasePublicKey,
      gateSeconds: config.ota.gateSeconds,
      fetchObject: (spec) => this.fetchObject(spec),
      ingestFile: async (path, id, length) => {
        const store = this.storeOrRefuse();
        await store.ingest(createReadStream(path), { expectedId: id, declaredLength: length, pin: true });
      },
      objectFile: (id) => this.store?.locate(id)?.path,
      unpin: async (ids) => {
        for (const id of ids) await this.store?.pin(id, false);
      },
      connectedOnce: () => this.connectedOnce,
      selftest: () => this.trialSelftest(),
      event: (body) => void this.event(body),
      setUpdating: (active) => this.setUpdating(active),
      restart: (reason) => {
        log.info(`restart: ${reason}`);
        deps.restart?.(reason);
      },
      log,
      now: this.now,
    });
    try {
      await updater.load();
      this.ota = updater;
    } catch (err) {
      log.error(`updates unavailable: ${errorLine(err)}`);
    }
  }

  /**
   * The trial's selftest, in process: the hash kernels on a known answer, and the parts that failed to start in
   * this release when nothing outside explains it (a store whose disk is there but that would not start).
   */
  private async trialSelftest(): Promise<string | undefined> {
    // BLAKE3 of the empty input (the reference implementation's test vector).
    const empty = toHex(blake3(new Uint8Array(0)));
    if (empty !== "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262")
      return `the BLAKE3 kernel gives ${empty} for the empty input`;
    if (this.storeRefusal?.code === "start-failed") return `the store did not start: ${this.storeRefusal.reason}`;
    if (this.store && !this.tasks) return "the task queue did not start";
    if (!this.ledger) return "the work ledger did not open";
    return undefined;
  }

  /** One object as a fetch task (pinned: release files); settles on its task.done or task.failed event. */
  private fetchObject(spec: ObjectFetch, pin = true): Promise<void> {
    const tasks = this.taskQueue();
    const done = new Promise<void>((resolve, reject) => {
      const list = this.objectWaiters.get(spec.objectId) ?? [];
      list.push({ resolve, reject });
      this.objectWaiters.set(spec.objectId, list);
    });
    return tasks.fetch({ ...spec, pin }).then(
      (view) => {
        if (view.state === "done") this.settleObjectWaiters(spec.objectId, undefined);
        return done;
      },
      (err: unknown) => {
        this.objectWaiters.delete(spec.objectId);
        throw err;
      },
    );
  }

  private settleObjectWaiters(objectId: string, failed: Record<string, unknown> | undefined): void {
    const waiters = this.objectWaiters.get(objectId);
    if (!waiters) return;
    this.objectWaiters.delete(objectId);
    for (const w of waiters) {
      if (!failed) w.resolve();
      else
        w.reject(
          new CommandRefused(String(failed.code ?? "fetch-failed"), String(failed.reason ?? "the fetch failed")),
        );
    }
  }

  private storeOrRefuse(): ObjectStore {
    if (this.store) return this.store;
    throw new CommandRefused("store-unavailable", this.storeRefusal?.reason ?? "the store is not running");
  }

  private otaOrRefuse(): OtaUpdater {
    if (this.ota) return this.ota;
    throw new CommandRefused("ota-unavailable", "updates are not available (see the agent's log)");
  }

  /** The task queue, or the refusal the task commands answer with. */
  private taskQueue(): TaskQueue {
    if (this.tasks) return this.tasks;
    throw new CommandRefused(
      "store-unavailable",
      this.storeRefusal ? `the store is not running: ${this.storeRefusal.reason}` : "the task queue is not running",
    );
  }

  private scheduleScrub(store: ObjectStore): void {
    const scrubLog = this.deps.logs.logger("scrub");
    const scrubber = new Scrubber(store, { bytesPerSecond: this.config.store.scrubBytesPerSecond });
    this.scrubber = scrubber;
    // Gated by the resource governor from here on (onLimits): a hot box holds its scrub between reads.
    if (this.resources && !this.resources.limits().scrubAllowed) scrubber.pause();
    let running = false;
    // A pass a day is plenty for bit rot; the pacing keeps each pass from competing with serving.
    this.every(24 * 3600 * 1000, async () => {
      if (running) return;
      running = true;
      try {
        const r = await scrubber.runOnce();
        scrubLog.info(
          `checked ${r.checked} objects (${r.bytes} bytes); corrupt ${r.corrupt.length}, missing ${r.missing.length}`,
        );
        this.lastScrub = { at: this.now(), checked: r.checked, corrupt: r.corrupt.length, missing: r.missing.length };
      } catch (err) {
        scrubLog.error(`scrub failed: ${errorLine(err)}`);
      } finally {
        running = false;
      }
    });
  }

  private every(ms: number, fn: () => unknown): void {
    this.keepTimer(setInterval(this.logFailures(fn), ms));
  }

  private after(ms: number, fn: () => unknown): void {
    this.keepTimer(setTimeout(this.logFailures(fn), ms));
  }

  /** stop() clears every kept timer (clearInterval clears a timeout too); none keeps the process alive. */
  private keepTimer(t: NodeJS.Timeout): void {
    t.unref();
    this.timers.push(t);
  }

  private logFailures(fn: () => unknown): () => void {
    return () =>
      void Promise.resolve()
        .then(fn)
        .catch((err: Error) => this.log.error(err.message));
  }

  private async event(body: Record<string, unknown>): Promise<void> {
    try {
      await this.outbox.enqueue("events", body);
    } catch (err) {
      this.log.error(`event ${String(body.type)} not queued: ${errorLine(err)}`);
    }
  }

  private async publishTelemetry(): Promise<void> {
    // One round at a time: rounds stuck on a hung disk must not pile up (unhealthy() reports the stuck one).
    if (this.telemetryRoundSince !== undefined) return;
    this.telemetryRoundSince = monotonicNow();
    try {
      const sample = await this.collector.collect();
      await this.outbox.enqueue("telemetry", sample);
    } finally {
      this.telemetryRoundSince = undefined;
    }
  }

  private async counters() {
    const status = this.store ? await this.store.status() : undefined;
    const proofs = this.proofs.snapshot();
    return {
      store_objects: status?.objects ?? 0,
      store_used_bytes: status?.usedBytes ?? 0,
      proofs_passed: proofs.passed,
      proofs_failed: proofs.failed,
      outbox_depth: this.outbox.depth,
      outbox_bytes: this.outbox.bytes,
      reconnects: this.link.stats.reconnects,
      throttled: this.resources?.throttled ? 1 : 0,
      // The release: its build, and its slot as a number (telemetry is numbers): 1 A, 2 B, 0 none.
      build: this.deps.release?.build ?? 0,
      slot: this.deps.release?.slot === "A" ? 1 : this.deps.release?.slot === "B" ? 2 : 0,
    };
  }

  /** The daemon's status (agent/protocol/daemon-status.ts): the `status` command's result and the console's. */
  async status(): Promise<DaemonStatus> {
    return {
      deviceId: this.identity.deviceId,
      publicKey: this.identity.publicKeyHex,
      version: this.deps.version,
      uptimeSeconds: Math.floor((this.now() - this.startedAt) / 1000),
      startedAt: this.startedAt,
      pid: process.pid,
      // link.url never holds credentials: the config refuses a URL with a user or password in it.
      link: { connected: this.link.connected, url: this.config.link.url, lastError: "", ...this.link.stats },
      outbox: this.outbox.stats,
      store: this.store
        ? { running: true, ...(await this.store.status()), lastScrub: this.lastScrub ?? null }
        : { running: false, ...(this.storeRefusal ?? { code: "not-started", reason: "not started yet" }) },
      board: {
        name: this.board.name,
        description: this.board.description,
        led: this.ledPattern(),
        problems: [...this.board.problems],
      },
      ota: this.ota ? await this.ota.status() : undefined,
      compute: this.compute?.status(),
      health: {
        thermal: this.thermal?.state,
        limits: this.resources?.limits(),
        watchdog: this.watchdog?.status,
        systemd: this.systemd ? { notify: this.systemd.enabled, ...this.systemd.stats } : undefined,
      },
    };
  }

  private commandHandlers(): Record<string, CommandHandler> {
    const challenges = new ChallengeResponder({
      store: () => this.store,
      storeRefusal: () => this.storeRefusal?.reason,
      signer: this.identity,
      now: this.now,
      ledger: this.proofs,
      onAnswered: (outcome) => this.ledgerKeeper?.proof(outcome),
    });
    return {
      ping: async () => ({ pong: true, ts: this.now() }),
      status: async () => this.status(),
      "config.get": async () => redactConfig(this.config),
      "log.tail": async (args) => {
        const lines = args.lines === undefined ? 50 : args.lines;
        if (typeof lines !== "number" || !Number.isInteger(lines) || lines < 1 || lines > 500) {
          throw new CommandRefused("bad-args", "lines must be an integer 1..500");
        }
        return { lines: this.deps.logs.tail(lines) };
      },
      "store.challenge": (args) => challenges.answer(args),
      "task.fetch": (args) => this.taskQueue().fetch(args),
      "task.drop": (args) => this.taskQueue().drop(args),
      "task.list": async () => this.taskQueue().list(),
      "compute.run": (args) => this.computeOrRefuse().run(args),
      "compute.drop": (args) => this.computeOrRefuse().drop(args),
      "compute.list": async () => this.computeOrRefuse().list(),
      "ota.offer": (args) => this.otaOrRefuse().offer(args),
      "ota.status": () => this.otaOrRefuse().status(),
      "ledger.records": (args) => ledgerRecords(this.ledgerOrRefuse(), args),
      "ledger.receipts": (args) => ledgerReceipts(this.ledgerOrRefuse(), args),
      "ledger.settlement": async (args) => {
        const ledger = this.ledgerOrRefuse();
        if (!this.settlements) throw new CommandRefused("ledger-unavailable", "the settlement book is not open");
        return this.settlements.add(args, ledger);
      },
    };
  }
}

async function readOptional(path: string | undefined): Promise<string | undefined> {
  return path === undefined ? undefined : readFile(path, "utf8");
}
