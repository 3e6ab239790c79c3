// Releases (issue 13, item 1): `sharenode release keygen | pack | verify` as the built bundle runs them, and the
// manifest format under its own checks: signed by the release key (never the fleet's), every file content-addressed
// with its outboard ready for an origin, tampering and unsafe paths refused with one line.
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { blake3 } from "../agent/kernels/blake3";
import { parseOutboard } from "../agent/kernels/outboard";
import { loadOrCreateDeviceIdentity } from "../agent/identity/device-key";
import { checkOffer } from "../agent/ota/offer";
import { manifestDefect, openManifest, signManifest } from "../agent/ota/release";
import { OtaStateStore } from "../agent/ota/state";
import { toHex } from "../agent/util/hex";
import { seededBytes } from "./helpers/random";

const BIN = join(fileURLToPath(new URL("..", import.meta.url)), "dist/sharenode.js");
let work = "";
const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8" });

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "sharenode-release-"));
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe("sharenode release", () => {
  it("keygen, pack and verify: a signed manifest, each file an object with its outboard, checked again", () => {
    const keys = join(work, "keys");
    const key = cli("release", "keygen", "--key-dir", keys);
    expect(key.status, key.stderr).toBe(0);
    const releaseKey = key.stdout.trim();
    expect(releaseKey).toMatch(/^[0-9a-f]{64}$/);
    expect(statSync(join(keys, "device-key.pem")).mode & 0o777).toBe(0o600);
    expect(cli("release", "keygen", "--key-dir", keys).stdout.trim()).toBe(releaseKey);

    const bundle = join(work, "sharenode.js");
    const unit = join(work, "sharenode.service");
    const bundleBytes = seededBytes(300_000, 1);
    writeFileSync(bundle, bundleBytes);
    writeFileSync(unit, "[Service]\nExecStart=/opt/sharenode/current/launcher\n");
    const out = join(work, "rel");
    const packed = cli(
      "release",
      "pack",
      "--name",
      "sharenode",
      "--version",
      "1.2.3-rc.1",
      "--build",
      "42",
      "--out",
      out,
      "--key-dir",
      keys,
      bundle,
      `${unit}=systemd/sharenode.service`,
    );
    expect(packed.status, packed.stderr).toBe(0);
    expect(packed.stdout).toBe(`sharenode 1.2.3-rc.1 build 42: 3 file(s) in ${out}\n`);
    const opened = openManifest(readFileSync(join(out, "manifest.json")), releaseKey);
    expect(opened.ok).toBe(true);
    const m = opened.ok ? opened.manifest : undefined;
    expect(m).toMatchObject({ v: 1, name: "sharenode", version: "1.2.3-rc.1", build: 42 });
    // package.json is added: Node before 20.19 loads the .js bundle as an ES module only with it beside.
    expect(m!.files.map((f) => f.path)).toEqual(["sharenode.js", "systemd/sharenode.service", "package.json"]);
    expect(readFileSync(join(out, "objects", m!.files[2]!.blake3), "utf8")).toBe('{ "type": "module" }\n');
    const id = toHex(blake3(bundleBytes));
    expect(m!.files[0]).toEqual({ path: "sharenode.js", blake3: id, length: 300_000 });
    expect(Buffer.compare(readFileSync(join(out, "objects", id)), Buffer.from(bundleBytes))).toBe(0);
    // The outboard an origin serves beside the object: it checks itself against the id.
    expect(parseOutboard(readFileSync(join(out, "objects", `${id}.obao`))).length).toBe(300_000);

    const ok = cli("release", "verify", join(out, "manifest.json"), "--release-key", releaseKey, "--dir", out);
    expect(ok.stdout).toBe("ok: sharenode 1.2.3-rc.1 build 42, 3 file(s)\n");
    expect(ok.status).toBe(0);

    // An object changed on the origin: named, exit 1.
    const changed = Buffer.from(bundleBytes);
    changed[1000] ^= 1;
    writeFileSync(join(out, "objects", id), changed);
    const bad = cli("release", "verify", join(out, "manifest.json"), "--release-key", releaseKey, "--dir", out);
    expect(bad.stdout).toBe(
      `problem: sharenode.js: its bytes do not hash to ${id}\n1 problem(s): sharenode 1.2.3-rc.1 build 42, 3 file(s)\n`,
    );
    expect(bad.status).toBe(1);
  });

  it("refuses a manifest under another key (the fleet's), a tampered one, bad fields and unsafe paths, each in one line", async () => {
    const release = await loadOrCreateDeviceIdentity(join(work, "rk"));
    const fleet = await loadOrCreateDeviceIdentity(join(work, "fk"));
    const file = { path: "sharenode.js", blake3: "ab".repeat(32), length: 10 };
    const envelope = signManifest({ name: "sharenode", version: "2.0.0", build: 7, files: [file] }, release);
    expect(openManifest(envelope, release.publicKey)).toMatchObject({ ok: true });
    // Signed by the fleet's command key: not a release.
    const byFleet = signManifest({ name: "sharenode", version: "2.0.0", build: 7, files: [file] }, fleet);
    expect(openManifest(byFleet, release.publicKey)).toEqual({
      ok: false,
      code: "bad-signature",
      reason: "manifest signature does not verify under the release key",
    });
    const tampered = new TextEncoder().encode(
      new TextDecoder().decode(envelope).replace('\\"build\\":7', '\\"build\\":8'),
    );
    expect(Buffer.compare(Buffer.from(tampered), Buffer.from(envelope))).not.toBe(0);
    expect(openManifest(tampered, release.publicKey)).toMatchObject({ ok: false, code: "bad-signature" });
    const base = { v: 1, name: "sharenode", version: "2.0.0", build: 7, files: [file] };
    for (const [change, reason] of [
      [{ version: "2.0" }, /semver/],
      [{ build: 0 }, /build must be a positive integer/],
      [{ build: 1.5 }, /build must be a positive integer/],
      [{ name: "../x" }, /name must be/],
      [{ files: [] }, /files must be a list of 1\.\.64/],
      [{ files: [{ ...file, path: "../etc/passwd" }] }, /must be relative/],
      [{ files: [{ ...file, path: "/etc/passwd" }] }, /must be relative/],
      [{ files: [{ ...file, path: "a//b" }] }, /must be relative/],
      [{ files: [file, file] }, /appears twice/],
      [{ files: [{ ...file, blake3: "xyz" }] }, /blake3 must be 64/],
      [{ files: [{ ...file, length: -1 }] }, /length must be a non-negative integer/],
      [{ extra: 1 }, /unknown field/],
    ] as const) {
      const defect = manifestDefect({ ...base, ...change });
      expect(defect, JSON.stringify(change)).toMatch(reason);
      expect(defect).not.toContain("\n");
    }
    expect(() => signManifest({ ...base, build: 0 }, release)).toThrow(RangeError);
  });

  it("pack refuses an unsafe path, a missing file and a bad build with one line and exit 2 or 1", () => {
    const keys = join(work, "keys2");
    const f = join(work, "f.bin");
    writeFileSync(f, "x");
    mkdirSync(join(work, "o"), { recursive: true });
    const common = [
      "release",
      "pack",
      "--name",
      "n",
      "--version",
      "1.0.0",
      "--out",
      join(work, "o"),
      "--key-dir",
      keys,
    ];
    let r = cli(...common, "--build", "1", `${f}=../up`);
    expect([r.status, r.stderr.trim().split("\n").length]).toEqual([2, 1]);
    expect(r.stderr).toMatch(/must be relative/);
    r = cli(...common, "--build", "1", join(work, "missing"));
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/cannot read .*missing: No such file or directory/);
    r = cli(...common, "--build", "0", f);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--build must be a whole number from 1/);
  });
});

