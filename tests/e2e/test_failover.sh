#!/bin/bash
# Failover: master + 2 slaves on loopback, the master SIGKILLed under load, a slave promoted.
#  a. --sync=2: a single-threaded writer (acklog.py sync-writer: create/overwrite/append/
#     pwrite/truncate/rename/unlink/mkdir, each followed by fsync) logs, outside the mounts,
#     every operation fsync() acknowledged. SIGKILL the master; promote the slave holding
#     the most journal (if the other holds less, promoting that one first must be refused:
#     exit 1, "promote refused"). Checks: promote prints "promoted: MNT is the master at
#     epoch 2 (from LSN N)" with N = its lsn; time from promote start to the first
#     successful write on it (printed; < 10 s); every fsync-acknowledged operation is
#     there with the right content (only the one in flight may differ); the other slave
#     follows it (status master.url) and gets its new writes, trees identical; `replfs
#     verify` on the new master exits 0.
#  b. async: both slaves SIGSTOPped (slave 1 0.7 s before slave 2, so slave 2 holds more)
#     while the writers go on for 1.5 s, the master SIGKILLed, slaves resumed. Promoting
#     slave 1 is refused (slave 2 holds more); slave 2 is promoted. `replfs journal dump`
#     of the dead master's store is taken, then it is mounted with --slave-of the new
#     master: it rejoins; its STORE/recovery/<name>/REPORT lists exactly the records of
#     its journal after the fork LSN (the last LSN before epoch 2 in the new master's status
#     history, = the promoted slave's last LSN), a contiguous suffix;
#     status .recovery names the fork; a file written after the slaves were stopped is
#     saved in recovery/<name>/files with its content and is gone from its tree; its tree
#     equals the new master's; verify exits 0.
#  c. switchover: a writer creates files on the master; `replfs switchover MNT URL1`
#     exits 0; slave 1 is master at epoch 2; the old master (writes now refused) and
#     slave 2 follow it automatically; every file the old master acknowledged is on the
#     new master with its content; trees identical, no recovery folder, verify exits 0.
: "${E2E_TMPDIR:=/var/tmp}"
: "${E2E_TIMEOUT:=240}"
export E2E_TMPDIR E2E_TIMEOUT
source "$(dirname "$0")/lib.sh"
e2e_setup
require_tools fusermount3
source "$E2E_DIR/../lib/cluster.sh"
source "$E2E_DIR/../lib/failover.sh"
RC="$E2E_DIR/../lib/repl_check.py"

# stop_writer PID OUT LABEL: wait (<= 30 s) for a writer that ends by itself (the master died)
stop_writer() {
    local p="$1" out="$2" label="$3"
    if ! timeout 30 bash -c "while kill -0 $p 2>/dev/null; do sleep 0.1; done"; then
        fail "$label still running 30 s after the master died"
        kill -KILL "$p" 2>/dev/null
    fi
    wait "$p" 2>/dev/null
    log "$label: $(tail -n 1 "$out")"
}
acked_count() { grep -c '"t": "A"' "$1"; }

# pick_promote: after the master died, P = the slave holding the most journal, O = the other
pick_promote() {
    fo_wait_stable 1 20 || note "slave 1's lsn still moving 20 s after the master died"
    fo_wait_stable 2 20 || note "slave 2's lsn still moving 20 s after the master died"
    L1="$(node_field 1 lsn)" L2="$(node_field 2 lsn)"
    fo_num "$L1" && fo_num "$L2" || { fail "no lsn from the slaves: '$L1' '$L2'"; fo_diag 1 2; e2e_finish; }
    if [ "$L2" -gt "$L1" ]; then P=2 O=1 LP=$L2 LO=$L1; else P=1 O=2 LP=$L1 LO=$L2; fi
    log "slave lsns after the master died: slave 1 $L1, slave 2 $L2 -> promote slave $P"
}

