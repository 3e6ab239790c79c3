import { describe, expect, it } from "vitest";
import { LogHub } from "../agent/util/log";

describe("LogHub", () => {
  const hub = () => {
    const written: string[] = [];
    return { written, logs: new LogHub({ write: (l) => written.push(l) }, "info", () => 0, 3) };
  };

  it("keeps the last lines in a bounded ring; tail(0) is no lines, tail beyond the ring is the ring", () => {
    const { logs, written } = hub();
    const log = logs.logger("t");
    for (const m of ["a", "b", "c", "d"]) log.info(m);
    expect(written).toHaveLength(4);
    expect(logs.tail(0)).toEqual([]);
    expect(logs.tail(-5)).toEqual([]);
    expect(logs.tail(2).map((l) => l.slice(-1))).toEqual(["c", "d"]);
    expect(logs.tail(10).map((l) => l.slice(-1))).toEqual(["b", "c", "d"]);
  });

  it("tells subscribers each new line until they unsubscribe; lines below the level reach nobody", () => {
    const { logs } = hub();
    const seen: string[] = [];
    const off = logs.subscribe((l) => seen.push(l));
    logs.logger("t").debug("hidden");
    logs.logger("t").warn("one\ntwo");
    off();
    logs.logger("t").info("after");
    expect(seen).toEqual(["1970-01-01T00:00:00.000Z warn  t: one\\ntwo"]);
  });
});
