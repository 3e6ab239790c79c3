// The device's Ed25519 identity: one key, created on first start, kept in `<dir>/device-key.pem` (PKCS#8 PEM,
// mode 0600), never printed. Everything the box claims is signed with it; anyone holding the 32-byte public key
// can check those claims with verifySignature().
//
// Creation must survive power cuts and racing starts: the key is written to a private temp file, fsynced, then
// published with link(2), which (unlike rename) fails when the name already exists. So the file is always
// either absent or complete, and when two starts race, exactly one key wins and the loser loads it.
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from "node:crypto";
import { constants, promises as fs } from "node:fs";
import { join } from "node:path";
import { fsyncDir, removeStaleTemps, tempPathFor } from "../durable/atomic.js";
import { blake3DeriveKey } from "../kernels/blake3.js";
import { errnoCode, errorMessage } from "../util/errors.js";
import { fromHex, toHex } from "../util/hex.js";

export const DEVICE_KEY_FILE = "device-key.pem";
/** BLAKE3 derive-key context of the device id; see deviceIdOf(). */
export const DEVICE_ID_CONTEXT = "sharenode 2026 device id v1";
export const DEVICE_ID_BYTES = 16;
export const PUBLIC_KEY_BYTES = 32;
export const SIGNATURE_BYTES = 64;
/** A PKCS#8 Ed25519 PEM is 119 bytes; anything far bigger is not our key. */
const MAX_KEY_FILE_BYTES = 16 * 1024;
/** The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the raw 32-byte key follows it. */
const ED25519_SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");

export interface DeviceIdentity {
  /** hex(first 16 bytes of BLAKE3-derive-key("sharenode 2026 device id v1", raw public key)): 32 lowercase hex digits. */
  readonly deviceId: string;
  /** The raw 32-byte Ed25519 public key (a copy on every read: callers cannot alter the identity). */
  readonly publicKey: Uint8Array;
  readonly publicKeyHex: string;
  /** An Ed25519 signature (64 bytes) of message. */
  sign(message: Uint8Array): Uint8Array;
}

export class DeviceKeyError extends Error {
  override name = "DeviceKeyError";
}

/** The device id of a raw Ed25519 public key: 32 lowercase hex digits. */
export function deviceIdOf(publicKeyRaw: Uint8Array): string {
  if (publicKeyRaw.length !== PUBLIC_KEY_BYTES)
    throw new RangeError(`public key must be ${PUBLIC_KEY_BYTES} bytes, got ${publicKeyRaw.length}`);
  return toHex(blake3DeriveKey(DEVICE_ID_CONTEXT, publicKeyRaw, DEVICE_ID_BYTES));
}

/** Parses a raw public key from 64 hex digits; throws a one-line error otherwise. */
export function publicKeyFromHex(hex: string): Uint8Array {
  return fromHex(hex, PUBLIC_KEY_BYTES, "public key");
}

/** Ed25519 verification with a raw 32-byte public key. False (never an exception) for any malformed input. */
export function verifySignature(publicKeyRaw: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (publicKeyRaw.length !== PUBLIC_KEY_BYTES || signature.length !== SIGNATURE_BYTES) return false;
  try {
    return verify(null, message, publicKeyObject(publicKeyRaw), signature);
  } catch {
    return false;
  }
}

/**
 * Node's key object for a raw public key, kept for the keys seen last: building one costs as much as the
 * verification itself (one check: 155 µs building it each time, 78 µs cached; 2026-12-05, x86), and a box checks
 * the same keys over and over (the fleet's on every command, a client's on every receipt). At most KEY_CACHE_SIZE
 * keys; the oldest goes first.
 */
const keyObjects = new Map<string, KeyObject>();
let KEY_CACHE_SIZE = 256;

/**
 * How many public keys verifySignature keeps imported (256 by default, plenty for a box). A fleet service that
 * verifies every device's statements every hour raises it to its fleet's size (about 1 KB of memory a key), so
 * no key is imported twice.
 */
