"""The control plane's side of LB nodes: a Backend that programs one or more SmartNIC P4 API servers
(ejlb LB nodes or real ESnet SmartNICs) the way udplbd2 does.

    ejlb serve --dataplane snp4://TOKEN@host:port,host2:port     (snp4s:// for TLS)

Every node gets identical rules in the deployed order (inserts, replace-updates, deletes reversed;
one Batch per table and operation). A node that fails a batch, cannot be reached, or reports a new
start time (it restarted, its tables are empty) is cleared and reloaded in full, now or at the next
`refresh`. Counters are summed across the nodes that answer. `health()` says how each node is doing.
"""
from __future__ import annotations

import logging
import threading
import urllib.parse
from concurrent import futures
from dataclasses import dataclass

import grpc

from ejlb.dataplane.tables import Counters, SenderLimit, TableDiff, Tables, apply
from ejlb.errors import EjlbError
from ejlb.node import rules as R
from ejlb.node import sn_p4_v2_pb2 as pb
from ejlb.node import sn_p4_v2_pb2_grpc as pb_grpc
from ejlb.node import stats as S
from ejlb.node.server import ERROR_METADATA, MAX_MESSAGE

log = logging.getLogger("ejlb.node.client")

SCHEMES = {"snp4": False, "snp4s": True}  # scheme -> TLS
DEFAULT_PORT = 50051
TIMEOUT_S = 10.0
STATUS_TIMEOUT_S = 1.0  # the per-tick poll: a blackholed node must not stall the controller's tick


class NodeError(EjlbError):
    """A node refused or failed a call; names the node, the call and the reason."""


@dataclass(frozen=True)
class DataplaneURL:
    token: str
    nodes: tuple[tuple[str, int], ...]
    tls: bool


