#!/bin/bash
# POSIX operations on a replfs mount vs the same operations on plain ext4:
# every operation's result/errno (fsops.py log) and the final trees (treedump.py)
# must be identical; then the tree must survive a clean unmount + mount.
source "$(dirname "$0")/lib.sh"
e2e_setup
require_tools fusermount3

S="$WORK/store"
: > "$WORK/unsupported"
MNT="$WORK/mnt"      # same length as $WORK/ref on purpose (4095-byte path test)
REF="$WORK/ref"
mkdir -p "$REF"
init_store "$S" || fatal "cannot init store"
mount_store "$S" "$MNT" || fatal "cannot mount"

log "running fsops.py on the replfs mount"
timeout 150 "$PY" "$E2E_DIR/fsops.py" "$MNT" --unsupported-out "$WORK/unsupported" \
    > "$WORK/mnt.log" 2> "$WORK/mnt.err"
rc=$?
[ $rc -eq 0 ] || fail "fsops.py on the mount exited $rc: $(tail -n 5 "$WORK/mnt.err")"
if [ -s "$WORK/unsupported" ]; then
    note "rejected with EOPNOTSUPP on the mount (the kernel FUSE module refuses these fallocate modes), skipped on ext4 too: $(tr '\n' ' ' < "$WORK/unsupported")"
fi
log "running fsops.py on plain ext4 ($REF)"
timeout 150 "$PY" "$E2E_DIR/fsops.py" "$REF" --skip "$WORK/unsupported" \
    > "$WORK/ref.log" 2> "$WORK/ref.err"
rc=$?
[ $rc -eq 0 ] || fail "fsops.py on ext4 exited $rc (harness problem?): $(tail -n 5 "$WORK/ref.err")"
log "$(wc -l < "$WORK/ref.log") operations"
E2E_DIFF_LINES=200 cmp_files "$WORK/ref.log" "$WORK/mnt.log" "every operation returns the same result/errno as on ext4"

treedump "$REF/t" "$WORK/ref.dump" --no-mtime
treedump "$MNT/t" "$WORK/mnt.dump" --no-mtime
E2E_DIFF_LINES=100 cmp_files "$WORK/ref.dump" "$WORK/mnt.dump" "final tree equals ext4 (type, mode, owner, size, content, targets, xattrs, links)"

# entries whose mtime was set explicitly must carry exactly that mtime
treedump "$REF/t" "$WORK/ref.mdump"
treedump "$MNT/t" "$WORK/mnt.mdump"
pick() { awk -F'\t' '$1 == "tm" || $1 == "pdir" || $1 == "sl_abs"' "$1"; }
pick "$WORK/ref.mdump" > "$WORK/ref.mtimes"
pick "$WORK/mnt.mdump" > "$WORK/mnt.mtimes"
[ "$(wc -l < "$WORK/ref.mtimes")" -eq 3 ] || fail "harness: explicit-mtime entries missing in ext4 dump"
cmp_files "$WORK/ref.mtimes" "$WORK/mnt.mtimes" "explicitly set mtimes (utimens) are exact"

log "clean unmount + mount: the tree (incl. every mtime) must be unchanged"
treedump "$MNT" "$WORK/before.dump"
unmount "$MNT" "$S" || fatal "unmount failed"
mount_store "$S" "$MNT" || fatal "remount failed"
if grep -q "^replfs: recovery:" "$MOUNT_ERR"; then
    fail "mount after a clean unmount ran recovery: $(cat "$MOUNT_ERR")"
fi
treedump "$MNT" "$WORK/after.dump"
cmp_files "$WORK/before.dump" "$WORK/after.dump" "tree identical after clean unmount + mount"
unmount "$MNT" "$S"
e2e_finish
