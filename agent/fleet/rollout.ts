// A staged rollout (issue 13, item 5), the fleet's side: which devices get a release (the cohort: hash(deviceId,
// build) below P percent, so the devices of a 5 % stage stay in the 20 % one), offers in batches, the devices'
// ota.* events followed, and a halt once the rolled-back share of the cohort passes the limit (AWS IoT Jobs' abort
// threshold). Pure: the CLI (agent/cli/fleet-rollout.ts) owns the connection and the clock.
import { createHash } from "node:crypto";

/** Where a device of the rollout stands. */
export type RolloutState =
  /** Not offered yet. */
  | "waiting"
  /** Offered; no answer yet. */
  | "offered"
  | "downloading"
  | "installed"
  | "trial"
  | "committed"
  | "rolledback"
  /** The download or install failed (ota.failed). */
  | "failed"
  /** The offer was refused (the reply, or ota.refused): the code says why. */
  | "refused"
  /** No verified reply to the offer. */
  | "no-reply"
  /** Already runs this build or a newer one: nothing to do. */
  | "current"
  /** In the cohort but offline: not offered (offer again in a later run). */
  | "offline";

const ENDED: ReadonlySet<RolloutState> = new Set([
  "committed",
  "rolledback",
  "failed",
  "refused",
  "no-reply",
  "current",
  "offline",
]);

export interface RolloutDevice {
  deviceId: string;
  /** The build it ran when the rollout began (its state record), null when it did not say. */
  fromBuild: number | null;
  state: RolloutState;
  /** The code and reason of a refusal, failure or rollback. */
  reason?: string;
  /** Files done of the release, while downloading. */
  progress?: string;
}

/**
 * Whether `deviceId` is in the cohort of `percent` for `build`: the first 32 bits of SHA-256("deviceId:build")
 * as a fraction of 2^32, below percent / 100. The same device and build always draw the same number, so a
 * device in a smaller stage stays in every larger one, and each release draws a new cohort.
 */
export function inCohort(deviceId: string, build: number, percent: number): boolean {
  return cohortPoint(deviceId, build) < percent / 100;
}

/** The device's point in [0, 1) for this build. */
export function cohortPoint(deviceId: string, build: number): number {
  const digest = createHash("sha256").update(`${deviceId}:${build}`).digest();
  return digest.readUInt32BE(0) / 2 ** 32;
}

export interface RolloutOptions {
  build: number;
  /** Devices offered at once: the next is offered when one ends. */
  batch: number;
  /** Halt when rolled-back (and failed) devices are more than this percent of the cohort. */
  maxFailuresPercent: number;
}

export class Rollout {
  readonly devices = new Map<string, RolloutDevice>();
  private haltedBecause: string | undefined;

  constructor(private readonly o: RolloutOptions) {}

  /** Adds a device of the cohort, as its state record shows it. */
  add(deviceId: string, online: boolean, build: number | null): void {
    const state: RolloutState = build !== null && build >= this.o.build ? "current" : online ? "waiting" : "offline";
    this.devices.set(deviceId, { deviceId, fromBuild: build, state });
  }

  /** The devices to offer now: waiting ones, up to the batch less those in flight; none once halted. */
  toOffer(): string[] {
    if (this.haltedBecause) return [];
    const inFlight = [...this.devices.values()].filter((d) => !ENDED.has(d.state) && d.state !== "waiting").length;
    const room = Math.max(0, this.o.batch - inFlight);
    return [...this.devices.values()]
      .filter((d) => d.state === "waiting")
      .slice(0, room)
      .map((d) => d.deviceId);
  }

  offered(deviceId: string): void {
    this.set(deviceId, "offered");
  }

  /** The device's reply to the offer: accepted (or a duplicate), refused with a code, or none. */
  replied(deviceId: string, reply: { ok: true } | { ok: false; code: string; message: string } | undefined): void {
    if (!reply) this.set(deviceId, "no-reply", "no verified reply to the offer");
    else if (!reply.ok) this.set(deviceId, "refused", `${reply.code}: ${reply.message}`);
    else if (this.devices.get(deviceId)?.state === "offered") this.set(deviceId, "downloading");
  }

