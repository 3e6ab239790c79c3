// The diagnostics console's commands (`sharenode console`): what a person with a serial cable and no network asks
// the box. This file builds the session: the context every command works from (context.ts, built here once), the
// commands in the order `help` lists them (one module each in commands/), and the banner. Each command prints plain
// aligned lines through the ConsoleIo (command-api.ts); the shell (shell.ts) owns the terminal.
//
// Where the facts come from: a running daemon answers on its control socket (control.ts) with its live state;
// without one, the console reads the state directory and the data directory itself (local-state.ts), never
// creating or adopting anything. A broken config is shown, not fatal: every key falls back on its own. The network
// may be down: nothing here waits on it beyond a short timeout, and Ctrl-C (io.signal) ends what does.
//
// Keys are never printed: the console reads the device key only to derive the public key and the device id.
import { version } from "../../package.json";
import type { ConsoleCommand } from "./command-api.js";
import { boardCommand } from "./commands/board.js";
import { daemonLine } from "./commands/common.js";
import { disksCommand } from "./commands/disks.js";
import { factoryResetCommand } from "./commands/factory-reset.js";
import { ledgerCommand } from "./commands/ledger.js";
import { linkCommand } from "./commands/link.js";
import { logCommand } from "./commands/log.js";
import { netCommand } from "./commands/net.js";
import { otaCommand } from "./commands/ota.js";
import { computeCommand } from "./commands/compute.js";
import { proofsCommand } from "./commands/proofs.js";
import { rebootCommand } from "./commands/reboot.js";
import { selftestCommand, selftestSteps } from "./commands/selftest.js";
import { statusCommand } from "./commands/status.js";
import { storeCommand } from "./commands/store.js";
import { tempCommand } from "./commands/temp.js";
import { versionCommand } from "./commands/version.js";
import { ConsoleContext, type ConsoleContextOptions } from "./context.js";
import { plural } from "./format.js";
import { errorLine } from "../util/errors.js";

export type { SystemActions } from "./reset.js";
export type ConsoleCommandsOptions = ConsoleContextOptions;

export interface ConsoleCommands {
  commands: ConsoleCommand[];
  /** A few lines the shell prints before the first prompt. */
  banner: string;
  /** Ends what a command left open (a `log -f` connection). */
  close(): Promise<void>;
}

export async function createConsoleCommands(options: ConsoleCommandsOptions): Promise<ConsoleCommands> {
  const ctx = new ConsoleContext(options);
  const commands = [
    statusCommand(ctx),
    versionCommand(),
    boardCommand(ctx),
    disksCommand(ctx),
    storeCommand(ctx),
    linkCommand(ctx),
    netCommand(ctx),
    tempCommand(ctx),
    logCommand(ctx),
    proofsCommand(ctx),
    ledgerCommand(ctx),
    otaCommand(ctx),
    computeCommand(ctx),
    selftestCommand(selftestSteps(ctx)),
    rebootCommand(ctx),
    factoryResetCommand(ctx),
  ];

  // The banner: who this is and whether the daemon runs, in two or three lines, without waiting on the network.
  const [identity, daemon] = await Promise.all([
    ctx.identity(),
    ctx.daemon().catch((err: Error) => ({ running: false as const, why: errorLine(err), code: "error" })),
  ]);
  let banner = `sharenode ${version} diagnostics console\n`;
  banner += `device ${identity.ok ? identity.deviceId : "(no device key yet)"}; daemon ${daemonLine(daemon, ctx.now())}\n`;
  if (ctx.configProblems.length > 0) banner += `config: ${plural(ctx.configProblems.length, "problem")} (see status)\n`;

  return {
    commands,
    banner,
    close: () => ctx.close(),
  };
}
