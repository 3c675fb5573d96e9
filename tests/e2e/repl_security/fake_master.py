#!/usr/bin/env python3
"""A fake replfs master that holds the cluster key and speaks the protocol itself
(replicator/master.c's side of HELLO -> WELCOME, FETCH -> BATCH, ACK -> ACKED), to
feed a real slave hand-made records (security tests).

    fake_master.py PORT KEYFILE LOG SCENARIO [--victim FILE] [--victim-dir DIR] [--forge]

SCENARIO is "paths" or "symlink" (steps below). Each step is one BATCH of records,
correctly checksummed per fs/record.c unless the step says otherwise, numbered from
the slave's FETCH position. After a step is served the master waits (answering
FETCHes with empty batches) until the step is decided, and logs one line:
    outcome STEP applied     the slave acknowledged its records (durable)
    outcome STEP refused     the slave said HELLO again (it dropped the batch and
                             restarts from what it applied) -- "applied=N" follows
    outcome STEP undecided   neither within 8 s
then serves the next step. When all are done it logs "done".
--forge: every answer is sealed with a random key, not the cluster's (a forged
master that copies session and counter from the request's cleartext header).
Prints "listening" on stdout once it accepts connections.
"""
import http.server
import json
import os
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import replwire as w  # noqa: E402

args = sys.argv[1:]
PORT, KEY, LOG, SCEN = int(args[0]), w.load_key(args[1]), args[2], args[3]
VICTIM = args[args.index("--victim") + 1] if "--victim" in args else "/nonexistent-victim"
VDIR = args[args.index("--victim-dir") + 1] if "--victim-dir" in args else "/nonexistent-dir"
FORGE = "--forge" in args
SEAL_KEY = w.randbytes(32) if FORGE else KEY
NODE = w.randbytes(16)
T0 = time.time_ns()


def R(op, path, **kw):
    return dict(op=op, path=path, **kw)


# (label, expected outcome, [records]); "badsalt" records are checksummed with a wrong salt
SCENARIOS = {
    "paths": [
        ("base", "applied", [R("mkdir", "a", mode=0o755), R("create", "ok1"),
                             R("write", "ok1", data=b"hello\n")]),
        ("dotdot", "refused", [R("create", "../escaped")]),
        ("absolute", "refused", [R("create", "/etc/replfs-pwned")]),
        ("inner-dotdot", "refused", [R("create", "a/../../b")]),
        ("mkdir-dotdot", "refused", [R("mkdir", "../escaped_dir", mode=0o755)]),
        ("rename-out", "refused", [R("rename", "ok1", path2="../renamed")]),
        ("link-out", "refused", [R("link", "ok1", path2="/etc/replfs-linked")]),
        ("write-out", "refused", [R("write", "../../escaped_w", data=b"x")]),
        ("bad-checksum", "refused", [R("create", "badsum", badsalt=True)]),
        ("mixed", "refused", [R("create", "mixed_first"), R("create", "../escaped_mixed")]),
        ("after", "applied", [R("create", "after"), R("write", "after", data=b"still here\n")]),
    ],
    "symlink": [
        ("base", "applied", [R("create", "ok1"), R("write", "ok1", data=b"hello\n")]),
        ("symlink-etc", "applied", [R("symlink", "link", path2="/etc")]),
        ("create-through-link", "any", [R("create", "link/pwned")]),
        ("mkdir-through-link", "any", [R("mkdir", "link/pwned_dir", mode=0o755)]),
        ("rename-into-link", "any", [R("rename", "ok1", path2="link/moved")]),
        ("link-into-link", "any", [R("link", "ok1", path2="link/hard")]),
        ("symlink-victim", "applied", [R("symlink", "vlink", path2=VICTIM)]),
        ("write-victim", "any", [R("write", "vlink", data=b"PWNED")]),
        ("truncate-victim", "any", [R("truncate", "vlink", off=0)]),
        ("chmod-victim", "any", [R("chmod", "vlink", mode=0o777)]),
        ("chown-victim", "any", [R("chown", "vlink", uid=12345, gid=12345)]),
        ("utimens-victim", "any", [R("utimens", "vlink", atime=(1000000, 0),
                                     mtime=(1000000, 0))]),
        ("setxattr-victim", "any", [R("setxattr", "vlink", name="user.pwned", data=b"1")]),
        ("symlink-vdir", "applied", [R("symlink", "dlink", path2=VDIR)]),
        ("create-in-vdir", "any", [R("create", "dlink/pwned")]),
        ("unlink-in-vdir", "any", [R("unlink", "dlink/keep")]),
        ("rename-from-vdir", "any", [R("rename", "dlink/keep", path2="stolen")]),
        ("after", "applied", [R("create", "after"), R("write", "after", data=b"still here\n")]),
    ],
}
STEPS = SCENARIOS[SCEN]
TOTAL = sum(len(s[2]) for s in STEPS)

