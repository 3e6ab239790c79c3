// The diagnostics console's commands (agent/console/commands.ts), each run over a fake ConsoleIo the way the shell
// runs them: a temporary state directory with a real device key, a data directory on a "USB disk" of a fake host
// tree (mountinfo, sysfs, /proc/net/route, /etc/resolv.conf under a HostPaths root), the sim board, and the daemon
// either absent or present as a ControlServer with fake handlers. The network parts use a closed local port and a
// real mosquitto. Every output is checked for the device's private key.
import { createPrivateKey } from "node:crypto";
import { existsSync, promises as fsp } from "node:fs";
import { arch, release } from "node:os";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { HostPaths } from "../board/host-paths";
import { version } from "../package.json";
import { ConsoleError, type ConsoleCommand, type ConsoleIo } from "../agent/console/command-api";
import { createConsoleCommands, type ConsoleCommands, type SystemActions } from "../agent/console/commands";
import { selftestCommand } from "../agent/console/commands/selftest";
import { kernelChecks } from "../agent/console/self-checks";
import { ControlServer, type ControlHandlers } from "../agent/console/control";
import { loadOrCreateDeviceIdentity, type DeviceIdentity } from "../agent/identity/device-key";
import { Outbox } from "../agent/link/outbox";
import { checkDataDisk, MARKER_NAME } from "../agent/store/disk-marker";
import { defaultReserveBytes, ObjectStore } from "../agent/store/object-store";
import { ProofLedger } from "../agent/store/proofs";
import { CommandRefused } from "../agent/link/command-gate";
import { bytes } from "../agent/console/format";
import { LogHub } from "../agent/util/log";
import { Broker, freePort } from "./helpers/mosquitto";
import { waiter } from "./helpers/wait";
import { errorMessage } from "../agent/util/errors";

const FLEET_KEY = "ab".repeat(32);
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

/** Every byte any command printed in this file, checked for key material at the end. */
const allOutput: string[] = [];
/** What the fake daemon's `ota` handler was asked. */
const otaRequests: Record<string, unknown>[] = [];
const keyFiles: string[] = [];

const waitFor = waiter({ timeoutMs: 15_000 });

class FakeIo implements ConsoleIo {
  out = "";
  readonly asked: string[] = [];
  readonly controller = new AbortController();
  readonly columns = 100;
  constructor(private readonly answers: (string | undefined)[] = []) {}
  get signal(): AbortSignal {
    return this.controller.signal;
  }
  print(text: string): void {
    this.out += text;
    allOutput.push(text);
  }
  async ask(prompt: string): Promise<string | undefined> {
    this.print(prompt + "\n");
    this.asked.push(prompt);
    return this.answers.shift();
  }
}

// --- the box: fake host tree, state dir with a device key, data dir on a "USB disk" with a store -------------------

const MMC = "devices/platform/soc/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0";
const USB =
  "devices/platform/scb/fd500000.pcie/pci0000:00/0000:01:00.0/usb2/2-1/2-1:1.0/host0/target0:0:0/0:0:0:0/block/sda";
const DEVS = [
  { dev: "179:0", path: MMC, removable: "0" },
  { dev: "179:2", path: `${MMC}/mmcblk0p2` },
  { dev: "8:0", path: USB, removable: "0" },
  { dev: "8:1", path: `${USB}/sda1` },
];

interface Box {
  root: string;
  host: HostPaths;
  stateDir: string;
  usb: string;
  dataDir: string;
  identity: DeviceIdentity;
  configFile: string;
  reboots: number;
  system: SystemActions;
}

async function writeFile(path: string, content: string): Promise<void> {
  await fsp.mkdir(dirname(path), { recursive: true });
  await fsp.writeFile(path, content);
}

/** The fake host: "/" on the SD card, the USB disk mounted at `usb`, a default route and two DNS servers. */
async function fakeHost(root: string, usb: string | undefined): Promise<HostPaths> {
  const hostRoot = join(root, "host");
  const lines = [
    "22 1 179:2 / / rw,noatime shared:1 - ext4 /dev/root rw",
    "26 22 0:22 / /dev/shm rw,nosuid,nodev shared:3 - tmpfs tmpfs rw",
  ];
  if (usb) lines.push(`40 22 8:1 / ${usb} rw,noatime shared:20 - ext4 /dev/sda1 rw`);
  await writeFile(join(hostRoot, "proc/self/mountinfo"), lines.join("\n") + "\n");
  for (const d of DEVS) {
    const dir = join(hostRoot, "sys", d.path);
    await fsp.mkdir(dir, { recursive: true });
    await fsp.writeFile(join(dir, "dev"), `${d.dev}\n`);
    const name = d.path.split("/").at(-1)!;
    if (DEVS.some((whole) => whole.path === dirname(d.path)))
      await fsp.writeFile(join(dir, "partition"), `${/(\d+)$/.exec(name)![1]}\n`);
    if (d.removable) await fsp.writeFile(join(dir, "removable"), `${d.removable}\n`);
    for (const linkDir of ["sys/dev/block", "sys/class/block"]) {
      await fsp.mkdir(join(hostRoot, linkDir), { recursive: true });
      await fsp.symlink(`../../${d.path}`, join(hostRoot, linkDir, linkDir === "sys/dev/block" ? d.dev : name));
    }
    await writeFile(join(hostRoot, "dev", name), "");
  }
  await fsp.symlink("mmcblk0p2", join(hostRoot, "dev/root"));
  await writeFile(
    join(hostRoot, "proc/net/route"),
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
      "eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n" +
      "eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n",
  );
  await writeFile(
    join(hostRoot, "etc/resolv.conf"),
    "# from DHCP\nsearch lan\nnameserver 192.168.1.1\nnameserver 9.9.9.9\n",
  );
  return new HostPaths(hostRoot);
}

/** A box as the daemon leaves it: device key, adopted data disk, a store with two objects. */
async function makeBox(
  options: { url?: string; usbMounted?: boolean; config?: Record<string, unknown> } = {},
): Promise<Box> {
  const root = await fsp.mkdtemp(join(tmpdir(), "sn-console-"));
  cleanups.push(() => fsp.rm(root, { recursive: true, force: true }));
  const stateDir = join(root, "state");
  const usb = join(root, "usb");
  const dataDir = join(usb, "sharenode");
  await fsp.mkdir(dataDir, { recursive: true });
  const host = await fakeHost(root, options.usbMounted === false ? undefined : usb);
  const identity = await loadOrCreateDeviceIdentity(stateDir);
  keyFiles.push(await fsp.readFile(join(stateDir, "device-key.pem"), "utf8"));
  if (options.usbMounted !== false) {
    const check = await checkDataDisk({ dataDir, stateDir, nodeId: identity.deviceId }, host);
    expect(check).toMatchObject({ ok: true, adopted: "new" });
    const store = new ObjectStore({ dataDir, quota: { share: 1 }, reserveBytes: 0 });
    await store.start();
    for (const text of ["first object", "second object, a little longer"])
      await store.ingest(
        (async function* () {
          yield Buffer.from(text);
        })(),
      );
    await store.stop();
  }
  const configFile = join(root, "config.json");
  await fsp.writeFile(
    configFile,
    JSON.stringify(
      options.config ?? {
        stateDir,
        board: "sim",
        link: { url: options.url ?? "mqtt://127.0.0.1:9", fleetPublicKey: FLEET_KEY },
        store: { dataDir },
      },
      null,
      2,
    ),
  );
  const box: Box = {
    root,
    host,
    stateDir,
    usb,
    dataDir,
    identity,
    configFile,
    reboots: 0,
    system: {
      reboot: async () => {
        box.reboots++;
      },
    },
  };
  return box;
}

