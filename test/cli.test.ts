// The command-line framework: help, version, exit codes and the one-line error rule, on the built bundle
// (what users run) and in-process through runCli with injected streams.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { PassThrough, Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";
import { runCli, type CliIo } from "../agent/cli/main";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "dist/sharenode.js");
const VERSION = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;

function sharenode(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", input: "", timeout: 30_000 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Exactly one line on stderr, `sharenode: ...`, and no stack frame. */
function expectOneErrorLine(stderr: string, message: string | RegExp): void {
  expect(stderr.split("\n")).toHaveLength(2);
  expect(stderr.endsWith("\n")).toBe(true);
  expect(stderr.startsWith("sharenode: ")).toBe(true);
  expect(stderr).not.toMatch(/\bat .*:\d+:\d+/);
  if (typeof message === "string") expect(stderr).toBe(`sharenode: ${message}\n`);
  else expect(stderr).toMatch(message);
}

describe("the sharenode bundle", () => {
  beforeAll(() => {
    if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run \`npm run build\` first`);
  });

  it("is an executable node script", () => {
    expect(readFileSync(BIN, "utf8").startsWith("#!/usr/bin/env node\n")).toBe(true);
  });

  it("--help, -h and help print the top-level usage listing the subcommands", () => {
    const help = sharenode("--help");
    expect(help.status).toBe(0);
    expect(help.stderr).toBe("");
    expect(help.stdout).toMatch(/^Usage: sharenode <command>/);
    expect(help.stdout).toMatch(/^ {2}hash {2,}print BLAKE3 or SHA-256 checksums/m);
    expect(help.stdout).toMatch(/--version/);
    expect(sharenode("-h")).toEqual(help);
    expect(sharenode("help")).toEqual(help);
  });

  it("help hash, hash --help and hash -h print the command's usage", () => {
    const help = sharenode("help", "hash");
    expect(help.status).toBe(0);
    expect(help.stderr).toBe("");
    expect(help.stdout).toMatch(/^Usage: sharenode hash \[--algo blake3\|sha256\] \[FILE\|-\]\.\.\.\n/);
    expect(sharenode("hash", "--help")).toEqual(help);
    expect(sharenode("hash", "-h")).toEqual(help);
    // --help wins over everything else on the line, even a bad option value.
    expect(sharenode("hash", "--algo", "md5", "--help")).toEqual(help);
  });

  it("--version and -V print the version from package.json", () => {
    for (const flag of ["--version", "-V"]) {
      const r = sharenode(flag);
      expect(r).toEqual({ status: 0, stdout: `sharenode ${VERSION}\n`, stderr: "" });
    }
  });

  it.each([
    [[], "missing command (see 'sharenode --help')"],
    [["--frobnicate"], "unknown option '--frobnicate' (see 'sharenode --help')"],
    [["frobnicate"], "unknown command 'frobnicate' (see 'sharenode --help')"],
    [["toString"], "unknown command 'toString' (see 'sharenode --help')"],
    [["help", "frobnicate"], "unknown command 'frobnicate' (see 'sharenode --help')"],
    [["help", "hash", "extra"], "help: expected at most one command name"],
    [["hash", "--frobnicate"], "hash: unknown option '--frobnicate'"],
    [["hash", "-x"], "hash: unknown option '-x'"],
    [["hash", "--algo=md5"], "hash: unknown algorithm 'md5' (expected blake3 or sha256)"],
  ])("usage error %j: exit 2, one line on stderr, nothing on stdout", (args, message) => {
    const r = sharenode(...args);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe("");
    expectOneErrorLine(r.stderr, message);
  });

  it("a failed file exits 1, a clean run 0", () => {
    expect(sharenode("hash", "/nonexistent/file").status).toBe(1);
    expect(sharenode("hash", BIN).status).toBe(0);
  });
});

describe("runCli in-process (injected streams)", () => {
  function fakeIo(stdin: Readable, env: Record<string, string | undefined> = {}) {
    const out = { stdout: "", stderr: "" };
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    stdout.on("data", (d) => (out.stdout += d));
    stderr.on("data", (d) => (out.stderr += d));
    const io: CliIo = { stdin, stdout, stderr, env };
    return { io, out };
  }

  it("hashes its injected stdin", async () => {
    const { io, out } = fakeIo(Readable.from([Buffer.from("ab"), Buffer.from("c")]));
    expect(await runCli(["hash"], io)).toBe(0);
    expect(out.stdout).toBe("6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85  -\n");
    expect(out.stderr).toBe("");
  });

  const failing = () =>
    new Readable({
      read() {
        this.destroy(new Error("boom\nsecond line"));
      },
    });

  it("an unexpected error is one line and exit 1, without a stack", async () => {
    const { io, out } = fakeIo(failing());
    expect(await runCli(["hash"], io)).toBe(1);
    expectOneErrorLine(out.stderr, "internal error: boom\\nsecond line (set SHARENODE_DEBUG=1 for details)");
  });

  it("SHARENODE_DEBUG=1 adds the stack after the line", async () => {
    const { io, out } = fakeIo(failing(), { SHARENODE_DEBUG: "1" });
    expect(await runCli(["hash"], io)).toBe(1);
    const [first, ...rest] = out.stderr.split("\n");
    expect(first).toBe("sharenode: internal error: boom\\nsecond line");
    expect(rest.join("\n")).toMatch(/\n\s+at /);
  });

  it("a closed stdout does not crash the command", async () => {
    const { io, out } = fakeIo(Readable.from([Buffer.from("x")]));
    io.stdout.destroy();
    expect(await runCli(["hash", "-", "-"], io)).toBe(0);
    expect(out.stderr).toBe("");
  });
});
