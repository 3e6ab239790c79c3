// The daemon's control socket (agent/console/control.ts): the protocol the console speaks with a running agent,
// and its robustness against what a local client may send: oversized and malformed requests, pipelined requests,
// a client that disconnects mid-follow or stops reading, a stale socket file, a live one. Also LogHub.subscribe,
// which log.follow rests on.
import { spawnSync } from "node:child_process";
import { promises as fsp } from "node:fs";
import { createConnection, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  ControlClient,
  ControlError,
  ControlServer,
  MAX_REQUEST_BYTES,
  askDaemon,
  controlSocketPath,
  type ControlHandlers,
} from "../agent/console/control";
import { ProofLedger } from "../agent/store/proofs";
import { LogHub } from "../agent/util/log";
import { waitFor } from "./helpers/wait";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

async function tempDir(): Promise<string> {
  const dir = await fsp.mkdtemp(join(tmpdir(), "sn-ctl-"));
  cleanups.push(() => fsp.rm(dir, { recursive: true, force: true }));
  return dir;
}

interface Daemon {
  server: ControlServer;
  hub: LogHub;
  stateDir: string;
  listeners: () => number;
  ledger: ProofLedger;
  errors: string[];
}

async function startDaemon(overrides: Partial<ControlHandlers> = {}): Promise<Daemon> {
  const stateDir = await tempDir();
  const hub = new LogHub({ write: () => {} }, "debug", () => Date.UTC(2026, 0, 1));
  let listenerCount = 0;
  const ledger = new ProofLedger(3);
  const errors: string[] = [];
  const handlers: ControlHandlers = {
    status: async () => ({ deviceId: "ab".repeat(16), uptimeSeconds: 42 }),
    logTail: (n) => hub.tail(n),
    onLog: (listener) => {
      listenerCount++;
      const off = hub.subscribe(listener);
      return () => {
        listenerCount--;
        off();
      };
    },
    proofs: () => ledger.snapshot(),
    ...overrides,
  };
  const server = new ControlServer({ stateDir, handlers, onError: (m) => errors.push(m) });
  await server.start();
  cleanups.push(() => server.stop());
  return { server, hub, stateDir, listeners: () => listenerCount, ledger, errors };
}

/** A raw client: writes bytes, reads reply lines. */
class RawClient {
  readonly lines: string[] = [];
  closed = false;
  private buffer = "";

  constructor(readonly socket: Socket) {
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => {
      this.buffer += d;
      let nl;
      while ((nl = this.buffer.indexOf("\n")) >= 0) {
        this.lines.push(this.buffer.slice(0, nl));
        this.buffer = this.buffer.slice(nl + 1);
      }
    });
    socket.on("close", () => (this.closed = true));
    socket.on("error", () => {});
  }

  static async connect(path: string): Promise<RawClient> {
    const socket = createConnection(path);
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    const c = new RawClient(socket);
    cleanups.push(() => void socket.destroy());
    return c;
  }

  async reply(
    index: number,
  ): Promise<{ ok: boolean; result?: any; error?: { code: string; message: string }; line?: string }> {
    await waitFor(`reply ${index}`, () => this.lines.length > index);
    return JSON.parse(this.lines[index]!);
  }
}

