// The telemetry message's numbers: what the kernel says about the box (/proc, /sys, statfs of the data disk) and
// the counters the features keep, merged into the one flat object agent/link/README.md specifies. A node that is
// missing or unreadable (vendor 3.10 kernels lack some, containers hide others) leaves its field out: telemetry
// never fails and never stops the agent.
import { readFile, readlink, statfs as fsStatfs } from "node:fs/promises";
import { HostPaths } from "../../board/host-paths.js";
import { governingTemperature, readThermalZones } from "../../board/thermal.js";

/** Every telemetry field, in the order of agent/link/README.md. All values are numbers. */
export const TELEMETRY_FIELDS = [
  "seq",
  "ts",
  "uptime_s",
  "cpu_pct",
  "load1",
  "load5",
  "load15",
  "mem_total_bytes",
  "mem_available_bytes",
  "temp_c",
  "disk_used_bytes",
  "disk_free_bytes",
  "store_objects",
  "store_used_bytes",
  "net_rx_bytes",
  "net_tx_bytes",
  "proofs_passed",
  "proofs_failed",
  "outbox_depth",
  "outbox_bytes",
  "reconnects",
  "throttled",
  "served_bytes",
  "requests",
  "orders_refused",
  "receipt_lag_bytes",
  "tasks_queued",
  "tasks_running",
  "tasks_failed",
  "compute_queued",
  "compute_failed",
  "compute_cpu_ms",
  "ledger_unsettled",
  "ledger_rejected",
  "build",
  "slot",
] as const;

export type TelemetryField = (typeof TELEMETRY_FIELDS)[number];

/** One telemetry message. `seq` is stamped by the outbox (agent/link), never by the collector. */
export type Telemetry = Partial<Record<TelemetryField, number>>;

/** The fields the features count; the composition root hands them in through counter sources. */
export const COUNTER_FIELDS = [
  "store_objects",
  "store_used_bytes",
  "proofs_passed",
  "proofs_failed",
  "outbox_depth",
  "outbox_bytes",
  "reconnects",
  "throttled",
  "served_bytes",
  "requests",
  "orders_refused",
  "receipt_lag_bytes",
  "tasks_queued",
  "tasks_running",
  "tasks_failed",
  "compute_queued",
  "compute_failed",
  "compute_cpu_ms",
  "ledger_unsettled",
  "ledger_rejected",
  "build",
  "slot",
] as const satisfies readonly TelemetryField[];

export type CounterField = (typeof COUNTER_FIELDS)[number];
export type TelemetryCounters = Partial<Record<CounterField, number>>;

/** A feature's counters, as agent.ts wires them: `{ telemetryCounters: () => ({ reconnects: link.reconnects }) }`. */
export interface TelemetryCounterSource {
  telemetryCounters(): TelemetryCounters | Promise<TelemetryCounters>;
}

export type StatfsFn = (path: string) => Promise<{ bsize: number; blocks: number; bfree: number; bavail: number }>;

export interface TelemetryCollectorOptions {
  /** Where /proc and /sys are (default: the host's). */
  paths?: HostPaths;
  /** The store's data directory: disk_used_bytes and disk_free_bytes are of its filesystem. Absent: left out. */
  dataDir?: string;
  sources?: TelemetryCounterSource[];
  /** Epoch milliseconds (default Date.now). */
  now?: () => number;
  statfs?: StatfsFn;
  /** Told when a counter source throws (its fields are then left out of that message). */
  onSourceError?: (error: unknown) => void;
  /**
   * The temperature that telemetry reports: the board's (agent.ts passes Board.readTemperatureC, the same figure
   * throttling acts on). Absent: the hottest thermal zone under `paths`.
   */
  temperature?: () => Promise<number | undefined>;
}

/** The aggregate "cpu" line of /proc/stat, in clock ticks. */
export interface CpuSample {
  total: number;
  idle: number;
}

async function readText(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, "utf8");
  } catch {
    return undefined;
  }
}

function finite(value: number): number | undefined {
  return Number.isFinite(value) ? value : undefined;
}

