#!/bin/bash
# Concurrency on a replicated mount (master + 2 slaves, cluster.sh):
#  a. 16 processes at once on the master (tests/soak/concurrency.py run): 4 pwrite their
#     own regions of one shared file, 2 write whole 16 KiB blocks over the SAME range of
#     another, 4 append records to one O_APPEND log, 3 rewrite/truncate their own files,
#     3 create/rename (over existing names)/unlink/mkdir/rmdir in one shared directory.
#     Each logs what it did; the master's tree must match every log (concurrency.py
#     check: regions = models, each overlapped block = the LAST write of one process,
#     the log = whole records in per-process order, nothing lost or torn, the
#     directory = the names the processes say). Both slaves identical once caught up
#     (treedump). Then the master is SIGKILLed and mounted again: crash replay gives the
#     same tree, the logs still check out, and the slaves follow it (identical again).
#  b. readers on slave 1 during heavy apply (repl_check.py atomic-write on the master
#     plus a mixed load): one read of a 16-page range rewritten by ONE pwrite shows whole
#     pages, of one generation or (a read spanning an apply, counted) of two adjacent
#     ones, never an older one after a newer; a file renamed over `target`
#     is always one whole generation; an entry moved between two directories is never
#     listed in both (repl_check.py atomic-read). The reader must have seen several
#     generations and made decisive directory checks (not vacuous).
#  c. four writers through two names of one hard-linked file on the master (linkwrite.py)
#     finish, and the mount still answers (it used to hang).
# ~30-40 s.
: "${E2E_TMPDIR:=/var/tmp}"
: "${E2E_TIMEOUT:=240}"
export E2E_TMPDIR E2E_TIMEOUT
source "$(dirname "$0")/lib.sh"
e2e_setup
source "$E2E_DIR/../lib/cluster.sh"
CONC="$E2E_DIR/../soak/concurrency.py"
RC="$E2E_DIR/../lib/repl_check.py"
SEED="${CONC_SEED:-$(( $(date +%s) % 100000 ))}"
log "seed $SEED (CONC_SEED=$SEED reproduces the processes' operations)"

cluster_init || fatal "cannot set up the cluster"
cluster_start_master || fatal "master did not start"
cluster_start_slave 1 || fatal "slave 1 did not start"
cluster_start_slave 2 || fatal "slave 2 did not start"
M="${CL_MNT[0]}"

compare_slaves() {   # compare_slaves LABEL: both slaves caught up and identical to the master
    local i
    treedump "$M" "$WORK/m.dump" || return 1
    for i in 1 2; do
        wait_caught_up "$i" 120 || continue
        treedump "${CL_MNT[$i]}" "$WORK/s$i.dump" &&
            cmp_files "$WORK/m.dump" "$WORK/s$i.dump" "$1: slave $i identical to the master"
    done
}

# ------------------------------------------------------------ a. 16 writers
mkdir "$M/conc" || fatal "mkdir $M/conc"
t0=$SECONDS
timeout 150 "$PY" "$CONC" run "$M/conc" "$WORK/conclogs" --procs 16 --ops 120 --seed "$SEED" \
    > "$WORK/run.out" 2>&1
rc=$?
if [ $rc -eq 0 ]; then pass "a: 16 processes at once on the master ($(tail -n 1 "$WORK/run.out"), $((SECONDS - t0)) s)"
else fail "a: writers exit $rc: $(head -n 5 "$WORK/run.out" | tr '\n' ' ')"; fi
check_logs() {   # check_logs DIR LABEL
    "$PY" "$CONC" check "$1" "$WORK/conclogs" > "$WORK/check.out" 2>&1
    if [ $? -eq 0 ]; then pass "$2: tree matches every process' log ($(head -n 1 "$WORK/check.out"))"
    else fail "$2: tree vs the processes' logs:"; sed 's/^/    /' "$WORK/check.out" | head -n 16; fi
}
check_logs "$M/conc" "a: master"
compare_slaves "a"
check_logs "${CL_MNT[2]}/conc" "a: slave 2"
cp "$WORK/m.dump" "$WORK/before_crash.dump"

