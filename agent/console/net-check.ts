// `net`: what a person with a serial cable needs when the box is "offline": its addresses, its default route, its
// DNS servers, and whether the broker can be reached, step by step (name lookup, TCP, TLS), each with a timing
// and a short timeout, so a dead network gives clear lines within seconds instead of a hang.
import { lookup } from "node:dns/promises";
import { readFile } from "node:fs/promises";
import { isIP, Socket } from "node:net";
import { networkInterfaces } from "node:os";
import { connect as tlsConnect } from "node:tls";
import type { HostPaths } from "../../board/host-paths.js";
import { millis } from "./format.js";
import { errorLine } from "../util/errors.js";

export interface Route {
  iface: string;
  gateway: string;
}

/** IPv4 default routes from /proc/net/route and IPv6 ones from /proc/net/ipv6_route; undefined when unreadable. */
export async function readDefaultRoutes(paths: HostPaths): Promise<{ v4?: Route[]; v6?: Route[] }> {
  const out: { v4?: Route[]; v6?: Route[] } = {};
  const v4 = await readFile(paths.proc("net", "route"), "utf8").catch(() => undefined);
  if (v4 !== undefined) {
    out.v4 = [];
    for (const line of v4.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 8) continue;
      const [iface, dest, gw, flags, , , , mask] = f;
      // RTF_UP (0x1); the default route has destination and mask 0.
      if (dest !== "00000000" || mask !== "00000000" || (parseInt(flags!, 16) & 1) === 0) continue;
      out.v4.push({ iface: iface!, gateway: hexToIpv4(gw!) });
    }
  }
  const v6 = await readFile(paths.proc("net", "ipv6_route"), "utf8").catch(() => undefined);
  if (v6 !== undefined) {
    out.v6 = [];
    for (const line of v6.split("\n")) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const [dest, prefix, , , nextHop, , , , flags, iface] = f;
      // The kernel keeps an "unreachable" default on lo; RTF_UP (0x1) and a real interface make a route.
      if (!/^0{32}$/.test(dest!) || prefix !== "00" || iface === "lo" || (parseInt(flags!, 16) & 1) === 0) continue;
      out.v6.push({ iface: iface!, gateway: /^0{32}$/.test(nextHop!) ? "(on link)" : hexToIpv6(nextHop!) });
    }
  }
  return out;
}

function hexToIpv4(hex: string): string {
  // /proc/net/route prints the address as the host's (little-endian) u32.
  const n = parseInt(hex, 16);
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff].join(".");
}

function hexToIpv6(hex: string): string {
  const groups = hex.match(/.{4}/g)!.map((g) => parseInt(g, 16).toString(16));
  // RFC 5952: the longest run of two or more zero groups becomes "::".
  let best = { at: -1, len: 1 };
  for (let i = 0; i < groups.length;) {
    let j = i;
    while (j < groups.length && groups[j] === "0") j++;
    if (j - i > best.len) best = { at: i, len: j - i };
    i = j === i ? i + 1 : j;
  }
  if (best.at < 0) return groups.join(":");
  return `${groups.slice(0, best.at).join(":")}::${groups.slice(best.at + best.len).join(":")}`;
}

/** The nameserver lines of /etc/resolv.conf; undefined when it cannot be read. */
export async function readDnsServers(paths: HostPaths): Promise<string[] | undefined> {
  const text = await readFile(paths.etc("resolv.conf"), "utf8").catch(() => undefined);
  if (text === undefined) return undefined;
  return text
    .split("\n")
    .map((l) => /^\s*nameserver\s+(\S+)/.exec(l)?.[1])
    .filter((s): s is string => s !== undefined);
}

/** The host's interfaces and addresses (internal ones included: lo tells that the stack is alive). */
export function interfaceLines(): string[] {
  const lines: string[] = [];
  for (const [name, addrs] of Object.entries(networkInterfaces())) {
    const list = (addrs ?? []).map((a) => `${a.address}/${a.netmask ? prefixOf(a.netmask) : "?"}`);
    const mac = addrs?.find((a) => a.mac && a.mac !== "00:00:00:00:00:00")?.mac;
    lines.push(`${name}: ${list.length > 0 ? list.join(", ") : "no address"}${mac ? ` (${mac})` : ""}`);
  }
  return lines;
}

