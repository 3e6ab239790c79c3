// `sharenode release ...`: the release key, and signed, content-addressed releases (agent/ota/release.ts).
// pack writes a directory an origin can serve as it is: manifest.json (the signed envelope) and, per file, the object
// `objects/<blake3>` with its outboard `objects/<blake3>.obao` (what 'sharenode proof outboard' makes), so boxes fetch
// release files like any task, verified group by group. verify checks a manifest's signature and, given the
// directory, every object against its id and length.
import { mkdir, readFile, stat } from "node:fs/promises";
import { homedir } from "node:os";
import { basename, join } from "node:path";
import { writeFileAtomic } from "../durable/atomic.js";
import { loadOrCreateSigningKey } from "../identity/device-key.js";
import { createOutboard } from "../kernels/outboard.js";
import { blake3 } from "../kernels/blake3.js";
import { openManifest, releasePathDefect, signManifest, SLOT_PACKAGE_JSON, type ReleaseFile } from "../ota/release.js";
import { errorMessage } from "../util/errors.js";
import { toHex } from "../util/hex.js";
import { CliError, parseCommandArgs, systemErrorText, usageError, type CliIo, type Command } from "./io.js";

const USAGE = `Usage: sharenode release keygen [--key-dir DIR]
       sharenode release pack --name N --version V --build B --out DIR [--key-dir DIR] FILE[=PATH]...
       sharenode release verify MANIFEST --release-key HEX [--dir DIR]

keygen   create (first time) the release key in DIR and print its public key: put it in the boxes' config
         (ota.releasePublicKey). It is not the fleet's command key: a stolen command key cannot ship code
pack     sign a release of the FILEs (each installed at PATH in the slot, default its base name): writes
         DIR/manifest.json (name, semver version, build: a whole number above every earlier build) and, per
         file, DIR/objects/<blake3> and its outboard DIR/objects/<blake3>.obao, ready for an origin to serve.
         A package.json saying "type": "module" is added unless one is given (Node < 20.19 needs it)
verify   check MANIFEST's signature under the release key and its fields; with --dir, every file's object
         against its id and length. Prints the release and exits 0, or one line per problem and exit 1

Options:
  --key-dir DIR       where the release key lives (default ~/.config/sharenode-release)
  --release-key HEX   the release public key (64 hex digits)
  -h, --help          show this help
`;

export const releaseCommand: Command = {
  summary: "signed, content-addressed releases for updates over the air (keygen, pack, verify)",
  usage: USAGE,
  run: runRelease,
};

const defaultKeyDir = () => join(homedir(), ".config", "sharenode-release");

async function releaseKey(dir: string | undefined, label: string) {
  return loadOrCreateSigningKey(dir ?? defaultKeyDir(), "ReleaseKey", (m) => new CliError(`${label}: ${m}`));
}

async function runRelease(args: string[], io: CliIo): Promise<number> {
  const [action, ...rest] = args;
  switch (action) {
    case "keygen": {
      const { values } = parseCommandArgs("release keygen", rest, { "key-dir": { type: "string" } }, false);
      const key = await releaseKey(values["key-dir"], "release keygen");
      io.stdout.write(`${key.publicKeyHex}\n`);
      return 0;
    }
    case "pack":
      return pack(rest, io);
    case "verify":
      return verify(rest, io);
    case undefined:
      throw usageError("release: missing action: keygen, pack or verify (see 'sharenode release --help')");
    default:
      throw usageError(`release: unknown action '${action}' (expected keygen, pack or verify)`);
  }
}

