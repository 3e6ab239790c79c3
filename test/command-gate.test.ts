// The command gate (agent/link/command-gate.ts) on a real nonce log: every refusal is a signed error reply that
// openReply verifies and no handler runs; a good command runs its handler exactly once; replays are refused within
// one run and across restarts; the floor keeps refusing forgotten nonces when the clock goes back. Error replies to
// unauthenticated messages are rate-limited, those to signed commands never; refusals are logged summarized.
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RecordLog } from "../agent/durable/record-log";
import { type DeviceIdentity, loadOrCreateDeviceIdentity } from "../agent/identity/device-key";
import {
  CommandGate,
  CommandGateError,
  type CommandGateOptions,
  type CommandHandler,
  type HandledCommand,
} from "../agent/link/command-gate";
import {
  COMMAND_DOMAIN,
  MAX_COMMAND_BYTES,
  MAX_REPLY_BYTES,
  openReply,
  type Reply,
  signCommand,
  type Signer,
} from "../agent/protocol/envelope";
import { topicsFor } from "../agent/protocol/topics";

const T0 = 1_767_225_600_000;

let dir: string;
let fleet: DeviceIdentity;
let otherFleet: DeviceIdentity;
let device: DeviceIdentity;
let logCounter = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sharenode-commands-"));
  fleet = await loadOrCreateDeviceIdentity(join(dir, "fleet"));
  otherFleet = await loadOrCreateDeviceIdentity(join(dir, "other-fleet"));
  device = await loadOrCreateDeviceIdentity(join(dir, "device"));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

class Clock {
  now = T0;
  read = (): number => this.now;
}

interface Rig {
  gate: CommandGate;
  clock: Clock;
  path: string;
  calls: Array<{ cmd: string; args: unknown; nonce: string }>;
  handlers: Record<string, CommandHandler>;
  send(
    cmd: string,
    fields?: { args?: Record<string, unknown>; nonce?: string; exp?: number; signer?: Signer; topicCmd?: string },
  ): Promise<Reply>;
  deliver(topic: string, payload: Uint8Array): Promise<Reply>;
}

async function rig(
  path = join(dir, `nonces-${logCounter++}.log`),
  clock = new Clock(),
  extra: Partial<CommandGateOptions> = {},
): Promise<Rig> {
  const calls: Rig["calls"] = [];
  const record =
    (cmd: string, result: (args: Record<string, unknown>) => unknown): CommandHandler =>
    async (args, ctx) => {
      calls.push({ cmd, args, nonce: ctx.nonce });
      expect(ctx).toMatchObject({ deviceId: device.deviceId, cmd, receivedAt: clock.now });
      return result(args);
    };
  const handlers: Record<string, CommandHandler> = {
    ping: record("ping", () => ({ pong: true })),
    echo: record("echo", (args) => args),
    fail: record("fail", () => {
      throw Object.assign(new Error("no such object\nsecond line"), { code: "not-found" });
    }),
    crash: record("crash", () => {
      throw new TypeError("boom");
    }),
  };
  const gate = new CommandGate({
    deviceId: device.deviceId,
    fleetPublicKey: fleet.publicKeyHex,
    nonceLogPath: path,
    clock: clock.read,
    signer: device,
    ...extra,
  });
  await gate.start();
  const deliver = async (topic: string, payload: Uint8Array): Promise<Reply> =>
    replyOf(await gate.handle(topic, payload, handlers));
  const send: Rig["send"] = (cmd, fields = {}) => {
    const payload = signCommand(
      {
        cmd,
        deviceId: device.deviceId,
        args: fields.args ?? {},
        nonce: fields.nonce,
        exp: fields.exp ?? clock.now + 60_000,
      },
      fields.signer ?? fleet,
    );
    return deliver(topicsFor(device.deviceId).cmd(fields.topicCmd ?? cmd), payload);
  };
  return { gate, clock, path, calls, handlers, send, deliver };
}

function expectError(reply: Reply, code: string, nonce: string | null | undefined = undefined): void {
  expect(reply.ok, JSON.stringify(reply)).toBe(false);
  if (reply.ok) return;
  expect(reply.error.code).toBe(code);
  if (nonce !== undefined) expect(reply.nonce).toBe(nonce);
}

