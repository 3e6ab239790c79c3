// Updates over the air, end to end (issue 13): the launcher (board/install/launcher.sh) runs the built bundle from
// a release tree, a real mosquitto carries signed ota.offer commands and the ota.* events, a real HTTP origin
// serves what `sharenode release pack` wrote. An upgrade from build N to N+1 commits after its gate; a release that
// exits at start, one that hangs and one that cannot reach the broker are each rolled back with the reason;
// refusals leave `current` untouched; a download cut by SIGKILL fetches only what was not yet verified; and
// `sharenode ota apply DIR` installs from local files through the console socket.
//
// The tree lives on a 2 MiB tmpfs (mounted as root, as CI runs), so that "the disk is full" is a real statfs.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  existsSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import mqtt, { type MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadOrCreateFleetKey, openReply, signCommand, type FleetKey, type Reply } from "../agent/protocol/envelope";
import { topicsFor } from "../agent/protocol/topics";
import { Broker } from "./helpers/mosquitto";
import { Origin } from "./helpers/origin";
import { seededBytes } from "./helpers/random";
import { waiter } from "./helpers/wait";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "dist/sharenode.js");
const LAUNCHER = join(ROOT, "board/install/launcher.sh");
const GATE_SECONDS = 2;

let work: string;
let opt: string;
let broker: Broker;
let origin: Origin;
let fleet: FleetKey;
let client: MqttClient;
let releaseKey: string;
let box: Box;
const inbox: Array<{ topic: string; payload: Buffer }> = [];

/** The box: the launcher (sh) and the agent it runs, one process group, so that SIGKILL takes both (a power cut). */
class Box {
  log = "";
  readonly proc: ChildProcess;
  readonly exited: Promise<number | null>;

  constructor(env: NodeJS.ProcessEnv) {
    this.proc = spawn("sh", [LAUNCHER, "run", "run"], { env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    const collect = (d: Buffer) => (this.log += d.toString());
    this.proc.stdout!.on("data", collect);
    this.proc.stderr!.on("data", collect);
    this.exited = new Promise((resolve) => this.proc.once("exit", (code) => resolve(code)));
  }

  kill(signal: NodeJS.Signals): void {
    try {
      process.kill(-this.proc.pid!, signal);
    } catch {
      // already gone
    }
  }
}

function env(): NodeJS.ProcessEnv {
  return {
    ...process.env,
    SHARENODE_OPT: opt,
    SHARENODE_NODE: process.execPath,
    SHARENODE_BROKER: broker.url,
    SHARENODE_STATE: join(work, "state"),
    SHARENODE_DATA: join(work, "data"),
    SHARENODE_FLEET_KEY: fleet.publicKeyHex,
    SHARENODE_RELEASE_KEY: releaseKey,
    SHARENODE_OTA_GATE: String(GATE_SECONDS),
    SHARENODE_ALLOW_SYSTEM_DISK: "true",
    SHARENODE_SERVE_PORT: "0",
    SHARENODE_BOARD: "sim",
  };
}

const waitFor = waiter({
  timeoutMs: 60_000,
  intervalMs: 100,
  detail: () => `box log:\n${box?.log.slice(-4000) ?? ""}`,
});

function identity(): { deviceId: string; publicKey: string } {
  const m = /device ([0-9a-f]{32}) \(public key ([0-9a-f]{64})\)/.exec(box.log);
  if (!m) throw new Error("no device line in the log yet");
  return { deviceId: m[1]!, publicKey: m[2]! };
}

async function command(cmd: string, args: Record<string, unknown> = {}): Promise<Reply> {
  const { deviceId, publicKey } = identity();
  const topics = topicsFor(deviceId);
  const responseTopic = topics.replyTo(`t${Math.random().toString(16).slice(2)}`);
  await client.subscribeAsync(responseTopic, { qos: 1 });
  const payload = signCommand({ cmd, deviceId, args, exp: Date.now() + 60_000 }, fleet);
  await client.publishAsync(topics.cmd(cmd), Buffer.from(payload), { qos: 1, properties: { responseTopic } });
  const message = await waitFor(`a reply to ${cmd}`, () => inbox.find((m) => m.topic === responseTopic));
  const opened = openReply(message.payload, { devicePublicKey: publicKey, deviceId });
  if (!opened.ok) throw new Error(`reply does not verify: ${opened.reason}`);
  return opened.reply;
}

async function result<T = Record<string, unknown>>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
  const reply = await command(cmd, args);
  if (!reply.ok) throw new Error(`${cmd} refused: ${reply.error.code}: ${reply.error.message}`);
  return reply.result as T;
}

const events = (): Array<Record<string, unknown>> =>
  inbox
    .filter((m) => m.topic.endsWith("/events"))
    .map((m) => JSON.parse(m.payload.toString()) as Record<string, unknown>);

const otaEvents = (build: number) => events().filter((e) => String(e.type).startsWith("ota.") && e.build === build);

function sharenode(args: string[], extraEnv: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, [BIN, ...args], { env: { ...env(), ...extraEnv }, encoding: "utf8" });
}

