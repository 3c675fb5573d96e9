#!/bin/bash
# Installing and packaging (issue 5).
#  1. `cmake --install BUILD --prefix TMP` installs sbin/replfs (identical to the built
#     binary), sbin/mount.fuse.replfs (a symlink to replfs), share/man/man5/replfs.conf.5,
#     man7/replfs.7, man8/replfs.8 (as in man/, plain or gzipped),
#     lib/systemd/system/replfs@.service and share/doc/replfs/example.conf (as in
#     packaging/); the installed binary runs --version
#  2. `cpack -G DEB --config BUILD/CPackConfig.cmake -B TMP` (nothing new in the build
#     dir) makes replfs_<version>_<arch>.deb: Package replfs, Version = --version,
#     `dpkg-deb -c` lists the same files under /usr (the helper a symlink), Depends names
#     the Debian package of every shared library the binary links (readelf NEEDED ->
#     ldd path -> dpkg -S); the binary extracted from it runs --version
# BUILD is dirname $REPLFS, the source dir $REPLFS_SRC.  Runs in ~20 s (dpkg-shlibdeps).
: "${E2E_TIMEOUT:=240}"
export E2E_TIMEOUT
source "$(dirname "$0")/lib.sh"
e2e_setup
require_tools cmake cpack dpkg-deb dpkg readelf ldd
SRC="${REPLFS_SRC:-$(cd "$E2E_DIR/../.." && pwd)}"
BUILD="$(dirname "$REPLFS")"
[ -f "$BUILD/cmake_install.cmake" ] || fatal "$BUILD (dirname of \$REPLFS) is not a CMake build directory"
VER="$("$REPLFS" --version | awk '{ print $2 }')"
[ -n "$VER" ] || fatal "replfs --version printed no version"
ARCH="$(dpkg --print-architecture)"

# want_file PATH SOURCE MSG: PATH (or PATH.gz) has SOURCE's content
want_file() {
    if [ -f "$1" ] && cmp -s "$1" "$2"; then pass "$3"
    elif [ -f "$1.gz" ] && zcat "$1.gz" | cmp -s - "$2"; then pass "$3 (gzipped)"
    elif [ -e "$1" ] || [ -e "$1.gz" ]; then fail "$3: $1 differs from $2"
    else fail "$3: $1 missing"; fi
}

# ------------------------------------------------------------ 1. cmake --install
P="$WORK/prefix"
if timeout 120 cmake --install "$BUILD" --prefix "$P" > "$WORK/install.log" 2>&1; then
    pass "cmake --install $BUILD --prefix $P"
else
    fail "cmake --install: $(tail -n 5 "$WORK/install.log")"
fi
if [ -x "$P/sbin/replfs" ] && cmp -s "$P/sbin/replfs" "$REPLFS"; then pass "sbin/replfs is the built binary"
else fail "sbin/replfs missing or not the built binary"; fi
if [ -L "$P/sbin/mount.fuse.replfs" ] && [ "$(readlink -f "$P/sbin/mount.fuse.replfs")" = "$(readlink -f "$P/sbin/replfs")" ]; then
    pass "sbin/mount.fuse.replfs -> $(readlink "$P/sbin/mount.fuse.replfs")"
else
    fail "sbin/mount.fuse.replfs is not a symlink to replfs: $(ls -l "$P/sbin/mount.fuse.replfs" 2>&1)"
fi
want_file "$P/share/man/man5/replfs.conf.5" "$SRC/man/replfs.conf.5" "man5/replfs.conf.5"
want_file "$P/share/man/man7/replfs.7" "$SRC/man/replfs.7" "man7/replfs.7"
want_file "$P/share/man/man8/replfs.8" "$SRC/man/replfs.8" "man8/replfs.8"
# the installed unit runs the binary where this prefix put it
sed "s#/usr/sbin/replfs#$P/sbin/replfs#" "$SRC/packaging/replfs@.service" > "$WORK/unit.want"
want_file "$P/lib/systemd/system/replfs@.service" "$WORK/unit.want" "lib/systemd/system/replfs@.service (ExecStart=$P/sbin/replfs)"
want_file "$P/share/doc/replfs/example.conf" "$SRC/packaging/example.conf" "share/doc/replfs/example.conf"
out="$("$P/sbin/replfs" --version 2>&1)"; rc=$?
check_eq "$rc:$out" "0:replfs $VER" "the installed binary runs --version"

