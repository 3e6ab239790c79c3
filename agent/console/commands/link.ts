// `link`: the MQTT link: the broker (never its credentials), the state and since when, connects and reconnect
// attempts, the last error, traffic, and the outbox (on disk when the daemon is stopped).
import type { ConsoleCommand } from "../command-api.js";
import type { ConsoleContext } from "../context.js";
import { bytes, duration, fields, plural, time } from "../format.js";
import { scanOutbox, showUrl } from "../local-state.js";
import { noArgs, notRunningNote, num, str } from "./common.js";

export function linkCommand(ctx: ConsoleContext): ConsoleCommand {
  return {
    name: "link",
    args: "",
    summary: "MQTT state: broker, connected since, reconnects, last error, outbox",
    async run(args, io) {
      noArgs("link", args);
      const daemon = await ctx.daemon(io.signal);
      const c = ctx.config.link;
      const rows: [string, string][] = [];
      const url = daemon.running ? (str(daemon.status.link?.url) ?? c.url) : c.url;
      const auth =
        c.username !== undefined
          ? `, user ${c.username}${c.password !== undefined ? ", password set" : ""}`
          : c.password !== undefined
            ? ", password set"
            : "";
      const tls = c.cert !== undefined ? ", client certificate" : "";
      rows.push(["broker", `${showUrl(url)} (MQTT ${c.protocolVersion === 4 ? "3.1.1" : "5"}${auth}${tls})`]);
      if (daemon.running) {
        const l = daemon.status.link ?? {};
        const since = num(l.connectedSince);
        rows.push([
          "state",
          l.connected
            ? `connected${since !== undefined ? ` since ${time(since)} (${duration((ctx.now() - since) / 1000)})` : ""}`
            : "not connected",
        ]);
        rows.push(["connects", `${num(l.connects) ?? "?"} (${num(l.reconnects) ?? "?"} reconnect attempts)`]);
        rows.push([
          "last error",
          str(l.lastError) || (l.lastError === undefined ? "not reported by this daemon" : "none"),
        ]);
        rows.push(["traffic", `in ${bytes(num(l.bytesIn))}, out ${bytes(num(l.bytesOut))}`]);
        const o = daemon.status.outbox ?? {};
        rows.push([
          "outbox",
          `${plural(num(o.depth) ?? 0, "message")} waiting (${bytes(num(o.bytes))})${num(o.dropped) ? `, ${o.dropped} telemetry dropped` : ""}`,
        ]);
      } else {
        rows.push(["state", `no connection: ${notRunningNote(daemon)} (try net and selftest)`]);
        const outbox = await scanOutbox(ctx.stateDir);
        rows.push([
          "outbox",
          outbox.ok ? `${plural(outbox.depth, "message")} waiting on disk (${bytes(outbox.bytes)})` : outbox.reason,
        ]);
      }
      io.print(fields(rows));
    },
  };
}
