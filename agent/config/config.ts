// The daemon's configuration: one JSON file, checked against the schema (./schema.ts: data, not code), with
// defaults and environment overrides. Every problem is reported at once, one line each, naming the key path (and
// the variable, when the value came from the environment), so a box owner fixes the file in one round trip, not
// five. This file reads the file and offers the API; ./validate.ts checks, ./json-scan.ts finds JSON mistakes.
import { closeSync, constants as fsConstants, fstatSync, openSync, readSync } from "node:fs";
import { lineCol, scanJson } from "./json-scan.js";
import { shown } from "./problem-text.js";
import { configSchema, type Config, type LenientConfig, type Schema } from "./schema.js";
import { validateConfig } from "./validate.js";
import { isPlainObject } from "../util/guards.js";

export { configEnvVars, configKeys, configSchema } from "./schema.js";
export type { Config, Entry, LenientConfig, LogLevel, Quota, UploadWindow } from "./schema.js";
export { parseQuotaText } from "./validate.js";

/** A config file is a few hundred bytes; past this it is a mistake (or /dev/zero), not a config. */
export const MAX_CONFIG_BYTES = 1024 * 1024;
/** Problem lines shown; the rest are counted ("... and 199980 more problems"). */
export const MAX_PROBLEMS = 20;

/** The first MAX_PROBLEMS lines, and one that counts the rest. */
function capped(problems: string[]): string[] {
  if (problems.length <= MAX_PROBLEMS) return problems;
  const more = problems.length - MAX_PROBLEMS;
  return [...problems.slice(0, MAX_PROBLEMS), `... and ${more} more problem${more === 1 ? "" : "s"}`];
}

/**
 * A configuration that cannot be used; `problems` has one line per mistake (at most MAX_PROBLEMS of them, then a
 * line counting the rest), `message` joins them on one line.
 */
export class ConfigError extends Error {
  readonly problems: string[];
  constructor(
    problems: string[],
    readonly file?: string,
  ) {
    const lines = capped(problems);
    const n = problems.length;
    super(`config${file ? ` ${file}` : ""}: ${n} problem${n === 1 ? "" : "s"}: ${lines.join("; ")}`);
    this.problems = lines;
    this.name = "ConfigError";
  }
}

// --- the file ------------------------------------------------------------------------------------------------

const FILE_KINDS: [string, (s: ReturnType<typeof fstatSync>) => boolean][] = [
  ["a directory", (s) => s.isDirectory()],
  ["a character device", (s) => s.isCharacterDevice()],
  ["a block device", (s) => s.isBlockDevice()],
  ["a FIFO", (s) => s.isFIFO()],
  ["a socket", (s) => s.isSocket()],
];

/**
 * The file's text, or why it cannot be a config: only a regular file, of at most MAX_CONFIG_BYTES (`run --config
 * /dev/zero` would otherwise read until memory runs out). Opened non-blocking so a FIFO is refused, not waited on.
 */
function readConfigText(path: string): { text: string } | { problem: string } {
  const cannot = (why: string) => ({ problem: `cannot read config file ${path}: ${why}` });
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why =
      e.code === "ENOENT" ? "no such file" : e.code === "EACCES" ? "permission denied" : (e.code ?? e.message);
    return cannot(why);
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) {
      const kind = FILE_KINDS.find(([, is]) => is(stat))?.[0];
      return cannot(kind === "a directory" ? "is a directory" : `not a regular file (${kind ?? "unknown kind"})`);
    }
    const tooBig = () => cannot(`larger than ${MAX_CONFIG_BYTES} bytes (1 MiB): a config file is a few hundred bytes`);
    if (stat.size > MAX_CONFIG_BYTES) return tooBig();
    // Read to the end rather than trusting the size (a file that grows, a /proc file that says 0), up to the limit.
    const chunks: Buffer[] = [];
    let length = 0;
    for (;;) {
      const chunk = Buffer.allocUnsafe(64 * 1024);
      const n = readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) break;
      chunks.push(chunk.subarray(0, n));
      length += n;
      if (length > MAX_CONFIG_BYTES) return tooBig();
    }
    return { text: Buffer.concat(chunks, length).toString("utf8") };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return cannot(e.code === "EISDIR" ? "is a directory" : (e.code ?? e.message));
  } finally {
    closeSync(fd);
  }
}

