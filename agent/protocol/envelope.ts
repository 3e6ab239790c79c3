// Signed command and reply envelopes (agent/link/README.md, "Commands"):
//
//   {"body":"<JSON text>","sig":"<base64 Ed25519>"}
//
// The signature covers a domain prefix and the body exactly as sent ("sharenode command v1\n" || UTF-8(body) for
// commands, "sharenode reply v1\n" || UTF-8(body) for replies), so no canonical JSON form is needed: the body text
// is parsed only after its signature checks out.
//
// openCommand() and openReply() take bytes off the network and never throw on them: any defect is
// { ok: false, code, reason } with a one-line reason. They throw only when the caller's own options are invalid.
// Pure but for the random nonce signCommand() draws when none is given, and loadOrCreateFleetKey() at the end,
// which delegates the key file to agent/identity.
import { decodeBase64, toBase64 } from "../util/base64.js";
import { describeType, describeValue } from "../util/describe.js";
import { errorLine } from "../util/errors.js";
import { isPlainObject, isUint } from "../util/guards.js";
import { randomBytes } from "node:crypto";
import { basename, dirname } from "node:path";
import {
  DEVICE_KEY_FILE,
  deviceIdOf,
  loadOrCreateSigningKey,
  PUBLIC_KEY_BYTES,
  publicKeyFromHex,
  SIGNATURE_BYTES,
  verifySignature,
} from "../identity/device-key.js";
import { isDeviceId, isValidName } from "./topics.js";

export const COMMAND_DOMAIN = "sharenode command v1\n";
export const REPLY_DOMAIN = "sharenode reply v1\n";
/**
 * The largest command payload a device accepts (agent/link/README.md): 128 KiB, so that compute.run's inline input
 * of up to 64 KiB (base64, inside the body's JSON text) fits.
 */
export const MAX_COMMAND_BYTES = 131_072;
/** How far in the future a command's `exp` may be: it bounds how long a device keeps a nonce. */
export const MAX_AHEAD_MS = 600_000;
/** The largest reply payload signReply() builds and openReply() accepts by default. */
export const MAX_REPLY_BYTES = 1024 * 1024;
export const NONCE_BYTES = 16;

/** Error codes in replies: letters, digits, '.', '_', '-', at most 64 characters. */
export const ERROR_CODE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

const NONCE_HEX = /^[0-9a-f]{32}$/;
const COMMAND_FIELDS = ["v", "cmd", "deviceId", "args", "nonce", "exp"] as const;
const ENVELOPE_FIELDS = ["body", "sig"] as const;
const encoder = new TextEncoder();
// fatal: invalid UTF-8 is an error, not U+FFFD; ignoreBOM: a BOM stays in the text, where JSON.parse refuses it.
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const typedArrayByteLength = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Uint8Array.prototype), "byteLength")!
  .get! as (this: Uint8Array) => number;
const COMMAND_DOMAIN_BYTES = encoder.encode(COMMAND_DOMAIN);
const REPLY_DOMAIN_BYTES = encoder.encode(REPLY_DOMAIN);

/** Anything that signs with Ed25519: a DeviceIdentity, a FleetKey. */
export interface Signer {
  sign(message: Uint8Array): Uint8Array;
}

export interface CommandInput {
  cmd: string;
  deviceId: string;
  args: Record<string, unknown>;
  /** 32 lowercase hex digits; 16 random bytes when absent. */
  nonce?: string;
  /** Epoch milliseconds after which the device refuses the command. */
  exp: number;
}

export interface Command {
  cmd: string;
  /** A JSON object, unvalidated: the handler checks its own arguments. */
  args: Record<string, unknown>;
  nonce: string;
  exp: number;
}

export type CommandFailureCode =
  "too-large" | "malformed" | "bad-signature" | "wrong-device" | "wrong-command" | "expired" | "too-far-ahead";

export type OpenedCommand =
  | { ok: true; command: Command }
  /**
   * nonce: the command's nonce once its signature verified and the body has a valid one, else null. signed: the
   * signature verified under the fleet key (the refusal is of a command the fleet signed), so the caller can tell
   * the fleet's mistakes from anyone's garbage (agent/link/command-gate.ts rate-limits replies to the latter).
   */
  | { ok: false; code: CommandFailureCode; reason: string; nonce: string | null; signed: boolean };

