"""Child processes of bench_balance.py: one HPC worker (`receiver`) or the DAQ sender (`sender`).

Both talk to the parent through lines: commands on stdin, JSON reports on stdout (one object per
line, `"kind"` says which). Times are `time.monotonic()`, which is one clock for every process on the
machine, so the parent can line up reports from all children and its own status polls.

receiver: an `ejlb.Receiver` registered with the control plane (the URI carries the reservation's
    token) whose application loop takes one event at a time (`recv_nowait`, else `recv`) and
    *sleep-schedules* its processing: every event costs a fixed service time on an absolute
    deadline schedule (`next += service; sleep(next - now)`, reset to now after the queue ran dry),
    so the worker's capacity is exactly 1/service whatever the CPU load, and a late wake-up is made
    up by the next events. Events wait in the receiver's own queue (what the reported fill counts).
    stdin: `service SECONDS` (speed change), `start` (register now, when started with --deferred),
    `leave` / `quit` (close the receiver = deregister; then a final report and exit).
    stdout: `ready` once registered, `report` every --report-period s and a last one with
    `"final": true`: processed, the receiver's stats() counters, fill, current service time.

sender: an `ejlb.Sender` with sync packets, sending --size byte events at --rate events/s on an
    absolute schedule (start + k/rate; more than --max-lag s behind, the schedule is reset instead of
    bursting). Stops on `stop` (stdin), after --duration s, or at EOF of stdin.
    stdout: `started` (time of the first send), `report`s, and a final one.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def emit(kind: str, **fields) -> None:
    fields["kind"] = kind
    fields.setdefault("t", time.monotonic())
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class Commands(threading.Thread):
    """Reads stdin lines into shared state; EOF (the parent died) counts as `quit`."""

    def __init__(self, service: float):
        super().__init__(daemon=True, name="commands")
        self.service = service
        self.start_evt = threading.Event()
        self.stop_evt = threading.Event()
        self.reason = ""

    def run(self) -> None:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "service" and len(words) == 2:
                self.service = float(words[1])
            elif words[0] == "start":
                self.start_evt.set()
            elif words[0] in ("leave", "quit", "stop"):
                self.reason = words[0]
                self.stop_evt.set()
                self.start_evt.set()
        self.reason = self.reason or "eof"
        self.stop_evt.set()
        self.start_evt.set()


def receiver_main(a) -> int:
    from ejlb.demo import WORKER_PORT_BITS
    from ejlb.shim.receiver import Receiver, ReceiverClosed

    cmd = Commands(a.service)
    cmd.start()
    if a.deferred:
        cmd.start_evt.wait()
        if cmd.stop_evt.is_set():
            emit("report", final=True, registered=False, processed=0, service=cmd.service)
            return 0
    variant = json.loads(a.receiver_kwargs) if a.receiver_kwargs else {}
    if "pid" in variant and variant["pid"] is not None:
        variant["pid"] = tuple(variant["pid"])
    rx = Receiver(a.uri, "127.0.0.1", 0, port_range=WORKER_PORT_BITS, queue_size=a.queue_size, name=a.name,
                  register=True, weight=a.weight, **variant)
    emit("ready", name=a.name, port=rx.base_port, registered_at=time.monotonic())
    processed = 0
    lock = threading.Lock()
    done = threading.Event()

    def snapshot(final: bool = False) -> dict:
        s = rx.stats()
        with lock:
            n = processed
        return dict(final=final, processed=n, service=cmd.service, fill=rx.fill() if not rx.closed else 0.0,
                    events_recv=s.events_recv, reassembled=s.events_reassembled, dequeued=s.events_dequeued,
                    enqueue_err=s.event_enqueue_err, lost=s.lost, evicted=s.evicted,
                    reassembly_err=s.events_reassembly_err, bad_fragments=s.bad_fragments,
                    lost_log=len(rx.lost_events()))

    def reporter() -> None:
        while not done.wait(a.report_period):
            try:
                emit("report", **snapshot())
            except Exception as e:  # never kill the worker over a report
                emit("error", error=repr(e))

    threading.Thread(target=reporter, daemon=True, name="reporter").start()
    next_t = time.monotonic()
    try:
        while not cmd.stop_evt.is_set():
            try:
                ev = rx.recv_nowait()
                if ev is None:
                    try:
                        ev = rx.recv(timeout=0.05)
                    except TimeoutError:
                        continue
                    next_t = time.monotonic()  # the queue ran dry: idle time is not banked
            except ReceiverClosed:
                break
            next_t += cmd.service
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            del ev  # "processed": the buffer goes back to the pool
            with lock:
                processed += 1
    finally:
        done.set()
        abandoned = rx.fill() * a.queue_size if not rx.closed else 0.0
        rx.close()  # deregisters
        emit("report", **snapshot(final=True), abandoned=round(abandoned), reason=cmd.reason)
    return 0


def sender_main(a) -> int:
    from ejlb.demo import pattern
    from ejlb.shim.sender import Sender

    cmd = Commands(0.0)
    cmd.start()
    payload = pattern(a.size)
    sent = errors = resets = 0
    with Sender(a.uri, mtu=a.mtu, sync_period=a.sync_period, family=4) as tx:
        # Ticks are the Sender's default, µs timestamps, as field senders stamp them. At a fixed rate
        # they step by a constant (586 ev/s: 1706 ≡ 170 mod 512, so only even slots are met); the
        # calendar layout spreads every worker over such residue classes (calendar.spread_rank).
        period = 1.0 / a.rate
        start = time.monotonic()
        emit("started", t=start, rate=a.rate)
        end = start + a.duration
        next_report = start + a.report_period
        k = 0
        while not cmd.stop_evt.is_set():
            now = time.monotonic()
            if now >= end:
                break
            due = start + k * period
            if due > now:
                time.sleep(min(due - now, 0.05))
                continue
            if now - due > a.max_lag:  # far behind (machine stalled): restart the schedule, no burst
                start, k = now, 0
                resets += 1
            try:
                tx.send(payload)
                sent += 1
            except OSError:
                errors += 1
            k += 1
            if now >= next_report:
                emit("report", sent=sent, errors=errors, resets=resets)
                next_report += a.report_period
        stats = tx.stats()
    emit("report", final=True, sent=sent, errors=errors, resets=resets, elapsed=time.monotonic() - start,
         sync_packets=getattr(stats, "sync_packets", None), send_errors=getattr(stats, "send_errors", None))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="role", required=True)
    r = sub.add_parser("receiver")
    r.add_argument("--uri", required=True)
    r.add_argument("--name", required=True)
    r.add_argument("--service", type=float, required=True, help="seconds of processing per event")
    r.add_argument("--queue-size", type=int, default=150)
    r.add_argument("--weight", type=float, default=1.0)
    r.add_argument("--receiver-kwargs", default="", help="JSON: extra Receiver keyword arguments (the variant)")
    r.add_argument("--deferred", action="store_true", help="register only on `start` (late joiners)")
    r.add_argument("--report-period", type=float, default=0.25)
    s = sub.add_parser("sender")
    s.add_argument("--uri", required=True)
    s.add_argument("--rate", type=float, required=True, help="events per second")
    s.add_argument("--size", type=int, default=64 * 1024)
    s.add_argument("--mtu", type=int, default=9000)
    s.add_argument("--duration", type=float, default=3600.0)
    s.add_argument("--sync-period", type=float, default=1.0)
    s.add_argument("--max-lag", type=float, default=0.1)
    s.add_argument("--report-period", type=float, default=0.25)
    a = ap.parse_args(argv)
    return receiver_main(a) if a.role == "receiver" else sender_main(a)


if __name__ == "__main__":
    sys.exit(main())
