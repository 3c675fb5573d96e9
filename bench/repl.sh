#!/usr/bin/env bash
# bench/repl.sh — replication benchmark for replfs (issue 3), on loopback, one disk.
#
# Measures, each on fresh stores (tests/lib/cluster.sh starts the nodes):
#   disk     sequential write bandwidth of the disk: dd of SNAP_MB MiB, conv=fdatasync
#   thru     master throughput with 0 slaves, 2 async slaves, 1 async slave, 1 --sync slave:
#              seq    SEQ_MB MiB in 1 MiB writes of incompressible data + fsync (MB/s)
#              small  NFILES x create+write 4 KiB (bench/smallfiles.c; files/s)
#              fsync  fio 4 KiB randwrite + fdatasync, FIO_TIME s (IOPS; the only one
#                     where --sync must wait for a slave)
#   lag      slave lag p50/p99/max while the master runs seq and small at full speed
#            (2 async slaves), and the drain time after the workload ends
#   apply    slave apply throughput: slave stopped, master runs seq / small, slave
#            restarted; records/s and MB/s of the catch-up vs the master's own rates
#   snap     a fresh slave joining a master holding a SNAP_MB MiB tree whose journal is
#            trimmed (-o checkpoint_s=1,segment_mb=8 (smoke: 1),retain_mb=1): time until the slave
#            has received the snapshot and caught up, MB/s, vs the disk's dd bandwidth
#
# Lag method: a sampler polls GET /metrics of the master (replfs_lsn) and of every slave
# (replfs_applied_lsn) every SAMPLE_MS ms over keep-alive HTTP (falls back to
# `replfs status --json` when /metrics does not answer). For a slave sample (t, A) the
# lag is 0 if A >= the master's LSN at t; otherwise it is t - t0, where t0 is the time of
# the first master sample whose LSN exceeded A, i.e. the age of the oldest record the
# slave has not applied yet. The resolution is one sampling period (the figure can be
# low by up to SAMPLE_MS). The master's self-reported lag (replfs_slave_lag_seconds) is
# sampled too and printed alongside as a cross-check.
#
# Usage: bench/repl.sh [--smoke] [-d DIR] [--replfs PATH] [--keep]
#   --smoke        seconds-long version (tiny sizes, figures meaningless); exit status is
#                  non-zero when any step fails (for CI)
#   -d DIR         work directory under DIR (default /var/tmp); all nodes live there
#   --replfs PATH  replfs binary (default $REPLFS or <repo>/build/replfs)
#   --keep         keep the work directory
#
# Full runs append to bench/results/repl-<date>.txt. Needs root (drop_caches, FUSE).
# Environment overrides: SEQ_MB NFILES FIO_TIME SNAP_MB SAMPLE_MS STEP_TIMEOUT RESULTS_DIR
set -uo pipefail
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
REPLFS=${REPLFS:-$ROOT/build/replfs}
SMOKE=0 BASE=/var/tmp KEEP=0
CMDLINE="bench/repl.sh $*"

usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
	case $1 in
	--smoke) SMOKE=1 ;;
	-d) BASE=${2:?-d needs a directory}; shift ;;
	--replfs) REPLFS=${2:?--replfs needs a path}; shift ;;
	--keep) KEEP=1 ;;
	-h|--help) usage; exit 0 ;;
	*) echo "repl.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done

if [ "$SMOKE" = 1 ]; then
	SEQ_MB=${SEQ_MB:-16}; NFILES=${NFILES:-300}; FIO_TIME=${FIO_TIME:-1}; SNAP_MB=${SNAP_MB:-16}
	STEP_TIMEOUT=${STEP_TIMEOUT:-60}
else
	SEQ_MB=${SEQ_MB:-1024}; NFILES=${NFILES:-10000}; FIO_TIME=${FIO_TIME:-10}; SNAP_MB=${SNAP_MB:-1024}
	STEP_TIMEOUT=${STEP_TIMEOUT:-900}
fi
SAMPLE_MS=${SAMPLE_MS:-10}
FSIZE=4096

missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1  (apt-get install $2)"); }
need fio fio; need gcc gcc; need python3 python3; need dd coreutils; need fusermount3 fuse3
need timeout coreutils; need awk mawk
[ -x "$REPLFS" ] || missing+=("replfs binary $REPLFS  (cmake -S . -B build && cmake --build build -j2)")
[ -e /dev/fuse ] || missing+=("/dev/fuse")
[ "$(id -u)" = 0 ] || missing+=("root privileges")
if [ ${#missing[@]} -gt 0 ]; then
	echo "repl.sh: missing requirements:" >&2; printf '  - %s\n' "${missing[@]}" >&2; exit 3
fi

mkdir -p "$BASE" || exit 3
BASE=$(cd "$BASE" && pwd -P)
W=$(mktemp -d "$BASE/replfs-replbench.XXXXXX") || exit 3
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

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	cluster_teardown
	if [ "$KEEP" = 1 ]; then echo "repl.sh: work directory kept: $W" >&2
	elif grep -q " $W" /proc/self/mounts; then echo "repl.sh: something still mounted under $W; not removed" >&2
	else rm -rf --one-file-system "$W"; fi
	exit $rc
}
trap cleanup EXIT
trap 'echo "repl.sh: interrupted" >&2; exit 130' INT TERM

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }
T() { timeout -k 10 "$STEP_TIMEOUT" "$@"; }
# before every timed step: write back and drop caches (not in --smoke: it costs seconds)
settle() { [ "$SMOKE" = 1 ] && return 0; sync; echo 3 >/proc/sys/vm/drop_caches; }
declare -A V
rec() { V[$1]=$2; echo "raw $1 $2" >>"$RAW"; }
val() { echo "${V[$1]:--}"; }
div() { awk -v a="$1" -v b="$2" -v f="${3:-%.2f}" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-" || b + 0 == 0) print "-"; else printf f, a / b }'; }

# private copies: the developer may rebuild while we run
mkdir -p "$W/bin"
gcc -O2 -Wall -o "$W/bin/smallfiles" "$BENCH_DIR/smallfiles.c" || { echo "repl.sh: cannot compile smallfiles.c" >&2; exit 4; }
cp "$REPLFS" "$W/bin/replfs" || exit 4
REPLFS_ORIG=$REPLFS REPLFS=$W/bin/replfs
export REPLFS

# incompressible pattern for the sequential writes
PAT=$W/pattern.dat
head -c $(( (SEQ_MB < 64 ? SEQ_MB : 64) * 1048576 )) /dev/urandom >"$PAT"

# pattern_dd MiB DD-ARGS...: MiB MiB of the pattern into dd; returns dd's status (cat's
# SIGPIPE when dd has read enough is not an error)
pattern_dd() {
	local mb=$1 i
	shift
	{ for ((i = 0; i < (mb + 63) / 64 + 1; i++)); do cat "$PAT"; done; } 2>/dev/null |
		T dd bs=1M count="$mb" iflag=fullblock "$@"
	return "${PIPESTATUS[1]}"
}

cat >"$W/sampler.py" <<'PY'
import http.client, json, re, subprocess, sys, time, os
# sampler.py OUT STOP PERIOD_MS BIN NAME=PORT=MNT... (first one is the master)
out, stop, period, binary = sys.argv[1], sys.argv[2], float(sys.argv[3]) / 1000, sys.argv[4]
nodes = [a.split("=", 2) for a in sys.argv[5:]]
conns = {}
def metrics(port):
    for attempt in (0, 1):
        c = conns.get(port)
        if c is None:
            c = conns[port] = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
        try:
            c.request("GET", "/metrics")
            r = c.getresponse()
            body = r.read().decode("utf-8", "replace")
            if r.status != 200:
                raise OSError("HTTP %d" % r.status)
            return body
        except Exception:
            c.close(); conns.pop(port, None)
            if attempt:
                raise
def mval(body, name):
    m = re.search(r"^%s(?:\{[^}]*\})? ([0-9.eE+-]+)$" % name, body, re.M)
    return float(m.group(1)) if m else None
use_http = True
try:
    b = metrics(nodes[0][1])
    if mval(b, "replfs_lsn") is None:
        use_http = False
except Exception:
    use_http = False
f = open(out, "w")
f.write("# method %s\n" % ("metrics" if use_http else "status"))
while not os.path.exists(stop):
    t_next = time.time() + period
    row = []
    for i, (name, port, mnt) in enumerate(nodes):
        t = time.time()
        try:
            if use_http:
                b = metrics(port)
                v = mval(b, "replfs_lsn" if i == 0 else "replfs_applied_lsn")
                lagself = ""
                if i == 0:
                    lags = re.findall(r"^replfs_slave_lag_seconds\{[^}]*\} ([0-9.eE+-]+)$", b, re.M)
                    lagself = ",".join(lags)
            else:
                j = json.loads(subprocess.run([binary, "status", mnt, "--json"], stdout=subprocess.PIPE,
                                              timeout=5).stdout)
                v = j["lsn"] if i == 0 else j["applied_lsn"]
                lagself = ",".join(str(s.get("lag_ms", 0) / 1000) for s in j.get("slaves", [])) if i == 0 else ""
        except Exception as e:
            v, lagself = None, ""
        row.append("%.6f %s %s" % (t, "-" if v is None else int(v), lagself or "-"))
    f.write(" | ".join(row) + "\n")
    f.flush()
    d = t_next - time.time()
    if d > 0:
        time.sleep(d)
PY

cat >"$W/lagstats.py" <<'PY'
import bisect, sys
# lagstats.py SAMPLES T_START T_END: per slave "p50_ms p99_ms max_ms n drain_ms selfp50_ms selfp99_ms"
path, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
mt, ml, slaves, selflag = [], [], {}, []
for line in open(path):
    if line.startswith("#"):
        continue
    cols = [c.split() for c in line.strip().split(" | ")]
    t, v, s = cols[0]
    if v != "-":
        mt.append(float(t)); ml.append(int(v))
        if s != "-" and t0 <= float(t):
            selflag.append([float(x) * 1000 for x in s.split(",")])
    for i, c in enumerate(cols[1:], 1):
        if c[1] != "-":
            slaves.setdefault(i, []).append((float(c[0]), int(c[1])))
def master_at(t):
    k = bisect.bisect_right(mt, t) - 1
    return ml[k] if k >= 0 else 0
def pct(xs, p):
    if not xs: return float("nan")
    xs = sorted(xs); return xs[min(len(xs) - 1, int(len(xs) * p))]
m_end = master_at(t1)
for i in sorted(slaves):
    lags, drain = [], float("nan")
    for t, a in slaves[i]:
        if t < t0:
            continue
        if a >= master_at(t):
            lag = 0.0
        else:
            k = bisect.bisect_right(ml, a)       # first master sample with lsn > a
            lag = (t - mt[k]) * 1000 if k < len(mt) else float("nan")
        lags.append(max(lag, 0.0))
        if t >= t1 and a >= m_end and drain != drain:
            drain = (t - t1) * 1000
    sl = [x[i - 1] for x in selflag if len(x) >= i]
    print("%d %.1f %.1f %.1f %d %.0f %.1f %.1f" % (i, pct(lags, .5), pct(lags, .99), max(lags) if lags else float("nan"),
          len(lags), drain, pct(sl, .5), pct(sl, .99)))
PY

# ---------------------------------------------------------------- workloads
# each prints nothing, records  <prefix>_<metric>; returns non-zero on failure
wl_seq() {   # wl_seq PREFIX DIR
	local p=$1 d=$2 t0 t1 out
	settle
	t0=$(now)
	out=$(pattern_dd "$SEQ_MB" of="$d/seq.dat" conv=fsync 2>&1) ||
		{ fail "$p: seq write: $out"; return 1; }
	t1=$(now)
	rec "${p}_seq" "$(awk -v b=$((SEQ_MB * 1048576)) -v s="$(elapsed "$t0" "$t1")" 'BEGIN { printf "%.1f", b / s / 1e6 }')"
	rec "${p}_seq_s" "$(elapsed "$t0" "$t1")"
	LAST_T0=$t0 LAST_T1=$t1
}
wl_small() {
	local p=$1 d=$2 t0 t1 out
	mkdir -p "$d/small"
	settle
	t0=$(now)
	out=$(T "$W/bin/smallfiles" files "$d/small" "$NFILES" "$FSIZE" 2>&1) || { fail "$p: smallfiles: $out"; return 1; }
	t1=$(now)
	rec "${p}_small" "$(awk -v n="$NFILES" -v s="$(awk '$1 == "create" { print $2 }' <<<"$out")" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }')"
	rec "${p}_small_s" "$(elapsed "$t0" "$t1")"
	rmdir "$d/small" 2>/dev/null
	LAST_T0=$t0 LAST_T1=$t1
}
wl_fsync() {
	local p=$1 d=$2 out line iops
	mkdir -p "$d/fio"
	settle
	out=$(T fio --name=randwrite --directory="$d/fio" --rw=randwrite --bs=4k --fdatasync=1 \
		--size=64m --runtime="$FIO_TIME" --time_based --ioengine=psync --output-format=terse 2>&1)
	line=$(grep '^3;' <<<"$out" | head -1)
	iops=$(awk -F';' '{ print $49 }' <<<"$line")
	if [ -z "$line" ] || [ -z "$iops" ] || [ "$iops" = 0 ]; then fail "$p: fio: $(tail -n 3 <<<"$out")"; return 1; fi
	rec "${p}_fsync" "$iops"
	rm -rf "$d/fio"
}

# lag_run PREFIX WL NSLAVES: run workload WL on the master with the sampler on
lag_run() {
	local p=$1 wl=$2 n=$3 i stop=$W/sampler.stop args out lsn0 lsn1
	rm -f "$stop"
	args=("0=${CL_PORT[0]}=${CL_MNT[0]}")
	for ((i = 1; i <= n; i++)); do args+=("$i=${CL_PORT[$i]}=${CL_MNT[$i]}"); done
	lsn0=$(node_field 0 lsn)
	cluster_bg "$PY" "$W/sampler.py" "$W/samples.$p.$wl" "$stop" "$SAMPLE_MS" "$REPLFS" "${args[@]}"
	local sp=$CL_LAST_BG
	sleep 0.1
	"wl_$wl" "$p" "${CL_MNT[0]}" || { touch "$stop"; wait "$sp" 2>/dev/null; return 1; }
	lsn1=$(node_field 0 lsn)
	for ((i = 1; i <= n; i++)); do wait_caught_up "$i" "$STEP_TIMEOUT" || fail "$p $wl: slave $i did not catch up"; done
	sleep 0.05
	touch "$stop"; wait "$sp" 2>/dev/null
	rec "${p}_${wl}_records" "$((lsn1 - lsn0))"
	rec "${p}_${wl}_master_rps" "$(awk -v r=$((lsn1 - lsn0)) -v s="$(elapsed "$LAST_T0" "$LAST_T1")" 'BEGIN { printf "%.0f", r / s }')"
	rec "${p}_${wl}_method" "$(head -1 "$W/samples.$p.$wl" | awk '{ print $3 }')"
	while read -r s p50 p99 mx ns drain sp50 sp99; do
		rec "${p}_${wl}_s${s}_p50" "$p50"; rec "${p}_${wl}_s${s}_p99" "$p99"; rec "${p}_${wl}_s${s}_max" "$mx"
		rec "${p}_${wl}_s${s}_n" "$ns"; rec "${p}_${wl}_s${s}_drain" "$drain"
		rec "${p}_${wl}_s${s}_self_p50" "$sp50"; rec "${p}_${wl}_s${s}_self_p99" "$sp99"
		# live apply rate: records over [workload start, slave caught up (from the samples)]
		rec "${p}_${wl}_s${s}_live_rps" "$(awk -v r=$((lsn1 - lsn0)) -v s="$(elapsed "$LAST_T0" "$LAST_T1")" -v d="$drain" 'BEGIN { if (d == "nan") print "-"; else printf "%.0f", r / (s + d / 1000) }')"
	done < <("$PY" "$W/lagstats.py" "$W/samples.$p.$wl" "$LAST_T0" "$LAST_T1")
	rm -f "${CL_MNT[0]}/seq.dat"
}

# ---------------------------------------------------------------- machine
part=$(df -P "$W" | awk 'NR == 2 { print $1 }'); part=${part#/dev/}; dev=${part%%[0-9]*}
HDR=$(cat <<EOF
date:      $(date '+%F %T %Z')
command:   $CMDLINE
machine:   $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal:/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo) GiB RAM, kernel $(uname -r)
disk:      $(df -PT "$W" | awk 'NR == 2 { print $2 " on " $1 }'), rotational=$(cat "/sys/block/$dev/queue/rotational" 2>/dev/null || echo ?)
replfs:    $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' (+uncommitted changes)'), binary $REPLFS_ORIG sha256 $(sha256sum "$REPLFS" | cut -c1-16), built $(date -r "$REPLFS_ORIG" '+%F %T')
sizes:     seq ${SEQ_MB} MiB; ${NFILES} x ${FSIZE} B files; fio ${FIO_TIME}s; snapshot tree ${SNAP_MB} MiB; lag sampling every ${SAMPLE_MS} ms
load:      $(cut -d' ' -f1-3 /proc/loadavg) at start
EOF
)
echo "$HDR" >&2