export interface OpenCommandOptions {
  /** The fleet's raw 32-byte Ed25519 public key, or its 64 hex digits. */
  fleetPublicKey: Uint8Array | string;
  /** This device's id. */
  deviceId: string;
  /** The command name from the topic the payload arrived on (untrusted: compared, never parsed). */
  topicCmd: unknown;
  /** Epoch milliseconds. */
  now: number;
  maxAheadMs?: number;
  maxBytes?: number;
}

export type ReplyError = { code: string; message: string };

export type ReplyInput = {
  /** The command name; null when the topic named none. */
  cmd: string | null;
  deviceId: string;
  /** The command's nonce; null for a command too malformed (or too unauthenticated) to have one. */
  nonce: string | null;
} & ({ ok: true; result?: unknown } | { ok: false; error: ReplyError });

export type Reply = {
  v: 1;
  cmd: string | null;
  deviceId: string;
  nonce: string | null;
} & ({ ok: true; result: unknown } | { ok: false; error: ReplyError });

export type ReplyFailureCode = "too-large" | "malformed" | "bad-signature" | "wrong-device";
export type OpenedReply = { ok: true; reply: Reply } | { ok: false; code: ReplyFailureCode; reason: string };

export interface OpenReplyOptions {
  /** The device's raw 32-byte Ed25519 public key, or its 64 hex digits. */
  devicePublicKey: Uint8Array | string;
  /** When given, it must be the public key's device id (a RangeError otherwise). */
  deviceId?: string;
  maxBytes?: number;
}

// --- commands ---------------------------------------------------------------------------------------------------

/**
 * Builds a signed command payload. Throws (TypeError, RangeError) on invalid input, including a payload over
 * MAX_COMMAND_BYTES, which no device would accept.
 */
export function signCommand(input: CommandInput, fleetSigner: Signer): Uint8Array {
  const { cmd, deviceId, args, exp } = input;
  const nonce = input.nonce ?? randomBytes(NONCE_BYTES).toString("hex");
  if (!isValidName(cmd))
    throw new RangeError(
      `command name must be 1..128 characters without + # / or control characters, got ${describeValue(cmd)}`,
    );
  if (!isDeviceId(deviceId))
    throw new RangeError(`device id must be 32 lowercase hex digits, got ${describeValue(deviceId)}`);
  if (!isPlainObject(args)) throw new TypeError(`command args must be an object, got ${describeType(args)}`);
  if (typeof nonce !== "string" || !NONCE_HEX.test(nonce))
    throw new RangeError(`nonce must be 32 lowercase hex digits, got ${describeValue(nonce)}`);
  if (!isUint(exp))
    throw new RangeError(`exp must be epoch milliseconds (a non-negative integer), got ${describeValue(exp)}`);
  const body = JSON.stringify({ v: 1, cmd, deviceId, args, nonce, exp });
  const payload = sealEnvelope(body, COMMAND_DOMAIN_BYTES, fleetSigner);
  if (payload.length > MAX_COMMAND_BYTES) {
    throw new RangeError(`command payload of ${payload.length} bytes exceeds the maximum of ${MAX_COMMAND_BYTES}`);
  }
  return payload;
}

/**
 * Verifies a command payload from the network, in the README's order: size, envelope shape, signature, body shape,
 * device id, command name against the topic, expiry. (Replays are the caller's check: it keeps the nonces.)
 */
