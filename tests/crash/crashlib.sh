# Shared helpers for the replfs crash tests (sourced by tests/crash/test_*.sh).
#
# Environment:
#   REPLFS          absolute path of the replfs binary (default: build/replfs from cwd)
#   CRASH_TIMEOUT   watchdog seconds for the whole test (default 540): on expiry the FUSE
#                   connections of this test are aborted and the test fails
#   CRASH_KEEP=1    keep the work directory (mounts are still undone)
#
# Everything a test mounts or starts is undone by the EXIT trap, also on failure:
# background PIDs / process groups it started (CR_PIDS, CR_PGIDS), its mounts
# (CR_MOUNTS) and the daemons those mounts started (CR_DAEMONS) -- by PID only.

set -u -o pipefail

CR_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CR_NAME="${CR_NAME:-$(basename "${0%.sh}")}"
CR_FAILS=0
CR_PASSES=0
CR_MOUNTS=()
CR_DAEMONS=()
CR_PIDS=()
CR_PGIDS=()
CR_WATCHDOG=""
WORK=""
PY=/usr/bin/python3
[ -x "$PY" ] || PY="$(command -v python3)"
TREEDUMP="$CR_DIR/../lib/treedump.py"
MOUNT_ERR=""

log()  { printf '[%s] %s\n' "$CR_NAME" "$*"; }
note() { printf '[%s] NOTE: %s\n' "$CR_NAME" "$*"; }
pass() { CR_PASSES=$((CR_PASSES + 1)); printf '[%s] ok: %s\n' "$CR_NAME" "$*"; }
fail() { CR_FAILS=$((CR_FAILS + 1)); printf '[%s] FAIL: %s\n' "$CR_NAME" "$*"; }
fatal() { fail "$*"; cr_finish; }

cr_finish() {
    echo "[$CR_NAME] $CR_PASSES checks passed, $CR_FAILS failed"
    [ "$CR_FAILS" -eq 0 ] && exit 0
    exit 1
}

# Process and mount primitives live in ../lib/mounts.sh (shared with the e2e lib.sh and
# cluster.sh); these are the names the crash tests use.
source "$CR_DIR/../lib/mounts.sh"
# pid_alive PID: running (zombies count as gone: nobody may reap a daemonized child)
pid_alive() { tl_alive "${1:-}"; }
# wait_gone PID SECONDS
wait_gone() { tl_wait_gone "$1" "$2"; }
# is_mounted MNT: from /proc/self/mounts; never stat()s the mountpoint (may hang)
is_mounted() { tl_is_mounted "$1"; }
# cr_abort_conns: abort the FUSE connections of the mounts under $WORK (ids read live
# from /proc/self/mountinfo: a remembered id may belong to somebody else's mount by now)
cr_abort_conns() { [ -n "$WORK" ] || return 0; tl_abort_conns_under "$WORK"; }
# force_unmount MNT: for a mount whose daemon is dead (or hung)
force_unmount() { tl_force_unmount "$1" 20; }

# kill_started: SIGKILL to the process groups and PIDs this test started
kill_started() {
    local p
    for p in "${CR_PGIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null; done
    for p in "${CR_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    CR_PIDS=()
    CR_PGIDS=()
}

