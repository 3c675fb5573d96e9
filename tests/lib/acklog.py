#!/usr/bin/env python3
"""Writers that log what the filesystem acknowledged, and the checkers that compare a
(failed-over) tree with those logs -- for the failover end-to-end tests (python3 stdlib).
Every log lives OUTSIDE the mounts (one JSON object per line, flushed after each line).

  acklog.py sync-writer MNT SUB --log LOG [--seed S] [--stop FILE] [--max-seconds T]
      Single-threaded mixed load under MNT/SUB (create, overwrite, append, pwrite,
      truncate, rename, unlink, mkdir); every operation is followed by fsync() of the file
      (fsync of the directory for rename/unlink/mkdir). Before an operation it logs an
      intent {"t":"I","seq":N,"op":..,"eff":{relpath: sha256|null}} (the state it leaves
      behind), after fsync returned an ack {"t":"A","seq":N}. Stops at the first error
      (logged as {"t":"E",...}; expected when the master dies), at FILE or after T s.
      Prints "acked N last_errno E".

  acklog.py check MNT --log LOG [--sub SUB]
      Every acknowledged operation must be visible on MNT: each path has the content
      (sha256) of its last acknowledged state, or the state of a not-yet-acknowledged
      intent (at most one: the one in flight when the master died; a create or an
      overwrite cut between its open and its write leaves the file empty); no other files exist
      under MNT/SUB. Prints "acked N paths P pending K"; exit 1 listing mismatches.

  acklog.py creator MNT SUB --log LOG [--interval S] [--stop FILE] [--max-seconds T]
      Creates MNT/SUB/wNNNNN files (one write of unique content each), logging
      {"t":"ok","path":rel,"sha":..,"at":unixtime} per success; at the first error logs
      {"t":"err","errno":"EROFS",...,"at":..} and stops. Prints "created N first_error E at T".

  acklog.py lost NEWMNT --log LOG --files RECFILES [--report REPORT] [--out LIST]
      Files the creator made (log) on the old master: present on the new master (NEWMNT)
      with the logged content -> fine; absent, or present with other content (the create
      reached the new master, the write did not) -> changed after the fork: RECFILES/<path>
      must hold the logged content and REPORT (if given) must name the path. Prints
      "present N (changed after the fork C) lost L"; the absent paths go to LIST. Exit 1
      on any mismatch.

  acklog.py report REPORT --dump DUMP --fork N
      REPORT's "LSN <n> [epoch <e>] <op> <path>" lines must name exactly the records of DUMP (a
      `replfs journal dump` of the deposed store taken before the rejoin) with lsn > N,
      and those must be the contiguous suffix N+1..last; ops must match. Exit 1 otherwise.

  acklog.py fsync-one PATH --ready FILE --go FILE [--written FILE]
      Opens PATH (O_CREAT), creates READY, waits for GO, then write()s 4 KiB, creates
      WRITTEN, and fsync()s.
      Prints one JSON object {"write": "ok"|ERRNO, "fsync": "ok"|ERRNO|null, "sha": ...}.
"""
import argparse
import errno
import hashlib
import json
import os
import random
import re
import sys
import time


def sha(b):
    return hashlib.sha256(b).hexdigest()


def ename(e):
    return errno.errorcode.get(e.errno, str(e.errno))


class Log:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1)

    def put(self, **kw):
        self.f.write(json.dumps(kw, sort_keys=True) + "\n")
        self.f.flush()


