#!/usr/bin/env python3
"""ZeroMQ bridge: a registered EJFAT worker that hands whole events to a ZeroMQ pipeline.

    # downstream (any language): a PULL socket bound at tcp://*:5556, reading [header, payload]
    eval "$(ejlb reserve my-run --duration 1h --export)"
    python examples/zmq_bridge.py --ip 10.0.0.5 --push tcp://analysis-host:5556

The Receiver forwards each event as a two-frame message: a 14-byte header (event number u64,
data id u16, length u32, big-endian; `ejlb.shim.zmq_bridge.decode_header`) and the payload, sent
without copying. When downstream is slow the PUSH socket reaches its high-water mark, events wait
in the receiver's queue, the queue fill it reports rises, and the control plane gives this worker
fewer slots: back-pressure travels all the way to the load balancer.

--consume starts a PULL consumer in this process too (bound at the --push endpoint), which is how
the example runs on one machine; it stops after --events events, or --idle seconds without one once
they flow (--wait for the first), and prints a JSON report.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import zmq

from ejlb import Receiver
from ejlb.shim.zmq_bridge import decode_header


def consume(endpoint: str, events: int | None, idle: float, wait: float, ready: threading.Event,
            report: dict) -> None:
    """The downstream side: PULL, decode, count. Real analysis code would go where the count is."""
    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    pull.bind(endpoint)
    ready.set()
    idle_since = time.monotonic()
    try:
        while events is None or report["events"] < events:
            if not pull.poll(200):
                if time.monotonic() - idle_since > (idle if report["events"] else wait):
                    break
                continue
            header, payload = pull.recv_multipart(copy=False)
            number, data_id, length = decode_header(header.buffer)
            report["events"] += 1
            report["bytes"] += len(payload.buffer)
            report["length_mismatch"] += length != len(payload.buffer)
            report["last_event"] = number
            idle_since = time.monotonic()
    finally:
        pull.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--uri", default=os.environ.get("EJFAT_URI"), help="reservation URI (default $EJFAT_URI)")
    p.add_argument("--ip", default="127.0.0.1", help="address the load balancer sends to (registered)")
    p.add_argument("--port", type=int, default=0, help="base UDP port (0: a free block)")
    p.add_argument("--name", default=f"zmq-bridge-{os.getpid()}")
    p.add_argument("--push", default="tcp://127.0.0.1:5556", help="ZeroMQ endpoint to PUSH events to")
    p.add_argument("--hwm", type=int, default=16, help="events in flight before back-pressure")
    p.add_argument("--consume", action="store_true", help="also run a PULL consumer here (bound at --push)")
    p.add_argument("--events", type=int, default=None, help="with --consume: stop after this many events")
    p.add_argument("--idle", type=float, default=10.0, help="with --consume: stop after this many idle seconds")
    p.add_argument("--wait", type=float, default=60.0, help="with --consume: stop if no first event by then")
    a = p.parse_args(argv)

    report = {"events": 0, "bytes": 0, "length_mismatch": 0, "last_event": None}
    consumer = None
    if a.consume:  # bind first, so the bridge's PUSH connects to a live peer
        ready = threading.Event()
        consumer = threading.Thread(target=consume, args=(a.push, a.events, a.idle, a.wait, ready, report), daemon=True)
        consumer.start()
        ready.wait(5)
    with Receiver(a.uri, a.ip, a.port, name=a.name, zmq_push=a.push, zmq_hwm=a.hwm) as rx:
        print(f"bridge {a.name}: {a.ip} ports {rx.ports.start}-{rx.ports.stop - 1} -> {a.push}",
              file=sys.stderr, flush=True)
        try:
            if consumer is not None:
                consumer.join()
            else:
                while True:
                    time.sleep(1)
        except KeyboardInterrupt:
            pass
        report["receiver_lost"] = rx.stats().lost
    print(json.dumps(report), flush=True)
    return 0 if report["length_mismatch"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
