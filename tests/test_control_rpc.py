"""RPC behaviour over real gRPC on loopback: replies, validation errors, token tree, timeseries."""
import datetime as dt
import math
import time

import grpc
import pytest

from control_tools import FakeClock, admin, config, control_plane
from ejlb.control import loadbalancer_pb2 as pb
from ejlb.control import loadbalancer_pb2_grpc as pb_grpc
from ejlb.control.client import LBManager
from ejlb.control.errors import (FailedPrecondition, InvalidArgument, NotFound, PermissionDenied,
                                 ResourceExhausted, Unauthenticated)
from ejlb.uri import EjfatURI

T0 = float(int(time.time()))


@pytest.fixture(scope="module")
def plane():
    clock = FakeClock(T0)
    with control_plane(config(n_instances=2), clock=clock) as cp:
        cp.fake_clock = clock
        yield cp


@pytest.fixture
def mgr(plane):
    m = admin(plane)
    yield m
    for o in m.overview().loadBalancers:
        m.free(o.reservation.lbId)
    for t in m.list_child_tokens():
        m.revoke_token(t.id)
    m.close()


def test_reserve_reply_and_uri(plane, mgr):
    r = mgr.reserve("daq", senders=["127.0.0.1", "::1"], until=dt.timedelta(hours=1))
    rep = r.reply
    assert rep.lbId == r.lb_id and rep.token == r.token and len(r.token) == 64
    assert (rep.syncIpv4Address, rep.syncIpv6Address) == ("127.0.0.1", "::1") and rep.syncUdpPort > 1023
    assert (rep.dataIpv4Address, rep.dataIpv6Address, rep.dataMinPort, rep.dataMaxPort) == ("127.0.0.1", "::1", 19522, 19522)
    assert rep.fpgaLbId == 0
    from_reply = EjfatURI.parse(rep.ejfatUri)
    assert (from_reply.token, from_reply.lb_id) == (r.token, r.lb_id)
    assert r.uri.sync_address(6).port == rep.syncUdpPort and r.uri.data_address(4).ports == range(19522, 19523)
    got = mgr.get(r.lb_id)
    assert got.token == "" and got.ejfatUri == "" and got.syncUdpPort == rep.syncUdpPort
    st = mgr.status(r.lb_id)
    assert sorted(st.senderAddresses) == ["127.0.0.1", "::1"] and st.slotResolution == 512
    assert st.expiresAt.seconds > 0


def test_reserve_ipv4_only_and_exhaustion_and_no_id_reuse(mgr):
    a = mgr.reserve("v4", ip_family="ipv4")
    assert a.reply.dataIpv6Address == "" and a.reply.syncIpv6Address == "" and a.reply.dataIpv4Address
    b = mgr.reserve("second")
    with pytest.raises(ResourceExhausted, match="no free load balancer"):
        mgr.reserve("third")
    mgr.free(a.lb_id)
    c = mgr.reserve("third")
    assert int(c.lb_id) > int(b.lb_id)  # ids never reused: old tokens cannot reach new reservations
    with pytest.raises(Unauthenticated):  # freeing revoked the reservation's token
        LBManager(a.uri).get()


@pytest.mark.parametrize("kwargs,match", [
    ({"name": ""}, "name="),
    ({"name": "x", "senders": ["not-an-ip"]}, "senderAddresses='not-an-ip'"),
    ({"name": "x", "strategy": "bogus"}, "strategy='bogus'"),
    ({"name": "x", "until": dt.datetime(2001, 1, 1, tzinfo=dt.timezone.utc)}, "until=.*future"),
])
def test_reserve_bad_input(mgr, kwargs, match):
    with pytest.raises(InvalidArgument, match=match):
        mgr.reserve(**kwargs)


