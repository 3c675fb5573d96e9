#!/bin/bash
# The configuration file of `replfs mount` (issue 5; replfs.conf(5)).
#  1. defaults: --print-config without a file lists every key of every section (exactly
#     the 21 keys, each once, under its [section]) with its default
#  2. every key set in a file (--config and -o config=), with # and ; comments and an
#     inline " ; comment": each shown in effect by --print-config; every BOOL spelling
#  3. the command line over the file: STORE/MNT arguments, -o KEY=VALUE for every key,
#     the long options (--listen --advertise --key --sync --sync-timeout --strict
#     --slave-of), -f, -d, -o ro, bare -o strict; the options mount(8), mount.fuse3,
#     fstab and systemd add (rw, defaults, _netdev, nofail, noauto, user, dev, suid, exec,
#     x-systemd.*, x-*, comment=) are accepted and change nothing
#  4. behaviour: a master and a slave mounted from --config files alone (no STORE/MNT
#     arguments): listen serves /metrics, slave_of replicates a file; STORE/replfs.conf
#     is read without --config (read_only = yes gives EROFS); foreground = yes stays in
#     the foreground; [log] level = debug prints the checkpoint's debug line and
#     level = info does not; segment_mb = 1 + checkpoint_mb = 1 removes old segments,
#     keep_journal = yes keeps them
#  5. errors (exit 2, one "replfs: " line, nothing mounted): unknown key (with its line
#     number), a key of another section, unknown section (at its header's line or its
#     first key's; also when it holds no key), syntax error, repeated key (at its
#     second line), a bad value for every typed key, a missing --config file, bad
#     values on the command line
# Runs in ~10 s.
: "${E2E_TMPDIR:=/var/tmp}"
: "${E2E_TIMEOUT:=200}"
export E2E_TMPDIR E2E_TIMEOUT
source "$(dirname "$0")/lib.sh"
e2e_setup
require_tools curl

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
"$REPLFS" keygen > "$WORK/k1" && chmod 600 "$WORK/k1" || fatal "replfs keygen failed"
cp "$WORK/k1" "$WORK/k2" && cp "$WORK/k1" "$WORK/k3" && chmod 600 "$WORK/k2" "$WORK/k3"
init_store "$WORK/s1" || fatal "init failed"
mkdir -p "$WORK/m1" "$WORK/m2" "$WORK/s2"
P1="$(free_port)" P2="$(free_port)" P3="$(free_port)"

