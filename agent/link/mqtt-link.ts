// The MQTT link: the only module that imports "mqtt". It announces the device (birth and last will with a
// persisted bdSeq, README "State and session sequence"), subscribes to the device's commands, and publishes what it
// is handed, resolving on PUBACK.
//
// mqtt.js is used as a wire codec for one connection at a time, never as a queue. Every connection attempt gets a
// fresh MqttClient (reconnectPeriod 0, so mqtt.js never reconnects on its own; clean session; in-memory stores
// that die with the client), because:
//   - the will carries that attempt's bdSeq, and a client's will is fixed when it connects;
//   - mqtt.js keeps un-acked QoS 1 publishes in its outgoing store and re-sends them when the same client
//     reconnects, and queues publishes made while offline: either would be a second, uncontrolled copy of what
//     the outbox re-sends itself, in its own order. A dropped client takes its store with it, publish() refuses
//     while there is no ready connection, and every publish still waiting for its PUBACK is rejected when the
//     connection closes (mqtt.js only fails "volatile" callbacks on a close, not QoS 1 publishes);
//   - reconnects follow our capped, jittered backoff (backoff.ts) instead of a fixed period.
// Clean session means commands published while the device is offline are not queued by the broker: they expire
// within minutes anyway (README "Commands") and the fleet side retries.
import { EventEmitter } from "node:events";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { connect, type IClientOptions, type MqttClient } from "mqtt";
import { removeStaleTemps, writeFileAtomic } from "../durable/atomic.js";
import { topicsFor, type DeviceTopics } from "../protocol/topics.js";
import { Backoff, type BackoffOptions } from "./backoff.js";
import { realTimeouts, type Timeouts } from "../util/timeouts.js";
import { errnoCode, errorLine } from "../util/errors.js";

export class LinkError extends Error {
  override readonly name = "LinkError";
}

/** What the link logs through; agent/util/log.ts's Logger fits. */
export interface LinkLog {
  debug(message: string | (() => string)): void;
  info(message: string | (() => string)): void;
  warn(message: string | (() => string)): void;
}

/** The timers the link waits on (agent/util/timeouts.ts). */
export type LinkTimers = Timeouts;

/** How a device proves itself to the broker; the link and the console's broker probe both use it. */
export interface BrokerCredentials {
  username?: string;
  password?: string;
  /** PEM: the CA(s) the broker's certificate must chain to (else the system's). */
  ca?: string;
  /** PEM client certificate and key, for brokers that authenticate devices by certificate. */
  cert?: string;
  key?: string;
}

/** The credentials as mqtt.js options: only those given (mqtt.js treats a present `undefined` as set). */
export function credentialOptions(
  c: BrokerCredentials,
): Pick<IClientOptions, "username" | "password" | "ca" | "cert" | "key"> {
  return {
    ...(c.username !== undefined ? { username: c.username } : {}),
    ...(c.password !== undefined ? { password: c.password } : {}),
    ...(c.ca !== undefined ? { ca: c.ca } : {}),
    ...(c.cert !== undefined ? { cert: c.cert } : {}),
    ...(c.key !== undefined ? { key: c.key } : {}),
  };
}

export interface MqttLinkOptions extends BrokerCredentials {
  /** mqtt://, mqtts://, ws:// or wss:// */
  url: string;
  deviceId: string;
  /** Default: the device id. */
  clientId?: string;
  /** Default 5. */
  protocolVersion?: 5 | 4;
  /** Default 60. */
  keepaliveSeconds?: number;
  /** The agent's version, announced in the state record. */
  version: string;
  /** The release's build and slot (agent/ota/slots.ts), announced in the state record beside the version. */
  release?: { build: number; slot: string | null };
  /** The device's public key (hex), announced in the birth: its hash is the device id, so it vouches for itself. */
  publicKeyHex?: string;
  /** The URLs the box serves objects at (agent/serve), announced in the birth as `serve`. */
  serveUrls?: string[];
  /** Where the bdSeq counter is kept (file `bdseq`). */
  stateDir: string;
  /** CONNACK must arrive within this (default 30 000 ms). */
  connectTimeoutMs?: number;
  /** stop() waits this long for the offline state's PUBACK and the DISCONNECT (default 5000 ms). */
  stopTimeoutMs?: number;
  /** MQTT 5: the largest packet the broker may send us (default 256 KiB; commands are at most 128 KiB). */
  maxIncomingPacketBytes?: number;
  /** Reconnect backoff (random and now default to the ones below). */
  backoff?: BackoffOptions;
  timers?: LinkTimers;
  now?: () => number;
  random?: () => number;
  log?: LinkLog;
}

