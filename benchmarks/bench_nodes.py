"""LB nodes: table loading over the SmartNIC P4 API, and forwarding through a control-plane crash.

    python benchmarks/bench_nodes.py [--quick] [--crash-events 3000] [--rate 200]

1. Table load: the full set (8 LBs x 4 epochs x 512 slots, 64 members per LB, 8 senders per LB)
   into a fresh node over gRPC (`NodesBackend` -> `ejlb.node` server in this process), with the
   reference backend (API + translation cost alone) and the software LB; then a steady update (a new
   epoch on every LB: one calendar + its prefixes). Same run, in-process: the same diffs applied to
   the software LB directly; the ratio is the price of the API.
2. Crash: `kill -9` of the control plane mid-stream and a restart from its database 3 s later,
   events lost out of `--crash-events` at `--rate` events/s, in the same run for
   - embedded: `ejlb serve` with its in-process software LB (the data plane dies with it),
   - node: `ejlb lb-node` + `ejlb serve --dataplane snp4://...` (the node forwards on).
   Loopback; one Sender, two Receivers (roles of tests/e2e_netns_tools.py).
3. Scale-out (`--netns`, root): two senders -> an ECMP route (layer-4 hash) -> one or two software-LB
   nodes -> two workers, in network namespaces at MTU 9000; each sender offers `--gbps` with 1 MiB
   events for `--seconds`. Delivered Gb/s with the route through one node and through both, the
   same run, alternating `--repeat` times; the ratio two/one is the figure.
"""
from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from e2e_netns_tools import tagged_lines, wait_until  # noqa: E402

from ejlb.dataplane import tables as t  # noqa: E402
from ejlb.dataplane.backends import ReferenceBackend, create_backend  # noqa: E402
from ejlb.node import rules as R  # noqa: E402
from ejlb.node.client import NodesBackend  # noqa: E402
from ejlb.node.server import LBNode, NodeConfig  # noqa: E402

TOKEN = "bench-node-token"
MAC = bytes.fromhex("020000000000")
EJLB = [sys.executable, "-c", "from ejlb.cli.main import main; main()"]
ROLES = [sys.executable, str(HERE.parent / "tests" / "e2e_netns_tools.py")]


def full_tables(members: int = 64, seed_epoch: int = 0) -> t.Tables:
    lbs, epochs, cals, mems, senders = {}, {}, {}, {}, set()
    for lb in range(t.NUM_LBS):
        lbs[lb] = t.LBInstance(lb, MAC, ipaddress.IPv4Address(f"127.0.90.{lb + 1}"))
        for e in range(t.NUM_EPOCHS):
            start = (seed_epoch + e) * 1_000_000_007
            newest = e == t.NUM_EPOCHS - 1
            epochs[(lb, e)] = t.EpochRange(start, None if newest else start + 1_000_000_007, catch_all=newest)
            cals[(lb, e)] = tuple((s * 7 + e + seed_epoch) % members for s in range(512))
        for m in range(members):
            mems[(lb, m)] = t.Member(ipaddress.IPv4Address(f"127.1.{lb}.{m + 1}"), 30000 + m, 2)
        senders |= {(lb, ipaddress.IPv4Address(f"127.2.{lb}.{i + 1}")) for i in range(8)}
    return t.Tables(lbs=lbs, senders=frozenset(senders), epochs=epochs, calendars=cals, members=mems)


