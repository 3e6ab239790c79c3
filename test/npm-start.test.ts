// `npm start` (board/sim/dev-start.mjs) as a developer runs it on a fresh clone: an embedded broker, the agent
// connected to it, instructions printed, and a clean stop on Ctrl-C (SIGINT).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "sharenode-npm-start-"));

afterAll(() => rmSync(dir, { recursive: true, force: true }));

it("starts an embedded broker and the agent, which connects; SIGINT stops both", async () => {
  const env: NodeJS.ProcessEnv = { ...process.env, SHARENODE_DEV_DIR: dir };
  delete env.SHARENODE_BROKER;
  const proc = spawn(process.execPath, [join(ROOT, "board/sim/dev-start.mjs")], { env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  proc.stdout.on("data", (d: Buffer) => (out += d.toString()));
  proc.stderr.on("data", (d: Buffer) => (out += d.toString()));
  const deadline = Date.now() + 20_000;
  while (!/link: connected/.test(out)) {
    if (Date.now() > deadline || proc.exitCode !== null) throw new Error(`the agent did not connect:\n${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
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