# ---------------------------------------------------------------- 0. the disk
log "disk: dd ${SNAP_MB} MiB conv=fdatasync"
settle
t0=$(now)
out=$(pattern_dd "$SNAP_MB" of="$W/disk.dat" conv=fdatasync 2>&1) || fail "disk dd: $out"
t1=$(now)
rec disk_mbs "$(awk -v b=$((SNAP_MB * 1048576)) -v s="$(elapsed "$t0" "$t1")" 'BEGIN { printf "%.1f", b / s / 1e6 }')"
rm -f "$W/disk.dat"

# ---------------------------------------------------------------- 1. throughput / lag
phase() {   # phase PREFIX NSLAVES [master args...]: fresh cluster, workloads, stop
	local p=$1 n=$2 i wl
	shift 2
	log "$p: master + $n slave(s) $*"
	cluster_init || { fail "$p: cluster_init"; return 1; }
	cluster_start_master "$@" || { fail "$p: master did not start"; return 1; }
	for ((i = 1; i <= n; i++)); do cluster_start_slave "$i" || { fail "$p: slave $i did not start"; cluster_stop_all quiet; return 1; }; done
	for wl in seq small; do
		if [ "$n" -gt 0 ]; then lag_run "$p" "$wl" "$n"
		else "wl_$wl" "$p" "${CL_MNT[0]}"; rm -f "${CL_MNT[0]}/seq.dat"; fi
	done
	# (--smoke: fio only where the sync/async ratio needs it)
	[ "$SMOKE" = 1 ] && [ "$p" != async1 ] && [ "$p" != sync1 ] || wl_fsync "$p" "${CL_MNT[0]}"
	if [ "$n" -gt 0 ]; then for ((i = 1; i <= n; i++)); do wait_caught_up "$i" "$STEP_TIMEOUT" >/dev/null; done; fi
	[ "$p" = sync1 ] && rec sync1_mode_end "$(node_field 0 mode 2>/dev/null)"
	cluster_stop_all || fail "$p: clean stop"
}
phase m0 0
phase async2 2
phase async1 1
phase sync1 1 --sync

