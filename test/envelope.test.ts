// Signed command and reply envelopes (agent/protocol/envelope.ts): round trips checked against node:crypto over the
// README's signing encoding, every failure code with a one-line reason, every single-bit flip refused, garbage
// (Proxies, throwing getters, huge input) never throwing, the 64 KiB boundary, expiry boundaries with an injected
// clock; and the fleet key file.
import { createPrivateKey, createPublicKey, randomBytes, verify } from "node:crypto";
import { chmod, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DeviceIdentity, DEVICE_KEY_FILE, loadOrCreateDeviceIdentity } from "../agent/identity/device-key";
import {
  type CommandFailureCode,
  type FleetKey,
  FleetKeyError,
  MAX_COMMAND_BYTES,
  MAX_REPLY_BYTES,
  type OpenCommandOptions,
  loadOrCreateFleetKey,
  openCommand,
  openReply,
  signCommand,
  signReply,
} from "../agent/protocol/envelope";

const T0 = 1_767_225_600_000;
const NONCE = "00112233445566778899aabbccddeeff";
const COMMAND_PREFIX = "sharenode command v1\n";
const REPLY_PREFIX = "sharenode reply v1\n";

let dir: string;
let fleet: FleetKey;
let otherFleet: DeviceIdentity;
let device: DeviceIdentity;
let otherDevice: DeviceIdentity;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sharenode-envelope-"));
  fleet = await loadOrCreateFleetKey(join(dir, "fleet", DEVICE_KEY_FILE));
  otherFleet = await loadOrCreateDeviceIdentity(join(dir, "other-fleet"));
  device = await loadOrCreateDeviceIdentity(join(dir, "device"));
  otherDevice = await loadOrCreateDeviceIdentity(join(dir, "other-device"));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function options(overrides: Partial<OpenCommandOptions> = {}): OpenCommandOptions {
  return { fleetPublicKey: fleet.publicKey, deviceId: device.deviceId, topicCmd: "ping", now: T0, ...overrides };
}

function command(
  overrides: { cmd?: string; args?: Record<string, unknown>; nonce?: string; exp?: number; deviceId?: string } = {},
): Uint8Array {
  return signCommand(
    { cmd: "ping", deviceId: device.deviceId, args: {}, nonce: NONCE, exp: T0 + 60_000, ...overrides },
    fleet,
  );
}

/** The README's envelope built by hand (no size or shape checks): what a buggy or hostile fleet could send. */
function sealRaw(
  body: string,
  signer: { sign(m: Uint8Array): Uint8Array },
  prefix = COMMAND_PREFIX,
  extra: Record<string, unknown> = {},
): Uint8Array {
  const sig = Buffer.from(
    signer.sign(Buffer.concat([Buffer.from(prefix, "latin1"), Buffer.from(body, "utf8")])),
  ).toString("base64");
  return Buffer.from(JSON.stringify({ body, sig, ...extra }), "utf8");
}

function bodyText(fields: Record<string, unknown> = {}): string {
  return JSON.stringify({
    v: 1,
    cmd: "ping",
    deviceId: device.deviceId,
    args: {},
    nonce: NONCE,
    exp: T0 + 60_000,
    ...fields,
  });
}

function expectFailure(
  result: ReturnType<typeof openCommand>,
  code: CommandFailureCode,
  nonce: string | null = null,
): string {
  expect(result.ok, JSON.stringify(result)).toBe(false);
  if (result.ok) throw new Error("unreachable");
  expect(result.code).toBe(code);
  expect(result.nonce).toBe(nonce);
  expectOneLine(result.reason);
  return result.reason;
}

function expectOneLine(reason: string): void {
  expect(reason).toMatch(/^[^\r\n]+$/);
  expect(reason.length).toBeLessThan(300);
}

/** Ed25519 verification by node:crypto with a raw public key, independently of agent/identity. */
function nodeVerify(publicKeyRaw: Uint8Array, message: Buffer, signature: Buffer): boolean {
  const spki = Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), publicKeyRaw]);
  return verify(null, message, createPublicKey({ key: spki, format: "der", type: "spki" }), signature);
}

