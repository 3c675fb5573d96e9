#!/bin/bash
# Network faults between real daemons (issue 6), made by tests/lib/faultproxy.py: every
# node has its own fault proxy in front of its --listen port and advertises it
# (CL_PROXY=1 in cluster.sh), so every replication request, also a slave's search for its
# master among its peers, crosses the proxy of the node it goes to.
# One cluster: master --sync --sync-timeout 2000, one slave. Under each fault an fsync
# writer (acklog.py sync-writer: every operation fsynced, each acknowledgement logged) and
# a mixed metadata load run on the master. After each fault is healed: the slave has
# applied exactly the master's LSN, every acknowledged operation is on the slave mount
# (acklog.py check), and `replfs verify` (master and slave, through the proxies) exits 0.
#  1. partition, links cut (connections reset, new ones refused) both ways: the slave stops
#     advancing, the first fsync waits out the 2 s timeout and the mode becomes
#     "degraded", later fsyncs go on without the slave; healed: back to "sync"
#  2. partition, blackholed (requests and answers vanish, connections stay open and
#     silent, also after the heal): same checks; the slave gives the silent connections
#     up (no byte for 5 s) and reconnects; the time back to sync is logged
#  3. delay 20 ms + jitter up to 60 ms on every request to the master: the mode stays sync
#  4. duplicate (p=0.3 each: the copy replayed after the answer, or sent first and its
#     answer handed back instead): the master refuses the copies as replays (status
#     refused.replay and /metrics grow by at least the proxy's count of copies answered
#     403), and the stream goes on
#  5. reorder (p=0.5): a request is held until a later one has been forwarded (the fetch
#     and ack threads' counters arrive out of order): accepted, the stream goes on
#  6. drop-response (p=0.25): the master did the work, the slave never hears: it
#     reconnects and refetches
#  7. regression: one lost answer (a FETCH swallowed, the link healed at once) with the
#     default sync timeout (10 s): the next fsync returns without degrading, because the
#     slave gives up a silent connection after 5 s (it used to wait out its 16 s timeout)
#  8. opt-in (NETFAULT_MASTER=1): a partitioned master with two slaves in sync mode
#  9. verify while a slave cannot answer: its link blackholed (the VERIFY request
#     vanishes; the slave still fetches), then the slave stopped (SIGSTOP): verify ends
#     within 40 s with exit 2, naming the slave not verified (it used to wait up to an
#     hour, and later verifies were refused as busy); healed, verify exits 0. Then a
#     slave whose hashing takes 25 s (REPLFS_FAULT=verify:hash=stall25), longer than the
#     15 s without a sign of work after which a slave is given up: it is verified, since
#     it names the verify it works on in every FETCH
# Each step checks the proxy's counters, so a fault that did not happen fails the step.
# FAULT_SECONDS (default 2) is how long each fault of steps 3-6 lasts, LOAD_SECONDS
# (default 0.5) how long the unthrottled metadata load runs at the start of each step.
: "${E2E_TMPDIR:=/var/tmp}"
: "${E2E_TIMEOUT:=240}"
export E2E_TMPDIR E2E_TIMEOUT
source "$(dirname "$0")/lib.sh"
e2e_setup
require_tools fusermount3
export CL_PROXY=1
source "$E2E_DIR/../lib/cluster.sh"
ACKLOG="$E2E_DIR/../lib/acklog.py"
RC="$E2E_DIR/../lib/repl_check.py"
FAULT_SECONDS="${FAULT_SECONDS:-2}"
LOAD_SECONDS="${LOAD_SECONDS:-0.5}"
num() { [[ "$1" =~ ^[0-9]+$ ]]; }

cluster_init || fatal "cannot set up the cluster"
cluster_start_master --sync --sync-timeout 2000 || fatal "master did not start"
cluster_start_slave 1 || fatal "slave did not start"
M="${CL_MNT[0]}" S="${CL_MNT[1]}"
wait_caught_up 1 30 || fatal "slave did not catch up"
wait_field 0 mode sync 20 || fatal "master not in sync mode"
SID="$(node_field 1 node_id)"
[[ "$SID" =~ ^[0-9a-f]{32}$ ]] || fatal "slave node_id '$SID'"
# the wiring: each node knows the other only by its proxy
check_eq "$(node_field 1 master.url)" "${CL_URL[0]}" "the slave follows the master's proxy"
check_eq "$(node_field 0 slaves.0.url)" "${CL_URL[1]}" "the master knows the slave by its proxy (--advertise)"

