// Our Range answers against Debian's nginx's (max_ranges 1) for the same file: status, Content-Range, Content-Length
// and body, over a set of headers including the edge cases (suffix, open, past the end, bad syntax, several ranges).
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { ObjectServer } from "../agent/serve/server";
import { seededBytes } from "./helpers/random";
import { waitFor } from "./helpers/wait";

const LENGTH = 10_000;
const ID = "ab".repeat(32);
let work = "";
let nginx: ChildProcess | undefined;
let nginxPort = 0;
let server: ObjectServer;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "sharenode-serve-nginx-"));
  // nginx's worker runs as another user when started as root: it must be able to read the file.
  chmodSync(work, 0o755);
  const objects = join(work, "www", "v1", "objects");
  mkdirSync(objects, { recursive: true });
  writeFileSync(join(objects, ID), seededBytes(LENGTH, 5));
  server = new ObjectServer({
    store: { locate: () => ({ length: LENGTH, path: join(objects, ID), outboardPath: "" }) },
    bind: "127.0.0.1",
    port: 0,
  });
  await server.start();
  const probe = new ObjectServer({ store: { locate: () => undefined }, bind: "127.0.0.1", port: 0 });
  await probe.start();
  nginxPort = probe.port;
  await probe.stop();
  mkdirSync(join(work, "logs"));
  writeFileSync(
    join(work, "nginx.conf"),
    `worker_processes 1;
daemon off;
pid ${join(work, "nginx.pid")};
error_log ${join(work, "logs", "error.log")} warn;
events { worker_connections 64; }
http {
  access_log off;
  max_ranges 1;
  client_body_temp_path ${work}/body;
  proxy_temp_path ${work}/proxy;
  fastcgi_temp_path ${work}/fastcgi;
  uwsgi_temp_path ${work}/uwsgi;
  scgi_temp_path ${work}/scgi;
  default_type application/octet-stream;
  etag on;
  server { listen 127.0.0.1:${nginxPort}; root ${join(work, "www")}; }
}
`,
  );
  nginx = spawn("nginx", ["-p", work, "-c", join(work, "nginx.conf")], { stdio: ["ignore", "ignore", "inherit"] });
  await waitFor("nginx", () =>
    get(nginxPort, undefined).then(
      (r) => r.status === 200,
      () => false,
    ),
  );
});

afterAll(async () => {
  nginx?.kill("SIGTERM");
  await server?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

function get(port: number, range: string | undefined) {
  return new Promise<{ status: number; contentRange?: string; length?: string; body: Buffer }>((resolve, reject) => {
    const req = request({ port, host: "127.0.0.1", path: `/v1/objects/${ID}`, headers: range ? { Range: range } : {} });
    req.on("response", (res) => {
      const parts: Buffer[] = [];
      res.on("data", (d: Buffer) => parts.push(d));
      res.on("end", () =>
        resolve({
          status: res.statusCode!,
          contentRange: res.headers["content-range"],
          length: res.headers["content-length"],
          body: Buffer.concat(parts),
        }),
      );
    });
    req.on("error", reject);
    req.end();
  });
}

const HEADERS = [
  "bytes=0-0",
  "bytes=0-99",
  "bytes=9999-9999",
  "bytes=9999-",
  "bytes=10000-",
  "bytes=0-",
  "bytes=-1",
  "bytes=-9999",
  "bytes=-10000",
  "bytes=-20000",
  "bytes=-0",
  "bytes=5-4",
  "bytes=500-100000",
  "bytes= 1 - 2",
  "bytes=1 -2",
  "Bytes=3-4",
  "bytes=x",
  "bytes=1-2-",
  "bytes=1-2,",
  "bytes=0-1,3-4",
  "bytes=0-1,20000-",
  "bytes=20000-,0-1",
  "bytes=5-4,0-1",
  "bytes=-0,0-1",
  "bytes=,0-1",
  "bytes=99999999999999999999-",
  "bytes=1-99999999999999999999",
  "bytes=0-9223372036854775807",
  "items=0-1",
  "bytes=",
  "bytes",
];

it("answers every Range header as nginx (max_ranges 1) does", async () => {
  const differences: string[] = [];
  for (const h of HEADERS) {
    const theirs = await get(nginxPort, h);
    const ours = await get(server.port, h);
    const strip = (r: typeof ours) => ({
      status: r.status,
      contentRange: r.contentRange,
      // nginx's 416 body is an HTML page: only the successful bodies are compared.
      body: r.status < 300 ? r.body.toString("hex") : "",
      length: r.status < 300 ? r.length : "",
    });
    const a = strip(theirs);
    const b = strip(ours);
    if (JSON.stringify(a) !== JSON.stringify(b)) {
      differences.push(`${h}: nginx ${a.status} ${a.contentRange ?? ""}, ours ${b.status} ${b.contentRange ?? ""}`);
    }
  }
  expect(differences).toEqual([]);
});
