#!/usr/bin/env python3
"""Mixed client load for the soak test (standard library only).

    load.py --target 127.0.0.1:8080 --seconds 1800 --out DIR

Runs, until the time is up or SIGTERM/SIGINT:
  keepalive   GETs on persistent connections (reconnecting when closed)
  newconn     one GET per new connection
  slow        GETs whose header trickles in over about 2 s, and PUTs whose
              body does the same
  bodies      PUT (idempotent, 1-64 KiB: within fulcrum's retry buffer) and
              POST (not idempotent, 1-200 KiB) requests

Each request's answer is checked (status 200, JSON echo of the right
method and body size). Writes DIR/load.csv (per second: ok, failed
idempotent, failed non-idempotent, stale keepalive retries) and
DIR/failures.log (one line per failure with its reason).

A request sent on a reused keepalive connection that the server had
already closed (no byte of an answer came back) is retried once on a new
connection, as HTTP clients do for idempotent requests; those retries are
counted in `stale_retries`, and a failed retry counts as a failure.
"""

import argparse
import json
import os
import random
import signal
import socket
import threading
import time

STOP = threading.Event()  # workers stop starting requests
FINAL = threading.Event()  # the writer flushes and ends


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.buckets = {}  # second -> [ok, fail_idem, fail_nonidem, stale]
        self.failures = []

    def add(self, idx, reason=None, what=""):
        sec = int(time.time())
        with self.lock:
            b = self.buckets.setdefault(sec, [0, 0, 0, 0])
            b[idx] += 1
            if reason is not None:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {what}: {reason}")


class Closed(Exception):
    """The connection closed before any byte of an answer."""


def read_response(sock, buf):
    """Reads one response from sock; buf holds bytes already read. Returns
    (status, body, keepalive, rest)."""
    got_any = bool(buf)
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            if got_any:
                raise OSError("closed inside the response header")
            raise Closed()
        got_any = True
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    keepalive = headers.get("connection", "").lower() != "close"
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(rest) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError("closed inside the response body")
            rest += chunk
        return status, rest[:n], keepalive, rest[n:]
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                chunk = sock.recv(65536)
                if not chunk:
                    raise OSError("closed inside a chunk")
                rest += chunk
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                chunk = sock.recv(65536)
                if not chunk:
                    raise OSError("closed inside a chunk")
                rest += chunk
            body += rest[:size]
            rest = rest[size + 2:]
            if size == 0:
                return status, body, keepalive, rest
    body = rest
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return status, body, False, b""
        body += chunk


def check(status, body, method, body_len):
    if status != 200:
        return f"status {status}: {body[:120]!r}"
    try:
        echo = json.loads(body)
    except ValueError:
        return f"not a JSON echo: {body[:120]!r}"
    if echo.get("method") != method or echo.get("body_bytes") != body_len:
        return f"wrong echo: {echo.get('method')} {echo.get('body_bytes')} for {method} {body_len}"
    return None


def request_bytes(method, path, host, body=b"", close=False):
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if close:
        head += "Connection: close\r\n"
    if body or method in ("PUT", "POST"):
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n", body