async function pack(args: string[], io: CliIo): Promise<number> {
  const label = "release pack";
  const { values, positionals } = parseCommandArgs(
    label,
    args,
    {
      name: { type: "string" },
      version: { type: "string" },
      build: { type: "string" },
      out: { type: "string" },
      "key-dir": { type: "string" },
    },
    true,
  );
  if (values.out === undefined) throw usageError(`${label}: --out DIR is required`);
  if (positionals.length === 0) throw usageError(`${label}: at least one FILE is required`);
  const build = values.build !== undefined && /^\d+$/.test(values.build) ? Number(values.build) : NaN;
  if (!Number.isSafeInteger(build) || build < 1) throw usageError(`${label}: --build must be a whole number from 1`);
  const files: ReleaseFile[] = [];
  const objects: Array<{ id: string; data: Uint8Array; outboard: Uint8Array }> = [];
  for (const spec of positionals) {
    const eq = spec.indexOf("=");
    const file = eq < 0 ? spec : spec.slice(0, eq);
    const path = eq < 0 ? basename(spec) : spec.slice(eq + 1);
    const defect = releasePathDefect(path);
    if (defect !== undefined) throw usageError(`${label}: ${defect}`);
    let data: Uint8Array;
    try {
      if (!(await stat(file)).isFile()) throw new CliError(`${label}: ${file} is not a regular file`);
      data = await readFile(file);
    } catch (err) {
      if (err instanceof CliError) throw err;
      throw new CliError(`${label}: cannot read ${file}: ${systemErrorText(err) ?? errorMessage(err)}`);
    }
    const { id, outboard } = createOutboard(data);
    files.push({ path, blake3: toHex(id), length: data.length });
    objects.push({ id: toHex(id), data, outboard });
  }
  // The bundle is an ES module named .js: Node before 20.19 (20.11 is the newest armv7l build) reads a .js file as
  // CommonJS unless a package.json beside it says otherwise. A release carries that file, as install.sh writes it.
  if (!files.some((f) => f.path === "package.json")) {
    const data = new TextEncoder().encode(SLOT_PACKAGE_JSON);
    const { id, outboard } = createOutboard(data);
    files.push({ path: "package.json", blake3: toHex(id), length: data.length });
    objects.push({ id: toHex(id), data, outboard });
  }
  const key = await releaseKey(values["key-dir"], label);
  let envelope: Uint8Array;
  try {
    envelope = signManifest({ name: values.name ?? "", version: values.version ?? "", build, files }, key);
  } catch (err) {
    throw usageError(`${label}: ${errorMessage(err)}`);
  }
  await mkdir(join(values.out, "objects"), { recursive: true });
  for (const o of objects) {
    await writeFileAtomic(join(values.out, "objects", o.id), o.data);
    await writeFileAtomic(join(values.out, "objects", `${o.id}.obao`), o.outboard);
  }
  // The manifest last: a directory with a manifest has every object the manifest names.
  await writeFileAtomic(join(values.out, "manifest.json"), envelope);
  io.stdout.write(`${values.name} ${values.version} build ${build}: ${files.length} file(s) in ${values.out}\n`);
  return 0;
}

async function verify(args: string[], io: CliIo): Promise<number> {
  const label = "release verify";
  const { values, positionals } = parseCommandArgs(
    label,
    args,
    { "release-key": { type: "string" }, dir: { type: "string" } },
    true,
  );
  if (positionals.length !== 1) throw usageError(`${label}: expected MANIFEST`);
  if (values["release-key"] === undefined) throw usageError(`${label}: --release-key HEX is required`);
  let payload: Uint8Array;
  try {
    payload = await readFile(positionals[0]!);
  } catch (err) {
    throw new CliError(`${label}: cannot read ${positionals[0]}: ${systemErrorText(err) ?? errorMessage(err)}`);
  }
  let opened;
  try {
    opened = openManifest(payload, values["release-key"]);
  } catch (err) {
    throw usageError(`${label}: --release-key: ${errorMessage(err)}`);
  }
  if (!opened.ok) {
    io.stdout.write(`problem: ${opened.reason}\n`);
    return 1;
  }
  const m = opened.manifest;
  const problems: string[] = [];
  if (values.dir !== undefined) {
    for (const f of m.files) {
      let data: Uint8Array;
      try {
        data = await readFile(join(values.dir, "objects", f.blake3));
      } catch (err) {
        problems.push(`${f.path}: object ${f.blake3}: ${systemErrorText(err) ?? errorMessage(err)}`);
        continue;
      }
      if (data.length !== f.length) problems.push(`${f.path}: ${data.length} bytes, the manifest says ${f.length}`);
      else if (toHex(blake3(data)) !== f.blake3) problems.push(`${f.path}: its bytes do not hash to ${f.blake3}`);
    }
  }
  for (const p of problems) io.stdout.write(`problem: ${p}\n`);
  io.stdout.write(
    `${problems.length === 0 ? "ok" : `${problems.length} problem(s)`}: ${m.name} ${m.version} build ${m.build}, ` +
      `${m.files.length} file(s)${values.dir === undefined ? " (objects not checked: no --dir)" : ""}\n`,
  );
  return problems.length === 0 ? 0 : 1;
}
