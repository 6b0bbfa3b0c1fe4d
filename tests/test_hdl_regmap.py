"""The HDL register map (single source in ejlb.dataplane.regmap) and the driver's sans-I/O plan."""
from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from ejlb.dataplane import corpus, regmap as rm
from ejlb.dataplane.fpga import RegisterPlan, check_identity, read_counters, run_plan
from ejlb.dataplane.tables import Counters, EpochRange, Member, TableError, Tables, diff

REPO = Path(__file__).resolve().parent.parent


def test_generated_sv_package_is_current():
    text = (REPO / "hdl" / "ejlb_regmap_pkg.sv").read_text()
    assert text == rm.sv_package(), "run: python -m ejlb.dataplane.regmap > hdl/ejlb_regmap_pkg.sv"


def test_blocks_do_not_overlap_and_fit_the_window():
    spans = sorted((b.base, b.end) for b in rm.BLOCKS)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    assert spans[-1][1] <= 1 << rm.ADDR_WIDTH


def test_addressing_and_packing_name_the_problem():
    assert rm.MEMBER.addr(3, "IP3") == rm.MEMBER.base + 3 * rm.MEMBER.stride + 4 * 6
    with pytest.raises(IndexError, match="LB index=8"):
        rm.LB.addr(8)
    with pytest.raises(ValueError, match="SLOT_BITS=32"):
        rm.LB.pack("CTRL", SLOT_BITS=32)
    assert rm.MEMBER.pack("CTRL", VALID=1, BASE_PORT=0xABCD) == 1 | 0xABCD << 16


class FakeRegs:
    """A register file that behaves like ejlb_tables: shadow for writes, swap on commit."""

    def __init__(self):
        self.shadow, self.active, self.bank = {}, {}, 0
        self.ram = ({}, {})

    def write(self, addr, value):
        assert 0 <= value < 1 << 32 and addr % 4 == 0
        if addr == rm.CTRL.addr(0, "COMMIT"):
            self.active = dict(self.shadow)
            self.bank ^= 1
        elif addr >= rm.CALENDAR.base:
            self.ram[self.bank ^ 1][addr] = value
        else:
            self.shadow[addr] = value

    def read(self, addr):
        if addr == rm.CTRL.addr(0, "ID"):
            return rm.ID_VALUE
        if addr == rm.CTRL.addr(0, "PARAMS"):
            return 64
        return 0


def test_plan_programs_both_banks_and_the_cam():
    regs = FakeRegs()
    t = corpus.tables()
    plan = RegisterPlan()
    run_plan(plan, diff(Tables(), t), regs.read, regs.write)
    assert plan.installed == t
    assert regs.ram[0] == regs.ram[1] and regs.ram[0]  # replayed into the new shadow bank
    ctrl = [v for a, v in regs.active.items() if rm.SENDER.base <= a < rm.SENDER.end and (a - rm.SENDER.base) % rm.SENDER.stride == 0]
    assert sum(v & 1 for v in ctrl) == len(t.senders)
    # one member entry, word by word
    m = t.members[(0, 1)]
    i = (0 << rm.MEMBER_ID_BITS) | 1
    words = [regs.ram[regs.bank][rm.MEMBER.addr(i, w)] for w in rm.MEMBER.words]
    assert words[0] == rm.MEMBER.pack("CTRL", VALID=1, PORT_BITS=m.port_bits, BASE_PORT=m.base_port)
    assert words[1:3] == [int.from_bytes(m.mac[:2], "big"), int.from_bytes(m.mac[2:], "big")]
    assert words[6] == int(m.ip)
    # removing a sender frees its CAM slot; removing a member clears it
    smaller = Tables(lbs=t.lbs, senders=frozenset(list(t.senders)[1:]), epochs=t.epochs, calendars=t.calendars,
                     members={k: v for k, v in t.members.items() if k != (0, 1)})
    shadow, replay = plan.plan(diff(t, smaller))
    assert (rm.MEMBER.addr(i, "CTRL"), 0) in replay
    assert sum(1 for a, v in shadow if rm.SENDER.base <= a < rm.SENDER.end and v == 0) == 1


def test_plan_rejects_what_the_fpga_cannot_hold():
    plan = RegisterPlan(n_senders=2)
    ips = [ipaddress.ip_address(f"10.0.0.{k}") for k in range(3)]
    with pytest.raises(TableError, match="allow-list holds 2"):
        plan.plan(diff(Tables(), Tables(senders=frozenset((0, ip) for ip in ips))))
    assert plan.installed == Tables()  # nothing half-installed
    with pytest.raises(TableError, match="epoch.start"):
        EpochRange(-1)


def test_identity_check_names_a_wrong_ip():
    with pytest.raises(RuntimeError, match="ejlb_lb.ID=0x00000000"):
        check_identity(lambda addr: 0)
    assert check_identity(FakeRegs().read) == 64


