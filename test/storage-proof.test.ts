// The signed storage proof (agent/protocol/storage-proof.ts): index derivation checked against a reference
// written here from agent/protocol/README.md with an independent BLAKE3 (@noble/hashes), round trips through JSON,
// every tampering rejected with a one-line reason, garbage never throwing, and reads limited to the challenged
// groups.
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { blake3 as nobleBlake3 } from "@noble/hashes/blake3.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DeviceIdentity, deviceIdOf, loadOrCreateDeviceIdentity } from "../agent/identity/device-key";
import { createOutboard, groupsToRead, parseOutboard } from "../agent/kernels/outboard";
import { makeProofFromData } from "../agent/kernels/proof";
import { chunkCount } from "../agent/kernels/tree";
import {
  ChallengeError,
  MAX_CHALLENGE_COUNT,
  type ProvableObject,
  type StorageChallenge,
  type StorageProofExpectation,
  type StorageProofResponse,
  answerChallenge,
  challengeIndices,
  parseChallenge,
  storageProofMessage,
  verifyStorageResponse,
} from "../agent/protocol/storage-proof";
import { toHex } from "../agent/util/hex";
import { errorMessage } from "../agent/util/errors";

const KiB = 1024;
const MiB = 1024 * KiB;
const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

let dir: string;
let device: DeviceIdentity;
let otherDevice: DeviceIdentity;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sharenode-storage-proof-"));
  device = await loadOrCreateDeviceIdentity(join(dir, "a"));
  otherDevice = await loadOrCreateDeviceIdentity(join(dir, "b"));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

// --- helpers ----------------------------------------------------------------------------------------------------

interface TestObject extends ProvableObject {
  data: Uint8Array;
  idHex: string;
  reads: Array<[number, number]>;
}

const objects = new Map<number, TestObject>();

/** An object of `length` random bytes with its outboard; records every read. Cached per length. */
function object(length: number): TestObject {
  let o = objects.get(length);
  if (!o) {
    const data = new Uint8Array(randomBytes(length));
    const { id, outboard } = createOutboard(data);
    const reads: Array<[number, number]> = [];
    o = {
      data,
      id,
      idHex: toHex(id),
      length,
      outboard: parseOutboard(outboard),
      reads,
      readAt: async (offset, len) => {
        reads.push([offset, len]);
        return data.slice(offset, offset + len);
      },
    };
    objects.set(length, o);
  }
  return o;
}

/** A clock that advances by `step` ms on every reading. */
function steppingClock(start: number, step: number): () => number {
  let t = start - step;
  return () => (t += step);
}

function nonceHex(): string {
  return randomBytes(32).toString("hex");
}

function expectation(
  o: TestObject,
  challenge: StorageChallenge,
  identity: DeviceIdentity = device,
): StorageProofExpectation {
  return {
    objectId: o.idHex,
    length: o.length,
    nonce: challenge.nonce,
    count: challenge.count,
    publicKey: identity.publicKey,
  };
}

async function answered(length: number, count: number, identity: DeviceIdentity = device) {
  const o = object(length);
  const challenge = { objectId: o.idHex, nonce: nonceHex(), count };
  const response = await answerChallenge(challenge, o, identity, steppingClock(1_767_225_600_000, 13));
  return { o, challenge, response, expected: expectation(o, challenge, identity) };
}

/** A copy of the response as the wire delivers it. */
function wire(response: StorageProofResponse): Record<string, unknown> {
  return JSON.parse(JSON.stringify(response)) as Record<string, unknown>;
}

/** Re-signs a (modified) response with `identity`: what a dishonest box holding its own key can do. */
function resign(r: Record<string, unknown>, identity: DeviceIdentity = device): Record<string, unknown> {
  const message = storageProofMessage({
    deviceId: r.deviceId as string,
    objectId: r.objectId as string,
    length: r.length as number,
    nonce: r.nonce as string,
    count: r.count as number,
    indices: r.indices as number[],
    proofs: (r.proofs as string[]).map((p) => new Uint8Array(Buffer.from(p, "base64"))),
    elapsedMs: r.elapsedMs as number,
    signedAt: r.signedAt as number,
  });
  return { ...r, signature: Buffer.from(identity.sign(message)).toString("base64") };
}

function expectRejected(response: unknown, expected: StorageProofExpectation, reason: RegExp): void {
  const verdict = verifyStorageResponse(response, expected);
  expect(verdict.ok, `accepted: ${show(response)}`).toBe(false);
  if (verdict.ok) return;
  expect(verdict.reason).toMatch(reason);
  expect(verdict.reason).not.toContain("\n");
  expect(verdict.reason.length).toBeLessThan(300);
}

