// The client and fleet-side commands of issue 11 through the built bundle (real processes, real files):
// `client keygen`, `fleet order`, `fleet task`. `sharenode get` has its own file, client-get.test.ts.
import { spawn, spawnSync } from "node:child_process";
import { createPrivateKey, createPublicKey } from "node:crypto";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import mqtt from "mqtt";
import { loadOrCreateDeviceIdentity, type DeviceIdentity } from "../agent/identity/device-key";
import { loadOrCreateFleetKey, openCommand, signReply, type Command } from "../agent/protocol/envelope";
import { openOrder, signOrder } from "../agent/protocol/order";
import { topicsFor } from "../agent/protocol/topics";
import { Broker } from "./helpers/mosquitto";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "dist/sharenode.js");

function sharenode(args: string[], env: NodeJS.ProcessEnv = process.env) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", input: "", timeout: 30_000, env });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Exactly one line on stderr, `sharenode: ...`, and no stack frame. */
function expectOneErrorLine(stderr: string, message: RegExp): void {
  expect(stderr.split("\n"), stderr).toHaveLength(2);
  expect(stderr.startsWith("sharenode: ")).toBe(true);
  expect(stderr).not.toMatch(/\bat .*:\d+:\d+/);
  expect(stderr).toMatch(message);
}

