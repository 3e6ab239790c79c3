// `sharenode store ...` (the object store on the data disk) and `sharenode verify-response` (the consumer side
// of a storage proof).
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { loadOrCreateDeviceIdentity, publicKeyFromHex } from "../identity/device-key.js";
import { answerChallenge, ChallengeError, parseChallenge, verifyStorageResponse } from "../protocol/storage-proof.js";
import { checkDataDisk } from "../store/disk-marker.js";
import { defaultReserveBytes, ObjectStore, StoreError, type StoreConfig } from "../store/object-store.js";
import { Scrubber } from "../store/scrub.js";
import { CliError, parseCommandArgs, systemErrorText, usageError, type CliIo, type Command } from "./io.js";
import { parseQuotaText } from "../config/config.js";
import { errorMessage } from "../util/errors.js";

const STORE_USAGE = `Usage: sharenode store <action> [options]

Actions:
  add FILE|URL [--id HEX] [--pin]     store an object (a local file or an http(s) URL); with --id, content
                                      whose BLAKE3 hash differs is rejected and nothing is kept
  ls [--json]                         list stored objects: id, length, pinned, added
  rm ID                               delete an object
  pin ID | unpin ID                   pinned objects are never evicted
  status [--json]                     objects, used bytes, quota, free space
  scrub [--rate BYTES_PER_SECOND]     re-verify every object (default 8 MB/s); corrupt ones are quarantined
  challenge ID --nonce HEX --count K  answer a storage challenge: prints the signed response as JSON

Options:
  --data DIR             the data directory on the data disk (or SHARENODE_DATA)
  --state DIR            the agent's state directory, holding the device key (or SHARENODE_STATE;
                         default /var/lib/sharenode as root, else ~/.local/state/sharenode)
  --quota BYTES|PCT%     most the store may use (default 100% of what the disk allows)
  --reserve BYTES        free space never used (default 5% of the disk, at most 1 GiB)
  --allow-system-disk    store on the root filesystem, eMMC/SD or tmpfs (refused otherwise)
  -h, --help             show this help

Exit status: 0 on success, 1 on failure (scrub: corrupt or missing objects found), 2 on bad usage.
`;

const VERIFY_USAGE = `Usage: sharenode verify-response --pubkey HEX --id HEX --len BYTES --nonce HEX --count K < RESPONSE

Checks a storage-proof response (JSON, from 'sharenode store challenge') against what the verifier knows on
its own: the device's public key, the object's id and length, and the challenge's nonce and count.
Exit 0 when it is valid, 1 when it is not (the reason on stderr), 2 on bad usage.
`;

const COMMON_OPTIONS = {
  data: { type: "string" },
  state: { type: "string" },
  quota: { type: "string" },
  reserve: { type: "string" },
  "allow-system-disk": { type: "boolean" },
} as const;

export const storeCommand: Command = {
  summary: "keep content objects on the data disk and prove it",
  usage: STORE_USAGE,
  run: runStore,
};
export const verifyResponseCommand: Command = {
  summary: "verify a signed storage-proof response",
  usage: VERIFY_USAGE,
  run: runVerifyResponse,
};

interface Opened {
  store: ObjectStore;
  identity: Awaited<ReturnType<typeof loadOrCreateDeviceIdentity>>;
}

/** The agent's state directory when --state is not given: SHARENODE_STATE, else where the daemon keeps it. */
export function defaultStateDir(env: CliIo["env"]): string {
  if (env.SHARENODE_STATE) return env.SHARENODE_STATE;
  return process.getuid?.() === 0 ? "/var/lib/sharenode" : join(homedir(), ".local/state/sharenode");
}

function bytesOption(name: string, value: string): number {
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value)))
    throw usageError(`store: --${name} must be a number of bytes, got '${value}'`);
  return Number(value);
}

function quotaOption(value: string | undefined): StoreConfig["quota"] {
  if (value === undefined) return { share: 1 };
  // The config's rule (store.quota), so the CLI and the daemon accept the same quotas.
  const parsed = parseQuotaText(value);
  if ("problem" in parsed) throw usageError(`store: --quota ${parsed.problem}`);
  return parsed.quota;
}

