"""`ejlb send` / `ejlb recv`: move real data (files, or generated events) through a load balancer."""
from __future__ import annotations

import json
import mmap
import os
import socket
from pathlib import Path

import click

from ejlb.cli import render
from ejlb.cli.main import EXIT_USAGE, CLIError
from ejlb.cli.params import IP, MTU, SIZE
from ejlb.cli.session import build, current_options, receiver_manager, warn_unless_allowed_sender
from ejlb.wire import MAX_EVENT_LEN, MAX_PORT_RANGE


def _file_event(path: Path):
    """A file's bytes without reading them into Python memory (mmap; empty files have no map)."""
    size = path.stat().st_size
    if size > MAX_EVENT_LEN:
        raise CLIError(f"{path}: {size} bytes is more than one event may hold ({MAX_EVENT_LEN})", EXIT_USAGE)
    if size == 0:
        return b""
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


@click.command()
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-g", "--generate", type=click.IntRange(1), default=None,
              help="Send this many generated events instead of files.")
@click.option("-s", "--size", type=SIZE, default="64k", show_default=True, help="Size of generated events.")
@click.option("--data-id", type=click.IntRange(0, 0xFFFF), default=0, show_default=True)
@click.option("--first-event", type=click.IntRange(0), default=None,
              help="Event number of the first event (default: the sender's).")
@click.option("-r", "--rate", type=click.FloatRange(0, min_open=True), default=None, help="Pace to this many Gb/s.")
@click.option("--mtu", type=MTU, default="1500", show_default=True, help="Datagram size limit, or 'auto'.")
@click.option("--sync/--no-sync", default=True, show_default=True, help="Send Sync packets to the URI's sync address.")
def send(files, generate, size, data_id, first_event, rate, mtu, sync):
    """Send each FILE as one event (or --generate N events) to the URI's data address."""
    from ejlb.demo import pattern
    from ejlb.shim.sender import Sender

    opts = current_options()
    if bool(files) == bool(generate):
        raise CLIError("give FILES or --generate N (one of them)", EXIT_USAGE)
    if generate and size > MAX_EVENT_LEN:
        raise CLIError(f"--size={size}: events are at most {MAX_EVENT_LEN} bytes", EXIT_USAGE)
    sent = []
    uri = opts.ejfat_uri()
    warn_unless_allowed_sender(opts, uri)
    with build(Sender, uri, data_id=data_id, mtu=mtu, rate_gbps=rate, sync=sync,
               family=opts.family) as sender:
        items = ((str(p), _file_event(p)) for p in files) if files else (
            (f"generated-{i}", pattern(size, seed=i)) for i in range(generate))
        for i, (label, event) in enumerate(items):
            number = None if first_event is None else first_event + i
            try:
                sent.append({"source": label, "eventNumber": sender.send(event, event_number=number),
                             "bytes": len(event)})
            finally:
                if isinstance(event, mmap.mmap):
                    event.close()
        stats = sender.stats()
    if stats.send_errors:
        raise CLIError(f"the kernel refused {stats.send_errors} datagrams (errno {stats.last_errno})")
    if opts.json:
        render.print_json({"events": sent, "datagrams": stats.datagrams, "bytes": stats.bytes})
    else:
        click.echo(f"sent {len(sent)} events, {stats.datagrams} datagrams, {render.human_bytes(stats.bytes)}")


@click.command()
@click.option("--ip", "ip", type=IP, default=None,
              help="Address to listen on (and register); default 127.0.0.1, or ::1 with -6.")
@click.option("-p", "--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Base UDP port (0: a free block in the EJFAT data-port range).")
@click.option("--port-range", type=click.IntRange(0, MAX_PORT_RANGE), default=None,
              help="Entropy bits: listen on PORT .. PORT + 2^bits - 1.")
@click.option("--threads", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--register/--no-register", default=None,
              help="Register with the control plane (default: when the URI has a token).")
@click.option("--name", default=None, help="Worker name when registering.")
@click.option("--with-lb-header", is_flag=True, help="Datagrams carry the LB header (straight from a sender).")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write each event to OUT/event-<number>-<data_id>.bin.")
@click.option("-n", "--count", type=click.IntRange(1), default=None, help="Stop after this many events.")
@click.option("-t", "--timeout", type=click.FloatRange(0, min_open=True), default=None,
              help="Stop when no event came for this many seconds.")
def recv(ip, port, port_range, threads, register, name, with_lb_header, out, count, timeout):
    """Receive events; print one line each (JSON lines with --json) or write them to --out."""
    from ejlb.shim.receiver import Receiver

    opts = current_options()
    ip = ip or ("::1" if opts.family == 6 else "127.0.0.1")
    uri = opts.ejfat_uri() if opts.uri else None
    if register and uri is None:
        raise CLIError("--register needs a URI (--uri or EJFAT_URI) with a token", EXIT_USAGE)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    got = 0
    with build(Receiver, uri, ip, port, threads=threads, port_range=port_range, with_lb_header=with_lb_header,
               register=register, manager=receiver_manager(opts, uri),
               name=name or f"recv-{socket.gethostname()}-{os.getpid()}") as rx:
        click.echo(f"receiving on {ip} ports {rx.ports.start}-{rx.ports.stop - 1}", err=True)
        try:
            while count is None or got < count:
                try:
                    ev = rx.recv(timeout=timeout)
                except TimeoutError:
                    click.echo(f"no event for {timeout} s: stopping", err=True)
                    break
                got += 1
                line = {"eventNumber": ev.event_number, "dataId": ev.data_id, "bytes": len(ev)}
                if out is not None:
                    path = out / f"event-{ev.event_number}-{ev.data_id}.bin"
                    path.write_bytes(ev.payload)
                    line["file"] = str(path)
                click.echo(json.dumps(line) if opts.json else
                           f"event {ev.event_number} data_id {ev.data_id}: {len(ev)} bytes"
                           + (f" -> {line['file']}" if out is not None else ""))
        except KeyboardInterrupt:
            pass
        stats = rx.stats()
    click.echo(f"{got} events; lost {stats.lost}, bad headers {stats.bad_headers}", err=True)


COMMANDS = [send, recv]
