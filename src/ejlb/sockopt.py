"""Linux socket options the I/O shells and the C core use, once.

Some Python builds and older libc headers lack these names; the values are Linux's ABI
(include/uapi/linux/udp.h, asm-generic/socket.h, linux/in.h, linux/in6.h). The C core gets the same
fallbacks from the generated csrc/ejlb_facts.h (ejlb.cfacts).
"""
from __future__ import annotations

import socket

LINUX = {  # name -> value, for names the socket module may lack
    "SOL_UDP": 17,
    "UDP_SEGMENT": 103,  # UDP GSO: segment size, per socket or per sendmsg (cmsg)
    "UDP_GRO": 104,  # UDP GRO: receive coalesced segments, segment size in a cmsg
    "SO_RCVBUFFORCE": 33,  # SO_RCVBUF past net.core.rmem_max (CAP_NET_ADMIN)
    "SO_SNDBUFFORCE": 32,  # SO_SNDBUF past net.core.wmem_max
    "IP_MTU": 14,  # the route's path MTU of a connected socket
    "IPV6_MTU": 24,
    "IP_FREEBIND": 15,  # bind an address not (yet) configured on an interface
    "IPV6_FREEBIND": 78,
}

# Segments per UDP GSO send and per GRO buffer: Linux's UDP_MAX_SEGMENTS was 64 until 6.x raised it to
# 128; 64 works everywhere (sender plans, the send core, the software LB, speculative placement).
UDP_MAX_SEGMENTS = 64

SOL_UDP: int = getattr(socket, "SOL_UDP", LINUX["SOL_UDP"])
UDP_SEGMENT: int = getattr(socket, "UDP_SEGMENT", LINUX["UDP_SEGMENT"])
UDP_GRO: int = getattr(socket, "UDP_GRO", LINUX["UDP_GRO"])
SO_RCVBUFFORCE: int = getattr(socket, "SO_RCVBUFFORCE", LINUX["SO_RCVBUFFORCE"])
SO_SNDBUFFORCE: int = getattr(socket, "SO_SNDBUFFORCE", LINUX["SO_SNDBUFFORCE"])
IP_MTU: int = getattr(socket, "IP_MTU", LINUX["IP_MTU"])
IPV6_MTU: int = getattr(socket, "IPV6_MTU", LINUX["IPV6_MTU"])
IP_FREEBIND: int = getattr(socket, "IP_FREEBIND", LINUX["IP_FREEBIND"])
IPV6_FREEBIND: int = getattr(socket, "IPV6_FREEBIND", LINUX["IPV6_FREEBIND"])
