#!/bin/bash
# Permission semantics for unprivileged users on a replfs mount vs plain ext4:
# ownership of new entries, umask, setgid directories, EACCES/EPERM cases, sticky
# directories, setuid/setgid clearing. Every result and the final tree must match.
source "$(dirname "$0")/lib.sh"
e2e_setup
require_tools setpriv useradd groupadd usermod gpasswd getent fusermount3

UA_NAME=replfs-test UB_NAME=replfs-test2 G_NAME=replfs-tgrp
getent group "$G_NAME" > /dev/null || groupadd "$G_NAME" || fatal "groupadd $G_NAME"
for u in "$UA_NAME" "$UB_NAME"; do
    id "$u" > /dev/null 2>&1 || useradd --no-create-home --shell /usr/sbin/nologin "$u" ||
        fatal "useradd $u"
done
id -nG "$UA_NAME" | grep -qw "$G_NAME" || usermod -aG "$G_NAME" "$UA_NAME" || fatal "usermod"
id -nG "$UB_NAME" | grep -qw "$G_NAME" && gpasswd -d "$UB_NAME" "$G_NAME" > /dev/null
IDS="$(id -u $UA_NAME) $(id -g $UA_NAME) $(id -u $UB_NAME) $(id -g $UB_NAME) $(getent group $G_NAME | cut -d: -f3)"
log "users: $UA_NAME/$UB_NAME group $G_NAME ids: $IDS"

# the scripts must be readable by the unprivileged users wherever the tree lives
mkdir -p "$WORK/bin"
cp "$E2E_DIR/perms_ops.py" "$WORK/bin/" && chmod 755 "$WORK/bin" && chmod 644 "$WORK/bin/perms_ops.py"

S="$WORK/store" MNT="$WORK/mnt" REF="$WORK/ref"
mkdir -p "$REF"
init_store "$S" || fatal "cannot init store"
mount_store "$S" "$MNT" || fatal "cannot mount"
chmod 755 "$MNT" "$REF" || fail "chmod 755 of the mount root"


run_phases() {  # run_phases ROOT LOG
    local root="$1" out="$2" rc
    : > "$out"
    for ph in setup usera userb check; do
        case $ph in
            usera) who=(setpriv --reuid "$UA_NAME" --regid "$(id -g "$UA_NAME")" --init-groups --reset-env) ;;
            userb) who=(setpriv --reuid "$UB_NAME" --regid "$(id -g "$UB_NAME")" --init-groups --reset-env) ;;
            *) who=() ;;
        esac
        (cd / && timeout 60 "${who[@]+"${who[@]}"}" "$PY" "$WORK/bin/perms_ops.py" "$root" $ph $IDS) \
            >> "$out" 2> "$out.$ph.err"
        rc=$?
        [ $rc -eq 0 ] || fail "perms_ops.py phase $ph on $root exited $rc: $(tail -n 3 "$out.$ph.err")"
    done
}
log "running the permission script on the replfs mount"
run_phases "$MNT" "$WORK/mnt.log"
log "running the permission script on plain ext4"
run_phases "$REF" "$WORK/ref.log"
log "$(wc -l < "$WORK/ref.log") results"
# sanity: the reference must really show unprivileged semantics, else the harness is broken
grep -q "^a.create_in_rootdir: ERR EACCES" "$WORK/ref.log" &&
    grep -q "^b.sticky_unlink_others: ERR EPERM" "$WORK/ref.log" ||
    fail "harness: ext4 reference does not show EACCES/EPERM for the test users"
E2E_DIFF_LINES=150 cmp_files "$WORK/ref.log" "$WORK/mnt.log" "every permission result equals ext4"

treedump "$REF/p" "$WORK/ref.dump" --no-mtime
treedump "$MNT/p" "$WORK/mnt.dump" --no-mtime
cmp_files "$WORK/ref.dump" "$WORK/mnt.dump" "final tree (owners, groups, modes) equals ext4"
unmount "$MNT" "$S"
e2e_finish
