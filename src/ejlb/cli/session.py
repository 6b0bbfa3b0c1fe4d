"""What the verbs share: the global options, a control-plane client opened from them, argument
checks common to several verbs, and this host's own address as the data plane would see it."""
from __future__ import annotations

import ipaddress
import socket
from contextlib import contextmanager
from typing import Iterator

from ejlb.cli.main import EXIT_USAGE, CLIError, Options

FAMILY_NAMES = {None: "dual", 4: "ipv4", 6: "ipv6"}


def current_options() -> Options:
    """The global options of the running `ejlb` invocation."""
    import click

    return click.get_current_context().find_root().obj


@contextmanager
def manager(opts: Options, uri=None) -> Iterator:
    """An LBManager for `uri` (default: --uri / $EJFAT_URI), closed on exit. Control-plane errors
    pass through unchanged: `ejlb.cli.main.exit_code_for` maps them to exit codes."""
    from ejlb.control.client import LBManager

    mgr = LBManager(uri if uri is not None else opts.ejfat_uri(), ca_file=opts.ca, insecure=opts.insecure)
    try:
        yield mgr
    finally:
        mgr.close()


def build(factory, *args, **kwargs):
    """Construct a Sender/Receiver; its ValueErrors (bad parameters, named) are usage errors (exit 2)."""
    try:
        return factory(*args, **kwargs)
    except ValueError as e:
        raise CLIError(str(e), EXIT_USAGE) from None


def receiver_manager(opts: Options, uri):
    """The LBManager a registering Receiver should use: one honouring --ca/--insecure for TLS URIs
    (None lets the Receiver open its own plain one)."""
    if uri is None or not uri.tls:
        return None
    from ejlb.control.client import LBManager

    return LBManager(uri, ca_file=opts.ca, insecure=opts.insecure)


def require(value, what: str, hint: str):
    if value in (None, ""):
        raise CLIError(f"{what} is missing: {hint}", EXIT_USAGE)
    return value


def source_address_towards(ip: str) -> str:
    """The local address the kernel would use to reach `ip` (a connected UDP socket sends nothing)."""
    addr = ipaddress.ip_address(ip)
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((str(addr), 9))
        except OSError as e:
            raise CLIError(f"cannot find a route to {ip} to detect this host's address ({e}); "
                           "give the address explicitly") from None
        return s.getsockname()[0]


def own_sender_address(uri, family: int | None) -> str:
    """This host's address as the load balancer's sender allow-list sees it: the source address
    towards the reservation's data address (or towards the control plane when the URI has none)."""
    from ejlb.uri import URIError

    try:
        target = str(uri.data_address(family).ip)
    except URIError:
        try:
            target = str(ipaddress.ip_address(uri.host.strip("[]")))
        except ValueError:
            infos = socket.getaddrinfo(uri.host, uri.port, type=socket.SOCK_DGRAM)
            target = infos[0][4][0]
    return source_address_towards(target)


def lb_id_or_uri(opts: Options, lb_id: str | None) -> str:
    """An explicit LB_ID argument, else the URI's /lb/<id>; a usage error naming both otherwise."""
    if lb_id is not None:
        if not lb_id.isdigit():
            raise CLIError(f"LB_ID={lb_id!r}: must be a decimal id", EXIT_USAGE)
        return lb_id
    return require(opts.ejfat_uri().lb_id, "the load balancer id",
                   "pass LB_ID or use a URI with /lb/<id> (printed by `ejlb reserve`)")


def warn_unless_allowed_sender(opts: Options, uri) -> None:
    """Before sending through a reservation: say so on stderr when this host is not on its sender
    allow-list (the LB would drop every datagram silently). Best effort: no token, no LB id, or no
    right to read the status means no check."""
    import click

    if not (uri.token and uri.lb_id) or not uri.data:
        return
    try:
        from ejlb.control.client import LBManager
        from ejlb.control.errors import LBError

        me = own_sender_address(uri, opts.family)
        with LBManager(uri, ca_file=opts.ca, insecure=opts.insecure, timeout=2.0) as m:
            allowed = set(m.status(uri.lb_id).senderAddresses)
    except (LBError, CLIError, OSError, ValueError):  # the send itself reports real problems
        return
    if me not in allowed:
        click.echo(f"warning: this host ({me}) is not an allowed sender of load balancer {uri.lb_id}; "
                   f"its datagrams will be dropped (ejlb add-senders {me})", err=True)