# pc NAME ARGS...: replfs mount ARGS --print-config > $WORK/pc.NAME (rc in PC_RC)
pc() {
    local name="$1"; shift
    timeout 20 "$REPLFS" mount "$@" --print-config > "$WORK/pc.$name" 2> "$WORK/pc.$name.err" < /dev/null
    PC_RC=$?
    if [ $PC_RC -ne 0 ]; then
        fail "$name: replfs mount $* --print-config exited $PC_RC: $(head -c 300 "$WORK/pc.$name.err")"
        return 1
    fi
    return 0
}
# pc_check NAME [--all] SECTION.KEY=VALUE...: compare the printed config (BOOL spellings,
# numbers and paths normalised); --all: also exactly the 21 keys, each once
pc_check() {
    local name="$1"; shift
    "$PY" - "$WORK/pc.$name" "$@" > "$WORK/pcc.$name" 2>&1 <<'PY'
import os, re, sys
path, args = sys.argv[1], sys.argv[2:]
ALL = {"mount": ["store", "mountpoint", "foreground", "debug", "read_only", "attr_timeout",
                 "entry_timeout"],
       "journal": ["segment_mb", "checkpoint_mb", "checkpoint_s", "keep_journal", "replay"],
       "replication": ["listen", "advertise", "slave_of", "key", "sync", "sync_timeout",
                       "strict", "retain_mb"],
       "log": ["level"]}
got, dup, section = {}, [], None
for n, line in enumerate(open(path), 1):
    line = line.rstrip("\n")
    if not line.strip() or line.lstrip()[0] in "#;":
        continue
    m = re.fullmatch(r"\[([^\]]+)\]", line.strip())
    if m:
        section = m.group(1); continue
    m = re.fullmatch(r"\s*([A-Za-z_]+)\s*=\s?(.*?)\s*", line)
    if not m or section is None:
        print("FAIL: line %d of --print-config is not 'key = value' under a section: %r" % (n, line)); continue
    k = (section, m.group(1))
    if k in got: dup.append(k)
    got[k] = m.group(2)
check_all = args and args[0] == "--all"
if check_all:
    args = args[1:]
    want = {(s, k) for s, ks in ALL.items() for k in ks}
    if set(got) == want and not dup: print("ok: all 21 keys, each once, under their sections")
    else: print("FAIL: keys printed: missing %s, unknown %s, repeated %s" % (
        sorted(want - set(got)), sorted(set(got) - want), dup))
YES, NO = {"yes", "true", "on", "1"}, {"no", "false", "off", "0"}
def norm(key, v):
    v = v.strip()
    if key in ("attr_timeout", "entry_timeout"):
        try: return float(v)
        except ValueError: return v
    if key in ("store", "mountpoint", "key") and v:
        return os.path.realpath(v)
    if key in ("listen", "advertise", "slave_of", "key") and v in ("", "-", "none"):
        return ""
    if key in ("foreground", "debug", "read_only", "keep_journal", "strict"):
        return "yes" if v.lower() in YES else "no" if v.lower() in NO else v
    return v
bad = 0
for a in args:
    sk, _, want = a.partition("=")
    s, _, k = sk.partition(".")
    if (s, k) not in got:
        print("FAIL: [%s] %s not printed" % (s, k)); bad += 1; continue
    if norm(k, got[(s, k)]) != norm(k, want):
        print("FAIL: [%s] %s = %r, expected %r" % (s, k, got[(s, k)], want)); bad += 1
if args and not bad:
    print("ok: %d values as expected" % len(args))
PY
    local l any=0
    while IFS= read -r l; do
        any=1
        case "$l" in ok:*) pass "$name: ${l#ok: }" ;; *) fail "$name: ${l#FAIL: }" ;; esac
    done < "$WORK/pcc.$name"
    [ $any = 1 ] || fail "$name: the check printed nothing"
}

# ------------------------------------------------------------ 1. defaults
pc defaults "$WORK/s1" "$WORK/m1" && pc_check defaults --all \
    mount.store="$WORK/s1" mount.mountpoint="$WORK/m1" mount.foreground=no mount.debug=no \
    mount.read_only=no mount.attr_timeout=1 mount.entry_timeout=1 \
    journal.segment_mb=64 journal.checkpoint_mb=64 journal.checkpoint_s=30 \
    journal.keep_journal=no journal.replay=normal \
    replication.listen= replication.advertise= replication.slave_of= replication.key= \
    replication.sync=off replication.sync_timeout=10000 replication.strict=no \
    replication.retain_mb=1024 log.level=info

# ------------------------------------------------------------ 2. every key from a file
cat > "$WORK/full.conf" <<EOF
# every key, none at its default
; a comment of the other kind

[mount]
store = $WORK/s1
mountpoint = $WORK/m1
foreground = yes
debug = yes
read_only = true
attr_timeout = 2.5
entry_timeout = 0.25

[journal]
segment_mb = 8
checkpoint_mb = 3 ; an inline comment
checkpoint_s = 7
keep_journal = on
replay = checkpoint

[replication]
listen   =   127.0.0.1:$P1
advertise = http://127.0.0.1:$P1
key = $WORK/k1
sync = 2
sync_timeout = 1234
strict = 1
retain_mb = 5

[log]
level = debug
EOF
FULL=(mount.store="$WORK/s1" mount.mountpoint="$WORK/m1" mount.foreground=yes mount.debug=yes
      mount.read_only=yes mount.attr_timeout=2.5 mount.entry_timeout=0.25
      journal.segment_mb=8 journal.checkpoint_mb=3 journal.checkpoint_s=7
      journal.keep_journal=yes journal.replay=checkpoint
      replication.listen="127.0.0.1:$P1" replication.advertise="http://127.0.0.1:$P1"
      replication.key="$WORK/k1" replication.sync=2 replication.sync_timeout=1234
      replication.strict=yes replication.retain_mb=5 log.level=debug)
