// `sharenode run` (the built bundle) as a child process, for the tests that talk to the daemon through a real
// broker (agent.test.ts, link-flood.test.ts): its stdout and stderr collected into one log, and the start waited
// for until the daemon has named its device and its link is connected (subscribed: a command may come next).
import { spawn, type ChildProcess } from "node:child_process";
import type { waitFor as WaitFor } from "./wait";

export class AgentProcess {
  /** What the daemon wrote so far, stdout and stderr interleaved as they arrived. */
  log = "";
  deviceId = "";
  publicKey = "";

  private constructor(readonly child: ChildProcess) {
    const collect = (d: Buffer) => (this.log += d.toString());
    child.stdout!.on("data", collect);
    child.stderr!.on("data", collect);
  }

  /** Starts `node BIN run` with `env`; `waitFor` is the test file's (its timeout, and its log in the message). */
  static async start(bin: string, env: NodeJS.ProcessEnv, waitFor: typeof WaitFor): Promise<AgentProcess> {
    const agent = new AgentProcess(spawn(process.execPath, [bin, "run"], { env, stdio: ["ignore", "pipe", "pipe"] }));
    const m = await waitFor(
      "the device id in the log",
      () => /device ([0-9a-f]{32}) \(public key ([0-9a-f]{64})\)/.exec(agent.log) ?? undefined,
    );
    agent.deviceId = m[1]!;
    agent.publicKey = m[2]!;
    await waitFor("the link", () => (/link: connected/.test(agent.log) ? true : undefined));
    return agent;
  }

  /** Whether the process is still running. */
  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }
}
