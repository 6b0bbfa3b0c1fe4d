"""The REST API over real HTTP against a real ControlPlane (real gRPC, real SQLite): every route,
the permission matrix checked against what gRPC answers for the same call, bad input naming the
field and value, and the web security rules (CSRF, CSP, cookie flags, bounded bodies)."""
from __future__ import annotations

import datetime as dt
import logging

import grpc
import pytest

from control_tools import config
from ejlb.control import loadbalancer_pb2 as pb
from ejlb.control import loadbalancer_pb2_grpc as pb_grpc
from ejlb.control.client import LBManager
from ejlb.web import api
from web_tools import Http, web_plane

FUTURE = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    db = tmp_path_factory.mktemp("web") / "cp.db"
    with web_plane(config(n_instances=4, db=str(db))) as (cp, web):
        with LBManager(cp.admin_uri) as m:
            a = m.reserve("alpha", senders=["127.0.0.1"])
            b = m.reserve("beta")
            ro = m.create_token("viewer", [("RESERVATION", a.lb_id, "READ_ONLY")])
        with LBManager(a.uri) as ma:
            sess = ma.register("w1", "127.0.0.9", 10000)
        tokens = {"admin": cp.config.admin_token, "resA": a.token, "roA": ro.token, "resB": b.token,
                  "sessA": sess.token, "none": None, "unknown": "f" * 64}
        yield {"cp": cp, "web": web, "A": a.lb_id, "B": b.lb_id, "session": sess.session_id, "tokens": tokens}


def client(world, who: str) -> Http:
    return Http(world["web"].url, world["tokens"][who])


def grpc_status(world, rpc: str, request, who: str) -> int:
    """The HTTP status of what the gRPC API answers to the same call."""
    token = world["tokens"][who]
    md = [("authorization", f"Bearer {token}")] if token is not None else []
    with grpc.insecure_channel(f"127.0.0.1:{world['cp'].port}") as ch:
        try:
            getattr(pb_grpc.LoadBalancerStub(ch), rpc)(request, metadata=md, timeout=5)
            return 200
        except grpc.RpcError as e:
            return api.HTTP_STATUS[e.code()]


WHO = ("admin", "resA", "roA", "resB", "sessA", "none", "unknown")
# (method, path, body, rpc, request, expected status per WHO) — the expectations pin the rule;
# the gRPC comparison pins that REST says the same as gRPC.
MATRIX = [
    ("GET", "/api/v1/lbs/{A}", None, "GetLoadBalancer", lambda w: pb.GetLoadBalancerRequest(lbId=w["A"]),
     (200, 200, 200, 403, 403, 401, 401)),
    ("GET", "/api/v1/lbs/{A}/status", None, "LoadBalancerStatus",
     lambda w: pb.LoadBalancerStatusRequest(lbId=w["A"]), (200, 200, 200, 403, 403, 401, 401)),
    ("GET", "/api/v1/lbs/999", None, "GetLoadBalancer", lambda w: pb.GetLoadBalancerRequest(lbId="999"),
     (404, 403, 403, 403, 403, 401, 401)),
    ("POST", "/api/v1/lbs/{A}/senders", {"senderAddresses": ["127.0.0.1"]}, "AddSenders",
     lambda w: pb.AddSendersRequest(lbId=w["A"], senderAddresses=["127.0.0.1"]), (200, 200, 403, 403, 403, 401, 401)),
    ("POST", "/api/v1/lbs/{A}/extend", {"until": FUTURE}, "ExtendReservation", None,
     (200, 200, 403, 403, 403, 401, 401)),
    ("POST", "/api/v1/lbs/{A}/sessions/{S}/state", {"fillPercent": 0.25, "isReady": True}, "SendState", None,
     (200, 200, 403, 403, 200, 401, 401)),
    ("GET", "/api/v1/lbs", None, "Overview", lambda w: pb.OverviewRequest(), (200, 200, 200, 200, 200, 401, 401)),
    ("GET", "/api/v1/version", None, "Version", lambda w: pb.VersionRequest(), (200, 200, 200, 200, 200, 401, 401)),
    ("GET", "/api/v1/tokens/self", None, "ListTokenPermissions", lambda w: pb.ListTokenPermissionsRequest(),
     (200, 200, 200, 200, 200, 401, 401)),
    ("GET", "/api/v1/tokens/1/children", None, "ListChildTokens",
     lambda w: pb.ListChildTokensRequest(target=pb.TokenSelector(id=1)), (200, 403, 403, 403, 403, 401, 401)),
    ("POST", "/api/v1/tokens", {"name": "x", "permissions": [{"resourceType": "ALL", "permission": "UPDATE"}]},
     "CreateToken", None, (200, 403, 403, 403, 403, 401, 401)),
    ("DELETE", "/api/v1/tokens/1", None, "RevokeToken", lambda w: pb.RevokeTokenRequest(target=pb.TokenSelector(id=1)),
     (400, 400, 400, 400, 400, 401, 401)),  # the admin token is never revoked (FAILED_PRECONDITION)
]