describe("ControlServer", () => {
  it("listens on <stateDir>/control.sock with mode 0600 and answers status, log.tail and proofs; stop removes the socket", async () => {
    const d = await startDaemon();
    const path = controlSocketPath(d.stateDir);
    const st = await fsp.lstat(path);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    d.hub.logger("agent").info("one");
    d.hub.logger("agent").warn("two");
    d.ledger.record({ ts: 1, objectId: "a".repeat(64), ok: true });
    d.ledger.record({ ts: 2, objectId: "b".repeat(64), ok: false, code: "not-found", message: "no object" });

    const client = await ControlClient.connect(d.stateDir);
    expect(await client.request("status")).toEqual({ deviceId: "ab".repeat(16), uptimeSeconds: 42 });
    const tail = (await client.request("log.tail", { lines: 1 })) as { lines: string[] };
    expect(tail.lines).toHaveLength(1);
    expect(tail.lines[0]).toMatch(/warn  agent: two$/);
    expect(((await client.request("log.tail")) as { lines: string[] }).lines).toHaveLength(2);
    expect(await client.request("proofs")).toEqual({
      passed: 1,
      failed: 1,
      recent: [
        { ts: 1, objectId: "a".repeat(64), ok: true },
        { ts: 2, objectId: "b".repeat(64), ok: false, code: "not-found", message: "no object" },
      ],
    });
    client.close();

    await d.server.stop();
    await expect(fsp.lstat(path)).rejects.toMatchObject({ code: "ENOENT" });
    await expect(ControlClient.connect(d.stateDir)).rejects.toMatchObject({ code: "not-running" });
    await d.server.stop(); // twice is fine
  });

  it("answers pipelined requests in order, on one connection", async () => {
    const d = await startDaemon();
    const raw = await RawClient.connect(d.server.path);
    raw.socket.write('{"op":"proofs"}\n{"op":"status"}\n\n{"op":"log.tail","lines":5}\n');
    expect((await raw.reply(0)).result).toEqual({ passed: 0, failed: 0, recent: [] });
    expect((await raw.reply(1)).result).toMatchObject({ uptimeSeconds: 42 });
    expect((await raw.reply(2)).result).toEqual({ lines: [] });
  });

  it("replies with an error to garbage, a non-object, an unknown op and bad arguments, and keeps the connection", async () => {
    const d = await startDaemon();
    const raw = await RawClient.connect(d.server.path);
    raw.socket.write("this is not json\n");
    expect(await raw.reply(0)).toMatchObject({ ok: false, error: { code: "malformed" } });
    raw.socket.write("[1,2,3]\nnull\n");
    expect(await raw.reply(1)).toMatchObject({ ok: false, error: { code: "malformed" } });
    expect(await raw.reply(2)).toMatchObject({ ok: false, error: { code: "malformed" } });
    raw.socket.write('{"op":"reboot"}\n{"nop":1}\n');
    expect(await raw.reply(3)).toMatchObject({ ok: false, error: { code: "unknown-op" } });
    expect(await raw.reply(4)).toMatchObject({ ok: false, error: { code: "unknown-op" } });
    raw.socket.write(
      '{"op":"log.tail","lines":0}\n{"op":"log.tail","lines":501}\n{"op":"log.tail","lines":"5"}\n{"op":"log.follow","lines":-1}\n',
    );
    for (let i = 5; i < 9; i++) expect(await raw.reply(i)).toMatchObject({ ok: false, error: { code: "bad-args" } });
    // Invalid UTF-8 and control bytes are garbage like any other.
    raw.socket.write(Buffer.from([0xff, 0xfe, 0x00, 0x0a]));
    expect(await raw.reply(9)).toMatchObject({ ok: false, error: { code: "malformed" } });
    raw.socket.write('{"op":"status"}\n');
    expect(await raw.reply(10)).toMatchObject({ ok: true });
    expect(raw.closed).toBe(false);
  });

  it("turns a handler's exception into an internal error reply and keeps serving", async () => {
    const d = await startDaemon({
      status: async () => {
        throw new Error("store exploded");
      },
      proofs: () => {
        throw new Error("ledger gone");
      },
    });
    const client = await ControlClient.connect(d.stateDir);
    await expect(client.request("status")).rejects.toMatchObject({ code: "internal", message: "store exploded" });
    await expect(client.request("proofs")).rejects.toMatchObject({ code: "internal", message: "ledger gone" });
    expect(await client.request("log.tail")).toEqual({ lines: [] });
    client.close();
    expect(d.errors.join("\n")).toMatch(/store exploded/);
  });

  it("refuses a request over 4 KiB (with or without a newline) and closes that connection only", async () => {
    const d = await startDaemon();
    const big = await RawClient.connect(d.server.path);
    big.socket.write(`{"op":"status","pad":"${"x".repeat(MAX_REQUEST_BYTES)}"}\n`);
    expect(await big.reply(0)).toMatchObject({ ok: false, error: { code: "too-large" } });
    await waitFor("the oversized client to be closed", () => big.closed);

    // A client that never sends a newline cannot make the server buffer without bound.
    const endless = await RawClient.connect(d.server.path);
    const chunk = "y".repeat(1024);
    for (let i = 0; i < 64 && !endless.closed; i++) endless.socket.write(chunk);
    expect(await endless.reply(0)).toMatchObject({ ok: false, error: { code: "too-large" } });
    await waitFor("the endless client to be closed", () => endless.closed);

    const client = await ControlClient.connect(d.stateDir);
    expect(await client.request("status")).toMatchObject({ uptimeSeconds: 42 });
    client.close();
  });

  it("log.follow sends the last N lines, then every new line; a client that disconnects is unsubscribed", async () => {
    const d = await startDaemon();
    const log = d.hub.logger("test");
    log.info("before 1");
    log.info("before 2");
    const raw = await RawClient.connect(d.server.path);
    raw.socket.write('{"op":"log.follow","lines":1}\n');
    const first = await raw.reply(0);
    expect(first.ok).toBe(true);
    expect(first.result.lines).toHaveLength(1);
    expect(first.result.lines[0]).toMatch(/before 2$/);
    await waitFor("the follower to subscribe", () => d.listeners() === 1);
    log.info("after 1");
    log.warn(() => "after 2");
    expect((await raw.reply(1)).line).toMatch(/info  test: after 1$/);
    expect((await raw.reply(2)).line).toMatch(/warn  test: after 2$/);
    // Requests after log.follow are ignored: the connection streams only.
    raw.socket.write('{"op":"status"}\n');
    log.info("after 3");
    expect((await raw.reply(3)).line).toMatch(/after 3$/);

    raw.socket.destroy();
    await waitFor("the follower to be unsubscribed", () => d.listeners() === 0);
    log.info("nobody listens"); // must not throw
    const client = await ControlClient.connect(d.stateDir);
    expect(await client.request("status")).toMatchObject({ uptimeSeconds: 42 });
    client.close();
  });

  it("ControlClient.follow stops on its signal, and ends with 'closed' when the daemon stops", async () => {
    const d = await startDaemon();
    const got: string[] = [];
    const client = await ControlClient.connect(d.stateDir);
    const controller = new AbortController();
    const following = client.follow(0, (l) => got.push(l), controller.signal);
    await waitFor("the follower to subscribe", () => d.listeners() === 1);
    d.hub.logger("x").info("hello");
    await waitFor("the line", () => got.length === 1);
    controller.abort();
    expect(await following).toBe("aborted");
    client.close();
    await waitFor("the follower to be unsubscribed", () => d.listeners() === 0);

    const second = await ControlClient.connect(d.stateDir);
    const followingAgain = second.follow(0, () => {}, new AbortController().signal);
    await waitFor("the second follower to subscribe", () => d.listeners() === 1);
    await d.server.stop();
    expect(await followingAgain).toBe("closed");
    expect(d.listeners()).toBe(0);
    second.close();
  });

  it("drops a follower that stops reading instead of buffering without bound", async () => {
    const d = await startDaemon();
    const raw = await RawClient.connect(d.server.path);
    raw.socket.write('{"op":"log.follow"}\n');
    await raw.reply(0);
    await waitFor("the follower to subscribe", () => d.listeners() === 1);
    raw.socket.pause();
    const log = d.hub.logger("flood");
    const line = "z".repeat(1000);
    for (let i = 0; i < 20_000 && d.listeners() > 0; i++) log.info(line);
    await waitFor("the stalled follower to be dropped", () => d.listeners() === 0);
    expect(d.errors.join("\n")).toMatch(/stopped reading/);
  });

  it("removes a stale socket file left by a killed daemon, but never one that answers or a non-socket", async () => {
    const stateDir = await tempDir();
    const path = controlSocketPath(stateDir);
    // A process that listens and dies by SIGKILL leaves its socket file behind.
    const child = spawnSync(process.execPath, [
      "-e",
      "require('net').createServer().listen(process.argv[1], () => process.kill(process.pid, 'SIGKILL'))",
      path,
    ]);
    expect(child.signal).toBe("SIGKILL");
    expect((await fsp.lstat(path)).isSocket()).toBe(true);
    await expect(ControlClient.connect(stateDir)).rejects.toMatchObject({ code: "not-running" });
    expect(await askDaemon(stateDir, "status")).toMatchObject({ running: false, code: "not-running" });

    const handlers: ControlHandlers = {
      status: async () => ({ n: 1 }),
      logTail: () => [],
      onLog: () => () => {},
      proofs: () => ({ passed: 0, failed: 0, recent: [] }),
    };
    const first = new ControlServer({ stateDir, handlers });
    await first.start();
    cleanups.push(() => first.stop());
    expect(await askDaemon(stateDir, "status")).toEqual({ running: true, result: { n: 1 } });

    // A second agent on the same state directory does not steal the live socket.
    const second = new ControlServer({ stateDir, handlers });
    await expect(second.start()).rejects.toThrow(/answers: another agent runs/);
    expect(await askDaemon(stateDir, "status")).toEqual({ running: true, result: { n: 1 } });
    await first.stop();

    await fsp.writeFile(path, "not a socket");
    const third = new ControlServer({ stateDir, handlers });
    await expect(third.start()).rejects.toThrow(/is not a socket/);
    expect(await fsp.readFile(path, "utf8")).toBe("not a socket");
  });

  it("a server that accepts but never replies makes the client time out; a missing state dir is 'not running'", async () => {
    const dir = await tempDir();
    const accepted: Socket[] = [];
    const silent = createServer((s) => accepted.push(s));
    await new Promise<void>((r) => silent.listen(controlSocketPath(dir), r));
    cleanups.push(
      () =>
        new Promise<void>((r) => {
          for (const s of accepted) s.destroy();
          silent.close(() => r());
        }),
    );
    const client = await ControlClient.connect(dir, { replyTimeoutMs: 200 });
    await expect(client.request("status")).rejects.toMatchObject({ code: "timeout" });
    client.close();
    const err = await ControlClient.connect(join(dir, "nope")).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ControlError);
    expect(err).toMatchObject({ code: "not-running" });
  });
});

