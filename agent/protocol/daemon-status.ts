// The daemon's status: what `Agent.status()` (agent/agent.ts) builds, the result of the signed `status` command
// over MQTT and of `{"op":"status"}` on the console's control socket (agent/console/control.ts). One contract for
// the side that writes it and the sides that read it (the console, fleet tools).
//
// It travels as JSON, so a field typed `x?: T` is absent rather than undefined on the wire. The types are written
// out here rather than taken from the features (MqttLink's stats, the store's status, the health governors): the
// wire stays what this file says, and a feature whose own type drifts from it no longer compiles into status().
//
// A reader gets the status from another process, perhaps of another version (during an update the new release's
// console asks the old daemon), so it takes a `ReportedStatus`: every field may be missing, others may be there,
// and a value is checked before it is shown.

// A type alias, not an interface: only an object type alias is assignable to ReportedStatus's open field list.
export type DaemonStatus = {
  /** 32 hex digits. */
  deviceId: string;
  /** The device's Ed25519 public key, 64 hex digits. */
  publicKey: string;
  /** sharenode's version (package.json). */
  version: string;
  uptimeSeconds: number;
  /** Epoch ms the daemon started. */
  startedAt: number;
  pid: number;
  link: LinkStatus;
  outbox: OutboxStatus;
  store: StoreRunning | StoreStopped;
  board: BoardStatus;
  /** Updates over the air (agent/ota/updater.ts status()): the release running, the update's phase, the floor. */
  ota?: Record<string, unknown>;
  /** Compute tasks (agent/compute/queue.ts); absent when compute is not running (no store or no ledger). */
  compute?: ComputeStatus;
  health: HealthStatus;
};

export interface ComputeStatus {
  queued: number;
  running: number;
  /** Since the daemon started. */
  done: number;
  failed: number;
  cpuMs: number;
  /** Tasks at most at once, and the owner's share they follow (share.cpuPercent). */
  lanes: number;
  cpuPercent: number;
  /** True while the thermal governor holds compute. */
  paused: boolean;
}

export interface LinkStatus {
  connected: boolean;
  /** The broker URL; never with credentials (the config refuses a URL with a user or password in it). */
  url: string;
  /** Connections that reached "connected". */
  connects: number;
  /** Connection attempts after the first one. */
  reconnects: number;
  /** The MQTT session counter of the current (or last) attempt. */
  bdSeq: number;
  bytesIn: number;
  bytesOut: number;
  /** Epoch ms of the current connection's "connected"; absent while not connected. */
  connectedSince?: number;
  /** Why the last connection or attempt ended, one line; "" while none has. */
  lastError: string;
}

export interface OutboxStatus {
  /** Records not yet acknowledged by the broker. */
  depth: number;
  /** The outbox log's size on disk. */
  bytes: number;
  /** The bytes of the records not yet acknowledged. */
  pendingBytes: number;
  /** Telemetry records dropped to keep the outbox under its limit. */
  dropped: number;
  waiting: number;
  inFlight: number;
  compactions: number;
  /** The next sequence number of each stream. */
  next: Record<string, number>;
}

/** The last scrub pass. */
export interface ScrubSummary {
  /** Epoch ms it ended. */
  at: number;
  checked: number;
  corrupt: number;
  missing: number;
}

export interface StoreRunning {
  running: true;
  objects: number;
  usedBytes: number;
  quotaBytes: number;
  availableBytes: number;
  pinned: number;
  /** Free space the store never uses. */
  reserveBytes: number;
  /** Objects moved to quarantine/. */
  quarantined: number;
  /** null while no scrub has run since the daemon started. */
  lastScrub: ScrubSummary | null;
}

/** The store refused to start (wrong or missing disk, ...): the daemon runs on without it. */
export interface StoreStopped {
  running: false;
  /** The refusal's code (agent/store/disk-marker.ts), or start-failed. */
  code: string;
  reason: string;
}

export interface BoardStatus {
  name: string;
  description: string;
  /** The status LED's pattern: booting, online, offline, updating, error. */
  led: string;
  problems: string[];
}

/** A part is absent until it has started (a `status` command can arrive over MQTT while the daemon starts). */
export interface HealthStatus {
  thermal?: {
    throttled: boolean;
    /** The last reading, degrees C; absent before the first one and while the sensor cannot be read. */
    temperatureC?: number;
    reason: string;
  };
  limits?: {
    /** null: no limit. */
    uploadBytesPerSecond: number | null;
    /** null: no limit. */
    downloadBytesPerSecond: number | null;
    /** False while throttled: fetching waits. */
    fetchAllowed: boolean;
    cpuPercent: number;
    scrubAllowed: boolean;
    computeAllowed: boolean;
    /** config `store.quota`. */
    diskQuota: { bytes: number } | { share: number };
    throttled: boolean;
    /** The active upload window's index in `share.uploadWindows`; absent outside every window. */
    window?: number;
    reason: string;
  };
  watchdog?: {
    /** Absent when the box has no hardware watchdog (or it could not be opened). */
    device?: string;
    timeoutSeconds?: number;
    petIntervalMs?: number;
    pets: number;
    /** Why petting is skipped right now, if it is. */
    skipping?: string;
  };
  /** With the notifications sent so far, by kind. */
  systemd?: {
    /** Whether systemd asked for notifications (NOTIFY_SOCKET). */
    notify: boolean;
    ready: number;
    watchdog: number;
    status: number;
    stopping: number;
  };
}

type KeysOf<T> = T extends unknown ? keyof T : never;
type ValueAt<T, K extends PropertyKey> = T extends unknown ? (K extends keyof T ? T[K] : never) : never;

/**
 * A value as a reader receives it from another process: every field of every object may be missing. The members of
 * a union of objects (`StoreRunning | StoreStopped`) read as one object, so a reader checks `running`, then each
 * field it shows.
 */
export type Reported<T> = [T] extends [readonly (infer U)[]]
  ? Reported<U>[]
  : [T] extends [object]
    ? { [K in KeysOf<T>]?: Reported<ValueAt<T, K>> }
    : T extends object
      ? Reported<T>
      : T;

/** The status as a reader takes it: DaemonStatus's fields, any of which may be missing, and perhaps fields it does not know. */
export type ReportedStatus = Reported<DaemonStatus> & { [field: string]: unknown };
