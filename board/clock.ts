// Whether the box's clock can be trusted (a ledger statement's `clockSynced`). Boxes without a battery-backed
// clock boot in 1970 and keep the wrong time until NTP answers. Where systemd-timesyncd runs (its directory
// /run/systemd/timesync exists), its flag file `synchronized` says whether NTP has set the clock (systemd 239 and
// later create it at the first sync). Elsewhere (BusyBox ntpd, procd) there is no such flag the agent can read:
// the clock counts as set once it reads a date after CLOCK_SET_AFTER, which a box that booted in 1970 does not.
import { existsSync } from "node:fs";
import type { HostPaths } from "./host-paths.js";

/** Before this (2026-01-01 UTC) the clock is taken as unset where nothing better says. */
export const CLOCK_SET_AFTER = Date.UTC(2026, 0, 1);

export function clockSynced(paths: HostPaths, now: number): boolean {
  if (existsSync(paths.run("systemd", "timesync"))) return existsSync(paths.run("systemd", "timesync", "synchronized"));
  return now >= CLOCK_SET_AFTER;
}