# ---------------------------------------------------------------- 2. catch-up apply rate
log "apply: slave stopped while the master writes, then restarted"
if cluster_init && cluster_start_master -o "retain_mb=$((SEQ_MB * 4 + 4096))" && cluster_start_slave 1; then
	for wl in seq small; do
		wait_caught_up 1 "$STEP_TIMEOUT" >/dev/null
		cluster_stop 1 || fail "apply: stop slave"
		sr0=$(node_field 0 snapshots_sent)
		l0=$(node_field 0 lsn)
		"wl_$wl" apply "${CL_MNT[0]}"
		l1=$(node_field 0 lsn)
		settle
		t0=$(now)
		cluster_start_slave 1 || { fail "apply: slave restart"; break; }
		wait_caught_up 1 "$STEP_TIMEOUT" >/dev/null || fail "apply $wl: slave did not catch up"
		t1=$(now)
		bytes=$([ $wl = seq ] && echo $((SEQ_MB * 1048576)) || echo $((NFILES * FSIZE)))
		rec "apply_${wl}_records" $((l1 - l0))
		rec "apply_${wl}_master_rps" "$(awk -v r=$((l1 - l0)) -v s="$(val "apply_${wl}_s")" 'BEGIN { printf "%.0f", r / s }')"
		rec "apply_${wl}_master_mbs" "$(awk -v b=$bytes -v s="$(val "apply_${wl}_s")" 'BEGIN { printf "%.1f", b / s / 1e6 }')"
		rec "apply_${wl}_slave_s" "$(elapsed "$t0" "$t1")"
		rec "apply_${wl}_slave_rps" "$(awk -v r=$((l1 - l0)) -v s="$(elapsed "$t0" "$t1")" 'BEGIN { printf "%.0f", r / s }')"
		rec "apply_${wl}_slave_mbs" "$(awk -v b=$bytes -v s="$(elapsed "$t0" "$t1")" 'BEGIN { printf "%.1f", b / s / 1e6 }')"
		[ "$(node_field 0 snapshots_sent)" = "$sr0" ] || note "apply $wl: the restarted slave got a snapshot: the figure is a snapshot + catch-up"
		rm -f "${CL_MNT[0]}/seq.dat"
	done
	cluster_stop_all || fail "apply: clean stop"
