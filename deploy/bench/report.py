#!/usr/bin/env python3
"""Writes BENCHMARKS.md and the ratio chart from the harness's results
(JSON lines from measure.py and idle.py). Ratios are against nginx in the
same run: absolute numbers on a shared 2-core machine are noisy, ratios much
less so."""
import argparse
import datetime
import json
import os
import platform
import re
import subprocess

LABELS = {
    "direct": "direct to backend",
    "fulcrum": "fulcrum",
    "fulcrum-log": "fulcrum, access log on",
    "fulcrum-nopgo": "fulcrum, without PGO",
    "pingora": "bare Pingora",
    "nginx": "nginx",
    "haproxy": "HAProxy",
    "fulcrum-least_conn": "fulcrum least_conn",
    "fulcrum-round_robin": "fulcrum round_robin",
    "fulcrum-ewma": "fulcrum ewma",
    "fulcrum-ewma-1s": "fulcrum ewma, decay 1s",
    "fulcrum-p2c": "fulcrum p2c",
}
SKEW_LABELS = {"nginx": "nginx least_conn, 2 workers", "haproxy": "HAProxy leastconn, 2 threads"}

SCENARIOS = {
    "a": ("a) Small responses, client keepalive",
          "11-byte responses, 50 keepalive client connections (wrk -t1 -c50). "
          "Each contender ran {rounds_a} time(s), interleaved (all once, then again); its row is "
          "the run with the median CPU per request, and the CPU cell lists every run's in run order."),
    "b": ("b) Small responses, new connection per request",
          "As a), with `Connection: close` on every request: one TCP connection "
          "per request on the client side (upstream connections are still reused)."),
    "c": ("c) 64 KB responses",
          "65,536-byte responses, 50 keepalive client connections."),
    "d": ("d) Fixed offered rate (latency at equal load)",
          "{rate} requests/s offered over 50 keepalive connections, well below "
          "every contender's saturation: wrk paced by wrk_report.lua (see README). "
          "Each contender ran {rounds_d} time(s), interleaved (all once, then again); its row is "
          "the run with the median p99, and the p99 cell lists every run's in run order."),
}
BUSY = ("\"Proxy CPU busy\" is the proxy's CPU time over the run's duration (one worker on a CPU "
        "of its own): near 100% the proxy set the rate, well below it the load side did. ")
TLS_ROUNDS = ("Each contender ran {rounds_tls} time(s), interleaved; its row is the run with the "
              "median CPU per {unit}, and the CPU cell lists every run's in run order; the rate "
              "cell is the median rate of the runs, followed by every run's.")
# Issue 26: TLS 1.3 and HTTP/2 towards clients. unit: what one wrk "request"
# is in the table (a handshake when each request has a connection of its own).
TLS_SCENARIOS = {
    "h": ("h) TLS 1.3, small responses, client keepalive", "request",
          "As a), over TLS 1.3 (ECDSA P-256 certificate; wrk over https, HTTP/1.1, 50 keepalive "
          "connections, so the handshakes are done before the measured run): the cost of TLS "
          "records on every request. " + BUSY + TLS_ROUNDS),
    "i": ("i) New TLS 1.3 connection per request, ECDSA P-256", "handshake",
          "wrk over https with `Connection: close`: every request opens a TCP connection and "
          "makes a full TLS 1.3 handshake (wrk resumes no session; X25519, ECDSA P-256 "
          "certificate), 50 connections in parallel. One request per handshake, so requests/s "
          "are handshakes/s and the CPU is the proxy's CPU time over the run divided by the "
          "handshakes (with the request each carries). \"Connections accepted\" is the "
          "machine's count of accepted TCP connections (/proc/net/snmp) per handshake: about 1.00 "
          "shows every request had a connection (and a handshake) of its own. " + BUSY +
          "wrk's own handshakes (OpenSSL 3.0, on the CPU it shares with the backend) cost more than "
          "the proxies', so wrk, not the proxy, sets handshakes/s here; \"handshakes per proxy CPU "
          "second\" (1 / CPU per handshake) is the rate one fully busy worker would reach. "
          + TLS_ROUNDS),
    "j": ("j) New TLS 1.3 connection per request, RSA 2048", "handshake",
          "As i), with an RSA 2048 certificate (an RSA-PSS signature per handshake instead of "
          "an ECDSA one). " + TLS_ROUNDS),
    "k": ("k) HTTP/2 over TLS (h2load)", "request",
          "h2load over TLS 1.3 with ALPN h2 (ECDSA P-256), {h2_conns} connections with "
          "{h2_streams} streams in flight on each (`h2load -c{h2_conns} -m{h2_streams}`), "
          "11-byte responses; HTTP/1.1 to the backend as in a). Latency percentiles from h2load's "
          "per-request log. \"Upstream connections\" are those the backend accepted during the "
          "run: with {h2_total} requests in flight, nginx (`keepalive 1024`), fulcrum and bare "
          "Pingora (`upstream_keepalive_pool_size: 1024`) keep up to 1,024 idle upstream connections "
          "here instead of 128, HAProxy without a count limit (README). " + BUSY + TLS_ROUNDS),
}


