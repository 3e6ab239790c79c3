// Compute tasks for the tests, compiled here from AssemblyScript with the project's compiler: the host API's
// declarations (agent/compute/README.md), a compile with a memory maximum, and a CPU-bound task whose length the
// input sets.
import asc from "assemblyscript/asc";

export const HOST = `
@external("sharenode", "input_length") declare function input_length(): i32;
@external("sharenode", "read_input") declare function read_input(ptr: usize, offset: i32, len: i32): i32;
@external("sharenode", "write_output") declare function write_output(ptr: usize, len: i32): void;
`;

/** Compiles an AssemblyScript task (the host API declared) with a memory maximum in pages (null: none). */
export async function compileTask(
  body: string,
  maximumMemory: number | null = 16,
  optimizeLevel = 2,
): Promise<Uint8Array> {
  const r = await asc.compileString(
    { "task.ts": HOST + body },
    { optimizeLevel, runtime: "stub", ...(maximumMemory !== null ? { maximumMemory } : {}) },
  );
  if (r.error || !r.binary) throw new Error(`asc: ${r.error?.message}: ${r.stderr.toString()}`);
  return r.binary;
}

/**
 * A task that spins over a multiply-xor chain for (the input's first 4 bytes, little-endian) x `unit` rounds and
 * outputs the 8-byte state: deterministic, CPU-bound, its length set by the input.
 */
export function spinTask(unit: number): string {
  return `
export function run(): void {
  const buf = new Uint8Array(8);
  read_input(buf.dataStart, 0, 4);
  const rounds = <u64>load<u32>(buf.dataStart) * ${unit};
  let x: u64 = 0x9e3779b97f4a7c15;
  for (let i: u64 = 0; i < rounds; i++) x = (x ^ (x >> 29)) * 0xbf58476d1ce4e5b9 + i;
  store<u64>(buf.dataStart, x);
  write_output(buf.dataStart, 8);
}`;
}

/** The 4-byte little-endian input spinTask reads. */
export function spinInput(units: number): Uint8Array {
  const input = new Uint8Array(4);
  new DataView(input.buffer).setUint32(0, units, true);
  return input;
}
