"""Reference model of the LB pipeline: `process(tables, frame) -> Result`.

The oracle that the software LB and the HDL are tested against (docs/dataplane.md). Pure and
readable, not fast: one Ethernet frame (no FCS) in, a verdict, the rewritten frame and the counter
deltas out. Where the spec is silent this module *is* the definition, so every choice is written
down here:

Parse (stage 1, `PARSE_FAIL`)
  - Ethernet II with at most one 802.1Q tag (TPID 0x8100); anything but IPv4/IPv6 fails.
  - IPv4: version 4, IHL >= 5 (options allowed, kept unchanged), header checksum must verify,
    not a fragment (MF clear, offset 0), protocol UDP. Verifying the checksum makes "recompute" and
    "update incrementally" give the same output bits.
  - IPv6: version 6, next header UDP directly (no extension headers).
  - UDP length must equal the IP payload length, and the frame must hold the whole IP packet.
    Bytes after the IP packet (Ethernet padding) are not part of the packet and are not forwarded.
Destination filter (stage 2, `NOT_LB`): the destination IP only (no MAC check).
LB header (stage 3): UDP dst port in 16384..32767, a 16-byte LB header, magic "LB" -> else
  `NO_LB_HDR`; version 2 or 3 -> else `BAD_VERSION`. next_proto and v2's reserved field are not checked.
Allow-list (4) `BLOCKED_SRC`; TTL / hop limit <= 1 (5) `TTL`; epoch (6) `EPOCH_MISS`.
Slot (7): `(slot_key XOR xor) AND (2^bits - 1)`; with slot_bits > 9 a slot >= 512 has no calendar
  entry and counts as `CALENDAR_MISS`, like an unassigned (0xFFFF) or missing calendar (8).
Member (9) `MEMBER_MISS`: missing entry, explicit drop, or a member IP of the other family than the
  packet (an IPv4 packet cannot be turned into an IPv6 one by a header rewrite).
Rewrite (10): see spec; the VLAN tag is kept. IPv4 checksum recomputed. UDP checksum: 0 stays 0,
  else RFC 1624 eqn. 3 with 16-bit one's-complement (end-around carry) sums:
      C' = ~( ~C + sum(~old_word) + sum(new_word) ),   a result of 0 is sent as 0xFFFF
  over: source IP, destination IP, the UDP length (twice: pseudo-header and header; for IPv6 the
  32-bit pseudo-header length as two words), the destination port, and the 8 words of the removed
  LB header (removed words: old only). Since end-around-carry sums of not-all-zero words are
  never 0x0000, any evaluation order gives the same bits, also for a wrong incoming checksum.
  Output frame = headers + IP packet, zero-padded to 60 bytes.

Counters (Result.add_to): `drop_parse_fail`/`drop_not_lb` are global. Once the LB is known,
  rx_packets and rx_bytes (received frame length) count every packet; rx_v2/rx_v3 count packets
  whose version passed stage 3; a drop adds its reason; a forward adds tx_packets/tx_bytes (output
  frame length) to the member.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np

from ejlb.dataplane.tables import UNASSIGNED, Counters, Drop, Tables
from ejlb.errors import EjlbError
from ejlb.wire import (
    CALENDAR_SLOTS,
    DATA_PORT_MAX,
    DATA_PORT_MIN,
    LB_DTYPE,
    LB_HEADER_LEN,
    LB_MAGIC,
    LB_VERSIONS,
    IPV4_HEADER_LEN,
    IPV6_HEADER_LEN,
    UDP_HEADER_LEN,
    port_for,
    slot_for,
)

ETH_HEADER_LEN = 14
VLAN_TAG_LEN = 4
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_VLAN = 0x8100
IPPROTO_UDP = 17
MIN_FRAME_LEN = 60  # without FCS


@dataclass(frozen=True)
class Result:
    """What the pipeline did with one frame. Fields after `verdict` are None until known."""

    verdict: Drop
    reason: str = ""  # for humans: which field made a drop
    lb_id: int | None = None
    version: int | None = None
    epoch: int | None = None
    slot: int | None = None
    member_id: int | None = None
    rx_bytes: int = 0
    frame: bytes | None = None  # the rewritten frame when forwarded

    @property
    def forwarded(self) -> bool:
        return self.verdict == Drop.FORWARD

    def add_to(self, counters: Counters) -> None:
        """Add this frame's counter deltas to `counters`."""
        if self.lb_id is None:
            counters.glob[self.verdict.counter] += 1
            return
        c = counters.lb_counters(self.lb_id)
        c["rx_packets"] += 1
        c["rx_bytes"] += self.rx_bytes
        if self.version in LB_VERSIONS:
            c[f"rx_v{self.version}"] += 1
        if self.verdict != Drop.FORWARD:
            c[self.verdict.counter] += 1
            return
        m = counters.member_counters(self.lb_id, self.member_id)
        m["tx_packets"] += 1
        m["tx_bytes"] += len(self.frame)


