#!/bin/bash
# Replication security (SPEC guarantee 6), on real daemons over real HTTP on loopback.
#  1. wrong key: a slave with another key never gets data (status master.state
#     "refused", a clear last_error), the master counts refused{auth} (status and
#     /metrics) and logs "not sealed with this cluster's key"; the slave's tree stays
#     empty. Random bytes POSTed to /repl get 403. The master stays up: a slave with the
#     right key catches up afterwards.
#  2. replay, through a recording proxy (repl_security/proxy.py) between a slave and
#     the master: (a) a captured FETCH, ACK and HELLO re-sent with curl -> 403,
#     refused{replay} +1 each, logged; a captured FETCH with its (authenticated) header
#     changed -> 403 refused{auth}; (b) the proxy answers the slave's next FETCH, HELLO
#     and ACK with earlier captured BATCH/WELCOME/ACKED -> the slave refuses each
#     (its refused{replay}), applies nothing twice (its journal ends at the master's
#     LSN) and converges to the master's tree once the proxy forwards again;
#     (c) a HELLO captured before a master restart, re-sent after it -> 403.
#  3. records whose path leaves the data directory, from a fake master that holds the
#     cluster key (repl_security/fake_master.py): ../escaped, /etc/replfs-pwned,
#     a/../../b, ../escaped_dir, a rename/link/write out, a bad checksum -> each batch
#     refused (refused{record}), nothing created outside STORE/data; a symlink to /etc
#     (and to a victim file and directory outside) followed by operations through it ->
#     nothing outside changes; the slave daemon stays alive and its mount answers.
#     A forged master (answers sealed with another key) -> the slave refuses them.
# Every check compares against an expectation that a broken replfs would not meet.
: "${E2E_TMPDIR:=/var/tmp}"
: "${E2E_TIMEOUT:=170}"
export E2E_TMPDIR E2E_TIMEOUT
source "$(dirname "$0")/lib.sh"
e2e_setup
require_tools fusermount3 curl
source "$E2E_DIR/../lib/cluster.sh"
H="$E2E_DIR/repl_security"
WC="$H/wirecheck.py"

# Host paths a broken slave could write to: none may exist before we start, and any
# we find afterwards are removed again at exit (only those that did not exist before).
ETC_TARGETS=(/etc/replfs-pwned /etc/replfs-linked /etc/pwned /etc/pwned_dir /etc/moved /etc/hard
             /escaped /b)
for p in "${ETC_TARGETS[@]}"; do
    [ -e "$p" ] || [ -L "$p" ] && fatal "$p exists before the test: cannot check that it is not created"
done
sec_cleanup_host() {
    local p
    for p in "${ETC_TARGETS[@]}"; do
        if [ -e "$p" ] || [ -L "$p" ]; then
            echo "[$E2E_NAME] removing $p (created during the test)"
            rm -rf --one-file-system "$p"
        fi
    done
}
# (keeps the exit status for e2e_cleanup, which exits with it)
trap 'sec_rc=$?; sec_cleanup_host; (exit $sec_rc); e2e_cleanup' EXIT

cluster_init || fatal "cannot set up the cluster (replfs keygen)"
KEY="$CL_KEY"

# post FILE [PORT]: POST FILE's bytes to /repl; prints the HTTP code, body -> $WORK/post.body
post() {
    curl -s -m 10 -o "$WORK/post.body" -w '%{http_code}' -X POST \
        -H 'Content-Type: application/octet-stream' --data-binary "@$1" \
        "http://127.0.0.1:${2:-${CL_PORT[0]}}/repl"
}
# num VALUE: VALUE if it is a number, else -1 (so arithmetic comparisons fail loudly)
num() { [[ "$1" =~ ^[0-9]+$ ]] && echo "$1" || echo -1; }
mfield() { num "$(node_field "$1" "$2" 2>/dev/null)"; }
mmetric() { num "$(metric "$1" replfs_repl_refused_total "reason=\"$2\"" 2>/dev/null)"; }
# wait_for SECONDS CMD...: until CMD succeeds
wait_for() {
    local t="$1" t0=$SECONDS
    shift
    until "$@"; do
        [ $((SECONDS - t0)) -ge "$t" ] && return 1
        sleep 0.1
    done
}
# start_helper OUTFILE CMD...: a python helper in the background, until it prints "listening"
start_helper() {
    local out="$1"
    shift
    cluster_bg "$@" > "$out" 2>&1
    wait_for 10 grep -q listening "$out" || { fail "helper $* did not start: $(head -c 300 "$out")"; return 1; }
}
# log_has I REGEX: the node's log (its daemon's stderr) has a line matching REGEX
log_has() { grep -E -m1 -- "$2" "${CL_LOG[$1]}"; }
check_log() {   # check_log I REGEX MSG
    local l
    if l="$(log_has "$1" "$2")"; then pass "$3: $l"; else fail "$3: no line matching /$2/ in ${CL_LOG[$1]}"; fi
}
check_gt() {    # check_gt GOT BASE MSG: GOT > BASE
    if [ "$1" -gt "$2" ] 2>/dev/null; then pass "$3 ($2 -> $1)"; else fail "$3: expected more than $2, got $1"; fi
}

