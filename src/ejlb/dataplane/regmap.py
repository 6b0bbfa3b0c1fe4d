"""Register map of the HDL load balancer: the single definition.

`hdl/ejlb_regmap_pkg.sv` is generated from this module (`python -m ejlb.dataplane.regmap`), and the
PYNQ driver (`ejlb.dataplane.fpga`) encodes table entries with the same `Block`s, so the RTL and the
driver cannot disagree on an address or a bit. A test keeps the generated package current.

AXI4-Lite, 32-bit data, byte addresses. Table blocks are arrays of entries (`count` entries of
`stride` bytes, words at `4 * word`). Writes to table blocks land in the *shadow* copy; a write of 1
to CTRL.COMMIT makes every shadow table active at once, between two packets (the RTL snapshots all
small tables in one pipeline stage and the bank of the RAM tables with them). The calendar and member
RAMs are double-banked: after a commit the new shadow bank holds the *previous* contents, so the
driver replays its writes there (see fpga.py); the small register tables copy shadow -> active and
need no replay. Counters are 64-bit: reading the low word latches the high word (read low first).
"""
from __future__ import annotations

from dataclasses import dataclass

from ejlb.dataplane.tables import GLOBAL_COUNTERS, Drop, LB_COUNTERS, MAX_MEMBERS, MEMBER_COUNTERS, NUM_EPOCHS, NUM_LBS
from ejlb.wire import CALENDAR_SLOTS

ADDR_WIDTH = 19  # 512 KiB window
ID_VALUE = 0x454A4C42  # "EJLB"
VERSION_VALUE = 0x00010000
VLNV = "ejlb.org:ejlb:ejlb_lb:1.0"
N_SENDERS = 64  # allow-list CAM entries (IPv4 and IPv6 share them)
MEMBER_ID_BITS = (MAX_MEMBERS - 1).bit_length()  # 10: member ids 0..1023 per LB


@dataclass(frozen=True)
class Field:
    name: str
    word: int
    lsb: int
    width: int

    @property
    def mask(self) -> int:
        return (1 << self.width) - 1


@dataclass(frozen=True)
class Block:
    name: str
    base: int
    stride: int
    count: int
    words: tuple[str, ...]  # word names, word k at byte offset 4*k of an entry
    fields: tuple[Field, ...] = ()
    writable: bool = True

    def addr(self, index: int = 0, word: str | int = 0) -> int:
        if not 0 <= index < self.count:
            raise IndexError(f"{self.name} index={index}: must be 0..{self.count - 1}")
        w = self.words.index(word) if isinstance(word, str) else word
        return self.base + index * self.stride + 4 * w

    @property
    def end(self) -> int:
        return self.base + self.stride * self.count

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)

    def pack(self, word: str, **values: int) -> int:
        """A control word from field values; names a field whose value does not fit."""
        w = self.words.index(word)
        out = 0
        for name, v in values.items():
            f = self.field(name)
            if f.word != w:
                raise KeyError(f"{self.name}.{name} is in word {self.words[f.word]}, not {word}")
            if not 0 <= int(v) <= f.mask:
                raise ValueError(f"{self.name}.{name}={v}: does not fit {f.width} bits")
            out |= int(v) << f.lsb
        return out


def _f(name, word, lsb, width=1):
    return Field(name, word, lsb, width)


IP_WORDS = ("IP0", "IP1", "IP2", "IP3")  # 128-bit address, IP0 = most significant; IPv4 in IP3

CTRL = Block("CTRL", 0x0000, 0x40, 1,
             ("ID", "VERSION", "PARAMS", "COMMIT", "STATUS", "COMMITS"),
             (_f("DATA_BYTES", 2, 0, 8), _f("N_SENDERS", 2, 8, 8), _f("MEMBER_ID_BITS", 2, 16, 5),
              _f("GO", 3, 0), _f("ACTIVE_BANK", 4, 0), _f("BUSY", 4, 1)))
LB = Block("LB", 0x1000, 0x40, NUM_LBS,
           ("CTRL", "MAC_HI", "MAC_LO", "IPV4", "IP0", "IP1", "IP2", "IP3"),
           (_f("V4_VALID", 0, 0), _f("V6_VALID", 0, 1), _f("SLOT_BITS", 0, 8, 5), _f("SLOT_XOR", 0, 16, 16)))
EPOCH = Block("EPOCH", 0x1400, 0x20, NUM_LBS * NUM_EPOCHS,
              ("CTRL", "START_LO", "START_HI", "END_LO", "END_HI"),
              (_f("VALID", 0, 0), _f("CATCH_ALL", 0, 1), _f("BOUNDED", 0, 2)))
SENDER = Block("SENDER", 0x2000, 0x20, N_SENDERS,
               ("CTRL",) + IP_WORDS,
               (_f("VALID", 0, 0), _f("V6", 0, 1), _f("LB", 0, 4, 3)))
GLOBAL_CNT = Block("GLOBAL_CNT", 0x4000, 0x8 * len(GLOBAL_COUNTERS), 1,
                   tuple(f"{n.upper()}_{h}" for n in GLOBAL_COUNTERS for h in ("LO", "HI")), writable=False)
