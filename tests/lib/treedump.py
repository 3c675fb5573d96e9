#!/usr/bin/env python3
"""Canonical dump of a directory tree, one sorted line per entry.

Usage:  treedump.py DIR [--mtime all|reg|none] [--no-mtime] [--no-root] [--no-owner]
                        [--exclude NAME ...]

Shared by the e2e and crash tests.

Each line is TAB-separated:

    PATH  TYPE  mode=OOOO  uid=N  gid=N  nlink=N  [size=N sha256=HEX | target=T | rdev=MAJ,MIN]
          [mtime=NS]  [xattr=NAME=HEX;NAME=HEX]  [hl=FIRSTPATH]

PATH     path relative to DIR ("." for DIR itself); bytes that are not printable
         UTF-8 are escaped as \\xNN, and TAB, newline and backslash are escaped.
TYPE     reg dir lnk fifo chr blk sock
mode     permission bits incl. setuid/setgid/sticky, 4 octal digits
size     regular files and symlinks; not printed for directories (their st_size is
         filesystem-specific)
sha256   of the whole logical content of a regular file (holes read as zeros)
target   symlink target (escaped as PATH)
rdev     device numbers of chr/blk nodes
mtime    st_mtime in nanoseconds; never printed for DIR itself. --mtime all (default)
         prints it for every entry, --mtime reg for regular files only,
         --mtime none (or --no-mtime) never
--no-root leaves DIR's own line out (when two different directories are compared)
xattr    the user.* extended attributes, sorted, values hex-encoded
hl       hard-link group: for every non-directory whose st_nlink > 1, the smallest
         PATH (within the dump) sharing its inode; nlink still shows the real count

The walk is fd-relative (openat), so trees deeper than PATH_MAX are fine.
Symlinks are never followed; FIFOs and devices are never opened.
Exit status: 0 on success, 2 on usage error, 1 if an entry could not be read
(an "ERROR" line is printed for it, so a comparison fails loudly).
"""
import errno
import hashlib
import os
import stat
import sys

TYPES = [
    (stat.S_ISREG, "reg"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "lnk"),
    (stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "chr"), (stat.S_ISBLK, "blk"),
    (stat.S_ISSOCK, "sock"),
]


def esc(b):
    """Escape a bytes path for a single-line, diff-friendly representation."""
    out = []
    s = b.decode("utf-8", "surrogateescape")
    for ch in s:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:          # undecodable byte
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


def user_xattrs(path_for_xattr):
    try:
        names = os.listxattr(path_for_xattr, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return ""    # no xattr support: same as no xattrs
        raise
    names = sorted(n for n in names if n.startswith("user."))
    parts = []
    for n in names:
        v = os.getxattr(path_for_xattr, n, follow_symlinks=False)
        parts.append("%s=%s" % (n, v.hex()))
    return ";".join(parts)


def sha256_fd(fd):
    h = hashlib.sha256()
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            break
        h.update(b)
    return h.hexdigest()


class Dumper:
    def __init__(self, mtime="all", no_owner=False, exclude=(), no_root=False):
        self.mtime = mtime
        self.no_root = no_root
        self.no_owner = no_owner
        self.exclude = set(os.fsencode(e) for e in exclude)
        self.entries = []     # (relpath bytes, fields list, inode key or None)
        self.errors = 0

    def entry(self, rel, dirfd, name, st):
        """rel: bytes relative path. dirfd/name: where it lives (name None for root)."""
        m = st.st_mode
        t = ftype(m)
        f = [t, "mode=%04o" % stat.S_IMODE(m)]
        if not self.no_owner:
            f += ["uid=%d" % st.st_uid, "gid=%d" % st.st_gid]
        f.append("nlink=%d" % st.st_nlink)
        if name is None:
            xpath = "/proc/self/fd/%d" % dirfd
        else:
            xpath = os.fsencode("/proc/self/fd/%d/" % dirfd) + name
        if t == "reg":
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dirfd)
            try:
                f.append("size=%d" % st.st_size)
                f.append("sha256=" + sha256_fd(fd))
            finally:
                os.close(fd)
        elif t == "lnk":
            tgt = os.readlink(name, dir_fd=dirfd)
            f.append("size=%d" % st.st_size)
            f.append("target=" + esc(tgt))
        elif t in ("chr", "blk"):
            f.append("rdev=%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)))
        if name is not None and (self.mtime == "all" or
                                 (self.mtime == "reg" and stat.S_ISREG(st.st_mode))):
            f.append("mtime=%d" % st.st_mtime_ns)
        if t in ("reg", "dir"):
            xa = user_xattrs(xpath)
        elif t == "lnk":
            xa = ""   # user.* xattrs are not permitted on symlinks
        else:
            try:
                xa = user_xattrs(xpath)
            except OSError:
                xa = ""
        if xa:
            f.append("xattr=" + xa)
        key = None
        if t != "dir" and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
        self.entries.append((rel, f, key))

    def walk(self, dirfd, rel):
        try:
            names = sorted(e.name for e in os.scandir(dirfd))
        except OSError as e:
            self.error(rel, e)
            return
        names = [os.fsencode(n) for n in names]
        for name in names:
            if rel == b"." and name in self.exclude:
                continue
            crel = name if rel == b"." else rel + b"/" + name
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
            st = os.fstat(fd)
            if not self.no_root:
                self.entry(b".", fd, None, st)
            self.walk(fd, b".")
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
    args = argv[1:]
    mtime = "all"
    no_owner = no_root = False
    exclude = []
    top = None
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--no-mtime":
            mtime = "none"
        elif a == "--mtime" and i + 1 < len(args) and args[i + 1] in ("all", "reg", "none"):
            i += 1
            mtime = args[i]
        elif a == "--no-root":
            no_root = True
        elif a == "--no-owner":
            no_owner = True
        elif a == "--exclude":
            i += 1
            if i >= len(args):
                sys.stderr.write("treedump: --exclude needs a NAME\n")
                return 2
            exclude.append(args[i])
        elif a in ("-h", "--help"):
            sys.stdout.write(__doc__)
            return 0
        elif a.startswith("-"):
            sys.stderr.write("treedump: unknown option %s\n" % a)
            return 2
        elif top is None:
            top = a
        else:
            sys.stderr.write("usage: treedump.py DIR [--mtime all|reg|none] [--no-root] [--no-owner] [--exclude NAME]\n")
            return 2
        i += 1
    if top is None:
        sys.stderr.write("usage: treedump.py DIR [--mtime all|reg|none] [--no-root] [--no-owner] [--exclude NAME]\n")
        return 2
    d = Dumper(mtime, no_owner, exclude, no_root)
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
