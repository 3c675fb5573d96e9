#!/bin/bash
# Hard links of every file type across a snapshot catch-up, and verify of link groups.
#  1. a master keeping little journal (-o checkpoint_s=1,segment_mb=1,retain_mb=1) gets
#     groups of names sharing one inode: a symlink (3 names, one in a subdirectory), a
#     dangling symlink (2), a fifo (3), a socket (2), a character device (2) and a regular
#     file (2); then enough writes that its journal no longer starts at LSN 1.
#  2. a fresh slave starts: it can only catch up by snapshot (snapshots_received >= 1).
#  3. in the slave's STORE/data and through its mount, each group's names have one inode
#     number (stat -c %i) and that many links (stat -c %h); the treedump (which names
#     each hard-link group) of the slave's mount equals the master's.
#  4. `replfs verify` on the master exits 0.
#  5. a group split by hand in the slave's STORE/data (one name of the symlink group
#     replaced by an equal symlink of its own, one of the fifo group by an equal fifo):
#     verify exits 1 and names both paths, and nothing else.
: "${E2E_TMPDIR:=/var/tmp}"
: "${E2E_TIMEOUT:=240}"
export E2E_TMPDIR E2E_TIMEOUT
source "$(dirname "$0")/lib.sh"
e2e_setup
require_tools fusermount3 stat
source "$E2E_DIR/../lib/cluster.sh"
source "$E2E_DIR/../lib/failover.sh"

num() { [[ "$1" =~ ^[0-9]+$ ]]; }
GROUPS_=(
    "ln/sym ln/sym2 ln/sub/sym3"
    "ln/dang ln/dang2"
    "ln/fifo ln/fifo2 ln/sub/fifo3"
    "ln/sock ln/sock2"
    "ln/null ln/null2"
    "ln/file ln/sub/file2"
)
# same_inode ROOT LABEL: every group's names in ROOT are one inode with as many links
same_inode() {
    local root="$1" label="$2" g names first ino n bad=""
    for g in "${GROUPS_[@]}"; do
        read -r -a names <<< "$g"
        first="${names[0]}"
        ino="$(stat -c %i "$root/$first" 2>&1)" n="$(stat -c %h "$root/$first" 2>&1)"
        [ "$n" = "${#names[@]}" ] || bad+=" $first:nlink=$n(want ${#names[@]})"
        for p in "${names[@]:1}"; do
            [ "$(stat -c %i "$root/$p" 2>&1)" = "$ino" ] || bad+=" $p:ino=$(stat -c %i "$root/$p" 2>&1)(want $ino)"
        done
    done
    if [ -z "$bad" ]; then pass "$label: every group is one inode with all its links"
    else fail "$label: link groups broken:$bad"; fi
}

