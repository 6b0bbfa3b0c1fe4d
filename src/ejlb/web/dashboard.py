"""The dashboard's own read-only views, beyond the gRPC replies: what the caller may do, a
reservation's epochs, sync samples and counter history, system information, and each LB node's
health and counters when the data plane is made of nodes.

Callers are authorised first through the gRPC servicer (`api.call_rpc`), so the checks and the
audit of refusals are the gRPC API's; these functions then only read, under the service lock.
What the caller may do is decided by `tokens.covers`, the rule the service itself applies, so the
page shows a button exactly when the call behind it would be allowed (the server checks again).
Nothing here is secret: ids, addresses and counters that Status and Overview already show.
"""
from __future__ import annotations

import time

import ejlb
from ejlb.control import tokens as tk
from ejlb.control.epochs import SEED_SRC, predict
from ejlb.control.servicer import COMPAT_TAG
from ejlb.control.tokens import Level
from ejlb.dataplane.tables import Counters


def session_info(service, token: str) -> dict:
    """The caller's token and what the pages may offer it."""
    with service.lock:
        caller = service.authenticate(token)
        instances = [i.lb_id for i in service.config.instances]
        may_reserve = any(tk.covers(caller.grants, tk.lineage(lb=i), Level.RESERVE) for i in instances)
        return {
            "tokenId": caller.id, "name": caller.name,
            "permissions": [{"resourceType": g.resource.name, "resourceId": g.resource_id,
                             "permission": g.level.name} for g in caller.grants],
            # creating and revoking tokens: offered to holders of UPDATE somewhere (a read-only token
            # could mint read-only children through the API, but the page keeps it to reading)
            "may": {"reserve": may_reserve, "manageTokens": any(g.level >= Level.UPDATE for g in caller.grants)},
        }


def may_update(service, token: str, lb_id: int) -> bool:
    with service.lock:
        res = service.reservations.get(lb_id)
        caller = service.token_by_hash.get(tk.token_hash(token))
        return (res is not None and caller is not None
                and tk.covers(caller.grants, tk.lineage(res.lb.lb_id, res.id), Level.UPDATE))


def lb_details(service, token: str, lb_id: int, history: list[dict]) -> dict | None:
    """Epochs, sync samples (with their residual against the current prediction), sync outcomes,
    member ids and the counter history of one reservation; None if it was freed meanwhile."""
    with service.lock:
        res = service.reservations.get(lb_id)
        if res is None:
            return None
        real = [s for s in res.samples if s.src_id != SEED_SRC]
        return {
            "lbId": str(res.id), "instance": res.lb.lb_id, "name": res.name,
            "mayUpdate": may_update(service, token, lb_id),
            "epochs": [{"seq": str(e.seq), "boundary": str(e.boundary)} for e in res.epochs],
            "syncSamples": [{"t": int(s.recv_time * 1000), "eventNumber": str(s.event_number), "rateHz": s.rate_hz,
                             "residual": str(s.event_number - (predict(res.samples, s.recv_time) or 0))}
                            for s in real],
            "predictionError": None if res.prediction_error is None else str(res.prediction_error),
            "syncOutcomes": dict(res.sync_outcomes),
            "members": {str(s.id): s.member_id for s in res.live_sessions},
            "history": history,
        }


def node_counters(backend) -> dict[str, Counters] | None:
    """Each LB node's own counters, for a data plane of LB nodes (the snp4 backend, whose
    `counters()` is their sum); None for a data plane in this process. A node that does not
    answer is left out (the backend's health says why)."""
    per_node = getattr(backend, "node_counters", None)
    return per_node() if per_node is not None else None


def _nodes(backend) -> list[dict] | None:
    health = getattr(backend, "health", None)
    if health is None:
        return None
    counters = node_counters(backend) or {}
    return [{"address": h.address, "up": h.up, "reloads": h.reloads, "failures": h.failures, "lastError": h.last_error,
             "lb": {str(k): dict(v) for k, v in sorted(counters[h.address].lb.items())} if h.address in counters else None}
            for h in health()]


def system_info(plane, started: float, token: str) -> dict:
    """Version, configuration summary and what the caller can see; the data plane's global
    counters only for a token that may read everything."""
    svc, cfg = plane.service, plane.config
    with svc.lock:
        caller = svc.authenticate(token)
        readable = svc.readable(caller)
        everything = tk.covers(caller.grants, tk.GLOBAL, Level.READ_ONLY)
    out = {
        "version": getattr(ejlb, "__version__", "0"), "compatTag": COMPAT_TAG,
        "grpc": {"host": cfg.host, "port": plane.port, "tls": cfg.tls},
        "backend": cfg.backend, "balancer": cfg.balancer, "controllerPeriod": cfg.controller_period,
        "uptimeSeconds": round(time.time() - started, 1),
        "instances": [{"lbId": i.lb_id, "ipv4": i.ipv4, "ipv6": i.ipv6, "dataPorts": [i.data_min_port, i.data_max_port]}
                      for i in cfg.instances],
        "reservationsVisible": len(readable),
        "workersVisible": sum(len(r.live_sessions) for r in readable),
    }
    if everything:
        counters = plane.backend.counters()
        out["dataplane"] = {"global": dict(counters.glob),
                            "lb": {str(k): dict(v) for k, v in sorted(counters.lb.items())},
                            "nodes": _nodes(plane.backend)}
    return out
