"""Conformance corpus: fixed Tables and a seeded stream of frames with the reference model's verdicts.

Shared by the model tests, the software-LB agreement test and the HDL (cocotb) tests:

    from ejlb.dataplane import corpus
    tables = corpus.tables()
    for frame, result in corpus.frames(10_000, seed=1): ...

The mix (by weight) covers valid v2/v3 over IPv4 (with options) and IPv6, with and without a VLAN
tag, 0/1-byte and jumbo payloads, zero and non-zero UDP checksums, keep-header members; every drop
reason of the spec; and malformed frames (truncations, bad lengths and checksums, fragments,
extension headers, QinQ, non-UDP, random bytes). The same seed always yields the same frames.

Addresses: IPv4 in 127.0.0.0/8 so the software LB can replay the IPv4 part on plain loopback;
IPv6 in fd00:ec::/64.
"""
from __future__ import annotations

import ipaddress
import random
from typing import Iterator

from ejlb.dataplane.model import (
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    ETHERTYPE_VLAN,
    IPPROTO_UDP,
    Result,
    internet_checksum,
    ones_sum,
    process,
    words16,
)
from ejlb.dataplane.tables import UNASSIGNED, EpochRange, LBInstance, Member, Tables
from ejlb.wire import CALENDAR_SLOTS, DATA_PORT_MAX, DATA_PORT_MIN, DEFAULT_DATA_PORT, LBHeader, REHeader

IP4, IP6 = ipaddress.IPv4Address, ipaddress.IPv6Address

# --- the fixed tables --------------------------------------------------------------------------
LB_MACS = {0: bytes.fromhex("02ec0000a000"), 1: bytes.fromhex("02ec0000a001"), 2: bytes.fromhex("02ec0000a002")}
LB_IPV4 = {0: IP4("127.0.10.1"), 1: IP4("127.0.11.1"), 2: IP4("127.0.12.1")}
LB_IPV6 = {0: IP6("fd00:ec::10:1"), 1: IP6("fd00:ec::11:1")}  # LB 2 is IPv4-only
SENDERS = {
    0: [IP4("127.0.1.1"), IP4("127.0.1.2"), IP6("fd00:ec::1:1"), IP6("fd00:ec::1:2")],
    1: [IP4("127.0.1.3"), IP6("fd00:ec::1:3")],
    2: [IP4("127.0.1.1")],
}
STRANGERS = [IP4("127.0.1.99"), IP6("fd00:ec::1:99")]  # on no allow-list
# LB 0: epochs 0..2 are ranges, 3 is the catch-all (ticks < 1000 and anything uncovered).
# LB 1: two ranges and no catch-all, so ticks >= 2^41 miss; 10 slot bits with an xor, so some
# slots fall outside the 512-entry calendar.  LB 2: a single open range from tick 100.
EPOCHS = {
    (0, 0): EpochRange(1000, 2000),
    (0, 1): EpochRange(2000, 3000),
    (0, 2): EpochRange(3000, None),
    (0, 3): EpochRange(0, 0, catch_all=True),
    (1, 0): EpochRange(0, 1 << 40),
    (1, 1): EpochRange(1 << 40, 1 << 41),
    (2, 1): EpochRange(100, None),
}
MISSING_MEMBER = 9  # appears in calendars but has no member entry


def _members() -> dict[tuple[int, int], Member]:
    m = {}
    for k in range(4):  # LB 0: IPv4 workers, 3 keeps the LB header, base ports from low to high
        m[(0, k)] = Member(IP4(f"127.0.20.{k + 1}"), base_port=[20000, 40000, 1024, 65535 - 3][k],
                           port_bits=[0, 14, 4, 2][k], mac=bytes([2, 0xEC, 0, 0, 0x20, k]), keep_lb_header=k == 3)
    m[(0, 4)] = Member(IP4("127.0.20.5"), base_port=30000, drop=True)  # removed worker: explicit drop
    m[(0, 5)] = Member(IP6("fd00:ec::20:6"), base_port=31000, port_bits=3, mac=bytes([2, 0xEC, 0, 0, 0x20, 5]))
    for k in range(3):  # LB 1: IPv6 workers (+ one IPv4)
        m[(1, k)] = Member(IP6(f"fd00:ec::21:{k + 1}"), base_port=32000 + 100 * k, port_bits=k * 4,
                           mac=bytes([2, 0xEC, 0, 0, 0x21, k]), keep_lb_header=k == 2)
    m[(1, 3)] = Member(IP4("127.0.21.4"), base_port=33000, port_bits=1, mac=bytes([2, 0xEC, 0, 0, 0x21, 3]))
    m[(2, 0)] = Member(IP4("127.0.22.1"), base_port=34000, port_bits=8, mac=bytes([2, 0xEC, 0, 0, 0x22, 0]))
    return m


