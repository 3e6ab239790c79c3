#!/usr/bin/env node
// The Debian packages the tests use, in one list, and the step that provides them before any test runs.
// `npm test` and `npm run test:arm` run this first (package.json `pretest`, `pretest:arm`), and vitest's global
// setup runs it again for a bare `npx vitest`. A tool that is missing is installed when we are root with apt-get
// (apt-get update once, non-interactive, quiet); otherwise we stop at once with the one command to run. A test
// never skips for a missing tool: it would pass in CI without checking anything.
import { spawnSync } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";
import { pathToFileURL } from "node:url";

/** Command the tests run -> the Debian package that has it, and why the tests need it. */
export const DEBIAN_TOOLS = {
  b3sum: ["b3sum", "the CLI's output is compared with b3sum's"],
  sha256sum: ["coreutils", "and with sha256sum's"],
  script: ["bsdutils", "the progress bar and the console through a real pty"],
  "mkfs.ext4": ["e2fsprogs", "the store on real filesystems: ext4, vfat, exFAT, tmpfs"],
  losetup: ["mount", "loop-mounted filesystem images"],
  busybox: ["busybox", "BusyBox's df, as small boards have it: disk discovery parses it"],
  "mkfs.vfat": ["dosfstools", "vfat images"],
  fusefat: ["fusefat", "this kernel has no vfat: a FUSE driver"],
  "mkfs.exfat": ["exfatprogs", "exFAT images"],
  "mount.exfat-fuse": ["exfat-fuse", "this kernel has no exFAT: a FUSE driver"],
  fusermount: ["fuse", "unmounting FUSE filesystems"],
  mosquitto: ["mosquitto", "integration tests run a real broker"],
  mosquitto_sub: ["mosquitto-clients", "the fleet's view of telemetry, as an operator reads it"],
  mosquitto_passwd: ["mosquitto", "brokers with passwords"],
  "prometheus-mqtt-exporter": ["prometheus-mqtt-exporter", "telemetry read by a stock exporter"],
  "systemd-analyze": ["systemd", "the units in board/install are verified"],
  "systemd-notify": ["systemd", "the agent's sd_notify READY/WATCHDOG goes through it"],
  socat: ["socat", "pty pairs for the serial console; a notify socket that records datagrams"],
  shellcheck: ["shellcheck", "the install scripts linted"],
  openssl: ["openssl", "throwaway CAs for the mqtts tests"],
  curl: ["curl", "a stock client against the box's server: ranges, HEAD, 416, orders"],
  nginx: ["nginx", "the box's Range answers compared with nginx's for the same file"],
  setpriv: ["util-linux", "permission tests run as an unprivileged user"],
  "qemu-arm-static": ["qemu-user-static", "the ARM check: official Node ARM builds under emulation"],
  "dpkg-deb": ["dpkg", "npm run package builds the .deb"],
  lintian: ["lintian", "the .deb checked as Debian checks packages"],
};

/** What `npm run bench` needs on top (package.json `prebench` runs this file with --bench). */
export const BENCH_TOOLS = {
  wrk: ["wrk", "serve-bench's load generator, the same for nginx and the box's server"],
};

// Tools in sbin directories are found even when PATH lacks them (a non-root shell's PATH often does).
const SEARCH_EXTRA = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

function onPath(tool, path) {
  for (const dir of [...path.split(delimiter), ...SEARCH_EXTRA]) {
    if (dir === "") continue;
    try {
      accessSync(join(dir, tool), constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/** The Debian packages whose tools are missing, each named once, in a stable order. */
export function missingPackages(path = process.env.PATH ?? "", tools = DEBIAN_TOOLS) {
  const packages = new Set();
  for (const [tool, [pkg]] of Object.entries(tools)) if (!onPath(tool, path)) packages.add(pkg);
  return [...packages].sort();
}

function installCommand(packages) {
  return `apt-get install -y --no-install-recommends ${packages.join(" ")}`;
}

/**
 * Makes sure every tool is there. Returns normally when it is (installing first when it can); throws an Error
 * whose message is the one line to show otherwise.
 */
export function ensureDebianTools({ log = (line) => process.stderr.write(`${line}\n`), tools = DEBIAN_TOOLS } = {}) {
  const missing = missingPackages(process.env.PATH ?? "", tools);
  if (missing.length === 0) return;
  const isRoot = process.getuid?.() === 0;
  const hasApt = onPath("apt-get", process.env.PATH ?? "");
  if (!isRoot || !hasApt) {
    const prefix = isRoot ? "" : "sudo ";
    throw new Error(
      hasApt
        ? `the tests need Debian packages that are missing; run once: ${prefix}apt-get update && ${prefix}${installCommand(missing)}`
        : `the tests need these Debian packages and this machine has no apt-get: ${missing.join(" ")}`,
    );
  }
  log(`test setup: installing Debian packages the tests need: ${missing.join(" ")}`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  for (const args of [
    ["update", "-qq"],
    ["install", "-y", "-qq", "--no-install-recommends", ...missing],
  ]) {
    const result = spawnSync("apt-get", args, { env, stdio: ["ignore", "ignore", "pipe"], encoding: "utf8" });
    if (result.status !== 0) {
      const why = (result.stderr ?? "").trim().split("\n").filter(Boolean).pop() ?? `exit ${result.status}`;
      throw new Error(`apt-get ${args[0]} failed (${why}); run: apt-get update && ${installCommand(missing)}`);
    }
  }
  const still = missingPackages(process.env.PATH ?? "", tools);
  if (still.length > 0) throw new Error(`still missing after apt-get install: ${still.join(" ")}`);
}

/** vitest globalSetup: the same check for a bare `npx vitest run`. */
export default function setup() {
  ensureDebianTools();
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  try {
    const bench = process.argv.includes("--bench");
    ensureDebianTools({ tools: bench ? { ...DEBIAN_TOOLS, ...BENCH_TOOLS } : DEBIAN_TOOLS });
  } catch (err) {
    process.stderr.write(`test setup: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
}
