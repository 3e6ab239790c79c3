// Temperatures from the kernel's thermal zones (/sys/class/thermal/thermal_zone*/{type,temp}, millidegrees Celsius)
// and, for kernels that register a sensor without a zone (Amlogic GX with SCP firmware), from named hwmon devices
// (/sys/class/hwmon/hwmon*/{name,temp*_input}). A zone that cannot be read, or reads nonsense, is reported as such
// instead of being dropped or trusted.
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import type { ThermalReading } from "./board.js";
import { errnoText, type HostPaths } from "./host-paths.js";

// Outside this range a reading is a sensor that is off or broken: drivers report -273000 (absolute zero) or
// 0x7fffffff when they have nothing. Telemetry's temp_c comes from here too (agent/telemetry/collector.ts).
const MIN_C = -40;
const MAX_C = 150;

/** A temp file's text as degrees Celsius, or why it is not one. */
export function parseTemperature(text: string): { celsius: number } | { error: string } {
  const trimmed = text.trim();
  if (!/^-?\d+$/.test(trimmed)) return { error: `not a number: ${JSON.stringify(trimmed.slice(0, 40))}` };
  const raw = Number(trimmed);
  // The ABI is millidegrees; some vendor 3.10 drivers (Amlogic meson) report whole degrees.
  const celsius = Math.abs(raw) >= 1000 ? raw / 1000 : raw;
  if (celsius < MIN_C || celsius > MAX_C) return { error: `implausible reading ${trimmed}` };
  return { celsius };
}

async function readTrimmed(file: string): Promise<string | undefined> {
  try {
    const text = (await readFile(file, "utf8")).trim();
    return text === "" ? undefined : text;
  } catch {
    return undefined;
  }
}

async function listMatching(dir: string, pattern: RegExp): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  const number = (n: string) => Number(/\d+/.exec(n)?.[0] ?? 0);
  return names.filter((n) => pattern.test(n)).sort((a, b) => number(a) - number(b));
}

async function readSensor(
  paths: HostPaths,
  zone: string,
  type: string | undefined,
  file: string,
): Promise<ThermalReading> {
  const reading: ThermalReading = { zone };
  if (type !== undefined) reading.type = type;
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    reading.error = `cannot read ${paths.toHost(file)}: ${errnoText(err)}`;
    return reading;
  }
  const parsed = parseTemperature(text);
  if ("error" in parsed) reading.error = parsed.error;
  else reading.celsius = parsed.celsius;
  return reading;
}

/**
 * Every thermal zone in kernel order ("thermal_zone0", ...), then every temp*_input of the hwmon devices named in
 * `hwmonNames` (zone "hwmon0/temp1", type the hwmon name). Never rejects; an empty list means no sensor at all.
 */
export async function readThermalZones(paths: HostPaths, hwmonNames: readonly string[]): Promise<ThermalReading[]> {
  const thermalDir = paths.sys("class", "thermal");
  const zones = await listMatching(thermalDir, /^thermal_zone\d+$/);
  const readings = await Promise.all(
    zones.map(async (zone) => {
      const dir = join(thermalDir, zone);
      return readSensor(paths, zone, await readTrimmed(join(dir, "type")), join(dir, "temp"));
    }),
  );
  if (hwmonNames.length === 0) return readings;
  const hwmonDir = paths.sys("class", "hwmon");
  for (const hwmon of await listMatching(hwmonDir, /^hwmon\d+$/)) {
    const dir = join(hwmonDir, hwmon);
    const name = await readTrimmed(join(dir, "name"));
    if (name === undefined || !hwmonNames.includes(name)) continue;
    const inputs = await listMatching(dir, /^temp\d+_input$/);
    for (const input of inputs) {
      const zone = `${hwmon}/${input.replace(/_input$/, "")}`;
      readings.push(await readSensor(paths, zone, name, join(dir, input)));
    }
  }
  return readings;
}

/**
 * The temperature that governs throttling: the hottest zone of the first preferred type that has a reading, else
 * the hottest readable zone of any type (a board without a profile still has its hottest sensor watched).
 */
export function governingTemperature(
  readings: readonly ThermalReading[],
  preferredTypes: readonly string[],
): number | undefined {
  const hottest = (list: readonly ThermalReading[]) => {
    const values = list.map((r) => r.celsius).filter((c): c is number => c !== undefined);
    return values.length === 0 ? undefined : Math.max(...values);
  };
  for (const type of preferredTypes) {
    const found = hottest(readings.filter((r) => r.type === type));
    if (found !== undefined) return found;
  }
  return hottest(readings);
}