LB_CNT = Block("LB_CNT", 0x5000, 0x80, NUM_LBS,
               tuple(f"{n.upper()}_{h}" for n in LB_COUNTERS for h in ("LO", "HI")), writable=False)
# two member ids per word: slot 2k in bits 15:0, slot 2k+1 in bits 31:16
CALENDAR = Block("CALENDAR", 0x8000, 4, NUM_LBS * NUM_EPOCHS * CALENDAR_SLOTS // 2, ("PAIR",))
MEMBER_CNT = Block("MEMBER_CNT", 0x20000, 0x10, NUM_LBS << MEMBER_ID_BITS,
                   tuple(f"{n.upper()}_{h}" for n in MEMBER_COUNTERS for h in ("LO", "HI")), writable=False)
MEMBER = Block("MEMBER", 0x40000, 0x20, NUM_LBS << MEMBER_ID_BITS,
               ("CTRL", "MAC_HI", "MAC_LO") + IP_WORDS,
               (_f("VALID", 0, 0), _f("DROP", 0, 1), _f("KEEP_LB", 0, 2), _f("V6", 0, 3),
                _f("PORT_BITS", 0, 8, 4), _f("BASE_PORT", 0, 16, 16)))

BLOCKS = (CTRL, LB, EPOCH, SENDER, GLOBAL_CNT, LB_CNT, CALENDAR, MEMBER_CNT, MEMBER)


def _check_layout() -> None:
    spans = sorted((b.base, b.end, b.name) for b in BLOCKS)
    for (a0, a1, an), (b0, _, bn) in zip(spans, spans[1:]):
        assert a1 <= b0, f"register blocks {an} and {bn} overlap"
    assert spans[-1][1] <= 1 << ADDR_WIDTH
    for b in BLOCKS:
        assert 4 * len(b.words) <= b.stride, b.name
        assert b.stride & (b.stride - 1) == 0 and b.base % b.stride == 0, b.name


_check_layout()


def sv_package() -> str:
    """Text of hdl/ejlb_regmap_pkg.sv."""
    out = [
        "// Generated by `python -m ejlb.dataplane.regmap > hdl/ejlb_regmap_pkg.sv`",
        "// from src/ejlb/dataplane/regmap.py. Do not edit.",
        "`resetall",
        "`default_nettype none",
        "",
        "package ejlb_regmap_pkg;",
        f"  localparam int ADDR_WIDTH = {ADDR_WIDTH};",
        f"  localparam logic [31:0] ID_VALUE = 32'h{ID_VALUE:08x};",
        f"  localparam logic [31:0] VERSION_VALUE = 32'h{VERSION_VALUE:08x};",
        f"  localparam int N_SENDERS = {N_SENDERS};",
        f"  localparam int MEMBER_ID_BITS = {MEMBER_ID_BITS};",
        f"  localparam int NUM_LBS = {NUM_LBS};",
        f"  localparam int NUM_EPOCHS = {NUM_EPOCHS};",
        f"  localparam int CALENDAR_SLOTS = {CALENDAR_SLOTS};",
        f"  localparam int N_LB_COUNTERS = {len(LB_COUNTERS)};",
        f"  localparam int N_GLOBAL_COUNTERS = {len(GLOBAL_COUNTERS)};",
    ]
    for b in BLOCKS:
        out.append(f"  // {b.name}: {b.count} x {b.stride} B")
        out.append(f"  localparam int {b.name}_BASE = 'h{b.base:05x};")
        out.append(f"  localparam int {b.name}_STRIDE = {b.stride};")
        out.append(f"  localparam int {b.name}_COUNT = {b.count};")
        for k, w in enumerate(b.words):
            out.append(f"  localparam int {b.name}_W_{w} = {k};")
        for f in b.fields:
            out.append(f"  localparam int {b.name}_{f.name}_LSB = {f.lsb};")
            out.append(f"  localparam int {b.name}_{f.name}_WIDTH = {f.width};")
    for d in Drop:
        out.append(f"  localparam logic [3:0] DROP_{d.name} = 4'd{int(d)};")
    for i, n in enumerate(GLOBAL_COUNTERS):
        out.append(f"  localparam int GCNT_{n.upper()} = {i};")
    for i, n in enumerate(LB_COUNTERS):
        out.append(f"  localparam int LBCNT_{n.upper()} = {i};")
    out += ["endpackage", "", "`resetall"]
    return "\n".join(out) + "\n"


def markdown() -> str:
    """The register map as a Markdown table (hdl/README.md embeds it; a test keeps it current)."""
    rows = ["| Block | Base | Entries x stride | Words | Fields |", "|---|---|---|---|---|"]
    for b in BLOCKS:
        words = ", ".join(b.words) if len(b.words) <= 8 else f"{b.words[0]} .. {b.words[-1]} ({len(b.words)})"
        fields = ", ".join(f"{b.words[f.word]}.{f.name}[{f.lsb + f.width - 1}:{f.lsb}]" if f.width > 1
                           else f"{b.words[f.word]}.{f.name}[{f.lsb}]" for f in b.fields)
        rows.append(f"| {b.name}{'' if b.writable else ' (RO)'} | 0x{b.base:05x} | {b.count} x {b.stride} B "
                    f"| {words} | {fields or '-'} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(sv_package(), end="")
