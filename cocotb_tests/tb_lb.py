"""cocotb tests of ejlb_lb (run through cocotb_tests/test_hdl_sim.py, one simulator per width)."""
from __future__ import annotations

import os

import cocotb

from harness import DATA_WIDTH, TB, nonzero
from ejlb.dataplane import corpus, regmap as rm

CORPUS_N = int(os.environ.get("EJLB_CORPUS_N", "2000"))


@cocotb.test()
async def test_identity_registers(dut):
    tb = TB(dut)
    await tb.reset()
    assert await tb.read(rm.CTRL.addr(0, "ID")) == rm.ID_VALUE
    params = await tb.read(rm.CTRL.addr(0, "PARAMS"))
    assert params & 0xFF == DATA_WIDTH // 8
    assert params >> 8 & 0xFF == rm.N_SENDERS


@cocotb.test()
async def test_corpus(dut):
    """The conformance corpus, every frame compared with the model, then all counters."""
    tb = TB(dut)
    await tb.reset()
    tables = corpus.tables()
    await tb.install(tables)
    frames = [f for f, _ in corpus.frames(CORPUS_N, seed=1)]
    tb.traffic(idle=0.1, backpressure=0.2, seed=3)
    expect = await tb.send_and_check(tables, frames)
    got = await tb.counters()
    assert nonzero(got) == nonzero(expect)
