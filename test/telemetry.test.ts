// TelemetryCollector (agent/telemetry/collector.ts) on fake /proc and /sys trees of real boxes in a temp dir: a
// OneThing Cloud (4x Cortex-A5, 1 GB, Amlogic 3.10 kernel: no MemAvailable) and an arm64 TV box on a current
// kernel with Docker. cpu_pct from two samples, missing and broken nodes left out, counters from the features.
import { mkdir, mkdtemp, rm, symlink, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { HostPaths } from "../board/host-paths";
import {
  TELEMETRY_FIELDS,
  TelemetryCollector,
  cpuPercent,
  parseProcStat,
  type StatfsFn,
} from "../agent/telemetry/collector";
import { WorkCounters } from "../agent/telemetry/work-counters";

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function tree(files: Record<string, string>, links: Record<string, string> = {}): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), "sharenode-telemetry-"));
  dirs.push(root);
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), content);
  }
  for (const [path, target] of Object.entries(links)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await symlink(target, join(root, path));
  }
  return root;
}

// /proc/stat of a OneThing Cloud (Amlogic S805: 4x Cortex-A5, USER_HZ 100), about two days up.
function procStat(cpus: number[][]): string {
  const sum = cpus.reduce((acc, c) => acc.map((v, i) => v + c[i]!));
  const line = (name: string, t: number[]) => `${name} ${t.join(" ")} 0 0`;
  return [
    line("cpu ", sum),
    ...cpus.map((c, i) => line(`cpu${i}`, c)),
    "intr 118292911 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 12398771 0 0 0 0 0 0 2871 0 0 0 0 0 0 0 0 0",
    "ctxt 231098776",
    "btime 1764130000",
    "processes 98123",
    "procs_running 2",
    "procs_blocked 0",
    "softirq 28391222 0 10230411 3 2330091 0 0 1423 6012332 0 9823962",
    "",
  ].join("\n");
}
// user nice system idle iowait irq softirq steal
const CPUS_T0 = [
  [312001, 0, 150233, 4201232, 21001, 0, 7001, 0],
  [245123, 0, 87543, 4367213, 11021, 0, 1203, 0],
  [241001, 0, 87001, 4379843, 10398, 0, 882, 0],
  [240147, 0, 87594, 4379832, 10397, 0, 790, 0],
];
// One second later: 400 ticks on 4 cores, 100 of them busy (user 60, system 30, softirq 10), iowait 10: 25.0%.
const DELTA = [
  [30, 0, 10, 55, 5, 0, 0, 0],
  [10, 0, 10, 75, 0, 0, 5, 0],
  [10, 0, 5, 80, 5, 0, 0, 0],
  [10, 0, 5, 80, 0, 0, 5, 0],
];
const CPUS_T1 = CPUS_T0.map((c, i) => c.map((v, j) => v + DELTA[i]![j]!));

// Amlogic 3.10 vendor kernel: no MemAvailable (arrived in 3.14).
const MEMINFO_310 = `MemTotal:        1022360 kB
MemFree:          187344 kB
Buffers:           41216 kB
Cached:           402188 kB
SwapCached:            0 kB
Active:           412800 kB
Inactive:         301472 kB
Active(anon):     240012 kB
Inactive(anon):    31876 kB
Active(file):     172788 kB
Inactive(file):   269596 kB
Unevictable:           0 kB
Mlocked:               0 kB
HighTotal:        270336 kB
HighFree:          12300 kB
LowTotal:         752024 kB
LowFree:          175044 kB
SwapTotal:             0 kB
SwapFree:              0 kB
Dirty:               108 kB
Writeback:             0 kB
AnonPages:        270880 kB
Mapped:            61452 kB
Shmem:              1020 kB
Slab:              52312 kB
SReclaimable:      30108 kB
SUnreclaim:        22204 kB
KernelStack:        2616 kB
PageTables:         3348 kB
CommitLimit:      511180 kB
Committed_AS:     720332 kB
VmallocTotal:     245760 kB
VmallocUsed:       31276 kB
VmallocChunk:     180212 kB
`;

