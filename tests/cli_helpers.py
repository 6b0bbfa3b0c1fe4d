"""Shared by the CLI, demo and example tests: run the real `ejlb` executable in a subprocess, and
an embedded control plane on an ephemeral loopback port."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

EJLB = str(Path(sys.executable).with_name("ejlb"))
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


def ejlb(*args: str, uri: str | None = None, timeout: float = 60, env: dict | None = None) -> Run:
    """`ejlb ARGS...` with EJFAT_URI=uri (unset when None); never inherits the caller's EJFAT_URI."""
    environ = {k: v for k, v in os.environ.items() if k != "EJFAT_URI"}
    environ.update(COLUMNS="200", **(env or {}))
    if uri is not None:
        environ["EJFAT_URI"] = uri
    p = subprocess.run([EJLB, *args], capture_output=True, text=True, timeout=timeout, env=environ)
    return Run(p.returncode, p.stdout, p.stderr)


def run_python(script: Path, *args: str, timeout: float = 90, env: dict | None = None) -> Run:
    environ = {k: v for k, v in os.environ.items() if k != "EJFAT_URI"}
    environ.update(env or {})
    p = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout,
                       env=environ, cwd=str(REPO))
    return Run(p.returncode, p.stdout, p.stderr)
