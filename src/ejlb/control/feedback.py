"""Worker weights from feedback. Pure.

Deployed rule (spec, "Weights"): a worker starts at 1000 × its registered weight; every controller
tick its last control signal is *added*, then all weights are rescaled to mean 1000.

Option `fill_gain` (ejlb's addition, off by default): workers whose control signal is zero — e.g.
E2SAR receivers with the default all-zero PID gains — get a proportional step on their reported
queue fill instead: `w += fill_gain · 1000 · (mean_fill − fill)`. A worker fuller than the average
loses weight, an emptier one gains, so slower workers receive fewer slots without any PID tuning.
Workers that do send a control signal keep the deployed rule untouched.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

BASE = 1000.0
MIN_WEIGHT = 1.0  # keeps a ready worker in the calendar however negative its signal


@dataclass(frozen=True)
class Report:
    weight: float  # current dynamic weight (starts at BASE × registered weight)
    control_signal: float
    fill: float  # 0..1


def initial_weight(registered: float) -> float:
    return BASE * (registered if registered > 0 else 1.0)


def step(reports: Sequence[Report], fill_gain: float = 0.0) -> list[float]:
    """One tick of the weight update for the ready workers of one reservation."""
    if not reports:
        return []
    return step_arrays([r.weight for r in reports], [r.control_signal for r in reports],
                       [r.fill for r in reports], fill_gain).tolist()


def step_arrays(weights, signals, fills, fill_gain: float = 0.0) -> np.ndarray:
    """`step` on parallel sequences (what the controller uses: no per-worker objects)."""
    w = np.array(weights, dtype=np.float64)
    if w.size == 0:
        return w
    signal = np.nan_to_num(np.asarray(signals, dtype=np.float64))
    w += signal
    if fill_gain:
        fill = np.clip(np.nan_to_num(np.asarray(fills, dtype=np.float64)), 0.0, 1.0)
        w += np.where(signal == 0, fill_gain * BASE * (fill.mean() - fill), 0.0)
    w = np.maximum(w, MIN_WEIGHT)
    return w * (BASE / w.mean())
