#!/usr/bin/env bash
# bench/run.sh — replfs benchmark suite (see BENCHMARKS.md for results and method).
#
# Compares, in one run and on one disk:
#   native      a plain directory on the disk holding the work dir
#   pt          libfuse's high-level example "passthrough" (subdir module -> plain dir)
#   ptll        libfuse's low-level example "passthrough_ll" (-o source=plain dir)
#   replfs      build/replfs  (replfs init STORE; replfs mount STORE MNT)
#
# Usage: bench/run.sh [--smoke] [-d DIR] [-r REPS] [-t TARGETS] [--replfs PATH] [--perf] [--keep]
#   --smoke        seconds-long version: tiny sizes, native + replfs only, then
#                  bench/repl.sh --smoke (REPL_SMOKE=0: not) and bench/failover.sh
#                  --smoke (FAILOVER_SMOKE=0: not); exit status is non-zero when any
#                  step fails (for CI)
#   -d DIR         put the work directory under DIR (default /var/tmp); all targets
#                  live on the filesystem holding DIR
#   -r REPS        repeat every workload REPS times, report the median
#                  (default 3; --smoke: 1)
#   -t TARGETS     comma list out of native,pt,ptll,replfs
#                  (default: all four; --smoke: native,replfs)
#   --replfs PATH  replfs binary (default $REPLFS or <repo>/build/replfs)
#   --perf         perf record -g the replfs daemon during each workload; reports go
#                  next to the results file (perturbs the replfs figures)
#   --keep         keep the work directory (default: removed at exit)
#
# Full runs write bench/results/<date>.txt. Needs root (drop_caches, allow_other).
# Environment overrides (for debugging the script, not for published figures):
#   SEQ_MB NFILES FIO_SIZE FIO_TIME DBENCH_TIME TAR_SRC CRASH_MB CRASH_META STEP_TIMEOUT
#   RESULTS_DIR DBENCH_LOADFILE FUSE_EXAMPLES REPLFS
set -uo pipefail
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
REPLFS=${REPLFS:-$ROOT/build/replfs}
EXAMPLES=${FUSE_EXAMPLES:-/usr/share/doc/libfuse3-dev/examples}
SMOKE=0 REPS="" BASE=/var/tmp TARGET_LIST="" PERF=0 KEEP=0
CMDLINE="bench/run.sh $*"

usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
	case $1 in
	--smoke) SMOKE=1 ;;
	-d) BASE=${2:?-d needs a directory}; shift ;;
	-r) REPS=${2:?-r needs a number}; shift ;;
	-t|--targets) TARGET_LIST=${2:?-t needs a list}; shift ;;
	--replfs) REPLFS=${2:?--replfs needs a path}; shift ;;
	--perf) PERF=1 ;;
	--keep) KEEP=1 ;;
	-h|--help) usage; exit 0 ;;
	*) echo "run.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done
[ -n "$REPS" ] || { [ "$SMOKE" = 1 ] && REPS=1 || REPS=3; }
case $REPS in ''|*[!0-9]*|0) echo "run.sh: -r wants a positive integer" >&2; exit 2 ;; esac

# ---------------------------------------------------------------- sizes
if [ "$SMOKE" = 1 ]; then
	SEQ_MB=${SEQ_MB:-16}; TAR_SRC=${TAR_SRC:-/usr/include/linux}
	NFILES=${NFILES:-300}; FIO_SIZE=${FIO_SIZE:-8m}; FIO_TIME=${FIO_TIME:-1}
	DBENCH_TIME=${DBENCH_TIME:-2}; CRASH_MB=${CRASH_MB:-8}; CRASH_META=${CRASH_META:-500}
	STEP_TIMEOUT=${STEP_TIMEOUT:-60}
	: "${TARGET_LIST:=native,replfs}"
else
	SEQ_MB=${SEQ_MB:-1024}; TAR_SRC=${TAR_SRC:-/usr/include}
	NFILES=${NFILES:-10000}; FIO_SIZE=${FIO_SIZE:-256m}; FIO_TIME=${FIO_TIME:-10}
	DBENCH_TIME=${DBENCH_TIME:-20}; CRASH_MB=${CRASH_MB:-1024}; CRASH_META=${CRASH_META:-50000}
	STEP_TIMEOUT=${STEP_TIMEOUT:-900}
	: "${TARGET_LIST:=native,pt,ptll,replfs}"
fi
FSIZE=4096
DBENCH_CLIENTS=4
# replfs options for the crash runs: no checkpoint may happen during the load, so the
# remount replays everything written.
CRASH_OPTS=checkpoint_mb=100000,checkpoint_s=86400

declare -A NAME=([native]="native" [pt]="passthrough" [ptll]="passthrough_ll" [replfs]="replfs")
declare -A SHORT=([pt]="pt" [ptll]="ptll" [replfs]="replfs")
TARGETS=()
IFS=, read -r -a _tl <<<"$TARGET_LIST"
for t in native pt ptll replfs; do       # fixed order whatever the user typed
	for u in "${_tl[@]}"; do [ "$u" = "$t" ] && TARGETS+=("$t"); done
done
for u in "${_tl[@]}"; do
	[ -n "${NAME[$u]:-}" ] || { echo "run.sh: unknown target '$u' (native,pt,ptll,replfs)" >&2; exit 2; }
