// The console's keyboard: bytes from a serial line or a pty become keys (KeyDecoder), keys edit one line and say
// what to write to the terminal to show it (LineEditor). Both are pure (no streams, no timers, no TTY detection),
// so a serial cable and a pty behave the same; shell.ts drives them.

/** Every key the editor acts on; a typed character is `{ char }`. Unbound keys never become a Key. */
export type KeyName =
  | "enter"
  | "backspace"
  | "delete"
  | "left"
  | "right"
  | "word-left"
  | "word-right"
  | "home"
  | "end"
  | "up"
  | "down"
  | "interrupt" // Ctrl-C
  | "eof" // Ctrl-D
  | "kill-before" // Ctrl-U
  | "kill-after" // Ctrl-K
  | "kill-word" // Ctrl-W, Alt-Backspace
  | "clear" // Ctrl-L
  /** Bytes no keyboard sends: invalid UTF-8, C1 controls, a malformed escape sequence. */
  | "noise";
export type Key = KeyName | { char: string };

const CONTROL_KEYS: Partial<Record<number, KeyName>> = {
  0x01: "home", // Ctrl-A
  0x02: "left", // Ctrl-B
  0x03: "interrupt",
  0x04: "eof",
  0x05: "end", // Ctrl-E
  0x06: "right", // Ctrl-F
  0x08: "backspace", // Ctrl-H, what some serial terminals send for Backspace
  0x0b: "kill-after",
  0x0c: "clear",
  0x0e: "down", // Ctrl-N
  0x10: "up", // Ctrl-P
  0x15: "kill-before",
  0x17: "kill-word",
  0x7f: "backspace",
};

/** Longest CSI parameter string kept; anything longer is noise, so the decoder's state stays bounded. */
const MAX_SEQUENCE = 16;

/**
 * Bytes to keys. Holds at most one partial UTF-8 character or one escape sequence between calls; when input
 * stops inside one (`pending`), the shell calls `flush()` after a short quiet time: a lone ESC is then no key.
 * CR, LF and CRLF are each one Enter, even when CR and LF arrive in different chunks. NUL (a terminal's padding)
 * and unbound control keys (Tab, Ctrl-R, XON/XOFF, ...) are dropped.
 */
export class KeyDecoder {
  private state: "ground" | "esc" | "csi" | "ss3" = "ground";
  private sequence = "";
  private afterCr = false;
  private need = 0;
  private codePoint = 0;
  private min = 0;

  get pending(): boolean {
    return this.state !== "ground" || this.need > 0;
  }

  feed(bytes: Uint8Array, keys: Key[] = []): Key[] {
    for (const b of bytes) this.byte(b, keys);
    return keys;
  }

  /** Input went quiet inside a sequence: a lone ESC or a cut-off sequence is dropped, a cut-off character is noise. */
  flush(keys: Key[] = []): Key[] {
    if (this.need > 0) keys.push("noise");
    this.need = 0;
    this.state = "ground";
    return keys;
  }

  private byte(b: number, keys: Key[]): void {
    const afterCr = this.afterCr;
    this.afterCr = false;
    if (this.need > 0) {
      if ((b & 0xc0) === 0x80) {
        this.codePoint = (this.codePoint << 6) | (b & 0x3f);
        if (--this.need === 0) this.character(this.codePoint, keys);
        return;
      }
      this.need = 0;
      keys.push("noise"); // a multi-byte character cut short; `b` starts something new
    }
    switch (this.state) {
      case "ground":
        return this.ground(b, afterCr, keys);
      case "esc":
        this.state = "ground";
        if (b === 0x5b) {
          this.state = "csi";
          this.sequence = "";
        } else if (b === 0x4f) this.state = "ss3";
        else if (b === 0x1b)
          this.state = "esc"; // ESC ESC: the first one was alone
        else if (b === 0x7f || b === 0x08)
          keys.push("kill-word"); // Alt-Backspace
        else if (b === 0x62)
          keys.push("word-left"); // Alt-b
        else if (b === 0x66)
          keys.push("word-right"); // Alt-f
        else if (b < 0x20 || b > 0x7e) this.ground(b, afterCr, keys); // a lone ESC, then a key
        // else: another Alt-key, unbound
        return;
      case "csi":
        if (b >= 0x20 && b <= 0x3f) {
          this.sequence += String.fromCharCode(b);
          if (this.sequence.length > MAX_SEQUENCE) {
            this.state = "ground";
            keys.push("noise");
          }
          return;
        }
        this.state = "ground";
        if (b >= 0x40 && b <= 0x7e) return this.csi(this.sequence, String.fromCharCode(b), keys);
        keys.push("noise"); // a sequence broken by a control or a non-ASCII byte
        return this.ground(b, afterCr, keys);
      case "ss3":
        this.state = "ground";
        if (b >= 0x40 && b <= 0x7e) return this.csi("", String.fromCharCode(b), keys);
        return this.ground(b, afterCr, keys);
    }
  }

