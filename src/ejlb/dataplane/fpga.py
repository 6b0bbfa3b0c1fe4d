"""PYNQ driver of the HDL load balancer (hdl/ejlb_lb.sv) and the `fpga` control-plane backend.

Three layers, so that the same code programs a board and the cocotb simulation:

- `RegisterPlan` (sans-I/O): turns a `TableDiff` into the register writes of the shared register
  map (`ejlb.dataplane.regmap`) -- shadow writes, commit, replay for the double-banked RAMs -- and
  decodes counter words into `Counters`. It owns the sender-CAM slot allocation.
- `EjlbLB`, a pynq `DefaultIP` bound by VLNV: executes a plan through `self.read`/`self.write`
  (MMIO), on a board or on any pynq `Device` with the REGISTER_RW capability (fpga_sim.py).
- `FpgaBackend`: the `Backend` protocol (installed / apply / counters / close) over an `EjlbLB`.
"""
from __future__ import annotations

import time
from typing import Callable

from ejlb.dataplane import regmap as rm
from ejlb.dataplane.tables import (
    GLOBAL_COUNTERS, LB_COUNTERS, MEMBER_COUNTERS, NUM_EPOCHS, UNASSIGNED, Counters, EpochRange,
    LBInstance, Member, SenderLimit, TableDiff, TableError, Tables, apply,
)

Write = tuple[int, int]  # (byte address, 32-bit value)


def _ip_words(ip) -> list[int]:
    """128-bit address as IP0..IP3 (IPv4 in IP3)."""
    v = int(ip)
    return [(v >> (96 - 32 * k)) & 0xFFFFFFFF for k in range(4)]


def _mac_words(mac: bytes) -> tuple[int, int]:
    return int.from_bytes(mac[:2], "big"), int.from_bytes(mac[2:], "big")


def lb_writes(lb_id: int, inst: LBInstance | None) -> list[Write]:
    b = rm.LB
    if inst is None:
        return [(b.addr(lb_id, "CTRL"), 0)]
    hi, lo = _mac_words(inst.mac)
    ctrl = b.pack("CTRL", V4_VALID=inst.ipv4 is not None, V6_VALID=inst.ipv6 is not None,
                  SLOT_BITS=inst.slot_bits, SLOT_XOR=inst.slot_xor)
    w = [(b.addr(lb_id, "MAC_HI"), hi), (b.addr(lb_id, "MAC_LO"), lo),
         (b.addr(lb_id, "IPV4"), int(inst.ipv4) if inst.ipv4 is not None else 0)]
    w += [(b.addr(lb_id, f"IP{k}"), v) for k, v in enumerate(_ip_words(inst.ipv6 or 0))]
    return w + [(b.addr(lb_id, "CTRL"), ctrl)]


def epoch_writes(lb_id: int, epoch: int, rng: EpochRange | None) -> list[Write]:
    b, i = rm.EPOCH, lb_id * NUM_EPOCHS + epoch
    if rng is None:
        return [(b.addr(i, "CTRL"), 0)]
    end = rng.end or 0
    return [
        (b.addr(i, "START_LO"), rng.start & 0xFFFFFFFF), (b.addr(i, "START_HI"), rng.start >> 32),
        (b.addr(i, "END_LO"), end & 0xFFFFFFFF), (b.addr(i, "END_HI"), end >> 32),
        (b.addr(i, "CTRL"), b.pack("CTRL", VALID=1, CATCH_ALL=rng.catch_all, BOUNDED=rng.end is not None)),
    ]


