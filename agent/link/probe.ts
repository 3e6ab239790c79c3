// A one-shot broker round trip for the console's `selftest`: connect with the device's credentials under a client
// id of its own (so the running daemon's connection is not taken over), subscribe to the device's command topic,
// time CONNACK and SUBACK, and leave. No will, clean session, no retries: it says whether the broker, the
// credentials and the ACL let this device in, and how long that takes.
import { connect, type IClientOptions, type MqttClient } from "mqtt";
import { randomBytes } from "node:crypto";
import { topicsFor } from "../protocol/topics.js";
import { credentialOptions, type BrokerCredentials } from "./mqtt-link.js";
import { errorLine } from "../util/errors.js";

export interface ProbeOptions extends BrokerCredentials {
  url: string;
  deviceId: string;
  protocolVersion?: 5 | 4;
  /** The whole probe gives up after this (default 5000 ms). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export type ProbeResult =
  | { ok: true; clientId: string; connackMs: number; subackMs: number; topic: string }
  | { ok: false; clientId: string; stage: "connect" | "subscribe"; error: string; connackMs?: number };

/** Connects, subscribes to `sharenode/v1/{deviceId}/cmd/+`, disconnects. Never throws. */
export async function probeBroker(options: ProbeOptions): Promise<ProbeResult> {
  const clientId = `${options.deviceId.slice(0, 16)}-console-${randomBytes(3).toString("hex")}`;
  const timeoutMs = options.timeoutMs ?? 5000;
  let topic: string;
  try {
    topic = topicsFor(options.deviceId).cmdFilter;
  } catch (err) {
    return { ok: false, clientId, stage: "connect", error: errorLine(err) };
  }
  const clientOptions: IClientOptions = {
    clientId,
    protocolVersion: options.protocolVersion ?? 5,
    clean: true,
    keepalive: 30,
    connectTimeout: timeoutMs,
    reconnectPeriod: 0,
    resubscribe: false,
    ...credentialOptions(options),
  };
  const started = performance.now();
  let client: MqttClient;
  try {
    client = connect(options.url, clientOptions);
  } catch (err) {
    return { ok: false, clientId, stage: "connect", error: errorLine(err) };
  }
  let lastError = "";
  client.on("error", (err) => (lastError = err.message.replace(/\s+/g, " ").trim()));
  const finish = () => new Promise<void>((resolve) => client.end(true, {}, () => resolve()));
  let stage: "connect" | "subscribe" = "connect";
  let connackMs: number | undefined;
  try {
    const outcome = await new Promise<ProbeResult>((resolve) => {
      const timer = setTimeout(() => resolve(fail(`no answer within ${timeoutMs} ms`)), timeoutMs);
      const onAbort = () => resolve(fail("interrupted"));
      options.signal?.addEventListener("abort", onAbort, { once: true });
      const done = (result: ProbeResult) => {
        clearTimeout(timer);
        options.signal?.removeEventListener("abort", onAbort);
        resolve(result);
      };
      function fail(error: string): ProbeResult {
        return { ok: false, clientId, stage, error, ...(connackMs !== undefined ? { connackMs } : {}) };
      }
      if (options.signal?.aborted) return done(fail("interrupted"));
      client.once("close", () => done(fail(lastError || "the broker closed the connection")));
      client.once("connect", () => {
        connackMs = performance.now() - started;
        stage = "subscribe";
        const subscribeStarted = performance.now();
        client.subscribe(topic, { qos: 1 }, (err, granted) => {
          if (err) return done(fail(err.message));
          const refused = granted?.find((g) => g.qos >= 128);
          if (refused) return done(fail(`the broker refused the subscription to ${topic} (reason ${refused.qos})`));
          done({ ok: true, clientId, connackMs: connackMs!, subackMs: performance.now() - subscribeStarted, topic });
        });
      });
    });
    return outcome;
  } finally {
    await finish();
  }
}
