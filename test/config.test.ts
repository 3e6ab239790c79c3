// The daemon's config (agent/config/config.ts) from real files: every problem at once and one line each, defaults,
// environment overrides (and their problems naming the variable), unknown keys, bad JSON with line:column,
// a missing file, redaction; and the README documents every key and variable.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ConfigError,
  configEnvVars,
  configKeys,
  loadConfig,
  loadConfigLenient,
  MAX_CONFIG_BYTES,
  MAX_PROBLEMS,
  redactConfig,
  type Config,
} from "../agent/config/config";
import { JsonSyntaxError, scanJson } from "../agent/config/json-scan";
import { MAX_PATH_LENGTH, MAX_URL_LENGTH } from "../agent/config/schema";
import { errorMessage } from "../agent/util/errors";

const FLEET_KEY = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";
let dir: string;
let n = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sharenode-config-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function file(content: unknown): Promise<string> {
  const path = join(dir, `config-${n++}.json`);
  await writeFile(path, typeof content === "string" ? content : JSON.stringify(content, null, 2));
  return path;
}

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    const problems = (err as ConfigError).problems;
    // The message is one line that carries every problem: what a log line or the CLI prints.
    expect(errorMessage(err)).not.toContain("\n");
    for (const p of problems) expect(errorMessage(err)).toContain(p);
    return problems;
  }
  throw new Error("expected a ConfigError");
}

const minimal = {
  link: { url: "mqtts://broker.example.net:8883", fleetPublicKey: FLEET_KEY },
  store: { dataDir: "/mnt/usb/sharenode" },
};