describe("taking an offer", () => {
  it("takes a newer signed release that fits; refuses another key, another name, an old build, one below the floor, one too big", async () => {
    const release = await loadOrCreateDeviceIdentity(join(work, "offer-rk"));
    const fleet = await loadOrCreateDeviceIdentity(join(work, "offer-fk"));
    const files = [
      { path: "sharenode.js", blake3: "ab".repeat(32), length: 600_000 },
      { path: "launcher", blake3: "cd".repeat(32), length: 2_000 },
    ];
    const offer = (build: number, name = "sharenode", signer = release) =>
      signManifest({ name, version: `1.${build}.0`, build, files }, signer);
    const ctx = {
      releasePublicKey: release.publicKeyHex,
      name: "sharenode",
      installedBuild: 10,
      floor: 8,
      freeBytes: 10_000_000,
    };
    expect(checkOffer(offer(11), ctx)).toMatchObject({ ok: true, bytes: 602_000, manifest: { build: 11 } });
    expect(checkOffer(offer(11, "sharenode", fleet), ctx)).toMatchObject({ ok: false, code: "bad-signature" });
    expect(checkOffer(offer(11, "other"), ctx)).toMatchObject({ ok: false, code: "wrong-name" });
    expect(checkOffer(offer(10), ctx)).toMatchObject({
      ok: false,
      code: "not-newer",
      reason: "build 10 (1.10.0) is not above the installed build 10",
    });
    // Rolled back to build 5 after a failed trial, the floor (8) still refuses the old builds 6 and 7.
    expect(checkOffer(offer(7), { ...ctx, installedBuild: 5 })).toMatchObject({ ok: false, code: "below-floor" });
    expect(checkOffer(offer(11), { ...ctx, freeBytes: 100_000 })).toMatchObject({ ok: false, code: "no-space" });
    expect(checkOffer(new Uint8Array([1, 2, 3]), ctx)).toMatchObject({ ok: false, code: "bad-manifest" });
  });
});

describe("the update's persisted state", () => {
  it("moves only along downloading, installed, trial, committed or rolledback; survives a restart; the floor rises on commit only", async () => {
    const path = join(work, "ota-state.json");
    let t = 1000;
    const store = new OtaStateStore(path, () => t++);
    expect(await store.load()).toEqual({ phase: "idle", installedBuild: 0, floor: 0, at: 0 });
    await expect(store.advance("trial")).rejects.toThrow("update state: idle cannot go to trial");
    await store.advance("downloading", { build: 3, version: "1.3.0" });
    await store.advance("installed");
    // A power cut here: a new process finds the state where it was.
    const again = new OtaStateStore(path);
    expect(await again.load()).toMatchObject({ phase: "installed", build: 3, version: "1.3.0", floor: 0 });
    await again.advance("trial");
    expect(await again.advance("committed")).toMatchObject({ phase: "committed", installedBuild: 3, floor: 3 });
    await again.advance("downloading", { build: 4, version: "1.4.0" });
    await again.advance("installed");
    await again.advance("trial");
    const rolled = await again.advance("rolledback", { reason: "no broker within the gate" });
    expect(rolled).toMatchObject({
      phase: "rolledback",
      installedBuild: 3,
      floor: 3,
      build: 4,
      reason: "no broker within the gate",
    });
    expect(statSync(path).mode & 0o777).toBe(0o600);
    writeFileSync(path, "{not json");
    await expect(new OtaStateStore(path).load()).rejects.toThrow(
      /is not JSON: nothing is changed until it is repaired/,
    );
  });
});
