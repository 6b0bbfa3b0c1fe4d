"""Software LB (csrc/swlb.c + dataplane/software.py) against the reference model, on real sockets."""
from __future__ import annotations

import dataclasses
import ipaddress
import socket
import threading
import time
from collections import Counter, defaultdict

import pytest
from hypothesis import given, settings, strategies as st

from ejlb.dataplane import backends, corpus, model, software
from ejlb.dataplane.model import parse
from ejlb.dataplane.tables import Drop, EpochRange, LBInstance, Member, MemoryBackend, Tables, TableError, diff
from ejlb.native import lib
from ejlb.sockopt import SO_RCVBUFFORCE, UDP_SEGMENT
from ejlb.wire import DATA_PORT_MAX, DATA_PORT_MIN, DEFAULT_DATA_PORT, LBHeader, REHeader

IP = ipaddress.ip_address
IP_TTL, IP_RECVTTL, IPV6_HOPLIMIT = 2, 12, socket.IPV6_HOPLIMIT


def visible(frame: bytes, result: model.Result):
    """What an L4 forwarder on the LB's address receives for this frame -- (source IP, TTL, UDP
    payload) -- or None if it never sees it (parse failures and foreign destinations stay in the
    kernel; the FPGA's port window is not its business)."""
    if result.verdict in (Drop.PARSE_FAIL, Drop.NOT_LB):
        return None
    p = parse(frame)
    if not DATA_PORT_MIN <= p.dport <= DATA_PORT_MAX:
        return None
    return p.src, p.ttl, frame[p.payload : p.end]


def out_payload(result: model.Result) -> tuple[str, int, bytes]:
    p = parse(result.frame)
    return str(p.dst), p.dport, result.frame[p.payload : p.end]


def test_drop_codes_are_the_models():
    for d in Drop:
        assert getattr(lib, f"EJLB_DROP_{d.name}") == d.value


def test_native_decision_agrees_with_model_on_the_whole_corpus():
    t = corpus.tables()
    blob = software.compile_tables(t)
    seen = Counter()
    for frame, r in corpus.frames(10_000, seed=1):
        v = visible(frame, r)
        if v is None:
            continue
        src, ttl, payload = v
        d, verdict = software.decide(blob, r.lb_id, src, payload, ttl)
        assert d == r.verdict, (r, verdict)
        seen[d] += 1
        if d == Drop.FORWARD:
            assert (verdict.epoch, verdict.slot, verdict.member_id) == (r.epoch, r.slot, r.member_id)
            dst, dport, out = out_payload(r)
            assert verdict.dport == dport and payload[verdict.strip :] == out
    assert seen[Drop.FORWARD] > 2000 and len(seen) >= 8  # every reason an L4 forwarder can see, TTL too


# --- real sockets on loopback ----------------------------------------------------------------------
def _bind_udp(ip: str, port: int = 0, rcvbuf: int = 8 << 20) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)  # root
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((ip, port))
    if ":" in ip:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
    else:
        s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
    return s


def _drain(socks, want: int, timeout: float = 10.0, ttls: dict | None = None) -> dict:
    """Receive until `want` datagrams arrived (or timeout); {(ip, port): [payload, ...]}. With
    `ttls`, also {(ip, port): [TTL, ...]} (sockets from _bind_udp report it)."""
    got = defaultdict(list)
    n, deadline = 0, time.monotonic() + timeout
    for s in socks:
        s.setblocking(False)
    while n < want and time.monotonic() < deadline:
        idle = True
        for s in socks:
            try:
                while True:
                    data, anc, _, _ = s.recvmsg(65536, 64)
                    got[s.getsockname()[:2]].append(data)
                    if ttls is not None:
                        ttls.setdefault(s.getsockname()[:2], []).extend(
                            int.from_bytes(d[:4], "little") for lvl, typ, d in anc if typ in (IP_TTL, IPV6_HOPLIMIT))
                    n += 1
                    idle = False
            except BlockingIOError:
                pass
        if idle:
            time.sleep(0.01)
    return got


