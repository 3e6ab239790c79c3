// `sharenode console` as a person at a terminal uses it: through a real pty (util-linux script(1) gives the child
// one; the test types on script's stdin and reads what the terminal would show), and on a serial line (a socat pty
// pair: the console opens one end with --tty, the test is the person on the other end, then hangs up and comes
// back). The child is test/fixtures/console-child.ts: agent/cli/console.ts with test commands. One last test runs
// the built bundle with the real commands. Missing tools fail the tests, naming the Debian package.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Broker, freePort } from "./helpers/mosquitto";
import { waitFor } from "./helpers/wait";
import { bundleFixture } from "./helpers/child";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "dist/sharenode.js");
const PROMPT = "sharenode> ";
const KEY = {
  left: "\x1b[D",
  up: "\x1b[A",
  end: "\x1b[F",
  home: "\x1bOH",
  bs: "\x7f",
  ctrlC: "\x03",
  ctrlD: "\x04",
  ctrlW: "\x17",
};

let work = "";
let child = "";
const cleanups: (() => void)[] = [];

function requireTool(command: string, args: string[], debianPackage: string): void {
  const r = spawnSync(command, args, { stdio: "ignore" });
  if (r.error || r.status !== 0) {
    throw new Error(`${command} is needed for the console's pty tests: apt-get install ${debianPackage}`);
  }
}

beforeAll(async () => {
  requireTool("script", ["--version"], "bsdutils");
  requireTool("socat", ["-V"], "socat");
  requireTool("stty", ["--version"], "coreutils");
  work = mkdtempSync(join(tmpdir(), "sharenode-console-"));
  child = join(work, "console-child.mjs");
  await bundleFixture("console-child.ts", child, {
    // The fixture brings its own commands: never the real ones (esbuild drops the unused loader anyway).
    external: ["../console/commands.js"],
  });
});

afterEach(() => {
  for (const cleanup of cleanups.splice(0).reverse()) cleanup();
});

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

const q = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;

/** A process whose stdin we type on and whose stdout is what the person sees. */
class Peer {
  out = "";
  err = "";
  readonly exited: Promise<number | null>;
  private wake: (() => void) | undefined;

  constructor(readonly proc: ChildProcess) {
    proc.stdout!.on("data", (chunk: Buffer) => {
      this.out += chunk.toString("utf8");
      this.wake?.();
    });
    proc.stderr!.on("data", (chunk: Buffer) => {
      this.err += chunk.toString("utf8");
      this.wake?.();
    });
    proc.stdin!.on("error", () => {});
    this.exited = new Promise((resolve) => proc.on("close", (code) => resolve(code)));
    cleanups.push(() => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
    });
  }

  type(keys: string): void {
    this.proc.stdin!.write(keys);
  }

  mark(): number {
    return this.out.length;
  }

  /** Waits (generously: CI machines are slow) until `text` appears in the output after `from`. */
  async waitFor(text: string, from = 0, stream: "out" | "err" = "out"): Promise<string> {
    const deadline = Date.now() + 30_000;
    while (this[stream].indexOf(text, from) < 0) {
      if (Date.now() > deadline) {
        throw new Error(
          `timed out waiting for ${JSON.stringify(text)}; ${stream} so far: ${JSON.stringify(this[stream].slice(-800))}; stderr: ${JSON.stringify(this.err.slice(-400))}`,
        );
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, 50);
      });
    }
    return this[stream].slice(from);
  }

  /** Types keys ending a line and returns everything up to the next prompt. */
  async line(keys: string): Promise<string> {
    const from = this.mark();
    this.type(keys);
    const shown = await this.waitFor(`\n${PROMPT}`, from);
    return shown.slice(0, shown.lastIndexOf(`\n${PROMPT}`) + 1);
  }
}

/** `command` under script(1): a real pty; after it ends, `stty -a` shows what it left the terminal in. */
function inPty(command: string, env: Record<string, string> = {}): Peer {
  const shell = `${command}; s=$?; echo; echo "stty after: $(stty -a | tr '\\n' ' ')"; exit $s`;
  return new Peer(
    spawn("script", ["-qfec", shell, "/dev/null"], { cwd: work, env: { ...process.env, ...env }, stdio: "pipe" }),
  );
}

