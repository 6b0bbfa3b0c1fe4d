"""Balancing quality with real processes on loopback: does each worker get the share of the calendar
its capacity calls for, how fast after a change, and what is lost on the way?

For every scenario and every variant (all in the same run, one after the other) this starts
`ejlb serve` (software LB, `--balancer capacity|signal`, controller period 1 s), reserves a load
balancer with the admin URI, starts N worker processes (benchmarks/balance_worker.py: an
`ejlb.Receiver` registered with the reservation's token, queue_size 150, whose application loop
sleep-schedules a fixed service time per event: capacity = 1/service exactly, whatever the CPU load)
and one sender process (64 KiB events, sync packets, paced on an absolute schedule at `load` × the
total capacity of the tightest phase). Half-way through it changes something (a worker slows down,
speeds up, joins or leaves). Meanwhile it polls LoadBalancerStatus every 0.25 s (slots, fill, control
signal, epoch, and each worker's slot ranges, so slot moves are exact) and reads the workers' own
counters every 0.25 s.

    python benchmarks/bench_balance.py                       # all scenarios x all variants, ~40 s each
    python benchmarks/bench_balance.py --quick               # smoke run: 8 s per run
    python benchmarks/bench_balance.py --scenarios hetero slowdown --variants previous deployed \\
        --duration 60 --json out.json --plot plots/

Variants: `capacity` (--balancer capacity, receivers with default settings), `previous` (--balancer
signal, receivers min_factor 0.5 / max_factor 2.0 with the default PID: the previous algorithm),
`deployed` (--balancer signal, pid=(0,0,0), min 0.5 / max 2.0: E2SAR's zero gains, no feedback).

Figures per scenario and variant: events sent; events lost (receive-queue overflow + reassembly
losses) in total, in start-up (before the change) and after the change (drain included); events
"unseen" (sent but never reached any receiver whole or lost: dropped in the kernel/LB or sent to a
worker that had left); epochs until every worker's slot share is within ±10 % (relative) of its
capacity share, first (distinct currentEpoch values from the phase start; probes leave the band
briefly by design), and the fraction of the phase's second half spent in band; fill spread (mean over polls of max - min reported
fill); slot moves (slots whose owner changed, summed over epochs, from the workers' SlotRanges; "≥"
marks runs where a poll missed an epoch, so a move count spans two); calendar changes per minute in
the second half of the last phase (the steady part).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from probes import markdown_table  # noqa: E402

from ejlb.wire import CALENDAR_SLOTS  # noqa: E402

WORKER = os.path.join(HERE, "balance_worker.py")
BAND = 0.10  # relative tolerance of a slot share around its capacity share
POLL_S = 0.25
EVENT_SIZE = 64 * 1024


def log_tail(log, path: str, n: int) -> str:
    """The last n characters a child process wrote to its log file ('' if unreadable)."""
    try:
        log.flush()
        with open(path) as f:
            return f.read()[-n:]
    except OSError:
        return ""


# --- scenarios and variants --------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerPlan:
    name: str
    service: float  # seconds per event at the start (capacity = 1 / service)
    weight: float = 1.0  # registered weight
    service_after: float | None = None  # speed change at the change time
    joins: bool = False  # registers at the change time
    leaves: bool = False  # closes its receiver (deregisters) at the change time


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    workers: tuple[WorkerPlan, ...]
    load: float = 0.75  # of the total capacity of the tightest phase
    stretch: float = 1.0  # x --duration: a speed-up is found only by probes, after 30 s of quiet each

    @property
    def has_change(self) -> bool:
        return any(w.service_after is not None or w.joins or w.leaves for w in self.workers)

    def capacities(self, after: bool) -> dict[str, float]:
        """Events/s of the workers present before (after=False) or after the change."""
        out = {}
        for w in self.workers:
            if (w.joins and not after) or (w.leaves and after):
                continue
            service = w.service_after if after and w.service_after is not None else w.service
            out[w.name] = 1.0 / service
        return out

    def rate(self, load: float | None = None) -> float:
        """Sender events/s: load x total capacity of the tighter phase, so the load holds in both."""
        totals = [sum(self.capacities(False).values())]
        if self.has_change:
            totals.append(sum(self.capacities(True).values()))
        return (self.load if load is None else load) * min(totals)


def _three(**changes) -> tuple[WorkerPlan, ...]:
    """Workers with capacities 4:2:1 (2, 4, 8 ms per event); `changes` apply to w3."""
    return (WorkerPlan("w1", 0.002), WorkerPlan("w2", 0.004), WorkerPlan("w3", 0.008, **changes))


SCENARIOS = {s.name: s for s in (
    Scenario("hetero", "capacities 4:2:1 (2/4/8 ms), 75 % load, no change", _three()),
    Scenario("slowdown", "4:2:1; the slowest (8 ms) becomes 4x slower (32 ms) at mid-run", _three(service_after=0.032)),
    Scenario("speedup", "4:2:1; the slow worker (8 ms) becomes 4x faster (2 ms) at mid-run", _three(service_after=0.002),
             stretch=4.0),
    Scenario("join", "4:2:1 registered with weights 4:2:1; the 8 ms worker joins at mid-run",
             (WorkerPlan("w1", 0.002, weight=4.0), WorkerPlan("w2", 0.004, weight=2.0),
              WorkerPlan("w3", 0.008, weight=1.0, joins=True))),
    Scenario("leave", "4:2:1; the 8 ms worker leaves (deregisters) at mid-run", _three(leaves=True)),
    Scenario("steady", "three equal workers (4 ms), 75 % load", tuple(WorkerPlan(f"w{i}", 0.004) for i in (1, 2, 3))),
    Scenario("overload", "4:2:1 at 120 % of the total capacity", _three(), load=1.2),
)}


@dataclass(frozen=True)
class Variant:
    name: str
    balancer: str
    receiver_kwargs: dict = field(default_factory=dict)


VARIANTS = {v.name: v for v in (
    Variant("capacity", "capacity", {}),
    Variant("previous", "signal", {"min_factor": 0.5, "max_factor": 2.0}),
    Variant("deployed", "signal", {"pid": [0.0, 0.0, 0.0], "min_factor": 0.5, "max_factor": 2.0}),
)}


# --- child processes ---------------------------------------------------------------------------
class Child:
    """A subprocess speaking balance_worker.py's protocol: JSON lines out, commands in."""

    def __init__(self, name: str, argv: list[str], log_path: str):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True, bufsize=1)
        self.messages: list[dict] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"read-{name}")
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self.messages.append(msg)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def send(self, command: str) -> None:
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def wait_for(self, pred, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for msg in self.messages[seen:]:
                    if pred(msg):
                        return msg
                seen = len(self.messages)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    return None
                self._cond.wait(min(left, 0.2))

    def reports(self) -> list[dict]:
        with self._cond:
            return [m for m in self.messages if m.get("kind") == "report"]

    def last_report(self) -> dict | None:
        r = self.reports()
        return r[-1] if r else None

    def stderr_tail(self, n: int = 600) -> str:
        return log_tail(self._log, self.log_path, n)

    def finish(self, timeout: float = 5.0) -> None:
        """Close stdin (EOF = quit), wait, then kill."""
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(2)
        self._log.close()


class Serve:
    """`ejlb serve` as a subprocess; the admin URI comes back through --uri-file."""

    def __init__(self, balancer: str, workdir: str, period: float):
        from ejlb.demo import free_udp_port

        uri_file = os.path.join(workdir, "admin.uri")
        data_port = free_udp_port("127.0.0.1")
        self.log_path = os.path.join(workdir, "serve.log")
        self._log = open(self.log_path, "w")
        argv = [sys.executable, "-m", "ejlb.cli.main", "serve", "--listen", "127.0.0.1:0", "--uri-file", uri_file,
                "--balancer", balancer, "--controller-period", str(period), "--sync-ipv4", "127.0.0.1",
                "--instance", f"lb_id=0,ipv4=127.0.0.1,ipv6=none,ports={data_port}", "--log-level", "warning"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log)
        deadline = time.monotonic() + 30
        self.admin_uri = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with open(uri_file) as f:
                    text = f.read()
                if text.endswith("\n"):
                    self.admin_uri = text.strip()
                    return
            except FileNotFoundError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"ejlb serve did not start: {self.tail()}")

    def tail(self, n: int = 800) -> str:
        return log_tail(self._log, self.log_path, n)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


