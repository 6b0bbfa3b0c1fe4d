"""The dashboard in a real headless chromium (DevTools protocol) against a live control plane with
the software LB, three registered workers of different speeds and a sender streaming events
through it: what each page renders, that charts are drawn with points, that actions work, and
that a read-only login sees no action buttons.

Screenshots go to a temporary directory, or to EJLB_SCREENSHOTS (the README's come from
`EJLB_SCREENSHOTS=docs/img pytest tests/test_web_browser.py`).
"""
from __future__ import annotations

import json
import os
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from browser_tools import Chromium
from ejlb.control.client import LBManager
from ejlb.control.config import ControlConfig, InstanceConfig
from ejlb.control.errors import NotFound, Unauthenticated
from ejlb.control.server import ControlPlane
from ejlb.demo import _Drain, _wait_for_slots, free_udp_port, pattern
from ejlb.shim.receiver import Receiver
from ejlb.shim.sender import Sender
from ejlb.web.app import WebServer

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(Chromium.find() is None, reason="no chromium binary on PATH (apt-get install chromium)")]

IP = "127.0.0.1"
EVENT_RATE = 200.0  # events/s from the sender
SPEEDS = (1, 2, 4)  # relative worker capacities; total capacity = EVENT_RATE / 0.75
EVENT_SIZE = 16 * 1024


class Stream(threading.Thread):
    """The DAQ: events at EVENT_RATE on an absolute schedule until stopped (with sync packets)."""

    def __init__(self, uri):
        super().__init__(daemon=True, name="web-test-sender")
        self.uri, self.stop_flag, self.sent = uri, threading.Event(), 0

    def run(self) -> None:
        data = pattern(EVENT_SIZE)
        with Sender(self.uri, sync_period=0.5) as tx:
            next_at = time.monotonic()
            while not self.stop_flag.is_set():
                tx.send(data)
                self.sent += 1
                next_at += 1 / EVENT_RATE
                self.stop_flag.wait(max(0.0, next_at - time.monotonic()))


