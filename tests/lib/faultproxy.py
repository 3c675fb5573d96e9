#!/usr/bin/env python3
"""A fault-injecting HTTP/1.1 proxy for the network-fault tests (python3 stdlib only).

This machine (and CI) has no sch_netem, so network faults between real replfs daemons are
made here, in front of each node's --listen port: the node is started with
--advertise http://127.0.0.1:<proxy port>, the others reach it only through the proxy,
and what the proxy does to a request is what the network did to it.

  faultproxy.py serve --target HOST:PORT [--listen HOST:PORT] [--ready FILE] [--log FILE]
                      [--seed N] [--hold-ms MS]
      Listens (port 0 = any free one), forwards each connection to the target on its own
      upstream connection, one request at a time (HTTP/1.1 framing: Content-Length, chunked,
      or until close; keep-alive as the client asks). Once listening it writes
      "listen PORT ctl CPORT" to FILE: CPORT is a line-based control port on 127.0.0.1.
      SIGTERM/SIGINT: stop.

  faultproxy.py ctl CPORT COMMAND...
      Sends one control command, prints the answer (exit 1 if it is not "ok ..."):
        set RULE[; RULE...]   replace the rules (an empty set = pass); answers once the
                              rules are in force (a cut has closed the connections it cuts)
        stats                 one JSON line: rules, per-action counts, open connections
        log TEXT              writes TEXT into the log (the test marks its steps)

RULES. A rule is MODE [ARGS] [p=P] [from=HEXPREFIX] [type=MSG]. Every request that is
read in full is matched against the rules in order; a rule applies to a request with
probability P (default 1), only to requests whose sealed envelope (replicator/wire.c:
"RPL1", type byte, 16-byte sender id, all in clear in the additional data) names a
sender starting with HEXPREFIX and a message type MSG (HELLO FETCH ACK SNAPSHOT PROBE
ANNOUNCE VERIFY PROMOTE ... or a number). A connection remembers the sender of its first
sealed request, so a cut or blackhole "from=X" also hits X's answers and X's open
connections.
  pass                  forward (what happens when no rule applies)
  cut                   close the connection with a reset, request not forwarded; with p=1
                        also every open connection the rule matches, and new connections
                        are reset as soon as their first request is read (from=/type=
                        filters) or at once (no filter): the link is down
  blackhole             read the request, never forward nor answer it; keep reading (and
                        dropping) what the client sends until it gives up. With p=1,
                        answers in flight on matching connections vanish too. Connections
                        blackholed stay dead after a heal (as behind a stateful firewall
                        that lost its state): the client's own timeouts must notice
  delay MS [JITTER]     wait MS + uniform(0, JITTER) ms before forwarding the request
                        (connections are independent, so requests overtake each other)
  duplicate [first|second]   forward the request twice; the client gets the first answer
                        (the copy is replayed on a second upstream connection after the
                        answer) or the second (the copy goes first and its answer is
                        dropped) -- the server must refuse one of them as a replay
  reorder               hold the request until another request has been forwarded (any
                        connection), at most --hold-ms (default 400) ms; then forward it
  drop-response         forward the request, read the whole answer, drop it, reset the
                        client connection (the server did the work, the client never knows)
Delay combines with the others (it is applied first); of the rest the first rule that
hits decides.

The log (--log, default stderr) has one line per action other than pass, and the counts
are in `stats`: requests, pass, cut, cut_conn (open connections cut), refused (new
connections reset), blackhole, delay, duplicate, dup_refused (the server answered a copy
with 403), reorder, reorder_timeout, drop_response, upstream_error.
"""
import argparse
import json
import os
import random
import signal
import socket
import struct
import sys
import threading
import time

MSG_TYPES = {"HELLO": 1, "WELCOME": 2, "FETCH": 3, "BATCH": 4, "ACK": 5, "ACKED": 6,
             "SNAPSHOT": 7, "ANNOUNCE": 8, "PROBE": 9, "INFO": 10, "PROMOTE": 11,
             "VERIFY": 12, "MANIFEST": 13, "ERROR": 15}
