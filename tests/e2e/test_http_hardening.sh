#!/bin/bash
# The master's HTTP port (--listen) under hostile clients, on real daemons over
# loopback (python3 raw sockets), while a real slave replicates and a writer writes:
#  1. malformed requests: garbage request line, unknown HTTP version, header line
#     without a colon, NUL bytes, negative / non-numeric / conflicting Content-Length,
#     a request line of 64 KiB, 1 MiB of headers -> each gets a 4xx status (505 for
#     the unknown version) or the connection closed, never a 2xx;
#  2. oversized bodies: POST /repl with Content-Length 10 GB, then a stream of body
#     bytes -> refused (413 or closed) within seconds, long before 10 GB were read
#     (the body cap is REPL_REQ_MAX, 1 MiB, replicator/repl_priv.h); a 2 MiB body
#     actually sent -> 413; chunked abuse: a chunk size of 2^64-1, a bad chunk size,
#     and 2 MiB of 1-byte chunks -> refused or closed;
#  3. slowloris: 48 connections from 127.0.0.2 that each send one header byte every
#     2 s for ~20 s -> at most the per-IP limit of them stay open (the rest are closed),
#     and meanwhile the slave (on 127.0.0.1) keeps replicating: a file written on the
#     master reaches it within 30 s, several times;
#  4. afterwards: the master daemon is the same PID, /metrics answers, the slave's lag
#     recovers (applied_lsn = the master's lsn), master and slave trees are identical,
#     the master logged the refusals ("refused an oversized request").
# Wrong keys, replays and path escapes are tests/e2e/test_repl_security.sh.
# Runtime ~25 s (normal and ASan builds). HARDEN_SLOW_S (default 20) sets how long the slowloris phase lasts.
: "${E2E_TMPDIR:=/var/tmp}"
: "${E2E_TIMEOUT:=200}"
export E2E_TMPDIR E2E_TIMEOUT
source "$(dirname "$0")/lib.sh"
e2e_setup
source "$E2E_DIR/../lib/cluster.sh"
PY=/usr/bin/python3
[ -x "$PY" ] || PY="$(command -v python3)"
SLOW_S="${HARDEN_SLOW_S:-20}"

ATK="$WORK/attack.py"
cat > "$ATK" <<'PYEOF'
"""Hostile HTTP clients. attack.py PORT CASE... prints one line per case:
CASE <tab> OUTCOME <tab> detail, OUTCOME = status:NNN | closed | timeout."""
import socket, sys, time

PORT = int(sys.argv[1])


def outcome(s, deadline):
    """Read until a status line, the connection closing, or the deadline."""
    buf = b""
    s.settimeout(0.5)
    while time.time() < deadline:
        try:
            d = s.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return "closed", "reset"
        if not d:
            if buf.startswith(b"HTTP/"):
                break
            return "closed", "eof after %d bytes" % len(buf)
        buf += d
        if b"\r\n" in buf and buf.startswith(b"HTTP/"):
            break
    if buf.startswith(b"HTTP/"):
        return "status:" + buf.split(b" ", 2)[1].decode(), buf.split(b"\r\n", 1)[0].decode()
    return "timeout", "no answer in time"


def one(payload, stream=None, limit_s=15):
    """Send payload, then optionally keep sending stream() chunks; report the outcome."""
    s = socket.create_connection(("127.0.0.1", PORT), timeout=5)
    deadline = time.time() + limit_s
    sent = 0
    try:
        s.sendall(payload)
        if stream:
            s.setblocking(False)
            for chunk in stream():
                if time.time() > deadline:
                    break
                try:
                    sent += s.send(chunk)
                except BlockingIOError:
                    # The server reads no more: see whether it answered or closed.
                    s.setblocking(True)
                    o = outcome(s, min(deadline, time.time() + 3))
                    if o[0] != "timeout":
                        return o[0], "%s (after %d body bytes)" % (o[1], sent)
                    s.setblocking(False)
                    time.sleep(0.05)
                except (ConnectionResetError, BrokenPipeError):
                    return "closed", "reset after %d body bytes" % sent
            s.setblocking(True)
    except (ConnectionResetError, BrokenPipeError):
        return "closed", "reset while sending"
    o = outcome(s, deadline)
    s.close()
    return o[0], "%s (after %d body bytes)" % (o[1], sent)


