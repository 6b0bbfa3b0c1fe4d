"""Hostile gRPC input (issue 16) over real gRPC on loopback: each case gets INVALID_ARGUMENT naming
the field and the value, and changes nothing."""
import math
import re

import grpc
import pytest

from control_tools import admin, config, control_plane
from ejlb.control import loadbalancer_pb2 as pb
from ejlb.control import loadbalancer_pb2_grpc as pb_grpc
from ejlb.control import tokens as tk
from ejlb.control.config import ControlConfig
from ejlb.control.errors import InvalidArgument, Unauthenticated


@pytest.fixture(scope="module")
def plane():
    with control_plane(config(n_instances=2)) as cp:
        yield cp


@pytest.fixture
def world(plane):
    m = admin(plane)
    r = m.reserve("hostile", senders=["127.0.0.1"])
    reg = m.register("w", "127.0.0.1", 20000, lb_id=r.lb_id)
    with grpc.insecure_channel(f"127.0.0.1:{plane.port}") as ch:
        yield pb_grpc.LoadBalancerStub(ch), r.lb_id, reg.session_id
    for o in m.overview().loadBalancers:
        m.free(o.reservation.lbId)
    m.close()


def call(plane, stub, rpc, request, token=None):
    md = (("authorization", "Bearer " + (token or plane.config.admin_token)),)
    return getattr(stub, rpc)(request, metadata=md, timeout=5)


def refused(plane, stub, rpc, request, needle):
    with pytest.raises(grpc.RpcError) as e:
        call(plane, stub, rpc, request)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (rpc, e.value.details())
    assert needle in e.value.details(), e.value.details()
    return e.value.details()


@pytest.mark.parametrize("spelling", [" {}", "{} ", "\t{}\n", "0{}", "+{}", "{}.0", "{}_0", "\u0663"])
def test_non_canonical_lb_ids_are_refused_and_free_nothing(plane, world, spelling):
    stub, lb_id, session_id = world
    bad = spelling.format(lb_id)
    refused(plane, stub, "FreeLoadBalancer", pb.FreeLoadBalancerRequest(lbId=bad), f"lbId={bad!r}")
    refused(plane, stub, "GetLoadBalancer", pb.GetLoadBalancerRequest(lbId=bad), "lbId=")
    refused(plane, stub, "SendState", pb.SendStateRequest(lbId=bad, sessionId=session_id), "lbId=")
    refused(plane, stub, "SendState", pb.SendStateRequest(lbId=lb_id, sessionId=spelling.format(session_id)),
            "sessionId=")
    assert call(plane, stub, "GetLoadBalancer", pb.GetLoadBalancerRequest(lbId=lb_id)).lbId == lb_id  # still there


def test_token_resource_ids_must_be_canonical(plane, world):
    stub, lb_id, _ = world
    req = pb.CreateTokenRequest(name="t", permissions=[pb.TokenPermission(resourceType=2, resourceId=" " + lb_id)])
    refused(plane, stub, "CreateToken", req, f"resourceId={' ' + lb_id!r}")


@pytest.mark.parametrize("nanos", [-1, 1_000_000_000, -(2**31), 2**31 - 1])
def test_timestamp_nanos_out_of_range(plane, world, nanos):
    stub, lb_id, session_id = world
    req = pb.ReserveLoadBalancerRequest(name="x")
    req.until.seconds, req.until.nanos = 4_000_000_000, nanos
    refused(plane, stub, "ReserveLoadBalancer", req, f"until.nanos={nanos}")
    req = pb.ExtendReservationRequest(lbId=lb_id)
    req.until.seconds, req.until.nanos = 4_000_000_000, nanos
    refused(plane, stub, "ExtendReservation", req, f"until.nanos={nanos}")
    req = pb.SendStateRequest(lbId=lb_id, sessionId=session_id, fillPercent=0.5, isReady=True)
    req.timestamp.seconds, req.timestamp.nanos = 1_700_000_000, nanos
    refused(plane, stub, "SendState", req, f"timestamp.nanos={nanos}")
    req.timestamp.nanos = 999_999_999  # the largest valid value
    call(plane, stub, "SendState", req)


@pytest.mark.parametrize("ip", ["255.255.255.255", "::ffff:255.255.255.255", "240.0.0.1", "0.1.2.3",
                                "224.0.0.1", "0.0.0.0", "::", "ff02::1"])
def test_broadcast_and_other_non_unicast_worker_addresses(plane, world, ip):
    stub, lb_id, _ = world
    req = pb.RegisterRequest(lbId=lb_id, name="bcast", ipAddress=ip, udpPort=20000, weight=1)
    refused(plane, stub, "Register", req, f"ipAddress={ip!r}: not a unicast address")


@pytest.mark.parametrize("field", ["totalEventsRecv", "totalEventsReassembled", "totalEventsReassemblyErr",
                                   "totalEventsDequeued", "totalEventEnqueueErr", "totalBytesRecv",
                                   "totalPacketsRecv"])
