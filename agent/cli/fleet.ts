// `sharenode fleet ...`: the fleet side from a terminal: a key to sign commands with, a live table of devices,
// and signed commands with verified replies.
import { randomBytes } from "node:crypto";
import { homedir } from "node:os";
import { join } from "node:path";
import { deviceIdOf, publicKeyFromHex } from "../identity/device-key.js";
import { DeviceTable, parseState, type DeviceRow } from "../fleet/consumer.js";
import { FleetConnection } from "../link/fleet-connection.js";
import { loadOrCreateFleetKey, openReply, signCommand, type Reply } from "../protocol/envelope.js";
import { SERIAL, signOrder } from "../protocol/order.js";
import { parseOrderFile, type BoxOrder } from "../client/orders.js";
import { readFile } from "node:fs/promises";
import { fleetFilter, isDeviceId, topicsFor } from "../protocol/topics.js";
import {
  CliError,
  parseCommandArgs,
  positiveInteger,
  systemErrorText,
  usageError,
  type CliIo,
  type Command,
} from "./io.js";
import { errorMessage } from "../util/errors.js";
import { collectCommand, royaltiesCommand, settleCommand } from "./fleet-ledger.js";
import { rolloutCommand } from "./fleet-rollout.js";
import { computeCommand } from "./fleet-compute.js";

