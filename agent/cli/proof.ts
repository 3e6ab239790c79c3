// `sharenode proof`: make and check verified-streaming proofs of a file's chunks, and write its outboard.
// The encodings are documented in wasm/README.md.
import { closeSync, fstatSync, openSync, readFileSync, readSync } from "node:fs";
import type { Readable, Writable } from "node:stream";
import { CHUNK_LEN } from "../kernels/blake3.js";
import { makeProof, OutboardBuilder, OutboardError, parseOutboard, type Outboard } from "../kernels/outboard.js";
import { ProofError, ProofVerifier } from "../kernels/proof.js";
import { chunkCount, proofTarget } from "../kernels/tree.js";
import { fromHex, toHex } from "../util/hex.js";
import {
  CliError,
  endOutput,
  flushOutput,
  outputFailure,
  parseCommandArgs,
  systemErrorText,
  usageError,
  writeOutput,
  type CliIo,
  type Command,
} from "./io.js";
import { errorMessage } from "../util/errors.js";

const USAGE = `Usage: sharenode proof make FILE --chunk N [--count K] [--outboard OUTBOARD]
       sharenode proof check --id HEX --len BYTES --chunk N [--count K] [--output FILE|-] < PROOF
       sharenode proof outboard FILE > OUTBOARD

make      Write to stdout a proof that chunks N..N+K-1 (1 KiB each) belong to FILE,
          checkable by anyone who knows only FILE's BLAKE3 hash (its id) and length.
          With --outboard, read only the challenged 16 KiB groups of FILE; without,
          read FILE once to build its tree.
check     Read a proof on stdin and verify it against the object's id and length.
          Exit 0 when valid, 1 when not, 2 on bad usage. With --output, write the
          verified chunk bytes there as each one checks out.
outboard  Write FILE's outboard (its tree above 16 KiB groups) to stdout.

Options:
  --chunk N          first chunk index (0-based)
  --count K          number of chunks (default 1)
  --id HEX           the object's BLAKE3 hash, 64 hex digits
  --len BYTES        the object's length in bytes
  --outboard FILE    FILE's outboard, from 'sharenode proof outboard'
  --output FILE|-    where 'check' writes the verified bytes
  -h, --help         show this help
`;

export const proofCommand: Command = {
  summary: "make and check proofs that chunks belong to an object (verified streaming)",
  usage: USAGE,
  run: runProof,
};

async function runProof(args: string[], io: CliIo): Promise<number> {
  const [action, ...rest] = args;
  switch (action) {
    case "make":
      return proofMake(rest, io);
    case "check":
      return proofCheck(rest, io);
    case "outboard":
      return proofOutboard(rest, io);
    case undefined:
      throw usageError("proof: missing action: make, check or outboard (see 'sharenode proof --help')");
    default:
      throw usageError(`proof: unknown action '${action}' (expected make, check or outboard)`);
  }
}

/** A decimal integer option; one-line usage error otherwise. */
function integerOption(command: string, name: string, value: string | undefined, fallback?: number): number {
  if (value === undefined) {
    if (fallback === undefined) throw usageError(`${command}: missing --${name}`);
    return fallback;
  }
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
    throw usageError(`${command}: --${name} must be a non-negative integer, got '${value}'`);
  }
  return Number(value);
}

/** Opens a regular file for reading, or fails with the coreutils-style reason. */
function openRegular(command: string, name: string): { fd: number; size: number } {
  let fd: number;
  try {
    fd = openSync(name, "r");
  } catch (err) {
    throw new CliError(`${command}: ${name}: ${describe(err)}`);
  }
  const stat = fstatSync(fd);
  if (stat.isDirectory()) {
    closeSync(fd);
    throw new CliError(`${command}: ${name}: Is a directory`);
  }
  return { fd, size: stat.size };
}

/** The coreutils wording for a system error, or its own message. */
function describe(err: unknown): string {
  return systemErrorText(err) ?? errorMessage(err);
}

function readExactly(fd: number, offset: number, length: number): Uint8Array {
  const buf = new Uint8Array(length);
  let got = 0;
  while (got < length) {
    const n = readSync(fd, buf, got, length - got, offset + got);
    if (n === 0) break;
    got += n;
  }
  return got === length ? buf : buf.subarray(0, got);
}

/** Streams a file through an OutboardBuilder: one pass, memory bounded by a read buffer plus the outboard. */
function buildOutboard(fd: number): { id: Uint8Array; length: number; outboard: Uint8Array } {
  const builder = new OutboardBuilder();
  const buf = new Uint8Array(256 * CHUNK_LEN);
  for (let offset = 0; ;) {
    const n = readSync(fd, buf, 0, buf.length, offset);
    if (n === 0) break;
    builder.update(buf.subarray(0, n));
    offset += n;
  }
  return builder.finish();
}

function refuseTerminal(command: string, out: Writable): void {
  if ((out as { isTTY?: boolean }).isTTY)
    throw usageError(`${command}: refusing to write binary data to a terminal; redirect stdout to a file`);
}

