// The release tree on disk (board/install/README.md, "Layout"): /opt/sharenode/current -> releases/A or
// releases/B, one release per slot, and the files the agent and the launcher (board/install/launcher.sh) leave each
// other there. This module is the agent's half of that conversation; the launcher's half is sh. Every change is
// durable before the next step: files and the slot fsynced before the marker, the marker before `current`
// switches, `current` switched with one rename(2).
//
//   trial              "SLOT PREV BUILD TRIES DEADLINE": SLOT is on trial (the launcher counts TRIES, watches
//                      DEADLINE); removed by the agent on commit, by the launcher on rollback
//   rollback-request   "CODE: reason": the agent (or the launcher's watch) asks to go back to PREV
//   rolledback         "BUILD CODE: reason": the launcher went back; the previous release reports it, then removes it
//   last-exit          the exit status of the last try of a trial
import {
  copyFile,
  mkdir,
  open,
  readFile,
  readlink,
  realpath,
  rename,
  rm,
  stat,
  statfs,
  symlink,
  unlink,
} from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { fsyncDir, writeFileAtomic } from "../durable/atomic.js";
import { errnoCode } from "../util/errors.js";
import { manifestDefect, type Manifest } from "./release.js";

export type Slot = "A" | "B";
/** The agent's exit status that asks the launcher to start it again (a switched release, a rollback asked for). */
export const RESTART_EXIT_STATUS = 75;
/** The file a slot must have: what the launcher runs. */
export const ENTRY_FILE = "sharenode.js";
/** The signed manifest, kept in the slot it describes: what the release is, for status and the next offer. */
export const SLOT_MANIFEST = "manifest.json";

export interface TrialMarker {
  slot: Slot;
  prev: Slot;
  build: number;
  tries: number;
  /** Seconds the launcher gives a try to commit before it calls it hung. */
  deadline: number;
}

/** What runs now: its slot and release, or none (a checkout, `npm start`, a bundle run by hand). */
export interface RunningRelease {
  /** The release tree (/opt/sharenode), when the agent runs from a slot of one. */
  tree: ReleaseTree | undefined;
  slot: Slot | undefined;
  /** The build of the slot's manifest; 0 without one (the first install by install.sh or a package). */
  build: number;
  version: string;
}

export function otherSlot(slot: Slot): Slot {
  return slot === "A" ? "B" : "A";
}

/**
 * Where the agent runs from: `<tree>/releases/<A|B>/sharenode.js` (through `current`, resolved) is a release
 * tree's slot; anything else is not, and cannot be updated over the air.
 */
export async function runningRelease(scriptPath: string | undefined, packageVersion: string): Promise<RunningRelease> {
  const none: RunningRelease = { tree: undefined, slot: undefined, build: 0, version: packageVersion };
  if (!scriptPath) return none;
  let real: string;
  try {
    real = await realpath(scriptPath);
  } catch {
    return none;
  }
  const slotDir = dirname(real);
  const slot = basename(slotDir);
  if ((slot !== "A" && slot !== "B") || basename(dirname(slotDir)) !== "releases") return none;
  const tree = new ReleaseTree(dirname(dirname(slotDir)));
  const manifest = await tree.slotManifest(slot);
  return { tree, slot, build: manifest?.build ?? 0, version: manifest?.version ?? packageVersion };
}

export class ReleaseTree {
  constructor(readonly root: string) {}

  private path(name: string): string {
    return join(this.root, name);
  }

  slotDir(slot: Slot): string {
    return join(this.root, "releases", slot);
  }

  /** The slot `current` names, or undefined. */
  async currentSlot(): Promise<Slot | undefined> {
    const target = await readlink(this.path("current")).catch(() => undefined);
    return target === "releases/A" ? "A" : target === "releases/B" ? "B" : undefined;
  }

  /**
   * The manifest body kept in a slot (unchecked signature: it was checked when the slot was written, and the slot
   * is the agent's own), or undefined when there is none or it is not one.
   */
  async slotManifest(slot: Slot): Promise<Manifest | undefined> {
    try {
      const envelope = JSON.parse(await readFile(join(this.slotDir(slot), SLOT_MANIFEST), "utf8")) as {
        body?: unknown;
      };
      const body = JSON.parse(String(envelope.body)) as unknown;
      return manifestDefect(body) === undefined ? (body as Manifest) : undefined;
    } catch {
      return undefined;
    }
  }