describe("commands: round trip", () => {
  it("opens what signCommand built, and the bytes are the README's envelope", () => {
    const args = { objectId: "ab".repeat(32), count: 4, nested: { list: [1, "two", null] }, text: "é ✓ 😀" };
    const payload = command({ cmd: "store.challenge", args });
    const result = openCommand(payload, options({ topicCmd: "store.challenge" }));
    expect(result).toEqual({ ok: true, command: { cmd: "store.challenge", args, nonce: NONCE, exp: T0 + 60_000 } });

    const envelope = JSON.parse(Buffer.from(payload).toString("utf8")) as Record<string, unknown>;
    expect(Object.keys(envelope)).toEqual(["body", "sig"]);
    const body = envelope.body as string;
    expect(JSON.parse(body)).toEqual({
      v: 1,
      cmd: "store.challenge",
      deviceId: device.deviceId,
      args,
      nonce: NONCE,
      exp: T0 + 60_000,
    });
    expect(Object.keys(JSON.parse(body) as object)).toEqual(["v", "cmd", "deviceId", "args", "nonce", "exp"]);
    const signature = Buffer.from(envelope.sig as string, "base64");
    expect(signature).toHaveLength(64);
    const message = Buffer.concat([Buffer.from(COMMAND_PREFIX), Buffer.from(body, "utf8")]);
    expect(nodeVerify(fleet.publicKey, message, signature)).toBe(true);
    // The prefix is part of what is signed: the bare body does not verify, nor does the reply domain.
    expect(nodeVerify(fleet.publicKey, Buffer.from(body), signature)).toBe(false);
    expect(nodeVerify(fleet.publicKey, Buffer.concat([Buffer.from(REPLY_PREFIX), Buffer.from(body)]), signature)).toBe(
      false,
    );
  });

  it("accepts a body signed by hand, in any key order and spacing, and the fleet key as hex", () => {
    const body = `{ "exp": ${T0 + 1}, "nonce": "${NONCE}", "args": {"a": [1]}, "deviceId": "${device.deviceId}", "cmd": "ping", "v": 1 }`;
    const result = openCommand(sealRaw(body, fleet), options({ fleetPublicKey: fleet.publicKeyHex }));
    expect(result).toEqual({ ok: true, command: { cmd: "ping", args: { a: [1] }, nonce: NONCE, exp: T0 + 1 } });
  });

  it("draws a fresh 16-byte nonce when none is given", () => {
    const nonces = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const payload = signCommand({ cmd: "ping", deviceId: device.deviceId, args: {}, exp: T0 + 1000 }, fleet);
      const result = openCommand(payload, options());
      if (!result.ok) throw new Error(result.reason);
      expect(result.command.nonce).toMatch(/^[0-9a-f]{32}$/);
      nonces.add(result.command.nonce);
    }
    expect(nonces.size).toBe(20);
  });

  it("signCommand refuses invalid input", () => {
    const base = { cmd: "ping", deviceId: device.deviceId, args: {}, exp: T0 };
    expect(() => signCommand({ ...base, cmd: "a/b" }, fleet)).toThrow(RangeError);
    expect(() => signCommand({ ...base, cmd: "a+" }, fleet)).toThrow(RangeError);
    expect(() => signCommand({ ...base, cmd: "" }, fleet)).toThrow(RangeError);
    expect(() => signCommand({ ...base, deviceId: "AB".repeat(16) }, fleet)).toThrow(RangeError);
    expect(() => signCommand({ ...base, args: [] as unknown as Record<string, unknown> }, fleet)).toThrow(TypeError);
    expect(() => signCommand({ ...base, nonce: "00".repeat(15) }, fleet)).toThrow(RangeError);
    expect(() => signCommand({ ...base, exp: 1.5 }, fleet)).toThrow(RangeError);
    expect(() => signCommand({ ...base, args: { big: 1n } }, fleet)).toThrow(TypeError);
  });
});

