#!/bin/bash
# mount(8), the mount helper and fstab (issue 5).
#  1. mount.fuse3 fallback: with no /sbin/mount.fuse.replfs, mount.fuse3 runs `replfs
#     STORE MNT -o ...` through /bin/sh from PATH.  mount(8) gives its helpers no PATH at
#     all (util-linux drops it), so sh's default PATH applies: the test links
#     /usr/local/sbin/replfs -> $REPLFS (made for the test, removed at exit; an existing
#     one that is not ours fails the test).  `mount -t fuse.replfs STORE MNT -o
#     listen=...,key=...` brings up a master (fstype fuse.replfs, writable); mount.fuse3
#     run directly with PATH=DIR:... (DIR/replfs -> $REPLFS) mounts too
#  2. /sbin/mount.fuse.replfs -> $REPLFS (made for the test, removed at exit; an
#     existing symlink is put back), with no replfs on PATH: a slave of that master
#     mounted by `mount -t fuse.replfs ... -o slave_of=...` receives the master's file;
#     `mount.fuse.replfs SPEC DIR -f -o ...` checks and mounts nothing
#  3. `umount MNT` stops each daemon cleanly: its PID exits, STORE/pid is removed, and the
#     next mount reports no recovery; the control: after SIGKILL the next mount through
#     mount(8) does print "replfs: recovery:"
#  4. fstab (_netdev,nofail,...): `mount -T FSTAB MNT` mounts that line's store;
#     a line "none MNT fuse.replfs noauto,config=FILE" mounts the store FILE names;
#     `mount -a -T FSTAB` mounts master and slave (not the noauto line), which replicate
#  5. -o ro: writes get EROFS and MNT/.replfs says "writable no"; a bad option through mount(8) (helper and fallback):
#     non-zero exit, one "replfs: " line, nothing mounted
# Runs in ~10 s.
: "${E2E_TMPDIR:=/var/tmp}"
: "${E2E_TIMEOUT:=200}"
export E2E_TMPDIR E2E_TIMEOUT
source "$(dirname "$0")/lib.sh"
e2e_setup
require_tools mount umount mount.fuse3

HELPER=/sbin/mount.fuse.replfs
HELPER_MADE=0 HELPER_OLD=""
# the fallback's replfs, where sh's default PATH finds it
SHBIN=/usr/local/sbin/replfs
SHBIN_MADE=0
helper_remove() {   # remove the link this test made (only that)
    if [ "$HELPER_MADE" = 1 ] && [ -L "$HELPER" ] && [ "$(readlink "$HELPER")" = "$REPLFS" ]; then
        rm -f "$HELPER"
    fi
    HELPER_MADE=0
}
helper_restore() {  # at exit: ours removed, a symlink that was there before put back
    helper_remove
    [ -n "$HELPER_OLD" ] && [ ! -e "$HELPER" ] && [ ! -L "$HELPER" ] && ln -s "$HELPER_OLD" "$HELPER"
}
helper_install() { ln -s "$REPLFS" "$HELPER" && HELPER_MADE=1; }
shbin_remove() {
    if [ "$SHBIN_MADE" = 1 ] && [ -L "$SHBIN" ] && [ "$(readlink "$SHBIN")" = "$REPLFS" ]; then rm -f "$SHBIN"; fi
    SHBIN_MADE=0
}
# (replaces e2e_setup's trap; e2e_cleanup still runs, with this test's exit status)
trap 'rc=$?; helper_restore; shbin_remove; (exit $rc); e2e_cleanup' EXIT
if [ -L "$HELPER" ]; then
    HELPER_OLD="$(readlink "$HELPER")"     # put back at exit
    rm -f "$HELPER"
elif [ -e "$HELPER" ]; then
    fatal "$HELPER is installed (not a symlink): this build's helper cannot be tested here"
fi
if [ -e "$SHBIN" ] || [ -L "$SHBIN" ]; then
    fatal "$SHBIN exists: the mount.fuse3 fallback would run it instead of $REPLFS"