function prefixOf(netmask: string): number {
  if (netmask.includes(":")) {
    return netmask.split(":").reduce((n, g) => n + (g === "" ? 0 : countBits(parseInt(g, 16))), 0);
  }
  return netmask.split(".").reduce((n, o) => n + countBits(Number(o)), 0);
}

function countBits(v: number): number {
  let c = 0;
  for (let x = v; x > 0; x >>>= 1) c += x & 1;
  return c;
}

// --- reachability ---------------------------------------------------------------------------------------------

export interface Step {
  step: "dns" | "tcp" | "tls";
  ok: boolean;
  ms?: number;
  detail: string;
}

export interface ReachOptions {
  /** Each step gives up after this (default 3000 ms). */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** PEM of the CA the broker's certificate must chain to (link.ca); else the system's. */
  ca?: string;
  /** Told about each step as it ends, so the person sees progress on a slow network. */
  onStep?: (step: Step) => void;
}

const DEFAULT_PORTS: Record<string, number> = { "mqtt:": 1883, "mqtts:": 8883, "ws:": 80, "wss:": 443 };

/** Host and port of a broker URL, and whether it speaks TLS. */
export function brokerEndpoint(url: string): { host: string; port: number; tls: boolean } | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return undefined;
  }
  const port = u.port !== "" ? Number(u.port) : DEFAULT_PORTS[u.protocol];
  if (port === undefined || u.hostname === "") return undefined;
  const host = u.hostname.startsWith("[") ? u.hostname.slice(1, -1) : u.hostname;
  return { host, port, tls: u.protocol === "mqtts:" || u.protocol === "wss:" };
}

/** Looks the broker up, connects with TCP, and (mqtts, wss) shakes hands with TLS. Never throws. */
export async function checkReachability(url: string, options: ReachOptions = {}): Promise<Step[]> {
  const steps: Step[] = [];
  const add = (s: Step) => {
    steps.push(s);
    options.onStep?.(s);
    return s;
  };
  const endpoint = brokerEndpoint(url);
  if (!endpoint) {
    add({ step: "dns", ok: false, detail: "the broker URL has no host or port" });
    return steps;
  }
  const timeoutMs = options.timeoutMs ?? 3000;
  let address = endpoint.host;
  if (isIP(endpoint.host) === 0) {
    const started = performance.now();
    const result = await bounded(lookup(endpoint.host, { all: true }), timeoutMs, options.signal);
    const ms = performance.now() - started;
    if (!result.ok) {
      add({ step: "dns", ok: false, ms, detail: `${endpoint.host}: ${result.error}` });
      return steps;
    }
    const addrs = result.value.map((a) => a.address);
    if (addrs.length === 0) {
      add({ step: "dns", ok: false, ms, detail: `${endpoint.host}: no address` });
      return steps;
    }
    address = addrs[0]!;
    add({ step: "dns", ok: true, ms, detail: `${endpoint.host} is ${addrs.join(", ")}` });
  } else {
    add({ step: "dns", ok: true, detail: `${endpoint.host} is an address: no lookup` });
  }

  const started = performance.now();
  const tcp = await connectTcp(address, endpoint.port, timeoutMs, options.signal);
  const tcpMs = performance.now() - started;
  const where = `${isIP(address) === 6 ? `[${address}]` : address}:${endpoint.port}`;
  if (!tcp.ok) {
    add({ step: "tcp", ok: false, ms: tcpMs, detail: `${where}: ${tcp.error}` });
    return steps;
  }
  add({ step: "tcp", ok: true, ms: tcpMs, detail: `connected to ${where}` });
  if (!endpoint.tls) {
    tcp.socket.destroy();
    return steps;
  }
  const tlsStarted = performance.now();
  const tls = await handshake(tcp.socket, endpoint.host, options.ca, timeoutMs, options.signal);
  const tlsMs = performance.now() - tlsStarted;
  add({ step: "tls", ok: tls.ok, ms: tlsMs, detail: tls.detail });
  return steps;
}

type Bounded<T> = { ok: true; value: T } | { ok: false; error: string };

