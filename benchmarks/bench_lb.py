"""Software LB throughput: sender -> software LB -> 4 receivers versus sender -> 4 receivers
directly, in the same run on loopback, with the machine-limit probes of that run.

    python benchmarks/bench_lb.py [--events 400] [--event-size 1048576] [--mtu 9000 1500] [--threads 1] [--repeat 3]

The same four Receivers (127.0.0.1, consecutive ports, LB header expected) take part in both modes:
directly, one GSO Sender rotates events over their ports; through the LB, the Sender targets the
LB's data address and the LB spreads events over the four members (keep-LB-header members, so the
receivers see identical datagrams in both modes). A trial is unpaced; if it loses events, the pacing
rate is bisected for the highest lossless rate, so that lossless figures are compared. Each mode
runs --repeat times, interleaved with the other, and the median is reported.
Figures: event goodput (Gb/s), datagram rate through the LB (Mpps, from its counters), the ratio
via-LB / direct (target >= 0.6), the LB's forwarded payload per CPU-second of its worker threads
(its efficiency, independent of how many cores the rest of the run leaves it; the probes report
wall-clock rates, so they are not directly comparable to it), and the udp_gso / udp_gro probes at the
same datagram size with via-LB / gro. On a small shared machine sender, LB and
receivers compete for the same cores: the LB adds a receive and a send of every byte to a run whose
sender and receivers already saturate the CPUs, so a CPU-bound via/direct ratio tends to ~0.5 there,
while a network-bound deployment (LB on its own cores) sees the per-core figure.

With root, clang and libbpf (else it says why and leaves it out; --no-xdp skips it) the same trials
run against the XDP LB in network namespaces (bench_lb_xdp.py): direct there versus through the
program on a veth, with datagrams per CPU-second of the program (kernel BPF statistics) next to the
socket LB's datagrams per CPU-second of its worker threads.
"""
from __future__ import annotations

import argparse
import contextlib
import ipaddress
import random
import sys
import threading
import time

import numpy as np

sys.path.insert(0, __import__("os").path.dirname(__file__))
from probes import Probes, markdown_table, ratio  # noqa: E402
from bench_lb_xdp import XDPBench, InNetns  # noqa: E402

from ejlb.dataplane.software import SoftwareLB  # noqa: E402
from ejlb.dataplane.tables import EpochRange, LBInstance, Member, Tables, diff  # noqa: E402
from ejlb.shim.receiver import Receiver, ReceiverClosed  # noqa: E402
from ejlb.shim.sender import Sender  # noqa: E402
from ejlb.wire import CALENDAR_SLOTS  # noqa: E402

LB_IP, LB_PORT, WORKERS = "127.0.16.1", 19560, 4


def lb_tables(base: int) -> Tables:
    ip = ipaddress.ip_address
    return Tables(
        lbs={0: LBInstance(0, b"\x02" * 6, ip(LB_IP))},
        senders=frozenset({(0, ip("127.0.0.1"))}),
        epochs={(0, 0): EpochRange(0, None)},
        calendars={(0, 0): tuple(k % WORKERS for k in range(CALENDAR_SLOTS))},
        members={(0, k): Member(ip("127.0.0.1"), base + k, keep_lb_header=True) for k in range(WORKERS)},
    )


def software_totals(lb):
    """(datagrams into the LB, payload bytes forwarded, LB CPU seconds) so far: the software LB."""
    def totals():
        c = lb.counters()
        return c.lb[0]["rx_packets"], sum(m["tx_bytes"] for m in c.member.values()), sum(lb.cpu_seconds())
    return totals


