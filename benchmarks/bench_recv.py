"""Receiver throughput on loopback: highest sustained rate with zero loss, as a ratio to the
`udp_gro` machine-limit probe measured in the same run.

    python benchmarks/bench_recv.py [--events 1200] [--event-size 1048576] [--mtu 9000 1500] [--threads 1]
                                    [--repeat 2] [--sender-process] [--quick]

For each MTU a GSO Sender (ejlb.shim.sender, back to back, LB header kept) sends 1 MiB events to a
Receiver whose application thread takes every event. A trial is lossless when every event arrives
whole (no lost/evicted/enqueue errors, every datagram the kernel accepted was received). The first
trial is unpaced; if it loses anything, the sender's pacing rate is bisected down to the highest
lossless rate (reported: the best rate achieved by a lossless trial; the machine is shared). Figures: event goodput (Gb/s, events/s) and UDP payload rate, the latter divided by
the `udp_gro` probe's rate at the same datagram size (1472 B at MTU 1500, 8972 B at MTU 9000: our
segment at that MTU), which drains GSO super-datagrams with recvmmsg + GRO and does nothing else.

The wall ratio understates the receiver on a small machine: our Sender, the native receive
thread(s) and the application thread share the cores, while the probe's sender and receiver are one
process each. Hence also "ratio per CPU-s", as in bench_send.py: (our UDP Gb/s / receiver
CPU-seconds per second) / (probe Gb/s / probe CPU-seconds per second), i.e. bits received per CPU
second, ours over the probe's. Receiver CPU = the native receive threads (ReceiverStats.cpu_ns,
CLOCK_THREAD_CPUTIME_ID) + the application thread's dequeue loop (time.thread_time); probe CPU =
user + system time of the `udp_gro` process (wait4) over its traffic interval. Neither includes
softirq time (loopback delivery, GRO) where the kernel accounts it separately. --sender-process runs
the Sender in a separate (spawned) process, so it no longer competes for our interpreter's GIL.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import threading
import time

import numpy as np

sys.path.insert(0, __import__("os").path.dirname(__file__))
from probes import Probes, markdown_table, ratio  # noqa: E402

from ejlb.shim.receiver import Receiver, ReceiverClosed  # noqa: E402
from ejlb.shim.sender import Sender  # noqa: E402


def _send(uri: str, mtu: int, rate_gbps: float | None, events: int, event: np.ndarray) -> tuple[float, dict]:
    with Sender(uri, mtu=mtu, sync=False, sockets=4, sndbuf=64 << 20, rate_gbps=rate_gbps) as tx:
        t0 = time.perf_counter()
        for k in range(events):
            tx.send(event, event_number=k)
        sent = tx.stats()
    return t0, {"datagrams": sent.datagrams, "send_errors": sent.send_errors, "gso": sent.gso}


def _sender_process(conn, uri: str, mtu: int, rate_gbps: float | None, events: int, event_size: int) -> None:
    """--sender-process: the same Sender loop in a spawned process; t0 is time.perf_counter
    (CLOCK_MONOTONIC, the same clock in every process)."""
    event = np.random.default_rng(1).integers(0, 256, event_size, dtype=np.uint8)
    with Sender(uri, mtu=mtu, sync=False, sockets=4, sndbuf=64 << 20, rate_gbps=rate_gbps) as tx:
        conn.send("ready")
        conn.recv()
        t0 = time.perf_counter()
        for k in range(events):
            tx.send(event, event_number=k)
        sent = tx.stats()
    conn.send((t0, {"datagrams": sent.datagrams, "send_errors": sent.send_errors, "gso": sent.gso}))
    conn.close()


def trial(mtu: int, rate_gbps: float | None, events: int, event: np.ndarray, threads: int = 1,
          sender_process: bool = False) -> dict:
    with Receiver(None, "127.0.0.1", 0, threads=threads, with_lb_header=True, queue_size=256,
                  rcvbuf=128 << 20) as rx:
        times: list[float] = []
        app_cpu = [0.0]

        def consume():
            c0 = time.thread_time()
            try:
                for _ in range(events):
                    rx.recv(timeout=2.0)
                    times.append(time.perf_counter())
            except (TimeoutError, ReceiverClosed):
                pass
            app_cpu[0] = time.thread_time() - c0

        t = threading.Thread(target=consume)
        # the sender steps through the ports event by event, so every receive thread gets a share
        uri = f"ejfat://bench:18347/lb/1?data=127.0.0.1:{rx.ports[0]}-{rx.ports[-1]}"
        if sender_process:
            ctx = mp.get_context("spawn")
            here, there = ctx.Pipe()
            proc = ctx.Process(target=_sender_process, args=(there, uri, mtu, rate_gbps, events, event.nbytes))
            proc.start()
            try:
                if not here.poll(120) or here.recv() != "ready":
                    raise RuntimeError("sender process did not start")
                s0 = rx.stats()
                t.start()
                here.send("go")
                t0, sent = here.recv()
                proc.join(60)
            finally:
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        else:
            s0 = rx.stats()
            t.start()
            t0, sent = _send(uri, mtu, rate_gbps, events, event)
        t.join()
        s = rx.stats()
    dt = (times[-1] - t0) if times else float("inf")
    lossless = (len(times) == events and s.events_reassembly_err == 0 and s.event_enqueue_err == 0
                and s.packets_recv == sent["datagrams"] and sent["send_errors"] == 0)
    rx_cpu = (s.cpu_ns - s0.cpu_ns) / 1e9
    cpu = rx_cpu + app_cpu[0]
    return {
        "rate": rate_gbps, "lossless": lossless, "delivered": len(times),
        "event_gbps": len(times) * event.nbytes * 8 / dt / 1e9, "events_s": len(times) / dt,
        "udp_gbps": s.bytes_recv * 8 / dt / 1e9, "mpps": s.packets_recv / dt / 1e6,
        "gro_segments": s.packets_recv / max(1, s.gro_buffers), "gso": sent["gso"],
        # CPU-seconds per second of the trial: native receive threads, application thread, both
        "rx_busy": rx_cpu / dt, "app_busy": app_cpu[0] / dt, "busy": cpu / dt,
        # Gb per CPU-second of the receiver (= Gb/s divided by CPU-s/s)
        "gb_per_cpu_s": s.bytes_recv * 8 / 1e9 / cpu if cpu else float("nan"),
    }


def highest_lossless(mtu: int, events: int, event: np.ndarray, steps: int, threads: int,
                     sender_process: bool = False) -> dict:
    best = trial(mtu, None, events, event, threads, sender_process)
    print(f"  mtu {mtu} unpaced: {best['udp_gbps']:.2f} Gb/s lossless={best['lossless']} "
          f"delivered={best['delivered']}/{events}", flush=True)
    if best["lossless"]:
        return best
    lo, hi, best = 0.0, max(best["udp_gbps"], 1.0), None
    for _ in range(steps):
        mid = (lo + hi) / 2
        r = trial(mtu, mid, events, event, threads, sender_process)
        print(f"  mtu {mtu} paced {mid:.2f} Gb/s: {r['udp_gbps']:.2f} Gb/s lossless={r['lossless']}", flush=True)
        if r["lossless"]:
            lo = mid
            if best is None or r["udp_gbps"] > best["udp_gbps"]:  # achieved rates are noisy
                best = r
        else:
            hi = mid
    return best or {"rate": 0.0, "lossless": False, "event_gbps": 0.0, "events_s": 0.0, "udp_gbps": 0.0,
                    "mpps": 0.0, "gro_segments": 0.0, "gso": True, "delivered": 0, "rx_busy": 0.0,
                    "app_busy": 0.0, "busy": 0.0, "gb_per_cpu_s": 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1200)
    ap.add_argument("--event-size", type=int, default=1 << 20)
    ap.add_argument("--mtu", type=int, nargs="+", default=[9000, 1500])
    ap.add_argument("--threads", type=int, default=1, help="receive threads (one port each)")
    ap.add_argument("--steps", type=int, default=5, help="bisection steps when unpaced loses events")
    ap.add_argument("--seconds", type=float, default=2.0, help="probe duration")
    ap.add_argument("--repeat", type=int, default=2, help="probe + search pairs per MTU (the machine is shared)")
    ap.add_argument("--sender-process", action="store_true",
                    help="run the Sender in a separate (spawned) process instead of our main thread")
    ap.add_argument("--quick", action="store_true", help="tiny run (CI smoke)")
    a = ap.parse_args()
    if a.quick:
        a.events, a.steps, a.seconds, a.repeat = 50, 2, 0.5, 1
    event = np.random.default_rng(1).integers(0, 256, a.event_size, dtype=np.uint8)
    rows, medians = [], []
    for mtu in a.mtu:
        wall, per_cpu, probes = [], [], []
        for _ in range(a.repeat):
            probe = Probes(seconds=a.seconds).gro(mtu - 28)  # fresh probe next to each search
            probe_eff = probe.gbps / probe.busy if probe.busy else float("nan")
            print(f"mtu {mtu}: udp_gro probe {probe}, {probe.busy:.2f} CPU-s/s, {probe_eff:.1f} Gb per CPU-s",
                  flush=True)
            r = highest_lossless(mtu, a.events, event, a.steps, a.threads, a.sender_process)
            print(f"    receiver {r['busy']:.2f} CPU-s/s (threads {r['rx_busy']:.2f} + app {r['app_busy']:.2f}), "
                  f"{r['gb_per_cpu_s']:.1f} Gb per CPU-s", flush=True)
            wall.append(ratio(r["udp_gbps"], probe.gbps))
            per_cpu.append(ratio(r["gb_per_cpu_s"], probe_eff))
            probes.append(probe)
            rows.append([mtu, "unpaced" if r["rate"] is None else f"{r['rate']:.2f}", r["event_gbps"],
                         round(r["events_s"]), r["udp_gbps"], r["mpps"], probe.gbps, wall[-1],
                         r["rx_busy"], r["app_busy"], probe.busy, per_cpu[-1], r["gro_segments"]])
        medians.append([mtu, len(wall), statistics.median(wall), statistics.median(per_cpu),
                        statistics.median(p.gbps for p in probes), statistics.median(p.busy for p in probes)])
    print()
    print(f"{a.event_size} B events, {a.threads} receive thread(s), sender "
          f"{'in a separate process' if a.sender_process else 'in the same process'}")
    print(markdown_table(["MTU", "pacing Gb/s", "events Gb/s", "events/s", "UDP Gb/s", "Mpps",
                          "udp_gro probe Gb/s", "ratio", "recv threads CPU-s/s", "app CPU-s/s",
                          "probe CPU-s/s", "ratio per CPU-s", "segments/GRO buffer"], rows))
    print()
    print(markdown_table(["MTU", "trials", "ratio (median)", "ratio per CPU-s (median)", "probe Gb/s (median)",
                          "probe CPU-s/s (median)"], medians))


if __name__ == "__main__":
    main()
