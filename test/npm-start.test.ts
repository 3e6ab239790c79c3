// `npm start` (board/sim/dev-start.mjs) as a developer runs it on a fresh clone: an embedded broker, the agent
// connected to it, instructions printed, and a clean stop on Ctrl-C (SIGINT).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, expect, it } from "vitest";
import { waitFor } from "./helpers/wait";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "sharenode-npm-start-"));

afterAll(() => rmSync(dir, { recursive: true, force: true }));

it("starts an embedded broker and the agent, which connects; SIGINT stops both", async () => {
  const env: NodeJS.ProcessEnv = { ...process.env, SHARENODE_DEV_DIR: dir };
  delete env.SHARENODE_BROKER;
  const proc = spawn(process.execPath, [join(ROOT, "board/sim/dev-start.mjs")], {
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  proc.stdout.on("data", (d: Buffer) => (out += d.toString()));
  proc.stderr.on("data", (d: Buffer) => (out += d.toString()));
  await waitFor(
    "the agent to connect",
    () => {
      if (proc.exitCode !== null) throw new Error(`the agent exited with ${proc.exitCode}:\n${out}`);
      return /link: connected/.test(out);
    },
    { timeoutMs: 20_000, intervalMs: 100, detail: () => `its output:\n${out}` },
  );
  expect(out).toMatch(/embedded MQTT broker \(aedes\) on mqtt:\/\/127\.0\.0\.1:\d+/);
  expect(out).toMatch(/fleet watch --broker mqtt:\/\/127\.0\.0\.1:\d+/);
  expect(out).toMatch(/store on /);
  const code = await new Promise<number | null>((resolve) => {
    proc.once("exit", (c) => resolve(c));
    proc.kill("SIGINT");
  });
  expect(code, out).toBe(0);
  expect(out).toMatch(/agent: stopped/);
}, 40_000);
