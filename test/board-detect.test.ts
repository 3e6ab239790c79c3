// Board detection on fake /proc trees built from the fixtures of real boards (test/fixtures/boards/<name>/: the
// device tree's model and compatible, /proc/cpuinfo): every profile is found by the evidence its kernels give, the
// serial console follows the kernel, a configured name wins, an unknown one is reported and detection runs.
import { promises as fsp } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { STATUS_PATTERNS, openBoard } from "../board/board";
import { detectProfile, parseCpuInfo, readBoardFacts } from "../board/detect";
import { HostPaths } from "../board/host-paths";
import { PROFILES, type BoardFacts } from "../board/profiles";

const FIXTURES = new URL("fixtures/boards/", import.meta.url).pathname;
const roots: string[] = [];

afterAll(async () => {
  await Promise.all(roots.map((r) => fsp.rm(r, { recursive: true, force: true })));
});

/** A fake root with the fixture's files where the kernel puts them: proc/device-tree/{model,compatible}, proc/cpuinfo. */
async function fakeRoot(fixture?: string): Promise<string> {
  const root = await fsp.mkdtemp(join(tmpdir(), "sharenode-board-detect-"));
  roots.push(root);
  if (fixture === undefined) return root;
  for (const [name, dest] of [
    ["model", ["proc", "device-tree", "model"]],
    ["compatible", ["proc", "device-tree", "compatible"]],
    ["cpuinfo", ["proc", "cpuinfo"]],
  ] as const) {
    let content: Buffer;
    try {
      content = await fsp.readFile(join(FIXTURES, fixture, name));
    } catch {
      continue; // this board's kernel does not have the file
    }
    const target = join(root, ...dest);
    await fsp.mkdir(join(target, ".."), { recursive: true });
    await fsp.writeFile(target, content);
  }
  return root;
}

describe("reading the facts", () => {
  it("parses the device tree's NUL-terminated model and NUL-separated compatible list", async () => {
    const facts = await readBoardFacts(new HostPaths(await fakeRoot("rpi4")));
    expect(facts).toEqual({
      model: "Raspberry Pi 4 Model B Rev 1.4",
      compatible: ["raspberrypi,4-model-b", "brcm,bcm2711"],
      cpuinfo: { hardware: "BCM2835", revision: "c03114", model: "Raspberry Pi 4 Model B Rev 1.4" },
    });
  });

  it("reads a vendor kernel's cpuinfo when there is no device tree", async () => {
    const facts = await readBoardFacts(new HostPaths(await fakeRoot("onecloud-vendor")));
    expect(facts).toEqual({ compatible: [], cpuinfo: { hardware: "Amlogic Meson8B", revision: "000a" } });
  });

  it("does not take x86's numeric 'model' line for the board's Model", () => {
    expect(parseCpuInfo("processor\t: 0\nmodel\t\t: 142\nmodel name\t: Intel(R) Core(TM) i5\n")).toEqual({});
  });

  it("answers empty facts for an empty root", async () => {
    expect(await readBoardFacts(new HostPaths(await fakeRoot()))).toEqual({ compatible: [], cpuinfo: {} });
  });
});

