"""Reference model (ejlb.dataplane.model) and conformance corpus, cross-checked with scapy."""
from __future__ import annotations

import ipaddress
import random
from collections import Counter

import pytest
from hypothesis import given, strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether

from ejlb.dataplane import corpus
from ejlb.dataplane.model import checksum_update, internet_checksum, parse, process, run, ParseError
from ejlb.dataplane.tables import Counters, Drop
from ejlb.wire import LB_HEADER_LEN, LBHeader, REHeader, port_for, slot_for

T = corpus.tables()
N = 10_000


@pytest.fixture(scope="module")
def judged():
    return list(corpus.frames(N, seed=1))


def _ip(pkt):
    return pkt[IP] if IP in pkt else pkt[IPv6]


def _udp_ok(frame: bytes) -> bool | None:
    """scapy's view of the UDP checksum: None = zero (absent), else whether it verifies."""
    pkt = Ether(frame)
    got = pkt[UDP].chksum
    if got == 0:
        return None
    clean = Ether(frame)
    del clean[UDP].chksum
    return Ether(bytes(clean))[UDP].chksum == got


def _correct_udp(frame: bytes) -> int:
    clean = Ether(frame)
    del clean[UDP].chksum
    return Ether(bytes(clean))[UDP].chksum


def test_corpus_size_mix_and_determinism(judged):
    assert len(judged) >= 10_000
    verdicts = Counter(r.verdict for _, r in judged)
    assert set(verdicts) == set(Drop), f"every verdict occurs: {verdicts}"
    assert verdicts[Drop.FORWARD] > N // 5
    again = list(corpus.frames(200, seed=1))
    assert [f for f, _ in again] == [f for f, _ in judged[:200]]
    other = [f for f, _ in corpus.frames(200, seed=2)]
    assert other != [f for f, _ in again]


def test_forwarded_frames_match_scapy_and_the_spec(judged):
    forwarded = [(f, r) for f, r in judged if r.forwarded]
    for frame, r in forwarded:
        out = r.frame
        assert len(out) >= 60
        pin, pout = Ether(frame), Ether(out)
        ipin, ipout = _ip(pin), _ip(pout)
        member = T.members[(r.lb_id, r.member_id)]
        lb = T.lbs[r.lb_id]
        assert pout.dst == ":".join(f"{b:02x}" for b in member.mac)
        assert pout.src == ":".join(f"{b:02x}" for b in lb.mac)
        assert (Dot1Q in pin) == (Dot1Q in pout) and (Dot1Q not in pin or pin[Dot1Q].vlan == pout[Dot1Q].vlan)
        assert ipaddress.ip_address(ipout.src) in (lb.ipv4, lb.ipv6)
        assert ipaddress.ip_address(ipout.dst) == member.ip
        ttl_in, ttl_out = (ipin.ttl, ipout.ttl) if IP in pin else (ipin.hlim, ipout.hlim)
        assert ttl_out == ttl_in - 1
        lbh = LBHeader.decode(bytes(pin[UDP].payload)[:16])
        assert r.epoch == T.epoch_for(r.lb_id, lbh.tick)
        assert r.slot == (lbh.slot_key ^ lb.slot_xor) & ((1 << lb.slot_bits) - 1)
        assert T.calendars[(r.lb_id, r.epoch)][r.slot] == r.member_id
        assert pout[UDP].dport == port_for(member.base_port, lbh.entropy, member.port_bits)
        assert pout[UDP].sport == pin[UDP].sport
        payload_in = bytes(pin[UDP].payload)[: pin[UDP].len - 8]  # without Ethernet padding
        expect = payload_in if member.keep_lb_header else payload_in[LB_HEADER_LEN:]
        assert bytes(pout[UDP].payload)[: len(expect)] == expect
        end = (18 if Dot1Q in pout else 14) + (ipout.len if IP in pout else 40 + ipout.plen)
        assert set(out[end:]) <= {0}  # only re-padding after the packet
        assert pout[UDP].len == 8 + len(expect)
        if IP in pout:
            assert ipout.len == ipout.ihl * 4 + pout[UDP].len
            assert ipout.options == ipin.options
            clean = pout.copy()
            del clean[IP].chksum
            assert Ether(bytes(clean))[IP].chksum == ipout.chksum
        else:
            assert ipout.plen == pout[UDP].len
        # UDP checksum: 0 stays 0; a correct one stays correct; a wrong one keeps its error
        cin, cout = pin[UDP].chksum, pout[UDP].chksum
        if cin == 0:
            assert cout == 0
        else:
            assert cout != 0
            err_in = (cin - _correct_udp(frame)) % 0xFFFF
            err_out = (cout - _correct_udp(out)) % 0xFFFF
            assert err_in == err_out


