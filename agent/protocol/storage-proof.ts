// The signed storage proof: the fleet challenges a box to prove it still holds an object, the box answers with
// BLAKE3 proofs of chunks that neither side chose, signed with its device key, and anyone holding the box's
// public key checks the answer. Wire format and signing encoding: agent/protocol/README.md.
//
// Pure: the object's bytes come through readAt(), the time through an injected clock, the signature through the
// identity's sign(). verifyStorageResponse() takes untrusted input and never throws on it.
import { describeType, describeValue as describe } from "../util/describe.js";
import { createBlake3, createBlake3DeriveKey } from "../kernels/blake3.js";
import { makeProofAsync, type Outboard } from "../kernels/outboard.js";
import { verifyProof } from "../kernels/proof.js";
import { chunkCount, proofLength } from "../kernels/tree.js";
import { deviceIdOf, PUBLIC_KEY_BYTES, SIGNATURE_BYTES, verifySignature } from "../identity/device-key.js";
import { decodeBase64, toBase64 } from "../util/base64.js";
import { errorLine } from "../util/errors.js";
import { fromHex, toHex } from "../util/hex.js";
import { isUint } from "../util/guards.js";

export const STORAGE_PROOF_VERSION = 1;
/** BLAKE3 derive-key context of the chunk-index stream. */
export const STORAGE_CHALLENGE_CONTEXT = "sharenode 2026 storage challenge v1";
/** The first bytes of every signed storage-proof message. */
export const STORAGE_PROOF_DOMAIN = "sharenode storage-proof v1\n";
/** Most chunks one challenge may ask for. */
export const MAX_CHALLENGE_COUNT = 64;
export const OBJECT_ID_BYTES = 32;
export const NONCE_BYTES = 32;

const DOMAIN_BYTES = Buffer.from(STORAGE_PROOF_DOMAIN, "ascii");
const DEVICE_ID_HEX = /^[0-9a-f]{32}$/;
const HEX_32 = /^[0-9a-f]{64}$/;
const RESPONSE_FIELDS = [
  "v",
  "deviceId",
  "objectId",
  "length",
  "nonce",
  "count",
  "indices",
  "proofs",
  "elapsedMs",
  "signedAt",
  "signature",
] as const;

/** What the scheduler sends: which object, a fresh random nonce, and how many chunks. */
export interface StorageChallenge {
  /** The object's BLAKE3 hash, 64 hex digits. */
  objectId: string;
  /** 32 random bytes from the scheduler, 64 hex digits. */
  nonce: string;
  /** Number of distinct chunks to prove, 1..MAX_CHALLENGE_COUNT and at most the object's chunk count. */
  count: number;
}

/** The box's answer; JSON as it stands. Hex is lower case, base64 is standard with padding. */
export interface StorageProofResponse {
  v: 1;
  deviceId: string;
  objectId: string;
  length: number;
  nonce: string;
  count: number;
  /** The derived chunk indices, ascending. */
  indices: number[];
  /** proofs[i]: the single-chunk proof of chunk indices[i] (wasm/README.md), base64. */
  proofs: string[];
  /** Milliseconds from receiving the challenge to the last proof, by the box's clock. */
  elapsedMs: number;
  /** Epoch milliseconds when the box signed. */
  signedAt: number;
  /** Ed25519 over storageProofMessage(), base64. */
  signature: string;
}

/** What the store hands in: the object's id and length, its outboard, and a reader of its bytes. */
export interface ProvableObject {
  id: Uint8Array;
  length: number;
  outboard: Outboard;
  readAt(offset: number, length: number): Promise<Uint8Array>;
}

export interface StorageProofSigner {
  deviceId: string;
  sign(message: Uint8Array): Uint8Array;
}

/** What the verifier knows independently of the response. */
export interface StorageProofExpectation {
  objectId: string | Uint8Array;
  length: number;
  nonce: string | Uint8Array;
  count: number;
  /** The device's raw 32-byte Ed25519 public key. */
  publicKey: Uint8Array;
  /** When given, the response must come from this device id (it must also match publicKey). */
  deviceId?: string;
}

