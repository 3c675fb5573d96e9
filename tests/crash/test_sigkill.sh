#!/bin/bash
# Crash test: SIGKILL the replfs daemon under a mixed concurrent workload, again and
# again, and check after every crash that
#   (0) the remount succeeds and prints a "replfs: recovery:" line;
#   (1) the recovered tree equals what the journal says: the mounted tree right after
#       recovery (A), and STORE/data after a clean unmount (B), both equal a
#       `replfs journal replay` of the whole journal (kept from LSN 1 with -o
#       keep_journal) into an empty directory (C): types, modes, uid/gid, sizes,
#       contents, symlink targets, user.* xattrs, hard-link groups and the mtimes of
#       regular files (tests/lib/treedump.py);
#   (2) everything the workload was promised by a returned fsync/fdatasync is there
#       (tests/crash/workload.py: sealed files, O_APPEND records);
#   (3) both SQLite databases (WAL and DELETE journal modes) pass integrity_check and
#       hold at least every row whose COMMIT returned, atomically.
# Then the store is mounted again and the next iteration runs on the same tree.
#
# Environment (besides crashlib.sh's):
#   CRASH_ITERS      iterations (default 25)
#   CRASH_SEED       seed of the workload, kill delays and mount options (default: random,
#                    printed; rerun with it to repeat the same choices)
#   CRASH_BUDGET     seconds after which no new iteration starts (default 170)
#   CRASH_WORKERS    filesystem worker processes (default 3)
#   CRASH_SABOTAGE   self-test of the checks, must make the test FAIL:
#                      data   - change a file in STORE/data before the compare with the replay
#                      seal   - modify a fsync-sealed file through the mount before checking
#                      append - corrupt one O_APPEND record in shared/applog
#                      sqlite - delete committed rows from the WAL database
#                      sqlcorrupt - overwrite a page in the middle of the DELETE-mode database
#                      journal - flip a byte in the middle of the first journal segment
#                               before the remount (the mount must then refuse)
source "$(dirname "$0")/crashlib.sh"
cr_setup

ITERS="${CRASH_ITERS:-25}"
SEED="${CRASH_SEED:-$(( ($(date +%s%N) / 1000) % 1000000 ))}"
BUDGET="${CRASH_BUDGET:-170}"
WORKERS="${CRASH_WORKERS:-3}"
SABOTAGE="${CRASH_SABOTAGE:-}"
RANDOM=$SEED
S="$WORK/store"
MNT="$WORK/mnt"
LOGS="$WORK/logs"
mkdir -p "$LOGS" "$MNT"
: > "$WORK/mt.prev"
OPTS=("keep_journal" "keep_journal,segment_mb=1" "keep_journal,checkpoint_s=1"
      "keep_journal,checkpoint_mb=1,segment_mb=2")
log "seed $SEED, $ITERS iterations, budget ${BUDGET}s${SABOTAGE:+, SABOTAGE=$SABOTAGE}"
log "reproduce with: CRASH_SEED=$SEED CRASH_ITERS=$ITERS"

"$REPLFS" init "$S" > /dev/null 2> "$WORK/init.err" || fatal "replfs init: $(cat "$WORK/init.err")"

sabotaged=""
t0=$SECONDS
done_iters=0
it_fail() {  # it_fail MSG: a failure in iteration $it, with what is needed to repeat it
    fail "iteration $it (seed $SEED, delay ${delay}ms, -o $opts): $*"
}