  /** An event of the device about this build (others are ignored). */
  event(deviceId: string, type: string, fields: Record<string, unknown>): void {
    const d = this.devices.get(deviceId);
    if (!d || fields.build !== this.o.build || ENDED.has(d.state) || d.state === "waiting") return;
    const why = `${String(fields.code ?? "")}${fields.reason ? `: ${String(fields.reason)}` : ""}`;
    switch (type) {
      case "ota.progress":
        d.progress = `${String(fields.files)}/${String(fields.of)} files`;
        if (d.state === "offered") d.state = "downloading";
        return;
      case "ota.installed":
        return this.set(deviceId, "installed");
      case "ota.trial":
        return this.set(deviceId, "trial");
      case "ota.committed":
        return this.set(deviceId, "committed");
      case "ota.rolledback":
        return this.set(deviceId, "rolledback", why);
      case "ota.failed":
        return this.set(deviceId, "failed", why);
      case "ota.refused":
        return this.set(deviceId, "refused", why);
    }
  }

  /** Why the rollout halted, or undefined. */
  get halted(): string | undefined {
    return this.haltedBecause;
  }

  /** Whether nothing more will happen: every device ended, or halted with none in flight. */
  get done(): boolean {
    const all = [...this.devices.values()];
    if (this.haltedBecause) return all.every((d) => ENDED.has(d.state) || d.state === "waiting");
    return all.every((d) => ENDED.has(d.state));
  }

  /** Whether every device of the cohort that was online ended on this build. */
  get succeeded(): boolean {
    return (
      !this.haltedBecause &&
      [...this.devices.values()].every((d) => d.state === "committed" || d.state === "current" || d.state === "offline")
    );
  }

  /** Gives up on the devices still in flight (the CLI's --wait ran out). */
  timeOut(): void {
    for (const d of this.devices.values())
      if (!ENDED.has(d.state) && d.state !== "waiting")
        this.set(d.deviceId, "no-reply", `still ${d.state} when the wait ran out`);
    this.haltedBecause ??= "the wait ran out";
  }

  private set(deviceId: string, state: RolloutState, reason?: string): void {
    const d = this.devices.get(deviceId);
    if (!d) return;
    d.state = state;
    if (reason !== undefined) d.reason = reason.replace(/\s+/g, " ").trim();
    if (state === "rolledback" || state === "failed") this.checkHalt();
  }

  private checkHalt(): void {
    const all = [...this.devices.values()];
    const failed = all.filter((d) => d.state === "rolledback" || d.state === "failed").length;
    const share = (failed / all.length) * 100;
    if (share > this.o.maxFailuresPercent && !this.haltedBecause)
      this.haltedBecause = `${failed} of ${all.length} devices rolled back or failed (${share.toFixed(1)} % > ${this.o.maxFailuresPercent} %)`;
  }

  /** The status table, one device per line, by device id. */
  table(): string {
    const header = ["device", "from", "state", "detail"];
    const rows = [...this.devices.values()]
      .sort((a, b) => a.deviceId.localeCompare(b.deviceId))
      .map((d) => [
        d.deviceId,
        d.fromBuild === null ? "-" : String(d.fromBuild),
        d.state,
        d.reason ?? d.progress ?? "",
      ]);
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    const line = (cells: string[]) =>
      cells
        .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
        .join("  ")
        .trimEnd();
    const counts = new Map<string, number>();
    for (const d of this.devices.values()) counts.set(d.state, (counts.get(d.state) ?? 0) + 1);
    const summary = [...counts].map(([s, n]) => `${n} ${s}`).join(", ");
    return [line(header), ...rows.map(line), `${this.devices.size} devices: ${summary || "none"}`].join("\n") + "\n";
  }
}
