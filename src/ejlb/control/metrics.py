"""Prometheus metrics of the control plane, on a registry of its own (several control planes can
live in one process, e.g. in tests)."""
from __future__ import annotations

import bisect
import threading

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from ejlb.control.capacity import WORKER_HEALTH
from ejlb.control.controller import Controller, spread
from ejlb.control.epochs import OUTCOMES

STATS = ("min", "avg", "max", "stddev")
RPC_BUCKETS = (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0)
SYNC_OUTCOMES = ("rejected_source", *OUTCOMES)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.sessions = Gauge("ejlb_lb_active_sessions", "Registered, not removed worker sessions", ["lb"], registry=r)
        self.ready = Gauge("ejlb_lb_ready_sessions", "Sessions that get slots", ["lb"], registry=r)
        self.boundary = Gauge("ejlb_lb_epoch_boundary", "First tick of the newest epoch", ["lb"], registry=r)
        self.epoch = Gauge("ejlb_lb_epoch", "Epochs started by the reservation", ["lb"], registry=r)
        self.slots = Gauge("ejlb_lb_slots", "Slots per ready worker", ["lb", "stat"], registry=r)
        self.fill = Gauge("ejlb_lb_fill", "Reported worker queue fill (0..1)", ["lb", "stat"], registry=r)
        self.moves = Gauge("ejlb_lb_slots_moved", "Slots that changed owner in the newest epoch", ["lb"], registry=r)
        self.health = Gauge("ejlb_lb_worker_health_issues", "Ready workers with a health issue, by type "
                            "(worker_overflowing, worker_overflow_at_floor)", ["lb", "type"], registry=r)
        self.sync = Gauge("ejlb_lb_sync_packets", "Sync datagrams of the reservation by outcome (accepted, "
                          "restarted, rejected_source / _rate / _jump)",
                          ["lb", "outcome"], registry=r)
        self.prediction_error = Gauge("ejlb_lb_prediction_error", "Last sync event number minus its "
                                      "prediction from the samples before it (ticks)", ["lb"], registry=r)
        self.sync_malformed = Gauge("ejlb_sync_malformed", "Sync datagrams that did not decode (all LBs)",
                                    registry=r)
        self.rpcs = RpcStats(RPC_BUCKETS)  # ejlb_rpc_total{method,code}, ejlb_rpc_seconds{method}
        r.register(self.rpcs)
        self.tick_seconds = Histogram("ejlb_controller_tick_seconds", "Controller tick duration", registry=r,
                                      buckets=(1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.05, 0.1, 0.3, 1.0))
        self._lbs: set[str] = set()

    def rpc(self, method: str, code, seconds: float) -> None:
        self.rpcs.observe(method, code, seconds)

    def observe_tick(self, controller: Controller) -> None:
        self.tick_seconds.observe(controller.last_tick_s)
        live = set()
        for rid, st in controller.stats.items():
            if rid not in controller.service.reservations:
                continue
            lb = str(rid)
            live.add(lb)
            self.sessions.labels(lb).set(st.active_sessions)
            self.ready.labels(lb).set(st.ready_sessions)
            self.boundary.labels(lb).set(st.boundary)
            self.epoch.labels(lb).set(st.epoch)
            self.moves.labels(lb).set(st.moves)
            res = controller.service.reservations[rid]
            for outcome in SYNC_OUTCOMES:
                self.sync.labels(lb, outcome).set(res.sync_outcomes[outcome])
            if res.prediction_error is not None:
                self.prediction_error.labels(lb).set(res.prediction_error)
            for kind in WORKER_HEALTH:
                self.health.labels(lb, kind).set(st.health[kind])
            for k, v in spread(st.slots).items():
                self.slots.labels(lb, k).set(v)
            for k, v in spread(st.fills).items():
                self.fill.labels(lb, k).set(v)
        for lb in self._lbs - live:  # freed reservations leave no stale series
            for g, labels in [(g, (lb,)) for g in (self.sessions, self.ready, self.boundary, self.epoch, self.moves,
                                                   self.prediction_error)] \
                    + [(g, (lb, k)) for g in (self.slots, self.fill) for k in STATS] \
                    + [(self.sync, (lb, k)) for k in SYNC_OUTCOMES] \
                    + [(self.health, (lb, k)) for k in WORKER_HEALTH]:
                try:
                    g.remove(*labels)
                except KeyError:
                    pass
        self._lbs = live

    def text(self) -> bytes:
        return generate_latest(self.registry)


class RpcStats:
    """Every RPC's outcome and handling time as plain numbers under one lock, exposed at scrape time
    as the `ejlb_rpc` counter and `ejlb_rpc_seconds` histogram. prometheus_client's own counter and
    histogram take three locks and ~1.7 µs per call: a sixth of a state report's handling."""

    def __init__(self, buckets: tuple[float, ...]):
        self.bounds = tuple(buckets)  # ascending; +Inf is implied
        self._lock = threading.Lock()
        self._counts: dict[tuple, int] = {}  # (method, status code) -> calls
        self._hist: dict[str, list] = {}  # method -> [count per bucket (last: +Inf), sum of seconds]

    def observe(self, method: str, code, seconds: float) -> None:
        """`code`: a grpc.StatusCode (named at scrape time: an enum's .name costs more than the rest)."""
        i = bisect.bisect_left(self.bounds, seconds)  # first bucket with seconds <= le
        with self._lock:
            key = (method, code)
            self._counts[key] = self._counts.get(key, 0) + 1
            h = self._hist.get(method)
            if h is None:
                h = self._hist[method] = [[0] * (len(self.bounds) + 1), 0.0]
            h[0][i] += 1
            h[1] += seconds

    def collect(self):
        with self._lock:
            counts = dict(self._counts)
            hist = {m: (list(b), total) for m, (b, total) in self._hist.items()}
        calls = CounterMetricFamily("ejlb_rpc", "RPCs by method and status code", labels=["method", "code"])
        for (method, code), n in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1].name)):
            calls.add_metric([method, code.name], n)
        yield calls
        seconds = HistogramMetricFamily("ejlb_rpc_seconds", "RPC handling time", labels=["method"])
        for method, (per_bucket, total) in sorted(hist.items()):
            cumulative, buckets = 0, []
            for le, n in zip([*map(floatToGoString, self.bounds), "+Inf"], per_bucket):
                cumulative += n
                buckets.append((le, cumulative))
            seconds.add_metric([method], buckets, total)
        yield seconds
