// `sharenode run`: the device agent (agent/agent.ts) in the foreground, until SIGTERM or SIGINT.
import { HostPaths } from "../../board/host-paths.js";
import { version } from "../../package.json";
import { ConfigError, loadConfig } from "../config/config.js";
import { Agent, AgentStopped } from "../agent.js";
import { RESTART_EXIT_STATUS, runningRelease } from "../ota/slots.js";
import { LogHub } from "../util/log.js";
import { CliError, parseCommandArgs, type CliIo, type Command } from "./io.js";
import { errorMessage } from "../util/errors.js";

const USAGE = `Usage: sharenode run [--config FILE]

Run the agent: keep and prove objects on the data disk, report over MQTT, answer signed commands.
Stops cleanly on SIGTERM or SIGINT. The config is one JSON file (agent/config/README.md lists every key);
environment variables override it (SHARENODE_BROKER, SHARENODE_DATA, SHARENODE_STATE, SHARENODE_FLEET_KEY, ...).
Every problem in the config is reported at once, one line each, and the agent does not start (exit 2).
Exit status 75 asks the launcher (board/install/launcher.sh) to start it again: an update switched releases.

Options:
  -c, --config FILE   the config file (default: none: defaults and the environment only)
  -h, --help          show this help
`;

export const runCommand: Command = { summary: "run the agent (daemon) in the foreground", usage: USAGE, run: runAgent };

async function runAgent(args: string[], io: CliIo): Promise<number> {
  const { values } = parseCommandArgs("run", args, { config: { type: "string", short: "c" } }, false);
  let config;
  try {
    ({ config } = loadConfig(values.config, io.env));
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const problem of err.problems) io.stderr.write(`sharenode: config: ${problem.replace(/\r?\n/g, "\\n")}\n`);
      return 2;
    }
    throw err;
  }
  const logs = new LogHub(io.stderr, config.log.level);
  const hostPaths = new HostPaths(io.env.SHARENODE_HOST_ROOT || "/");
  // Run from a slot of a release tree (/opt/sharenode/releases/A): its manifest names the version and build.
  const release = await runningRelease(process.argv[1], version);
  let restart: (reason: string) => void = () => {};
  const agent = new Agent(config, {
    logs,
    version: release.version,
    hostPaths,
    release,
    restart: (reason) => restart(reason),
  });
  const stopped = new Promise<number>((resolve) => {
    restart = (reason) => {
      logs.logger("agent").info(`stopping to restart (${reason})`);
      void agent.stop().then(
        () => resolve(RESTART_EXIT_STATUS),
        () => resolve(RESTART_EXIT_STATUS),
      );
    };
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals) => {
      signals++;
      if (signals > 1) {
        // A second signal while stopping: the person means it.
        io.stderr.write(`sharenode: ${signal} again: exiting without a clean stop\n`);
        process.exit(1);
      }
      logs.logger("agent").info(`${signal}: stopping`);
      void agent.stop().then(
        () => resolve(0),
        () => resolve(1),
      );
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  });
  try {
    await agent.start();
  } catch (err) {
    // A signal or a restart during the start: the stop it asked for is the exit status.
    if (err instanceof AgentStopped) return stopped;
    await agent.stop().catch(() => {});
    throw new CliError(`run: ${errorMessage(err)}`);
  }
  return stopped;
}