describe("commands: every failure code", () => {
  it("too-large", () => {
    const reason = expectFailure(openCommand(new Uint8Array(MAX_COMMAND_BYTES + 1), options()), "too-large");
    expect(reason).toContain(String(MAX_COMMAND_BYTES + 1));
    expectFailure(openCommand(command(), options({ maxBytes: 100 })), "too-large");
  });

  it("malformed: the envelope, before the signature (no nonce is trusted yet)", () => {
    const good = JSON.parse(Buffer.from(command()).toString()) as { body: string; sig: string };
    const cases: Array<[unknown, RegExp]> = [
      ["not bytes", /not bytes/],
      [null, /not bytes/],
      [Buffer.from([0xc3, 0x28]), /UTF-8/],
      [Buffer.from("\ufeff" + JSON.stringify(good)), /JSON/],
      [Buffer.from("{"), /JSON/],
      [Buffer.from(""), /JSON/],
      [Buffer.from("[]"), /an array/],
      [Buffer.from("42"), /not an object/],
      [Buffer.from(JSON.stringify({ body: good.body })), /no 'sig'/],
      [Buffer.from(JSON.stringify({ sig: good.sig })), /no 'body'/],
      [Buffer.from(JSON.stringify({ ...good, extra: 1 })), /unknown field "extra"/],
      [Buffer.from(JSON.stringify({ body: JSON.parse(good.body), sig: good.sig })), /'body' must be a string/],
      [Buffer.from(JSON.stringify({ body: good.body, sig: good.sig.slice(0, -2) })), /base64/],
      [
        Buffer.from(JSON.stringify({ body: good.body, sig: Buffer.from(good.sig, "base64").toString("base64url") })),
        /base64/,
      ],
      [Buffer.from(JSON.stringify({ body: good.body, sig: 12 })), /base64/],
    ];
    for (const [payload, pattern] of cases)
      expect(expectFailure(openCommand(payload, options()), "malformed")).toMatch(pattern);
    // A lone surrogate encodes as U+FFFD: the signature over those bytes must not cover a different body text.
    // (The body text itself holds the lone surrogate; the envelope carries it as the escape \ud800.)
    const lone = bodyText({ args: { s: "MARK" } }).replace("MARK", "\ud800");
    expect(expectFailure(openCommand(sealRaw(lone, fleet), options()), "malformed")).toMatch(/well-formed Unicode/);
  });

  it("malformed: an authentic body of the wrong shape (its nonce is echoed when it has a valid one)", () => {
    const cases: Array<[string, RegExp, string | null]> = [
      ["not json", /'body' is not valid JSON/, null],
      ["[1]", /not an object/, null],
      [bodyText({ v: 2 }), /version 2/, NONCE],
      [bodyText({ extra: true }), /unknown field "extra"/, NONCE],
      [JSON.stringify({ v: 1, cmd: "ping", deviceId: device.deviceId, args: {}, nonce: NONCE }), /no 'exp'/, NONCE],
      [bodyText({ cmd: "a/b" }), /'cmd'/, NONCE],
      [bodyText({ deviceId: device.deviceId.toUpperCase() }), /'deviceId'/, NONCE],
      [bodyText({ args: [] }), /'args' must be an object, got an array/, NONCE],
      [bodyText({ args: null }), /'args' must be an object, got null/, NONCE],
      [bodyText({ nonce: NONCE.toUpperCase() }), /'nonce'/, null],
      [bodyText({ nonce: 7 }), /'nonce'/, null],
      [bodyText({ exp: -1 }), /'exp'/, NONCE],
      [bodyText({ exp: T0 + 0.5 }), /'exp'/, NONCE],
      [bodyText({ exp: "soon" }), /'exp'/, NONCE],
    ];
    for (const [body, pattern, nonce] of cases)
      expect(expectFailure(openCommand(sealRaw(body, fleet), options()), "malformed", nonce)).toMatch(pattern);
  });

  it("bad-signature: another key, a tampered body, the reply domain (no nonce echoed)", () => {
    expect(
      expectFailure(openCommand(command().slice(), options({ fleetPublicKey: otherFleet.publicKey })), "bad-signature"),
    ).toMatch(/fleet key/);
    expectFailure(openCommand(sealRaw(bodyText(), otherFleet), options()), "bad-signature");
    expectFailure(openCommand(sealRaw(bodyText(), fleet, REPLY_PREFIX), options()), "bad-signature");
    const good = JSON.parse(Buffer.from(command()).toString()) as { body: string; sig: string };
    const tampered = { body: good.body.replace('"args":{}', '"args":{"x":1}'), sig: good.sig };
    expectFailure(openCommand(Buffer.from(JSON.stringify(tampered)), options()), "bad-signature");
  });

  it("wrong-device, wrong-command, expired, too-far-ahead (authentic: the nonce is echoed)", () => {
    expect(
      expectFailure(openCommand(command({ deviceId: otherDevice.deviceId }), options()), "wrong-device", NONCE),
    ).toContain(otherDevice.deviceId);
    expect(expectFailure(openCommand(command({ cmd: "status" }), options()), "wrong-command", NONCE)).toMatch(
      /"status".*"ping"/,
    );
    expectFailure(openCommand(command(), options({ topicCmd: undefined })), "wrong-command", NONCE);
    expect(expectFailure(openCommand(command({ exp: T0 - 5 }), options()), "expired", NONCE)).toBe(
      "command expired at 2025-12-31T23:59:59.995Z, 5 ms before the device's clock (2026-01-01T00:00:00.000Z)",
    );
    expect(expectFailure(openCommand(command({ exp: T0 + 600_001 }), options()), "too-far-ahead", NONCE)).toBe(
      "command expires at 2026-01-01T00:10:00.001Z, 600001 ms after the device's clock (2026-01-01T00:00:00.000Z); at most 600000 ms ahead is allowed",
    );
  });

  it("a box still on its 1970 boot clock is told so in the refusal; an exp beyond Date's range still reads", () => {
    const bootClock = 42_000; // 42 s after power-on, before NTP answered
    const reason = expectFailure(
      openCommand(command({ exp: T0 + 60_000 }), options({ now: bootClock })),
      "too-far-ahead",
      NONCE,
    );
    expect(reason).toMatch(
      /^command expires at 2026-01-01T00:01:00\.000Z, \d+ ms after the device's clock \(1970-01-01T00:00:42\.000Z\); at most 600000 ms ahead is allowed; the device's clock looks unset/,
    );
    const far = Number.MAX_SAFE_INTEGER;
    expect(expectFailure(openCommand(command({ exp: far }), options()), "too-far-ahead", NONCE)).toMatch(
      new RegExp(`^command expires at ${far} ms, `),
    );
  });

  it("checks in the README's order: signature before device, device before command, command before expiry", () => {
    const everythingWrong = signCommand(
      { cmd: "status", deviceId: otherDevice.deviceId, args: {}, nonce: NONCE, exp: T0 - 1 },
      otherFleet,
    );
    expectFailure(openCommand(everythingWrong, options()), "bad-signature");
    expectFailure(
      openCommand(
        signCommand({ cmd: "status", deviceId: otherDevice.deviceId, args: {}, nonce: NONCE, exp: T0 - 1 }, fleet),
        options(),
      ),
      "wrong-device",
      NONCE,
    );
    expectFailure(openCommand(command({ cmd: "status", exp: T0 - 1 }), options()), "wrong-command", NONCE);
    expectFailure(
      openCommand(sealRaw(bodyText({ v: 2, deviceId: otherDevice.deviceId }), fleet), options()),
      "malformed",
      NONCE,
    );
  });

  it("throws only for the caller's own invalid options", () => {
    expect(() => openCommand(command(), options({ fleetPublicKey: new Uint8Array(31) }))).toThrow(RangeError);
    expect(() => openCommand(command(), options({ fleetPublicKey: "zz" }))).toThrow();
    expect(() => openCommand(command(), options({ deviceId: "nope" }))).toThrow(RangeError);
    expect(() => openCommand(command(), options({ now: Number.NaN }))).toThrow(RangeError);
  });
});

