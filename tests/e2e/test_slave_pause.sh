#!/bin/bash
# A slave paused (SIGSTOP) while the master writes, then resumed (SIGCONT), in sync mode
# (--sync --sync-timeout 2000), twice:
#  a. the master keeps the journal the slave needs (-o retain_mb=1024, the default, with
#     1 MiB segments and a checkpoint every second, so only retention keeps them): after
#     SIGCONT the slave catches up from the journal, no snapshot is sent
#  b. the master keeps almost none (-o retain_mb=1): the slave falls further behind than
#     that, the master trims its journal past the slave's position and, after SIGCONT,
#     the slave is sent a snapshot, installs it and streams on
# Both: while the slave is stopped the master degrades to async (status "degraded",
# /metrics replfs_sync_degraded 1) and shows the slave "gone", and fsyncs go on; after
# SIGCONT the slave applies the master's LSN, every fsync the master acknowledged (every
# burst of acklog.py sync-writer) is on the slave mount, `replfs verify` exits 0, and
# the master is back in sync mode, where an fsync returns with the write in the slave's
# journal.
# The master writes in bursts (1 s of fsynced operations every BURST_EVERY s), so a long
# pause does not mean gigabytes.
#   PAUSE_SECONDS (default 15): how long the slave stays stopped, each round. The issue
#   asks for minutes: PAUSE_SECONDS=300 E2E_TIMEOUT=1200 for the long run.
: "${E2E_TMPDIR:=/var/tmp}"
PAUSE_SECONDS="${PAUSE_SECONDS:-15}"
: "${E2E_TIMEOUT:=$((240 + 2 * PAUSE_SECONDS))}"
export E2E_TMPDIR E2E_TIMEOUT
source "$(dirname "$0")/lib.sh"
e2e_setup
require_tools fusermount3
source "$E2E_DIR/../lib/cluster.sh"
ACKLOG="$E2E_DIR/../lib/acklog.py"
RC="$E2E_DIR/../lib/repl_check.py"
BURST_EVERY=$((PAUSE_SECONDS / 10 > 5 ? PAUSE_SECONDS / 10 : 5))
num() { [[ "$1" =~ ^[0-9]+$ ]]; }
log "pause ${PAUSE_SECONDS}s per round, a 1 s write burst every ${BURST_EVERY}s"

# burst NAME: 1 s of fsynced operations under MASTER/NAME, logged in $WORK/NAME.ack
burst() {
    timeout 120 "$PY" "$ACKLOG" sync-writer "$M" "$1" --log "$WORK/$1.ack" --seed "$RANDOM" \
        --max-seconds 1 > "$WORK/$1.out" 2>&1 ||
        fail "$1: the writer exited $?: $(tail -n 2 "$WORK/$1.out")"
    grep -q 'last_errno none' "$WORK/$1.out" || fail "$1: a write failed on the master: $(cat "$WORK/$1.out")"
}