/** /proc/stat's "cpu" line. user..steal add up to the total; guest time is already inside user and nice. */
export function parseProcStat(text: string): CpuSample | undefined {
  const line = text.split("\n").find((l) => l.startsWith("cpu "));
  if (!line) return undefined;
  const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number);
  if (ticks.length < 4 || ticks.some((t) => !Number.isFinite(t) || t < 0)) return undefined;
  const total = ticks.reduce((a, b) => a + b, 0);
  // iowait (column 5, since 2.5.41) is idle time spent waiting for a disk: the CPU could have worked.
  return { total, idle: ticks[3]! + (ticks[4] ?? 0) };
}

/** Busy share between two samples, in percent with one decimal; undefined when no time passed. */
export function cpuPercent(previous: CpuSample, current: CpuSample): number | undefined {
  const total = current.total - previous.total;
  const idle = current.idle - previous.idle;
  if (!(total > 0) || idle < 0) return undefined;
  const pct = (100 * (total - idle)) / total;
  return Math.round(Math.min(100, Math.max(0, pct)) * 10) / 10;
}

/** /proc/meminfo: total and available bytes. */
export function parseMeminfo(text: string): { total?: number; available?: number } {
  const kb: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const m = /^(\w+(?:\(\w+\))?):\s+(\d+)(?:\s+kB)?\s*$/.exec(line);
    if (m) kb[m[1]!] = Number(m[2]);
  }
  const bytes = (k: number | undefined) => (k === undefined ? undefined : k * 1024);
  let available = kb.MemAvailable;
  // MemAvailable arrived in 3.14; the 3.10 vendor kernels of these boxes lack it. Free plus the page cache and
  // reclaimable slab is the estimate `free` used before it existed.
  if (available === undefined && kb.MemFree !== undefined) {
    available = kb.MemFree + (kb.Buffers ?? 0) + (kb.Cached ?? 0) + (kb.SReclaimable ?? 0);
  }
  return { total: bytes(kb.MemTotal), available: bytes(available) };
}

/** /proc/net/dev: interface name -> received and sent bytes. */
export function parseNetDev(text: string): Map<string, { rx: number; tx: number }> {
  const out = new Map<string, { rx: number; tx: number }>();
  for (const line of text.split("\n")) {
    // Old kernels print "eth0:123" with no space after the colon when the number is wide.
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    const name = line.slice(0, colon).trim();
    const f = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .map(Number);
    if (name === "" || f.length < 9 || !Number.isFinite(f[0]) || !Number.isFinite(f[8])) continue;
    out.set(name, { rx: f[0]!, tx: f[8]! });
  }
  return out;
}

export class TelemetryCollector {
  private readonly paths: HostPaths;
  private readonly now: () => number;
  private readonly statfs: StatfsFn;
  private previousCpu: CpuSample | undefined;

  constructor(private readonly options: TelemetryCollectorOptions = {}) {
    this.paths = options.paths ?? new HostPaths();
    this.now = options.now ?? Date.now;
    this.statfs = options.statfs ?? ((path) => fsStatfs(path));
  }

  /** Takes the first CPU sample, so the first message already carries cpu_pct. */
  async start(): Promise<void> {
    this.previousCpu = await this.readCpu();
  }

  async stop(): Promise<void> {
    this.previousCpu = undefined;
  }

  /**
   * One telemetry message (without `seq`). Never throws: what cannot be read is left out. cpu_pct is the busy share
   * since the previous call (or start()); the first call without start() has none.
   */
  async collect(): Promise<Telemetry> {
    const [uptime, cpu, load, mem, temp, disk, net, counters] = await Promise.all([
      this.readUptime(),
      this.readCpu(),
      this.readLoad(),
      this.readMem(),
      this.readTemp(),
      this.readDisk(),
      this.readNet(),
      this.readCounters(),
    ]);
    let cpuPct: number | undefined;
    if (cpu) {
      const pct = this.previousCpu ? cpuPercent(this.previousCpu, cpu) : undefined;
      // A sample with no ticks since the last one (two calls within a jiffy) keeps the older baseline.
      if (pct !== undefined || !this.previousCpu || cpu.total < this.previousCpu.total) this.previousCpu = cpu;
      cpuPct = pct;
    }
    const values: Telemetry = {
      ts: this.now(),
      uptime_s: uptime,
      cpu_pct: cpuPct,
      load1: load?.[0],
      load5: load?.[1],
      load15: load?.[2],
      mem_total_bytes: mem.total,
      mem_available_bytes: mem.available,
      temp_c: temp,
      disk_used_bytes: disk?.used,
      disk_free_bytes: disk?.free,
      net_rx_bytes: net?.rx,
      net_tx_bytes: net?.tx,
      ...counters,
    };
    const out: Telemetry = {};
    for (const field of TELEMETRY_FIELDS) {
      const v = values[field];
      if (typeof v === "number" && Number.isFinite(v)) out[field] = v;
    }
    return out;
  }

