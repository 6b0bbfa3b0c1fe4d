"""LB nodes in network namespaces: the data plane as its own process, programmed by `ejlb serve
--dataplane snp4://...` over the SmartNIC P4 API.

1. Control-plane crash: `kill -9` of `ejlb serve` mid-stream and a restart from its database 3 s
   later; the node forwards on with its last tables: every event arrives, whole, exactly once.
2. Horizontal scale: two nodes own the same LB address behind an ECMP route with a layer-4 hash
   on the senders' side; one control plane programs both; two senders, three workers. Every event
   whole at exactly one worker, both nodes carry traffic. Then one node is killed and its next hop
   withdrawn (as a router's health check would): only events sent in that window may be lost.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from e2e_netns_tools import Topology, netns_available, stats_json, tagged_lines, wait_until  # noqa: E402

_why = netns_available()
pytestmark = [pytest.mark.netns, pytest.mark.slow,
              pytest.mark.skipif(_why is not None, reason=f"network namespaces unavailable: {_why}")]

TOKEN = "node-token-e2e"
EJLB = [sys.executable, "-c", "from ejlb.cli.main import main; main()"]


def _serve(topo, host, tmp_path, listen, url, sync, vip, name="serve"):
    return topo.popen(host, EJLB + ["serve", "--listen", listen, "--db", str(tmp_path / "cp.db"),
                                    "--dataplane", url, "--sync-ipv4", sync, "--sync-ipv6", "::1",
                                    "--instance", f"lb_id=0,ipv4={vip},ipv6=none,ports=19522-19522"],
                      stdout=open(tmp_path / f"{name}.out", "w"), stderr=open(tmp_path / f"{name}.log", "w"))


def _node(topo, host, tmp_path, listen, name):
    return topo.popen(host, EJLB + ["lb-node", "--listen", listen, "--token", TOKEN, "--ports", "19522"],
                      stdout=open(tmp_path / f"{name}.out", "w"), stderr=open(tmp_path / f"{name}.log", "w"))


def _started(path: Path, prefix: str) -> bool:
    return path.exists() and path.read_text().startswith(prefix)


def _deliveries(tmp_path, senders, workers):
    sent = {}
    for h in senders:
        for did, k, tick, size in tagged_lines(tmp_path / f"{h}.out", "SENT"):
            sent[(int(did), int(k))] = (int(tick) / 1e6, int(size))
    where = defaultdict(list)
    for w in workers:
        for _ts, did, k, size, ok in tagged_lines(tmp_path / f"{w}.out", "EV"):
            key = (int(did), int(k))
            assert ok == "1" and int(size) == sent[key][1], (w, key, "corrupt or short")
            where[key].append(w)
    dup = {k: v for k, v in where.items() if len(v) > 1}
    assert not dup, f"events delivered more than once: {list(dup.items())[:5]}"
    return sent, where


def test_the_node_forwards_through_a_control_plane_crash(tmp_path):
    hosts = {"lb": "10.250.0.10", "daq1": "10.250.0.11", "w1": "10.250.0.21", "w2": "10.250.0.22"}
    lb = hosts["lb"]
    n_events, stream_s, kill_at, down_s = 2000, 10.0, 3.0, 3.0
    url = f"snp4://{TOKEN}@127.0.0.1:50051"
    with Topology(f"ejnd{os.getpid()}", hosts) as topo:
        node = _node(topo, "lb", tmp_path, "127.0.0.1:50051", "node")
        wait_until(lambda: _started(tmp_path / "node.out", "127.0.0.1:50051"), 20, "lb-node")
        serve = _serve(topo, "lb", tmp_path, f"{lb}:18008", url, lb, lb)
        wait_until(lambda: _started(tmp_path / "serve.out", "ejfat://"), 20, "ejlb serve")
        admin = (tmp_path / "serve.out").read_text().split()[0]
        uri = topo.role("daq1", "reserve", admin, "crash", "ipv4", hosts["daq1"]).strip()
        workers = [topo.spawn_role(w, "worker", uri, hosts[w], w, str(tmp_path / f"{w}.out"),
                                   stderr=open(tmp_path / f"{w}.err", "w")) for w in ("w1", "w2")]
        wait_until(lambda: sum(1 for w in json.loads(topo.role("daq1", "status", uri)) if w["slots"]) == 2, 30,
                   "two workers with slots")
        sender = topo.spawn_role("daq1", "sender", uri, "1", str(n_events), "1", str(stream_s),
                                 str(tmp_path / "daq1.out"), stderr=open(tmp_path / "daq1.err", "w"))
        wait_until(lambda: tagged_lines(tmp_path / "daq1.out", "SENT"), 30, "first event")
        t0 = int(tagged_lines(tmp_path / "daq1.out", "SENT")[0][2]) / 1e6
        time.sleep(max(0.0, t0 + kill_at - time.time()))
        serve.send_signal(signal.SIGKILL)
        serve.wait(10)
        t_kill = time.time()
        time.sleep(down_s)
        serve = _serve(topo, "lb", tmp_path, f"{lb}:18008", url, lb, lb, name="serve2")
        wait_until(lambda: _started(tmp_path / "serve2.out", "ejfat://"), 20, "ejlb serve restarted")
        assert sender.wait(stream_s + 60) == 0
        time.sleep(2.0)  # in-flight events drain
        after = {w["name"]: w["slots"] for w in json.loads(topo.role("daq1", "status", uri))}
        for p in workers + [serve, node]:
            p.send_signal(signal.SIGTERM)
            assert p.wait(20) == 0

    sent, where = _deliveries(tmp_path, ["daq1"], ["w1", "w2"])
    assert len(sent) == n_events
    during = [k for k in sent if t_kill <= sent[k][0] <= t_kill + down_s]
    assert len(during) > 400, "the stream must run through the control plane's downtime"
    lost = sorted(k for k in sent if k not in where)
    assert not lost, f"{len(lost)} events lost ({sum(k in during for k in lost)} sent while the control plane was down)"
    for w in ("w1", "w2"):
        s = stats_json(tmp_path / f"{w}.out")
        assert s["lost"] == 0 and s["events_reassembly_err"] == 0, (w, s)
    assert after["w1"] > 0 and after["w2"] > 0, after  # the restarted control plane resumed them
    assert "loaded" in (tmp_path / "serve2.log").read_text()  # it reloaded the node (gaplessly)


HOSTS = {"cp": "10.250.0.10", "n1": "10.250.0.11", "n2": "10.250.0.12", "daq1": "10.250.0.31",
         "daq2": "10.250.0.32", "w1": "10.250.0.21", "w2": "10.250.0.22", "w3": "10.250.0.23"}
VIP = "10.250.1.1"


def _route(topo, host, *nodes):
    hops = []
    for n in nodes:
        hops += ["nexthop", "via", HOSTS[n], "dev", "eth0"]
    topo.run(host, ["ip", "route", "replace", f"{VIP}/32", *hops])


def test_two_nodes_behind_ecmp_serve_one_lb_address(tmp_path):
    n_events, stream_s, kill_at = 1200, 12.0, 8.0
    url = f"snp4://{TOKEN}@{HOSTS['n1']}:50051,{HOSTS['n2']}:50051"
    with Topology(f"ejnm{os.getpid()}", HOSTS) as topo:
        for n in ("n1", "n2"):
            topo.run(n, ["ip", "addr", "add", f"{VIP}/32", "dev", "lo"])
        for d in ("daq1", "daq2"):
            topo.run(d, ["sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1"])  # layer 4: ports count
            _route(topo, d, "n1", "n2")
        nodes = {n: _node(topo, n, tmp_path, f"{HOSTS[n]}:50051", n) for n in ("n1", "n2")}
        for n in nodes:
            wait_until(lambda n=n: _started(tmp_path / f"{n}.out", HOSTS[n]), 20, f"lb-node {n}")
        serve = _serve(topo, "cp", tmp_path, f"{HOSTS['cp']}:18008", url, HOSTS["cp"], VIP)
        wait_until(lambda: _started(tmp_path / "serve.out", "ejfat://"), 20, "ejlb serve")
        admin = (tmp_path / "serve.out").read_text().split()[0]
        uri = topo.role("daq1", "reserve", admin, "ecmp", "ipv4", HOSTS["daq1"], HOSTS["daq2"]).strip()
        workers = [topo.spawn_role(w, "worker", uri, HOSTS[w], w, str(tmp_path / f"{w}.out"),
                                   stderr=open(tmp_path / f"{w}.err", "w")) for w in ("w1", "w2", "w3")]
        wait_until(lambda: sum(1 for w in json.loads(topo.role("daq1", "status", uri)) if w["slots"]) == 3, 30,
                   "three workers with slots")
        senders = [topo.spawn_role(h, "sender", uri, str(did), str(n_events), str(did), str(stream_s),
                                   str(tmp_path / f"{h}.out"), stderr=open(tmp_path / f"{h}.err", "w"))
                   for did, h in ((1, "daq1"), (2, "daq2"))]
        wait_until(lambda: all(tagged_lines(tmp_path / f"{h}.out", "SENT") for h in ("daq1", "daq2")), 30,
                   "first events")
        t0 = min(int(tagged_lines(tmp_path / f"{h}.out", "SENT")[0][2]) / 1e6 for h in ("daq1", "daq2"))
        time.sleep(max(0.0, t0 + kill_at - time.time()))
        before_kill = json.loads(topo.role("cp", "nodestats", url))
        nodes["n1"].send_signal(signal.SIGKILL)
        nodes["n1"].wait(10)
        t_kill = time.time()
        for d in ("daq1", "daq2"):
            _route(topo, d, "n2")  # the router's health check withdraws the dead next hop
        t_withdrawn = time.time()
        for p in senders:
            assert p.wait(stream_s + 60) == 0
        time.sleep(2.0)
        for p in workers + [serve, nodes["n2"]]:
            p.send_signal(signal.SIGTERM)
            assert p.wait(20) == 0

    assert all(v > 100 for v in before_kill.values()) and len(before_kill) == 2, \
        f"both nodes must carry part of the stream: {before_kill}"
    sent, where = _deliveries(tmp_path, ["daq1", "daq2"], ["w1", "w2", "w3"])
    assert len(sent) == 2 * n_events
    assert {w for ws in where.values() for w in ws} == {"w1", "w2", "w3"}
    lost = sorted(k for k in sent if k not in where)
    # the killed node's in-flight datagrams, and what the senders hashed to it until the withdrawal
    window = (t_kill - 1.0, t_withdrawn + 1.0)
    outside = [(k, round(sent[k][0] - t_kill, 3)) for k in lost if not window[0] <= sent[k][0] <= window[1]]
    assert not outside, f"events lost outside the dead node's window: {outside[:10]}"
    before = [k for k in sent if sent[k][0] < t_kill - 1.0]
    assert len(before) > 1000 and all(k in where for k in before), "nothing may be lost while both nodes run"