@dataclass(frozen=True)
class Parsed:
    """Offsets and fields of a frame that passed stage 1."""

    l3: int  # offset of the IP header
    ip_version: int
    ip_header_len: int
    udp: int  # offset of the UDP header
    end: int  # offset one past the IP packet
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    ttl: int
    dport: int
    udp_checksum: int

    @property
    def payload(self) -> int:
        """Offset of the UDP payload (where the LB header starts)."""
        return self.udp + UDP_HEADER_LEN


class ParseError(EjlbError, ValueError):
    """A frame the reference model cannot parse."""


# --- checksum arithmetic -----------------------------------------------------------------------
def words16(b: bytes) -> list[int]:
    """Big-endian 16-bit words of `b`, zero-padded to even length (the checksum word view)."""
    if len(b) % 2:
        b += b"\0"
    return [b[i] << 8 | b[i + 1] for i in range(0, len(b), 2)]


def ones_sum(words) -> int:
    """16-bit one's-complement sum with end-around carry (0 only when every word is 0)."""
    s = sum(words)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def internet_checksum(data: bytes) -> int:
    return ~ones_sum(words16(data)) & 0xFFFF


def checksum_update(csum: int, old: bytes, new: bytes) -> int:
    """RFC 1624 eqn. 3: C' = ~(~C + ~m + m') over the 16-bit words of `old` -> `new`."""
    return ~ones_sum([~csum & 0xFFFF] + [~w & 0xFFFF for w in words16(old)] + words16(new)) & 0xFFFF


# --- stage 1: parse ----------------------------------------------------------------------------
def _u16(frame: bytes, off: int) -> int:
    return frame[off] << 8 | frame[off + 1]


