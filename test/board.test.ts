// The board's hardware parts on fake /sys and /dev trees in temporary directories: status patterns land in the right
// LED files (and only once), absent or unwritable LEDs are one problem line, thermal zones that cannot be read or read
// nonsense are reported, the watchdog is petted and closed with the magic "V" last, and the sim board builds and
// uses its own tree. Unwritable nodes are directories in place of files: tests run as root, so chmod would not stop
// a write, but EISDIR does; the EACCES of a blink rate udev has not handed over yet comes from an injected writer.
import { existsSync, promises as fsp } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { openBoard, type Board } from "../board/board";
import { HostPaths } from "../board/host-paths";
import { parseTriggers, RATE_RETRY_DELAYS_MS, StatusLeds, type LedIo } from "../board/leds";
import { parseTemperature } from "../board/thermal";
import { CLOCK_SET_AFTER, clockSynced } from "../board/clock";

const FIXTURES = new URL("fixtures/boards/", import.meta.url).pathname;
const roots: string[] = [];

afterAll(async () => {
  await Promise.all(roots.map((r) => fsp.rm(r, { recursive: true, force: true })));
});

async function tmpRoot(): Promise<string> {
  const root = await fsp.mkdtemp(join(tmpdir(), "sharenode-board-"));
  roots.push(root);
  return root;
}

async function put(root: string, path: string, content: string | Buffer): Promise<void> {
  const file = join(root, path);
  await fsp.mkdir(join(file, ".."), { recursive: true });
  await fsp.writeFile(file, content);
}

const read = (root: string, path: string) => fsp.readFile(join(root, path), "utf8");

/** A root whose /proc identifies the fixture's board. */
async function boardRoot(fixture: string): Promise<string> {
  const root = await tmpRoot();
  for (const [name, dest] of [
    ["model", "proc/device-tree/model"],
    ["compatible", "proc/device-tree/compatible"],
    ["cpuinfo", "proc/cpuinfo"],
  ] as const) {
    if (existsSync(join(FIXTURES, fixture, name)))
      await put(root, dest, await fsp.readFile(join(FIXTURES, fixture, name)));
  }
  return root;
}

const ALL_TRIGGERS = "[none] rc-feedback kbd-scrolllock mmc0 mmc1 timer heartbeat default-on usb-host";

/** An LED class device as the kernel shows it before anyone touched it. */
async function led(root: string, name: string, opts: { triggers?: string; max?: string } = {}): Promise<void> {
  const dir = `sys/class/leds/${name}`;
  await put(root, `${dir}/trigger`, `${opts.triggers ?? ALL_TRIGGERS}\n`);
  await put(root, `${dir}/brightness`, "0\n");
  await put(root, `${dir}/max_brightness`, `${opts.max ?? "1"}\n`);
}

async function ledState(root: string, name: string): Promise<Record<string, string>> {
  const dir = join(root, "sys/class/leds", name);
  const out: Record<string, string> = {};
  for (const f of ["trigger", "brightness", "delay_on", "delay_off"]) {
    if (existsSync(join(dir, f))) out[f] = (await fsp.readFile(join(dir, f), "utf8")).trim();
  }
  return out;
}

async function open(root: string, name = "auto"): Promise<{ board: Board; told: string[] }> {
  const told: string[] = [];
  const board = await openBoard({ paths: new HostPaths(root), name, onProblem: (l) => told.push(l) });
  return { board, told };
}

const ONECLOUD_LEDS = ["onecloud:red:alive", "onecloud:green:alive", "onecloud:blue:alive"];

describe("clockSynced (a ledger statement's clockSynced)", () => {
  it("follows systemd-timesyncd's flag where it runs, else whether the clock reads a date after 2026", async () => {
    const root = await fsp.mkdtemp(join(tmpdir(), "sharenode-clock-"));
    try {
      const paths = new HostPaths(root);
      const set = CLOCK_SET_AFTER + 1;
      // No timesyncd: the date decides (a box that booted in 1970 has not been set).
      expect(clockSynced(paths, 1000)).toBe(false);
      expect(clockSynced(paths, set)).toBe(true);
      // timesyncd runs but has not synchronized yet: not synced, whatever the date says.
      await fsp.mkdir(join(root, "run/systemd/timesync"), { recursive: true });
      expect(clockSynced(paths, set)).toBe(false);
      await fsp.writeFile(join(root, "run/systemd/timesync/synchronized"), "");
      expect(clockSynced(paths, set)).toBe(true);
    } finally {
      await fsp.rm(root, { recursive: true, force: true });
    }
  });
});

