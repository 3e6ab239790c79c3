// Which profile fits this machine: the device tree's model and compatible strings (mainline and Raspberry Pi
// kernels), or the Hardware/Model lines of /proc/cpuinfo (vendor kernels that expose no device tree).
import { readFile } from "node:fs/promises";
import type { HostPaths } from "./host-paths.js";
import { GENERIC_LINUX, PROFILES, profileByName, type BoardFacts, type BoardProfile } from "./profiles.js";

async function readRaw(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, "utf8");
  } catch {
    return undefined;
  }
}

/** /proc/device-tree strings are NUL-terminated; a list (compatible) is NUL-separated. */
function splitNul(raw: string | undefined): string[] {
  return (raw ?? "")
    .split("\0")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

/** The machine-naming lines of /proc/cpuinfo. Keys are case-sensitive: x86's "model" (a number) is not "Model". */
export function parseCpuInfo(text: string): BoardFacts["cpuinfo"] {
  const out: BoardFacts["cpuinfo"] = {};
  for (const line of text.split("\n")) {
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    const key = line.slice(0, colon).trim();
    const value = line.slice(colon + 1).trim();
    if (value === "") continue;
    if (key === "Hardware") out.hardware ??= value;
    else if (key === "Model") out.model ??= value;
    else if (key === "Revision") out.revision ??= value;
  }
  return out;
}

/** Reads what /proc says about the machine; absent files leave their fields empty. */
export async function readBoardFacts(paths: HostPaths): Promise<BoardFacts> {
  const [model, compatible, cpuinfo] = await Promise.all([
    readRaw(paths.proc("device-tree", "model")),
    readRaw(paths.proc("device-tree", "compatible")),
    readRaw(paths.proc("cpuinfo")),
  ]);
  const facts: BoardFacts = { compatible: splitNul(compatible), cpuinfo: parseCpuInfo(cpuinfo ?? "") };
  const modelText = splitNul(model)[0];
  if (modelText !== undefined) facts.model = modelText;
  return facts;
}

/** How `profile` recognises these facts, as one line for `detectedBy`, or undefined when it does not. */
export function matchProfile(profile: BoardProfile, facts: BoardFacts): string | undefined {
  const rules = profile.match;
  if (!rules) return undefined;
  // Most specific evidence first: a compatible string names the board, a cpuinfo Hardware line only the SoC.
  for (const c of facts.compatible) {
    if (rules.compatible?.some((re) => re.test(c))) return `device-tree compatible "${c}"`;
  }
  if (facts.model !== undefined && rules.model?.some((re) => re.test(facts.model!))) {
    return `device-tree model "${facts.model}"`;
  }
  const { model, hardware } = facts.cpuinfo;
  if (model !== undefined && rules.cpuinfoModel?.some((re) => re.test(model))) return `cpuinfo Model "${model}"`;
  if (hardware !== undefined && rules.cpuinfoHardware?.some((re) => re.test(hardware))) {
    return `cpuinfo Hardware "${hardware}"`;
  }
  return undefined;
}

/** The first profile that matches, else generic-linux (with what was seen, so a person can add a profile). */
export function detectProfile(facts: BoardFacts): { profile: BoardProfile; detectedBy: string } {
  for (const profile of PROFILES) {
    const detectedBy = matchProfile(profile, facts);
    if (detectedBy !== undefined) return { profile, detectedBy };
  }
  const seen = [
    facts.model !== undefined ? `device-tree model "${facts.model}"` : undefined,
    facts.cpuinfo.hardware !== undefined ? `cpuinfo Hardware "${facts.cpuinfo.hardware}"` : undefined,
  ].filter((s) => s !== undefined);
  const what = seen.length > 0 ? seen.join(", ") : "no device-tree model or cpuinfo Hardware line";
  return { profile: GENERIC_LINUX, detectedBy: `no profile matched (${what})` };
}

/**
 * The profile for the config value `board`: a known name wins over detection; "auto" detects; an unknown name is
 * reported (one line) and detection runs, so a typo in the config costs an LED, never the agent.
 */
export function selectProfile(
  name: string,
  facts: BoardFacts,
  report: (line: string) => void,
): { profile: BoardProfile; detectedBy: string } {
  if (name !== "auto") {
    const named = profileByName(name);
    if (named) return { profile: named, detectedBy: `config board="${name}"` };
    const known = PROFILES.map((p) => p.name).join(", ");
    report(`unknown board "${name}" (known: ${known}); detecting instead`);
  }
  return detectProfile(facts);
}
