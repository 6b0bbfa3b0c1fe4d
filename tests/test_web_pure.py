"""The web layer's pure parts alone: sessions (expiry, bound), the CSRF rule, request building,
the counter history ring, and docs/rest.md listing exactly the routes served."""
from __future__ import annotations

import re

import pytest

from cli_helpers import REPO
from ejlb.control import loadbalancer_pb2 as pb
from ejlb.control.errors import InvalidArgument
from ejlb.web import api, auth, history
from ejlb.web.app import VIEWS

ROUTE = {(r.method, r.path): r for r in api.ROUTES}


def test_sessions_expire_when_unused_and_are_bounded():
    s = auth.Sessions(ttl=10, limit=2)
    a, _ = s.create("tok-a", now=0)
    assert s.get(a, now=9).token == "tok-a"
    assert s.get(a, now=18) is not None  # use renews
    assert s.get(a, now=28.5) is None and len(s) == 0  # 10.5 s unused: gone
    b, _ = s.create("tok-b", now=30)
    c, _ = s.create("tok-c", now=31)
    s.get(b, now=32)  # b used last: c is now the oldest
    d, _ = s.create("tok-d", now=33)
    assert len(s) == 2 and s.get(c, now=33) is None and s.get(b, now=33) and s.get(d, now=33)
    assert s.get(None, now=33) is None and s.get("forged", now=33) is None
    s.drop(b)
    assert s.get(b, now=33) is None


def test_session_ids_and_csrf_secrets_are_unguessable_and_distinct():
    s = auth.Sessions()
    made = [s.create("t", now=0) for _ in range(50)]
    ids = {sid for sid, _ in made} | {ws.csrf for _, ws in made}
    assert len(ids) == 100 and all(len(x) >= 43 for x in ids)  # 32 random bytes each


@pytest.mark.parametrize("method,headers,session,why", [
    ("GET", {}, None, None),
    ("POST", {"Content-Type": "application/json"}, None, None),
    ("POST", {"Content-Type": "application/json; charset=utf-8", "Origin": "http://h:1"}, None, None),
    ("POST", {"Content-Type": "text/plain"}, None, "Content-Type='text/plain'"),
    ("DELETE", {}, None, "Content-Type=''"),
    ("POST", {"Content-Type": "application/json", "Origin": "http://evil"}, None, "Origin='http://evil'"),
    ("POST", {"Content-Type": "application/json", "Origin": "null"}, None, "Origin='null'"),
    ("POST", {"Content-Type": "application/json"}, "s3cret", "X-CSRF-Token: missing"),
    ("PUT", {"Content-Type": "application/json", "X-CSRF-Token": "guess"}, "s3cret", "X-CSRF-Token"),
    ("PUT", {"Content-Type": "application/json", "X-CSRF-Token": "s3cret"}, "s3cret", None),
])
def test_csrf_rule(method, headers, session, why):
    ws = auth.WebSession("tok", session, 0.0) if session else None
    got = auth.csrf_refusal(method, headers, ws, {"http://h:1"})
    assert (got is None) if why is None else (why in got), got


def test_request_from_path_query_and_body():
    r = api.build_request(ROUTE["POST", "/api/v1/lbs/{lbId}/senders"], {"lbId": "4"}, [],
                          {"senderAddresses": ["10.0.0.1"]})
    assert r == pb.AddSendersRequest(lbId="4", senderAddresses=["10.0.0.1"])
    ts = api.build_request(ROUTE["GET", "/api/v1/timeseries"], {}, [("selector", "/lb/1/*"), ("selector", "/lb/2/*"),
                                                                    ("since", "2026-01-01T00:00:00Z")], None)
    assert list(ts.seriesSelector) == ["/lb/1/*", "/lb/2/*"] and ts.since.seconds == 1767225600
    tok = api.build_request(ROUTE["DELETE", "/api/v1/tokens/{id}"], {"id": "7"}, [], None)
    assert tok.target.id == 7
    with pytest.raises(InvalidArgument, match="lbId='5': the path says '4'"):
        api.build_request(ROUTE["POST", "/api/v1/lbs/{lbId}/senders"], {"lbId": "4"}, [], {"lbId": "5"})
    with pytest.raises(InvalidArgument, match="id='07': must be a decimal id"):
        api.build_request(ROUTE["DELETE", "/api/v1/tokens/{id}"], {"id": "07"}, [], None)
    with pytest.raises(InvalidArgument, match="body: .*bogus"):
        api.build_request(ROUTE["POST", "/api/v1/lbs"], {}, [], {"name": "x", "bogus": 1})
    with pytest.raises(InvalidArgument, match="since='x': unknown query parameter"):
        api.build_request(ROUTE["POST", "/api/v1/lbs"], {}, [("since", "x")], {})


def test_every_error_status_maps_and_unknown_is_500():
    import grpc

    assert all(api.HTTP_STATUS[c] for c in grpc.StatusCode)  # no code is left unmapped
    e = api.RPCAborted(grpc.StatusCode.PERMISSION_DENIED, "token 3 lacks UPDATE")
    assert e.http_status == 403 and e.body() == {"code": "PERMISSION_DENIED", "message": "token 3 lacks UPDATE"}


def test_history_is_bounded_and_forgets_freed_reservations():
    h = history.History(points=3)
    for t in range(5):
        h.add({1: {"t": t}, 2: {"t": 10 + t}})
    assert [p["t"] for p in h.get(1)] == [2, 3, 4] and len(h.get(2)) == 3
    h.add({2: {"t": 99}})
    assert h.get(1) == [] and h.get(2)[-1] == {"t": 99}


def test_docs_list_exactly_the_routes_served():
    doc = (REPO / "docs" / "rest.md").read_text()
    listed = set(re.findall(r"`(GET|POST|PUT|DELETE) (/api/v1/[^`\s]*)", doc))
    served = {(r.method, r.path) for r in api.ROUTES} | {(m, p) for m, p, _ in VIEWS}
    assert listed == served, (listed - served, served - listed)
