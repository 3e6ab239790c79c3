// `sharenode console` with its input from a pipe (agent/console/batch.ts): one command per line, in order, errors
// on stderr with line numbers, exit status 1 when a line failed. The runner is driven through streams with test
// commands; the last tests pipe a script into the built bundle with the real commands.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { ConsoleError, type ConsoleCommand } from "../agent/console/command-api";
import { runBatch } from "../agent/console/batch";

const BIN = fileURLToPath(new URL("../dist/sharenode.js", import.meta.url));
const work = mkdtempSync(join(tmpdir(), "sharenode-batch-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function testCommands(log: string[]): ConsoleCommand[] {
  return [
    {
      name: "say",
      args: "[WORDS...]",
      summary: "print the words",
      run: async (args, io) => void (log.push(`say ${args.join("|")}`), io.print(`[${args.join("|")}]\n`)),
    },
    {
      name: "confirm",
      args: "",
      summary: "asks",
      run: async (_args, io) => {
        const answer = await io.ask('Type "yes": ');
        log.push(`answer ${JSON.stringify(answer ?? null)}`);
        io.print(`answer ${JSON.stringify(answer ?? null)}\n`);
      },
    },
    {
      name: "boom",
      args: "",
      summary: "throws",
      run: async () => {
        throw new ConsoleError("disk on fire");
      },
    },
    {
      name: "check",
      args: "",
      summary: "a failing check",
      run: async (_a, io) => (io.print("check: FAIL\n"), { ok: false }),
    },
    { name: "noisy", args: "", summary: "control characters", run: async (_a, io) => io.print("a\x1b[2Jb\x07c\n") },
    {
      name: "wait",
      args: "",
      summary: "until aborted",
      run: (_a, io) =>
        new Promise<void>((resolve) => {
          log.push("waiting");
          io.signal.addEventListener("abort", () => (log.push("aborted"), resolve()));
        }),
    },
  ];
}

async function batch(
  script: string | Buffer[],
  options: { signal?: AbortSignal; maxLineLength?: number; keepOpen?: boolean } = {},
) {
  const input = new PassThrough();
  const output = new PassThrough();
  const errors = new PassThrough();
  let out = "";
  let err = "";
  output.on("data", (d: Buffer) => (out += d.toString("utf8")));
  errors.on("data", (d: Buffer) => (err += d.toString("utf8")));
  const log: string[] = [];
  const status = runBatch({
    input,
    output,
    errors,
    commands: testCommands(log),
    signal: options.signal,
    maxLineLength: options.maxLineLength,
  });
  for (const piece of typeof script === "string" ? [script] : script) input.write(piece);
  if (!options.keepOpen) input.end();
  return { status, log, out: () => out, err: () => err, input };
}

describe("the console's batch runner", () => {
  it("runs each line in order, skipping blank lines and # comments; CRLF and a last line without a newline work", async () => {
    const b = await batch("say one\r\n\n   \n# say never\nsay 'two words' three\r\nsay last");
    expect(await b.status).toBe(0);
    expect(b.log).toEqual(["say one", "say two words|three", "say last"]);
    expect(b.out()).toBe("[one]\n[two words|three]\n[last]\n");
    expect(b.err()).toBe("");
  });

  it("reports each bad line on stderr with its number, goes on, and exits 1", async () => {
    const b = await batch('say a\nnosuch x\nboom\nsay "open\ncheck\nhelp nosuch\nsay z\n');
    expect(await b.status).toBe(1);
    expect(b.log).toEqual(["say a", "say z"]);
    expect(b.err()).toBe(
      [
        'error: line 2: unknown command "nosuch" (type help)',
        "error: line 3: disk on fire",
        "error: line 4: unterminated double quote",
        'error: line 6: unknown command "nosuch" (type help)',
        "",
      ].join("\n"),
    );
    // A check that reports failure prints its own lines and makes the status 1 without an error line.
    expect(b.out()).toBe("[a]\ncheck: FAIL\n[z]\n");
  });

  it("a failing check alone makes the exit status 1", async () => {
    const b = await batch("check\n");
    expect(await b.status).toBe(1);
    expect(b.err()).toBe("");
  });

  it("help lists the commands without the terminal's key help; help COMMAND shows one", async () => {
    const b = await batch("help\nhelp say\n");
    expect(await b.status).toBe(0);
    expect(b.out()).toMatch(/^Commands:\n {2}say \[WORDS\.\.\.\] +print the words\n/);
    expect(b.out()).toMatch(/\n {2}exit +leave the console/);
    expect(b.out()).not.toMatch(/Keys:/);
    expect(b.out()).toMatch(/\nsay \[WORDS\.\.\.\] {2}print the words\n$/);
  });

  it("answers a question with the next line, which is not run as a command; at the end of input it is unanswered", async () => {
    const b = await batch("confirm\nsay\nsay after\nconfirm");
    expect(await b.status).toBe(0);
    expect(b.log).toEqual(['answer "say"', "say after", "answer null"]);
    expect(b.out()).toBe('Type "yes": \nanswer "say"\n[after]\nType "yes": \nanswer null\n');
  });

  it("exit and quit end the run: later lines never run", async () => {
    const b = await batch("say 1\nexit\nsay 2\n");
    expect(await b.status).toBe(0);
    expect(b.log).toEqual(["say 1"]);
    const q = await batch("say 3\nquit\nsay 4\n");
    expect(await q.status).toBe(0);
    expect(q.log).toEqual(["say 3"]);
  });

  it("a line over the limit is refused without being kept; the next line runs", async () => {
    const long = "say " + "x".repeat(5000);
    // Sent in small pieces, as a pipe delivers it.
    const pieces = [...Buffer.from(`${long}\nsay ok\n`)].reduce<Buffer[]>((acc, byte, i) => {
      if (i % 700 === 0) acc.push(Buffer.alloc(0));
      acc[acc.length - 1] = Buffer.concat([acc[acc.length - 1]!, Buffer.from([byte])]);
      return acc;
    }, []);
    const b = await batch(pieces, { maxLineLength: 1024 });
    expect(await b.status).toBe(1);
    expect(b.err()).toBe("error: line 1: line too long (max 1024 characters)\n");
    expect(b.log).toEqual(["say ok"]);
  });

  it("a line of exactly the limit runs, with a CRLF ending too", async () => {
    const words = "say " + "y".repeat(16 - 4);
    const b = await batch(`${words}\r\n${words}z\n`, { maxLineLength: 16 });
    expect(await b.status).toBe(1);
    expect(b.log).toEqual([`say ${"y".repeat(12)}`]);
    expect(b.err()).toBe("error: line 2: line too long (max 16 characters)\n");
  });

  it("UTF-8 split across chunks stays whole; control characters from a command are neutralised", async () => {
    const bytes = Buffer.from("say grüße\nnoisy\n");
    const cut = bytes.indexOf(0xc3) + 1; // inside the two bytes of ü
    const b = await batch([bytes.subarray(0, cut), bytes.subarray(cut)]);
    expect(await b.status).toBe(0);
    expect(b.out()).toBe("[grüße]\na?[2Jb?c\n");
  });

  it("a stop signal aborts the running command and ends the run although the input stays open", async () => {
    const stop = new AbortController();
    const b = await batch("say before\nwait\nsay never\n", { signal: stop.signal, keepOpen: true });
    while (!b.log.includes("waiting")) await new Promise((r) => setTimeout(r, 5));
    stop.abort();
    expect(await b.status).toBe(0);
    expect(b.log).toEqual(["say before", "waiting", "aborted"]);
    expect(b.input.destroyed).toBe(true);
  });

  it("a stop while waiting for the next line ends the run: the pending read does not keep it waiting", async () => {
    const stop = new AbortController();
    const b = await batch("say a\n", { signal: stop.signal, keepOpen: true });
    while (!b.log.includes("say a")) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 20)); // the runner is now reading
    stop.abort();
    const ended = await Promise.race([b.status, new Promise((r) => setTimeout(() => r("still waiting"), 2000))]);
    expect(ended).toBe(0);
    expect(b.input.destroyed).toBe(true);
  });
});