export type StorageProofVerdict = { ok: true; response: StorageProofResponse } | { ok: false; reason: string };

/** A challenge that cannot be answered: bad hex, out-of-range count, or an object it does not name. */
export class ChallengeError extends Error {
  override name = "ChallengeError";
}

/** Validates a challenge from the wire; throws ChallengeError with a one-line reason. */
export function parseChallenge(input: unknown): StorageChallenge {
  if (typeof input !== "object" || input === null || Array.isArray(input))
    throw new ChallengeError("challenge is not an object");
  const { objectId, nonce, count } = input as Record<string, unknown>;
  // Strings only: the wire carries hex (hexBytes alone would also take bytes).
  if (typeof objectId !== "string")
    throw new ChallengeError(`challenge object id must be a hex string, got ${describeType(objectId)}`);
  if (typeof nonce !== "string")
    throw new ChallengeError(`challenge nonce must be a hex string, got ${describeType(nonce)}`);
  hexBytes(objectId, OBJECT_ID_BYTES, "challenge object id");
  hexBytes(nonce, NONCE_BYTES, "challenge nonce");
  checkCount(count);
  return { objectId: objectId.toLowerCase(), nonce: nonce.toLowerCase(), count: count as number };
}

/**
 * The chunks a challenge asks for, ascending. The BLAKE3 derive-key XOF of nonce || objectId under
 * STORAGE_CHALLENGE_CONTEXT is read 8 bytes at a time as little-endian uint64 candidates; each gives
 * index = candidate mod C (C = the chunk count), and repeats are skipped until `count` distinct indices are found.
 * The modulo bias is below C / 2^64 per index (2^-52 for a 4 MiB object, 2^-21 at the 2^43-chunk limit of safe
 * integer lengths): far too small to matter, and no rejection branch that no test could ever reach.
 */
export function challengeIndices(
  objectId: string | Uint8Array,
  length: number,
  nonce: string | Uint8Array,
  count: number,
): number[] {
  const id = hexBytes(objectId, OBJECT_ID_BYTES, "object id");
  const nonceBytes = hexBytes(nonce, NONCE_BYTES, "nonce");
  if (!Number.isSafeInteger(length) || length < 0)
    throw new ChallengeError(`object length must be a non-negative integer, got ${describe(length)}`);
  checkCount(count);
  const chunks = chunkCount(length);
  if (count > chunks) {
    throw new ChallengeError(
      `challenge count ${count} exceeds the ${chunks} chunk${chunks === 1 ? "" : "s"} of an object of ${length} bytes`,
    );
  }
  const material = new Uint8Array(NONCE_BYTES + OBJECT_ID_BYTES);
  material.set(nonceBytes, 0);
  material.set(id, NONCE_BYTES);
  const xof = createBlake3DeriveKey(STORAGE_CHALLENGE_CONTEXT).update(material).xof();
  const c = BigInt(chunks);
  const chosen = new Set<number>();
  const block = new Uint8Array(512);
  const view = new DataView(block.buffer);
  // Distinct indices need about C ln(C / (C - K)) candidates, at most ~300 for K = C = 64; the cap is a guard.
  for (let read = 0; chosen.size < count; read += block.length) {
    if (read >= 1 << 24) throw new Error("challenge index derivation did not converge (internal error)");
    xof.readInto(block);
    for (let at = 0; at < block.length && chosen.size < count; at += 8) {
      chosen.add(Number(view.getBigUint64(at, true) % c));
    }
  }
  return [...chosen].sort((a, b) => a - b);
}

/**
 * The bytes the device signs (agent/protocol/README.md, "Signed message"): the domain prefix, then the fields in
 * a fixed order at fixed widths, the proofs by their BLAKE3 digest. Throws on fields out of range.
 */
