#!/bin/bash
# replfs verify: master + 2 slaves with a tree of files, directories, a symlink, a hard
# link and xattrs.
#  1. identical cluster: `replfs verify MNT` exits 0 and its summary says no differences;
#     verify of a directory that is no replfs mount exits 2 (error)
#  2. damage behind the daemons' backs, in the slaves' STORE/data (not through the mounts):
#     one byte of d1/f3 flipped on slave 1 (same size, same mtime), d2/f5 chmod 600 on
#     slave 2, user.color of d1/f7 changed on slave 2. verify exits 1, its output has a
#     summary line with "differences" and names each slave with its damaged path; nothing
#     else is reported (no line names slave 1 with f5/f7 or slave 2 with f3)
#  3. verify --repair exits 0; verify again exits 0; the slaves' STORE/data files are
#     byte-identical to the master's, the mode and xattr are the master's again, and the
#     trees seen through the slave mounts equal the master's
#  4. a writer (create/append/rename/truncate/chmod/xattr...) keeps running on the master:
#     5 verify runs in a row must all exit 0 (no false alarm for a lagging slave)
: "${E2E_TMPDIR:=/var/tmp}"
: "${E2E_TIMEOUT:=240}"
export E2E_TMPDIR E2E_TIMEOUT
source "$(dirname "$0")/lib.sh"
e2e_setup
require_tools fusermount3 setfattr getfattr
source "$E2E_DIR/../lib/cluster.sh"
source "$E2E_DIR/../lib/failover.sh"
RC="$E2E_DIR/../lib/repl_check.py"

# the summary line: "... N differences" (also accepted: "difference(s)", "difference")
summary_clean() {  # the summary line says 0 / no differences
    grep -iE 'difference' "$1" | grep -qiE '(^|[^0-9])0 difference|no difference|difference[^0-9]*(:|=)? *0([^0-9]|$)'
}

cluster_init || fatal "cannot set up the cluster"
cluster_start_master || fatal "master did not start"
cluster_start_slave 1 && cluster_start_slave 2 || fatal "slaves did not start"
M="${CL_MNT[0]}"
mkdir -p "$M/d1/sub" "$M/d2" "$M/empty" || fail "mkdir on the master"
for k in $(seq 1 12); do
    head -c $((k * 3001 + 17)) /dev/urandom > "$M/d1/f$k" && head -c $((k * 1009)) /dev/urandom > "$M/d2/f$k" ||
        fail "write f$k on the master"
done
dd if=/dev/urandom of="$M/d1/sub/big" bs=1M count=3 status=none || fail "big file"
ln -s ../d1/f1 "$M/d2/link" && ln "$M/d1/f2" "$M/d2/hard" && setfattr -n user.color -v blue "$M/d1/f7" &&
    setfattr -n user.dir -v x "$M/d1/sub" && chmod 640 "$M/d2/f5" && chmod 1777 "$M/empty" ||
    fail "metadata on the master"
: > "$M/d2/zero"
wait_caught_up 1 30 && wait_caught_up 2 30 || fatal "slaves did not catch up"
treedump "$M" "$WORK/m.dump"
for i in 1 2; do
    treedump "${CL_MNT[$i]}" "$WORK/s$i.dump"
    cmp_files "$WORK/m.dump" "$WORK/s$i.dump" "1: slave $i identical to the master before any damage (treedump)"
done

# ------------------------------------------------------------------ 1. clean cluster
fo_verify 0
if [ "$FO_VRC" = 0 ]; then pass "1: verify on an identical cluster exits 0: $(grep -i -m1 difference "$FO_VOUT")"
else fail "1: verify on an identical cluster exited $FO_VRC: $(head -n 10 "$FO_VOUT" | tr '\n' '|') $(head -c 300 "$FO_VOUT.err")"; fi
grep -qi difference "$FO_VOUT" && pass "1: verify prints a summary line with 'difference(s)': $(grep -i -m1 difference "$FO_VOUT")" ||
    fail "1: no summary line containing 'difference(s)' in: $(head -n 5 "$FO_VOUT" | tr '\n' '|')"
summary_clean "$FO_VOUT" && pass "1: the summary says 0/no differences" ||
    fail "1: the summary of a clean verify does not say 0/no differences: $(grep -i differences "$FO_VOUT" | head -n 2)"