def connect(addr):
    s = socket.create_connection(addr, timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def path_for(kind):
    return f"/api/{kind}/{random.randrange(10**6)}?delay_ms={random.choice((0, 0, 0, 5, 20, 50))}"


def one_shot(args, stats, kind, method, body, slow=False):
    """A request on its own connection; returns nothing, records the result."""
    idem = method != "POST"
    what = f"{kind} {method}"
    head, body = request_bytes(method, path_for(kind), args.host, body, close=True)
    try:
        s = connect(args.addr)
        try:
            if slow:
                pieces = head + body
                step = max(1, len(pieces) // 20)
                for i in range(0, len(pieces), step):
                    s.sendall(pieces[i:i + step])
                    time.sleep(0.1)
            else:
                s.sendall(head + body)
            status, rbody, _, _ = read_response(s, b"")
        finally:
            s.close()
        err = check(status, rbody, method, len(body))
    except Closed:
        err = "connection closed before an answer"
    except (OSError, ValueError, IndexError) as e:
        err = f"{type(e).__name__}: {e}"
    if err is None:
        stats.add(0)
    else:
        stats.add(1 if idem else 2, err, what)


def keepalive_worker(args, stats):
    sock, buf, used = None, b"", 0
    while not STOP.is_set():
        if sock is None:
            try:
                sock, buf, used = connect(args.addr), b"", 0
            except OSError as e:
                stats.add(1, f"connect: {e}", "keepalive GET")
                time.sleep(0.2)
                continue
        head, _ = request_bytes("GET", path_for("ka"), args.host)
        try:
            sock.sendall(head)
            status, body, keep, buf = read_response(sock, buf)
            used += 1
            err = check(status, body, "GET", 0)
        except Closed:
            sock.close()
            sock = None
            if used > 0:
                # The server closed the idle connection as we sent: retry
                # once on a new connection (what HTTP clients do).
                stats.add(3)
                one_shot(args, stats, "ka-retry", "GET", b"")
            else:
                stats.add(1, "new connection closed before an answer", "keepalive GET")
            continue
        except (OSError, ValueError, IndexError) as e:
            stats.add(1, f"{type(e).__name__}: {e}", "keepalive GET")
            sock.close()
            sock = None
            continue
        if err is None:
            stats.add(0)
        else:
            stats.add(1, err, "keepalive GET")
        if not keep or err is not None:
            sock.close()
            sock = None
        time.sleep(args.pause)


def newconn_worker(args, stats):
    while not STOP.is_set():
        one_shot(args, stats, "new", "GET", b"")
        time.sleep(args.pause)


def slow_worker(args, stats):
    while not STOP.is_set():
        if random.random() < 0.5:
            one_shot(args, stats, "slow", "GET", b"", slow=True)
        else:
            one_shot(args, stats, "slowbody", "PUT", os.urandom(random.randrange(1, 4096)), slow=True)


def body_worker(args, stats):
    # PUT bodies stay within fulcrum's 64 KiB retry buffer, so they can be
    # replayed on another server; POSTs are never replayed once sent.
    while not STOP.is_set():
        if random.random() < 0.5:
            one_shot(args, stats, "body", "PUT", os.urandom(random.randrange(1024, 64 * 1024)))
        else:
            one_shot(args, stats, "body", "POST", os.urandom(random.randrange(1024, 200 * 1024)))
        time.sleep(args.pause)


def writer(args, stats):
    """Every second, appends finished seconds to load.csv."""
    path = os.path.join(args.out, "load.csv")
    with open(path, "w") as f:
        f.write("unix_s,ok,failed_idempotent,failed_non_idempotent,stale_retries\n")
    done = 0
    while True:
        stopping = FINAL.wait(1.0)
        now = int(time.time())
        with stats.lock:
            secs = sorted(s for s in stats.buckets if s < now or stopping)
            rows = [(s, stats.buckets.pop(s)) for s in secs if s > done]
            fails, stats.failures = stats.failures, []
        with open(path, "a") as f:
            for s, b in rows:
                f.write(f"{s},{b[0]},{b[1]},{b[2]},{b[3]}\n")
                done = s
        if fails:
            with open(os.path.join(args.out, "failures.log"), "a") as f:
                f.write("\n".join(fails) + "\n")
        if stopping:
            return


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--target", default="127.0.0.1:8080")
    p.add_argument("--seconds", type=float, default=1800)
    p.add_argument("--out", required=True)
    p.add_argument("--keepalive", type=int, default=4)
    p.add_argument("--newconn", type=int, default=2)
    p.add_argument("--slow", type=int, default=2)
    p.add_argument("--bodies", type=int, default=2)
    p.add_argument("--pause", type=float, default=0.01, help="seconds between requests per worker")
    args = p.parse_args()
    host, _, port = args.target.rpartition(":")
    args.addr = (host, int(port))
    args.host = args.target
    stats = Stats()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: STOP.set())
    threads = [threading.Thread(target=writer, args=(args, stats))]
    for fn, n in ((keepalive_worker, args.keepalive), (newconn_worker, args.newconn),
                  (slow_worker, args.slow), (body_worker, args.bodies)):
        threads += [threading.Thread(target=fn, args=(args, stats), daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    deadline = time.time() + args.seconds
    while not STOP.is_set() and time.time() < deadline:
        time.sleep(0.5)
    STOP.set()
    time.sleep(2.0)  # let requests in progress finish
    FINAL.set()
    threads[0].join()


if __name__ == "__main__":
    main()
