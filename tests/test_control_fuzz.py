"""Every RPC with arbitrary field values (hypothesis, built from the proto descriptors): the server
answers with a deliberate status — never INTERNAL/UNKNOWN, never a crash — and keeps serving."""
import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor as F
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control_tools import admin, config, control_plane
from ejlb.control import loadbalancer_pb2 as pb
from ejlb.control import loadbalancer_pb2_grpc as pb_grpc

SERVICE = pb.DESCRIPTOR.services_by_name["LoadBalancer"]
IDS = st.sampled_from(["", "0", "1", "2", "999", "-1", "x", "1" * 30, " 1", "01", "+1", "1 ", "\t2"])
TEXT = st.one_of(IDS, st.text(max_size=12), st.sampled_from(["127.0.0.1", "::1", "10.0.0.1", "fe80::1%eth0"]))
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([0.0, 0.5, 1.0, -1.0]))
SCALARS = {
    F.TYPE_STRING: TEXT, F.TYPE_BOOL: st.booleans(), F.TYPE_FLOAT: FLOATS,
    F.TYPE_UINT32: st.integers(0, 2**32 - 1), F.TYPE_UINT64: st.integers(0, 2**64 - 1),
    F.TYPE_INT32: st.integers(-(2**31), 2**31 - 1), F.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
    F.TYPE_ENUM: st.integers(-3, 20),
}


def message(desc, depth=0):
    """Strategy for any message: each field absent or an arbitrary value of its type."""
    fields = {}
    for f in desc.fields:
        if f.type == F.TYPE_MESSAGE:
            if depth >= 2 or f.message_type.full_name.startswith("google.protobuf.Struct"):
                continue
            if f.message_type.full_name == "google.protobuf.Timestamp":
                value = st.builds(Timestamp, seconds=st.integers(-(2**40), 2**40),  # nanos: also out of range
                                  nanos=st.one_of(st.integers(0, 999_999_999), st.integers(-(2**31), 2**31 - 1)))
            else:
                value = message(f.message_type, depth + 1)
        else:
            value = SCALARS[f.type]
        if f.label == F.LABEL_REPEATED:
            value = st.lists(value, max_size=3)
        fields[f.name] = st.one_of(st.none(), value)
    return st.fixed_dictionaries(fields).map(lambda kw, d=desc: _build(d, kw))


def _build(desc, kw):
    msg = message_factory.GetMessageClass(desc)()
    for name, value in kw.items():
        if value is None:
            continue
        field = getattr(msg, name)
        if isinstance(value, list):
            if desc.fields_by_name[name].type == F.TYPE_MESSAGE:
                for v in value:
                    field.add().CopyFrom(v)
            else:
                field.extend(value)
        elif desc.fields_by_name[name].type == F.TYPE_MESSAGE:
            field.CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


@pytest.fixture(scope="module")
def plane():
    with control_plane(config(n_instances=2)) as cp:
        m = admin(cp)
        r = m.reserve("fuzz", senders=["127.0.0.1"])
        m.register("w", "127.0.0.1", 20000, lb_id=r.lb_id)
        yield cp


@pytest.mark.parametrize("rpc", sorted(SERVICE.methods_by_name))
def test_rpc_survives_arbitrary_requests(plane, rpc):
    method = SERVICE.methods_by_name[rpc]
    channel = grpc.insecure_channel(f"127.0.0.1:{plane.port}")
    call = getattr(pb_grpc.LoadBalancerStub(channel), rpc)
    md = (("authorization", "Bearer " + plane.config.admin_token),)

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(message(method.input_type))
    def run(request):
        try:
            call(request, metadata=md, timeout=5)
        except grpc.RpcError as e:
            assert e.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), e.details()
            assert e.details()

    try:
        run()
    finally:
        channel.close()
    assert admin(plane).version().compatTag  # still serving


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.just("authorization"),  # gRPC keys are lower case
                          st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
                          .map(lambda v: v.replace("TOKEN", "")) | st.sampled_from(
                              ["Bearer TOKEN", "bearer TOKEN", " BEARER  TOKEN ", "Bearer TOKEN x", "TOKEN"])),
                max_size=3))
def test_any_authorization_metadata_gets_a_deliberate_status(plane, headers):
    """Authorization header values of any shape (issue 16): OK, or a deliberate refusal."""
    token = plane.config.admin_token
    md = tuple((k, v.replace("TOKEN", token)) for k, v in headers)
    with grpc.insecure_channel(f"127.0.0.1:{plane.port}") as channel:
        try:
            pb_grpc.LoadBalancerStub(channel).Version(pb.VersionRequest(), metadata=md, timeout=5)
        except (ValueError, TypeError):  # grpcio itself refuses to send it (tabs, empty values)
            pass
        except grpc.RpcError as e:
            assert e.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT), e.details()
            assert token not in (e.details() or "")