@pytest.fixture(scope="module")
def live():
    port = free_udp_port(IP)
    instances = tuple(InstanceConfig(lb_id=i, ipv4=IP, ipv6=None, data_min_port=port + i, data_max_port=port + i)
                      for i in range(2))
    cp = ControlPlane(ControlConfig(host=IP, port=0, backend="software", sync_ipv6=None, controller_period=0.5,
                                    instances=instances, admin_token="web-admin-" + "0" * 20)).start()
    web = WebServer(cp, sample_period=0.5).start()
    receivers, drains, stream = [], [], None
    try:
        admin = LBManager(cp.admin_uri)
        res = admin.reserve("daq-run", until=timedelta(hours=8), senders=[IP], ip_family="ipv4")
        viewer = admin.create_token("viewer", [("RESERVATION", res.lb_id, "READ_ONLY")])
        base = 0.75 * sum(SPEEDS) / EVENT_RATE
        for i, speed in enumerate(SPEEDS):
            rx = Receiver(res.uri, IP, 0, port_range=2, register=True, name=f"worker-{i + 1}", queue_size=256)
            receivers.append(rx)
            drains.append(_Drain(rx, pattern(EVENT_SIZE), base / speed))
            drains[-1].start()
        _wait_for_slots(admin, res.lb_id, {f"worker-{i + 1}" for i in range(len(SPEEDS))}, 30)
        stream = Stream(res.uri)
        stream.start()
        yield {"cp": cp, "web": web, "admin": admin, "res": res, "viewer": viewer.token}
    finally:
        if stream is not None:
            stream.stop_flag.set()
            stream.join(10)
        for d in drains:
            d.stop()
        for rx in receivers:
            rx.close()
        web.stop()
        cp.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    target = os.environ.get("EJLB_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def browser(tmp_path):
    with Chromium.launch(tmp_path) as b:
        yield b
    assert not b.page.errors, b.page.errors  # no exception, no CSP violation, no console error


def login(page, url: str, token: str) -> None:
    page.goto(url + "/")
    page.wait_for("document.querySelector('#login input#token')", "the login form")
    page.fill("#token", token)
    page.eval("document.querySelector('#login').requestSubmit()")
    page.wait_for("!document.querySelector('#nav').hidden", "the navigation after login")


def rows(page, selector: str) -> list[list[str]]:
    return page.eval(f"[...document.querySelectorAll({json.dumps(selector)})].map(r => [...r.cells].map(c => c.innerText.trim()))")


def test_admin_sees_overview_dashboard_and_charts(live, browser, shots):
    page, web, res = browser.page, live["web"], live["res"]
    login(page, web.url, live["cp"].config.admin_token)
    assert page.eval("document.cookie") == ""  # HttpOnly: the page's script cannot read the session
    page.wait_for("document.querySelector('#lbs tr[data-lb]')", "the reservation in the overview")
    row = rows(page, f"#lbs tr[data-lb='{res.lb_id}']")[0]
    assert row[:3] == [res.lb_id, "daq-run", "0"]
    page.wait_for(f"document.querySelector('#lbs tr[data-lb=\"{res.lb_id}\"]').cells[3].innerText.trim() === '3 / 3'",
                  "three ready workers")
    assert page.eval("!!document.querySelector('#reserve')")  # the admin may reserve
    page.screenshot(shots / "web_overview.png")

    page.goto(f"{web.url}/#/lb/{res.lb_id}")
    page.wait_for("document.querySelectorAll('#workers tr[data-session]').length === 3", "three workers")
    # charts drawn with points: slot share, fill, event rate, sync, drops, packets
    page.wait_for("[...document.querySelectorAll('figure.chart')].length === 6 && "
                  "[...document.querySelectorAll('figure.chart')].every(f => f.querySelector('path.series'))",
                  "six charts with series")
    page.wait_for("[...document.querySelectorAll('path.series[data-name=\"LB rx\"]')].some(p => +p.dataset.points >= 5)",
                  "packets through the LB")
    # let the balancer move slots towards capacity before the screenshot shows them
    page.wait_for("document.querySelectorAll('path.series[data-name$=\" capacity\"]').length === 3 && "
                  "[...document.querySelectorAll('path.series[data-name$=\" capacity\"]')].every(p => +p.dataset.points >= 20)",
                  "capacity estimates for every worker")
    charts = page.eval("Object.fromEntries([...document.querySelectorAll('figure.chart')].map(f => "
                       "[f.querySelector('figcaption').innerText, [...f.querySelectorAll('path.series')].map(p => +p.dataset.points)]))")
    assert set(charts) == {"Slot share vs capacity share", "Queue fill", "Event rate (workers)",
                           "Epoch boundaries: prediction vs sync", "Drops by reason", "Data plane: packets"}
    assert len(charts["Slot share vs capacity share"]) == 6 and min(charts["Slot share vs capacity share"]) >= 2
    assert len(charts["Queue fill"]) == 3 and min(charts["Queue fill"]) >= 2
    assert max(charts["Event rate (workers)"]) >= 2
    assert len(charts["Epoch boundaries: prediction vs sync"]) == 2  # the prediction line and the sync dots
    assert page.eval("document.querySelectorAll('figure.chart circle').length") >= 2  # sync packets drawn
    assert len(charts["Data plane: packets"]) == 4  # LB rx and one line per worker

    # the table shows the numbers the control plane reports (read back from the same status)
    table = {r[0]: r for r in rows(page, "#workers tr[data-session]")}
    assert sorted(table) == ["worker-1", "worker-2", "worker-3"]
    status = {w.name: w for w in live["admin"].status(res.lb_id).workers}
    for name, r in table.items():
        assert r[1] == str(status[name].sessionId)
        assert r[2] == f"{status[name].ipAddress}:{status[name].udpPort}"
        assert int(r[5]) >= 1
    assert sum(int(r[5]) for r in table.values()) == 512
    assert page.eval("document.querySelectorAll('#workers .bar i').length") == 3  # fill bars, coloured by class
    assert page.eval("[...document.querySelectorAll('main button')].some(b => b.dataset.action === 'free')")
    page.screenshot(shots / "web_lb.png")


def test_reserve_sender_actions_extend_and_free_from_the_pages(live, browser):
    page, web, admin = browser.page, live["web"], live["admin"]
    login(page, web.url, live["cp"].config.admin_token)
    page.wait_for("document.querySelector('#reserve')", "the reserve form")
    page.fill("#reserve input[name=name]", "scratch")
    page.fill("#reserve input[name=senders]", IP)
    page.eval("document.querySelector('#reserve').requestSubmit()")
    notice = page.wait_for("document.querySelector('#reserve .notice')?.innerText", "the reservation's URI")
    lb_id = notice.split("Reserved LB ")[1].split(".")[0]
    uri = page.eval("document.querySelector('#reserve code.secret').innerText")
    assert uri.startswith("ejfat://") and f"/lb/{lb_id}?" in uri
    assert admin.get(lb_id).lbId == lb_id and admin.status(lb_id).senderAddresses == [IP]
    page.goto(f"{web.url}/#/lb/{lb_id}")
    page.wait_for("document.querySelector('#add-sender')", "the sender form")
    page.fill("#add-sender input", "127.0.0.77")
    page.eval("document.querySelector('#add-sender').requestSubmit()")
    page.wait_for("[...document.querySelectorAll('ul.senders code')].some(c => c.innerText === '127.0.0.77')",
                  "the added sender")
    assert sorted(admin.status(lb_id).senderAddresses) == ["127.0.0.1", "127.0.0.77"]
    page.eval("[...document.querySelectorAll('ul.senders li')].find(li => li.innerText.includes('127.0.0.77'))"
              ".querySelector('button').click()")
    page.wait_for("![...document.querySelectorAll('ul.senders code')].some(c => c.innerText === '127.0.0.77')",
                  "the removed sender gone")
    assert admin.status(lb_id).senderAddresses == ["127.0.0.1"]
    page.fill("input[name=extend-hours]", "2")
    before = admin.status(lb_id).expiresAt.seconds  # the form's default: 8 hours
    assert 7.9 * 3600 < before - time.time() <= 8 * 3600
    page.eval("document.querySelector('#extend').requestSubmit()")
    page.wait_for(f"fetch('/api/v1/lbs/{lb_id}/status').then(r => r.json())"
                  f".then(s => Date.parse(s.expiresAt) / 1000 < {before - 3600})", "the new expiry")
    assert 1.9 * 3600 < admin.status(lb_id).expiresAt.seconds - time.time() <= 2 * 3600
    page.click("button[data-action=free]")
    page.click("button[data-action=free]")  # second click confirms
    page.wait_for("location.hash === '#/'", "the overview after free")
    with pytest.raises(NotFound):
        admin.get(lb_id)


def test_token_management_and_system_page(live, browser, shots):
    page, web, admin = browser.page, live["web"], live["admin"]
    res = live["res"]
    login(page, web.url, live["cp"].config.admin_token)
    page.goto(f"{web.url}/#/tokens")
    page.wait_for("document.querySelector('#create-token')", "the token form")
    page.fill("#create-token input[name=token-name]", "night-shift")
    page.eval("document.querySelector('#create-token select[name=resourceType]').value = 'RESERVATION'")
    page.fill("#create-token input[name=resourceId]", res.lb_id)
    page.eval("document.querySelector('#create-token').requestSubmit()")
    token = page.wait_for("document.querySelector('#create-token code.secret')?.innerText", "the new token")
    assert len(token) == 64
    page.wait_for("[...document.querySelectorAll('#tokens tr[data-token]')].some(r => r.innerText.includes('night-shift'))",
                  "the new token listed")
    with LBManager(f"ejfat://{token}@{IP}:{live['cp'].port}/") as m:
        assert [g.permission for g in m.list_token_permissions().permissions] == [0]  # READ_ONLY
    page.screenshot(shots / "web_tokens.png")
    tid = page.eval("[...document.querySelectorAll('#tokens tr[data-token]')].find(r => r.innerText.includes('night-shift')).dataset.token")
    sel = f"#tokens tr[data-token='{tid}'] button"
    page.click(sel)
    page.click(sel)
    page.wait_for(f"!document.querySelector(\"#tokens tr[data-token='{tid}']\")", "the revoked token gone")
    with LBManager(f"ejfat://{token}@{IP}:{live['cp'].port}/") as m, pytest.raises(Unauthenticated):
        m.version()

    page.goto(f"{web.url}/#/system")
    page.wait_for("document.querySelector('#system')", "the system table")
    info = dict(rows(page, "#system tr"))
    assert info["Data plane"] == "software" and info["Balancer"] == "capacity"
    assert info["gRPC"] == f"{IP}:{live['cp'].port}"
    page.wait_for("document.querySelector('#dataplane')", "data-plane counters (global reader)")
    page.screenshot(shots / "web_system.png")


def test_read_only_login_sees_no_action_buttons(live, browser, shots):
    page, web, res = browser.page, live["web"], live["res"]
    login(page, web.url, live["viewer"])
    page.wait_for("document.querySelector('#lbs tr[data-lb]')", "the overview")
    assert [r[1] for r in rows(page, "#lbs tr[data-lb]")] == ["daq-run"]  # only what it may read
    assert page.eval("!document.querySelector('#reserve')")
    page.goto(f"{web.url}/#/lb/{res.lb_id}")
    page.wait_for("document.querySelectorAll('#workers tr[data-session]').length === 3", "the workers")
    page.wait_for("document.querySelectorAll('figure.chart path.series').length > 0", "charts")
    page.wait_for("document.querySelector('.actions h2')", "the read-only senders list")
    assert page.eval("document.querySelectorAll('main button, main form').length") == 0
    page.screenshot(shots / "web_readonly.png")
    page.goto(f"{web.url}/#/tokens")
    page.wait_for("document.querySelector('#tokens tbody tr')", "the token page")
    assert page.eval("document.querySelectorAll('main button, main form').length") == 0
    # and the server refuses what the page does not offer, by the permission check itself
    r = page.eval("fetch('/api/v1/session').then(r => r.json()).then(s => fetch('/api/v1/lbs/" + res.lb_id + "', "
                  "{method: 'DELETE', headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf}}))"
                  ".then(r => r.json().then(b => [r.status, b.code, b.message]))")
    assert r[:2] == [403, "PERMISSION_DENIED"] and "lacks UPDATE" in r[2]
    assert live["admin"].get(res.lb_id).lbId == res.lb_id


def test_the_browser_enforces_the_content_security_policy(live, browser):
    """An injected inline script and style (what an XSS would try) are blocked by the real browser."""
    page = browser.page
    page.goto(live["web"].url + "/")
    page.wait_for("document.querySelector('#token')", "the login page")
    page.eval("(() => { const s = document.createElement('script'); s.textContent = 'window.injected = 1';"
              " document.body.appendChild(s); document.body.setAttribute('style', 'color: red'); })()")
    page.wait_for("new Promise(r => setTimeout(() => r(true), 100))")
    assert page.eval("window.injected === undefined")
    assert page.eval("getComputedStyle(document.body).color") != "rgb(255, 0, 0)"
    blocked = [e for e in page.errors if "Content Security Policy" in e]
    assert len(blocked) == 2, page.errors
    page.errors.clear()  # expected here; the fixture asserts no other errors


def test_many_workers_chart_the_busiest_dozen(browser):
    """Beyond 12 workers the per-worker charts draw the 12 with most slots, and say so."""
    from web_tools import Http, web_plane

    with web_plane() as (cp, web), LBManager(cp.admin_uri) as m:
        res = m.reserve("wide")
        with LBManager(res.uri) as owner:
            sessions = [owner.register(f"w{i:02d}", f"127.0.1.{i + 1}", 20000, weight=1 + i) for i in range(14)]
        for s in sessions:  # state reports over REST, as a script would
            r = Http(web.url, s.token).post(f"/api/v1/lbs/{res.lb_id}/sessions/{s.session_id}/state",
                                            {"fillPercent": 0.1, "isReady": True})
            assert r.status == 200, r.text
        cp.tick()
        cp.tick()
        page = browser.page
        login(page, web.url, cp.config.admin_token)
        page.goto(f"{web.url}/#/lb/{res.lb_id}")
        page.wait_for("document.querySelectorAll('#workers tr[data-session]').length === 14", "fourteen workers")
        caption = page.wait_for("[...document.querySelectorAll('figure.chart figcaption')].map(c => c.innerText)"
                                ".find(t => t.startsWith('Queue fill'))", "the fill chart")
        assert caption == "Queue fill (the 12 of 14 workers with most slots)"
        drawn = page.eval("[...[...document.querySelectorAll('figure.chart')].find(f => f.innerText.startsWith('Queue fill'))"
                          ".querySelectorAll('path.series')].map(p => p.dataset.name)")
        slots = {r[0]: int(r[5]) for r in rows(page, "#workers tr[data-session]")}
        ranked = sorted(slots, key=slots.get, reverse=True)  # weights 1..14: no tie at the cut
        assert slots[ranked[11]] > slots[ranked[12]] and sorted(drawn) == sorted(ranked[:12])
