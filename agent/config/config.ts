// The daemon's configuration: one JSON file, checked against the schema below (data, not code), with defaults and
// environment overrides. Every problem is reported at once, one line each, naming the key path (and the variable,
// when the value came from the environment), so a box owner fixes the file in one round trip, not five.
import { accessSync, constants as fsConstants, readFileSync, statSync } from "node:fs";
import { isAbsolute } from "node:path";

export type LogLevel = "error" | "warn" | "info" | "debug";

export const WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] as const;
export type Weekday = (typeof WEEKDAYS)[number];

/** A time of the week (box's local time) with its own upload rate. */
export interface UploadWindow {
  /** "HH:MM", 24-hour, local time; the window starts at the start of that minute. */
  from: string;
  /** "HH:MM" (or "24:00"); the window ends at the start of that minute. Before `from`: the window crosses midnight. */
  to: string;
  /** Upload rate inside the window; 0: no limit. */
  bytesPerSecond: number;
  /** The days the window starts on; absent: every day. */
  days?: Weekday[];
}

export interface Config {
  /** The agent's own state on the system disk: device key, adoption record, outbox, session counter. */
  stateDir: string;
  /** Board profile name, or "auto" to detect it. */
  board: string;
  link: {
    url: string;
    protocolVersion: 5 | 4;
    username?: string;
    password?: string;
    /** PEM files (absolute paths) for mqtts:// and wss://. */
    ca?: string;
    cert?: string;
    key?: string;
    keepaliveSeconds: number;
    /** The fleet's Ed25519 public key, 64 lowercase hex digits: verifies commands. */
    fleetPublicKey: string;
    telemetryIntervalSeconds: number;
    outboxMaxBytes: number;
  };
  store: {
    dataDir: string;
    /** The shape agent/store's StoreConfig takes: bytes, or a share (0..1] of the space the store could have. */
    quota: { bytes: number } | { share: number };
    /** Free space never used; absent: the store's default (5% of the filesystem, at most 1 GiB). */
    reserveBytes?: number;
    allowSystemDisk: boolean;
    /** Background scrub read rate; 0 turns the scrub off. */
    scrubBytesPerSecond: number;
  };
  /** What the owner shares of the box besides the disk (whose share is store.quota). */
  share: {
    /** Percent of the whole box (all cores together) that compute may use, 1..100. */
    cpuPercent: number;
    /** Serving upload rate outside every window, bytes per second; 0: no limit. */
    uploadBytesPerSecond: number;
    uploadWindows: UploadWindow[];
  };
  log: { level: LogLevel };
}

/** A configuration that cannot be used; `problems` has one line per mistake, `message` joins them on one line. */
export class ConfigError extends Error {
  constructor(
    readonly problems: string[],
    readonly file?: string,
  ) {
    const n = problems.length;
    super(`config${file ? ` ${file}` : ""}: ${n} problem${n === 1 ? "" : "s"}: ${problems.join("; ")}`);
    this.name = "ConfigError";
  }
}

// --- the schema ----------------------------------------------------------------------------------------------

type Rule =
  | { type: "string"; pattern?: RegExp; expect?: string; lowercase?: boolean }
  | { type: "path"; readableFile?: boolean }
  | { type: "url"; schemes: readonly string[] }
  | { type: "integer"; min: number; max: number }
  | { type: "boolean" }
  | { type: "enum"; values: readonly (string | number)[] }
  | { type: "quota" }
  /** "HH:MM", 24-hour; `endOfDay` also takes "24:00". */
  | { type: "time"; endOfDay?: boolean }
  /** A non-empty list of distinct day names ("mon".."sun"). */
  | { type: "days" }
  /** A list of objects, each walked like a section (unknown keys, required keys, every problem with its index). */
  | { type: "list"; item: Record<string, Entry>; maxItems: number }
  | { type: "section"; keys: Record<string, Entry> };