# --- one run -----------------------------------------------------------------------------------
def owners_of(status) -> list:
    """Calendar slot -> worker name (None: unassigned), from the workers' SlotRanges."""
    owner: list = [None] * CALENDAR_SLOTS
    for w in status.workers:
        for r in w.slots:
            lo = max(0, r.index)
            owner[lo:lo + r.length] = [w.name] * (min(CALENDAR_SLOTS, lo + r.length) - lo)
    return owner


def run_one(scenario: Scenario, variant: Variant, *, duration: float, queue_size: int, load: float | None,
            period: float = 1.0, log=print) -> dict:
    """Runs one scenario with one variant; returns the raw record (times relative to the sender's
    first event, t0). Every child is stopped and the reservation freed whatever happens."""
    from ejlb.control.client import LBManager

    rate = scenario.rate(load)
    change_rel = duration / 2 if scenario.has_change else None
    raw: dict = dict(scenario=scenario.name, variant=variant.name, balancer=variant.balancer,
                     receiver_kwargs=variant.receiver_kwargs, duration=duration, queue_size=queue_size,
                     load=scenario.load if load is None else load, rate=rate, event_size=EVENT_SIZE,
                     controller_period=period,
                     plan=[w.__dict__ for w in scenario.workers], changes=[], capacity={}, status=[], workers={},
                     sender={}, final={}, error=None)
    workdir = tempfile.mkdtemp(prefix=f"bench-balance-{scenario.name}-{variant.name}-")
    serve = admin = res = sender = None
    children: dict[str, Child] = {}
    cap_events: list[tuple[float, str, float | None]] = []  # absolute monotonic time, worker, events/s
    samples: list[dict] = []
    prev = {"epoch": None, "owner": None}

    def poll() -> None:
        t_a = time.monotonic()
        try:
            st = admin.status(res.lb_id)
        except Exception as e:  # a slow poll is data too; keep going
            samples.append(dict(t=t_a, error=str(e)))
            return
        t = (t_a + time.monotonic()) / 2
        owner = owners_of(st)
        sample = dict(t=t, epoch=int(st.currentEpoch),
                      workers={w.name: dict(slots=w.slotsAssigned, fill=round(w.fillPercent, 4),
                                            signal=round(w.controlSignal, 2)) for w in st.workers})
        if prev["epoch"] is not None and sample["epoch"] != prev["epoch"]:
            sample["moves"] = sum(a != b for a, b in zip(owner, prev["owner"]))
            sample["epoch_jump"] = sample["epoch"] - prev["epoch"]
        prev["epoch"], prev["owner"] = sample["epoch"], owner
        samples.append(sample)

    def start_worker(w: WorkerPlan) -> Child:
        argv = [sys.executable, WORKER, "receiver", "--uri", str(res.uri), "--name", w.name,
                "--service", repr(w.service), "--queue-size", str(queue_size), "--weight", repr(w.weight),
                "--receiver-kwargs", json.dumps(variant.receiver_kwargs)]
        if w.joins:
            argv.append("--deferred")
        return Child(w.name, argv, os.path.join(workdir, f"{w.name}.log"))

    def ready(child: Child, timeout: float) -> dict:
        msg = child.wait_for(lambda m: m.get("kind") == "ready", timeout)
        if msg is None:
            raise RuntimeError(f"worker {child.name} did not register: {child.stderr_tail()}")
        return msg

    t0 = None
    try:
        serve = Serve(variant.balancer, workdir, period)
        admin = LBManager(serve.admin_uri, timeout=5.0)
        res = admin.reserve("bench-balance", until=dt.timedelta(minutes=30), senders=["127.0.0.1"],
                            ip_family="ipv4")
        for w in scenario.workers:
            children[w.name] = start_worker(w)
        for w in scenario.workers:
            if not w.joins:
                msg = ready(children[w.name], 30)
                cap_events.append((msg["registered_at"], w.name, 1.0 / w.service))
        initial = {w.name for w in scenario.workers if not w.joins}
        deadline = time.monotonic() + 20
        while True:  # every initial worker holds slots (ready after its first state report and a tick)
            poll()
            last = samples[-1].get("workers", {})
            if all(last.get(n, {}).get("slots", 0) > 0 for n in initial):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers never all got slots: {last}")
            time.sleep(POLL_S)

        sender = Child("sender", [sys.executable, WORKER, "sender", "--uri", str(res.uri), "--rate", repr(rate),
                                  "--size", str(EVENT_SIZE), "--duration", str(duration + 30)],
                       os.path.join(workdir, "sender.log"))
        msg = sender.wait_for(lambda m: m.get("kind") == "started", 30)
        if msg is None:
            raise RuntimeError(f"sender did not start: {sender.stderr_tail()}")
        t0 = msg["t"]
        log(f"  {scenario.name}/{variant.name}: sending {rate:.0f} ev/s for {duration:.0f} s")
        end = t0 + duration
        change_at = None if change_rel is None else t0 + change_rel
        next_poll = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if change_at is not None and now >= change_at:
                for w in scenario.workers:
                    child = children[w.name]
                    if w.service_after is not None:
                        child.send(f"service {w.service_after!r}")
                        t = time.monotonic()
                        cap_events.append((t, w.name, 1.0 / w.service_after))
                        raw["changes"].append(dict(t=t, what=f"{w.name}: {w.service * 1e3:g} -> "
                                                              f"{w.service_after * 1e3:g} ms per event"))
                    if w.joins:
                        child.send("start")
                        msg = ready(child, 15)
                        cap_events.append((msg["registered_at"], w.name, 1.0 / w.service))
                        raw["changes"].append(dict(t=msg["registered_at"], what=f"{w.name} joins (weight {w.weight:g})"))
                    if w.leaves:
                        t = time.monotonic()
                        child.send("leave")
                        cap_events.append((t, w.name, None))
                        raw["changes"].append(dict(t=t, what=f"{w.name} leaves"))
                change_at = None
            if now >= next_poll:
                poll()
                next_poll += POLL_S
                if next_poll < time.monotonic():
                    next_poll = time.monotonic() + POLL_S
            time.sleep(max(0.0, min(next_poll, end, change_at or end) - time.monotonic()))

        sender.send("stop")
        fin = sender.wait_for(lambda m: m.get("final"), 10)
        if fin is None:
            raise RuntimeError(f"sender did not stop: {sender.stderr_tail()}")
        raw["sender"] = dict(sent=fin["sent"], errors=fin["errors"], resets=fin["resets"], elapsed=fin["elapsed"],
                             sync_packets=fin.get("sync_packets"), send_errors=fin.get("send_errors"),
                             reports=[dict(t=m["t"] - t0, sent=m["sent"]) for m in sender.reports()])
        # drain: until every queue is empty and nothing moved for a while (the slowest needs seconds)
        drain_end = time.monotonic() + 8
        stable_since, last_counts = time.monotonic(), None
        while time.monotonic() < drain_end:
            poll()
            reps = {n: c.last_report() for n, c in children.items() if c.proc.poll() is None}
            counts = tuple((r or {}).get("processed", 0) + (r or {}).get("enqueue_err", 0) for r in reps.values())
            if counts != last_counts:
                last_counts, stable_since = counts, time.monotonic()
            elif time.monotonic() - stable_since > 0.75 and all((r or {}).get("fill", 0) == 0 for r in reps.values()):
                break
            time.sleep(POLL_S)
        for child in children.values():
            child.send("quit")
        for name, child in children.items():
            fin = child.wait_for(lambda m: m.get("final"), 10)
            raw["final"][name] = fin or {}
    except Exception as e:
        raw["error"] = f"{type(e).__name__}: {e}"
        if serve is not None:
            raw["error"] += f" | serve log: {serve.tail(300)}"
    except BaseException:  # interrupted: clean up, keep nothing
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    finally:
        for child in list(children.values()) + ([sender] if sender else []):
            child.finish(5)
        if admin is not None:
            if res is not None:
                try:
                    admin.free(res.lb_id)
                except Exception:
                    pass
            admin.close()
        if serve is not None:
            serve.stop()
    base = t0 if t0 is not None else (samples[0]["t"] if samples else 0.0)
    raw["t0_monotonic"] = base
    raw["end"] = duration
    raw["change_at"] = (raw["changes"][0]["t"] - base) if raw["changes"] else None
    for c in raw["changes"]:
        c["t"] -= base
    for s in samples:
        s["t"] -= base
    raw["status"] = samples
    for name, child in children.items():
        raw["workers"][name] = [dict({k: v for k, v in m.items() if k != "kind"}, t=m["t"] - base)
                                for m in child.reports()]
    for t, name, cap in sorted(cap_events):
        raw["capacity"].setdefault(name, []).append([t - base, cap])
    if raw["error"]:
        raw["workdir"] = workdir  # logs kept for the post-mortem
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return raw


