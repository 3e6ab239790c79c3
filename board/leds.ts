// The status LED(s) through the kernel's LED class: /sys/class/leds/<name>/{trigger,brightness,max_brightness,
// delay_on,delay_off} (Documentation/leds/leds-class.rst, ledtrig-timer). Blinking is the kernel's job (the "timer"
// and "heartbeat" triggers), so showing a pattern costs a few small writes and no timer of ours.
//
// Writes are skipped when an LED already shows the wanted state, so callers may set the status as often as they
// like. An LED that is absent or refuses a write becomes one problem line and is left alone from then on.
//
// The agent is not root: udev gives its group the attributes (board/install/70-sharenode.rules). Selecting the timer
// trigger creates delay_on and delay_off afresh, root-only, and udev hands them over a moment later, so a refused
// write to them is tried again, briefly (RATE_RETRY_DELAYS_MS). Still refused after that (OpenWrt has no udev), the
// LED blinks at the trigger's default rate: one problem line, and the rate is not written again.
import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { errnoText, type HostPaths } from "./host-paths.js";
import type { LedState } from "./profiles.js";

/**
 * A trigger file: the kernel lists every available trigger with the current one in brackets ("none [timer]
 * heartbeat"). A fake tree holds whatever was last written ("timer"), so a lone unbracketed word is the current one.
 */
export function parseTriggers(text: string): { current: string | undefined; available: string[] } {
  const tokens = text
    .trim()
    .split(/\s+/)
    .filter((t) => t !== "");
  let current: string | undefined;
  const available = tokens.map((token) => {
    const bracketed = /^\[(.+)\]$/.exec(token);
    if (!bracketed) return token;
    current = bracketed[1]!;
    return current;
  });
  if (current === undefined && tokens.length === 1) current = tokens[0];
  return { current, available };
}

/** How attributes are written and retries wait: the real thing, or a test's stand-in. */
export interface LedIo {
  writeFile(path: string, value: string): Promise<void>;
  sleep(ms: number): Promise<void>;
}