  private async readUptime(): Promise<number | undefined> {
    const text = await readText(this.paths.proc("uptime"));
    return text === undefined ? undefined : finite(parseFloat(text));
  }

  private async readCpu(): Promise<CpuSample | undefined> {
    const text = await readText(this.paths.proc("stat"));
    return text === undefined ? undefined : parseProcStat(text);
  }

  private async readLoad(): Promise<number[] | undefined> {
    const text = await readText(this.paths.proc("loadavg"));
    const f = text?.trim().split(/\s+/).slice(0, 3).map(Number);
    return f && f.length === 3 && f.every(Number.isFinite) ? f : undefined;
  }

  private async readMem(): Promise<{ total?: number; available?: number }> {
    const text = await readText(this.paths.proc("meminfo"));
    return text === undefined ? {} : parseMeminfo(text);
  }

  /** The board's governing temperature (default: the hottest zone), in °C with one decimal. */
  private async readTemp(): Promise<number | undefined> {
    const c = this.options.temperature
      ? await this.options.temperature()
      : governingTemperature(await readThermalZones(this.paths, []), []);
    return c === undefined ? undefined : Math.round(c * 10) / 10;
  }

  private async readDisk(): Promise<{ used: number; free: number } | undefined> {
    if (this.options.dataDir === undefined) return undefined;
    try {
      const s = await this.statfs(this.options.dataDir);
      // Free is what an unprivileged writer gets (bavail), the figure the store's quota works with.
      return { used: (s.blocks - s.bfree) * s.bsize, free: s.bavail * s.bsize };
    } catch {
      return undefined;
    }
  }

  /**
   * Bytes through the box's physical interfaces. Virtual ones (bridges, veth pairs, tunnels, PPP: sysfs puts them
   * under /sys/devices/virtual/net) carry the same traffic again on boxes that run containers, so they are left
   * out; where every interface is virtual (the agent in a container) every non-loopback one counts.
   */
  private async readNet(): Promise<{ rx: number; tx: number } | undefined> {
    const text = await readText(this.paths.proc("net", "dev"));
    if (text === undefined) return undefined;
    const ifaces = [...parseNetDev(text)].filter(([name]) => name !== "lo");
    if (ifaces.length === 0) return undefined;
    const virtual = await Promise.all(ifaces.map(([name]) => this.isVirtualInterface(name)));
    const physical = ifaces.filter((_, i) => !virtual[i]);
    const counted = physical.length > 0 ? physical : ifaces;
    return counted.reduce((sum, [, c]) => ({ rx: sum.rx + c.rx, tx: sum.tx + c.tx }), { rx: 0, tx: 0 });
  }

  private async isVirtualInterface(name: string): Promise<boolean> {
    try {
      return (await readlink(this.paths.sys("class", "net", name))).includes("/devices/virtual/");
    } catch {
      return false; // no sysfs entry: nothing says it is virtual
    }
  }

  private async readCounters(): Promise<TelemetryCounters> {
    const out: TelemetryCounters = {};
    for (const source of this.options.sources ?? []) {
      let counters: TelemetryCounters;
      try {
        counters = await source.telemetryCounters();
      } catch (err) {
        this.options.onSourceError?.(err);
        continue;
      }
      for (const field of COUNTER_FIELDS) {
        const v = counters?.[field];
        if (typeof v === "number" && Number.isFinite(v) && v >= 0) out[field] = v;
      }
    }
    return out;
  }
}
