"""The `ejlb` operator verbs, run as a subprocess against a real control plane on loopback gRPC."""
from __future__ import annotations

import csv
import io
import json
import socket
import time

import pytest

from cli_helpers import ejlb
from ejlb.control.config import ControlConfig
from ejlb.control.server import ControlPlane
from ejlb.uri import EjfatURI


@pytest.fixture(scope="module")
def admin_uri():
    # No data flows in these tests: the memory backend records tables without forwarding.
    cp = ControlPlane(ControlConfig(port=0, backend="memory", controller_period=0.1)).start()
    try:
        yield cp.admin_uri
    finally:
        cp.stop()


def _reserve(admin_uri: str, name: str, *extra: str) -> dict:
    r = ejlb("--json", "reserve", name, "--duration", "10m", *extra, uri=admin_uri)
    assert r.code == 0, r.err
    return r.json()


def _status(uri: str) -> dict:
    r = ejlb("--json", "status", uri=uri)
    assert r.code == 0, r.err
    return r.json()


def test_reserve_register_send_state_status_free(admin_uri):
    res = _reserve(admin_uri, "cli-flow", "-s", "10.1.2.3")
    lb_uri = res["ejfatUri"]
    parsed = EjfatURI.parse(lb_uri)
    assert parsed.lb_id == res["lbId"] and parsed.token == res["token"]
    assert res["reservation"]["lbId"] == res["lbId"]

    reg = ejlb("--json", "register", "--name", "cli-w1", "--ip", "127.0.0.1", "--port", "23456",
               "--port-range", "2", "--weight", "2", uri=lb_uri)
    assert reg.code == 0, reg.err
    session_uri = reg.json()["ejfatUri"]
    assert EjfatURI.parse(session_uri).session_id == reg.json()["sessionId"]

    st = ejlb("send-state", "--fill", "25%", "--control-signal", "0.5", uri=session_uri)
    assert st.code == 0, st.err
    assert "session " + reg.json()["sessionId"] in st.out

    # The controller (0.1 s period) gives the only ready worker the whole calendar.
    deadline = time.monotonic() + 5
    while True:
        status = _status(lb_uri)
        workers = status["workers"]
        if workers and workers[0]["slotsAssigned"] == 512 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    (w,) = workers
    assert w["name"] == "cli-w1" and w["udpPort"] == 23456 and w["portRange"] == "PORT_RANGE_4"
    assert w["fillPercent"] == pytest.approx(0.25) and w["controlSignal"] == pytest.approx(0.5)
    assert w["slotsAssigned"] == 512
    assert status["senderAddresses"] == ["10.1.2.3"]

    human = ejlb("status", uri=lb_uri)
    assert human.code == 0 and "cli-w1" in human.out and "127.0.0.1:23456-23459" in human.out

    assert ejlb("deregister", uri=session_uri).code == 0
    assert _status(lb_uri)["workers"] == []

    freed = ejlb("--json", "free", uri=lb_uri)
    assert freed.code == 0 and freed.json() == {"lbId": res["lbId"], "freed": True}
    gone = ejlb("status", res["lbId"], uri=admin_uri)
    assert gone.code == 4 and "not found" in gone.err and res["lbId"] in gone.err


def test_export_prints_a_shell_line_with_a_parseable_uri(admin_uri):
    r = ejlb("reserve", "cli-export", "-d", "5m", "--export", uri=admin_uri)
    assert r.code == 0, r.err
    assert "no sender is allowed yet" in r.err  # reserved without -a: the hint goes to stderr, not eval
    line = r.out.strip()
    assert line.startswith("export EJFAT_URI='") and line.endswith("'") and "\n" not in line
    uri = EjfatURI.parse(line[len("export EJFAT_URI='"):-1])
    assert uri.lb_id and uri.token and uri.data_address(4)
    assert ejlb("free", uri=str(uri)).code == 0


def test_senders_overview_version_timeseries_extend(admin_uri):
    res = _reserve(admin_uri, "cli-misc")
    lb_uri = res["ejfatUri"]
    assert ejlb("add-senders", "192.0.2.7", "2001:db8::7", uri=lb_uri).code == 0
    auto = ejlb("--json", "add-senders", uri=lb_uri)  # this host's address towards the data plane
    assert auto.code == 0, auto.err
    assert auto.json()["allowed"] == ["127.0.0.1"]
    assert set(_status(lb_uri)["senderAddresses"]) == {"192.0.2.7", "2001:db8::7", "127.0.0.1"}
    assert ejlb("remove-senders", "192.0.2.7", uri=lb_uri).code == 0
    assert set(_status(lb_uri)["senderAddresses"]) == {"2001:db8::7", "127.0.0.1"}

    ov = ejlb("--json", "overview", uri=admin_uri)
    assert ov.code == 0
    assert "cli-misc" in [lb["name"] for lb in ov.json()["loadBalancers"]]

    ver = ejlb("--json", "version", uri=lb_uri)
    assert ver.code == 0 and ver.json()["client"] and ver.json()["server"]["compatTag"]

    ext = ejlb("--json", "extend", "--duration", "2h", uri=lb_uri)
    assert ext.code == 0, ext.err
    expires = _status(lb_uri)["expiresAt"]
    assert expires[:13] == ext.json()["until"][:13]  # same hour: the new expiry was applied

    ts = ejlb("timeseries", f"/lb/{res['lbId']}/*", "--since", "1h", uri=lb_uri)
    assert ts.code == 0, ts.err
    rows = list(csv.reader(io.StringIO(ts.out)))
    assert rows[0] == ["name", "unit", "timestamp_ms", "value"]
    assert all(r[0].startswith(f"/lb/{res['lbId']}/") and int(r[2]) > 0 for r in rows[1:])
    assert ejlb("free", uri=lb_uri).code == 0


