// The agent's side of an update (issue 13): take an offer, fetch the release's files as verified tasks, write the
// inactive slot, put it on trial and switch `current` to it, then ask the launcher for a restart; in the new
// release, hold the trial to its health gate (connected to the broker, selftest passed, the gate time run) and
// commit, or ask to go back; in the previous release after a rollback, report why. The state (agent/ota/state.ts)
// is written before each risky step, and start() takes up whatever step a power cut interrupted.
//
// The launcher (board/install/launcher.sh) is the other half: it counts the tries of a release on trial, stops
// one that does not commit by its deadline, and switches back. slots.ts is the files they share.
import { readFile, stat, unlink } from "node:fs/promises";
import { dirname, join } from "node:path";
import { writeFileAtomic } from "../durable/atomic.js";
import { CommandRefused } from "../link/command-gate.js";
import type { Logger } from "../util/log.js";
import { errorLine } from "../util/errors.js";
import { isPlainObject } from "../util/guards.js";
import { checkOffer } from "./offer.js";
import type { Manifest } from "./release.js";
import { ENTRY_FILE, otherSlot, type RunningRelease, type Slot } from "./slots.js";
import type { OtaState, OtaStateStore } from "./state.js";

/** The software's name in manifests: releases for another name are refused. */
export const RELEASE_NAME = "sharenode";
const MAX_SOURCES = 16;
/** The launcher's grace past the gate before it calls a trial hung: the agent's own start, on a slow box. */
export function trialDeadlineSeconds(gateSeconds: number): number {
  return gateSeconds + Math.min(120, Math.max(10, gateSeconds));
}

/** Where one file of a release comes from: origins (base URLs of a `release pack` directory) and boxes. */
export interface OfferSources {
  /** Base URLs of a directory `sharenode release pack` wrote: `<base>/objects/<blake3>` and its `.obao`. */
  origins: string[];
  /** Other boxes of the fleet serving the files: `<url>/v1/objects/<blake3>`, with an order per file. */
  boxes: { url: string; orders: Record<string, string> }[];
}

export interface ObjectFetch {
  objectId: string;
  length: number;
  sources: string[];
  outboard?: string;
  orders?: Record<string, string>;
}

export interface OtaUpdaterOptions {
  running: RunningRelease;
  state: OtaStateStore;
  /** Where the offer being installed is kept (<stateDir>/ota-offer.json), so a restart resumes it. */
  offerPath: string;
  releasePublicKey: string | undefined;
  gateSeconds: number;
  /** Fetches one object into the store as a task (verified as it arrives); rejects with the task's failure. */
  fetchObject(spec: ObjectFetch): Promise<void>;
  /** Stores a local file as the object `id` (checked against it); for `ota apply` from a USB stick. */
  ingestFile(path: string, id: string, length: number): Promise<void>;
  /** The store's file of an object, or undefined when it does not hold it. */
  objectFile(id: string): string | undefined;
  /**
   * Lets the store evict release files again (they are pinned while fetched: a release being installed must not
   * lose a file, and other boxes fetch the running release from this one).
   */
  unpin(ids: string[]): Promise<void>;
  /** Whether the link has been connected since this start. */
  connectedOnce(): boolean;
  /** The in-process selftest: undefined when it passed, else why not. */
  selftest(): Promise<string | undefined>;
  event(body: Record<string, unknown>): void;
  setUpdating(active: boolean): Promise<void>;
  /** Stops the agent and exits with RESTART_EXIT_STATUS: the launcher starts the release `current` names. */
  restart(reason: string): void;
  log: Logger;
  now?: () => number;
}

interface KeptOffer {
  manifest: string;
  sources: OfferSources;
  /** A local directory (`ota apply`) instead of sources. */
  dir?: string;
}

