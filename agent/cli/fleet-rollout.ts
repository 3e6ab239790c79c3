// `sharenode fleet rollout`: a staged rollout of a release (agent/fleet/rollout.ts). The devices come from their
// retained state records (online, build, public key); the cohort of --percent gets ota.offer, --batch at a time,
// each reply verified under the device's key; their ota.* events are followed until every device of the cohort has
// ended, the rollout halts (--max-failures), or --wait runs out. A status table at the end (and on each change, on
// a terminal); exit 0 when every online device of the cohort ended on the release, else 1.
import { readFile, stat } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { join } from "node:path";
import { parseEvent } from "../fleet/consumer.js";
import { inCohort, Rollout } from "../fleet/rollout.js";
import { openManifest } from "../ota/release.js";
import { fleetFilter, parseTopic } from "../protocol/topics.js";
import { errorMessage } from "../util/errors.js";
import { CONNECTION, connect, deviceSession, noteDeviceState, seconds, type KnownDevice } from "./fleet.js";
import { CliError, parseCommandArgs, systemErrorText, usageError, type CliIo } from "./io.js";

export async function rolloutCommand(args: string[], io: CliIo): Promise<number> {
  const label = "fleet rollout";
  const { values } = parseCommandArgs(
    label,
    args,
    {
      ...CONNECTION,
      release: { type: "string" },
      source: { type: "string", multiple: true },
      percent: { type: "string" },
      "max-failures": { type: "string" },
      batch: { type: "string" },
      discover: { type: "string" },
      wait: { type: "string" },
      "release-key": { type: "string" },
      "key-dir": { type: "string" },
      timeout: { type: "string" },
    },
    false,
  );
  if (values.release === undefined) throw usageError(`${label}: --release MANIFEST (or its directory) is required`);
  if (!values.source?.length) throw usageError(`${label}: --source URL is required (the release directory's base URL)`);
  for (const s of values.source)
    if (!/^https?:\/\/[^\s@]+$/.test(s))
      throw usageError(`${label}: --source ${s}: an http(s) URL without credentials`);
  const percent = percentOption(label, "percent", values.percent, undefined);
  const maxFailures = percentOption(label, "max-failures", values["max-failures"], 10);
  const batch = values.batch === undefined ? 10 : Number(values.batch);
  if (!Number.isSafeInteger(batch) || batch < 1) throw usageError(`${label}: --batch must be a whole number from 1`);
  const discover = seconds("discover", values.discover, 3);
  const wait = seconds("wait", values.wait, 1800);

  const manifestPath = (await isDirectory(values.release)) ? join(values.release, "manifest.json") : values.release;
  let manifestText: string;
  try {
    manifestText = await readFile(manifestPath, "utf8");
  } catch (err) {
    throw new CliError(`${label}: cannot read ${manifestPath}: ${systemErrorText(err) ?? errorMessage(err)}`);
  }
  const release = releaseOf(label, manifestText, values["release-key"]);

  const conn = await connect(values, io);
  const states = new Map<string, KnownDevice>();
  const rollout = new Rollout({ build: release.build, batch, maxFailuresPercent: maxFailures });
  const tty = (io.stdout as { isTTY?: boolean }).isTTY === true;
  let changed = false;
  conn.onMessage((m) => {
    const topic = parseTopic(m.topic);
    if (!topic) return;
    if (topic.kind === "state") noteDeviceState(states, topic.deviceId, m.payload);
    else if (topic.kind === "events") {
      const parsed = parseEvent(m.payload);
      if (!parsed.ok || !parsed.value.type.startsWith("ota.")) return;
      rollout.event(topic.deviceId, parsed.value.type, parsed.value.fields);
      changed = true;
    }
  });
  try {
    await conn.subscribe([fleetFilter("state"), fleetFilter("events")]);
    // The retained state records arrive at once; a moment more for the ones a busy broker sends late.
    await sleep(discover * 1000);
    for (const [deviceId, s] of states)
      if (inCohort(deviceId, release.build, percent)) rollout.add(deviceId, s.online, s.build);
    io.stdout.write(
      `rollout of ${release.version} (build ${release.build}) to ${percent} % of ${states.size} devices: ` +
        `${rollout.devices.size} in the cohort; halting past ${maxFailures} % rolled back\n`,
    );
    const started = Date.now();
    const asking = new Set<Promise<void>>();
    while (!rollout.done) {
      for (const deviceId of rollout.toOffer()) {
        rollout.offered(deviceId);
        changed = true;
        const p = offer(deviceId).finally(() => asking.delete(p));
        asking.add(p);
      }
      if (Date.now() - started > wait * 1000) {
        rollout.timeOut();
        break;
      }
      if (tty && changed) {
        io.stdout.write(`\x1b[2J\x1b[H${rollout.table()}`);
        changed = false;
      }
      await sleep(200);
    }
    await Promise.all(asking);
  } finally {
    await conn.close();
  }
  io.stdout.write(rollout.table());
  if (rollout.halted) io.stdout.write(`halted: ${rollout.halted}\n`);
  return rollout.succeeded ? 0 : 1;

  async function offer(deviceId: string): Promise<void> {
    const pub = states.get(deviceId)?.pub;
    try {
      const session = await deviceSession(label, deviceId, { ...values, ...(pub ? { "device-key": pub } : {}) }, io);
      try {
        const reply = await session.ask("ota.offer", { manifest: manifestText, sources: values.source });
        rollout.replied(deviceId, reply.ok ? { ok: true } : { ok: false, ...reply.error });
      } finally {
        await session.close();
      }
    } catch {
      rollout.replied(deviceId, undefined);
    }
    changed = true;
  }
}

function releaseOf(label: string, text: string, releaseKey: string | undefined): { build: number; version: string } {
  if (releaseKey !== undefined) {
    let opened;
    try {
      opened = openManifest(new TextEncoder().encode(text), releaseKey);
    } catch (err) {
      throw usageError(`${label}: --release-key: ${errorMessage(err)}`);
    }
    if (!opened.ok) throw new CliError(`${label}: the manifest does not check out: ${opened.reason}`);
    return opened.manifest;
  }
  try {
    const body = JSON.parse(String((JSON.parse(text) as { body?: unknown }).body)) as {
      build?: unknown;
      version?: unknown;
    };
    if (typeof body.build !== "number" || typeof body.version !== "string") throw new Error("no build or version");
    return { build: body.build, version: body.version };
  } catch (err) {
    throw new CliError(`${label}: not a release manifest ('sharenode release pack' writes one): ${errorMessage(err)}`);
  }
}

function percentOption(label: string, name: string, value: string | undefined, fallback: number | undefined): number {
  if (value === undefined) {
    if (fallback === undefined) throw usageError(`${label}: --${name} is required (0..100)`);
    return fallback;
  }
  const n = /^\d+(\.\d+)?$/.test(value) ? Number(value) : NaN;
  if (!(n >= 0 && n <= 100)) throw usageError(`${label}: --${name} must be a percentage from 0 to 100, got '${value}'`);
  return n;
}

async function isDirectory(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isDirectory(),
    () => false,
  );
}
