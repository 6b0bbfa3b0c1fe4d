"""Permission matrix over real gRPC: every RPC × {admin, token of another LB, reservation token,
session token, revoked token, no token, malformed header} → the status of the spec."""
import grpc
import pytest

from ejlb.control import loadbalancer_pb2 as pb
from ejlb.control import loadbalancer_pb2_grpc as pb_grpc
from control_tools import admin, config, control_plane

OK = grpc.StatusCode.OK
PD = grpc.StatusCode.PERMISSION_DENIED
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED

CREDENTIALS = ("admin", "other_lb", "reservation", "session", "revoked", "none", "malformed")


def requests(w):
    """RPC -> request builder, given the world `w` (ids of reservation A and its session)."""
    lb, sid = w["lb"], w["sid"]
    return {
        "ReserveLoadBalancer": lambda: pb.ReserveLoadBalancerRequest(name="x"),
        "GetLoadBalancer": lambda: pb.GetLoadBalancerRequest(lbId=lb),
        "LoadBalancerStatus": lambda: pb.LoadBalancerStatusRequest(lbId=lb),
        "FreeLoadBalancer": lambda: pb.FreeLoadBalancerRequest(lbId=lb),
        "ResetLoadBalancer": lambda: pb.ResetLoadBalancerRequest(lbId=lb, senders=True),
        "ExtendReservation": lambda: pb.ExtendReservationRequest(lbId=lb),
        "AddSenders": lambda: pb.AddSendersRequest(lbId=lb, senderAddresses=["127.0.0.9"]),
        "RemoveSenders": lambda: pb.RemoveSendersRequest(lbId=lb, senderAddresses=["127.0.0.1"]),
        "Register": lambda: pb.RegisterRequest(lbId=lb, name="w2", ipAddress="127.0.0.1", udpPort=20001),
        "SetSlotDemands": lambda: pb.SetSlotDemandsRequest(lbId=lb, slotConstraints=[
            pb.SessionSlotRanges(sessionId=sid, slots=[pb.SlotRange(index=0, length=4)])]),
        "Deregister": lambda: pb.DeregisterRequest(lbId=lb, sessionId=sid),
        "SendState": lambda: pb.SendStateRequest(lbId=lb, sessionId=sid, fillPercent=0.5, isReady=True),
        "Overview": lambda: pb.OverviewRequest(),
        "Timeseries": lambda: pb.TimeseriesRequest(seriesSelector=["*"]),
        "Version": lambda: pb.VersionRequest(),
        "CreateToken": lambda: pb.CreateTokenRequest(name="ro", permissions=[pb.TokenPermission(
            resourceType=pb.TokenPermission.RESERVATION, resourceId=lb, permission=pb.TokenPermission.READ_ONLY)]),
        "ListTokenPermissions": lambda: pb.ListTokenPermissionsRequest(target=pb.TokenSelector(id=w["session_token_id"])),
        "ListChildTokens": lambda: pb.ListChildTokensRequest(target=pb.TokenSelector(id=w["session_token_id"])),
        "RevokeToken": lambda: pb.RevokeTokenRequest(target=pb.TokenSelector(id=w["session_token_id"])),
    }


# expected status for (admin, other_lb, reservation, session); revoked/none/malformed are uniform
RESERVATION_READ = (OK, PD, OK, PD)
RESERVATION_UPDATE = (OK, PD, OK, PD)
SESSION_UPDATE = (OK, PD, OK, OK)
ANY_TOKEN = (OK, OK, OK, OK)
EXPECTED = {
    "ReserveLoadBalancer": (OK, EXHAUSTED, PD, PD),  # other_lb may reserve, but its LB is taken
    "GetLoadBalancer": RESERVATION_READ,
    "LoadBalancerStatus": RESERVATION_READ,
    "FreeLoadBalancer": RESERVATION_UPDATE,
    "ResetLoadBalancer": RESERVATION_UPDATE,
    "ExtendReservation": RESERVATION_UPDATE,
    "AddSenders": RESERVATION_UPDATE,
    "RemoveSenders": RESERVATION_UPDATE,
    "Register": RESERVATION_UPDATE,
    "SetSlotDemands": RESERVATION_UPDATE,
    "Deregister": SESSION_UPDATE,
    "SendState": SESSION_UPDATE,
    "Overview": ANY_TOKEN,
    "Timeseries": ANY_TOKEN,
    "Version": ANY_TOKEN,
    "CreateToken": (OK, PD, OK, PD),
    "ListTokenPermissions": (OK, PD, OK, OK),  # self or an ancestor
    "ListChildTokens": (OK, PD, OK, OK),
    "RevokeToken": (OK, PD, OK, PD),  # an ancestor (the session token is not its own)
}
assert set(EXPECTED) == set(pb.DESCRIPTOR.services_by_name["LoadBalancer"].methods_by_name)


