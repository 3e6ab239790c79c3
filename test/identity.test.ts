// The device key (agent/identity/device-key.ts) on a real filesystem: created once 0600, reloaded, refused when
// unsafe or not Ed25519, one key when starts race (in one process and across processes), never printed.
import { execFile } from "node:child_process";
import { createPrivateKey, createPublicKey, generateKeyPairSync } from "node:crypto";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { inspect } from "node:util";
import { blake3 as nobleBlake3 } from "@noble/hashes/blake3.js";
import { build } from "tsup";
import { afterAll, describe, expect, it } from "vitest";
import {
  DEVICE_ID_CONTEXT,
  DEVICE_KEY_FILE,
  DeviceKeyError,
  deviceIdOf,
  loadOrCreateDeviceIdentity,
  loadOrCreateSigningKey,
  publicKeyFromHex,
  setPublicKeyCacheSize,
  verifySignature,
} from "../agent/identity/device-key";
import { tempPathFor } from "../agent/durable/atomic";
import { toHex } from "../agent/util/hex";
import { errorMessage } from "../agent/util/errors";

const run = promisify(execFile);
const dirs: string[] = [];

async function freshDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "sharenode-identity-"));
  dirs.push(dir);
  return dir;
}

afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

/** What a key file must contain: one Ed25519 PKCS#8 PEM. Returns the raw public key, read independently of the module. */
async function keyFileFacts(dir: string): Promise<{ pem: string; publicRaw: Uint8Array; seed: Buffer }> {
  const pem = await readFile(join(dir, DEVICE_KEY_FILE), "utf8");
  const key = createPrivateKey(pem);
  // The SPKI DER tail, not the JWK path the module uses.
  const spki = createPublicKey(key).export({ format: "der", type: "spki" });
  const seed = Buffer.from(key.export({ format: "jwk" }).d!, "base64url");
  return { pem, publicRaw: new Uint8Array(spki.subarray(spki.length - 32)), seed };
}

