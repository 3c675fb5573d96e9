#!/bin/bash
# Development stand-in for replfs, used to prove the e2e harness before replfs exists:
#   cd build && REPLFS=$PWD/../tests/e2e/fake_replfs_passthrough.sh bash ../tests/e2e/test_ops.sh
# Implements only `init STORE` and `mount STORE MNT [-o ...]` on top of libfuse's
# passthrough_ll example (copied from libfuse3-dev, patched so that new entries get
# the caller's uid/gid and renameat2 flags are passed on; compiled on first use into
# /tmp). Not a test and not run by ctest: it has no journal, so the persistence and
# bad-input tests only partly apply to it.
set -u
PT=${PASSTHROUGH_BIN:-/tmp/replfs-e2e-passthrough_ll}
EX=/usr/share/doc/libfuse3-dev/examples
if [ ! -x "$PT" ]; then
    d=$(mktemp -d)
    cp "$EX/passthrough_ll.c" "$EX/passthrough_helpers.h" "$d/" || { echo "replfs: no $EX/passthrough_ll.c" >&2; exit 1; }
    python3 - "$d/passthrough_ll.c" <<'PY' || { echo "replfs: cannot patch passthrough_ll.c" >&2; exit 1; }
import sys
p = sys.argv[1]
s = open(p).read()
def rep(a, b):
    global s
    assert s.count(a) == 1, a
    s = s.replace(a, b)
rep("#include <sys/file.h>", "#include <sys/file.h>\n#include <sys/fsuid.h>\n#include <sys/syscall.h>\n"
    "#define AS_CALLER(req, stmt) do { const struct fuse_ctx *c_ = fuse_req_ctx(req); "
    "gid_t gl_[256]; int ng_ = fuse_req_getgroups(req, 256, gl_); "
    "if (ng_ > 0 && ng_ <= 256) syscall(SYS_setgroups, ng_, gl_); "
    "int og_ = setfsgid(c_->gid), ou_ = setfsuid(c_->uid); stmt; int e_ = errno; "
    "setfsuid(ou_); setfsgid(og_); syscall(SYS_setgroups, 0, NULL); errno = e_; } while (0)")
rep("res = mknod_wrapper(dir->fd, name, link, mode, rdev);",
    "AS_CALLER(req, res = mknod_wrapper(dir->fd, name, link, mode, rdev));")
rep("fd = openat(lo_fd(req, parent), name,\n\t\t    (fi->flags | O_CREAT) & ~O_NOFOLLOW, mode);",
    "AS_CALLER(req, fd = openat(lo_fd(req, parent), name, (fi->flags | O_CREAT) & ~O_NOFOLLOW, mode));")
rep("if (flags) {\n\t\tfuse_reply_err(req, EINVAL);", "if (0) {\n\t\tfuse_reply_err(req, EINVAL);")
rep("res = renameat(lo_fd(req, parent), name,\n\t\t\tlo_fd(req, newparent), newname);",
    "res = syscall(SYS_renameat2, lo_fd(req, parent), name, lo_fd(req, newparent), newname, flags);")
open(p, "w").write(s)
PY
    gcc -Wall -O2 -DHAVE_FALLOCATE -DHAVE_POSIX_FALLOCATE -DHAVE_COPY_FILE_RANGE \
        "$d/passthrough_ll.c" $(pkg-config fuse3 --cflags --libs) -o "$PT" ||
        { echo "replfs: cannot build passthrough_ll" >&2; rm -rf "$d"; exit 1; }
    rm -rf "$d"
fi
case "${1:-}" in
init)
    [ $# -eq 2 ] || { echo "replfs: usage: init STORE" >&2; exit 2; }
    [ -e "$2/.fake_store" ] && { echo "replfs: $2: already a store" >&2; exit 1; }
    mkdir -p "$2/data" "$2/journal" && touch "$2/.fake_store" && chmod 755 "$2/data"
    ;;
mount)
    [ $# -ge 3 ] || { echo "replfs: usage: mount STORE MNT" >&2; exit 2; }
    s="$2" m="$3"
    [ -e "$s/.fake_store" ] || { echo "replfs: $s: not a store" >&2; exit 1; }
    [ -d "$m" ] || { echo "replfs: $m: no such directory" >&2; exit 1; }
    mountpoint -q "$m" && { echo "replfs: $m: already a mount point" >&2; exit 1; }
    s=$(realpath "$s")
    "$PT" -f -o allow_other,default_permissions,xattr,source="$s/data" "$m" \
        < /dev/null > /dev/null 2> "$s/daemon.log" &
    echo $! > "$s/pid"
    for i in $(seq 100); do mountpoint -q "$m" && exit 0; sleep 0.05; done
    echo "replfs: mount did not come up" >&2; exit 1
    ;;
*)  echo "replfs: unknown subcommand '${1:-}'" >&2; exit 2 ;;
esac
