// `sharenode hash`: b3sum and sha256sum in one command, with their exact output, in bounded memory.
//
// A file is read in 1 MiB pieces into two buffers, with one read always in flight: libuv's thread pool copies
// the next piece out of the page cache while this thread hashes the last one, so reading and hashing overlap
// on two cores instead of taking turns. For BLAKE3 the buffers are regions of the kernel's own memory (the
// read lands where the kernel hashes, no copy); SHA-256 goes to node:crypto, whose OpenSSL has assembly (SHA
// extensions, NEON) on every target and runs 4-6x the WebAssembly kernel on large inputs. Memory stays at two
// buffers whatever the file's size. Measured in test/bench (the CLI against b3sum and sha256sum).
import { createHash, type Hash } from "node:crypto";
import { fstat, read as readFd } from "node:fs";
import { open } from "node:fs/promises";
import type { Readable } from "node:stream";
import { promisify } from "node:util";
import { blake3Kernel } from "../kernels/blake3.js";
import { toHex } from "../util/hex.js";
import { parseCommandArgs, systemErrorText, usageError, writeOutput, type CliIo, type Command } from "./io.js";
import { Progress } from "./progress.js";

export { systemErrorText } from "./io.js";
export { formatProgress, Progress, PROGRESS_THRESHOLD, type ProgressState } from "./progress.js";

export const ALGORITHMS = ["blake3", "sha256"] as const;
export type Algorithm = (typeof ALGORITHMS)[number];

const USAGE = `Usage: sharenode hash [--algo blake3|sha256] [FILE|-]...

Print the checksum of each FILE as '<hex>  <name>' lines, exactly as b3sum and
sha256sum do (a name with a backslash or newline is escaped and its line starts
with '\\'). With no FILE, or when FILE is -, read standard input.

Options:
  -a, --algo ALGO   blake3 (the default) or sha256
  -h, --help        show this help

A missing or unreadable FILE is reported on stderr and the others are still
hashed; the exit status is then 1. When stderr is a terminal, inputs of 64 MiB
or more show a progress line there.
`;

export const hashCommand: Command = {
  summary: "print BLAKE3 or SHA-256 checksums of files (like b3sum, sha256sum)",
  usage: USAGE,
  run: runHash,
};

/**
 * Bytes per read. Larger reads cost fewer system calls but leave the cache before they are hashed; 1 MiB was
 * the fastest of 256 KiB..4 MiB for both algorithms on a 2-core x86 (test/bench/cli-bench.mjs).
 */
export const READ_LEN = 1 << 20;

const fstatAsync = promisify(fstat);
const readAsync = promisify(readFd);

async function runHash(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs(
    "hash",
    args,
    { algo: { type: "string", short: "a", default: "blake3" } },
    true,
  );
  const algo = values.algo as string;
  if (!(ALGORITHMS as readonly string[]).includes(algo)) {
    throw usageError(`hash: unknown algorithm '${algo}' (expected ${ALGORITHMS.join(" or ")})`);
  }
  const names = positionals.length === 0 ? ["-"] : positionals;
  const digester = makeDigester(algo as Algorithm);
  const progress = new Progress(io.stderr);
  let failed = false;
  for (const name of names) {
    let digest: Uint8Array;
    try {
      digest = name === "-" ? await hashStream(io.stdin, digester, progress) : await hashFile(name, digester, progress);
    } catch (err) {
      const reason = systemErrorText(err);
      if (reason === undefined) throw err;
      io.stderr.write(`sharenode: hash: ${escapeName(name, algo as Algorithm).text}: ${reason}\n`);
      failed = true;
      continue;
    } finally {
      progress.end();
    }
    // Throws once stdout has failed (a full disk, a reader gone): nothing more can be printed, so stop hashing.
    await writeOutput(io.stdout, checksumLine(toHex(digest), name, algo as Algorithm));
  }
  return failed ? 1 : 0;
}

// --- the two algorithms behind one small interface ------------------------------------------------------

interface Digester {
  /** Starts a new message. */
  begin(): void;
  /** Where reads land: two buffers, so that one read is in flight while the other's bytes are absorbed. */
  readonly buffers: readonly [Uint8Array, Uint8Array];
  /** Absorbs bytes at the start of one of `buffers`. */
  absorb(bytes: Uint8Array): void;
  /** Absorbs bytes that arrived elsewhere (a stream chunk). */
  update(data: Uint8Array): void;
  digest(): Uint8Array;
}

