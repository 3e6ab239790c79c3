// The MQTT link against a real mosquitto: birth and will with bdSeq (including a SIGKILLed agent process), bdSeq
// across reconnects and restarts, commands after a broker restart, backoff, MQTT 3.1.1, refused topics, and that
// a publish cut off before its PUBACK is rejected and never re-sent behind the caller's back.
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, connect as netConnect, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { connectAsync, type MqttClient } from "mqtt";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { MqttLink, type IncomingPacket, type MqttLinkOptions } from "../agent/link/mqtt-link";
import { Broker, freePort } from "./helpers/mosquitto";
import { spawnLineChild, type LineChild } from "./helpers/child";
import { waitFor } from "./helpers/wait";

let work = "";
let child = "";
let broker: Broker;
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "sharenode-link-"));
  child = join(work, "link-child.mjs");
  const bundling = build({
    entryPoints: [fileURLToPath(new URL("./fixtures/link-child.ts", import.meta.url))],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outfile: child,
    logLevel: "error",
    // mqtt.js's bundle pulls in CommonJS modules that call require(): give the ESM bundle one.
    banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  });
  broker = await Broker.start();
  await bundling;
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

afterAll(async () => {
  await broker?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

const newDeviceId = () => randomBytes(16).toString("hex");
const stateDirFor = (id: string) => join(work, `state-${id.slice(0, 8)}`);

function makeLink(deviceId: string, extra: Partial<MqttLinkOptions> = {}): MqttLink {
  const link = new MqttLink({
    url: broker.url,
    deviceId,
    version: "1.2.3",
    stateDir: stateDirFor(deviceId),
    keepaliveSeconds: 10,
    backoff: { baseMs: 50, capMs: 400 },
    ...extra,
  });
  cleanups.push(() => link.stop());
  return link;
}

function nextEvent<T>(link: MqttLink, event: "connected" | "disconnected", timeoutMs = 10_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "${event}" within ${timeoutMs} ms`)), timeoutMs);
    link.once(event, (arg: unknown) => {
      clearTimeout(timer);
      resolve(arg as T);
    });
  });
}

interface Seen {
  topic: string;
  text: string;
  json: any;
  retain: boolean;
}

/** A fleet-side client (mqtt.js) that records what arrives on `filter`. */
async function watch(
  filter: string,
  protocolVersion: 4 | 5 = 5,
  url = broker.url,
): Promise<{ client: MqttClient; seen: Seen[] }> {
  const client = await connectAsync(url, { protocolVersion, reconnectPeriod: 100, clean: true });
  cleanups.push(() => client.endAsync(true));
  const seen: Seen[] = [];
  client.on("message", (topic, payload, packet) => {
    const text = payload.toString();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    seen.push({ topic, text, json, retain: packet.retain });
  });
  await client.subscribeAsync(filter, { qos: 1 });
  return { client, seen };
}

function runChild(args: string[]): LineChild {
  return spawnLineChild(child, args, cleanups, "link child");
}

describe("MqttLink against mosquitto", () => {
  it("publishes a retained birth after CONNACK, and on stop() a retained offline state with the same bdSeq", async () => {
    const id = newDeviceId();
    const link = makeLink(id);
    const up = nextEvent<{ bdSeq: number }>(link, "connected");
    await link.start();
    expect((await up).bdSeq).toBe(1);
    expect(link.connected).toBe(true);
    expect(readFileSync(join(stateDirFor(id), "bdseq"), "utf8")).toBe("1\n");

    // A subscriber that arrives later gets the retained birth.
    const late = await watch(`sharenode/v1/${id}/state`);
    await waitFor("the retained birth", () => late.seen.length === 1);
    const birth = late.seen[0]!;
    expect(birth.retain).toBe(true);
    expect(birth.json).toEqual({ state: "online", bdSeq: 1, ts: expect.any(Number), version: "1.2.3" });

    await link.stop();
    expect(link.connected).toBe(false);
    await waitFor("the offline state", () => late.seen.length === 2);
    expect(late.seen[1]!.json).toEqual({ state: "offline", bdSeq: 1, ts: expect.any(Number), version: "1.2.3" });
    // A clean DISCONNECT: the broker does not also publish the will.
    await new Promise((r) => setTimeout(r, 300));
    expect(late.seen).toHaveLength(2);
    const later = await watch(`sharenode/v1/${id}/state`);
    await waitFor("the retained offline state", () => later.seen.length === 1);
    expect(later.seen[0]!.json).toMatchObject({ state: "offline", bdSeq: 1 });
    expect(later.seen[0]!.retain).toBe(true);
  });

  it("a SIGKILLed agent's will is the retained offline state with its birth's bdSeq; a restart takes the next bdSeq", async () => {
    const id = newDeviceId();
    const state = await watch(`sharenode/v1/${id}/state`);
    const first = runChild(["link", broker.url, id, stateDirFor(id)]);
    await waitFor("the child's connection", () => first.lines.includes("connected 1"));
    await waitFor("the birth", () => state.seen.some((m) => m.json?.state === "online"));
    expect(state.seen.at(-1)!.json).toMatchObject({ state: "online", bdSeq: 1, version: "0.0.0-test" });

    first.proc.kill("SIGKILL");
    await first.exited;
    await waitFor("the will", () => state.seen.some((m) => m.json?.state === "offline"));
    // Exactly the will (no ts, no version): {"state":"offline","bdSeq":1}
    expect(state.seen.at(-1)!.text).toBe('{"state":"offline","bdSeq":1}');
    const late = await watch(`sharenode/v1/${id}/state`);
    await waitFor("the retained will", () => late.seen.length === 1);
    expect(late.seen[0]).toMatchObject({ retain: true, json: { state: "offline", bdSeq: 1 } });

    const second = runChild(["link", broker.url, id, stateDirFor(id)]);
    await waitFor("the restarted child's connection", () => second.lines.includes("connected 2"));
    await waitFor("the second birth", () => state.seen.at(-1)?.json?.state === "online");
    expect(state.seen.at(-1)!.json).toMatchObject({ state: "online", bdSeq: 2 });
  });

  it("reconnects after a broker restart with a larger bdSeq, resubscribed: a command sent afterwards reaches the handler", async () => {
    const id = newDeviceId();
    const link = makeLink(id);
    const commands: { topic: string; payload: string; packet: IncomingPacket }[] = [];
    link.onMessage((topic, payload, packet) => {
      commands.push({ topic, payload: payload.toString(), packet });
    });
    // A handler that throws is logged and does not disturb the others.
    link.onMessage(() => {
      throw new Error("broken handler");
    });
    const up = nextEvent(link, "connected");
    await link.start();
    await up;

    const fleet = await watch(`sharenode/v1/${id}/reply/#`);
    await fleet.client.publishAsync(`sharenode/v1/${id}/cmd/ping`, '{"body":"x"}', {
      qos: 1,
      properties: { responseTopic: `sharenode/v1/${id}/reply/abc`, correlationData: Buffer.from("c0ffee", "hex") },
    });
    await waitFor("the first command", () => commands.length === 1);
    expect(commands[0]!.topic).toBe(`sharenode/v1/${id}/cmd/ping`);
    expect(commands[0]!.payload).toBe('{"body":"x"}');
    expect(commands[0]!.packet.properties?.responseTopic).toBe(`sharenode/v1/${id}/reply/abc`);
    expect(commands[0]!.packet.properties?.correlationData?.toString("hex")).toBe("c0ffee");

    const down = nextEvent<{ bdSeq: number }>(link, "disconnected");
    await broker.kill();
    expect((await down).bdSeq).toBe(1);
    expect(link.connected).toBe(false);
    await expect(link.publish(`sharenode/v1/${id}/events`, "x", { qos: 1, retain: false })).rejects.toThrow(
      /not connected/,
    );
    await new Promise((r) => setTimeout(r, 300)); // a few refused attempts
    const again = nextEvent<{ bdSeq: number }>(link, "connected");
    await broker.restart();
    const { bdSeq } = await again;
    expect(bdSeq).toBeGreaterThan(1);
    expect(link.stats.bdSeq).toBe(bdSeq);
    expect(link.stats.reconnects).toBe(bdSeq - 1);
    expect(link.stats.connects).toBe(2);

    // The restarted broker (no persistence) knows nothing: only the link's own resubscription lets this through.
    const fleet2 = await watch(`sharenode/v1/${id}/state`);
    await waitFor("the new birth", () => fleet2.seen.length === 1);
    expect(fleet2.seen[0]!.json).toMatchObject({ state: "online", bdSeq });
    await fleet2.client.publishAsync(`sharenode/v1/${id}/cmd/status`, '{"body":"y"}', { qos: 1 });
    await waitFor("the command after the restart", () => commands.length === 2);
    expect(commands[1]).toMatchObject({ topic: `sharenode/v1/${id}/cmd/status`, payload: '{"body":"y"}' });

    // Only the device's own commands are subscribed to.
    await fleet2.client.publishAsync(`sharenode/v1/${newDeviceId()}/cmd/status`, "other", { qos: 1 });
    await fleet2.client.publishAsync(`sharenode/v1/${id}/events`, "not a command", { qos: 1 });
    await new Promise((r) => setTimeout(r, 200));
    expect(commands).toHaveLength(2);

    await link.publish(`sharenode/v1/${id}/events`, Buffer.from("{}"), { qos: 1, retain: false });
    expect(link.stats.bytesOut).toBeGreaterThan(0);
    expect(link.stats.bytesIn).toBeGreaterThan(0);

    // A restart continues the counter from the file.
    await link.stop();
    const restarted = makeLink(id);
    const up2 = nextEvent<{ bdSeq: number }>(restarted, "connected");
    await restarted.start();
    expect((await up2).bdSeq).toBe(bdSeq + 1);
  });

  it("backs off between attempts with growing, capped delays (full jitter)", async () => {
    const port = await freePort(); // nothing listens there
    const id = newDeviceId();
    const delays: number[] = [];
    const link = makeLink(id, {
      url: `mqtt://127.0.0.1:${port}`,
      backoff: { baseMs: 1000, factor: 2, capMs: 60_000 },
      random: () => 0.999999,
      // Record the delay asked for, wait only a moment.
      timers: {
        setTimeout: (fn, ms) => {
          delays.push(ms);
          return setTimeout(fn, 1);
        },
        clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
      },
    });
    await link.start();
    await waitFor("nine attempts", () => delays.length >= 9);
    await link.stop();
    expect(delays.slice(0, 9)).toEqual([999, 1999, 3999, 7999, 15_999, 31_999, 59_999, 59_999, 59_999]);
    expect(link.stats.reconnects).toBeGreaterThanOrEqual(8);
    expect(link.stats.connects).toBe(0);
    // Every attempt took a fresh bdSeq, persisted before it.
    expect(Number(readFileSync(join(stateDirFor(id), "bdseq"), "utf8"))).toBe(link.stats.bdSeq);
    // (stop() may have landed between persisting a bdSeq and using it)
    expect(link.stats.bdSeq - (link.stats.reconnects + 1)).toBeOneOf([0, 1]);
  });

  it("speaks MQTT 3.1.1 too", async () => {
    const id = newDeviceId();
    const link = makeLink(id, { protocolVersion: 4 });
    const commands: string[] = [];
    link.onMessage((topic, payload) => {
      commands.push(`${topic} ${payload.toString()}`);
    });
    const up = nextEvent(link, "connected");
    await link.start();
    await up;
    const fleet = await watch(`sharenode/v1/${id}/#`, 4);
    await waitFor("the retained birth", () => fleet.seen.some((m) => m.json?.state === "online"));
    await link.publish(`sharenode/v1/${id}/events`, '{"seq":1}', { qos: 1, retain: false });
    await link.publish(`sharenode/v1/${id}/reply`, "r", {
      qos: 0,
      retain: false,
      properties: { responseTopic: "ignored/on/3.1.1" },
    });
    await waitFor(
      "the event and the reply",
      () => fleet.seen.some((m) => m.topic.endsWith("/events")) && fleet.seen.some((m) => m.topic.endsWith("/reply")),
    );
    await fleet.client.publishAsync(`sharenode/v1/${id}/cmd/ping`, "p", { qos: 1 });
    await waitFor("the command", () => commands.length === 1);
    expect(commands[0]).toBe(`sharenode/v1/${id}/cmd/ping p`);
  });

  it("refuses to publish on a topic with + or #, or while not connected", async () => {
    const id = newDeviceId();
    const link = makeLink(id);
    await expect(link.publish(`sharenode/v1/${id}/events`, "x", { qos: 1, retain: false })).rejects.toThrow(
      "link: not connected",
    );
    const up = nextEvent(link, "connected");
    await link.start();
    await up;
    for (const topic of [`sharenode/v1/+/events`, `sharenode/v1/${id}/#`, "a/b+", ""]) {
      const err = await link.publish(topic, "x", { qos: 1, retain: false }).then(
        () => null,
        (e: Error) => e,
      );
      expect(err?.name).toBe("LinkError");
      expect(err?.message).toMatch(
        /^link: refusing to publish on .*: a topic name must be non-empty, without \+ or #$/,
      );
    }
    expect(() => new MqttLink({ url: "http://x", deviceId: id, version: "1", stateDir: work })).toThrow(
      /mqtt:\/\/, mqtts:\/\/, ws:\/\/ or wss:\/\//,
    );
  });

  it("rejects a publish whose PUBACK never came when the connection drops, and never re-sends it itself", async () => {
    const proxy = await TcpProxy.start(broker.port);
    cleanups.push(() => proxy.stop());
    const id = newDeviceId();
    const link = makeLink(id, { url: `mqtt://127.0.0.1:${proxy.port}` });
    const up = nextEvent(link, "connected");
    await link.start();
    await up;
    const events = await watch(`sharenode/v1/${id}/events`);

    // 1. The PUBLISH reaches the broker, its PUBACK is lost with the connection.
    proxy.holdDown = true;
    const first = link.publish(`sharenode/v1/${id}/events`, "one", { qos: 1, retain: false });
    await waitFor("the broker to get it", () => events.seen.length === 1);
    const again = nextEvent(link, "connected");
    proxy.cut();
    await expect(first).rejects.toThrow(/connection lost before PUBACK/);
    proxy.holdDown = false;
    await again;

    // 2. The PUBLISH never reaches the broker.
    proxy.holdUp = true;
    const second = link.publish(`sharenode/v1/${id}/events`, "two", { qos: 1, retain: false });
    await new Promise((r) => setTimeout(r, 100));
    const again2 = nextEvent(link, "connected");
    proxy.cut();
    await expect(second).rejects.toThrow(/connection lost before PUBACK/);
    proxy.holdUp = false;
    await again2;

    // Neither was re-sent by mqtt.js after the reconnects: the caller (the outbox) decides.
    await link.publish(`sharenode/v1/${id}/events`, "three", { qos: 1, retain: false });
    await waitFor("the third", () => events.seen.length >= 2);
    await new Promise((r) => setTimeout(r, 200));
    expect(events.seen.map((m) => m.text)).toEqual(["one", "three"]);
  });
});

/** A TCP proxy that can swallow either direction and cut every connection, as a flaky home link would. */
class TcpProxy {
  holdUp = false; // client -> broker bytes are dropped
  holdDown = false; // broker -> client bytes are dropped
  private readonly sockets = new Set<Socket>();
  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(targetPort: number): Promise<TcpProxy> {
    const port = await freePort();
    // The connection handler runs after the constructor below has set `proxy`.
    const server = createServer((client) => {
      const upstream = netConnect(targetPort, "127.0.0.1");
      proxy.sockets.add(client);
      proxy.sockets.add(upstream);
      client.on("data", (d) => {
        if (!proxy.holdUp) upstream.write(d);
      });
      upstream.on("data", (d) => {
        if (!proxy.holdDown) client.write(d);
      });
      const close = () => {
        client.destroy();
        upstream.destroy();
        proxy.sockets.delete(client);
        proxy.sockets.delete(upstream);
      };
      client.on("close", close).on("error", close);
      upstream.on("close", close).on("error", close);
    });
    const proxy = new TcpProxy(server, port);
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
    return proxy;
  }

  cut(): void {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