fi
ln -s "$REPLFS" "$SHBIN" && SHBIN_MADE=1 || fatal "cannot create $SHBIN"

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
KEY="$WORK/cluster.key"
"$REPLFS" keygen > "$KEY" && chmod 600 "$KEY" || fatal "replfs keygen failed"
PM="$(free_port)" PS="$(free_port)"
for s in ms ss rs xs; do init_store "$WORK/$s" || fatal "init failed"; mkdir -p "$WORK/${s%s}m"; done
BIN="$WORK/bin"
mkdir -p "$BIN" && ln -s "$REPLFS" "$BIN/replfs"
# PATH without any replfs: only the helper can find it
CLEANPATH="$(tr ':' '\n' <<<"$PATH" | while read -r d; do [ -x "$d/replfs" ] || echo "$d"; done | paste -sd:)"

fstype() { awk -v p="$(realpath -m "$1")" '$2 == p { t = $3 } END { print t }' /proc/self/mounts; }
# mnt NAME MNT [PATH] mount ARGS...: run mount(8); on success track MNT and its daemon
mnt() {
    local name="$1" m="$2" path="$3" rc p
    shift 3
    E2E_MOUNTS+=("$m")
    timeout 60 env PATH="$path" mount "$@" > "$WORK/$name.out" 2> "$WORK/$name.err" < /dev/null
    rc=$?
    MNT_RC=$rc
    [ $rc -eq 0 ] || { fail "$name: mount $* exited $rc: $(head -c 400 "$WORK/$name.err")"; return 1; }
    if ! e2e_is_mounted "$m"; then fail "$name: mount exited 0 but $m is not mounted"; return 1; fi
    return 0
}
track() { local p; p="$(daemon_pid "$1")"; [ -n "$p" ] && E2E_PIDS+=("$p:$(proc_start "$p")"); }
wait_file() {   # wait_file PATH CONTENT [SECONDS=30]
    local i
    for ((i = 0; i < ${3:-30} * 10; i++)); do
        [ "$(cat "$1" 2>/dev/null)" = "$2" ] && return 0
        sleep 0.1
    done
    return 1
}
# clean_umount NAME MNT STORE: umount(8); the daemon exits, STORE/pid goes
clean_umount() {
    local name="$1" m="$2" s="$3" p
    p="$(daemon_pid "$s")"
    if ! timeout 60 umount "$m" 2> "$WORK/umount.err"; then
        fail "$name: umount $m: $(cat "$WORK/umount.err")"; return 1
    fi
    if [ -z "$p" ]; then fail "$name: no STORE/pid while mounted"; return 1; fi
    if wait_gone "$p" 30; then pass "$name: umount: daemon $p exited"
    else fail "$name: daemon $p still running 30 s after umount"; return 1; fi
    if [ -e "$s/pid" ]; then fail "$name: $s/pid still there after a clean stop"
    else pass "$name: STORE/pid removed"; fi
}
no_recovery() {   # no_recovery NAME STORE MNT: the next mount reports no recovery
    local name="$1" s="$2" m="$3"
    if try_mount "$s" "$m"; then
        if grep -q "recovery:" "$MOUNT_ERR"; then fail "$name: the mount after umount reported a recovery: $(cat "$MOUNT_ERR")"
        else pass "$name: the mount after umount reports no recovery"; fi
        unmount "$m" "$s"
    else
        fail "$name: remount after umount: $(cat "$MOUNT_ERR")"
    fi
}

# ------------------------------------------------------------ 1. mount.fuse3 fallback
[ -e "$HELPER" ] && fatal "$HELPER exists although it was removed"
if mnt fallback "$WORK/mm" "$CLEANPATH" -t fuse.replfs "$WORK/ms" "$WORK/mm" -o "listen=127.0.0.1:$PM,key=$KEY"; then
    track "$WORK/ms"
    pass "fallback: mount -t fuse.replfs through mount.fuse3 and replfs on PATH"
    check_eq "$(fstype "$WORK/mm")" fuse.replfs "fallback: the mount's type is fuse.replfs"
    echo "from the master" > "$WORK/mm/hello" && check_eq "$(cat "$WORK/mm/hello")" "from the master" "fallback: the master mount is writable"
    check_eq "$(timeout 10 "$REPLFS" status "$WORK/mm" --json 2>/dev/null | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["role"])')" master \
        "fallback: the daemon is a master"
