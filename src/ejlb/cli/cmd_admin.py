"""Operator verbs against a control plane (lbadm's job): reservations, workers, senders, version,
timeseries. Each verb is a thin shell over one or two LBManager calls plus rendering."""
from __future__ import annotations

import csv
import sys
from datetime import datetime, timedelta, timezone

import click

from ejlb.cli import render
from ejlb.cli.main import EXIT_USAGE, CLIError
from ejlb.cli.params import DURATION, IP, UNTIL, parse_duration, parse_until
from ejlb.cli.session import (FAMILY_NAMES, current_options, lb_id_or_uri, manager, own_sender_address,
                              require)
from ejlb.shim.state import DEFAULT_MAX_FACTOR, DEFAULT_MIN_FACTOR
from ejlb.wire import MAX_PORT_RANGE


def _until(duration: timedelta | None, until: datetime | None) -> datetime | timedelta | None:
    """--duration or --until (never both); LBManager takes either."""
    if duration is not None and until is not None:
        raise CLIError("--duration and --until are exclusive: give one", EXIT_USAGE)
    if until is not None and until <= datetime.now(timezone.utc):
        raise CLIError(f"--until={until.isoformat()}: is in the past", EXIT_USAGE)
    return until if until is not None else duration


def _print(data, renderables) -> None:
    opts = current_options()
    if opts.json:
        render.print_json(data)
        return
    out = render.console()
    for r in renderables:
        if isinstance(r, str):  # plain lines (URIs) must survive copy-paste: no wrapping, no markup
            click.echo(r)
        else:
            out.print(r)


# -- reservations ---------------------------------------------------------------------------------
@click.command()
@click.argument("name")
@click.option("-d", "--duration", type=DURATION,
              help="How long to keep it: 90s, 30m, 2h, 1d, or hh:mm[:ss]; a bare number is hours.")
@click.option("--until", type=UNTIL, help="Expiry as an ISO 8601 time (UTC if no zone).")
@click.option("-s", "-a", "--sender", "senders", multiple=True, type=IP, help="Allowed sender IP (repeatable).")
@click.option("--auto-sender", is_flag=True, help="Allow this host's own address as a sender.")
@click.option("--ip-family", type=click.Choice(["dual", "ipv4", "ipv6"]), default=None,
              help="Data-plane address family (default: from -4/-6, else dual).")
@click.option("--strategy", type=click.Choice(["", "dynamic", "static", "explicit"]), default="",
              help="Calendar layout strategy (default: the control plane's).")
@click.option("-e", "--export", "export", is_flag=True, help="Print `export EJFAT_URI=...` for the shell.")
@click.option("--encode-brackets", is_flag=True,
              help="Print IPv6 brackets in the URI's query as %5B/%5D (for Boost.URL-based clients such as E2SAR).")
def reserve(name, duration, until, senders, auto_sender, ip_family, strategy, export, encode_brackets):
    """Reserve a load balancer NAME; prints its instance URI (token included)."""
    opts = current_options()
    when = _until(duration, until)
    uri = opts.ejfat_uri()
    senders = list(senders)
    if auto_sender:
        senders.append(own_sender_address(uri, opts.family))
    with manager(opts, uri) as m:
        res = m.reserve(name, until=when, senders=senders, ip_family=ip_family or FAMILY_NAMES[opts.family],
                        strategy=strategy)
    if not senders:
        click.echo("note: no sender is allowed yet, so the LB drops all data until `ejlb add-senders` "
                   "(or reserve with -a ADDR / --auto-sender)", err=True)
    text = res.uri.format(encode_brackets=encode_brackets)
    if export:
        click.echo(f"export EJFAT_URI='{text}'")
        return
    data = {"lbId": res.lb_id, "token": res.token, "ejfatUri": text, "reservation": res.reply}
    _print(data, [render.kv_table(f"reserved {name!r}", render.reservation_rows(res.reply)),
                  f"EJFAT_URI={text}"])


@click.command()
@click.argument("lb_id", required=False)
@click.option("-d", "--duration", type=DURATION, help="New expiry, from now.")
@click.option("--until", type=UNTIL, help="New expiry as an ISO 8601 time.")
def extend(lb_id, duration, until):
    """Move the expiry of a reservation."""
    opts = current_options()
    when = _until(duration, until)
    require(when, "the new expiry", "give --duration or --until")
    if isinstance(when, timedelta):
        when = datetime.now(timezone.utc) + when
    lb = lb_id_or_uri(opts, lb_id)
    with manager(opts) as m:
        m.extend(when, lb_id=lb)
    _print({"lbId": lb, "until": when}, [f"reservation extended until {when.isoformat(timespec='seconds')}"])


