"""The XDP LB attached to a veth in a network namespace: senders -> LB -> workers with real frames.

    hosts namespace: h0 = 10.99.0.1 (allowed sender), .2 (a sender on no allow-list),
                          .11-.14 (four workers, four ports each)
         | veth
    LB namespace:    l0 = 10.99.0.100, the XDP program attached; XDP_TX sends back out l0

The kernels' own stacks do everything around the program (ARP through the program's pass path,
IP and UDP delivery to the workers, checksum verification, the neighbour table that gives two
workers registered without a MAC theirs), so a wrong length, checksum, address or MAC would lose
datagrams. Transmit checksum offload is off on h0: with it on, a local UDP socket hands
veth a *partial* checksum (the NIC would finish it) that XDP would see unfinished. Half of the
events go with UDP checksum 0 (SO_NO_CHECK), which must stay 0.
"""
from __future__ import annotations

import ipaddress
import json
import os
import random
import select
import socket
import subprocess
import sys
import time
from collections import defaultdict

import pytest

from ejlb.dataplane.tables import EpochRange, LBInstance, Member, Tables, diff, parse_mac
from ejlb.wire import CALENDAR_SLOTS, DEFAULT_DATA_PORT, REHeader, fragment_headers, max_payload

sys.path.insert(0, os.path.dirname(__file__))
from e2e_netns_tools import netns_available, wait_until as _wait  # noqa: E402
from netns_thread import InNetns, tx_checksum_offload  # noqa: E402

IP = ipaddress.ip_address
SO_NO_CHECK = 11
LB_IP, SENDER, STRANGER = "10.99.0.100", "10.99.0.1", "10.99.0.2"
WORKERS = [f"10.99.0.{11 + k}" for k in range(4)]
PORT_BITS = 2

pytestmark = [pytest.mark.netns]


def _ip(*args: str) -> str:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def _mac(ns: str, dev: str) -> bytes:
    return parse_mac(json.loads(_ip("-n", ns, "-j", "link", "show", dev))[0]["address"])