const REAL_IO: LedIo = {
  writeFile: (path, value) => writeFile(path, value),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

/**
 * The waits before each retry of a refused delay_on/delay_off write: udev hands the fresh attributes to the group
 * sharenode within milliseconds, and at most 1.55 s in all is spent on one LED (start-up waits for the first status).
 */
export const RATE_RETRY_DELAYS_MS: readonly number[] = [50, 100, 200, 400, 800];

/**
 * What the udev rule cures by running: EACCES (the attribute is still root's), EPERM (the same refusal, as some
 * security modules word it), ENOENT (the trigger's attributes not there yet).
 */
const RATE_RETRYABLE: ReadonlySet<string> = new Set(["EACCES", "EPERM", "ENOENT"]);

const isRate = (attribute: string) => attribute === "delay_on" || attribute === "delay_off";

interface Led {
  role: string;
  name: string;
  dir: string;
  /** Triggers the kernel offered when the LED was found. */
  triggers: ReadonlySet<string>;
  /** max_brightness as the kernel wrote it ("1" for GPIO LEDs, "255" for PWM ones). */
  max: string;
  /** The state last written successfully (stateKey), so an unchanged state costs nothing. */
  shown: string | undefined;
  /** A write failed: reported once, never written again. */
  broken: boolean;
  /** delay_on/delay_off stayed refused: reported once, the timer trigger blinks at its default rate from then on. */
  fixedRate: boolean;
}

const ON: LedState = { kind: "on" };

function stateKey(state: LedState): string {
  return state.kind === "blink" ? `blink ${state.onMs}/${state.offMs}` : state.kind;
}

/** What the LED can actually show: blinking needs the timer trigger, a heartbeat its own (or the timer). */
function resolve(state: LedState, triggers: ReadonlySet<string>): { state: LedState; note?: string } {
  if (state.kind === "heartbeat" && !triggers.has("heartbeat")) {
    // A short flash once a second reads as "alive" too.
    return resolve({ kind: "blink", onMs: 100, offMs: 900 }, triggers);
  }
  if (state.kind === "blink" && !triggers.has("timer")) {
    return { state: ON, note: 'has no "timer" trigger; blinking patterns show as a steady light' };
  }
  return { state };
}

/** The attribute writes that put an LED into `state`, in order (the trigger first: changing it resets the rest). */
function writesFor(state: LedState, max: string): Array<[attribute: string, value: string]> {
  switch (state.kind) {
    case "off":
      return [
        ["trigger", "none"],
        ["brightness", "0"],
      ];
    case "on":
      return [
        ["trigger", "none"],
        ["brightness", max],
      ];
    case "blink":
      // delay_on/delay_off appear once the timer trigger is active.
      return [
        ["trigger", "timer"],
        ["delay_on", String(state.onMs)],
        ["delay_off", String(state.offMs)],
      ];
    case "heartbeat":
      return [["trigger", "heartbeat"]];
  }
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

export class StatusLeds {
  // Patterns set in quick succession are written one after the other, never interleaved.
  private tail: Promise<void> = Promise.resolve();

  private constructor(
    private readonly paths: HostPaths,
    private readonly leds: Led[],
    private readonly report: (line: string) => void,
    private readonly io: LedIo,
  ) {}

  /** Finds each role's LED (the first of its names present under /sys/class/leds); a missing one is reported. */
  static async discover(
    paths: HostPaths,
    roles: Record<string, readonly string[]>,
    report: (line: string) => void,
    io: LedIo = REAL_IO,
  ): Promise<StatusLeds> {
    const leds: Led[] = [];
    for (const [role, names] of Object.entries(roles)) {
      let found = false;
      for (const name of names) {
        const dir = paths.sys("class", "leds", name);
        if (!(await isDirectory(dir))) continue;
        const triggerFile = join(dir, "trigger");
        let triggers: string[] = [];
        try {
          triggers = parseTriggers(await readFile(triggerFile, "utf8")).available;
        } catch (err) {
          report(`cannot read ${paths.toHost(triggerFile)}: ${errnoText(err)}`);
        }
        let max = "1";
        try {
          const text = (await readFile(join(dir, "max_brightness"), "utf8")).trim();
          if (/^[1-9]\d*$/.test(text)) max = text;
        } catch {
          // Every LED class device has max_brightness; without one, 1 is what a GPIO LED takes as "on".
        }
        leds.push({
          role,
          name,
          dir,
          triggers: new Set(triggers),
          max,
          shown: undefined,
          broken: false,
          fixedRate: false,
        });
        found = true;
        break;
      }
      if (!found) {
        const where = names.map((n) => paths.toHost(paths.sys("class", "leds", n))).join(" or ");
        report(`LED "${role}" missing: no ${where}`);
      }
    }
    return new StatusLeds(paths, leds, report, io);
  }

  /** The LED found for each role: { act: "ACT", pwr: "PWR" }. */
  get names(): Record<string, string> {
    return Object.fromEntries(this.leds.map((l) => [l.role, l.name]));
  }

  /** Puts every LED into its state in `states` (by role); never rejects. */
  show(states: Record<string, LedState>): Promise<void> {
    const run = this.tail.then(() => this.apply(states));
    this.tail = run.catch(() => undefined);
    return run;
  }

  private async apply(states: Record<string, LedState>): Promise<void> {
    for (const led of this.leds) {
      const wanted = states[led.role];
      if (wanted === undefined || led.broken) continue;
      const { state, note } = resolve(wanted, led.triggers);
      if (note !== undefined) this.report(`LED ${led.name} ${note}`);
      const key = stateKey(state);
      if (key === led.shown) continue;
      led.shown = undefined;
      for (const [attribute, value] of writesFor(state, led.max)) {
        const rate = isRate(attribute);
        if (rate && led.fixedRate) continue;
        const file = join(led.dir, attribute);
        try {
          await (rate ? this.writeRate(file, value) : this.io.writeFile(file, value));
        } catch (err) {
          if (rate && RATE_RETRYABLE.has((err as NodeJS.ErrnoException).code ?? "")) {
            // The trigger is set: the LED blinks, only not at our rate.
            led.fixedRate = true;
            this.report(
              `cannot set the blink rate of LED ${led.name}: ${this.paths.toHost(file)}: ${errnoText(err)}; ` +
                "it blinks at the timer trigger's default rate",
            );
            continue;
          }
          led.broken = true;
          this.report(`cannot set LED ${led.name}: ${this.paths.toHost(file)}: ${errnoText(err)}; leaving it alone`);
          break;
        }
      }
      if (!led.broken) led.shown = key;
    }
  }

  /** A delay_on/delay_off write, tried again while udev may still be handing the fresh attribute over. */
  private async writeRate(file: string, value: string): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.io.writeFile(file, value);
      } catch (err) {
        const wait = RATE_RETRY_DELAYS_MS[attempt];
        if (wait === undefined || !RATE_RETRYABLE.has((err as NodeJS.ErrnoException).code ?? "")) throw err;
        await this.io.sleep(wait);
      }
    }
  }
}
