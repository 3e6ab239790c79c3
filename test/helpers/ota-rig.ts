// A box that updates itself, for the OTA tests (ota.test.ts, ota-powercut.test.ts): a release tree as install.sh
// lays it out (the built bundle in slot A, no manifest: build 0), the launcher (board/install/launcher.sh) running
// the agent from it, a real mosquitto for the signed ota.* commands and the events, a real HTTP origin for what
// `sharenode release pack` wrote, and a release key made by `sharenode release keygen`.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import mqtt, { type MqttClient } from "mqtt";
import { loadOrCreateFleetKey, openReply, signCommand, type FleetKey, type Reply } from "../../agent/protocol/envelope";
import { topicsFor } from "../../agent/protocol/topics";
import { loadOrCreateSigningKey } from "../../agent/identity/device-key";
import { createOutboard } from "../../agent/kernels/outboard";
import { signManifest, SLOT_PACKAGE_JSON } from "../../agent/ota/release";
import { runNode, type Ran } from "./child";
import { Broker } from "./mosquitto";
import { Origin, type Behaviour } from "./origin";
import { waiter } from "./wait";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
export const BIN = join(ROOT, "dist/sharenode.js");
export const LAUNCHER = join(ROOT, "board/install/launcher.sh");

/** The launcher and the agent it runs, one process group: SIGKILL to the group is a power cut. */
export class Box {
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

/** What install.sh lays out: the bundle and its package.json in slot A, no manifest (build 0), `current` -> A. */
function layOutTree(opt: string): void {
  mkdirSync(join(opt, "releases/A"), { recursive: true });
  mkdirSync(join(opt, "releases/B"));
  copyFileSync(BIN, join(opt, "releases/A/sharenode.js"));
  writeFileSync(join(opt, "releases/A/package.json"), '{ "type": "module" }\n');
  spawnSync("ln", ["-s", "releases/A", join(opt, "current")]);
}

export interface ReleaseFileEntry {
  path: string;
  blake3: string;
  length: number;
}

export class OtaRig {
  work = "";
  opt = "";
  broker!: Broker;
  origin!: Origin;
  fleet!: FleetKey;
  client!: MqttClient;
  releaseKey = "";
  box!: Box;
  readonly inbox: Array<{ topic: string; payload: Buffer }> = [];
  private tmpfs = false;
  readonly waitFor = waiter({
    timeoutMs: 60_000,
    intervalMs: 50,
    detail: () => `box log:\n${this.box?.log.slice(-4000) ?? ""}`,
  });

  constructor(private readonly options: { gateSeconds: number; tmpfsBytes?: number }) {}

  async start(): Promise<void> {
    this.work = mkdtempSync(join(tmpdir(), "sharenode-ota-"));
    this.opt = join(this.work, "opt");
    mkdirSync(this.opt);
    if (this.options.tmpfsBytes !== undefined) {
      const size = `size=${this.options.tmpfsBytes}`;
      const mounted = spawnSync("mount", ["-t", "tmpfs", "-o", size, "tmpfs", this.opt], { encoding: "utf8" });
      if (mounted.status !== 0)
        throw new Error(`the release tree needs a tmpfs (run as root, as CI does): ${mounted.stderr}`);
      this.tmpfs = true;
    }
    layOutTree(this.opt);
    mkdirSync(join(this.work, "data"));
    this.broker = await Broker.start();
    this.origin = await Origin.start();
    this.fleet = await loadOrCreateFleetKey(join(this.work, "fleet", "device-key.pem"));
    const keygen = spawnSync(
      process.execPath,
      [BIN, "release", "keygen", "--key-dir", join(this.work, "release-key")],
      {
        encoding: "utf8",
      },
    );
    this.releaseKey = keygen.stdout.trim();
    this.client = await mqtt.connectAsync(this.broker.url, { protocolVersion: 5, clientId: "fleet-ota-test" });
    this.client.on("message", (topic, payload) => this.inbox.push({ topic, payload }));
    await this.client.subscribeAsync("sharenode/v1/+/events", { qos: 1 });
    await this.client.subscribeAsync("sharenode/v1/+/state", { qos: 1 });
    await this.startBox();
  }

