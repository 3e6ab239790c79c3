// The diagnostics console's commands (`sharenode console`): what a person with a serial cable and no network asks
// the box. Each command prints plain aligned lines through the ConsoleIo (command-api.ts); the shell (shell.ts)
// owns the terminal.
//
// Where the facts come from: a running daemon answers on its control socket (control.ts) with its live state;
// without one, the console reads the state directory and the data directory itself (local-state.ts), never
// creating or adopting anything. A broken config is shown, not fatal: every key falls back on its own. The network
// may be down: nothing here waits on it beyond a short timeout, and Ctrl-C (io.signal) ends what does.
//
// Keys are never printed: the console reads the device key only to derive the public key and the device id.
import { arch, release, type as osType } from "node:os";
import { join } from "node:path";
import { readFile } from "node:fs/promises";
import { openBoard, type Board } from "../../board/board.js";
import { HostPaths } from "../../board/host-paths.js";
import { version } from "../../package.json";
import { MARKER_NAME } from "../store/disk-marker.js";
import { listFilesystems, showPath } from "../store/disks.js";
import type { ProbeOptions } from "../link/probe.js";
import { ConsoleError, type ConsoleCommand, type ConsoleIo } from "./command-api.js";
import { askDaemon, ControlClient, ControlError, MAX_LOG_LINES } from "./control.js";
import type { ReportedStatus } from "../protocol/daemon-status.js";
import type { ProofsSnapshot } from "../store/proofs.js";
import { bytes, duration, fields, millis, oneLine, plural, table, time } from "./format.js";
import { countQuarantined } from "../store/object-store.js";
import {
  loadConsoleConfig,
  lockHolder,
  previewDataDisk,
  readDeviceIdentity,
  readLocalStore,
  scanOutbox,
  showUrl,
  type ConsoleConfig,
  type DiskPreview,
  type IdentityRead,
} from "./local-state.js";
import { brokerEndpoint, checkReachability, interfaceLines, readDefaultRoutes, readDnsServers, type Step } from "./net-check.js";
import { defaultSystemActions, describePlan, executePlan, planReset, type SystemActions } from "./reset.js";
import { brokerCheck, diskCheck, kernelChecks, type CheckResult } from "./self-checks.js";

export type { SystemActions } from "./reset.js";

export interface ConsoleCommandsOptions {
  env: Record<string, string | undefined>;
  /** The config file the daemon uses (absent: defaults and the environment only). */
  configFile?: string;
  /** Where /proc, /sys, /dev and /etc are (default: SHARENODE_HOST_ROOT or "/"). */
  hostPaths?: HostPaths;
  now?: () => number;
  /** Reboot (default: runs `reboot`). */
  system?: SystemActions;
}

export interface ConsoleCommands {
  commands: ConsoleCommand[];
  /** A few lines the shell prints before the first prompt. */
  banner: string;
  /** Ends what a command left open (a `log -f` connection). */
  close(): Promise<void>;
}

/** How long the console waits for the daemon's control socket before calling it "not running". */
const CONNECT_TIMEOUT_MS = 1000;
/** Each step of `net` and the broker probe of `selftest`. */
const NET_TIMEOUT_MS = 3000;
const PROBE_TIMEOUT_MS = 5000;

type DaemonState =
  | { running: true; status: ReportedStatus; error?: string }
  | { running: false; why: string; code: string; lockPid?: number };

class Context {
  readonly config: ConsoleConfig;
  readonly configProblems: string[];
  readonly configFile: string | undefined;
  readonly hostPaths: HostPaths;
  readonly now: () => number;
  readonly system: SystemActions;
  private boardOpened: Promise<{ board?: Board; error?: string }> | undefined;
  private readonly clients = new Set<ControlClient>();

  constructor(options: ConsoleCommandsOptions) {
    const loaded = loadConsoleConfig(options.configFile, options.env);
    this.config = loaded.config;
    this.configProblems = loaded.problems;
    this.configFile = options.configFile;
    this.hostPaths = options.hostPaths ?? new HostPaths(options.env.SHARENODE_HOST_ROOT || "/");
    this.now = options.now ?? Date.now;
    this.system = options.system ?? defaultSystemActions;
  }

  get stateDir(): string {
    return this.config.stateDir;
  }

  identity(): Promise<IdentityRead> {
    return readDeviceIdentity(this.stateDir);
  }