# ============================================================== 1. wrong key
log "1. wrong key"
cluster_start_master || fatal "master did not start"
M="${CL_MNT[0]}"
mkdir -p "$M/docs/sub" && echo "secret one" > "$M/docs/a.txt" && echo "secret two" > "$M/docs/sub/b.txt" &&
    head -c 100000 /dev/urandom > "$M/docs/blob" || fail "writing files on the master"
MLSN=$(mfield 0 lsn)
[ "$MLSN" -gt 0 ] || fail "master lsn is $MLSN after writing files"
AUTH0=$(mfield 0 refused.auth) MAUTH0=$(mmetric 0 auth)

"$REPLFS" keygen > "$WORK/wrong.key" && chmod 600 "$WORK/wrong.key" || fatal "keygen"
cmp -s "$WORK/wrong.key" "$KEY" && fatal "two keygens gave the same key"
cl_start 1 slave --slave-of "${CL_URL[0]}" --key "$WORK/wrong.key" || fatal "wrong-key slave did not start"
if wait_for 15 test "$(node_field 1 master.state 2>/dev/null)" = refused; then
    pass "wrong-key slave: master.state is refused"
else
    fail "wrong-key slave: master.state is '$(node_field 1 master.state 2>&1)' after 15s, expected refused"
fi
LE="$(node_field 1 master.last_error 2>&1)"
if [[ "$LE" == *refused* && "$LE" == *key* ]]; then pass "wrong-key slave: last_error is clear: $LE"
else fail "wrong-key slave: last_error should say it was refused and mention the key, got: $LE"; fi
# it keeps trying and never streams
states=""
for i in $(seq 15); do states+="$(node_field 1 master.state 2>/dev/null) "; sleep 0.1; done
if [[ "$states" == *streaming* || "$states" == *catching_up* ]]; then
    fail "wrong-key slave reached streaming at some point: $states"
else pass "wrong-key slave never streams (sampled 15 times over 1.5s)"; fi
check_gt "$(mfield 0 refused.auth)" "$AUTH0" "master status refused.auth increased"
check_gt "$(mmetric 0 auth)" "$MAUTH0" "master metric replfs_repl_refused_total{reason=\"auth\"} increased"
check_log 0 "refused a replication request from 127\.0\.0\.1.*not sealed with this cluster's key" \
    "master log names the refused request"
check_eq "$(ls -A "${CL_MNT[1]}" 2>&1)" "" "wrong-key slave's tree is empty while the master has files"
check_eq "$(mfield 1 applied_lsn)" 0 "wrong-key slave applied nothing"
check_eq "$(ls -A "${CL_STORE[1]}/data" 2>&1)" "" "wrong-key slave's STORE/data is empty"

# the master is still up and serving: a slave with the right key catches up
cl_alive "${CL_PID[0]}" && pass "master daemon still alive" || fail "master daemon died"
cluster_start_slave 2 || fail "good slave did not start"
if wait_caught_up 2 30; then
    treedump "$M" "$WORK/p1.m" && treedump "${CL_MNT[2]}" "$WORK/p1.s2" &&
        cmp_files "$WORK/p1.m" "$WORK/p1.s2" "a slave with the right key catches up: tree identical to the master's"
fi
check_eq "$(ls -A "${CL_MNT[1]}" 2>&1)" "" "wrong-key slave still empty after the good slave caught up"
cluster_stop 1

# random bytes and an empty body (the wrong-key slave is stopped: exact counts)
head -c 4096 /dev/urandom > "$WORK/random"
A1=$(mfield 0 refused.auth)
check_eq "$(post "$WORK/random")" 403 "POST of 4 KiB of random bytes to /repl gets 403"
grep -q "not sealed with this cluster's key" "$WORK/post.body" && pass "403 body: $(cat "$WORK/post.body")" ||
    fail "403 body should say 'not sealed with this cluster's key': $(head -c 200 "$WORK/post.body")"
