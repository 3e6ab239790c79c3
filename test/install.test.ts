// board/install/ as an installer runs it: install.sh into a temporary root (as an image is built; the same code
// runs on a box with --root /) with fake bundles: the tree, the release slots and `current`, the config the agent
// loads, idempotence, bad input; the systemd units' directives against the layout, `systemd-analyze verify` (the
// agent's unit and an instance of the serial console's template); the udev rule (its syntax, and its command run
// on a fake LED); the OpenWrt procd script (its own hand-over of the LED and the watchdog, run the same way);
// `sh -n` and shellcheck on both scripts. Fake systemctl, useradd, chown and udevadm on PATH prove that an install
// into a --root other than / starts nothing, creates no user, changes no owner and reloads no udev rule.
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { loadConfig } from "../agent/config/config";

const DIR = fileURLToPath(new URL("../board/install/", import.meta.url));
const SCRIPT = join(DIR, "install.sh");
const UNIT = join(DIR, "sharenode.service");
const INIT = join(DIR, "sharenode.init");
const CONSOLE_UNIT = join(DIR, "sharenode-console@.service");
const RULES = join(DIR, "70-sharenode.rules");
const LAUNCHER = join(DIR, "launcher.sh");
// Upper case on the command line; the config keeps it in lower case, as the agent does.
const KEY = "3B6A27BCCEB6A42D62A3A8D02A6F0D73653215771DE243A63AC048A18B59DA29";
const BROKER = "mqtts://fleet.example.net:8883";
const DATA = "/mnt/usb/sharenode";
const STATE = "/var/lib/sharenode";
const FIRST = ["--data-dir", DATA, "--broker", BROKER, "--fleet-key", KEY];