describe("device key file", () => {
  it("is created on first start: PKCS#8 PEM, mode 0600, no temp files left", async () => {
    const dir = await freshDir();
    const identity = await loadOrCreateDeviceIdentity(dir);
    const st = await stat(join(dir, DEVICE_KEY_FILE));
    expect(st.isFile()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    const { pem, publicRaw } = await keyFileFacts(dir);
    expect(pem).toMatch(/^-----BEGIN PRIVATE KEY-----\n[\s\S]+\n-----END PRIVATE KEY-----\n$/);
    expect(createPrivateKey(pem).asymmetricKeyType).toBe("ed25519");
    expect(identity.publicKey).toEqual(publicRaw);
    expect(identity.publicKeyHex).toBe(toHex(publicRaw));
    expect(await readdir(dir)).toEqual([DEVICE_KEY_FILE]);
  });

  it("creates a missing directory (0700) on the way", async () => {
    const dir = join(await freshDir(), "state", "identity");
    const identity = await loadOrCreateDeviceIdentity(dir);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    expect((await keyFileFacts(dir)).publicRaw).toEqual(identity.publicKey);
  });

  it("is reloaded identically on later starts and never rewritten", async () => {
    const dir = await freshDir();
    const first = await loadOrCreateDeviceIdentity(dir);
    const before = await readFile(join(dir, DEVICE_KEY_FILE));
    const mtime = (await stat(join(dir, DEVICE_KEY_FILE))).mtimeMs;
    for (let i = 0; i < 3; i++) {
      const again = await loadOrCreateDeviceIdentity(dir);
      expect(again.deviceId).toBe(first.deviceId);
      expect(again.publicKeyHex).toBe(first.publicKeyHex);
      const message = new TextEncoder().encode(`start ${i}`);
      expect(verifySignature(first.publicKey, message, again.sign(message))).toBe(true);
    }
    expect(await readFile(join(dir, DEVICE_KEY_FILE))).toEqual(before);
    expect((await stat(join(dir, DEVICE_KEY_FILE))).mtimeMs).toBe(mtime);
  });

  it("loads a key written by another tool (openssl-style PKCS#8 PEM, 0600)", async () => {
    const dir = await freshDir();
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    await writeFile(join(dir, DEVICE_KEY_FILE), privateKey.export({ format: "pem", type: "pkcs8" }), { mode: 0o600 });
    const identity = await loadOrCreateDeviceIdentity(dir);
    const spki = publicKey.export({ format: "der", type: "spki" });
    expect(identity.publicKey).toEqual(new Uint8Array(spki.subarray(12)));
  });

  it.each([0o644, 0o640, 0o604, 0o660, 0o601, 0o610, 0o666, 0o700 | 0o007])(
    "refuses a key file of mode %o, naming the file, on one line",
    async (mode) => {
      const dir = await freshDir();
      await loadOrCreateDeviceIdentity(dir);
      const path = join(dir, DEVICE_KEY_FILE);
      await chmod(path, mode);
      const err = await loadOrCreateDeviceIdentity(dir).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(DeviceKeyError);
      const message = errorMessage(err);
      expect(message).toContain(path);
      expect(message).toMatch(/group or others/);
      expect(message).toContain(`mode ${mode.toString(8).padStart(4, "0")}`);
      expect(message).not.toContain("\n");
      // Refusing is all it does: the file is neither fixed nor replaced.
      expect((await stat(path)).mode & 0o777).toBe(mode);
      await chmod(path, 0o600);
      await expect(loadOrCreateDeviceIdentity(dir)).resolves.toBeTruthy();
    },
  );

  it("accepts a read-only key file (0400)", async () => {
    const dir = await freshDir();
    const first = await loadOrCreateDeviceIdentity(dir);
    await chmod(join(dir, DEVICE_KEY_FILE), 0o400);
    expect((await loadOrCreateDeviceIdentity(dir)).deviceId).toBe(first.deviceId);
  });

  const notEd25519: Array<[string, () => string | Buffer, RegExp]> = [
    ["garbage text", () => "hello, I am not a key\n", /is not an unencrypted PEM private key/],
    ["an empty file", () => "", /is not an unencrypted PEM private key/],
    [
      "binary noise",
      () => Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 37) & 0xff)),
      /is not an unencrypted PEM private key/,
    ],
    [
      "a truncated PEM",
      () => generateKeyPairSync("ed25519").privateKey.export({ format: "pem", type: "pkcs8" }).toString().slice(0, 60),
      /is not an unencrypted PEM private key/,
    ],
    [
      "an Ed25519 public key",
      () => generateKeyPairSync("ed25519").publicKey.export({ format: "pem", type: "spki" }).toString(),
      /is not an unencrypted PEM private key/,
    ],
    [
      "an RSA private key",
      () =>
        generateKeyPairSync("rsa", { modulusLength: 2048 })
          .privateKey.export({ format: "pem", type: "pkcs8" })
          .toString(),
      /is not an Ed25519 private key \(it is rsa\)/,
    ],
    [
      "an RSA key in PKCS#1",
      () =>
        generateKeyPairSync("rsa", { modulusLength: 2048 })
          .privateKey.export({ format: "pem", type: "pkcs1" })
          .toString(),
      /is not an Ed25519 private key \(it is rsa\)/,
    ],
    [
      "an EC P-256 key",
      () =>
        generateKeyPairSync("ec", { namedCurve: "P-256" })
          .privateKey.export({ format: "pem", type: "pkcs8" })
          .toString(),
      /is not an Ed25519 private key \(it is ec\)/,
    ],
    [
      "an X25519 key",
      () => generateKeyPairSync("x25519").privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
      /is not an Ed25519 private key \(it is x25519\)/,
    ],
    [
      "an Ed448 key",
      () => generateKeyPairSync("ed448").privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
      /is not an Ed25519 private key \(it is ed448\)/,
    ],
    [
      "an encrypted Ed25519 key",
      () =>
        generateKeyPairSync("ed25519")
          .privateKey.export({ format: "pem", type: "pkcs8", cipher: "aes-256-cbc", passphrase: "x" })
          .toString(),
      /is not an unencrypted PEM private key/,
    ],
    ["a huge file", () => Buffer.alloc(1 << 20, 0x41), /is not an Ed25519 private key/],
  ];

  it.each(notEd25519)(
    "refuses %s with a one-line error naming the file, and leaves it alone",
    async (_name, content, reason) => {
      const dir = await freshDir();
      const path = join(dir, DEVICE_KEY_FILE);
      const bytes = content();
      await writeFile(path, bytes, { mode: 0o600 });
      const err = await loadOrCreateDeviceIdentity(dir).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(DeviceKeyError);
      expect(errorMessage(err)).toContain(path);
      expect(errorMessage(err)).toMatch(reason);
      expect(errorMessage(err)).not.toContain("\n");
      expect((await readFile(path)).equals(Buffer.from(bytes))).toBe(true);
    },
  );

  it("refuses a directory where the key file should be", async () => {
    const dir = await freshDir();
    await mkdir(join(dir, DEVICE_KEY_FILE), { mode: 0o700 });
    await expect(loadOrCreateDeviceIdentity(dir)).rejects.toThrow(/is not a regular file/);
  });

  it("removes temp files a start left behind when it lost power before publishing its key", async () => {
    const dir = await freshDir();
    await loadOrCreateDeviceIdentity(dir);
    const stale = tempPathFor(join(dir, DEVICE_KEY_FILE));
    await writeFile(stale, generateKeyPairSync("ed25519").privateKey.export({ format: "pem", type: "pkcs8" }), {
      mode: 0o600,
    });
    await writeFile(join(dir, "unrelated.tmp"), "keep me");
    await loadOrCreateDeviceIdentity(dir);
    expect((await readdir(dir)).sort()).toEqual([DEVICE_KEY_FILE, "unrelated.tmp"]);
  });
});