describe("parseTriggers", () => {
  it("finds the bracketed current trigger among the available ones", () => {
    expect(parseTriggers("none rc-feedback [timer] heartbeat\n")).toEqual({
      current: "timer",
      available: ["none", "rc-feedback", "timer", "heartbeat"],
    });
  });

  it("takes a lone word (a fake tree after a write) as the current trigger", () => {
    expect(parseTriggers("heartbeat\n")).toEqual({ current: "heartbeat", available: ["heartbeat"] });
    expect(parseTriggers("none timer")).toEqual({ current: undefined, available: ["none", "timer"] });
  });
});

describe("status LEDs", () => {
  it("shows each OneCloud pattern on the RGB LED's three nodes", async () => {
    const root = await boardRoot("onecloud");
    for (const name of ONECLOUD_LEDS) await led(root, name);
    const { board } = await open(root);

    await board.setStatus("booting");
    expect(await ledState(root, "onecloud:blue:alive")).toEqual({
      trigger: "timer",
      brightness: "0",
      delay_on: "125",
      delay_off: "125",
    });
    expect(await ledState(root, "onecloud:red:alive")).toEqual({ trigger: "none", brightness: "0" });
    expect(await ledState(root, "onecloud:green:alive")).toEqual({ trigger: "none", brightness: "0" });

    await board.setStatus("online");
    expect(await ledState(root, "onecloud:green:alive")).toEqual({ trigger: "none", brightness: "1" });
    expect((await ledState(root, "onecloud:blue:alive")).trigger).toBe("none");
    expect((await ledState(root, "onecloud:blue:alive")).brightness).toBe("0");

    await board.setStatus("updating");
    expect((await ledState(root, "onecloud:blue:alive")).trigger).toBe("heartbeat");

    await board.setStatus("error");
    expect(await ledState(root, "onecloud:red:alive")).toMatchObject({
      trigger: "timer",
      delay_on: "100",
      delay_off: "100",
    });
    expect(await ledState(root, "onecloud:green:alive")).toEqual({ trigger: "none", brightness: "0" });
    expect(board.problems).toEqual([]);
  });

  it("lights an LED at its max_brightness", async () => {
    const root = await boardRoot("phicomm-n1");
    await led(root, "n1:white:status", { max: "255" });
    const { board } = await open(root);
    await board.setStatus("online");
    expect(await ledState(root, "n1:white:status")).toEqual({ trigger: "none", brightness: "255" });
  });

  it("does not rewrite a state the LED already shows", async () => {
    const root = await boardRoot("onecloud");
    for (const name of ONECLOUD_LEDS) await led(root, name);
    const { board } = await open(root);
    await board.setStatus("online");
    // Anything written now would replace these markers.
    await put(root, "sys/class/leds/onecloud:green:alive/brightness", "marker");
    await put(root, "sys/class/leds/onecloud:red:alive/trigger", "marker");
    await board.setStatus("online");
    expect(await read(root, "sys/class/leds/onecloud:green:alive/brightness")).toBe("marker");
    expect(await read(root, "sys/class/leds/onecloud:red:alive/trigger")).toBe("marker");
    // The red LED keeps "off" from online to offline, so it is not written either; green changes.
    await board.setStatus("offline");
    expect(await read(root, "sys/class/leds/onecloud:red:alive/trigger")).toBe("marker");
    expect(await ledState(root, "onecloud:green:alive")).toMatchObject({
      trigger: "timer",
      delay_on: "1000",
      delay_off: "1000",
    });
  });

  it("writes patterns set in quick succession in call order", async () => {
    const root = await boardRoot("onecloud");
    for (const name of ONECLOUD_LEDS) await led(root, name);
    const { board } = await open(root);
    await Promise.all([board.setStatus("booting"), board.setStatus("error"), board.setStatus("online")]);
    expect(await ledState(root, "onecloud:green:alive")).toEqual({ trigger: "none", brightness: "1" });
    expect((await ledState(root, "onecloud:red:alive")).trigger).toBe("none");
  });

  it("uses the Pi's ACT and PWR LEDs, PWR flashing for an error", async () => {
    const root = await boardRoot("rpi4");
    await led(root, "ACT");
    await led(root, "PWR");
    const { board } = await open(root);
    await board.setStatus("booting");
    expect(await ledState(root, "PWR")).toEqual({ trigger: "none", brightness: "1" });
    expect((await ledState(root, "ACT")).trigger).toBe("timer");
    await board.setStatus("error");
    expect(await ledState(root, "ACT")).toMatchObject({ trigger: "none", brightness: "0" });
    expect(await ledState(root, "PWR")).toMatchObject({ trigger: "timer", delay_on: "100", delay_off: "100" });
    expect(board.problems).toEqual([]);
  });

  it("finds the Pi's LEDs under their older names led0/led1", async () => {
    const root = await boardRoot("rpi3-old-kernel");
    await led(root, "led0");
    await led(root, "led1");
    const { board } = await open(root);
    await board.setStatus("online");
    expect(await ledState(root, "led0")).toEqual({ trigger: "none", brightness: "1" });
    expect(board.problems).toEqual([]);
  });

  it("shows blinking patterns steadily when the kernel has no timer trigger, and says so once", async () => {
    const root = await boardRoot("phicomm-n1");
    await led(root, "n1:white:status", { triggers: "[none] default-on mmc0" });
    const { board, told } = await open(root);
    await board.setStatus("booting");
    await board.setStatus("offline");
    expect(await ledState(root, "n1:white:status")).toEqual({ trigger: "none", brightness: "1" });
    expect(told).toEqual(['LED n1:white:status has no "timer" trigger; blinking patterns show as a steady light']);
  });

  it("blinks briefly when the kernel has the timer but no heartbeat trigger", async () => {
    const root = await boardRoot("phicomm-n1");
    await led(root, "n1:white:status", { triggers: "[none] timer" });
    const { board } = await open(root);
    await board.setStatus("updating");
    expect(await ledState(root, "n1:white:status")).toMatchObject({
      trigger: "timer",
      delay_on: "100",
      delay_off: "900",
    });
    expect(board.problems).toEqual([]);
  });

  it("reports absent LEDs once and never throws", async () => {
    const root = await boardRoot("onecloud");
    const { board, told } = await open(root);
    for (const pattern of ["booting", "online", "error", "online"] as const) await board.setStatus(pattern);
    expect(told).toEqual([
      'LED "red" missing: no /sys/class/leds/onecloud:red:alive',
      'LED "green" missing: no /sys/class/leds/onecloud:green:alive',
      'LED "blue" missing: no /sys/class/leds/onecloud:blue:alive',
    ]);
    expect(board.problems).toEqual(told);
    expect(existsSync(join(root, "sys/class/leds"))).toBe(false);
  });

  it("names both candidates when neither of the Pi's LED names exists", async () => {
    const root = await boardRoot("rpi5");
    await led(root, "ACT");
    const { board } = await open(root);
    await board.setStatus("online");
    expect(board.problems).toEqual(['LED "pwr" missing: no /sys/class/leds/PWR or /sys/class/leds/led1']);
    expect(await ledState(root, "ACT")).toEqual({ trigger: "none", brightness: "1" });
  });

  it("reports an LED node that refuses writes once, leaves that LED alone and still sets the others", async () => {
    const root = await boardRoot("onecloud");
    for (const name of ONECLOUD_LEDS) await led(root, name);
    // A directory where the attribute should be: open(O_WRONLY) fails with EISDIR even for root.
    await fsp.rm(join(root, "sys/class/leds/onecloud:green:alive/brightness"));
    await fsp.mkdir(join(root, "sys/class/leds/onecloud:green:alive/brightness"));
    const { board, told } = await open(root);
    await board.setStatus("online");
    expect(told).toHaveLength(1);
    expect(told[0]).toMatch(
      /^cannot set LED onecloud:green:alive: \/sys\/class\/leds\/onecloud:green:alive\/brightness: EISDIR: .*; leaving it alone$/,
    );
    // After the failure the green LED is never written again.
    await put(root, "sys/class/leds/onecloud:green:alive/trigger", "marker");
    await board.setStatus("offline");
    await board.setStatus("online");
    expect(told).toHaveLength(1);
    expect(await read(root, "sys/class/leds/onecloud:green:alive/trigger")).toBe("marker");
    expect(await ledState(root, "onecloud:red:alive")).toEqual({ trigger: "none", brightness: "0" });
    expect(await ledState(root, "onecloud:blue:alive")).toEqual({ trigger: "none", brightness: "0" });
  });

  it("reports an unreadable trigger list and shows blinks steadily", async () => {
    const root = await boardRoot("phicomm-n1");
    await led(root, "n1:white:status");
    await fsp.rm(join(root, "sys/class/leds/n1:white:status/trigger"));
    await fsp.mkdir(join(root, "sys/class/leds/n1:white:status/trigger"));
    const { board } = await open(root);
    await board.setStatus("booting");
    expect(board.problems[0]).toMatch(/^cannot read \/sys\/class\/leds\/n1:white:status\/trigger: EISDIR/);
    expect(board.problems).toHaveLength(3); // + no timer trigger, + the failed trigger write
  });

  // The agent is not root: selecting the timer trigger creates delay_on/delay_off root-only, and udev hands them to
  // the group sharenode a moment later (board/install/70-sharenode.rules). Root cannot be refused by a file mode, so
  // an injected writer refuses those writes with the EACCES the kernel gives, for as long as udev would take.
  const eacces = (path: string) =>
    Object.assign(new Error(`EACCES: permission denied, open '${path}'`), {
      code: "EACCES",
      errno: -13,
      syscall: "open",
      path,
    });

  it("retries the blink rate while udev hands the fresh attributes over; one still refused leaves the default rate", async () => {
    const root = await tmpRoot();
    await led(root, "n1:white:status");
    const told: string[] = [];
    const waits: number[] = [];
    const rateWrites: string[] = [];
    let grantedAt = Infinity;
    let udevRuns = true;
    const io: LedIo = {
      async writeFile(path, value) {
        const attribute = path.split("/").pop()!;
        if (attribute === "delay_on" || attribute === "delay_off") {
          rateWrites.push(attribute);
          if (Date.now() < grantedAt) throw eacces(path);
        }
        await fsp.writeFile(path, value);
        // Selecting the timer: fresh root-only attributes, which the udev rule gives away 120 ms later (or never).
        if (attribute === "trigger" && value === "timer") grantedAt = udevRuns ? Date.now() + 120 : Infinity;
      },
      async sleep(ms) {
        waits.push(ms);
        await new Promise((resolve) => setTimeout(resolve, udevRuns ? ms : 0));
      },
    };
    const leds = await StatusLeds.discover(
      new HostPaths(root),
      { status: ["n1:white:status"] },
      (l) => told.push(l),
      io,
    );

    // A systemd box: refused, then written once udev has run; well under the 2 s that start-up may wait.
    await leds.show({ status: { kind: "blink", onMs: 125, offMs: 125 } });
    // What start-up may wait is the retry schedule, not the wall clock of a busy test machine.
    expect(waits.reduce((a, b) => a + b, 0)).toBeLessThan(2000);
    expect(await ledState(root, "n1:white:status")).toEqual({
      trigger: "timer",
      brightness: "0",
      delay_on: "125",
      delay_off: "125",
    });
    expect(told).toEqual([]);
    expect(waits.length).toBeGreaterThan(0);
    expect(waits).toEqual(RATE_RETRY_DELAYS_MS.slice(0, waits.length));
    // delay_off comes after delay_on has gone through: by then udev has handed both over.
    expect(rateWrites.filter((a) => a === "delay_off")).toEqual(["delay_off"]);

    // OpenWrt (no udev): every retry refused, then one line; the LED blinks at the trigger's default rate.
    udevRuns = false;
    waits.length = 0;
    rateWrites.length = 0;
    await leds.show({ status: { kind: "blink", onMs: 1000, offMs: 1000 } });
    expect(waits).toEqual(RATE_RETRY_DELAYS_MS);
    expect(rateWrites).toEqual(Array(RATE_RETRY_DELAYS_MS.length + 1).fill("delay_on"));
    expect(told).toEqual([
      "cannot set the blink rate of LED n1:white:status: /sys/class/leds/n1:white:status/delay_on: EACCES: permission denied; " +
        "it blinks at the timer trigger's default rate",
    ]);
    expect((await ledState(root, "n1:white:status")).trigger).toBe("timer");

    // The LED still shows everything else, and later blinks set the trigger only: no rate write, no wait, no line.
    await leds.show({ status: { kind: "on" } });
    expect(await ledState(root, "n1:white:status")).toMatchObject({ trigger: "none", brightness: "1" });
    waits.length = 0;
    rateWrites.length = 0;
    await leds.show({ status: { kind: "blink", onMs: 50, offMs: 50 } });
    expect((await ledState(root, "n1:white:status")).trigger).toBe("timer");
    expect(waits).toEqual([]);
    expect(rateWrites).toEqual([]);
    expect(told).toHaveLength(1);
  });

  it("is a no-op on a board without LEDs", async () => {
    const root = await boardRoot("pc");
    const { board } = await open(root);
    await board.setStatus("error");
    expect(board.problems).toEqual([]);
  });
});