const tmp = mkdtempSync(join(tmpdir(), "sharenode-install-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

// Every command that would touch the real machine records its call here instead.
const fakeBin = join(tmp, "fake-bin");
const calls = join(tmp, "calls.log");
mkdirSync(fakeBin);
for (const name of ["systemctl", "useradd", "adduser", "addgroup", "chown", "udevadm"]) {
  writeFileSync(join(fakeBin, name), `#!/bin/sh\necho "${name} $*" >> '${calls}'\nexit 1\n`, { mode: 0o755 });
}

let n = 0;
function newRoot(): string {
  const root = join(tmp, `root-${++n}`);
  mkdirSync(root);
  return root;
}
function bundle(text: string): string {
  const path = join(tmp, `bundle-${++n}.js`);
  writeFileSync(path, `// fake sharenode bundle\nconsole.log(${JSON.stringify(text)});\n`);
  return path;
}

function install(root: string, ...args: string[]) {
  const r = spawnSync("sh", [SCRIPT, "--root", root, ...args], {
    encoding: "utf8",
    env: { ...process.env, PATH: `${fakeBin}${delimiter}${process.env.PATH}` },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
function installOk(root: string, ...args: string[]) {
  const r = install(root, ...args);
  expect(r.status, r.stdout + r.stderr).toBe(0);
  return r;
}
const mode = (path: string) => statSync(path).mode & 0o777;

/** Every path under root: a file's mode, size, mtime and inode, a link's target, a directory's mode. */
function snapshot(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      const st = lstatSync(path);
      const rel = path.slice(root.length);
      if (st.isSymbolicLink()) out[rel] = `-> ${readlinkSync(path)}`;
      else if (st.isDirectory()) {
        // A directory's mtime moves with the temporary files install.sh writes and removes in it: its mode only.
        out[rel] = `dir ${(st.mode & 0o7777).toString(8)}`;
        walk(path);
      } else out[rel] = `${(st.mode & 0o7777).toString(8)} ${st.size} ${st.mtimeMs} ${st.ino}`;
    }
  };
  walk(root);
  return out;
}

/** A group other than root's, for running the chgrp of the udev rule and the init script on a fake tree. */
const OTHER_GID = (() => {
  const line = readFileSync("/etc/group", "utf8")
    .split("\n")
    .find((l) => /^[^:]+:[^:]*:[1-9]\d*:/.test(l));
  if (!line) throw new Error("no group but root in /etc/group");
  return Number(line.split(":")[2]);
})();

/** A fake LED class device, as the kernel shows it with the timer trigger selected: every attribute root:root 0644. */
function fakeLed(dir: string, attributes: string[]): void {
  mkdirSync(dir, { recursive: true });
  for (const a of attributes) writeFileSync(join(dir, a), "0\n", { mode: 0o644 });
}
const owner = (path: string) => `${statSync(path).gid} ${(statSync(path).mode & 0o777).toString(8)}`;

afterAll(() => {
  // Nothing above may have run a command that changes the machine.
  expect(existsSync(calls) ? readFileSync(calls, "utf8") : "").toBe("");
});

/** A unit file as section -> key -> values, in order (a key given again adds a value, as ReadWritePaths= does). */
function parseUnit(...texts: string[]): Record<string, Record<string, string[]>> {
  const units: Record<string, Record<string, string[]>> = {};
  for (const text of texts) {
    let section = "";
    for (const raw of text.replace(/\\\n/g, " ").split("\n")) {
      const line = raw.trim();
      if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
      const head = /^\[(.+)\]$/.exec(line);
      if (head) {
        section = head[1];
        units[section] ??= {};
        continue;
      }
      const eq = line.indexOf("=");
      expect(eq, `not a key=value line: ${line}`).toBeGreaterThan(0);
      expect(section, `key outside a section: ${line}`).not.toBe("");
      (units[section][line.slice(0, eq).trim()] ??= []).push(line.slice(eq + 1).trim());
    }
  }
  return units;
}

describe("install.sh into a temporary root", () => {
  it("lays out the release slots, `current`, the config the agent loads, the state and data directories, the unit", () => {
    const root = newRoot();
    const b1 = bundle("v1");
    const r = installOk(root, "--bundle", b1, ...FIRST);
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(/--root is not \/: not creating the system user sharenode \(on the box: useradd --system/);
    expect(r.stdout).toMatch(/no service started/);

    const opt = join(root, "opt/sharenode");
    expect(readdirSync(join(opt, "releases")).sort()).toEqual(["A", "B"]);
    expect(lstatSync(join(opt, "current")).isSymbolicLink()).toBe(true);
    // Relative, so the tree works wherever it is mounted (an image being built, a box).
    expect(readlinkSync(join(opt, "current"))).toBe("releases/A");
    expect(readFileSync(join(opt, "current/sharenode.js"), "utf8")).toBe(readFileSync(b1, "utf8"));
    // Node before 20.19 loads the .js bundle as an ES module only with this beside it.
    expect(JSON.parse(readFileSync(join(opt, "current/package.json"), "utf8"))).toEqual({ type: "module" });
    expect(readdirSync(join(opt, "releases/B"))).toEqual([]);
    expect(mode(join(root, "usr/lib/sharenode/launcher.sh"))).toBe(0o755);
    expect(readdirSync(opt).sort()).toEqual(["current", "releases"]);

    const configPath = join(root, "etc/sharenode/config.json");
    expect(mode(configPath)).toBe(0o640);
    expect(mode(join(root, "etc/sharenode"))).toBe(0o750);
    const config = JSON.parse(readFileSync(configPath, "utf8"));
    expect(config).toEqual({
      stateDir: STATE,
      link: { url: BROKER, fleetPublicKey: KEY.toLowerCase() },
      store: { dataDir: DATA },
    });
    // The agent's own loader accepts it, with nothing from the environment.
    const loaded = loadConfig(configPath, {}).config;
    expect(loaded.store.dataDir).toBe(DATA);
    expect(loaded.link.fleetPublicKey).toBe(KEY.toLowerCase());

    expect(mode(join(root, STATE))).toBe(0o700);
    expect(statSync(join(root, DATA)).isDirectory()).toBe(true);
    expect(mode(join(root, DATA))).toBe(0o750);

    const units = join(root, "etc/systemd/system");
    expect(readFileSync(join(units, "sharenode.service"), "utf8")).toBe(readFileSync(UNIT, "utf8"));
    expect(readFileSync(join(units, "sharenode.service.d/data-dir.conf"), "utf8")).toMatch(
      new RegExp(`^ReadWritePaths=-${DATA}$`, "m"),
    );
    expect(readlinkSync(join(units, "multi-user.target.wants/sharenode.service"))).toBe(
      "/etc/systemd/system/sharenode.service",
    );
    expect(existsSync(join(root, "etc/init.d"))).toBe(false);

    // The udev rule that gives the agent its LED and watchdog, as shipped, 0644.
    const rules = join(root, "etc/udev/rules.d/70-sharenode.rules");
    expect(readFileSync(rules, "utf8")).toBe(readFileSync(RULES, "utf8"));
    expect(mode(rules)).toBe(0o644);
    expect(readdirSync(join(root, "etc/udev/rules.d"))).toEqual(["70-sharenode.rules"]);
    expect(r.stdout).toMatch(/udev applies the rule when the box boots/);

    // The serial console's template, installed but enabled nowhere: the line is the board's.
    const consoleUnit = join(units, "sharenode-console@.service");
    expect(readFileSync(consoleUnit, "utf8")).toBe(readFileSync(CONSOLE_UNIT, "utf8"));
    expect(mode(consoleUnit)).toBe(0o644);
    const wants = readdirSync(units).filter((d) => d.endsWith(".wants"));
    expect(wants).toEqual(["multi-user.target.wants"]);
    expect(readdirSync(join(units, "multi-user.target.wants"))).toEqual(["sharenode.service"]);
    expect(r.stdout).toMatch(
      /sharenode-console@\.service, not enabled: .*systemctl enable --now sharenode-console@ttyAML0/,
    );
  });

  it("changes nothing when run again with the same bundle (systemd and OpenWrt trees)", () => {
    for (const openwrt of [false, true]) {
      const root = newRoot();
      if (openwrt) {
        mkdirSync(join(root, "etc"));
        writeFileSync(join(root, "etc/openwrt_release"), "DISTRIB_ID='OpenWrt'\n");
      }
      const b = bundle("v1");
      installOk(root, "--bundle", b, ...FIRST);
      const before = snapshot(root);
      const r = installOk(root, "--bundle", b);
      expect(snapshot(root), openwrt ? "OpenWrt" : "systemd").toEqual(before);
      expect(r.stdout).not.toMatch(/^install\.sh: (installed|wrote|created)/m);
      if (!openwrt) {
        expect(r.stdout).toMatch(/70-sharenode\.rules: already installed/);
        // Still not enabled: the second run says how again.
        expect(r.stdout).toMatch(/sharenode-console@\.service: already installed, not enabled: /);
      }
    }
  });

  it("runs again safely: the owner's config is kept, the same bundle changes nothing, a new one goes into the other slot", () => {
    const root = newRoot();
    const [b1, b2] = [bundle("v1"), bundle("v2")];
    installOk(root, "--bundle", b1, ...FIRST);
    const configPath = join(root, "etc/sharenode/config.json");
    const edited = readFileSync(configPath, "utf8").replace('"stateDir"', '"log": { "level": "debug" },\n  "stateDir"');
    writeFileSync(configPath, edited);
    chmodSync(configPath, 0o600);
    const slotA = join(root, "opt/sharenode/releases/A/sharenode.js");
    const before = statSync(slotA);

    // The same bundle, and the options of the first run: nothing changes, the options that would are named.
    let r = installOk(root, "--bundle", b1, ...FIRST);
    expect(r.stdout).toMatch(/already the current release \(slot A\)/);
    expect(r.stdout).toMatch(/already installed and enabled/);
    expect(r.stderr.trim().split("\n")).toEqual([
      expect.stringMatching(/warning: --broker not applied: .*config\.json exists and is kept/),
      expect.stringMatching(/warning: --fleet-key not applied/),
    ]);
    expect(readlinkSync(join(root, "opt/sharenode/current"))).toBe("releases/A");
    expect(statSync(slotA).mtimeMs).toBe(before.mtimeMs);
    expect(statSync(slotA).ino).toBe(before.ino);
    expect(readFileSync(configPath, "utf8")).toBe(edited);
    expect(mode(configPath)).toBe(0o600);

    // A new bundle, with no options: the data directory comes from the config.
    r = installOk(root, "--bundle", b2);
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(
      /into slot B; \/opt\/sharenode\/current -> releases\/B \(slot A keeps the previous release\)/,
    );
    expect(readlinkSync(join(root, "opt/sharenode/current"))).toBe("releases/B");
    expect(readFileSync(join(root, "opt/sharenode/current/sharenode.js"), "utf8")).toBe(readFileSync(b2, "utf8"));
    expect(readFileSync(slotA, "utf8")).toBe(readFileSync(b1, "utf8"));
    expect(readFileSync(configPath, "utf8")).toBe(edited);
    expect(readdirSync(join(root, "opt/sharenode")).sort()).toEqual(["current", "releases"]);
    expect(readFileSync(join(root, "etc/systemd/system/sharenode.service.d/data-dir.conf"), "utf8")).toContain(
      `ReadWritePaths=-${DATA}`,
    );

    // The next one goes back into A (the slot not running), leaving B as the previous release.
    const b3 = bundle("v3");
    installOk(root, "--bundle", b3);
    expect(readlinkSync(join(root, "opt/sharenode/current"))).toBe("releases/A");
    expect(readFileSync(slotA, "utf8")).toBe(readFileSync(b3, "utf8"));
    expect(readFileSync(join(root, "opt/sharenode/releases/B/sharenode.js"), "utf8")).toBe(readFileSync(b2, "utf8"));
  });

  it("refuses bad input with exit status 2 and one line on stderr, before writing anything", () => {
    const b = bundle("v1");
    const empty = join(tmp, "empty.js");
    writeFileSync(empty, "");
    const cases: [string[], RegExp][] = [
      [["--bundle", join(tmp, "missing.js"), ...FIRST], /--bundle .*missing\.js: no such file/],
      [["--bundle", empty, ...FIRST], /empty file/],
      [["--bundle", b, "--frobnicate", ...FIRST], /unknown option '--frobnicate'/],
      [["--bundle", b, ...FIRST, "--broker"], /--broker needs a value/],
      [["--bundle", "--data-dir", DATA], /--bundle needs a value/],
      [["--bundle", b, ...FIRST, "--data-dir", "mnt/usb"], /--data-dir mnt\/usb: must be an absolute path/],
      [["--bundle", b, ...FIRST, "--data-dir", "/mnt/my disk"], /--data-dir \/mnt\/my disk: only letters, digits/],
      [
        ["--bundle", b, ...FIRST, "--broker", "http://fleet.example.net"],
        /must be a mqtt:\/\/, mqtts:\/\/, ws:\/\/ or wss:\/\/ URL/,
      ],
      [
        ["--bundle", b, ...FIRST, "--broker", "mqtt://dev:secret@fleet.example.net"],
        /must not carry a user or password/,
      ],
      [["--bundle", b, ...FIRST, "--fleet-key", "abc123"], /--fleet-key: must be 64 hex digits, got 6/],
      [
        ["--bundle", b, ...FIRST, "--fleet-key", "g".repeat(64)],
        /--fleet-key: must be 64 hex digits, got a non-hex character/,
      ],
      [["--bundle", b, "--data-dir", DATA], /no config yet at .*config\.json: give --broker --fleet-key to write one/],
    ];
    for (const [args, message] of cases) {
      const root = newRoot();
      const r = install(root, ...args);
      expect(r.status, `${args.join(" ")}: ${r.stderr}`).toBe(2);
      expect(r.stderr, args.join(" ")).toMatch(/^install\.sh: [^\n]+\n$/);
      expect(r.stderr, args.join(" ")).toMatch(message);
      expect(r.stdout, args.join(" ")).toBe("");
      expect(readdirSync(root), args.join(" ")).toEqual([]);
    }

    const r = install(join(tmp, "no-such-root"), "--bundle", b, ...FIRST);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^install\.sh: --root .*no-such-root: not a directory[^\n]*\n$/);

    // An installed box whose config names another data directory: the config is the owner's, so it wins.
    const root = newRoot();
    installOk(root, "--bundle", b, ...FIRST);
    const conflict = install(root, "--bundle", b, "--data-dir", "/srv/other");
    expect(conflict.status).toBe(2);
    expect(conflict.stderr).toMatch(
      /^install\.sh: --data-dir \/srv\/other: the config .* has store\.dataDir \/mnt\/usb\/sharenode[^\n]*\n$/,
    );
  });

  it("OpenWrt (/etc/openwrt_release): the procd init script, enabled; the state on the overlay, kept by sysupgrade", () => {
    const root = newRoot();
    mkdirSync(join(root, "etc"));
    writeFileSync(join(root, "etc/openwrt_release"), "DISTRIB_ID='OpenWrt'\nDISTRIB_RELEASE='23.05.3'\n");
    const r = installOk(root, "--bundle", bundle("v1"), ...FIRST);
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(/installed .*\/etc\/init\.d\/sharenode, enabled/);

    const init = join(root, "etc/init.d/sharenode");
    expect(readFileSync(init, "utf8")).toBe(readFileSync(INIT, "utf8"));
    expect(mode(init)).toBe(0o755);
    const start = /^START=(\d+)$/m.exec(readFileSync(INIT, "utf8"))![1];
    const stop = /^STOP=(\d+)$/m.exec(readFileSync(INIT, "utf8"))![1];
    expect(readdirSync(join(root, "etc/rc.d")).sort()).toEqual([`K${stop}sharenode`, `S${start}sharenode`]);
    expect(readlinkSync(join(root, `etc/rc.d/S${start}sharenode`))).toBe("../init.d/sharenode");
    // No systemd units, no udev: the init script hands the LED and the watchdog over itself.
    expect(existsSync(join(root, "etc/systemd"))).toBe(false);
    expect(existsSync(join(root, "etc/udev"))).toBe(false);

    // /var is a tmpfs on OpenWrt: the device key (the box's identity) must survive a reboot.
    const config = loadConfig(join(root, "etc/sharenode/config.json"), {}).config;
    expect(config.stateDir).toBe("/etc/sharenode/state");
    expect(mode(join(root, "etc/sharenode/state"))).toBe(0o700);
    expect(existsSync(join(root, "var/lib/sharenode"))).toBe(false);
    expect(readFileSync(join(root, "lib/upgrade/keep.d/sharenode"), "utf8")).toBe("/etc/sharenode/\n");

    // Again, with a new bundle: the next slot, nothing else, not a word on stderr.
    const again = installOk(root, "--bundle", bundle("v2"));
    expect(again.stderr).toBe("");
    expect(again.stdout).toMatch(/init\.d\/sharenode: already installed and enabled/);
    expect(readlinkSync(join(root, "opt/sharenode/current"))).toBe("releases/B");
    expect(readdirSync(join(root, "lib/upgrade/keep.d"))).toEqual(["sharenode"]);
  });
});

describe("the service definitions", () => {
  it("sharenode.service: the layout's paths, the user, the hardening, and nothing that breaks the agent", () => {
    const root = newRoot();
    installOk(root, "--bundle", bundle("v1"), ...FIRST);
    const dir = join(root, "etc/systemd/system");
    const unit = parseUnit(
      readFileSync(join(dir, "sharenode.service"), "utf8"),
      readFileSync(join(dir, "sharenode.service.d/data-dir.conf"), "utf8"),
    );
    const s = unit.Service;
    const one = (key: string) => {
      expect(s[key], key).toHaveLength(1);
      return s[key][0];
    };

    // ExecStart names files of the layout install.sh made.
    // The launcher runs the agent as its child (board/install/launcher.sh run AGENT ARGS...).
    const exec = one("ExecStart").split(/\s+/);
    expect(exec).toEqual([
      "/bin/sh",
      "/usr/lib/sharenode/launcher.sh",
      "run",
      "run",
      "--config",
      "/etc/sharenode/config.json",
    ]);
    expect(mode(join(root, exec[1]))).toBe(0o755);
    expect(readFileSync(join(root, exec[1]), "utf8")).toBe(readFileSync(join(DIR, "launcher.sh"), "utf8"));
    expect(statSync(join(root, exec[5])).isFile()).toBe(true);

    // The agent speaks sd_notify through a systemd-notify child process (agent/health/sd-notify.ts): READY,
    // then WATCHDOG=1 at half of WatchdogSec. A child is not the main process, so NotifyAccess=all.
    expect(one("Type")).toBe("notify");
    expect(one("NotifyAccess")).toBe("all");
    expect(one("WatchdogSec")).toMatch(/^\d+s?$/);
    // Pinged every WatchdogSec/2: at least 20 s leaves room for a slow systemd-notify on a loaded armv7 box.
    expect(Number.parseInt(one("WatchdogSec"), 10)).toBeGreaterThanOrEqual(20);
    // systemd-notify is a unix datagram: AF_UNIX must stay allowed.
    expect(one("RestrictAddressFamilies").split(/\s+/)).toContain("AF_UNIX");
    expect(one("User")).toBe("sharenode");
    expect(one("Group")).toBe("sharenode");
    expect(one("Restart")).toBe("on-failure");
    // The launcher passes SIGTERM on to the agent: systemd must not send it to both (KillMode=control-group).
    expect(one("KillMode")).toBe("mixed");
    expect(one("RestartSec")).toMatch(/^\d+s?$/);
    expect(unit.Unit.StartLimitIntervalSec).toEqual(["0"]);
    expect(one("NoNewPrivileges")).toBe("yes");
    expect(one("ProtectSystem")).toBe("strict");
    expect(one("ProtectHome")).toBe("yes");
    expect(one("PrivateTmp")).toBe("yes");
    expect(one("CapabilityBoundingSet")).toBe("");

    // Writable: the state directory and the data directory ("-": may be absent while the disk is not mounted).
    const writable = s.ReadWritePaths.flatMap((v) => v.split(/\s+/)).map((p) => p.replace(/^-/, ""));
    const config = loadConfig(join(root, "etc/sharenode/config.json"), {}).config;
    expect(writable).toContain(config.stateDir);
    expect(writable).toContain(config.store.dataDir);
    // The release tree: the agent writes an update into the other slot and switches `current` (agent/ota).
    expect(writable).toContain("/opt/sharenode");
    expect(one("StateDirectory")).toBe("sharenode");
    expect(`/var/lib/${one("StateDirectory")}`).toBe(config.stateDir);

    // The agent reads /proc/self/mountinfo, /proc/stat, /proc/meminfo and /sys, and resolves /dev links; V8's
    // JIT needs writable-then-executable memory.
    expect(s.ProcSubset ?? []).not.toContain("pid");
    // It writes its status LED in /sys (ProtectKernelTunables= would make all of /sys read-only) and pets
    // /dev/watchdog: both handed to the group sharenode by the udev rule.
    expect(s.ProtectKernelTunables ?? []).not.toContain("yes");
    expect(s.DeviceAllow ?? []).toEqual([]);
    expect(s.PrivateDevices ?? []).not.toContain("yes");
    expect(s.MemoryDenyWriteExecute ?? []).not.toContain("yes");

    expect(unit.Install.WantedBy).toEqual(["multi-user.target"]);
  });

  /**
   * For systemd-analyze verify (a missing tool fails, never skips: .ci/run installs Debian's systemd): a fresh
   * install into a temporary root, a stand-in node there (verify checks that ExecStart's program is executable),
   * and the text of `unit` with its absolute paths moved into the root (not yet written back).
   */
  function installedForVerify(unit: string): { root: string; unitPath: string; moved: string } {
    if (spawnSync("systemd-analyze", ["--version"]).status !== 0)
      throw new Error("systemd-analyze is not installed: apt-get install systemd");
    const root = newRoot();
    installOk(root, "--bundle", bundle("v1"), ...FIRST);
    mkdirSync(join(root, "usr/bin"), { recursive: true });
    writeFileSync(join(root, "usr/bin/node"), "#!/bin/sh\nexit 0\n", { mode: 0o755 });
    const unitPath = join(root, "etc/systemd/system", unit);
    const moved = readFileSync(unitPath, "utf8").replace(
      /(?<==|\s)\/(usr\/bin|usr\/lib\/sharenode|opt\/sharenode|etc\/sharenode)\//g,
      `${root}/$1/`,
    );
    return { root, unitPath, moved };
  }

  it("systemd-analyze verify accepts the installed unit and its drop-in (paths moved into the temporary root)", () => {
    const { root, unitPath, moved } = installedForVerify("sharenode.service");
    expect(moved).toContain(
      `ExecStart=/bin/sh ${root}/usr/lib/sharenode/launcher.sh run run --config ${root}/etc/sharenode/config.json`,
    );
    writeFileSync(unitPath, moved);
    const r = spawnSync("systemd-analyze", ["verify", "--man=no", unitPath], { encoding: "utf8" });
    // Unknown keys and bad values are warnings with exit status 0: none may name our files.
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr.split("\n").filter((l) => /sharenode|data-dir\.conf/.test(l))).toEqual([]);

    // The check is real: the unit as shipped, pointed at a shell that is not there, fails.
    writeFileSync(unitPath, moved.replace("ExecStart=/bin/sh", `ExecStart=${root}/bin/no-sh`));
    const bad = spawnSync("systemd-analyze", ["verify", "--man=no", unitPath], { encoding: "utf8" });
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/no-sh is not executable/);
  });

  it("sharenode-console@.service: the console on the instance's line, as root, instead of its getty, restarted", () => {
    const unit = parseUnit(readFileSync(CONSOLE_UNIT, "utf8"));
    const s = unit.Service;
    expect(s.ExecStart).toEqual([
      "/usr/bin/node /opt/sharenode/current/sharenode.js console --tty /dev/%I --config /etc/sharenode/config.json",
    ]);
    // Root, like the getty it replaces (reboot, factory-reset, the 0640 config and the 0700 state directory).
    expect(s.User ?? []).toEqual([]);
    expect(s.DynamicUser ?? []).toEqual([]);
    expect(s.Restart).toEqual(["always"]);
    expect(unit.Unit.StartLimitIntervalSec).toEqual(["0"]);
    // One reader on the line: the getty stops first.
    expect(unit.Unit.Conflicts).toEqual(["serial-getty@%i.service"]);
    const after = unit.Unit.After.flatMap((v) => v.split(/\s+/));
    expect(after).toContain("serial-getty@%i.service");
    expect(unit.Unit.BindsTo).toEqual(["dev-%i.device"]);
    expect(after).toContain("dev-%i.device");
    // For a box whose network is down: nothing waits for it.
    const deps = ["After", "Wants", "Requires", "BindsTo"].flatMap((k) => unit.Unit[k] ?? []).join(" ");
    expect(deps).not.toMatch(/network/);
    expect(unit.Install.WantedBy).toEqual(["multi-user.target"]);
  });

  it("systemd-analyze verify accepts an instance of the console's template (sharenode-console@ttyAML0)", () => {
    const { root, unitPath: template, moved } = installedForVerify("sharenode-console@.service");
    const dir = join(root, "etc/systemd/system");
    expect(moved).toContain(
      `ExecStart=${root}/usr/bin/node ${root}/opt/sharenode/current/sharenode.js console --tty /dev/%I`,
    );
    writeFileSync(template, moved);
    // Only the template is on disk: systemd instantiates it for the name, as `systemctl enable` would.
    const instance = join(dir, "sharenode-console@ttyAML0.service");
    expect(existsSync(instance)).toBe(false);
    const r = spawnSync("systemd-analyze", ["verify", "--man=no", instance], { encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr.split("\n").filter((l) => /sharenode/.test(l))).toEqual([]);

    // The instance is really loaded from the template: a template pointing at no node fails for it.
    writeFileSync(template, moved.replace(`${root}/usr/bin/node`, `${root}/usr/bin/no-node`));
    const bad = spawnSync("systemd-analyze", ["verify", "--man=no", instance], { encoding: "utf8" });
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/sharenode-console@ttyAML0\.service: Command .*no-node is not executable/);
  });

  it("70-sharenode.rules: udev syntax, and the LED and watchdog rules", () => {
    // systemd 252 (Debian 12) has no `udevadm verify`: each line is checked against udev's grammar here.
    const rules = readFileSync(RULES, "utf8").replace(/\\\n/g, " ").split("\n");
    const parsed: Array<Array<{ key: string; attr?: string; op: string; value: string }>> = [];
    const KEYS = new Set([
      "ACTION",
      "SUBSYSTEM",
      "KERNEL",
      "ENV",
      "ATTR",
      "TAG",
      "DRIVER",
      "GROUP",
      "MODE",
      "OWNER",
      "RUN",
    ]);
    for (const line of rules) {
      if (line.trim() === "" || line.trimStart().startsWith("#")) continue;
      const pairs = [];
      const re = /\s*([A-Z]+)(?:\{([A-Za-z_]+)\})?(==|!=|\+=|:=|=)"([^"]*)"\s*(,|$)/y;
      let m: RegExpExecArray | null;
      let end = 0;
      while ((m = re.exec(line)) !== null) {
        expect(KEYS.has(m[1]), `unknown key ${m[1]} in: ${line}`).toBe(true);
        pairs.push({ key: m[1], ...(m[2] ? { attr: m[2] } : {}), op: m[3], value: m[4] });
        end = re.lastIndex;
        if (m[5] === "") break;
      }
      expect(end, `not a udev rule: ${line}`).toBe(line.length);
      // A rule matches something, then assigns something.
      expect(pairs.some((p) => p.op === "==" || p.op === "!=")).toBe(true);
      expect(pairs.some((p) => p.op !== "==" && p.op !== "!=")).toBe(true);
      parsed.push(pairs);
    }
    const rule = (match: string) =>
      parsed.find((r) => r.some((p) => p.key === "SUBSYSTEM" && p.op === "==" && p.value.split("|").includes(match)));

    const leds = rule("leds")!;
    expect(leds).toBeDefined();
    expect(leds.find((p) => p.key === "ACTION")).toEqual({ key: "ACTION", op: "==", value: "add|change" });
    const run = leds.filter((p) => p.key === "RUN");
    expect(run).toHaveLength(1);
    expect(run[0].op).toBe("+=");
    expect(run[0].value).toMatch(/^\/bin\/sh -c '[^']+'$/);
    // Absolute paths: udev's RUN has a minimal PATH.
    expect(run[0].value).toContain("/bin/chgrp sharenode");
    expect(run[0].value).toContain("/bin/chmod g+w");

    // The node rule: /dev/watchdog (misc) and /dev/watchdogN (class watchdog), and nothing else.
    const watchdog = rule("watchdog")!;
    expect(watchdog).toBeDefined();
    expect(rule("misc")).toBe(watchdog);
    const kernel = new RegExp(
      `^(${watchdog.find((p) => p.key === "KERNEL")!.value.replace(/\[0-9\]\*/g, "[0-9].*")})$`,
    );
    for (const name of ["watchdog", "watchdog0", "watchdog12"]) expect(name).toMatch(kernel);
    for (const name of ["watchdogd", "c1109900.watchdog", "tty0"]) expect(name).not.toMatch(kernel);
    expect(watchdog.filter((p) => p.op === "=")).toEqual([
      { key: "GROUP", op: "=", value: "sharenode" },
      { key: "MODE", op: "=", value: "0660" },
    ]);
  });

  it("70-sharenode.rules: its command gives a LED's attributes that exist to the group, and nothing else", () => {
    const line = readFileSync(RULES, "utf8")
      .split("\n")
      .find((l) => l.startsWith('SUBSYSTEM=="leds"'))!;
    const script = /RUN\+="\/bin\/sh -c '([^']+)'"/.exec(line)![1];
    const sysfs = join(tmp, "udev-sys");
    const devpath = "/devices/platform/leds/leds/onecloud:blue:alive";
    // As udev runs it: %S the sysfs mount point, %p the device's path in it, $$ a $; a group that exists here.
    const run = (path: string) =>
      spawnSync(
        "/bin/sh",
        [
          "-c",
          script
            .replaceAll("%S", sysfs)
            .replaceAll("%p", path)
            .replaceAll("$$", "$")
            .replaceAll(" sharenode ", ` ${OTHER_GID} `),
        ],
        { encoding: "utf8" },
      );
    // The timer trigger's delay_on is there, its delay_off not yet: both are fine.
    const dir = join(sysfs, devpath);
    fakeLed(dir, ["brightness", "trigger", "delay_on", "max_brightness"]);
    const r = run(devpath);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toBe("");
    for (const a of ["brightness", "trigger", "delay_on"]) expect(owner(join(dir, a)), a).toBe(`${OTHER_GID} 664`);
    expect(existsSync(join(dir, "delay_off"))).toBe(false);
    expect(owner(join(dir, "max_brightness"))).toBe("0 644");
    // A device gone by the time the command runs: nothing to do, no failure.
    expect(run("/devices/platform/leds/leds/gone").status).toBe(0);
  });

  it("sharenode.init: procd runs the layout's bundle as sharenode, respawned, logging to logd", () => {
    const text = readFileSync(INIT, "utf8");
    expect(text.split("\n")[0]).toBe("#!/bin/sh /etc/rc.common");
    expect(text).toMatch(/^USE_PROCD=1$/m);
    expect(text).toMatch(/^START=\d+$/m);
    expect(text).toMatch(/^STOP=\d+$/m);
    const vars = Object.fromEntries([...text.matchAll(/^([A-Z]+)=(\S+)$/gm)].map((m) => [m[1], m[2]]));
    const params = new Map(
      [...text.matchAll(/^\s*procd_set_param (\w+) (.*)$/gm)].map((m) => [
        m[1],
        m[2].replace(/"\$(\w+)"/g, (_, v: string) => vars[v]),
      ]),
    );
    expect(params.get("command")).toBe(
      "/bin/sh /usr/lib/sharenode/launcher.sh run run --config /etc/sharenode/config.json",
    );
    expect(params.get("user")).toBe("sharenode");
    expect(params.get("respawn")).toMatch(/^\d+ \d+ 0$/);
    expect(params.get("stdout")).toBe("1");
    expect(params.get("stderr")).toBe("1");
    // The LED and the watchdog go to the group sharenode first, as root, before procd starts the agent.
    expect(text).toMatch(
      /^start_service\(\) \{\n\tgrant_hardware\n\tprocd_open_instance\n[\s\S]*\tprocd_close_instance\n\}$/m,
    );
  });

  it("sharenode.init: grant_hardware gives the LEDs' brightness and trigger and the watchdogs to the group", () => {
    // The script's function, run by sh with its paths moved into a fake root and a group that exists here.
    const root = newRoot();
    const leds = join(root, "sys/class/leds");
    fakeLed(join(leds, "green:status"), ["brightness", "trigger", "max_brightness"]);
    fakeLed(join(leds, "red:error"), ["brightness", "trigger", "max_brightness", "delay_on", "delay_off"]);
    mkdirSync(join(root, "dev"));
    for (const d of ["watchdog", "watchdog0", "null"]) writeFileSync(join(root, "dev", d), "", { mode: 0o600 });
    const moved = readFileSync(INIT, "utf8")
      .replaceAll(" /sys/class/leds/", ` ${root}/sys/class/leds/`)
      .replaceAll(" /dev/watchdog", ` ${root}/dev/watchdog`)
      .replaceAll("chgrp sharenode", `chgrp ${OTHER_GID}`);
    expect(moved).toContain(`${root}/dev/watchdog[0-9]*`);
    const script = join(root, "sharenode.init");
    writeFileSync(script, moved);
    const r = spawnSync("sh", ["-c", `. '${script}' && grant_hardware`], { encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout + r.stderr).toBe("");
    for (const led of ["green:status", "red:error"]) {
      for (const a of ["brightness", "trigger"])
        expect(owner(join(leds, led, a)), `${led}/${a}`).toBe(`${OTHER_GID} 664`);
      expect(owner(join(leds, led, "max_brightness"))).toBe("0 644");
    }
    // The blink rate is recreated root-only whenever the agent selects the timer: no use handing it over now.
    expect(owner(join(leds, "red:error/delay_on"))).toBe("0 644");
    expect(owner(join(root, "dev/watchdog"))).toBe(`${OTHER_GID} 660`);
    expect(owner(join(root, "dev/watchdog0"))).toBe(`${OTHER_GID} 660`);
    expect(owner(join(root, "dev/null"))).toBe("0 600");

    // No LED and no watchdog at all: nothing to do, no failure.
    const bare = newRoot();
    writeFileSync(
      join(bare, "init"),
      readFileSync(INIT, "utf8")
        .replaceAll(" /sys/class/leds/", ` ${bare}/sys/class/leds/`)
        .replaceAll(" /dev/watchdog", ` ${bare}/dev/watchdog`),
    );
    const none = spawnSync("sh", ["-c", `. '${join(bare, "init")}' && grant_hardware`], { encoding: "utf8" });
    expect(none.status, none.stderr).toBe(0);
    expect(none.stdout + none.stderr).toBe("");
  });

  it.each([SCRIPT, INIT, LAUNCHER])("sh -n %s", (file) => {
    const r = spawnSync("sh", ["-n", file], { encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
  });

  it("shellcheck (POSIX sh) finds nothing in the scripts", () => {
    if (spawnSync("shellcheck", ["--version"]).status !== 0)
      throw new Error("shellcheck is not installed: apt-get install shellcheck");
    const r = spawnSync("shellcheck", ["--shell=sh", "--severity=style", SCRIPT, INIT, LAUNCHER], { encoding: "utf8" });
    expect(r.status, r.stdout + r.stderr).toBe(0);
  });
});