/** A short rendering of any value for a failure message; never throws, never walks a huge value. */
function show(value: unknown): string {
  try {
    return inspect(value, { depth: 2, maxArrayLength: 6, maxStringLength: 70, breakLength: Infinity });
  } catch {
    return "(unprintable)";
  }
}

function flipBase64Bit(b64: string, bit: number): string {
  const bytes = Buffer.from(b64, "base64");
  bytes[bit >> 3]! ^= 1 << (bit & 7);
  return bytes.toString("base64");
}

// --- a reference derivation, written from agent/protocol/README.md --------------------------------------------

function referenceIndices(objectIdHex: string, length: number, nonce: string, count: number): number[] {
  const chunks = BigInt(Math.max(1, Math.ceil(length / 1024)));
  const material = Buffer.concat([Buffer.from(nonce, "hex"), Buffer.from(objectIdHex, "hex")]);
  const stream = Buffer.from(
    nobleBlake3(material, { context: utf8("sharenode 2026 storage challenge v1"), dkLen: 8 * 4096 }),
  );
  const picked: number[] = [];
  for (let at = 0; picked.length < count; at += 8) {
    const index = Number(stream.readBigUInt64LE(at) % chunks);
    if (!picked.includes(index)) picked.push(index);
  }
  return picked.sort((a, b) => a - b);
}

// --- chunk indices ------------------------------------------------------------------------------------------------