export function storageProofMessage(fields: {
  deviceId: string;
  objectId: string;
  length: number;
  nonce: string;
  count: number;
  indices: readonly number[];
  proofs: readonly Uint8Array[];
  elapsedMs: number;
  signedAt: number;
}): Uint8Array {
  const { indices, proofs } = fields;
  if (indices.length !== fields.count || proofs.length !== fields.count)
    throw new RangeError("indices and proofs must have count entries");
  const proofsHasher = createBlake3();
  const prefix = new Uint8Array(4);
  for (const proof of proofs) {
    new DataView(prefix.buffer).setUint32(0, proof.length, true);
    proofsHasher.update(prefix).update(proof);
  }
  const size = DOMAIN_BYTES.length + 16 + 32 + 8 + 32 + 4 + 8 * indices.length + 32 + 8 + 8;
  const message = new Uint8Array(size);
  const view = new DataView(message.buffer);
  let at = 0;
  const bytes = (b: Uint8Array): void => {
    message.set(b, at);
    at += b.length;
  };
  const u64 = (n: number): void => {
    if (!Number.isSafeInteger(n) || n < 0)
      throw new RangeError(`signed field must be a non-negative integer, got ${n}`);
    view.setBigUint64(at, BigInt(n), true);
    at += 8;
  };
  bytes(DOMAIN_BYTES);
  bytes(fromHex(fields.deviceId, 16, "device id"));
  bytes(fromHex(fields.objectId, OBJECT_ID_BYTES, "object id"));
  u64(fields.length);
  bytes(fromHex(fields.nonce, NONCE_BYTES, "nonce"));
  view.setUint32(at, fields.count, true);
  at += 4;
  for (const index of indices) u64(index);
  bytes(proofsHasher.digest());
  u64(fields.elapsedMs);
  u64(fields.signedAt);
  if (at !== size) throw new Error("signed message length mismatch (internal error)");
  return message;
}

/**
 * Answers a challenge: validates it against the object (ChallengeError), derives the chunks, proves each one
 * reading only its group (each group read at most once), and signs. elapsedMs spans derivation and proving, by
 * `clock` (epoch milliseconds, Date.now in production), which also gives signedAt.
 */
export async function answerChallenge(
  challenge: StorageChallenge,
  object: ProvableObject,
  identity: StorageProofSigner,
  clock: () => number,
): Promise<StorageProofResponse> {
  const started = readClock(clock);
  const { objectId, nonce, count } = parseChallenge(challenge);
  const objectIdHex = toHex(object.id);
  if (objectId !== objectIdHex) throw new ChallengeError(`challenge is for object ${objectId}, not ${objectIdHex}`);
  const { outboard, length } = object;
  if (outboard.length !== length || toHex(outboard.id) !== objectIdHex) {
    throw new Error(
      `outboard of object ${toHex(outboard.id)} (${outboard.length} bytes) does not belong to object ${objectIdHex} (${length} bytes)`,
    );
  }
  if (typeof identity.deviceId !== "string" || !DEVICE_ID_HEX.test(identity.deviceId)) {
    throw new Error(`device id must be 32 lowercase hex digits, got ${describe(identity.deviceId)}`);
  }
  const indices = challengeIndices(object.id, length, nonce, count);
  const reads = new Map<string, Promise<Uint8Array>>();
  const readOnce = (offset: number, len: number): Promise<Uint8Array> => {
    const key = `${offset}:${len}`;
    let read = reads.get(key);
    if (!read) {
      read = object.readAt(offset, len);
      reads.set(key, read);
    }
    return read;
  };
  const proofs: Uint8Array[] = [];
  for (const index of indices) proofs.push(await makeProofAsync(outboard, readOnce, index, 1));
  const finished = readClock(clock);
  const fields = {
    deviceId: identity.deviceId,
    objectId,
    length,
    nonce,
    count,
    indices,
    elapsedMs: Math.max(0, Math.round(finished - started)),
    signedAt: Math.round(finished),
  };
  const signature = identity.sign(storageProofMessage({ ...fields, proofs }));
  if (signature.length !== SIGNATURE_BYTES)
    throw new Error(`signer returned ${signature.length} bytes, expected a ${SIGNATURE_BYTES}-byte Ed25519 signature`);
  return {
    v: 1,
    ...fields,
    proofs: proofs.map(toBase64),
    signature: toBase64(signature),
  };
}