describe("loadConfig", () => {
  it("fills every default around the required keys", async () => {
    const { config, fromEnv } = loadConfig(await file(minimal), {});
    expect(fromEnv).toEqual([]);
    expect(config).toEqual<Config>({
      stateDir: "/var/lib/sharenode",
      board: "auto",
      link: {
        url: "mqtts://broker.example.net:8883",
        protocolVersion: 5,
        keepaliveSeconds: 60,
        fleetPublicKey: FLEET_KEY,
        telemetryIntervalSeconds: 60,
        outboxMaxBytes: 8 * 1024 * 1024,
      },
      store: {
        dataDir: "/mnt/usb/sharenode",
        quota: { share: 1 },
        allowSystemDisk: false,
        scrubBytesPerSecond: 2_000_000,
      },
      share: { cpuPercent: 50, uploadBytesPerSecond: 0, downloadBytesPerSecond: 0, uploadWindows: [] },
      serve: {
        bind: "0.0.0.0",
        port: 8470,
        maxConnections: 256,
        maxConnectionsPerAddress: 64,
        headersTimeoutSeconds: 10,
        idleTimeoutSeconds: 30,
        receiptWindowBytes: 4 * 1024 * 1024,
      },
      tasks: { concurrency: 2, stallSeconds: 30 },
      ledger: { windowSeconds: 3600 },
      ota: { gateSeconds: 300 },
      log: { level: "info" },
    });
  });

  it("takes every key from a full file; quota in bytes or percent; the fleet key in one spelling", async () => {
    const ca = join(dir, "ca.pem");
    const cert = join(dir, "client.pem");
    const key = join(dir, "client.key");
    for (const f of [ca, cert, key]) await writeFile(f, "-----BEGIN X-----\n");
    const full = {
      stateDir: "/data/state",
      board: "onething-oes",
      link: {
        url: "wss://fleet.example.net/mqtt",
        protocolVersion: 4,
        username: "0123456789abcdef0123456789abcdef",
        password: "s3cret",
        ca,
        cert,
        key,
        keepaliveSeconds: 120,
        fleetPublicKey: FLEET_KEY.toUpperCase(),
        telemetryIntervalSeconds: 300,
        outboxMaxBytes: 1048576,
      },
      store: {
        dataDir: "/mnt/sda1/sn",
        quota: "80%",
        reserveBytes: 2147483648,
        allowSystemDisk: true,
        scrubBytesPerSecond: 0,
      },
      share: {
        cpuPercent: 25,
        uploadBytesPerSecond: 1_000_000,
        downloadBytesPerSecond: 4_000_000,
        uploadWindows: [
          { from: "22:00", to: "07:00", bytesPerSecond: 0, downloadBytesPerSecond: 0 },
          { from: "09:00", to: "17:00", bytesPerSecond: 5_000_000, days: ["mon", "tue", "wed", "thu", "fri"] },
        ],
      },
      serve: {
        bind: "0.0.0.0",
        port: 8470,
        maxConnections: 256,
        maxConnectionsPerAddress: 64,
        headersTimeoutSeconds: 10,
        idleTimeoutSeconds: 30,
        receiptWindowBytes: 4 * 1024 * 1024,
      },
      tasks: { concurrency: 4, stallSeconds: 10 },
      ledger: { windowSeconds: 600 },
      ota: { releasePublicKey: "ab".repeat(32), gateSeconds: 600 },
      log: { level: "debug" },
    };
    const { config } = loadConfig(await file(full), {});
    expect(config).toEqual({
      ...full,
      link: { ...full.link, fleetPublicKey: FLEET_KEY },
      store: { ...full.store, quota: { share: 0.8 } },
    });
    expect(
      loadConfig(await file({ ...minimal, store: { dataDir: "/d", quota: 500_000_000_000 } }), {}).config.store.quota,
    ).toEqual({
      bytes: 500_000_000_000,
    });
  });

  it("reports all five mistakes of a file at once, one line each, naming the key path", async () => {
    const path = await file({
      link: { url: "http://x", fleetPublicKey: "abc", keepaliveSeconds: "60" },
      store: { dataDir: "/mnt/usb", quota: "150%" },
      log: { level: "verbose" },
    });
    expect(problemsOf(() => loadConfig(path, {}))).toEqual([
      'link.url: must be a mqtt://, mqtts://, ws:// or wss:// URL, got "http://x"',
      'link.keepaliveSeconds: must be an integer from 5 to 65535, got "60"',
      `link.fleetPublicKey: must be 64 hex digits (the fleet's Ed25519 public key), got "abc"`,
      'store.quota: must be a number of bytes (at least 1) or a percentage from "1%" to "100%", got "150%"',
      'log.level: must be one of "error", "warn", "info" or "debug", got "verbose"',
    ]);
  });

  it("refuses unknown keys at every level, suggesting the likely one", async () => {
    const path = await file({
      ...minimal,
      link: { ...minimal.link, ulr: "mqtt://x" },
      stroe: {},
      log: { level: "info", colour: true },
    });
    expect(problemsOf(() => loadConfig(path, {}))).toEqual([
      'stroe: unknown key (did you mean "store"?)',
      'link.ulr: unknown key (did you mean "url"?)',
      "log.colour: unknown key",
    ]);
  });

  it("names missing required keys and the variable that can give them", () => {
    expect(problemsOf(() => loadConfig(undefined, {}))).toEqual([
      "link.url: required (in the file, or set SHARENODE_BROKER)",
      "link.fleetPublicKey: required (in the file, or set SHARENODE_FLEET_KEY)",
      "store.dataDir: required (in the file, or set SHARENODE_DATA)",
    ]);
  });

  it("runs from the environment alone, and the environment wins over the file", async () => {
    const env = {
      SHARENODE_BROKER: "mqtt://10.0.0.2:1883",
      SHARENODE_DATA: "/srv/sn",
      SHARENODE_STATE: "/run/sn-state",
      SHARENODE_FLEET_KEY: FLEET_KEY,
      SHARENODE_LOG_LEVEL: "warn",
      SHARENODE_QUOTA: "1000000",
      SHARENODE_ALLOW_SYSTEM_DISK: "1",
      SHARENODE_BOARD: "", // empty: unset, the file or the default stays
    };
    const alone = loadConfig(undefined, env).config;
    expect(alone.link.url).toBe("mqtt://10.0.0.2:1883");
    expect(alone.store).toMatchObject({ dataDir: "/srv/sn", quota: { bytes: 1_000_000 }, allowSystemDisk: true });
    expect(alone.stateDir).toBe("/run/sn-state");
    expect(alone.log.level).toBe("warn");
    expect(alone.board).toBe("auto");

    const path = await file({ ...minimal, board: "rpi4", log: { level: "error" } });
    const { config, fromEnv } = loadConfig(path, {
      SHARENODE_BROKER: "ws://127.0.0.1:9001/mqtt",
      SHARENODE_QUOTA: "25%",
      SHARENODE_BOARD: "",
    });
    expect(config.link.url).toBe("ws://127.0.0.1:9001/mqtt");
    expect(config.store.quota).toEqual({ share: 0.25 });
    expect(config.board).toBe("rpi4");
    expect(config.log.level).toBe("error");
    expect(fromEnv).toEqual(["SHARENODE_BROKER", "SHARENODE_QUOTA"]);
  });

  it("names the variable when an override is bad, alongside the file's own problems", async () => {
    const path = await file({ ...minimal, link: { ...minimal.link, keepaliveSeconds: 1 } });
    expect(
      problemsOf(() =>
        loadConfig(path, {
          SHARENODE_BROKER: "http://x",
          SHARENODE_FLEET_KEY: "nothex",
          SHARENODE_LOG_LEVEL: "loud",
          SHARENODE_DATA: "data",
        }),
      ),
    ).toEqual([
      'link.url (from SHARENODE_BROKER): must be a mqtt://, mqtts://, ws:// or wss:// URL, got "http://x"',
      "link.keepaliveSeconds: must be an integer from 5 to 65535, got 1",
      `link.fleetPublicKey (from SHARENODE_FLEET_KEY): must be 64 hex digits (the fleet's Ed25519 public key), got "nothex"`,
      'store.dataDir (from SHARENODE_DATA): must be an absolute path or "auto", got "data"',
      'log.level (from SHARENODE_LOG_LEVEL): must be one of "error", "warn", "info" or "debug", got "loud"',
    ]);
  });

  it("checks keys against each other, and never echoes a password", async () => {
    const path = await file({
      ...minimal,
      link: { url: "mqtts://h", fleetPublicKey: FLEET_KEY, ca: join(dir, "nope.pem") },
    });
    expect(problemsOf(() => loadConfig(path, {}))).toEqual([`link.ca: cannot read "${join(dir, "nope.pem")}": ENOENT`]);
    await writeFile(join(dir, "ca2.pem"), "x");
    const path2 = await file({
      ...minimal,
      link: {
        url: "mqtt://user:pw@h",
        fleetPublicKey: FLEET_KEY,
        protocolVersion: 4,
        password: 12345,
        ca: join(dir, "ca2.pem"),
      },
    });
    expect(problemsOf(() => loadConfig(path2, {}))).toEqual([
      "link.url: must not carry credentials: use link.username and link.password",
      "link.password: must be a string, got number",
    ]);
    const path3 = await file({
      ...minimal,
      link: {
        url: "mqtt://h",
        fleetPublicKey: FLEET_KEY,
        protocolVersion: 4,
        password: "pw",
        ca: join(dir, "ca2.pem"),
      },
    });
    expect(problemsOf(() => loadConfig(path3, {}))).toEqual([
      "link.ca: only used with an mqtts:// or wss:// link.url",
      "link.password: MQTT 3.1.1 (protocolVersion 4) sends a password only with link.username",
    ]);
  });

  it("checks the share section: rates, times, days, overlapping and empty upload windows, one line each", async () => {
    const path = await file({
      ...minimal,
      share: {
        cpuPercent: 0,
        uploadBytesPerSecond: 1.5,
        downloadBytesPerSecond: -5,
        uploadWindows: [
          { from: "01:00", to: "07:00", bytesPerSecond: 5_000_000 },
          { from: "7:00", to: "25:00", bytesPerSecond: -1, downloadBytesPerSecond: "1M" },
          { from: "06:00", to: "08:00", bytesPerSecond: 1 },
          { from: "22:00", to: "02:00", bytesPerSecond: 1, days: ["fri"] },
          { from: "12:00", to: "12:00", bytesPerSecond: 1 },
          { from: "12:00", to: "13:00", bytesPerSecond: 1, days: [] },
          { from: "12:00", to: "13:00", bytesPerSecond: 1, days: ["mon", "Mon"] },
          { from: "12:00", to: "13:00", bytesPerSecond: 1, days: ["tue", "tue"] },
          { form: "12:00", to: "13:00", bytesPerSecond: 1 },
          "13:00-14:00",
          { from: "12:60", to: "24:00", bytesPerSecond: 1 },
          { from: "24:00", to: "01:00", bytesPerSecond: 1, days: ["sun"] },
        ],
      },
    });
    const rate = "must be an integer from 0 to 10000000000";
    expect(problemsOf(() => loadConfig(path, {}))).toEqual([
      "share.cpuPercent: must be an integer from 1 to 100, got 0",
      `share.uploadBytesPerSecond: ${rate}, got 1.5`,
      `share.downloadBytesPerSecond: ${rate}, got -5`,
      'share.uploadWindows[1].from: must be a time "HH:MM" from "00:00" to "23:59", got "7:00"',
      'share.uploadWindows[1].to: must be a time "HH:MM" from "00:00" to "24:00", got "25:00"',
      `share.uploadWindows[1].bytesPerSecond: ${rate}, got -1`,
      `share.uploadWindows[1].downloadBytesPerSecond: ${rate}, got "1M"`,
      "share.uploadWindows[5].days: must name at least one day (leave it out for every day)",
      'share.uploadWindows[6].days: must be a list of days, each "mon", "tue", "wed", "thu", "fri", "sat" or "sun", got ["mon","Mon"]',
      'share.uploadWindows[7].days: names "tue" twice',
      'share.uploadWindows[8].form: unknown key (did you mean "from"?)',
      "share.uploadWindows[8].from: required",
      'share.uploadWindows[9]: must be an object ({...}), got "13:00-14:00"',
      'share.uploadWindows[10].from: must be a time "HH:MM" from "00:00" to "23:59", got "12:60"',
      'share.uploadWindows[11].from: must be a time "HH:MM" from "00:00" to "23:59", got "24:00"',
      // Across windows, only those that passed on their own; named by their index in the file.
      "share.uploadWindows[2]: overlaps share.uploadWindows[0] (both cover mon 06:00)",
      // Friday 22:00 runs into Saturday 02:00, which the every-day 01:00 window already covers.
      "share.uploadWindows[3]: overlaps share.uploadWindows[0] (both cover sat 01:00)",
      'share.uploadWindows[4]: "from" and "to" are both "12:00": an empty window (a whole day is "00:00" to "24:00")',
    ]);

    const notList = await file({ ...minimal, share: { uploadWindows: { from: "01:00" } } });
    expect(problemsOf(() => loadConfig(notList, {}))).toEqual([
      'share.uploadWindows: must be a list ([...]), got {"from":"01:00"}',
    ]);
    const many = await file({
      ...minimal,
      share: { uploadWindows: Array.from({ length: 65 }, () => ({ from: "01:00", to: "02:00", bytesPerSecond: 1 })) },
    });
    expect(problemsOf(() => loadConfig(many, {}))).toEqual(["share.uploadWindows: at most 64 entries, got 65"]);
    // The week wraps: Sunday night into Monday morning meets Monday's window.
    const wrap = await file({
      ...minimal,
      share: {
        uploadWindows: [
          { from: "00:30", to: "05:00", bytesPerSecond: 1, days: ["mon"] },
          { from: "23:00", to: "01:00", bytesPerSecond: 2, days: ["sun"] },
        ],
      },
    });
    expect(problemsOf(() => loadConfig(wrap, {}))).toEqual([
      "share.uploadWindows[1]: overlaps share.uploadWindows[0] (both cover mon 00:30)",
    ]);
  });

  it("takes windows that touch without overlapping, and the share rates from the environment", async () => {
    const windows = [
      { from: "01:00", to: "07:00", bytesPerSecond: 0 },
      { from: "22:00", to: "01:00", bytesPerSecond: 5_000_000, days: ["fri", "sat"] },
      { from: "07:00", to: "24:00", bytesPerSecond: 100, days: ["sun"] },
      { from: "00:00", to: "01:00", bytesPerSecond: 7, downloadBytesPerSecond: 0, days: ["mon"] },
    ];
    const path = await file({ ...minimal, share: { cpuPercent: 100, uploadWindows: windows } });
    const { config, fromEnv } = loadConfig(path, {
      SHARENODE_UPLOAD_RATE: "2000000",
      SHARENODE_DOWNLOAD_RATE: "3000000",
      SHARENODE_CPU_SHARE: "",
    });
    expect(config.share).toEqual({
      cpuPercent: 100,
      uploadBytesPerSecond: 2_000_000,
      downloadBytesPerSecond: 3_000_000,
      uploadWindows: windows,
    });
    expect(fromEnv).toEqual(["SHARENODE_UPLOAD_RATE", "SHARENODE_DOWNLOAD_RATE"]);
    expect(problemsOf(() => loadConfig(path, { SHARENODE_CPU_SHARE: "half" }))).toEqual([
      'share.cpuPercent (from SHARENODE_CPU_SHARE): must be an integer from 1 to 100, got "half"',
    ]);
    // The README's example is a valid config.
    const readme = await readFile(new URL("../agent/config/README.md", import.meta.url), "utf8");
    const example = /```json\n("share": \{[\s\S]*?\n\})\n```/.exec(readme);
    expect(example, "the share example in agent/config/README.md").not.toBeNull();
    const fromReadme = await file(
      `{ "link": ${JSON.stringify(minimal.link)}, "store": ${JSON.stringify(minimal.store)}, ${example![1]} }`,
    );
    expect(loadConfig(fromReadme, {}).config.share.uploadWindows).toHaveLength(2);
  });

  it("reports bad JSON as one line with line and column", async () => {
    const cases: [string, string][] = [
      ['{\n  "link": {\n    "url": "mqtt://h",\n  }\n}\n', ":4:3: not valid JSON: trailing comma before '}'"],
      [
        '{\n  "link": {\n    "url": "mqtt://h"\n    "fleetPublicKey": "x"\n  }\n}\n',
        `:4:5: not valid JSON: expected ',' or '}' after the value of "url", got '"'`,
      ],
      ["{\n  // the broker\n}\n", ":2:3: not valid JSON: JSON has no comments"],
      ["{\n  'link': {}\n}\n", ":2:3: not valid JSON: strings need double quotes"],
      ['{"store": {"dataDir": "/mnt/usb\n"}}', `:1:32: not valid JSON: line break inside a string (missing '"'?)`],
      ['{"link": {}} x', ":1:14: not valid JSON: unexpected 'x' after the end of the JSON value"],
    ];
    for (const [text, expected] of cases) {
      const path = await file(text);
      expect(problemsOf(() => loadConfig(path, {}))).toEqual([path + expected]);
    }
    const arr = await file("[1, 2]");
    expect(problemsOf(() => loadConfig(arr, {}))).toEqual([`${arr}: must hold a JSON object ({...}), got [1,2]`]);
    const empty = await file("\n");
    expect(problemsOf(() => loadConfig(empty, {}))).toEqual([
      `${empty}: empty file (a config file holds a JSON object: {...})`,
    ]);
  });

  it("reports a key given twice (JSON.parse would silently keep the last)", async () => {
    const line2 = `  "link": {"url": "mqtt://a", "fleetPublicKey": "${FLEET_KEY}", "url": "mqtt://b"},`;
    const path = await file(`{\n${line2}\n  "store": {"dataDir": "/d"}\n}`);
    const column = line2.lastIndexOf('"url"') + 1;
    expect(problemsOf(() => loadConfig(path, {}))).toEqual([
      `link.url: given twice (again at ${path}:2:${column}); remove one`,
    ]);
  });

  it("reports a missing file as one line naming it, and a directory too", async () => {
    const missing = join(dir, "absent.json");
    expect(problemsOf(() => loadConfig(missing, {}))).toEqual([`cannot read config file ${missing}: no such file`]);
    expect(problemsOf(() => loadConfig(dir, {}))).toEqual([`cannot read config file ${dir}: is a directory`]);
  });
});

