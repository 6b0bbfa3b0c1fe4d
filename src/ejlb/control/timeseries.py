"""Timeseries of the LoadBalancer service: scalar series the controller records each tick, and
per-session series cut from each reservation's per-tick `HistoryRow` snapshots.

Mixed into `ControlService` (service.py): the methods use its state, store, clock and lock,
and its authentication and resolution helpers; RPC methods take the caller's bearer token first.
"""
from __future__ import annotations

import collections
import fnmatch
from dataclasses import dataclass
from typing import Sequence

import numpy as np

SERIES_POINTS = 600  # per scalar timeseries: 10 minutes at the default period

SESSION_SERIES = (  # (name, HistoryRow field, unit, float?)
    ("fillPercent", "fill", "fraction", True),
    ("controlSignal", "control_signal", "", True),
    ("slotsAssigned", "slots", "slots", False),
    ("capacityEstimate", "capacity", "events/s", True),  # capacity balancer: measured, or a lower bound
)


@dataclass
class Series:
    unit: str
    is_float: bool
    points: collections.deque  # (ms, value)


class TimeseriesHandlers:
    def record(self, name: str, t: float, value, unit: str, is_float: bool) -> None:
        s = self.series.get(name)
        if s is None:
            s = self.series[name] = Series(unit, is_float, collections.deque(maxlen=SERIES_POINTS))
        s.points.append((int(t * 1000), value))

    def _drop_series(self, prefix: str) -> None:
        for name in [n for n in self.series if n.startswith(prefix)]:
            del self.series[name]

    def timeseries(self, secret: str, selectors: Sequence[str], since: float | None) -> list[tuple[str, Series, list]]:
        """Series matching any selector (shell-style patterns, e.g. '/lb/3/session/*/fillPercent'),
        restricted to reservations the caller may read. Per-session series are cut from the
        per-tick snapshots of each reservation."""
        with self.lock:
            caller = self.authenticate(secret)
            since_ms = int(since * 1000) if since is not None else None
            match = lambda name: not selectors or any(fnmatch.fnmatchcase(name, sel) for sel in selectors)  # noqa: E731
            out = []
            for res in sorted(self.readable(caller), key=lambda r: r.id):
                prefix = f"/lb/{res.id}/"
                for name, s in sorted(self.series.items()):
                    if name.startswith(prefix) and match(name):
                        out.append((name, s, [p for p in s.points if since_ms is None or p[0] >= since_ms]))
                snaps = [h for h in res.history if since_ms is None or h.ms >= since_ms]
                sids = sorted({int(i) for h in snaps for i in h.session_ids})
                for metric, column, unit, is_float in SESSION_SERIES:
                    for sid in sids:
                        name = f"{prefix}session/{sid}/{metric}"
                        if not match(name):
                            continue
                        pts = []
                        for h in snaps:
                            idx = np.flatnonzero(h.session_ids == sid)
                            if idx.size:
                                v = getattr(h, column)[idx[0]]
                                pts.append((h.ms, float(v) if is_float else int(v)))
                        out.append((name, Series(unit, is_float, collections.deque()), pts))
            return out
