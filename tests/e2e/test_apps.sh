#!/bin/bash
# Real applications on a replfs mount, each compared with the same run on plain ext4:
# git (init/add/commit/gc/fsck), tar x of a real tree, cp -a, rsync -aHX,
# SQLite in journal_mode DELETE and WAL, gcc compile + run.
source "$(dirname "$0")/lib.sh"
e2e_setup
require_tools git sqlite3 rsync tar cp gcc setfattr mkfifo mknod diff fusermount3

S="$WORK/store" MNT="$WORK/mnt" REF="$WORK/ref" SRC="$WORK/src"
mkdir -p "$REF"
init_store "$S" || fatal "cannot init store"
mount_store "$S" "$MNT" || fatal "cannot mount"

# ------------------------------------------------------------------ source tree
# a real tree (system headers, ~2000 files) plus a synthetic part with every kind
# of entry and metadata tar/cp/rsync carry (built on ext4, outside the mount)
mkdir -p "$SRC/inc"
for d in linux asm-generic x86_64-linux-gnu c++ sound drm; do
    [ -d "/usr/include/$d" ] && cp -a "/usr/include/$d" "$SRC/inc/"
done
X="$SRC/extra"
mkdir -p "$X/empty dir" "$X/ünïcødé ☃" "$X/private"
head -c 3145728 /dev/urandom > "$X/random 3M.bin"
printf 'hello\n' > "$X/ünïcødé ☃/файл.txt"
truncate -s 10M "$X/sparse" && printf 'middle' | dd of="$X/sparse" bs=1 seek=5000000 conv=notrunc status=none
printf 'linked\n' > "$X/hl1" && ln "$X/hl1" "$X/hl2" && ln "$X/hl1" "$X/private/hl3"
ln -s hl1 "$X/sym_rel" && ln -s /nonexistent/target "$X/sym_dangling" && ln -s "ünïcødé ☃" "$X/sym_dir"
mkfifo "$X/fifo" && mknod "$X/null_dev" c 1 3
printf 'x' > "$X/suid" && chmod 4755 "$X/suid"
printf 'x' > "$X/owned" && chown 1234:5678 "$X/owned" && chmod 0640 "$X/owned"
chown 4321:8765 "$X/private" && chmod 0700 "$X/private"
chmod 1777 "$X/empty dir"
printf 'xattrs\n' > "$X/xattrs" && setfattr -n user.one -v first "$X/xattrs" &&
    setfattr -n user.two -v 0x00ff00 "$X/xattrs" && setfattr -n user.dir -v d "$X/private"
for i in $(seq 1 300); do printf '%d\n' "$i" > "$X/small_$i"; done
touch -h -d '2001-02-03 04:05:06.123456789' "$X/sym_rel" "$X/hl1" "$X/owned"
touch -d '1999-12-31 23:59:59' "$X/empty dir" "$X/ünïcødé ☃"
NFILES=$(find "$SRC" | wc -l)
log "source tree: $NFILES entries, $(du -sh "$SRC" | cut -f1)"
[ "$NFILES" -ge 1500 ] || note "source tree smaller than intended ($NFILES entries)"
treedump "$SRC" "$WORK/src.dump"

TAROPTS=(--xattrs --xattrs-include='user.*' --numeric-owner)
tar "${TAROPTS[@]}" -cf "$WORK/src.tar" -C "$SRC" . || fatal "tar c of the source tree failed (harness)"

# compare_trees NAME: $REF/NAME vs $MNT/NAME (diff -r + full metadata dump incl. mtimes)
compare_trees() {
    local n="$1"
    # diff reports same-type special files as "File A is a fifo while file B is a fifo"
    diff -r --no-dereference "$REF/$n" "$MNT/$n" 2>&1 |
        grep -Ev '^File .* is a (fifo|character special file|block special file|socket) while file .* is a \1$' \
        > "$WORK/$n.diffr"
    if [ ! -s "$WORK/$n.diffr" ]; then
        pass "$n: diff -r with the ext4 copy is clean"
    else
        fail "$n: diff -r differs: $(head -n 10 "$WORK/$n.diffr")"
    fi
    treedump "$REF/$n" "$WORK/$n.ref.dump"
    treedump "$MNT/$n" "$WORK/$n.mnt.dump"
    cmp_files "$WORK/$n.ref.dump" "$WORK/$n.mnt.dump" "$n: metadata dump (incl. mtimes, owners, xattrs, links) equals ext4"
    cmp -s "$WORK/src.dump" "$WORK/$n.ref.dump" || {
        fail "$n: harness: the ext4 copy differs from the source"
        diff "$WORK/src.dump" "$WORK/$n.ref.dump" | head -n 10 | sed 's/^/    /'
    }
}