describe("loadConfigLenient (the console's reader)", () => {
  it("keeps the valid values, puts defaults in place of wrong ones, and lists the same problems loadConfig throws", async () => {
    const path = await file({
      ...minimal,
      link: { ...minimal.link, keepaliveSeconds: 1, url: "mqtt://u:p@host" },
      store: { dataDir: "/mnt/usb/x", scrubBytesPerSecond: "fast" },
      bogus: 1,
    });
    const strict = problemsOf(() => loadConfig(path, {}));
    const { config, problems } = loadConfigLenient(path, {});
    expect(problems).toEqual(strict);
    expect(problems.length).toBe(4);
    expect(config.link.keepaliveSeconds).toBe(60);
    expect(config.link.url).toBeUndefined(); // required, no default: a wrong value is not used
    expect(config.link.fleetPublicKey).toBe(FLEET_KEY);
    expect(config.store.dataDir).toBe("/mnt/usb/x");
    expect(config.stateDir).toBe("/var/lib/sharenode");
  });

  it("gives every section and defaulted list even when the file has the wrong kind of value there", async () => {
    const path = await file({ ...minimal, link: 5, share: { uploadWindows: "nights" }, log: [] });
    const { config, problems } = loadConfigLenient(path, {});
    expect(problems).toEqual([
      "link: must be an object, got 5",
      'share.uploadWindows: must be a list ([...]), got "nights"',
      "log: must be an object, got []",
    ]);
    expect(config.link.keepaliveSeconds).toBe(60);
    expect(config.link.protocolVersion).toBe(5);
    expect(config.share.uploadWindows).toEqual([]);
    expect(config.log.level).toBe("info");
  });

  it("never throws for the file: a missing file or broken JSON is a problem line and an empty config", async () => {
    const broken = loadConfigLenient(await file("{ not json"), { SHARENODE_STATE: "/tmp/state-x" });
    expect(broken.problems.length).toBeGreaterThan(0);
    expect(broken.config.stateDir).toBe("/tmp/state-x");
    const missing = loadConfigLenient(join(dir, "absent.json"), {});
    expect(missing.problems[0]).toMatch(/absent\.json/);
    expect(missing.config.board).toBe("auto");
  });
});