describe("challengeIndices", () => {
  const id = toHex(nobleBlake3(utf8("some object")));

  it("matches the reference derivation (independent BLAKE3) for many lengths, nonces and counts", () => {
    for (const length of [0, 1, 1024, 1025, 5000, 16 * KiB + 1, 64 * KiB, 100_003, 4 * MiB, 2 ** 40 + 17]) {
      const chunks = chunkCount(length);
      for (const count of [1, 2, 4, 16, 63, 64]) {
        if (count > chunks) continue;
        for (let i = 0; i < 3; i++) {
          const nonce = nonceHex();
          expect(challengeIndices(id, length, nonce, count)).toEqual(referenceIndices(id, length, nonce, count));
        }
      }
    }
  });

  it("pins one derivation (the worked example in agent/protocol/README.md)", () => {
    const objectId = toHex(nobleBlake3(new Uint8Array(0)));
    const nonce = "00".repeat(32);
    expect(challengeIndices(objectId, 4 * MiB, nonce, 4)).toEqual(referenceIndices(objectId, 4 * MiB, nonce, 4));
    expect(challengeIndices(objectId, 4 * MiB, nonce, 4)).toEqual([534, 2162, 2224, 2958]);
  });

  it("is deterministic, distinct, ascending and in range; takes hex of either case or bytes", () => {
    for (const length of [1, 5000, 64 * KiB, 4 * MiB]) {
      const chunks = chunkCount(length);
      for (const count of [1, 4, 16, 64].filter((k) => k <= chunks)) {
        const nonce = nonceHex();
        const indices = challengeIndices(id, length, nonce, count);
        expect(indices).toHaveLength(count);
        expect(new Set(indices).size).toBe(count);
        expect([...indices].sort((a, b) => a - b)).toEqual(indices);
        for (const i of indices) expect(Number.isInteger(i) && i >= 0 && i < chunks).toBe(true);
        expect(challengeIndices(id, length, nonce, count)).toEqual(indices);
        expect(challengeIndices(id.toUpperCase(), length, nonce.toUpperCase(), count)).toEqual(indices);
        expect(challengeIndices(Buffer.from(id, "hex"), length, Buffer.from(nonce, "hex"), count)).toEqual(indices);
      }
    }
  });

  it("asks for every chunk when count equals the chunk count", () => {
    expect(challengeIndices(id, 64 * KiB, nonceHex(), 64)).toEqual(Array.from({ length: 64 }, (_, i) => i));
    expect(challengeIndices(id, 5000, nonceHex(), 5)).toEqual([0, 1, 2, 3, 4]);
    expect(challengeIndices(id, 1, nonceHex(), 1)).toEqual([0]);
    expect(challengeIndices(id, 0, nonceHex(), 1)).toEqual([0]);
  });

  it("depends on the nonce and on the object id", () => {
    const nonce = nonceHex();
    const sets = new Set<string>();
    for (let i = 0; i < 50; i++) sets.add(challengeIndices(id, 4 * MiB, nonceHex(), 16).join(","));
    expect(sets.size).toBe(50);
    const byId = new Set<string>();
    for (let i = 0; i < 50; i++) byId.add(challengeIndices(randomBytes(32), 4 * MiB, nonce, 16).join(","));
    expect(byId.size).toBe(50);
    // One flipped bit anywhere in either input changes the set.
    const base = challengeIndices(id, 4 * MiB, nonce, 16).join(",");
    for (const bit of [0, 7, 100, 255]) {
      const n = Buffer.from(nonce, "hex");
      n[bit >> 3]! ^= 1 << (bit & 7);
      expect(challengeIndices(id, 4 * MiB, n, 16).join(",")).not.toBe(base);
      const o = Buffer.from(id, "hex");
      o[bit >> 3]! ^= 1 << (bit & 7);
      expect(challengeIndices(o, 4 * MiB, nonce, 16).join(",")).not.toBe(base);
    }
  });

  it("spreads evenly over the chunks (loose chi-square, 5 chunks x 10000 nonces)", () => {
    const counts = new Array<number>(5).fill(0);
    const n = 10_000;
    for (let i = 0; i < n; i++) counts[challengeIndices(id, 5000, randomBytes(32), 1)[0]!]!++;
    const chi2 = counts.reduce((sum, c) => sum + (c - n / 5) ** 2 / (n / 5), 0);
    // 4 degrees of freedom: P(chi2 > 30) < 1e-5.
    expect(chi2).toBeLessThan(30);
  });

  it("rejects counts out of range and bad ids or nonces with a one-line ChallengeError", () => {
    const nonce = nonceHex();
    const bad: Array<[() => unknown, RegExp]> = [
      [() => challengeIndices(id, 4 * MiB, nonce, 0), /count must be an integer 1\.\.64, got 0/],
      [() => challengeIndices(id, 4 * MiB, nonce, -1), /count must be an integer 1\.\.64/],
      [() => challengeIndices(id, 4 * MiB, nonce, 1.5), /count must be an integer 1\.\.64/],
      [() => challengeIndices(id, 4 * MiB, nonce, Number.NaN), /count must be an integer 1\.\.64, got NaN/],
      [() => challengeIndices(id, 4 * MiB, nonce, MAX_CHALLENGE_COUNT + 1), /count must be an integer 1\.\.64, got 65/],
      [() => challengeIndices(id, 4 * MiB, nonce, "4" as unknown as number), /count must be an integer/],
      [() => challengeIndices(id, 1, nonce, 2), /count 2 exceeds the 1 chunk of an object of 1 bytes/],
      [() => challengeIndices(id, 5000, nonce, 16), /count 16 exceeds the 5 chunks of an object of 5000 bytes/],
      [() => challengeIndices(id, -1, nonce, 1), /length must be a non-negative integer/],
      [() => challengeIndices(id, 1.5, nonce, 1), /length must be a non-negative integer/],
      [() => challengeIndices(id, 4 * MiB, nonce.slice(2), 1), /nonce must be 64 hex digits, got 62/],
      [() => challengeIndices(id, 4 * MiB, nonce + "0", 1), /nonce must be 64 hex digits, got 65/],
      [() => challengeIndices(id, 4 * MiB, "g" + nonce.slice(1), 1), /nonce is not hex/],
      [() => challengeIndices(id, 4 * MiB, randomBytes(31), 1), /nonce must be 32 bytes, got 31/],
      [() => challengeIndices(id.slice(0, 40), 4 * MiB, nonce, 1), /object id must be 64 hex digits/],
      [
        () => challengeIndices(42 as unknown as string, 4 * MiB, nonce, 1),
        /object id must be a hex string, got a number/,
      ],
    ];
    for (const [call, reason] of bad) {
      let err: unknown;
      try {
        call();
      } catch (e) {
        err = e;
      }
      expect(err, String(reason)).toBeInstanceOf(ChallengeError);
      expect(errorMessage(err)).toMatch(reason);
      expect(errorMessage(err)).not.toContain("\n");
    }
  });
});

// --- round trips ----------------------------------------------------------------------------------------------------