/** The verified reply a handled command carries, consistent with what the gate says about it. */
function replyOf(handled: HandledCommand): Reply {
  if (handled.replyPayload === null) throw new Error(`no reply to a ${handled.code} refusal (rate-limited)`);
  const opened = openReply(handled.replyPayload, { devicePublicKey: device.publicKey, deviceId: device.deviceId });
  if (!opened.ok) throw new Error(`reply does not verify: ${opened.reason}`);
  expect(handled.ok).toBe(opened.reply.ok);
  expect(handled.code).toBe(opened.reply.ok ? null : opened.reply.error.code);
  if (!opened.reply.ok) expect(opened.reply.error.message).toMatch(/^[^\r\n]+$/);
  return opened.reply;
}

const nonce = (n: number): string => n.toString(16).padStart(32, "0");

describe("CommandGate", () => {
  it("runs a good command's handler exactly once and returns a verified ok reply", async () => {
    const r = await rig();
    const reply = await r.send("echo", { args: { a: 1, b: ["x"] }, nonce: nonce(1) });
    expect(reply).toEqual({
      v: 1,
      cmd: "echo",
      deviceId: device.deviceId,
      nonce: nonce(1),
      ok: true,
      result: { a: 1, b: ["x"] },
    });
    expect(r.calls).toEqual([{ cmd: "echo", args: { a: 1, b: ["x"] }, nonce: nonce(1) }]);
    expect((await stat(r.path)).mode & 0o777).toBe(0o600);
    await r.gate.stop();
  });

  it("refuses forged, expired, too-far-ahead, malformed, oversized, misdirected and unknown commands without calling a handler", async () => {
    const r = await rig();
    const topic = topicsFor(device.deviceId).cmd("ping");
    expectError(await r.send("ping", { signer: otherFleet, nonce: nonce(2) }), "bad-signature", null);
    expectError(await r.send("ping", { exp: r.clock.now, nonce: nonce(3) }), "expired", nonce(3));
    expectError(await r.send("ping", { exp: r.clock.now + 600_001, nonce: nonce(4) }), "too-far-ahead", nonce(4));
    expectError(await r.deliver(topic, Buffer.from("{not json")), "malformed", null);
    expectError(await r.deliver(topic, new Uint8Array(MAX_COMMAND_BYTES + 1)), "too-large", null);
    expectError(await r.send("ping", { topicCmd: "echo", nonce: nonce(5) }), "wrong-command", nonce(5));
    const other = signCommand(
      { cmd: "ping", deviceId: "0".repeat(32), args: {}, nonce: nonce(6), exp: r.clock.now + 1000 },
      fleet,
    );
    expectError(await r.deliver(topic, other), "wrong-device", nonce(6));
    expectError(await r.deliver(topicsFor("0".repeat(32)).cmd("ping"), other), "wrong-device", null);
    expectError(await r.deliver(topicsFor(device.deviceId).state, other), "malformed", null);
    const unknown = await r.send("reboot", { nonce: nonce(7) });
    expectError(unknown, "unknown-command", nonce(7));
    expect(unknown.cmd).toBe("reboot");
    // Handlers are looked up as own properties only.
    for (const [i, name] of ["constructor", "__proto__", "toString", "hasOwnProperty"].entries()) {
      expectError(await r.send(name, { nonce: nonce(100 + i) }), "unknown-command");
    }
    expect(r.calls).toEqual([]);
    await r.gate.stop();
  });

  it("refuses a replayed nonce, in the same run and after a restart from the same nonce log", async () => {
    const r = await rig();
    const payload = signCommand(
      { cmd: "ping", deviceId: device.deviceId, args: {}, nonce: nonce(8), exp: T0 + 300_000 },
      fleet,
    );
    const topic = topicsFor(device.deviceId).cmd("ping");
    expect((await r.deliver(topic, payload)).ok).toBe(true);
    expectError(await r.deliver(topic, payload), "replayed", nonce(8));
    await r.gate.stop();
    expectError(await r.deliver(topic, payload), "unavailable");

    // A new gate on the same log, later but within the command's expiry.
    const clock = new Clock();
    clock.now = T0 + 200_000;
    const again = await rig(r.path, clock);
    expectError(await again.deliver(topic, payload), "replayed", nonce(8));
    // Same nonce, freshly signed with another expiry: still the same nonce.
    expectError(await again.send("ping", { nonce: nonce(8) }), "replayed", nonce(8));
    expect(r.calls).toHaveLength(1);
    expect(again.calls).toHaveLength(0);
    // Once it has expired it is refused as expired.
    clock.now = T0 + 300_000;
    expectError(await again.deliver(topic, payload), "expired", nonce(8));
    await again.gate.stop();
  });

  it("runs a command delivered twice at once only once", async () => {
    const r = await rig();
    const payload = signCommand(
      { cmd: "ping", deviceId: device.deviceId, args: {}, nonce: nonce(9), exp: T0 + 1000 },
      fleet,
    );
    const topic = topicsFor(device.deviceId).cmd("ping");
    const replies = await Promise.all([
      r.deliver(topic, payload),
      r.deliver(topic, payload),
      r.deliver(topic, payload),
    ]);
    expect(replies.filter((reply) => reply.ok)).toHaveLength(1);
    expect(replies.filter((reply) => !reply.ok && reply.error.code === "replayed")).toHaveLength(2);
    expect(r.calls).toHaveLength(1);
    await r.gate.stop();
  });

  it("turns a throwing handler into an error reply: its code, or internal", async () => {
    const r = await rig();
    const failed = await r.send("fail", { nonce: nonce(10) });
    expect(failed).toMatchObject({
      ok: false,
      nonce: nonce(10),
      cmd: "fail",
      error: { code: "not-found", message: "no such object second line" },
    });
    expect(await r.send("crash", { nonce: nonce(11) })).toMatchObject({
      ok: false,
      error: { code: "internal", message: "boom" },
    });

    const nasty: Record<string, CommandHandler> = {
      string: async () => {
        throw "plain string";
      },
      nothing: async () => {
        throw null;
      },
      trap: async () => {
        throw new Proxy(
          {},
          {
            get: () => {
              throw new Error("trap");
            },
            getPrototypeOf: () => {
              throw new Error("trap");
            },
          },
        );
      },
      badCode: async () => {
        throw Object.assign(new Error("x"), {
          code: "has spaces and is far too long to be a code at all, really, more than 64",
        });
      },
      sync: (() => {
        throw new Error("not even async");
      }) as unknown as CommandHandler,
      bigint: async () => 1n,
      circular: async () => {
        const o: Record<string, unknown> = {};
        o.self = o;
        return o;
      },
      huge: async () => "x".repeat(MAX_REPLY_BYTES),
      nothingReturned: async () => undefined,
    };
    Object.assign(r.handlers, nasty);
    const codes: Record<string, string | null> = {};
    for (const [i, name] of Object.keys(nasty).entries()) {
      const reply = await r.send(name, { nonce: nonce(20 + i) });
      codes[name] = reply.ok ? null : reply.error.code;
    }
    expect(codes).toEqual({
      string: "internal",
      nothing: "internal",
      trap: "internal",
      badCode: "internal",
      sync: "internal",
      bigint: "internal",
      circular: "internal",
      huge: "result-too-large",
      nothingReturned: null,
    });
    expect((await r.send("ping", { nonce: nonce(40) })).ok).toBe(true);
    await r.gate.stop();
  });

  it("answers before start with unavailable, and refuses a nonce log it cannot read", async () => {
    const path = join(dir, "foreign.log");
    const gate = new CommandGate({
      deviceId: device.deviceId,
      fleetPublicKey: fleet.publicKey,
      nonceLogPath: path,
      clock: () => T0,
      signer: device,
    });
    const payload = signCommand({ cmd: "ping", deviceId: device.deviceId, args: {}, exp: T0 + 1000 }, fleet);
    const handled = await gate.handle(topicsFor(device.deviceId).cmd("ping"), payload, {});
    expect(handled).toMatchObject({ ok: false, code: "unavailable" });
    const { log } = await RecordLog.open(path);
    await log.append(Buffer.from("not a nonce record"));
    await log.close();
    await expect(gate.start()).rejects.toThrow(CommandGateError);
    await expect(gate.start()).rejects.toThrow(/record 0 .* is not a nonce log record/);
  });

  it("refuses a signer that is another device", () => {
    expect(
      () =>
        new CommandGate({
          deviceId: "0".repeat(32),
          fleetPublicKey: fleet.publicKey,
          nonceLogPath: join(dir, "x.log"),
          clock: () => T0,
          signer: device,
        }),
    ).toThrow(RangeError);
  });

  it("compacts expired nonces away, and keeps refusing them through the floor when the clock goes back", async () => {
    const r = await rig();
    const topic = topicsFor(device.deviceId).cmd("ping");
    const early = signCommand(
      { cmd: "ping", deviceId: device.deviceId, args: {}, nonce: nonce(500), exp: T0 + 1000 },
      fleet,
    );
    expect((await r.deliver(topic, early)).ok).toBe(true);
    for (let i = 0; i < 300; i++)
      expect((await r.send("ping", { nonce: nonce(1000 + i), exp: T0 + 2000 })).ok).toBe(true);
    const before = (await stat(r.path)).size;
    r.clock.now = T0 + 5000;
    for (let i = 0; i < 200; i++) expect((await r.send("ping", { nonce: nonce(2000 + i) })).ok).toBe(true);
    await r.gate.stop();
    // The log now holds the floor and about the 200 live nonces, not 500 records.
    const { log, records } = await RecordLog.open(r.path);
    await log.close();
    expect(records.length).toBeLessThan(300);
    expect((await stat(r.path)).size).toBeLessThan(before);

    // The clock steps back to before the first command expired: its nonce is forgotten, the floor still refuses it.
    const clock = new Clock();
    clock.now = T0;
    const again = await rig(r.path, clock);
    const reply = await again.deliver(topic, early);
    expectError(reply, "expired", nonce(500));
    if (!reply.ok) expect(reply.error.message).toMatch(/floor/);
    expectError(await again.send("ping", { nonce: nonce(2000) }), "replayed");
    // Commands expiring after the floor still run.
    expect((await again.send("ping", { nonce: nonce(3000), exp: T0 + 10_000 })).ok).toBe(true);
    await again.gate.stop();
  });
});

