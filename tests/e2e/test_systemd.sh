#!/bin/bash
# systemd integration (issue 5): packaging/replfs@.service and the daemon's side of it.
#  1. the unit: Type=notify, ExecStart=/usr/sbin/replfs mount --config
#     /etc/replfs/%i.conf -f, Restart=on-failure, Documentation=man:..., Wants= and
#     After=network-online.target, TimeoutStartSec of 5 minutes or more; `systemd-analyze
#     verify` of an instance (ExecStart pointed at $REPLFS, MANPATH at man/) prints
#     nothing; the control: a broken copy makes it complain
#  2. the unit's own ExecStart (binary and config path substituted) run with
#     NOTIFY_SOCKET at a datagram socket this test listens on: READY=1 arrives, and in
#     that instant the mountpoint is a mount, answers, and a file written there lands in
#     STORE/data; STATUS= is sent; `umount MNT` brings STOPPING=1 and the daemon exits 0
#  3. JOURNAL_STREAM = stderr's dev:ino: every line of the daemon's stderr carries a
#     "<N>" priority prefix ("<6>" for info); the control: JOURNAL_STREAM naming another
#     file leaves lines unprefixed, naming stderr prefixes an error with "<3>"
# Runs in ~5 s.  Needs systemd-analyze (Debian package: systemd).
: "${E2E_TMPDIR:=/var/tmp}"
: "${E2E_TIMEOUT:=180}"
export E2E_TMPDIR E2E_TIMEOUT
source "$(dirname "$0")/lib.sh"
e2e_setup
SRC="${REPLFS_SRC:-$(cd "$E2E_DIR/../.." && pwd)}"
UNIT="$SRC/packaging/replfs@.service"
[ -f "$UNIT" ] || fatal "no unit file $UNIT"
command -v systemd-analyze > /dev/null ||
    fatal "systemd-analyze is missing: add the Debian package 'systemd' to scripts/setup.sh"

# ------------------------------------------------------------ 1. the unit
unit_has() {   # unit_has REGEX MSG
    if grep -qE "$1" "$UNIT"; then pass "unit: $2"; else fail "unit: $2 (no line matching /$1/)"; fi
}
unit_has '^Type=notify$' "Type=notify"
unit_has '^ExecStart=/usr/sbin/replfs mount --config /etc/replfs/%i\.conf -f$' "ExecStart runs the instance's config in the foreground"
unit_has '^Restart=on-failure$' "Restart=on-failure"
unit_has '^Documentation=.*man:replfs\(8\)' "Documentation names man:replfs(8)"
unit_has '^Documentation=.*man:replfs\.conf\(5\)' "Documentation names man:replfs.conf(5)"
unit_has '^Wants=.*network-online\.target' "Wants=network-online.target"
unit_has '^After=.*network-online\.target' "After=network-online.target"
ts="$(sed -n 's/^TimeoutStartSec=//p' "$UNIT")"
us="$(systemd-analyze timespan "$ts" 2>/dev/null | sed -n 's/^ *μs: *//p')"
if [ "$ts" = infinity ] || { [[ "$us" =~ ^[0-9]+$ ]] && [ "$us" -ge 300000000 ]; }; then
    pass "unit: TimeoutStartSec=$ts leaves time for a long crash replay"
else
    fail "unit: TimeoutStartSec='$ts' ($us us): expected 5 minutes or more"
fi
mkdir -p "$WORK/units" "$WORK/man/man5" "$WORK/man/man7" "$WORK/man/man8"
for p in "$SRC"/man/*.[578]; do cp "$p" "$WORK/man/man${p##*.}/"; done
sed "s#/usr/sbin/replfs#$REPLFS#" "$UNIT" > "$WORK/units/replfs@test.service"
# verify runs man(1) on each Documentation= page: ours are found through MANPATH
SDA_MAN=()
if ! command -v man > /dev/null; then
    note "man(1) is missing (Debian package man-db): Documentation= pages not checked by systemd-analyze"
    SDA_MAN=(--man=no)
fi
out="$(cd "$WORK/units" && MANPATH="$WORK/man" timeout 60 systemd-analyze verify "${SDA_MAN[@]}" "$WORK/units/replfs@test.service" 2>&1)"
rc=$?
if [ $rc -eq 0 ] && [ -z "$out" ]; then pass "systemd-analyze verify replfs@test.service: clean"
else fail "systemd-analyze verify replfs@test.service: exit $rc: $(head -c 800 <<<"$out")"; fi
mkdir -p "$WORK/bad"
sed -e "s#/usr/sbin/replfs#$REPLFS#" -e 's/^Restart=.*/Restart=sometimes/' "$UNIT" > "$WORK/bad/replfs@test.service"
out="$(cd "$WORK/bad" && MANPATH="$WORK/man" timeout 60 systemd-analyze verify "${SDA_MAN[@]}" "$WORK/bad/replfs@test.service" 2>&1)"
if [ -n "$out" ]; then pass "control: systemd-analyze verify reports a broken copy ($(head -n 1 <<<"$out"))"
else fail "control: systemd-analyze verify is silent on Restart=sometimes: the check above proves nothing"; fi

