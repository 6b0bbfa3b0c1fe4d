"""Control-plane benchmarks: SendState throughput, controller tick time, calendar computation.

    python benchmarks/bench_control.py [--quick] [--seconds 8] [--clients 2] [--workers 1000] [--lbs 8]
    python benchmarks/bench_control.py --soak 600 [--rate 10000]      # memory over a long run

1. SendState RPC/s: `--workers` sessions registered on `--lbs` reservations of a control plane in
   its own process (controller ticking every second), `--clients` grpc.aio client processes, 64
   coroutines each, every coroutine reporting for its own sessions one call at a time
   (`control_load.py`). Also the Version RPC (auth only) on the same server, interleaved
   (Version, SendState, SendState, Version): the in-run grpcio floor. "per CPU-s" is calls per
   CPU-second of the server process (/proc), so neither the clients nor this process count; the
   server's last counters are checked against the calls the clients saw succeed.
2. Controller tick: 8 LBs x `--tick-workers` ready workers, in-process, with each balancer.
   "steady": reports unchanged (no new epoch); "churn": every worker's control signal (signal
   balancer) or measured service rate (capacity balancer) changes every tick (new calendar + epoch
   on every LB, tables diffed and applied to a memory backend).
3. Calendar: slot counts + layout for 1024 workers, from scratch and sticky (previous calendar
   given), with the slot moves of the sticky layout vs the deployed interleave+shuffle.
`--soak SECONDS`: only SendState, paced at `--rate` in total, the server's RSS sampled every 5 s;
prints the least-squares slope of each half (the per-tick histories are bounded but take 300-600
ticks to fill); a benchmark, not a test: nothing asserted.
Machine reference: the `udp_limit` sendmmsg probe (1472 B) measured in the same run; RPC rates are
also printed as a ratio to its datagram rate (a machine-speed normaliser, not a like-for-like limit).
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from probes import Probes, markdown_table, ratio  # noqa: E402

from control_load import Server, check, collect, load, slope, start_clients  # noqa: E402

from ejlb.control import calendar as cal  # noqa: E402
from ejlb.control.config import ControlConfig, InstanceConfig  # noqa: E402
from ejlb.control.server import ControlPlane  # noqa: E402

ADMIN = "bench-admin-token-0000"


def bench_sendstate(lbs: int, workers: int, clients: int, seconds: float, cpu: int | None = None,
                    compare: str | None = None) -> dict:
    """SendState and the Version floor, interleaved runs (the load from other work drifts), best of
    two each by server CPU; the counters checked after the runs. With `compare` (another ejlb source
    tree), a second server from that tree runs alongside and the runs alternate between the two."""
    trees = {"this": None, **({"compare": compare} if compare else {})}
    servers = {name: Server(lbs, workers, cpu=cpu, src=src) for name, src in trees.items()}
    out = {}
    try:
        for srv in servers.values():
            srv.__enter__()
        runs = {(name, rpc): [] for name in servers for rpc in ("SendState", "Version")}
        for rpc in ("Version", "SendState", "SendState", "Version"):
            for name, srv in servers.items():
                runs[(name, rpc)].append(load(srv, rpc, clients, seconds / 2))
        for name, srv in servers.items():
            best = {rpc: max(runs[(name, rpc)], key=lambda r: r.per_cpu_s) for rpc in ("SendState", "Version")}
            tick_s, sessions = srv.last_tick()
            assert sessions == workers, f"{name}: {sessions} sessions left of {workers}"
            out[name] = {"send": best["SendState"], "version": best["Version"], "tick_s": tick_s,
                         "mismatched": check(srv, [r.counts for r in runs[(name, "SendState")]]),
                         "errors": sum(r.errors for rpc in ("SendState", "Version") for r in runs[(name, rpc)])}
    finally:
        for srv in servers.values():
            srv.__exit__(None, None, None)
    return out


def soak(lbs: int, workers: int, clients: int, seconds: float, rate: float, every: float = 5.0,
         cpu: int | None = None) -> dict:
    """SendState paced at `rate` calls/s for `seconds`, the server's RSS sampled every `every` s;
    slopes fitted over each half (the first 10 % left out: start-up)."""
    with Server(lbs, workers, cpu=cpu) as srv:
        procs, q, start_at = start_clients(srv, "SendState", clients, seconds, rate=rate)
        time.sleep(max(0.0, start_at - time.time()))
        t0, cpu0 = time.monotonic(), srv.cpu_s()
        samples = []
        while (t := time.monotonic() - t0) < seconds:
            samples.append((t, srv.rss()))
            print(f"soak {t:6.0f} s: RSS {samples[-1][1] / 2**20:7.1f} MiB", file=sys.stderr, flush=True)
            time.sleep(min(every, max(0.0, seconds - t)))
        cpu = srv.cpu_s() - cpu0
        samples.append((time.monotonic() - t0, srv.rss()))
        calls, errors, counts = collect(procs, q, seconds)
        mismatched = check(srv, [counts])
    # the bounded buffers fill at one point per tick: per-LB history (300 ticks) and scalar series
    # (600): the first half shows them filling, the second half whether anything else grows
    first = [x for x in samples if seconds / 10 <= x[0] < seconds / 2]
    second = [x for x in samples if x[0] >= seconds / 2]
    return {"calls": calls, "errors": errors, "rate": calls / seconds, "per_cpu_s": calls / cpu if cpu else 0.0,
            "server_busy": cpu / seconds, "rss_first": (first or second)[0][1], "rss_half": second[0][1],
            "rss_last": samples[-1][1], "rss_max": max(v for _, v in samples), "slope_first": slope(first),
            "slope": slope(second), "mismatched": mismatched, "samples": len(samples)}


def bench_tick(lbs: int, workers: int, ticks: int, balancer: str) -> dict:
    instances = tuple(InstanceConfig(lb_id=i, ipv4=f"127.0.0.{i + 1}", ipv6=None, mac=f"02:00:00:00:00:0{i}")
                      for i in range(lbs))
    cfg = ControlConfig(port=0, admin_token=ADMIN, backend="memory", instances=instances, sync_ipv6=None,
                        balancer=balancer)
    clock = [time.time()]
    cp = ControlPlane(cfg)
    cp.clock = lambda: clock[0]
    cp.start(run_controller=False)  # ticks only when we say
    try:
        svc = cp.service
        sessions = []
        for lb in range(lbs):
            res, _ = svc.reserve(ADMIN, f"lb{lb}", None, [f"127.0.1.{lb}"], 0, "")
            for w in range(workers):
                s, tok = svc.register(ADMIN, str(res.id), f"w{w}", 1.0, f"10.{lb}.{w // 256}.{w % 256}",
                                      20000, 0, 0.5, 2.0, False)
                sessions.append((str(res.id), str(s.id), tok))
        rnd = random.Random(1)

        dequeued = [0] * len(sessions)

        def report(signal):
            # signal balancer: the control signal moves the weights; capacity balancer: a busy queue
            # (fill 0.5) and the dequeue rate it measures (random under churn: ±50 %)
            for k, (lb, sid, tok) in enumerate(sessions):
                dequeued[k] += round(100 * (1 + signal() / 600))
                svc.send_state(tok, lb, sid, 0.5, signal(), True,
                               {"total_events_dequeued": dequeued[k], "total_events_reassembled": dequeued[k]})

        out = {}
        for mode, signal in (("churn", lambda: rnd.uniform(-300, 300)), ("steady", lambda: 0.0)):
            times, cpu = [], []
            started = cp.controller.epochs_started
            for _ in range(ticks):
                clock[0] += 1.0
                report(signal)
                t0, c0 = time.perf_counter(), time.thread_time()
                cp.tick()
                times.append(time.perf_counter() - t0)
                cpu.append(time.thread_time() - c0)
            times, cpu = times[1:], cpu[1:]  # the first steady tick still changes from the churned weights
            out[mode] = (statistics.median(times), max(times), cp.controller.epochs_started - started,
                         statistics.median(cpu))
        out["moved_per_epoch"] = cp.controller.slots_moved / max(cp.controller.epochs_started, 1)
        return out
    finally:
        cp.stop()


def bench_calendar(workers: int, reps: int) -> dict:
    rnd = random.Random(2)
    w1 = [rnd.uniform(0.5, 2.0) for _ in range(workers)]
    w2 = [x * rnd.uniform(0.9, 1.1) for x in w1]
    mins, maxs = [0.5] * workers, [2.0] * workers

    def timed(fn):
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    counts1 = dict(enumerate(cal.slot_counts(w1, mins, maxs)))
    prev = cal.layout(counts1)
    counts2 = dict(enumerate(cal.slot_counts(w2, mins, maxs)))
    t_counts = timed(lambda: cal.slot_counts(w2, mins, maxs))
    t_fresh = timed(lambda: cal.layout(counts2))
    t_sticky = timed(lambda: cal.layout(counts2, prev))
    sticky = cal.layout(counts2, prev)
    deployed = cal.layout(counts2, prev, strategy="dynamic", sticky=False, rng=rnd)
    # a smaller pool shows the moves better: 16 workers, one weight changes by 20 %
    c16a = dict(enumerate(cal.slot_counts([1.0] * 16)))
    c16b = dict(enumerate(cal.slot_counts([1.0] * 15 + [1.2])))
    p16 = cal.layout(c16a)
    return {"counts": t_counts, "layout": t_fresh, "sticky": t_sticky,
            "moves_sticky": cal.moves(prev, sticky), "moves_deployed": cal.moves(prev, deployed),
            "moves_min": cal.min_moves(prev, counts2),
            "m16_sticky": cal.moves(p16, cal.layout(c16b, p16)),
            "m16_deployed": cal.moves(p16, cal.layout(c16b, p16, strategy="dynamic", sticky=False, rng=rnd))}


def simulate_fill_feedback(gain: float, ticks: int = 400) -> tuple[float, float]:
    """Two workers, the first half as fast, offered 90 % of their joint capacity; both report fill
    and a zero control signal. Returns (slow worker's final share, its final queue fill)."""
    from ejlb.control import feedback

    cap = (1 / 3, 2 / 3)
    w, q = [1000.0, 1000.0], [0.0, 0.0]
    for _ in range(ticks):
        share = [x / sum(w) for x in w]
        q = [min(1.0, max(0.0, qi + 0.9 * s - c)) for qi, s, c in zip(q, share, cap)]
        w = feedback.step([feedback.Report(x, 0.0, f) for x, f in zip(w, q)], gain)
    return w[0] / sum(w), q[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke run)")
    ap.add_argument("--seconds", type=float, default=8.0, help="RPC runs: total per RPC (two runs each)")
    ap.add_argument("--clients", type=int, default=2, help="load-generating processes")
    ap.add_argument("--workers", type=int, default=1000, help="registered sessions (SendState, soak)")
    ap.add_argument("--lbs", type=int, default=8, help="reservations the workers are spread over")
    ap.add_argument("--tick-workers", type=int, default=1000, help="workers per LB in the tick benchmark")
    ap.add_argument("--soak", type=float, metavar="SECONDS",
                    help="only the soak: SendState paced at --rate for SECONDS, server RSS sampled")
    ap.add_argument("--rate", type=float, default=10000.0, help="soak: SendState/s in total (10 Hz x 1000)")
    ap.add_argument("--server-cpu", type=int, default=0,
                    help="pin the control-plane process to this core (-1: not pinned; default 0)")
    ap.add_argument("--compare", metavar="SRC", help="also measure the ejlb in this source tree (its src/ "
                    "folder, e.g. from `git archive main src`), runs alternating with this one")
    a = ap.parse_args()
    cpu = None if a.server_cpu < 0 else a.server_cpu
    if a.soak:
        r = soak(a.lbs, a.workers, a.clients, a.soak, a.rate, cpu=cpu)
        print(markdown_table(["soak", "value"], [
            ["duration, workers, LBs, server core", f"{a.soak:.0f} s, {a.workers}, {a.lbs}, "
             f"{'any' if cpu is None else cpu}"],
            ["SendState/s asked / done", f"{a.rate:.0f} / {r['rate']:.0f} ({r['errors']} errors)"],
            ["server CPU (cores busy), SendState per server CPU-s", f"{r['server_busy']:.2f}, {r['per_cpu_s']:.0f}"],
            ["server RSS after warm-up / at half time / at the end / max", f"{r['rss_first'] / 2**20:.1f} / "
             f"{r['rss_half'] / 2**20:.1f} / {r['rss_last'] / 2**20:.1f} / {r['rss_max'] / 2**20:.1f} MiB"],
            ["RSS slope, first half (bounded histories filling) / second half (least squares)",
             f"{r['slope_first'] * 60 / 2**10:+.1f} / {r['slope'] * 60 / 2**10:+.1f} KiB/min "
             f"({r['samples']} samples)"],
            ["sessions whose last counter differs from the client's", str(r["mismatched"])],
        ]))
        return
    if a.quick:
        a.seconds, a.workers, a.lbs = 2.0, 50, 2
    lbs, per_lb, ticks = (2, 32, 4) if a.quick else (a.lbs, a.tick_workers, 12)

    probe = Probes(seconds=1.0 if a.quick else 2.0).sendmmsg(1472)
    pps = probe.mpps * 1e6
    s = bench_sendstate(a.lbs, a.workers, a.clients, a.seconds, cpu=cpu, compare=a.compare)
    ticks_by = {b: bench_tick(lbs, per_lb, ticks, b) for b in ("capacity", "signal")}
    c = bench_calendar(1024, 5 if a.quick else 50)

    print(f"probe udp_limit sendmmsg 1472 B: {probe}")
    rows, notes = [], []
    for name, r in s.items():
        send, version = r["send"], r["version"]
        tag = "" if name == "this" else f" [{a.compare}]"
        rows += [[f"SendState ({a.workers} workers on {a.lbs} LBs){tag}", f"{send.rate:.0f}", f"{send.per_cpu_s:.0f}",
                  f"{send.per_cpu_s / version.per_cpu_s:.2f}", f"{ratio(send.rate, pps):.4f}"],
                 [f"Version (auth only: the grpcio floor){tag}", f"{version.rate:.0f}", f"{version.per_cpu_s:.0f}",
                  "1.00", f"{ratio(version.rate, pps):.4f}"]]
        notes.append(f"{name}: RPC errors {r['errors']}; sessions whose last counter differs from the client's: "
                     f"{r['mismatched']}; last controller tick in the server: {r['tick_s'] * 1e3:.1f} ms")
    where = "not pinned" if cpu is None else f"pinned to core {cpu}"
    print(markdown_table([f"RPC ({a.clients} grpc.aio client processes; server {where})", "rate (RPC/s)",
                          "server RPC per CPU-s", "per CPU-s / Version's", "ratio to probe datagrams/s"], rows))
    print("\n".join(notes))
    print(markdown_table(["controller tick", "median wall (ms)", "max wall (ms)", "median CPU (ms)",
                          f"epochs started in {ticks - 1} ticks"], [
        [f"{lbs} LBs x {per_lb} workers, {b} balancer, {mode}", f"{t[mode][0] * 1e3:.1f}",
         f"{t[mode][1] * 1e3:.1f}", f"{t[mode][3] * 1e3:.1f}", t[mode][2]]
        for b, t in ticks_by.items() for mode in ("churn", "steady")]))
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for b, t in ticks_by.items():
        print(f"slots moved per new epoch under churn (sticky layout, {b}): {t['moved_per_epoch']:.1f} of 512")
    print(markdown_table(["calendar, 1024 workers", "median (ms)"], [
        ["slot counts", f"{c['counts'] * 1e3:.2f}"], ["layout from scratch", f"{c['layout'] * 1e3:.2f}"],
        ["sticky layout (previous given)", f"{c['sticky'] * 1e3:.2f}"],
    ]))
    print(f"moves after ±10 % weight change, 1024 workers: sticky {c['moves_sticky']} "
          f"(lower bound {c['moves_min']}), deployed interleave+shuffle {c['moves_deployed']}")
    print(f"moves after one of 16 workers goes to 1.2x weight: sticky {c['m16_sticky']}, "
          f"deployed {c['m16_deployed']}")
    rows = []
    for gain in (0.0, 0.05, 0.5):
        share, fill = simulate_fill_feedback(gain)
        rows.append([f"{gain}" + (" (deployed rule)" if gain == 0 else ""), f"{share:.2f}", f"{fill:.2f}"])
    print("fill feedback, slow worker (can drain 0.37 of the load), 400 ticks:")
    print(markdown_table(["fill_gain", "slow worker's share", "its queue fill"], rows))


if __name__ == "__main__":
    main()