done
has_target() { local t; for t in "${TARGETS[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }

# ---------------------------------------------------------------- dependencies
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1  (apt-get install $2)"); }
need fio fio; need dbench dbench; need gcc gcc; need tar tar; need dd coreutils
need timeout coreutils; need awk mawk; need fusermount3 fuse3; need cmp diffutils
need find findutils; need du coreutils
DBENCH_LOADFILE=${DBENCH_LOADFILE:-}
if [ -z "$DBENCH_LOADFILE" ]; then
	for f in /usr/share/dbench/client.txt /usr/share/dbench4/client.txt /usr/local/share/client.txt \
		 $(dpkg -L dbench 2>/dev/null | grep -E '/client[^/]*\.txt$'); do
		[ -f "$f" ] && { DBENCH_LOADFILE=$f; break; }
	done
fi
[ -n "$DBENCH_LOADFILE" ] && [ -f "$DBENCH_LOADFILE" ] || missing+=("dbench loadfile client.txt  (apt-get install dbench, or set DBENCH_LOADFILE)")
if has_target pt || has_target ptll; then
	need pkg-config pkg-config
	pkg-config --exists fuse3 2>/dev/null || missing+=("fuse3 headers/pkg-config file  (apt-get install libfuse3-dev)")
	for f in passthrough.c passthrough_ll.c passthrough_helpers.h; do
		[ -f "$EXAMPLES/$f" ] || missing+=("$EXAMPLES/$f  (apt-get install libfuse3-dev, or set FUSE_EXAMPLES)")
	done
fi
[ "$PERF" = 1 ] && need perf linux-perf
has_target replfs && { [ -x "$REPLFS" ] || missing+=("replfs binary $REPLFS  (build: cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build build -j2)"); }
[ -e /dev/fuse ] || missing+=("/dev/fuse  (modprobe fuse; in a container pass --device /dev/fuse)")
[ "$(id -u)" = 0 ] || missing+=("root privileges (drop_caches, allow_other)")
if [ ${#missing[@]} -gt 0 ]; then
	echo "run.sh: missing requirements:" >&2
	printf '  - %s\n' "${missing[@]}" >&2
	exit 3
fi

# ---------------------------------------------------------------- work dir, cleanup
mkdir -p "$BASE" || exit 3
BASE=$(cd "$BASE" && pwd -P)
W=$(mktemp -d "$BASE/replfs-bench.XXXXXX") || exit 3
case $W in *[[:space:]]*) echo "run.sh: work dir path must not contain spaces: $W" >&2; rmdir "$W"; exit 2 ;; esac
MOUNTS=() PIDS=() PERF_PID=""
RAW=$W/raw.txt LOG=$W/log.txt
: >"$RAW"; : >"$LOG"

is_mounted() { awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/self/mounts; }
pid_alive() {   # running, not a zombie waiting for its reaper
	local st
	[ -n "$1" ] && st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
	[ "${st%% *}" != Z ]
}
unmount() {      # unmount $1 whatever state its daemon is in
	local m=$1 i
	is_mounted "$m" || return 0
	fusermount3 -u "$m" 2>/dev/null || umount "$m" 2>/dev/null
	for i in $(seq 50); do is_mounted "$m" || return 0; sleep 0.1; done
	umount -l "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null
	! is_mounted "$m"
}
stop_pid() {     # TERM, then KILL after 10 s; only our own processes
	local p=$1 i
	pid_alive "$p" || return 0
	kill -TERM "$p" 2>/dev/null
	for i in $(seq 100); do pid_alive "$p" || return 0; sleep 0.1; done
	kill -KILL "$p" 2>/dev/null
	sleep 0.2
}
cleanup() {
	local rc=$? i
	set +e
	trap - EXIT INT TERM
	if [ -n "$PERF_PID" ] && pid_alive "$PERF_PID"; then kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null; fi
	for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do unmount "${MOUNTS[$i]}" || echo "run.sh: could not unmount ${MOUNTS[$i]}" >&2; done
	for p in "${PIDS[@]}"; do stop_pid "$p"; done
	if [ "$KEEP" = 1 ]; then echo "run.sh: work directory kept: $W" >&2
	else rm -rf "$W"; fi
	exit $rc
}
trap cleanup EXIT
trap 'echo "run.sh: interrupted" >&2; exit 130' INT TERM

FAILS=0
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }
fail() { FAILS=$((FAILS + 1)); log "FAIL: $*"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# Before every timed step: write back and drop caches. Besides making the steps
# independent, this matters on ext4 without a journal (as on the machine the figures
# in BENCHMARKS.md come from): its inode allocator skips inodes freed in the last
# 60-360 s whose inode-table block is still cached (recently_deleted()), which made
# 10k creates after a mass delete take 0.5-9 s on the bare disk.
settle() { drop_caches; [ -f "${TARBALL:-}" ] && cat "$TARBALL" >/dev/null; return 0; }
T() { timeout -k 10 "$STEP_TIMEOUT" "$@"; }

declare -A VALS FAILED
rec() {   # rec METRIC TARGET VALUE
	VALS[$1,$2]="${VALS[$1,$2]:-} $3"
	echo "raw $1 ${NAME[$2]:-$2} $3" >>"$RAW"
}
failm() { local t=$1 m; shift; for m; do FAILED[$m,$t]=1; echo "raw $m ${NAME[$t]} FAIL" >>"$RAW"; done; }

# ---------------------------------------------------------------- build helpers
mkdir -p "$W/bin"
gcc -O2 -Wall -o "$W/bin/smallfiles" "$BENCH_DIR/smallfiles.c" || { echo "run.sh: cannot compile smallfiles.c" >&2; exit 4; }
if has_target pt || has_target ptll; then
	PT_DEFS="-DHAVE_UTIMENSAT -DHAVE_POSIX_FALLOCATE -DHAVE_FALLOCATE -DHAVE_SETXATTR -DHAVE_COPY_FILE_RANGE"
	for p in passthrough passthrough_ll; do
		# shellcheck disable=SC2046,SC2086
		gcc -O2 -Wall $PT_DEFS -I"$EXAMPLES" "$EXAMPLES/$p.c" $(pkg-config fuse3 --cflags --libs) \
			-o "$W/bin/$p" 2>>"$LOG" || { echo "run.sh: cannot compile $p.c (see $LOG)" >&2; exit 4; }
	done
fi

# The developer may rebuild build/replfs while we run: use a private copy throughout.
if has_target replfs; then
	cp "$REPLFS" "$W/bin/replfs" || { echo "run.sh: cannot copy $REPLFS" >&2; exit 4; }
	REPLFS_ORIG=$REPLFS
	REPLFS=$W/bin/replfs
	# After a process crash replfs by default replays only what the page cache had not
	# yet seen (applied_lsn onwards). -o replay=checkpoint replays everything after the
	# last checkpoint, as after a reboot: that is what the crash benchmark measures.
	REPLAY_OPT=""
	if "$REPLFS" mount --help 2>&1 | grep -q 'replay=checkpoint'; then
		REPLAY_OPT=",replay=checkpoint"
	fi
fi

# ---------------------------------------------------------------- mounts
declare -A DIR
RPID="" RSTORE=""
wait_mounted() { local i; for i in $(seq 100); do is_mounted "$1" && return 0; pid_alive "$2" || return 1; sleep 0.1; done; return 1; }
replfs_pid() { local p; p=$(cat "$1/pid" 2>/dev/null) || return 1; p=${p//[!0-9]/}; [ -n "$p" ] && echo "$p"; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }

mount_target() {
	local t=$1 pid out
	case $t in
	native)
		DIR[native]=$W/native; mkdir -p "$W/native" ;;
	pt)
		mkdir -p "$W/pt_src" "$W/pt_mnt"; MOUNTS+=("$W/pt_mnt")
		"$W/bin/passthrough" -f -o allow_other,modules=subdir,subdir="$W/pt_src" "$W/pt_mnt" >>"$W/pt.log" 2>&1 &
		pid=$!; PIDS+=("$pid")
		wait_mounted "$W/pt_mnt" "$pid" || { cat "$W/pt.log" >&2; return 1; }
		DIR[pt]=$W/pt_mnt ;;
	ptll)
		mkdir -p "$W/ptll_src" "$W/ptll_mnt"; MOUNTS+=("$W/ptll_mnt")
		"$W/bin/passthrough_ll" -f -o allow_other,source="$W/ptll_src" "$W/ptll_mnt" >>"$W/ptll.log" 2>&1 &
		pid=$!; PIDS+=("$pid")
		wait_mounted "$W/ptll_mnt" "$pid" || { cat "$W/ptll.log" >&2; return 1; }
		DIR[ptll]=$W/ptll_mnt ;;
	replfs)
		RSTORE=$W/r_store; mkdir -p "$W/r_mnt"; MOUNTS+=("$W/r_mnt")
		"$REPLFS" init "$RSTORE" >>"$LOG" 2>&1 || { log "replfs init failed"; return 1; }
		out=$(T "$REPLFS" mount "$RSTORE" "$W/r_mnt" 2>&1) || { log "replfs mount failed: $out"; return 1; }
		[ -n "$out" ] && echo "$out" >>"$LOG"
		RPID=$(replfs_pid "$RSTORE") || { log "no PID in $RSTORE/pid"; return 1; }
		PIDS+=("$RPID")
		is_mounted "$W/r_mnt" || { log "replfs mount returned but $W/r_mnt is not mounted"; return 1; }
		DIR[replfs]=$W/r_mnt ;;
	esac
}

