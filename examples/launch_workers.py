#!/usr/bin/env python3
"""Start one HPC worker per rank: under MPI, as a Slurm job array / srun task, or as N local processes.

Every rank runs examples/hpc_worker.py's `run_worker` with its own name (PREFIX-RANK) and its own
port block, registers with the reservation in EJFAT_URI, and prints its JSON report. How the rank
is found, first match wins:

    mpirun -n 8 python examples/launch_workers.py --ip-from-host      # mpi4py: COMM_WORLD rank/size
    sbatch examples/slurm_workers.sbatch                              # SLURM_ARRAY_TASK_ID
    srun -n 8 python examples/launch_workers.py --ip-from-host        # SLURM_PROCID / SLURM_NTASKS
    python examples/launch_workers.py --local 3 --ip 127.0.0.1        # N processes on this host

Under MPI rank 0 also gathers every rank's report and prints the total. With --local the parent
waits for its children and prints their reports plus a total line.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hpc_worker import run_worker  # noqa: E402

RANK_ENV = "EJLB_WORKER_RANK"


def find_rank() -> tuple[int, int, object | None]:
    """(rank, size, MPI communicator or None)."""
    if RANK_ENV in os.environ:  # a child of --local
        return int(os.environ[RANK_ENV]), int(os.environ.get(RANK_ENV + "S", "1")), None
    try:
        from mpi4py import MPI  # optional; only when launched by mpirun/srun with MPI

        comm = MPI.COMM_WORLD
        if comm.Get_size() > 1:
            return comm.Get_rank(), comm.Get_size(), comm
    except ImportError:
        pass
    if "SLURM_ARRAY_TASK_ID" in os.environ:
        return int(os.environ["SLURM_ARRAY_TASK_ID"]), int(os.environ.get("SLURM_ARRAY_TASK_COUNT", "1")), None
    if "SLURM_PROCID" in os.environ:
        return int(os.environ["SLURM_PROCID"]), int(os.environ.get("SLURM_NTASKS", "1")), None
    return 0, 1, None


def host_ip() -> str:
    """This node's address on the route to the control plane / LB (what the LB must send to)."""
    from ejlb.uri import EjfatURI

    uri = EjfatURI.from_env()
    target = str(uri.data_address().ip) if uri.data else uri.host.strip("[]")
    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((target, 9))
        return s.getsockname()[0]


def launch_local(n: int, argv: list[str]) -> int:
    """Run this script n times as children, one rank each; print their reports and a total."""
    children = []
    for rank in range(n):
        env = dict(os.environ, **{RANK_ENV: str(rank), RANK_ENV + "S": str(n)})
        children.append(subprocess.Popen([sys.executable, __file__, *argv], env=env, stdout=subprocess.PIPE, text=True))
    reports = []
    for child in children:
        out, _ = child.communicate()
        reports += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    for r in reports:
        print(json.dumps(r))
    print(json.dumps({"total_events": sum(r["events"] for r in reports), "workers": len(reports)}), flush=True)
    return max((c.returncode for c in children), default=0)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--local", type=int, default=None, help="start this many worker processes on this host")
    p.add_argument("--ip", default=None, help="address to receive on (default 127.0.0.1)")
    p.add_argument("--ip-from-host", action="store_true", help="use this node's address towards the LB")
    p.add_argument("--base-port", type=int, default=0, help="rank r listens from BASE + r * 2^bits (0: any free)")
    p.add_argument("--port-bits", type=int, default=1)
    p.add_argument("--prefix", default="worker", help="worker names are PREFIX-RANK")
    p.add_argument("--events", type=int, default=None, help="per worker: stop after this many events")
    p.add_argument("--idle", type=float, default=10.0, help="per worker: stop after this many idle seconds")
    p.add_argument("--wait", type=float, default=60.0, help="per worker: stop if no first event by then")
    a = p.parse_args(argv)
    if a.local:
        child_argv = [x for i, x in enumerate(argv) if x != "--local" and (i == 0 or argv[i - 1] != "--local")]
        return launch_local(a.local, child_argv)

    rank, size, comm = find_rank()
    ip = host_ip() if a.ip_from_host else (a.ip or "127.0.0.1")
    port = a.base_port + rank * (1 << a.port_bits) if a.base_port else 0
    report = run_worker(os.environ.get("EJFAT_URI"), ip=ip, port=port, port_bits=a.port_bits,
                        name=f"{a.prefix}-{rank}", events=a.events, idle=a.idle, wait=a.wait)
    report.update(rank=rank, ranks=size)
    if comm is not None:
        reports = comm.gather(report, root=0)
        if rank == 0:
            for r in reports:
                print(json.dumps(r))
            print(json.dumps({"total_events": sum(r["events"] for r in reports), "workers": size}), flush=True)
    else:
        print(json.dumps(report), flush=True)
    return 0 if report["mismatched"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