mkdir -p "$WORK/notamount"
timeout 60 "$REPLFS" verify "$WORK/notamount" > "$WORK/v.err.out" 2>&1 < /dev/null
check_eq "$?" 2 "1: verify of a directory that is not a replfs mount exits 2 ($(head -n 1 "$WORK/v.err.out"))"

# ------------------------------------------------------------------ 2. damage
D1="${CL_STORE[1]}/data" D2="${CL_STORE[2]}/data"
[ -f "$D1/d1/f3" ] && [ -f "$D2/d2/f5" ] && [ -f "$D2/d1/f7" ] ||
    fatal "2: the slaves' trees are not in STORE/data as expected: $(ls "$D1" "$D2" 2>&1 | head -n 6 | tr '\n' ' ')"
"$PY" - "$D1/d1/f3" <<'PY' || fail "2: flip a byte in slave 1's STORE/data/d1/f3"
import os, sys
p = sys.argv[1]
st = os.stat(p)
with open(p, "r+b") as f:
    f.seek(1234)
    b = f.read(1)
    f.seek(1234)
    f.write(bytes([b[0] ^ 0x20]))
os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))   # same size, same mtime: only the content differs
PY
cmp -s "$M/d1/f3" "$D1/d1/f3" && fail "2: the byte flip did not change slave 1's copy"
chmod 600 "$D2/d2/f5" || fail "2: chmod in slave 2's STORE/data"
setfattr -n user.color -v red "$D2/d1/f7" || fail "2: setfattr in slave 2's STORE/data"

fo_verify 0
log "2: verify output:"; head -n 20 "$FO_VOUT" | sed 's/^/    /'
check_eq "$FO_VRC" 1 "2: verify with damaged slaves exits 1"
grep -qi difference "$FO_VOUT" && pass "2: summary line with 'difference(s)': $(grep -i -m1 difference "$FO_VOUT")" ||
    fail "2: no summary line containing 'difference(s)'"
ID1RE="$(fo_ids 1)" ID2RE="$(fo_ids 2)"
named() {  # named FILE SLAVE_RE PATH: a line names both
    grep -F -- "$3" "$1" | grep -qE -- "$2"
}
named "$FO_VOUT" "$ID1RE" "d1/f3" && pass "2: verify names slave 1 and d1/f3 (flipped byte)" ||
    fail "2: no line names slave 1 ($ID1RE) and d1/f3"
named "$FO_VOUT" "$ID2RE" "d2/f5" && pass "2: verify names slave 2 and d2/f5 (chmod)" ||
    fail "2: no line names slave 2 ($ID2RE) and d2/f5"
named "$FO_VOUT" "$ID2RE" "d1/f7" && pass "2: verify names slave 2 and d1/f7 (xattr)" ||
    fail "2: no line names slave 2 ($ID2RE) and d1/f7"
if named "$FO_VOUT" "$ID1RE" "d2/f5" || named "$FO_VOUT" "$ID1RE" "d1/f7" || named "$FO_VOUT" "$ID2RE" "d1/f3"; then
    fail "2: verify reports a difference on a slave where that file is intact"
else
    pass "2: no false report (slave 1 only d1/f3, slave 2 only d2/f5 and d1/f7)"
fi
# every tree path named on a line that names a slave must be that slave's damaged path
OTHER="$("$PY" - "$FO_VOUT" "$WORK/m.dump" "$ID1RE" "$ID2RE" <<'PY'
import re, sys
out, dump, re1, re2 = sys.argv[1:5]
paths = set()
for line in open(dump, errors="replace"):
    p = line.split("\t")[0]
    if p != ".":
        paths.add(p)
allowed = {1: {"d1/f3"}, 2: {"d2/f5", "d1/f7"}}
bad = []
for line in open(out, errors="replace"):
    if re.search(r"(?i)difference", line) and re.search(r"(?i)compared|verify at", line):
        continue        # the summary line
    who = [n for n, r in ((1, re1), (2, re2)) if re.search(r, line)]
    if not who:
        continue
    for tok in re.split(r"[\s'\"`,;()\[\]{}]+", line):
        tok = tok.rstrip(":.").lstrip("/")
        for p in paths:
            if tok == p or tok.endswith("/data/" + p):
                if not any(p in allowed[n] for n in who):
                    bad.append("%s (line: %s)" % (p, line.strip()[:160]))