: > "$WORK/empty"
check_eq "$(post "$WORK/empty")" 403 "POST of an empty body to /repl gets 403"
check_eq "$(mfield 0 refused.auth)" "$((A1 + 2))" "refused.auth counted both (+2)"
cl_alive "${CL_PID[0]}" && pass "master daemon alive after the garbage" || fail "master daemon died after the garbage"
echo "after garbage" > "$M/docs/after_garbage"
wait_caught_up 2 30 && check_eq "$(cat "${CL_MNT[2]}/docs/after_garbage" 2>&1)" "after garbage" \
    "master still serving: the good slave gets a file written after the garbage"
cluster_stop 2

# ============================================================== 2. replay
log "2. replay, through a recording proxy"
PPORT=$(cl_free_port) PDIR="$WORK/proxy"
mkdir -p "$PDIR" && echo forward > "$PDIR/mode"
start_helper "$WORK/proxy.out" "$PY" "$H/proxy.py" "$PPORT" "${CL_PORT[0]}" "$PDIR" || fatal "proxy"
cl_start 3 slave --slave-of "http://127.0.0.1:$PPORT" --key "$KEY" || fatal "proxied slave did not start"
wait_caught_up 3 30
for i in $(seq 1 5); do echo "round one $i" > "$M/docs/r1_$i"; done
wait_caught_up 3 30
has_ack() { "$PY" "$WC" pick "$PDIR" ACK > /dev/null; }
wait_for 10 has_ack || fail "the proxy saw no ACK"
SEQ_F=$("$PY" "$WC" pick "$PDIR" FETCH) SEQ_A=$("$PY" "$WC" pick "$PDIR" ACK) SEQ_H=$("$PY" "$WC" pick "$PDIR" HELLO)
log "captured: last FETCH #$SEQ_F, last ACK #$SEQ_A, last HELLO #$SEQ_H ($(wc -l < "$PDIR/index") exchanges)"
# our encoder (used by the fake master in part 3) is byte-exact against real batches
if out="$("$PY" "$WC" reencode "$KEY" "$PDIR" 2>&1)"; then pass "record encoder check: $out"
else fail "record encoder check: $out"; fi

# (a) re-sent captured requests
replay_req() {   # replay_req SEQ LABEL
    local r0 code
    r0=$(mfield 0 refused.replay)
    code=$(post "$PDIR/$1.req")
    check_eq "$code" 403 "re-sent captured $2 (#$1, $("$PY" "$WC" show "$KEY" "$PDIR/$1.req" | cut -c1-60)) gets 403"
    grep -q "replayed" "$WORK/post.body" && pass "403 body: $(cat "$WORK/post.body")" ||
        fail "$2 replay: 403 body should say replayed: $(head -c 200 "$WORK/post.body")"
    check_eq "$(mfield 0 refused.replay)" "$((r0 + 1))" "$2 replay: master refused.replay +1"
}
MREP0=$(mmetric 0 replay)
[ -n "$SEQ_F" ] && replay_req "$SEQ_F" FETCH || fail "no FETCH captured"
check_log 0 "refused a replayed request from 127\.0\.0\.1" "master log names the replayed request"
[ -n "$SEQ_A" ] && replay_req "$SEQ_A" ACK || fail "no ACK captured"
[ -n "$SEQ_H" ] && replay_req "$SEQ_H" HELLO || fail "no HELLO captured"
check_log 0 "refused a hello from 127\.0\.0\.1:[0-9]*: its challenge is unknown, used or expired" "master log names the replayed hello"
check_eq "$(mmetric 0 replay)" "$((MREP0 + 3))" "metric replfs_repl_refused_total{reason=\"replay\"} +3"
# a captured request whose header counter is raised (to escape the replay check)
A2=$(mfield 0 refused.auth)
"$PY" "$WC" tamper "$PDIR/$SEQ_F.req" "$WORK/tampered"
check_eq "$(post "$WORK/tampered")" 403 "captured FETCH with its counter raised by 1000 gets 403"
check_eq "$(mfield 0 refused.auth)" "$((A2 + 1))" "tampered header counted as refused.auth (+1)"
# the real slave is not disturbed by any of it
echo "after replays" > "$M/docs/r1_after"
wait_caught_up 3 30 && check_eq "$(cat "${CL_MNT[3]}/docs/r1_after" 2>&1)" "after replays" \
    "proxied slave still streaming after the re-sent requests"

