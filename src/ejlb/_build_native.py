"""cffi builder for ejlb._native, the one binding module of the C core in csrc/.

Every csrc/*.c file is compiled into the module. Each csrc/*.h header exposes its API to Python
by the text between the markers `EJLB_CDEF_BEGIN` and `EJLB_CDEF_END` (plain declarations that
cffi can parse); so adding a C component never means editing this file.
"""
import pathlib
import re

from cffi import FFI

ROOT = pathlib.Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
_CDEF = re.compile(r"EJLB_CDEF_BEGIN\s*\*/(.*?)/\*\s*EJLB_CDEF_END", re.S)


def api_headers() -> list[pathlib.Path]:
    """The headers with a cffi block, in name order (internal headers such as recv_core.h have none)."""
    return [h for h in sorted(CSRC.glob("*.h")) if _CDEF.search(h.read_text())]


def cdef_text() -> str:
    return "\n".join(block for header in api_headers() for block in _CDEF.findall(header.read_text()))


ffibuilder = FFI()
ffibuilder.cdef(cdef_text())
ffibuilder.set_source(
    "ejlb._native",
    "\n".join(f'#include "{h.name}"' for h in api_headers()),
    sources=[str(p.relative_to(ROOT)) for p in sorted(CSRC.glob("*.c"))],
    include_dirs=[str(CSRC.relative_to(ROOT))],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wno-unused-function", "-pthread"],
    extra_link_args=["-pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