function expectCookedAfter(out: string): void {
  const stty = /stty after: (.*)/.exec(out)?.[1] ?? "";
  expect(stty, "stty -a after the console ended").toMatch(/(^|\s)icanon(\s|$)/);
  expect(stty).toMatch(/(^|\s)echo(\s|$)/);
  expect(stty).toMatch(/(^|\s)isig(\s|$)/);
}

describe("sharenode console on a terminal (a real pty through script)", () => {
  it("edits, recalls history, cancels with Ctrl-C, asks, and exits 0 on Ctrl-D with the terminal restored", async () => {
    const t = inPty(`${q(process.execPath)} ${q(child)}`);
    await t.waitFor(PROMPT);
    expect(t.out).toMatch(
      /^test console pid \d+\r?\r\nType "help" for the commands; "exit" or Ctrl-D leaves\.\r?\r\nsharenode> $/,
    );

    // "sa", Left, "X", Backspace, End, "y hel", Left, Backspace, "xl": say hxll
    let shown = await t.line("sa" + KEY.left + "X" + KEY.bs + KEY.end + "y hel" + KEY.left + KEY.bs + "xl\r");
    expect(shown).toMatch(/\[hxll\]\r?\r\n$/);
    shown = await t.line("say one two" + KEY.ctrlW + KEY.home + "\x1b[1;5C" + " three" + "\r");
    expect(shown).toMatch(/\[three\|one\]\r?\r\n$/);

    // Up recalls the last line, redrawn on the prompt's row.
    shown = await t.line(KEY.up + KEY.up + "\r");
    expect(shown).toContain(`\r${PROMPT}say hxll\x1b[K`);
    expect(shown).toMatch(/\[hxll\]\r?\r\n$/);

    // Ctrl-C at the prompt: ^C, a new prompt, nothing ran.
    shown = await t.line("say secret" + KEY.ctrlC);
    expect(shown).toMatch(/say secret\^C\r?\r\n$/);
    expect(shown).not.toContain("[secret]");

    // Ctrl-C while a command runs aborts it.
    let from = t.mark();
    t.type("wait\r");
    await t.waitFor("waiting", from);
    expect(await t.line(KEY.ctrlC)).toMatch(/\^C\r?\r\n(wait: aborted\r?\r?\n)?stopped\r?\r\n$/);

    // A question, answered.
    from = t.mark();
    t.type("confirm\r");
    await t.waitFor('Type "yes" to go on: ', from);
    expect(await t.line("yes\r")).toMatch(/answer: "yes"\r?\r\n$/);

    // Errors are one line; the shell goes on.
    expect(await t.line("nope\r")).toMatch(/error: unknown command "nope" \(type help\)\r?\r\n$/);
    expect(await t.line("fail\r")).toMatch(/error: disk on fire\r?\r\n$/);
    // A pty from script(1) without a size reports 0 columns: unknown, not zero.
    expect(await t.line("cols\r")).toMatch(/columns undefined\r?\r\n$/);

    t.type(KEY.ctrlD);
    expect(await t.exited).toBe(0);
    expect(t.out).toContain("console-child: closed 1");
    expectCookedAfter(t.out);
  });

  it("SIGTERM while a command runs: the command is aborted, the terminal restored, exit 0", async () => {
    const t = inPty(`${q(process.execPath)} ${q(child)}`);
    await t.waitFor(PROMPT);
    const pid = Number(/pid (\d+)/.exec(t.out)?.[1]);
    const from = t.mark();
    t.type("wait\r");
    await t.waitFor("waiting", from);
    process.kill(pid, "SIGTERM");
    expect(await t.exited).toBe(0);
    expect(t.out.slice(from)).toContain("wait: aborted");
    expect(t.out).toContain("console-child: closed 1");
    expectCookedAfter(t.out);
  });
});