export interface PublishOptions {
  qos: 0 | 1;
  retain: boolean;
  /** MQTT 5 only (ignored on 3.1.1): responseTopic, correlationData, contentType, userProperties, ... */
  properties?: {
    responseTopic?: string;
    correlationData?: Buffer;
    contentType?: string;
    payloadFormatIndicator?: boolean;
    messageExpiryInterval?: number;
    userProperties?: Record<string, string | string[]>;
  };
}

/** The parts of an incoming PUBLISH a command handler may need. */
export interface IncomingPacket {
  qos: number;
  retain: boolean;
  dup: boolean;
  /** MQTT 5 only. */
  properties?: {
    responseTopic?: string;
    correlationData?: Buffer;
    contentType?: string;
    messageExpiryInterval?: number;
    userProperties?: Record<string, string | string[]>;
  };
}

export type MessageHandler = (topic: string, payload: Buffer, packet: IncomingPacket) => void | Promise<void>;

export interface LinkStats {
  /** Connections that reached "connected" (CONNACK, command subscription, birth acknowledged). */
  connects: number;
  /** Connection attempts after the first one. */
  reconnects: number;
  /** The bdSeq of the current (or last) attempt. */
  bdSeq: number;
  /** Socket bytes over all connections (TCP and TLS; WebSocket transports are not counted). */
  bytesIn: number;
  bytesOut: number;
  /** Epoch ms of the current connection's "connected"; absent while not connected. */
  connectedSince?: number;
  /** Why the last connection or attempt ended (one line); absent until one has. */
  lastError?: string;
}

export interface LinkEvents {
  connected: [{ bdSeq: number }];
  disconnected: [{ bdSeq: number; reason: string }];
}

interface Pending {
  reject(err: Error): void;
}

interface Connection {
  client: MqttClient;
  bdSeq: number;
  /** CONNACK seen, commands subscribed, birth acknowledged: publish() is open. */
  ready: boolean;
  closed: boolean;
  /** Publishes waiting for a PUBACK; rejected when the connection closes. */
  pending: Set<Pending>;
  /** MQTT 5 CONNACK's receive maximum: how many QoS 1 publishes the broker takes unacknowledged. */
  receiveMaximum: number;
  lastError: string;
}

