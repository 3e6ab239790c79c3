// The console's shell over in-memory streams with test commands: the key decoder, line editing as the screen shows
// it (a small terminal emulator replays every byte the shell writes), history, Ctrl-C and Ctrl-D, type-ahead,
// questions, long lines, and noise: 64 KiB of seeded random bytes must cost one error line and nothing else.
import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { ConsoleError, type ConsoleCommand } from "../agent/console/command-api";
import { KeyDecoder, LineEditor, type Key } from "../agent/console/line-editor";
import { runShell, splitWords, type ShellEnd, type ShellOptions } from "../agent/console/shell";

/** A terminal of unbounded size, enough of a VT100 to replay what the shell writes; unknown sequences throw. */
class Screen {
  rows: string[][] = [[]];
  row = 0;
  col = 0;
  bells = 0;
  maxCol = 0;

  feed(text: string): void {
    const chars = Array.from(text);
    for (let i = 0; i < chars.length; i++) {
      const c = chars[i];
      if (c === "\r") this.col = 0;
      else if (c === "\n") this.rows[++this.row] ??= [];
      else if (c === "\b") this.col = Math.max(0, this.col - 1);
      else if (c === "\t") this.col = (Math.floor(this.col / 8) + 1) * 8;
      else if (c === "\x07") this.bells++;
      else if (c === "\x1b") {
        const m = /^\x1b\[(\d*)([A-Za-z])/.exec(chars.slice(i, i + 12).join(""));
        if (!m) throw new Error(`unexpected escape sequence ${JSON.stringify(chars.slice(i, i + 8).join(""))}`);
        i += m[0].length - 1;
        const n = Number(m[1] || "1");
        if (m[1] === "0") throw new Error("ESC[0C/D moves one column on many terminals: never send a zero count");
        if (m[2] === "K") this.rows[this.row].length = Math.min(this.rows[this.row].length, this.col);
        else if (m[2] === "D") this.col = Math.max(0, this.col - n);
        else if (m[2] === "C") this.col += n;
        else if (m[2] === "H") this.row = this.col = 0;
        else if (m[2] === "J") this.rows = [[]];
        else throw new Error(`unexpected CSI ${m[0]}`);
      } else if (c < " " || (c >= "\x7f" && c <= "\x9f"))
        throw new Error(`control character ${JSON.stringify(c)} reached the terminal`);
      else {
        const line = this.rows[this.row];
        while (line.length < this.col) line.push(" ");
        line[this.col++] = c;
        this.maxCol = Math.max(this.maxCol, this.col);
      }
    }
  }

  /** The row the cursor is on, with "|" at the cursor. */
  get line(): string {
    const line = [...this.rows[this.row]];
    while (line.length < this.col) line.push(" ");
    line.splice(this.col, 0, "|");
    return line.join("").trimEnd();
  }

  get text(): string {
    return this.rows.map((r) => r.join("").trimEnd()).join("\n");
  }
}

const KEY = {
  left: "\x1b[D",
  right: "\x1b[C",
  up: "\x1b[A",
  down: "\x1b[B",
  home: "\x1b[H",
  end: "\x1b[F",
  del: "\x1b[3~",
  bs: "\x7f",
  ctrlA: "\x01",
  ctrlC: "\x03",
  ctrlD: "\x04",
  ctrlE: "\x05",
  ctrlK: "\x0b",
  ctrlL: "\x0c",
  ctrlU: "\x15",
  ctrlW: "\x17",
};

function testCommands(hooks: { gate?: Promise<void>; late?: (print: () => void) => void } = {}): ConsoleCommand[] {
  return [
    {
      name: "say",
      args: "[WORDS...]",
      summary: "print the words",
      run: async (args, io) => io.print(`[${args.join("|")}]\n`),
    },
    {
      name: "wait",
      args: "",
      summary: "wait until Ctrl-C",
      run: (_args, io) =>
        new Promise<void>((resolve) => {
          io.print("waiting\n");
          io.signal.addEventListener("abort", () => {
            io.print("stopped\n");
            resolve();
          });
        }),
    },
    {
      name: "follow",
      args: "",
      summary: "throws AbortError on Ctrl-C",
      run: (_args, io) =>
        new Promise<void>((_resolve, reject) => {
          io.print("following\n");
          io.signal.addEventListener("abort", () => reject(io.signal.reason));
        }),
    },
    {
      name: "gate",
      args: "",
      summary: "runs until the test opens the gate",
      run: async (_args, io) => {
        io.print("gate closed\n");
        await hooks.gate;
        io.print("gate open\n");
      },
    },
    {
      name: "fail",
      args: "",
      summary: "throws an Error",
      run: async () => {
        throw new Error("disk on fire\nsecond line");
      },
    },
    {
      name: "refuse",
      args: "",
      summary: "throws a ConsoleError",
      run: async () => {
        throw new ConsoleError("not allowed");
      },
    },
    {
      name: "confirm",
      args: "",
      summary: "asks a question",
      run: async (_args, io) => {
        io.print("This is serious.\n");
        const answer = await io.ask('Type "yes" to go on: ');
        io.print(`answer: ${JSON.stringify(answer ?? null)}\n`);
      },
    },
    {
      name: "evil",
      args: "",
      summary: "prints terminal commands",
      run: async (_args, io) => io.print("a\x1b[2J\x1b]0;pwned\x07b\x9bc\r\nd\te\rf\n"),
    },
    {
      name: "late",
      args: "",
      summary: "prints after it returned",
      run: async (_args, io) => hooks.late?.(() => io.print("too late\n")),
    },
    {
      name: "cols",
      args: "",
      summary: "prints the columns",
      run: async (_args, io) => io.print(`columns ${io.columns}\n`),
    },
  ];
}

function harness(options: Partial<ShellOptions> & { hooks?: Parameters<typeof testCommands>[0] } = {}) {
  const input = new PassThrough();
  const output = new PassThrough();
  const screen = new Screen();
  let raw = "";
  let wake: (() => void) | undefined;
  output.on("data", (chunk: Buffer) => {
    const text = chunk.toString("utf8");
    raw += text;
    screen.feed(text);
    wake?.();
  });
  let ended: ShellEnd | undefined;
  const done = runShell({
    input,
    output,
    commands: testCommands(options.hooks),
    banner: "test console\n",
    ...options,
  }).then((end) => {
    ended = end;
    wake?.();
    return end;
  });
  const h = {
    input,
    screen,
    done,
    get raw() {
      return raw;
    },
    get ended() {
      return ended;
    },
    mark: () => raw.length,
    type(keys: string | Uint8Array) {
      input.write(typeof keys === "string" ? Buffer.from(keys, "utf8") : keys);
    },
    /** Waits (up to 10 s) until the condition holds; output arrives asynchronously. */
    async until(condition: () => boolean, what: string): Promise<void> {
      const deadline = Date.now() + 10_000;
      while (!condition()) {
        if (Date.now() > deadline)
          throw new Error(`timed out waiting for ${what}; output so far: ${JSON.stringify(raw.slice(-600))}`);
        await new Promise<void>((resolve) => {
          wake = resolve;
          setTimeout(resolve, 20);
        });
      }
    },
    async waitFor(text: string, from = 0): Promise<string> {
      await h.until(() => raw.indexOf(text, from) >= 0, JSON.stringify(text));
      return raw.slice(from);
    },
    /** Types a line, waits for the prompt after it; returns what the shell printed in between. */
    async run(keys: string): Promise<string> {
      const from = raw.length;
      h.type(keys);
      const end = await h.waitFor("\r\nsharenode> ", from);
      return end.slice(0, end.lastIndexOf("\r\nsharenode> ") + 2);
    },
  };
  return h;
}

async function started(options?: Parameters<typeof harness>[0]) {
  const h = harness(options);
  await h.waitFor("sharenode> ");
  return h;
}

/** Seeded PRNG (mulberry32): the same noise on every run. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function decode(...chunks: (string | number[])[]): Key[] {
  const decoder = new KeyDecoder();
  const keys: Key[] = [];
  for (const chunk of chunks)
    decoder.feed(typeof chunk === "string" ? Buffer.from(chunk, "utf8") : Uint8Array.from(chunk), keys);
  return keys;
}

describe("KeyDecoder", () => {
  it.each([
    ["\x1b[A", "up"],
    ["\x1b[B", "down"],
    ["\x1b[C", "right"],
    ["\x1b[D", "left"],
    ["\x1bOA", "up"],
    ["\x1bOD", "left"],
    ["\x1b[H", "home"],
    ["\x1b[F", "end"],
    ["\x1bOH", "home"],
    ["\x1bOF", "end"],
    ["\x1b[1~", "home"],
    ["\x1b[4~", "end"],
    ["\x1b[7~", "home"],
    ["\x1b[8~", "end"],
    ["\x1b[3~", "delete"],
    ["\x1b[1;5C", "word-right"],
    ["\x1b[1;5D", "word-left"],
    ["\x1b[1;3D", "word-left"],
    ["\x1bb", "word-left"],
    ["\x1bf", "word-right"],
    ["\x1b\x7f", "kill-word"],
    ["\x7f", "backspace"],
    ["\x08", "backspace"],
    ["\x01", "home"],
    ["\x05", "end"],
    ["\x02", "left"],
    ["\x06", "right"],
    ["\x10", "up"],
    ["\x0e", "down"],
    ["\x03", "interrupt"],
    ["\x04", "eof"],
    ["\x15", "kill-before"],
    ["\x0b", "kill-after"],
    ["\x17", "kill-word"],
    ["\x0c", "clear"],
    ["\r", "enter"],
    ["\n", "enter"],
  ])("%j is %s", (bytes, key) => {
    expect(decode(bytes)).toEqual([key]);
  });

  it("CR, LF and CRLF are one Enter each, also when CR and LF arrive apart", () => {
    expect(decode("\r\n\r\n")).toEqual(["enter", "enter"]);
    expect(decode("\r", "\n", "\r", "\n")).toEqual(["enter", "enter"]);
    expect(decode("\n\n\r\r")).toEqual(["enter", "enter", "enter", "enter"]);
    expect(decode("\n\r")).toEqual(["enter", "enter"]);
    expect(decode("\ra\n")).toEqual(["enter", { char: "a" }, "enter"]);
  });

  it("decodes UTF-8 split across chunks", () => {
    const bytes = [...Buffer.from("é€😀")];
    const chunks = bytes.map((b) => [b]);
    expect(decode(...chunks)).toEqual([{ char: "é" }, { char: "€" }, { char: "😀" }]);
  });

  it.each([
    ["a lone continuation byte", [0x80]],
    ["0xff", [0xff]],
    ["an overlong encoding", [0xe0, 0x80, 0xaf]],
    ["0xc0", [0xc0, 0xaf]],
    ["a UTF-16 surrogate", [0xed, 0xa0, 0x80]],
    ["above U+10FFFF", [0xf4, 0x90, 0x80, 0x80]],
    ["a C1 control", [0xc2, 0x9b]],
    ["a character cut short", [0xe2, 0x82, 0x41]],
    ["a CSI broken by a control", [0x1b, 0x5b, 0x31, 0x01]],
    ["an endless CSI", [0x1b, 0x5b, ...Array(40).fill(0x31)]],
  ])("%s is noise", (_what, bytes) => {
    expect(decode(bytes)).toContain("noise");
  });

  it("drops NUL, unbound controls, F-keys, unknown sequences and Alt-keys", () => {
    expect(decode("\x00\x07\x09\x11\x12\x13\x1a\x1c\x1f\x1bOP\x1b[15~\x1b[99~\x1b[200~\x1b[12;40R\x1bx\x1b[I")).toEqual(
      [],
    );
  });

  it("keeps a lone ESC pending until flushed, then drops it", () => {
    const decoder = new KeyDecoder();
    expect(decoder.feed(Buffer.from("\x1b"))).toEqual([]);
    expect(decoder.pending).toBe(true);
    expect(decoder.flush()).toEqual([]);
    expect(decoder.feed(Buffer.from("x"))).toEqual([{ char: "x" }]);
    // A partial sequence is held, then completed by the next chunk.
    expect(decoder.feed(Buffer.from("\x1b["))).toEqual([]);
    expect(decoder.feed(Buffer.from("A"))).toEqual(["up"]);
    // ESC followed by a control: the ESC was alone, the control counts.
    expect(decoder.feed(Buffer.from("\x1b\r"))).toEqual(["enter"]);
    // A character cut off by silence is noise.
    decoder.feed(Uint8Array.from([0xe2]));
    expect(decoder.flush()).toEqual(["noise"]);
  });
});

describe("LineEditor", () => {
  function edit(keys: string, columns = 80, prompt = "> ") {
    const editor = new LineEditor({ prompt, maxLength: 1024, columns });
    const screen = new Screen();
    screen.feed(editor.redraw());
    for (const key of decode(keys)) {
      screen.feed(editor.handle(key).output);
      expect(screen.maxCol, "the terminal would wrap").toBeLessThan(columns);
    }
    return { editor, screen };
  }

  it("writes one byte for typing at the end and for Left and Right", () => {
    const editor = new LineEditor({ prompt: "> ", maxLength: 1024, columns: 80 });
    const out = decode("abc" + KEY.left + KEY.left + KEY.right).map((k) => editor.handle(k).output);
    expect(out).toEqual(["a", "b", "c", "\b", "\b", "b"]);
    expect(editor.handle("backspace").output).toMatch(/^\r> ac\x1b\[K\x1b\[1D$/);
    expect(editor.handle("end").output).toBe("\x1b[1C"); // a move without scrolling is a cursor move
    expect(editor.handle("home").output).toBe("\x1b[2D");
    expect(editor.handle("end").output).toBe("\x1b[2C");
    expect(editor.handle("backspace").output).toBe("\b \b");
  });

  it.each([
    ["hel" + KEY.left + KEY.bs + "xl", "hxl|l"],
    ["hello" + KEY.home + "X", "X|hello"],
    ["hello" + KEY.ctrlA + KEY.del + KEY.ctrlE + "!", "ello!|"],
    ["hello world" + KEY.ctrlW, "hello |"],
    ["hello world  " + KEY.ctrlW + KEY.ctrlW, "|"],
    ["hello world" + "\x1b[1;5D" + KEY.ctrlK, "hello |"],
    ["hello world" + "\x1b[1;5D" + KEY.ctrlU, "|world"],
    ["hello" + KEY.left + KEY.left + KEY.ctrlD, "hel|o"],
    ["ab" + "\x1bOH" + "\x1b[4~" + "c" + "\x1b[1~" + "\x1bOF" + "d", "abcd|"],
    ["héllo 😀" + KEY.left + KEY.bs, "héllo|😀"],
    ["abc" + KEY.ctrlL, "abc|"],
  ])("%j shows %j", (keys, shown) => {
    const { screen } = edit(keys);
    expect(screen.line).toBe(`> ${shown}`.trimEnd());
  });

  it("scrolls a line wider than the terminal sideways instead of wrapping", () => {
    const long = Array.from({ length: 60 }, (_, i) => String.fromCharCode(97 + (i % 26))).join("");
    const { editor, screen } = edit(long, 20);
    expect(editor.text).toBe(long);
    expect(screen.line.endsWith(`${long.slice(-5)}|`)).toBe(true);
    // Home shows the start again; the cursor's character is always on screen.
    for (const key of decode(KEY.home)) screen.feed(editor.handle(key).output);
    expect(screen.line.startsWith(`> |${long.slice(0, 10)}`)).toBe(true);
    for (let i = 0; i < 60; i++) {
      screen.feed(editor.handle("right").output);
      expect(screen.maxCol).toBeLessThan(20);
      const line = screen.line;
      expect(line[line.indexOf("|") - 1]).toBe(long[i]);
    }
  });
});

describe("splitWords", () => {
  it("splits on blanks and groups quoted words", () => {
    expect(splitWords("  log  -f\t20 ")).toEqual(["log", "-f", "20"]);
    expect(splitWords(`say "two words" 'it''s' ""`)).toEqual(["say", "two words", "its", ""]);
    expect(() => splitWords('say "open')).toThrow(/unterminated double quote/);
  });
});

describe("runShell", () => {
  it("prints the banner and the prompt, runs a command, and prints nothing it did not mean to", async () => {
    const h = await started();
    expect(h.raw).toBe("test console\r\nsharenode> ");
    expect(await h.run("say hello  world\r")).toBe("say hello  world\r\n[hello|world]\r\n");
  });

  it("CRLF is one Enter: no empty prompt in between; LF alone is Enter too", async () => {
    const h = await started();
    h.type("say a\r\nsay b\nsay c\r");
    await h.waitFor("[c]");
    await h.until(() => h.raw.endsWith("sharenode> "), "the prompt");
    expect(h.screen.text).toBe(
      "test console\nsharenode> say a\n[a]\nsharenode> say b\n[b]\nsharenode> say c\n[c]\nsharenode>",
    );
  });

  it("edits the line: typing, Left, Backspace, Delete, Home/End, Ctrl-A/E/U/K/W", async () => {
    const h = await started();
    expect(await h.run("sa" + KEY.left + "X" + KEY.bs + KEY.end + "y hel" + KEY.left + KEY.bs + "xl\r")).toMatch(
      /\[hxll\]\r\n$/,
    );
    expect(await h.run("xsay abc" + KEY.home + KEY.del + KEY.ctrlE + " d\r")).toMatch(/\[abc\|d\]\r\n$/);
    expect(await h.run("rubbish" + KEY.ctrlU + "say one two" + KEY.ctrlW + "three\r")).toMatch(/\[one\|three\]\r\n$/);
    expect(await h.run("say kept" + "\x1b[1;5D" + KEY.left + KEY.ctrlK + "\r")).toMatch(/\[\]\r\n$/);
  });

  it("Up and Down walk the history: bounded, no empty lines, no consecutive duplicates, the draft kept", async () => {
    const h = await started({ historySize: 3 });
    for (const line of ["say 1", "say 2", "say 2", "", "   ", "say 3", "say 4"]) await h.run(line + "\r");
    // History: say 2, say 3, say 4 (say 1 fell off, the duplicate and the empty lines were never kept); Up stops
    // at the oldest.
    expect(await h.run(KEY.up.repeat(5) + "\r")).toMatch(/\[2\]\r\n$/);
    // Now say 3, say 4, say 2; running say 2 again does not store it twice in a row.
    expect(await h.run(KEY.up + "\r")).toMatch(/\[2\]\r\n$/);
    expect(await h.run(KEY.up.repeat(3) + "\r")).toMatch(/\[3\]\r\n$/);
    // The line being typed survives a trip into the history and back.
    expect(await h.run("say dr" + KEY.up + KEY.up + KEY.down + KEY.down + "aft\r")).toMatch(/\[draft\]\r\n$/);
    // Ctrl-P / Ctrl-N too.
    expect(await h.run("\x10\r")).toMatch(/\[draft\]\r\n$/);
  });

  it("Ctrl-C at the prompt cancels the line: ^C and a new prompt, nothing runs, nothing stored", async () => {
    const h = await started();
    const out = await h.run("say secret" + KEY.ctrlC);
    expect(out).toBe("say secret^C\r\n");
    expect(await h.run(KEY.up + "\r")).toBe("\r\n"); // nothing in the history: Up does nothing
  });

  it("Ctrl-C aborts the running command through its signal; an AbortError it throws is no error", async () => {
    const h = await started();
    let from = h.mark();
    h.type("wait\r");
    await h.waitFor("waiting\r\n", from);
    expect(await h.run(KEY.ctrlC)).toBe("^C\r\nstopped\r\n");
    from = h.mark();
    h.type("follow\r");
    await h.waitFor("following\r\n", from);
    expect(await h.run(KEY.ctrlC)).toBe("^C\r\n");
  });

  it("Ctrl-D on an empty line ends the shell with 'exit'; on a non-empty line it deletes under the cursor", async () => {
    const h = await started();
    expect(await h.run("say ab" + KEY.left + KEY.left + KEY.ctrlD + "\r")).toMatch(/\[b\]\r\n$/);
    h.type(KEY.ctrlD);
    expect(await h.done).toBe("exit");
    expect(h.raw.endsWith("sharenode> \r\n")).toBe(true);
  });

  it("exit and quit end the shell; the end of the input closes it", async () => {
    for (const word of ["exit", "quit", "  exit extra"]) {
      const h = await started();
      h.type(word + "\r");
      expect(await h.done).toBe("exit");
    }
    const h = await started();
    h.input.end();
    expect(await h.done).toBe("closed");
  });

  it("the caller's signal closes the shell and aborts the running command", async () => {
    const controller = new AbortController();
    const h = await started({ signal: controller.signal });
    h.type("wait\r");
    await h.waitFor("waiting");
    controller.abort();
    expect(await h.done).toBe("closed");
  });

  it("a hangup ends the shell even when the running command ignores its signal", async () => {
    const h = await started({ hooks: { gate: new Promise(() => {}) } });
    h.type("gate\r");
    await h.waitFor("gate closed");
    h.input.destroy();
    expect(await h.done).toBe("closed");
  });

  it("answers an unknown command, a failing command and a ConsoleError with one error line, and goes on", async () => {
    const h = await started();
    expect(await h.run("frobnicate now\r")).toBe(
      'frobnicate now\r\nerror: unknown command "frobnicate" (type help)\r\n',
    );
    expect(await h.run("fail\r")).toBe("fail\r\nerror: disk on fire second line\r\n");
    expect(await h.run("refuse\r")).toBe("refuse\r\nerror: not allowed\r\n");
    expect(await h.run('say "unterminated\r')).toMatch(/\r\nerror: unterminated double quote\r\n$/);
    expect(await h.run("toString\r")).toMatch(/error: unknown command "toString"/);
    expect(await h.run("say still here\r")).toMatch(/\[still\|here\]/);
  });

  it("help lists every command with its arguments, plus help and exit; help CMD shows one", async () => {
    const h = await started();
    const help = await h.run("help\r");
    expect(help).toMatch(/^help\r\nCommands:\r\n/);
    expect(help).toMatch(/\r\n {2}say \[WORDS\.\.\.\] {2,}print the words\r\n/);
    expect(help).toMatch(/\r\n {2}help \[COMMAND\] {2,}list the commands/);
    expect(help).toMatch(/\r\n {2}exit {2,}leave the console/);
    expect(await h.run("help say\r")).toBe("help say\r\nsay [WORDS...]  print the words\r\n");
    expect(await h.run("help nope\r")).toMatch(/error: unknown command "nope"/);
  });

  it("command output: \\n becomes \\r\\n, control characters become ?, tabs stay", async () => {
    const h = await started();
    expect(await h.run("evil\r")).toBe("evil\r\na?[2J?]0;pwned?b?c\r\nd\tef\r\n");
  });

  it("a command printing after it returned prints nothing over the prompt", async () => {
    let later: (() => void) | undefined;
    const h = await started({ hooks: { late: (print) => (later = print) } });
    await h.run("late\r");
    const from = h.mark();
    later!();
    await h.run("say x\r");
    expect(h.raw.slice(from)).not.toContain("too late");
  });

  it("ConsoleIo.columns is the terminal's when known", async () => {
    const h = await started({ columns: () => 132 });
    expect(await h.run("cols\r")).toMatch(/columns 132\r\n$/);
    const unknown = await started();
    expect(await unknown.run("cols\r")).toMatch(/columns undefined\r\n$/);
  });

  describe("questions (ConsoleIo.ask)", () => {
    it("resolves with the typed line", async () => {
      const h = await started();
      h.type("confirm\r");
      await h.waitFor('Type "yes" to go on: ');
      expect(await h.run("ye" + KEY.left + "x" + KEY.end + "s\r")).toMatch(/\r\nanswer: "yxes"\r\n$/);
      expect(h.screen.text).toContain('This is serious.\nType "yes" to go on: yxes\nanswer: "yxes"');
    });

    it("Ctrl-C and Ctrl-D cancel it (undefined); the history is not offered", async () => {
      const h = await started();
      await h.run("say yes\r");
      for (const cancel of [KEY.ctrlC, KEY.ctrlD, KEY.up + KEY.ctrlD]) {
        h.type("confirm\r");
        const from = h.mark();
        await h.waitFor("go on: ", from - 1);
        expect(await h.run(cancel)).toMatch(/answer: null\r\n$/);
      }
    });

    it("keys typed before the question do not answer it", async () => {
      const h = await started();
      h.type("confirm\ryes\r");
      await h.waitFor("go on: ");
      expect(await h.run("no\r")).toMatch(/answer: "no"\r\n$/);
    });
  });

  describe("type-ahead while a command runs", () => {
    it("is replayed at the next prompt", async () => {
      let open!: () => void;
      const gate = new Promise<void>((resolve) => (open = resolve));
      const h = await started({ hooks: { gate } });
      h.type("gate\r");
      await h.waitFor("gate closed");
      h.type("say one\rsay tw");
      open();
      await h.waitFor("[one]");
      h.type("o\r");
      await h.waitFor("[two]");
      expect(h.screen.text).toContain("gate open\nsharenode> say one\n[one]\nsharenode> say two\n[two]");
    });

    it("is dropped by Ctrl-C", async () => {
      const h = await started();
      h.type("wait\r");
      await h.waitFor("waiting");
      h.type("say dropped\r" + KEY.ctrlC);
      await h.waitFor("stopped\r\nsharenode> ");
      expect(await h.run("say kept\r")).toMatch(/^say kept\r\n\[kept\]\r\n$/);
      expect(h.raw).not.toContain("dropped");
    });
  });

  describe("long lines", () => {
    it("beyond 1024 characters: one bell, the rest dropped, the line refused with an error and not run", async () => {
      const h = await started();
      const from = h.mark();
      h.type("say " + "x".repeat(5000) + "\r");
      await h.waitFor("error: line too long (max 1024 characters)\r\n", from);
      await h.until(() => h.raw.endsWith("sharenode> "), "the prompt");
      expect(h.screen.bells).toBe(1);
      expect(h.raw.slice(from)).not.toContain("[x");
      expect(h.raw.length - from).toBeLessThan(8 * 1024); // the echo scrolls in steps, not a redraw per key
      expect(await h.run("say short\r")).toMatch(/\[short\]/);
    });

    it("exactly 1024 characters is fine", async () => {
      const h = await started();
      const line = "say " + "y".repeat(1020);
      expect(await h.run(line + "\r")).toContain(`[${"y".repeat(1020)}]`);
    });
  });

  describe("noise", () => {
    it("64 KiB of random bytes: one error line, bounded output, no command run; then the shell works", async () => {
      let now = 0;
      const h = await started({ now: () => now });
      const rand = random(0x5eed);
      const noise = Uint8Array.from({ length: 64 * 1024 }, () => Math.floor(rand() * 256));
      const from = h.mark();
      for (let i = 0; i < noise.length; i += 4096) h.type(noise.subarray(i, i + 4096));
      await h.waitFor("error: noise on the line", from);
      // Still noise until a second of quiet: a clean line now is ignored too.
      h.type("say ignored\r");
      now += 2000;
      expect(await h.run("say ok\r")).toMatch(/\[ok\]\r\n$/);
      const out = h.raw.slice(from);
      expect(out.match(/error: noise/g)).toHaveLength(1);
      expect(out).not.toContain("say ignored");
      expect(out).not.toContain("unknown command");
      expect(out.length).toBeLessThan(2048);
      expect(h.ended).toBeUndefined();
    });

    it("one error line per burst; a burst cancels a question", async () => {
      let now = 0;
      const h = await started({ now: () => now });
      const rand = random(42);
      for (let burst = 0; burst < 5; burst++) {
        const from = h.mark();
        h.type("say half a line");
        h.type(Uint8Array.from({ length: 300 }, () => 0x80 + Math.floor(rand() * 128)));
        await h.waitFor("error: noise", from);
        now += 1500;
      }
      h.type("confirm\r");
      await h.waitFor("go on: ");
      h.type(Uint8Array.from([0x79, 0xff, 0x65, 0x73, 0x0d])); // "y", noise, "es", Enter
      await h.waitFor("answer: null");
      now += 1500;
      expect(await h.run("say alive\r")).toMatch(/\[alive\]/);
      expect(h.raw.match(/error: noise/g)).toHaveLength(6);
    });

    it("NUL and unbound control keys are not noise: they do nothing", async () => {
      const h = await started();
      expect(await h.run("s\x00a\x07y\x12 \x1a\x09x\x1b[99~y\x1bOP\r")).toMatch(/\[xy\]\r\n$/);
    });

    it("a lone ESC is dropped after the escape timeout; the next key counts", async () => {
      const h = await started({ escapeTimeoutMs: 5 });
      h.type("say a\x1b");
      await new Promise((resolve) => setTimeout(resolve, 50)); // the 5 ms timer fires before this 50 ms one
      expect(await h.run("b\r")).toMatch(/\[ab\]\r\n$/);
    });
  });
});