def _wait_rx(lb, n: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(c["rx_packets"] for c in lb.counters().lb.values()) >= n:
            return
        time.sleep(0.01)


def loopback_tables() -> Tables:
    """Corpus tables with member ports narrowed so that a test can bind every one of them."""
    t = corpus.tables()
    members = {k: dataclasses.replace(m, base_port=46000 + 8 * (8 * k[0] + k[1]), port_bits=min(m.port_bits, 2))
               for k, m in t.members.items()}
    return dataclasses.replace(t, members=members)


def test_corpus_through_sockets_matches_model():
    """IPv4 corpus payloads sent from their real source addresses, with their TTL, to the LB's
    sockets: every forwarded datagram arrives at the model's member/port with the model's payload
    and TTL, and the per-LB/per-member counters equal the model's."""
    t = loopback_tables()
    frames = list(corpus.frames(3000, seed=7))
    expected, expected_ttl = defaultdict(list), defaultdict(list)
    sends = []
    want_lb, want_member = defaultdict(Counter), Counter()
    for frame, _ in frames:
        r = model.process(t, frame)
        v = visible(frame, r)
        if v is None or v[0].version != 4 or v[1] == 0:  # a socket cannot send TTL 0
            continue
        sends.append((str(v[0]), str(parse(frame).dst), v[1], v[2]))
        want_lb[r.lb_id][r.verdict] += 1
        if r.forwarded:
            dst, dport, out = out_payload(r)
            expected[(dst, dport)].append(out)
            expected_ttl[(dst, dport)].append(parse(r.frame).ttl)
            want_member[(r.lb_id, r.member_id)] += 1
    receivers = [_bind_udp(str(m.ip), m.base_port + k) for m in t.members.values() if m.ip.version == 4 and not m.drop
                 for k in range(1 << m.port_bits)]
    senders = {ip: _bind_udp(ip) for ip in {s for s, _, _, _ in sends}}
    with software.SoftwareLB() as lb:
        lb.apply(diff(Tables(), t))
        for i, (src, dst, ttl, payload) in enumerate(sends):
            senders[src].sendmsg([payload], [(socket.IPPROTO_IP, IP_TTL, ttl.to_bytes(4, "little"))],
                                 0, (dst, DEFAULT_DATA_PORT))
            if i % 200 == 199:
                _wait_rx(lb, i + 1)
        _wait_rx(lb, len(sends))
        ttls: dict = {}
        got = _drain(receivers, sum(len(v) for v in expected.values()), ttls=ttls)
        counters = lb.counters()
        stats = lb.stats()
    for s in receivers + list(senders.values()):
        s.close()
    assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in expected.items()}
    assert {k: sorted(v) for k, v in ttls.items()} == {k: sorted(v) for k, v in expected_ttl.items()}
    assert sum(v[Drop.TTL] for v in want_lb.values()) > 10  # TTL 1 arrived and was dropped
    for lb_id, verdicts in want_lb.items():
        c = counters.lb[lb_id]
        assert c["rx_packets"] == sum(verdicts.values())
        for d, n in verdicts.items():
            if d != Drop.FORWARD:
                assert c[d.counter] == n, d
    for key, n in want_member.items():
        assert counters.member[key]["tx_packets"] == n
    assert stats["send_errors"] == 0


def _simple_tables(lb_ip="127.0.13.1", sender="127.0.13.2", member_ip="127.0.13.3", base=47000, bits=0,
                   member_id=0, keep=False, lb_ipv6=None) -> Tables:
    return Tables(
        lbs={0: LBInstance(0, b"\x02" * 6, IP(lb_ip), IP(lb_ipv6) if lb_ipv6 else None)},
        senders=frozenset({(0, IP(sender))}),
        epochs={(0, 0): EpochRange(0, None)},
        calendars={(0, 0): (member_id,) * 512},
        members={(0, member_id): Member(IP(member_ip), base, bits, keep_lb_header=keep)},
    )


def _event(tick: int, n: int, frag: int = 1000, entropy: int = 0) -> list[bytes]:
    lb = LBHeader(tick, entropy).encode()
    return [lb + REHeader(1, off, n, tick).encode() + bytes([tick & 0xFF]) * min(frag, n - off)
            for off in range(0, n, frag)]


def test_gso_in_gso_out():
    """A GSO super-datagram from the sender arrives coalesced (GRO) and leaves as one GSO send."""
    t = _simple_tables()
    rx = _bind_udp("127.0.13.3", 47000)
    tx = _bind_udp("127.0.13.2")
    with software.SoftwareLB() as lb:
        lb.apply(diff(Tables(), t))
        frags = _event(77, 20_000)  # 20 fragments of 1036 bytes
        tx.setsockopt(socket.SOL_UDP, UDP_SEGMENT, len(frags[0]))
        tx.sendto(b"".join(frags[:-1]), ("127.0.13.1", DEFAULT_DATA_PORT))
        got = _drain([rx], len(frags) - 1)
        stats = lb.stats()
    rx.close()
    tx.close()
    assert got[("127.0.13.3", 47000)] == [f[16:] for f in frags[:-1]]
    assert stats["gro_segments"] >= len(frags) - 1
    assert stats["send_msgs"] < len(frags) - 1  # coalesced on the way out