pc file --config "$WORK/full.conf" && pc_check file --all "${FULL[@]}"
pc file_o -o "config=$WORK/full.conf" && pc_check file_o "${FULL[@]}"

cat > "$WORK/slave.conf" <<EOF
[mount]
store = $WORK/s1
mountpoint = $WORK/m1
[replication]
slave_of = http://127.0.0.1:$P2
key = $WORK/k1
sync = off
[log]
level = error
EOF
pc slavefile --config "$WORK/slave.conf" &&
    pc_check slavefile replication.slave_of="http://127.0.0.1:$P2" replication.sync=off log.level=error

for b in yes no true false on off 1 0 YES Off; do
    printf '[journal]\nkeep_journal = %s\n' "$b" > "$WORK/bool.conf"
    case "$b" in yes|true|on|1|YES) want=yes ;; *) want=no ;; esac
    pc "bool_$b" "$WORK/s1" "$WORK/m1" --config "$WORK/bool.conf" && pc_check "bool_$b" journal.keep_journal=$want
done

# ------------------------------------------------------------ 3. the command line wins
pc args_over_file "$WORK/s2" "$WORK/m2" --config "$WORK/full.conf" &&
    pc_check args_over_file mount.store="$WORK/s2" mount.mountpoint="$WORK/m2" journal.segment_mb=8
pc o_over_file --config "$WORK/full.conf" -o foreground=no,debug=no,read_only=no \
    -o attr_timeout=3,entry_timeout=4,segment_mb=16,checkpoint_mb=9,checkpoint_s=11 \
    -o keep_journal=no,replay=normal,listen=127.0.0.1:$P2,advertise=http://127.0.0.1:$P2 \
    -o key=$WORK/k2,sync=3,sync_timeout=4321,strict=no,retain_mb=6,log_level=warn \
    -o store=$WORK/s2,mountpoint=$WORK/m2 &&
    pc_check o_over_file mount.foreground=no mount.debug=no mount.read_only=no \
        mount.attr_timeout=3 mount.entry_timeout=4 journal.segment_mb=16 journal.checkpoint_mb=9 \
        journal.checkpoint_s=11 journal.keep_journal=no journal.replay=normal \
        replication.listen="127.0.0.1:$P2" replication.advertise="http://127.0.0.1:$P2" \
        replication.key="$WORK/k2" replication.sync=3 replication.sync_timeout=4321 \
        replication.strict=no replication.retain_mb=6 log.level=warn \
        mount.store="$WORK/s2" mount.mountpoint="$WORK/m2"
cat > "$WORK/plain.conf" <<EOF
[mount]
store = $WORK/s1
mountpoint = $WORK/m1
foreground = no
debug = no
read_only = no
[replication]
listen = 127.0.0.1:$P1
key = $WORK/k1
sync = 1
strict = no
EOF
pc long_over_file --config "$WORK/plain.conf" -f --listen "127.0.0.1:$P3" \
    --advertise "http://127.0.0.1:$P3" --key "$WORK/k3" --sync=4 --sync-timeout 777 --strict -o ro &&
    pc_check long_over_file mount.foreground=yes mount.read_only=yes \
        replication.listen="127.0.0.1:$P3" replication.advertise="http://127.0.0.1:$P3" \
        replication.key="$WORK/k3" replication.sync=4 replication.sync_timeout=777 replication.strict=yes
pc d_over_file --config "$WORK/plain.conf" -d -o strict && pc_check d_over_file mount.debug=yes replication.strict=yes
# what mount(8), mount.fuse3, fstab and systemd pass along is accepted and changes nothing
pc generic "$WORK/s1" "$WORK/m1" -o rw,defaults,_netdev,nofail,auto,noauto,user,nouser \
    -o dev,nodev,suid,nosuid,exec,noexec,x-systemd.requires=network-online.target,x-foo=1,comment=x &&
    pc_check generic mount.read_only=no mount.store="$WORK/s1" journal.segment_mb=64
