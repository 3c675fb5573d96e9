# tests/lib/cluster.sh -- a replfs cluster (one master, N slaves) on this machine, over
# loopback, for the replication end-to-end tests and bench/repl.sh.  Source it.
#
# Node 0 is the master, nodes 1..N are slaves.  Each node has its own store, mountpoint,
# loopback port (picked free at first start, kept across restarts so the master's URL
# stays valid) and log file; all share one cluster key (replfs keygen, chmod 600).
#
# Daemons run with -f in the background, stdout+stderr appended to their log file (a
# detached daemon logs to syslog, which test machines usually lack): the test owns their
# PIDs, and every failure message can show the log tails.  Readiness = the mountpoint
# is in /proc/self/mounts and `replfs status MNT --json` answers (the -f mode has no
# other "ready" signal).
#
# Needs: $REPLFS (absolute path), python3.  Uses log/pass/fail/note from tests/e2e/lib.sh
# when they exist (fallbacks below otherwise).  If $WORK is set (e2e_setup ran), the
# cluster lives in $WORK/clusterK (so the e2e watchdog aborts its FUSE connections);
# otherwise in a new mktemp dir under ${CL_TMPDIR:-/var/tmp}.
#
#   cluster_init                     new cluster dir + key (may be called again after
#                                    cluster_stop_all for a fresh cluster); sets CL_DIR
#   cluster_start_master [args...]   init (first time) and mount node 0 as master:
#                                    --listen 127.0.0.1:PORT --key KEY args...
#   cluster_start_slave I [args...]  init (first time) and mount node I as a slave of node 0:
#                                    --slave-of http://127.0.0.1:PORT0 --key KEY
#                                    --listen 127.0.0.1:PORTI args...  (CL_NO_LISTEN=1:
#                                    without --listen; then it has no /metrics)
#   cluster_stop I                   clean stop: umount, wait for the daemon to exit
#   cluster_kill I                   SIGKILL the daemon (PID from STORE/pid), then
#                                    fusermount3 -u -z the dead mount
#   cluster_dead I                   the daemon was killed otherwise: wait for it, lazy-unmount
#   cluster_wipe I                   (node must be stopped) rm -rf its store, replfs init again
#   cluster_stop_all                 stop every running node (slaves first); kills only our PIDs
#   cluster_status I                 `replfs status MNT --json` of node I on stdout
#   status_field MNT EXPR            one field of `replfs status MNT --json`: EXPR is a
#                                    dotted path (applied_lsn, master.state, slaves.0.acked_lsn)
#                                    or a python expression over j (len(j["slaves"]))
#   node_field I EXPR                status_field of node I
#   wait_caught_up I [TIMEOUT=60]    until node I's applied_lsn == the master's lsn
#   wait_field I EXPR WANT [TIMEOUT=30]   until node_field I EXPR prints WANT
#   wait_applied I LSN [TIMEOUT=60]  until node I's applied_lsn >= LSN
#   cluster_metrics I                GET http://127.0.0.1:PORTI/metrics on stdout
#   metric I NAME [LABELS]           value of one metric line (LABELS e.g. 'node="ab12"')
#   cluster_diag [I...]              both statuses (master + nodes I) and log tails, on stdout
#   cluster_bg CMD...                run CMD in the background; its PID (in CL_LAST_BG) is
#                                    killed at cleanup if still running
#   cluster_teardown                 kill background PIDs, stop all nodes, remove own dirs
#   cluster_cleanup                  teardown, then the previous EXIT trap, then exit
#                                    (installed in the EXIT trap by cluster_init unless
#                                    CL_NO_TRAP=1)
#
# Network faults, off unless CL_PROXY=1 (tests/lib/faultproxy.py; test_netfault.sh):
#   every node gets its own fault proxy in front of its --listen port, started when the
#   node is first set up and kept for the cluster's life (its port stays valid across
#   restarts). CL_URL[I] is then the proxy's URL: the node is mounted with --advertise
#   CL_URL[I] and slaves with --slave-of CL_URL[0], so every replication request (fetch,
#   ack, probe, announce, verify) crosses the proxy of the node it is sent to, also after
#   a slave looks for its master among the peers it learnt. cluster_metrics and status
#   still reach the node directly. Partition node I: proxy_set I cut (its inbound links);
#   one slave only: proxy_set 0 "cut from=ID" (ID = its status node_id) as well.
#   proxy_set I RULE[; RULE...]      replace the rules of node I's proxy ("pass" heals)
#   proxy_stats I [EXPR]             its stats as JSON, or one field (e.g. counts.cut)
#   proxy_mark I TEXT                write TEXT into the proxy's log (CL_PLOG[I])
# Variables per node I: CL_STORE[I] CL_MNT[I] CL_PORT[I] CL_LOG[I] CL_PID[I] CL_URL[I]
#   (CL_PROXY=1: CL_PPORT[I] proxy port, CL_PCTL[I] its control port, CL_PLOG[I] its log)
# Tunables: CL_START_TIMEOUT (s, default 30; 180 under valgrind), CL_LOG_TAIL (lines, default 25),
#           REPLFS_VALGRIND=1 (every daemon under valgrind, logs clusterK/nI/vg.PID.log or
#           $REPLFS_VALGRIND_DIR; see tl_vg in mounts.sh),
#           CL_DAEMONIZE=1 (start without -f, as a user would: checks that mount returns
#           only once the mount is usable; logs then go to syslog), CL_KEEP=1
# Process/mount primitives come from tests/lib/mounts.sh (tl_*; cl_* are aliases).