describe("detection of every profile", () => {
  const cases: Array<[fixture: string, board: string, detectedBy: string, tty: string | undefined]> = [
    ["onecloud", "onecloud", 'device-tree compatible "xunlei,onecloud"', "ttyAML0"],
    ["onecloud-vendor", "onecloud", 'cpuinfo Hardware "Amlogic Meson8B"', "ttyS0"],
    ["phicomm-n1", "amlogic-arm64", 'device-tree compatible "phicomm,n1"', "ttyAML0"],
    ["amlogic-vendor-arm64", "amlogic-arm64", 'cpuinfo Hardware "Amlogic"', "ttyS0"],
    ["rpi4", "rpi", 'device-tree compatible "raspberrypi,4-model-b"', "ttyS0"],
    ["rpi5", "rpi", 'device-tree compatible "raspberrypi,5-model-b"', "ttyAMA10"],
    ["rpi3-old-kernel", "rpi", 'cpuinfo Hardware "BCM2835"', "ttyS0"],
    ["pc", "generic-linux", "no profile matched (no device-tree model or cpuinfo Hardware line)", undefined],
  ];
  for (const [fixture, board, detectedBy, tty] of cases) {
    it(`${fixture} -> ${board}`, async () => {
      const problems: string[] = [];
      const b = await openBoard({
        paths: new HostPaths(await fakeRoot(fixture)),
        name: "auto",
        onProblem: (l) => problems.push(l),
      });
      expect(b.name).toBe(board);
      expect(b.detectedBy).toBe(detectedBy);
      expect(b.console?.tty).toBe(tty);
      if (tty !== undefined) expect(b.console?.baud).toBe(115200);
      // Detection itself raises no problem; the only lines are the fixture tree's missing LEDs.
      expect(problems.every((l) => l.startsWith("LED "))).toBe(true);
    });
  }

  it("takes a mainline meson8b box that is not a OneCloud for generic Linux", () => {
    const facts: BoardFacts = {
      model: "Hardkernel ODROID-C1",
      compatible: ["hardkernel,odroid-c1", "amlogic,meson8b"],
      cpuinfo: { hardware: "Amlogic Meson platform" },
    };
    expect(detectProfile(facts)).toMatchObject({
      profile: { name: "generic-linux" },
      detectedBy:
        'no profile matched (device-tree model "Hardkernel ODROID-C1", cpuinfo Hardware "Amlogic Meson platform")',
    });
  });

  it("gives a first-generation Pi (old-style revision code) the PL011 console", () => {
    const facts: BoardFacts = { compatible: [], cpuinfo: { hardware: "BCM2835", revision: "000e" } };
    const { profile } = detectProfile(facts);
    expect(profile.name).toBe("rpi");
    expect(profile.console(facts)).toEqual({ tty: "ttyAMA0", baud: 115200 });
  });

  it("never detects the sim board, even on the sim's own tree", async () => {
    const simRoot = await fakeRoot();
    await openBoard({ paths: new HostPaths("/"), name: "sim", simRoot });
    const b = await openBoard({ paths: new HostPaths(simRoot), name: "auto" });
    expect(b.name).toBe("generic-linux");
    expect(b.detectedBy).toBe('no profile matched (device-tree model "sharenode sim board")');
  });

  it("falls back to generic Linux on a root without /proc", async () => {
    const b = await openBoard({ paths: new HostPaths(await fakeRoot()), name: "auto" });
    expect(b.name).toBe("generic-linux");
    expect(b.problems).toEqual([]);
  });
});

describe("the configured name", () => {
  it("wins over detection", async () => {
    const problems: string[] = [];
    const b = await openBoard({
      paths: new HostPaths(await fakeRoot("rpi4")),
      name: "onecloud",
      onProblem: (l) => problems.push(l),
    });
    expect(b.name).toBe("onecloud");
    expect(b.detectedBy).toBe('config board="onecloud"');
    expect(problems.some((l) => l.includes("unknown board"))).toBe(false);
  });

  it("is reported when unknown, and detection runs instead", async () => {
    const told: string[] = [];
    const b = await openBoard({
      paths: new HostPaths(await fakeRoot("rpi4")),
      name: "raspberry",
      onProblem: (l) => told.push(l),
    });
    const line =
      'unknown board "raspberry" (known: onecloud, amlogic-arm64, rpi, generic-linux, sim); detecting instead';
    expect(b.problems[0]).toBe(line);
    expect(told[0]).toBe(line);
    expect(b.name).toBe("rpi");
    expect(b.detectedBy).toBe('device-tree compatible "raspberrypi,4-model-b"');
  });

  it("sim without a simRoot is a programming error, not a silent fallback to real hardware", async () => {
    await expect(openBoard({ paths: new HostPaths(await fakeRoot()), name: "sim" })).rejects.toThrow(/needs a simRoot/);
  });
});

describe("the profiles", () => {
  it("are unique by name and valid config names", () => {
    const names = PROFILES.map((p) => p.name);
    expect(new Set(names).size).toBe(names.length);
    for (const n of names) expect(n).toMatch(/^[a-z0-9][a-z0-9-]{0,31}$/);
  });

  for (const profile of PROFILES) {
    it(`${profile.name}: every pattern sets every LED, and the thermal limits have hysteresis`, () => {
      const roles = Object.keys(profile.leds).sort();
      for (const pattern of STATUS_PATTERNS) expect(Object.keys(profile.patterns[pattern]).sort()).toEqual(roles);
      // Patterns must be told apart on the box: no two may look the same.
      const looks = STATUS_PATTERNS.map((p) => JSON.stringify(roles.map((r) => profile.patterns[p][r])));
      if (roles.length > 0) expect(new Set(looks).size).toBe(STATUS_PATTERNS.length);
      expect(profile.thermal.pauseAtC - profile.thermal.resumeAtC).toBeGreaterThanOrEqual(5);
      expect(profile.thermal.pauseAtC).toBeLessThanOrEqual(85);
    });
  }
});
