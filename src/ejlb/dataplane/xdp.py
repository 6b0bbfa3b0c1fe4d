"""The XDP data plane: bpf/ejlb_xdp.c loaded through libbpf, programmed from the table model.

`XDPLB` implements the `Backend` protocol (apply / installed / counters / close). It builds the BPF
object on first use (`xdp_build`), loads it with libbpf (`libbpf`, cffi in ABI mode), and, given an
interface, attaches it there with a BPF link (native XDP when the driver has it, else the kernel's
generic XDP); the link is released with the process, so a crashed `ejlb serve` leaves no program
behind. Without an interface the program is loaded but not attached: `run()` then pushes single
frames through it with BPF_PROG_TEST_RUN (the oracle test, and any caller that wants the FPGA's
answer for a frame).

Atomic table switches, as the HDL's shadow banks + commit: every table map holds two banks and the
ctrl map names the committed one, which the program reads once per frame. `apply` writes the
difference between what the uncommitted bank holds and the new tables into that bank (it holds the
tables of two applies ago), commits it with one map write, and then updates the `fence` map-in-map:
the kernel returns from that update only after every program that was running has finished, so no
frame still reads the bank that the next `apply` will overwrite. A failed write leaves the committed
bank untouched (the new tables are simply not installed).

Members whose table MAC is 00:00:00:00:00:00 (what the control plane registers: EJFAT's register
carries no MAC) get the next hop's MAC and the egress interface from the kernel's FIB and neighbour
table when `resolve_macs` is on (the default when attached; the kernel answers XDP's FIB lookups
only on an interface with forwarding on, so attaching checks net.ipv4.conf.IF.forwarding); `apply`
asks the kernel to resolve new ones, and their frames count as member misses until it has.

Frames of no LB (parse failures, other destinations) are counted as the model counts them and,
with `pass_other` (the default when attached), handed to the host stack rather than dropped, so
the host keeps ARP, neighbour discovery and its own traffic. `egress` maps member networks to the
interface they sit behind; frames to those members leave there by XDP_REDIRECT (the interface's
driver must accept redirected frames: veth needs an XDP program on its peer).
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import threading
from typing import Mapping

import numpy as np

from ejlb.dataplane import xdp_build, xdp_image, xdp_layout as L
from ejlb.dataplane.libbpf import LibbpfError, check, check_ptr, ffi, open_libbpf, take_messages
from ejlb.dataplane.tables import (
    GLOBAL_COUNTERS,
    LB_COUNTERS,
    MEMBER_COUNTERS,
    NUM_EPOCHS,
    NUM_LBS,
    Counters,
    SenderLimit,
    TableDiff,
    Tables,
    apply,
)
from ejlb.errors import EjlbError

PROGRAM = "ejlb_xdp"
PASS_PROGRAM = "ejlb_xdp_pass"
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
MAPS = ("ctrl", "lbs", "dests", "senders", "calendars", "members", "stats", "fence", "fence_inner")


class XDPError(EjlbError, OSError):
    """The XDP data plane cannot run here; the message names what is missing or refused."""


def _refusal(e: LibbpfError, what: str) -> XDPError:
    hint = {
        errno.EPERM: "needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON)",
        errno.EACCES: "refused by the verifier or by missing privileges",
        errno.ENOSYS: "the kernel has no bpf() system call",
        errno.EOPNOTSUPP: "not supported by this kernel or driver",
        errno.EBUSY: "the interface already has an XDP program",
    }.get(e.errno, "")
    return XDPError(e.errno, f"XDP {what}: {e.strerror}" + (f"; {hint}" if hint else ""))


def _read_sysctl(name: str) -> str | None:
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return f.read().strip()
    except OSError:
        return None


def _egress_function(egress: Mapping[str, str] | None):
    """{network: interface} -> f(member ip) = ifindex of the longest matching network, else 0."""
    routes = []
    for net, ifname in (egress or {}).items():
        try:
            network = ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ValueError(f"egress network={net!r}: not an IP network") from None
        try:
            routes.append((network, socket.if_nametoindex(ifname)))
        except OSError:
            raise ValueError(f"egress[{net}]={ifname!r}: no such interface") from None
    routes.sort(key=lambda r: -r[0].prefixlen)

    def ifindex(ip) -> int:
        return next((index for net, index in routes if ip.version == net.version and ip in net), 0)

    return ifindex


class XDPLB:
    """Backend: the XDP program. interface: attach there (None: load only, for `run`)."""

    sender_limit = SenderLimit(total=L.MAX_SENDERS)  # one map shared by every LB instance

    def __init__(self, interface: str | None = None, *, egress: Mapping[str, str] | None = None,
                 pass_other: bool | None = None, resolve_macs: bool | None = None):
        self.interface = interface
        self.pass_other = interface is not None if pass_other is None else bool(pass_other)
        self.resolve_macs = interface is not None if resolve_macs is None else bool(resolve_macs)
        # made here, so that they belong to this network namespace, like the program's FIB lookups
        self._probes = {}
        for version, af in ((4, socket.AF_INET), (6, socket.AF_INET6)):
            try:
                if self.resolve_macs:
                    self._probes[version] = socket.socket(af, socket.SOCK_DGRAM)
            except OSError:
                pass  # no IPv6 here: no IPv6 member can be resolved either
        self._egress = _egress_function(egress)
        self._lock = threading.Lock()
        self._obj = self._link = None
        self._pass_links: list = []
        try:
            path = xdp_build.build()
        except xdp_build.BuildError as e:
            raise XDPError(errno.ENOENT, f"XDP build: {e}") from None
        try:
            self._lib = open_libbpf()
        except LibbpfError as e:
            raise XDPError(e.errno, e.strerror) from None
        lib = self._lib
        try:
            self._obj = check_ptr(lib.bpf_object__open_file(str(path).encode(), ffi.NULL), f"open {path.name}")
            take_messages()
            rc = lib.bpf_object__load(self._obj)
            if rc < 0:
                log = take_messages().strip().splitlines()
                detail = "\n".join(log[-12:])
                raise XDPError(-rc, f"XDP load: {os.strerror(-rc)}"
                                    + ("; needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON)" if -rc == errno.EPERM else "")
                                    + (f"\n{detail}" if detail else ""))
            self._prog = check_ptr(lib.bpf_object__find_program_by_name(self._obj, PROGRAM.encode()), PROGRAM)
            self._pass_prog = check_ptr(lib.bpf_object__find_program_by_name(self._obj, PASS_PROGRAM.encode()), PASS_PROGRAM)
            self.prog_fd = check(lib.bpf_program__fd(self._prog), "program fd")
            self._fd = {m: check(lib.bpf_object__find_map_fd_by_name(self._obj, m.encode()), f"map {m}") for m in MAPS}
            self._ncpu = check(lib.libbpf_num_possible_cpus(), "possible CPUs")
            self._active = 0
            self._images = [xdp_image.empty_image(), xdp_image.empty_image()]
            for index in range(L.BANKS * NUM_LBS * NUM_EPOCHS):  # array maps start zeroed: member 0 everywhere
                self._update("calendars", xdp_image.u32(index), xdp_image.EMPTY["calendars"])
            self._commit(0)
            self.installed = Tables()
            if interface is not None:
                self._attach(interface)
        except LibbpfError as e:
            self.close()
            raise _refusal(e, "setup") from None
        except BaseException:
            self.close()
            raise

    def _attach(self, interface: str) -> None:
        try:
            ifindex = socket.if_nametoindex(interface)
        except OSError:
            raise XDPError(errno.ENODEV, f"XDP interface={interface!r}: no such interface") from None
        sysctl = f"net.ipv4.conf.{interface}.forwarding"
        if self.resolve_macs and _read_sysctl(sysctl) == "0":
            # the kernel's FIB lookup for XDP answers only on interfaces that forward
            raise XDPError(errno.EPERM, f"XDP resolve_macs on {interface}: needs {sysctl}=1 (sysctl -w {sysctl}=1; "
                                        "IPv6 members also net.ipv6.conf.IF.forwarding=1), or member MACs in the "
                                        "tables and resolve_macs=False")
        try:
            self._link = check_ptr(self._lib.bpf_program__attach_xdp(self._prog, ifindex), f"attach to {interface}")
        except LibbpfError as e:
            raise _refusal(e, f"attach to {interface}") from None
        self.ifindex = ifindex

    # --- map access ---------------------------------------------------------------------------
    def _update(self, name: str, key: bytes, value: bytes) -> None:
        check(self._lib.bpf_map_update_elem(self._fd[name], ffi.from_buffer(key), ffi.from_buffer(value), 0),
              f"update {name}")

    def _delete(self, name: str, key: bytes) -> None:
        rc = self._lib.bpf_map_delete_elem(self._fd[name], ffi.from_buffer(key))
        if rc < 0 and rc != -errno.ENOENT:
            check(rc, f"delete {name}")

    def _commit(self, bank: int) -> None:
        ctrl = np.zeros(1, L.CTRL)
        ctrl["bank"], ctrl["flags"] = bank, L.CTRL_PASS_OTHER * self.pass_other
        self._update("ctrl", xdp_image.u32(0), ctrl.tobytes())
        fence_inner = self._fd["fence_inner"].to_bytes(4, "little" if np.little_endian else "big")
        self._update("fence", xdp_image.u32(0), fence_inner)  # returns after running programs end
        self._active = bank

    # --- Backend protocol ---------------------------------------------------------------------
    def apply(self, d: TableDiff) -> None:
        with self._lock:
            self._require_open()
            new = apply(self.installed, d)
            bank = 1 - self._active
            target = xdp_image.image(new, bank, self._egress, self.resolve_macs)  # TableError before any write
            held = self._images[bank]
            try:
                for name, key, value in xdp_image.changes(held, target):
                    if value is None:
                        self._delete(name, key)
                        held[name].pop(key, None)
                    else:
                        self._update(name, key, value)
                        held[name][key] = value
                self._commit(bank)
            except LibbpfError as e:
                raise _refusal(e, "table write") from None
            self.installed = new
            self._resolve(d.set.get("members", {}).values())

    def _resolve(self, members) -> None:
        """Ask the kernel to resolve the neighbours of new members without a MAC: one empty
        datagram to the discard port makes it send ARP / neighbour solicitation; until the answer,
        their frames count as member misses."""
        for m in members:
            if self._probes and m.mac == xdp_image.NO_MAC and not m.drop:
                try:
                    self._probes[m.ip.version].sendto(b"", (str(m.ip), 9))
                except (OSError, KeyError):
                    pass  # no route: the program's FIB lookup fails the same way and counts it

    def counters(self) -> Counters:
        with self._lock:
            self._require_open()
            per_lb = [self._stats(i) for i in range(NUM_LBS + 1)]
        out = Counters()
        glob = per_lb[L.STATS_GLOBAL]["lb"]
        for i, name in enumerate(GLOBAL_COUNTERS):
            out.glob[name] = int(glob[i])
        for lb_id in range(NUM_LBS):
            s = per_lb[lb_id]
            if lb_id in self.installed.lbs or s["lb"].any():
                out.lb_counters(lb_id).update((n, int(v)) for n, v in zip(LB_COUNTERS, s["lb"]))
            for member_id in np.nonzero(s["member"].any(axis=1))[0]:
                out.member_counters(lb_id, int(member_id)).update(
                    (n, int(v)) for n, v in zip(MEMBER_COUNTERS, s["member"][member_id]))
        for key in self.installed.members:
            out.member_counters(*key)
        return out

    def _stats(self, index: int) -> np.void:
        """One stats entry summed over the CPUs."""
        buf = bytearray(self._ncpu * L.STATS.itemsize)  # per-CPU values are 8-byte aligned: STATS is
        key = ffi.from_buffer(xdp_image.u32(index))
        check(self._lib.bpf_map_lookup_elem(self._fd["stats"], key, ffi.from_buffer(buf)), "read stats")
        per_cpu = np.frombuffer(buf, L.STATS)
        total = np.zeros(1, L.STATS)[0]
        total["lb"], total["member"] = per_cpu["lb"].sum(axis=0), per_cpu["member"].sum(axis=0)
        return total

    def run(self, frame: bytes) -> tuple[int, bytes]:
        """One frame through the loaded program with BPF_PROG_TEST_RUN: (XDP verdict, output frame).
        Counters count it like a received frame. The kernel refuses frames shorter than an
        Ethernet header (EINVAL): no NIC delivers those."""
        self._require_open()
        frame = bytes(frame)
        out = ffi.new("char[]", len(frame) + 256)
        opts = ffi.new("struct bpf_test_run_opts *")
        opts.sz = ffi.sizeof("struct bpf_test_run_opts")
        keep = ffi.from_buffer(frame)
        opts.data_in, opts.data_size_in = keep, len(frame)
        opts.data_out, opts.data_size_out = out, len(out)
        opts.repeat = 1
        try:
            check(self._lib.bpf_prog_test_run_opts(self.prog_fd, opts), "BPF_PROG_TEST_RUN")
        except LibbpfError as e:
            raise _refusal(e, "test run") from None
        return opts.retval, ffi.buffer(out, opts.data_size_out)[:]

    def attach_pass(self, interface: str) -> None:
        """Attach a program that passes every frame to `interface` (of the calling thread's network
        namespace) until close: the far end of a veth pair only receives what the LB sends back
        with XDP_TX when it runs an XDP program itself (see ejlb_xdp_pass in ejlb_xdp.c)."""
        with self._lock:
            self._require_open()
            try:
                link = check_ptr(self._lib.bpf_program__attach_xdp(self._pass_prog, socket.if_nametoindex(interface)),
                                 f"attach pass program to {interface}")
            except LibbpfError as e:
                raise _refusal(e, f"attach to {interface}") from None
            self._pass_links.append(link)

    def _require_open(self) -> None:
        if self._obj is None:
            raise RuntimeError("XDP data plane is closed")

    def close(self) -> None:
        with self._lock:
            for probe in self._probes.values():
                probe.close()
            self._probes = {}
            for link in self._pass_links + ([self._link] if self._link is not None else []):
                self._lib.bpf_link__destroy(link)
            self._pass_links, self._link = [], None
            if self._obj is not None:
                self._lib.bpf_object__close(self._obj)
                self._obj = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def create_backend(config=None, interface: str | None = None, egress: Mapping[str, str] | None = None,
                   pass_other: bool | None = None, resolve_macs: bool | None = None) -> XDPLB:
    """Registry factory (`backends.create_backend("xdp", config, interface="eth0")`)."""
    return XDPLB(interface, egress=egress, pass_other=pass_other, resolve_macs=resolve_macs)
