#!/usr/bin/env python3
"""Many processes writing at once on one mount, each keeping its own log of what it did,
then a check of the tree against those logs (python3 stdlib only).

  concurrency.py run DIR LOGDIR [--procs 16] [--ops 120] [--seed S]
      Forks PROCS processes on DIR (a directory on the master's mount); process i takes
      role ROLES[i % len(ROLES)]:
        region   shared.bin: process r owns bytes [r*REGION, (r+1)*REGION) and pwrites
                 random chunks (random sizes and offsets) inside it; its log is its region
        overlap  overlap.bin: all overlap processes pwrite whole 16 KiB blocks of the SAME
                 128 KiB range, each block "proc p seq n" throughout; the log lists, per
                 block, the last write of this process
        append   append.log, O_APPEND: whole records "A<p>:<seq>:<len>:<filler>\\n"
        own      own<p>.bin: pwrite/ftruncate at random; the log is the final content
        dir      dir/: create p<p>_<n>.tmp, write, rename to p<p>_<k> (often over an own
                 existing name), unlink some; plus mkdir/rmdir of dir/sub<p>; the log is
                 name -> content of the process' own names
      Each process writes LOGDIR/p<i>.json when done. Exit 1 if any process failed.

  concurrency.py check DIR LOGDIR
      Checks DIR against the logs: every region equals its owner's model; every
      overlap block is the LAST write of one of the overlap processes to that block;
      append.log is a sequence of whole records whose per-process sequence numbers are
      0..n-1 in order, with nothing else; every own file equals its model; dir/ holds
      exactly the names the dir processes say, with their contents. Prints "checked ...";
      exit 1 with the first differences otherwise.
"""
import argparse
import hashlib
import json
import os
import random
import sys

ROLES = ["region", "overlap", "append", "own", "dir", "region", "append", "own",
         "dir", "overlap", "region", "append", "own", "dir", "region", "append"]
REGION = 256 * 1024
BLOCK = 16 * 1024
OVERLAP_BLOCKS = 8