def test_monitor_json_lines(admin_uri):
    res = _reserve(admin_uri, "cli-mon")
    r = ejlb("--json", "monitor", "-n", "2", "-i", "0.2", uri=res["ejfatUri"])
    assert r.code == 0, r.err
    lines = [json.loads(line) for line in r.out.splitlines()]
    assert len(lines) == 2 and all("currentPredictedEventNumber" in s for s in lines)
    assert lines[1]["timestamp"] > lines[0]["timestamp"]
    human = ejlb("monitor", "-n", "1", uri=res["ejfatUri"])
    assert human.code == 0 and f"load balancer {res['lbId']}" in human.out
    assert ejlb("free", uri=res["ejfatUri"]).code == 0


def test_tokens_create_list_children_revoke(admin_uri):
    res = _reserve(admin_uri, "cli-tokens")
    lb = res["lbId"]
    made = ejlb("--json", "tokens", "create", "reader", "-p", f"reservation:{lb}:read_only", uri=admin_uri)
    assert made.code == 0, made.err
    reader = EjfatURI.parse(res["ejfatUri"]).with_(token=made.json()["token"])
    assert ejlb("status", uri=str(reader)).code == 0
    denied = ejlb("free", uri=str(reader))
    assert denied.code == 3 and "refused" in denied.err

    mine = ejlb("--json", "tokens", "list", uri=str(reader))
    assert mine.code == 0
    perms = mine.json()["permissions"]
    assert perms == [{"resourceType": "RESERVATION", "resourceId": lb, "permission": "READ_ONLY"}]
    kids = ejlb("--json", "tokens", "children", uri=admin_uri)
    assert "reader" in [t["name"] for t in kids.json()]

    token_id = str(mine.json()["id"])
    assert ejlb("tokens", "revoke", token_id, uri=admin_uri).code == 0
    revoked = ejlb("status", uri=str(reader))
    assert revoked.code == 3
    assert ejlb("free", uri=res["ejfatUri"]).code == 0


@pytest.mark.parametrize("uri, args, code, message", [
    (None, ("status",), 2, "EJFAT_URI"),  # no URI at all
    (None, ("--uri", "http://x:1/", "status"), 2, "scheme"),
    ("admin", ("reserve", "x", "--duration", "3 fortnights"), 2, "not a duration"),
    ("admin", ("reserve", "x", "--until", "2001-01-01T00:00:00"), 2, "in the past"),
    ("admin", ("reserve", "x", "-s", "not-an-ip"), 2, "not an IPv4 or IPv6 address"),
    ("admin", ("free", "abc"), 2, "LB_ID='abc'"),
    ("lb", ("register", "--name", "w", "--ip", "127.0.0.1", "--port", "80"), 2, "--port"),
    ("lb", ("send-state", "--fill", "150%"), 2, "outside 0..1"),
    ("lb", ("send-state", "--fill", "0.5"), 2, "session id is missing"),
    ("admin", ("tokens", "create", "t", "-p", "reservation:read_only"), 2, "needs a decimal id"),
    ("admin", ("status", "424242"), 4, "not found"),
])
def test_bad_arguments_give_documented_exit_codes(admin_uri, uri, args, code, message):
    uris = {None: None, "admin": admin_uri, "lb": admin_uri.rstrip("/") + "/lb/1"}
    r = ejlb(*args, uri=uris[uri])
    assert r.code == code, (r.out, r.err)
    (line,) = [x for x in r.err.splitlines() if x.lower().startswith("error")]  # one error line, no traceback
    assert message in line and "Traceback" not in r.err


def test_wrong_token_is_refused_with_exit_3(admin_uri):
    bad = EjfatURI.parse(admin_uri).with_(token="0" * 32)
    r = ejlb("overview", uri=str(bad))
    assert r.code == 3 and r.err.startswith("error: refused:")


def test_unreachable_control_plane_is_one_line_exit_1():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = ejlb("version", uri=f"ejfat://tok@127.0.0.1:{port}/", timeout=60)
    assert r.code == 1 and "Traceback" not in r.err and r.err.startswith("error:")


def test_debug_adds_the_traceback_and_keeps_the_exit_code(admin_uri):
    r = ejlb("--debug", "status", "424242", uri=admin_uri)
    assert r.code == 4
    assert "Traceback" in r.err and r.err.strip().splitlines()[-1].startswith("error: not found:")


def test_export_encode_brackets_prints_percent_encoded_ipv6_that_parses_back(admin_uri):
    r = ejlb("reserve", "cli-export6", "-d", "5m", "--export", "--encode-brackets", uri=admin_uri)
    assert r.code == 0, r.err
    text = r.out.strip()[len("export EJFAT_URI='"):-1]
    query = text.partition("?")[2]
    assert "%5B::1%5D:" in query and "[" not in query and "]" not in query
    uri = EjfatURI.parse(text)
    assert str(uri.data_address(6).ip) == "::1" and str(uri.sync_address(6).ip) == "::1"
    assert uri.format(encode_brackets=True) == text
    reg = ejlb("register", "--name", "w", "--ip", "127.0.0.1", "--port", "20000", "--export", "--encode-brackets",
               uri=text)
    assert reg.code == 0, reg.err
    session = reg.out.strip()[len("export EJFAT_URI='"):-1]
    assert "%5B::1%5D" in session and EjfatURI.parse(session).session_id
    assert ejlb("free", uri=text).code == 0
