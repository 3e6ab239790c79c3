// `sharenode ota ...`: the console's `ota` command from a shell (agent/console/commands/ota.ts): what runs, where an
// update stands, commit or roll back a trial, and `apply DIR` to install a release from a USB stick through the
// running daemon, with no network. Exit 0 done, 1 refused or failed, 2 bad usage.
import { ConsoleError } from "../console/command-api.js";
import { CliError, consoleIoFor, parseCommandArgs, usageError, type CliIo, type Command } from "./io.js";

const USAGE = `Usage: sharenode ota [status | commit | rollback | apply DIR] [--config FILE]

Updates over the air, through the running agent (its control socket in the state directory):
  status     the release running (version, build, slot), the update's phase, the anti-rollback floor (default)
  commit     mark the release on trial good now, without waiting for its gate
  rollback   give up the release on trial: the agent restarts into the previous release
  apply DIR  install the release in DIR, or DIR/manifest.json (what 'sharenode release pack' wrote: the manifest
             and objects/), checked like an offer from the fleet (the release key, newer than what runs, the
             floor, the space)

Options:
  -c, --config FILE   the agent's config file (for its state directory)
  -h, --help          show this help
`;

export const otaCommand: Command = {
  summary: "updates on this box: status, commit, rollback, apply a release from a directory",
  usage: USAGE,
  run: runOta,
};

async function runOta(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs("ota", args, { config: { type: "string", short: "c" } }, true);
  const [action = "status", ...rest] = positionals;
  if (!["status", "commit", "rollback", "apply"].includes(action))
    throw usageError(`ota: unknown action '${action}' (status, commit, rollback or apply DIR)`);
  if (action === "apply" ? rest.length !== 1 : rest.length > 0)
    throw usageError(action === "apply" ? "ota apply: give one directory" : `ota ${action}: no arguments`);
  const [{ ConsoleContext }, { otaCommand: consoleOta }] = await Promise.all([
    import("../console/context.js"),
    import("../console/commands/ota.js"),
  ]);
  const ctx = new ConsoleContext({ env: io.env, configFile: values.config });
  try {
    await consoleOta(ctx).run([action, ...rest], consoleIoFor(io));
    return 0;
  } catch (err) {
    if (err instanceof ConsoleError) throw new CliError(`ota: ${err.message}`);
    throw err;
  } finally {
    await ctx.close();
  }
}