def block_data(p, n):
    head = b"proc %03d seq %06d|" % (p, n)
    return (head * (BLOCK // len(head) + 1))[:BLOCK]


def filler(p, n, size):
    h = hashlib.sha256(b"%d/%d" % (p, n)).hexdigest().encode()
    return (h * (size // len(h) + 1))[:size]


def role_region(d, p, rnd, ops, idx):
    r = idx                       # the r-th region process owns region r
    model = bytearray(REGION)
    fd = os.open(os.path.join(d, "shared.bin"), os.O_WRONLY | os.O_CREAT, 0o644)
    for n in range(ops):
        size = rnd.choice((1, 100, 4096, 5000, 16384, 65536))
        off = rnd.randrange(0, REGION - size + 1)
        data = filler(p, n, size)
        os.pwrite(fd, data, r * REGION + off)
        model[off:off + size] = data
    os.close(fd)
    return {"role": "region", "index": r, "sha256": hashlib.sha256(model).hexdigest()}


def role_overlap(d, p, rnd, ops, idx):
    last = {}
    fd = os.open(os.path.join(d, "overlap.bin"), os.O_WRONLY | os.O_CREAT, 0o644)
    for n in range(ops):
        b = rnd.randrange(OVERLAP_BLOCKS)
        os.pwrite(fd, block_data(p, n), b * BLOCK)
        last[b] = n
    os.close(fd)
    return {"role": "overlap", "last": {str(k): v for k, v in last.items()}}


def role_append(d, p, rnd, ops, idx):
    fd = os.open(os.path.join(d, "append.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for n in range(ops):
        size = rnd.choice((10, 100, 1000, 3000))
        rec = b"A%d:%d:%d:" % (p, n, size) + filler(p, n, size) + b"\n"
        if os.write(fd, rec) != len(rec):
            raise OSError("short O_APPEND write")
    os.close(fd)
    return {"role": "append", "records": ops}


def role_own(d, p, rnd, ops, idx):
    model = bytearray()
    path = os.path.join(d, "own%d.bin" % p)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    for n in range(ops):
        if rnd.random() < 0.15:
            size = rnd.randrange(0, 300000)
            os.ftruncate(fd, size)
            model = model[:size] + bytearray(max(0, size - len(model)))
        else:
            size = rnd.choice((1, 512, 4096, 20000, 65536))
            off = rnd.randrange(0, 300000)
            data = filler(p, n, size)
            os.pwrite(fd, data, off)
            if off > len(model):
                model += bytearray(off - len(model))
            model[off:off + size] = data
    os.close(fd)
    return {"role": "own", "path": "own%d.bin" % p, "sha256": hashlib.sha256(model).hexdigest(),
            "size": len(model)}


def role_dir(d, p, rnd, ops, idx):
    dd = os.path.join(d, "dir")
    os.makedirs(dd, exist_ok=True)
    names = {}
    for n in range(ops):
        r = rnd.random()
        if r < 0.55 or not names:
            tmp = os.path.join(dd, "p%d_%d.tmp" % (p, n))
            data = filler(p, n, rnd.choice((0, 10, 5000)))
            with open(tmp, "wb") as f:
                f.write(data)
            k = rnd.randrange(12)            # often over an existing name of ours
            os.rename(tmp, os.path.join(dd, "p%d_%d" % (p, k)))
            names["p%d_%d" % (p, k)] = data
        elif r < 0.75:
            k = rnd.choice(sorted(names))
            os.unlink(os.path.join(dd, k))
            del names[k]
        elif r < 0.85:
            a, b = rnd.choice(sorted(names)), "p%d_%d" % (p, rnd.randrange(12))
            os.rename(os.path.join(dd, a), os.path.join(dd, b))
            names[b] = names.pop(a)
        else:
            sub = os.path.join(dd, "sub%d" % p)
            if os.path.isdir(sub):
                os.rmdir(sub)
            else:
                os.mkdir(sub)
    return {"role": "dir", "names": {k: hashlib.sha256(v).hexdigest() for k, v in names.items()},
            "sub": os.path.isdir(os.path.join(dd, "sub%d" % p))}


def cmd_run(a):
    os.makedirs(a.logdir, exist_ok=True)
    kids = {}
    counts = {}
    for p in range(a.procs):
        role = ROLES[p % len(ROLES)]
        idx = counts.get(role, 0)
        counts[role] = idx + 1
        pid = os.fork()
        if pid == 0:
            rc = 1
            try:
                rnd = random.Random("%s/%d" % (a.seed, p))
                out = globals()["role_" + role](a.dir, p, rnd, a.ops, idx)
                out["proc"] = p
                with open(os.path.join(a.logdir, "p%d.json" % p), "w") as f:
                    json.dump(out, f)
                rc = 0
            except BaseException as e:
                print("FAIL: process %d (%s): %r" % (p, role, e), flush=True)
            finally:
                os._exit(rc)
        kids[pid] = p
    rc = 0
    for pid in kids:
        _, st = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(st) != 0:
            rc = 1
    print("run: %d processes, %d ops each, roles %s" % (a.procs, a.ops,
          " ".join("%s=%d" % kv for kv in sorted(counts.items()))))
    return rc


def cmd_check(a):
    logs = []
    for n in sorted(os.listdir(a.logdir)):
        if n.endswith(".json"):
            with open(os.path.join(a.logdir, n)) as f:
                logs.append(json.load(f))
    bad = []
    checked = 0

    def read(rel):
        with open(os.path.join(a.dir, rel), "rb") as f:
            return f.read()
    by_role = {}
    for lg in logs:
        by_role.setdefault(lg["role"], []).append(lg)
    if by_role.get("region"):
        data = read("shared.bin")
        for lg in by_role["region"]:
            r = lg["index"]
            got = hashlib.sha256(data[r * REGION:(r + 1) * REGION].ljust(REGION, b"\0")).hexdigest()
            checked += 1
            if got != lg["sha256"]:
                bad.append("shared.bin region %d (process %d) differs from its log" % (r, lg["proc"]))
    if by_role.get("overlap"):
        data = read("overlap.bin")
        for b in range(OVERLAP_BLOCKS):
            want = [block_data(lg["proc"], lg["last"][str(b)]) for lg in by_role["overlap"]
                    if str(b) in lg["last"]]
            got = data[b * BLOCK:(b + 1) * BLOCK]
            checked += 1
            if want and got not in want:
                bad.append("overlap.bin block %d is not the last write of any process: starts %r"
                           % (b, got[:40]))
    if by_role.get("append"):
        data = read("append.log")
        seqs = {}
        pos = 0
        while pos < len(data):
            end = data.find(b"\n", pos)
            line = data[pos:end if end >= 0 else len(data)]
            f = line.split(b":", 3)
            try:
                p, n, size = int(f[0][1:]), int(f[1]), int(f[2])
                ok = f[0][:1] == b"A" and f[3] == filler(p, n, size)
            except (IndexError, ValueError):
                ok = False
            if not ok or end < 0:
                bad.append("append.log: broken record at offset %d: %r" % (pos, line[:60]))
                break
            if seqs.get(p, -1) + 1 != n:
                bad.append("append.log: process %d record %d after %d (offset %d)" % (p, n, seqs.get(p, -1), pos))
            seqs[p] = n
            pos = end + 1
        for lg in by_role["append"]:
            checked += 1
            if seqs.get(lg["proc"], -1) + 1 != lg["records"]:
                bad.append("append.log: process %d wrote %d records, file holds %d"
                           % (lg["proc"], lg["records"], seqs.get(lg["proc"], -1) + 1))
        if set(seqs) - {lg["proc"] for lg in by_role["append"]}:
            bad.append("append.log: records of unknown processes %s" % sorted(set(seqs) - {lg["proc"] for lg in by_role["append"]}))
    for lg in by_role.get("own", []):
        data = read(lg["path"])
        checked += 1
        if len(data) != lg["size"] or hashlib.sha256(data).hexdigest() != lg["sha256"]:
            bad.append("%s: %d bytes, differs from its log (%d bytes)" % (lg["path"], len(data), lg["size"]))
    if by_role.get("dir"):
        have = set(os.listdir(os.path.join(a.dir, "dir")))
        want = set()
        for lg in by_role["dir"]:
            p = lg["proc"]
            want |= set(lg["names"])
            if lg["sub"]:
                want.add("sub%d" % p)
            for k, h in lg["names"].items():
                checked += 1
                try:
                    if hashlib.sha256(read(os.path.join("dir", k))).hexdigest() != h:
                        bad.append("dir/%s: content differs from process %d's log" % (k, p))
                except FileNotFoundError:
                    bad.append("dir/%s: missing (process %d renamed it there last)" % (k, p))
        if have != want:
            bad.append("dir/: extra %s missing %s" % (sorted(have - want)[:6], sorted(want - have)[:6]))
    print("checked %d items from %d process logs, %d differences" % (checked, len(logs), len(bad)))
    for b in bad[:15]:
        print("FAIL: " + b)
    return 1 if bad or not logs else 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("run")
    s.add_argument("dir"); s.add_argument("logdir")
    s.add_argument("--procs", type=int, default=16)
    s.add_argument("--ops", type=int, default=120)
    s.add_argument("--seed", default="1")
    s = sub.add_parser("check")
    s.add_argument("dir"); s.add_argument("logdir")
    a = ap.parse_args()
    return cmd_run(a) if a.cmd == "run" else cmd_check(a)


if __name__ == "__main__":
    sys.exit(main())