describe("redactConfig", () => {
  it("hides the password and the client key's path, keeps everything else, leaves the original alone", async () => {
    await writeFile(join(dir, "k.pem"), "x");
    await writeFile(join(dir, "c.pem"), "x");
    const { config } = loadConfig(
      await file({
        ...minimal,
        link: {
          ...minimal.link,
          username: "dev",
          password: "hunter2",
          cert: join(dir, "c.pem"),
          key: join(dir, "k.pem"),
        },
      }),
      {},
    );
    const shown = redactConfig(config);
    expect(shown.link.password).toBe("<redacted>");
    expect(shown.link.key).toBe("<redacted>");
    expect(shown.link.cert).toBe(join(dir, "c.pem"));
    expect(shown.link.username).toBe("dev");
    expect(JSON.stringify(shown)).not.toContain("hunter2");
    expect(config.link.password).toBe("hunter2");
    // Absent secrets stay absent (not "<redacted>", which would claim one is set).
    expect("password" in redactConfig(loadConfig(await file(minimal), {}).config).link).toBe(false);
  });
});

describe("agent/config/README.md", () => {
  it("documents every key and every environment variable", async () => {
    const readme = await readFile(new URL("../agent/config/README.md", import.meta.url), "utf8");
    for (const key of configKeys()) expect(readme, key).toContain("`" + key + "`");
    for (const name of Object.keys(configEnvVars())) expect(readme, name).toContain("`" + name + "`");
  });
});