# ---------------------------------------------------------------- workloads
# Each sets its metrics for target $1 in directory $2; returns non-zero on failure.
TARBALL=$W/tree.tar
prepare_tarball() {
	tar cf "$TARBALL" -C "$(dirname "$TAR_SRC")" "$(basename "$TAR_SRC")" 2>>"$LOG" || return 1
	TAR_ENTRIES=$(tar tf "$TARBALL" | wc -l)
	TAR_FILES=$(find "$TAR_SRC" -type f | wc -l)
	cat "$TARBALL" >/dev/null   # keep the source hot: the extraction is what we time
}

wl_seq() {
	local t=$1 d=$2 t0 t1 out bytes=$((SEQ_MB * 1048576))
	drop_caches
	t0=$(now)
	out=$(T dd if=/dev/zero of="$d/seq.dat" bs=1M count="$SEQ_MB" conv=fsync 2>&1) || { fail "$t: dd write: $out"; failm "$t" seqwrite seqread; rm -f "$d/seq.dat"; return 1; }
	t1=$(now)
	rec seqwrite "$t" "$(awk -v b=$bytes -v s="$(elapsed "$t0" "$t1")" 'BEGIN { printf "%.1f", b / s / 1e6 }')"
	drop_caches
	t0=$(now)
	out=$(T dd if="$d/seq.dat" of=/dev/null bs=1M 2>&1) || { fail "$t: dd read: $out"; failm "$t" seqread; rm -f "$d/seq.dat"; return 1; }
	t1=$(now)
	grep -q "^$bytes bytes" <<<"$out" || { fail "$t: read back wrong size: $out"; failm "$t" seqread; rm -f "$d/seq.dat"; return 1; }
	rec seqread "$t" "$(awk -v b=$bytes -v s="$(elapsed "$t0" "$t1")" 'BEGIN { printf "%.1f", b / s / 1e6 }')"
	rm -f "$d/seq.dat"
}