# (b) the proxy answers with earlier captured responses
log "2b. proxy replays an old BATCH, WELCOME and ACKED to the slave"
SREP0=$(mfield 3 refused.replay)
echo "replay FETCH HELLO ACK" > "$PDIR/mode"
for i in $(seq 1 5); do echo "round two $i" > "$M/docs/r2_$i"; done
mode_done() { [ "$(cat "$PDIR/mode")" = forward ]; }
if wait_for 20 mode_done; then pass "proxy replayed an old BATCH, WELCOME and ACKED to the slave"
else fail "proxy could not replay everything in 20s (mode left: $(cat "$PDIR/mode"))"; fi
grep '"replayed": true' "$PDIR/index" | sed 's/^/    /'
for i in $(seq 1 5); do echo "round three $i" > "$M/docs/r3_$i"; done
rm "$M/docs/r1_1" && mv "$M/docs/r1_2" "$M/docs/r1_2.moved"
wait_for 10 test "$(mfield 3 refused.replay)" -ge $((SREP0 + 3))
SREP1=$(mfield 3 refused.replay)
if [ "$SREP1" -ge $((SREP0 + 3)) ]; then pass "slave refused.replay $SREP0 -> $SREP1 (each replayed answer refused)"
else fail "slave refused.replay $SREP0 -> $SREP1, expected at least +3 (BATCH, WELCOME, ACKED)"; fi
check_log 3 "answer that was not for this request \(replayed\?\) was refused" "slave log names the replayed answer"
if wait_caught_up 3 30; then
    check_eq "$(mfield 3 lsn)" "$(mfield 0 lsn)" "slave's journal ends at the master's LSN (nothing applied twice)"
    treedump "$M" "$WORK/p2.m" && treedump "${CL_MNT[3]}" "$WORK/p2.s3" &&
        cmp_files "$WORK/p2.m" "$WORK/p2.s3" "after the replays the slave converges to the master's tree"
fi
check_eq "$(node_field 3 master.state)" streaming "proxied slave streaming again"

# (c) a HELLO captured before a master restart, re-sent after it
log "2c. a captured HELLO re-sent after a master restart"
cluster_stop 0 || fail "master did not stop"
cluster_start_master || fatal "master did not restart"
ID3="$(node_field 3 node_id)"
acked3() { num "$(node_field 0 "[s['acked_lsn'] for s in j['slaves'] if s['node_id'] == '$ID3'][0]" 2>/dev/null)"; }
wait_for 10 test "$(acked3)" -gt 0
ACK3=$(acked3) R0=$(mfield 0 refused.replay) NL=$(wc -l < "${CL_LOG[0]}")
code=$(post "$PDIR/$SEQ_H.req")
sleep 0.2
if [ "$code" = 403 ]; then
    pass "captured HELLO re-sent after a master restart gets 403"
else
    fail "captured HELLO (#$SEQ_H, $("$PY" "$WC" show "$KEY" "$PDIR/$SEQ_H.req" | cut -c1-70)) from before the restart, re-sent after it, got HTTP $code (expected 403); the answer: $("$PY" "$WC" show "$KEY" "$WORK/post.body" 2>&1 | cut -c1-120); master log since: $(tail -n +$((NL + 1)) "${CL_LOG[0]}" | tr '\n' '|' | cut -c1-400)"
fi
check_eq "$(mfield 0 refused.replay)" "$((R0 + 1))" "replayed HELLO after restart counted as refused.replay"
if [ "$(acked3)" -ge "$ACK3" ]; then pass "the master's acked_lsn for the slave did not move back ($ACK3 -> $(acked3))"
else fail "the master's acked_lsn for the slave moved back: $ACK3 -> $(acked3)"; fi
echo "after restart" > "$M/docs/after_restart"
wait_caught_up 3 30 && check_eq "$(cat "${CL_MNT[3]}/docs/after_restart" 2>&1)" "after restart" \
    "proxied slave follows the restarted master"
cluster_stop 3

