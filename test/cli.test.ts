// The command-line framework: help, version, exit codes and the one-line error rule, on the built bundle
// (what users run) and in-process through runCli with injected streams.
import { spawn, spawnSync } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, type CliIo } from "../agent/cli/main";
import { blake3 } from "../agent/kernels/blake3";
import { seededBytes } from "./helpers/random";

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
    // parseArgs alone calls a value with a leading dash "ambiguous"; the command's own check names the problem.
    [
      ["proof", "check", "--id", "ab".repeat(32), "--len", "-1", "--chunk", "0"],
      "proof check: --len must be a non-negative integer, got '-1'",
    ],
    [["proof", "make", "f", "--chunk", "-3"], "proof make: --chunk must be a non-negative integer, got '-3'"],
    [["hash", "-a", "-1"], "hash: unknown algorithm '-1' (expected blake3 or sha256)"],
    [["ota", "upgrade"], "ota: unknown action 'upgrade' (status, commit, rollback or apply DIR)"],
    [["ota", "apply"], "ota apply: give one directory"],
    [["ota", "status", "now"], "ota status: no arguments"],
    [["fleet", "rollout", "--release", "x", "--source", "http://o/"], "fleet rollout: --percent is required (0..100)"],
    [
      ["fleet", "rollout", "--release", "x", "--source", "http://o/", "--percent", "101"],
      "fleet rollout: --percent must be a percentage from 0 to 100, got '101'",
    ],
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

