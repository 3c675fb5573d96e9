#!/bin/bash
# Synchronous replication: master --sync --sync-timeout 2000, one slave.
#  0. with the slave streaming, status mode is "sync"; a write + fsync on the master
#     returns quickly and, the moment it returns, the slave's journal holds the write
#  b. slave SIGKILLed: the next fsync on the master blocks about the timeout (2 s) and
#     then succeeds; status mode becomes "degraded" (metrics replfs_sync_degraded 1, the
#     master's log says so); later fsyncs are fast. Slave restarted: after catch-up the
#     mode returns to "sync" (replfs_sync_degraded 0)
#  a. slave SIGSTOPped, 32 MiB written + fsync on the master, slave SIGCONTed 0.8 s later:
#     fsync must not have returned before; SIGKILL to the master the instant fsync
#     returns: `replfs journal dump SLAVE_STORE` holds all 32 MiB of writes of that file,
#     and once the slave has applied its journal the file on the slave mount has exactly
#     the content written
#  c. a new cluster with --sync --strict: the moment a plain write() (no fsync) or a
#     mkdir returns on the master, the slave's journal has the record; with the slave
#     SIGSTOPped, write() and mkdir do not return until it is resumed
#  d. two slaves: with --sync one killed slave changes nothing (fsync fast, the live one
#     has the write, mode stays sync); with --sync=2 it costs one fsync the timeout and
#     the mode degrades; both back -> sync, and (--sync=2) both journals have the write
: "${E2E_TMPDIR:=/var/tmp}"
: "${E2E_TIMEOUT:=200}"
export E2E_TMPDIR E2E_TIMEOUT
source "$(dirname "$0")/lib.sh"
e2e_setup
require_tools fusermount3
source "$E2E_DIR/../lib/cluster.sh"
RC="$E2E_DIR/../lib/repl_check.py"
TIMEOUT_MS=2000

num() { [[ "$1" =~ ^[0-9]+$ ]]; }
# timed_fsync PATH -> sets FS_MS (float ms); records a failure if the fsync failed
timed_fsync() {
    local out
    FS_MS=""
    out="$(timeout 60 "$PY" "$RC" timed-fsync "$1" 2>&1)" || { fail "fsync of $1 failed: $(tail -n 2 <<<"$out")"; return 1; }
    FS_MS="$(awk '/^fsync_ms/ { print $2 }' <<<"$out")"
    [ -n "$FS_MS" ]
}
ms_lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 < b + 0) }'; }
# slave_has_write NODE NAME: the slave's journal holds a write record for NAME
slave_journal() { timeout 60 "$REPLFS" journal dump "${CL_STORE[$1]}" 2> "$WORK/jdump.err"; }
slave_has() {  # slave_has NODE OP NAME
    slave_journal "$1" | awk -v op="$2" -v n="$3" '
        { for (i = 1; i <= NF; i++) if ($i == op) { if ($(i + 1) == n) f = 1; break } }
        END { exit !f }'
}

# ======================================================= 0. sync mode, slave present
cluster_init || fatal "cannot set up the cluster"
cluster_start_master --sync --sync-timeout "$TIMEOUT_MS" || fatal "master --sync did not start"
cluster_start_slave 1 || fatal "slave did not start"
M="${CL_MNT[0]}" S="${CL_MNT[1]}"
wait_caught_up 1 30 || fatal "slave did not catch up"
wait_field 0 mode sync 20 && pass "0: master mode is 'sync' with the slave streaming"
log "0: status sync_count=$(node_field 0 sync_count)"
check_eq "$(metric 0 replfs_sync_degraded)" 0 "0: replfs_sync_degraded 0"
mkdir "$M/s" || fail "mkdir on the master"
timed_fsync "$M/s/present"
if ms_lt "$FS_MS" 1500; then pass "0: fsync with the slave present took ${FS_MS} ms"
else fail "0: fsync with the slave present took ${FS_MS} ms (>= 1.5 s, the timeout is 2 s)"; cluster_diag 1; fi
slave_has 1 write s/present && pass "0: when fsync returned, the slave's journal had the write" ||
    fail "0: fsync returned but the slave's journal has no 'write s/present' record: $(slave_journal 1 | tail -n 3 | tr '\n' '|') $(head -c 200 "$WORK/jdump.err")"