# ------------------------------------------------------------------ helpers
W_PIDS=()
writers_start() {   # writers_start NAME: fsync writer + mixed load on the master
    local n="$1"
    rm -f "$WORK/$n.stop"
    cluster_bg "$PY" "$ACKLOG" sync-writer "$M" "$n" --log "$WORK/$n.ack" --seed "${#n}" \
        --stop "$WORK/$n.stop" --max-seconds 150 > "$WORK/$n.writer.out" 2>&1
    W_PIDS=("$CL_LAST_BG")
    # unthrottled: a short burst, or the slave could not keep up on a busy machine
    cluster_bg "$PY" "$RC" load "$M/$n.load" --stop "$WORK/$n.stop" --seed 3 \
        --max-seconds "$LOAD_SECONDS" > "$WORK/$n.load.out" 2>&1
    W_PIDS+=("$CL_LAST_BG")
}
acks() { local c; c="$(grep -c '"t": "A"' "$WORK/$1.ack" 2>/dev/null)"; echo "${c:-0}"; }
writers_stop() {    # writers_stop NAME LABEL: both must have run without an error
    local n="$1" l="$2" p rc t0=$SECONDS
    touch "$WORK/$n.stop"
    for p in "${W_PIDS[@]}"; do
        while cl_alive "$p" && [ $((SECONDS - t0)) -lt 60 ]; do sleep 0.1; done
        cl_alive "$p" && { fail "$l: a writer did not stop in 60s"; kill -KILL "$p"; }
        wait "$p" 2>/dev/null
    done
    grep -q 'last_errno none' "$WORK/$n.writer.out" ||
        fail "$l: the fsync writer failed: $(tail -n 2 "$WORK/$n.writer.out")"
    grep -q '^ops' "$WORK/$n.load.out" || fail "$l: the load failed: $(tail -n 2 "$WORK/$n.load.out")"
    log "$l: writer: $(cat "$WORK/$n.writer.out"); load: $(tail -n 1 "$WORK/$n.load.out")"
}
heal() { proxy_set 0 pass; proxy_set 1 pass; }
# converged NAME LABEL: same LSN, every acknowledged op on the slave, verify exits 0
converged() {
    local n="$1" l="$2" out rc
    wait_caught_up 1 60 || return 1
    pass "$l: the slave applied the master's LSN $(node_field 0 lsn)"
    out="$(timeout 60 "$PY" "$ACKLOG" check "$S" --log "$WORK/$n.ack" --sub "$n" 2>&1)" &&
        pass "$l: every acknowledged (fsynced) operation is on the slave ($out)" ||
        fail "$l: acknowledged operations missing on the slave: $(head -n 8 <<<"$out")"
    out="$(timeout 120 "$REPLFS" verify "$M" 2>&1)"
    rc=$?
    if [ $rc -eq 0 ]; then pass "$l: replfs verify exits 0 ($(tail -n 1 <<<"$out"))"
    else fail "$l: replfs verify exited $rc: $(head -n 10 <<<"$out")"; cluster_diag 1; fi
}
pstat() { proxy_stats "$1" "counts.$2"; }
refused_replay() { node_field 0 refused.replay; }

# wait_stalled: the slave's applied_lsn stays below the master's lsn for 1 s while the
# writers run (it is cut off); 0 if so, STALL says what was seen
wait_stalled() {
    local a b m
    a="$(node_field 1 applied_lsn)"
    sleep 1
    b="$(node_field 1 applied_lsn)" m="$(node_field 0 lsn)"
    STALL="slave applied_lsn $a -> $b, master lsn $m"
    num "$a" && num "$b" && num "$m" && [ "$a" = "$b" ] && [ "$b" -lt "$m" ]
}