@pytest.fixture
def topology():
    why = netns_available()
    if why:
        pytest.skip(why)
    hosts, lbns = f"ejx{os.getpid()}-h", f"ejx{os.getpid()}-lb"
    try:
        _ip("netns", "add", hosts)
        _ip("netns", "add", lbns)
        _ip("link", "add", "h0", "netns", hosts, "type", "veth", "peer", "name", "l0", "netns", lbns)
        for addr in [SENDER, STRANGER, *WORKERS]:
            _ip("-n", hosts, "addr", "add", f"{addr}/24", "dev", "h0")
        _ip("-n", lbns, "addr", "add", f"{LB_IP}/24", "dev", "l0")
        for ns, dev in ((hosts, "h0"), (lbns, "l0"), (hosts, "lo"), (lbns, "lo")):
            _ip("-n", ns, "link", "set", dev, "up")
        # the program's FIB lookups (workers without a MAC) need forwarding on the LB's interface
        subprocess.run(["ip", "netns", "exec", lbns, "sysctl", "-qw", "net.ipv4.conf.l0.forwarding=1"], check=True)
        yield hosts, lbns
    finally:
        for ns in (hosts, lbns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _tables(lb_mac: bytes, worker_mac: bytes) -> Tables:
    return Tables(
        lbs={0: LBInstance(0, lb_mac, IP(LB_IP))},
        senders=frozenset({(0, IP(SENDER))}),
        epochs={(0, 0): EpochRange(0, None)},
        calendars={(0, 0): tuple(k % len(WORKERS) for k in range(CALENDAR_SLOTS))},
        # workers 0 and 1 registered without a MAC (as the control plane does): resolved by the kernel
        members={(0, k): Member(IP(ip), 21000 + 10 * k, PORT_BITS, mac=worker_mac if k >= 2 else bytes(6))
                 for k, ip in enumerate(WORKERS)},
    )


def _udp(ip: str, port: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((ip, port))
    return s


def test_resolving_macs_needs_forwarding(topology):
    from ejlb.dataplane.xdp import XDPError, XDPLB

    hosts, _ = topology
    try:
        XDPLB().close()
    except XDPError as e:
        pytest.skip(f"XDP data plane unavailable here: {e}")
    with InNetns(hosts):  # h0 does not forward
        with pytest.raises(XDPError, match=r"needs net.ipv4.conf.h0.forwarding=1"):
            XDPLB("h0")
        XDPLB("h0", resolve_macs=False).close()


def test_events_reach_one_worker_whole_and_strangers_are_dropped(topology):
    from ejlb.dataplane.xdp import XDPError, XDPLB

    hosts, lbns = topology
    try:
        with InNetns(lbns):
            lb = XDPLB("l0")
    except XDPError as e:
        pytest.skip(f"XDP data plane unavailable here: {e}")
    try:
        with InNetns(hosts):
            lb.attach_pass("h0")
            lb.apply(diff(Tables(), _tables(_mac(lbns, "l0"), _mac(hosts, "h0"))))
            workers = {(ip, 21000 + 10 * k + p): _udp(ip, 21000 + 10 * k + p)
                       for k, ip in enumerate(WORKERS) for p in range(1 << PORT_BITS)}
            good, bad = _udp(SENDER), _udp(STRANGER)
            tx_checksum_offload("h0", False)
            unchecked = _udp(SENDER)
        unchecked.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)

        time.sleep(0.5)  # the neighbour resolution that apply() started for workers 0 and 1
        rng = random.Random(13)
        frag = max_payload(1500)
        events = {}
        sent = 0
        for n in range(60):
            data = rng.randbytes(rng.choice([0, 1, 100, frag, frag + 1, 5000]))
            tick, entropy = 1_000_000 + 17 * n, rng.randrange(1 << 16)
            heads = fragment_headers(len(data), frag, tick=tick, entropy=entropy, data_id=3, event_number=n)
            rows = heads.view("u1").reshape(len(heads), -1)
            tx = good if n % 2 else unchecked
            for i, row in enumerate(rows):
                tx.sendto(row.tobytes() + data[i * frag : (i + 1) * frag], (LB_IP, DEFAULT_DATA_PORT))
                sent += 1
            events[n] = (data, tick, entropy)
        for n in range(10):
            bad.sendto(fragment_headers(8, frag, tick=5, entropy=0, data_id=3, event_number=1000 + n)
                       .view("u1").tobytes() + b"stranger", (LB_IP, DEFAULT_DATA_PORT))

        got = defaultdict(list)  # event number -> [(worker address, source, fragment offset, bytes)]
        received, deadline = 0, time.monotonic() + 10
        while received < sent and time.monotonic() < deadline:
            ready, _, _ = select.select(list(workers.values()), [], [], 0.2)
            for s in ready:
                payload, source = s.recvfrom(65536)
                re = REHeader.decode(payload)
                got[re.event_number].append((s.getsockname(), source, re.offset, payload[20:]))
                received += 1
        time.sleep(0.2)  # anything more (e.g. a stranger's datagram) would arrive now
        for s in workers.values():
            s.setblocking(False)
            try:
                payload, _ = s.recvfrom(65536)
                raise AssertionError(f"unexpected datagram {payload[:36].hex()}")
            except BlockingIOError:
                pass

        assert received == sent
        for n, (data, tick, entropy) in events.items():
            src_port = (good if n % 2 else unchecked).getsockname()[1]
            k = (tick % CALENDAR_SLOTS) % len(WORKERS)  # the calendar above: slot = tick mod 512
            where = {addr for addr, _, _, _ in got[n]}
            assert where == {(WORKERS[k], 21000 + 10 * k + (entropy & 3))}, (n, where)
            # the LB's address and the sender's UDP port: the FPGA's rewrite, not a socket relay's
            assert {source for _, source, _, _ in got[n]} == {(LB_IP, src_port)}
            assert b"".join(b for _, _, _, b in sorted(got[n], key=lambda x: x[2])) == data
        c = lb.counters()
        assert c.lb[0]["rx_packets"] == sent + 10 and c.lb[0]["drop_blocked_src"] == 10
        assert sum(m["tx_packets"] for m in c.member.values()) == sent
        assert c.glob["drop_not_lb"] + c.glob["drop_parse_fail"] > 0  # ARP etc., passed to the stack
    finally:
        lb.close()


CP_IP = "10.99.0.99"  # the control plane's own address on l0: sync and gRPC are not LB data



@pytest.mark.parametrize("mode", ["serve", "node"])
def test_ejlb_serve_with_the_xdp_backend(topology, tmp_path, mode):
    """`ejlb serve --backend xdp --interface l0` in the LB namespace (or, mode node, `ejlb lb-node
    --backend xdp` programmed by `ejlb serve --dataplane snp4://...` over the SmartNIC API), two
    registered Receivers and a GSO Sender (processes of tests/e2e_netns_tools.py) in the hosts
    namespace: the control plane programs the program, workers registered without a MAC are
    resolved, every event arrives whole and byte-exact at exactly one worker."""
    from ejlb.dataplane.xdp import XDPError, XDPLB

    hosts, lbns = topology
    try:
        keeper = XDPLB()
    except XDPError as e:
        pytest.skip(f"XDP data plane unavailable here: {e}")
    tools = os.path.join(os.path.dirname(__file__), "e2e_netns_tools.py")
    procs = []

    def spawn(ns, argv, out):
        procs.append(subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=open(out, "w"),
                                      stderr=open(str(out) + ".err", "w")))
        return procs[-1]

    def role(*args) -> str:
        r = subprocess.run(["ip", "netns", "exec", hosts, sys.executable, tools, *args], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout

    try:
        _ip("-n", lbns, "addr", "add", f"{CP_IP}/24", "dev", "l0")
        with InNetns(hosts):
            keeper.attach_pass("h0")
            tx_checksum_offload("h0", False)
        ejlb = [sys.executable, "-c", "from ejlb.cli.main import main; main()"]
        dataplane = ["--backend", "xdp", "--interface", "l0"]
        if mode == "node":
            node = spawn(lbns, ejlb + ["lb-node", "--listen", "127.0.0.1:50052", "--token", "xdp-node-token"]
                         + dataplane, tmp_path / "node.out")
            _wait(lambda: (tmp_path / "node.out").read_text().strip() or node.poll() is not None, 30, "lb-node")
            assert node.poll() is None, (tmp_path / "node.out.err").read_text()[-2000:]
            dataplane = ["--dataplane", "snp4://xdp-node-token@127.0.0.1:50052"]
        serve = spawn(lbns, ejlb + ["serve", *dataplane, "--listen", f"{CP_IP}:18008",
                             "--sync-ipv4", CP_IP, "--sync-ipv6", "::1",
                             "--instance", f"lb_id=0,ipv4={LB_IP},ipv6=none"], tmp_path / "serve.out")
        _wait(lambda: (tmp_path / "serve.out").read_text().startswith("ejfat://") or serve.poll() is not None,
              30, "ejlb serve")
        assert serve.poll() is None, (tmp_path / "serve.out.err").read_text()[-2000:]
        admin = (tmp_path / "serve.out").read_text().split()[0]
        uri = role("reserve", admin, "xdp", "ipv4", SENDER).strip()
        workers = [spawn(hosts, [sys.executable, tools, "worker", uri, ip, f"w{k}", str(tmp_path / f"w{k}.txt")],
                         tmp_path / f"w{k}.log") for k, ip in enumerate(WORKERS[:2])]

        def slots():
            return {w["name"]: w["slots"] for w in json.loads(role("status", uri))}

        _wait(lambda: len([s for s in slots().values() if s]) == 2, 30, "two workers with slots")
        # until the kernel has the workers' MACs their frames are member misses (by design)
        _wait(lambda: all(ip in _ip("-n", lbns, "neigh", "show", "nud", "reachable") for ip in WORKERS[:2]),
              10, "the workers' neighbour entries")
        sender = spawn(hosts, [sys.executable, tools, "sender", uri, "1", "150", "1", "3", str(tmp_path / "tx.txt"),
                               "1500"], tmp_path / "tx.log")
        assert sender.wait(60) == 0, (tmp_path / "tx.log.err").read_text()[-2000:]
        sent = {int(ln.split()[2]) for ln in (tmp_path / "tx.txt").read_text().splitlines() if ln.startswith("SENT ")}

        def events():
            got = []
            for k in range(2):
                path = tmp_path / f"w{k}.txt"
                got += [ln.split() for ln in path.read_text().splitlines() if ln.startswith("EV ")] if path.exists() else []
            return got

        try:
            _wait(lambda: len(events()) >= len(sent), 30, "every event at a worker")
        except AssertionError:
            logs = "".join((tmp_path / f"w{k}.txt").read_text()[-600:] for k in range(2))
            raise AssertionError(f"{len(events())} of {len(sent)} events arrived; neighbours:\n"
                                 f"{_ip('-n', lbns, 'neigh')}\nworker logs:\n{logs}") from None
        time.sleep(0.5)
        got = events()
        assert sorted(int(e[3]) for e in got) == sorted(sent)  # each exactly once
        assert all(e[5] == "1" for e in got)  # byte-exact
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        keeper.close()
