// Atomic file replacement: after a power cut the target holds either its old bytes or the new ones, never a mix,
// never a truncated file. The sequence is the classic one: write a temp file in the same directory, fsync it,
// rename it over the target, fsync the directory (without that last step the rename itself may be lost).
import { randomBytes } from "node:crypto";
import { open, readdir, rename, stat, unlink, type FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { errnoCode } from "../util/errors.js";

export interface WriteFileAtomicOptions {
  /** Permission bits of the file, applied exactly (umask does not narrow them). Default: the replaced file's
   *  mode if there is one, else 0o666 less the umask (what fs.writeFile gives). */
  mode?: number;
}

const TEMP_SUFFIX = /^[0-9a-f]{12}$/;

/** A fresh temp name for `path`, in its directory: `.<name>.tmp-<12 hex digits>`. */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${randomBytes(6).toString("hex")}`);
}

/**
 * Removes temp files that an interrupted `writeFileAtomic` (or a record log's rewrite) of `path` left behind, and
 * returns their names. Call it at startup, before anything writes `path`: it cannot tell a stale temp file from one
 * another writer of `path` is filling right now.
 */
export async function removeStaleTemps(path: string): Promise<string[]> {
  const dir = dirname(path);
  const prefix = `.${basename(path)}.tmp-`;
  const removed: string[] = [];
  for (const name of await readdir(dir)) {
    if (name.startsWith(prefix) && TEMP_SUFFIX.test(name.slice(prefix.length))) {
      await unlink(join(dir, name)).catch(ignoreENOENT);
      removed.push(name);
    }
  }
  return removed;
}

/**
 * Errors of a directory fsync that mean "this filesystem cannot sync a directory", not "the sync failed". Linux
 * answers EINVAL when a filesystem has no fsync for directories (procfs and sysfs do so; so did CIFS and 9p
 * mounts of older kernels); ENOTSUP/EOPNOTSUPP say the same in other words. The rename is then as durable as that
 * filesystem can make it, and refusing every write there would help nobody. PostgreSQL draws the same line.
 * Anything else (EIO above all: a disk that failed to write the directory) is a real failure and is thrown;
 * so is EPERM, which no Linux filesystem gives for want of a directory fsync. FUSE filesystems (fusefat,
 * exfat-fuse; the kernel answers for a daemon without fsyncdir) and tmpfs accept it: test/store-fs.test.ts.
 */
const DIR_SYNC_UNSUPPORTED = new Set(["EINVAL", "ENOTSUP", "EOPNOTSUPP"]);

/** fsyncs a directory, making the creations, renames and removals of entries in it durable. */
export async function fsyncDir(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    await fh.sync();
  } catch (err) {
    if (!DIR_SYNC_UNSUPPORTED.has(errnoCode(err) ?? "")) throw err;
  } finally {
    await fh.close();
  }
}

/**
 * Replaces `path` with `data` atomically and durably: resolves once the new content and its name are on disk.
 * On failure the temp file is removed, the target is untouched (unless the failure was the final directory fsync,
 * after the rename), and the error is rethrown.
 */
export async function writeFileAtomic(
  path: string,
  data: Uint8Array | string,
  options: WriteFileAtomicOptions = {},
): Promise<void> {
  const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : data;
  const mode = options.mode ?? (await existingMode(path));
  const tmp = tempPathFor(path);
  let fh: FileHandle | undefined;
  try {
    fh = await open(tmp, "wx", mode ?? 0o666);
    if (mode !== undefined) await applyMode(fh, mode, options.mode !== undefined, path);
    await writeAll(fh, bytes, 0);
    await fh.sync();
    await fh.close();
    fh = undefined;
    await rename(tmp, path);
  } catch (err) {
    await fh?.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fsyncDir(dirname(path));
}

/** Writes all of `bytes` at `position`, looping over short writes. */
export async function writeAll(fh: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, position + done);
    if (bytesWritten <= 0) throw new Error(`write returned ${bytesWritten} bytes`);
    done += bytesWritten;
  }
}

/**
 * Gives the temp file `mode`. FAT has no permission bits: vfat through FUSE refuses chmod (ENOSYS), exFAT through
 * FUSE accepts it and keeps 0777. A mode the caller asked for (0600 for a secret) is exact or an error, never a
 * silent downgrade; a mode kept from the replaced file is kept where the filesystem can, and such a filesystem
 * gives the new file the mode the old one had anyway.
 */
async function applyMode(fh: FileHandle, mode: number, exact: boolean, path: string): Promise<void> {
  const modeOf = async () => (await fh.stat()).mode & 0o7777;
  if ((await modeOf()) === mode) return;
  try {
    await fh.chmod(mode);
  } catch (err) {
    if (exact) throw err;
    return;
  }
  const kept = await modeOf();
  if (exact && kept !== mode) {
    const octal = (m: number) => m.toString(8).padStart(4, "0");
    throw new Error(`cannot give ${path} mode ${octal(mode)}: the filesystem keeps ${octal(kept)}`);
  }
}

async function existingMode(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).mode & 0o7777;
  } catch (err) {
    ignoreENOENT(err);
    return undefined;
  }
}

function ignoreENOENT(err: unknown): void {
  if (errnoCode(err) !== "ENOENT") throw err;
}
