// What each supported box has: how to recognise it, its serial console, its LEDs and what each status pattern shows
// on them, which thermal zone governs throttling and at what temperatures, and its watchdog device. Facts about the
// hardware cite the file they were read from (device trees in Linux, Armbian and Raspberry Pi kernel trees).
//
// Detection (board/detect.ts) tries the profiles in PROFILES order and takes the first that matches; `sim` and
// `generic-linux` have no match rules, so they are only chosen by name or (generic-linux) as the fallback.
import type { StatusPattern } from "./board.js";

/** What /proc says about the machine; every field is absent when the kernel does not provide it. */
export interface BoardFacts {
  /** /proc/device-tree/model without its NUL terminator: "Raspberry Pi 4 Model B Rev 1.4". */
  model?: string;
  /** /proc/device-tree/compatible, most specific first: ["xunlei,onecloud", "amlogic,meson8b"]. */
  compatible: string[];
  /** Lines of /proc/cpuinfo that name the machine (vendor kernels without a device tree only have these). */
  cpuinfo: { hardware?: string; model?: string; revision?: string };
}

/** One LED's wanted state; blink timings go to the kernel's "timer" trigger (delay_on/delay_off, milliseconds). */
export type LedState =
  { kind: "off" } | { kind: "on" } | { kind: "blink"; onMs: number; offMs: number } | { kind: "heartbeat" };

export interface BoardProfile {
  /** The config name (`board = "..."`). */
  name: string;
  description: string;
  /** Auto-detection; a profile without rules is only ever chosen by name (or as the fallback). */
  match?: {
    compatible?: RegExp[];
    model?: RegExp[];
    cpuinfoModel?: RegExp[];
    cpuinfoHardware?: RegExp[];
  };
  /** The serial console; a function because the same box names it differently under vendor and mainline kernels. */
  console(facts: BoardFacts): { tty: string; baud: number } | undefined;
  /** LED roles, each with the /sys/class/leds names it goes by on different kernels (the first present is used). */
  leds: Record<string, readonly string[]>;
  /** For every status pattern, the state of every LED role. */
  patterns: Record<StatusPattern, Record<string, LedState>>;
  thermal: {
    /** Zone types (/sys/class/thermal/thermal_zone*\/type) that govern throttling, in order of preference. */
    preferredTypes: readonly string[];
    /** hwmon devices (/sys/class/hwmon/hwmon*\/name) whose temp*_input are read too, for kernels without a zone. */
    hwmonNames: readonly string[];
    pauseAtC: number;
    resumeAtC: number;
  };
  /** The watchdog device under /dev ("watchdog"), or undefined when the board has none. */
  watchdog: string | undefined;
}

const OFF: LedState = { kind: "off" };
const ON: LedState = { kind: "on" };
const HEARTBEAT: LedState = { kind: "heartbeat" };
const blink = (onMs: number, offMs: number): LedState => ({ kind: "blink", onMs, offMs });
// One vocabulary for every board, so a person who learned one box reads another: booting blinks fast, offline
// blinks slowly, error blinks very fast (or in red where there is a red LED).
const FAST = blink(125, 125);
const SLOW = blink(1000, 1000);
const FRANTIC = blink(50, 50);
const RED_ALERT = blink(100, 100);

const BAUD = 115200;

/** Mainline Amlogic kernels name the AO UART ttyAML0 (meson_uart); the vendor kernels call it ttyS0. */
function amlogicConsole(mainline: RegExp) {
  return (facts: BoardFacts) =>
    facts.compatible.some((c) => mainline.test(c)) ? { tty: "ttyAML0", baud: BAUD } : { tty: "ttyS0", baud: BAUD };
}

/**
 * The Pi's board type from its revision code (raspberrypi/documentation computers/raspberry-pi/revision-codes.adoc):
 * new-style codes have bit 23 set and the type in bits 4-11 (0x08 3B, 0x0c Zero W, 0x0d 3B+, 0x0e 3A+, 0x11 4B,
 * 0x12 Zero 2 W, 0x13 400, 0x17 5, 0x18 CM5, 0x19 500); old-style codes (0002-0015) are all first-generation Pis.
 */
