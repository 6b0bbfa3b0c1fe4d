"""Regenerate the committed gRPC stubs from loadbalancer.proto (needs grpcio-tools, a dev extra):

    python -m ejlb.control.protogen          # rewrite loadbalancer_pb2*.py
    python -m ejlb.control.protogen --check  # exit 1 if the committed stubs are stale

Stubs are committed so that installing ejlb never needs grpcio-tools.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC_ROOT = HERE.parent.parent  # .../src, so the stubs import as ejlb.control.*
PROTO = HERE / "loadbalancer.proto"
STUBS = ("loadbalancer_pb2.py", "loadbalancer_pb2_grpc.py", "loadbalancer_pb2.pyi")


def generate(out_dir: Path) -> dict[str, str]:
    """Run protoc into out_dir; return {stub file name: text}."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc", f"-I{SRC_ROOT}", f"-I{include}",
        f"--python_out={out_dir}", f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}",
        str(PROTO.relative_to(SRC_ROOT)),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    gen = out_dir / PROTO.parent.relative_to(SRC_ROOT)
    return {name: (gen / name).read_text() for name in STUBS}


def stale() -> list[str]:
    """Names of committed stubs that differ from freshly generated ones."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
    return [n for n, text in fresh.items() if not (HERE / n).exists() or (HERE / n).read_text() != text]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        bad = stale()
        if bad:
            print("stale stubs: " + ", ".join(bad) + " (run: python -m ejlb.control.protogen)")
            return 1
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in generate(Path(tmp)).items():
            (HERE / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
