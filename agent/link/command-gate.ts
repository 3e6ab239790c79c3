// The command gate: everything that arrives on `sharenode/v1/{id}/cmd/{name}` passes here before any feature sees
// it. It verifies the envelope (agent/protocol/envelope.ts), refuses replays with a durable record of the nonces it
// has seen, dispatches to the handler the composition root registered for the command, and answers with a reply
// signed by the device key: every signed command, and other payloads within a rate limit (below). Nothing a
// payload contains can make it throw.
//
// Anyone who can publish on the command topic can send garbage, so what garbage costs is bounded (flood-guard.ts):
// refusals of unauthenticated messages (the fleet key's signature did not verify, or the gate never got as far as
// checking it) get error replies at most ERROR_REPLY_BURST at once, then ERROR_REPLIES_PER_SECOND; past that no reply
// is signed or sent. Every command whose signature verified gets its reply, refusals included (replayed, expired,
// too-far-ahead, wrong-device, wrong-command, a malformed body, unknown-command, the handlers' errors): the fleet
// signed it, and someone is waiting for the answer. Refusals are logged through a RefusalLog: one summary line a
// minute, and the first refusal of each code at once.
//
// At most once per nonce: a nonce is written to the nonce log (and fsynced) before its handler runs, so a command
// replayed at any later time, across restarts and power cuts, is refused. A command whose nonce write failed is
// not run. Idempotence is the handlers' business; the gate never runs a nonce twice, even if the first run failed.
//
// The nonce log is a RecordLog of two record types (integers little-endian):
//   0x01 | nonce (16 bytes) | exp (u64)   a nonce seen, kept until exp
//   0x02 | floor (u64)                    the nonces of commands expiring at or before `floor` were forgotten
// Compaction rewrites the log as one floor record and the live nonces. The floor is the largest exp ever dropped,
// and a command with exp <= floor is refused as expired whatever the clock says: a box whose clock steps back
// (no RTC, NTP correcting it) cannot be made to run a command whose nonce it has already forgotten. The floor is
// only ever raised to an exp the fleet signed, so a clock that jumps far ahead cannot push it past real commands.
import { RecordLog } from "../durable/record-log.js";
import {
  ERROR_CODE,
  errorLine,
  MAX_AHEAD_MS,
  openCommand,
  signReply,
  type ReplyError,
  type Signer,
} from "../protocol/envelope.js";
import { isDeviceId, parseTopic } from "../protocol/topics.js";
import { fromHex, toHex } from "../util/hex.js";
import { PUBLIC_KEY_BYTES, publicKeyFromHex } from "../identity/device-key.js";
import { ERROR_REPLIES_PER_SECOND, ERROR_REPLY_BURST, RefusalLog, TokenBucket } from "./flood-guard.js";

export interface CommandContext {
  deviceId: string;
  cmd: string;
  nonce: string;
  /** The command's expiry, epoch milliseconds: work past it is work nobody waits for. */
  exp: number;
  /** The gate's clock when the command arrived. */
  receivedAt: number;
}

/**
 * Runs one command. Validates its own args. Throwing an error with a string `code` (letters, digits, . _ -) makes
 * the reply an error with that code and the error's message; any other throw becomes code "internal".
 */
export type CommandHandler = (args: Record<string, unknown>, ctx: CommandContext) => Promise<unknown>;

/**
 * A handler's refusal with its own reply code ("bad-args", "not-found"). Any thrown object with a string `code`
 * of the reply-code form is answered with it (so a store error that carries one, such as ProofRefused, passes
 * through as it is); this class is for handlers that have no error type of their own.
 */
