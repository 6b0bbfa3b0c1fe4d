"""Helpers for the control-plane tests: a real ControlPlane on an ephemeral loopback port."""
from __future__ import annotations

import contextlib
import time

from ejlb.control.client import LBManager
from ejlb.control.config import ControlConfig, InstanceConfig
from ejlb.control.server import ControlPlane


class FakeClock:
    """Injectable control-plane clock (seconds), moved by hand."""

    def __init__(self, t: float | None = None):
        self.t = float(int(time.time())) if t is None else t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def config(n_instances: int = 1, **kw) -> ControlConfig:
    instances = tuple(InstanceConfig(lb_id=i, ipv4="127.0.0.1", ipv6="::1", mac=f"02:00:00:00:00:0{i}",
                                     data_min_port=19522 + i, data_max_port=19522 + i) for i in range(n_instances))
    kw.setdefault("backend", "memory")
    return ControlConfig(port=0, instances=instances, admin_token="admin-" + "0" * 20, **kw)


@contextlib.contextmanager
def control_plane(cfg: ControlConfig | None = None, backend=None, clock=None, run_controller=False):
    cp = ControlPlane(cfg or config(), backend)
    if clock is not None:
        cp.clock = clock
    cp.start(run_controller=run_controller)
    try:
        yield cp
    finally:
        cp.stop()


def admin(cp: ControlPlane) -> LBManager:
    return LBManager(cp.admin_uri, timeout=5.0)
