import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    root: new URL("..", import.meta.url).pathname,
    include: ["test/**/*.test.ts"],
    // A skipped test is a failing test in CI: `.only`/`.skip` left in a file must not pass quietly.
    allowOnly: false,
    // The Debian tools the tests use: installed (as root) or named before any test runs (test/setup/).
    globalSetup: ["test/setup/debian-tools.mjs"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
