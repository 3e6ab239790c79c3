import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    root: new URL("..", import.meta.url).pathname,
    // A skipped test is a failing test in CI: `.only`/`.skip` left in a file must not pass quietly.
    allowOnly: false,
    // The Debian tools the tests use: installed (as root) or named before any test runs (test/setup/).
    globalSetup: ["test/setup/debian-tools.mjs"],
    // Agents the tests start (and their children, which inherit this) serve on a free loopback port: the default
    // 8470 on every address would make concurrent test agents fight for one port (all but one "not serving").
    env: { SHARENODE_SERVE_BIND: "127.0.0.1", SHARENODE_SERVE_PORT: "0" },
    // Two test files at a time: vitest's default is one fewer than the CPUs, which is one on the 2-core machines
    // this runs on, and most of these files wait on agents, brokers and timers rather than compute.
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Files named *.exclusive.test.ts measure a share of this machine (compute's share.cpuPercent): they run after
    // every other file has finished, alone (a project of a higher group order starts when the lower ones are done).
    projects: [
      {
        extends: true,
        test: {
          name: "shared",
          include: ["test/**/*.test.ts"],
          exclude: ["test/**/*.exclusive.test.ts"],
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: { name: "exclusive", include: ["test/**/*.exclusive.test.ts"], sequence: { groupOrder: 1 } },
      },
    ],
  },
});