export class CommandRefused extends Error {
  override readonly name = "CommandRefused";
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface CommandGateOptions {
  deviceId: string;
  /** The fleet key from the device's config: raw 32 bytes or 64 hex digits. */
  fleetPublicKey: Uint8Array | string;
  /** The nonce log, created 0600 on first start. */
  nonceLogPath: string;
  /** Epoch milliseconds (Date.now in production). */
  clock: () => number;
  /** The device identity: signs the replies. */
  signer: Signer & { readonly deviceId?: string };
  /** How far ahead `exp` may be (default 10 minutes): how long a nonce is kept at most. */
  maxAheadMs?: number;
  /** Where refusals are logged (summarized, RefusalLog); absent: not logged. */
  log?: { info(message: string): void };
  /** Error replies to unauthenticated messages: at most `burst` at once, then `perSecond` (default 10, then 1/s). */
  errorReplies?: { burst: number; perSecond: number };
  /** How often the refusal summary is written (default 60 s). */
  refusalSummaryMs?: number;
}

export interface HandledCommand {
  /**
   * The signed reply, for the command's response topic (or `sharenode/v1/{id}/reply`); null when the message was
   * unauthenticated and its error reply fell to the rate limit: publish nothing.
   */
  replyPayload: Uint8Array | null;
  ok: boolean;
  /** The fleet key's signature verified (ok replies and the refusals of signed commands). */
  authenticated: boolean;
  /** The error code when !ok. */
  code: string | null;
  cmd: string | null;
  nonce: string | null;
}

export class CommandGateError extends Error {
  override name = "CommandGateError";
}

const NONCE_RECORD = 0x01;
const FLOOR_RECORD = 0x02;
const NONCE_RECORD_BYTES = 1 + 16 + 8;
const FLOOR_RECORD_BYTES = 1 + 8;
// Compaction runs when the log holds this many more records than twice what is live.
const COMPACT_SLACK = 64;

export class CommandGate {
  private readonly deviceId: string;
  private readonly fleetPublicKey: Uint8Array;
  private readonly nonceLogPath: string;
  private readonly clock: () => number;
  private readonly signer: Signer;
  private readonly maxAheadMs: number;
  private nonces: NonceStore | null = null;
  private starting: Promise<void> | null = null;
  private readonly errorReplies: TokenBucket;
  private readonly refusals: RefusalLog | undefined;

  constructor(options: CommandGateOptions) {
    if (!isDeviceId(options.deviceId))
      throw new RangeError(`device id must be 32 lowercase hex digits, got ${JSON.stringify(options.deviceId)}`);
    if (options.signer.deviceId !== undefined && options.signer.deviceId !== options.deviceId) {
      throw new RangeError(`the signer is device ${options.signer.deviceId}, not ${options.deviceId}`);
    }
    const key = options.fleetPublicKey;
    this.fleetPublicKey = typeof key === "string" ? publicKeyFromHex(key) : key.slice();
    if (this.fleetPublicKey.length !== PUBLIC_KEY_BYTES)
      throw new RangeError(`fleet public key must be ${PUBLIC_KEY_BYTES} bytes, got ${this.fleetPublicKey.length}`);
    this.deviceId = options.deviceId;
    this.nonceLogPath = options.nonceLogPath;
    this.clock = options.clock;
    this.signer = options.signer;
    this.maxAheadMs = options.maxAheadMs ?? MAX_AHEAD_MS;
    const limit = options.errorReplies ?? { burst: ERROR_REPLY_BURST, perSecond: ERROR_REPLIES_PER_SECOND };
    this.errorReplies = new TokenBucket({ ...limit, clock: options.clock });
    const log = options.log;
    const intervalMs = options.refusalSummaryMs;
    this.refusals = log ? new RefusalLog({ log, clock: options.clock, intervalMs }) : undefined;
  }

  /** Opens the nonce log (creating it 0600) and loads the nonces that have not expired. */
  start(): Promise<void> {
    if (this.nonces !== null) return Promise.resolve();
    this.refusals?.start();
    this.starting ??= (async () => {
      try {
        this.nonces = await NonceStore.open(this.nonceLogPath, this.now());
      } finally {
        this.starting = null;
      }
    })();
    return this.starting;
  }

  /**
   * Closes the nonce log once the writes already issued are durable, and logs the refusals not yet summarized.
   * Commands arriving later get "unavailable".
   */
  async stop(): Promise<void> {
    this.refusals?.stop();
    await this.starting?.catch(() => undefined);
    const nonces = this.nonces;
    this.nonces = null;
    await nonces?.close();
  }