wl_tar() {
	local t=$1 d=$2 t0 t1 n
	mkdir -p "$d/tarx" || { fail "$t: mkdir tarx"; failm "$t" tarx rmrf; return 1; }
	settle
	t0=$(now)
	T tar xf "$TARBALL" -C "$d/tarx" 2>>"$LOG" || { fail "$t: tar x"; failm "$t" tarx rmrf; rm -rf "$d/tarx"; return 1; }
	t1=$(now)
	rec tarx "$t" "$(elapsed "$t0" "$t1")"
	n=$(find "$d/tarx" -type f | wc -l)
	[ "$n" = "$TAR_FILES" ] || { fail "$t: tar x produced $n files, expected $TAR_FILES"; failm "$t" rmrf; rm -rf "$d/tarx"; return 1; }
	settle
	t0=$(now)
	T rm -rf "$d/tarx" 2>>"$LOG" || { fail "$t: rm -rf"; failm "$t" rmrf; return 1; }
	t1=$(now)
	[ -e "$d/tarx" ] && { fail "$t: rm -rf left $d/tarx"; failm "$t" rmrf; return 1; }
	rec rmrf "$t" "$(elapsed "$t0" "$t1")"
}

wl_small() {
	local t=$1 d=$2 out
	mkdir -p "$d/small" || { fail "$t: mkdir small"; failm "$t" create stat unlink; return 1; }
	settle
	out=$(T "$W/bin/smallfiles" files "$d/small" "$NFILES" "$FSIZE" 2>&1) || { fail "$t: smallfiles: $out"; failm "$t" create stat unlink; rm -rf "$d/small"; return 1; }
	rec create "$t" "$(awk '$1 == "create" { print $2 }' <<<"$out")"
	rec stat "$t" "$(awk '$1 == "stat" { print $2 }' <<<"$out")"
	rec unlink "$t" "$(awk '$1 == "unlink" { print $2 }' <<<"$out")"
	rmdir "$d/small" || { fail "$t: small dir not empty after unlink"; return 1; }
}

wl_fio() {
	local t=$1 d=$2 out line iops
	mkdir -p "$d/fio" || { fail "$t: mkdir fio"; failm "$t" randwrite; return 1; }
	settle
	out=$(T fio --name=randwrite --directory="$d/fio" --rw=randwrite --bs=4k --fdatasync=1 \
		--size="$FIO_SIZE" --runtime="$FIO_TIME" --time_based --ioengine=psync \
		--output-format=terse 2>&1)
	local rc=$?
	line=$(grep '^3;' <<<"$out" | head -1)
	# terse v3: field 5 = error, field 49 = write IOPS
	iops=$(awk -F';' '{ print $49 }' <<<"$line")
	if [ $rc != 0 ] || [ -z "$line" ] || [ "$(awk -F';' '{ print $5 }' <<<"$line")" != 0 ] || [ -z "$iops" ] || [ "$iops" = 0 ]; then
		fail "$t: fio: $out"; failm "$t" randwrite; rm -rf "$d/fio"; return 1
	fi
	rec randwrite "$t" "$iops"
	rm -rf "$d/fio"
}

wl_dbench() {
	local t=$1 d=$2 out tp
	mkdir -p "$d/dbench" || { fail "$t: mkdir dbench"; failm "$t" dbench; return 1; }
	settle
	out=$(T dbench -c "$DBENCH_LOADFILE" -D "$d/dbench" -t "$DBENCH_TIME" "$DBENCH_CLIENTS" 2>&1)
	local rc=$?
	tp=$(sed -n 's/^ *Throughput \([0-9.]*\) MB\/sec.*/\1/p' <<<"$out" | tail -1)
	if [ $rc != 0 ] || [ -z "$tp" ] || ! awk -v x="$tp" 'BEGIN { exit !(x > 0) }'; then
		fail "$t: dbench (rc $rc): $(tail -5 <<<"$out")"; failm "$t" dbench; rm -rf "$d/dbench"; return 1
	fi
	rec dbench "$t" "$tp"
	T rm -rf "$d/dbench"
}

perf_start() {  # perf_start NAME: profile the replfs daemon while the next workload runs
	[ "$PERF" = 1 ] && [ -n "$RPID" ] || return 0
	perf record -g -p "$RPID" -o "$W/perf-$1.data" >>"$LOG" 2>&1 &
	PERF_PID=$!
	sleep 0.5
}
perf_stop() {
	[ -n "$PERF_PID" ] || return 0
	kill -INT "$PERF_PID" 2>/dev/null; wait "$PERF_PID" 2>/dev/null; PERF_PID=""
	{
		echo "# replfs daemon, on-CPU samples during workload '$1' (flat, then call graphs)"
		perf report -i "$W/perf-$1.data" --stdio --no-children -g none --percent-limit 0.5 2>/dev/null | grep -v '^$'
		perf report -i "$W/perf-$1.data" --stdio --no-children --percent-limit 2 2>/dev/null | grep -v '^$' | head -400
	} >"$PERF_OUT_PREFIX-$1.txt"
}