cr_cleanup() {
    local rc=$? i m p
    trap - EXIT INT TERM
    if [ -n "$CR_WATCHDOG" ]; then
        kill "$CR_WATCHDOG" 2>/dev/null
        wait "$CR_WATCHDOG" 2>/dev/null
    fi
    kill_started
    for ((i = ${#CR_MOUNTS[@]} - 1; i >= 0; i--)); do force_unmount "${CR_MOUNTS[$i]}"; done
    for p in "${CR_DAEMONS[@]}"; do
        if ! wait_gone "$p" 5; then
            note "daemon $p still alive after unmount; killing it"
            kill -KILL "$p" 2>/dev/null
        fi
    done
    local msg
    msg="$(tl_remove_work "$WORK" "${CRASH_KEEP:-0}")"
    [ -z "$msg" ] || note "$msg"
    exit $rc
}

cr_setup() {
    tl_require "$CR_NAME"
    WORK="$(mktemp -d /tmp/replfs-crash.XXXXXX)" || exit 1
    chmod 755 "$WORK"
    trap cr_cleanup EXIT
    trap 'echo "[$CR_NAME] interrupted"; exit 130' INT
    trap 'echo "[$CR_NAME] terminated"; exit 143' TERM
    tl_watchdog "$CR_NAME" "${CRASH_TIMEOUT:-540}" cr_abort_conns
    CR_WATCHDOG=$TL_WATCHDOG
    log "replfs=$REPLFS work=$WORK"
}

# do_mount STORE MNT [args...]: replfs mount; stderr in $MOUNT_ERR; returns replfs' status.
# On success records the mount and the daemon PID for cleanup.
do_mount() {
    local s="$1" m="$2" rc i p
    shift 2
    mkdir -p "$m"
    MOUNT_ERR="$WORK/mount.$(date +%s%N).err"
    timeout 120 "$REPLFS" mount "$s" "$m" "$@" > "$MOUNT_ERR.out" 2> "$MOUNT_ERR" < /dev/null
    rc=$?
    [ $rc -ne 0 ] && return $rc
    CR_MOUNTS+=("$m")
    for ((i = 0; i < 100; i++)); do is_mounted "$m" && break; sleep 0.1; done
    is_mounted "$m" || { fail "replfs mount $s $m returned 0 but $m is not mounted"; return 99; }
    p="$(cat "$s/pid" 2>/dev/null)"
    [ -n "$p" ] && CR_DAEMONS+=("$p")
    return 0
}

# clean_unmount MNT STORE: fusermount3 -u, then waits for the daemon to exit
clean_unmount() {
    local m="$1" s="$2" p
    p="$(cat "$s/pid" 2>/dev/null)"
    if ! timeout 60 fusermount3 -u "$m" 2> "$WORK/umount.err"; then
        fail "fusermount3 -u $m: $(cat "$WORK/umount.err")"
        return 1
    fi
    if [ -n "$p" ] && ! wait_gone "$p" 30; then
        fail "daemon $p still running 30s after the unmount of $m"
        return 1
    fi
    return 0
}

# crash_daemon STORE MNT: SIGKILL the daemon, wait for it, unmount the dead mount
crash_daemon() {
    local s="$1" m="$2" p
    p="$(cat "$s/pid" 2>/dev/null)"
    [ -n "$p" ] || { fail "no daemon PID in $s/pid"; return 1; }
    kill -KILL "$p" 2>/dev/null || { fail "cannot SIGKILL daemon $p"; return 1; }
    wait_gone "$p" 20 || { fail "daemon $p survived SIGKILL for 20s"; return 1; }
    return 0
}

# treedump DIR OUT [args]: canonical dump; records a failure if the walk failed
treedump() {
    local d="$1" out="$2"
    shift 2
    # The compared directories differ in their own attributes: leave DIR out.
    timeout 300 "$PY" "$TREEDUMP" "$d" --mtime reg --no-root "$@" > "$out" 2> "$out.err"
    local rc=$?
    [ $rc -ne 0 ] && fail "treedump $d exited $rc: $(head -c 300 "$out.err"; grep -m3 ERROR "$out")"
    return $rc
}

# replay STORE DIR: journal replay into a new empty DIR; must print nothing
replay() {
    local s="$1" d="$2" rc
    rm -rf --one-file-system "$d"
    mkdir -m 755 "$d"
    timeout 300 "$REPLFS" journal replay "$s" "$d" > "$d.out" 2> "$d.err" < /dev/null
    rc=$?
    if [ $rc -ne 0 ] || [ -s "$d.out" ] || [ -s "$d.err" ]; then
        fail "replfs journal replay $s exited $rc: $(head -c 400 "$d.err") $(head -c 200 "$d.out")"
        return 1
    fi
    return 0
}

# compare WANT GOT MSG: identical dumps, else a failure with a bounded diff
compare() {
    if cmp -s "$1" "$2"; then
        pass "$3"
        return 0
    fi
    fail "$3 (diff -u $(basename "$1") $(basename "$2"), first ${CRASH_DIFF_LINES:-40} lines):"
    diff -u "$1" "$2" | tail -n +3 | grep '^[-+]' | head -n "${CRASH_DIFF_LINES:-40}" | sed 's/^/    /'
    return 1
}

# check_journal_dump STORE: `replfs journal dump` works and LSNs run 1..N
check_journal_dump() {
    local s="$1" out="$WORK/jdump.txt" rc
    timeout 300 "$REPLFS" journal dump "$s" > "$out" 2> "$out.err"
    rc=$?
    if [ $rc -ne 0 ]; then
        fail "replfs journal dump exited $rc: $(head -c 300 "$out.err")"
        return 1
    fi
    local res
    res="$(grep -v '^#' "$out" | grep -o 'lsn=[0-9]*' | awk -F= '
        { if ($2 != NR) { printf "LSN %s on record %d\n", $2, NR; bad = 1; exit } n = NR }
        END { if (!bad) printf "ok %d\n", n }')"
    case "$res" in
        ok*) pass "journal dump works: LSN 1..${res#ok } consecutive"; return 0 ;;
        *) fail "journal dump: LSNs not consecutive from 1: $res"; return 1 ;;
    esac
}