def _calendar(rng: random.Random, ids: list[int], holes: float) -> tuple[int, ...]:
    return tuple(UNASSIGNED if rng.random() < holes else rng.choice(ids) for _ in range(CALENDAR_SLOTS))


def tables() -> Tables:
    """The fixed Tables every corpus frame was judged against."""
    rng = random.Random(0xEC)
    lbs = {
        0: LBInstance(0, LB_MACS[0], LB_IPV4[0], LB_IPV6[0]),
        1: LBInstance(1, LB_MACS[1], LB_IPV4[1], LB_IPV6[1], slot_bits=10, slot_xor=0x2A5),
        2: LBInstance(2, LB_MACS[2], LB_IPV4[2], None, slot_bits=4, slot_xor=3),
    }
    cal = {}
    for e in range(4):
        cal[(0, e)] = _calendar(rng, [0, 1, 2, 3] * 3 + [4, 5, MISSING_MEMBER], 0.05)
    cal[(1, 0)] = _calendar(rng, [0, 1, 2, 3], 0.05)
    cal[(1, 1)] = _calendar(rng, [0, 1, 2, 3, MISSING_MEMBER], 0.05)
    cal[(2, 1)] = _calendar(rng, [0], 0.0)
    senders = frozenset((lb, ip) for lb, ips in SENDERS.items() for ip in ips)
    return Tables(lbs=lbs, senders=senders, epochs=dict(EPOCHS), calendars=cal, members=_members())


# --- frame building (also used by tests) -----------------------------------------------------
def udp_checksum(src, dst, udp_segment: bytes) -> int:
    """Full UDP checksum over pseudo-header + segment (checksum field must be zero); 0 -> 0xFFFF."""
    n = len(udp_segment)
    pseudo = src.packed + dst.packed + (
        bytes([0, IPPROTO_UDP]) + n.to_bytes(2, "big") if src.version == 4 else n.to_bytes(4, "big") + bytes([0, 0, 0, IPPROTO_UDP])
    )
    return (~ones_sum(words16(pseudo) + words16(udp_segment)) & 0xFFFF) or 0xFFFF


def build_frame(
    src, dst, payload: bytes, *, sport: int = 40000, dport: int = DEFAULT_DATA_PORT, ttl: int = 64,
    vlan: int | None = None, ip_options: bytes = b"", checksum: str = "good",
    dst_mac: bytes = b"\x02\xec\0\0\xa0\0", src_mac: bytes = b"\x02\xec\0\0\x01\x01", pad: bool = True,
) -> bytes:
    """An Ethernet frame carrying one UDP datagram. checksum: "good", "zero" or "bad"."""
    udp = bytearray(sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + (8 + len(payload)).to_bytes(2, "big") + b"\0\0" + payload)
    if checksum != "zero":
        c = udp_checksum(src, dst, bytes(udp))
        if checksum == "bad":
            c = (c + 0x1234) & 0xFFFF or 1
        udp[6:8] = c.to_bytes(2, "big")
    if src.version == 4:
        assert len(ip_options) % 4 == 0 and len(ip_options) <= 40
        ihl = 5 + len(ip_options) // 4
        ip = bytearray(bytes([0x40 | ihl, 0]) + (ihl * 4 + len(udp)).to_bytes(2, "big") + b"\x12\x34\x40\x00"
                       + bytes([ttl, IPPROTO_UDP]) + b"\0\0" + src.packed + dst.packed + ip_options)
        ip[10:12] = internet_checksum(bytes(ip)).to_bytes(2, "big")
        ethertype = ETHERTYPE_IPV4
    else:
        ip = bytearray(b"\x60\x0a\xbc\xde" + len(udp).to_bytes(2, "big") + bytes([IPPROTO_UDP, ttl]) + src.packed + dst.packed)
        ethertype = ETHERTYPE_IPV6
    eth = dst_mac + src_mac
    if vlan is not None:
        eth += ETHERTYPE_VLAN.to_bytes(2, "big") + vlan.to_bytes(2, "big")
    frame = eth + ethertype.to_bytes(2, "big") + bytes(ip) + bytes(udp)
    if pad and len(frame) < 60:
        frame += bytes(60 - len(frame))
    return frame


