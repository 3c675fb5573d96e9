#!/bin/bash
# Soak: a master and two slaves (cluster.sh, every slave with --listen so verify reaches
# it) under a random workload of every journaled operation type (tests/soak/soak.py:
# create, write at random offsets and O_APPEND, truncate, fallocate incl. punch-hole,
# mkdir, rmdir, unlink, rename of files and directories over existing targets, NOREPLACE
# and EXCHANGE, link, symlink, chmod, chown, utimens, setxattr, removexattr, mkfifo,
# fsync) with one random fault per round:
#    kill_slave      SIGKILL a slave under load, restart it (resumes from its LSN)
#    stop_cont       SIGSTOP a slave for 1-3 s, then SIGCONT
#    remount_slave   clean umount + mount of a slave
#    wipe_slave      stop a slave, wipe its store, re-init: it catches up from nothing
#                    (a snapshot once the master trimmed its journal: retain_mb=1)
#    restart_master  clean stop + start of the master (the workload pauses for it)
#    crash_master    SIGKILL the master under load, start it again as master: crash
#                    replay ("replfs: recovery:" in its log)
# The fault order is a seeded shuffle of the whole menu, repeated, so any run of six
# rounds has every fault once. After every round: heal (every node up, SIGCONT), wait until
# both slaves' applied_lsn = the master's lsn, `replfs verify` on the master exits 0, and
# the treedump (contents, modes, owners, links, xattrs, all mtimes) of both slaves equals
# the master's. Each daemon's RSS (VmRSS) is sampled after every heal.
#
# Memory rule, per daemon process (a restart starts a new series), for series of at least
# SOAK_RSS_MIN (default 8; a 45 s run seldom has one) samples: with k = max(1, n/3), the max of the last k samples
# must not exceed the max of the first k by more than SOAK_RSS_PCT % (default 25) +
# SOAK_RSS_SLACK_MB MiB (default 24). The series are printed at the end.
#
#   SOAK_SECONDS=N        workload budget (default 45: ~60-70 s in all; the last round
#                         may run over). Hours: SOAK_SECONDS=7200 bash tests/e2e/test_soak.sh
#                         (run from a build dir or with REPLFS=/path/to/replfs)
#   SOAK_SEED=S           reproduce a run's op sequence and fault order (printed at start)
#   SOAK_ROUND_SECONDS=N  workload seconds per round (default 3)
#   SOAK_PROCS=N          workload processes (default 2)
#   SOAK_FAULTS=a,b       only these faults (names above); stop_cont alone keeps every
#                         daemon process alive, so each has one long RSS series: the
#                         memory run is SOAK_SECONDS=1800 SOAK_FAULTS=stop_cont
#   SOAK_LINK_SPECIAL=0   hard-link only regular files (by default symlinks and fifos
#                         are hard-linked too: soak.py --no-link-special)
: "${E2E_TMPDIR:=/var/tmp}"
SOAK_SECONDS="${SOAK_SECONDS:-45}"
: "${E2E_TIMEOUT:=$((SOAK_SECONDS * 3 + 240))}"
export E2E_TMPDIR E2E_TIMEOUT
source "$(dirname "$0")/lib.sh"
e2e_setup
source "$E2E_DIR/../lib/cluster.sh"
source "$E2E_DIR/../lib/failover.sh"
SOAK="$E2E_DIR/../soak/soak.py"
SEED="${SOAK_SEED:-$(( $(date +%s%N) / 1000 % 1000000007 ))}"
ROUND_S="${SOAK_ROUND_SECONDS:-3}"
PROCS="${SOAK_PROCS:-2}"
RSS_PCT="${SOAK_RSS_PCT:-25}" RSS_SLACK_MB="${SOAK_RSS_SLACK_MB:-24}" RSS_MIN="${SOAK_RSS_MIN:-8}"
log "seed $SEED (SOAK_SEED=$SEED reproduces), SOAK_SECONDS=$SOAK_SECONDS, ${ROUND_S} s per round"
RANDOM=$SEED
MOPTS=(-o checkpoint_s=1,segment_mb=1,retain_mb=1)

cluster_init || fatal "cannot set up the cluster"
cluster_start_master "${MOPTS[@]}" || fatal "master did not start"
cluster_start_slave 1 || fatal "slave 1 did not start"
cluster_start_slave 2 || fatal "slave 2 did not start"
M="${CL_MNT[0]}"
mkdir -p "$M/soak" || fatal "mkdir $M/soak"

FAULTS=(kill_slave stop_cont remount_slave wipe_slave restart_master crash_master)
if [ -n "${SOAK_FAULTS:-}" ]; then
    read -r -a want <<<"${SOAK_FAULTS//,/ }"
    for f in "${want[@]}"; do
        [[ " ${FAULTS[*]} " == *" $f "* ]] || fatal "SOAK_FAULTS: unknown fault '$f' (known: ${FAULTS[*]})"
    done
    FAULTS=("${want[@]}")