# ------------------------------------------------------------ 2. sd_notify
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
KEY="$WORK/cluster.key"
"$REPLFS" keygen > "$KEY" && chmod 600 "$KEY" || fatal "replfs keygen failed"
STORE="$WORK/store" MNT="$WORK/mnt"
init_store "$STORE" || fatal "init failed"
mkdir -p "$MNT"
CONF="$WORK/test.conf"
cat > "$CONF" <<EOF
[mount]
store = $STORE
mountpoint = $MNT
[replication]
listen = 127.0.0.1:$(free_port)
key = $KEY
EOF
EXEC="$(sed -n 's/^ExecStart=//p' "$UNIT" | head -n 1)"
EXEC="${EXEC//\/usr\/sbin\/replfs/$REPLFS}"
EXEC="${EXEC//\/etc\/replfs\/%i.conf/$CONF}"
read -r -a CMD <<<"$EXEC"
log "daemon command (the unit's ExecStart): ${CMD[*]}"

SOCK="$WORK/notify.sock" EVENTS="$WORK/notify.json"
"$PY" - "$SOCK" "$MNT" "$EVENTS" <<'PY' > "$WORK/listener.log" 2>&1 &
import json, os, socket, sys, threading, time
sock_path, mnt, out = sys.argv[1:4]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sock_path)
os.chmod(sock_path, 0o666)
open(out + ".listening", "w").close()
events = []
def save():
    with open(out + ".tmp", "w") as f:
        json.dump(events, f)
    os.rename(out + ".tmp", out)
def mounted():
    p = os.path.realpath(mnt)
    with open("/proc/self/mounts") as f:
        return any(l.split()[1] == p for l in f)
def probe(res):
    try:
        os.stat(mnt)
        with open(os.path.join(mnt, "ready-probe"), "w") as f:
            f.write("written at READY=1\n")
        res["write"] = "ok"
    except OSError as e:
        res["write"] = "error: %s" % e
s.settimeout(150)
deadline = time.time() + 150
while time.time() < deadline:
    try:
        data = s.recv(65536)
    except socket.timeout:
        break
    ev = {"t": time.time(), "lines": data.decode("utf-8", "replace").split("\n")}
    if "READY=1" in ev["lines"]:
        # in this very instant: is it mounted, does it answer, can a file be written?
        ev["mounted"] = mounted()
        res = {"write": "hung (no answer in 20 s)"}
        th = threading.Thread(target=probe, args=(res,), daemon=True)
        th.start()
        th.join(20)
        ev["write"] = res["write"]
    events.append(ev)
    save()
    if "STOPPING=1" in ev["lines"]:
        break
save()
PY
LISTENER=$!
for i in $(seq 100); do [ -e "$EVENTS.listening" ] && break; sleep 0.1; done
[ -e "$EVENTS.listening" ] || fatal "the notify listener did not start: $(cat "$WORK/listener.log")"
ev() {   # ev PYEXPR: evaluate over the list of events e (each {"t","lines",...})
    "$PY" -c 'import json, sys
try:
    e = json.load(open(sys.argv[1]))
except Exception:
    e = []
print(eval(sys.argv[2]))' "$EVENTS" "$1" 2>/dev/null
}

