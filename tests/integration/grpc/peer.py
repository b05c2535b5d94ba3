#!/usr/bin/env python3
"""gRPC peers for tests/integration/grpc.rs: Python's grpcio (the C core's
HTTP/2, not ours) as the server behind fulcrum and as the client in front.

No protoc: generic handlers, messages are raw bytes.

    peer.py server PORT_FILE         serves on 127.0.0.1:0 (h2c), writes the port
    peer.py client CASE TARGET [--n N] [--ca PEM --name HOST]
                                     runs one case (n calls or messages where
                                     it takes a count; TLS with --ca), prints
                                     one JSON line

Service /test.Echo:
    Unary    returns b"echo:" + request
    Chat     bidirectional: answers each message with b"reply:" + message
    Fail     aborts with NOT_FOUND "no such user", trailing metadata x-why: missing
    Meta     OK, initial metadata x-initial: hello, trailing x-trailer: done
    Slow     sleeps 2 s, unless the call ends first (counted as cancelled)
    Stats    JSON: calls per method, Slow calls that ended early (and after
             how many seconds), most calls at once, the X-Forwarded-Proto
             values seen
"""

import json
import os
import queue
import sys
import threading
import time
from concurrent import futures

import grpc


SERVICE = "test.Echo"


def ident(b):
    return b


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = {}
        self.active = 0
        self.max_active = 0
        self.cancelled = 0
        self.cancelled_after = []
        self.forwarded_proto = set()
        # The client connections calls came on (address and port).
        self.peers = set()

    def enter(self, name, context):
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            md = dict(context.invocation_metadata())
            self.forwarded_proto.add(md.get("x-forwarded-proto", "-"))
            self.peers.add(context.peer())

    def leave(self):
        with self.lock:
            self.active -= 1


def serve(port_file, max_age_ms=0):
    st = State()

    def wrap(name, f):
        def handler(request, context):
            st.enter(name, context)
            try:
                return f(request, context)
            finally:
                st.leave()

        return handler

    def unary(request, context):
        # Concurrency: hold each call a moment so that parallel calls overlap.
        time.sleep(0.05)
        return b"echo:" + request

    def chat(requests, context):
        # Each reply goes out as soon as its message is in.
        st.enter("Chat", context)
        try:
            for m in requests:
                yield b"reply:" + m
        finally:
            st.leave()

    def fail(request, context):
        context.set_trailing_metadata((("x-why", "missing"),))
        context.abort(grpc.StatusCode.NOT_FOUND, "no such user")

    def meta(request, context):
        context.send_initial_metadata((("x-initial", "hello"),))
        context.set_trailing_metadata((("x-trailer", "done"), ("x-trailer-bin", b"\x00\x01\xff")))
        return b"meta"

    def slow(request, context):
        start = time.monotonic()
        while time.monotonic() < start + 2.0:
            if not context.is_active():
                with st.lock:
                    st.cancelled += 1
                    st.cancelled_after.append(round(time.monotonic() - start, 3))
                return b""
            time.sleep(0.01)
        return b"slow"

    def stats(request, context):
        with st.lock:
            doc = {
                "calls": st.calls,
                "max_active": st.max_active,
                "cancelled": st.cancelled,
                "cancelled_after": st.cancelled_after,
                "forwarded_proto": sorted(st.forwarded_proto),
                "connections": len(st.peers),
            }
        return json.dumps(doc).encode()

    uu = grpc.unary_unary_rpc_method_handler
    handlers = {
        "Unary": uu(wrap("Unary", unary), request_deserializer=ident, response_serializer=ident),
        "Chat": grpc.stream_stream_rpc_method_handler(
            chat, request_deserializer=ident, response_serializer=ident
        ),
        "Fail": uu(wrap("Fail", fail), request_deserializer=ident, response_serializer=ident),
        "Meta": uu(wrap("Meta", meta), request_deserializer=ident, response_serializer=ident),
        "Slow": uu(wrap("Slow", slow), request_deserializer=ident, response_serializer=ident),
        "Stats": uu(stats, request_deserializer=ident, response_serializer=ident),
    }
    options = []
    if max_age_ms:
        # The server retires each connection after this long (GOAWAY, then
        # a grace period for calls in flight), as gRPC deployments do.
        options = [
            ("grpc.max_connection_age_ms", max_age_ms),
            ("grpc.max_connection_age_grace_ms", 2000),
        ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=80), maximum_concurrent_rpcs=None, options=options
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    # Written whole, then renamed: the test never reads half a port.
    with open(port_file + ".tmp", "w") as f:
        f.write(f"{port}\n")
    os.rename(port_file + ".tmp", port_file)
    server.wait_for_termination()


