#!/usr/bin/env bash
# bench/slaveread.sh REPLFS_BINARY -- slave read cost: a master + 1 slave on loopback, 2000 files of 4 KiB in 20 dirs;
# on the slave, warm `ls -lR` and `cat` of every file, 5 runs each, median ms.
set -euo pipefail
R=$1; D=$(mktemp -d /var/tmp/slaveread.XXXXXX); P=$((20000 + RANDOM % 20000))
cleanup() { umount "$D/ms" 2>/dev/null || true; umount "$D/mm" 2>/dev/null || true; sleep 0.5; rm -rf "$D"; }
trap cleanup EXIT
cd "$D"; $R keygen > k; chmod 600 k; $R init a >/dev/null; $R init b >/dev/null; mkdir mm ms
$R mount a mm --listen 127.0.0.1:$P --key k
python3 - "$D/mm" <<'PY'
import os,sys
for d in range(20):
    os.makedirs(f"{sys.argv[1]}/d{d}")
    for f in range(100):
        with open(f"{sys.argv[1]}/d{d}/f{f}","wb") as h: h.write(os.urandom(4096))
PY
$R mount b ms --slave-of http://127.0.0.1:$P --key k
for i in $(seq 100); do [ "$(find ms -type f 2>/dev/null | wc -l)" = 2000 ] && break; sleep 0.3; done
med() { sort -n | sed -n 3p; }
t() { local s e; s=$(date +%s%N); eval "$1" >/dev/null 2>&1; e=$(date +%s%N); echo $(( (e-s)/1000000 )); }
ls -lR ms >/dev/null; find ms -type f -exec cat {} + >/dev/null
echo "ls -lR:  $(for i in 1 2 3 4 5; do t 'ls -lR ms'; done | med) ms"
echo "cat all: $(for i in 1 2 3 4 5; do t 'find ms -type f -exec cat {} +'; done | med) ms"
echo "stat all x3: $(for i in 1 2 3 4 5; do t 'for k in 1 2 3; do find ms -type f -exec stat -c %s {} + ; done'; done | med) ms"