let work: string;
beforeAll(() => {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run \`npm run build\` first`);
  work = mkdtempSync(join(tmpdir(), "sharenode-client-cli-"));
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe("sharenode client keygen", () => {
  it("creates the key (0600 in a 0700 dir), prints its public key and only that, and keeps it", () => {
    const dir = join(work, "client-key");
    const first = sharenode(["client", "keygen", "--key-dir", dir]);
    expect(first.stderr).toBe("");
    expect(first.status).toBe(0);
    expect(first.stdout).toMatch(/^[0-9a-f]{64}\n$/);
    const file = join(dir, "device-key.pem");
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    // The printed key is the file's public half; the private half is not in the output.
    const pem = readFileSync(file, "utf8");
    const jwk = createPublicKey(createPrivateKey(pem)).export({ format: "jwk" });
    expect(Buffer.from(jwk.x!, "base64url").toString("hex")).toBe(first.stdout.trim());
    const d = createPrivateKey(pem).export({ format: "jwk" }).d!;
    expect(first.stdout).not.toContain(Buffer.from(d, "base64url").toString("hex"));
    expect(first.stdout).not.toContain("PRIVATE");
    // Second run: the same key, not a new one.
    expect(sharenode(["client", "keygen", "--key-dir", dir]).stdout).toBe(first.stdout);
  });

  it("defaults to ~/.config/sharenode-client", () => {
    const home = join(work, "home");
    const r = sharenode(["client", "keygen"], { ...process.env, HOME: home });
    expect(r.status).toBe(0);
    expect(existsSync(join(home, ".config", "sharenode-client", "device-key.pem"))).toBe(true);
  });

  it("refuses a key file others may read, a stray argument, an unknown action: one line each", () => {
    const dir = join(work, "open-key");
    expect(sharenode(["client", "keygen", "--key-dir", dir]).status).toBe(0);
    chmodSync(join(dir, "device-key.pem"), 0o644);
    const open = sharenode(["client", "keygen", "--key-dir", dir]);
    expect(open.status).toBe(1);
    expectOneErrorLine(open.stderr, /^sharenode: client keygen: client key: device key .* \(mode 0644\)/);
    const stray = sharenode(["client", "keygen", "extra"]);
    expect(stray.status).toBe(2);
    expectOneErrorLine(stray.stderr, /^sharenode: client keygen: unexpected argument 'extra'/);
    const unknown = sharenode(["client", "frobnicate"]);
    expect(unknown.status).toBe(2);
    expectOneErrorLine(unknown.stderr, /^sharenode: client: unknown action 'frobnicate' \(expected keygen\)\n$/);
  });
});

describe("sharenode fleet order", () => {
  const device = "0123456789abcdef0123456789abcdef";
  const object = "ab".repeat(32);
  let fleetDir: string;
  let fleetKey: string;
  let clientKey: string;
  beforeAll(() => {
    fleetDir = join(work, "fleet");
    fleetKey = sharenode(["fleet", "keygen", "--key-dir", fleetDir]).stdout.trim();
    clientKey = sharenode(["client", "keygen", "--key-dir", join(work, "client-for-order")]).stdout.trim();
    expect(fleetKey).toMatch(/^[0-9a-f]{64}$/);
  });
  const base = () => [
    "fleet",
    "order",
    "--device",
    device,
    "--object",
    object,
    "--client-key",
    clientKey,
    "--max-bytes",
    "5000000",
    "--rights",
    "label:acme/records",
    "--ttl",
    "3600",
    "--key-dir",
    fleetDir,
  ];

  it("prints one token that the box's openOrder accepts under the fleet key, with every field as given", () => {
    const before = Date.now();
    const r = sharenode(base());
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^[A-Za-z0-9_-]+\n$/);
    const opened = openOrder(r.stdout.trim(), {
      fleetPublicKey: fleetKey,
      deviceId: device,
      now: Date.now(),
      objectId: object,
    });
    expect(opened.ok, JSON.stringify(opened)).toBe(true);
    if (!opened.ok) return;
    expect(opened.order).toMatchObject({ deviceId: device, objectId: object, clientKey, maxBytes: 5_000_000 });
    expect(opened.order.rightsId).toBe("label:acme/records");
    expect(opened.order.serial).toMatch(/^[0-9a-f]{24}$/);
    expect(opened.order.expiresAt).toBeGreaterThanOrEqual(before + 3_600_000);
    expect(opened.order.expiresAt).toBeLessThanOrEqual(Date.now() + 3_600_000);
    // Signed by this fleet key and no other; each order its own serial; --serial is taken as given.
    expect(openOrder(r.stdout.trim(), { fleetPublicKey: clientKey, deviceId: device, now: Date.now() }).ok).toBe(false);
    const again = openOrder(sharenode(base()).stdout.trim(), { fleetPublicKey: fleetKey, deviceId: device, now: 0 });
    expect(again.ok && again.order.serial).not.toBe(opened.order.serial);
    const named = sharenode([...base(), "--serial", "ord-2026.0001"]);
    const n = openOrder(named.stdout.trim(), { fleetPublicKey: fleetKey, deviceId: device, now: 0 });
    expect(n.ok && n.order.serial).toBe("ord-2026.0001");
  });

  it.each([
    [["--device", "XYZ"], /^sharenode: fleet order: --device must be a device id/],
    [["--object", "ab"], /^sharenode: fleet order: --object must be an object id/],
    [["--client-key", "zz".repeat(32)], /^sharenode: fleet order: --client-key must be the client's public key/],
    [["--max-bytes", "0"], /^sharenode: fleet order: --max-bytes must be a whole number from 1/],
    [["--max-bytes", "-5"], /^sharenode: fleet order: --max-bytes must be a whole number from 1/],
    [["--max-bytes", "9007199254740993"], /^sharenode: fleet order: --max-bytes must be a whole number from 1/],
    [["--rights", "a b"], /^sharenode: fleet order: --rights must be 1..128 characters/],
    [["--ttl", "1.5"], /^sharenode: fleet order: --ttl must be a whole number/],
    [["--serial", "x".repeat(65)], /^sharenode: fleet order: --serial must be 1..64 characters/],
    [["--bogus", "1"], /^sharenode: fleet order: unknown option '--bogus'/],
  ])("refuses %j with one line and exit 2", (override, message) => {
    const args = base();
    const at = args.indexOf(override[0]!);
    if (at >= 0) args[at + 1] = override[1]!;
    else args.push(...override);
    const r = sharenode(args);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe("");
    expectOneErrorLine(r.stderr, message);
  });

  it("names a missing option", () => {
    const args = base();
    args.splice(args.indexOf("--rights"), 2);
    const r = sharenode(args);
    expect(r.status).toBe(2);
    expectOneErrorLine(r.stderr, /^sharenode: fleet order: --rights is required\n$/);
  });
});

/** `sharenode ARGS` as a child process, without blocking the test's event loop (the responder runs in it). */
function sharenodeAsync(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

// The agent's task handlers are the fetch branch's; until they land, a stand-in device answers on a real
// mosquitto: it verifies each command as the device's command gate does (openCommand under the fleet key) and
// replies signed with its own device key, so what is tested is the CLI's side of the wire.
describe("sharenode fleet task (real mosquitto, a stand-in device)", () => {
  let broker: Broker;
  let device: DeviceIdentity;
  let responder: mqtt.MqttClient;
  let fleetDir: string;
  let fleetKey: string;
  const received: Command[] = [];

  beforeAll(async () => {
    broker = await Broker.start();
    device = await loadOrCreateDeviceIdentity(join(work, "device"));
    fleetDir = join(work, "task-fleet");
    fleetKey = sharenode(["fleet", "keygen", "--key-dir", fleetDir]).stdout.trim();
    const topics = topicsFor(device.deviceId);
    responder = await mqtt.connectAsync(broker.url, { protocolVersion: 5 });
    responder.on("message", (topic, payload, packet) => {
      const opened = openCommand(payload, {
        fleetPublicKey: fleetKey,
        deviceId: device.deviceId,
        topicCmd: topic.split("/").pop(),
        now: Date.now(),
      });
      if (!opened.ok) return;
      const { cmd, args, nonce } = opened.command;
      received.push(opened.command);
      const reply =
        args.objectId === "ee".repeat(32)
          ? signReply(
              {
                cmd,
                deviceId: device.deviceId,
                nonce,
                ok: false,
                error: { code: "not-found", message: "no such object" },
              },
              device,
            )
          : signReply({ cmd, deviceId: device.deviceId, nonce, ok: true, result: { accepted: cmd, args } }, device);
      void responder.publishAsync(packet.properties?.responseTopic ?? topics.reply, Buffer.from(reply), {
        properties: { correlationData: packet.properties?.correlationData },
      });
    });
    await responder.subscribeAsync(topics.cmdFilter);
  });
  afterAll(async () => {
    await responder?.endAsync();
    await broker?.stop();
  });

  const conn = () => ["--broker", broker.url, "--key-dir", fleetDir, "--device-key", device.publicKeyHex];
  const object = "cd".repeat(32);

  it("fetch: signs task.fetch with every argument, prints the device's verified reply", async () => {
    const r = await sharenodeAsync([
      "fleet",
      "task",
      device.deviceId,
      "fetch",
      "--object",
      object,
      "--length",
      "5000000",
      "--source",
      "http://127.0.0.1:1/a.bin",
      "--source",
      "https://origin.example/b.bin",
      "--outboard",
      "http://127.0.0.1:1/a.bin.obao",
      "--pin",
      ...conn(),
    ]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const args = {
      objectId: object,
      length: 5_000_000,
      sources: ["http://127.0.0.1:1/a.bin", "https://origin.example/b.bin"],
      outboard: "http://127.0.0.1:1/a.bin.obao",
      pin: true,
    };
    expect(JSON.parse(r.stdout)).toEqual({ accepted: "task.fetch", args });
    expect(received.at(-1)).toMatchObject({ cmd: "task.fetch", args });
  });

  it("fetch from boxes: --order FILE adds each box's object URL as a source with its token, and its outboard", async () => {
    const file = join(work, "task.orders");
    const key = await loadOrCreateFleetKey(join(fleetDir, "device-key.pem"));
    const [tokenA, tokenB] = ["a", "b"].map((serial) =>
      signOrder(
        {
          serial,
          deviceId: "ab".repeat(16),
          objectId: object,
          clientKey: "cd".repeat(32),
          maxBytes: 100,
          expiresAt: Date.now() + 60_000,
          rightsId: "r",
        },
        key,
      ),
    );
    writeFileSync(file, `# two boxes\nhttp://10.0.0.2:8470 ${tokenA}\nhttp://10.0.0.3:8470/ ${tokenB}\n`);
    const before = Date.now();
    const r = await sharenodeAsync([
      "fleet",
      "task",
      device.deviceId,
      "fetch",
      "--object",
      object,
      "--length",
      "100",
      "--source",
      "https://origin.example/o.bin",
      "--order",
      file,
      "--deadline",
      "600",
      ...conn(),
    ]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const box = (host: string) => `http://${host}:8470/v1/objects/${object}`;
    const { args } = received.at(-1)!;
    expect(args).toMatchObject({
      objectId: object,
      length: 100,
      sources: ["https://origin.example/o.bin", box("10.0.0.2"), box("10.0.0.3")],
      outboard: `${box("10.0.0.2")}/outboard`,
      orders: { [box("10.0.0.2")]: tokenA, [box("10.0.0.3")]: tokenB, [`${box("10.0.0.2")}/outboard`]: tokenA },
    });
    expect(args.deadline as number).toBeGreaterThanOrEqual(before + 600_000);
    expect(args.deadline as number).toBeLessThanOrEqual(Date.now() + 600_000);
  });

  it("drop and list: task.drop with the object, task.list with no arguments", async () => {
    const drop = await sharenodeAsync(["fleet", "task", device.deviceId, "drop", "--object", object, ...conn()]);
    expect(drop.status).toBe(0);
    expect(JSON.parse(drop.stdout)).toEqual({ accepted: "task.drop", args: { objectId: object } });
    const list = await sharenodeAsync(["fleet", "task", device.deviceId, "list", ...conn()]);
    expect(list.status).toBe(0);
    expect(JSON.parse(list.stdout)).toEqual({ accepted: "task.list", args: {} });
    expect(received.slice(-2).map((c) => c.cmd)).toEqual(["task.drop", "task.list"]);
  });

  it("a refusal by the device is one line and exit 1", async () => {
    const r = await sharenodeAsync(["fleet", "task", device.deviceId, "drop", "--object", "ee".repeat(32), ...conn()]);
    expect(r.status).toBe(1);
    expectOneErrorLine(
      r.stderr,
      /^sharenode: fleet task drop: task.drop refused by the device: not-found: no such object\n$/,
    );
  });

  it.each([
    [["fetch", "--length", "10", "--source", "http://a/"], /^sharenode: fleet task fetch: --object is required\n$/],
    [["fetch", "--object", "AB", "--length", "1", "--source", "http://a/"], /--object must be an object id/],
    [
      ["fetch", "--object", "cd".repeat(32), "--source", "http://a/"],
      /^sharenode: fleet task fetch: --length is required/,
    ],
    [
      ["fetch", "--object", "cd".repeat(32), "--length", "x", "--source", "http://a/"],
      /--length must be a whole number/,
    ],
    [["fetch", "--object", "cd".repeat(32), "--length", "1"], /at least one --source URL or --order FILE is required/],
    [["fetch", "--object", "cd".repeat(32), "--length", "1", "--source", "ftp://a/"], /--source must be an http/],
    [
      ["fetch", "--object", "cd".repeat(32), "--length", "1", "--source", "http://a/", "--outboard", "x"],
      /--outboard must be an http/,
    ],
    [["drop"], /^sharenode: fleet task drop: --object is required/],
    [
      ["fetch", "--object", "cd".repeat(32), "--length", "1", "--order", "/nonexistent"],
      /--order \/nonexistent: No such file/,
    ],
    [
      ["fetch", "--object", "cd".repeat(32), "--length", "1", "--source", "http://a/", "--deadline", "0"],
      /--deadline must be a whole number/,
    ],
    [["list", "--order", "x"], /^sharenode: fleet task list: --order does not apply to list/],
    [["drop", "--object", "cd".repeat(32), "--pin"], /^sharenode: fleet task drop: --pin does not apply to drop/],
    [["list", "--source", "http://a/"], /^sharenode: fleet task list: --source does not apply to list/],
    [["frob"], /^sharenode: fleet task: unknown task 'frob' \(expected fetch, drop or list\)/],
  ])("refuses %j before connecting: one line, exit 2", (rest, message) => {
    // No broker option: a refusal that came after connecting would complain about the broker instead.
    const r = sharenode(["fleet", "task", "0123456789abcdef0123456789abcdef", ...rest]);
    expect(r.status).toBe(2);
    expectOneErrorLine(r.stderr, message);
  });

  it("refuses a bad DEVICE and a missing task", () => {
    expectOneErrorLine(sharenode(["fleet", "task", "nope", "list"]).stderr, /DEVICE must be a device id/);
    const r = sharenode(["fleet", "task", "0123456789abcdef0123456789abcdef"]);
    expect(r.status).toBe(2);
    expectOneErrorLine(r.stderr, /^sharenode: fleet task: expected DEVICE and fetch, drop or list, got 1 argument\n$/);
  });
});