def test_ipv6_keep_header_and_port_entropy():
    t = Tables(
        lbs={1: LBInstance(1, b"\x02" * 6, None, IP("::1"))},
        senders=frozenset({(1, IP("::1"))}),
        epochs={(1, 2): EpochRange(0, None)},
        calendars={(1, 2): (5,) * 512},
        members={(1, 5): Member(IP("::1"), 47100, 2, keep_lb_header=True)},
    )
    rxs = [_bind_udp("::1", 47100 + k) for k in range(4)]
    tx = _bind_udp("::1")
    with software.SoftwareLB(ports={1: (47200, 47201)}) as lb:
        lb.apply(diff(Tables(), t))
        assert [a for a in lb.addresses] == [(1, "::1", 47200), (1, "::1", 47201)]
        sent = []
        for entropy in range(8):
            d = _event(1000 + entropy, 10, entropy=entropy)[0]
            tx.sendto(d, ("::1", 47200 + entropy % 2))
            sent.append((47100 + (entropy & 3), d))
        hops: dict = {}
        got = _drain(rxs, len(sent), ttls=hops)
        c = lb.counters()
    for s in rxs + [tx]:
        s.close()
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        default_hops = probe.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS)
    assert {h for v in hops.values() for h in v} == {default_hops - 1}  # hop limit decremented
    want = defaultdict(list)
    for port, d in sent:
        want[("::1", port)].append(d)
    assert dict(got) == dict(want)
    assert c.member[(1, 5)]["tx_packets"] == 8 and c.lb[1]["rx_v2"] == 8


def test_table_swaps_are_atomic_under_traffic():
    """Flip between two table sets while a sender streams: A sends everything to member 0, B to
    member 1, and neither has the other's member, so a datagram that saw a calendar of one and
    the members of the other would count as a member miss."""
    a = _simple_tables(member_id=0, base=47300)
    b = _simple_tables(member_id=1, base=47301)
    rx = [_bind_udp("127.0.13.3", 47300), _bind_udp("127.0.13.3", 47301)]
    tx = _bind_udp("127.0.13.2")
    stop = threading.Event()
    sent = [0]
    datagram = _event(5, 200)[0]

    def stream():
        while not stop.is_set():
            for _ in range(64):
                tx.sendto(datagram, ("127.0.13.1", DEFAULT_DATA_PORT))
            sent[0] += 64
            time.sleep(0.0005)

    with software.SoftwareLB(threads=2) as lb:
        lb.apply(diff(Tables(), a))
        th = threading.Thread(target=stream)
        th.start()
        cur = a
        for i in range(200):
            nxt = b if cur is a else a
            lb.apply(diff(cur, nxt))
            cur = nxt
        stop.set()
        th.join()
        _wait_rx(lb, sent[0])
        c = lb.counters()
        got = _drain(rx, sent[0], timeout=5)
    for s in rx + [tx]:
        s.close()
    assert c.lb[0]["rx_packets"] == sent[0]
    assert c.lb[0]["drop_member_miss"] == 0 and c.lb[0]["drop_calendar_miss"] == 0
    tx_total = sum(m["tx_packets"] for m in c.member.values())
    assert tx_total == sent[0]
    assert sum(len(v) for v in got.values()) == sent[0]
    assert len(got) == 2  # both table sets carried traffic


def test_allow_list_and_counters_per_reason():
    t = _simple_tables(base=47400)
    rx = _bind_udp("127.0.13.3", 47400)
    ok, stranger = _bind_udp("127.0.13.2"), _bind_udp("127.0.13.9")
    with software.SoftwareLB() as lb:
        lb.apply(diff(Tables(), t))
        dst = ("127.0.13.1", DEFAULT_DATA_PORT)
        stranger.sendto(_event(1, 10)[0], dst)
        ok.sendto(b"LB\x63" + bytes(40), dst)  # version 99
        ok.sendto(b"hi", dst)
        ok.sendto(_event(2, 10)[0], dst)
        got = _drain([rx], 1)
        _wait_rx(lb, 4)
        c = lb.counters().lb[0]
    for s in (rx, ok, stranger):
        s.close()
    assert len(got[("127.0.13.3", 47400)]) == 1
    assert (c["drop_blocked_src"], c["drop_bad_version"], c["drop_no_lb_hdr"], c["rx_packets"]) == (1, 1, 1, 4)


