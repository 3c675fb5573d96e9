#!/usr/bin/env bash
# The main job, on this machine: build, create a store, mount it, write a file
# through the mount, kill the daemon with SIGKILL, mount again (crash replay)
# and read the file back.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
R=$PWD/build/replfs
work=$(mktemp -d /var/tmp/replfs-demo.XXXXXX)
cleanup() { fusermount3 -u "$work/mnt" 2>/dev/null || umount -l "$work/mnt" 2>/dev/null || true; }
trap cleanup EXIT
mkdir "$work/mnt"
set -x
"$R" init "$work/store"
"$R" mount "$work/store" "$work/mnt"
echo "written through replfs at $(date)" > "$work/mnt/hello.txt"
sync "$work/mnt/hello.txt"
kill -KILL "$(cat "$work/store/pid")"
fusermount3 -u "$work/mnt"
"$R" mount "$work/store" "$work/mnt"
cat "$work/mnt/hello.txt"
"$R" journal dump "$work/store"
fusermount3 -u "$work/mnt"