async function open(box: Box, env: Record<string, string | undefined> = {}): Promise<ConsoleCommands> {
  const c = await createConsoleCommands({ env, configFile: box.configFile, hostPaths: box.host, system: box.system });
  allOutput.push(c.banner);
  cleanups.push(() => c.close());
  return c;
}

function command(c: ConsoleCommands, name: string): ConsoleCommand {
  const found = c.commands.find((x) => x.name === name);
  if (!found) throw new Error(`no command ${name}`);
  return found;
}

async function run(
  c: ConsoleCommands,
  name: string,
  args: string[] = [],
  answers: (string | undefined)[] = [],
): Promise<string> {
  const io = new FakeIo(answers);
  await command(c, name).run(args, io);
  return io.out;
}

/** A running daemon as far as the console can tell: a ControlServer on the box's state dir with fake handlers. */
async function startDaemon(
  box: Box,
  overrides: Partial<ControlHandlers> = {},
): Promise<{ server: ControlServer; hub: LogHub; ledger: ProofLedger }> {
  const hub = new LogHub({ write: () => {} }, "info", () => Date.UTC(2026, 4, 1, 10, 0, 0));
  const ledger = new ProofLedger();
  const handlers: ControlHandlers = {
    status: async () => ({
      deviceId: box.identity.deviceId,
      publicKey: box.identity.publicKeyHex,
      version: "0.1.0",
      uptimeSeconds: 3 * 3600 + 12 * 60,
      link: {
        connected: true,
        connects: 1,
        reconnects: 2,
        bdSeq: 3,
        bytesIn: 2048,
        bytesOut: 4096,
        connectedSince: Date.now() - 60_000,
        lastError: "",
      },
      outbox: { depth: 4, bytes: 12_345, dropped: 0 },
      store: {
        running: true,
        objects: 12,
        usedBytes: 3 * 2 ** 30,
        quotaBytes: 100 * 2 ** 30,
        availableBytes: 200 * 2 ** 30,
        pinned: 1,
      },
    }),
    logTail: (n) => hub.tail(n),
    onLog: (listener) => hub.subscribe(listener),
    proofs: () => ledger.snapshot(),
    // The updater's answers (agent/ota/updater.ts): a committed release, nothing on trial.
    ota: async (request) => {
      otaRequests.push(request);
      if (request.action === "commit") throw new CommandRefused("not-on-trial", "no release is on trial here");
      return {
        version: "0.3.0",
        build: 3,
        slot: "B",
        updatable: true,
        phase: "committed",
        installedBuild: 3,
        floor: 3,
        target: { build: 3, version: "0.3.0" },
        gateSeconds: 300,
      };
    },
    // The compute queue's list (agent/compute/queue.ts): one task running, two ended.
    compute: () => ({
      tasks: [{ taskId: "t-3", state: "running", moduleId: "ab".repeat(32), acceptedAt: Date.now() - 5000 }],
      ended: [
        {
          taskId: "t-2",
          state: "failed",
          moduleId: "ab".repeat(32),
          acceptedAt: Date.now() - 60_000,
          cpuMs: 500,
          wallMs: 510,
          code: "cpu-time",
          reason: "used more than 500 ms of CPU",
        },
        {
          taskId: "t-1",
          state: "done",
          moduleId: "ab".repeat(32),
          acceptedAt: Date.now() - 120_000,
          outputId: "cd".repeat(32),
          cpuMs: 120,
          wallMs: 130,
        },
      ],
      lanes: 1,
      cpuPercent: 25,
    }),
    ...overrides,
  };
  const server = new ControlServer({ stateDir: box.stateDir, handlers });
  await server.start();
  cleanups.push(() => server.stop());
  return { server, hub, ledger };
}

async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string, prefix: string) => {
    for (const e of await fsp.readdir(d, { withFileTypes: true }).catch(() => [])) {
      out.push(prefix + e.name + (e.isDirectory() ? "/" : ""));
      if (e.isDirectory()) await walk(join(d, e.name), prefix + e.name + "/");
    }
  };
  await walk(dir, "");
  return out.sort();
}

let broker: Broker;
beforeAll(async () => {
  broker = await Broker.start();
});
afterAll(async () => {
  await broker?.stop();
});

// ---------------------------------------------------------------------------------------------------------------

