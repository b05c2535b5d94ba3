#!/usr/bin/env python3
"""Draws the soak chart: RSS, open fds, and requests per 10 s (ok and
failed) over time, with the fault events marked.

    chart.py DIR OUT.png

DIR holds samples.csv (unix_s,pid,rss_kb,fds), load.csv (from load.py)
and events.csv (unix_s,event). Needs matplotlib (run.sh installs it in a
virtualenv).
"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def main():
    d, out = sys.argv[1], sys.argv[2]
    samples = rows(f"{d}/samples.csv")
    load = rows(f"{d}/load.csv")
    events = rows(f"{d}/events.csv")
    t0 = float(samples[0]["unix_s"])

    def minutes(t):
        return (float(t) - t0) / 60

    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True)
    st = [minutes(s["unix_s"]) for s in samples]
    ax1.plot(st, [int(s["rss_kb"]) / 1024 for s in samples], color="tab:blue")
    ax1.set_ylabel("RSS (MiB)")
    ax1.set_ylim(bottom=0)
    ax2.plot(st, [int(s["fds"]) for s in samples], color="tab:orange")
    ax2.set_ylabel("open fds")
    ax2.set_ylim(bottom=0)

    # Requests per 10 s bucket.
    buckets = {}
    for r in load:
        b = int(float(r["unix_s"]) - t0) // 10
        acc = buckets.setdefault(b, [0, 0, 0])
        acc[0] += int(r["ok"])
        acc[1] += int(r["failed_idempotent"])
        acc[2] += int(r["failed_non_idempotent"])
    keys = sorted(buckets)
    bt = [k * 10 / 60 for k in keys]
    ax3.plot(bt, [buckets[k][0] for k in keys], color="tab:blue", label="ok")
    ax3.plot(bt, [buckets[k][1] for k in keys], color="tab:red", label="failed idempotent")
    ax3.plot(bt, [buckets[k][2] for k in keys], color="tab:orange", label="failed non-idempotent (POST)")
    ax3.set_ylabel("requests / 10 s")
    ax3.set_yscale("symlog", linthresh=1)
    ax3.set_ylim(bottom=0)
    ax3.set_xlabel("minutes")
    # Faults: blackholes as shaded spans, reloads and upgrades as lines,
    # backend kills as ticks along the bottom of the request plot.
    blackhole_start = None
    labelled = set()

    def label(kind):
        if kind in labelled:
            return None
        labelled.add(kind)
        return kind

    for e in events:
        t = minutes(e["unix_s"])
        kind = e["event"].split(" ")[0]
        if kind == "blackhole":
            blackhole_start = t
        elif kind == "unblackhole" and blackhole_start is not None:
            for ax in (ax1, ax2, ax3):
                ax.axvspan(blackhole_start, t, color="0.85", zorder=0,
                           label=label("backend d blackholed") if ax is ax1 else None)
            blackhole_start = None
        elif kind == "reload":
            for ax in (ax1, ax2, ax3):
                ax.axvline(t, color="tab:green", linestyle=":", linewidth=1,
                           label=label("reload (SIGHUP)") if ax is ax1 else None)
        elif kind == "upgraded" or kind == "upgrade-failed":
            for ax in (ax1, ax2, ax3):
                ax.axvline(t, color="tab:purple", linewidth=1.2,
                           label=label("upgrade") if ax is ax1 else None)
        elif kind == "kill":
            ax3.plot([t], [0.3], marker="|", color="tab:red", markersize=8,
                     label=label("backend killed"), linestyle="none")
    ax1.legend(loc="lower right", fontsize=8, ncol=3)
    ax3.legend(loc="center right", fontsize=8)

    total_ok = sum(int(r["ok"]) for r in load)
    f_idem = sum(int(r["failed_idempotent"]) for r in load)
    f_non = sum(int(r["failed_non_idempotent"]) for r in load)
    fig.suptitle(
        f"fulcrum soak: {minutes(samples[-1]['unix_s']):.0f} min, {total_ok + f_idem + f_non} requests, "
        f"{f_idem} failed idempotent, {f_non} failed POST"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=90)


if __name__ == "__main__":
    main()
