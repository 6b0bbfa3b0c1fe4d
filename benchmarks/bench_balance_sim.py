"""Balancing quality in the deterministic simulator (`ejlb.control.sim`): the real control-plane
code on a simulated clock, workers as fluid queues. Same scenarios as bench_balance.py (real
processes), each with three variants side by side:

  capacity   ejlb's balancer (default), workers with ejlb's defaults (no min/max factor)
  previous   the additive control-signal rule, ejlb's PID (kp 200, ki 100), minFactor 0.5 / maxFactor 2
  deployed   the same rule with E2SAR's zero PID gains (no feedback), minFactor 0.5 / maxFactor 2

    python benchmarks/bench_balance_sim.py [--plot DIR] [--json FILE] [--scenarios hetero slowdown ...]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace

from ejlb.control.sim import Scenario, WorkerSpec, simulate, summarize

QUEUE = 150
BASE = (500.0, 250.0, 125.0)  # events/s: 2, 4 and 8 ms per event


def scenarios(duration: float) -> dict[str, tuple[Scenario, list[float]]]:
    mid = duration / 2
    w = [WorkerSpec(c, queue=QUEUE) for c in BASE]
    return {
        "hetero": (Scenario(w, duration=duration), []),
        "slowdown": (Scenario([w[0], w[1], replace(w[2], speed=((mid, BASE[2] / 4),))], duration=duration), [mid]),
        "speedup": (Scenario([w[0], w[1], replace(w[2], speed=((duration, BASE[2] * 4),))], duration=2 * duration),
                    [duration]),
        "join": (Scenario([replace(w[0], weight=4), replace(w[1], weight=2), replace(w[2], weight=1, join=mid)],
                          rate=0.75 * sum(BASE), duration=duration), [mid]),
        "leave": (Scenario([w[0], w[1], replace(w[2], leave=mid)], load=0.6, duration=duration), [mid]),
        "steady": (Scenario([WorkerSpec(300.0, queue=QUEUE)] * 3, duration=2 * duration), []),
        "overload": (Scenario(w, load=1.2, duration=duration), []),
    }


VARIANTS = {
    "capacity": dict(balancer="capacity", worker={}),
    "previous": dict(balancer="signal", worker=dict(pid=(200.0, 100.0, 0.0), min_factor=0.5, max_factor=2.0)),
    "deployed": dict(balancer="signal", worker=dict(pid=(0.0, 0.0, 0.0), min_factor=0.5, max_factor=2.0)),
}


def variant(sc: Scenario, name: str) -> Scenario:
    v = VARIANTS[name]
    return replace(sc, balancer=v["balancer"], workers=[replace(w, **v["worker"]) for w in sc.workers])


def _fmt_epochs(phases) -> str:
    return " / ".join("-" if p["epochs_to_band"] is None else str(p["epochs_to_band"]) for p in phases)


def plot(path: str, title: str, runs: dict, changes: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, len(runs), figsize=(5 * len(runs), 8), sharex=True, squeeze=False)
    for col, (name, trace) in enumerate(runs.items()):
        a = trace.arrays()
        for i in range(a["slot_share"].shape[1]):
            line, = axes[0][col].plot(a["t"], a["slot_share"][:, i], label=f"worker {i}")
            axes[0][col].plot(a["t"], a["capacity_share"][:, i], "--", color=line.get_color(), alpha=0.6)
            axes[1][col].plot(a["t"], a["fill"][:, i], color=line.get_color())
            axes[2][col].plot(a["t"], a["lost"][:, i], color=line.get_color())
        axes[0][col].set_title(f"{title}: {name}")
        axes[0][col].set_ylabel("slot share (dashed: capacity share)")
        axes[1][col].set_ylabel("queue fill")
        axes[2][col].set_ylabel("events lost (cumulative)")
        axes[2][col].set_xlabel("s")
        for ax in axes[:, col]:
            for c in changes:
                ax.axvline(c, color="grey", lw=0.8, ls=":")
        axes[0][col].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--scenarios", nargs="+", default=list(scenarios(60.0)))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--plot", metavar="DIR")
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args(argv)
    table, raw = [], {}
    for name, (sc, changes) in scenarios(a.duration).items():
        if name not in a.scenarios:
            continue
        runs = {}
        for v in a.variants:
            trace = runs[v] = simulate(variant(sc, v))
            s = summarize(trace, changes)
            raw[f"{name}/{v}"] = s
            sent = sc.event_rate * sc.duration
            table.append([name, v, f"{s['lost']:.0f}", f"{s['lost'] / sent:.2%}",
                          " / ".join(f"{p['lost']:.0f}" for p in s["phases"]), _fmt_epochs(s["phases"]),
                          " / ".join(f"{p['in_band']:.0%}" for p in s["phases"]), f"{s['fill_spread']:.2f}", f"{s['moves_per_epoch']:.0f}",
                          f"{s['changes_per_min_steady']:.1f}"])
        if a.plot:
            plot(f"{a.plot}/sim_{name}.png", name, runs, changes)
    head = ["scenario", "variant", "lost", "lost %", "lost per phase", "epochs to ±10 %", "in band", "fill spread",
            "moves/epoch", "changes/min (steady)"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for row in table:
        print("| " + " | ".join(row) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(raw, f, indent=1, default=lambda x: None if isinstance(x, float) and math.isnan(x) else x)
    return 0


if __name__ == "__main__":
    sys.exit(main())