def endless(n=64 * 1024, total=64 << 20):
    def gen():
        for _ in range(total // n):
            yield b"x" * n
    return gen


def chunks1():
    for _ in range(2 << 20):
        yield b"1\r\nx\r\n"


H = b"Host: 127.0.0.1\r\n"
CASES = {
    "garbage": lambda: one(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n"),
    "bad-version": lambda: one(b"GET /metrics HTTP/9.9\r\n" + H + b"\r\n"),
    "no-colon": lambda: one(b"GET /metrics HTTP/1.1\r\n" + H + b"this is not a header\r\n\r\n"),
    "nul-bytes": lambda: one(b"POST /repl HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\nContent-Length: 0\r\n\r\n"),
    "cl-negative": lambda: one(b"POST /repl HTTP/1.1\r\n" + H + b"Content-Length: -5\r\n\r\nxxxxx"),
    "cl-garbage": lambda: one(b"POST /repl HTTP/1.1\r\n" + H + b"Content-Length: 12abc\r\n\r\nxxxxx"),
    "cl-conflict": lambda: one(b"POST /repl HTTP/1.1\r\n" + H +
                               b"Content-Length: 5\r\nContent-Length: 70000\r\n\r\nxxxxx"),
    "long-line": lambda: one(b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\n" + H + b"\r\n"),
    "huge-header": lambda: one(b"GET /metrics HTTP/1.1\r\n" + H +
                               b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(1024)) +
                               b"\r\n"),
    "cl-10GB": lambda: one(b"POST /repl HTTP/1.1\r\n" + H + b"Content-Length: 10000000000\r\n\r\n",
                           endless()),
    "body-2MiB": lambda: one(b"POST /repl HTTP/1.1\r\n" + H + b"Content-Length: 2097152\r\n\r\n" +
                             b"y" * 2097152),
    "chunk-huge": lambda: one(b"POST /repl HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
                              b"FFFFFFFFFFFFFFFF\r\n", endless()),
    "chunk-bad": lambda: one(b"POST /repl HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
                             b"zz\r\nxx\r\n0\r\n\r\n"),
    "chunk-many": lambda: one(b"POST /repl HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n",
                              chunks1),
}


def slowloris(n, seconds):
    """n connections from 127.0.0.2, one header byte every 2 s each. Prints how many
    were still open at the end and how many the server closed."""
    socks = []
    for i in range(n):
        try:
            s = socket.socket()
            s.bind(("127.0.0.2", 0))
            s.settimeout(3)
            s.connect(("127.0.0.1", PORT))
            s.sendall(b"POST /repl HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            socks.append(s)
        except OSError:
            pass
    end = time.time() + seconds
    open_ = set(range(len(socks)))
    while time.time() < end:
        for i in list(open_):
            try:
                socks[i].sendall(b"a")
                socks[i].setblocking(False)
                try:
                    if socks[i].recv(4096) == b"":
                        open_.discard(i)
                except BlockingIOError:
                    pass
                socks[i].setblocking(True)
            except OSError:
                open_.discard(i)
        time.sleep(2)
    print("slowloris\topen=%d\tclosed=%d\tconnected=%d" % (len(open_), len(socks) - len(open_), len(socks)))
    for s in socks:
        s.close()


if sys.argv[2] == "slowloris":
    slowloris(int(sys.argv[3]), float(sys.argv[4]))
else:
    for case in sys.argv[2:]:
        t0 = time.time()
        res, detail = CASES[case]()
        print("%s\t%s\t%s (%.1f s)" % (case, res, detail, time.time() - t0), flush=True)
PYEOF

cluster_init || fatal "cannot set up the cluster (replfs keygen)"
cluster_start_master || fatal "master did not start"
cluster_start_slave 1 || fatal "slave did not start"
MPID="${CL_PID[0]}"
PORT="${CL_PORT[0]}"
M0="${CL_MNT[0]}"

# A writer on the master for the whole test (stopped at the end).
writer() {
    local i=0
    mkdir -p "$M0/w"
    while :; do
        i=$((i + 1))
        printf 'record %d\n' "$i" > "$M0/w/f$((i % 50))" || true
        [ $((i % 20)) = 0 ] && rm -f "$M0/w/f$((i % 7))"
        sleep 0.05
    done
}
cluster_bg writer

# fresh TAG: a file written on the master reaches the slave within 30 s
fresh() {
    local f="fresh-$1" i
    echo "$1" > "$M0/$f" || { fail "$1: cannot write on the master"; return 1; }
    for ((i = 0; i < 300; i++)); do
        [ "$(cat "${CL_MNT[1]}/$f" 2>/dev/null)" = "$1" ] && return 0
        sleep 0.1
    done
    return 1
}

log "1+2. malformed requests, oversized and chunked bodies"
timeout 150 "$PY" "$ATK" "$PORT" garbage bad-version no-colon nul-bytes cl-negative cl-garbage \
    cl-conflict long-line huge-header cl-10GB body-2MiB chunk-huge chunk-bad chunk-many \
    > "$WORK/attacks.out" 2> "$WORK/attacks.err"
[ -s "$WORK/attacks.err" ] && fail "attack script: $(head -c 500 "$WORK/attacks.err")"
while IFS=$'\t' read -r case res detail; do
    case "$case:$res" in
        bad-version:status:505) pass "$case: refused with 505 HTTP Version Not Supported ($detail)" ;;
        *:status:4*) pass "$case: refused with ${res#status:} ($detail)" ;;
        *:closed) pass "$case: connection closed ($detail)" ;;
        *) fail "$case: not refused: $res ($detail)" ;;
    esac
