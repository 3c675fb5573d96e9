#!/bin/bash
# Crash sweep and error injection through the named fault points (utils/fault.c,
# REPLFS_FAULT). One deterministic single-threaded workload (below, ~60 operations:
# mkdir, create, pwrite, truncate, rename, link, symlink, unlink, rmdir, chmod,
# setxattr, utimes, fsync), each operation one system call, its result logged.
#
#  1. CRASH SWEEP: for each point P in apply:record, journal:write, apply:done,
#     commit:done, journal:fsync and each N of the sweep, mount with
#     REPLFS_FAULT=P:N=crash, run the workload until the daemon dies, remount (crash
#     replay), and check
#       - the fault fired (the daemon died, later operations failed with ENOTCONN);
#       - the tree equals the model: the workload's acknowledged operations replayed
#         on plain ext4, plus or minus the one operation in flight at the crash
#         (nothing acknowledged lost, nothing half-done);
#       - `replfs journal replay` of the journal (keep_journal) equals the tree, and the
#         journal's LSNs run 1..n with no gap.
#  2. ERROR INJECTION (the daemon stays up):
#     - journal:write:N=enospc: that operation fails with ENOSPC and changes nothing,
#       every later operation works as on ext4 (a full disk is not sticky);
#     - journal:fsync:N=eio: that fsync fails with EIO; from then on every mutation
#       fails with EIO (a failed journal sync is sticky: nothing more could be made
#       durable; see fs/journal.c) while reads still work; after a remount the tree is
#       exactly the acknowledged operations and the mount is writable again;
#     - apply:record:N=eio: the operation fails (EIO), later mutations fail with EIO
#       (commit.c C4: journal and cache disagree until a remount replays the record),
#       the remount replays it: the tree is the acknowledged operations plus that one.
#  3. REPLICATION: a master and one slave (tests/lib/cluster.sh); the slave runs with
#     REPLFS_FAULT=repl:applied:N (SIGKILL after its Nth batch is applied and durable,
#     before it is acknowledged) or repl:recv:N (SIGKILL when its Nth batch arrived,
#     before any of it is applied) while the master runs the workload; the master
#     itself drops its 4th and 9th batch (repl:send:N=drop: the connection is closed); the slave is restarted without the
#     fault and must converge: same tree as the master, its journal LSNs consecutive
#     (no gap, nothing applied twice). Last, a slave whose 5th journal write fails
#     with ENOSPC (a full disk) must stay up, fetch that record again and converge.
#
# An unaligned write() that crosses a page boundary reaches the daemon as two FUSE
# WRITE requests (the kernel cuts at the first page boundary: fuse_perform_write), so
# two records: a crash between them leaves the first piece, which the model accepts
# for the write in flight (no filesystem promises a write() atomic against a crash).
#
# Sweep size: CI runs 9 N for apply:record and journal:write, fewer for the others
# (~30-40 s in the normal build and under ASan). SWEEP_N=all runs every N from 1
# to the number of records the workload makes (several minutes); SWEEP_N="3 7 20"
# runs those N. SWEEP_REPL (default "repl:applied:1 repl:applied:3 repl:recv:2") lists
# the slave's fault points of part 3.
source "$(dirname "$0")/crashlib.sh"
cr_setup

WL="$WORK/sweep_workload.py"
cat > "$WL" <<'PYEOF'
"""Deterministic single-threaded workload for the crash sweep.

  run ROOT LOG     run every operation on ROOT; LOG gets one line per operation:
                   "I ok" or "I err ERRNO"; stops after the first ENOTCONN/ECONNABORTED
                   ("I dead").
  model REF LOG K [--with I | --torn I] [--skip-errs E,...]
                   on the empty directory REF, replay the operations 0..K-1 of LOG
                   (plus operation I, whatever LOG says of it; --torn: only the part of
                   write I up to its first page boundary) and check each gives the
                   same result as logged; logged errors in --skip-errs are taken as
                   injected: the operation is not replayed. Prints "MISMATCH ..." lines.
The operations do not depend on the results, so every run issues the same sequence.
"""
import errno, os, random, sys