pc slave_over_file --config "$WORK/slave.conf" --slave-of "http://127.0.0.1:$P3" -o log_level=info &&
    pc_check slave_over_file replication.slave_of="http://127.0.0.1:$P3" log.level=info

for m in "$WORK/m1" "$WORK/m2"; do
    e2e_is_mounted "$m" && fail "--print-config mounted $m"
done

# ------------------------------------------------------------ 4. behaviour
PM="$(free_port)" PS="$(free_port)"
init_store "$WORK/ms" && init_store "$WORK/ss" || fatal "init failed"
mkdir -p "$WORK/mm" "$WORK/sm"
cat > "$WORK/master.conf" <<EOF
[mount]
store = $WORK/ms
mountpoint = $WORK/mm
[replication]
listen = 127.0.0.1:$PM
key = $WORK/k1
EOF
cat > "$WORK/slave2.conf" <<EOF
[mount]
store = $WORK/ss
mountpoint = $WORK/sm
[replication]
slave_of = http://127.0.0.1:$PM
listen = 127.0.0.1:$PS
key = $WORK/k2
EOF
# mount_conf CONF MNT STORE: replfs mount --config CONF (detaches), tracked for cleanup
mount_conf() {
    E2E_MOUNTS+=("$2")
    if ! timeout 60 "$REPLFS" mount --config "$1" > "$WORK/mc.out" 2> "$WORK/mc.err" < /dev/null; then
        fail "replfs mount --config $1: $(head -c 300 "$WORK/mc.err")"
        return 1
    fi
    if e2e_is_mounted "$2"; then pass "mounted $2 from $(basename "$1") alone"
    else fail "replfs mount --config $1 returned 0 but $2 is not mounted"; return 1; fi
    local p; p="$(daemon_pid "$3")"
    [ -n "$p" ] && E2E_PIDS+=("$p:$(proc_start "$p")")
    return 0
}
if mount_conf "$WORK/master.conf" "$WORK/mm" "$WORK/ms"; then
    if curl -sf "http://127.0.0.1:$PM/metrics" > "$WORK/metrics" && grep -q '^replfs_lsn ' "$WORK/metrics"; then
        pass "listen from the file: /metrics served on 127.0.0.1:$PM"
    else
        fail "listen from the file: no replfs_lsn at http://127.0.0.1:$PM/metrics"
    fi
    if mount_conf "$WORK/slave2.conf" "$WORK/sm" "$WORK/ss"; then
        echo "through the config" > "$WORK/mm/replicated"
        ok=0
        for i in $(seq 300); do
            [ "$(cat "$WORK/sm/replicated" 2>/dev/null)" = "through the config" ] && { ok=1; break; }
            sleep 0.1
        done
        if [ $ok = 1 ]; then pass "slave_of from the file: a file written on the master reached the slave"
        else fail "slave_of from the file: the file did not reach the slave in 30 s (status: $(timeout 10 "$REPLFS" status "$WORK/sm" --json 2>&1 | head -c 400))"; fi
        unmount "$WORK/sm" "$WORK/ss"
    fi
    unmount "$WORK/mm" "$WORK/ms"
fi

# STORE/replfs.conf is read without --config: read_only = yes
init_store "$WORK/rs" && mkdir -p "$WORK/rm"
printf '[mount]\nread_only = yes\n' > "$WORK/rs/replfs.conf"
if mount_store "$WORK/rs" "$WORK/rm"; then
    "$PY" -c '
import errno, os, sys
try:
    os.close(os.open(sys.argv[1] + "/f", os.O_CREAT | os.O_WRONLY, 0o644)); print("created")
except OSError as e:
    print(errno.errorcode[e.errno])' "$WORK/rm" > "$WORK/ro.out" 2>&1
    check_eq "$(cat "$WORK/ro.out")" EROFS "STORE/replfs.conf read_only = yes: create gets EROFS"
    unmount "$WORK/rm" "$WORK/rs"
