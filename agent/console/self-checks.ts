// `selftest`: does this box compute, store and talk correctly? Known-answer tests of the hash kernels (every build
// the runtime accepts, and SIMD against scalar), a write/fsync/read-back of the data disk, and a broker round trip
// with the device's own credentials. Every check ends in PASS or FAIL with a reason, or N/A where it cannot apply
// (SIMD against scalar on a CPU without SIMD): not applicable is neither passed nor failed. None throws.
import { randomBytes } from "node:crypto";
import { open, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { blake3Kernel, simdSupported, type Blake3Build } from "../kernels/blake3.js";
import { createSha256, sha256 } from "../kernels/sha256.js";
import { probeBroker, type ProbeOptions } from "../link/probe.js";
import { toHex } from "../util/hex.js";
import { millis, rate } from "./format.js";
import { errnoCode, errorLine } from "../util/errors.js";

/** pass, fail, or n/a: the check does not apply to this box (it is not counted as passed). */
export type CheckOutcome = "pass" | "fail" | "n/a";

export interface CheckResult {
  name: string;
  outcome: CheckOutcome;
  detail: string;
}

/** The official BLAKE3 vectors' inputs are bytes 0, 1, ..., 250, 0, 1, ... (test_vectors.json). */
function vectorInput(length: number): Uint8Array {
  const input = new Uint8Array(length);
  for (let i = 0; i < length; i++) input[i] = i % 251;
  return input;
}

// From BLAKE3-team/BLAKE3 test_vectors/test_vectors.json (the first 32 bytes of "hash"): lengths that cross the
// block (64), chunk (1024) and SIMD batch boundaries.
const BLAKE3_VECTORS: readonly [number, string][] = [
  [0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"],
  [1, "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"],
  [1023, "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11"],
  [1024, "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"],
  [1025, "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444"],
  [8192, "aae792484c8efe4f19e2ca7d371d8c467ffb10748d8a5a1ae579948f718a2a63"],
  [31744, "62b6960e1a44bcc1eb1a611a8d6235b6b4b78f32e7abc4fb4c6cdcce94895c47"],
  [102400, "bc3e3d41a1146b069abffad3c0d44860cf664390afce4d9661f7902e7943e085"],
];

// FIPS 180-2 appendix B.
const SHA256_VECTORS: readonly [string, string][] = [
  ["", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],
  ["abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"],
  [
    "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
  ],
];
const SHA256_MILLION_A = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";

const THROUGHPUT_BYTES = 4 * 1024 * 1024;

function check(name: string, fn: () => string): CheckResult {
  try {
    return { name, outcome: "pass", detail: fn() };
  } catch (err) {
    return { name, outcome: "fail", detail: errorLine(err) };
  }
}

/**
 * Known answers for every BLAKE3 build this runtime accepts, SIMD against scalar, and SHA-256. `simd` says whether
 * the runtime runs WebAssembly SIMD (a test passes false to see what a CPU without it reports).
 */
export function kernelChecks(simd = simdSupported()): CheckResult[] {
  const results: CheckResult[] = [];
  const builds: Blake3Build[] = simd ? ["simd", "scalar"] : ["scalar"];
  const sample = randomBytes(THROUGHPUT_BYTES);
  const digests = new Map<Blake3Build, string>();
  for (const build of builds) {
    results.push(
      check(`blake3 ${build}`, () => {
        const kernel = blake3Kernel(build);
        for (const [length, expected] of BLAKE3_VECTORS) {
          const got = toHex(kernel.hash(vectorInput(length)));
          if (got !== expected)
            throw new Error(
              `wrong hash of the ${length}-byte vector: ${got.slice(0, 16)}..., expected ${expected.slice(0, 16)}...`,
            );
        }
        const started = performance.now();
        digests.set(build, toHex(kernel.hash(sample)));
        return `${BLAKE3_VECTORS.length} official vectors; ${rate(THROUGHPUT_BYTES, performance.now() - started)}`;
      }),
    );
  }
  if (builds.length === 1) {
    results.push({
      name: "blake3 simd",
      outcome: "n/a",
      detail: "not available on this CPU/runtime (scalar kernel in use)",
    });
  } else {
    results.push(
      check("blake3 simd = scalar", () => {
        const simd = digests.get("simd");
        const scalar = digests.get("scalar");
        if (simd === undefined || scalar === undefined) throw new Error("a kernel failed above");
        if (simd !== scalar)
          throw new Error(
            `the builds disagree on 4 MiB of random data: ${simd.slice(0, 16)}... vs ${scalar.slice(0, 16)}...`,
          );
        return "same hash of 4 MiB of random data";
      }),
    );
  }
  results.push(
    check("sha256", () => {
      for (const [text, expected] of SHA256_VECTORS) {
        const got = toHex(sha256(new TextEncoder().encode(text)));
        if (got !== expected)
          throw new Error(`wrong hash of ${JSON.stringify(text.slice(0, 8))}...: ${got.slice(0, 16)}...`);
      }
      const hasher = createSha256();
      const block = new Uint8Array(1000).fill(0x61);
      for (let i = 0; i < 1000; i++) hasher.update(block);
      const million = toHex(hasher.digest());
      if (million !== SHA256_MILLION_A) throw new Error(`wrong hash of a million "a": ${million.slice(0, 16)}...`);
      const started = performance.now();
      sha256(sample);
      return `${SHA256_VECTORS.length + 1} FIPS 180-2 vectors; ${rate(THROUGHPUT_BYTES, performance.now() - started)}`;
    }),
  );
  return results;
}

/**
 * Writes `size` random bytes to a temp file in the data directory, fsyncs, reads them back, compares, removes the
 * file. The read usually comes from the page cache: its rate says little about the disk.
 */
/** The data disk check's name in the selftest's list. */
export const DISK_CHECK = "data disk write/read";

export async function diskCheck(dataDir: string | undefined, size = 8 * 1024 * 1024): Promise<CheckResult> {
  const name = DISK_CHECK;
  if (dataDir === undefined) return { name, outcome: "fail", detail: "no data directory configured (store.dataDir)" };
  try {
    const st = await stat(dataDir);
    if (!st.isDirectory()) return { name, outcome: "fail", detail: `${dataDir} is not a directory` };
  } catch (err) {
    return { name, outcome: "fail", detail: `${dataDir}: ${errnoCode(err) ?? errorLine(err)}` };
  }
  const file = join(dataDir, `.sharenode-selftest-${randomBytes(4).toString("hex")}.tmp`);
  const block = 1024 * 1024;
  const data = randomBytes(size);
  try {
    const writeStarted = performance.now();
    const w = await open(file, "wx", 0o600);
    try {
      for (let off = 0; off < size; off += block) {
        const piece = data.subarray(off, Math.min(size, off + block));
        let done = 0;
        while (done < piece.length) done += (await w.write(piece, done, piece.length - done, off + done)).bytesWritten;
      }
      await w.sync();
    } finally {
      await w.close();
    }
    const writeMs = performance.now() - writeStarted;
    const readStarted = performance.now();
    const back = Buffer.alloc(size);
    const r = await open(file, "r");
    try {
      let got = 0;
      while (got < size) {
        const { bytesRead } = await r.read(back, got, size - got, got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      if (got !== size) return { name, outcome: "fail", detail: `read back ${got} of ${size} bytes` };
    } finally {
      await r.close();
    }
    const readMs = performance.now() - readStarted;
    if (!back.equals(data)) {
      let at = 0;
      while (at < size && back[at] === data[at]) at++;
      return {
        name,
        outcome: "fail",
        detail: `the bytes read back differ from those written (first at offset ${at}): a failing disk or cable?`,
      };
    }
    return {
      name,
      outcome: "pass",
      detail: `${size / (1024 * 1024)} MiB: write+fsync ${rate(size, writeMs)}, read ${rate(size, readMs)} (likely cached)`,
    };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const hint =
      e.code === "EROFS"
        ? " (read-only filesystem: see dmesg)"
        : e.code === "ENOSPC"
          ? " (disk full)"
          : e.code === "EACCES"
            ? " (permission denied)"
            : "";
    return { name, outcome: "fail", detail: `${e.code ?? errorLine(err)}${hint}: ${errorLine(err)}` };
  } finally {
    await rm(file, { force: true }).catch(() => {});
  }
}

/** MQTT connect and subscribe to the device's command topic under a client id of its own. */
export async function brokerCheck(options: ProbeOptions | { error: string }): Promise<CheckResult> {
  const name = "broker round trip";
  if ("error" in options) return { name, outcome: "fail", detail: options.error };
  const result = await probeBroker(options);
  if (result.ok)
    return {
      name,
      outcome: "pass",
      detail: `CONNACK ${millis(result.connackMs)}, SUBACK ${millis(result.subackMs)} (${result.topic}, client ${result.clientId})`,
    };
  const after = result.connackMs !== undefined ? ` (CONNACK after ${millis(result.connackMs)})` : "";
  return { name, outcome: "fail", detail: `${result.stage}: ${result.error}${after}` };
}
