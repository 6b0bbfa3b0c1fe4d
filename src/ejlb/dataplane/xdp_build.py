"""Build of the XDP program: clang -target bpf on bpf/ejlb_xdp.c, at first use, cached by content.

Like the cffi build of csrc/ (src/ejlb/_build_native.py) the sources live in the checkout; unlike
it, the object is built on first use rather than by `pip install`, so that a machine without clang
or libbpf-dev installs and runs every other backend. The object goes to build/bpf/ under a name
that hashes the sources and the compiler command, so an edit rebuilds and concurrent first uses
cannot see a half-written file (written to a temporary name, then renamed).

    python -m ejlb.dataplane.xdp_build        # build now, print the object's path
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from ejlb.dataplane import xdp_layout
from ejlb.errors import EjlbError

ROOT = Path(__file__).resolve().parents[3]
BPF = ROOT / "bpf"
SOURCE = BPF / "ejlb_xdp.c"
LAYOUT_H = BPF / "ejlb_xdp_layout.h"
WIRE_H = ROOT / "csrc" / "ejlb_wire.h"
OUT_DIR = ROOT / "build" / "bpf"
CLANG_NAMES = ("clang",) + tuple(f"clang-{v}" for v in range(21, 13, -1))


class BuildError(EjlbError, RuntimeError):
    """The XDP program cannot be built here; the message names what is missing."""


def find_clang() -> str:
    env = os.environ.get("EJLB_CLANG")
    if env:
        path = shutil.which(env)
        if path is None:
            raise BuildError(f"EJLB_CLANG={env!r}: not an executable")
        return path
    for name in CLANG_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise BuildError("clang: not found (the XDP program is compiled with clang -target bpf; "
                     "Debian: apt-get install clang llvm libbpf-dev)")


def _include_dirs() -> list[str]:
    dirs = [str(BPF), str(WIRE_H.parent)]
    # <linux/bpf.h> includes <asm/types.h>, which Debian keeps in the multiarch directory that
    # clang does not search for the bpf target
    multiarch = Path(f"/usr/include/{platform.machine()}-linux-gnu")
    if multiarch.is_dir():
        dirs.append(str(multiarch))
    return dirs


def _check_inputs() -> None:
    if not SOURCE.is_file():
        raise BuildError(f"{SOURCE}: not found (the XDP backend builds from a source checkout: pip install -e .)")
    if LAYOUT_H.read_text() != xdp_layout.c_header():
        raise BuildError(f"{LAYOUT_H}: stale; run python -m ejlb.dataplane.xdp_layout > bpf/ejlb_xdp_layout.h")
    for header, package in (("bpf/bpf_helpers.h", "libbpf-dev"), ("linux/bpf.h", "linux-libc-dev")):
        if not any(Path(d, header).is_file() for d in ("/usr/include", "/usr/local/include")):
            raise BuildError(f"{header}: not found (Debian: apt-get install {package})")


def command(clang: str, out: str) -> list[str]:
    return [clang, "-O2", "-g", "-target", "bpf", "-Wall", "-Werror", "-Wno-unused-function",
            *(f"-I{d}" for d in _include_dirs()), "-c", str(SOURCE), "-o", out]


def object_path(clang: str | None = None) -> Path:
    clang = clang or find_clang()
    h = hashlib.sha256()
    for f in (SOURCE, LAYOUT_H, WIRE_H):
        h.update(f.read_bytes())
    version = subprocess.run([clang, "--version"], capture_output=True, text=True).stdout
    h.update(version.encode() + " ".join(command(clang, "")).encode())
    return OUT_DIR / f"ejlb_xdp-{h.hexdigest()[:16]}.o"


def build() -> Path:
    """Path of the compiled program, building it if the sources changed. Raises BuildError."""
    _check_inputs()
    clang = find_clang()
    out = object_path(clang)
    if out.is_file():
        return out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".o.tmp")
    except OSError as e:
        raise BuildError(f"{out.parent}: cannot write the object ({e.strerror})") from None
    os.close(fd)
    try:
        r = subprocess.run(command(clang, tmp), capture_output=True, text=True)
        if r.returncode != 0:
            raise BuildError(f"clang -target bpf {SOURCE.name} failed:\n{r.stderr.strip()}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


if __name__ == "__main__":
    print(build())