for ((it = 1; it <= ITERS; it++)); do
    if ((SECONDS - t0 > BUDGET)); then
        note "time budget ${BUDGET}s used up after $done_iters iterations; stopping early"
        break
    fi
    delay=$((50 + RANDOM % 751))
    opts="${OPTS[$((RANDOM % ${#OPTS[@]}))]}"
    pre="$LOGS/$(printf 'it%03d' "$it")"

    # ---- mount (clean: the previous iteration ended with a clean unmount) --------
    if ! do_mount "$S" "$MNT" -o "$opts"; then
        it_fail "mount after a clean unmount failed: $(cat "$MOUNT_ERR")"
        break
    fi
    if grep -q '^replfs: recovery:' "$MOUNT_ERR"; then
        it_fail "mount after a clean unmount ran recovery: $(cat "$MOUNT_ERR")"
        break
    fi

    # ---- workload, then SIGKILL the daemon while it runs --------------------------
    "$PY" "$CR_DIR/workload.py" run --mnt "$MNT" --logs "$LOGS" --iter "$it" \
        --seed "$((SEED * 1000 + it))" --workers "$WORKERS" --max-seconds 30 \
        > "$pre.out" 2>&1 &
    wl=$!
    CR_PIDS+=("$wl")
    CR_PGIDS+=("$wl")    # workload.py makes itself a process group leader first thing
    for ((i = 0; i < 300; i++)); do
        [ -s "$pre.ready" ] && break
        kill -0 "$wl" 2>/dev/null || break
        sleep 0.05
    done
    if [ ! -s "$pre.ready" ]; then
        it_fail "workload did not start: $(tail -c 600 "$pre.out"; cat "$pre".*.anomaly 2>/dev/null | head -c 1500)"
        break
    fi
    sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
    crash_daemon "$S" "$MNT" || { it_fail "could not crash the daemon"; break; }
    kill_started
    if ! force_unmount "$MNT"; then
        it_fail "cannot unmount the dead mount $MNT"
        break
    fi

    if [ "$SABOTAGE" = journal ] && [ -z "$sabotaged" ]; then
        seg="$(ls "$S/journal" | grep '\.seg$' | sort | head -n 1)"
        off=$(($(stat -c %s "$S/journal/$seg") / 2))
        printf '\xff' | dd of="$S/journal/$seg" bs=1 seek=$off conv=notrunc status=none
        sabotaged=1
        note "SABOTAGE: overwrote byte $off of journal/$seg with 0xff"
    fi

    # ---- (0) remount: recovery must succeed and say so --------------------------
    do_mount "$S" "$MNT" -o "$opts"
    mrc=$?
    if [ $mrc -ne 0 ]; then
        it_fail "remount after SIGKILL failed (exit $mrc): $(cat "$MOUNT_ERR")"
        break
    fi
    rec="$(grep -m1 '^replfs: recovery:' "$MOUNT_ERR")"
    if [ -z "$rec" ]; then
        it_fail "remount after SIGKILL printed no 'replfs: recovery:' line; stderr: $(cat "$MOUNT_ERR")"
        break
    fi
    log "iteration $it [t=$((SECONDS - t0))s]: killed after ${delay}ms (-o $opts): ${rec#replfs: recovery: }"
    case "$rec" in *"after a process crash"*) ;; *) note "recovery mode is not 'after a process crash': $rec" ;; esac

    # ---- (2)+(3) on the recovered mount; A = the tree as recovery left it --------
    treedump "$MNT" "$WORK/A.dump" || { it_fail "cannot dump the mounted tree"; break; }
    "$PY" "$TREEDUMP" "$MNT" --mtime all --no-root > "$WORK/A.all" 2> /dev/null
    if [ "$SABOTAGE" = seal ] && [ -z "$sabotaged" ]; then
        sp="$(cat "$pre".w*.log 2>/dev/null | "$PY" -c '
import json, sys
for l in sys.stdin:
    if l.endswith("\n") and json.loads(l)["t"] == "seal":
        print(json.loads(l)["path"]); break')"
        if [ -n "$sp" ] && [ -f "$MNT/$sp" ]; then
            printf 'X' >> "$MNT/$sp" && sabotaged=1 && note "SABOTAGE: appended a byte to sealed $sp"
        fi
    elif [ "$SABOTAGE" = sqlite ] && [ -z "$sabotaged" ] && [ -f "$MNT/db/wal.db" ]; then
        "$PY" - "$MNT/db/wal.db" <<'EOF' && sabotaged=1 && note "SABOTAGE: deleted the last 30 rows of wal.db"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("DELETE FROM t WHERE id > (SELECT max(id) - 30 FROM t)")