fi
ORDER=($("$PY" -c 'import random, sys; r = random.Random(int(sys.argv[1])); m = sys.argv[2:]
o = []
for _ in range(400):
    x = m[:]; r.shuffle(x); o += x
print(" ".join(o))' "$SEED" "${FAULTS[@]}"))
RSS_LOG="$WORK/rss.log"     # round node pid rss_kb
: > "$RSS_LOG"
STOPPED=""                  # a SIGSTOPped slave's pid (SIGCONT at heal, also on failure)
declare -A FAULT_COUNT=()
NOW_FAILS=0

node_up() { local p; p="$(cl_daemon_pid "$1")"; [ -n "$p" ] && cl_alive "$p" && cl_is_mounted "${CL_MNT[$1]}"; }
start_node() {   # start_node I: (re)start node I in its role
    if [ "$1" = 0 ]; then cluster_start_master "${MOPTS[@]}"; else cluster_start_slave "$1"; fi
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }

# heal: SIGCONT, every node mounted and running (a node found dead is a failure unless
# this round's fault took it down)
heal() {
    local i
    if [ -n "$STOPPED" ]; then kill -CONT "$STOPPED" 2>/dev/null; STOPPED=""; fi
    for i in 0 1 2; do
        node_up "$i" && continue
        [ "$1" = expect_down ] || fail "round $R: node $i was down before the heal (fault $F)"
        if cl_is_mounted "${CL_MNT[$i]}"; then cluster_dead "$i"; fi
        start_node "$i" || { fail "round $R: node $i does not start again"; cluster_diag 1 2; return 1; }
    done
}

wait_workload() {   # wait_workload PID: its exit status (124 if it did not end in time)
    if ! timeout $((ROUND_S + 90)) bash -c "while kill -0 $1 2>/dev/null; do sleep 0.1; done"; then
        kill -KILL "$1" 2>/dev/null; wait "$1" 2>/dev/null; return 124
    fi
    wait "$1"
}

T_END=$((SECONDS + SOAK_SECONDS))
R=0
while [ $SECONDS -lt $T_END ] || [ $R -eq 0 ]; do
    F="${ORDER[$R]}"
    R=$((R + 1))
    S=$((1 + RANDOM % 2))
    FAULT_COUNT[$F]=$((${FAULT_COUNT[$F]:-0} + 1))
    fails0=$E2E_FAILS
    OUT="$WORK/soak.r$R.out"
    log "round $R: fault $F (slave $S), master lsn $(node_field 0 lsn 2>/dev/null)"
    "$PY" "$SOAK" "$M/soak" --seed "$SEED" --tag "r$R" --procs "$PROCS" --seconds "$ROUND_S" \
        $([ "${SOAK_LINK_SPECIAL:-1}" = 0 ] && echo --no-link-special) \
        > "$OUT" 2>&1 &
    W=$!
    CL_BG+=("$W")
    # the fault lands somewhere inside the workload
    d=$((RANDOM % (ROUND_S * 7 + 1)))
    sleep "$((d / 10)).$((d % 10))"
    want_rc=0 down=""
    case "$F" in
        kill_slave)
            cluster_kill "$S" || fail "round $R: SIGKILL slave $S"
            sleep 0.$((RANDOM % 10))
            cluster_start_slave "$S" || fail "round $R: slave $S does not restart after SIGKILL" ;;
        stop_cont)
            STOPPED="$(cl_daemon_pid "$S")"
            kill -STOP "$STOPPED"
            sleep $((1 + RANDOM % 3))
            kill -CONT "$STOPPED"; STOPPED="" ;;
        remount_slave)
            cluster_stop "$S" || fail "round $R: clean stop of slave $S"
            cluster_start_slave "$S" || fail "round $R: slave $S does not mount again" ;;
        wipe_slave)
            cluster_stop "$S" || fail "round $R: clean stop of slave $S"
            cluster_wipe "$S" || fail "round $R: wipe + init of slave $S"
            down=expect_down ;;     # started again by the heal, after more writes
        restart_master)
            wait_workload "$W"; rc=$?
            [ $rc -eq 0 ] || fail "round $R: workload exit $rc before the master's restart: $(grep -m3 FAIL "$OUT")"
            W=""
            cluster_stop 0 || fail "round $R: clean stop of the master"
            cluster_start_master "${MOPTS[@]}" || fail "round $R: master does not mount again" ;;
        crash_master)
            cluster_kill 0 || fail "round $R: SIGKILL the master"
            want_rc=3 ;;
    esac
    if [ -n "$W" ]; then
        wait_workload "$W"; rc=$?
        # after a SIGKILL of the master the workload may also have finished before it
        if [ $rc -eq 0 ] || { [ "$want_rc" = 3 ] && [ $rc -eq 3 ]; }; then :
        else fail "round $R: workload exit $rc: $(grep -m3 FAIL "$OUT" | tr '\n' ' ')"; fi
    fi
    if [ "$F" = crash_master ]; then
        n0=$(grep -c '^replfs: recovery:' "${CL_LOG[0]}")
        cluster_start_master "${MOPTS[@]}" || fail "round $R: master does not start after SIGKILL"
        n1=$(grep -c '^replfs: recovery:' "${CL_LOG[0]}")
        [ "$n1" -gt "$n0" ] || fail "round $R: master restarted after SIGKILL without a 'replfs: recovery:' line"
    fi
    heal "${down:-}" || break

    # ------------------------------------------------------- converged?
    ok=1
    for i in 1 2; do wait_caught_up "$i" 180 || ok=0; done
    if [ $ok = 1 ]; then
        fo_verify 0
        if [ "$FO_VRC" != 0 ]; then
            fail "round $R ($F): replfs verify exited $FO_VRC: $(head -n 12 "$FO_VOUT" | tr '\n' '|') stderr: $(head -c 400 "$FO_VOUT.err")"
        fi
        treedump "$M" "$WORK/m.dump"
        for i in 1 2; do
            treedump "${CL_MNT[$i]}" "$WORK/s$i.dump"
            if ! cmp -s "$WORK/m.dump" "$WORK/s$i.dump"; then
                fail "round $R ($F): slave $i's tree differs from the master's"
                diff -u "$WORK/m.dump" "$WORK/s$i.dump" | head -n 30 | sed 's/^/    /'
            fi
        done
    fi
    for i in 0 1 2; do
        p="$(cl_daemon_pid "$i")"
        echo "$R $i $p $(rss_kb "$p")" >> "$RSS_LOG"
    done
    if [ $E2E_FAILS -gt $fails0 ]; then
        log "round $R failed; workload output:"; sed 's/^/    /' "$OUT"
        cluster_diag 1 2
        break
    fi
    log "round $R ok: lsn $(node_field 0 lsn), $(wc -l < "$WORK/m.dump") entries, $(awk '/^worker/ { s += $4 } END { print s + 0 }' "$OUT") ops, snapshots received $(node_field 1 snapshots_received)+$(node_field 2 snapshots_received)"
