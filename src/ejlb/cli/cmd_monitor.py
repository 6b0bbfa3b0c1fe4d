"""`ejlb monitor`: a live, refreshing status view of one reservation (lbmonitor's job)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import click

from ejlb.cli import render
from ejlb.cli.session import current_options, lb_id_or_uri, manager


@click.command()
@click.argument("lb_id", required=False)
@click.option("-i", "--interval", type=click.FloatRange(0.1), default=1.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("-n", "--count", type=click.IntRange(1), default=None,
              help="Stop after this many refreshes (default: until Ctrl-C).")
def monitor(lb_id, interval, count):
    """Refresh the status of a reservation every INTERVAL seconds: workers, fill, slots, counters,
    and event rates between refreshes. An unreachable control plane is shown and retried; a freed
    reservation ends it (exit 4), Ctrl-C ends it (exit 0). With --json: one JSON object per refresh
    (JSON lines)."""
    opts = current_options()
    lb = lb_id_or_uri(opts, lb_id)
    with manager(opts) as m:
        snapshots = _poll(m, lb, interval, count)
        try:
            if opts.json:
                for status in snapshots:
                    out = {"error": status.message} if isinstance(status, Outage) else render.jsonable(status)
                    click.echo(json.dumps(out))
            else:
                _live(lb, snapshots, interval)
        except KeyboardInterrupt:  # the normal way to leave a monitor: not an error
            pass


@dataclass(frozen=True)
class Outage:
    """A refresh that could not reach the control plane (shown, then retried)."""

    message: str


def _poll(m, lb: str, interval: float, count: int | None):
    from ejlb.control.errors import InvalidArgument, LBError, NotFound, PermissionDenied, Unauthenticated

    final = (NotFound, PermissionDenied, Unauthenticated, InvalidArgument)  # answers, not outages

    n = 0
    next_at = time.monotonic()
    while count is None or n < count:
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        next_at = max(next_at + interval, time.monotonic())
        try:
            yield m.status(lb)
        except LBError as e:
            if isinstance(e, final):
                raise
            yield Outage(f"control plane unreachable ({e}); retrying every {interval:g} s")
        n += 1


def rates(previous, current) -> dict[str, tuple[float, float]]:
    """Per-worker (events/s, Gb/s) between two status replies, keyed by session id (pure)."""
    def at(status):
        return status.timestamp.seconds + status.timestamp.nanos / 1e9

    dt = at(current) - at(previous)
    before = {w.sessionId: w for w in previous.workers}
    out = {}
    for w in current.workers:
        old = before.get(w.sessionId)
        if old is None or dt <= 0:
            continue
        events = max(w.totalEventsReassembled - old.totalEventsReassembled, 0)
        nbytes = max(w.totalBytesRecv - old.totalBytesRecv, 0)
        out[w.sessionId] = (events / dt, nbytes * 8 / dt / 1e9)
    return out


def _view(lb: str, status, previous):
    from rich.console import Group

    if isinstance(status, Outage):  # keep the last good view on screen, with the outage under it
        last = render.status_renderables(lb, previous) if previous is not None else []
        return Group(*last, f"[bold red]{status.message}[/bold red]")

    parts = render.status_renderables(lb, status)
    if previous is not None and status.workers:
        r = rates(previous, status)
        rows = [(w.name, f"{r[w.sessionId][0]:.0f}", f"{r[w.sessionId][1]:.3f}")
                for w in status.workers if w.sessionId in r]
        parts.append(render.grid("rates since last refresh", ("worker", "events/s", "Gb/s"), rows, right=(1, 2)))
    stamp = datetime.now(timezone.utc).strftime("%H:%M:%S")
    parts.append(f"[dim]{stamp} UTC — Ctrl-C to stop[/dim]")
    return Group(*parts)


def _live(lb: str, snapshots, interval: float) -> None:
    from rich.live import Live

    console = render.console()
    previous = None
    if not console.is_terminal:  # a log, not a screen: one full view per refresh
        for status in snapshots:
            console.print(_view(lb, status, previous))
            previous = status if not isinstance(status, Outage) else previous
        return
    with Live(console=console, refresh_per_second=max(1, int(1 / interval)), transient=False) as live:
        for status in snapshots:
            live.update(_view(lb, status, previous))
            previous = status if not isinstance(status, Outage) else previous


COMMANDS = [monitor]