def test_parse_agrees_with_scapy_on_what_is_udp(judged):
    for frame, r in judged[:3000]:
        if r.verdict == Drop.PARSE_FAIL:
            continue
        pkt = Ether(frame)
        assert UDP in pkt, r
        p = parse(frame)
        assert p.dport == pkt[UDP].dport
        assert str(p.src) == _ip(pkt).src and str(p.dst) == _ip(pkt).dst


def test_counters_add_up(judged):
    results, counters = run(T, [f for f, _ in judged])
    assert [r.verdict for r in results] == [r.verdict for _, r in judged]
    verdicts = Counter(r.verdict for r in results)
    assert counters.glob["drop_parse_fail"] == verdicts[Drop.PARSE_FAIL]
    assert counters.glob["drop_not_lb"] == verdicts[Drop.NOT_LB]
    rx = sum(c["rx_packets"] for c in counters.lb.values())
    assert rx == N - verdicts[Drop.PARSE_FAIL] - verdicts[Drop.NOT_LB]
    for d in Drop:
        if d > Drop.NOT_LB:
            assert sum(c[d.counter] for c in counters.lb.values()) == verdicts[d]
    assert sum(m["tx_packets"] for m in counters.member.values()) == verdicts[Drop.FORWARD]
    assert sum(m["tx_bytes"] for m in counters.member.values()) == sum(len(r.frame) for r in results if r.forwarded)
    for lb_id, c in counters.lb.items():
        assert c["rx_v2"] + c["rx_v3"] == c["rx_packets"] - c["drop_no_lb_hdr"] - c["drop_bad_version"]
        assert c["rx_bytes"] == sum(len(f) for f, r in judged if r.lb_id == lb_id)


# --- the deployed LB's own test list (docs/dataplane.md) ----------------------------------------
S0, S1, LB0, LB1 = corpus.SENDERS[0][0], corpus.SENDERS[1][0], corpus.LB_IPV4[0], corpus.LB_IPV4[1]
S0_6, LB1_6 = corpus.SENDERS[0][2], corpus.LB_IPV6[1]


def _lb0_frame(tick=1500, entropy=7, version=2, slot_select=0, n=100, **kw):
    data = LBHeader(tick, entropy, version, slot_select).encode() + REHeader(1, 0, n, 5).encode() + bytes(n)
    return build(kw.pop("src", S0), kw.pop("dst", LB0), data, **kw)


def build(src, dst, data, **kw):
    return corpus.build_frame(src, dst, data, **kw)


def _tick_to(lb: int, epoch: int, member: int, start: int) -> int:
    """A v2 tick from `start` on that LB `lb`'s epoch `epoch` maps to `member`."""
    inst = T.lbs[lb]
    for tick in range(start, start + 4096):
        slot = slot_for(tick & 0xFFFF, inst.slot_bits, inst.slot_xor)
        if T.epoch_for(lb, tick) == epoch and slot < 512 and T.calendars[(lb, epoch)][slot] == member:
            return tick
    raise AssertionError("no such tick")


def test_tcp_dropped_as_parse_fail():
    frame = bytearray(_lb0_frame())
    frame[14 + 9] = 6
    r = process(T, corpus.ip_checksum_fix(bytes(frame), 14))
    assert r.verdict == Drop.PARSE_FAIL and "protocol=6" in r.reason


@pytest.mark.parametrize("dport,verdict", [(16383, Drop.NO_LB_HDR), (32768, Drop.NO_LB_HDR), (16384, Drop.FORWARD),
                                           (19522, Drop.FORWARD), (32767, Drop.FORWARD)])
