"""cocotb tests of ejlb_lb (run by cocotb_tests/test_hdl_sim.py, one simulator run per width).
Every output frame is compared byte for byte with the reference model (ejlb.dataplane.model)."""
from __future__ import annotations

import ipaddress
import os
import random

import cocotb
from cocotb.task import bridge
from cocotb.triggers import ClockCycles, FallingEdge
from cocotbext.axi import AxiStreamFrame

from harness import DATA_WIDTH, TB, nonzero
from ejlb.control import calendar as cal
from ejlb.control import epochs as ep
from ejlb.dataplane import corpus, model, regmap as rm
from ejlb.dataplane.backends import create_backend
from ejlb.dataplane.fpga_sim import cocotb_device
from ejlb.dataplane.tables import Drop, EpochRange, LBInstance, Member, Tables, diff
from ejlb.wire import LBHeader, REHeader

CORPUS_N = int(os.environ.get("EJLB_CORPUS_N", "2000"))
LENGTH_STEP = int(os.environ.get("EJLB_LENGTH_STEP", "1"))
IP4, IP6 = ipaddress.IPv4Address, ipaddress.IPv6Address
T = corpus.tables()


def tick_for_member(lb: int, member: int, lo: int, hi: int) -> int:
    """A tick in [lo, hi) whose calendar slot of LB `lb` holds `member` (v2: slot = tick mod 512)."""
    e = T.epoch_for(lb, lo)
    inst = T.lbs[lb]
    for t in range(lo, hi):
        if T.epoch_for(lb, t) == e and T.calendars[(lb, e)][(t & 0xFFFF ^ inst.slot_xor) & ((1 << inst.slot_bits) - 1)] == member:
            return t
    raise LookupError(member)


def forwarding_tick(build, start: int = 0) -> int:
    """The first tick from `start` whose frame `build(datagram(tick))` the model forwards."""
    return next(t for t in range(start, start + 5000) if model.process(T, build(datagram(t))).forwarded)


def v4(payload: bytes, **kw) -> bytes:
    return corpus.build_frame(kw.pop("src", corpus.SENDERS[0][0]), kw.pop("dst", corpus.LB_IPV4[0]), payload, **kw)


def v6(payload: bytes, **kw) -> bytes:
    return corpus.build_frame(kw.pop("src", corpus.SENDERS[1][1]), kw.pop("dst", corpus.LB_IPV6[1]), payload, **kw)


