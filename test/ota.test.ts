// Updates over the air, end to end (issue 13): the launcher (board/install/launcher.sh) runs the built bundle from
// a release tree, a real mosquitto carries signed ota.offer commands and the ota.* events, a real HTTP origin
// serves what `sharenode release pack` wrote. An upgrade from build N to N+1 commits after its gate; a release that
// exits at start, one that hangs and one that cannot reach the broker are each rolled back with the reason;
// refusals leave `current` untouched; a download cut by SIGKILL fetches only what was not yet verified; and
// `sharenode ota apply DIR` installs from local files through the console socket.
//
// The tree lives on a 3 MiB tmpfs (mounted as root, as CI runs), so that "the disk is full" is a real statfs.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OtaRig } from "./helpers/ota-rig";
import { seededBytes } from "./helpers/random";

// Two slots of the bundle (about 0.7 MB each) and room for a third release; not for the 2.5 MiB "full disk" one.
const rig = new OtaRig({ gateSeconds: 2, tmpfsBytes: 3 * 1024 * 1024 });
const { waitFor } = rig;

beforeAll(() => rig.start(), 120_000);
afterAll(() => rig.stop());

describe("updates over the air under the launcher", () => {
  it("upgrades build 0 to build 2: offered, installed, on trial, committed after the gate; current, status and the state record follow", async () => {
    const dir = rig.pack(2, { "sharenode.js": rig.variant(2) });
    const accepted = await rig.result("ota.offer", { manifest: rig.manifest(dir), sources: [rig.publish(dir)] });
    expect(accepted).toMatchObject({ accepted: true, build: 2, version: "0.2.0" });
    await waitFor("ota.committed", () => rig.otaEvents(2).some((e) => e.type === "ota.committed") || undefined);
    const types = rig.otaEvents(2).map((e) => e.type);
    expect(types.filter((t) => t !== "ota.progress")).toEqual([
      "ota.offered",
      "ota.installed",
      "ota.trial",
      "ota.committed",
    ]);
    expect(types).toContain("ota.progress");
    expect(rig.current()).toBe("releases/B");
    expect(existsSync(join(rig.opt, "trial"))).toBe(false);
    expect(readFileSync(join(rig.opt, "releases/B/sharenode.js"))).toEqual(
      readFileSync(join(rig.work, "bundles/sharenode-2.js")),
    );
    expect(rig.box.log).toMatch(/build 2 \(slot B\) on trial: try 1 of 3/);
    const status = await rig.result("ota.status");
    expect(status).toMatchObject({
      build: 2,
      version: "0.2.0",
      slot: "B",
      phase: "committed",
      installedBuild: 2,
      floor: 2,
    });
    const states = rig.inbox
      .filter((m) => m.topic.endsWith("/state"))
      .map((m) => JSON.parse(m.payload.toString()) as Record<string, unknown>);
    expect(states.at(-1)).toMatchObject({ state: "online", version: "0.2.0", build: 2, slot: "B" });
  }, 90_000);

  it("refuses a tampered manifest, the wrong key, a downgrade and a release that does not fit, each in one line; current stays", async () => {
    const good = rig.pack(3, { "sharenode.js": rig.variant(3) });
    const body = JSON.parse(rig.manifest(good)) as { body: string; sig: string };
    const tampered = JSON.stringify({ ...body, body: body.body.replace('"0.3.0"', '"0.3.1"') });
    const otherKey = rig.pack(3, { "sharenode.js": rig.variant(3) }, join(rig.work, "other-key"));
    const old = rig.pack(1, { "sharenode.js": rig.variant(1) });
    const filler = join(rig.work, "filler.bin");
    writeFileSync(filler, seededBytes(2.5 * 1024 * 1024, 3));
    const big = rig.pack(3, { "sharenode.js": rig.variant(3), "filler.bin": filler });
    const cases: Array<[string, string, string]> = [
      [tampered, "bad-signature", "tampered"],
      [rig.manifest(otherKey), "bad-signature", "wrong key"],
      [rig.manifest(old), "not-newer", "downgrade"],
      [rig.manifest(big), "no-space", "full disk"],
    ];
    for (const [m, code, what] of cases) {
      const reply = await rig.command("ota.offer", { manifest: m, sources: [rig.origin.base + "/"] });
      expect(reply.ok, what).toBe(false);
      if (!reply.ok) {
        expect(reply.error.code, what).toBe(code);
        expect(reply.error.message, what).not.toMatch(/\n/);
      }
      await waitFor(
        `ota.refused ${code}`,
        () => rig.events().some((e) => e.type === "ota.refused" && e.code === code) || undefined,
      );
      expect(rig.current(), what).toBe("releases/B");
    }
    expect((await rig.result("ota.status")).phase).toBe("committed");
  });

  it("a tampered file is caught as it arrives: ota.failed, nothing installed, current stays", async () => {
    const dir = rig.pack(3, { "sharenode.js": rig.variant(3) });
    const base = rig.publish(dir);
    const id = (
      JSON.parse(JSON.parse(rig.manifest(dir)).body as string) as { files: { path: string; blake3: string }[] }
    ).files.find((f) => f.path === "sharenode.js")!.blake3;
    rig.origin.behave(`${dir.split("/").pop()!}/objects/${id}`, { kind: "corrupt", offset: 100_000 });
    await rig.result("ota.offer", { manifest: rig.manifest(dir), sources: [base] });
    const failed = await waitFor("ota.failed", () => rig.otaEvents(3).find((e) => e.type === "ota.failed"));
    expect(failed.code).toBe("bad-data");
    expect(rig.current()).toBe("releases/B");
    expect(await rig.result("ota.status")).toMatchObject({ phase: "idle", installedBuild: 2 });
  });

  const bad: Array<[string, number, () => Record<string, string>, string]> = [
    ["exits at start", 4, () => ({ "sharenode.js": rig.bundleFile("exit.js", "process.exit(3);\n") }), "crash"],
    ["hangs", 5, () => ({ "sharenode.js": rig.bundleFile("hang.js", "setInterval(() => {}, 1000);\n") }), "hang"],
    [
      "runs but cannot reach the broker",
      6,
      () => ({
        "sharenode.js": rig.bundleFile(
          "no-broker.js",
          'process.env.SHARENODE_BROKER = "mqtt://127.0.0.1:1";\nawait import("./agent.js");\n',
        ),
        "agent.js": rig.variant(6),
      }),
      "no-broker",
    ],
  ];
  for (const [what, build, files, code] of bad) {
    it(`a release that ${what} is rolled back to build 2 with the reason (${code})`, async () => {
      const dir = rig.pack(build, files());
      await rig.result("ota.offer", { manifest: rig.manifest(dir), sources: [rig.publish(dir)] });
      const rolled = await waitFor("ota.rolledback", () =>
        rig.otaEvents(build).find((e) => e.type === "ota.rolledback"),
      );
      expect(rolled.code).toBe(code);
      expect(String(rolled.reason)).not.toBe("");
      expect(rig.current()).toBe("releases/B");
      expect(existsSync(join(rig.opt, "trial"))).toBe(false);
      // The previous release runs on, connected, and never moved its floor.
      expect(await rig.result("ota.status")).toMatchObject({
        build: 2,
        slot: "B",
        phase: "rolledback",
        installedBuild: 2,
        floor: 2,
      });
    }, 90_000);
  }

  it("sharenode ota apply DIR installs a release from local files (a USB stick), through the console socket", async () => {
    const dir = rig.pack(7, { "sharenode.js": rig.variant(7) });
    const r = rig.sharenode(["ota", "apply", join(dir, "manifest.json")]);
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(/build 7 \(0\.7\.0\) accepted/);
    await waitFor("ota.committed 7", () => rig.otaEvents(7).some((e) => e.type === "ota.committed") || undefined);
    expect(rig.current()).toBe("releases/A");
    const status = rig.sharenode(["ota", "status"]);
    expect(status.stdout).toMatch(/running +0\.7\.0 \(build 7, slot A\)/);
    expect(status.stdout).toMatch(/update +committed: build 7/);
    // Only the running release's files stay pinned in the store (the bad releases', build 2's: unpinned).
    const store = (await rig.result<{ store: { pinned: number } }>("status")).store;
    expect(store.pinned).toBe(2);
    // Not on trial any more: commit and rollback by hand are refused, in one line.
    const commit = rig.sharenode(["ota", "commit"]);
    expect(commit.status).toBe(1);
    expect(commit.stderr).toMatch(/^sharenode: ota: .*no release is on trial here\n$/);
  }, 90_000);

  it("a download cut by SIGKILL resumes: the origin sends only the bytes not yet verified", async () => {
    const filler = join(rig.work, "filler-resume.bin");
    writeFileSync(filler, seededBytes(400 * 1024, 9));
    const dir = rig.pack(8, { "sharenode.js": rig.variant(8), "data.bin": filler });
    const base = rig.publish(dir);
    const name = dir.split("/").pop()!;
    const files = (
      JSON.parse(JSON.parse(rig.manifest(dir)).body as string) as {
        files: { path: string; blake3: string; length: number }[];
      }
    ).files;
    const big = files.find((f) => f.path === "data.bin")!;
    const held = 256 * 1024;
    rig.origin.behave(`${name}/objects/${big.blake3}`, { kind: "stall", after: held });
    await rig.result("ota.offer", { manifest: rig.manifest(dir), sources: [base] });
    await waitFor("256 KiB verified and durable", async () => {
      const list = await rig.result<{ tasks: { objectId: string; bytesDone: number }[] }>("task.list");
      return list.tasks.find((t) => t.objectId === big.blake3)?.bytesDone === held || undefined;
    });
    // The status LED says "updating" (nobody should pull the plug now).
    expect((await rig.result<{ board: { led: string } }>("status")).board.led).toBe("updating");
    rig.box.kill("SIGKILL");
    await rig.box.exited;
    rig.origin.serve(`${name}/objects/${big.blake3}`, readFileSync(join(dir, "objects", big.blake3)));
    await rig.startBox();
    await waitFor("ota.committed 8", () => rig.otaEvents(8).some((e) => e.type === "ota.committed") || undefined);
    const after = rig.origin.servedAt(`${name}/objects/${big.blake3}`);
    expect(after.bytes).toBe(big.length - held);
    expect(after.ranges[0]![0]).toBe(held);
    expect(rig.current()).toBe("releases/B");
    expect((await rig.result<{ board: { led: string } }>("status")).board.led).toBe("online");
  }, 120_000);

  it("Ctrl-C at a terminal (SIGINT to the whole process group) stops the agent cleanly, once: exit 0", async () => {
    const box = rig.box;
    const from = box.log.length;
    box.kill("SIGINT");
    expect(await box.exited).toBe(0);
    const tail = box.log.slice(from);
    expect(tail).toMatch(/agent: SIGINT: stopping/);
    expect(tail).toMatch(/agent: stopped/);
    // The launcher did not pass a second signal on (the agent would have exited at once, without its clean stop).
    expect(tail).not.toMatch(/again/);
    await rig.startBox();
  });

  it("SIGTERM to the launcher alone (systemd's KillMode=mixed, procd) stops the agent cleanly, once: exit 0", async () => {
    const box = rig.box;
    const from = box.log.length;
    box.proc.kill("SIGTERM");
    expect(await box.exited).toBe(0);
    const tail = box.log.slice(from);
    expect(tail).toMatch(/agent: SIGTERM: stopping/);
    expect(tail).toMatch(/agent: stopped/);
    expect(tail).not.toMatch(/again/);
  });
});
