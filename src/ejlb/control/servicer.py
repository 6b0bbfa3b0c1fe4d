"""gRPC shell of the LoadBalancer service: protobuf ⇄ ControlService calls, LBError → status."""
from __future__ import annotations

import functools
import ipaddress
import logging
import operator
import time

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

import ejlb
from ejlb.control import audit
from ejlb.control import calendar as cal
from ejlb.control import loadbalancer_pb2 as pb
from ejlb.control import loadbalancer_pb2_grpc as pb_grpc
from ejlb.control import validate as check
from ejlb.control.errors import LBError
from ejlb.control.liveness import Liveness, classify
from ejlb.control.service import ControlService
from ejlb.control.state import TOTALS_PROTO, Reservation, Session, Token
from ejlb.control.tokens import bearer_token
from ejlb.control.epochs import SEED_SRC
from ejlb.wire import CALENDAR_SLOTS, MAX_SYNC_PERIOD_S

log = logging.getLogger("ejlb.control.rpc")

COMPAT_TAG = "ejfat-loadbalancer-v1"
_totals_of = operator.attrgetter(*TOTALS_PROTO)  # a SendStateRequest's seven counters, in TOTALS order


def ts(t: float) -> Timestamp:
    out = Timestamp()
    out.FromNanoseconds(int(t * 1e9))
    return out


def from_ts(msg, field: str) -> float | None:
    """Seconds since the epoch of an optional Timestamp field (None when absent); out-of-range
    nanos/seconds are InvalidArgument (checked here: the float would hide them)."""
    if not msg.HasField(field):
        return None
    v = getattr(msg, field)
    return check.timestamp(field, v.seconds, v.nanos)


