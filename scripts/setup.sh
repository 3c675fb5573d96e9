#!/usr/bin/env bash
# Installs what replfs needs to build and test on Debian 12 (run as root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
pkgs=(build-essential cmake pkg-config git
      libfuse3-dev fuse3 libsodium-dev libxxhash-dev libcmocka-dev
      libcurl4-openssl-dev libmicrohttpd-dev libjansson-dev
      libinih-dev libsystemd-dev
      python3 sqlite3 attr acl rsync psmisc util-linux e2fsprogs passwd fio dbench curl
      groff-base man-db mandoc dpkg-dev file systemd clang valgrind)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# FUSE needs its device; in containers it may have to be created.
[ -e /dev/fuse ] || mknod -m 666 /dev/fuse c 10 229
grep -q '^user_allow_other' /etc/fuse.conf 2>/dev/null || echo user_allow_other >> /etc/fuse.conf