def ip_checksum_fix(frame: bytes, l3: int) -> bytes:
    """Recompute the IPv4 header checksum after a deliberate header edit."""
    f = bytearray(frame)
    hlen = (f[l3] & 0xF) * 4
    f[l3 + 10 : l3 + 12] = b"\0\0"
    f[l3 + 10 : l3 + 12] = internet_checksum(bytes(f[l3 : l3 + hlen])).to_bytes(2, "big")
    return bytes(f)


# --- the generator -----------------------------------------------------------------------------
def _tick_for(rng: random.Random, lb: int, hit: bool = False) -> int:
    """A tick for LB `lb`; `hit` = one that some epoch covers."""
    if hit:
        return rng.randrange(1 << 41) if lb == 1 else rng.randrange(100, 1 << 64)
    if lb == 0:
        return rng.choice([rng.randrange(0, 1000), rng.randrange(1000, 4000), rng.randrange(1 << 64), 999, 1000, 2999, 3000])
    if lb == 1:
        return rng.choice([rng.randrange(1 << 40), rng.randrange(1 << 40, 1 << 41), (1 << 41) - 1, rng.randrange(1 << 41, 1 << 64)])
    return rng.choice([rng.randrange(100, 1 << 64), rng.randrange(0, 100), 99, 100])


def _payload_len(rng: random.Random) -> int:
    return rng.choice([0, 1, 2, 3, 15, 16, 17, rng.randrange(0, 64), rng.randrange(0, 1500), rng.randrange(1500, 8900), 8900])


def _datagram(rng: random.Random, version: int, tick: int) -> bytes:
    """LB | RE | fragment bytes; a tail of 0..2 bytes makes LB-only and odd lengths happen too."""
    lb = LBHeader(tick=tick, entropy=rng.randrange(1 << 16), version=version,
                  slot_select=rng.randrange(1 << 16) if version == 3 else 0).encode()
    n = _payload_len(rng)
    if rng.random() < 0.05:
        return lb + rng.randbytes(rng.randrange(0, 20))  # LB header only (+ a partial RE)
    re = REHeader(data_id=rng.randrange(1 << 16), offset=0, length=n, event_number=rng.randrange(1 << 64)).encode()
    return lb + re + rng.randbytes(n)


def _valid(rng: random.Random) -> bytes:
    lb = rng.choice([0, 0, 1, 1, 2])
    # mostly the family of the LB's members (LB 0: IPv4, LB 1: IPv6), so that most frames forward
    family = 4 if lb == 2 else (4 if (lb == 0) == (rng.random() < 0.85) else 6)
    src = rng.choice([ip for ip in SENDERS[lb] if ip.version == family])
    dst = LB_IPV4[lb] if family == 4 else LB_IPV6[lb]
    dport = rng.choice([DATA_PORT_MIN, DEFAULT_DATA_PORT, DATA_PORT_MAX, rng.randrange(DATA_PORT_MIN, DATA_PORT_MAX + 1)])
    opts = b""
    if family == 4 and rng.random() < 0.2:
        opts = bytes([1]) * (4 * rng.randrange(1, 11))  # NOPs, 4..40 bytes
    return build_frame(
        src, dst, _datagram(rng, rng.choice([2, 3]), _tick_for(rng, lb, hit=rng.random() < 0.8)), sport=rng.randrange(1024, 65536),
        dport=dport, ttl=rng.choice([2, 64, 255, rng.randrange(2, 256)]), ip_options=opts,
        vlan=rng.randrange(4096) if rng.random() < 0.2 else None,
        checksum=rng.choice(["good", "good", "good", "zero", "bad"]),
    )