async function proofMake(args: string[], io: CliIo): Promise<number> {
  const cmd = "proof make";
  const { values, positionals } = parseCommandArgs(
    cmd,
    args,
    {
      chunk: { type: "string" },
      count: { type: "string" },
      outboard: { type: "string" },
    },
    true,
  );
  if (positionals.length !== 1) throw usageError(`${cmd}: expected exactly one FILE, got ${positionals.length}`);
  const name = positionals[0]!;
  const start = integerOption(cmd, "chunk", values.chunk);
  const count = integerOption(cmd, "count", values.count, 1);
  if (count === 0) throw usageError(`${cmd}: --count must be at least 1`);
  refuseTerminal(cmd, io.stdout);
  const { fd, size } = openRegular(cmd, name);
  try {
    checkRange(cmd, size, start, count);
    let outboard: Outboard;
    if (values.outboard !== undefined) {
      outboard = loadOutboard(cmd, values.outboard);
      if (outboard.length !== size) {
        throw new CliError(
          `${cmd}: ${values.outboard} is the outboard of an object of ${outboard.length} bytes, but ${name} has ${size}`,
        );
      }
    } else {
      outboard = parseOutboard(buildOutboard(fd).outboard);
    }
    const proof = makeProof(outboard, (offset, length) => readExactly(fd, offset, length), start, count);
    await writeOutput(io.stdout, proof);
    if ((io.stderr as { isTTY?: boolean }).isTTY) {
      io.stderr.write(
        `check with: sharenode proof check --id ${toHex(outboard.id)} --len ${size} --chunk ${start}${count > 1 ? ` --count ${count}` : ""}\n`,
      );
    }
    return 0;
  } catch (err) {
    if (err instanceof OutboardError) throw new CliError(`${cmd}: ${err.message}`);
    throw err;
  } finally {
    closeSync(fd);
  }
}

function checkRange(cmd: string, length: number, start: number, count: number): void {
  try {
    proofTarget(length, start, count);
  } catch (err) {
    if (err instanceof RangeError) throw usageError(`${cmd}: ${err.message}`);
    throw err;
  }
}

function loadOutboard(cmd: string, name: string): Outboard {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(name);
  } catch (err) {
    throw new CliError(`${cmd}: ${name}: ${describe(err)}`);
  }
  try {
    return parseOutboard(bytes);
  } catch (err) {
    if (err instanceof OutboardError) throw new CliError(`${cmd}: ${name}: ${err.message}`);
    throw err;
  }
}

async function proofOutboard(args: string[], io: CliIo): Promise<number> {
  const cmd = "proof outboard";
  const { positionals } = parseCommandArgs(cmd, args, {}, true);
  if (positionals.length !== 1) throw usageError(`${cmd}: expected exactly one FILE, got ${positionals.length}`);
  refuseTerminal(cmd, io.stdout);
  const { fd } = openRegular(cmd, positionals[0]!);
  try {
    await writeOutput(io.stdout, buildOutboard(fd).outboard);
    return 0;
  } finally {
    closeSync(fd);
  }
}

async function proofCheck(args: string[], io: CliIo): Promise<number> {
  const cmd = "proof check";
  const { values, positionals } = parseCommandArgs(
    cmd,
    args,
    {
      id: { type: "string" },
      len: { type: "string" },
      chunk: { type: "string" },
      count: { type: "string" },
      output: { type: "string" },
    },
    true,
  );
  if (positionals.length > 0)
    throw usageError(`${cmd}: unexpected argument '${positionals[0]}' (the proof is read from stdin)`);
  if (values.id === undefined) throw usageError(`${cmd}: missing --id`);
  let id: Uint8Array;
  try {
    id = fromHex(values.id, 32, "--id");
  } catch (err) {
    throw usageError(`${cmd}: ${errorMessage(err)}`);
  }
  const length = integerOption(cmd, "len", values.len);
  const start = integerOption(cmd, "chunk", values.chunk);
  const count = integerOption(cmd, "count", values.count, 1);
  if (count === 0) throw usageError(`${cmd}: --count must be at least 1`);
  checkRange(cmd, length, start, count);
  if ((io.stdin as { isTTY?: boolean }).isTTY)
    throw usageError(`${cmd}: the proof is read from stdin; redirect it from a file or a pipe`);
  const output = await openOutput(cmd, values.output, io.stdout);
  // A file named by --output is ours to end and to blame by name; stdout's failures are runCli's to report.
  const file = output !== undefined && output !== io.stdout ? output : undefined;
  const fileError = (err: unknown) =>
    file && err === outputFailure(file) ? new CliError(`${cmd}: ${values.output}: ${describe(err)}`) : err;
  const verifier = new ProofVerifier(id, length, start, count);
  let invalid: string | undefined;
  try {
    for await (const piece of io.stdin as Readable & AsyncIterable<Buffer>) {
      for (const chunk of verifier.push(piece)) if (output) await writeOutput(output, chunk);
    }
    verifier.finish();
  } catch (err) {
    if (!(err instanceof ProofError)) {
      file?.destroy();
      throw fileError(err);
    }
    invalid = err.message;
  }
  if (file) {
    try {
      await endOutput(file);
    } catch (err) {
      // An invalid proof is the verdict that matters; the file holds only the chunks verified before it.
      if (invalid === undefined) throw fileError(err);
    }
  }
  if (invalid !== undefined) {
    io.stderr.write(`sharenode: ${cmd}: invalid proof: ${invalid}\n`);
    return 1;
  }
  // The verdict goes to stdout unless stdout carries the verified bytes; not a word of it unless they are all
  // written.
  const verdict = `valid: chunk${count > 1 ? `s ${start}..${start + count - 1}` : ` ${start}`} of ${chunkCount(length)} of ${toHex(id)}\n`;
  if (output === io.stdout) {
    await flushOutput(io.stdout);
    io.stderr.write(verdict);
  } else {
    await writeOutput(io.stdout, verdict);
  }
  return 0;
}

async function openOutput(cmd: string, name: string | undefined, stdout: Writable): Promise<Writable | undefined> {
  if (name === undefined) return undefined;
  if (name === "-") return stdout;
  const { createWriteStream } = await import("node:fs");
  const stream = createWriteStream(name);
  await new Promise<void>((resolve, reject) => {
    stream.once("open", () => resolve());
    stream.once("error", (err) => reject(new CliError(`${cmd}: ${name}: ${describe(err)}`)));
  });
  return stream;
}