DLOG="$WORK/daemon.log"
: > "$DLOG"
E2E_MOUNTS+=("$MNT")
JS="$(stat -c '%d:%i' "$DLOG")"
NOTIFY_SOCKET="$SOCK" JOURNAL_STREAM="$JS" "${CMD[@]}" 2> "$DLOG" > /dev/null < /dev/null &
DPID=$!
E2E_PIDS+=("$DPID:$(proc_start "$DPID")")
ready=0
for i in $(seq 600); do
    [ "$(ev 'any("READY=1" in x["lines"] and "write" in x for x in e)')" = True ] && { ready=1; break; }
    tl_alive "$DPID" || break
    sleep 0.1
done
if [ $ready = 1 ]; then
    pass "READY=1 arrived: $(ev '[x["lines"] for x in e if "READY=1" in x["lines"]][0]')"
    check_eq "$(ev '[x for x in e if "READY=1" in x["lines"]][0]["mounted"]')" True "at READY=1 the mountpoint is already mounted"
    check_eq "$(ev '[x for x in e if "READY=1" in x["lines"]][0]["write"]')" ok "at READY=1 the mount answers and takes a write"
    if [ "$(cat "$STORE/data/ready-probe" 2>/dev/null)" = "written at READY=1" ]; then
        pass "the file written at READY=1 went through replfs into STORE/data"
    else
        fail "the file written at READY=1 is not in STORE/data (written under the mount?)"
    fi
    check_eq "$(ev 'sum(1 for x in e if "READY=1" in x["lines"])')" 1 "READY=1 sent once"
else
    fail "no READY=1 within 60 s (daemon alive: $(tl_alive "$DPID" && echo yes || echo no)); log: $(tail -n 5 "$DLOG")"
fi
nstatus="$(ev 'sum(1 for x in e for l in x["lines"] if l.startswith("STATUS="))')"
if [[ "$nstatus" =~ ^[0-9]+$ ]] && [ "$nstatus" -ge 1 ]; then
    pass "STATUS= sent: $(ev '[l for x in e for l in x["lines"] if l.startswith("STATUS=")][-1]')"
else
    fail "no STATUS= line sent"
fi
check_eq "$(ev 'any("STOPPING=1" in x["lines"] for x in e)')" False "no STOPPING=1 while mounted"

if e2e_is_mounted "$MNT"; then
    timeout 60 umount "$MNT" 2> "$WORK/umount.err" || fail "umount $MNT: $(cat "$WORK/umount.err")"
fi
stopping=0
for i in $(seq 300); do
    [ "$(ev 'any("STOPPING=1" in x["lines"] for x in e)')" = True ] && { stopping=1; break; }
    sleep 0.1
done
if [ $stopping = 1 ]; then pass "STOPPING=1 arrived after umount"; else fail "no STOPPING=1 within 30 s of umount"; fi
if wait_gone "$DPID" 30; then
    wait "$DPID"; rc=$?
    check_eq "$rc" 0 "the daemon exited 0 after umount"
else
    fail "daemon $DPID still running 30 s after umount"
fi
wait_gone "$LISTENER" 10 || kill "$LISTENER" 2>/dev/null

# ------------------------------------------------------------ 3. journald priority prefixes
if [ -s "$DLOG" ] && ! grep -qvE '^<[0-7]>replfs: ' "$DLOG"; then
    pass "JOURNAL_STREAM: all $(wc -l < "$DLOG") lines of stderr carry a <N> prefix"
else
    fail "JOURNAL_STREAM: lines without a <N>replfs: prefix: $(grep -vE '^<[0-7]>replfs: ' "$DLOG" | head -n 3) (log has $(wc -l < "$DLOG") lines)"
fi
grep -q '^<6>replfs: ' "$DLOG" && pass "info lines carry <6>" || fail "no <6> info line: $(head -n 3 "$DLOG")"
# the control: the prefix follows stderr's identity, not the variable's presence
E1="$WORK/e1.log" E2="$WORK/e2.log"
: > "$E1"; : > "$E2"
JOURNAL_STREAM="$(stat -c '%d:%i' "$E1")" "$REPLFS" mount --config "$WORK/no-such.conf" 2> "$E1" < /dev/null
JOURNAL_STREAM="$(stat -c '%d:%i' "$E1")" "$REPLFS" mount --config "$WORK/no-such.conf" 2> "$E2" < /dev/null
check_eq "$(head -c 11 "$E1")" "<3>replfs: " "an error on stderr that is the journal stream carries <3>"
check_eq "$(head -c 8 "$E2")" "replfs: " "JOURNAL_STREAM naming another file: no prefix"
e2e_finish
