#!/usr/bin/env python3
"""Crash-test workload and checker for replfs (python3 stdlib only).

  workload.py run   --mnt MNT --logs LOGDIR --iter N --seed S [--workers W] [--max-seconds T]
  workload.py check --mnt MNT --logs LOGDIR --iter N --tmp DIR

RUN forks, in its own process group (os.setpgrp, so the test can kill the lot):
  * W filesystem workers (default 3; worker 2 drops to uid/gid 2002), each in its own
    subtree MNT/itNNN/wK, doing a seeded random mix of create / write / append /
    overwrite / O_TRUNC / truncate grow+shrink / rename (new name, over an existing
    name, RENAME_NOREPLACE, RENAME_EXCHANGE, directories) / link / unlink / mkdir /
    rmdir (also of non-empty dirs: ENOTEMPTY) / symlink / mkfifo / set+removexattr
    (also XATTR_CREATE/REPLACE failures) / chmod / chown / utimes / fallocate (several
    modes) / mmap writes / unlink-while-open / fsync / fdatasync. Each worker is the
    only process touching its subtree, so it keeps an exact model of it and checks
    what it reads back (a mismatch while the mount is alive is an ANOMALY);
  * an SQLite process updating MNT/db/wal.db (journal_mode=WAL) and MNT/db/del.db
    (journal_mode=DELETE), synchronous=EXTRA, in transactions;
  * a cleaner removing the subtrees of iteration N-3 (bounded tree size).
It writes LOGDIR/itNNN.pids and then LOGDIR/itNNN.ready.

Guarantee logs (outside the mount, one JSON object per line, each line written with
one write() and fsync()ed before the workload goes on; a torn last line is ignored):
  {"t":"seal", ...}    a regular file with one name was moved into wK/sealed/, then
                       fsync(file), fsync(sealed/), fsync(old parent) returned. The
                       worker never touches it again, so after any crash it must have
                       exactly: size, sha256, mode, uid, gid, user.* xattrs (and its
                       mtime, when the worker's view of it was never aliased by a
                       hard link).
  {"t":"append", ...}  every 64-byte record (w, it, seq' <= seq) this worker appended
                       with O_APPEND to MNT/shared/applog is there, after fdatasync.
  {"t":"sql", ...}     COMMIT of the transaction making rows 1..k returned.
Anomalies (live model mismatches, unexpected errors): LOGDIR/itNNN.<who>.anomaly.

CHECK verifies every guarantee of iteration N (seals) and of all iterations (applog
records, SQLite row counts), and runs PRAGMA integrity_check on copies of both
databases (copied out of the mount with their -wal / -journal, so SQLite's own
recovery runs on the copy and the mount is not modified). Prints one "FAIL: ..."
line per violation; exit status 1 if any.
"""
import argparse
import ctypes
import errno
import glob
import hashlib
import json
import mmap
import os
import platform
import random
import shutil
import sqlite3
import stat
import sys
import time
import traceback

libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
SYS_renameat2 = {"x86_64": 316, "aarch64": 276}.get(platform.machine())
NONROOT_ID = 2002
REC = 64  # shared applog record size
DEAD = {errno.ENOTCONN, errno.ECONNABORTED, errno.ENODEV}


def _check(ret):
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return ret


def renameat2(old, new, flags):
    if SYS_renameat2 is None:
        f = libc.renameat2
        f.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                      ctypes.c_uint]
        return _check(f(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags))
    f = libc.syscall
    f.restype = ctypes.c_long
    return _check(f(ctypes.c_long(SYS_renameat2), ctypes.c_int(AT_FDCWD),
                    ctypes.c_char_p(os.fsencode(old)), ctypes.c_int(AT_FDCWD),
                    ctypes.c_char_p(os.fsencode(new)), ctypes.c_uint(flags)))


def fallocate(fd, mode, off, length):
    f = libc.fallocate
    f.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    f.restype = ctypes.c_int
    return _check(f(fd, mode, off, length))


def sha(b):
    return hashlib.sha256(b).hexdigest()


def itdir(n):
    return "it%03d" % n


