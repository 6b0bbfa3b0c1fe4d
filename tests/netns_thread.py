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


SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17


def tx_checksum_offload(ifname: str, on: bool) -> None:
    """Switch transmit checksum offload of `ifname` (in the calling thread's namespace), as
    `ethtool -K IF tx on|off` does. Off, the stack finishes every UDP checksum before the frame
    leaves, which is what an XDP program on the far end of a veth must see (with offload on it gets
    the partial sum that a NIC would complete)."""
    import fcntl
    import socket
    import struct

    value = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_STXCSUM, int(on)), 8)
    ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(value)).ljust(40, b"\0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)
