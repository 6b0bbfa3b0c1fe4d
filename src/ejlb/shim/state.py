"""The receiver's control-plane session: register, report state every period, re-register when the
control plane has lost the session, deregister on stop.

The loop runs in one daemon thread and only touches the receiver through two callables, so it works
with any object that has the LBManager methods (register / send_state / deregister).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from ejlb.shim.pid import PID

log = logging.getLogger(__name__)


# ejlb's defaults for the bounds a worker asks for (multiples of an even share of the calendar):
# none. The capacity balancer sizes shares from measured service rates; a floor would pin a slow
# worker into overflow (the deployed defaults 0.5 / 2.0 did), a cap would idle a fast one.
DEFAULT_MIN_FACTOR = 0.0
DEFAULT_MAX_FACTOR = 0.0  # 0 = no cap


@dataclass(frozen=True)
class WorkerSpec:
    """What the receiver registers: name, data address and its share parameters."""

    name: str
    ip: str
    port: int
    port_range: int
    weight: float = 1.0
    min_factor: float = DEFAULT_MIN_FACTOR
    max_factor: float = DEFAULT_MAX_FACTOR
    keep_lb_header: bool = False


@dataclass
class ReporterStats:
    reports: int = 0
    errors: int = 0
    registrations: int = 0
    last_error: str = ""


class StateReporter:
    """`start()` registers (errors propagate), then a thread sends `fill()` and the PID signal every
    `period` seconds with the `totals()` counters; `stop()` deregisters and joins the thread."""

    def __init__(
        self,
        manager,
        spec: WorkerSpec,
        *,
        fill: Callable[[], float],
        totals: Callable[[], Mapping[str, int]],
        pid: PID,
        period: float = 0.1,
    ):
        if not period > 0:
            raise ValueError(f"state_period={period!r}: must be > 0 seconds")
        self.manager = manager
        self.spec = spec
        self.pid = pid
        self.period = period
        self.stats = ReporterStats()
        self._fill = fill
        self._totals = totals
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.registration = None

    def start(self) -> None:
        self._register()
        self._thread = threading.Thread(target=self._run, name=f"ejlb-state-{self.spec.name}", daemon=True)
        self._thread.start()

    def _register(self) -> None:
        s = self.spec
        self.registration = self.manager.register(
            s.name, s.ip, s.port, weight=s.weight, port_range=s.port_range,
            min_factor=s.min_factor, max_factor=s.max_factor, keep_lb_header=s.keep_lb_header,
        )
        self.stats.registrations += 1
        self.pid.reset()

    def report_once(self, dt: float) -> None:
        """One state report; registers again if the control plane no longer knows the session
        (NotFound), or revoked its token with it (Unauthenticated: deregistered or timed out)."""
        from ejlb.control.errors import NotFound, Unauthenticated

        fill = min(1.0, max(0.0, float(self._fill())))
        signal = self.pid.update(fill, dt)
        try:
            self.manager.send_state(fill_percent=fill, control_signal=signal, is_ready=True, totals=self._totals())
        except (NotFound, Unauthenticated) as e:
            log.warning("control plane lost the session of %s (%s); registering again", self.spec.name, e)
            self._register()
            self.manager.send_state(fill_percent=fill, control_signal=0.0, is_ready=True, totals=self._totals())
        self.stats.reports += 1

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.period):
            now = time.monotonic()
            try:
                self.report_once(now - last)
            except Exception as e:  # a control-plane outage must not kill the receiver
                self.stats.errors += 1
                self.stats.last_error = str(e)
                log.warning("state report of %s failed: %s", self.spec.name, e)
            last = now

    def stop(self, deregister: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if deregister and self.registration is not None:
            try:
                self.manager.deregister()
            except Exception as e:
                log.warning("deregister of %s failed: %s", self.spec.name, e)
            self.registration = None
