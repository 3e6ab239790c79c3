// The packages for a first install (issue 13, item 6; board/package/build.mjs, `npm run package`): the .deb
// passes Debian's lintian (no error, no warning) and installs with dpkg into a temporary root, its postinst laying
// out what install.sh lays out (release slot, `current`, the launcher, the unit enabled), waiting for a config;
// removing it takes the release tree away and keeps the config, purging takes the config and the state. The .ipk
// is an opkg archive whose postinst lays out OpenWrt's variant (procd init script, state on the overlay).
import { spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../agent/config/config";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "dist/sharenode.js");
const { version } = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string };
const KEY = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";

let work: string;
let deb: string;
let ipk: string;

function sh(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(cmd, args, { encoding: "utf8", env: { ...process.env, ...env } });
  if (r.error) throw new Error(`${cmd}: ${r.error.message} (.ci/run installs Debian's dpkg and lintian)`);
  return r;
}

const mode = (path: string) => statSync(path).mode & 0o7777;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "sharenode-package-"));
  const r = sh(process.execPath, [join(ROOT, "board/package/build.mjs"), join(work, "out")]);
  expect(r.status, r.stderr).toBe(0);
  deb = join(work, "out", `sharenode_${version}_all.deb`);
  ipk = join(work, "out", `sharenode_${version}_all.ipk`);
  expect(r.stdout).toContain(deb);
}, 60_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("the .deb", () => {
  it("passes lintian: no error, no warning (pedantic and info tags shown)", () => {
    const r = sh("lintian", ["--pedantic", "-I", "--tag-display-limit", "0", deb]);
    const tags = r.stdout.split("\n").filter((l) => /^[EWIPX]: /.test(l));
    expect(tags.filter((t) => /^[EW]: /.test(t))).toEqual([]);
    expect(r.status, r.stdout + r.stderr).toBe(0);
  }, 60_000);

  it("says what it is: all architectures, nodejs >= 20, md5sums", () => {
    const info = sh("dpkg-deb", ["--field", deb, "Package", "Version", "Architecture", "Depends"]).stdout;
    expect(info).toBe(`Package: sharenode\nVersion: ${version}\nArchitecture: all\nDepends: nodejs (>= 20), passwd\n`);
    expect(sh("dpkg-deb", ["--info", deb, "md5sums"]).stdout).toMatch(
      /^[0-9a-f]{32} {2}usr\/lib\/sharenode\/sharenode\.js$/m,
    );
  });

  it("installs into a temporary root with dpkg: the layout install.sh makes, the launcher, the unit enabled; then a config; remove and purge", () => {
    const root = join(work, "deb-root");
    const admin = join(root, "var/lib/dpkg");
    mkdirSync(join(admin, "info"), { recursive: true });
    mkdirSync(join(admin, "updates"));
    writeFileSync(join(admin, "status"), "");
    const dpkg = (...args: string[]) =>
      sh("dpkg", ["--force-depends", "--force-script-chrootless", `--instdir=${root}`, `--admindir=${admin}`, ...args]);
    const installed = dpkg("-i", deb);
    expect(installed.status, installed.stderr + installed.stdout).toBe(0);
    expect(installed.stdout).toMatch(
      /install\.sh: installed the bundle into slot A; \/opt\/sharenode\/current -> releases\/A/,
    );
    expect(installed.stdout).toMatch(/install\.sh: no config yet: the service starts once there is one/);

    const opt = join(root, "opt/sharenode");
    expect(readlinkSync(join(opt, "current"))).toBe("releases/A");
    expect(readFileSync(join(opt, "releases/A/sharenode.js"))).toEqual(readFileSync(BIN));
    expect(JSON.parse(readFileSync(join(opt, "releases/A/package.json"), "utf8"))).toEqual({ type: "module" });
    expect(mode(join(root, "usr/lib/sharenode/launcher.sh"))).toBe(0o755);
    expect(readFileSync(join(root, "lib/systemd/system/sharenode.service"), "utf8")).toMatch(
      /^ExecStart=\/bin\/sh \/usr\/lib\/sharenode\/launcher\.sh run run --config \/etc\/sharenode\/config\.json$/m,
    );
    expect(readlinkSync(join(root, "etc/systemd/system/multi-user.target.wants/sharenode.service"))).toBe(
      "/lib/systemd/system/sharenode.service",
    );
    // The package's unit is the one: no copy in /etc that would shadow the next version's.
    expect(existsSync(join(root, "etc/systemd/system/sharenode.service"))).toBe(false);
    expect(existsSync(join(root, "etc/sharenode/config.json"))).toBe(false);

    // The config, given afterwards with the packaged install.sh: what the agent loads.
    const configured = sh("sh", [
      join(root, "usr/lib/sharenode/install/install.sh"),
      "--package",
      "--root",
      root,
      "--bundle",
      join(root, "usr/lib/sharenode/sharenode.js"),
      "--data-dir",
      "/mnt/usb/sharenode",
      "--broker",
      "mqtts://fleet.example.net:8883",
      "--fleet-key",
      KEY,
    ]);
    expect(configured.status, configured.stderr).toBe(0);
    const config = loadConfig(join(root, "etc/sharenode/config.json"), {}).config;
    expect(config.link.url).toBe("mqtts://fleet.example.net:8883");
    expect(readFileSync(join(root, "etc/systemd/system/sharenode.service.d/data-dir.conf"), "utf8")).toContain(
      "ReadWritePaths=-/mnt/usb/sharenode",
    );
    // The same bundle: no second slot written.
    expect(readdirSync(join(opt, "releases/B"))).toEqual([]);

    const removed = dpkg("-r", "sharenode");
    expect(removed.status, removed.stderr).toBe(0);
    expect(existsSync(opt)).toBe(false);
    expect(existsSync(join(root, "usr/lib/sharenode"))).toBe(false);
    expect(existsSync(join(root, "etc/systemd/system/multi-user.target.wants/sharenode.service"))).toBe(false);
    expect(existsSync(join(root, "etc/sharenode/config.json"))).toBe(true);
    const purged = dpkg("-P", "sharenode");
    expect(purged.status, purged.stderr).toBe(0);
    expect(existsSync(join(root, "etc/sharenode"))).toBe(false);
    expect(existsSync(join(root, "var/lib/sharenode"))).toBe(false);
  }, 60_000);
});