/** Packs a release of `files` (path -> local file) as build `build`; returns its directory. */
function pack(build: number, files: Record<string, string>, keyDir = join(work, "release-key")): string {
  const out = join(work, "pub", `b${build}-${Math.random().toString(16).slice(2, 8)}`);
  const specs = Object.entries(files).map(([path, file]) => `${file}=${path}`);
  const r = sharenode([
    "release",
    "pack",
    "--name",
    "sharenode",
    "--version",
    `0.${build}.0`,
    "--build",
    String(build),
    "--out",
    out,
    "--key-dir",
    keyDir,
    ...specs,
  ]);
  if (r.status !== 0) throw new Error(`release pack: ${r.stderr}`);
  return out;
}

/** Serves a packed release from the origin; returns its base URL. */
function publish(dir: string): string {
  const name = dir.split("/").pop()!;
  for (const file of readdirSync(join(dir, "objects")))
    origin.serve(`${name}/objects/${file}`, readFileSync(join(dir, "objects", file)));
  return `${origin.base}/${name}/`;
}

function manifest(dir: string): string {
  return readFileSync(join(dir, "manifest.json"), "utf8");
}

function bundleFile(name: string, text: string): string {
  const path = join(work, "bundles", name);
  mkdirSync(join(work, "bundles"), { recursive: true });
  writeFileSync(path, text);
  return path;
}

/** The agent's bundle, made distinct per build (the store keeps one copy of equal files: nothing to fetch). */
function variant(build: number): string {
  return bundleFile(`sharenode-${build}.js`, `${readFileSync(BIN, "utf8")}\n// build ${build}\n`);
}

const current = () => readlinkSync(join(opt, "current"));

async function startBox(): Promise<void> {
  box = new Box(env());
  await waitFor("the agent connected", () => /link: connected/.test(box.log) || undefined);
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "sharenode-ota-"));
  opt = join(work, "opt");
  mkdirSync(opt);
  const mounted = spawnSync("mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", opt], { encoding: "utf8" });
  if (mounted.status !== 0)
    throw new Error(`the release tree needs a tmpfs (run as root, as CI does): ${mounted.stderr}`);
  mkdirSync(join(opt, "releases/A"), { recursive: true });
  mkdirSync(join(opt, "releases/B"));
  // What install.sh lays out: the bundle and its package.json in slot A, no manifest (build 0).
  copyFileSync(BIN, join(opt, "releases/A/sharenode.js"));
  writeFileSync(join(opt, "releases/A/package.json"), '{ "type": "module" }\n');
  spawnSync("ln", ["-s", "releases/A", join(opt, "current")]);
  mkdirSync(join(work, "data"));
  broker = await Broker.start();
  origin = await Origin.start();
  fleet = await loadOrCreateFleetKey(join(work, "fleet", "device-key.pem"));
  const keygen = spawnSync(process.execPath, [BIN, "release", "keygen", "--key-dir", join(work, "release-key")], {
    encoding: "utf8",
  });
  releaseKey = keygen.stdout.trim();
  client = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: "fleet-ota-test" });
  client.on("message", (topic, payload) => inbox.push({ topic, payload }));
  await client.subscribeAsync("sharenode/v1/+/events", { qos: 1 });
  await client.subscribeAsync("sharenode/v1/+/state", { qos: 1 });
  await startBox();
}, 120_000);

