#!/bin/bash
# Crashes in the middle of a promote or a rejoin (REPLFS_FAULT=<point> in the daemon's
# environment makes it die abruptly at that step). After each death the dead FUSE mount
# is aborted and unmounted, the node is mounted again with the same options (no fault),
# and the interrupted operation must have been finished or rolled back:
#  promote:marker (intent written, no new epoch yet): master + slave 1; master SIGKILLed;
#     promote dies. Restarted: still a slave at epoch 1 naming the old master; when the old
#     master comes back it follows it (gets a new write); a later promote works (epoch 2).
#  promote:epoch (new epoch durable, not yet read-write/announced): master + 2 slaves;
#     master SIGKILLed; promote of slave 1 dies. Restarted with the same --slave-of
#     options: it is the master at epoch 2 (history ends with epoch 2), accepts writes,
#     slave 2 follows it and gets them, verify exits 0.
#  rejoin:saved / rejoin:cut: master + slave 1; the slave stopped cleanly, the master
#     writes (create, overwrite, append, mkdir + create), is SIGKILLed; the slave is
#     promoted (fork = its LSN), writes on it; the old master mounted with --slave-of it
#     dies at the fault point (a recovery folder exists by then); restarted, it finishes
#     the rejoin: exactly one recovery
#     folder, REPORT lists exactly its journal records after the fork, files/ holds each
#     post-fork file with the content it had, status .recovery is set, its tree equals the
#     new master's, it follows new writes, verify exits 0.
: "${E2E_TMPDIR:=/var/tmp}"
: "${E2E_TIMEOUT:=240}"
export E2E_TMPDIR E2E_TIMEOUT
source "$(dirname "$0")/lib.sh"
e2e_setup
require_tools fusermount3
source "$E2E_DIR/../lib/cluster.sh"
source "$E2E_DIR/../lib/failover.sh"

base_tree() {   # base_tree MNT
    mkdir -p "$1/base" || return 1
    local k
    for k in 1 2 3 4 5; do printf 'base %s\n%s\n' "$k" "$(head -c $((k * 500)) /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$1/base/f$k" || return 1; done
}
sha() { sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }

# promote_dies LABEL I FAULT: promote node I, whose daemon runs with REPLFS_FAULT=FAULT:
# the daemon must die; its mount is then cleaned up. 1 if the fault point was not reached
promote_dies() {
    local l="$1" i="$2" f="$3"
    fo_promote "$i"
    if ! fo_wait_dead "$i" 20; then
        fail "$l: the daemon of node $i is still alive after promote (REPLFS_FAULT=$f not reached?): promote exit $FO_RC, '$FO_OUT' '$FO_ERR'"
        return 1
    fi
    pass "$l: the daemon died at $f (promote exit $FO_RC: $(head -n 1 <<<"$FO_ERR$FO_OUT"))"
    fo_reap_dead "$i" || fail "$l: could not clean up the dead mount of node $i"
    return 0
}

# ================================================================== promote:marker
scenario_marker() {
    local l="promote:marker" lb
    cluster_init || { fail "$l: cluster setup"; return; }
    cluster_start_master || { fail "$l: master did not start"; return; }
    REPLFS_FAULT=promote:marker cluster_start_slave 1 || { fail "$l: slave did not start"; return; }
    base_tree "${CL_MNT[0]}" || fail "$l: base tree"
    wait_caught_up 1 30 || return
    lb="$(node_field 1 lsn)"
    cluster_kill 0 || return
    promote_dies "$l" 1 promote:marker || return
    cluster_start_slave 1 || { fail "$l: node 1 could not be mounted again with the same options"; return; }
    check_eq "$(node_field 1 role)" slave "$l: restarted: still a slave (promote rolled back)"
    check_eq "$(node_field 1 epoch)" 1 "$l: restarted: still at epoch 1"
    check_eq "$(node_field 1 master.url)" "${CL_URL[0]}" "$l: restarted: still names the old master"
    check_eq "$(node_field 1 lsn)" "$lb" "$l: restarted: journal position unchanged ($lb)"
    touch "${CL_MNT[1]}/x" 2> "$WORK/marker.touch" && fail "$l: the restarted slave's mount is writable"
    cluster_start_master || { fail "$l: the old master did not restart"; return; }
    echo "after marker crash" > "${CL_MNT[0]}/after" || fail "$l: write on the restarted master"
    wait_caught_up 1 30 && check_eq "$(cat "${CL_MNT[1]}/after" 2>&1)" "after marker crash" "$l: the slave follows the old master again"
    cluster_kill 0 || return
    fo_promote 1
    [ "$FO_RC" = 0 ] && [ "$FO_EPOCH" = 2 ] && pass "$l: a later promote works: $FO_OUT" ||
        fail "$l: a later promote (no fault): exit $FO_RC, '$FO_OUT' '$FO_ERR' (want epoch 2)"
    cluster_stop_all quiet
}

