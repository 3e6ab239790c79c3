// `sharenode fleet compute submit MODULE INPUT --replicas K --quorum M --source URL`: one compute task sent to K
// online devices (compute.run, each reply verified under the device's key), their compute.done / compute.failed
// events followed, each result checked (signed by the device, for this task, module and input), until M agree on
// an output (accepted), no quorum can be reached, or --wait runs out (agent/fleet/quorum.ts). Prints a table, the
// outcome and the devices that disagree; --verdicts FILE keeps the verdict for `fleet settle --compute FILE`;
// --output FILE writes the agreed output (when it came inline). Exit 0 when accepted, else 1.
import { randomBytes, createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { checkModule } from "../compute/module-check.js";
import { MAX_INLINE_INPUT, MAX_LIMITS, MAX_COMPUTE_OBJECT } from "../compute/queue.js";
import { DEFAULT_LIMITS } from "../compute/sandbox.js";
import { writeFileAtomic } from "../durable/atomic.js";
import { parseEvent } from "../fleet/consumer.js";
import { ComputeQuorum } from "../fleet/quorum.js";
import { publicKeyFromHex } from "../identity/device-key.js";
import { blake3 } from "../kernels/blake3.js";
import type { ComputeVerdict } from "../ledger/settle.js";
import { TASK_ID } from "../protocol/compute-result.js";
import { fleetFilter, isDeviceId, parseTopic } from "../protocol/topics.js";
import { errorMessage } from "../util/errors.js";
import { toHex } from "../util/hex.js";
import { CONNECTION, connect, deviceSession, noteDeviceState, seconds, type KnownDevice } from "./fleet.js";
import { CliError, parseCommandArgs, positiveInteger, systemErrorText, usageError, type CliIo } from "./io.js";

export async function computeCommand(args: string[], io: CliIo): Promise<number> {
  const [action, ...rest] = args;
  if (action !== "submit") throw usageError(`fleet compute: expected 'submit', got '${action ?? ""}'`);
  return submit(rest, io);
}

async function submit(args: string[], io: CliIo): Promise<number> {
  const label = "fleet compute submit";
  const { values, positionals } = parseCommandArgs(
    label,
    args,
    {
      ...CONNECTION,
      replicas: { type: "string" },
      quorum: { type: "string" },
      source: { type: "string", multiple: true },
      devices: { type: "string" },
      "task-id": { type: "string" },
      "cpu-ms": { type: "string" },
      "wall-ms": { type: "string" },
      "memory-mb": { type: "string" },
      "output-kb": { type: "string" },
      discover: { type: "string" },
      wait: { type: "string" },
      verdicts: { type: "string" },
      output: { type: "string" },
      "key-dir": { type: "string" },
      timeout: { type: "string" },
    },
    true,
  );
  if (positionals.length !== 2) throw usageError(`${label}: expected MODULE.wasm and INPUT (a file)`);
  const [modulePath, inputPath] = positionals as [string, string];
  const replicas = positiveInteger(label, "replicas", values.replicas, 3);
  const quorum = positiveInteger(label, "quorum", values.quorum, Math.floor(replicas / 2) + 1);
  if (quorum > replicas) throw usageError(`${label}: --quorum ${quorum} is more than --replicas ${replicas}`);
  const sources = values.source ?? [];
  for (const s of sources)
    if (!/^https?:\/\/[^\s@]+$/.test(s))
      throw usageError(`${label}: --source ${s}: an http(s) URL without credentials`);
  const limits = {
    cpuMs: positiveInteger(label, "cpu-ms", values["cpu-ms"], DEFAULT_LIMITS.cpuMs, MAX_LIMITS.cpuMs),
    wallMs: positiveInteger(label, "wall-ms", values["wall-ms"], DEFAULT_LIMITS.wallMs, MAX_LIMITS.wallMs),
    memoryMb: positiveInteger(
      label,
      "memory-mb",
      values["memory-mb"],
      DEFAULT_LIMITS.memoryBytes >> 20,
      MAX_LIMITS.memoryBytes >> 20,
    ),
    outputKb: positiveInteger(
      label,
      "output-kb",
      values["output-kb"],
      DEFAULT_LIMITS.outputBytes >> 10,
      MAX_LIMITS.outputBytes >> 10,
    ),
  };
  const taskId = values["task-id"] ?? randomBytes(12).toString("hex");
  if (!TASK_ID.test(taskId)) throw usageError(`${label}: --task-id must be 1..64 characters of A-Z a-z 0-9 . _ -`);
  const chosen = values.devices?.split(",").filter((d) => d.length > 0);
  for (const d of chosen ?? []) if (!isDeviceId(d)) throw usageError(`${label}: --devices: '${d}' is not a device id`);
  const discover = seconds("discover", values.discover, 3);
  const wait = seconds("wait", values.wait, 600);

  const moduleBytes = await readInput(label, modulePath);
  if (moduleBytes.length > MAX_COMPUTE_OBJECT)
    throw new CliError(`${label}: ${modulePath} is ${moduleBytes.length} bytes, over ${MAX_COMPUTE_OBJECT}`);
  // The devices refuse such a module before it runs: say so here, before anything is sent.
  const checked = checkModule(moduleBytes, limits.memoryMb << 20);
  if (!checked.ok) throw new CliError(`${label}: ${modulePath}: ${checked.code}: ${checked.reason}`);
  const input = await readInput(label, inputPath);
  if (input.length > MAX_COMPUTE_OBJECT)
    throw new CliError(`${label}: ${inputPath} is ${input.length} bytes, over ${MAX_COMPUTE_OBJECT}`);
  const moduleId = toHex(blake3(moduleBytes));
  const inputId = toHex(blake3(input));
  const objectUrls = (id: string) => sources.map((s) => new URL(`objects/${id}`, s.endsWith("/") ? s : `${s}/`).href);
  const inline = input.length <= MAX_INLINE_INPUT;
  if (sources.length === 0)
    throw usageError(`${label}: --source URL is required: where the devices fetch the module (URL/objects/ID)`);
  const runArgs = {
    taskId,
    module: { id: moduleId, length: moduleBytes.length, sources: objectUrls(moduleId) },
    input: inline
      ? { data: Buffer.from(input).toString("base64") }
      : { id: inputId, length: input.length, sources: objectUrls(inputId) },
    limits,
  };

  const conn = await connect(values, io);
  const states = new Map<string, KnownDevice>();
  const events: Array<{ deviceId: string; type: string; fields: Record<string, unknown> }> = [];
  conn.onMessage((m) => {
    const topic = parseTopic(m.topic);
    if (!topic) return;
    if (topic.kind === "state") noteDeviceState(states, topic.deviceId, m.payload);
    else if (topic.kind === "events") {
      const parsed = parseEvent(m.payload);
      if (parsed.ok && parsed.value.fields.taskId === taskId)
        events.push({ deviceId: topic.deviceId, type: parsed.value.type, fields: parsed.value.fields });
    }
  });
  let quorumOf: ComputeQuorum;
  try {
    await conn.subscribe([fleetFilter("state"), fleetFilter("events")]);
    await sleep(discover * 1000);
    const online = [...states].filter(([, s]) => s.online && s.pub !== undefined).map(([id]) => id);
    let picked: string[];
    if (chosen) {
      const missing = chosen.filter((d) => !online.includes(d));
      if (missing.length > 0)
        throw new CliError(`${label}: not online (or no key in its state): ${missing.join(", ")}`);
      picked = chosen;
    } else {
      // Spread over the fleet: the devices whose hash with the task id is lowest.
      const rank = (d: string) => createHash("sha256").update(`${taskId}:${d}`).digest("hex");
      picked = online.sort((a, b) => (rank(a) < rank(b) ? -1 : 1)).slice(0, replicas);
    }
    if (picked.length < replicas)
      throw new CliError(`${label}: ${replicas} replicas asked for, ${picked.length} device(s) online`);
    const keys = new Map(picked.map((d) => [d, publicKeyFromHex(states.get(d)!.pub!)]));
    quorumOf = new ComputeQuorum({ taskId, moduleId, inputId, cpuMs: limits.cpuMs }, keys, quorum);
    const q = quorumOf;
    io.stdout.write(
      `task ${taskId}: module ${moduleId}, input ${inputId} (${input.length} bytes${inline ? ", inline" : ""}) ` +
        `to ${replicas} devices; accepted when ${quorum} agree\n`,
    );
    await Promise.all(
      picked.map(async (deviceId) => {
        try {
          const session = await deviceSession(
            label,
            deviceId,
            { ...values, "device-key": states.get(deviceId)!.pub },
            io,
          );
          try {
            const reply = await session.ask("compute.run", runArgs);
            q.replied(deviceId, reply.ok ? { ok: true } : { ok: false, ...reply.error });
          } finally {
            await session.close();
          }
        } catch (err) {
          q.replied(deviceId, { ok: false, code: "no-reply", message: errorMessage(err) });
        }
      }),
    );
    const started = Date.now();
    let seen = 0;
    while (q.outcome().state === "pending") {
      for (; seen < events.length; seen++) {
        const e = events[seen]!;
        if (e.type === "compute.done") q.done(e.deviceId, e.fields.result);
        else if (e.type === "compute.failed") q.failed(e.deviceId, String(e.fields.code), String(e.fields.reason));
      }
      if (q.outcome().state !== "pending") break;
      if (Date.now() - started > wait * 1000) {
        q.timedOut();
        break;
      }
      await sleep(100);
    }
  } finally {
    await conn.close();
  }
  const q = quorumOf;
  const outcome = q.outcome();
  io.stdout.write(q.table());
  for (const r of outcome.state === "pending" ? [] : outcome.disagreeing)
    io.stdout.write(
      `disagrees: ${r.deviceId} ${r.state === "invalid" ? `(invalid result: ${r.reason})` : `(output ${r.outputId})`}\n`,
    );
  if (values.verdicts !== undefined) await appendVerdict(label, values.verdicts, q.verdict());
  if (outcome.state !== "accepted") {
    io.stdout.write(`no quorum: ${quorum} of ${replicas} did not agree\n`);
    return 1;
  }
  io.stdout.write(`accepted ${outcome.outputId}: ${outcome.agreeing.length} of ${replicas} agree\n`);
  if (values.output !== undefined) {
    const data = events.find(
      (e) =>
        e.type === "compute.done" && e.fields.outputId === outcome.outputId && outcome.agreeing.includes(e.deviceId),
    )?.fields.output;
    const bytes = typeof data === "string" ? Buffer.from(data, "base64") : undefined;
    if (!bytes || toHex(blake3(bytes)) !== outcome.outputId)
      throw new CliError(`${label}: the output did not come inline (over 64 KiB: it is in the devices' stores)`);
    await writeFileAtomic(values.output, bytes);
  }
  return 0;
}

async function readInput(label: string, path: string): Promise<Uint8Array> {
  try {
    return new Uint8Array(await readFile(path));
  } catch (err) {
    throw new CliError(`${label}: cannot read ${path}: ${systemErrorText(err) ?? errorMessage(err)}`);
  }
}

/** The verdicts file is a JSON array: this task's verdict replaces an earlier one of the same task. */
async function appendVerdict(label: string, path: string, verdict: ComputeVerdict): Promise<void> {
  let list: ComputeVerdict[] = [];
  try {
    const parsed = JSON.parse(await readFile(path, "utf8")) as unknown;
    if (!Array.isArray(parsed)) throw new CliError(`${label}: ${path} is not a JSON array of verdicts`);
    list = parsed as ComputeVerdict[];
  } catch (err) {
    if (err instanceof CliError) throw err;
    if ((err as NodeJS.ErrnoException).code !== "ENOENT")
      throw new CliError(`${label}: cannot read ${path}: ${systemErrorText(err) ?? errorMessage(err)}`);
  }
  list = [...list.filter((v) => v.taskId !== verdict.taskId), verdict];
  await writeFileAtomic(path, JSON.stringify(list, null, 1) + "\n");
}