const USAGE = `Usage: sharenode fleet keygen [--key-dir DIR]
       sharenode fleet watch --broker URL [--username U --password P] [--duration SECONDS]
       sharenode fleet send DEVICE COMMAND [--args JSON] --broker URL [--device-key HEX] [--key-dir DIR] [--timeout SECONDS]
       sharenode fleet task DEVICE fetch --object ID --length N --source URL... [--order FILE...] [--outboard URL]
                            [--pin] [--deadline SECONDS] --broker URL
       sharenode fleet task DEVICE drop --object ID --broker URL
       sharenode fleet task DEVICE list --broker URL
       sharenode fleet order --device ID --object ID --client-key HEX --max-bytes N --rights R --ttl SECONDS
                             [--serial S] [--key-dir DIR]
       sharenode fleet settle DEVICE --window MS --broker URL [--prices SERVED,HOUR,PROOF[,CPUMS]]
                              [--assignments FILE] [--challenges FILE] [--compute FILE] [--send] [--key-dir DIR]
       sharenode fleet settle --from FILE [--window MS] [--prices ...] [--assignments FILE] [--challenges FILE]
                              [--compute FILE] [--send --broker URL]
       sharenode fleet collect --out FILE --broker URL [--count N] [--duration SECONDS]
       sharenode fleet royalties --collected FILE [--from MS] [--to MS] [--csv]
       sharenode fleet rollout --release MANIFEST --source URL... --percent P [--max-failures F] [--batch N]
                               [--discover SECONDS] [--wait SECONDS] [--release-key HEX] --broker URL
       sharenode fleet compute submit MODULE.wasm INPUT --source URL... [--replicas K] [--quorum M]
                               [--devices ID,...] [--task-id ID] [--cpu-ms N] [--wall-ms N] [--memory-mb N]
                               [--output-kb N] [--wait SECONDS] [--verdicts FILE] [--output FILE] --broker URL

keygen   create (first time) the fleet's Ed25519 command key in DIR and print its public key: put it in the
         devices' config (link.fleetPublicKey, or SHARENODE_FLEET_KEY)
watch    a live table of the devices seen on the broker: online, last seen, key metrics, outbox depth, gaps
send     sign COMMAND (ping, status, config.get, log.tail, store.challenge) for DEVICE, send it, and print the
         device's reply once its signature verifies (the device key comes from --device-key, or from the
         device's retained state record)
task     send DEVICE a task (signed like send: task.fetch, task.drop, task.list) and print its verified reply.
         fetch: get object ID (64 hex) of N bytes from the sources (http(s) origins or boxes'
         /v1/objects/ID, --source once per source), verify it as it arrives (the outboard from --outboard, an
         origin's .obao or a box's /outboard) and keep it (--pin: never evicted). drop: forget the object.
         list: the device's tasks. Takes send's --device-key, --key-dir, --timeout and connection options
order    sign an order with the fleet key: device ID may serve object ID (64 hex) to the client whose key is HEX
         ('sharenode client keygen' prints it), up to N bytes in all, for SECONDS from now; rights holder R
         (1..128 of A-Z a-z 0-9 . _ : / -). Prints the order's token, ready for 'sharenode get --order'
settle   settle DEVICE's statement of the window that starts at MS (epoch ms): its records come from the device
         (ledger.records, page by page), every line is checked (orders, client receipts, assignments, the
         fleet's challenge outcomes) and priced (--prices, base units per byte served, per byte-hour held, per
         proof; default 1,1,1), and the settlement is printed as a JSON line, signed by the fleet key; --send
         also sends it to the device (ledger.settlement), which keeps it for its owner. --from FILE settles
         every statement a 'fleet collect' kept (one window with --window), all devices at once: the chain of
         each device's statements and an order claimed on two devices are checked across them
collect  keep every ledger.statement the boxes send, checked under each box's key (its retained state record),
         with its records (asked with ledger.records), as JSON lines appended to FILE; until --count
         statements, --duration seconds, or Ctrl-C
rollout  offer a release (MANIFEST, or the directory 'sharenode release pack' wrote, served at --source) to the
         online devices of the cohort: those whose hash(device id, build) falls below P percent (the same
         devices stay in as P grows), --batch at a time (default 10), following their ota.* events; halts when
         more than F percent of the cohort rolled back or failed (default 10). Prints a status table; exit 0 when
         every online device of the cohort ended on the release
compute  submit: one compute task (a WebAssembly module, agent/compute/README.md, and its input file) to K
         online devices (default 3), the module (and an input over 64 KiB) fetched by the devices from
         --source URL/objects/<BLAKE3 id>; each device's signed result is checked, and the output is accepted
         when M of them agree (default a majority). Prints a table, the agreed output id and the devices that
         disagree; --verdicts FILE keeps the verdict (a JSON array) for 'fleet settle --compute FILE'; --output
         FILE writes the agreed output. Exit 0 when accepted, 1 otherwise
royalties  per rightsId: bytes served in the windows starting in [--from, --to) (epoch ms), the devices, the
         orders, and each order's latest client receipt as evidence (verified under the fleet key); JSON, or a
         CSV summary for people

Options:
  --broker URL       mqtt:// mqtts:// ws:// wss:// (or SHARENODE_BROKER)
  --username U, --password P
  --mqtt-version 5|4 MQTT 5 (default) or 3.1.1 (or SHARENODE_MQTT_VERSION)
  --key-dir DIR      where the fleet key lives (default ~/.config/sharenode-fleet)
  --args JSON        the command's arguments, a JSON object (default {})
  --device-key HEX   the device's public key (64 hex digits; 'sharenode store status' prints it)
  --timeout S        how long send waits for the reply (default 15)
  --duration S       watch for S seconds, print the table and exit (default: until Ctrl-C)
  --object ID        the object a task is about (64 lowercase hex digits)
  --length N         the object's length in bytes (task fetch)
  --source URL       where to fetch from (task fetch; once per source, at least one)
  --outboard URL     where the object's outboard is (task fetch)
  --pin              keep the fetched object from eviction (task fetch)
  --deadline S       the device gives the fetch up S seconds from now (task fetch)
  --order FILE       boxes as sources (task fetch): an order file as 'sharenode get' reads it ('BOX-URL TOKEN'
                     lines); each box's /v1/objects/ID becomes a source with its order (and its /outboard the
                     outboard, unless --outboard is given)
  --window MS        the window to settle: its start in epoch milliseconds (settle)
  --prices A,B,C[,D] base units per byte served, per byte-hour held, per proof, per CPU ms of compute (settle;
                     default 1,1,1,0)
  --assignments FILE a JSON object: device id -> the object ids assigned to it (settle; default none)
  --challenges FILE  a JSON array of the fleet's challenge outcomes {deviceId, objectId, nonce, at, ok} (settle)
  --compute FILE     the verdicts 'fleet compute submit --verdicts FILE' kept (settle): a compute line is paid only
                     when its task's quorum agreed with its output (per CPU ms: --prices' fourth number, default 0)
  --send             send the signed settlement to the device (settle)
  --from FILE | MS   settle: a file 'fleet collect' wrote; royalties: the first window's start (epoch ms)
  --to MS            royalties: windows starting before this (epoch ms)
  --out FILE         where fleet collect appends (JSON lines, fsynced)
  --count N          collect N statements, then exit
  --collected FILE   what fleet collect wrote (royalties)
  --csv              a CSV summary (royalties)
  --release M        rollout: the release's manifest.json, or its directory
  --percent P        rollout: the cohort's share of the fleet (0..100)
  --max-failures F   rollout: halt past F percent of the cohort rolled back or failed (default 10)
  --batch N          rollout: devices offered at once (default 10)
  --discover S       rollout: seconds to collect the devices' retained state records first (default 3)
  --wait S           rollout: give up on devices still updating after S seconds (default 1800); compute submit:
                     give up on the devices still out after S seconds (default 600)
  --release-key HEX  rollout: check the manifest's signature first
  --replicas K       compute submit: devices the task goes to (default 3)
  --quorum M         compute submit: devices that must agree (default a majority of K)
  --devices ID,...   compute submit: these devices rather than K chosen among those online
  --task-id ID       compute submit: the task's id (1..64 of A-Z a-z 0-9 . _ -; default: 24 random hex)
  --cpu-ms N, --wall-ms N, --memory-mb N, --output-kb N   compute submit: the task's limits (the devices' caps apply)
  --verdicts FILE    compute submit: add the verdict to FILE (a JSON array), for 'fleet settle --compute'
  --output FILE      compute submit: write the agreed output there
  --serial S         the order's serial, unique in the fleet (1..64 of A-Z a-z 0-9 . _ -; default: 24 random hex)
  -h, --help         show this help
`;

