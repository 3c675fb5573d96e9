# tests/lib/mounts.sh -- process and FUSE-mount helpers shared by tests/e2e/lib.sh,
# tests/crash/crashlib.sh and tests/lib/cluster.sh (and so bench/repl.sh). Source it;
# it defines only tl_* functions and sets no shell options.
#
#   tl_proc_start PID          start time of PID (field 22 of /proc/PID/stat); fails if gone
#   tl_alive PID               PID is running (a zombie counts as gone: nobody may reap a
#                              daemonized child)
#   tl_same_proc PID:START     that very process (not a reuse of its PID) is still running
#   tl_wait_gone PID SECONDS   0 once PID has exited (reaps it when it is our child)
#   tl_is_mounted MNT          MNT is a mountpoint, from /proc/self/mounts (never stat()s
#                              MNT, which may hang on a dead FUSE daemon)
#   tl_abort_conn MNT          abort the FUSE connection of the mount at MNT
#   tl_abort_conns_under DIR   abort the FUSE connections of every mount under DIR/
#   tl_force_unmount MNT [T]   unmount whatever state its daemon is in: fusermount3 -u,
#                              umount (T seconds each, default 15), then abort + lazy
#   tl_require NAME            root, /dev/fuse and fusermount3 present; REPLFS made absolute,
#                              checked and exported (exits with a FAIL line otherwise)
#   tl_remove_work DIR KEEP    remove a test's work dir unless KEEP=1 or something is still
#                              mounted under it
#   tl_watchdog NAME SECS FN   after SECS, print a FAIL line, run FN (abort the connections)
#                              and TERM this shell; sets TL_WATCHDOG to its PID
#   tl_vg LOGDIR               REPLFS_VALGRIND=1: sets the array TL_VG to a valgrind command
#                              line that the test libs put in front of every daemon they
#                              start (cluster.sh, failover.sh, e2e/lib.sh); one log per
#                              process in ${REPLFS_VALGRIND_DIR:-LOGDIR}/vg.<pid>.log
#                              (memcheck, --leak-check=full, definite leaks count as errors,
#                              error exit code 97; more options in REPLFS_VALGRIND_OPTS).
#                              Unset or 0: TL_VG=() and nothing changes.
#                              tests/e2e/test_valgrind.sh reads the logs; to run any e2e
#                              test so: REPLFS_VALGRIND=1 REPLFS_VALGRIND_DIR=/tmp/vg bash
#                              tests/e2e/test_X.sh, then grep 'ERROR SUMMARY' /tmp/vg/*.log
#
# FUSE connection ids are always read live from /proc/self/mountinfo, never remembered:
# ids are reused by later mounts, and a stale id could abort somebody else's filesystem.

TL_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

