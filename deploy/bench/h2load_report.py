#!/usr/bin/env python3
"""Runs h2load (nghttp2-client) and prints its result as one JSON line, in
the form wrk_report.lua prints wrk's, so that measure.py reads both alike.

    h2load_report.py -D10 -t1 -c10 -m100 https://127.0.0.1:PORT/

The arguments are h2load's. Latency percentiles come from h2load's
per-request log (--log-file: start, status, microseconds until the end of
the response); h2load's own summary has only min, max and mean. Requests
are those answered with a 2xx status; errors are h2load's failed, errored
and timed-out requests plus answers with another status. With -D, h2load
counts what completed within the duration. A run that outlasts its -D
three times over (plus 30 s) is stopped and reported as a failure: a
benchmark run that hangs measures nothing (one --quick run on a machine
at load 14 took 320 s for a 1 s duration once, not seen again).
"""
import json
import os
import re
import subprocess
import sys
import tempfile


def percentile(sorted_values, p):
    if not sorted_values:
        return 0
    i = min(len(sorted_values) - 1, int(len(sorted_values) * p / 100))
    return sorted_values[i]


def duration_s(args):
    """h2load's -D in seconds (-D10, -D 10, --duration=10; plain seconds)."""
    for i, a in enumerate(args):
        for prefix in ("--duration=", "-D"):
            if a.startswith(prefix):
                value = a[len(prefix):] or (args[i + 1] if i + 1 < len(args) else "")
                try:
                    return float(value.rstrip("s"))
                except ValueError:
                    return None
    return None


def main():
    args = sys.argv[1:]
    duration = duration_s(args)
    limit = None if duration is None else 3 * duration + 30
    with tempfile.TemporaryDirectory(prefix="h2load-") as tmp:
        log = os.path.join(tmp, "requests.log")
        try:
            out = subprocess.run(["h2load", "--log-file", log, *args],
                                 capture_output=True, text=True, check=False, timeout=limit)
        except subprocess.TimeoutExpired:
            sys.exit(f"h2load_report.py: h2load {' '.join(args)} still running after {limit:.0f} s: stopped")
        text = out.stdout + out.stderr
        finished = re.search(r"finished in ([\d.]+)(s|ms), ([\d.]+) req/s", text)
        counts = re.search(
            r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
            r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
        codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
        if out.returncode != 0 or not (finished and counts and codes):
            sys.exit(f"h2load_report.py: no result from h2load {' '.join(args)}:\n{text}")
        latencies = []
        try:
            with open(log) as f:
                for line in f:
                    fields = line.split("\t")
                    if len(fields) >= 3:
                        latencies.append(int(fields[2]))
        except FileNotFoundError:
            pass
    latencies.sort()
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    ok = int(codes.group(1))
    failed, errored, timeout = (int(counts.group(i)) for i in (5, 6, 7))
    other = sum(int(codes.group(i)) for i in (2, 3, 4))
    print(json.dumps({
        "requests": ok,
        "duration_us": int(seconds * 1e6),
        "bytes": 0,
        "errors": failed + errored + timeout,
        "status_errors": other,
        "p50_us": percentile(latencies, 50),
        "p99_us": percentile(latencies, 99),
        "p999_us": percentile(latencies, 99.9),
        "max_us": latencies[-1] if latencies else 0,
    }))


if __name__ == "__main__":
    main()
