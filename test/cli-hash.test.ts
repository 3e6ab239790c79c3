// `sharenode hash`, run as users run it: the built bundle in a child process, compared byte for byte with
// b3sum and sha256sum on the same files and arguments.
import { execFileSync, spawn, spawnSync, type SpawnSyncOptions } from "node:child_process";
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  checksumLine,
  escapeName,
  formatProgress,
  Progress,
  PROGRESS_THRESHOLD,
  systemErrorText,
} from "../agent/cli/hash";
import { seededBytes as pseudoRandom } from "./helpers/random";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "dist/sharenode.js");
const MiB = 1024 * 1024;
const TOOLS = { blake3: "b3sum", sha256: "sha256sum" } as const;
type Algo = keyof typeof TOOLS;
const ALGOS: Algo[] = ["blake3", "sha256"];

interface Run {
  status: number | null;
  stdout: Buffer;
  stderr: string;
}

function run(command: string, args: string[], options: SpawnSyncOptions = {}): Run {
  const r = spawnSync(command, args, { cwd: dir, maxBuffer: 64 * MiB, timeout: 120_000, ...options });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout as Buffer, stderr: (r.stderr as Buffer).toString("utf8") };
}

function sharenode(args: string[], options: SpawnSyncOptions = {}): Run {
  return run(process.execPath, [BIN, ...args], options);
}

function hash(algo: Algo, args: string[], options: SpawnSyncOptions = {}): Run {
  return sharenode(["hash", "--algo", algo, ...args], options);
}

function tool(algo: Algo, args: string[], options: SpawnSyncOptions = {}): Run {
  return run(TOOLS[algo], args, options);
}

let dir = "";
const SIZES = [0, 1, 1023, 1024, 1025, MiB + 7, 17 * MiB + 3];
const sized = (n: number) => `size-${n}`;
const ODD_NAMES = ["with space", "new\nline", "back\\slash", "both\\and\nnewline"];
let allNames: string[] = [];