describe("the .ipk", () => {
  it("is an opkg archive (debian-binary, control, data) whose postinst lays out OpenWrt's variant", () => {
    const x = join(work, "ipk");
    mkdirSync(join(x, "control"), { recursive: true });
    const root = join(x, "root");
    mkdirSync(join(root, "etc"), { recursive: true });
    writeFileSync(join(root, "etc/openwrt_release"), "DISTRIB_ID='OpenWrt'\n");
    expect(sh("tar", ["-xzf", ipk, "-C", x]).status).toBe(0);
    expect(readFileSync(join(x, "debian-binary"), "utf8")).toBe("2.0\n");
    expect(sh("tar", ["-xzf", join(x, "control.tar.gz"), "-C", join(x, "control")]).status).toBe(0);
    const control = readFileSync(join(x, "control/control"), "utf8");
    expect(control).toMatch(
      new RegExp(`^Package: sharenode\\nVersion: ${version.replace(/\./g, "\\.")}\\nArchitecture: all\\n`),
    );
    expect(control).toMatch(/^Depends: node$/m);
    expect(sh("tar", ["-xzf", join(x, "data.tar.gz"), "-C", root]).status).toBe(0);
    expect(mode(join(root, "etc/init.d/sharenode"))).toBe(0o755);
    expect(readFileSync(join(root, "usr/lib/sharenode/sharenode.js"))).toEqual(readFileSync(BIN));

    // opkg runs the postinst with IPKG_INSTROOT set when it installs into an image.
    const post = sh("sh", [join(x, "control/postinst")], { IPKG_INSTROOT: root });
    expect(post.status, post.stderr).toBe(0);
    expect(readlinkSync(join(root, "opt/sharenode/current"))).toBe("releases/A");
    expect(readlinkSync(join(root, "etc/rc.d/S95sharenode"))).toBe("../init.d/sharenode");
    expect(existsSync(join(root, "etc/sharenode/state"))).toBe(true);
    expect(readFileSync(join(root, "lib/upgrade/keep.d/sharenode"), "utf8")).toBe("/etc/sharenode/\n");
  });
});
