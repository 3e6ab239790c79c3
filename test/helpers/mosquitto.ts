// A real mosquitto for integration tests: started on a free loopback port with a config of the test's choosing,
// killable (SIGKILL, as a crash) and restartable on the same port. Missing mosquitto is a failure, never a skip:
// .ci/run installs Debian's mosquitto.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { errorMessage } from "../../agent/util/errors";
import { waitFor } from "./wait";

const MOSQUITTO = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"];

function findMosquitto(): string {
  for (const path of MOSQUITTO) if (spawnSync(path, ["-h"], { stdio: "ignore" }).error === undefined) return path;
  throw new Error(
    "mosquitto is not installed: integration tests need a real broker (apt-get install mosquitto mosquitto-clients; .ci/run does)",
  );
}

/** A free TCP port on 127.0.0.1 (bound and released; the race with other processes is accepted in tests). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const connects = () =>
    new Promise<boolean>((resolve) => {
      const s = new Socket();
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
      s.connect(port, "127.0.0.1");
    });
  await waitFor(`mosquitto to listen on port ${port}`, connects, { timeoutMs, intervalMs: 50 });
}

export interface BrokerOptions {
  /** Extra lines for mosquitto.conf (after `listener PORT 127.0.0.1`). Default: `allow_anonymous true`. */
  config?: string[];
  /** Files to write into the broker's directory before start (e.g. an ACL or password file), name -> content. */
  files?: Record<string, string>;
  /** Keep messages for persistent sessions across a restart (mosquitto's persistence file). */
  persistence?: boolean;
}

export class Broker {
  readonly dir: string;
  readonly port: number;
  private proc: ChildProcess | undefined;
  private log = "";

  private constructor(
    port: number,
    private readonly options: BrokerOptions,
  ) {
    this.port = port;
    this.dir = mkdtempSync(join(tmpdir(), "sharenode-mosquitto-"));
  }

  /** Starts a broker on a free port. */
  static async start(options: BrokerOptions = {}): Promise<Broker> {
    const broker = new Broker(await freePort(), options);
    // mosquitto started as root drops to the mosquitto user, which must be able to write its persistence file.
    if (options.persistence) chmodSync(broker.dir, 0o777);
    for (const [name, content] of Object.entries(options.files ?? {}))
      writeFileSync(join(broker.dir, name), content, { mode: 0o600 });
    await broker.restart();
    return broker;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  /** What mosquitto printed (for assertion messages). */
  get output(): string {
    return this.log;
  }

  get running(): boolean {
    return this.proc !== undefined && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** (Re)starts mosquitto on the same port and directory. */
  async restart(): Promise<void> {
    if (this.running) throw new Error("broker is already running");
    const lines = [
      `listener ${this.port} 127.0.0.1`,
      ...(this.options.config ?? ["allow_anonymous true"]),
      ...(this.options.persistence ? ["persistence true", `persistence_location ${this.dir}/`] : ["persistence false"]),
      "log_dest stdout",
      "log_type error",
      "log_type warning",
      "log_type notice",
    ];
    // {dir} in the test's lines stands for the broker's directory (ACL and password files live there).
    writeFileSync(
      join(this.dir, "mosquitto.conf"),
      lines.map((l) => l.replaceAll("{dir}", this.dir)).join("\n") + "\n",
    );
    const proc = spawn(findMosquitto(), ["-c", join(this.dir, "mosquitto.conf")], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    proc.stdout!.on("data", (d: Buffer) => (this.log += d.toString()));
    proc.stderr!.on("data", (d: Buffer) => (this.log += d.toString()));
    this.proc = proc;
    try {
      await waitForPort(this.port, 10_000);
    } catch (err) {
      throw new Error(`${errorMessage(err)}; mosquitto said: ${this.log.trim().slice(-500)}`, { cause: err });
    }
  }

  /** Kills the broker: SIGKILL (a crash) by default, SIGTERM for an orderly stop. */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const proc = this.proc;
    if (!proc || !this.running) return;
    await new Promise<void>((resolve) => {
      proc.once("exit", () => resolve());
      proc.kill(signal);
    });
  }

  async stop(): Promise<void> {
    await this.kill("SIGTERM");
    rmSync(this.dir, { recursive: true, force: true });
  }
}
