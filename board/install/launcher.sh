#!/bin/sh
# The sharenode launcher: what the service runs (systemd, procd or a plain shell alike). It starts the agent from
# /opt/sharenode/current and is the part of an update (agent/ota) that must work whatever a new release does:
#
#   - A release on trial is marked by /opt/sharenode/trial ("SLOT PREV BUILD TRIES DEADLINE", written by the agent
#     before it switches `current` to SLOT). Each start of it counts a try; a release that stops MAX_TRIES times
#     before it commits goes back to PREV.
#   - While it is on trial the agent runs as a child, watched: no commit (the agent removes the marker) within
#     DEADLINE seconds means it hangs, and it is stopped and rolled back.
#   - The agent asks for a rollback itself (it cannot reach the broker within its gate; the console's `ota
#     rollback`) by writing /opt/sharenode/rollback-request and exiting.
#   - Exit status 75 from the agent means "start me again" (a release was switched to, or a rollback asked for).
#
# A rollback writes /opt/sharenode/rolledback ("BUILD CODE: reason"), which the previous release reads and reports
# (ota.rolledback), switches `current` back with one rename(2), then removes the marker: at every instant a power
# cut leaves something this script finishes on the next start. Not updated over the air (a release's own copy of
# this file stays in its slot): the one piece that rolls back must not be replaced by what it guards against.
# board/install/README.md: the layout; agent/ota/README.md: the whole update.
set -u

ME=sharenode-launcher
OPT=${SHARENODE_OPT:-/opt/sharenode}
NODE=${SHARENODE_NODE:-/usr/bin/node}
# Starts of a trial release before it goes back: one crash may be the power, three are the release.
MAX_TRIES=3
# The agent's "start me again".
RESTART=75

say() { echo "$ME: $*" >&2; }

usage() {
	cat <<'EOF'
Usage: launcher.sh run [AGENT ARGS...]

Run the sharenode agent (node /opt/sharenode/current/sharenode.js AGENT ARGS...), counting the tries of a release
on trial and rolling it back when it crashes, hangs or asks to. Environment: SHARENODE_OPT (the release tree,
default /opt/sharenode), SHARENODE_NODE (default /usr/bin/node). Exit status: the agent's.
EOF
}

# write_atomic FILE TEXT: the file is the old text or the new, never a part (temp, sync, rename).
write_atomic() {
	printf '%s\n' "$2" >"$1.tmp" && sync "$1.tmp" 2>/dev/null
	mv -f "$1.tmp" "$1"
}

# The slot `current` names (A or B), or empty.
current_slot() {
	case $(readlink "$OPT/current" 2>/dev/null) in
	releases/A) echo A ;;
	releases/B) echo B ;;
	esac
}

# switch_current SLOT: one rename(2) over the old link, so `current` names a whole release at every instant.
switch_current() {
	rm -f "$OPT/.current.new"
	ln -s "releases/$1" "$OPT/.current.new" || return 1
	if ! mv -T "$OPT/.current.new" "$OPT/current" 2>/dev/null; then
		# busybox without mv -T: a moment without `current`.
		rm -f "$OPT/.current.new"
		ln -sfn "releases/$1" "$OPT/current" || return 1
	fi
	sync "$OPT" 2>/dev/null || sync
}

# Reads the trial marker into slot prev build tries deadline; false when there is none or it is not one.
read_trial() {
	[ -f "$OPT/trial" ] || return 1
	read -r slot prev build tries deadline <"$OPT/trial" || true
	case "$slot$prev" in AB | BA) ;; *) return 2 ;; esac
	case "${build:-x}${tries:-x}${deadline:-x}" in *[!0-9]*) return 2 ;; esac
	return 0
}

# rollback "CODE: reason": back to the previous slot, the reason left for the previous release to report.
rollback() {
	say "rolling back build $build (slot $slot) to slot $prev: $1"
	write_atomic "$OPT/rolledback" "$build $1"
	switch_current "$prev" || say "cannot switch $OPT/current to releases/$prev"
	rm -f "$OPT/trial" "$OPT/rollback-request" "$OPT/last-exit"
	sync "$OPT" 2>/dev/null || sync
}

