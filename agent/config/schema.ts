// The schema of the daemon's config, written as data, and the TypeScript types derived from it: a key is one edit
// here, and `Config` follows. Validation (./validate.ts) walks this data; the README's key table is checked
// against it by test/config.test.ts.
import { isIP } from "node:net";
import { checkUploadWindows, type Weekday } from "./upload-windows.js";

// --- rules -----------------------------------------------------------------------------------------------------

/** Longest path taken: Linux's PATH_MAX. */
export const MAX_PATH_LENGTH = 4096;
/** Longest URL taken: a broker's URL is short; 2048 is the length browsers and proxies keep to. */
export const MAX_URL_LENGTH = 2048;
/** Longest plain string (user name, ...) unless an entry says otherwise. */
export const MAX_STRING_LENGTH = 1024;

type Rule =
  | { type: "string"; pattern?: RegExp; expect?: string; lowercase?: boolean; maxLength?: number }
  /** An absolute path without NUL, or one of `words` (literal values with their own meaning, such as "auto"). */
  | { type: "path"; readableFile?: boolean; words?: readonly string[] }
  | { type: "url"; schemes: readonly string[] }
  | { type: "integer"; min: number; max: number }
  | { type: "boolean" }
  | { type: "enum"; values: readonly (string | number)[] }
  /** Bytes (an integer >= 1) or "NN%"; loaded as the store's shape, { bytes } or { share }. */
  | { type: "quota" }
  /** "HH:MM", 24-hour; `endOfDay` also takes "24:00". */
  | { type: "time"; endOfDay?: boolean }
  /** A non-empty list of distinct day names ("mon".."sun"). */
  | { type: "days" }
  /** A list of objects, each walked like a section (unknown keys, required keys, every problem with its index). */
  | { type: "list"; item: Schema; maxItems: number }
  | { type: "section"; keys: Schema };

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

export type Schema = { readonly [key: string]: Entry };

// --- types derived from the schema ----------------------------------------------------------------------------

export type Quota = { bytes: number } | { share: number };

type Simplify<T> = { [K in keyof T]: T[K] } & {};

/** The loaded value of one entry. */
type ValueOf<E> = E extends { type: "string" | "path" | "url" | "time" }
  ? string
  : E extends { type: "integer" }
    ? number
    : E extends { type: "boolean" }
      ? boolean
      : E extends { type: "enum"; values: readonly (infer V)[] }
        ? V
        : E extends { type: "quota" }
          ? Quota
          : E extends { type: "days" }
            ? Weekday[]
            : E extends { type: "list"; item: infer I extends Schema }
              ? SectionOf<I>[]
              : E extends { type: "section"; keys: infer K extends Schema }
                ? SectionOf<K>
                : never;

/** Always there after validation: required, defaulted, or a section. */
type Present<E> = E extends { required: true } | { default: unknown } | { type: "section" } ? true : false;

type SectionOf<S extends Schema> = Simplify<
  { -readonly [K in keyof S as Present<S[K]> extends true ? K : never]: ValueOf<S[K]> } & {
    -readonly [K in keyof S as Present<S[K]> extends true ? never : K]?: ValueOf<S[K]>;
  }
>;

/** What a lenient reader gets for one entry: sections walked leniently, a list entry with a problem as undefined. */
type LenientValueOf<E> = E extends { type: "section"; keys: infer K extends Schema }
  ? LenientOf<K>
  : E extends { type: "list"; item: infer I extends Schema }
    ? (SectionOf<I> | undefined)[]
    : ValueOf<E>;

type Defaulted<E> = E extends { default: unknown } | { type: "section" } ? true : false;

/** Defaulted keys and sections are always there; every other key may be missing (absent, or its value was wrong). */
type LenientOf<S extends Schema> = Simplify<
  { -readonly [K in keyof S as Defaulted<S[K]> extends true ? K : never]: LenientValueOf<S[K]> } & {
    -readonly [K in keyof S as Defaulted<S[K]> extends true ? never : K]?: LenientValueOf<S[K]>;
  }
>;

// --- the schema ------------------------------------------------------------------------------------------------

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/** 10 GB/s: more than any box's port carries, small enough that a typo of extra digits is caught. */
const MAX_RATE = 10_000_000_000;

/**
 * Every key of the config. A new section is one more entry here (type "section", its keys inside); its TypeScript
 * type, defaults, environment variables, unknown-key checks and redaction follow. Rules that tie keys together go
 * in `sectionChecks` below. Keep agent/config/README.md's key table in step (a test checks it names every key).
 */
