"""ejlb: stateless UDP load balancing of instrument data streams into HPC compute (EJFAT-compatible).

    from ejlb import Sender, Receiver, EjfatURI

Heavy parts (native core, gRPC) are imported on first use so `import ejlb` stays light.
"""
__version__ = "0.1.0"

_LAZY = {
    "EjfatURI": "ejlb.uri",
    "URIError": "ejlb.uri",
    "WireError": "ejlb.wire",
    "EjlbError": "ejlb.errors",
    "ArgumentError": "ejlb.errors",
    "Sender": "ejlb.shim.sender",
    "Receiver": "ejlb.shim.receiver",
    "Event": "ejlb.shim.events",
    "LostEvent": "ejlb.shim.events",
    "LBManager": "ejlb.control.client",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ejlb' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
