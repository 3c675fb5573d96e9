#!/bin/bash
# Persistence: clean unmount + mount, SIGTERM stop, SIGKILL + recovery.
#  1. workload; fusermount3 -u; mount: no recovery, tree identical incl. mtimes
#  2. more workload; kill -TERM $(cat STORE/pid): mount goes away, daemon exits;
#     mount: no recovery, tree identical incl. mtimes
#  3. more workload incl. a file written on an fd that is still open; kill -KILL;
#     mount: prints "replfs: recovery:", tree identical (mtimes checked separately)
#  4. same with -o checkpoint_mb=1 so recovery starts from a checkpoint
source "$(dirname "$0")/lib.sh"
e2e_setup
require_tools fusermount3

S="$WORK/store" MNT="$WORK/mnt"
init_store "$S" || fatal "cannot init store"

workload() {  # workload NAME: fsops.py in $MNT/NAME plus a few plain files
    mkdir "$MNT/$1" || { fail "mkdir $MNT/$1"; return 1; }
    timeout 120 "$PY" "$E2E_DIR/fsops.py" "$MNT/$1" > "$WORK/$1.log" 2>&1 ||
        fail "workload $1 (fsops.py) crashed: $(tail -n 3 "$WORK/$1.log")"
    local i
    for i in $(seq 1 20); do
        head -c $((i * 7919)) /dev/urandom > "$MNT/$1/plain_$i" || fail "write plain_$i"
    done
    mv "$MNT/$1/plain_1" "$MNT/$1/plain_renamed" && rm "$MNT/$1/plain_2" &&
        ln "$MNT/$1/plain_3" "$MNT/$1/plain_3_link" && chmod 600 "$MNT/$1/plain_4" &&
        touch -d '2010-10-10 10:10:10.5' "$MNT/$1/plain_5" || fail "workload $1 metadata ops"
    sync "$MNT/$1/plain_6" 2>/dev/null
}
no_recovery() {  # no_recovery LABEL: the last mount must not have run recovery
    if grep -q "^replfs: recovery:" "$MOUNT_ERR"; then
        fail "$1: mount ran recovery although the stop was clean: $(grep '^replfs: recovery:' "$MOUNT_ERR")"
    else
        pass "$1: mount after a clean stop reports no recovery"
    fi
}
# wait_unmounted MNT SECONDS
wait_unmounted() {
    local i
    for i in $(seq $(($2 * 10))); do e2e_is_mounted "$1" || return 0; sleep 0.1; done
    return 1
}

# ----------------------------------------------------------- 1. clean unmount
mount_store "$S" "$MNT" || fatal "cannot mount"
workload r1
treedump "$MNT" "$WORK/d1"
unmount "$MNT" "$S" || fatal "unmount failed"
mount_store "$S" "$MNT" || fatal "mount after clean unmount failed"
no_recovery "fusermount3 -u"
treedump "$MNT" "$WORK/d1b"
cmp_files "$WORK/d1" "$WORK/d1b" "tree identical (incl. mtimes) after fusermount3 -u + mount"

# ----------------------------------------------------------------- 2. SIGTERM
workload r2
treedump "$MNT" "$WORK/d2"
PID=$(daemon_pid "$S")
if [ -z "$PID" ] || ! kill -0 "$PID" 2>/dev/null; then
    fatal "STORE/pid does not name a running daemon (got '$PID')"
