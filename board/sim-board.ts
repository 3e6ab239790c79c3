// The sim board's fake host: a small /sys, /dev and /proc under the data directory, so the real LED, thermal and
// watchdog code runs on a development machine and in tests. Everything is a plain file a person can look at or edit:
//
//   sys/class/leds/sim:green:status/   trigger ("[none] timer heartbeat default-on"), brightness, max_brightness,
//   sys/class/leds/sim:red:error/      delay_on, delay_off: what the agent shows, as the kernel would hold it
//   sys/class/thermal/thermal_zone0/   type "cpu-thermal", temp "45000": write e.g. 80000 to temp to simulate heat
//   sys/class/watchdog/watchdog0/      timeout "30"
//   dev/watchdog                       a regular file: each open empties it, each pet appends one NUL byte, a clean
//                                      stop appends "V" (the magic close), so its last byte tells how the agent left
//   proc/device-tree/model             "sharenode sim board", for display
import { mkdir, readFile, truncate, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { SIM_LED_NAMES } from "./profiles.js";
import { errnoText } from "./host-paths.js";

/** The triggers the sim's LEDs offer (a subset every real kernel with LED support has too). */
export const SIM_TRIGGERS = ["none", "timer", "heartbeat", "default-on"] as const;

async function writeIfMissing(file: string, content: string): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  try {
    await writeFile(file, content, { flag: "wx" });
  } catch (err) {
    if ((err as { code?: unknown }).code !== "EEXIST") throw err;
  }
}

/**
 * The kernel re-lists every trigger on each read; a plain file only keeps the last word written ("timer"). Restore
 * the list with that word as the current one, so the LED code finds the triggers it may use after a restart.
 */
async function restoreTriggerList(file: string): Promise<void> {
  const text = (await readFile(file, "utf8")).trim();
  if (text.includes("[")) return;
  const current = (SIM_TRIGGERS as readonly string[]).includes(text) ? text : "none";
  await writeFile(file, SIM_TRIGGERS.map((t) => (t === current ? `[${t}]` : t)).join(" ") + "\n");
}

/** Creates whatever part of the fake tree under `simRoot` is missing; existing files (a simulated heat) are kept. */
export async function prepareSimTree(simRoot: string): Promise<void> {
  try {
    for (const name of Object.values(SIM_LED_NAMES)) {
      const dir = join(simRoot, "sys", "class", "leds", name);
      await writeIfMissing(join(dir, "trigger"), `[none] ${SIM_TRIGGERS.slice(1).join(" ")}\n`);
      await restoreTriggerList(join(dir, "trigger"));
      await writeIfMissing(join(dir, "brightness"), "0\n");
      await writeIfMissing(join(dir, "max_brightness"), "1\n");
      await writeIfMissing(join(dir, "delay_on"), "500\n");
      await writeIfMissing(join(dir, "delay_off"), "500\n");
    }
    const zone = join(simRoot, "sys", "class", "thermal", "thermal_zone0");
    await writeIfMissing(join(zone, "type"), "cpu-thermal\n");
    await writeIfMissing(join(zone, "temp"), "45000\n");
    await writeIfMissing(join(simRoot, "sys", "class", "watchdog", "watchdog0", "timeout"), "30\n");
    await writeIfMissing(join(simRoot, "dev", "watchdog"), "");
    await writeIfMissing(join(simRoot, "proc", "device-tree", "model"), "sharenode sim board\0");
  } catch (err) {
    throw new Error(`cannot prepare the sim board under ${simRoot}: ${errnoText(err)}`, { cause: err });
  }
}

/** A fresh watchdog file for each open, so it shows one session's pets and how that session ended. */
export async function resetSimWatchdog(simRoot: string): Promise<void> {
  try {
    await truncate(join(simRoot, "dev", "watchdog"), 0);
  } catch {
    // Missing or not a file (a test making the device unopenable): the open that follows reports it.
  }
}