# ------------------------------------------------------------ 2. cpack -G DEB
ls -A "$BUILD" > "$WORK/build.before"
PKG="$WORK/pkg"
mkdir -p "$PKG"
if (cd "$WORK" && timeout 180 cpack -G DEB --config "$BUILD/CPackConfig.cmake" -B "$PKG") > "$WORK/cpack.log" 2>&1; then
    pass "cpack -G DEB -B $PKG"
else
    fail "cpack -G DEB: $(tail -n 8 "$WORK/cpack.log")"
fi
ls -A "$BUILD" > "$WORK/build.after"
if cmp -s "$WORK/build.before" "$WORK/build.after"; then pass "cpack left the build directory as it was"
else fail "cpack added to the build directory: $(comm -13 "$WORK/build.before" "$WORK/build.after" | paste -sd' ')"; fi
DEB="$PKG/replfs_${VER}_${ARCH}.deb"
[ -f "$DEB" ] || fatal "no $DEB (made: $(ls "$PKG" | paste -sd' '))"
pass "package $(basename "$DEB")"
check_eq "$(dpkg-deb -f "$DEB" Package)" replfs "Package: replfs"
check_eq "$(dpkg-deb -f "$DEB" Version)" "$VER" "Version: the binary's --version"
dpkg-deb -c "$DEB" > "$WORK/contents" || fail "dpkg-deb -c failed"
in_deb() {   # in_deb PATH [TYPE-CHAR]: PATH (or PATH.gz) is listed
    if awk -v p="./$1" -v q="./$1.gz" -v t="${2:-}" '
            ($6 == p || $6 == q) && (t == "" || substr($1, 1, 1) == t) { f = 1 } END { exit !f }' "$WORK/contents"; then
        pass "dpkg-deb -c lists /$1"
    else
        fail "dpkg-deb -c does not list /$1${2:+ (type $2)}"
    fi
}
in_deb usr/sbin/replfs -
in_deb usr/sbin/mount.fuse.replfs l
grep -q '\./usr/sbin/mount\.fuse\.replfs -> \(replfs\|/usr/sbin/replfs\)$' "$WORK/contents" &&
    pass "the packaged helper points at replfs" || fail "the packaged helper does not point at replfs: $(grep mount.fuse.replfs "$WORK/contents")"
in_deb usr/share/man/man5/replfs.conf.5
in_deb usr/share/man/man7/replfs.7
in_deb usr/share/man/man8/replfs.8
in_deb "usr/lib/systemd/system/replfs@.service"
in_deb usr/share/doc/replfs/example.conf
DEPS="$(dpkg-deb -f "$DEB" Depends)"
log "Depends: $DEPS"
n=0
for so in $(readelf -d "$REPLFS" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    path="$(ldd "$REPLFS" | awk -v s="$so" '$1 == s && $2 == "=>" { print $3 }')"
    [ -n "$path" ] || { fail "ldd does not resolve $so"; continue; }
    pkg="$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -n 1 | cut -d: -f1)"
    [ -n "$pkg" ] || pkg="$(dpkg -S "$path" 2>/dev/null | head -n 1 | cut -d: -f1)"
    [ -n "$pkg" ] || { fail "no Debian package owns $path ($so)"; continue; }
    n=$((n + 1))
    if grep -qE "(^|[ ,|])$pkg( |,|$)" <<<"$DEPS"; then pass "Depends names $pkg ($so)"
    else fail "Depends does not name $pkg, which provides $so"; fi
done
[ $n -ge 5 ] || fail "only $n linked libraries found by readelf/ldd/dpkg -S"
X="$WORK/extract"
dpkg-deb -x "$DEB" "$X" || fail "dpkg-deb -x failed"
out="$("$X/usr/sbin/replfs" --version 2>&1)"; rc=$?
check_eq "$rc:$out" "0:replfs $VER" "the packaged binary runs --version"
e2e_finish