fi

# foreground, log level, segment_mb, checkpoint_mb, keep_journal by behaviour
# fg_run NAME LEVEL KEEP: mount from a file with foreground = yes, write 6 MiB, unmount;
# sets FG_SEGS (segment files left at the end) and FG_LOG
fg_run() {
    local name="$1" s="$WORK/$1.s" m="$WORK/$1.m" p i
    init_store "$s" || return 1
    mkdir -p "$m"
    cat > "$WORK/$name.conf" <<EOF
[mount]
store = $s
mountpoint = $m
foreground = yes
[journal]
segment_mb = 1
checkpoint_mb = 1
checkpoint_s = 999
keep_journal = $3
[log]
level = $2
EOF
    FG_LOG="$WORK/$name.log"
    E2E_MOUNTS+=("$m")
    "$REPLFS" mount --config "$WORK/$name.conf" > "$FG_LOG" 2>&1 < /dev/null &
    p=$!
    E2E_PIDS+=("$p:$(proc_start "$p")")
    for i in $(seq 300); do e2e_is_mounted "$m" && break; tl_alive "$p" || break; sleep 0.1; done
    if ! e2e_is_mounted "$m"; then
        fail "$name: foreground mount from the file did not come up: $(tail -n 5 "$FG_LOG")"
        return 1
    fi
    sleep 0.5
    if tl_alive "$p" && [ "$(daemon_pid "$s")" = "$p" ]; then
        pass "$name: foreground = yes: the process started is the daemon (STORE/pid $p)"
    else
        fail "$name: foreground = yes but the daemon is not the process started ($p, STORE/pid $(daemon_pid "$s"))"
    fi
    for i in 1 2 3 4 5 6; do
        head -c 1048576 /dev/urandom > "$m/f$i" || fail "$name: write $m/f$i failed"
    done
    sync -f "$m/f6" 2>/dev/null
    unmount "$m" "$s"
    FG_SEGS="$(ls "$s/journal" | grep -c '\.seg$')"
}
if fg_run dbg debug no; then
    if grep -q 'checkpoint at LSN .*removed' "$FG_LOG"; then
        pass "level = debug: the checkpoint's debug line is logged"
    else
        fail "level = debug: no 'checkpoint at LSN ... removed' line in the log: $(tail -n 5 "$FG_LOG")"
    fi
    if [ "$FG_SEGS" -le 3 ]; then pass "segment_mb = 1, checkpoint_mb = 1: old segments removed ($FG_SEGS left after 6 MiB)"
    else fail "segment_mb = 1, checkpoint_mb = 1: $FG_SEGS segments left after 6 MiB"; fi
fi
if fg_run info info yes; then
    if grep -q 'checkpoint at LSN' "$FG_LOG"; then
        fail "level = info: a debug line was logged: $(grep 'checkpoint at LSN' "$FG_LOG" | head -n 1)"
    else
        pass "level = info: no debug lines"
    fi
    if [ "$FG_SEGS" -ge 6 ]; then pass "keep_journal = yes with segment_mb = 1: all $FG_SEGS segments kept"
    else fail "keep_journal = yes with segment_mb = 1: only $FG_SEGS segments after 6 MiB"; fi
fi

