"""`ejlb demo`: the whole system on one machine, in one call.

An embedded control plane with the software load balancer on loopback, one reservation, several
registered receivers (each on its own port range), one sender streaming generated events through
the LB; then a per-worker table (events, bytes, slot share, Gb/s, lost) and everything freed.

Heterogeneous workers (`speeds=(1, 2, 4)`): each worker's application loop then processes events at a
capacity proportional to its speed, by sleeping on an absolute-deadline schedule (so the machine's CPU
load does not change the capacities), and the sender is paced at `event_rate` events/s, which is
`load` (e.g. 0.75) of the total capacity. The control plane's balancer (`balancer`) should then move
calendar slots towards each worker's capacity share; the control plane is sampled every
`sample_period` seconds (slots, fill, drops) into `DemoResult.samples`, which `write_plot` draws.

    from ejlb.demo import DemoConfig, run_demo
    result = run_demo(DemoConfig(events=200, size=64 * 1024))
    assert result.ok

`run_demo` is the I/O shell (it also samples the control plane during the run); `summarize` (pure) turns
the counts and samples it collects into the table, so the table's arithmetic is tested on its own.
The CLI adds the progress bar through `on_progress`.
"""
from __future__ import annotations

import math
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, Sequence

import numpy as np

from ejlb.control.config import BALANCERS
from ejlb.errors import EjlbError

from ejlb.wire import CALENDAR_SLOTS, MAX_EVENT_LEN, MAX_MTU, header_overhead

DEMO_LB_NAME = "ejlb-demo"
WORKER_PORT_BITS = 2  # each worker listens on 4 ports: the sender's entropy spreads over them
DEFAULT_WORKERS = 3


class DemoError(EjlbError, RuntimeError):
    """The demo could not run (e.g. no loopback, workers never got slots); the message says which step."""


def _number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