  board(): Promise<{ board?: Board; error?: string }> {
    this.boardOpened ??= (async () => {
      const { dataDir } = this.config.store;
      try {
        const board = await openBoard({
          paths: this.hostPaths,
          name: this.config.board,
          ...(dataDir !== undefined ? { simRoot: join(dataDir, "sim-board") } : {}),
        });
        return { board };
      } catch (err) {
        return { error: oneLine(err) };
      }
    })();
    return this.boardOpened;
  }

  /** One request to the daemon; { running: false } when none answers. */
  async ask(op: string, signal?: AbortSignal): Promise<{ running: true; result: unknown } | { running: false; why: string; code: string; lockPid?: number }> {
    let answer;
    try {
      answer = await askDaemon(this.stateDir, op, {}, { connectTimeoutMs: CONNECT_TIMEOUT_MS, ...(signal ? { signal } : {}) });
    } catch (err) {
      if (err instanceof ControlError) throw new ConsoleError(`the daemon refused ${op}: ${err.message}`);
      throw err;
    }
    if (answer.running) return answer;
    const lockPid = await lockHolder(this.stateDir);
    return { ...answer, ...(lockPid !== undefined ? { lockPid } : {}) };
  }

  /** The daemon's status; a daemon that answers but fails its status still counts as running. */
  async daemon(signal?: AbortSignal): Promise<DaemonState> {
    let answer;
    try {
      answer = await this.ask("status", signal);
    } catch (err) {
      if (err instanceof ConsoleError) return { running: true, status: {}, error: err.message };
      throw err;
    }
    if (!answer.running) return answer;
    return { running: true, status: (answer.result ?? {}) as ReportedStatus };
  }

  async preview(identity: IdentityRead): Promise<DiskPreview | undefined> {
    const { dataDir, allowSystemDisk } = this.config.store;
    if (dataDir === undefined) return undefined;
    return previewDataDisk({ dataDir, stateDir: this.stateDir, allowSystemDisk }, identity.ok ? identity.deviceId : undefined, this.hostPaths);
  }

  async connect(signal: AbortSignal): Promise<ControlClient> {
    const client = await ControlClient.connect(this.stateDir, { connectTimeoutMs: CONNECT_TIMEOUT_MS, signal });
    this.clients.add(client);
    return client;
  }

  release(client: ControlClient): void {
    client.close();
    this.clients.delete(client);
  }

  async close(): Promise<void> {
    for (const client of this.clients) client.close();
    this.clients.clear();
  }
}

// --- helpers ---------------------------------------------------------------------------------------------------------

function num(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

function str(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}

function daemonLine(state: DaemonState, now: number): string {
  if (state.running) {
    if (state.error !== undefined) return `running, but ${state.error}`;
    const s = state.status;
    const up = num(s.uptimeSeconds);
    const since = num(s.startedAt) ?? (up !== undefined ? now - up * 1000 : undefined);
    const pid = num(s.pid) !== undefined ? `, pid ${s.pid}` : "";
    return since !== undefined ? `running since ${time(since)} (up ${duration((now - since) / 1000)}${pid})` : `running${pid}`;
  }
  if (state.lockPid !== undefined) {
    return `running as pid ${state.lockPid}, but its control socket does not answer (${state.why}); live facts are not available`;
  }
  return `not running (${state.why})`;
}

function notRunningNote(state: DaemonState): string {
  if (state.running) return "";
  return state.lockPid !== undefined ? `the daemon (pid ${state.lockPid}) does not answer` : "the daemon is not running";
}

function identityLines(identity: IdentityRead): [string, string][] {
  if (!identity.ok) return [["device", identity.reason]];
  const rows: [string, string][] = [
    ["device", identity.deviceId],
    ["public key", identity.publicKeyHex],
  ];
  if (identity.problem) rows.push(["key problem", identity.problem]);
  return rows;
}

function filesystemLine(preview: DiskPreview): string {
  const fs = preview.filesystem;
  if (!fs) return showPath(preview.dataDir);
  return `${showPath(preview.dataDir)} on ${showPath(fs.device)} (${fs.mountPoint}, ${fs.fstype}, ${fs.kind})`;
}

function storeSummary(s: { objects?: number; usedBytes?: number; quotaBytes?: number }): string {
  const objects = num(s.objects);
  return `${objects !== undefined ? plural(objects, "object") : "? objects"}, ${bytes(num(s.usedBytes))} used of ${bytes(num(s.quotaBytes))} quota`;
}

function temperature(c: number | undefined): string {
  return c === undefined ? "unreadable" : `${c.toFixed(1)} C`;
}

/** Wide enough for every check's name, so the checks of one run line up though they print as they finish. */
const CHECK_NAME_WIDTH = 20;

function printChecks(io: ConsoleIo, results: CheckResult[]): void {
  const width = Math.max(CHECK_NAME_WIDTH, ...results.map((r) => r.name.length));
  for (const r of results) io.print(`${r.ok ? "PASS" : "FAIL"}  ${r.name.padEnd(width)}  ${r.detail}\n`);
}

function parseLines(text: string, what: string, max = MAX_LOG_LINES): number {
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > max) throw new ConsoleError(`${what}: LINES must be a number from 1 to ${max}, got '${text}'`);
  return Number(text);
}

