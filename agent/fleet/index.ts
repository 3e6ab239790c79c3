// `sharenode/fleet`: what fleet services import: topics, decoding with de-duplication and gap detection, signed
// commands and verified replies, storage-proof verification, settlement, the compute quorum, and an MQTT connection. None of the device's
// internals: the same protocol types and kernels the device uses.
export {
  DeviceTable,
  SequenceTracker,
  parseState,
  parseTelemetry,
  parseEvent,
  type DeviceRow,
  type SequenceVerdict,
} from "./consumer.js";
export { topicsFor, parseTopic, fleetFilter, sharedFilter, isDeviceId } from "../protocol/topics.js";
export { signCommand, openReply, loadOrCreateFleetKey, type FleetKey, type Reply } from "../protocol/envelope.js";
export { verifyStorageResponse, challengeIndices, type StorageProofResponse } from "../protocol/storage-proof.js";
export { deviceIdOf, publicKeyFromHex, verifySignature } from "../identity/device-key.js";
export { FleetConnection, type FleetConnectionOptions, type FleetMessage } from "../link/fleet-connection.js";
export {
  settle,
  signSettlement,
  openSettlement,
  settlementHash,
  type PriceTable,
  type SettlementInputs,
  type SettlementBody,
  type SettlementLine,
  type Rejection,
} from "../ledger/settle.js";
export { openStatement, statementHash, type StatementBody } from "../ledger/statement.js";
export { ComputeQuorum, type QuorumOutcome, type Replica } from "./quorum.js";
export {
  openComputeResult,
  computeResultDevice,
  type ComputeResult,
  type ComputeVerdict,
} from "../protocol/compute-result.js";
export { verifyMerklePath } from "../ledger/merkle.js";
export { verifyLedger } from "../ledger/verify.js";