@pytest.fixture(scope="module")
def plane():
    with control_plane(config(n_instances=3)) as cp:
        yield cp


@pytest.fixture
def world(plane):
    """Fresh state per case: reservation A (instance 0) with one session, reservation B (instance 1),
    a token scoped to B's load balancer, a revoked admin-level token. Freed afterwards."""
    m = admin(plane)
    a = m.reserve("A", senders=["127.0.0.1"])
    b = m.reserve("B")
    res_mgr = type(m)(a.uri)
    reg = res_mgr.register("w1", "127.0.0.1", 20000)
    other = m.create_token("lb1", [("load_balancer", b.reply.fpgaLbId, "update")]).token
    revoked = m.create_token("gone", [("all", "", "update")]).token
    m.revoke_token(revoked)
    session_token_id = type(m)(a.uri.with_(token=reg.token)).list_token_permissions().id
    w = {"lb": a.lb_id, "sid": reg.session_id, "session_token_id": session_token_id,
         "tokens": {"admin": plane.config.admin_token, "other_lb": other, "reservation": a.token,
                    "session": reg.token, "revoked": revoked}}
    yield w
    for r in m.overview().loadBalancers:
        m.free(r.reservation.lbId)
    for t in m.list_child_tokens():
        m.revoke_token(t.id)
    m.close()
    res_mgr.close()


@pytest.mark.parametrize("cred", CREDENTIALS)
@pytest.mark.parametrize("rpc", sorted(EXPECTED))
def test_matrix(plane, world, rpc, cred):
    if cred in ("revoked", "none"):
        expected = UNAUTH
    elif cred == "malformed":
        expected = INVALID
    else:
        expected = EXPECTED[rpc][CREDENTIALS.index(cred)]
    if cred == "none":
        metadata = ()
    elif cred == "malformed":
        metadata = (("authorization", "Token " + world["tokens"]["admin"]),)
    else:
        metadata = (("authorization", "Bearer " + world["tokens"][cred]),)
    with grpc.insecure_channel(f"127.0.0.1:{plane.port}") as ch:
        stub = pb_grpc.LoadBalancerStub(ch)
        try:
            getattr(stub, rpc)(requests(world)[rpc](), metadata=metadata, timeout=5)
            code = OK
        except grpc.RpcError as e:
            code = e.code()
            assert e.details()  # every refusal says why
    assert code == expected, f"{rpc} with {cred} token"


def test_overview_lists_only_what_the_token_may_read(plane, world):
    from ejlb.control.client import LBManager

    def names(token):
        uri = f"ejfat://{token}@127.0.0.1:{plane.port}/"
        with LBManager(uri) as m:
            return sorted(o.name for o in m.overview().loadBalancers)

    t = world["tokens"]
    assert names(t["admin"]) == ["A", "B"]
    assert names(t["other_lb"]) == ["B"]
    assert names(t["reservation"]) == ["A"]
    assert names(t["session"]) == []


def test_unknown_lb_is_not_found_for_admin_and_denied_for_others(plane, world):
    from ejlb.control.client import LBManager
    from ejlb.control.errors import InvalidArgument, NotFound, PermissionDenied

    with LBManager(f"ejfat://{world['tokens']['admin']}@127.0.0.1:{plane.port}/") as m:
        with pytest.raises(NotFound, match="lbId='999'.*GetLoadBalancer"):
            m.get("999")
        with pytest.raises(InvalidArgument, match="lbId='abc'"):
            m.get("abc")
    with LBManager(f"ejfat://{world['tokens']['reservation']}@127.0.0.1:{plane.port}/") as m:
        with pytest.raises(PermissionDenied):
            m.get("999")
