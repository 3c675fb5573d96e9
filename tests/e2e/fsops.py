#!/usr/bin/env python3
"""Deterministic POSIX operation script for replfs end-to-end comparisons.

Usage:  fsops.py ROOT [--unsupported-out FILE] [--skip FILE]

Creates ROOT/t and runs a fixed sequence of filesystem operations inside it,
printing one line per operation:  LABEL: ok [RESULT]  or  LABEL: ERR ERRNO-NAME.
Results never contain inode numbers or clock-dependent times, so the log of a
run on a replfs mount must be identical to the log of a run on plain ext4
(ROOT paths must have equal length on both sides: the 4095-byte path test
derives its component names from len(ROOT)).

A few operations are rejected by the kernel FUSE module itself whatever the
filesystem does (fallocate COLLAPSE_RANGE / INSERT_RANGE -> EOPNOTSUPP). They
are "optional": with --unsupported-out the labels of optional operations that
returned EOPNOTSUPP are written to FILE; a later run with --skip FILE does not
perform them and logs the same EOPNOTSUPP, so the trees stay comparable.
"""
import ctypes
import errno
import fcntl
import hashlib
import mmap
import os
import platform
import random
import stat
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_COLLAPSE_RANGE = 0x08
FALLOC_FL_ZERO_RANGE = 0x10
FALLOC_FL_INSERT_RANGE = 0x20

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2

SYS_renameat2 = {"x86_64": 316, "aarch64": 276}.get(platform.machine())

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


def _check(ret):
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return ret


def renameat2(old, new, flags):
    if SYS_renameat2 is None:
        f = libc.renameat2
        f.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
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


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def utimensat(path, atime, mtime, nofollow=False):
    """atime/mtime: (sec, nsec) or UTIME_NOW / UTIME_OMIT."""
    ts = (Timespec * 2)()
    for i, t in enumerate((atime, mtime)):
        if isinstance(t, tuple):
            ts[i].tv_sec, ts[i].tv_nsec = t
        else:
            ts[i].tv_sec, ts[i].tv_nsec = 0, t
    f = libc.utimensat
    f.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(Timespec), ctypes.c_int]
    return _check(f(AT_FDCWD, os.fsencode(path), ts, 0x100 if nofollow else 0))


def sha(b):
    return hashlib.sha256(b).hexdigest()[:16]


def rnd(seed, n):
    return random.Random(seed).randbytes(n)


def read_all(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)
    finally:
        os.close(fd)


def content(path):
    b = read_all(path)
    return "len=%d sha=%s" % (len(b), sha(b))


def write_file(path, data, mode=0o644, flags=os.O_CREAT | os.O_WRONLY | os.O_TRUNC):
    fd = os.open(path, flags, mode)
    try:
        n = 0
        while n < len(data):
            n += os.write(fd, data[n:])
        return n
    finally:
        os.close(fd)


def tname(m):
    for f, n in ((stat.S_ISREG, "reg"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "lnk"),
                 (stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "chr"), (stat.S_ISBLK, "blk"),
                 (stat.S_ISSOCK, "sock")):
        if f(m):
            return n
    return "?"


