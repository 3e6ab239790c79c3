// `sharenode client ...`: the downloader's side. For now one action: the client key that signs receipts.
import { defaultClientKeyDir, loadOrCreateClientKey } from "../client/key.js";
import { errorMessage } from "../util/errors.js";
import { CliError, parseCommandArgs, usageError, type CliIo, type Command } from "./io.js";

const USAGE = `Usage: sharenode client keygen [--key-dir DIR]

keygen   create (first time) the client's Ed25519 key in DIR and print its public key (64 hex digits): the
         fleet puts it in the orders it signs for this client ('sharenode fleet order --client-key HEX'), and
         'sharenode get' signs its receipts with the key. The private key (DIR/device-key.pem, mode 0600) is
         never printed.

Options:
  --key-dir DIR   where the client key lives (default ~/.config/sharenode-client)
  -h, --help      show this help
`;

export const clientCommand: Command = {
  summary: "the downloader's key (signs the receipts 'sharenode get' gives the boxes)",
  usage: USAGE,
  run: runClient,
};

async function runClient(args: string[], io: CliIo): Promise<number> {
  const [action, ...rest] = args;
  switch (action) {
    case "keygen": {
      const { values } = parseCommandArgs("client keygen", rest, { "key-dir": { type: "string" } }, false);
      const key = await loadOrCreateClientKey(values["key-dir"] ?? defaultClientKeyDir()).catch((err: unknown) => {
        throw new CliError(`client keygen: ${errorMessage(err)}`);
      });
      io.stdout.write(`${key.publicKeyHex}\n`);
      return 0;
    }
    case undefined:
      throw usageError("client: missing action: keygen (see 'sharenode client --help')");
    default:
      throw usageError(`client: unknown action '${action}' (expected keygen)`);
  }
}