export function openCommand(payload: unknown, options: OpenCommandOptions): OpenedCommand {
  const key = publicKeyOption(options.fleetPublicKey, "fleet public key");
  const { deviceId, topicCmd, now } = options;
  const maxAheadMs = options.maxAheadMs ?? MAX_AHEAD_MS;
  const maxBytes = options.maxBytes ?? MAX_COMMAND_BYTES;
  if (!isDeviceId(deviceId))
    throw new RangeError(`device id must be 32 lowercase hex digits, got ${describeValue(deviceId)}`);
  if (typeof now !== "number" || !Number.isFinite(now))
    throw new RangeError(`now must be epoch milliseconds, got ${describeValue(now)}`);
  if (!isUint(maxAheadMs))
    throw new RangeError(`maxAheadMs must be a non-negative integer, got ${describeValue(maxAheadMs)}`);
  if (!isUint(maxBytes) || maxBytes === 0)
    throw new RangeError(`maxBytes must be a positive integer, got ${describeValue(maxBytes)}`);

  let nonce: string | null = null;
  let signed = false;
  const fail = (code: CommandFailureCode, reason: string): OpenedCommand => ({
    ok: false,
    code,
    reason,
    nonce,
    signed,
  });
  try {
    const opened = openEnvelope(payload, maxBytes, COMMAND_DOMAIN_BYTES, key, "command");
    signed = opened.ok || opened.signed === true;
    if (!opened.ok) return fail(opened.code, opened.reason);
    const body = opened.body;
    if (!isPlainObject(body)) return fail("malformed", `command body is ${describeType(body)}, not an object`);
    // The body is authentic from here on: its nonce, when well-formed, goes into the error reply.
    if (typeof body.nonce === "string" && NONCE_HEX.test(body.nonce)) nonce = body.nonce;
    const shape = fieldsDefect(body, COMMAND_FIELDS, "command body");
    if (shape !== undefined) return fail("malformed", shape);
    if (body.v !== 1)
      return fail("malformed", `command version ${describeValue(body.v)} is not supported (expected 1)`);
    if (!isValidName(body.cmd))
      return fail("malformed", `command 'cmd' must be a command name, got ${describeValue(body.cmd)}`);
    if (!isDeviceId(body.deviceId))
      return fail(
        "malformed",
        `command 'deviceId' must be 32 lowercase hex digits, got ${describeValue(body.deviceId)}`,
      );
    if (!isPlainObject(body.args))
      return fail("malformed", `command 'args' must be an object, got ${describeType(body.args)}`);
    if (nonce === null)
      return fail("malformed", `command 'nonce' must be 32 lowercase hex digits, got ${describeValue(body.nonce)}`);
    if (!isUint(body.exp))
      return fail("malformed", `command 'exp' must be epoch milliseconds, got ${describeValue(body.exp)}`);
    const { cmd, args, exp } = body as { cmd: string; args: Record<string, unknown>; exp: number };

    if (body.deviceId !== deviceId)
      return fail("wrong-device", `command is for device ${body.deviceId as string}, not ${deviceId}`);
    if (cmd !== topicCmd)
      return fail("wrong-command", `command ${describeValue(cmd)} arrived on the topic of ${describeValue(topicCmd)}`);
    if (exp <= now)
      return fail(
        "expired",
        `command expired at ${clockText(exp)}, ${now - exp} ms before the device's clock (${clockText(now)})${clockHint(now)}`,
      );
    if (exp - now > maxAheadMs) {
      return fail(
        "too-far-ahead",
        `command expires at ${clockText(exp)}, ${exp - now} ms after the device's clock (${clockText(now)}); at most ${maxAheadMs} ms ahead is allowed${clockHint(now)}`,
      );
    }
    return { ok: true, command: { cmd, args, nonce, exp } };
  } catch (err) {
    // Bytes from the wire cannot get here; a hostile object (a Proxy, a throwing getter) can.
    return fail("malformed", `command could not be read: ${errorLine(err)}`);
  }
}

/**
 * Before this instant the device's clock cannot be right: no build of the agent is older. Boxes without a
 * battery-backed clock boot in 1970 and refuse every command as too far ahead until NTP answers; the refusal says
 * so, because the fleet operator reading it cannot see the box's clock otherwise.
 */
const CLOCK_PLAUSIBLE_FROM = Date.UTC(2025, 0, 1);

function clockHint(now: number): string {
  return now < CLOCK_PLAUSIBLE_FROM
    ? "; the device's clock looks unset (boxes without a battery-backed clock start in 1970 until NTP answers)"
    : "";
}

/** Epoch milliseconds as ISO 8601 UTC, or the bare number when Date cannot show it. */
function clockText(ms: number): string {
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? `${ms} ms` : date.toISOString();
}

