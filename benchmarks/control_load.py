"""Load for the control plane's gRPC server, every party in its own process.

    with Server(lbs=8, workers=1000) as srv:        # ControlPlane in a child process, controller ticking
        r = load(srv, "SendState", clients=2, seconds=5)   # grpc.aio clients in other processes
        r.rate, r.per_cpu_s, srv.rss()

The server process registers the workers in-process (each with one state report, so liveness keeps
them), then serves until told to stop; its CPU time and RSS are read from /proc, so nothing of the
clients or of this process is counted. Each client process runs `window` coroutines; each
coroutine owns a fixed set of sessions and reports for them one call at a time, with
`totalEventsRecv` counting its own successful calls per session. At the end the server's last
reported counters must add up to the calls the clients saw succeed: a lost or corrupted report
shows as a mismatch (`Server.check`).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import dataclass

ADMIN = "bench-admin-token-0000"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _serve(lbs: int, workers: int, period: float, cpu: int | None, src: str | None, conn) -> None:
    if src:  # another ejlb source tree (before/after comparisons)
        import sys

        sys.path.insert(0, src)
    import dataclasses

    from ejlb.control.config import ControlConfig, InstanceConfig
    from ejlb.control.server import ControlPlane

    instances = tuple(InstanceConfig(lb_id=i, ipv4=f"127.0.0.{i + 1}", ipv6=None, mac=f"02:00:00:00:00:{i:02x}")
                      for i in range(lbs))
    pin = {}
    if cpu is not None:
        if "cpu" in {f.name for f in dataclasses.fields(ControlConfig)}:
            pin = {"cpu": cpu}  # the control plane's own option
        else:  # a tree without it: the whole process, as `taskset -c CPU` would
            os.sched_setaffinity(0, {cpu})
    cfg = ControlConfig(port=0, admin_token=ADMIN, backend="memory", instances=instances, sync_ipv6=None,
                        controller_period=period, **pin)
    with ControlPlane(cfg) as cp:
        svc = cp.service
        sessions = []
        rids = [svc.reserve(ADMIN, f"lb{i}", None, [], 0, "")[0].id for i in range(lbs)]
        for w in range(workers):
            rid = str(rids[w % lbs])
            s, tok = svc.register(ADMIN, rid, f"w{w}", 1.0, "127.0.0.1", 20000 + w, 0, 0.0, 0.0, False)
            svc.send_state(tok, rid, str(s.id), 0.0, 0.0, True, {})
            sessions.append((rid, str(s.id), tok))
        conn.send((cp.port, sessions))
        while True:
            msg = conn.recv()
            if msg == "stop":
                break
            if msg == "totals":  # the last totalEventsRecv of every session
                with svc.lock:
                    conn.send({str(s.id): s.totals[0] for s in svc.sessions.values()})
            elif msg == "ticks":
                with svc.lock:
                    conn.send((cp.controller.last_tick_s, len(svc.sessions)))


class Server:
    """A control plane in a child process: `cpu` pins its threads to that core (its `cpu` option;
    the whole process for a tree without it); `src` imports ejlb from another source tree."""

    def __init__(self, lbs: int = 8, workers: int = 1000, period: float = 1.0, cpu: int | None = None,
                 src: str | None = None):
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(lbs, workers, period, cpu, src, child), daemon=True)

    def __enter__(self) -> "Server":
        self.proc.start()
        if not self._conn.poll(300):
            raise RuntimeError("control-plane process did not come up")
        self.port, self.sessions = self._conn.recv()
        self.pid = self.proc.pid
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._conn.send("stop")
        except OSError:
            pass
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()

    def cpu_s(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime, all threads

    def rss(self) -> int:
        """Resident set size in bytes."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def totals(self) -> dict[str, int]:
        self._conn.send("totals")
        return self._conn.recv()

    def last_tick(self) -> tuple[float, int]:
        self._conn.send("ticks")
        return self._conn.recv()


