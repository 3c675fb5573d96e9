# tests/lib/failover.sh -- helpers for the failover end-to-end tests (issue 4: promote,
# switchover, fencing, rejoin, verify).  Source it after tests/lib/cluster.sh.
#
# cluster.sh numbers node 0 as "the master"; after a failover any node may be the master,
# so these helpers take the master's node number explicitly.  Every slave started by
# cluster_start_slave already has its own --listen (the new master, verify and fencing
# reach it there); fo_start_slave_of starts node I as a slave of any node M the same way.
#
#   fo_start_slave_of I M [args...]   mount node I: --slave-of URL[M] --key KEY
#                                     --listen 127.0.0.1:PORT[I] args...
#   fo_start_master I [args...]       mount node I without --slave-of (--listen, --key)
#   fo_launch_dying I FAULT T ROLEARGS...   start node I's daemon with REPLFS_FAULT=FAULT
#                                     (args as for replfs mount after MNT, -f added) and wait
#                                     up to T s for it to die; 0 if it died, 1 if not
#   fo_wait_dead I T                  node I's daemon has exited within T s (0) or not (1)
#   fo_reap_dead I                    abort the dead daemon's FUSE connection, lazy-unmount
#   fo_promote I [opts...]            replfs promote MNT[I] opts (killed after
#                                     FO_PROMOTE_TIMEOUT s, default 90): FO_RC FO_OUT FO_ERR FO_MS,
#                                     FO_EPOCH / FO_FROM parsed from "promoted: ... epoch E
#                                     (from LSN N)" (empty if not printed)
#   fo_verify I [opts...]             replfs verify MNT[I] opts: FO_VRC, output in FO_VOUT
#   fo_wait_caught_up I M [T=60]      node I's applied_lsn == node M's lsn
#   fo_wait_follows I M [T=30]        node I's status master.url == URL[M]
#   fo_wait_stable I [T=20]           node I's lsn unchanged for 1.5 s (after its master died)
#   fo_first_write MNT T0NS [T=30]    loop creating MNT/.first_write until it succeeds; sets
#                                     FO_FIRST_MS = ms since T0NS (date +%s%N), empty if never
#   fo_tree_cmp I J LABEL [opts]      treedump of both mounts, cmp_files (fail shows the diff)
#   fo_rec_dirs I                     STORE[I]/recovery/*/ directories, one per line
#   fo_ids I                          extended regex matching node I's id, URL or host:port
#   fo_diag I...                      statuses + log tails of the given nodes
#   fo_journal I OUT                  replfs journal dump STORE[I] > OUT (stopped store ok)
#   fo_fork_lsn I E                   last LSN before epoch E in node I's status history
#
# Needs: $REPLFS, $PY, tests/e2e/lib.sh (pass/fail/cmp_files/treedump) and cluster.sh.

FO_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ACKLOG="$FO_LIB_DIR/acklog.py"
FO_RC="" FO_OUT="" FO_ERR="" FO_MS="" FO_EPOCH="" FO_FROM="" FO_VRC="" FO_VOUT="" FO_FIRST_MS=""
FO_SEQ=0

fo_start_slave_of() {
    local i="$1" m="$2"
    shift 2
    cl_node_setup "$i" || return 1
    cl_node_setup "$m" || return 1
    CL_URL[$i]="http://127.0.0.1:${CL_PORT[$i]}"
    cl_start "$i" slave --slave-of "${CL_URL[$m]}" --key "$CL_KEY" \
        --listen "127.0.0.1:${CL_PORT[$i]}" "$@"
}

fo_start_master() {
    local i="$1"
    shift
    cl_node_setup "$i" || return 1
    CL_URL[$i]="http://127.0.0.1:${CL_PORT[$i]}"
    cl_start "$i" master --listen "127.0.0.1:${CL_PORT[$i]}" --key "$CL_KEY" "$@"
}

fo_wait_dead() {
    local p
    p="$(cl_daemon_pid "$1")"
    [ -z "$p" ] && return 0
    cl_wait_gone "$p" "$2"
}

fo_reap_dead() {
    local i="$1"
    tl_abort_conn "${CL_MNT[$i]}"
    cluster_dead "$i"
}