function piTypeFromRevision(revision: string | undefined): number | "old" | undefined {
  if (revision === undefined || !/^[0-9a-f]+$/i.test(revision)) return undefined;
  const code = parseInt(revision, 16);
  return code & (1 << 23) ? (code >> 4) & 0xff : "old";
}

/**
 * The Pi's console on GPIO 14/15 (or the debug connector): Pi 5 uses UART10, ttyAMA10 (raspberrypi/documentation
 * PR #3294, review by pelwell); models with Bluetooth give the PL011 to Bluetooth and put the mini UART, ttyS0, on the
 * header (stdout-path "serial1:115200n8" in bcm2711-rpi-4-b.dts); older models without Bluetooth use ttyAMA0.
 */
function piConsole(facts: BoardFacts): { tty: string; baud: number } {
  const name = facts.model ?? facts.cpuinfo.model;
  const type = piTypeFromRevision(facts.cpuinfo.revision);
  if (
    (name && /Raspberry Pi (5|500)\b|Compute Module 5/.test(name)) ||
    type === 0x17 ||
    type === 0x18 ||
    type === 0x19
  ) {
    return { tty: "ttyAMA10", baud: BAUD };
  }
  if (
    (name && /Raspberry Pi (3|4|400)\b|Raspberry Pi Zero (W|2)/.test(name)) ||
    (typeof type === "number" && [0x08, 0x0c, 0x0d, 0x0e, 0x11, 0x12, 0x13].includes(type))
  ) {
    return { tty: "ttyS0", baud: BAUD };
  }
  // Nothing names the model: a Pi 3 or 4 is by far the likeliest board on this profile.
  if (name === undefined && type === undefined) return { tty: "ttyS0", baud: BAUD };
  return { tty: "ttyAMA0", baud: BAUD };
}

export const ONECLOUD: BoardProfile = {
  name: "onecloud",
  description: "OneThing Cloud OES / WanKeYun (Amlogic S805, armv7)",
  match: {
    // meson8b-onecloud.dts (Armbian patch/kernel/archive/meson-6.12/onecloud-0001-add-dts.patch, hzyitc):
    // model "Xunlei OneCloud", compatible "xunlei,onecloud", "amlogic,meson8b".
    compatible: [/^xunlei,onecloud$/],
    model: [/OneCloud/i],
    // The vendor 3.10 kernel has no board name, only the machine: "Hardware : Amlogic Meson8B" (a vendor S805
    // /proc/cpuinfo quoted in a public "KartinaTV" teardown). Any S805 box on that kernel is treated as a OneCloud.
    cpuinfoHardware: [/^Amlogic Meson8B$/i],
  },
  // meson8b-onecloud.dts: stdout-path "serial0:115200n8" with serial0 = &uart_AO.
  console: amlogicConsole(/^amlogic,meson8b$/),
  // meson8b-onecloud.dts, node leds (gpio-leds): labels onecloud:red:alive (GPIOAO_2), onecloud:green:alive
  // (GPIOAO_3), onecloud:blue:alive (GPIOAO_4): one RGB LED on the front, the three colours mix.
  leds: {
    red: ["onecloud:red:alive"],
    green: ["onecloud:green:alive"],
    blue: ["onecloud:blue:alive"],
  },
  // Colours carry the meaning (green connected, blue working on its own, red trouble), blinking the detail.
  patterns: {
    booting: { red: OFF, green: OFF, blue: FAST },
    online: { red: OFF, green: ON, blue: OFF },
    offline: { red: OFF, green: SLOW, blue: OFF },
    updating: { red: OFF, green: OFF, blue: HEARTBEAT },
    error: { red: RED_ALERT, green: OFF, blue: OFF },
  },
  thermal: {
    // meson8b.dtsi thermal-zones: one zone, "soc" (trips: soc-passive 80 °C, soc-hot 90 °C, soc-critical 110 °C).
    // The thermal-zones binding now wants zone nodes to end in "-thermal", so a later dts may call it "soc-thermal".
    preferredTypes: ["soc", "soc-thermal"],
    hwmonNames: [],
    // Pause 5 °C under the 80 °C passive trip, so our work yields before the kernel has to throttle the CPU (the box
    // is fanless in a plastic shell, with the eMMC and often a USB disk next to the SoC); resume 10 °C lower so a
    // job that heats the box by a few degrees does not start and stop every minute.
    pauseAtC: 75,
    resumeAtC: 65,
  },
  // meson8b.dtsi: watchdog "amlogic,meson8b-wdt" (drivers/watchdog/meson_wdt.c), /dev/watchdog.
  watchdog: "watchdog",
};

