#!/bin/bash
# Help, errors, man pages and the control file (issue 5).
#  1. every command and subcommand takes --help: exit 0, "usage:" on stdout, nothing on
#     stderr
#  2. an unknown command, subcommand or option: exit 2, exactly one line on stderr
#     starting "replfs: ", nothing on stdout
#  3. man/*.5, man/*.7 and man/*.8 (all three sections present) are clean under
#     `groff -man -ww -z` and `mandoc -T lint`: both print nothing
#  4. MNT/.replfs on a master, a slave and a standalone mount: "key value" lines whose
#     role/epoch/lsn/master agree with `replfs status --json` (role, epoch, lsn, the
#     master's own url / the slave's master.url; "standalone" and "-" without
#     replication), writable yes/no; fresh on every open (its lsn follows a write);
#     stat/open/read work but readdir does not list it; write, O_TRUNC, truncate,
#     chmod, chown, unlink, rename of it and onto it are refused (EPERM or EROFS);
#     creating a file or directory named .replfs gets EEXIST; nothing named .replfs
#     ever reaches STORE/data
# Runs in ~10 s.
: "${E2E_TMPDIR:=/var/tmp}"
: "${E2E_TIMEOUT:=180}"
export E2E_TMPDIR E2E_TIMEOUT
source "$(dirname "$0")/lib.sh"
e2e_setup
SRC="${REPLFS_SRC:-$(cd "$E2E_DIR/../.." && pwd)}"
require_tools groff mandoc

# ------------------------------------------------------------ 1. --help everywhere
help_ok() {   # help_ok ARGS...: replfs ARGS --help
    local out="$WORK/help.out" err="$WORK/help.err" rc
    timeout 20 "$REPLFS" "$@" > "$out" 2> "$err" < /dev/null
    rc=$?
    if [ $rc -eq 0 ] && grep -q "usage:" "$out" && [ ! -s "$err" ]; then
        pass "replfs $*: exit 0, usage on stdout"
    else
        fail "replfs $*: exit $rc, stdout: $(head -c 200 "$out"), stderr: $(head -c 200 "$err")"
    fi
}
help_ok --help
for c in init keygen mount status promote switchover verify journal; do
    help_ok "$c" --help
done
for c in dump replay truncate; do
    help_ok journal "$c" --help
done

# ------------------------------------------------------------ 2. unknown commands/options
init_store "$WORK/estore"
mkdir -p "$WORK/emnt"
usage_error() {   # usage_error ARGS...: exit 2 and one "replfs: " line, nothing on stdout
    local out="$WORK/ue.out" err="$WORK/ue.err" rc
    timeout 20 "$REPLFS" "$@" > "$out" 2> "$err" < /dev/null
    rc=$?
    if [ $rc -eq 2 ] && [ "$(wc -l < "$err")" -eq 1 ] && grep -q '^replfs: ' "$err" && [ ! -s "$out" ]; then
        pass "replfs $*: exit 2: $(cat "$err")"
    else
        fail "replfs $*: expected exit 2 and one 'replfs: ' line, got exit $rc, stderr: $(head -c 300 "$err"), stdout: $(head -c 100 "$out")"
    fi
}
usage_error frobnicate
usage_error --frobnicate
usage_error init --frobnicate
usage_error keygen --frobnicate
usage_error mount "$WORK/estore" "$WORK/emnt" --frobnicate
usage_error mount "$WORK/estore" "$WORK/emnt" -o frobnicate=1
usage_error status "$WORK/emnt" --frobnicate
usage_error promote "$WORK/emnt" --frobnicate
usage_error switchover "$WORK/emnt" http://127.0.0.1:1 --frobnicate
usage_error verify "$WORK/emnt" --frobnicate
usage_error journal frobnicate
usage_error journal dump "$WORK/estore" --frobnicate
usage_error journal dump --frobnicate
e2e_is_mounted "$WORK/emnt" && fail "a refused mount left $WORK/emnt mounted"