def next_epoch(tb: t.Tables) -> t.Tables:
    """Every LB's oldest epoch id recycled as the newest, with a new calendar (as a controller tick)."""
    epochs, cals = dict(tb.epochs), dict(tb.calendars)
    for lb in range(t.NUM_LBS):
        live = sorted((r.start, e) for (l_, e), r in tb.epochs.items() if l_ == lb)
        (_, oldest), (newest_start, newest) = live[0], live[-1]
        boundary = newest_start + 1_000_000_007
        epochs[(lb, newest)] = t.EpochRange(newest_start, boundary)
        epochs[(lb, oldest)] = t.EpochRange(boundary, None, catch_all=True)
        cals[(lb, oldest)] = tuple((m + 1) % 64 for m in tb.calendars[(lb, oldest)])
    return dataclasses.replace(tb, epochs=epochs, calendars=cals)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def table_load(repeat: int) -> list[dict]:
    full = full_tables()
    steady = next_epoch(full)
    rules = len(R.encode(full))
    plan = len(R.changes(full, steady, t.diff(full, steady)))
    rows = []
    for name in ("reference", "software"):
        loads, updates, direct_loads, direct_updates = [], [], [], []
        for _ in range(repeat):
            backend = ReferenceBackend() if name == "reference" else create_backend(
                "software", None, ports=dict.fromkeys(range(t.NUM_LBS), (39522, 39522)))
            node = LBNode(NodeConfig(port=0, token=TOKEN), backend, name).start()
            nodes = NodesBackend(f"snp4://{TOKEN}@127.0.0.1:{node.port}")
            loads.append(_timed(lambda: nodes.apply(t.diff(t.Tables(), full))))
            assert backend.installed == R.canonical(full)
            updates.append(_timed(lambda: nodes.apply(t.diff(full, steady))))
            assert backend.installed == R.canonical(steady) and nodes.health()[0].reloads == 1
            nodes.close()
            node.stop()
            backend.close()
            direct = create_backend("software", None, ports=dict.fromkeys(range(t.NUM_LBS), (39522, 39522))) \
                if name == "software" else ReferenceBackend()
            direct_loads.append(_timed(lambda: direct.apply(t.diff(t.Tables(), full))))
            direct_updates.append(_timed(lambda: direct.apply(t.diff(full, steady))))
            direct.close()
        med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        rows.append(dict(backend=name, rules=rules, load_s=med(loads), rules_per_s=rules / med(loads),
                         direct_load_s=med(direct_loads), update_rules=plan, update_s=med(updates),
                         direct_update_s=med(direct_updates)))
    return rows


# --- crash --------------------------------------------------------------------------------------------
def _popen(argv, out: Path, err: Path):
    return subprocess.Popen(argv, stdout=open(out, "w"), stderr=open(err, "w"))


def crash(mode: str, tmp: Path, n_events: int, rate: float, kill_at: float = 3.0, down_s: float = 3.0) -> dict:
    lb = "127.0.91.1"
    procs = []
    node_url = f"snp4://{TOKEN}@127.0.0.1:50061"

    def serve(name):
        argv = EJLB + ["serve", "--listen", "127.0.0.1:18091", "--db", str(tmp / f"{mode}.db"),
                       "--sync-ipv4", "127.0.0.1", "--instance", f"lb_id=0,ipv4={lb},ipv6=none,ports=19591-19591"]
        if mode == "node":
            argv += ["--dataplane", node_url]
        p = _popen(argv, tmp / f"{name}.out", tmp / f"{name}.log")
        procs.append(p)
        wait_until(lambda: (tmp / f"{name}.out").read_text().startswith("ejfat://"), 20, name)
        return p

    try:
        if mode == "node":
            procs.append(_popen(EJLB + ["lb-node", "--listen", "127.0.0.1:50061", "--token", TOKEN, "--ports", "19591"],
                                tmp / "node.out", tmp / "node.log"))
            wait_until(lambda: (tmp / "node.out").read_text().strip(), 20, "lb-node")
        cp = serve(f"{mode}-serve")
        admin = (tmp / f"{mode}-serve.out").read_text().split()[0]
        uri = subprocess.run(ROLES + ["reserve", admin, mode, "ipv4", "127.0.0.1"], capture_output=True, text=True,
                             check=True).stdout.strip()
        workers = [_popen(ROLES + ["worker", uri, f"127.0.92.{i}", f"w{i}", str(tmp / f"{mode}-w{i}.ev")],
                          tmp / f"{mode}-w{i}.o", tmp / f"{mode}-w{i}.err") for i in (1, 2)]
        procs += workers

        def ready():
            out = subprocess.run(ROLES + ["status", uri], capture_output=True, text=True).stdout
            return out and sum(1 for w in json.loads(out) if w["slots"]) == 2

        wait_until(ready, 30, "workers with slots")
        seconds = n_events / rate
        sender = _popen(ROLES + ["sender", uri, "1", str(n_events), "1", str(seconds), str(tmp / f"{mode}-tx.out")],
                        tmp / f"{mode}-tx.o", tmp / f"{mode}-tx.err")
        procs.append(sender)
        wait_until(lambda: tagged_lines(tmp / f"{mode}-tx.out", "SENT"), 30, "first event")
        time.sleep(kill_at)
        cp.send_signal(signal.SIGKILL)
        cp.wait(10)
        t_kill = time.time()
        time.sleep(down_s)
        serve(f"{mode}-serve2")
        sender.wait(seconds + 60)
        time.sleep(2.0)
        for w in workers:
            w.send_signal(signal.SIGTERM)
            w.wait(20)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
    sent = {int(k): int(tick) / 1e6 for _, k, tick, _ in tagged_lines(tmp / f"{mode}-tx.out", "SENT")}
    got = {int(k) for i in (1, 2) for _, _, k, _, ok in tagged_lines(tmp / f"{mode}-w{i}.ev", "EV") if ok == "1"}
    lost = [k for k in sent if k not in got]
    during = sum(1 for k in sent if t_kill <= sent[k] <= t_kill + down_s)
    return dict(mode=mode, sent=len(sent), lost=len(lost), sent_while_down=during)


