#!/usr/bin/env python3
"""HTTP/2 client of tests/integration/conformance_h2.rs.

Sends one request over a fresh h2c (prior knowledge) connection with
Python's `h2` library (hyper-h2: an implementation independent of the
proxies under test) and prints as JSON what came back. The request comes
as JSON, the only argument:

    {"source": "127.0.3.1", "port": 8080,
     "headers": [[name, value], ...],       # pseudo-fields included, in order
     "data": ["latin-1 text", ...],          # one DATA frame each
     "ending": "headers" | "data" | "empty" | "trailers",
     "trailers": [[name, value], ...]}

`ending` says which frame carries END_STREAM: the HEADERS frame (no
body), the last DATA frame, an empty DATA frame after the data, or a
trailing HEADERS frame. The headers go out as given: no validation or
normalisation by the library, so malformed requests can be sent.

Output: {"interim": [status, ...], "status": N or null,
"headers": [[name, value], ...], "body": "latin-1", "trailers": [...] or
null, "reset": code or null, "goaway": code or null, "closed": bool,
"timeout": bool, "protocol_error": what the server broke, or null}. Nothing here decides pass or fail: the Rust test does.
"""

import json
import socket
import sys

import h2.config
import h2.connection
import h2.events
import h2.exceptions

TIMEOUT = 3.0


def main():
    req = json.loads(sys.argv[1])
    sock = socket.create_connection(
        ("127.0.0.1", req["port"]), timeout=TIMEOUT, source_address=(req["source"], 0)
    )
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
        )
    )
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in req["headers"]]
    ending = req["ending"]
    data = [d.encode("latin-1") for d in req.get("data", [])]
    conn.send_headers(sid, headers, end_stream=ending == "headers")
    for i, d in enumerate(data):
        last = i == len(data) - 1
        # Flow control: the cases' bodies fit in the initial window.
        conn.send_data(sid, d, end_stream=last and ending == "data")
    if ending == "empty":
        conn.send_data(sid, b"", end_stream=True)
    elif ending == "trailers":
        trailers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in req["trailers"]]
        conn.send_headers(sid, trailers, end_stream=True)
    sock.sendall(conn.data_to_send())

    out = {
        "interim": [],
        "status": None,
        "headers": [],
        "body": b"",
        "trailers": None,
        "reset": None,
        "goaway": None,
        "closed": False,
        "timeout": False,
        "protocol_error": None,
    }
    done = False
    try:
        while not done:
            chunk = sock.recv(65536)
            if not chunk:
                out["closed"] = True
                break
            for ev in conn.receive_data(chunk):
                if isinstance(ev, h2.events.InformationalResponseReceived):
                    out["interim"].append(int(dict(ev.headers)[b":status"]))
                elif isinstance(ev, h2.events.ResponseReceived):
                    fields = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in ev.headers]
                    out["status"] = int(dict(fields)[":status"])
                    out["headers"] = [[k, v] for k, v in fields if not k.startswith(":")]
                elif isinstance(ev, h2.events.DataReceived):
                    out["body"] += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.TrailersReceived):
                    out["trailers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in ev.headers]
                elif isinstance(ev, h2.events.StreamEnded):
                    done = True
                elif isinstance(ev, h2.events.StreamReset):
                    out["reset"] = int(ev.error_code)
                    done = True
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    out["goaway"] = int(ev.error_code)
                    done = True
            pending = conn.data_to_send()
            if pending:
                sock.sendall(pending)
    except socket.timeout:
        out["timeout"] = True
    except h2.exceptions.ProtocolError as e:
        # The server broke HTTP/2 (e.g. DATA before HEADERS).
        out["protocol_error"] = str(e)
    except OSError:
        out["closed"] = True
    sock.close()
    out["body"] = out["body"].decode("latin-1")
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
