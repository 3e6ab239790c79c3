// What every console command works from: the config (a broken one with its problems), where the host's files are,
// the clock, what the console may do to the machine, and the ways to the facts: the device identity, the board,
// the running daemon (control.ts) or, without one, the data disk (local-state.ts). Built once per console session
// (createConsoleCommands, commands.ts) and handed to each command; what it opens (the board, `log -f`
// connections) it keeps and closes once.
import { openBoard, type Board } from "../../board/board.js";
import { HostPaths } from "../../board/host-paths.js";
import type { ReportedStatus } from "../protocol/daemon-status.js";
import { AUTO_DATA_DIR, simBoardRoot } from "../store/auto-data-dir.js";
import { ConsoleError } from "./command-api.js";
import { askDaemon, ControlClient, ControlError } from "./control.js";
import {
  loadConsoleConfig,
  lockHolder,
  previewDataDisk,
  readDeviceIdentity,
  type ConsoleConfig,
  type DiskPreview,
  type IdentityRead,
} from "./local-state.js";
import { defaultSystemActions, type SystemActions } from "./reset.js";
import { errorLine } from "../util/errors.js";

export interface ConsoleContextOptions {
  env: Record<string, string | undefined>;
  /** The config file the daemon uses (absent: defaults and the environment only). */
  configFile?: string;
  /** Where /proc, /sys, /dev and /etc are (default: SHARENODE_HOST_ROOT or "/"). */
  hostPaths?: HostPaths;
  now?: () => number;
  /** Reboot (default: runs `reboot`). */
  system?: SystemActions;
}

/** How long the console waits for the daemon's control socket before calling it "not running". */
const CONNECT_TIMEOUT_MS = 1000;

/** No daemon answers on the control socket: why, and the pid holding `agent.lock` if a daemon seems to run. */
export interface DaemonAbsent {
  running: false;
  why: string;
  code: string;
  lockPid?: number;
}

/** What the console knows of the daemon: its status, or why it has none. */
export type DaemonState = { running: true; status: ReportedStatus; error?: string } | DaemonAbsent;

export class ConsoleContext {
  readonly config: ConsoleConfig;
  /** The config's problems, one line each (empty when it loads). */
  readonly configProblems: string[];
  readonly configFile: string | undefined;
  readonly hostPaths: HostPaths;
  readonly now: () => number;
  readonly system: SystemActions;
  private boardOpened: Promise<{ board?: Board; error?: string }> | undefined;
  private readonly clients = new Set<ControlClient>();

  constructor(options: ConsoleContextOptions) {
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

  /** The board, opened once (the sim board's tree is the daemon's: simBoardRoot); the watchdog is never opened. */
  board(): Promise<{ board?: Board; error?: string }> {
    this.boardOpened ??= (async () => {
      try {
        const board = await openBoard({
          paths: this.hostPaths,
          name: this.config.board,
          simRoot: simBoardRoot(this.config.store.dataDir, this.stateDir),
        });
        return { board };
      } catch (err) {
        return { error: errorLine(err) };
      }
    })();
    return this.boardOpened;
  }

  /** One request to the daemon; { running: false } when none answers. */
  async ask(
    op: string,
    signal?: AbortSignal,
    args: Record<string, unknown> = {},
  ): Promise<{ running: true; result: unknown } | DaemonAbsent> {
    let answer;
    try {
      answer = await askDaemon(this.stateDir, op, args, {
        connectTimeoutMs: CONNECT_TIMEOUT_MS,
        ...(signal ? { signal } : {}),
      });
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

  /** What the daemon's data-disk check would decide, without adopting anything; undefined without store.dataDir. */
  async preview(identity: IdentityRead): Promise<DiskPreview | undefined> {
    const { dataDir, allowSystemDisk } = this.config.store;
    if (dataDir === undefined) return undefined;
    return previewDataDisk(
      { dataDir, stateDir: this.stateDir, allowSystemDisk },
      identity.ok ? identity.deviceId : undefined,
      this.hostPaths,
    );
  }

  /**
   * The data directory the daemon uses or would use: store.dataDir, or with "auto" the directory it resolves to
   * (the adopted disk's, or the one candidate's). `dir` is absent, and `reason` says why, when there is none.
   */
  async dataDir(identity: IdentityRead): Promise<{ dir?: string; reason: string }> {
    const { dataDir } = this.config.store;
    if (dataDir === undefined) return { reason: "no data directory configured (store.dataDir)" };
    if (dataDir !== AUTO_DATA_DIR) return { dir: dataDir, reason: "store.dataDir" };
    const preview = await this.preview(identity);
    if (preview === undefined || preview.dataDir === AUTO_DATA_DIR) {
      return { reason: `store.dataDir is "auto" and names no disk: ${preview?.reason ?? "no preview"}` };
    }
    return { dir: preview.dataDir, reason: `store.dataDir "auto": ${preview.dataDir}` };
  }

  /** A connection to the daemon for a command that streams (`log -f`); give it back with release(). */
  async connect(signal: AbortSignal): Promise<ControlClient> {
    const client = await ControlClient.connect(this.stateDir, { connectTimeoutMs: CONNECT_TIMEOUT_MS, signal });
    this.clients.add(client);
    return client;
  }

  release(client: ControlClient): void {
    client.close();
    this.clients.delete(client);
  }

  /** Ends what a command left open. */
  async close(): Promise<void> {
    for (const client of this.clients) client.close();
    this.clients.clear();
  }
}
