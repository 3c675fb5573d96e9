# Shared helpers for the replfs end-to-end tests.  Source it, then call e2e_setup.
#
#   REPLFS            path of the replfs binary (default: build/replfs relative to cwd)
#   E2E_TIMEOUT       watchdog seconds for one test (default 240): on expiry the FUSE
#                     connections of this test are aborted and the test fails
#   E2E_KEEP=1        keep the work directory (for debugging; mounts are still undone)
#   E2E_TMPDIR        where the work directory is made (default /tmp; should be ext4,
#                     the reference filesystem every comparison is made against)
#   REPLFS_VALGRIND=1 every daemon (try_mount here, cluster.sh, failover.sh) runs under
#                     valgrind; logs in $WORK/valgrind or $REPLFS_VALGRIND_DIR (tl_vg in
#                     ../lib/mounts.sh)
#
# Functions:
#   e2e_setup                 work dir $WORK (mktemp -d), EXIT trap, watchdog, checks
#   require_tools TOOL...     fail the test when a needed tool is missing
#   init_store PATH           replfs init PATH; records a failure if it fails
#   mount_store STORE MNT [-o opts]   replfs mount; records it for cleanup; records a
#                             failure on error. stderr of the mount goes to $MOUNT_ERR
#   try_mount STORE MNT [args...]     like mount_store but only returns replfs' status
#   unmount MNT [STORE]       clean unmount (fusermount3 -u); with STORE also waits for
#                             the daemon in STORE/pid to exit
#   daemon_pid STORE          PID from STORE/pid
#   treedump DIR OUT [opts]   treedump.py DIR > OUT (records a failure if it fails)
#   pass/fail/note/fatal MSG, check_eq GOT WANT MSG, cmp_files WANT GOT MSG
#   e2e_finish                prints a summary, exits 0 iff no failure was recorded
#
# Everything this file mounts or starts is undone by the EXIT trap, also on failure.

set -u -o pipefail

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
E2E_FAILS=0
E2E_PASSES=0
E2E_MOUNTS=()          # mountpoints to undo at exit
E2E_PIDS=()            # daemon PIDs we started
E2E_LOOPS=()           # loop-mounted images' mountpoints
E2E_WATCHDOG=""
WORK=""
E2E_NAME="${E2E_NAME:-$(basename "${0%.sh}")}"
PY=/usr/bin/python3
[ -x "$PY" ] || PY="$(command -v python3)"
TREEDUMP="$E2E_DIR/../lib/treedump.py"

log()  { printf '[%s] %s\n' "$E2E_NAME" "$*"; }
note() { printf '[%s] NOTE: %s\n' "$E2E_NAME" "$*"; }
pass() { E2E_PASSES=$((E2E_PASSES + 1)); printf '[%s] ok: %s\n' "$E2E_NAME" "$*"; }
fail() { E2E_FAILS=$((E2E_FAILS + 1)); printf '[%s] FAIL: %s\n' "$E2E_NAME" "$*"; }
# fatal: record a failure and stop the test (cleanup still runs)
fatal() { fail "$*"; e2e_finish; }

check_eq() {   # check_eq GOT WANT MSG
    if [ "$1" == "$2" ]; then pass "$3"; else fail "$3: expected [$2], got [$1]"; fi
}

# cmp_files WANT GOT MSG: pass if identical, else fail and show a bounded diff
cmp_files() {
    if cmp -s "$1" "$2"; then
        pass "$3"
    else
        fail "$3 (diff: < expected/ext4 $1   > got $2)"
        diff -u "$1" "$2" | head -n "${E2E_DIFF_LINES:-60}" | sed 's/^/    /'
    fi
}

# treedump DIR OUT [opts...]
treedump() {
    local d="$1" out="$2"; shift 2
    "$PY" "$TREEDUMP" "$d" "$@" > "$out" 2> "$out.err"
    local rc=$?
    if [ $rc -ne 0 ]; then
        fail "treedump $d exited $rc: $(head -c 300 "$out.err")"
    fi
    return $rc
}

# Process and mount primitives live in ../lib/mounts.sh (shared with crashlib.sh and
# cluster.sh); these are the names the e2e tests use.
source "$E2E_DIR/../lib/mounts.sh"
# e2e_abort_conns: abort the FUSE connections of the FUSE mounts under $WORK right now
# (unblocks processes stuck on them); ids are read live, never remembered
e2e_abort_conns() { [ -n "$WORK" ] || return 0; tl_abort_conns_under "$WORK"; }
# proc_start PID: the process' start time (field 22 of /proc/PID/stat), empty if gone
proc_start() { tl_proc_start "$1"; }
# e2e_same_proc "PID:START": 0 if that very process is still alive (and not a zombie)
e2e_same_proc() { tl_same_proc "$1"; }
# from /proc/mounts, never stat()s the mountpoint (may hang)
e2e_is_mounted() { tl_is_mounted "$1"; }

