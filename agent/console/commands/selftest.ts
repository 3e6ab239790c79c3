// `selftest`: PASS, FAIL or N/A per check, then the counts: the hash kernels, the data disk, the broker round trip
// (self-checks.ts). A failed check never ends the run; the outcome is ok when none failed (`sharenode selftest`
// exits 1 otherwise). N/A (a check this box cannot have, such as SIMD on a CPU without it) is not counted as passed.
import type { ProbeOptions } from "../../link/probe.js";
import type { ConsoleCommand, ConsoleIo } from "../command-api.js";
import type { ConsoleContext } from "../context.js";
import {
  brokerCheck,
  DISK_CHECK,
  diskCheck,
  kernelChecks,
  type CheckOutcome,
  type CheckResult,
} from "../self-checks.js";
import { noArgs, readPem } from "./common.js";
import { errorLine } from "../../util/errors.js";

/** The broker probe's MQTT connect and subscribe. */
const PROBE_TIMEOUT_MS = 5000;

/** One step of the selftest: a check or a few. A step that throws counts as one failed check. */
export type CheckStep = (signal: AbortSignal) => CheckResult[] | Promise<CheckResult | CheckResult[]>;

/** The box's checks: kernels, the data disk, the broker with the device's credentials. */
export function selftestSteps(ctx: ConsoleContext): CheckStep[] {
  return [
    () => kernelChecks(),
    async () => {
      const data = await ctx.dataDir(await ctx.identity());
      return data.dir !== undefined ? diskCheck(data.dir) : { name: DISK_CHECK, outcome: "fail", detail: data.reason };
    },
    async (signal) => brokerCheck(await probeOptions(ctx, signal)),
  ];
}

export function selftestCommand(steps: CheckStep[]): ConsoleCommand {
  return {
    name: "selftest",
    args: "",
    summary: "hash kernels, data disk write/read, broker round trip: PASS or FAIL each",
    async run(args, io) {
      noArgs("selftest", args);
      const results: CheckResult[] = [];
      for (const step of steps) {
        if (io.signal.aborted) break;
        let got: CheckResult | CheckResult[];
        try {
          got = await step(io.signal);
        } catch (err) {
          got = { name: "check", outcome: "fail", detail: errorLine(err) };
        }
        const list = Array.isArray(got) ? got : [got];
        printChecks(io, list);
        results.push(...list);
      }
      if (io.signal.aborted) {
        io.print("interrupted\n");
        return { ok: false };
      }
      const count = (outcome: CheckOutcome) => results.filter((r) => r.outcome === outcome).length;
      const failed = count("fail");
      const notApplicable = count("n/a");
      const na = notApplicable > 0 ? `, ${notApplicable} not applicable` : "";
      io.print(`selftest: ${count("pass")} passed, ${failed} failed${na}\n`);
      return { ok: failed === 0 };
    },
  };
}

/** Wide enough for every check's name, so the checks of one run line up though they print as they finish. */
const CHECK_NAME_WIDTH = 20;
const LABELS: Record<CheckOutcome, string> = { pass: "PASS", fail: "FAIL", "n/a": "N/A " };

function printChecks(io: ConsoleIo, results: CheckResult[]): void {
  const width = Math.max(CHECK_NAME_WIDTH, ...results.map((r) => r.name.length));
  for (const r of results) io.print(`${LABELS[r.outcome]}  ${r.name.padEnd(width)}  ${r.detail}\n`);
}

/** The broker probe as the daemon would connect: its URL, credentials and device id, or why it cannot run. */
async function probeOptions(ctx: ConsoleContext, signal: AbortSignal): Promise<ProbeOptions | { error: string }> {
  const c = ctx.config.link;
  if (c.url === undefined) return { error: "no broker configured (link.url)" };
  const identity = await ctx.identity();
  if (!identity.ok) return { error: identity.reason };
  try {
    const [ca, cert, key] = await Promise.all([
      readPem(c.ca, "the CA file"),
      readPem(c.cert, "the client certificate"),
      readPem(c.key, "the client key"),
    ]);
    return {
      url: c.url,
      deviceId: identity.deviceId,
      protocolVersion: c.protocolVersion,
      ...(c.username !== undefined ? { username: c.username } : {}),
      ...(c.password !== undefined ? { password: c.password } : {}),
      ...(ca !== undefined ? { ca } : {}),
      ...(cert !== undefined ? { cert } : {}),
      ...(key !== undefined ? { key } : {}),
      timeoutMs: PROBE_TIMEOUT_MS,
      signal,
    };
  } catch (err) {
    return { error: errorLine(err) };
  }
}