  /**
   * Verifies, dispatches and answers one command. Resolves with a signed reply for every payload but the
   * unauthenticated ones past the rate limit (replyPayload null); rejects only when the device key cannot sign.
   * `handlers` is looked up by own property only (no "constructor" or "__proto__" from the prototype).
   */
  async handle(
    topic: string,
    payload: Uint8Array,
    handlers: Readonly<Record<string, CommandHandler>>,
  ): Promise<HandledCommand> {
    const parsed = parseTopic(topic);
    // Until openCommand has verified the fleet's signature, a refusal is of an unauthenticated message.
    if (parsed?.kind !== "cmd") {
      return this.refuseUnauthenticated(null, "malformed", `topic ${describeTopic(topic)} is not a command topic`);
    }
    if (parsed.deviceId !== this.deviceId) {
      return this.refuseUnauthenticated(null, "wrong-device", `topic ${describeTopic(topic)} is another device's`);
    }
    const topicCmd = parsed.name!;
    const nonces = this.nonces;
    if (nonces === null) return this.refuseUnauthenticated(topicCmd, "unavailable", "the command gate is not running");
    let now: number;
    try {
      now = this.now();
    } catch (err) {
      return this.refuseUnauthenticated(topicCmd, "internal", errorLine(err));
    }
    const opened = openCommand(payload, {
      fleetPublicKey: this.fleetPublicKey,
      deviceId: this.deviceId,
      topicCmd,
      now,
      maxAheadMs: this.maxAheadMs,
    });
    if (!opened.ok) {
      if (!opened.signed) return this.refuseUnauthenticated(topicCmd, opened.code, opened.reason);
      return this.refuse(topicCmd, opened.nonce, opened.code, opened.reason);
    }
    const { cmd, args, nonce, exp } = opened.command;

    // From the checks to the nonce's insertion nothing awaits, so two deliveries of one command cannot both pass.
    nonces.forgetExpired(now);
    if (exp <= nonces.floor) {
      return this.refuse(
        cmd,
        nonce,
        "expired",
        `command expiring at ${exp} is at or before the nonce log's floor ${nonces.floor} (the clock went back?)`,
      );
    }
    if (nonces.has(nonce)) return this.refuse(cmd, nonce, "replayed", `nonce ${nonce} was already used`);
    try {
      await nonces.add(nonce, exp);
    } catch (err) {
      return this.refuse(cmd, nonce, "unavailable", `nonce log: ${errorLine(err)}`);
    }
    if (!Object.hasOwn(handlers, cmd) || typeof handlers[cmd] !== "function") {
      return this.refuse(cmd, nonce, "unknown-command", `this device has no command ${JSON.stringify(cmd)}`);
    }

    let result: unknown;
    try {
      const handler = handlers[cmd]!;
      result = await handler(args, { deviceId: this.deviceId, cmd, nonce, exp, receivedAt: now });
    } catch (err) {
      const error = handlerError(err);
      return this.refuse(cmd, nonce, error.code, error.message);
    }
    let replyPayload: Uint8Array;
    try {
      replyPayload = signReply({ cmd, deviceId: this.deviceId, nonce, ok: true, result }, this.signer);
    } catch (err) {
      // signReply throws a RangeError for a result too large to send, a TypeError for one JSON cannot carry.
      if (err instanceof RangeError) return this.refuse(cmd, nonce, "result-too-large", errorLine(err));
      return this.refuse(cmd, nonce, "internal", `result could not be encoded: ${errorLine(err)}`);
    }
    return { replyPayload, ok: true, authenticated: true, code: null, cmd, nonce };
  }

  /** The refusal of a command the fleet signed: always answered. */
  private refuse(cmd: string | null, nonce: string | null, code: string, message: string): HandledCommand {
    const replyPayload = signReply(
      { cmd, deviceId: this.deviceId, nonce, ok: false, error: { code, message } },
      this.signer,
    );
    this.refusals?.record(code, () => refusalLine(cmd, code, message), true);
    return { replyPayload, ok: false, authenticated: true, code, cmd, nonce };
  }

  /**
   * The refusal of a message nobody vouches for: answered (with "nonce":null, so nobody can attach an error to a
   * real command's nonce) while the rate limit allows; past it, nothing is signed or sent.
   */
  private refuseUnauthenticated(cmd: string | null, code: string, message: string): HandledCommand {
    const answered = this.errorReplies.take();
    const reply = { cmd, deviceId: this.deviceId, nonce: null, ok: false as const, error: { code, message } };
    const replyPayload = answered ? signReply(reply, this.signer) : null;
    this.refusals?.record(code, () => refusalLine(cmd, code, message), answered);
    return { replyPayload, ok: false, authenticated: false, code, cmd, nonce: null };
  }

