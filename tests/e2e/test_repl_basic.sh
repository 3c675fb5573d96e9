#!/bin/bash
# Replication, the basics: one master + two slaves on loopback.
#  1. cluster comes up: roles, node ids, the slaves name the master; slave 2 is started
#     the minimal way a user does (daemonized: mount returns once usable; no --listen);
#     a key file readable by others is refused with a clear error
#  2. a mixed workload on the master (fsops.py: ~250 POSIX ops incl. renames, links,
#     symlinks, xattrs, chmod/chown, truncates, mtimes; tar x; git clone; a few MB of
#     data; pattern files) while readers on both slaves check that no file is ever seen
#     half-written (single-write() files: absent/empty or complete)
#  3. once caught up (slave applied_lsn == master lsn) every slave's tree is identical
#     to the master's (treedump: contents, modes, owners, symlinks, hard links, user.*
#     xattrs, mtimes of files AND directories)
#  4. the master's status lists both slaves streaming and acked; /metrics on both sides
#  5. every write on a slave mount fails with EROFS (and changes nothing)
#  6. freshness: 200 rounds of change-on-master / wait-for-applied_lsn / read-on-slave:
#     no stale content, stat or listing
#  7. clean stop of all nodes
: "${E2E_TMPDIR:=/var/tmp}"
: "${E2E_TIMEOUT:=200}"
export E2E_TMPDIR E2E_TIMEOUT
source "$(dirname "$0")/lib.sh"
e2e_setup
require_tools fusermount3 git tar setfattr
source "$E2E_DIR/../lib/cluster.sh"
RC="$E2E_DIR/../lib/repl_check.py"
SRC="${REPLFS_SRC:-$(cd "$E2E_DIR/../.." && pwd)}"

cluster_init || fatal "cannot set up the cluster (replfs keygen)"

# ------------------------------------------------------------ 1. cluster comes up
cluster_start_master || fatal "master did not start"
cluster_start_slave 1 || fatal "slave 1 did not start"
# slave 2 the minimal way a user starts one: daemonized, no --listen of its own
CL_DAEMONIZE=1 CL_NO_LISTEN=1 cluster_start_slave 2 || fatal "slave 2 (daemonized, no --listen) did not start"
M="${CL_MNT[0]}" S1="${CL_MNT[1]}" S2="${CL_MNT[2]}"
check_eq "$(node_field 0 role)" master "master's status says role master"
for i in 1 2; do
    check_eq "$(node_field $i role)" slave "slave $i's status says role slave"
    check_eq "$(node_field $i master.url)" "${CL_URL[0]}" "slave $i's status names the master's URL"
done
ID0="$(node_field 0 node_id)" ID1="$(node_field 1 node_id)" ID2="$(node_field 2 node_id)"
if [[ "$ID0" =~ ^[0-9a-f]+$ && "$ID1" =~ ^[0-9a-f]+$ && "$ID2" =~ ^[0-9a-f]+$ ]] &&
   [ "$ID0" != "$ID1" ] && [ "$ID1" != "$ID2" ] && [ "$ID0" != "$ID2" ]; then
    pass "three distinct hex node ids ($ID0 $ID1 $ID2)"
else
    fail "node ids not three distinct hex strings: '$ID0' '$ID1' '$ID2'"
fi
touch "$S1/probe" 2> "$WORK/probe.err"
if grep -q "Read-only file system" "$WORK/probe.err"; then pass "slave mount is read-only right after start"
else fail "touch on a fresh slave mount: expected 'Read-only file system', got: $(cat "$WORK/probe.err")"; fi

# a key file readable by group/others is refused with a one-line error
cp "$CL_KEY" "$WORK/open.key" && chmod 644 "$WORK/open.key"
init_store "$WORK/kstore"
mkdir -p "$WORK/kmnt"
timeout 30 "$REPLFS" mount "$WORK/kstore" "$WORK/kmnt" --slave-of "${CL_URL[0]}" --key "$WORK/open.key" \
    > "$WORK/kmount.out" 2> "$WORK/kmount.err" < /dev/null
rc=$?
if [ $rc -ne 0 ] && grep -q '^replfs: .*key' "$WORK/kmount.err" && [ "$(wc -l < "$WORK/kmount.err")" -le 2 ]; then
    pass "key file mode 644 refused (exit $rc): $(head -n 1 "$WORK/kmount.err")"
else
    fail "key file mode 644: want a non-zero exit and a 'replfs: ...key...' line; got exit $rc, stderr: $(head -c 400 "$WORK/kmount.err")"
    e2e_is_mounted "$WORK/kmnt" && { fusermount3 -u "$WORK/kmnt" || umount -l "$WORK/kmnt"; }
fi

# ------------------------------------------- 2. workload + half-write readers
mkdir "$M/pat" || fail "mkdir $M/pat"
STOP="$WORK/readers.stop"
cluster_bg "$PY" "$RC" patread "$S1/pat" --stop "$STOP" > "$WORK/reader1.out" 2>&1; R1=$CL_LAST_BG
cluster_bg "$PY" "$RC" patread "$S2/pat" --stop "$STOP" > "$WORK/reader2.out" 2>&1; R2=$CL_LAST_BG
cluster_bg "$PY" "$RC" patwrite "$M/pat" --files 1500 > "$WORK/patwrite.out" 2>&1; PW=$CL_LAST_BG

