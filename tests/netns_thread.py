"""Run the calling thread inside a named network namespace (`ip netns add NAME`) for a `with` block.

Sockets, interface indexes and XDP attachments made inside belong to that namespace; the rest of
the process stays where it was. setns(2) through ctypes: os.setns needs Python 3.12.
"""
from __future__ import annotations

import ctypes
import os

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class InNetns:
    """The calling thread inside a named network namespace for a `with` block (sockets and
    interface indexes made there belong to it)."""

    def __init__(self, name: str):
        self.path = f"/var/run/netns/{name}"

    def __enter__(self):
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        self._enter(self.path)
        return self

    def __exit__(self, *exc):
        try:
            self._setns(self._home)
        finally:
            os.close(self._home)

    def _enter(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            self._setns(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _setns(fd: int) -> None:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns: {os.strerror(err)}")
