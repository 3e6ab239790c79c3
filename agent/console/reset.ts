// `factory-reset`: the box forgets who it is and what it stored, and keeps how it is configured. What goes:
//   - every entry of the state directory (device key, outbox, nonce log, adoption record of the data disk, bdSeq
//     counter, locks): at the next start the daemon makes a new device key, so the box is a new device;
//   - the store on the data disk (objects/, index.log, quarantine/, tmp/, the store lock and the disk marker), but
//     only when the disk marker names this device: a disk of another device, or one this device cannot prove is
//     its own, is left alone. Other files on the data disk are kept.
// What stays: the config file (even when it lives in the state directory) and everything else on the box.
import { spawn } from "node:child_process";
import { readdir, readFile, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { AGENT_LOCK_FILE, lockOwner, STORE_LOCK_FILE } from "../durable/pid-lock.js";
import { DEVICE_KEY_FILE } from "../identity/device-key.js";
import { ADOPTION_STATE_NAME, MARKER_NAME } from "../store/disk-marker.js";
import { errnoCode, errorLine } from "../util/errors.js";

/** What the console may do to the machine; tests replace it. */
export interface SystemActions {
  /** Reboots the box (default: runs `reboot`). Resolves when the request was accepted. */
  reboot(): Promise<void>;
}

export const defaultSystemActions: SystemActions = {
  reboot: () =>
    new Promise<void>((resolvePromise, reject) => {
      const child = spawn("reboot", [], { stdio: "ignore" });
      child.once("error", (err: NodeJS.ErrnoException) =>
        reject(new Error(err.code === "ENOENT" ? "reboot: command not found" : `reboot: ${err.message}`)),
      );
      child.once("exit", (code, signal) =>
        code === 0 ? resolvePromise() : reject(new Error(`reboot exited with ${code ?? signal}`)),
      );
    }),
};

/** Why each state-directory entry exists, for the explanation. */
const STATE_FILES: Record<string, string> = {
  [DEVICE_KEY_FILE]: "the device key: the box gets a new key and device id at the next start",
  "outbox.log": "messages not yet delivered to the fleet",
  "nonces.log": "the record of commands already run",
  "tasks.log": "the fetch tasks accepted from the fleet",
  [ADOPTION_STATE_NAME]: "the adoption record of the data disk",
  bdseq: "the MQTT session counter",
  [AGENT_LOCK_FILE]: "the daemon's lock file",
  "control.sock": "the daemon's control socket",
};

const STORE_ENTRIES: Record<string, string> = {
  objects: "the stored objects and their outboards",
  "index.log": "the store's index",
  quarantine: "objects the scrub found corrupt",
  tmp: "unfinished ingests",
  fetch: "fetches in progress (agent/tasks)",
  [STORE_LOCK_FILE]: "the store's lock file",
  [MARKER_NAME]: "the disk marker naming this device",
};

function isStoreEntry(name: string): boolean {
  return (
    name in STORE_ENTRIES ||
    name.startsWith(".index.log.tmp-") ||
    name.startsWith(`.${MARKER_NAME}.tmp-`) ||
    name.startsWith(".sharenode-selftest-")
  );
}

export interface ResetTarget {
  path: string;
  what: string;
}

export interface ResetPlan {
  stateDir: string;
  state: ResetTarget[];
  dataDir?: string;
  data: ResetTarget[];
  /** Why the data directory is left alone, when it is. */
  dataLeftAlone?: string;
  /** The config file, kept. */
  configFile?: string;
}

/**
 * The process holding the store's lock in `dataDir` (`sharenode store` at work), while it is alive and is not this
 * one: factory-reset does not pull a store from under it.
 */
export async function storeLockHolder(dataDir: string): Promise<number | undefined> {
  const pid = await lockOwner(join(dataDir, STORE_LOCK_FILE));
  return pid !== process.pid ? pid : undefined;
}

/**
 * Whose the data disk is, by its marker: `owner` is the node id it names; neither field when there is no marker
 * (or no data directory); `unreadable` says why the marker cannot tell.
 */
export async function readMarkerOwner(dataDir: string): Promise<{ owner?: string; unreadable?: string }> {
  try {
    const marker = JSON.parse(await readFile(join(dataDir, MARKER_NAME), "utf8")) as { nodeId?: unknown } | null;
    return typeof marker?.nodeId === "string"
      ? { owner: marker.nodeId }
      : { unreadable: "its disk marker names no device" };
  } catch (err) {
    const code = errnoCode(err);
    return code === "ENOENT" || code === "ENOTDIR"
      ? {}
      : { unreadable: `its disk marker cannot be read (${code ?? "not JSON"})` };
  }
}

/**
 * What factory-reset would erase. The store in `dataDir` only when its disk marker names `deviceId` (this device's
 * id; undefined: no readable device key).
 */
export async function planReset(options: {
  stateDir: string;
  dataDir?: string;
  configFile?: string;
  deviceId?: string;
}): Promise<ResetPlan> {
  const stateDir = resolve(options.stateDir);
  const configFile = options.configFile !== undefined ? resolve(options.configFile) : undefined;
  const state: ResetTarget[] = [];
  for (const name of (await readdir(stateDir).catch(() => [] as string[])).sort()) {
    const path = join(stateDir, name);
    if (path === configFile) continue;
    if (configFile !== undefined && configFile.startsWith(path + "/")) continue; // a directory holding the config
    state.push({
      path,
      what: STATE_FILES[name] ?? (name.startsWith(`${DEVICE_KEY_FILE}.`) ? "an unfinished device key" : ""),
    });
  }
  const plan: ResetPlan = { stateDir, state, data: [], ...(configFile ? { configFile } : {}) };
  if (options.dataDir === undefined) {
    plan.dataLeftAlone = "no data directory is configured";
    return plan;
  }
  const dataDir = resolve(options.dataDir);
  plan.dataDir = dataDir;
  const marker = await readMarkerOwner(options.dataDir);
  if (marker.unreadable !== undefined) plan.dataLeftAlone = marker.unreadable;
  else if (marker.owner === undefined)
    plan.dataLeftAlone = "it has no disk marker of this device (not mounted, or never used by it)";
  else if (options.deviceId === undefined)
    plan.dataLeftAlone = "without a device key this box cannot tell whether the disk is its own";
  else if (marker.owner !== options.deviceId) plan.dataLeftAlone = `its marker names another device (${marker.owner})`;
  if (plan.dataLeftAlone !== undefined) return plan;
  for (const name of (await readdir(dataDir).catch(() => [] as string[])).sort()) {
    if (!isStoreEntry(name)) continue;
    plan.data.push({ path: join(dataDir, name), what: STORE_ENTRIES[name] ?? "a leftover temp file" });
  }
  return plan;
}

/** The explanation shown before the confirmation. */
export function describePlan(plan: ResetPlan): string {
  const rows = (targets: ResetTarget[]) => {
    const width = Math.max(...targets.map((t) => t.path.length));
    return targets.map((t) => `    ${t.what ? `${t.path.padEnd(width)}  ${t.what}` : t.path}\n`).join("");
  };
  let text = "factory-reset erases:\n";
  text += `  in the state directory ${plan.stateDir}:\n`;
  text += plan.state.length > 0 ? rows(plan.state) : "    nothing (it is empty)\n";
  if (plan.dataDir !== undefined && plan.dataLeftAlone === undefined) {
    text += `  the store in the data directory ${plan.dataDir}:\n`;
    text += plan.data.length > 0 ? rows(plan.data) : "    nothing (no store there)\n";
  }
  text += "It keeps:\n";
  if (plan.configFile !== undefined) text += `  the config file ${plan.configFile}\n`;
  else text += "  the configuration (no config file is in use: environment and defaults)\n";
  if (plan.dataDir !== undefined && plan.dataLeftAlone === undefined) text += `  every other file in ${plan.dataDir}\n`;
  if (plan.dataLeftAlone !== undefined) {
    text += `  the data directory${plan.dataDir ? ` ${plan.dataDir}` : ""}, untouched: ${plan.dataLeftAlone}\n`;
  }
  return text;
}

/** Erases what the plan lists; returns one line per entry that could not be removed. */
export async function executePlan(plan: ResetPlan): Promise<string[]> {
  const failures: string[] = [];
  // The disk marker and the device key go last: a reset cut short can be run again, and still knows the disk
  // is this device's.
  const last = (t: ResetTarget) => t.path.endsWith(`/${MARKER_NAME}`) || t.path.endsWith(`/${DEVICE_KEY_FILE}`);
  const ordered = [
    ...plan.data.filter((t) => !last(t)),
    ...plan.data.filter(last),
    ...plan.state.filter((t) => !last(t)),
    ...plan.state.filter(last),
  ];
  for (const target of ordered) {
    try {
      await rm(target.path, { recursive: true, force: true });
    } catch (err) {
      failures.push(`could not remove ${target.path}: ${errnoCode(err) ?? errorLine(err)}`);
    }
  }
  return failures;
}