// --- replies ----------------------------------------------------------------------------------------------------

/**
 * Builds a signed reply payload. Throws a TypeError when the result is not JSON-serializable or a field is invalid,
 * and a RangeError when the payload would exceed MAX_REPLY_BYTES.
 */
export function signReply(reply: ReplyInput, deviceSigner: Signer): Uint8Array {
  const { cmd, deviceId, nonce } = reply;
  if (cmd !== null && !isValidName(cmd))
    throw new RangeError(`reply cmd must be a command name or null, got ${describeValue(cmd)}`);
  if (!isDeviceId(deviceId))
    throw new RangeError(`device id must be 32 lowercase hex digits, got ${describeValue(deviceId)}`);
  if (nonce !== null && (typeof nonce !== "string" || !NONCE_HEX.test(nonce))) {
    throw new RangeError(`reply nonce must be 32 lowercase hex digits or null, got ${describeValue(nonce)}`);
  }
  let body: string;
  if (reply.ok) {
    const head = JSON.stringify({ v: 1, cmd, deviceId, nonce, ok: true });
    const result = JSON.stringify(reply.result === undefined ? null : reply.result);
    if (typeof result !== "string")
      throw new TypeError(`reply result is ${describeType(reply.result)}, which JSON cannot carry`);
    if (result.length > MAX_REPLY_BYTES)
      throw new RangeError(
        `reply result of ${result.length} characters exceeds the maximum of ${MAX_REPLY_BYTES} bytes`,
      );
    // Spliced in as text so that a result JSON.stringify would drop (undefined) cannot vanish from the body.
    body = `${head.slice(0, -1)},"result":${result}}`;
  } else {
    const { code, message } = reply.error;
    if (typeof code !== "string" || !ERROR_CODE.test(code))
      throw new RangeError(`reply error code must match ${ERROR_CODE.source}, got ${describeValue(code)}`);
    if (typeof message !== "string")
      throw new TypeError(`reply error message must be a string, got ${describeType(message)}`);
    body = JSON.stringify({ v: 1, cmd, deviceId, nonce, ok: false, error: { code, message } });
  }
  const payload = sealEnvelope(body, REPLY_DOMAIN_BYTES, deviceSigner);
  if (payload.length > MAX_REPLY_BYTES)
    throw new RangeError(`reply payload of ${payload.length} bytes exceeds the maximum of ${MAX_REPLY_BYTES}`);
  return payload;
}

