// `npm run lint` (part of `npm test`): typescript-eslint with type information, because the rule this daemon needs most (no floating promises:
// an unhandled rejection ends the process) needs types to see a promise. Formatting is Prettier's (.prettierrc.json).
import js from "@eslint/js";
import globals from "globals";
import tseslint from "typescript-eslint";

export default tseslint.config(
  // AssemblyScript is not TypeScript (decorators on functions, u32...): asc checks it.
  {
    ignores: [
      "dist/",
      "node_modules/",
      "wasm/assembly/",
      "wasm/tasks/",
      "wasm/build/",
      "**/*.generated.ts",
      ".sharenode-dev/",
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: globals.node,
      parserOptions: { projectService: true, tsconfigRootDir: new URL("..", import.meta.url).pathname },
    },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/await-thenable": "error",
      "@typescript-eslint/no-unused-vars": [
        "error",
        {
          argsIgnorePattern: "^_",
          varsIgnorePattern: "^_",
          destructuredArrayIgnorePattern: "^_",
          caughtErrors: "none",
        },
      ],
      // Terminal and serial input is parsed with regexes over control characters on purpose.
      "no-control-regex": "off",
      // Column-aligned expected output (`  a  b`) reads better as spaces than as ` {2}`.
      "no-regex-spaces": "off",
    },
  },
  {
    // Tests read parsed JSON (log records, replies, MQTT payloads) and check it with toEqual/toMatchObject: `any` there
    // is the shape under test, not a hole in the agent's types. The agent itself keeps the rule.
    files: ["test/**/*.ts"],
    rules: { "@typescript-eslint/no-explicit-any": "off" },
  },
  {
    files: ["**/*.mjs", "**/*.cjs", "**/*.js"],
    extends: [tseslint.configs.disableTypeChecked],
  },
);