describe("LogHub.subscribe and ProofLedger", () => {
  it("calls subscribers with each line, survives a throwing one, and unsubscribes", () => {
    const written: string[] = [];
    const hub = new LogHub({ write: (l) => written.push(l) }, "info", () => 0);
    const seen: string[] = [];
    const off = hub.subscribe((l) => seen.push(l));
    hub.subscribe(() => {
      throw new Error("bad reader");
    });
    hub.logger("a").info("x\ny");
    hub.logger("a").debug("hidden");
    expect(seen).toEqual(["1970-01-01T00:00:00.000Z info  a: x\\ny"]);
    expect(written).toEqual([seen[0] + "\n"]);
    off();
    hub.logger("a").info("z");
    expect(seen).toHaveLength(1);
    expect(hub.tail(5)).toHaveLength(2);
  });

  it("keeps the counters and the last few challenges", () => {
    const ledger = new ProofLedger(2);
    for (let i = 0; i < 5; i++) ledger.record({ ts: i, objectId: String(i), ok: i % 2 === 0 });
    const snap = ledger.snapshot();
    expect(snap).toMatchObject({ passed: 3, failed: 2 });
    expect(snap.recent.map((r) => r.ts)).toEqual([3, 4]);
    snap.recent[0]!.ok = true;
    expect(ledger.snapshot().recent[0]!.ok).toBe(false);
  });
});