done
[ $E2E_FAILS -eq 0 ] && pass "$R rounds (faults: $(for f in "${!FAULT_COUNT[@]}"; do printf '%s=%s ' "$f" "${FAULT_COUNT[$f]}"; done)): after every heal the slaves caught up, verify exit 0, trees identical"

# ------------------------------------------------------- memory
"$PY" - "$RSS_LOG" "$RSS_PCT" "$RSS_SLACK_MB" "$RSS_MIN" > "$WORK/rss.out" <<'PY'
import sys
log, pct, slack, nmin = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
series = {}
for line in open(log):
    f = line.split()
    if len(f) == 4:
        series.setdefault((int(f[1]), f[2]), []).append(int(f[3]))
bad = judged = 0
for (node, pid), s in sorted(series.items()):
    line = "node %d pid %s RSS MiB: %s" % (node, pid, " ".join("%.1f" % (x / 1024) for x in s))
    if len(s) >= nmin:
        k = max(1, len(s) // 3)
        first, last = max(s[:k]), max(s[-k:])
        limit = first * (1 + pct / 100) + slack * 1024
        judged += 1
        if last > limit:
            bad += 1
            line += "  GROWS: last-third max %.1f > %.1f (first-third max %.1f +%g%% +%g MiB)" % (
                last / 1024, limit / 1024, first / 1024, pct, slack)
        else:
            line += "  ok (last-third max %.1f <= %.1f)" % (last / 1024, limit / 1024)
    print(line)
print("judged %d bad %d" % (judged, bad))
PY
sed 's/^/    /' "$WORK/rss.out"
if grep -q '^judged .* bad 0$' "$WORK/rss.out"; then
    if grep -q '^judged 0 ' "$WORK/rss.out"; then
        note "no daemon lived through $RSS_MIN heals: no memory-growth verdict in this (short) run"
    else
        pass "daemon memory does not keep growing ($(tail -n 1 "$WORK/rss.out"))"
    fi
else
    fail "daemon memory keeps growing: $(grep GROWS "$WORK/rss.out" | head -n 3 | tr '\n' ' ')"
fi

for i in 2 1 0; do cluster_stop "$i" || fail "clean stop of node $i"; done
log "seed was $SEED"
e2e_finish
