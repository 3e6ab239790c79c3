// `version`: sharenode, node and V8, the CPU architecture and the kernel.
import { arch, release, type as osType } from "node:os";
import { version } from "../../../package.json";
import type { ConsoleCommand } from "../command-api.js";
import { fields } from "../format.js";
import { noArgs } from "./common.js";

export function versionCommand(): ConsoleCommand {
  return {
    name: "version",
    args: "",
    summary: "sharenode, node, CPU architecture and kernel versions",
    async run(args, io) {
      noArgs("version", args);
      io.print(
        fields([
          ["sharenode", version],
          ["node", `${process.version} (V8 ${process.versions.v8})`],
          ["arch", arch()],
          ["kernel", `${osType()} ${release()}`],
        ]),
      );
    },
  };
}