fi
kill -TERM "$PID"
if wait_unmounted "$MNT" 15; then pass "SIGTERM: mount is gone"; else fail "SIGTERM: $MNT still mounted after 15s"; fi
if wait_gone "$PID" 15; then pass "SIGTERM: daemon exited"; else fail "SIGTERM: daemon $PID still running after 15s"; fi
e2e_is_mounted "$MNT" && { fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT"; }
mount_store "$S" "$MNT" || fatal "mount after SIGTERM failed"
no_recovery "SIGTERM"
treedump "$MNT" "$WORK/d2b"
cmp_files "$WORK/d2" "$WORK/d2b" "tree identical (incl. mtimes) after SIGTERM + mount"

# ----------------------------------------------------------------- 3. SIGKILL
kill_and_recover() {  # kill_and_recover LABEL [mount opts...]
    local label="$1"; shift
    local PID WPID i
    # a writer that keeps its file open: write() returned, no close, no fsync
    "$PY" -c '
import os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644)
data = bytes((i * 7 + 3) % 251 for i in range(3 * 1024 * 1024 + 17))
n = 0
while n < len(data):
    n += os.write(fd, data[n:n + 65536])
print("written", n, flush=True)
time.sleep(120)
' "$MNT/$label/open_writer" > "$WORK/$label.writer" 2>&1 &
    WPID=$!
    for i in $(seq 300); do grep -q written "$WORK/$label.writer" && break; sleep 0.1; done
    grep -q written "$WORK/$label.writer" || fail "$label: open-fd writer did not finish writing"
    treedump "$MNT" "$WORK/$label.before" --no-mtime
    treedump "$MNT" "$WORK/$label.before.m"
    PID=$(daemon_pid "$S")
    [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null || { fail "$label: no daemon PID in STORE/pid"; return 1; }
    kill -KILL "$PID"
    wait_gone "$PID" 10 || fail "$label: daemon survived SIGKILL?"
    kill -KILL "$WPID" 2>/dev/null; wait "$WPID" 2>/dev/null
    # the dead mount ("Transport endpoint is not connected") has to be taken down first
    if e2e_is_mounted "$MNT"; then
        fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT" || fail "$label: cannot unmount the dead mount"
    fi
    mount_store "$S" "$MNT" "$@" || { fail "$label: mount after SIGKILL failed"; return 1; }
    if grep -q "^replfs: recovery:" "$MOUNT_ERR"; then
        pass "$label: mount after SIGKILL reports recovery: $(grep '^replfs: recovery:' "$MOUNT_ERR" | head -n 1)"
    else
        fail "$label: mount after SIGKILL printed no 'replfs: recovery:' line (stderr: $(head -c 300 "$MOUNT_ERR"))"
    fi
    treedump "$MNT" "$WORK/$label.after" --no-mtime
    cmp_files "$WORK/$label.before" "$WORK/$label.after" "$label: tree intact after SIGKILL + recovery (content, metadata, links, xattrs)"
    treedump "$MNT" "$WORK/$label.after.m"
    cmp_files "$WORK/$label.before.m" "$WORK/$label.after.m" "$label: mtimes unchanged by recovery"
    # and a clean cycle afterwards must not recover again
    treedump "$MNT" "$WORK/$label.after2.m0"
    unmount "$MNT" "$S"
    mount_store "$S" "$MNT" "$@" || { fail "$label: mount after post-recovery unmount failed"; return 1; }
    no_recovery "$label: clean stop after recovery"
    treedump "$MNT" "$WORK/$label.after2.m"
    cmp_files "$WORK/$label.after2.m0" "$WORK/$label.after2.m" "$label: tree stable across the next clean remount"
}
workload r3
kill_and_recover r3

# --------------------------------------- 4. SIGKILL with frequent checkpoints
unmount "$MNT" "$S" || fatal "unmount before round 4 failed"
mount_store "$S" "$MNT" -o checkpoint_mb=1 || fatal "mount -o checkpoint_mb=1 failed"
workload r4
for i in $(seq 1 8); do head -c 1048576 /dev/urandom > "$MNT/r4/mb_$i"; done
rm "$MNT/r4/mb_2" && mv "$MNT/r4/mb_3" "$MNT/r4/mb_three" && truncate -s 1000 "$MNT/r4/mb_4"
kill_and_recover r4 -o checkpoint_mb=1
unmount "$MNT" "$S"

# ------------------------- 5. the retained journal alone reproduces the tree
S5="$WORK/store5"
init_store "$S5" || fatal "init store5"
mount_store "$S5" "$MNT" -o keep_journal || fatal "mount -o keep_journal"
workload r5
treedump "$MNT/r5" "$WORK/r5.mnt"
unmount "$MNT" "$S5"
mkdir "$WORK/replayed"
if timeout 120 "$REPLFS" journal replay "$S5" "$WORK/replayed" > "$WORK/replay.out" 2> "$WORK/replay.err"; then
    pass "replfs journal replay of the whole journal succeeds"
    treedump "$WORK/replayed/r5" "$WORK/r5.replayed" --no-mtime
    # the mount's dump (taken while mounted) without its mtime fields
    "$PY" - "$WORK/r5.mnt" > "$WORK/r5.mnt.nomtime" <<'PY'
import sys
for l in open(sys.argv[1], encoding="utf-8", errors="surrogateescape"):
    print("\t".join(f for f in l.rstrip("\n").split("\t") if not f.startswith("mtime=")))
PY
    cmp_files "$WORK/r5.mnt.nomtime" "$WORK/r5.replayed" "journal replay into an empty dir reproduces the mounted tree"
else
    fail "replfs journal replay failed: $(head -n 3 "$WORK/replay.err")"
fi
e2e_finish
