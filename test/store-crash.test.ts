// Power cuts, as near as a test gets: a real child process ingesting and deleting objects is SIGKILLed at
// random moments, many times over the same data directory. After each kill the store must reopen with every
// acknowledged object complete and valid, nothing acknowledged as deleted, the index matching the files on
// disk, tmp/ empty and no space leaked.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync, statfsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { outboardLength } from "../agent/kernels/outboard";
import { ObjectStore } from "../agent/store/object-store";
import { bundleFixture } from "./helpers/child";

const TRIALS = 25;
let work = "";
let child = "";

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "sharenode-store-crash-"));
  child = join(work, "child.mjs");
  await bundleFixture("store-crash-child.ts", child);
});

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

/** Runs the child until it is killed `afterMs` after it reported ready; returns its acknowledged lines. */
function runAndKill(dataDir: string, seed: number, afterMs: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [child, dataDir, String(seed)], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    let timer: NodeJS.Timeout | undefined;
    proc.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      if (!timer && out.startsWith("ready\n")) timer = setTimeout(() => proc.kill("SIGKILL"), afterMs);
    });
    proc.stderr.on("data", (d: Buffer) => (err += d.toString()));
    proc.on("exit", (code, signal) => {
      if (signal !== "SIGKILL") return reject(new Error(`child exited with ${code ?? signal} before the kill: ${err}`));
      // Only complete lines were acknowledged.
      resolve(out.split("\n").slice(0, -1));
    });
    // A child stuck in start-up is a failure too, not a hang.
    setTimeout(() => proc.kill("SIGKILL"), 20_000).unref();
  });
}

it(`keeps every acknowledged object and loses nothing across ${TRIALS} SIGKILLs`, async () => {
  const dataDir = join(work, "data");
  const expected = new Map<string, number>(); // acknowledged and not acknowledged-deleted
  const deleted = new Set<string>();
  let acks = 0;
  for (let trial = 0; trial < TRIALS; trial++) {
    const lines = await runAndKill(dataDir, 1000 + trial, 50 + ((trial * 7919) % 600));
    expect(lines[0], `trial ${trial}: child did not start`).toBe("ready");
    let deleting: string | undefined;
    for (const line of lines.slice(1)) {
      const [op, id, len] = line.split(" ");
      if (op === "deleting") {
        deleting = id;
        continue;
      }
      acks++;
      if (op === "add") expected.set(id!, Number(len));
      else if (op === "del") {
        expected.delete(id!);
        deleted.add(id!);
        deleting = undefined;
      }
    }
    // A delete asked for and not acknowledged before the kill: either outcome is correct (checked below: if the
    // object is still there, it must be whole).
    if (deleting) expected.delete(deleting);
  }
  // One more start repairs the last kill; then check everything.
  const store = new ObjectStore({ dataDir, quota: { bytes: 1 << 30 }, reserveBytes: 0 });
  await store.start();
  try {
    const live = new Map(store.list().map((o) => [o.id, o.length]));
    for (const [id, length] of expected) {
      expect(live.get(id), `acknowledged object ${id} is missing`).toBe(length);
      expect(await store.verifyFiles(id, length), `acknowledged object ${id} is corrupt`).toBe(true);
    }
    for (const id of deleted) expect(live.has(id), `deleted object ${id} came back`).toBe(false);
    // Objects the index has beyond the acknowledged ones can only be an in-flight ingest or delete of a kill,
    // and they must be whole.
    for (const [id, length] of live) if (!expected.has(id)) expect(await store.verifyFiles(id, length)).toBe(true);
    expect(live.size - expected.size).toBeLessThanOrEqual(TRIALS);
    // The index matches the disk: every file belongs to a live object, every live object has both files.
    const files = readdirSync(join(dataDir, "objects"), { recursive: true })
      .map(String)
      .filter((f) => f.includes("/"));
    const expectedFiles = [...live.keys()].flatMap((id) => [`${id.slice(0, 2)}/${id}`, `${id.slice(0, 2)}/${id}.obao`]);
    expect(files.sort()).toEqual(expectedFiles.sort());
    expect(readdirSync(join(dataDir, "tmp"))).toEqual([]);
    expect(readdirSync(join(dataDir, "quarantine"))).toEqual([]);
    // No space leaked: used bytes is the sum over the index.
    const status = await store.status();
    const block = statfsSync(dataDir).bsize;
    const round = (n: number) => Math.ceil(n / block) * block;
    let sum = 0;
    for (const length of live.values()) sum += round(length) + round(outboardLength(length));
    expect(status.usedBytes).toBe(sum);
    expect(acks, "the children acknowledged too little work for the test to mean anything").toBeGreaterThan(TRIALS * 3);
    expect(existsSync(join(dataDir, "index.log"))).toBe(true);
  } finally {
    await store.stop();
  }
}, 300_000);