describe("thermal zones", () => {
  it("parses millidegrees, whole degrees (vendor 3.10 drivers) and refuses nonsense", () => {
    expect(parseTemperature("45123\n")).toEqual({ celsius: 45.123 });
    expect(parseTemperature("47")).toEqual({ celsius: 47 });
    expect(parseTemperature("-5000")).toEqual({ celsius: -5 });
    expect(parseTemperature("-273000")).toEqual({ error: "implausible reading -273000" });
    expect(parseTemperature("2147483647")).toEqual({ error: "implausible reading 2147483647" });
    expect(parseTemperature("")).toEqual({ error: 'not a number: ""' });
    expect(parseTemperature("45.5")).toEqual({ error: 'not a number: "45.5"' });
  });

  async function zones(root: string): Promise<void> {
    await put(root, "sys/class/thermal/thermal_zone0/type", "cpu-thermal\n");
    await put(root, "sys/class/thermal/thermal_zone0/temp", "45000\n");
    await put(root, "sys/class/thermal/thermal_zone1/type", "soc\n");
    await put(root, "sys/class/thermal/thermal_zone1/temp", "-273000\n");
    await put(root, "sys/class/thermal/thermal_zone2/type", "ddr-thermal\n");
    await fsp.mkdir(join(root, "sys/class/thermal/thermal_zone2/temp"), { recursive: true });
    await put(root, "sys/class/thermal/thermal_zone3/temp", "garbage\n");
    await put(root, "sys/class/thermal/thermal_zone10/type", "gpu-thermal\n");
    await put(root, "sys/class/thermal/thermal_zone10/temp", "52500\n");
    // Not zones: cooling devices live in the same directory.
    await put(root, "sys/class/thermal/cooling_device0/type", "cpufreq-cpu0\n");
  }

  it("reads every zone in kernel order and reports the broken ones once", async () => {
    const root = await boardRoot("rpi4");
    await zones(root);
    const { board, told } = await open(root);
    const readings = await board.readThermalZones();
    expect(readings).toEqual([
      { zone: "thermal_zone0", type: "cpu-thermal", celsius: 45 },
      { zone: "thermal_zone1", type: "soc", error: "implausible reading -273000" },
      {
        zone: "thermal_zone2",
        type: "ddr-thermal",
        error: expect.stringMatching(/^cannot read \/sys\/class\/thermal\/thermal_zone2\/temp: EISDIR/),
      },
      { zone: "thermal_zone3", error: 'not a number: "garbage"' },
      { zone: "thermal_zone10", type: "gpu-thermal", celsius: 52.5 },
    ]);
    await board.readThermalZones();
    const thermalLines = told.filter((l) => l.startsWith("thermal_zone"));
    expect(thermalLines).toEqual([
      "thermal_zone1 (soc): implausible reading -273000",
      expect.stringMatching(/^thermal_zone2 \(ddr-thermal\): cannot read .*EISDIR/),
      'thermal_zone3: not a number: "garbage"',
    ]);
  });

  it("governs by the profile's zone type, else by the hottest readable zone", async () => {
    const pi = await boardRoot("rpi4");
    await zones(pi);
    expect(await (await open(pi)).board.readTemperatureC()).toBe(45);
    const pc = await boardRoot("pc");
    await zones(pc);
    expect(await (await open(pc)).board.readTemperatureC()).toBe(52.5);
  });

  it("falls back to the hottest zone when the preferred one reads nonsense", async () => {
    const root = await boardRoot("onecloud");
    await put(root, "sys/class/thermal/thermal_zone0/type", "soc\n");
    await put(root, "sys/class/thermal/thermal_zone0/temp", "0x7fffffff\n");
    await put(root, "sys/class/thermal/thermal_zone1/type", "other\n");
    await put(root, "sys/class/thermal/thermal_zone1/temp", "61000\n");
    expect(await (await open(root)).board.readTemperatureC()).toBe(61);
  });

  it("reads the SCP firmware's hwmon sensor on Amlogic GX boxes without a thermal zone", async () => {
    const root = await boardRoot("phicomm-n1");
    await put(root, "sys/class/hwmon/hwmon0/name", "scpi_sensors\n");
    await put(root, "sys/class/hwmon/hwmon0/temp1_input", "51000\n");
    await put(root, "sys/class/hwmon/hwmon0/temp1_label", "aml_thermal\n");
    await put(root, "sys/class/hwmon/hwmon1/name", "other_chip\n");
    await put(root, "sys/class/hwmon/hwmon1/temp1_input", "99000\n");
    const { board } = await open(root);
    expect(await board.readThermalZones()).toEqual([{ zone: "hwmon0/temp1", type: "scpi_sensors", celsius: 51 }]);
    expect(await board.readTemperatureC()).toBe(51);
  });

  it("reports a machine without any thermal zone once and answers undefined", async () => {
    const root = await boardRoot("pc");
    const { board, told } = await open(root);
    expect(await board.readThermalZones()).toEqual([]);
    expect(await board.readTemperatureC()).toBeUndefined();
    expect(told).toEqual(["no thermal zones under /sys/class/thermal"]);
  });
});

