// systemd's service notification protocol (sd_notify(3)): READY=1 once the agent is up, STATUS= lines, WATCHDOG=1
// pings at half of WATCHDOG_USEC while the agent is healthy, STOPPING=1 on a clean stop. Without NOTIFY_SOCKET
// (not under systemd, or Type=simple) every call does nothing.
//
// How the messages go out: NOTIFY_SOCKET is a unix datagram socket (a path, or "@name" in the abstract namespace)
// and Node has no unix datagram sockets; native addons are not allowed in the bundle. So each message is sent by
// running systemd's own `systemd-notify VAR=VALUE...` (execFile, no shell), which speaks both kinds of address.
// The price:
//   - The sender is a child process, not the service's main process, so the unit needs NotifyAccess=all (main
//     would drop every message). READY carries MAINPID=<our pid> so systemd keeps tracking node as the main
//     process whoever sent it.
//   - systemd attributes a message to a unit by the sender's cgroup, which it can only look up while the sender
//     is alive. systemd-notify therefore waits (its default, up to 5 s) until systemd has taken the message
//     (BARRIER=1: systemd closes a pipe it was sent); --no-block would race that lookup and READY could be lost.
//     systemd >= 254 can send for another PID (--pid=, with SCM_CREDENTIALS of the main process); Debian 12 has
//     252, and a non-root sender may not claim another PID anyway.
//   - One process per message: READY and STOPPING once, STATUS on changes (coalesced), WATCHDOG every half
//     interval (30 s with WatchdogSec=60). At most one systemd-notify runs at a time; a WATCHDOG ping due while
//     one runs is skipped, not queued.
import { execFile } from "node:child_process";
import { healthProblem, LoopLag } from "./loop-lag.js";
import { monotonicNow, realTimers, type HealthCheck, type HealthLog, type TimerHandle, type Timers } from "./timers.js";

/** Runs `command args...`; rejects with the reason (one line) when it fails. */
export type NotifyExec = (command: string, args: string[], env: Record<string, string | undefined>) => Promise<void>;

export interface SdNotifyOptions {
  /** NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID come from here (default process.env). */
  env?: Record<string, string | undefined>;
  /** Our PID, for MAINPID= and WATCHDOG_PID (default process.pid). */
  pid?: number;
  healthy: HealthCheck;
  log: HealthLog;
  timers?: Timers;
  /** Monotonic milliseconds (for the loop-lag probe). */
  now?: () => number;
  /** Event-loop lateness that counts as unhealthy; default 5 s (capped at the ping interval). */
  maxLagMs?: number;
  /** The program (default "systemd-notify", from PATH). */
  command?: string;
  /** false adds --no-block (no waiting for systemd to take the message): for receivers that are not systemd. */
  barrier?: boolean;
  exec?: NotifyExec;
}

type SentKind = "ready" | "watchdog" | "status" | "stopping";

const EXEC_TIMEOUT_MS = 10_000;

/** execFile with a timeout; the rejection names the first line systemd-notify printed. */
export const execNotify: NotifyExec = (command, args, env) =>
  new Promise((resolve, reject) => {
    execFile(
      command,
      args,
      { env: env as NodeJS.ProcessEnv, timeout: EXEC_TIMEOUT_MS, windowsHide: true },
      (err, _stdout, stderr) => {
        if (!err) return resolve();
        const e = err as NodeJS.ErrnoException & { killed?: boolean };
        const said = String(stderr).trim().split("\n")[0];
        if (e.code === "ENOENT") reject(new Error(`${command} not found (Debian package systemd)`));
        else if (e.killed) reject(new Error(`${command} did not finish within ${EXEC_TIMEOUT_MS / 1000} s`));
        else reject(new Error(said || e.message));
      },
    );
  });

export class SdNotify {
  private readonly env: Record<string, string | undefined>;
  private readonly pid: number;
  private readonly timers: Timers;
  private readonly exec: NotifyExec;
  private readonly command: string;
  private readonly socket: string | undefined;
  /** Milliseconds between WATCHDOG=1 pings; undefined when systemd asked for none. */
  readonly watchdogIntervalMs: number | undefined;
  private lag: LoopLag | undefined;
  private handle: TimerHandle | undefined;
  private busy: Promise<void> | undefined;
  private pendingStatus: string | undefined;
  private failing = false;
  private skipping: string | undefined;
  private stopped = false;
  private sent: Record<SentKind, number> = { ready: 0, watchdog: 0, status: 0, stopping: 0 };

