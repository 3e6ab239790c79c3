// agent/util's helpers that every folder leans on: what was thrown as text (anything can be thrown), canonical
// base64, and the JSON guards.
import { runInNewContext } from "node:vm";
import { describe, expect, it } from "vitest";
import { decodeBase64, toBase64 } from "../agent/util/base64";
import { errnoCode, errorLine, errorMessage } from "../agent/util/errors";
import { isPlainObject, isUint } from "../agent/util/guards";

describe("errorMessage, errorLine, errnoCode", () => {
  const revoked = Proxy.revocable({}, {});
  revoked.revoke();
  const hostile = Object.defineProperty({}, "message", {
    get() {
      throw new Error("gotcha");
    },
  });

  it("renders whatever was thrown, and never throws itself", () => {
    const cases: Array<[unknown, string]> = [
      [new TypeError("bad type"), "bad type"],
      [new Error(""), ""],
      ["a thrown string", "a thrown string"],
      [42, "42"],
      [null, "null"],
      [undefined, "undefined"],
      [false, "false"],
      [10n, "10"],
      [{ message: "an error-like object" }, "an error-like object"],
      [runInNewContext('new Error("from another realm")'), "from another realm"],
      [{ code: 1 }, "an object"],
      [[1, 2], "an array"],
      [Symbol("s"), "a symbol"],
      [revoked.proxy, "an unreadable error"],
      [hostile, "an unreadable error"],
    ];
    for (const [thrown, text] of cases) expect(errorMessage(thrown), String(text)).toBe(text);
  });

  it("errorLine: one line, white space folded, cut to max, never empty", () => {
    expect(errorLine(new Error("line one\n  line two\r\n\tthree"))).toBe("line one line two three");
    expect(errorLine(new Error("x".repeat(300)))).toBe("x".repeat(197) + "...");
    expect(errorLine(new Error("x".repeat(300)), Infinity)).toBe("x".repeat(300));
    expect(errorLine(new Error(" \n "))).toBe("no message");
    expect(errorLine(revoked.proxy)).toBe("an unreadable error");
  });

  it("errnoCode: a system error's code, else undefined", () => {
    expect(errnoCode(Object.assign(new Error("x"), { code: "ENOENT" }))).toBe("ENOENT");
    for (const thrown of [new Error("x"), "ENOENT", null, undefined, { code: 5 }, revoked.proxy]) {
      expect(errnoCode(thrown)).toBeUndefined();
    }
  });
});

describe("base64", () => {
  it("round-trips, and decodes only the canonical spelling of exactly the expected length", () => {
    for (let n = 0; n <= 70; n++) {
      const bytes = Uint8Array.from({ length: n }, (_, i) => (i * 37 + n) & 0xff);
      const text = toBase64(bytes);
      expect(text).toBe(Buffer.from(bytes).toString("base64"));
      expect(decodeBase64(text, n)).toEqual(bytes);
      expect(decodeBase64(text, n + 1)).toBeNull();
    }
    const sig = toBase64(new Uint8Array(64).fill(7));
    for (const bad of [
      sig.replace(/==$/, ""), // unpadded
      sig.replace(/^./, "-"), // URL alphabet
      sig.slice(0, -3) + "x==", // non-zero bits past the end: Buffer would accept and drop them
      ` ${sig.slice(1)}`,
      sig.slice(0, 40) + "\n" + sig.slice(41),
    ]) {
      expect(decodeBase64(bad, 64), bad).toBeNull();
    }
    for (const notText of [undefined, null, 5, new Uint8Array(64), ["a"]]) expect(decodeBase64(notText, 64)).toBeNull();
  });
});

describe("guards", () => {
  it("isUint: safe integers from 0", () => {
    for (const v of [0, 1, 2 ** 53 - 1]) expect(isUint(v), String(v)).toBe(true);
    for (const v of [-1, 1.5, 2 ** 53, Number.NaN, Infinity, "1", null, undefined, 1n])
      expect(isUint(v), String(v)).toBe(false);
  });

  it("isPlainObject: objects, not arrays or null", () => {
    expect(isPlainObject({})).toBe(true);
    expect(isPlainObject(Object.create(null))).toBe(true);
    for (const v of [null, [], "x", 1, undefined]) expect(isPlainObject(v)).toBe(false);
  });
});