CL_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# /usr/bin/python3 first: a pyenv shim costs ~100 ms per call, and status is polled
if [ -z "${PY:-}" ]; then PY=/usr/bin/python3; [ -x "$PY" ] || PY="$(command -v python3)"; fi
CL_DIR=""
CL_KEY=""
CL_SEQ=0
CL_START_TIMEOUT="${CL_START_TIMEOUT:-30}"
# under valgrind (REPLFS_VALGRIND=1, see mounts.sh tl_vg) a daemon starts ~20x slower
[ "${REPLFS_VALGRIND:-0}" = 1 ] && [ "$CL_START_TIMEOUT" -lt 180 ] && CL_START_TIMEOUT=180
CL_LOG_TAIL="${CL_LOG_TAIL:-25}"
declare -a CL_STORE=() CL_MNT=() CL_PORT=() CL_LOG=() CL_PID=() CL_URL=() CL_ROLE=()
declare -a CL_PPORT=() CL_PCTL=() CL_PLOG=() CL_PPID=()   # CL_PROXY=1 only
CL_OWN_DIRS=()          # dirs we created outside $WORK (removed at cleanup)
CL_BG=()                # background helper PIDs
CL_ALL_PIDS=()          # "PID:STARTTIME" of every daemon we started (never kill a reused PID)
CL_LAST_BG=""
CL_TRAP_PREV=""

declare -F log  > /dev/null || log()  { printf '[cluster] %s\n' "$*"; }
declare -F note > /dev/null || note() { printf '[cluster] NOTE: %s\n' "$*"; }
declare -F fail > /dev/null || fail() { printf '[cluster] FAIL: %s\n' "$*"; }
declare -F pass > /dev/null || pass() { printf '[cluster] ok: %s\n' "$*"; }

# ------------------------------------------------------------------ process helpers
source "$CL_LIB_DIR/mounts.sh"
cl_proc_start()    { tl_proc_start "$@"; }
cl_alive()         { tl_alive "$@"; }
cl_same_proc()     { tl_same_proc "$@"; }
cl_wait_gone()     { tl_wait_gone "$@"; }
cl_is_mounted()    { tl_is_mounted "$@"; }
cl_abort_conn()    { tl_abort_conn "$@"; }
cl_force_unmount() { tl_force_unmount "$1" 15; }