export class OtaUpdater {
  private readonly now: () => number;
  private gateTimer: NodeJS.Timeout | undefined;
  private onTrial = false;
  private selftestResult: string | undefined | null = null;
  private installing: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly o: OtaUpdaterOptions) {
    this.now = o.now ?? Date.now;
  }

  get release(): RunningRelease {
    return this.o.running;
  }

  /** Reads the update's state: status and offers are answered from here on, before start() takes anything up. */
  async load(): Promise<void> {
    await this.o.state.load();
  }

  /**
   * Takes up where the last run left off (after load()): resumes a download, finishes a switch a power cut
   * interrupted, starts the gate of a release on trial, commits one whose mark-good the power cut split, reports a
   * rollback.
   */
  async start(): Promise<void> {
    const { running, state } = this.o;
    const s = state.current;
    const tree = running.tree;
    if (!tree || !running.slot) return;
    const rolledback = await tree.readRolledback();
    const marker = await tree.readTrial();
    const inFlight = s.phase === "installed" || s.phase === "trial";
    if (rolledback && inFlight && running.build !== s.build) {
      await state.advance("rolledback", { reason: `${rolledback.code}: ${rolledback.reason}` });
      await tree.clearRolledback();
      this.o.log.warn(`build ${s.build} rolled back (${rolledback.code}: ${rolledback.reason})`);
      this.o.event({
        type: "ota.rolledback",
        build: s.build,
        version: s.version,
        code: rolledback.code,
        reason: rolledback.reason,
      });
      await this.unpinLater();
      return;
    }
    if (rolledback) await tree.clearRolledback();
    if (s.phase === "downloading") {
      this.resume();
      return;
    }
    if (!inFlight) return;
    if (running.build === s.build) {
      if (marker && marker.slot === running.slot) {
        if (s.phase === "installed") await state.advance("trial");
        this.o.event({ type: "ota.trial", build: s.build, version: s.version, slot: running.slot, try: marker.tries });
        this.armGate(marker.tries);
      } else {
        // The marker is gone (the launcher no longer counts tries): the commit began before the power went.
        await this.finishCommit();
      }
      return;
    }
    if (s.phase === "installed") {
      // The slot was written, then the power went before `current` switched (or before the restart).
      this.o.log.info(`build ${s.build} is installed in the other slot: switching to it`);
      await this.switchTo(s, otherSlot(running.slot));
      return;
    }
    // On trial, yet the previous release runs and no rollback is on record: `current` was switched back by hand.
    const reason = "switched back by hand (current names the previous slot)";
    await state.advance("rolledback", { reason: `manual: ${reason}` });
    this.o.event({ type: "ota.rolledback", build: s.build, version: s.version, code: "manual", reason });
  }

  stop(): void {
    this.stopped = true;
    if (this.gateTimer) clearTimeout(this.gateTimer);
  }

  /** The `ota.offer` command: checks the offer, keeps it, answers, then installs in the background. */
  async offer(args: Record<string, unknown>): Promise<Record<string, unknown>> {
    const sources = parseSources(args);
    const manifest = manifestText(args.manifest);
    return this.accept({ manifest, sources });
  }

  /**
   * `sharenode ota apply DIR` (through the console socket): a `release pack` directory on local disk, or the
   * manifest.json in one.
   */
  async apply(path: string): Promise<Record<string, unknown>> {
    const dir = (await stat(path).catch(() => undefined))?.isFile() ? dirname(path) : path;
    let manifest: string;
    try {
      manifest = await readFile(join(dir, "manifest.json"), "utf8");
    } catch (err) {
      throw new CommandRefused("bad-args", `${join(dir, "manifest.json")}: ${errorLine(err)}`);
    }
    return this.accept({ manifest, sources: { origins: [], boxes: [] }, dir });
  }

  /** The update's state and the release running, for `ota.status`, the console and `status`. */
  async status(): Promise<Record<string, unknown>> {
    const { running } = this.o;
    const s = this.o.state.current;
    const marker = running.tree ? await running.tree.readTrial() : undefined;
    return {
      version: running.version,
      build: running.build,
      slot: running.slot ?? null,
      updatable: running.tree !== undefined,
      phase: s.phase,
      installedBuild: Math.max(s.installedBuild, running.build),
      floor: s.floor,
      ...(s.build !== undefined ? { target: { build: s.build, version: s.version } } : {}),
      ...(s.reason ? { reason: s.reason } : {}),
      ...(marker ? { trial: { slot: marker.slot, try: marker.tries, deadlineSeconds: marker.deadline } } : {}),
      gateSeconds: this.o.gateSeconds,
    };
  }

  /** The console's `ota commit`: mark the release on trial good now, without waiting for the gate. */
  async commitNow(): Promise<Record<string, unknown>> {
    if (!this.onTrial) throw new CommandRefused("not-on-trial", "no release is on trial here");
    await this.commit();
    return this.status();
  }

  /** The console's `ota rollback`: give up the release on trial now. */
  async rollbackNow(reason: string): Promise<Record<string, unknown>> {
    if (!this.onTrial) throw new CommandRefused("not-on-trial", "no release is on trial here");
    await this.giveUp(`manual: ${reason}`);
    return { rollingBack: true };
  }

  private async accept(offer: KeptOffer): Promise<Record<string, unknown>> {
    const { running, state } = this.o;
    if (!running.tree || !running.slot)
      throw new CommandRefused(
        "not-updatable",
        "this agent does not run from a release slot (/opt/sharenode/releases/A or B, started by the launcher)",
      );
    if (!this.o.releasePublicKey)
      throw new CommandRefused("no-release-key", "ota.releasePublicKey is not set: no release can be checked");
    const s = state.current;
    const inactive = otherSlot(running.slot);
    const decision = checkOffer(new TextEncoder().encode(offer.manifest), {
      releasePublicKey: this.o.releasePublicKey,
      name: RELEASE_NAME,
      installedBuild: Math.max(s.installedBuild, running.build),
      floor: s.floor,
      freeBytes: await running.tree.roomFor(inactive),
    });
    if (!decision.ok) return this.refuse(decision.code, decision.reason, undefined);
    const m = decision.manifest;
    if (!m.files.some((f) => f.path === ENTRY_FILE))
      return this.refuse("bad-manifest", `the release has no ${ENTRY_FILE}, which the launcher runs`, m);
    if (s.phase === "downloading" || s.phase === "installed" || s.phase === "trial") {
      if (s.build === m.build) return { accepted: true, duplicate: true, build: m.build, phase: s.phase };
      return this.refuse("busy", `build ${s.build} is ${s.phase}: one update at a time`, m);
    }
    if (!offer.dir && offer.sources.origins.length + offer.sources.boxes.length === 0)
      throw new CommandRefused("bad-args", "sources: at least one origin or box");
    await writeFileAtomic(this.o.offerPath, JSON.stringify(offer), { mode: 0o600 });
    await state.advance("downloading", { build: m.build, version: m.version });
    this.o.log.info(
      `update to ${m.version} (build ${m.build}) accepted: ${m.files.length} files, ${decision.bytes} bytes`,
    );
    this.o.event({
      type: "ota.offered",
      build: m.build,
      version: m.version,
      files: m.files.length,
      bytes: decision.bytes,
    });
    this.resume();
    return { accepted: true, build: m.build, version: m.version };
  }

  private refuse(code: string, reason: string, m: Manifest | undefined): never {
    this.o.log.warn(`update refused (${code}): ${reason}`);
    this.o.event({ type: "ota.refused", ...(m ? { build: m.build, version: m.version } : {}), code, reason });
    throw new CommandRefused(code, reason);
  }

  /** Runs the download and install of the kept offer once (a second call while one runs is the same run). */
  private resume(): void {
    this.installing ??= this.install()
      .catch(async (err: unknown) => {
        const code = err instanceof CommandRefused ? err.code : "install-failed";
        const reason = errorLine(err);
        this.o.log.error(`update failed (${code}): ${reason}`);
        const s = this.o.state.current;
        this.o.event({ type: "ota.failed", build: s.build, version: s.version, code, reason });
        if (s.phase === "downloading") await this.o.state.advance("idle", { reason: `${code}: ${reason}` });
        await this.unpinLater(await this.keptOfferFiles());
        await unlink(this.o.offerPath).catch(() => {});
      })
      .catch((err: unknown) => this.o.log.error(`update state: ${errorLine(err)}`))
      .finally(() => {
        this.installing = undefined;
        void this.o.setUpdating(false);
      });
  }

  /** The files of the kept offer's manifest (unchecked: only to unpin them), or none. */
  private async keptOfferFiles(): Promise<{ blake3: string }[]> {
    try {
      const offer = JSON.parse(await readFile(this.o.offerPath, "utf8")) as KeptOffer;
      const body = JSON.parse(String((JSON.parse(offer.manifest) as { body?: unknown }).body)) as Manifest;
      return Array.isArray(body.files) ? body.files.filter((f) => typeof f.blake3 === "string") : [];
    } catch {
      return [];
    }
  }

  private async install(): Promise<void> {
    const { running, state } = this.o;
    const tree = running.tree!;
    let offer: KeptOffer;
    try {
      offer = JSON.parse(await readFile(this.o.offerPath, "utf8")) as KeptOffer;
    } catch (err) {
      throw new CommandRefused("lost-offer", `the kept offer ${this.o.offerPath}: ${errorLine(err)}`);
    }
    // Checked again: the key or the floor may have changed since, and the file is only as good as the disk.
    const decision = checkOffer(new TextEncoder().encode(offer.manifest), {
      releasePublicKey: this.o.releasePublicKey ?? "",
      name: RELEASE_NAME,
      installedBuild: 0,
      floor: state.current.floor,
      freeBytes: Number.MAX_SAFE_INTEGER,
    });
    if (!decision.ok) throw new CommandRefused(decision.code, decision.reason);
    const m = decision.manifest;
    await this.o.setUpdating(true);
    let done = 0;
    let bytes = 0;
    for (const f of m.files) {
      if (this.stopped) return;
      if (!this.o.objectFile(f.blake3)) {
        if (offer.dir) await this.o.ingestFile(join(offer.dir, "objects", f.blake3), f.blake3, f.length);
        else await this.o.fetchObject(fileFetch(f.blake3, f.length, offer.sources));
      }
      done++;
      bytes += f.length;
      this.o.event({ type: "ota.progress", build: m.build, files: done, of: m.files.length, bytes });
    }
    if (this.stopped) return;
    const slot = otherSlot(running.slot!);
    const files = m.files.map((f) => {
      const from = this.o.objectFile(f.blake3);
      if (!from) throw new CommandRefused("install-failed", `object ${f.blake3} (${f.path}) left the store`);
      return { path: f.path, from };
    });
    this.o.log.info(`writing slot ${slot} (build ${m.build}): ${m.files.length} files, ${bytes} bytes`);
    await tree.writeSlot(slot, files, new TextEncoder().encode(offer.manifest));
    const s = await state.advance("installed");
    await unlink(this.o.offerPath).catch(() => {});
    this.o.event({ type: "ota.installed", build: m.build, version: m.version, slot });
    await this.switchTo(s, slot);
  }

  /** Marks `slot` on trial, switches `current` to it and restarts into it (through the launcher). */
  private async switchTo(s: OtaState, slot: Slot): Promise<void> {
    const tree = this.o.running.tree!;
    const inSlot = await tree.slotManifest(slot);
    if (inSlot?.build !== s.build) {
      // The slot is not (or no longer) the release: start over from the offer, if it is still kept.
      await this.o.state.advance("rolledback", {
        reason: `install-failed: slot ${slot} does not hold build ${s.build}`,
      });
      this.o.event({
        type: "ota.failed",
        build: s.build,
        version: s.version,
        code: "install-failed",
        reason: `slot ${slot} does not hold build ${s.build}`,
      });
      return;
    }
    await tree.markTrial({
      slot,
      prev: otherSlot(slot),
      build: s.build!,
      deadline: trialDeadlineSeconds(this.o.gateSeconds),
    });
    await tree.switchCurrent(slot);
    this.o.log.info(`current -> releases/${slot} (build ${s.build}): restarting into it`);
    this.o.restart(`switched to build ${s.build}`);
  }

  private armGate(tries: number): void {
    this.onTrial = true;
    const gateMs = this.o.gateSeconds * 1000;
    this.o.log.info(
      `on trial (try ${tries}): commits after ${this.o.gateSeconds} s with the broker reached and the selftest passed`,
    );
    void this.o.selftest().then(
      (r) => (this.selftestResult = r),
      (err: unknown) => (this.selftestResult = `selftest threw: ${errorLine(err)}`),
    );
    this.gateTimer = setTimeout(() => void this.gate(), gateMs);
    this.gateTimer.unref();
  }

  private async gate(): Promise<void> {
    if (this.stopped || !this.onTrial) return;
    try {
      if (!this.o.connectedOnce())
        return await this.giveUp(`no-broker: not connected to the broker within the ${this.o.gateSeconds} s gate`);
      if (this.selftestResult === null) {
        // Still running: look again shortly (a slow disk's write check).
        this.gateTimer = setTimeout(() => void this.gate(), 1000);
        this.gateTimer.unref();
        return;
      }
      if (this.selftestResult !== undefined) return await this.giveUp(`selftest: ${this.selftestResult}`);
      await this.commit();
    } catch (err) {
      this.o.log.error(`trial gate: ${errorLine(err)}`);
    }
  }

  /** Mark-good: the launcher stops counting first (the marker), then the state; finishCommit() after a power cut. */
  private async commit(): Promise<void> {
    this.onTrial = false;
    if (this.gateTimer) clearTimeout(this.gateTimer);
    await this.o.running.tree!.endTrial();
    await this.finishCommit();
  }

  private async finishCommit(): Promise<void> {
    if (this.o.state.current.phase === "installed") await this.o.state.advance("trial");
    const s = await this.o.state.advance("committed");
    await this.unpinLater();
    this.o.log.info(`build ${s.build} (${s.version}) committed; the anti-rollback floor is now ${s.floor}`);
    this.o.event({
      type: "ota.committed",
      build: s.build,
      version: s.version,
      slot: this.o.running.slot,
      floor: s.floor,
    });
  }

  /**
   * Once an update ends (committed, rolled back, failed): release files other than the running release's (the
   * other slot's, and those of `also`, a failed offer's) may leave the store again.
   */
  private async unpinOthers(also: { blake3: string }[] = []): Promise<void> {
    const { tree, slot } = this.o.running;
    if (!tree || !slot) return;
    const keep = new Set((await tree.slotManifest(slot))?.files.map((f) => f.blake3));
    const others = [...((await tree.slotManifest(otherSlot(slot)))?.files ?? []), ...also].map((f) => f.blake3);
    await this.o.unpin([...new Set(others)].filter((id) => !keep.has(id) && this.o.objectFile(id)));
  }

  private unpinLater(also: { blake3: string }[] = []): Promise<void> {
    return this.unpinOthers(also).catch((err: unknown) =>
      this.o.log.warn(`release files left pinned: ${errorLine(err)}`),
    );
  }

  private async giveUp(reason: string): Promise<void> {
    this.onTrial = false;
    if (this.gateTimer) clearTimeout(this.gateTimer);
    this.o.log.error(`giving up build ${this.o.running.build}: ${reason}`);
    await this.o.running.tree!.requestRollback(reason);
    this.o.restart(`rollback: ${reason}`);
  }
}