function readJsonFile(path: string): { value?: unknown; problems: string[] } {
  const read = readConfigText(path);
  if ("problem" in read) return { problems: [read.problem] };
  let text = read.text;
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1); // a BOM that Windows editors add
  if (text.trim() === "") return { problems: [`${path}: empty file (a config file holds a JSON object: {...})`] };
  const scan = scanJson(text);
  if (scan.error)
    return { problems: [`${path}:${lineCol(text, scan.error.pos)}: not valid JSON: ${scan.error.message}`] };
  return {
    value: JSON.parse(text) as unknown,
    problems: scan.duplicates.map(
      (d) => `${d.path}: given twice (again at ${path}:${lineCol(text, d.pos)}); remove one`,
    ),
  };
}

// --- API -----------------------------------------------------------------------------------------------------

export interface LoadedConfig {
  config: Config;
  /** The environment variables that overrode the file, in schema order. */
  fromEnv: string[];
}

/**
 * Reads `path` (undefined: no file, only defaults and the environment), applies the environment overrides
 * (a set, non-empty variable wins over the file), and validates the result. Throws ConfigError listing every
 * problem; never anything else for a bad file.
 */
export function loadConfig(path: string | undefined, env: Record<string, string | undefined>): LoadedConfig {
  const problems: string[] = [];
  let raw: Record<string, unknown> = {};
  if (path !== undefined) {
    const read = readJsonFile(path);
    problems.push(...read.problems);
    if (read.value === undefined) throw new ConfigError(problems, path);
    if (!isPlainObject(read.value))
      throw new ConfigError([`${path}: must hold a JSON object ({...}), got ${shown(read.value)}`], path);
    raw = read.value;
  }
  const checked = validateConfig(raw, env);
  problems.push(...checked.problems);
  if (problems.length > 0) throw new ConfigError(problems, path);
  // No problem: every key passed its rule, so the walk's output has the shape the schema's type says.
  return { config: checked.config as Config, fromEnv: checked.fromEnv };
}

/**
 * For readers that must go on with a broken config (the diagnostics console on a box whose config is the
 * problem): never throws for the config's content, returns what could be read, with defaults in place of wrong
 * values, and every problem loadConfig would report (an unreadable or malformed file counts as an empty one).
 */
export function loadConfigLenient(
  path: string | undefined,
  env: Record<string, string | undefined>,
): { config: LenientConfig; problems: string[] } {
  const problems: string[] = [];
  let raw: Record<string, unknown> = {};
  if (path !== undefined) {
    const read = readJsonFile(path);
    problems.push(...read.problems);
    if (isPlainObject(read.value)) raw = read.value;
    else if (read.value !== undefined)
      problems.push(`${path}: must hold a JSON object ({...}), got ${shown(read.value)}`);
  }
  const checked = validateConfig(raw, env);
  problems.push(...checked.problems);
  return { config: checked.config as LenientConfig, problems: capped(problems) };
}

/** A copy of `config` fit to show (config.get, logs): secrets (the MQTT password, the client key's path) are "<redacted>". */
export function redactConfig(config: Config): Config {
  const copy = structuredClone(config);
  const redact = (schema: Schema, obj: Record<string, unknown>) => {
    for (const [name, entry] of Object.entries(schema)) {
      if (entry.type === "section" && isPlainObject(obj[name])) redact(entry.keys, obj[name]);
      else if (entry.secret && obj[name] !== undefined) obj[name] = "<redacted>";
    }
  };
  redact(configSchema, copy);
  return copy;
}
