#!/usr/bin/env python3
"""DAQ sender: numpy detector frames pushed through an EJFAT load balancer at a fixed event rate.

    eval "$(ejlb reserve my-run --duration 1h --auto-sender --export)"
    python examples/daq_sender.py --events 10000 --rate 500 --shape 256x256

Each event is one float32 frame (simulated pedestal + noise) whose first element carries the event
number, sent with `Sender.send` straight from the numpy buffer (no copy). The event rate is kept by
sleeping between events; the Sender itself can also pace bytes (--gbps). Sync packets to the
control plane (one per second) tell it the event rate, so it can place epoch boundaries.
Prints one JSON report on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from ejlb import Sender

FRAMES_IN_POOL = 16  # pre-generated noise frames, reused round-robin: generating costs more than sending


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shape {text!r}: expected e.g. 256x256") from None
    if not shape or any(n <= 0 for n in shape):
        raise argparse.ArgumentTypeError(f"--shape {text!r}: dimensions must be positive")
    return shape


def frames(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pool = (100.0 + rng.standard_normal((FRAMES_IN_POOL, *shape))).astype(np.float32)
    return pool.reshape(FRAMES_IN_POOL, -1)


def run_sender(uri: str, *, events: int, rate: float | None, shape: tuple[int, ...], data_id: int = 0,
               gbps: float | None = None, mtu: int | str = 1500) -> dict:
    pool = frames(shape)
    start = time.monotonic()
    with Sender(uri, data_id=data_id, rate_gbps=gbps, mtu=mtu) as sender:
        for n in range(events):
            if rate:
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            frame = pool[n % FRAMES_IN_POOL]
            frame[0] = n % (1 << 24)  # float32 holds integers exactly below 2^24
            sender.send(frame, event_number=n)
        elapsed = time.monotonic() - start
        st = sender.stats()
    return {"events": events, "bytes": events * pool[0].nbytes, "datagrams": st.datagrams,
            "send_errors": st.send_errors, "seconds": round(elapsed, 3),
            "events_per_s": round(events / elapsed, 1) if elapsed else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--uri", default=os.environ.get("EJFAT_URI"), help="reservation URI (default $EJFAT_URI)")
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--rate", type=float, default=200.0, help="events per second (0: as fast as possible)")
    p.add_argument("--shape", type=parse_shape, default=(256, 256), help="frame shape, e.g. 256x256 (float32)")
    p.add_argument("--data-id", type=int, default=0)
    p.add_argument("--gbps", type=float, default=None, help="also pace bytes to this many Gb/s")
    p.add_argument("--mtu", default="1500", help="datagram size limit or 'auto'")
    a = p.parse_args(argv)
    if not a.uri:
        p.error("no URI: pass --uri or set EJFAT_URI (e.g. from `ejlb reserve ... --export`)")
    mtu = a.mtu if a.mtu == "auto" else int(a.mtu)
    report = run_sender(a.uri, events=a.events, rate=a.rate or None, shape=a.shape, data_id=a.data_id,
                        gbps=a.gbps, mtu=mtu)
    print(json.dumps(report), flush=True)
    return 0 if report["send_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
