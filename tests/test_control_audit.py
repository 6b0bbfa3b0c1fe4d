"""Audit log over real gRPC on loopback: token and session changes at info, every refused call at
warning, each with the caller's token id and the peer address, never a token."""
import logging

import grpc
import pytest

from control_tools import admin, config, control_plane
from ejlb.control import audit
from ejlb.control import loadbalancer_pb2 as pb
from ejlb.control import loadbalancer_pb2_grpc as pb_grpc
from ejlb.control.client import LBManager
from ejlb.control.errors import InvalidArgument, PermissionDenied, Unauthenticated

PEER = "peer=ipv4:127.0.0.1:"


@pytest.fixture
def plane():
    with control_plane(config()) as cp:
        yield cp


def lines(caplog, level):
    return [r.getMessage() for r in caplog.records if r.name == "ejlb.control.audit" and r.levelno == level]


def test_token_and_session_changes_are_logged_at_info(plane, caplog):
    caplog.set_level(logging.INFO, logger="ejlb.control.audit")
    m = admin(plane)
    r = m.reserve("audited", senders=["127.0.0.1"])
    created = m.create_token("reader", [("reservation", r.lb_id, "read_only")])
    (child,) = [t for t in m.list_child_tokens() if t.name == "reader"]
    w = LBManager(r.uri)
    reg = w.register("w1", "127.0.0.1", 20000)
    w.deregister()
    m.revoke_token(child.id)
    m.free(r.lb_id)
    info = lines(caplog, logging.INFO)
    expect = [f"reserved lb={r.lb_id} ", f"token created id={child.id} name='reader' permissions=[READ_ONLY "
              f"RESERVATION {r.lb_id}] by token 1", f"registered session={reg.session_id} lb={r.lb_id} ",
              f"deregistered session={reg.session_id} lb={r.lb_id} (127.0.0.1:20000) by token ",
              f"token revoked id={child.id} name='reader' with 0 descendants by token 1",
              f"freed lb={r.lb_id} (instance 0) by token 1"]
    for needle in expect:
        (line,) = [x for x in info if x.startswith(needle)]
        assert PEER in line, line
    text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (created.token, r.token, reg.token, plane.config.admin_token):
        assert secret not in text


def test_every_refused_call_is_logged_at_warning(plane, caplog):
    caplog.set_level(logging.INFO, logger="ejlb.control.audit")
    m = admin(plane)
    r = m.reserve("refusals")
    ro = m.create_token("ro", [("reservation", r.lb_id, "read_only")])
    (ro_id,) = [t.id for t in m.list_child_tokens() if t.name == "ro"]
    with pytest.raises(Unauthenticated):
        LBManager(f"ejfat://not-a-real-token@127.0.0.1:{plane.port}/").version()
    with pytest.raises(PermissionDenied):
        LBManager(ro.ejfatUri).free(r.lb_id)
    with pytest.raises(InvalidArgument):
        m.free(" " + r.lb_id)
    with grpc.insecure_channel(f"127.0.0.1:{plane.port}") as ch:
        with pytest.raises(grpc.RpcError):  # malformed header: no token id to name
            pb_grpc.LoadBalancerStub(ch).Version(
                pb.VersionRequest(), metadata=(("authorization", f"Token {ro.token}"),), timeout=5)
        with pytest.raises(grpc.RpcError):  # no header at all
            pb_grpc.LoadBalancerStub(ch).Version(pb.VersionRequest(), timeout=5)
    warn = lines(caplog, logging.WARNING)
    assert len(warn) == 5, warn
    expect = ["refused Version: UNAUTHENTICATED token not recognised (unknown or revoked) by no valid token",
              f"refused FreeLoadBalancer: PERMISSION_DENIED token {ro_id} ('ro') lacks UPDATE on reservation "
              f"{r.lb_id} by token {ro_id}",
              f"refused FreeLoadBalancer: INVALID_ARGUMENT lbId={' ' + r.lb_id!r}: must be a decimal id",
              "refused Version: INVALID_ARGUMENT authorization: scheme 'Token' is not Bearer",
              "refused Version: UNAUTHENTICATED authorization metadata missing"]
    for line, needle in zip(warn, expect):
        assert needle in line and PEER in line, (needle, line)
    assert "by token 1" in warn[2]  # the admin's malformed call names the admin token
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert ro.token not in text and "not-a-real-token" not in text and plane.config.admin_token not in text


def test_refused_call_warnings_are_rate_limited(caplog):
    caplog.set_level(logging.INFO, logger="ejlb.control.audit")
    refusals = audit.Refusals(rate=10, burst=5)
    for i in range(1000):  # a flood within 0.05 s: the burst, then nothing until the bucket refills
        refusals.log("Version", "UNAUTHENTICATED", "x", None, now=100.0 + i * 5e-5)
    assert len(lines(caplog, logging.WARNING)) == 5
    refusals.log("Version", "UNAUTHENTICATED", "x", None, now=101.0)
    last = lines(caplog, logging.WARNING)[-1]
    assert "(995 refused calls not logged before this one)" in last and "peer=local" in last