# --- scale-out -----------------------------------------------------------------------------------------
NET = {"cp": "10.250.0.10", "n1": "10.250.0.11", "n2": "10.250.0.12", "daq1": "10.250.0.31",
       "daq2": "10.250.0.32", "w1": "10.250.0.21", "w2": "10.250.0.22"}
VIP = "10.250.1.1"
EVENT = 1 << 20


def role_blast(uri: str, data_id: str, seconds: str, gbps: str, out: str) -> None:
    import numpy as np

    from ejlb.shim.sender import Sender

    payload = np.zeros(EVENT, np.uint8)
    n, t_end = 0, time.time() + float(seconds)
    with Sender(uri, data_id=int(data_id), mtu=9000, sndbuf=8 << 20, rate_gbps=float(gbps)) as tx:
        while time.time() < t_end:
            tx.send(payload)
            n += 1
    Path(out).write_text(f"{n}\n")


def role_count(uri: str, ip: str, name: str, out: str) -> None:
    from ejlb.shim.receiver import Receiver

    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    n = nbytes = 0
    with Receiver(uri, ip, 30000, name=name, state_period=0.1, queue_size=4096, threads=1) as rx:
        Path(out + ".ready").write_text("1")
        while not stop["now"]:
            try:
                ev = rx.recv(timeout=0.2)
            except TimeoutError:
                continue
            n, nbytes = n + 1, nbytes + len(ev)
            Path(out).write_text(f"{n} {nbytes}\n") if n % 200 == 0 else None
    Path(out).write_text(f"{n} {nbytes}\n")