/**
 * Checks a response from the network against what the verifier knows. Never throws on the response: any
 * defect gives { ok: false, reason } with a one-line reason. Throws only when `expected` itself is invalid.
 */
export function verifyStorageResponse(response: unknown, expected: StorageProofExpectation): StorageProofVerdict {
  const objectIdHex = toHex(hexBytes(expected.objectId, OBJECT_ID_BYTES, "expected object id"));
  const nonceHex = toHex(hexBytes(expected.nonce, NONCE_BYTES, "expected nonce"));
  const indices = challengeIndices(objectIdHex, expected.length, nonceHex, expected.count);
  if (!(expected.publicKey instanceof Uint8Array) || expected.publicKey.length !== PUBLIC_KEY_BYTES) {
    throw new RangeError(`expected public key must be ${PUBLIC_KEY_BYTES} raw bytes`);
  }
  const deviceId = deviceIdOf(expected.publicKey);
  if (expected.deviceId !== undefined && expected.deviceId !== deviceId) {
    throw new RangeError(
      `expected device id ${describe(expected.deviceId)} does not belong to the expected public key (${deviceId})`,
    );
  }
  try {
    const reason = check(response, {
      objectIdHex,
      nonceHex,
      indices,
      deviceId,
      length: expected.length,
      count: expected.count,
      publicKey: expected.publicKey,
    });
    return reason === undefined ? { ok: true, response: response as StorageProofResponse } : { ok: false, reason };
  } catch (err) {
    // Plain JSON cannot get here; a hostile object (a throwing getter, a Proxy) can.
    return { ok: false, reason: `response could not be read: ${errorLine(err)}` };
  }
}

interface Known {
  objectIdHex: string;
  nonceHex: string;
  indices: number[];
  deviceId: string;
  length: number;
  count: number;
  publicKey: Uint8Array;
}