# faulted MODE: what the master's proxy counted for it
faulted() {
    if [ "$1" = cut ]; then
        echo $(( $(pstat 0 cut) + $(pstat 0 cut_conn) + $(pstat 0 refused) ))
    else
        pstat 0 blackhole
    fi
}
# partition NAME MODE LABEL: steps 1 and 2
partition() {
    local n="$1" mode="$2" l="$3" a0 a1 t0 s0 s1
    log "$l: begins at ${SECONDS}s"
    writers_start "$n"
    t0=$SECONDS
    until [ "$(acks "$n")" -gt 0 ] || [ $((SECONDS - t0)) -ge 20 ]; do sleep 0.1; done
    [ "$(acks "$n")" -gt 0 ] || fail "$l: no fsync acknowledged in 20s before the partition"
    proxy_mark 0 "step $l"
    s0="$(faulted "$mode")"
    # slave -> master (its fetch, ack and hello go through the master's proxy) and
    # master -> slave (probes) both
    proxy_set 0 "$mode from=$SID" && proxy_set 1 "$mode" || return 1
    t0=$SECONDS
    wait_field 0 mode degraded 20 &&
        pass "$l: the master degraded to async $((SECONDS - t0))s after the partition (sync timeout 2 s)"
    if wait_stalled; then pass "$l: the slave is cut off ($STALL)"
    else fail "$l: the slave kept up through the partition ($STALL)"; fi
    a1="$(acks "$n")"
    sleep 0.5
    [ "$(acks "$n")" -gt "$a1" ] && pass "$l: fsyncs go on while degraded ($a1 -> $(acks "$n") acknowledged)" ||
        fail "$l: no fsync returned while degraded ($a1 -> $(acks "$n"))"
    s1="$(faulted "$mode")"
    [ "$s1" -gt "$s0" ] && pass "$l: the master's proxy hit $((s1 - s0)) connection(s)/request(s) ($mode)" ||
        fail "$l: the master's proxy did not $mode anything: $(proxy_stats 0)"
    heal
    t0=$SECONDS
    proxy_mark 0 "step $l healed"
    wait_field 0 mode sync 60 && pass "$l: back to sync $((SECONDS - t0))s after the heal"
    log "$l: slave state $(node_field 1 master.state), last error: $(node_field 1 master.last_error)"
    writers_stop "$n" "$l"
    converged "$n" "$l"
}

# ================================================================== 1. cut
partition cut cut "1 (cut)"
# ================================================================== 2. blackhole
partition bh blackhole "2 (blackhole)"

# ================================================================== 3-6. lossy links
# fault NAME LABEL RULES: the rules on the master's proxy (the slave's requests) for
# FAULT_SECONDS under the writers, then heal and converge
fault() {
    local n="$1" l="$2" rules="$3" a0
    log "$l: begins at ${SECONDS}s"
    writers_start "$n"
    sleep 0.5
    proxy_mark 0 "step $l"
    proxy_set 0 "$rules" || return 1
    a0="$(acks "$n")"
    sleep "$FAULT_SECONDS"
    [ "$(acks "$n")" -gt "${a0:-0}" ] && pass "$l: fsyncs returned under the fault ($a0 -> $(acks "$n"))" ||
        fail "$l: no fsync returned under the fault"
    heal
    writers_stop "$n" "$l"
    converged "$n" "$l"
}

fault delay "3 (delay)" "delay 20 60"
[ "$(pstat 0 delay)" -gt 20 ] && pass "3: the proxy delayed $(pstat 0 delay) requests" ||
    fail "3: the proxy delayed only $(pstat 0 delay) requests"
check_eq "$(node_field 0 mode)" sync "3: a slow link does not degrade sync mode"

R0="$(refused_replay)" D0="$(pstat 0 dup_refused)"
fault dup "4 (duplicate)" "duplicate first p=0.3; duplicate second p=0.3"
R1="$(refused_replay)" D1="$(pstat 0 dup_refused)"
log "4: proxy duplicated $(pstat 0 duplicate) request(s), $((D1 - D0)) copies answered 403; master refused.replay $R0 -> $R1"
[ $((D1 - D0)) -gt 0 ] && pass "4: the master answered $((D1 - D0)) duplicated request(s) with 403" ||
    fail "4: no duplicated request was refused: $(proxy_stats 0)"
