// Validation: walks ./schema.ts over a parsed file and the environment. Every problem is collected, one line
// each, naming the key path (and the variable, when the value came from the environment).
import { accessSync, constants as fsConstants, statSync } from "node:fs";
import { isAbsolute } from "node:path";
import { keyText, listOf, shown } from "./problem-text.js";
import {
  configSchema,
  MAX_PATH_LENGTH,
  MAX_STRING_LENGTH,
  MAX_URL_LENGTH,
  sectionChecks,
  type Entry,
  type Quota,
  type Schema,
} from "./schema.js";
import { MINUTES_PER_DAY, WEEKDAYS } from "./upload-windows.js";
import { errnoCode, errorLine } from "../util/errors.js";
import { isPlainObject } from "../util/guards.js";

type Outcome = { value: unknown } | { problem: string };

/** Suggestions are worked out for this many unknown keys of one object; the problem list is cut before the rest. */
const SUGGESTED_UNKNOWN_KEYS = 20;

/** Integers beyond this are not exact in a JavaScript number (2^53 - 1). */
const SAFE = Number.MAX_SAFE_INTEGER;

/** The problem with a number that must be an integer from min to max, or undefined when it is one. */
function integerProblem(value: unknown, min: number, max: number, got: string): string | undefined {
  if (typeof value === "number" && Number.isSafeInteger(value) && value >= min && value <= max) return undefined;
  const range = max === SAFE ? `of at least ${min}` : `from ${min} to ${max}`;
  // An integer the file wrote exactly but a number cannot hold (2^60): "must be at least 0" would be nonsense.
  if (typeof value === "number" && Number.isInteger(value) && value > SAFE && max === SAFE) {
    return `must be at most ${SAFE} (2^53-1, the largest safe integer)${got}`;
  }
  return `must be an integer ${range}${got}`;
}

function lengthProblem(value: string, max: number, secret: boolean | undefined): string | undefined {
  if (value.length <= max) return undefined;
  return `must be at most ${max} characters, got ${secret ? "a longer string" : `${value.length}`}`;
}

