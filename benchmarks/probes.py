"""Machine-limit probes (../shared/bench) run from Python, so every ejlb benchmark reports its figures
as a ratio to the probe of the same mode measured in the same run.

    from probes import Probes
    p = Probes(seconds=2)
    p.sendmmsg(1472)   -> Figure(gbps, mpps)   one thread, sendmmsg batches of 64 (sender side)
    p.gso(8972)        -> Figure               one thread, UDP GSO super-datagrams (sender side)
    p.gro(8972)        -> Figure               recvmmsg + UDP GRO drain of that GSO stream
    p.recvmmsg(1472)   -> Figure               recvmmsg drain of the sendmmsg stream

Each Figure also carries `cpu_s`, the CPU time (user + system, from wait4) of that probe process, and
`busy`, its CPU-seconds per second of its own traffic interval (packets / Mpps). Figures are cached per (mode, size) for the life of the Probes object. The probe sources are compiled
into benchmarks/out/bin (the shared folder is only read). EJLB_BENCH_DIR overrides where they are.
"""
from __future__ import annotations

import os
import pathlib
import random
import re
import subprocess
import time
from dataclasses import dataclass

REPO = pathlib.Path(__file__).resolve().parents[1]
BENCH_DIR = pathlib.Path(os.environ.get("EJLB_BENCH_DIR", REPO.parent / "shared" / "bench"))
OUT = REPO / "benchmarks" / "out" / "bin"
_LINE = re.compile(r"pkts=(\d+) Gbps=([\d.]+) Mpps=([\d.]+)")


@dataclass(frozen=True)
class Figure:
    gbps: float
    mpps: float
    packets: int = 0
    cpu_s: float | None = None  # CPU time of the probe process (user + system); None if not measured

    @property
    def seconds(self) -> float:
        """The interval the probe's own rate refers to (first to last datagram), from packets / Mpps."""
        return self.packets / (self.mpps * 1e6) if self.mpps else 0.0

    @property
    def busy(self) -> float | None:
        """CPU-seconds per second of that interval (1.0 = one core fully busy)."""
        return self.cpu_s / self.seconds if self.cpu_s is not None and self.seconds else None

    def __str__(self) -> str:
        return f"{self.gbps:.2f} Gb/s, {self.mpps:.3f} Mpps"


def ratio(value: float, probe: float) -> float:
    return value / probe if probe else float("nan")


def build() -> pathlib.Path:
    OUT.mkdir(parents=True, exist_ok=True)
    for name in ("udp_limit", "udp_gso", "udp_gro"):
        src, exe = BENCH_DIR / f"{name}.c", OUT / name
        if not src.exists():
            raise FileNotFoundError(f"probe source {src} not found (set EJLB_BENCH_DIR)")
        if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
            subprocess.run(["cc", "-O2", "-Wall", "-o", str(exe), str(src)], check=True)
    return OUT


def _parse(text: str, cpu_s: float | None = None) -> Figure:
    m = _LINE.search(text)
    if not m:
        raise RuntimeError(f"probe printed nothing parseable: {text!r}")
    return Figure(gbps=float(m[2]), mpps=float(m[3]), packets=int(m[1]), cpu_s=cpu_s)


def _reap(proc: subprocess.Popen, timeout: float) -> tuple[str, float]:
    """Wait for proc (its stdout is a pipe and it prints one short line) and return (stdout, CPU
    seconds): wait4 gives that child's own rusage, which Popen.wait would discard."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        time.sleep(0.01)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = proc.stdout.read()
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, out)
    return out, ru.ru_utime + ru.ru_stime


class Probes:
    def __init__(self, seconds: float = 2.0):
        self.seconds = seconds
        self._cache: dict[tuple[str, int], Figure] = {}
        self.bin = build()

    def _pair(self, recv_cmd: list[str], send_cmd: list[str]) -> tuple[Figure, Figure]:
        receiver = subprocess.Popen(recv_cmd, stdout=subprocess.PIPE, text=True)
        sender = None
        try:
            time.sleep(0.3)
            sender = subprocess.Popen(send_cmd, stdout=subprocess.PIPE, text=True)
            sent, sent_cpu = _reap(sender, self.seconds + 30)
            out, recv_cpu = _reap(receiver, 30)
        finally:
            for proc in (sender, receiver):
                if proc is not None and proc.returncode is None:
                    proc.kill()
                    proc.wait()
        return _parse(sent, sent_cpu), _parse(out, recv_cpu)

    def _run(self, mode: str, size: int) -> Figure:
        key = (mode, size)
        if key not in self._cache:
            port = str(random.randint(30000, 49999))
            secs = str(self.seconds)
            if mode in ("sendmmsg", "recvmmsg"):
                s, r = self._pair([str(self.bin / "udp_limit"), "recv", port, str(size), secs],
                                  [str(self.bin / "udp_limit"), "send", port, str(size), secs])
                self._cache[("sendmmsg", size)], self._cache[("recvmmsg", size)] = s, r
            else:
                s, r = self._pair([str(self.bin / "udp_gro"), port],
                                  [str(self.bin / "udp_gso"), port, str(size), secs])
                self._cache[("gso", size)], self._cache[("gro", size)] = s, r
        return self._cache[key]

    def sendmmsg(self, size: int) -> Figure:
        return self._run("sendmmsg", size)

    def recvmmsg(self, size: int) -> Figure:
        return self._run("recvmmsg", size)

    def gso(self, size: int) -> Figure:
        return self._run("gso", size)

    def gro(self, size: int) -> Figure:
        return self._run("gro", size)


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A small Markdown table, for pasting benchmark output into the README."""
    fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    p = Probes()
    for size in (1472, 8972):
        print(f"size {size}: sendmmsg {p.sendmmsg(size)} | recvmmsg {p.recvmmsg(size)} | "
              f"gso {p.gso(size)} | gro {p.gro(size)}")