/** Verifies a reply payload: size, envelope shape, signature by the device key, body shape, device id. */
export function openReply(payload: unknown, options: OpenReplyOptions): OpenedReply {
  const key = publicKeyOption(options.devicePublicKey, "device public key");
  const deviceId = deviceIdOf(key);
  if (options.deviceId !== undefined && options.deviceId !== deviceId) {
    throw new RangeError(
      `device id ${describeValue(options.deviceId)} does not belong to the device public key (device ${deviceId})`,
    );
  }
  const maxBytes = options.maxBytes ?? MAX_REPLY_BYTES;
  if (!isUint(maxBytes) || maxBytes === 0)
    throw new RangeError(`maxBytes must be a positive integer, got ${describeValue(maxBytes)}`);
  const fail = (code: ReplyFailureCode, reason: string): OpenedReply => ({ ok: false, code, reason });
  try {
    const opened = openEnvelope(payload, maxBytes, REPLY_DOMAIN_BYTES, key, "reply");
    if (!opened.ok) return fail(opened.code, opened.reason);
    const body = opened.body;
    if (!isPlainObject(body)) return fail("malformed", `reply body is ${describeType(body)}, not an object`);
    if (typeof body.ok !== "boolean")
      return fail("malformed", `reply 'ok' must be a boolean, got ${describeValue(body.ok)}`);
    const shape = fieldsDefect(
      body,
      ["v", "cmd", "deviceId", "nonce", "ok", body.ok ? "result" : "error"],
      "reply body",
    );
    if (shape !== undefined) return fail("malformed", shape);
    if (body.v !== 1) return fail("malformed", `reply version ${describeValue(body.v)} is not supported (expected 1)`);
    if (body.cmd !== null && !isValidName(body.cmd))
      return fail("malformed", `reply 'cmd' must be a command name or null, got ${describeValue(body.cmd)}`);
    if (!isDeviceId(body.deviceId))
      return fail("malformed", `reply 'deviceId' must be 32 lowercase hex digits, got ${describeValue(body.deviceId)}`);
    if (body.nonce !== null && !(typeof body.nonce === "string" && NONCE_HEX.test(body.nonce))) {
      return fail(
        "malformed",
        `reply 'nonce' must be 32 lowercase hex digits or null, got ${describeValue(body.nonce)}`,
      );
    }
    if (!body.ok) {
      const error = body.error;
      if (!isPlainObject(error))
        return fail("malformed", `reply 'error' must be an object, got ${describeType(error)}`);
      const errorShape = fieldsDefect(error, ["code", "message"], "reply error");
      if (errorShape !== undefined) return fail("malformed", errorShape);
      if (typeof error.code !== "string" || !ERROR_CODE.test(error.code))
        return fail("malformed", `reply error code ${describeValue(error.code)} is not a valid code`);
      if (typeof error.message !== "string")
        return fail("malformed", `reply error message must be a string, got ${describeType(error.message)}`);
    }
    if (body.deviceId !== deviceId)
      return fail(
        "wrong-device",
        `reply is from device ${body.deviceId as string}, but the key is device ${deviceId}'s`,
      );
    return { ok: true, reply: body as Reply };
  } catch (err) {
    return fail("malformed", `reply could not be read: ${errorLine(err)}`);
  }
}

// --- the envelope -----------------------------------------------------------------------------------------------

/**
 * `{"body":BODY,"sig":...}` as UTF-8, signed over `domain || UTF-8(body)`: the envelope of commands and replies, and
 * of orders and receipts (order.ts, receipt.ts).
 */
export function sealEnvelope(body: string, domain: Uint8Array, signer: Signer): Uint8Array {
  const signature = signer.sign(signedMessage(domain, encoder.encode(body)));
  if (!(signature instanceof Uint8Array) || signature.length !== SIGNATURE_BYTES) {
    throw new TypeError(
      `signer returned ${describeType(signature)}, expected a ${SIGNATURE_BYTES}-byte Ed25519 signature`,
    );
  }
  const sig = toBase64(signature);
  return encoder.encode(JSON.stringify({ body, sig }));
}

function signedMessage(domain: Uint8Array, body: Uint8Array): Uint8Array {
  const message = new Uint8Array(domain.length + body.length);
  message.set(domain, 0);
  message.set(body, domain.length);
  return message;
}

export type OpenedEnvelope =
  | { ok: true; body: unknown }
  /** signed: the signature verified (only the body's JSON failed). */
  | { ok: false; code: "too-large" | "malformed" | "bad-signature"; reason: string; signed?: true };

/**
 * Size, envelope shape, signature; then the body parsed. May throw only on hostile non-bytes input. `keyName` names
 * the key in a bad-signature reason ("fleet", "device", "client").
 */