cl_free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# ------------------------------------------------------------------ setup / teardown
cl_ret() { return "$1"; }
# cluster_teardown: kill our background helpers, stop every node, remove our own dirs
cluster_teardown() {
    local p
    for p in "${CL_BG[@]}"; do
        if cl_alive "$p"; then kill -TERM "$p" 2>/dev/null; fi
    done
    for p in "${CL_BG[@]}"; do
        cl_wait_gone "$p" 3 || { kill -KILL "$p" 2>/dev/null; cl_wait_gone "$p" 3; }
    done
    CL_BG=()
    for p in "${CL_ALL_PIDS[@]}"; do   # a test may have SIGSTOPped one
        cl_same_proc "$p" && kill -CONT "${p%%:*}" 2>/dev/null
    done
    cluster_stop_all quiet
    for p in "${CL_OWN_DIRS[@]}"; do
        if grep -q " $p" /proc/self/mounts; then
            note "something is still mounted under $p; not removing it"
        elif [ "${E2E_KEEP:-0}" = 1 ] || [ "${CL_KEEP:-0}" = 1 ]; then
            note "cluster dir kept: $p"
        else
            rm -rf --one-file-system "$p"
        fi
    done
    CL_OWN_DIRS=()
    return 0
}
cluster_cleanup() {
    local rc=$?
    trap - EXIT
    cluster_teardown
    if [ -n "$CL_TRAP_PREV" ]; then
        cl_ret "$rc"
        eval "$CL_TRAP_PREV"
    fi
    exit "$rc"
}

cluster_init() {
    CL_SEQ=$((CL_SEQ + 1))
    if [ -n "${WORK:-}" ] && [ -d "$WORK" ]; then
        CL_DIR="$WORK/cluster$CL_SEQ"
        mkdir -p "$CL_DIR" || return 1
    else
        mkdir -p "${CL_TMPDIR:-/var/tmp}"
        CL_DIR="$(mktemp -d "${CL_TMPDIR:-/var/tmp}/replfs-cluster.XXXXXX")" || return 1
        CL_OWN_DIRS+=("$CL_DIR")
    fi
    chmod 755 "$CL_DIR"
    cl_proxy_stop_all
    CL_STORE=() CL_MNT=() CL_PORT=() CL_LOG=() CL_PID=() CL_URL=() CL_ROLE=()
    if [ "${CL_NO_TRAP:-0}" != 1 ] && [ -z "${CL_TRAP_SET:-}" ]; then
        CL_TRAP_PREV="$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT\$//")"
        trap cluster_cleanup EXIT
        CL_TRAP_SET=1
    fi
    CL_KEY="$CL_DIR/cluster.key"
    if ! "$REPLFS" keygen > "$CL_KEY" 2> "$CL_DIR/keygen.err"; then
        fail "replfs keygen failed: $(head -c 300 "$CL_DIR/keygen.err")"
        return 1
    fi
    chmod 600 "$CL_KEY"
    if ! grep -qxE '[0-9a-f]{64}' "$CL_KEY" || [ "$(wc -l < "$CL_KEY")" != 1 ]; then
        fail "replfs keygen did not print one line of 64 hex chars: $(head -c 200 "$CL_KEY" | od -c | head -3)"
        return 1
    fi
    return 0
}

cl_node_setup() {   # cl_node_setup I: paths, port; init the store the first time
    local i="$1" d="$CL_DIR/n$1"
    if [ -z "${CL_STORE[$i]:-}" ]; then
        mkdir -p "$d/mnt"
        CL_STORE[$i]="$d/store"
        CL_MNT[$i]="$d/mnt"
        CL_LOG[$i]="$d/log"
        CL_PORT[$i]="$(cl_free_port)"
        CL_URL[$i]="http://127.0.0.1:${CL_PORT[$i]}"
        : > "${CL_LOG[$i]}"
        if [ "${CL_PROXY:-0}" = 1 ]; then cl_proxy_start "$i" || return 1; fi
    fi
    if [ ! -e "${CL_STORE[$i]}" ]; then
        if ! timeout 60 "$REPLFS" init "${CL_STORE[$i]}" >> "${CL_LOG[$i]}" 2>&1 < /dev/null; then
            fail "replfs init ${CL_STORE[$i]}: $(tail -n 3 "${CL_LOG[$i]}")"
            return 1
        fi
    fi
    return 0
}

