"""Wire compatibility of loadbalancer.proto: every message's field numbers and types, and the enum
values, checked against a second transcription of docs/control-api.md (a typo in either fails)."""
import pytest
from google.protobuf.descriptor import FieldDescriptor as F

from ejlb.control import loadbalancer_pb2 as pb

S, U32, U64, I32, I64, FLT, BOOL, MSG, ENUM = (F.TYPE_STRING, F.TYPE_UINT32, F.TYPE_UINT64, F.TYPE_INT32,
                                              F.TYPE_INT64, F.TYPE_FLOAT, F.TYPE_BOOL, F.TYPE_MESSAGE, F.TYPE_ENUM)
R = "repeated"
TOTALS = ("totalEventsRecv", "totalEventsReassembled", "totalEventsReassemblyErr", "totalEventsDequeued",
          "totalEventEnqueueErr", "totalBytesRecv", "totalPacketsRecv")

SPEC = {
    "ReserveLoadBalancerRequest": {2: ("name", S), 4: ("until", MSG), 5: ("senderAddresses", S, R),
                                   6: ("ipFamily", ENUM), 10: ("strategy", S)},
    "ReserveLoadBalancerReply": {1: ("token", S), 2: ("lbId", S), 3: ("syncIpv4Address", S),
                                 8: ("syncIpv6Address", S), 4: ("syncUdpPort", U32), 5: ("dataIpv4Address", S),
                                 6: ("dataIpv6Address", S), 9: ("dataMinPort", U32), 10: ("dataMaxPort", U32),
                                 7: ("fpgaLbId", U32), 11: ("strategy", S), 12: ("ejfatUri", S)},
    "GetLoadBalancerRequest": {2: ("lbId", S)},
    "LoadBalancerStatusRequest": {2: ("lbId", S)},
    "LoadBalancerStatusReply": {1: ("timestamp", MSG), 2: ("currentEpoch", U64),
                                3: ("currentPredictedEventNumber", U64), 4: ("workers", MSG, R),
                                5: ("senderAddresses", S, R), 6: ("expiresAt", MSG), 11: ("slotResolution", U32),
                                12: ("healthIssues", MSG, R)},
    "FreeLoadBalancerRequest": {2: ("lbId", S)},
    "ResetLoadBalancerRequest": {1: ("lbId", S), 2: ("sync", BOOL), 3: ("epochs", BOOL), 4: ("senders", BOOL),
                                 5: ("workers", BOOL)},
    "ResetLoadBalancerReply": {2: ("sync", BOOL), 3: ("epochs", BOOL), 4: ("senders", BOOL), 5: ("workers", BOOL)},
    "ExtendReservationRequest": {1: ("lbId", S), 2: ("until", MSG)},
    "ExtendReservationReply": {2: ("until", MSG)},
    "AddSendersRequest": {2: ("lbId", S), 3: ("senderAddresses", S, R)},
    "RemoveSendersRequest": {2: ("lbId", S), 3: ("senderAddresses", S, R)},
    "RegisterRequest": {2: ("lbId", S), 3: ("name", S), 4: ("weight", FLT), 5: ("ipAddress", S), 6: ("udpPort", U32),
                        7: ("portRange", ENUM), 8: ("minFactor", FLT), 9: ("maxFactor", FLT),
                        10: ("keepLbHeader", BOOL), 12: ("slotDemands", MSG, R)},
    "RegisterReply": {1: ("token", S), 2: ("sessionId", S)},
    "SetSlotDemandsRequest": {1: ("lbId", S), 2: ("slotConstraints", MSG, R)},
    "DeregisterRequest": {2: ("lbId", S), 3: ("sessionId", S)},
    "SendStateRequest": {3: ("lbId", S), 2: ("sessionId", S), 4: ("timestamp", MSG), 5: ("fillPercent", FLT),
                         6: ("controlSignal", FLT), 7: ("isReady", BOOL),
                         **{8 + i: (n, I64) for i, n in enumerate(TOTALS)}},
    "Overview": {1: ("name", S), 3: ("reservation", MSG), 4: ("status", MSG)},
    "OverviewReply": {1: ("loadBalancers", MSG, R)},
    "TimeseriesRequest": {1: ("seriesSelector", S, R), 2: ("since", MSG)},
    "TimeseriesReply": {1: ("timeseries", MSG, R), 2: ("since", MSG)},
    "Timeseries": {1: ("name", S), 2: ("unit", S), 3: ("integer_samples", MSG), 4: ("float_samples", MSG)},
    "IntegerSamples": {1: ("data", MSG, R)},
    "FloatSamples": {4: ("data", MSG, R)},
    "IntegerSample": {1: ("timestamp", I64), 2: ("value", I64), 3: ("meta", MSG)},
    "FloatSample": {1: ("timestamp", I64), 2: ("value", FLT), 3: ("meta", MSG)},
    "VersionReply": {1: ("commit", S), 2: ("build", S), 3: ("compatTag", S)},
    "TokenPermission": {1: ("resourceType", ENUM), 2: ("resourceId", S), 3: ("permission", ENUM)},
    "CreateTokenRequest": {1: ("name", S), 2: ("permissions", MSG, R)},
    "CreateTokenReply": {1: ("token", S), 2: ("ejfatUri", S)},
    "TokenSelector": {1: ("id", U32), 2: ("token", S)},
    "TokenDetails": {1: ("name", S), 2: ("permissions", MSG, R), 3: ("created_at", S), 4: ("id", U32)},
    "ListTokenPermissionsRequest": {1: ("target", MSG)},
    "ListTokenPermissionsReply": {1: ("token", MSG)},
    "ListChildTokensRequest": {1: ("target", MSG)},
    "ListChildTokensReply": {1: ("tokens", MSG, R)},
    "RevokeTokenRequest": {1: ("target", MSG)},
    "SlotRange": {1: ("index", I32), 2: ("length", U32)},
    "SessionSlotRanges": {1: ("sessionId", S), 2: ("slots", MSG, R)},
    "HealthIssue": {1: ("type", S), 2: ("severity", S), 3: ("message", S), 4: ("details", MSG), 5: ("detected_at", MSG)},
    "WorkerStatus": {1: ("name", S), 2: ("fillPercent", FLT), 3: ("controlSignal", FLT), 4: ("slotsAssigned", U32),
                     5: ("lastUpdated", MSG), 6: ("ipAddress", S), 7: ("udpPort", U32), 8: ("portRange", ENUM),
                     9: ("minFactor", FLT), 10: ("maxFactor", FLT), 11: ("keepLbHeader", BOOL),
                     **{12 + i: (n, I64) for i, n in enumerate(TOTALS)}, 19: ("slots", MSG, R),
                     20: ("slotDemands", MSG, R), 21: ("healthIssues", MSG, R), 22: ("sessionId", I64)},
}