def _bracket(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def ejfat_uri(svc: ControlService, token: str, res: Reservation | None = None, session: Session | None = None) -> str:
    scheme = "ejfats" if svc.config.tls else "ejfat"
    uri = f"{scheme}://{token}@{_bracket(svc.public_host)}:{svc.public_port}/"
    if res is None:
        return uri
    uri += f"lb/{res.id}"
    fams = svc.families(res)
    query = []
    for f, ip in ((4, svc.config.sync_ipv4), (6, svc.config.sync_ipv6)):
        if f in fams:
            query.append(f"sync={_bracket(ip)}:{res.sync_port}")
    for f, ip in ((4, res.lb.ipv4), (6, res.lb.ipv6)):
        if f in fams:
            query.append(f"data={_bracket(ip)}:{res.lb.data_min_port}-{res.lb.data_max_port}")
    if session is not None:
        query.append(f"sessionid={session.id}")
    return uri + "?" + "&".join(query)


def reservation_reply(svc: ControlService, res: Reservation, token: str = "") -> pb.ReserveLoadBalancerReply:
    fams = svc.families(res)
    c = svc.config
    return pb.ReserveLoadBalancerReply(
        token=token, lbId=str(res.id),
        syncIpv4Address=c.sync_ipv4 if 4 in fams else "", syncIpv6Address=c.sync_ipv6 if 6 in fams else "",
        syncUdpPort=res.sync_port,
        dataIpv4Address=res.lb.ipv4 if 4 in fams else "", dataIpv6Address=res.lb.ipv6 if 6 in fams else "",
        dataMinPort=res.lb.data_min_port, dataMaxPort=res.lb.data_max_port, fpgaLbId=res.lb.lb_id,
        strategy=res.strategy, ejfatUri=ejfat_uri(svc, token, res) if token else "",
    )


def status_reply(svc: ControlService, res: Reservation) -> pb.LoadBalancerStatusReply:
    now = svc.clock()
    calendar = res.calendar or ()
    workers, issues = [], []
    for s in res.live_sessions:
        state = classify(now, s.registered_at, s.last_report, s.is_ready)
        w_issues = []
        if state is not Liveness.READY:
            w_issues.append(pb.HealthIssue(type="worker_not_ready", severity="warning",
                                           message="no recent state report" if s.is_ready or s.last_report is None
                                           else "worker reports not ready", detected_at=ts(now)))
        elif s.health:  # found by the last controller tick (capacity balancer)
            w_issues += [pb.HealthIssue(type=kind, severity="warning", message=msg, detected_at=ts(now))
                         for kind, msg in s.health]
        workers.append(pb.WorkerStatus(
            name=s.name, fillPercent=s.fill, controlSignal=s.control_signal,
            slotsAssigned=sum(1 for m in calendar if m == s.member_id),
            lastUpdated=ts(s.last_report or s.registered_at), ipAddress=s.ip, udpPort=s.port,
            portRange=s.port_bits, minFactor=s.min_factor, maxFactor=s.max_factor, keepLbHeader=s.keep_lb_header,
            slots=[pb.SlotRange(index=i, length=n) for i, n in cal.slot_ranges(calendar, s.member_id)],
            slotDemands=[pb.SlotRange(index=i, length=n) for i, n in s.demands],
            healthIssues=w_issues, sessionId=s.id,
            **dict(zip(TOTALS_PROTO, s.totals)),
        ))
    real = [x for x in res.samples if x.src_id != SEED_SRC]
    if not real:
        issues.append(pb.HealthIssue(type="no_sync", severity="info", detected_at=ts(now),
                                     message="no sync packet from an allowed sender yet: boundaries assume µs ticks"))
    elif now - max(x.recv_time for x in real) > 2 * MAX_SYNC_PERIOD_S:
        issues.append(pb.HealthIssue(type="sync_stale", severity="warning", detected_at=ts(now),
                                     message=f"last sync packet {now - max(x.recv_time for x in real):.0f} s ago"))
    issues += [pb.HealthIssue(type=kind, severity="error", message=msg, detected_at=ts(now))
               for kind, msg in svc.dataplane_issues]  # LB nodes down (set by the controller's refresh)
    if res.sessions and all(any(h.type == "worker_not_ready" for h in w.healthIssues) for w in workers):
        issues.append(pb.HealthIssue(type="no_ready_workers", severity="error",
                                     message="no worker is ready: the calendar is not updated", detected_at=ts(now)))
    reply = pb.LoadBalancerStatusReply(
        timestamp=ts(now), currentEpoch=res.epochs[-1].seq if res.epochs else 0,
        currentPredictedEventNumber=svc.predicted_event(res, now), workers=workers,
        senderAddresses=sorted(res.senders), slotResolution=CALENDAR_SLOTS, healthIssues=issues)
    if res.until is not None:
        reply.expiresAt.CopyFrom(ts(res.until))
    return reply


def token_details(t: Token) -> pb.TokenDetails:
    return pb.TokenDetails(name=t.name, created_at=t.created_at, id=t.id, permissions=[
        pb.TokenPermission(resourceType=int(g.resource), resourceId=g.resource_id, permission=int(g.level))
        for g in t.grants])


def selector(msg) -> tuple[str, object] | None:
    if not msg.HasField("target"):
        return None
    which = msg.target.WhichOneof("token_selector")
    return None if which is None else (which, getattr(msg.target, which))


def _rpc(method):
    """Authenticate from metadata, call, map LBError to its status; count every outcome."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self, request, context):
        t0 = time.perf_counter()
        code = grpc.StatusCode.OK
        peer = audit.PEER.set(context.peer() or "unknown")
        secret = None
        try:
            secret = bearer_token(context.invocation_metadata())
            return method(self, secret, request)
        except LBError as e:
            code = e.code
            self.refusals.log(name, e.code.name, e.detail, self.svc.token_id(secret) if secret else None)
            context.abort(e.code, e.detail)
        except Exception:  # a bug must not take the server down; the client sees INTERNAL
            code = grpc.StatusCode.INTERNAL
            log.exception("%s failed", name)
            context.abort(grpc.StatusCode.INTERNAL, f"{name}: internal error")
        finally:
            audit.PEER.reset(peer)
            if self.metrics is not None:
                self.metrics.rpc(name, code, time.perf_counter() - t0)
    return wrapper


class LoadBalancerServicer(pb_grpc.LoadBalancerServicer):
    def __init__(self, service: ControlService, metrics=None):
        self.svc = service
        self.metrics = metrics
        self.refusals = audit.Refusals()

    @_rpc
    def ReserveLoadBalancer(self, secret, r):
        res, token = self.svc.reserve(secret, r.name, from_ts(r, "until"), list(r.senderAddresses),
                                      int(r.ipFamily), r.strategy)
        return reservation_reply(self.svc, res, token)

    @_rpc
    def GetLoadBalancer(self, secret, r):
        with self.svc.lock:
            return reservation_reply(self.svc, self.svc.get(secret, r.lbId))

    @_rpc
    def LoadBalancerStatus(self, secret, r):
        with self.svc.lock:
            return status_reply(self.svc, self.svc.status(secret, r.lbId))

    @_rpc
    def FreeLoadBalancer(self, secret, r):
        self.svc.free(secret, r.lbId)
        return pb.FreeLoadBalancerReply()

    @_rpc
    def ResetLoadBalancer(self, secret, r):
        self.svc.reset(secret, r.lbId, r.sync, r.epochs, r.senders, r.workers)
        return pb.ResetLoadBalancerReply(sync=r.sync, epochs=r.epochs, senders=r.senders, workers=r.workers)

    @_rpc
    def ExtendReservation(self, secret, r):
        until = self.svc.extend(secret, r.lbId, from_ts(r, "until"))
        return pb.ExtendReservationReply(until=ts(until)) if until is not None else pb.ExtendReservationReply()

    @_rpc
    def AddSenders(self, secret, r):
        self.svc.change_senders(secret, r.lbId, list(r.senderAddresses), add=True)
        return pb.AddSendersReply()

    @_rpc
    def RemoveSenders(self, secret, r):
        self.svc.change_senders(secret, r.lbId, list(r.senderAddresses), add=False)
        return pb.RemoveSendersReply()

    @_rpc
    def Register(self, secret, r):
        sess, token = self.svc.register(secret, r.lbId, r.name, r.weight, r.ipAddress, r.udpPort, int(r.portRange),
                                        r.minFactor, r.maxFactor, r.keepLbHeader,
                                        [(d.index, d.length) for d in r.slotDemands])
        return pb.RegisterReply(token=token, sessionId=str(sess.id))

    @_rpc
    def SetSlotDemands(self, secret, r):
        self.svc.set_slot_demands(secret, r.lbId, [(c.sessionId, [(d.index, d.length) for d in c.slots])
                                                   for c in r.slotConstraints])
        return pb.SetSlotDemandsReply()

    @_rpc
    def Deregister(self, secret, r):
        self.svc.deregister(secret, r.lbId, r.sessionId)
        return pb.DeregisterReply()

    @_rpc
    def SendState(self, secret, r):
        from_ts(r, "timestamp")  # validated, not used: liveness runs on the control plane's clock
        self.svc.send_state(secret, r.lbId, r.sessionId, r.fillPercent, r.controlSignal, r.isReady,
                            _totals_of(r))  # in TOTALS order
        return pb.SendStateReply()

    @_rpc
    def Overview(self, secret, r):
        with self.svc.lock:
            return pb.OverviewReply(loadBalancers=[
                pb.Overview(name=res.name, reservation=reservation_reply(self.svc, res),
                            status=status_reply(self.svc, res))
                for res in self.svc.overview(secret)])

    @_rpc
    def Timeseries(self, secret, r):
        since = from_ts(r, "since")
        out = []
        for name, series, points in self.svc.timeseries(secret, list(r.seriesSelector), since):
            t = pb.Timeseries(name=name, unit=series.unit)
            if series.is_float:
                t.float_samples.data.extend(pb.FloatSample(timestamp=ms, value=v) for ms, v in points)
            else:
                t.integer_samples.data.extend(pb.IntegerSample(timestamp=ms, value=v) for ms, v in points)
            out.append(t)
        reply = pb.TimeseriesReply(timeseries=out)
        if since is not None:
            reply.since.CopyFrom(r.since)
        return reply

    @_rpc
    def Version(self, secret, r):
        self.svc.version(secret)
        return pb.VersionReply(commit=getattr(ejlb, "__version__", "0"), build="ejlb", compatTag=COMPAT_TAG)

    @_rpc
    def CreateToken(self, secret, r):
        _, token = self.svc.create_token(secret, r.name, [(p.resourceType, p.resourceId, p.permission)
                                                          for p in r.permissions])
        return pb.CreateTokenReply(token=token, ejfatUri=ejfat_uri(self.svc, token))

    @_rpc
    def ListTokenPermissions(self, secret, r):
        return pb.ListTokenPermissionsReply(token=token_details(self.svc.token_details(secret, selector(r))))

    @_rpc
    def ListChildTokens(self, secret, r):
        return pb.ListChildTokensReply(tokens=[token_details(t) for t in self.svc.child_tokens(secret, selector(r))])

    @_rpc
    def RevokeToken(self, secret, r):
        self.svc.revoke_token(secret, selector(r))
        return pb.RevokeTokenReply()