# ------------------------------------------------------------ 5. errors
# conf_error NAME REGEX CONTENT: a file with CONTENT; replfs mount --config it must exit 2
# with one line matching REGEX (FILE stands for the file's path) and mount nothing
mkdir -p "$WORK/em"
init_store "$WORK/es"
conf_error() {
    local name="$1" re="$2" f="$WORK/err.$1.conf" rc
    printf '%b' "$3" > "$f"
    re="${re//FILE/$(q "$f")}"
    E2E_MOUNTS+=("$WORK/em")
    timeout 30 "$REPLFS" mount "$WORK/es" "$WORK/em" --config "$f" > "$WORK/ce.out" 2> "$WORK/ce.err" < /dev/null
    rc=$?
    if [ $rc -eq 2 ] && [ "$(wc -l < "$WORK/ce.err")" -eq 1 ] && grep -qE "$re" "$WORK/ce.err"; then
        pass "$name: exit 2: $(cat "$WORK/ce.err")"
    else
        fail "$name: expected exit 2 and one line matching /$re/, got exit $rc: $(head -c 300 "$WORK/ce.err")"
    fi
    if e2e_is_mounted "$WORK/em"; then
        fail "$name: the mount went ahead"
        unmount "$WORK/em" "$WORK/es"
    fi
}
q() { printf '%s' "$1" | sed 's/[][\.*^$(){}?+|/]/\\&/g'; }   # regex-quote
conf_error unknown_key "^replfs: $(q FILE):3: unknown key 'foo' in \[mount\]\$" '[mount]\n# comment\nfoo = 1\n'
conf_error other_section_key "^replfs: $(q FILE):2: unknown key 'sync' in \[mount\]\$" '[mount]\nsync = 1\n'
# (line 3 is the header, line 4 its first key: either names the place)
conf_error unknown_section "^replfs: $(q FILE):[34]: unknown section \[foo\]\$" '[journal]\nsegment_mb = 8\n[foo]\nx = 1\n'
conf_error empty_unknown_section "^replfs: $(q FILE):[0-9]+: unknown section \[foo\]\$" '[journal]\nsegment_mb = 8\n[foo]\n'
conf_error syntax "^replfs: $(q FILE):2: syntax error\$" '[mount]\nthis line has no equals sign\n'
conf_error repeated "^replfs: $(q FILE):4: .*segment_mb" '[journal]\nsegment_mb = 8\ncheckpoint_s = 5\nsegment_mb = 9\n'
conf_error sync_timeout_exact "^replfs: $(q FILE):2: bad value for sync_timeout: 'abc' \(milliseconds, 1-3600000\)\$" \
    '[replication]\nsync_timeout = abc\n'
while read -r sec key val; do
    conf_error "bad_${key}_${val//[^a-z0-9]/_}" "^replfs: $(q FILE):2: bad value for $key: '$(q "$val")'" "[$sec]\n$key = $val\n"
done <<'EOF'
mount foreground maybe
mount debug 2
mount read_only yesno
mount attr_timeout abc
mount attr_timeout -1
mount entry_timeout 1x
journal segment_mb 0
journal segment_mb 4097
journal segment_mb abc
journal checkpoint_mb 0
journal checkpoint_s 0
journal checkpoint_s 1000000
journal keep_journal perhaps
journal replay fast
replication listen nonsense
replication advertise ftp://x
replication slave_of localhost:7070
replication sync 65
replication sync many
replication sync_timeout 0
replication sync_timeout 3600001
replication strict sometimes
replication retain_mb 0
log level loud
EOF
# a missing --config file
timeout 30 "$REPLFS" mount "$WORK/es" "$WORK/em" --config "$WORK/no-such.conf" > /dev/null 2> "$WORK/ce.err" < /dev/null
rc=$?
check_eq "$rc:$(cat "$WORK/ce.err")" "2:replfs: cannot read $WORK/no-such.conf: No such file or directory" \
    "a missing --config file: exit 2 and the one-line error"
# bad values on the command line: the same checks, without file and line
for o in sync_timeout=abc segment_mb=0 log_level=loud strict=maybe; do
    timeout 30 "$REPLFS" mount "$WORK/es" "$WORK/em" -o "$o" > /dev/null 2> "$WORK/ce.err" < /dev/null
    rc=$?
    if [ $rc -eq 2 ] && [ "$(wc -l < "$WORK/ce.err")" -eq 1 ] && grep -q "^replfs: .*bad value for ${o%%=*}: '${o#*=}'" "$WORK/ce.err"; then
        pass "-o $o: exit 2: $(cat "$WORK/ce.err")"
    else
        fail "-o $o: expected exit 2 and 'bad value for ${o%%=*}', got exit $rc: $(head -c 300 "$WORK/ce.err")"
    fi
done
e2e_is_mounted "$WORK/em" && fail "a refused mount left $WORK/em mounted"
e2e_finish