def datagram(tick: int, n: int = 20, version: int = 2, entropy: int = 0x1234, slot_select: int = 0, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    lb = LBHeader(tick=tick, entropy=entropy, version=version, slot_select=slot_select).encode()
    return lb + REHeader(1, 0, n, 5).encode() + rng.randbytes(n)


@cocotb.test()
async def test_identity_registers(dut):
    tb = TB(dut)
    await tb.reset()
    assert await tb.read(rm.CTRL.addr(0, "ID")) == rm.ID_VALUE
    params = await tb.read(rm.CTRL.addr(0, "PARAMS"))
    assert params & 0xFF == DATA_WIDTH // 8
    assert params >> 8 & 0xFF == rm.N_SENDERS
    before = await tb.read(rm.CTRL.addr(0, "COMMITS"))
    await tb.install(T)
    assert await tb.read(rm.CTRL.addr(0, "COMMITS")) == before + 1


@cocotb.test()
async def test_deployed_lb_suite(dut):
    """The deployed LB's own test list (docs/dataplane.md), each frame with its intended verdict."""
    tb = TB(dut)
    await tb.reset()
    await tb.install(T)
    t0 = tick_for_member(0, 0, 1000, 2000)
    t_keep = tick_for_member(0, 3, 1000, 2000)
    t_hole = tick_for_member(0, 0xFFFF, 1000, 2000)
    t_missing = tick_for_member(0, corpus.MISSING_MEMBER, 1000, 2000)
    t_dropm = tick_for_member(0, 4, 1000, 2000)
    t6 = forwarding_tick(v6)
    good = datagram(t0)
    tcp = bytearray(v4(good))
    tcp[23] = 6
    cases = [
        (corpus.ip_checksum_fix(bytes(tcp), 14), Drop.PARSE_FAIL),           # TCP
        (v4(b"XX" + good[2:]), Drop.NO_LB_HDR),                               # UDP without LB header
        (v4(good, dport=16383), Drop.NO_LB_HDR),
        (v4(good, dport=32768), Drop.NO_LB_HDR),
        (v4(good[:2] + bytes([99]) + good[3:]), Drop.BAD_VERSION),
        (v4(good, ttl=1), Drop.TTL),
        (v4(good, ttl=0), Drop.TTL),
        (v6(datagram(t6), ttl=1), Drop.TTL),                                   # hop limit
        (v4(good, src=corpus.SENDERS[1][0]), Drop.BLOCKED_SRC),               # LB 1's sender
        (v6(datagram((1 << 41) + 7)), Drop.EPOCH_MISS),
        (v4(datagram(t_hole)), Drop.CALENDAR_MISS),
        (v4(datagram(t_missing)), Drop.MEMBER_MISS),
        (v4(datagram(t_dropm)), Drop.MEMBER_MISS),
        (v4(good, dport=19522), Drop.FORWARD),
        (v4(good, dport=16384), Drop.FORWARD),
        (v4(good, dport=32767), Drop.FORWARD),
        (v6(datagram(t6, 100)), Drop.FORWARD),                                # v2 IPv6
        (v4(datagram(t_keep, 33)), Drop.FORWARD),                             # keep-header member
        (v4(datagram(t0, 0)), Drop.FORWARD),                                  # 0-byte payload
        (v4(datagram(t0, 1)), Drop.FORWARD),                                  # 1-byte payload
        (v6(datagram(t6, 0)), Drop.FORWARD),
        (v6(datagram(t6, 1)), Drop.FORWARD),
    ]
    rng = random.Random(7)
    for k in range(40):  # v3 IPv6 with random ports
        cases.append((v6(datagram(rng.randrange(1 << 40), rng.randrange(200), 3, rng.randrange(1 << 16),
                                  rng.randrange(1 << 16), seed=k)), None))
    for k in range(150):  # checksum sweep: v2 IPv4 and v3 IPv6 over many payloads
        cases.append((v4(datagram(t0, rng.randrange(64), seed=1000 + k), checksum=rng.choice(["good", "zero"])), None))
        cases.append((v6(datagram(rng.randrange(1 << 40), rng.randrange(64), 3, rng.randrange(1 << 16),
                                  rng.randrange(1 << 16), seed=2000 + k)), None))
    for frame, want in cases:
        if want is not None:
            assert model.process(T, frame).verdict == want, (want, model.process(T, frame).reason)
    fwd = sum(model.process(T, f).forwarded for f, _ in cases)
    assert fwd > len(cases) // 2
    expect = await tb.send_and_check(T, [f for f, _ in cases])
    assert nonzero(await tb.counters()) == nonzero(expect)


@cocotb.test()
async def test_corpus(dut):
    """The conformance corpus with random idle and back-pressure, then all counters."""
    tb = TB(dut)
    await tb.reset()
    await tb.install(T)
    frames = [f for f, _ in corpus.frames(CORPUS_N, seed=1)]
    tb.traffic(idle=0.1, backpressure=0.2, seed=3)
    expect = await tb.send_and_check(T, frames)
    assert nonzero(await tb.counters()) == nonzero(expect)


@cocotb.test()
async def test_every_length(dut):
    """Every frame length 60..1518 (step EJLB_LENGTH_STEP) and 9000-byte jumbos, stripped and
    kept LB header, IPv4 and IPv6, back to back."""
    tb = TB(dut)
    await tb.reset()
    await tb.install(T)
    t0, t_keep = tick_for_member(0, 0, 1000, 2000), tick_for_member(0, 3, 1000, 2000)
    t6 = forwarding_tick(v6)
    frames = []
    for n in list(range(60, 1519, LENGTH_STEP)) + [9000, 9001, 9017, 9018]:
        six = n % 3 == 0
        over = (14 + 40 + 8) if six else (14 + 20 + 8)
        build = v6 if six else v4
        tick = t6 if six else (t_keep if n % 2 else t0)
        body = n - over - 36
        if body >= 0:
            data = datagram(tick, body, seed=n)
        else:
            data = LBHeader(tick=tick, entropy=n).encode() + bytes(max(0, n - over - 16))
        f = build(data)
        assert len(f) == max(n, 60) or n - over < 16, (n, len(f))
        frames.append(f)
    expect = await tb.send_and_check(T, frames)
    assert sum(expect.member[k]["tx_packets"] for k in expect.member) > len(frames) * 3 // 4
    assert nonzero(await tb.counters()) == nonzero(expect)


@cocotb.test()
async def test_long_truncated_frames_abort(dut):
    """A frame cut short after the captured header beats is already streaming when its end shows
    the IP length lied: it must end with tuser = 1 and count as a parse failure (model: drop).
    Shorter cuts are seen whole by the classifier and dropped without output."""
    tb = TB(dut)
    await tb.reset()
    await tb.install(T)
    t0 = tick_for_member(0, 0, 1000, 2000)
    frames = []
    for k, cut in enumerate([105, 128, 200, 777, 1400]):
        whole = v4(datagram(t0, 1400, seed=k))
        frames += [whole[:cut], whole]  # the intact frame right behind must come out untouched
    assert [model.process(T, f).verdict for f in frames[::2]] == [Drop.PARSE_FAIL] * 5
    expect = await tb.send_and_check(T, frames)
    captured = -(-104 // tb.beat_bytes) * tb.beat_bytes  # frames up to here are judged whole
    assert tb.aborted == sum(cut > captured for cut in [105, 128, 200, 777, 1400])
    assert nonzero(await tb.counters()) == nonzero(expect)


@cocotb.test()
async def test_table_updates_during_traffic(dut):
    """Commits while frames flow: every frame is rewritten entirely by one table version."""
    tb = TB(dut)
    await tb.reset()
    # A: the corpus tables with every calendar slot of LB 0 on member 0
    a = Tables(lbs=T.lbs, senders=T.senders, epochs=T.epochs, members=T.members,
               calendars={**T.calendars, **{(0, e): (0,) * 512 for e in range(4)}})
    # B: epoch 0 of LB 0 moved to member 1, both members rewritten, new LB MAC, slot xor, epoch range
    b_members = dict(a.members)
    b_members[(0, 0)] = Member(IP4("127.0.30.1"), base_port=25000, port_bits=5, mac=bytes.fromhex("02ec00003000"))
    b_members[(0, 1)] = Member(IP4("127.0.30.2"), base_port=26000, port_bits=3, mac=bytes.fromhex("02ec00003001"))
    b = Tables(lbs={**a.lbs, 0: LBInstance(0, bytes.fromhex("02ec0000b000"), corpus.LB_IPV4[0], corpus.LB_IPV6[0], slot_xor=0x155)},
               senders=a.senders, epochs={**a.epochs, (0, 0): EpochRange(500, 2500)},
               calendars={**a.calendars, (0, 0): (1,) * 512}, members=b_members)
    await tb.install(a)
    rng = random.Random(11)
    frames = [v4(datagram(rng.randrange(600, 2400), rng.randrange(0, 300), seed=k), sport=1000 + k) for k in range(800)]
    ra = [model.process(a, f) for f in frames]
    rb = [model.process(b, f) for f in frames]
    assert all(x.forwarded and y.forwarded for x, y in zip(ra, rb))
    assert sum(x.frame != y.frame for x, y in zip(ra, rb)) == len(frames)

    async def flip():
        for k in range(6):
            await ClockCycles(dut.clk, 300)
            await tb.install(b if k % 2 == 0 else a)

    tb.traffic(idle=0.6, seed=5)  # spread the frames over the updates
    updater = cocotb.start_soon(flip())
    for f in frames:
        await tb.source.send(AxiStreamFrame(f))
    seen = {"a": 0, "b": 0}
    for k in range(len(frames)):
        out = await tb.sink.recv()
        got = bytes(out.tdata)
        if got == ra[k].frame:
            seen["a"] += 1
        elif got == rb[k].frame:
            seen["b"] += 1
        else:
            raise AssertionError(f"frame {k} matches neither table version: {got[:64].hex()}")
    await updater
    assert seen["a"] and seen["b"], seen


@cocotb.test()
async def test_reset_mid_frame(dut):
    """Reset while a jumbo frame is half in: afterwards frames and counters are as if fresh."""
    tb = TB(dut)
    await tb.reset()
    await tb.install(T)
    t0 = tick_for_member(0, 0, 1000, 2000)
    await tb.source.send(AxiStreamFrame(v4(datagram(t0, 8900))))
    await ClockCycles(dut.clk, 9000 // tb.beat_bytes // 2)
    assert tb.source.active
    await tb.reset()
    tb.source.clear()
    tb.sink.clear()
    await tb.install(T)
    frames = [f for f, _ in corpus.frames(200, seed=5)]
    expect = await tb.send_and_check(T, frames)
    assert nonzero(await tb.counters()) == nonzero(expect)


@cocotb.test()
async def test_back_to_back_throughput(dut):
    """No bubbles: with no idle and no back-pressure the input takes one beat every cycle."""
    tb = TB(dut)
    await tb.reset()
    await tb.install(T)
    t0 = tick_for_member(0, 0, 1000, 2000)
    frames = [v4(datagram(t0, n)) for n in (0, 20, 100, 500, 1400) for _ in range(30)]
    beats = sum(-(-len(f) // tb.beat_bytes) for f in frames)
    accepted = []  # cycle numbers (sampled mid-cycle) of the beats the LB took

    async def monitor():
        cycle = 0
        while len(accepted) < beats:
            await FallingEdge(dut.clk)
            cycle += 1
            if int(dut.s_axis_tvalid.value) and int(dut.s_axis_tready.value):
                accepted.append(cycle)

    mon = cocotb.start_soon(monitor())
    for f in frames:
        await tb.source.send(AxiStreamFrame(f))
    await mon
    span = accepted[-1] - accepted[0] + 1
    assert span == beats, f"{beats} beats took {span} cycles"
    for _ in frames:
        await tb.sink.recv()


@cocotb.test()
async def test_pynq_driver_end_to_end(dut):
    """Control plane (calendar + epoch algorithms) -> fpga-sim backend (the PYNQ driver on a pynq
    Device bridged to this simulation) -> HDL -> frames checked against the model."""
    tb = TB(dut)
    await tb.reset()
    backend = await bridge(create_backend)("fpga-sim", device=cocotb_device(tb.axil))
    workers = {m: Member(IP4(f"127.0.40.{m + 1}"), base_port=20000 + 100 * m, port_bits=m % 3,
                         mac=bytes([2, 0xEC, 0, 0, 0x40, m]), keep_lb_header=m == 2) for m in range(4)}
    lb = LBInstance(0, corpus.LB_MACS[0], corpus.LB_IPV4[0], corpus.LB_IPV6[0])
    live, calendar, expect = (), None, None
    rng = random.Random(3)
    for step, weights in enumerate([[1, 1, 1, 1], [4, 1, 1, 2], [1, 0, 3, 1]]):
        counts = dict(enumerate(cal.slot_counts(weights)))
        calendar = cal.layout(counts, calendar)
        live = ep.advance(live, 1000 * (step + 1), calendar)
        tables = Tables(
            lbs={0: lb}, senders=frozenset({(0, corpus.SENDERS[0][0])}),
            epochs={(0, e): r for e, r in ep.ranges(live).items()},
            calendars={(0, e.epoch_id): e.calendar for e in live},
            members={(0, m): w for m, w in workers.items() if weights[m] or any(m in e.calendar for e in live)},
        )
        await bridge(backend.apply)(diff(backend.installed, tables))
        assert backend.installed == tables
        frames = [v4(datagram(rng.randrange(0, 1000 * (step + 2)), rng.randrange(200), seed=step * 100 + k))
                  for k in range(60)]
        expect = await tb.send_and_check(tables, frames, expect)
    got = await bridge(backend.counters)()
    assert nonzero(got) == nonzero(expect)
    assert sum(v["tx_packets"] for v in got.member.values()) > 100
    await bridge(backend.close)()