/** Checks the data disk, then opens the store; every refusal is one line. */
async function openStore(values: Record<string, string | boolean | undefined>, io: CliIo): Promise<Opened> {
  const dataDir = (values.data as string | undefined) ?? io.env.SHARENODE_DATA;
  if (!dataDir) throw usageError("store: no data directory: pass --data DIR or set SHARENODE_DATA");
  const stateDir = (values.state as string | undefined) ?? defaultStateDir(io.env);
  const identity = await loadOrCreateDeviceIdentity(stateDir).catch((err: Error) => {
    throw new CliError(`store: device key: ${err.message}`);
  });
  const check = await checkDataDisk({
    dataDir,
    stateDir,
    nodeId: identity.deviceId,
    allowSystemDisk: values["allow-system-disk"] === true,
  });
  if (!check.ok) {
    const hint = check.code === "system-disk" ? " (on the command line: --allow-system-disk)" : "";
    throw new CliError(`store: ${check.reason}${hint}`);
  }
  const fsSize = check.filesystem.size ?? 0;
  const reserveBytes =
    values.reserve !== undefined ? bytesOption("reserve", values.reserve as string) : defaultReserveBytes(fsSize);
  const store = new ObjectStore({
    dataDir: check.dataDir,
    quota: quotaOption(values.quota as string | undefined),
    reserveBytes,
  });
  store.on("recovered", (e) => io.stderr.write(`sharenode: store: ${e.message}\n`));
  try {
    await store.start();
  } catch (err) {
    await store.stop().catch(() => {});
    if (err instanceof StoreError) throw new CliError(`store: ${err.message}`);
    throw err;
  }
  return { store, identity };
}

async function withStore<T>(
  values: Record<string, string | boolean | undefined>,
  io: CliIo,
  fn: (o: Opened) => Promise<T>,
): Promise<T> {
  const opened = await openStore(values, io);
  try {
    return await fn(opened);
  } catch (err) {
    if (err instanceof StoreError) throw new CliError(`store: ${err.message}`);
    // A challenge the object cannot have (more chunks than it has) is the caller's mistake.
    if (err instanceof ChallengeError) throw usageError(`store: ${err.message}`);
    throw err;
  } finally {
    await opened.store.stop();
  }
}