def test_port_window_v2_ipv4(dport, verdict):
    r = process(T, _lb0_frame(tick=_tick_to(0, 0, 0, 1000), dport=dport))
    assert r.verdict == verdict, r.reason


def test_udp_without_lb_header_and_bad_version():
    assert process(T, build(S0, LB0, b"hello")).verdict == Drop.NO_LB_HDR
    assert process(T, build(S0, LB0, b"XB" + bytes(40))).verdict == Drop.NO_LB_HDR
    bad = bytearray(_lb0_frame())
    bad[42 + 2] = 99
    r = process(T, corpus.build_frame(S0, LB0, bytes(bad[42:])))
    assert r.verdict == Drop.BAD_VERSION and "99" in r.reason and r.lb_id == 0


def test_sender_of_another_lb_is_blocked():
    r = process(T, _lb0_frame(src=S1))
    assert r.verdict == Drop.BLOCKED_SRC and str(S1) in r.reason


@pytest.mark.parametrize("ttl,verdict", [(0, Drop.TTL), (1, Drop.TTL), (2, Drop.FORWARD)])
def test_ttl_and_hop_limit(ttl, verdict):
    t4 = _tick_to(0, 0, 0, 1000)
    assert process(T, _lb0_frame(tick=t4, ttl=ttl)).verdict == verdict
    t6 = _tick_to(1, 0, 0, 0)
    f6 = build(corpus.SENDERS[1][1], LB1_6, LBHeader(t6, 1).encode() + bytes(30), ttl=ttl)
    assert process(T, f6).verdict == verdict


def test_epoch_calendar_member_misses():
    assert process(T, _lb0_frame(tick=50)).epoch == 3  # the catch-all
    r = process(T, build(corpus.SENDERS[1][0], LB1, LBHeader(1 << 42, 1).encode() + bytes(20)))
    assert r.verdict == Drop.EPOCH_MISS
    unassigned = T.calendars[(0, 0)].index(0xFFFF)
    assert process(T, _lb0_frame(tick=1024 + unassigned)).verdict == Drop.CALENDAR_MISS
    for member in (4, corpus.MISSING_MEMBER, 5):  # explicit drop, no entry, IPv6 member for IPv4
        r = process(T, _lb0_frame(tick=_tick_to(0, 0, member, 1000)))
        assert r.verdict == Drop.MEMBER_MISS and r.member_id == member


def test_v2_ipv6_and_v3_ipv6_random_ports():
    rng = random.Random(3)
    src = corpus.SENDERS[1][1]
    for _ in range(200):
        version = rng.choice([2, 3])
        sel = rng.randrange(1 << 16)
        tick = rng.randrange(1 << 41)
        entropy = rng.randrange(1 << 16)
        data = LBHeader(tick, entropy, version, sel if version == 3 else 0).encode() + rng.randbytes(rng.randrange(40))
        r = process(T, build(src, LB1_6, data, dport=rng.randrange(16384, 32768)))
        key = sel if version == 3 else tick & 0xFFFF
        assert r.slot == (key ^ 0x2A5) & 1023
        if r.forwarded:
            m = T.members[(1, r.member_id)]
            assert Ether(r.frame)[UDP].dport == m.base_port + (entropy & ((1 << m.port_bits) - 1))


def test_keep_header_member_keeps_lengths():
    frame = _lb0_frame(tick=_tick_to(0, 0, 3, 1000), n=33)
    r = process(T, frame)
    assert r.forwarded and r.member_id == 3
    assert Ether(r.frame)[UDP].len == Ether(frame)[UDP].len
    assert bytes(Ether(r.frame)[UDP].payload)[:2] == b"LB"


@pytest.mark.parametrize("n", [0, 1])
@pytest.mark.parametrize("checksum", ["good", "zero"])
def test_zero_and_one_byte_fragments(n, checksum):
    frame = _lb0_frame(tick=_tick_to(0, 0, 0, 1000), n=n, checksum=checksum)
    r = process(T, frame)
    assert r.forwarded and len(r.frame) == 14 + 20 + 8 + 20 + n
    pkt = Ether(r.frame)
    assert pkt[UDP].len == 8 + 20 + n and bytes(pkt[UDP].payload)[:20] == REHeader(1, 0, n, 5).encode()
    assert _udp_ok(r.frame) is (True if checksum == "good" else None)


