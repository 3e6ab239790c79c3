// What several console commands check or print the same way. Values from the daemon come from another process
// (agent/protocol/daemon-status.ts: any may be missing): `num` and `str` take only what has the right type.
import { readFile } from "node:fs/promises";
import { showPath } from "../../store/disks.js";
import { ConsoleError } from "../command-api.js";
import type { DaemonState } from "../context.js";
import { bytes, duration, plural, time } from "../format.js";
import type { DiskPreview } from "../local-state.js";
import { errnoCode, errorLine } from "../../util/errors.js";

export function num(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

export function str(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}

export function noArgs(name: string, args: string[]): void {
  if (args.length > 0) throw new ConsoleError(`${name} takes no arguments`);
}

/** The daemon in one line: running since when (and its pid), or why not. */
export function daemonLine(state: DaemonState, now: number): string {
  if (state.running) {
    if (state.error !== undefined) return `running, but ${state.error}`;
    const s = state.status;
    const up = num(s.uptimeSeconds);
    const since = num(s.startedAt) ?? (up !== undefined ? now - up * 1000 : undefined);
    const pid = num(s.pid) !== undefined ? `, pid ${s.pid}` : "";
    return since !== undefined
      ? `running since ${time(since)} (up ${duration((now - since) / 1000)}${pid})`
      : `running${pid}`;
  }
  if (state.lockPid !== undefined) {
    return `running as pid ${state.lockPid}, but its control socket does not answer (${state.why}); live facts are not available`;
  }
  return `not running (${state.why})`;
}

/** Why live facts are missing, when no daemon answers ("" when one does). */
export function notRunningNote(state: DaemonState): string {
  if (state.running) return "";
  return state.lockPid !== undefined
    ? `the daemon (pid ${state.lockPid}) does not answer`
    : "the daemon is not running";
}

/** The data directory and the filesystem it is on. */
export function filesystemLine(preview: DiskPreview): string {
  const fs = preview.filesystem;
  if (!fs) return showPath(preview.dataDir);
  return `${showPath(preview.dataDir)} on ${showPath(fs.device)} (${fs.mountPoint}, ${fs.fstype}, ${fs.kind})`;
}

export function storeSummary(s: { objects?: number; usedBytes?: number; quotaBytes?: number }): string {
  const objects = num(s.objects);
  return `${objects !== undefined ? plural(objects, "object") : "? objects"}, ${bytes(num(s.usedBytes))} used of ${bytes(num(s.quotaBytes))} quota`;
}

export function temperature(c: number | undefined): string {
  return c === undefined ? "unreadable" : `${c.toFixed(1)} C`;
}

/** A PEM file the config names (CA, client certificate or key); undefined when it names none. */
export async function readPem(path: string | undefined, what: string): Promise<string | undefined> {
  if (path === undefined) return undefined;
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    throw new Error(`cannot read ${what} ${path}: ${errnoCode(err) ?? errorLine(err)}`, { cause: err });
  }
}