# refused_less_advanced LABEL: promoting O (holds less than P) must be refused
refused_less_advanced() {
    fo_promote "$O"
    if [ "$FO_RC" = 1 ] && grep -q '^replfs: promote refused' <<<"$FO_ERR"; then
        pass "$1: promote of slave $O (lsn $LO) refused while slave $P holds more (lsn $LP): $(head -n 1 <<<"$FO_ERR")"
    else
        fail "$1: promote of slave $O (lsn $LO < slave $P's $LP): want exit 1 + 'replfs: promote refused: ...', got exit $FO_RC, stdout '$FO_OUT', stderr '$FO_ERR'"
    fi
    check_eq "$(node_field "$O" role)" slave "$1: the refused slave $O is still a slave"
    check_eq "$(node_field "$O" epoch)" 1 "$1: the refused slave $O is still at epoch 1"
}

# do_promote LABEL: promote P (its master is dead: no --force), time to first write
do_promote() {
    local t0
    t0=$(date +%s%N)
    fo_promote "$P"
    if [ "$FO_RC" = 0 ] && [ "$FO_EPOCH" = 2 ]; then
        pass "$1: promote of slave $P: '$FO_OUT' (${FO_MS} ms)"
    else
        fail "$1: promote of slave $P: exit $FO_RC, stdout '$FO_OUT', stderr '$FO_ERR' (want exit 0 and 'promoted: ${CL_MNT[$P]} is the master at epoch 2 (from LSN N)')"
        fo_diag "$P"
        e2e_finish
    fi
    if [ "$FO_FROM" = "$LP" ] || [ "$FO_FROM" = "$((LP + 1))" ]; then
        pass "$1: promote's 'from LSN $FO_FROM' matches the journal position slave $P had ($LP)"
    else
        fail "$1: promote says 'from LSN $FO_FROM', slave $P had LSN $LP"
    fi
    FORK="$(fo_fork_lsn "$P" 2)"
    check_eq "$FORK" "$LP" "$1: status history: epoch 2 starts right after LSN $LP, the last one slave $P had"
    if fo_first_write "${CL_MNT[$P]}" "$t0" 30; then
        log "$1: TIME promote start -> first successful write on the new master: ${FO_FIRST_MS} ms"
        [ "$FO_FIRST_MS" -lt 10000 ] && pass "$1: first write on the new master ${FO_FIRST_MS} ms after promote started (< 10 s)" ||
            fail "$1: first write on the new master only ${FO_FIRST_MS} ms after promote started (>= 10 s)"
    else
        fail "$1: no write succeeded on the promoted node within 30 s: $( { echo x > "${CL_MNT[$P]}/.probe"; } 2>&1)"
        fo_diag "$P"
    fi
    check_eq "$(node_field "$P" role)" master "$1: slave $P's status role is master"
    check_eq "$(node_field "$P" epoch)" 2 "$1: slave $P's status epoch is 2"
    CL_ROLE[$P]=master CL_ROLE[0]=dead
}

# new_master_writes LABEL: a few changes on P; O must follow P and get them
new_master_writes() {
    local mp="${CL_MNT[$P]}" k
    mkdir -p "$mp/newm" || fail "$1: mkdir on the new master"
    for k in 1 2 3 4 5; do
        head -c $((k * 7001)) /dev/urandom > "$mp/newm/n$k" || fail "$1: write newm/n$k on the new master"
    done
    mv "$mp/newm/n1" "$mp/newm/n1.moved" && chmod 600 "$mp/newm/n2" && ln -s n3 "$mp/newm/n3.sym" ||
        fail "$1: metadata ops on the new master"
    fo_wait_follows "$O" "$P" 30 && pass "$1: slave $O follows the new master (master.url ${CL_URL[$P]})"
    fo_wait_caught_up "$O" "$P" 60 && pass "$1: slave $O caught up with the new master (lsn $(node_field "$P" lsn))"
    check_eq "$(node_field "$O" master.master_epoch 2>&1)" 2 "$1: slave $O sees master epoch 2"
    fo_tree_cmp "$P" "$O" "$1: slave $O's tree is identical to the new master's"
}

# ======================================================================= a. sync
cluster_init || fatal "cannot set up the cluster"
cluster_start_master --sync=2 --sync-timeout 3000 || fatal "a: master did not start"
cluster_start_slave 1 && cluster_start_slave 2 || fatal "a: slaves did not start"
M="${CL_MNT[0]}"
wait_caught_up 1 30 && wait_caught_up 2 30 || fatal "a: slaves did not catch up"
wait_field 0 mode sync 20 || fail "a: master not in sync mode"
mkdir -p "$M/base/sub" && for k in $(seq 1 20); do head -c $((k * 977)) /dev/urandom > "$M/base/sub/b$k"; done ||
    fail "a: base tree on the master"
