// The data disk's identity. At first use the store writes `<dataDir>/.sharenode-disk.json` (a random disk id and
// the node id) and keeps the disk id it adopted in its own state dir, on the system disk. At every start both are
// compared: a data directory without the marker the state expects is an unmounted disk (its mount point is an empty
// directory on the system flash), and nothing is written there.
import { randomBytes } from "node:crypto";
import { promises as fsp } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { HostPaths } from "../../board/host-paths.js";
import { removeStaleTemps, writeFileAtomic } from "../durable/atomic.js";
import {
  locateDir,
  notADirectory,
  refuseDataDisk,
  showPath,
  whereIs,
  type DiskRefusalCode,
  type Filesystem,
  type StatfsFn,
} from "./disks.js";
import { errnoCode } from "../util/errors.js";

export const MARKER_NAME = ".sharenode-disk.json";
/** The adoption record in the agent's state dir. */
export const ADOPTION_STATE_NAME = "data-disk.json";

export interface DiskMarker {
  v: 1;
  nodeId: string;
  /** 16 random bytes, hex: names this disk for as long as the marker lives on it. */
  diskId: string;
  /** ISO 8601, when the disk was first adopted. */
  createdAt: string;
  /** fstype and device at adoption; informative only (sda1 may be sdb1 after the next boot). */
  fstype: string;
  device: string;
}

interface AdoptionState {
  v: 1;
  nodeId: string;
  diskId: string;
  dataDir: string;
  adoptedAt: string;
}

export interface DataDiskOptions {
  dataDir: string;
  /** The agent's own state directory (on the system disk). */
  stateDir: string;
  nodeId: string;
  allowSystemDisk?: boolean;
  now?: () => Date;
}

export type DataDiskCheck =
  | {
      ok: true;
      dataDir: string;
      marker: DiskMarker;
      filesystem: Filesystem;
      /** `new`: marker and state written now; `re-adopted`: the marker was there, the state was written now. */
      adopted: "new" | "re-adopted" | "known";
    }
  | { ok: false; code: DiskRefusalCode; reason: string; filesystem: Filesystem };

const DISK_ID = /^[0-9a-f]{32}$/;

type MarkerRead = { marker: DiskMarker } | { missing: true } | { bad: string };

async function readMarker(file: string): Promise<MarkerRead> {
  let text: string;
  try {
    text = await fsp.readFile(file, "utf8");
  } catch (err) {
    const code = errnoCode(err);
    if (code === "ENOENT") return { missing: true };
    if (code === "EISDIR") return { bad: "is a directory" };
    throw err;
  }
  let m: Partial<DiskMarker>;
  try {
    m = JSON.parse(text) as Partial<DiskMarker>;
  } catch {
    return { bad: "is not JSON" };
  }
  if (typeof m !== "object" || m === null || m.v !== 1) return { bad: "has an unknown version" };
  if (typeof m.nodeId !== "string" || m.nodeId === "" || typeof m.diskId !== "string" || !DISK_ID.test(m.diskId)) {
    return { bad: "lacks a node id or a disk id" };
  }
  return {
    marker: {
      v: 1,
      nodeId: m.nodeId,
      diskId: m.diskId,
      createdAt: String(m.createdAt ?? ""),
      fstype: String(m.fstype ?? ""),
      device: String(m.device ?? ""),
    },
  };
}

/**
 * The adoption this node recorded for this data dir (any dir when `dataDir` is undefined); another node's or another
 * dir's record counts as none.
 */
async function readAdoption(
  file: string,
  nodeId: string,
  dataDir: string | undefined,
): Promise<AdoptionState | undefined> {
  let text: string;
  try {
    text = await fsp.readFile(file, "utf8");
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return undefined;
    throw err;
  }
  let s: Partial<AdoptionState>;
  try {
    s = JSON.parse(text) as Partial<AdoptionState>;
  } catch {
    throw new Error(`${showPath(file)} is not JSON; delete it to adopt the data disk again`);
  }
  if (s.v !== 1 || typeof s.diskId !== "string" || !DISK_ID.test(s.diskId)) {
    throw new Error(`${showPath(file)} is not a data-disk record; delete it to adopt the data disk again`);
  }
  if (s.nodeId !== nodeId || (dataDir !== undefined && s.dataDir !== dataDir)) return undefined;
  return s as AdoptionState;
}

/** The disk this node adopted and the data dir it was adopted at, from its state dir; undefined: none yet. */
export async function readAdoptedDisk(
  stateDir: string,
  nodeId: string,
): Promise<{ diskId: string; dataDir: string } | undefined> {
  const s = await readAdoption(join(resolve(stateDir), ADOPTION_STATE_NAME), nodeId, undefined);
  return s && typeof s.dataDir === "string" ? { diskId: s.diskId, dataDir: s.dataDir } : undefined;
}

/** The marker in `dataDir`, or undefined when there is none or it is unreadable as a marker. */
export async function readDiskMarker(dataDir: string): Promise<DiskMarker | undefined> {
  const read = await readMarker(join(dataDir, MARKER_NAME)).catch(() => ({ missing: true }) as const);
  return "marker" in read ? read.marker : undefined;
}

/** What inspectDataDisk found: a directory the store may use (and what is recorded of it), or why not. */
export type DataDiskInspection =
  | {
      ok: true;
      dataDir: string;
      filesystem: Filesystem;
      /** The disk's marker, when it has one (it names this device). */
      marker: DiskMarker | undefined;
      /** The disk this device recorded adopting here, when it did (the marker's disk). */
      adoptedDiskId: string | undefined;
    }
  | { ok: false; code: DiskRefusalCode; reason: string; filesystem: Filesystem; marker?: DiskMarker };

