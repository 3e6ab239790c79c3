#!/bin/sh
# Installs the sharenode agent on a box, or into a directory tree (--root) that becomes a box's filesystem.
# POSIX sh and the tools of Debian, Armbian and OpenWrt's busybox. Running it again is safe: the owner's config is
# never touched, the same bundle changes nothing, and a new bundle goes into the other release slot.
# The layout, the slots and installing by hand: README.md beside this file.
set -eu

ME=install.sh
USER_NAME=sharenode
OPT=/opt/sharenode
# The launcher the service runs (launcher.sh): root's, outside the tree the agent writes, so no release replaces it.
LAUNCHER=/usr/lib/sharenode/launcher.sh
CONFIG=/etc/sharenode/config.json
NODE=/usr/bin/node

usage() {
	cat <<'EOF'
Usage: install.sh [--root DIR] [--bundle PATH] [--data-dir DIR] [--broker URL] [--fleet-key HEX] [--package]

Install the sharenode agent: the bundle into a release slot of /opt/sharenode (then `current` switches to it),
/etc/sharenode/config.json (only when there is none yet), the state and data directories, the user sharenode,
the systemd unit, the udev rule that gives sharenode the status LEDs and the hardware watchdog, and the serial
console's unit, not enabled (on OpenWrt: the procd init script), then start the service.

Options:
  --root DIR        install into DIR instead of / (an image or a test): no user, no owners, no service start
  --bundle PATH     the agent bundle (default: sharenode.js beside this script, else ../../dist/sharenode.js)
  --data-dir DIR    the data directory on the data disk (store.dataDir), e.g. /mnt/usb/sharenode
  --broker URL      the fleet's MQTT broker (link.url): mqtt://, mqtts://, ws:// or wss://, no user or password
  --fleet-key HEX   the fleet's Ed25519 public key (link.fleetPublicKey), 64 hex digits
  --package         run from a package's postinst (board/package): the unit files, the udev rule, the init
                    script and the launcher are the package's (not copied); with no config yet and no options,
                    the rest is done and the service waits for a config instead of failing
  -h, --help        show this help

--data-dir, --broker and --fleet-key are needed the first time, to write the config; later runs read the data
directory from it. Exit status: 0 done, 1 failure, 2 bad command line.
EOF
}

say() { echo "$ME: $*"; }
warn() { echo "$ME: warning: $*" >&2; }
die() {
	echo "$ME: $1" >&2
	exit "${2:-1}"
}
bad() { die "$1 (see install.sh --help)" 2; }

# --- the command line: every check before the first change ---------------------------------------------------

root=/ bundle='' data_dir='' broker='' fleet_key='' package=false
while [ $# -gt 0 ]; do
	case $1 in
	-h | --help)
		usage
		exit 0
		;;
	--package)
		package=true
		shift
		continue
		;;
	--root | --bundle | --data-dir | --broker | --fleet-key)
		[ $# -ge 2 ] || bad "$1 needs a value"
		opt=$1 val=$2
		shift 2
		;;
	--root=* | --bundle=* | --data-dir=* | --broker=* | --fleet-key=*)
		opt=${1%%=*} val=${1#*=}
		shift
		;;
	*) bad "unknown option '$1'" ;;
	esac
	case $val in
	'' | --*) bad "$opt needs a value" ;;
	esac
	case $opt in
	--root) root=$val ;;
	--bundle) bundle=$val ;;
	--data-dir) data_dir=$val ;;
	--broker) broker=$val ;;
	--fleet-key) fleet_key=$val ;;
	esac
done

[ -d "$root" ] || bad "--root $root: not a directory"
root=$(cd "$root" && pwd -P)
# R prefixes every path of the installed system: empty for /.
R=${root%/}
live=false
[ -z "$R" ] && live=true
if $live && [ "$(id -u)" != 0 ]; then
	die "installing into / needs root: run it with sudo, or give --root DIR" 2
fi

here=$(cd "$(dirname "$0")" && pwd -P)
if [ -z "$bundle" ]; then
	if [ -f "$here/sharenode.js" ]; then bundle=$here/sharenode.js; else bundle=$here/../../dist/sharenode.js; fi