e2e_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -n "$E2E_WATCHDOG" ] && kill "$E2E_WATCHDOG" 2>/dev/null && wait "$E2E_WATCHDOG" 2>/dev/null
    local i m p
    for ((i = ${#E2E_MOUNTS[@]} - 1; i >= 0; i--)); do
        m="${E2E_MOUNTS[$i]}"
        if e2e_is_mounted "$m"; then
            timeout 10 fusermount3 -u "$m" 2>/dev/null || timeout 10 umount "$m" 2>/dev/null || {
                e2e_abort_conns
                umount -l "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null
            }
        fi
    done
    local entry
    for entry in "${E2E_PIDS[@]}"; do   # "PID:STARTTIME": never kill a reused PID
        p="${entry%%:*}"
        for i in $(seq 50); do e2e_same_proc "$entry" || break; sleep 0.1; done
        e2e_same_proc "$entry" && { note "daemon $p still alive after unmount; killing"; kill -KILL "$p" 2>/dev/null; }
    done
    for ((i = ${#E2E_LOOPS[@]} - 1; i >= 0; i--)); do
        m="${E2E_LOOPS[$i]}"
        e2e_is_mounted "$m" && { umount "$m" 2>/dev/null || umount -l "$m"; }
    done
    local msg
    msg="$(tl_remove_work "$WORK" "${E2E_KEEP:-0}")"
    [ -z "$msg" ] || note "$msg"
    exit $rc
}

e2e_setup() {
    tl_require "$E2E_NAME"
    # mktemp -d under /tmp: $WORK/mnt and $WORK/ref have equal lengths on purpose
    WORK="$(mktemp -d "${E2E_TMPDIR:-/tmp}/replfs-e2e.XXXXXX")" || exit 1
    chmod 755 "$WORK"
    local fstype
    fstype="$(stat -f -c %T "$WORK")"
    case "$fstype" in
        ext2/ext3) ;;
        *) note "work dir $WORK is on $fstype, not ext4: the reference results are $fstype's (set E2E_TMPDIR to an ext4 directory)" ;;
    esac
    trap e2e_cleanup EXIT
    trap 'echo "[$E2E_NAME] interrupted"; exit 130' INT
    trap 'echo "[$E2E_NAME] terminated"; exit 143' TERM
    tl_watchdog "$E2E_NAME" "${E2E_TIMEOUT:-240}" e2e_abort_conns
    E2E_WATCHDOG=$TL_WATCHDOG
    log "replfs=$REPLFS work=$WORK"
}

init_store() {  # init_store PATH: replfs init; records a failure if it fails
    local s="$1" e="$WORK/init.$(basename "$1").err"
    if ! timeout 60 "$REPLFS" init "$s" > "$e.out" 2> "$e" < /dev/null; then
        fail "replfs init $s: $(cat "$e")"
        return 1
    fi
    return 0
}

daemon_pid() { cat "$1/pid" 2>/dev/null; }

# try_mount STORE MNT [args...]: runs replfs mount, stderr -> $MOUNT_ERR; on success
# records the mount and the daemon PID for cleanup and waits until it is usable.
MOUNT_ERR=""
try_mount() {
    local s="$1" m="$2"; shift 2
    mkdir -p "$m"
    MOUNT_ERR="$WORK/mount.$(date +%s%N).err"
    tl_vg "$WORK/valgrind"   # REPLFS_VALGRIND=1: the daemon under valgrind (mounts.sh)
    timeout 60 "${TL_VG[@]}" "$REPLFS" mount "$s" "$m" "$@" > "$MOUNT_ERR.out" 2> "$MOUNT_ERR" < /dev/null
    local rc=$?
    [ $rc -ne 0 ] && return $rc
    E2E_MOUNTS+=("$m")
    local i
    for i in $(seq 100); do e2e_is_mounted "$m" && break; sleep 0.1; done
    if ! e2e_is_mounted "$m"; then
        fail "replfs mount $s $m returned 0 but $m is not a mount after 10s"
        return 99
    fi
    local p
    p="$(daemon_pid "$s")"
    [ -n "$p" ] && E2E_PIDS+=("$p:$(proc_start "$p")")
    return 0
}

mount_store() {
    if ! try_mount "$@"; then
        fail "replfs mount $*: $(cat "$MOUNT_ERR" 2>/dev/null)"
        return 1
    fi
    return 0
}

# unmount MNT [STORE]: clean stop; waits up to 10s for the daemon (if STORE given)
unmount() {
    local m="$1" s="${2:-}" p="" i
    [ -n "$s" ] && p="$(daemon_pid "$s")"
    # (never a global sync: other people's FUSE mounts may hang it)
    timeout 30 sync -f "$m" 2>/dev/null
    if ! timeout 30 fusermount3 -u "$m" 2> "$WORK/umount.err"; then
        fail "fusermount3 -u $m: $(cat "$WORK/umount.err")"
        return 1
    fi
    if [ -n "$p" ] && ! wait_gone "$p" 10; then
        fail "daemon $p still running 10s after unmount of $m"
        return 1
    fi
    return 0
}

# wait_gone PID SECONDS: 0 once the process has exited (a zombie counts as exited)
wait_gone() { tl_wait_gone "$1" "$2"; }

# require_tools TOOL...: fail (not skip) when a tool the test needs is missing
require_tools() {
    local t missing=()
    for t in "$@"; do command -v "$t" > /dev/null 2>&1 || missing+=("$t"); done
    if [ ${#missing[@]} -gt 0 ]; then
        fatal "missing tools: ${missing[*]} (Debian: apt-get install git sqlite3 rsync attr gcc e2fsprogs util-linux passwd fuse3)"
    fi
}

e2e_finish() {
    echo "[$E2E_NAME] $E2E_PASSES checks passed, $E2E_FAILS failed"
    if [ "$E2E_FAILS" -ne 0 ]; then exit 1; fi
    exit 0
}