function makeDigester(algo: Algorithm): Digester {
  if (algo === "blake3") {
    const kernel = blake3Kernel();
    const [a, b] = kernel.readRegions(2, READ_LEN);
    let hasher = kernel.createHasher();
    return {
      begin: () => void (hasher = kernel.createHasher()),
      buffers: [a!, b!],
      absorb: (bytes) => void hasher.updateFromRegion(bytes),
      update: (data) => void hasher.update(data),
      digest: () => hasher.digest(),
    };
  }
  let hash: Hash = createHash("sha256");
  return {
    begin: () => void (hash = createHash("sha256")),
    buffers: [Buffer.allocUnsafe(READ_LEN), Buffer.allocUnsafe(READ_LEN)],
    absorb: (bytes) => void hash.update(bytes),
    update: (data) => void hash.update(data),
    digest: () => hash.digest(),
  };
}

async function hashFile(path: string, digester: Digester, progress: Progress): Promise<Uint8Array> {
  const handle = await open(path, "r");
  try {
    const stats = await handle.stat();
    if (stats.isDirectory()) throw isADirectory();
    // Position null: read at the file's own offset, so FIFOs and character devices work too.
    const read = async (target: Uint8Array) => (await handle.read(target, 0, target.length, null)).bytesRead;
    // FIFOs and devices have no useful size: their progress starts once 64 MiB have gone by.
    return await readAll(read, path, stats.isFile() ? stats.size : undefined, digester, progress);
  } finally {
    await handle.close();
  }
}

async function readAll(
  read: (target: Uint8Array) => Promise<number>,
  name: string,
  size: number | undefined,
  digester: Digester,
  progress: Progress,
): Promise<Uint8Array> {
  digester.begin();
  progress.begin(name, size);
  const { buffers } = digester;
  let next = 0;
  let pending = read(buffers[next]);
  try {
    for (;;) {
      const bytesRead = await pending;
      if (bytesRead === 0) return digester.digest();
      const filled = buffers[next]!;
      next ^= 1;
      // The next read runs on the thread pool while this thread hashes what the last one brought.
      pending = read(buffers[next]!);
      digester.absorb(filled.subarray(0, bytesRead));
      progress.advance(bytesRead);
    }
  } finally {
    // Never leave a read writing into a buffer (or a closed descriptor) behind an error.
    await pending.catch(() => 0);
  }
}

async function hashStream(stream: Readable, digester: Digester, progress: Progress): Promise<Uint8Array> {
  // `sharenode hash < file`: read the file under the stream like any other (fixed buffer, known size).
  // Pipes stay with the stream: Node has made them non-blocking, so a direct read would fail with EAGAIN.
  const fd = (stream as { fd?: unknown }).fd;
  if (typeof fd === "number" && !stream.readableEnded && !stream.destroyed && stream.readableLength === 0) {
    const stats = await fstatAsync(fd);
    // Node hands a directory on fd 0 to us as an empty stream; the tools say "Is a directory".
    if (stats.isDirectory()) throw isADirectory();
    if (stats.isFile()) {
      const read = async (target: Uint8Array) => (await readAsync(fd, target, 0, target.length, null)).bytesRead;
      return readAll(read, "-", stats.size, digester, progress);
    }
  }
  digester.begin();
  // A second `-` finds standard input at its end and hashes nothing, as sha256sum and b3sum do.
  if (!stream.readableEnded && !stream.destroyed) {
    progress.begin("-", undefined);
    // Each chunk is a fresh 64 KiB buffer; V8 collects them once about 64 MB are outstanding, which bounds
    // this path at roughly 90 MB of RSS whatever the input's length.
    for await (const chunk of stream) {
      const bytes: Uint8Array = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
      digester.update(bytes);
      progress.advance(bytes.length);
    }
  }
  return digester.digest();
}

// Reading would fail with EISDIR too, but only after the hasher and the progress line were set up.
function isADirectory(): Error {
  return Object.assign(new Error("EISDIR: illegal operation on a directory, read"), {
    code: "EISDIR",
    syscall: "read",
  });
}

// --- output format --------------------------------------------------------------------------------------

/**
 * A file name as the tools print it. Both escape backslash and newline and then start the line with a
 * backslash; coreutils (>= 9.0) also escapes carriage return, Debian's b3sum (1.2) does not.
 */
export function escapeName(name: string, algo: Algorithm): { text: string; escaped: boolean } {
  const special = algo === "sha256" ? /[\\\n\r]/g : /[\\\n]/g;
  if (!special.test(name)) return { text: name, escaped: false };
  special.lastIndex = 0;
  const text = name.replace(special, (c) => (c === "\\" ? "\\\\" : c === "\n" ? "\\n" : "\\r"));
  return { text, escaped: true };
}

export function checksumLine(hex: string, name: string, algo: Algorithm): string {
  const { text, escaped } = escapeName(name, algo);
  return `${escaped ? "\\" : ""}${hex}  ${text}\n`;
}