# ---------------------------------------------------------------- crash replay (replfs)
# crash_run KIND: load a fresh store (no checkpoint can happen), SIGKILL the daemon,
# drop caches, remount, parse "replfs: recovery:".
parse_recovery() {   # prints "RECORDS MS" from a recovery line, or nothing
	awk '
	{
		line = $0; rec = ""; ms = ""
		if (match(line, /records?[ =:]+[0-9]+/)) { s = substr(line, RSTART, RLENGTH); gsub(/[^0-9]/, "", s); rec = s }
		else if (match(line, /[0-9]+ records?/)) { s = substr(line, RSTART, RLENGTH); sub(/ .*/, "", s); rec = s }
		else if (match(line, /replayed[ =:]+[0-9]+/)) { s = substr(line, RSTART, RLENGTH); gsub(/[^0-9]/, "", s); rec = s }
		if (match(line, /[0-9]+(\.[0-9]+)? ?ms/)) { s = substr(line, RSTART, RLENGTH); gsub(/[^0-9.]/, "", s); ms = s }
		else if (match(line, /ms[ =:]+[0-9]+(\.[0-9]+)?/)) { s = substr(line, RSTART, RLENGTH); gsub(/[^0-9.]/, "", s); ms = s }
		if (rec != "" && ms != "") { print rec, ms; exit }
	}'
}

crash_run() {
	local kind=$1 store=$W/crash_$1 mnt=$W/crash_$1_mnt pid out line t0 t1 jbytes recs ms
	local expect_files
	mkdir -p "$mnt"; MOUNTS+=("$mnt")
	"$REPLFS" init "$store" >>"$LOG" 2>&1 || { fail "crash-$kind: replfs init"; return 1; }
	out=$(T "$REPLFS" mount "$store" "$mnt" -o "$CRASH_OPTS" 2>&1) || { fail "crash-$kind: mount: $out"; return 1; }
	[ -n "$out" ] && echo "$out" >>"$LOG"
	pid=$(replfs_pid "$store") || { fail "crash-$kind: no pid file"; return 1; }
	PIDS+=("$pid")
	t0=$(now)
	if [ "$kind" = data ]; then
		# 64 KiB writes of incompressible data (a random pattern written repeatedly)
		local pat_mb=$((CRASH_MB < 64 ? CRASH_MB : 64)) i
		[ -f "$W/pattern.dat" ] || head -c $((pat_mb * 1048576)) /dev/urandom >"$W/pattern.dat"
		for ((i = 0; i < CRASH_MB / pat_mb; i++)); do
			T dd if="$W/pattern.dat" of="$mnt/big" bs=64k seek=$((i * pat_mb * 16)) conv=notrunc status=none \
				|| { fail "crash-data: dd"; return 1; }
		done
	else
		out=$(T "$W/bin/smallfiles" meta "$mnt" "$CRASH_META" 2>&1) || { fail "crash-meta: smallfiles: $out"; return 1; }
		rec crash_${kind}_ops replfs "$(awk '$1 == "ops" { print $2 }' <<<"$out")"
	fi
	t1=$(now)
	rec crash_${kind}_load_s replfs "$(elapsed "$t0" "$t1")"
	rec crash_${kind}_hwm_kib replfs "$(hwm_kib "$pid")"
	kill -KILL "$pid"
	for i in $(seq 100); do pid_alive "$pid" || break; sleep 0.1; done
	unmount "$mnt" || { fail "crash-$kind: cannot unmount dead mount"; return 1; }
	jbytes=$(du -sb "$store/journal" | cut -f1)
	rec crash_${kind}_journal_bytes replfs "$jbytes"
	drop_caches
	t0=$(now)
	T "$REPLFS" mount "$store" "$mnt" -o "$CRASH_OPTS$REPLAY_OPT" >"$W/crash_$kind.out" 2>&1 || { fail "crash-$kind: remount: $(cat "$W/crash_$kind.out")"; return 1; }
	t1=$(now)
	cat "$W/crash_$kind.out" >>"$LOG"
	pid=$(replfs_pid "$store") && PIDS+=("$pid")
	rec crash_${kind}_mount_s replfs "$(elapsed "$t0" "$t1")"
	line=$(grep -m1 'replfs: recovery:' "$W/crash_$kind.out")
	[ -n "$line" ] || { fail "crash-$kind: no 'replfs: recovery:' line in mount output: $(cat "$W/crash_$kind.out")"; return 1; }
	echo "raw crash_${kind}_line replfs $line" >>"$RAW"
	read -r recs ms < <(parse_recovery <<<"$line")
	if [ -z "${recs:-}" ] || [ -z "${ms:-}" ]; then fail "crash-$kind: cannot parse: $line"; return 1; fi
	rec crash_${kind}_records replfs "$recs"
	rec crash_${kind}_ms replfs "$ms"
	rec crash_${kind}_rps replfs "$(awk -v r="$recs" -v m="$ms" 'BEGIN { printf "%.0f", (m > 0 ? r / (m / 1000) : 0) }')"
	rec crash_${kind}_s_per_gib replfs "$(awk -v j="$jbytes" -v m="$ms" 'BEGIN { printf "%.2f", (j > 0 ? (m / 1000) * 1073741824 / j : 0) }')"
	# the replayed tree must hold what was written
	if [ "$kind" = data ]; then
		local size; size=$(stat -c %s "$mnt/big" 2>/dev/null)
		[ "$size" = $((CRASH_MB * 1048576)) ] || { fail "crash-data: after replay big is ${size:-missing} bytes, expected $((CRASH_MB * 1048576))"; return 1; }
		cmp -s -n "$(stat -c %s "$W/pattern.dat")" "$W/pattern.dat" "$mnt/big" || { fail "crash-data: replayed content differs"; return 1; }
	else
		expect_files=$CRASH_META
		out=$(find "$mnt" -type f -name 'g*' | wc -l)
		[ "$out" = "$expect_files" ] || { fail "crash-meta: after replay $out files, expected $expect_files"; return 1; }
	fi
	[ -n "${pid:-}" ] && rec crash_${kind}_hwm_after_replay_kib replfs "$(hwm_kib "$pid")"
	unmount "$mnt" || { fail "crash-$kind: clean unmount"; return 1; }
	for i in $(seq 100); do pid_alive "$pid" || break; sleep 0.1; done
	rm -rf "$store"
}

