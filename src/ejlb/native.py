"""The compiled C core (csrc/, built by cffi as ejlb._native): `ffi` and `lib`.

Rebuild in place after changing csrc/:  python setup.py -q build_ext --inplace
"""
from ejlb._native import ffi, lib  # noqa: F401


def buffer_address(obj, *, writable: bool = False):
    """(cdata pointer, nbytes) of any C-contiguous buffer-protocol object, without copying.

    Raises TypeError naming the problem for non-buffers and non-contiguous buffers."""
    try:
        mv = memoryview(obj)
    except TypeError:
        raise TypeError(f"event: expected a buffer (bytes, bytearray, memoryview, numpy array), got {type(obj).__name__}") from None
    if not mv.c_contiguous:
        raise TypeError("event: buffer is not C-contiguous (use numpy.ascontiguousarray)")
    if writable and mv.readonly:
        raise TypeError("buffer: must be writable")
    if mv.nbytes == 0:
        return ffi.NULL, 0
    return ffi.from_buffer("char[]", mv, require_writable=writable), mv.nbytes
