#!/usr/bin/env python3
"""WebSocket server and client of tests/integration/websocket.rs, with
Python's `websockets` library (an implementation independent of fulcrum
and Pingora).

    ws.py server PORT_FILE     echo server on a free loopback port
    ws.py client URL           talks to it through fulcrum, prints JSON

The client sends a text message, a 1 MB text message, a binary one, waits
2 s idle, sends one more, then closes; it reports each echo and how the
close went. Nothing here decides pass or fail: the Rust test does.
"""

import asyncio
import json
import sys

import websockets


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def server(port_file):
    async with websockets.serve(echo, "127.0.0.1", 0, max_size=None) as s:
        with open(port_file, "w") as f:
            f.write(str(s.sockets[0].getsockname()[1]))
        await asyncio.Future()


async def client(url):
    report = {"echoes": [], "close_code": None}
    messages = ["hello", "x" * 1_000_000, b"\x00\x01\xffbinary"]
    async with websockets.connect(url, max_size=None) as ws:
        for m in messages:
            await ws.send(m)
            report["echoes"].append(await ws.recv() == m)
        await asyncio.sleep(2)
        await ws.send("after a pause")
        report["echoes"].append(await ws.recv() == "after a pause")
        await ws.close()
        report["close_code"] = ws.close_code
    print(json.dumps(report))


if __name__ == "__main__":
    if sys.argv[1] == "server":
        asyncio.run(server(sys.argv[2]))
    else:
        asyncio.run(client(sys.argv[2]))