fi
[ -f "$bundle" ] || bad "--bundle $bundle: no such file"
[ -r "$bundle" ] || bad "--bundle $bundle: not readable"
[ -s "$bundle" ] || bad "--bundle $bundle: empty file"
for f in sharenode.service sharenode-console@.service 70-sharenode.rules sharenode.init launcher.sh; do
	[ -f "$here/$f" ] || die "$here/$f is missing: run install.sh from its own directory's copy (board/install/)"
done

# Paths go into JSON and systemd unit files unquoted: only characters that need no escaping in either.
check_path() { # OPTION VALUE
	case $2 in
	/*) ;;
	*) bad "$1 $2: must be an absolute path" ;;
	esac
	case $2 in
	*[!A-Za-z0-9._/+:@=,-]*) bad "$1 $2: only letters, digits and ._/+:@=,- are allowed" ;;
	esac
	[ "${2%/}" != "" ] || bad "$1 $2: not the root directory"
}
[ -z "$data_dir" ] || {
	check_path --data-dir "$data_dir"
	data_dir=${data_dir%/}
}

if [ -n "$broker" ]; then
	case $broker in
	mqtt://?* | mqtts://?* | ws://?* | wss://?*) ;;
	*) bad "--broker $broker: must be a mqtt://, mqtts://, ws:// or wss:// URL" ;;
	esac
	case $broker in
	*[!A-Za-z0-9._~:/?#@!\$\&\(\)*+,\;=%[\]-]*) bad "--broker $broker: not a URL (a space, quote or backslash)" ;;
	esac
	authority=${broker#*://}
	authority=${authority%%/*}
	case $authority in
	*@*) bad "--broker: must not carry a user or password (config.get would show them): set link.username and link.password in the config" ;;
	'' | :*) bad "--broker $broker: no host" ;;
	esac
fi

if [ -n "$fleet_key" ]; then
	case $fleet_key in
	*[!0-9A-Fa-f]*) bad "--fleet-key: must be 64 hex digits, got a non-hex character" ;;
	esac
	[ ${#fleet_key} -eq 64 ] || bad "--fleet-key: must be 64 hex digits, got ${#fleet_key}"
	fleet_key=$(echo "$fleet_key" | tr 'A-F' 'a-f')
fi

# OpenWrt's /var is a tmpfs: the state (the device key: the box's identity) lives on the overlay instead.
openwrt=false
[ -f "$R/etc/openwrt_release" ] && openwrt=true
if $openwrt; then state_dir=/etc/sharenode/state; else state_dir=/var/lib/sharenode; fi

# An existing config is the owner's: it is kept, and it says where the data directory is.
config_created=false
config_deferred=false
if [ -e "$R$CONFIG" ]; then
	[ -f "$R$CONFIG" ] || die "$R$CONFIG exists but is not a file"
	config_data=$(tr '\n' ' ' <"$R$CONFIG" | sed -n 's/.*"dataDir"[[:space:]]*:[[:space:]]*"\([^"\\]*\)".*/\1/p')
	if [ -n "$data_dir" ] && [ -n "$config_data" ] && [ "$data_dir" != "${config_data%/}" ]; then
		bad "--data-dir $data_dir: the config $R$CONFIG has store.dataDir $config_data; edit the config, or leave out --data-dir"
	fi
	[ -n "$data_dir" ] || data_dir=${config_data%/}
	for given in ${broker:+--broker} ${fleet_key:+--fleet-key}; do
		warn "$given not applied: $R$CONFIG exists and is kept (edit it by hand)"
	done
	[ -n "$data_dir" ] || warn "no store.dataDir in $R$CONFIG: the data directory is not created, and the service may not write it"
	if [ -n "$data_dir" ]; then
		case $data_dir in
		/*[!A-Za-z0-9._/+:@=,-]* | [!/]*) die "store.dataDir $data_dir in $R$CONFIG: give install.sh a path of letters, digits and ._/+:@=,- only" ;;
		esac
	fi
else
	missing=''
	[ -n "$broker" ] || missing="$missing --broker"
	[ -n "$fleet_key" ] || missing="$missing --fleet-key"
	[ -n "$data_dir" ] || missing="$missing --data-dir"
	if [ -n "$missing" ]; then
		$package || bad "no config yet at $R$CONFIG: give${missing} to write one"
		# A package installs before anyone could give options: the config comes later, and the service with it.
		[ "$missing" = " --broker --fleet-key --data-dir" ] || bad "no config yet at $R$CONFIG: give${missing} to write one"
		config_deferred=true
	fi
fi

# --- the user --------------------------------------------------------------------------------------------------

if $live; then
	if ! id "$USER_NAME" >/dev/null 2>&1; then
		if command -v useradd >/dev/null 2>&1; then
			useradd --system --user-group --home-dir "$state_dir" --no-create-home --shell /usr/sbin/nologin \
				--comment "sharenode agent" "$USER_NAME"
		elif [ -f /lib/functions.sh ]; then
			# OpenWrt: the helpers its packages use (uid and gid from 65536 up).
			(
				set +eu
				# shellcheck source=/dev/null
				. /lib/functions.sh
				gid=$(group_add_next "$USER_NAME") && user_add "$USER_NAME" "" "$gid" "sharenode agent" "$state_dir" /bin/false
			) || die "could not create the user $USER_NAME"
		elif command -v adduser >/dev/null 2>&1; then
			addgroup -S "$USER_NAME" && adduser -S -D -H -h "$state_dir" -s /bin/false -G "$USER_NAME" "$USER_NAME"
		else
			die "cannot create the user $USER_NAME: no useradd or adduser here; create it, then run install.sh again"
		fi
		say "created the system user $USER_NAME"
	fi
else
	say "--root is not /: not creating the system user $USER_NAME (on the box: useradd --system --user-group" \
		"--home-dir $state_dir --shell /usr/sbin/nologin $USER_NAME), not changing owners (root:$USER_NAME" \
		"/etc/sharenode and config.json; $USER_NAME:$USER_NAME $state_dir${data_dir:+ and $data_dir})"
fi

# --- directories -----------------------------------------------------------------------------------------------

mkdir -p "$R$OPT/releases/A" "$R$OPT/releases/B"
chmod 0755 "$R$OPT" "$R$OPT/releases" "$R$OPT/releases/A" "$R$OPT/releases/B"
# The agent installs updates itself (agent/ota): the release tree is its own. The launcher, which rolls a bad
# release back, is root's and outside it.
if $live; then chown -R "$USER_NAME:$USER_NAME" "$OPT"; fi

mkdir -p "$R/etc/sharenode"
chmod 0750 "$R/etc/sharenode"
mkdir -p "$R$state_dir"
chmod 0700 "$R$state_dir"
if $live; then
	chown "root:$USER_NAME" /etc/sharenode
	chown "$USER_NAME:$USER_NAME" "$state_dir"
fi

if [ -n "$data_dir" ]; then
	if [ ! -d "$R$data_dir" ]; then
		mkdir -p "$R$data_dir"
		chmod 0750 "$R$data_dir" || warn "cannot chmod $data_dir"
		say "created the data directory $R$data_dir"
	fi
	if $live; then
		chown "$USER_NAME:$USER_NAME" "$data_dir" ||
			warn "cannot give $data_dir to $USER_NAME: on vfat or exFAT, mount the disk with uid=$USER_NAME,gid=$USER_NAME"
		data_dev=$(stat -c %d "$data_dir" 2>/dev/null || true)
		if [ -n "$data_dev" ] && [ "$data_dev" = "$(stat -c %d / 2>/dev/null || true)" ]; then
			warn "$data_dir is on the root filesystem: the agent refuses it (store.allowSystemDisk); mount the data disk first"
		fi
	fi
fi

# --- node ------------------------------------------------------------------------------------------------------

node_ok=false
if $live; then
	if [ -x "$NODE" ]; then
		node_version=$("$NODE" -p process.versions.node 2>/dev/null || echo unknown)
		case $node_version in
		[2-9][0-9].* | [1-9][0-9][0-9]*.*) node_ok=true ;;
		*) warn "$NODE is version $node_version: the agent needs Node >= 20 there (README.md: Node)" ;;
		esac
	else
		warn "no $NODE: the agent needs Node >= 20 there (README.md: Node)"
	fi
	if $node_ok; then
		"$NODE" "$bundle" --version >/dev/null 2>&1 || die "$bundle does not run: $NODE $bundle --version failed"
	fi
elif [ ! -e "$R$NODE" ]; then
	say "no $R$NODE in the tree: put Node >= 20 there before the service starts"
fi

# --- the bundle, into the inactive slot, then `current` switches ------------------------------------------------

# `current` is a relative symlink (releases/A or releases/B), so the tree works wherever it is mounted.
current=$R$OPT/current
active=''
if [ -L "$current" ]; then
	case $(readlink "$current") in
	releases/A) active=A ;;
	releases/B) active=B ;;
	*) die "$current points to $(readlink "$current"), not releases/A or releases/B: fix or remove it" ;;
	esac
elif [ -e "$current" ]; then
	die "$current is not a symlink: move it away, then run install.sh again"
fi

switched=false
if [ -n "$active" ] && cmp -s "$bundle" "$R$OPT/releases/$active/sharenode.js"; then
	say "the bundle is already the current release (slot $active)"
	pkg=$R$OPT/releases/$active/package.json
	if [ ! -f "$pkg" ]; then
		echo '{ "type": "module" }' >"$pkg"
		chmod 0644 "$pkg"
		if $live; then chown "$USER_NAME:$USER_NAME" "$pkg"; fi
		switched=true
		say "added $pkg (Node before 20.19 needs it to load the bundle)"
	fi
else
	if [ "$active" = A ]; then slot=B; else slot=A; fi
	target=$R$OPT/releases/$slot/sharenode.js
	# A slot is one release: what an earlier update left there (its manifest, other files) goes.
	rm -rf "$R$OPT/releases/$slot"
	mkdir -p "$R$OPT/releases/$slot"
	chmod 0755 "$R$OPT/releases/$slot"
	cp "$bundle" "$target.new"
	chmod 0644 "$target.new"
	mv -f "$target.new" "$target"
	# The bundle is an ES module named .js: Node before 20.19 (20.11 is the newest armv7l build) reads it as
	# CommonJS unless a package.json beside it says otherwise.
	echo '{ "type": "module" }' >"$R$OPT/releases/$slot/package.json"
	chmod 0644 "$R$OPT/releases/$slot/package.json"
	if $live; then chown -R "$USER_NAME:$USER_NAME" "$R$OPT/releases/$slot"; fi
	# On the disk before `current` names it: a power cut then leaves the old release or the whole new one.
	# (A busybox too old to sync one file syncs them all.)
	sync "$target" "$(dirname "$target")" 2>/dev/null || sync
	rm -f "$R$OPT/.current.new"
	ln -s "releases/$slot" "$R$OPT/.current.new"
	# rename(2) over the old link: `current` names one slot or the other at every instant. -T: without it mv
	# would move the new link into the directory the old one points to. A busybox without -T (before 1.3x)
	# gets `ln -sfn`, which unlinks first: a moment without `current`.
	if ! mv -T "$R$OPT/.current.new" "$current" 2>/dev/null; then
		rm -f "$R$OPT/.current.new"
		ln -sfn "releases/$slot" "$current"
	fi
	# An install by hand ends any update on trial: the owner chose this release.
	rm -f "$R$OPT/trial" "$R$OPT/rollback-request" "$R$OPT/last-exit"
	sync "$R$OPT" 2>/dev/null || sync
	switched=true
	say "installed the bundle into slot $slot; $OPT/current -> releases/$slot${active:+ (slot $active keeps the previous release)}"
fi

# --- the config (only when there is none) ----------------------------------------------------------------------

if $config_deferred; then
	say "no config yet: the service starts once there is one: sh $here/install.sh --data-dir DIR --broker URL --fleet-key HEX"
elif [ ! -e "$R$CONFIG" ]; then
	tmp=$R$CONFIG.new
	(
		umask 027
		cat >"$tmp" <<EOF
{
  "stateDir": "$state_dir",
  "link": {
    "url": "$broker",
    "fleetPublicKey": "$fleet_key"
  },
  "store": {
    "dataDir": "$data_dir"
  }
}
EOF
	)
	chmod 0640 "$tmp"
	if $live; then chown "root:$USER_NAME" "$tmp"; fi
	sync "$tmp" 2>/dev/null || sync
	mv -f "$tmp" "$R$CONFIG"
	config_created=true
	say "wrote $R$CONFIG (mode 0640); the keys: agent/config/README.md"
else
	say "kept the existing $R$CONFIG"
fi

# --- the service -----------------------------------------------------------------------------------------------

# Copies SRC to DEST (atomically, with MODE) unless DEST is the same already; true when it wrote. Called as an
# `if` condition, where set -e is off: every step checks for itself.
install_file() { # SRC DEST MODE
	if [ -f "$2" ] && cmp -s "$1" "$2"; then
		chmod "$3" "$2" || die "cannot chmod $2"
		return 1
	fi
	{ mkdir -p "$(dirname "$2")" && cp "$1" "$2.new" && chmod "$3" "$2.new" && mv -f "$2.new" "$2"; } ||
		die "cannot write $2"
}

# A symlink NAME -> TARGET, replaced only when it differs.
link() { # TARGET NAME
	[ -L "$2" ] && [ "$(readlink "$2")" = "$1" ] && return 0
	mkdir -p "$(dirname "$2")"
	rm -f "$2"
	ln -s "$1" "$2"
}

# The launcher: what the service runs (it counts a new release's tries and rolls a bad one back). A package ships it.
launcher_changed=$package
if ! $package && install_file "$here/launcher.sh" "$R$LAUNCHER" 0755; then
	launcher_changed=true
	say "installed the launcher $R$LAUNCHER"
fi

service_changed=$launcher_changed
rules_changed=false
console_changed=false
# A package's unit files, udev rule and init script are its own (/lib/systemd/system, /lib/udev/rules.d,
# /etc/init.d from the package): only enabled here.
sys_units=/etc/systemd/system
$package && sys_units=/lib/systemd/system
if $openwrt; then
	if ! $package && install_file "$here/sharenode.init" "$R/etc/init.d/sharenode" 0755; then service_changed=true; fi
	what=$R/etc/init.d/sharenode
	# What `/etc/init.d/sharenode enable` does, without running the tree's rc.common.
	start=$(sed -n 's/^START=\([0-9]*\)$/\1/p' "$here/sharenode.init")
	stop=$(sed -n 's/^STOP=\([0-9]*\)$/\1/p' "$here/sharenode.init")
	link ../init.d/sharenode "$R/etc/rc.d/S${start}sharenode"
	link ../init.d/sharenode "$R/etc/rc.d/K${stop}sharenode"
	# sysupgrade keeps the config and the device key (the box's identity); /opt and node are installed again.
	keep=$R/lib/upgrade/keep.d/sharenode
	mkdir -p "$(dirname "$keep")"
	echo /etc/sharenode/ >"$keep.tmp"
	if install_file "$keep.tmp" "$keep" 0644; then :; fi
	rm -f "$keep.tmp"
else
	unit_dir=$R/etc/systemd/system
	if ! $package && install_file "$here/sharenode.service" "$unit_dir/sharenode.service" 0644; then
		service_changed=true
	fi
	what=$R$sys_units/sharenode.service${data_dir:+ (+ $unit_dir/sharenode.service.d/data-dir.conf)}
	if [ -n "$data_dir" ]; then
		mkdir -p "$unit_dir/sharenode.service.d"
		dropin=$unit_dir/sharenode.service.d/data-dir.conf
		cat >"$dropin.tmp" <<EOF
# Written by install.sh: the data directory (store.dataDir in $CONFIG), the only place on the data disk the
# agent may write. "-": a disk that is not mounted leaves the path out, and the agent fails instead of writing
# to the system flash.
[Service]
ReadWritePaths=-$data_dir
EOF
		if install_file "$dropin.tmp" "$dropin" 0644; then service_changed=true; fi
		rm -f "$dropin.tmp"
	fi
	# What `systemctl enable` does, without a running systemd.
	link "$sys_units/sharenode.service" "$unit_dir/multi-user.target.wants/sharenode.service"
fi
if $service_changed; then say "installed $what, enabled"; else say "$what: already installed and enabled"; fi

if ! $openwrt; then
	# The status LED's sysfs files and /dev/watchdog to the group sharenode (the init script does it on OpenWrt).
	rules=$R/etc/udev/rules.d/70-sharenode.rules
	if $package; then
		rules_changed=true
		rules=$R/lib/udev/rules.d/70-sharenode.rules
		say "$rules: the package's"
	elif install_file "$here/70-sharenode.rules" "$rules" 0644; then
		rules_changed=true
		say "installed $rules: the status LEDs and the hardware watchdog to the group $USER_NAME"
	else
		say "$rules: already installed"
	fi

	# The serial console: installed, not enabled (which line is the console is the board's).
	console_unit=$R$sys_units/sharenode-console@.service
	if $package; then
		console_changed=true
		console_said="$console_unit: the package's"
	elif install_file "$here/sharenode-console@.service" "$console_unit" 0644; then
		console_changed=true
		console_said="installed $console_unit"
	else
		console_said="$console_unit: already installed"
	fi
	console_enabled=false
	for l in "$unit_dir"/*.wants/sharenode-console@?*.service; do
		if [ -L "$l" ]; then console_enabled=true; fi
	done
	if $console_enabled; then
		say "$console_said"
	else
		say "$console_said, not enabled: for the diagnostics console on the serial line, systemctl enable --now" \
			"sharenode-console@ttyAML0 (or @ttyS0: the line is the board's; the console's board command names it)"
	fi
fi

# Live: udev applies the new rule now, to the LEDs and watchdogs already there (a box applies it at every boot).
if $live && $rules_changed; then
	if ! command -v udevadm >/dev/null 2>&1; then
		warn "no udevadm: the rule applies from the next boot (the status LED and the watchdog stay root's until then)"
	elif udevadm control --reload &&
		udevadm trigger --action=change --subsystem-match=leds &&
		# /dev/watchdogN is class "watchdog"; /dev/watchdog, the first one's legacy name, is a "misc" device.
		udevadm trigger --action=add --subsystem-match=watchdog --subsystem-match=misc --sysname-match='watchdog*' &&
		udevadm settle --timeout=10; then
		say "udev applied the rule to the LEDs and watchdogs present"
	else
		warn "udevadm failed: the rule applies from the next boot (or run the udevadm commands in README.md: By hand)"
	fi
elif ! $live && ! $openwrt; then
	say "--root is not /: udev applies the rule when the box boots"
fi

# --- start -----------------------------------------------------------------------------------------------------

if ! $live; then
	say "--root is not /: no service started"
	exit 0
fi
if ! $node_ok; then
	say "not started: install Node >= 20 as $NODE first"
	exit 0
fi
if $config_deferred; then
	say "not started: no config yet"
	exit 0
fi
# A new rule: the agent opens the LEDs and the watchdog again, now that it may write them.
if $switched || $service_changed || $config_created || $rules_changed; then action=restart; else action=start; fi
if $openwrt; then
	/etc/init.d/sharenode "$action"
	say "sharenode ${action}ed; its log: logread -e sharenode"
elif [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload
	systemctl "$action" sharenode.service
	say "sharenode ${action}ed; its log: journalctl -u sharenode -f"
	# Enabled consoles run the bundle too: the new release or unit, from the next person on.
	if $switched || $console_changed; then
		systemctl try-restart 'sharenode-console@*.service' || warn "could not restart the serial console"
	fi
else
	say "systemd is not running here: not started (on the box: systemctl start sharenode)"
fi