def trial(receivers, uri: str, mtu: int, rate, events: int, event: np.ndarray, totals=None, netns=None) -> dict:
    """One run of `events` events. totals: the LB's counters (software_totals, XDPBench.totals);
    netns: the namespace the Sender is created in (its sockets belong there)."""
    got = [0] * len(receivers)
    last = [0.0]
    done = threading.Event()

    def consume(i, rx):
        while not done.is_set():
            try:
                rx.recv(timeout=0.5)
            except TimeoutError:
                continue
            except ReceiverClosed:
                return
            got[i] += 1
            last[0] = time.perf_counter()

    threads = [threading.Thread(target=consume, args=(i, rx), daemon=True) for i, rx in enumerate(receivers)]
    for t in threads:
        t.start()
    before = totals() if totals else None
    with InNetns(netns) if netns else contextlib.nullcontext():
        tx = Sender(uri, mtu=mtu, sync=False, sockets=4, sndbuf=64 << 20, rate_gbps=rate)
    with tx:
        t0 = time.perf_counter()
        for k in range(events):
            tx.send(event, event_number=k)
        sent = tx.stats()
    deadline = time.monotonic() + 3.0
    while sum(got) < events and time.monotonic() < deadline:
        time.sleep(0.01)
    done.set()
    for t in threads:
        t.join()
    dt = max(last[0] - t0, 1e-9)
    n = sum(got)
    out = {"rate": rate, "delivered": n, "lossless": n == events, "event_gbps": n * event.nbytes * 8 / dt / 1e9,
           "datagrams": sent.datagrams, "mpps": sent.datagrams / dt / 1e6, "per_worker": list(got)}
    if totals:
        rx, tx_bytes, cpu = (a - b for a, b in zip(totals(), before))
        out["lb_rx"] = rx
        out["mpps"] = rx / dt / 1e6
        out["lb_cpu_s"] = cpu
        out["gbps_per_core"] = tx_bytes * 8 / max(cpu, 1e-9) / 1e9  # forwarded payload per LB CPU second
        out["mpps_per_core"] = rx / max(cpu, 1e-9) / 1e6  # datagrams per LB CPU second
    return out


def lossless(run, steps: int = 5) -> dict:
    """Unpaced first; if that loses events, bisect the pacing rate between 0 and the unpaced
    delivered rate for the highest lossless one."""
    r = run(None)
    if r["lossless"]:
        return r
    lo, hi, best = 0.0, max(r["event_gbps"], 0.2), None
    for _ in range(steps):
        mid = (lo + hi) / 2
        t = run(mid)
        if t["lossless"]:
            lo, best = mid, t
        else:
            hi = mid
    return best or r


