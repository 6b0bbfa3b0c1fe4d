"""The embeddable control plane: gRPC service + sync listeners + controller thread (+ /metrics).

With `cpu` configured, every thread the control plane starts (grpcio's server and handler pool,
controller, report writer, sync listener, /metrics) runs on that one core. grpcio's synchronous
server hands each call from its polling thread to a pool thread and back; across cores every
hand-off is a cross-core wake-up and GIL transfer, on one core a plain switch: measured here,
1.2–1.5x the calls per CPU-second of the whole control plane, 2–3x for a bare grpcio server
(src/ejlb/control/README.md, Benchmarks). A data-plane backend's own threads are started before
and keep their affinity.

    with ControlPlane(ControlConfig(port=0)) as cp:
        LBManager(cp.admin_uri).reserve("demo")
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Callable

import grpc

from ejlb.control import loadbalancer_pb2_grpc as pb_grpc
from ejlb.control.config import ControlConfig
from ejlb.control.controller import Controller
from ejlb.control.metrics import Metrics
from ejlb.control.service import ControlService
from ejlb.control.servicer import LoadBalancerServicer, _bracket
from ejlb.control.state import Reservation
from ejlb.control.store import Store
from ejlb.control.sync import SyncListener
from ejlb.dataplane.tables import Backend, MemoryBackend

log = logging.getLogger("ejlb.control")
MIN_TICK_GAP_S = 0.2  # early ticks (a queue filling up) come at most this often


def make_backend(name: str, config: ControlConfig) -> Backend:
    """The data plane named in the configuration ("memory" is always available)."""
    if name == "memory":
        return MemoryBackend()
    try:
        from ejlb.dataplane.backends import create_backend
    except ImportError:
        log.warning("backend %r: ejlb.dataplane.backends not available, using the memory backend", name)
        return MemoryBackend()
    return create_backend(name, config)


@contextlib.contextmanager
def pinned(cpu: int | None):
    """Run the block with the calling thread on core `cpu` (threads started meanwhile inherit it),
    then restore its affinity. No-op for None."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)  # 0: the calling thread (Linux)
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as e:
        raise OSError(f"cpu={cpu}: cannot pin the control plane to it ({e}); usable: {sorted(before)}") from None
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