describe("answer -> JSON -> verify", () => {
  const cases: Array<[number, number]> = [];
  for (const length of [0, 1, 1024, 5000, 16 * KiB + 1, 4 * MiB])
    for (const count of [1, 4, 16]) cases.push([length, count]);

  it.each(cases)("an object of %i bytes, K = %i", async (length, count) => {
    const o = object(length);
    const challenge = { objectId: o.idHex, nonce: nonceHex(), count };
    if (count > chunkCount(length)) {
      await expect(answerChallenge(challenge, o, device, Date.now)).rejects.toThrow(ChallengeError);
      return;
    }
    o.reads.length = 0;
    const response = await answerChallenge(challenge, o, device, steppingClock(1_767_225_600_000, 250));
    const received = JSON.parse(JSON.stringify(response)) as unknown;
    const verdict = verifyStorageResponse(received, expectation(o, challenge));
    expect(verdict).toEqual({ ok: true, response: received });
    // Also with the device id the fleet has on record, and with byte-valued expectations.
    expect(verifyStorageResponse(received, { ...expectation(o, challenge), deviceId: device.deviceId }).ok).toBe(true);
    expect(
      verifyStorageResponse(received, {
        ...expectation(o, challenge),
        objectId: o.id,
        nonce: Buffer.from(challenge.nonce, "hex"),
      }).ok,
    ).toBe(true);

    expect(Object.keys(response)).toEqual([
      "v",
      "deviceId",
      "objectId",
      "length",
      "nonce",
      "count",
      "indices",
      "elapsedMs",
      "signedAt",
      "proofs",
      "signature",
    ]);
    expect(response).toMatchObject({
      v: 1,
      deviceId: device.deviceId,
      objectId: o.idHex,
      length,
      nonce: challenge.nonce,
      count,
    });
    // The clock was read when the challenge arrived and when the proofs were done.
    expect(response.elapsedMs).toBe(250);
    expect(response.signedAt).toBe(1_767_225_600_250);
    expect(response.indices).toEqual(challengeIndices(o.id, length, challenge.nonce, count));
    // Each proof is exactly the single-chunk proof of wasm/README.md.
    response.proofs.forEach((p, i) => {
      expect(new Uint8Array(Buffer.from(p, "base64"))).toEqual(makeProofFromData(o.data, response.indices[i]!, 1));
    });

    // Only the challenged groups were read, each once.
    const wanted = new Set(
      response.indices.flatMap((i) => groupsToRead(o.outboard, i, 1).map((g) => `${g.offset}:${g.length}`)),
    );
    const read = o.reads.map(([offset, len]) => `${offset}:${len}`);
    expect(new Set(read)).toEqual(wanted);
    expect(read.length).toBe(wanted.size);
  });

  it("uses the caller's clock only: elapsedMs is the difference, never negative", async () => {
    const o = object(5000);
    const challenge = { objectId: o.idHex, nonce: nonceHex(), count: 2 };
    const times = [1000, 1000.4];
    const r1 = await answerChallenge(challenge, o, device, () => times.shift()!);
    expect([r1.elapsedMs, r1.signedAt]).toEqual([0, 1000]);
    const backwards = [5000, 4000];
    const r2 = await answerChallenge(challenge, o, device, () => backwards.shift()!);
    expect([r2.elapsedMs, r2.signedAt]).toEqual([0, 4000]);
    for (const r of [r1, r2]) expect(verifyStorageResponse(wire(r), expectation(o, challenge)).ok).toBe(true);
    await expect(answerChallenge(challenge, o, device, () => Number.NaN)).rejects.toThrow(/clock returned NaN/);
  });

  it("reads the challenged groups from disk, and fails when the object is shorter than its outboard says", async () => {
    const o = object(64 * KiB);
    const challenge = { objectId: o.idHex, nonce: nonceHex(), count: 8 };
    const short: ProvableObject = { ...o, readAt: async (offset, len) => o.data.slice(offset, offset + len - 1) };
    await expect(answerChallenge(challenge, short, device, Date.now)).rejects.toThrow(/expected/);
  });
});

// --- answering bad challenges ---------------------------------------------------------------------------------------

