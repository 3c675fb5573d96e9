#!/bin/bash
# Crash test: torn journal tail. The daemon is SIGKILLed while a writer streams 1 MiB
# write()s (one large record each) into a few files; then
#   rounds "cut", "cut2": a partial record is appended to the last segment by hand, so
#                    the journal certainly ends in a torn write (the kill itself may or
#                    may not have torn one already);
#   round "natural": nothing is cut by hand (the kill may or may not tear a record);
#   round "cut-idle": the writer is stopped first and the daemon killed once idle, so the
#                    last record is complete and applied to the cache when it is cut
#                    (what a power loss can leave): recovery must report the lost record,
#                    and every other file must equal the (cut) journal.
# Each round requires: `replfs journal dump` works on the crashed store (and reports the
# torn tail in round "cut"), the remount succeeds and prints a "replfs: recovery:" line
# (which, in round "cut", reports the torn tail it cut), `journal dump` then shows no
# torn tail, and the recovered tree -- mounted (A) and STORE/data after a clean unmount
# (B) -- equals `replfs journal replay` of the whole journal into an empty directory (C).
#
# Environment (besides crashlib.sh's):
#   CRASH_SEED       seed for the kill delays and cut sizes (default: random, printed)
#   CRASH_SABOTAGE=data   self-test: change a file in STORE/data before the compare
source "$(dirname "$0")/crashlib.sh"
cr_setup

SEED="${CRASH_SEED:-$(( ($(date +%s%N) / 1000) % 1000000 ))}"
SABOTAGE="${CRASH_SABOTAGE:-}"
RANDOM=$SEED
MNT="$WORK/mnt"
log "seed $SEED${SABOTAGE:+, SABOTAGE=$SABOTAGE} (reproduce with CRASH_SEED=$SEED)"

last_segment() { ls "$S/journal" | grep '\.seg$' | sort | tail -n 1; }

# state_lsns: "applied_lsn=N inflight_lsn=M" from STORE/state (struct store_state)
state_lsns() {
    "$PY" -c '
import struct, sys
b = open(sys.argv[1], "rb").read(72)
print("applied_lsn=%d inflight_lsn=%d" % struct.unpack_from("<QQ", b, 56))' "$S/state" 2>/dev/null
}

