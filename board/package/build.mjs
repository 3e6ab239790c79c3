#!/usr/bin/env node
// `npm run package`: the packages for a box's first install (issue 13, item 6), from dist/sharenode.js (npm run
// build first) and board/install/:
//   dist/packages/sharenode_<version>_all.deb   Debian, Armbian, Raspberry Pi OS (armhf, arm64; the bundle is
//                                               JavaScript, so one package serves every architecture)
//   dist/packages/sharenode_<version>_all.ipk   OpenWrt (opkg)
// Both carry the bundle, the launcher and install.sh under /usr/lib/sharenode, and the service files where each
// system keeps a package's (/lib/systemd/system and /lib/udev/rules.d; /etc/init.d). Their postinst runs
// `install.sh --package`, which lays out what install.sh always does (the user, /opt/sharenode's release slots and
// `current`, the state directory, the config when one is given later) from the packaged bundle. Needs dpkg-deb
// (Debian's dpkg) for the .deb, tar and gzip for the .ipk.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, copyFileSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const INSTALL = join(ROOT, "board/install");
const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
const VERSION = pkg.version;
const OUT = process.argv[2] ?? join(ROOT, "dist/packages");
const BUNDLE = join(ROOT, "dist/sharenode.js");
const MAINTAINER = "sharenode developers <sharenode@users.noreply.github.com>";
const INSTALL_FILES = [
  "install.sh",
  "launcher.sh",
  "sharenode.service",
  "sharenode-console@.service",
  "70-sharenode.rules",
  "sharenode.init",
];

function fail(message) {
  console.error(`package: ${message}`);
  process.exit(1);
}