  async stop(): Promise<void> {
    this.box?.kill("SIGKILL");
    await this.box?.exited;
    await this.client?.endAsync();
    await this.origin?.stop();
    await this.broker?.stop();
    if (this.work) {
      if (this.tmpfs) spawnSync("umount", [this.opt]);
      rmSync(this.work, { recursive: true, force: true });
    }
  }

  /** Another box on the same broker and origin: its own tree, state and data under `work/<name>`. */
  async otherBox(name: string): Promise<{ box: Box; opt: string; env: NodeJS.ProcessEnv }> {
    const home = join(this.work, name);
    const opt = join(home, "opt");
    layOutTree(opt);
    mkdirSync(join(home, "data"));
    const env = {
      ...this.env(),
      SHARENODE_OPT: opt,
      SHARENODE_STATE: join(home, "state"),
      SHARENODE_DATA: join(home, "data"),
    };
    const box = new Box(env);
    await this.waitFor(`${name} connected`, () => /link: connected/.test(box.log) || undefined);
    return { box, opt, env };
  }

  env(): NodeJS.ProcessEnv {
    return {
      ...process.env,
      SHARENODE_OPT: this.opt,
      SHARENODE_NODE: process.execPath,
      SHARENODE_BROKER: this.broker.url,
      SHARENODE_STATE: join(this.work, "state"),
      SHARENODE_DATA: join(this.work, "data"),
      SHARENODE_FLEET_KEY: this.fleet.publicKeyHex,
      SHARENODE_RELEASE_KEY: this.releaseKey,
      SHARENODE_OTA_GATE: String(this.options.gateSeconds),
      SHARENODE_ALLOW_SYSTEM_DISK: "true",
      SHARENODE_SERVE_PORT: "0",
      SHARENODE_BOARD: "sim",
    };
  }

  /** Starts the launcher and waits until the agent it runs is connected. */
  async startBox(): Promise<void> {
    this.box = new Box(this.env());
    await this.waitFor("the agent connected", () => /link: connected/.test(this.box.log) || undefined);
  }

  identity(): { deviceId: string; publicKey: string } {
    const m = /device ([0-9a-f]{32}) \(public key ([0-9a-f]{64})\)/.exec(this.box.log);
    if (!m) throw new Error("no device line in the log yet");
    return { deviceId: m[1]!, publicKey: m[2]! };
  }

  /**
   * A signed command and its verified reply. A command that reaches an agent as it stops for a restart gets no
   * reply (the fleet asks again, with a new nonce): `timeoutMs` bounds the wait for one.
   */
  async command(cmd: string, args: Record<string, unknown> = {}, timeoutMs = 60_000): Promise<Reply> {
    const { deviceId, publicKey } = this.identity();
    const topics = topicsFor(deviceId);
    const responseTopic = topics.replyTo(`t${Math.random().toString(16).slice(2)}`);
    await this.client.subscribeAsync(responseTopic, { qos: 1 });
    const payload = signCommand({ cmd, deviceId, args, exp: Date.now() + 60_000 }, this.fleet);
    await this.client.publishAsync(topics.cmd(cmd), Buffer.from(payload), { qos: 1, properties: { responseTopic } });
    const message = await this.waitFor(`a reply to ${cmd}`, () => this.inbox.find((m) => m.topic === responseTopic), {
      timeoutMs,
    });
    const opened = openReply(message.payload, { devicePublicKey: publicKey, deviceId });
    if (!opened.ok) throw new Error(`reply does not verify: ${opened.reason}`);
    return opened.reply;
  }