round() {  # round NAME CUT_BYTES [idle]: a fresh store each round, so rounds are independent
    local name="$1" cut="$2" idle="${3:-}" delay wl seg size rec
    delay=$((200 + RANDOM % 400))
    S="$WORK/store.$name"
    "$REPLFS" init "$S" > /dev/null 2> "$WORK/init.err" || { fail "replfs init: $(cat "$WORK/init.err")"; return 1; }
    # checkpoint_mb=8: a checkpoint every ~8 records, while a 1 MiB region of a file is
    # rewritten only every 96 records: the region the last record wrote is never
    # rewritten by the records a restart-mode recovery replays after the checkpoint
    # The idle round must not let a checkpoint cover the record it then cuts
    # (that would be a gap before the checkpoint, not a lost change).
    local ckopt=checkpoint_mb=8
    [ -n "$idle" ] && ckopt=checkpoint_mb=100000,checkpoint_s=100000
    do_mount "$S" "$MNT" -o keep_journal,$ckopt ||
        { fail "$name: mount failed: $(cat "$MOUNT_ERR")"; return 1; }
    if grep -q '^replfs: recovery:' "$MOUNT_ERR"; then
        fail "$name: mount after a clean unmount ran recovery: $(cat "$MOUNT_ERR")"
    fi
    rm -f "$WORK/writer.ready"
    # 1 MiB write()s, each its own record; files wrap at 32 MiB to bound the store
    "$PY" - "$MNT/$name" "$WORK/writer.ready" "$SEED" > "$WORK/writer.$name.out" 2>&1 <<'EOF' &
import os, random, sys
os.setpgrp()
d, ready, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
os.mkdir(d)
fds = [os.open(os.path.join(d, "big%d" % i), os.O_CREAT | os.O_WRONLY, 0o644) for i in range(3)]
open(ready, "w").write("1")
base = rng.randbytes(1 << 20)
n = 0
try:
    while True:
        n += 1
        blk = n.to_bytes(8, "little") * 16 + base[128:]
        os.pwrite(fds[n % 3], blk, ((n // 3) % 32) << 20)
        if n % 50 == 0:
            os.fdatasync(fds[n % 3])
except OSError as e:
    print("writer stopped after %d writes: %s" % (n, e))
EOF
    wl=$!
    CR_PIDS+=("$wl")
    CR_PGIDS+=("$wl")    # the writer makes itself a process group leader first thing
    for ((i = 0; i < 200; i++)); do [ -s "$WORK/writer.ready" ] && break; sleep 0.05; done
    [ -s "$WORK/writer.ready" ] || { fail "$name: writer did not start: $(cat "$WORK/writer.$name.out")"; return 1; }
    sleep "0.$(printf '%03d' "$delay")"
    if [ -n "$idle" ]; then
        kill_started
        sleep 0.5
    fi
    crash_daemon "$S" "$MNT" || return 1
    kill_started
    force_unmount "$MNT" || { fail "$name: cannot unmount the dead mount"; return 1; }
    log "$name: daemon killed after ${delay}ms; $(cat "$WORK/writer.$name.out" 2>/dev/null | tail -n 1)"

    seg="$(last_segment)"
    [ -n "$seg" ] || { fail "$name: no journal segment"; return 1; }
    size=$(stat -c %s "$S/journal/$seg")
    lost_path=""
    if ((cut > 0)) && [ -z "$idle" ]; then
        # A torn write: the prefix of a record that never finished (so was never
        # applied) at the end of the segment.
        dd if="$S/journal/$seg" bs=1 skip=64 count=$((100 + cut * 10)) status=none >> "$S/journal/$seg"
        log "$name: appended a $((100 + cut * 10))-byte partial record to $seg (size $size)"
    elif ((cut > 0)); then
        # The last record was applied; cutting it is what a power loss can leave
        # (cache written back, journal tail not): recovery must report it.
        lost_path="$("$REPLFS" journal dump "$S" 2>/dev/null | grep 'lsn=' | tail -n 1 | awk '{print $5}')"
        truncate -s $((size - cut)) "$S/journal/$seg"
        log "$name: cut $cut bytes off $seg (size $size -> $((size - cut))), losing a record on $lost_path"
    fi

    # journal dump works on the crashed store and sees the torn tail
    if timeout 300 "$REPLFS" journal dump "$S" > "$WORK/dump.$name" 2> "$WORK/dump.$name.err"; then
        pass "$name: journal dump works after the crash ($(grep -c 'lsn=' "$WORK/dump.$name") records, last $(grep -o 'lsn=[0-9]*' "$WORK/dump.$name" | tail -n 1); store state: $(state_lsns))"
    else
        fail "$name: journal dump after the crash exited non-zero: $(head -c 300 "$WORK/dump.$name.err")"
    fi
    local torn_line
    torn_line="$(grep -m1 '^# torn tail' "$WORK/dump.$name")"
    if ((cut > 0)); then
        if [ -n "$torn_line" ]; then pass "$name: journal dump reports: ${torn_line#\# }"
        else fail "$name: journal dump does not report the torn tail ($cut bytes cut by hand)"; fi
    else
        log "$name: journal dump: ${torn_line:-no torn tail}"
    fi

    # remount: recovery must cut the torn tail and say so
    if ! do_mount "$S" "$MNT" -o keep_journal,checkpoint_mb=8; then
        fail "$name: remount after the crash failed: $(cat "$MOUNT_ERR")"
        return 1
    fi
    rec="$(grep -m1 '^replfs: recovery:' "$MOUNT_ERR")"
    if [ -z "$rec" ]; then
        fail "$name: remount printed no 'replfs: recovery:' line: $(cat "$MOUNT_ERR")"
    else
        pass "$name: remount succeeded: ${rec#replfs: recovery: }"
        if ((cut > 0)); then
            case "$rec" in
                *torn*) pass "$name: recovery reports the torn tail it cut" ;;
                *) fail "$name: recovery line does not report the torn tail: $rec" ;;
            esac
        fi
        if [ -n "$lost_path" ]; then
            case "$rec" in
                *"WARNING: the data directory keeps changes of LSN"*)
                    pass "$name: recovery reports the applied record the journal lost" ;;
                *) fail "$name: recovery does not report the applied-but-lost record: $rec" ;;
            esac
        fi
    fi
    treedump "$MNT" "$WORK/A.dump" || return 1
    clean_unmount "$MNT" "$S" || return 1

    if timeout 300 "$REPLFS" journal dump "$S" > "$WORK/dump2.$name" 2> "$WORK/dump2.$name.err"; then
        if grep -q '^# torn tail' "$WORK/dump2.$name"; then
            fail "$name: journal still has a torn tail after recovery: $(grep '^# torn' "$WORK/dump2.$name")"
        else
            pass "$name: journal dump after recovery works, no torn tail"
        fi
    else
        fail "$name: journal dump after recovery exited non-zero: $(head -c 300 "$WORK/dump2.$name.err")"
    fi

    if [ "$SABOTAGE" = data ]; then
        printf 'Z' | dd of="$S/data/$name/big0" bs=1 seek=5 conv=notrunc status=none
        note "SABOTAGE: overwrote a byte of data/$name/big0"
    fi
    treedump "$S/data" "$WORK/B.dump" || return 1
    replay "$S" "$WORK/fresh" || return 1
    treedump "$WORK/fresh" "$WORK/C.dump" || return 1
    if [ -n "$lost_path" ]; then
        # The lost record's file legitimately differs; everything else must not.
        for d in A B C; do grep -v -F "$lost_path" "$WORK/$d.dump" > "$WORK/$d.f" || true; mv "$WORK/$d.f" "$WORK/$d.dump"; done
        log "$name: comparing without $lost_path (changed by the lost record)"
    fi
    compare "$WORK/C.dump" "$WORK/A.dump" "$name: recovered mounted tree == journal replay"
    compare "$WORK/C.dump" "$WORK/B.dump" "$name: STORE/data after clean unmount == journal replay"
    rm -rf --one-file-system "$WORK/fresh"
}

round cut $((1 + RANDOM % 7))
round natural 0
round cut2 $((1 + RANDOM % 7))
round cut-idle $((1 + RANDOM % 7)) idle
if [ -n "$SABOTAGE" ]; then
    if [ "$CR_FAILS" -eq 0 ]; then fail "SABOTAGE=$SABOTAGE went unnoticed"
    else log "SABOTAGE=$SABOTAGE was detected (the failures above are expected)"; fi
fi
cr_finish