def median(results: list[dict]) -> dict:
    return sorted(results, key=lambda r: r["event_gbps"])[len(results) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=400)
    ap.add_argument("--event-size", type=int, default=1 << 20)
    ap.add_argument("--mtu", type=int, nargs="+", default=[9000, 1500])
    ap.add_argument("--threads", type=int, default=1, help="software LB worker threads")
    ap.add_argument("--probe-seconds", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=3, help="trials per mode; the median is reported")
    ap.add_argument("--no-xdp", dest="xdp", action="store_false",
                    help="leave out the XDP LB (it needs root, clang and libbpf; see bench_lb_xdp.py)")
    args = ap.parse_args()
    event = np.random.default_rng(1).integers(0, 256, args.event_size, dtype=np.uint8)
    probes = Probes(seconds=args.probe_seconds)
    rows = []
    base = random.randint(41000, 48000)
    receivers = [Receiver(None, "127.0.0.1", base + k, with_lb_header=True, queue_size=512, rcvbuf=64 << 20)
                 for k in range(WORKERS)]
    xrows = []
    try:
        with contextlib.ExitStack() as stack:
            # the LB's socket gets the receive buffer of the four receivers together (4 x 64 MiB)
            lb = stack.enter_context(SoftwareLB(ports={0: (LB_PORT, LB_PORT)}, threads=args.threads,
                                                rcvbuf=WORKERS * (64 << 20)))
            lb.apply(diff(Tables(), lb_tables(base)))
            xb = None
            if args.xdp:
                try:
                    xb = stack.enter_context(XDPBench(WORKERS, base + 100))
                except (OSError, RuntimeError) as e:
                    print(f"XDP LB left out: {e}", flush=True)
            for mtu in args.mtu:
                direct_uri = f"ejfat://bench:18347/lb/1?data=127.0.0.1:{base}-{base + WORKERS - 1}"
                via_uri = f"ejfat://bench:18347/lb/1?data={LB_IP}:{LB_PORT}"
                directs, vias, xdirects, xvias = [], [], [], []
                if xb:
                    xb.set_mtu(mtu)
                    x_direct_uri, x_via_uri = xb.uris()
                for _ in range(args.repeat):  # interleaved, so all modes see the same machine load
                    directs.append(lossless(lambda r: trial(receivers, direct_uri, mtu, r, args.events, event)))
                    vias.append(lossless(lambda r: trial(receivers, via_uri, mtu, r, args.events, event,
                                                         totals=software_totals(lb))))
                    if xb:
                        xdirects.append(lossless(lambda r: trial(xb.receivers, x_direct_uri, mtu, r, args.events, event,
                                                                 netns=xb.hosts)))
                        xvias.append(lossless(lambda r: trial(xb.receivers, x_via_uri, mtu, r, args.events, event,
                                                              totals=xb.totals, netns=xb.hosts)))
                direct, via = median(directs), median(vias)
                seg = mtu - 28
                gso, gro = probes.gso(seg), probes.gro(seg)
                rows.append([mtu, direct["event_gbps"], via["event_gbps"], ratio(via["event_gbps"], direct["event_gbps"]),
                             via["mpps"], via["gbps_per_core"], gro.gbps, ratio(via["event_gbps"], gro.gbps), gso.gbps,
                             "/".join(map(str, via["per_worker"])), f"{via['delivered']}/{args.events}"])
                paced = lambda r: "unpaced" if r["rate"] is None else f"paced {r['rate']:.1f}"  # noqa: E731
                print(f"MTU {mtu}: direct {direct['event_gbps']:.2f} Gb/s ({paced(direct)}) | via LB {via['event_gbps']:.2f} Gb/s "
                      f"{via['mpps']:.3f} Mpps ({paced(via)}), {via['gbps_per_core']:.1f} Gb/s per LB core (ratio {rows[-1][3]:.2f}) | probes at {seg} B: gso {gso} gro {gro}",
                      flush=True)
                if xb:
                    xd, xv = median(xdirects), median(xvias)
                    xrows.append([mtu, xd["event_gbps"], xv["event_gbps"], ratio(xv["event_gbps"], xd["event_gbps"]),
                                  xv["mpps"], via["mpps"], xv["mpps_per_core"], via["mpps_per_core"],
                                  ratio(xv["mpps_per_core"], via["mpps_per_core"]),
                                  "/".join(map(str, xv["per_worker"])), f"{xv['delivered']}/{args.events}"])
                    print(f"MTU {mtu}: XDP: direct {xd['event_gbps']:.2f} Gb/s ({paced(xd)}) | via XDP {xv['event_gbps']:.2f} Gb/s "
                          f"{xv['mpps']:.3f} Mpps ({paced(xv)}), {xv['mpps_per_core']:.2f} Mpps per program CPU-s "
                          f"(socket LB {via['mpps_per_core']:.2f} per CPU-s)", flush=True)
            print("LB stats:", lb.stats())
    finally:
        for rx in receivers:
            rx.close()
    print()
    print(markdown_table(["MTU", "direct Gb/s", "via LB Gb/s", "via/direct", "LB Mpps", "LB Gb/s per core", "gro probe Gb/s",
                          "via/gro", "gso probe Gb/s", "events per worker", "delivered"], rows))
    if xrows:
        print()
        print(markdown_table(["MTU", "direct (netns) Gb/s", "via XDP Gb/s", "via/direct", "XDP Mpps", "socket LB Mpps",
                              "XDP Mpps per program CPU-s", "socket LB Mpps per CPU-s", "XDP/socket per CPU-s",
                              "events per worker", "delivered"], xrows))


if __name__ == "__main__":
    main()