async function runStore(args: string[], io: CliIo): Promise<number> {
  const [action, ...rest] = args;
  const parse = (extra: Record<string, { type: "string" | "boolean" }>, positionals: number) => {
    const { values, positionals: pos } = parseCommandArgs(
      `store ${action}`,
      rest,
      { ...COMMON_OPTIONS, ...extra },
      positionals > 0,
    );
    if (pos.length !== positionals) {
      throw usageError(
        `store ${action}: expected ${positionals === 0 ? "no arguments" : positionals === 1 ? "one argument" : `${positionals} arguments`}, got ${pos.length}`,
      );
    }
    return { values: values as Record<string, string | boolean | undefined>, pos };
  };
  switch (action) {
    case "add": {
      const { values, pos } = parse({ id: { type: "string" }, pin: { type: "boolean" } }, 1);
      const source = pos[0]!;
      const expectedId = values.id as string | undefined;
      if (expectedId !== undefined && !/^[0-9a-f]{64}$/.test(expectedId))
        throw usageError(`store add: --id must be 64 lowercase hex digits, got '${expectedId}'`);
      return withStore(values, io, async ({ store }) => {
        const { stream, declaredLength } = await openSource(source);
        const { object, created } = await store.ingest(stream, {
          expectedId,
          declaredLength,
          pin: values.pin === true,
        });
        io.stdout.write(`${object.id}  ${object.length}  ${created ? "added" : "already stored"}\n`);
        return 0;
      });
    }
    case "ls": {
      const { values } = parse({ json: { type: "boolean" } }, 0);
      return withStore(values, io, async ({ store }) => {
        const objects = store.list();
        if (values.json) io.stdout.write(JSON.stringify(objects) + "\n");
        else
          for (const o of objects)
            io.stdout.write(
              `${o.id}  ${o.length}  ${o.pinned ? "pinned" : "-"}  ${new Date(o.addedAt).toISOString()}\n`,
            );
        return 0;
      });
    }
    case "rm":
    case "pin":
    case "unpin": {
      const { values, pos } = parse({}, 1);
      if (!/^[0-9a-f]{64}$/.test(pos[0]!))
        throw usageError(`store ${action}: object id must be 64 lowercase hex digits, got '${pos[0]}'`);
      return withStore(values, io, async ({ store }) => {
        if (action === "rm") await store.delete(pos[0]!);
        else await store.pin(pos[0]!, action === "pin");
        return 0;
      });
    }
    case "status": {
      const { values } = parse({ json: { type: "boolean" } }, 0);
      return withStore(values, io, async ({ store, identity }) => {
        const status = { deviceId: identity.deviceId, publicKey: identity.publicKeyHex, ...(await store.status()) };
        if (values.json) io.stdout.write(JSON.stringify(status) + "\n");
        else for (const [k, v] of Object.entries(status)) io.stdout.write(`${k}: ${v}\n`);
        return 0;
      });
    }
    case "scrub": {
      const { values } = parse({ rate: { type: "string" } }, 0);
      const rate = values.rate !== undefined ? bytesOption("rate", values.rate as string) : 8_000_000;
      if (rate === 0) throw usageError("store scrub: --rate must be positive");
      return withStore(values, io, async ({ store }) => {
        const report = await new Scrubber(store, { bytesPerSecond: rate }).runOnce();
        io.stdout.write(
          `checked ${report.checked} objects, ${report.bytes} bytes in ${report.elapsedMs} ms; corrupt: ${report.corrupt.length}; missing: ${report.missing.length}\n`,
        );
        for (const id of report.corrupt) io.stdout.write(`corrupt ${id} (quarantined)\n`);
        for (const id of report.missing) io.stdout.write(`missing ${id}\n`);
        return report.corrupt.length + report.missing.length > 0 ? 1 : 0;
      });
    }
    case "challenge": {
      const { values, pos } = parse({ nonce: { type: "string" }, count: { type: "string" } }, 1);
      if (values.nonce === undefined) throw usageError("store challenge: missing --nonce");
      if (values.count === undefined) throw usageError("store challenge: missing --count");
      if (!/^\d+$/.test(values.count as string))
        throw usageError(`store challenge: --count must be a positive integer, got '${values.count}'`);
      let challenge;
      try {
        challenge = parseChallenge({ objectId: pos[0], nonce: values.nonce, count: Number(values.count) });
      } catch (err) {
        throw usageError(`store challenge: ${errorMessage(err)}`);
      }
      return withStore(values, io, async ({ store, identity }) => {
        const object = await store.openForProof(challenge.objectId);
        try {
          const response = await answerChallenge(challenge, object, identity, () => Date.now());
          io.stdout.write(JSON.stringify(response) + "\n");
        } finally {
          await object.close();
        }
        return 0;
      });
    }
    case undefined:
      throw usageError("store: missing action (see 'sharenode store --help')");
    default:
      throw usageError(`store: unknown action '${action}' (see 'sharenode store --help')`);
  }
}