function noArgs(name: string, args: string[]): void {
  if (args.length > 0) throw new ConsoleError(`${name} takes no arguments`);
}

async function readPem(path: string | undefined, what: string): Promise<string | undefined> {
  if (path === undefined) return undefined;
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    throw new Error(`cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? oneLine(err)}`);
  }
}

// --- the commands ------------------------------------------------------------------------------------------------

export async function createConsoleCommands(options: ConsoleCommandsOptions): Promise<ConsoleCommands> {
  const ctx = new Context(options);

  const status: ConsoleCommand = {
    name: "status",
    args: "",
    summary: "one-screen summary: device, daemon, board, store, link, temperature, config",
    async run(args, io) {
      noArgs("status", args);
      const [identity, daemon, opened] = await Promise.all([ctx.identity(), ctx.daemon(io.signal), ctx.board()]);
      const rows: [string, string][] = [...identityLines(identity)];
      rows.push(["version", `sharenode ${version} (node ${process.version}, ${arch()})`]);
      rows.push(["daemon", daemonLine(daemon, ctx.now())]);
      rows.push(["board", opened.board ? `${opened.board.name}: ${opened.board.description}` : `unknown: ${opened.error}`]);
      if (daemon.running) {
        const s = daemon.status;
        const store = s.store ?? {};
        rows.push(["store", store.running === false ? `not running: ${str(store.reason) ?? "no reason given"}` : storeSummary(store)]);
        const link = s.link ?? {};
        const since = num(link.connectedSince);
        const lastError = str(link.lastError);
        rows.push([
          "link",
          link.connected
            ? `connected to ${showUrl(str(link.url) ?? ctx.config.link.url)}${since !== undefined ? ` since ${time(since)}` : ""}`
            : `not connected to ${showUrl(str(link.url) ?? ctx.config.link.url)}${lastError ? `: ${lastError}` : ""}`,
        ]);
        rows.push(["outbox", `${plural(num(s.outbox?.depth) ?? 0, "message")} waiting (${bytes(num(s.outbox?.bytes))})`]);
      } else {
        rows.push(["store", await offlineStoreLine(identity)]);
        rows.push(["link", `no connection: ${notRunningNote(daemon)} (broker ${showUrl(ctx.config.link.url)})`]);
        const outbox = await scanOutbox(ctx.stateDir);
        rows.push(["outbox", outbox.ok ? `${plural(outbox.depth, "message")} waiting on disk (${bytes(outbox.bytes)})` : outbox.reason]);
      }
      if (opened.board) {
        const c = await opened.board.readTemperatureC();
        const { pauseAtC } = opened.board.thermalLimits;
        rows.push(["temp", `${temperature(c)}${c !== undefined && c >= pauseAtC ? " (hot: work pauses)" : ""} (work pauses at ${pauseAtC} C)`]);
      }
      const where = ctx.configFile ?? "(no config file: defaults and environment)";
      rows.push([
        "config",
        ctx.configProblems.length === 0
          ? `${where}: ok`
          : `${where}: ${plural(ctx.configProblems.length, "problem")}\n${ctx.configProblems.join("\n")}`,
      ]);
      io.print(fields(rows));
    },
  };

  async function offlineStoreLine(identity: IdentityRead): Promise<string> {
    const preview = await ctx.preview(identity);
    if (!preview) return "no data directory configured (store.dataDir)";
    if (!preview.accepted) return `refused: ${preview.reason}`;
    const local = await readLocalStore(ctx.config, preview);
    return local.ok ? `${storeSummary(local.status)} (read from the disk)` : local.reason;
  }

  const versionCommand: ConsoleCommand = {
    name: "version",
    args: "",
    summary: "sharenode, node, CPU architecture and kernel versions",
    async run(args, io) {
      noArgs("version", args);
      io.print(
        fields([
          ["sharenode", version],
          ["node", `${process.version} (V8 ${process.versions.v8})`],
          ["arch", arch()],
          ["kernel", `${osType()} ${release()}`],
        ]),
      );
    },
  };

  const boardCommand: ConsoleCommand = {
    name: "board",
    args: "",
    summary: "the board profile: how it was detected, serial console, thermal limits, problems",
    async run(args, io) {
      noArgs("board", args);
      const opened = await ctx.board();
      if (!opened.board) {
        io.print(fields([["board", `could not be opened: ${opened.error}`], ["config", `board = "${ctx.config.board}"`]]));
        return;
      }
      const b = opened.board;
      io.print(
        fields([
          ["board", b.name],
          ["description", b.description],
          ["detected by", b.detectedBy],
          ["console", b.console ? `/dev/${b.console.tty} at ${b.console.baud} baud` : "none known"],
          ["thermal", `work pauses at ${b.thermalLimits.pauseAtC} C, resumes below ${b.thermalLimits.resumeAtC} C`],
          ["problems", b.problems.length === 0 ? "none" : b.problems.join("\n")],
        ]),
      );
    },
  };

  const disks: ConsoleCommand = {
    name: "disks",
    args: "",
    summary: "mounted filesystems, which one holds the data directory, and whether the store accepts it",
    async run(args, io) {
      noArgs("disks", args);
      const identity = await ctx.identity();
      const preview = await ctx.preview(identity);
      let list;
      try {
        list = await listFilesystems(ctx.hostPaths);
      } catch (err) {
        io.print(`cannot list the filesystems: ${oneLine(err)}\n`);
        list = undefined;
      }
      if (list) {
        const dataMount = preview?.filesystem?.mountId;
        io.print(
          table(
            ["", "mount point", "device", "type", "kind", "size", "avail", ""],
            list.map((f) => [
              f.mountId === dataMount ? "*" : "",
              showPath(f.mountPoint),
              showPath(f.device),
              f.fstype,
              f.kind,
              bytes(f.size),
              bytes(f.available),
              f.readOnly ? "read-only" : "",
            ]),
          ),
        );
        io.print("\n");
      }
      if (!preview) {
        io.print("data dir  not configured (store.dataDir)\n");
        return;
      }
      const verdict = preview.accepted
        ? `accepted: ${preview.reason}`
        : `refused (${preview.code}): ${preview.reason}`;
      io.print(fields([["data dir", `${filesystemLine(preview)}${list ? "  (* above)" : ""}`], ["store", verdict]]));
    },
  };

  const storeCommand: ConsoleCommand = {
    name: "store",
    args: "",
    summary: "objects, bytes, quota, reserve, quarantine, last scrub",
    async run(args, io) {
      noArgs("store", args);
      const [identity, daemon] = await Promise.all([ctx.identity(), ctx.daemon(io.signal)]);
      const preview = await ctx.preview(identity);
      const rows: [string, string][] = [];
      if (preview) rows.push(["data dir", filesystemLine(preview)]);
      else rows.push(["data dir", "not configured (store.dataDir)"]);
      if (daemon.running) {
        const s = daemon.status.store ?? {};
        rows.push(["source", "the running daemon"]);
        if (s.running === false) {
          rows.push(["store", `not running: ${str(s.reason) ?? "no reason given"}${s.code ? ` (${s.code})` : ""}`]);
          io.print(fields(rows));
          return;
        }
        const quarantined = num(s.quarantined) ?? (preview ? await countQuarantined(preview.dataDir) : undefined);
        const scrub = s.lastScrub;
        const scrubAt = num(scrub?.at);
        rows.push(
          ["objects", `${num(s.objects) ?? "?"}${num(s.pinned) !== undefined ? ` (${s.pinned} pinned)` : ""}`],
          ["used", bytes(num(s.usedBytes))],
          ["quota", bytes(num(s.quotaBytes))],
          ["disk free", bytes(num(s.availableBytes))],
          ["reserve", num(s.reserveBytes) !== undefined ? `${bytes(s.reserveBytes)} kept free` : ctx.config.store.reserveBytes !== undefined ? `${bytes(ctx.config.store.reserveBytes)} kept free (config)` : "5% of the disk, at most 1 GiB (default)"],
          ["quarantined", quarantined !== undefined ? plural(quarantined, "object") : "?"],
          [
            "last scrub",
            scrub && scrubAt !== undefined
              ? `${time(scrubAt)}: ${scrub.checked} checked, ${scrub.corrupt} corrupt, ${scrub.missing} missing`
              : s.lastScrub === null
                ? "none since the daemon started (a pass a day)"
                : "not reported by this daemon",
          ],
        );
        io.print(fields(rows));
        return;
      }
      rows.push(["source", `the data directory, read now (${notRunningNote(daemon)})`]);
      if (!preview) {
        io.print(fields(rows));
        return;
      }
      if (!preview.accepted) {
        rows.push(["store", `refused (${preview.code}): ${preview.reason}`]);
        io.print(fields(rows));
        return;
      }
      const local = await readLocalStore(ctx.config, preview);
      if (!local.ok) {
        rows.push(["store", local.reason]);
        io.print(fields(rows));
        return;
      }
      const l = local.status;
      rows.push(
        ["objects", `${l.objects} (${l.pinned} pinned)`],
        ["used", bytes(l.usedBytes)],
        ["quota", bytes(l.quotaBytes)],
        ["disk free", bytes(l.availableBytes)],
        ["reserve", `${bytes(l.reserveBytes)} kept free`],
        ["quarantined", plural(l.quarantined, "object")],
        ["last scrub", "unknown (only the running daemon knows)"],
      );
      if (l.interrupted > 0) rows.push(["interrupted", `${plural(l.interrupted, "ingest")} (settled at the store's next start)`]);
      if (l.tornBytes > 0) rows.push(["index", `${bytes(l.tornBytes)} torn off the end of index.log (a cut write; dropped at the next start)`]);
      if (l.lockedBy !== undefined) rows.push(["in use", `by process ${l.lockedBy}: these figures are from its last write to the index`]);
      io.print(fields(rows));
    },
  };

  const link: ConsoleCommand = {
    name: "link",
    args: "",
    summary: "MQTT state: broker, connected since, reconnects, last error, outbox",
    async run(args, io) {
      noArgs("link", args);
      const daemon = await ctx.daemon(io.signal);
      const c = ctx.config.link;
      const rows: [string, string][] = [];
      const url = daemon.running ? str(daemon.status.link?.url) ?? c.url : c.url;
      const auth = c.username !== undefined ? `, user ${c.username}${c.password !== undefined ? ", password set" : ""}` : c.password !== undefined ? ", password set" : "";
      const tls = c.cert !== undefined ? ", client certificate" : "";
      rows.push(["broker", `${showUrl(url)} (MQTT ${c.protocolVersion === 4 ? "3.1.1" : "5"}${auth}${tls})`]);
      if (daemon.running) {
        const l = daemon.status.link ?? {};
        const since = num(l.connectedSince);
        rows.push(["state", l.connected ? `connected${since !== undefined ? ` since ${time(since)} (${duration((ctx.now() - since) / 1000)})` : ""}` : "not connected"]);
        rows.push(["connects", `${num(l.connects) ?? "?"} (${num(l.reconnects) ?? "?"} reconnect attempts)`]);
        rows.push(["last error", str(l.lastError) || (l.lastError === undefined ? "not reported by this daemon" : "none")]);
        rows.push(["traffic", `in ${bytes(num(l.bytesIn))}, out ${bytes(num(l.bytesOut))}`]);
        const o = daemon.status.outbox ?? {};
        rows.push(["outbox", `${plural(num(o.depth) ?? 0, "message")} waiting (${bytes(num(o.bytes))})${num(o.dropped) ? `, ${o.dropped} telemetry dropped` : ""}`]);
      } else {
        rows.push(["state", `no connection: ${notRunningNote(daemon)} (try net and selftest)`]);
        const outbox = await scanOutbox(ctx.stateDir);
        rows.push(["outbox", outbox.ok ? `${plural(outbox.depth, "message")} waiting on disk (${bytes(outbox.bytes)})` : outbox.reason]);
      }
      io.print(fields(rows));
    },
  };

  const net: ConsoleCommand = {
    name: "net",
    args: "",
    summary: "interfaces, default route, DNS servers, and whether the broker can be reached",
    async run(args, io) {
      noArgs("net", args);
      const routes = await readDefaultRoutes(ctx.hostPaths);
      const dns = await readDnsServers(ctx.hostPaths);
      const routeText = [
        ...(routes.v4 === undefined ? ["IPv4: /proc/net/route unreadable"] : routes.v4.length === 0 ? ["IPv4: none (no way out of the local network)"] : routes.v4.map((r) => `IPv4 via ${r.gateway} dev ${r.iface}`)),
        ...(routes.v6 === undefined ? [] : routes.v6.length === 0 ? ["IPv6: none"] : routes.v6.map((r) => `IPv6 via ${r.gateway} dev ${r.iface}`)),
      ];
      const rows: [string, string][] = [
        ["interfaces", interfaceLines().join("\n") || "none"],
        ["default route", routeText.join("\n")],
        ["DNS servers", dns === undefined ? "/etc/resolv.conf unreadable" : dns.length === 0 ? "none in /etc/resolv.conf" : dns.join(", ")],
      ];
      const url = ctx.config.link.url;
      const endpoint = url !== undefined ? brokerEndpoint(url) : undefined;
      rows.push(["broker", url === undefined ? "not configured (link.url)" : `${showUrl(url)}${endpoint ? ` (${endpoint.host} port ${endpoint.port}${endpoint.tls ? ", TLS" : ""})` : ""}`]);
      if (endpoint?.tls) rows.push(["clock", `${time(ctx.now())} (TLS certificates need the right time)`]);
      io.print(fields(rows));
      if (url === undefined || !endpoint) return;
      let ca: string | undefined;
      try {
        ca = await readPem(ctx.config.link.ca, "the CA file");
      } catch (err) {
        io.print(`  ${oneLine(err)}; checking against the system's CAs\n`);
      }
      const label = (s: Step) => ({ dns: "lookup", tcp: "connect", tls: "tls" })[s.step];
      await checkReachability(url, {
        timeoutMs: NET_TIMEOUT_MS,
        signal: io.signal,
        ...(ca !== undefined ? { ca } : {}),
        onStep: (s) => io.print(`  ${label(s).padEnd(8)} ${s.ok ? "ok  " : "FAIL"}  ${s.ms !== undefined ? `${millis(s.ms).padStart(8)}  ` : "          "}${s.detail}\n`),
      });
    },
  };

  const temp: ConsoleCommand = {
    name: "temp",
    args: "",
    summary: "every thermal zone, and the throttling limits",
    async run(args, io) {
      noArgs("temp", args);
      const opened = await ctx.board();
      if (!opened.board) {
        io.print(`board could not be opened: ${opened.error}\n`);
        return;
      }
      const b = opened.board;
      const zones = await b.readThermalZones();
      if (zones.length === 0) io.print("no thermal zones\n");
      else {
        io.print(
          table(
            ["zone", "type", "temperature"],
            zones.map((z) => [z.zone, z.type ?? "?", z.celsius !== undefined ? temperature(z.celsius) : `unreadable: ${z.error ?? "no reading"}`]),
          ),
        );
      }
      const governing = await b.readTemperatureC();
      const { pauseAtC, resumeAtC } = b.thermalLimits;
      const state = governing === undefined ? "" : governing >= pauseAtC ? " (at or above the pause limit: work that heats the box pauses)" : "";
      io.print("\n" + fields([["governing", `${temperature(governing)}${state}`], ["limits", `work pauses at ${pauseAtC} C, resumes below ${resumeAtC} C`]]));
    },
  };

  const log: ConsoleCommand = {
    name: "log",
    args: "[-f] [LINES]",
    summary: "the daemon's last log lines (default 20); -f follows until Ctrl-C",
    async run(args, io) {
      let followMode = false;
      let lines = 20;
      for (const a of args) {
        if (a === "-f" || a === "--follow") followMode = true;
        else if (/^\d+$/.test(a)) lines = parseLines(a, "log");
        else throw new ConsoleError(`log: unknown argument '${a}' (usage: log [-f] [LINES])`);
      }
      let client: ControlClient;
      try {
        client = await ctx.connect(io.signal);
      } catch (err) {
        if (!(err instanceof ControlError)) throw err;
        if (err.code === "aborted") return;
        const lockPid = await lockHolder(ctx.stateDir);
        io.print(`${lockPid !== undefined ? `the daemon (pid ${lockPid}) does not answer` : "the daemon is not running"}: ${err.message}\n`);
        io.print("its log is kept in memory only; earlier runs: journalctl -u sharenode (systemd) or logread -e sharenode (OpenWrt)\n");
        return;
      }
      try {
        if (!followMode) {
          const result = (await client.request("log.tail", { lines })) as { lines?: unknown };
          const got = Array.isArray(result?.lines) ? result.lines.map(String) : [];
          if (got.length === 0) io.print("(no log lines yet)\n");
          for (const l of got) io.print(l + "\n");
          return;
        }
        io.print(`following the daemon's log (Ctrl-C to stop)\n`);
        const ended = await client.follow(lines, (l) => io.print(l + "\n"), io.signal);
        if (ended === "closed") io.print("the daemon closed the connection (did it stop?)\n");
      } catch (err) {
        if (err instanceof ControlError) throw new ConsoleError(`log: ${err.message}`);
        throw err;
      } finally {
        ctx.release(client);
      }
    },
  };

  const proofs: ConsoleCommand = {
    name: "proofs",
    args: "",
    summary: "storage-proof counters and the last challenges answered",
    async run(args, io) {
      noArgs("proofs", args);
      const answer = await ctx.ask("proofs", io.signal);
      if (!answer.running) {
        io.print(`${answer.lockPid !== undefined ? `the daemon (pid ${answer.lockPid}) does not answer` : "the daemon is not running"}: ${answer.why}\n`);
        io.print("proof counters live in the running daemon (they start at 0 with it)\n");
        return;
      }
      const p = (answer.result ?? {}) as Partial<ProofsSnapshot>;
      const recent = Array.isArray(p.recent) ? p.recent : [];
      io.print(fields([["passed", String(num(p.passed) ?? "?")], ["failed", String(num(p.failed) ?? "?")]]));
      if (recent.length === 0) {
        io.print("no challenges answered since the daemon started\n");
        return;
      }
      io.print(`\nlast ${plural(recent.length, "challenge")}, oldest first:\n`);
      io.print(
        table(
          ["time", "object", "result"],
          recent.map((r) => [
            num(r.ts) !== undefined ? time(r.ts) : "?",
            str(r.objectId) ?? "?",
            r.ok ? "ok" : `FAIL ${str(r.code) ?? ""}${r.message ? `: ${oneLine(r.message)}` : ""}`.trim(),
          ]),
          "  ",
        ),
      );
    },
  };

  const selftest: ConsoleCommand = {
    name: "selftest",
    args: "",
    summary: "hash kernels, data disk write/read, broker round trip: PASS or FAIL each",
    async run(args, io) {
      noArgs("selftest", args);
      const results: CheckResult[] = [];
      const run = async (fn: () => CheckResult[] | Promise<CheckResult | CheckResult[]>) => {
        if (io.signal.aborted) return;
        let got: CheckResult | CheckResult[];
        try {
          got = await fn();
        } catch (err) {
          got = { name: "check", ok: false, detail: oneLine(err) };
        }
        const list = Array.isArray(got) ? got : [got];
        printChecks(io, list);
        results.push(...list);
      };
      await run(() => kernelChecks());
      await run(() => diskCheck(ctx.config.store.dataDir));
      await run(async () => brokerCheck(await probeOptions(io.signal)));
      if (io.signal.aborted) {
        io.print("interrupted\n");
        return { ok: false };
      }
      const failed = results.filter((r) => !r.ok).length;
      io.print(`selftest: ${results.length - failed} passed, ${failed} failed\n`);
      return { ok: failed === 0 };
    },
  };

  async function probeOptions(signal: AbortSignal): Promise<ProbeOptions | { error: string }> {
    const c = ctx.config.link;
    if (c.url === undefined) return { error: "no broker configured (link.url)" };
    const identity = await ctx.identity();
    if (!identity.ok) return { error: identity.reason };
    try {
      const [ca, cert, key] = await Promise.all([readPem(c.ca, "the CA file"), readPem(c.cert, "the client certificate"), readPem(c.key, "the client key")]);
      return {
        url: c.url,
        deviceId: identity.deviceId,
        protocolVersion: c.protocolVersion,
        ...(c.username !== undefined ? { username: c.username } : {}),
        ...(c.password !== undefined ? { password: c.password } : {}),
        ...(ca !== undefined ? { ca } : {}),
        ...(cert !== undefined ? { cert } : {}),
        ...(key !== undefined ? { key } : {}),
        timeoutMs: PROBE_TIMEOUT_MS,
        signal,
      };
    } catch (err) {
      return { error: oneLine(err) };
    }
  }

  const reboot: ConsoleCommand = {
    name: "reboot",
    args: "",
    summary: "reboot the box (asks you to type 'reboot')",
    async run(args, io) {
      noArgs("reboot", args);
      io.print("This reboots the box now; the daemon is stopped cleanly by the init system.\n");
      const answer = await io.ask("Type reboot to reboot, anything else to cancel: ");
      if (answer?.trim() !== "reboot") {
        io.print("cancelled: nothing was done\n");
        return;
      }
      await doReboot(io);
    },
  };

  async function doReboot(io: ConsoleIo): Promise<void> {
    io.print("rebooting...\n");
    try {
      await ctx.system.reboot();
    } catch (err) {
      throw new ConsoleError(`reboot failed: ${oneLine(err)}`);
    }
  }

  const factoryReset: ConsoleCommand = {
    name: "factory-reset",
    args: "",
    summary: "erase the device key, state and stored objects (keeps the config); daemon must be stopped",
    async run(args, io) {
      noArgs("factory-reset", args);
      const daemon = await ctx.daemon(io.signal);
      const lockPid = daemon.running ? num(daemon.status.pid) : daemon.lockPid;
      if (daemon.running || lockPid !== undefined) {
        throw new ConsoleError(
          `the daemon is running${lockPid !== undefined ? ` (pid ${lockPid})` : ""}: stop it first ` +
            "(systemctl stop sharenode, or /etc/init.d/sharenode stop), then run factory-reset again",
        );
      }
      const identity = await ctx.identity();
      const { dataDir } = ctx.config.store;
      let markerOwner: string | undefined;
      let markerUnreadable: string | undefined;
      if (dataDir !== undefined) {
        try {
          const marker = JSON.parse(await readFile(join(dataDir, MARKER_NAME), "utf8")) as { nodeId?: unknown };
          if (typeof marker?.nodeId === "string") markerOwner = marker.nodeId;
          else markerUnreadable = "its disk marker names no device";
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "ENOENT" && (err as NodeJS.ErrnoException).code !== "ENOTDIR") {
            markerUnreadable = `its disk marker cannot be read (${(err as NodeJS.ErrnoException).code ?? "not JSON"})`;
          }
        }
        // A store that someone else holds (`sharenode store` running) is not pulled from under it.
        const storeLock = Number.parseInt(await readFile(join(dataDir, "store.lock"), "utf8").catch(() => ""), 10);
        if (Number.isInteger(storeLock) && storeLock > 0 && storeLock !== process.pid && alive(storeLock)) {
          throw new ConsoleError(`the store in ${dataDir} is in use by process ${storeLock}: stop it first, then run factory-reset again`);
        }
      }
      const plan = await planReset({
        stateDir: ctx.stateDir,
        ...(dataDir !== undefined ? { dataDir } : {}),
        ...(ctx.configFile !== undefined ? { configFile: ctx.configFile } : {}),
        ...(identity.ok ? { deviceId: identity.deviceId } : {}),
        ...(markerOwner !== undefined ? { markerOwner } : {}),
        ...(markerUnreadable !== undefined ? { markerUnreadable } : {}),
      });
      io.print(describePlan(plan));
      if (plan.state.length === 0 && plan.data.length === 0) {
        io.print("There is nothing to erase.\n");
        return;
      }
      const word = identity.ok ? identity.deviceId.slice(0, 8) : "factory-reset";
      const what = identity.ok ? `this device's short id, ${word}` : `the word ${word} (this box has no device key)`;
      const answer = await io.ask(`To erase, type ${what}; anything else cancels: `);
      if (answer?.trim() !== word) {
        io.print("cancelled: nothing was erased\n");
        return;
      }
      const failures = await executePlan(plan);
      for (const f of failures) io.print(`${f}\n`);
      if (failures.length > 0) {
        io.print(`factory-reset incomplete: ${plural(failures.length, "entry", "entries")} could not be removed (run it again once fixed)\n`);
        return;
      }
      io.print(`erased ${plural(plan.state.length + plan.data.length, "entry", "entries")}; the box starts as a new device at the next start\n`);
      const again = await io.ask("Type reboot to reboot now, anything else to stay in the console: ");
      if (again?.trim() === "reboot") await doReboot(io);
      else io.print("not rebooting\n");
    },
  };

  const commands = [status, versionCommand, boardCommand, disks, storeCommand, link, net, temp, log, proofs, selftest, reboot, factoryReset];

  // The banner: who this is and whether the daemon runs, in two or three lines, without waiting on the network.
  const [identity, daemon] = await Promise.all([ctx.identity(), ctx.daemon().catch((err: Error) => ({ running: false as const, why: oneLine(err), code: "error" }))]);
  let banner = `sharenode ${version} diagnostics console\n`;
  banner += `device ${identity.ok ? identity.deviceId : "(no device key yet)"}; daemon ${daemonLine(daemon, ctx.now())}\n`;
  if (ctx.configProblems.length > 0) banner += `config: ${plural(ctx.configProblems.length, "problem")} (see status)\n`;

  return {
    commands,
    banner,
    close: () => ctx.close(),
  };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}