export type Entry = Rule & {
  doc: string;
  /** Used when neither the file nor the environment gives a value. */
  default?: unknown;
  /** Absent from file, environment and defaults is a problem. */
  required?: boolean;
  /** Shown as "<redacted>" by redactConfig, never echoed in a problem. */
  secret?: boolean;
  /** The environment variable that overrides the file. */
  env?: string;
};

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const MAX_BYTES = Number.MAX_SAFE_INTEGER;
/** 10 GB/s: more than any box's port carries, small enough that a typo of extra digits is caught. */
const MAX_RATE = 10_000_000_000;

export const configSchema: Record<string, Entry> = {
  stateDir: {
    type: "path",
    default: "/var/lib/sharenode",
    env: "SHARENODE_STATE",
    doc: "the agent's own state on the system disk: device key, adopted-disk record, outbox, session counter",
  },
  board: {
    type: "string",
    pattern: /^(auto|[a-z0-9][a-z0-9-]{0,31})$/,
    expect: 'must be "auto" or a board name (lowercase letters, digits and "-")',
    default: "auto",
    env: "SHARENODE_BOARD",
    doc: 'board profile (LEDs, console, quirks); "auto" detects it',
  },
  link: {
    type: "section",
    doc: "the MQTT connection",
    keys: {
      url: {
        type: "url",
        schemes: ["mqtt", "mqtts", "ws", "wss"],
        required: true,
        env: "SHARENODE_BROKER",
        doc: "the broker: mqtt://host:1883, mqtts://host:8883, ws://host/path or wss://host/path",
      },
      protocolVersion: { type: "enum", values: [5, 4], default: 5, env: "SHARENODE_MQTT_VERSION", doc: "MQTT 5, or 4 for MQTT 3.1.1 brokers" },
      username: { type: "string", env: "SHARENODE_MQTT_USERNAME", doc: "MQTT user name" },
      password: { type: "string", secret: true, env: "SHARENODE_MQTT_PASSWORD", doc: "MQTT password" },
      ca: { type: "path", readableFile: true, doc: "PEM file of the CA that signed the broker's certificate (mqtts/wss)" },
      cert: { type: "path", readableFile: true, doc: "PEM client certificate (mqtts/wss), with key" },
      key: { type: "path", readableFile: true, secret: true, doc: "PEM private key of the client certificate" },
      keepaliveSeconds: { type: "integer", min: 5, max: 65535, default: 60, doc: "MQTT keepalive" },
      fleetPublicKey: {
        type: "string",
        pattern: /^[0-9a-fA-F]{64}$/,
        expect: "must be 64 hex digits (the fleet's Ed25519 public key)",
        lowercase: true, // keys are compared as text elsewhere: one spelling
        required: true,
        env: "SHARENODE_FLEET_KEY",
        doc: "the fleet's Ed25519 public key: only commands it signed are obeyed",
      },
      telemetryIntervalSeconds: { type: "integer", min: 1, max: 86400, default: 60, env: "SHARENODE_TELEMETRY_INTERVAL", doc: "seconds between telemetry messages" },
      outboxMaxBytes: {
        type: "integer",
        min: MiB / 4,
        max: GiB,
        default: 8 * MiB,
        doc: "most bytes the durable outbox may take in stateDir; when full, old telemetry goes first",
      },
    },
  },
  store: {
    type: "section",
    doc: "the object store on the data disk",
    keys: {
      dataDir: { type: "path", required: true, env: "SHARENODE_DATA", doc: "the data directory on the data disk" },
      quota: {
        type: "quota",
        default: "100%",
        env: "SHARENODE_QUOTA",
        doc: 'most the store may use: bytes, or "NN%" of the space it could have',
      },
      reserveBytes: {
        type: "integer",
        min: 0,
        max: MAX_BYTES,
        doc: "free space on the disk the store never uses (absent: 5% of the filesystem, at most 1 GiB)",
      },
      allowSystemDisk: {
        type: "boolean",
        default: false,
        env: "SHARENODE_ALLOW_SYSTEM_DISK",
        doc: "allow the root filesystem, eMMC/SD or tmpfs as the data disk",
      },
      scrubBytesPerSecond: {
        type: "integer",
        min: 0,
        max: GiB,
        default: 2_000_000,
        doc: "background scrub read rate in bytes per second; 0 turns it off",
      },
    },
  },
  share: {
    type: "section",
    doc: "what the owner shares of the box besides the disk (the disk's share is store.quota)",
    keys: {
      cpuPercent: {
        type: "integer",
        min: 1,
        max: 100,
        default: 50,
        env: "SHARENODE_CPU_SHARE",
        doc: "percent of the whole box (all cores together) that compute may use",
      },
      uploadBytesPerSecond: {
        type: "integer",
        min: 0,
        max: MAX_RATE,
        default: 0,
        env: "SHARENODE_UPLOAD_RATE",
        doc: "serving upload rate outside the upload windows, bytes per second; 0: no limit",
      },
      uploadWindows: {
        type: "list",
        maxItems: 64,
        default: [],
        doc: 'times of the week (the box\'s local time) with their own upload rate: [{"from": "01:00", "to": "07:00", "bytesPerSecond": 5000000, "days": ["mon"]}]',
        item: {
          from: { type: "time", required: true, doc: '"HH:MM", local time: the window starts at the start of that minute' },
          to: {
            type: "time",
            endOfDay: true,
            required: true,
            doc: '"HH:MM" or "24:00": the window ends at the start of that minute; earlier than "from": it crosses midnight',
          },
          bytesPerSecond: { type: "integer", min: 0, max: MAX_RATE, required: true, doc: "upload rate inside the window; 0: no limit" },
          days: { type: "days", doc: 'the days the window starts on ("mon".."sun"); absent: every day' },
        },
      },
    },
  },
  log: {
    type: "section",
    doc: "logging",
    keys: {
      level: { type: "enum", values: ["error", "warn", "info", "debug"], default: "info", env: "SHARENODE_LOG_LEVEL", doc: "least severe level logged" },
    },
  },
};