def _client(port: int, sessions: list, rpc: str, seconds: float, window: int, rate: float | None,
            q, start_at: float) -> None:
    import asyncio

    import grpc

    from ejlb.control import loadbalancer_pb2 as pb
    from ejlb.control import loadbalancer_pb2_grpc as pb_grpc

    async def main():
        done, errors, counts = 0, 0, {}
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.LoadBalancerStub(ch)
            call = stub.SendState if rpc == "SendState" else stub.Version
            await asyncio.sleep(max(0.0, start_at - time.time()))
            end = time.monotonic() + seconds
            gap = window / rate if rate else 0.0  # each coroutine's interval between calls when paced

            async def worker(mine):
                nonlocal done, errors
                mds = [(("authorization", f"Bearer {tok}"),) for _, _, tok in mine]
                i, nxt = 0, time.monotonic()
                while True:
                    if gap:
                        nxt += gap
                        delay = nxt - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        elif delay < -1.0:  # fell behind by a second: do not burst to catch up
                            nxt = time.monotonic()
                    if time.monotonic() >= end:
                        return
                    k = i % len(mine)
                    lb, sid, _ = mine[k]
                    if rpc == "SendState":
                        n = counts.get(sid, 0) + 1
                        req = pb.SendStateRequest(lbId=lb, sessionId=sid, fillPercent=0.5, isReady=True,
                                                  totalEventsRecv=n)
                    else:
                        req = pb.VersionRequest()
                    try:
                        await call(req, metadata=mds[k], timeout=10)
                        done += 1
                        if rpc == "SendState":
                            counts[sid] = n
                    except grpc.aio.AioRpcError:
                        errors += 1
                    i += 1

            owned = [sessions[j::window] for j in range(window)]
            await asyncio.gather(*(worker(m) for m in owned if m))
        return done, errors, counts

    q.put(asyncio.run(main()))


@dataclass
class Result:
    rpc: str
    calls: int
    errors: int
    seconds: float
    server_cpu_s: float
    counts: dict

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    @property
    def per_cpu_s(self) -> float:
        """Calls per CPU-second of the server process (its capacity on one core)."""
        return self.calls / self.server_cpu_s if self.server_cpu_s else float("nan")


def start_clients(srv: Server, rpc: str, clients: int, seconds: float, window: int = 64,
                  rate: float | None = None, sessions: list | None = None):
    """Start the client processes (they begin together ~1.5 s from now); returns (procs, queue, t0)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    sessions = srv.sessions if sessions is None else sessions
    share = [sessions[i::clients] for i in range(clients)]
    start_at = time.time() + 1.5  # imports and connections first: they are not the server's work
    per_client = rate / clients if rate else None
    procs = [ctx.Process(target=_client, args=(srv.port, share[i], rpc, seconds, window, per_client, q, start_at))
             for i in range(clients)]
    for p in procs:
        p.start()
    return procs, q, start_at


def collect(procs, q, seconds: float) -> tuple[int, int, dict]:
    results = []
    deadline = time.monotonic() + seconds + 120
    while len(results) < len(procs):
        try:
            results.append(q.get(timeout=1.0))
        except Exception:
            if time.monotonic() > deadline or any(p.exitcode not in (None, 0) for p in procs):
                raise RuntimeError(f"load clients failed: exit codes {[p.exitcode for p in procs]}") from None
    for p in procs:
        p.join()
    counts = {}
    for r in results:
        counts.update(r[2])
    return sum(r[0] for r in results), sum(r[1] for r in results), counts


def load(srv: Server, rpc: str, clients: int, seconds: float, window: int = 64, rate: float | None = None) -> Result:
    """One run: `clients` processes calling `rpc` for `seconds` (as fast as they can, or paced to
    `rate` calls/s in total); the server's CPU time over exactly that interval."""
    procs, q, start_at = start_clients(srv, rpc, clients, seconds, window, rate)
    time.sleep(max(0.0, start_at - time.time()))
    cpu0 = srv.cpu_s()
    time.sleep(seconds)
    cpu = srv.cpu_s() - cpu0
    calls, errors, counts = collect(procs, q, seconds)
    return Result(rpc, calls, errors, seconds, cpu, counts)


def check(srv: Server, counts_by_run: list[dict]) -> int:
    """Sessions whose last report on the server differs from the calls the clients saw succeed
    (counters restart at every run: the last run that touched a session decides)."""
    expect = {}
    for counts in counts_by_run:
        expect.update(counts)
    got = srv.totals()
    return sum(1 for sid, n in expect.items() if got.get(sid) != n)


def slope(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, value) samples (value units per second of t)."""
    n = len(samples)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    den = sum((t - mt) ** 2 for t, _ in samples)
    return sum((t - mt) * (v - mv) for t, v in samples) / den if den else 0.0