describe("commands: expiry boundaries (injected clock)", () => {
  const exp = T0 + 60_000;
  it.each([
    [exp - 600_000, "ok"],
    [exp - 600_001, "too-far-ahead"],
    [exp - 1, "ok"],
    [exp, "expired"],
    [exp + 1, "expired"],
  ] as const)("now = %d -> %s", (now, expected) => {
    const result = openCommand(command({ exp }), options({ now }));
    if (expected === "ok") expect(result.ok).toBe(true);
    else expectFailure(result, expected, NONCE);
  });

  it("honours maxAheadMs", () => {
    expect(openCommand(command({ exp: T0 + 1000 }), options({ maxAheadMs: 1000 })).ok).toBe(true);
    expectFailure(openCommand(command({ exp: T0 + 1001 }), options({ maxAheadMs: 1000 })), "too-far-ahead", NONCE);
  });
});

describe("commands: size limit", () => {
  /** A signed command whose payload is exactly `size` bytes, built around the module's own encoding. */
  function commandOfSize(size: number, seal: (args: Record<string, unknown>) => Uint8Array): Uint8Array {
    const base = seal({ pad: "" }).length;
    const payload = seal({ pad: "x".repeat(size - base) });
    expect(payload.length).toBe(size);
    return payload;
  }

  it("accepts MAX_COMMAND_BYTES (128 KiB) and refuses one byte more", () => {
    const exact = commandOfSize(MAX_COMMAND_BYTES, (args) => command({ args }));
    const result = openCommand(exact, options());
    expect(result.ok).toBe(true);
    // signCommand refuses to build what no device accepts; a hand-sealed one is refused on arrival, unread.
    expect(() => command({ args: { pad: "x".repeat(MAX_COMMAND_BYTES) } })).toThrow(RangeError);
    const over = commandOfSize(MAX_COMMAND_BYTES + 1, (args) => sealRaw(bodyText({ args }), fleet));
    expectFailure(openCommand(over, options()), "too-large");
    const exactRaw = commandOfSize(MAX_COMMAND_BYTES, (args) => sealRaw(bodyText({ args }), fleet));
    expect(openCommand(exactRaw, options()).ok).toBe(true);
  });
});