export function setPublicKeyCacheSize(keys: number): void {
  if (!Number.isSafeInteger(keys) || keys < 1) throw new RangeError(`key cache size must be a positive integer`);
  KEY_CACHE_SIZE = keys;
  while (keyObjects.size > KEY_CACHE_SIZE) keyObjects.delete(keyObjects.keys().next().value!);
}

function publicKeyObject(raw: Uint8Array): KeyObject {
  const id = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString("hex");
  let key = keyObjects.get(id);
  if (key === undefined) {
    key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: "der", type: "spki" });
    if (keyObjects.size >= KEY_CACHE_SIZE) keyObjects.delete(keyObjects.keys().next().value!);
    keyObjects.set(id, key);
  }
  return key;
}

/**
 * Loads the device key from `<dir>/device-key.pem`, creating it (and dir, mode 0700) on first start. Refuses,
 * with a one-line DeviceKeyError naming the file, a key file that group or others may access, or that is not an
 * Ed25519 private key.
 */
export async function loadOrCreateDeviceIdentity(dir: string): Promise<DeviceIdentity> {
  const path = join(dir, DEVICE_KEY_FILE);
  // Only a racing start that removed our temp file between our write and our link makes us go round again.
  for (let attempt = 0; attempt < 5; attempt++) {
    const loaded = await loadKeyFile(path);
    if (loaded) {
      // Temp files of a start that lost power before publishing its key hold unused keys.
      await removeStaleTemps(path);
      return identityFrom(loaded);
    }
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    if (await createKeyFile(dir, path)) return identityFrom(await loadExisting(path));
  }
  throw new DeviceKeyError(`could not create ${path}: other processes kept interfering`);
}

async function loadExisting(path: string): Promise<KeyObject> {
  const key = await loadKeyFile(path);
  if (!key) throw new DeviceKeyError(`${path} vanished right after it was created`);
  return key;
}

/** The private key in path, or null when there is no such file. */
async function loadKeyFile(path: string): Promise<KeyObject | null> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(path, constants.O_RDONLY);
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return null;
    throw new DeviceKeyError(`cannot open device key ${path}: ${errorMessage(err)}`);
  }
  let pem: Buffer;
  try {
    // fstat the open file, not the path: what we check is what we read.
    const st = await handle.stat();
    if (!st.isFile()) throw new DeviceKeyError(`device key ${path} is not a regular file`);
    if ((st.mode & 0o077) !== 0) {
      const mode = (st.mode & 0o777).toString(8).padStart(4, "0");
      throw new DeviceKeyError(
        `device key ${path} is accessible by group or others (mode ${mode}): refusing it; run chmod 600 ${path}`,
      );
    }
    if (st.size > MAX_KEY_FILE_BYTES)
      throw new DeviceKeyError(`device key ${path} is not an Ed25519 private key (${st.size} bytes is far too big)`);
    pem = await handle.readFile();
  } finally {
    await handle.close();
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: "pem" });
  } catch {
    throw new DeviceKeyError(`device key ${path} is not an unencrypted PEM private key`);
  } finally {
    pem.fill(0);
  }
  if (key.asymmetricKeyType !== "ed25519") {
    throw new DeviceKeyError(
      `device key ${path} is not an Ed25519 private key (it is ${key.asymmetricKeyType ?? "of unknown type"})`,
    );
  }
  return key;
}

/**
 * Writes a new key to a temp file (0600, exclusive), fsyncs it, and publishes it as path with link(2), which
 * fails if path exists: then another start won and we load its key. Returns false when our temp file was removed
 * under us (a racing start cleaning up), so the caller tries again.
 */
