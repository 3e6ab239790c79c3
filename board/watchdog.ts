// The hardware watchdog through its character device, with plain writes (Documentation/watchdog/watchdog-api.rst):
// opening arms it, any write pets it, and writing "V" just before close disarms it ("magic close") unless the driver
// was built with nowayout. No ioctl, so no native addon: the timeout is read from sysfs instead
// (/sys/class/watchdog/watchdogN/timeout, CONFIG_WATCHDOG_SYSFS), and may be unknown.
import { constants } from "node:fs";
import { open, readFile, type FileHandle } from "node:fs/promises";
import { basename } from "node:path";
import type { HardwareWatchdog } from "./board.js";
import { errnoText, type HostPaths } from "./host-paths.js";

// The API document's keep-alive example writes one NUL byte; only "V" means anything else to a driver.
const PET = Buffer.from([0]);
const MAGIC_CLOSE = Buffer.from("V");

class DeviceWatchdog implements HardwareWatchdog {
  // Pets and the magic close reach the driver in call order: "V" must be the last byte before close.
  private tail: Promise<unknown> = Promise.resolve();
  private closing: Promise<void> | undefined;

  constructor(
    readonly device: string,
    readonly timeoutSeconds: number | undefined,
    private readonly handle: FileHandle,
  ) {}

  private serial<T>(op: () => Promise<T>): Promise<T> {
    const run = this.tail.then(op);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** One keep-alive write; rejects (one line) when the device is closed or the write fails. */
  pet(): Promise<void> {
    if (this.closing) return Promise.reject(new Error(`watchdog ${this.device} is closed`));
    return this.serial(async () => {
      try {
        await this.handle.write(PET);
      } catch (err) {
        throw new Error(`cannot pet watchdog ${this.device}: ${errnoText(err)}`, { cause: err });
      }
    });
  }

  close(magic: boolean): Promise<void> {
    this.closing ??= this.serial(async () => {
      try {
        if (magic) await this.handle.write(MAGIC_CLOSE);
      } catch (err) {
        throw new Error(`cannot disarm watchdog ${this.device}: ${errnoText(err)}`, { cause: err });
      } finally {
        await this.handle.close();
      }
    });
    return this.closing;
  }
}

/** The timeout the driver reports for /dev/<device> ("watchdog" is watchdog0's legacy name). */
async function readTimeout(paths: HostPaths, device: string): Promise<number | undefined> {
  const name = device === "watchdog" ? "watchdog0" : basename(device);
  try {
    const text = (await readFile(paths.sys("class", "watchdog", name, "timeout"), "utf8")).trim();
    return /^[1-9]\d*$/.test(text) ? Number(text) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Opens /dev/<device>. Failure (absent device, no permission, already held by another daemon: ENOENT, EACCES,
 * EBUSY) is one problem line and undefined; the agent then runs without a hardware watchdog.
 */
export async function openHardwareWatchdog(
  paths: HostPaths,
  device: string,
  report: (line: string) => void,
): Promise<HardwareWatchdog | undefined> {
  const file = paths.dev(device);
  const hostPath = paths.toHost(file);
  let handle: FileHandle;
  try {
    // O_WRONLY without O_CREAT: a missing device must fail, not become a regular file in /dev.
    handle = await open(file, constants.O_WRONLY);
  } catch (err) {
    report(`cannot open watchdog ${hostPath}: ${errnoText(err)}`);
    return undefined;
  }
  return new DeviceWatchdog(hostPath, await readTimeout(paths, device), handle);
}
