// Whether a box takes an offered release (issue 13, item 2, step 1), before a byte is fetched: the manifest is the
// release key's, for this software, newer than what runs, at or above the anti-rollback floor (which rises on each
// commit, so a signed but old release cannot be replayed: RAUC's min-bundle-version, SWUpdate's no-downgrade), and
// its files fit beside the running slot. A refusal carries a code for the `ota.refused` event and one line.
import { openManifest, type Manifest } from "./release.js";

export type OfferRefusal = "bad-manifest" | "bad-signature" | "wrong-name" | "not-newer" | "below-floor" | "no-space";

export interface OfferContext {
  releasePublicKey: Uint8Array | string;
  /** The software's name (manifests for another name are refused). */
  name: string;
  /** The build running now (0 before the first install). */
  installedBuild: number;
  /** The anti-rollback floor: the lowest build ever to be installed again. */
  floor: number;
  /** Bytes free for the inactive slot. */
  freeBytes: number;
}

export type OfferDecision =
  { ok: true; manifest: Manifest; bytes: number } | { ok: false; code: OfferRefusal; reason: string };

export function checkOffer(payload: unknown, ctx: OfferContext): OfferDecision {
  const opened = openManifest(payload, ctx.releasePublicKey);
  if (!opened.ok)
    return {
      ok: false,
      code: opened.code === "bad-signature" ? "bad-signature" : "bad-manifest",
      reason: opened.reason,
    };
  const m = opened.manifest;
  if (m.name !== ctx.name)
    return { ok: false, code: "wrong-name", reason: `release of ${m.name}, this is ${ctx.name}` };
  if (m.build <= ctx.installedBuild)
    return {
      ok: false,
      code: "not-newer",
      reason: `build ${m.build} (${m.version}) is not above the installed build ${ctx.installedBuild}`,
    };
  if (m.build < ctx.floor)
    return { ok: false, code: "below-floor", reason: `build ${m.build} is below the anti-rollback floor ${ctx.floor}` };
  const bytes = m.files.reduce((sum, f) => sum + f.length, 0);
  if (bytes > ctx.freeBytes)
    return { ok: false, code: "no-space", reason: `the release needs ${bytes} bytes, ${ctx.freeBytes} are free` };
  return { ok: true, manifest: m, bytes };
}