@click.command()
@click.argument("lb_id", required=False)
def free(lb_id):
    """Free a reservation (default: the one in the URI)."""
    opts = current_options()
    lb = lb_id_or_uri(opts, lb_id)
    with manager(opts) as m:
        m.free(lb)
    _print({"lbId": lb, "freed": True}, [f"freed load balancer {lb}"])


@click.command()
@click.argument("lb_id", required=False)
def status(lb_id):
    """Reservation state and its workers: fill, control signal, slots, last update, counters."""
    opts = current_options()
    lb = lb_id_or_uri(opts, lb_id)
    with manager(opts) as m:
        reply = m.status(lb)
    _print(reply, render.status_renderables(lb, reply))


@click.command()
def overview():
    """Every load balancer the token may read, with its workers."""
    opts = current_options()
    with manager(opts) as m:
        reply = m.overview()
    rows = []
    for lb in reply.loadBalancers:
        r, s = lb.reservation, lb.status
        expires = render.ts_to_datetime(s.expiresAt)
        rows.append((lb.name, r.lbId, " ".join(a for a in (r.dataIpv4Address, r.dataIpv6Address) if a),
                     len(s.workers), sum(1 for w in s.workers if w.slotsAssigned), len(s.senderAddresses),
                     s.currentEpoch, expires.isoformat(timespec="seconds") if expires else "never"))
    _print(reply, [render.grid("load balancers", ("name", "lb id", "data", "workers", "with slots", "senders",
                                                  "epoch", "expires"), rows, right=(3, 4, 5, 6))])


# -- workers --------------------------------------------------------------------------------------
@click.command()
@click.option("--name", required=True, help="Worker name shown in status.")
@click.option("--ip", "ip", required=True, type=IP, help="Address the LB sends this worker's data to.")
@click.option("--port", required=True, type=click.IntRange(1024, 65535), help="Base UDP port.")
@click.option("--port-range", type=click.IntRange(0, MAX_PORT_RANGE), default=0, show_default=True,
              help="Entropy bits: listen on PORT .. PORT + 2^bits - 1.")
@click.option("--weight", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True)
@click.option("--min-factor", type=click.FloatRange(0), default=DEFAULT_MIN_FACTOR, show_default=True,
              help="Floor, in even shares (0 = none: the balancer follows measured capacity).")
@click.option("--max-factor", type=click.FloatRange(0), default=DEFAULT_MAX_FACTOR, show_default=True,
              help="Cap, in even shares (0 = no cap).")
@click.option("--keep-lb-header", is_flag=True, help="Deliver datagrams with the LB header kept.")
@click.option("-e", "--export", "export", is_flag=True, help="Print `export EJFAT_URI=...` (session URI).")
@click.option("--encode-brackets", is_flag=True,
              help="Print IPv6 brackets in the URI's query as %5B/%5D (for Boost.URL-based clients such as E2SAR).")
def register(name, ip, port, port_range, weight, min_factor, max_factor, keep_lb_header, export, encode_brackets):
    """Register a worker; prints the session URI (session token + sessionid) for send-state/deregister."""
    opts = current_options()
    uri = opts.ejfat_uri()
    require(uri.lb_id, "the load balancer id", "use the URI printed by `ejlb reserve`")
    with manager(opts, uri) as m:
        reg = m.register(name, ip, port, weight=weight, port_range=port_range, min_factor=min_factor,
                         max_factor=max_factor, keep_lb_header=keep_lb_header)
    session_uri = uri.with_(token=reg.token, session_id=str(reg.session_id)).format(encode_brackets=encode_brackets)
    if export:
        click.echo(f"export EJFAT_URI='{session_uri}'")
        return
    _print({"token": reg.token, "sessionId": str(reg.session_id), "ejfatUri": session_uri},
           [render.kv_table(f"registered {name!r}", [("session id", reg.session_id)]), f"EJFAT_URI={session_uri}"])


def _session_uri(opts):
    uri = opts.ejfat_uri()
    require(uri.session_id, "the session id", "use the session URI printed by `ejlb register` (…?sessionid=N)")
    require(uri.lb_id, "the load balancer id", "use the session URI printed by `ejlb register`")
    return uri


