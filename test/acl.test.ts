// board/mosquitto/ (acl + mosquitto.conf) in a real mosquitto: each device confined to its own topics, the fleet
// account reading all of them and sending commands, anonymous clients refused. mosquitto denies silently (a denied
// publish is dropped, a denied subscription receives nothing), so every "nothing arrives" below is paired with a
// control message that must arrive on the same connection: a broken setup fails the test instead of passing quietly.
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import mqtt, { type MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Broker } from "./helpers/mosquitto";
import { waitFor } from "./helpers/wait";

const run = promisify(execFile);
const BOARD = new URL("../board/mosquitto/", import.meta.url);

const A = "3f1c0d6e9b2a4c5d8e7f60718293a4b5";
const B = "b7e2a90c41d35f68a0c2e4f6183b5d79";
const PASSWORDS: Record<string, string> = { [A]: "pw-device-a", [B]: "pw-device-b", fleet: "pw-fleet" };
// How long "nothing arrives" is watched for, after the control message on the same connection has arrived.
const SILENCE_MS = 400;

let broker: Broker;
const clients: MqttClient[] = [];

interface Received {
  topic: string;
  payload: string;
}

/** A connected client that records every message it receives. */
async function connect(
  username: string | undefined,
  password = username ? PASSWORDS[username] : undefined,
  extra: mqtt.IClientOptions = {},
) {
  const client = await mqtt.connectAsync(broker.url, {
    clientId: `test-${username ?? "anon"}-${Math.random().toString(16).slice(2, 8)}`,
    username,
    password,
    protocolVersion: 5,
    reconnectPeriod: 0,
    connectTimeout: 5000,
    ...extra,
  });
  clients.push(client);
  const received: Received[] = [];
  client.on("message", (topic, payload) => received.push({ topic, payload: payload.toString() }));
  return { client, received };
}

async function arrives(received: Received[], topic: string, payload: string, timeoutMs = 5000): Promise<void> {
  await waitFor(`${topic} ${payload}`, () => received.some((m) => m.topic === topic && m.payload === payload), {
    timeoutMs,
    detail: () => `got ${JSON.stringify(received)}`,
  });
}

const silence = () => new Promise((r) => setTimeout(r, SILENCE_MS));

beforeAll(async () => {
  // The shipped snippet, with its paths pointed at the broker's directory; the helper supplies the listener.
  const conf = (await readFile(new URL("mosquitto.conf", BOARD), "utf8"))
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#") && !l.startsWith("listener "))
    .map((l) => l.replaceAll("/etc/mosquitto/", "{dir}/"));
  expect(conf).toEqual([
    "allow_anonymous false",
    "password_file {dir}/sharenode.passwd",
    "acl_file {dir}/sharenode.acl",
  ]);

  // The password file as an operator makes it: mosquitto_passwd -b, one account at a time.
  const scratch = await mkdtemp(join(tmpdir(), "sharenode-passwd-"));
  try {
    const file = join(scratch, "sharenode.passwd");
    let first = true;
    for (const [user, password] of Object.entries(PASSWORDS)) {
      await run("mosquitto_passwd", [...(first ? ["-c"] : []), "-b", file, user, password]).catch((err: Error) => {
        throw new Error(`mosquitto_passwd failed (Debian package mosquitto): ${err.message}`);
      });
      first = false;
    }
    broker = await Broker.start({
      // mosquitto started as root drops to the user "mosquitto" before it reads the password file, which the
      // helper keeps in root's 0700 temp directory: stay the user the test runs as (ignored when not root).
      config: [...conf, `user ${userInfo().username}`],
      files: {
        "sharenode.passwd": await readFile(file, "utf8"),
        "sharenode.acl": await readFile(new URL("acl", BOARD), "utf8"),
      },
    });
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true).catch(() => {})));
  await broker?.stop();
});

