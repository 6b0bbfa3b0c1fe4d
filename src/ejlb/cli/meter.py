"""Per-interval rates from cumulative counters (sans-I/O: the caller supplies time and counters).

`perf`, `monitor` and `demo` feed it snapshots of Sender/Receiver stats; it returns one row per
interval and keeps every row for the summary and the optional plot. Counters going backwards (a
restarted peer) count as a fresh start instead of a negative rate.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Interval:
    t: float  # seconds since the first snapshot, at the end of the interval
    dt: float
    deltas: dict[str, int]

    def rate(self, key: str) -> float:
        return self.deltas.get(key, 0) / self.dt if self.dt > 0 else 0.0

    def gbps(self, key: str = "bytes") -> float:
        return self.rate(key) * 8 / 1e9


class RateMeter:
    """Totals, busy time and peaks are kept incrementally; only the newest `history` intervals are
    kept as rows (for the plot), so a perf run of any length holds bounded memory."""

    def __init__(self, keys: tuple[str, ...], history: int = 100_000):
        self.keys = tuple(keys)
        self.rows: deque[Interval] = deque(maxlen=history)
        self._t0: float | None = None
        self._last_t = 0.0
        self._last: dict[str, int] = {}
        self._total = dict.fromkeys(self.keys, 0)
        self._busy = dict.fromkeys(self.keys, 0.0)
        self._peak = dict.fromkeys(self.keys, 0.0)

    def feed(self, now: float, counters: Mapping[str, int]) -> Interval | None:
        """Record a snapshot; returns the interval since the previous one (None for the first)."""
        values = {k: int(counters.get(k, 0)) for k in self.keys}
        if self._t0 is None:
            self._t0, self._last_t, self._last = now, now, values
            return None
        deltas = {k: values[k] - self._last[k] if values[k] >= self._last[k] else values[k] for k in self.keys}
        row = Interval(t=now - self._t0, dt=max(now - self._last_t, 0.0), deltas=deltas)
        self._last_t, self._last = now, values
        for k, d in deltas.items():
            self._total[k] += d
            if d:
                self._busy[k] += row.dt
            self._peak[k] = max(self._peak[k], row.rate(k))
        self.rows.append(row)
        return row

    @property
    def elapsed(self) -> float:
        return (self._last_t - self._t0) if self._t0 is not None else 0.0

    def total(self, key: str) -> int:
        return self._total[key]

    def mean_rate(self, key: str) -> float:
        return self._total[key] / self.elapsed if self.elapsed > 0 else 0.0

    def active_rate(self, key: str) -> float:
        """Mean over the intervals in which `key` moved (a receiver's idle wait left out)."""
        return self._total[key] / self._busy[key] if self._busy[key] > 0 else 0.0

    def peak_rate(self, key: str) -> float:
        return self._peak[key]


def save_plot(meter: RateMeter, path: str, title: str, key: str = "bytes") -> None:
    """Gb/s and events/s per interval as a PNG (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r.t for r in meter.rows]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(t, [r.gbps(key) for r in meter.rows], marker=".", label="Gb/s")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("Gb/s")
    ax.set_title(title)
    if "events" in meter.keys:
        ax2 = ax.twinx()
        ax2.plot(t, [r.rate("events") for r in meter.rows], color="tab:orange", marker=".", label="events/s")
        ax2.set_ylabel("events/s")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
