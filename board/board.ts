// What differs between boards, behind one interface: the status LED, temperatures, the hardware watchdog and the
// serial console. The agent asks a Board for these and never spells a sysfs path or a board name itself; profiles
// (board/profiles.ts) say what each supported box has, detection picks one from /proc/device-tree and
// /proc/cpuinfo, and the `sim` board does the same on a fake tree so development and tests exercise the real code.
//
// Nothing here throws for hardware that is absent or misbehaving (an LED the kernel lacks, a thermal zone that
// cannot be read, a watchdog that cannot be opened): the problem becomes one line in `problems` (and the log), and
// the agent runs on without that part.
import { selectProfile, readBoardFacts } from "./detect.js";
import { errnoText, HostPaths } from "./host-paths.js";
import { StatusLeds } from "./leds.js";
import { SIM, type BoardFacts, type BoardProfile } from "./profiles.js";
import { prepareSimTree, resetSimWatchdog } from "./sim-board.js";
import { governingTemperature, readThermalZones } from "./thermal.js";
import { openHardwareWatchdog } from "./watchdog.js";

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

// ---------------------------------------------------------------------------------------------------------------
// Implementation

/** Problem lines, each kept and told once however often the problem recurs (an LED is set on every state change). */
class ProblemList {
  readonly lines: string[] = [];
  private readonly seen = new Set<string>();

  constructor(private readonly onProblem: ((line: string) => void) | undefined) {}

  add = (line: string): void => {
    if (this.seen.has(line)) return;
    this.seen.add(line);
    this.lines.push(line);
    try {
      this.onProblem?.(line);
    } catch {
      // A failing logger must not turn a missing LED into a crash.
    }
  };
}

class ProfileBoard implements Board {
  readonly name: string;
  readonly description: string;
  readonly console: { tty: string; baud: number } | undefined;
  readonly thermalLimits: { pauseAtC: number; resumeAtC: number };
  // Zones already reported, so a broken sensor is one line, not one per reading.
  private readonly reportedZones = new Set<string>();

  constructor(
    private readonly profile: BoardProfile,
    readonly detectedBy: string,
    facts: BoardFacts,
    private readonly paths: HostPaths,
    private readonly leds: StatusLeds,
    private readonly problemList: ProblemList,
    private readonly beforeWatchdogOpen?: () => Promise<void>,
  ) {
    this.name = profile.name;
    this.description = profile.description;
    this.console = profile.console(facts);
    this.thermalLimits = { pauseAtC: profile.thermal.pauseAtC, resumeAtC: profile.thermal.resumeAtC };
  }

  get problems(): readonly string[] {
    return this.problemList.lines;
  }

  async setStatus(pattern: StatusPattern): Promise<void> {
    try {
      await this.leds.show(this.profile.patterns[pattern] ?? {});
    } catch (err) {
      this.problemList.add(`cannot show status ${pattern}: ${errnoText(err)}`);
    }
  }

  async readThermalZones(): Promise<ThermalReading[]> {
    let readings: ThermalReading[];
    try {
      readings = await readThermalZones(this.paths, this.profile.thermal.hwmonNames);
    } catch (err) {
      this.problemList.add(`cannot read thermal zones: ${errnoText(err)}`);
      return [];
    }
    if (readings.length === 0) {
      this.problemList.add(`no thermal zones under ${this.paths.toHost(this.paths.sys("class", "thermal"))}`);
    }
    for (const r of readings) {
      if (r.error === undefined || this.reportedZones.has(r.zone)) continue;
      this.reportedZones.add(r.zone);
      this.problemList.add(`${r.zone}${r.type !== undefined ? ` (${r.type})` : ""}: ${r.error}`);
    }
    return readings;
  }

  async readTemperatureC(): Promise<number | undefined> {
    return governingTemperature(await this.readThermalZones(), this.profile.thermal.preferredTypes);
  }

  async openWatchdog(): Promise<HardwareWatchdog | undefined> {
    const device = this.profile.watchdog;
    if (device === undefined) {
      this.problemList.add(`board ${this.name} has no hardware watchdog`);
      return undefined;
    }
    await this.beforeWatchdogOpen?.();
    return openHardwareWatchdog(this.paths, device, this.problemList.add);
  }
}

/**
 * The board for config value `name` ("auto", a profile name, or "sim" with `simRoot`). Absent or misbehaving
 * hardware becomes problem lines; only a sim board without a `simRoot` (a programming error) or a sim tree that
 * cannot be created rejects.
 */
export async function openBoard(options: OpenBoardOptions): Promise<Board> {
  const problems = new ProblemList(options.onProblem);
  if (options.name === SIM.name) {
    const simRoot = options.simRoot;
    if (simRoot === undefined) throw new Error('board "sim" needs a simRoot (its fake /sys and /dev)');
    await prepareSimTree(simRoot);
    const paths = new HostPaths(simRoot);
    const facts = await readBoardFacts(paths);
    const leds = await StatusLeds.discover(paths, SIM.leds, problems.add);
    return new ProfileBoard(SIM, `config board="sim" (tree under ${paths.root})`, facts, paths, leds, problems, () =>
      resetSimWatchdog(simRoot),
    );
  }
  const facts = await readBoardFacts(options.paths);
  const { profile, detectedBy } = selectProfile(options.name, facts, problems.add);
  const leds = await StatusLeds.discover(options.paths, profile.leds, problems.add);
  return new ProfileBoard(profile, detectedBy, facts, options.paths, leds, problems);
}