// What an adversarial pass found (issue 10, item 11): each of these went wrong before.
describe("hostile config files", () => {
  const ROOT = fileURLToPath(new URL("..", import.meta.url));
  const BIN = join(ROOT, "dist/sharenode.js");
  const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("SHARENODE_")));
  const validText = (extra = "") =>
    `{ "link": { "url": "mqtt://127.0.0.1:1", "fleetPublicKey": "${FLEET_KEY}" }, "store": { "dataDir": "/d"${extra} } }`;

  /** `sharenode run --config FILE` on the built bundle, as a box owner runs it. */
  function runWith(path: string) {
    const options = { encoding: "utf8", input: "", timeout: 20_000, env: cleanEnv } as const;
    const r = spawnSync(process.execPath, [BIN, "run", "--config", path], options);
    if (r.error) throw r.error;
    return { status: r.status, stderr: r.stderr };
  }

  beforeAll(() => {
    if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run \`npm run build\` first`);
  });

  it("refuses keys every JavaScript object already has, at every level, as unknown keys", async () => {
    const names = ["constructor", "toString", "hasOwnProperty", "valueOf", "__proto__"];
    // Written as text: an object literal with "__proto__" would set the prototype, not make a key.
    const extra = names.map((k) => `"${k}": 1`).join(", ");
    const base = { url: '"url": "mqtt://h"', key: `"fleetPublicKey": "${FLEET_KEY}"`, dir: '"dataDir": "/d"' };
    const texts: [string, string][] = [
      ["", `{ ${extra}, "link": { ${base.url}, ${base.key} }, "store": { ${base.dir} } }`],
      ["link.", `{ "link": { ${base.url}, ${base.key}, ${extra} }, "store": { ${base.dir} } }`],
      ["store.", `{ "link": { ${base.url}, ${base.key} }, "store": { ${base.dir}, ${extra} } }`],
      ["share.", `{ "link": { ${base.url}, ${base.key} }, "store": { ${base.dir} }, "share": { ${extra} } }`],
      ["log.", `{ "link": { ${base.url}, ${base.key} }, "store": { ${base.dir} }, "log": { ${extra} } }`],
      [
        "share.uploadWindows[0].",
        `{ "link": { ${base.url}, ${base.key} }, "store": { ${base.dir} },
           "share": { "uploadWindows": [{ "from": "01:00", "to": "02:00", "bytesPerSecond": 0, ${extra} }] } }`,
      ],
    ];
    for (const [prefix, text] of texts) {
      const path = await file(text);
      const problems = problemsOf(() => loadConfig(path, {}));
      const withoutHints = problems.map((p) => p.replace(/ \(did you mean .*\)$/, ""));
      expect(withoutHints).toEqual(names.map((name) => `${prefix}${name}: unknown key`));
      expect(loadConfigLenient(path, {}).problems).toEqual(problems);
    }
    // An inherited name is not a boolean word either.
    const env = {
      SHARENODE_BROKER: "mqtt://h",
      SHARENODE_FLEET_KEY: FLEET_KEY,
      SHARENODE_DATA: "/d",
      SHARENODE_ALLOW_SYSTEM_DISK: "constructor",
    };
    expect(problemsOf(() => loadConfig(undefined, env))).toEqual([
      'store.allowSystemDisk (from SHARENODE_ALLOW_SYSTEM_DISK): must be true or false, got "constructor"',
    ]);
  });

  it("refuses a path with a NUL byte in the config; the daemon exits 2 with one line", async () => {
    const path = await file(validText().replace('"/d"', '"/tmp/a\\u0000b"'));
    const line = 'store.dataDir: must not contain a NUL character (\\u0000), got "/tmp/a\\u0000b"';
    expect(problemsOf(() => loadConfig(path, {}))).toEqual([line]);
    const stateDir = await file({ ...minimal, stateDir: "/var/lib/a\u0000b" });
    expect(problemsOf(() => loadConfig(stateDir, {}))[0]).toMatch(/^stateDir: must not contain a NUL character/);
    const run = runWith(path);
    expect(run.status).toBe(2);
    expect(run.stderr).toBe(`sharenode: config: ${line}\n`);
  });

  it("refuses anything but a regular file of at most 1 MiB, fast and in one line", async () => {
    const zero = runWith("/dev/zero");
    expect(zero.status).toBe(2);
    expect(zero.stderr).toBe(
      "sharenode: config: cannot read config file /dev/zero: not a regular file (a character device)\n",
    );
    // A FIFO with no writer: refused, not waited on (the bundle, so a hang cannot stall this test's process).
    const fifo = join(dir, "config.fifo");
    execFileSync("mkfifo", [fifo]);
    const piped = runWith(fifo);
    expect(piped.status).toBe(2);
    expect(piped.stderr).toBe(`sharenode: config: cannot read config file ${fifo}: not a regular file (a FIFO)\n`);
    // Over the limit: a valid JSON object padded with spaces, refused before it is parsed.
    const big = await file(validText() + " ".repeat(MAX_CONFIG_BYTES));
    expect(problemsOf(() => loadConfig(big, {}))).toEqual([
      `cannot read config file ${big}: larger than 1048576 bytes (1 MiB): a config file is a few hundred bytes`,
    ]);
    expect(loadConfigLenient(big, {}).problems[0]).toMatch(/larger than 1048576 bytes/);
    // At the limit it is still read.
    const padded = validText();
    const atLimit = await file(padded + " ".repeat(MAX_CONFIG_BYTES - Buffer.byteLength(padded)));
    expect(loadConfig(atLimit, {}).config.store.dataDir).toBe("/d");
  });

  it("lists at most 20 problems and counts the rest, on the command line too", async () => {
    const keys = Array.from({ length: 60_000 }, (_, i) => `"k${i}": 0`).join(",");
    const path = await file(`{ ${keys}, ${validText().slice(1)}`);
    const problems = problemsOf(() => loadConfig(path, {}));
    expect(problems).toHaveLength(MAX_PROBLEMS + 1);
    expect(problems[0]).toBe("k0: unknown key");
    expect(problems[MAX_PROBLEMS]).toBe(`... and ${60_000 - MAX_PROBLEMS} more problems`);
    expect(loadConfigLenient(path, {}).problems).toEqual(problems);
    const run = runWith(path);
    expect(run.status).toBe(2);
    expect(run.stderr.split("\n")).toHaveLength(MAX_PROBLEMS + 2);
    // A key of half a megabyte (or one with a terminal escape) is named in a short line, quickly.
    const huge = await file(`{ "${"x".repeat(500_000)}": 1, "\\u001b[2Jbad": 2, "link": {}, "store": {} }`);
    const lines = problemsOf(() => loadConfig(huge, {}));
    expect(lines[0]).toBe(`${"x".repeat(61)}...: unknown key`);
    expect(lines[1]).toBe('"\\u001b[2Jbad": unknown key');
    for (const line of lines) expect(line.length).toBeLessThan(200);
  });

  it("caps string lengths: paths at 4096 characters, URLs at 2048, user names at 1024, passwords at 8192", async () => {
    const at = (n: number) => "/" + "a".repeat(n - 1);
    const longest = await file({ ...minimal, stateDir: at(MAX_PATH_LENGTH) });
    expect(loadConfig(longest, {}).config.stateDir).toHaveLength(4096);
    const long = await file({
      ...minimal,
      stateDir: at(4097),
      link: {
        ...minimal.link,
        url: `mqtt://h/${"u".repeat(1_000_000)}`,
        username: "n".repeat(1025),
        password: "p".repeat(8193),
      },
    });
    expect(problemsOf(() => loadConfig(long, {}))).toEqual([
      "stateDir: must be at most 4096 characters, got 4097",
      "link.url: must be at most 2048 characters, got 1000009",
      "link.username: must be at most 1024 characters, got 1025",
      "link.password: must be at most 8192 characters, got a longer string",
    ]);
    const url = `mqtt://h/${"u".repeat(2048 - 9)}`;
    const fits = await file({
      ...minimal,
      link: { ...minimal.link, url, username: "n".repeat(1024), password: "p".repeat(8192) },
    });
    expect(loadConfig(fits, {}).config.link.url).toHaveLength(MAX_URL_LENGTH);
  });

  it("says what is wrong with a number too large for JSON or for an exact integer", async () => {
    const text = validText(', "reserveBytes": 1152921504606846976, "quota": 1152921504606846976');
    const path = await file(text.replace('"fleetPublicKey"', '"keepaliveSeconds": 1e400, "fleetPublicKey"'));
    expect(problemsOf(() => loadConfig(path, {}))).toEqual([
      "link.keepaliveSeconds: must be an integer from 5 to 65535, got Infinity (out of range: not a finite number)",
      "store.quota: must be at most 9007199254740991 bytes (2^53-1, the largest safe integer), got 1152921504606847000",
      "store.reserveBytes: must be at most 9007199254740991 (2^53-1, the largest safe integer), got 1152921504606847000",
    ]);
    // (JavaScript's shortest spelling of 2^60 ends in 000: the same number.) The largest safe integer is taken.
    const largest = await file(validText(`, "reserveBytes": ${Number.MAX_SAFE_INTEGER}`));
    expect(loadConfig(largest, {}).config.store.reserveBytes).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('takes "auto" for store.dataDir (disk discovery picks the disk) and no other relative path', async () => {
    expect(loadConfig(await file(validText().replace('"/d"', '"auto"')), {}).config.store.dataDir).toBe("auto");
    const relative = await file(validText().replace('"/d"', '"auto/x"'));
    expect(problemsOf(() => loadConfig(relative, {}))).toEqual([
      'store.dataDir: must be an absolute path or "auto", got "auto/x"',
    ]);
  });

  it("the JSON scanner reports a syntax error as an Error with its position", () => {
    const scan = scanJson('{"a": [1, 2,]}');
    expect(scan.error).toBeInstanceOf(Error);
    expect(scan.error).toBeInstanceOf(JsonSyntaxError);
    expect(scan.error!.message).toBe("trailing comma before ']'");
    expect(scan.error!.pos).toBe(12);
    expect(scanJson('{"a": 1, "a": 2}').duplicates).toEqual([{ path: "a", pos: 9 }]);
  });
});