def scale_out(tmp: Path, seconds: float, gbps: float, repeat: int) -> list[tuple[int, float]]:
    from e2e_netns_tools import Topology

    me = [sys.executable, str(Path(__file__).resolve())]
    url = f"snp4://{TOKEN}@{NET['n1']}:50051,{NET['n2']}:50051"
    results = []
    with Topology(f"ejbn{os.getpid()}", NET) as topo:
        for n in ("n1", "n2"):
            topo.run(n, ["ip", "addr", "add", f"{VIP}/32", "dev", "lo"])
            topo.popen(n, EJLB + ["lb-node", "--listen", f"{NET[n]}:50051", "--token", TOKEN, "--ports", "19522"],
                       stdout=open(tmp / f"{n}.out", "w"), stderr=open(tmp / f"{n}.log", "w"))
        for d in ("daq1", "daq2"):
            topo.run(d, ["sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1"])
        for n in ("n1", "n2"):
            wait_until(lambda n=n: (tmp / f"{n}.out").read_text().strip(), 20, n)
        topo.popen("cp", EJLB + ["serve", "--listen", f"{NET['cp']}:18008", "--dataplane", url,
                                 "--sync-ipv4", NET["cp"], "--instance", f"lb_id=0,ipv4={VIP},ipv6=none,ports=19522-19522"],
                   stdout=open(tmp / "serve.out", "w"), stderr=open(tmp / "serve.log", "w"))
        wait_until(lambda: (tmp / "serve.out").read_text().startswith("ejfat://"), 20, "serve")
        admin = (tmp / "serve.out").read_text().split()[0]
        uri = topo.run("daq1", ROLES + ["reserve", admin, "scale", "ipv4", NET["daq1"], NET["daq2"]]).strip()
        counters = {w: tmp / f"{w}.count" for w in ("w1", "w2")}
        workers = [topo.popen(w, me + ["role", "count", uri, NET[w], w, str(counters[w])],
                              stderr=open(tmp / f"{w}.err", "w")) for w in ("w1", "w2")]
        wait_until(lambda: all(Path(str(c) + ".ready").exists() for c in counters.values()), 30, "workers")
        time.sleep(3.0)  # registered, reporting, in the calendar

        def delivered() -> tuple[int, int]:
            tot = [0, 0]
            for c in counters.values():
                if c.exists() and c.read_text().strip():
                    a, b = c.read_text().split()
                    tot[0], tot[1] = tot[0] + int(a), tot[1] + int(b)
            return tot[0], tot[1]

        for _ in range(repeat):
            for n_nodes in (1, 2):
                hops = ("n1", "n2")[:n_nodes]
                for d in ("daq1", "daq2"):
                    args = []
                    for h in hops:
                        args += ["nexthop", "via", NET[h], "dev", "eth0"]
                    topo.run(d, ["ip", "route", "replace", f"{VIP}/32", *args])
                time.sleep(0.5)
                _, b0 = delivered()
                t0 = time.time()
                senders = [topo.popen(d, me + ["role", "blast", uri, str(i + 1), str(seconds), str(gbps),
                                               str(tmp / f"{d}.sent")], stderr=open(tmp / f"{d}.err", "w"))
                           for i, d in enumerate(("daq1", "daq2"))]
                for p in senders:
                    p.wait(seconds + 60)
                time.sleep(1.5)  # the last events drain and the counters are written
                _, b1 = delivered()
                results.append((n_nodes, (b1 - b0) * 8 / (time.time() - 1.5 - t0) / 1e9))
        for w in workers:
            w.send_signal(signal.SIGTERM)
            w.wait(20)
    return results


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "role":
        globals()[f"role_{sys.argv[2]}"](*sys.argv[3:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one repeat, a short crash run")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--crash-events", type=int, default=3000)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--netns", action="store_true", help="also the scale-out run (root, ip netns)")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--gbps", type=float, default=6.0, help="offered per sender (two senders)")
    args = ap.parse_args()
    repeat = 1 if args.quick else args.repeat
    n = 1200 if args.quick else args.crash_events

    print("## Table load over the SmartNIC P4 API (median of %d)\n" % repeat)
    print("| node backend | rules | full load s | rules/s | in-process load s | ratio | update rules | update s | in-process update s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in table_load(repeat):
        print(f"| {r['backend']} | {r['rules']} | {r['load_s']:.3f} | {r['rules_per_s']:.0f} | {r['direct_load_s']:.3f} | "
              f"{r['load_s'] / r['direct_load_s']:.1f} | {r['update_rules']} | {r['update_s'] * 1e3:.1f} ms | "
              f"{r['direct_update_s'] * 1e3:.1f} ms |")
    print(f"\n## kill -9 of the control plane, restart after 3 s ({n} events at {args.rate:.0f}/s)\n")
    print("| data plane | events sent | sent while down | lost |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for mode in ("embedded", "node"):
            r = crash(mode, Path(d), n, args.rate)
            print(f"| {r['mode']} | {r['sent']} | {r['sent_while_down']} | {r['lost']} |", flush=True)
        if args.netns:
            res = scale_out(Path(d), 2.0 if args.quick else args.seconds, args.gbps, repeat if not args.quick else 1)
            one = [g for n_, g in res if n_ == 1]
            two = [g for n_, g in res if n_ == 2]
            med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
            print(f"\n## Scale-out: two senders offering {2 * args.gbps:.0f} Gb/s of 1 MiB events, ECMP\n")
            print("| nodes | delivered Gb/s (median) | trials |")
            print("|---|---|---|")
            print(f"| 1 | {med(one):.2f} | {', '.join(f'{g:.2f}' for g in one)} |")
            print(f"| 2 | {med(two):.2f} | {', '.join(f'{g:.2f}' for g in two)} |")
            print(f"\ntwo nodes / one node: {med(two) / med(one):.2f}")


if __name__ == "__main__":
    main()
