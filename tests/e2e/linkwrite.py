#!/usr/bin/env python3
"""Writers through two names of one hard-linked file (usage: linkwrite.py DIR SECONDS).

Four processes, two per name, write at random offsets and sizes, read, stat and
truncate for SECONDS. A write through one name makes the daemon invalidate the
kernel's cache of the other name; done from inside the write request, two such
writes waited for each other's page locks forever (the mount hung). Prints each
process's operation count; exit 0 when all finished.
"""
import os, sys, time, random, multiprocessing as mp
d = sys.argv[1]; secs = float(sys.argv[2])
a = os.path.join(d, "lw_a"); b = os.path.join(d, "lw_b")
with open(a, "wb") as f: f.write(b"x" * 65536)
if not os.path.exists(b): os.link(a, b)
def w(p, tag, seed):
    r = random.Random(seed); t0 = time.monotonic(); n = 0
    fd = os.open(p, os.O_RDWR)
    while time.monotonic() - t0 < secs:
        k = r.random()
        if k < 0.6: os.pwrite(fd, tag * r.randint(1, 20000), r.randint(0, 80000))
        elif k < 0.8: os.pread(fd, 30000, r.randint(0, 60000))
        elif k < 0.9: os.stat(p)
        else: os.ftruncate(fd, r.randint(0, 90000))
        n += 1
    os.close(fd); print(p, n, flush=True)
ps = [mp.Process(target=w, args=(p, t, i)) for i, (p, t) in enumerate(((a, b"A"), (b, b"B"), (a, b"C"), (b, b"D")))]
[p.start() for p in ps]; [p.join() for p in ps]