afterAll(async () => {
  box?.kill("SIGKILL");
  await client?.endAsync();
  await origin?.stop();
  await broker?.stop();
  if (work) {
    spawnSync("umount", [opt]);
    rmSync(work, { recursive: true, force: true });
  }
});

describe("updates over the air under the launcher", () => {
  it("upgrades build 0 to build 2: offered, installed, on trial, committed after the gate; current, status and the state record follow", async () => {
    const dir = pack(2, { "sharenode.js": variant(2) });
    const accepted = await result("ota.offer", { manifest: manifest(dir), sources: [publish(dir)] });
    expect(accepted).toMatchObject({ accepted: true, build: 2, version: "0.2.0" });
    await waitFor("ota.committed", () => otaEvents(2).some((e) => e.type === "ota.committed") || undefined);
    const types = otaEvents(2).map((e) => e.type);
    expect(types.filter((t) => t !== "ota.progress")).toEqual([
      "ota.offered",
      "ota.installed",
      "ota.trial",
      "ota.committed",
    ]);
    expect(types).toContain("ota.progress");
    expect(current()).toBe("releases/B");
    expect(existsSync(join(opt, "trial"))).toBe(false);
    expect(readFileSync(join(opt, "releases/B/sharenode.js"))).toEqual(
      readFileSync(join(work, "bundles/sharenode-2.js")),
    );
    expect(box.log).toMatch(/build 2 \(slot B\) on trial: try 1 of 3/);
    const status = await result("ota.status");
    expect(status).toMatchObject({
      build: 2,
      version: "0.2.0",
      slot: "B",
      phase: "committed",
      installedBuild: 2,
      floor: 2,
    });
    const states = inbox
      .filter((m) => m.topic.endsWith("/state"))
      .map((m) => JSON.parse(m.payload.toString()) as Record<string, unknown>);
    expect(states.at(-1)).toMatchObject({ state: "online", version: "0.2.0", build: 2, slot: "B" });
  }, 90_000);

  it("refuses a tampered manifest, the wrong key, a downgrade and a release that does not fit, each in one line; current stays", async () => {
    const good = pack(3, { "sharenode.js": variant(3) });
    const body = JSON.parse(manifest(good)) as { body: string; sig: string };
    const tampered = JSON.stringify({ ...body, body: body.body.replace('"0.3.0"', '"0.3.1"') });
    const otherKey = pack(3, { "sharenode.js": variant(3) }, join(work, "other-key"));
    const old = pack(1, { "sharenode.js": variant(1) });
    const filler = join(work, "filler.bin");
    writeFileSync(filler, seededBytes(1024 * 1024, 3));
    const big = pack(3, { "sharenode.js": variant(3), "filler.bin": filler });
    const cases: Array<[string, string, string]> = [
      [tampered, "bad-signature", "tampered"],
      [manifest(otherKey), "bad-signature", "wrong key"],
      [manifest(old), "not-newer", "downgrade"],
      [manifest(big), "no-space", "full disk"],
    ];
    for (const [m, code, what] of cases) {
      const reply = await command("ota.offer", { manifest: m, sources: [origin.base + "/"] });
      expect(reply.ok, what).toBe(false);
      if (!reply.ok) {
        expect(reply.error.code, what).toBe(code);
        expect(reply.error.message, what).not.toMatch(/\n/);
      }
      await waitFor(
        `ota.refused ${code}`,
        () => events().some((e) => e.type === "ota.refused" && e.code === code) || undefined,
      );
      expect(current(), what).toBe("releases/B");
    }
    expect((await result("ota.status")).phase).toBe("committed");
  });

  it("a tampered file is caught as it arrives: ota.failed, nothing installed, current stays", async () => {
    const dir = pack(3, { "sharenode.js": variant(3) });
    const base = publish(dir);
    const id = (
      JSON.parse(JSON.parse(manifest(dir)).body as string) as { files: { path: string; blake3: string }[] }
    ).files.find((f) => f.path === "sharenode.js")!.blake3;
    origin.behave(`${dir.split("/").pop()!}/objects/${id}`, { kind: "corrupt", offset: 100_000 });
    await result("ota.offer", { manifest: manifest(dir), sources: [base] });
    const failed = await waitFor("ota.failed", () => otaEvents(3).find((e) => e.type === "ota.failed"));
    expect(failed.code).toBe("bad-data");
    expect(current()).toBe("releases/B");
    expect(await result("ota.status")).toMatchObject({ phase: "idle", installedBuild: 2 });
  });

  const bad: Array<[string, number, () => Record<string, string>, string]> = [
    ["exits at start", 4, () => ({ "sharenode.js": bundleFile("exit.js", "process.exit(3);\n") }), "crash"],
    ["hangs", 5, () => ({ "sharenode.js": bundleFile("hang.js", "setInterval(() => {}, 1000);\n") }), "hang"],
    [
      "runs but cannot reach the broker",
      6,
      () => ({
        "sharenode.js": bundleFile(
          "no-broker.js",
          'process.env.SHARENODE_BROKER = "mqtt://127.0.0.1:1";\nawait import("./agent.js");\n',
        ),
        "agent.js": variant(6),
      }),
      "no-broker",
    ],
  ];
  for (const [what, build, files, code] of bad) {
    it(`a release that ${what} is rolled back to build 2 with the reason (${code})`, async () => {
      const dir = pack(build, files());
      await result("ota.offer", { manifest: manifest(dir), sources: [publish(dir)] });
      const rolled = await waitFor("ota.rolledback", () => otaEvents(build).find((e) => e.type === "ota.rolledback"));
      expect(rolled.code).toBe(code);
      expect(String(rolled.reason)).not.toBe("");
      expect(current()).toBe("releases/B");
      expect(existsSync(join(opt, "trial"))).toBe(false);
      // The previous release runs on, connected, and never moved its floor.
      expect(await result("ota.status")).toMatchObject({
        build: 2,
        slot: "B",
        phase: "rolledback",
        installedBuild: 2,
        floor: 2,
      });
    }, 90_000);
  }

  it("sharenode ota apply DIR installs a release from local files (a USB stick), through the console socket", async () => {
    const dir = pack(7, { "sharenode.js": variant(7) });
    const r = sharenode(["ota", "apply", dir]);
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(/build 7 \(0\.7\.0\) accepted/);
    await waitFor("ota.committed 7", () => otaEvents(7).some((e) => e.type === "ota.committed") || undefined);
    expect(current()).toBe("releases/A");
    const status = sharenode(["ota", "status"]);
    expect(status.stdout).toMatch(/running +0\.7\.0 \(build 7, slot A\)/);
    expect(status.stdout).toMatch(/update +committed: build 7/);
    // Not on trial any more: commit and rollback by hand are refused, in one line.
    const commit = sharenode(["ota", "commit"]);
    expect(commit.status).toBe(1);
    expect(commit.stderr).toMatch(/^sharenode: ota: .*no release is on trial here\n$/);
  }, 90_000);

  it("a download cut by SIGKILL resumes: the origin sends only the bytes not yet verified", async () => {
    const filler = join(work, "filler-resume.bin");
    writeFileSync(filler, seededBytes(400 * 1024, 9));
    const dir = pack(8, { "sharenode.js": variant(8), "data.bin": filler });
    const base = publish(dir);
    const name = dir.split("/").pop()!;
    const files = (
      JSON.parse(JSON.parse(manifest(dir)).body as string) as {
        files: { path: string; blake3: string; length: number }[];
      }
    ).files;
    const big = files.find((f) => f.path === "data.bin")!;
    const held = 256 * 1024;
    origin.behave(`${name}/objects/${big.blake3}`, { kind: "stall", after: held });
    await result("ota.offer", { manifest: manifest(dir), sources: [base] });
    await waitFor("256 KiB verified and durable", async () => {
      const list = await result<{ tasks: { objectId: string; bytesDone: number }[] }>("task.list");
      return list.tasks.find((t) => t.objectId === big.blake3)?.bytesDone === held || undefined;
    });
    box.kill("SIGKILL");
    await box.exited;
    origin.serve(`${name}/objects/${big.blake3}`, readFileSync(join(dir, "objects", big.blake3)));
    await startBox();
    await waitFor("ota.committed 8", () => otaEvents(8).some((e) => e.type === "ota.committed") || undefined);
    const after = origin.servedAt(`${name}/objects/${big.blake3}`);
    expect(after.bytes).toBe(big.length - held);
    expect(after.ranges[0]![0]).toBe(held);
    expect(current()).toBe("releases/B");
  }, 120_000);
});