def parse(frame: bytes) -> Parsed:
    """Stage 1. Raises ParseError naming the field and value."""
    n = len(frame)
    if n < ETH_HEADER_LEN:
        raise ParseError(f"frame.length={n}: shorter than an Ethernet header")
    l3, ethertype = ETH_HEADER_LEN, _u16(frame, 12)
    if ethertype == ETHERTYPE_VLAN:
        if n < ETH_HEADER_LEN + VLAN_TAG_LEN:
            raise ParseError(f"frame.length={n}: truncated 802.1Q tag")
        l3, ethertype = l3 + VLAN_TAG_LEN, _u16(frame, 16)
    if ethertype == ETHERTYPE_IPV4:
        if n < l3 + IPV4_HEADER_LEN:
            raise ParseError(f"frame.length={n}: truncated IPv4 header")
        if frame[l3] >> 4 != 4:
            raise ParseError(f"ipv4.version={frame[l3] >> 4}: must be 4")
        hlen = (frame[l3] & 0xF) * 4
        total = _u16(frame, l3 + 2)
        if hlen < IPV4_HEADER_LEN:
            raise ParseError(f"ipv4.ihl={hlen // 4}: must be >= 5")
        if total < hlen + UDP_HEADER_LEN or l3 + total > n:
            raise ParseError(f"ipv4.total_length={total}: header {hlen} + UDP 8 .. frame {n - l3}")
        if internet_checksum(frame[l3 : l3 + hlen]) != 0:
            raise ParseError(f"ipv4.checksum=0x{_u16(frame, l3 + 10):04x}: does not verify")
        frag = _u16(frame, l3 + 6)
        if frag & 0x3FFF:
            raise ParseError(f"ipv4.flags_fragment=0x{frag:04x}: fragments are not parsed")
        if frame[l3 + 9] != IPPROTO_UDP:
            raise ParseError(f"ipv4.protocol={frame[l3 + 9]}: not UDP")
        ttl = frame[l3 + 8]
        src = ipaddress.IPv4Address(frame[l3 + 12 : l3 + 16])
        dst = ipaddress.IPv4Address(frame[l3 + 16 : l3 + 20])
        version = 4
    elif ethertype == ETHERTYPE_IPV6:
        if n < l3 + IPV6_HEADER_LEN:
            raise ParseError(f"frame.length={n}: truncated IPv6 header")
        if frame[l3] >> 4 != 6:
            raise ParseError(f"ipv6.version={frame[l3] >> 4}: must be 6")
        hlen = IPV6_HEADER_LEN
        plen = _u16(frame, l3 + 4)
        total = hlen + plen
        if plen < UDP_HEADER_LEN or l3 + total > n:
            raise ParseError(f"ipv6.payload_length={plen}: UDP 8 .. frame {n - l3 - hlen}")
        if frame[l3 + 6] != IPPROTO_UDP:
            raise ParseError(f"ipv6.next_header={frame[l3 + 6]}: not UDP (no extension headers)")
        ttl = frame[l3 + 7]
        src = ipaddress.IPv6Address(frame[l3 + 8 : l3 + 24])
        dst = ipaddress.IPv6Address(frame[l3 + 24 : l3 + 40])
        version = 6
    else:
        raise ParseError(f"ethertype=0x{ethertype:04x}: not IPv4, IPv6 or one 802.1Q tag")
    udp = l3 + hlen
    ulen = _u16(frame, udp + 4)
    if ulen != total - hlen:
        raise ParseError(f"udp.length={ulen}: IP payload is {total - hlen}")
    return Parsed(
        l3=l3, ip_version=version, ip_header_len=hlen, udp=udp, end=l3 + total, src=src, dst=dst,
        ttl=ttl, dport=_u16(frame, udp + 2), udp_checksum=_u16(frame, udp + 6),
    )


# --- the pipeline ------------------------------------------------------------------------------
def process(tables: Tables, frame: bytes) -> Result:
    """Run one frame through stages 1-10."""
    frame = bytes(frame)
    rx = len(frame)
    try:
        p = parse(frame)
    except ParseError as e:
        return Result(Drop.PARSE_FAIL, str(e), rx_bytes=rx)

    lb = tables.lb_for_destination(p.dst)
    if lb is None:
        return Result(Drop.NOT_LB, f"ip.dst={p.dst}: no LB instance", rx_bytes=rx)
    known = dict(lb_id=lb.lb_id, rx_bytes=rx)

    if not DATA_PORT_MIN <= p.dport <= DATA_PORT_MAX:
        return Result(Drop.NO_LB_HDR, f"udp.dport={p.dport}: outside {DATA_PORT_MIN}..{DATA_PORT_MAX}", **known)
    if p.end - p.payload < LB_HEADER_LEN:
        return Result(Drop.NO_LB_HDR, f"udp.payload_length={p.end - p.payload}: no room for an LB header", **known)
    lbh = np.frombuffer(frame, LB_DTYPE, count=1, offset=p.payload)[0]  # the one LB layout (ejlb.wire)
    if lbh["magic"] != LB_MAGIC:
        return Result(Drop.NO_LB_HDR, f"lb.magic={frame[p.payload : p.payload + 2]!r}: must be b'LB'", **known)
    version = int(lbh["version"])
    if version not in LB_VERSIONS:
        return Result(Drop.BAD_VERSION, f"lb.version={version}: must be 2 or 3", **known)
    known["version"] = version

    if (lb.lb_id, p.src) not in tables.senders:
        return Result(Drop.BLOCKED_SRC, f"ip.src={p.src}: not on LB {lb.lb_id}'s allow-list", **known)
    if p.ttl <= 1:
        return Result(Drop.TTL, f"ip.ttl={p.ttl}: expires here", **known)

    tick, port_select = int(lbh["tick"]), int(lbh["port_select"])
    slot_key = tick & 0xFFFF if version == 2 else int(lbh["slot_select"])
    epoch = tables.epoch_for(lb.lb_id, tick)
    if epoch is None:
        return Result(Drop.EPOCH_MISS, f"lb.tick={tick}: in no epoch of LB {lb.lb_id}", **known)
    known["epoch"] = epoch

    slot = slot_for(slot_key, lb.slot_bits, lb.slot_xor)
    known["slot"] = slot
    calendar = tables.calendars.get((lb.lb_id, epoch))
    member_id = calendar[slot] if calendar is not None and slot < CALENDAR_SLOTS else None
    if member_id is None or member_id == UNASSIGNED:
        return Result(Drop.CALENDAR_MISS, f"slot={slot}: unassigned in epoch {epoch}", **known)
    known["member_id"] = member_id

    member = tables.members.get((lb.lb_id, member_id))
    if member is None or member.drop or member.ip.version != p.ip_version:
        why = "no entry" if member is None else "drop rule" if member.drop else f"ip {member.ip} is the other family"
        return Result(Drop.MEMBER_MISS, f"member_id={member_id}: {why}", **known)

    lb_ip = lb.ipv4 if p.ip_version == 4 else lb.ipv6
    out = rewrite(frame, p, lb.mac, lb_ip, member, port_for(member.base_port, port_select, member.port_bits))
    return Result(Drop.FORWARD, "", frame=out, **known)