describe("sharenode console --tty (a serial line: a socat pty pair)", () => {
  /** socat: a pty linked at `link` (the box's serial port) and its own stdin/stdout (the person's terminal). */
  async function serialCable(link: string): Promise<Peer> {
    const cable = new Peer(spawn("socat", ["-d", "-d", `pty,raw,echo=0,link=${link}`, "STDIO"], { stdio: "pipe" }));
    await cable.waitFor("starting data transfer loop", 0, "err");
    expect(existsSync(link)).toBe(true);
    return cable;
  }

  it("sets the line up with stty, serves it, opens it again after a hangup, exits 0 on exit", async () => {
    const dev = join(work, "ttyS-test");
    let cable = await serialCable(dev);
    const consoleProc = new Peer(spawn(process.execPath, [child, "--tty", dev, "--baud", "115200"], { stdio: "pipe" }));
    await cable.waitFor(PROMPT);
    expect(cable.out).toMatch(/^test console pid \d+\r\nType "help".*\r\nsharenode> $/);

    // The line as stty left it: speed, 8N1, raw, no echo, no flow control, no modem control.
    const stty = spawnSync("stty", ["-F", dev, "-a"], { encoding: "utf8" }).stdout;
    for (const setting of [
      "speed 115200 baud",
      "cs8",
      "-cstopb",
      "-parenb",
      "-icanon",
      "-echo",
      "-ixon",
      "-opost",
      "-isig",
      "-icrnl",
      "clocal",
    ]) {
      expect(stty).toMatch(new RegExp(`(^|[\\s;])${setting.replace(/[+]/g, "\\$&")}([\\s;]|$)`));
    }

    // Exactly what a serial terminal gets: CR LF line ends, one byte per typed character.
    let shown = await cable.line("sa" + KEY.left + "X" + KEY.bs + KEY.end + "y hi there" + KEY.ctrlW + "you\r");
    expect(shown).toBe(
      `sa\b\r${PROMPT}sXa\x1b[K\x1b[1D\r${PROMPT}sa\x1b[K\x1b[1D\x1b[1Cy hi there\r${PROMPT}say hi \x1b[Kyou\r\n[hi|you]\r\n`,
    );
    shown = await cable.line(KEY.up + "\r");
    expect(shown).toMatch(/\[hi\|you\]\r\n$/);
    // CRLF from the terminal is one Enter.
    const from = cable.mark();
    cable.type("say crlf\r\n");
    await cable.waitFor(`[crlf]\r\n${PROMPT}`, from);
    cable.type("say next\r");
    await cable.waitFor(`[next]\r\n${PROMPT}`, from);
    expect(cable.out.slice(from)).toBe(`say crlf\r\n[crlf]\r\n${PROMPT}say next\r\n[next]\r\n${PROMPT}`);

    // Hang up: the person's end goes away. The console waits, opens the line again, greets the next person.
    cable.proc.kill("SIGTERM");
    await cable.exited;
    await consoleProc.waitFor("the line hung up; opening it again", 0, "err");
    cable = await serialCable(dev);
    await cable.waitFor(PROMPT);
    expect(cable.out).toMatch(/^test console pid \d+\r\n/);
    expect(await cable.line("say again\r")).toMatch(/\[again\]\r\n$/);

    cable.type("exit\r");
    expect(await consoleProc.exited).toBe(0);
    expect(consoleProc.err).toContain("console-child: closed 1");
    await cable.waitFor("exit\r\n"); // flushed before the console closed the line
  });

  it("a device that does not exist, one that is no terminal, or a bad baud rate fail with one line", () => {
    const run = (...args: string[]) =>
      spawnSync(process.execPath, [child, ...args], { encoding: "utf8", timeout: 30_000 });
    let r = run("--tty", join(work, "no-such-tty"));
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(`sharenode: console: ${join(work, "no-such-tty")}: No such file or directory\n`);
    r = run("--tty", "/dev/null");
    expect(r.status).toBe(1);
    expect(r.stderr).toBe("sharenode: console: /dev/null: not a terminal\n");
    r = run("--tty", "/dev/null", "--baud", "12345");
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^sharenode: console: unsupported baud rate '12345' \(expected one of .*115200.*\)\n$/);
    r = run("--baud", "9600");
    expect(r.status).toBe(2);
    expect(r.stderr).toBe("sharenode: console: --baud needs --tty\n");
  });
});