# fo_launch_dying I FAULT T ARGS...: like cl_start, but the daemon is expected to die at
# the fault point (before or after its mount is usable); never records a failure itself
fo_launch_dying() {
    local i="$1" fault="$2" t="$3" p
    shift 3
    cl_node_setup "$i" || return 1
    if cl_is_mounted "${CL_MNT[$i]}"; then
        fail "node $i: ${CL_MNT[$i]} is still mounted; stop the node first"
        return 1
    fi
    printf '==== %s start node %s with REPLFS_FAULT=%s: replfs mount %s %s -f %s\n' "$(date '+%T.%N')" \
        "$i" "$fault" "${CL_STORE[$i]}" "${CL_MNT[$i]}" "$*" >> "${CL_LOG[$i]}"
    tl_vg "$CL_DIR/n$i"   # REPLFS_VALGRIND=1: under valgrind (mounts.sh)
    REPLFS_FAULT="$fault" "${TL_VG[@]}" "$REPLFS" mount "${CL_STORE[$i]}" "${CL_MNT[$i]}" -f "$@" \
        >> "${CL_LOG[$i]}" 2>&1 < /dev/null &
    p=$!
    disown "$p" 2>/dev/null
    CL_PID[$i]="$p"
    CL_ALL_PIDS+=("$p:$(cl_proc_start "$p")")
    cl_wait_gone "$p" "$t"
}

fo_promote() {
    local i="$1" t0 t1
    shift
    FO_SEQ=$((FO_SEQ + 1))
    local o="$CL_DIR/promote.$FO_SEQ"
    printf '==== %s replfs promote %s %s\n' "$(date '+%T.%N')" "${CL_MNT[$i]}" "$*" >> "${CL_LOG[$i]}"
    t0=$(date +%s%N)
    timeout "${FO_PROMOTE_TIMEOUT:-90}" "$REPLFS" promote "${CL_MNT[$i]}" "$@" > "$o.out" 2> "$o.err" < /dev/null
    FO_RC=$?
    t1=$(date +%s%N)
    FO_MS=$(((t1 - t0) / 1000000))
    FO_OUT="$(cat "$o.out")"
    FO_ERR="$(cat "$o.err")"
    FO_EPOCH="" FO_FROM=""
    if [[ "$FO_OUT" =~ promoted:\ (.*)\ is\ the\ master\ at\ epoch\ ([0-9]+)\ \(from\ LSN\ ([0-9]+)\) ]]; then
        FO_EPOCH="${BASH_REMATCH[2]}"
        FO_FROM="${BASH_REMATCH[3]}"
    fi
    printf '==== %s promote exit %s after %s ms: %s | %s\n' "$(date '+%T.%N')" "$FO_RC" "$FO_MS" \
        "$(head -c 300 <<<"$FO_OUT")" "$(head -c 300 <<<"$FO_ERR")" >> "${CL_LOG[$i]}"
    return 0
}

fo_verify() {
    local i="$1"
    shift
    FO_SEQ=$((FO_SEQ + 1))
    FO_VOUT="$CL_DIR/verify.$FO_SEQ"
    timeout 150 "$REPLFS" verify "${CL_MNT[$i]}" "$@" > "$FO_VOUT" 2> "$FO_VOUT.err" < /dev/null
    FO_VRC=$?
    return 0
}
# fo_verify_clean I LABEL: verify on node I must exit 0
fo_verify_clean() {
    fo_verify "$1"
    if [ "$FO_VRC" = 0 ]; then
        pass "$2: replfs verify exits 0 ($(grep -m1 -i difference "$FO_VOUT" | head -c 200))"
    else
        fail "$2: replfs verify ${CL_MNT[$1]} exited $FO_VRC: $(head -n 12 "$FO_VOUT" | tr '\n' '|') stderr: $(head -c 400 "$FO_VOUT.err")"
        return 1
    fi
}

