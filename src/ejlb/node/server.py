"""An LB node: one data-plane backend behind ESnet's SmartNIC P4 gRPC API (`sn_p4.v2.SmartnicP4`).

A deployed EJFAT control plane (udplbd2) or ejlb's own (`ejlb serve --dataplane snp4://...`) programs
it; it forwards with its last tables whatever happens to them. One device (dev_id 0; -1 = all) with
one pipeline (0). Every call needs `authorization: Bearer <token>` with the node's token; a refused
rule's ErrorCode is in the response and its explanation (table, field, value) in the trailing
metadata `ejlb-error` and the log.
"""
from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from ejlb.control.tokens import bearer_token
from ejlb.dataplane.tables import Backend, SenderLimit, diff
from ejlb.node import rules as R
from ejlb.node import sn_p4_v2_pb2 as pb
from ejlb.node import sn_p4_v2_pb2_grpc as pb_grpc
from ejlb.node.device import Device, Outcome

log = logging.getLogger("ejlb.node")

ERROR_METADATA = "ejlb-error"
SAVE_GAP_S = 1.0
MAX_MESSAGE = 64 << 20  # a full reload of 8 LBs is ~1.5 MB of rules; leave room for 16k-slot calendars
_MATCH_TYPE = {R.EXACT: pb.MATCH_TYPE_CONSTANT, R.FIELD_MASK: pb.MATCH_TYPE_BITFIELD, R.LPM: pb.MATCH_TYPE_PREFIX}


@dataclass
class NodeConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    token: str = ""
    tls_cert: str | None = None
    tls_key: str | None = None
    name: str = "ejlb-node"  # the device's bus id in stats scopes and device info
    state_file: str | None = None  # rules kept here (debounced) and restored at start

    def __post_init__(self) -> None:
        if not self.token or any(c.isspace() or not c.isprintable() for c in self.token):
            raise ValueError(f"token={self.token!r}: a node needs a token of visible ASCII without spaces")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port={self.port}: must be 0..65535 (0: ephemeral)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert/tls_key: give both or neither")


class NodeServicer(pb_grpc.SmartnicP4Servicer):
    def __init__(self, node: "LBNode"):
        self.node = node

    # every RPC is server-streaming: one response per (device, pipeline) addressed
    def _guard(self, context) -> None:
        try:
            token = bearer_token(context.invocation_metadata())
        except Exception as e:  # noqa: BLE001 - any parse failure is an authentication failure
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(e))
        if not hmac.compare_digest(token.encode(), self.node.config.token.encode()):
            log.warning("refused call from %s: wrong token", context.peer())
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "authorization: token not accepted by this node")

    def _errors(self, context, outcomes: list[Outcome]) -> None:
        msgs = [o.message for o in outcomes if not o.ok and o.message]
        if msgs:
            context.set_trailing_metadata(((ERROR_METADATA, "; ".join(msgs)[:4000]),))

    def Batch(self, request_iterator, context) -> Iterator[pb.BatchResponse]:
        """Items apply in order; the data plane gets the result once, at the end of the stream, so a
        clear-and-reload in one stream never forwards with empty tables. A stream that breaks off
        (the client died) is undone."""
        self._guard(context)
        outcomes = []
        snapshot = self.node.snapshot()
        try:
            for req in request_iterator:
                item = req.WhichOneof("item")
                resp, outcome = self.node.batch_item(req.op, item, getattr(req, item) if item else None, defer=True)
                outcomes.append(outcome)
                yield resp
        except BaseException:
            self.node.restore(snapshot)
            raise
        self.node.install()
        self._errors(context, outcomes)

    def _single(self, context, op: int, item: str, request) -> Iterator:
        self._guard(context)
        resp, outcome = self.node.batch_item(op, item, request)
        self._errors(context, [outcome])
        yield getattr(resp, item) if resp.HasField(item) else _empty(item, resp.error_code)

    def GetDeviceInfo(self, request, context):
        return self._single(context, pb.BOP_GET, "device_info", request)

    def GetPipelineInfo(self, request, context):
        return self._single(context, pb.BOP_GET, "pipeline_info", request)

    def ClearTable(self, request, context):
        return self._single(context, pb.BOP_CLEAR, "table", request)

    def InsertTableRule(self, request, context):
        return self._single(context, pb.BOP_INSERT, "table_rule", request)

    def DeleteTableRule(self, request, context):
        return self._single(context, pb.BOP_DELETE, "table_rule", request)

    def GetPipelineStats(self, request, context):
        return self._single(context, pb.BOP_GET, "pipeline_stats", request)

    def ClearPipelineStats(self, request, context):
        return self._single(context, pb.BOP_CLEAR, "pipeline_stats", request)

    def GetStats(self, request, context):
        return self._single(context, pb.BOP_GET, "stats", request)

    def ClearStats(self, request, context):
        return self._single(context, pb.BOP_CLEAR, "stats", request)

    def GetServerConfig(self, request, context):
        return self._single(context, pb.BOP_GET, "server_config", request)

    def SetServerConfig(self, request, context):
        return self._single(context, pb.BOP_SET, "server_config", request)

    def GetServerStatus(self, request, context):
        return self._single(context, pb.BOP_GET, "server_status", request)


