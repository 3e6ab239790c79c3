// What serve-bench and client-bench share: the box's own server (agent/serve ObjectServer with its OrderGate and
// ReceiptBook, as agent/agent.ts wires them, rate limit off) in a child process of its own, and the small process
// helpers around it. The child is the calling bench's bundle (ts-bench.mjs bundles each bench with this file) run
// again with BENCH_BOX_CHILD set: it serves the objects it is given until it is stopped.
import { spawn, type ChildProcess } from "node:child_process";
import { createServer, Socket } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { OrderGate } from "../../agent/serve/order-gate";
import { ReceiptBook } from "../../agent/serve/receipt-book";
import { ObjectServer } from "../../agent/serve/server";

export interface Server {
  name: string;
  port: number;
  /** The server's process (its RSS is read from /proc), when it runs in a child of its own. */
  pid?: number;
  stop(): Promise<void>;
}

/** One object the box serves: its bytes and its outboard (the store's two files). */
export interface BoxObject {
  id: string;
  length: number;
  path: string;
  outboardPath: string;
}

export interface BoxSpec {
  /** The receipt log (receipts.log) goes here. */
  stateDir: string;
  objects: BoxObject[];
  fleetPublicKey: string;
  deviceId: string;
  /** The gate's receipt window: bytes an order is sent past its largest receipt. */
  windowBytes: number;
}

export const median = (v: number[]): number => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export async function waitForPort(port: number, child: ChildProcess, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`bench: ${what} exited with ${child.exitCode}`);
    const up = await new Promise<boolean>((resolve) => {
      const socket = new Socket();
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
      socket.connect(port, "127.0.0.1");
    });
    if (up) return;
    if (Date.now() > deadline) throw new Error(`bench: ${what} did not listen on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
    setTimeout(() => child.kill("SIGKILL"), 3000).unref();
  });
}

/** Starts the box's server in a child process on a free loopback port. */
export async function startBox(spec: BoxSpec, name: string): Promise<Server> {
  const port = await freePort();
  // --expose-gc: serve-costs asks for a collection (SIGUSR2) before it reads the RSS, so that garbage not yet
  // collected is not counted as memory a connection holds.
  // BENCH_BOX_NODE_ARGS: extra node options for the box alone, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
  const extra = (process.env.BENCH_BOX_NODE_ARGS ?? "").split(" ").filter(Boolean);
  const child = spawn(process.execPath, [...extra, "--expose-gc", fileURLToPath(import.meta.url)], {
    env: { ...process.env, BENCH_BOX_CHILD: JSON.stringify({ ...spec, port }) },
    stdio: ["ignore", "ignore", "inherit"],
  });
  await waitForPort(port, child, "the box's server");
  return { name, port, pid: child.pid, stop: () => stopChild(child) };
}

async function boxChild(spec: BoxSpec & { port: number }): Promise<void> {
  process.on("SIGUSR2", () => (globalThis as { gc?: () => void }).gc?.());
  // A clean exit on SIGTERM, so that a profile asked for with NODE_OPTIONS=--cpu-prof is written.
  process.on("SIGTERM", () => process.exit(0));
  const objects = new Map(spec.objects.map((o) => [o.id, o]));
  const book = new ReceiptBook(join(spec.stateDir, "receipts.log"));
  await book.start();
  const server = new ObjectServer({
    store: { locate: (id) => objects.get(id) },
    bind: "127.0.0.1",
    port: spec.port,
    limits: { maxConnections: 1024, maxConnectionsPerAddress: 1024 },
    gate: new OrderGate({
      fleetPublicKey: spec.fleetPublicKey,
      deviceId: spec.deviceId,
      book,
      windowBytes: spec.windowBytes,
    }),
    onError: (line) => console.error(`bench box: ${line}`),
  });
  await server.start();
}

if (process.env.BENCH_BOX_CHILD) await boxChild(JSON.parse(process.env.BENCH_BOX_CHILD) as BoxSpec & { port: number });
