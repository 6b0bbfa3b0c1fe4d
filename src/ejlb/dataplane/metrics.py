"""Prometheus view of a data plane's counters, read from the backend at scrape time.

    registry.register(CountersCollector(backend))

exposes
    ejlb_dataplane_global_total{counter}            drop_parse_fail, drop_not_lb
    ejlb_dataplane_lb_total{lb, counter}            rx_packets, rx_bytes, rx_v2, rx_v3, drop_*
    ejlb_dataplane_member_total{lb, member, counter}  tx_packets, tx_bytes
(`lb` is the data-plane LB instance id, `member` the member-table id.)
"""
from __future__ import annotations

from prometheus_client.core import CounterMetricFamily

from ejlb.dataplane.tables import Backend


class CountersCollector:
    def __init__(self, backend: Backend):
        self.backend = backend

    def collect(self):
        c = self.backend.counters()
        glob = CounterMetricFamily("ejlb_dataplane_global", "Data-plane drops before an LB is known", labels=["counter"])
        for name, value in c.glob.items():
            glob.add_metric([name], value)
        lb = CounterMetricFamily("ejlb_dataplane_lb", "Per-LB data-plane counters", labels=["lb", "counter"])
        for lb_id, counters in sorted(c.lb.items()):
            for name, value in counters.items():
                lb.add_metric([str(lb_id), name], value)
        member = CounterMetricFamily("ejlb_dataplane_member", "Per-member data-plane counters",
                                     labels=["lb", "member", "counter"])
        for (lb_id, member_id), counters in sorted(c.member.items()):
            for name, value in counters.items():
                member.add_metric([str(lb_id), str(member_id), name], value)
        return [glob, lb, member]

    def describe(self):
        return []  # dynamic label sets: no pre-registration check