/** A promise with a deadline and an abort: the loser keeps running in the background, its result ignored. */
function bounded<T>(promise: Promise<T>, ms: number, signal?: AbortSignal): Promise<Bounded<T>> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve({ ok: false, error: "interrupted" });
    const timer = setTimeout(() => finish({ ok: false, error: `no answer within ${millis(ms)}` }), ms);
    const onAbort = () => finish({ ok: false, error: "interrupted" });
    signal?.addEventListener("abort", onAbort, { once: true });
    function finish(r: Bounded<T>) {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      resolve(r);
    }
    promise.then(
      (value) => finish({ ok: true, value }),
      (err: NodeJS.ErrnoException) =>
        finish({ ok: false, error: err.code ? `${err.code}${errnoHint(err.code)}` : errorLine(err) }),
    );
  });
}

function errnoHint(code: string): string {
  switch (code) {
    case "ENOTFOUND":
      return " (no such name, or no DNS server answers)";
    case "EAI_AGAIN":
      return " (the DNS server did not answer: is the network up?)";
    case "ECONNREFUSED":
      return " (nothing listens there: wrong port, or the broker is down)";
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return " (no route: is the network up?)";
    case "ETIMEDOUT":
      return " (no answer: a firewall, or the host is down)";
    default:
      return "";
  }
}

function connectTcp(
  host: string,
  port: number,
  ms: number,
  signal?: AbortSignal,
): Promise<{ ok: true; socket: Socket } | { ok: false; error: string }> {
  return new Promise((resolve) => {
    const socket = new Socket();
    const fail = (error: string) => {
      cleanup();
      socket.destroy();
      resolve({ ok: false, error });
    };
    const timer = setTimeout(() => fail(`no answer within ${millis(ms)}${errnoHint("ETIMEDOUT")}`), ms);
    const onAbort = () => fail("interrupted");
    function cleanup() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      socket.removeAllListeners("error");
      socket.on("error", () => {});
    }
    if (signal?.aborted) return fail("interrupted");
    signal?.addEventListener("abort", onAbort, { once: true });
    socket.once("error", (err: NodeJS.ErrnoException) =>
      fail(err.code ? `${err.code}${errnoHint(err.code)}` : errorLine(err)),
    );
    socket.once("connect", () => {
      cleanup();
      resolve({ ok: true, socket });
    });
    socket.connect(port, host);
  });
}

function handshake(
  socket: Socket,
  servername: string,
  ca: string | undefined,
  ms: number,
  signal?: AbortSignal,
): Promise<{ ok: boolean; detail: string }> {
  return new Promise((resolve) => {
    // Verification is judged below rather than by refusing the handshake, so the person reads why it failed.
    const tls = tlsConnect({
      socket,
      servername: isIP(servername) ? undefined : servername,
      rejectUnauthorized: false,
      ...(ca ? { ca } : {}),
    });
    const done = (ok: boolean, detail: string) => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      tls.removeAllListeners("error");
      tls.on("error", () => {});
      tls.destroy();
      resolve({ ok, detail });
    };
    const timer = setTimeout(() => done(false, `no TLS handshake within ${millis(ms)}`), ms);
    const onAbort = () => done(false, "interrupted");
    signal?.addEventListener("abort", onAbort, { once: true });
    tls.once("error", (err) => done(false, `handshake failed: ${errorLine(err)}`));
    tls.once("secureConnect", () => {
      const cert = tls.getPeerCertificate();
      const subject = cert && typeof cert.subject === "object" ? cert.subject.CN : undefined;
      const until = cert?.valid_to ? `, valid until ${cert.valid_to}` : "";
      if (tls.authorized) done(true, `${tls.getProtocol() ?? "TLS"}, certificate of ${subject ?? "?"} trusted${until}`);
      else {
        const why = String(tls.authorizationError ?? "unknown reason");
        const clockHint = /NOT_YET_VALID|EXPIRED/.test(why)
          ? " (is the clock right? boxes without a battery boot in 1970)"
          : "";
        done(false, `certificate of ${subject ?? "?"} not trusted: ${why}${clockHint}`);
      }
    });
  });
}