def test_removing_an_lb_closes_its_sockets():
    t = _simple_tables(base=47500)
    with software.SoftwareLB() as lb:
        lb.apply(diff(Tables(), t))
        assert lb.addresses == [(0, "127.0.13.1", DEFAULT_DATA_PORT)]
        lb.apply(diff(t, Tables()))
        assert lb.addresses == []
        s = _bind_udp("127.0.13.1", DEFAULT_DATA_PORT)  # the port is free again
        s.close()


def test_bad_configuration_names_the_value():
    with pytest.raises(ValueError, match="threads=0"):
        software.SoftwareLB(threads=0)
    with pytest.raises(ValueError, match=r"ports\[0\]=1-40000"):
        software.SoftwareLB(ports={0: (1, 40000)})
    many = Tables(lbs={0: LBInstance(0, b"\x02" * 6, IP("127.0.13.1"))},
                  senders=frozenset((0, IP(f"10.0.{i // 256}.{i % 256}")) for i in range(600)))
    with software.SoftwareLB() as lb, pytest.raises(TableError, match="senders of lb 0: 600"):
        lb.apply(diff(Tables(), many))
    assert lb.installed == Tables()


def test_listen_conflict_is_reported_with_the_address():
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.13.1", 47601))  # no SO_REUSEPORT: the LB cannot share it
    try:
        with software.SoftwareLB(ports={0: (47600, 47601)}) as lb:
            with pytest.raises(OSError, match=r"127\.0\.13\.1\]:47601"):
                lb.apply(diff(Tables(), _simple_tables()))
            assert lb.addresses == [] and lb.installed == Tables()  # port 47600 was opened, then closed again
            free = _bind_udp("127.0.13.1", 47600)
            free.close()
    finally:
        blocker.close()


def test_backend_registry():
    assert isinstance(backends.create_backend("memory"), MemoryBackend)
    ref = backends.create_backend("reference")
    t = corpus.tables()
    ref.apply(diff(Tables(), t))
    frames = [f for f, _ in corpus.frames(300, seed=3)]
    results = ref.process_many(frames)
    assert [r.verdict for r in results] == [model.process(t, f).verdict for f in frames]
    assert ref.counters().glob["drop_parse_fail"] == sum(r.verdict == Drop.PARSE_FAIL for r in results)
    sw = backends.create_backend("software", None, threads=2)
    try:
        assert isinstance(sw, software.SoftwareLB) and sw.threads == 2
    finally:
        sw.close()
    with pytest.raises(backends.BackendError, match="backend='nope'"):
        backends.create_backend("nope")


@settings(max_examples=300, deadline=None)
@given(version=st.sampled_from([2, 3, 1, 99]), tick=st.integers(0, (1 << 64) - 1), sel=st.integers(0, 0xFFFF),
       entropy=st.integers(0, 0xFFFF), tail=st.binary(max_size=40), lb_id=st.sampled_from([0, 1, 2]),
       src=st.sampled_from([ip for ips in corpus.SENDERS.values() for ip in ips] + corpus.STRANGERS),
       ttl=st.sampled_from([0, 1, 2, 64, 255]))
def test_native_decision_agrees_with_model_on_random_headers(version, tick, sel, entropy, tail, lb_id, src, ttl):
    t = _CORPUS_TABLES
    dst = (corpus.LB_IPV4 if src.version == 4 else corpus.LB_IPV6).get(lb_id)
    if dst is None:
        return
    payload = b"LB" + bytes([version, 1]) + sel.to_bytes(2, "big") + entropy.to_bytes(2, "big") + tick.to_bytes(8, "big") + tail
    r = model.process(t, corpus.build_frame(src, dst, payload, ttl=ttl))
    d, v = software.decide(_CORPUS_BLOB, lb_id, src, payload, ttl)
    assert d == r.verdict
    if r.forwarded:
        assert (v.member_id, v.dport) == (r.member_id, parse(r.frame).dport)


_CORPUS_TABLES = corpus.tables()
_CORPUS_BLOB = software.compile_tables(_CORPUS_TABLES)