describe("answerChallenge refuses bad challenges", () => {
  it("with a one-line ChallengeError, reading nothing", async () => {
    const o = object(5000);
    const ok = { objectId: o.idHex, nonce: nonceHex(), count: 2 };
    const other = object(1024);
    const bad: Array<[unknown, RegExp]> = [
      [{ ...ok, nonce: ok.nonce.slice(1) }, /nonce must be 64 hex digits, got 63/],
      [{ ...ok, nonce: "x".repeat(64) }, /nonce is not hex/],
      [{ ...ok, nonce: 7 }, /nonce must be a hex string, got a number/],
      [{ ...ok, objectId: ok.objectId + "00" }, /object id must be 64 hex digits, got 66/],
      [{ ...ok, objectId: undefined }, /object id must be a hex string, got undefined/],
      [{ ...ok, objectId: o.id }, /object id must be a hex string, got bytes/],
      [{ ...ok, count: 0 }, /count must be an integer 1\.\.64, got 0/],
      [{ ...ok, count: 65 }, /count must be an integer 1\.\.64, got 65/],
      [{ ...ok, count: 6 }, /count 6 exceeds the 5 chunks/],
      [{ ...ok, count: "2" }, /count must be an integer/],
      [{ ...ok, objectId: other.idHex }, /challenge is for object [0-9a-f]{64}, not [0-9a-f]{64}/],
      [null, /challenge is not an object/],
      [[], /challenge is not an object/],
    ];
    for (const [challenge, reason] of bad) {
      o.reads.length = 0;
      const err = await answerChallenge(challenge as StorageChallenge, o, device, Date.now).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err, String(reason)).toBeInstanceOf(ChallengeError);
      expect(errorMessage(err)).toMatch(reason);
      expect(errorMessage(err)).not.toContain("\n");
      expect(o.reads).toEqual([]);
    }
    expect(parseChallenge({ ...ok, objectId: ok.objectId.toUpperCase() })).toEqual(ok);
  });

  it("refuses an outboard of another object, and a signer without a proper device id", async () => {
    const o = object(5000);
    const challenge = { objectId: o.idHex, nonce: nonceHex(), count: 1 };
    const wrongOutboard: ProvableObject = { ...o, outboard: object(1024).outboard };
    await expect(answerChallenge(challenge, wrongOutboard, device, Date.now)).rejects.toThrow(
      /does not belong to object/,
    );
    await expect(answerChallenge(challenge, o, { deviceId: "DEVICE", sign: device.sign }, Date.now)).rejects.toThrow(
      /device id must be 32 lowercase hex/,
    );
  });
});

// --- tampering ------------------------------------------------------------------------------------------------------