function fileFetch(id: string, length: number, sources: OfferSources): ObjectFetch {
  const urls: string[] = [];
  const orders: Record<string, string> = {};
  for (const base of sources.origins) urls.push(new URL(`objects/${id}`, withSlash(base)).href);
  for (const box of sources.boxes) {
    const url = new URL(`v1/objects/${id}`, withSlash(box.url)).href;
    urls.push(url);
    if (box.orders[id]) orders[url] = box.orders[id];
  }
  const outboard =
    sources.origins.length > 0
      ? new URL(`objects/${id}.obao`, withSlash(sources.origins[0])).href
      : sources.boxes.length > 0
        ? new URL(`v1/objects/${id}/outboard`, withSlash(sources.boxes[0].url)).href
        : undefined;
  return {
    objectId: id,
    length,
    sources: urls.slice(0, MAX_SOURCES),
    outboard,
    ...(Object.keys(orders).length ? { orders } : {}),
  };
}

function withSlash(url: string): string {
  return url.endsWith("/") ? url : `${url}/`;
}

function manifestText(value: unknown): string {
  if (typeof value === "string") return value;
  if (isPlainObject(value)) return JSON.stringify(value);
  throw new CommandRefused("bad-args", "manifest: the signed manifest (manifest.json of 'sharenode release pack')");
}

function parseSources(args: Record<string, unknown>): OfferSources {
  const origins = args.sources ?? [];
  const boxes = args.boxes ?? [];
  if (!Array.isArray(origins) || origins.some((u) => !httpUrl(u)))
    throw new CommandRefused(
      "bad-args",
      "sources: a list of http(s) base URLs of a 'sharenode release pack' directory",
    );
  if (!Array.isArray(boxes) || boxes.some((b) => !isPlainObject(b) || !httpUrl(b.url) || !isPlainObject(b.orders)))
    throw new CommandRefused("bad-args", "boxes: a list of {url, orders: {blake3: order token}}");
  if (origins.length + boxes.length > MAX_SOURCES)
    throw new CommandRefused("bad-args", `at most ${MAX_SOURCES} sources and boxes together`);
  return { origins: origins as string[], boxes: boxes as OfferSources["boxes"] };
}

function httpUrl(value: unknown): boolean {
  if (typeof value !== "string") return false;
  try {
    const u = new URL(value);
    return (u.protocol === "http:" || u.protocol === "https:") && !u.username && !u.password;
  } catch {
    return false;
  }
}
