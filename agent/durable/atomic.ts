// Atomic file replacement: after a power cut the target holds either its old bytes or the new ones, never a mix,
// never a truncated file. The sequence is the classic one: write a temp file in the same directory, fsync it,
// rename it over the target, fsync the directory (without that last step the rename itself may be lost).
import { randomBytes } from "node:crypto";
import { open, readdir, rename, stat, unlink, type FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

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

/** fsyncs a directory, making the creations, renames and removals of entries in it durable. */
export async function fsyncDir(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    await fh.sync();
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
    if (mode !== undefined) await fh.chmod(mode);
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

async function existingMode(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).mode & 0o7777;
  } catch (err) {
    ignoreENOENT(err);
    return undefined;
  }
}

function ignoreENOENT(err: unknown): void {
  if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
}