describe("the built bundle: sharenode console with the real commands", () => {
  beforeAll(() => {
    if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run \`npm run build\` first`);
    if (!readFileSync(BIN, "utf8").includes("diagnostics console")) {
      throw new Error(`${BIN} has no console command: it is stale, run \`npm run build\``);
    }
  });

  it("--help prints the usage", () => {
    const r = spawnSync(process.execPath, [BIN, "console", "--help"], { encoding: "utf8", timeout: 30_000 });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^Usage: sharenode console \[--tty DEVICE \[--baud RATE\]\] \[--config FILE\]\n/);
  });

  it("greets, lists the commands, runs one, and exits 0 on Ctrl-D", async () => {
    const env = { SHARENODE_STATE: join(work, "state"), SHARENODE_DATA: join(work, "data") };
    const t = inPty(`${q(process.execPath)} ${q(BIN)} console`, env);
    await t.waitFor(PROMPT);
    expect(t.out).toMatch(/diagnostics console/);
    const help = await t.line("help\r");
    for (const name of ["status", "version", "disks", "log", "selftest", "reboot", "factory-reset", "help", "exit"]) {
      expect(help).toMatch(new RegExp(`\\n {2}${name}\\b`));
    }
    expect(await t.line("version\r")).toMatch(/sharenode +\d+\.\d+\.\d+/);
    expect(await t.line("nope\r")).toMatch(/error: unknown command "nope" \(type help\)/);
    t.type(KEY.ctrlD);
    expect(await t.exited).toBe(0);
    expectCookedAfter(t.out);
  });
});

describe("the built bundle: sharenode console beside a running daemon", () => {
  it("shows the live daemon through its control socket: status, link, log -f until Ctrl-C, proofs; refuses factory-reset", async () => {
    // mosquitto_pub --help exits 1: only "not found" counts here.
    if (spawnSync("mosquitto_pub", ["--help"], { stdio: "ignore" }).error)
      throw new Error("mosquitto_pub is needed: apt-get install mosquitto-clients");
    const broker = await Broker.start();
    cleanups.push(() => void broker.stop());
    const env = {
      SHARENODE_STATE: join(work, "live-state"),
      SHARENODE_DATA: join(work, "live-data"),
      SHARENODE_BROKER: broker.url,
      SHARENODE_FLEET_KEY: "00".repeat(32),
      SHARENODE_BOARD: "sim",
      SHARENODE_ALLOW_SYSTEM_DISK: "true",
    };
    const daemon = new Peer(spawn(process.execPath, [BIN, "run"], { env: { ...process.env, ...env }, stdio: "pipe" }));
    await daemon.waitFor(`connected to ${broker.url}`, 0, "err");
    await daemon.waitFor("started", 0, "err");

    const t = inPty(`${q(process.execPath)} ${q(BIN)} console`, env);
    await t.waitFor(PROMPT);
    const status = await t.line("status\r");
    expect(status).toMatch(/^daemon\s+running since /m);
    expect(status).toMatch(/^board\s+sim: /m);
    const link = await t.line("link\r");
    expect(link).toMatch(new RegExp(`^broker\\s+${broker.url.replace(/[.]/g, "\\.")} \\(MQTT 5\\)`, "m"));
    expect(link).toMatch(/^state\s+connected since /m);
    expect(link).toMatch(/^last error\s+none/m);
    expect(await t.line("store\r")).toMatch(/^last scrub\s+none since the daemon started/m);
    expect(await t.line("log 50\r")).toContain(`connected to ${broker.url}`);

    // log -f shows a line the daemon logs after the follow began (a malformed command it refuses), until Ctrl-C.
    const from = t.mark();
    t.type("log -f 1\r");
    // The last line comes first; the daemon is subscribed for new lines by the time it is sent.
    await waitFor("log -f to print a line", () => /Z (debug|info|warn|error) /.test(t.out.slice(from)), {
      timeoutMs: 30_000,
      detail: () => `it printed ${JSON.stringify(t.out.slice(from))}`,
    });
    const deviceId = /device\s+([0-9a-f]{32})/.exec(status)![1]!;
    spawnSync("mosquitto_pub", ["-L", `${broker.url}/sharenode/v1/${deviceId}/cmd/ping`, "-m", "not json", "-q", "1"], {
      timeout: 10_000,
    });
    await t.waitFor("refused: malformed", from);
    t.type(KEY.ctrlC);
    await t.waitFor(`\n${PROMPT}`, from);

    expect(await t.line("proofs\r")).toMatch(/passed\s+0/);
    const reset = await t.line("factory-reset\r");
    expect(reset).toMatch(/daemon/i);
    expect(existsSync(join(env.SHARENODE_STATE, "device-key.pem"))).toBe(true);
    t.type(KEY.ctrlD);
    expect(await t.exited).toBe(0);
    daemon.proc.kill("SIGTERM");
    expect(await daemon.exited).toBe(0);
  });
});