class ControlPlane:
    def __init__(self, config: ControlConfig, backend: Backend | None = None):
        self.config = config
        self._own_backend = backend is None
        self.backend = backend if backend is not None else make_backend(config.backend, config)
        self.clock: Callable[[], float] = time.time  # replace to drive liveness/expiry in tests
        self.store = Store(config.db)
        self.service = ControlService(config, self.store, clock=lambda: self.clock())
        self.metrics = Metrics()
        self.controller = Controller(self.service, self.backend)
        self.sync = SyncListener(self.service.accept_sync, clock=lambda: self.clock())
        self.service.on_reserve = self._open_sync
        self.service.on_free = lambda res: self.sync.close(res.id)
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.metrics.sync_malformed.set_function(lambda: self.sync.malformed)
        self._grpc: grpc.Server | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._stopped = False
        self._http = None
        self._executor: futures.ThreadPoolExecutor | None = None

    # -- life cycle -----------------------------------------------------------------------------
    def start(self, run_controller: bool = True) -> "ControlPlane":
        """Bind and serve. `run_controller=False` leaves ticking to `tick()` (deterministic tests).
        A failure part-way (port in use, bad TLS files) releases what was started and re-raises."""
        try:
            with pinned(self.config.cpu):
                return self._start(run_controller)
        except BaseException:
            self.stop()
            raise

    def _start(self, run_controller: bool) -> "ControlPlane":
        cfg = self.config
        self._executor = futures.ThreadPoolExecutor(max_workers=cfg.rpc_threads, thread_name_prefix="ejlb-rpc")
        self._grpc = grpc.server(self._executor, options=[("grpc.so_reuseport", 0)])
        self.servicer = LoadBalancerServicer(self.service, self.metrics)  # also behind the REST API (ejlb.web)
        pb_grpc.add_LoadBalancerServicer_to_server(self.servicer, self._grpc)
        addr = f"{_bracket(cfg.host)}:{cfg.port}"
        try:
            if cfg.tls:
                creds = grpc.ssl_server_credentials([(Path(cfg.tls_key).read_bytes(),
                                                      Path(cfg.tls_cert).read_bytes())])
                self.port = self._grpc.add_secure_port(addr, creds)
            else:
                self.port = self._grpc.add_insecure_port(addr)
        except RuntimeError as e:  # grpcio reports a failed bind this way
            raise OSError(f"listen={addr}: cannot bind the gRPC port ({e})") from None
        if not self.port:
            raise OSError(f"listen={addr}: cannot bind the gRPC port")
        self.service.public_port = self.port
        self.service.resume()
        for res in list(self.service.reservations.values()):  # restart: resume sync listeners
            try:
                res.sync_port = self._open_sync(res)
            except OSError as e:
                log.error("lb %s: cannot rebind sync port %s: %s", res.id, res.sync_port, e)
        self.controller.sync_tables()  # re-apply what was installed before a restart
        self.controller.start_writer()
        self.sync.start()
        self._grpc.start()
        if cfg.metrics_port is not None:
            from prometheus_client import start_http_server

            self._http, _ = start_http_server(cfg.metrics_port, addr=cfg.host, registry=self.metrics.registry)
            self.metrics_port = self._http.server_port  # the real one when configured as 0
        if run_controller:
            self._thread = threading.Thread(target=self._run, name="ejlb-controller", daemon=True)
            self._thread.start()
        log.info("control plane on %s:%d (%d reservations resumed)", _bracket(cfg.host), self.port,
                 len(self.service.reservations))
        return self

    def stop(self) -> None:
        """Stop serving (idempotent). The backend keeps its installed tables: the data plane forwards on."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        self.service.tables_changed.set()
        if self._grpc is not None:
            self._grpc.stop(grace=0.5).wait(5)
        if self._executor is not None:  # grpc.server does not own the pool: its threads outlive stop()
            self._executor.shutdown(wait=True, cancel_futures=True)
        if self._thread is not None:
            self._thread.join(5)
        self.sync.stop()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        self.controller.close()
        self.store.close()
        if self._own_backend:
            self.backend.close()

    def __enter__(self) -> "ControlPlane":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers --------------------------------------------------------------------------------
    @property
    def admin_uri(self) -> str:
        scheme = "ejfats" if self.config.tls else "ejfat"
        return f"{scheme}://{self.config.admin_token}@{_bracket(self.config.host)}:{self.port}/"

    def tick(self) -> None:
        """One controller step, synchronously."""
        self.controller.refresh_backend()
        self.controller.tick()
        with self.service.lock:  # RPC threads may free reservations meanwhile
            self.metrics.observe_tick(self.controller)

    def _run(self) -> None:
        period = self.config.controller_period
        next_tick = time.monotonic() + period
        last_tick = 0.0
        while not self._stop.is_set():
            due = min(next_tick, last_tick + MIN_TICK_GAP_S) if self.service.urgent else next_tick
            woke = self.service.tables_changed.wait(max(0.0, due - time.monotonic()))
            if self._stop.is_set():
                break
            try:
                if woke:
                    self.service.tables_changed.clear()
                    self.controller.sync_tables()
                now = time.monotonic()
                if self.service.urgent and now - last_tick >= MIN_TICK_GAP_S:  # a queue is filling up
                    self.service.urgent = False
                    next_tick = now + period
                    last_tick = now
                    self.tick()
                elif now >= next_tick:
                    next_tick += period
                    if next_tick < now:  # fell behind: skip, never burst
                        next_tick = now + period
                    last_tick = now
                    self.tick()
            except Exception:
                log.exception("controller step failed; continuing")

    def _open_sync(self, res: Reservation) -> int:
        ips = {4: self.config.sync_ipv4, 6: self.config.sync_ipv6}
        return self.sync.open(res.id, {f: ips[f] for f in self.service.families(res)}, res.sync_port)
