// `factory-reset`: refused while a daemon runs or another process holds the store; shows exactly what it erases and
// what it keeps (the plan: reset.ts), asks for the device's short id, erases, then offers a reboot.
import { ConsoleError, type ConsoleCommand } from "../command-api.js";
import type { ConsoleContext } from "../context.js";
import { plural } from "../format.js";
import { describePlan, executePlan, planReset, storeLockHolder } from "../reset.js";
import { noArgs, num } from "./common.js";
import { rebootNow } from "./reboot.js";

export function factoryResetCommand(ctx: ConsoleContext): ConsoleCommand {
  return {
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
      // With "auto", the disk it adopted (or would take); a disk "auto" cannot name is not this device's store.
      const dataDir = (await ctx.dataDir(identity)).dir;
      if (dataDir !== undefined) {
        // A store that someone else holds (`sharenode store` running) is not pulled from under it.
        const holder = await storeLockHolder(dataDir);
        if (holder !== undefined) {
          throw new ConsoleError(
            `the store in ${dataDir} is in use by process ${holder}: stop it first, then run factory-reset again`,
          );
        }
      }
      const plan = await planReset({
        stateDir: ctx.stateDir,
        ...(dataDir !== undefined ? { dataDir } : {}),
        ...(ctx.configFile !== undefined ? { configFile: ctx.configFile } : {}),
        ...(identity.ok ? { deviceId: identity.deviceId } : {}),
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
        io.print(
          `factory-reset incomplete: ${plural(failures.length, "entry", "entries")} could not be removed (run it again once fixed)\n`,
        );
        return;
      }
      io.print(
        `erased ${plural(plan.state.length + plan.data.length, "entry", "entries")}; the box starts as a new device at the next start\n`,
      );
      const again = await io.ask("Type reboot to reboot now, anything else to stay in the console: ");
      if (again?.trim() === "reboot") await rebootNow(ctx, io);
      else io.print("not rebooting\n");
    },
  };
}