# ------------------------------------------------------------------------- tar
TIMES="${TIMES:-} tar@$SECONDS"
for side in "$REF" "$MNT"; do
    mkdir "$side/tarx" && timeout 120 tar "${TAROPTS[@]}" -xpf "$WORK/src.tar" -C "$side/tarx" \
        2> "$WORK/tar.err" || fail "tar x into $side failed: $(head -n 3 "$WORK/tar.err")"
done
compare_trees tarx

# -------------------------------------------------------------- cp -a / rsync
TIMES="${TIMES:-} rsync@$SECONDS"
for side in "$REF" "$MNT"; do
    timeout 120 cp -a "$SRC" "$side/cpa" 2> "$WORK/cp.err" ||
        fail "cp -a into $side failed: $(head -n 3 "$WORK/cp.err")"
done
compare_trees cpa
for side in "$REF" "$MNT"; do
    timeout 120 rsync -aHX "$SRC/" "$side/rsync/" 2> "$WORK/rsync.err" ||
        fail "rsync -aHX into $side failed: $(head -n 3 "$WORK/rsync.err")"
done
compare_trees rsync
# a second rsync must find nothing to transfer (sizes + mtimes read back correctly)
n=$(timeout 60 rsync -aHXi "$SRC/" "$MNT/rsync/" | grep -c '^[<>ch.]f' || true)
check_eq "$n" 0 "second rsync -aHX onto the mount transfers nothing"

# ------------------------------------------------------------------------- git
TIMES="${TIMES:-} git@$SECONDS"
export HOME="$WORK/home" GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=E2E GIT_AUTHOR_EMAIL=e2e@example.org \
    GIT_COMMITTER_NAME=E2E GIT_COMMITTER_EMAIL=e2e@example.org \
    GIT_AUTHOR_DATE='2020-01-01T00:00:00Z' GIT_COMMITTER_DATE='2020-01-01T00:00:00Z'
mkdir -p "$HOME"
git_run() {  # git_run DIR: prints a deterministic summary of the repository
    local d="$1/repo"
    mkdir "$d" && cd "$d" || return 1
    {
        git init -q -b main . &&
        cp -a "$SRC/inc/linux" . && cp "$SRC/extra/random 3M.bin" . && ln -s linux/fs.h link &&
        git add -A && git commit -q -m "first" &&
        git mv linux/fs.h fs.h && echo change >> fs.h && rm -rf linux/usb &&
        git add -A && git commit -q -m "second" &&
        git tag -a v1 -m v1 &&
        git gc -q --prune=now &&
        git fsck --strict --full --no-progress &&
        git log --format='%H %s' && git rev-parse 'HEAD^{tree}' v1 &&
        git status --porcelain && git count-objects -v | grep -E '^(count|in-pack)' &&
        git checkout -q HEAD~1 && git checkout -q main && git status --porcelain && echo done
    } 2>&1
    local rc=$?
    cd "$WORK"
    return $rc
}
git_run "$REF" > "$WORK/git.ref" || fail "git on ext4 failed (harness): $(tail -n 3 "$WORK/git.ref")"
timeout 120 bash -c "$(declare -f git_run); SRC='$SRC' WORK='$WORK' git_run '$MNT'" > "$WORK/git.mnt" ||
    fail "git on the mount failed: $(tail -n 5 "$WORK/git.mnt")"
cmp_files "$WORK/git.ref" "$WORK/git.mnt" "git init/add/commit/gc/fsck on the mount: same commits, trees and clean fsck"

