"""cocotb side of the `fpga-sim` backend in another process (ejlb.dataplane.fpga_sim.launch):
serves register reads/writes and frame batches of the simulated ejlb_lb over TCP on loopback.

Protocol: one JSON object per line, one reply per request.
  {"op": "read", "addr": A}                 -> {"value": V}
  {"op": "write", "addr": A, "value": V}    -> {}
  {"op": "frames", "frames": ["hex", ...]}  -> {"out": ["hex", ...], "aborted": n}
  {"op": "close"}                           -> {} and the simulation ends
The serving thread runs under cocotb.task.bridge: while it waits for a request the simulator is
paused (no simulated time passes and no CPU is spent); each request runs as a resumed coroutine.
"""
from __future__ import annotations

import json
import os
import socket

import cocotb
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiStreamFrame

from harness import TB, _aborted

IDLE_CYCLES = 64  # after the last input beat: the pipeline is at most ~20 cycles deep


@cocotb.test()
async def serve(dut):
    tb = TB(dut)
    await tb.reset()

    async def frames(batch: list[bytes]) -> tuple[list[bytes], int]:
        for f in batch:
            if f:
                await tb.source.send(AxiStreamFrame(f))
        await tb.source.wait()
        out, aborted, quiet = [], 0, 0
        while quiet < IDLE_CYCLES:
            await RisingEdge(dut.clk)
            quiet = 0 if int(dut.m_axis_tvalid.value) else quiet + 1
            while not tb.sink.empty():
                got = tb.sink.recv_nowait()
                if _aborted(got):
                    aborted += 1
                else:
                    out.append(bytes(got.tdata))
        return out, aborted

    read, write, run_frames = resume(tb.read), resume(tb.write), resume(frames)
    server = socket.create_server(("127.0.0.1", 0))
    with open(os.environ["EJLB_SIM_PORT_FILE"] + ".tmp", "w") as fh:
        fh.write(str(server.getsockname()[1]))
    os.rename(os.environ["EJLB_SIM_PORT_FILE"] + ".tmp", os.environ["EJLB_SIM_PORT_FILE"])

    def loop() -> None:
        server.settimeout(60)
        conn, _ = server.accept()
        conn.settimeout(None)
        with conn, conn.makefile("rwb") as fh:
            for line in fh:
                req = json.loads(line)
                op = req.get("op")
                if op == "read":
                    reply = {"value": read(int(req["addr"]))}
                elif op == "write":
                    write(int(req["addr"]), int(req["value"]))
                    reply = {}
                elif op == "frames":
                    out, aborted = run_frames([bytes.fromhex(h) for h in req["frames"]])
                    reply = {"out": [f.hex() for f in out], "aborted": aborted}
                elif op == "close":
                    fh.write(b"{}\n")
                    fh.flush()
                    return
                else:
                    reply = {"error": f"op={op!r}: unknown"}
                fh.write(json.dumps(reply).encode() + b"\n")
                fh.flush()

    await bridge(loop)()
    server.close()
    await ClockCycles(dut.clk, 2)
