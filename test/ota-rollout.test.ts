// Staged rollouts (issue 13, item 5): the cohort function, and `sharenode fleet rollout` against three boxes under
// their launchers on a real mosquitto: a good release reaches every device of the cohort and the command exits 0;
// a release that exits at start is rolled back on the first device, the rollout halts past --max-failures, and
// the devices not yet offered never see it.
import { readlinkSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cohortPoint, inCohort, Rollout } from "../agent/fleet/rollout";
import { type Box, OtaRig } from "./helpers/ota-rig";

describe("the cohort", () => {
  const ids = Array.from({ length: 10_000 }, (_, i) => i.toString(16).padStart(32, "0"));

  it("takes about P percent of the fleet, and a device in a stage stays in every larger one", () => {
    for (const p of [1, 5, 20, 50]) {
      const share = ids.filter((id) => inCohort(id, 42, p)).length / ids.length;
      expect(share * 100).toBeGreaterThan(p - 1.5);
      expect(share * 100).toBeLessThan(p + 1.5);
    }
    for (const id of ids.slice(0, 2000)) if (inCohort(id, 42, 5)) expect(inCohort(id, 42, 20)).toBe(true);
    expect(ids.every((id) => inCohort(id, 42, 100))).toBe(true);
    expect(ids.some((id) => inCohort(id, 42, 0))).toBe(false);
  });

  it("draws a new cohort for each build", () => {
    const a = ids.filter((id) => inCohort(id, 42, 10));
    const b = new Set(ids.filter((id) => inCohort(id, 43, 10)));
    const both = a.filter((id) => b.has(id)).length;
    // Independent draws of 10 % overlap by about 1 % of the fleet.
    expect(both).toBeLessThan(a.length / 4);
    expect(cohortPoint(ids[0]!, 42)).toBe(cohortPoint(ids[0]!, 42));
  });

  it("halts once the rolled-back share of the cohort passes the limit, and offers nothing more", () => {
    const r = new Rollout({ build: 9, batch: 2, maxFailuresPercent: 25 });
    for (const id of ["a", "b", "c", "d"]) r.add(id, true, 8);
    r.add("e", true, 9);
    expect(r.toOffer()).toEqual(["a", "b"]);
    for (const id of ["a", "b"]) r.offered(id);
    expect(r.toOffer()).toEqual([]);
    r.event("a", "ota.committed", { build: 9 });
    r.event("b", "ota.rolledback", { build: 8, code: "crash" }); // another build's: ignored
    expect(r.toOffer()).toEqual(["c"]);
    r.event("b", "ota.rolledback", { build: 9, code: "crash", reason: "stopped 3 times" });
    // 1 of 5 is 20 %: not past 25 %.
    expect(r.halted).toBeUndefined();
    r.offered("c");
    r.event("c", "ota.failed", { build: 9, code: "bad-data" });
    expect(r.halted).toMatch(/^2 of 5 devices rolled back or failed \(40\.0 % > 25 %\)$/);
    expect(r.toOffer()).toEqual([]);
    expect(r.done).toBe(true);
    expect(r.succeeded).toBe(false);
    expect(r.table()).toMatch(/^b +8 +rolledback +crash: stopped 3 times$/m);
    expect(r.table()).toMatch(/^e +9 +current$/m);
  });
});

const idOf = (box: Box) => /device ([0-9a-f]{32})/.exec(box.log)![1]!;
const keyOf = (box: Box) => /\(public key ([0-9a-f]{64})\)/.exec(box.log)![1]!;