# ======================================================= b. slave gone -> degraded
cluster_kill 1 || fatal "b: could not kill the slave"
timed_fsync "$M/s/after_kill"
if ms_lt 1000 "$FS_MS" && ms_lt "$FS_MS" $((TIMEOUT_MS + 4000)); then
    pass "b: first fsync after the slave died blocked ${FS_MS} ms (timeout ${TIMEOUT_MS}) and succeeded"
else
    fail "b: first fsync after the slave died took ${FS_MS:-?} ms; expected about the ${TIMEOUT_MS} ms timeout"
fi
wait_field 0 mode degraded 5 && pass "b: master mode is 'degraded' with the slave gone"
check_eq "$(metric 0 replfs_sync_degraded)" 1 "b: replfs_sync_degraded 1"
if grep -qi 'degrad' "${CL_LOG[0]}"; then pass "b: the master's log says so: $(grep -i -m1 degrad "${CL_LOG[0]}")"
else fail "b: no 'degraded' in the master's log (tail: $(tail -n 5 "${CL_LOG[0]}" | tr '\n' '|'))"; fi
timed_fsync "$M/s/degraded"
ms_lt "$FS_MS" 1500 && pass "b: fsync while degraded is fast (${FS_MS} ms)" ||
    fail "b: fsync while degraded took ${FS_MS} ms: it still waits for the dead slave"
timeout 60 "$PY" "$RC" load "$M/deg_load" --stop /nonexistent --seed 7 --max-seconds 1 > "$WORK/degload.out" 2>&1 ||
    fail "b: load while degraded: $(tail -n 3 "$WORK/degload.out")"
cluster_start_slave 1 || fatal "b: slave did not restart"
wait_caught_up 1 60 && pass "b: restarted slave caught up"
wait_field 0 mode sync 20 && pass "b: mode back to 'sync' after the slave caught up"
check_eq "$(metric 0 replfs_sync_degraded)" 0 "b: replfs_sync_degraded back to 0"
timed_fsync "$M/s/resynced"
ms_lt "$FS_MS" 1500 && pass "b: fsync after re-sync took ${FS_MS} ms" || fail "b: fsync after re-sync took ${FS_MS} ms"
slave_has 1 write s/resynced && pass "b: after re-sync, fsync returns with the write in the slave's journal" ||
    fail "b: fsync returned but the slave's journal has no 'write s/resynced'"

# ======================================================= a. fsync, then SIGKILL master
# The slave is SIGSTOPped while the master writes 32 MiB and fsyncs, and SIGCONTed
# 0.8 s later (well inside the 2 s timeout): fsync must not return before that (async
# shipping on loopback is fast enough to hide a missing wait otherwise), and the
# master is SIGKILLed the instant it returns.
MPID="$(cl_daemon_pid 0)" SPID="$(cl_daemon_pid 1)"
kill -STOP "$SPID" || fail "a: cannot SIGSTOP the slave"
cluster_bg "$PY" "$RC" fsync-kill "$M/s/killme" --mb 32 --pid "$MPID" > "$WORK/fsynckill.out" 2>&1
FK=$CL_LAST_BG
sleep 0.8
TCONT="$(date +%s.%N)"
kill -CONT "$SPID"
timeout 30 bash -c "while kill -0 $FK 2>/dev/null; do sleep 0.05; done"
wait "$FK"
rc=$?
out="$(cat "$WORK/fsynckill.out")"
log "a: $out (slave SIGCONTed at $TCONT)"
[ $rc -eq 0 ] || fail "a: write+fsync+kill helper exited $rc: $out"
SHA="$(awk '/^sha256/ { print $2 }' <<<"$out")"
RET="$(awk '/^sha256/ { print $8 }' <<<"$out")"
if [ -n "$RET" ] && ms_lt "$TCONT" "$RET"; then
    pass "a: fsync did not return while the only slave was stopped (returned $(awk -v a="$RET" -v b="$TCONT" 'BEGIN { printf "%.0f", (a - b) * 1000 }') ms after SIGCONT)"
