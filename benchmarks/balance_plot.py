"""Plots of bench_balance.py runs: one PNG per scenario, one row of panels per variant.

Panels: slot share per worker over time (solid) against its capacity share (dashed, same colour);
reported queue fill per worker; cumulative events lost per worker (queue overflow + reassembly).
A vertical line marks each change (speed change, join, leave).

    python benchmarks/balance_plot.py results.json plots/     # from bench_balance.py --json
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_balance import capacities_at  # noqa: E402

from ejlb.wire import CALENDAR_SLOTS  # noqa: E402


def _capacity_share_steps(raw: dict, end: float, start: float) -> dict[str, tuple[list, list]]:
    """Per worker: step function (times, shares) of its capacity share, from `start` (the first poll)."""
    times = sorted({t for steps in raw["capacity"].values() for t, _ in steps if t > start} | {start, end})
    out: dict[str, tuple[list, list]] = {n: ([], []) for n in raw["capacity"]}
    for t in times:
        caps = capacities_at(raw, t)
        total = sum(caps.values()) or 1.0
        for name in out:
            out[name][0].append(t)
            out[name][1].append(caps.get(name, 0.0) / total if name in caps else float("nan"))
    return out


def plot_scenario(runs: list[dict], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({n for r in runs for n in r["capacity"]} | {n for r in runs for n in r["workers"]})
    colours = {n: f"C{i}" for i, n in enumerate(names)}
    fig, axes = plt.subplots(len(runs), 3, figsize=(15, 3.2 * len(runs)), squeeze=False, sharex=True)
    for row, raw in zip(axes, runs):
        end = raw.get("end", 0.0)
        samples = [s for s in raw["status"] if "epoch" in s]
        ax_share, ax_fill, ax_lost = row
        steps = _capacity_share_steps(raw, max(end, max((s["t"] for s in samples), default=end)),
                                      min((s["t"] for s in samples), default=0.0))
        for name in names:
            c = colours[name]
            ts = [s["t"] for s in samples]
            ax_share.plot(ts, [s["workers"][name]["slots"] / CALENDAR_SLOTS if name in s["workers"] else float("nan")
                               for s in samples], color=c, label=name)
            if name in steps:
                ax_share.step(*steps[name], where="post", color=c, linestyle="--", linewidth=1)
            ax_fill.plot(ts, [s["workers"][name]["fill"] * 100 if name in s["workers"] else float("nan")
                              for s in samples], color=c, label=name)
            reps = raw["workers"].get(name, [])
            ax_lost.plot([r["t"] for r in reps], [r.get("enqueue_err", 0) + r.get("reassembly_err", 0) for r in reps],
                         color=c, label=name)
        title = f"{raw['scenario']} / {raw['variant']} ({raw['balancer']})"
        if raw.get("error"):
            title += " — ERROR"
        ax_share.set_title(f"{title}: slot share (— ) vs capacity share (--)", fontsize=9)
        ax_fill.set_title("reported queue fill %", fontsize=9)
        ax_lost.set_title("events lost, cumulative", fontsize=9)
        ax_share.set_ylim(0, 1)
        top = max((r.get("enqueue_err", 0) + r.get("reassembly_err", 0) for n in names
                   for r in raw["workers"].get(n, [])), default=0)
        ax_lost.set_ylim(0, max(1.0, top * 1.05))
        ax_fill.set_ylim(0, 105)
        for ax in row:
            for ch in raw.get("changes", []):
                ax.axvline(ch["t"], color="k", linestyle=":", linewidth=1)
            ax.axvline(0, color="grey", linewidth=0.5)  # first event sent
            ax.axvline(end, color="grey", linewidth=0.5)  # last event sent
            ax.grid(alpha=0.3)
        ax_share.legend(fontsize=7, loc="upper right")
    for ax in axes[-1]:
        ax.set_xlabel("s since the first event")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_all(raws: list[dict], directory: str) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    by_scenario: dict[str, list[dict]] = {}
    for raw in raws:
        by_scenario.setdefault(raw["scenario"], []).append(raw)
    return [plot_scenario(runs, os.path.join(directory, f"balance_{name}.png")) for name, runs in by_scenario.items()]


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: balance_plot.py RESULTS.json DIR")
    with open(sys.argv[1]) as f:
        data = json.load(f)
    for p in plot_all(data["runs"], sys.argv[2]):
        print(p)