cluster_bg "$PY" "$ACKLOG" sync-writer "$M" load --log "$WORK/a.ack" --seed 11 --max-seconds 90 > "$WORK/a.writer.out" 2>&1
WA=$CL_LAST_BG
sleep 5
n="$(acked_count "$WORK/a.ack")"
log "a: $n operations fsync-acknowledged so far; SIGKILL the master"
cluster_kill 0 || fatal "a: cannot kill the master"
stop_writer "$WA" "$WORK/a.writer.out" "a: writer"
n="$(acked_count "$WORK/a.ack")"
[ "$n" -ge 20 ] && pass "a: writer had $n operations acknowledged by fsync before the master died" ||
    fail "a: only $n fsync-acknowledged operations in 5 s (the check below would be vacuous): $(tail -n 3 "$WORK/a.writer.out")"
pick_promote
if [ "$LP" != "$LO" ]; then refused_less_advanced a; else note "a: both slaves hold the same journal (lsn $LP): the 'another slave holds more' refusal is checked in b"; fi
do_promote a
timeout 120 "$PY" "$ACKLOG" check "${CL_MNT[$P]}" --log "$WORK/a.ack" --sub load > "$WORK/a.check" 2>&1
if [ $? -eq 0 ]; then pass "a: every fsync-acknowledged operation is on the new master with its content ($(head -n 1 "$WORK/a.check"))"
else fail "a: acknowledged operations lost or wrong on the new master:"; head -n 30 "$WORK/a.check" | sed 's/^/    /'; fi
new_master_writes a
fo_verify_clean "$P" a
cluster_stop_all quiet

# ======================================================================= b. async + rejoin
cluster_init || fatal "b: cannot set up the cluster"
cluster_start_master || fatal "b: master did not start"
cluster_start_slave 1 && cluster_start_slave 2 || fatal "b: slaves did not start"
M="${CL_MNT[0]}"
wait_caught_up 1 30 && wait_caught_up 2 30 || fatal "b: slaves did not catch up"
mkdir -p "$M/base" && for k in $(seq 1 20); do head -c $((k * 1231)) /dev/urandom > "$M/base/b$k"; done ||
    fail "b: base tree on the master"
cluster_bg "$PY" "$ACKLOG" sync-writer "$M" load --log "$WORK/b.ack" --seed 12 --max-seconds 90 > "$WORK/b.writer.out" 2>&1
WB=$CL_LAST_BG
cluster_bg "$PY" "$RC" load "$M/mix" --stop /nonexistent --seed 5 --max-seconds 90 > "$WORK/b.mix.out" 2>&1
WM=$CL_LAST_BG
sleep 2
S1PID="$(cl_daemon_pid 1)" S2PID="$(cl_daemon_pid 2)"
kill -STOP "$S1PID" || fail "b: cannot SIGSTOP slave 1"
sleep 0.7
kill -STOP "$S2PID" || fail "b: cannot SIGSTOP slave 2"
sleep 1.5
MARK="marker written on the old master after both slaves stopped $(date +%s%N)"
printf '%s\n' "$MARK" > "$M/after_stop_marker" || fail "b: write after_stop_marker on the master"
sleep 0.2
cluster_kill 0 || fatal "b: cannot kill the master"
kill -CONT "$S1PID" "$S2PID"
stop_writer "$WB" "$WORK/b.writer.out" "b: writer"
stop_writer "$WM" "$WORK/b.mix.out" "b: mixed load"
fo_journal 0 "$WORK/b.old.dump" || fail "b: replfs journal dump of the dead master's store: $(head -c 300 "$WORK/b.old.dump.err")"
OLDLAST="$(grep -o 'lsn=[0-9]*' "$WORK/b.old.dump" | tail -n 1 | cut -d= -f2)"
log "b: the dead master's journal ends at LSN ${OLDLAST:-?} ($(wc -l < "$WORK/b.old.dump") records dumped)"
pick_promote
if [ "$P" = 2 ] && [ "$LO" -lt "$LP" ]; then
    refused_less_advanced b
