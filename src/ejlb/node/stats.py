"""Data-plane counters <-> the SmartNIC API's pipeline statistics, under the names udplbd2 reads.

    metrics(counters)       -> [(name, {index: value})], every metric a node reports
    counters(metrics)       -> Counters, what a control plane reads back (the inverse, summed)
    selected(filter, ...)   -> whether a StatsMetricFilter takes one (name, index) value

Index conventions (docs/smartnic-p4.md): `rx_rslt_counter` by result bucket, `lb_ctx_*` by LB id,
`lb_mbr_*` by member id. Member ids are per LB in ejlb, one space in the P4, so the deployed names
carry the sum over LBs and `ejlb_mbr_*` carry each (LB, member) at index `lb_id << 16 | member_id`.
"""
from __future__ import annotations

import re

from ejlb.dataplane.tables import GLOBAL_COUNTERS, NUM_LBS, Counters
from ejlb.node import sn_p4_v2_pb2 as pb

RX_RESULT = "rx_rslt_counter"
RX_RESULT_BUCKETS = 14
# ejlb's global drops -> result bucket: a frame that fails to parse, or is for no LB address.
RESULT_BUCKET = {"drop_parse_fail": 0, "drop_not_lb": 3}
OK_LB_BUCKET = 13

LB_CTX = {  # ejlb per-LB counter -> deployed name (index = LB id)
    "rx_packets": "lb_ctx_rx_pkt_counter",
    "rx_bytes": "lb_ctx_rx_byte_counter",
    "rx_v2": "lb_ctx_rx_v2_counter",
    "rx_v3": "lb_ctx_rx_v3_counter",
    "drop_no_lb_hdr": "lb_ctx_drop_no_udplb_hdr_pkt_counter",
    "drop_bad_version": "lb_ctx_drop_bad_udplb_version_pkt_counter",
    "drop_blocked_src": "lb_ctx_drop_blocked_src_pkt_counter",
    "drop_ttl": "lb_ctx_drop_ttl_pkt_counter",  # ejlb's own: the P4 has no TTL check
    "drop_epoch_miss": "lb_ctx_drop_epoch_assign_miss_pkt_counter",
    "drop_calendar_miss": "lb_ctx_drop_lb_calendar_miss_pkt_counter",
    "drop_member_miss": "lb_ctx_drop_mbr_info_miss_pkt_counter",
}
NOT_IP = "lb_ctx_drop_not_ip_pkt_counter"  # read by udplbd2; ejlb never counts a non-IP frame per LB
MEMBER = {"tx_packets": "lb_mbr_tx_pkt_counter", "tx_bytes": "lb_mbr_tx_byte_counter"}
MEMBER_BY_LB = {"tx_packets": "ejlb_mbr_tx_pkt_counter", "tx_bytes": "ejlb_mbr_tx_byte_counter"}
MEMBER_IDS = 1 << 16


def metrics(c: Counters) -> list[tuple[str, int, dict[int, int]]]:
    """(name, number of elements, {index: value}) for every metric, zeros included."""
    rx = dict.fromkeys(range(RX_RESULT_BUCKETS), 0)
    for name, bucket in RESULT_BUCKET.items():
        rx[bucket] += c.glob.get(name, 0)
    rx[OK_LB_BUCKET] = sum(v.get("rx_packets", 0) for v in c.lb.values())
    out = [(RX_RESULT, RX_RESULT_BUCKETS, rx), (NOT_IP, NUM_LBS, dict.fromkeys(range(NUM_LBS), 0))]
    for ours, theirs in LB_CTX.items():
        out.append((theirs, NUM_LBS, {i: c.lb.get(i, {}).get(ours, 0) for i in range(NUM_LBS)}))
    for ours in MEMBER:
        summed: dict[int, int] = {}
        per_lb: dict[int, int] = {}
        for (lb_id, mid), v in c.member.items():
            summed[mid] = summed.get(mid, 0) + v.get(ours, 0)
            per_lb[lb_id << 16 | mid] = v.get(ours, 0)
        out.append((MEMBER[ours], MEMBER_IDS, summed))
        out.append((MEMBER_BY_LB[ours], NUM_LBS * MEMBER_IDS, per_lb))
    return out


def counters(values: dict[str, dict[int, int]]) -> Counters:
    """The inverse of `metrics` over (possibly summed) {name: {index: value}}; unknown names ignored."""
    c = Counters()
    rx = values.get(RX_RESULT, {})
    for name in GLOBAL_COUNTERS:
        c.glob[name] = rx.get(RESULT_BUCKET[name], 0)
    for ours, theirs in LB_CTX.items():
        for i, v in values.get(theirs, {}).items():
            c.lb_counters(i)[ours] = v
    for ours, theirs in MEMBER_BY_LB.items():
        for idx, v in values.get(theirs, {}).items():
            c.member_counters(idx >> 16, idx & 0xFFFF)[ours] = v
    return c


# ---------------------------------------------------------------------------------------------
# Filters (udplbd2 sends them with ClearPipelineStats: names and one index)

def _string(m: pb.StatsMetricMatchString, s: str) -> bool:
    how = m.WhichOneof("method")
    if how == "exact":
        return s == m.exact
    if how == "prefix":
        return s.startswith(m.prefix)
    if how == "suffix":
        return s.endswith(m.suffix)
    if how == "substring":
        return m.substring in s
    if how == "regexp":
        try:
            return re.search(m.regexp.pattern, s) is not None
        except re.error:
            raise ValueError(f"metric_filter regexp={m.regexp.pattern!r}: not a valid expression") from None
    if how == "split":
        raise ValueError("metric_filter split: not supported by this node")
    return True  # unset: any


def _indices(m: pb.StatsMetricMatchIndices, index: int, size: int) -> bool:
    for sl in m.slices:
        start = sl.start + size if sl.start < 0 else sl.start
        end = sl.end + size if sl.end < 0 else sl.end
        step = sl.step or 1
        if start <= index <= end and (index - start) % step == 0:
            return True
    return False


def selected(f: pb.StatsMetricFilter, name: str, index: int, size: int, scope: pb.StatsMetricScope) -> bool:
    """Whether filter `f` takes element `index` of metric `name` (an unset filter takes everything)."""
    term = f.WhichOneof("term")
    if term is None:
        hit = True
    elif term == "match":
        m = f.match
        attr = m.WhichOneof("attribute")
        if attr == "type":
            hit = m.type == pb.STATS_METRIC_TYPE_COUNTER
        elif attr in ("domain", "zone", "block", "name"):
            hit = _string(getattr(m, attr), name if attr == "name" else getattr(scope, attr))
        elif attr == "indices":
            hit = _indices(m.indices, index, size)
        else:
            hit = attr is None  # labels: this node reports none, so a label match takes nothing
    else:
        members = getattr(f, term).members
        test = (selected(x, name, index, size, scope) for x in members)
        hit = any(test) if term == "any_set" else all(test)
    return hit != f.negated
