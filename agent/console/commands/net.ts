// `net`: interfaces and addresses, default routes, DNS servers, then the broker step by step (lookup, TCP connect,
// TLS handshake) with timings. Each step gives up after NET_TIMEOUT_MS; Ctrl-C ends it.
import type { ConsoleCommand } from "../command-api.js";
import type { ConsoleContext } from "../context.js";
import { fields, millis, time } from "../format.js";
import { showUrl } from "../local-state.js";
import {
  brokerEndpoint,
  checkReachability,
  interfaceLines,
  readDefaultRoutes,
  readDnsServers,
  type Step,
} from "../net-check.js";
import { noArgs, readPem } from "./common.js";
import { errorLine } from "../../util/errors.js";

/** Each step of the broker check. */
const NET_TIMEOUT_MS = 3000;

export function netCommand(ctx: ConsoleContext): ConsoleCommand {
  return {
    name: "net",
    args: "",
    summary: "interfaces, default route, DNS servers, and whether the broker can be reached",
    async run(args, io) {
      noArgs("net", args);
      const routes = await readDefaultRoutes(ctx.hostPaths);
      const dns = await readDnsServers(ctx.hostPaths);
      const routeText = [
        ...(routes.v4 === undefined
          ? ["IPv4: /proc/net/route unreadable"]
          : routes.v4.length === 0
            ? ["IPv4: none (no way out of the local network)"]
            : routes.v4.map((r) => `IPv4 via ${r.gateway} dev ${r.iface}`)),
        ...(routes.v6 === undefined
          ? []
          : routes.v6.length === 0
            ? ["IPv6: none"]
            : routes.v6.map((r) => `IPv6 via ${r.gateway} dev ${r.iface}`)),
      ];
      const rows: [string, string][] = [
        ["interfaces", interfaceLines().join("\n") || "none"],
        ["default route", routeText.join("\n")],
        [
          "DNS servers",
          dns === undefined
            ? "/etc/resolv.conf unreadable"
            : dns.length === 0
              ? "none in /etc/resolv.conf"
              : dns.join(", "),
        ],
      ];
      const url = ctx.config.link.url;
      const endpoint = url !== undefined ? brokerEndpoint(url) : undefined;
      rows.push([
        "broker",
        url === undefined
          ? "not configured (link.url)"
          : `${showUrl(url)}${endpoint ? ` (${endpoint.host} port ${endpoint.port}${endpoint.tls ? ", TLS" : ""})` : ""}`,
      ]);
      if (endpoint?.tls) rows.push(["clock", `${time(ctx.now())} (TLS certificates need the right time)`]);
      io.print(fields(rows));
      if (url === undefined || !endpoint) return;
      let ca: string | undefined;
      try {
        ca = await readPem(ctx.config.link.ca, "the CA file");
      } catch (err) {
        io.print(`  ${errorLine(err)}; checking against the system's CAs\n`);
      }
      const label = (s: Step) => ({ dns: "lookup", tcp: "connect", tls: "tls" })[s.step];
      await checkReachability(url, {
        timeoutMs: NET_TIMEOUT_MS,
        signal: io.signal,
        ...(ca !== undefined ? { ca } : {}),
        onStep: (s) =>
          io.print(
            `  ${label(s).padEnd(8)} ${s.ok ? "ok  " : "FAIL"}  ${s.ms !== undefined ? `${millis(s.ms).padStart(8)}  ` : "          "}${s.detail}\n`,
          ),
      });
    },
  };
}