  /** Bytes a release written into `slot` may take: free on the tree's filesystem, plus what the slot holds now. */
  async roomFor(slot: Slot): Promise<number> {
    const fs = await statfs(this.root);
    let inSlot = 0;
    for (const f of (await this.slotManifest(slot))?.files ?? []) {
      try {
        inSlot += (await stat(join(this.slotDir(slot), f.path))).size;
      } catch (err) {
        if (errnoCode(err) !== "ENOENT") throw err;
      }
    }
    return Number(fs.bavail) * Number(fs.bsize) + inSlot;
  }

  /**
   * Writes a slot whole: the old release in it removed first (its room is what roomFor counted on; the system
   * flash of these boxes has no room for three releases), every file copied into `releases/.<slot>.new/`, each
   * fsynced, the manifest beside them, then the directory renamed into place and the releases directory fsynced.
   * A power cut leaves no slot or the whole new one, never a part; the slot `current` names is never written.
   */
  async writeSlot(slot: Slot, files: { path: string; from: string }[], manifestEnvelope: Uint8Array): Promise<void> {
    if ((await this.currentSlot()) === slot) throw new Error(`slot ${slot} is the one running: it is never written`);
    const releases = join(this.root, "releases");
    const staging = join(releases, `.${slot}.new`);
    await rm(staging, { recursive: true, force: true });
    await rm(this.slotDir(slot), { recursive: true, force: true });
    await fsyncDir(releases);
    await mkdir(staging, { recursive: true, mode: 0o755 });
    const dirs = new Set<string>([staging]);
    for (const f of files) {
      const to = join(staging, f.path);
      await mkdir(dirname(to), { recursive: true, mode: 0o755 });
      dirs.add(dirname(to));
      await copyFile(f.from, to);
      await syncFile(to);
    }
    const manifestPath = join(staging, SLOT_MANIFEST);
    await writeFileAtomic(manifestPath, manifestEnvelope, { mode: 0o644 });
    for (const d of dirs) await fsyncDir(d);
    await rename(staging, this.slotDir(slot));
    await fsyncDir(releases);
  }

  async readTrial(): Promise<TrialMarker | undefined> {
    const text = await readFile(this.path("trial"), "utf8").catch(() => undefined);
    if (text === undefined) return undefined;
    const [slot, prev, build, tries, deadline] = text.trim().split(/\s+/);
    const ints = [build, tries, deadline].map((s) => (s !== undefined && /^\d+$/.test(s) ? Number(s) : NaN));
    if ((slot !== "A" && slot !== "B") || prev !== otherSlot(slot) || ints.some(Number.isNaN)) return undefined;
    return { slot, prev, build: ints[0], tries: ints[1], deadline: ints[2] };
  }

  /** Puts `slot` on trial (the launcher counts its tries from 0), durably, before `current` switches to it. */
  async markTrial(marker: Omit<TrialMarker, "tries">): Promise<void> {
    const text = `${marker.slot} ${marker.prev} ${marker.build} 0 ${marker.deadline}\n`;
    await writeFileAtomic(this.path("trial"), text, { mode: 0o644 });
  }

  /** Points `current` at `slot` with one rename(2), then fsyncs the tree. */
  async switchCurrent(slot: Slot): Promise<void> {
    const next = this.path(".current.new");
    await unlink(next).catch(ignoreMissing);
    await symlink(`releases/${slot}`, next);
    await rename(next, this.path("current"));
    await fsyncDir(this.root);
  }

  /** Commits the trial (mark-good): the launcher no longer counts tries or watches the deadline. */
  async endTrial(): Promise<void> {
    await unlink(this.path("trial")).catch(ignoreMissing);
    await unlink(this.path("last-exit")).catch(ignoreMissing);
    await fsyncDir(this.root);
  }

  /** Asks the launcher to go back to the previous slot at the next start ("CODE: reason"). */
  async requestRollback(codeAndReason: string): Promise<void> {
    await writeFileAtomic(this.path("rollback-request"), `${oneLine(codeAndReason)}\n`, { mode: 0o644 });
  }

  /** The launcher's report of a rollback: the build and "CODE: reason"; undefined when there is none. */
  async readRolledback(): Promise<{ build: number; code: string; reason: string } | undefined> {
    const text = await readFile(this.path("rolledback"), "utf8").catch(() => undefined);
    if (text === undefined) return undefined;
    const m = /^(\d+) ([a-z-]+): ?(.*)$/s.exec(text.trim());
    if (!m) return { build: 0, code: "unknown", reason: oneLine(text) };
    return { build: Number(m[1]), code: m[2], reason: oneLine(m[3]) };
  }

  async clearRolledback(): Promise<void> {
    await unlink(this.path("rolledback")).catch(ignoreMissing);
  }
}

async function syncFile(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function ignoreMissing(err: unknown): void {
  if (errnoCode(err) !== "ENOENT") throw err;
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, " ").trim().slice(0, 300);
}
