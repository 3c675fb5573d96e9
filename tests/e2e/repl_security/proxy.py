#!/usr/bin/env python3
"""A recording HTTP proxy between a replfs slave and its master (security tests).

    proxy.py LISTEN_PORT MASTER_PORT DIR

Forwards every request to 127.0.0.1:MASTER_PORT and saves, for exchange N,
DIR/N.req (request body) and DIR/N.resp (response body), and one JSON line in
DIR/index: seq, path, the request's and the response's envelope type and counter
(from the cleartext header; the proxy has no key), HTTP status, sizes, whether
the answer was a replay.

DIR/mode is read at every request:
    forward           (default) forward
    replay FETCH      answer the next FETCH, instead of forwarding it, with the
                      earliest captured BATCH that carries records; then forward
    replay HELLO      same for the next HELLO, with the earliest captured WELCOME
    replay ACK        same for the next ACK, with the earliest captured ACKED
    replay FETCH HELLO ACK   each of these once, whichever comes first
Each type is replayed once, then dropped from the list ("forward" when empty).
Prints "listening" on stdout once it accepts connections.
"""
import http.client
import http.server
import json
import os
import sys
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import replwire as w  # noqa: E402

LISTEN, MASTER, DIR = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
LOCK = threading.Lock()
SEQ = [0]
EMPTY_BATCH = w.ENV_HEAD + w.BATCH_HEAD + w.ENV_TAG
ANSWERS = {w.FETCH: w.BATCH, w.HELLO: w.WELCOME, w.ACK: w.ACKED}


def hinfo(body):
    h = w.header(body)
    return (w.TYPE_NAMES.get(h["type"], str(h["type"])), h["counter"]) if h else (None, None)


def earliest_answer(req_type):
    """The earliest captured response to a request of req_type (BATCH: with records)."""
    want = ANSWERS[req_type]
    try:
        lines = open(os.path.join(DIR, "index")).read().splitlines()
    except FileNotFoundError:
        return None, None
    for line in lines:
        e = json.loads(line)
        if e["replayed"] or e["status"] != 200 or e["resp_type"] != w.TYPE_NAMES[want]:
            continue
        if want == w.BATCH and e["resp_len"] <= EMPTY_BATCH:
            continue
        with open(os.path.join(DIR, "%05d.resp" % e["seq"]), "rb") as f:
            return e["seq"], f.read()
    return None, None


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _answer(self, status, ctype, body):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self, method, body):
        c = http.client.HTTPConnection("127.0.0.1", MASTER, timeout=60)
        try:
            hdrs = {"Content-Type": self.headers.get("Content-Type", "application/octet-stream")}
            c.request(method, self.path, body=body, headers=hdrs)
            r = c.getresponse()
            return r.status, r.getheader("Content-Type", "application/octet-stream"), r.read()
        finally:
            c.close()

    def do_GET(self):
        try:
            st, ct, rb = self._forward("GET", None)
        except Exception as e:
            st, ct, rb = 502, "text/plain", str(e).encode()
        self._answer(st, ct, rb)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n) if n else b""
        rh = w.header(body)
        replayed_from = None
        with LOCK:
            try:
                mode = open(os.path.join(DIR, "mode")).read().split()
            except FileNotFoundError:
                mode = ["forward"]
            tname = w.TYPE_NAMES.get(rh["type"]) if rh else None
            if len(mode) >= 2 and mode[0] == "replay" and tname in mode[1:]:
                replayed_from, old = earliest_answer(rh["type"])
                if replayed_from is not None:
                    rest = [m for m in mode[1:] if m != tname]
                    with open(os.path.join(DIR, "mode"), "w") as f:
                        f.write(("replay " + " ".join(rest) if rest else "forward") + "\n")
        if replayed_from is not None:
            st, ct, rb = 200, "application/octet-stream", old
        else:
            try:
                st, ct, rb = self._forward("POST", body)
            except Exception as e:
                st, ct, rb = 502, "text/plain", str(e).encode()
        with LOCK:
            SEQ[0] += 1
            seq = SEQ[0]
            with open(os.path.join(DIR, "%05d.req" % seq), "wb") as f:
                f.write(body)
            with open(os.path.join(DIR, "%05d.resp" % seq), "wb") as f:
                f.write(rb)
            qt, qc = hinfo(body)
            at, ac = hinfo(rb) if st == 200 else (None, None)
            with open(os.path.join(DIR, "index"), "a") as f:
                f.write(json.dumps({"seq": seq, "path": self.path, "req_type": qt,
                                    "req_counter": qc, "status": st, "resp_type": at,
                                    "resp_counter": ac, "req_len": len(body),
                                    "resp_len": len(rb), "replayed": replayed_from is not None,
                                    "replayed_from": replayed_from}) + "\n")
        self._answer(st, ct, rb)


class S(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


srv = S(("127.0.0.1", LISTEN), H)
print("listening", flush=True)
srv.serve_forever()