# ---------------------------------------------------------------- machine description
mem_gib=$(awk '/^MemTotal:/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
fs_line=$(df -PT "$W" | awk 'NR == 2 { print $2 " on " $1 " (" $3 " KiB blocks)" }')
mnt_opts=$(findmnt -no OPTIONS -T "$W" 2>/dev/null)
part=$(df -P "$W" | awk 'NR == 2 { print $1 }'); part=${part#/dev/}; dev=${part%%[0-9]*}
rot=$(cat "/sys/block/$dev/queue/rotational" 2>/dev/null || echo "?")
disk_model=$(cat "/sys/block/$dev/device/model" 2>/dev/null | xargs); [ -n "$disk_model" ] || disk_model="$(cat "/sys/block/$dev/device/vendor" 2>/dev/null | xargs) $dev"
fs_journal=""
if [ "$(df -PT "$W" | awk 'NR == 2 { print $2 }')" = ext4 ]; then
	jt=$(cat "/sys/fs/ext4/$part/journal_task" 2>/dev/null)
	case $jt in
	"<none>") fs_journal=", ext4 WITHOUT a journal (no jbd2)" ;;
	"") ;;
	*) fs_journal=", ext4 journal task $jt" ;;
	esac
fi
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
replfs_ver="n/a"
if has_target replfs; then
	replfs_ver="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no commit')$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' (+uncommitted changes)'), binary $REPLFS_ORIG sha256 $(sha256sum "$REPLFS" | cut -c1-16), built $(date -r "$REPLFS_ORIG" '+%F %T'); crash remount options $CRASH_OPTS$REPLAY_OPT"
fi
HDR=$(cat <<EOF
date:      $(date '+%F %T %Z')
command:   $CMDLINE
machine:   $(nproc) CPUs ($cpu), ${mem_gib} GiB RAM, kernel $(uname -r)
disk:      $fs_line$fs_journal, mount options $mnt_opts, device $disk_model (rotational=$rot)
work dir:  $W
versions:  fuse3 $(pkg-config --modversion fuse3 2>/dev/null || echo ?), $(fio --version), $(dbench --help 2>&1 | head -1 | awk '{print "dbench " $3}'), replfs $replfs_ver
sizes:     seq ${SEQ_MB} MiB; tar of $TAR_SRC; ${NFILES} x ${FSIZE} B files; fio ${FIO_SIZE} ${FIO_TIME}s; dbench ${DBENCH_CLIENTS} clients ${DBENCH_TIME}s; crash ${CRASH_MB} MiB + ${CRASH_META}x4 meta ops; reps ${REPS}
load:      $(cut -d' ' -f1-3 /proc/loadavg) at start
EOF
)
echo "$HDR" >&2
{ echo "busiest processes at start:"; ps -eo pcpu,pid,comm --sort=-pcpu | head -6; } >>"$LOG"

# ---------------------------------------------------------------- run
prepare_tarball || { echo "run.sh: cannot build tarball of $TAR_SRC" >&2; exit 4; }
log "tarball: $TAR_ENTRIES entries, $TAR_FILES files, $(du -h "$TARBALL" | cut -f1)"
for t in "${TARGETS[@]}"; do
	mount_target "$t" || { fail "cannot mount $t"; exit 1; }
	log "mounted $t at ${DIR[$t]}"
done

PERF_OUT_PREFIX=""
if [ "$SMOKE" = 0 ]; then
	RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results}
	mkdir -p "$RESULTS_DIR"
	STAMP=$(date +%Y-%m-%d_%H%M%S)
	OUT=$RESULTS_DIR/$STAMP.txt
	PERF_OUT_PREFIX=$RESULTS_DIR/$STAMP-perf
else
	OUT=$W/results.txt
	PERF_OUT_PREFIX=$W/perf
fi

GROUPS_=(seq tar small fio dbench)
ABORT=0
for ((rep = 1; rep <= REPS; rep++)); do
	for g in "${GROUPS_[@]}"; do
		for t in "${TARGETS[@]}"; do
			log "rep $rep/$REPS: $g on $t (load $(cut -d' ' -f1 /proc/loadavg))"
			[ "$t" = replfs ] && perf_start "$g"
			"wl_$g" "$t" "${DIR[$t]}"
			[ "$t" = replfs ] && perf_stop "$g"
			if [ "$t" = replfs ]; then
				if pid_alive "$RPID"; then
					rec "hwm_after_$g" replfs "$(hwm_kib "$RPID")"
				else
					fail "replfs daemon (pid $RPID) died during $g; skipping the remaining workloads"
					ABORT=1; break 3
				fi
			fi
		done
	done
