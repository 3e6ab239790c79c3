// The test setup (test/setup/debian-tools.mjs): the one list of Debian packages, installed as root with apt-get,
// or named in one line with the exact command when that cannot be done. Run as a separate process with a PATH
// that lacks the tools, so the real script decides, not a mock of it.
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { DEBIAN_TOOLS, missingPackages } from "./setup/debian-tools.mjs";

const SCRIPT = new URL("./setup/debian-tools.mjs", import.meta.url).pathname;
const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A directory to use as PATH: it holds only the given executables. */
function binDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), "sharenode-setup-"));
  dirs.push(dir);
  chmodSync(dir, 0o755);
  for (const [name, body] of Object.entries(files)) {
    writeFileSync(join(dir, name), body, { mode: 0o755 });
  }
  return dir;
}

/** Packages whose every tool lives in /usr/bin or /bin: a PATH without those lacks them even with sbin searched. */
const packagesOutsideSbin = [...new Set(Object.values(DEBIAN_TOOLS).map(([pkg]) => pkg))]
  .filter((pkg) => missingPackages("").includes(pkg))
  .sort();

describe("the Debian tools the tests need", () => {
  it("are all present on this machine once the setup has run (npm test ran it first)", () => {
    expect(missingPackages()).toEqual([]);
  });

  it("are the ones the README tells a non-root developer to install", () => {
    const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
    const command = /sudo apt-get install -y --no-install-recommends ([^`]*?)\n```/.exec(readme)?.[1] ?? "";
    const listed = command.replace(/\\\n/g, " ").split(/\s+/).filter(Boolean).sort();
    const all = [...new Set(Object.values(DEBIAN_TOOLS).map(([pkg]) => pkg))];
    expect(listed).toEqual(all.sort());
  });

  it("as a non-root user: stops at once with the one command to run, naming every missing package", () => {
    const path = binDir({});
    symlinkSync("/usr/bin/apt-get", join(path, "apt-get"));
    const result = spawnSync(
      "/usr/bin/setpriv",
      ["--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, SCRIPT],
      { env: { PATH: path }, encoding: "utf8" },
    );
    expect(result.status).toBe(1);
    const lines = result.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(packagesOutsideSbin.length).toBeGreaterThan(5);
    expect(lines[0]).toBe(
      "test setup: the tests need Debian packages that are missing; run once: sudo apt-get update && " +
        `sudo apt-get install -y --no-install-recommends ${packagesOutsideSbin.join(" ")}`,
    );
  });

  it("as root with apt-get: updates once, installs the missing packages non-interactively, then checks again", () => {
    const log = join(binDir({}), "apt.log");
    const path = binDir({
      "apt-get": `#!/bin/sh\necho "$DEBIAN_FRONTEND $*" >> ${log}\n`,
    });
    const result = spawnSync(process.execPath, [SCRIPT], { env: { PATH: path }, encoding: "utf8" });
    expect(readFileSync(log, "utf8").trim().split("\n")).toEqual([
      "noninteractive update -qq",
      `noninteractive install -y -qq --no-install-recommends ${packagesOutsideSbin.join(" ")}`,
    ]);
    // The stand-in apt-get installed nothing: the run must fail, naming what is still missing.
    expect(result.status).toBe(1);
    expect(result.stderr.trim().split("\n").pop()).toBe(
      `test setup: still missing after apt-get install: ${packagesOutsideSbin.join(" ")}`,
    );
  });

  it("as root when apt-get fails: one line with apt-get's last words and the command to run", () => {
    const path = binDir({
      "apt-get": "#!/bin/sh\necho 'E: Could not get lock /var/lib/dpkg/lock-frontend' >&2\nexit 100\n",
    });
    const result = spawnSync(process.execPath, [SCRIPT], { env: { PATH: path }, encoding: "utf8" });
    expect(result.status).toBe(1);
    expect(result.stderr.trim().split("\n").pop()).toBe(
      "test setup: apt-get update failed (E: Could not get lock /var/lib/dpkg/lock-frontend); run: apt-get update && " +
        `apt-get install -y --no-install-recommends ${packagesOutsideSbin.join(" ")}`,
    );
  });
});