describe("verifyStorageResponse rejects every tampering", () => {
  let base: Awaited<ReturnType<typeof answered>>;
  let big: Awaited<ReturnType<typeof answered>>;

  beforeAll(async () => {
    base = await answered(16 * KiB + 5000, 4);
    big = await answered(4 * MiB, 4);
  });

  it("accepts the untouched responses", () => {
    expect(verifyStorageResponse(wire(base.response), base.expected).ok).toBe(true);
    expect(verifyStorageResponse(wire(big.response), big.expected).ok).toBe(true);
  });

  it("every flipped signature bit", () => {
    for (const { response, expected } of [base, big]) {
      for (let bit = 0; bit < 512; bit++) {
        expectRejected(
          { ...wire(response), signature: flipBase64Bit(response.signature, bit) },
          expected,
          /signature does not verify/,
        );
      }
    }
  });

  it("another device's key or response", async () => {
    const { response, expected, o, challenge } = base;
    // The right response, checked against another device's key.
    expectRejected(
      wire(response),
      { ...expected, publicKey: otherDevice.publicKey },
      /device id [0-9a-f]{32} does not belong to the public key/,
    );
    // Another device's answer to the same challenge, passed off as this device's.
    const theirs = await answerChallenge(challenge, o, otherDevice, Date.now);
    expectRejected(wire(theirs), expected, /does not belong to the public key/);
    expectRejected({ ...wire(theirs), deviceId: device.deviceId }, expected, /signature does not verify/);
    // This device's fields, another device's signature over them.
    expectRejected(resign(wire(response), otherDevice), expected, /signature does not verify/);
    // The expected device id must match the key (the caller's own data: an exception, not a verdict).
    expect(() => verifyStorageResponse(wire(response), { ...expected, deviceId: otherDevice.deviceId })).toThrow(
      /does not belong to the expected public key/,
    );
  });

  it("changed fields, whether or not the box re-signs them", () => {
    const { response, expected } = base;
    const r = wire(response);
    const other = object(5000);
    // The last column: what a re-signed change gives (null: the change cannot be signed; "accepted": see below).
    const changes: Array<[string, Record<string, unknown>, RegExp, RegExp | null | "accepted"]> = [
      ["nonce", { nonce: nonceHex() }, /answers nonce/, /answers nonce/],
      ["count", { count: 3 }, /count 3, expected 4/, null],
      ["count up", { count: 5 }, /count 5, expected 4/, null],
      ["objectId", { objectId: other.idHex }, /is for object/, /is for object/],
      ["length", { length: (r.length as number) + 1 }, /bytes, expected/, /bytes, expected/],
      ["length down by 64", { length: (r.length as number) - 64 }, /bytes, expected/, /bytes, expected/],
      ["elapsedMs", { elapsedMs: (r.elapsedMs as number) + 1 }, /signature does not verify/, "accepted"],
      ["elapsedMs zero", { elapsedMs: 0 }, /signature does not verify/, "accepted"],
      ["signedAt", { signedAt: (r.signedAt as number) - 1 }, /signature does not verify/, "accepted"],
      [
        "deviceId",
        { deviceId: otherDevice.deviceId },
        /does not belong to the public key/,
        /does not belong to the public key/,
      ],
    ];
    for (const [name, change, unsigned, resigned] of changes) {
      expectRejected({ ...r, ...change }, expected, unsigned);
      if (resigned === null) continue;
      const again = resign({ ...r, ...change });
      // elapsedMs and signedAt are the box's own claims: signed, so a third party cannot alter them, but the
      // box may say what it likes (the fleet judges them).
      if (resigned === "accepted") expect(verifyStorageResponse(again, expected).ok, name).toBe(true);
      else expectRejected(again, expected, resigned);
    }
  });

  it("changed indices, whether or not the box re-signs them", () => {
    for (const { response, expected, o } of [base, big]) {
      const r = wire(response);
      const indices = r.indices as number[];
      const chunks = chunkCount(o.length);
      const unused = Array.from({ length: chunks }, (_, i) => i).find((i) => !indices.includes(i))!;
      const variants: number[][] = [
        [unused, ...indices.slice(1)].sort((a, b) => a - b),
        [...indices].reverse(),
        [indices[0]!, indices[0]!, ...indices.slice(2)],
        indices.map((i) => i + 1),
        [...indices.slice(0, 3), 2 ** 40],
      ];
      for (const changed of variants) {
        expectRejected({ ...r, indices: changed }, expected, /index \d is .*but the nonce gives chunk/);
        expectRejected(resign({ ...r, indices: changed }), expected, /index \d is .*but the nonce gives chunk/);
      }
      // Proofs of other chunks, honestly made and signed, under the true indices: still not the challenged chunks.
      const proofs = (r.indices as number[]).map((_, k) =>
        Buffer.from(makeProofFromData(o.data, k === 0 ? unused : indices[k]!, 1)).toString("base64"),
      );
      expectRejected(
        resign({ ...r, proofs }),
        expected,
        /proof 0 \(chunk \d+\) (does not verify|is not base64 of the \d+ bytes)/,
      );
    }
  });

  it("swapped, flipped, extra and missing proofs", () => {
    for (const { response, expected } of [base, big]) {
      const r = wire(response);
      const proofs = r.proofs as string[];
      const swapped = [proofs[1]!, proofs[0]!, ...proofs.slice(2)];
      expectRejected(
        { ...r, proofs: swapped },
        expected,
        /proof 0 .*not base64 of the \d+ bytes|signature does not verify/,
      );
      expectRejected(
        resign({ ...r, proofs: swapped }),
        expected,
        /proof [01] \(chunk \d+\) (does not verify|is not base64 of the \d+ bytes)/,
      );
      expectRejected({ ...r, proofs: [...proofs, proofs[0]] }, expected, /has 5 proofs, expected 4/);
      expectRejected({ ...r, proofs: proofs.slice(0, 3) }, expected, /has 3 proofs, expected 4/);
      expectRejected({ ...r, proofs: [] }, expected, /has 0 proofs, expected 4/);
      expectRejected(
        resign({ ...r, proofs: [...proofs.slice(0, 3), proofs[3]!.slice(0, -4)] }),
        expected,
        /proof 3 .*not base64/,
      );
      expectRejected({ ...r, proofs: [...proofs.slice(0, 3), proofs[3] + "AAAA"] }, expected, /proof 3 .*not base64/);
      expectRejected(
        { ...r, proofs: [...proofs.slice(0, 3), proofs[3]!.replace(/.$/, "!")] },
        expected,
        /proof 3 .*not base64/,
      );
      // Flipped bits: a third party breaks the signature; a box signing a wrong proof fails the proof check.
      for (let k = 0; k < 4; k++) {
        const bytes = Buffer.from(proofs[k]!, "base64").length * 8;
        for (const bit of [0, 1, 255, 256, 511, 512, bytes >> 1, bytes - 64 * 8 - 1, bytes - 9, bytes - 1]) {
          if (bit < 0 || bit >= bytes) continue;
          const flipped = proofs.map((p, j) => (j === k ? flipBase64Bit(p, bit) : p));
          expectRejected({ ...r, proofs: flipped }, expected, /signature does not verify/);
          expectRejected(
            resign({ ...r, proofs: flipped }),
            expected,
            new RegExp(`proof ${k} \\(chunk \\d+\\) does not verify against the object`),
          );
        }
      }
    }
  });

  it("a bit of every byte of the first and last proof, when the box signs the wrong bytes", () => {
    const { response, expected } = base;
    const r = wire(response);
    const proofs = r.proofs as string[];
    for (const k of [0, proofs.length - 1]) {
      const bytes = Buffer.from(proofs[k]!, "base64").length;
      for (let byte = 0; byte < bytes; byte++) {
        const bit = 8 * byte + (byte % 8);
        const flipped = proofs.map((p, j) => (j === k ? flipBase64Bit(p, bit) : p));
        const verdict = verifyStorageResponse(resign({ ...r, proofs: flipped }), expected);
        expect(verdict.ok).toBe(false);
      }
    }
  });

  it("a replay of a proof for another nonce", async () => {
    const { o, expected } = base;
    const old = await answerChallenge({ objectId: o.idHex, nonce: nonceHex(), count: 4 }, o, device, Date.now);
    expectRejected(wire(old), expected, /answers nonce/);
    expectRejected({ ...wire(old), nonce: expected.nonce }, expected, /index \d is|signature does not verify/);
  });
});