# Before each start: a trial release that asked to go back, or used up its tries, goes back; otherwise its try is
# counted. Sets on_trial.
prepare() {
	on_trial=false
	read_trial
	case $? in
	1)
		# Nothing on trial: a request left from an earlier trial means nothing now.
		rm -f "$OPT/rollback-request"
		return
		;;
	2)
		say "$OPT/trial is not a trial marker: removed, the current release runs"
		rm -f "$OPT/trial"
		return
		;;
	esac
	if [ "$(current_slot)" != "$slot" ]; then
		# The agent wrote the marker, then the power went before `current` switched: the old release runs on and
		# switches again.
		rm -f "$OPT/trial"
		return
	fi
	if [ -f "$OPT/rollback-request" ]; then
		rollback "$(head -n 1 "$OPT/rollback-request")"
		return
	fi
	if [ "$tries" -ge "$MAX_TRIES" ]; then
		last=$(cat "$OPT/last-exit" 2>/dev/null)
		rollback "crash: stopped $tries times before it committed${last:+ (last exit status $last)}"
		return
	fi
	tries=$((tries + 1))
	write_atomic "$OPT/trial" "$slot $prev $build $tries $deadline"
	say "build $build (slot $slot) on trial: try $tries of $MAX_TRIES, $deadline s to commit"
	on_trial=true
}

# Watches a trial agent (pid $1): gone or committed (the marker removed) ends the watch; no commit within the
# deadline means it hangs: a rollback is asked for and the agent stopped (SIGKILL 20 s after SIGTERM).
watch_trial() {
	waited=0
	while [ "$waited" -lt "$deadline" ]; do
		sleep 1
		waited=$((waited + 1))
		kill -0 "$1" 2>/dev/null || return 0
		[ -f "$OPT/trial" ] || return 0
	done
	[ -f "$OPT/rollback-request" ] ||
		write_atomic "$OPT/rollback-request" "hang: build $build did not commit within $deadline s"
	say "build $build did not commit within $deadline s: stopping it"
	kill -TERM "$1" 2>/dev/null
	waited=0
	while kill -0 "$1" 2>/dev/null && [ "$waited" -lt 20 ]; do
		sleep 1
		waited=$((waited + 1))
	done
	kill -KILL "$1" 2>/dev/null
	return 0
}

stopping=false
child=''
# SIGTERM and SIGHUP (a service manager stopping the service: systemd with KillMode=mixed and procd signal the main
# process only) go to the agent, once: a second signal makes it exit without its clean stop. SIGINT comes from a
# terminal, which sends it to the whole process group: the agent has it already.
on_signal() {
	stopping=true
	[ -n "$child" ] && [ "$1" != INT ] && kill -TERM "$child" 2>/dev/null
}

# Runs the agent once as a child (so signals reach it and a trial can be watched); sets status.
supervise() {
	"$NODE" "$OPT/current/sharenode.js" "$@" &
	child=$!
	watcher=''
	if $on_trial; then
		watch_trial "$child" </dev/null >/dev/null 2>&1 &
		watcher=$!
	fi
	# wait returns early when a trapped signal arrives: wait again until the agent is gone.
	while :; do
		wait "$child"
		status=$?
		kill -0 "$child" 2>/dev/null || break
	done
	child=''
	[ -n "$watcher" ] && kill "$watcher" 2>/dev/null
	if $on_trial && [ -f "$OPT/trial" ]; then write_atomic "$OPT/last-exit" "$status"; fi
}

case ${1:-} in
run) shift ;;
-h | --help)
	usage
	exit 0
	;;
*)
	usage >&2
	exit 2
	;;
esac

[ -d "$OPT" ] || {
	say "$OPT: no such directory"
	exit 1
}
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP
trap 'on_signal INT' INT
while :; do
	prepare
	if [ -z "$(current_slot)" ]; then
		say "$OPT/current does not name releases/A or releases/B"
		exit 1
	fi
	supervise "$@"
	$stopping && exit "$status"
	# A release on trial that stopped without committing: its next try, or the rollback (prepare decides).
	if $on_trial && [ -f "$OPT/trial" ]; then continue; fi
	# "Start me again" from a committed release: a moment's pause, so a release that asks for it at every start
	# cannot spin the CPU.
	if [ "$status" = "$RESTART" ]; then
		$on_trial || sleep 1
		continue
	fi
	exit "$status"
done