# ------------------------------------------------------------------ 1. the master
cluster_init || fatal "cannot set up the cluster"
cluster_start_master -o checkpoint_s=1,segment_mb=1,retain_mb=1 || fatal "master did not start"
M="${CL_MNT[0]}"
mkdir -p "$M/ln/sub" || fatal "mkdir on the master"
"$PY" - "$M/ln" <<'PY' || fail "1: making the groups on the master"
import os, stat, sys
d = sys.argv[1]
os.symlink("file", d + "/sym")
os.symlink("../../nowhere", d + "/dang")
os.mkfifo(d + "/fifo", 0o620)
os.mknod(d + "/sock", stat.S_IFSOCK | 0o640)
os.mknod(d + "/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
with open(d + "/file", "wb") as f:
    f.write(os.urandom(100000))
for src, dsts in (("sym", ("sym2", "sub/sym3")), ("dang", ("dang2",)), ("fifo", ("fifo2", "sub/fifo3")),
                  ("sock", ("sock2",)), ("null", ("null2",)), ("file", ("sub/file2",))):
    for t in dsts:
        os.link(d + "/" + src, d + "/" + t, follow_symlinks=False)
PY
same_inode "$M" "1: master mount"
mkdir -p "$M/fill" && for i in $(seq 1 12); do
    dd if=/dev/urandom of="$M/fill/blob$i" bs=1M count=1 status=none || { fail "1: dd blob$i"; break; }
done
first_lsn() { timeout 60 "$REPLFS" journal dump "${CL_STORE[0]}" 2>/dev/null | grep -m1 -o 'lsn=[0-9]*' | cut -d= -f2; }
FL=""
for t in $(seq 1 60); do
    FL="$(first_lsn)"
    num "$FL" && [ "$FL" -gt 1 ] && break
    sleep 0.5
done
num "$FL" && [ "$FL" -gt 1 ] && pass "1: master trimmed its journal (first retained LSN $FL)" ||
    fatal "1: master journal still starts at LSN '$FL': a new slave would not need a snapshot"

# ------------------------------------------------------------------ 2. snapshot catch-up
cluster_start_slave 1 || fatal "slave 1 did not start"
wait_caught_up 1 90 || fatal "2: slave 1 did not catch up"
t0=$SECONDS
while :; do   # published up to ~1 s after applied_lsn
    SR="$(node_field 1 snapshots_received)"
    num "$SR" && [ "$SR" -ge 1 ] && break
    [ $((SECONDS - t0)) -ge 10 ] && break
    sleep 0.1
done
num "$SR" && [ "$SR" -ge 1 ] && pass "2: slave 1 caught up by a snapshot (snapshots_received $SR)" ||
    fail "2: slave 1 caught up without a snapshot (snapshots_received '$SR'): the test did not test it"

# ------------------------------------------------------------------ 3. groups on the slave
S_DATA="${CL_STORE[1]}/data"
[ -L "$S_DATA/ln/sym" ] || fatal "3: the slave's tree is not in STORE/data: $(ls "$S_DATA" 2>&1 | head -n 5 | tr '\n' ' ')"
same_inode "$S_DATA" "3: slave STORE/data"
same_inode "${CL_MNT[1]}" "3: slave mount"
treedump "$M" "$WORK/m.dump" && treedump "${CL_MNT[1]}" "$WORK/s.dump" &&
    cmp_files "$WORK/m.dump" "$WORK/s.dump" "3: slave tree (with hard-link groups) identical to the master's"

# ------------------------------------------------------------------ 4. verify: clean
fo_verify_clean 0 "4: after the snapshot catch-up"

# ------------------------------------------------------------------ 5. verify: split
# Same type, target, mode and owner: only the link structure differs.
T="$(readlink "$S_DATA/ln/sym")" O="$(stat -c %u:%g "$S_DATA/ln/sym")"
rm "$S_DATA/ln/sym2" && ln -s "$T" "$S_DATA/ln/sym2" && chown -h "$O" "$S_DATA/ln/sym2" ||
    fail "5: split ln/sym2 off in the slave's STORE/data"
MODE="$(stat -c %a "$S_DATA/ln/fifo")" O="$(stat -c %u:%g "$S_DATA/ln/fifo")"
rm "$S_DATA/ln/sub/fifo3" && mkfifo -m "$MODE" "$S_DATA/ln/sub/fifo3" && chown "$O" "$S_DATA/ln/sub/fifo3" ||
    fail "5: split ln/sub/fifo3 off in the slave's STORE/data"
[ "$(stat -c %h "$S_DATA/ln/sym")" = 2 ] && [ "$(stat -c %h "$S_DATA/ln/sub/fifo3")" = 1 ] ||
    fail "5: the split did not change the link counts"
fo_verify 0
log "5: verify output:"; head -n 12 "$FO_VOUT" | sed 's/^/    /'
check_eq "$FO_VRC" 1 "5: verify of a slave with split link groups exits 1"
grep -q 'ln/sym2' "$FO_VOUT" && pass "5: verify names ln/sym2" || fail "5: verify does not name ln/sym2"
grep -q 'ln/sub/fifo3' "$FO_VOUT" && pass "5: verify names ln/sub/fifo3" || fail "5: verify does not name ln/sub/fifo3"
# difference lines: "  URL: PATH: what differs"
REPORTED="$(sed -nE 's|^ *[a-z]+://[^ ]+: ([^:]+): .*|\1|p' "$FO_VOUT" | sort -u | tr '\n' ' ')"
check_eq "$REPORTED" "ln/sub/fifo3 ln/sym2 " "5: verify reports exactly the two split names"

cluster_stop 1 && cluster_stop 0 && pass "clean stop"
e2e_finish