@pytest.mark.parametrize("method,path,body,rpc,request_of,expected", MATRIX, ids=[f"{m} {p}" for m, p, *_ in MATRIX])
def test_permission_matrix_matches_grpc(world, method, path, body, rpc, request_of, expected):
    url = path.format(A=world["A"], S=world["session"])
    for who, want in zip(WHO, expected):
        r = client(world, who).request(method, url, body)
        assert r.status == want, (who, r.status, r.text)
        if want != 200:
            assert r.json["code"] in ("UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND", "FAILED_PRECONDITION")
        if request_of is not None:
            assert grpc_status(world, rpc, request_of(world), who) == want, who


def test_every_route_works_for_its_owner(world):
    """Each REST route once, in the order a script would use them; replies are the gRPC replies."""
    admin = client(world, "admin")
    r = admin.post("/api/v1/lbs", {"name": "gamma", "senderAddresses": ["127.0.0.1", "::1"], "until": FUTURE})
    assert r.status == 200, r.text
    lb, tok = r.json["lbId"], r.json["token"]
    assert r.json["ejfatUri"].startswith(f"ejfat://{tok}@") and len(tok) == 64
    owner = Http(world["web"].url, tok)
    assert owner.get(f"/api/v1/lbs/{lb}").json["token"] == ""  # Get never returns the token again
    assert owner.post(f"/api/v1/lbs/{lb}/senders", {"senderAddresses": ["127.0.0.2"]}).status == 200
    assert owner.post(f"/api/v1/lbs/{lb}/senders/remove", {"senderAddresses": ["::1"]}).status == 200
    assert owner.get(f"/api/v1/lbs/{lb}/status").json["senderAddresses"] == ["127.0.0.1", "127.0.0.2"]
    ext = owner.post(f"/api/v1/lbs/{lb}/extend", {"until": FUTURE})
    assert ext.status == 200 and ext.json["until"] == FUTURE
    reg = owner.post(f"/api/v1/lbs/{lb}/sessions", {"name": "w9", "ipAddress": "127.0.0.9", "udpPort": 11000,
                                                    "weight": 2})
    assert reg.status == 200, reg.text
    sid, stok = reg.json["sessionId"], reg.json["token"]
    worker = Http(world["web"].url, stok)
    st = worker.post(f"/api/v1/lbs/{lb}/sessions/{sid}/state",
                     {"fillPercent": 0.5, "controlSignal": 0.1, "isReady": True, "totalEventsRecv": "12"})
    assert st.status == 200, st.text
    w = owner.get(f"/api/v1/lbs/{lb}/status").json["workers"][0]
    assert (w["name"], w["fillPercent"], w["totalEventsRecv"], w["sessionId"]) == ("w9", 0.5, "12", sid)
    demands = owner.request("PUT", f"/api/v1/lbs/{lb}/slot-demands",
                            {"slotConstraints": [{"sessionId": sid, "slots": [{"index": 0, "length": 8}]}]})
    assert demands.status == 200, demands.text
    world["cp"].tick()
    ts = owner.get(f"/api/v1/timeseries?selector=/lb/{lb}/session/*/slotsAssigned&selector=/lb/{lb}/epoch")
    names = {s["name"] for s in ts.json["timeseries"]}
    assert names == {f"/lb/{lb}/session/{sid}/slotsAssigned", f"/lb/{lb}/epoch"}, ts.text
    slots = next(s for s in ts.json["timeseries"] if s["name"].endswith("slotsAssigned"))
    assert slots["integerSamples"]["data"][-1]["value"] == "512"
    since = owner.get(f"/api/v1/timeseries?selector=/lb/{lb}/epoch&since={FUTURE}")
    assert since.json["timeseries"][0].get("integerSamples", {}).get("data", []) == []
    dash = owner.get(f"/api/v1/lbs/{lb}/dashboard").json
    assert dash["mayUpdate"] is True and dash["members"] == {sid: 0} and len(dash["epochs"]) == 1
    assert owner.post(f"/api/v1/lbs/{lb}/reset", {"senders": True}).json == {
        "sync": False, "epochs": False, "senders": True, "workers": False}
    assert owner.get(f"/api/v1/lbs/{lb}/status").json["senderAddresses"] == []
    assert owner.delete(f"/api/v1/lbs/{lb}/sessions/{sid}").status == 200
    assert worker.get("/api/v1/version").status == 401  # deregistering revoked the session token

    made = admin.post("/api/v1/tokens", {"name": "ops", "permissions": [
        {"resourceType": "LOAD_BALANCER", "resourceId": "0", "permission": "READ_ONLY"}]})
    assert made.status == 200 and len(made.json["token"]) == 64
    tid = next(t["id"] for t in admin.get("/api/v1/tokens/self/children").json["tokens"] if t["name"] == "ops")
    got = admin.get(f"/api/v1/tokens/{tid}").json["token"]
    assert got["permissions"] == [{"resourceType": "LOAD_BALANCER", "resourceId": "0", "permission": "READ_ONLY"}]
    assert admin.get(f"/api/v1/tokens/{tid}/children").json == {"tokens": []}
    assert Http(world["web"].url, made.json["token"]).get("/api/v1/tokens/self").json["token"]["id"] == tid
    assert admin.delete(f"/api/v1/tokens/{tid}").status == 200
    assert Http(world["web"].url, made.json["token"]).get("/api/v1/version").status == 401
    assert owner.delete(f"/api/v1/lbs/{lb}").status == 200
    assert owner.get(f"/api/v1/lbs/{lb}").status == 401  # freeing revoked the reservation token
    assert admin.get(f"/api/v1/lbs/{lb}").status == 404