describe("sharenode console with piped input (the built bundle, real commands)", () => {
  const env = {
    ...process.env,
    SHARENODE_STATE: join(work, "state"),
    SHARENODE_DATA: join(work, "data"),
    SHARENODE_BOARD: "sim",
  };
  mkdirSync(join(work, "data"), { recursive: true });

  it("--help shows the printf example as typed: backslash-n, not line breaks, and the shell runs it as three lines", () => {
    const r = spawnSync(process.execPath, [BIN, "console", "--help"], { encoding: "utf8", env, timeout: 60_000 });
    expect(r.status).toBe(0);
    const example = r.stdout.split("\n").find((l) => l.trimStart().startsWith("printf "));
    expect(example?.trim()).toBe("printf 'status\\ndisks\\nlog 200\\n' | sharenode console > report.txt");
    const printf = example!.trim().split(" | ")[0]!;
    expect(spawnSync("sh", ["-c", printf], { encoding: "utf8" }).stdout).toBe("status\ndisks\nlog 200\n");
  });

  it("runs a script of commands: no banner or prompt, output on stdout, exit 0", () => {
    const r = spawnSync(process.execPath, [BIN, "console"], {
      input: "version\n# board facts\nboard\n",
      encoding: "utf8",
      env,
      timeout: 60_000,
    });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^sharenode +\d+\.\d+\.\d+\n/);
    expect(r.stdout).not.toMatch(/sharenode> |diagnostics console/);
    expect(r.stdout).toMatch(/\bsim\b/);
  });

  it("an unknown command is one stderr line naming the line, the rest still runs, exit 1", () => {
    const r = spawnSync(process.execPath, [BIN, "console"], {
      input: "frobnicate\nversion\n",
      encoding: "utf8",
      env,
      timeout: 60_000,
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toBe('error: line 1: unknown command "frobnicate" (type help)\n');
    expect(r.stdout).toMatch(/^sharenode +\d+\.\d+\.\d+\n/);
  });

  it("factory-reset from a script takes the typed word from the next line: a wrong word erases nothing", () => {
    const state = join(work, "reset-state");
    mkdirSync(state, { recursive: true });
    writeFileSync(join(state, "leftover"), "x");
    const run = (input: string) =>
      spawnSync(process.execPath, [BIN, "console"], {
        input,
        encoding: "utf8",
        env: { ...env, SHARENODE_STATE: state },
        timeout: 60_000,
      });

    const refused = run("factory-reset\nfactory\nversion\n");
    expect(refused.status, refused.stderr).toBe(0);
    expect(refused.stdout).toMatch(/cancelled: nothing was erased\n/);
    expect(refused.stdout).toMatch(/^sharenode +\d+\.\d+\.\d+$/m); // the line after the answer runs
    expect(existsSync(join(state, "leftover"))).toBe(true);

    const erased = run("factory-reset\nfactory-reset\nno\n");
    expect(erased.status, erased.stderr).toBe(0);
    expect(erased.stdout).toMatch(/erased 1 entry;/);
    expect(erased.stdout).toMatch(/not rebooting\n/);
    expect(existsSync(join(state, "leftover"))).toBe(false);
  });
});