# cl_start I ROLE ARGS...: mount node I; waits until mounted and status answers
cl_start() {
    local i="$1" role="$2" t0 p="" k rc
    shift 2
    cl_node_setup "$i" || return 1
    if cl_is_mounted "${CL_MNT[$i]}"; then
        fail "node $i: ${CL_MNT[$i]} is still mounted; stop the node first"
        return 1
    fi
    CL_ROLE[$i]="$role"
    printf '==== %s start node %s (%s): replfs mount %s %s %s\n' "$(date '+%T.%N')" "$i" "$role" \
        "${CL_STORE[$i]}" "${CL_MNT[$i]}" "$*" >> "${CL_LOG[$i]}"
    tl_vg "$CL_DIR/n$i"   # REPLFS_VALGRIND=1: daemon under valgrind (mounts.sh)
    if [ "${CL_DAEMONIZE:-0}" = 1 ]; then
        timeout 120 "${TL_VG[@]}" "$REPLFS" mount "${CL_STORE[$i]}" "${CL_MNT[$i]}" "$@" \
            >> "${CL_LOG[$i]}" 2>&1 < /dev/null
        rc=$?
        if [ $rc -ne 0 ]; then
            fail "node $i ($role): replfs mount exited $rc: $(tail -n 5 "${CL_LOG[$i]}")"
            return 1
        fi
        p="$(cat "${CL_STORE[$i]}/pid" 2>/dev/null)"; p="${p//[!0-9]/}"
        # the contract: mount returns only once the mount is usable
        if ! cl_is_mounted "${CL_MNT[$i]}"; then
            fail "node $i ($role): replfs mount returned 0 but ${CL_MNT[$i]} is not mounted yet"
        fi
        [ -n "$p" ] || fail "node $i ($role): no PID in ${CL_STORE[$i]}/pid after mount returned"
    else
        "${TL_VG[@]}" "$REPLFS" mount "${CL_STORE[$i]}" "${CL_MNT[$i]}" -f "$@" >> "${CL_LOG[$i]}" 2>&1 < /dev/null &
        p=$!
        disown "$p" 2>/dev/null   # no "Killed" job notices; bash still reaps it
    fi
    CL_PID[$i]="$p"
    [ -n "$p" ] && CL_ALL_PIDS+=("$p:$(cl_proc_start "$p")")
    t0=$SECONDS
    while :; do
        if [ -n "$p" ] && ! cl_alive "$p"; then
            wait "$p" 2>/dev/null; rc=$?
            fail "node $i ($role): daemon $p exited ($rc) before the mount was usable; log tail:"
            tail -n "$CL_LOG_TAIL" "${CL_LOG[$i]}" | sed 's/^/    /'
            cl_force_unmount "${CL_MNT[$i]}"
            return 1
        fi
        if cl_is_mounted "${CL_MNT[$i]}" &&
           timeout 5 "$REPLFS" status "${CL_MNT[$i]}" --json > /dev/null 2>&1; then
            break
        fi
        if [ $((SECONDS - t0)) -ge "$CL_START_TIMEOUT" ]; then
            fail "node $i ($role): not usable after ${CL_START_TIMEOUT}s (mounted: $(cl_is_mounted "${CL_MNT[$i]}" && echo yes || echo no); status: $(timeout 5 "$REPLFS" status "${CL_MNT[$i]}" --json 2>&1 | head -c 300)); log tail:"
            tail -n "$CL_LOG_TAIL" "${CL_LOG[$i]}" | sed 's/^/    /'
            return 1
        fi
        sleep 0.05
    done
    return 0
}

cluster_start_master() {
    cl_node_setup 0 || return 1
    cl_start 0 master --listen "127.0.0.1:${CL_PORT[0]}" --key "$CL_KEY" $(cl_proxy_args 0) "$@"
}

cluster_start_slave() {
    local i="$1"
    shift
    [ -n "${CL_URL[0]:-}" ] || { fail "cluster_start_slave $i: no master configured"; return 1; }
    cl_node_setup "$i" || return 1
    if [ "${CL_NO_LISTEN:-0}" = 1 ]; then   # the minimal slave: no HTTP server of its own
        CL_URL[$i]=""
        cl_start "$i" slave --slave-of "${CL_URL[0]}" --key "$CL_KEY" "$@"
    else
        [ "${CL_PROXY:-0}" = 1 ] || CL_URL[$i]="http://127.0.0.1:${CL_PORT[$i]}"
        cl_start "$i" slave --slave-of "${CL_URL[0]}" --key "$CL_KEY" \
            --listen "127.0.0.1:${CL_PORT[$i]}" $(cl_proxy_args "$i") "$@"
    fi
}

cl_daemon_pid() {   # PID of node I's daemon: STORE/pid, else the one we started
    local p
    p="$(cat "${CL_STORE[$1]}/pid" 2>/dev/null)"; p="${p//[!0-9]/}"
    [ -n "$p" ] || p="${CL_PID[$1]:-}"
    echo "$p"
}