def test_negative_totals(plane, world, field):
    stub, lb_id, session_id = world
    req = pb.SendStateRequest(lbId=lb_id, sessionId=session_id, fillPercent=0.5, isReady=True, **{field: -1})
    refused(plane, stub, "SendState", req, f"{field}=-1")
    req = pb.SendStateRequest(lbId=lb_id, sessionId=session_id, **{field: -(2**63)})
    refused(plane, stub, "SendState", req, f"{field}={-(2**63)}")


@pytest.mark.parametrize("signal", [3e38, -3e38, math.inf, -math.inf, math.nan, 2e9, -1.5e9])
def test_absurd_control_signal_is_refused_and_nothing_is_applied(plane, world, signal):
    stub, lb_id, session_id = world
    ok = pb.SendStateRequest(lbId=lb_id, sessionId=session_id, fillPercent=0.25, controlSignal=1e9,
                             isReady=True, totalEventsRecv=5)
    call(plane, stub, "SendState", ok)  # ±1e9 is the largest accepted magnitude
    bad = pb.SendStateRequest(lbId=lb_id, sessionId=session_id, fillPercent=0.75, controlSignal=signal,
                              isReady=True, totalEventsRecv=9)
    refused(plane, stub, "SendState", bad, "controlSignal=")
    sess = plane.service.sessions[int(session_id)]
    assert (sess.fill, sess.control_signal, sess.totals[0]) == (0.25, 1e9, 5)  # the refused call left no trace


# -- authorization header: one tolerant parse (rule in src/ejlb/control/README.md) --------------------
TOK = "3f" * 32


@pytest.mark.parametrize("value", [f"Bearer {TOK}", f"bearer {TOK}", f"BEARER {TOK}", f"bEaReR {TOK}",
                                   f"Bearer  {TOK}", f"Bearer {TOK} ", f"  Bearer {TOK}", f"Bearer\t{TOK}",
                                   f"bearer \t {TOK}\t"])
def test_bearer_scheme_any_case_and_surrounding_whitespace_accepted(value):
    assert tk.bearer_token([("authorization", value)]) == TOK
    assert tk.bearer_token([("Authorization", value.encode())]) == TOK


@pytest.mark.parametrize("value,needle", [
    (f"Bearer {TOK} extra", "exactly one token"), (f"Bearer {TOK[:8]} {TOK[8:]}", "exactly one token"),
    (f"Bearer {TOK}\x00", "exactly one token"), (f"Bearer {TOK}\u00e9", "exactly one token"),
    (f"Token {TOK}", "scheme 'Token' is not Bearer"), (f"Bearer{TOK}", "scheme '?'"), (TOK, "scheme '?'"),
    ("Bearer", "empty bearer token"), ("bearer   ", "empty bearer token"), ("", "scheme '?'"),
])
def test_malformed_authorization_is_refused_without_echoing_the_token(value, needle):
    with pytest.raises(InvalidArgument, match=re.escape(needle)) as e:
        tk.bearer_token([("authorization", value)])
    assert TOK[:8] not in e.value.detail


def test_authorization_given_twice_is_refused():
    with pytest.raises(InvalidArgument, match="given 2 times"):
        tk.bearer_token([("authorization", f"Bearer {TOK}"), ("authorization", f"Bearer {TOK}")])
    with pytest.raises(Unauthenticated):
        tk.bearer_token([("x-other", "1")])


def test_bearer_rule_over_grpc(plane):
    token = plane.config.admin_token
    with grpc.insecure_channel(f"127.0.0.1:{plane.port}") as ch:
        stub = pb_grpc.LoadBalancerStub(ch)
        for value in (f"bearer {token}", f"BEARER  {token}", f"Bearer {token} "):
            assert stub.Version(pb.VersionRequest(), metadata=(("authorization", value),), timeout=5).compatTag
        for value, code in ((f"Bearer {token} x", grpc.StatusCode.INVALID_ARGUMENT),
                            (f"Basic {token}", grpc.StatusCode.INVALID_ARGUMENT),
                            ("Bearer not-a-token", grpc.StatusCode.UNAUTHENTICATED)):
            with pytest.raises(grpc.RpcError) as e:
                stub.Version(pb.VersionRequest(), metadata=(("authorization", value),), timeout=5)
            assert e.value.code() == code and token not in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            stub.Version(pb.VersionRequest(), metadata=(("authorization", f"Bearer {token}"),
                                                         ("authorization", f"Bearer {token}")), timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "given 2 times" in e.value.details()


def test_admin_token_must_be_one_bearer_token():
    with pytest.raises(ValueError, match="admin_token"):
        ControlConfig(port=0, backend="memory", admin_token="two words here")


def test_repeated_sender_addresses_are_one_sender(plane):
    """Found by the RPC fuzzer: the same address twice (in any spelling) once failed the store's
    unique key and answered INTERNAL."""
    m = admin(plane)
    r = m.reserve("dups", senders=["::1", "::1", "0::1", "127.0.0.1", " 127.0.0.1"])
    assert sorted(m.status(r.lb_id).senderAddresses) == ["127.0.0.1", "::1"]
    m.add_senders(["::1", "::1"], lb_id=r.lb_id)
    assert sorted(m.status(r.lb_id).senderAddresses) == ["127.0.0.1", "::1"]
    m.free(r.lb_id)
    m.close()