def sh(*cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip()
    except OSError as e:
        return f"unavailable ({e})"


def versions(args):
    repo = args.repo
    commit = sh("git", "-C", repo, "rev-parse", "--short=12", "HEAD")
    dirty = sh("git", "-C", repo, "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem_kb = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    return {
        "fulcrum": f"{sh(args.fulcrum, '--version')}, git {commit}"
        + (" (with uncommitted changes to src/)" if dirty else "")
        # Binaries given by --bin-dir may come from any commit: git names
        # the harness's checkout only.
        + (" (the harness's checkout; the binaries were given by --bin-dir)"
           if "--bin-dir" in args.build else "")
        + f", {sh('rustc', '--version')}; build: {args.build}",
        "nginx": sh("nginx", "-v").replace("nginx version: ", ""),
        "HAProxy": sh("haproxy", "-v").splitlines()[0],
        "wrk": sh("wrk", "-v").splitlines()[0].split(" Copyright")[0],
        "machine": f"{os.cpu_count()} CPUs ({cpu}), {mem_kb // 1024} MiB, "
        f"Linux {platform.release()}, {sh('sh', '-c', '. /etc/os-release; echo $PRETTY_NAME')}",
    }


def fmt(v, digits=2):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def ratio(v, base):
    return v / base if v is not None and base else None


def rx(r):
    return "—" if r is None else f"{r:.2f}×"


def table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# Repeated runs are summarised by the scenario's headline: CPU per request
# at saturation (a), p99 at the fixed rate (d).
MEDIAN_KEY = {"a": "cpu_ms_per_1k", "d": "p99_ms", **{s: "cpu_ms_per_1k" for s in "hijk"}}
# In the TLS scenarios the rate is a headline too (k's target is throughput):
# their rows show the median rate of the runs as well, with every run's.
MEDIAN_RATE = set("hijk")


def median_runs(rows):
    """Repeated runs of a contender in a scenario (a, d) become one row: the
    run with the median of the scenario's MEDIAN_KEY (the lower one of two
    middles), with every run's value of that key in `runs`, in run order."""
    groups = {}
    for r in rows:
        groups.setdefault((r["scenario"], r["contender"]), []).append(r)
    out = []
    for (scn, _), runs in groups.items():
        if len(runs) == 1:
            out.append(runs[0])
            continue
        key = MEDIAN_KEY.get(scn, "p99_ms")
        measured = sorted((r for r in runs if r.get(key) is not None), key=lambda r: r[key])
        row = dict(measured[(len(measured) - 1) // 2] if measured else runs[0])
        row["runs"] = (key, [r.get(key) for r in runs])
        # Errors of every run, not only the one the row shows.
        row["errors"] = sum(r.get("errors", 0) for r in runs)
        if scn in MEDIAN_RATE:
            rates = [r["rps"] for r in runs if r.get("rps") is not None]
            if rates:
                row["rps"] = sorted(rates)[(len(rates) - 1) // 2]
                row["rate_runs"] = ("rps", rates)
        out.append(row)
    return out


class Results:
    def __init__(self, path):
        self.rows = median_runs([json.loads(l) for l in open(path) if l.strip()])

    def get(self, scn, who):
        return next((r for r in self.rows if r["scenario"] == scn and r["contender"] == who), None)

    def scenario(self, scn):
        return [r for r in self.rows if r["scenario"] == scn]

    def ratio(self, scn, who, key, base="nginx"):
        r, b = self.get(scn, who), self.get(scn, base)
        if not r or not b or r.get("unavailable") or b.get("unavailable"):
            return None
        return ratio(r.get(key), b.get(key))


def cell(r, key, digits=2):
    """`key`'s value, followed by every run's when the row stands for several."""
    text = fmt(r[key], digits)
    for runs_key, runs in (r.get("runs", (None, None)), r.get("rate_runs", (None, None))):
        if runs_key == key:
            return text + f" ({' / '.join(fmt(v, digits) for v in runs)})"
    return text


def accepts_per_request(r):
    return fmt(r["tcp_accepts"] / r["requests"], 2) if r.get("tcp_accepts") is not None and r["requests"] else "—"


def upstream_connections(r):
    conns = r.get("backend_connections")
    return "—" if conns is None else f"{sum(conns.values()):,}"


def cpu_busy(r):
    """The proxy's CPU time over the run's wall time: near 100% when the
    proxy (one worker on its own CPU) was what limited the rate."""
    return f"{100 * r['cpu_util']:.0f}%" if r.get("cpu_util") is not None else "—"


def per_cpu_second(r):
    """Handshakes per second of the proxy's CPU time: the rate one fully busy
    worker would reach, when the client (its OpenSSL handshakes cost more than
    the server's) cannot keep the proxy busy."""
    cpu = r.get("cpu_ms_per_1k")
    return fmt(1e6 / cpu) if cpu else "—"


# Extra columns per scenario: (heading, value of a row).
EXTRA_COLUMNS = {
    "h": [("proxy CPU busy", cpu_busy)],
    "i": [("proxy CPU busy", cpu_busy), ("handshakes per proxy CPU second", per_cpu_second),
          ("connections accepted per handshake", accepts_per_request)],
    "j": [("proxy CPU busy", cpu_busy), ("handshakes per proxy CPU second", per_cpu_second),
          ("connections accepted per handshake", accepts_per_request)],
    "k": [("proxy CPU busy", cpu_busy), ("upstream connections", upstream_connections)],
}


def load_table(res, scn, unit="request"):
    base = res.get(scn, "nginx") or {}
    extra = EXTRA_COLUMNS.get(scn, [])
    rows = []
    for r in res.scenario(scn):
        direct = r["contender"] == "direct"
        rows.append([
            LABELS.get(r["contender"], r["contender"]),
            cell(r, "rps", 0), fmt(r["p50_ms"], 3), cell(r, "p99_ms", 3), fmt(r["p999_ms"], 3),
            cell(r, "cpu_ms_per_1k", 1) + (" (backend)" if direct else ""),
            fmt(r.get("sys_ms_per_1k"), 1),
            fmt(r["peak_rss_kb"] / 1024, 1),
            "—" if direct else rx(ratio(r["cpu_ms_per_1k"], base.get("cpu_ms_per_1k"))),
            rx(ratio(r["rps"], base.get("rps"))),
            rx(ratio(r["p99_ms"], base.get("p99_ms"))),
            *(f(r) for _, f in extra),
            r["errors"],
        ])
    if unit == "handshake":
        rate, cpu, rate_vs = "handshakes/s", "CPU ms per 1k handshakes", "handshakes/s vs nginx"
    else:
        rate, cpu, rate_vs = "requests/s", "CPU ms per 1k req", "req/s vs nginx"
    head = ["contender", rate, "p50 ms", "p99 ms", "p99.9 ms", cpu,
            "of which kernel", "peak RSS MB", "CPU vs nginx", rate_vs, "p99 vs nginx",
            *(h for h, _ in extra), "errors"]
    return table(head, rows)


def idle_table(res):
    base = res.get("e", "nginx") or {}
    rows = []
    for r in res.scenario("e"):
        per_conn = (r["rss_kb"] - r["baseline_rss_kb"]) * 1024 / r["conns"]
        rows.append([
            LABELS.get(r["contender"], r["contender"]), f"{r['conns']:,}", f"{r['still_open']:,}",
            fmt(r["rss_kb"] / 1024, 1), fmt(r["pss_kb"] / 1024, 1), fmt(r["baseline_rss_kb"] / 1024, 1),
            fmt(per_conn / 1024, 1), fmt(r["peak_rss_kb"] / 1024, 1),
            rx(ratio(r["rss_kb"], base.get("rss_kb"))),
        ])
    head = ["contender", "connections", "still open", "RSS MB", "PSS MB", "RSS before MB",
            "KB per connection", "peak RSS MB", "RSS vs nginx"]
    return table(head, rows)


def skew_table(res, scn):
    base = res.get(scn, "nginx") or {}
    rows = []
    for r in res.scenario(scn):
        label = SKEW_LABELS.get(r["contender"], LABELS.get(r["contender"], r["contender"]))
        if r.get("unavailable"):
            rows.append([label] + ["not available"] + ["—"] * 8)
            continue
        n = r["backend_requests"]
        rows.append([
            label, f"{100 * r['slow_share']:.2f}%", f"{n.get('fast', 0):,} / {n.get('slow', 0):,}",
            fmt(r["rps"]), fmt(r["p50_ms"], 3), fmt(r["p99_ms"], 3), fmt(r["p999_ms"], 3),
            fmt(r["cpu_ms_per_1k"], 1), rx(ratio(r["rps"], base.get("rps"))),
            rx(ratio(r["p99_ms"], base.get("p99_ms"))),
        ])
    head = ["contender", "share to slow backend", "fast / slow requests", "requests/s", "p50 ms",
            "p99 ms", "p99.9 ms", "CPU ms per 1k req", "req/s vs nginx", "p99 vs nginx"]
    return table(head, rows)


def verdict(ok):
    return "—" if ok is None else ("met" if ok else "**missed**")


def targets(res):
    """The targets table's rows, each with the scenario it measures."""
    rows = []

    def limit(name, r, lim):
        rows.append([name, rx(r), f"≤ {lim:.2f}×", verdict(None if r is None else r <= lim)])

    limit("CPU per request, small responses, keepalive (a)", res.ratio("a", "fulcrum", "cpu_ms_per_1k"), 1.5)
    limit("CPU per request, 64 KB responses (c)", res.ratio("c", "fulcrum", "cpu_ms_per_1k"), 0.9)
    limit("p99 at a fixed offered rate (d)", res.ratio("d", "fulcrum", "p99_ms"), 1.0)
    limit("RSS with 10,000 idle connections (e)", res.ratio("e", "fulcrum", "rss_kb"), 2.0)
    limit("Issue 26: CPU per request, TLS 1.3 keepalive (h)", res.ratio("h", "fulcrum", "cpu_ms_per_1k"), 1.2)
    limit("Issue 26: CPU per handshake, TLS 1.3, ECDSA P-256 (i)",
          res.ratio("i", "fulcrum", "cpu_ms_per_1k"), 1.2)
    limit("Issue 26: CPU per handshake, TLS 1.3, RSA 2048 (j)", res.ratio("j", "fulcrum", "cpu_ms_per_1k"), 1.2)
    limit("Issue 26: CPU per request, HTTP/2 (k)", res.ratio("k", "fulcrum", "cpu_ms_per_1k"), 1.2)
    r = res.ratio("k", "fulcrum", "rps")
    rows.append(["Issue 26: throughput, HTTP/2 (k)", rx(r), "≥ 1.00×", verdict(None if r is None else r >= 1.0)])
    lc, rr, ng = (res.get("f", w) for w in ("fulcrum-least_conn", "fulcrum-round_robin", "nginx"))
    if lc and rr and ng:
        ok = all(lc[k] < o[k] for o in (rr, ng) for k in ("slow_share", "p99_ms"))
        rows.append([
            "Skew (f): fulcrum least_conn sends less to the slow backend and has a lower p99 "
            "than round_robin and than nginx least_conn (2 workers)",
            f"share {100 * lc['slow_share']:.2f}% vs {100 * rr['slow_share']:.2f}% / "
            f"{100 * ng['slow_share']:.2f}%; p99 {lc['p99_ms']:.2f} vs {rr['p99_ms']:.2f} / {ng['p99_ms']:.2f} ms",
            "lower than both", verdict(ok)])
    for scn, how in (("f", "closed loop"), ("g", "fixed rate")):
        ng = res.get(scn, "nginx")
        for who in ("fulcrum-ewma", "fulcrum-ewma-1s"):
            ew = res.get(scn, who)
            name = f"Skew, {how} ({scn}), issue 9: {LABELS[who]}"
            if not (ew and ng) or ew.get("unavailable"):
                rows.append([name, "not available", "< 1%, < 5 ms", "—"])
                continue
            # At a fixed rate every contender serves the same requests/s
            # (within the pacing's jitter); closed-loop, throughput is a result.
            rps_min = 0.99 if scn == "g" else 1.0
            ok = ew["slow_share"] < 0.01 and ew["p99_ms"] < 5 and ew["rps"] >= rps_min * ng["rps"]
            rows.append([
                f"{name}: < 1% to the slow backend, p99 < 5 ms, "
                + ("the offered rate served" if scn == "g" else "throughput ≥ nginx least_conn"),
                f"share {100 * ew['slow_share']:.2f}%, p99 {ew['p99_ms']:.2f} ms, "
                f"req/s {ew['rps'] / ng['rps']:.2f}× nginx",
                "< 1%, < 5 ms, " + ("≥ 0.99×" if scn == "g" else "≥ 1.00×"), verdict(ok)])
    return rows


TARGETS_HEAD = ["target (issues 6, 9, 26)", "measured", "target", "verdict"]


def target_scenario(name):
    """The scenario a targets row measures: the last "(x)" in its name."""
    found = re.findall(r"\(([a-k])\)", name)
    return found[-1] if found else None


# Chart: (label, scenario, fulcrum's contender, key, target or None); lower
# is better except req/s.
CHART = [
    ("CPU/request, keepalive (a)", "a", "fulcrum", "cpu_ms_per_1k", 1.5),
    ("CPU/request, new conn. (b)", "b", "fulcrum", "cpu_ms_per_1k", None),
    ("CPU/request, 64 KB (c)", "c", "fulcrum", "cpu_ms_per_1k", 0.9),
    ("requests/s, keepalive (a)", "a", "fulcrum", "rps", None),
    ("p99 at fixed rate (d)", "d", "fulcrum", "p99_ms", 1.0),
    ("RSS, idle conns (e)", "e", "fulcrum", "rss_kb", 2.0),
    ("p99, skew, least_conn (f)", "f", "fulcrum-least_conn", "p99_ms", None),
    ("p99, skew at fixed rate, ewma (g)", "g", "fulcrum-ewma", "p99_ms", None),
    ("CPU/request, TLS keepalive (h)", "h", "fulcrum", "cpu_ms_per_1k", 1.2),
    ("CPU/handshake, ECDSA (i)", "i", "fulcrum", "cpu_ms_per_1k", 1.2),
    ("CPU/handshake, RSA 2048 (j)", "j", "fulcrum", "cpu_ms_per_1k", 1.2),
    ("CPU/request, HTTP/2 (k)", "k", "fulcrum", "cpu_ms_per_1k", 1.2),
    ("requests/s, HTTP/2 (k)", "k", "fulcrum", "rps", 1.0),
]
SERIES = [("fulcrum", (31, 119, 180)), ("HAProxy", (255, 127, 14))]
# Ratios are drawn on a log scale from 1.0 (nginx): 2x and 0.5x are equally far.
LOG_MIN, LOG_MAX = 0.25, 32.0


def chart_data(res):
    data = []
    for label, scn, who, key, target in CHART:
        vals = [res.ratio(scn, who, key), res.ratio(scn, "haproxy", key)]
        if not res.scenario(scn):
            label += ": not run"
        data.append((label, vals, target))
    return data


def chart_matplotlib(data, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=100)
    n = len(data)
    for s, (name, color) in enumerate(SERIES):
        for i, (_, vals, _) in enumerate(data):
            v = vals[s]
            if v is None:
                continue
            y = n - 1 - i + (0.2 if s == 0 else -0.2)
            ax.barh(y, v - 1, left=1, height=0.38, color=[c / 255 for c in color],
                    label=f"{name} / nginx" if i == 0 else None)
            ax.text(v * (1.04 if v >= 1 else 0.96), y, f"{v:.2f}×", va="center",
                    ha="left" if v >= 1 else "right", fontsize=8)
    for i, (_, _, target) in enumerate(data):
        if target:
            y = n - 1 - i
            ax.plot([target, target], [y - 0.45, y + 0.45], color="red", lw=2)
    ax.axvline(1.0, color="black", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xlim(LOG_MIN, LOG_MAX)
    ax.set_xticks([0.25, 0.5, 1, 2, 4, 8, 16, 32], ["0.25", "0.5", "1", "2", "4", "8", "16", "32"])
    ax.set_yticks(range(n))
    ax.set_yticklabels([d[0] for d in data][::-1])
    ax.set_xlabel("ratio to nginx in the same run, log scale (red: targets of issues 6 and 26)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


def chart_builtin(data, path, title):
    import math

    from tinypng import Canvas

    label_w, bar_w, row_h, top = 330, 520, 44, 70
    c = Canvas(label_w + bar_w + 40, top + row_h * len(data) + 50)
    span = math.log(LOG_MAX / LOG_MIN)

    def x_of(v):
        v = min(max(v, LOG_MIN), LOG_MAX)
        return label_w + bar_w * math.log(v / LOG_MIN) / span

    c.text(10, 10, title, scale=2)
    x = 10
    for name, color in SERIES:
        c.rect(x, 40, x + 14, 54, color)
        x = c.text(x + 20, 41, f"{name} / nginx", scale=2) + 30
    c.rect(x, 40, x + 4, 54, (220, 0, 0))
    c.text(x + 12, 41, "target", scale=2)
    one = x_of(1.0)
    for i, (label, vals, target) in enumerate(data):
        y = top + i * row_h
        c.text(10, y + 14, label, scale=2)
        for s, (_, color) in enumerate(SERIES):
            if vals[s] is None:
                continue
            y0, end = y + 4 + s * 18, x_of(vals[s])
            c.rect(min(one, end), y0, max(one, end) + 1, y0 + 15, color)
            text = f"{vals[s]:.2f}×"
            tx = end + 6 if vals[s] >= 1 else end - 6 - c.text_width(text, 2)
            c.text(tx, y0 + 1, text, scale=2)
        if target:
            c.rect(x_of(target) - 2, y, x_of(target) + 2, y + 40, (220, 0, 0))
    bottom = top + row_h * len(data)
    c.rect(one - 1, top - 6, one + 1, bottom, (0, 0, 0))
    for v in (0.25, 0.5, 1, 2, 4, 8, 16, 32):
        c.text(x_of(v) - c.text_width(f"{v:g}", 2) // 2, bottom + 8, f"{v:g}", scale=2)
    c.text(10, bottom + 8, "log scale, 1 = nginx", scale=2)
    c.save(path)


def lock_version(repo, crate):
    """A crate's version in the repository's Cargo.lock."""
    try:
        text = open(os.path.join(repo, "Cargo.lock")).read()
    except OSError:
        return "?"
    m = re.search(r'name = "' + re.escape(crate) + r'"\nversion = "([^"]+)"', text)
    return m.group(1) if m else "?"


def carried_over(old_md):
    """The sections of the BENCHMARKS.md being replaced, by scenario letter,
    with the run they came from, and its targets rows by name; for the
    scenarios this run did not measure."""
    sections, target_rows = {}, {}
    if not old_md:
        return sections, target_rows, None
    m = re.search(r"Generated by `([^`]*)` on ([^;]*);", old_md)
    origin = f"the run of {m.group(2)} (`{m.group(1)}`)" if m else "an earlier run"
    when = f"run of {m.group(2)}" if m else "an earlier run"
    parts = old_md.split("\n## ")
    for part in parts[1:]:
        head = part.split("\n", 1)[0]
        letter = re.match(r"([a-z])\) ", head)
        if letter:
            sections[letter.group(1)] = "## " + part.rstrip("\n")
        elif head.startswith("Targets"):
            for line in part.splitlines():
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                if line.startswith("| ") and len(cells) == 4 and not cells[0].startswith("target"):
                    if "(carried over" not in cells[1]:
                        cells[1] += f" (carried over: {when})"
                    target_rows[cells[0]] = cells
    return sections, target_rows, origin


CARRIED = "*Not measured by this run: carried over from "


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", required=True)
    ap.add_argument("--md", required=True)
    ap.add_argument("--png", required=True)
    ap.add_argument("--png-ref", required=True, help="the chart's path as linked from the markdown")
    ap.add_argument("--command", required=True)
    ap.add_argument("--build", default="not given", help="how the fulcrum binary was built")
    ap.add_argument("--settings", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--fulcrum", required=True)
    args = ap.parse_args()
    res = Results(args.results)
    settings = dict(kv.split("=", 1) for kv in args.settings.split())
    settings["load_average_at_end"] = open("/proc/loadavg").read().split()[0]
    v = versions(args)
    v["TLS"] = (f"fulcrum: rustls {lock_version(args.repo, 'rustls')} with aws-lc-rs "
                f"{lock_version(args.repo, 'aws-lc-rs')}; nginx and HAProxy: {sh('openssl', 'version')} "
                "(the system's library); h2load: "
                + sh("h2load", "--version").splitlines()[0].replace("h2load ", ""))
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    try:
        old_md = open(args.md).read()
    except OSError:
        old_md = ""
    old_sections, old_targets, origin = carried_over(old_md)
    measured = {r["scenario"] for r in res.rows}

    settings_text = ", ".join(f"{k.replace('_', ' ')} {val}" for k, val in settings.items())
    title = "fulcrum and HAProxy vs nginx (lower is better, except req/s)"
    data = chart_data(res)
    try:
        chart_matplotlib(data, args.png, title)
        drawn = "matplotlib"
    except ImportError:
        chart_builtin(data, args.png, title)
        drawn = "the harness's built-in PNG writer"

    # Targets of scenarios this run did not measure: the rows of the report
    # it replaces, when that has them.
    carried = {target_scenario(name) for name in old_targets} - measured
    target_rows = [row for row in targets(res) if target_scenario(row[0]) not in carried]
    target_rows += [row for name, row in old_targets.items() if target_scenario(name) in carried]
    order = "abcdefghijk"
    target_rows.sort(key=lambda row: order.find(target_scenario(row[0]) or "a"))

    fmt_args = dict(rate=settings.get("rate", "?"), rounds_a=settings.get("rounds_of_a", "1"),
                    rounds_d=settings.get("rounds_of_d", "1"), rounds_tls=settings.get("rounds_of_tls", "1"),
                    h2_conns=settings.get("h2load_connections", "?"),
                    h2_streams=settings.get("h2load_streams", "?"))
    try:
        fmt_args["h2_total"] = f"{int(fmt_args['h2_conns']) * int(fmt_args['h2_streams']):,}"
    except ValueError:
        fmt_args["h2_total"] = "?"
    sections = {}
    for scn, (head, text) in SCENARIOS.items():
        sections[scn] = [f"## {head}", "", text.format(**fmt_args), "", load_table(res, scn)]
    sections["e"] = [
        "## e) Idle keepalive connections",
        "",
        f"{settings.get('idle', '?')} client connections, each used for one request and then held "
        "idle; memory read after they were idle for a few seconds. RSS is summed over the proxy's "
        "processes (nginx: master and worker); PSS counts pages shared between them once.",
        "",
        idle_table(res),
    ]
    sections["f"] = [
        "## f) Skew: one of two backends adds 20 ms per request",
        "",
        "50 keepalive client connections; per-backend counts from the backends themselves. "
        "Two workers/threads per proxy: nginx keeps least_conn counts per worker, fulcrum shares "
        "them across threads. ewma and p2c rows appear when `fulcrum -t` accepts those selections. "
        "The percentiles are wrk's, corrected by wrk for coordinated omission: each 20 ms answer "
        "also counts as if the requests it held up had waited, so p99 stays near 20 ms until "
        "well under 1% go to the slow backend (see the README).",
        "",
        skew_table(res, "f"),
    ]
    sections["g"] = [
        "## g) Skew at a fixed offered rate",
        "",
        f"As f), at {settings.get('rate', '?')} requests/s (paced as in d): latency at equal load "
        "with a slow replica, where no proxy is short of CPU. round_robin is left out (with half "
        "the requests on the 20 ms backend it cannot keep up with the rate over 50 connections).",
        "",
        skew_table(res, "g"),
    ]
    for scn, (head, unit, text) in TLS_SCENARIOS.items():
        sections[scn] = [f"## {head}", "", text.format(unit=unit, **fmt_args), "",
                         load_table(res, scn, unit)]
    not_run = []
    for scn in list(sections):
        if scn in measured:
            continue
        not_run.append(scn)
        old = old_sections.get(scn)
        if old:
            lines = old.split("\n")
            if not any(l.startswith(CARRIED) for l in lines):
                lines[1:1] = ["", f"{CARRIED}{origin}, with that run's settings and machine; "
                              "its ratios are against nginx in that run.*"]
            sections[scn] = lines

    out = [
        "# Benchmarks: fulcrum vs nginx vs HAProxy",
        "",
        f"Generated by `{args.command}` on {when}; regenerate with the same command "
        "(see [deploy/bench/README.md](deploy/bench/README.md) for the method and how to read it). "
        "**Ratios against nginx in the same run are the headline**; absolute numbers on this "
        "shared 2-core machine vary from run to run.",
        "",
        *(f"- {k}: {val}" for k, val in v.items()),
        f"- settings: {settings_text}; one fresh proxy "
        "instance per run, 1 worker/thread each (2 in the skew scenarios); the proxy on its own CPU, "
        "wrk and the backend (fulcrum-demo-backend, release build) on the other",
    ]
    if not_run:
        out.append(f"- not measured by this run: {', '.join(not_run)}"
                   + (" (sections and targets rows carried over from the report this run replaced, "
                      "as marked; the chart has no bars for them)" if old_sections else ""))
    out += [
        "",
        f"![ratios to nginx]({args.png_ref})",
        "",
        f"Chart drawn with {drawn}.",
        "",
        "## Targets",
        "",
        table(TARGETS_HEAD, target_rows),
        "",
    ]
    for scn in sections:
        out += [*sections[scn], ""]
    with open(args.md, "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main()
