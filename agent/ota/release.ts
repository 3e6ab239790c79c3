// Releases (issue 13): what a box may install, named by content. A manifest lists the release's files by BLAKE3 id
// and length, with the release's name, semver version and build number (monotonic: what anti-rollback compares),
// and is signed by the release key: Ed25519, apart from the fleet's command key, so that a stolen command key
// cannot ship code. Every file is an object (agent/store): boxes fetch it like any task, verified as it arrives,
// from the origin or from other boxes.
//
// Envelope: `{"body":"<JSON>","sig":"<base64>"}` signed over "sharenode release v1\n" || UTF-8(body), the envelope
// of commands, orders and statements (agent/protocol/envelope.ts).
import { fieldsDefect, openEnvelope, publicKeyOption, sealEnvelope, type Signer } from "../protocol/envelope.js";
import { describeType, describeValue } from "../util/describe.js";
import { isPlainObject, isUint } from "../util/guards.js";

export const RELEASE_DOMAIN = "sharenode release v1\n";
const RELEASE_DOMAIN_BYTES = new TextEncoder().encode(RELEASE_DOMAIN);
export const MAX_MANIFEST_BYTES = 64 * 1024;
/** Beside the bundle in every slot: the bundle is an ES module named .js, which Node before 20.19 needs told. */
export const SLOT_PACKAGE_JSON = '{ "type": "module" }\n';
const MAX_FILES = 64;
const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
// semver 2.0.0: MAJOR.MINOR.PATCH, optional pre-release and build metadata.
const SEMVER =
  /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$/;
const HEX_64 = /^[0-9a-f]{64}$/;
/** A relative path inside a release slot: segments of [A-Za-z0-9._-], none of them "." or "..". */
const PATH_SEGMENT = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/;

export interface ReleaseFile {
  /** Where the file goes in the release slot, relative (e.g. "sharenode.js", "systemd/sharenode.service"). */
  path: string;
  blake3: string;
  length: number;
}

export interface Manifest {
  v: 1;
  name: string;
  version: string;
  /** Monotonic across releases of this name: installs and the anti-rollback floor compare it. */
  build: number;
  files: ReleaseFile[];
}

export type OpenedManifest =
  { ok: true; manifest: Manifest } | { ok: false; code: "malformed" | "bad-signature" | "too-large"; reason: string };

/** Signs a manifest with the release key; returns the envelope's bytes. Throws a RangeError naming a bad field. */
export function signManifest(manifest: Omit<Manifest, "v">, releaseSigner: Signer): Uint8Array {
  const body: Manifest = { v: 1, ...manifest };
  const defect = manifestDefect(body);
  if (defect !== undefined) throw new RangeError(defect);
  return sealEnvelope(JSON.stringify(body), RELEASE_DOMAIN_BYTES, releaseSigner);
}

/** Checks a manifest's envelope, its signature under the release key and every field; never throws on the payload. */
export function openManifest(payload: unknown, releasePublicKey: Uint8Array | string): OpenedManifest {
  const key = publicKeyOption(releasePublicKey, "release public key");
  const opened = openEnvelope(payload, MAX_MANIFEST_BYTES, RELEASE_DOMAIN_BYTES, key, "manifest", "release");
  if (!opened.ok) return { ok: false, code: opened.code, reason: opened.reason };
  const defect = manifestDefect(opened.body);
  if (defect !== undefined) return { ok: false, code: "malformed", reason: defect };
  return { ok: true, manifest: opened.body as Manifest };
}

/** The first thing wrong with a manifest body, or undefined. */
export function manifestDefect(value: unknown): string | undefined {
  if (!isPlainObject(value)) return `manifest is ${describeType(value)}, not an object`;
  const shape = fieldsDefect(value, ["v", "name", "version", "build", "files"], "manifest");
  if (shape !== undefined) return shape;
  if (value.v !== 1) return `manifest version ${describeValue(value.v)} is not supported (expected 1)`;
  if (typeof value.name !== "string" || !NAME.test(value.name))
    return `manifest name must be 1..64 of a-z 0-9 . _ - (starting with a letter or digit), got ${describeValue(value.name)}`;
  if (typeof value.version !== "string" || !SEMVER.test(value.version))
    return `manifest version must be semver (MAJOR.MINOR.PATCH), got ${describeValue(value.version)}`;
  if (!isUint(value.build) || value.build === 0)
    return `manifest build must be a positive integer, got ${describeValue(value.build)}`;
  if (!Array.isArray(value.files) || value.files.length === 0 || value.files.length > MAX_FILES)
    return `manifest files must be a list of 1..${MAX_FILES} files`;
  const paths = new Set<string>();
  for (const [i, f] of (value.files as unknown[]).entries()) {
    if (!isPlainObject(f)) return `manifest file ${i} is ${describeType(f)}, not an object`;
    const fshape = fieldsDefect(f, ["path", "blake3", "length"], `manifest file ${i}`);
    if (fshape !== undefined) return fshape;
    const pathDefect = releasePathDefect(f.path);
    if (pathDefect !== undefined) return `manifest file ${i}: ${pathDefect}`;
    if (paths.has(f.path as string)) return `manifest file ${i}: path ${f.path as string} appears twice`;
    paths.add(f.path as string);
    if (typeof f.blake3 !== "string" || !HEX_64.test(f.blake3))
      return `manifest file ${i}: blake3 must be 64 lowercase hex digits`;
    if (!isUint(f.length)) return `manifest file ${i}: length must be a non-negative integer`;
  }
  return undefined;
}

/** Why a release path is not a safe relative path inside a slot, or undefined. */
export function releasePathDefect(path: unknown): string | undefined {
  if (typeof path !== "string" || path.length === 0 || path.length > 255)
    return `path must be 1..255 characters, got ${describeValue(path)}`;
  const segments = path.split("/");
  if (segments.length > 4) return `path ${describeValue(path)} is nested more than 4 deep`;
  for (const s of segments)
    if (!PATH_SEGMENT.test(s) || s === "." || s === "..")
      return `path ${describeValue(path)} must be relative, of segments of A-Z a-z 0-9 . _ - (no "..", no empty segment)`;
  return undefined;
}