def parse_url(url: str) -> DataplaneURL:
    """`snp4[s]://TOKEN@host:port[,host:port...]`; IPv6 hosts in brackets."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ValueError(f"dataplane={url!r}: expected snp4://TOKEN@host:port[,host:port...] (snp4s:// for TLS)")
    token, at, hosts = rest.rpartition("@")
    token = urllib.parse.unquote(token)
    if not at or not token:
        raise ValueError(f"dataplane={scheme}://...: the node token is missing (snp4://TOKEN@host:port)")
    nodes = []
    for part in hosts.rstrip("/").split(","):
        try:
            parsed = urllib.parse.urlsplit("//" + part)
            host, port = parsed.hostname, parsed.port or DEFAULT_PORT
        except ValueError as e:
            raise ValueError(f"dataplane node={part!r}: {e}") from None
        if not host or parsed.path or parsed.username:
            raise ValueError(f"dataplane node={part!r}: expected host:port")
        nodes.append((host, port))
    if len(set(nodes)) != len(nodes):
        raise ValueError(f"dataplane={hosts!r}: a node is listed twice")
    return DataplaneURL(token, tuple(nodes), SCHEMES[scheme])


@dataclass
class NodeHealth:
    address: str
    up: bool = False
    started: float | None = None  # the node's start time as it reports it
    reloads: int = 0
    failures: int = 0
    last_error: str = ""
    needs_reload: bool = True  # nothing is known of a node's tables until it is loaded once


class NodeClient:
    """One node's stub: each method one call, NodeError on any failure."""

    def __init__(self, host: str, port: int, token: str, tls: bool = False, ca_file: str | None = None,
                 timeout: float = TIMEOUT_S):
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        opts = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE),
                # a restarted node is back within a tick, not after grpc's default backoff of up to 2 min
                ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 1000)]
        if tls:
            roots = open(ca_file, "rb").read() if ca_file else None
            self._channel = grpc.secure_channel(self.address, grpc.ssl_channel_credentials(roots), options=opts)
        else:
            self._channel = grpc.insecure_channel(self.address, options=opts)
        self._stub = pb_grpc.SmartnicP4Stub(self._channel)
        self._md = (("authorization", f"Bearer {token}"),)
        self.timeout = timeout

    def _call(self, what: str, fn, request, timeout: float | None = None):
        try:
            call = fn(request, metadata=self._md, timeout=timeout or self.timeout)
            responses = list(call)
            detail = dict(call.trailing_metadata() or ()).get(ERROR_METADATA, "")
        except grpc.RpcError as e:
            raise NodeError(f"node {self.address} {what}: {e.code().name}: {e.details()}") from None
        return responses, detail

    def write(self, op: int, table: str, rules: list[R.Rule], replace: bool = False) -> None:
        """One Batch with one request, as udplbd2 sends each (operation, table)."""
        what = f"{'delete' if op == pb.BOP_DELETE else 'replace' if replace else 'insert'} {len(rules)} rules in {table}"
        self._batch(what, [_rules_request(op, rules, replace)])

    def reload(self, tables: Tables) -> int:
        """Clear and load `tables` in one Batch stream (an ejlb node installs it at the end, so it
        forwards with the old tables until the new ones are whole); returns the rule count."""
        by_table: dict[str, list[R.Rule]] = {}
        for rule in R.encode(tables).values():
            by_table.setdefault(rule.table, []).append(rule)
        reqs = [pb.BatchRequest(op=pb.BOP_CLEAR, table=pb.TableRequest(dev_id=-1, pipeline_id=0, table_name=""))]
        reqs += [_rules_request(pb.BOP_INSERT, by_table[t]) for t in R.TABLE_ORDER if by_table.get(t)]
        self._batch("reload", reqs)
        return sum(map(len, by_table.values()))

    def _batch(self, what: str, reqs: list[pb.BatchRequest]) -> None:
        responses, detail = self._call(what, self._stub.Batch, iter(reqs))
        if len(responses) < len(reqs):
            raise NodeError(f"node {self.address} {what}: {len(responses)} responses to {len(reqs)} requests")
        for r in responses:
            item = r.WhichOneof("item")
            code = getattr(r, item).error_code if item else r.error_code
            if code != pb.EC_OK:
                raise NodeError(f"node {self.address} {what}: {pb.ErrorCode.Name(code)}{': ' + detail if detail else ''}")

    def start_time(self) -> float:
        responses, _ = self._call("GetServerStatus", self._stub.GetServerStatus, pb.ServerStatusRequest(),
                                  min(self.timeout, STATUS_TIMEOUT_S))
        if not responses:
            raise NodeError(f"node {self.address} GetServerStatus: no response")
        return responses[0].status.start_time.ToNanoseconds() / 1e9

    def stats(self) -> dict[str, dict[int, int]]:
        responses, _ = self._call("GetPipelineStats", self._stub.GetPipelineStats,
                                  pb.PipelineStatsRequest(dev_id=-1, pipeline_id=0))
        out: dict[str, dict[int, int]] = {}
        for r in responses:
            for m in r.stats.metrics:
                vals = out.setdefault(m.name, {})
                for v in m.values:
                    vals[v.index] = vals.get(v.index, 0) + v.u64
        return out

    def close(self) -> None:
        self._channel.close()


def _rules_request(op: int, rules: list[R.Rule], replace: bool = False) -> pb.BatchRequest:
    return pb.BatchRequest(op=op, table_rule=pb.TableRuleRequest(
        dev_id=-1, pipeline_id=0, rules=[R.to_pb(r, replace) for r in rules]))


