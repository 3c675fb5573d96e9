#!/usr/bin/env python3
"""Workloads and checkers for the replication end-to-end tests (python3 stdlib only).

  repl_check.py fresh MASTER_MNT SLAVE_MNT --replfs BIN [--n 200] [--timeout 10]
      Freshness: N rounds of {read/stat/list on the slave (so its kernel caches hold the
      old state); on the master overwrite fresh/val with a new value of a new length
      (alternately in place with O_TRUNC and by rename over it), chmod + utime it,
      create fresh/dir/c_K and rename fresh/dir/r_{K-1} -> fresh/dir/r_K; read the
      master's lsn (replfs status --json); poll the slave until its applied_lsn >= that
      lsn; then at once read/stat/list on the slave}: every read must show the new state.
      Exit 1 on any stale read (the first ones are printed).

  repl_check.py patwrite DIR --files N [--size BYTES]
      Writes N files of a name-derived pattern, each with ONE write() call of BYTES
      (default 32768, below FUSE's max_write, so one request = one journal record):
      r_NNNNN via .t_NNNNN + rename (must be absent or complete on a slave), and
      d_NNNNN directly (empty or complete). Prints "wrote N".

  repl_check.py patread DIR --stop FILE
      Loops until FILE exists (then one final pass): lists DIR and checks every file:
      r_* absent or complete, d_* / .t_* empty or complete; any other content (a prefix,
      wrong bytes, wrong size) is a torn read. Prints "checked N complete C torn T";
      exit 1 if T > 0 or if it never saw a complete file.

  repl_check.py atomic-write DIR --stop FILE [--pages N]
      Until FILE exists, generation g = 1, 2, ...: (1) ONE pwrite of N pages (default 16)
      over DIR/gen, every 4 KiB page saying "gen g"; (2) DIR/.t written with gen_content(g)
      (its length depends on g) and renamed over DIR/target; (3) the one entry of DIR/a or
      DIR/b moves: DIR/a/e_K -> DIR/b/e_K+1 (K even) or DIR/b/e_K -> DIR/a/e_K+1 (K odd).
      Prints "gens G".

  repl_check.py atomic-read DIR --stop FILE [--pages N]
      On a slave, during the apply of the above, until FILE exists (then one more pass):
      one read of all of DIR/gen (through a new fd and a long-lived one) must show
      whole pages of one generation, or of two adjacent ones when the read spanned an
      apply (counted as "spanning": pages come from the page cache one by one, as on
      ext4 with a local writer), never a newest one lower than one seen before;
      DIR/target must be
      exactly gen_content(g) for the g its header names; listings a, b, a (and b, a, b):
      at most one e_* in each; if both outer listings show the same entry the middle one
      must be empty (the name is never in two places). Prints "reads R gens G dirchecks D
      torn T"; exit 1 on any torn/two-place/backwards observation, or if it saw fewer than
      3 generations or no decisive directory check (vacuous).

  repl_check.py load DIR --stop FILE [--seed S] [--max-seconds T]
      Mixed metadata+data load (create, append, overwrite, truncate, rename, link,
      unlink, mkdir, rmdir, symlink, chmod, utime, setxattr) until FILE exists.
      Prints "ops N bytes B".

  repl_check.py rewrite DIR --stop FILE [--seed S]
      Until FILE exists, keeps changing DIR/blob*: 64 KiB pwrites at random offsets,
      truncates, unlink + re-create, rename away and back (files a snapshot is copying).
      Prints "rewrites N".

  repl_check.py hold DIR --ready FILE --go FILE
      Opens DIR/keep and DIR (on a slave mount) and reads both, creates the READY file,
      waits for GO, then prints one JSON object: old_fd (content read through the fd
      opened before), old_fd_fstat_size, old_dirfd_list (listing through the directory
      fd opened before), fresh (content by a new open), fresh_list.

  repl_check.py erofs MNT --file F --dir D
      Every mutating operation on the (slave) mount must fail with EROFS. F is an
      existing regular file, D an existing directory (relative to MNT).

  repl_check.py fsync-kill PATH --mb N --pid PID
      Writes N MiB (1 MiB writes) to PATH, fsync()s it, and the moment fsync returns
      sends SIGKILL to PID (the master daemon). Prints "sha256 HEX size N fsync_ms M".

  repl_check.py timed-fsync PATH [--bytes N]
      Appends N bytes (default 4096) to PATH and fsync()s; prints "fsync_ms M".

  repl_check.py strict-write PATH --replfs BIN --store SLAVE_STORE
      One write() of a unique marker to PATH (no fsync, fd left open); the moment it
      returns, `replfs journal dump SLAVE_STORE` must hold a write record for PATH's
      name with that length. Prints "write_ms M found yes|no returned_at UNIXTIME"; exit 1
      when not found.
"""
import argparse
import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time