export const fleetCommand: Command = {
  summary: "watch devices and send them signed commands",
  usage: USAGE,
  run: runFleet,
};

export const CONNECTION = {
  broker: { type: "string" },
  username: { type: "string" },
  password: { type: "string" },
  "mqtt-version": { type: "string" },
} as const;

/** What a fleet command knows of a device from its retained state records. */
export interface KnownDevice {
  online: boolean;
  /** The release it runs; null from older agents (a last will carries none: the last known stays). */
  build: number | null;
  /** Its public key, hex (replies and results are verified under it). */
  pub: string | undefined;
}

/** Folds one state record into `devices` (fleet rollout, fleet compute submit); a record that does not parse is skipped. */
export function noteDeviceState(devices: Map<string, KnownDevice>, deviceId: string, payload: Uint8Array): void {
  const parsed = parseState(payload);
  if (!parsed.ok) return;
  const raw = JSON.parse(Buffer.from(payload).toString()) as { pub?: unknown };
  const before = devices.get(deviceId);
  devices.set(deviceId, {
    online: parsed.value.state === "online",
    build: parsed.value.build ?? before?.build ?? null,
    pub: typeof raw.pub === "string" ? raw.pub : before?.pub,
  });
}

export function defaultKeyDir(): string {
  return join(homedir(), ".config", "sharenode-fleet");
}

export function seconds(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+(\.\d+)?$/.test(value) || Number(value) <= 0)
    throw usageError(`fleet: --${name} must be a positive number of seconds, got '${value}'`);
  return Number(value);
}

function mqttVersion(values: { "mqtt-version"?: string }, io: CliIo): 5 | 4 {
  const v = values["mqtt-version"] ?? io.env.SHARENODE_MQTT_VERSION ?? "5";
  if (v !== "5" && v !== "4") throw usageError(`fleet: --mqtt-version must be 5 or 4 (MQTT 3.1.1), got '${v}'`);
  return v === "5" ? 5 : 4;
}

export async function connect(
  values: { broker?: string; username?: string; password?: string; "mqtt-version"?: string },
  io: CliIo,
): Promise<FleetConnection> {
  const url = values.broker ?? io.env.SHARENODE_BROKER;
  if (!url) throw usageError("fleet: no broker: pass --broker URL or set SHARENODE_BROKER");
  const protocolVersion = mqttVersion(values, io);
  try {
    return await FleetConnection.connect({
      url,
      username: values.username,
      password: values.password,
      protocolVersion,
    });
  } catch (err) {
    throw new CliError(`fleet: ${errorMessage(err)}`);
  }
}