fi
# mount.fuse3 itself, as documented: `replfs` from PATH
E2E_MOUNTS+=("$WORK/xm")
if timeout 60 env PATH="$BIN:$CLEANPATH" mount.fuse3 "$WORK/xs" "$WORK/xm" -t fuse.replfs -o rw,nodev,nosuid \
        > "$WORK/mf3.out" 2> "$WORK/mf3.err" < /dev/null && e2e_is_mounted "$WORK/xm"; then
    track "$WORK/xs"
    pass "mount.fuse3 with replfs on PATH mounts"
    clean_umount mount.fuse3 "$WORK/xm" "$WORK/xs"
else
    fail "mount.fuse3 STORE MNT -t fuse.replfs with replfs on PATH: $(head -c 300 "$WORK/mf3.err")"
fi

# ------------------------------------------------------------ 2. the helper
helper_install || fatal "cannot create $HELPER"
if mnt helper "$WORK/sm" "$CLEANPATH" -t fuse.replfs "$WORK/ss" "$WORK/sm" \
        -o "slave_of=http://127.0.0.1:$PM,key=$KEY,listen=127.0.0.1:$PS"; then
    track "$WORK/ss"
    pass "helper: mount -t fuse.replfs through $HELPER (no replfs on PATH)"
    if wait_file "$WORK/sm/hello" "from the master"; then pass "helper: the slave received the master's file"
    else fail "helper: the master's file did not reach the slave in 30 s"; fi
fi
timeout 30 env PATH="$CLEANPATH" "$HELPER" "$WORK/xs" "$WORK/xm" -f -o "listen=127.0.0.1:$(free_port),key=$KEY" \
    > "$WORK/fake.out" 2> "$WORK/fake.err" < /dev/null
rc=$?
if [ $rc -eq 0 ] && ! e2e_is_mounted "$WORK/xm"; then pass "helper -f (fake): exit 0, nothing mounted"
else fail "helper -f (fake): exit $rc, mounted: $(e2e_is_mounted "$WORK/xm" && echo yes || echo no): $(head -c 300 "$WORK/fake.err")"; fi

# ------------------------------------------------------------ 3. umount is a clean stop
clean_umount slave "$WORK/sm" "$WORK/ss"
clean_umount master "$WORK/mm" "$WORK/ms"
no_recovery master "$WORK/ms" "$WORK/mm"
# the control: a killed daemon's next mount does report its recovery, through mount(8)
if mnt killme "$WORK/xm" "$CLEANPATH" -t fuse.replfs "$WORK/xs" "$WORK/xm"; then
    p="$(daemon_pid "$WORK/xs")"
    echo data > "$WORK/xm/f"
    kill -KILL "$p"; wait_gone "$p" 20
    tl_abort_conn "$WORK/xm"; fusermount3 -u -z "$WORK/xm" 2>/dev/null
    if mnt killed "$WORK/xm" "$CLEANPATH" -t fuse.replfs "$WORK/xs" "$WORK/xm"; then
        track "$WORK/xs"
        if grep -q "^replfs: recovery:" "$WORK/killed.err"; then pass "control: after SIGKILL, mount(8) shows 'replfs: recovery:'"
        else fail "control: after SIGKILL the next mount did not report a recovery: $(head -c 300 "$WORK/killed.err")"; fi
        check_eq "$(cat "$WORK/xm/f" 2>/dev/null)" data "control: the write before SIGKILL survived"
        clean_umount killed "$WORK/xm" "$WORK/xs"
    fi
fi

# ------------------------------------------------------------ 4. fstab
FSTAB="$WORK/fstab"
cat > "$FSTAB" <<EOF
# replfs test fstab
$WORK/ms  $WORK/mm  fuse.replfs  _netdev,nofail,listen=127.0.0.1:$PM,key=$KEY  0 0
$WORK/ss  $WORK/sm  fuse.replfs  _netdev,nofail,slave_of=http://127.0.0.1:$PM,listen=127.0.0.1:$PS,key=$KEY  0 0
none  $WORK/xm  fuse.replfs  noauto,nofail,config=$WORK/x.conf  0 0
EOF
printf '[mount]\nstore = %s\n' "$WORK/xs" > "$WORK/x.conf"
if mnt fstab_conf "$WORK/xm" "$CLEANPATH" -T "$FSTAB" "$WORK/xm"; then
    track "$WORK/xs"
    check_eq "$(fstype "$WORK/xm")" fuse.replfs "fstab: 'none MNT fuse.replfs config=FILE' mounts the store the file names"
    clean_umount fstab_conf "$WORK/xm" "$WORK/xs"
