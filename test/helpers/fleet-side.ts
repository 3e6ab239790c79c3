// The fleet's side of a test against agents on a real broker: one MQTT client that signs commands with the fleet
// key, sends them to a device and verifies its reply, and keeps every event the devices publish; and the
// environment of an agent (`sharenode run`) on that broker, on the sim board, with its own state and data.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import mqtt, { type MqttClient } from "mqtt";
import { openReply, signCommand, type FleetKey, type Reply } from "../../agent/protocol/envelope";
import { topicsFor } from "../../agent/protocol/topics";
import type { waitFor as WaitFor } from "./wait";

export interface Device {
  deviceId: string;
  /** Hex. */
  publicKey: string;
}

export class FleetSide {
  readonly inbox: Array<{ topic: string; payload: Buffer }> = [];

  private constructor(
    readonly client: MqttClient,
    readonly fleet: FleetKey,
    private readonly waitFor: typeof WaitFor,
  ) {
    client.on("message", (topic, payload) => this.inbox.push({ topic, payload }));
  }

  /** Connects (MQTT 5) and subscribes to every device's events. */
  static async connect(
    brokerUrl: string,
    fleet: FleetKey,
    waitFor: typeof WaitFor,
    clientId: string,
  ): Promise<FleetSide> {
    const client = await mqtt.connectAsync(brokerUrl, { protocolVersion: 5, clientId });
    const side = new FleetSide(client, fleet, waitFor);
    await client.subscribeAsync("sharenode/v1/+/events", { qos: 1 });
    return side;
  }

  /** The events received so far, parsed. */
  events(): Array<Record<string, unknown>> {
    return this.inbox
      .filter((m) => m.topic.endsWith("/events"))
      .map((m) => JSON.parse(m.payload.toString()) as Record<string, unknown>);
  }

  /** Signs `cmd` for the device, sends it with a fresh response topic, and returns the verified reply. */
  async command(device: Device, cmd: string, args: Record<string, unknown> = {}): Promise<Reply> {
    const topics = topicsFor(device.deviceId);
    const responseTopic = topics.replyTo(`t${Math.random().toString(16).slice(2)}`);
    await this.client.subscribeAsync(responseTopic, { qos: 1 });
    const payload = signCommand({ cmd, deviceId: device.deviceId, args, exp: Date.now() + 60_000 }, this.fleet);
    await this.client.publishAsync(topics.cmd(cmd), Buffer.from(payload), { qos: 1, properties: { responseTopic } });
    const message = await this.waitFor(`a reply to ${cmd}`, () => this.inbox.find((m) => m.topic === responseTopic));
    const opened = openReply(message.payload, { devicePublicKey: device.publicKey, deviceId: device.deviceId });
    if (!opened.ok) throw new Error(`reply does not verify: ${opened.reason}`);
    return opened.reply;
  }

  /** command(), and its result; a refusal throws with its code and message. */
  async result<T>(device: Device, cmd: string, args: Record<string, unknown> = {}): Promise<T> {
    const reply = await this.command(device, cmd, args);
    if (!reply.ok) throw new Error(`${cmd} refused: ${reply.error.code}: ${reply.error.message}`);
    return reply.result as T;
  }

  async end(): Promise<void> {
    await this.client.endAsync();
  }
}

/**
 * An agent's environment: the broker, the fleet's key, its state and data under `home` (made here), the sim board
 * (a test must never arm this machine's own /dev/watchdog: a SIGKILLed agent would reset it), any free port.
 */
export function agentEnv(
  o: { brokerUrl: string; fleetKeyHex: string; home: string },
  extra: Record<string, string> = {},
): NodeJS.ProcessEnv {
  mkdirSync(join(o.home, "data"), { recursive: true });
  return {
    ...process.env,
    SHARENODE_BROKER: o.brokerUrl,
    SHARENODE_STATE: join(o.home, "state"),
    SHARENODE_DATA: join(o.home, "data"),
    SHARENODE_FLEET_KEY: o.fleetKeyHex,
    SHARENODE_ALLOW_SYSTEM_DISK: "true",
    SHARENODE_BOARD: "sim",
    SHARENODE_SERVE_PORT: "0",
    ...extra,
  };
}
