// One process per directory: the store's data directory and the agent's state directory each hold a lock file
// naming the owner's pid. Two writers of one log interleave their frames (seen: two `npm start`s sharing a state
// directory tore the outbox). Node has no flock without a native addon, hence the pid file; a lock whose process
// is gone (a power cut, SIGKILL) is taken over. A reused pid can make a stale lock look held: the error says
// which process, so a person can remove the file.
import { constants as fsConstants } from "node:fs";
import { open, readFile, rm } from "node:fs/promises";
import { isZombie } from "../../board/host-paths.js";
import { errnoCode } from "../util/errors.js";

export class LockedError extends Error {
  constructor(
    message: string,
    readonly owner: number,
  ) {
    super(message);
    this.name = "LockedError";
  }
}

/** The daemon's lock in its state directory. */
export const AGENT_LOCK_FILE = "agent.lock";
/** The store's lock in the data directory (the daemon, or `sharenode store`, holds it). */
export const STORE_LOCK_FILE = "store.lock";

/**
 * Whether a process with this pid exists (EPERM: it does, but belongs to another user) and is not a zombie: one
 * killed with its parent (the launcher's process group SIGKILLed) waits to be reaped by init, holding nothing.
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if (errnoCode(err) !== "EPERM") return false;
  }
  return !isZombie(pid);
}

/**
 * The pid written in the lock file `path` when that process is alive; undefined when the file is missing,
 * unreadable, names no pid, or its process is gone (a stale lock). For those who only look (the console's
 * status, factory-reset's checks), never take.
 */
export async function lockOwner(path: string): Promise<number | undefined> {
  const pid = Number.parseInt(await readFile(path, "utf8").catch(() => ""), 10);
  return Number.isInteger(pid) && pid > 0 && processAlive(pid) ? pid : undefined;
}

export class PidLock {
  private held = false;

  constructor(
    readonly path: string,
    /** What the lock protects, for the error message ("the store in /mnt/usb/sharenode"). */
    private readonly what: string,
  ) {}

  /** Takes the lock or throws LockedError naming the live owner. */
  async acquire(): Promise<void> {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const fh = await open(this.path, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o644);
        await fh.writeFile(`${process.pid}\n`);
        await fh.close();
        this.held = true;
        return;
      } catch (err) {
        if (errnoCode(err) !== "EEXIST") throw err;
      }
      const owner = await lockOwner(this.path);
      if (owner !== undefined) throw new LockedError(`${this.what} is in use by process ${owner}`, owner);
      await rm(this.path, { force: true });
    }
    throw new LockedError(`could not take the lock ${this.path}`, 0);
  }

  /** Releases the lock if this object holds it (never another process's). */
  async release(): Promise<void> {
    if (!this.held) return;
    this.held = false;
    await rm(this.path, { force: true });
  }
}