DEAD = {errno.ENOTCONN, errno.ECONNABORTED, errno.ENODEV}


def plan(seed=20261121, n=60):
    rnd = random.Random(seed)
    dirs, files, ops = [""], [], []
    k = 0

    def new(kind):
        nonlocal k
        k += 1
        d = rnd.choice(dirs)
        return (d + "/" if d else "") + "%s%d" % (kind, k)

    ops.append(("mkdir", "d0"))
    dirs.append("d0")
    while len(ops) < n:
        r = rnd.random()
        if r < 0.15 or not files:
            p = new("f")
            ops.append(("create", p))
            files.append(p)
        elif r < 0.40:
            f = rnd.choice(files)
            ops.append(("write", f, rnd.randrange(0, 9000), bytes([rnd.randrange(256)]) *
                        rnd.randrange(1, 5000)))
        elif r < 0.46:
            ops.append(("truncate", rnd.choice(files), rnd.randrange(0, 6000)))
        elif r < 0.52:
            p = new("d")
            ops.append(("mkdir", p))
            dirs.append(p)
        elif r < 0.58:
            f = rnd.choice(files)
            p = new("r")
            ops.append(("rename", f, p))
            files[files.index(f)] = p
        elif r < 0.62:
            p = new("l")
            ops.append(("link", rnd.choice(files), p))
            files.append(p)
        elif r < 0.66:
            ops.append(("symlink", "target-%d" % rnd.randrange(99), new("s")))
        elif r < 0.70 and len(files) > 2:
            f = rnd.choice(files)
            ops.append(("unlink", f))
            files.remove(f)
        elif r < 0.74 and len(dirs) > 2:
            d = dirs[-1]
            ops.append(("rmdir", d))  # may fail with ENOTEMPTY: logged, replayed the same
            if not any(x.startswith(d + "/") for x in files + dirs[:-1]):
                dirs.pop()
        elif r < 0.80:
            ops.append(("chmod", rnd.choice(files), rnd.choice([0o600, 0o640, 0o755])))
        elif r < 0.85:
            ops.append(("setxattr", rnd.choice(files), "user.k%d" % rnd.randrange(3),
                        b"v%d" % rnd.randrange(1000)))
        elif r < 0.88:
            ops.append(("utime", rnd.choice(files), 1000000 + rnd.randrange(10**6)))
        else:
            ops.append(("fsync", rnd.choice(files)))
    return ops