def test_dashboard_views_follow_permissions(world):
    a = world["A"]
    ro, admin = client(world, "roA"), client(world, "admin")
    assert ro.get(f"/api/v1/lbs/{a}/dashboard").json["mayUpdate"] is False
    assert client(world, "resA").get(f"/api/v1/lbs/{a}/dashboard").json["mayUpdate"] is True
    assert client(world, "resB").get(f"/api/v1/lbs/{a}/dashboard").status == 403
    assert client(world, "none").get(f"/api/v1/lbs/{a}/dashboard").status == 401
    assert admin.get("/api/v1/lbs/02/dashboard").message.startswith("lbId='02': must be a decimal id")
    me = ro.get("/api/v1/session").json
    assert me["may"] == {"reserve": False, "manageTokens": False} and me["name"] == "viewer" and me["csrf"] is None
    assert admin.get("/api/v1/session").json["may"] == {"reserve": True, "manageTokens": True}
    sys_ro, sys_admin = ro.get("/api/v1/system").json, admin.get("/api/v1/system").json
    assert sys_ro["reservationsVisible"] == 1 and "dataplane" not in sys_ro  # global counters: global readers only
    assert sys_admin["reservationsVisible"] >= 2 and set(sys_admin["dataplane"]["global"]) == {"drop_parse_fail", "drop_not_lb"}
    assert sys_admin["grpc"]["port"] == world["cp"].port and sys_admin["compatTag"] == "ejfat-loadbalancer-v1"
    assert client(world, "unknown").get("/api/v1/system").status == 401


