#!/bin/bash
# The README's walkthrough, run as written (issue 5).
# README.md holds a ```sh block between the lines <!-- walkthrough:begin --> and
# <!-- walkthrough:end -->: init, keygen, mount a master and a slave, write on the master,
# read on the slave, status, the master goes away, the slave is promoted.  This test
#  1. extracts that block and checks it stays on one machine: every absolute path is
#     under /tmp/replfs-demo, every URL and --listen address is on 127.0.0.1/localhost
#  2. runs it with `bash -e -o pipefail`, `replfs` on PATH as a link to $REPLFS, from an
#     empty /tmp/replfs-demo (refuses to start when that exists or its ports are taken)
#  3. checks the outcome on the stores it made, once everything is unmounted: two
#     stores; one (the promoted slave) at a higher epoch than the other; every entry of
#     the old master's tree is in the new master's, identical (treedump: type, mode,
#     owner, size, content, xattrs), and the new master holds more (written after the
#     failover)
# Cleanup even on failure: whatever is mounted under /tmp/replfs-demo is unmounted, the
# daemons in its stores' pid files are stopped, /tmp/replfs-demo is removed (only when
# this test created it).  Runs in ~10 s.
: "${E2E_TIMEOUT:=180}"
export E2E_TIMEOUT
source "$(dirname "$0")/lib.sh"
e2e_setup
SRC="${REPLFS_SRC:-$(cd "$E2E_DIR/../.." && pwd)}"
DEMO=/tmp/replfs-demo
DEMO_MADE=0

demo_mounts() { awk -v d="$DEMO/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts; }
demo_pids() {   # "PID:START" of each live daemon named in a demo store's pid file
    local f p
    for f in "$DEMO"/*/pid "$DEMO"/*/*/pid; do
        [ -f "$f" ] || continue
        p="$(head -n 1 "$f")"; p="${p//[!0-9]/}"
        [ -n "$p" ] && tl_alive "$p" && echo "$p:$(tl_proc_start "$p")"
    done
}
demo_stop() {   # unmount everything under $DEMO cleanly (force if need be), stop daemons
    local m e pids
    pids="$(demo_pids)"
    for m in $(demo_mounts | sort -r); do
        timeout 30 umount "$m" 2>/dev/null || tl_force_unmount "$m" 15
    done
    for e in $pids; do
        tl_wait_gone "${e%%:*}" 20 && continue
        tl_same_proc "$e" && { note "daemon ${e%%:*} still alive after unmount; killing it"; kill -KILL "${e%%:*}"; }
    done
}
demo_cleanup() {
    local rc=$?
    if [ "$DEMO_MADE" = 1 ]; then
        demo_stop
        if [ -n "$(demo_mounts)" ]; then note "still mounted under $DEMO: $(demo_mounts | paste -sd' ')"
        elif [ "${E2E_KEEP:-0}" = 1 ]; then note "kept $DEMO"
        else rm -rf --one-file-system "$DEMO"; fi
    fi
    (exit $rc)
    e2e_cleanup
}
trap demo_cleanup EXIT

# ------------------------------------------------------------ 1. the block
README="$SRC/README.md"
awk '/<!-- walkthrough:begin -->/ { on = 1; next } /<!-- walkthrough:end -->/ { on = 0 }
     on' "$README" > "$WORK/section"
awk 'f && /^```/ { exit } f { print } /^```sh/ { f = 1 }' "$WORK/section" > "$WORK/walk.sh"
[ -s "$WORK/walk.sh" ] || fatal "README.md has no \`\`\`sh block between <!-- walkthrough:begin --> and <!-- walkthrough:end -->"
pass "README walkthrough: $(wc -l < "$WORK/walk.sh") lines"
bad_paths="$(grep -v '^\s*#' "$WORK/walk.sh" | sed 's/#.*//' | grep -oE '(^|[ "'"'"'=])/[A-Za-z0-9._/-]+' | sed 's/^[ "'"'"'=]//' |
             grep -vE "^$DEMO(/|$)" | sort -u | paste -sd' ')"