else
	fail "apply: cluster did not start"
	cluster_stop_all quiet
fi

# ---------------------------------------------------------------- 3. snapshot
log "snapshot: ${SNAP_MB} MiB tree to a fresh slave"
first_lsn() { timeout 120 "$REPLFS" journal dump "${CL_STORE[0]}" 2>/dev/null | grep -m1 -o 'lsn=[0-9]*' | cut -d= -f2; }
SNAP_SEG=$([ "$SMOKE" = 1 ] && echo 1 || echo 8)
if cluster_init && cluster_start_master -o checkpoint_s=1,segment_mb=$SNAP_SEG,retain_mb=1; then
	FMB=$((SNAP_MB < 64 ? (SNAP_MB >= 4 ? SNAP_MB / 4 : 1) : 64))
	NBIG=$((SNAP_MB / FMB))
	NSMALL=$([ "$SMOKE" = 1 ] && echo 100 || echo 2000)
	mkdir -p "${CL_MNT[0]}/snap/small"
	for ((i = 0; i < NBIG; i++)); do
		pattern_dd "$FMB" of="${CL_MNT[0]}/snap/big$i" status=none || { fail "snap: dd big$i"; break; }
	done
	T "$W/bin/smallfiles" meta "${CL_MNT[0]}/snap/small" "$NSMALL" >/dev/null 2>&1 || fail "snap: small files"
	echo x >"${CL_MNT[0]}/snap/last"
	for ((k = 0; k < 60; k++)); do
		fl=$(first_lsn)
		[[ "$fl" =~ ^[0-9]+$ ]] && [ "$fl" -gt 1 ] && break
		sleep 0.5
	done
	[[ "${fl:-}" =~ ^[0-9]+$ ]] && [ "$fl" -gt 1 ] || fail "snap: master journal not trimmed (first LSN '${fl:-}'), a snapshot is not forced"
	tree_bytes=$(du -sb --apparent-size "${CL_STORE[0]}/data" 2>/dev/null | cut -f1)
	rec snap_tree_mb "$(awk -v b="${tree_bytes:-0}" 'BEGIN { printf "%.1f", b / 1048576 }')"
	rec snap_entries "$((NBIG + NSMALL + 2))"
	settle
	t0=$(now)
	if cluster_start_slave 1; then
		k=$SECONDS
		while :; do
			sr=$(node_field 1 snapshots_received 2>/dev/null)
			[[ "$sr" =~ ^[0-9]+$ ]] && [ "$sr" -ge 1 ] && break
			[ $((SECONDS - k)) -gt "$STEP_TIMEOUT" ] && { fail "snap: no snapshot received"; cluster_diag 1 >>"$LOG"; break; }
			sleep 0.02
		done
		t_snap=$(now)
		wait_caught_up 1 "$STEP_TIMEOUT" >/dev/null || fail "snap: slave did not catch up after the snapshot"
		t1=$(now)
		rec snap_received_s "$(elapsed "$t0" "$t_snap")"
		rec snap_s "$(elapsed "$t0" "$t1")"
		rec snap_mbs "$(awk -v b="${tree_bytes:-0}" -v s="$(elapsed "$t0" "$t1")" 'BEGIN { printf "%.1f", b / s / 1e6 }')"
	else
		fail "snap: slave did not start"
	fi
	cluster_stop_all || fail "snap: clean stop"