  constructor(private readonly options: SdNotifyOptions) {
    this.env = options.env ?? process.env;
    this.pid = options.pid ?? process.pid;
    this.timers = options.timers ?? realTimers;
    this.exec = options.exec ?? execNotify;
    this.command = options.command ?? "systemd-notify";
    this.socket = this.env.NOTIFY_SOCKET || undefined;
    this.watchdogIntervalMs = this.socket ? watchdogInterval(this.env, this.pid) : undefined;
  }

  /** True when systemd gave a notification socket. */
  get enabled(): boolean {
    return this.socket !== undefined;
  }

  /** Messages systemd-notify delivered, by kind. */
  get stats(): Record<SentKind, number> {
    return { ...this.sent };
  }

  /** READY=1 (with a STATUS line), then WATCHDOG=1 pings when systemd asked for them. */
  async ready(status: string): Promise<void> {
    if (!this.socket || this.stopped) return;
    await this.send(["READY=1", statusField(status), `MAINPID=${this.pid}`], "ready");
    const interval = this.watchdogIntervalMs;
    if (interval === undefined || this.handle !== undefined) return;
    this.lag = new LoopLag({
      timers: this.timers,
      now: this.options.now ?? monotonicNow,
      tickMs: Math.min(1000, Math.max(50, Math.floor(interval / 2))),
    });
    this.lag.start();
    this.handle = this.timers.setInterval(() => this.ping(), interval);
    this.options.log.info(`systemd watchdog: WATCHDOG=1 every ${interval / 1000} s while healthy`);
  }

  /** A STATUS= line (systemctl status shows it). While a message is in flight only the latest text waits. */
  async status(text: string): Promise<void> {
    if (!this.socket || this.stopped) return;
    if (this.busy) {
      const first = this.pendingStatus === undefined;
      this.pendingStatus = text;
      if (!first) return;
      await this.busy.catch(() => {});
      const latest = this.pendingStatus;
      this.pendingStatus = undefined;
      if (latest !== undefined && !this.stopped) await this.status(latest);
      return;
    }
    await this.send([statusField(text)], "status");
  }

  /** One WATCHDOG=1, if the loop and the agent are healthy and no message is in flight. The timer calls it. */
  async ping(): Promise<void> {
    if (!this.socket || this.stopped || this.busy) return;
    const maxLag = Math.min(this.options.maxLagMs ?? 5000, this.watchdogIntervalMs ?? Infinity);
    const problem = healthProblem(this.lag, maxLag, this.options.healthy);
    if (problem !== undefined) {
      if (this.skipping === undefined)
        this.options.log.warn(
          `not sending WATCHDOG=1 to systemd: ${problem}; systemd restarts the agent unless it recovers`,
        );
      this.skipping = problem;
      return;
    }
    if (this.skipping !== undefined) this.options.log.info("healthy again: WATCHDOG=1 to systemd");
    this.skipping = undefined;
    await this.send(["WATCHDOG=1"], "watchdog");
  }

  /** STOPPING=1; no message after it. */
  async stopping(status = "stopping"): Promise<void> {
    if (!this.socket || this.stopped) return;
    this.stop();
    await this.busy?.catch(() => {});
    await this.send(["STOPPING=1", statusField(status)], "stopping");
    this.stopped = true;
  }

  /** Ends the pings (stopping() calls it). */
  stop(): void {
    if (this.handle !== undefined) this.timers.clearInterval(this.handle);
    this.handle = undefined;
    this.lag?.stop();
  }

  private async send(fields: string[], kind: SentKind): Promise<void> {
    while (this.busy) await this.busy.catch(() => {});
    const args = this.options.barrier === false ? ["--no-block", ...fields] : fields;
    const run = this.exec(this.command, args, this.env);
    this.busy = run
      .then(
        () => {
          this.sent[kind]++;
          if (this.failing) this.options.log.info("systemd-notify works again");
          this.failing = false;
        },
        (err: Error) => {
          if (!this.failing) this.options.log.warn(`sd_notify ${fields[0]}: ${err.message}`);
          this.failing = true;
        },
      )
      .finally(() => (this.busy = undefined));
    await this.busy;
  }
}

/** STATUS= takes one line. */
function statusField(text: string): string {
  return `STATUS=${text.replace(/[\r\n]+/g, " ")}`;
}

/** Half of WATCHDOG_USEC (sd_watchdog_enabled(3)); none when it is absent, bad, or meant for another PID. */
export function watchdogInterval(env: Record<string, string | undefined>, pid: number): number | undefined {
  const usec = env.WATCHDOG_USEC;
  if (!usec || !/^\d+$/.test(usec)) return undefined;
  const watchdogPid = env.WATCHDOG_PID;
  if (watchdogPid && watchdogPid !== String(pid)) return undefined;
  const ms = Math.floor(Number(usec) / 2000);
  return ms > 0 ? ms : undefined;
}
