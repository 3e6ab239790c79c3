// The client and fleet-side commands of issue 11 through the built bundle (real processes, real files):
// `client keygen`, `fleet order`, `fleet task`. `sharenode get` has its own file, client-get.test.ts.
import { spawnSync } from "node:child_process";
import { createPrivateKey, createPublicKey } from "node:crypto";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openOrder } from "../agent/protocol/order";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "dist/sharenode.js");

function sharenode(args: string[], env: NodeJS.ProcessEnv = process.env) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", input: "", timeout: 30_000, env });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Exactly one line on stderr, `sharenode: ...`, and no stack frame. */
function expectOneErrorLine(stderr: string, message: RegExp): void {
  expect(stderr.split("\n"), stderr).toHaveLength(2);
  expect(stderr.startsWith("sharenode: ")).toBe(true);
  expect(stderr).not.toMatch(/\bat .*:\d+:\d+/);
  expect(stderr).toMatch(message);
}

let work: string;
beforeAll(() => {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run \`npm run build\` first`);
  work = mkdtempSync(join(tmpdir(), "sharenode-client-cli-"));
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe("sharenode client keygen", () => {
  it("creates the key (0600 in a 0700 dir), prints its public key and only that, and keeps it", () => {
    const dir = join(work, "client-key");
    const first = sharenode(["client", "keygen", "--key-dir", dir]);
    expect(first.stderr).toBe("");
    expect(first.status).toBe(0);
    expect(first.stdout).toMatch(/^[0-9a-f]{64}\n$/);
    const file = join(dir, "device-key.pem");
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    // The printed key is the file's public half; the private half is not in the output.
    const pem = readFileSync(file, "utf8");
    const jwk = createPublicKey(createPrivateKey(pem)).export({ format: "jwk" });
    expect(Buffer.from(jwk.x!, "base64url").toString("hex")).toBe(first.stdout.trim());
    const d = createPrivateKey(pem).export({ format: "jwk" }).d!;
    expect(first.stdout).not.toContain(Buffer.from(d, "base64url").toString("hex"));
    expect(first.stdout).not.toContain("PRIVATE");
    // Second run: the same key, not a new one.
    expect(sharenode(["client", "keygen", "--key-dir", dir]).stdout).toBe(first.stdout);
  });

  it("defaults to ~/.config/sharenode-client", () => {
    const home = join(work, "home");
    const r = sharenode(["client", "keygen"], { ...process.env, HOME: home });
    expect(r.status).toBe(0);
    expect(existsSync(join(home, ".config", "sharenode-client", "device-key.pem"))).toBe(true);
  });

  it("refuses a key file others may read, a stray argument, an unknown action: one line each", () => {
    const dir = join(work, "open-key");
    expect(sharenode(["client", "keygen", "--key-dir", dir]).status).toBe(0);
    chmodSync(join(dir, "device-key.pem"), 0o644);
    const open = sharenode(["client", "keygen", "--key-dir", dir]);
    expect(open.status).toBe(1);
    expectOneErrorLine(open.stderr, /^sharenode: client keygen: client key: device key .* \(mode 0644\)/);
    const stray = sharenode(["client", "keygen", "extra"]);
    expect(stray.status).toBe(2);
    expectOneErrorLine(stray.stderr, /^sharenode: client keygen: unexpected argument 'extra'/);
    const unknown = sharenode(["client", "frobnicate"]);
    expect(unknown.status).toBe(2);
    expectOneErrorLine(unknown.stderr, /^sharenode: client: unknown action 'frobnicate' \(expected keygen\)\n$/);
  });
});

describe("sharenode fleet order", () => {
  const device = "0123456789abcdef0123456789abcdef";
  const object = "ab".repeat(32);
  let fleetDir: string;
  let fleetKey: string;
  let clientKey: string;
  beforeAll(() => {
    fleetDir = join(work, "fleet");
    fleetKey = sharenode(["fleet", "keygen", "--key-dir", fleetDir]).stdout.trim();
    clientKey = sharenode(["client", "keygen", "--key-dir", join(work, "client-for-order")]).stdout.trim();
    expect(fleetKey).toMatch(/^[0-9a-f]{64}$/);
  });
  const base = () => [
    "fleet",
    "order",
    "--device",
    device,
    "--object",
    object,
    "--client-key",
    clientKey,
    "--max-bytes",
    "5000000",
    "--rights",
    "label:acme/records",
    "--ttl",
    "3600",
    "--key-dir",
    fleetDir,
  ];

  it("prints one token that the box's openOrder accepts under the fleet key, with every field as given", () => {
    const before = Date.now();
    const r = sharenode(base());
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^[A-Za-z0-9_-]+\n$/);
    const opened = openOrder(r.stdout.trim(), {
      fleetPublicKey: fleetKey,
      deviceId: device,
      now: Date.now(),
      objectId: object,
    });
    expect(opened.ok, JSON.stringify(opened)).toBe(true);
    if (!opened.ok) return;
    expect(opened.order).toMatchObject({ deviceId: device, objectId: object, clientKey, maxBytes: 5_000_000 });
    expect(opened.order.rightsId).toBe("label:acme/records");
    expect(opened.order.serial).toMatch(/^[0-9a-f]{24}$/);
    expect(opened.order.expiresAt).toBeGreaterThanOrEqual(before + 3_600_000);
    expect(opened.order.expiresAt).toBeLessThanOrEqual(Date.now() + 3_600_000);
    // Signed by this fleet key and no other; each order its own serial; --serial is taken as given.
    expect(openOrder(r.stdout.trim(), { fleetPublicKey: clientKey, deviceId: device, now: Date.now() }).ok).toBe(false);
    const again = openOrder(sharenode(base()).stdout.trim(), { fleetPublicKey: fleetKey, deviceId: device, now: 0 });
    expect(again.ok && again.order.serial).not.toBe(opened.order.serial);
    const named = sharenode([...base(), "--serial", "ord-2026.0001"]);
    const n = openOrder(named.stdout.trim(), { fleetPublicKey: fleetKey, deviceId: device, now: 0 });
    expect(n.ok && n.order.serial).toBe("ord-2026.0001");
  });

  it.each([
    [["--device", "XYZ"], /^sharenode: fleet order: --device must be a device id/],
    [["--object", "ab"], /^sharenode: fleet order: --object must be an object id/],
    [["--client-key", "zz".repeat(32)], /^sharenode: fleet order: --client-key must be the client's public key/],
    [["--max-bytes", "0"], /^sharenode: fleet order: --max-bytes must be a whole number from 1/],
    [["--max-bytes", "-5"], /^sharenode: fleet order: --max-bytes must be a whole number from 1/],
    [["--max-bytes", "9007199254740993"], /^sharenode: fleet order: --max-bytes must be a whole number from 1/],
    [["--rights", "a b"], /^sharenode: fleet order: --rights must be 1..128 characters/],
    [["--ttl", "1.5"], /^sharenode: fleet order: --ttl must be a whole number/],
    [["--serial", "x".repeat(65)], /^sharenode: fleet order: --serial must be 1..64 characters/],
    [["--bogus", "1"], /^sharenode: fleet order: unknown option '--bogus'/],
  ])("refuses %j with one line and exit 2", (override, message) => {
    const args = base();
    const at = args.indexOf(override[0]!);
    if (at >= 0) args[at + 1] = override[1]!;
    else args.push(...override);
    const r = sharenode(args);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe("");
    expectOneErrorLine(r.stderr, message);
  });

  it("names a missing option", () => {
    const args = base();
    args.splice(args.indexOf("--rights"), 2);
    const r = sharenode(args);
    expect(r.status).toBe(2);
    expectOneErrorLine(r.stderr, /^sharenode: fleet order: --rights is required\n$/);
  });
});