print("\n".join(bad[:5]))
PY
)"
[ -z "$OTHER" ] && pass "2: no other path reported" || fail "2: verify reports paths that are intact on that slave: $OTHER"

# ------------------------------------------------------------------ 3. repair
fo_verify 0 --repair
log "3: verify --repair output:"; head -n 20 "$FO_VOUT" | sed 's/^/    /'
check_eq "$FO_VRC" 0 "3: verify --repair exits 0 (repaired)"
fo_verify 0
check_eq "$FO_VRC" 0 "3: verify after the repair exits 0 ($(grep -i -m1 difference "$FO_VOUT"))"
cmp -s "$M/d1/f3" "$D1/d1/f3" && pass "3: slave 1's STORE/data/d1/f3 is byte-identical to the master's" ||
    fail "3: slave 1's STORE/data/d1/f3 still differs from the master's: $(cmp "$M/d1/f3" "$D1/d1/f3" 2>&1)"
cmp -s "$M/d1/f3" "${CL_MNT[1]}/d1/f3" && pass "3: slave 1's mount shows the master's d1/f3" ||
    fail "3: slave 1's mount d1/f3 differs from the master's"
check_eq "$(stat -c %a "$D2/d2/f5")" "$(stat -c %a "$M/d2/f5")" "3: slave 2's STORE/data/d2/f5 has the master's mode again"
check_eq "$(getfattr --only-values -n user.color "$D2/d1/f7" 2>/dev/null)" blue "3: slave 2's STORE/data/d1/f7 has user.color=blue again"
for i in 1 2; do
    treedump "${CL_MNT[$i]}" "$WORK/s$i.repaired"
    cmp_files "$WORK/m.dump" "$WORK/s$i.repaired" "3: slave $i's tree (through its mount) equals the master's after the repair"
done
for f in d1/f1 d1/f2 d1/sub/big d2/f1 d2/hard; do
    cmp -s "$M/$f" "$D1/$f" && cmp -s "$M/$f" "$D2/$f" || fail "3: untouched $f differs on a slave after the repair"
done

# ------------------------------------------------------------------ 4. under writes
STOP="$WORK/load.stop"
cluster_bg "$PY" "$RC" load "$M/busy" --stop "$STOP" --seed 3 > "$WORK/load.out" 2>&1
LP=$CL_LAST_BG
sleep 1
ok=0
for k in 1 2 3 4 5; do
    l0="$(node_field 0 lsn)"
    fo_verify 0
    l1="$(node_field 0 lsn)"
    if [ "$FO_VRC" = 0 ]; then
        ok=$((ok + 1))
        log "4: run $k under writes (master lsn $l0 -> $l1): exit 0: $(grep -i -m1 difference "$FO_VOUT")"
    else
        fail "4: verify run $k while the master writes (lsn $l0 -> $l1) exited $FO_VRC (false alarm?):"
        head -n 15 "$FO_VOUT" | sed 's/^/    /'
        head -c 400 "$FO_VOUT.err" | sed 's/^/    stderr: /'
    fi
    [ "$l1" != "$l0" ] || note "4: run $k: master lsn did not move during verify ($l0)"
done
check_eq "$ok" 5 "4: 5/5 verify runs under a running writer report no difference"
touch "$STOP"
timeout 60 bash -c "while kill -0 $LP 2>/dev/null; do sleep 0.1; done"
wait "$LP" 2>/dev/null
log "4: writer: $(tail -n 1 "$WORK/load.out")"
wait_caught_up 1 60 && wait_caught_up 2 60
treedump "$M" "$WORK/m.final"
for i in 1 2; do
    treedump "${CL_MNT[$i]}" "$WORK/s$i.final"
    cmp_files "$WORK/m.final" "$WORK/s$i.final" "4: slave $i identical to the master after the writer stopped"
done
fo_verify_clean 0 "4: after the writer stopped"
for i in 2 1 0; do cluster_stop "$i" || fail "clean stop of node $i"; done
e2e_finish