cluster_kill() {
    local i="$1" p
    p="$(cl_daemon_pid "$i")"
    if [ -z "$p" ] || ! cl_alive "$p"; then
        fail "cluster_kill $i: no running daemon (STORE/pid: '$(cat "${CL_STORE[$i]}/pid" 2>/dev/null)', started PID ${CL_PID[$i]:-none})"
        return 1
    fi
    if [ -n "${CL_PID[$i]:-}" ] && [ "$p" != "${CL_PID[$i]}" ]; then
        note "node $i: STORE/pid says $p but we started ${CL_PID[$i]}"
    fi
    kill -KILL "$p"
    printf '==== %s SIGKILL node %s (pid %s)\n' "$(date '+%T.%N')" "$i" "$p" >> "${CL_LOG[$i]}"
    cl_wait_gone "$p" 20 || { fail "node $i: daemon $p survived SIGKILL for 20s"; return 1; }
    if cl_is_mounted "${CL_MNT[$i]}"; then
        fusermount3 -u -z "${CL_MNT[$i]}" 2>/dev/null || umount -l "${CL_MNT[$i]}" 2>/dev/null ||
            { fail "node $i: cannot take down the dead mount ${CL_MNT[$i]}"; return 1; }
    fi
    CL_PID[$i]=""
    return 0
}

# cluster_dead I: node I's daemon was killed some other way (e.g. by a test helper):
# wait until it is gone, then take down the dead mount
cluster_dead() {
    local i="$1" p
    p="$(cl_daemon_pid "$i")"
    if [ -n "$p" ] && ! cl_wait_gone "$p" 20; then
        fail "node $i: daemon $p still alive (cluster_dead)"
        return 1
    fi
    printf '==== %s node %s (pid %s) died\n' "$(date '+%T.%N')" "$i" "$p" >> "${CL_LOG[$i]}"
    if cl_is_mounted "${CL_MNT[$i]}"; then
        fusermount3 -u -z "${CL_MNT[$i]}" 2>/dev/null || umount -l "${CL_MNT[$i]}" 2>/dev/null ||
            { fail "node $i: cannot take down the dead mount ${CL_MNT[$i]}"; return 1; }
    fi
    CL_PID[$i]=""
    return 0
}

cluster_stop() {   # clean stop: umount, then the daemon must exit
    local i="$1" p quiet="${2:-}"
    p="$(cl_daemon_pid "$i")"
    if cl_is_mounted "${CL_MNT[$i]}"; then
        if ! timeout 30 umount "${CL_MNT[$i]}" 2> "$CL_DIR/umount.err"; then
            [ -n "$quiet" ] || fail "node $i: umount ${CL_MNT[$i]}: $(cat "$CL_DIR/umount.err")"
            cl_force_unmount "${CL_MNT[$i]}"
        fi
    fi
    if [ -n "$p" ] && ! cl_wait_gone "$p" 20; then
        [ -n "$quiet" ] || { fail "node $i: daemon $p still running 20s after umount; log tail:"
                             tail -n "$CL_LOG_TAIL" "${CL_LOG[$i]}" | sed 's/^/    /'; }
        kill -KILL "$p" 2>/dev/null
        cl_wait_gone "$p" 5
        return 1
    fi
    CL_PID[$i]=""
    [ -n "$quiet" ] && return 0
    printf '==== %s stopped node %s\n' "$(date '+%T.%N')" "$i" >> "${CL_LOG[$i]}"
    return 0
}