tl_proc_start() {
    local st
    st="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    st="${st##*) }"                     # fields from 3 on (comm may contain spaces)
    set -- $st
    echo "${20}"
}

tl_alive() {
    local st
    [ -n "${1:-}" ] || return 1
    st="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    st="${st##*) }"
    [ "${st%% *}" != Z ] && [ "${st%% *}" != X ]
}

tl_same_proc() {
    local p="${1%%:*}" s="${1#*:}"
    tl_alive "$p" && [ "$(tl_proc_start "$p")" = "$s" ]
}

tl_wait_gone() {
    local p="$1" e i
    e="$p:$(tl_proc_start "$p")"
    for ((i = 0; i < $2 * 20; i++)); do
        tl_same_proc "$e" || { wait "$p" 2>/dev/null; return 0; }
        sleep 0.05
    done
    return 1
}

tl_is_mounted() {
    local p
    p="$(realpath -m "$1")"
    awk -v p="$p" '$2 == p { f = 1 } END { exit !f }' /proc/self/mounts
}

tl_fusectl() {
    if [ -d /sys/fs/fuse/connections ] && [ -z "$(ls -A /sys/fs/fuse/connections 2>/dev/null)" ]; then
        mount -t fusectl fusectl /sys/fs/fuse/connections 2>/dev/null || true
    fi
}

# tl_abort_where AWK-CONDITION-ON-MOUNTPOINT-m ARG: abort matching FUSE connections
tl_abort_where() {
    local dev
    tl_fusectl
    for dev in $(awk -v a="$2" '
            { for (i = 7; i <= NF; i++) if ($i == "-") break
              m = $5 }
            '"$1"' && $(i + 1) ~ /^fuse/ { split($3, d, ":"); print d[2] }' /proc/self/mountinfo); do
        [ -w "/sys/fs/fuse/connections/$dev/abort" ] &&
            echo 1 > "/sys/fs/fuse/connections/$dev/abort" 2>/dev/null
    done
    return 0
}

tl_abort_conn() { tl_abort_where 'm == a' "$(realpath -m "$1")"; }

tl_abort_conns_under() {
    [ -n "${1:-}" ] || return 0
    tl_abort_where 'index(m, a) == 1' "$(realpath -m "$1")/"
}

tl_force_unmount() {
    local m="$1" t="${2:-15}"
    tl_is_mounted "$m" || return 0
    timeout "$t" fusermount3 -u "$m" 2>/dev/null && return 0
    timeout "$t" umount "$m" 2>/dev/null && return 0
    tl_abort_conn "$m"
    umount -l "$m" 2>/dev/null || fusermount3 -u -z "$m" 2>/dev/null
    ! tl_is_mounted "$m"
}

tl_require() {
    [ "$(id -u)" = 0 ] || { echo "[$1] FAIL: these tests must run as root"; exit 1; }
    [ -c /dev/fuse ] || { echo "[$1] FAIL: /dev/fuse missing"; exit 1; }
    command -v fusermount3 > /dev/null || { echo "[$1] FAIL: fusermount3 missing"; exit 1; }
    REPLFS="${REPLFS:-build/replfs}"
    case "$REPLFS" in /*) ;; *) REPLFS="$(pwd)/$REPLFS" ;; esac
    [ -x "$REPLFS" ] || { echo "[$1] FAIL: REPLFS=$REPLFS is not an executable"; exit 1; }
    export REPLFS
}

tl_remove_work() {
    [ -n "$1" ] && [ -d "$1" ] || return 0
    if [ "${2:-0}" = 1 ]; then
        echo "work dir kept: $1"
    elif grep -q " $1" /proc/self/mounts; then
        echo "something is still mounted under $1; not removing it"
    else
        rm -rf --one-file-system "$1"
    fi
}

tl_watchdog() {
    local name="$1" t="$2" fn="$3" me=$$
    (
        trap 'kill $sl 2>/dev/null; exit 0' TERM
        sleep "$t" & sl=$!
        wait $sl
        echo "[$name] FAIL: watchdog: test exceeded ${t}s; aborting its FUSE connections"
        WORK="$WORK" "$fn"
        kill -TERM "$me" 2>/dev/null
    ) &
    TL_WATCHDOG=$!
}

TL_VG=()
tl_vg() {
    TL_VG=()
    [ "${REPLFS_VALGRIND:-0}" = 1 ] || return 0
    local d="${REPLFS_VALGRIND_DIR:-$1}"
    mkdir -p "$d" || return 1
    TL_VG=(valgrind --tool=memcheck --leak-check=full --errors-for-leak-kinds=definite
           --show-leak-kinds=definite --error-exitcode=97 --num-callers=30
           --log-file="$d/vg.%p.log")
    [ -n "${REPLFS_VALGRIND_OPTS:-}" ] && TL_VG+=(${REPLFS_VALGRIND_OPTS})   # e.g. --track-origins=yes
    [ -r "$TL_LIB_DIR/../soak/valgrind.supp" ] && TL_VG+=(--suppressions="$TL_LIB_DIR/../soak/valgrind.supp")
    return 0
}