describe("hardware watchdog", () => {
  it("cannot be opened when the device is missing: one problem line, and no file created in /dev", async () => {
    const root = await boardRoot("pc");
    await fsp.mkdir(join(root, "dev")); // so that an O_CREAT open would succeed and show up
    const { board, told } = await open(root);
    expect(await board.openWatchdog()).toBeUndefined();
    expect(told).toEqual(["cannot open watchdog /dev/watchdog: ENOENT: no such file or directory"]);
    expect(existsSync(join(root, "dev/watchdog"))).toBe(false);
  });

  it("cannot be opened when the device path is a directory", async () => {
    const root = await boardRoot("pc");
    await fsp.mkdir(join(root, "dev/watchdog"), { recursive: true });
    const { board } = await open(root);
    expect(await board.openWatchdog()).toBeUndefined();
    expect(board.problems).toEqual([expect.stringMatching(/^cannot open watchdog \/dev\/watchdog: EISDIR: /)]);
  });

  it("pets with a NUL byte, ends with the magic V, and reads its timeout from sysfs", async () => {
    const root = await boardRoot("rpi4");
    await put(root, "dev/watchdog", "");
    await put(root, "sys/class/watchdog/watchdog0/timeout", "15\n");
    const { board } = await open(root);
    const wd = await board.openWatchdog();
    expect(wd).toBeDefined();
    expect(wd!.device).toBe("/dev/watchdog");
    expect(wd!.timeoutSeconds).toBe(15);
    await wd!.pet();
    await wd!.pet();
    await wd!.close(true);
    expect([...(await fsp.readFile(join(root, "dev/watchdog")))]).toEqual([0, 0, 0x56]);
    await expect(wd!.pet()).rejects.toThrow("watchdog /dev/watchdog is closed");
    await wd!.close(true); // a second close is harmless
    expect([...(await fsp.readFile(join(root, "dev/watchdog")))]).toEqual([0, 0, 0x56]);
  });

  it("writes the magic V after every pet issued before close, however the calls overlap", async () => {
    const root = await boardRoot("pc");
    await put(root, "dev/watchdog", "");
    const { board } = await open(root);
    const wd = (await board.openWatchdog())!;
    expect(wd.timeoutSeconds).toBeUndefined();
    const pets = [wd.pet(), wd.pet(), wd.pet()];
    const closing = wd.close(true);
    // A pet asked for once the close has begun would land after the V and re-arm the timer: it is refused.
    await expect(wd.pet()).rejects.toThrow("is closed");
    await Promise.all([...pets, closing]);
    expect([...(await fsp.readFile(join(root, "dev/watchdog")))]).toEqual([0, 0, 0, 0x56]);
  });

  it("closes without the magic V when asked to keep the timer running", async () => {
    const root = await boardRoot("pc");
    await put(root, "dev/watchdog", "");
    const { board } = await open(root);
    const wd = (await board.openWatchdog())!;
    await wd.pet();
    await wd.close(false);
    expect([...(await fsp.readFile(join(root, "dev/watchdog")))]).toEqual([0]);
  });
});