def _edge(rng: random.Random) -> bytes:
    """Well-formed frames aimed at one specific stage each."""
    kind = rng.randrange(9)
    lb = rng.choice([0, 1])
    family = rng.choice([4, 6])
    src = rng.choice([ip for ip in SENDERS[lb] if ip.version == family])
    dst = LB_IPV4[lb] if family == 4 else LB_IPV6[lb]
    dport, ttl, version = DEFAULT_DATA_PORT, 64, rng.choice([2, 3])
    data = _datagram(rng, version, _tick_for(rng, lb))
    if kind == 0:  # the FPGA's port window edges
        dport = rng.choice([DATA_PORT_MIN - 1, DATA_PORT_MAX + 1, 53, 65535, DATA_PORT_MIN, DATA_PORT_MAX])
    elif kind == 1:  # bad LB version / magic / too short for an LB header
        data = rng.choice([data[:2] + bytes([rng.choice([0, 1, 4, 99, 255])]) + data[3:], b"LX" + data[2:],
                           data[: rng.randrange(0, 16)], b"lb" + data[2:]])
    elif kind == 2:  # sender not on this LB's list (a stranger, or another LB's sender)
        others = [ip for other, ips in SENDERS.items() if other != lb for ip in ips if ip not in SENDERS[lb]]
        src = rng.choice([ip for ip in STRANGERS + others if ip.version == family])
    elif kind == 3:  # TTL / hop limit expiry edges
        ttl = rng.choice([0, 1, 2])
    elif kind == 4:  # not for any LB (LB 2 has no IPv6; unknown addresses)
        dst = rng.choice([IP4("127.0.12.2"), IP4("127.0.10.2")] if family == 4 else [IP6("fd00:ec::12:1"), IP6("::1")])
    elif kind == 5:  # LB 2: epoch misses below tick 100, 4 slot bits
        lb, family = 2, 4
        src, dst = SENDERS[2][0], LB_IPV4[2]
        data = _datagram(rng, version, rng.choice([0, 99, 100, rng.randrange(1 << 64)]))
    elif kind == 6:  # 0- and 1-byte fragments (the runt-frame case)
        tick = _tick_for(rng, lb)
        lbh = LBHeader(tick=tick, entropy=rng.randrange(1 << 16), version=version, slot_select=rng.randrange(1 << 16) if version == 3 else 0)
        n = rng.choice([0, 1])
        data = lbh.encode() + REHeader(1, 0, n, 7).encode() + rng.randbytes(n)
    elif kind == 7:  # checksum sweep: many payloads, non-zero sums around 0 / 0xFFFF
        data = data[:36] + rng.randbytes(rng.randrange(0, 64))
    # kind 8: plain, with VLAN
    return build_frame(src, dst, data, dport=dport, ttl=ttl, sport=rng.randrange(1, 65536),
                       vlan=rng.randrange(4096) if kind == 8 or rng.random() < 0.1 else None,
                       checksum=rng.choice(["good", "good", "zero", "bad"]))