export const configSchema = {
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
      protocolVersion: {
        type: "enum",
        values: [5, 4],
        default: 5,
        env: "SHARENODE_MQTT_VERSION",
        doc: "MQTT 5, or 4 for MQTT 3.1.1 brokers",
      },
      username: { type: "string", env: "SHARENODE_MQTT_USERNAME", doc: "MQTT user name" },
      // Room for a token (a JWT is a few KB) where a broker takes one as the password.
      password: { type: "string", maxLength: 8192, secret: true, env: "SHARENODE_MQTT_PASSWORD", doc: "MQTT password" },
      ca: {
        type: "path",
        readableFile: true,
        doc: "PEM file of the CA that signed the broker's certificate (mqtts/wss)",
      },
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
      telemetryIntervalSeconds: {
        type: "integer",
        min: 1,
        max: 86400,
        default: 60,
        env: "SHARENODE_TELEMETRY_INTERVAL",
        doc: "seconds between telemetry messages",
      },
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
      dataDir: {
        type: "path",
        words: ["auto"],
        required: true,
        env: "SHARENODE_DATA",
        doc: 'the data directory on the data disk; "auto": disk discovery picks the disk',
      },
      quota: {
        type: "quota",
        default: "100%",
        env: "SHARENODE_QUOTA",
        doc: 'most the store may use: bytes, or "NN%" of the space it could have',
      },
      reserveBytes: {
        type: "integer",
        min: 0,
        max: Number.MAX_SAFE_INTEGER,
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
      downloadBytesPerSecond: {
        type: "integer",
        min: 0,
        max: MAX_RATE,
        default: 0,
        env: "SHARENODE_DOWNLOAD_RATE",
        doc: "fetching (task.fetch) download rate outside the upload windows, bytes per second; 0: no limit",
      },
      uploadWindows: {
        type: "list",
        maxItems: 64,
        default: [],
        doc: 'times of the week (the box\'s local time) with their own upload rate: [{"from": "01:00", "to": "07:00", "bytesPerSecond": 5000000, "days": ["mon"]}]',
        item: {
          from: {
            type: "time",
            required: true,
            doc: '"HH:MM", local time: the window starts at the start of that minute',
          },
          to: {
            type: "time",
            endOfDay: true,
            required: true,
            doc: '"HH:MM" or "24:00": the window ends at the start of that minute; earlier than "from": it crosses midnight',
          },
          bytesPerSecond: {
            type: "integer",
            min: 0,
            max: MAX_RATE,
            required: true,
            doc: "upload rate inside the window; 0: no limit",
          },
          downloadBytesPerSecond: {
            type: "integer",
            min: 0,
            max: MAX_RATE,
            doc: "download rate inside the window; 0: no limit; absent: share.downloadBytesPerSecond",
          },
          days: { type: "days", doc: 'the days the window starts on ("mon".."sun"); absent: every day' },
        },
      },
    },
  },
  serve: {
    type: "section",
    doc: "the HTTP server that serves objects to holders of orders (agent/serve/)",
    keys: {
      bind: {
        type: "string",
        pattern: /^[0-9A-Fa-f:.]{2,45}$/,
        expect:
          'must be an IP address ("0.0.0.0": every IPv4 address, "::": every address, "127.0.0.1": this box only)',
        default: "0.0.0.0",
        env: "SHARENODE_SERVE_BIND",
        doc: "address the server listens on",
      },
      port: {
        type: "integer",
        min: 0,
        max: 65535,
        default: 8470,
        env: "SHARENODE_SERVE_PORT",
        doc: "TCP port; 0: any free port (the state record says which)",
      },
      maxConnections: { type: "integer", min: 1, max: 65535, default: 256, doc: "connections open at once, in all" },
      maxConnectionsPerAddress: {
        type: "integer",
        min: 1,
        max: 65535,
        default: 64,
        doc: "connections open at once from one client address",
      },
      headersTimeoutSeconds: {
        type: "integer",
        min: 1,
        max: 600,
        default: 10,
        doc: "a request's headers must be in within this (slowloris)",
      },
      idleTimeoutSeconds: {
        type: "integer",
        min: 1,
        max: 3600,
        default: 30,
        doc: "a connection with no traffic either way for this long is closed",
      },
      receiptWindowBytes: {
        type: "integer",
        min: 64 * 1024,
        max: GiB,
        default: 4 * MiB,
        doc: "bytes an order may be sent past its client's largest receipt; a client that never signs gets this much",
      },
    },
  },
  tasks: {
    type: "section",
    doc: "fetch tasks from the fleet (task.fetch): agent/tasks",
    keys: {
      concurrency: {
        type: "integer",
        min: 1,
        max: 16,
        default: 2,
        doc: "fetch tasks that run at once",
      },
      stallSeconds: {
        type: "integer",
        min: 1,
        max: 600,
        default: 30,
        doc: "a source that sends no byte for this long is dropped",
      },
    },
  },
  ledger: {
    type: "section",
    doc: "the work ledger and its signed statements (agent/ledger)",
    keys: {
      windowSeconds: {
        type: "integer",
        min: 10,
        max: 86400,
        default: 3600,
        env: "SHARENODE_LEDGER_WINDOW",
        doc: "length of a statement's window, aligned to UTC (an hour; shorter for tests and small fleets)",
      },
    },
  },
  ota: {
    type: "section",
    doc: "updates over the air (agent/ota)",
    keys: {
      releasePublicKey: {
        type: "string",
        pattern: /^[0-9a-fA-F]{64}$/,
        expect: "must be 64 hex digits (the release key's Ed25519 public key: 'sharenode release keygen')",
        lowercase: true,
        env: "SHARENODE_RELEASE_KEY",
        doc: "the release key's Ed25519 public key: only releases it signed are installed (not the fleet's key)",
      },
      gateSeconds: {
        type: "integer",
        min: 1,
        max: 86400,
        default: 300,
        env: "SHARENODE_OTA_GATE",
        doc: "how long a new release runs on trial (broker reached, selftest passed, no crash) before it commits",
      },
    },
  },
  log: {
    type: "section",
    doc: "logging",
    keys: {
      level: {
        type: "enum",
        values: ["error", "warn", "info", "debug"],
        default: "info",
        env: "SHARENODE_LOG_LEVEL",
        doc: "least severe level logged",
      },
    },
  },
} as const satisfies Schema;