const PROTOCOLS = new Set(["mqtt:", "mqtts:", "ws:", "wss:"]);
const WILDCARD = /[+#]/;
const BDSEQ_FILE = "bdseq";

export class MqttLink extends EventEmitter<LinkEvents> {
  private readonly options: MqttLinkOptions;
  private readonly topics: DeviceTopics;
  private readonly backoff: Backoff;
  private readonly timers: LinkTimers;
  private readonly now: () => number;
  private readonly handlers = new Set<MessageHandler>();
  private readonly bdSeqPath: string;
  private conn: Connection | null = null;
  private timer: unknown = null;
  private attempting: Promise<void> | null = null;
  private started = false;
  private stopping = false;
  private bdSeq = 0;
  private attempts = 0;
  private connects = 0;
  private closedBytesIn = 0;
  private connectedSince: number | undefined;
  private lastError: string | undefined;
  private closedBytesOut = 0;

  constructor(options: MqttLinkOptions) {
    super();
    let protocol: string;
    try {
      protocol = new URL(options.url).protocol;
    } catch {
      throw new LinkError(`link: broker url ${JSON.stringify(options.url)} is not a URL`);
    }
    if (!PROTOCOLS.has(protocol)) {
      throw new LinkError(
        `link: broker url must start with mqtt://, mqtts://, ws:// or wss://, got ${JSON.stringify(options.url)}`,
      );
    }
    if (options.protocolVersion !== undefined && options.protocolVersion !== 5 && options.protocolVersion !== 4) {
      throw new LinkError(`link: protocolVersion must be 5 or 4, got ${String(options.protocolVersion)}`);
    }
    this.options = options;
    this.topics = topicsFor(options.deviceId);
    this.now = options.now ?? Date.now;
    this.timers = options.timers ?? realTimeouts;
    this.backoff = new Backoff({ random: options.random, now: this.now, ...options.backoff });
    this.bdSeqPath = join(options.stateDir, BDSEQ_FILE);
  }

  /** True while a connection is up and announced: publish() is accepted. */
  get connected(): boolean {
    return this.conn?.ready === true;
  }

  /** How many QoS 1 publishes may await their PUBACK at once (MQTT 5 receive maximum; 65535 otherwise). */
  get maxInFlight(): number {
    return this.conn?.receiveMaximum ?? 65535;
  }

  get stats(): LinkStats {
    const stream = this.conn?.client.stream as { bytesRead?: unknown; bytesWritten?: unknown } | undefined;
    return {
      connects: this.connects,
      reconnects: Math.max(0, this.attempts - 1),
      bdSeq: this.bdSeq,
      bytesIn: this.closedBytesIn + (typeof stream?.bytesRead === "number" ? stream.bytesRead : 0),
      bytesOut: this.closedBytesOut + (typeof stream?.bytesWritten === "number" ? stream.bytesWritten : 0),
      ...(this.connectedSince !== undefined ? { connectedSince: this.connectedSince } : {}),
      ...(this.lastError !== undefined ? { lastError: this.lastError } : {}),
    };
  }

  /** Reads the bdSeq counter and starts connecting; resolves once the first attempt is under way. */
  async start(): Promise<void> {
    if (this.started) throw new LinkError("link: already started");
    this.started = true;
    this.stopping = false;
    await mkdir(this.options.stateDir, { recursive: true });
    await removeStaleTemps(this.bdSeqPath);
    this.bdSeq = await this.readBdSeq();
    this.attempting = this.attempt();
    await this.attempting;
  }

  /** Publishes the offline state (when connected), disconnects cleanly and stops reconnecting. */
  async stop(): Promise<void> {
    if (!this.started || this.stopping) return;
    this.stopping = true;
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
    await this.attempting;
    const conn = this.conn;
    if (conn && !conn.closed) {
      const limit = this.options.stopTimeoutMs ?? 5000;
      // Once CONNACK is in, a birth may be on its way even if not yet acknowledged: say offline in any case.
      if (conn.client.connected) {
        const offline = { state: "offline", bdSeq: conn.bdSeq, ts: this.now(), version: this.options.version };
        try {
          await this.withTimeout(
            this.send(conn, this.topics.state, JSON.stringify(offline), { qos: 1, retain: true }),
            limit,
          );
        } catch (err) {
          this.options.log?.warn(`could not publish the offline state: ${errorLine(err)}`);
        }
      }
      conn.ready = false;
      // A DISCONNECT tells the broker not to publish the will (we published the offline state ourselves). A
      // connection that never got that far is just dropped: its will, if the broker has one, says offline too.
      const ended = new Promise<void>((resolve) => conn.client.end(!conn.client.connected, () => resolve()));
      try {
        await this.withTimeout(ended, limit);
      } catch {
        conn.client.end(true);
      }
      this.onClose(conn, "stopped");
    }
    this.started = false;
  }

  /**
   * Publishes and resolves on PUBACK (QoS 1) or once written (QoS 0). Rejects at once when no connection is up,
   * and when the connection drops before the PUBACK: then the message may or may not have reached the broker,
   * and re-sending it is the caller's decision (the outbox's).
   */
  publish(topic: string, payload: Buffer | Uint8Array | string, options: PublishOptions): Promise<void> {
    if (typeof topic !== "string" || topic.length === 0 || WILDCARD.test(topic)) {
      return Promise.reject(
        new LinkError(
          `link: refusing to publish on ${JSON.stringify(topic)}: a topic name must be non-empty, without + or #`,
        ),
      );
    }
    const conn = this.conn;
    if (!conn?.ready || this.stopping) return Promise.reject(new LinkError("link: not connected"));
    return this.send(conn, topic, payload, options);
  }

  /** Adds a handler for incoming messages (the device's commands); returns a function that removes it. */
  onMessage(handler: MessageHandler): () => void {
    this.handlers.add(handler);
    return () => this.handlers.delete(handler);
  }

  private send(
    conn: Connection,
    topic: string,
    payload: Buffer | Uint8Array | string,
    options: PublishOptions,
  ): Promise<void> {
    const body =
      typeof payload === "string" || Buffer.isBuffer(payload)
        ? payload
        : Buffer.from(payload.buffer, payload.byteOffset, payload.length);
    return new Promise<void>((resolve, reject) => {
      const pending: Pending = { reject };
      if (options.qos > 0) conn.pending.add(pending);
      const publishOptions = {
        qos: options.qos,
        retain: options.retain,
        ...(this.protocolVersion === 5 && options.properties ? { properties: options.properties } : {}),
      };
      conn.client.publish(topic, body, publishOptions, (err) => {
        conn.pending.delete(pending);
        if (err) reject(new LinkError(`link: publish on ${topic} failed: ${err.message}`));
        else resolve();
      });
    });
  }

  private get protocolVersion(): 5 | 4 {
    return this.options.protocolVersion ?? 5;
  }

  private async readBdSeq(): Promise<number> {
    let text: string;
    try {
      text = await readFile(this.bdSeqPath, "utf8");
    } catch (err) {
      if (errnoCode(err) === "ENOENT") return 0;
      throw err;
    }
    const n = Number(text.trim());
    if (Number.isSafeInteger(n) && n >= 0) return n;
    // Written atomically, so this is not a torn write but foreign content. Any value above every bdSeq used before
    // keeps the scheme sound; the clock in milliseconds is one.
    const fallback = this.now();
    this.options.log?.warn(
      `${this.bdSeqPath} holds ${JSON.stringify(text.slice(0, 40))}, not a counter; continuing from ${fallback}`,
    );
    return fallback;
  }

  private async attempt(): Promise<void> {
    this.timer = null;
    if (this.stopping) return;
    const bdSeq = this.bdSeq + 1;
    // Persisted before the attempt, so no restart ever reuses a bdSeq that a will may carry.
    try {
      await writeFileAtomic(this.bdSeqPath, `${bdSeq}\n`);
    } catch (err) {
      this.options.log?.warn(
        `could not persist bdSeq ${bdSeq} (${errnoCode(err) ?? errorLine(err)}); connecting anyway`,
      );
    }
    this.bdSeq = bdSeq;
    if (this.stopping) return;
    this.attempts++;
    const o = this.options;
    const will = {
      topic: this.topics.state,
      payload: Buffer.from(JSON.stringify({ state: "offline", bdSeq })),
      qos: 1 as const,
      retain: true,
    };
    const clientOptions: IClientOptions = {
      clientId: o.clientId ?? o.deviceId,
      protocolVersion: this.protocolVersion,
      clean: true,
      keepalive: o.keepaliveSeconds ?? 60,
      connectTimeout: o.connectTimeoutMs ?? 30_000,
      reconnectPeriod: 0,
      resubscribe: false,
      queueQoSZero: false,
      will,
      // No MQTT 5 topic aliases, although they would save ~55 bytes a message: against Debian's mosquitto, records
      // published by alias right after a broker restart were acknowledged but never reached a persistent
      // subscriber that was still reconnecting (8 of 10,000 in the outbox's broker-kill test, in 2 of 4 runs on
      // a loaded machine; none in the same runs without aliases). A lost acknowledged record is worse than bytes.
      ...(this.protocolVersion === 5
        ? { properties: { maximumPacketSize: o.maxIncomingPacketBytes ?? 256 * 1024 } }
        : {}),
      ...credentialOptions(o),
    };
    let client: MqttClient;
    try {
      client = connect(o.url, clientOptions);
    } catch (err) {
      this.options.log?.warn(`connect to ${o.url} failed: ${errorLine(err)}`);
      this.scheduleAttempt();
      return;
    }
    const conn: Connection = {
      client,
      bdSeq,
      ready: false,
      closed: false,
      pending: new Set(),
      receiveMaximum: 65535,
      lastError: "",
    };
    this.conn = conn;
    o.log?.debug(() => `connecting to ${o.url} (bdSeq ${bdSeq}, attempt ${this.attempts})`);
    client.on("connect", (connack) => {
      const max = connack.properties?.receiveMaximum;
      if (typeof max === "number" && max > 0) conn.receiveMaximum = max;
      void this.announce(conn);
    });
    client.on("message", (topic, payload, packet) => this.deliver(conn, topic, payload, packet));
    // mqtt.js emits "error" for refused connections, timeouts and socket errors; "close" always follows.
    client.on("error", (err) => {
      conn.lastError = err.message.replace(/\s+/g, " ").trim(); // OpenSSL alerts end in a newline: keep log lines whole
      o.log?.debug(() => `connection error: ${err.message}`);
    });
    client.on("close", () => this.onClose(conn, conn.lastError || "connection closed"));
  }

  /** After CONNACK: subscribe to commands, then publish the birth; only then is the link "connected". */
  private async announce(conn: Connection): Promise<void> {
    try {
      const granted = await conn.client.subscribeAsync(this.topics.cmdFilter, { qos: 1 });
      if (granted.some((g) => g.qos === 128))
        this.options.log?.warn(`the broker refused the subscription to ${this.topics.cmdFilter}`);
      const birth = {
        state: "online",
        bdSeq: conn.bdSeq,
        ts: this.now(),
        version: this.options.version,
        ...(this.options.release ? { build: this.options.release.build, slot: this.options.release.slot } : {}),
        ...(this.options.publicKeyHex ? { pub: this.options.publicKeyHex } : {}),
        ...(this.options.serveUrls ? { serve: this.options.serveUrls } : {}),
      };
      await this.send(conn, this.topics.state, JSON.stringify(birth), { qos: 1, retain: true });
    } catch (err) {
      if (!conn.closed) {
        conn.lastError = `announcing failed: ${errorLine(err)}`;
        conn.client.end(true);
      }
      return;
    }
    if (conn.closed || this.conn !== conn || this.stopping) return;
    conn.ready = true;
    this.connectedSince = this.now();
    this.connects++;
    this.backoff.connected();
    this.options.log?.info(`connected to ${this.options.url} (bdSeq ${conn.bdSeq})`);
    this.emit("connected", { bdSeq: conn.bdSeq });
  }

  private deliver(conn: Connection, topic: string, payload: Buffer, packet: IncomingPacket): void {
    if (conn !== this.conn || !topic.startsWith(this.topics.cmdFilter.slice(0, -1))) return;
    for (const handler of this.handlers) {
      // A failing handler is logged; it never takes the link (or the process) down.
      try {
        const result = handler(topic, payload, packet);
        if (result && typeof (result as Promise<void>).catch === "function") {
          (result as Promise<void>).catch((err: unknown) =>
            this.options.log?.warn(`message handler failed on ${topic}: ${errorLine(err)}`),
          );
        }
      } catch (err) {
        this.options.log?.warn(`message handler failed on ${topic}: ${errorLine(err)}`);
      }
    }
  }

  private onClose(conn: Connection, reason: string): void {
    if (conn.closed) return;
    conn.closed = true;
    const wasReady = conn.ready;
    conn.ready = false;
    if (!this.stopping) this.lastError = reason;
    if (wasReady) this.connectedSince = undefined;
    const stream = conn.client.stream as { bytesRead?: unknown; bytesWritten?: unknown } | undefined;
    if (typeof stream?.bytesRead === "number") this.closedBytesIn += stream.bytesRead;
    if (typeof stream?.bytesWritten === "number") this.closedBytesOut += stream.bytesWritten;
    const lost = new LinkError(`link: connection lost before PUBACK (${reason})`);
    for (const p of conn.pending) p.reject(lost);
    conn.pending.clear();
    // Releases mqtt.js's timers (keepalive, connack); the client is never used again.
    conn.client.removeAllListeners("message");
    conn.client.end(true);
    if (this.conn === conn) this.conn = null;
    if (wasReady) {
      this.options.log?.info(`disconnected (${reason})`);
      this.emit("disconnected", { bdSeq: conn.bdSeq, reason });
    } else if (!this.stopping) {
      // At most one line per attempt, and attempts are at least seconds apart once the backoff has grown.
      this.options.log?.info(`connection attempt ${conn.bdSeq} to ${this.options.url} failed (${reason})`);
    }
    if (!this.stopping) this.scheduleAttempt();
  }

  private scheduleAttempt(): void {
    if (this.stopping || this.timer !== null) return;
    const delay = this.backoff.next();
    this.options.log?.debug(() => `reconnecting in ${delay} ms`);
    this.timer = this.timers.setTimeout(() => {
      this.attempting = this.attempt();
    }, delay);
  }

  private withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const handle = this.timers.setTimeout(() => reject(new LinkError(`link: timed out after ${ms} ms`)), ms);
      promise.then(
        (v) => {
          this.timers.clearTimeout(handle);
          resolve(v);
        },
        (err: unknown) => {
          this.timers.clearTimeout(handle);
          reject(err);
        },
      );
    });
  }
}
