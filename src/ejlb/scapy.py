"""Scapy layers for EJFAT traffic (import only where scapy is installed).

    from ejlb.scapy import LB, RE, Sync, bind_port
    pkt = Ether()/IP()/UDP(dport=19522)/LB(tick=99, entropy=0xAB)/RE(data_id=5, length=3)/b"abc"

UDP to 19522 and to the FPGA's EJFAT range 16384-32767 dissects as LB; `bind_port(p, RE)` makes a
worker port dissect as RE (what the LB forwards), `bind_port(p, Sync)` a sync port. Field names
follow `ejlb.wire` (`entropy` is the v3 port_select; `slot_select` is reserved in v2).
"""
from __future__ import annotations

from scapy.fields import BitField, ByteField, IntField, LongField, ShortField, StrFixedLenField, XByteField
from scapy.layers.inet import UDP
from scapy.packet import Packet, bind_bottom_up, bind_layers

from ejlb import wire


class LB(Packet):
    name = "EJFAT LB"
    fields_desc = [
        StrFixedLenField("magic", wire.LB_MAGIC, 2),
        ByteField("version", 2),
        ByteField("next_proto", wire.LB_NEXT_PROTO_RE),
        ShortField("slot_select", 0),
        ShortField("entropy", 0),
        LongField("tick", 0),
    ]


class RE(Packet):
    name = "EJFAT RE"
    fields_desc = [
        BitField("version", wire.RE_VERSION, 4),
        BitField("reserved", 0, 4),
        XByteField("reserved2", 0),
        ShortField("data_id", 0),
        IntField("offset", 0),
        IntField("length", 0),
        LongField("event_number", 0),
    ]


class Sync(Packet):
    name = "EJFAT Sync"
    fields_desc = [
        StrFixedLenField("magic", wire.SYNC_MAGIC, 2),
        ByteField("version", wire.SYNC_VERSION),
        ByteField("reserved", 0),
        IntField("event_src_id", 0),
        LongField("event_number", 0),
        IntField("avg_event_rate_hz", 0),
        LongField("unix_time_ns", 0),
    ]


class _InRange:
    """Equal to every port of [lo, hi]: scapy compares bound field values with ==."""

    def __init__(self, lo: int, hi: int):
        self.lo, self.hi = lo, hi

    def __eq__(self, other) -> bool:
        return isinstance(other, int) and self.lo <= other <= self.hi

    def __hash__(self) -> int:
        return hash((self.lo, self.hi))


def bind_port(port: int, layer: type[Packet] = LB) -> None:
    """Dissect UDP datagrams to `port` as `layer` (LB, RE or Sync)."""
    bind_bottom_up(UDP, layer, dport=port)


bind_layers(UDP, LB, dport=wire.DEFAULT_DATA_PORT)
bind_bottom_up(UDP, LB, dport=_InRange(wire.DATA_PORT_MIN, wire.DATA_PORT_MAX))
bind_layers(LB, RE, next_proto=wire.LB_NEXT_PROTO_RE)
