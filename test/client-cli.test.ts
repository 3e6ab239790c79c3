// The client and fleet-side commands of issue 11 through the built bundle (real processes, real files):
// `client keygen`, `fleet order`, `fleet task`. `sharenode get` has its own file, client-get.test.ts.
import { spawnSync } from "node:child_process";
import { createPrivateKey, createPublicKey } from "node:crypto";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

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