export function openEnvelope(
  payload: unknown,
  maxBytes: number,
  domain: Uint8Array,
  key: Uint8Array,
  what: string,
  keyName: string = what === "command" ? "fleet" : "device",
): OpenedEnvelope {
  if (!(payload instanceof Uint8Array))
    return { ok: false, code: "malformed", reason: `${what} payload is ${describeType(payload)}, not bytes` };
  // The length from the array's internal slot: an own or inherited byteLength getter cannot lie about it.
  const size = typedArrayByteLength.call(payload);
  if (size > maxBytes)
    return {
      ok: false,
      code: "too-large",
      reason: `${what} payload of ${size} bytes exceeds the maximum of ${maxBytes}`,
    };
  let text: string;
  try {
    text = decoder.decode(payload);
  } catch {
    return { ok: false, code: "malformed", reason: `${what} payload is not valid UTF-8` };
  }
  const envelope = parseJson(text);
  // V8's parse errors quote the input, which may span lines: the reason stays fixed.
  if (envelope === PARSE_FAILED) return { ok: false, code: "malformed", reason: `${what} payload is not valid JSON` };
  if (!isPlainObject(envelope))
    return { ok: false, code: "malformed", reason: `${what} envelope is ${describeType(envelope)}, not an object` };
  const shape = fieldsDefect(envelope, ENVELOPE_FIELDS, `${what} envelope`);
  if (shape !== undefined) return { ok: false, code: "malformed", reason: shape };
  const { body, sig } = envelope;
  if (typeof body !== "string")
    return { ok: false, code: "malformed", reason: `${what} 'body' must be a string, got ${describeType(body)}` };
  const signature = decodeBase64(sig, SIGNATURE_BYTES);
  if (signature === null)
    return {
      ok: false,
      code: "malformed",
      reason: `${what} 'sig' is not canonical base64 of ${SIGNATURE_BYTES} bytes`,
    };
  const bodyBytes = encoder.encode(body);
  // A lone surrogate (from a \ud800 escape) encodes as U+FFFD: two different bodies would share one signature.
  if (decoder.decode(bodyBytes) !== body)
    return { ok: false, code: "malformed", reason: `${what} 'body' is not well-formed Unicode` };
  if (!verifySignature(key, signedMessage(domain, bodyBytes), signature)) {
    return {
      ok: false,
      code: "bad-signature",
      reason: `${what} signature does not verify under the ${keyName} key`,
    };
  }
  const parsed = parseJson(body);
  if (parsed === PARSE_FAILED)
    return { ok: false, code: "malformed", reason: `${what} 'body' is not valid JSON`, signed: true };
  return { ok: true, body: parsed };
}

const PARSE_FAILED = Symbol("parse failed");

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return PARSE_FAILED;
  }
}

/** The first missing or unknown field (unknown fields are refused: nothing unsigned or unexpected gets through). */
export function fieldsDefect(
  object: Record<string, unknown>,
  fields: readonly string[],
  what: string,
): string | undefined {
  for (const key of Object.keys(object)) {
    if (!fields.includes(key)) return `${what} has an unknown field ${describeValue(key)}`;
  }
  for (const key of fields) if (!Object.hasOwn(object, key)) return `${what} has no '${key}'`;
  return undefined;
}

export function publicKeyOption(key: Uint8Array | string, what: string): Uint8Array {
  if (typeof key === "string") return publicKeyFromHex(key);
  if (!(key instanceof Uint8Array) || key.length !== PUBLIC_KEY_BYTES)
    throw new RangeError(`${what} must be ${PUBLIC_KEY_BYTES} raw bytes or 64 hex digits`);
  return key;
}

// --- the fleet key ----------------------------------------------------------------------------------------------

/** The fleet's command-signing key: Ed25519, its private half only behind sign(). */
export interface FleetKey {
  /** The raw 32-byte public key (a copy on every read). */
  readonly publicKey: Uint8Array;
  /** What devices put in their config as the fleet public key. */
  readonly publicKeyHex: string;
  sign(message: Uint8Array): Uint8Array;
}

export class FleetKeyError extends Error {
  override name = "FleetKeyError";
}

/**
 * Loads the fleet key from `path` (PKCS#8 PEM, mode 0600), creating it and its directory (0700) on first use.
 * The key file is agent/identity's: created atomically with link(2) (racing creators agree on one key), refused
 * when group or others may access it or when it is not Ed25519. agent/identity exports that file handling only
 * for `<dir>/device-key.pem`, so until it exports a loader for any path, `path` must end in `/device-key.pem`.
 */
export async function loadOrCreateFleetKey(path: string): Promise<FleetKey> {
  if (basename(path) !== DEVICE_KEY_FILE) {
    throw new FleetKeyError(
      `fleet key ${path}: the key file must be named ${DEVICE_KEY_FILE} (agent/identity loads keys only under that name)`,
    );
  }
  return loadOrCreateSigningKey(dirname(path), "FleetKey", (message, cause) => new FleetKeyError(message, { cause }));
}

export { describeValue } from "../util/describe.js";
export { errorLine } from "../util/errors.js";
