"""`ejlb serve --node-process`: the data plane as a local `ejlb lb-node` that outlives `ejlb serve`.

The node's address, token and pid live in `<db>.node` (mode 0600) beside the control plane's
database, so a control plane restarted after a crash finds the node that kept forwarding and
programs it again instead of starting a second one. A clean stop (SIGTERM) of `ejlb serve` stops
the node too; `kill -9` leaves it forwarding.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ejlb.cli.main import EXIT_FAILURE, EXIT_USAGE, CLIError

START_TIMEOUT_S = 20.0
_children: dict[int, subprocess.Popen] = {}  # nodes this process started (to reap them on stop)


def _state_file(db: str) -> Path:
    if db == ":memory:":
        raise CLIError("--node-process needs a persistent --db: the node is found again through it", EXIT_USAGE)
    return Path(db + ".node")


def _answers(url: str) -> bool:
    from ejlb.node.client import NodeClient, NodeError, parse_url

    u = parse_url(url)
    c = NodeClient(*u.nodes[0], u.token, timeout=2.0)
    try:
        c.start_time()
        return True
    except NodeError:
        return False
    finally:
        c.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure(db: str, backend: str, node_args: list[str]) -> str:
    """The snp4:// URL of the local node of `db`, started (detached) unless it already runs."""
    path = _state_file(db)
    if path.exists():
        try:
            state = json.loads(path.read_text())
            if _answers(state["url"]):
                return state["url"]
        except (ValueError, KeyError, OSError):
            pass  # unreadable or stale: start a new node
    token, port = secrets.token_urlsafe(24), _free_port()
    out = Path(db + ".node.out")
    argv = [sys.executable, "-c", "from ejlb.cli.main import main; main()", "lb-node", "--listen",
            f"127.0.0.1:{port}", "--backend", backend, "--state-file", db + ".node.rules", *node_args]
    env = dict(os.environ, EJLB_NODE_TOKEN=token)  # not on the command line, where ps shows it
    proc = subprocess.Popen(argv, stdout=open(out, "wb"), stderr=open(db + ".node.log", "ab"),
                            stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True)  # its own session: a signal to serve's group spares it
    deadline = time.monotonic() + START_TIMEOUT_S
    while not out.read_text().strip():  # the node prints its address once it serves
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise CLIError(f"--node-process: the node did not start (see {db}.node.log)", EXIT_FAILURE)
        time.sleep(0.05)
    _children[proc.pid] = proc
    url = f"snp4://{token}@127.0.0.1:{port}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "pid": proc.pid}, f)
    return url


def stop(db: str) -> None:
    """Stop the local node of `db` (a clean shutdown of serve)."""
    path = _state_file(db)
    try:
        pid = json.loads(path.read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
        child = _children.pop(pid, None)
        if child is not None:
            child.wait(START_TIMEOUT_S)
        else:  # started by an earlier serve: not ours to reap, wait until it is gone
            for _ in range(int(START_TIMEOUT_S * 10)):
                os.kill(pid, 0)
                time.sleep(0.1)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    path.unlink(missing_ok=True)