def calendar_writes(lb_id: int, epoch: int, cal: tuple[int, ...] | None) -> list[Write]:
    cal = cal if cal is not None else (UNASSIGNED,) * (2 * 256)
    base = (lb_id * NUM_EPOCHS + epoch) * (len(cal) // 2)
    return [(rm.CALENDAR.addr(base + k), cal[2 * k] | cal[2 * k + 1] << 16) for k in range(len(cal) // 2)]


def member_writes(lb_id: int, member_id: int, m: Member | None) -> list[Write]:
    b, i = rm.MEMBER, (lb_id << rm.MEMBER_ID_BITS) | member_id
    if m is None:
        return [(b.addr(i, "CTRL"), 0)]
    hi, lo = _mac_words(m.mac)
    w = [(b.addr(i, "MAC_HI"), hi), (b.addr(i, "MAC_LO"), lo)]
    w += [(b.addr(i, f"IP{k}"), v) for k, v in enumerate(_ip_words(m.ip))]
    ctrl = b.pack("CTRL", VALID=1, DROP=m.drop, KEEP_LB=m.keep_lb_header, V6=m.ip.version == 6,
                  PORT_BITS=m.port_bits, BASE_PORT=m.base_port)
    return w + [(b.addr(i, "CTRL"), ctrl)]


class RegisterPlan:
    """Sans-I/O state of one programmed LB: what is installed, which CAM slot holds which sender.

    `plan(diff)` returns (shadow_writes, replay_writes): write the first list, commit, wait until
    not busy, write the second (the RAM-table writes again, for the bank that became shadow)."""

    def __init__(self, n_senders: int = rm.N_SENDERS) -> None:
        self.installed = Tables()
        self._slots: dict[tuple[int, object], int] = {}
        self._n_senders = n_senders

    def reset_writes(self, rams: bool = True) -> tuple[list[Write], list[Write]]:
        """(shadow, replay) writes that empty every table. `rams=False` skips the calendar and
        member RAMs (16 K writes per bank), for a design known to have just powered up with zero RAM."""
        self.installed, self._slots = Tables(), {}
        w = [a for i in range(rm.LB.count) for a in lb_writes(i, None)]
        w += [a for i in range(rm.EPOCH.count) for a in epoch_writes(i // NUM_EPOCHS, i % NUM_EPOCHS, None)]
        w += [(rm.SENDER.addr(i, "CTRL"), 0) for i in range(rm.SENDER.count)]
        ram: list[Write] = []
        if rams:
            ram += [(rm.CALENDAR.addr(i), UNASSIGNED | UNASSIGNED << 16) for i in range(rm.CALENDAR.count)]
            ram += [(rm.MEMBER.addr(i, "CTRL"), 0) for i in range(rm.MEMBER.count)]
        return w + ram, ram

    def plan(self, d: TableDiff) -> tuple[list[Write], list[Write]]:
        new = apply(self.installed, d)  # validates the whole diff before any write
        small: list[Write] = []
        ram: list[Write] = []
        for lb_id in d.delete.get("lbs", ()):
            small += lb_writes(lb_id, None)
        for lb_id, inst in d.set.get("lbs", {}).items():
            small += lb_writes(lb_id, inst)
        for key in d.delete.get("epochs", ()):
            small += epoch_writes(*key, None)
        for key, rng in d.set.get("epochs", {}).items():
            small += epoch_writes(*key, rng)
        for key in d.delete.get("calendars", ()):
            ram += calendar_writes(*key, None)
        for key, cal in d.set.get("calendars", {}).items():
            ram += calendar_writes(*key, cal)
        for key in d.delete.get("members", ()):
            ram += member_writes(*key, None)
        for key, m in d.set.get("members", {}).items():
            if key[1] >= 1 << rm.MEMBER_ID_BITS:
                raise TableError(f"member_id={key[1]}: the FPGA holds ids 0..{(1 << rm.MEMBER_ID_BITS) - 1}")
            ram += member_writes(*key, m)
        slots = dict(self._slots)
        for pair in d.senders_remove:
            slot = slots.pop(pair, None)
            if slot is not None:
                small.append((rm.SENDER.addr(slot, "CTRL"), 0))
        free = sorted(set(range(self._n_senders)) - set(slots.values()))
        for lb_id, ip in sorted(d.senders_add, key=lambda p: (p[0], p[1].version, int(p[1]))):
            if not free:
                raise TableError(f"senders={len(new.senders)}: the FPGA allow-list holds {self._n_senders}")
            slot = slots[(lb_id, ip)] = free.pop(0)
            words = _ip_words(ip)
            small += [(rm.SENDER.addr(slot, f"IP{k}"), v) for k, v in enumerate(words)]
            small.append((rm.SENDER.addr(slot, "CTRL"),
                          rm.SENDER.pack("CTRL", VALID=1, V6=ip.version == 6, LB=lb_id)))
        self._slots = slots
        self.installed = new
        return small + ram, ram

    @staticmethod
    def counter_reads(installed: Tables) -> list[tuple[str, int]]:
        """(name, LO address) of every counter worth reading for `installed`."""
        out = [(f"glob.{n}", rm.GLOBAL_CNT.addr(0, f"{n.upper()}_LO")) for n in GLOBAL_COUNTERS]
        for lb_id in range(rm.LB.count):
            out += [(f"lb.{lb_id}.{n}", rm.LB_CNT.addr(lb_id, f"{n.upper()}_LO")) for n in LB_COUNTERS]
        for lb_id, mid in sorted(installed.members):
            i = (lb_id << rm.MEMBER_ID_BITS) | mid
            out += [(f"member.{lb_id}.{mid}.{n}", rm.MEMBER_CNT.addr(i, f"{n.upper()}_LO")) for n in MEMBER_COUNTERS]
        return out

    @staticmethod
    def counters_from(values: dict[str, int]) -> Counters:
        c = Counters()
        for name, v in values.items():
            parts = name.split(".")
            if parts[0] == "glob":
                c.glob[parts[1]] = v
            elif parts[0] == "lb":
                if v or int(parts[1]) in c.lb:
                    c.lb_counters(int(parts[1]))[parts[2]] = v
            else:
                c.member_counters(int(parts[1]), int(parts[2]))[parts[3]] = v
        return c


def run_plan(plan: RegisterPlan, d: TableDiff, read: Callable[[int], int], write: Callable[[int, int], None],
             timeout_s: float = 1.0) -> None:
    """Install `d` through register accessors: shadow writes, commit, wait, replay."""
    shadow, replay = plan.plan(d)
    for addr, value in shadow:
        write(addr, value)
    commit(read, write, timeout_s)
    for addr, value in replay:
        write(addr, value)


def commit(read: Callable[[int], int], write: Callable[[int, int], None], timeout_s: float = 1.0) -> None:
    write(rm.CTRL.addr(0, "COMMIT"), rm.CTRL.pack("COMMIT", GO=1))
    deadline = time.monotonic() + timeout_s
    busy = rm.CTRL.field("BUSY")
    while read(rm.CTRL.addr(0, "STATUS")) >> busy.lsb & 1:
        if time.monotonic() > deadline:
            raise TimeoutError("ejlb_lb: commit still busy")


def read_counters(installed: Tables, read: Callable[[int], int]) -> Counters:
    values = {}
    for name, lo in RegisterPlan.counter_reads(installed):
        low = read(lo)  # latches the high word
        values[name] = low | read(lo + 4) << 32
    return RegisterPlan.counters_from(values)


def check_identity(read: Callable[[int], int]) -> int:
    """Raise unless the IP answers with the ejlb ID; returns its data width in bytes."""
    got = read(rm.CTRL.addr(0, "ID"))
    if got != rm.ID_VALUE:
        raise RuntimeError(f"ejlb_lb.ID=0x{got:08x}: expected 0x{rm.ID_VALUE:08x}; wrong IP or address")
    f = rm.CTRL.field("DATA_BYTES")
    return read(rm.CTRL.addr(0, "PARAMS")) >> f.lsb & f.mask


try:  # the driver class needs pynq; the plan above does not
    from pynq import DefaultIP as _DefaultIP
except ImportError:  # pragma: no cover - pynq is an optional dependency
    _DefaultIP = object


class EjlbLB(_DefaultIP):
    """pynq driver, bound to the IP by VLNV when an overlay is loaded (`overlay.ejlb_lb_0`)."""

    bindto = [rm.VLNV]

    def __init__(self, description):
        super().__init__(description)
        self.data_bytes = check_identity(self.read)
        self.plan = RegisterPlan()

    def install(self, d: TableDiff) -> None:
        run_plan(self.plan, d, self.read, self.write)

    def clear(self, rams: bool = True) -> None:
        """Empty every table in both banks (stale RAM entries could otherwise be reached by a
        calendar that names a member the new tables do not define)."""
        shadow, replay = self.plan.reset_writes(rams)
        for addr, value in shadow:
            self.write(addr, value)
        commit(self.read, self.write)
        for addr, value in replay:
            self.write(addr, value)

    def counters(self) -> Counters:
        return read_counters(self.plan.installed, self.read)


def ip_description(device, base: int = 0) -> dict:
    """The description dict DefaultIP expects, for a device without a bitstream's metadata."""
    return {"phys_addr": base, "addr_range": 1 << rm.ADDR_WIDTH, "device": device}


class FpgaBackend:
    """Control-plane backend over an `EjlbLB` (board: `fpga`; simulation: `fpga-sim`)."""

    sender_limit = SenderLimit(total=rm.N_SENDERS)  # the register map's CAM, shared by LBs and families

    def __init__(self, ip: EjlbLB, on_close: Callable[[], None] | None = None) -> None:
        self.ip = ip
        self._on_close = on_close

    @property
    def installed(self) -> Tables:
        return self.ip.plan.installed

    def apply(self, d: TableDiff) -> None:
        self.ip.install(d)

    def counters(self) -> Counters:
        return self.ip.counters()

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()


def open_board(bitfile: str, ip_name: str = "ejlb_lb_0", download: bool = True) -> FpgaBackend:
    """`fpga` backend: load the overlay on a PYNQ board and drive its ejlb_lb IP."""
    from pynq import Overlay

    ol = Overlay(bitfile, download=download)
    ip = getattr(ol, ip_name)
    if not isinstance(ip, EjlbLB):
        raise RuntimeError(f"{ip_name}: bound to {type(ip).__name__}, not EjlbLB (VLNV {rm.VLNV}?)")
    ip.clear()
    return FpgaBackend(ip)


def create_backend(config=None, *, bitfile: str | None = None, ip_name: str = "ejlb_lb_0",
                   download: bool = True) -> FpgaBackend:
    """Factory of the `fpga` backend (ejlb.dataplane.backends)."""
    bitfile = bitfile or getattr(config, "fpga_bitfile", None)
    if not bitfile:
        raise ValueError("bitfile=None: the fpga backend needs the overlay's .bit (with its .hwh)")
    return open_board(bitfile, ip_name, download)