def do(root, op):
    P = lambda p: os.path.join(root, p)
    kind = op[0]
    if kind == "mkdir":
        os.mkdir(P(op[1]), 0o755)
    elif kind == "create":
        os.close(os.open(P(op[1]), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    elif kind == "write":
        fd = os.open(P(op[1]), os.O_WRONLY)
        try:
            os.pwrite(fd, op[3], op[2])
        finally:
            os.close(fd)
    elif kind == "truncate":
        os.truncate(P(op[1]), op[2])
    elif kind == "rename":
        os.rename(P(op[1]), P(op[2]))
    elif kind == "link":
        os.link(P(op[1]), P(op[2]))
    elif kind == "symlink":
        os.symlink(op[1], P(op[2]))
    elif kind == "unlink":
        os.unlink(P(op[1]))
    elif kind == "rmdir":
        os.rmdir(P(op[1]))
    elif kind == "chmod":
        os.chmod(P(op[1]), op[2])
    elif kind == "setxattr":
        os.setxattr(P(op[1]), op[2], op[3])
    elif kind == "utime":
        os.utime(P(op[1]), (op[2], op[2]))
    elif kind == "fsync":
        fd = os.open(P(op[1]), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def result(root, op):
    try:
        do(root, op)
        return "ok"
    except OSError as e:
        return "err %d" % e.errno


def main():
    ops = plan()
    if sys.argv[1] == "count":
        print(len(ops))
    elif sys.argv[1] == "kinds":
        for op in ops:
            print(op[0])
    elif sys.argv[1] == "run":
        root, log = sys.argv[2], sys.argv[3]
        with open(log, "w") as out:
            for i, op in enumerate(ops):
                res = result(root, op)
                if res.startswith("err ") and int(res[4:]) in DEAD:
                    res = "dead"
                out.write("%d %s\n" % (i, res))
                out.flush()
                if res == "dead":
                    break
    elif sys.argv[1] == "model":
        ref, log, k = sys.argv[2], sys.argv[3], int(sys.argv[4])
        extra, skip, torn = None, set(), False
        args = sys.argv[5:]
        while args:
            if args[0] == "--with":
                extra = int(args[1])
            elif args[0] == "--torn":
                extra, torn = int(args[1]), True
            elif args[0] == "--skip-errs":
                skip = {int(x) for x in args[1].split(",") if x}
            args = args[2:]
        logged = {}
        for line in open(log):
            i, res = line.split(" ", 1)
            logged[int(i)] = res.strip()
        for i in range(len(ops)):
            if i >= k and i != extra:
                continue
            want = logged.get(i, "dead")
            if want.startswith("err ") and int(want[4:]) in skip:
                continue
            op = ops[i]
            if i == extra and torn:
                if op[0] != "write":
                    print("NOTORN op %d is a %s" % (i, op[0]))
                    return
                # The first page-sized piece of an unaligned write (see the header).
                pg = os.sysconf("SC_PAGE_SIZE")
                cut = pg - op[2] % pg
                op = (op[0], op[1], op[2], op[3][:cut])
            got = result(ref, op)
            if i != extra and got != want:
                print("MISMATCH op %d %s: on ext4 %s, on the mount %s" % (i, ops[i][:3], got, want))


main()
PYEOF

SWEEP_N="${SWEEP_N:-}"
SWEEP_REPL="${SWEEP_REPL:-repl:applied:1 repl:applied:3 repl:recv:2}"
OPS=$("$PY" "$WL" count) || fatal "workload plan failed"
"$PY" "$WL" kinds > "$WORK/kinds" || fatal "workload plan failed"
# kind_of I: the operation kind of op I (mkdir, write, fsync ...)
kind_of() { sed -n "$(($1 + 1))p" "$WORK/kinds"; }
# mutations_ok_after LOG K: "I:kind" of every op after K that succeeded and is not fsync
mutations_ok_after() {
    local i
    for i in $(awk -v k="$2" '$1 > k && $2 == "ok" { print $1 }' "$1"); do
        [ "$(kind_of "$i")" = fsync ] || printf ' %s:%s' "$i" "$(kind_of "$i")"
    done
}
STORES=0

# new_store: a fresh store in $S, mountpoint $M
new_store() {
    STORES=$((STORES + 1))
    S="$WORK/s$STORES" M="$WORK/m$STORES"
    "$REPLFS" init "$S" > /dev/null 2> "$WORK/init.err" || fatal "replfs init: $(cat "$WORK/init.err")"
}
MOPTS=(-o keep_journal,checkpoint_s=3600)

# first_with LOG WORD: index of the first operation whose result starts with WORD
first_with() { awk -v w="$2" '$2 == w { print $1; exit }' "$1"; }

# model_check LOG K [--with I] [--skip-errs ...]: the mount's tree ($M) equals the model
model_check() {
    local log="$1" k="$2" ref="$WORK/ref" tag="$3"
    shift 3
    rm -rf --one-file-system "$ref"
    mkdir -m 755 "$ref"
    "$PY" "$WL" model "$ref" "$log" "$k" "$@" > "$WORK/model.out" 2>&1
    [ -s "$WORK/model.out" ] && fail "$tag: replaying the log on ext4: $(head -c 400 "$WORK/model.out")"
    treedump "$ref" "$WORK/want.dump" --mtime none || return 1
    treedump "$M" "$WORK/got.dump" --mtime none || return 1
    cmp -s "$WORK/want.dump" "$WORK/got.dump"
}

# replay_check TAG: journal LSNs consecutive and `journal replay` equals the tree.
# Needs the store unmounted (done here) -- $WORK/got.full is the mounted tree.
replay_check() {
    local tag="$1"
    treedump "$M" "$WORK/got.full" || return 1
    clean_unmount "$M" "$S" || return 1
    check_journal_dump "$S" > "$WORK/jd.out"
    grep -q FAIL "$WORK/jd.out" && { cat "$WORK/jd.out"; fail "$tag: journal LSNs"; }
    replay "$S" "$WORK/replayed" || return 1
    treedump "$WORK/replayed" "$WORK/replayed.dump" || return 1
    compare "$WORK/got.full" "$WORK/replayed.dump" "$tag: journal replay equals the tree" > "$WORK/cmp.out"
    grep -q FAIL "$WORK/cmp.out" && { cat "$WORK/cmp.out"; return 1; }
    return 0
}

# crash_one POINT N [RPOINT M]: one iteration of the crash sweep. With RPOINT, the
# data directory is put back as it was at the checkpoint (LSN 0: empty, saved right
# after init), the first remount replays the whole journal (replay=checkpoint) with
# RPOINT:M=crash and dies during recovery, and a second remount must finish it.
# (Replaying from the checkpoint onto a cache that is ahead of it is the documented
# reboot limit of recovery/recovery.c, so the cache is rewound first.)
crash_one() {
    local point="$1" n="$2" tag="$1:$2=crash${3:+ then $3:$4=crash}" log pid k
    new_store
    [ -n "${3:-}" ] && cp -a "$S/data" "$S.data0"
    log="$WORK/wl.$STORES.log"
    REPLFS_FAULT="$point:$n=crash" do_mount "$S" "$M" "${MOPTS[@]}" ||
        { fail "$tag: mount failed: $(cat "$MOUNT_ERR")"; return; }
    pid="$(cat "$S/pid")"
    timeout 120 "$PY" "$WL" run "$M" "$log"
    k="$(first_with "$log" dead)"
    if [ -z "$k" ]; then
        fail "$tag: the fault never fired (the workload ran to its end)"
        clean_unmount "$M" "$S"
        return
    fi
    wait_gone "$pid" 20 || { fail "$tag: daemon $pid alive after the fault"; return; }
    force_unmount "$M"
    if [ -n "${3:-}" ]; then
        rm -rf --one-file-system "$S/data" && cp -a "$S.data0" "$S/data" ||
            { fail "$tag: cannot rewind the data directory"; return; }
        if REPLFS_FAULT="$3:$4=crash" do_mount "$S" "$M" -o keep_journal,checkpoint_s=3600,replay=checkpoint; then
            fail "$tag: the mount survived $3:$4=crash (recovery replayed fewer than $4 records?)"
            clean_unmount "$M" "$S"
            return
        fi
        pass "$tag: the remount died in recovery ($(grep -o 'fault point.*' "$MOUNT_ERR" | head -1))"
        # The daemon may have got as far as mounting: undo what is left.
        is_mounted "$M" && force_unmount "$M"
    fi
    do_mount "$S" "$M" "${MOPTS[@]}" || { fail "$tag: remount after the crash: $(cat "$MOUNT_ERR")"; return; }
    if model_check "$log" "$k" "$tag"; then
        pass "$tag: died at op $k; after recovery the tree is ops 0..$((k - 1)) (op $k not applied)"
    elif model_check "$log" "$k" "$tag" --with "$k"; then
        pass "$tag: died at op $k; after recovery the tree is ops 0..$k (op $k replayed)"
    elif [ "$(kind_of "$k")" = write ] && model_check "$log" "$k" "$tag" --torn "$k"; then
        pass "$tag: died at op $k; after recovery the tree is ops 0..$((k - 1)) and the first page-sized piece of write $k (one of its two records)"
    else
        fail "$tag: died at op $k; the recovered tree is neither ops 0..$((k - 1)) nor 0..$k:"
        diff "$WORK/want.dump" "$WORK/got.dump" | head -20 | sed 's/^/    /'
    fi
    replay_check "$tag" && pass "$tag: journal LSNs consecutive, replay equals the tree"
}

# ---- calibration: records one clean run makes ---------------------------------------
new_store
do_mount "$S" "$M" "${MOPTS[@]}" || fatal "mount: $(cat "$MOUNT_ERR")"
"$PY" "$WL" run "$M" "$WORK/clean.log"
[ -z "$(first_with "$WORK/clean.log" dead)" ] || fatal "the workload lost the mount without a fault"
model_check "$WORK/clean.log" "$OPS" clean && pass "clean run: the tree equals the workload on ext4" ||
    fail "clean run: the tree differs from the workload on ext4"
clean_unmount "$M" "$S"
NREC=$("$REPLFS" journal dump "$S" | grep -c 'lsn=')
log "the workload makes $NREC records in $OPS operations"
[ "$NREC" -gt 20 ] || fatal "only $NREC records: the workload does not exercise the journal"

if [ "$SWEEP_N" = all ]; then
    NS="$(seq 1 "$NREC")"
elif [ -n "$SWEEP_N" ]; then
    NS="$SWEEP_N"
else
    step=$(((NREC + 7) / 8))
    NS="$(seq 1 "$step" "$NREC" | tr '\n' ' ')$NREC"
fi

log "1. crash sweep, N in: $(echo $NS)"
for point in apply:record journal:write; do
    for n in $NS; do crash_one "$point" "$n"; done
done
# Fewer N for the points between two steps of one record (same code path).
for point in apply:done commit:done; do
    for n in $(echo $NS | awk '{ print $2 ? $2 : $1 }'); do crash_one "$point" "$n"; done
done
# The workload's first fsyncs (each follows new records, so each is one fdatasync).
for n in 1 2 3; do crash_one journal:fsync "$n"; done
crash_one apply:write "$(echo $NS | awk '{ print $2 ? $2 : $1 }')"
# A crash during crash recovery, then a clean recovery.
crash_one apply:record "$NREC" recovery:replay "$((NREC / 2))"
crash_one journal:write "$((NREC / 3))" recovery:replay 1

log "2. error injection"
# err_run SPEC: mount with REPLFS_FAULT=SPEC, run the workload; sets LOG, PID
err_run() {
    new_store
    LOG="$WORK/wl.$STORES.log"
    REPLFS_FAULT="$1" do_mount "$S" "$M" "${MOPTS[@]}" || { fail "$1: mount failed: $(cat "$MOUNT_ERR")"; return 1; }
    PID="$(cat "$S/pid")"
    timeout 120 "$PY" "$WL" run "$M" "$LOG"
    [ -z "$(first_with "$LOG" dead)" ] || { fail "$1: the daemon died (an error must not kill it)"; return 1; }
    pid_alive "$PID" && pass "$1: the daemon is still up after the whole workload" ||
        { fail "$1: daemon gone"; return 1; }
    return 0
}
errno_of() { "$PY" -c "import errno,sys; print(errno.$1)"; }
EIO=$(errno_of EIO) ENOSPC=$(errno_of ENOSPC)

# 2a. ENOSPC from the journal: the op fails, nothing sticks
N=$((NREC / 2))
if err_run "journal:write:$N=enospc"; then
    k="$(awk -v e="err $ENOSPC" '$2" "$3 == e { print $1; exit }' "$LOG")"
    nspc="$(grep -c "err $ENOSPC" "$LOG")"
    [ -n "$k" ] && [ "$nspc" = 1 ] && pass "enospc: exactly one operation (op $k) got ENOSPC" ||
        fail "enospc: expected exactly one ENOSPC, got $nspc (first at op ${k:-none})"
    # Every other operation must give what it gives on ext4 without the failed op.
    model_check "$LOG" "$OPS" enospc --skip-errs "$ENOSPC" &&
        pass "enospc: live tree = every other op (later ops worked, op $k left nothing)" ||
        fail "enospc: live tree differs from the ops that succeeded"
    [ -s "$WORK/model.out" ] && fail "enospc: later results differ from ext4"
    clean_unmount "$M" "$S" && do_mount "$S" "$M" "${MOPTS[@]}" &&
        model_check "$LOG" "$OPS" enospc --skip-errs "$ENOSPC" &&
        pass "enospc: same tree after a remount" || fail "enospc: tree changed by a remount"
    replay_check enospc && pass "enospc: journal consecutive, replay equals the tree"
fi

# 2b. EIO from the journal fsync: sticky, remount recovers
if err_run "journal:fsync:1=eio"; then
    k="$(awk -v e="err $EIO" '$2" "$3 == e { print $1; exit }' "$LOG")"
    if [ -z "$k" ]; then
        fail "fsync eio: no operation got EIO"
    else
        kind="$(kind_of "$k")"
        [ "$kind" = fsync ] && pass "fsync eio: the first EIO is an fsync (op $k)" ||
            fail "fsync eio: the first EIO is op $k, a $kind, not an fsync"
        later_ok="$(mutations_ok_after "$LOG" "$k")"
        [ -z "$later_ok" ] && pass "fsync eio: every later mutation was refused (sticky)" ||
            fail "fsync eio: mutations succeeded after the failed journal sync:$later_ok"
        ls "$M" > /dev/null 2>&1 && pass "fsync eio: reads still work" || fail "fsync eio: reads fail"
        clean_unmount "$M" "$S"
        do_mount "$S" "$M" "${MOPTS[@]}" || fail "fsync eio: remount: $(cat "$MOUNT_ERR")"
        model_check "$LOG" "$OPS" fsynceio --skip-errs "$EIO" &&
            pass "fsync eio: after a remount the tree is exactly the acknowledged operations" ||
            fail "fsync eio: after a remount the tree is not the acknowledged operations"
        touch "$M/after-remount" && pass "fsync eio: writable again after the remount" ||
            fail "fsync eio: still refusing writes after the remount"
        rm -f "$M/after-remount"
        replay_check fsynceio && pass "fsync eio: journal consecutive, replay equals the tree"
    fi
fi

# 2c. EIO from the apply step: journal and cache disagree until a remount replays it
N=$((NREC / 2))
if err_run "apply:record:$N=eio"; then
    k="$(awk -v e="err $EIO" '$2" "$3 == e { print $1; exit }' "$LOG")"
    if [ -z "$k" ]; then
        fail "apply eio: no operation got EIO"
    else
        later_ok="$(mutations_ok_after "$LOG" "$k")"
        [ -z "$later_ok" ] && pass "apply eio: op $k got EIO, every later mutation was refused (sticky)" ||
            fail "apply eio: op $k got EIO but later mutations succeeded:$later_ok"
        clean_unmount "$M" "$S"
        do_mount "$S" "$M" "${MOPTS[@]}" || fail "apply eio: remount: $(cat "$MOUNT_ERR")"
        # The record is in the journal: the remount applies it (op k happened).
        model_check "$LOG" "$((k + 1))" applyeio --with "$k" &&
            pass "apply eio: after a remount the tree is ops 0..$k (the logged record replayed)" ||
            fail "apply eio: after a remount the tree is not ops 0..$k"
        replay_check applyeio && pass "apply eio: journal consecutive, replay equals the tree"
    fi
fi

log "3. replication: slave crashes between receiving, applying and acknowledging a batch"
source "$CR_DIR/../lib/cluster.sh"
cluster_init || fatal "cannot set up a cluster"
# The master also loses two batches on the way out (the connection is closed): the
# slave must fetch them again.
REPLFS_FAULT="repl:send:4=drop,repl:send:9=drop" cluster_start_master || fatal "cannot start the master"
dump_node() { treedump "${CL_MNT[$1]}" "$2" --mtime all; }
round=0
for spec in $SWEEP_REPL; do
    round=$((round + 1))
    n="${spec##*:}"
    tag="$spec=crash"
    REPLFS_FAULT="$spec" cluster_start_slave 1 -o keep_journal || { fail "$tag: slave start"; cluster_diag 1; continue; }
    spid="${CL_PID[1]}"
    mkdir "${CL_MNT[0]}/round$round"
    # The workload on the master, while the slave follows batch by batch.
    timeout 120 "$PY" "$WL" run "${CL_MNT[0]}/round$round" "$WORK/repl$round.log"
    [ -z "$(first_with "$WORK/repl$round.log" dead)" ] || fail "$tag: the master lost its mount"
    # How many batches the workload made depends on timing: small writes, one at a
    # time, until the slave has met its Nth batch (at most 60 s).
    for ((i = 0; i < 200; i++)); do
        cl_alive "$spid" || break
        echo "$i" > "${CL_MNT[0]}/round$round/drip$((i % 5))"
        sleep 0.3
    done
    if wait_gone "$spid" 10; then
        pass "$tag: the slave died at its batch $n ($(grep -o 'fault point.*' "${CL_LOG[1]}" | tail -1))"
    else
        fail "$tag: the slave did not die at batch $n"; cluster_diag 1
    fi
    cluster_dead 1
    cluster_start_slave 1 -o keep_journal || { fail "$tag: slave restart"; cluster_diag 1; continue; }
    if wait_caught_up 1 90; then
        pass "$tag: the restarted slave caught up (applied_lsn = the master's lsn)"
    else
        fail "$tag: the restarted slave did not catch up"; cluster_diag 1
    fi
    dump_node 0 "$WORK/master.dump" && dump_node 1 "$WORK/slave.dump" &&
        compare "$WORK/master.dump" "$WORK/slave.dump" "$tag: slave tree identical to the master's (mtimes too)"
    cluster_stop 1
    S="${CL_STORE[1]}"
    check_journal_dump "$S" > "$WORK/jd.out"
    if grep -q FAIL "$WORK/jd.out"; then
        cat "$WORK/jd.out"; fail "$tag: the slave's journal has a gap or a record twice"
    else
        pass "$tag: the slave's journal LSNs run 1..$(grep -o 'LSN 1\.\.[0-9]*' "$WORK/jd.out" | cut -d. -f3) with no gap or repeat"
    fi
done
# A slave that cannot log a record (its disk is full: ENOSPC on its 5th journal
# write) must not acknowledge it: it fetches the record again and converges.
tag="slave journal:write:5=enospc"
REPLFS_FAULT="journal:write:5=enospc" cluster_start_slave 1 -o keep_journal || fail "$tag: slave start"
spid="${CL_PID[1]}"
mkdir "${CL_MNT[0]}/enospc"
for i in $(seq 30); do echo "$i" > "${CL_MNT[0]}/enospc/f$i"; sleep 0.05; done
if wait_caught_up 1 90 && cl_alive "$spid"; then
    pass "$tag: the slave stayed up and caught up"
else
    fail "$tag: the slave did not catch up"; cluster_diag 1
fi
if grep -q "cannot log LSN .*fetching it again" "${CL_LOG[1]}"; then
    pass "$tag: the slave said it fetches the unlogged record again"
else
    fail "$tag: no 'cannot log LSN ... fetching it again' in the slave's log"; cluster_diag 1
fi
dump_node 0 "$WORK/master.dump" && dump_node 1 "$WORK/slave.dump" &&
    compare "$WORK/master.dump" "$WORK/slave.dump" "$tag: slave tree identical to the master's"
cluster_stop 1
check_journal_dump "${CL_STORE[1]}" > "$WORK/jd.out"
if grep -q FAIL "$WORK/jd.out"; then
    cat "$WORK/jd.out"; fail "$tag: the slave's journal has a gap or a record twice"
else
    pass "$tag: the slave's journal has no gap or repeat"
fi

ndrop="$(grep -c 'fault point repl:send .*injecting drop' "${CL_LOG[0]}")"
check_eq() { [ "$1" = "$2" ] && pass "$3" || fail "$3: expected [$2], got [$1]"; }
check_eq "$ndrop" 2 "the master dropped 2 batches (repl:send:4,9=drop) and the slave still converged"
cluster_stop_all

cr_finish