else
	fail "snap: master did not start"
	cluster_stop_all quiet
fi

# ---------------------------------------------------------------- report
report() {
	echo "## replfs replication benchmark$([ "$SMOKE" = 1 ] && echo ' (SMOKE: tiny sizes, figures meaningless)')"
	echo
	echo '```'
	echo "$HDR"
	echo "load:      $(cut -d' ' -f1-3 /proc/loadavg) at end"
	echo '```'
	echo
	echo "### master throughput (all nodes on one machine and one disk, loopback)"
	echo
	echo "| workload | 0 slaves | 2 async | 2async/0 | 1 async | 1 sync | sync/async |"
	echo "|---|---:|---:|---:|---:|---:|---:|"
	local w lab
	for w in seq small fsync; do
		case $w in seq) lab="seq write ${SEQ_MB} MiB, 1 MiB writes + fsync (MB/s)" ;;
		small) lab="${NFILES} x create+write 4 KiB (files/s)" ;;
		fsync) lab="4 KiB randwrite + fdatasync, fio ${FIO_TIME}s (IOPS)" ;; esac
		echo "| $lab | $(val m0_$w) | $(val async2_$w) | $(div "$(val async2_$w)" "$(val m0_$w)") | $(val async1_$w) | $(val sync1_$w) | $(div "$(val sync1_$w)" "$(val async1_$w)") |"
	done
	echo
	echo "sync phase: master mode at the end: $(val sync1_mode_end)"
	echo
	echo "### slave lag while the master writes at full speed (2 async slaves)"
	echo
	echo "Lag = age of the oldest record the slave has not applied (from /metrics or status samples"
	echo "every ${SAMPLE_MS} ms; method: $(val async2_seq_method)). drain = time from the end of the"
	echo "workload until the slave had applied everything. self = the master's replfs_slave_lag_seconds."
	echo
	echo "| workload | slave | lag p50 (ms) | lag p99 (ms) | max (ms) | samples | drain (ms) | self p50/p99 (ms) | records | master rec/s | slave rec/s (live, to caught up) |"
	echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	local s
	for w in seq small; do
		for s in 1 2; do
			echo "| $w | $s | $(val async2_${w}_s${s}_p50) | $(val async2_${w}_s${s}_p99) | $(val async2_${w}_s${s}_max) | $(val async2_${w}_s${s}_n) | $(val async2_${w}_s${s}_drain) | $(val async2_${w}_s${s}_self_p50)/$(val async2_${w}_s${s}_self_p99) | $(val async2_${w}_records) | $(val async2_${w}_master_rps) | $(val async2_${w}_s${s}_live_rps) |"
		done
	done
	echo
	echo "### slave apply throughput (catch-up after a restart) vs the master"
	echo
	echo "| workload | records | master rec/s | master MB/s | slave catch-up (s, incl. mount) | slave rec/s | slave MB/s | slave/master |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|"
	for w in seq small; do
		echo "| $w | $(val apply_${w}_records) | $(val apply_${w}_master_rps) | $(val apply_${w}_master_mbs) | $(val apply_${w}_slave_s) | $(val apply_${w}_slave_rps) | $(val apply_${w}_slave_mbs) | $(div "$(val apply_${w}_slave_rps)" "$(val apply_${w}_master_rps)") |"
	done
	echo
	echo "### snapshot to a fresh slave"
	echo
	echo "| tree (MiB, entries) | snapshot received (s) | caught up (s) | MB/s | disk dd conv=fdatasync (MB/s) | snapshot/disk |"
	echo "|---|---:|---:|---:|---:|---:|"
	echo "| $(val snap_tree_mb), $(val snap_entries) | $(val snap_received_s) | $(val snap_s) | $(val snap_mbs) | $(val disk_mbs) | $(div "$(val snap_mbs)" "$(val disk_mbs)") |"
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
	OUT=$RESULTS_DIR/repl-$(date +%F).txt
fi
report >>"$OUT"
report | sed -n '1,/^### raw values/p' | sed '$d'
[ "$SMOKE" = 0 ] && echo "results appended to $OUT" >&2
if [ "$FAILS" -gt 0 ]; then echo "repl.sh: $FAILS step(s) failed" >&2; exit 1; fi
exit 0