def stinfo(st, dirsize=False):
    s = "%s %04o uid=%d gid=%d" % (tname(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    if not stat.S_ISDIR(st.st_mode):
        s += " nlink=%d size=%d" % (st.st_nlink, st.st_size)
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        s += " rdev=%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
    return s


def lst(path):
    return stinfo(os.lstat(path))


def fst(path):
    return stinfo(os.stat(path))


class Runner:
    def __init__(self, skip, unsupported_out):
        self.skip = skip
        self.unsupported_out = unsupported_out
        self.unsupported = []
        self.labels = set()
        self.fails = 0

    def op(self, label, fn, *args, optional=False, **kw):
        assert label not in self.labels, "duplicate label " + label
        self.labels.add(label)
        if label in self.skip:
            self.out(label, "ERR " + errno.errorcode[errno.EOPNOTSUPP])
            return None
        try:
            r = fn(*args, **kw)
        except OSError as e:
            name = errno.errorcode.get(e.errno, str(e.errno))
            self.out(label, "ERR " + name)
            if optional and e.errno == errno.EOPNOTSUPP:
                self.unsupported.append(label)
            return e
        if r is None:
            self.out(label, "ok")
        else:
            self.out(label, "ok " + (r if isinstance(r, str) else repr(r)))
        return r

    def out(self, label, s):
        sys.stdout.write("%s: %s\n" % (label, s))
        sys.stdout.flush()

    def finish(self):
        if self.unsupported_out:
            with open(self.unsupported_out, "w") as f:
                for l in self.unsupported:
                    f.write(l + "\n")


def main(argv):
    root = None
    skip = set()
    unsup_out = None
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "--skip":
            i += 1
            with open(argv[i]) as f:
                skip = set(l.strip() for l in f if l.strip())
        elif a == "--unsupported-out":
            i += 1
            unsup_out = argv[i]
        elif root is None:
            root = a
        else:
            sys.stderr.write(__doc__)
            return 2
        i += 1
    if root is None:
        sys.stderr.write(__doc__)
        return 2
    os.umask(0o022)
    R = Runner(skip, unsup_out)
    op = R.op
    root = os.path.abspath(root)
    op("setup.mkdir_t", os.mkdir, os.path.join(root, "t"), 0o755)
    os.chdir(os.path.join(root, "t"))
    T = os.getcwd()

    # ---------------------------------------------------------------- files
    data1 = rnd(1, 10000)

    def create_write_chunks():
        fd = os.open("f1", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
        n = 0
        for sz in (1, 7, 4096, 1000, 4896):
            n += os.write(fd, data1[n:n + sz])
        os.close(fd)
        return n
    op("file.create_write", create_write_chunks)
    op("file.stat", lst, "f1")
    op("file.read", content, "f1")

    def pread_checks():
        fd = os.open("f1", os.O_RDONLY)
        a = os.pread(fd, 100, 5000) == data1[5000:5100]
        b = os.pread(fd, 100, 9950)
        c = os.pread(fd, 10, 20000)
        os.close(fd)
        return "mid_ok=%s tail=%d past_eof=%d" % (a, len(b), len(c))
    op("file.pread", pread_checks)

    def rw_overwrite():
        fd = os.open("f1", os.O_RDWR)
        os.pwrite(fd, b"HELLO", 3)
        os.lseek(fd, 0, os.SEEK_END)
        os.write(fd, b"TAIL")
        os.lseek(fd, 0, os.SEEK_SET)
        head = os.read(fd, 10)
        os.close(fd)
        return head.hex()
    op("file.rw_overwrite", rw_overwrite)
    op("file.read2", content, "f1")

    def write_on_rdonly():
        fd = os.open("f1", os.O_RDONLY)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
    op("file.write_rdonly_fd", write_on_rdonly)
    op("file.creat_excl_exists", os.open, "f1", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)

    def two_fds():
        a = os.open("f2", os.O_CREAT | os.O_RDWR, 0o600)
        b = os.open("f2", os.O_RDWR)
        os.write(a, b"written-by-a")
        r = os.pread(b, 100, 0)
        os.pwrite(b, b"B", 0)
        r2 = os.pread(a, 100, 0)
        os.close(a)
        os.close(b)
        return r.decode() + "|" + r2.decode()
    op("file.two_fds_coherent", two_fds)
    op("file.otrunc", lambda: (os.close(os.open("f2", os.O_WRONLY | os.O_TRUNC)), lst("f2"))[1])
    big = rnd(2, 128 * KiB + 1)
    op("file.write_128k", write_file, "f3", big)
    op("file.read_128k", content, "f3")
    op("file.empty", write_file, "empty", b"")
    op("file.empty_stat", lst, "empty")

    def many():
        os.mkdir("many")
        for k in range(200):
            write_file("many/file%03d" % k, b"%d\n" % k)
        ls = sorted(os.listdir("many"))
        return "n=%d first=%s last=%s" % (len(ls), ls[0], ls[-1])
    op("file.many", many)
    op("file.many_unlink_half", lambda: [os.unlink("many/file%03d" % k) for k in range(0, 200, 2)] and
       len(os.listdir("many")))

    def unlink_open():
        fd = os.open("uo", os.O_CREAT | os.O_RDWR, 0o644)
        os.write(fd, b"still here")
        os.unlink("uo")
        gone = not os.path.lexists("uo")
        os.write(fd, b" and more")
        r = os.pread(fd, 100, 0)
        os.close(fd)
        return "gone=%s read=%s" % (gone, r.decode())
    op("file.unlink_while_open", unlink_open)

    # ------------------------------------------------------------- truncate
    op("setup.01", lambda: write_file("tr", rnd(3, 5000)))
    op("trunc.grow", lambda: (os.truncate("tr", 100000), content("tr"))[1])
    op("trunc.shrink", lambda: (os.truncate("tr", 10), content("tr"))[1])

    def ftrunc():
        fd = os.open("tr", os.O_RDWR)
        os.ftruncate(fd, 70000)
        s1 = os.fstat(fd).st_size
        os.pwrite(fd, b"end", 69997)
        os.ftruncate(fd, 69999)
        s2 = os.fstat(fd).st_size
        os.close(fd)
        return "%d %d %s" % (s1, s2, content("tr"))
    op("trunc.ftruncate", ftrunc)
    op("trunc.zero", lambda: (os.truncate("tr", 0), content("tr"))[1])
    op("trunc.missing", os.truncate, "nope", 0)
    op("trunc.dir", os.truncate, ".", 0)
    op("trunc.negative", os.truncate, "tr", -1)

    # ------------------------------------------------------------ fallocate
    op("setup.02", lambda: write_file("fa", rnd(4, 64 * KiB)))

    def falloc(path, mode, off, ln):
        fd = os.open(path, os.O_RDWR)
        try:
            fallocate(fd, mode, off, ln)
        finally:
            os.close(fd)
        return "size=%d %s" % (os.stat(path).st_size, content(path))
    op("falloc.default", falloc, "fa", 0, 0, 128 * KiB)
    op("falloc.posix", lambda: (lambda fd: (os.posix_fallocate(fd, 0, 160 * KiB), os.close(fd)))(
        os.open("fa", os.O_RDWR)) and content("fa"))
    op("falloc.keep_size", falloc, "fa", FALLOC_FL_KEEP_SIZE, 160 * KiB, 64 * KiB)
    op("falloc.punch_hole", falloc, "fa", FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 8192)
    op("falloc.punch_unaligned", falloc, "fa", FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 30001, 777)
    op("falloc.punch_no_keep", falloc, "fa", FALLOC_FL_PUNCH_HOLE, 0, 4096)
    op("falloc.zero_range", falloc, "fa", FALLOC_FL_ZERO_RANGE, 16384, 4096)
    op("falloc.zero_range_extend", falloc, "fa", FALLOC_FL_ZERO_RANGE, 150 * KiB, 20 * KiB)
    op("falloc.zero_range_keep", falloc, "fa", FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
       200 * KiB, 8 * KiB)
    op("setup.03", lambda: write_file("fb", rnd(5, 64 * KiB)))
    op("falloc.collapse", falloc, "fb", FALLOC_FL_COLLAPSE_RANGE, 8192, 4096, optional=True)
    op("setup.04", lambda: write_file("fc", rnd(6, 64 * KiB)))
    op("falloc.insert", falloc, "fc", FALLOC_FL_INSERT_RANGE, 8192, 4096, optional=True)
    op("falloc.collapse_unaligned", falloc, "fb", FALLOC_FL_COLLAPSE_RANGE, 100, 4096, optional=True)
    op("falloc.read_fb", content, "fb")
    op("falloc.read_fc", content, "fc")

    # --------------------------------------------------------------- sparse
    def sparse():
        fd = os.open("sp", os.O_CREAT | os.O_RDWR, 0o644)
        os.pwrite(fd, b"DATA", 1 * MiB)
        os.pwrite(fd, b"END", 3 * MiB)
        size = os.fstat(fd).st_size
        z = os.pread(fd, 4096, 0) == bytes(4096)
        d = os.pread(fd, 4, 1 * MiB)
        z2 = os.pread(fd, 8192, 2 * MiB) == bytes(8192)
        os.close(fd)
        return "size=%d zeros=%s data=%s zeros2=%s" % (size, z, d.decode(), z2)
    op("sparse.write", sparse)
    op("sparse.read", content, "sp")

    def seek_data_hole():
        fd = os.open("sp", os.O_RDONLY)
        size = os.fstat(fd).st_size
        res = []
        try:
            r = os.lseek(fd, 0, os.SEEK_DATA)
            ok = 0 <= r <= 1 * MiB and os.pread(fd, r, 0) == bytes(r)
            res.append("data0=%s" % ("valid" if ok else "INVALID(%d)" % r))
            r = os.lseek(fd, 1 * MiB, os.SEEK_HOLE)
            ok = 1 * MiB + 4 <= r <= size and (r == size or os.pread(fd, 1, r) == b"\0")
            res.append("hole1M=%s" % ("valid" if ok else "INVALID(%d)" % r))
            r = os.lseek(fd, 1 * MiB + 8192, os.SEEK_DATA)
            ok = 1 * MiB + 8192 <= r <= 3 * MiB and \
                os.pread(fd, r - (1 * MiB + 8192), 1 * MiB + 8192) == bytes(r - (1 * MiB + 8192))
            res.append("data_after=%s" % ("valid" if ok else "INVALID(%d)" % r))
        except OSError as e:
            res.append("ERR " + errno.errorcode.get(e.errno, "?"))
        for whence, name in ((os.SEEK_DATA, "data"), (os.SEEK_HOLE, "hole")):
            try:
                os.lseek(fd, size + 10, whence)
                res.append("%s_past_eof=ok" % name)
            except OSError as e:
                res.append("%s_past_eof=%s" % (name, errno.errorcode.get(e.errno)))
        os.close(fd)
        return " ".join(res)
    op("sparse.seek_data_hole", seek_data_hole)

    def huge():
        fd = os.open("huge", os.O_CREAT | os.O_RDWR, 0o644)
        os.pwrite(fd, b"Z", 5 * GiB)
        size = os.fstat(fd).st_size
        a = os.pread(fd, 1, 5 * GiB)
        b = os.pread(fd, 16, 4 * GiB + 12345) == bytes(16)
        os.pwrite(fd, b"Q", 4 * GiB + 1)
        c = os.pread(fd, 3, 4 * GiB)
        os.close(fd)
        return "size=%d last=%s zeros=%s around4g=%s" % (size, a.decode(), b, c.hex())
    op("big.write_5g", huge)
    op("big.stat", lst, "huge")

    def huge_reopen():
        fd = os.open("huge", os.O_RDONLY)
        a = os.pread(fd, 2, 5 * GiB - 1)
        os.close(fd)
        return a.hex()
    op("big.reopen_read", huge_reopen)
    op("big.truncate_4g", lambda: (os.truncate("huge", 4 * GiB + 7), lst("huge"))[1])
    op("big.read_after_trunc", lambda: (lambda fd: (os.pread(fd, 10, 4 * GiB).hex(), os.close(fd))[0])(
        os.open("huge", os.O_RDONLY)))
    op("big.unlink", os.unlink, "huge")

    # --------------------------------------------------------- dirs, unlink
    op("dir.mkdir", os.mkdir, "d1", 0o755)
    op("dir.mkdir_exists", os.mkdir, "d1")
    op("dir.mkdir_sub", os.mkdir, "d1/sub")
    op("dir.mkdir_mode_0700", lambda: (os.mkdir("d0700", 0o700), lst("d0700"))[1])
    op("dir.mkdir_mode_0777_umask", lambda: (os.mkdir("d0777", 0o777), lst("d0777"))[1])
    op("dir.rmdir_notempty", os.rmdir, "d1")
    op("dir.rmdir_sub", os.rmdir, "d1/sub")
    op("dir.rmdir", os.rmdir, "d1")
    op("dir.rmdir_missing", os.rmdir, "d1")
    op("dir.rmdir_file", os.rmdir, "f1")
    op("dir.unlink_dir", os.unlink, "d0700")
    op("dir.unlink_missing", os.unlink, "nope")
    op("dir.mkdir_missing_parent", os.mkdir, "nope/a")
    op("dir.mkdir_under_file", os.mkdir, "f1/a")
    op("dir.rmdir_dot", os.rmdir, "d0777/.")
    op("dir.mkdir_tree", lambda: [os.makedirs("tree/a/b/c"), write_file("tree/a/b/c/leaf", b"leaf"),
                                  write_file("tree/a/top", b"top")] and sorted(os.listdir("tree/a")))
    op("dir.fsync_dirfd", lambda: (lambda fd: (os.fsync(fd), os.close(fd)))(
        os.open("tree/a", os.O_RDONLY | os.O_DIRECTORY)))
    op("dir.fdatasync_dirfd", lambda: (lambda fd: (os.fdatasync(fd), os.close(fd)))(
        os.open(".", os.O_RDONLY | os.O_DIRECTORY)))

    # --------------------------------------------------------------- rename
    op("setup.05", lambda: write_file("r_src", b"source"))
    op("setup.06", lambda: write_file("r_dst", b"destination"))
    op("rename.over_file", os.rename, "r_src", "r_dst")
    op("rename.over_file_result", lambda: "%s src_exists=%s" % (read_all("r_dst").decode(),
                                                                  os.path.lexists("r_src")))
    op("rename.simple", os.rename, "r_dst", "r_moved")
    op("setup.07", lambda: os.makedirs("rd_src/inner"))
    op("setup.08", lambda: write_file("rd_src/inner/x", b"x"))
    op("setup.09", lambda: os.mkdir("rd_empty"))
    op("rename.dir_over_empty_dir", os.rename, "rd_src", "rd_empty")
    op("rename.dir_over_empty_result", lambda: sorted(os.listdir("rd_empty/inner")))
    op("setup.10", lambda: os.makedirs("rd_full/y"))
    op("rename.dir_over_nonempty", os.rename, "rd_empty", "rd_full")
    op("rename.dir_over_file", os.rename, "rd_full", "r_moved")
    op("rename.file_over_dir", os.rename, "r_moved", "rd_full")
    op("rename.dir_into_itself", os.rename, "rd_full", "rd_full/y/z")
    op("rename.missing", os.rename, "nope", "nope2")
    op("rename.across_dirs", os.rename, "r_moved", "rd_full/y/moved")
    op("rename.same_name", os.rename, "f3", "f3")
    op("setup.11", lambda: write_file("hl_a", b"hardlinked"))
    op("setup.12", lambda: os.link("hl_a", "hl_b"))
    op("rename.onto_own_hardlink", lambda: (os.rename("hl_a", "hl_b"),
                                            "a=%s b=%s" % (os.path.lexists("hl_a"), lst("hl_b")))[1])
    op("setup.13", lambda: write_file("x_a", b"AAAA"))
    op("setup.14", lambda: write_file("x_b", b"BB"))
    op("rename2.noreplace_exists", renameat2, "x_a", "x_b", RENAME_NOREPLACE)
    op("rename2.noreplace_ok", renameat2, "x_a", "x_c", RENAME_NOREPLACE)
    op("rename2.exchange", renameat2, "x_c", "x_b", RENAME_EXCHANGE)
    op("rename2.exchange_result", lambda: "c=%s b=%s" % (read_all("x_c"), read_all("x_b")))
    op("setup.15", lambda: os.mkdir("x_dir"))
    op("setup.16", lambda: write_file("x_dir/in", b"in dir"))
    op("rename2.exchange_file_dir", renameat2, "x_c", "x_dir", RENAME_EXCHANGE)
    op("rename2.exchange_file_dir_result", lambda: "%s %s %s" % (lst("x_c"), lst("x_dir"),
                                                                 read_all("x_c/in")))
    op("rename2.exchange_missing", renameat2, "x_b", "x_none", RENAME_EXCHANGE)
    op("rename2.bad_flags", renameat2, "x_b", "x_c", RENAME_EXCHANGE | RENAME_NOREPLACE)

    # ---------------------------------------------------------- link/symlink
    op("setup.17", lambda: write_file("ln_src", b"link me"))
    op("link.create", os.link, "ln_src", "ln_dst")
    op("link.stat", lambda: "%s | %s" % (lst("ln_src"), lst("ln_dst")))
    op("link.other_dir", os.link, "ln_src", "tree/ln_third")
    op("link.nlink3", lst, "ln_src")
    op("link.write_through", lambda: (write_file("ln_dst", b"changed", flags=os.O_WRONLY | os.O_APPEND),
                                      read_all("tree/ln_third").decode())[1])
    op("link.to_dir", os.link, "tree", "tree_link")
    op("link.dest_exists", os.link, "ln_src", "f1")
    op("link.missing_src", os.link, "nope", "nope_link")
    op("link.unlink_one", lambda: (os.unlink("ln_src"), lst("ln_dst"))[1])
    op("symlink.rel", os.symlink, "f1", "sl_rel")
    op("symlink.abs", os.symlink, "/etc/passwd-does-not-matter", "sl_abs")
    op("symlink.dangling", os.symlink, "no/such/target", "sl_dangling")
    op("symlink.dir", os.symlink, "tree/a", "sl_dir")
    op("symlink.readlink", lambda: [os.readlink(p) for p in ("sl_rel", "sl_abs", "sl_dangling", "sl_dir")])
    op("symlink.lstat", lambda: [lst(p) for p in ("sl_rel", "sl_dangling")])
    op("symlink.follow_stat", lambda: "%s | %s" % (fst("sl_rel"), fst("sl_dir")))
    op("symlink.follow_dangling", os.stat, "sl_dangling")
    op("symlink.through_dir", lambda: read_all("sl_dir/top").decode())
    op("symlink.readlink_regular", os.readlink, "f1")
    op("symlink.readlink_missing", os.readlink, "nope")
    op("symlink.exists", os.symlink, "x", "sl_rel")
    long_target = ("abcdefghij/" * 372)[:4000]
    op("symlink.long_target", lambda: (os.symlink(long_target, "sl_long"),
                                       os.readlink("sl_long") == long_target)[1])
    op("setup.18", lambda: os.symlink("loop2", "loop1"))
    op("setup.19", lambda: os.symlink("loop1", "loop2"))
    op("symlink.eloop", os.open, "loop1", os.O_RDONLY)
    op("symlink.write_through", lambda: (write_file("sl_dangling_2_target", b"t"),
                                         os.symlink("sl_dangling_2_target", "sl_w"),
                                         write_file("sl_w", b"via symlink"),
                                         read_all("sl_dangling_2_target").decode())[3])
    op("symlink.nofollow_open", os.open, "sl_rel", os.O_RDONLY | os.O_NOFOLLOW)

    # ---------------------------------------------------------- mknod/fifo
    op("mknod.fifo", lambda: (os.mkfifo("fifo", 0o640), lst("fifo"))[1])
    op("mknod.reg", lambda: (os.mknod("mreg", 0o600 | stat.S_IFREG), lst("mreg"))[1])
    op("mknod.chr", lambda: (os.mknod("mchr", 0o600 | stat.S_IFCHR, os.makedev(1, 3)), lst("mchr"))[1])
    op("mknod.blk", lambda: (os.mknod("mblk", 0o600 | stat.S_IFBLK, os.makedev(7, 250)), lst("mblk"))[1])
    op("mknod.sock", lambda: (os.mknod("msock", 0o755 | stat.S_IFSOCK), lst("msock"))[1])
    op("mknod.exists", os.mkfifo, "fifo")

    def fifo_io():
        r = os.open("fifo", os.O_RDONLY | os.O_NONBLOCK)
        w = os.open("fifo", os.O_WRONLY | os.O_NONBLOCK)
        os.write(w, b"through the pipe")
        d = os.read(r, 100)
        os.close(w)
        os.close(r)
        return d.decode()
    op("mknod.fifo_io", fifo_io)

    # ------------------------------------------------------- chmod / chown
    op("setup.20", lambda: write_file("perm", b"perm"))
    for m in (0o600, 0o755, 0o4755, 0o2755, 0o6711, 0o1644, 0o000, 0o777):
        op("chmod.%04o" % m, lambda m=m: (os.chmod("perm", m), lst("perm"))[1])
    op("setup.21", lambda: os.mkdir("pdir"))
    for m in (0o1777, 0o2750, 0o700):
        op("chmod.dir_%04o" % m, lambda m=m: (os.chmod("pdir", m), lst("pdir"))[1])
    op("chmod.missing", os.chmod, "nope", 0o644)
    op("chown.uid_gid", lambda: (os.chown("perm", 1234, 5678), lst("perm"))[1])
    op("chown.gid_only", lambda: (os.chown("perm", -1, 42), lst("perm"))[1])
    op("chown.uid_only", lambda: (os.chown("perm", 4321, -1), lst("perm"))[1])
    op("chown.lchown_symlink", lambda: (os.lchown("sl_rel", 2222, 3333), lst("sl_rel"), lst("f1"))[1:])
    op("chown.dir", lambda: (os.chown("pdir", 77, 88), lst("pdir"))[1])
    op("chown.clears_suid", lambda: (os.chmod("perm", 0o6755), os.chown("perm", 1000, 1000),
                                     lst("perm"))[2])
    op("chown.missing", os.chown, "nope", 1, 1)
    op("chmod.via_fd", lambda: (lambda fd: (os.fchmod(fd, 0o640), os.close(fd), lst("f2"))[2])(
        os.open("f2", os.O_RDONLY)))

    # --------------------------------------------------------------- utimens
    op("setup.22", lambda: write_file("tm", b"time"))

    def times(p, follow=False):
        st = os.stat(p) if follow else os.lstat(p)
        return "atime=%d mtime=%d" % (st.st_atime_ns, st.st_mtime_ns)
    op("utimens.set_ns", lambda: (os.utime("tm", ns=(1000000000123456789, 1100000000987654321)),
                                  times("tm"))[1])
    op("utimens.old_date", lambda: (os.utime("tm", ns=(86400 * 10**9, 2 * 86400 * 10**9 + 5)),
                                    times("tm"))[1])
    op("utimens.omit_atime", lambda: (utimensat("tm", UTIME_OMIT, (1500000000, 42)), times("tm"))[1])
    op("utimens.omit_mtime", lambda: (utimensat("tm", (1400000000, 7), UTIME_OMIT), times("tm"))[1])

    def utime_now():
        t0 = time.time_ns() - 2 * 10**9
        utimensat("tm", UTIME_NOW, UTIME_NOW)
        t1 = time.time_ns() + 2 * 10**9
        st = os.lstat("tm")
        return "now_ok=%s" % (t0 <= st.st_mtime_ns <= t1 and t0 <= st.st_atime_ns <= t1)
    op("utimens.now", utime_now)
    op("utimens.dir", lambda: (os.utime("pdir", ns=(123, 456789)), times("pdir"))[1])
    op("utimens.symlink_nofollow", lambda: (os.utime("sl_abs", ns=(3 * 10**9, 4 * 10**9),
                                                     follow_symlinks=False), times("sl_abs"))[1])
    op("utimens.missing", os.utime, "nope", ns=(1, 1))
    # keep explicit mtimes on a few entries; the tree dump checks they survive
    op("setup.23", lambda: os.utime("tm", ns=(1600000000000000001, 1600000000000000002)))

    def mtime_on_write():
        write_file("mw", b"x")
        os.utime("mw", ns=(10**9, 10**9))
        t0 = time.time_ns() - 2 * 10**9
        fd = os.open("mw", os.O_WRONLY)
        os.write(fd, b"y")
        os.close(fd)
        return "mtime_updated=%s" % (os.stat("mw").st_mtime_ns >= t0)
    op("utimens.mtime_on_write", mtime_on_write)

    def mtime_on_trunc():
        os.utime("mw", ns=(10**9, 10**9))
        t0 = time.time_ns() - 2 * 10**9
        os.truncate("mw", 0)
        return "mtime_updated=%s" % (os.stat("mw").st_mtime_ns >= t0)
    op("utimens.mtime_on_truncate", mtime_on_trunc)

    def dir_mtime():
        os.mkdir("dm")
        os.utime("dm", ns=(10**9, 10**9))
        t0 = time.time_ns() - 2 * 10**9
        write_file("dm/new", b"")
        a = os.stat("dm").st_mtime_ns >= t0
        os.utime("dm", ns=(10**9, 10**9))
        os.unlink("dm/new")
        b = os.stat("dm").st_mtime_ns >= t0
        return "on_create=%s on_unlink=%s" % (a, b)
    op("utimens.dir_mtime_on_change", dir_mtime)

    def ctime_on_chmod():
        c0 = os.stat("mw").st_ctime_ns
        time.sleep(0.05)
        os.chmod("mw", 0o600)
        return "ctime_updated=%s" % (os.stat("mw").st_ctime_ns > c0)
    op("utimens.ctime_on_chmod", ctime_on_chmod)

    # ---------------------------------------------------------------- statfs
    def statfs():
        s = os.statvfs(".")
        return "bsize>0=%s blocks>0=%s bfree<=blocks=%s bavail<=bfree=%s namemax>=255=%s" % (
            s.f_bsize > 0, s.f_blocks > 0, s.f_bfree <= s.f_blocks, s.f_bavail <= s.f_bfree,
            s.f_namemax >= 255)
    op("statfs", statfs)

    # ------------------------------------------------------------------ sync
    def syncs():
        fd = os.open("f1", os.O_RDWR)
        os.pwrite(fd, b"S", 0)
        os.fsync(fd)
        os.pwrite(fd, b"D", 1)
        os.fdatasync(fd)
        os.close(fd)
        return content("f1")
    op("sync.fsync_fdatasync", syncs)
    op("sync.syncfs", lambda: (lambda fd: (libc.syncfs(fd), os.close(fd))[0])(os.open(".", os.O_RDONLY)))

    # ---------------------------------------------------------------- xattrs
    op("setup.24", lambda: write_file("xa", b"xattrs"))
    op("xattr.set_a", os.setxattr, "xa", "user.a", b"1")
    op("xattr.set_binary", os.setxattr, "xa", "user.bin", bytes(range(256)))
    op("xattr.set_empty", os.setxattr, "xa", "user.empty", b"")
    op("xattr.set_large", os.setxattr, "xa", "user.large", rnd(7, 3000))
    op("xattr.get_a", lambda: os.getxattr("xa", "user.a").hex())
    op("xattr.get_bin", lambda: sha(os.getxattr("xa", "user.bin")))
    op("xattr.get_empty", lambda: os.getxattr("xa", "user.empty").hex())
    op("xattr.get_large", lambda: sha(os.getxattr("xa", "user.large")))
    op("xattr.list", lambda: sorted(n for n in os.listxattr("xa") if n.startswith("user.")))
    op("xattr.replace", lambda: (os.setxattr("xa", "user.a", b"22", os.XATTR_REPLACE),
                                 os.getxattr("xa", "user.a"))[1])
    op("xattr.create_exists", os.setxattr, "xa", "user.a", b"3", os.XATTR_CREATE)
    op("xattr.replace_missing", os.setxattr, "xa", "user.zz", b"3", os.XATTR_REPLACE)
    op("xattr.remove", os.removexattr, "xa", "user.a")
    op("xattr.get_removed", os.getxattr, "xa", "user.a")
    op("xattr.remove_missing", os.removexattr, "xa", "user.a")
    op("xattr.get_missing", os.getxattr, "xa", "user.never")
    op("xattr.list_after", lambda: sorted(n for n in os.listxattr("xa") if n.startswith("user.")))
    op("xattr.on_dir", lambda: (os.setxattr("tree", "user.d", b"dir"), os.getxattr("tree", "user.d"))[1])
    op("xattr.missing_file", os.setxattr, "nope", "user.a", b"1")
    op("xattr.name_too_long", os.setxattr, "xa", "user." + "n" * 300, b"1")
    op("xattr.via_fd", lambda: (lambda fd: (os.setxattr(fd, "user.fd", b"fd"), os.getxattr(fd, "user.fd"),
                                            os.close(fd))[1])(os.open("xa", os.O_RDONLY)))
    op("xattr.survives_rename", lambda: (os.rename("xa", "xa2"), os.getxattr("xa2", "user.fd"))[1])

    # ---------------------------------------------------------------- append
    op("setup.25", lambda: write_file("ap", b"abc"))

    def append():
        fd = os.open("ap", os.O_WRONLY | os.O_APPEND)
        os.write(fd, b"def")
        os.pwrite(fd, b"X", 0)          # Linux: O_APPEND wins over the offset
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"ghi")
        os.close(fd)
        return read_all("ap").decode()
    op("append.basic", append)

    def append_two():
        a = os.open("ap", os.O_WRONLY | os.O_APPEND)
        b = os.open("ap", os.O_WRONLY | os.O_APPEND)
        for k in range(5):
            os.write(a, b"a%d" % k)
            os.write(b, b"b%d" % k)
        os.close(a)
        os.close(b)
        return read_all("ap").decode()
    op("append.two_fds", append_two)
    op("append.create", lambda: (write_file("ap_new", b"first", flags=os.O_CREAT | os.O_WRONLY | os.O_APPEND),
                                 write_file("ap_new", b"second", flags=os.O_WRONLY | os.O_APPEND),
                                 read_all("ap_new").decode())[2])

    # ----------------------------------------------------------------- names
    names = ["with space", "  leading and trailing  ", "tab\there", "new\nline",
             "ünïcødé ☃ 日本語 🎉", "-dash", ".hidden", "trailing.", "semi;colon&amp$dollar",
             "q'uote\"d", "back\\slash", "*star?", "n" * 255, "é" * 127, "日" * 85]
    for k, n in enumerate(names):
        op("name.create_%02d" % k, lambda n=n: (write_file(n, n.encode()), read_all(n) == n.encode())[1])
    op("name.invalid_utf8", lambda: (write_file(b"raw\xff\xfe", b"bytes"), read_all(b"raw\xff\xfe").decode())[1])
    op("name.too_long_256", write_file, "m" * 256, b"")
    op("name.too_long_utf8", write_file, "é" * 128, b"")
    op("name.listdir", lambda: sha(repr(sorted(os.listdir(b"."))).encode()))
    op("name.dir_with_space", lambda: (os.makedirs("dir with space/sub dir ☃"),
                                       write_file("dir with space/sub dir ☃/f ile", b"ok"),
                                       os.rename("dir with space/sub dir ☃", "dir with space/ré named"),
                                       read_all("dir with space/ré named/f ile").decode())[3])

    # ------------------------------------------------------------- long path
    base = os.path.join(T, "deep")
    op("setup.26", lambda: os.mkdir(base))
    rem = 4095 - len(base)
    ndirs = (rem - 2) // 251
    comps = ["%03d" % k + "d" * 247 for k in range(ndirs)]
    flen = rem - ndirs * 251 - 1
    fname = ("f" * flen)
    p = base
    for c in comps:
        p = os.path.join(p, c)
    fpath = os.path.join(p, fname)
    assert len(fpath) == 4095, len(fpath)

    def mkdeep():
        q = base
        for c in comps:
            q = os.path.join(q, c)
            os.mkdir(q)
        return "dirs=%d filelen=%d" % (ndirs, flen)
    op("longpath.mkdirs", mkdeep)
    op("longpath.create_4095", write_file, fpath, b"at the bottom")
    op("longpath.read_4095", lambda: read_all(fpath).decode())
    op("longpath.stat_4095", lst, fpath)
    op("longpath.xattr_4095", lambda: (os.setxattr(fpath, "user.deep", b"1"), os.getxattr(fpath, "user.deep"))[1])
    op("longpath.rename_4095", lambda: (os.rename(fpath, fpath[:-1] + "g"), os.rename(fpath[:-1] + "g", fpath),
                                        os.path.exists(fpath))[2])
    op("longpath.create_4096", write_file, fpath + "x", b"")

    def beyond_path_max():
        fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.mkdir("beyond", dir_fd=fd)
            fd2 = os.open("beyond", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            try:
                w = os.open("file", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd2)
                os.write(w, b"beyond PATH_MAX")
                os.close(w)
                r = os.open("file", os.O_RDONLY, dir_fd=fd2)
                d = os.read(r, 100)
                os.close(r)
                return d.decode()
            finally:
                os.close(fd2)
        finally:
            os.close(fd)
    op("longpath.beyond_path_max_fd_relative", beyond_path_max)

    # -------------------------------------------------------------- O_DIRECT
    def odirect():
        fd = os.open("od", os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o644)
        try:
            wbuf = mmap.mmap(-1, 8192)
            wbuf.write(rnd(8, 8192))
            n = os.pwrite(fd, wbuf, 0)
            n2 = os.pwrite(fd, wbuf, 8192)
            rbuf = mmap.mmap(-1, 16384)
            m = os.preadv(fd, [rbuf], 0)
            same = rbuf[:8192] == wbuf[:] and rbuf[8192:] == wbuf[:]
            return "wrote=%d+%d read=%d same=%s" % (n, n2, m, same)
        finally:
            os.close(fd)
    op("odirect.rw", odirect)
    op("odirect.read_buffered", content, "od")

    # ------------------------------------------------------------------ mmap
    def mmap_write():
        write_file("mm", bytes(8192))
        fd = os.open("mm", os.O_RDWR)
        m = mmap.mmap(fd, 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        m[100:105] = b"MMAP!"
        m[8000:8003] = b"end"
        m.flush()
        m.close()
        os.close(fd)
        return content("mm")
    op("mmap.shared_write", mmap_write)

    # ----------------------------------------------------------------- locks
    def locks():
        fd = os.open("f1", os.O_RDWR)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(fd, fcntl.LOCK_UN)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    op("locks.posix_and_flock", locks)

    # ------------------------------------------------------------ more errno
    op("errno.open_missing", os.open, "nope", os.O_RDONLY)
    op("errno.open_in_missing_dir", os.open, "nope/x", os.O_CREAT | os.O_WRONLY, 0o644)
    op("errno.open_dir_wronly", os.open, "tree", os.O_WRONLY)
    op("errno.open_file_as_dir", os.open, "f1", os.O_RDONLY | os.O_DIRECTORY)
    op("errno.path_through_file", os.stat, "f1/x")
    op("errno.mkdir_exists_file", os.mkdir, "f1")
    op("errno.rmdir_nonempty", os.rmdir, "tree")
    op("errno.read_dir", lambda: (lambda fd: os.read(fd, 10))(os.open("tree", os.O_RDONLY)))
    op("errno.symlink_over_dir", os.symlink, "x", "tree")

    # --------------------------------------------------------------- readdir
    op("readdir.top", lambda: sha(repr(sorted(os.listdir(b"."))).encode()))
    op("readdir.top_names", lambda: sorted(n for n in os.listdir(".") if n.isascii() and n.isprintable()))
    op("readdir.many", lambda: sorted(os.listdir("many")))

    R.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