/**
 * The checks of checkDataDisk without its writes: whether `dataDir` may hold this device's store, and what marker
 * and adoption record there are. The console uses it to say what the daemon would do. With `nodeId` undefined (no
 * device key yet) no marker counts as foreign and no adoption record as this device's. Refusals (`ok: false`)
 * carry a machine code and a one-line reason:
 * - `marker-missing`: the state says this device adopted a disk here but there is no marker: the disk is probably
 *   not mounted (a transient condition: retry later)
 * - `foreign-node`: the marker belongs to another device
 * - `disk-replaced`: the marker's disk id is not the one this device adopted
 * - `bad-marker`: the marker is unreadable as a marker
 * - `system-disk`, `read-only`, `not-a-directory`: as chooseDataDisk
 * Unexpected I/O errors (EIO, EACCES) and a missing mount table are thrown.
 */
export async function inspectDataDisk(
  opts: Omit<DataDiskOptions, "nodeId" | "now"> & { nodeId: string | undefined },
  paths = new HostPaths(),
  statfs?: StatfsFn,
): Promise<DataDiskInspection> {
  const dataDir = resolve(opts.dataDir);
  const dir = showPath(dataDir);
  const markerFile = join(dataDir, MARKER_NAME);
  const stateFile = join(resolve(opts.stateDir), ADOPTION_STATE_NAME);

  const loc = await locateDir(dataDir, paths, statfs);
  const fs = loc.filesystem;
  const refuse = (code: DiskRefusalCode, reason: string, marker?: DiskMarker): DataDiskInspection => ({
    ok: false,
    code,
    reason,
    filesystem: fs,
    ...(marker ? { marker } : {}),
  });

  const notDir = notADirectory(loc);
  if (notDir) return refuse(notDir.code, notDir.message);

  const adoption = opts.nodeId === undefined ? undefined : await readAdoption(stateFile, opts.nodeId, dataDir);
  const read: MarkerRead = loc.exists ? await readMarker(markerFile) : { missing: true };
  if ("bad" in read) {
    return refuse(
      "bad-marker",
      `disk marker ${showPath(markerFile)} ${read.bad}; move it away to adopt this disk again`,
    );
  }
  const marker = "marker" in read ? read.marker : undefined;
  if (!marker && adoption) {
    return refuse(
      "marker-missing",
      `data directory ${dir} has no disk marker but this device adopted disk ${adoption.diskId} there; ` +
        `it is now on ${whereIs(fs)}: is the USB disk mounted? (to adopt a new disk, delete ${showPath(stateFile)})`,
    );
  }
  if (marker && opts.nodeId !== undefined && marker.nodeId !== opts.nodeId) {
    return refuse(
      "foreign-node",
      `data directory ${dir} holds the disk of device ${showPath(marker.nodeId)}, not of this device ` +
        `${showPath(opts.nodeId)}; use another directory, or delete ${showPath(markerFile)} to give the disk to this device`,
      marker,
    );
  }
  if (marker && adoption && marker.diskId !== adoption.diskId) {
    return refuse(
      "disk-replaced",
      `data directory ${dir} holds disk ${marker.diskId}, but this device adopted disk ${adoption.diskId}; ` +
        `was the disk replaced? delete ${showPath(stateFile)} to adopt this one`,
      marker,
    );
  }
  const refusal = refuseDataDisk(fs, dataDir, opts.allowSystemDisk);
  if (refusal) return refuse(refusal.code, refusal.message, marker);
  return { ok: true, dataDir, filesystem: fs, marker, adoptedDiskId: adoption?.diskId };
}

/**
 * Checks that `dataDir` is the data disk this device adopted (inspectDataDisk), adopting it at first use: writes
 * the marker on the disk and the adoption record in the state dir. Never writes to a refused directory.
 */
export async function checkDataDisk(
  opts: DataDiskOptions,
  paths = new HostPaths(),
  statfs?: StatfsFn,
): Promise<DataDiskCheck> {
  if (opts.nodeId === "") throw new Error("checkDataDisk: empty node id");
  const found = await inspectDataDisk(opts, paths, statfs);
  if (!found.ok) return { ok: false, code: found.code, reason: found.reason, filesystem: found.filesystem };
  const { dataDir, filesystem: fs, marker } = found;
  const markerFile = join(dataDir, MARKER_NAME);
  const stateFile = join(resolve(opts.stateDir), ADOPTION_STATE_NAME);
  const at = (opts.now ?? (() => new Date()))().toISOString();
  let adopted: "new" | "re-adopted" | "known" = "known";
  let chosen = marker;
  if (!chosen) {
    chosen = {
      v: 1,
      nodeId: opts.nodeId,
      diskId: randomBytes(16).toString("hex"),
      createdAt: at,
      fstype: fs.fstype,
      device: fs.device,
    };
    await fsp.mkdir(dataDir, { recursive: true });
    await removeStaleTemps(markerFile); // left by a power cut during an earlier first use
    await writeFileAtomic(markerFile, JSON.stringify(chosen, null, 2) + "\n");
    adopted = "new";
  }
  if (found.adoptedDiskId === undefined) {
    const state: AdoptionState = { v: 1, nodeId: opts.nodeId, diskId: chosen.diskId, dataDir, adoptedAt: at };
    await fsp.mkdir(dirname(stateFile), { recursive: true, mode: 0o700 });
    await removeStaleTemps(stateFile);
    await writeFileAtomic(stateFile, JSON.stringify(state, null, 2) + "\n");
    if (adopted === "known") adopted = "re-adopted";
  }
  return { ok: true, dataDir, marker: chosen, filesystem: fs, adopted };
}