done
if has_target replfs && [ "$ABORT" = 0 ]; then
	rec hwm_kib replfs "$(hwm_kib "$RPID")"
	rec rss_end_kib replfs "$(rss_kib "$RPID")"
	log "crash replay: ${CRASH_MB} MiB of 64 KiB writes"
	crash_run data
	log "crash replay: ${CRASH_META} x (create, chmod, utimensat, rename) + mkdirs"
	crash_run meta
fi
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
median() {   # median of the recorded values of $1 (METRIC,TARGET); empty if none
	local v=${VALS[$1]:-}
	[ -n "$v" ] || return 0
	tr ' ' '\n' <<<"$v" | grep . | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
fmt() { # fmt KIND VALUE
	[ -n "$2" ] || { echo "-"; return; }
	case $1 in rate) printf '%.1f' "$2" ;; time) printf '%.3f' "$2" ;; iops) printf '%.0f' "$2" ;; *) echo "$2" ;; esac
}
cell() {  # cell METRIC TARGET KIND
	if [ -n "${FAILED[$1,$2]:-}" ] && [ -z "${VALS[$1,$2]:-}" ]; then echo "FAIL"; return; fi
	fmt "$3" "$(median "$1,$2")"
}
ratio() { # speed ratio target/native (higher = better)
	local kind=$1 n=$2 x=$3
	[ -n "$n" ] && [ -n "$x" ] || { echo "-"; return; }
	awk -v k="$kind" -v n="$n" -v x="$x" 'BEGIN { if (k == "time") r = (x > 0 ? n / x : 0); else r = (n > 0 ? x / n : 0); printf "%.2f", r }'
}

METRICS=(seqwrite seqread tarx rmrf create stat unlink randwrite dbench)
tarname=$TAR_SRC
declare -A LABEL=(
	[seqwrite]="seq write ${SEQ_MB} MiB, 1 MiB blocks + fsync (MB/s)"
	[seqread]="seq read ${SEQ_MB} MiB, cold cache (MB/s)"
	[tarx]="tar x of $tarname, $TAR_FILES files (s)"
	[rmrf]="rm -rf of that tree (s)"
	[create]="$NFILES x create+write 4 KiB (s)"
	[stat]="$NFILES x stat (s)"
	[unlink]="$NFILES x unlink (s)"
	[randwrite]="4 KiB randwrite + fdatasync, ${FIO_SIZE} file, ${FIO_TIME}s (IOPS)"
	[dbench]="dbench $DBENCH_CLIENTS clients, ${DBENCH_TIME}s (MB/s)"
)
declare -A KIND=([seqwrite]=rate [seqread]=rate [tarx]=time [rmrf]=time [create]=time [stat]=time [unlink]=time [randwrite]=iops [dbench]=rate)
declare -A GOAL=([seqwrite]=0.8 [seqread]=0.9 [tarx]=0.5 [rmrf]=0.5 [create]=0.5 [stat]=0.5 [unlink]=0.5 [randwrite]=1.0 [dbench]=0.3)

