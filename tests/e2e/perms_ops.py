#!/usr/bin/env python3
"""Permission-semantics operation script (run by test_perms.sh).

Usage:  perms_ops.py ROOT PHASE UID_A GID_A UID_B GID_B GID_GROUP
PHASE is one of: setup (as root), usera, userb (as the two unprivileged test
users), check (as root). Prints one line per operation:
LABEL: ok [RESULT] | LABEL: ERR ERRNO-NAME. Runs under ROOT/p.
user A must be a member of GID_GROUP, user B must not.
"""
import errno
import os
import stat
import sys


def tname(m):
    for f, n in ((stat.S_ISREG, "reg"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "lnk")):
        if f(m):
            return n
    return "other"


def uname(uid):
    return {0: "root", UA: "usera", UB: "userb"}.get(uid, str(uid))


def gname(gid):
    return {0: "root", GA: "grpa", GB: "grpb", GG: "testgrp"}.get(gid, str(gid))


def lst(p):
    st = os.lstat(p)
    return "%s %04o %s:%s" % (tname(st.st_mode), stat.S_IMODE(st.st_mode), uname(st.st_uid),
                              gname(st.st_gid))


def write_file(p, data, mode=0o666, flags=os.O_CREAT | os.O_WRONLY | os.O_TRUNC):
    fd = os.open(p, flags, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_file(p):
    fd = os.open(p, os.O_RDONLY)
    try:
        return os.read(fd, 1000).decode()
    finally:
        os.close(fd)


def op(label, fn, *a, **kw):
    try:
        r = fn(*a, **kw)
    except OSError as e:
        print("%s: ERR %s" % (label, errno.errorcode.get(e.errno, e.errno)), flush=True)
        return
    print("%s: ok%s" % (label, "" if r is None else " " + str(r)), flush=True)


def setup():
    os.umask(0)
    op("setup.p", os.mkdir, "p", 0o755)
    os.chdir("p")
    op("setup.rootdir", os.mkdir, "rootdir", 0o755)
    op("setup.rootdir_file", write_file, "rootdir/file", b"root's", 0o644)
    op("setup.rootfile", write_file, "rootfile", b"root data", 0o644)
    op("setup.secret", write_file, "secret", b"secret", 0o600)
    op("setup.open", os.mkdir, "open", 0o777)
    op("setup.sticky", os.mkdir, "sticky", 0o1777)
    op("setup.sgid", lambda: (os.mkdir("sgid", 0o775), os.chown("sgid", 0, GG), os.chmod("sgid", 0o2775)))
    op("setup.sgid_other", lambda: (os.mkdir("sgid_other", 0o777), os.chmod("sgid_other", 0o2777)))
    op("setup.suidfile", lambda: (write_file("suidfile", b"#!/bin/sh\n", 0o755), os.chown("suidfile", 0, GG),
                                  os.chmod("suidfile", 0o6775)))
    op("setup.sgidfile_nogx", lambda: (write_file("sgidfile", b"x", 0o664), os.chown("sgidfile", 0, GG),
                                       os.chmod("sgidfile", 0o2664)))
    op("setup.grpfile", lambda: (write_file("grpfile", b"group writable", 0o664), os.chown("grpfile", 0, GG)))
    op("setup.usera_home", lambda: (os.mkdir("ahome", 0o755), os.chown("ahome", UA, GA)))
    op("setup.list", lambda: [lst(n) for n in sorted(os.listdir("."))])


def usera():
    os.umask(0o027)
    os.chdir("p")
    op("a.ids", lambda: "%s %s" % (uname(os.getuid()), sorted(gname(g) for g in os.getgroups())))
    # creation: ownership and umask
    op("a.create", lambda: (write_file("open/a_file", b"from a", 0o666), lst("open/a_file"))[1])
    op("a.mkdir", lambda: (os.mkdir("open/a_dir", 0o777), lst("open/a_dir"))[1])
    op("a.mkdir_0700", lambda: (os.mkdir("open/a_dir700", 0o700), lst("open/a_dir700"))[1])
    op("a.symlink", lambda: (os.symlink("a_file", "open/a_link"), lst("open/a_link"))[1])
    op("a.mkfifo", lambda: (os.mkfifo("open/a_fifo", 0o666), lst("open/a_fifo"))[1])
    op("a.create_in_own_home", lambda: (write_file("ahome/f", b"home", 0o644), lst("ahome/f"))[1])
    # denied: root's dirs and files
    op("a.create_in_rootdir", write_file, "rootdir/new", b"x")
    op("a.mkdir_in_rootdir", os.mkdir, "rootdir/newdir")
    op("a.unlink_in_rootdir", os.unlink, "rootdir/file")
    op("a.rename_out_of_rootdir", os.rename, "rootdir/file", "open/stolen")
    op("a.write_rootfile", write_file, "rootfile", b"overwrite", 0o644, os.O_WRONLY)
    op("a.append_rootfile", write_file, "rootfile", b"more", 0o644, os.O_WRONLY | os.O_APPEND)
    op("a.truncate_rootfile", os.truncate, "rootfile", 0)
    op("a.read_rootfile", read_file, "rootfile")
    op("a.read_secret", read_file, "secret")
    op("a.chmod_rootfile", os.chmod, "rootfile", 0o666)
    op("a.chown_rootfile", os.chown, "rootfile", UA, GA)
    op("a.utime_explicit_rootfile", os.utime, "rootfile", (1, 1))
    op("a.utime_now_rootfile", os.utime, "rootfile", None)
    op("a.setxattr_rootfile", os.setxattr, "rootfile", "user.x", b"1")
    op("a.link_rootfile", os.link, "secret", "open/secret_link")
    op("a.unlink_rootfile", os.unlink, "rootfile")
    op("a.listdir_rootdir", lambda: sorted(os.listdir("rootdir")))
    # own files
    op("a.chmod_own", lambda: (os.chmod("open/a_file", 0o604), lst("open/a_file"))[1])
    op("a.chown_own_to_root", os.chown, "open/a_file", 0, -1)
    op("a.chgrp_own_to_member_group", lambda: (os.chown("open/a_file", -1, GG), lst("open/a_file"))[1])
    op("a.chgrp_own_to_nonmember_group", os.chown, "open/a_file", -1, 0)
    op("a.utime_explicit_own", lambda: (os.utime("open/a_file", ns=(5, 7)), os.stat("open/a_file").st_mtime_ns)[1])
    op("a.setxattr_own", lambda: (os.setxattr("open/a_file", "user.mine", b"yes"),
                                  os.getxattr("open/a_file", "user.mine"))[1])
    op("a.setxattr_trusted", os.setxattr, "open/a_file", "trusted.x", b"1")
    # setgid directory
    op("a.sgid_create", lambda: (write_file("sgid/f", b"in sgid", 0o666), lst("sgid/f"))[1])
    op("a.sgid_mkdir", lambda: (os.mkdir("sgid/sub", 0o777), lst("sgid/sub"))[1])
    op("a.sgid_mkdir_nested", lambda: (os.mkdir("sgid/sub/deeper", 0o700), lst("sgid/sub/deeper"))[1])
    op("a.sgid_nested_file", lambda: (write_file("sgid/sub/deeper/f", b"deep", 0o640),
                                      lst("sgid/sub/deeper/f"))[1])
    op("a.sgid_other_create", lambda: (write_file("sgid_other/f", b"x", 0o666), lst("sgid_other/f"))[1])
    op("a.sgid_other_mkdir", lambda: (os.mkdir("sgid_other/d", 0o777), lst("sgid_other/d"))[1])
    op("a.chmod_gs_member", lambda: (os.chmod("sgid/f", 0o2755), lst("sgid/f"))[1])
    op("a.chmod_gs_nonmember_cleared", lambda: (os.chmod("sgid_other/f", 0o2755), lst("sgid_other/f"))[1])
    op("a.chmod_sticky_file", lambda: (os.chmod("open/a_file", 0o1644), lst("open/a_file"))[1])
    # writing to a group-writable setuid/setgid file clears the bits
    op("a.write_suidfile", lambda: (write_file("suidfile", b"#!/bin/sh\necho\n", 0, os.O_WRONLY | os.O_APPEND),
                                    lst("suidfile"))[1])
    op("a.write_sgidfile_no_gx", lambda: (write_file("sgidfile", b"y", 0, os.O_WRONLY | os.O_APPEND),
                                          lst("sgidfile"))[1])
    op("a.truncate_grpfile", lambda: (os.truncate("grpfile", 5), read_file("grpfile"))[1])
    op("a.chmod_grpfile_not_owner", os.chmod, "grpfile", 0o666)
    # sticky dir
    op("a.sticky_create", lambda: (write_file("sticky/a_file", b"a's", 0o644), lst("sticky/a_file"))[1])
    op("a.sticky_mkdir", lambda: (os.mkdir("sticky/a_dir", 0o755), lst("sticky/a_dir"))[1])
    op("a.sticky_create_2", lambda: (write_file("sticky/a_file2", b"a's too", 0o666), lst("sticky/a_file2"))[1])
    op("a.sticky_unlink_own", os.unlink, "sticky/a_file2")
    # a directory for B to be denied in
    op("a.private_dir", lambda: (os.mkdir("open/a_private", 0o700), write_file("open/a_private/x", b"p", 0o600),
                                 lst("open/a_private"))[2])


def userb():
    os.umask(0o022)
    os.chdir("p")
    op("b.ids", lambda: "%s %s" % (uname(os.getuid()), sorted(gname(g) for g in os.getgroups())))
    op("b.sticky_unlink_others", os.unlink, "sticky/a_file")
    op("b.sticky_rename_others", os.rename, "sticky/a_file", "sticky/b_took")
    op("b.sticky_rmdir_others", os.rmdir, "sticky/a_dir")
    op("b.sticky_overwrite_by_rename", lambda: (write_file("sticky/b_tmp", b"b"), os.rename("sticky/b_tmp", "sticky/a_file")))
    op("b.sticky_cleanup", os.unlink, "sticky/b_tmp")
    op("b.sticky_create_own", lambda: (write_file("sticky/b_file", b"b's"), lst("sticky/b_file"))[1])
    op("b.sticky_rename_own", os.rename, "sticky/b_file", "sticky/b_file2")
    op("b.sticky_unlink_own", os.unlink, "sticky/b_file2")
    op("b.read_a_file_o_r", read_file, "open/a_file")
    op("b.write_a_file", write_file, "open/a_file", b"b was here", 0o644, os.O_WRONLY)
    op("b.chmod_a_file", os.chmod, "open/a_file", 0o777)
    op("b.chown_a_file", os.chown, "open/a_file", UB, -1)
    op("b.utime_explicit_a_file", os.utime, "open/a_file", (1, 1))
    op("b.list_a_private", os.listdir, "open/a_private")
    op("b.read_a_private", read_file, "open/a_private/x")
    op("b.unlink_in_open_dir", os.unlink, "open/a_file")   # open/ is 0777, no sticky bit: allowed
    op("b.sgid_create_nonmember", lambda: (write_file("sgid/b", b"x"), lst("sgid/b")))
    op("b.sgid_other_create", lambda: (write_file("sgid_other/b", b"x"), lst("sgid_other/b"))[1])
    op("b.write_grpfile_nonmember", write_file, "grpfile", b"no", 0o644, os.O_WRONLY)
    op("b.exec_search_rootdir", lambda: os.stat("rootdir/file").st_size)
    op("b.create_in_ahome", write_file, "ahome/b", b"x")


def check():
    os.chdir("p")
    out = []
    for dp, dns, fns in os.walk("."):
        for n in sorted(dns + fns):
            out.append("%s=%s" % (os.path.join(dp, n), lst(os.path.join(dp, n))))
    for l in sorted(out):
        print("check: " + l)
    op("check.sticky_a_file_content", read_file, "sticky/a_file")
    op("check.rootfile_content", read_file, "rootfile")


def main():
    global UA, UB, GA, GB, GG
    root, phase = sys.argv[1], sys.argv[2]
    UA, GA, UB, GB, GG = (int(x) for x in sys.argv[3:8])
    os.chdir(root)
    {"setup": setup, "usera": usera, "userb": userb, "check": check}[phase]()


if __name__ == "__main__":
    main()