describe("sim board", () => {
  it("builds its fake tree and runs the real LED, thermal and watchdog code on it", async () => {
    const simRoot = await tmpRoot();
    const told: string[] = [];
    const board = await openBoard({ paths: new HostPaths("/"), name: "sim", simRoot, onProblem: (l) => told.push(l) });
    expect(board.name).toBe("sim");
    expect(board.detectedBy).toBe(`config board="sim" (tree under ${simRoot})`);
    expect(board.console).toBeUndefined();
    expect(await read(simRoot, "proc/device-tree/model")).toBe("sharenode sim board\0");
    expect(await read(simRoot, "sys/class/leds/sim:green:status/trigger")).toBe("[none] timer heartbeat default-on\n");

    await board.setStatus("booting");
    expect(await ledState(simRoot, "sim:green:status")).toEqual({
      trigger: "timer",
      brightness: "0",
      delay_on: "125",
      delay_off: "125",
    });
    await board.setStatus("error");
    expect(await ledState(simRoot, "sim:red:error")).toMatchObject({
      trigger: "timer",
      delay_on: "100",
      delay_off: "100",
    });
    expect(await ledState(simRoot, "sim:green:status")).toMatchObject({ trigger: "none", brightness: "0" });

    expect(await board.readThermalZones()).toEqual([{ zone: "thermal_zone0", type: "cpu-thermal", celsius: 45 }]);
    // A person simulates heat by writing the zone's temp.
    await put(simRoot, "sys/class/thermal/thermal_zone0/temp", "80000\n");
    const hot = await board.readTemperatureC();
    expect(hot).toBe(80);
    expect(hot!).toBeGreaterThanOrEqual(board.thermalLimits.pauseAtC);

    const wd = (await board.openWatchdog())!;
    expect(wd.timeoutSeconds).toBe(30);
    await wd.pet();
    await wd.close(true);
    expect([...(await fsp.readFile(join(simRoot, "dev/watchdog")))]).toEqual([0, 0x56]);
    // Each open starts a fresh session in the file.
    const again = (await board.openWatchdog())!;
    await again.close(false);
    expect([...(await fsp.readFile(join(simRoot, "dev/watchdog")))]).toEqual([]);
    expect(told).toEqual([]);
  });

  it("keeps an existing tree (a simulated heat, the LED's state) across restarts", async () => {
    const simRoot = await tmpRoot();
    const first = await openBoard({ paths: new HostPaths("/"), name: "sim", simRoot });
    await first.setStatus("updating");
    expect(await read(simRoot, "sys/class/leds/sim:green:status/trigger")).toBe("heartbeat");
    await put(simRoot, "sys/class/thermal/thermal_zone0/temp", "77000\n");

    const second = await openBoard({ paths: new HostPaths("/"), name: "sim", simRoot });
    // The trigger list is back, as a kernel would show it, with the last trigger current.
    expect(await read(simRoot, "sys/class/leds/sim:green:status/trigger")).toBe("none timer [heartbeat] default-on\n");
    expect(await second.readTemperatureC()).toBe(77);
    await second.setStatus("booting");
    expect((await ledState(simRoot, "sim:green:status")).trigger).toBe("timer");
    expect(second.problems).toEqual([]);
  });

  it("reports a sim watchdog that cannot be opened like a real one", async () => {
    const simRoot = await tmpRoot();
    const board = await openBoard({ paths: new HostPaths("/"), name: "sim", simRoot });
    await fsp.rm(join(simRoot, "dev/watchdog"));
    await fsp.mkdir(join(simRoot, "dev/watchdog"));
    expect(await board.openWatchdog()).toBeUndefined();
    expect(board.problems).toEqual([expect.stringMatching(/^cannot open watchdog \/dev\/watchdog: EISDIR/)]);
  });
});