describe("tampering", () => {
  it("refuses every single-bit flip of a small signed command", () => {
    const payload = command({ args: { a: 1 } });
    expect(openCommand(payload, options()).ok).toBe(true);
    let flips = 0;
    for (let i = 0; i < payload.length; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const flipped = payload.slice();
        flipped[i]! ^= 1 << bit;
        const result = openCommand(flipped, options());
        if (result.ok) throw new Error(`flip of bit ${bit} of byte ${i} was accepted`);
        expectOneLine(result.reason);
        flips++;
      }
    }
    expect(flips).toBe(payload.length * 8);
  });

  it("refuses every single-bit flip of a small signed reply", () => {
    const payload = signReply(
      { cmd: "ping", deviceId: device.deviceId, nonce: NONCE, ok: true, result: { pong: true } },
      device,
    );
    const opts = { devicePublicKey: device.publicKey, deviceId: device.deviceId };
    expect(openReply(payload, opts).ok).toBe(true);
    for (let i = 0; i < payload.length; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const flipped = payload.slice();
        flipped[i]! ^= 1 << bit;
        const result = openReply(flipped, opts);
        if (result.ok) throw new Error(`flip of bit ${bit} of byte ${i} was accepted`);
      }
    }
  });
});

describe("garbage never throws", () => {
  /** Bytes over the limit whose own length getters claim 10. */
  function lyingBuffer(): Uint8Array {
    const lying = Buffer.from(JSON.stringify({ body: "x".repeat(MAX_COMMAND_BYTES), sig: "" }));
    Object.defineProperty(lying, "byteLength", { get: () => 10 });
    Object.defineProperty(lying, "length", { get: () => 10 });
    return lying;
  }

  function hostile(): unknown[] {
    const throwing = new Proxy(new Uint8Array(10), {
      get() {
        throw new Error("trap\nwith a newline");
      },
    });
    const prototypeTrap = new Proxy(new Uint8Array(4), {
      getPrototypeOf() {
        throw new Error("no prototype for you");
      },
    });
    const getter = Object.defineProperty({}, "length", {
      get() {
        throw new Error("getter");
      },
    });
    return [
      undefined,
      null,
      0,
      NaN,
      "",
      "{}",
      {},
      [],
      Symbol("s"),
      () => 1,
      10n,
      throwing,
      prototypeTrap,
      getter,
      lyingBuffer(),
      new Uint8Array(0),
      new Uint16Array(4),
      new DataView(new ArrayBuffer(4)),
      new ArrayBuffer(8),
      new Uint8Array(new SharedArrayBuffer(16)),
    ];
  }

  it("hostile objects give malformed (or too-large), never an exception", () => {
    for (const value of hostile()) {
      const result = openCommand(value, options());
      expect(result.ok).toBe(false);
      if (!result.ok) {
        expect(["malformed", "too-large"]).toContain(result.code);
        expectOneLine(result.reason);
      }
      const reply = openReply(value, { devicePublicKey: device.publicKey });
      expect(reply.ok).toBe(false);
    }
  });

  it("a Uint8Array whose length getters lie is measured by its real size", () => {
    expectFailure(openCommand(lyingBuffer(), options()), "too-large");
  });

  it("random bytes, random JSON and huge input", () => {
    for (let i = 0; i < 2000; i++) {
      const bytes = randomBytes(i % 300);
      expect(openCommand(bytes, options()).ok).toBe(false);
      expect(openReply(bytes, { devicePublicKey: device.publicKey }).ok).toBe(false);
    }
    const shapes = [
      '{"body":1,"sig":2}',
      '{"body":"","sig":""}',
      '{"__proto__":{"body":"x"},"sig":"y"}',
      '{"body":"{}","sig":null}',
      "null",
      "true",
      '"str"',
    ];
    for (const s of shapes) expectFailure(openCommand(Buffer.from(s), options()), "malformed");
    const deep = Buffer.from("[".repeat(30_000) + "]".repeat(30_000));
    expectFailure(openCommand(deep, options()), "malformed");
    const deepBody = sealRaw("[".repeat(20_000) + "]".repeat(20_000), fleet);
    expect(deepBody.length).toBeLessThanOrEqual(MAX_COMMAND_BYTES);
    expectFailure(openCommand(deepBody, options()), "malformed");
    const started = performance.now();
    expectFailure(openCommand(new Uint8Array(64 * 1024 * 1024), options()), "too-large");
    expect(performance.now() - started).toBeLessThan(50);
  });
});

