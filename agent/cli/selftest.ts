// `sharenode selftest`: the console's selftest (hash kernels, data disk write/read, broker round trip) for
// scripts: the OTA pipeline runs it from a new release slot before switching to it, the ARM check runs it under
// qemu. Exit 0 when no check failed, 1 when one did.
import { consoleIoFor, parseCommandArgs, type CliIo, type Command } from "./io.js";

const USAGE = `Usage: sharenode selftest [--config FILE]

Check this box the way the console's selftest does, and exit 0 only if no check fails:
  - the BLAKE3 kernels (every build this CPU runs, SIMD against scalar) and SHA-256, on known answers;
  - the data disk: write 8 MiB, fsync, read back, compare, remove;
  - the broker: MQTT connect and subscribe with the device's credentials (needs the device key in the state dir).
Each check prints PASS or FAIL and a reason, or N/A where it cannot apply (SIMD against scalar on a CPU
without SIMD): not applicable is not counted as passed. The daemon may be running: nothing here touches its
files.

Options:
  -c, --config FILE   the agent's config file (default: none: defaults and the environment only)
  -h, --help          show this help
`;

export const selftestCommand: Command = {
  summary: "check kernels, data disk and broker; exit 1 if a check fails",
  usage: USAGE,
  run: runSelftest,
};

async function runSelftest(args: string[], io: CliIo): Promise<number> {
  const { values } = parseCommandArgs("selftest", args, { config: { type: "string", short: "c" } }, false);
  const [{ ConsoleContext }, { selftestCommand: consoleSelftest, selftestSteps }] = await Promise.all([
    import("../console/context.js"),
    import("../console/commands/selftest.js"),
  ]);
  const ctx = new ConsoleContext({ env: io.env, configFile: values.config });
  try {
    const outcome = await consoleSelftest(selftestSteps(ctx)).run([], consoleIoFor(io));
    return outcome?.ok ? 0 : 1;
  } finally {
    await ctx.close();
  }
}