# ================================================================== promote:epoch
scenario_epoch() {
    local l="promote:epoch"
    cluster_init || { fail "$l: cluster setup"; return; }
    cluster_start_master || { fail "$l: master did not start"; return; }
    REPLFS_FAULT=promote:epoch cluster_start_slave 1 || { fail "$l: slave 1 did not start"; return; }
    cluster_start_slave 2 || { fail "$l: slave 2 did not start"; return; }
    base_tree "${CL_MNT[0]}" || fail "$l: base tree"
    wait_caught_up 1 30 && wait_caught_up 2 30 || return
    cluster_kill 0 || return
    promote_dies "$l" 1 promote:epoch || return
    cluster_start_slave 1 || { fail "$l: node 1 could not be mounted again with the same options"; return; }
    CL_ROLE[1]=master
    wait_field 1 role master 30 && pass "$l: restarted with --slave-of: the promote was completed, role master"
    check_eq "$(node_field 1 epoch)" 2 "$l: restarted: epoch 2"
    check_eq "$(node_field 1 'j["history"][-1][0]' 2>&1)" 2 "$l: status history ends with epoch 2"
    if fo_first_write "${CL_MNT[1]}" "$(date +%s%N)" 15; then pass "$l: the completed master accepts writes (${FO_FIRST_MS} ms)"
    else fail "$l: no write succeeded on the completed master in 15 s"; fo_diag 1; fi
    echo "new master after epoch crash" > "${CL_MNT[1]}/after" || fail "$l: write on the new master"
    fo_wait_follows 2 1 30 && pass "$l: slave 2 follows the completed master"
    fo_wait_caught_up 2 1 30 && check_eq "$(cat "${CL_MNT[2]}/after" 2>&1)" "new master after epoch crash" "$l: slave 2 gets its writes"
    fo_tree_cmp 1 2 "$l: slave 2 identical to the new master"
    fo_verify_clean 1 "$l"
    cluster_stop_all quiet
}

