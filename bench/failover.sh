#!/usr/bin/env bash
# bench/failover.sh — failover benchmark for replfs (issue 4), on loopback, one disk.
#
# Measures, each on fresh stores (tests/lib/cluster.sh and tests/lib/failover.sh start
# the nodes):
#   failover  master + 2 async slaves, a writer on the master (4 KiB files, one after the
#             other), the master SIGKILLed after WRITE_S s. Once both slaves' LSNs have
#             settled, the one holding more (slave 1 on a tie) is promoted. From the start
#             of `replfs promote MNT` (t0) we time: the promote command's own duration;
#             the first write accepted on the new master (create+write+close of a file,
#             retried every 5 ms); the other slave following it (its status master.url is
#             the new master's URL) and holding the first new write (its applied_lsn >=
#             the new master's lsn after that write). FO_REPS repetitions, each on a fresh
#             cluster; median and max.
#   rejoin    master + 1 slave holding a base tree (REJOIN_SMALL x 4 KiB files plus
#             REJOIN_MB MiB in 64 MiB files, one run per size in REJOIN_MB). Slave 1's daemon
#             is SIGSTOPped, DIVERGE_OPS operations run on the master (one python process:
#             create+write, overwrite, append, rename, unlink), the master is SIGKILLed,
#             slave 1 SIGCONTed and promoted (without --force; with --force only if that is
#             refused, and then it says so), one write on it, and the old master's store
#             is mounted with --slave-of the new master. Timed from that mount command
#             until its status shows master.state "streaming" and applied_lsn == the new
#             master's lsn; also the files set aside in STORE/recovery/*/files and the
#             records listed in recovery/*/REPORT. The rejoin replaces the tree by a
#             snapshot, so its time grows with the tree size (hence several sizes).
#   verify    master + 1 slave holding VERIFY_MB MiB in 64 MiB files plus VERIFY_SMALL
#             x 4 KiB files; `replfs verify MNT --json` cold (sync + drop_caches before
#             each) and warm, VERIFY_REPS times each: bytes_hashed (master + slave),
#             seconds, MB/s, against the disk's cold sequential read (dd of a VERIFY_MB
#             MiB file, bs=1M, caches dropped) and a cold `cat` of the same two trees.
#
# Timing: the failover and rejoin clocks are read by one python process around the
# commands (time.time()); status is polled with `replfs status --json` (~30-50 ms per
# call on this machine, which is the resolution of the "follows" and "rejoin" figures).
#
# Usage: bench/failover.sh [--smoke] [-d DIR] [-n REPS] [--replfs PATH] [--keep]
#   --smoke        seconds-long version (tiny sizes, figures meaningless); exit status is
#                  non-zero when any step fails (for CI)
#   -d DIR         work directory under DIR (default /var/tmp); all nodes live there
#   -n REPS        failover repetitions (default 10; --smoke: 1)
#   --replfs PATH  replfs binary (default $REPLFS or <repo>/build/replfs)
#   --keep         keep the work directory
#
# Full runs append to bench/results/failover-<date>.txt. Needs root (drop_caches, FUSE).
# Environment overrides: WRITE_S PROMOTE_DELAYS DIVERGE_OPS REJOIN_MB REJOIN_SMALL VERIFY_MB VERIFY_SMALL
#   VERIFY_REPS STEP_TIMEOUT RESULTS_DIR
set -uo pipefail
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
REPLFS=${REPLFS:-$ROOT/build/replfs}
SMOKE=0 BASE=/var/tmp KEEP=0 FO_REPS=""
CMDLINE="bench/failover.sh $*"

usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
	case $1 in
	--smoke) SMOKE=1 ;;
	-d) BASE=${2:?-d needs a directory}; shift ;;
	-n) FO_REPS=${2:?-n needs a number}; shift ;;
	--replfs) REPLFS=${2:?--replfs needs a path}; shift ;;
	--keep) KEEP=1 ;;
	-h|--help) usage; exit 0 ;;
	*) echo "failover.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done
[ -n "$FO_REPS" ] || { [ "$SMOKE" = 1 ] && FO_REPS=1 || FO_REPS=10; }
case $FO_REPS in ''|*[!0-9]*|0) echo "failover.sh: -n wants a positive integer" >&2; exit 2 ;; esac

if [ "$SMOKE" = 1 ]; then
	WRITE_S=${WRITE_S:-0.5}; PROMOTE_DELAYS=${PROMOTE_DELAYS:-0}; DIVERGE_OPS=${DIVERGE_OPS:-300}; REJOIN_MB=${REJOIN_MB:-0}
	REJOIN_SMALL=${REJOIN_SMALL:-50}; VERIFY_MB=${VERIFY_MB:-8}; VERIFY_SMALL=${VERIFY_SMALL:-50}
	VERIFY_REPS=${VERIFY_REPS:-1}; STEP_TIMEOUT=${STEP_TIMEOUT:-60}
else
	WRITE_S=${WRITE_S:-2}; PROMOTE_DELAYS=${PROMOTE_DELAYS:-0 5}; DIVERGE_OPS=${DIVERGE_OPS:-10000}; REJOIN_MB=${REJOIN_MB:-0 512}
	REJOIN_SMALL=${REJOIN_SMALL:-1000}; VERIFY_MB=${VERIFY_MB:-1024}; VERIFY_SMALL=${VERIFY_SMALL:-2000}
	VERIFY_REPS=${VERIFY_REPS:-3}; STEP_TIMEOUT=${STEP_TIMEOUT:-600}
fi

missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1  (apt-get install $2)"); }
need python3 python3; need dd coreutils; need fusermount3 fuse3; need timeout coreutils
need awk mawk; need find findutils; need xargs findutils
[ -x "$REPLFS" ] || missing+=("replfs binary $REPLFS  (cmake -S . -B build && cmake --build build -j2)")
[ -e /dev/fuse ] || missing+=("/dev/fuse")
[ "$(id -u)" = 0 ] || missing+=("root privileges")
if [ ${#missing[@]} -gt 0 ]; then
	echo "failover.sh: missing requirements:" >&2; printf '  - %s\n' "${missing[@]}" >&2; exit 3
fi

mkdir -p "$BASE" || exit 3
BASE=$(cd "$BASE" && pwd -P)
W=$(mktemp -d "$BASE/replfs-fobench.XXXXXX") || exit 3
chmod 755 "$W"
LOG=$W/log.txt RAW=$W/raw.txt
: >"$LOG"; : >"$RAW"
FAILS=0
log()  { echo "[$(date +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }
fail() { FAILS=$((FAILS + 1)); log "FAIL: $*"; }
note() { log "note: $*"; }
pass() { :; }

# cluster helpers: nodes live in $W/clusterK, we own the cleanup
WORK=$W CL_NO_TRAP=1 CL_LOG_TAIL=15
PY=/usr/bin/python3; [ -x "$PY" ] || PY=$(command -v python3)
source "$ROOT/tests/lib/cluster.sh"
source "$ROOT/tests/lib/failover.sh"

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	cluster_teardown
	if [ "$KEEP" = 1 ]; then echo "failover.sh: work directory kept: $W" >&2
	elif grep -q " $W" /proc/self/mounts; then echo "failover.sh: something still mounted under $W; not removed" >&2
	else rm -rf --one-file-system "$W"; fi
	exit $rc
}
trap cleanup EXIT
trap 'echo "failover.sh: interrupted" >&2; exit 130' INT TERM

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }
T() { timeout -k 10 "$STEP_TIMEOUT" "$@"; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
declare -A V
rec() { V[$1]=$2; echo "raw $1 $2" >>"$RAW"; }
val() { echo "${V[$1]:--}"; }
div() { awk -v a="$1" -v b="$2" -v f="${3:-%.2f}" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-" || b + 0 == 0) print "-"; else printf f, a / b }'; }
# stats NAME VALUES...: NAME_median NAME_max NAME_min NAME_all
stats() {
	local n=$1 s
	shift
	[ $# -gt 0 ] || return 0
	s=$(printf '%s\n' "$@" | sort -g)
	rec "${n}_all" "$(tr '\n' ' ' <<<"$s" | sed 's/ $//')"
	rec "${n}_min" "$(head -1 <<<"$s")"
	rec "${n}_max" "$(tail -1 <<<"$s")"
	rec "${n}_median" "$(awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }' <<<"$s")"
}
# jf FILE EXPR: one field of a JSON file (python expression over j)
jf() { "$PY" -c 'import json, sys; j = json.load(open(sys.argv[1])); v = eval(sys.argv[2]); print("-" if v is None else v)' "$1" "$2" 2>/dev/null || echo -; }

# private copy: the developer may rebuild while we run
mkdir -p "$W/bin"
cp "$REPLFS" "$W/bin/replfs" || exit 4
REPLFS_ORIG=$REPLFS REPLFS=$W/bin/replfs
export REPLFS

# incompressible pattern for the big files
PAT=$W/pattern.dat
PAT_MB=$((VERIFY_MB < 64 ? (VERIFY_MB > 0 ? VERIFY_MB : 1) : 64))
head -c $((PAT_MB * 1048576)) /dev/urandom >"$PAT"

# big_tree DIR MiB: MiB MiB of incompressible data in files of (at most) 64 MiB
big_tree() {
	local d=$1 mb=$2 f k=0
	mkdir -p "$d" || return 1
	while [ "$mb" -gt 0 ]; do
		f=$((mb < PAT_MB ? mb : PAT_MB))
		T dd if="$PAT" of="$d/big$k" bs=1M count="$f" status=none || return 1
		mb=$((mb - f)); k=$((k + 1))
	done
}

cat >"$W/fo.py" <<'PY'
import json, os, random, subprocess, sys, time
# fo.py COMMAND ARGS... (see each command); times are time.time() (s since the epoch)
BIN = os.environ["REPLFS"]

def status(mnt):
    try:
        r = subprocess.run([BIN, "status", mnt, "--json"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, timeout=10)
        return json.loads(r.stdout)
    except Exception:
        return None

def get(j, *path):
    for k in path:
        if not isinstance(j, dict):
            return None
        j = j.get(k)
    return j

cmd, a = sys.argv[1], sys.argv[2:]

if cmd == "writer":
    # writer DIR: 4 KiB files, 200 names round robin, until an error (the master died)
    d = a[0]
    os.makedirs(d, exist_ok=True)
    buf, n = os.urandom(4096), 0
    try:
        while True:
            with open(os.path.join(d, "w%d" % (n % 200)), "wb") as f:
                f.write(buf)
            n += 1
    except OSError as e:
        print("writer: %d files written, then %s" % (n, e))

elif cmd == "settle":
    # settle TIMEOUT MNT...: until every mount's lsn is unchanged for 0.5 s; prints the lsns
    t_end, mnts = time.time() + float(a[0]), a[1:]
    last, since = None, time.time()
    while time.time() < t_end:
        cur = [get(status(m), "lsn") for m in mnts]
        if cur != last or None in cur:
            last, since = cur, time.time()
        elif time.time() - since >= 0.5:
            break
        time.sleep(0.05)
    print(" ".join(str(x) for x in last))

elif cmd == "failover":
    # failover NEWMNT OTHERMNT NEWURL TIMEOUT OUT.json [--force]
    new, other, url, tmo, out = a[0], a[1], a[2], float(a[3]), a[4]
    extra = a[5:]
    r = {}
    t0 = time.time()
    p = subprocess.run([BIN, "promote", new] + extra, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=tmo)
    t1 = time.time()
    r.update(t0=t0, promote_rc=p.returncode, promote_out=p.stdout.decode().strip(),
             promote_err=p.stderr.decode().strip(), promote_ms=(t1 - t0) * 1000)
    t2 = None
    while time.time() - t0 < tmo:
        try:
            with open(os.path.join(new, ".first_write"), "wb") as f:
                f.write(b"first write on the new master\n")
            t2 = time.time()
            break
        except OSError as e:
            r["write_error"] = str(e)
            time.sleep(0.005)
    r["first_write_ms"] = None if t2 is None else (t2 - t0) * 1000
    if other and t2 is not None:
        lsn = get(status(new), "lsn")
        r["new_lsn"] = lsn
        t_url = t_data = None
        while time.time() - t0 < tmo and t_data is None:
            j = status(other)
            t = time.time()
            if get(j, "master", "url") == url:
                if t_url is None:
                    t_url = t
                if lsn is not None and (get(j, "applied_lsn") or 0) >= lsn:
                    t_data = t
                    break
            time.sleep(0.01)
        r["follow_url_ms"] = None if t_url is None else (t_url - t0) * 1000
        r["follow_data_ms"] = None if t_data is None else (t_data - t0) * 1000
        r["other_status"] = status(other)
    json.dump(r, open(out, "w"), indent=1)

elif cmd == "diverge":
    # diverge DIR BASEDIR N SEED: N operations, mixed; prints a JSON summary
    d, based, n, seed = a[0], a[1], int(a[2]), int(a[3])
    rnd = random.Random(seed)
    os.makedirs(d, exist_ok=True)
    base = [os.path.join(based, x) for x in sorted(os.listdir(based))] if os.path.isdir(based) else []
    base = [x for x in base if os.path.isfile(x) and os.path.getsize(x) <= 65536]
    live, k, cnt, errs = [], 0, {}, 0
    t0 = time.time()
    for i in range(n):
        x = rnd.random()
        if not live or x < 0.35:
            op = "create"
        elif x < 0.50:
            op = "overwrite"
        elif x < 0.65:
            op = "append"
        elif x < 0.85:
            op = "rename"
        else:
            op = "unlink"
        try:
            if op == "create":
                p = os.path.join(d, "c%d" % k); k += 1
                with open(p, "wb") as f:
                    f.write(os.urandom(rnd.randint(1, 2048)))
                live.append(p)
            elif op == "overwrite":
                # a quarter of them change a file of the base tree (kept in recovery too)
                p = rnd.choice(base) if base and rnd.random() < 0.25 else rnd.choice(live)
                with open(p, "r+b") as f:
                    f.write(os.urandom(rnd.randint(1, 512)))
            elif op == "append":
                with open(rnd.choice(live), "ab") as f:
                    f.write(os.urandom(rnd.randint(1, 512)))
            elif op == "rename":
                j = rnd.randrange(len(live))
                q = os.path.join(d, "r%d" % k); k += 1
                os.rename(live[j], q)
                live[j] = q
            else:
                j = rnd.randrange(len(live))
                os.unlink(live[j])
                live[j] = live[-1]; live.pop()
            cnt[op] = cnt.get(op, 0) + 1
        except OSError:
            errs += 1
    print(json.dumps({"ops": n, "seconds": time.time() - t0, "errors": errs, "live": len(live),
                      "by_op": cnt}))

elif cmd == "rejoin":
    # rejoin MNT MASTERMNT T0 TIMEOUT OUT.json: until MNT's master.state is "streaming" and
    # its applied_lsn equals MASTERMNT's lsn
    mnt, mm, t0, tmo, out = a[0], a[1], float(a[2]), float(a[3]), a[4]
    r = {"streaming_s": None, "caught_up_s": None, "set_aside_s": None, "states": []}
    while time.time() - t0 < tmo:
        j, l = status(mnt), get(status(mm), "lsn")
        t = time.time()
        st = get(j, "master", "state")
        if not r["states"] or r["states"][-1][0] != st:
            r["states"].append([st, round(t - t0, 3)])   # each state seen, first seen at (s)
        if r.get("applied_s") is None and l is not None and get(j, "applied_lsn") == l:
            r["applied_s"] = t - t0                       # has the master's tree, whatever state says
        if r["set_aside_s"] is None and get(j, "recovery"):
            r["set_aside_s"] = t - t0                     # status lists the recovery folder
        r["last_state"], r["last_applied"], r["master_lsn"] = st, get(j, "applied_lsn"), l
        if st == "streaming" and r["streaming_s"] is None:
            r["streaming_s"] = t - t0
        if st == "streaming" and l is not None and get(j, "applied_lsn") == l:
            r["caught_up_s"] = t - t0
            break
        time.sleep(0.01)
    r["status"] = status(mnt)
    json.dump(r, open(out, "w"), indent=1)

elif cmd == "verify":
    # verify MNT OUT.json: replfs verify MNT --json, with the wall time and exit status
    mnt, out = a[0], a[1]
    t0 = time.time()
    p = subprocess.run([BIN, "verify", mnt, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.time() - t0
    txt = p.stdout.decode("utf-8", "replace")
    try:
        j, end = json.JSONDecoder().raw_decode(txt.lstrip())
        trailer = txt.lstrip()[end:].strip()
    except Exception as e:
        j, trailer = {"parse_error": str(e)}, txt[:2000]
    j["wall_s"], j["rc"], j["stderr"], j["after_json"] = wall, p.returncode, p.stderr.decode()[:2000], trailer
    json.dump(j, open(out, "w"), indent=1)
PY
FO() { T "$PY" "$W/fo.py" "$@"; }

# ---------------------------------------------------------------- machine
part=$(df -P "$W" | awk 'NR == 2 { print $1 }'); part=${part#/dev/}; dev=${part%%[0-9]*}
HDR=$(cat <<EOF
date:      $(date '+%F %T %Z')
command:   $CMDLINE
machine:   $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal:/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo) GiB RAM, kernel $(uname -r)
disk:      $(df -PT "$W" | awk 'NR == 2 { print $2 " on " $1 }'), rotational=$(cat "/sys/block/$dev/queue/rotational" 2>/dev/null || echo ?)
replfs:    $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' (+uncommitted changes)'), binary $REPLFS_ORIG sha256 $(sha256sum "$REPLFS" | cut -c1-16), built $(date -r "$REPLFS_ORIG" '+%F %T')
sizes:     failover x${FO_REPS} per promote delay {${PROMOTE_DELAYS// /,}} s (writer ${WRITE_S}s); rejoin after ${DIVERGE_OPS} ops, base trees ${REJOIN_SMALL} x 4 KiB + {${REJOIN_MB// /,}} MiB; verify ${VERIFY_MB} MiB + ${VERIFY_SMALL} x 4 KiB, x${VERIFY_REPS} cold + warm
load:      $(load) at start
EOF
)
echo "$HDR" >&2

# ---------------------------------------------------------------- 1. failover
# failover_rep D R: fresh cluster, writer, SIGKILL, promote the slave holding more, D s
# after the kill (at the earliest once the slaves' LSNs have settled)
failover_rep() {
	local d=$1 r=$2 q="fo_d$1_$2" wp l1 l2 P O out=$W/failover.$1.$2.json lp lo tk w
	log "failover (promote ${d}s after the kill) $r/$FO_REPS: master + 2 slaves, writer ${WRITE_S}s, SIGKILL the master (load $(load))"
	rec "${q}_load" "$(load | cut -d' ' -f1)"
	cluster_init || { fail "$q: cluster_init"; return 1; }
	cluster_start_master || { fail "$q: master did not start"; return 1; }
	cluster_start_slave 1 && cluster_start_slave 2 || { fail "$q: slaves did not start"; return 1; }
	mkdir -p "${CL_MNT[0]}/base" && echo base >"${CL_MNT[0]}/base/f" || { fail "$q: write on the master"; return 1; }
	wait_caught_up 1 30 >/dev/null && wait_caught_up 2 30 >/dev/null || { fail "$q: slaves did not catch up"; return 1; }
	cluster_bg "$PY" "$W/fo.py" writer "${CL_MNT[0]}/load" >>"$LOG" 2>&1
	wp=$CL_LAST_BG
	sleep "$WRITE_S"
	rec "${q}_master_lsn" "$(node_field 0 lsn 2>/dev/null)"
	cluster_kill 0 || { fail "$q: cannot kill the master"; return 1; }
	tk=$(now)
	CL_ROLE[0]=dead
	wait "$wp" 2>/dev/null
	read -r l1 l2 < <(FO settle 30 "${CL_MNT[1]}" "${CL_MNT[2]}")
	fo_num "$l1" && fo_num "$l2" || { fail "$q: no lsn from the slaves ('$l1' '$l2')"; return 1; }
	if [ "$l2" -gt "$l1" ]; then P=2 O=1 lp=$l2 lo=$l1; else P=1 O=2 lp=$l1 lo=$l2; fi
	w=$(awk -v d="$d" -v e="$(elapsed "$tk" "$(now)")" 'BEGIN { w = d - e; printf "%.3f", (w > 0 ? w : 0) }')
	sleep "$w"
	rec "${q}_promoted" "slave$P(lsn=$lp,other=$lo,$(awk -v e="$(elapsed "$tk" "$(now)")" 'BEGIN { printf "%.1f", e }')s)"
	FO failover "${CL_MNT[$P]}" "${CL_MNT[$O]}" "${CL_URL[$P]}" "$STEP_TIMEOUT" "$out"
	cat "$out" >>"$LOG"; echo >>"$LOG"
	if [ "$(jf "$out" 'j["promote_rc"]')" != 0 ]; then
		fail "$q: promote of slave $P: exit $(jf "$out" 'j["promote_rc"]'): $(jf "$out" 'j["promote_err"]')"
		fo_diag "$P" "$O" >>"$LOG"
		return 1
	fi
	CL_ROLE[$P]=master
	rec "${q}_promote_ms" "$(jf "$out" '"%.0f" % j["promote_ms"]')"
	# the daemon's own figure: "promoted: MNT is the master at epoch E (from LSN N) in X ms"
	rec "${q}_promote_daemon_ms" "$(jf "$out" '__import__("re").search(r" in ([0-9.]+) ms", j["promote_out"]).group(1)')"
	rec "${q}_first_write_ms" "$(jf "$out" '"%.0f" % j["first_write_ms"]')"
	rec "${q}_follow_url_ms" "$(jf "$out" '"%.0f" % j["follow_url_ms"]')"
	rec "${q}_follow_data_ms" "$(jf "$out" '"%.0f" % j["follow_data_ms"]')"
	[ "$(val "${q}_first_write_ms")" != - ] || fail "$q: no write accepted on the new master: $(jf "$out" 'j.get("write_error")')"
	[ "$(val "${q}_follow_data_ms")" != - ] || { fail "$q: slave $O did not follow the new master with its first write within ${STEP_TIMEOUT}s"; fo_diag "$P" "$O" >>"$LOG"; }
	return 0
}
for d in $PROMOTE_DELAYS; do
	for ((r = 1; r <= FO_REPS; r++)); do
		failover_rep "$d" "$r"
		cluster_stop_all quiet
		[ "$KEEP" = 1 ] || rm -rf --one-file-system "$CL_DIR"
	done
	for m in promote_ms promote_daemon_ms first_write_ms follow_url_ms follow_data_ms; do
		vals=()
		for ((r = 1; r <= FO_REPS; r++)); do v=$(val "fo_d${d}_${r}_$m"); [ "$v" != - ] && vals+=("$v"); done
		[ ${#vals[@]} -gt 0 ] && stats "fo_d${d}_$m" "${vals[@]}"
		rec "fo_d${d}_${m}_n" "${#vals[@]}"
	done
done

# ---------------------------------------------------------------- 2. rejoin
# rejoin_run MB: base tree REJOIN_SMALL x 4 KiB + MB MiB; DIVERGE_OPS ops the slave never gets
rejoin_run() {
	local mb=$1 p="rj$1" s1 l0 l1 out=$W/rejoin.$1.json t0 t1 rd tree_bytes force=no
	log "rejoin ($mb MiB + $REJOIN_SMALL small files): master + 1 slave, slave stopped, $DIVERGE_OPS ops on the master (load $(load))"
	rec "${p}_load" "$(load | cut -d' ' -f1)"
	cluster_init || { fail "$p: cluster_init"; return 1; }
	cluster_start_master || { fail "$p: master did not start"; return 1; }
	cluster_start_slave 1 || { fail "$p: slave did not start"; return 1; }
	mkdir -p "${CL_MNT[0]}/base" || { fail "$p: mkdir base"; return 1; }
	"$PY" -c 'import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(os.path.join(d, "s%d" % i), "wb") as f: f.write(os.urandom(4096))' "${CL_MNT[0]}/base" "$REJOIN_SMALL" ||
		{ fail "$p: base small files"; return 1; }
	big_tree "${CL_MNT[0]}/big" "$mb" || { fail "$p: base big files"; return 1; }
	wait_caught_up 1 "$STEP_TIMEOUT" >/dev/null || { fail "$p: slave did not catch up"; return 1; }
	tree_bytes=$(du -sb --apparent-size "${CL_STORE[0]}/data" 2>/dev/null | cut -f1)
	rec "${p}_tree_mib" "$(awk -v b="${tree_bytes:-0}" 'BEGIN { printf "%.1f", b / 1048576 }')"
	rec "${p}_tree_entries" "$(find "${CL_STORE[0]}/data" -mindepth 1 | wc -l)"
	s1=$(cl_daemon_pid 1)
	kill -STOP "$s1" || { fail "$p: cannot SIGSTOP slave 1"; return 1; }
	l0=$(node_field 0 lsn)
	FO diverge "${CL_MNT[0]}/div" "${CL_MNT[0]}/base" "$DIVERGE_OPS" 7 >"$W/$p.diverge" 2>&1 || fail "$p: diverge: $(tail -3 "$W/$p.diverge")"
	cat "$W/$p.diverge" >>"$LOG"
	l1=$(node_field 0 lsn)
	rec "${p}_ops" "$(jf "$W/$p.diverge" 'j["ops"]')"
	rec "${p}_ops_errors" "$(jf "$W/$p.diverge" 'j["errors"]')"
	rec "${p}_ops_s" "$(jf "$W/$p.diverge" '"%.2f" % j["seconds"]')"
	rec "${p}_records" "$((l1 - l0))"
	cluster_kill 0 || { fail "$p: cannot kill the master"; kill -CONT "$s1"; return 1; }
	CL_ROLE[0]=dead
	kill -CONT "$s1"
	fo_promote 1
	if [ "$FO_RC" != 0 ]; then
		note "$p: promote without --force refused (exit $FO_RC: $FO_ERR); again with --force"
		force=yes
		fo_promote 1 --force
	fi
	rec "${p}_promote_force" "$force"
	rec "${p}_promote_ms" "$FO_MS"
	[ "$FO_RC" = 0 ] || { fail "$p: promote: exit $FO_RC: $FO_ERR"; fo_diag 1 >>"$LOG"; return 1; }
	CL_ROLE[1]=master
	rec "${p}_fork_lsn" "$(fo_fork_lsn 1 "$FO_EPOCH" 2>/dev/null)"
	echo "after promote" >"${CL_MNT[1]}/after_promote" || fail "$p: write on the new master"
	rec "${p}_lost_records" "$(awk -v a="$l1" -v f="$(val "${p}_fork_lsn")" 'BEGIN { print (f ~ /^[0-9]+$/) ? a - f : "-" }')"
	sync
	t0=$(now)
	fo_start_slave_of 0 1 || { fail "$p: the old master could not be mounted with --slave-of the new master"; fo_diag 0 1 >>"$LOG"; return 1; }
	t1=$(now)
	CL_ROLE[0]=slave
	rec "${p}_mount_s" "$(awk -v s="$(elapsed "$t0" "$t1")" 'BEGIN { printf "%.3f", s }')"
	FO rejoin "${CL_MNT[0]}" "${CL_MNT[1]}" "$t0" "$STEP_TIMEOUT" "$out"
	cat "$out" >>"$LOG"; echo >>"$LOG"
	rec "${p}_set_aside_s" "$(jf "$out" '"%.3f" % j["set_aside_s"]')"
	rec "${p}_states" "$(jf "$out" '" ".join("%s@%s" % (a, b) for a, b in j["states"])')"
	rec "${p}_applied_s" "$(jf "$out" '"%.3f" % j["applied_s"]')"
	rec "${p}_streaming_s" "$(jf "$out" '"%.3f" % j["streaming_s"]')"
	rec "${p}_rejoin_s" "$(jf "$out" '"%.3f" % j["caught_up_s"]')"
	[ "$(val "${p}_rejoin_s")" != - ] || { fail "$p: the old master did not catch up with the new one in ${STEP_TIMEOUT}s (state $(jf "$out" 'j["last_state"]'), applied $(jf "$out" 'j["last_applied"]') of $(jf "$out" 'j["master_lsn"]'))"; fo_diag 0 1 >>"$LOG"; }
	rd=$(fo_rec_dirs 0)
	rec "${p}_recovery_dirs" "$(grep -c . <<<"$rd")"
	rd=$(head -1 <<<"$rd")
	if [ -n "$rd" ]; then
		rec "${p}_recovery_files" "$(find "$rd/files" -type f 2>/dev/null | wc -l)"
		rec "${p}_recovery_bytes" "$(du -sb --apparent-size "$rd/files" 2>/dev/null | cut -f1)"
		rec "${p}_report_records" "$(grep -c '^LSN ' "$rd/REPORT" 2>/dev/null)"
		rec "${p}_status_records" "$(node_field 0 "(lambda r: r if isinstance(r, int) else len(r))(j['recovery'][-1]['records'])" 2>/dev/null)"
		rec "${p}_status_files" "$(node_field 0 "(lambda r: r if isinstance(r, int) else len(r))(j['recovery'][-1]['files'])" 2>/dev/null)"
		head -5 "$rd/REPORT" >>"$LOG"
	else
		fail "$p: no STORE/recovery/*/ folder on the rejoined node"
	fi
	[ "$(val "${p}_report_records")" = "$(val "${p}_lost_records")" ] ||
		note "$p: REPORT lists $(val "${p}_report_records") records, the old master wrote $(val "${p}_lost_records") after the fork"
	return 0
}
for mb in $REJOIN_MB; do
	rejoin_run "$mb"
	cluster_stop_all quiet
	[ "$KEEP" = 1 ] || rm -rf --one-file-system "$CL_DIR"
done

# ---------------------------------------------------------------- 3. verify
# verify hashes with BLAKE2b (libsodium crypto_generichash): its rate on one core of this
# machine, through the same library, bounds what one node's hashing can do
log "cpu: libsodium BLAKE2b rate on one core"
out=$("$PY" - <<'PY' 2>&1
import ctypes, ctypes.util, os, time
n = ctypes.util.find_library("sodium") or "libsodium.so.23"
L = ctypes.CDLL(n); L.sodium_init()
st = ctypes.create_string_buffer(L.crypto_generichash_statebytes() + 64)
a = ctypes.c_void_p((ctypes.addressof(st) + 63) & ~63)
buf, out, r = os.urandom(1 << 20), ctypes.create_string_buffer(32), []
for k in range(3):
    L.crypto_generichash_init(a, None, ctypes.c_size_t(0), ctypes.c_size_t(32))
    t = time.perf_counter()
    for i in range(256):
        L.crypto_generichash_update(a, buf, ctypes.c_ulonglong(len(buf)))
    L.crypto_generichash_final(a, out, ctypes.c_size_t(32))
    r.append(256 * 1048576 / (time.perf_counter() - t) / 1e6)
print(" ".join("%.1f" % x for x in r))
PY
) || { note "cpu: cannot time libsodium's BLAKE2b: $out"; out=""; }
[ -n "$out" ] && stats blake2b_mbs $out

log "disk: dd cold read of ${VERIFY_MB} MiB (load $(load))"
{ for ((k = 0; k < (VERIFY_MB + PAT_MB - 1) / PAT_MB; k++)); do cat "$PAT"; done; } 2>/dev/null |
	head -c $((VERIFY_MB * 1048576)) >"$W/disk.dat" || fail "disk: write"
vals=()
for ((k = 1; k <= VERIFY_REPS; k++)); do
	drop_caches
	t0=$(now)
	T dd if="$W/disk.dat" of=/dev/null bs=1M status=none || fail "disk: dd read"
	t1=$(now)
	vals+=("$(awk -v b=$((VERIFY_MB * 1048576)) -v s="$(elapsed "$t0" "$t1")" 'BEGIN { printf "%.1f", b / s / 1e6 }')")
done
stats disk_read_mbs "${vals[@]}"
rm -f "$W/disk.dat"

log "verify: master + 1 slave holding ${VERIFY_MB} MiB + ${VERIFY_SMALL} x 4 KiB (load $(load))"
rec verify_load "$(load | cut -d' ' -f1)"
if cluster_init && cluster_start_master && cluster_start_slave 1; then
	big_tree "${CL_MNT[0]}/v/big" "$VERIFY_MB" || fail "verify: big files"
	"$PY" -c 'import os, sys
d, n = sys.argv[1], int(sys.argv[2]); os.makedirs(d, exist_ok=True)
for i in range(n):
    with open(os.path.join(d, "s%d" % i), "wb") as f: f.write(os.urandom(4096))' "${CL_MNT[0]}/v/small" "$VERIFY_SMALL" || fail "verify: small files"
	wait_caught_up 1 "$STEP_TIMEOUT" >/dev/null || fail "verify: slave did not catch up"
	tree_bytes=$(du -sb --apparent-size "${CL_STORE[0]}/data" 2>/dev/null | cut -f1)
	rec verify_tree_mib "$(awk -v b="${tree_bytes:-0}" 'BEGIN { printf "%.1f", b / 1048576 }')"
	# native: the same two trees (master's and slave's data dirs) read cold with cat
	vals=()
	for ((k = 1; k <= VERIFY_REPS; k++)); do
		drop_caches
		t0=$(now)
		find "${CL_STORE[0]}/data" "${CL_STORE[1]}/data" -type f -print0 | T xargs -0 cat >/dev/null || fail "verify: cat of the trees"
		t1=$(now)
		vals+=("$(awk -v b=$((2 * ${tree_bytes:-0})) -v s="$(elapsed "$t0" "$t1")" 'BEGIN { printf "%.1f", b / s / 1e6 }')")
	done
	stats trees_cat_mbs "${vals[@]}"
	for mode in cold warm; do
		vm=() vs=() vt=()
		[ "$mode" = warm ] && FO verify "${CL_MNT[0]}" "$W/verify.prewarm.json"   # bring both trees into the page cache
		for ((k = 1; k <= VERIFY_REPS; k++)); do
			[ "$mode" = cold ] && drop_caches
			out=$W/verify.$mode.$k.json
			FO verify "${CL_MNT[0]}" "$out" || fail "verify $mode $k: python"
			cat "$out" >>"$LOG"; echo >>"$LOG"
			rec "verify_${mode}_${k}_rc" "$(jf "$out" 'j["rc"]')"
			rec "verify_${mode}_${k}_bytes" "$(jf "$out" 'j["bytes_hashed"]')"
			rec "verify_${mode}_${k}_s" "$(jf "$out" '"%.3f" % j["seconds"]')"
			rec "verify_${mode}_${k}_wall_s" "$(jf "$out" '"%.3f" % j["wall_s"]')"
			rec "verify_${mode}_${k}_entries" "$(jf "$out" 'j["entries"]')"
			rec "verify_${mode}_${k}_remaining" "$(jf "$out" 'j["remaining"]')"
			[ "$(val "verify_${mode}_${k}_rc")" = 0 ] && [ "$(val "verify_${mode}_${k}_remaining")" = 0 ] ||
				fail "verify $mode $k: exit $(val "verify_${mode}_${k}_rc"), remaining $(val "verify_${mode}_${k}_remaining"): $(jf "$out" 'j.get("message")') $(jf "$out" 'j["stderr"]')"
			[ -z "$(jf "$out" 'j["after_json"]' | sed 's/^-$//')" ] || note "verify $mode $k: text after the JSON on stdout: $(jf "$out" 'j["after_json"]')"
			vm+=("$(awk -v b="$(val "verify_${mode}_${k}_bytes")" -v s="$(val "verify_${mode}_${k}_s")" 'BEGIN { if (s + 0 > 0) printf "%.1f", b / s / 1e6; else print "-" }')")
			vs+=("$(val "verify_${mode}_${k}_s")")
			vt+=("$(val "verify_${mode}_${k}_wall_s")")
		done
		stats "verify_${mode}_mbs" "${vm[@]}"
		stats "verify_${mode}_s" "${vs[@]}"
		stats "verify_${mode}_wall_s" "${vt[@]}"
		rec "verify_${mode}_bytes" "$(val "verify_${mode}_1_bytes")"
		rec "verify_${mode}_entries" "$(val "verify_${mode}_1_entries")"
	done
	cluster_stop_all || fail "verify: clean stop"
else
	fail "verify: cluster did not start"
	cluster_stop_all quiet
fi

# ---------------------------------------------------------------- report
ms_s() { awk -v m="$1" 'BEGIN { if (m == "-" || m == "") print "-"; else printf "%.2f", m / 1000 }'; }
report() {
	local p mb
	echo "## replfs failover benchmark$([ "$SMOKE" = 1 ] && echo ' (SMOKE: tiny sizes, figures meaningless)')"
	echo
	echo '```'
	echo "$HDR"
	echo "load:      $(load) at end"
	echo '```'
	echo
	for d in $PROMOTE_DELAYS; do
		echo "### failover, promote ${d} s after the master's SIGKILL (at the earliest once the slaves' LSNs settled; $FO_REPS runs, fresh cluster each)"
		echo
		echo "All times from the start of \`replfs promote\` (ms). follows = the other slave's status"
		echo "master.url is the new master; + first write = it has also applied the new master's first write."
		echo
		echo "| figure | median | max | min | all runs |"
		echo "|---|---:|---:|---:|---|"
		echo "| promote command (wall) | $(val fo_d${d}_promote_ms_median) | $(val fo_d${d}_promote_ms_max) | $(val fo_d${d}_promote_ms_min) | $(val fo_d${d}_promote_ms_all) |"
		echo "| promote, the daemon's own \"in N ms\" | $(val fo_d${d}_promote_daemon_ms_median) | $(val fo_d${d}_promote_daemon_ms_max) | $(val fo_d${d}_promote_daemon_ms_min) | $(val fo_d${d}_promote_daemon_ms_all) |"
		echo "| **first write accepted on the new master** | $(val fo_d${d}_first_write_ms_median) | $(val fo_d${d}_first_write_ms_max) | $(val fo_d${d}_first_write_ms_min) | $(val fo_d${d}_first_write_ms_all) |"
		echo "| other slave follows (master.url) | $(val fo_d${d}_follow_url_ms_median) | $(val fo_d${d}_follow_url_ms_max) | $(val fo_d${d}_follow_url_ms_min) | $(val fo_d${d}_follow_url_ms_all) |"
		echo "| other slave follows + has the first write | $(val fo_d${d}_follow_data_ms_median) | $(val fo_d${d}_follow_data_ms_max) | $(val fo_d${d}_follow_data_ms_min) | $(val fo_d${d}_follow_data_ms_all) |"
		echo
		echo "runs: $(for ((r = 1; r <= FO_REPS; r++)); do printf '%s: %s, load %s; ' "$r" "$(val "fo_d${d}_${r}_promoted")" "$(val "fo_d${d}_${r}_load")"; done)"
		echo "target: first write < 2 s after promote starts: $(awk -v m="$(val fo_d${d}_first_write_ms_max)" -v n="$(val fo_d${d}_first_write_ms_n)" -v k="$FO_REPS" 'BEGIN { if (m == "-") print "no figure"; else if (m < 2000 && n == k) print "met (max " m " ms)"; else print "MISSED (max " m " ms, " n " of " k " runs with a figure)" }')"
		echo
	done
	echo "### rejoin of the deposed master after ${DIVERGE_OPS} operations it alone has"
	echo
	echo "| base tree (MiB, entries) | ops (s on the master) | records after the fork | promote (ms, --force?) | mount usable (s) | files set aside (s) | has the master's tree (s) | **streaming + caught up (s)** | recovery files (MiB) | REPORT records | status records/files |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	for mb in $REJOIN_MB; do
		p=rj$mb
		echo "| $(val ${p}_tree_mib), $(val ${p}_tree_entries) | $(val ${p}_ops) ($(val ${p}_ops_s)) | $(val ${p}_lost_records) | $(val ${p}_promote_ms) ($(val ${p}_promote_force)) | $(val ${p}_mount_s) | $(val ${p}_set_aside_s) | $(val ${p}_applied_s) | $(val ${p}_rejoin_s) | $(val ${p}_recovery_files) ($(awk -v b="$(val ${p}_recovery_bytes)" 'BEGIN { if (b == "-") print "-"; else printf "%.1f", b / 1048576 }')) | $(val ${p}_report_records) | $(val ${p}_status_records)/$(val ${p}_status_files) |"
	done
	echo
	echo "Times from the \`replfs mount STORE MNT --slave-of NEWMASTER\` of the old master's store. The"
	echo "rejoin sets the post-fork files aside, then replaces the whole tree by a snapshot of the new"
	echo "master's: its time grows with the tree size, not (only) with the divergence. files set aside ="
	echo "status lists the recovery folder; has the master's tree = applied_lsn == the new master's lsn;"
	echo "streaming + caught up = also master.state \"streaming\". States seen (first seen at, s):"
	for mb in $REJOIN_MB; do echo "$mb MiB: $(val rj${mb}_states)"; done
	echo
	echo "### verify (master + 1 slave, both on this one disk)"
	echo
	echo "| run | bytes_hashed (master+slave) | entries | seconds (median, min-max) | wall s | MB/s (bytes_hashed/seconds) | vs dd cold read | vs cat of both trees, cold |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|"
	for mode in cold warm; do
		echo "| $mode | $(val verify_${mode}_bytes) | $(val verify_${mode}_entries) | $(val verify_${mode}_s_median) ($(val verify_${mode}_s_min)-$(val verify_${mode}_s_max)) | $(val verify_${mode}_wall_s_median) | $(val verify_${mode}_mbs_median) | $(div "$(val verify_${mode}_mbs_median)" "$(val disk_read_mbs_median)") | $(div "$(val verify_${mode}_mbs_median)" "$(val trees_cat_mbs_median)") |"
	done
	echo
	echo "tree: $(val verify_tree_mib) MiB per node. disk: dd if=<${VERIFY_MB} MiB file> bs=1M, caches dropped:"
	echo "$(val disk_read_mbs_median) MB/s (runs $(val disk_read_mbs_all)); cat of both trees' files, caches dropped:"
	echo "$(val trees_cat_mbs_median) MB/s (runs $(val trees_cat_mbs_all)). libsodium BLAKE2b (verify's hash) on one"
	echo "core: $(val blake2b_mbs_median) MB/s (runs $(val blake2b_mbs_all)); each node hashes its tree in one thread."
	echo "target: verify cold >= 0.5x disk sequential read: $(awk -v a="$(val verify_cold_mbs_median)" -v b="$(val disk_read_mbs_median)" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "no figure"; else if (a / b >= 0.5) printf "met (%.2fx)\n", a / b; else printf "MISSED (%.2fx)\n", a / b }')"
	echo
	echo "failed steps: $FAILS"
	echo
	echo "### raw values"
	echo '```'
	cat "$RAW"
	echo '```'
	echo
	echo "### log"
	echo '```'
	cat "$LOG"
	echo '```'
}
if [ "$SMOKE" = 1 ]; then OUT=$W/results.txt
else
	RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results}
	mkdir -p "$RESULTS_DIR"
	OUT=$RESULTS_DIR/failover-$(date +%F).txt
fi
report >>"$OUT"
report | sed -n '1,/^### raw values/p' | sed '$d'
[ "$SMOKE" = 0 ] && echo "results appended to $OUT" >&2
if [ "$FAILS" -gt 0 ]; then echo "failover.sh: $FAILS step(s) failed" >&2; exit 1; fi
exit 0