/** Every key path of the schema ("link.url", ...), sections included, in schema order. */
export function configKeys(schema: Record<string, Entry> = configSchema, prefix = ""): string[] {
  const keys: string[] = [];
  for (const [name, entry] of Object.entries(schema)) {
    keys.push(prefix + name);
    if (entry.type === "section") keys.push(...configKeys(entry.keys, `${prefix}${name}.`));
  }
  return keys;
}

/** Environment variable -> the key path it overrides. */
export function configEnvVars(schema: Record<string, Entry> = configSchema, prefix = ""): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const [name, entry] of Object.entries(schema)) {
    if (entry.type === "section") Object.assign(vars, configEnvVars(entry.keys, `${prefix}${name}.`));
    else if (entry.env) vars[entry.env] = prefix + name;
  }
  return vars;
}

// --- validation ----------------------------------------------------------------------------------------------

type Outcome = { value: unknown } | { problem: string };

function shown(value: unknown, secret = false): string {
  if (secret) return typeof value === "string" ? "a string" : value === null ? "null" : Array.isArray(value) ? "an array" : typeof value;
  if (value === undefined) return "nothing";
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 60 ? text.slice(0, 57) + "..." : text;
}

function listOf(items: readonly string[], last: string): string {
  return items.length <= 1 ? items.join("") : `${items.slice(0, -1).join(", ")} ${last} ${items[items.length - 1]}`;
}

