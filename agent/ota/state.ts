// The update's state, persisted before each risky step (Mender's rule), so that a power cut at any point resumes
// from where it was: downloading -> installed (the inactive slot written and fsynced) -> trial (booted into it)
// -> committed (it proved itself; the anti-rollback floor rises to its build) or rolledback (back on the previous
// slot, with the reason). Written atomically (temp, fsync, rename): the file is always a whole old or new state.
import { readFile } from "node:fs/promises";
import { writeFileAtomic } from "../durable/atomic.js";
import { errnoCode, errorLine } from "../util/errors.js";

export type OtaPhase = "idle" | "downloading" | "installed" | "trial" | "committed" | "rolledback";

export interface OtaState {
  phase: OtaPhase;
  /** The build running and committed (0 before the first install). */
  installedBuild: number;
  /** The anti-rollback floor: no build below it is ever installed again. Rises on commit, never falls. */
  floor: number;
  /** The release being installed (downloading..trial) or last ended (committed, rolledback). */
  build?: number;
  version?: string;
  /** Why a rollback happened (rolledback), or why the last attempt stopped. */
  reason?: string;
  /** Epoch ms of the last change. */
  at: number;
}

const NEXT: Record<OtaPhase, readonly OtaPhase[]> = {
  idle: ["downloading"],
  // A download that fails or is refused goes back to idle, with its reason.
  downloading: ["installed", "idle"],
  installed: ["trial", "rolledback"],
  trial: ["committed", "rolledback"],
  committed: ["downloading"],
  rolledback: ["downloading"],
};

export class OtaStateError extends Error {
  override readonly name = "OtaStateError";
}

export class OtaStateStore {
  private state: OtaState | undefined;

  constructor(
    private readonly path: string,
    private readonly now: () => number = Date.now,
  ) {}

  /** The state on disk (idle, build 0, floor 0 when there is none yet). A file that is not a state is an error. */
  async load(): Promise<OtaState> {
    let text: string;
    try {
      text = await readFile(this.path, "utf8");
    } catch (err) {
      if (errnoCode(err) !== "ENOENT") throw new OtaStateError(`update state ${this.path}: ${errorLine(err)}`);
      this.state = { phase: "idle", installedBuild: 0, floor: 0, at: 0 };
      return this.state;
    }
    let value: OtaState;
    try {
      value = JSON.parse(text) as OtaState;
    } catch {
      throw new OtaStateError(`update state ${this.path} is not JSON: nothing is changed until it is repaired`);
    }
    if (
      !Object.hasOwn(NEXT, value.phase) ||
      !Number.isSafeInteger(value.installedBuild) ||
      !Number.isSafeInteger(value.floor)
    )
      throw new OtaStateError(`update state ${this.path} is not an update state`);
    this.state = value;
    return value;
  }

  get current(): OtaState {
    if (!this.state) throw new OtaStateError("update state not loaded");
    return this.state;
  }

  /**
   * Moves to `phase`, durably, before the caller takes the step it stands for. Refuses a move the machine does not
   * have. On commit the installed build becomes `build` and the floor rises to it.
   */
  async advance(
    phase: OtaPhase,
    change: { build?: number; version?: string; reason?: string } = {},
  ): Promise<OtaState> {
    const from = this.current;
    if (!NEXT[from.phase].includes(phase)) throw new OtaStateError(`update state: ${from.phase} cannot go to ${phase}`);
    const build = change.build ?? from.build;
    const next: OtaState = {
      phase,
      installedBuild: from.installedBuild,
      floor: from.floor,
      build,
      version: change.version ?? from.version,
      reason: change.reason,
      at: this.now(),
    };
    if (phase === "downloading" && build === undefined)
      throw new OtaStateError("update state: downloading needs a build");
    if (phase === "committed") {
      next.installedBuild = build!;
      next.floor = Math.max(from.floor, build!);
    }
    await writeFileAtomic(this.path, JSON.stringify(next), { mode: 0o600 });
    this.state = next;
    return next;
  }
}