report() {
	local t m hdr sep row n x r
	echo "## replfs benchmark$([ "$SMOKE" = 1 ] && echo ' (SMOKE: tiny sizes, figures meaningless)')"
	echo
	echo '```'
	echo "$HDR"
	echo "load:      $LOAD_END at end"
	echo '```'
	echo
	echo "Medians of $REPS run(s). Ratios are speed ratios against native ext4 (higher is better;"
	echo "for rows in seconds the ratio is native_seconds / target_seconds)."
	echo
	hdr="| workload |"; sep="|---|"
	for t in "${TARGETS[@]}"; do hdr+=" ${NAME[$t]} |"; sep+="---:|"; done
	if has_target native; then
		for t in "${TARGETS[@]}"; do [ "$t" = native ] || { hdr+=" ${SHORT[$t]}/native |"; sep+="---:|"; }; done
		has_target replfs && { hdr+=" target (replfs) |"; sep+="---|"; }
	fi
	echo "$hdr"; echo "$sep"
	for m in "${METRICS[@]}"; do
		row="| ${LABEL[$m]} |"
		for t in "${TARGETS[@]}"; do row+=" $(cell "$m" "$t" "${KIND[$m]}") |"; done
		if has_target native; then
			n=$(median "$m,native")
			for t in "${TARGETS[@]}"; do
				[ "$t" = native ] && continue
				row+=" $(ratio "${KIND[$m]}" "$n" "$(median "$m,$t")") |"
			done
			if has_target replfs; then
				r=$(ratio "${KIND[$m]}" "$n" "$(median "$m,replfs")")
				if [ "$r" = "-" ]; then row+=" ≥${GOAL[$m]}x: **not measured** |"
				elif awk -v r="$r" -v g="${GOAL[$m]}" 'BEGIN { exit !(r >= g) }'; then row+=" ≥${GOAL[$m]}x: met |"
				else row+=" ≥${GOAL[$m]}x: **missed** (${r}x) |"; fi
			fi
		fi
		echo "$row"
	done
	if has_target replfs; then
		echo
		echo "### replfs crash replay and memory"
		echo
		echo "| measure | value | target | met? |"
		echo "|---|---:|---|---|"
		local k rps spg hwm goal_row
		for k in data meta; do
			local what; [ $k = data ] && what="${CRASH_MB} MiB of 64 KiB writes" || what="$((CRASH_META * 4)) metadata ops"
			echo "| $what: load time (s) | $(fmt time "$(median crash_${k}_load_s,replfs)") | | |"
			echo "| $what: journal size (MiB) | $(awk -v b="$(median crash_${k}_journal_bytes,replfs)" 'BEGIN { if (b == "") print "-"; else printf "%.1f", b / 1048576 }') | | |"
			echo "| $what: records replayed | $(fmt x "$(median crash_${k}_records,replfs)") | | |"
			echo "| $what: replay time (ms, from recovery line) | $(fmt x "$(median crash_${k}_ms,replfs)") | | |"
			echo "| $what: remount wall time (s) | $(fmt time "$(median crash_${k}_mount_s,replfs)") | | |"
			# The records/s target is judged on the metadata run (small records), the
			# seconds-per-GiB target on the data run (1 GiB of journal); the other
			# figure of each run is shown for information.
			rps=$(median crash_${k}_rps,replfs)
			spg=$(median crash_${k}_s_per_gib,replfs)
			if [ $k = meta ]; then
				if [ -z "$rps" ]; then goal_row="**not measured**"
				elif [ "$rps" -ge 100000 ]; then goal_row=met; else goal_row="**missed**"; fi
				echo "| $what: replay rate (records/s) | ${rps:-FAIL} | ≥100000 | $goal_row |"
				echo "| $what: replay time per GiB of journal (s) | ${spg:-FAIL} | (info) | |"
			else
				echo "| $what: replay rate (records/s) | ${rps:-FAIL} | (info) | |"
				if [ -z "$spg" ]; then goal_row="**not measured**"
				elif awk -v s="$spg" 'BEGIN { exit !(s <= 5) }'; then goal_row=met; else goal_row="**missed**"; fi
				echo "| $what: replay time per GiB of journal (s) | ${spg:-FAIL} | ≤5 | $goal_row |"
			fi
		done
		hwm=0
		for k in hwm_kib,replfs crash_data_hwm_kib,replfs crash_meta_hwm_kib,replfs crash_data_hwm_after_replay_kib,replfs crash_meta_hwm_after_replay_kib,replfs; do
			for x in ${VALS[$k]:-}; do [ "$x" -gt "$hwm" ] 2>/dev/null && hwm=$x; done
		done
		if [ "$hwm" = 0 ]; then goal_row="**not measured**"
		elif [ "$hwm" -lt $((100 * 1024)) ]; then goal_row=met; else goal_row="**missed**"; fi
		echo "| daemon peak RSS, VmHWM over all workloads and crash runs (MiB) | $(awk -v k=$hwm 'BEGIN { printf "%.1f", k / 1024 }') | <100 | $goal_row |"
		echo "| daemon VmHWM after workloads 1-6 / VmRSS at end (MiB) | $(awk -v a="$(median hwm_kib,replfs)" -v b="$(median rss_end_kib,replfs)" 'BEGIN { printf "%.1f / %.1f", a / 1024, b / 1024 }') | | |"
	fi
	if [ "$REPS" -gt 1 ]; then
		echo
		echo "Spread over the $REPS runs (min - max):"
		echo
		hdr="| workload |"; sep="|---|"
		for t in "${TARGETS[@]}"; do hdr+=" ${NAME[$t]} |"; sep+="---:|"; done
		echo "$hdr"; echo "$sep"
		for m in "${METRICS[@]}"; do
			row="| ${LABEL[$m]} |"
			for t in "${TARGETS[@]}"; do
				local sorted lo hi
				sorted=$(tr ' ' '\n' <<<"${VALS[$m,$t]:-}" | grep . | sort -g)
				lo=$(head -1 <<<"$sorted"); hi=$(tail -1 <<<"$sorted")
				if [ -n "$lo" ]; then row+=" $(fmt "${KIND[$m]}" "$lo") - $(fmt "${KIND[$m]}" "$hi") |"; else row+=" - |"; fi
			done
			echo "$row"
		done
	fi
	if has_target pt; then
		echo
		echo "Note: libfuse's high-level passthrough example implements fsync as an empty stub"
		echo "(xmp_fsync returns 0), so its fsync/fdatasync rows measure no durability at all."
	fi
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

report >"$OUT"
# the tables on stdout, everything in the results file
sed -n '1,/^### raw values/p' "$OUT" | sed '$d'
if [ "$SMOKE" = 0 ]; then echo "results written to $OUT" >&2; fi
# --smoke also runs the replication benchmark's smoke (bench/repl.sh --smoke, ~20 s);
# REPL_SMOKE=0 skips it
if [ "$SMOKE" = 1 ] && has_target replfs && [ "${REPL_SMOKE:-1}" = 1 ]; then
	log "bench/repl.sh --smoke"
	bash "$BENCH_DIR/repl.sh" --smoke --replfs "$REPLFS_ORIG" -d "$BASE" || fail "bench/repl.sh --smoke failed"
fi
# and the failover benchmark's smoke (bench/failover.sh --smoke, ~25 s); FAILOVER_SMOKE=0 skips it
if [ "$SMOKE" = 1 ] && has_target replfs && [ "${FAILOVER_SMOKE:-1}" = 1 ]; then
	log "bench/failover.sh --smoke"
	bash "$BENCH_DIR/failover.sh" --smoke --replfs "$REPLFS_ORIG" -d "$BASE" || fail "bench/failover.sh --smoke failed"
fi
if [ "$FAILS" -gt 0 ]; then
	echo "run.sh: $FAILS step(s) failed" >&2
	exit 1
fi
exit 0