[ $((R1 - R0)) -ge $((D1 - D0)) ] && pass "4: status refused.replay grew by $((R1 - R0)) (>= $((D1 - D0)) copies refused)" ||
    fail "4: status refused.replay grew by $((R1 - R0)), fewer than the $((D1 - D0)) copies refused"
check_eq "$(metric 0 replfs_repl_refused_total 'reason="replay"')" "$R1" "4: /metrics replfs_repl_refused_total{reason=\"replay\"} = status"
grep -q 'replayed' "${CL_LOG[0]}" && pass "4: the master's log names the replays: $(grep -m1 replayed "${CL_LOG[0]}")" ||
    fail "4: no 'replayed' line in the master's log"

R0="$(refused_replay)"
fault reorder "5 (reorder)" "reorder p=0.5"
[ "$(pstat 0 reorder)" -gt 0 ] && pass "5: $(pstat 0 reorder) request(s) were overtaken by a later one ($(pstat 0 reorder_timeout) held alone)" ||
    fail "5: no request was overtaken: $(proxy_stats 0)"
check_eq "$(refused_replay)" "$R0" "5: requests overtaken within the replay window are not refused"

fault drop "6 (drop-response)" "drop-response p=0.25"
[ "$(pstat 0 drop_response)" -gt 0 ] && pass "6: the proxy dropped $(pstat 0 drop_response) answer(s)" ||
    fail "6: no answer was dropped: $(proxy_stats 0)"
check_eq "$(node_field 0 mode)" sync "6: back in sync mode"

# ================================================================== 7. one lost answer
# The master restarted with the default sync timeout (10 s). One FETCH is swallowed (its
# connection stays open and silent), the link healed at once: the slave must give that
# fetch up (no byte for 5 s) and refetch well before the master's fsync would degrade.
# (Before the fix the fetch waited out its 16 s timeout: the next fsync degraded.)
log "7: begins at ${SECONDS}s"
cluster_stop 0 || fail "7: clean stop of the master"
cluster_start_master --sync || fatal "7: master did not restart"
wait_caught_up 1 30 || fatal "7: slave did not reconnect"
wait_field 0 mode sync 30 || fatal "7: master not in sync mode"
DG0="$(metric 0 replfs_sync_degraded_total)" B0="$(pstat 0 blackhole)"
proxy_mark 0 "step 7"
proxy_set 0 "blackhole type=FETCH"
t0=$SECONDS
while [ "$(pstat 0 blackhole)" = "$B0" ] && [ $((SECONDS - t0)) -lt 20 ]; do sleep 0.05; done
proxy_set 0 pass
[ "$(pstat 0 blackhole)" -gt "$B0" ] && pass "7: one FETCH was swallowed" || fail "7: no FETCH was swallowed in 20s"
out="$(timeout 60 "$PY" "$RC" timed-fsync "$M/after_lost_answer" 2>&1)" || fail "7: fsync failed: $out"
log "7: fsync after the lost answer: $out"
check_eq "$(node_field 0 mode)" sync "7: the master is still in sync mode"
check_eq "$(metric 0 replfs_sync_degraded_total)" "$DG0" "7: a lost answer did not degrade sync replication (replfs_sync_degraded_total)"
wait_caught_up 1 30 && cmp -s "$M/after_lost_answer" "$S/after_lost_answer" &&
    pass "7: the slave has the file fsynced after the lost answer" ||
    fail "7: the slave lacks the file fsynced after the lost answer"

# ================================================================== 9. verify, slave silent
# verify_silent LABEL: verify exits 2 within 40 s and names the slave as not verified
verify_silent() {
    local l="$1" t0 out rc
    t0=$SECONDS
    out="$(timeout 120 "$REPLFS" verify "$M" 2>&1)"
    rc=$?
    if [ $rc -eq 2 ] && [ $((SECONDS - t0)) -le 40 ] && grep -q "not verified: ${CL_URL[1]}" <<<"$out"; then
        pass "9: $l: verify exit 2 after $((SECONDS - t0))s, the slave named not verified"
    else
        fail "9: $l: verify exit $rc after $((SECONDS - t0))s: $(head -n 4 <<<"$out")"
    fi
}
log "9: begins at ${SECONDS}s"
wait_caught_up 1 30 || fail "9: the slave did not catch up"
B0="$(pstat 1 blackhole)"
proxy_set 1 blackhole
verify_silent "blackholed slave link"
[ "$(pstat 1 blackhole)" -gt "$B0" ] && pass "9: the slave's proxy swallowed the VERIFY" ||
    fail "9: the slave's proxy swallowed nothing: $(proxy_stats 1)"