function check(entry: Entry, value: unknown): Outcome {
  const got = `, got ${shown(value, entry.secret)}`;
  switch (entry.type) {
    case "string":
      if (typeof value !== "string") return { problem: `${entry.expect ?? "must be a string"}${got}` };
      if (entry.pattern && !entry.pattern.test(value)) return { problem: `${entry.expect ?? `must match ${entry.pattern}`}${got}` };
      return { value: entry.lowercase ? value.toLowerCase() : value };
    case "path": {
      if (typeof value !== "string" || !isAbsolute(value)) return { problem: `must be an absolute path${got}` };
      if (entry.readableFile) {
        try {
          if (!statSync(value).isFile()) return { problem: `${JSON.stringify(value)} is not a file` };
          accessSync(value, fsConstants.R_OK);
        } catch (err) {
          return { problem: `cannot read ${JSON.stringify(value)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` };
        }
      }
      return { value };
    }
    case "url": {
      const expect = `must be a ${listOf(entry.schemes.map((s) => `${s}://`), "or")} URL`;
      let url: URL | undefined;
      try {
        url = typeof value === "string" ? new URL(value) : undefined;
      } catch {
        url = undefined;
      }
      if (!url || !entry.schemes.includes(url.protocol.slice(0, -1)) || url.hostname === "") return { problem: `${expect}${got}` };
      // A password in the URL would be shown by config.get and in logs: credentials have their own keys.
      if (url.username !== "" || url.password !== "") return { problem: "must not carry credentials: use link.username and link.password" };
      return { value };
    }
    case "integer":
      if (typeof value !== "number" || !Number.isSafeInteger(value) || value < entry.min || value > entry.max) {
        const range = entry.max === MAX_BYTES ? `of at least ${entry.min}` : `from ${entry.min} to ${entry.max}`;
        return { problem: `must be an integer ${range}${got}` };
      }
      return { value };
    case "boolean":
      if (typeof value !== "boolean") return { problem: `must be true or false${got}` };
      return { value };
    case "enum":
      if (!entry.values.includes(value as string | number)) {
        return { problem: `must be ${entry.values.length > 2 ? "one of " : ""}${listOf(entry.values.map((v) => JSON.stringify(v)), "or")}${got}` };
      }
      return { value };
    case "quota": {
      const expect = 'must be a number of bytes (at least 1) or a percentage from "1%" to "100%"';
      if (typeof value === "number") return Number.isSafeInteger(value) && value >= 1 ? { value: { bytes: value } } : { problem: `${expect}${got}` };
      const pct = typeof value === "string" ? /^(\d{1,3}(?:\.\d+)?)%$/.exec(value.trim()) : null;
      const share = pct ? Number(pct[1]) / 100 : NaN;
      if (!(share >= 0.01 && share <= 1)) return { problem: `${expect}${got}` };
      return { value: { share } };
    }
    case "time": {
      const m = typeof value === "string" ? /^(\d{2}):(\d{2})$/.exec(value) : null;
      const minutes = m ? Number(m[1]) * 60 + Number(m[2]) : NaN;
      if (!m || Number(m[2]) > 59 || !(minutes < MINUTES_PER_DAY || (entry.endOfDay === true && minutes === MINUTES_PER_DAY))) {
        return { problem: `must be a time "HH:MM" from "00:00" to "${entry.endOfDay ? "24:00" : "23:59"}"${got}` };
      }
      return { value };
    }
    case "days": {
      const names = listOf(WEEKDAYS.map((d) => JSON.stringify(d)), "or");
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

/** An environment variable's text as the JSON value the file would hold; validation then treats both alike. */
function fromEnvText(entry: Entry, text: string): unknown {
  switch (entry.type) {
    case "integer":
      return /^-?\d+$/.test(text.trim()) ? Number(text.trim()) : text;
    case "quota":
      return /^\d+$/.test(text.trim()) ? Number(text.trim()) : text;
    case "boolean":
      return { true: true, "1": true, false: false, "0": false }[text.trim().toLowerCase()] ?? text;
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
export function parseQuotaText(text: string): { quota: Config["store"]["quota"] } | { problem: string } {
  const entry: Entry = { type: "quota", doc: "" };
  const outcome = check(entry, fromEnvText(entry, text));
  return "problem" in outcome ? { problem: outcome.problem } : { quota: outcome.value as Config["store"]["quota"] };
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
  const lower = name.toLowerCase();
  const best = known
    .map((k) => ({ k, d: k.toLowerCase() === lower ? 0 : typoDistance(lower, k.toLowerCase()) }))
    .sort((x, y) => x.d - y.d)[0];
  return best && best.d <= Math.max(1, Math.floor(name.length / 3)) ? ` (did you mean "${best.k}"?)` : "";
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function walk(
  schema: Record<string, Entry>,
  raw: Record<string, unknown>,
  prefix: string,
  env: Record<string, string | undefined>,
  problems: string[],
  fromEnv: string[],
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const name of Object.keys(raw)) {
    if (!(name in schema)) problems.push(`${prefix}${name}: unknown key${suggestion(name, Object.keys(schema))}`);
  }
  for (const [name, entry] of Object.entries(schema)) {
    const path = prefix + name;
    if (entry.type === "section") {
      const section = raw[name] ?? {};
      if (!isObject(section)) {
        problems.push(`${path}: must be an object, got ${shown(section)}`);
        continue;
      }
      out[name] = walk(entry.keys, section, `${path}.`, env, problems, fromEnv);
      continue;
    }
    if (entry.type === "list") {
      const value = raw[name] !== undefined ? raw[name] : entry.default;
      if (value === undefined) {
        if (entry.required) problems.push(`${path}: required`);
        continue;
      }
      if (!Array.isArray(value)) {
        problems.push(`${path}: must be a list ([...]), got ${shown(value)}`);
        continue;
      }
      if (value.length > entry.maxItems) {
        problems.push(`${path}: at most ${entry.maxItems} entries, got ${value.length}`);
        continue;
      }
      // An entry with a problem stays in its place as undefined: the checks across entries skip it and keep
      // naming the others by their index in the file.
      out[name] = value.map((item: unknown, i) => {
        const at = `${path}[${i}]`;
        if (!isObject(item)) {
          problems.push(`${at}: must be an object ({...}), got ${shown(item)}`);
          return undefined;
        }
        const before = problems.length;
        const checked = walk(entry.item, item, `${at}.`, {}, problems, []);
        return problems.length === before ? checked : undefined;
      });
      continue;
    }
    const envText = entry.env !== undefined && env[entry.env] !== undefined && env[entry.env] !== "" ? env[entry.env]! : undefined;
    const where = envText !== undefined ? `${path} (from ${entry.env})` : path;
    if (envText !== undefined) fromEnv.push(entry.env!);
    const value = envText !== undefined ? fromEnvText(entry, envText) : raw[name] !== undefined ? raw[name] : entry.default;
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

/** Rules that span keys; run only on keys that passed on their own, so one mistake is one line. */
function crossChecks(c: Record<string, Record<string, unknown> | undefined>, problems: string[]): void {
  const windows = c.share?.uploadWindows;
  if (Array.isArray(windows)) checkUploadWindows(windows as (UploadWindow | undefined)[], problems);
  const link = c.link;
  if (!link) return;
  const url = typeof link.url === "string" ? link.url : undefined;
  if (url && !/^(mqtts|wss):/.test(url)) {
    for (const k of ["ca", "cert", "key"]) if (link[k] !== undefined) problems.push(`link.${k}: only used with an mqtts:// or wss:// link.url`);
  }
  if (link.cert !== undefined && link.key === undefined) problems.push("link.cert: needs link.key (the certificate's private key)");
  if (link.key !== undefined && link.cert === undefined) problems.push("link.key: needs link.cert (the client certificate)");
  if (link.password !== undefined && link.username === undefined && link.protocolVersion === 4) {
    problems.push("link.password: MQTT 3.1.1 (protocolVersion 4) sends a password only with link.username");
  }
}

// --- upload windows ------------------------------------------------------------------------------------------

const MINUTES_PER_DAY = 24 * 60;
export const MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY;

/** "HH:MM" (already validated) -> minutes after midnight; "24:00" is 1440. */
export function timeToMinutes(time: string): number {
  return Number(time.slice(0, 2)) * 60 + Number(time.slice(3, 5));
}

/**
 * The minutes of the week a window covers, as half-open spans [start, end) counted from Monday 00:00 local time,
 * none wrapping past Sunday 24:00 (a Sunday window that crosses midnight is two spans: its Sunday part and its
 * Monday morning). A window that crosses midnight belongs to the day it starts on: {from "22:00", to "06:00",
 * days ["fri"]} is Friday 22:00 to Saturday 06:00. Plain minute arithmetic on local wall-clock time: no dates, so
 * no daylight-saving cases here (the caller turns an instant into local time).
 */
export function uploadWindowSpans(window: Pick<UploadWindow, "from" | "to" | "days">): Array<[number, number]> {
  const from = timeToMinutes(window.from);
  let to = timeToMinutes(window.to);
  if (to <= from) to += MINUTES_PER_DAY;
  const spans: Array<[number, number]> = [];
  for (const day of window.days ?? WEEKDAYS) {
    const start = WEEKDAYS.indexOf(day) * MINUTES_PER_DAY + from;
    const end = start + (to - from);
    if (end <= MINUTES_PER_WEEK) spans.push([start, end]);
    else spans.push([start, MINUTES_PER_WEEK], [0, end - MINUTES_PER_WEEK]);
  }
  return spans;
}

function minuteOfWeekText(m: number): string {
  const minute = m % MINUTES_PER_DAY;
  return `${WEEKDAYS[Math.floor(m / MINUTES_PER_DAY)]} ${String(Math.floor(minute / 60)).padStart(2, "0")}:${String(minute % 60).padStart(2, "0")}`;
}

/** An empty window, and windows that overlap (which rate would apply?): one line each. */
function checkUploadWindows(windows: (UploadWindow | undefined)[], problems: string[]): void {
  const owner = new Int16Array(MINUTES_PER_WEEK).fill(-1);
  windows.forEach((w, i) => {
    if (!w) return;
    const at = `share.uploadWindows[${i}]`;
    if (timeToMinutes(w.from) === timeToMinutes(w.to)) {
      problems.push(`${at}: "from" and "to" are both ${JSON.stringify(w.from)}: an empty window (a whole day is "00:00" to "24:00")`);
      return;
    }
    const reported = new Set<number>();
    for (const [start, end] of uploadWindowSpans(w)) {
      for (let m = start; m < end; m++) {
        const other = owner[m]!;
        if (other < 0) owner[m] = i;
        else if (!reported.has(other)) {
          reported.add(other);
          problems.push(`${at}: overlaps share.uploadWindows[${other}] (both cover ${minuteOfWeekText(m)})`);
        }
      }
    }
  });
}

// --- the file ------------------------------------------------------------------------------------------------

interface JsonScan {
  error?: { pos: number; message: string };
  duplicates: { path: string; pos: number }[];
}

/**
 * A strict JSON syntax check that says where the text goes wrong (V8's JSON.parse messages no longer carry a
 * position) and which keys appear twice in one object (JSON.parse silently keeps the last: a typo trap).
 */
function scanJson(text: string): JsonScan {
  const duplicates: JsonScan["duplicates"] = [];
  let i = 0;
  const fail = (message: string, pos = i): never => {
    throw { pos, message };
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
      if (c < 0x20) fail(c === 0x0a ? "line break inside a string (missing '\"'?)" : "control character inside a string");
      if (c === 0x5c) {
        const next = text[i + 1] ?? "";
        if (next === "u" ? !/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6)) : !'"\\/bfnrt'.includes(next) || next === "") {
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
    if (depth > 64) fail("nested too deeply");
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
        const keyPath = path === "" ? key : `${path}.${key}`;
        if (seen.has(key)) duplicates.push({ path: keyPath, pos: keyPos });
        seen.add(key);
        ws();
        if (text[i] !== ":") fail(`expected ':' after the key "${key}", got ${ch()}`);
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
        fail(`expected ',' or '}' after the value of "${key}", got ${ch()}`);
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
    if (err instanceof Error) throw err;
    return { error: err as { pos: number; message: string }, duplicates };
  }
}

function lineCol(text: string, pos: number): string {
  const before = text.slice(0, pos);
  const line = before.split("\n").length;
  return `${line}:${pos - before.lastIndexOf("\n")}`;
}

function readJsonFile(path: string): { value?: unknown; problems: string[] } {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === "ENOENT" ? "no such file" : e.code === "EISDIR" ? "is a directory" : e.code === "EACCES" ? "permission denied" : e.message;
    return { problems: [`cannot read config file ${path}: ${why}`] };
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1); // a BOM that Windows editors add
  if (text.trim() === "") return { problems: [`${path}: empty file (a config file holds a JSON object: {...})`] };
  const scan = scanJson(text);
  if (scan.error) return { problems: [`${path}:${lineCol(text, scan.error.pos)}: not valid JSON: ${scan.error.message}`] };
  return {
    value: JSON.parse(text) as unknown,
    problems: scan.duplicates.map((d) => `${d.path}: given twice (again at ${path}:${lineCol(text, d.pos)}); remove one`),
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
    if (!isObject(read.value)) throw new ConfigError([`${path}: must hold a JSON object ({...}), got ${shown(read.value)}`], path);
    raw = read.value;
  }
  const fromEnv: string[] = [];
  const config = walk(configSchema, raw, "", env, problems, fromEnv);
  crossChecks(config as Record<string, Record<string, unknown> | undefined>, problems);
  if (problems.length > 0) throw new ConfigError(problems, path);
  return { config: config as unknown as Config, fromEnv };
}

/** A config as far as it could be read: every valid value, defaults where a value is missing or wrong. */
export type LenientConfig = Omit<Config, "link" | "store"> & {
  link: Partial<Config["link"]> & Pick<Config["link"], "protocolVersion" | "keepaliveSeconds">;
  store: Partial<Config["store"]> & Pick<Config["store"], "quota" | "allowSystemDisk">;
};

/**
 * For readers that must go on with a broken config (the diagnostics console on a box whose config is the
 * problem): never throws for the config's content, returns what could be read, with defaults in place of wrong
 * values, and every problem loadConfig would report (an unreadable or malformed file counts as an empty one).
 */
export function loadConfigLenient(path: string | undefined, env: Record<string, string | undefined>): { config: LenientConfig; problems: string[] } {
  const problems: string[] = [];
  let raw: Record<string, unknown> = {};
  if (path !== undefined) {
    const read = readJsonFile(path);
    problems.push(...read.problems);
    if (isObject(read.value)) raw = read.value;
    else if (read.value !== undefined) problems.push(`${path}: must hold a JSON object ({...}), got ${shown(read.value)}`);
  }
  const config = walk(configSchema, raw, "", env, problems, []);
  crossChecks(config as Record<string, Record<string, unknown> | undefined>, problems);
  return { config: config as unknown as LenientConfig, problems };
}

/** A copy of `config` fit to show (config.get, logs): secrets (the MQTT password, the client key's path) are "<redacted>". */
export function redactConfig(config: Config): Config {
  const copy = structuredClone(config);
  const redact = (schema: Record<string, Entry>, obj: Record<string, unknown>) => {
    for (const [name, entry] of Object.entries(schema)) {
      if (entry.type === "section" && isObject(obj[name])) redact(entry.keys, obj[name]);
      else if (entry.secret && obj[name] !== undefined) obj[name] = "<redacted>";
    }
  };
  redact(configSchema, copy as unknown as Record<string, unknown>);
  return copy;
}
