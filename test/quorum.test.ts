// The fleet's quorum over compute results (agent/fleet/quorum.ts): results counted only when signed by the device
// they come from, for the task, module and input sent; accepted at M agreeing; no quorum once the devices still out
// could not make M; the verdict settlement takes.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ComputeQuorum } from "../agent/fleet/quorum";
import { loadOrCreateDeviceIdentity, type DeviceIdentity } from "../agent/identity/device-key";
import { signComputeResult } from "../agent/protocol/compute-result";

let root = "";
let devices: DeviceIdentity[] = [];
const TASK = { taskId: "t-1", moduleId: "1a".repeat(32), inputId: "2b".repeat(32), cpuMs: 1000 };
const OUT_A = "3c".repeat(32);
const OUT_B = "4d".repeat(32);

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "sharenode-quorum-"));
  devices = await Promise.all(["d0", "d1", "d2", "d3"].map((d) => loadOrCreateDeviceIdentity(join(root, d))));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

function result(signer: DeviceIdentity, outputId: string, over: Partial<typeof TASK & { deviceId: string }> = {}) {
  return signComputeResult(
    {
      deviceId: signer.deviceId,
      ...TASK,
      outputId,
      outputLength: 3,
      cpuMs: 10,
      wallMs: 12,
      at: 1,
      ...over,
    } as Parameters<typeof signComputeResult>[0],
    signer,
  );
}

const quorumOf = (count: number, m: number) =>
  new ComputeQuorum(TASK, new Map(devices.slice(0, count).map((d) => [d.deviceId, d.publicKey])), m);

describe("the compute quorum", () => {
  it("accepts when M sign the same output, names the one that disagrees, and gives settlement the verdict", () => {
    const q = quorumOf(3, 2);
    const [d0, d1, d2] = devices as [DeviceIdentity, DeviceIdentity, DeviceIdentity];
    for (const d of [d0, d1, d2]) q.replied(d.deviceId, { ok: true });
    q.done(d0.deviceId, result(d0, OUT_A));
    expect(q.outcome()).toEqual({ state: "pending" });
    q.done(d2.deviceId, result(d2, OUT_B));
    expect(q.outcome()).toEqual({ state: "pending" });
    q.done(d1.deviceId, result(d1, OUT_A));
    const o = q.outcome();
    expect(o.state).toBe("accepted");
    if (o.state !== "accepted") return;
    expect(o.outputId).toBe(OUT_A);
    expect(o.agreeing.sort()).toEqual([d0.deviceId, d1.deviceId].sort());
    expect(o.disagreeing.map((r) => [r.deviceId, r.outputId])).toEqual([[d2.deviceId, OUT_B]]);
    expect(q.verdict()).toEqual({ ...TASK, outputId: OUT_A, devices: [d0.deviceId, d1.deviceId, d2.deviceId] });
    expect(q.table()).toMatch(new RegExp(`^${d2.deviceId}\\s+done\\s+4d4d4d4d4d4d4d4d\\s+10\\s+12\\s+DISAGREES$`, "m"));
  });

  it("does not count a result signed by another key, naming another device, or for another task or input", () => {
    const q = quorumOf(4, 2);
    const [d0, d1, d2, d3] = devices as [DeviceIdentity, DeviceIdentity, DeviceIdentity, DeviceIdentity];
    // d1's result presented as d0's (d0 copying a neighbour's answer): it names d1, and d0's key did not sign it.
    q.done(d0.deviceId, result(d1, OUT_A));
    q.done(d1.deviceId, result(d1, OUT_A, { taskId: "other" }));
    q.done(d2.deviceId, result(d2, OUT_A, { inputId: "9f".repeat(32) }));
    q.done(d3.deviceId, "not a token");
    const states = [...q.replicas.values()].map((r) => [r.state, r.reason]);
    expect(states).toEqual([
      ["invalid", "compute result signature does not verify under the device key"],
      ["invalid", `the result's taskId is other, not t-1`],
      ["invalid", `the result's inputId is ${"9f".repeat(32)}, not ${"2b".repeat(32)}`],
      ["invalid", "compute result token is not base64url (A-Z a-z 0-9 - _, no padding)"],
    ]);
    // Nothing left that could agree: no quorum, the invalid ones named.
    const o = q.outcome();
    expect(o.state).toBe("no-quorum");
    expect(o.state === "no-quorum" && o.disagreeing).toHaveLength(4);
    expect(q.verdict().outputId).toBeNull();
  });

  it("no quorum once failures, refusals and timeouts leave too few to agree", () => {
    const q = quorumOf(3, 3);
    const [d0, d1, d2] = devices as [DeviceIdentity, DeviceIdentity, DeviceIdentity];
    q.replied(d0.deviceId, { ok: false, code: "compute-unavailable", message: "no store" });
    expect(q.outcome().state).toBe("no-quorum");
    const r = quorumOf(3, 2);
    r.done(d0.deviceId, result(d0, OUT_A));
    r.failed(d1.deviceId, "cpu-time", "used more than 1000 ms of CPU");
    expect(r.outcome().state).toBe("pending");
    r.timedOut();
    expect(r.outcome().state).toBe("no-quorum");
    expect([...r.replicas.values()].map((x) => x.code)).toEqual([undefined, "cpu-time", "timeout"]);
    // A result sent again (QoS 1) counts once; a late failure does not undo a result.
    const s = quorumOf(3, 2);
    s.done(d0.deviceId, result(d0, OUT_A));
    s.done(d0.deviceId, result(d0, OUT_A));
    s.failed(d0.deviceId, "late", "after its result");
    expect(s.outcome().state).toBe("pending");
    s.done(d2.deviceId, result(d2, OUT_A));
    expect(s.outcome().state).toBe("accepted");
    expect(() => quorumOf(2, 3)).toThrow(/the quorum must be 1..2/);
  });
});