[ -z "$bad_paths" ] && pass "every absolute path is under $DEMO" || fail "paths outside $DEMO: $bad_paths"
bad_hosts="$(grep -oE 'https?://[^/: ]+' "$WORK/walk.sh" | grep -vE '//(127\.0\.0\.1|localhost)$' | sort -u | paste -sd' ')"
[ -z "$bad_hosts" ] && pass "every URL is on loopback" || fail "URLs off this machine: $bad_hosts"
bad_listen="$(grep -oE -- '(--listen[ =]|listen=)[^ ,]+' "$WORK/walk.sh" | grep -vE '(127\.0\.0\.1|localhost):[0-9]+$' | paste -sd' ')"
[ -z "$bad_listen" ] && pass "every listen address is on loopback" || fail "listen addresses off loopback: $bad_listen"

# ------------------------------------------------------------ 2. run it
[ -e "$DEMO" ] && fatal "$DEMO exists (a demo running, or left over): remove it and run again"
# its ports are fixed: wait a while for one that is briefly taken (another test's free port)
for port in $(grep -oE '127\.0\.0\.1:[0-9]+' "$WORK/walk.sh" | cut -d: -f2 | sort -u); do
    for i in $(seq 60); do
        # (SO_REUSEADDR as the daemon's server: connections in TIME_WAIT do not count)
        "$PY" -c 'import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()' "$port" 2>/dev/null && break
        [ "$i" = 60 ] && fatal "port $port on 127.0.0.1 is taken for 30 s: the walkthrough cannot run now"
        sleep 0.5
    done
done
BIN="$WORK/bin"
mkdir -p "$BIN" && ln -s "$REPLFS" "$BIN/replfs"
DEMO_MADE=1
(cd /tmp && PATH="$BIN:$PATH" timeout 150 bash -e -o pipefail "$WORK/walk.sh") > "$WORK/walk.out" 2> "$WORK/walk.err" < /dev/null
rc=$?
if [ $rc -eq 0 ]; then
    pass "the walkthrough ran to the end under set -e"
else
    fail "the walkthrough failed (exit $rc); stderr tail:"
    tail -n 15 "$WORK/walk.err" | sed 's/^/    /'
    echo "    stdout tail:"; tail -n 15 "$WORK/walk.out" | sed 's/^/    /'
fi

# ------------------------------------------------------------ 3. the outcome
demo_stop
[ -z "$(demo_mounts)" ] || fail "still mounted under $DEMO after stopping: $(demo_mounts | paste -sd' ')"
mapfile -t STORES < <(find "$DEMO" -maxdepth 3 -name replfs.store -printf '%h\n' 2>/dev/null | sort)
check_eq "${#STORES[@]}" 2 "the walkthrough made two stores"
if [ "${#STORES[@]}" = 2 ]; then
    epoch() { local e; e="$(cat "$1/epoch" 2>/dev/null)"; echo "${e:-1}"; }
    e0="$(epoch "${STORES[0]}")" e1="$(epoch "${STORES[1]}")"
    if [ "$e0" -lt "$e1" ]; then OLD="${STORES[0]}" NEW="${STORES[1]}"
    elif [ "$e1" -lt "$e0" ]; then OLD="${STORES[1]}" NEW="${STORES[0]}"
    else OLD="" NEW=""; fail "both stores at epoch $e0: no promote took effect"; fi
    if [ -n "$NEW" ]; then
        pass "$(basename "$NEW") was promoted: epoch $(epoch "$NEW") > $(epoch "$OLD")"
        treedump "$OLD/data" "$WORK/old.dump" --mtime none --no-root
        treedump "$NEW/data" "$WORK/new.dump" --mtime none --no-root
        missing="$(comm -23 <(sort "$WORK/old.dump") <(sort "$WORK/new.dump"))"
        if [ -s "$WORK/old.dump" ] && [ -z "$missing" ]; then
            pass "the new master holds all $(wc -l < "$WORK/old.dump") entries of the old master's tree, identical"
        else
            fail "the old master's entries missing or different on the new master: $(head -c 600 <<<"$missing") (old tree: $(wc -l < "$WORK/old.dump") entries)"
        fi
        extra="$(comm -13 <(sort "$WORK/old.dump") <(sort "$WORK/new.dump") | wc -l)"
        [ "$extra" -ge 1 ] && pass "the new master took writes after the failover ($extra new entries)" ||
            fail "the new master holds nothing the old one did not: no write after the failover"
    fi
fi
e2e_finish