describe("replies", () => {
  const opts = () => ({ devicePublicKey: device.publicKey, deviceId: device.deviceId });

  it("round trips ok and error replies, signed over the README's encoding", () => {
    const ok = signReply(
      { cmd: "status", deviceId: device.deviceId, nonce: NONCE, ok: true, result: { up: 12, list: [1, 2] } },
      device,
    );
    expect(openReply(ok, opts())).toEqual({
      ok: true,
      reply: {
        v: 1,
        cmd: "status",
        deviceId: device.deviceId,
        nonce: NONCE,
        ok: true,
        result: { up: 12, list: [1, 2] },
      },
    });
    const envelope = JSON.parse(Buffer.from(ok).toString()) as { body: string; sig: string };
    const message = Buffer.concat([Buffer.from(REPLY_PREFIX), Buffer.from(envelope.body, "utf8")]);
    expect(nodeVerify(device.publicKey, message, Buffer.from(envelope.sig, "base64"))).toBe(true);

    const error = signReply(
      { cmd: null, deviceId: device.deviceId, nonce: null, ok: false, error: { code: "malformed", message: "bad" } },
      device,
    );
    expect(openReply(error, { devicePublicKey: device.publicKeyHex })).toEqual({
      ok: true,
      reply: {
        v: 1,
        cmd: null,
        deviceId: device.deviceId,
        nonce: null,
        ok: false,
        error: { code: "malformed", message: "bad" },
      },
    });
  });

  it("an undefined result is null; a result JSON cannot carry or too large throws", () => {
    const none = openReply(
      signReply({ cmd: "ping", deviceId: device.deviceId, nonce: NONCE, ok: true }, device),
      opts(),
    );
    expect(none.ok && none.reply.ok && none.reply.result).toBe(null);
    const base = { cmd: "ping", deviceId: device.deviceId, nonce: NONCE, ok: true } as const;
    expect(() => signReply({ ...base, result: 1n }, device)).toThrow(TypeError);
    expect(() => signReply({ ...base, result: () => 1 }, device)).toThrow(TypeError);
    expect(() => signReply({ ...base, result: "x".repeat(MAX_REPLY_BYTES) }, device)).toThrow(RangeError);
    expect(() =>
      signReply(
        { cmd: "ping", deviceId: device.deviceId, nonce: NONCE, ok: false, error: { code: "two words", message: "" } },
        device,
      ),
    ).toThrow(RangeError);
  });

  it("refuses a reply by another key, for another device, or of the wrong shape", () => {
    const reply = signReply({ cmd: "ping", deviceId: device.deviceId, nonce: NONCE, ok: true, result: 1 }, device);
    const forged = openReply(reply, { devicePublicKey: otherDevice.publicKey });
    expect(forged.ok === false && forged.code).toBe("bad-signature");
    const impersonation = openReply(
      signReply({ cmd: "ping", deviceId: device.deviceId, nonce: NONCE, ok: true, result: 1 }, otherDevice),
      {
        devicePublicKey: otherDevice.publicKey,
      },
    );
    expect(impersonation.ok === false && impersonation.code).toBe("wrong-device");
    const shapes = [
      { v: 1, cmd: "ping", deviceId: device.deviceId, nonce: NONCE, ok: true },
      { v: 1, cmd: "ping", deviceId: device.deviceId, nonce: NONCE, ok: true, result: 1, error: {} },
      { v: 1, cmd: "ping", deviceId: device.deviceId, nonce: NONCE, ok: false, error: { code: "x" } },
      { v: 1, cmd: "ping", deviceId: device.deviceId, nonce: NONCE, ok: false, error: { code: "a b", message: "" } },
      { v: 1, cmd: "ping", deviceId: device.deviceId, nonce: NONCE, ok: "yes", result: 1 },
      { v: 2, cmd: "ping", deviceId: device.deviceId, nonce: NONCE, ok: true, result: 1 },
      { v: 1, cmd: "p/q", deviceId: device.deviceId, nonce: NONCE, ok: true, result: 1 },
      { v: 1, cmd: "ping", deviceId: device.deviceId, nonce: "x", ok: true, result: 1 },
    ];
    for (const body of shapes) {
      const result = openReply(sealRaw(JSON.stringify(body), device, REPLY_PREFIX), opts());
      expect(result.ok === false && result.code, JSON.stringify(body)).toBe("malformed");
      if (!result.ok) expectOneLine(result.reason);
    }
    expect(openReply(new Uint8Array(MAX_REPLY_BYTES + 1), opts())).toMatchObject({ ok: false, code: "too-large" });
    expect(() => openReply(reply, { devicePublicKey: device.publicKey, deviceId: otherDevice.deviceId })).toThrow(
      RangeError,
    );
  });

  it("a command is never a reply, nor a reply a command", () => {
    const asCommand = sealRaw(bodyText(), device);
    expect(openReply(asCommand, opts())).toMatchObject({ ok: false, code: "bad-signature" });
    const reply = signReply({ cmd: "ping", deviceId: device.deviceId, nonce: NONCE, ok: true, result: 1 }, fleet);
    expectFailure(openCommand(reply, options()), "bad-signature");
  });
});