  private ground(b: number, afterCr: boolean, keys: Key[]): void {
    if (b >= 0x20 && b < 0x7f) keys.push({ char: String.fromCharCode(b) });
    else if (b === 0x0d) {
      this.afterCr = true;
      keys.push("enter");
    } else if (b === 0x0a) {
      if (!afterCr) keys.push("enter");
    } else if (b === 0x1b) this.state = "esc";
    else if (b < 0x80) {
      const key = CONTROL_KEYS[b];
      if (key) keys.push(key);
    } else if (b >= 0xc2 && b <= 0xdf) this.start(1, b & 0x1f, 0x80);
    else if (b >= 0xe0 && b <= 0xef) this.start(2, b & 0x0f, 0x800);
    else if (b >= 0xf0 && b <= 0xf4) this.start(3, b & 0x07, 0x10000);
    else keys.push("noise"); // a continuation byte out of place, 0xc0, 0xc1, 0xf5..0xff
  }

  private start(need: number, bits: number, min: number): void {
    this.need = need;
    this.codePoint = bits;
    this.min = min;
  }

  private character(cp: number, keys: Key[]): void {
    const invalid = cp < this.min || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff;
    // C1 controls (U+0080..U+009F) would be terminal commands if echoed; no keyboard types them.
    if (invalid || cp <= 0x9f) keys.push("noise");
    else keys.push({ char: String.fromCodePoint(cp) });
  }

  private csi(params: string, final: string, keys: Key[]): void {
    // xterm modifiers: ESC [ 1 ; 5 C is Ctrl-Right, ; 3 is Alt; both move by words.
    const modifier = Number(params.split(";")[1] ?? "1");
    const word = modifier >= 3;
    switch (final) {
      case "A":
        return void keys.push("up");
      case "B":
        return void keys.push("down");
      case "C":
        return void keys.push(word ? "word-right" : "right");
      case "D":
        return void keys.push(word ? "word-left" : "left");
      case "H":
        return void keys.push("home");
      case "F":
        return void keys.push("end");
      case "~": {
        // vt220 editing keys; 7 and 8 are rxvt's Home and End.
        const key = ({ "1": "home", "7": "home", "4": "end", "8": "end", "3": "delete" } as const)[
          params.split(";")[0]
        ];
        if (key) keys.push(key);
        return;
      }
      // Anything else (F-keys, focus reports, cursor position reports) is no editing key.
    }
  }
}

/** Accepted lines, oldest first: bounded, no empty lines, no line twice in a row. */
export class History {
  private readonly lines: string[] = [];

  constructor(readonly max = 100) {}

  get length(): number {
    return this.lines.length;
  }

  at(index: number): string | undefined {
    return this.lines[index];
  }

  add(line: string): void {
    if (line.trim() === "" || this.lines[this.lines.length - 1] === line) return;
    this.lines.push(line);
    if (this.lines.length > this.max) this.lines.shift();
  }
}

/** How an edited line ended. */
export type EditResult =
  | { kind: "line"; text: string }
  | { kind: "interrupt" } // Ctrl-C
  | { kind: "eof" } // Ctrl-D on an empty line
  | { kind: "too-long" }; // Enter after characters beyond the limit were dropped

export interface LineEditorOptions {
  /** The last line of the prompt: what a redraw reprints. Printable text only. */
  prompt: string;
  /** Characters (code points) at most; more are dropped with one bell and the line ends as "too-long". */
  maxLength: number;
  /** Terminal width; a longer line scrolls sideways so the terminal never wraps it. */
  columns: number;
  /** Up/Down walk this history; without it they do nothing (answers to questions). */
  history?: History;
}

const ERASE_TO_END = "\x1b[K";

/**
 * One line being edited, shown on one terminal row. `handle(key)` returns the bytes that update the row: one
 * character for typing at the end, "\b" for Left; anything else redraws the row (CR, prompt, the visible part of
 * the line, erase to the end, cursor back), which is a few dozen bytes: cheap even at 9600 baud. Each code
 * point counts as one column (a serial console shows ASCII).
 */
export class LineEditor {
  private chars: string[] = [];
  private pos = 0;
  /** First visible character when the line is wider than the terminal. */
  private offset = 0;
  private tooLong = false;
  private historyIndex: number;
  private draft: string[] = [];

  constructor(private readonly options: LineEditorOptions) {
    this.historyIndex = options.history?.length ?? 0;
  }

  get text(): string {
    return this.chars.join("");
  }