# ============================================================== 3. hostile records
VICTIM="$WORK/victim" VDIR="$WORK/victimdir"
echo "victim content" > "$VICTIM" && chmod 640 "$VICTIM" && touch -d '2011-11-11 11:11:11' "$VICTIM"
mkdir -p "$VDIR" && echo keep > "$VDIR/keep" && touch -d '2011-11-11 11:11:11' "$VDIR/keep" "$VDIR"
victim_state() {
    { stat -c '%n %a %u %g %s %Y %h %F' "$VICTIM" "$VDIR" "$VDIR/keep"; sha256sum "$VICTIM" "$VDIR/keep"
      getfattr -d "$VICTIM" 2>/dev/null; ls -A "$VDIR"; } 2>&1
}
victim_state > "$WORK/victim.before"
ls -A /etc > "$WORK/ls.etc.before"; ls -A / > "$WORK/ls.r.before"
# every name the hostile records use (fake_master.py)
RECORD_NAMES='escaped|escaped_dir|escaped_w|escaped_mixed|replfs-pwned|replfs-linked|b|a|renamed|badsum|mixed_first|ok1|after|link|vlink|dlink|pwned|pwned_dir|moved|hard|stolen|keep'

# fake_run I SCENARIO: fake master + fresh slave I on it, until the fake master is done
fake_run() {
    local i="$1" scen="$2" port flog
    port=$(cl_free_port) flog="$WORK/fake_$scen.log"
    start_helper "$WORK/fake_$scen.out" "$PY" "$H/fake_master.py" "$port" "$KEY" "$flog" "$scen" \
        --victim "$VICTIM" --victim-dir "$VDIR" || return 1
    cl_node_setup "$i" || return 1
    touch "$WORK/mark.$scen"
    cl_start "$i" slave --slave-of "http://127.0.0.1:$port" --key "$KEY" || return 1
    if ! wait_for 40 grep -q '^[0-9.]* done$' "$flog"; then
        fail "$scen: fake master not done after 40s; its log:"
        sed 's/^/    /' "$flog"
        cluster_diag "$i"
    fi
    sed 's/^/    fake: /' "$flog" | grep -E 'outcome|served' | cut -c1-160
    FLOG="$flog"
}
# outcome STEP WANT: the fake master's decision for STEP starts with WANT
outcome() {
    local got
    got="$(grep -E -m1 "^[0-9.]+ outcome $1 " "$FLOG" | sed -E 's/^[0-9.]+ outcome [^ ]+ //')"
    if [[ "$got" == "$2"* ]]; then pass "step $1: $got"; else fail "step $1: expected $2, got '${got:-nothing}'"; fi
}
# nothing_outside I SCEN: no file created/changed in the node dir outside STORE/data and the
# store's own bookkeeping, since the scenario started
nothing_outside() {
    local i="$1" d s out
    s="${CL_STORE[$i]}" d="$(dirname "${CL_STORE[$i]}")"
    out="$(find "$d" \( -path "$s/data" -o -path "$s/journal" -o -path "$s/staging" -o -path "${CL_MNT[$i]}" \) \
        -prune -o -newer "$WORK/mark.$2" -print | grep -v -x -E "$d|$s|${CL_LOG[$i]}|$s/(pid|control\.sock|checkpoint|epoch|slaves|lock|replfs\.store|mountpoint|state)")"
    check_eq "$out" "" "$2: nothing created or changed beside STORE/data (in $d)"
}
hosts_untouched() {   # hosts_untouched LABEL
    local p bad=""
    for p in "${ETC_TARGETS[@]}" "${CL_STORE[$1]}/escaped" "${CL_STORE[$1]}/escaped_dir" "${CL_STORE[$1]}/b" \
             "${CL_STORE[$1]}/renamed" "${CL_STORE[$1]}/escaped_mixed" "$(dirname "${CL_STORE[$1]}")/escaped_w"; do
        [ -e "$p" ] || [ -L "$p" ] && bad+="$p "
    done
    check_eq "$bad" "" "$2: none of the escape targets exists (/etc/replfs-pwned, /etc/pwned, STORE/escaped, STORE/b, ...)"
    # new entries in /etc and / (other tests may add some, e.g. useradd's lock files):
    # none may carry a name that one of the hostile records used
    local d new ours
    for d in /etc /; do
        new="$(ls -A "$d" | sort | comm -13 <(sort "$WORK/ls.$(basename "$d" | tr / r).before") -)"
        ours="$(grep -x -E "$RECORD_NAMES" <<<"$new")"
        check_eq "$ours" "" "$2: no entry named like a record's path appeared in $d"
        [ -n "$new" ] && [ -z "$ours" ] && note "$2: new entries in $d (not ours): $(echo $new)"
    done
    victim_state > "$WORK/victim.after"
    cmp_files "$WORK/victim.before" "$WORK/victim.after" "$2: the victim file and directory outside are unchanged"
}
alive_and_answering() {   # alive_and_answering I LABEL
    cl_alive "${CL_PID[$1]}" && pass "$2: slave daemon still alive" || fail "$2: slave daemon died"
    check_eq "$(cat "${CL_MNT[$1]}/after" 2>&1)" "still here" "$2: slave mount answers (reads the record sent after the hostile ones)"
    check_eq "$(cat "${CL_MNT[$1]}/ok1" 2>&1)" "hello" "$2: the first good record is there (the fake master's encoding is accepted)"
}