MSG_NAMES = {v: k for k, v in MSG_TYPES.items()}
ACTIONS = ("pass", "cut", "blackhole", "delay", "duplicate", "reorder", "drop-response")
COUNT_NAMES = ("requests", "pass", "cut", "cut_conn", "refused", "blackhole", "delay",
               "duplicate", "dup_refused", "reorder", "reorder_timeout", "drop_response",
               "upstream_error")
MAX_HEAD = 64 * 1024


class Closed(Exception):
    """The peer closed, or the proxy closed this connection (cut)."""


class Reader:
    """Buffered reads from a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self):
        try:
            d = self.sock.recv(65536)
        except OSError:
            d = b""
        if not d:
            raise Closed()
        self.buf += d

    def line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                raise Closed()
            self.fill()
        i = self.buf.index(b"\r\n") + 2
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def head(self):
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                raise Closed()
            self.fill()
        i = self.buf.index(b"\r\n\r\n") + 4
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def exactly(self, n):
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def some(self, n):
        """Up to n bytes (at least one)."""
        if not self.buf:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    first = lines[0]
    hdrs = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    return first, hdrs


def read_request(rd):
    """One whole request: (bytes, method, path, headers), or None at a clean EOF."""
    try:
        head = rd.head()
    except Closed:
        return None
    first, hdrs = parse_head(head)
    parts = first.split(" ")
    method = parts[0] if parts else ""
    path = parts[1] if len(parts) > 1 else ""
    body = b""
    if "chunked" in hdrs.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            ln = rd.line()
            chunks.append(ln)
            n = int(ln.split(b";")[0].strip() or b"0", 16)
            if n == 0:
                while True:
                    t = rd.line()
                    chunks.append(t)
                    if t == b"\r\n":
                        break
                break
            chunks.append(rd.exactly(n + 2))
        body = b"".join(chunks)
    elif "content-length" in hdrs:
        body = rd.exactly(int(hdrs["content-length"]))
    return head + body, method, path, hdrs, body


def envelope_of(hdrs, body):
    """(sender hex, type number) of a sealed replication request, or (None, None)."""
    if "chunked" in hdrs.get("transfer-encoding", "").lower():
        return None, None
    if len(body) >= 24 and body[:4] == b"RPL1":
        return body[8:24].hex(), body[4]
    return None, None


class Rule:
    def __init__(self, text):
        words = text.split()
        if not words or words[0] not in ACTIONS:
            raise ValueError("unknown mode %r (one of %s)" % (text, ", ".join(ACTIONS)))
        self.mode = words[0]
        self.p = 1.0
        self.sender = None
        self.type = None
        self.args = []
        for w in words[1:]:
            if w.startswith("p="):
                self.p = float(w[2:])
                if not 0 <= self.p <= 1:
                    raise ValueError("p must be within [0, 1]")
            elif w.startswith("from="):
                self.sender = w[5:].lower()
            elif w.startswith("type="):
                t = w[5:].upper()
                self.type = MSG_TYPES[t] if t in MSG_TYPES else int(t)
            else:
                self.args.append(w)
        if self.mode == "delay":
            if not 1 <= len(self.args) <= 2:
                raise ValueError("delay MS [JITTER]")
            self.ms = float(self.args[0])
            self.jitter = float(self.args[1]) if len(self.args) > 1 else 0.0
        elif self.mode == "duplicate":
            self.which = self.args[0] if self.args else "first"
            if self.which not in ("first", "second") or len(self.args) > 1:
                raise ValueError("duplicate [first|second]")
        elif self.args:
            raise ValueError("%s takes no arguments" % self.mode)
        self.text = text.strip()

    def filtered(self):
        return self.sender is not None or self.type is not None

    def matches(self, sender, mtype):
        if self.sender is not None and (sender is None or not sender.startswith(self.sender)):
            return False
        if self.type is not None and mtype != self.type:
            return False
        return True

    def matches_conn(self, conn):
        """For connection-wide effects: the rule covers this connection's traffic."""
        if self.type is not None:
            return False
        if self.sender is None:
            return True
        return conn.sender is not None and conn.sender.startswith(self.sender)


class Conn:
    seq = 0

    def __init__(self, sock):
        Conn.seq += 1
        self.id = Conn.seq
        self.client = sock
        self.up = None
        self.sender = None
        self.dead = False      # cut by the proxy
        self.blackholed = False


