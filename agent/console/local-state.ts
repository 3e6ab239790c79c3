// What the console can know without the daemon, read from the state directory and the data directory. Nothing
// here creates or repairs anything the daemon owns: the device key is read (never created), the data disk is
// judged without being adopted, the store's index and the outbox are scanned without being opened for writing.
// (The console usually runs as root and the daemon as its own user: a file the console rewrote would be root's.)
import { createPrivateKey, createPublicKey } from "node:crypto";
import { readFile, stat, statfs } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { HostPaths } from "../../board/host-paths.js";
import { AGENT_LOCK_FILE, lockOwner, STORE_LOCK_FILE } from "../durable/pid-lock.js";
import { loadConfigLenient, type LenientConfig } from "../config/config.js";
import { DEVICE_KEY_FILE, deviceIdOf } from "../identity/device-key.js";
import { readRecordLog } from "../durable/record-log.js";
import { scanOutboxFile } from "../link/outbox.js";
import { toHex } from "../util/hex.js";
import { AUTO_DATA_DIR, resolveAutoDataDir } from "../store/auto-data-dir.js";
import { hostDiskDiscovery } from "../store/disk-discovery.js";
import { inspectDataDisk, type DiskMarker } from "../store/disk-marker.js";
import type { DiskRefusalCode, Filesystem } from "../store/disks.js";
import { decodeRecord, replay } from "../store/index-log.js";
import { countQuarantined, defaultReserveBytes, footprint, quotaLimit } from "../store/object-store.js";
import { errnoCode, errorLine } from "../util/errors.js";

// --- config ----------------------------------------------------------------------------------------------------

/** The config as the console has it: what a broken config lacks or has wrong is its default, or undefined. */
export type ConsoleConfig = LenientConfig;

export interface LoadedConsoleConfig {
  config: ConsoleConfig;
  /** The config's problems, one line each (empty when it loads). */
  problems: string[];
}

/**
 * The config as the daemon would load it; when it has problems, they are kept for `status` and each wrong or
 * missing key falls back to its default (agent/config loadConfigLenient).
 */
export function loadConsoleConfig(
  file: string | undefined,
  env: Record<string, string | undefined>,
): LoadedConsoleConfig {
  return loadConfigLenient(file, env);
}

/** The broker URL fit to show: user and password (which a broken config may carry) replaced. */
export function showUrl(url: string | undefined): string {
  if (url === undefined) return "(not configured)";
  try {
    const u = new URL(url);
    const auth =
      u.username !== "" || u.password !== ""
        ? `${u.username !== "" ? "<redacted>" : ""}${u.password !== "" ? ":<redacted>" : ""}@`
        : "";
    return `${u.protocol}//${auth}${u.host}${u.pathname === "/" ? "" : u.pathname}${u.search}`;
  } catch {
    return "(not a URL)";
  }
}

// --- the device identity ----------------------------------------------------------------------------------------

export type IdentityRead =
  | { ok: true; deviceId: string; publicKeyHex: string; path: string; problem?: string }
  | { ok: false; missing: boolean; path: string; reason: string };

/**
 * The device id and public key from `<stateDir>/device-key.pem`, without creating it. The private key is parsed
 * only to derive the public key; its bytes never leave this function.
 */
export async function readDeviceIdentity(stateDir: string): Promise<IdentityRead> {
  const path = join(stateDir, DEVICE_KEY_FILE);
  let pem: Buffer;
  let mode: number;
  try {
    mode = (await stat(path)).mode;
    pem = await readFile(path);
  } catch (err) {
    const code = errnoCode(err);
    if (code === "ENOENT")
      return {
        ok: false,
        missing: true,
        path,
        reason: `no device key yet (${path}); the daemon creates it at its first start`,
      };
    return { ok: false, missing: false, path, reason: `cannot read the device key ${path}: ${code ?? "error"}` };
  }
  try {
    const key = createPrivateKey({ key: pem, format: "pem" });
    if (key.asymmetricKeyType !== "ed25519")
      return { ok: false, missing: false, path, reason: `${path} is not an Ed25519 private key` };
    const jwk = createPublicKey(key).export({ format: "jwk" });
    const raw = new Uint8Array(Buffer.from(String(jwk.x), "base64url"));
    const problem =
      (mode & 0o077) !== 0 ? `${path} is accessible by group or others: the daemon refuses it (chmod 600)` : undefined;
    return { ok: true, deviceId: deviceIdOf(raw), publicKeyHex: toHex(raw), path, ...(problem ? { problem } : {}) };
  } catch {
    return { ok: false, missing: false, path, reason: `${path} is not an unencrypted PEM private key` };
  } finally {
    pem.fill(0);
  }
}

// --- the daemon's pid lock ---------------------------------------------------------------------------------------

/** The pid in `<stateDir>/agent.lock` when that process is alive: a daemon runs on this state dir. */
export function lockHolder(stateDir: string): Promise<number | undefined> {
  return lockOwner(join(stateDir, AGENT_LOCK_FILE));
}

// --- the data disk ------------------------------------------------------------------------------------------------

export interface DiskPreview {
  dataDir: string;
  filesystem?: Filesystem;
  /** Whether the daemon would run its store here. */
  accepted: boolean;
  /** adopted: this device's disk; first-use: the daemon adopts it at start; refused; unknown (no mount table). */
  state: "adopted" | "first-use" | "refused" | "unknown";
  code?: DiskRefusalCode | "no-mount-table";
  /** One line. */
  reason: string;
  marker?: { nodeId: string; diskId: string };
}

