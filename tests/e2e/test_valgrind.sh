#!/bin/bash
# valgrind (memcheck) on the daemons of a short replication session: every daemon this
# test starts runs under valgrind through the test libs' hook (REPLFS_VALGRIND=1, tl_vg in
# tests/lib/mounts.sh: --leak-check=full, definite leaks are errors). Session: a master
# (small journal: checkpoint_s=1,segment_mb=1,retain_mb=1) and slave 1; writes, renames,
# xattrs, truncates on the master; slave 2 joins after the master trimmed its journal
# (catch-up by snapshot); both slaves caught up and identical; `replfs verify`; clean stop
# of every node. Fails on any valgrind error (invalid access, uninitialised bytes in a
# syscall such as a send on the wire, ...) or definite leak in any daemon log, and shows
# the log. Needs valgrind; ~60-90 s. Excluded from the ASan run (REPLFS_ASAN_EXCLUDE).
: "${E2E_TMPDIR:=/var/tmp}"
: "${E2E_TIMEOUT:=420}"
export E2E_TMPDIR E2E_TIMEOUT
source "$(dirname "$0")/lib.sh"
e2e_setup
require_tools valgrind
source "$E2E_DIR/../lib/cluster.sh"
source "$E2E_DIR/../lib/failover.sh"
export REPLFS_VALGRIND=1
VGDIR="$WORK/vg"
export REPLFS_VALGRIND_DIR="$VGDIR"

cluster_init || fatal "cannot set up the cluster"
t0=$SECONDS
cluster_start_master -o checkpoint_s=1,segment_mb=1,retain_mb=1 || fatal "master did not start under valgrind"
cluster_start_slave 1 || fatal "slave 1 did not start under valgrind"
log "master + slave 1 up under valgrind in $((SECONDS - t0)) s"
M="${CL_MNT[0]}"
mkdir -p "$M/d/sub" || fail "mkdir"
for i in $(seq 1 12); do
    head -c $((i * 100000)) /dev/urandom > "$M/d/f$i" || fail "write f$i"
done
mv "$M/d/f1" "$M/d/sub/moved" && ln "$M/d/f2" "$M/d/f2.link" && ln -s f3 "$M/d/sym" &&
    setfattr -n user.k -v v "$M/d/f4" && truncate -s 1000 "$M/d/f5" && chmod 600 "$M/d/f6" &&
    printf 'x' >> "$M/d/f7" && rm "$M/d/f8" && mkfifo "$M/d/fifo" && sync "$M/d/f9" ||
    fail "metadata ops on the master"
wait_caught_up 1 180 && pass "slave 1 caught up"
# slave 2 joins once the master's journal no longer starts at LSN 1: snapshot
for t in $(seq 1 60); do
    fl="$(node_field 0 first_lsn 2>/dev/null)"
    [[ "$fl" =~ ^[0-9]+$ ]] && [ "$fl" -gt 1 ] && break
    head -c 300000 /dev/urandom > "$M/d/f10" 2>/dev/null
    sleep 1
done
cluster_start_slave 2 || fatal "slave 2 did not start under valgrind"
wait_caught_up 2 240 && pass "slave 2 caught up (snapshots received: $(node_field 2 snapshots_received))"
treedump "$M" "$WORK/m.dump"
for i in 1 2; do
    treedump "${CL_MNT[$i]}" "$WORK/s$i.dump" && cmp_files "$WORK/m.dump" "$WORK/s$i.dump" "slave $i identical"
done
fo_verify 0
check_eq "$FO_VRC" 0 "replfs verify exits 0 ($(head -n 1 "$FO_VOUT"))"
for i in 2 1 0; do cluster_stop "$i" && pass "node $i: clean stop under valgrind"; done

# ------------------------------------------------------- the valgrind logs
# valgrind < 3.20 does not know openat2(2) (syscall 437): the apply step then resolves
# paths one component at a time (fs/apply.c), and that path is what runs here
if grep -qs 'unhandled amd64-linux syscall: 437' "$VGDIR"/vg.*.log; then
    note "valgrind $(valgrind --version) lacks openat2: the daemons ran the step-by-step resolution"
fi
n=0
for f in "$VGDIR"/vg.*.log; do
    [ -e "$f" ] || continue
    n=$((n + 1))
    errs="$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$f" | tail -n 1)"
    def="$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$f" | tail -n 1 | tr -d ,)"
    cmd="$(grep -m1 'Command:' "$f" | sed 's/.*Command: //' | cut -c1-60)"
    if [ -z "$errs" ]; then
        fail "$(basename "$f") ($cmd): no ERROR SUMMARY (the daemon did not exit normally)"
        tail -n 20 "$f" | sed 's/^/    /'
    elif [ "$errs" != 0 ] || [ "${def:-0}" != 0 ]; then
        fail "$(basename "$f") ($cmd): $errs valgrind errors, ${def:-0} bytes definitely lost:"
        # the errors themselves (valgrind's own "--PID--" warnings and blank lines left out)
        grep '^==[0-9]*== ' "$f" | grep -v '^==[0-9]*== *$' | sed -n '6,85p' | sed 's/^/    /'
    else
        pass "$(basename "$f") ($cmd): 0 errors, no definite leak"
    fi
done
[ "$n" -ge 3 ] && pass "$n daemon valgrind logs checked" || fail "only $n valgrind logs in $VGDIR (want one per daemon, >= 3)"
log "runtime $((SECONDS - t0)) s"
e2e_finish