describe("signing keys for other roles (the fleet's, a downloader's)", () => {
  it("sign with the key file's key, show only the public half, and wrap key file problems in the caller's error", async () => {
    const dir = await freshDir();
    const key = await loadOrCreateSigningKey(dir, "TestKey", (m, cause) => new RangeError(m, { cause }));
    const { publicRaw, seed } = await keyFileFacts(dir);
    expect(key.publicKey).toEqual(publicRaw);
    expect(key.publicKeyHex).toBe(toHex(publicRaw));
    const message = new TextEncoder().encode("role key");
    expect(verifySignature(publicRaw, message, key.sign(message))).toBe(true);
    expect(Object.isFrozen(key)).toBe(true);
    const shown = [JSON.stringify(key), String(key), inspect(key, { showHidden: true, depth: 5 })].join("\n");
    expect(JSON.parse(JSON.stringify(key))).toEqual({ publicKeyHex: toHex(publicRaw) });
    expect(String(key)).toBe(`TestKey(${toHex(publicRaw)})`);
    expect(shown).not.toContain(seed.toString("hex"));
    expect(shown).not.toContain(seed.toString("base64url"));
    const open = await freshDir();
    await writeFile(join(open, DEVICE_KEY_FILE), (await readFile(join(dir, DEVICE_KEY_FILE))).toString(), {
      mode: 0o644,
    });
    await chmod(join(open, DEVICE_KEY_FILE), 0o644);
    const err: unknown = await loadOrCreateSigningKey(
      open,
      "TestKey",
      (m, cause) => new RangeError(m, { cause }),
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RangeError);
    expect(errorMessage(err)).toMatch(/^test key: /);
    expect((err as Error).cause).toBeInstanceOf(DeviceKeyError);
  });
});

describe("the imported-key cache", () => {
  it("verifies the same whatever its size, and refuses a size that is not a positive integer", async () => {
    const keys = await Promise.all(
      [freshDir(), freshDir(), freshDir()].map(async (d) => loadOrCreateDeviceIdentity(await d)),
    );
    const message = new TextEncoder().encode("cache");
    try {
      for (const size of [1, 2, 1000]) {
        setPublicKeyCacheSize(size);
        for (let round = 0; round < 3; round++)
          for (const [i, k] of keys.entries()) {
            expect(verifySignature(k.publicKey, message, k.sign(message))).toBe(true);
            expect(verifySignature(keys[(i + 1) % 3]!.publicKey, message, k.sign(message))).toBe(false);
          }
      }
      expect(() => setPublicKeyCacheSize(0)).toThrow(/positive integer/);
      expect(() => setPublicKeyCacheSize(1.5)).toThrow(/positive integer/);
    } finally {
      setPublicKeyCacheSize(256);
    }
  });
});