function check(entry: Entry, value: unknown): Outcome {
  const got = `, got ${shown(value, entry.secret)}`;
  switch (entry.type) {
    case "string": {
      if (typeof value !== "string") return { problem: `${entry.expect ?? "must be a string"}${got}` };
      const long = lengthProblem(value, entry.maxLength ?? MAX_STRING_LENGTH, entry.secret);
      if (long) return { problem: long };
      if (entry.pattern && !entry.pattern.test(value))
        return { problem: `${entry.expect ?? `must match ${entry.pattern}`}${got}` };
      return { value: entry.lowercase ? value.toLowerCase() : value };
    }
    case "path": {
      if (typeof value === "string" && entry.words?.includes(value)) return { value };
      const words = entry.words
        ? ` or ${listOf(
            entry.words.map((w) => JSON.stringify(w)),
            "or",
          )}`
        : "";
      const expect = `must be an absolute path${words}`;
      if (typeof value !== "string") return { problem: `${expect}${got}` };
      const long = lengthProblem(value, MAX_PATH_LENGTH, entry.secret);
      if (long) return { problem: long };
      // The kernel ends a path at NUL; Node refuses one deep inside the daemon with its own message and exit 1.
      if (value.includes("\0")) return { problem: `must not contain a NUL character (\\u0000)${got}` };
      if (!isAbsolute(value)) return { problem: `${expect}${got}` };
      if (entry.readableFile) {
        try {
          if (!statSync(value).isFile()) return { problem: `${JSON.stringify(value)} is not a file` };
          accessSync(value, fsConstants.R_OK);
        } catch (err) {
          return { problem: `cannot read ${JSON.stringify(value)}: ${errnoCode(err) ?? errorLine(err)}` };
        }
      }
      return { value };
    }
    case "url": {
      const expect = `must be a ${listOf(
        entry.schemes.map((s) => `${s}://`),
        "or",
      )} URL`;
      if (typeof value === "string") {
        const long = lengthProblem(value, MAX_URL_LENGTH, entry.secret);
        if (long) return { problem: long };
      }
      let url: URL | undefined;
      try {
        url = typeof value === "string" ? new URL(value) : undefined;
      } catch {
        url = undefined;
      }
      if (!url || !entry.schemes.includes(url.protocol.slice(0, -1)) || url.hostname === "")
        return { problem: `${expect}${got}` };
      // A password in the URL would be shown by config.get and in logs: credentials have their own keys.
      if (url.username !== "" || url.password !== "")
        return { problem: "must not carry credentials: use link.username and link.password" };
      return { value };
    }
    case "integer": {
      const problem = integerProblem(value, entry.min, entry.max, got);
      return problem ? { problem } : { value };
    }
    case "boolean":
      if (typeof value !== "boolean") return { problem: `must be true or false${got}` };
      return { value };
    case "enum":
      if (!entry.values.includes(value as string | number)) {
        return {
          problem: `must be ${entry.values.length > 2 ? "one of " : ""}${listOf(
            entry.values.map((v) => JSON.stringify(v)),
            "or",
          )}${got}`,
        };
      }
      return { value };
    case "quota": {
      const expect = 'must be a number of bytes (at least 1) or a percentage from "1%" to "100%"';
      if (typeof value === "number") {
        if (Number.isInteger(value) && value > SAFE) {
          return { problem: `must be at most ${SAFE} bytes (2^53-1, the largest safe integer)${got}` };
        }
        return Number.isSafeInteger(value) && value >= 1 ? { value: { bytes: value } } : { problem: `${expect}${got}` };
      }
      const pct = typeof value === "string" ? /^(\d{1,3}(?:\.\d+)?)%$/.exec(value.trim()) : null;
      const share = pct ? Number(pct[1]) / 100 : NaN;
      if (!(share >= 0.01 && share <= 1)) return { problem: `${expect}${got}` };
      return { value: { share } };
    }
    case "time": {
      const m = typeof value === "string" ? /^(\d{2}):(\d{2})$/.exec(value) : null;
      const minutes = m ? Number(m[1]) * 60 + Number(m[2]) : NaN;
      if (
        !m ||
        Number(m[2]) > 59 ||
        !(minutes < MINUTES_PER_DAY || (entry.endOfDay === true && minutes === MINUTES_PER_DAY))
      ) {
        return { problem: `must be a time "HH:MM" from "00:00" to "${entry.endOfDay ? "24:00" : "23:59"}"${got}` };
      }
      return { value };
    }
    case "days": {
      const names = listOf(
        WEEKDAYS.map((d) => JSON.stringify(d)),
        "or",
      );
      if (!Array.isArray(value) || value.some((d) => !(WEEKDAYS as readonly unknown[]).includes(d))) {
        return { problem: `must be a list of days, each ${names}${got}` };
      }
      if (value.length === 0) return { problem: "must name at least one day (leave it out for every day)" };
      const twice = value.find((d, i) => value.indexOf(d) !== i);
      if (twice !== undefined) return { problem: `names ${JSON.stringify(twice)} twice` };
      return { value };
    }
    case "list":
    case "section":
      throw new Error("check: sections and lists are walked, not checked");
  }
}

const BOOLEAN_WORDS = new Map([
  ["true", true],
  ["1", true],
  ["false", false],
  ["0", false],
]);

/** An environment variable's text as the JSON value the file would hold; validation then treats both alike. */
function fromEnvText(entry: Entry, text: string): unknown {
  switch (entry.type) {
    case "integer":
      return /^-?\d+$/.test(text.trim()) ? Number(text.trim()) : text;
    case "quota":
      return /^\d+$/.test(text.trim()) ? Number(text.trim()) : text;
    case "boolean":
      return BOOLEAN_WORDS.get(text.trim().toLowerCase()) ?? text;
    case "enum":
      return entry.values.find((v) => String(v) === text.trim()) ?? text;
    default:
      return text;
  }
}

/**
 * A quota as a person types it on a command line or in the environment ("500000000", "25%"), by the same rule
 * as the config's store.quota: the store's quota shape, or the problem in one line.
 */
export function parseQuotaText(text: string): { quota: Quota } | { problem: string } {
  const entry: Entry = { type: "quota", doc: "" };
  const outcome = check(entry, fromEnvText(entry, text));
  return "problem" in outcome ? { problem: outcome.problem } : { quota: outcome.value as Quota };
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return row[b.length]!;
}

/** Edit distance where swapping two neighbouring letters ("ulr" for "url") counts as one edit. */
function typoDistance(a: string, b: string): number {
  let d = editDistance(a, b);
  for (let i = 0; i + 1 < a.length; i++) {
    if (a[i] !== a[i + 1]) d = Math.min(d, 1 + editDistance(a.slice(0, i) + a[i + 1] + a[i] + a.slice(i + 2), b));
  }
  return d;
}

function suggestion(name: string, known: string[]): string {
  // Far longer than any key: no suggestion, and no quadratic work on a 1 MB key.
  if (name.length > 64) return "";
  const lower = name.toLowerCase();
  const best = known
    .map((k) => ({ k, d: k.toLowerCase() === lower ? 0 : typoDistance(lower, k.toLowerCase()) }))
    .sort((x, y) => x.d - y.d)[0];
  return best && best.d <= Math.max(1, Math.floor(name.length / 3)) ? ` (did you mean "${best.k}"?)` : "";
}

/**
 * The value the file gives for a schema key. Own properties only: `in` and plain indexing would also find what
 * every object inherits ("constructor", "toString", ...), and JSON.parse makes "__proto__" an own key.
 */
function own(raw: Record<string, unknown>, name: string): unknown {
  return Object.hasOwn(raw, name) ? raw[name] : undefined;
}

function walk(
  schema: Schema,
  raw: Record<string, unknown>,
  prefix: string,
  env: Record<string, string | undefined>,
  problems: string[],
  fromEnv: string[],
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  let unknown = 0;
  for (const name of Object.keys(raw)) {
    if (Object.hasOwn(schema, name)) continue;
    const hint = unknown++ < SUGGESTED_UNKNOWN_KEYS ? suggestion(name, Object.keys(schema)) : "";
    problems.push(`${prefix}${keyText(name)}: unknown key${hint}`);
  }
  for (const [name, entry] of Object.entries(schema)) {
    const path = prefix + name;
    if (entry.type === "section") {
      const section = own(raw, name) ?? {};
      if (!isPlainObject(section)) {
        problems.push(`${path}: must be an object, got ${shown(section)}`);
        // The lenient reader still gets the section, with its defaults (its keys' problems would repeat this one).
        out[name] = walk(entry.keys, {}, `${path}.`, {}, [], []);
        continue;
      }
      out[name] = walk(entry.keys, section, `${path}.`, env, problems, fromEnv);
      continue;
    }
    if (entry.type === "list") {
      const value = own(raw, name) ?? entry.default;
      if (value === undefined) {
        if (entry.required) problems.push(`${path}: required`);
        continue;
      }
      if (!Array.isArray(value)) {
        problems.push(`${path}: must be a list ([...]), got ${shown(value)}`);
        if (Array.isArray(entry.default)) out[name] = [...(entry.default as unknown[])]; // for the lenient reader
        continue;
      }
      if (value.length > entry.maxItems) {
        problems.push(`${path}: at most ${entry.maxItems} entries, got ${value.length}`);
        if (Array.isArray(entry.default)) out[name] = [...(entry.default as unknown[])];
        continue;
      }
      // An entry with a problem stays in its place as undefined: the checks across entries skip it and keep
      // naming the others by their index in the file.
      out[name] = value.map((item: unknown, i) => {
        const at = `${path}[${i}]`;
        if (!isPlainObject(item)) {
          problems.push(`${at}: must be an object ({...}), got ${shown(item)}`);
          return undefined;
        }
        const before = problems.length;
        const checked = walk(entry.item, item, `${at}.`, {}, problems, []);
        return problems.length === before ? checked : undefined;
      });
      continue;
    }
    const envText =
      entry.env !== undefined && env[entry.env] !== undefined && env[entry.env] !== "" ? env[entry.env]! : undefined;
    const where = envText !== undefined ? `${path} (from ${entry.env})` : path;
    if (envText !== undefined) fromEnv.push(entry.env!);
    const inFile = own(raw, name);
    const value = envText !== undefined ? fromEnvText(entry, envText) : inFile !== undefined ? inFile : entry.default;
    if (value === undefined) {
      if (entry.required) problems.push(`${path}: required${entry.env ? ` (in the file, or set ${entry.env})` : ""}`);
      continue;
    }
    const outcome = check(entry, value);
    if ("problem" in outcome) {
      problems.push(`${where}: ${outcome.problem}`);
      // What a lenient reader (loadConfigLenient: the console) goes on with; loadConfig throws anyway.
      const fallback = entry.default !== undefined ? check(entry, entry.default) : undefined;
      if (fallback && !("problem" in fallback)) out[name] = fallback.value;
    } else out[name] = outcome.value;
  }
  return out;
}

/**
 * Checks a parsed file (`raw`, {} for none) with the environment's overrides against the schema: the config as
 * far as it is valid (defaults in place of wrong values), every problem (uncapped), and the variables used.
 */
export function validateConfig(
  raw: Record<string, unknown>,
  env: Record<string, string | undefined>,
): { config: Record<string, unknown>; problems: string[]; fromEnv: string[] } {
  const problems: string[] = [];
  const fromEnv: string[] = [];
  const config = walk(configSchema, raw, "", env, problems, fromEnv);
  for (const [name, run] of Object.entries(sectionChecks) as [string, (s: unknown, p: string[]) => void][]) {
    if (isPlainObject(config[name])) run(config[name], problems);
  }
  return { config, problems, fromEnv };
}
