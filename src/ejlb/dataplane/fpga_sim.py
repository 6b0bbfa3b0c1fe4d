"""A pynq `Device` whose registers are the AXI4-Lite port of the HDL running in cocotb, so the
unchanged PYNQ driver (`ejlb.dataplane.fpga.EjlbLB`) programs the simulated design. Two bridges:

- in the simulator process (`cocotb_device`): the driver code runs in a thread started with
  `cocotb.task.bridge`, and each register access blocks that thread on a `cocotb.task.resume`d
  AXI4-Lite transaction while simulated time advances (cocotb_tests/tb_lb.py uses this);
- from any other process (`launch`): the simulation runs as a subprocess serving register accesses
  and frame batches over TCP on loopback (cocotb_tests/tb_server.py); `SimProcessBackend` is then
  an ordinary control-plane backend (`create_backend("fpga-sim")`) that can also push frames.
  It needs a source checkout (hdl/ and cocotb_tests/ next to src/).
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

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


class SimConnection:
    """Client of cocotb_tests/tb_server.py: one request/reply line at a time (thread-safe)."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self._fh = self._sock.makefile("rwb")
        self._lock = threading.Lock()

    def call(self, **req) -> dict:
        with self._lock:
            self._fh.write(json.dumps(req).encode() + b"\n")
            self._fh.flush()
            line = self._fh.readline()
        if not line:
            raise ConnectionError("fpga-sim: the simulation closed the connection")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"fpga-sim: {reply['error']}")
        return reply

    def close(self) -> None:
        try:
            self.call(op="close")
        finally:
            self._fh.close()
            self._sock.close()


class SimProcessBackend(FpgaBackend):
    """`fpga-sim` in its own process: the driver over TCP, plus `forward(frames)` for tests."""

    def __init__(self, conn: SimConnection, proc: subprocess.Popen, workdir: tempfile.TemporaryDirectory) -> None:
        self.conn, self.proc, self._workdir = conn, proc, workdir
        device = SimDevice(lambda a: conn.call(op="read", addr=a)["value"],
                           lambda a, v: conn.call(op="write", addr=a, value=v))
        ip = EjlbLB(ip_description(device))
        ip.clear(rams=False)  # the simulation starts with zero RAM
        super().__init__(ip)

    def forward(self, frames) -> tuple[list[bytes], int]:
        """Push frames through the simulated LB: (output frames in order, aborted frame count)."""
        reply = self.conn.call(op="frames", frames=[bytes(f).hex() for f in frames])
        return [bytes.fromhex(h) for h in reply["out"]], reply["aborted"]

    def close(self) -> None:
        try:
            self.conn.close()
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._workdir.cleanup()


def launch(data_width: int = 512, timeout_s: float = 600.0) -> SimProcessBackend:
    """Build (cached) and start the simulation in a subprocess; returns the connected backend."""
    repo = Path(__file__).resolve().parents[3]
    if not (repo / "cocotb_tests" / "tb_server.py").exists():
        raise RuntimeError(f"fpga-sim: no source checkout at {repo} (needs hdl/ and cocotb_tests/)")
    workdir = tempfile.TemporaryDirectory(prefix="ejlb-fpga-sim-")
    port_file = Path(workdir.name) / "port"
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import sim; "
            "sim.run(int(sys.argv[2]), 'tb_server', extra_env={'EJLB_SIM_PORT_FILE': sys.argv[3]})")
    proc = subprocess.Popen([sys.executable, "-c", code, str(repo / "cocotb_tests"), str(data_width), str(port_file)],
                            stdout=open(Path(workdir.name) / "sim.log", "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log = (Path(workdir.name) / "sim.log").read_text(errors="replace")[-2000:]
            workdir.cleanup()
            raise RuntimeError(f"fpga-sim: the simulation did not start (exit {proc.returncode}):\n{log}")
        time.sleep(0.2)
    return SimProcessBackend(SimConnection(int(port_file.read_text())), proc, workdir)


def create_backend(config=None, *, device: SimDevice | None = None, data_width: int = 512) -> FpgaBackend:
    """Factory of the `fpga-sim` backend (ejlb.dataplane.backends): on the `device` of a cocotb
    simulation this process runs in (`cocotb_device(axil_master)`), else a simulation subprocess."""
    if device is not None:
        return open_sim(device)
    return launch(data_width)