def test_garbage_never_stops_the_loop_and_threads_share_the_work():
    """Random datagrams from many source ports (so SO_REUSEPORT spreads them over the threads):
    every one is counted as some drop, and valid traffic is still forwarded afterwards."""
    import random

    rng = random.Random(5)
    t = _simple_tables(base=47700)
    rx = _bind_udp("127.0.13.3", 47700)
    txs = [_bind_udp("127.0.13.2") for _ in range(16)]
    with software.SoftwareLB(threads=3) as lb:
        lb.apply(diff(Tables(), t))
        dst = ("127.0.13.1", DEFAULT_DATA_PORT)
        for i in range(3000):
            junk = rng.randbytes(rng.randrange(0, 120))
            if rng.random() < 0.5:
                junk = b"LB" + junk  # past the magic check, then whatever comes
            txs[i % 16].sendto(junk, dst)
        _wait_rx(lb, 3000)
        junk_counters = lb.counters().lb[0]
        for i in range(160):
            txs[i % 16].sendto(_event(9, 50)[0], dst)
        got = _drain([rx], 160 + junk_counters["rx_packets"] - sum(v for k, v in junk_counters.items() if k.startswith("drop_")))
        c = lb.counters().lb[0]
        per_thread = lb.thread_stats()
    for s in [rx] + txs:
        s.close()
    assert junk_counters["rx_packets"] == 3000
    forwarded_junk = 3000 - sum(v for k, v in junk_counters.items() if k.startswith("drop_"))
    assert len(got[("127.0.13.3", 47700)]) == 160 + forwarded_junk
    assert c["rx_packets"] == 3160
    # 16 source ports hash onto the 3 SO_REUSEPORT sockets: more than one thread forwarded
    assert sum(1 for s in per_thread if s["send_msgs"] > 0) >= 2, per_thread


_GSO_FALLBACK_SCRIPT = r"""
import ipaddress, json, socket, sys, time
from ejlb.dataplane import software
from ejlb.dataplane.tables import EpochRange, LBInstance, Member, Tables, diff
from ejlb.sockopt import SOL_UDP, UDP_SEGMENT
from ejlb.wire import LBHeader, REHeader
ip = ipaddress.ip_address
lb_ip = sys.argv[2]  # a local address: packets to it travel over lo (MTU 64 KiB) inside the namespace
t = Tables(lbs={0: LBInstance(0, b"\x02" * 6, ip(lb_ip))}, senders=frozenset({(0, ip(lb_ip))}),
           epochs={(0, 0): EpochRange(0, None)}, calendars={(0, 0): (0,) * 512},
           members={(0, 0): Member(ip(sys.argv[1]), 47800)})
with software.SoftwareLB(ports={0: (47801, 47801)}) as lb:
    lb.apply(diff(Tables(), t))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind((lb_ip, 0))
    seg = LBHeader(1, 0).encode() + REHeader(1, 0, 8000, 1).encode() + bytes(8000)
    tx.setsockopt(SOL_UDP, UDP_SEGMENT, len(seg))  # 4 jumbo datagrams in one send
    for burst in (1, 2):
        tx.sendto(seg * 4, (lb_ip, 47801))
        deadline = time.monotonic() + 5
        while lb.counters().member.get((0, 0), {}).get("tx_packets", 0) < 4 * burst and time.monotonic() < deadline:
            time.sleep(0.02)
    time.sleep(0.3)
    print(json.dumps(lb.stats()))
"""


def test_gso_refused_by_a_small_egress_mtu_falls_back_to_plain_sends(tmp_path):
    """Jumbo datagrams in over loopback, out over a 1500-byte link: the kernel refuses the GSO send
    (segment > MTU); the LB re-sends them one by one (IP fragments), nothing is lost, and it does not
    try GSO to that member again while the tables stay the same."""
    import json
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from e2e_netns_tools import Topology, netns_available

    why = netns_available()
    if why:
        pytest.skip(f"network namespaces unavailable: {why}")
    with Topology(f"ejdp{__import__('os').getpid()}", {"lb": "10.250.1.10", "w": "10.250.1.20"}, mtu=1500) as topo:
        sink = topo.spawn_role("w", "sink", "10.250.1.20", "47800", str(tmp_path / "sink.out"))
        deadline = time.monotonic() + 10
        while not (tmp_path / "sink.out").exists() or not (tmp_path / "sink.out").read_text():
            assert time.monotonic() < deadline, "sink did not start"
            time.sleep(0.05)
        stats = json.loads(topo.run("lb", [sys.executable, "-c", _GSO_FALLBACK_SCRIPT, "10.250.1.20", "10.250.1.10"]))
        sink.send_signal(__import__("signal").SIGTERM)
        assert sink.wait(10) == 0
    n = int((tmp_path / "sink.out").read_text().split("SINK ")[1].split()[0])
    assert stats["gso_fallbacks"] == 1 and stats["send_errors"] == 0, stats
    assert n == 8