@pytest.mark.parametrize("tail", [0, 1, 17])
def test_stripping_repads_to_60(tail):
    """LB header + a few bytes: 42 + tail bytes after stripping, re-padded with zeros to 60."""
    data = LBHeader(_tick_to(0, 0, 0, 1000), 3).encode() + bytes(range(1, tail + 1))
    r = process(T, build(S0, LB0, data))
    assert r.forwarded and len(r.frame) == 60
    assert r.frame[42 : 42 + tail] == bytes(range(1, tail + 1)) and set(r.frame[42 + tail :]) <= {0}
    assert _udp_ok(r.frame)


def test_checksum_sweep_v2_ipv4_and_v3_ipv6():
    rng = random.Random(9)
    for i in range(400):
        v6 = i % 2 == 1
        src, dst = (corpus.SENDERS[1][1], LB1_6) if v6 else (S0, LB0)
        tick = _tick_to(1, 0, rng.choice([0, 1]), rng.randrange(1 << 20)) if v6 else _tick_to(0, 0, rng.choice([0, 1, 2]), 1000)
        data = LBHeader(tick, rng.randrange(1 << 16), 3 if v6 else 2, tick & 0xFFFF if v6 else 0).encode() + rng.randbytes(rng.randrange(1, 300))
        r = process(T, build(src, dst, data, sport=rng.randrange(65536)))
        assert r.forwarded, r.reason
        assert _udp_ok(r.frame), i


def test_ipv4_options_and_vlan_survive():
    frame = _lb0_frame(tick=_tick_to(0, 0, 1, 1000), ip_options=bytes([1, 1, 1, 0]), vlan=42)
    r = process(T, frame)
    assert r.forwarded
    pkt = Ether(r.frame)
    assert pkt[Dot1Q].vlan == 42 and pkt[IP].ihl == 6


def test_malformed_reasons_name_the_field():
    assert "frame.length=3" in process(T, b"abc").reason
    f = bytearray(_lb0_frame())
    f[14 + 10] ^= 0xFF
    assert "ipv4.checksum" in process(T, bytes(f)).reason
    with pytest.raises(ParseError, match="ethertype=0x0806"):
        parse(bytes(12) + b"\x08\x06" + bytes(50))


@given(st.binary(min_size=2, max_size=64).filter(lambda b: len(b) % 2 == 0), st.data())
def test_incremental_checksum_equals_full_recompute(data, draw):
    i = draw.draw(st.integers(0, len(data) // 2 - 1))
    new_word = draw.draw(st.binary(min_size=2, max_size=2))
    changed = data[: 2 * i] + new_word + data[2 * i + 2 :]
    if not any(changed):
        return  # an all-zero block has no one's-complement sum to speak of
    c = internet_checksum(data)
    assert checksum_update(c, data[2 * i : 2 * i + 2], new_word) == internet_checksum(changed)


@given(st.binary(max_size=2000))
def test_model_never_raises_on_garbage(blob):
    r = process(T, blob)
    assert isinstance(r.verdict, Drop)
    r.add_to(Counters())


def test_corpus_export_reads_back_with_scapy(tmp_path):
    import csv

    from scapy.utils import RawPcapReader

    corpus.export(tmp_path, n=300, seed=4)
    judged = list(corpus.frames(300, seed=4))
    inputs = list(RawPcapReader(str(tmp_path / "input.pcap")))
    assert [data for data, _ in inputs] == [f for f, _ in judged]
    expected = list(RawPcapReader(str(tmp_path / "expected.pcap")))
    forwarded = [(i, r) for i, (_, r) in enumerate(judged) if r.forwarded]
    assert [data for data, _ in expected] == [r.frame for _, r in forwarded]
    assert [meta.sec * 1_000_000 + meta.usec for _, meta in expected] == [i for i, _ in forwarded]  # index = timestamp
    rows = list(csv.DictReader(open(tmp_path / "verdicts.csv")))
    assert [row["verdict"] for row in rows] == [r.verdict.name for _, r in judged]
