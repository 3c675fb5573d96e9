#!/usr/bin/env bash
# The main job, on this machine: build, then a master and a slave, each with
# its own store, mountpoint and loopback port. A file written on the master is
# read on the slave; the slave refuses writes; status shows the replication.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
R=$PWD/build/replfs
work=$(mktemp -d /var/tmp/replfs-demo.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
	{ set +x; } 2>/dev/null
	for m in "$work/slave" "$work/master"; do
		umount "$m" 2>/dev/null || fusermount3 -u -z "$m" 2>/dev/null || true
	done
}
trap cleanup EXIT
mkdir "$work/master" "$work/slave"
set -x
"$R" keygen > "$work/cluster.key"
chmod 600 "$work/cluster.key"
"$R" init "$work/store-m"
"$R" init "$work/store-s"
"$R" mount "$work/store-m" "$work/master" --listen "127.0.0.1:$port" --key "$work/cluster.key" --sync
"$R" mount "$work/store-s" "$work/slave" --slave-of "http://127.0.0.1:$port" --key "$work/cluster.key"
echo "written on the master at $(date)" > "$work/master/hello.txt"
sync "$work/master/hello.txt"       # sync mode: returns once the slave holds it
for i in $(seq 50); do cmp -s "$work/master/hello.txt" "$work/slave/hello.txt" && break; sleep 0.1; done
cat "$work/slave/hello.txt"
cmp "$work/master/hello.txt" "$work/slave/hello.txt"
if echo nope > "$work/slave/other.txt"; then echo "slave accepted a write" >&2; exit 1; fi
"$R" status "$work/master"
"$R" status "$work/slave"
umount "$work/slave"
umount "$work/master"
