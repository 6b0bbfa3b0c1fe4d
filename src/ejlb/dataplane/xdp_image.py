"""Tables -> the entries of the XDP program's table maps (pure; no kernel needed).

`image(tables, bank, egress)` is what one bank of the maps must hold for `tables`: a dict per map
from key bytes to value bytes, in the layouts of `ejlb.dataplane.xdp_layout`. `changes(old, new)`
is the list of map writes and deletes that turns one image into the other; the loader applies it to
the uncommitted bank. Array maps have every key; an entry absent from an image means its empty
value (`EMPTY`), which for a calendar is all slots unassigned, never member 0.

Everything a program could not hold is refused here, with a TableError naming the field and value:
an address claimed by two LB instances (the destination filter is one hash lookup), more senders
than the map holds, a member IP routed to an interface that does not exist.
"""
from __future__ import annotations

import ipaddress
from typing import Callable, Mapping

import numpy as np

from ejlb.dataplane import xdp_layout as L
from ejlb.dataplane.tables import UNASSIGNED, TableError, Tables

Image = dict[str, dict[bytes, bytes]]
ARRAY_MAPS = ("lbs", "calendars", "members")  # every key exists; deleting = writing EMPTY
HASH_MAPS = ("dests", "senders")
EMPTY = {
    "lbs": bytes(L.LB.itemsize),
    "members": bytes(L.MEMBER.itemsize),
    "calendars": np.full(1, UNASSIGNED, L.CALENDAR).tobytes(),
}
PRESENT = b"\x01"  # senders value


def u32(i: int) -> bytes:
    return int(i).to_bytes(4, "little" if np.little_endian else "big")


def addr_key(bank: int, ip, lb: int = 0) -> bytes:
    k = np.zeros(1, L.ADDR_KEY)
    k["bank"], k["family"], k["lb"] = bank, ip.version, lb
    k["ip"][0, : len(ip.packed)] = np.frombuffer(ip.packed, np.uint8)
    return k.tobytes()


def _lb_value(inst) -> np.ndarray:
    v = np.zeros(1, L.LB)
    v["mac"] = np.frombuffer(inst.mac, np.uint8)
    v["slot_bits"], v["slot_xor"] = inst.slot_bits, inst.slot_xor
    if inst.ipv4 is not None:
        v["ipv4"] = np.frombuffer(inst.ipv4.packed, np.uint8)
    if inst.ipv6 is not None:
        v["ipv6"] = np.frombuffer(inst.ipv6.packed, np.uint8)
    return v


NO_MAC = bytes(6)


def _member_value(m, ifindex: int, resolve_mac: bool) -> bytes:
    v = np.zeros(1, L.MEMBER)
    v["mac"] = np.frombuffer(m.mac, np.uint8)
    v["family"] = m.ip.version
    v["flags"] = (L.MEMBER_KEEP_LB_HEADER * m.keep_lb_header | L.MEMBER_DROP * m.drop
                  | L.MEMBER_RESOLVE_MAC * (resolve_mac and m.mac == NO_MAC))
    v["ip"][0, : len(m.ip.packed)] = np.frombuffer(m.ip.packed, np.uint8)
    v["base_port"], v["port_bits"], v["ifindex"] = m.base_port, m.port_bits, ifindex
    return v.tobytes()


Egress = Callable[[ipaddress.IPv4Address | ipaddress.IPv6Address], int]


def image(tables: Tables, bank: int, egress: Egress = lambda ip: 0, resolve_macs: bool = False) -> Image:
    """Map entries of one bank. `egress(member_ip)` -> ifindex to redirect to (0: back out the
    receiving interface with XDP_TX). resolve_macs: members whose MAC is 00:00:00:00:00:00 take
    theirs from the kernel's FIB and neighbour table (else the zero MAC is written, as the model
    does)."""
    lbs: dict[int, np.ndarray] = {}
    dests: dict[bytes, bytes] = {}
    owner: dict[bytes, str] = {}
    for lb_id, inst in sorted(tables.lbs.items()):
        lbs[lb_id] = _lb_value(inst)
        for name, ip in (("ipv4", inst.ipv4), ("ipv6", inst.ipv6)):
            if ip is None:
                continue
            k = addr_key(bank, ip)
            if k in dests:
                raise TableError(f"lbs[{lb_id}].{name}={ip}: already the address of {owner[k]}")
            dests[k], owner[k] = u32(lb_id), f"LB {lb_id}"
    for (lb_id, epoch), rng in tables.epochs.items():
        if lb_id not in lbs:  # an LB without a destination entry never reaches stage 6
            lbs[lb_id] = np.zeros(1, L.LB)
        e = lbs[lb_id]["epochs"][0, epoch]
        e["start"], e["end"] = rng.start, rng.end or 0
        e["flags"] = L.EPOCH_VALID | L.EPOCH_OPEN_END * (rng.end is None) | L.EPOCH_CATCH_ALL * rng.catch_all
    if len(tables.senders) > L.MAX_SENDERS:
        raise TableError(f"senders: {len(tables.senders)} entries, the XDP map holds {L.MAX_SENDERS}")
    calendars = {}
    for (lb_id, epoch), slots in tables.calendars.items():
        calendars[u32(L.calendar_index(bank, lb_id, epoch))] = np.array(slots, "=u2").tobytes()
    members = {}
    for (lb_id, member_id), m in tables.members.items():
        ifindex = 0 if m.drop else egress(m.ip)
        members[u32(L.member_index(bank, lb_id, member_id))] = _member_value(m, ifindex, resolve_macs)
    return {
        "lbs": {u32(L.lb_index(bank, i)): v.tobytes() for i, v in lbs.items()},
        "dests": dests,
        "senders": {addr_key(bank, ip, lb_id): PRESENT for lb_id, ip in tables.senders},
        "calendars": calendars,
        "members": members,
    }


def empty_image() -> Image:
    return {name: {} for name in ARRAY_MAPS + HASH_MAPS}


def changes(old: Image, new: Image) -> list[tuple[str, bytes, bytes | None]]:
    """(map, key, value) writes turning `old` into `new`; value None = delete (hash maps only).
    Deletes come first, so a hash map never needs room for both the old and the new entries."""
    out: list[tuple[str, bytes, bytes | None]] = []
    for name in ARRAY_MAPS + HASH_MAPS:
        a: Mapping[bytes, bytes] = old.get(name, {})
        b: Mapping[bytes, bytes] = new.get(name, {})
        for k in a.keys() - b.keys():
            out.append((name, k, EMPTY[name] if name in EMPTY else None))
    for name in ARRAY_MAPS + HASH_MAPS:
        a, b = old.get(name, {}), new.get(name, {})
        out.extend((name, k, v) for k, v in b.items() if a.get(k) != v)
    return out