done < "$WORK/attacks.out"
[ "$(wc -l < "$WORK/attacks.out")" = 14 ] || fail "only $(wc -l < "$WORK/attacks.out") of 14 attack cases reported"
cl_alive "$MPID" && pass "the master (PID $MPID) is still up after the malformed requests" ||
    fatal "the master died during the malformed requests"
fresh after-malformed && pass "replication works after the malformed requests" ||
    fail "a file written on the master did not reach the slave after the malformed requests"

log "3. slowloris: 48 connections from 127.0.0.2 for ${SLOW_S} s"
"$PY" "$ATK" "$PORT" slowloris 48 "$SLOW_S" > "$WORK/slow.out" 2>&1 &
SLOWPID=$!
CL_BG+=("$SLOWPID")
sleep 3
ok=0 tries=0
while kill -0 "$SLOWPID" 2>/dev/null && [ "$tries" -lt 3 ]; do
    tries=$((tries + 1))
    fresh "during-slowloris-$tries" && ok=$((ok + 1))
    sleep 2
done
wait "$SLOWPID"
[ "$tries" -gt 0 ] && [ "$ok" = "$tries" ] && pass "the slave kept replicating during the slowloris ($ok/$tries files arrived)" ||
    fail "replication stalled during the slowloris: $ok/$tries files arrived"
read -r _ open closed connected < <(tr '\t' ' ' < "$WORK/slow.out")
open="${open#open=}" closed="${closed#closed=}"
log "slowloris: $(cat "$WORK/slow.out")"
if [ -n "$open" ] && [ "$open" -le 32 ] && [ $((open + closed)) -gt 0 ]; then
    pass "slowloris: $open connections from one address left open (per-IP limit 32), $closed closed"
else
    fail "slowloris: $open connections from one address stayed open (more than the per-IP limit 32): $(cat "$WORK/slow.out")"
fi

log "4. after the attacks"
cl_alive "$MPID" && pass "the master is the same process (PID $MPID)" || fail "the master died"
curl -s -m 10 "http://127.0.0.1:$PORT/metrics" | grep -q '^replfs_' &&
    pass "/metrics answers" || fail "/metrics does not answer"
kill -TERM "${CL_LAST_BG:-0}" 2>/dev/null
for p in "${CL_BG[@]}"; do kill -TERM "$p" 2>/dev/null; done
sleep 0.5
wait_caught_up 1 60 && pass "the slave's lag recovered (applied_lsn = the master's lsn)" ||
    { fail "the slave did not catch up"; cluster_diag 1; }
treedump "$M0" "$WORK/m.dump" --no-root && treedump "${CL_MNT[1]}" "$WORK/s.dump" --no-root &&
    cmp_files "$WORK/m.dump" "$WORK/s.dump" "master and slave trees are identical"
grep -q "refused an oversized request" "${CL_LOG[0]}" &&
    pass "the master logged the oversized requests ($(grep -c 'refused an oversized request' "${CL_LOG[0]}") lines)" ||
    fail "no 'refused an oversized request' line in the master's log"

cluster_stop_all
e2e_finish