BAD = [
    ("GET", "/api/v1/lbs/01/status", None, None, "lbId='01': must be a decimal id"),
    ("GET", "/api/v1/lbs/-1", None, None, "lbId='-1'"),
    ("POST", "/api/v1/lbs/{A}/senders", {"senderAddresses": ["nope"]}, None, "senderAddresses='nope'"),
    ("POST", "/api/v1/lbs/{A}/senders", {"senderAddress": ["127.0.0.1"]}, None, "senderAddress"),
    ("POST", "/api/v1/lbs/{A}/senders", {"lbId": "3"}, None, "lbId='3': the path says"),
    ("POST", "/api/v1/lbs/{A}/senders", None, b"{not json", "body: not JSON"),
    ("POST", "/api/v1/lbs/{A}/senders", None, b"[1, 2]", "a JSON object is expected, not list"),
    ("POST", "/api/v1/lbs/{A}/extend", {"until": "yesterday"}, None, "until"),
    ("POST", "/api/v1/lbs/{A}/extend", {"until": "2001-01-01T00:00:00Z"}, None, "until=2001-01-01T00:00:00Z"),
    ("POST", "/api/v1/lbs", {"name": "x", "strategy": "bogus"}, None, "strategy='bogus'"),
    ("POST", "/api/v1/lbs", {"name": ""}, None, "name="),
    ("POST", "/api/v1/lbs/{A}/sessions", {"name": "w", "ipAddress": "224.0.0.1", "udpPort": 1}, None, "224.0.0.1"),
    ("POST", "/api/v1/lbs/{A}/sessions", {"name": "w", "ipAddress": "127.0.0.5", "udpPort": 70000}, None,
     "udpPort"),
    ("POST", "/api/v1/lbs/{A}/sessions/{S}/state", {"fillPercent": 1.5}, None, "fillPercent=1.5"),
    ("POST", "/api/v1/tokens", {"name": "t", "permissions": [{"resourceType": "ALL", "permission": "ROOT"}]}, None,
     "permission"),
    ("POST", "/api/v1/tokens", {"name": "t", "permissions": []}, None, "permissions: 0 given"),
    ("GET", "/api/v1/tokens/abc", None, None, "id='abc': must be a decimal id"),
    ("GET", "/api/v1/timeseries?selectors=x", None, None, "selectors='x': unknown query parameter"),
    ("GET", "/api/v1/timeseries?since=soon", None, None, "since"),
]


@pytest.mark.parametrize("method,path,body,raw,match", BAD, ids=[f"{m} {p} {b or r}" for m, p, b, r, _ in BAD])
def test_bad_input_is_400_naming_field_and_value(world, method, path, body, raw, match):
    r = client(world, "admin").request(method, path.format(A=world["A"], S=world["session"]), body, raw=raw)
    assert r.status == 400, r.text
    assert r.json["code"] in ("INVALID_ARGUMENT", "FAILED_PRECONDITION") and match in r.message, r.message


def test_malformed_authorization_is_400_like_grpc(world):
    h = Http(world["web"].url)
    basic = h.get("/api/v1/version", headers=[("Authorization", "Basic abc")])
    assert basic.status == 400 and "scheme 'Basic' is not Bearer" in basic.message
    two = h.get("/api/v1/version", headers=[("Authorization", "Bearer a"), ("Authorization", "Bearer b")])
    assert two.status == 400 and "given 2 times" in two.message
    spaced = h.get("/api/v1/version", headers=[("Authorization", "bearer \t" + world["tokens"]["admin"])])
    assert spaced.status == 200


def test_unknown_route_and_method(world):
    admin = client(world, "admin")
    assert admin.get("/api/v1/nothing").status == 404
    assert admin.request("PATCH", f"/api/v1/lbs/{world['A']}", {}).status == 405


