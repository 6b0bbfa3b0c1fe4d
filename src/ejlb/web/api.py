"""The REST mirror of the gRPC LoadBalancer API (docs/rest.md), as data: one row per route.

Each route builds the RPC's request message from the path, the query and the JSON body (the proto3
JSON mapping: the field names of `loadbalancer.proto`), calls the gRPC servicer's own method with a
small context adapter, and returns the reply in the proto3 JSON mapping. So authentication, the
permission checks, validation, the audit log and the RPC metrics are the gRPC API's, not copies;
only the status is translated (grpc-gateway's mapping, `HTTP_STATUS`).

Choices:
- Ids in paths go into the request as sent, so the service checks them as it does over gRPC; a
  token `{id}` must be a decimal (`validate.decimal_id`) to fit the selector's uint32.
- A path parameter and a body field may not disagree (`lbId` in both): refused, not one picked.
- Tokens are selected by id only (`/tokens/{id}`); selecting by the token itself would put a
  secret into a URL, and `/tokens/self` is the caller's own.
- int64 fields are strings in proto3 JSON (JavaScript loses precision above 2^53): event numbers,
  counters and sample timestamps come as strings.
"""
from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import json_format

from ejlb.control import audit
from ejlb.control import loadbalancer_pb2 as pb
from ejlb.control import validate as check
from ejlb.control.errors import InvalidArgument, LBError

# google.rpc.Code -> HTTP status, as grpc-gateway and Google's HTTP APIs map them
HTTP_STATUS = {
    grpc.StatusCode.OK: 200, grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409, grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INTERNAL: 500, grpc.StatusCode.UNKNOWN: 500, grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class RPCAborted(Exception):
    """What `context.abort` raises: the status and message the gRPC client would have seen."""

    def __init__(self, code: grpc.StatusCode, detail: str):
        super().__init__(detail)
        self.code, self.detail = code, detail

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)

    def body(self) -> dict:
        return {"code": self.code.name, "message": self.detail}


class HttpContext:
    """The part of grpc.ServicerContext the servicer uses: the bearer token as metadata, the peer
    (for the audit log) and abort."""

    def __init__(self, authorization: list[str], peer: str):
        self._metadata = [("authorization", v) for v in authorization]
        self._peer = peer

    def invocation_metadata(self):
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def abort(self, code: grpc.StatusCode, detail: str):
        raise RPCAborted(code, detail)


@dataclass(frozen=True)
class Route:
    method: str  # HTTP
    path: str  # aiohttp pattern; {lbId}, {sessionId}, {id}
    rpc: str  # servicer method
    request: type
    query: tuple[str, ...] = ()  # query parameters taken (GET)


ROUTES = (
    Route("GET", "/api/v1/version", "Version", pb.VersionRequest),
    Route("GET", "/api/v1/lbs", "Overview", pb.OverviewRequest),
    Route("POST", "/api/v1/lbs", "ReserveLoadBalancer", pb.ReserveLoadBalancerRequest),
    Route("GET", "/api/v1/lbs/{lbId}", "GetLoadBalancer", pb.GetLoadBalancerRequest),
    Route("DELETE", "/api/v1/lbs/{lbId}", "FreeLoadBalancer", pb.FreeLoadBalancerRequest),
    Route("GET", "/api/v1/lbs/{lbId}/status", "LoadBalancerStatus", pb.LoadBalancerStatusRequest),
    Route("POST", "/api/v1/lbs/{lbId}/reset", "ResetLoadBalancer", pb.ResetLoadBalancerRequest),
    Route("POST", "/api/v1/lbs/{lbId}/extend", "ExtendReservation", pb.ExtendReservationRequest),
    Route("POST", "/api/v1/lbs/{lbId}/senders", "AddSenders", pb.AddSendersRequest),
    Route("POST", "/api/v1/lbs/{lbId}/senders/remove", "RemoveSenders", pb.RemoveSendersRequest),
    Route("POST", "/api/v1/lbs/{lbId}/sessions", "Register", pb.RegisterRequest),
    Route("DELETE", "/api/v1/lbs/{lbId}/sessions/{sessionId}", "Deregister", pb.DeregisterRequest),
    Route("POST", "/api/v1/lbs/{lbId}/sessions/{sessionId}/state", "SendState", pb.SendStateRequest),
    Route("PUT", "/api/v1/lbs/{lbId}/slot-demands", "SetSlotDemands", pb.SetSlotDemandsRequest),
    Route("GET", "/api/v1/timeseries", "Timeseries", pb.TimeseriesRequest, query=("selector", "since")),
    Route("POST", "/api/v1/tokens", "CreateToken", pb.CreateTokenRequest),
    Route("GET", "/api/v1/tokens/self", "ListTokenPermissions", pb.ListTokenPermissionsRequest),
    Route("GET", "/api/v1/tokens/self/children", "ListChildTokens", pb.ListChildTokensRequest),
    Route("GET", "/api/v1/tokens/{id}", "ListTokenPermissions", pb.ListTokenPermissionsRequest),
    Route("GET", "/api/v1/tokens/{id}/children", "ListChildTokens", pb.ListChildTokensRequest),
    Route("DELETE", "/api/v1/tokens/{id}", "RevokeToken", pb.RevokeTokenRequest),
)

QUERY_FIELDS = {"selector": "seriesSelector", "since": "since"}


def build_request(route: Route, path: dict[str, str], query: list[tuple[str, str]], body: dict | None):
    """The request message of a route; InvalidArgument names the field and value."""
    fields = dict(body or {})
    for key, value in path.items():
        if key == "id":
            fields["target"] = {"id": check.decimal_id("id", value)}
            continue
        if key in fields and fields[key] != value:
            raise InvalidArgument(f"{key}={fields[key]!r}: the path says {value!r}")
        fields[key] = value
    for key, value in query:
        if key not in route.query:
            raise InvalidArgument(f"{key}={value!r}: unknown query parameter"
                                  + (f" (known: {', '.join(route.query)})" if route.query else ""))
        name = QUERY_FIELDS[key]
        if name == "seriesSelector":
            fields.setdefault(name, []).append(value)
        else:
            fields[name] = value
    msg = route.request()
    try:
        json_format.ParseDict(fields, msg)
    except json_format.ParseError as e:
        raise InvalidArgument(f"body: {e}") from None
    return msg


def to_json(reply) -> dict:
    """Every field, defaults included (a page need not know proto3's defaults)."""
    try:
        return json_format.MessageToDict(reply, always_print_fields_with_no_presence=True)
    except TypeError:  # protobuf < 5.26 (the dependency allows 4.25) names it so
        return json_format.MessageToDict(reply, including_default_value_fields=True)


def call(servicer, route: Route, authorization: list[str], peer: str, path: dict[str, str],
         query: list[tuple[str, str]], body: dict | None) -> dict:
    """Run one route through the gRPC servicer; raises RPCAborted with the status it would return."""
    ctx = HttpContext(authorization, peer)
    try:
        request = build_request(route, path, query, body)
    except LBError as e:  # refused before the servicer: audited as it would be
        token = audit.PEER.set(peer)
        try:
            servicer.refusals.log(route.rpc, e.code.name, e.detail, None)
        finally:
            audit.PEER.reset(token)
        raise RPCAborted(e.code, e.detail) from None
    return to_json(getattr(servicer, route.rpc)(request, ctx))


def call_rpc(servicer, rpc: str, request, authorization: list[str], peer: str):
    """One servicer method with a request message (the dashboard's own endpoints authorise through
    the gRPC API's checks this way); raises RPCAborted."""
    return getattr(servicer, rpc)(request, HttpContext(authorization, peer))

