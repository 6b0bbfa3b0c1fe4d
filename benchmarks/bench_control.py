"""Control-plane benchmarks: SendState throughput, controller tick time, calendar computation.

    python benchmarks/bench_control.py [--quick] [--seconds 5] [--clients 4] [--workers 1000]

1. SendState RPC/s: one LB with `--workers` registered sessions on a real gRPC server (loopback,
   in this process), `--clients` client processes each cycling through its share of sessions with
   up to 64 calls in flight. Also the Version RPC (auth only) with the same load, as the in-run
   gRPC baseline: SendState/Version says what our handling costs on top of grpcio.
2. Controller tick: 8 LBs x 512 ready workers, in-process, with each balancer. "steady": reports
   unchanged (no new epoch); "churn": every worker's control signal (signal balancer) or measured
   service rate (capacity balancer) changes every tick (new calendar + epoch on every
   LB, tables diffed and applied to a memory backend).
3. Calendar: slot counts + layout for 1024 workers, from scratch and sticky (previous calendar
   given), with the slot moves of the sticky layout vs the deployed interleave+shuffle.
Machine reference: the `udp_limit` sendmmsg probe (1472 B) measured in the same run; RPC rates are
also printed as a ratio to its datagram rate (a machine-speed normaliser, not a like-for-like limit).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from probes import Probes, markdown_table, ratio  # noqa: E402

from ejlb.control import calendar as cal  # noqa: E402
from ejlb.control.config import ControlConfig, InstanceConfig  # noqa: E402
from ejlb.control.server import ControlPlane  # noqa: E402

ADMIN = "bench-admin-token-0000"


def _client(port: int, sessions: list, rpc: str, seconds: float, window: int, q) -> None:
    import grpc

    from ejlb.control import loadbalancer_pb2 as pb
    from ejlb.control import loadbalancer_pb2_grpc as pb_grpc

    ch = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.LoadBalancerStub(ch)
    reqs = []
    for lb, sid, token in sessions:
        md = (("authorization", f"Bearer {token}"),)
        if rpc == "SendState":
            reqs.append((stub.SendState, pb.SendStateRequest(lbId=lb, sessionId=sid, fillPercent=0.5, isReady=True,
                                                             totalEventsRecv=1), md))
        else:
            reqs.append((stub.Version, pb.VersionRequest(), md))
    done = errors = 0
    inflight = []
    i = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        while len(inflight) < window:
            call, req, md = reqs[i % len(reqs)]
            inflight.append(call.future(req, metadata=md, timeout=10))
            i += 1
        f = inflight.pop(0)
        try:
            f.result()
            done += 1
        except grpc.RpcError:
            errors += 1
    for f in inflight:
        try:
            f.result()
        except grpc.RpcError:
            pass
    ch.close()
    q.put((done, errors))


def rpc_rate(port: int, sessions: list, rpc: str, clients: int, seconds: float) -> tuple[float, int, float]:
    """(RPC/s, errors, RPCs per CPU-second of this process = the server's capacity on one core)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    share = [sessions[i::clients] for i in range(clients)]
    procs = [ctx.Process(target=_client, args=(port, share[i], rpc, seconds, 64, q)) for i in range(clients)]
    for p in procs:
        p.start()
    time.sleep(1.0)  # let the clients import and connect before the server's CPU clock starts
    cpu0 = time.process_time()
    results = []
    deadline = time.monotonic() + seconds + 60
    while len(results) < clients:
        try:
            results.append(q.get(timeout=1.0))
        except Exception:
            if time.monotonic() > deadline or any(p.exitcode not in (None, 0) for p in procs):
                raise RuntimeError(f"{rpc} load clients failed: exit codes {[p.exitcode for p in procs]}")
    cpu = time.process_time() - cpu0
    for p in procs:
        p.join()
    done = sum(r[0] for r in results)
    return done / seconds, sum(r[1] for r in results), done / cpu if cpu else float("nan")


def bench_sendstate(workers: int, clients: int, seconds: float, threads: int = 8) -> dict:
    from ejlb.control.client import LBManager

    cfg = ControlConfig(port=0, admin_token=ADMIN, backend="memory", controller_period=1.0, rpc_threads=threads)
    with ControlPlane(cfg) as cp:
        m = LBManager(cp.admin_uri)
        r = m.reserve("bench")
        sessions = []
        for i in range(workers):
            reg = m.register(f"w{i}", "127.0.0.1", 20000 + i, lb_id=r.lb_id)
            sessions.append((r.lb_id, reg.session_id, reg.token))
        # interleaved runs, best of two each: the machine's load from others drifts between runs
        runs = {"SendState": [], "Version": []}
        for rpc in ("Version", "SendState", "SendState", "Version"):
            runs[rpc].append(rpc_rate(cp.port, sessions, rpc, clients, seconds / 2))
        send, send_err, send_cap = max(runs["SendState"])
        version, _, version_cap = max(runs["Version"])
        assert sum(1 for s in cp.service.sessions.values() if s.last_report) == workers
        return {"sendstate": send, "errors": send_err, "version": version,
                "sendstate_cap": send_cap, "version_cap": version_cap}


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
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1000)
    a = ap.parse_args()
    if a.quick:
        a.seconds, a.workers, a.clients = 1.0, 50, 2
    lbs, per_lb, ticks = (2, 32, 4) if a.quick else (8, 512, 12)

    probe = Probes(seconds=1.0 if a.quick else 2.0).sendmmsg(1472)
    pps = probe.mpps * 1e6
    s = bench_sendstate(a.workers, a.clients, a.seconds)
    ticks_by = {b: bench_tick(lbs, per_lb, ticks, b) for b in ("capacity", "signal")}
    c = bench_calendar(1024, 5 if a.quick else 50)

    print(f"probe udp_limit sendmmsg 1472 B: {probe}")
    print(markdown_table(["RPC", "rate (RPC/s)", "server RPC per CPU-s", "ratio to Version",
                          "ratio to probe datagrams/s"], [
        [f"SendState ({a.workers} workers, {a.clients} clients)", f"{s['sendstate']:.0f}", f"{s['sendstate_cap']:.0f}",
         f"{s['sendstate'] / s['version']:.2f}", f"{ratio(s['sendstate'], pps):.4f}"],
        ["Version (auth only)", f"{s['version']:.0f}", f"{s['version_cap']:.0f}", "1.00", f"{ratio(s['version'], pps):.4f}"],
    ]))
    print(f"SendState errors: {s['errors']}")
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
