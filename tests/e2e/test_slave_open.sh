#!/bin/bash
# Open files on a slave while the master takes their names away (issue 6): a reader that
# opened a file keeps the old file whole (fstat size and content to the end) after the
# master renames another file over it, unlinks it and makes a new one, renames its
# directory, or renames the file away; a new open of the name gets the new file. Before
# the fix, libfuse's one node per name made the old and the new file share one kernel
# inode: the open descriptor showed the new size over the old bytes. Afterwards no kept
# file is left in STORE/staging and no .fuse_hidden file in the data directory, and
# `replfs verify` passes. (slave_open.py has the cases.)
: "${E2E_TMPDIR:=/var/tmp}"
: "${E2E_TIMEOUT:=150}"
export E2E_TMPDIR E2E_TIMEOUT
source "$(dirname "$0")/lib.sh"
e2e_setup
require_tools fusermount3
source "$E2E_DIR/../lib/cluster.sh"

cluster_init || fatal "cannot set up the cluster"
cluster_start_master || fatal "master did not start"
cluster_start_slave 1 || fatal "slave did not start"
wait_caught_up 1 30 || fatal "slave did not catch up"

out="$(timeout 120 "$PY" "$E2E_DIR/slave_open.py" "$REPLFS" "${CL_MNT[0]}" "${CL_MNT[1]}" "${CL_STORE[1]}" 2>&1)"
rc=$?
while IFS= read -r line; do
    case "$line" in
        ok:*) pass "${line#ok: }" ;;
        FAIL:*) fail "${line#FAIL: }" ;;
        *) log "$line" ;;
    esac
done <<<"$out"
[ $rc -eq 0 ] || fail "slave_open.py exited $rc"
out="$(timeout 60 "$REPLFS" verify "${CL_MNT[0]}" 2>&1)" && pass "replfs verify exits 0" ||
    fail "replfs verify: $(head -n 5 <<<"$out")"
grep -E "held|hidden" "${CL_LOG[1]}" | tail -n 5 | while IFS= read -r l; do log "slave: $l"; done
cluster_stop_all
e2e_finish
