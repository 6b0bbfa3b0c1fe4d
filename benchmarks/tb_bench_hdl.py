"""cocotb side of benchmarks/bench_hdl.py: throughput and latency of ejlb_lb in cycles."""
from __future__ import annotations

import json
import os

import cocotb
from cocotb.triggers import ClockCycles, FallingEdge
from cocotbext.axi import AxiStreamFrame

from harness import TB
from tb_lb import T, datagram, forwarding_tick, tick_for_member, v4, v6
from ejlb.wire import LBHeader

SIZES = [int(s) for s in os.environ.get("EJLB_BENCH_SIZES", "60,64,65,128,129,256,512,1024,1518,9000").split(",")]
FRAMES = int(os.environ.get("EJLB_BENCH_FRAMES", "200"))


def sized(n: int, six: bool, tick: int) -> bytes:
    over = (14 + 40 + 8) if six else (14 + 20 + 8)
    body = n - over - 36
    data = datagram(tick, body, seed=n) if body >= 0 else LBHeader(tick=tick).encode() + bytes(max(0, n - over - 16))
    return (v6 if six else v4)(data)


async def accept_span(dut, tb, frames):
    """(beats in, cycles from first to last accepted input beat, beats out, cycles out)."""
    beats = sum(-(-len(f) // tb.beat_bytes) for f in frames)
    seen_in, seen_out = [], []

    async def monitor():
        cycle = 0
        while len(seen_in) < beats or len(seen_out) == 0 or int(dut.m_axis_tvalid.value) or cycle < seen_in[-1] + 64:
            await FallingEdge(dut.clk)
            cycle += 1
            if int(dut.s_axis_tvalid.value) and int(dut.s_axis_tready.value):
                seen_in.append(cycle)
            if int(dut.m_axis_tvalid.value) and int(dut.m_axis_tready.value):
                seen_out.append(cycle)

    mon = cocotb.start_soon(monitor())
    for f in frames:
        await tb.source.send(AxiStreamFrame(f))
    await mon
    while not tb.sink.empty():
        tb.sink.recv_nowait()
    return beats, seen_in[-1] - seen_in[0] + 1, len(seen_out), seen_out[-1] - seen_out[0] + 1, seen_in, seen_out


@cocotb.test()
async def bench(dut):
    tb = TB(dut)
    await tb.reset()
    await tb.install(T)
    t4, t_keep = tick_for_member(0, 0, 1000, 2000), tick_for_member(0, 3, 1000, 2000)
    t6 = forwarding_tick(v6)
    out = {"data_width": tb.beat_bytes * 8, "throughput": [], "latency": []}
    for n in SIZES:
        count = max(8, min(FRAMES, 60_000 // n))
        frames = [sized(n, False, t4) for _ in range(count)]
        beats, span, obeats, ospan, _, _ = await accept_span(dut, tb, frames)
        out["throughput"].append({"size": n, "frames": count, "beats": beats, "cycles": span,
                                  "beats_per_cycle": beats / span, "out_beats": obeats, "out_cycles": ospan})
    for label, six, tick in (("ipv4 strip", False, t4), ("ipv4 keep", False, t_keep), ("ipv6 strip", True, t6)):
        for n in (60, 1518):
            await ClockCycles(dut.clk, 50)
            frame = sized(n, six, tick)
            _, _, _, _, seen_in, seen_out = await accept_span(dut, tb, [frame])
            out["latency"].append({"case": label, "size": len(frame), "cycles": seen_out[0] - seen_in[0]})
    with open(os.environ["EJLB_BENCH_OUT"], "w") as fh:
        json.dump(out, fh, indent=1)