# ================================================================== rejoin:*
scenario_rejoin() {
    local f="$1" l="$1" fork rd rec k lb
    declare -A want=()
    cluster_init || { fail "$l: cluster setup"; return; }
    cluster_start_master || { fail "$l: master did not start"; return; }
    cluster_start_slave 1 || { fail "$l: slave did not start"; return; }
    local M="${CL_MNT[0]}"
    base_tree "$M" || fail "$l: base tree"
    wait_caught_up 1 30 || return
    lb="$(node_field 1 lsn)"
    cluster_stop 1 || return
    # post-fork changes on the old master (the slave never gets them)
    mkdir -p "$M/lost/dir" && printf 'lost file 1\n' > "$M/lost/n1" && printf 'overwritten on the old master\n' > "$M/base/f1" &&
        printf 'appended on the old master\n' >> "$M/base/f2" && head -c 70000 /dev/urandom > "$M/lost/dir/n2" ||
        fail "$l: post-fork writes on the master"
    for k in lost/n1 base/f1 base/f2 lost/dir/n2; do want[$k]="$(sha "$M/$k")"; done
    cluster_kill 0 || return
    fo_journal 0 "$WORK/$l.dump" || fail "$l: journal dump of the dead master: $(head -c 200 "$WORK/$l.dump.err")"
    cluster_start_slave 1 || return
    fo_promote 1
    if [ "$FO_RC" != 0 ] || [ "$FO_EPOCH" != 2 ]; then
        fail "$l: promote of the slave (master dead): exit $FO_RC '$FO_OUT' '$FO_ERR'"; fo_diag 1; cluster_stop_all quiet; return
    fi
    fork="$(fo_fork_lsn 1 2)"
    check_eq "$fork" "$lb" "$l: the new master's epoch 2 starts right after its last LSN $lb"
    CL_ROLE[1]=master
    printf 'new master version\n' > "${CL_MNT[1]}/base/f3" && mkdir "${CL_MNT[1]}/new" && printf 'x\n' > "${CL_MNT[1]}/new/x" ||
        fail "$l: writes on the new master"
    if ! fo_launch_dying 0 "$f" 60 --slave-of "${CL_URL[1]}" --key "$CL_KEY" --listen "127.0.0.1:${CL_PORT[0]}"; then
        fail "$l: the rejoining old master did not die within 60 s (REPLFS_FAULT=$f not reached?)"
        fo_diag 0 1
        cluster_stop_all quiet
        return
    fi
    pass "$l: the rejoining old master died at $f"
    fo_reap_dead 0 || fail "$l: could not clean up the dead mount"
    log "$l: after the death: recovery dirs: $(fo_rec_dirs 0 | tr '\n' ' ')"
    # both fault points come after the post-fork files were saved (whether the journal
    # is already cut physically at rejoin:cut is the implementation's business: shown only)
    fo_journal 0 "$WORK/$l.dead.dump"
    log "$l: at the death the journal dump ends at LSN $(grep -o 'lsn=[0-9]*' "$WORK/$l.dead.dump" | tail -n 1 | cut -d= -f2) (fork $fork)"
    if [ -n "$(fo_rec_dirs 0)" ]; then pass "$l: at the death a recovery folder exists (post-fork files saved)"
    else fail "$l: died at $f but no recovery folder exists yet"; fi
    fo_start_slave_of 0 1 || { fail "$l: restart with the same options failed"; fo_diag 0 1; cluster_stop_all quiet; return; }
    CL_ROLE[0]=slave
    fo_wait_caught_up 0 1 60 && pass "$l: restarted: the rejoin finished, it follows the new master"
    check_eq "$(node_field 0 role)" slave "$l: role slave"
    mapfile -t rd < <(fo_rec_dirs 0)
    [ ${#rd[@]} -eq 1 ] && pass "$l: exactly one recovery folder (${rd[0]##*/})" ||
        fail "$l: want exactly one folder in ${CL_STORE[0]}/recovery after the interrupted rejoin, found ${#rd[@]}: ${rd[*]:-none}"
    rec="${rd[0]:-${CL_STORE[0]}/recovery/none}"
    if [ -f "$rec/REPORT" ]; then
        timeout 60 "$PY" "$ACKLOG" report "$rec/REPORT" --dump "$WORK/$l.dump" --fork "$fork" > "$WORK/$l.rc" 2>&1 &&
            pass "$l: REPORT lists exactly the journal records after the fork ($(head -n 1 "$WORK/$l.rc"))" ||
            { fail "$l: REPORT vs the old journal:"; sed 's/^/    /' "$WORK/$l.rc"; head -n 12 "$rec/REPORT" | sed 's/^/    REPORT: /'; }
    else
        fail "$l: no REPORT in $rec"
    fi
    for k in lost/n1 base/f1 base/f2 lost/dir/n2; do
        check_eq "$(sha "$rec/files/$k")" "${want[$k]}" "$l: recovery files/$k holds the old master's post-fork content"
        grep -qF "$k" "$rec/REPORT" 2>/dev/null || fail "$l: REPORT does not name $k"
    done
    [ -e "${CL_MNT[0]}/lost/n1" ] && fail "$l: lost/n1 (post-fork) is still in the rejoined tree"
    check_eq "$(node_field 0 'len(j.get("recovery") or [])' 2>&1)" 1 "$l: status .recovery has one entry"
    check_eq "$(node_field 0 'j["recovery"][0]["fork_lsn"]' 2>&1)" "$fork" "$l: status .recovery fork_lsn = the promote's LSN"
    fo_tree_cmp 1 0 "$l: the rejoined tree is identical to the new master's"
    echo "after $l" > "${CL_MNT[1]}/after" || fail "$l: write on the new master"
    fo_wait_caught_up 0 1 30 && check_eq "$(cat "${CL_MNT[0]}/after" 2>&1)" "after $l" "$l: it follows new writes"
    fo_verify_clean 1 "$l"
    cluster_stop_all quiet
}

# (cluster_stop_all after each: a scenario that gave up early leaves its nodes running)
scenario_marker; cluster_stop_all quiet
scenario_epoch; cluster_stop_all quiet
scenario_rejoin rejoin:saved; cluster_stop_all quiet
scenario_rejoin rejoin:cut
e2e_finish