describe("the built bundle: sharenode selftest (for scripts: the OTA pipeline, the ARM check)", () => {
  it("exits 0 when every check passes against a real broker (mqtt:// and ws://), 1 naming the failed check otherwise", async () => {
    // A WebSocket listener too: the bundle's ws:// path runs on Node's streams (agent/tsup.config.mjs aliases
    // mqtt.js's readable-stream to them), and only a bundle test covers that.
    const wsPort = await freePort();
    const broker = await Broker.start({
      config: ["allow_anonymous true", `listener ${wsPort} 127.0.0.1`, "protocol websockets", "allow_anonymous true"],
    });
    cleanups.push(() => void broker.stop());
    const env = {
      ...process.env,
      SHARENODE_STATE: join(work, "selftest-state"),
      SHARENODE_DATA: join(work, "selftest-data"),
    };
    // The device key the broker check subscribes with: created by any command that needs it.
    const keyed = spawnSync(
      process.execPath,
      [BIN, "store", "status", "--state", env.SHARENODE_STATE, "--data", env.SHARENODE_DATA, "--allow-system-disk"],
      { encoding: "utf8", env, timeout: 60_000 },
    );
    expect(keyed.status, keyed.stderr).toBe(0);
    const run = (extra: Record<string, string>) =>
      new Promise<{ code: number | null; out: string }>((resolve) => {
        const p = spawn(process.execPath, [BIN, "selftest"], {
          env: { ...env, ...extra },
          stdio: ["ignore", "pipe", "pipe"],
        });
        let out = "";
        p.stdout!.on("data", (d: Buffer) => (out += d.toString()));
        p.stderr!.on("data", (d: Buffer) => (out += d.toString()));
        p.on("close", (code) => resolve({ code, out }));
      });
    const good = await run({ SHARENODE_BROKER: broker.url });
    expect(good.out).toMatch(/^PASS +broker round trip +CONNACK /m);
    expect(good.out).toMatch(/^PASS +data disk write\/read /m);
    expect(good.out).toMatch(/^selftest: \d+ passed, 0 failed$/m);
    expect(good.code).toBe(0);
    const overWs = await run({ SHARENODE_BROKER: `ws://127.0.0.1:${wsPort}` });
    expect(overWs.out).toMatch(/^PASS +broker round trip +CONNACK /m);
    expect(overWs.code).toBe(0);
    await broker.stop();
    const bad = await run({ SHARENODE_BROKER: broker.url });
    expect(bad.out).toMatch(/^FAIL +broker round trip +connect: /m);
    expect(bad.out).toMatch(/^selftest: \d+ passed, 1 failed$/m);
    expect(bad.code).toBe(1);
  });
});
