// `sharenode store ...` and `sharenode verify-response`, run as users run them: the built bundle in child
// processes, on real files in temporary directories, objects fetched from a real HTTP server on 127.0.0.1.
// Every failure must be one line on stderr with the documented exit code (1 failure, 2 bad usage), never a
// stack trace.
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { filesystemOf } from "../agent/store/disks";
import { seededBytes as bytes } from "./helpers/random";
import { errorMessage } from "../agent/util/errors";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "dist/sharenode.js");

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** The environment of every run: no store settings inherited from the shell running the tests. */
const ENV: NodeJS.ProcessEnv = { ...process.env };
for (const name of ["SHARENODE_DATA", "SHARENODE_STATE", "SHARENODE_DEBUG"]) delete ENV[name];

let dir = "";
/** Every result of the running test: afterEach checks that none printed a stack trace. */
let results: Result[] = [];

/** Runs the bundle asynchronously (the HTTP server in this process must keep answering meanwhile). */
function sharenode(
  args: string[],
  options: { input?: string | Buffer; env?: NodeJS.ProcessEnv; stdoutToDevFull?: boolean } = {},
): Promise<Result> {
  return new Promise((resolve, reject) => {
    // /dev/full: every write fails with ENOSPC, like a full disk.
    const full = options.stdoutToDevFull ? openSync("/dev/full", "w") : undefined;
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: dir,
      env: options.env ?? ENV,
      stdio: ["pipe", full ?? "pipe", "pipe"],
    });
    if (full !== undefined) closeSync(full);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on("data", (b: Buffer) => out.push(b));
    child.stderr!.on("data", (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (status) => {
      clearTimeout(timer);
      const r = { status, stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8") };
      results.push(r);
      resolve(r);
    });
    child.stdin!.on("error", () => {}); // a command that does not read stdin may exit before we finish writing
    child.stdin!.end(options.input ?? "");
  });
}

/** A box: its own state dir (device key) and data dir. */
interface Box {
  data: string;
  state: string;
  /** `sharenode store ACTION ARGS... --data D --state S --allow-system-disk` */
  store(...args: string[]): Promise<Result>;
}

let boxes = 0;
function newBox(): Box {
  const base = join(dir, `box-${++boxes}`);
  const data = join(base, "data");
  const state = join(base, "state");
  const opts = ["--data", data, "--state", state, "--allow-system-disk"];
  return { data, state, store: (...args) => sharenode(["store", ...args, ...opts]) };
}

function b3sum(file: string): string {
  const r = spawnSync("b3sum", ["--no-names", file], { encoding: "utf8" });
  if (r.error) throw new Error(`b3sum is needed as the reference hash (Debian package b3sum): ${r.error.message}`);
  expect(r.status).toBe(0);
  return r.stdout.trim();
}

const nonce = () => randomBytes(32).toString("hex");
const files = (d: string) => (existsSync(d) ? readdirSync(d, { recursive: true }).map(String) : []);
const objectFiles = (box: Box) => files(join(box.data, "objects")).filter((f) => /[0-9a-f]{64}/.test(f));

function expectOk(r: Result): void {
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
}

/** One line on stderr, `sharenode: ...`, the exit code, nothing on stdout. */
function expectFailure(r: Result, status: number, message: RegExp): void {
  expect(r.stderr.endsWith("\n")).toBe(true);
  expect(r.stderr.trimEnd().split("\n")).toHaveLength(1);
  expect(r.stderr).toMatch(/^sharenode: /);
  expect(r.stderr).not.toMatch(/internal error/);
  expect(r.stderr).toMatch(message);
  expect(r.stdout).toBe("");
  expect(r.status).toBe(status);
}

// --- the fixtures: files, and an HTTP server -------------------------------------------------------------------