def channel(target, ca, name):
    options = [("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0)]
    if ca is None:
        return grpc.insecure_channel(target, options=options)
    with open(ca, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    if name:
        options.append(("grpc.ssl_target_name_override", name))
    return grpc.secure_channel(target, creds, options=options)


def method(ch, name, kind="uu"):
    path = f"/{SERVICE}/{name}"
    if kind == "ss":
        return ch.stream_stream(path, request_serializer=ident, response_deserializer=ident)
    return ch.unary_unary(path, request_serializer=ident, response_deserializer=ident)


def md(pairs):
    out = {}
    for k, v in pairs or ():
        out[k] = v.hex() if isinstance(v, bytes) else v
    return out


def error(e):
    return {
        "code": e.code().name,
        "details": e.details(),
        "trailing": md(e.trailing_metadata()),
    }


def case_unary(ch, n):
    call = method(ch, "Unary")
    replies = [call(f"hello {i}".encode(), timeout=10).decode() for i in range(n)]
    return {"replies": replies}


def case_chat(ch, n):
    """Sends message i only after reply i-1 came back: a proxy that held the
    request stream until its end would never deliver the first reply."""
    q = queue.Queue()

    def requests():
        while True:
            m = q.get()
            if m is None:
                return
            yield m

    responses = method(ch, "Chat", "ss")(requests(), timeout=20)
    replies = []
    q.put(b"msg 0")
    for r in responses:
        replies.append(r.decode())
        if len(replies) < n:
            q.put(f"msg {len(replies)}".encode())
        else:
            q.put(None)
    return {"replies": replies, "code": responses.code().name}


def case_fail(ch, n):
    try:
        method(ch, "Fail")(b"who", timeout=10)
        return {"code": "OK"}
    except grpc.RpcError as e:
        return error(e)


def case_meta(ch, n):
    reply, call = method(ch, "Meta").with_call(b"m", timeout=10)
    return {
        "reply": reply.decode(),
        "code": call.code().name,
        "initial": md(call.initial_metadata()),
        "trailing": md(call.trailing_metadata()),
    }


def case_deadline(ch, n):
    start = time.monotonic()
    out = {}
    try:
        method(ch, "Slow")(b"s", timeout=0.5)
        out["code"] = "OK"
    except grpc.RpcError as e:
        out.update(error(e))
    out["elapsed"] = time.monotonic() - start
    # The same channel (the same connection to fulcrum) goes on serving.
    out["after"] = method(ch, "Unary")(b"after", timeout=10).decode()
    return out


def case_cancel(ch, n):
    """Starts a Slow call with no deadline and cancels it (RST_STREAM) after
    0.3 s, keeping the connection open for 1.2 s more: a server that saw the
    call end before 1.5 s was told by the reset, not by the connection's end."""
    f = method(ch, "Slow").future(b"s")
    time.sleep(0.3)
    cancelled = f.cancel()
    time.sleep(1.2)
    after = method(ch, "Unary")(b"after", timeout=10).decode()
    return {"cancelled": cancelled, "after": after}


def case_concurrent(ch, n):
    call = method(ch, "Unary")
    start = time.monotonic()
    fs = [call.future(f"c{i}".encode(), timeout=20) for i in range(n)]
    replies = []
    errors = []
    for f in fs:
        try:
            replies.append(f.result().decode())
        except grpc.RpcError as e:
            errors.append(error(e))
    return {"replies": replies, "errors": errors, "elapsed": time.monotonic() - start}


def case_stats(ch, n):
    return json.loads(method(ch, "Stats")(b"", timeout=10))


CASES = {
    "unary": case_unary,
    "chat": case_chat,
    "fail": case_fail,
    "meta": case_meta,
    "deadline": case_deadline,
    "cancel": case_cancel,
    "concurrent": case_concurrent,
    "stats": case_stats,
}


def client(args):
    case, target = args[0], args[1]
    n, ca, name = 1, None, None
    rest = args[2:]
    while rest:
        flag, value, rest = rest[0], rest[1], rest[2:]
        if flag == "--n":
            n = int(value)
        elif flag == "--ca":
            ca = value
        elif flag == "--name":
            name = value
        else:
            raise SystemExit(f"unknown flag {flag}")
    ch = channel(target, ca, name)
    try:
        out = CASES[case](ch, n)
    finally:
        ch.close()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        # server PORT_FILE [--max-connection-age-ms N]
        age = int(sys.argv[4]) if sys.argv[3:4] == ["--max-connection-age-ms"] else 0
        serve(sys.argv[2], age)
    elif sys.argv[1] == "client":
        client(sys.argv[2:])
    else:
        raise SystemExit(__doc__)
