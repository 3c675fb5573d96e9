#!/usr/bin/env bash
# Sets everything up and runs every test: a normal build and an
# ASan/UBSan build, each running the whole ctest suite (unit, e2e, crash),
# then a seconds-long smoke of the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
jobs=$(nproc)

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure -j1)

# Sanitizers: the daemons under test run instrumented too. Left out there:
# the valgrind suite (valgrind and ASan do not mix) and the long fault suites
# (soak, network faults, paused slave), which ran above and would take CI
# past half an hour under ASan.
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DREPLFS_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
   UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
   ctest --output-on-failure -j1 \
     -E "${REPLFS_ASAN_EXCLUDE:-e2e_test_valgrind|e2e_test_soak|e2e_test_netfault|e2e_test_slave_pause}")

# Fuzzing: a short libFuzzer run of each decoder (clang) on the repo's corpus.
FUZZ_SECONDS="${FUZZ_SECONDS:-15}" bash tests/fuzz/run.sh

if [ -x bench/run.sh ] || [ -f bench/run.sh ]; then
  REPLFS=$PWD/build/replfs bash bench/run.sh --smoke
fi