proxy_set 1 pass
SP="$(cl_daemon_pid 1)"
kill -STOP "$SP"
verify_silent "stopped slave"
kill -CONT "$SP"
out="$(timeout 120 "$REPLFS" verify "$M" 2>&1)" && pass "9: healed: verify exits 0" ||
    fail "9: healed: verify exited $?: $(head -n 4 <<<"$out")"
cluster_stop 1 || fatal "9: slave did not stop"
REPLFS_FAULT="verify:hash=stall25" cluster_start_slave 1 || fatal "9: slave did not restart"
wait_caught_up 1 30 || fail "9: the restarted slave did not catch up"
t0=$SECONDS
out="$(timeout 120 "$REPLFS" verify "$M" 2>&1)"
rc=$?
if [ $rc -eq 0 ] && [ $((SECONDS - t0)) -ge 25 ]; then
    pass "9: a slave hashing for 25 s is verified (exit 0 after $((SECONDS - t0))s)"
else
    fail "9: slow slave: verify exit $rc after $((SECONDS - t0))s: $(head -n 4 <<<"$out")"
fi
grep -q "fault point verify:hash (arrival 1): stalling 25 s" "${CL_LOG[1]}" &&
    pass "9: the slave's hashing was stalled (its log says so)" ||
    fail "9: the stall did not fire: $(grep -i fault "${CL_LOG[1]}" | tail -n 3)"

# ================================================================== 8. partitioned master
# Opt-in (NETFAULT_MASTER=1, ~30 s more): a new cluster, --sync with two slaves; the
# master's proxy cut (no slave reaches it) and the slaves' proxies cut for the master's
# requests (its probes): it degrades, stays the master (not deposed), the slaves keep
# following it (they find no other master among themselves); healed: sync again, both
# slaves converge, every acknowledged fsync on both, verify exits 0.
if [ "${NETFAULT_MASTER:-0}" = 1 ]; then
    log "8: begins at ${SECONDS}s"
    cluster_stop_all quiet
    cluster_init || fatal "8: cannot set up the cluster"
    cluster_start_master --sync --sync-timeout 2000 || fatal "8: master did not start"
    cluster_start_slave 1 && cluster_start_slave 2 || fatal "8: slaves did not start"
    M="${CL_MNT[0]}"
    MID="$(node_field 0 node_id)"
    wait_caught_up 1 30 && wait_caught_up 2 30 && wait_field 0 mode sync 20 || fatal "8: not in sync"
    writers_start m8
    sleep 1
    proxy_set 0 cut; proxy_set 1 "cut from=$MID"; proxy_set 2 "cut from=$MID"
    t0=$SECONDS
    wait_field 0 mode degraded 20 && pass "8: the partitioned master degraded $((SECONDS - t0))s after the cut"
    sleep 4   # > 3 s: the slaves look for another master among their peers
    check_eq "$(node_field 0 role)" master "8: the partitioned master is still the master"
    check_eq "$(node_field 1 master.url) $(node_field 2 master.url)" "${CL_URL[0]} ${CL_URL[0]}" \
        "8: both slaves still follow it"
    heal; proxy_set 2 pass
    t0=$SECONDS
    wait_field 0 mode sync 60 && pass "8: back to sync $((SECONDS - t0))s after the heal"
    writers_stop m8 "8"
    wait_caught_up 2 60 && pass "8: slave 2 converged"
    out="$(timeout 60 "$PY" "$ACKLOG" check "${CL_MNT[2]}" --log "$WORK/m8.ack" --sub m8 2>&1)" &&
        pass "8: every acknowledged fsync is on slave 2 ($out)" || fail "8: slave 2: $(head -n 8 <<<"$out")"
    S="${CL_MNT[1]}"
    converged m8 "8"
fi

log "all steps done at ${SECONDS}s"
log "master proxy: $(proxy_stats 0)"
log "slave proxy: $(proxy_stats 1)"
cluster_stop_all || fail "clean stop"
e2e_finish
