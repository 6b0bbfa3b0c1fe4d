"""Regenerate the committed gRPC stubs from the project's .proto files (needs grpcio-tools, a dev extra):

    python -m ejlb.control.protogen          # rewrite <name>_pb2*.py beside each proto
    python -m ejlb.control.protogen --check  # exit 1 if the committed stubs are stale

The protos: the EJFAT LoadBalancer API (control/loadbalancer.proto) and ESnet's SmartNIC P4 table
API that LB nodes serve (node/sn_p4_v2.proto).

Stubs are committed so that installing ejlb never needs grpcio-tools.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC_ROOT = HERE.parent.parent  # .../src, so the stubs import as ejlb.control.*
PROTOS = (HERE / "loadbalancer.proto", SRC_ROOT / "ejlb" / "node" / "sn_p4_v2.proto")


def _stubs(proto: Path) -> list[Path]:
    return [proto.with_name(proto.stem + suffix) for suffix in ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")]


def generate(out_dir: Path) -> dict[Path, str]:
    """Run protoc into out_dir; return {committed stub path: fresh text}."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    out = {}
    for proto in PROTOS:
        args = [
            "protoc", f"-I{SRC_ROOT}", f"-I{include}",
            f"--python_out={out_dir}", f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}",
            str(proto.relative_to(SRC_ROOT)),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto}")
        for stub in _stubs(proto):
            out[stub] = (out_dir / stub.relative_to(SRC_ROOT)).read_text()
    return out


def stale() -> list[str]:
    """Names of committed stubs that differ from freshly generated ones."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
    return [p.name for p, text in fresh.items() if not p.exists() or p.read_text() != text]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        bad = stale()
        if bad:
            print("stale stubs: " + ", ".join(bad) + " (run: python -m ejlb.control.protogen)")
            return 1
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for path, text in generate(Path(tmp)).items():
            path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