/**
 * What the daemon's data-disk check would decide (agent/store/disk-marker.ts inspectDataDisk, which writes
 * nothing), with "first-use" where checkDataDisk would adopt the disk.
 */
export async function previewDataDisk(
  config: { dataDir: string; stateDir: string; allowSystemDisk: boolean },
  deviceId: string | undefined,
  paths: HostPaths,
): Promise<DiskPreview> {
  // "auto" stays "auto" until it resolves to a directory (never a directory named auto in the working directory).
  let dataDir = config.dataDir === AUTO_DATA_DIR ? AUTO_DATA_DIR : resolve(config.dataDir);
  let found;
  try {
    if (config.dataDir === AUTO_DATA_DIR) {
      // The directory the daemon's "auto" would take (agent/store/auto-data-dir.ts), judged like a configured one.
      const discovery = hostDiskDiscovery(paths);
      const auto = await resolveAutoDataDir({ stateDir: config.stateDir, nodeId: deviceId, discovery });
      if (!auto.ok) {
        return { dataDir: config.dataDir, accepted: false, state: "refused", code: auto.code, reason: auto.reason };
      }
      dataDir = auto.dataDir;
    }
    found = await inspectDataDisk({ ...config, dataDir, nodeId: deviceId }, paths);
  } catch (err) {
    return { dataDir, accepted: false, state: "unknown", code: "no-mount-table", reason: errorLine(err) };
  }
  const markerOf = (m: DiskMarker | undefined) => (m ? { marker: { nodeId: m.nodeId, diskId: m.diskId } } : {});
  if (!found.ok) {
    return {
      dataDir,
      filesystem: found.filesystem,
      accepted: false,
      state: "refused",
      code: found.code,
      reason: found.reason,
      ...markerOf(found.marker),
    };
  }
  const { filesystem, marker } = found;
  if (marker && found.adoptedDiskId) {
    return {
      dataDir,
      filesystem,
      accepted: true,
      state: "adopted",
      reason: `this device's disk ${marker.diskId}`,
      ...markerOf(marker),
    };
  }
  return {
    dataDir,
    filesystem,
    accepted: true,
    state: "first-use",
    reason: marker
      ? `disk ${marker.diskId} of this device, not yet recorded in the state dir: the daemon records it at start`
      : "no store here yet: the daemon adopts this disk at its first start",
    ...markerOf(marker),
  };
}

// --- the store, without the daemon ---------------------------------------------------------------------------------

export interface LocalStoreStatus {
  objects: number;
  pinned: number;
  usedBytes: number;
  quotaBytes: number;
  availableBytes: number;
  reserveBytes: number;
  quarantined: number;
  /** Ingests begun and not finished: the store settles them at its next start. */
  interrupted: number;
  /** Bytes at the end of index.log that do not form a record (a torn write), when there are any. */
  tornBytes: number;
  /** The live pid in store.lock: someone (the daemon, `sharenode store`) has the store open now. */
  lockedBy?: number;
}

export type LocalStore = { ok: true; status: LocalStoreStatus } | { ok: false; reason: string };

/**
 * The store's status from its index, read without opening the store: no lock taken, nothing repaired or
 * compacted (ObjectStore.start() would, and as root it would leave files the daemon's user cannot write). Used
 * space and quota follow ObjectStore (footprint(), quotaBytes() in agent/store/object-store.ts).
 */
export async function readLocalStore(config: ConsoleConfig, preview: DiskPreview): Promise<LocalStore> {
  if (!preview.accepted || preview.state !== "adopted") return { ok: false, reason: preview.reason };
  const dataDir = preview.dataDir;
  const frames = await readRecordLog(join(dataDir, "index.log"));
  if (!frames.ok)
    return {
      ok: false,
      reason: frames.missing ? `no index yet in ${dataDir}: the store has not been started here` : frames.reason,
    };
  let state;
  try {
    state = replay(frames.records.map((r) => decodeRecord(r)));
  } catch (err) {
    return { ok: false, reason: `${join(dataDir, "index.log")}: ${errorLine(err)}` };
  }
  let fs;
  try {
    fs = await statfs(dataDir);
  } catch (err) {
    return { ok: false, reason: `statfs ${dataDir}: ${errnoCode(err) ?? errorLine(err)}` };
  }
  const block = fs.bsize || 4096;
  let usedBytes = 0;
  let pinned = 0;
  for (const e of state.live.values()) {
    usedBytes += footprint(e.length, block);
    if (e.pinned) pinned++;
  }
  const availableBytes = fs.bavail * fs.bsize;
  const reserveBytes = config.store.reserveBytes ?? defaultReserveBytes(fs.blocks * fs.bsize);
  const quotaBytes = quotaLimit(config.store.quota, usedBytes, availableBytes, reserveBytes);
  const lockedBy = await lockOwner(join(dataDir, STORE_LOCK_FILE));
  return {
    ok: true,
    status: {
      objects: state.live.size,
      pinned,
      usedBytes,
      quotaBytes,
      availableBytes,
      reserveBytes,
      quarantined: await countQuarantined(dataDir),
      interrupted: state.pending.size,
      tornBytes: frames.tornBytes,
      ...(lockedBy !== undefined ? { lockedBy } : {}),
    },
  };
}

// --- the outbox, without the daemon ----------------------------------------------------------------------------------

export type OutboxScan = { ok: true; depth: number; bytes: number } | { ok: false; reason: string };

/** Records waiting in `<stateDir>/outbox.log` (agent/link/outbox.ts scanOutboxFile: read, never opened for writing). */
export function scanOutbox(stateDir: string): Promise<OutboxScan> {
  return scanOutboxFile(join(stateDir, "outbox.log"));
}