lock = threading.Lock()
st = {"step": 0, "served_at": None, "served_n": 0, "served_mono": 0.0, "sessions": set(),
      "done_logged": False}


def log(msg):
    with open(LOG, "a") as f:
        f.write("%.3f %s\n" % (time.time(), msg))


def decide(outcome):
    label = STEPS[st["step"]][0]
    log("outcome %s %s" % (label, outcome))
    st["step"] += 1
    st["served_at"] = None
    if st["step"] >= len(STEPS) and not st["done_logged"]:
        st["done_logged"] = True
        log("done")


def build_batch(frm, epoch):
    label, _, recs = STEPS[st["step"]]
    salt = int.from_bytes(w.randbytes(8), "little")
    out = b""
    for i, r in enumerate(recs):
        kw = {k: v for k, v in r.items() if k not in ("op", "path", "badsalt")}
        s = salt ^ 0x5A5A if r.get("badsalt") else salt
        out += w.record(s, r["op"], frm + i, epoch, r["path"],
                        time_ns=T0 + (frm + i) * 1000, **kw)
    st["served_at"], st["served_n"], st["served_mono"] = frm, len(recs), time.monotonic()
    log("served %s at LSN %d (%d records)" % (label, frm, len(recs)))
    return w.batch_head(frm + TOTAL, epoch, frm, salt, len(recs), 0, time.time_ns()) + out


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        pass

    def answer(self, status, body, ctype="application/octet-stream"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def reply(self, req, mtype, plain):
        env = w.seal(SEAL_KEY, mtype, NODE, req["epoch"], req["session"], req["counter"], plain)
        self.answer(200, env)

    def do_GET(self):
        self.answer(404, b"not found\n", "text/plain")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        if FORGE:
            h = w.header(body)
            if not h:
                return self.answer(403, b"refused\n", "text/plain")
            log("forged answer to %s" % w.TYPE_NAMES.get(h["type"], h["type"]))
            mt = {w.HELLO: w.WELCOME, w.FETCH: w.BATCH, w.ACK: w.ACKED}.get(h["type"], w.ERROR)
            plain = (json.dumps({"session": "00" * 16, "lsn": 1, "first_lsn": 1,
                                 "epoch": h["epoch"]}).encode() if mt == w.WELCOME else b"{}")
            return self.reply(h, mt, plain)
        o = w.open_env(KEY, body)
        if o is None:
            log("refused a request not sealed with the cluster key")
            return self.answer(403, b"refused: not sealed with this cluster's key\n", "text/plain")
        h, plain = o
        msg = json.loads(plain.decode() or "{}")
        t = h["type"]
        with lock:
            if t == w.HELLO:
                sid = w.randbytes(16)
                st["sessions"].add(sid)
                log("hello epoch=%d applied=%s durable=%s" % (h["epoch"], msg.get("applied"),
                                                              msg.get("durable")))
                if st["served_at"] is not None:
                    decide("refused applied=%s" % msg.get("applied"))
                return self.reply(h, w.WELCOME, json.dumps({
                    "session": sid.hex(), "lsn": TOTAL, "first_lsn": 1,
                    "epoch": h["epoch"]}).encode())
            if h["session"] not in st["sessions"]:
                return self.reply(h, w.ERROR, json.dumps({"error": "session",
                                                          "message": "say hello"}).encode())
            acked = msg.get("acked", 0) or 0
            if st["served_at"] is not None and acked >= st["served_at"] + st["served_n"] - 1:
                decide("applied acked=%d" % acked)
            if t == w.ACK:
                return self.reply(h, w.ACKED, b"{}")
            if t != w.FETCH:
                return self.reply(h, w.ERROR, json.dumps({"error": "bad_request",
                                                          "message": "unexpected"}).encode())
            frm = msg.get("from", 0)
            if (st["served_at"] is not None and
                    time.monotonic() - st["served_mono"] > 8):
                decide("undecided")
            if st["served_at"] is None and st["step"] < len(STEPS):
                batch = build_batch(frm, h["epoch"])
                return self.reply(h, w.BATCH, batch)
        # nothing to send now: a short long-poll, then an empty batch
        time.sleep(min(0.2, (msg.get("wait_ms", 0) or 0) / 1000.0))
        self.reply(h, w.BATCH, w.batch_head(frm - 1, h["epoch"], frm, 0, 0, 0, time.time_ns()))


class S(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


srv = S(("127.0.0.1", PORT), H)
log("fake master (%s%s) on port %d, %d steps" % (SCEN, ", forged seal" if FORGE else "", PORT,
                                                 len(STEPS)))
print("listening", flush=True)
srv.serve_forever()