beforeAll(() => {
  // The test command builds first; running this file alone against a stale or missing bundle is the mistake.
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run \`npm run build\` first`);
  for (const name of Object.values(TOOLS)) {
    const found = spawnSync(name, ["--version"], { stdio: "ignore" });
    if (found.error || found.status !== 0) {
      throw new Error(
        `${name} is not installed: these tests compare against it. Install Debian's b3sum and coreutils (apt-get install b3sum coreutils); CI installs them`,
      );
    }
  }
  dir = mkdtempSync(join(tmpdir(), "sharenode-cli-hash-"));
  SIZES.forEach((n, i) => writeFileSync(join(dir, sized(n)), pseudoRandom(n, 0x9e3779b9 + i)));
  ODD_NAMES.forEach((name, i) => writeFileSync(join(dir, name), pseudoRandom(100 + i, 7 + i)));
  mkdirSync(join(dir, "a-directory"));
  allNames = [...SIZES.map(sized), ...ODD_NAMES];
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.each(ALGOS)("sharenode hash --algo %s matches its tool byte for byte", (algo) => {
  it("on every size and odd name, several files in one call", () => {
    const ours = hash(algo, allNames);
    const theirs = tool(algo, allNames);
    expect(theirs.status).toBe(0);
    expect(ours.stderr).toBe("");
    expect(ours.status).toBe(0);
    expect(ours.stdout.toString("utf8")).toBe(theirs.stdout.toString("utf8"));
    expect(ours.stdout.equals(theirs.stdout)).toBe(true);
    // The escaped lines are there, not just equal: `\<hex>  new\nline`.
    expect(ours.stdout.toString("utf8")).toMatch(/^\\[0-9a-f]{64} {2}new\\nline$/m);
  });

  it("on each file alone (one name per call)", () => {
    for (const name of [sized(0), "back\\slash"]) {
      expect(hash(algo, [name]).stdout.equals(tool(algo, [name]).stdout), name).toBe(true);
    }
  });

  it("on standard input, with no FILE and with -", () => {
    for (const [n, args] of [
      [0, []],
      [1024, ["-"]],
      [17 * MiB + 3, []],
    ] as const) {
      const input = readFileSync(join(dir, sized(n)));
      const expected = tool(algo, [...args], { input }).stdout;
      expect(expected.toString()).toMatch(/^[0-9a-f]{64} {2}-\n$/);
      expect(hash(algo, [...args], { input }).stdout.equals(expected), `${n} bytes, ${JSON.stringify(args)}`).toBe(
        true,
      );
    }
  });

  it("on - between files, on - twice (the second reads nothing), and on a file redirected to stdin", () => {
    const input = readFileSync(join(dir, sized(1023)));
    const args = [sized(1), "-", "with space", "-"];
    const ours = hash(algo, args, { input });
    expect(ours.status).toBe(0);
    expect(ours.stdout.equals(tool(algo, args, { input }).stdout)).toBe(true);

    // `< file`: standard input is the file itself, which the command reads like a named file.
    const fd = openSync(join(dir, sized(MiB + 7)), "r");
    try {
      const redirected = hash(algo, ["-"], { stdio: [fd, "pipe", "pipe"] });
      expect(redirected.stdout.equals(tool(algo, [], { input: readFileSync(join(dir, sized(MiB + 7))) }).stdout)).toBe(
        true,
      );
    } finally {
      closeSync(fd);
    }
  });

  it("writes lines that the tool's --check accepts, carriage returns in names included", () => {
    // The tools disagree across versions on escaping \r: coreutils >= 9 escapes it, Debian's b3sum 1.2 does
    // not, newer b3sum does. So a \r name is checked by round trip, not compared with one version's output.
    writeFileSync(join(dir, "carriage\rreturn"), "cr");
    const names = [...allNames, "carriage\rreturn"];
    const ours = hash(algo, names);
    expect(ours.status).toBe(0);
    writeFileSync(join(dir, `sums.${algo}`), ours.stdout);
    const check = tool(algo, ["--check", `sums.${algo}`]);
    expect(check.stderr).toBe("");
    expect(check.status).toBe(0);
    expect(check.stdout.toString().match(/: OK$/gm)).toHaveLength(names.length);
  });
});

describe("sharenode hash errors", () => {
  const lines = (text: string) => text.split("\n").filter((l) => l !== "");

  function expectOneErrorLine(r: Run, line: string | RegExp): void {
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr.endsWith("\n")).toBe(true);
    if (typeof line === "string") expect(r.stderr).toBe(line + "\n");
    else expect(r.stderr).toMatch(line);
    expect(r.stderr).not.toMatch(/\bat .*:\d+:\d+/); // no stack frame
  }

  it.each(ALGOS)(
    "--algo %s: a missing file and a directory are reported, the other files still hashed, exit 1",
    (algo) => {
      const args = [sized(1), "no-such-file", sized(1025), "a-directory", "with space"];
      const r = hash(algo, args);
      expect(r.status).toBe(1);
      expect(r.stdout.equals(tool(algo, [sized(1), sized(1025), "with space"]).stdout)).toBe(true);
      expect(r.stderr).toBe(
        "sharenode: hash: no-such-file: No such file or directory\nsharenode: hash: a-directory: Is a directory\n",
      );
    },
  );

  it("a directory on standard input is reported as the tools do", () => {
    const fd = openSync(join(dir, "a-directory"), "r");
    try {
      const r = hash("blake3", [], { stdio: [fd, "pipe", "pipe"] });
      expect(r.status).toBe(1);
      expect(r.stdout.length).toBe(0);
      expectOneErrorLine(r, "sharenode: hash: -: Is a directory");
    } finally {
      closeSync(fd);
    }
  });

  it("a name with a newline stays one error line, escaped as in the checksum lines", () => {
    const r = hash("blake3", ["gone\nmissing"]);
    expect(r.status).toBe(1);
    expectOneErrorLine(r, "sharenode: hash: gone\\nmissing: No such file or directory");
  });

  it("an unreadable file is reported as Permission denied, and the others are still hashed", () => {
    // Root reads mode-000 files, and CI runs as root: there the command runs as nobody, so EACCES is real.
    const asRoot = process.getuid?.() === 0;
    const own = mkdtempSync(join(tmpdir(), "sharenode-hash-perm-"));
    try {
      chmodSync(own, 0o755);
      writeFileSync(join(own, "locked"), "secret");
      chmodSync(join(own, "locked"), 0o000);
      writeFileSync(join(own, "open"), "public");
      chmodSync(join(own, "open"), 0o644);
      const args = [BIN, "hash", "--algo", "sha256", "locked", "open"];
      const r = asRoot
        ? run("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, ...args], { cwd: own })
        : run(process.execPath, args, { cwd: own });
      expect(r.stdout.toString()).toBe(tool("sha256", ["open"], { cwd: own }).stdout.toString());
      expectOneErrorLine(r, "sharenode: hash: locked: Permission denied");
      expect(r.status).toBe(1);
      // The same file is readable by its owner: the failure above was the permission, not the file.
      if (asRoot) expect(hash("sha256", ["locked"], { cwd: own }).status).toBe(0);
    } finally {
      rmSync(own, { recursive: true, force: true });
    }
  });

  it("a bad --algo is a usage error: exit 2, nothing hashed", () => {
    const r = sharenode(["hash", "--algo", "md5", sized(1)]);
    expect(r.status).toBe(2);
    expect(r.stdout.length).toBe(0);
    expectOneErrorLine(r, "sharenode: hash: unknown algorithm 'md5' (expected blake3 or sha256)");
    const missing = sharenode(["hash", "--algo"]);
    expect(missing.status).toBe(2);
    expectOneErrorLine(missing, /^sharenode: hash: option '-a, --algo <value>' argument missing\n$/);
  });

  it("an unknown option is a usage error naming it", () => {
    const r = sharenode(["hash", "--frobnicate", sized(1)]);
    expect(r.status).toBe(2);
    expect(r.stdout.length).toBe(0);
    expectOneErrorLine(r, "sharenode: hash: unknown option '--frobnicate'");
  });

  it("an unknown subcommand is a usage error naming it", () => {
    const r = sharenode(["hashh", sized(1)]);
    expect(r.status).toBe(2);
    expectOneErrorLine(r, "sharenode: unknown command 'hashh' (see 'sharenode --help')");
  });

  it("a reader that goes away (| head -1) ends the command quietly", () => {
    const names = Array.from({ length: 3000 }, () => sized(1)).join(" ");
    const r = run("bash", [
      "-c",
      `set -o pipefail; ${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)} hash ${names} | head -n 1`,
    ]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout.toString()).toBe(tool("blake3", [sized(1)]).stdout.toString());
  });

  it("after --, a name that looks like an option is a file", () => {
    writeFileSync(join(dir, "--algo"), "dash");
    const r = hash("blake3", ["--", "--algo"]);
    expect(r.status).toBe(0);
    expect(r.stdout.equals(tool("blake3", ["--", "--algo"]).stdout)).toBe(true);
  });
});

describe("sharenode hash in bounded memory", () => {
  const LIMIT_KB = 100 * 1024;

  /** Runs a command and returns its peak RSS in KiB: GNU time's %M when installed, else VmHWM polled from /proc. */
  async function peakRssKb(
    command: string,
    args: string[],
  ): Promise<{ kb: number; stdout: string; status: number | null }> {
    const useTime = existsSync("/usr/bin/time");
    const report = join(dir, "time.out");
    const argv = useTime ? ["/usr/bin/time", "-f", "%M", "-o", report, command, ...args] : [command, ...args];
    const child = spawn(argv[0], argv.slice(1), { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    let polled = 0;
    const poll = useTime
      ? undefined
      : setInterval(() => {
          try {
            const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, "utf8"));
            if (m) polled = Math.max(polled, Number(m[1]));
          } catch {
            // gone already
          }
        }, 5);
    const status = await new Promise<number | null>((resolve, reject) => {
      child.on("error", reject);
      child.on("close", resolve);
    });
    if (poll) clearInterval(poll);
    expect(stderr).toBe("");
    const kb = useTime ? Number(readFileSync(report, "utf8").trim().split("\n").pop()) : polled;
    return { kb, stdout, status };
  }

  beforeAll(() => {
    // Sparse: created instantly, read back as zeros from the page cache, so the test measures the hasher.
    for (const [name, size] of [
      ["sparse-1GiB", 1024 * MiB],
      ["sparse-256MiB", 256 * MiB],
    ] as const) {
      writeFileSync(join(dir, name), "");
      truncateSync(join(dir, name), size);
    }
  });

  it("the measurement sees memory: a process that holds 128 MiB peaks above the limit", async () => {
    const { kb, status } = await peakRssKb(process.execPath, ["-e", "Buffer.alloc(128 * 1024 * 1024, 1)"]);
    expect(status).toBe(0);
    expect(kb).toBeGreaterThan(128 * 1024);
  });

  // SHA-256 reads through a different buffer, but its memory levels off long before 1 GiB; 256 MiB of it
  // keeps the suite quick (the wasm SHA-256 is about a third of BLAKE3's speed).
  it.each([
    ["blake3", "sparse-1GiB"],
    ["sha256", "sparse-256MiB"],
  ] as const)("--algo %s hashes %s with peak RSS under 100 MB", async (algo, file) => {
    const { kb, stdout, status } = await peakRssKb(process.execPath, [BIN, "hash", "--algo", algo, file]);
    expect(status).toBe(0);
    expect(stdout).toBe(tool(algo, [file]).stdout.toString());
    expect(kb).toBeGreaterThan(10 * 1024); // a Node process, not a measurement of nothing
    expect(kb).toBeLessThan(LIMIT_KB);
  });
});

describe("progress on a terminal", () => {
  const hasScript = spawnSync("script", ["--version"], { stdio: "ignore" }).status === 0;

  /** Runs a shell command under script(1), so the child's stderr is a pty; returns everything the pty saw. */
  function inPty(shellCommand: string): string {
    if (!hasScript)
      throw new Error("script(1) from util-linux is needed for the progress test (apt-get install util-linux)");
    return execFileSync("script", ["-qec", shellCommand, "/dev/null"], {
      cwd: dir,
      encoding: "utf8",
      timeout: 120_000,
    });
  }

  const q = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;

  it("shows percent, MB/s and ETA for a large file, then erases the line before the checksum", () => {
    const big = "sparse-512MiB-progress";
    writeFileSync(join(dir, big), "");
    truncateSync(join(dir, big), 512 * MiB);
    const out = inPty(`${q(process.execPath)} ${q(BIN)} hash ${big}`);
    const frames = out.match(/\r[^\r\n]*?\d+%  [\d.]+ MB\/s  ETA \d+:\d\d\x1b\[K/g) ?? [];
    expect(frames.length, JSON.stringify(out.slice(0, 300))).toBeGreaterThan(0);
    expect(frames[0]).toContain(big);
    expect(out).toMatch(/\x1b\[K\r\x1b\[K[0-9a-f]{64} {2}sparse-512MiB-progress\r?\n$/);
  });

  it("shows bytes and MB/s once 64 MiB of a pipe have gone by", () => {
    const out = inPty(`head -c 402653184 /dev/zero | ${q(process.execPath)} ${q(BIN)} hash`);
    const frames = out.match(/\r- {2}(\d+) MB {2}[\d.]+ MB\/s\x1b\[K/g) ?? [];
    expect(frames.length, JSON.stringify(out.slice(0, 300))).toBeGreaterThan(0);
    expect(Number(/(\d+) MB/.exec(frames[0] ?? "")?.[1])).toBeGreaterThanOrEqual(67); // 64 MiB
    expect(out).toMatch(/\r\x1b\[K[0-9a-f]{64} {2}-\r?\n$/);
  });

  it("stays silent for small inputs on a terminal", () => {
    const out = inPty(`${q(process.execPath)} ${q(BIN)} hash ${q(sized(17 * MiB + 3))}`);
    expect(out).toMatch(/^[0-9a-f]{64} {2}size-17825795\r?\n$/);
  });
});

describe("progress formatter and redraw policy (in-process)", () => {
  /** The parts of a tty.WriteStream that Progress uses, recording what is written. */
  function fakeTty(isTTY = true) {
    const tty = {
      isTTY,
      columns: 60,
      written: "",
      write(chunk: string): boolean {
        tty.written += chunk;
        return true;
      },
    };
    return tty;
  }
  const asStream = (fake: ReturnType<typeof fakeTty>) => fake as unknown as Writable;

  it("formats known and unknown sizes and fits the terminal width", () => {
    const half = { name: "disk.img", done: 500e6, total: 1000e6, elapsedMs: 10_000, columns: 80 };
    expect(formatProgress(half)).toBe("disk.img   50%  50.0 MB/s  ETA 0:10");
    expect(formatProgress({ ...half, total: undefined })).toBe("disk.img  500 MB  50.0 MB/s");
    expect(formatProgress({ ...half, done: 0, elapsedMs: 0 })).toBe("disk.img    0%  0.0 MB/s  ETA --:--");
    expect(formatProgress({ ...half, done: 1e6, total: 7300e6, elapsedMs: 1000 })).toMatch(/ETA 2:01:39$/);
    const narrow = formatProgress({ ...half, name: "a/very/long/path/to/some/file.img", columns: 40 });
    expect(narrow.length).toBeLessThanOrEqual(39);
    expect(narrow).toBe(".../file.img   50%  50.0 MB/s  ETA 0:10");
    expect(formatProgress({ ...half, name: "new\nline" })).toContain("new?line");
  });

  it("draws at most every 100 ms, only from 64 MiB, only on a TTY, and erases at the end", () => {
    let now = 0;
    const tty = fakeTty();
    const p = new Progress(asStream(tty), () => now);
    p.begin("small", PROGRESS_THRESHOLD - 1);
    now = 5000;
    p.advance(PROGRESS_THRESHOLD - 1);
    p.end();
    expect(tty.written).toBe("");

    const step = PROGRESS_THRESHOLD / 8;
    p.begin("big", 100 * step);
    for (let i = 0; i < 100; i++) {
      now += 20; // 100 reads, 2 s: at most 20 redraws
      p.advance(step);
    }
    const frames = tty.written.split("\r").filter((f) => f.includes("%"));
    expect(frames.length).toBeGreaterThanOrEqual(18);
    expect(frames.length).toBeLessThanOrEqual(20);
    expect(frames.at(-1)).toMatch(/^big {2}100%/);
    p.end();
    expect(tty.written.endsWith("\r\x1b[K")).toBe(true);

    tty.written = "";
    p.begin("-", undefined);
    now += 1000;
    p.advance(PROGRESS_THRESHOLD - 1);
    expect(tty.written).toBe("");
    now += 1000;
    p.advance(2);
    expect(tty.written).toMatch(/^\r- {2}67 MB {2}[\d.]+ MB\/s\x1b\[K$/);

    const pipe = fakeTty(false);
    const quiet = new Progress(asStream(pipe), () => (now += 1000));
    quiet.begin("big", 10 * PROGRESS_THRESHOLD);
    quiet.advance(10 * PROGRESS_THRESHOLD);
    quiet.end();
    expect(pipe.written).toBe("");
  });
});

describe("name escaping and error texts (in-process)", () => {
  it("escapes like b3sum (\\\\, \\n) and sha256sum (also \\r)", () => {
    const hex = "ab".repeat(32);
    expect(checksumLine(hex, "plain name", "blake3")).toBe(`${hex}  plain name\n`);
    expect(checksumLine(hex, "a\\b\nc", "blake3")).toBe(`\\${hex}  a\\\\b\\nc\n`);
    expect(checksumLine(hex, "a\rb", "blake3")).toBe(`${hex}  a\rb\n`);
    expect(checksumLine(hex, "a\rb", "sha256")).toBe(`\\${hex}  a\\rb\n`);
    expect(escapeName("x\\y", "sha256")).toEqual({ text: "x\\\\y", escaped: true });
  });

  it("maps errno codes to strerror wording and leaves other errors alone", () => {
    const sys = (code: string, message = "") => Object.assign(new Error(message), { code });
    expect(systemErrorText(sys("EACCES"))).toBe("Permission denied");
    expect(systemErrorText(sys("ENOENT"))).toBe("No such file or directory");
    expect(systemErrorText(sys("EXDEV", "EXDEV: cross-device link not permitted, rename 'a' -> 'b'"))).toBe(
      "Cross-device link not permitted",
    );
    expect(systemErrorText(sys("ERR_INVALID_ARG_TYPE"))).toBeUndefined();
    expect(systemErrorText(new Error("boom"))).toBeUndefined();
    expect(systemErrorText(null)).toBeUndefined();
  });
});
