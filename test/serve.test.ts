// The box's HTTP server against stock curl, on a real store on a real filesystem: ranges as nginx answers them,
// HEAD, 416, bad ids refused before the disk, outboards, verified slices checked by the kernels' verifier,
// slowloris cut off, the connection caps, 200 connections at once.
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { get } from "node:http";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeProofFromData, verifyProof } from "../agent/kernels/proof";
import { ObjectServer } from "../agent/serve/server";
import { ObjectStore } from "../agent/store/object-store";
import { seededBytes } from "./helpers/random";
import { waitFor } from "./helpers/wait";

const run = promisify(execFile);
let dir = "";
let store: ObjectStore;
let server: ObjectServer;
let base = "";
const objects: { id: string; data: Uint8Array }[] = [];

async function* once(data: Uint8Array) {
  yield data;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "sharenode-serve-"));
  store = new ObjectStore({ dataDir: dir, quota: { bytes: 1 << 30 }, reserveBytes: 0 });
  await store.start();
  for (const [i, size] of [100_000, 1000, 3 * 1024 * 1024 + 17].entries()) {
    const data = seededBytes(size, 700 + i);
    const { object } = await store.ingest(once(data));
    objects.push({ id: object.id, data });
  }
  server = new ObjectServer({
    store,
    bind: "127.0.0.1",
    port: 0,
    limits: { headersTimeoutMs: 1000, maxConnections: 260, maxConnectionsPerAddress: 250 },
  });
  await server.start();
  base = `http://127.0.0.1:${server.port}`;
});

