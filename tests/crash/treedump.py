#!/usr/bin/env python3
"""Canonical dump of a directory tree for the replfs crash tests.

Usage:  treedump.py DIR [--mtime reg|all|none] [--exclude NAME ...]

One line per entry below DIR (DIR itself is not listed: the replay target and
STORE/data are different directories whose own attributes nobody changes),
sorted by path, TAB-separated:

    PATH TYPE mode=OOOO uid=N gid=N nlink=N [size=N sha256=HEX | size=N target=T |
         rdev=MAJ,MIN] [mtime=NS] [xattr=NAME=HEX;...] [hl=FIRSTPATH]

TYPE    reg dir lnk fifo chr blk sock
size    regular files and symlinks only (directory sizes are fs-specific)
sha256  of the logical content (holes read as zeros)
mtime   st_mtime in ns: of regular files only (--mtime reg, the default), of
        every entry (--mtime all) or never (--mtime none). atime/ctime never.
xattr   user.* extended attributes, sorted, values hex-encoded
hl      hard-link group of a non-directory with st_nlink > 1: the smallest PATH
        in the dump sharing its (st_dev, st_ino)

Paths and symlink targets escape backslash, TAB, newline, control characters
and undecodable bytes, so every entry is one line. The walk is fd-relative and
never follows symlinks; FIFOs and devices are never opened.
Exit status 0; 1 if some entry could not be read (an ERROR line names it);
2 on usage errors.
"""
import errno
import hashlib
import os
import stat
import sys

TYPES = [(stat.S_ISREG, "reg"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "lnk"),
         (stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "chr"), (stat.S_ISBLK, "blk"),
         (stat.S_ISSOCK, "sock")]


def esc(b):
    out = []
    for ch in b.decode("utf-8", "surrogateescape"):
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:
            out.append("\\x%02x" % (o - 0xDC00))
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif o < 0x20 or o == 0x7F:
            out.append("\\x%02x" % o)
        else:
            out.append(ch)
    return "".join(out)


def ftype(m):
    for f, n in TYPES:
        if f(m):
            return n
    return "unknown"


def user_xattrs(p):
    try:
        names = os.listxattr(p, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return ""
        raise
    parts = []
    for n in sorted(x for x in names if x.startswith("user.")):
        parts.append("%s=%s" % (n, os.getxattr(p, n, follow_symlinks=False).hex()))
    return ";".join(parts)


class Dumper:
    def __init__(self, mtime, exclude):
        self.mtime = mtime
        self.exclude = set(os.fsencode(e) for e in exclude)
        self.entries = []
        self.errors = 0

    def entry(self, rel, dirfd, name, st):
        m = st.st_mode
        t = ftype(m)
        f = [t, "mode=%04o" % stat.S_IMODE(m), "uid=%d" % st.st_uid, "gid=%d" % st.st_gid,
             "nlink=%d" % st.st_nlink]
        xpath = os.fsencode("/proc/self/fd/%d/" % dirfd) + name
        if t == "reg":
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dirfd)
            try:
                h = hashlib.sha256()
                n = 0
                while True:
                    b = os.read(fd, 1 << 20)
                    if not b:
                        break
                    h.update(b)
                    n += len(b)
            finally:
                os.close(fd)
            # size from stat; a short read (n != size) shows up as a sha mismatch
            f += ["size=%d" % st.st_size, "sha256=" + h.hexdigest()]
            if n != st.st_size:
                f.append("READ=%d" % n)
        elif t == "lnk":
            f += ["size=%d" % st.st_size, "target=" + esc(os.readlink(name, dir_fd=dirfd))]
        elif t in ("chr", "blk"):
            f.append("rdev=%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)))
        if self.mtime == "all" or (self.mtime == "reg" and t == "reg"):
            f.append("mtime=%d" % st.st_mtime_ns)
        xa = ""
        if t in ("reg", "dir"):
            xa = user_xattrs(xpath)
        elif t != "lnk":
            try:
                xa = user_xattrs(xpath)
            except OSError:
                xa = ""
        if xa:
            f.append("xattr=" + xa)
        key = (st.st_dev, st.st_ino) if t != "dir" and st.st_nlink > 1 else None
        self.entries.append((rel, f, key))

    def walk(self, dirfd, rel):
        try:
            names = sorted(os.fsencode(e.name) for e in os.scandir(dirfd))
        except OSError as e:
            self.error(rel, e)
            return
        for name in names:
            if rel == b"" and name in self.exclude:
                continue
            crel = name if rel == b"" else rel + b"/" + name
            try:
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                self.entry(crel, dirfd, name, st)
            except OSError as e:
                self.error(crel, e)
                continue
            if stat.S_ISDIR(st.st_mode):
                try:
                    cfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                                  dir_fd=dirfd)
                except OSError as e:
                    self.error(crel, e)
                    continue
                try:
                    self.walk(cfd, crel)
                finally:
                    os.close(cfd)

    def error(self, rel, e):
        self.errors += 1
        self.entries.append((rel, ["ERROR", "%s:%s" % (type(e).__name__, e.strerror)], None))

    def run(self, top):
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self.walk(fd, b"")
        finally:
            os.close(fd)
        groups = {}
        for rel, _, key in self.entries:
            if key is not None:
                groups.setdefault(key, []).append(rel)
        lines = []
        for rel, f, key in self.entries:
            f = list(f)
            if key is not None:
                f.append("hl=" + esc(min(groups[key])))
            lines.append((rel, esc(rel) + "\t" + "\t".join(f)))
        lines.sort(key=lambda x: x[0])
        return [l for _, l in lines]


def main(argv):
    mtime, exclude, top = "reg", [], None
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "--mtime" and i + 1 < len(argv) and argv[i + 1] in ("reg", "all", "none"):
            mtime = argv[i + 1]
            i += 1
        elif a == "--exclude" and i + 1 < len(argv):
            exclude.append(argv[i + 1])
            i += 1
        elif a in ("-h", "--help"):
            sys.stdout.write(__doc__)
            return 0
        elif not a.startswith("-") and top is None:
            top = a
        else:
            sys.stderr.write("usage: treedump.py DIR [--mtime reg|all|none] [--exclude NAME]\n")
            return 2
        i += 1
    if top is None:
        sys.stderr.write("usage: treedump.py DIR [--mtime reg|all|none] [--exclude NAME]\n")
        return 2
    d = Dumper(mtime, exclude)
    try:
        lines = d.run(top)
    except OSError as e:
        sys.stderr.write("treedump: %s: %s\n" % (top, e.strerror))
        return 1
    out = sys.stdout.buffer
    for l in lines:
        out.write(l.encode("utf-8", "backslashreplace") + b"\n")
    out.flush()
    return 1 if d.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