// --- garbage --------------------------------------------------------------------------------------------------------

describe("verifyStorageResponse never throws on garbage", () => {
  let base: Awaited<ReturnType<typeof answered>>;
  beforeAll(async () => {
    base = await answered(5000, 4);
  });

  it("non-objects", () => {
    for (const garbage of [
      null,
      undefined,
      0,
      1,
      -1,
      Number.NaN,
      "",
      "response",
      "{}",
      true,
      false,
      [],
      [1, 2, 3],
      10n,
      Symbol("x"),
      () => 1,
      new Uint8Array(10),
    ]) {
      expectRejected(garbage, base.expected, /response/);
    }
    expectRejected({}, base.expected, /response has no 'v'/);
  });

  it("missing fields, unknown fields", () => {
    const r = wire(base.response);
    for (const key of Object.keys(r)) {
      const { [key]: _, ...rest } = r;
      expectRejected(rest, base.expected, new RegExp(`response has no '${key}'`));
      expectRejected({ ...r, [key]: undefined }, base.expected, new RegExp(`response has no '${key}'`));
    }
    expectRejected({ ...r, extra: 1 }, base.expected, /unknown field "extra"/);
    expectRejected(
      JSON.parse(JSON.stringify(r).replace(/^\{/, '{"__proto__":{"v":1},')),
      base.expected,
      /unknown field "__proto__"/,
    );
    expectRejected({ ...r, v: 2 }, base.expected, /version 2 is not supported/);
    expectRejected({ ...r, v: "1" }, base.expected, /version "1" is not supported/);
  });

  it("wrong types in every field", () => {
    const r = wire(base.response);
    const values: unknown[] = [
      null,
      true,
      0,
      -1,
      1.5,
      2 ** 53,
      Number.NaN,
      Infinity,
      "",
      "x",
      "1",
      [],
      [1],
      {},
      { length: 4 },
      "0".repeat(64),
      "A".repeat(88),
    ];
    for (const key of Object.keys(r)) {
      for (const value of values) {
        if (JSON.stringify(value) === JSON.stringify(r[key])) continue;
        const verdict = verifyStorageResponse({ ...r, [key]: value }, base.expected);
        expect(verdict.ok, `${key} = ${String(value)}`).toBe(false);
        if (!verdict.ok) expect(verdict.reason).not.toContain("\n");
      }
    }
    for (const key of ["indices", "proofs"]) {
      for (const inner of [null, "x", 1.5, -1, [], {}, true, 2 ** 60]) {
        const verdict = verifyStorageResponse(
          { ...r, [key]: [inner, ...(r[key] as unknown[]).slice(1)] },
          base.expected,
        );
        expect(verdict.ok, `${key}[0] = ${String(inner)}`).toBe(false);
      }
    }
    expectRejected(
      { ...r, deviceId: (r.deviceId as string).toUpperCase() },
      base.expected,
      /'deviceId' must be 32 lowercase hex digits/,
    );
    expectRejected(
      { ...r, nonce: (r.nonce as string).toUpperCase() },
      base.expected,
      /'nonce' must be 64 lowercase hex digits/,
    );
  });

  it("huge arrays and strings, cheaply", () => {
    const r = wire(base.response);
    const started = performance.now();
    const huge = new Array(5_000_000).fill(0);
    const long = "A".repeat(50_000_000);
    expectRejected({ ...r, indices: huge }, base.expected, /has 5000000 indices, expected 4/);
    expectRejected({ ...r, proofs: huge }, base.expected, /has 5000000 proofs, expected 4/);
    expectRejected({ ...r, proofs: [long, long, long, long] }, base.expected, /proof 0 .*not base64/);
    expectRejected({ ...r, signature: long }, base.expected, /'signature' is not base64 of 64 bytes/);
    for (const key of ["deviceId", "objectId", "nonce"])
      expectRejected({ ...r, [key]: long }, base.expected, new RegExp(`'${key}' must be`));
    expectRejected({ ...r, extra: huge }, base.expected, /unknown field/);
    expect(performance.now() - started).toBeLessThan(2000);
  });

  it("hostile objects: throwing getters and proxies give a verdict, not an exception", () => {
    const r = wire(base.response);
    const getter = Object.defineProperty({ ...r }, "proofs", {
      enumerable: true,
      get: () => {
        throw new Error("boom");
      },
    });
    expectRejected(getter, base.expected, /response could not be read: boom/);
    const proxy = new Proxy(r, {
      ownKeys: () => {
        throw new Error("no keys");
      },
    });
    expectRejected(proxy, base.expected, /could not be read: no keys/);
    const sneaky = {
      ...r,
      indices: new Proxy(r.indices as number[], { get: (t, k) => (k === "length" ? 4 : Reflect.get(t, k)) }),
    };
    expect(verifyStorageResponse(sneaky, base.expected).ok).toBe(true);
  });

  it("throws (the caller's bug, not the network's) only on a bad expectation", () => {
    const r = wire(base.response);
    expect(() => verifyStorageResponse(r, { ...base.expected, publicKey: new Uint8Array(31) })).toThrow(
      /expected public key must be 32 raw bytes/,
    );
    expect(() => verifyStorageResponse(r, { ...base.expected, nonce: "zz" })).toThrow(ChallengeError);
    expect(() => verifyStorageResponse(r, { ...base.expected, count: 6 })).toThrow(/exceeds the 5 chunks/);
  });
});

// --- the signed message ---------------------------------------------------------------------------------------------

describe("the signed message", () => {
  it("is the byte layout of agent/protocol/README.md, rebuilt here independently", async () => {
    const { response, o } = await answered(16 * KiB + 5000, 3);
    const proofs = response.proofs.map((p) => Buffer.from(p, "base64"));
    const u64 = (n: number): Buffer => {
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(BigInt(n));
      return b;
    };
    const u32 = (n: number): Buffer => {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(n);
      return b;
    };
    const digest = nobleBlake3(Buffer.concat(proofs.flatMap((p) => [u32(p.length), p])));
    const expected = Buffer.concat([
      Buffer.from("sharenode storage-proof v1\n", "ascii"),
      Buffer.from(response.deviceId, "hex"),
      Buffer.from(o.idHex, "hex"),
      u64(o.length),
      Buffer.from(response.nonce, "hex"),
      u32(3),
      ...response.indices.map(u64),
      Buffer.from(digest),
      u64(response.elapsedMs),
      u64(response.signedAt),
    ]);
    const message = storageProofMessage({ ...response, proofs: proofs.map((p) => new Uint8Array(p)) });
    expect(Buffer.from(message).equals(expected)).toBe(true);
    expect(message.length).toBe(27 + 16 + 32 + 8 + 32 + 4 + 8 * 3 + 32 + 8 + 8);
    const { verify, createPublicKey } = await import("node:crypto");
    const key = createPublicKey({
      key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(device.publicKey).toString("base64url") },
      format: "jwk",
    });
    expect(verify(null, expected, key, Buffer.from(response.signature, "base64"))).toBe(true);
    expect(deviceIdOf(device.publicKey)).toBe(response.deviceId);
  });
});
