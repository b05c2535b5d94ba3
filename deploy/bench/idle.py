#!/usr/bin/env python3
"""Idle-connection scenario: opens N keepalive client connections to a proxy,
sends one request on each (so every connection has been used, as a browser's
or a client pool's would be), holds them all idle, then records the memory of
the proxy's processes and how many connections are still open.

    idle.py --port PORT --conns 10000 --hold 3 --pid PID --out results.jsonl \
        --set scenario=e --set contender=nginx
"""
import argparse
import asyncio
import json
import resource
import sys

from measure import process_tree, pss_kb, status_kb

# Source addresses to spread the client ports over (loopback accepts all of
# 127/8), so 10,000 connections never come near the ephemeral port range.
SOURCES = [f"127.0.0.{i}" for i in range(1, 5)]
# Requests in flight while opening: keeps the proxies' upstream pools at a
# size a 50-connection load would give, so the scenario measures client
# connections, not thousands of upstream ones.
OPENING_CONCURRENCY = 50


async def open_one(i, port, gate):
    async with gate:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=(SOURCES[i % len(SOURCES)], 0)
        )
        writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer: {head[:40]!r}")
        return reader, writer


async def run(args):
    gate = asyncio.Semaphore(OPENING_CONCURRENCY)
    conns = await asyncio.gather(*(open_one(i, args.port, gate) for i in range(args.conns)))
    await asyncio.sleep(args.hold)
    pids = process_tree(args.pid)
    row = dict(kv.split("=", 1) for kv in args.set)
    # A connection the proxy closed has its EOF waiting in the reader.
    await asyncio.sleep(0)
    row.update(
        conns=args.conns,
        still_open=sum(1 for r, _ in conns if not r.at_eof()),
        rss_kb=status_kb(pids, "VmRSS"),
        pss_kb=pss_kb(pids),
        peak_rss_kb=status_kb(pids, "VmHWM"),
        baseline_rss_kb=args.baseline_rss_kb,
    )
    for _, w in conns:
        w.close()
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, required=True)
    ap.add_argument("--hold", type=float, default=3, help="seconds idle before reading memory")
    ap.add_argument("--pid", type=int, required=True, help="proxy's main pid")
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    # Memory before any connection, for the per-connection cost.
    args.baseline_rss_kb = status_kb(process_tree(args.pid), "VmRSS")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.conns + 100:
        raise SystemExit(f"idle.py: open-file limit {soft} is too low for {args.conns} connections")
    row = asyncio.run(run(args))
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(
        f"bench:   {row.get('contender', ''):<20} {row['still_open']:>6} of {row['conns']} open"
        f"  RSS {row['rss_kb'] / 1024:6.1f} MB (before: {row['baseline_rss_kb'] / 1024:.1f} MB)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