function run(cmd, args, options = {}) {
  const r = spawnSync(cmd, args, { encoding: "utf8", ...options });
  if (r.error) fail(`${cmd}: ${r.error.message}${r.error.code === "ENOENT" ? " (apt-get install dpkg)" : ""}`);
  if (r.status !== 0) fail(`${cmd} ${args.join(" ")}: ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

function put(stage, path, from, mode) {
  const to = join(stage, path);
  mkdirSync(dirname(to), { recursive: true, mode: 0o755 });
  copyFileSync(from, to);
  chmodSync(to, mode);
}

function write(stage, path, text, mode = 0o644) {
  const to = join(stage, path);
  mkdirSync(dirname(to), { recursive: true, mode: 0o755 });
  writeFileSync(to, text);
  chmodSync(to, mode);
}

/** What both packages hold under /usr/lib/sharenode. */
function common(stage) {
  put(stage, "usr/lib/sharenode/sharenode.js", BUNDLE, 0o755);
  // The bundle is an ES module named .js: Node before 20.19 (20.11 is the newest armv7l build) needs this.
  write(stage, "usr/lib/sharenode/package.json", '{ "type": "module" }\n');
  put(stage, "usr/lib/sharenode/launcher.sh", join(INSTALL, "launcher.sh"), 0o755);
  for (const f of INSTALL_FILES)
    put(stage, `usr/lib/sharenode/install/${f}`, join(INSTALL, f), /\.(sh|init)$/.test(f) ? 0o755 : 0o644);
}

const COPYRIGHT = `Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: sharenode
Source: https://github.com/sharenode/sharenode

Files: *
Copyright: 2026 sharenode developers
License: Expat
 Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
 associated documentation files (the "Software"), to deal in the Software without restriction, including
 without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
 copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the
 following conditions:
 .
 The above copyright notice and this permission notice shall be included in all copies or substantial
 portions of the Software.
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT
 LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO
 EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN
 AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE
 OR OTHER DEALINGS IN THE SOFTWARE.
`;

const DESCRIPTION = `Description: agent for home sharing boxes
 sharenode runs on a home sharing box (a OneThing Cloud class ARM box, a TV
 box, a Raspberry Pi): it keeps content on the box's disk named by its BLAKE3
 hash, proves storage with Merkle paths, serves it against signed orders and
 client receipts, keeps a signed ledger of the work done, reports over MQTT,
 and updates itself over the air with a health-gated commit and rollback.
 .
 After installing, give the data disk, the broker and the fleet key:
 sh /usr/lib/sharenode/install/install.sh --data-dir DIR --broker URL
 --fleet-key HEX
`;

// Maintainer scripts: install.sh does the work (the same steps as a hand install); DPKG_ROOT / IPKG_INSTROOT are an
// install into another root (an image, a test), where no user is made and nothing is started.
const DEB_POSTINST = `#!/bin/sh
set -e
if [ "$1" = configure ]; then
	root=\${DPKG_ROOT:-}
	sh "$root/usr/lib/sharenode/install/install.sh" --package --root "\${root:-/}" --bundle "$root/usr/lib/sharenode/sharenode.js"
fi
`;

const DEB_PRERM = `#!/bin/sh
set -e
if [ "$1" = remove ] && [ -z "\${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
	deb-systemd-invoke stop sharenode.service >/dev/null || true
fi
`;

const DEB_POSTRM = `#!/bin/sh
set -e
root=\${DPKG_ROOT:-}
if [ "$1" = remove ] || [ "$1" = purge ]; then
	rm -f "$root/etc/systemd/system/multi-user.target.wants/sharenode.service"
	rm -rf "$root/etc/systemd/system/sharenode.service.d" "$root/opt/sharenode"
fi
# Purge: the config, and the state with the device key (the box's identity).
if [ "$1" = purge ]; then
	rm -rf "$root/etc/sharenode" "$root/var/lib/sharenode"
fi
`;

function buildDeb() {
  const stage = join(OUT, "deb-root");
  rmSync(stage, { recursive: true, force: true });
  common(stage);
  put(stage, "lib/systemd/system/sharenode.service", join(INSTALL, "sharenode.service"), 0o644);
  put(stage, "lib/systemd/system/sharenode-console@.service", join(INSTALL, "sharenode-console@.service"), 0o644);
  put(stage, "lib/udev/rules.d/70-sharenode.rules", join(INSTALL, "70-sharenode.rules"), 0o644);
  write(stage, "usr/share/doc/sharenode/copyright", COPYRIGHT);
  const changelog = `sharenode (${VERSION}) unstable; urgency=medium\n\n  * Release ${VERSION}.\n\n -- ${MAINTAINER}  Sat, 05 Dec 2026 00:00:00 +0000\n`;
  mkdirSync(join(stage, "usr/share/doc/sharenode"), { recursive: true });
  writeFileSync(join(stage, "usr/share/doc/sharenode/changelog.gz"), gzipSync(changelog, { level: 9 }));
  chmodSync(join(stage, "usr/share/doc/sharenode/changelog.gz"), 0o644);
  const installedKb = Math.ceil(duSync(stage) / 1024);
  write(
    stage,
    "DEBIAN/control",
    `Package: sharenode\nVersion: ${VERSION}\nArchitecture: all\nMaintainer: ${MAINTAINER}\n` +
      `Installed-Size: ${installedKb}\nDepends: nodejs (>= 20), passwd\nSection: net\nPriority: optional\n` +
      `Homepage: https://github.com/sharenode/sharenode\n${DESCRIPTION}`,
  );
  // md5sums of every file (dpkg --verify reads them), before the control files join the tree.
  const sums = run("find", [".", "-type", "f", "-not", "-path", "./DEBIAN/*", "-printf", "%P\\n"], { cwd: stage })
    .split("\n")
    .filter(Boolean)
    .sort()
    .map(
      (f) =>
        `${createHash("md5")
          .update(readFileSync(join(stage, f)))
          .digest("hex")}  ${f}`,
    )
    .join("\n");
  write(stage, "DEBIAN/postinst", DEB_POSTINST, 0o755);
  write(stage, "DEBIAN/md5sums", `${sums}\n`);
  write(stage, "DEBIAN/prerm", DEB_PRERM, 0o755);
  write(stage, "DEBIAN/postrm", DEB_POSTRM, 0o755);
  const deb = join(OUT, `sharenode_${VERSION}_all.deb`);
  run("dpkg-deb", ["--root-owner-group", "-Zxz", "--build", stage, deb]);
  rmSync(stage, { recursive: true, force: true });
  return deb;
}

const IPK_POSTINST = `#!/bin/sh
# IPKG_INSTROOT: an install into an image being built (no user, nothing started).
sh "\${IPKG_INSTROOT}/usr/lib/sharenode/install/install.sh" --package --root "\${IPKG_INSTROOT:-/}" --bundle "\${IPKG_INSTROOT}/usr/lib/sharenode/sharenode.js"
`;

const IPK_PRERM = `#!/bin/sh
[ -n "\${IPKG_INSTROOT}" ] || { /etc/init.d/sharenode stop; /etc/init.d/sharenode disable; } 2>/dev/null
exit 0
`;

function buildIpk() {
  const work = join(OUT, "ipk-work");
  rmSync(work, { recursive: true, force: true });
  const data = join(work, "data");
  common(data);
  put(data, "etc/init.d/sharenode", join(INSTALL, "sharenode.init"), 0o755);
  const control = join(work, "control");
  write(
    control,
    "control",
    `Package: sharenode\nVersion: ${VERSION}\nArchitecture: all\nMaintainer: ${MAINTAINER}\n` +
      `Depends: node\nSection: net\nInstalled-Size: ${duSync(data)}\n${DESCRIPTION.replace(/^ \.\n/m, "")}`,
  );
  write(control, "postinst", IPK_POSTINST, 0o755);
  write(control, "prerm", IPK_PRERM, 0o755);
  const tar = (dir, out) =>
    run("tar", ["--owner=0", "--group=0", "--numeric-owner", "--sort=name", "-czf", out, "-C", dir, "."]);
  tar(data, join(work, "data.tar.gz"));
  tar(control, join(work, "control.tar.gz"));
  writeFileSync(join(work, "debian-binary"), "2.0\n");
  const ipk = join(OUT, `sharenode_${VERSION}_all.ipk`);
  // opkg reads an ipk as a gzipped tar of the three members (the format OpenWrt's ipkg-build writes).
  run("tar", [
    "--owner=0",
    "--group=0",
    "--numeric-owner",
    "-czf",
    ipk,
    "-C",
    work,
    "./debian-binary",
    "./data.tar.gz",
    "./control.tar.gz",
  ]);
  rmSync(work, { recursive: true, force: true });
  return ipk;
}

function duSync(dir) {
  const out = run("du", ["-sb", dir]);
  return Number(out.split(/\s/)[0]);
}

try {
  statSync(BUNDLE);
} catch {
  fail(`${BUNDLE} is missing: run npm run build first`);
}
mkdirSync(OUT, { recursive: true });
for (const made of [buildDeb(), buildIpk()]) console.log(`package: ${made} (${statSync(made).size} bytes)`);