# --- analysis (pure: raw record in, figures out) -------------------------------------------------
def capacities_at(raw: dict, t: float) -> dict[str, float]:
    """Events/s of each worker present at relative time t."""
    out = {}
    for name, steps in raw["capacity"].items():
        cap = None
        for ts, c in steps:
            if ts <= t:
                cap = c
        if cap:
            out[name] = cap
    return out


def in_band(sample: dict, caps: dict[str, float], band: float = BAND) -> bool:
    total = sum(caps.values())
    if not total:
        return False
    workers = sample.get("workers", {})
    for name, cap in caps.items():
        share = workers.get(name, {}).get("slots", 0) / CALENDAR_SLOTS
        want = cap / total
        if abs(share - want) > band * want:
            return False
    return True


def phases(raw: dict) -> list[tuple[str, float, float]]:
    end = raw["end"]
    if raw.get("change_at") is None:
        return [("start-up", 0.0, end)]
    return [("start-up", 0.0, raw["change_at"]), ("after change", raw["change_at"], end)]


def band_reach(raw: dict, t_start: float, t_end: float) -> dict:
    """Epochs (distinct currentEpoch values after the one current at t_start) and seconds until the
    shares first enter the band (None: never), and the fraction of the phase's second half in band."""
    samples = [s for s in raw["status"] if "epoch" in s]
    seg = [s for s in samples if t_start <= s["t"] <= t_end]
    if not seg:
        return dict(epochs=None, seconds=None)
    before = [s for s in samples if s["t"] <= t_start]
    ref = before[-1]["epoch"] if before else seg[0]["epoch"]
    ok = [in_band(s, capacities_at(raw, s["t"])) for s in seg]
    second_half = ok[len(ok) // 2:]
    frac = sum(second_half) / len(second_half)
    if not any(ok):
        return dict(epochs=None, seconds=None, in_band_fraction=frac)
    k = ok.index(True)  # first entry: a probe leaves the band for a tick or two, by design
    epochs = len({s["epoch"] for s in seg[:k + 1]} | {ref}) - 1
    return dict(epochs=epochs, seconds=max(0.0, seg[k]["t"] - t_start), in_band_fraction=frac)


def losses_at(raw: dict, t: float | None) -> dict[str, int]:
    """Per worker: events lost to queue overflow + reassembly, cumulative at time t (None: final)."""
    out = {}
    for name, reps in raw["workers"].items():
        if t is None:
            rep = raw["final"].get(name) or (reps[-1] if reps else {})
        else:
            rep = next((r for r in reversed(reps) if r["t"] <= t), {})
        out[name] = rep.get("enqueue_err", 0) + rep.get("reassembly_err", 0)
    return out


def offered_at(raw: dict, name: str, t: float | None) -> int:
    """Events reassembled by one worker (offered to its queue) up to time t (None: final)."""
    reps = raw["workers"].get(name, [])
    if t is None:
        rep = raw["final"].get(name) or (reps[-1] if reps else {})
    else:
        rep = next((r for r in reversed(reps) if r["t"] <= t), {})
    return rep.get("reassembled", 0)


def analyze(raw: dict) -> dict:
    out: dict = dict(scenario=raw["scenario"], variant=raw["variant"], error=raw.get("error"),
                     rate=raw["rate"], sent=raw.get("sender", {}).get("sent"))
    if raw.get("error") or not raw["status"]:
        return out
    final = {n: raw["final"].get(n) or (r[-1] if r else {}) for n, r in raw["workers"].items()}
    lost_final = losses_at(raw, None)
    out["lost"] = sum(lost_final.values())
    out["lost_by_worker"] = lost_final
    out["overflow"] = sum(f.get("enqueue_err", 0) for f in final.values())
    out["reassembly_lost"] = sum(f.get("reassembly_err", 0) for f in final.values())
    out["processed"] = sum(f.get("processed", 0) for f in final.values())
    out["abandoned"] = sum(f.get("abandoned", 0) for f in final.values())
    accounted = sum(f.get("reassembled", 0) + f.get("reassembly_err", 0) for f in final.values())
    out["unseen"] = (out["sent"] or 0) - accounted
    out["processed_by_worker"] = {n: f.get("processed", 0) for n, f in final.items()}
    ph = phases(raw)
    out["phases"] = []
    for name, a, b in ph:
        last = b == ph[-1][2]
        lost = sum((losses_at(raw, None if last else b)[n] - losses_at(raw, a)[n]) for n in raw["workers"])
        seg = [s for s in raw["status"] if "epoch" in s and a <= s["t"] <= b]
        spreads = []
        for s in seg:
            fills = [s["workers"][n]["fill"] for n in capacities_at(raw, s["t"]) if n in s["workers"]]
            if len(fills) > 1:
                spreads.append(max(fills) - min(fills))
        offered = {n: offered_at(raw, n, None if last else b) - offered_at(raw, n, a) for n in raw["workers"]}
        total = sum(offered.values())
        caps = capacities_at(raw, (a + b) / 2)
        out["phases"].append(dict(
            name=name, start=a, end=b, lost=lost, band=band_reach(raw, a, b),
            fill_spread=sum(spreads) / len(spreads) if spreads else None,
            # events each worker was offered (reassembled) vs its capacity share, over the phase
            event_share={n: v / total for n, v in offered.items()} if total else {},
            capacity_share={n: c / sum(caps.values()) for n, c in caps.items()}))
    run = [s for s in raw["status"] if "epoch" in s and 0 <= s["t"] <= raw["end"]]
    spreads = []
    for s in run:
        fills = [s["workers"][n]["fill"] for n in capacities_at(raw, s["t"]) if n in s["workers"]]
        if len(fills) > 1:
            spreads.append(max(fills) - min(fills))
    out["fill_spread"] = sum(spreads) / len(spreads) if spreads else None
    changed = [s for s in run if "moves" in s]
    out["epochs"] = sum(s["epoch_jump"] for s in changed)
    out["slot_moves"] = sum(s["moves"] for s in changed)
    out["moves_lower_bound"] = any(s["epoch_jump"] > 1 for s in changed)
    out["moves_per_epoch"] = out["slot_moves"] / out["epochs"] if out["epochs"] else 0.0
    a, b = ph[-1][1], ph[-1][2]
    mid = (a + b) / 2
    steady = [s for s in run if s["t"] >= mid]
    if len(steady) > 1 and steady[-1]["t"] > steady[0]["t"]:
        n = steady[-1]["epoch"] - steady[0]["epoch"]
        out["epochs_per_min_steady"] = n * 60.0 / (steady[-1]["t"] - steady[0]["t"])
    else:
        out["epochs_per_min_steady"] = None
    return out


def fmt_band(b: dict | None) -> str:
    if not b:
        return "–"
    frac = b.get("in_band_fraction")
    tail = f", {frac:.0%} in" if frac is not None else ""
    if b.get("epochs") is None:
        return f"never{tail}"
    return f"{b['epochs']} ({b['seconds']:.1f} s{tail})"


def table(summaries: list[dict]) -> str:
    header = ["scenario", "variant", "sent", "lost", "lost start-up", "lost after change", "unseen",
              "epochs→band start", "epochs→band change", "fill spread", "slot moves (/epoch)", "epochs/min steady"]
    rows = []
    for s in summaries:
        if s.get("error") or "lost" not in s:
            rows.append([s["scenario"], s["variant"], s.get("sent") or "–", "error: " + str(s.get("error"))[:80]]
                        + ["–"] * (len(header) - 4))
            continue
        ph = s["phases"]
        after = ph[1] if len(ph) > 1 else None
        moves = f"{'≥' if s['moves_lower_bound'] else ''}{s['slot_moves']} ({s['moves_per_epoch']:.1f})"
        rows.append([
            s["scenario"], s["variant"], s["sent"], s["lost"], ph[0]["lost"], after["lost"] if after else "–",
            s["unseen"], fmt_band(ph[0]["band"]), fmt_band(after["band"]) if after else "–",
            f"{s['fill_spread']:.0%}" if s["fill_spread"] is not None else "–", moves,
            f"{s['epochs_per_min_steady']:.1f}" if s["epochs_per_min_steady"] is not None else "–",
        ])
    return markdown_table(header, rows)


# --- main --------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", nargs="+", default=["all"], choices=["all", *SCENARIOS])
    ap.add_argument("--variants", nargs="+", default=["all"], choices=["all", *VARIANTS])
    ap.add_argument("--duration", type=float, default=None, help="seconds of sending per run (default 40; "
                                                                 "--quick: 8); the change is at the middle")
    ap.add_argument("--quick", action="store_true", help="smoke run: 8 s per run")
    ap.add_argument("--queue-size", type=int, default=150, help="receive queue of each worker (events)")
    ap.add_argument("--load", type=float, default=None,
                    help="sender rate as a fraction of the total capacity (default: the scenario's, 0.75; "
                         "overload 1.2)")
    ap.add_argument("--controller-period", type=float, default=1.0)
    ap.add_argument("--json", metavar="FILE", help="write raw records and figures here")
    ap.add_argument("--plot", metavar="DIR", help="one PNG per scenario here")
    a = ap.parse_args(argv)
    scenarios = list(SCENARIOS) if "all" in a.scenarios else list(dict.fromkeys(a.scenarios))
    variants = list(VARIANTS) if "all" in a.variants else list(dict.fromkeys(a.variants))
    duration = a.duration if a.duration is not None else (8.0 if a.quick else 40.0)
    if duration < 2:
        ap.error("--duration: at least 2 s")

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    print(f"bench_balance: {len(scenarios)} scenario(s) x {len(variants)} variant(s), {duration:g} s each, "
          f"queue {a.queue_size}, {EVENT_SIZE // 1024} KiB events, controller period {a.controller_period:g} s",
          flush=True)
    raws, summaries = [], []
    try:
        for sname in scenarios:
            sc = SCENARIOS[sname]
            caps = ", ".join(f"{w.name} {1 / w.service:.0f}" for w in sc.workers)
            print(f"{sname}: {sc.description}; capacities ev/s {caps}; rate {sc.rate(a.load):.0f} ev/s", flush=True)
            for vname in variants:
                t = time.monotonic()
                raw = run_one(sc, VARIANTS[vname], duration=duration * sc.stretch, queue_size=a.queue_size, load=a.load,
                              period=a.controller_period, log=lambda m: print(m, flush=True))
                summary = analyze(raw)
                raws.append(raw)
                summaries.append(summary)
                status = summary.get("error") or (f"lost {summary['lost']}, unseen {summary['unseen']}, "
                                                 f"band start {fmt_band(summary['phases'][0]['band'])}")
                print(f"  {sname}/{vname}: {status} [{time.monotonic() - t:.0f} s]", flush=True)
    except KeyboardInterrupt:
        print("interrupted: reporting the runs done so far", file=sys.stderr)
    print()
    print(table(summaries))
    print(f"\n{len(summaries)} runs in {time.monotonic() - started:.0f} s. Lost = receive-queue overflow + reassembly "
          f"losses; unseen = sent but never reached a receiver; band = every slot share within ±{BAND:.0%} of its "
          f"capacity share (epochs, seconds); slot moves exact from SlotRanges (≥: a poll missed an epoch).")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(args=vars(a), duration=duration, runs=raws, summaries=summaries), f, indent=1,
                      default=lambda o: o if not isinstance(o, float) or math.isfinite(o) else None)
        print(f"raw results: {a.json}")
    if a.plot:
        from balance_plot import plot_all

        for path in plot_all(raws, a.plot):
            print(f"plot: {path}")
    return 0 if summaries and not any(s.get("error") for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
