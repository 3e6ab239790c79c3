// Compute results (issue 14): the device's signed statement "task TASK, module MODULE on input INPUT, gave OUTPUT,
// using CPU_MS of CPU", everything named by BLAKE3 id. The fleet compares the results of the replicas of a task
// (agent/fleet/quorum.ts) and settles the compute records the devices put in their ledgers against the quorum.
//
// A token like orders and receipts (order.ts): base64url of an envelope `{"body":"<JSON>","sig":"<base64>"}`
// signed by the device key over "sharenode compute result v1\n" || UTF-8(body). openComputeResult() never throws on
// a token off the network: any defect is { ok: false, reason } in one line.
import { describeType, describeValue } from "../util/describe.js";
import { errorLine } from "../util/errors.js";
import { isPlainObject, isUint } from "../util/guards.js";
import { fieldsDefect, openEnvelope, publicKeyOption, sealEnvelope, type Signer } from "./envelope.js";
import { fromToken, toToken } from "./order.js";
import { isDeviceId } from "./topics.js";

export const COMPUTE_RESULT_DOMAIN = "sharenode compute result v1\n";
/** The longest result token anyone reads (a real one is about 700 characters). */
export const MAX_COMPUTE_RESULT_TOKEN = 2048;
/** Task ids: chosen by the fleet; short, printable, safe in a file name and a log line. */
export const TASK_ID = /^[A-Za-z0-9._-]{1,64}$/;

const DOMAIN_BYTES = new TextEncoder().encode(COMPUTE_RESULT_DOMAIN);
const HEX_64 = /^[0-9a-f]{64}$/;
const FIELDS = [
  "v",
  "deviceId",
  "taskId",
  "moduleId",
  "inputId",
  "outputId",
  "outputLength",
  "cpuMs",
  "wallMs",
  "at",
] as const;

export interface ComputeResultInput {
  deviceId: string;
  taskId: string;
  /** BLAKE3 of the module's bytes. */
  moduleId: string;
  /** BLAKE3 of the input's bytes (inline input too). */
  inputId: string;
  /** BLAKE3 of the output's bytes. */
  outputId: string;
  outputLength: number;
  /** CPU time of the task's thread (user + system), ms: the ledger's compute unit. */
  cpuMs: number;
  wallMs: number;
  /** Epoch ms, the box's clock, when the task ended. */
  at: number;
}

export type ComputeResult = ComputeResultInput & { v: 1 };

export type OpenedComputeResult = { ok: true; result: ComputeResult } | { ok: false; reason: string };

/** Signs a result with the device key; returns its token. Throws a RangeError naming an invalid field. */
export function signComputeResult(input: ComputeResultInput, deviceSigner: Signer): string {
  const body: ComputeResult = { v: 1, ...input };
  const defect = resultDefect(body);
  if (defect !== undefined) throw new RangeError(defect);
  const ordered = Object.fromEntries(FIELDS.map((k) => [k, body[k]]));
  return toToken(sealEnvelope(JSON.stringify(ordered), DOMAIN_BYTES, deviceSigner));
}

/** The result a token carries, verified under the device's key; never throws on the token. */
export function openComputeResult(token: unknown, devicePublicKey: Uint8Array | string): OpenedComputeResult {
  const key = publicKeyOption(devicePublicKey, "device key");
  try {
    const payload = fromToken(token, MAX_COMPUTE_RESULT_TOKEN, "compute result");
    if (typeof payload === "string") return { ok: false, reason: payload };
    const opened = openEnvelope(payload, MAX_COMPUTE_RESULT_TOKEN, DOMAIN_BYTES, key, "compute result", "device");
    if (!opened.ok) return { ok: false, reason: opened.reason };
    const defect = resultDefect(opened.body);
    if (defect !== undefined) return { ok: false, reason: defect };
    return { ok: true, result: opened.body as ComputeResult };
  } catch (err) {
    return { ok: false, reason: `compute result could not be read: ${errorLine(err)}` };
  }
}

/**
 * The deviceId a token's body names, unverified: only to find the key to verify it with. Undefined when the token
 * is not one.
 */
export function computeResultDevice(token: unknown): string | undefined {
  const payload = fromToken(token, MAX_COMPUTE_RESULT_TOKEN, "compute result");
  if (typeof payload === "string") return undefined;
  try {
    const envelope = JSON.parse(new TextDecoder().decode(payload)) as { body?: unknown };
    const body = JSON.parse(String(envelope.body)) as { deviceId?: unknown };
    return isDeviceId(body.deviceId) ? body.deviceId : undefined;
  } catch {
    return undefined;
  }
}

function resultDefect(body: unknown): string | undefined {
  if (!isPlainObject(body)) return `compute result body is ${describeType(body)}, not an object`;
  const shape = fieldsDefect(body, FIELDS, "compute result body");
  if (shape !== undefined) return shape;
  if (body.v !== 1) return `compute result version ${describeValue(body.v)} is not supported (expected 1)`;
  if (!isDeviceId(body.deviceId)) return "compute result 'deviceId' must be 32 lowercase hex digits";
  if (typeof body.taskId !== "string" || !TASK_ID.test(body.taskId))
    return "compute result 'taskId' must be 1..64 characters of A-Z a-z 0-9 . _ -";
  for (const key of ["moduleId", "inputId", "outputId"] as const)
    if (typeof body[key] !== "string" || !HEX_64.test(body[key]))
      return `compute result '${key}' must be 64 hex digits`;
  for (const key of ["outputLength", "cpuMs", "wallMs", "at"] as const)
    if (!isUint(body[key])) return `compute result '${key}' must be a non-negative integer`;
  return undefined;
}

/**
 * The fleet's outcome of one compute task (agent/fleet/quorum.ts; `fleet compute submit --verdicts` keeps them):
 * which devices it went to, what it was, the output the quorum agreed on (null: no quorum) and the CPU budget it
 * had. Settlement (agent/ledger/settle.ts) pays a compute line only against it.
 */
export interface ComputeVerdict {
  taskId: string;
  moduleId: string;
  inputId: string;
  /** The output id M devices agreed on; null when no quorum was reached. */
  outputId: string | null;
  devices: readonly string[];
  /** The task's CPU budget: no claim above it is paid. */
  cpuMs: number;
}