c.close()
EOF
    elif [ "$SABOTAGE" = sqlcorrupt ] && [ -z "$sabotaged" ] && [ -f "$MNT/db/del.db" ] &&
         [ "$(stat -c %s "$MNT/db/del.db")" -gt 65536 ]; then
        head -c 4096 /dev/urandom | dd of="$MNT/db/del.db" bs=4096 seek=8 conv=notrunc status=none &&
            sabotaged=1 && note "SABOTAGE: overwrote page 9 of del.db with random bytes"
    elif [ "$SABOTAGE" = append ] && [ -z "$sabotaged" ] && [ -s "$MNT/shared/applog" ]; then
        printf 'garbage!' | dd of="$MNT/shared/applog" bs=1 seek=8 conv=notrunc status=none &&
            sabotaged=1 && note "SABOTAGE: overwrote 8 bytes of shared/applog"
    fi
    if timeout 300 "$PY" "$CR_DIR/workload.py" check --mnt "$MNT" --logs "$LOGS" --iter "$it" \
        --tmp "$WORK/sqlcheck" > "$pre.check" 2>&1; then
        pass "iteration $it: fsync'ed data and SQLite commits intact ($(grep '^checked:' "$pre.check" | cut -c10-))"
    else
        it_fail "guarantee check failed:"
        grep -v '^checked:' "$pre.check" | head -c 4000 | sed 's/^/    /'
        break
    fi

    # ---- (1) tree == journal replay ---------------------------------------------
    clean_unmount "$MNT" "$S" || { it_fail "clean unmount failed"; break; }
    if [ "$SABOTAGE" = data ] && [ -z "$sabotaged" ]; then
        victim="$(find "$S/data" -type f -size +0 | sort | head -1)"
        if [ -n "$victim" ]; then
            printf 'Z' | dd of="$victim" bs=1 seek=0 conv=notrunc status=none
            sabotaged=1
            note "SABOTAGE: overwrote the first byte of ${victim#$S/}"
        fi
    fi
    treedump "$S/data" "$WORK/B.dump" || { it_fail "cannot dump STORE/data"; break; }
    replay "$S" "$WORK/fresh" || { it_fail "journal replay failed"; break; }
    treedump "$WORK/fresh" "$WORK/C.dump" || { it_fail "cannot dump the replay"; break; }
    ok=1
    compare "$WORK/C.dump" "$WORK/A.dump" \
        "iteration $it: recovered mounted tree == journal replay" || ok=0
    compare "$WORK/C.dump" "$WORK/B.dump" \
        "iteration $it: STORE/data after clean unmount == journal replay" || ok=0
    if ((!ok)); then
        it_fail "tree differs from the journal replay (- replay, + tree)"
        break
    fi
    # directory and symlink mtimes: reported, not required
    # (new differences only: a stale directory mtime stays until the directory goes)
    "$PY" "$TREEDUMP" "$WORK/fresh" --mtime all --no-root > "$WORK/C.all" 2> /dev/null
    diff "$WORK/C.all" "$WORK/A.all" | grep '^[<>]' > "$WORK/mt.now"
    if [ -s "$WORK/mt.now" ] && ! cmp -s "$WORK/mt.now" "$WORK/mt.prev"; then
        note "iteration $it: mtimes of directories/symlinks differ from the replay (< replay, > recovered; not required):"
        grep -vxFf "$WORK/mt.prev" "$WORK/mt.now" | head -6 | sed 's/^/    /'
        lsns="$(echo "$rec" | sed -n 's/.*(LSN \([0-9]*\)-\([0-9]*\),.*/\1 \2/p')"
        if [ -n "$lsns" ] && [ "${lsns% *}" != 0 ]; then
            echo "    records replayed by recovery:"
            timeout 120 "$REPLFS" journal dump "$S" 2>/dev/null |
                awk -v a="${lsns% *}" -v b="${lsns#* }" '{ for (i = 1; i <= NF; i++)
                    if ($i ~ /^lsn=/) { l = substr($i, 5) + 0; if (l >= a && l <= b) print "      " $0 } }'
        fi
    fi
    mv "$WORK/mt.now" "$WORK/mt.prev"
    rm -rf --one-file-system "$WORK/fresh"
    done_iters=$it
done

log "$done_iters crash iterations completed in $((SECONDS - t0))s"
if is_mounted "$MNT"; then
    clean_unmount "$MNT" "$S" || force_unmount "$MNT"
fi
if [ "$CR_FAILS" -eq 0 ]; then
    check_journal_dump "$S"
fi
if [ -n "$SABOTAGE" ]; then
    if [ -z "$sabotaged" ]; then
        fail "SABOTAGE=$SABOTAGE was never applied"
    elif [ "$CR_FAILS" -eq 0 ]; then
        fail "SABOTAGE=$SABOTAGE went unnoticed: the checks are blind"
    else
        log "SABOTAGE=$SABOTAGE was detected (the failures above are expected)"
    fi
fi
cr_finish
