"""The whole system as `ejlb demo` runs it: embedded control plane, software LB, registered
receivers reporting state, one sender with sync, on loopback. A sweep of sender pacing rates
(and one unpaced trial) gives the delivered goodput and the loss at each rate; the highest
lossless rate is the figure to quote. Ratios are to the udp_gso / udp_gro probes of this run at the
demo's datagram size (MTU 9000 -> 8972-byte UDP payloads).

    python benchmarks/bench_demo.py [--events 2000] [--size 262144] [--workers 3] [--rates 0.5 1 2 4 8 0]
"""
from __future__ import annotations

import argparse
import sys
import time

sys.path.insert(0, __import__("os").path.dirname(__file__))
from probes import Probes, markdown_table, ratio  # noqa: E402

from ejlb.demo import DemoConfig, run_demo  # noqa: E402

DATAGRAM = 8972  # UDP payload at MTU 9000 over IPv4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--size", type=int, default=256 * 1024)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--rates", type=float, nargs="+", default=[0.5, 1, 2, 4, 8, 0], help="Gb/s; 0 = unpaced")
    ap.add_argument("--probe-seconds", type=float, default=2.0)
    a = ap.parse_args()

    probes = Probes(seconds=a.probe_seconds)
    gso, gro = probes.gso(DATAGRAM), probes.gro(DATAGRAM)
    print(f"probes at {DATAGRAM} B: udp_gso {gso} | udp_gro {gro}")

    rows = []
    best = 0.0
    for rate in a.rates:
        t0 = time.monotonic()
        r = run_demo(DemoConfig(events=a.events, size=a.size, workers=a.workers, rate_gbps=rate or None))
        wall = time.monotonic() - t0
        loss = r.events_missing / r.events_sent
        if r.ok:
            best = max(best, r.gbps)
        rows.append(["unpaced" if not rate else f"{rate:g}", r.events_received, f"{loss:.1%}", r.gbps,
                     ratio(r.gbps, gso.gbps), ratio(r.gbps, gro.gbps), wall])
        print(f"rate {rows[-1][0]:>8}: {r.gbps:.2f} Gb/s delivered, loss {loss:.1%}, run {wall:.1f} s "
              f"(setup + send + drain + teardown)", flush=True)
    print()
    print(markdown_table(["pacing Gb/s", "events", "loss", "delivered Gb/s", "/ udp_gso", "/ udp_gro", "run s"], rows))
    print(f"\nhighest lossless delivered rate: {best:.2f} Gb/s = {ratio(best, gso.gbps):.2f} x udp_gso, "
          f"{ratio(best, gro.gbps):.2f} x udp_gro ({a.workers} workers, {a.size} B events, MTU 9000)")


if __name__ == "__main__":
    main()
