// The store's side of storage proofs (agent/store/proofs.ts): ChallengeResponder answering `store.challenge` from a
// real ObjectStore on a temp directory with a real device key, each refusal's code, and what the ProofLedger
// records (failures about an object count; a challenge that names none, or no store, does not).
import { randomBytes } from "node:crypto";
import { promises as fsp } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { loadOrCreateDeviceIdentity, type DeviceIdentity } from "../agent/identity/device-key";
import { verifyStorageResponse } from "../agent/protocol/storage-proof";
import { ObjectStore } from "../agent/store/object-store";
import { ChallengeResponder, ProofLedger, ProofRefused } from "../agent/store/proofs";

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

const NOW = Date.UTC(2026, 11, 5, 9, 0, 0);
const nonce = "5a".repeat(32);

async function setUp(options: { withStore?: boolean } = {}) {
  const root = await fsp.mkdtemp(join(tmpdir(), "sn-proofs-"));
  cleanups.push(() => fsp.rm(root, { recursive: true, force: true }));
  const identity: DeviceIdentity = await loadOrCreateDeviceIdentity(join(root, "state"));
  const dataDir = join(root, "data");
  await fsp.mkdir(dataDir);
  const store = new ObjectStore({ dataDir, quota: { bytes: 64 * 2 ** 20 }, reserveBytes: 0 }, { now: () => NOW });
  await store.start();
  cleanups.push(() => store.stop());
  const data = new Uint8Array(randomBytes(50_000));
  const { object } = await store.ingest(
    (async function* () {
      yield data;
    })(),
  );
  const ledger = new ProofLedger();
  const answered: Array<{ objectId: string; nonce: string; ok: boolean; ms: number }> = [];
  let clock = NOW;
  const responder = new ChallengeResponder({
    store: () => (options.withStore === false ? undefined : store),
    storeRefusal: () => "data directory /mnt/usb/sharenode has no disk marker",
    signer: identity,
    now: () => (clock += 5),
    ledger,
    onAnswered: (outcome) => answered.push(outcome),
  });
  return { identity, object, data, ledger, responder, answered };
}

describe("ChallengeResponder", () => {
  it("answers a challenge with a signed response that verifies against the device key, and records it", async () => {
    const { identity, object, data, ledger, responder, answered } = await setUp();
    const response = await responder.answer({ objectId: object.id, nonce, count: 4 });
    // The work ledger's proof record: the nonce, and the signed response's own time.
    expect(answered).toEqual([{ objectId: object.id, nonce, ok: true, ms: 5 }]);
    const verdict = verifyStorageResponse(response, {
      objectId: object.id,
      length: data.length,
      nonce,
      count: 4,
      publicKey: identity.publicKey,
      deviceId: identity.deviceId,
    });
    expect(verdict).toEqual({ ok: true, response });
    expect(response.elapsedMs).toBe(5);
    expect(ledger.snapshot()).toEqual({
      passed: 1,
      failed: 0,
      recent: [{ ts: NOW + 15, objectId: object.id, ok: true }],
    });
  });

  it("refuses without a store (store-unavailable, with the store's refusal) and malformed arguments (bad-args); records neither", async () => {
    const off = await setUp({ withStore: false });
    await expect(off.responder.answer({ objectId: off.object.id, nonce, count: 4 })).rejects.toMatchObject({
      name: "ProofRefused",
      code: "store-unavailable",
      message: "data directory /mnt/usb/sharenode has no disk marker",
    });
    const on = await setUp();
    const refused = on.responder.answer({ objectId: "zz", nonce, count: 4 });
    await expect(refused).rejects.toBeInstanceOf(ProofRefused);
    await expect(refused).rejects.toMatchObject({ code: "bad-args", message: expect.stringMatching(/object id/) });
    for (const { ledger } of [off, on]) expect(ledger.snapshot()).toEqual({ passed: 0, failed: 0, recent: [] });
  });

  it("an object the store does not hold is the store's not-found; a challenge the object cannot meet is challenge-failed; both recorded", async () => {
    const { object, ledger, responder } = await setUp();
    const missing = "ab".repeat(32);
    await expect(responder.answer({ objectId: missing, nonce, count: 1 })).rejects.toMatchObject({ code: "not-found" });
    // 50,000 bytes are 49 chunks: 64 distinct chunks cannot be proven.
    await expect(responder.answer({ objectId: object.id, nonce, count: 64 })).rejects.toMatchObject({
      code: "challenge-failed",
      message: expect.stringMatching(/count/),
    });
    const snapshot = ledger.snapshot();
    expect(snapshot).toMatchObject({ passed: 0, failed: 2 });
    expect(snapshot.recent.map((r) => [r.objectId, r.ok, r.code])).toEqual([
      [missing, false, "not-found"],
      [object.id, false, "challenge-failed"],
    ]);
  });
});