class Proxy:
    def __init__(self, target, seed, hold_ms, logf):
        self.target = target
        self.rng = random.Random(seed)
        self.hold_ms = hold_ms
        self.logf = logf
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.rules = []
        self.conns = set()
        self.counts = {k: 0 for k in COUNT_NAMES}
        self.forwarded = 0     # requests forwarded so far (reorder waits for the next)
        self.stopping = False

    # ------------------------------------------------------------ bookkeeping
    def log(self, msg):
        line = "%s %s\n" % (time.strftime("%H:%M:%S"), msg)
        with self.lock:
            self.logf.write(line)
            self.logf.flush()

    def count(self, name, n=1):
        with self.lock:
            self.counts[name] += n

    def full_rule(self, mode, conn):
        """The p=1 rule of this mode that covers the whole connection, if any."""
        with self.lock:
            for r in self.rules:
                if r.mode == mode and r.p >= 1 and r.matches_conn(conn):
                    return r
        return None

    @staticmethod
    def reset(sock):
        if sock is None:
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass

    def cut_conn(self, conn):
        conn.dead = True
        self.reset(conn.client)
        self.reset(conn.up)

    # ------------------------------------------------------------ control
    def set_rules(self, text):
        rules = [Rule(t) for t in text.split(";") if t.strip()]
        with self.lock:
            self.rules = rules
            conns = list(self.conns)
            self.cond.notify_all()
        n = 0
        for r in rules:
            if r.p < 1:
                continue
            for c in conns:
                if not r.matches_conn(c):
                    continue
                if r.mode == "cut" and not c.dead:
                    self.cut_conn(c)
                    n += 1
                elif r.mode == "blackhole":
                    c.blackholed = True
        if n:
            self.count("cut_conn", n)
        self.log("rules: %s%s" % ("; ".join(r.text for r in rules) or "pass",
                                  " (cut %d open connection(s))" % n if n else ""))
        return "ok"

    def stats(self):
        with self.lock:
            return json.dumps({"rules": "; ".join(r.text for r in self.rules) or "pass",
                               "counts": dict(self.counts), "open": len(self.conns)})

    def control(self, sock):
        rd = Reader(sock)
        try:
            while True:
                ln = rd.line().decode("utf-8", "replace").strip()
                if not ln:
                    continue
                cmd, _, arg = ln.partition(" ")
                try:
                    if cmd == "set":
                        ans = self.set_rules(arg)
                    elif cmd == "stats":
                        ans = "ok " + self.stats()
                    elif cmd == "log":
                        self.log("test: " + arg)
                        ans = "ok"
                    else:
                        ans = "error: unknown command %r (set, stats, log)" % cmd
                except (ValueError, KeyError) as e:
                    ans = "error: %s" % e
                sock.sendall((ans + "\r\n").encode())
        except (Closed, OSError):
            pass
        finally:
            sock.close()

    # ------------------------------------------------------------ forwarding
    def decide(self, sender, mtype):
        """(delay seconds, deciding rule or None) for one request."""
        delay = 0.0
        decider = None
        with self.lock:
            for r in self.rules:
                if not r.matches(sender, mtype) or self.rng.random() >= r.p:
                    continue
                if r.mode == "delay":
                    delay += (r.ms + self.rng.uniform(0, r.jitter)) / 1000.0
                elif r.mode != "pass" and decider is None:
                    decider = r
                elif r.mode == "pass" and decider is None:
                    break
        return delay, decider

    def connect_up(self):
        s = socket.create_connection(self.target, timeout=10)
        s.settimeout(None)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def relay_response(self, conn, up_rd, method, sink=False):
        """Reads one response from upstream; writes it to the client unless sink (or the
        connection became blackholed). Returns (keep_alive, status)."""
        out = (lambda b: None) if sink else (lambda b: self.to_client(conn, b))
        while True:
            head = up_rd.head()
            first, hdrs = parse_head(head)
            try:
                status = int(first.split(" ")[1])
            except (IndexError, ValueError):
                status = 0
            out(head)
            if not 100 <= status < 200:
                break
        keep = "close" not in hdrs.get("connection", "").lower() and first.startswith("HTTP/1.1")
        if method == "HEAD" or status in (204, 304):
            return keep, status
        if "chunked" in hdrs.get("transfer-encoding", "").lower():
            while True:
                ln = up_rd.line()
                out(ln)
                n = int(ln.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while True:
                        t = up_rd.line()
                        out(t)
                        if t == b"\r\n":
                            break
                    break
                left = n + 2
                while left:
                    b = up_rd.some(min(left, 65536))
                    out(b)
                    left -= len(b)
        elif "content-length" in hdrs:
            left = int(hdrs["content-length"])
            while left:
                b = up_rd.some(min(left, 65536))
                out(b)
                left -= len(b)
        else:
            try:
                while True:
                    out(up_rd.some(65536))
            except Closed:
                pass
            keep = False
        return keep, status

    def to_client(self, conn, data):
        if conn.blackholed or self.full_rule("blackhole", conn):
            conn.blackholed = True   # the answer vanishes
            return
        if conn.dead:
            raise Closed()
        try:
            conn.client.sendall(data)
        except OSError:
            raise Closed()

    def side_request(self, req, method):
        """Sends req on a fresh upstream connection, reads and drops the answer; its
        HTTP status (0 if none)."""
        s = None
        try:
            s = self.connect_up()
            s.sendall(req)
            _, status = self.relay_response(None, Reader(s), method, sink=True)
            return status
        except (OSError, Closed):
            return 0
        finally:
            if s:
                s.close()

    def swallow(self, conn):
        """Blackhole: read and drop whatever the client sends until it closes."""
        conn.blackholed = True
        try:
            while not conn.dead:
                if not conn.client.recv(65536):
                    break
        except OSError:
            pass

    def hold(self, conn, what):
        """reorder: wait until another request was forwarded, or hold_ms."""
        with self.lock:
            start = self.forwarded
            deadline = time.monotonic() + self.hold_ms / 1000.0
            while self.forwarded == start and not conn.dead and not self.stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            overtaken = self.forwarded != start
            self.counts["reorder" if overtaken else "reorder_timeout"] += 1
        self.log("conn %d: reorder %s: %s" % (conn.id, what,
                 "forwarded after a later request" if overtaken
                 else "nothing overtook it in %d ms" % self.hold_ms))

    def note_forwarded(self):
        with self.lock:
            self.forwarded += 1
            self.cond.notify_all()

    def handle(self, sock):
        conn = Conn(sock)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.lock:
            self.conns.add(conn)
            no_filter_cut = any(r.mode == "cut" and r.p >= 1 and not r.filtered()
                                for r in self.rules)
        up_rd = None
        try:
            if no_filter_cut:
                self.count("refused")
                self.log("conn %d: refused (link cut)" % conn.id)
                return
            rd = Reader(sock)
            while not conn.dead:
                got = read_request(rd)
                if got is None:
                    return
                req, method, path, hdrs, body = got
                sender, mtype = envelope_of(hdrs, body)
                if conn.sender is None and sender is not None:
                    conn.sender = sender
                if sender is None:
                    sender = conn.sender
                what = "%s %s %s%s" % (method, path, MSG_NAMES.get(mtype, mtype or "-"),
                                        " from " + sender[:8] if sender else "")
                self.count("requests")
                if conn.blackholed or self.full_rule("blackhole", conn):
                    self.count("blackhole")
                    self.log("conn %d: blackhole %s" % (conn.id, what))
                    self.swallow(conn)
                    return
                cutrule = self.full_rule("cut", conn)
                if cutrule and cutrule.filtered():
                    self.count("refused")
                    self.log("conn %d: refused (link cut for %s) %s" % (conn.id, cutrule.text, what))
                    return
                delay, rule = self.decide(sender, mtype)
                if delay:
                    self.count("delay")
                    time.sleep(delay)
                mode = rule.mode if rule else "pass"
                if mode == "cut":
                    self.count("cut")
                    self.log("conn %d: cut %s" % (conn.id, what))
                    return
                if mode == "blackhole":
                    self.count("blackhole")
                    self.log("conn %d: blackhole %s" % (conn.id, what))
                    self.swallow(conn)
                    return
                if mode == "reorder":
                    self.hold(conn, what)
                dup = rule.which if mode == "duplicate" else None
                if dup == "second":
                    st = self.side_request(req, method)
                    self.count("duplicate")
                    if st == 403:
                        self.count("dup_refused")
                    self.log("conn %d: duplicate %s: copy sent first, its answer (HTTP %s) "
                             "dropped" % (conn.id, what, st))
                try:
                    if conn.up is None:
                        conn.up = self.connect_up()
                        up_rd = Reader(conn.up)
                    conn.up.sendall(req)
                except OSError as e:
                    self.count("upstream_error")
                    self.log("conn %d: upstream %s:%d: %s; resetting the client (%s)" %
                             (conn.id, self.target[0], self.target[1], e, what))
                    return
                self.note_forwarded()
                if mode == "drop-response":
                    try:
                        _, st = self.relay_response(conn, up_rd, method, sink=True)
                    except Closed:
                        st = "none"
                    self.count("drop_response")
                    self.log("conn %d: drop-response %s (HTTP %s dropped)" % (conn.id, what, st))
                    return
                try:
                    keep, st = self.relay_response(conn, up_rd, method)
                except Closed:
                    if not conn.dead and not conn.blackholed:
                        self.count("upstream_error")
                    return
                if conn.blackholed:
                    self.count("blackhole")
                    self.log("conn %d: blackhole: the answer to %s vanished" % (conn.id, what))
                    self.swallow(conn)
                    return
                if dup == "first":
                    st2 = self.side_request(req, method)
                    self.count("duplicate")
                    if st2 == 403:
                        self.count("dup_refused")
                    self.log("conn %d: duplicate %s: replayed after the answer (HTTP %s), "
                             "copy answered HTTP %s" % (conn.id, what, st, st2))
                elif mode == "pass":
                    self.count("pass")
                if not keep:
                    return
        except Closed:
            pass
        except Exception as e:  # a proxy bug must show, not hang a test
            self.log("conn %d: proxy error %s: %s" % (conn.id, type(e).__name__, e))
        finally:
            with self.lock:
                self.conns.discard(conn)
            self.reset(conn.client)
            self.reset(conn.up)


def serve(a):
    host, _, port = a.target.rpartition(":")
    logf = open(a.log, "a", buffering=1) if a.log else sys.stderr
    px = Proxy((host or "127.0.0.1", int(port)), a.seed, a.hold_ms, logf)
    lhost, _, lport = a.listen.rpartition(":")
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((lhost or "127.0.0.1", int(lport)))
    ls.listen(128)
    cs = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    cs.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    cs.bind(("127.0.0.1", 0))
    cs.listen(16)

    def stop(signum, frame):
        px.stopping = True
        os._exit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def acceptor(lsock, fn):
        while True:
            try:
                s, _ = lsock.accept()
            except OSError:
                continue
            threading.Thread(target=fn, args=(s,), daemon=True).start()

    threading.Thread(target=acceptor, args=(cs, px.control), daemon=True).start()
    px.log("proxy 127.0.0.1:%d -> %s:%d, control port %d" %
           (ls.getsockname()[1], px.target[0], px.target[1], cs.getsockname()[1]))
    if a.ready:
        tmp = a.ready + ".tmp"
        with open(tmp, "w") as f:
            f.write("listen %d ctl %d\n" % (ls.getsockname()[1], cs.getsockname()[1]))
        os.rename(tmp, a.ready)
    acceptor(ls, px.handle)


def ctl(a):
    s = socket.create_connection(("127.0.0.1", a.port), timeout=30)
    s.sendall((" ".join(a.command) + "\r\n").encode())
    ans = Reader(s).line().decode().strip()
    s.close()
    print(ans[3:] if ans.startswith("ok ") else ans)
    return 0 if ans == "ok" or ans.startswith("ok ") else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--target", required=True)
    s.add_argument("--listen", default="127.0.0.1:0")
    s.add_argument("--ready")
    s.add_argument("--log")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--hold-ms", type=int, default=400)
    c = sub.add_parser("ctl")
    c.add_argument("port", type=int)
    c.add_argument("command", nargs="+")
    a = p.parse_args()
    if a.cmd == "serve":
        serve(a)
        return 0
    return ctl(a)


if __name__ == "__main__":
    sys.exit(main())