class NodesBackend:
    """Backend: identical tables on every node, reloaded in full wherever they may have diverged."""

    # the P4 source-filter tables hold 256 addresses per family over all LBs; a node whose own data
    # plane holds fewer refuses the rules beyond, naming its limit (and shows as down until fixed)
    sender_limit = SenderLimit(total=R.SCHEMA[R.IPV4_SRC].size)

    def __init__(self, url: str | DataplaneURL, ca_file: str | None = None, timeout: float = TIMEOUT_S):
        self.url = parse_url(url) if isinstance(url, str) else url
        self.clients = [NodeClient(h, p, self.url.token, self.url.tls, ca_file, timeout) for h, p in self.url.nodes]
        self._health = {c.address: NodeHealth(c.address) for c in self.clients}
        self.installed = Tables()
        self._lock = threading.Lock()
        self._pool = futures.ThreadPoolExecutor(max_workers=len(self.clients), thread_name_prefix="ejlb-nodes")

    def _each(self, fn) -> None:
        list(self._pool.map(fn, self.clients))

    def apply(self, d: TableDiff) -> None:
        with self._lock:
            old = self.installed
            new = apply(old, d)
            plan = R.changes(old, new, d)
            self.installed = new  # as udplbd2: what failed is reloaded, not retried piecemeal
            self._each(lambda c: self._update(c, plan, new))

    def refresh(self) -> None:
        """Notice restarted or recovered nodes (a new start time, or a failure before) and reload them."""
        with self._lock:
            self._each(lambda c: self._check(c, self.installed))

    def _check(self, c: NodeClient, tables: Tables) -> None:
        h = self._health[c.address]
        try:
            started = c.start_time()
        except NodeError as e:
            self._failed(h, str(e))
            return
        if h.started is not None and started != h.started:
            log.warning("node %s restarted (start time %.3f): reloading its tables", c.address, started)
            h.needs_reload = True
        h.started, h.up = started, True
        if h.needs_reload:
            self._reload(c, tables)

    def _update(self, c: NodeClient, plan: R.Plan, tables: Tables) -> None:
        h = self._health[c.address]
        if h.needs_reload:
            self._check(c, tables)
            return
        try:
            for op, replace, table, rules in plan.batches():
                c.write(op, table, rules, replace)
        except NodeError as e:
            self._failed(h, str(e))
            self._check(c, tables)  # reload at once if the node answers

    def _reload(self, c: NodeClient, tables: Tables) -> None:
        h = self._health[c.address]
        try:
            n = c.reload(tables)
        except NodeError as e:
            self._failed(h, str(e))
            return
        h.needs_reload, h.up = False, True
        h.reloads += 1
        log.info("node %s loaded: %d rules", c.address, n)

    def _failed(self, h: NodeHealth, error: str) -> None:
        if h.up or error != h.last_error:
            log.warning("%s", error)
        h.up, h.needs_reload, h.last_error = False, True, error
        h.failures += 1

    def _stats(self) -> dict[str, dict[str, dict[int, int]]]:
        """{node address: {metric: {index: value}}} of every node that answers."""
        out = {}
        for c in self.clients:
            try:
                out[c.address] = c.stats()
            except NodeError as e:
                self._failed(self._health[c.address], str(e))
        return out

    def node_counters(self) -> dict[str, Counters]:
        """Each answering node's own counters."""
        return {address: S.counters(values) for address, values in self._stats().items()}

    def counters(self) -> Counters:
        """Counters summed over every node that answers."""
        summed: dict[str, dict[int, int]] = {}
        for values in self._stats().values():
            for name, vals in values.items():
                acc = summed.setdefault(name, {})
                for i, v in vals.items():
                    acc[i] = acc.get(i, 0) + v
        return S.counters(summed)

    def health(self) -> list[NodeHealth]:
        return [NodeHealth(**vars(h)) for h in self._health.values()]

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        for c in self.clients:
            c.close()


def create_backend(config=None, url: str | None = None, ca_file: str | None = None) -> NodesBackend:
    """Registry factory (`backends.create_backend("snp4", config, url="snp4://T@host:port")`)."""
    if not url:
        raise ValueError("dataplane: the snp4 backend needs a URL (snp4://TOKEN@host:port[,host:port])")
    if config is not None:  # refused now, not at every tick: the rules' one port MAC (rules.lb_mac)
        R.lb_mac(Tables(lbs={i.lb_id: i.lb_instance() for i in config.instances}))
    return NodesBackend(url, ca_file)
