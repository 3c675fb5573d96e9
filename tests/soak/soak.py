#!/usr/bin/env python3
"""Random workload over every operation replfs journals (python3 stdlib only).

  soak.py DIR --seed S [--procs P] [--seconds T] [--stop FILE] [--tag X] [--no-link-special]

Runs P worker processes (default 2) on DIR (the master's mount, or a directory in it)
until T seconds passed or FILE exists. Each worker draws from its own random.Random
(seeded from S, the worker number and X), so the same seed gives the same sequence of
operations; the ops of the workers interleave, so contention on the same names is real.

Operations (weights in OPS): create, write at a random offset (also O_APPEND), truncate
(path and fd), fallocate (allocate, keep-size and punch-hole through libc fallocate(2)),
mkdir, rmdir, unlink, rename (files and directories, onto free names and over existing
targets, RENAME_NOREPLACE and RENAME_EXCHANGE through renameat2(2)), link, symlink,
chmod, chown, utimens (also on symlinks, without following), setxattr, removexattr,
mknod of a fifo, fsync. link() takes any non-directory, symlinks and fifos too (a
snapshot once sent their further names as separate inodes, and verify did not compare
link groups: both fixed); --no-link-special or SOAK_LINK_SPECIAL=0 in the environment
limits it to regular files again. Names come from a small namespace (a few directories deep, a
few dozen names) so that operations keep meeting each other's results; files stay
below ~1 MiB and the tree below ~MAX_ENTRIES entries.

Errors an operation may legitimately get on ANY filesystem (ENOENT, EEXIST, ENOTEMPTY,
EISDIR, ENOTDIR, EINVAL, ENODATA, EMLINK, EXDEV, EBUSY, ENAMETOOLONG, ELOOP, EPERM for
link/rename corner cases, ENXIO/ESPIPE on fifos; every open is O_NONBLOCK so a fifo never blocks) are counted. ENOTCONN / ECONNABORTED / ENODEV (the mount is
gone: the test killed the master) end the worker quietly with exit 3. Any other errno
(EIO, EROFS on the master, ENOSPC, ...) is a failure: printed, exit 1.

Output: one line per worker "worker W ops N errs E bytes B gone 0|1 by-op ..." and a
final "soak seed S ops N" line; exit 0 ok, 1 unexpected error, 3 the mount went away.
"""
import argparse
import ctypes
import ctypes.util
import errno
import os
import random
import stat
import sys
import time

MAX_ENTRIES = 600
DIRS = ["", "a", "b", "a/c", "b/d", "a/c/e"]
NAMES = ["f%d" % i for i in range(24)] + ["g%d" % i for i in range(6)]
NAMES_SET = set(NAMES)
OK_ERRNOS = {errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR,
             errno.EINVAL, errno.ENODATA, errno.EMLINK, errno.EXDEV, errno.EBUSY,
             errno.ENAMETOOLONG, errno.ELOOP, errno.EPERM, errno.EOPNOTSUPP,
             errno.ENXIO, errno.ESPIPE}