@click.command()
def deregister():
    """Remove the worker session named by the URI's sessionid."""
    opts = current_options()
    uri = _session_uri(opts)
    with manager(opts, uri) as m:
        m.deregister()
    _print({"sessionId": uri.session_id, "deregistered": True}, [f"deregistered session {uri.session_id}"])


def _fraction(text: str) -> float:
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a number or a percentage") from None
    if not 0.0 <= value <= 1.0:
        raise click.BadParameter(f"{text!r} is outside 0..1 (or 0%..100%)")
    return value


@click.command("send-state")
@click.option("--fill", required=True, callback=lambda c, p, v: _fraction(v), help="Queue fill, 0..1 or 0%..100%.")
@click.option("--control-signal", type=float, default=0.0, show_default=True, help="PID output added to the weight.")
@click.option("--ready/--not-ready", default=True, show_default=True)
def send_state(fill, control_signal, ready):
    """Report a worker's state once (workers normally do this themselves every ~100 ms)."""
    opts = current_options()
    uri = _session_uri(opts)
    with manager(opts, uri) as m:
        m.send_state(fill_percent=fill, control_signal=control_signal, is_ready=ready)
    _print({"sessionId": uri.session_id, "fillPercent": fill, "controlSignal": control_signal, "isReady": ready},
           [f"state sent for session {uri.session_id}: fill {fill:.1%}, control signal {control_signal:+g}"
            f"{'' if ready else ', not ready'}"])


# -- senders --------------------------------------------------------------------------------------
def _senders_command(name: str, add: bool):
    @click.command(name)
    @click.argument("addresses", nargs=-1, type=IP)
    @click.option("--lb-id", "lb_id", default=None, help="Load balancer id (default: the URI's).")
    def command(addresses, lb_id):
        opts = current_options()
        uri = opts.ejfat_uri()
        lb = lb_id_or_uri(opts, lb_id)
        addresses = list(addresses) or [own_sender_address(uri, opts.family)]
        with manager(opts, uri) as m:
            (m.add_senders if add else m.remove_senders)(addresses, lb_id=lb)
        verb = "allowed" if add else "removed"
        _print({"lbId": lb, verb: addresses}, [f"{verb} sender{'s' if len(addresses) > 1 else ''} "
                                              f"{', '.join(addresses)} on load balancer {lb}"])

    command.help = (f"{'Allow' if add else 'Remove'} sender addresses (default: this host's own address "
                    f"towards the data plane).")
    return command


add_senders = _senders_command("add-senders", add=True)
remove_senders = _senders_command("remove-senders", add=False)


# -- information ----------------------------------------------------------------------------------
@click.command()
def version():
    """Versions of this client and of the control plane."""
    from ejlb import __version__

    opts = current_options()
    with manager(opts) as m:
        reply = m.version()
    _print({"client": __version__, "server": reply},
           [render.kv_table("versions", [("client", __version__), ("server commit", reply.commit),
                                         ("server build", reply.build), ("compat tag", reply.compatTag)])])


def _since(text: str | None) -> datetime | None:
    """'5m' (that long ago) or an ISO time."""
    if text is None:
        return None
    try:
        return datetime.now(timezone.utc) - parse_duration(text)
    except ValueError:
        pass
    try:
        return parse_until(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither a duration (5m) nor an ISO 8601 time",
                                 param_hint="--since") from None


def timeseries_rows(reply) -> list[tuple[str, str, int, float]]:
    """Flatten a TimeseriesReply into (name, unit, timestamp_ms, value) rows."""
    rows = []
    for series in reply.timeseries:
        kind = series.WhichOneof("timeseries")
        if kind is None:
            continue
        for sample in getattr(series, kind).data:
            rows.append((series.name, series.unit, int(sample.timestamp), sample.value))
    return rows


@click.command()
@click.argument("selectors", nargs=-1, required=True)
@click.option("--since", help="Start: a duration ago (5m) or an ISO 8601 time (default: the server's).")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
def timeseries(selectors, since, fmt):
    """Metric samples as CSV (name,unit,timestamp_ms,value) or JSON. SELECTORS as the control plane
    names them, e.g. /lb/1/session/*/fillPercent."""
    opts = current_options()
    with manager(opts) as m:
        reply = m.timeseries(list(selectors), since=_since(since))
    if opts.json or fmt == "json":
        render.print_json(reply)
        return
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(("name", "unit", "timestamp_ms", "value"))
    out.writerows(timeseries_rows(reply))


COMMANDS = [reserve, extend, free, status, overview, register, deregister, send_state, add_senders,
            remove_senders, version, timeseries]