_RESPONSE_TYPE = {f.name: f.message_type.name for f in pb.BatchResponse.DESCRIPTOR.oneofs_by_name["item"].fields}


def _empty(item: str, code: int):
    return getattr(pb, _RESPONSE_TYPE[item])(error_code=code)


class LBNode:
    """The node: a Device, the backend it programs and the gRPC server (thread-safe)."""

    def __init__(self, config: NodeConfig, backend: Backend, backend_name: str = "software"):
        self.config = config
        self.backend = backend
        self.backend_name = backend_name
        self.device = Device(getattr(backend, "sender_limit", SenderLimit()))
        self.lock = threading.RLock()
        self.started = time.time()
        self.debug: set[int] = set()
        self.port = 0
        self._grpc: grpc.Server | None = None
        self._pool: futures.ThreadPoolExecutor | None = None
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._saver: threading.Thread | None = None

    # -- the API's items --------------------------------------------------------------------------
    def batch_item(self, op: int, item: str | None, req, defer: bool = False) -> tuple[pb.BatchResponse, Outcome]:
        """One request item; the data plane is updated now unless `defer` (then `install()` later)."""
        if item is None:
            out = Outcome(pb.EC_UNKNOWN_BATCH_REQUEST, "batch request without an item")
            return pb.BatchResponse(error_code=out.code, op=op), out
        handler = _HANDLERS.get((item, op))
        if handler is None:
            out = Outcome(pb.EC_UNKNOWN_BATCH_OP, f"op={op} on {item}: not supported")
            return pb.BatchResponse(error_code=out.code, op=op), out
        dev = getattr(req, "dev_id", -1)
        pipe = getattr(req, "pipeline_id", -1)
        if dev > 0:
            out = Outcome(pb.EC_INVALID_DEVICE_ID, f"dev_id={dev}: this node has device 0 only")
        elif pipe > 0:
            out = Outcome(pb.EC_INVALID_PIPELINE_ID, f"pipeline_id={pipe}: device 0 has pipeline 0 only")
        else:
            with self.lock:
                body, out = handler(self, req)
                if out.changed and not defer:
                    self.install()
            if not out.ok:
                log.warning("%s %s refused (%s): %s", pb.BatchOperation.Name(op), item,
                            pb.ErrorCode.Name(out.code), out.message)
            return pb.BatchResponse(error_code=pb.EC_OK, op=op, **{item: body}), out
        return pb.BatchResponse(error_code=pb.EC_OK, op=op, **{item: _empty(item, out.code)}), out

    def install(self) -> None:
        """Hand the device's tables to the data plane (one atomic diff)."""
        with self.lock:
            d = diff(self.backend.installed, self.device.tables)
            if d:
                self.backend.apply(d)
                self._dirty.set()

    def snapshot(self) -> tuple:
        with self.lock:
            return self.device.rules, self.device.tables  # replaced on write, never mutated: a cheap copy

    def restore(self, snap: tuple) -> None:
        with self.lock:
            self.device.rules, self.device.tables = snap

    def _rules(self, req: pb.TableRuleRequest, op: int):
        out = self.device.write(op, req.rules)
        return pb.TableRuleResponse(error_code=out.code), out

    def _clear_table(self, req: pb.TableRequest):
        out = self.device.clear(req.table_name)
        return pb.TableResponse(error_code=out.code), out

    @property
    def scope(self) -> pb.StatsMetricScope:
        return pb.StatsMetricScope(domain=self.config.name, zone="pipeline0", block="ejlb")

    def _stats(self, req, clear: bool):
        counters = self.backend.counters()
        filters = req.filters if req.HasField("filters") else None
        try:
            if clear:
                self.device.clear_stats(counters, filters, self.scope)
            metrics = self.device.stats(counters, filters, self.scope)
        except ValueError as e:
            return None, Outcome(pb.EC_UNKNOWN, str(e))
        return pb.Stats(metrics=metrics), Outcome()

    def _pipeline_stats(self, req, clear: bool):
        stats, out = self._stats(req, clear)
        return pb.PipelineStatsResponse(error_code=out.code, stats=stats), out

    def _device_stats(self, req, clear: bool):
        stats, out = self._stats(req, clear)
        return pb.StatsResponse(error_code=out.code, stats=stats), out

    def _pipeline_info(self, req):
        tables = []
        for t in R.SCHEMA.values():
            lpm = any(f.kind == R.LPM for f in t.fields)
            tables.append(pb.TableInfo(
                name=t.name, num_entries=self.device.sizes[t.name], endian=pb.TABLE_ENDIAN_LITTLE,
                mode=pb.TABLE_MODE_TCAM if lpm else pb.TABLE_MODE_BCAM, priority_required=lpm,
                key_width=sum(f.width for f in t.fields),
                matches=[pb.MatchInfo(type=_MATCH_TYPE[f.kind], width=f.width) for f in t.fields],
                actions=[pb.ActionInfo(name=a, width=sum(w for _, w in ps),
                                       parameters=[pb.ActionParameterInfo(name=n, width=w) for n, w in ps])
                         for a, ps in t.actions.items()]))
        return pb.PipelineInfoResponse(error_code=pb.EC_OK, info=pb.PipelineInfo(name=f"ejlb-{self.backend_name}", tables=tables)), Outcome()

    def _device_info(self, req):
        from ejlb import __version__

        env = pb.DeviceBuildEnvironment(hw_version=self.backend_name, sw_version=__version__)
        info = pb.DeviceInfo(pci=pb.DevicePciInfo(bus_id=self.config.name), build=pb.DeviceBuildInfo(env=env))
        return pb.DeviceInfoResponse(error_code=pb.EC_OK, info=info), Outcome()

    def _server_status(self, req):
        start = Timestamp()
        start.FromNanoseconds(int(self.started * 1e9))
        up = Duration()
        up.FromNanoseconds(int((time.time() - self.started) * 1e9))
        return pb.ServerStatusResponse(error_code=pb.EC_OK, status=pb.ServerStatus(start_time=start, up_time=up)), Outcome()

    def _server_config(self, req, set_: bool):
        if set_ and req.HasField("config"):
            flags = list(req.config.debug.enables) + list(req.config.debug.disables)
            bad = [f for f in flags if f not in pb.ServerDebugFlag.values() or f == pb.DEBUG_FLAG_UNKNOWN]
            if bad:
                out = Outcome(pb.EC_SERVER_INVALID_DEBUG_FLAG, f"debug flag={bad[0]}: unknown")
                return pb.ServerConfigResponse(error_code=out.code), out
            self.debug |= set(req.config.debug.enables)
            self.debug -= set(req.config.debug.disables)
        cfg = pb.ServerConfig(debug=pb.ServerDebug(enables=sorted(self.debug)))
        return pb.ServerConfigResponse(error_code=pb.EC_OK, config=cfg), Outcome()

    # -- the state file: a node that restarts while no control plane runs forwards on --------------
    def _restore(self) -> None:
        path = Path(self.config.state_file)
        if not path.exists():
            return
        try:
            saved = pb.TableRuleRequest.FromString(path.read_bytes())
        except Exception as e:  # noqa: BLE001 - any damage: start empty, the control plane reloads
            log.warning("state_file=%s: unreadable (%s); starting with empty tables", path, e)
            return
        by_table: dict[str, list] = {}
        for rule in saved.rules:
            by_table.setdefault(rule.table_name, []).append(rule)
        with self.lock:
            for table in R.TABLE_ORDER:
                out = self.device.write(pb.BOP_INSERT, by_table.get(table, ()))
                if not out.ok:
                    log.warning("state_file=%s: %s; starting with empty tables", path, out.message)
                    self.device = Device(self.device.sender_limit)
                    return
            self.install()
        self._dirty.clear()
        log.info("restored %d rules from %s", self.device.rule_count, path)

    def _save(self) -> None:
        self._dirty.clear()
        with self.lock:
            rules = [r for table in self.device.rules.values() for r in table.values()]
        data = pb.TableRuleRequest(rules=[R.to_pb(r) for r in rules]).SerializeToString()
        path = Path(self.config.state_file)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # never a half-written file

    def _save_loop(self) -> None:
        while not self._stopping.is_set():
            if self._dirty.wait(0.5):
                self._save()
                self._stopping.wait(SAVE_GAP_S)  # at most one write a second, whatever the tick does
        if self._dirty.is_set():
            self._save()

    # -- life cycle --------------------------------------------------------------------------------
    def start(self) -> "LBNode":
        cfg = self.config
        if cfg.state_file:
            self._restore()
            self._saver = threading.Thread(target=self._save_loop, name="ejlb-node-state", daemon=True)
            self._saver.start()
        self._pool = futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="ejlb-node")
        opts = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE),
                ("grpc.so_reuseport", 0)]
        self._grpc = grpc.server(self._pool, options=opts)
        pb_grpc.add_SmartnicP4Servicer_to_server(NodeServicer(self), self._grpc)
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        addr = f"{host}:{cfg.port}"
        try:
            if cfg.tls_cert:
                creds = grpc.ssl_server_credentials([(Path(cfg.tls_key).read_bytes(), Path(cfg.tls_cert).read_bytes())])
                self.port = self._grpc.add_secure_port(addr, creds)
            else:
                self.port = self._grpc.add_insecure_port(addr)
        except RuntimeError as e:
            self.port = 0
            err = e
        else:
            err = None
        if not self.port:
            self._pool.shutdown(wait=False)
            raise OSError(f"listen={addr}: cannot bind the node's gRPC port{f' ({err})' if err else ''}")
        self._grpc.start()
        log.info("LB node (%s backend) serving the SmartNIC P4 API on %s:%d", self.backend_name, host, self.port)
        return self

    def stop(self) -> None:
        """Stop serving; the backend is the caller's (it may forward on)."""
        self._stopping.set()
        if self._saver is not None:
            self._saver.join(10)
            self._saver = None
        if self._grpc is not None:
            self._grpc.stop(grace=0.5).wait(5)
            self._grpc = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "LBNode":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


_HANDLERS = {
    ("table_rule", pb.BOP_INSERT): lambda n, r: n._rules(r, pb.BOP_INSERT),
    ("table_rule", pb.BOP_DELETE): lambda n, r: n._rules(r, pb.BOP_DELETE),
    ("table", pb.BOP_CLEAR): LBNode._clear_table,
    ("pipeline_stats", pb.BOP_GET): lambda n, r: n._pipeline_stats(r, False),
    ("pipeline_stats", pb.BOP_CLEAR): lambda n, r: n._pipeline_stats(r, True),
    ("stats", pb.BOP_GET): lambda n, r: n._device_stats(r, False),
    ("stats", pb.BOP_CLEAR): lambda n, r: n._device_stats(r, True),
    ("pipeline_info", pb.BOP_GET): LBNode._pipeline_info,
    ("device_info", pb.BOP_GET): LBNode._device_info,
    ("server_status", pb.BOP_GET): LBNode._server_status,
    ("server_config", pb.BOP_GET): lambda n, r: n._server_config(r, False),
    ("server_config", pb.BOP_SET): lambda n, r: n._server_config(r, True),
}