cluster_kill 0 || fail "a: SIGKILL the master"
cluster_start_master || fatal "a: master does not mount again after SIGKILL"
grep -q '^replfs: recovery:' "${CL_LOG[0]}" && pass "a: crash replay at restart ($(grep '^replfs: recovery:' "${CL_LOG[0]}" | tail -n 1 | cut -c1-160))" ||
    fail "a: no 'replfs: recovery:' line after the master's SIGKILL"
treedump "$M" "$WORK/after_crash.dump" &&
    cmp_files "$WORK/before_crash.dump" "$WORK/after_crash.dump" "a: the master's tree after crash replay = before the SIGKILL"
check_logs "$M/conc" "a: master after crash replay"
echo after > "$M/conc/after_restart" || fail "a: write on the restarted master"
compare_slaves "a: after the master's restart"

# ------------------------------------------------------------ b. torn reads on a slave
mkdir "$M/atomic" "$M/loadb" || fail "b: mkdir"
wait_caught_up 1 60
STOP="$WORK/b.stop"
cluster_bg "$PY" "$RC" atomic-read "${CL_MNT[1]}/atomic" --stop "$STOP" > "$WORK/reader1.out" 2>&1; RD1=$CL_LAST_BG
cluster_bg "$PY" "$RC" atomic-read "${CL_MNT[2]}/atomic" --stop "$STOP" > "$WORK/reader2.out" 2>&1; RD2=$CL_LAST_BG
cluster_bg "$PY" "$RC" atomic-write "$M/atomic" --stop "$STOP" > "$WORK/writer.out" 2>&1; WR=$CL_LAST_BG
cluster_bg "$PY" "$RC" load "$M/loadb" --stop "$STOP" --seed "$SEED" > "$WORK/load.out" 2>&1; LD=$CL_LAST_BG
sleep "${CONC_B_SECONDS:-12}"
touch "$STOP"
for p in "$WR:writer" "$LD:load"; do
    timeout 60 bash -c "while kill -0 ${p%%:*} 2>/dev/null; do sleep 0.1; done" || fail "b: ${p#*:} did not stop"
    wait "${p%%:*}" || fail "b: ${p#*:} failed: $(tail -n 3 "$WORK/${p#*:}.out")"
done
log "b: writer: $(tail -n 1 "$WORK/writer.out"), load: $(tail -n 1 "$WORK/load.out")"
for r in "$RD1:1" "$RD2:2"; do
    if timeout 60 bash -c "while kill -0 ${r%%:*} 2>/dev/null; do sleep 0.1; done"; then wait "${r%%:*}"; rc=$?; else rc=124; fi
    out="$WORK/reader${r#*:}.out"
    if [ $rc -eq 0 ]; then pass "b: slave ${r#*:}: no torn operation seen during heavy apply ($(head -n 1 "$out"))"
    else fail "b: slave ${r#*:}: reader exit $rc:"; sed 's/^/    /' "$out" | head -n 12; fi
done
compare_slaves "b"

# ------------------------------------------------------------ c. writes through two names
# Four processes write one hard-linked file through its two names for 5 s (linkwrite.py).
# Before the fix the master's mount hung within seconds: each write invalidated the
# other name's kernel cache from inside its own request, waiting for the page locks the
# other write held. Then the slaves must match the master.
mkdir "$M/links" || fail "c: mkdir"
if out="$(timeout 60 "$PY" "$E2E_DIR/linkwrite.py" "$M/links" 5 2>&1)"; then
    pass "c: 4 writers through two names of one file finished ($(tr '\n' ' ' <<<"$out"))"
else
    fail "c: writers through two names did not finish (exit $?): $(tail -n 3 <<<"$out")"
fi
timeout 10 stat "$M/links/lw_a" > /dev/null && pass "c: the master's mount answers" ||
    fail "c: the master's mount does not answer"
compare_slaves "c"

for i in 2 1 0; do cluster_stop "$i" || fail "clean stop of node $i"; done
e2e_finish