/** A local file (its size declared) or an http(s) URL (Content-Length declared when the server sends it). */
async function openSource(source: string): Promise<{ stream: AsyncIterable<Uint8Array>; declaredLength?: number }> {
  if (/^https?:\/\//i.test(source)) {
    let response: Response;
    try {
      response = await fetch(source);
    } catch (err) {
      throw new CliError(`store add: ${source}: ${errorMessage((err as { cause?: unknown }).cause ?? err)}`);
    }
    if (!response.ok || !response.body)
      throw new CliError(`store add: ${source}: HTTP ${response.status} ${response.statusText}`);
    const header = response.headers.get("content-length");
    const declaredLength = header !== null && /^\d+$/.test(header) ? Number(header) : undefined;
    const body = response.body as unknown as AsyncIterable<Uint8Array>;
    // A connection dropped mid-body surfaces as undici's bare "terminated": say what happened.
    const stream = (async function* () {
      let received = 0;
      try {
        for await (const piece of body) {
          received += piece.length;
          yield piece;
        }
      } catch (err) {
        throw new StoreError(
          `download of ${source} was cut short after ${received} bytes (${errorMessage(err)})`,
          "truncated",
        );
      }
    })();
    return { stream, declaredLength };
  }
  let size: number;
  try {
    const st = await stat(source);
    if (st.isDirectory()) throw new CliError(`store add: ${source}: Is a directory`);
    size = st.size;
  } catch (err) {
    if (err instanceof CliError) throw err;
    throw new CliError(`store add: ${source}: ${systemErrorText(err) ?? errorMessage(err)}`);
  }
  return { stream: createReadStream(source, { highWaterMark: 256 * 1024 }), declaredLength: size };
}

async function readAll(stream: Readable): Promise<string> {
  const parts: Buffer[] = [];
  let total = 0;
  for await (const piece of stream as AsyncIterable<Buffer>) {
    total += piece.length;
    // A response for 64 challenged chunks is about 200 KB; anything far larger is not a response.
    if (total > 16 * 1024 * 1024)
      throw new CliError("verify-response: input is over 16 MiB: not a storage-proof response");
    parts.push(piece);
  }
  return Buffer.concat(parts).toString("utf8");
}

async function runVerifyResponse(args: string[], io: CliIo): Promise<number> {
  const cmd = "verify-response";
  const { values } = parseCommandArgs(
    cmd,
    args,
    {
      pubkey: { type: "string" },
      id: { type: "string" },
      len: { type: "string" },
      nonce: { type: "string" },
      count: { type: "string" },
    },
    false,
  );
  for (const name of ["pubkey", "id", "len", "nonce", "count"] as const) {
    if (values[name] === undefined) throw usageError(`${cmd}: missing --${name}`);
  }
  let publicKey: Uint8Array;
  try {
    publicKey = publicKeyFromHex(values.pubkey!);
  } catch (err) {
    throw usageError(`${cmd}: --pubkey: ${errorMessage(err)}`);
  }
  for (const name of ["len", "count"] as const) {
    if (!/^\d+$/.test(values[name]!) || !Number.isSafeInteger(Number(values[name])))
      throw usageError(`${cmd}: --${name} must be a non-negative integer, got '${values[name]}'`);
  }
  for (const name of ["id", "nonce"] as const) {
    if (!/^[0-9a-fA-F]{64}$/.test(values[name]!))
      throw usageError(`${cmd}: --${name} must be 64 hex digits, got '${values[name]}'`);
  }
  const text = await readAll(io.stdin);
  let response: unknown;
  try {
    response = JSON.parse(text);
  } catch {
    io.stderr.write(`sharenode: ${cmd}: invalid: the input is not JSON\n`);
    return 1;
  }
  let verdict;
  try {
    verdict = verifyStorageResponse(response, {
      publicKey,
      objectId: values.id!.toLowerCase(),
      length: Number(values.len),
      nonce: values.nonce!.toLowerCase(),
      count: Number(values.count),
    });
  } catch (err) {
    // Only the expectation itself can throw (a count the object cannot have): the caller's mistake.
    throw usageError(`${cmd}: ${errorMessage(err)}`);
  }
  if (!verdict.ok) {
    io.stderr.write(`sharenode: ${cmd}: invalid: ${verdict.reason}\n`);
    return 1;
  }
  io.stdout.write(
    `valid: ${verdict.response.count} chunk${verdict.response.count === 1 ? "" : "s"} of ${verdict.response.objectId} proven by device ${verdict.response.deviceId} in ${verdict.response.elapsedMs} ms\n`,
  );
  return 0;
}
