// The client's Ed25519 key: it signs the receipts a downloader gives the boxes it downloads from
// (agent/protocol/receipt.ts). The key file is agent/identity's, handled exactly as the fleet key is
// (loadOrCreateFleetKey): `<dir>/device-key.pem`, PKCS#8 PEM, mode 0600, created atomically with link(2), refused
// when group or others may read it; the private half lives only behind sign() and is never printed.
import { homedir } from "node:os";
import { join } from "node:path";
import { loadOrCreateSigningKey } from "../identity/device-key.js";

export interface ClientKey {
  /** The raw 32-byte public key (a copy on every read): what orders name as `clientKey`. */
  readonly publicKey: Uint8Array;
  /** The same, 64 lowercase hex digits: what `sharenode fleet order --client-key` takes. */
  readonly publicKeyHex: string;
  sign(message: Uint8Array): Uint8Array;
}

export class ClientKeyError extends Error {
  override name = "ClientKeyError";
}

/** Where the client key lives unless told otherwise: beside the fleet's (~/.config/sharenode-fleet). */
export function defaultClientKeyDir(): string {
  return join(homedir(), ".config", "sharenode-client");
}

/** Loads the client key from `<dir>/device-key.pem`, creating it (and dir, 0700) on first use. */
export async function loadOrCreateClientKey(dir: string): Promise<ClientKey> {
  return loadOrCreateSigningKey(dir, "ClientKey", (message, cause) => new ClientKeyError(message, { cause }));
}