# ------------------------------------------------------------ 3. man pages
for sec in 5 7 8; do
    ls "$SRC"/man/*."$sec" > /dev/null 2>&1 || fail "no man page of section $sec in $SRC/man"
done
for page in "$SRC"/man/*.[578]; do
    out="$(groff -man -ww -z "$page" 2>&1)"
    if [ -z "$out" ]; then pass "groff -man -ww -z $(basename "$page"): clean"
    else fail "groff -man -ww -z $(basename "$page"): $(head -c 600 <<<"$out")"; fi
    out="$(mandoc -T lint "$page" 2>&1)"
    if [ -z "$out" ]; then pass "mandoc -T lint $(basename "$page"): clean"
    else fail "mandoc -T lint $(basename "$page"): $(head -c 600 <<<"$out")"; fi
done

# ------------------------------------------------------------ 4. the control file
source "$E2E_DIR/../lib/cluster.sh"
cluster_init || fatal "cannot set up the cluster"
cluster_start_master || fatal "master did not start"
cluster_start_slave 1 || fatal "slave did not start"
mount_store "$WORK/estore" "$WORK/emnt" || fatal "standalone mount failed"

# ctl_check MNT STORE WANT_ROLE WANT_WRITABLE: prints ok:/FAIL: lines
ctl_check() {
    "$PY" - "$REPLFS" "$@" <<'PY'
import errno, json, os, stat, subprocess, sys
replfs, mnt, store, want_role, want_w = sys.argv[1:6]
ctl = os.path.join(mnt, ".replfs")
def ok(m): print("ok: " + m)
def bad(m): print("FAIL: " + m)
def read_ctl():
    with open(ctl) as f:
        text = f.read()
    d = {}
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if not k or not v or k in d:
            raise ValueError("malformed control file line %r in %r" % (line, text))
        d[k] = v
    return d
def status():
    out = subprocess.run([replfs, "status", mnt, "--json"], capture_output=True, text=True,
                         timeout=20)
    return json.loads(out.stdout)
try:
    c = read_ctl()
except Exception as e:
    bad("%s/.replfs cannot be read: %s" % (mnt, e)); sys.exit(0)
missing = [k for k in ("role", "epoch", "lsn", "master", "writable") if k not in c]
if missing:
    bad("%s/.replfs lacks %s: %r" % (mnt, missing, c))
else:
    ok("%s/.replfs: %s" % (mnt, " | ".join("%s %s" % kv for kv in c.items())))
if c.get("role") == want_role: ok("role %s" % want_role)
else: bad("role is %r, expected %r" % (c.get("role"), want_role))
if c.get("writable") == want_w: ok("writable %s" % want_w)
else: bad("writable is %r, expected %r" % (c.get("writable"), want_w))
if want_role != "standalone":
    j = status()
    for k in ("role", "epoch", "lsn"):
        if str(j.get(k)) == c.get(k): ok("%s %s as in status --json" % (k, c.get(k)))
        else: bad("%s: control file %r, status --json %r" % (k, c.get(k), j.get(k)))
    want_master = j["url"] if j["role"] == "master" else (j.get("master") or {}).get("url")
    if c.get("master") == want_master: ok("master %s as in status --json" % want_master)
    else: bad("master: control file %r, status --json %r" % (c.get("master"), want_master))
else:
    if c.get("master") == "-": ok("standalone: master -")
    else: bad("standalone: master is %r, expected '-'" % c.get("master"))
    if c.get("epoch", "").isdigit() and c.get("lsn", "").isdigit(): ok("epoch and lsn are numbers")
    else: bad("epoch/lsn not numbers: %r" % c)
# visible to stat/open, not to readdir
st = os.stat(ctl)
if stat.S_ISREG(st.st_mode): ok("stat: a regular file")
else: bad("stat: mode %o is not a regular file" % st.st_mode)
names = os.listdir(mnt)
if ".replfs" in names: bad("readdir lists .replfs: %r" % names)
else: ok("readdir does not list .replfs")
# every way of changing it is refused
refused = (errno.EPERM, errno.EROFS)
def expect(what, fn, errs=refused):
    try:
        r = fn()
        if isinstance(r, int) and what.startswith("open"):
            os.close(r)
        bad("%s succeeded" % what)
    except OSError as e:
        if e.errno in errs: ok("%s: %s" % (what, errno.errorcode[e.errno]))
        else: bad("%s: %s, expected one of %s" % (what, errno.errorcode.get(e.errno),
                                                    [errno.errorcode[x] for x in errs]))
expect("open O_WRONLY", lambda: os.open(ctl, os.O_WRONLY))
expect("open O_RDWR", lambda: os.open(ctl, os.O_RDWR))
expect("open O_WRONLY|O_TRUNC", lambda: os.open(ctl, os.O_WRONLY | os.O_TRUNC))
expect("open O_WRONLY|O_APPEND", lambda: os.open(ctl, os.O_WRONLY | os.O_APPEND))
expect("truncate", lambda: os.truncate(ctl, 0))
expect("chmod", lambda: os.chmod(ctl, 0o666))
expect("chown", lambda: os.chown(ctl, 1, 1))
expect("unlink", lambda: os.unlink(ctl))
expect("rename of it", lambda: os.rename(ctl, os.path.join(mnt, "ctl-moved")))
if want_w == "yes":
    other = os.path.join(mnt, "ctl-other")
    with open(other, "w") as f:
        f.write("x")
    expect("rename onto it", lambda: os.rename(other, ctl))
    os.unlink(other)
    expect("create .replfs (O_CREAT|O_EXCL)",
           lambda: os.open(ctl, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644), (errno.EEXIST,))
    expect("mkdir .replfs", lambda: os.mkdir(ctl), (errno.EEXIST,))
    if os.path.lexists(os.path.join(store, "data", ".replfs")):
        bad("STORE/data/.replfs exists: the control file reached the tree")
    else:
        ok("nothing named .replfs in STORE/data")
try:
    c2 = read_ctl()
    if c2.get("role") == c.get("role"): ok("still readable after the refused changes")
    else: bad("control file changed role: %r" % c2)
except Exception as e:
    bad("control file unreadable after the refused changes: %s" % e)
PY
}
# ctl_report OUT LABEL: ok:/FAIL: lines become pass/fail; anything else (a traceback) fails
ctl_report() {
    local l
    grep -q . "$1" || fail "$2: the control file check printed nothing"
    while IFS= read -r l; do
        case "$l" in ok:*) pass "$2: ${l#ok: }" ;; FAIL:*) fail "$2: ${l#FAIL: }" ;; *) fail "$2: $l" ;; esac
    done < "$1"
}

ctl_check "${CL_MNT[0]}" "${CL_STORE[0]}" master yes > "$WORK/ctl0" 2>&1; ctl_report "$WORK/ctl0" master
wait_caught_up 1 60
ctl_check "${CL_MNT[1]}" "${CL_STORE[1]}" slave no > "$WORK/ctl1" 2>&1; ctl_report "$WORK/ctl1" slave
ctl_check "$WORK/emnt" "$WORK/estore" standalone yes > "$WORK/ctl2" 2>&1; ctl_report "$WORK/ctl2" standalone

# fresh on every open: a write on the master moves its lsn, then the slave's
ctl_lsn() { awk '$1 == "lsn" { print $2 }' "$1/.replfs" 2>/dev/null; }
l0="$(ctl_lsn "${CL_MNT[0]}")"
echo fresh > "${CL_MNT[0]}/fresh"
l1="$(ctl_lsn "${CL_MNT[0]}")"
if [[ "$l0" =~ ^[0-9]+$ && "$l1" =~ ^[0-9]+$ ]] && [ "$l1" -gt "$l0" ]; then
    pass "master's .replfs is fresh on every open (lsn $l0 -> $l1 after a write)"
else
    fail "master's .replfs lsn did not follow a write: '$l0' -> '$l1'"
fi
wait_caught_up 1 60
ls1="$(ctl_lsn "${CL_MNT[1]}")"
check_eq "$ls1" "$(node_field 1 lsn)" "slave's .replfs lsn follows replication"

unmount "$WORK/emnt" "$WORK/estore"
cluster_stop 1
cluster_stop 0
e2e_finish
