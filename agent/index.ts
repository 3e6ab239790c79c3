// sharenode's public library API: what fleet services and tools import. The device agent and its CLI use the
// same modules; nothing here does I/O.
export {
  blake3,
  blake3Keyed,
  blake3DeriveKey,
  createBlake3,
  createBlake3Keyed,
  createBlake3DeriveKey,
  blake3Kernel,
  simdSupported,
  Blake3Hasher,
  Blake3OutputReader,
  Blake3Kernel,
  BLAKE3_OUT_LEN,
  BLAKE3_KEY_LEN,
  CHUNK_LEN,
  type Blake3Build,
} from "./kernels/blake3.js";
export { sha256, sha256Into, createSha256, Sha256Hasher } from "./kernels/sha256.js";
export { toHex, fromHex } from "./util/hex.js";
export { makeProofFromData, verifyProof, ProofVerifier, ProofError } from "./kernels/proof.js";
export {
  OutboardBuilder,
  createOutboard,
  parseOutboard,
  outboardLength,
  makeProof,
  makeProofAsync,
  groupsToRead,
  OutboardError,
  DEFAULT_GROUP_LOG,
  type Outboard,
  type GroupRead,
} from "./kernels/outboard.js";
export { chunkCount, proofLength } from "./kernels/tree.js";
export {
  parseChallenge,
  challengeIndices,
  verifyStorageResponse,
  storageProofMessage,
  ChallengeError,
  MAX_CHALLENGE_COUNT,
  type StorageChallenge,
  type StorageProofResponse,
  type StorageProofExpectation,
  type StorageProofVerdict,
} from "./protocol/storage-proof.js";
export {
  signOrder,
  openOrder,
  readOrder,
  orderStatus,
  MAX_ORDER_TOKEN,
  type Order,
  type OrderInput,
  type OrderRefusal,
  type OpenedOrder,
} from "./protocol/order.js";
export {
  signReceipt,
  openReceipt,
  verifyServed,
  type Receipt,
  type ReceiptInput,
  type ServedCheck,
} from "./protocol/receipt.js";
// The `status` command's result (types only: nothing is added to the bundle).
export type { DaemonStatus, ReportedStatus, Reported } from "./protocol/daemon-status.js";
export { deviceIdOf, publicKeyFromHex, verifySignature } from "./identity/device-key.js";