def test_counters_decode_low_then_high():
    t = Tables(members={(2, 5): Member(ipaddress.ip_address("10.1.1.1"), 20000)})
    values = {}
    for name, lo in RegisterPlan.counter_reads(t):
        values[lo], values[lo + 4] = len(values) + 1, 7  # distinct low words, high word 7
    c = read_counters(t, values.__getitem__)
    assert isinstance(c, Counters)
    assert c.member[(2, 5)]["tx_packets"] >> 32 == 7
    assert c.glob["drop_parse_fail"] == 7 << 32 | 1


def test_fpga_backend_needs_a_bitfile():
    from ejlb.dataplane.backends import create_backend

    with pytest.raises(ValueError, match="bitfile=None"):
        create_backend("fpga")


def test_pynq_driver_through_a_register_rw_device():
    """The real pynq DefaultIP/MMIO path (REGISTER_RW hook) on a software register file."""
    from ejlb.dataplane.fpga_sim import SimDevice, open_sim

    regs = FakeRegs()
    dev = SimDevice(regs.read, regs.write)
    backend = open_sim(dev)
    t = corpus.tables()
    backend.apply(diff(backend.installed, t))
    assert backend.installed == t
    assert regs.ram[0] == regs.ram[1]
    lb0 = regs.active[rm.LB.addr(0, "IPV4")]
    assert lb0 == int(t.lbs[0].ipv4)
    assert dev.accesses > 2 * 256 * len(t.calendars)
    backend.close()


def test_readme_register_table_is_current():
    assert rm.markdown() in (REPO / "hdl" / "README.md").read_text()


def test_clear_empties_both_ram_banks():
    from ejlb.dataplane.fpga import EjlbLB, ip_description
    from ejlb.dataplane.fpga_sim import SimDevice

    regs = FakeRegs()
    ip = EjlbLB(ip_description(SimDevice(regs.read, regs.write)))
    ip.clear(rams=True)
    for bank in regs.ram:
        assert bank[rm.CALENDAR.addr(rm.CALENDAR.count - 1)] == 0xFFFFFFFF
        assert bank[rm.MEMBER.addr(rm.MEMBER.count - 1, "CTRL")] == 0
        assert len(bank) == rm.CALENDAR.count + rm.MEMBER.count


def _active_view(regs: FakeRegs) -> dict:
    """What the data path would see: active register tables (sender CAM as a set) and the
    active RAM bank, with never-written words read as their cleared value."""
    cam = set()
    for i in range(rm.SENDER.count):
        ctrl = regs.active.get(rm.SENDER.addr(i, "CTRL"), 0)
        if ctrl & 1:
            ip = 0
            for k in range(4):
                ip = ip << 32 | regs.active.get(rm.SENDER.addr(i, f"IP{k}"), 0)
            cam.add((ctrl >> 4 & 7, ctrl >> 1 & 1, ip))
    small = {}
    for b in (rm.LB, rm.EPOCH):  # an entry with CTRL = 0 is off: its other words do not matter
        for i in range(b.count):
            if regs.active.get(b.addr(i, "CTRL"), 0):
                small.update({b.addr(i, w): regs.active.get(b.addr(i, w), 0) for w in b.words})
    bank = regs.ram[regs.bank]
    ram = {a: v for a, v in bank.items()
           if not ((rm.CALENDAR.base <= a < rm.CALENDAR.end and v == 0xFFFFFFFF)
                   or (rm.MEMBER.base <= a < rm.MEMBER.end and (a - rm.MEMBER.base) % rm.MEMBER.stride == 0 and v == 0))}
    live_members = {a - (a - rm.MEMBER.base) % rm.MEMBER.stride for a in ram if rm.MEMBER.base <= a < rm.MEMBER.end
                    and (a - rm.MEMBER.base) % rm.MEMBER.stride == 0}
    ram = {a: v for a, v in ram.items()  # words of cleared members do not matter
           if not rm.MEMBER.base <= a < rm.MEMBER.end or a - (a - rm.MEMBER.base) % rm.MEMBER.stride in live_members}
    return {"cam": cam, "small": small, "ram": ram}


def _subset(t: Tables, keep) -> Tables:
    return Tables(
        lbs={k: v for k, v in t.lbs.items() if keep(("lb", k))},
        senders=frozenset(s for s in t.senders if keep(("s", s))),
        epochs={k: v for k, v in t.epochs.items() if keep(("e", k))},
        calendars={k: v for k, v in t.calendars.items() if keep(("c", k))},
        members={k: v for k, v in t.members.items() if keep(("m", k))},
    )


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4))
def test_any_diff_sequence_leaves_what_a_fresh_install_leaves(seeds):
    """Installing tables step by step (adds, changes, deletes) leaves the registers the data path
    reads exactly as installing the final tables from scratch."""
    import random as _random

    base = corpus.tables()
    regs, plan = FakeRegs(), RegisterPlan()
    for seed in seeds:
        rng = _random.Random(seed)
        target = _subset(base, lambda key: rng.random() < 0.7)
        run_plan(plan, diff(plan.installed, target), regs.read, regs.write)
    fresh, fresh_plan = FakeRegs(), RegisterPlan()
    run_plan(fresh_plan, diff(Tables(), plan.installed), fresh.read, fresh.write)
    assert _active_view(regs) == _active_view(fresh)