class GLog:
    """Guarantee log outside the mount: one write() + fsync() per line."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def put(self, **obj):
        os.write(self.fd, (json.dumps(obj, sort_keys=True) + "\n").encode())
        os.fsync(self.fd)


class Anomaly(Exception):
    pass


class Ctx:
    def __init__(self, mnt, logs, it, who):
        self.mnt = mnt
        self.logs = logs
        self.it = it
        self.who = who
        self.dev = os.stat(mnt).st_dev
        # opened now: worker 2 cannot create files in LOGDIR after dropping root
        self.afd = os.open(os.path.join(logs, "%s.%s.anomaly" % (itdir(it), who)),
                           os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def alive(self):
        try:
            os.statvfs(self.mnt)
            return os.stat(self.mnt).st_dev == self.dev
        except OSError:
            return False

    def anomaly(self, msg):
        os.write(self.afd, (msg.rstrip("\n") + "\n").encode("utf-8", "backslashreplace"))
        os.fsync(self.afd)

    def guard(self, fn):
        """Runs fn; errors after the daemon died are the expected end of the run."""
        try:
            fn()
            return 0
        except BaseException as e:  # noqa: B902 - also sqlite3 errors, Anomaly
            if isinstance(e, KeyboardInterrupt):
                raise
            if not self.alive():
                return 0
            if isinstance(e, OSError) and e.errno in DEAD:
                return 0
            self.anomaly("%s: %s\n%s" % (self.who, e, traceback.format_exc()))
            return 3


# ---------------------------------------------------------------------------
# Filesystem worker with an exact model of its subtree
# ---------------------------------------------------------------------------

class Node:
    __slots__ = ("kind", "data", "mode", "uid", "gid", "xattrs", "target", "tainted", "id")
    _ids = 0

    def __init__(self, kind, mode, uid, gid, data=None, target=None):
        Node._ids += 1
        self.id = Node._ids
        self.kind = kind          # f d l p
        self.data = bytearray(data or b"")
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.xattrs = {}
        self.target = target
        self.tainted = False      # ever had two names (kernel attrs may alias)


ODD = ["sp ace", "ü-umlaut", "tab\tname", "nl\nname", "back\\slash", "%percent", "-dash",
       "quote'\"", "x" * 200, "\u65e5\u672c"]


class FsWorker:
    def __init__(self, ctx, k, seed, glog, max_seconds, nonroot):
        self.c = ctx
        self.k = k
        self.rng = random.Random(seed)
        self.g = glog
        self.deadline = time.monotonic() + max_seconds
        self.nonroot = nonroot
        self.uid = NONROOT_ID if nonroot else 0
        self.gid = NONROOT_ID if nonroot else 0
        self.rel = os.path.join(itdir(ctx.it), "w%d" % k)      # relative to mnt
        self.root = os.path.join(ctx.mnt, self.rel)
        self.names = {}   # path relative to self.root -> Node ("" is the root)
        self.cnt = 0
        self.seq = 0
        self.appfd = -1
        self.total = 0

    # -- model helpers -----------------------------------------------------
    def P(self, p):
        return os.path.join(self.root, p) if p else self.root

    @staticmethod
    def parent(p):
        return p.rsplit("/", 1)[0] if "/" in p else ""

    def protected(self, p):
        return p in ("", "sealed", "orphans") or p.startswith("sealed/") or \
            p.startswith("orphans/")

    def children(self, d):
        return [p for p in self.names if p and self.parent(p) == d]

    def nlink(self, n):
        return sum(1 for v in self.names.values() if v is n)

    def pick(self, pred):
        c = [p for p, n in self.names.items() if not self.protected(p) and pred(p, n)]
        return self.rng.choice(c) if c else None

    def dirs(self, maxdepth=4):
        return [p for p, n in self.names.items() if n.kind == "d" and
                (p == "" or not self.protected(p)) and p.count("/") < maxdepth]

    def newname(self, prefix):
        self.cnt += 1
        base = "%s%d" % (prefix, self.cnt)
        if self.rng.random() < 0.06:
            base = self.rng.choice(ODD)[:60] + "." + base
        return base

    def newpath(self, prefix, parent=None):
        if parent is None:
            parent = self.rng.choice(self.dirs())
        return (parent + "/" if parent else "") + self.newname(prefix)

    def owner_for(self, parent, isdir, mode):
        pn = self.names[parent]
        uid, gid = self.uid, self.gid
        if pn.mode & stat.S_ISGID:
            gid = pn.gid
            if isdir:
                mode |= stat.S_ISGID
        return uid, gid, mode

    def fmode(self):
        m = self.rng.choice([0o644, 0o600, 0o664, 0o755, 0o640, 0o444, 0o000, 0o777, 0o711])
        m = m if self.rng.random() < 0.7 else self.rng.randrange(0o1000)
        return m | 0o600 if self.nonroot else m

    def dmode(self):
        m = self.rng.choice([0o755, 0o700, 0o750, 0o777, 0o1777, 0o2775, 0o2755, 0o500, 0o000])
        if self.rng.random() < 0.2:
            m = self.rng.randrange(0o10000) & ~0o4000
        return m | 0o700 if self.nonroot else m

    def data(self, lo=0, hi=16384):
        if self.rng.random() < 0.01:
            n = self.rng.randrange(128 << 10, 1 << 20)
        else:
            n = self.rng.randrange(lo, hi + 1)
        if self.rng.random() < 0.3:
            return bytes([self.rng.randrange(256)]) * n
        return self.rng.randbytes(n)

    def expect_err(self, fn, errs, what):
        try:
            fn()
        except OSError as e:
            if e.errno in errs:
                return e.errno
            raise
        raise Anomaly("%s: succeeded, expected %s" % (what, [errno.errorcode[x] for x in errs]))

    def move(self, src, dst):
        """Model of rename(src, dst) once dst is free (or already removed)."""
        moved = {}
        for p in list(self.names):
            if p == src or p.startswith(src + "/"):
                moved[dst + p[len(src):]] = self.names.pop(p)
        self.names.update(moved)

    def drop(self, p):
        for q in list(self.names):
            if q == p or q.startswith(p + "/"):
                del self.names[q]

    @staticmethod
    def related(a, b):
        return a == b or a.startswith(b + "/") or b.startswith(a + "/")

    # -- setup ---------------------------------------------------------------
    def setup(self):
        os.umask(0)
        rn = Node("d", 0o755, self.uid, self.gid)
        self.names[""] = rn
        for d in ("sealed", "orphans"):
            os.mkdir(self.P(d), 0o755)
            self.names[d] = Node("d", 0o755, self.uid, self.gid)
        # make the subtree's names durable so seals below it are meaningful
        for p in (self.root, os.path.dirname(self.root)):
            fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(fd)
            os.close(fd)
        self.appfd = os.open(os.path.join(self.c.mnt, "shared", "applog"),
                             os.O_WRONLY | os.O_APPEND)

    # -- operations ----------------------------------------------------------
    def op_create(self):
        parent = self.rng.choice(self.dirs())
        p = self.newpath("f", parent)
        mode = self.fmode()
        uid, gid, mode = self.owner_for(parent, False, mode)
        d = self.data()
        fd = os.open(self.P(p), os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
        self.names[p] = n = Node("f", mode, uid, gid)
        try:
            step = self.rng.choice([len(d) or 1, 4096, 65536, 1 << 20])
            for off in range(0, len(d), step):
                os.write(fd, d[off:off + step])
                n.data += d[off:off + step]
            if self.rng.random() < 0.1:
                os.fdatasync(fd)
        finally:
            os.close(fd)
        self.total += len(d)

    def op_otrunc(self):
        p = self.pick(lambda p, n: n.kind == "f")
        if not p:
            return
        n = self.names[p]
        d = self.data(0, 8192)
        fd = os.open(self.P(p), os.O_WRONLY | os.O_TRUNC | (os.O_CREAT if self.rng.random() < .5
                                                             else 0), 0o600)
        n.data = bytearray()
        try:
            os.write(fd, d)
            n.data += d
        finally:
            os.close(fd)

    def op_append(self):
        p = self.pick(lambda p, n: n.kind == "f")
        if not p:
            return
        n = self.names[p]
        d = self.data(1, 8192)
        fd = os.open(self.P(p), os.O_WRONLY | os.O_APPEND)
        try:
            w = os.write(fd, d)
            n.data += d[:w]
        finally:
            os.close(fd)
        self.total += len(d)

    def op_pwrite(self):
        p = self.pick(lambda p, n: n.kind == "f")
        if not p:
            return
        n = self.names[p]
        off = self.rng.randrange(len(n.data) + 8192)
        d = self.data(1, 16384)
        fd = os.open(self.P(p), os.O_RDWR)
        try:
            w = os.pwrite(fd, d, off)
            if len(n.data) < off:
                n.data += bytes(off - len(n.data))
            n.data[off:off + w] = d[:w]
            if self.rng.random() < 0.1:
                os.fsync(fd)
        finally:
            os.close(fd)
        self.total += len(d)

    def op_truncate(self):
        p = self.pick(lambda p, n: n.kind == "f")
        if not p:
            return
        n = self.names[p]
        size = self.rng.choice([0, self.rng.randrange(len(n.data) + 1),
                                len(n.data) + self.rng.randrange(1, 20000)])
        if self.rng.random() < 0.5:
            os.truncate(self.P(p), size)
        else:
            fd = os.open(self.P(p), os.O_WRONLY)
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)
        if size < len(n.data):
            del n.data[size:]
        else:
            n.data += bytes(size - len(n.data))

    def op_fallocate(self):
        p = self.pick(lambda p, n: n.kind == "f")
        if not p:
            return
        n = self.names[p]
        size = len(n.data)
        mode = self.rng.choice([0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                FALLOC_FL_ZERO_RANGE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE])
        off = self.rng.randrange(size + 8192)
        ln = self.rng.randrange(1, 65536)
        fd = os.open(self.P(p), os.O_RDWR)
        try:
            fallocate(fd, mode, off, ln)
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
                return
            raise
        finally:
            os.close(fd)
        end = off + ln
        if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
            lim = min(end, len(n.data))
            if off < lim:
                n.data[off:lim] = bytes(lim - off)
        if not mode & FALLOC_FL_KEEP_SIZE and end > len(n.data):
            n.data += bytes(end - len(n.data))

    def op_mmap(self):
        p = self.pick(lambda p, n: n.kind == "f" and 0 < len(n.data) and not n.tainted)
        if not p:
            return
        n = self.names[p]
        off = self.rng.randrange(len(n.data))
        d = self.rng.randbytes(min(self.rng.randrange(1, 9000), len(n.data) - off))
        fd = os.open(self.P(p), os.O_RDWR)
        try:
            m = mmap.mmap(fd, len(n.data), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            m[off:off + len(d)] = d
            m.flush()
            m.close()
        finally:
            os.close(fd)
        n.data[off:off + len(d)] = d

    def op_rename(self):
        r = self.rng.random()
        if r < 0.35:       # any entry to a new name
            src = self.pick(lambda p, n: True)
            if not src:
                return
            parent = self.rng.choice([d for d in self.dirs()
                                      if d != src and not d.startswith(src + "/")])
            dst = self.newpath("r", parent)
            if self.rng.random() < 0.3:
                renameat2(self.P(src), self.P(dst), RENAME_NOREPLACE)
            else:
                os.rename(self.P(src), self.P(dst))
            self.move(src, dst)
        elif r < 0.6:      # non-directory over an existing non-directory
            src = self.pick(lambda p, n: n.kind != "d")
            dst = self.pick(lambda p, n: n.kind != "d")
            if not src or not dst or src == dst:
                return
            if self.rng.random() < 0.15:
                self.expect_err(lambda: renameat2(self.P(src), self.P(dst), RENAME_NOREPLACE),
                                (errno.EEXIST,), "rename NOREPLACE %s -> %s" % (src, dst))
                return
            os.rename(self.P(src), self.P(dst))
            if self.names[src] is self.names[dst]:
                return     # hard links of one inode: rename does nothing
            del self.names[dst]
            self.move(src, dst)
        elif r < 0.8:      # directory over a directory
            src = self.pick(lambda p, n: n.kind == "d")
            dst = self.pick(lambda p, n: n.kind == "d")
            if not src or not dst or self.related(src, dst):
                return
            if self.children(dst):
                self.expect_err(lambda: os.rename(self.P(src), self.P(dst)),
                                (errno.ENOTEMPTY, errno.EEXIST), "rename dir %s over non-empty %s"
                                % (src, dst))
                return
            if not self.hidden_tolerant(lambda: os.rename(self.P(src), self.P(dst)), dst):
                return
            del self.names[dst]
            self.move(src, dst)
        else:              # RENAME_EXCHANGE
            a = self.pick(lambda p, n: True)
            b = self.pick(lambda p, n: True)
            if not a or not b or self.related(a, b):
                return
            renameat2(self.P(a), self.P(b), RENAME_EXCHANGE)
            tmp = "\0tmp"
            self.move(a, tmp)
            self.move(b, a)
            self.move(tmp, b)

    def op_link(self):
        src = self.pick(lambda p, n: n.kind in "fl")
        if not src:
            return
        dst = self.newpath("h")
        os.link(self.P(src), self.P(dst), follow_symlinks=False)
        n = self.names[src]
        n.tainted = True
        self.names[dst] = n

    def op_unlink(self):
        p = self.pick(lambda p, n: n.kind != "d")
        if not p:
            return
        os.unlink(self.P(p))
        del self.names[p]

    def op_mkdir(self):
        parent = self.rng.choice(self.dirs(3))
        p = self.newpath("d", parent)
        mode = self.dmode()
        os.mkdir(self.P(p), mode)
        # mkdir(2) keeps only the permission bits and the sticky bit; S_ISGID comes
        # from a setgid parent alone
        uid, gid, mode = self.owner_for(parent, True, mode & 0o1777)
        self.names[p] = Node("d", mode, uid, gid)

    def op_rmdir(self):
        p = self.pick(lambda p, n: n.kind == "d")
        if not p:
            return
        if self.children(p):
            self.expect_err(lambda: os.rmdir(self.P(p)), (errno.ENOTEMPTY, errno.EEXIST),
                            "rmdir non-empty %s" % p)
            return
        if self.hidden_tolerant(lambda: os.rmdir(self.P(p)), p):
            del self.names[p]

    def hidden_tolerant(self, fn, d):
        """fn removes/replaces the model-empty directory d. libfuse renames an unlinked
        file that is still open to .fuse_hiddenXXX, and the kernel sends RELEASE
        asynchronously after close(), so d may briefly hold such a file: ENOTEMPTY is
        then no anomaly (returns False: nothing happened)."""
        for _ in range(20):
            try:
                fn()
                return True
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                left = os.listdir(self.P(d))
                if not left or any(not x.startswith(".fuse_hidden") for x in left):
                    raise
                time.sleep(0.01)
        return False

    def op_symlink(self):
        parent = self.rng.choice(self.dirs())
        p = self.newpath("l", parent)
        t = self.rng.choice(["f1", "../x/y", "/nonexistent/abs", "d3/f4", ".", "..",
                             "a" * self.rng.randrange(1, 256), "ü/\t/t",
                             "b/" * self.rng.randrange(1, 2048),   # up to 4095 bytes
                             os.path.basename(self.pick(lambda p, n: True) or "z")])
        os.symlink(t, self.P(p))
        uid, gid, _ = self.owner_for(parent, False, 0o777)
        self.names[p] = Node("l", 0o777, uid, gid, target=t)

    def op_mkfifo(self):
        parent = self.rng.choice(self.dirs())
        p = self.newpath("p", parent)
        mode = self.fmode()
        os.mkfifo(self.P(p), mode)
        uid, gid, mode = self.owner_for(parent, False, mode)
        self.names[p] = Node("p", mode, uid, gid)

    def op_xattr(self):
        p = self.pick(lambda p, n: n.kind in "fd")
        if not p:
            p = ""
        n = self.names[p]
        name = "user.k%d" % self.rng.randrange(5)
        r = self.rng.random()
        if r < 0.55:
            v = self.rng.randbytes(self.rng.choice([0, 1, 16, 100, 300]))
            flags = self.rng.choice([0, 0, os.XATTR_CREATE, os.XATTR_REPLACE])
            if flags == os.XATTR_CREATE and name in n.xattrs:
                self.expect_err(lambda: os.setxattr(self.P(p), name, v, flags),
                                (errno.EEXIST,), "setxattr CREATE existing %s %s" % (p, name))
                return
            if flags == os.XATTR_REPLACE and name not in n.xattrs:
                self.expect_err(lambda: os.setxattr(self.P(p), name, v, flags),
                                (errno.ENODATA,), "setxattr REPLACE missing %s %s" % (p, name))
                return
            os.setxattr(self.P(p), name, v, flags)
            n.xattrs[name] = v
        else:
            if name not in n.xattrs:
                self.expect_err(lambda: os.removexattr(self.P(p), name), (errno.ENODATA,),
                                "removexattr missing %s %s" % (p, name))
                return
            os.removexattr(self.P(p), name)
            del n.xattrs[name]

    def op_chmod(self):
        p = self.pick(lambda p, n: n.kind in "fdp")
        if not p:
            return
        n = self.names[p]
        m = self.dmode() if n.kind == "d" else self.fmode()
        os.chmod(self.P(p), m)
        n.mode = m

    def op_chown(self):
        if self.nonroot:
            return
        p = self.pick(lambda p, n: True)
        if not p:
            return
        n = self.names[p]
        ids = [0, 1000, 1001, 1003, 65534, 4242]
        uid = self.rng.choice(ids + [-1])
        gid = self.rng.choice(ids + [-1])
        os.chown(self.P(p), uid, gid, follow_symlinks=False)
        if uid != -1:
            n.uid = uid
        if gid != -1:
            n.gid = gid

    def op_utime(self):
        p = self.pick(lambda p, n: n.kind in "fd")
        if not p:
            return
        if self.rng.random() < 0.3:
            os.utime(self.P(p))
        else:
            t = self.rng.randrange(10**9, 2 * 10**9) * 10**9 + self.rng.randrange(10**9)
            os.utime(self.P(p), ns=(t - 12345, t))

    def op_fsync(self):
        p = self.pick(lambda p, n: n.kind in "fd")
        if p is None:
            p = ""
        n = self.names[p]
        fd = os.open(self.P(p), os.O_RDONLY | (os.O_DIRECTORY if n.kind == "d" else 0))
        try:
            (os.fdatasync if self.rng.random() < 0.4 else os.fsync)(fd)
        finally:
            os.close(fd)

    def op_orphan(self):
        p = "orphans/" + self.newname("o")
        fd = os.open(self.P(p), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        try:
            os.write(fd, self.rng.randbytes(3000))
            os.unlink(self.P(p))
            os.write(fd, b"after unlink")
            if os.pread(fd, 12, 3000) != b"after unlink":
                raise Anomaly("orphan %s: read back after unlink differs" % p)
        finally:
            os.close(fd)

    def op_verify(self):
        p = self.pick(lambda p, n: n.kind in "fd" and not n.tainted)
        if p is None:
            p = ""
        n = self.names[p]
        st = os.stat(self.P(p), follow_symlinks=False)
        want = (n.mode, n.uid, n.gid)
        got = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        if got != want:
            raise Anomaly("live stat of %r: mode/uid/gid %s, model %s" % (p, got, want))
        xa = {x: os.getxattr(self.P(p), x) for x in os.listxattr(self.P(p))
              if x.startswith("user.")}
        if xa != n.xattrs:
            raise Anomaly("live xattrs of %r: %s, model %s" % (p, sorted(xa), sorted(n.xattrs)))
        if n.kind == "d":
            got = sorted(x for x in os.listdir(self.P(p)) if not x.startswith(".fuse_hidden"))
            want = sorted(os.path.basename(c) for c in self.children(p))
            if got != want:
                raise Anomaly("live listing of %r: %s, model %s" % (p, got, want))
        else:
            with open(self.P(p), "rb") as f:
                d = f.read()
            if d != n.data or st.st_size != len(n.data):
                raise Anomaly("live content of %r: size %d/%d sha %s, model size %d sha %s"
                              % (p, st.st_size, len(d), sha(d), len(n.data), sha(n.data)))

    def op_verify_link(self):
        p = self.pick(lambda p, n: n.kind == "l")
        if not p:
            return
        t = os.readlink(self.P(p))
        if t != self.names[p].target:
            raise Anomaly("live readlink %r: %r, model %r" % (p, t, self.names[p].target))

    def op_seal(self):
        p = self.pick(lambda p, n: n.kind == "f" and self.nlink(n) == 1)
        if not p:
            return
        n = self.names[p]
        dst = "sealed/" + self.newname("s")
        os.rename(self.P(p), self.P(dst))
        del self.names[p]
        self.names[dst] = n
        fd = os.open(self.P(dst), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        for d in ("sealed", self.parent(p)):
            fd = os.open(self.P(d), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        st = os.stat(self.P(dst))
        if not n.tainted and (st.st_size != len(n.data) or stat.S_IMODE(st.st_mode) != n.mode):
            raise Anomaly("sealed %r: live size/mode %d/%o, model %d/%o" %
                          (dst, st.st_size, stat.S_IMODE(st.st_mode), len(n.data), n.mode))
        self.g.put(t="seal", path=os.path.join(self.rel, dst), size=len(n.data),
                   sha=sha(n.data), mode=n.mode, uid=n.uid, gid=n.gid,
                   xattrs={k: v.hex() for k, v in sorted(n.xattrs.items())},
                   mtime_ns=None if n.tainted else st.st_mtime_ns)

    def op_shared_append(self):
        self.seq += 1
        rec = ("%d:%d:%d:" % (self.k, self.c.it, self.seq)).ljust(REC - 1, ".") + "\n"
        if os.write(self.appfd, rec.encode()) != REC:
            raise Anomaly("short O_APPEND write to shared/applog")
        if self.rng.random() < 0.15:
            os.fdatasync(self.appfd)
            self.g.put(t="append", w=self.k, it=self.c.it, seq=self.seq)

    OPS = [("create", 14), ("otrunc", 3), ("append", 8), ("pwrite", 8), ("truncate", 5),
           ("fallocate", 4), ("mmap", 2), ("rename", 10), ("link", 4), ("unlink", 5),
           ("mkdir", 5), ("rmdir", 3), ("symlink", 3), ("mkfifo", 1), ("xattr", 6),
           ("chmod", 4), ("chown", 3), ("utime", 3), ("fsync", 3), ("orphan", 1),
           ("verify", 6), ("verify_link", 1), ("seal", 4), ("shared_append", 6)]

    def run(self):
        self.setup()
        names = [o for o, _ in self.OPS]
        weights = [w for _, w in self.OPS]
        nops = 0
        while time.monotonic() < self.deadline and self.total < (200 << 20):
            op = self.rng.choices(names, weights)[0]
            if len(self.names) > 400 and op in ("create", "mkdir", "symlink", "mkfifo", "link"):
                op = "unlink"
            try:
                getattr(self, "op_" + op)()
            except OSError as e:
                if e.errno in DEAD or not self.c.alive():
                    raise
                raise Anomaly("op %s #%d failed unexpectedly: %s" % (op, nops, e)) from e
            nops += 1


# ---------------------------------------------------------------------------
# SQLite
# ---------------------------------------------------------------------------

def row_v(db, i):
    return hashlib.sha256(("%s:%d" % (db, i)).encode()).hexdigest()


def row_b(i):
    n = (i * 7919) % 3000 + 1
    return (hashlib.sha256(b"b%d" % i).digest() * (n // 32 + 1))[:n]


DBS = {"wal": ("wal.db", "WAL"), "del": ("del.db", "DELETE")}


def sql_open(path, mode):
    c = sqlite3.connect(path, isolation_level=None, timeout=30)
    got = c.execute("PRAGMA journal_mode=%s" % mode).fetchone()[0]
    if got.upper() != mode:
        raise Anomaly("%s: journal_mode=%s gave %s" % (path, mode, got))
    c.execute("PRAGMA synchronous=EXTRA")
    c.execute("BEGIN IMMEDIATE")
    c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT NOT NULL, "
              "b BLOB NOT NULL)")
    c.execute("CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
    c.execute("CREATE TABLE IF NOT EXISTS churn(id INTEGER PRIMARY KEY, x BLOB)")
    c.execute("CREATE INDEX IF NOT EXISTS t_v ON t(v)")
    c.execute("INSERT OR IGNORE INTO meta VALUES('n', 0)")
    c.execute("COMMIT")
    return c


def sqlite_worker(ctx, seed, glog, max_seconds):
    rng = random.Random(seed)
    deadline = time.monotonic() + max_seconds
    ddir = os.path.join(ctx.mnt, "db")
    conns = {k: sql_open(os.path.join(ddir, f), m) for k, (f, m) in DBS.items()}
    for k, c in conns.items():
        n = c.execute("SELECT v FROM meta WHERE k='n'").fetchone()[0]
        cnt, mx = c.execute("SELECT count(*), coalesce(max(id),0) FROM t").fetchone()
        if not (n == cnt == mx):
            raise Anomaly("db %s at start: meta n=%d count=%d max=%d" % (k, n, cnt, mx))
    while time.monotonic() < deadline:
        k = rng.choice(list(conns))
        c = conns[k]
        c.execute("BEGIN IMMEDIATE")
        n = c.execute("SELECT v FROM meta WHERE k='n'").fetchone()[0]
        m = rng.randrange(1, 25)
        c.executemany("INSERT INTO t VALUES(?,?,?)",
                      [(i, row_v(k, i), row_b(i)) for i in range(n + 1, n + m + 1)])
        c.execute("UPDATE meta SET v=? WHERE k='n'", (n + m,))
        c.executemany("INSERT INTO churn(x) VALUES(?)",
                      [(rng.randbytes(rng.randrange(10, 5000)),) for _ in range(rng.randrange(6))])
        c.execute("DELETE FROM churn WHERE id % 5 = ?", (rng.randrange(5),))
        c.execute("COMMIT")
        glog.put(t="sql", db=k, k=n + m)
        if k == "wal" and rng.random() < 0.05:
            c.execute("PRAGMA wal_checkpoint(%s)" % rng.choice(["PASSIVE", "TRUNCATE"]))


# ---------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------

def cleaner(ctx):
    for n in range(0, ctx.it - 2):
        p = os.path.join(ctx.mnt, itdir(n))
        if os.path.lexists(p):
            shutil.rmtree(p)


def cmd_run(a):
    os.setpgrp()
    os.umask(0)
    mnt = a.mnt
    it = a.iter
    pre = os.path.join(a.logs, itdir(it))
    ctx = Ctx(mnt, a.logs, it, "main")
    kids = []

    def setup():
        for d in ("shared", "db"):
            os.makedirs(os.path.join(mnt, d), exist_ok=True)
        fd = os.open(os.path.join(mnt, "shared", "applog"), os.O_WRONLY | os.O_CREAT, 0o666)
        os.close(fd)
        base = os.path.join(mnt, itdir(it))
        os.mkdir(base, 0o755)
        for k in range(a.workers):
            os.mkdir(os.path.join(base, "w%d" % k), 0o755)
            if k == 2:
                os.chown(os.path.join(base, "w%d" % k), NONROOT_ID, NONROOT_ID)

    if ctx.guard(setup):
        return 3
    if not ctx.alive():
        return 0

    def spawn(who, fn):
        pid = os.fork()
        if pid == 0:
            rc = 3
            try:
                c = Ctx(mnt, a.logs, it, who)
                rc = c.guard(lambda: fn(c))
            finally:
                os._exit(rc)
        kids.append(pid)

    def fs(k):
        def body(c):
            g = GLog("%s.w%d.log" % (pre, k))
            if k == 2:
                os.setgroups([])
                os.setgid(NONROOT_ID)
                os.setuid(NONROOT_ID)
            FsWorker(c, k, a.seed * 100 + k, g, a.max_seconds, k == 2).run()
        return body

    spawn("cleaner", cleaner)
    spawn("sqlite", lambda c: sqlite_worker(c, a.seed * 100 + 99,
                                            GLog("%s.sqlite.log" % pre), a.max_seconds))
    for k in range(a.workers):
        spawn("w%d" % k, fs(k))
    with open(pre + ".pids", "w") as f:
        f.write("".join("%d\n" % p for p in kids))
    with open(pre + ".ready", "w") as f:
        f.write("%d\n" % os.getpid())
    rc = 0
    for p in kids:
        _, st = os.waitpid(p, 0)
        if os.waitstatus_to_exitcode(st) not in (0,):
            rc = 3
    return rc


# ---------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------

def read_log(path):
    out = []
    with open(path, "rb") as f:
        data = f.read()
    for line in data.split(b"\n")[:-1]:      # the last piece has no newline: torn or empty
        out.append(json.loads(line))
    return out


def cmd_check(a):
    fails = []
    mnt, it = a.mnt, a.iter
    pre = os.path.join(a.logs, itdir(it))
    stats = {"seal": 0, "append": 0}

    # seals of this iteration
    for lp in sorted(glob.glob(pre + ".w*.log")):
        for g in read_log(lp):
            if g["t"] != "seal":
                continue
            stats["seal"] += 1
            p = os.path.join(mnt, g["path"])
            try:
                st = os.stat(p, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    fails.append("sealed file %s is not a regular file: mode %o" %
                                 (g["path"], st.st_mode))
                    continue
                with open(p, "rb") as f:
                    d = f.read()
                xa = {x: os.getxattr(p, x).hex() for x in os.listxattr(p)
                      if x.startswith("user.")}
            except OSError as e:
                fails.append("sealed file %s (fsynced) cannot be read: %s" % (g["path"], e))
                continue
            # nlink is not checked: a .fuse_hidden link of an unlinked-while-open name
            # may legitimately survive a crash
            got = {"size": st.st_size, "sha": sha(d), "read": len(d),
                   "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
                   "xattrs": xa}
            want = {"size": g["size"], "sha": g["sha"],
                    "read": g["size"], "mode": g["mode"], "uid": g["uid"], "gid": g["gid"],
                    "xattrs": g["xattrs"]}
            if g.get("mtime_ns") is not None:
                got["mtime_ns"] = st.st_mtime_ns
                want["mtime_ns"] = g["mtime_ns"]
            diff = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
            if diff:
                fails.append("sealed file %s differs from what was fsynced: %s" % (
                    g["path"], "; ".join("%s got %r want %r" % (k, v[0], v[1])
                                         for k, v in sorted(diff.items()))))

    # shared applog: all iterations so far
    want_app = {}
    for lp in glob.glob(os.path.join(a.logs, "it*.w*.log")):
        for g in read_log(lp):
            if g["t"] == "append":
                key = (g["w"], g["it"])
                want_app[key] = max(want_app.get(key, 0), g["seq"])
    ap = os.path.join(mnt, "shared", "applog")
    if want_app or os.path.exists(ap):
        with open(ap, "rb") as f:
            d = f.read()
        if len(d) % REC:
            fails.append("shared/applog size %d is not a multiple of %d (torn O_APPEND record)"
                         % (len(d), REC))
        have = {}
        for off in range(0, len(d) - len(d) % REC, REC):
            r = d[off:off + REC]
            try:
                w, i, s, rest = r.decode().split(":", 3)
                ok = rest == "." * len(rest[:-1]) + "\n" and len(r) == REC
                key = (int(w), int(i), int(s))
            except (ValueError, UnicodeDecodeError):
                ok = False
            if not ok:
                fails.append("shared/applog record at %d is garbage: %r" % (off, r[:40]))
                continue
            if key in have:
                fails.append("shared/applog record %s appears twice (at %d and %d)" %
                             (key, have[key], off))
            have[key] = off
        for (w, i), s in sorted(want_app.items()):
            stats["append"] += s
            missing = [x for x in range(1, s + 1) if (w, i, x) not in have]
            if missing:
                fails.append("shared/applog lacks fdatasync'ed records of worker %d iteration "
                             "%d: seq %s (of 1..%d)" % (w, i, missing[:10], s))

    # SQLite: all iterations so far
    want_k = {k: 0 for k in DBS}
    for lp in glob.glob(os.path.join(a.logs, "it*.sqlite.log")):
        for g in read_log(lp):
            want_k[g["db"]] = max(want_k[g["db"]], g["k"])
    for k, (fname, mode) in DBS.items():
        src = os.path.join(mnt, "db", fname)
        tdir = os.path.join(a.tmp, k)
        shutil.rmtree(tdir, ignore_errors=True)
        os.makedirs(tdir)
        if not os.path.exists(src):
            if want_k[k]:
                fails.append("sqlite %s: database file missing but %d rows were committed" %
                             (k, want_k[k]))
            continue
        for suf in ("", "-wal", "-journal"):
            if os.path.exists(src + suf):
                shutil.copyfile(src + suf, os.path.join(tdir, fname + suf))
        try:
            c = sqlite3.connect(os.path.join(tdir, fname), isolation_level=None)
            ic = [r[0] for r in c.execute("PRAGMA integrity_check").fetchall()]
            if ic != ["ok"]:
                fails.append("sqlite %s: integrity_check: %s" % (k, ic[:5]))
                continue
            tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
            if "t" not in tables or "meta" not in tables:
                if want_k[k]:
                    fails.append("sqlite %s: tables missing (%s) but %d rows were committed" %
                                 (k, sorted(tables), want_k[k]))
                continue
            cnt, mx = c.execute("SELECT count(*), coalesce(max(id),0) FROM t").fetchone()
            mrow = c.execute("SELECT v FROM meta WHERE k='n'").fetchone()
            n = mrow[0] if mrow else None
            if mx < want_k[k]:
                fails.append("sqlite %s: max id %d < %d committed and logged" %
                             (k, mx, want_k[k]))
            if not (cnt == mx == n):
                fails.append("sqlite %s: not atomic: count=%d max(id)=%d meta.n=%s" %
                             (k, cnt, mx, n))
            bad = 0
            for i, v, b in c.execute("SELECT id, v, b FROM t"):
                if v != row_v(k, i) or b != row_b(i):
                    bad += 1
                    if bad <= 3:
                        fails.append("sqlite %s: row %d has wrong content" % (k, i))
            c.close()
            stats["sql_" + k] = "%d rows (>= %d committed)" % (cnt, want_k[k])
        except sqlite3.DatabaseError as e:
            fails.append("sqlite %s: %s" % (k, e))

    # anomalies the workload saw while the mount was alive
    for ap in sorted(glob.glob(pre + ".*.anomaly")):
        if os.path.getsize(ap) == 0:
            continue
        with open(ap, errors="backslashreplace") as f:
            fails.append("workload anomaly (%s): %s" % (os.path.basename(ap), f.read()[:1500]))

    for f in fails:
        print("FAIL: " + f)
    print("checked: %s" % ", ".join("%s=%s" % kv for kv in sorted(stats.items())))
    return 1 if fails else 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    c = sub.add_parser("check")
    for p in (r, c):
        p.add_argument("--mnt", required=True)
        p.add_argument("--logs", required=True)
        p.add_argument("--iter", type=int, required=True)
    r.add_argument("--seed", type=int, required=True)
    r.add_argument("--workers", type=int, default=3)
    r.add_argument("--max-seconds", type=float, default=30)
    c.add_argument("--tmp", required=True)
    a = ap.parse_args()
    return cmd_run(a) if a.cmd == "run" else cmd_check(a)


if __name__ == "__main__":
    sys.exit(main())
