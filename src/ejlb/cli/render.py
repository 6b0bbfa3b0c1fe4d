"""Output for operators (rich tables) and scripts (`--json`): one function per reply shape.

JSON of protobuf replies is the standard proto3 JSON mapping (EJFAT's lowerCamelCase field names,
int64 as strings), so scripts written against other EJFAT tools read it unchanged.
"""
from __future__ import annotations

import dataclasses
import enum
import json
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import click


def console(stderr: bool = False):
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not out.is_terminal:  # logs and pipes: don't squeeze tables into 80 columns
        out.width = 160
    return out


def jsonable(obj: Any) -> Any:
    """Protobuf messages, dataclasses, datetimes, enums, URIs -> plain JSON values."""
    if hasattr(obj, "DESCRIPTOR") and hasattr(obj, "ListFields"):
        from google.protobuf.json_format import MessageToDict

        return MessageToDict(obj, always_print_fields_with_no_presence=True)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, enum.Enum):
        return obj.name
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def print_json(data: Any) -> None:
    click.echo(json.dumps(jsonable(data), indent=2, sort_keys=False))


def ts_to_datetime(ts) -> datetime | None:
    """A protobuf Timestamp (unset -> None) as an aware UTC datetime."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=timezone.utc)


def age(ts, now: datetime | None = None) -> str:
    when = ts_to_datetime(ts)
    if when is None:
        return "never"
    seconds = ((now or datetime.now(timezone.utc)) - when).total_seconds()
    return f"{seconds:.1f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def kv_table(title: str, rows: Iterable[tuple[str, Any]]):
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, "" if value is None else str(value))
    return table


def grid(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, right: Iterable[int] = ()):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    right = set(right)
    for i, col in enumerate(columns):
        table.add_column(col, justify="right" if i in right else "left")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    return table


def reservation_rows(reply) -> list[tuple[str, Any]]:
    """A ReserveLoadBalancerReply (reserve / get) as key-value rows."""
    rows = [("lb id", reply.lbId), ("fpga lb id", reply.fpgaLbId)]
    if reply.dataIpv4Address or reply.dataIpv6Address:
        lo, hi = reply.dataMinPort, reply.dataMaxPort
        rows += [("data", " ".join(a for a in (reply.dataIpv4Address, reply.dataIpv6Address) if a)),
                 ("data ports", f"{lo}-{hi}" if hi != lo else lo)]
    if reply.syncIpv4Address or reply.syncIpv6Address:
        rows += [("sync", " ".join(a for a in (reply.syncIpv4Address, reply.syncIpv6Address) if a)),
                 ("sync port", reply.syncUdpPort)]
    if reply.strategy:
        rows.append(("strategy", reply.strategy))
    return rows


WORKER_COLUMNS = ("worker", "session", "address", "ready", "fill", "ctrl signal", "slots", "last update",
                  "events", "reassembled", "errors", "bytes")


def worker_rows(status, now: datetime | None = None) -> list[tuple]:
    now = now or datetime.now(timezone.utc)
    rows = []
    for w in status.workers:
        width = 1 << int(w.portRange)
        ports = f"{w.udpPort}" if width == 1 else f"{w.udpPort}-{w.udpPort + width - 1}"
        host = f"[{w.ipAddress}]" if ":" in w.ipAddress else w.ipAddress
        rows.append((w.name, w.sessionId, f"{host}:{ports}", _ready(w, now), f"{w.fillPercent:.1%}",
                     f"{w.controlSignal:+.3f}", w.slotsAssigned, age(w.lastUpdated, now),
                     w.totalEventsRecv, w.totalEventsReassembled, w.totalEventsReassemblyErr,
                     human_bytes(w.totalBytesRecv)))
    return rows


def _ready(worker, now: datetime) -> str:
    from ejlb.control.liveness import READY_S  # the control plane's own rule for "not ready"

    last = ts_to_datetime(worker.lastUpdated)
    return "yes" if last and (now - last).total_seconds() <= READY_S else "stale"


def status_renderables(lb_id: str, status, now: datetime | None = None) -> list:
    # Ages are measured against the control plane's own clock (the reply's timestamp), so a
    # skewed client clock cannot mark workers stale.
    now = now or ts_to_datetime(status.timestamp) or datetime.now(timezone.utc)
    expires = ts_to_datetime(status.expiresAt)
    head = kv_table(f"load balancer {lb_id}", [
        ("epoch", status.currentEpoch),
        ("predicted event", status.currentPredictedEventNumber),
        ("senders", ", ".join(status.senderAddresses) or "none: the LB drops all data (ejlb add-senders)"),
        ("expires", expires.isoformat(timespec="seconds") if expires else "never"),
        ("workers", len(status.workers)),
    ] + [(f"health: {h.severity or 'issue'}", f"{h.type}: {h.message}") for h in status.healthIssues]
      + [(f"health: {w.name}", f"{h.type}: {h.message}") for w in status.workers for h in w.healthIssues
         if h.type != "worker_not_ready"])  # not-ready shows in the workers' "ready" column
    out = [head]
    if status.workers:
        out.append(grid(None, WORKER_COLUMNS, worker_rows(status, now), right=(4, 5, 6, 8, 9, 10, 11)))
    return out