export const AMLOGIC_ARM64: BoardProfile = {
  name: "amlogic-arm64",
  description: "Amlogic S905/S905X/S905D-class TV box, e.g. Phicomm N1 (arm64)",
  match: {
    // meson-gxl-s905d-phicomm-n1.dts: compatible "phicomm,n1", "amlogic,s905d", "amlogic,meson-gxl"; other boxes
    // carry "amlogic,meson-gxbb" (S905), "amlogic,meson-gxm" (S912), "amlogic,g12a"/"g12b"/"sm1" (S905X2/X3).
    compatible: [/^phicomm,n1$/, /^amlogic,(meson-gxbb|meson-gxl|meson-gxm|g12a|g12b|sm1)$/],
    model: [/^Phicomm N1$/],
    // Vendor arm64 kernels (3.14, 4.9) print exactly "Hardware : Amlogic" (seen in public Android box dumps).
    cpuinfoHardware: [/^Amlogic$/],
  },
  // meson-gxbb-p20x.dtsi (the reference design these boxes copy): stdout-path "serial0:115200n8", serial0 = &uart_AO.
  console: amlogicConsole(/^amlogic,(meson-gx|g12|sm1)/),
  // meson-gxl-s905d-phicomm-n1.dts, node leds: one LED, label "n1:white:status" (GPIOAO_9). Other boxes (p20x,
  // p212 reference designs) declare none; the profile then reports the LED missing and runs without one.
  leds: { status: ["n1:white:status"] },
  patterns: {
    booting: { status: FAST },
    online: { status: ON },
    offline: { status: SLOW },
    updating: { status: HEARTBEAT },
    error: { status: FRANTIC },
  },
  thermal: {
    // G12/SM1 (meson-g12-common.dtsi) have "cpu-thermal" and "ddr-thermal"; GXBB/GXL/GXM get "cpu-thermal" only where
    // the board's dts adds the zone on top of scpi_sensors (khadas-vim, jethub); the N1's does not, so its only
    // reading is the SCP firmware's sensor through hwmon "scpi_sensors" (drivers/hwmon/scpi-hwmon.c, temp1_input).
    preferredTypes: ["cpu-thermal"],
    hwmonNames: ["scpi_sensors"],
    // The cpu-thermal zones added for GX boards put the first trip at 70-80 °C (the thermal-zones patch for
    // meson-gxl-s905x-khadas-vim.dts: 70 °C active, 80 °C passive); pausing at 70 keeps our load from being what
    // pushes the SoC into throttling in a closed TV-box case.
    pauseAtC: 70,
    resumeAtC: 60,
  },
  // meson-gx.dtsi: watchdog@98d0 "amlogic,meson-gx-wdt" (drivers/watchdog/meson_gxbb_wdt.c), /dev/watchdog.
  watchdog: "watchdog",
};