describe("a failed write to the output: one line and exit 1; a reader gone: quiet", () => {
  let dir = "";
  let tmpfs = "";
  const object = seededBytes(40_000, 77);
  const id = Buffer.from(blake3(object)).toString("hex");
  let proof: Buffer;
  // Every chunk of the object: 39 KiB of verified bytes, far more than the tiny disk below holds.
  const checkAll = ["proof", "check", "--id", id, "--len", "40000", "--chunk", "0", "--count", "40"];

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "sharenode-cli-output-"));
    writeFileSync(join(dir, "object"), object);
    const made = spawnSync(process.execPath, [BIN, "proof", "make", "object", "--chunk", "0", "--count", "40"], {
      cwd: dir,
    });
    expect(made.status).toBe(0);
    proof = made.stdout;
  });

  afterAll(() => {
    if (tmpfs) spawnSync("umount", [tmpfs]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /**
   * Runs the bundle with stdout on /dev/full (every write fails with ENOSPC) or on a pipe whose reader has
   * already gone (every write fails with EPIPE), or on a pipe that is read ("read").
   */
  function runInto(sink: "full" | "gone" | "read", args: string[], input: Uint8Array = Buffer.alloc(0)) {
    return new Promise<{ status: number | null; signal: string | null; stdout: string; stderr: string }>(
      (resolve, reject) => {
        const full = sink === "full" ? openSync("/dev/full", "w") : undefined;
        const child = spawn(process.execPath, [BIN, ...args], { cwd: dir, stdio: ["pipe", full ?? "pipe", "pipe"] });
        if (full !== undefined) closeSync(full);
        // Closed before the child has even started: its first write meets a pipe without a reader.
        if (sink === "gone") child.stdout!.destroy();
        let stdout = "";
        let stderr = "";
        if (sink === "read") child.stdout!.on("data", (d) => (stdout += d));
        child.stderr!.on("data", (d) => (stderr += d));
        const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
        child.on("error", reject);
        child.on("close", (status, signal) => {
          clearTimeout(timer);
          resolve({ status, signal, stdout, stderr });
        });
        child.stdin!.on("error", () => {});
        child.stdin!.end(input);
      },
    );
  }

  const NO_SPACE = "sharenode: write error: No space left on device\n";

  it.each([
    ["hash", ["hash", "object"]],
    ["hash --algo sha256", ["hash", "--algo", "sha256", "object", "object"]],
    ["--version", ["--version"]],
    ["--help", ["--help"]],
    ["proof make", ["proof", "make", "object", "--chunk", "3"]],
    ["proof outboard", ["proof", "outboard", "object"]],
  ])("%s > /dev/full: exit 1 and one write-error line", async (_name, args) => {
    expect(await runInto("full", args)).toEqual({ status: 1, signal: null, stdout: "", stderr: NO_SPACE });
  });

  it("proof check --output - > /dev/full: exit 1, one write-error line, no verdict", async () => {
    expect(await runInto("full", [...checkAll, "--output", "-"], proof)).toEqual({
      status: 1,
      signal: null,
      stdout: "",
      stderr: NO_SPACE,
    });
  });

  it.each([
    ["hash", ["hash", "object", "object"]],
    ["proof make", ["proof", "make", "object", "--chunk", "3"]],
    ["proof outboard", ["proof", "outboard", "object"]],
  ])("%s into a pipe nobody reads: exit 0, nothing on stderr", async (_name, args) => {
    expect(await runInto("gone", args)).toEqual({ status: 0, signal: null, stdout: "", stderr: "" });
  });

  it("proof check --output - into a pipe nobody reads: exit 0, nothing on stderr", async () => {
    expect(await runInto("gone", [...checkAll, "--output", "-"], proof)).toEqual({
      status: 0,
      signal: null,
      stdout: "",
      stderr: "",
    });
  });

  it("proof check --output /dev/full: exit 1 naming the file, no verdict", async () => {
    const r = await runInto("read", [...checkAll, "--output", "/dev/full"], proof);
    expect(r).toEqual({
      status: 1,
      signal: null,
      stdout: "",
      stderr: "sharenode: proof check: /dev/full: No space left on device\n",
    });
  });

  it("proof check --output FILE on a full disk (a 4 KiB tmpfs): exit 1 naming the file, no verdict", async () => {
    if (process.getuid?.() !== 0) throw new Error("this test mounts a tmpfs: run it as root (as CI does)");
    tmpfs = join(dir, "tiny");
    mkdirSync(tmpfs);
    const mounted = spawnSync("mount", ["-t", "tmpfs", "-o", "size=4k", "tmpfs", tmpfs], { encoding: "utf8" });
    expect(mounted.stderr).toBe("");
    expect(mounted.status).toBe(0);
    const file = join(tmpfs, "out");
    const r = await runInto("read", [...checkAll, "--output", file], proof);
    expect(r).toEqual({
      status: 1,
      signal: null,
      stdout: "",
      stderr: `sharenode: proof check: ${file}: No space left on device\n`,
    });
    // What made the disk full: the bytes that fitted are there, the rest was refused.
    expect(statSync(file).size).toBeLessThan(object.length);
    // The same command on a disk with room succeeds: the failure above was the disk's.
    const roomy = join(dir, "out");
    const ok = await runInto("read", [...checkAll, "--output", roomy], proof);
    expect(ok).toEqual({ status: 0, signal: null, stdout: `valid: chunks 0..39 of 40 of ${id}\n`, stderr: "" });
    expect(readFileSync(roomy).equals(object)).toBe(true);
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
    expectOneErrorLine(out.stderr, "internal error: boom second line (set SHARENODE_DEBUG=1 for details)");
  });

  it("SHARENODE_DEBUG=1 adds the stack after the line", async () => {
    const { io, out } = fakeIo(failing(), { SHARENODE_DEBUG: "1" });
    expect(await runCli(["hash"], io)).toBe(1);
    const [first, ...rest] = out.stderr.split("\n");
    expect(first).toBe("sharenode: internal error: boom second line");
    expect(rest.join("\n")).toMatch(/\n\s+at /);
  });

  it("a closed stdout does not crash the command", async () => {
    const { io, out } = fakeIo(Readable.from([Buffer.from("x")]));
    io.stdout.destroy();
    expect(await runCli(["hash", "-", "-"], io)).toBe(0);
    expect(out.stderr).toBe("");
  });
});