# ---------------------------------------------------------------------- sqlite
TIMES="${TIMES:-} sqlite@$SECONDS"
sql_script() {  # sql_script MODE
    echo "PRAGMA journal_mode=$1;"
    echo "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, val REAL, data BLOB);"
    local i
    for i in $(seq 0 9); do
        echo "BEGIN;"
        echo "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<1000)"
        echo "  INSERT INTO t(id, name, val, data) SELECT $i*1000+x, 'row-' || ($i*1000+x), x*0.5, zeroblob(x % 300 + 1) FROM c;"
        echo "COMMIT;"
    done
    for i in $(seq 1 100); do    # many small transactions: journal / WAL churn
        echo "UPDATE t SET val = val + 1, name = name || '.' WHERE id % 150 = $((i % 150));"
    done
    echo "CREATE INDEX t_name ON t(name);"
    echo "BEGIN; DELETE FROM t WHERE id % 7 = 0; UPDATE t SET data = zeroblob(0) WHERE id % 11 = 0; COMMIT;"
    echo "VACUUM;"
    echo "PRAGMA integrity_check;"
    echo "SELECT count(*), sum(val), sum(length(data)), max(name) FROM t;"
}
sqlite_run() {  # sqlite_run DIR MODE
    local db="$1/db-$2.sqlite"
    sql_script "$2" | sqlite3 -batch "$db" 2>&1 || return 1
    # reopen in a new process: the committed state must be there
    sqlite3 -batch "$db" "PRAGMA integrity_check; SELECT count(*) FROM t;" 2>&1 || return 1
    sqlite3 -batch "$db" .dump | sha256sum | cut -c1-16
}
for mode in DELETE WAL; do
    sqlite_run "$REF" $mode > "$WORK/sql.$mode.ref" || fail "sqlite ($mode) on ext4 failed (harness)"
    timeout 120 bash -c "$(declare -f sql_script sqlite_run); sqlite_run '$MNT' $mode" > "$WORK/sql.$mode.mnt" ||
        fail "sqlite ($mode) on the mount failed: $(tail -n 5 "$WORK/sql.$mode.mnt")"
    [ "$(grep -c '^ok$' "$WORK/sql.$mode.ref")" = 2 ] || fail "harness: sqlite $mode on ext4 not ok"
    check_eq "$(grep -c '^ok$' "$WORK/sql.$mode.mnt")" 2 "sqlite journal_mode=$mode: PRAGMA integrity_check is ok (twice)"
    cmp_files "$WORK/sql.$mode.ref" "$WORK/sql.$mode.mnt" "sqlite journal_mode=$mode: same results and .dump as ext4"
done

# ------------------------------------------------------------------------- gcc
TIMES="${TIMES:-} gcc@$SECONDS"
cc_run() {  # cc_run DIR
    local d="$1/cc"
    mkdir "$d" && cd "$d" || return 1
    cat > util.h <<'C'
int triple(int x);
C
    cat > util.c <<'C'
#include "util.h"
int triple(int x) { return 3 * x; }
C
    cat > main.c <<'C'
#include <stdio.h>
#include <string.h>
#include "util.h"
int main(int argc, char **argv) {
    FILE *f = fopen("out.txt", "w");
    if (!f) return 2;
    fprintf(f, "written by the program\n");
    fclose(f);
    printf("hello from the mount: %d %zu\n", triple(14), strlen(argv[0]) > 0 ? (size_t)1 : 0);
    return 0;
}
C
    {
        gcc -O2 -Wall -c util.c -o util.o &&
        gcc -O2 -Wall -save-temps -c main.c -o main.o &&
        gcc -o prog main.o util.o && ./prog && cat out.txt &&
        gcc -O2 -o prog2 main.c util.c && cmp prog prog2 > /dev/null; echo "cmp=$?"
        ls
    } 2>&1
    local rc=$?
    cd "$WORK"
    return $rc
}
cc_run "$REF" > "$WORK/cc.ref" || fail "gcc on ext4 failed (harness)"
timeout 120 bash -c "$(declare -f cc_run); WORK='$WORK' cc_run '$MNT'" > "$WORK/cc.mnt" ||
    fail "gcc on the mount failed: $(tail -n 5 "$WORK/cc.mnt")"
grep -q "^hello from the mount: 42 1$" "$WORK/cc.mnt" && pass "program compiled on the mount runs" ||
    fail "compiled program output: $(head -n 5 "$WORK/cc.mnt")"
cmp_files "$WORK/cc.ref" "$WORK/cc.mnt" "gcc build on the mount behaves as on ext4"
cmp -s "$REF/cc/main.o" "$MNT/cc/main.o" && pass "object file identical to the ext4 build" ||
    fail "main.o differs from the ext4 build"

log "timings: $TIMES"
log "whole mount vs ext4 after all applications"
treedump "$REF" "$WORK/all.ref.dump.0" --no-mtime
treedump "$MNT" "$WORK/all.mnt.dump.0" --no-mtime
# .git/index caches inode numbers and ctimes, so its bytes legitimately differ
grep -v '^repo/\.git/index	' "$WORK/all.ref.dump.0" > "$WORK/all.ref.dump"
grep -v '^repo/\.git/index	' "$WORK/all.mnt.dump.0" > "$WORK/all.mnt.dump"
cmp_files "$WORK/all.ref.dump" "$WORK/all.mnt.dump" "whole tree after all applications equals ext4 (without mtimes)"
unmount "$MNT" "$S"
e2e_finish
