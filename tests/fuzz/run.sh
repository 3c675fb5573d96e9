#!/bin/bash
# Short libFuzzer runs of every fuzz target (tests/fuzz/CMakeLists.txt).
#
#   tests/fuzz/run.sh [TARGET...]          (default: every target)
#
# Builds BUILD_DIR (default build-fuzz, next to this tree's CMakeLists.txt)
# with clang and -DREPLFS_FUZZ=ON, then runs each target for FUZZ_SECONDS
# (default 20) on a temporary copy of tests/fuzz/corpus/<target>/ plus
# regress/<target>/, so the repository's corpus is not grown by the run.
# Fails when a target finds a crash, a leak, undefined behaviour, a timeout
# (FUZZ_TIMEOUT seconds per input, default 10) or a broken property, and
# prints the path of the input that did it: replay it with
#   build-fuzz/tests/fuzz/<target> CRASH_FILE
# fix the bug, and copy the file to tests/fuzz/regress/<target>/. The work
# directory is kept when a target fails.
#
# Environment: FUZZ_SECONDS, FUZZ_TIMEOUT, FUZZ_JOBS (parallel runs per
# target, default 1), BUILD_DIR, FUZZ_KEEP=1 keeps the work directory (the
# grown corpus is there: merge new seeds into the repository by hand, small).
set -u
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=${BUILD_DIR:-$src/build-fuzz}
seconds=${FUZZ_SECONDS:-20}
timeout=${FUZZ_TIMEOUT:-10}
jobs=${FUZZ_JOBS:-1}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_record fuzz_wire fuzz_snapshot)

command -v clang >/dev/null || { echo "fuzz: clang is needed (apt-get install clang)" >&2; exit 1; }
if [ ! -f "$build/CMakeCache.txt" ]; then
	cmake -S "$src" -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DREPLFS_FUZZ=ON >"$build.cmake.log" 2>&1 ||
		{ cat "$build.cmake.log" >&2; echo "fuzz: cmake failed" >&2; exit 1; }
	rm -f "$build.cmake.log"
fi
cmake --build "$build" -j2 --target "${targets[@]}" >/dev/null 2>&1 ||
	{ cmake --build "$build" --target "${targets[@]}" 2>&1 | tail -30 >&2
	  echo "fuzz: build failed" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/replfs-fuzz-XXXXXX")
cleanup() { [ "${FUZZ_KEEP:-0}" = 1 ] && echo "fuzz: work directory kept: $work" || rm -rf "$work"; }
trap cleanup EXIT

par=
[ "$jobs" -gt 1 ] && par="-jobs=$jobs -workers=$jobs"
failed=0
for t in "${targets[@]}"; do
	mkdir -p "$work/$t/corpus" "$work/$t/crashes" "$work/$t/tmp"
	cp "$here/corpus/$t/"* "$work/$t/corpus/"
	cp "$here/regress/$t/"* "$work/$t/corpus/" 2>/dev/null
	# -close_fd_mask=2: the code under test logs every refusal to stderr;
	# libFuzzer's own report and the sanitizers' still reach the log.
	(cd "$work/$t" && TMPDIR="$work/$t/tmp" "$build/tests/fuzz/$t" \
		-max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb=2048 \
		-max_len=65536 -close_fd_mask=2 -print_final_stats=1 $par \
		-artifact_prefix="$work/$t/crashes/" corpus >"$work/$t/log" 2>&1)
	rc=$?
	# With -jobs libFuzzer writes each job's output to fuzz-N.log.
	cat "$work/$t"/fuzz-*.log >>"$work/$t/log" 2>/dev/null
	stats=$(grep -E '^stat::number_of_executed_units' "$work/$t/log" | awk '{s += $2} END {print s + 0}')
	crash=$(ls "$work/$t/crashes/" 2>/dev/null | head -1)
	if [ $rc -ne 0 ] || [ -n "$crash" ]; then
		failed=1
		grep -E 'ERROR: |SUMMARY: |fuzz: |runtime error' "$work/$t/log" | head -5 >&2
		FUZZ_KEEP=1
		if [ -n "$crash" ]; then
			echo "fuzz: $t FAILED after $stats runs; input: $work/$t/crashes/$crash" >&2
		else
			echo "fuzz: $t FAILED (exit $rc, no crash file); log: $work/$t/log" >&2
		fi
	else
		echo "fuzz: $t ok, $stats runs in ${seconds}s"
	fi
done
exit $failed
