// `ota`: updates over the air on the box (agent/ota), through the running daemon's control socket: what runs and
// where an update stands; commit or roll back a release on trial by hand; apply a release from a local directory
// (a USB stick with what `sharenode release pack` wrote), with no network. `sharenode ota ...` runs the same.
import { resolve } from "node:path";
import { ConsoleError, type ConsoleCommand } from "../command-api.js";
import type { ConsoleContext } from "../context.js";
import { fields, time } from "../format.js";
import { num, str } from "./common.js";

const ACTIONS = ["status", "commit", "rollback", "apply"] as const;

export function otaCommand(ctx: ConsoleContext): ConsoleCommand {
  return {
    name: "ota",
    args: "[status | commit | rollback | apply DIR]",
    summary: "updates: what runs and the update's state; commit or roll back a trial; apply a release from DIR",
    async run(args, io) {
      const [action = "status", ...rest] = args;
      if (!(ACTIONS as readonly string[]).includes(action))
        throw new ConsoleError(`ota: unknown action '${action}' (status, commit, rollback or apply DIR)`);
      if (action === "apply" ? rest.length !== 1 : rest.length > 0)
        throw new ConsoleError(
          action === "apply" ? "ota apply takes one directory" : `ota ${action} takes no arguments`,
        );
      const request: Record<string, unknown> = { action };
      if (action === "apply") request.dir = resolve(rest[0]);
      const answer = await ctx.ask("ota", io.signal, request);
      if (!answer.running) throw new ConsoleError(`the daemon is not running (${answer.why}): updates go through it`);
      const r = (answer.result ?? {}) as Record<string, unknown>;
      if (action === "rollback") {
        io.print("the release on trial is given up: the agent restarts into the previous release\n");
        return;
      }
      if (action === "apply") {
        io.print(
          r.duplicate
            ? `build ${num(r.build) ?? "?"} is already being installed (${str(r.phase) ?? "?"})\n`
            : `build ${num(r.build) ?? "?"} (${str(r.version) ?? "?"}) accepted: it installs, then the agent restarts into it on trial\n`,
        );
        return;
      }
      printStatus(r, (text) => io.print(text));
    },
  };
}

function printStatus(r: Record<string, unknown>, print: (text: string) => void): void {
  const target = (r.target ?? {}) as Record<string, unknown>;
  const trial = r.trial as Record<string, unknown> | undefined;
  const rows: [string, string][] = [
    ["running", `${str(r.version) ?? "?"} (build ${num(r.build) ?? "?"}, slot ${str(r.slot) ?? "none"})`],
    [
      "update",
      `${str(r.phase) ?? "?"}${num(target.build) !== undefined ? `: build ${target.build as number} (${str(target.version) ?? "?"})` : ""}`,
    ],
    ["floor", `builds below ${num(r.floor) ?? "?"} are never installed`],
  ];
  if (trial)
    rows.push([
      "trial",
      `slot ${str(trial.slot) ?? "?"}, try ${num(trial.try) ?? "?"}; commits after ${num(r.gateSeconds) ?? "?"} s (the launcher gives up at ${num(trial.deadlineSeconds) ?? "?"} s)`,
    ]);
  if (str(r.reason)) rows.push(["last", str(r.reason)!]);
  if (num(r.at)) rows.push(["since", time(r.at as number)]);
  if (r.updatable === false)
    rows.push(["note", "not run from a release slot by the launcher: no update can be installed"]);
  print(fields(rows));
}