async function runFleet(args: string[], io: CliIo): Promise<number> {
  const [action, ...rest] = args;
  switch (action) {
    case "keygen": {
      const { values } = parseCommandArgs("fleet keygen", rest, { "key-dir": { type: "string" } }, false);
      const key = await loadOrCreateFleetKey(join(values["key-dir"] ?? defaultKeyDir(), "device-key.pem")).catch(
        (err: Error) => {
          throw new CliError(`fleet keygen: ${err.message}`);
        },
      );
      io.stdout.write(`${key.publicKeyHex}\n`);
      return 0;
    }
    case "watch":
      return watch(rest, io);
    case "send":
      return send(rest, io);
    case "task":
      return task(rest, io);
    case "order":
      return order(rest, io);
    case "settle":
      return settleCommand(rest, io);
    case "collect":
      return collectCommand(rest, io);
    case "royalties":
      return royaltiesCommand(rest, io);
    case "rollout":
      return rolloutCommand(rest, io);
    case "compute":
      return computeCommand(rest, io);
    case undefined:
      throw usageError(
        "fleet: missing action: keygen, watch, send, task, order, settle, collect, royalties or rollout (see 'sharenode fleet --help')",
      );
    default:
      throw usageError(
        `fleet: unknown action '${action}' (expected keygen, watch, send, task, order, settle, collect, royalties or rollout)`,
      );
  }
}