describe("racing first starts end with one key", () => {
  it("in one process: 8 concurrent loadOrCreate calls, 5 rounds", async () => {
    for (let round = 0; round < 5; round++) {
      const dir = await freshDir();
      // Staggered by a few event-loop turns, so that some calls publish while others are still loading.
      const ids = await Promise.all(
        Array.from({ length: 8 }, async (_, i) => {
          for (let turn = 0; turn < i * round; turn++) await new Promise((resolve) => setImmediate(resolve));
          return loadOrCreateDeviceIdentity(dir);
        }),
      );
      const { publicRaw } = await keyFileFacts(dir);
      for (const identity of ids) expect(identity.publicKey).toEqual(publicRaw);
      expect(await readdir(dir)).toEqual([DEVICE_KEY_FILE]);
      expect((await stat(join(dir, DEVICE_KEY_FILE))).mode & 0o777).toBe(0o600);
    }
  });

  it("across processes: 6 child processes started at once, 3 rounds", async () => {
    const out = await freshDir();
    const bundle = join(out, "device-key.mjs");
    // tsup (the project's bundler) builds the module alone, as the device bundle would contain it.
    await build({
      entry: { "device-key": new URL("../agent/identity/device-key.ts", import.meta.url).pathname },
      format: ["esm"],
      platform: "node",
      target: "node20",
      outDir: out,
      outExtension: () => ({ js: ".mjs" }),
      config: false,
      dts: false,
      silent: true,
      splitting: false,
      sourcemap: false,
      clean: false,
    });
    // Each child waits for a shared start time so the creations overlap as much as scheduling allows.
    const script = `
      const { loadOrCreateDeviceIdentity } = await import(${JSON.stringify(bundle)});
      const [dir, at] = process.argv.slice(-2);
      while (Date.now() < Number(at)) {}
      const id = await loadOrCreateDeviceIdentity(dir);
      process.stdout.write(id.publicKeyHex);
    `;
    for (let round = 0; round < 3; round++) {
      const dir = await freshDir();
      const at = Date.now() + 400;
      const results = await Promise.all(
        Array.from({ length: 6 }, () =>
          run(process.execPath, ["--input-type=module", "-e", script, dir, String(at)], { encoding: "utf8" }),
        ),
      );
      const { publicRaw } = await keyFileFacts(dir);
      for (const { stdout } of results) expect(stdout).toBe(toHex(publicRaw));
      expect(await readdir(dir)).toEqual([DEVICE_KEY_FILE]);
    }
  });
});

