// The owner's idle-resource policy, combined with the thermal state into one answer for the rest of the agent:
// how fast serving may upload now, how much CPU compute may take, whether scrubs and compute may run, and the
// disk quota. Features ask `limits()` when they start a piece of work and listen for "change"; none of them reads
// the config's `share` section or the temperature itself.
//
// Upload windows are in the box's local time (the owner thinks "at night", not in UTC) at minute resolution; the
// active window is re-checked every `checkEveryMs` (default 30 s) rather than by a timer set for the next
// boundary, because these boxes boot in 1970 and their clock jumps when NTP answers: polling is right after any
// jump, a timer aimed at a boundary is not.
//
// While the box is throttled (agent/health/thermal-governor.ts): scrubs and compute pause, and serving goes on at a
// quarter of the rate that would apply (with no limit configured: a quarter of a 100 Mbit/s port, the port most of
// these boxes have). Serving is slowed rather than stopped: the fleet's storage proofs and downloads still get
// answers, the disk and the CPU (TLS) just work a quarter as hard. Fetching (task.fetch) pauses like the scrub
// (`fetchAllowed`): it hashes every byte it takes in, and it can wait.
//
// The download rate follows the same windows: a window's `downloadBytesPerSecond`, absent: the rate outside the
// windows (`share.downloadBytesPerSecond`); 0 is no limit. agent/health/byte-rate.ts enforces both rates.
import { EventEmitter } from "node:events";
import type { Config, UploadWindow } from "../config/config.js";
import { MINUTES_PER_WEEK, uploadWindowSpans } from "../config/upload-windows.js";
import type { ThermalState } from "./thermal-governor.js";
import { realTimers, type TimerHandle, type Timers } from "./timers.js";

export type DiskQuota = Config["store"]["quota"];

export interface ResourceLimits {
  /** Bytes per second serving may upload; null: no limit. */
  uploadBytesPerSecond: number | null;
  /** Bytes per second fetching may download; null: no limit. Not slowed while throttled: fetching pauses then. */
  downloadBytesPerSecond: number | null;
  /** Whether fetching may run now (false while throttled: it waits, as the scrub does). */
  fetchAllowed: boolean;
  /** Percent of the whole box (all cores together) compute may use while `computeAllowed`. */
  cpuPercent: number;
  scrubAllowed: boolean;
  computeAllowed: boolean;
  /** The store's quota (config `store.quota`), as the store takes it. */
  diskQuota: DiskQuota;
  throttled: boolean;
  /** Index of the active upload window in `share.uploadWindows`; undefined outside every window. */
  window: number | undefined;
  /** One line for people: the window (or none), the rate, and the thermal state. */
  reason: string;
}

/** The thermal side, as agent/health/thermal-governor.ts provides it. */
export interface ThermalSource {
  readonly state: ThermalState;
  on(event: "change", listener: (state: ThermalState) => void): unknown;
  off(event: "change", listener: (state: ThermalState) => void): unknown;
}

export interface ResourceGovernorOptions {
  share: Config["share"];
  diskQuota: DiskQuota;
  thermal?: ThermalSource;
  /** Epoch milliseconds (wall clock: windows are wall-clock times). */
  now?: () => number;
  /** Minutes to add to UTC to get the box's local time at an instant (+60 for CET, +120 for CEST). */
  localOffsetMinutes?: (at: Date) => number;
  timers?: Timers;
  checkEveryMs?: number;
  /** Told when a "change" listener throws (the others still run). */
  onListenerError?: (err: unknown) => void;
}

export interface ResourceEvents {
  change: [ResourceLimits];
}

/** Serving while throttled: this share of the rate that would apply. */
export const THROTTLED_UPLOAD_DIVISOR = 4;
/** Serving while throttled with no limit configured: a quarter of a 100 Mbit/s port, bytes per second. */
export const THROTTLED_UPLOAD_WITHOUT_LIMIT = 100_000_000 / 8 / THROTTLED_UPLOAD_DIVISOR;
export const DEFAULT_POLICY_CHECK_MS = 30_000;

/** The host's own offset: what Date's local-time methods use (the TZ variable, or /etc/localtime). */
export const hostLocalOffsetMinutes = (at: Date): number => -at.getTimezoneOffset();

/** Minutes since Monday 00:00, local time, at an instant. */
export function localMinuteOfWeek(at: Date, offsetMinutes: number): number {
  const local = new Date(at.getTime() + offsetMinutes * 60_000);
  const day = (local.getUTCDay() + 6) % 7; // getUTCDay: 0 is Sunday
  return day * 1440 + local.getUTCHours() * 60 + local.getUTCMinutes();
}