# round LABEL RETAIN_MB: the whole sequence above; sets SNAP_SENT (snapshots sent meanwhile)
round() {
    local l="$1" retain="$2" spid t0 k=0 bursts=() b out rc ss0 sr0 dg0 st
    cluster_init || { fail "$l: cannot set up the cluster"; return 1; }
    cluster_start_master --sync --sync-timeout 2000 -o "checkpoint_s=1,segment_mb=1,retain_mb=$retain" ||
        { fail "$l: master did not start"; return 1; }
    cluster_start_slave 1 || { fail "$l: slave did not start"; return 1; }
    M="${CL_MNT[0]}" S="${CL_MNT[1]}"
    burst "$l.pre"
    bursts+=("$l.pre")
    wait_caught_up 1 60 || return 1
    wait_field 0 mode sync 20 || return 1
    ss0="$(node_field 0 snapshots_sent)" sr0="$(node_field 1 snapshots_received)"
    dg0="$(metric 0 replfs_sync_degraded_total)"
    spid="$(cl_daemon_pid 1)"
    kill -STOP "$spid" || { fail "$l: cannot SIGSTOP the slave"; return 1; }
    printf '==== %s SIGSTOP\n' "$(date '+%T.%N')" >> "${CL_LOG[1]}"
    t0=$SECONDS
    while [ $((SECONDS - t0)) -lt "$PAUSE_SECONDS" ]; do
        k=$((k + 1))
        burst "$l.b$k"
        bursts+=("$l.b$k")
        while [ $((SECONDS - t0)) -lt $((k * BURST_EVERY)) ] && [ $((SECONDS - t0)) -lt "$PAUSE_SECONDS" ]; do
            sleep 0.5
        done
    done
    # what the master says while the slave is still stopped
    check_eq "$(node_field 0 mode)" degraded "$l: the master degraded to async while the slave was stopped"
    check_eq "$(metric 0 replfs_sync_degraded)" 1 "$l: /metrics replfs_sync_degraded 1"
    [ "$(metric 0 replfs_sync_degraded_total)" -gt "$dg0" ] || fail "$l: replfs_sync_degraded_total did not grow"
    st="$(node_field 0 slaves.0.state)"
    check_eq "$st" gone "$l: the master shows the stopped slave 'gone'"
    log "$l: $k burst(s) written during the pause; master lsn $(node_field 0 lsn), first_lsn $(node_field 0 first_lsn); slave acked $(node_field 0 slaves.0.acked_lsn)"
    kill -CONT "$spid"
    printf '==== %s SIGCONT\n' "$(date '+%T.%N')" >> "${CL_LOG[1]}"
    t0=$SECONDS
    wait_caught_up 1 120 && pass "$l: the resumed slave applied the master's LSN $(node_field 0 lsn) $((SECONDS - t0))s after SIGCONT"
    wait_field 0 mode sync 60 && pass "$l: the master is back in sync mode"
    for b in "${bursts[@]}"; do
        out="$(timeout 60 "$PY" "$ACKLOG" check "$S" --log "$WORK/$b.ack" --sub "$b" 2>&1)" ||
            { fail "$l: acknowledged operations of $b missing on the slave: $(head -n 5 <<<"$out")"; continue; }
    done
    pass "$l: every fsync the master acknowledged (${#bursts[@]} bursts) is on the slave"
    out="$(timeout 120 "$REPLFS" verify "$M" 2>&1)"
    rc=$?
    if [ $rc -eq 0 ]; then pass "$l: replfs verify exits 0 ($(tail -n 1 <<<"$out"))"
    else fail "$l: replfs verify exited $rc: $(head -n 10 <<<"$out")"; cluster_diag 1; fi
    # back in sync: an fsync returns with the write in the slave's journal
    out="$(timeout 60 "$PY" "$RC" timed-fsync "$M/$l.after" 2>&1)" || fail "$l: fsync after resume: $out"
    timeout 60 "$REPLFS" journal dump "${CL_STORE[1]}" 2>/dev/null |
        awk -v n="$l.after" '{ for (i = 1; i <= NF; i++) if ($i == "write" && $(i + 1) == n) f = 1 } END { exit !f }' &&
        pass "$l: in sync mode again, fsync returned with the write in the slave's journal ($out)" ||
        fail "$l: fsync returned but the slave's journal has no write of $l.after"
    SNAP_SENT=$(( $(node_field 0 snapshots_sent) - ss0 ))
    SNAP_RECV=$(( $(node_field 1 snapshots_received) - sr0 ))
    log "$l: snapshots sent $SNAP_SENT, received $SNAP_RECV; slave log: $(grep -E 'snapshot|master .*:' "${CL_LOG[1]}" | tail -n 3 | tr '\n' '|')"
    cluster_stop_all || fail "$l: clean stop"
}

round a 1024
check_eq "$SNAP_SENT" 0 "a: caught up from the journal: no snapshot sent (retain_mb=1024)"
check_eq "$SNAP_RECV" 0 "a: the slave installed no snapshot"
round b 1
[ "${SNAP_SENT:-0}" -ge 1 ] && pass "b: the master sent a snapshot ($SNAP_SENT) to the slave it could not keep journal for (retain_mb=1)" ||
    fail "b: no snapshot sent although the slave fell behind more than retain_mb=1"
[ "${SNAP_RECV:-0}" -ge 1 ] && pass "b: the slave installed it" || fail "b: the slave installed no snapshot"
e2e_finish