else
    fail "a: fsync returned at ${RET:-?}, BEFORE the stopped slave was resumed at $TCONT: it did not wait for the slave"
fi
cluster_dead 0 || fail "a: master did not die"
slave_journal 1 > "$WORK/slave.journal"
WBYTES="$(awk '{ for (i = 1; i <= NF; i++) if ($i == "write") { if ($(i + 1) == "s/killme") for (k = i + 2; k <= NF; k++) if ($k ~ /^len=/) { sub(/len=/, "", $k); s += $k } break } }
    END { print s + 0 }' "$WORK/slave.journal")"
check_eq "$WBYTES" $((32 * 1048576)) "a: the slave's journal holds all 32 MiB of writes to s/killme, fsynced just before the master was killed"
t0=$SECONDS
while :; do
    ok="$(node_field 1 'j["applied_lsn"] == j["lsn"]' 2>/dev/null)"
    [ "$ok" = true ] && break
    if [ $((SECONDS - t0)) -ge 30 ]; then fail "a: slave did not apply its own journal within 30s"; cluster_diag 1; break; fi
    sleep 0.1
done
GOT="$(sha256sum "$S/s/killme" 2>&1 | cut -d' ' -f1)"
check_eq "$GOT" "$SHA" "a: the slave mount has the fsynced file's exact content after the master died"
log "a: slave's view of the master now: $(node_field 1 master.state 2>&1)"
cluster_stop 1 || fail "a: clean stop of the slave"

# ======================================================= c. --strict
cluster_stop_all quiet
cluster_init || fatal "c: cannot set up the cluster"
cluster_start_master --sync --strict --sync-timeout "$TIMEOUT_MS" || fatal "c: master --sync --strict did not start"
cluster_start_slave 1 || fatal "c: slave did not start"
M="${CL_MNT[0]}"
wait_caught_up 1 30 || fatal "c: slave did not catch up"
wait_field 0 mode sync 20 || fatal "c: master not in sync mode"
bad=0
for k in 1 2 3 4 5; do
    out="$(timeout 60 "$PY" "$RC" strict-write "$M/strict_$k" --replfs "$REPLFS" --store "${CL_STORE[1]}" 2>&1)" ||
        { bad=$((bad + 1)); fail "c: strict write $k: $out"; }
done
[ $bad -eq 0 ] && pass "c: --strict: 5/5 plain write()s were in the slave's journal the moment they returned"
# with the slave stopped, a plain write() must not return until it is resumed
SPID="$(cl_daemon_pid 1)"
kill -STOP "$SPID" || fail "c: cannot SIGSTOP the slave"
cluster_bg "$PY" "$RC" strict-write "$M/strict_stopped" --replfs "$REPLFS" --store "${CL_STORE[1]}" > "$WORK/strict_stopped.out" 2>&1
SW=$CL_LAST_BG
sleep 0.6
TCONT="$(date +%s.%N)"
kill -CONT "$SPID"
timeout 30 bash -c "while kill -0 $SW 2>/dev/null; do sleep 0.05; done"
wait "$SW"; rc=$?
RET="$(awk '/^write_ms/ { print $6 }' "$WORK/strict_stopped.out")"
if [ $rc -eq 0 ] && [ -n "$RET" ] && ms_lt "$TCONT" "$RET"; then
    pass "c: --strict: write() waited for the stopped slave (returned $(awk -v a="$RET" -v b="$TCONT" 'BEGIN { printf "%.0f", (a - b) * 1000 }') ms after SIGCONT) and the slave's journal has it"