/** The index of the window covering a minute of the week, if any (the config refuses overlapping windows). */
export function activeWindow(windows: readonly UploadWindow[], minuteOfWeek: number): number | undefined {
  const m = ((minuteOfWeek % MINUTES_PER_WEEK) + MINUTES_PER_WEEK) % MINUTES_PER_WEEK;
  const i = windows.findIndex((w) => uploadWindowSpans(w).some(([start, end]) => m >= start && m < end));
  return i < 0 ? undefined : i;
}

function windowText(w: UploadWindow): string {
  return `${w.from}-${w.to}${w.days ? ` ${w.days.join(",")}` : ""}`;
}

function rateText(rate: number | null): string {
  return rate === null ? "no upload limit" : `upload ${rate} B/s`;
}

export class ResourceGovernor extends EventEmitter<ResourceEvents> {
  private readonly now: () => number;
  private readonly offset: (at: Date) => number;
  private readonly timers: Timers;
  private handle: TimerHandle | undefined;
  private last: ResourceLimits | undefined;
  private readonly onThermal = () => this.check();

  constructor(private readonly options: ResourceGovernorOptions) {
    super();
    this.now = options.now ?? Date.now;
    this.offset = options.localOffsetMinutes ?? hostLocalOffsetMinutes;
    this.timers = options.timers ?? realTimers;
  }

  start(): void {
    if (this.handle !== undefined) return;
    this.last = this.limits();
    this.options.thermal?.on("change", this.onThermal);
    this.handle = this.timers.setInterval(() => this.check(), this.options.checkEveryMs ?? DEFAULT_POLICY_CHECK_MS);
  }

  stop(): void {
    if (this.handle !== undefined) this.timers.clearInterval(this.handle);
    this.handle = undefined;
    this.options.thermal?.off("change", this.onThermal);
  }

  get throttled(): boolean {
    return this.options.thermal?.state.throttled ?? false;
  }

  /** The limits at an instant (default now), with the thermal state as it is now. */
  limits(at: Date = new Date(this.now())): ResourceLimits {
    const { share, diskQuota } = this.options;
    const index = activeWindow(share.uploadWindows, localMinuteOfWeek(at, this.offset(at)));
    const window = index === undefined ? undefined : share.uploadWindows[index]!;
    const configured = window ? window.bytesPerSecond : share.uploadBytesPerSecond;
    const rate = configured === 0 ? null : configured;
    const down = window?.downloadBytesPerSecond ?? share.downloadBytesPerSecond;
    const download = down === 0 ? null : down;
    const downText = download === null ? "" : `, download ${download} B/s`;
    const where = window ? `upload window ${index} (${windowText(window)})` : "outside the upload windows";
    const thermal = this.options.thermal?.state;
    if (!thermal?.throttled) {
      return {
        uploadBytesPerSecond: rate,
        downloadBytesPerSecond: download,
        fetchAllowed: true,
        cpuPercent: share.cpuPercent,
        scrubAllowed: true,
        computeAllowed: true,
        diskQuota,
        throttled: false,
        window: index,
        reason: `${where}: ${rateText(rate)}${downText}`,
      };
    }
    const slowed =
      rate === null ? THROTTLED_UPLOAD_WITHOUT_LIMIT : Math.max(1, Math.floor(rate / THROTTLED_UPLOAD_DIVISOR));
    return {
      uploadBytesPerSecond: slowed,
      downloadBytesPerSecond: download,
      fetchAllowed: false,
      cpuPercent: share.cpuPercent,
      scrubAllowed: false,
      computeAllowed: false,
      diskQuota,
      throttled: true,
      window: index,
      reason: `throttled (${thermal.reason}): scrub, compute and fetching paused, ${rateText(slowed)} (${where}: ${rateText(rate)}${downText})`,
    };
  }

  /** Re-evaluates now; emits "change" when the window or the thermal state differs from the last time. */
  check(): ResourceLimits {
    const limits = this.limits();
    const previous = this.last;
    this.last = limits;
    if (previous && (previous.window !== limits.window || previous.throttled !== limits.throttled)) {
      for (const listener of this.listeners("change") as Array<(l: ResourceLimits) => void>) {
        try {
          listener(limits);
        } catch (err) {
          this.options.onListenerError?.(err);
        }
      }
    }
    return limits;
  }
}