def status(binary, mnt):
    out = subprocess.run([binary, "status", mnt, "--json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=10)
    if out.returncode != 0:
        raise RuntimeError("replfs status %s --json exited %d: %s" %
                           (mnt, out.returncode, out.stderr.decode(errors="replace")[:300]))
    return json.loads(out.stdout)


# ------------------------------------------------------------------------- fresh
def cmd_fresh(a):
    m = os.path.join(a.master, "fresh")
    s = os.path.join(a.slave, "fresh")
    os.makedirs(os.path.join(m, "dir"), exist_ok=True)
    with open(os.path.join(m, "val"), "wb") as f:
        f.write(b"initial\n")
    with open(os.path.join(m, "dir", "r_0"), "wb") as f:
        f.write(b"r0\n")
    names = {"r_0"}
    fails = []
    lag_ms = []

    def wait_slave():
        if a.no_wait:        # self-check of this checker: must report stale reads
            return True
        st = status(a.replfs, a.master)
        want = st["lsn"]
        t0 = time.monotonic()
        while True:
            sst = status(a.replfs, a.slave)
            if sst["applied_lsn"] >= want:
                lag_ms.append((time.monotonic() - t0) * 1000)
                return True
            if time.monotonic() - t0 > a.timeout:
                fails.append("slave applied_lsn %d did not reach master lsn %d in %ss"
                             % (sst["applied_lsn"], want, a.timeout))
                return False
            time.sleep(0.002)

    if not wait_slave():
        print("FAIL: " + fails[0])
        return 1
    for k in range(1, a.n + 1):
        # 1. warm the slave's caches with the old state
        try:
            with open(os.path.join(s, "val"), "rb") as f:
                f.read()
            os.stat(os.path.join(s, "val"))
            os.listdir(os.path.join(s, "dir"))
            os.stat(os.path.join(s, "dir", "r_%d" % (k - 1)))
            try:
                os.stat(os.path.join(s, "dir", "c_%d" % k))    # a negative entry
            except FileNotFoundError:
                pass
        except OSError as e:
            fails.append("round %d: warming read on the slave: %s" % (k, e))
        # 2. change it on the master
        val = ("value %d " % k).encode() + b"x" * (k * 37 % 1000)
        mode = 0o600 if k % 2 else 0o644
        mtime_ns = 1_500_000_000_000_000_000 + k * 1_000_000_007
        vp = os.path.join(m, "val")
        if k % 2:
            fd = os.open(vp, os.O_WRONLY | os.O_TRUNC)
            os.write(fd, val)
            os.close(fd)
        else:
            tp = os.path.join(m, ".val.tmp")
            fd = os.open(tp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, val)
            os.close(fd)
            os.rename(tp, vp)
        os.chmod(vp, mode)
        os.utime(vp, ns=(mtime_ns, mtime_ns))
        with open(os.path.join(m, "dir", "c_%d" % k), "wb") as f:
            f.write(b"c%d\n" % k)
        os.rename(os.path.join(m, "dir", "r_%d" % (k - 1)), os.path.join(m, "dir", "r_%d" % k))
        names.discard("r_%d" % (k - 1))
        names.add("r_%d" % k)
        names.add("c_%d" % k)
        # 3. wait until the slave has applied it, then read at once
        if not wait_slave():
            break
        sv = os.path.join(s, "val")
        try:
            with open(sv, "rb") as f:
                got = f.read()
            if got != val:
                fails.append("round %d: stale content of val: got %r... (%d bytes), want %r... (%d bytes)"
                             % (k, got[:24], len(got), val[:24], len(val)))
            st = os.stat(sv)
            if st.st_size != len(val) or (st.st_mode & 0o7777) != mode or st.st_mtime_ns != mtime_ns:
                fails.append("round %d: stale stat of val: size %d mode %o mtime %d, want %d %o %d"
                             % (k, st.st_size, st.st_mode & 0o7777, st.st_mtime_ns, len(val), mode, mtime_ns))
            ls = set(os.listdir(os.path.join(s, "dir")))
            if ls != names:
                fails.append("round %d: stale listing: missing %s, extra %s"
                             % (k, sorted(names - ls)[:5], sorted(ls - names)[:5]))
            md = os.stat(os.path.join(m, "dir"))
            sd = os.stat(os.path.join(s, "dir"))
            if (sd.st_mtime_ns, sd.st_nlink, sd.st_mode) != (md.st_mtime_ns, md.st_nlink, md.st_mode):
                fails.append("round %d: stale stat of the directory: mtime %d nlink %d, master has %d %d"
                             % (k, sd.st_mtime_ns, sd.st_nlink, md.st_mtime_ns, md.st_nlink))
            try:
                os.stat(os.path.join(s, "dir", "r_%d" % (k - 1)))
                fails.append("round %d: renamed-away r_%d still stat()able on the slave" % (k, k - 1))
            except FileNotFoundError:
                pass
            with open(os.path.join(s, "dir", "c_%d" % k), "rb") as f:
                if f.read() != b"c%d\n" % k:
                    fails.append("round %d: new file c_%d has wrong content" % (k, k))
            with open(os.path.join(s, "dir", "r_%d" % k), "rb") as f:
                if f.read() != b"r0\n":
                    fails.append("round %d: renamed file r_%d has wrong content" % (k, k))
        except OSError as e:
            fails.append("round %d: read on the slave: %s" % (k, e))
    lag_ms.sort()
    if lag_ms:
        print("rounds %d  apply wait ms: p50 %.1f p99 %.1f max %.1f" %
              (a.n, lag_ms[len(lag_ms) // 2], lag_ms[min(len(lag_ms) - 1, int(len(lag_ms) * 0.99))],
               lag_ms[-1]))
    for f in fails[:15]:
        print("FAIL: " + f)
    if fails:
        print("FAIL: %d stale/failed reads in %d rounds" % (len(fails), a.n))
        return 1
    return 0


# ---------------------------------------------------------------- patterns
def pattern(name, size):
    seed = hashlib.sha256(name.encode()).digest()
    head = (name + "\n").encode()
    body = (seed * (size // len(seed) + 1))
    return (head + body)[:size]


def cmd_patwrite(a):
    os.makedirs(a.dir, exist_ok=True)
    for i in range(a.files):
        for kind in ("r", "d"):
            name = "%s_%05d" % (kind, i)
            data = pattern(name, a.size)
            path = os.path.join(a.dir, (".t_%05d" % i) if kind == "r" else name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            n = os.write(fd, data)
            os.close(fd)
            if n != len(data):
                print("FAIL: short write %d of %d on %s" % (n, len(data), path))
                return 1
            if kind == "r":
                os.rename(path, os.path.join(a.dir, name))
    print("wrote %d" % (2 * a.files))
    return 0


def cmd_patread(a):
    checked = complete = torn = 0
    bad = []
    final = False
    while True:
        if os.path.exists(a.stop):
            final = True
        try:
            names = os.listdir(a.dir)
        except FileNotFoundError:
            names = []
        for n in names:
            if n.startswith(".t_"):
                want = pattern("r_" + n[3:], a.size)
            elif n.startswith("r_") or n.startswith("d_"):
                want = pattern(n, a.size)
            else:
                continue
            try:
                with open(os.path.join(a.dir, n), "rb") as f:
                    got = f.read()
            except FileNotFoundError:
                continue      # renamed / not there: fine
            checked += 1
            if got == want:
                complete += 1
            elif got == b"" and not n.startswith("r_"):
                pass          # created, not yet written: an earlier journal position
            else:
                torn += 1
                if len(bad) < 10:
                    pfx = 0
                    while pfx < min(len(got), len(want)) and got[pfx] == want[pfx]:
                        pfx += 1
                    bad.append("%s: %d bytes, want %d; first %d bytes match" % (n, len(got), len(want), pfx))
        if final:
            break
    print("checked %d complete %d torn %d" % (checked, complete, torn))
    for b in bad:
        print("FAIL: torn read: " + b)
    if torn:
        return 1
    if complete == 0:
        print("FAIL: the reader never saw a complete file (nothing checked: test would be vacuous)")
        return 1
    return 0


# ------------------------------------------------------------------ atomic
def gen_page(g):
    head = b"gen %012d\n" % g
    return (head * (4096 // len(head) + 1))[:4096]


def gen_content(g):
    head = b"target g=%d\n" % g
    n = 1000 + g * 7919 % 60000
    return (head * (n // len(head) + 1))[:n]


def cmd_atomic_write(a):
    os.makedirs(os.path.join(a.dir, "a"), exist_ok=True)
    os.makedirs(os.path.join(a.dir, "b"), exist_ok=True)
    open(os.path.join(a.dir, "a", "e_0"), "w").close()
    fd = os.open(os.path.join(a.dir, "gen"), os.O_WRONLY | os.O_CREAT, 0o644)
    g = 0
    while not os.path.exists(a.stop):
        g += 1
        data = gen_page(g) * a.pages
        if os.pwrite(fd, data, 0) != len(data):
            print("FAIL: short pwrite at gen %d" % g)
            return 1
        t = os.path.join(a.dir, ".t")
        with open(t, "wb") as f:
            f.write(gen_content(g))
        os.rename(t, os.path.join(a.dir, "target"))
        k = g - 1
        src, dst = ("a", "b") if k % 2 == 0 else ("b", "a")
        os.rename(os.path.join(a.dir, src, "e_%d" % k), os.path.join(a.dir, dst, "e_%d" % (k + 1)))
    os.close(fd)
    print("gens %d" % g)
    return 0


def cmd_atomic_read(a):
    reads = dirchecks = 0
    gens = set()
    bad = []
    last_g = 0
    spanning = 0
    final = False
    keep = None
    gp = os.path.join(a.dir, "gen")

    def check_gen(buf, how):
        nonlocal last_g, spanning
        if not buf:
            return
        pages = [buf[i:i + 4096] for i in range(0, len(buf), 4096)]
        seen = set()
        for pg in pages:
            try:
                seen.add(int(pg[4:16]))
            except ValueError:
                seen.add(-1)
        g = max(seen)
        whole = [pg == gen_page(int(pg[4:16])) if -1 not in seen else False for pg in pages]
        if len(buf) != a.pages * 4096 or not all(whole) or g - min(seen) > 1:
            bad.append("gen (%s): one read of %d bytes shows generations %s (pages whole: %s)"
                       % (how, len(buf), sorted(seen), "".join("y" if w else "n" for w in whole)))
        elif len(seen) > 1:
            # Each page is read from the page cache on its own, as from ext4 with a
            # local writer: a read spanning the moment one record is applied and the
            # kernel's cache of the file dropped may return pages from just before
            # and just after it. Counted, not a failure; every page is whole.
            spanning += 1
        elif g < last_g:
            bad.append("gen (%s): generation %d after %d (went back)" % (how, g, last_g))
        last_g = max(last_g, g)
        gens.add(g)

    def entries(d):
        try:
            return sorted(n for n in os.listdir(os.path.join(a.dir, d)) if n.startswith("e_"))
        except FileNotFoundError:
            return None

    while True:
        if os.path.exists(a.stop):
            final = True
        try:
            if keep is None and os.path.exists(gp):
                keep = os.open(gp, os.O_RDONLY)
            if keep is not None:
                check_gen(os.pread(keep, a.pages * 4096, 0), "long-lived fd")
            with open(gp, "rb") as f:
                check_gen(f.read(), "new fd")
            reads += 1
        except FileNotFoundError:
            pass
        # A file opened on a slave just before the master renames another over its
        # name must read as the file it opened (fs/held.c).
        try:
            with open(os.path.join(a.dir, "target"), "rb") as f:
                got = f.read()
            try:
                g = int(got.split(b"\n", 1)[0].split(b"=")[1])
            except (IndexError, ValueError):
                g = -1
            if got != gen_content(g):
                bad.append("target: %d bytes, header %r: not one whole generation" % (len(got), got[:24]))
        except FileNotFoundError:
            pass
        for x, y in (("a", "b"), ("b", "a")):
            l1, l2, l3 = entries(x), entries(y), entries(x)
            for d, l in ((x, l1), (y, l2), (x, l3)):
                if l is not None and len(l) > 1:
                    bad.append("%s/ lists %s: more than one entry at once" % (d, l))
            if l1 and l1 == l3:
                dirchecks += 1
                if l2:
                    bad.append("%s/%s listed before and after %s/ listed %s: one name in two places"
                               % (x, l1[0], y, l2))
        if final or len(bad) > 20:
            break
    if keep is not None:
        os.close(keep)
    print("reads %d gens %d dirchecks %d torn %d spanning %d" % (reads, len(gens), dirchecks,
                                                                   len(bad), spanning))
    for b in bad[:10]:
        print("FAIL: " + b)
    if bad:
        return 1
    if len(gens) < 3 or dirchecks == 0:
        print("FAIL: vacuous: saw %d generations, %d decisive directory checks" % (len(gens), dirchecks))
        return 1
    return 0


# -------------------------------------------------------------------- load
def cmd_load(a):
    rnd = random.Random(a.seed)
    os.makedirs(a.dir, exist_ok=True)
    files, dirs = [], [a.dir]
    ops = nbytes = 0
    t0 = time.monotonic()
    seq = 0
    while not os.path.exists(a.stop) and (a.max_seconds <= 0 or time.monotonic() - t0 < a.max_seconds):
        seq += 1
        r = rnd.random()
        try:
            if r < 0.30 or not files:
                d = rnd.choice(dirs)
                p = os.path.join(d, "f%06d" % seq)
                data = os.urandom(rnd.choice((0, 100, 1000, 1000, 4096, 4096, 20000, 65536)))
                with open(p, "wb") as f:
                    f.write(data)
                files.append(p)
                nbytes += len(data)
            elif r < 0.45:
                p = rnd.choice(files)
                data = os.urandom(rnd.randrange(1, 8192))
                with open(p, "ab") as f:
                    f.write(data)
                nbytes += len(data)
            elif r < 0.52:
                p = rnd.choice(files)
                fd = os.open(p, os.O_WRONLY)
                data = os.urandom(rnd.randrange(1, 4096))
                os.pwrite(fd, data, rnd.randrange(0, 30000))
                os.close(fd)
                nbytes += len(data)
            elif r < 0.58:
                os.truncate(rnd.choice(files), rnd.randrange(0, 50000))
            elif r < 0.66:
                i = rnd.randrange(len(files))
                np = os.path.join(rnd.choice(dirs), "m%06d" % seq)
                os.rename(files[i], np)
                files[i] = np
            elif r < 0.70:
                p = rnd.choice(files)
                np = os.path.join(rnd.choice(dirs), "l%06d" % seq)
                os.link(p, np)
                files.append(np)
            elif r < 0.78 and len(files) > 20:
                p = files.pop(rnd.randrange(len(files)))
                os.unlink(p)
            elif r < 0.82 and len(dirs) < 30:
                p = os.path.join(rnd.choice(dirs), "d%06d" % seq)
                os.mkdir(p)
                dirs.append(p)
            elif r < 0.84:
                p = os.path.join(rnd.choice(dirs), "s%06d" % seq)
                os.symlink("target-%d" % seq, p)
            elif r < 0.90:
                os.chmod(rnd.choice(files), rnd.choice((0o600, 0o644, 0o755, 0o640)))
            elif r < 0.95:
                t = rnd.randrange(1_000_000_000, 1_700_000_000) * 1_000_000_000 + rnd.randrange(10**9)
                os.utime(rnd.choice(files), ns=(t, t))
            else:
                os.setxattr(rnd.choice(files), "user.k%d" % rnd.randrange(4), os.urandom(rnd.randrange(1, 64)))
            ops += 1
        except FileNotFoundError:
            pass
    print("ops %d bytes %d" % (ops, nbytes))
    return 0


# ----------------------------------------------------------------- rewrite
def cmd_rewrite(a):
    """Keeps changing the files DIR/blob* (that a snapshot is copying): 64 KiB pwrites
    at random offsets, truncates, unlink + re-create, renames back and forth."""
    rnd = random.Random(a.seed)
    names = sorted(n for n in os.listdir(a.dir) if n.startswith("blob"))
    if not names:
        print("FAIL: no blob* files in %s" % a.dir)
        return 1
    n = 0
    while not os.path.exists(a.stop):
        r = rnd.random()
        p = os.path.join(a.dir, rnd.choice(names))
        try:
            if r < 0.7:
                fd = os.open(p, os.O_WRONLY)
                os.pwrite(fd, os.urandom(65536), rnd.randrange(0, 2 << 20))
                os.close(fd)
            elif r < 0.8:
                os.truncate(p, rnd.randrange(0, 2 << 20))
            elif r < 0.9:
                os.rename(p, p + ".moving")
                os.rename(p + ".moving", p)
            else:
                os.unlink(p)
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
                os.write(fd, os.urandom(100000))
                os.close(fd)
            n += 1
        except FileNotFoundError:
            pass
    print("rewrites %d" % n)
    return 0


# -------------------------------------------------------------------- hold
def cmd_hold(a):
    """Opens DIR/keep and DIR itself (on a slave mount), creates READY, waits for GO,
    then prints one JSON object of what the still-open descriptors show."""
    fk = os.open(os.path.join(a.dir, "keep"), os.O_RDONLY)
    fd = os.open(a.dir, os.O_RDONLY | os.O_DIRECTORY)
    os.pread(fk, 1 << 16, 0)
    os.listdir(fd)
    open(a.ready, "w").close()
    t0 = time.monotonic()
    while not os.path.exists(a.go):
        if time.monotonic() - t0 > 120:
            print(json.dumps({"error": "no GO file within 120 s"}))
            return 1
        time.sleep(0.02)
    out = {}

    def get(k, f):
        try:
            out[k] = f()
        except OSError as e:
            out[k] = "ERROR %s" % errno.errorcode.get(e.errno, e.errno)
    get("old_fd", lambda: os.pread(fk, 1 << 16, 0).decode(errors="replace"))
    get("old_fd_fstat_size", lambda: os.fstat(fk).st_size)
    get("old_dirfd_list", lambda: sorted(os.listdir(fd)))
    get("fresh", lambda: open(os.path.join(a.dir, "keep"), "rb").read().decode(errors="replace"))
    get("fresh_list", lambda: sorted(os.listdir(a.dir)))
    print(json.dumps(out, sort_keys=True))
    return 0


# ------------------------------------------------------------------- erofs
def cmd_erofs(a):
    m = a.mnt
    f = os.path.join(m, a.file)
    d = os.path.join(m, a.dir)
    checks = [
        ("create (open O_CREAT)", lambda: os.close(os.open(os.path.join(m, "new_file"), os.O_WRONLY | os.O_CREAT, 0o644))),
        ("open existing O_WRONLY", lambda: os.close(os.open(f, os.O_WRONLY))),
        ("open existing O_RDWR", lambda: os.close(os.open(f, os.O_RDWR))),
        ("open O_APPEND (echo >>)", lambda: os.close(os.open(f, os.O_WRONLY | os.O_APPEND))),
        ("open O_TRUNC", lambda: os.close(os.open(f, os.O_WRONLY | os.O_TRUNC))),
        ("truncate", lambda: os.truncate(f, 0)),
        ("mkdir", lambda: os.mkdir(os.path.join(m, "new_dir"))),
        ("rmdir", lambda: os.rmdir(d)),
        ("unlink (rm)", lambda: os.unlink(f)),
        ("rename (mv)", lambda: os.rename(f, os.path.join(m, "moved"))),
        ("link", lambda: os.link(f, os.path.join(m, "hard"))),
        ("symlink", lambda: os.symlink("x", os.path.join(m, "sym"))),
        ("mknod fifo", lambda: os.mkfifo(os.path.join(m, "fifo"))),
        ("chmod", lambda: os.chmod(f, 0o600)),
        ("chown", lambda: os.chown(f, 1, 1)),
        ("utime (touch)", lambda: os.utime(f, (1, 1))),
        ("setxattr", lambda: os.setxattr(f, "user.x", b"1")),
        ("removexattr", lambda: os.removexattr(f, "user.x")),
    ]
    bad = 0
    for label, fn in checks:
        try:
            fn()
            print("FAIL: %s on the slave mount succeeded" % label)
            bad += 1
        except OSError as e:
            if e.errno == errno.EROFS:
                print("ok: %s -> EROFS" % label)
            else:
                print("FAIL: %s -> %s (%s), want EROFS" % (label, errno.errorcode.get(e.errno, e.errno), e.strerror))
                bad += 1
    return 1 if bad else 0


# ------------------------------------------------------------------- sync
def cmd_fsync_kill(a):
    h = hashlib.sha256()
    fd = os.open(a.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for i in range(a.mb):
        blk = hashlib.sha256(b"%d" % i).digest() * (1048576 // 32)
        os.write(fd, blk)
        h.update(blk)
    t0 = time.monotonic()
    os.fsync(fd)
    os.kill(a.pid, signal.SIGKILL)
    at = time.time()
    ms = (time.monotonic() - t0) * 1000
    print("sha256 %s size %d fsync_ms %.1f returned_at %.6f" % (h.hexdigest(), a.mb * 1048576, ms, at))
    return 0


def cmd_timed_fsync(a):
    fd = os.open(a.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, os.urandom(a.bytes))
    t0 = time.monotonic()
    os.fsync(fd)
    ms = (time.monotonic() - t0) * 1000
    os.close(fd)
    print("fsync_ms %.1f" % ms)
    return 0


def cmd_strict_write(a):
    marker = os.urandom(8).hex()
    data = ("strict-marker-%s\n" % marker).encode() * 3
    fd = os.open(a.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    t0 = time.monotonic()
    n = os.write(fd, data)
    at = time.time()
    ms = (time.monotonic() - t0) * 1000
    out = subprocess.run([a.replfs, "journal", "dump", a.store], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=60)
    name = os.path.basename(a.path)
    found = False
    for line in out.stdout.decode(errors="replace").splitlines():
        f = line.split()
        if "write" in f and any(x == name or x.endswith("/" + name) for x in f) and ("len=%d" % n) in f:
            found = True
    os.close(fd)
    print("write_ms %.1f found %s returned_at %.6f" % (ms, "yes" if found else "no", at))
    if not found:
        print("FAIL: journal dump of %s (exit %d) has no 'write %s ... len=%d' record right after write() returned; its tail:"
              % (a.store, out.returncode, name, n))
        for line in out.stdout.decode(errors="replace").splitlines()[-5:]:
            print("    " + line)
        if out.stderr:
            print("    stderr: " + out.stderr.decode(errors="replace")[:300])
        return 1
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("fresh")
    s.add_argument("master"); s.add_argument("slave")
    s.add_argument("--replfs", required=True)
    s.add_argument("--n", type=int, default=200)
    s.add_argument("--timeout", type=float, default=10)
    s.add_argument("--no-wait", action="store_true",
                   help="read on the slave without waiting for applied_lsn (checks the checker: must fail)")
    s = sub.add_parser("patwrite")
    s.add_argument("dir"); s.add_argument("--files", type=int, required=True)
    s.add_argument("--size", type=int, default=32768)
    s = sub.add_parser("patread")
    s.add_argument("dir"); s.add_argument("--stop", required=True)
    s.add_argument("--size", type=int, default=32768)
    s = sub.add_parser("atomic-write")
    s.add_argument("dir"); s.add_argument("--stop", required=True)
    s.add_argument("--pages", type=int, default=16)
    s = sub.add_parser("atomic-read")
    s.add_argument("dir"); s.add_argument("--stop", required=True)
    s.add_argument("--pages", type=int, default=16)
    s = sub.add_parser("load")
    s.add_argument("dir"); s.add_argument("--stop", required=True)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--max-seconds", type=float, default=0)
    s = sub.add_parser("rewrite")
    s.add_argument("dir"); s.add_argument("--stop", required=True)
    s.add_argument("--seed", type=int, default=1)
    s = sub.add_parser("hold")
    s.add_argument("dir"); s.add_argument("--ready", required=True); s.add_argument("--go", required=True)
    s = sub.add_parser("erofs")
    s.add_argument("mnt"); s.add_argument("--file", required=True); s.add_argument("--dir", required=True)
    s = sub.add_parser("fsync-kill")
    s.add_argument("path"); s.add_argument("--mb", type=int, default=8); s.add_argument("--pid", type=int, required=True)
    s = sub.add_parser("timed-fsync")
    s.add_argument("path"); s.add_argument("--bytes", type=int, default=4096)
    s = sub.add_parser("strict-write")
    s.add_argument("path"); s.add_argument("--replfs", required=True); s.add_argument("--store", required=True)
    a = p.parse_args()
    fn = {"fresh": cmd_fresh, "patwrite": cmd_patwrite, "patread": cmd_patread, "load": cmd_load,
          "rewrite": cmd_rewrite,
          "atomic-write": cmd_atomic_write, "atomic-read": cmd_atomic_read, "hold": cmd_hold, "erofs": cmd_erofs, "fsync-kill": cmd_fsync_kill, "timed-fsync": cmd_timed_fsync,
          "strict-write": cmd_strict_write}[a.cmd]
    return fn(a)


if __name__ == "__main__":
    sys.exit(main())
