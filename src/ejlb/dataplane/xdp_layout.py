"""Layout of the XDP data plane's BPF maps: the single definition for bpf/ejlb_xdp.c and the loader.

`bpf/ejlb_xdp_layout.h` is generated from this module (`python -m ejlb.dataplane.xdp_layout >
bpf/ejlb_xdp_layout.h`; a test keeps it current): the table sizes, verdict codes and counter indices
come from `ejlb.dataplane.tables`, and every map key and value is a numpy dtype here, emitted as a C
struct with `_Static_assert`s on its size and field offsets, so the program and the loader cannot
disagree on a byte. Values are in host byte order except addresses and MACs, which stay in network
order so that the program compares them with packet bytes directly.

Maps (every table map holds two banks; `bank` is the first index of each key):

    ctrl        ARRAY[1]                    CTRL: the committed bank and flags
    lbs         ARRAY[2 * NUM_LBS]          LB: own MAC/IPs, slot bits/xor, the 4 epoch ranges
    dests       HASH  ADDR_KEY -> u32       destination filter: (bank, family, IP) -> LB id
    senders     HASH  ADDR_KEY -> u8        allow-list: (bank, family, LB id, source IP)
    calendars   ARRAY[2 * NUM_LBS * NUM_EPOCHS]               CALENDAR: 512 member ids, 0xFFFF unassigned
    members     ARRAY[2 * NUM_LBS * MAX_MEMBERS]              MEMBER: where to send, or drop
    stats       PERCPU_ARRAY[NUM_LBS + 1]   STATS: per-LB counters and that LB's member counters;
                                            entry NUM_LBS holds the global drops
    fence       ARRAY_OF_MAPS[1]            written only to wait for running programs (see xdp.py)
"""
from __future__ import annotations

import numpy as np

from ejlb.dataplane.tables import (
    GLOBAL_COUNTERS,
    LB_COUNTERS,
    MAX_MEMBERS,
    MEMBER_COUNTERS,
    NUM_EPOCHS,
    NUM_LBS,
    UNASSIGNED,
    Drop,
)
from ejlb.wire import CALENDAR_SLOTS, DATA_PORT_MAX, DATA_PORT_MIN

BANKS = 2
MAX_SENDERS = 4096  # allow-list entries per bank (the deployed FPGA: 256 IPv4 + 256 IPv6)
MAX_DESTS = 2 * NUM_LBS  # an IPv4 and an IPv6 address per LB instance

FAMILY_NONE, FAMILY_V4, FAMILY_V6 = 0, 4, 6
MEMBER_KEEP_LB_HEADER = 1  # MEMBER.flags bits
MEMBER_DROP = 2
MEMBER_RESOLVE_MAC = 4  # no MAC in the table: the kernel's FIB and neighbour table give both MACs
EPOCH_VALID, EPOCH_OPEN_END, EPOCH_CATCH_ALL = 1, 2, 4  # EPOCH.flags bits
CTRL_PASS_OTHER = 1  # CTRL.flags: frames of no LB (parse failures, foreign destinations) go to the host stack
STATS_GLOBAL = NUM_LBS  # stats entry of the drops counted before an LB is known

# Counter vector of a stats entry: LB_COUNTERS by name; the global entry uses the same vector,
# indexed by the drop's position in GLOBAL_COUNTERS (they are its first two names, see below).
N_LB_COUNTERS = len(LB_COUNTERS)
FIRST_DROP_COUNTER = LB_COUNTERS.index(Drop.NO_LB_HDR.counter)

EPOCH = np.dtype([("start", "=u8"), ("end", "=u8"), ("flags", "u1"), ("pad", "u1", (7,))])
LB = np.dtype([
    ("mac", "u1", (6,)), ("slot_xor", "=u2"), ("slot_bits", "u1"), ("pad", "u1", (3,)),
    ("ipv4", "u1", (4,)), ("ipv6", "u1", (16,)), ("epochs", EPOCH, (NUM_EPOCHS,)),
])
MEMBER = np.dtype([
    ("mac", "u1", (6,)), ("family", "u1"), ("flags", "u1"), ("ip", "u1", (16,)),
    ("base_port", "=u2"), ("port_bits", "u1"), ("pad", "u1"), ("ifindex", "=u4"),
])
ADDR_KEY = np.dtype([("bank", "u1"), ("family", "u1"), ("lb", "u1"), ("pad", "u1"), ("ip", "u1", (16,))])
CTRL = np.dtype([("bank", "=u4"), ("flags", "=u4")])
CALENDAR = np.dtype([("slot", "=u2", (CALENDAR_SLOTS,))])
STATS = np.dtype([("lb", "=u8", (N_LB_COUNTERS,)), ("member", "=u8", (MAX_MEMBERS, len(MEMBER_COUNTERS)))])

STRUCTS = {
    "epoch": EPOCH, "lb": LB, "member": MEMBER, "addr_key": ADDR_KEY, "ctrl": CTRL, "calendar": CALENDAR, "stats": STATS,
}


