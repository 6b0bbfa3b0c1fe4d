"""One LB node's device: the rules it holds, the Tables they mean, its counters as the API shows them.

Sans-I/O: the gRPC shell (`node.server`) hands it parsed requests and installs `device.tables` on a
backend when `write` says they changed. Semantics follow ESnet's agent (docs/smartnic-p4.md):
rules apply in order and the first refused one stops the request, earlier ones staying; an insert of
an existing key or a replace of a missing one fails (hardware CAM semantics); a delete names its rule
by key alone. One addition: a request whose rules are each valid but together mean tables no ejlb
data plane can hold (a gap inside an epoch's tick range, two addresses for one member...) is undone
whole, so a backend never runs on a set it cannot represent.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ejlb.dataplane.tables import NUM_LBS, Counters, SenderLimit, Tables
from ejlb.node import rules as R
from ejlb.node import sn_p4_v2_pb2 as pb
from ejlb.node import stats as S


@dataclass
class Outcome:
    code: int = pb.EC_OK
    message: str = ""
    changed: bool = False  # the decoded tables differ: install them

    @property
    def ok(self) -> bool:
        return self.code == pb.EC_OK


class Device:
    def __init__(self, sender_limit: SenderLimit = SenderLimit()):
        self.sender_limit = sender_limit  # what the node's data plane holds, beyond the P4 sizes
        src = min(x for x in (R.SCHEMA[R.IPV4_SRC].size, sender_limit.total,
                              sender_limit.per_lb and sender_limit.per_lb * NUM_LBS) if x)
        self.sizes = {name: t.size for name, t in R.SCHEMA.items()} | {R.IPV4_SRC: src, R.IPV6_SRC: src}
        self.rules: dict[str, dict[tuple, R.Rule]] = {name: {} for name in R.SCHEMA}
        self.tables = Tables()
        self._memo: dict = {}  # decoded parts of unchanged tables (rules.decode)
        self.ids = R.MemberIds()  # wire member ids (udplbd2: session ids) -> the data plane's
        self._baseline: dict[tuple[str, int], int] = {}  # cleared counters read relative to these

    @property
    def rule_count(self) -> int:
        return sum(len(v) for v in self.rules.values())

    # -- tables ----------------------------------------------------------------------------------
    def write(self, op: int, rules: Iterable[pb.TableRule]) -> Outcome:
        """Insert (replace=false/true) or delete `rules` in order."""
        if op not in (pb.BOP_INSERT, pb.BOP_DELETE):
            return Outcome(pb.EC_UNKNOWN_BATCH_OP, f"op={pb.BatchOperation.Name(op) if op in pb.BatchOperation.values() else op}: "
                                                   "table rules take BOP_INSERT or BOP_DELETE")
        staged: dict[str, dict[tuple, R.Rule]] = {}
        out = Outcome()
        for i, msg in enumerate(rules):
            try:
                rule = R.parse_rule(msg, deleting=op == pb.BOP_DELETE)
            except R.RuleError as e:
                out = Outcome(e.code, f"rules[{i}]: {e}")
                break
            table = staged.get(rule.table)
            if table is None:
                table = staged[rule.table] = dict(self.rules[rule.table])
            present = rule.identity in table
            if op == pb.BOP_DELETE:
                if not present:
                    out = Outcome(pb.EC_FAILED_DELETE_TABLE_RULE, f"rules[{i}]: {rule.table}: no rule with key {_shown(rule)}")
                    break
                del table[rule.identity]
                continue
            if present != msg.replace:
                why = "already holds a rule with key" if present else "holds no rule to replace with key"
                out = Outcome(pb.EC_FAILED_INSERT_TABLE_RULE, f"rules[{i}]: {rule.table} {why} {_shown(rule)}")
                break
            if not present and len(table) >= self.sizes[rule.table]:
                out = Outcome(pb.EC_FAILED_INSERT_TABLE_RULE,
                              f"rules[{i}]: {rule.table} is full ({self.sizes[rule.table]} entries)")
                break
            if present:  # the hardware keeps the old priority on replace
                rule = R.Rule(rule.table, rule.matches, rule.action, rule.params, table[rule.identity].priority)
            table[rule.identity] = rule
        if not staged:
            return out
        candidate = self.rules | staged
        try:
            tables = R.decode(candidate, self._memo, self.ids)
            self._check_senders(tables)
        except R.RuleSetError as e:
            return Outcome(pb.EC_FAILED_INSERT_TABLE_RULE, f"refused whole, tables unchanged: {e}")
        self.ids.commit()
        self.rules = candidate
        out.changed = tables != self.tables
        self.tables = tables
        return out

    def _check_senders(self, tables: Tables) -> None:
        lim = self.sender_limit
        if lim.total is not None and len(tables.senders) > lim.total:
            raise R.RuleSetError(f"senders={len(tables.senders)}: this node's data plane holds {lim.total} over all LBs")
        if lim.per_lb is not None:
            per: dict[int, int] = {}
            for lb, _ in tables.senders:
                per[lb] = per.get(lb, 0) + 1
            for lb, n in per.items():
                if n > lim.per_lb:
                    raise R.RuleSetError(f"lb_id={lb} senders={n}: this node's data plane holds {lim.per_lb} per LB")

    def clear(self, table_name: str) -> Outcome:
        """Empty one table, or every table for ""."""
        if table_name and table_name not in R.SCHEMA:
            return Outcome(pb.EC_INVALID_TABLE_NAME, f"table_name={table_name!r}: unknown")
        names = [table_name] if table_name else list(R.SCHEMA)
        candidate = self.rules | {n: {} for n in names}
        try:
            tables = R.decode(candidate, self._memo, self.ids)
        except R.RuleSetError as e:  # e.g. clearing ip_dst alone cannot break a set; kept for safety
            return Outcome(pb.EC_FAILED_CLEAR_TABLE, f"table_name={table_name!r}: {e}")
        self.ids.commit()
        self.rules = candidate
        changed, self.tables = tables != self.tables, tables
        return Outcome(changed=changed)

    # -- statistics ------------------------------------------------------------------------------
    def _by_wire_ids(self, counters: Counters) -> Counters:
        wire = self.ids.wire()
        if all(wire.get(k, k[1]) == k[1] for k in counters.member):
            return counters
        out = Counters(glob=counters.glob, lb=counters.lb)
        out.member = {(lb, wire.get((lb, m), m)): v for (lb, m), v in counters.member.items()}
        return out

    def stats(self, counters: Counters, filters: pb.StatsFilters | None, scope: pb.StatsMetricScope) -> list[pb.StatsMetric]:
        """The pipeline statistics, relative to the last clear of each element."""
        f = filters.metric_filter if filters is not None and filters.HasField("metric_filter") else pb.StatsMetricFilter()
        non_zero = filters is not None and filters.non_zero
        out = []
        for name, size, values in S.metrics(self._by_wire_ids(counters)):
            vals = []
            for index, v in sorted(values.items()):
                v -= self._baseline.get((name, index), 0)
                if (v or not non_zero) and S.selected(f, name, index, size, scope):
                    vals.append(pb.StatsMetricValue(u64=max(v, 0), index=index))
            if vals or (not values and not non_zero and S.selected(f, name, 0, size, scope)):
                out.append(pb.StatsMetric(type=pb.STATS_METRIC_TYPE_COUNTER, scope=scope, name=name,
                                          num_elements=size, values=vals))
        return out

    def clear_stats(self, counters: Counters, filters: pb.StatsFilters | None, scope: pb.StatsMetricScope) -> int:
        """Re-zero the selected elements (the hardware clears on read; ejlb's counters run on)."""
        f = filters.metric_filter if filters is not None and filters.HasField("metric_filter") else pb.StatsMetricFilter()
        n = 0
        for name, size, values in S.metrics(self._by_wire_ids(counters)):
            for index, v in values.items():
                if S.selected(f, name, index, size, scope):
                    self._baseline[(name, index)] = v
                    n += 1
        return n


def _shown(rule: R.Rule) -> str:
    fields = R.SCHEMA[rule.table].fields
    return "(" + ", ".join(f"{f.name}={k:#x}" + ("" if m == f.full else f"&&&{m:#x}")
                           for f, (k, m) in zip(fields, rule.matches)) + ")"
