"""What the dashboard charts beyond the Timeseries RPC: the data plane's counters and the workers'
event counters of each reservation, sampled once a period into a bounded ring per reservation.

The gRPC Timeseries holds the per-worker control state (fill, slots, capacity); the data plane's
counters live in the backend and the workers' totals only as the latest report, so neither has a
history. Points hold cumulative counters; the page turns consecutive points into rates (a counter
that went down — a restarted worker or data plane — starts a new run there).

`sample` reads the service under its lock and takes the counters and the clock as arguments.
"""
from __future__ import annotations

import collections

from ejlb.control.state import TOTALS
from ejlb.dataplane.tables import LB_COUNTERS, Counters

POINTS = 300  # per reservation: 5 minutes at the default 1 s period
WORKER_TOTALS = ("total_events_reassembled", "total_events_dequeued", "total_event_enqueue_err",
                 "total_events_reassembly_err")
_TOTAL_INDEX = tuple(TOTALS.index(k) for k in WORKER_TOTALS)


def sample(service, counters: Counters, now: float, by_node: dict[str, Counters] | None = None) -> dict[int, dict]:
    """One point per reservation: {t (ms), lb: {LB counter: n}, members: {sessionId: tx_packets},
    workers: {total: n summed over live workers}, nodes: {node address: rx_packets}} (`nodes` only
    for a data plane of LB nodes: `by_node`, the counters of each node that answered)."""
    out = {}
    with service.lock:
        for res in service.reservations.values():
            lb = counters.lb.get(res.lb.lb_id) or dict.fromkeys(LB_COUNTERS, 0)
            members = {str(s.id): counters.member.get((res.lb.lb_id, s.member_id), {}).get("tx_packets", 0)
                       for s in res.live_sessions}
            workers = dict.fromkeys(WORKER_TOTALS, 0)
            for s in res.live_sessions:
                for k, i in zip(WORKER_TOTALS, _TOTAL_INDEX):
                    workers[k] += s.totals[i]
            out[res.id] = {"t": int(now * 1000), "lb": dict(lb), "members": members, "workers": workers}
            if by_node is not None:
                out[res.id]["nodes"] = {a: c.lb.get(res.lb.lb_id, {}).get("rx_packets", 0) for a, c in by_node.items()}
    return out


class History:
    """Bounded rings of points, one per reservation; a freed reservation's ring goes with it."""

    def __init__(self, points: int = POINTS):
        self.points = points
        self._rings: dict[int, collections.deque] = {}

    def add(self, points: dict[int, dict]) -> None:
        for rid in [r for r in self._rings if r not in points]:
            del self._rings[rid]
        for rid, p in points.items():
            self._rings.setdefault(rid, collections.deque(maxlen=self.points)).append(p)

    def get(self, rid: int) -> list[dict]:
        return list(self._rings.get(rid, ()))