  private now(): number {
    const t = this.clock();
    if (typeof t !== "number" || !Number.isFinite(t))
      throw new CommandGateError(`clock returned ${String(t)}, expected epoch milliseconds`);
    return t;
  }
}

/** The reply error for a handler's throw: its own code when it has a valid one, else "internal". */
function handlerError(err: unknown): ReplyError {
  let code: unknown;
  try {
    code = typeof err === "object" && err !== null ? (err as { code?: unknown }).code : undefined;
  } catch {
    code = undefined;
  }
  if (typeof code === "string" && ERROR_CODE.test(code)) return { code, message: errorLine(err) };
  return { code: "internal", message: errorLine(err) };
}

function refusalLine(cmd: string | null, code: string, message: string): string {
  return `${cmd ?? "?"} refused: ${code}: ${message} (further ${code} refusals go into the summary)`;
}

function describeTopic(topic: unknown): string {
  if (typeof topic !== "string") return `(${typeof topic})`;
  return JSON.stringify(topic.length > 120 ? `${topic.slice(0, 117)}...` : topic);
}

/** The seen nonces, in memory and in the nonce log. */
class NonceStore {
  floor: number;
  private readonly seen: Map<string, number>;
  private readonly log: RecordLog;
  private compaction: Promise<void> | null = null;

  private constructor(log: RecordLog, floor: number, seen: Map<string, number>) {
    this.log = log;
    this.floor = floor;
    this.seen = seen;
  }

  static async open(path: string, now: number): Promise<NonceStore> {
    const { log, records } = await RecordLog.open(path, { mode: 0o600 });
    // A torn tail (open() drops it) can only be a nonce whose append never resolved: its command never ran.
    let floor = 0;
    const seen = new Map<string, number>();
    try {
      records.forEach((record, i) => {
        const view = new DataView(record.buffer, record.byteOffset, record.byteLength);
        if (record.length === NONCE_RECORD_BYTES && record[0] === NONCE_RECORD) {
          const nonce = toHex(record.subarray(1, 17));
          seen.set(nonce, Math.max(seen.get(nonce) ?? 0, readU64(view, 17)));
        } else if (record.length === FLOOR_RECORD_BYTES && record[0] === FLOOR_RECORD) {
          floor = Math.max(floor, readU64(view, 1));
        } else {
          // Dropping a record we cannot read could forget a nonce: refuse instead.
          throw new CommandGateError(
            `nonce log ${path}: record ${i} (${record.length} bytes, type ${record[0] ?? "none"}) is not a nonce log record`,
          );
        }
      });
    } catch (err) {
      await log.close();
      throw err;
    }
    const store = new NonceStore(log, floor, seen);
    store.forgetExpired(now);
    if (log.count > seen.size + 1) store.compact();
    return store;
  }

  has(nonce: string): boolean {
    return this.seen.has(nonce);
  }

  /** Inserts the nonce at once (so a second delivery is refused even before the write ends); resolves when durable. */
  add(nonce: string, exp: number): Promise<void> {
    this.seen.set(nonce, exp);
    const promise = this.log.append(nonceRecord(nonce, exp));
    if (this.log.count > 2 * (this.seen.size + 1) + COMPACT_SLACK) this.compact();
    return promise;
  }

  /** Drops nonces whose commands have expired, raising the floor to their exp. */
  forgetExpired(now: number): void {
    for (const [nonce, exp] of this.seen) {
      if (exp > now) continue;
      this.seen.delete(nonce);
      if (exp > this.floor) this.floor = exp;
    }
  }

  async close(): Promise<void> {
    await this.compaction;
    await this.log.close();
  }

  /**
   * Rewrites the log as the floor and the live nonces, in the background. RecordLog applies operations in call
   * order, and every nonce appended so far is in `seen`, so nothing is lost. A failed rewrite before its rename
   * leaves the log as it was; after it, the log refuses appends and commands get "unavailable" until a restart.
   */
  private compact(): void {
    if (this.compaction !== null) return;
    const records = [floorRecord(this.floor)];
    for (const [nonce, exp] of this.seen) records.push(nonceRecord(nonce, exp));
    this.compaction = this.log
      .rewrite(records)
      .catch(() => undefined)
      .finally(() => {
        this.compaction = null;
      });
  }
}

function nonceRecord(nonce: string, exp: number): Uint8Array {
  const record = new Uint8Array(NONCE_RECORD_BYTES);
  record[0] = NONCE_RECORD;
  record.set(fromHex(nonce, 16, "nonce"), 1);
  new DataView(record.buffer).setBigUint64(17, BigInt(exp), true);
  return record;
}

function floorRecord(floor: number): Uint8Array {
  const record = new Uint8Array(FLOOR_RECORD_BYTES);
  record[0] = FLOOR_RECORD;
  new DataView(record.buffer).setBigUint64(1, BigInt(floor), true);
  return record;
}

function readU64(view: DataView, at: number): number {
  const value = view.getBigUint64(at, true);
  // exp values come from verified commands (safe integers); anything larger is clamped, never wrapped.
  return value > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(value);
}