def test_browser_session_needs_csrf_header_and_own_origin(world):
    web = world["web"]
    b = Http(web.url)
    bad = b.login("x" * 64)
    assert bad.status == 401 and "Set-Cookie" not in bad.headers
    r = b.login(world["tokens"]["admin"])
    assert r.status == 200 and r.json["name"] == "admin" and r.json["csrf"]
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert world["tokens"]["admin"] not in cookie and world["tokens"]["admin"] not in r.text
    assert b.get("/api/v1/session").json["csrf"] == b.csrf  # the page reads it from here
    a = world["A"]
    body = {"senderAddresses": ["127.0.0.1"]}
    assert b.post(f"/api/v1/lbs/{a}/senders", body).status == 200
    no_csrf = b.post(f"/api/v1/lbs/{a}/senders", body, csrf=False)
    assert no_csrf.status == 403 and "X-CSRF-Token" in no_csrf.message
    wrong = b.post(f"/api/v1/lbs/{a}/senders", body, csrf=False, headers=[("X-CSRF-Token", "guess")])
    assert wrong.status == 403
    foreign = b.post(f"/api/v1/lbs/{a}/senders", body, headers=[("Origin", "https://evil.example")])
    assert foreign.status == 403 and "Origin='https://evil.example'" in foreign.message
    same = b.post(f"/api/v1/lbs/{a}/senders", body, headers=[("Origin", web.url)])
    assert same.status == 200
    form = b.request("POST", f"/api/v1/lbs/{a}/senders", raw=b"senderAddresses=1.2.3.4",
                     headers=[("Content-Type", "application/x-www-form-urlencoded")])
    assert form.status == 403 and "application/json" in form.message
    # a login from a form (login CSRF) is refused the same way
    assert Http(web.url).request("POST", "/api/v1/login", raw=b"token=x",
                                 headers=[("Content-Type", "text/plain")]).status == 403
    assert b.post("/api/v1/logout").status == 200
    assert b.get("/api/v1/version").status == 401  # the old cookie is worthless after logout


def test_scripts_with_bearer_need_no_csrf_but_still_json(world):
    admin = client(world, "admin")
    r = admin.request("POST", f"/api/v1/lbs/{world['A']}/senders", raw=b'{"senderAddresses": []}',
                      headers=[("Content-Type", "text/plain")])
    assert r.status == 403


def test_security_headers_and_static_assets(world):
    h = Http(world["web"].url)
    page = h.get("/")
    assert page.status == 200 and "<script src=\"/static/app.js\"" in page.text
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff" and page.headers["X-Frame-Options"] == "DENY"
    for name in ("app.js", "charts.js", "style.css"):
        asset = h.get(f"/static/{name}")
        assert asset.status == 200 and len(asset.text) > 1000
        assert "https://" not in asset.text and "http://" not in asset.text.replace("http://www.w3.org/2000/svg", "")
    assert h.get("/static/../app.py").status in (403, 404)
    api_reply = h.get("/api/v1/version")
    assert api_reply.headers["Cache-Control"] == "no-store" and "Content-Security-Policy" in api_reply.headers


def test_request_body_is_bounded(world):
    big = b'{"senderAddresses": ["' + b"1" * 70_000 + b'"]}'
    r = client(world, "admin").request("POST", f"/api/v1/lbs/{world['A']}/senders", raw=big)
    assert r.status == 413


def test_token_never_in_logs(caplog):
    """Refusals are audited with the peer, never with a token (a plane of its own: the refusal
    log's rate limit is shared with gRPC, and the tests above spent its burst)."""
    caplog.set_level(logging.DEBUG)
    with web_plane(config(n_instances=2)) as (cp, web), LBManager(cp.admin_uri) as m:
        a, b = m.reserve("a"), m.reserve("b")
        secret = "e" * 64
        assert Http(web.url).login(secret).status == 401
        assert Http(web.url, "f" * 64).get(f"/api/v1/lbs/{a.lb_id}").status == 401
        assert Http(web.url, b.token).get(f"/api/v1/lbs/{a.lb_id}").status == 403
        assert Http(web.url).login(cp.config.admin_token).status == 200
    text = caplog.text
    assert "refused GetLoadBalancer: PERMISSION_DENIED" in text and "peer=http:127.0.0.1" in text
    for t in (secret, "f" * 64, b.token, cp.config.admin_token):
        assert t not in text


def test_rest_calls_are_the_grpc_servicers_calls_in_the_metrics(world):
    reg = world["cp"].metrics.registry
    count = lambda code: reg.get_sample_value("ejlb_rpc_total", {"method": "Overview", "code": code}) or 0  # noqa: E731
    ok, refused = count("OK"), count("UNAUTHENTICATED")
    assert client(world, "roA").get("/api/v1/lbs").status == 200
    assert client(world, "none").get("/api/v1/lbs").status == 401
    assert (count("OK"), count("UNAUTHENTICATED")) == (ok + 1, refused + 1)