cluster_stop_all() {
    local quiet="${1:-}" i e rc=0
    for ((i = ${#CL_MNT[@]} - 1; i >= 0; i--)); do
        [ -n "${CL_MNT[$i]:-}" ] || continue
        cluster_stop "$i" "$quiet" || rc=1
    done
    # every daemon any cluster of this test started: none may survive
    for e in "${CL_ALL_PIDS[@]}"; do
        if cl_same_proc "$e"; then
            [ -n "$quiet" ] || note "daemon ${e%%:*} still alive after stop; killing it"
            kill -KILL "${e%%:*}" 2>/dev/null
            cl_wait_gone "${e%%:*}" 5
        fi
    done
    return $rc
}

cluster_wipe() {
    local i="$1"
    if cl_is_mounted "${CL_MNT[$i]}"; then fail "cluster_wipe $i: still mounted"; return 1; fi
    rm -rf --one-file-system "${CL_STORE[$i]}"
    cl_node_setup "$i"
}

cluster_bg() {
    "$@" &
    CL_LAST_BG=$!
    CL_BG+=("$CL_LAST_BG")
}

# ------------------------------------------------------------------ fault proxies (CL_PROXY=1)
cl_proxy_args() { [ "${CL_PROXY:-0}" = 1 ] && echo "--advertise ${CL_URL[$1]}"; }
cl_proxy_start() {   # cl_proxy_start I: proxy in front of node I's port; CL_URL[I] -> it
    local i="$1" d="$CL_DIR/n$1" t0=$SECONDS p
    CL_PLOG[$i]="$d/proxy.log"
    rm -f "$d/proxy.ready"
    "$PY" "$CL_LIB_DIR/faultproxy.py" serve --target "127.0.0.1:${CL_PORT[$i]}" \
        --ready "$d/proxy.ready" --log "${CL_PLOG[$i]}" --seed "$((i + 1))" \
        < /dev/null >> "${CL_PLOG[$i]}" 2>&1 &
    p=$!
    CL_PPID[$i]="$p"
    CL_BG+=("$p")
    until [ -s "$d/proxy.ready" ]; do
        if ! cl_alive "$p" || [ $((SECONDS - t0)) -ge 20 ]; then
            fail "node $i: the fault proxy did not start: $(tail -n 5 "${CL_PLOG[$i]}")"
            return 1
        fi
        sleep 0.05
    done
    read -r _ CL_PPORT[$i] _ CL_PCTL[$i] < "$d/proxy.ready"
    CL_URL[$i]="http://127.0.0.1:${CL_PPORT[$i]}"
}
cl_proxy_stop_all() {   # (a new cluster_init) stop the proxies; forget their PIDs
    local i p keep=()
    for i in "${!CL_PPID[@]}"; do
        p="${CL_PPID[$i]}"
        cl_alive "$p" && kill -TERM "$p" 2>/dev/null
        cl_wait_gone "$p" 5
    done
    for p in "${CL_BG[@]}"; do
        [[ " ${CL_PPID[*]} " == *" $p "* ]] || keep+=("$p")
    done
    CL_BG=("${keep[@]}")
    CL_PPORT=() CL_PCTL=() CL_PLOG=() CL_PPID=()
}
proxy_ctl() {   # proxy_ctl I COMMAND...: one control command to node I's proxy
    local i="$1"
    shift
    [ -n "${CL_PCTL[$i]:-}" ] || { fail "node $i has no fault proxy (CL_PROXY=1 before cluster_init)"; return 1; }
    timeout 30 "$PY" "$CL_LIB_DIR/faultproxy.py" ctl "${CL_PCTL[$i]}" "$@"
}
proxy_set() {
    local i="$1" out
    shift
    out="$(proxy_ctl "$i" set "$*" 2>&1)" || { fail "proxy_set $i $*: $out"; return 1; }
}
proxy_stats() {   # proxy_stats I [EXPR]
    local out
    out="$(proxy_ctl "$1" stats 2>&1)" || { echo "proxy-stats-failed: $out" >&2; return 2; }
    if [ -z "${2:-}" ]; then echo "$out"; else "$PY" -c "$CL_JQ" "$2" <<<"$out"; fi
}
proxy_mark() { local i="$1"; shift; proxy_ctl "$i" log "$*" > /dev/null; }

# ------------------------------------------------------------------ status, metrics
cluster_status() { timeout 10 "$REPLFS" status "${CL_MNT[$1]}" --json; }

CL_JQ='
import json, re, sys
expr = sys.argv[1]
try:
    j = json.load(sys.stdin)
except Exception as e:
    sys.stderr.write("status --json is not JSON: %s\n" % e); sys.exit(3)
try:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", expr):
        v = j
        for k in expr.split("."):
            v = v[int(k)] if isinstance(v, list) else v[k]
    else:
        v = eval(expr, {"j": j})
except Exception as e:
    sys.stderr.write("status field %s: %s: %s\n" % (expr, type(e).__name__, e)); sys.exit(4)
print(v if isinstance(v, str) else json.dumps(v))
'
status_field() {   # status_field MNT EXPR
    local out
    out="$(timeout 10 "$REPLFS" status "$1" --json 2>&1)" || {
        echo "status-failed: $(head -c 200 <<<"$out")" >&2; return 2; }
    "$PY" -c "$CL_JQ" "$2" <<<"$out"
}
node_field() { status_field "${CL_MNT[$1]}" "$2"; }

cluster_metrics() {
    "$PY" - "${CL_PORT[$1]}" <<'PY'
import sys, urllib.request
try:
    r = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=10)
    sys.stdout.write(r.read().decode("utf-8", "replace"))
except Exception as e:
    sys.stderr.write("GET /metrics: %s\n" % e); sys.exit(1)
PY
}
metric() {   # metric I NAME [LABELS]: the value; empty (status 1) if absent
    local out
    out="$(cluster_metrics "$1")" || return 2
    awk -v n="$2" -v l="${3:-}" '
        /^#/ { next }
        { name = $1; sub(/\{.*/, "", name)
          if (name != n) next
          if (l != "" && index($1, l) == 0) next
          print $2; found = 1; exit }
        END { exit !found }' <<<"$out"
}

cluster_diag() {    # cluster_diag [I...]: statuses and log tails of master + nodes I
    local i nodes=(0 "$@") seen=" "
    for i in "${nodes[@]}"; do
        case "$seen" in *" $i "*) continue ;; esac
        seen+="$i "
        [ -n "${CL_MNT[$i]:-}" ] || continue
        echo "    --- node $i (${CL_ROLE[$i]:-?}, pid $(cl_daemon_pid "$i"), alive: $(cl_alive "$(cl_daemon_pid "$i")" && echo yes || echo no), mounted: $(cl_is_mounted "${CL_MNT[$i]}" && echo yes || echo no)) status --json:"
        timeout 10 "$REPLFS" status "${CL_MNT[$i]}" --json 2>&1 | head -c 3000 | sed 's/^/    /'
        echo
        echo "    --- node $i log (last $CL_LOG_TAIL lines of ${CL_LOG[$i]}):"
        tail -n "$CL_LOG_TAIL" "${CL_LOG[$i]}" 2>/dev/null | sed 's/^/    /'
    done
}

# wait_caught_up I [TIMEOUT]: node I's applied_lsn equals the master's lsn
wait_caught_up() {
    local i="$1" t="${2:-60}" t0=$SECONDS m s last=""
    while :; do
        m="$(node_field 0 lsn 2>/dev/null)"
        s="$(node_field "$i" applied_lsn 2>/dev/null)"
        if [[ "$m" =~ ^[0-9]+$ && "$s" =~ ^[0-9]+$ ]]; then
            [ "$s" = "$m" ] && return 0
            if [ "$s" -gt "$m" ]; then
                fail "node $i: applied_lsn $s is AHEAD of the master's lsn $m"
                cluster_diag "$i"
                return 1
            fi
        fi
        last="master lsn=${m:-?} node $i applied_lsn=${s:-?}"
        if [ $((SECONDS - t0)) -ge "$t" ]; then
            fail "node $i not caught up after ${t}s ($last)"
            cluster_diag "$i"
            return 1
        fi
        sleep 0.05
    done
}

# wait_field I EXPR WANT [TIMEOUT]: until node I's status field EXPR prints WANT
wait_field() {
    local i="$1" e="$2" want="$3" t="${4:-30}" t0=$SECONDS v
    while :; do
        v="$(node_field "$i" "$e" 2>&1)"
        [ "$v" = "$want" ] && return 0
        if [ $((SECONDS - t0)) -ge "$t" ]; then
            fail "node $i: status $e is '$v' after ${t}s, expected '$want'"
            cluster_diag "$i"
            return 1
        fi
        sleep 0.1
    done
}

# wait_applied I LSN [TIMEOUT]: until node I's applied_lsn >= LSN
wait_applied() {
    local i="$1" want="$2" t="${3:-60}" t0=$SECONDS s
    while :; do
        s="$(node_field "$i" applied_lsn 2>/dev/null)"
        [[ "$s" =~ ^[0-9]+$ ]] && [ "$s" -ge "$want" ] && return 0
        if [ $((SECONDS - t0)) -ge "$t" ]; then
            fail "node $i: applied_lsn ${s:-?} did not reach $want in ${t}s"
            cluster_diag "$i"
            return 1
        fi
        sleep 0.05
    done
}
