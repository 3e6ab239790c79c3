// What differs between boards, behind one interface: the status LED, temperatures, the hardware watchdog and the
// serial console. The agent asks a Board for these and never spells a sysfs path or a board name itself; profiles
// (board/profiles.ts) say what each supported box has, detection picks one from /proc/device-tree and
// /proc/cpuinfo, and the `sim` board does the same on a fake tree so development and tests exercise the real code.
//
// Nothing here throws for hardware that is absent or misbehaving (an LED the kernel lacks, a thermal zone that
// cannot be read, a watchdog that cannot be opened): the problem becomes one line in `problems` (and the log), and
// the agent runs on without that part.
import type { HostPaths } from "./host-paths.js";

/** What the status LED shows. */
export type StatusPattern = "booting" | "online" | "offline" | "updating" | "error";
export const STATUS_PATTERNS: readonly StatusPattern[] = ["booting", "online", "offline", "updating", "error"];

/** One thermal zone as read now. */
export interface ThermalReading {
  /** The zone's directory name: "thermal_zone0". */
  zone: string;
  /** Its `type` ("cpu-thermal", "soc_thermal", ...), when readable. */
  type?: string;
  /** Degrees Celsius, when readable and plausible. */
  celsius?: number;
  /** Why there is no reading (one line), when there is none. */
  error?: string;
}

/** The hardware watchdog, opened: it must be petted before its timeout or the box resets. */
export interface HardwareWatchdog {
  /** The device as the host spells it: "/dev/watchdog". */
  readonly device: string;
  /** The timeout the driver reports (sysfs), when it says. */
  readonly timeoutSeconds: number | undefined;
  pet(): Promise<void>;
  /**
   * Closes the device. With `magic` the magic close character is written first, so a driver without nowayout
   * disarms (a clean stop); without it the timer keeps running and the box resets unless someone pets it.
   */
  close(magic: boolean): Promise<void>;
}

export interface Board {
  /** The profile's name: "onecloud", "amlogic-arm64", "rpi", "generic-linux", "sim". */
  readonly name: string;
  /** One line for people: "OneThing Cloud OES (Amlogic S805, armv7)". */
  readonly description: string;
  /** How this profile was chosen, one line: 'config board="rpi"', 'device-tree model "Raspberry Pi 4 ..."', ... */
  readonly detectedBy: string;
  /** The board's serial console, when it has a known one. */
  readonly console: { tty: string; baud: number } | undefined;
  /** The temperatures above which work that heats the box pauses, and below which it resumes. */
  readonly thermalLimits: { pauseAtC: number; resumeAtC: number };
  /** Problems found so far (absent LEDs, unreadable zones, ...), one line each; the console's `board` shows them. */
  readonly problems: readonly string[];
  /** Shows a pattern on the status LED (a no-op on boards without one). Never throws. */
  setStatus(pattern: StatusPattern): Promise<void>;
  /** The temperature that governs throttling (the hottest relevant zone), or undefined when none is readable. */
  readTemperatureC(): Promise<number | undefined>;
  /** Every thermal zone, for the console's `temp` and telemetry. Never throws. */
  readThermalZones(): Promise<ThermalReading[]>;
  /** Opens the hardware watchdog; undefined (and a problem line) when the board has none or it cannot be opened. */
  openWatchdog(): Promise<HardwareWatchdog | undefined>;
}

export interface OpenBoardOptions {
  /** The host's kernel interfaces (the sim board uses its own tree instead). */
  paths: HostPaths;
  /** A profile name, or "auto" to detect it (config key `board`). */
  name: string;
  /** Where the sim board keeps its fake /sys and /dev (under the data directory). */
  simRoot?: string;
  /** Told about each problem as it is found (the agent logs them as warnings). */
  onProblem?: (line: string) => void;
}