// Armbian on a current kernel (1 GB board, 6.6).
const MEMINFO_66 = `MemTotal:        1001132 kB
MemFree:          112908 kB
MemAvailable:     611480 kB
Buffers:           38892 kB
Cached:           462196 kB
SwapCached:         1024 kB
Active:           371248 kB
Inactive:         368364 kB
SwapTotal:        500564 kB
SwapFree:         488020 kB
Zswap:                 0 kB
Zswapped:              0 kB
Dirty:                64 kB
AnonPages:        237920 kB
Shmem:              6912 kB
KReclaimable:      43144 kB
Slab:              78384 kB
SReclaimable:      43144 kB
SUnreclaim:        35240 kB
CmaTotal:         262144 kB
CmaFree:          214004 kB
`;

const NET_DEV = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  3187562   21982    0    0    0     0          0         0  3187562   21982    0    0    0     0       0          0
  eth0:1893471262 2019221    0   12    0     0          0      3712 924173392 1301203    0    0    0     0       0          0
 wlan0:   882113    5120    0    0    0     0          0         0   120044    1022    0    0    0     0       0          0
docker0: 52231120  401223    0    0    0     0          0         0 803312290  601233    0    0    0     0       0          0
veth3f2a1c9: 52231120  401223    0    0    0     0          0         0 803312290  601233    0    0    0     0       0          0
`;

const NET_LINKS = {
  "sys/class/net/lo": "../../devices/virtual/net/lo",
  "sys/class/net/eth0": "../../devices/platform/c9410000.ethernet/net/eth0",
  "sys/class/net/wlan0": "../../devices/platform/sd_emmc_a/mmc_host/mmc1/mmc1:0001/mmc1:0001:1/net/wlan0",
  "sys/class/net/docker0": "../../devices/virtual/net/docker0",
  "sys/class/net/veth3f2a1c9": "../../devices/virtual/net/veth3f2a1c9",
};

function oneCloud(extra: Record<string, string> = {}): Record<string, string> {
  return {
    "proc/uptime": "183272.48 601233.12\n",
    "proc/stat": procStat(CPUS_T0),
    "proc/loadavg": "0.52 0.61 0.58 2/187 23011\n",
    "proc/meminfo": MEMINFO_310,
    "proc/net/dev": NET_DEV,
    "sys/class/thermal/thermal_zone0/type": "soc_thermal\n",
    "sys/class/thermal/thermal_zone0/temp": "48750\n",
    "sys/class/thermal/thermal_zone1/type": "ddr_thermal\n",
    "sys/class/thermal/thermal_zone1/temp": "51200\n",
    "sys/class/thermal/cooling_device0/cur_state": "0\n",
    ...extra,
  };
}

// A 1 TB USB disk, 4 KiB blocks: 600 GB used; ext4 keeps 5% for root, so bavail < bfree.
const fakeStatfs: StatfsFn = async () => ({ bsize: 4096, blocks: 244190208, bfree: 97700000, bavail: 85490490 });

const counters = {
  telemetryCounters: () => ({
    store_objects: 14233,
    store_used_bytes: 598_334_201_856,
    proofs_passed: 8812,
    proofs_failed: 3,
  }),
};
const linkCounters = {
  telemetryCounters: async () => ({ outbox_depth: 2, outbox_bytes: 1312, reconnects: 5, throttled: 0 }),
};
const work = new WorkCounters();
work.request();
work.served(65_536);
work.orderRefused();
work.setReceiptLag(1_048_576);
work.setTasks(4, 1);
work.taskFailed();
const computeCounters = { telemetryCounters: () => ({ compute_queued: 3, compute_failed: 1, compute_cpu_ms: 52_340 }) };
const ledgerCounters = { telemetryCounters: () => ({ ledger_unsettled: 42, ledger_rejected: 2, build: 7, slot: 2 }) };

describe("TelemetryCollector", () => {
  it("builds the whole message of a OneThing Cloud, fields in the README's order, cpu_pct from two samples", async () => {
    const root = await tree(oneCloud(), NET_LINKS);
    let now = 1_764_313_272_480;
    const collector = new TelemetryCollector({
      paths: new HostPaths(root),
      dataDir: "/mnt/sda1/sharenode",
      statfs: fakeStatfs,
      sources: [counters, linkCounters, work, computeCounters, ledgerCounters],
      now: () => now,
    });
    await collector.start();
    await writeFile(join(root, "proc/stat"), procStat(CPUS_T1));
    await writeFile(join(root, "proc/uptime"), "183273.48 601236.10\n");
    now += 1000;
    const t = await collector.collect();
    expect(t).toEqual({
      ts: 1_764_313_273_480,
      uptime_s: 183273.48,
      cpu_pct: 25,
      load1: 0.52,
      load5: 0.61,
      load15: 0.58,
      mem_total_bytes: 1022360 * 1024,
      // No MemAvailable on 3.10: MemFree + Buffers + Cached + SReclaimable.
      mem_available_bytes: (187344 + 41216 + 402188 + 30108) * 1024,
      temp_c: 51.2,
      disk_used_bytes: (244190208 - 97700000) * 4096,
      disk_free_bytes: 85490490 * 4096,
      store_objects: 14233,
      store_used_bytes: 598_334_201_856,
      // eth0 + wlan0: lo, docker0 and the veth pair (the same bytes again) are left out.
      net_rx_bytes: 1893471262 + 882113,
      net_tx_bytes: 924173392 + 120044,
      proofs_passed: 8812,
      proofs_failed: 3,
      outbox_depth: 2,
      outbox_bytes: 1312,
      reconnects: 5,
      throttled: 0,
      served_bytes: 65_536,
      requests: 1,
      orders_refused: 1,
      receipt_lag_bytes: 1_048_576,
      tasks_queued: 4,
      tasks_running: 1,
      tasks_failed: 1,
      compute_queued: 3,
      compute_failed: 1,
      compute_cpu_ms: 52_340,
      ledger_unsettled: 42,
      ledger_rejected: 2,
      build: 7,
      slot: 2,
    });
    expect(Object.keys(t)).toEqual(TELEMETRY_FIELDS.filter((f) => f !== "seq"));
    for (const v of Object.values(t)) expect(typeof v).toBe("number");

    // The next message measures from this one: 400 more ticks, 300 of them busy.
    const busier = CPUS_T1.map((c) => [c[0]! + 75, c[1]!, c[2]!, c[3]! + 25, c[4]!, c[5]!, c[6]!, c[7]!]);
    await writeFile(join(root, "proc/stat"), procStat(busier));
    expect((await collector.collect()).cpu_pct).toBe(75);
  });

  it("has no cpu_pct before a second sample, nor when no tick passed", async () => {
    const root = await tree(oneCloud(), NET_LINKS);
    const collector = new TelemetryCollector({ paths: new HostPaths(root) });
    expect((await collector.collect()).cpu_pct).toBeUndefined();
    expect((await collector.collect()).cpu_pct).toBeUndefined(); // same /proc/stat: zero ticks
    await writeFile(join(root, "proc/stat"), procStat(CPUS_T1));
    expect((await collector.collect()).cpu_pct).toBe(25);
  });

  it("leaves temp_c out when a zone has no temp or a broken sensor, and when there is no thermal zone", async () => {
    const root = await tree(oneCloud(), NET_LINKS);
    await unlink(join(root, "sys/class/thermal/thermal_zone1/temp"));
    const collector = new TelemetryCollector({ paths: new HostPaths(root) });
    expect((await collector.collect()).temp_c).toBe(48.8); // the zone that is left (48.75 °C)

    await writeFile(join(root, "sys/class/thermal/thermal_zone0/temp"), "-273000\n"); // a sensor that is off
    expect("temp_c" in (await collector.collect())).toBe(false);

    const bare = await tree({
      ...oneCloud(),
      "sys/class/thermal/thermal_zone0/temp": "",
      "sys/class/thermal/thermal_zone1/temp": "",
    });
    await rm(join(bare, "sys/class/thermal"), { recursive: true });
    const t = await new TelemetryCollector({ paths: new HostPaths(bare) }).collect();
    expect("temp_c" in t).toBe(false);
    expect(t.mem_total_bytes).toBe(1022360 * 1024);
  });

  it("reads whole degrees from vendor drivers that skip the millidegrees", async () => {
    const root = await tree(
      oneCloud({ "sys/class/thermal/thermal_zone0/temp": "52\n", "sys/class/thermal/thermal_zone1/temp": "47\n" }),
    );
    expect((await new TelemetryCollector({ paths: new HostPaths(root) }).collect()).temp_c).toBe(52);
  });

  it("prefers MemAvailable where the kernel has it", async () => {
    const root = await tree(oneCloud({ "proc/meminfo": MEMINFO_66 }));
    const t = await new TelemetryCollector({ paths: new HostPaths(root) }).collect();
    expect(t.mem_total_bytes).toBe(1001132 * 1024);
    expect(t.mem_available_bytes).toBe(611480 * 1024);
  });

  it("counts every non-loopback interface when all are virtual (the agent in a container)", async () => {
    const root = await tree(
      oneCloud({
        "proc/net/dev": NET_DEV.split("\n")
          .filter((l) => !/^\s*(eth0|wlan0|docker0):/.test(l))
          .join("\n"),
      }),
      {
        "sys/class/net/lo": NET_LINKS["sys/class/net/lo"],
        "sys/class/net/veth3f2a1c9": NET_LINKS["sys/class/net/veth3f2a1c9"],
      },
    );
    const t = await new TelemetryCollector({ paths: new HostPaths(root) }).collect();
    expect(t.net_rx_bytes).toBe(52231120);
    expect(t.net_tx_bytes).toBe(803312290);
  });

  it("never throws: an empty root gives ts and the counters; a failing source and bad values are left out", async () => {
    const root = await tree({});
    const errors: unknown[] = [];
    const collector = new TelemetryCollector({
      paths: new HostPaths(root),
      dataDir: join(root, "no-such-dir"),
      now: () => 42,
      onSourceError: (e) => errors.push(e),
      sources: [
        { telemetryCounters: () => Promise.reject(new Error("store closed")) },
        { telemetryCounters: () => ({ reconnects: 1, outbox_depth: -1, outbox_bytes: NaN, extra: 9 }) as never },
      ],
    });
    await collector.start();
    expect(await collector.collect()).toEqual({ ts: 42, reconnects: 1 });
    expect(errors).toHaveLength(1);

    // Garbage in every node: still no throw, nothing made up.
    const junk = await tree({
      "proc/uptime": "\n",
      "proc/stat": "cpu x y z\n",
      "proc/loadavg": "n/a\n",
      "proc/meminfo": "garbage\n",
      "proc/net/dev": "Inter-|\n face |\n",
      "sys/class/thermal/thermal_zone0/temp": "ENODATA\n",
    });
    expect(await new TelemetryCollector({ paths: new HostPaths(junk), now: () => 7 }).collect()).toEqual({ ts: 7 });
  });

  it("takes disk figures from statfs of the real data directory", async () => {
    const root = await tree(oneCloud());
    const t = await new TelemetryCollector({ paths: new HostPaths(root), dataDir: root }).collect();
    expect(t.disk_free_bytes).toBeGreaterThan(0);
    expect(t.disk_used_bytes).toBeGreaterThanOrEqual(0);
  });

  it("reads this machine's own /proc and /sys without error", async () => {
    const collector = new TelemetryCollector();
    await collector.start();
    await new Promise((r) => setTimeout(r, 50));
    const t = await collector.collect();
    expect(t.uptime_s).toBeGreaterThan(0);
    expect(t.mem_total_bytes).toBeGreaterThan(t.mem_available_bytes ?? Infinity);
    expect(t.load1).toBeGreaterThanOrEqual(0);
  });
});

describe("cpu arithmetic", () => {
  it("adds user..steal, counts iowait as idle, ignores guest columns", () => {
    expect(parseProcStat("cpu  10 20 30 40 50 60 70 80 90 100\n")).toEqual({ total: 360, idle: 90 });
    expect(parseProcStat("cpu  10 20 30 40\n")).toEqual({ total: 100, idle: 40 }); // 2.4-era four columns
    expect(parseProcStat("intr 1 2\n")).toBeUndefined();
    expect(cpuPercent({ total: 100, idle: 50 }, { total: 100, idle: 50 })).toBeUndefined();
    expect(cpuPercent({ total: 100, idle: 50 }, { total: 103, idle: 51 })).toBe(66.7);
  });
});
