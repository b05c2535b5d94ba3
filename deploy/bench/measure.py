#!/usr/bin/env python3
"""One measurement of the benchmark harness: runs wrk against a contender and
appends a JSON line with throughput, latency, the CPU the contender's
processes used per 1,000 requests and their peak RSS.

    measure.py --pid PID --out results.jsonl --set scenario=a --set contender=nginx \
        -- wrk -t1 -c50 -d10s -s wrk_report.lua http://127.0.0.1:PORT/

Also usable as a module (idle.py) for the /proc readings.
"""
import argparse
import json
import os
import subprocess
import sys
import urllib.request

TICKS = os.sysconf("SC_CLK_TCK")


def process_tree(pid):
    """The pid and all its descendants (nginx: master and workers)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            pass
    return pids


def cpu_seconds(pids):
    """(utime, stime) of the processes in seconds, all threads included."""
    user = system = 0
    for p in pids:
        with open(f"/proc/{p}/stat") as f:
            # Fields after the command name, which may contain spaces.
            fields = f.read().rsplit(")", 1)[1].split()
        user += int(fields[11])
        system += int(fields[12])
    return user / TICKS, system / TICKS


def status_kb(pids, key):
    """Sum of a /proc/PID/status field in kB (VmRSS, VmHWM)."""
    total = 0
    for p in pids:
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
    return total


def pss_kb(pids):
    """Proportional set size: shared pages counted once across processes."""
    total = 0
    for p in pids:
        with open(f"/proc/{p}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total


def tcp_passive_opens():
    """TCP connections accepted on the whole machine so far (/proc/net/snmp)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("PassiveOpens")])


def backend_call(url, path, method="GET"):
    """A demo backend control endpoint (its counters are per listener)."""
    req = urllib.request.Request(url + path, method=method)
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read()


def run_wrk(cmd):
    """Runs wrk; returns the JSON line printed by wrk_report.lua."""
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    sys.exit(f"measure.py: no result from {' '.join(cmd)}:\n{out.stdout}{out.stderr}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pid", type=int, required=True, help="contender's main pid")
    ap.add_argument("--out", required=True, help="results file (JSON lines)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument(
        "--backend",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="demo backend to count requests on (reset before the run)",
    )
    ap.add_argument("wrk", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.wrk[1:] if args.wrk[:1] == ["--"] else args.wrk

    backends = dict(kv.split("=", 1) for kv in args.backend)
    for url in backends.values():
        backend_call(url, "/__control/reset", "POST")
    # The reset leaves the count of connections accepted: read it before.
    conns0 = {name: json.loads(backend_call(url, "/__control/stats"))["connections"]
              for name, url in backends.items()}
    pids = process_tree(args.pid)
    opens0 = tcp_passive_opens()
    user0, sys0 = cpu_seconds(pids)
    w = run_wrk(cmd)
    user1, sys1 = cpu_seconds(pids)
    opens1 = tcp_passive_opens()
    user, system = user1 - user0, sys1 - sys0
    cpu = user + system
    seconds = w["duration_us"] / 1e6
    row = dict(kv.split("=", 1) for kv in args.set)
    row.update(
        requests=w["requests"],
        errors=w["errors"] + w["status_errors"],
        rps=w["requests"] / seconds,
        p50_ms=w["p50_us"] / 1000,
        p99_ms=w["p99_us"] / 1000,
        p999_ms=w["p999_us"] / 1000,
        cpu_ms_per_1k=cpu * 1e6 / max(w["requests"], 1),
        # user/kernel split: the kernel's share (TCP on loopback) is a floor
        # that no user-space optimization removes.
        user_ms_per_1k=user * 1e6 / max(w["requests"], 1),
        sys_ms_per_1k=system * 1e6 / max(w["requests"], 1),
        cpu_util=cpu / seconds,
        peak_rss_kb=status_kb(pids, "VmHWM"),
        # Connections accepted on the whole machine during the run: with a new
        # client connection per request (b, i, j) about one per request, and
        # other work on the machine adds its own.
        tcp_accepts=opens1 - opens0,
    )
    if backends:
        stats = {name: json.loads(backend_call(url, "/__control/stats")) for name, url in backends.items()}
        counts = {name: s["requests"] for name, s in stats.items()}
        row["backend_requests"] = counts
        # Upstream connections the proxy opened during the run.
        row["backend_connections"] = {name: s["connections"] - conns0[name] for name, s in stats.items()}
        row["slow_share"] = counts.get("slow", 0) / max(sum(counts.values()), 1)
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")
    share = f"  slow share {row['slow_share']:.1%}" if "slow" in backends else ""
    print(
        f"bench:   {row.get('contender', ''):<20} {row['rps']:8.0f} req/s"
        f"  p99 {row['p99_ms']:6.2f} ms  CPU {row['cpu_ms_per_1k']:5.1f} ms/1k req"
        f"  errors {row['errors']}{share}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