export const RPI: BoardProfile = {
  name: "rpi",
  description: "Raspberry Pi 3/4/5",
  match: {
    // bcm2711-rpi-4-b.dts: compatible "raspberrypi,4-model-b", model "Raspberry Pi 4 Model B";
    // bcm2712-rpi-5-b.dts: "raspberrypi,5-model-b", "Raspberry Pi 5". The Pi firmware rewrites the model to the full
    // name with the board revision ("Raspberry Pi 4 Model B Rev 1.4"), hence a prefix match.
    compatible: [/^raspberrypi,/],
    model: [/^Raspberry Pi/],
    // Raspberry Pi kernels add "Model : Raspberry Pi 4 Model B Rev 1.5" and "Hardware : BCM2711" (or BCM2835) to
    // /proc/cpuinfo (raspberrypi/documentation issue #2507 quotes one).
    cpuinfoModel: [/^Raspberry Pi/],
    cpuinfoHardware: [/^BCM(2835|2836|2837|2711|2712)$/],
  },
  console: piConsole,
  // Current kernels label the green activity LED "ACT" (bcm283x-rpi-led-deprecated.dtsi, bcm2712-rpi-5-b.dts) and
  // the red power LED "PWR" (bcm2711-rpi-4-b.dts, bcm2712-rpi-5-b.dts); older Raspberry Pi kernels called them
  // "led0" and "led1" (an older Pi 3 dtb, decompiled: node act with label "led0", node pwr with label "led1").
  leds: { act: ["ACT", "led0"], pwr: ["PWR", "led1"] },
  // ACT gives up its SD-card activity trigger (mmc0) to show our status; PWR stays lit as users expect, and only
  // flashes for an error.
  patterns: {
    booting: { act: FAST, pwr: ON },
    online: { act: ON, pwr: ON },
    offline: { act: SLOW, pwr: ON },
    updating: { act: HEARTBEAT, pwr: ON },
    error: { act: OFF, pwr: RED_ALERT },
  },
  thermal: {
    // bcm283x.dtsi / bcm2711.dtsi (&cpu_thermal) / bcm2712.dtsi: one zone, "cpu-thermal".
    preferredTypes: ["cpu-thermal"],
    hwmonNames: [],
    // The firmware throttles the ARM cores from 80 °C, and the Pi 5's fan curve is at full speed from 75 °C
    // (bcm2712-rpi-5-b.dts cpu-vhot trip). Pausing at 75 lets the fan and the firmware never have to do more.
    pauseAtC: 75,
    resumeAtC: 65,
  },
  // bcm2711.dtsi: watchdog@7e100000 "brcm,bcm2835-pm-wdt" (drivers/watchdog/bcm2835_wdt.c), /dev/watchdog.
  watchdog: "watchdog",
};

export const GENERIC_LINUX: BoardProfile = {
  name: "generic-linux",
  description: "Linux machine without a known board profile",
  console: () => undefined,
  leds: {},
  patterns: { booting: {}, online: {}, offline: {}, updating: {}, error: {} },
  thermal: {
    preferredTypes: [],
    hwmonNames: [],
    // Unknown hardware: PCs and servers throttle around 90-100 °C, small ARM boards from 80 °C; 80/70 stays under both.
    pauseAtC: 80,
    resumeAtC: 70,
  },
  // Only when present: a missing /dev/watchdog becomes one problem line.
  watchdog: "watchdog",
};

/** LED names of the sim board's fake tree (board/sim-board.ts creates them). */
export const SIM_LED_NAMES = { status: "sim:green:status", error: "sim:red:error" } as const;

export const SIM: BoardProfile = {
  name: "sim",
  description: "simulated board (fake /sys and /dev under the data directory)",
  console: () => undefined,
  leds: { status: [SIM_LED_NAMES.status], error: [SIM_LED_NAMES.error] },
  patterns: {
    booting: { status: FAST, error: OFF },
    online: { status: ON, error: OFF },
    offline: { status: SLOW, error: OFF },
    updating: { status: HEARTBEAT, error: OFF },
    error: { status: OFF, error: RED_ALERT },
  },
  thermal: { preferredTypes: ["cpu-thermal"], hwmonNames: [], pauseAtC: 75, resumeAtC: 65 },
  watchdog: "watchdog",
};

/** Every profile, in detection order: the first whose rules match wins. */
export const PROFILES: readonly BoardProfile[] = [ONECLOUD, AMLOGIC_ARM64, RPI, GENERIC_LINUX, SIM];

export function profileByName(name: string): BoardProfile | undefined {
  return PROFILES.find((p) => p.name === name);
}