/** The first defect of the response, or undefined when it is valid. */
function check(response: unknown, known: Known): string | undefined {
  if (typeof response !== "object" || response === null || Array.isArray(response))
    return `response is ${describeType(response)}, not an object`;
  const r = response as Record<string, unknown>;
  for (const key of Object.keys(r)) {
    if (!(RESPONSE_FIELDS as readonly string[]).includes(key)) return `response has an unknown field ${describe(key)}`;
  }
  for (const key of RESPONSE_FIELDS) if (!(key in r) || r[key] === undefined) return `response has no '${key}'`;
  if (r.v !== STORAGE_PROOF_VERSION)
    return `response version ${describe(r.v)} is not supported (expected ${STORAGE_PROOF_VERSION})`;
  if (!isHex(r.deviceId, DEVICE_ID_HEX, 32)) return "response 'deviceId' must be 32 lowercase hex digits";
  if (!isHex(r.objectId, HEX_32, 64)) return "response 'objectId' must be 64 lowercase hex digits";
  if (!isHex(r.nonce, HEX_32, 64)) return "response 'nonce' must be 64 lowercase hex digits";
  for (const key of ["length", "count", "elapsedMs", "signedAt"] as const) {
    if (!isUint(r[key])) return `response '${key}' must be a non-negative integer, got ${describe(r[key])}`;
  }
  if (!Array.isArray(r.indices)) return `response 'indices' must be an array, got ${describeType(r.indices)}`;
  if (!Array.isArray(r.proofs)) return `response 'proofs' must be an array, got ${describeType(r.proofs)}`;
  if (typeof r.signature !== "string")
    return `response 'signature' must be a base64 string, got ${describeType(r.signature)}`;

  if (r.objectId !== known.objectIdHex) return `response is for object ${r.objectId}, expected ${known.objectIdHex}`;
  if (r.length !== known.length)
    return `response says the object is ${r.length as number} bytes, expected ${known.length}`;
  if (r.nonce !== known.nonceHex) return `response answers nonce ${r.nonce}, expected ${known.nonceHex}`;
  if (r.count !== known.count) return `response has count ${r.count as number}, expected ${known.count}`;
  if (r.deviceId !== known.deviceId)
    return `response device id ${r.deviceId} does not belong to the public key (device ${known.deviceId})`;
  if (r.indices.length !== known.count) return `response has ${r.indices.length} indices, expected ${known.count}`;
  if (r.proofs.length !== known.count) return `response has ${r.proofs.length} proofs, expected ${known.count}`;
  for (let i = 0; i < known.count; i++) {
    if (r.indices[i] !== known.indices[i])
      return `response index ${i} is ${describe(r.indices[i])}, but the nonce gives chunk ${known.indices[i]}`;
  }

  const proofs: Uint8Array[] = [];
  for (let i = 0; i < known.count; i++) {
    const chunk = known.indices[i]!;
    const want = proofLength(known.length, chunk, 1);
    const proof = decodeBase64(r.proofs[i], want);
    if (!proof)
      return `response proof ${i} (chunk ${chunk}) is not base64 of the ${want} bytes a proof of that chunk has`;
    proofs.push(proof);
  }
  const signature = decodeBase64(r.signature, SIGNATURE_BYTES);
  if (!signature) return `response 'signature' is not base64 of ${SIGNATURE_BYTES} bytes`;
  const message = storageProofMessage({
    deviceId: r.deviceId as string,
    objectId: known.objectIdHex,
    length: known.length,
    nonce: known.nonceHex,
    count: known.count,
    indices: known.indices,
    proofs,
    elapsedMs: r.elapsedMs as number,
    signedAt: r.signedAt as number,
  });
  if (!verifySignature(known.publicKey, message, signature))
    return `response signature does not verify under device ${known.deviceId}'s key`;

  const id = fromHex(known.objectIdHex);
  for (let i = 0; i < known.count; i++) {
    const chunk = known.indices[i]!;
    if (verifyProof(id, known.length, chunk, 1, proofs[i]!) === null)
      return `response proof ${i} (chunk ${chunk}) does not verify against the object`;
  }
  return undefined;
}

function checkCount(count: unknown): void {
  if (!Number.isSafeInteger(count) || (count as number) < 1 || (count as number) > MAX_CHALLENGE_COUNT) {
    throw new ChallengeError(`challenge count must be an integer 1..${MAX_CHALLENGE_COUNT}, got ${describe(count)}`);
  }
}

/** Bytes from hex text (either case) or bytes, exactly `n` of them; ChallengeError otherwise. */
function hexBytes(value: unknown, n: number, what: string): Uint8Array {
  if (value instanceof Uint8Array) {
    if (value.length !== n) throw new ChallengeError(`${what} must be ${n} bytes, got ${value.length}`);
    return value;
  }
  if (typeof value !== "string") throw new ChallengeError(`${what} must be a hex string, got ${describeType(value)}`);
  if (value.length !== 2 * n)
    throw new ChallengeError(`${what} must be ${2 * n} hex digits, got ${value.length} characters`);
  if (!/^[0-9a-fA-F]*$/.test(value)) throw new ChallengeError(`${what} is not hex: ${describe(value)}`);
  return fromHex(value);
}

function isHex(value: unknown, pattern: RegExp, digits: number): value is string {
  return typeof value === "string" && value.length === digits && pattern.test(value);
}

function readClock(clock: () => number): number {
  const t = clock();
  if (typeof t !== "number" || !Number.isFinite(t) || t < 0)
    throw new Error(`clock returned ${describe(t)}, expected epoch milliseconds`);
  return t;
}
