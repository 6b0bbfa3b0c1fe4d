"""A pynq `Device` whose registers are the AXI4-Lite port of the HDL running in cocotb, so the
unchanged PYNQ driver (`ejlb.dataplane.fpga.EjlbLB`) programs the simulated design.

cocotb runs Python inside the simulator: the driver code runs in a thread started with
`cocotb.task.bridge`, and each register access blocks that thread on a `cocotb.task.resume`d
AXI4-Lite transaction while simulated time advances. Nothing here runs without cocotb.
"""
from __future__ import annotations

from pynq.pl_server.device import Device

from ejlb.dataplane.fpga import EjlbLB, FpgaBackend, ip_description


class SimDevice(Device):
    """REGISTER_RW device over blocking `read_word(addr) -> int` / `write_word(addr, value)`."""

    def __init__(self, read_word, write_word, tag: str = "ejlb-cocotb-sim") -> None:
        super().__init__(tag)
        self.capabilities = {"REGISTER_RW": True}
        self._read_word, self._write_word = read_word, write_word
        self.accesses = 0

    def read_registers(self, address: int, length: int) -> bytes:
        out = b""
        for a in range(address, address + length, 4):
            self.accesses += 1
            out += int(self._read_word(a)).to_bytes(4, "little")
        return out[:length]

    def write_registers(self, address: int, data: bytes) -> None:
        data = bytes(data).ljust(-(-len(data) // 4) * 4, b"\0")
        for k in range(0, len(data), 4):
            self.accesses += 1
            self._write_word(address + k, int.from_bytes(data[k : k + 4], "little"))


def cocotb_device(axil_master) -> SimDevice:
    """A SimDevice over a cocotbext-axi `AxiLiteMaster`; call the driver from a bridge thread."""
    from cocotb.task import resume

    async def read_word(addr: int) -> int:
        return int.from_bytes((await axil_master.read(addr, 4)).data, "little")

    async def write_word(addr: int, value: int) -> None:
        await axil_master.write(addr, value.to_bytes(4, "little"))

    return SimDevice(resume(read_word), resume(write_word))


def open_sim(device: SimDevice) -> FpgaBackend:
    """`fpga-sim` backend: the PYNQ driver on a simulated device. The simulation starts with zero
    RAM (Verilator --x-initial 0), so only the register tables are cleared."""
    ip = EjlbLB(ip_description(device))
    ip.clear(rams=False)
    return FpgaBackend(ip)


def create_backend(config=None, *, device: SimDevice | None = None) -> FpgaBackend:
    """Factory of the `fpga-sim` backend (ejlb.dataplane.backends): needs the `device` of a
    running cocotb simulation (`cocotb_device(axil_master)`)."""
    if device is None:
        raise ValueError("device=None: fpga-sim needs cocotb_device(...) of a running simulation")
    return open_sim(device)
