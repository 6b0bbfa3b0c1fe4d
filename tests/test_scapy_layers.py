"""ejlb.scapy layers agree with ejlb.wire in both directions."""
import pytest
from hypothesis import given, settings, strategies as st

pytest.importorskip("scapy", reason="scapy is not installed")
from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.packet import Raw  # noqa: E402

from ejlb import wire  # noqa: E402
from ejlb.scapy import LB, RE, Sync, bind_port  # noqa: E402

u16, u32, u64 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, (1 << 64) - 1)


@settings(max_examples=60)
@given(version=st.sampled_from([2, 3]), tick=u64, entropy=u16, slot=u16, data_id=u16, offset=u32,
       length=u32, evt=u64, dport=st.sampled_from([19522, 16384, 32767, 20000]), payload=st.binary(max_size=64))
def test_wire_bytes_dissect_to_same_fields(version, tick, entropy, slot, data_id, offset, length, evt, dport, payload):
    lb = wire.LBHeader(tick=tick, entropy=entropy, version=version, slot_select=slot if version == 3 else 0)
    re = wire.REHeader(data_id, offset, length, evt)
    frame = bytes(Ether() / IP() / UDP(sport=1234, dport=dport) / Raw(lb.encode() + re.encode() + payload))
    pkt = Ether(frame)
    assert LB in pkt and RE in pkt
    assert (pkt[LB].version, pkt[LB].tick, pkt[LB].entropy, pkt[LB].slot_select) == (
        version, tick, entropy, lb.slot_select)
    assert (pkt[RE].data_id, pkt[RE].offset, pkt[RE].length, pkt[RE].event_number) == (data_id, offset, length, evt)
    assert bytes(pkt[RE].payload) == payload


@given(tick=u64, entropy=u16, data_id=u16, offset=u32, length=u32, evt=u64)
def test_scapy_built_bytes_decode_with_wire(tick, entropy, data_id, offset, length, evt):
    pkt = IPv6(dst="::1") / UDP(dport=19522) / LB(tick=tick, entropy=entropy) / RE(
        data_id=data_id, offset=offset, length=length, event_number=evt)
    raw = bytes(pkt[LB])
    assert pkt[UDP].dport == 19522
    assert wire.LBHeader.decode(raw) == wire.LBHeader(tick=tick, entropy=entropy)
    assert wire.REHeader.decode(raw[16:]) == wire.REHeader(data_id, offset, length, evt)


def test_ports_outside_the_ejfat_range_are_not_lb():
    for dport in (16383, 32768, 53):
        pkt = Ether(bytes(Ether() / IP() / UDP(dport=dport) / LB(tick=1) / RE()))
        assert LB not in pkt


def test_bind_port_for_worker_and_sync_ports():
    bind_port(40001, RE)
    bind_port(40002, Sync)
    worker = IP(bytes(IP() / UDP(dport=40001) / wire.REHeader(7, 0, 3, 9).encode() / b"abc"))
    assert worker[RE].data_id == 7 and bytes(worker[RE].payload) == b"abc"
    sync = wire.SyncHeader(5, 123, 1_000_000, 456)
    pkt = IP(bytes(IP() / UDP(dport=40002) / sync.encode()))
    assert (pkt[Sync].event_src_id, pkt[Sync].event_number, pkt[Sync].unix_time_ns) == (5, 123, 456)
    assert bytes(pkt[Sync]) == sync.encode()