async function createKeyFile(dir: string, path: string): Promise<boolean> {
  const { privateKey } = generateKeyPairSync("ed25519");
  const pem = Buffer.from(privateKey.export({ format: "pem", type: "pkcs8" }) as string, "latin1");
  const temp = tempPathFor(path);
  try {
    const handle = await fs.open(temp, "wx", 0o600);
    try {
      // The mode argument is filtered by the umask, and a umask never adds bits; chmod anyway in case the
      // filesystem ignores it at open.
      await handle.chmod(0o600);
      await handle.writeFile(pem);
      await handle.sync();
    } finally {
      await handle.close();
    }
  } finally {
    pem.fill(0);
  }
  try {
    await fs.link(temp, path);
  } catch (err) {
    const code = errnoCode(err);
    if (code === "EEXIST") return cleanUp(temp, dir, true);
    if (code === "ENOENT") return cleanUp(temp, dir, false);
    await fs.rm(temp, { force: true });
    if (code === "EPERM" || code === "ENOTSUP" || code === "EOPNOTSUPP") {
      throw new DeviceKeyError(
        `cannot create device key ${path}: the filesystem does not support hard links, which atomic creation needs`,
      );
    }
    throw new DeviceKeyError(`cannot create device key ${path}: ${errorMessage(err)}`);
  }
  return cleanUp(temp, dir, true);
}

async function cleanUp(temp: string, dir: string, result: boolean): Promise<boolean> {
  await fs.rm(temp, { force: true });
  await fsyncDir(dir);
  return result;
}

/**
 * The identity object. The private key lives only in this closure: it is no property of the object, so
 * JSON.stringify, util.inspect (even with showHidden), Object.keys and String() cannot reach it.
 */
function identityFrom(privateKey: KeyObject): DeviceIdentity {
  const jwk = createPublicKey(privateKey).export({ format: "jwk" });
  if (typeof jwk.x !== "string") throw new DeviceKeyError("Ed25519 public key has no 'x' (internal error)");
  const raw = new Uint8Array(Buffer.from(jwk.x, "base64url"));
  if (raw.length !== PUBLIC_KEY_BYTES)
    throw new DeviceKeyError(`Ed25519 public key is ${raw.length} bytes (internal error)`);
  const deviceId = deviceIdOf(raw);
  const publicKeyHex = toHex(raw);
  const identity: DeviceIdentity = {
    deviceId,
    get publicKey() {
      return raw.slice();
    },
    publicKeyHex,
    sign(message: Uint8Array): Uint8Array {
      return new Uint8Array(sign(null, message, privateKey));
    },
  };
  Object.defineProperties(identity, {
    toJSON: {
      value: function toJSON() {
        return { deviceId, publicKeyHex };
      },
    },
    toString: {
      value: function toString() {
        return `DeviceIdentity(${deviceId})`;
      },
    },
  });
  return Object.freeze(identity);
}

/** A key that signs and shows only its public half. */
export interface SigningKey {
  /** The raw 32-byte public key (a copy on every read). */
  readonly publicKey: Uint8Array;
  /** The same, 64 lowercase hex digits. */
  readonly publicKeyHex: string;
  sign(message: Uint8Array): Uint8Array;
}

/**
 * The key in `<dir>/device-key.pem` (created on first use, as the device key is) as a SigningKey for another role
 * (the fleet's key, a downloader's key). Frozen, and JSON.stringify or String() of it show the public key only
 * (`${label}(hex)`), so logging the object never prints the private half. A key file problem is thrown as
 * `wrap("<label lowercase> key: <reason>")` (the caller's own error class).
 */
export async function loadOrCreateSigningKey(
  dir: string,
  label: string,
  wrap: (message: string, cause: unknown) => Error,
): Promise<SigningKey> {
  let identity: DeviceIdentity;
  try {
    identity = await loadOrCreateDeviceIdentity(dir);
  } catch (err) {
    if (err instanceof DeviceKeyError)
      throw wrap(`${label.replace(/Key$/, "").toLowerCase()} key: ${err.message}`, err);
    throw err;
  }
  const { publicKeyHex } = identity;
  const key: SigningKey = {
    get publicKey() {
      return identity.publicKey;
    },
    publicKeyHex,
    sign: (message: Uint8Array) => identity.sign(message),
  };
  Object.defineProperties(key, {
    toJSON: { value: () => ({ publicKeyHex }) },
    toString: { value: () => `${label}(${publicKeyHex})` },
  });
  return Object.freeze(key);
}