/** The validated configuration. */
export type Config = SectionOf<typeof configSchema>;
/** A config as far as it could be read (loadConfigLenient): every valid value, defaults for missing or wrong ones. */
export type LenientConfig = LenientOf<typeof configSchema>;
export type LogLevel = Config["log"]["level"];
/** A time of the week (box's local time) with its own upload rate. */
export type UploadWindow = Config["share"]["uploadWindows"][number];

// --- rules across keys -----------------------------------------------------------------------------------------

/** A section as the checks across keys see it: the keys that passed on their own; a bad list entry is undefined. */
export type Passed<T> = { [K in keyof T]?: T[K] extends (infer U extends object)[] ? (U | undefined)[] : T[K] };

type SectionName = {
  [K in keyof typeof configSchema]: (typeof configSchema)[K] extends { type: "section" } ? K : never;
}[keyof Config];

/**
 * Rules that tie the keys of one section together, run after every key was checked on its own and only on keys
 * that passed (so one mistake is one line). A section without such rules needs nothing here.
 */
export const sectionChecks: { [K in SectionName]?: (section: Passed<Config[K]>, problems: string[]) => void } = {
  link(link, problems) {
    if (link.url !== undefined && !/^(mqtts|wss):/.test(link.url)) {
      for (const k of ["ca", "cert", "key"] as const) {
        if (link[k] !== undefined) problems.push(`link.${k}: only used with an mqtts:// or wss:// link.url`);
      }
    }
    if (link.cert !== undefined && link.key === undefined) {
      problems.push("link.cert: needs link.key (the certificate's private key)");
    }
    if (link.key !== undefined && link.cert === undefined)
      problems.push("link.key: needs link.cert (the client certificate)");
    if (link.password !== undefined && link.username === undefined && link.protocolVersion === 4) {
      problems.push("link.password: MQTT 3.1.1 (protocolVersion 4) sends a password only with link.username");
    }
  },
  serve(serve, problems) {
    if (serve.bind !== undefined && isIP(serve.bind) === 0)
      problems.push(`serve.bind: ${serve.bind} is not an IP address`);
  },
  share(share, problems) {
    if (share.uploadWindows) checkUploadWindows(share.uploadWindows, "share.uploadWindows", problems);
  },
};

// --- listings ----------------------------------------------------------------------------------------------------

/** Every key path of the schema ("link.url", ...), sections included, in schema order. */
export function configKeys(schema: Schema = configSchema, prefix = ""): string[] {
  const keys: string[] = [];
  for (const [name, entry] of Object.entries(schema)) {
    keys.push(prefix + name);
    if (entry.type === "section") keys.push(...configKeys(entry.keys, `${prefix}${name}.`));
  }
  return keys;
}

/** Environment variable -> the key path it overrides. */
export function configEnvVars(schema: Schema = configSchema, prefix = ""): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const [name, entry] of Object.entries(schema)) {
    if (entry.type === "section") Object.assign(vars, configEnvVars(entry.keys, `${prefix}${name}.`));
    else if (entry.env) vars[entry.env] = prefix + name;
  }
  return vars;
}
