// blake3-range: a compute task (agent/compute/README.md, "Examples") that checks content against the BLAKE3 hash
// the network expects of it, with the project's own kernel (../assembly/blake3.ts, the one the agent hashes
// with), so the bench compares the same code inside and outside the sandbox.
//
// Input:  the expected hash (32 bytes), then the content (any length, read 256 KiB at a time).
// Output: 33 bytes: 1 if the content's hash is the expected one, else 0; then the content's hash (as b3sum's).
// Aborts with code 1 when the input is shorter than 32 bytes.
import { finalize, init, inputLen, inputPtr, outPtr, output, statePtr, update } from "../assembly/blake3";
import { IV0, IV1, IV2, IV3, IV4, IV5, IV6, IV7 } from "../assembly/blake3-constants";

@external("sharenode", "input_length") declare function input_length(): i32;
@external("sharenode", "read_input") declare function read_input(ptr: usize, offset: i32, len: i32): i32;
@external("sharenode", "write_output") declare function write_output(ptr: usize, len: i32): void;
@external("sharenode", "abort") declare function task_abort(code: i32): void;

const EXPECTED = memory.data(32, 16);
const RESULT = memory.data(33, 16);

export function run(): void {
  const total = input_length();
  if (total < 32) {
    task_abort(1);
    return;
  }
  read_input(EXPECTED, 0, 32);
  // The plain hash: the key words are the IV (the wrapper in agent/kernels writes them the same way).
  const key = statePtr();
  store<u32>(key, IV0, 0);
  store<u32>(key, IV1, 4);
  store<u32>(key, IV2, 8);
  store<u32>(key, IV3, 12);
  store<u32>(key, IV4, 16);
  store<u32>(key, IV5, 20);
  store<u32>(key, IV6, 24);
  store<u32>(key, IV7, 28);
  init(0);
  // The content goes through the kernel's own input region, as the wrapper's feed() does outside the sandbox.
  const buf = inputPtr();
  const room = inputLen();
  let at = 32;
  while (at < total) {
    const n = read_input(buf, at, min(room, total - at));
    if (n <= 0) break;
    at += n;
    update(buf, n, at < total);
  }
  finalize();
  output(1, 0);
  const hash = outPtr();
  store<u8>(RESULT, memory.compare(hash, EXPECTED, 32) == 0 ? 1 : 0);
  memory.copy(RESULT + 1, hash, 32);
  write_output(RESULT, 33);
}