# ----------------------------------------------------------------- sync-writer
def cmd_sync_writer(a):
    rnd = random.Random(a.seed)
    log = Log(a.log)
    root = a.mnt
    os.makedirs(os.path.join(root, a.sub), exist_ok=True)
    files = {}          # rel -> content
    dirs = [a.sub]
    seq = 0
    acked = 0
    t0 = time.monotonic()
    last = "none"

    def p(rel):
        return os.path.join(root, rel)

    def fsync_dir(rel):
        fd = os.open(p(rel), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    while True:
        if a.stop and os.path.exists(a.stop):
            break
        if a.max_seconds and time.monotonic() - t0 > a.max_seconds:
            break
        seq += 1
        r = rnd.random()
        names = sorted(files)
        try:
            if r < 0.35 or len(files) < 5:
                rel = os.path.join(rnd.choice(dirs), "f%06d" % seq)
                data = os.urandom(rnd.choice((0, 1, 100, 4096, 5000, 20000, 65536)))
                log.put(t="I", seq=seq, op="create", eff={rel: sha(data)})
                fd = os.open(p(rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                try:
                    if data:
                        os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                files[rel] = data
            elif r < 0.50:
                rel = rnd.choice(names)
                data = os.urandom(rnd.randrange(0, 30000))
                log.put(t="I", seq=seq, op="overwrite", eff={rel: sha(data)})
                fd = os.open(p(rel), os.O_WRONLY | os.O_TRUNC)
                try:
                    if data:
                        os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                files[rel] = data
            elif r < 0.65:
                rel = rnd.choice(names)
                if len(files[rel]) > 262144:
                    continue
                add = os.urandom(rnd.randrange(1, 9000))
                new = files[rel] + add
                log.put(t="I", seq=seq, op="append", eff={rel: sha(new)})
                fd = os.open(p(rel), os.O_WRONLY | os.O_APPEND)
                try:
                    os.write(fd, add)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                files[rel] = new
            elif r < 0.75:
                rel = rnd.choice(names)
                old = files[rel]
                off = rnd.randrange(0, len(old) + 1)
                chunk = os.urandom(rnd.randrange(1, 5000))
                new = old[:off] + chunk + old[off + len(chunk):]
                log.put(t="I", seq=seq, op="pwrite", eff={rel: sha(new)})
                fd = os.open(p(rel), os.O_WRONLY)
                try:
                    os.pwrite(fd, chunk, off)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                files[rel] = new
            elif r < 0.80:
                rel = rnd.choice(names)
                n = rnd.randrange(0, len(files[rel]) + 3000)
                new = files[rel][:n] + b"\0" * max(0, n - len(files[rel]))
                log.put(t="I", seq=seq, op="truncate", eff={rel: sha(new)})
                fd = os.open(p(rel), os.O_WRONLY)
                try:
                    os.ftruncate(fd, n)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                files[rel] = new
            elif r < 0.88:
                rel = rnd.choice(names)
                d = rnd.choice(dirs)
                to = os.path.join(d, "r%06d" % seq)
                log.put(t="I", seq=seq, op="rename", eff={rel: None, to: sha(files[rel])})
                os.rename(p(rel), p(to))
                fsync_dir(d)
                files[to] = files.pop(rel)
            elif r < 0.95 and len(files) > 10:
                rel = rnd.choice(names)
                log.put(t="I", seq=seq, op="unlink", eff={rel: None})
                os.unlink(p(rel))
                fsync_dir(os.path.dirname(rel))
                del files[rel]
            elif len(dirs) < 12:
                d = os.path.join(rnd.choice(dirs), "d%06d" % seq)
                log.put(t="I", seq=seq, op="mkdir", eff={}, dir=d)
                os.mkdir(p(d))
                fsync_dir(os.path.dirname(d))
                dirs.append(d)
            else:
                continue
        except OSError as e:
            last = ename(e)
            log.put(t="E", seq=seq, errno=last, msg=str(e), at=time.time())
            break
        log.put(t="A", seq=seq, at=time.time())
        acked += 1
    print("acked %d last_errno %s" % (acked, last))
    return 0


def load_log(path):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass     # a torn last line cannot happen (no kill of the writer), but be lenient
    return out


def file_sha(path):
    try:
        with open(path, "rb") as f:
            return sha(f.read())
    except FileNotFoundError:
        return None


def cmd_check(a):
    intents = {}
    acked_state = {}
    acked_n = 0
    acked_seqs = set()
    for o in load_log(a.log):
        if o["t"] == "I":
            intents[o["seq"]] = o
        elif o["t"] == "A":
            acked_n += 1
            acked_seqs.add(o["seq"])
            for k, v in intents[o["seq"]]["eff"].items():
                acked_state[k] = v
    pending = [intents[s] for s in sorted(intents) if s not in acked_seqs]
    bad = []
    if len(pending) > 1:
        bad.append("log has %d unacknowledged intents (single-threaded writer: at most 1)" % len(pending))
    allowed = {}
    for k, v in acked_state.items():
        allowed.setdefault(k, set()).add(v)
    for it in pending:
        for k, v in it["eff"].items():
            allowed.setdefault(k, set()).add(v)
            if k not in acked_state:
                allowed[k].add(None)
            # create and overwrite are two operations (open with O_CREAT or
            # O_TRUNC, then write): cut between them, the file is empty
            if it["op"] in ("create", "overwrite"):
                allowed[k].add(sha(b""))
    for k in sorted(allowed):
        got = file_sha(os.path.join(a.mnt, k))
        if got not in allowed[k]:
            want = acked_state.get(k, "(never acknowledged)")
            bad.append("%s: %s, acknowledged state %s%s" % (
                k, "absent" if got is None else "sha " + got[:16],
                "absent" if want is None else (want[:16] if want else want),
                " (or pending %s)" % [x[:16] if x else x for x in allowed[k]] if pending else ""))
    if a.sub:
        top = os.path.join(a.mnt, a.sub)
        for dp, dn, fn in os.walk(top):
            for n in fn:
                rel = os.path.relpath(os.path.join(dp, n), a.mnt)
                if rel not in allowed:
                    bad.append("%s: exists but no operation ever created it" % rel)
    print("acked %d paths %d pending %d" % (acked_n, len(allowed), len(pending)))
    for b in bad[:25]:
        print("FAIL: " + b)
    if bad:
        print("FAIL: %d acknowledged operations missing or wrong" % len(bad))
        return 1
    return 0


# --------------------------------------------------------------------- creator
def cmd_creator(a):
    log = Log(a.log)
    os.makedirs(os.path.join(a.mnt, a.sub), exist_ok=True)
    n = 0
    first = "none"
    at = 0.0
    t0 = time.monotonic()
    while True:
        if a.stop and os.path.exists(a.stop):
            break
        if a.max_seconds and time.monotonic() - t0 > a.max_seconds:
            break
        rel = os.path.join(a.sub, "w%06d" % n)
        data = ("%s written at %.6f\n" % (rel, time.time())).encode() + os.urandom(random.randrange(0, 3000))
        try:
            fd = os.open(os.path.join(a.mnt, rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                if os.write(fd, data) != len(data):
                    raise OSError(errno.EIO, "short write")
            finally:
                os.close(fd)
        except OSError as e:
            first = ename(e)
            at = time.time()
            log.put(t="err", path=rel, errno=first, msg=str(e), at=at)
            break
        log.put(t="ok", path=rel, sha=sha(data), at=time.time())
        n += 1
        if a.interval:
            time.sleep(a.interval)
    print("created %d first_error %s at %.6f" % (n, first, at))
    return 0


def cmd_lost(a):
    present = []
    lost = []
    changed = []
    bad = []
    report = None
    if a.report:
        with open(a.report, errors="replace") as f:
            report = f.read()
    for o in load_log(a.log):
        if o["t"] != "ok":
            continue
        rel = o["path"]
        got = file_sha(os.path.join(a.newmnt, rel))
        if got is not None:
            present.append(rel)
            if got == o["sha"]:
                continue
            # the new master has the file but not its last change(s): they came after the
            # fork (e.g. the create reached it, the write did not), so it must be saved too
            changed.append(rel)
        else:
            lost.append(rel)
        saved = file_sha(os.path.join(a.files, rel))
        if saved is None:
            bad.append("%s: written on the old master after the fork, not on the new master, and not saved in %s"
                       % (rel, a.files))
        elif saved != o["sha"]:
            bad.append("%s: saved in the recovery folder with other content (sha %s, written %s)"
                       % (rel, saved[:16], o["sha"][:16]))
        if report is not None and rel not in report:
            bad.append("%s: lost after the fork but not named in %s" % (rel, a.report))
    if a.out:
        with open(a.out, "w") as f:
            for rel in lost:
                f.write(rel + "\n")
    print("present %d (changed after the fork %d) lost %d" % (len(present), len(changed), len(lost)))
    for b in bad[:25]:
        print("FAIL: " + b)
    if bad:
        print("FAIL: %d problems" % len(bad))
        return 1
    return 0


# ---------------------------------------------------------------------- report
DUMP_RE = re.compile(r"\blsn=(\d+)\s+epoch=(\d+)\s+(\S+)\s*(.*)$")
REPORT_RE = re.compile(r"^\s*LSN\s+(\d+)\s+(?:epoch\s+\d+\s+)?(\S+)\s*(.*)$")


def cmd_report(a):
    dump = {}
    with open(a.dump, errors="replace") as f:
        for line in f:
            m = DUMP_RE.search(line)
            if m:
                dump[int(m.group(1))] = (m.group(3), m.group(4).strip())
    rep = {}
    dup = []
    with open(a.report, errors="replace") as f:
        for line in f:
            m = REPORT_RE.match(line)
            if m:
                n = int(m.group(1))
                if n in rep:
                    dup.append(n)
                rep[n] = (m.group(2), m.group(3).strip())
    want = sorted(n for n in dump if n > a.fork)
    got = sorted(rep)
    bad = []
    if not dump:
        bad.append("the journal dump %s has no records" % a.dump)
    if want and want != list(range(a.fork + 1, want[-1] + 1)):
        bad.append("the deposed journal's records after LSN %d are not contiguous: %s..." % (a.fork, want[:10]))
    if dup:
        bad.append("REPORT lists LSNs more than once: %s" % dup[:10])
    if got != want:
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        bad.append("REPORT's lost LSNs differ from the journal's LSNs > %d: missing %s%s, extra %s%s"
                   % (a.fork, missing[:10], "..." if len(missing) > 10 else "",
                      extra[:10], "..." if len(extra) > 10 else ""))
    for n in sorted(set(got) & set(want)):
        if rep[n][0].lower() != dump[n][0].lower():
            bad.append("LSN %d: REPORT says op %s, the journal has %s" % (n, rep[n][0], dump[n][0]))
            break
        # the record's first path argument must be named on the REPORT line
        p0 = dump[n][1].split()[0] if dump[n][1] else ""
        if p0 and p0 not in rep[n][1]:
            bad.append("LSN %d: REPORT names path %r, the journal's record is %s %s"
                       % (n, rep[n][1], dump[n][0], dump[n][1]))
            break
    print("journal records > %d: %d (%s..%s); REPORT lists %d" %
          (a.fork, len(want), want[0] if want else "-", want[-1] if want else "-", len(got)))
    for b in bad:
        print("FAIL: " + b)
    return 1 if bad else 0


# ------------------------------------------------------------------- fsync-one
def cmd_fsync_one(a):
    fd = os.open(a.path, os.O_WRONLY | os.O_CREAT, 0o644)
    open(a.ready, "w").close()
    t0 = time.monotonic()
    while not os.path.exists(a.go):
        if time.monotonic() - t0 > 120:
            print(json.dumps({"error": "no GO within 120 s"}))
            return 1
        time.sleep(0.01)
    data = b"unreplicated write %f\n" % time.time() + os.urandom(4000)
    out = {"write": None, "fsync": None, "sha": sha(data)}
    try:
        os.write(fd, data)
        out["write"] = "ok"
    except OSError as e:
        out["write"] = ename(e)
    if a.written:
        open(a.written, "w").close()
    if out["write"] == "ok":
        t1 = time.monotonic()
        try:
            os.fsync(fd)
            out["fsync"] = "ok"
        except OSError as e:
            out["fsync"] = ename(e)
        out["fsync_ms"] = round((time.monotonic() - t1) * 1000, 1)
    try:
        os.close(fd)
    except OSError as e:
        out["close"] = ename(e)
    out["at"] = time.time()
    print(json.dumps(out, sort_keys=True))
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sync-writer")
    s.add_argument("mnt"); s.add_argument("sub"); s.add_argument("--log", required=True)
    s.add_argument("--seed", type=int, default=1); s.add_argument("--stop")
    s.add_argument("--max-seconds", type=float, default=0)
    s = sub.add_parser("check")
    s.add_argument("mnt"); s.add_argument("--log", required=True); s.add_argument("--sub")
    s = sub.add_parser("creator")
    s.add_argument("mnt"); s.add_argument("sub"); s.add_argument("--log", required=True)
    s.add_argument("--interval", type=float, default=0.005); s.add_argument("--stop")
    s.add_argument("--max-seconds", type=float, default=0)
    s = sub.add_parser("lost")
    s.add_argument("newmnt"); s.add_argument("--log", required=True); s.add_argument("--files", required=True)
    s.add_argument("--report"); s.add_argument("--out")
    s = sub.add_parser("report")
    s.add_argument("report"); s.add_argument("--dump", required=True); s.add_argument("--fork", type=int, required=True)
    s = sub.add_parser("fsync-one")
    s.add_argument("path"); s.add_argument("--ready", required=True); s.add_argument("--go", required=True)
    s.add_argument("--written")
    a = p.parse_args()
    return {"sync-writer": cmd_sync_writer, "check": cmd_check, "creator": cmd_creator, "lost": cmd_lost,
            "report": cmd_report, "fsync-one": cmd_fsync_one}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