fo_wait_caught_up() {
    local i="$1" m="$2" t="${3:-60}" t0=$SECONDS a l
    while :; do
        l="$(node_field "$m" lsn 2>/dev/null)"
        a="$(node_field "$i" applied_lsn 2>/dev/null)"
        [[ "$l" =~ ^[0-9]+$ && "$a" =~ ^[0-9]+$ ]] && [ "$a" = "$l" ] && return 0
        if [ $((SECONDS - t0)) -ge "$t" ]; then
            fail "node $i not caught up with node $m after ${t}s (node $m lsn=${l:-?}, node $i applied_lsn=${a:-?})"
            fo_diag "$m" "$i"
            return 1
        fi
        sleep 0.1
    done
}

fo_wait_follows() {
    local i="$1" m="$2" t="${3:-30}" t0=$SECONDS v
    while :; do
        v="$(node_field "$i" master.url 2>&1)"
        [ "$v" = "${CL_URL[$m]}" ] && return 0
        if [ $((SECONDS - t0)) -ge "$t" ]; then
            fail "node $i does not follow node $m (${CL_URL[$m]}) after ${t}s: status master.url '$v'"
            fo_diag "$m" "$i"
            return 1
        fi
        sleep 0.2
    done
}

fo_wait_stable() {
    local i="$1" t="${2:-20}" t0=$SECONDS prev="" v since=$SECONDS
    while :; do
        v="$(node_field "$i" lsn 2>/dev/null)"
        if [ "$v" != "$prev" ]; then prev="$v"; since=$SECONDS; fi
        [ -n "$v" ] && [ $((SECONDS - since)) -ge 2 ] && return 0
        [ $((SECONDS - t0)) -ge "$t" ] && return 1
        sleep 0.25
    done
}

fo_first_write() {
    local mnt="$1" t0ns="$2" t="${3:-30}" s=$SECONDS
    FO_FIRST_MS=""
    while :; do
        if echo "first write $(date +%s%N)" > "$mnt/.first_write" 2>/dev/null; then
            FO_FIRST_MS=$((($(date +%s%N) - t0ns) / 1000000))
            return 0
        fi
        [ $((SECONDS - s)) -ge "$t" ] && return 1
        sleep 0.02
    done
}

fo_tree_cmp() {
    local i="$1" j="$2" label="$3"
    shift 3
    FO_SEQ=$((FO_SEQ + 1))
    local a="$CL_DIR/tree.$FO_SEQ.n$i" b="$CL_DIR/tree.$FO_SEQ.n$j"
    treedump "${CL_MNT[$i]}" "$a" "$@" || return 1
    treedump "${CL_MNT[$j]}" "$b" "$@" || return 1
    cmp_files "$a" "$b" "$label"
}

fo_rec_dirs() {
    local d
    for d in "${CL_STORE[$1]}"/recovery/*/; do
        [ -d "$d" ] && echo "${d%/}"
    done
    return 0
}

fo_ids() {
    local id
    id="$(node_field "$1" node_id 2>/dev/null)"
    printf '%s' "${id:+$id|}127\.0\.0\.1:${CL_PORT[$1]}([^0-9]|\$)"
}

fo_diag() {
    local i
    for i in "$@"; do
        [ -n "${CL_MNT[$i]:-}" ] || continue
        echo "    --- node $i (pid $(cl_daemon_pid "$i"), alive: $(cl_alive "$(cl_daemon_pid "$i")" && echo yes || echo no), mounted: $(cl_is_mounted "${CL_MNT[$i]}" && echo yes || echo no)) status --json:"
        timeout 10 "$REPLFS" status "${CL_MNT[$i]}" --json 2>&1 | head -c 3000 | sed 's/^/    /'
        echo
        echo "    --- node $i log (last $CL_LOG_TAIL lines of ${CL_LOG[$i]}):"
        tail -n "$CL_LOG_TAIL" "${CL_LOG[$i]}" 2>/dev/null | sed 's/^/    /'
    done
}

fo_journal() {
    timeout 60 "$REPLFS" journal dump "${CL_STORE[$1]}" > "$2" 2> "$2.err"
}

# fo_fork_lsn I E: the last LSN node I's history shares with the epoch before E
# (status history = [[epoch, first_lsn], ...]: first_lsn of epoch E, minus one)
fo_fork_lsn() {
    node_field "$1" "[h[1] for h in j['history'] if h[0] == $2][0] - 1"
}

# fo_num X: X is a non-negative integer
fo_num() { [[ "${1:-}" =~ ^[0-9]+$ ]]; }
