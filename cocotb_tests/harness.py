"""Test bench of ejlb_lb inside cocotb: clock, reset, AXI-Stream source/sink with optional random
idle and back-pressure, AXI-Lite master, table programming through the driver's RegisterPlan, and
frame-by-frame comparison with the reference model."""
from __future__ import annotations

import logging
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from ejlb.dataplane import model, regmap as rm
from ejlb.dataplane.fpga import RegisterPlan
from ejlb.dataplane.tables import Counters, Tables, diff

DATA_WIDTH = int(os.environ.get("EJLB_DATA_WIDTH", "512"))


def random_pauses(seed: int, p: float):
    """Pause generator: each cycle paused with probability p (bursty enough to hit every state)."""
    rng = random.Random(seed)
    while True:
        yield rng.random() < p


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.log = dut._log
        cocotb.start_soon(Clock(dut.clk, 4, unit="ns").start())
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.clk, dut.rst)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.clk, dut.rst)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        for part in (self.source, self.sink, self.axil.write_if, self.axil.read_if):
            part.log.setLevel(logging.ERROR)  # per-frame logs (and reset flushes) would drown the output
        self.plan = RegisterPlan()
        self.aborted = 0  # output frames ended with tuser = 1
        self.beat_bytes = DATA_WIDTH // 8

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)
        while not int(self.dut.s_axis_tready.value):  # member-counter RAM clear after reset
            await RisingEdge(self.dut.clk)
        self.plan = RegisterPlan()

    def traffic(self, idle: float = 0.0, backpressure: float = 0.0, seed: int = 1):
        if idle:
            self.source.set_pause_generator(random_pauses(seed, idle))
        else:
            self.source.clear_pause_generator()
        if backpressure:
            self.sink.set_pause_generator(random_pauses(seed + 1, backpressure))
        else:
            self.sink.clear_pause_generator()

    async def read(self, addr: int) -> int:
        return int.from_bytes((await self.axil.read(addr, 4)).data, "little")

    async def write(self, addr: int, value: int) -> None:
        await self.axil.write(addr, value.to_bytes(4, "little"))

    async def install(self, tables: Tables) -> None:
        """The driver's plan, executed with async accessors (the steps of fpga.run_plan)."""
        shadow, replay = self.plan.plan(diff(self.plan.installed, tables))
        for a, v in shadow:
            await self.write(a, v)
        await self.write(rm.CTRL.addr(0, "COMMIT"), rm.CTRL.pack("COMMIT", GO=1))
        busy = rm.CTRL.field("BUSY")
        while (await self.read(rm.CTRL.addr(0, "STATUS"))) >> busy.lsb & 1:
            pass
        for a, v in replay:
            await self.write(a, v)

    async def counters(self) -> Counters:
        values = {}
        for name, lo in RegisterPlan.counter_reads(self.plan.installed):
            low = await self.read(lo)
            values[name] = low | (await self.read(lo + 4)) << 32
        return RegisterPlan.counters_from(values)

    async def send_and_check(self, tables: Tables, frames: list[bytes], counters: Counters | None = None,
                             timeout_cycles: int | None = None) -> Counters:
        """Send `frames` back to back, compare every output frame with the model, return the
        model's counters (accumulated into `counters`)."""
        frames = [f for f in frames if f]  # a 0-byte frame cannot exist on AXI-Stream
        results, expect_counters = model.run(tables, frames, counters)
        expected = [r.frame for r in results if r.forwarded]
        for f in frames:
            await self.source.send(AxiStreamFrame(f))
        got = []
        budget = timeout_cycles or 200 + sum(len(f) // self.beat_bytes + 2 for f in frames) * 12
        cycles = 0
        while len(got) < len(expected):
            if self.sink.empty():
                await RisingEdge(self.dut.clk)
                cycles += 1
                assert cycles < budget, f"timeout: {len(got)} of {len(expected)} frames out"
                continue
            out = self.sink.recv_nowait()
            if _aborted(out):
                self.aborted += 1
                continue
            got.append(bytes(out.tdata))
        await self.source.wait()
        await ClockCycles(self.dut.clk, 40)
        while not self.sink.empty():  # nothing extra may come out
            out = self.sink.recv_nowait()
            assert _aborted(out), f"unexpected extra frame {bytes(out.tdata).hex()}"
            self.aborted += 1
        fwd = [(f, r) for f, r in zip(frames, results) if r.forwarded]
        for k, (g, e) in enumerate(zip(got, expected)):
            if g != e:
                src = fwd[k][0]
                raise AssertionError(
                    f"frame {k} differs (in {len(src)} B, model {len(e)} B, hdl {len(g)} B)\n"
                    f" in   {src[:120].hex()}\n model {e[:120].hex()}\n hdl   {g[:120].hex()}")
        return expect_counters


def _aborted(frame) -> bool:
    u = frame.tuser
    if isinstance(u, list):
        return bool(u and u[-1])
    return bool(u)


def nonzero(c: Counters) -> dict:
    """Counters as a plain dict without all-zero entries, for comparing two data planes."""
    out = {("glob", k): v for k, v in c.glob.items() if v}
    out.update({("lb", lb, k): v for lb, d in c.lb.items() for k, v in d.items() if v})
    out.update({("member", key, k): v for key, d in c.member.items() for k, v in d.items() if v})
    return out