fi
if mnt fstab_one "$WORK/mm" "$CLEANPATH" -T "$FSTAB" "$WORK/mm"; then
    track "$WORK/ms"
    pass "fstab: mount -T FSTAB MNT mounted the master's line"
    e2e_is_mounted "$WORK/sm" && fail "fstab: mount -T FSTAB MNT also mounted the slave"
    clean_umount fstab_one "$WORK/mm" "$WORK/ms"
fi
E2E_MOUNTS+=("$WORK/mm" "$WORK/sm")
timeout 90 env PATH="$CLEANPATH" mount -a -T "$FSTAB" > "$WORK/fstab_all.out" 2> "$WORK/fstab_all.err" < /dev/null
rc=$?
if [ $rc -eq 0 ] && e2e_is_mounted "$WORK/mm" && e2e_is_mounted "$WORK/sm"; then
    track "$WORK/ms"; track "$WORK/ss"
    pass "fstab: mount -a -T FSTAB mounted master and slave"
    e2e_is_mounted "$WORK/xm" && fail "fstab: mount -a mounted the noauto line"
    echo "through fstab" > "$WORK/mm/fstab-file"
    if wait_file "$WORK/sm/fstab-file" "through fstab"; then pass "fstab: the pair replicates"
    else fail "fstab: the master's file did not reach the slave in 30 s"; fi
    clean_umount fstab_slave "$WORK/sm" "$WORK/ss"
    clean_umount fstab_master "$WORK/mm" "$WORK/ms"
else
    fail "fstab: mount -a -T exited $rc, master mounted: $(e2e_is_mounted "$WORK/mm" && echo yes || echo no), slave: $(e2e_is_mounted "$WORK/sm" && echo yes || echo no): $(head -c 400 "$WORK/fstab_all.err")"
fi

# ------------------------------------------------------------ 5. ro, bad options
if mnt ro "$WORK/rm" "$CLEANPATH" -t fuse.replfs "$WORK/rs" "$WORK/rm" -o ro; then
    track "$WORK/rs"
    "$PY" -c '
import errno, os, sys
for what, fn in (("create", lambda: os.close(os.open(sys.argv[1] + "/f", os.O_CREAT | os.O_WRONLY, 0o644))),
                 ("mkdir", lambda: os.mkdir(sys.argv[1] + "/d"))):
    try:
        fn(); print(what, "succeeded")
    except OSError as e:
        print(what, errno.errorcode[e.errno])' "$WORK/rm" > "$WORK/ro.out" 2>&1
    check_eq "$(paste -sd, "$WORK/ro.out")" "create EROFS,mkdir EROFS" "-o ro: create and mkdir get EROFS"
    check_eq "$(awk '$1 == "writable" { print $2 }' "$WORK/rm/.replfs" 2>&1)" no "-o ro: MNT/.replfs says writable no"
    clean_umount ro "$WORK/rm" "$WORK/rs"
fi
bad_option() {   # bad_option NAME PATH: mount -o frobnicate=1 must fail with one line
    local name="$1" rc
    E2E_MOUNTS+=("$WORK/rm")
    timeout 60 env PATH="$2" mount -t fuse.replfs "$WORK/rs" "$WORK/rm" -o frobnicate=1 \
        > "$WORK/bad.out" 2> "$WORK/bad.err" < /dev/null
    rc=$?
    if [ $rc -ne 0 ] && [ "$(wc -l < "$WORK/bad.err")" -eq 1 ] && grep -q '^replfs: .*frobnicate' "$WORK/bad.err"; then
        pass "$name: bad option: exit $rc: $(cat "$WORK/bad.err")"
    else
        fail "$name: bad option: expected non-zero exit and one 'replfs: ' line naming it, got exit $rc: $(head -c 400 "$WORK/bad.err")"
    fi
    e2e_is_mounted "$WORK/rm" && { fail "$name: a bad option still mounted"; unmount "$WORK/rm" "$WORK/rs"; }
}
bad_option helper "$CLEANPATH"
helper_remove
[ -e "$HELPER" ] && [ "$(readlink "$HELPER")" = "$REPLFS" ] && fail "$HELPER still there after removal"
bad_option fallback "$CLEANPATH"
e2e_finish
