"""`ejlb serve --node-process`: the data plane as a local lb-node that outlives a crash of serve."""
import json
import os
import signal
import subprocess
import sys
import time

from ejlb.control.client import LBManager
from ejlb.node.client import NodeClient, parse_url

EJLB = [sys.executable, "-c", "from ejlb.cli.main import main; main()"]


def _serve(tmp_path, name):
    out = tmp_path / f"{name}.out"
    p = subprocess.Popen(EJLB + ["serve", "--node-process", "--db", str(tmp_path / "cp.db"), "--listen", "127.0.0.1:18093",
                                 "--instance", "lb_id=0,ipv4=127.0.93.1,ipv6=none,ports=19593-19594"],
                         stdout=open(out, "w"), stderr=open(tmp_path / f"{name}.log", "w"))
    for _ in range(300):
        if out.read_text().startswith("ejfat://") or p.poll() is not None:
            break
        time.sleep(0.1)
    assert p.poll() is None, (tmp_path / f"{name}.log").read_text()[-2000:]
    return p, out.read_text().split()[0]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_the_local_node_survives_a_crash_of_serve_and_is_found_again(tmp_path):
    serve, admin = _serve(tmp_path, "serve1")
    state_file = tmp_path / "cp.db.node"
    state = json.loads(state_file.read_text())
    assert oct(state_file.stat().st_mode & 0o777) == "0o600" and state["url"].startswith("snp4://")
    u = parse_url(state["url"])
    assert u.token not in open(f"/proc/{state['pid']}/cmdline").read()  # the token is not on a command line
    with LBManager(admin) as m:
        lb = m.reserve("np", ip_family="ipv4")
    node = NodeClient(*u.nodes[0], u.token)
    time.sleep(1.5)  # a controller tick loads the node
    assert node.stats()["lb_ctx_rx_pkt_counter"] is not None
    started = node.start_time()

    serve.send_signal(signal.SIGKILL)
    serve.wait(10)
    assert _alive(state["pid"]) and node.start_time() == started  # forwarding on, not restarted

    serve, _ = _serve(tmp_path, "serve2")
    assert json.loads(state_file.read_text()) == state  # the same node, found through the database
    with LBManager(lb.uri) as m:
        for _ in range(50):
            issues = [h.type for h in m.status().healthIssues]
            if "dataplane_node_down" not in issues:
                break
            time.sleep(0.1)
        assert "dataplane_node_down" not in issues
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(20) == 0
    for _ in range(100):
        if not _alive(state["pid"]):
            break
        time.sleep(0.1)
    assert not _alive(state["pid"]) and not state_file.exists()  # a clean stop takes the node along
    node.close()


def test_node_process_needs_a_database(tmp_path):
    r = subprocess.run(EJLB + ["serve", "--node-process", "--listen", "127.0.0.1:0"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "--node-process needs a persistent --db" in r.stderr
