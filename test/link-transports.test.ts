// The MQTT link over every transport a device may be configured for, against one real mosquitto with a listener
// per transport (per_listener_settings): mqtts:// with a CA the test makes, mqtts:// with a client certificate the
// broker requires, ws://, wss:// with that CA, and username/password over mqtt://. On each the link connects, its retained birth
// reaches a subscriber (on the plain listener: one broker behind all of them) and a command reaches its handler.
// Each transport has a negative control that must fail the same way a misconfigured device would: no CA (so
// verification is on), no or a foreign client certificate, the wrong framing on the WebSocket port, a wrong
// password. Missing openssl or mosquitto fails the file, naming the Debian package.
import { execFile, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { connectAsync, type MqttClient } from "mqtt";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { MqttLink, type MqttLinkOptions } from "../agent/link/mqtt-link";
import { Broker, freePort } from "./helpers/mosquitto";
import { waiter } from "./helpers/wait";

const run = promisify(execFile);
/** Every case: connect, birth, command, and a negative control, well inside this. */
const CASE_MS = 15_000;
/** How long one connection attempt (or one negative control) may take. */
const ATTEMPT_MS = 5_000;
const PASSWORD = "pw-right";

let work = "";
let broker: Broker;
const ports = { tls: 0, mtls: 0, ws: 0, wss: 0, pw: 0 };
const pem: Record<string, string> = {};
const cleanups: (() => Promise<unknown> | void)[] = [];

function requireTool(command: string, args: string[], debianPackage: string): void {
  const r = spawnSync(command, args, { stdio: "ignore" });
  if (r.error !== undefined)
    throw new Error(`${command} is not installed: these tests need it (apt-get install ${debianPackage})`);
}

async function openssl(args: string[]): Promise<void> {
  await run("openssl", args, { cwd: work }).catch((err: Error & { stderr?: string }) => {
    throw new Error(`openssl ${args.join(" ")} failed: ${err.stderr?.trim() || err.message}`);
  });
}

/** A P-256 key and a certificate for `subject`, issued by `ca` (or self-signed as a CA when `ca` is absent). */
async function makeCert(name: string, subject: string, extensions: string[], ca?: string): Promise<void> {
  if (ca === undefined) {
    await openssl([
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      `${name}.key`,
      "-out",
      `${name}.crt`,
      "-days",
      "2",
      "-subj",
      subject,
      ...extensions.flatMap((e) => ["-addext", e]),
    ]);
  } else {
    await openssl([
      "req",
      "-new",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      `${name}.key`,
      "-out",
      `${name}.csr`,
      "-subj",
      subject,
    ]);
    writeFileSync(join(work, `${name}.ext`), extensions.join("\n") + "\n");
    await openssl([
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      `${ca}.crt`,
      "-CAkey",
      `${ca}.key`,
      "-CAcreateserial",
      "-out",
      `${name}.crt`,
      "-days",
      "2",
      "-extfile",
      `${name}.ext`,
    ]);
  }
  pem[`${name}.crt`] = readFileSync(join(work, `${name}.crt`), "utf8");
  pem[`${name}.key`] = readFileSync(join(work, `${name}.key`), "utf8");
}

beforeAll(async () => {
  requireTool("openssl", ["version"], "openssl");
  requireTool("mosquitto_passwd", ["-h"], "mosquitto");
  work = mkdtempSync(join(tmpdir(), "sharenode-transports-"));

  const CA = ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign"];
  await makeCert("ca", "/CN=sharenode test CA", CA);
  await makeCert(
    "server",
    "/CN=127.0.0.1",
    ["basicConstraints=CA:FALSE", "subjectAltName=IP:127.0.0.1", "extendedKeyUsage=serverAuth"],
    "ca",
  );
  await makeCert("device", "/CN=device-by-cert", ["basicConstraints=CA:FALSE", "extendedKeyUsage=clientAuth"], "ca");
  // A CA the broker has never heard of, and a device certificate it issued: must not get in.
  await makeCert("rogue-ca", "/CN=rogue CA", CA);
  await makeCert(
    "rogue",
    "/CN=device-by-cert",
    ["basicConstraints=CA:FALSE", "extendedKeyUsage=clientAuth"],
    "rogue-ca",
  );

  // The password file as an operator makes it.
  const passwd = join(work, "passwd");
  await run("mosquitto_passwd", ["-c", "-b", passwd, "device", PASSWORD]).catch((err: Error) => {
    throw new Error(`mosquitto_passwd failed (Debian package mosquitto): ${err.message}`);
  });

  ports.tls = await freePort();
  ports.mtls = await freePort();
  ports.ws = await freePort();
  ports.wss = await freePort();
  ports.pw = await freePort();
  const tls = ["cafile {dir}/ca.crt", "certfile {dir}/server.crt", "keyfile {dir}/server.key"];
  broker = await Broker.start({
    config: [
      "per_listener_settings true",
      // The helper's first listener: plain and anonymous, where the "fleet" watches and sends commands.
      "allow_anonymous true",
      `listener ${ports.tls} 127.0.0.1`,
      ...tls,
      "allow_anonymous true",
      `listener ${ports.mtls} 127.0.0.1`,
      ...tls,
      "require_certificate true",
      "use_identity_as_username true",
      "allow_anonymous false",
      `listener ${ports.ws} 127.0.0.1`,
      "protocol websockets",
      "allow_anonymous true",
      `listener ${ports.wss} 127.0.0.1`,
      "protocol websockets",
      ...tls,
      "allow_anonymous true",
      `listener ${ports.pw} 127.0.0.1`,
      "allow_anonymous false",
      "password_file {dir}/passwd",
      // The helper writes files 0600 into root's 0700 temp directory; mosquitto started as root would drop to
      // the user "mosquitto" before reading them: stay the user the test runs as (as acl.test.ts does).
      `user ${userInfo().username}`,
    ],
    files: {
      "ca.crt": pem["ca.crt"]!,
      "server.crt": pem["server.crt"]!,
      "server.key": pem["server.key"]!,
      passwd: readFileSync(passwd, "utf8"),
    },
  });
}, 30_000);

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

afterAll(async () => {
  await broker?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

const newDeviceId = () => randomBytes(16).toString("hex");

const waitFor = waiter({ timeoutMs: ATTEMPT_MS });

interface Seen {
  topic: string;
  text: string;
  retain: boolean;
}

/** A fleet-side client on the broker's plain listener that records what arrives on `filter`. */
async function watch(filter: string): Promise<{ client: MqttClient; seen: Seen[] }> {
  const client = await connectAsync(broker.url, { protocolVersion: 5, reconnectPeriod: 0, connectTimeout: ATTEMPT_MS });
  cleanups.push(() => client.endAsync(true));
  const seen: Seen[] = [];
  client.on("message", (topic, payload, packet) =>
    seen.push({ topic, text: payload.toString(), retain: packet.retain }),
  );
  await client.subscribeAsync(filter, { qos: 1 });
  return { client, seen };
}

interface Run {
  link: MqttLink;
  id: string;
  /** The link's info lines ("connected to ...", "connection attempt N to ... failed (reason)"). */
  info: string[];
  connected: number;
  commands: string[];
}

/** A link to `url` with `extra` options, stopped (in finally) once `body` is done, whatever happens. */
async function withLink(url: string, extra: Partial<MqttLinkOptions>, body: (r: Run) => Promise<void>): Promise<Run> {
  const id = newDeviceId();
  const info: string[] = [];
  const link = new MqttLink({
    url,
    deviceId: id,
    version: "1.2.3",
    stateDir: join(work, `state-${id.slice(0, 8)}`),
    keepaliveSeconds: 10,
    connectTimeoutMs: ATTEMPT_MS,
    stopTimeoutMs: 2000,
    backoff: { baseMs: 50, capMs: 200 },
    log: {
      debug: () => {},
      info: (m) => void info.push(typeof m === "string" ? m : m()),
      warn: (m) => void info.push(typeof m === "string" ? m : m()),
    },
    ...extra,
  });
  const r: Run = { link, id, info, connected: 0, commands: [] };
  link.on("connected", () => r.connected++);
  link.onMessage((topic, payload) => {
    r.commands.push(`${topic} ${payload.toString()}`);
  });
  try {
    await body(r);
  } finally {
    await link.stop();
  }
  return r;
}

/** Connects, announces the retained birth and receives a command. */
async function expectWorks(url: string, extra: Partial<MqttLinkOptions> = {}): Promise<Run> {
  return withLink(url, extra, async (r) => {
    await r.link.start();
    await waitFor(
      () => `"connected" over ${url} (link said: ${r.info.join(" | ")})`,
      () => r.connected === 1,
    );
    expect(r.link.connected).toBe(true);
    // Subscribed after the birth: only a retained message can arrive.
    const fleet = await watch(`sharenode/v1/${r.id}/state`);
    await waitFor("the retained birth", () => fleet.seen.length >= 1);
    expect(fleet.seen[0]!.retain).toBe(true);
    expect(JSON.parse(fleet.seen[0]!.text)).toEqual({
      state: "online",
      bdSeq: 1,
      ts: expect.any(Number),
      version: "1.2.3",
    });
    await fleet.client.publishAsync(`sharenode/v1/${r.id}/cmd/ping`, "over the transport", { qos: 1 });
    await waitFor("the command", () => r.commands.length === 1);
    expect(r.commands).toEqual([`sharenode/v1/${r.id}/cmd/ping over the transport`]);
  });
}

/**
 * Never connects: an attempt fails with a reason matching `reason`, nothing reaches "connected", and no birth ever
 * reaches the broker. Returns the reason the link logged.
 */
async function expectRefused(url: string, extra: Partial<MqttLinkOptions>, reason: RegExp): Promise<string> {
  const r = await withLink(url, extra, async (r) => {
    await r.link.start();
    await waitFor(
      `a failed attempt over ${url}`,
      () => r.info.some((l) => l.startsWith("connection attempt ")) || r.connected > 0,
    );
  });
  expect(r.connected, r.info.join("\n")).toBe(0);
  expect(r.link.stats.connects).toBe(0);
  const failure = r.info.find((l) => l.startsWith("connection attempt "))!;
  const logged = new RegExp(`^connection attempt \\d+ to ${url.replace(/[.]/g, "\\.")} failed \\((.+)\\)$`, "s").exec(
    failure,
  );
  expect(logged, failure).not.toBeNull();
  expect(logged![1]).toMatch(reason);
  const fleet = await watch(`sharenode/v1/${r.id}/state`);
  await new Promise((res) => setTimeout(res, 150));
  expect(fleet.seen).toEqual([]);
  return logged![1]!;
}

const UNTRUSTED = /^(self-signed certificate in certificate chain|unable to get local issuer certificate)$/;

describe("MqttLink transports against mosquitto", () => {
  it(
    "mqtts:// verifies the broker against the configured CA; without that CA it never connects",
    async () => {
      const url = `mqtts://127.0.0.1:${ports.tls}`;
      const r = await expectWorks(url, { ca: pem["ca.crt"] });
      // TLS sockets are counted.
      expect(r.link.stats.bytesIn).toBeGreaterThan(0);
      expect(r.link.stats.bytesOut).toBeGreaterThan(0);
      // Negative controls: no CA (the system's store does not know ours), and a CA that did not issue the server's.
      await expectRefused(url, {}, UNTRUSTED);
      await expectRefused(url, { ca: pem["rogue-ca.crt"] }, UNTRUSTED);
    },
    CASE_MS,
  );

  it(
    "mqtts:// with a client certificate the broker requires: in with the device's cert and key, refused without or with a foreign one",
    async () => {
      const url = `mqtts://127.0.0.1:${ports.mtls}`;
      // allow_anonymous false on this listener: the certificate's CN became the user name (use_identity_as_username).
      await expectWorks(url, { ca: pem["ca.crt"], cert: pem["device.crt"], key: pem["device.key"] });
      await expectRefused(url, { ca: pem["ca.crt"] }, /alert certificate required/);
      await expectRefused(
        url,
        { ca: pem["ca.crt"], cert: pem["rogue.crt"], key: pem["rogue.key"] },
        /alert unknown ca/,
      );
    },
    CASE_MS,
  );

  it(
    "ws://: connects through mosquitto's WebSocket listener; the wrong framing on either port never connects",
    async () => {
      await expectWorks(`ws://127.0.0.1:${ports.ws}`);
      // The listener really is WebSocket-only (plain MQTT gets an HTTP answer the MQTT parser rejects) and a ws://
      // link really speaks WebSocket (the plain listener drops the HTTP upgrade): the case above passed because the
      // link framed MQTT in WebSocket.
      await expectRefused(
        `mqtt://127.0.0.1:${ports.ws}`,
        { connectTimeoutMs: 1000 },
        /Invalid header|Invalid|ECONNRESET|connection closed|timeout/i,
      );
      await expectRefused(
        `ws://127.0.0.1:${broker.port}`,
        { connectTimeoutMs: 1000 },
        /ECONNRESET|socket hang up|Unexpected server response|connection closed|timeout/i,
      );
    },
    CASE_MS,
  );

  it(
    "wss://: WebSocket over TLS, verified against the configured CA; without that CA it never connects",
    async () => {
      const url = `wss://127.0.0.1:${ports.wss}`;
      await expectWorks(url, { ca: pem["ca.crt"] });
      await expectRefused(url, {}, UNTRUSTED);
      await expectRefused(url, { ca: pem["rogue-ca.crt"] }, UNTRUSTED);
    },
    CASE_MS,
  );

  it(
    "mqtt:// with username and password against allow_anonymous false; a wrong password or none is refused",
    async () => {
      const url = `mqtt://127.0.0.1:${ports.pw}`;
      await expectWorks(url, { username: "device", password: PASSWORD });
      // mosquitto 2.0 answers 135 Not authorized to both (134 Bad user name or password would do as well).
      await expectRefused(
        url,
        { username: "device", password: "pw-wrong" },
        /^Connection refused: (Not authorized|Bad User Name or Password)$/i,
      );
      await expectRefused(url, {}, /^Connection refused: Not authorized$/);
    },
    CASE_MS,
  );

  // Node's TLS errors for an alert from the peer are OpenSSL's error-queue text, which ends in a newline ("...:SSL
  // alert number 116\n"): logged verbatim, a line-oriented log (journald, syslog) would get a stray ")" line per
  // attempt. The link flattens it (agent/link/mqtt-link.ts).
  it(
    "reports a refused TLS handshake on one log line",
    async () => {
      const url = `mqtts://127.0.0.1:${ports.mtls}`;
      const reasons = [
        await expectRefused(url, { ca: pem["ca.crt"] }, /alert certificate required/),
        await expectRefused(
          url,
          { ca: pem["ca.crt"], cert: pem["rogue.crt"], key: pem["rogue.key"] },
          /alert unknown ca/,
        ),
      ];
      for (const reason of reasons) expect(reason, JSON.stringify(reason)).not.toMatch(/[\r\n]/);
    },
    CASE_MS,
  );
});
