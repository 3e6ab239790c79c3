// The fleet side's MQTT connection (fleet watch, fleet send, fleet services): plain subscribe/publish with none
// of the device's announcements. Lives in agent/link because this folder owns the mqtt import.
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";

export interface FleetConnectionOptions {
  url: string;
  username?: string;
  password?: string;
  /** Default 5: `fleet send` uses MQTT 5 response topics and correlation data. */
  protocolVersion?: 5 | 4;
  connectTimeoutMs?: number;
}

export interface FleetMessage {
  topic: string;
  payload: Buffer;
  correlationData?: Buffer;
}

export class FleetConnection {
  private constructor(private readonly client: MqttClient) {}

  /** Connects once; a refused or unreachable broker is an Error with a one-line message. */
  static async connect(options: FleetConnectionOptions): Promise<FleetConnection> {
    const opts: IClientOptions = {
      protocolVersion: options.protocolVersion ?? 5,
      username: options.username,
      password: options.password,
      reconnectPeriod: 0,
      connectTimeout: options.connectTimeoutMs ?? 10_000,
      clean: true,
    };
    const client = mqtt.connect(options.url, opts);
    await new Promise<void>((resolve, reject) => {
      const fail = (err: Error) => {
        client.end(true);
        reject(new Error(`cannot connect to ${options.url}: ${err.message}`));
      };
      client.once("connect", () => {
        client.off("error", fail);
        resolve();
      });
      client.once("error", fail);
      client.once("close", () => fail(new Error("connection closed")));
    });
    client.on("error", () => {});
    return new FleetConnection(client);
  }

  onMessage(handler: (message: FleetMessage) => void): void {
    this.client.on("message", (topic, payload, packet) => {
      handler({ topic, payload, correlationData: packet.properties?.correlationData });
    });
  }

  async subscribe(filters: string[]): Promise<void> {
    await this.client.subscribeAsync(filters, { qos: 1 });
  }

  async publish(
    topic: string,
    payload: Uint8Array,
    options: { responseTopic?: string; correlationData?: Buffer } = {},
  ): Promise<void> {
    const properties =
      options.responseTopic || options.correlationData
        ? { responseTopic: options.responseTopic, correlationData: options.correlationData }
        : undefined;
    await this.client.publishAsync(topic, Buffer.from(payload), { qos: 1, properties });
  }

  async close(): Promise<void> {
    await this.client.endAsync();
  }
}