afterAll(async () => {
  await server?.stop();
  await store?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** curl -i: status, headers (lower-case names) and body bytes. */
let curls = 0;
async function curl(args: string[]): Promise<{ status: number; headers: Record<string, string>; body: Buffer }> {
  // A file of its own per call: calls may run at once.
  const out = join(dir, `curl-${curls++}.out`);
  const { stdout } = await run("curl", ["-s", "-D", "-", "-o", out, ...args], { encoding: "buffer" });
  const lines = stdout.toString("latin1").split("\r\n");
  const status = Number(lines[0]!.split(" ")[1]);
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) {
    const c = l.indexOf(":");
    if (c > 0) headers[l.slice(0, c).toLowerCase()] = l.slice(c + 1).trim();
  }
  const body = args.includes("-I") ? Buffer.alloc(0) : readFileSync(out);
  return { status, headers, body };
}

describe("ranges (nginx's answers)", () => {
  const cases: [string, number, [number, number] | null][] = [
    // header, status, [start, end) served (null: none)
    ["bytes=0-99", 206, [0, 100]],
    ["bytes=100-", 206, [100, 100_000]],
    ["bytes=-500", 206, [99_500, 100_000]],
    ["bytes=-200000", 206, [0, 100_000]],
    ["bytes=99999-200000", 206, [99_999, 100_000]],
    ["bytes= 5 - 9 ", 206, [5, 10]],
    ["BYTES=1-1", 206, [1, 2]],
    ["bytes=100000-", 416, null],
    ["bytes=5-3", 416, null],
    ["bytes=-0", 416, null],
    ["bytes=abc", 416, null],
    ["bytes=1-2-3", 416, null],
    ["bytes=0-1,5-9", 200, [0, 100_000]],
    ["bytes=0-1,100000-", 206, [0, 2]],
    ["items=0-1", 200, [0, 100_000]],
    ["bytes=", 200, [0, 100_000]],
    ["bytes=99999999999999999999-", 416, null],
    ["bytes=0-99999999999999999", 206, [0, 100_000]],
  ];
  for (const [header, status, span] of cases) {
    it(`${header} -> ${status}`, async () => {
      const { id, data } = objects[0]!;
      const r = await curl(["-H", `Range: ${header}`, `${base}/v1/objects/${id}`]);
      expect(r.status).toBe(status);
      expect(r.headers["accept-ranges"]).toBe("bytes");
      if (status === 416) {
        expect(r.headers["content-range"]).toBe("bytes */100000");
        return;
      }
      expect(r.headers.etag).toBe(`"${id}"`);
      expect(Buffer.compare(r.body, Buffer.from(data.subarray(span![0], span![1])))).toBe(0);
      if (status === 206) expect(r.headers["content-range"]).toBe(`bytes ${span![0]}-${span![1] - 1}/100000`);
      else expect(r.headers["content-range"]).toBeUndefined();
    });
  }

  it("HEAD answers the headers of the GET and no body", async () => {
    const { id } = objects[0]!;
    const whole = await curl(["-I", `${base}/v1/objects/${id}`]);
    expect(whole.status).toBe(200);
    expect(whole.headers["content-length"]).toBe("100000");
    const part = await curl(["-I", "-H", "Range: bytes=10-19", `${base}/v1/objects/${id}`]);
    expect(part.status).toBe(206);
    expect(part.headers["content-length"]).toBe("10");
    expect(part.headers["content-range"]).toBe("bytes 10-19/100000");
  });

  it("If-Range: the ETag keeps the range, anything else gets the whole object", async () => {
    const { id } = objects[0]!;
    const url = `${base}/v1/objects/${id}`;
    expect((await curl(["-H", "Range: bytes=0-9", "-H", `If-Range: "${id}"`, url])).status).toBe(206);
    expect((await curl(["-H", "Range: bytes=0-9", "-H", 'If-Range: "other"', url])).status).toBe(200);
  });

  it("a large object streams whole and in a large range", async () => {
    const { id, data } = objects[2]!;
    const whole = await curl([`${base}/v1/objects/${id}`]);
    expect(whole.status).toBe(200);
    expect(Buffer.compare(whole.body, Buffer.from(data))).toBe(0);
    const part = await curl(["-H", "Range: bytes=1000-2999999", `${base}/v1/objects/${id}`]);
    expect(Buffer.compare(part.body, Buffer.from(data.subarray(1000, 3_000_000)))).toBe(0);
  });
});

describe("paths", () => {
  it("refuses what is not an id before touching the disk, and 404s an id not stored", async () => {
    for (const path of ["../../etc/passwd", "ABC" + "0".repeat(61), "0".repeat(63), "0".repeat(64) + "/x"]) {
      const r = await curl(["--path-as-is", `${base}/v1/objects/${path}`]);
      expect(r.status, path).toBe(400);
      expect(r.headers["sharenode-refused"]).toBe("bad-id");
    }
    const r = await curl([`${base}/v1/objects/${"0".repeat(64)}`]);
    expect(r.status).toBe(404);
    expect(r.headers["sharenode-refused"]).toBe("not-found");
    expect((await curl([`${base}/`])).status).toBe(404);
  });

  it("serves the outboard as the store keeps it", async () => {
    const { id } = objects[2]!;
    const r = await curl([`${base}/v1/objects/${id}/outboard`]);
    expect(r.status).toBe(200);
    expect(Buffer.compare(r.body, readFileSync(store.outboardPath(id)))).toBe(0);
  });

  it("serves verified slices that the kernels' verifier accepts", async () => {
    // Twice: the second pass copies every group from the cached group trees instead of hashing it.
    for (const { id, data } of [...objects, ...objects]) {
      const L = data.length;
      for (const [s, e] of [
        [0, 1],
        [0, L],
        [1023, 1025],
        [L - 1, L],
        [Math.floor(L / 3), Math.floor(L / 3) + 70_000],
      ] as [number, number][]) {
        if (e > L || s >= e) continue;
        const r = await curl([`${base}/v1/objects/${id}/slice?start=${s}&end=${e}`]);
        expect(r.status, `${s}-${e}`).toBe(200);
        const first = Number(r.headers["sharenode-chunk-start"]);
        const count = Number(r.headers["sharenode-chunk-count"]);
        expect(first).toBe(Math.floor(s / 1024));
        expect(first + count).toBe(Math.ceil(e / 1024));
        const chunks = verifyProof(Buffer.from(id, "hex"), L, first, count, r.body);
        expect(chunks, `${s}-${e} verifies`).not.toBeNull();
        expect(
          Buffer.compare(
            Buffer.from(chunks!),
            Buffer.from(data.subarray(first * 1024, Math.min(L, (first + count) * 1024))),
          ),
        ).toBe(0);
      }
    }
    const { id } = objects[0]!;
    expect((await curl([`${base}/v1/objects/${id}/slice?start=5&end=5`])).status).toBe(416);
    expect((await curl([`${base}/v1/objects/${id}/slice?start=0&end=100001`])).status).toBe(416);
    expect((await curl([`${base}/v1/objects/${id}/slice?start=x`])).status).toBe(400);
  });

  it("streams slices over many answer pieces byte for byte as the kernels' proof", async () => {
    // The 3 MiB object: whole and unaligned slices span many 256 KiB pieces and file batches (cut mid-group, runs
    // of parents and chunks across piece boundaries); twice, hashed then from the cached group trees.
    const { id, data } = objects[2]!;
    const L = data.length;
    for (const [s, e] of [
      [0, L],
      [5000, L - 3],
      [262_143, 262_145 + 600_000],
      [1_000_001, 2_700_000],
      [0, L],
    ] as [number, number][]) {
      const r = await curl([`${base}/v1/objects/${id}/slice?start=${s}&end=${e}`]);
      expect(r.status, `${s}-${e}`).toBe(200);
      const first = Math.floor(s / 1024);
      const expected = makeProofFromData(data, first, Math.ceil(e / 1024) - first);
      expect(r.body.length, `${s}-${e}`).toBe(expected.length);
      expect(Buffer.compare(r.body, Buffer.from(expected)), `${s}-${e} byte for byte`).toBe(0);
    }
  });
  it("serves many slices at once to clients that stall, each byte for byte (an answer buffer is reused only once its socket is done with it)", async () => {
    // Each client stops reading for a while, so the server's writes stay unfinished (the kernel holds the bytes
    // still to go in the buffer itself) while other answers are built: reusing a buffer too early shows here.
    // 16 MiB: more than the kernel's socket buffers on loopback take while the client does not read.
    const data = seededBytes(16 * 1024 * 1024 + 5, 799);
    const { id } = (await store.ingest(once(data))).object;
    const L = data.length;
    const spans: [number, number][] = Array.from({ length: 8 }, (_, i) => [i * 100_003, L - i * 77_001]);
    const answers = await Promise.all(
      spans.map(
        ([s, e]) =>
          new Promise<Buffer>((resolve, reject) => {
            get(`${base}/v1/objects/${id}/slice?start=${s}&end=${e}`, (res) => {
              const parts: Buffer[] = [];
              res.on("data", (d: Buffer) => parts.push(d));
              res.on("end", () => resolve(Buffer.concat(parts)));
              res.on("error", reject);
              res.pause();
              setTimeout(() => res.resume(), 400);
            }).on("error", reject);
          }),
      ),
    );
    spans.forEach(([s, e], i) => {
      const first = Math.floor(s / 1024);
      const expected = makeProofFromData(data, first, Math.ceil(e / 1024) - first);
      expect(answers[i]!.length, `${s}-${e}`).toBe(expected.length);
      expect(Buffer.compare(answers[i]!, Buffer.from(expected)), `${s}-${e} byte for byte`).toBe(0);
    });
  });
});

describe("robustness", () => {
  it("cuts a slowloris client off after the header timeout", async () => {
    const socket = connect(server.port, "127.0.0.1");
    let received = "";
    socket.on("data", (d) => (received += d.toString()));
    const closed = new Promise<number>((resolve) => socket.on("close", () => resolve(Date.now())));
    const started = Date.now();
    const drip = "GET /v1/objects/" + objects[0]!.id + " HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let i = 0;
    const timer = setInterval(() => {
      if (!socket.destroyed) socket.write(drip[i++ % drip.length]!);
    }, 100);
    const at = await closed;
    clearInterval(timer);
    expect(at - started).toBeLessThan(5000);
    expect(received).toMatch(/^HTTP\/1.1 408/);
  });

  it("cuts off a client that stops reading after the idle timeout", async () => {
    const idle = new ObjectServer({ store, bind: "127.0.0.1", port: 0, limits: { idleTimeoutMs: 500 } });
    await idle.start();
    try {
      const socket = connect(idle.port, "127.0.0.1");
      let got = 0;
      socket.on("data", (d) => {
        got += d.length;
        // Reads the first bytes, then stops: the 3 MiB answer fills the socket buffers and stalls.
        if (got > 1000) socket.pause();
      });
      const closed = new Promise<void>((resolve) => socket.on("close", () => resolve()));
      socket.write(`GET /v1/objects/${objects[2]!.id} HTTP/1.1\r\nHost: x\r\n\r\n`);
      const started = Date.now();
      await waitFor("the answer's first bytes", () => got > 1000);
      await waitFor("the server to close the stalled connection", () => idle.stats().connections === 0, 5000);
      expect(Date.now() - started).toBeGreaterThanOrEqual(400);
      expect(got).toBeLessThan(objects[2]!.data.length);
      socket.destroy();
      await closed;
    } finally {
      await idle.stop();
    }
  });

  it("serves 200 connections at once", async () => {
    const { id, data } = objects[0]!;
    const sockets = await Promise.all(
      Array.from(
        { length: 200 },
        () =>
          new Promise<import("node:net").Socket>((resolve, reject) => {
            const s = connect(server.port, "127.0.0.1", () => resolve(s));
            s.on("error", reject);
          }),
      ),
    );
    await waitFor("200 connections", () => server.stats().connections >= 200);
    const answers = await Promise.all(
      sockets.map(
        (s, k) =>
          new Promise<string>((resolve) => {
            let got = "";
            s.on("data", (d) => (got += d.toString("latin1")));
            s.on("close", () => resolve(got));
            s.write(
              `GET /v1/objects/${id} HTTP/1.1\r\nHost: x\r\nRange: bytes=${k}-${k + 9}\r\nConnection: close\r\n\r\n`,
            );
          }),
      ),
    );
    answers.forEach((a, k) => {
      expect(a).toMatch(/^HTTP\/1.1 206/);
      expect(a.endsWith(Buffer.from(data.subarray(k, k + 10)).toString("latin1"))).toBe(true);
    });
  });

  it("refuses connections over the per-address cap with a 503", async () => {
    const capped = new ObjectServer({ store, bind: "127.0.0.1", port: 0, limits: { maxConnectionsPerAddress: 2 } });
    await capped.start();
    try {
      const open = () =>
        new Promise<import("node:net").Socket>((resolve) => {
          const s = connect(capped.port, "127.0.0.1", () => resolve(s));
        });
      const a = await open();
      const b = await open();
      const c = await open();
      const third = await new Promise<string>((resolve) => {
        let got = "";
        c.on("data", (d) => (got += d.toString()));
        c.on("close", () => resolve(got));
      });
      expect(third).toMatch(/^HTTP\/1.1 503/);
      expect(capped.stats().connectionsRefused).toBe(1);
      a.destroy();
      b.destroy();
    } finally {
      await capped.stop();
    }
  });
});
