#!/usr/bin/env python3
"""Helpers over the proxy's captures (security tests).

  wirecheck.py reencode KEYFILE DIR   every captured BATCH with records: decrypt it,
                                      re-encode each record with replwire.record() and
                                      the batch's salt, compare byte for byte (proves the
                                      fake master's encoder is fs/record.c's format)
  wirecheck.py pick DIR TYPE          seq of the last completed exchange whose request
                                      was TYPE (HELLO/FETCH/ACK) and got HTTP 200
  wirecheck.py tamper IN OUT          IN with its header's counter raised by 1000 (the
                                      header is authenticated: must be refused)
  wirecheck.py show KEYFILE FILE      type, session, counter and plaintext of an envelope
"""
import json
import os
import struct
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import replwire as w  # noqa: E402


def reencode(keyfile, d):
    key = w.load_key(keyfile)
    nb = nr = 0
    for line in open(os.path.join(d, "index")):
        e = json.loads(line)
        if e["resp_type"] != "BATCH" or e["replayed"]:
            continue
        env = open(os.path.join(d, "%05d.resp" % e["seq"]), "rb").read()
        o = w.open_env(key, env)
        if o is None:
            print("seq %d: BATCH does not open with the cluster key" % e["seq"])
            return 1
        plain = o[1]
        h = w.parse_batch_head(plain)
        pos = w.BATCH_HEAD
        for i in range(h["nrec"]):
            f, total = w.parse_record(plain, pos)
            orig = plain[pos:pos + total]
            again = w.record(h["salt"], f["op"], f["lsn"], f["epoch"], f["path"], f["path2"],
                             f["name"], f["data"], f["time_ns"], f["mode"], f["uid"], f["gid"],
                             f["arg"], f["rdev"], f["off"], f["length"], f["atime"], f["mtime"],
                             f["flags"])
            if again != orig:
                print("seq %d record %d (lsn %d, op %d, %r): re-encoded bytes differ" %
                      (e["seq"], i, f["lsn"], f["op"], f["path"]))
                return 1
            pos += total
            nr += 1
        if h["nrec"]:
            nb += 1
        if pos != len(plain):
            print("seq %d: %d bytes after the last record" % (e["seq"], len(plain) - pos))
            return 1
    print("%d batches, %d records re-encoded byte-identical (checksums included)" % (nb, nr))
    return 0 if nr else 1


def pick(d, t):
    seq = None
    for line in open(os.path.join(d, "index")):
        e = json.loads(line)
        if e["req_type"] == t and e["status"] == 200 and not e["replayed"]:
            seq = e["seq"]
    if seq is None:
        return 1
    print("%05d" % seq)
    return 0


def tamper(i, o):
    b = bytearray(open(i, "rb").read())
    c = struct.unpack_from("<Q", b, 48)[0]
    struct.pack_into("<Q", b, 48, c + 1000)
    open(o, "wb").write(bytes(b))
    return 0


def show(keyfile, f):
    o = w.open_env(w.load_key(keyfile), open(f, "rb").read())
    if o is None:
        print("not sealed with this key")
        return 1
    h, p = o
    if h["type"] == w.BATCH:
        p = json.dumps(w.parse_batch_head(p)).encode()
    print("%s session=%s counter=%d %s" % (w.TYPE_NAMES.get(h["type"], h["type"]),
                                           h["session"].hex()[:8], h["counter"],
                                           p[:200].decode("utf-8", "replace")))
    return 0


cmd = sys.argv[1]
sys.exit({"reencode": lambda: reencode(sys.argv[2], sys.argv[3]),
          "pick": lambda: pick(sys.argv[2], sys.argv[3]),
          "tamper": lambda: tamper(sys.argv[2], sys.argv[3]),
          "show": lambda: show(sys.argv[2], sys.argv[3])}[cmd]())