GONE_ERRNOS = {errno.ENOTCONN, errno.ECONNABORTED, errno.ENODEV}

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                            ctypes.c_uint]
AT_FDCWD = -100
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def c_fallocate(fd, mode, off, length):
    if _libc.fallocate(fd, mode, off, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def c_renameat2(a, b, flags):
    if _libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class Worker:
    def __init__(self, root, rnd, wid):
        self.root, self.rnd, self.wid = root, rnd, wid
        self.nbytes = 0
        self.seq = 0
        self.link_special = True

    def path(self, dirs=DIRS):
        d = self.rnd.choice(dirs)
        return os.path.join(self.root, d, self.rnd.choice(NAMES))

    def existing(self):
        # mostly a name that exists now (so the op does something), else any name
        d = os.path.join(self.root, self.rnd.choice(DIRS))
        try:
            have = [n for n in os.listdir(d) if n in NAMES_SET]
        except OSError as e:
            if e.errno in GONE_ERRNOS:
                raise
            have = []
        if have and self.rnd.random() < 0.8:
            return os.path.join(d, self.rnd.choice(have))
        return self.path()

    def dirpath(self):
        return os.path.join(self.root, self.rnd.choice(DIRS[1:]))

    def data(self, n):
        # cheap, seed-determined, distinct per write (a checksum mismatch shows where)
        self.seq += 1
        head = b"w%d-%d|" % (self.wid, self.seq)
        return (head * (n // len(head) + 1))[:n]

    def any_path(self):
        return self.dirpath() if self.rnd.random() < 0.15 else self.existing()

    # --------------------------------------------------------------- operations
    def op_create(self):
        p = self.path()
        flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CREAT | (os.O_EXCL if self.rnd.random() < 0.3 else os.O_TRUNC)
        fd = os.open(p, flags, self.rnd.choice((0o644, 0o600, 0o755)))
        try:
            n = self.rnd.choice((0, 1, 100, 4096, 5000, 65536))
            if n:
                self.nbytes += os.write(fd, self.data(n))
        finally:
            os.close(fd)

    def op_write(self):
        p = self.existing()
        append = self.rnd.random() < 0.25
        fd = os.open(p, os.O_WRONLY | os.O_NONBLOCK | (os.O_APPEND if append else 0))
        try:
            n = self.rnd.choice((1, 7, 512, 4096, 4097, 20000, 65536, 131072))
            if append:
                if os.fstat(fd).st_size < (1 << 20):
                    self.nbytes += os.write(fd, self.data(n))
            else:
                off = self.rnd.choice((0, self.rnd.randrange(0, 1 << 20),
                                       self.rnd.randrange(0, 64) * 4096))
                self.nbytes += os.pwrite(fd, self.data(n), off)
        finally:
            os.close(fd)

    def op_truncate(self):
        size = self.rnd.choice((0, 1, 4095, 4096, self.rnd.randrange(0, 1 << 20)))
        p = self.existing()
        if self.rnd.random() < 0.5:
            os.truncate(p, size)
        else:
            fd = os.open(p, os.O_WRONLY | os.O_NONBLOCK)
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)

    def op_fallocate(self):
        fd = os.open(self.existing(), os.O_WRONLY | os.O_NONBLOCK)
        try:
            off = self.rnd.randrange(0, 256) * 4096 + self.rnd.choice((0, 0, 17))
            length = self.rnd.choice((1, 4096, 65536, 300000))
            mode = self.rnd.choice((0, 0, FALLOC_FL_KEEP_SIZE,
                                    FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE))
            c_fallocate(fd, mode, off, length)
        finally:
            os.close(fd)

    def op_mkdir(self):
        os.mkdir(self.dirpath(), self.rnd.choice((0o755, 0o700, 0o2775)))

    def op_rmdir(self):
        os.rmdir(self.dirpath())

    def op_unlink(self):
        os.unlink(self.existing())

    def op_rename(self):
        r = self.rnd.random()
        if r < 0.15:      # directories, also over an existing (empty) one
            a, b = self.dirpath(), self.dirpath()
            if b.startswith(a + "/"):
                b = os.path.join(self.root, self.rnd.choice(DIRS[1:3]))
            os.rename(a, b)
        elif r < 0.25:
            c_renameat2(self.existing(), self.path(), RENAME_NOREPLACE)
        elif r < 0.35:
            c_renameat2(self.any_path(), self.any_path(), RENAME_EXCHANGE)
        else:             # files, often over an existing target
            os.rename(self.existing(), self.path())

    def op_link(self):
        src = self.existing()
        # Symlinks and fifos too unless turned off (--no-link-special): a snapshot
        # catch-up must keep their names one inode, and verify must notice if not.
        if not self.link_special and not stat.S_ISREG(os.lstat(src).st_mode):
            return
        os.link(src, self.path())

    def op_symlink(self):
        tgt = self.rnd.choice(("f1", "../f2", "/nonexistent/x", "a/c/f3", "x" * 200))
        os.symlink(tgt, self.path())

    def op_chmod(self):
        os.chmod(self.any_path(), self.rnd.choice((0o644, 0o600, 0o755, 0o4755, 0o1777, 0o640, 0o2755)))

    def op_chown(self):
        u, g = self.rnd.choice((0, 1000, 1234, 65534)), self.rnd.choice((0, 100, 4321))
        os.chown(self.any_path(), u, g, follow_symlinks=self.rnd.random() < 0.7)

    def op_utimens(self):
        t = self.rnd.randrange(1_000_000_000, 1_800_000_000) * 1_000_000_000 + self.rnd.randrange(10 ** 9)
        os.utime(self.any_path(), ns=(t, t + 1), follow_symlinks=self.rnd.random() < 0.7)

    def op_setxattr(self):
        os.setxattr(self.any_path(), "user.k%d" % self.rnd.randrange(5),
                    self.data(self.rnd.choice((1, 30, 200, 500))))

    def op_removexattr(self):
        os.removexattr(self.any_path(), "user.k%d" % self.rnd.randrange(5))

    def op_mkfifo(self):
        os.mknod(self.path(), stat.S_IFIFO | 0o644)

    def op_fsync(self):
        p = self.path()
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


OPS = [("create", 14), ("write", 18), ("truncate", 5), ("fallocate", 4), ("mkdir", 4),
       ("rmdir", 3), ("unlink", 7), ("rename", 10), ("link", 4), ("symlink", 3),
       ("chmod", 4), ("chown", 3), ("utimens", 4), ("setxattr", 4), ("removexattr", 2),
       ("mkfifo", 2), ("fsync", 1)]


def count_entries(root):
    n = 0
    for _, ds, fs in os.walk(root):
        n += len(ds) + len(fs)
    return n


def worker(a, wid):
    rnd = random.Random("%s/%s/%d" % (a.seed, a.tag, wid))
    w = Worker(a.root, rnd, wid)
    w.link_special = a.link_special
    names = [n for n, _ in OPS]
    weights = [k for _, k in OPS]
    by_op = {n: 0 for n in names}
    ops = errs = 0
    t0 = time.monotonic()
    gone = full = False
    while True:
        if a.seconds > 0 and time.monotonic() - t0 >= a.seconds:
            break
        if a.stop and os.path.exists(a.stop):
            break
        name = rnd.choices(names, weights)[0]
        if ops % 100 == 0:
            try:
                full = count_entries(a.root) > MAX_ENTRIES
            except OSError:
                full = False
        if full and name in ("create", "mkdir", "link", "symlink", "mkfifo"):
            name = "unlink"
        try:
            getattr(w, "op_" + name)()
            by_op[name] += 1
        except OSError as e:
            if e.errno in GONE_ERRNOS:
                gone = True
                break
            if e.errno not in OK_ERRNOS:
                print("FAIL: worker %d op %d %s: %s (%s)" % (wid, ops, name,
                      errno.errorcode.get(e.errno, e.errno), e), flush=True)
                return 1
            errs += 1
        ops += 1
    print("worker %d ops %d errs %d bytes %d gone %d by-op %s" % (
        wid, ops, errs, w.nbytes, int(gone),
        " ".join("%s=%d" % (n, by_op[n]) for n in names)), flush=True)
    return 3 if gone else 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("--seed", required=True)
    p.add_argument("--tag", default="")
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--seconds", type=float, default=0)
    p.add_argument("--stop", default="")
    p.add_argument("--link-special", dest="link_special", action="store_true",
                   default=os.environ.get("SOAK_LINK_SPECIAL", "1") != "0",
                   help="also hard-link symlinks and fifos (the default; SOAK_LINK_SPECIAL=0 "
                        "in the environment turns it off)")
    p.add_argument("--no-link-special", dest="link_special", action="store_false",
                   help="hard-link regular files only")
    a = p.parse_args()
    for d in DIRS[1:3]:
        try:
            os.makedirs(os.path.join(a.root, d), exist_ok=True)
        except OSError as e:    # (an EXCHANGE may have put a file there: fine)
            if e.errno in GONE_ERRNOS:
                return 3
            if e.errno not in OK_ERRNOS:
                raise
    kids = []
    for wid in range(a.procs):
        pid = os.fork()
        if pid == 0:
            rc = 1
            try:
                rc = worker(a, wid)
            except BaseException as e:  # a crash of the checker itself is a failure too
                print("FAIL: worker %d: %r" % (wid, e), flush=True)
            finally:
                os._exit(rc)
        kids.append(pid)
    rc = 0
    for pid in kids:
        _, st = os.waitpid(pid, 0)
        c = os.waitstatus_to_exitcode(st)
        if c == 1 or c < 0:
            rc = 1
        elif c == 3 and rc == 0:
            rc = 3
    print("soak seed %s tag %s exit %d" % (a.seed, a.tag, rc), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
