"""The XDP LB's part of bench_lb.py: direct versus through the XDP program, in network namespaces.

    hosts namespace: h0 = 10.98.0.1, the GSO Sender and the four Receivers (ports base..base+3)
         | veth (MTU of the trial)
    LB namespace:    l0 = 10.98.0.100, the XDP program attached; XDP_TX sends every frame back

Direct = the Sender rotating over the receivers' ports on 10.98.0.1 (the kernel's local path, as
bench_lb's direct mode); via XDP = the Sender to 10.98.0.100, one veth crossing each way plus the
program. Transmit checksum offload is off on h0 so that the program sees finished UDP checksums
(see tests/netns_thread.py); that costs the sender a checksum pass in the XDP mode only.
LB CPU: the program's own run time from the kernel's BPF statistics (kernel.bpf_stats_enabled,
run_time_ns / run_cnt in the program fd's fdinfo): it excludes the veth and driver work around
the program, which a NIC's receive path would replace. Needs root; returns None with the reason
otherwise.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from netns_thread import InNetns, tx_checksum_offload  # noqa: E402

from ejlb.dataplane.tables import EpochRange, LBInstance, Member, Tables, diff, parse_mac  # noqa: E402
from ejlb.shim.receiver import Receiver  # noqa: E402
from ejlb.wire import CALENDAR_SLOTS  # noqa: E402

HOST_IP, LB_IP = "10.98.0.1", "10.98.0.100"
STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")


def _ip(*args: str) -> str:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def prog_stats(fd: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of a BPF program (counted while kernel.bpf_stats_enabled is 1)."""
    info = dict(line.split(":\t", 1) for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines() if ":\t" in line)
    return int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0))


class XDPBench:
    """The topology, the attached program and the receivers; `with` removes them."""

    def __init__(self, workers: int, base: int):
        self.workers, self.base = workers, base
        self.hosts, self.lbns = f"ejxb{os.getpid()}-h", f"ejxb{os.getpid()}-lb"
        self.lb = None
        self.receivers: list = []

    def __enter__(self):
        from ejlb.dataplane.xdp import XDPLB

        _ip("netns", "add", self.hosts)
        _ip("netns", "add", self.lbns)
        _ip("link", "add", "h0", "netns", self.hosts, "type", "veth", "peer", "name", "l0", "netns", self.lbns)
        _ip("-n", self.hosts, "addr", "add", f"{HOST_IP}/24", "dev", "h0")
        _ip("-n", self.lbns, "addr", "add", f"{LB_IP}/24", "dev", "l0")
        for ns, dev in ((self.hosts, "h0"), (self.lbns, "l0"), (self.hosts, "lo"), (self.lbns, "lo")):
            _ip("-n", ns, "link", "set", dev, "up")
        with InNetns(self.lbns):
            self.lb = XDPLB("l0", resolve_macs=False)  # the members below have their MACs
        mac = lambda ns, dev: parse_mac(json.loads(_ip("-n", ns, "-j", "link", "show", dev))[0]["address"])  # noqa: E731
        host_mac = mac(self.hosts, "h0")
        with InNetns(self.hosts):
            self.lb.attach_pass("h0")
            tx_checksum_offload("h0", False)
            self.receivers = [Receiver(None, HOST_IP, self.base + k, with_lb_header=True, queue_size=512, rcvbuf=64 << 20)
                              for k in range(self.workers)]
        ip = __import__("ipaddress").ip_address
        self.lb.apply(diff(Tables(), Tables(
            lbs={0: LBInstance(0, mac(self.lbns, "l0"), ip(LB_IP))},
            senders=frozenset({(0, ip(HOST_IP))}),
            epochs={(0, 0): EpochRange(0, None)},
            calendars={(0, 0): tuple(k % self.workers for k in range(CALENDAR_SLOTS))},
            members={(0, k): Member(ip(HOST_IP), self.base + k, mac=host_mac, keep_lb_header=True)
                     for k in range(self.workers)},
        )))
        self._stats_before = STATS_SYSCTL.read_text().strip()
        STATS_SYSCTL.write_text("1")
        return self

    def set_mtu(self, mtu: int) -> None:
        _ip("-n", self.hosts, "link", "set", "h0", "mtu", str(mtu))
        _ip("-n", self.lbns, "link", "set", "l0", "mtu", str(mtu))

    def uris(self) -> tuple[str, str]:
        direct = f"ejfat://bench:18347/lb/1?data={HOST_IP}:{self.base}-{self.base + self.workers - 1}"
        return direct, f"ejfat://bench:18347/lb/1?data={LB_IP}:19522"

    def totals(self) -> tuple[int, int, float]:
        """(frames into the program's LB, payload bytes forwarded, program CPU seconds) so far."""
        c = self.lb.counters()
        run_ns, _ = prog_stats(self.lb.prog_fd)
        return c.lb[0]["rx_packets"], sum(m["tx_bytes"] for m in c.member.values()), run_ns / 1e9

    def __exit__(self, *exc):
        for rx in self.receivers:
            rx.close()
        if self.lb is not None:
            self.lb.close()
            STATS_SYSCTL.write_text(self._stats_before)
        for ns in (self.hosts, self.lbns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