log "3a. records with paths leaving the data directory"
fake_run 4 paths
for s in base after; do outcome "$s" applied; done
for s in dotdot absolute inner-dotdot mkdir-dotdot rename-out link-out write-out bad-checksum mixed; do
    outcome "$s" refused
done
check_eq "$(mfield 4 refused.record)" 9 "slave refused.record counts the 9 hostile batches"
check_eq "$(grep -c 'refused a batch from the master: its record .* fails its checks' "${CL_LOG[4]}")" 9 \
    "slave log has one 'refused a batch' line per hostile batch"
# (the mixed batch: a good record, then ../escaped_mixed; the good one may have been applied)
if [ -e "${CL_STORE[4]}/data/mixed_first" ]; then
    note "mixed batch: its first (good) record WAS applied although the log says: $(grep -m1 'record 1 after' "${CL_LOG[4]}" | sed 's/.*refused/refused/')"
fi
check_eq "$(cd "${CL_MNT[4]}" && ls -A | grep -vx mixed_first | tr '\n' ' ')" "a after ok1 " "slave tree holds only the good records"
check_eq "$(cd "${CL_STORE[4]}/data" && find . | grep -vx ./mixed_first | sort | tr '\n' ' ')" ". ./a ./after ./ok1 " "STORE/data holds only the good records"
hosts_untouched 4 paths
nothing_outside 4 paths
alive_and_answering 4 paths

log "3b. a symlink out of the data directory, then operations through it"
fake_run 5 symlink
for s in base symlink-etc symlink-victim symlink-vdir after; do outcome "$s" applied; done
check_eq "$(readlink "${CL_STORE[5]}/data/link")" /etc "the symlink itself exists inside STORE/data (link -> /etc)"
check_eq "$(readlink "${CL_STORE[5]}/data/vlink")" "$VICTIM" "symlink vlink -> victim file inside STORE/data"
for f in pwned pwned_dir moved hard; do
    [ -e "/etc/$f" ] && fail "/etc/$f was created through the symlink" || pass "/etc/$f not created through link -> /etc"
done
[ -e "$VDIR/pwned" ] && fail "$VDIR/pwned created through dlink" || pass "nothing created in the victim dir through dlink"
[ -e "${CL_STORE[5]}/data/stolen" ] && fail "dlink/keep renamed into the data dir" || pass "the victim dir's file was not moved in"
hosts_untouched 5 symlink
nothing_outside 5 symlink
alive_and_answering 5 symlink

log "3c. a forged master (answers sealed with another key)"
cl_node_setup 6
FA0=0
fake_run_forged() {
    local port
    port=$(cl_free_port)
    start_helper "$WORK/fake_forge.out" "$PY" "$H/fake_master.py" "$port" "$KEY" "$WORK/fake_forge.log" paths --forge || return 1
    cl_start 6 slave --slave-of "http://127.0.0.1:$port" --key "$KEY"
}
fake_run_forged || fail "forged-master run did not start"
if wait_for 15 test "$(node_field 6 master.state 2>/dev/null)" = refused; then pass "forged master: slave state refused"
else fail "forged master: slave state '$(node_field 6 master.state 2>&1)', expected refused"; fi
LE="$(node_field 6 master.last_error 2>&1)"
[[ "$LE" == *"not sealed with this cluster's key"* ]] && pass "forged master: last_error: $LE" ||
    fail "forged master: last_error should say the answer was not sealed with the key: $LE"
check_gt "$(mfield 6 refused.auth)" 0 "forged master: slave refused.auth counts the forged answers"
grep -q "forged answer" "$WORK/fake_forge.log" && pass "forged master did answer ($(grep -c 'forged answer' "$WORK/fake_forge.log") forged answers)" ||
    fail "forged master never answered"
check_eq "$(ls -A "${CL_MNT[6]}" 2>&1)" "" "forged master: slave tree empty"
cl_alive "${CL_PID[6]}" && pass "forged master: slave daemon alive" || fail "forged master: slave daemon died"

cluster_stop_all
e2e_finish