else
    fail "c: --strict with the slave stopped: write() returned at ${RET:-?} (slave resumed at $TCONT), exit $rc: $(head -n 4 "$WORK/strict_stopped.out")"
fi
kill -STOP "$SPID"
mkdir "$M/strict_dir" &
MK=$!
sleep 0.6
if kill -0 "$MK" 2>/dev/null; then pass "c: --strict: mkdir blocks while the slave is stopped"
else fail "c: --strict: mkdir returned while the only slave was stopped"; fi
kill -CONT "$SPID"
wait "$MK"
slave_has 1 mkdir strict_dir && pass "c: --strict: mkdir returned with the record in the slave's journal" ||
    fail "c: --strict: mkdir returned but the slave's journal has no 'mkdir strict_dir'"
cluster_stop 1 && cluster_stop 0 && pass "c: clean stop"

# ======================================================= d. two slaves, --sync and --sync=2
for n in 1 2; do
    cluster_stop_all quiet
    cluster_init || fatal "d: cannot set up the cluster"
    if [ $n = 1 ]; then cluster_start_master --sync --sync-timeout "$TIMEOUT_MS" || fatal "d: master --sync"
    else cluster_start_master --sync=2 --sync-timeout "$TIMEOUT_MS" || fatal "d: master --sync=2"; fi
    cluster_start_slave 1 && cluster_start_slave 2 || fatal "d: slaves did not start"
    M="${CL_MNT[0]}"
    wait_caught_up 1 30 && wait_caught_up 2 30 || fatal "d: slaves did not catch up"
    wait_field 0 mode sync 20 || fail "d$n: mode not sync with both slaves streaming"
    cluster_kill 2 || fatal "d$n: cannot kill slave 2"
    timed_fsync "$M/d$n"
    if [ $n = 1 ]; then
        ms_lt "$FS_MS" 1500 && pass "d1: --sync with 2 slaves, one killed: fsync still fast (${FS_MS} ms; the other one acks)" ||
            fail "d1: --sync with 2 slaves, one killed: fsync took ${FS_MS} ms (it waited for the dead one)"
        check_eq "$(node_field 0 mode)" sync "d1: mode stays 'sync' while one slave of two is alive"
        slave_has 1 write "d$n" && pass "d1: the live slave's journal had the write when fsync returned" ||
            fail "d1: fsync returned without the write in the live slave's journal"
    else
        ms_lt 1000 "$FS_MS" && ms_lt "$FS_MS" $((TIMEOUT_MS + 4000)) &&
            pass "d2: --sync=2, one of two slaves killed: fsync waited ${FS_MS} ms (the timeout) and succeeded" ||
            fail "d2: --sync=2, one of two slaves killed: fsync took ${FS_MS} ms, expected about ${TIMEOUT_MS}"
        wait_field 0 mode degraded 5 && pass "d2: --sync=2 with one slave left: mode 'degraded'"
    fi
    cluster_start_slave 2 || fatal "d$n: slave 2 did not restart"
    wait_caught_up 2 30 && wait_field 0 mode sync 20 && pass "d$n: both slaves back: mode 'sync'"
    timed_fsync "$M/d$n.after"
    ms_lt "$FS_MS" 1500 && pass "d$n: fsync with both slaves back: ${FS_MS} ms" || fail "d$n: fsync with both slaves back took ${FS_MS} ms"
    have=0
    for i in 1 2; do slave_has $i write "d$n.after" && have=$((have + 1)); done
    [ "$have" -ge "$n" ] && pass "d$n: when fsync returned, $have slave journal(s) had the write (--sync=$n)" ||
        fail "d$n: fsync returned with the write in only $have slave journal(s), --sync=$n"
done
cluster_stop 2 && cluster_stop 1 && cluster_stop 0 && pass "d: clean stop"
e2e_finish