describe("console commands without a daemon", () => {
  it("ledger without a ledger yet says so in one line", async () => {
    const box = await makeBox();
    const c = await open(box);
    expect(await run(c, "ledger")).toMatch(/^(no ledger in .* yet|no device key yet .*)\n$/);
  });

  it("has every command, each with a summary; the banner names the device and says the daemon is not running", async () => {
    const box = await makeBox();
    const c = await open(box);
    expect(c.commands.map((x) => x.name)).toEqual([
      "status",
      "version",
      "board",
      "disks",
      "store",
      "link",
      "net",
      "temp",
      "log",
      "proofs",
      "ledger",
      "ota",
      "compute",
      "selftest",
      "reboot",
      "factory-reset",
    ]);
    for (const x of c.commands) expect(x.summary.length).toBeGreaterThan(10);
    expect(c.banner).toContain(`sharenode ${version}`);
    expect(c.banner).toContain(`device ${box.identity.deviceId}`);
    expect(c.banner).toContain("daemon not running");
    await expect(command(c, "status").run(["extra"], new FakeIo())).rejects.toThrow(ConsoleError);
  });

  it("version: sharenode, node, arch, kernel", async () => {
    const c = await open(await makeBox());
    const out = await run(c, "version");
    expect(out).toMatch(new RegExp(`^sharenode\\s+${version.replace(/\./g, "\\.")}$`, "m"));
    expect(out).toMatch(new RegExp(`^node\\s+${process.version.replace(/\./g, "\\.")} \\(V8 `, "m"));
    expect(out).toMatch(new RegExp(`^arch\\s+${arch()}$`, "m"));
    expect(out).toContain(release());
  });

  it("status: device, daemon not running, sim board, store read from the disk, outbox on disk, temperature, config ok", async () => {
    const box = await makeBox();
    // Three messages waiting in the outbox the daemon left.
    const outbox = new Outbox({
      path: join(box.stateDir, "outbox.log"),
      deviceId: box.identity.deviceId,
      publisher: {
        connected: false,
        publish: () => Promise.reject(new Error("offline")),
        on: () => undefined,
        off: () => undefined,
      },
    });
    await outbox.start();
    for (let i = 0; i < 3; i++) await outbox.enqueue("events", { type: "test", i });
    await outbox.stop();
    const c = await open(box);
    const out = await run(c, "status");
    expect(out).toMatch(new RegExp(`^device\\s+${box.identity.deviceId}$`, "m"));
    expect(out).toMatch(new RegExp(`^public key\\s+${box.identity.publicKeyHex}$`, "m"));
    expect(out).toMatch(/^daemon\s+not running \(no daemon answers on .*control\.sock\)$/m);
    expect(out).toMatch(/^board\s+sim: /m);
    expect(out).toMatch(/^store\s+2 objects, .* used of .* quota \(read from the disk\)$/m);
    expect(out).toMatch(/^link\s+no connection: the daemon is not running \(broker mqtt:\/\/127\.0\.0\.1:9\)$/m);
    expect(out).toMatch(/^outbox\s+3 messages waiting on disk \(/m);
    expect(out).toMatch(/^temp\s+45\.0 C \(work pauses at \d+ C\)$/m);
    expect(out).toMatch(/^config\s+.*config\.json: ok$/m);
  });

  it("status with a broken config: every problem shown, the rest from what can be used", async () => {
    const box = await makeBox();
    await fsp.writeFile(
      box.configFile,
      JSON.stringify({
        stateDir: box.stateDir,
        board: "sim",
        link: { ulr: "mqtt://x" },
        store: { dataDir: box.dataDir, quota: "150%" },
      }),
    );
    const c = await open(box, { SHARENODE_BROKER: "mqtt://127.0.0.1:9" });
    expect(c.banner).toMatch(/config: \d+ problems \(see status\)/);
    const out = await run(c, "status");
    expect(out).toMatch(/config\.json: \d+ problems/);
    expect(out).toContain('link.ulr: unknown key (did you mean "url"?)');
    expect(out).toContain("link.fleetPublicKey: required");
    expect(out).toContain("store.quota: must be a number of bytes");
    // The state dir, data dir and board still come from the file, the broker from the environment.
    expect(out).toContain(box.identity.deviceId);
    expect(out).toMatch(/^store\s+2 objects/m);
    expect(out).toContain("broker mqtt://127.0.0.1:9");

    // Not even JSON: defaults and the environment.
    await fsp.writeFile(box.configFile, "{ this is not json");
    const c2 = await open(box, { SHARENODE_STATE: box.stateDir, SHARENODE_DATA: box.dataDir, SHARENODE_BOARD: "sim" });
    const out2 = await run(c2, "status");
    expect(out2).toMatch(/not valid JSON/);
    expect(out2).toContain(box.identity.deviceId);
    expect(out2).toMatch(/^link\s+no connection: .*\(broker \(not configured\)\)$/m);
  });

  it("board: the sim profile, how it was chosen, console, thermal limits, problems", async () => {
    const c = await open(await makeBox());
    const out = await run(c, "board");
    expect(out).toMatch(/^board\s+sim$/m);
    expect(out).toMatch(/^detected by\s+config board="sim"/m);
    expect(out).toMatch(/^console\s+/m);
    expect(out).toMatch(/^thermal\s+work pauses at \d+ C, resumes below \d+ C$/m);
    expect(out).toMatch(/^problems\s+/m);
  });

  it("disks: the mounted filesystems classified, the data disk marked and accepted; refused when the USB disk is not mounted", async () => {
    const box = await makeBox();
    const out = await run(await open(box), "disks");
    expect(out).toMatch(/^\s+\/\s+\/dev\/mmcblk0p2\s+ext4\s+root\b/m);
    expect(out).toMatch(/^\s+\/dev\/shm\s+tmpfs\s+tmpfs\s+virtual\b/m);
    expect(out).toMatch(new RegExp(`^\\*\\s+${box.usb}\\s+/dev/sda1\\s+ext4\\s+usb\\b`, "m"));
    expect(out).toMatch(new RegExp(`^data dir\\s+${box.dataDir} on /dev/sda1 \\(${box.usb}, ext4, usb\\)`, "m"));
    expect(out).toMatch(/^store\s+accepted: this device's disk [0-9a-f]{32}$/m);

    // The USB disk did not mount: the data dir is an empty directory on the SD card.
    await fsp.writeFile(box.host.proc("self/mountinfo"), "22 1 179:2 / / rw,noatime shared:1 - ext4 /dev/root rw\n");
    await fsp.rename(join(box.dataDir, MARKER_NAME), join(box.root, "marker.away"));
    const refused = await run(await open(box), "disks");
    expect(refused).toMatch(
      /^store\s+refused \(marker-missing\): data directory .* has no disk marker but this device adopted disk/m,
    );
    expect(refused).toContain("is the USB disk mounted?");
    const status = await run(await open(box), "status");
    expect(status).toMatch(/^store\s+refused: .*no disk marker/m);
  });

  it("disks: a fresh box says the daemon will adopt the disk; another device's disk is refused", async () => {
    const box = await makeBox();
    await fsp.rm(join(box.stateDir, "data-disk.json"));
    await fsp.rm(join(box.dataDir, MARKER_NAME));
    expect(await run(await open(box), "disks")).toMatch(
      /^store\s+accepted: no store here yet: the daemon adopts this disk at its first start$/m,
    );
    await fsp.writeFile(
      join(box.dataDir, MARKER_NAME),
      JSON.stringify({ v: 1, nodeId: "cd".repeat(16), diskId: "ef".repeat(16) }),
    );
    expect(await run(await open(box), "disks")).toMatch(
      /^store\s+refused \(foreign-node\): .*holds the disk of device cdcd/m,
    );
    // Nothing was adopted or written by looking.
    await expect(fsp.access(join(box.stateDir, "data-disk.json"))).rejects.toMatchObject({ code: "ENOENT" });
  });

  it('disks with store.dataDir "auto": the adopted USB disk; unplugged: refused as a missing disk; nothing adopted and no USB disk: no disk', async () => {
    const box = await makeBox();
    const config = JSON.parse(await fsp.readFile(box.configFile, "utf8")) as { store: { dataDir: string } };
    config.store.dataDir = "auto";
    await fsp.writeFile(box.configFile, JSON.stringify(config));
    const out = await run(await open(box), "disks");
    expect(out).toMatch(new RegExp(`^\\*\\s+${box.usb}\\s+/dev/sda1\\s+ext4\\s+usb\\b`, "m"));
    expect(out).toMatch(new RegExp(`^data dir\\s+${box.dataDir} on /dev/sda1 \\(${box.usb}, ext4, usb\\)`, "m"));
    expect(out).toMatch(/^store\s+accepted: this device's disk [0-9a-f]{32}$/m);

    await fsp.writeFile(box.host.proc("self/mountinfo"), "22 1 179:2 / / rw,noatime shared:1 - ext4 /dev/root rw\n");
    await fsp.rename(join(box.dataDir, MARKER_NAME), join(box.root, "marker.away"));
    expect(await run(await open(box), "disks")).toMatch(
      /^store\s+refused \(marker-missing\): .*is the USB disk mounted\?/m,
    );
    await fsp.rm(join(box.stateDir, "data-disk.json"));
    expect(await run(await open(box), "disks")).toMatch(
      /^store\s+refused \(no-data-disk\): store.dataDir is "auto" but no writable USB disk is mounted besides the system disk/m,
    );
  });

  it("store: read from the data directory; in use by another process; refused disk", async () => {
    const box = await makeBox();
    await fsp.mkdir(join(box.dataDir, "quarantine"), { recursive: true });
    await fsp.writeFile(join(box.dataDir, "quarantine", `${"1".repeat(64)}.123`), "bad");
    await fsp.writeFile(join(box.dataDir, "quarantine", `${"1".repeat(64)}.123.obao`), "bad");
    const c = await open(box);
    const out = await run(c, "store");
    expect(out).toMatch(/^source\s+the data directory, read now \(the daemon is not running\)$/m);
    expect(out).toMatch(/^objects\s+2 \(0 pinned\)$/m);
    expect(out).toMatch(/^used\s+\d/m);
    expect(out).toMatch(/^quota\s+\d/m);
    expect(out).toMatch(/^reserve\s+.* kept free$/m);
    expect(out).toMatch(/^quarantined\s+1 object$/m);
    expect(out).toMatch(/^last scrub\s+unknown/m);
    // The same used bytes ObjectStore reports (read without opening it). The quota follows free space, which
    // other tests change meanwhile: not compared.
    const store = new ObjectStore({
      dataDir: box.dataDir,
      quota: { share: 1 },
      reserveBytes: defaultReserveBytes((await fsp.statfs(box.dataDir)).blocks * (await fsp.statfs(box.dataDir)).bsize),
    });
    await store.start();
    const truth = await store.status();
    await store.stop();
    expect(out).toMatch(new RegExp(`^used\\s+${bytes(truth.usedBytes).replace(".", "\\.")}$`, "m"));

    // `sharenode store` (or anything else) holds the store: the console reads its index, takes no lock.
    await fsp.writeFile(join(box.dataDir, "store.lock"), `${process.pid}\n`);
    const held = await run(c, "store");
    expect(held).toMatch(/^objects\s+2 \(0 pinned\)$/m);
    expect(held).toMatch(new RegExp(`^in use\\s+by process ${process.pid}: `, "m"));
    expect(await fsp.readFile(join(box.dataDir, "store.lock"), "utf8")).toBe(`${process.pid}\n`);
    await fsp.rm(join(box.dataDir, "store.lock"));

    // A torn tail (a write cut by a power cut) is reported, not repaired: the index is not touched.
    const index = join(box.dataDir, "index.log");
    await fsp.appendFile(index, Buffer.from([9, 0, 0, 0, 1, 2]));
    const before = await fsp.readFile(index);
    expect(await run(c, "store")).toMatch(/^index\s+6 B torn off the end of index\.log/m);
    expect((await fsp.readFile(index)).equals(before)).toBe(true);

    await fsp.writeFile(box.host.proc("self/mountinfo"), "22 1 179:2 / / rw,noatime shared:1 - ext4 /dev/root rw\n");
    expect(await run(await open(box), "store")).toMatch(
      /^store\s+refused \(system-disk\): data directory .* is on the root filesystem/m,
    );
  });

  it("link: broker without its password, no connection, outbox depth on disk", async () => {
    const box = await makeBox();
    const c = await open(box, {
      SHARENODE_MQTT_USERNAME: box.identity.deviceId,
      SHARENODE_MQTT_PASSWORD: "s3cret-passw0rd",
    });
    const out = await run(c, "link");
    expect(out).toMatch(
      new RegExp(`^broker\\s+mqtt://127\\.0\\.0\\.1:9 \\(MQTT 5, user ${box.identity.deviceId}, password set\\)$`, "m"),
    );
    expect(out).toMatch(/^state\s+no connection: the daemon is not running \(try net and selftest\)$/m);
    expect(out).toMatch(/^outbox\s+0 messages waiting on disk \(0 B\)$/m);
    for (const name of ["status", "net"]) expect(await run(c, name)).not.toContain("s3cret-passw0rd");
    expect(allOutput.join("")).not.toContain("s3cret-passw0rd");
  });

  it("link: credentials in a (broken) config's URL are never shown, and the URL is not used", async () => {
    const box = await makeBox({ config: {} });
    await fsp.writeFile(box.configFile, JSON.stringify({ link: { url: "mqtt://dev:hunter2-pw@127.0.0.1:9" } }));
    const c = await open(box, { SHARENODE_STATE: box.stateDir, SHARENODE_DATA: box.dataDir, SHARENODE_BOARD: "sim" });
    const outputs = [await run(c, "link"), await run(c, "status"), await run(c, "net")].join("");
    expect(outputs).toContain("link.url: must not carry credentials");
    // A wrong value is not used (the daemon would refuse it too): the broker counts as not configured.
    expect(outputs).toMatch(/^broker\s+\(not configured\)/m);
    expect(outputs).not.toContain("hunter2-pw");
  });

  it("log and proofs: say the daemon is not running, and where its log goes", async () => {
    const c = await open(await makeBox());
    const log = await run(c, "log");
    expect(log).toMatch(/^the daemon is not running: no daemon answers on .*control\.sock$/m);
    expect(log).toContain("journalctl -u sharenode");
    expect(await run(c, "log", ["-f"])).toMatch(/the daemon is not running/);
    await expect(run(c, "log", ["-x"])).rejects.toThrow(/unknown argument '-x'/);
    await expect(run(c, "log", ["0"])).rejects.toThrow(/LINES must be a number from 1 to 500/);
    const proofs = await run(c, "proofs");
    expect(proofs).toMatch(/^the daemon is not running: /m);
    expect(proofs).toContain("proof counters live in the running daemon");
  });

  it("status says so when a daemon holds the state lock but its control socket does not answer", async () => {
    const box = await makeBox();
    await fsp.writeFile(join(box.stateDir, "agent.lock"), `${process.pid}\n`);
    const out = await run(await open(box), "status");
    expect(out).toMatch(
      new RegExp(`^daemon\\s+running as pid ${process.pid}, but its control socket does not answer`, "m"),
    );
  });

  it("temp: every zone of the sim board, the governing temperature and the limits; hot when over the pause limit", async () => {
    const box = await makeBox();
    const c = await open(box);
    const out = await run(c, "temp");
    expect(out).toMatch(/^thermal_zone0\s+cpu-thermal\s+45\.0 C$/m);
    expect(out).toMatch(/^governing\s+45\.0 C$/m);
    expect(out).toMatch(/^limits\s+work pauses at (\d+) C, resumes below \d+ C$/m);
    const pause = Number(/work pauses at (\d+) C/.exec(out)![1]);
    await fsp.writeFile(join(box.dataDir, "sim-board/sys/class/thermal/thermal_zone0/temp"), `${(pause + 5) * 1000}\n`);
    expect(await run(c, "temp")).toMatch(
      new RegExp(`^governing\\s+${pause + 5}\\.0 C \\(at or above the pause limit`, "m"),
    );
    expect(await run(c, "status")).toMatch(/^temp\s+\d+\.0 C \(hot: work pauses\)/m);
  });
});

describe("console commands with a running daemon (a ControlServer with fake handlers)", () => {
  it("status, store and link show the daemon's live state", async () => {
    const box = await makeBox();
    await startDaemon(box);
    const c = await open(box);
    expect(c.banner).toMatch(/daemon running since .* \(up 3h 12m\)/);
    const status = await run(c, "status");
    expect(status).toMatch(/^daemon\s+running since \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ \(up 3h 12m\)$/m);
    expect(status).toMatch(/^store\s+12 objects, 3\.00 GiB used of 100 GiB quota$/m);
    expect(status).toMatch(/^link\s+connected to mqtt:\/\/127\.0\.0\.1:9 since /m);
    expect(status).toMatch(/^outbox\s+4 messages waiting \(12\.1 KiB\)$/m);

    const store = await run(c, "store");
    expect(store).toMatch(/^source\s+the running daemon$/m);
    expect(store).toMatch(/^objects\s+12 \(1 pinned\)$/m);
    expect(store).toMatch(/^disk free\s+200 GiB$/m);
    expect(store).toMatch(/^quarantined\s+0 objects$/m);
    expect(store).toMatch(/^last scrub\s+not reported by this daemon$/m);

    const link = await run(c, "link");
    expect(link).toMatch(/^state\s+connected since .* \(1m 0s\)$/m);
    expect(link).toMatch(/^connects\s+1 \(2 reconnect attempts\)$/m);
    expect(link).toMatch(/^last error\s+none$/m);
    expect(link).toMatch(/^traffic\s+in 2\.00 KiB, out 4\.00 KiB$/m);
    expect(link).toMatch(/^outbox\s+4 messages waiting \(12\.1 KiB\)$/m);
  });

  it("store and link when the daemon's store is refused and its link is down", async () => {
    const box = await makeBox();
    await startDaemon(box, {
      status: async () => ({
        uptimeSeconds: 5,
        link: { connected: false, connects: 0, reconnects: 7, lastError: "connect ECONNREFUSED 127.0.0.1:9" },
        outbox: { depth: 0, bytes: 8 },
        store: {
          running: false,
          code: "marker-missing",
          reason: "data directory /mnt/usb/sharenode has no disk marker",
        },
      }),
    });
    const c = await open(box);
    expect(await run(c, "store")).toMatch(
      /^store\s+not running: data directory \/mnt\/usb\/sharenode has no disk marker \(marker-missing\)$/m,
    );
    expect(await run(c, "status")).toMatch(
      /^link\s+not connected to mqtt:\/\/127\.0\.0\.1:9: connect ECONNREFUSED 127\.0\.0\.1:9$/m,
    );
    const link = await run(c, "link");
    expect(link).toMatch(/^state\s+not connected$/m);
    expect(link).toMatch(/^last error\s+connect ECONNREFUSED/m);
  });

  it("log: the last lines from the daemon's ring", async () => {
    const box = await makeBox();
    const { hub } = await startDaemon(box);
    const c = await open(box);
    expect(await run(c, "log")).toBe("(no log lines yet)\n");
    for (let i = 1; i <= 30; i++) hub.logger("agent").info(`line ${i}`);
    const out = await run(c, "log");
    expect(out.trimEnd().split("\n")).toHaveLength(20);
    expect(out).toMatch(/info  agent: line 11\n/);
    expect(out).toMatch(/info  agent: line 30\n$/);
    expect(
      (await run(c, "log", ["3"]))
        .trimEnd()
        .split("\n")
        .map((l) => l.slice(-7)),
    ).toEqual(["line 28", "line 29", "line 30"]);
  });

  it("log -f: the last lines, then new ones as they come, until Ctrl-C; and when the daemon stops", async () => {
    const box = await makeBox();
    const { hub, server } = await startDaemon(box);
    const log = hub.logger("agent");
    log.info("old 1");
    log.info("old 2");
    const c = await open(box);
    const io = new FakeIo();
    const following = command(c, "log").run(["-f", "1"], io);
    await waitFor("the tail", () => io.out.includes("old 2"));
    expect(io.out).not.toContain("old 1");
    log.warn("new 1");
    await waitFor("a new line", () => io.out.includes("warn  agent: new 1"));
    log.info("new 2");
    await waitFor("another new line", () => io.out.includes("new 2"));
    io.controller.abort();
    await following;
    log.info("after Ctrl-C");
    expect(io.out).not.toContain("after Ctrl-C");

    const io2 = new FakeIo();
    const second = command(c, "log").run(["-f"], io2);
    await waitFor("following", () => io2.out.includes("following the daemon's log"));
    log.info("still here");
    await waitFor("the line", () => io2.out.includes("still here"));
    await server.stop();
    await second;
    expect(io2.out).toMatch(/the daemon closed the connection \(did it stop\?\)\n$/);
  });

  it("ota: what runs and the update's state; commit refused in one line when nothing is on trial; apply sends a whole path", async () => {
    const box = await makeBox();
    await startDaemon(box);
    const c = await open(box);
    const out = await run(c, "ota");
    expect(out).toMatch(/^running +0\.3\.0 \(build 3, slot B\)$/m);
    expect(out).toMatch(/^update +committed: build 3 \(0\.3\.0\)$/m);
    expect(out).toMatch(/^floor +builds below 3 are never installed$/m);
    await expect(run(c, "ota", ["commit"])).rejects.toThrow(/^the daemon refused ota: no release is on trial here$/);
    await expect(run(c, "ota", ["apply"])).rejects.toThrow(/^ota apply takes one directory$/);
    await expect(run(c, "ota", ["upgrade"])).rejects.toThrow(/unknown action 'upgrade'/);
    const computeOut = await run(c, "compute");
    expect(computeOut).toMatch(
      /^1 lane\(s\) for 25 % of the box\ntask +state +accepted +cpu_ms +output or reason\nt-3 +running +\S.* +- *\n/,
    );
    expect(computeOut).toMatch(/^ +t-2 +failed +.+ +500 +cpu-time: used more than 500 ms of CPU$/m);
    expect(computeOut).toMatch(/^ +t-1 +done +.+ +120 +cdcdcdcdcdcdcdcd$/m);
    await expect(run(c, "compute", ["x"])).rejects.toThrow(ConsoleError);
    otaRequests.length = 0;
    await run(c, "ota", ["apply", "usb/release"]);
    expect(otaRequests).toEqual([{ op: "ota", action: "apply", dir: join(process.cwd(), "usb/release") }]);
  });

  it("proofs: counters and the last challenges", async () => {
    const box = await makeBox();
    const { ledger } = await startDaemon(box);
    const c = await open(box);
    expect(await run(c, "proofs")).toMatch(
      /^passed\s+0\nfailed\s+0\nno challenges answered since the daemon started\n$/,
    );
    ledger.record({ ts: Date.UTC(2026, 4, 1, 10, 0, 0), objectId: "a".repeat(64), ok: true });
    ledger.record({
      ts: Date.UTC(2026, 4, 1, 10, 5, 0),
      objectId: "b".repeat(64),
      ok: false,
      code: "not-found",
      message: "no object bbbb in the store",
    });
    const out = await run(c, "proofs");
    expect(out).toMatch(/^passed\s+1$/m);
    expect(out).toMatch(/^failed\s+1$/m);
    expect(out).toMatch(new RegExp(`^  2026-05-01 10:00:00Z  ${"a".repeat(64)}  ok$`, "m"));
    expect(out).toMatch(
      new RegExp(`^  2026-05-01 10:05:00Z  ${"b".repeat(64)}  FAIL not-found: no object bbbb in the store$`, "m"),
    );
  });

  it("a daemon's error reply is a ConsoleError, not a crash", async () => {
    const box = await makeBox();
    await startDaemon(box, {
      proofs: () => {
        throw new Error("ledger unavailable");
      },
    });
    const c = await open(box);
    await expect(run(c, "proofs")).rejects.toThrow(ConsoleError);
    await expect(run(c, "proofs")).rejects.toThrow(/the daemon refused proofs: ledger unavailable/);
  });

  it("a daemon whose status fails still counts as running; status shows the rest", async () => {
    const box = await makeBox();
    await startDaemon(box, {
      status: async () => {
        throw new Error("store status failed: EIO");
      },
    });
    const c = await open(box);
    expect(c.banner).toContain("daemon running, but the daemon refused status: store status failed: EIO");
    const out = await run(c, "status");
    expect(out).toMatch(/^daemon\s+running, but the daemon refused status: store status failed: EIO$/m);
    expect(out).toMatch(/^board\s+sim: /m);
    await expect(run(c, "factory-reset", [], ["x"])).rejects.toThrow(/the daemon is running/);
  });
});

describe("net", () => {
  it("interfaces, default route, DNS servers, and a broker on a closed port: refused, quickly, with a reason", async () => {
    const port = await freePort();
    const box = await makeBox({ url: `mqtt://127.0.0.1:${port}` });
    const out = await run(await open(box), "net");
    expect(out).toMatch(/^interfaces\s+lo: 127\.0\.0\.1\/8/m);
    expect(out).toMatch(/^default route\s+IPv4 via 192\.168\.1\.1 dev eth0$/m);
    expect(out).toMatch(/^DNS servers\s+192\.168\.1\.1, 9\.9\.9\.9$/m);
    expect(out).toMatch(
      new RegExp(`^broker\\s+mqtt://127\\.0\\.0\\.1:${port} \\(127\\.0\\.0\\.1 port ${port}\\)$`, "m"),
    );
    expect(out).toMatch(/^  lookup\s+ok\s+127\.0\.0\.1 is an address: no lookup$/m);
    expect(out).toMatch(
      new RegExp(
        `^  connect\\s+FAIL\\s+[\\d.]+ ms\\s+127\\.0\\.0\\.1:${port}: ECONNREFUSED \\(nothing listens there`,
        "m",
      ),
    );
  });

  it("a reachable broker by name: lookup and connect with timings", async () => {
    const box = await makeBox({ url: `mqtt://localhost:${broker.port}` });
    const out = await run(await open(box), "net");
    expect(out).toMatch(/^  lookup\s+ok\s+[\d.]+ ms\s+localhost is /m);
    expect(out).toMatch(/^  connect\s+(ok|FAIL)/m);
    // localhost may resolve to ::1 first where mosquitto listens on 127.0.0.1 only: the IPv4 URL must connect.
    const box4 = await makeBox({ url: broker.url });
    expect(await run(await open(box4), "net")).toMatch(
      new RegExp(`^  connect\\s+ok\\s+[\\d.]+ ms\\s+connected to 127\\.0\\.0\\.1:${broker.port}$`, "m"),
    );
  });

  it("no route, no resolv.conf, no broker configured: clear lines; Ctrl-C ends the checks", async () => {
    const box = await makeBox({ url: "mqtts://localhost:8883" });
    await fsp.writeFile(
      box.host.proc("net/route"),
      "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n",
    );
    await fsp.rm(box.host.etc("resolv.conf"));
    const c = await open(box);
    const io = new FakeIo();
    io.controller.abort();
    await command(c, "net").run([], io);
    expect(io.out).toMatch(/^default route\s+IPv4: none \(no way out of the local network\)$/m);
    expect(io.out).toMatch(/^DNS servers\s+\/etc\/resolv\.conf unreadable$/m);
    expect(io.out).toMatch(/^broker\s+mqtts:\/\/localhost:8883 \(localhost port 8883, TLS\)$/m);
    expect(io.out).toMatch(/^clock\s+.*TLS certificates need the right time/m);
    expect(io.out).toMatch(/^  lookup\s+FAIL\s+[\d.]+ ms\s+localhost: interrupted$/m);

    const none = await makeBox({ config: {} });
    await fsp.writeFile(
      none.configFile,
      JSON.stringify({ stateDir: none.stateDir, board: "sim", store: { dataDir: none.dataDir } }),
    );
    expect(await run(await open(none), "net")).toMatch(/^broker\s+not configured \(link\.url\)$/m);
  });
});

describe("selftest", () => {
  it("passes: kernels, the data disk, the broker round trip", async () => {
    const box = await makeBox({ url: broker.url });
    const out = await run(await open(box), "selftest");
    expect(out).toMatch(/^PASS  blake3 (simd|scalar)\s+8 official vectors; [\d.]+ MB\/s$/m);
    expect(out).toMatch(/^PASS  sha256\s+4 FIPS 180-2 vectors/m);
    expect(out).toMatch(/^PASS  blake3 simd( = scalar)?\s+/m);
    expect(out).toMatch(/^PASS  data disk write\/read\s+8 MiB: write\+fsync [\d.]+ MB\/s, read [\d.]+ MB\/s/m);
    expect(out).toMatch(
      new RegExp(
        `^PASS  broker round trip\\s+CONNACK [\\d.]+ ms, SUBACK [\\d.]+ ms \\(sharenode/v1/${box.identity.deviceId}/cmd/\\+, client ${box.identity.deviceId.slice(0, 16)}-console-[0-9a-f]{6}\\)$`,
        "m",
      ),
    );
    expect(out).not.toContain("FAIL");
    expect(out).toMatch(/^selftest: \d+ passed, 0 failed$/m);
    // The temp file is gone.
    expect((await fsp.readdir(box.dataDir)).filter((n) => n.startsWith(".sharenode-selftest-"))).toEqual([]);
  });

  it("fails the disk check when the data dir cannot be written, and the broker check when nothing listens; never throws", async () => {
    const port = await freePort();
    const box = await makeBox({ url: `mqtt://127.0.0.1:${port}` });
    // As root, permissions do not stop a write: a data "directory" that is a file does.
    const notADir = join(box.root, "data-file");
    await fsp.writeFile(notADir, "x");
    const config = JSON.parse(await fsp.readFile(box.configFile, "utf8")) as { store: { dataDir: string } };
    config.store.dataDir = notADir;
    await fsp.writeFile(box.configFile, JSON.stringify(config));
    const out = await run(await open(box), "selftest");
    expect(out).toMatch(/^PASS  sha256/m);
    expect(out).toMatch(new RegExp(`^FAIL  data disk write/read\\s+${notADir} is not a directory$`, "m"));
    expect(out).toMatch(/^FAIL  broker round trip\s+connect: .*ECONNREFUSED/m);
    expect(out).toMatch(/^selftest: \d+ passed, 2 failed$/m);

    config.store.dataDir = join(box.root, "missing", "dir");
    await fsp.writeFile(box.configFile, JSON.stringify(config));
    expect(await run(await open(box), "selftest")).toMatch(/^FAIL  data disk write\/read\s+.*missing\/dir: ENOENT$/m);
  });

  it("fails the disk check on a read-only filesystem", async () => {
    const box = await makeBox({ url: broker.url });
    const ro = join(box.root, "ro");
    await fsp.mkdir(ro);
    const { execFileSync } = await import("node:child_process");
    try {
      execFileSync("mount", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", ro], { stdio: "pipe" });
    } catch (err) {
      throw new Error(`this test mounts a read-only tmpfs and needs root (CI runs as root): ${errorMessage(err)}`, {
        cause: err,
      });
    }
    cleanups.push(() => void execFileSync("umount", [ro]));
    const config = JSON.parse(await fsp.readFile(box.configFile, "utf8")) as { store: { dataDir: string } };
    config.store.dataDir = ro;
    await fsp.writeFile(box.configFile, JSON.stringify(config));
    const out = await run(await open(box), "selftest");
    expect(out).toMatch(/^FAIL  data disk write\/read\s+EROFS \(read-only filesystem: see dmesg\)/m);
    expect(out).toMatch(/^PASS  broker round trip/m);
  });

  it("on a CPU without SIMD the SIMD check is N/A: neither passed nor failed, and it hides no failure", async () => {
    // This machine runs SIMD: the kernel checks are told it does not, as a Cortex-A5 without NEON would say.
    const io = new FakeIo();
    const outcome = await selftestCommand([() => kernelChecks(false)]).run([], io);
    expect(io.out).toMatch(/^N\/A   blake3 simd\s+not available on this CPU\/runtime \(scalar kernel in use\)$/m);
    expect(io.out).not.toMatch(/^PASS  blake3 simd/m);
    expect(io.out).toMatch(/^PASS  blake3 scalar\s+8 official vectors/m);
    expect(io.out).toMatch(/^PASS  sha256\s+4 FIPS 180-2 vectors/m);
    expect(io.out).toMatch(/^selftest: 2 passed, 0 failed, 1 not applicable$/m);
    expect(outcome).toEqual({ ok: true });

    const failing = new FakeIo();
    const broken = await selftestCommand([
      () => kernelChecks(false),
      () => Promise.reject(new Error("disk on fire")),
    ]).run([], failing);
    expect(failing.out).toMatch(/^FAIL  check\s+disk on fire$/m);
    expect(failing.out).toMatch(/^selftest: 2 passed, 1 failed, 1 not applicable$/m);
    expect(broken).toEqual({ ok: false });
  });

  it("fails the broker check without a device key, with a reason", async () => {
    const box = await makeBox({ url: broker.url });
    await fsp.rm(join(box.stateDir, "device-key.pem"));
    const out = await run(await open(box), "selftest");
    expect(out).toMatch(/^FAIL  broker round trip\s+no device key yet/m);
  });
});

describe("reboot and factory-reset", () => {
  it("reboot: only the typed word reboots", async () => {
    const box = await makeBox();
    const c = await open(box);
    expect(await run(c, "reboot", [], ["yes"])).toMatch(/cancelled: nothing was done/);
    expect(await run(c, "reboot", [], [undefined])).toMatch(/cancelled/);
    expect(box.reboots).toBe(0);
    expect(await run(c, "reboot", [], [" reboot "])).toMatch(/rebooting\.\.\./);
    expect(box.reboots).toBe(1);
    box.system.reboot = async () => {
      throw new Error("reboot: command not found");
    };
    await expect(run(c, "reboot", [], ["reboot"])).rejects.toThrow(/reboot failed: reboot: command not found/);
  });

  it("factory-reset: explains first; a wrong answer erases nothing; the device's short id erases exactly what was listed", async () => {
    const box = await makeBox();
    // The config file may even live in the state directory: it is kept.
    const configInState = join(box.stateDir, "config.json");
    await fsp.copyFile(box.configFile, configInState);
    box.configFile = configInState;
    await fsp.writeFile(join(box.stateDir, "nonces.log"), "x");
    await fsp.writeFile(join(box.stateDir, "outbox.log"), "x");
    await fsp.writeFile(join(box.dataDir, "keep-me.txt"), "the owner's file");
    const c = await open(box);
    await run(c, "temp"); // makes the sim board's tree in the data directory: not the store's, kept
    const stateBefore = await listTree(box.stateDir);
    const dataBefore = await listTree(box.dataDir);

    const io = new FakeIo(["factory-reset"]);
    await command(c, "factory-reset").run([], io);
    const shortId = box.identity.deviceId.slice(0, 8);
    expect(io.asked).toEqual([`To erase, type this device's short id, ${shortId}; anything else cancels: `]);
    expect(io.out).toMatch(/^factory-reset erases:\n  in the state directory /);
    for (const name of ["device-key.pem", "data-disk.json", "nonces.log", "outbox.log"])
      expect(io.out).toContain(join(box.stateDir, name));
    expect(io.out).toMatch(/device-key\.pem\s+the device key: the box gets a new key and device id at the next start/);
    for (const name of ["objects", "index.log", "quarantine", "tmp", MARKER_NAME])
      expect(io.out).toContain(join(box.dataDir, name));
    expect(io.out).toContain(`It keeps:\n  the config file ${configInState}\n  every other file in ${box.dataDir}\n`);
    expect(io.out).toMatch(/cancelled: nothing was erased/);
    expect(await listTree(box.stateDir)).toEqual(stateBefore);
    expect(await listTree(box.dataDir)).toEqual(dataBefore);
    expect(box.reboots).toBe(0);

    const io2 = new FakeIo([shortId, "reboot"]);
    await command(c, "factory-reset").run([], io2);
    expect(io2.out).toMatch(/erased \d+ entries; the box starts as a new device at the next start/);
    expect(await fsp.readdir(box.stateDir)).toEqual(["config.json"]);
    expect((await fsp.readdir(box.dataDir)).sort()).toEqual(["keep-me.txt", "sim-board"]);
    expect(await fsp.readFile(configInState, "utf8")).toContain(box.dataDir);
    expect(box.reboots).toBe(1);

    // Afterwards: no key, nothing to erase but the config.
    const after = await open(box);
    expect(after.banner).toContain("(no device key yet)");
    expect(await run(after, "factory-reset")).toMatch(/There is nothing to erase/);
  });

  it('store.dataDir "auto": selftest, temp and factory-reset use the directory "auto" resolves to, as the daemon does', async () => {
    const box = await makeBox();
    const config = JSON.parse(await fsp.readFile(box.configFile, "utf8")) as { store: { dataDir: string } };
    config.store.dataDir = "auto";
    await fsp.writeFile(box.configFile, JSON.stringify(config));
    const c = await open(box);
    expect(await run(c, "selftest")).toMatch(/^PASS  data disk write\/read\s+8 MiB: /m);
    await run(c, "temp");
    // The daemon's sim tree with "auto" (simBoardRoot): the state dir; never a directory named "auto".
    expect(existsSync(join(box.stateDir, "sim-board"))).toBe(true);
    expect(existsSync(join(box.dataDir, "sim-board"))).toBe(false);
    expect(existsSync(join(process.cwd(), "auto"))).toBe(false);

    const io = new FakeIo([box.identity.deviceId.slice(0, 8), "no"]);
    await command(c, "factory-reset").run([], io);
    for (const name of ["objects", "index.log", MARKER_NAME]) expect(io.out).toContain(join(box.dataDir, name));
    expect(await fsp.readdir(box.dataDir)).toEqual([]);

    // Unplugged: "auto" names no directory, so selftest fails its disk check saying why.
    await fsp.writeFile(box.host.proc("self/mountinfo"), "22 1 179:2 / / rw,noatime shared:1 - ext4 /dev/root rw\n");
    expect(await run(await open(box), "selftest")).toMatch(
      /^FAIL  data disk write\/read\s+store.dataDir is "auto" and names no disk: /m,
    );
  });

  it("factory-reset is refused while the daemon answers on its control socket, or holds its lock", async () => {
    const box = await makeBox();
    const { server } = await startDaemon(box);
    const c = await open(box);
    const before = (await listTree(box.stateDir)).filter((n) => n !== "control.sock");
    const io = new FakeIo([box.identity.deviceId.slice(0, 8)]);
    await expect(command(c, "factory-reset").run([], io)).rejects.toThrow(
      /the daemon is running: stop it first \(systemctl stop sharenode/,
    );
    expect(io.asked).toEqual([]);
    await server.stop();
    await fsp.writeFile(join(box.stateDir, "agent.lock"), `${process.pid}\n`);
    await expect(run(c, "factory-reset", [], [box.identity.deviceId.slice(0, 8)])).rejects.toThrow(
      new RegExp(`the daemon is running \\(pid ${process.pid}\\)`),
    );
    await fsp.rm(join(box.stateDir, "agent.lock"));
    expect(await listTree(box.stateDir)).toEqual(before);
  });

  it("factory-reset leaves another device's disk alone, and without a device key asks for the word factory-reset", async () => {
    const box = await makeBox();
    await fsp.writeFile(
      join(box.dataDir, MARKER_NAME),
      JSON.stringify({ v: 1, nodeId: "cd".repeat(16), diskId: "ef".repeat(16) }),
    );
    const dataBefore = await listTree(box.dataDir);
    const c = await open(box);
    const foreign = await run(c, "factory-reset", [], ["no"]);
    expect(foreign).toContain(
      `the data directory ${box.dataDir}, untouched: its marker names another device (${"cd".repeat(16)})`,
    );
    expect(foreign).not.toContain(join(box.dataDir, "objects"));

    await fsp.rm(join(box.stateDir, "device-key.pem"));
    const io = new FakeIo(["factory-reset"]);
    await command(c, "factory-reset").run([], io);
    expect(io.asked[0]).toBe(
      "To erase, type the word factory-reset (this box has no device key); anything else cancels: ",
    );
    expect(io.out).toContain(
      `the data directory ${box.dataDir}, untouched: without a device key this box cannot tell whether the disk is its own`,
    );
    expect(await listTree(box.dataDir)).toEqual(dataBefore);
    expect(await fsp.readdir(box.stateDir)).toEqual([]);
    expect(io.out).toMatch(/not rebooting/);
  });
});

describe("keys are never printed", () => {
  it("no output of any command holds the device's private key in any encoding", async () => {
    // Runs every read-only command once more so this test stands on its own, then checks all output of the file.
    const box = await makeBox({ url: broker.url });
    await startDaemon(box);
    const c = await open(box);
    for (const x of c.commands) if (!["reboot", "factory-reset", "log"].includes(x.name)) await run(c, x.name);
    await run(c, "log");
    const text = allOutput.join("");
    expect(keyFiles.length).toBeGreaterThan(5);
    for (const pem of keyFiles) {
      const body = pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, "");
      const seed = Buffer.from(createPrivateKey(pem).export({ format: "jwk" }).d!, "base64url");
      const der = Buffer.from(body, "base64");
      for (const needle of [
        body,
        body.slice(16, 48),
        seed.toString("hex"),
        seed.toString("hex").toUpperCase(),
        seed.toString("hex").slice(0, 16),
        seed.toString("base64"),
        seed.toString("base64url"),
        seed.toString("base64").slice(0, 12),
        der.toString("hex"),
      ]) {
        expect(text.includes(needle), `output contains key material ${needle.slice(0, 8)}...`).toBe(false);
      }
    }
  });
});