  async result<T = Record<string, unknown>>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
    const reply = await this.command(cmd, args);
    if (!reply.ok) throw new Error(`${cmd} refused: ${reply.error.code}: ${reply.error.message}`);
    return reply.result as T;
  }

  events(): Array<Record<string, unknown>> {
    return this.inbox
      .filter((m) => m.topic.endsWith("/events"))
      .map((m) => JSON.parse(m.payload.toString()) as Record<string, unknown>);
  }

  otaEvents(build: number): Array<Record<string, unknown>> {
    return this.events().filter((e) => String(e.type).startsWith("ota.") && e.build === build);
  }

  sharenode(args: string[]) {
    return spawnSync(process.execPath, [BIN, ...args], { env: this.env(), encoding: "utf8" });
  }

  /** `sharenode ARGS` without blocking this process (whose origin serves the downloads). */
  sharenodeAsync(args: string[]): Promise<Ran> {
    return runNode(BIN, args, this.env());
  }

  /** Packs a release of `files` (slot path -> local file) as build `build`; returns its directory. */
  pack(build: number, files: Record<string, string>, keyDir = join(this.work, "release-key")): string {
    const out = join(this.work, "pub", `b${build}-${Math.random().toString(16).slice(2, 8)}`);
    const specs = Object.entries(files).map(([path, file]) => `${file}=${path}`);
    const r = this.sharenode([
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

  /**
   * What pack() writes, made in this process (no node start per release): the manifest signed with the same
   * release key, the objects with their outboards, and the package.json `release pack` adds.
   */
  async packHere(build: number, files: Record<string, string>): Promise<string> {
    const out = join(this.work, "pub", `b${build}-${Math.random().toString(16).slice(2, 8)}`);
    mkdirSync(join(out, "objects"), { recursive: true });
    const entries: ReleaseFileEntry[] = [];
    const add = (path: string, data: Uint8Array) => {
      const { id, outboard } = createOutboard(data);
      const blake3 = Buffer.from(id).toString("hex");
      writeFileSync(join(out, "objects", blake3), data);
      writeFileSync(join(out, "objects", `${blake3}.obao`), outboard);
      entries.push({ path, blake3, length: data.length });
    };
    for (const [path, file] of Object.entries(files)) add(path, readFileSync(file));
    add("package.json", new TextEncoder().encode(SLOT_PACKAGE_JSON));
    const key = await loadOrCreateSigningKey(join(this.work, "release-key"), "ReleaseKey", (m) => new Error(m));
    const envelope = signManifest({ name: "sharenode", version: `0.${build}.0`, build, files: entries }, key);
    writeFileSync(join(out, "manifest.json"), envelope);
    return out;
  }

  /** Serves a packed release from the origin (each object with `behaviour`); returns its base URL. */
  publish(dir: string, behaviour?: Behaviour): string {
    const name = dir.split("/").pop()!;
    for (const file of readdirSync(join(dir, "objects")))
      this.origin.serve(`${name}/objects/${file}`, readFileSync(join(dir, "objects", file)), behaviour);
    return `${this.origin.base}/${name}/`;
  }

  manifest(dir: string): string {
    return readFileSync(join(dir, "manifest.json"), "utf8");
  }

  files(dir: string): ReleaseFileEntry[] {
    const envelope = JSON.parse(this.manifest(dir)) as { body: string };
    return (JSON.parse(envelope.body) as { files: ReleaseFileEntry[] }).files;
  }

  bundleFile(name: string, text: string): string {
    const path = join(this.work, "bundles", name);
    mkdirSync(join(this.work, "bundles"), { recursive: true });
    writeFileSync(path, text);
    return path;
  }

  /** The agent's bundle, made distinct per build (the store keeps one copy of equal files: nothing to fetch). */
  variant(build: number): string {
    return this.bundleFile(`sharenode-${build}.js`, `${readFileSync(BIN, "utf8")}\n// build ${build}\n`);
  }

  current(): string {
    return readlinkSync(join(this.opt, "current"));
  }
}