describe("board/mosquitto", () => {
  it("lets a device publish its own state (and last will), telemetry, events and replies, and the fleet receive them", async () => {
    const fleet = await connect("fleet");
    await fleet.client.subscribeAsync("sharenode/v1/+/#", { qos: 1 });
    // Consumers scale out with shared subscriptions (agent/link/README.md): the ACL applies to the topic inside.
    const consumer = await connect("fleet");
    await consumer.client.subscribeAsync("$share/consumers/sharenode/v1/+/events", { qos: 1 });
    const death = JSON.stringify({ state: "offline", bdSeq: 7 });
    const a = await connect(A, undefined, {
      will: { topic: `sharenode/v1/${A}/state`, payload: Buffer.from(death), qos: 1, retain: true },
    });
    const birth = JSON.stringify({ state: "online", bdSeq: 7, ts: 1764313273000, version: "0.1.0" });
    const telemetry = JSON.stringify({ seq: 1, ts: 1764313273480, cpu_pct: 12.5 });
    const event = '{"seq":1,"ts":1764313273490,"type":"boot"}';
    await a.client.publishAsync(`sharenode/v1/${A}/state`, birth, { qos: 1, retain: true });
    await a.client.publishAsync(`sharenode/v1/${A}/telemetry`, telemetry, { qos: 1 });
    await a.client.publishAsync(`sharenode/v1/${A}/events`, event, { qos: 1 });
    await a.client.publishAsync(`sharenode/v1/${A}/reply`, '{"body":"{}","sig":"3.1.1"}', { qos: 1 });
    await a.client.publishAsync(`sharenode/v1/${A}/reply/9f2c`, '{"body":"{}","sig":"5"}', { qos: 1 });
    await arrives(fleet.received, `sharenode/v1/${A}/state`, birth);
    await arrives(fleet.received, `sharenode/v1/${A}/telemetry`, telemetry);
    await arrives(fleet.received, `sharenode/v1/${A}/events`, event);
    await arrives(fleet.received, `sharenode/v1/${A}/reply`, '{"body":"{}","sig":"3.1.1"}');
    await arrives(fleet.received, `sharenode/v1/${A}/reply/9f2c`, '{"body":"{}","sig":"5"}');
    await arrives(consumer.received, `sharenode/v1/${A}/events`, event);
    // The box loses power: the broker publishes the will, which the ACL must let through.
    a.client.stream.destroy();
    await arrives(fleet.received, `sharenode/v1/${A}/state`, death);
  });

  it("never delivers another device's commands or telemetry to a device", async () => {
    const fleet = await connect("fleet");
    const a = await connect(A);
    const b = await connect(B);
    // A tries to listen in on B: its commands, and everyone's telemetry. Its own commands are the control.
    await a.client.subscribeAsync([`sharenode/v1/${B}/cmd/#`, "sharenode/v1/+/telemetry", `sharenode/v1/${A}/cmd/#`], {
      qos: 1,
    });
    await b.client.subscribeAsync(`sharenode/v1/${B}/cmd/#`, { qos: 1 });
    await fleet.client.subscribeAsync("sharenode/v1/+/telemetry", { qos: 1 });

    await fleet.client.publishAsync(`sharenode/v1/${B}/cmd/ping`, "for-b", { qos: 1 });
    await b.client.publishAsync(`sharenode/v1/${B}/telemetry`, "b-telemetry", { qos: 1 });
    await fleet.client.publishAsync(`sharenode/v1/${A}/cmd/ping`, "for-a", { qos: 1 });

    await arrives(b.received, `sharenode/v1/${B}/cmd/ping`, "for-b"); // the fleet may command B ...
    await arrives(fleet.received, `sharenode/v1/${B}/telemetry`, "b-telemetry"); // ... and read B's telemetry
    await arrives(a.received, `sharenode/v1/${A}/cmd/ping`, "for-a"); // A's own command arrives ...
    await silence();
    expect(a.received).toEqual([{ topic: `sharenode/v1/${A}/cmd/ping`, payload: "for-a" }]); // ... and nothing of B's
  });

  it("drops what a device publishes on another device's topics", async () => {
    const fleet = await connect("fleet");
    await fleet.client.subscribeAsync("sharenode/v1/+/#", { qos: 1, rh: 2 }); // rh 2: not the retained states
    const b = await connect(B);
    await b.client.subscribeAsync(`sharenode/v1/${B}/cmd/#`, { qos: 1 });
    const a = await connect(A);

    // Forged telemetry for B, a command to B (only the fleet may), a command to itself, a topic outside the tree.
    for (const topic of [
      `sharenode/v1/${B}/telemetry`,
      `sharenode/v1/${B}/state`,
      `sharenode/v1/${B}/cmd/ping`,
      `sharenode/v1/${A}/cmd/ping`,
      "other/topic",
    ]) {
      await a.client.publishAsync(topic, "forged", { qos: 1 }).catch(() => {}); // MQTT 5 may answer "not authorized"
    }
    await a.client.publishAsync(`sharenode/v1/${A}/telemetry`, "genuine", { qos: 1 }); // the control
    await arrives(fleet.received, `sharenode/v1/${A}/telemetry`, "genuine");
    await silence();
    expect(fleet.received).toEqual([{ topic: `sharenode/v1/${A}/telemetry`, payload: "genuine" }]);
    expect(b.received).toEqual([]);
  });

  it("refuses anonymous clients and wrong passwords", async () => {
    // MQTT 5 reason codes: 135 Not authorized; 134 Bad user name or password (mosquitto 2.0 answers 135 to both).
    await expect(connect(undefined)).rejects.toMatchObject({ code: 135 });
    const refused = expect.objectContaining({ code: expect.toSatisfy((c: number) => c === 134 || c === 135) });
    await expect(connect(A, "wrong")).rejects.toEqual(refused);
    await expect(connect("0000000000000000000000000000000f", "pw-device-a")).rejects.toEqual(refused);
    await expect(connect(A, PASSWORDS[B])).rejects.toEqual(refused); // another device's password
    // The same with MQTT 3.1.1, which a device may be configured for (link.protocolVersion 4).
    await expect(
      mqtt.connectAsync(broker.url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000 }).then((c) => {
        clients.push(c);
        return c;
      }),
    ).rejects.toMatchObject({ code: 5 }); // 3.1.1: not authorized
  });
});