log "workload on the master"
mkdir "$M/ops" && timeout 120 "$PY" "$E2E_DIR/fsops.py" "$M/ops" > "$WORK/fsops.log" 2>&1 ||
    fail "fsops.py on the master failed: $(tail -n 3 "$WORK/fsops.log")"
mkdir -p "$M/misc/sub/deeper" "$M/misc/empty"
for i in $(seq 1 40); do
    head -c $((i * 6007)) /dev/urandom > "$M/misc/f$i" || fail "write misc/f$i"
done
for i in 1 2 3 4; do dd if=/dev/urandom of="$M/misc/big$i" bs=1M count=1 status=none || fail "dd big$i"; done
mv "$M/misc/f1" "$M/misc/sub/f1_moved" && mv "$M/misc/sub/deeper" "$M/misc/deeper_moved" &&
    ln "$M/misc/f2" "$M/misc/sub/f2_hard" && ln "$M/misc/f2" "$M/misc/f2_hard2" &&
    ln -s ../f3 "$M/misc/sub/f3_sym" && ln -s /nonexistent/target "$M/misc/dangling" &&
    setfattr -n user.color -v blue "$M/misc/f4" && setfattr -n user.bin -v 0x00ff10 "$M/misc/f4" &&
    setfattr -n user.dir -v yes "$M/misc/sub" && setfattr -n user.gone -v x "$M/misc/f5" &&
    setfattr -x user.gone "$M/misc/f5" &&
    chmod 4755 "$M/misc/f6" && chmod 0600 "$M/misc/f7" && chmod 1777 "$M/misc/empty" &&
    chown 1234:4321 "$M/misc/f8" && chown -h 77:88 "$M/misc/dangling" &&
    truncate -s 100 "$M/misc/f9" && truncate -s 3M "$M/misc/f10" && truncate -s 0 "$M/misc/f11" &&
    rm "$M/misc/f12" && rmdir "$M/misc/deeper_moved" &&
    printf 'appended\n' >> "$M/misc/f13" &&
    dd if=/dev/urandom of="$M/misc/big1" bs=4096 count=3 seek=17 conv=notrunc status=none &&
    touch -d '2011-11-11 11:11:11.123456789' "$M/misc/f14" &&
    touch -h -d '2001-01-01 01:01:01' "$M/misc/sub/f3_sym" ||
    fail "misc metadata ops on the master"
mkdir "$M/tarx" && tar cf - -C /usr/include linux | tar xf - -C "$M/tarx" || fail "tar x on the master"
git -c safe.directory='*' clone -q --no-hardlinks "$SRC" "$M/git" > "$WORK/git.log" 2>&1 ||
    fail "git clone on the master: $(tail -n 3 "$WORK/git.log")"
# directory mtimes last, so nothing changes them afterwards
touch -d '2005-05-05 05:05:05.5' "$M/misc/sub" "$M/misc/empty" "$M/tarx/linux"
timeout 120 bash -c "while kill -0 $PW 2>/dev/null; do sleep 0.1; done"
wait "$PW" || fail "pattern writer failed: $(tail -n 3 "$WORK/patwrite.out")"
log "workload done: master lsn $(node_field 0 lsn)"

# ------------------------------------------------------------ 3. caught up, identical
for i in 1 2; do
    wait_caught_up $i 90 && pass "slave $i caught up (applied_lsn = master lsn = $(node_field 0 lsn))"
done
touch "$STOP"
for r in "$R1:1" "$R2:2"; do
    if timeout 60 bash -c "while kill -0 ${r%%:*} 2>/dev/null; do sleep 0.1; done"; then
        wait "${r%%:*}"; rc=$?
    else
        rc=124
    fi
    out="$WORK/reader${r#*:}.out"
    if [ $rc -eq 0 ]; then pass "slave ${r#*:}: reader during apply saw no half-written file ($(tail -n 1 "$out"))"
    else fail "slave ${r#*:}: reader during apply (exit $rc): $(head -n 12 "$out")"; fi
done

treedump "$M" "$WORK/master.dump"
for i in 1 2; do
    treedump "${CL_MNT[$i]}" "$WORK/slave$i.dump"
    cmp_files "$WORK/master.dump" "$WORK/slave$i.dump" "slave $i tree identical to the master's (content, modes, owners, links, xattrs, all mtimes)"
done
log "tree: $(wc -l < "$WORK/master.dump") entries"

# ------------------------------------------------------------ 4. status + metrics
LSN="$(node_field 0 lsn)"
wait_field 0 'sorted((s["node_id"], s["state"], s["acked_lsn"] == j["lsn"]) for s in j["slaves"])' \
    "$("$PY" -c 'import json,sys; print(json.dumps(sorted([(sys.argv[1], "streaming", True), (sys.argv[2], "streaming", True)])))' "$ID1" "$ID2")" 20 &&
    pass "master's status lists both slaves, streaming, acked_lsn = lsn"