const FILES = { small: 700, mid: 40_000, other: 12_345, big: 3_000_000, empty: 0 } as const;
type FileName = keyof typeof FILES;
const content: Record<string, Buffer> = {};
const ids: Record<string, string> = {};
const path = (name: FileName) => join(dir, name);

let server: Server;
let base = "";
let refusedUrl = "";

beforeAll(async () => {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run \`npm run build\` first`);
  dir = mkdtempSync(join(tmpdir(), "sharenode-cli-store-"));
  Object.entries(FILES).forEach(([name, length], i) => {
    content[name] = bytes(length, 500 + i);
    writeFileSync(join(dir, name), content[name]);
    ids[name] = b3sum(join(dir, name));
  });
  mkdirSync(join(dir, "a-directory"));

  server = createServer((req, res) => {
    const body = content.mid;
    switch (req.url) {
      case "/mid":
        res.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": body.length });
        res.end(body);
        return;
      case "/chunked": // no Content-Length: the store learns the length only at the end of the stream
        res.writeHead(200, { "Content-Type": "application/octet-stream" });
        res.write(body.subarray(0, 10_000));
        setTimeout(() => res.end(body.subarray(10_000)), 20);
        return;
      case "/truncated": // declares the whole object, sends a third of it, then drops the connection
        res.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": body.length });
        res.write(body.subarray(0, 13_000), () => setTimeout(() => res.socket?.destroy(), 50));
        return;
      default:
        res.writeHead(404, { "Content-Type": "text/plain" });
        res.end("not here\n");
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  // A port nobody listens on: bind one, note it, close it.
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
  refusedUrl = `http://127.0.0.1:${(closed.address() as AddressInfo).port}/mid`;
  await new Promise<void>((resolve) => closed.close(() => resolve()));
});

afterAll(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

afterEach(() => {
  for (const r of results) expect(r.stderr).not.toMatch(/^\s+at /m);
  results = [];
});

// --- the data disk check ---------------------------------------------------------------------------------------

describe("the data disk", () => {
  it("without --allow-system-disk, refuses a data directory on the root filesystem and writes nothing there", async () => {
    // The data directory must be on the root filesystem for this test: tmpdir() usually is; /var/tmp and the
    // checkout are the fallbacks (CI may mount a tmpfs on /tmp).
    let parent: string | undefined;
    for (const candidate of [tmpdir(), "/var/tmp", ROOT]) {
      if ((await filesystemOf(candidate)).kind === "root") {
        parent = candidate;
        break;
      }
    }
    if (!parent)
      throw new Error(`none of ${tmpdir()}, /var/tmp, ${ROOT} is on the root filesystem: cannot test the refusal`);
    const base = mkdtempSync(join(parent, "sharenode-cli-store-root-"));
    try {
      const data = join(base, "data");
      mkdirSync(data); // an existing, empty mount point whose disk did not mount
      const r = await sharenode(["store", "add", path("small"), "--data", data, "--state", join(base, "state")]);
      expectFailure(r, 1, /root filesystem/);
      expect(r.stderr).toMatch(/--allow-system-disk/);
      expect(readdirSync(data)).toEqual([]);
      const ls = await sharenode([
        "store",
        "ls",
        "--data",
        join(base, "never-created"),
        "--state",
        join(base, "state"),
      ]);
      expectFailure(ls, 1, /root filesystem.*--allow-system-disk/);
      expect(existsSync(join(base, "never-created"))).toBe(false);
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });
});

// --- add -------------------------------------------------------------------------------------------------------

describe("store add", () => {
  it("adds a file under its BLAKE3 id (b3sum's), then says it is already stored", async () => {
    const box = newBox();
    const r = await box.store("add", path("mid"));
    expectOk(r);
    expect(r.stdout).toBe(`${ids.mid}  40000  added\n`);
    const stored = join(box.data, "objects", ids.mid!.slice(0, 2), ids.mid!);
    expect(readFileSync(stored).equals(content.mid!)).toBe(true);
    expect(existsSync(stored + ".obao")).toBe(true);
    const again = await box.store("add", path("mid"));
    expectOk(again);
    expect(again.stdout).toBe(`${ids.mid}  40000  already stored\n`);
    expect(files(join(box.data, "tmp"))).toEqual([]);
    expect(existsSync(join(box.data, "store.lock"))).toBe(false);
  });

  it("adds an empty file", async () => {
    const box = newBox();
    const r = await box.store("add", path("empty"));
    expectOk(r);
    expect(r.stdout).toBe(`${ids.empty}  0  added\n`);
  });

  it("adds with the right --id (and --pin), and with it again when already stored", async () => {
    const box = newBox();
    const r = await box.store("add", path("other"), "--id", ids.other!, "--pin");
    expectOk(r);
    expect(r.stdout).toBe(`${ids.other}  12345  added\n`);
    const again = await box.store("add", path("other"), "--id", ids.other!);
    expectOk(again);
    expect(again.stdout).toBe(`${ids.other}  12345  already stored\n`);
    const ls = JSON.parse((await box.store("ls", "--json")).stdout);
    expect(ls).toMatchObject([{ id: ids.other, length: 12_345, pinned: true }]);
  });

  it("rejects content whose hash is not --id: exit 1, nothing stored, tmp/ empty", async () => {
    const box = newBox();
    const r = await box.store("add", path("mid"), "--id", ids.other!);
    expectFailure(r, 1, new RegExp(`content hash ${ids.mid} is not the expected id ${ids.other}`));
    expect((await box.store("ls")).stdout).toBe("");
    expect(objectFiles(box)).toEqual([]);
    expect(files(join(box.data, "tmp"))).toEqual([]);
  });

  it("adds from an http URL, with and without Content-Length", async () => {
    const box = newBox();
    const r = await box.store("add", `${base}/mid`);
    expectOk(r);
    expect(r.stdout).toBe(`${ids.mid}  40000  added\n`);
    const box2 = newBox();
    const chunked = await box2.store("add", `${base}/chunked`, "--id", ids.mid!);
    expectOk(chunked);
    expect(chunked.stdout).toBe(`${ids.mid}  40000  added\n`);
  });

  it("rejects a URL whose server sends less than its Content-Length and closes: nothing stored, tmp/ empty", async () => {
    const box = newBox();
    const r = await box.store("add", `${base}/truncated`);
    // fetch reports the early close as an error of the body stream (undici: "terminated"), or the stream ends
    // short of Content-Length (the store: "source ended after N of M bytes").
    expectFailure(r, 1, /^sharenode: store: .*(terminated|truncated|closed|ended after 13000 of 40000 bytes)/);
    expect(objectFiles(box)).toEqual([]);
    expect(files(join(box.data, "tmp"))).toEqual([]);
    expect((await box.store("ls")).stdout).toBe("");
  });

  it("fails with one line for a 404, a refused connection, a missing file and a directory", async () => {
    const box = newBox();
    const cases: Array<[string, RegExp]> = [
      [`${base}/nothing-here`, /store add: http:\/\/127\.0\.0\.1:\d+\/nothing-here: HTTP 404 Not Found$/m],
      [refusedUrl, /store add: http:\/\/127\.0\.0\.1:\d+\/mid: .*ECONNREFUSED/],
      [path("small") + "-missing", /store add: .*small-missing: No such file or directory$/m],
      [join(dir, "a-directory"), /store add: .*a-directory: Is a directory$/m],
    ];
    for (const [source, message] of cases) {
      const r = await box.store("add", source);
      expectFailure(r, 1, message);
    }
    expect(objectFiles(box)).toEqual([]);
    expect(files(join(box.data, "tmp"))).toEqual([]);
  });
});

// --- ls, status, pin, rm ---------------------------------------------------------------------------------------

describe("store ls, status, pin, unpin, rm", () => {
  const box = newBoxLazy();

  it("lists objects as text and as JSON", async () => {
    for (const name of ["small", "mid", "other"] as const) expectOk(await box().store("add", path(name)));
    const text = await box().store("ls");
    expectOk(text);
    const sorted = (["small", "mid", "other"] as const)
      .map((n) => ({ id: ids[n]!, length: FILES[n] }))
      .sort((a, b) => (a.id < b.id ? -1 : 1));
    const lines = text.stdout.trimEnd().split("\n");
    expect(lines).toHaveLength(3);
    lines.forEach((line, i) => {
      expect(line).toMatch(
        new RegExp(`^${sorted[i]!.id}  ${sorted[i]!.length}  -  \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z$`),
      );
    });
    const json = await box().store("ls", "--json");
    expectOk(json);
    const list = JSON.parse(json.stdout) as Array<Record<string, unknown>>;
    expect(list.map((o) => [o.id, o.length, o.pinned])).toEqual(sorted.map((o) => [o.id, o.length, false]));
    for (const o of list) {
      expect(typeof o.addedAt).toBe("number");
      expect(typeof o.usedAt).toBe("number");
    }
  });

  it("reports status as JSON and as text", async () => {
    const r = await box().store("status", "--json");
    expectOk(r);
    const status = JSON.parse(r.stdout);
    expect(status.deviceId).toMatch(/^[0-9a-f]{32}$/);
    expect(status.publicKey).toMatch(/^[0-9a-f]{64}$/);
    expect(status.objects).toBe(3);
    expect(status.pinned).toBe(0);
    expect(status.usedBytes).toBeGreaterThanOrEqual(700 + 40_000 + 12_345);
    expect(status.quotaBytes).toBeGreaterThanOrEqual(status.usedBytes);
    expect(status.availableBytes).toBeGreaterThan(0);
    const text = await box().store("status");
    expectOk(text);
    expect(text.stdout).toContain(`deviceId: ${status.deviceId}\n`);
    expect(text.stdout).toContain(`publicKey: ${status.publicKey}\n`);
    expect(text.stdout).toContain("objects: 3\n");
  });

  it("ls > /dev/full (as on a full disk): exit 1 with one write-error line, as sha256sum does", async () => {
    expectOk(await box().store("add", path("small")));
    const opts = ["--data", box().data, "--state", box().state, "--allow-system-disk"];
    for (const args of [["ls"], ["ls", "--json"], ["status"]]) {
      const r = await sharenode(["store", ...args, ...opts], { stdoutToDevFull: true });
      expectFailure(r, 1, /^sharenode: write error: No space left on device\n$/);
    }
  });

  it("pins and unpins", async () => {
    expectOk(await box().store("pin", ids.mid!));
    expectOk(await box().store("pin", ids.mid!)); // already pinned: fine
    let list = JSON.parse((await box().store("ls", "--json")).stdout) as Array<{ id: string; pinned: boolean }>;
    expect(list.find((o) => o.id === ids.mid)?.pinned).toBe(true);
    expect((await box().store("ls")).stdout).toMatch(new RegExp(`^${ids.mid}  40000  pinned  `, "m"));
    expect(JSON.parse((await box().store("status", "--json")).stdout).pinned).toBe(1);
    expectOk(await box().store("unpin", ids.mid!));
    list = JSON.parse((await box().store("ls", "--json")).stdout);
    expect(list.every((o) => !o.pinned)).toBe(true);
    const unknown = "ab".repeat(32);
    expectFailure(await box().store("pin", unknown), 1, new RegExp(`no object ${unknown} in the store`));
  });

  it("removes an object; an unknown id is exit 1 with one line", async () => {
    const r = await box().store("rm", ids.small!);
    expectOk(r);
    expect(r.stdout).toBe("");
    const list = JSON.parse((await box().store("ls", "--json")).stdout) as Array<{ id: string }>;
    expect(list.map((o) => o.id)).not.toContain(ids.small);
    expect(objectFiles(box()).some((f) => f.includes(ids.small!))).toBe(false);
    const again = await box().store("rm", ids.small!);
    expectFailure(again, 1, new RegExp(`^sharenode: store: no object ${ids.small} in the store$`, "m"));
  });

  it("rejects a malformed id as bad usage (exit 2), as add --id and challenge do", async () => {
    // `store add --id xyz` and `store challenge xyz` exit 2; rm/pin/unpin must agree.
    for (const action of ["rm", "pin", "unpin"]) {
      for (const id of ["xyz", "AB".repeat(32), "ab".repeat(31)]) {
        const r = await box().store(action, id);
        expectFailure(r, 2, /64 lowercase hex digits/);
      }
    }
    expect(JSON.parse((await box().store("ls", "--json")).stdout)).toHaveLength(2);
  });
});

/** A box created on first use (describe blocks are collected before beforeAll sets `dir`). */
function newBoxLazy(): () => Box {
  let b: Box | undefined;
  return () => (b ??= newBox());
}

// --- scrub -----------------------------------------------------------------------------------------------------

describe("store scrub", () => {
  it("passes a clean store, and quarantines an object whose bytes changed on disk", async () => {
    const box = newBox();
    for (const name of ["small", "mid", "big"] as const) expectOk(await box.store("add", path(name)));
    const clean = await box.store("scrub", "--rate", "1000000000");
    expectOk(clean);
    expect(clean.stdout).toMatch(/^checked 3 objects, 3040700 bytes in \d+ ms; corrupt: 0; missing: 0\n$/);

    const file = join(box.data, "objects", ids.mid!.slice(0, 2), ids.mid!);
    const bytes = readFileSync(file);
    bytes[12_345]! ^= 0x01;
    writeFileSync(file, bytes);
    const dirty = await box.store("scrub", "--rate", "1000000000");
    expect(dirty.status).toBe(1);
    expect(dirty.stderr).toBe("");
    expect(dirty.stdout).toMatch(/corrupt: 1; missing: 0\n/);
    expect(dirty.stdout).toContain(`corrupt ${ids.mid} (quarantined)\n`);
    const list = JSON.parse((await box.store("ls", "--json")).stdout) as Array<{ id: string }>;
    expect(list.map((o) => o.id).sort()).toEqual([ids.small, ids.big].sort());
    expect(existsSync(file)).toBe(false);
    const quarantined = readdirSync(join(box.data, "quarantine"));
    expect(quarantined.some((f) => f.startsWith(`${ids.mid}.`) && !f.endsWith(".obao"))).toBe(true);
    expect(quarantined.some((f) => f.startsWith(`${ids.mid}.`) && f.endsWith(".obao"))).toBe(true);
    // The quarantined copy is the corrupt bytes, kept for inspection.
    const kept = quarantined.find((f) => !f.endsWith(".obao"))!;
    expect(readFileSync(join(box.data, "quarantine", kept)).equals(bytes)).toBe(true);
    // The next pass is clean again, and the object can be added afresh.
    expectOk(await box.store("scrub", "--rate", "1000000000"));
    expect((await box.store("add", path("mid"))).stdout).toBe(`${ids.mid}  40000  added\n`);
  });

  it("rejects a zero or non-numeric --rate as bad usage", async () => {
    const box = newBox();
    expectFailure(await box.store("scrub", "--rate", "0"), 2, /--rate must be positive/);
    expectFailure(await box.store("scrub", "--rate", "fast"), 2, /--rate must be a number of bytes, got 'fast'/);
  });
});

// --- challenge and verify-response -----------------------------------------------------------------------------

describe("store challenge | verify-response", () => {
  const prover = newBoxLazy();
  const stranger = newBoxLazy();
  let publicKey = "";
  let otherKey = "";
  const answers: Record<number, { nonce: string; response: string }> = {};

  const verify = (
    response: string | Buffer,
    o: { pubkey?: string; id?: string; len?: number; nonce: string; count: number },
  ) =>
    sharenode(
      [
        "verify-response",
        "--pubkey",
        o.pubkey ?? publicKey,
        "--id",
        o.id ?? ids.mid!,
        "--len",
        String(o.len ?? FILES.mid),
        "--nonce",
        o.nonce,
        "--count",
        String(o.count),
      ],
      { input: response },
    );

  beforeAll(async () => {
    expectOk(await prover().store("add", path("mid")));
    expectOk(await prover().store("add", path("small")));
    publicKey = JSON.parse((await prover().store("status", "--json")).stdout).publicKey;
    otherKey = JSON.parse((await stranger().store("status", "--json")).stdout).publicKey;
    expect(otherKey).not.toBe(publicKey);
  });

  it.each([1, 8])("K = %i: the response verifies", async (count) => {
    const n = nonce();
    const r = await prover().store("challenge", ids.mid!, "--nonce", n, "--count", String(count));
    expectOk(r);
    const response = JSON.parse(r.stdout);
    expect(response).toMatchObject({ v: 1, objectId: ids.mid, length: 40_000, nonce: n, count });
    expect(response.indices).toHaveLength(count);
    expect(response.proofs).toHaveLength(count);
    answers[count] = { nonce: n, response: r.stdout };
    const v = await verify(r.stdout, { nonce: n, count });
    expectOk(v);
    expect(v.stdout).toMatch(
      new RegExp(`^valid: ${count} chunks? of ${ids.mid} proven by device [0-9a-f]{32} in \\d+ ms\\n$`),
    );
    // The nonce may be given in upper case on either side.
    const upper = await verify(r.stdout, { nonce: n.toUpperCase(), count });
    expectOk(upper);
  });

  it("challenge > /dev/full (as on a full disk): exit 1 with one write-error line", async () => {
    const opts = ["--data", prover().data, "--state", prover().state, "--allow-system-disk"];
    const r = await sharenode(["store", "challenge", ids.mid!, "--nonce", nonce(), "--count", "2", ...opts], {
      stdoutToDevFull: true,
    });
    expectFailure(r, 1, /^sharenode: write error: No space left on device\n$/);
  });

  it("rejects, exit 1 with a one-line reason, a tampered or mismatched response", async () => {
    const { nonce: n, response } = answers[8]!;
    const tampered = JSON.parse(response);
    tampered.elapsedMs += 1;
    const cases: Array<[string, Promise<Result>, RegExp]> = [
      [
        "changed elapsedMs",
        verify(JSON.stringify(tampered), { nonce: n, count: 8 }),
        /invalid: response signature does not verify/,
      ],
      [
        "another device's key",
        verify(response, { pubkey: otherKey, nonce: n, count: 8 }),
        /invalid: response device id [0-9a-f]{32} does not belong to the public key/,
      ],
      ["wrong nonce", verify(response, { nonce: nonce(), count: 8 }), /invalid: response answers nonce/],
      ["wrong count", verify(response, { nonce: n, count: 3 }), /invalid: response has count 8, expected 3/],
      [
        "wrong object",
        verify(response, { id: ids.other, len: FILES.other, nonce: n, count: 8 }),
        /invalid: response is for object/,
      ],
      [
        "garbage JSON",
        verify('{"hello":"world"}', { nonce: n, count: 8 }),
        /invalid: response has an unknown field "hello"/,
      ],
      ["a JSON array", verify("[1,2,3]", { nonce: n, count: 8 }), /invalid: response is an array, not an object/],
      ["random bytes", verify(randomBytes(4096), { nonce: n, count: 8 }), /invalid: the input is not JSON/],
      ["non-JSON text", verify("this is not a response\n", { nonce: n, count: 8 }), /invalid: the input is not JSON/],
      ["empty input", verify("", { nonce: n, count: 8 }), /invalid: the input is not JSON/],
      [
        "a truncated response",
        verify(response.slice(0, response.length >> 1), { nonce: n, count: 8 }),
        /invalid: the input is not JSON/,
      ],
    ];
    for (const [name, pending, message] of cases) {
      const r = await pending;
      try {
        expectFailure(r, 1, /^sharenode: verify-response: invalid: /);
        expectFailure(r, 1, message);
      } catch (err) {
        throw new Error(`${name}: ${errorMessage(err)}`, { cause: err });
      }
    }
  });

  it("a challenge for an object not in the store is exit 1 with one line", async () => {
    const missing = "cd".repeat(32);
    expectFailure(
      await prover().store("challenge", missing, "--nonce", nonce(), "--count", "1"),
      1,
      new RegExp(`^sharenode: store: no object ${missing} in the store$`, "m"),
    );
    // The stranger's store is empty: the prover's object is not there either.
    expectFailure(
      await stranger().store("challenge", ids.mid!, "--nonce", nonce(), "--count", "1"),
      1,
      /no object .* in the store/,
    );
  });
});

// --- usage errors ----------------------------------------------------------------------------------------------

describe("usage errors: exit 2, one line", () => {
  const box = newBoxLazy();
  const id = () => ids.mid!;
  beforeAll(async () => {
    expectOk(await box().store("add", path("mid")));
    expectOk(await box().store("add", path("small")));
  });

  it("store without --data and with SHARENODE_DATA unset", async () => {
    const r = await sharenode(["store", "ls", "--state", box().state, "--allow-system-disk"]);
    expectFailure(r, 2, /^sharenode: store: no data directory: pass --data DIR or set SHARENODE_DATA$/m);
    // SHARENODE_DATA takes its place.
    const viaEnv = await sharenode(["store", "ls", "--state", box().state, "--allow-system-disk"], {
      env: { ...ENV, SHARENODE_DATA: box().data },
    });
    expectOk(viaEnv);
    expect(viaEnv.stdout.trimEnd().split("\n")).toHaveLength(2);
  });

  it("missing action, unknown action, unknown option, wrong number of arguments", async () => {
    expectFailure(await sharenode(["store"]), 2, /store: missing action/);
    expectFailure(await box().store("frobnicate"), 2, /store: unknown action 'frobnicate'/);
    expectFailure(await box().store("ls", "--frob"), 2, /store ls: /);
    expectFailure(await box().store("add"), 2, /store add: expected one argument, got 0/);
    expectFailure(await box().store("rm"), 2, /store rm: expected one argument, got 0/);
    expectFailure(await box().store("ls", "extra"), 2, /store ls: /);
    expectFailure(
      await box().store("add", path("mid"), "--id", "xyz"),
      2,
      /--id must be 64 lowercase hex digits, got 'xyz'/,
    );
    expectFailure(
      await box().store("ls", "--quota", "lots"),
      2,
      /--quota must be a number of bytes \(at least 1\) or a percentage from "1%" to "100%", got "lots"/,
    );
  });

  it("challenge: missing --nonce or --count, a bad --count, a bad nonce, a malformed id", async () => {
    expectFailure(await box().store("challenge", id(), "--count", "1"), 2, /store challenge: missing --nonce/);
    expectFailure(await box().store("challenge", id(), "--nonce", nonce()), 2, /store challenge: missing --count/);
    for (const count of ["x", "-1", "1.5", "0", "65"]) {
      expectFailure(
        await box().store("challenge", id(), "--nonce", nonce(), "--count", count),
        2,
        /store challenge: .*count/,
      );
    }
    expectFailure(
      await box().store("challenge", id(), "--nonce", "abcd", "--count", "1"),
      2,
      /store challenge: challenge nonce must be 64 hex digits/,
    );
    expectFailure(
      await box().store("challenge", "xyz", "--nonce", nonce(), "--count", "1"),
      2,
      /store challenge: challenge object id/,
    );
  });

  it("challenge: a count larger than the object's chunk count", async () => {
    // The small object (700 bytes) has one chunk. verify-response calls the same mistake bad usage (below).
    const r = await box().store("challenge", ids.small!, "--nonce", nonce(), "--count", "8");
    expectFailure(r, 2, /challenge count 8 exceeds the 1 chunk of an object of 700 bytes/);
  });

  it("verify-response: missing or malformed options, a count larger than the chunk count", async () => {
    const n = nonce();
    const all = { pubkey: "11".repeat(32), id: id(), len: "40000", nonce: n, count: "1" };
    const args = (o: Record<string, string>) => [
      "verify-response",
      ...Object.entries(o).flatMap(([k, v]) => [`--${k}`, v]),
    ];
    for (const name of Object.keys(all)) {
      const { [name as keyof typeof all]: _, ...rest } = all;
      expectFailure(await sharenode(args(rest), { input: "{}" }), 2, new RegExp(`verify-response: missing --${name}`));
    }
    expectFailure(await sharenode(args({ ...all, pubkey: "00" }), { input: "{}" }), 2, /--pubkey: /);
    expectFailure(
      await sharenode(args({ ...all, count: "two" }), { input: "{}" }),
      2,
      /--count must be a non-negative integer, got 'two'/,
    );
    expectFailure(
      await sharenode(args({ ...all, len: "5.5" }), { input: "{}" }),
      2,
      /--len must be a non-negative integer, got '5\.5'/,
    );
    expectFailure(await sharenode(args({ ...all, nonce: "zz" }), { input: "{}" }), 2, /--nonce must be 64 hex digits/);
    expectFailure(
      await sharenode(args({ ...all, len: "700", count: "8" }), { input: "{}" }),
      2,
      /challenge count 8 exceeds the 1 chunk of an object of 700 bytes/,
    );
    expectFailure(
      await sharenode(args({ ...all, count: "0" }), { input: "{}" }),
      2,
      /count must be an integer 1\.\.64/,
    );
  });
});

// --- the store lock --------------------------------------------------------------------------------------------

describe("one process per store", () => {
  it("refuses, exit 1 with one 'in use' line, while store.lock names a live process", async () => {
    const box = newBox();
    expectOk(await box.store("add", path("mid")));
    const lock = join(box.data, "store.lock");
    expect(existsSync(lock)).toBe(false);
    writeFileSync(lock, `${process.pid}\n`); // this test runner: alive
    for (const args of [
      ["ls"],
      ["add", path("small")],
      ["scrub"],
      ["challenge", ids.mid!, "--nonce", nonce(), "--count", "1"],
    ]) {
      const r = await box.store(...args);
      expectFailure(r, 1, new RegExp(`^sharenode: store: .*in use by process ${process.pid}$`, "m"));
    }
    expect(readFileSync(lock, "utf8")).toBe(`${process.pid}\n`); // a refused command leaves the owner's lock alone
    expect(objectFiles(box).filter((f) => !f.endsWith(".obao"))).toHaveLength(1);
  });

  it("takes over the lock of a dead process (or an unreadable lock), and releases it when done", async () => {
    const box = newBox();
    expectOk(await box.store("add", path("mid")));
    const lock = join(box.data, "store.lock");
    const dead = spawnSync(process.execPath, ["-e", ""]).pid!; // exited: its pid names no live process
    writeFileSync(lock, `${dead}\n`);
    const r = await box.store("add", path("small"));
    expectOk(r);
    expect(r.stdout).toBe(`${ids.small}  700  added\n`);
    expect(existsSync(lock)).toBe(false);

    writeFileSync(lock, "not a pid\n");
    const ls = await box.store("ls");
    expectOk(ls);
    expect(ls.stdout.trimEnd().split("\n")).toHaveLength(2);
    expect(existsSync(lock)).toBe(false);
  });
});
