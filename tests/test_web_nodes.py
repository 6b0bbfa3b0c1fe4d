"""A data plane of LB nodes (the snp4 backend over two real node servers): the system view and page
list each node with its health and counters, the dashboard's history holds each node's packets,
and a stopped node shows as down with its error."""
from __future__ import annotations

import json
import time

import pytest

from browser_tools import Chromium
from control_tools import config, control_plane
from ejlb.control.client import LBManager
from ejlb.dataplane.backends import ReferenceBackend
from ejlb.node.client import NodesBackend
from ejlb.node.server import LBNode, NodeConfig
from ejlb.web.app import WebServer
from web_tools import Http

TOKEN = "node-secret"


@pytest.fixture
def nodes_plane():
    nodes = [LBNode(NodeConfig(port=0, token=TOKEN), ReferenceBackend(), "reference").start() for _ in range(2)]
    backend = NodesBackend(f"snp4://{TOKEN}@" + ",".join(f"127.0.0.1:{n.port}" for n in nodes))
    try:
        with control_plane(config(n_instances=1), backend=backend) as cp:
            web = WebServer(cp, sample_period=0.2).start()
            try:
                with LBManager(cp.admin_uri) as m:
                    res = m.reserve("on-nodes", senders=["127.0.0.1"])
                cp.tick()  # install the tables on both nodes
                yield cp, web, nodes, res
            finally:
                web.stop()
    finally:
        backend.close()
        for n in nodes:
            n.stop()


def _until(fn, what: str):
    deadline = time.monotonic() + 20  # a failure bound only
    while not (value := fn()):
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)
    return value


def test_system_and_history_show_each_node(nodes_plane):
    cp, web, nodes, res = nodes_plane
    admin = Http(web.url, cp.config.admin_token)
    addresses = [f"127.0.0.1:{n.port}" for n in nodes]
    listed = admin.get("/api/v1/system").json["dataplane"]["nodes"]
    assert [n["address"] for n in listed] == addresses and all(n["up"] for n in listed)
    assert all(set(n["lb"]["0"]) >= {"rx_packets", "drop_blocked_src"} for n in listed)
    hist = _until(lambda: admin.get(f"/api/v1/lbs/{res.lb_id}/dashboard").json["history"], "a history point")
    assert sorted(hist[-1]["nodes"]) == sorted(addresses)
    nodes[1].stop()
    down = _until(lambda: [n for n in admin.get("/api/v1/system").json["dataplane"]["nodes"] if not n["up"]],
                  "the stopped node down")
    assert [n["address"] for n in down] == [addresses[1]] and down[0]["lastError"] and down[0]["lb"] is None
    # a token that cannot read everything sees no data-plane internals
    with LBManager(cp.admin_uri) as m:
        viewer = m.create_token("viewer", [("RESERVATION", res.lb_id, "READ_ONLY")]).token
    assert "dataplane" not in Http(web.url, viewer).get("/api/v1/system").json


@pytest.mark.skipif(Chromium.find() is None, reason="no chromium binary on PATH (apt-get install chromium)")
def test_pages_show_the_nodes(nodes_plane, tmp_path):
    cp, web, nodes, res = nodes_plane
    with Chromium.launch(tmp_path) as b:
        page = b.page
        page.goto(web.url + "/")
        page.wait_for("document.querySelector('#token')", "the login form")
        page.fill("#token", cp.config.admin_token)
        page.eval("document.querySelector('#login').requestSubmit()")
        page.wait_for("!document.querySelector('#nav').hidden", "the navigation")
        page.goto(f"{web.url}/#/system")
        page.wait_for("document.querySelectorAll('#nodes tr[data-node]').length === 2", "two nodes")
        states = page.eval("[...document.querySelectorAll('#nodes tr[data-node]')].map(r => [r.dataset.node, r.cells[1].innerText])")
        assert states == [[f"127.0.0.1:{n.port}", "up"] for n in nodes]
        page.goto(f"{web.url}/#/lb/{res.lb_id}")
        names = page.wait_for("(() => { const p = [...document.querySelectorAll('path.series')]"
                              ".filter(p => p.dataset.name.startsWith('node ')); return p.length === 2 && p.map(x => x.dataset.name); })()",
                              "a packets line per node")
        assert names == [f"node 127.0.0.1:{n.port} rx" for n in nodes]
        assert not page.errors, json.dumps(page.errors)
