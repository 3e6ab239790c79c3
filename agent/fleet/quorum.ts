// Redundant compute (issue 14, after BOINC's quorum): the same task goes to K devices, and a result is accepted when
// M of them sign the same output id. Each device's result is checked as it arrives: signed by that device's key,
// for this task, this module and this input. A device that signs another output than the quorum's, or a result
// that does not check out, is named; settlement (agent/ledger/settle.ts) then refuses its compute line, given the
// verdict this produces. Pure: the CLI (agent/cli/fleet-compute.ts) feeds it replies and events.
import { openComputeResult, type ComputeVerdict } from "../protocol/compute-result.js";

export type ReplicaState = "asked" | "running" | "done" | "failed" | "refused" | "invalid";

export interface Replica {
  deviceId: string;
  state: ReplicaState;
  outputId?: string;
  cpuMs?: number;
  wallMs?: number;
  /** The failure's or refusal's code and reason, or why a result is invalid. */
  code?: string;
  reason?: string;
  /** The device's signed result (done). */
  result?: string;
}

export type QuorumOutcome =
  | { state: "pending" }
  | { state: "accepted"; outputId: string; agreeing: string[]; disagreeing: Replica[] }
  | { state: "no-quorum"; disagreeing: Replica[] };

export interface QuorumTask {
  taskId: string;
  moduleId: string;
  inputId: string;
  /** The CPU budget the task was sent with: settlement pays no more. */
  cpuMs: number;
}

export class ComputeQuorum {
  readonly replicas = new Map<string, Replica>();

  /** `devices`: deviceId -> raw public key (the registry the results are verified under). */
  constructor(
    readonly task: QuorumTask,
    private readonly devices: ReadonlyMap<string, Uint8Array>,
    readonly quorum: number,
  ) {
    if (!Number.isSafeInteger(quorum) || quorum < 1 || quorum > devices.size)
      throw new RangeError(`the quorum must be 1..${devices.size} (the replicas), got ${quorum}`);
    for (const deviceId of devices.keys()) this.replicas.set(deviceId, { deviceId, state: "asked" });
  }

  /** The device answered compute.run: accepted (it runs), or refused with a code. */
  replied(deviceId: string, reply: { ok: true } | { ok: false; code: string; message: string }): void {
    const r = this.replicas.get(deviceId);
    if (!r || r.state !== "asked") return;
    if (reply.ok) r.state = "running";
    else Object.assign(r, { state: "refused", code: reply.code, reason: reply.message });
  }

  /** A compute.done event: its result token is checked before it counts. */
  done(deviceId: string, token: unknown): void {
    const r = this.replicas.get(deviceId);
    if (!r || r.state === "done" || r.state === "invalid") return; // sent again (QoS 1): the first counts
    const key = this.devices.get(deviceId)!;
    const opened = openComputeResult(token, key);
    const invalid = (reason: string) => Object.assign(r, { state: "invalid", code: "bad-result", reason });
    if (!opened.ok) return void invalid(opened.reason);
    const res = opened.result;
    if (res.deviceId !== deviceId) return void invalid(`the result names device ${res.deviceId}`);
    for (const key of ["taskId", "moduleId", "inputId"] as const)
      if (res[key] !== this.task[key]) return void invalid(`the result's ${key} is ${res[key]}, not ${this.task[key]}`);
    Object.assign(r, {
      state: "done",
      outputId: res.outputId,
      cpuMs: res.cpuMs,
      wallMs: res.wallMs,
      result: token as string,
      code: undefined,
      reason: undefined,
    });
  }

  /** A compute.failed event. */
  failed(deviceId: string, code: string, reason: string): void {
    const r = this.replicas.get(deviceId);
    if (!r || r.state === "done" || r.state === "invalid") return;
    Object.assign(r, { state: "failed", code, reason });
  }

  /** No answer in time: the device neither agrees nor counts against a quorum any more. */
  timedOut(): void {
    for (const r of this.replicas.values())
      if (r.state === "asked" || r.state === "running")
        Object.assign(r, { state: "failed", code: "timeout", reason: "no result in time" });
  }

  /** Accepted once M devices signed the same output; no quorum once even the devices still out could not make M. */
  outcome(): QuorumOutcome {
    const votes = new Map<string, string[]>();
    let pending = 0;
    for (const r of this.replicas.values()) {
      if (r.state === "done") votes.set(r.outputId!, [...(votes.get(r.outputId!) ?? []), r.deviceId]);
      else if (r.state === "asked" || r.state === "running") pending++;
    }
    const ranked = [...votes].sort((a, b) => b[1].length - a[1].length || (a[0] < b[0] ? -1 : 1));
    const top = ranked[0];
    if (top && top[1].length >= this.quorum) {
      const [outputId, agreeing] = top;
      const disagreeing = [...this.replicas.values()].filter(
        (r) => (r.state === "done" && r.outputId !== outputId) || r.state === "invalid",
      );
      return { state: "accepted", outputId, agreeing, disagreeing };
    }
    if ((top?.[1].length ?? 0) + pending >= this.quorum) return { state: "pending" };
    // Without a quorum, nobody's output is known to be wrong: only results that did not check out are named.
    return { state: "no-quorum", disagreeing: [...this.replicas.values()].filter((r) => r.state === "invalid") };
  }

  /** What settlement needs (ComputeVerdict): the agreed output, or null without a quorum. */
  verdict(): ComputeVerdict {
    const o = this.outcome();
    return {
      taskId: this.task.taskId,
      moduleId: this.task.moduleId,
      inputId: this.task.inputId,
      outputId: o.state === "accepted" ? o.outputId : null,
      devices: [...this.replicas.keys()],
      cpuMs: this.task.cpuMs,
    };
  }

  /** One line per device: state, output, CPU and wall time, and how it stands against the quorum. */
  table(): string {
    const o = this.outcome();
    const rows = [...this.replicas.values()].map((r) => {
      const stand =
        o.state !== "accepted"
          ? ""
          : r.state === "done"
            ? r.outputId === o.outputId
              ? "agrees"
              : "DISAGREES"
            : r.state === "invalid"
              ? "INVALID"
              : "";
      return [
        r.deviceId,
        r.state,
        r.outputId ? r.outputId.slice(0, 16) : "-",
        r.cpuMs === undefined ? "-" : String(r.cpuMs),
        r.wallMs === undefined ? "-" : String(r.wallMs),
        stand || (r.code ? `${r.code}: ${r.reason ?? ""}`.slice(0, 80) : ""),
      ];
    });
    const head = ["device", "state", "output", "cpu_ms", "wall_ms", "verdict"];
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    const line = (cells: string[]) =>
      cells
        .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
        .join("  ")
        .trimEnd();
    return [line(head), ...rows.map(line)].join("\n") + "\n";
  }
}
