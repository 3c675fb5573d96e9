#!/bin/bash
# Bad input: every refusal is exactly one stderr line starting with "replfs: ", a
# non-zero exit, no mount left behind and nothing stored lost. Covers unknown
# flag/subcommand, missing/foreign store, init over a store, store already
# mounted, missing/busy mountpoint, corrupt journal (+ journal truncate), torn
# tail, and a full disk (ENOSPC, daemon survives, recovers after deleting).
source "$(dirname "$0")/lib.sh"
e2e_setup
require_tools mkfs.ext4 mount losetup dd truncate fusermount3

# expect_refusal LABEL cmd...: non-zero exit, exactly one stderr line "replfs: ..."
REFUSAL=""
expect_refusal() {
    local label="$1"; shift
    local before after rc m
    before=$(grep -c " $WORK" /proc/self/mounts)
    awk '{print $2}' /proc/self/mounts | sort > "$WORK/mounts.before"
    timeout 30 "$@" > "$WORK/refusal.out" 2> "$WORK/refusal.err" < /dev/null
    rc=$?
    after=$(grep -c " $WORK" /proc/self/mounts)
    # anything the command mounted although it should not have: undo it (and say so below)
    for m in $(awk '{print $2}' /proc/self/mounts | sort | comm -13 "$WORK/mounts.before" -); do
        case "$m" in "$WORK"/*) E2E_MOUNTS+=("$m"); sleep 0.5; fusermount3 -u "$m" 2>/dev/null || umount -l "$m" ;; esac
    done
    REFUSAL="$(cat "$WORK/refusal.err")"
    local nl
    nl=$(grep -c '' "$WORK/refusal.err")
    if [ $rc -eq 0 ]; then
        fail "$label: exit status 0, expected a refusal (stderr: $(head -c 300 "$WORK/refusal.err"))"
    elif [ $rc -eq 124 ]; then
        fail "$label: command hung (timeout 30s)"
    elif [ "$nl" -ne 1 ]; then
        fail "$label: exit $rc but stderr has $nl lines, expected exactly 1: $(head -n 5 "$WORK/refusal.err" | tr '\n' '|')"
    elif ! head -n 1 "$WORK/refusal.err" | grep -q '^replfs: '; then
        fail "$label: stderr line does not start with 'replfs: ': $REFUSAL"
    else
        pass "$label: exit $rc, \"$REFUSAL\""
    fi
    if [ "$after" -gt "$before" ]; then
        fail "$label: a new mount appeared under $WORK although the command failed"
        grep " $WORK" /proc/self/mounts | sed 's/^/    /'
    fi
}
# store_state STORE OUT: data tree with mtimes + journal contents
store_state() {
    { treedump "$1/data" "$2.d" && cat "$2.d"; find "$1/journal" -type f -exec sha256sum {} + | sort; } > "$2"
}
# write_files DIR N SEED: N deterministic files
write_files() {
    "$PY" - "$1" "$2" "$3" <<'PY' || fail "write_files $1"
import os, random, sys
d, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    data = random.Random(seed * 100000 + i).randbytes(2000 + i * 97)
    with open(os.path.join(d, "file_%03d" % i), "wb") as f:
        f.write(data)
PY
}
# check_files DIR N SEED MODE: MODE=all -> all present and exact; MODE=prefix -> every
# file present is exact, empty or a prefix of its content (cut journal), first K exact
check_files() {
    "$PY" - "$@" <<'PY'
import os, random, sys
d, n, seed, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
need = n if mode == "all" else int(sys.argv[5])
bad, present = [], 0
for i in range(n):
    want = random.Random(seed * 100000 + i).randbytes(2000 + i * 97)
    p = os.path.join(d, "file_%03d" % i)
    try:
        got = open(p, "rb").read()
    except FileNotFoundError:
        if i < need:
            bad.append("file_%03d missing" % i)
        continue
    except OSError as e:
        bad.append("file_%03d: %s" % (i, e.strerror))
        continue
    present += 1
    if got == want:
        continue
    if i >= need and want.startswith(got):
        continue
    bad.append("file_%03d has wrong content (%d bytes, want %d)" % (i, len(got), len(want)))
print("present=%d" % present)
for b in bad[:10]:
    print(b)
sys.exit(1 if bad else 0)
PY
}

S="$WORK/store" MNT="$WORK/mnt" M2="$WORK/mnt2"
mkdir -p "$MNT" "$M2"
init_store "$S" || fatal "cannot init store"
mount_store "$S" "$MNT" || fatal "cannot mount"
write_files "$MNT" 30 1
unmount "$MNT" "$S" || fatal "unmount"
store_state "$S" "$WORK/state0"

# ---------------------------------------------------------- flags and commands
expect_refusal "unknown global flag" "$REPLFS" --no-such-flag
expect_refusal "unknown mount flag" "$REPLFS" mount --no-such-flag "$S" "$MNT"
expect_refusal "unknown mount option value" "$REPLFS" mount "$S" "$MNT" -o no_such_option=1
expect_refusal "unknown init flag" "$REPLFS" init --no-such-flag "$WORK/s_flag"
[ -e "$WORK/s_flag" ] && fail "init with an unknown flag still created $WORK/s_flag"
expect_refusal "unknown subcommand" "$REPLFS" frobnicate "$S"
expect_refusal "unknown journal subcommand" "$REPLFS" journal frobnicate "$S"
expect_refusal "journal truncate with a malformed --at" "$REPLFS" journal truncate "$S" --at nonsense
store_state "$S" "$WORK/state1"
cmp_files "$WORK/state0" "$WORK/state1" "store untouched by the refused commands"

# -------------------------------------------------------------- missing store
expect_refusal "mount of a missing store" "$REPLFS" mount "$WORK/no_such_store" "$MNT"
[ -e "$WORK/no_such_store" ] && fail "mount of a missing store created it"

# -------------------------------------------------------------- foreign store
F="$WORK/foreign"
mkdir -p "$F/data" "$F/journal" "$F/sub" && echo "precious" > "$F/notes.txt" &&
    head -c 5000 /dev/urandom > "$F/journal/00000000000001.seg" && echo x > "$F/data/x"
treedump "$F" "$WORK/foreign.0"
expect_refusal "mount of a foreign directory" "$REPLFS" mount "$F" "$MNT"
mkdir -p "$WORK/emptydir"
expect_refusal "mount of an empty directory" "$REPLFS" mount "$WORK/emptydir" "$MNT"
[ -z "$(ls -A "$WORK/emptydir")" ] || fail "mount of an empty directory wrote into it: $(ls -A "$WORK/emptydir")"
printf 'not a dir' > "$WORK/afile"
expect_refusal "mount of a regular file as store" "$REPLFS" mount "$WORK/afile" "$MNT"
treedump "$F" "$WORK/foreign.1"
cmp_files "$WORK/foreign.0" "$WORK/foreign.1" "foreign directory left untouched"

# ------------------------------------------------------- init over a store
expect_refusal "init on an existing store" "$REPLFS" init "$S"
store_state "$S" "$WORK/state2"
cmp_files "$WORK/state0" "$WORK/state2" "existing store untouched by the refused init"

# ----------------------------------------------- already mounted / busy / missing
mount_store "$S" "$MNT" || fatal "mount"
expect_refusal "mount of a store that is already mounted" "$REPLFS" mount "$S" "$M2"
e2e_is_mounted "$M2" && fail "$M2 got mounted"
check_files "$MNT" 30 1 all > "$WORK/chk" && pass "first mount still serves the data" ||
    fail "first mount broken after the refused second mount: $(cat "$WORK/chk")"
S2="$WORK/store2"
init_store "$S2" || fatal "init store2"
expect_refusal "mountpoint that is already a mount (busy)" "$REPLFS" mount "$S2" "$MNT"
check_files "$MNT" 30 1 all > "$WORK/chk" && pass "the busy mountpoint still serves its own store" ||
    fail "existing mount broken by the refused mount: $(cat "$WORK/chk")"
expect_refusal "missing mountpoint" "$REPLFS" mount "$S2" "$WORK/no_such_mnt"
[ -e "$WORK/no_such_mnt" ] && note "replfs created the missing mountpoint $WORK/no_such_mnt"
expect_refusal "mountpoint is a regular file" "$REPLFS" mount "$S2" "$WORK/afile"
mount_store "$S2" "$M2" && pass "store2 mounts fine after the refusals (no stale lock)" && unmount "$M2" "$S2"
unmount "$MNT" "$S"
# (the journal legitimately changed: the store was mounted in between; compare data)
treedump "$S/data" "$WORK/state3.d"
cmp_files "$WORK/state0.d" "$WORK/state3.d" "store data unchanged after the refused mounts"

# ------------------------------------------------------------- journal helpers
# segments STORE: the journal's segment files in order (*.seg if the store uses that
# suffix, else every regular file in STORE/journal)
segments() {
    local l
    l=$(find "$1/journal" -maxdepth 1 -type f -name '*.seg' | sort)
    [ -n "$l" ] || l=$(find "$1/journal" -maxdepth 1 -type f | sort)
    [ -n "$l" ] && echo "$l"
}
# data_end FILE: offset just past the last non-zero byte (segments may be preallocated)
data_end() {
    "$PY" - "$1" <<'PY'
import sys
b = open(sys.argv[1], "rb").read()
print(len(b.rstrip(b"\0")))
PY
}
flip_byte() {  # flip_byte FILE OFFSET
    "$PY" - "$1" "$2" <<'PY'
import sys
p, off = sys.argv[1], int(sys.argv[2])
with open(p, "r+b") as f:
    f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0xFF]))
PY
}
# parse_position: from $REFUSAL get "SEG:OFF" (a segment name that occurs in the
# message, then the first number after it)
parse_position() {
    "$PY" - "$1" "$REFUSAL" <<'PY'
import os, re, sys
jdir, msg = sys.argv[1], sys.argv[2]
for name in sorted(os.listdir(jdir), key=len, reverse=True):
    i = msg.find(name)
    if i >= 0:
        m = re.search(r"(0x[0-9a-fA-F]+|\d+)", msg[i + len(name):])
        if m:
            print("%s:%d" % (name, int(m.group(1), 0)))
            sys.exit(0)
sys.exit(1)
PY
}

# stopped_store LABEL C STOP NFILES SEED: a new store with NFILES files written, stopped
# cleanly (STOP=clean) or by SIGKILL (STOP=kill); sets SEG to its last journal segment.
# (Not in a subshell: mount_store records the mount and daemon for cleanup.)
stopped_store() {
    local label="$1" C="$2" stop="$3"
    init_store "$C" || return 1
    mount_store "$C" "$MNT" -o keep_journal || return 1
    write_files "$MNT" "$4" "$5"
    if [ "$stop" = kill ]; then
        local pid; pid=$(daemon_pid "$C")
        kill -KILL "$pid"; wait_gone "$pid" 10
        fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT"
    else
        unmount "$MNT" "$C" || return 1
    fi
    SEG=$(segments "$C" | tail -n 1)
    [ -n "$SEG" ] || { fail "$label: no journal segment in $C/journal"; return 1; }
}

# corrupt_case LABEL STOP: STOP=clean (fusermount3 -u) or kill (SIGKILL)
corrupt_case() {
    local label="$1" stop="$2" C="$WORK/corrupt_$2" seg end mid pos
    stopped_store "$label" "$C" "$stop" 40 7 || return 1
    seg=$SEG
    end=$(data_end "$seg")
    mid=$((end / 2))
    [ "$mid" -gt 64 ] || { fail "$label: last segment $(basename "$seg") holds only $end bytes"; return 1; }
    flip_byte "$seg" "$mid"
    log "$label: flipped the byte at $(basename "$seg"):$mid (data ends at $end)"
    store_state "$C" "$WORK/$label.state0"
    expect_refusal "$label: mount with a corrupt journal" "$REPLFS" mount "$C" "$MNT"
    case "$REFUSAL" in
        *"$(basename "$seg")"*) pass "$label: message names the segment" ;;
        *) fail "$label: message does not name the segment $(basename "$seg"): $REFUSAL" ;;
    esac
    pos=$(parse_position "$C/journal") || { fail "$label: no SEGMENT + offset found in: $REFUSAL"; return 1; }
    local off=${pos##*:}
    if [ "$off" -le "$mid" ] && [ "$off" -ge $((mid - 70000)) ]; then
        pass "$label: reported offset $off is the record holding the flipped byte ($mid)"
    else
        fail "$label: reported offset $off does not lead to the flipped byte at $mid"
    fi
    store_state "$C" "$WORK/$label.state1"
    cmp_files "$WORK/$label.state0" "$WORK/$label.state1" "$label: refused mount changed nothing in the store"
    touch "$WORK/marker"; sleep 0.01
    if timeout 30 "$REPLFS" journal truncate "$C" --at "$pos" > "$WORK/trunc.out" 2> "$WORK/trunc.err"; then
        pass "$label: replfs journal truncate $C --at $pos"
    else
        fail "$label: journal truncate --at $pos failed: $(cat "$WORK/trunc.err")"; return 1
    fi
    [ -n "$(find "$C" -type f -newer "$WORK/marker" ! -name pid)" ] && pass "$label: the cut-off part is saved aside" ||
        fail "$label: journal truncate saved nothing aside under $C"
    if mount_store "$C" "$MNT"; then
        pass "$label: mounts after the deliberate truncate"
        check_files "$MNT" 40 7 prefix 3 > "$WORK/chk" && pass "$label: data before the cut intact ($(head -n 1 "$WORK/chk"))" ||
            fail "$label: data after cut: $(cat "$WORK/chk" | tr '\n' ' ')"
        echo "new" > "$MNT/after_cut" && sync "$MNT/after_cut" && pass "$label: writable after the cut" || fail "$label: cannot write after the cut"
        unmount "$MNT" "$C"
        mount_store "$C" "$MNT" && { [ "$(cat "$MNT/after_cut")" = new ] && pass "$label: write after the cut persisted" ||
            fail "$label: write after the cut lost"; unmount "$MNT" "$C"; }
    fi
}
corrupt_case corrupt_clean clean
corrupt_case corrupt_kill kill

# torn_case LABEL STOP: cut the last bytes of the last record
torn_case() {
    local label="$1" stop="$2" C="$WORK/torn_$2" seg end size
    stopped_store "$label" "$C" "$stop" 20 9 || return 1
    seg=$SEG
    end=$(data_end "$seg"); size=$(stat -c %s "$seg")
    if [ "$size" -eq "$end" ]; then
        truncate -s $((size - 5)) "$seg"
        log "$label: truncated $(basename "$seg") from $size to $((size - 5)) bytes"
    else
        dd if=/dev/zero of="$seg" bs=1 seek=$((end - 5)) count=5 conv=notrunc status=none
        log "$label: zeroed the last 5 data bytes of $(basename "$seg") (preallocated to $size, data ends at $end)"
    fi
    if try_mount "$C" "$MNT"; then
        pass "$label: mount with a torn tail succeeds ($(grep '^replfs:' "$MOUNT_ERR" | head -n 1))"
    else
        fail "$label: mount with a torn tail failed: $(cat "$MOUNT_ERR")"; return 1
    fi
    check_files "$MNT" 20 9 prefix 19 > "$WORK/chk" && pass "$label: data intact except possibly the last operation" ||
        fail "$label: $(cat "$WORK/chk" | tr '\n' ' ')"
    echo "after" > "$MNT/after_torn" || fail "$label: cannot write after the torn tail"
    unmount "$MNT" "$C"
    if timeout 30 "$REPLFS" journal dump "$C" > "$WORK/dump.out" 2> "$WORK/dump.err"; then
        pass "$label: journal dump reads the repaired journal ($(wc -l < "$WORK/dump.out") records)"
    else
        fail "$label: journal dump after the tail was cut: $(head -n 2 "$WORK/dump.err")"
    fi
    mount_store "$C" "$MNT" && {
        grep -q "^replfs: recovery:.*torn" "$MOUNT_ERR" && fail "$label: torn tail reported again on the next mount: $(cat "$MOUNT_ERR")"
        [ "$(cat "$MNT/after_torn" 2>/dev/null)" = after ] && pass "$label: later writes persist" || fail "$label: write after the torn tail lost"
        unmount "$MNT" "$C"; }
}
torn_case torn_kill kill
torn_case torn_clean clean

# ------------------------------------------------------------------- disk full
IMG="$WORK/small.img" SMALL="$WORK/small"
mkdir -p "$SMALL"
truncate -s 128M "$IMG" && mkfs.ext4 -q -m 0 "$IMG" && mount -o loop "$IMG" "$SMALL" ||
    fatal "cannot create/loop-mount a small ext4 image (harness)"
E2E_LOOPS+=("$SMALL")
DF="$SMALL/store" FM="$WORK/fullmnt"
init_store "$DF" || fatal "init on the small fs"
# small segments and frequent checkpoints so that freed space can be reused
mount_store "$DF" "$FM" -o segment_mb=4,checkpoint_mb=8,checkpoint_s=2 || fatal "mount on the small fs"
PID=$(daemon_pid "$DF")
PIDE="$PID:$(proc_start "$PID")"
head -c 1048576 /dev/urandom > "$WORK/keep1" && head -c 2097152 /dev/urandom > "$WORK/keep2"
cp "$WORK/keep1" "$WORK/keep2" "$FM/" && sync "$FM/keep1" "$FM/keep2" || fail "writing the keep files"
timeout 180 dd if=/dev/urandom of="$FM/fill" bs=1M 2> "$WORK/dd.err"
rc=$?
if [ $rc -ne 0 ] && grep -q "No space left on device" "$WORK/dd.err"; then
    pass "disk full: dd fails with ENOSPC ('No space left on device')"
else
    fail "disk full: dd exit $rc, expected ENOSPC: $(tail -n 3 "$WORK/dd.err" | tr '\n' ' ')"
fi
log "filled: $(stat -c %s "$FM/fill" 2>/dev/null) bytes; $(df -h "$SMALL" | tail -n 1)"
# small writes: must also be ENOSPC, never EIO
"$PY" - "$FM/small_after_full" > "$WORK/small.out" 2>&1 <<'PY'
import errno, os, sys
try:
    fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644)
    for i in range(64):
        os.write(fd, os.urandom(65536))
    os.fsync(fd)
    os.close(fd)
    print("no error")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
PY
case "$(cat "$WORK/small.out")" in
    ENOSPC) pass "disk full: a further write gets ENOSPC" ;;
    "no error") note "a further 4 MiB write succeeded on the full disk (space was freed meanwhile?)" ;;
    *) fail "disk full: a further write gave $(cat "$WORK/small.out"), expected ENOSPC" ;;
esac
e2e_same_proc "$PIDE" && pass "disk full: daemon survives" || fail "disk full: daemon $PID died"
e2e_is_mounted "$FM" && timeout 10 ls "$FM" > /dev/null && pass "disk full: mount still answers" ||
    fail "disk full: mount no longer answers"
cmp -s "$WORK/keep1" "$FM/keep1" && cmp -s "$WORK/keep2" "$FM/keep2" &&
    pass "disk full: files written earlier are intact" || fail "disk full: earlier files damaged"
rm -f "$FM/fill" "$FM/small_after_full" || fail "disk full: cannot delete the fill file"
ok=0
for i in $(seq 1 20); do
    if head -c 5242880 /dev/urandom > "$WORK/new5" && cp "$WORK/new5" "$FM/new5" 2> "$WORK/cp5.err" && sync "$FM/new5" 2>> "$WORK/cp5.err"; then
        ok=1; break
    fi
    sleep 1
done
if [ $ok = 1 ]; then
    [ "$i" -gt 1 ] && note "writes worked again only after $i attempts (~${i}s)"
    cmp -s "$WORK/new5" "$FM/new5" && pass "disk full: after deleting a file, writes work again" ||
        fail "disk full: new file content wrong after deleting"
else
    fail "disk full: writes still fail 20s after deleting the fill file: $(cat "$WORK/cp5.err")"
fi
unmount "$FM" "$DF"
if try_mount "$DF" "$FM" -o segment_mb=4,checkpoint_mb=8,checkpoint_s=2; then
    pass "disk full: mounts again after the full-disk episode"
    grep -qi "corrupt\|error" "$MOUNT_ERR" && fail "disk full: next mount reports: $(cat "$MOUNT_ERR")"
    grep -q "^replfs: recovery:" "$MOUNT_ERR" && fail "disk full: next mount ran recovery after a clean unmount: $(cat "$MOUNT_ERR")"
    cmp -s "$WORK/keep1" "$FM/keep1" && cmp -s "$WORK/keep2" "$FM/keep2" && cmp -s "$WORK/new5" "$FM/new5" &&
        pass "disk full: all files intact after remount" || fail "disk full: files damaged after remount"
    unmount "$FM" "$DF"
else
    fail "disk full: mount after the episode failed: $(cat "$MOUNT_ERR")"
fi
e2e_finish
