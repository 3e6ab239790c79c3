// A strict JSON syntax check that says where the text goes wrong (V8's JSON.parse messages no longer carry a
// position) and which keys appear twice in one object (JSON.parse silently keeps the last: a typo trap). It only
// scans; JSON.parse builds the value once the scan passed.
import { keyText } from "./problem-text.js";

/** Where and why the text is not JSON: `pos` is the index into the text. */
export class JsonSyntaxError extends Error {
  constructor(
    message: string,
    readonly pos: number,
  ) {
    super(message);
    this.name = "JsonSyntaxError";
  }
}

export interface JsonScan {
  error?: JsonSyntaxError;
  /** Keys given twice in one object: the key path (as problem lines name it) and the index of the second one. */
  duplicates: { path: string; pos: number }[];
}

/** Deeper nesting than any config needs; also keeps the recursion far from the stack's limit. */
const MAX_DEPTH = 64;

export function scanJson(text: string): JsonScan {
  const duplicates: JsonScan["duplicates"] = [];
  let i = 0;
  const fail = (message: string, pos = i): never => {
    throw new JsonSyntaxError(message, pos);
  };
  const ch = (): string => {
    if (i >= text.length) return "the end of the file";
    const c = text[i]!;
    return c > " " && c !== "\\" ? `'${c}'` : JSON.stringify(c);
  };
  const ws = () => {
    while (i < text.length && " \t\n\r".includes(text[i]!)) i++;
  };
  const unexpected = (wanted: string): never => {
    if (text[i] === "'") fail("strings need double quotes");
    if (text[i] === "/") fail("JSON has no comments");
    return fail(`expected ${wanted}, got ${ch()}`);
  };
  const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
  const string = (): string => {
    const start = i++;
    for (;;) {
      if (i >= text.length) fail("unterminated string", start);
      const c = text.charCodeAt(i);
      if (c === 0x22) break;
      if (c < 0x20)
        fail(c === 0x0a ? "line break inside a string (missing '\"'?)" : "control character inside a string");
      if (c === 0x5c) {
        const next = text[i + 1] ?? "";
        if (
          next === "u" ? !/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6)) : !'"\\/bfnrt'.includes(next) || next === ""
        ) {
          fail(`bad escape '\\${next}' in a string (a backslash is written '\\\\')`);
        }
        i += next === "u" ? 6 : 2;
        continue;
      }
      i++;
    }
    i++;
    return JSON.parse(text.slice(start, i)) as string;
  };
  const value = (path: string, depth: number): void => {
    if (depth > MAX_DEPTH) fail("nested too deeply");
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      const seen = new Set<string>();
      ws();
      if (text[i] === "}") {
        i++;
        return;
      }
      for (;;) {
        ws();
        if (text[i] === "}") fail("trailing comma before '}'");
        if (text[i] !== '"') unexpected(`a key in double quotes`);
        const keyPos = i;
        const key = string();
        const keyPath = path === "" ? keyText(key) : `${path}.${keyText(key)}`;
        if (seen.has(key)) duplicates.push({ path: keyPath, pos: keyPos });
        seen.add(key);
        ws();
        if (text[i] !== ":") fail(`expected ':' after the key ${quotedKey(key)}, got ${ch()}`);
        i++;
        value(keyPath, depth + 1);
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "}") {
          i++;
          return;
        }
        fail(`expected ',' or '}' after the value of ${quotedKey(key)}, got ${ch()}`);
      }
    }
    if (c === "[") {
      i++;
      ws();
      if (text[i] === "]") {
        i++;
        return;
      }
      for (let n = 0; ; n++) {
        ws();
        if (text[i] === "]") fail("trailing comma before ']'");
        value(`${path}[${n}]`, depth + 1);
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "]") {
          i++;
          return;
        }
        fail(`expected ',' or ']' in a list, got ${ch()}`);
      }
    }
    if (c === '"') {
      string();
      return;
    }
    for (const word of ["true", "false", "null"]) {
      if (text.startsWith(word, i)) {
        i += word.length;
        return;
      }
    }
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(text);
    if (m) {
      i += m[0].length;
      return;
    }
    unexpected("a value");
  };
  try {
    value("", 0);
    ws();
    if (i < text.length) fail(`unexpected ${ch()} after the end of the JSON value`);
    return { duplicates };
  } catch (err) {
    if (err instanceof JsonSyntaxError) return { error: err, duplicates };
    throw err;
  }
}

/** A key in a message, always in double quotes. */
function quotedKey(key: string): string {
  const text = keyText(key);
  return text.startsWith('"') ? text : `"${text}"`;
}

/** "line:column" (both from 1) of an index into `text`. */
export function lineCol(text: string, pos: number): string {
  const before = text.slice(0, pos);
  const line = before.split("\n").length;
  return `${line}:${pos - before.lastIndexOf("\n")}`;
}