@pytest.mark.parametrize("message", sorted(SPEC))
def test_fields(message):
    desc = pb.DESCRIPTOR.message_types_by_name[message]
    got = {f.number: (f.name, f.type) + ((R,) if f.label == F.LABEL_REPEATED else ()) for f in desc.fields}
    assert got == SPEC[message]


def test_enums_and_service():
    assert dict(pb.IpFamily.items()) == {"DUAL_STACK": 0, "IPV4": 1, "IPV6": 2}
    assert {k: v for k, v in pb.PortRange.items()} == {f"PORT_RANGE_{1 << n}": n for n in range(15)}
    assert dict(pb.TokenPermission.ResourceType.items()) == {"ALL": 0, "LOAD_BALANCER": 1, "RESERVATION": 2, "SESSION": 3}
    assert dict(pb.TokenPermission.PermissionType.items()) == {"READ_ONLY": 0, "REGISTER": 1, "RESERVE": 2, "UPDATE": 3}
    assert pb.DESCRIPTOR.package == "loadbalancer"
    svc = pb.DESCRIPTOR.services_by_name["LoadBalancer"]
    assert svc.full_name == "loadbalancer.LoadBalancer"
    assert svc.methods_by_name["GetLoadBalancer"].output_type.name == "ReserveLoadBalancerReply"


def test_hand_encoded_register_request_decodes():
    """Bytes as an independent EJFAT client would put them on the wire (field 5 = ipAddress, 6 =
    udpPort varint, 7 = portRange varint)."""
    raw = bytes([0x12, 1]) + b"7" + bytes([0x2A, 8]) + b"10.0.0.1" + bytes([0x30, 0xC2, 0x98, 0x01, 0x38, 3])
    msg = pb.RegisterRequest.FromString(raw)
    assert (msg.lbId, msg.ipAddress, msg.udpPort, msg.portRange) == ("7", "10.0.0.1", 19522, 3)