def lb_index(bank: int, lb_id: int) -> int:
    return bank * NUM_LBS + lb_id


def calendar_index(bank: int, lb_id: int, epoch: int) -> int:
    return (bank * NUM_LBS + lb_id) * NUM_EPOCHS + epoch


def member_index(bank: int, lb_id: int, member_id: int) -> int:
    return (bank * NUM_LBS + lb_id) * MAX_MEMBERS + member_id


def _check_layout() -> None:
    """Every field naturally aligned, so a plain C struct has exactly the dtype's layout."""
    for name, dt in STRUCTS.items():
        for field, (sub, off) in dt.fields.items():
            align = sub.base.itemsize if sub.base.fields is None else 8
            assert off % align == 0, f"{name}.{field} at {off} is not {align}-aligned"
        assert dt.itemsize % 8 == 0 or name in ("addr_key",), f"{name}: size {dt.itemsize}"
    assert GLOBAL_COUNTERS == (Drop.PARSE_FAIL.counter, Drop.NOT_LB.counter)
    drops = [d.counter for d in Drop if d > Drop.NOT_LB]
    assert list(LB_COUNTERS[FIRST_DROP_COUNTER:]) == drops, "drop counters follow Drop's order"


_check_layout()

_C_TYPES = {"u1": "__u8", "u2": "__u16", "u4": "__u32", "u8": "__u64"}


def _c_type(dt: np.dtype) -> str:
    return _C_TYPES[f"u{dt.itemsize}"]


def _c_struct(name: str, dt: np.dtype) -> list[str]:
    lines = [f"struct ejlb_xdp_{name} {{"]
    for field, (sub, off) in dt.fields.items():
        base, shape = sub.base, sub.shape
        ctype = f"struct ejlb_xdp_{[n for n, d in STRUCTS.items() if d == base][0]}" if base.fields else _c_type(base)
        dims = "".join(f"[{n}]" for n in shape)
        lines.append(f"    {ctype} {field}{dims};")
    lines.append("};")
    lines.append(f"_Static_assert(sizeof(struct ejlb_xdp_{name}) == {dt.itemsize}, \"{name} size\");")
    for field, (_, off) in dt.fields.items():
        lines.append(f"_Static_assert(__builtin_offsetof(struct ejlb_xdp_{name}, {field}) == {off}, \"{name}.{field}\");")
    return lines


def c_header() -> str:
    """Text of bpf/ejlb_xdp_layout.h."""
    defines = {
        "NUM_LBS": NUM_LBS, "NUM_EPOCHS": NUM_EPOCHS, "MAX_MEMBERS": MAX_MEMBERS, "SLOTS": CALENDAR_SLOTS,
        "UNASSIGNED": f"0x{UNASSIGNED:04x}", "BANKS": BANKS, "MAX_SENDERS": MAX_SENDERS, "MAX_DESTS": MAX_DESTS,
        "DATA_PORT_MIN": DATA_PORT_MIN, "DATA_PORT_MAX": DATA_PORT_MAX,
        "FAMILY_V4": FAMILY_V4, "FAMILY_V6": FAMILY_V6,
        "MEMBER_KEEP_LB_HEADER": MEMBER_KEEP_LB_HEADER, "MEMBER_DROP": MEMBER_DROP,
        "MEMBER_RESOLVE_MAC": MEMBER_RESOLVE_MAC,
        "EPOCH_VALID": EPOCH_VALID, "EPOCH_OPEN_END": EPOCH_OPEN_END, "EPOCH_CATCH_ALL": EPOCH_CATCH_ALL,
        "CTRL_PASS_OTHER": CTRL_PASS_OTHER, "STATS_GLOBAL": STATS_GLOBAL,
        "N_LB_COUNTERS": N_LB_COUNTERS, "FIRST_DROP_COUNTER": FIRST_DROP_COUNTER,
        "N_MEMBER_COUNTERS": len(MEMBER_COUNTERS),
    }
    lines = [
        "/* Generated by `python -m ejlb.dataplane.xdp_layout > bpf/ejlb_xdp_layout.h`"
        " from src/ejlb/dataplane/xdp_layout.py. Do not edit. */",
        "#ifndef EJLB_XDP_LAYOUT_H",
        "#define EJLB_XDP_LAYOUT_H",
        *(f"#define EJLB_XDP_{k} {v}" for k, v in defines.items()),
        *(f"#define EJLB_DROP_{d.name} {d.value}" for d in Drop),
        *(f"#define EJLB_XDP_C_{n.upper()} {i}" for i, n in enumerate(LB_COUNTERS)),
        *(f"#define EJLB_XDP_C_{n.upper()} {i}" for i, n in enumerate(GLOBAL_COUNTERS)),
        *(f"#define EJLB_XDP_M_{n.upper()} {i}" for i, n in enumerate(MEMBER_COUNTERS)),
    ]
    for name, dt in STRUCTS.items():
        lines += _c_struct(name, dt)
    lines += ["#endif", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(c_header(), end="")
