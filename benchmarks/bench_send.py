"""Sender throughput on loopback, as a ratio to the machine-limit probes measured in the same run.

    python benchmarks/bench_send.py [--seconds 2] [--event-size 1048576] [--quick]

For MTU 1500 and 9000, GSO on and off: 1 MiB events from one `Sender.send` loop into the probe's
own draining receiver (`udp_gro` for GSO, `udp_limit recv` without), compared with the probe sender
of the same mode (`udp_gso` / `udp_limit send`) at the same datagram size (1472 / 8972 B = our
segment at that MTU). Also: the copy-into-staging variant (what zero-copy saves), the Python
overhead per event (Sender.send minus a bare native call, for empty events), and pacing accuracy.
"""
from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, __import__("os").path.dirname(__file__))
from probes import Probes, markdown_table, ratio  # noqa: E402

from ejlb.native import buffer_address, lib  # noqa: E402
from ejlb.shim.sender import Sender  # noqa: E402


def drain(bin_dir, gso: bool, port: int, size: int, seconds: float) -> subprocess.Popen:
    if gso:
        cmd = [str(bin_dir / "udp_gro"), str(port)]
    else:
        cmd = [str(bin_dir / "udp_limit"), "recv", str(port), str(size), str(seconds)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    return p


def run_sender(bin_dir, mtu: int, gso: bool, seconds: float, event_size: int, zero_copy: bool = True):
    port = random.randint(30000, 49999)
    seg = mtu - 28
    rx = drain(bin_dir, gso, port, seg, seconds)
    event = np.random.default_rng(1).integers(0, 255, event_size, dtype=np.uint8)
    try:
        with Sender(f"ejfat://bench:18347/lb/1?data=127.0.0.1:{port}", mtu=mtu, gso=gso, sync=False,
                    sockets=1, sndbuf=64 << 20, zero_copy=zero_copy) as s:
            t0 = time.perf_counter()
            n = 0
            while time.perf_counter() - t0 < seconds:
                for _ in range(8):
                    s.send(event)
                n += 8
            dt = time.perf_counter() - t0
            st = s.stats()
        out, _ = rx.communicate(timeout=30)
    finally:
        if rx.poll() is None:
            rx.kill()
    return {
        "gbps": st.bytes * 8 / dt / 1e9, "mpps": st.datagrams / dt / 1e6, "events": n,
        "errors": st.send_errors, "gso": st.gso, "recv": out.strip(),
    }


def python_overhead(n: int = 200_000) -> tuple[float, float]:
    """µs per event of Sender.send and of a bare ejlb_tx_send1, both for empty events to a port
    nobody listens on (so the kernel cost is one small datagram each)."""
    port = random.randint(30000, 49999)
    with Sender(f"ejfat://bench:18347/lb/1?data=127.0.0.1:{port}", sync=False, sockets=1) as s:
        ev = b""
        t0 = time.perf_counter()
        for _ in range(n):
            s.send(ev)
        t_send = (time.perf_counter() - t0) / n
        ptr, nb = buffer_address(ev)
        tx, fd, send1 = s._tx, s._fds[0], lib.ejlb_tx_send1
        t0 = time.perf_counter()
        for i in range(n):
            send1(tx, fd, ptr, nb, i, i, 0, 0, 0, port)
        t_bare = (time.perf_counter() - t0) / n
    return t_send * 1e6, t_bare * 1e6


def pacing(bin_dir, gbps: float, seconds: float, event_size: int = 65536) -> float:
    port = random.randint(30000, 49999)
    rx = drain(bin_dir, True, port, 8972, seconds)
    ev = bytes(event_size)
    try:
        with Sender(f"ejfat://bench:18347/lb/1?data=127.0.0.1:{port}", mtu=9000, sync=False,
                    rate_gbps=gbps, sndbuf=64 << 20) as s:
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                s.send(ev)
            dt = time.perf_counter() - t0
            b = s.stats().bytes
        rx.communicate(timeout=30)
    finally:
        if rx.poll() is None:
            rx.kill()
    return b * 8 / dt / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--event-size", type=int, default=1 << 20)
    ap.add_argument("--quick", action="store_true", help="tiny run (CI smoke): 0.3 s per figure")
    a = ap.parse_args()
    secs = 0.3 if a.quick else a.seconds
    probes = Probes(seconds=secs)
    rows = []
    for mtu in (1500, 9000):
        size = mtu - 28
        for gso in (False, True):
            probe = probes.gso(size) if gso else probes.sendmmsg(size)
            r = run_sender(probes.bin, mtu, gso, secs, a.event_size)
            rows.append([mtu, "on" if gso else "off", round(r["gbps"], 2), round(r["mpps"], 3),
                         round(probe.gbps, 2), round(ratio(r["gbps"], probe.gbps), 2), r["errors"]])
            print(f"mtu {mtu} gso {gso}: {r} | probe {probe}", file=sys.stderr)
    print(markdown_table(["MTU", "GSO", "Gb/s", "Mdgram/s", "probe Gb/s", "ratio", "errors"], rows))

    copy_rows = []
    for mtu in (1500, 9000):
        zc = run_sender(probes.bin, mtu, True, secs, a.event_size)
        cp = run_sender(probes.bin, mtu, True, secs, a.event_size, zero_copy=False)
        copy_rows.append([mtu, round(zc["gbps"], 2), round(cp["gbps"], 2), round(ratio(zc["gbps"], cp["gbps"]), 2)])
    print()
    print(markdown_table(["MTU (GSO)", "iovec pairs Gb/s", "staged copy Gb/s", "zero-copy / copy"], copy_rows))

    t_send, t_bare = python_overhead(20_000 if a.quick else 200_000)
    print(f"\nPython overhead per event: Sender.send {t_send:.2f} µs - bare native call {t_bare:.2f} µs"
          f" = {t_send - t_bare:.2f} µs")

    print()
    prow = []
    for g in (0.1, 1.0, 10.0):
        got = pacing(probes.bin, g, max(secs, 1.0) if not a.quick else 0.5)
        prow.append([g, round(got, 3), f"{(got / g - 1) * 100:+.1f} %"])
    print(markdown_table(["target Gb/s", "measured Gb/s", "error"], prow))


if __name__ == "__main__":
    main()
