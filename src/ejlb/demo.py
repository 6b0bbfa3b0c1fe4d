"""`ejlb demo`: the whole system on one machine, in one call.

An embedded control plane with the software load balancer on loopback, one reservation, several
registered receivers (each on its own port range), one sender streaming generated events through
the LB; then a per-worker table (events, bytes, slot share, Gb/s, lost) and everything freed.

    from ejlb.demo import DemoConfig, run_demo
    result = run_demo(DemoConfig(events=200, size=64 * 1024))
    assert result.ok

`run_demo` is the I/O shell; `summarize` (pure) turns the counts it collects into the table, so the
table's arithmetic is tested on its own. The CLI adds the progress bar through `on_progress`.
"""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, Sequence

import numpy as np

from ejlb.wire import CALENDAR_SLOTS, MAX_EVENT_LEN, MAX_MTU, header_overhead

DEMO_LB_NAME = "ejlb-demo"
WORKER_PORT_BITS = 2  # each worker listens on 4 ports: the sender's entropy spreads over them


class DemoError(RuntimeError):
    """The demo could not run (e.g. no loopback, workers never got slots); the message says which step."""


@dataclass(frozen=True)
class DemoConfig:
    events: int = 2000
    size: int = 256 * 1024  # bytes per event
    workers: int = 3
    rate_gbps: float | None = 1.0  # None: as fast as the machine goes (loopback UDP then drops)
    mtu: int = MAX_MTU  # loopback carries jumbo datagrams
    ipv6: bool = False
    controller_period: float = 0.2  # seconds between calendar updates (the deployed default is 1 s)
    settle_timeout: float = 10.0  # for workers to register and get slots
    drain_timeout: float = 5.0  # after the last event is sent, for the rest to arrive

    def __post_init__(self) -> None:
        checks = (("events", self.events, 1, 10**9), ("size", self.size, 0, MAX_EVENT_LEN),
                  ("workers", self.workers, 1, 64), ("mtu", self.mtu, header_overhead(self.ipv6) + 1, MAX_MTU))
        for name, value, lo, hi in checks:
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"{name}={value!r}: must be an integer in {lo}..{hi}")
        if self.rate_gbps is not None and not (isinstance(self.rate_gbps, (int, float)) and self.rate_gbps > 0):
            raise ValueError(f"rate_gbps={self.rate_gbps!r}: must be a positive number of Gb/s, or None")
        for name in ("controller_period", "settle_timeout", "drain_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 3600:
                raise ValueError(f"{name}={value!r}: must be a number of seconds in 0..3600")


@dataclass(frozen=True)
class WorkerCounts:
    """What one receiver saw, plus what the control plane gave it."""

    name: str
    events: int
    bytes: int
    bad_events: int  # wrong length or content
    lost: int  # events the receiver gave up on (timeout / eviction)
    slots: int


@dataclass(frozen=True)
class WorkerRow:
    name: str
    events: int
    bytes: int
    slots: int
    slot_share: float  # slots / 512
    event_share: float  # events / all events received
    gbps: float
    lost: int
    bad_events: int


@dataclass(frozen=True)
class LBFigures:
    """What the software LB itself counted: proof that the datagrams went through it."""

    rx_packets: int = 0
    tx_packets: int = 0  # forwarded to members
    drops: dict[str, int] = field(default_factory=dict)  # nonzero drop counters by name


def lb_figures(counters, lb_id: int) -> LBFigures:
    """From a data plane's Counters (pure)."""
    own = counters.lb.get(lb_id, {})
    tx = sum(c.get("tx_packets", 0) for (lb, _), c in counters.member.items() if lb == lb_id)
    drops = {k: v for k, v in {**counters.glob, **own}.items() if k.startswith("drop_") and v}
    return LBFigures(rx_packets=own.get("rx_packets", 0), tx_packets=tx, drops=drops)


@dataclass(frozen=True)
class DemoResult:
    lb_id: str
    events_sent: int
    bytes_sent: int  # event payload bytes
    events_received: int
    events_missing: int  # sent but never delivered whole
    lost: int  # reported lost by the receivers
    bad_events: int
    elapsed_s: float
    gbps: float  # payload Gb/s, first send to last delivery
    workers: list[WorkerRow] = field(default_factory=list)
    lb: LBFigures = field(default_factory=LBFigures)

    @property
    def ok(self) -> bool:
        return self.events_missing == 0 and self.bad_events == 0 and self.lost == 0

    def table(self) -> list[dict]:
        return [w.__dict__.copy() for w in self.workers]


def summarize(lb_id: str, events_sent: int, event_size: int, workers: Sequence[WorkerCounts],
              elapsed_s: float, lb: LBFigures = LBFigures()) -> DemoResult:
    """The final table from raw counts (pure)."""
    received = sum(w.events for w in workers)
    rows = [WorkerRow(
        name=w.name, events=w.events, bytes=w.bytes, slots=w.slots, slot_share=w.slots / CALENDAR_SLOTS,
        event_share=w.events / received if received else 0.0,
        gbps=w.bytes * 8 / elapsed_s / 1e9 if elapsed_s > 0 else 0.0, lost=w.lost, bad_events=w.bad_events,
    ) for w in workers]
    total_bytes = sum(w.bytes for w in workers)
    return DemoResult(
        lb_id=lb_id, events_sent=events_sent, bytes_sent=events_sent * event_size, events_received=received,
        events_missing=max(events_sent - received, 0), lost=sum(w.lost for w in workers),
        bad_events=sum(w.bad_events for w in workers), elapsed_s=elapsed_s,
        gbps=total_bytes * 8 / elapsed_s / 1e9 if elapsed_s > 0 else 0.0, workers=rows, lb=lb,
    )


def pattern(length: int, seed: int = 0) -> np.ndarray:
    """Generated event bytes: byte i = (i + seed) mod 251. The period is prime, so it divides
    hardly any fragment size and a misplaced or duplicated fragment changes the content."""
    period = np.roll(np.arange(251, dtype=np.uint8), -(seed % 251))
    return np.resize(period, length)


def free_udp_port(ip: str) -> int:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


class _Drain(threading.Thread):
    """Counts one receiver's events and checks each against the expected payload."""

    def __init__(self, receiver, expected: np.ndarray):
        super().__init__(daemon=True, name=f"demo-drain-{receiver.base_port}")
        self.receiver = receiver
        self.expected = expected
        self.events = self.bytes = self.bad = 0
        self.last_at = 0.0
        self._stop_flag = threading.Event()

    def run(self) -> None:
        from ejlb.shim.receiver import ReceiverClosed

        while not self._stop_flag.is_set():
            try:
                ev = self.receiver.recv(timeout=0.1)
            except TimeoutError:
                continue
            except ReceiverClosed:
                return
            data = np.frombuffer(ev.payload, np.uint8)
            if data.size != self.expected.size or not np.array_equal(data, self.expected):
                self.bad += 1
            self.events += 1
            self.bytes += data.size
            self.last_at = time.monotonic()

    def stop(self) -> None:
        self._stop_flag.set()
        if self.is_alive():
            self.join(timeout=2)


def _wait_for_slots(mgr, lb_id: str, names: set[str], timeout: float) -> dict[str, int]:
    """Slots per worker name once every worker holds some (they are only ready after a state report)."""
    deadline = time.monotonic() + timeout
    slots: dict[str, int] = {}
    while time.monotonic() < deadline:
        status = mgr.status(lb_id)
        slots = {w.name: w.slotsAssigned for w in status.workers if w.name in names}
        if len(slots) == len(names) and all(slots.values()):
            return slots
        time.sleep(0.05)
    raise DemoError(f"workers did not all get calendar slots within {timeout:.0f} s (have {slots})")


@contextmanager
def _step(what: str):
    """Failures inside a step become a DemoError naming the step (the user's first run must say
    what did not work, not show a traceback)."""
    try:
        yield
    except (DemoError, KeyboardInterrupt):
        raise
    except Exception as e:
        raise DemoError(f"{what}: {type(e).__name__}: {e}") from e


def run_demo(config: DemoConfig = DemoConfig(),
             on_progress: Callable[[str, int, int], None] | None = None) -> DemoResult:
    """Run the demo end to end. `on_progress(stage, done, total)` is called with stage "setup"
    (steps), "send" (events sent) and "drain" (events delivered). Raises DemoError naming the
    step that failed; everything started is stopped and freed in any case."""
    from ejlb.control.client import LBManager
    from ejlb.control.config import ControlConfig, InstanceConfig
    from ejlb.control.server import ControlPlane
    from ejlb.shim.receiver import Receiver
    from ejlb.shim.sender import Sender

    progress = on_progress or (lambda stage, done, total: None)
    ip = "::1" if config.ipv6 else "127.0.0.1"
    expected = pattern(config.size)
    names = [f"worker-{i + 1}" for i in range(config.workers)]
    setup_steps = 4
    receivers: list = []
    drains: list[_Drain] = []
    admin = reservation = None

    with _step(f"starting the control plane and software LB on {ip}"):
        data_port = free_udp_port(ip)  # the software LB's own data port; loopback-only, ephemeral
        v4, v6 = (None, ip) if config.ipv6 else (ip, None)
        cp = ControlPlane(ControlConfig(
            host=ip, port=0, backend="software", sync_ipv4=v4, sync_ipv6=v6,
            controller_period=config.controller_period,
            instances=(InstanceConfig(lb_id=0, ipv4=v4, ipv6=v6, data_min_port=data_port, data_max_port=data_port),),
        )).start()
    try:
        progress("setup", 1, setup_steps)
        with _step("reserving a load balancer"):
            admin = LBManager(cp.admin_uri)
            reservation = admin.reserve(DEMO_LB_NAME, until=timedelta(minutes=10), senders=[ip],
                                        ip_family="ipv6" if config.ipv6 else "ipv4")
        progress("setup", 2, setup_steps)
        for name in names:
            with _step(f"starting receiver {name}"):
                rx = Receiver(reservation.uri, ip, 0, port_range=WORKER_PORT_BITS, register=True, name=name)
                receivers.append(rx)
                drains.append(_Drain(rx, expected))
                drains[-1].start()
        progress("setup", 3, setup_steps)
        slots = _wait_for_slots(admin, reservation.lb_id, set(names), config.settle_timeout)
        progress("setup", 4, setup_steps)

        start = time.monotonic()
        with _step("sending events"), Sender(reservation.uri, mtu=config.mtu, rate_gbps=config.rate_gbps,
                                             family=6 if config.ipv6 else 4) as sender:
            step = max(1, config.events // 100)
            for n in range(config.events):
                sender.send(expected)
                if n % step == 0:
                    progress("send", n + 1, config.events)
            progress("send", config.events, config.events)
        deadline = time.monotonic() + config.drain_timeout
        while time.monotonic() < deadline:
            got = sum(d.events for d in drains)
            progress("drain", got, config.events)
            if got >= config.events:
                break
            time.sleep(0.02)
        for d in drains:
            d.stop()
        last = max((d.last_at for d in drains), default=start)
        with _step("reading the final status and LB counters"):
            slots = {w.name: w.slotsAssigned for w in admin.status(reservation.lb_id).workers} or slots
            lb = lb_figures(cp.backend.counters(), reservation.reply.fpgaLbId)
        counts = [WorkerCounts(name=name, events=d.events, bytes=d.bytes, bad_events=d.bad,
                               lost=d.receiver.stats().lost, slots=slots.get(name, 0))
                  for name, d in zip(names, drains)]
        return summarize(reservation.lb_id, config.events, config.size, counts, max(last - start, 1e-9), lb)
    finally:
        for d in drains:
            d.stop()
        for rx in receivers:
            rx.close()
        if admin is not None:
            if reservation is not None:
                try:
                    admin.free(reservation.lb_id)
                except Exception:  # the control plane stops next anyway; never hide the real error
                    pass
            admin.close()
        cp.stop()
