#!/usr/bin/env python3
"""Open files on a slave while the master removes or replaces their names.

usage: slave_open.py REPLFS MASTER_MNT SLAVE_MNT SLAVE_STORE

Every case: the master makes a file, the slave opens it (the descriptor stays
open), the master takes the name away (rename over it, unlink then create again,
rename of its directory, rename of the file itself), the slave applies that.
Then, as on any POSIX filesystem, the open descriptor must still show the old
file whole (fstat size, content read to the end, also after the new file is
read through the name), and a new open of the name must show the new file.
Prints "ok: ..." / "FAIL: ..." lines; exit 1 on any failure.
"""
import json
import os
import subprocess
import sys
import time

REPLFS, M, S, STORE = sys.argv[1:5]
fails = 0


def say(ok, msg):
    global fails
    print(("ok: " if ok else "FAIL: ") + msg, flush=True)
    if not ok:
        fails += 1


def status(mnt):
    out = subprocess.run([REPLFS, "status", mnt, "--json"], capture_output=True, text=True,
                         timeout=10).stdout
    return json.loads(out)


def caught_up(t=30):
    t0 = time.monotonic()
    while time.monotonic() - t0 < t:
        try:
            if status(S).get("applied_lsn") == status(M).get("lsn"):
                return True
        except (ValueError, subprocess.SubprocessError):
            pass
        time.sleep(0.05)
    say(False, "the slave did not catch up in %ds" % t)
    return False


def content(tag, size):
    line = ("%s " % tag).encode() * (size // (len(tag) + 1) + 1)
    return line[:size]


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def read_fd(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    parts = []
    while True:
        b = os.read(fd, 65536)
        if not b:
            break
        parts.append(b)
    return b"".join(parts)


def read_name(path):
    with open(path, "rb") as f:
        return f.read()


def check_old_fd(case, fd, old, new_path, new):
    """The descriptor shows the old file; the name shows the new one."""
    size = os.fstat(fd).st_size
    say(size == len(old), "%s: fstat of the open descriptor gives the old size %d (got %d)"
        % (case, len(old), size))
    got = read_fd(fd)
    say(got == old, "%s: the open descriptor reads the old file whole (%d bytes, got %d)"
        % (case, len(old), len(got)))
    if new is not None:
        try:
            got_new = read_name(new_path)
        except OSError as e:
            got_new = ("error %s" % e).encode()
        say(got_new == new, "%s: a new open of the name reads the new file (%d bytes, got %d)"
            % (case, len(new), len(got_new)))
        # after the new file went through the page cache, the old one again
        got = read_fd(fd)
        size = os.fstat(fd).st_size
        say(got == old and size == len(old),
            "%s: the open descriptor still reads the old file after the new one was read"
            " (size %d, %d bytes)" % (case, size, len(got)))


os.makedirs(os.path.join(M, "so"), exist_ok=True)
caught_up()

# 1. rename over: the new file is shorter, then a case where it is longer
for case, olds, news in (("rename-over, new file shorter", 300000, 70000),
                         ("rename-over, new file longer", 70000, 300000)):
    tag = case.split(",")[1].strip().split()[2]
    old, new = content("old-" + tag, olds), content("new-" + tag, news)
    target = "so/target-" + tag
    write(os.path.join(M, target), old)
    caught_up()
    fd = os.open(os.path.join(S, target), os.O_RDONLY)
    say(os.read(fd, 10) == old[:10], "%s: the slave opened the old file" % case)
    write(os.path.join(M, "so/tmp"), new)
    os.rename(os.path.join(M, "so/tmp"), os.path.join(M, target))
    caught_up()
    check_old_fd(case, fd, old, os.path.join(S, target), new)
    os.close(fd)

# 2. unlink, then a new file of the same name
case = "unlink and create again"
old, new = content("unlinked", 123456), content("recreated", 4567)
write(os.path.join(M, "so/u"), old)
caught_up()
fd = os.open(os.path.join(S, "so/u"), os.O_RDONLY)
os.unlink(os.path.join(M, "so/u"))
caught_up()
say(not os.path.exists(os.path.join(S, "so/u")), "%s: the name is gone on the slave" % case)
check_old_fd(case + " (before the create)", fd, old, None, None)
write(os.path.join(M, "so/u"), new)
caught_up()
check_old_fd(case, fd, old, os.path.join(S, "so/u"), new)
os.close(fd)

# 3. the directory of an open file renamed, a new one made at the old name
case = "directory renamed"
os.makedirs(os.path.join(M, "so/d"), exist_ok=True)
old, new = content("in-d", 88888), content("new-d", 999)
write(os.path.join(M, "so/d/f"), old)
caught_up()
fd = os.open(os.path.join(S, "so/d/f"), os.O_RDONLY)
os.rename(os.path.join(M, "so/d"), os.path.join(M, "so/e"))
os.makedirs(os.path.join(M, "so/d"))
write(os.path.join(M, "so/d/f"), new)
caught_up()
check_old_fd(case, fd, old, os.path.join(S, "so/d/f"), new)
say(read_name(os.path.join(S, "so/e/f")) == old, "%s: the file is at its new path" % case)
os.close(fd)

# 4. the open file itself renamed away, another file made at its name
case = "file renamed away"
old, new = content("moved", 5000), content("replacement", 60000)
write(os.path.join(M, "so/r"), old)
caught_up()
fd = os.open(os.path.join(S, "so/r"), os.O_RDONLY)
os.rename(os.path.join(M, "so/r"), os.path.join(M, "so/r2"))
write(os.path.join(M, "so/r"), new)
caught_up()
check_old_fd(case, fd, old, os.path.join(S, "so/r"), new)
os.close(fd)

# after every last close: nothing is left behind
time.sleep(0.5)
held = [n for n in os.listdir(os.path.join(STORE, "staging")) if n.startswith("held.")]
say(not held, "no kept file is left in STORE/staging after the last close (%s)" % held)
hidden = []
for root, dirs, files in os.walk(os.path.join(STORE, "data")):
    hidden += [os.path.join(root, n) for n in files if n.startswith(".fuse_hidden")]
say(not hidden, "no .fuse_hidden file in the slave's data directory (%s)" % hidden)
sys.exit(1 if fails else 0)