def rewrite(frame: bytes, p: Parsed, lb_mac: bytes, lb_ip, member, dport: int) -> bytes:
    """Stage 10 on a parsed frame: the bytes that leave the LB."""
    strip = 0 if member.keep_lb_header else LB_HEADER_LEN
    l3, udp = p.l3, p.udp
    ulen_old = p.end - udp
    ulen_new = ulen_old - strip
    out = bytearray(frame[: p.payload])
    out += frame[p.payload + strip : p.end]
    out[0:6] = member.mac
    out[6:12] = lb_mac
    src_new, dst_new = lb_ip.packed, member.ip.packed
    if p.ip_version == 4:
        out[l3 + 2 : l3 + 4] = (p.ip_header_len + ulen_new).to_bytes(2, "big")
        out[l3 + 8] = p.ttl - 1
        out[l3 + 12 : l3 + 16] = src_new
        out[l3 + 16 : l3 + 20] = dst_new
        out[l3 + 10 : l3 + 12] = b"\0\0"
        out[l3 + 10 : l3 + 12] = internet_checksum(bytes(out[l3 : l3 + p.ip_header_len])).to_bytes(2, "big")
        len_old, len_new = ulen_old.to_bytes(2, "big"), ulen_new.to_bytes(2, "big")
    else:
        out[l3 + 4 : l3 + 6] = ulen_new.to_bytes(2, "big")
        out[l3 + 7] = p.ttl - 1
        out[l3 + 8 : l3 + 24] = src_new
        out[l3 + 24 : l3 + 40] = dst_new
        len_old, len_new = ulen_old.to_bytes(4, "big"), ulen_new.to_bytes(4, "big")
    out[udp + 2 : udp + 4] = dport.to_bytes(2, "big")
    out[udp + 4 : udp + 6] = ulen_new.to_bytes(2, "big")
    if p.udp_checksum != 0:
        old = p.src.packed + p.dst.packed + len_old + ulen_old.to_bytes(2, "big") + p.dport.to_bytes(2, "big")
        new = src_new + dst_new + len_new + ulen_new.to_bytes(2, "big") + dport.to_bytes(2, "big")
        if strip:
            old += frame[p.payload : p.payload + LB_HEADER_LEN]
        c = checksum_update(p.udp_checksum, old, new) or 0xFFFF
        out[udp + 6 : udp + 8] = c.to_bytes(2, "big")
    if len(out) < MIN_FRAME_LEN:
        out += bytes(MIN_FRAME_LEN - len(out))
    return bytes(out)


def run(tables: Tables, frames, counters: Counters | None = None) -> tuple[list[Result], Counters]:
    """Process many frames, accumulating counters (a convenience for tests)."""
    counters = counters if counters is not None else Counters()
    results = [process(tables, f) for f in frames]
    for r in results:
        r.add_to(counters)
    return results, counters