describe("device identity", () => {
  it("derives the device id from the public key: the first 16 bytes of BLAKE3 derive-key, 32 lowercase hex digits", async () => {
    const dir = await freshDir();
    const identity = await loadOrCreateDeviceIdentity(dir);
    const { publicRaw } = await keyFileFacts(dir);
    // Independent BLAKE3 (@noble/hashes) in derive-key mode.
    const reference = toHex(
      nobleBlake3(publicRaw, { context: new TextEncoder().encode(DEVICE_ID_CONTEXT), dkLen: 16 }),
    );
    expect(DEVICE_ID_CONTEXT).toBe("sharenode 2026 device id v1");
    expect(identity.deviceId).toBe(reference);
    expect(identity.deviceId).toMatch(/^[0-9a-f]{32}$/);
    expect(deviceIdOf(publicRaw)).toBe(reference);
    expect(() => deviceIdOf(new Uint8Array(31))).toThrow(RangeError);
  });

  it("pins the device id of a fixed public key (a change here breaks every deployed box's id)", () => {
    const publicKey = publicKeyFromHex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
    const reference = toHex(
      nobleBlake3(publicKey, { context: new TextEncoder().encode("sharenode 2026 device id v1"), dkLen: 16 }),
    );
    expect(deviceIdOf(publicKey)).toBe(reference);
  });

  it("signs: Ed25519 (RFC 8032) signatures that verify with the raw public key, and nothing else does", async () => {
    const identity = await loadOrCreateDeviceIdentity(await freshDir());
    const other = await loadOrCreateDeviceIdentity(await freshDir());
    const message = new TextEncoder().encode("chunk 17 of object ab12");
    const signature = identity.sign(message);
    expect(signature).toBeInstanceOf(Uint8Array);
    expect(signature.length).toBe(64);
    expect(verifySignature(identity.publicKey, message, signature)).toBe(true);
    // Ed25519 is deterministic.
    expect(identity.sign(message)).toEqual(signature);
    expect(verifySignature(other.publicKey, message, signature)).toBe(false);
    expect(verifySignature(identity.publicKey, message.subarray(1), signature)).toBe(false);
    for (let bit = 0; bit < 512; bit += 7) {
      const bad = signature.slice();
      bad[bit >> 3]! ^= 1 << (bit & 7);
      expect(verifySignature(identity.publicKey, message, bad)).toBe(false);
    }
    const badMessage = message.slice();
    badMessage[3]! ^= 0x10;
    expect(verifySignature(identity.publicKey, badMessage, signature)).toBe(false);
    // Malformed keys and signatures are "false", never an exception.
    expect(verifySignature(new Uint8Array(31), message, signature)).toBe(false);
    expect(verifySignature(new Uint8Array(32), message, signature)).toBe(false);
    expect(verifySignature(new Uint8Array(32).fill(0xff), message, signature)).toBe(false);
    expect(verifySignature(identity.publicKey, message, signature.subarray(0, 63))).toBe(false);
    expect(verifySignature(identity.publicKey, message, new Uint8Array(65))).toBe(false);
    // And node:crypto, given the same raw key through JWK, agrees.
    const jwkKey = createPublicKey({
      key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(identity.publicKey).toString("base64url") },
      format: "jwk",
    });
    const { verify } = await import("node:crypto");
    expect(verify(null, message, jwkKey, signature)).toBe(true);
  });

  it("parses public keys from hex, with one-line errors", async () => {
    const identity = await loadOrCreateDeviceIdentity(await freshDir());
    expect(publicKeyFromHex(identity.publicKeyHex)).toEqual(identity.publicKey);
    expect(publicKeyFromHex(identity.publicKeyHex.toUpperCase())).toEqual(identity.publicKey);
    expect(() => publicKeyFromHex(identity.publicKeyHex.slice(2))).toThrow(/must be 64 hex digits/);
    expect(() => publicKeyFromHex("zz" + identity.publicKeyHex.slice(2))).toThrow(/not hex/);
    expect(() => publicKeyFromHex("")).toThrow(/must be 64 hex digits/);
  });

  it("hands out copies of the public key: the identity cannot be altered", async () => {
    const identity = await loadOrCreateDeviceIdentity(await freshDir());
    const hex = identity.publicKeyHex;
    identity.publicKey.fill(0);
    expect(toHex(identity.publicKey)).toBe(hex);
    expect(Object.isFrozen(identity)).toBe(true);
    expect(() => {
      (identity as { deviceId: string }).deviceId = "0".repeat(32);
    }).toThrow(TypeError);
  });

  it("never reveals the private key in any string form or property", async () => {
    const dir = await freshDir();
    const identity = await loadOrCreateDeviceIdentity(dir);
    const { pem, seed } = await keyFileFacts(dir);
    const pemBody = pem
      .split("\n")
      .filter((l) => l && !l.startsWith("-----"))
      .join("");
    const secrets = [
      seed.toString("hex"),
      seed.toString("hex").toUpperCase(),
      seed.toString("base64"),
      seed.toString("base64url"),
      pemBody,
      pemBody.slice(16, 48),
      seed.toString("hex").slice(0, 16),
      seed.toString("base64").slice(0, 12),
      [...seed].join(","),
      [...seed].join(", "),
      "BEGIN PRIVATE KEY",
    ];
    const renderings: Record<string, string> = {
      "JSON.stringify": JSON.stringify(identity),
      "JSON.stringify nested": JSON.stringify({ identity, list: [identity] }),
      "String()": String(identity),
      "template literal": `${identity}`,
      concatenation: "" + identity,
      inspect: inspect(identity),
      "inspect showHidden": inspect(identity, { showHidden: true, depth: Infinity, getters: true }),
      "inspect nested": inspect({ a: { b: identity } }, { showHidden: true, depth: Infinity, getters: true }),
      "Object.keys": JSON.stringify(Object.keys(identity)),
      "own property names": Reflect.ownKeys(identity).map(String).join(","),
      "own values": inspect(
        Reflect.ownKeys(identity).map((k) => Object.getOwnPropertyDescriptor(identity, k)),
        { showHidden: true, depth: Infinity },
      ),
      "Object.entries": inspect(Object.entries(identity), { showHidden: true, depth: Infinity }),
      spread: inspect({ ...identity }, { showHidden: true, depth: Infinity }),
      "structuredClone-able fields": JSON.stringify(
        Object.fromEntries(Object.entries(identity).filter(([, v]) => typeof v !== "function")),
      ),
      "sign.toString": identity.sign.toString(),
    };
    for (const [how, text] of Object.entries(renderings)) {
      for (const secret of secrets) {
        expect(text.includes(secret), `${how} reveals the private key: ${text}`).toBe(false);
      }
    }
    expect(Object.keys(identity).sort()).toEqual(["deviceId", "publicKey", "publicKeyHex", "sign"]);
    expect(JSON.parse(JSON.stringify(identity))).toEqual({
      deviceId: identity.deviceId,
      publicKeyHex: identity.publicKeyHex,
    });
    expect(String(identity)).toBe(`DeviceIdentity(${identity.deviceId})`);
    // No property holds a KeyObject (whose export() would hand the key out).
    for (const key of Reflect.ownKeys(identity)) {
      const value = Object.getOwnPropertyDescriptor(identity, key)!.value as unknown;
      expect(value?.constructor?.name ?? "").not.toMatch(/KeyObject/);
    }
  });
});