describe("sharenode fleet rollout, three boxes", () => {
  const rig = new OtaRig({ gateSeconds: 1 });
  const boxes: { box: Box; opt: string }[] = [];

  beforeAll(async () => {
    await rig.start();
    boxes.push({ box: rig.box, opt: rig.opt });
    for (const name of ["box2", "box3"]) boxes.push(await rig.otherBox(name));
  }, 120_000);
  afterAll(async () => {
    for (const b of boxes.slice(1)) b.box.kill("SIGKILL");
    await rig.stop();
  });

  const rollout = (dir: string, base: string, ...more: string[]) =>
    rig.sharenodeAsync([
      "fleet",
      "rollout",
      "--release",
      dir,
      "--source",
      base,
      "--broker",
      rig.broker.url,
      "--key-dir",
      join(rig.work, "fleet"),
      "--discover",
      "1",
      "--wait",
      "60",
      ...more,
    ]);

  it("a good release reaches every device of a 100 % cohort: exit 0, each committed", async () => {
    const dir = rig.pack(2, { "sharenode.js": rig.variant(2) });
    const r = await rollout(dir, rig.publish(dir), "--percent", "100");
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(/^rollout of 0\.2\.0 \(build 2\) to 100 % of 3 devices: 3 in the cohort/);
    expect(r.stdout).toMatch(/^3 devices: 3 committed$/m);
    expect(r.status).toBe(0);
    for (const b of boxes) expect(readlinkSync(join(b.opt, "current"))).toBe("releases/B");
  }, 120_000);

  it("a release that exits at start: the first device rolls back, the rollout halts, the others are never offered it", async () => {
    const dir = rig.pack(3, { "sharenode.js": rig.bundleFile("exit.js", "process.exit(3);\n") });
    const r = await rollout(dir, rig.publish(dir), "--percent", "100", "--batch", "1", "--max-failures", "30");
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/^3 devices: 1 rolledback, 2 waiting$/m);
    expect(r.stdout).toMatch(/ 2 +rolledback +crash: stopped 3 times before it committed/);
    expect(r.stdout).toMatch(/^halted: 1 of 3 devices rolled back or failed \(33\.3 % > 30 %\)$/m);
    // Every box runs build 2, from slot B.
    for (const b of boxes) expect(readlinkSync(join(b.opt, "current"))).toBe("releases/B");
    const offered = new Set(rig.events().filter((e) => e.type === "ota.offered" && e.build === 3));
    expect(offered.size).toBe(1);
  }, 120_000);

  it("distribution through the boxes: a box fetches a release from another box's server, paid with orders, no origin", async () => {
    const [first, second] = boxes as [{ box: Box; opt: string }, { box: Box; opt: string }];
    const dir = rig.pack(4, { "sharenode.js": rig.variant(4) });
    // The first box gets it from the origin.
    const toFirst = await rig.sharenodeAsync([
      "fleet",
      "send",
      idOf(first.box),
      "ota.offer",
      "--args",
      JSON.stringify({ manifest: rig.manifest(dir), sources: [rig.publish(dir)] }),
      "--broker",
      rig.broker.url,
      "--key-dir",
      join(rig.work, "fleet"),
    ]);
    expect(toFirst.status, toFirst.stderr).toBe(0);
    await rig.waitFor(
      "build 4 committed on the first box",
      () => rig.events().some((e) => e.type === "ota.committed" && e.build === 4) || undefined,
    );
    // The second gets it from the first box only: an order per file, signed by the fleet for the second box's key.
    const serving = /serving on \S+: (http:\/\/\S+)/.exec(
      first.box.log.slice(first.box.log.lastIndexOf("sharenode 0.4.0")),
    )![1]!;
    const orders: Record<string, string> = {};
    for (const f of rig.files(dir)) {
      const o = await rig.sharenodeAsync([
        "fleet",
        "order",
        "--device",
        idOf(first.box),
        "--object",
        f.blake3,
        "--client-key",
        keyOf(second.box),
        "--max-bytes",
        String(f.length),
        "--rights",
        "sharenode:release",
        "--ttl",
        "600",
        "--key-dir",
        join(rig.work, "fleet"),
      ]);
      expect(o.status, o.stderr).toBe(0);
      orders[f.blake3] = o.stdout.trim();
    }
    const toSecond = await rig.sharenodeAsync([
      "fleet",
      "send",
      idOf(second.box),
      "ota.offer",
      "--args",
      JSON.stringify({ manifest: rig.manifest(dir), boxes: [{ url: serving, orders }] }),
      "--broker",
      rig.broker.url,
      "--key-dir",
      join(rig.work, "fleet"),
    ]);
    expect(toSecond.status, toSecond.stderr).toBe(0);
    await rig.waitFor(
      "build 4 committed on the second box",
      () => rig.events().filter((e) => e.type === "ota.committed" && e.build === 4).length >= 2 || undefined,
    );
    expect(readlinkSync(join(second.opt, "current"))).toBe("releases/A");
    // Both fetched the bundle as a task: the second from the first box, its only source.
    const served = rig.events().filter((e) => e.type === "task.done" && e.objectId === rig.files(dir)[0]!.blake3);
    expect(served.length).toBe(2);
  }, 120_000);
});