function renderTable(rows: DeviceRow[], now: number): string {
  const header = ["device", "online", "seen", "cpu%", "load1", "mem MB", "temp", "objects", "outbox", "gaps"];
  const fmt = (v: number | undefined, digits = 0) => (v === undefined ? "-" : v.toFixed(digits));
  const lines = rows.map((r) => [
    r.deviceId,
    r.online ? "yes" : "no",
    `${Math.max(0, Math.round((now - r.lastSeen) / 1000))}s`,
    fmt(r.metrics.cpu_pct, 1),
    fmt(r.metrics.load1, 2),
    fmt(r.metrics.mem_available_bytes === undefined ? undefined : r.metrics.mem_available_bytes / 1e6),
    fmt(r.metrics.temp_c, 1),
    fmt(r.metrics.store_objects),
    r.outboxDepth === null ? "-" : String(r.outboxDepth),
    String(r.gaps.events),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const row = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join("  ")
      .trimEnd();
  return [row(header), ...lines.map(row)].join("\n") + "\n" + (rows.length === 0 ? "(no devices seen yet)\n" : "");
}

async function watch(args: string[], io: CliIo): Promise<number> {
  const { values } = parseCommandArgs("fleet watch", args, { ...CONNECTION, duration: { type: "string" } }, false);
  const duration = values.duration === undefined ? undefined : seconds("duration", values.duration, 0);
  const conn = await connect(values, io);
  const table = new DeviceTable();
  conn.onMessage((m) => table.apply(m.topic, m.payload));
  await conn.subscribe([fleetFilter("state"), fleetFilter("telemetry"), fleetFilter("events")]);
  const tty = (io.stdout as { isTTY?: boolean }).isTTY === true;
  const redraw = setInterval(() => {
    // Clear the screen and draw from the top: a table that updates in place.
    if (tty) io.stdout.write("\x1b[H\x1b[2J" + renderTable(table.rows(), Date.now()));
  }, 1000);
  await new Promise<void>((resolve) => {
    const done = () => resolve();
    process.once("SIGINT", done);
    process.once("SIGTERM", done);
    if (duration !== undefined) setTimeout(done, duration * 1000);
  });
  clearInterval(redraw);
  await conn.close();
  io.stdout.write(renderTable(table.rows(), Date.now()));
  return 0;
}

async function send(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs(
    "fleet send",
    args,
    {
      ...CONNECTION,
      args: { type: "string" },
      "device-key": { type: "string" },
      "key-dir": { type: "string" },
      timeout: { type: "string" },
    },
    true,
  );
  if (positionals.length !== 2)
    throw usageError(
      `fleet send: expected DEVICE and COMMAND, got ${positionals.length} argument${positionals.length === 1 ? "" : "s"}`,
    );
  const [deviceId, cmd] = positionals as [string, string];
  if (!isDeviceId(deviceId))
    throw usageError(`fleet send: DEVICE must be a device id (32 lowercase hex digits), got '${deviceId}'`);
  let cmdArgs: Record<string, unknown> = {};
  if (values.args !== undefined) {
    try {
      cmdArgs = JSON.parse(values.args) as Record<string, unknown>;
    } catch {
      throw usageError("fleet send: --args is not JSON");
    }
    if (typeof cmdArgs !== "object" || cmdArgs === null || Array.isArray(cmdArgs))
      throw usageError("fleet send: --args must be a JSON object");
  }
  return deliver("fleet send", deviceId, cmd, cmdArgs, values, io);
}

export interface DeliverOptions {
  broker?: string;
  username?: string;
  password?: string;
  "mqtt-version"?: string;
  "device-key"?: string;
  "key-dir"?: string;
  timeout?: string;
}

/**
 * Signs `cmd` for `deviceId` with the fleet key, publishes it, waits for the device's verified reply and prints
 * its result (exit 0) or its refusal (one line, exit 1). `label` prefixes every message ("fleet send").
 */
async function deliver(
  label: string,
  deviceId: string,
  cmd: string,
  cmdArgs: Record<string, unknown>,
  values: DeliverOptions,
  io: CliIo,
): Promise<number> {
  const session = await deviceSession(label, deviceId, values, io);
  try {
    const reply = await session.ask(cmd, cmdArgs);
    if (!reply.ok) {
      io.stderr.write(
        `sharenode: ${label}: ${cmd} refused by the device: ${reply.error.code}: ${reply.error.message}\n`,
      );
      return 1;
    }
    io.stdout.write(JSON.stringify(reply.result, null, 2) + "\n");
    return 0;
  } finally {
    await session.close();
  }
}

/** A connection to the broker for signed commands to one device, and its verified replies. */
export interface DeviceSession {
  deviceKey: Uint8Array;
  /** Signs and sends one command; resolves with the device's verified reply (throws past the timeout). */
  ask(cmd: string, args: Record<string, unknown>): Promise<Reply>;
  close(): Promise<void>;
}

export async function deviceSession(
  label: string,
  deviceId: string,
  values: DeliverOptions,
  io: CliIo,
): Promise<DeviceSession> {
  const timeout = seconds("timeout", values.timeout, 15);
  let deviceKey: Uint8Array | undefined;
  if (values["device-key"] !== undefined) {
    try {
      deviceKey = publicKeyFromHex(values["device-key"]);
    } catch (err) {
      throw usageError(`${label}: --device-key: ${errorMessage(err)}`);
    }
    if (deviceIdOf(deviceKey) !== deviceId)
      throw usageError(`${label}: --device-key is not the key of device ${deviceId}`);
  }
  const key = await loadOrCreateFleetKey(join(values["key-dir"] ?? defaultKeyDir(), "device-key.pem")).catch(
    (err: Error) => {
      throw new CliError(`${label}: ${err.message}`);
    },
  );
  const topics = topicsFor(deviceId);
  const conn = await connect(values, io);
  try {
    const v5 = mqttVersion(values, io) === 5;
    // MQTT 3.1.1 has no response topic: the device answers on its reply topic, and the nonce pairs the reply.
    const responseTopic = v5 ? topics.replyTo(randomBytes(8).toString("hex")) : topics.reply;
    const replies: Buffer[] = [];
    const states: Buffer[] = [];
    let wake: (() => void) | undefined;
    conn.onMessage((m) => {
      if (m.topic === responseTopic) replies.push(m.payload);
      else if (m.topic === topics.state) states.push(m.payload);
      wake?.();
    });
    await conn.subscribe(deviceKey ? [responseTopic] : [responseTopic, topics.state]);
    const waitFor = async (ready: () => boolean): Promise<boolean> => {
      const deadline = Date.now() + timeout * 1000;
      while (!ready()) {
        const left = deadline - Date.now();
        if (left <= 0) return false;
        await new Promise<void>((resolve) => {
          wake = resolve;
          setTimeout(resolve, Math.min(left, 250));
        });
      }
      return true;
    };
    if (!deviceKey) {
      // The retained state record carries the device's public key; its id is the key's hash, so the record
      // cannot name a key that is not the device's.
      await waitFor(() => states.length > 0);
      const pub =
        states.length > 0 ? (JSON.parse(states[states.length - 1]!.toString()) as { pub?: unknown }).pub : undefined;
      if (typeof pub !== "string")
        throw usageError(`${label}: no public key for ${deviceId} in its retained state; pass --device-key`);
      deviceKey = publicKeyFromHex(pub);
      if (deviceIdOf(deviceKey) !== deviceId)
        throw new CliError(`${label}: the state record of ${deviceId} names a key that is not its own`);
    }
    const devicePublicKey = deviceKey;
    return {
      deviceKey: devicePublicKey,
      close: () => conn.close(),
      ask: async (cmd, cmdArgs) => {
        const nonce = randomBytes(16).toString("hex");
        const correlationData = randomBytes(16);
        const payload = signCommand(
          { cmd, deviceId, args: cmdArgs, nonce, exp: Date.now() + Math.max(60_000, timeout * 1000) },
          key,
        );
        await conn.publish(topics.cmd(cmd), payload, v5 ? { responseTopic, correlationData } : {});
        // Only a reply that verifies and carries our nonce answers us (a refused, unauthenticated command gets a
        // reply with a null nonce: accepted too, as nothing else could have caused it on a private response topic).
        let reply: Reply | undefined;
        const answered = () => {
          while (replies.length > 0) {
            const opened = openReply(replies.shift()!, { devicePublicKey, deviceId });
            if (opened.ok && (opened.reply.nonce === nonce || (v5 && opened.reply.nonce === null)))
              reply = opened.reply;
          }
          return reply !== undefined;
        };
        if (!(await waitFor(answered)) || !reply)
          throw new CliError(`${label}: no verified reply from ${deviceId} within ${timeout} s`);
        return reply;
      },
    };
  } catch (err) {
    await conn.close();
    throw err;
  }
}

const HEX_64 = /^[0-9a-f]{64}$/;
const RIGHTS = /^[A-Za-z0-9._:/-]{1,128}$/;

async function order(args: string[], io: CliIo): Promise<number> {
  const { values } = parseCommandArgs(
    "fleet order",
    args,
    {
      device: { type: "string" },
      object: { type: "string" },
      "client-key": { type: "string" },
      "max-bytes": { type: "string" },
      rights: { type: "string" },
      ttl: { type: "string" },
      serial: { type: "string" },
      "key-dir": { type: "string" },
    },
    false,
  );
  const required = (name: "device" | "object" | "client-key" | "rights"): string => {
    const v = values[name];
    if (v === undefined) throw usageError(`fleet order: --${name} is required`);
    return v;
  };
  const deviceId = required("device");
  if (!isDeviceId(deviceId))
    throw usageError(`fleet order: --device must be a device id (32 lowercase hex digits), got '${deviceId}'`);
  const objectId = required("object");
  if (!HEX_64.test(objectId))
    throw usageError(`fleet order: --object must be an object id (64 lowercase hex digits), got '${objectId}'`);
  const clientKey = required("client-key");
  if (!HEX_64.test(clientKey))
    throw usageError(
      `fleet order: --client-key must be the client's public key (64 lowercase hex digits, 'sharenode client keygen' prints it), got '${clientKey}'`,
    );
  const maxBytes = positiveInteger("fleet order", "max-bytes", values["max-bytes"]);
  const rightsId = required("rights");
  if (!RIGHTS.test(rightsId))
    throw usageError(`fleet order: --rights must be 1..128 characters of A-Z a-z 0-9 . _ : / -, got '${rightsId}'`);
  const ttl = positiveInteger("fleet order", "ttl", values.ttl);
  const expiresAt = Date.now() + ttl * 1000;
  if (!Number.isSafeInteger(expiresAt)) throw usageError(`fleet order: --ttl ${ttl} seconds is too far in the future`);
  const serial = values.serial ?? randomBytes(12).toString("hex");
  if (!SERIAL.test(serial))
    throw usageError(`fleet order: --serial must be 1..64 characters of A-Z a-z 0-9 . _ -, got '${serial}'`);
  const key = await loadOrCreateFleetKey(join(values["key-dir"] ?? defaultKeyDir(), "device-key.pem")).catch(
    (err: Error) => {
      throw new CliError(`fleet order: ${err.message}`);
    },
  );
  io.stdout.write(signOrder({ serial, deviceId, objectId, clientKey, maxBytes, expiresAt, rightsId }, key) + "\n");
  return 0;
}

/** Sources and outboards: absolute http(s) URLs (what the device's fetcher takes), checked here so a typo fails now. */
function httpUrl(command: string, name: string, value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw usageError(`${command}: --${name} must be an http:// or https:// URL, got '${value}'`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    throw usageError(`${command}: --${name} must be an http:// or https:// URL, got '${value}'`);
  return value;
}

async function task(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs(
    "fleet task",
    args,
    {
      ...CONNECTION,
      "device-key": { type: "string" },
      "key-dir": { type: "string" },
      timeout: { type: "string" },
      object: { type: "string" },
      length: { type: "string" },
      source: { type: "string", multiple: true },
      outboard: { type: "string" },
      pin: { type: "boolean" },
      deadline: { type: "string" },
      order: { type: "string", multiple: true },
    },
    true,
  );
  if (positionals.length !== 2)
    throw usageError(
      `fleet task: expected DEVICE and fetch, drop or list, got ${positionals.length} argument${positionals.length === 1 ? "" : "s"}`,
    );
  const [deviceId, kind] = positionals as [string, string];
  if (!isDeviceId(deviceId))
    throw usageError(`fleet task: DEVICE must be a device id (32 lowercase hex digits), got '${deviceId}'`);
  const label = `fleet task ${kind}`;
  const objectId = (): string => {
    const id = values.object;
    if (id === undefined) throw usageError(`${label}: --object is required`);
    if (!HEX_64.test(id))
      throw usageError(`${label}: --object must be an object id (64 lowercase hex digits), got '${id}'`);
    return id;
  };
  /** Options that belong to fetch only are refused elsewhere rather than silently ignored. */
  const only = (allowed: string[]): void => {
    for (const name of ["object", "length", "source", "outboard", "pin", "deadline", "order"] as const) {
      if (values[name] !== undefined && !allowed.includes(name))
        throw usageError(`${label}: --${name} does not apply to ${kind}`);
    }
  };
  let cmdArgs: Record<string, unknown>;
  switch (kind) {
    case "fetch": {
      const id = objectId();
      // An empty object is an object too (its id is BLAKE3 of nothing).
      const length = values.length === "0" ? 0 : positiveInteger(label, "length", values.length);
      const sources = (values.source ?? []).map((u) => httpUrl(label, "source", u));
      // Boxes as sources: each order file line `BASE TOKEN` adds the box's object URL, with its token to show it
      // (and its /outboard, when no --outboard is given).
      const orders: Record<string, string> = {};
      let outboard = values.outboard === undefined ? undefined : httpUrl(label, "outboard", values.outboard);
      for (const file of values.order ?? []) {
        let text: string;
        try {
          text = await readFile(file, "utf8");
        } catch (err) {
          throw usageError(`${label}: --order ${file}: ${systemErrorText(err) ?? errorMessage(err)}`);
        }
        let boxes: BoxOrder[];
        try {
          boxes = parseOrderFile(text, file, undefined);
        } catch (err) {
          throw usageError(`${label}: ${errorMessage(err)}`);
        }
        for (const { url, token } of boxes) {
          const source = `${url}/v1/objects/${id}`;
          sources.push(source);
          orders[source] = token;
          if (outboard === undefined) {
            outboard = `${source}/outboard`;
            orders[outboard] = token;
          }
        }
      }
      if (sources.length === 0) throw usageError(`${label}: at least one --source URL or --order FILE is required`);
      cmdArgs = { objectId: id, length, sources };
      if (outboard !== undefined) cmdArgs.outboard = outboard;
      if (values.pin) cmdArgs.pin = true;
      if (values.deadline !== undefined)
        cmdArgs.deadline = Date.now() + positiveInteger(label, "deadline", values.deadline) * 1000;
      if (Object.keys(orders).length > 0) cmdArgs.orders = orders;
      break;
    }
    case "drop":
      only(["object"]);
      cmdArgs = { objectId: objectId() };
      break;
    case "list":
      only([]);
      cmdArgs = {};
      break;
    default:
      throw usageError(`fleet task: unknown task '${kind}' (expected fetch, drop or list)`);
  }
  return deliver(label, deviceId, `task.${kind}`, cmdArgs, values, io);
}
