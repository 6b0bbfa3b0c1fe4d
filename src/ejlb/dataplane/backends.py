"""Backend registry: `create_backend(name, config)` -> a `Backend` the control plane programs.

    memory     tables.MemoryBackend: holds the tables, forwards nothing (control-plane tests)
    reference  ReferenceBackend: holds the tables and runs frames through the reference model
    software   SoftwareLB: the native software data plane (the default of `ejlb serve`)
    xdp        XDPLB: the pipeline as an XDP program (option `interface`: attach there; without it
               the program is only loaded, for BPF_PROG_TEST_RUN)
    snp4       ejlb.node.client.NodesBackend: LB nodes or ESnet SmartNICs programmed through the
               SmartNIC P4 API (option `url`: snp4://TOKEN@host:port[,host:port])

Other modules add theirs with `register(name, factory)` (the FPGA driver: "fpga", "fpga-sim").
Factories are imported lazily, so a missing optional dependency only matters when chosen.
`config` is an `ejlb.control.config.ControlConfig` (or None for defaults); a factory reads what it
needs from it (the software LB: each instance's data_min_port..data_max_port); keyword options
are passed through (software: `threads`, `ports`; xdp: `interface`, `egress`, `pass_other`; snp4: `url`, `ca_file`).
"""
from __future__ import annotations

import importlib
from typing import Callable, Iterable

from ejlb.dataplane import model
from ejlb.dataplane.tables import Backend, Counters, MemoryBackend

Factory = Callable[..., Backend]  # (config, **options) -> Backend


class BackendError(ValueError):
    """An unknown backend name or a backend that cannot start; names the backend."""


class ReferenceBackend(MemoryBackend):
    """Installed tables + the reference model: `process(frame)` is what an FPGA would do with it."""

    def process(self, frame: bytes) -> model.Result:
        result = model.process(self.installed, frame)
        result.add_to(self._counters)
        return result

    def process_many(self, frames: Iterable[bytes]) -> list[model.Result]:
        return [self.process(f) for f in frames]

    def counters(self) -> Counters:
        return self._counters


def _software(config, threads: int = 1, ports: dict[int, tuple[int, int]] | None = None) -> Backend:
    from ejlb.dataplane.software import SoftwareLB

    if ports is None and config is not None:
        ports = {i.lb_id: (i.data_min_port, i.data_max_port) for i in config.instances}
    return SoftwareLB(ports=ports, threads=threads)


_REGISTRY: dict[str, Factory | str] = {
    "memory": lambda config, **_: MemoryBackend(),
    "reference": lambda config, **_: ReferenceBackend(),
    "software": _software,
    # lazily imported "module:function" entries; the module may also call register() itself
    "fpga": "ejlb.dataplane.fpga:create_backend",
    "fpga-sim": "ejlb.dataplane.fpga_sim:create_backend",
    "xdp": "ejlb.dataplane.xdp:create_backend",
    "snp4": "ejlb.node.client:create_backend",
}


def register(name: str, factory: Factory | str) -> None:
    """Add or replace a backend: a callable(config) or a lazy "module:function" reference."""
    _REGISTRY[name] = factory


def names() -> list[str]:
    return sorted(_REGISTRY)


def create_backend(name: str, config=None, **options) -> Backend:
    """A new backend by name. `options` are backend-specific (software: threads=N)."""
    factory = _REGISTRY.get(name)
    if factory is None:
        raise BackendError(f"backend={name!r}: unknown (known: {', '.join(names())})")
    if isinstance(factory, str):
        module, _, func = factory.partition(":")
        try:
            factory = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as e:
            raise BackendError(f"backend={name!r}: not available ({e})") from None
    return factory(config, **options)