@dataclass(frozen=True)
class DemoConfig:
    events: int = 2000
    size: int = 256 * 1024  # bytes per event
    workers: int | None = None  # None: one per speed, or DEFAULT_WORKERS; a different count than speeds is an error
    rate_gbps: float | None = 1.0  # None: as fast as the machine goes (loopback UDP then drops); unused with speeds
    mtu: int = MAX_MTU  # loopback carries jumbo datagrams
    ipv6: bool = False
    controller_period: float = 0.2  # seconds between calendar updates (the deployed default is 1 s)
    settle_timeout: float = 10.0  # for workers to register and get slots
    drain_timeout: float = 5.0  # after the last event is sent, for the rest to arrive
    speeds: tuple[float, ...] | None = None  # relative worker speeds; None: workers as fast as they go
    load: float = 0.75  # with speeds: the sender's event rate as a fraction of the workers' total capacity
    event_rate: float = 500.0  # with speeds: events/s the sender is paced at (sets the service times)
    balancer: str = "capacity"  # the embedded control plane's load-balancing law (ControlConfig.balancer)
    queue_size: int = 256  # each receiver's queue of completed events (full: events dropped and counted)
    sample_period: float = 0.2  # seconds between samples of the control plane (DemoResult.samples)

    def __post_init__(self) -> None:
        if self.speeds is not None:
            speeds = self.speeds
            if isinstance(speeds, (str, bytes)) or not hasattr(speeds, "__iter__"):
                raise ValueError(f"speeds={speeds!r}: must be a sequence of positive numbers, one per worker")
            speeds = tuple(speeds)
            if not 1 <= len(speeds) <= 64 or not all(_number(v) and v > 0 for v in speeds):
                raise ValueError(f"speeds={speeds!r}: must be 1..64 positive numbers, one per worker")
            if max(speeds) / min(speeds) > 1000:
                raise ValueError(f"speeds={speeds!r}: the fastest may be at most 1000 times the slowest")
            object.__setattr__(self, "speeds", speeds)
            if self.workers is None:
                object.__setattr__(self, "workers", len(speeds))
            elif self.workers != len(speeds):
                raise ValueError(f"workers={self.workers!r} conflicts with speeds={speeds!r} "
                                 f"({len(speeds)} speeds: one worker each)")
        elif self.workers is None:
            object.__setattr__(self, "workers", DEFAULT_WORKERS)
        checks = (("events", self.events, 1, 10**9), ("size", self.size, 0, MAX_EVENT_LEN),
                  ("workers", self.workers, 1, 64), ("mtu", self.mtu, header_overhead(self.ipv6) + 1, MAX_MTU),
                  ("queue_size", self.queue_size, 1, 1 << 20))
        for name, value, lo, hi in checks:
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"{name}={value!r}: must be an integer in {lo}..{hi}")
        if self.rate_gbps is not None and not (_number(self.rate_gbps) and self.rate_gbps > 0):
            raise ValueError(f"rate_gbps={self.rate_gbps!r}: must be a positive number of Gb/s, or None")
        if not (_number(self.load) and 0 < self.load <= 1):
            raise ValueError(f"load={self.load!r}: must be a fraction of the total capacity, > 0 and <= 1")
        if not (_number(self.event_rate) and 0 < self.event_rate <= 1e6):
            raise ValueError(f"event_rate={self.event_rate!r}: must be events per second, > 0 and <= 1e6")
        if self.balancer not in BALANCERS:
            raise ValueError(f"balancer={self.balancer!r}: must be one of {', '.join(BALANCERS)}")
        for name in ("controller_period", "settle_timeout", "drain_timeout", "sample_period"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 3600:
                raise ValueError(f"{name}={value!r}: must be a number of seconds in 0..3600")
        if self.sample_period < 0.01:
            raise ValueError(f"sample_period={self.sample_period!r}: must be at least 0.01 s")

    @property
    def base_service_time(self) -> float | None:
        """Seconds a speed-1 worker spends on one event, chosen so that the sender's `event_rate` is
        `load` of the total capacity sum(speeds) / base_service_time; None without speeds."""
        if self.speeds is None:
            return None
        return self.load * sum(self.speeds) / self.event_rate

    def service_times(self) -> list[float | None]:
        """Per worker: seconds per event (base / speed), or None (as fast as it goes)."""
        base = self.base_service_time
        return [None] * self.workers if base is None else [base / v for v in self.speeds]


@dataclass(frozen=True)
class WorkerCounts:
    """What one receiver saw, plus what the control plane gave it."""

    name: str
    events: int
    bytes: int
    bad_events: int  # wrong length or content
    lost: int  # events the receiver gave up on (timeout / eviction)
    slots: int  # at the end of the run
    dropped: int = 0  # complete events dropped because the worker's queue was full (event_enqueue_err)


@dataclass(frozen=True)
class Sample:
    """The control plane (and the workers' drop counters) at `t` seconds after the first send; the
    per-worker tuples are in worker order."""

    t: float
    slots: tuple[int, ...]  # calendar slots per worker, from the load-balancer status
    fill: tuple[float, ...]  # queue fill per worker (0..1) as last reported to the control plane
    dropped: tuple[int, ...]  # cumulative events dropped by full worker queues
    lb_drops: int = 0  # cumulative datagrams the LB dropped (all drop counters)


@dataclass(frozen=True)
class WorkerRow:
    name: str
    events: int
    bytes: int
    slots: int
    slot_share: float  # slots / 512 at the end
    event_share: float  # events / all events received
    gbps: float
    lost: int
    bad_events: int
    dropped: int = 0  # events dropped because the worker's queue was full
    speed: float | None = None
    capacity_share: float | None = None  # speed / sum(speeds); None without speeds
    slot_share_avg: float | None = None  # time-averaged slot share over the second half of the run (None: no samples)


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
    dropped: int = 0  # events dropped by full worker queues, all workers
    speeds: tuple[float, ...] | None = None
    balancer: str | None = None
    load: float | None = None  # with speeds: offered event rate / total capacity
    event_rate: float | None = None  # with speeds: events/s the sender was paced at
    base_service_time: float | None = None  # with speeds: seconds per event of a speed-1 worker
    samples: list[Sample] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.events_missing == 0 and self.bad_events == 0 and self.lost == 0

    @property
    def accounted(self) -> bool:
        """Every event arrived whole except those dropped by full worker queues (with slow workers,
        what a balancer that does not follow capacity costs) -- nothing vanished or was corrupted."""
        return self.bad_events == 0 and self.lost == 0 and self.events_missing == self.dropped

    def table(self) -> list[dict]:
        return [w.__dict__.copy() for w in self.workers]


def time_average(samples: Sequence[tuple[float, Sequence[float]]], t0: float, t1: float) -> list[float] | None:
    """Time average over [t0, t1] of a piecewise-constant vector series given as (t, values) samples
    (each holds until the next; the first also stands for the time before it). None: no samples or
    an empty window (pure)."""
    pts = sorted(samples, key=lambda p: p[0])
    if not pts or not t1 > t0:
        return None
    acc = [0.0] * len(pts[0][1])
    for k, (t, values) in enumerate(pts):
        start = t0 if k == 0 else max(t, t0)
        end = min(pts[k + 1][0], t1) if k + 1 < len(pts) else t1
        if end > start:
            for i, v in enumerate(values):
                acc[i] += v * (end - start)
    return [a / (t1 - t0) for a in acc]


def summarize(lb_id: str, events_sent: int, event_size: int, workers: Sequence[WorkerCounts],
              elapsed_s: float, lb: LBFigures = LBFigures(), *, speeds: Sequence[float] | None = None,
              samples: Sequence[Sample] = (), balancer: str | None = None, load: float | None = None,
              event_rate: float | None = None) -> DemoResult:
    """The final table from raw counts (pure). With `speeds` (one per worker) each row gets its
    capacity share; with `samples`, its slot share time-averaged over the second half of the run
    (elapsed_s / 2 .. elapsed_s)."""
    if speeds is not None and len(speeds) != len(workers):
        raise ValueError(f"speeds={tuple(speeds)!r}: need one per worker ({len(workers)})")
    received = sum(w.events for w in workers)
    total_speed = sum(speeds) if speeds is not None else 0.0
    averages = time_average([(s.t, [n / CALENDAR_SLOTS for n in s.slots]) for s in samples
                             if len(s.slots) == len(workers)], elapsed_s / 2, elapsed_s)
    rows = [WorkerRow(
        name=w.name, events=w.events, bytes=w.bytes, slots=w.slots, slot_share=w.slots / CALENDAR_SLOTS,
        event_share=w.events / received if received else 0.0,
        gbps=w.bytes * 8 / elapsed_s / 1e9 if elapsed_s > 0 else 0.0, lost=w.lost, bad_events=w.bad_events,
        dropped=w.dropped, speed=speeds[i] if speeds is not None else None,
        capacity_share=speeds[i] / total_speed if speeds is not None else None,
        slot_share_avg=averages[i] if averages is not None else None,
    ) for i, w in enumerate(workers)]
    total_bytes = sum(w.bytes for w in workers)
    base = load * total_speed / event_rate if speeds is not None and load and event_rate else None
    return DemoResult(
        lb_id=lb_id, events_sent=events_sent, bytes_sent=events_sent * event_size, events_received=received,
        events_missing=max(events_sent - received, 0), lost=sum(w.lost for w in workers),
        bad_events=sum(w.bad_events for w in workers), elapsed_s=elapsed_s,
        gbps=total_bytes * 8 / elapsed_s / 1e9 if elapsed_s > 0 else 0.0, workers=rows, lb=lb,
        dropped=sum(w.dropped for w in workers), speeds=tuple(speeds) if speeds is not None else None,
        balancer=balancer, load=load if speeds is not None else None,
        event_rate=event_rate if speeds is not None else None, base_service_time=base, samples=list(samples),
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
    """One worker's application loop: counts its events and checks each against the expected payload.

    With a `service_time` it processes at most one event per service_time seconds, by sleeping on an
    absolute-deadline schedule (next += service_time; sleep(next - now)): oversleeping is made up on
    the next events, so the capacity is 1 / service_time whatever the CPU load, as long as the check
    itself fits in the service time. The schedule restarts at the arrival of an event that found the
    queue empty, so idle time is not saved up for a burst."""

    def __init__(self, receiver, expected: np.ndarray, service_time: float | None = None):
        super().__init__(daemon=True, name=f"demo-drain-{receiver.base_port}")
        self.receiver = receiver
        self.expected = expected
        self.service_time = service_time
        self.events = self.bytes = self.bad = 0
        self.last_at = 0.0
        self._stop_flag = threading.Event()

    def run(self) -> None:
        from ejlb.shim.events import ReceiverClosed

        next_at = time.monotonic()
        while not self._stop_flag.is_set():
            try:
                ev = self.receiver.recv_nowait()
                if ev is None:  # queue empty: wait, and the schedule restarts at this arrival
                    ev = self.receiver.recv(timeout=0.1)
                    next_at = time.monotonic()
            except TimeoutError:
                continue
            except ReceiverClosed:
                return
            data = np.frombuffer(ev.payload, np.uint8)
            if data.size != self.expected.size or not np.array_equal(data, self.expected):
                self.bad += 1
            size = data.size
            del data, ev  # the payload's buffer goes back to the receiver's pool now
            if self.service_time is not None:
                next_at += self.service_time
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            self.events += 1
            self.bytes += size
            self.last_at = time.monotonic()

    def stop(self) -> None:
        self._stop_flag.set()
        if self.is_alive():
            self.join(timeout=2)


class _Sampler(threading.Thread):
    """Samples the control plane's view every `period` seconds (slots and reported fill per worker,
    from the load-balancer status) with the workers' queue drops and the LB's drop counters."""

    def __init__(self, sample, period: float):
        super().__init__(daemon=True, name="demo-sampler")
        self.sample = sample  # () -> Sample
        self.period = period
        self.samples: list[Sample] = []
        self._stop_flag = threading.Event()

    def take(self) -> None:
        try:
            self.samples.append(self.sample())
        except Exception:  # a missed sample is a gap in the plot, never a failed demo
            pass

    def run(self) -> None:
        next_at = time.monotonic()
        while not self._stop_flag.is_set():
            self.take()
            next_at += self.period
            self._stop_flag.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> list[Sample]:
        self._stop_flag.set()
        if self.is_alive():
            self.join(timeout=5)
        return self.samples


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
    service_times = config.service_times()
    setup_steps = 4
    receivers: list = []
    drains: list[_Drain] = []
    sampler: _Sampler | None = None
    admin = reservation = None

    with _step(f"starting the control plane and software LB on {ip}"):
        data_port = free_udp_port(ip)  # the software LB's own data port; loopback-only, ephemeral
        v4, v6 = (None, ip) if config.ipv6 else (ip, None)
        cp = ControlPlane(ControlConfig(
            host=ip, port=0, backend="software", sync_ipv4=v4, sync_ipv6=v6,
            controller_period=config.controller_period, balancer=config.balancer,
            instances=(InstanceConfig(lb_id=0, ipv4=v4, ipv6=v6, data_min_port=data_port, data_max_port=data_port),),
        )).start()
    try:
        progress("setup", 1, setup_steps)
        with _step("reserving a load balancer"):
            admin = LBManager(cp.admin_uri)
            reservation = admin.reserve(DEMO_LB_NAME, until=timedelta(minutes=10), senders=[ip],
                                        ip_family="ipv6" if config.ipv6 else "ipv4")
        progress("setup", 2, setup_steps)
        for name, service_time in zip(names, service_times):
            with _step(f"starting receiver {name}"):
                rx = Receiver(reservation.uri, ip, 0, port_range=WORKER_PORT_BITS, register=True, name=name,
                              queue_size=config.queue_size)
                receivers.append(rx)
                drains.append(_Drain(rx, expected, service_time))
                drains[-1].start()
        progress("setup", 3, setup_steps)
        slots = _wait_for_slots(admin, reservation.lb_id, set(names), config.settle_timeout)
        progress("setup", 4, setup_steps)

        fpga_lb = reservation.reply.fpgaLbId
        start = time.monotonic()

        def sample() -> Sample:
            t = time.monotonic() - start
            status = {w.name: w for w in admin.status(reservation.lb_id).workers}
            lb_drops = sum(lb_figures(cp.backend.counters(), fpga_lb).drops.values())
            return Sample(t=t, slots=tuple(status[n].slotsAssigned if n in status else 0 for n in names),
                          fill=tuple(float(status[n].fillPercent) if n in status else 0.0 for n in names),
                          dropped=tuple(rx.stats().event_enqueue_err for rx in receivers), lb_drops=lb_drops)

        sampler = _Sampler(sample, config.sample_period)
        sampler.take()  # t = 0: the calendar the first event meets
        sampler.start()
        # With speeds the sender is paced by events (absolute deadlines, like the workers); the
        # datagrams of one event then leave back to back (loopback takes the short burst).
        interval = 1 / config.event_rate if config.speeds is not None else None
        rate_gbps = None if interval is not None else config.rate_gbps
        with _step("sending events"), Sender(reservation.uri, mtu=config.mtu, rate_gbps=rate_gbps,
                                             family=6 if config.ipv6 else 4) as sender:
            step = max(1, config.events // 100)
            next_at = time.monotonic()
            for n in range(config.events):
                if interval is not None:
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    next_at += interval
                sender.send(expected)
                if n % step == 0:
                    progress("send", n + 1, config.events)
            progress("send", config.events, config.events)
        deadline = time.monotonic() + config.drain_timeout
        while time.monotonic() < deadline:
            got = sum(d.events for d in drains)
            dropped = sum(rx.stats().event_enqueue_err for rx in receivers)
            progress("drain", got, config.events)
            if got + dropped >= config.events:
                break
            time.sleep(0.02)
        for d in drains:
            d.stop()
        samples = sampler.stop()
        last = max((d.last_at for d in drains), default=start)
        with _step("reading the final status and LB counters"):
            slots = {w.name: w.slotsAssigned for w in admin.status(reservation.lb_id).workers} or slots
            lb = lb_figures(cp.backend.counters(), fpga_lb)
        counts = []
        for name, d in zip(names, drains):
            stats = d.receiver.stats()
            counts.append(WorkerCounts(name=name, events=d.events, bytes=d.bytes, bad_events=d.bad, lost=stats.lost,
                                       slots=slots.get(name, 0), dropped=stats.event_enqueue_err))
        return summarize(reservation.lb_id, config.events, config.size, counts, max(last - start, 1e-9), lb,
                         speeds=config.speeds, samples=samples, balancer=config.balancer, load=config.load,
                         event_rate=config.event_rate)
    finally:
        if sampler is not None:
            sampler.stop()
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


def write_plot(result: DemoResult, path) -> None:
    """Draw `result.samples` into a PNG at `path` (matplotlib, imported here, Agg canvas): top,
    each worker's slot share over time with its capacity share dashed; bottom, each worker's
    reported queue fill, and on the right axis the cumulative events dropped by full queues (and
    datagrams dropped by the LB, when there are any)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    samples = result.samples
    t = [s.t for s in samples]
    fig = Figure(figsize=(9, 6.5), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    colors = [f"C{i % 10}" for i in range(len(result.workers))]
    for i, (w, color) in enumerate(zip(result.workers, colors)):
        label = w.name if w.speed is None else f"{w.name} (speed {w.speed:g})"
        top.step(t, [s.slots[i] / CALENDAR_SLOTS for s in samples], where="post", color=color, label=label)
        if w.capacity_share is not None:
            top.axhline(w.capacity_share, color=color, linestyle="--", linewidth=1)
        bottom.step(t, [s.fill[i] for s in samples], where="post", color=color, label=f"{w.name} fill")
    top.set_ylabel("slot share (dashed: capacity share)")
    top.set_ylim(0, None)
    load = f", load {result.load:.0%} of capacity" if result.load is not None else ""
    top.set_title(f"ejlb demo: balancer {result.balancer or '?'}{load}, {result.events_sent} events")
    top.legend(loc="upper right", fontsize="small")
    top.grid(alpha=0.3)
    bottom.set_ylabel("queue fill")
    bottom.set_ylim(0, 1.05)
    bottom.set_xlabel("seconds since the first event")
    bottom.grid(alpha=0.3)
    drops = bottom.twinx()
    drops.plot(t, [sum(s.dropped) for s in samples], color="black", linestyle=":", label="events dropped (queues full)")
    if any(s.lb_drops for s in samples):
        drops.plot(t, [s.lb_drops for s in samples], color="gray", linestyle="-.", label="datagrams dropped by LB")
    drops.set_ylabel("cumulative drops")
    drops.yaxis.set_major_locator(MaxNLocator(integer=True))
    drops.set_ylim(0, max([1] + [max(sum(s.dropped), s.lb_drops) for s in samples]) * 1.1)
    lines = bottom.get_legend_handles_labels()
    more = drops.get_legend_handles_labels()
    bottom.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize="small")
    fig.savefig(path, format="png", dpi=100)