  handle(key: Key): { output: string; result?: EditResult } {
    if (typeof key !== "string") return { output: this.insert(key.char) };
    const len = this.chars.length;
    switch (key) {
      case "enter":
        return { output: "\r\n", result: this.tooLong ? { kind: "too-long" } : { kind: "line", text: this.text } };
      case "interrupt":
        return { output: "^C\r\n", result: { kind: "interrupt" } };
      case "eof":
        if (len === 0) return { output: "\r\n", result: { kind: "eof" } };
        return { output: this.pos < len ? this.splice(this.pos, this.pos + 1, this.pos) : "" };
      case "backspace":
        if (this.pos === 0) return { output: "" };
        if (this.pos === len) {
          this.chars.pop();
          this.pos--;
          if (this.chars.length === 0) this.tooLong = false;
          return { output: this.layout() ? this.redraw() : "\b \b" };
        }
        return { output: this.splice(this.pos - 1, this.pos, this.pos - 1) };
      case "delete":
        return { output: this.pos < len ? this.splice(this.pos, this.pos + 1, this.pos) : "" };
      case "left":
        if (this.pos === 0) return { output: "" };
        this.pos--;
        return { output: this.layout() ? this.redraw() : "\b" };
      case "right":
        if (this.pos === len) return { output: "" };
        this.pos++;
        return { output: this.layout() ? this.redraw() : this.chars[this.pos - 1] };
      case "home":
        return { output: this.moveTo(0) };
      case "end":
        return { output: this.moveTo(len) };
      case "word-left":
        return { output: this.moveTo(this.wordStart()) };
      case "word-right": {
        let p = this.pos;
        while (p < len && this.chars[p] === " ") p++;
        while (p < len && this.chars[p] !== " ") p++;
        return { output: this.moveTo(p) };
      }
      case "kill-before":
        return { output: this.pos === 0 ? "" : this.splice(0, this.pos, 0) };
      case "kill-after":
        return { output: this.pos === len ? "" : this.splice(this.pos, len, this.pos) };
      case "kill-word": {
        const start = this.wordStart();
        return { output: start === this.pos ? "" : this.splice(start, this.pos, start) };
      }
      case "clear":
        return { output: "\x1b[H\x1b[2J" + this.redraw() };
      case "up":
      case "down":
        return { output: this.recall(key === "up" ? -1 : 1) };
      case "noise":
        return { output: "" }; // the shell handles noise before the editor sees it
    }
  }

  /** The whole row, for the first draw and after anything else wrote over it. */
  redraw(): string {
    this.layout();
    const width = this.width();
    const visible = this.chars.slice(this.offset, this.offset + width);
    const back = visible.length - (this.pos - this.offset);
    return `\r${this.options.prompt}${visible.join("")}${ERASE_TO_END}${back > 0 ? `\x1b[${back}D` : ""}`;
  }

  private insert(char: string): string {
    if (this.chars.length >= this.options.maxLength) {
      if (this.tooLong) return "";
      this.tooLong = true;
      return "\x07";
    }
    const atEnd = this.pos === this.chars.length;
    this.chars.splice(this.pos, 0, char);
    this.pos++;
    return atEnd && !this.layout() ? char : this.redraw();
  }

  /** Removes chars [from, to), puts the cursor at `cursor`, redraws. */
  private splice(from: number, to: number, cursor: number): string {
    this.chars.splice(from, to - from);
    this.pos = cursor;
    if (this.chars.length === 0) this.tooLong = false;
    return this.redraw();
  }

  private moveTo(pos: number): string {
    const delta = pos - this.pos;
    if (delta === 0) return "";
    this.pos = pos;
    if (this.layout()) return this.redraw();
    return delta === -1 ? "\b" : delta > 0 ? `\x1b[${delta}C` : `\x1b[${-delta}D`;
  }

  private wordStart(): number {
    let p = this.pos;
    while (p > 0 && this.chars[p - 1] === " ") p--;
    while (p > 0 && this.chars[p - 1] !== " ") p--;
    return p;
  }

  private recall(step: -1 | 1): string {
    const history = this.options.history;
    if (!history) return "";
    const next = this.historyIndex + step;
    if (next < 0 || next > history.length) return "";
    if (this.historyIndex === history.length) this.draft = this.chars;
    this.historyIndex = next;
    this.chars = next === history.length ? this.draft : Array.from(history.at(next) ?? "");
    this.pos = this.chars.length;
    this.tooLong = false;
    return this.redraw();
  }

  /** Columns left for the line after the prompt; the last column stays empty so the terminal never wraps. */
  private width(): number {
    return Math.max(8, this.options.columns - this.options.prompt.length - 1);
  }

  /** Scrolls so the cursor is visible; true when the visible part moved (the row must be redrawn). */
  private layout(): boolean {
    const width = this.width();
    const before = this.offset;
    if (this.chars.length <= width) this.offset = 0;
    if (this.pos < this.offset) this.offset = Math.max(0, this.pos - Math.floor(width / 4));
    else if (this.pos - this.offset > width) this.offset = this.pos - width + Math.floor(width / 4);
    return this.offset !== before;
  }
}
