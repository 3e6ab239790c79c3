// The store's side of storage proofs: answering the fleet's challenge (the signed `store.challenge` command) from
// the objects on the disk, and the record of how the answers went (counters for telemetry, the last few for the
// console's `proofs`). What a proof is (the chunks chosen, the response, the signature) is
// agent/protocol/storage-proof.ts; this file picks the object, gives each failure its code, and keeps the ledger.
import {
  answerChallenge,
  parseChallenge,
  type ProvableObject,
  type StorageProofResponse,
  type StorageProofSigner,
} from "../protocol/storage-proof.js";
import { errnoCode, errorLine } from "../util/errors.js";

/** One storage-proof challenge the daemon answered (or failed to). */
export interface ProofRecord {
  /** Epoch ms when it was answered. */
  ts: number;
  objectId: string;
  ok: boolean;
  /** The error code when it failed: not-found, io, challenge-failed, ... */
  code?: string;
  message?: string;
}

/** The ledger's counters and its last records: what `{"op":"proofs"}` on the control socket answers. */
export interface ProofsSnapshot {
  passed: number;
  failed: number;
  /** The last few challenges, oldest first. */
  recent: ProofRecord[];
}

/** The proof counters since the daemon started, and the last few challenges. */
export class ProofLedger {
  private passed = 0;
  private failed = 0;
  private readonly recent: ProofRecord[] = [];

  constructor(private readonly keep = 20) {}

  record(entry: ProofRecord): void {
    if (entry.ok) this.passed++;
    else this.failed++;
    this.recent.push(entry);
    if (this.recent.length > this.keep) this.recent.shift();
  }

  snapshot(): ProofsSnapshot {
    return { passed: this.passed, failed: this.failed, recent: this.recent.map((r) => ({ ...r })) };
  }
}

/** A challenge not answered. The command gate (agent/link/command-gate.ts) replies with its code and message. */
export class ProofRefused extends Error {
  override readonly name = "ProofRefused";
  constructor(
    /** store-unavailable, bad-args, challenge-failed, or the store's own code (not-found, io, ...). */
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** What answering needs of the store (ObjectStore.openForProof). */
export interface ProofSource {
  openForProof(objectId: string): Promise<ProvableObject & { close(): Promise<void> }>;
}

export interface ChallengeResponderOptions {
  /** The running store; undefined while there is none. */
  store(): ProofSource | undefined;
  /** Why there is no store (the refusal's message). */
  storeRefusal(): string | undefined;
  /** The device key. */
  signer: StorageProofSigner;
  /** Epoch ms: the ledger's times, and the response's elapsedMs and signedAt. */
  now: () => number;
  ledger: ProofLedger;
  /** Each challenge answered or failed on an object (the work ledger's proof records; ms: the response's elapsedMs). */
  onAnswered?(outcome: { objectId: string; nonce: string; ok: boolean; ms: number }): void;
}

/** Answers `store.challenge` commands and records each answer in the ledger. */
export class ChallengeResponder {
  constructor(private readonly options: ChallengeResponderOptions) {}

  /**
   * Answers a challenge as the command's arguments carry it. Throws ProofRefused: `store-unavailable` and
   * `bad-args` (not recorded: no object was challenged), the store's code when the object cannot be opened
   * (`not-found`, `io`, ...; recorded), `challenge-failed` when proving fails (recorded).
   */
  async answer(args: unknown): Promise<StorageProofResponse> {
    const { ledger, now } = this.options;
    const store = this.options.store();
    if (!store) throw new ProofRefused("store-unavailable", this.options.storeRefusal() ?? "the store is not running");
    let challenge;
    try {
      challenge = parseChallenge(args);
    } catch (err) {
      throw new ProofRefused("bad-args", errorLine(err));
    }
    // The time taken is the signed response's own elapsedMs (0 for a failure, which has no response).
    const answered = (ok: boolean, ms: number) =>
      this.options.onAnswered?.({ objectId: challenge.objectId, nonce: challenge.nonce, ok, ms });
    const failed = (code: string, message: string) => {
      ledger.record({ ts: now(), objectId: challenge.objectId, ok: false, code, message });
      answered(false, 0);
      return new ProofRefused(code, message);
    };
    let object;
    try {
      object = await store.openForProof(challenge.objectId);
    } catch (err) {
      throw failed(errnoCode(err) ?? "io", errorLine(err));
    }
    try {
      const response = await answerChallenge(challenge, object, this.options.signer, now);
      ledger.record({ ts: now(), objectId: challenge.objectId, ok: true });
      answered(true, response.elapsedMs);
      return response;
    } catch (err) {
      throw failed("challenge-failed", errorLine(err));
    } finally {
      await object.close();
    }
  }
}
