// `store.dataDir: "auto"`: which directory the store uses when the owner did not name one. The disk is chosen once
// and then remembered by the existing adoption (disk-marker.ts): the marker on the disk and the record in the state
// dir. Choosing again at every start would move the store to whichever disk is largest today.
//
// - Adopted before: the recorded data dir, wherever its disk is now mounted (the marker with the recorded disk id
//   is looked for under each mounted disk's `sharenode/`); not found: the recorded dir all the same, so that
//   checkDataDisk refuses it as today ("marker-missing": is the USB disk mounted?), never a silent switch.
// - Nothing adopted: the USB disks (candidateDisks: writable, USB-backed, not the system disk). One: the largest
//   filesystem on it, `<mount point>/sharenode`. None, or several: no choice (which disk is the owner's spare
//   one is not ours to guess); the reason names the candidates.
import { join } from "node:path";
import { readAdoptedDisk, readDiskMarker } from "./disk-marker.js";
import { candidateDisks, describeCandidate, DiskDiscovery, type DiskListing } from "./disk-discovery.js";
import { showPath, type Filesystem } from "./disks.js";

/** The value of `store.dataDir` that asks for this. */
export const AUTO_DATA_DIR = "auto";

/** The directory `auto` makes on the chosen disk: the owner's own files on it stay apart. */
export const AUTO_DIR_NAME = "sharenode";

export type AutoDataDir =
  | {
      ok: true;
      dataDir: string;
      /** `adopted`: the recorded dir; `moved`: the adopted disk at another mount point; `chosen`: first start. */
      how: "adopted" | "moved" | "chosen";
      /** One line for the log. */
      reason: string;
      /** df's failure, when the listing fell back on the mount table (one line). */
      note?: string;
    }
  | { ok: false; code: "no-data-disk" | "several-data-disks"; reason: string; note?: string };

export interface AutoDataDirOptions {
  stateDir: string;
  /** This device's id; undefined (no device key yet: the console) reads no adoption record. */
  nodeId: string | undefined;
  discovery: DiskDiscovery;
}

/** Resolves `store.dataDir: "auto"` to a directory (without creating or adopting anything), or says why none. */
export async function resolveAutoDataDir(options: AutoDataDirOptions): Promise<AutoDataDir> {
  const adopted = options.nodeId === undefined ? undefined : await readAdoptedDisk(options.stateDir, options.nodeId);
  const recorded = adopted && {
    ok: true as const,
    dataDir: adopted.dataDir,
    how: "adopted" as const,
    reason: `the adopted disk ${adopted.diskId} at ${showPath(adopted.dataDir)}`,
  };
  if (adopted && (await readDiskMarker(adopted.dataDir))?.diskId === adopted.diskId) return recorded!;
  const listing: DiskListing = await options.discovery.list();
  const note = listing.note ? { note: listing.note } : {};
  if (adopted) {
    for (const fs of listing.filesystems) {
      const dir = join(fs.mountPoint, AUTO_DIR_NAME);
      const marker = await readDiskMarker(dir);
      if (marker?.diskId === adopted.diskId && marker.nodeId === options.nodeId) {
        const reason = `the adopted disk ${adopted.diskId}, now at ${showPath(dir)} (was ${showPath(adopted.dataDir)})`;
        return { ok: true, dataDir: dir, how: "moved", reason, ...note };
      }
    }
    return { ...recorded!, ...note };
  }
  return { ...chooseAutoDisk(listing.filesystems), ...note };
}

/** The first-start choice among `filesystems` (a listing): the one USB disk's largest filesystem, or why none. */
export function chooseAutoDisk(filesystems: readonly Filesystem[]): AutoDataDir {
  const candidates = candidateDisks(filesystems);
  if (candidates.length === 0) {
    return {
      ok: false,
      code: "no-data-disk",
      reason:
        'store.dataDir is "auto" but no writable USB disk is mounted besides the system disk; ' +
        "plug one in, or set store.dataDir",
    };
  }
  if (candidates.length > 1) {
    return {
      ok: false,
      code: "several-data-disks",
      reason:
        `store.dataDir is "auto" and ${candidates.length} USB disks could hold the store: ` +
        `${candidates.map((c) => describeCandidate(c.filesystem)).join(", ")}; ` +
        "none is adopted yet, so none was chosen: " +
        `set store.dataDir to a directory on one of them`,
    };
  }
  const fs = candidates[0]!.filesystem;
  const dataDir = join(fs.mountPoint, AUTO_DIR_NAME);
  return { ok: true, dataDir, how: "chosen", reason: `the only USB disk: ${describeCandidate(fs)}` };
}

/**
 * Where the sim board keeps its fake /sys and /dev: beside the store when store.dataDir names a directory, and in
 * the state directory with "auto" (the disk is chosen after the board opens) or with no data directory (the
 * console on an unconfigured box). The daemon and the console both ask here, so they open the same tree.
 */
export function simBoardRoot(dataDir: string | undefined, stateDir: string): string {
  return join(dataDir === undefined || dataDir === AUTO_DATA_DIR ? stateDir : dataDir, "sim-board");
}
