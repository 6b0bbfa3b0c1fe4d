"""Prometheus view of a data plane's counters, read from the backend at scrape time.

    registry.register(CountersCollector(backend))

exposes
    ejlb_dataplane_global_total{counter}            drop_parse_fail, drop_not_lb
    ejlb_dataplane_lb_total{lb, counter}            rx_packets, rx_bytes, rx_v2, rx_v3, drop_*
    ejlb_dataplane_member_total{lb, member, counter}  tx_packets, tx_bytes
    ejlb_dataplane_node_up{node}                    1 while an LB node holds the current tables
    ejlb_dataplane_node_reloads_total{node}         full reloads (first load, restarts, failures)
    ejlb_dataplane_node_failures_total{node}        failed calls
(`lb` is the data-plane LB instance id, `member` the member-table id; node metrics only for a
backend of LB nodes, `snp4`.)
"""
from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

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
        out = [glob, lb, member]
        health = getattr(self.backend, "health", None)
        if health is not None:
            up = GaugeMetricFamily("ejlb_dataplane_node_up", "LB node holds the current tables", labels=["node"])
            reloads = CounterMetricFamily("ejlb_dataplane_node_reloads", "Full table reloads of an LB node", labels=["node"])
            failures = CounterMetricFamily("ejlb_dataplane_node_failures", "Failed calls to an LB node", labels=["node"])
            for h in health():
                up.add_metric([h.address], int(h.up))
                reloads.add_metric([h.address], h.reloads)
                failures.add_metric([h.address], h.failures)
            out += [up, reloads, failures]
        return out

    def describe(self):
        return []  # dynamic label sets: no pre-registration check
