"""LBManager: a client for every RPC of an EJFAT-compatible control plane (ejlb's or udplbd).

The token comes from the URI; Reserve and Register remember what they minted, so one manager can
reserve, register a worker and report its state. gRPC failures raise `ejlb.control.errors`
exceptions whose message is the server's detail plus the RPC name.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from ejlb import sendstate
from ejlb.control import loadbalancer_pb2 as pb
from ejlb.control import loadbalancer_pb2_grpc as pb_grpc
from ejlb.control.errors import InvalidArgument, from_rpc_error
from ejlb.shim.state import DEFAULT_MAX_FACTOR, DEFAULT_MIN_FACTOR
from ejlb.uri import DataAddress, EjfatURI, SyncAddress

IP_FAMILY = {"dual": 0, "dual_stack": 0, "ipv4": 1, "ipv6": 2, 0: 0, 1: 1, 2: 2, 4: 1, 6: 2}
RESOURCE = {"all": 0, "load_balancer": 1, "lb": 1, "reservation": 2, "session": 3, 0: 0, 1: 1, 2: 2, 3: 3}
PERMISSION = {"read_only": 0, "read": 0, "register": 1, "reserve": 2, "update": 3, 0: 0, 1: 1, 2: 2, 3: 3}


@dataclass(frozen=True)
class Reservation:
    lb_id: str
    token: str
    uri: EjfatURI
    reply: pb.ReserveLoadBalancerReply


@dataclass(frozen=True)
class Registration:
    token: str
    session_id: str


def _timestamp(value: dt.datetime | dt.timedelta | float) -> Timestamp:
    if isinstance(value, dt.timedelta):
        value = dt.datetime.now(dt.timezone.utc) + value
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)  # naive datetimes are taken as UTC
        seconds = value.timestamp()
    elif isinstance(value, (int, float)):
        seconds = float(value)
    else:
        raise InvalidArgument(f"until={value!r}: expected a datetime, timedelta or Unix time")
    t = Timestamp()
    t.FromNanoseconds(int(seconds * 1e9))
    return t


def _enum(table: Mapping, field: str, value) -> int:
    key = value.lower() if isinstance(value, str) else value
    if key not in table:
        raise InvalidArgument(f"{field}={value!r}: must be one of {sorted(k for k in table if isinstance(k, str))}")
    return table[key]


def _selector(target: int | str | None) -> pb.TokenSelector:
    if target is None:
        return pb.TokenSelector(id=0)
    if isinstance(target, int):
        return pb.TokenSelector(id=target)
    return pb.TokenSelector(token=target)


def _insecure_tls(host: str, port: int) -> tuple[grpc.ChannelCredentials, list]:
    """TLS that trusts whatever certificate the server presents (--insecure): fetch it, pin it, and
    accept the name it was issued for."""
    pem = ssl.get_server_certificate((host.strip("[]"), port))
    name = host
    with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as f:
        f.write(pem)
    try:
        info = ssl._ssl._test_decode_cert(f.name)  # stdlib has no public PEM parser
        sans = [v for k, v in info.get("subjectAltName", ()) if k in ("DNS", "IP Address")]
        cns = [v for rdn in info.get("subject", ()) for k, v in rdn if k == "commonName"]
        name = (sans or cns or [host])[0]
    except Exception:
        pass
    finally:
        os.unlink(f.name)
    return grpc.ssl_channel_credentials(root_certificates=pem.encode()), [("grpc.ssl_target_name_override", name)]


class LBManager:
    def __init__(self, uri: EjfatURI | str, *, ca_file: str | None = None, insecure: bool = False,
                 timeout: float = 10.0):
        self.uri = EjfatURI.parse(uri) if isinstance(uri, str) else uri
        self.timeout = timeout
        self.token = self.uri.token
        self.lb_id = self.uri.lb_id
        self.session_id = self.uri.session_id
        self.session_token = self.uri.token if self.uri.session_id else None
        target = self.uri.control_target
        if self.uri.tls:
            if ca_file:
                with open(ca_file, "rb") as f:
                    creds, options = grpc.ssl_channel_credentials(root_certificates=f.read()), []
            elif insecure:
                creds, options = _insecure_tls(self.uri.host, self.uri.port)
            else:
                creds, options = grpc.ssl_channel_credentials(), []
            self._channel = grpc.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(target)
        self._stub = pb_grpc.LoadBalancerStub(self._channel)

    # -- plumbing -------------------------------------------------------------------------------
    def _call(self, rpc: str, request, token: str | None = None):
        token = token if token is not None else self.token
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        try:
            return getattr(self._stub, rpc)(request, metadata=metadata, timeout=self.timeout)
        except grpc.RpcError as e:
            raise from_rpc_error(e, rpc) from None

    def _lb(self, lb_id: str | int | None) -> str:
        lb = lb_id if lb_id is not None else self.lb_id
        if lb is None:
            raise InvalidArgument("lb_id: none given and the URI names no load balancer (/lb/ID)")
        return str(lb)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "LBManager":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reservations ---------------------------------------------------------------------------
    def reserve(self, name: str, *, until: dt.datetime | dt.timedelta | None = None, senders: Iterable[str] = (),
                ip_family: str | int = "dual", strategy: str = "") -> Reservation:
        req = pb.ReserveLoadBalancerRequest(name=name, senderAddresses=[str(s) for s in senders],
                                            ipFamily=_enum(IP_FAMILY, "ip_family", ip_family), strategy=strategy)
        if until is not None:
            req.until.CopyFrom(_timestamp(until))
        reply = self._call("ReserveLoadBalancer", req)
        if self.lb_id is None:
            self.lb_id = reply.lbId
        return Reservation(reply.lbId, reply.token, self.reservation_uri(reply), reply)

    def reservation_uri(self, reply: pb.ReserveLoadBalancerReply) -> EjfatURI:
        """The instance URI of a reservation: this control plane, the reply's token, lb id and addresses."""
        sync, data = {}, {}
        for text in (reply.syncIpv4Address, reply.syncIpv6Address):
            if text:
                ip = ipaddress.ip_address(text)
                sync[ip.version] = SyncAddress(ip, reply.syncUdpPort)
        for text in (reply.dataIpv4Address, reply.dataIpv6Address):
            if text:
                ip = ipaddress.ip_address(text)
                lo, hi = reply.dataMinPort, reply.dataMaxPort
                data[ip.version] = DataAddress(ip, lo, hi, True) if lo else DataAddress(ip)
        return self.uri.with_(token=reply.token or self.token, lb_id=reply.lbId, session_id=None,
                              sync=sync, data=data)

    def get(self, lb_id=None) -> pb.ReserveLoadBalancerReply:
        return self._call("GetLoadBalancer", pb.GetLoadBalancerRequest(lbId=self._lb(lb_id)))

    def status(self, lb_id=None) -> pb.LoadBalancerStatusReply:
        return self._call("LoadBalancerStatus", pb.LoadBalancerStatusRequest(lbId=self._lb(lb_id)))

    def free(self, lb_id=None) -> None:
        self._call("FreeLoadBalancer", pb.FreeLoadBalancerRequest(lbId=self._lb(lb_id)))

    def reset(self, *, sync: bool = False, epochs: bool = False, senders: bool = False, workers: bool = False,
              lb_id=None) -> pb.ResetLoadBalancerReply:
        return self._call("ResetLoadBalancer", pb.ResetLoadBalancerRequest(
            lbId=self._lb(lb_id), sync=sync, epochs=epochs, senders=senders, workers=workers))

    def extend(self, until: dt.datetime | dt.timedelta | None, lb_id=None) -> pb.ExtendReservationReply:
        req = pb.ExtendReservationRequest(lbId=self._lb(lb_id))
        if until is not None:
            req.until.CopyFrom(_timestamp(until))
        return self._call("ExtendReservation", req)

    def add_senders(self, addresses: Iterable[str], lb_id=None) -> None:
        self._call("AddSenders", pb.AddSendersRequest(lbId=self._lb(lb_id), senderAddresses=[str(a) for a in addresses]))

    def remove_senders(self, addresses: Iterable[str], lb_id=None) -> None:
        self._call("RemoveSenders", pb.RemoveSendersRequest(lbId=self._lb(lb_id),
                                                            senderAddresses=[str(a) for a in addresses]))

    # -- workers --------------------------------------------------------------------------------
    def register(self, name: str, ip: str, port: int, *, weight: float = 1.0, port_range: int = 0,
                 min_factor: float = DEFAULT_MIN_FACTOR,
                 max_factor: float = DEFAULT_MAX_FACTOR, keep_lb_header: bool = False,
                 slot_demands: Iterable[tuple[int, int]] = (), lb_id=None) -> Registration:
        reply = self._call("Register", pb.RegisterRequest(
            lbId=self._lb(lb_id), name=name, weight=weight, ipAddress=str(ip), udpPort=port, portRange=port_range,
            minFactor=min_factor, maxFactor=max_factor, keepLbHeader=keep_lb_header,
            slotDemands=[pb.SlotRange(index=i, length=n) for i, n in slot_demands]))
        self.session_token, self.session_id = reply.token, reply.sessionId
        if lb_id is not None:
            self.lb_id = str(lb_id)
        return Registration(reply.token, reply.sessionId)

    def _session(self) -> tuple[str, str]:
        if not self.session_id or not self.session_token:
            raise InvalidArgument("session: call register() first (or use a URI with sessionid=)")
        return self.session_id, self.session_token

    def send_state(self, *, fill_percent: float, control_signal: float, is_ready: bool = True,
                   totals: Mapping[str, int] | None = None, timestamp: dt.datetime | float | None = None) -> None:
        sid, token = self._session()
        totals = totals or {}
        unknown = set(totals) - set(sendstate.COLUMNS)
        if unknown:
            raise InvalidArgument(f"totals: unknown counters {sorted(unknown)} (known: {', '.join(sendstate.COLUMNS)})")
        req = pb.SendStateRequest(lbId=self._lb(None), sessionId=sid, fillPercent=fill_percent,
                                  controlSignal=control_signal, isReady=is_ready,
                                  **{sendstate.PROTO_OF[k]: int(v) for k, v in totals.items()})
        req.timestamp.CopyFrom(_timestamp(timestamp if timestamp is not None else dt.datetime.now(dt.timezone.utc)))
        self._call("SendState", req, token)

    def deregister(self) -> None:
        sid, token = self._session()
        self._call("Deregister", pb.DeregisterRequest(lbId=self._lb(None), sessionId=sid), token)
        self.session_id = self.session_token = None

    def set_slot_demands(self, demands: Mapping[str, Sequence[tuple[int, int]]], lb_id=None) -> None:
        self._call("SetSlotDemands", pb.SetSlotDemandsRequest(lbId=self._lb(lb_id), slotConstraints=[
            pb.SessionSlotRanges(sessionId=str(sid), slots=[pb.SlotRange(index=i, length=n) for i, n in ranges])
            for sid, ranges in demands.items()]))

    # -- everything else ------------------------------------------------------------------------
    def overview(self) -> pb.OverviewReply:
        return self._call("Overview", pb.OverviewRequest())

    def timeseries(self, selectors: Iterable[str], since: dt.datetime | dt.timedelta | float | None = None):
        req = pb.TimeseriesRequest(seriesSelector=list(selectors))
        if since is not None:
            req.since.CopyFrom(_timestamp(since))
        return self._call("Timeseries", req)

    def version(self) -> pb.VersionReply:
        return self._call("Version", pb.VersionRequest())

    def create_token(self, name: str, permissions: Iterable) -> pb.CreateTokenReply:
        """permissions: (resource_type, resource_id, permission) with names ("reservation", "update")
        or wire values, or TokenPermission messages."""
        perms = []
        for p in permissions:
            if isinstance(p, pb.TokenPermission):
                perms.append(p)
                continue
            rtype, rid, level = p
            perms.append(pb.TokenPermission(resourceType=_enum(RESOURCE, "resource_type", rtype),
                                            resourceId=str(rid or ""), permission=_enum(PERMISSION, "permission", level)))
        return self._call("CreateToken", pb.CreateTokenRequest(name=name, permissions=perms))

    def list_token_permissions(self, target: int | str | None = None) -> pb.TokenDetails:
        return self._call("ListTokenPermissions", pb.ListTokenPermissionsRequest(target=_selector(target))).token

    def list_child_tokens(self, target: int | str | None = None) -> list[pb.TokenDetails]:
        return list(self._call("ListChildTokens", pb.ListChildTokensRequest(target=_selector(target))).tokens)

    def revoke_token(self, target: int | str) -> None:
        self._call("RevokeToken", pb.RevokeTokenRequest(target=_selector(target)))