describe("loadOrCreateFleetKey", () => {
  it("creates an Ed25519 PKCS#8 key 0600 once, and loads the same key again", async () => {
    const path = join(dir, "fleet2", DEVICE_KEY_FILE);
    const [a, b] = await Promise.all([loadOrCreateFleetKey(path), loadOrCreateFleetKey(path)]);
    expect(a.publicKeyHex).toBe(b.publicKeyHex);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    const pem = await readFile(path, "utf8");
    expect(pem).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    const key = createPrivateKey(pem);
    expect(key.asymmetricKeyType).toBe("ed25519");
    const raw = Buffer.from(createPublicKey(key).export({ format: "jwk" }).x as string, "base64url");
    expect(raw.toString("hex")).toBe(a.publicKeyHex);
    const again = await loadOrCreateFleetKey(path);
    expect(again.publicKeyHex).toBe(a.publicKeyHex);
    const signed = signCommand({ cmd: "ping", deviceId: device.deviceId, args: {}, nonce: NONCE, exp: T0 + 1 }, again);
    expect(openCommand(signed, options({ fleetPublicKey: a.publicKeyHex })).ok).toBe(true);
    expect(JSON.stringify(a)).toBe(JSON.stringify({ publicKeyHex: a.publicKeyHex }));
    expect(String(a)).toBe(`FleetKey(${a.publicKeyHex})`);
    expect(inspect(a, { showHidden: true, depth: 5 })).not.toMatch(/PRIVATE|KeyObject/);
  });

  it("refuses a key file group or others may read, and a file not named device-key.pem", async () => {
    const path = join(dir, "fleet3", DEVICE_KEY_FILE);
    await loadOrCreateFleetKey(path);
    await chmod(path, 0o644);
    await expect(loadOrCreateFleetKey(path)).rejects.toThrow(FleetKeyError);
    await expect(loadOrCreateFleetKey(path)).rejects.toThrow(/^fleet key: .*mode 0644/);
    await expect(loadOrCreateFleetKey(join(dir, "fleet4", "fleet.pem"))).rejects.toThrow(FleetKeyError);
  });
});