def _malformed(rng: random.Random) -> bytes:
    base = _valid(rng)
    kind = rng.randrange(12)
    vlan = base[12:14] == b"\x81\x00"
    l3 = 18 if vlan else 14
    is4 = base[l3 - 2 : l3] == b"\x08\x00"
    f = bytearray(base)
    if kind == 0:  # truncated anywhere
        return bytes(f[: rng.randrange(0, len(f))])
    if kind == 1:  # unknown ethertypes: ARP, QinQ, LLDP, IPv4-with-a-wrong-type
        f[l3 - 2 : l3] = rng.choice([b"\x08\x06", b"\x88\xa8", b"\x88\xcc", b"\x86\xdc"])
        return bytes(f)
    if kind == 2:  # wrong IP version nibble
        f[l3] = (rng.choice([0, 5, 6, 15] if is4 else [0, 4, 7, 15]) << 4) | (f[l3] & 0xF)
        return ip_checksum_fix(bytes(f), l3) if is4 else bytes(f)
    if kind == 3:  # not UDP: TCP, ICMP, hop-by-hop / fragment extension headers
        if is4:
            f[l3 + 9] = rng.choice([6, 1, 47])
            return ip_checksum_fix(bytes(f), l3)
        f[l3 + 6] = rng.choice([6, 58, 0, 44, 43])
        return bytes(f)
    if kind == 4:  # IP length fields lie (too long, too short)
        off = l3 + 2 if is4 else l3 + 4
        cur = int.from_bytes(f[off : off + 2], "big")
        f[off : off + 2] = rng.choice([cur + 1, cur + 100, max(cur - 1, 0), 0, 7, 65535]).to_bytes(2, "big")
        return ip_checksum_fix(bytes(f), l3) if is4 else bytes(f)
    if kind == 5:  # UDP length lies
        udp = l3 + ((f[l3] & 0xF) * 4 if is4 else 40)
        cur = int.from_bytes(f[udp + 4 : udp + 6], "big")
        f[udp + 4 : udp + 6] = rng.choice([cur + 1, max(cur - 1, 0), 0, 7, 65535]).to_bytes(2, "big")
        return bytes(f)
    if kind == 6 and is4:  # bad IPv4 header checksum
        f[l3 + 10] ^= 1 << rng.randrange(8)
        return bytes(f)
    if kind == 7 and is4:  # IHL < 5 or larger than the packet
        f[l3] = 0x40 | rng.choice([0, 1, 4, 15])
        return ip_checksum_fix(bytes(f), l3)
    if kind == 8 and is4:  # IPv4 fragments (MF, or an offset)
        f[l3 + 6 : l3 + 8] = rng.choice([0x2000, 0x0001, 0x2010, 0x1FFF]).to_bytes(2, "big")
        return ip_checksum_fix(bytes(f), l3)
    if kind == 9:  # random bytes
        return rng.randbytes(rng.randrange(0, 200))
    if kind == 10:  # a random byte flipped anywhere (often still valid: the model decides)
        i = rng.randrange(len(f))
        f[i] ^= 1 << rng.randrange(8)
        return bytes(f)
    return bytes(f[: rng.randrange(0, 60)])  # short frames, incl. runts below the Ethernet header


def frames(n: int = 10_000, seed: int = 1) -> Iterator[tuple[bytes, Result]]:
    """`n` frames (about 50 % valid, 25 % edge cases, 25 % malformed) and the model's Result for
    each, judged against `tables()`. Deterministic for a given seed."""
    rng = random.Random(seed)
    t = tables()
    for _ in range(n):
        r = rng.random()
        frame = _valid(rng) if r < 0.5 else _edge(rng) if r < 0.75 else _malformed(rng)
        yield frame, process(t, frame)


# --- export for tools outside Python (simulators, Wireshark) ------------------------------------------
_PCAP_HEADER = (0xA1B2C3D4).to_bytes(4, "little") + (2).to_bytes(2, "little") + (4).to_bytes(2, "little") \
    + bytes(8) + (65535).to_bytes(4, "little") + (1).to_bytes(4, "little")  # LINKTYPE_ETHERNET


def _pcap_record(i: int, frame: bytes) -> bytes:
    # timestamp = frame index in microseconds, so records of both files line up by index
    return (i // 1_000_000).to_bytes(4, "little") + (i % 1_000_000).to_bytes(4, "little") \
        + len(frame).to_bytes(4, "little") * 2 + frame


def export(directory, n: int = 10_000, seed: int = 1) -> None:
    """Write input.pcap (every frame), expected.pcap (the rewritten frame of each forwarded one,
    stamped with its input's index) and verdicts.csv (index, verdict, lb, epoch, slot, member,
    output length, reason)."""
    import csv
    import pathlib

    out = pathlib.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "input.pcap", "wb") as fin, open(out / "expected.pcap", "wb") as fexp, \
            open(out / "verdicts.csv", "w", newline="") as fcsv:
        fin.write(_PCAP_HEADER)
        fexp.write(_PCAP_HEADER)
        w = csv.writer(fcsv)
        w.writerow(["index", "verdict", "lb", "epoch", "slot", "member", "out_len", "reason"])
        for i, (frame, r) in enumerate(frames(n, seed)):
            fin.write(_pcap_record(i, frame))
            if r.forwarded:
                fexp.write(_pcap_record(i, r.frame))
            w.writerow([i, r.verdict.name, *("" if x is None else x for x in (r.lb_id, r.epoch, r.slot, r.member_id)),
                        len(r.frame) if r.frame else "", r.reason])


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Write the conformance corpus as pcap files + verdicts.csv.")
    ap.add_argument("directory")
    ap.add_argument("-n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    export(a.directory, a.n, a.seed)
