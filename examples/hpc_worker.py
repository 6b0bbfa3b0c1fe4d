#!/usr/bin/env python3
"""HPC worker: receive whole events through an EJFAT load balancer, process them, report.

    eval "$(ejlb reserve my-run --duration 1h --export)"      # EJFAT_URI = the reservation
    python examples/hpc_worker.py --ip 10.0.0.5 --name node07 --threads 2

The Receiver registers with the control plane named by EJFAT_URI, reports its queue fill and
PID control signal every 100 ms (so a slow worker gets fewer calendar slots), and deregisters when
it stops. "Processing" here is a stand-in for real analysis: per-frame statistics over the float32
frames that examples/daq_sender.py sends, plus a check that each frame carries its own event number
(frame[0]) — proof that fragments from different events never mix.

Stops after --events events, after --idle seconds without an event once events flow (--wait
seconds for the first one), or on SIGTERM / Ctrl-C; prints one JSON report on stdout.
`run_worker()` is importable (examples/launch_workers.py runs it per rank).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time

import numpy as np

from ejlb import Receiver


def process(payload: memoryview) -> tuple[int, float, float]:
    """(event number stored in the frame, mean, std) of one float32 frame; zero-copy view."""
    frame = np.frombuffer(payload, dtype=np.float32)
    if frame.size < 2:
        return -1, 0.0, 0.0
    data = frame[1:]
    return int(frame[0]), float(data.mean()), float(data.std())


def run_worker(uri: str | None, *, ip: str, port: int = 0, port_bits: int | None = None, threads: int = 1,
               name: str | None = None, events: int | None = None, idle: float = 10.0, wait: float = 60.0,
               log=sys.stderr) -> dict:
    name = name or f"{socket.gethostname()}-{os.getpid()}"
    stop = {"now": False}
    if threading.current_thread() is threading.main_thread():  # Slurm/mpirun stop tasks with SIGTERM
        signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    done = bad = nbytes = 0
    means = []
    first = last = None
    with Receiver(uri, ip, port, threads=threads, port_range=port_bits, name=name) as rx:
        print(f"worker {name} listening on {ip} ports {rx.ports.start}-{rx.ports.stop - 1}", file=log, flush=True)
        idle_since = time.monotonic()
        try:
            while not stop["now"] and (events is None or done < events):
                try:
                    ev = rx.recv(timeout=0.2)
                except TimeoutError:
                    if time.monotonic() - idle_since > (idle if done else wait):
                        break
                    continue
                idle_since = last = time.monotonic()
                first = first or last
                number, mean, _ = process(ev.payload)
                bad += number != (ev.event_number % (1 << 24))  # float32 holds integers exactly below 2^24
                means.append(mean)
                nbytes += len(ev)
                done += 1
        except KeyboardInterrupt:
            pass
        stats = rx.stats()
    span = (last - first) if first and last and last > first else 0.0
    return {"worker": name, "events": done, "bytes": nbytes, "mismatched": bad, "lost": stats.lost,
            "mean_of_means": float(np.mean(means)) if means else None,
            "gbps": nbytes * 8 / span / 1e9 if span else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--uri", default=os.environ.get("EJFAT_URI"), help="reservation URI (default $EJFAT_URI); "
                   "omit to receive straight from a sender without a control plane")
    p.add_argument("--ip", default="127.0.0.1", help="address the load balancer sends to (registered)")
    p.add_argument("--port", type=int, default=0, help="base UDP port (0: a free block)")
    p.add_argument("--port-bits", type=int, default=None, help="listen on 2^bits ports (default: one per thread)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--name", default=None)
    p.add_argument("--events", type=int, default=None, help="stop after this many events")
    p.add_argument("--idle", type=float, default=10.0, help="stop after this many seconds without events")
    p.add_argument("--wait", type=float, default=60.0, help="stop if the first event takes longer than this")
    a = p.parse_args(argv)
    report = run_worker(a.uri, ip=a.ip, port=a.port, port_bits=a.port_bits, threads=a.threads, name=a.name,
                        events=a.events, idle=a.idle, wait=a.wait)
    print(json.dumps(report), flush=True)
    return 0 if report["mismatched"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