def test_raw_bad_enum_is_invalid_argument(plane):
    with grpc.insecure_channel(f"127.0.0.1:{plane.port}") as ch:
        with pytest.raises(grpc.RpcError) as e:
            pb_grpc.LoadBalancerStub(ch).ReserveLoadBalancer(
                pb.ReserveLoadBalancerRequest(name="x", ipFamily=7),
                metadata=(("authorization", "Bearer " + plane.config.admin_token),), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "ipFamily=7" in e.value.details()


def test_register_validation(mgr):
    r = mgr.reserve("w")
    bad = [
        (dict(ip="999.1.1.1"), "ipAddress='999.1.1.1'"),
        (dict(ip="0.0.0.0"), "ipAddress='0.0.0.0'"),
        (dict(port=65535, port_range=2), "udpPort=65535"),
        (dict(port_range=15), "portRange=15"),
        (dict(min_factor=2.0, max_factor=1.0), "maxFactor=1.0"),
        (dict(weight=-1.0), "weight=-1.0"),
        (dict(weight=math.nan), "weight=nan"),
        (dict(slot_demands=[(510, 4)]), "slotDemands"),
    ]
    for change, match in bad:
        args = dict(ip="127.0.0.1", port=20000)
        args.update(change)
        with pytest.raises(InvalidArgument, match=match):
            mgr.register("w1", args.pop("ip"), args.pop("port"), lb_id=r.lb_id, **args)


def test_private_workers_can_be_refused():
    with control_plane(config(allow_private_workers=False)) as cp:
        m = admin(cp)
        r = m.reserve("strict")
        with pytest.raises(InvalidArgument, match="private/loopback disabled"):
            m.register("w", "10.1.2.3", 20000, lb_id=r.lb_id)
        assert m.register("w", "130.199.1.1", 20000, lb_id=r.lb_id).session_id


def test_worker_lifecycle_and_status(plane, mgr):
    r = mgr.reserve("life", senders=["127.0.0.1"])
    w = LBManager(r.uri)
    reg = w.register("w1", "127.0.0.1", 20000, port_range=2, keep_lb_header=True)
    assert reg.session_id and reg.token != r.token
    with pytest.raises(InvalidArgument, match="fillPercent=1.5"):
        w.send_state(fill_percent=1.5, control_signal=0.0)
    with pytest.raises(InvalidArgument, match="totals"):
        w.send_state(fill_percent=0.1, control_signal=0.0, totals={"bogus": 1})
    w.send_state(fill_percent=0.25, control_signal=3.0, totals={"total_events_recv": 7, "total_packets_recv": 99})
    plane.tick()
    st = mgr.status(r.lb_id)
    (ws,) = st.workers
    assert (ws.name, ws.ipAddress, ws.udpPort, ws.portRange, ws.keepLbHeader) == ("w1", "127.0.0.1", 20000, 2, True)
    assert math.isclose(ws.fillPercent, 0.25) and math.isclose(ws.controlSignal, 3.0)
    assert (ws.totalEventsRecv, ws.totalPacketsRecv, ws.sessionId) == (7, 99, int(reg.session_id))
    assert ws.slotsAssigned == 512 and sum(s.length for s in ws.slots) == 512
    assert st.currentEpoch == 0 and st.currentPredictedEventNumber > 0
    w.deregister()
    with pytest.raises(NotFound):
        mgr._call("Deregister", pb.DeregisterRequest(lbId=r.lb_id, sessionId=reg.session_id))
    assert mgr.status(r.lb_id).workers == []


def test_extend_senders_reset(plane, mgr):
    r = mgr.reserve("ext", until=dt.timedelta(minutes=5))
    new_until = dt.datetime.fromtimestamp(T0 + 7200, dt.timezone.utc)
    assert mgr.extend(new_until, r.lb_id).until.seconds == int(T0 + 7200)
    with pytest.raises(InvalidArgument, match="until"):
        mgr.extend(dt.datetime.fromtimestamp(T0 - 1, dt.timezone.utc), r.lb_id)
    mgr.add_senders(["127.0.0.2", "127.0.0.3"], r.lb_id)
    mgr.remove_senders(["127.0.0.2"], r.lb_id)
    assert list(mgr.status(r.lb_id).senderAddresses) == ["127.0.0.3"]
    with pytest.raises(InvalidArgument, match="senderAddresses='x'"):
        mgr.add_senders(["x"], r.lb_id)
    mgr.register("w", "127.0.0.1", 20000, lb_id=r.lb_id)
    mgr.send_state(fill_percent=0.0, control_signal=0.0)
    plane.tick()
    rep = mgr.reset(epochs=True, workers=True, senders=True, lb_id=r.lb_id)
    assert (rep.epochs, rep.workers, rep.senders, rep.sync) == (True, True, True, False)
    st = mgr.status(r.lb_id)
    assert list(st.senderAddresses) == [] and list(st.workers) == []
    lb = plane.service.reservations[int(r.lb_id)].lb.lb_id
    plane.controller.sync_tables()
    assert not any(k[0] == lb for k in plane.backend.installed.epochs)


def test_reservation_expires(plane, mgr):
    r = mgr.reserve("short", until=dt.datetime.fromtimestamp(T0 + 30, dt.timezone.utc))
    plane.tick()
    assert mgr.get(r.lb_id).lbId == r.lb_id
    plane.fake_clock.advance(31)
    try:
        plane.tick()
        with pytest.raises(NotFound):
            mgr.get(r.lb_id)
    finally:
        plane.fake_clock.t = T0


def test_token_tree(plane, mgr):
    r = mgr.reserve("tok")
    ro = mgr.create_token("reader", [("reservation", r.lb_id, "read_only")])
    with LBManager(ro.ejfatUri + f"lb/{r.lb_id}") as reader:
        assert reader.get().lbId == r.lb_id
        with pytest.raises(PermissionDenied, match="lacks UPDATE"):
            reader.free()
        with pytest.raises(PermissionDenied, match="cannot delegate"):
            reader.create_token("escalate", [("reservation", r.lb_id, "update")])
        details = reader.list_token_permissions()
        assert details.name == "reader" and details.permissions[0].permission == pb.TokenPermission.READ_ONLY
        dt.datetime.fromisoformat(details.created_at.replace("Z", "+00:00"))
    # same names in two branches: descendant checks go by id, not by name
    with LBManager(r.uri) as res_mgr:
        child = res_mgr.create_token("reader", [("reservation", r.lb_id, "read_only")])
        grandchild = LBManager(child.ejfatUri).create_token("g", [("reservation", r.lb_id, "read_only")])
        ids = [t.id for t in res_mgr.list_child_tokens()]
        assert len(ids) == 2
        with pytest.raises(PermissionDenied):  # the other "reader" is not in this subtree
            res_mgr.list_token_permissions(ro.token)
        res_mgr.revoke_token(ids[0])  # revokes child and grandchild
        for t in (child.token, grandchild.token):
            with pytest.raises(Unauthenticated):
                LBManager(f"ejfat://{t}@127.0.0.1:{plane.port}/").version()
        assert res_mgr.list_child_tokens() == []
    with LBManager(ro.ejfatUri) as reader:
        assert reader.version().compatTag  # untouched
    with pytest.raises(FailedPrecondition):
        mgr.revoke_token(1)
    with pytest.raises(NotFound):
        mgr.revoke_token(10**6)
    with pytest.raises(InvalidArgument, match="resourceId"):
        mgr.create_token("bad", [("reservation", "abc", "update")])


def test_timeseries_and_overview(plane, mgr):
    r = mgr.reserve("ts")
    w = LBManager(r.uri)
    reg = w.register("w", "127.0.0.1", 20000)
    for fill in (0.1, 0.2, 0.3):
        w.send_state(fill_percent=fill, control_signal=0.0)
        plane.tick()
        plane.fake_clock.advance(1.0)
    plane.fake_clock.t = T0
    reply = mgr.timeseries([f"/lb/{r.lb_id}/session/*/fillPercent"])
    (series,) = reply.timeseries
    assert series.name == f"/lb/{r.lb_id}/session/{reg.session_id}/fillPercent"
    assert [round(p.value, 3) for p in series.float_samples.data] == [0.1, 0.2, 0.3]
    ints = mgr.timeseries([f"/lb/{r.lb_id}/session/*/slotsAssigned"]).timeseries[0]
    assert [p.value for p in ints.integer_samples.data] == [512, 512, 512]
    with LBManager(f"ejfat://{reg.token}@127.0.0.1:{plane.port}/") as session_only:
        assert list(session_only.timeseries(["*"]).timeseries) == []
    (ov,) = mgr.overview().loadBalancers
    assert ov.name == "ts" and ov.reservation.lbId == r.lb_id and len(ov.status.workers) == 1


def test_capacity_estimate_series_from_busy_state_reports(plane, mgr):
    """A worker whose queue stays half full took 10 events per 100 ms report: its service rate,
    100 events/s, is what the capacity balancer measures and what Timeseries shows."""
    r = mgr.reserve("cap")
    w = LBManager(r.uri)
    reg = w.register("w", "127.0.0.1", 20000)
    plane.fake_clock.t = T0
    for k in range(11):
        w.send_state(fill_percent=0.5, control_signal=0.0, totals={"total_events_dequeued": 10 * k,
                                                                     "total_events_reassembled": 12 * k})
        plane.fake_clock.advance(0.1)
    plane.tick()
    (series,) = mgr.timeseries([f"/lb/{r.lb_id}/session/*/capacityEstimate"]).timeseries
    assert series.name == f"/lb/{r.lb_id}/session/{reg.session_id}/capacityEstimate" and series.unit == "events/s"
    assert series.float_samples.data[-1].value == pytest.approx(100.0)


def test_a_worker_overflowing_at_its_floor_is_a_health_issue(plane, mgr):
    """Two workers; the slow one asked for minFactor 1 (an even share) but drains only 20 events/s
    of the ~100 it is offered: Status names the factor that pins it into overflow."""
    r = mgr.reserve("floor")
    fast, slow = LBManager(r.uri), LBManager(r.uri)
    fast.register("fast", "127.0.0.1", 20000)
    slow.register("slow", "127.0.0.1", 20001, min_factor=1.0)
    plane.fake_clock.t = T0
    for k in range(1, 12):
        fast.send_state(fill_percent=0.0, control_signal=0.0, totals={"total_events_dequeued": 10 * k,
                                                                        "total_events_reassembled": 10 * k})
        slow.send_state(fill_percent=0.95, control_signal=0.0, totals={"total_events_dequeued": 2 * k,
                                                                         "total_events_reassembled": 10 * k,
                                                                         "total_event_enqueue_err": 8 * k})
        plane.fake_clock.advance(0.1)
    plane.tick()
    workers = {w.name: w for w in mgr.status(r.lb_id).workers}
    (issue,) = workers["slow"].healthIssues
    assert issue.type == "worker_overflow_at_floor" and "minFactor=1" in issue.message
    assert not workers["fast"].healthIssues


def test_advertised_host_in_uris():
    with control_plane(config(advertise_host="lb.example.org")) as cp:
        r = admin(cp).reserve("adv")
        uri = EjfatURI.parse(r.reply.ejfatUri)
        assert (uri.host, uri.port, uri.lb_id) == ("lb.example.org", cp.port, r.lb_id)


def test_port_in_use_is_a_clear_error_and_releases_everything():
    with control_plane(config()) as cp:
        cfg = config()
        cfg.port = cp.port
        other = __import__("ejlb.control.server", fromlist=["ControlPlane"]).ControlPlane(cfg)
        with pytest.raises(OSError, match=f"listen=127.0.0.1:{cp.port}"):
            other.start()
        other.stop()  # idempotent after the failed start
        assert admin(cp).version().compatTag  # the first one is unaffected


def test_unreachable_control_plane_is_unavailable():
    import socket

    from ejlb.control.errors import Unavailable

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with LBManager(f"ejfat://tok@127.0.0.1:{port}/", timeout=2) as m:
        with pytest.raises(Unavailable, match=r"\(Version\)$"):
            m.version()


def test_absurd_until_and_unicode_ids_are_invalid(plane):
    with grpc.insecure_channel(f"127.0.0.1:{plane.port}") as ch:
        stub = pb_grpc.LoadBalancerStub(ch)
        md = (("authorization", "Bearer " + plane.config.admin_token),)
        req = pb.ReserveLoadBalancerRequest(name="x")
        req.until.seconds = 10**15
        with pytest.raises(grpc.RpcError) as e:
            stub.ReserveLoadBalancer(req, metadata=md, timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "year 3000" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            stub.GetLoadBalancer(pb.GetLoadBalancerRequest(lbId="\u0663"), metadata=md, timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