else
    fail "b: slave 2 (stopped 0.7 s after slave 1 while the master kept writing) should hold more journal than slave 1: lsns $L1 $L2"
fi
do_promote b
fo_num "$OLDLAST" && fo_num "$FORK" && [ "$OLDLAST" -gt "$FORK" ] &&
    pass "b: the dead master holds records the new master never got (LSN $((FORK + 1))..$OLDLAST)" ||
    fail "b: expected the dead master's journal (last LSN ${OLDLAST:-?}) to extend past the fork (LSN ${FORK:-?})"
new_master_writes b

# --- the old master rejoins as a slave of the new one
fo_start_slave_of 0 "$P" || { fo_diag 0 "$P"; fatal "b: the old master could not be mounted with --slave-of the new master"; }
CL_ROLE[0]=slave
fo_wait_caught_up 0 "$P" 90 && pass "b: the old master rejoined as a slave of slave $P and caught up"
check_eq "$(node_field 0 role)" slave "b: the old master's role is slave"
check_eq "$(node_field 0 master.url)" "${CL_URL[$P]}" "b: the old master follows the new master"
mapfile -t RD < <(fo_rec_dirs 0)
if [ ${#RD[@]} -eq 1 ]; then
    pass "b: one recovery folder: ${RD[0]}"
else
    fail "b: want exactly one folder under ${CL_STORE[0]}/recovery, found ${#RD[@]}: ${RD[*]:-none}"
    fo_diag 0
fi
REC="${RD[0]:-${CL_STORE[0]}/recovery/none}"
if [ -f "$REC/REPORT" ]; then
    timeout 60 "$PY" "$ACKLOG" report "$REC/REPORT" --dump "$WORK/b.old.dump" --fork "$FORK" > "$WORK/b.report.check" 2>&1
    if [ $? -eq 0 ]; then pass "b: REPORT lists exactly the journal suffix after the fork: $(head -n 1 "$WORK/b.report.check")"
    else fail "b: REPORT vs the dead master's journal:"; sed 's/^/    /' "$WORK/b.report.check"; head -n 15 "$REC/REPORT" | sed 's/^/    REPORT: /'; fi
    grep -qw "$FORK" "$REC/REPORT" && pass "b: REPORT names the fork LSN $FORK" ||
        fail "b: REPORT does not mention the fork LSN $FORK: $(head -n 5 "$REC/REPORT" | tr '\n' '|')"
    grep -q 'after_stop_marker' "$REC/REPORT" && pass "b: REPORT names after_stop_marker" ||
        fail "b: REPORT does not name after_stop_marker (written after the fork)"
else
    fail "b: no REPORT in $REC: $(ls -la "$REC" 2>&1 | head -n 5 | tr '\n' '|')"
fi
GOT="$(cat "$REC/files/after_stop_marker" 2>&1)"
check_eq "$GOT" "$MARK" "b: recovery/<name>/files/after_stop_marker holds what the old master wrote after the fork"
[ ! -e "${CL_MNT[0]}/after_stop_marker" ] && [ ! -e "${CL_MNT[$P]}/after_stop_marker" ] &&
    pass "b: after_stop_marker is in neither the new master's tree nor the rejoined node's" ||
    fail "b: after_stop_marker (post-fork) is still in a tree: old $(ls "${CL_MNT[0]}/after_stop_marker" 2>&1), new $(ls "${CL_MNT[$P]}/after_stop_marker" 2>&1)"
REC_JSON="$(node_field 0 'j.get("recovery")' 2>&1)"
log "b: status .recovery = $REC_JSON"
RCHK="$(node_field 0 "'ok' if isinstance(j.get('recovery'), list) and len(j['recovery']) >= 1 and all(k in j['recovery'][-1] for k in ('dir', 'fork_epoch', 'fork_lsn', 'records', 'files')) and j['recovery'][-1]['fork_lsn'] == $FORK else 'bad'" 2>&1)"
check_eq "$RCHK" ok "b: status .recovery lists the rejoin (dir, fork_epoch, fork_lsn = $FORK, records, files)"
NREC="$(node_field 0 "(lambda r: r if isinstance(r, int) else len(r))(j['recovery'][-1]['records'])" 2>&1)"
check_eq "$NREC" "$((OLDLAST - FORK))" "b: status .recovery records = number of lost records"
fo_tree_cmp "$P" 0 "b: the rejoined old master's tree is identical to the new master's"
# still following: one more change on the new master reaches it
echo "after rejoin" > "${CL_MNT[$P]}/after_rejoin" || fail "b: write on the new master after the rejoin"
fo_wait_caught_up 0 "$P" 30 && check_eq "$(cat "${CL_MNT[0]}/after_rejoin" 2>&1)" "after rejoin" "b: the rejoined node follows new writes"
fo_verify_clean "$P" b
for i in 0 "$O" "$P"; do cluster_stop "$i" || fail "b: clean stop of node $i"; done
cluster_stop_all quiet

# ======================================================================= c. switchover
cluster_init || fatal "c: cannot set up the cluster"
cluster_start_master || fatal "c: master did not start"
cluster_start_slave 1 && cluster_start_slave 2 || fatal "c: slaves did not start"
M="${CL_MNT[0]}"
wait_caught_up 1 30 && wait_caught_up 2 30 || fatal "c: slaves did not catch up"
cluster_bg "$PY" "$ACKLOG" creator "$M" sw --log "$WORK/c.log" --interval 0.005 --max-seconds 60 > "$WORK/c.creator.out" 2>&1
CP=$CL_LAST_BG
sleep 1
t0=$(date +%s%N)
timeout 60 "$REPLFS" switchover "$M" "${CL_URL[1]}" > "$WORK/c.sw.out" 2> "$WORK/c.sw.err" < /dev/null
rc=$?
SW_MS=$((($(date +%s%N) - t0) / 1000000))
if [ $rc -eq 0 ]; then pass "c: switchover to slave 1 exits 0 in ${SW_MS} ms: $(head -n 1 "$WORK/c.sw.out")"
else fail "c: switchover $M ${CL_URL[1]}: exit $rc: $(cat "$WORK/c.sw.out" "$WORK/c.sw.err" | head -c 500)"; fo_diag 0 1; fi
CL_ROLE[1]=master CL_ROLE[0]=slave
if timeout 15 bash -c "while kill -0 $CP 2>/dev/null; do sleep 0.1; done"; then
    log "c: writer on the old master: $(cat "$WORK/c.creator.out")"
else
    fail "c: the old master still accepts writes 15 s after the switchover"
    kill -TERM "$CP" 2>/dev/null
fi
wait "$CP" 2>/dev/null
check_eq "$(node_field 1 role)" master "c: slave 1 is the master after the switchover"
check_eq "$(node_field 1 epoch)" 2 "c: at epoch 2"
fo_wait_follows 0 1 30 && pass "c: the old master follows slave 1 automatically"
check_eq "$(node_field 0 role)" slave "c: the old master's role is slave"
fo_wait_follows 2 1 30 && pass "c: slave 2 follows slave 1"
timeout 60 "$PY" "$ACKLOG" lost "${CL_MNT[1]}" --log "$WORK/c.log" --files "$WORK/c.none" > "$WORK/c.lost" 2>&1
if [ $? -eq 0 ] && grep -q 'changed after the fork 0) lost 0' "$WORK/c.lost"; then
    pass "c: no loss: every file the old master created is on the new master with its content ($(head -n 1 "$WORK/c.lost"))"
else
    fail "c: files written on the old master before the switchover are missing or different on the new master:"
    head -n 12 "$WORK/c.lost" | sed 's/^/    /'
fi
echo "after switchover" > "${CL_MNT[1]}/after_switchover" || fail "c: write on the new master"
fo_wait_caught_up 0 1 30 && fo_wait_caught_up 2 1 30
fo_tree_cmp 1 0 "c: the old master's tree is identical to the new master's"
fo_tree_cmp 1 2 "c: slave 2's tree is identical to the new master's"
[ -z "$(fo_rec_dirs 0)" ] && pass "c: no recovery folder on the old master (nothing was lost)" ||
    fail "c: a planned switchover left a recovery folder on the old master: $(fo_rec_dirs 0 | tr '\n' ' ')"
fo_verify_clean 1 c
e2e_finish