/** `body` as sent, signed by `signer` the way signCommand signs: for bodies signCommand refuses to build. */
function sealBody(body: string, signer: Signer = fleet): Buffer {
  const message = Buffer.concat([Buffer.from(COMMAND_DOMAIN), Buffer.from(body)]);
  return Buffer.from(JSON.stringify({ body, sig: Buffer.from(signer.sign(message)).toString("base64") }));
}

describe("CommandGate under a flood", () => {
  it("answers unauthenticated messages at most 10 at once, then 1 a second; a command the fleet signed always", async () => {
    const r = await rig();
    const topic = topicsFor(device.deviceId).cmd("ping");
    const handle = (t: string, payload: Uint8Array): Promise<HandledCommand> => r.gate.handle(t, payload, r.handlers);
    const forged = signCommand({ cmd: "ping", deviceId: device.deviceId, args: {}, exp: T0 + 60_000 }, otherFleet);
    // Every kind of unauthenticated message draws on one bucket: unreadable, forged, oversized, a topic not a command's.
    const garbage: Array<[string, Uint8Array, string]> = [
      [topic, Buffer.from("{not json"), "malformed"],
      [topic, forged, "bad-signature"],
      [topic, new Uint8Array(MAX_COMMAND_BYTES + 1), "too-large"],
      [topicsFor(device.deviceId).state, forged, "malformed"],
      [topic, Buffer.from(JSON.stringify({ body: "{}", sig: "A".repeat(88) })), "malformed"],
    ];
    const unauthenticated = async (i: number) => {
      const [t, payload, code] = garbage[i % garbage.length]!;
      const handled = await handle(t, payload);
      expect(handled).toMatchObject({ ok: false, authenticated: false, code, nonce: null });
      if (handled.replyPayload !== null) expectError(replyOf(handled), code, null);
      return handled.replyPayload !== null;
    };
    for (let i = 0; i < 10; i++) expect(await unauthenticated(i), `message ${i}`).toBe(true);
    expect(await unauthenticated(10)).toBe(false);
    expect(await unauthenticated(11)).toBe(false);

    // With the bucket empty, every command whose signature verified is still answered, refusals included.
    const body = (fields: Record<string, unknown>) =>
      JSON.stringify({
        v: 1,
        cmd: "ping",
        deviceId: device.deviceId,
        args: {},
        nonce: nonce(60),
        exp: T0 + 1000,
        ...fields,
      });
    const once = signCommand(
      { cmd: "ping", deviceId: device.deviceId, args: {}, nonce: nonce(61), exp: T0 + 1000 },
      fleet,
    );
    expect((await r.deliver(topic, once)).ok).toBe(true);
    const signedRefusals: Array<[string, Uint8Array, string]> = [
      [topic, once, "replayed"],
      [topic, signCommand({ cmd: "ping", deviceId: device.deviceId, args: {}, exp: T0 }, fleet), "expired"],
      [
        topic,
        signCommand({ cmd: "ping", deviceId: device.deviceId, args: {}, exp: T0 + 600_001 }, fleet),
        "too-far-ahead",
      ],
      [
        topicsFor(device.deviceId).cmd("echo"),
        signCommand({ cmd: "ping", deviceId: device.deviceId, args: {}, exp: T0 + 1000 }, fleet),
        "wrong-command",
      ],
      [topic, signCommand({ cmd: "ping", deviceId: "0".repeat(32), args: {}, exp: T0 + 1000 }, fleet), "wrong-device"],
      [topic, sealBody(body({ extra: 1 })), "malformed"],
      [topic, sealBody(body({ v: 2 })), "malformed"],
      [topic, sealBody("not json, but signed"), "malformed"],
      [
        topicsFor(device.deviceId).cmd("reboot"),
        signCommand({ cmd: "reboot", deviceId: device.deviceId, args: {}, exp: T0 + 1000 }, fleet),
        "unknown-command",
      ],
      [
        topicsFor(device.deviceId).cmd("fail"),
        signCommand({ cmd: "fail", deviceId: device.deviceId, args: {}, exp: T0 + 1000 }, fleet),
        "not-found",
      ],
    ];
    for (const [t, payload, code] of signedRefusals) {
      const handled = await handle(t, payload);
      expect(handled, code).toMatchObject({ ok: false, authenticated: true, code });
      expectError(replyOf(handled), code);
    }
    expect(await unauthenticated(12)).toBe(false);

    // The bucket refills at 1 a second, up to 10.
    r.clock.now += 999;
    expect(await unauthenticated(13)).toBe(false);
    r.clock.now += 1;
    expect(await unauthenticated(14)).toBe(true);
    expect(await unauthenticated(15)).toBe(false);
    r.clock.now += 3_600_000;
    for (let i = 0; i < 10; i++) expect(await unauthenticated(i)).toBe(true);
    expect(await unauthenticated(10)).toBe(false);
    await r.gate.stop();
  });

  it("logs refusals as one summary line per interval, the first of each code at once", async () => {
    const lines: string[] = [];
    const clock = new Clock();
    const r = await rig(undefined, clock, {
      log: { info: (line) => lines.push(line) },
      errorReplies: { burst: 3, perSecond: 1 },
    });
    const topic = topicsFor(device.deviceId).cmd("ping");
    const forged = signCommand({ cmd: "ping", deviceId: device.deviceId, args: {}, exp: T0 + 60_000 }, otherFleet);
    for (let i = 0; i < 30; i++) await r.gate.handle(topic, Buffer.from(`garbage ${i}`), r.handlers);
    for (let i = 0; i < 5; i++) await r.gate.handle(topic, forged, r.handlers);
    expectError(await r.send("ping", { exp: T0, nonce: nonce(70) }), "expired", nonce(70));
    expect((await r.send("ping", { nonce: nonce(71) })).ok).toBe(true);
    expect(lines).toEqual([
      "ping refused: malformed: command payload is not valid JSON (further malformed refusals go into the summary)",
      "ping refused: bad-signature: command signature does not verify under the fleet key (further bad-signature refusals go into the summary)",
      expect.stringMatching(
        /^ping refused: expired: command expired at 2026-01-01T00:00:00.000Z, 0 ms before the device's clock .* \(further expired refusals go into the summary\)$/,
      ),
    ]);
    clock.now += 42_000;
    await r.gate.stop();
    // 3 of the 35 unauthenticated messages were answered (the burst), 32 were not.
    expect(lines.slice(3)).toEqual([
      "refused 30 malformed, 5 bad-signature, 1 expired in the last 42 s; 32 unauthenticated got no error reply (rate limit)",
    ]);
    expect(r.calls).toHaveLength(1);
  });
});