wait_field 0 'max(s["lag_records"] for s in j["slaves"])' 0 10 && pass "master's status: lag_records 0 for both slaves"
check_eq "$(node_field 0 mode)" async "master mode async (no --sync)"
check_eq "$(node_field 1 master.state)" streaming "slave 1's view of the master: streaming"
check_eq "$(node_field 1 master.master_lsn)" "$LSN" "slave 1 knows the master's lsn"
cluster_metrics 0 > "$WORK/metrics0" 2>&1 || fail "GET /metrics on the master: $(head -c 300 "$WORK/metrics0")"
missing=""
for n in replfs_lsn replfs_applied_lsn replfs_epoch replfs_sync_degraded replfs_slave_acked_lsn \
         replfs_slave_lag_records replfs_slave_lag_bytes replfs_slave_lag_seconds \
         replfs_snapshots_sent_total replfs_snapshots_received_total; do
    grep -qE "^$n(\{| )" "$WORK/metrics0" || missing+=" $n"
done
[ -z "$missing" ] && pass "master /metrics has every documented metric" ||
    fail "master /metrics lacks:$missing (first lines: $(head -n 5 "$WORK/metrics0" | tr '\n' '|'))"
check_eq "$(metric 0 replfs_lsn)" "$LSN" "metrics replfs_lsn = status lsn"
check_eq "$(metric 0 replfs_sync_degraded)" 0 "metrics replfs_sync_degraded 0"
for i in 1 2; do
    id="$(node_field $i node_id)"
    check_eq "$(metric 0 replfs_slave_acked_lsn "node=\"$id\"")" "$LSN" "metrics replfs_slave_acked_lsn{node=\"$id\"} = lsn"
done
check_eq "$(metric 1 replfs_applied_lsn)" "$LSN" "slave 1 metrics replfs_applied_lsn = master lsn"
for i in 0 1; do
    timeout 10 "$REPLFS" status "${CL_MNT[$i]}" > "$WORK/human$i" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && grep -qi "${CL_ROLE[$i]}" "$WORK/human$i"; then pass "replfs status (table) on node $i works"
    else fail "replfs status ${CL_MNT[$i]} (no --json): exit $rc: $(head -c 300 "$WORK/human$i")"; fi
done

# ------------------------------------------------------------ 5. EROFS on a slave
"$PY" "$RC" erofs "$S1" --file misc/f4 --dir misc/empty > "$WORK/erofs.out" 2>&1
if [ $? -eq 0 ]; then pass "every mutating syscall on a slave mount fails with EROFS ($(grep -c '^ok' "$WORK/erofs.out") ops)"
else fail "writes on a slave mount: $(grep FAIL "$WORK/erofs.out" | head -n 8 | tr '\n' ';')"; fi
shell_erofs() {  # shell_erofs LABEL CMD...: the command must fail with "Read-only file system"
    local l="$1"; shift
    if "$@" > "$WORK/sh_erofs.out" 2>&1; then fail "slave: '$l' succeeded"
    elif grep -q "Read-only file system" "$WORK/sh_erofs.out"; then pass "slave: '$l' -> Read-only file system"
    else fail "slave: '$l' failed without EROFS: $(head -c 200 "$WORK/sh_erofs.out")"; fi
}
shell_erofs "touch new" touch "$S2/misc/newfile"
shell_erofs "mkdir" mkdir "$S2/misc/newdir"
shell_erofs "rm" rm -f "$S2/misc/f4"
shell_erofs "chmod" chmod 600 "$S2/misc/f4"
shell_erofs "echo >>" bash -c "echo x >> '$S2/misc/f4'"
shell_erofs "mv" mv "$S2/misc/f4" "$S2/misc/f4.moved"
for i in 1 2; do
    treedump "${CL_MNT[$i]}" "$WORK/slave$i.after_erofs"
    cmp_files "$WORK/master.dump" "$WORK/slave$i.after_erofs" "slave $i unchanged by the refused writes"
done
check_eq "$(node_field 0 lsn)" "$LSN" "refused slave writes did not reach the master's journal"

# ------------------------------------------------------------ 6. freshness
log "freshness: 200 rounds master write -> slave 1 applied -> read on slave 1"
timeout 150 "$PY" "$RC" fresh "$M" "$S1" --replfs "$REPLFS" --n 200 > "$WORK/fresh.out" 2>&1
rc=$?
if [ $rc -eq 0 ]; then pass "freshness: no stale read in 200 rounds ($(head -n 1 "$WORK/fresh.out"))"
else fail "freshness (exit $rc):"; head -n 20 "$WORK/fresh.out" | sed 's/^/    /'; cluster_diag 1; fi

# ------------------------------------------------------------ 7. clean stop
for i in 2 1 0; do
    cluster_stop $i && pass "node $i: clean umount, daemon exited"
done
e2e_finish
