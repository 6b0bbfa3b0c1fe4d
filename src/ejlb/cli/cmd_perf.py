"""`ejlb perf send|recv` (e2sar_perf's job): generated events at a rate, live per-interval figures,
a summary, and optionally a PNG plot. Works with a control plane (register, sync) or without one
(`--no-register`, a URI whose data address is the receiver itself)."""
from __future__ import annotations

import time

import click

from ejlb.cli import render
from ejlb.cli.main import EXIT_USAGE, CLIError
from ejlb.cli.meter import RateMeter, save_plot
from ejlb.cli.params import IP, MTU, SIZE
from ejlb.cli.session import build, current_options, receiver_manager, warn_unless_allowed_sender
from ejlb.wire import MAX_EVENT_LEN, MAX_PORT_RANGE

SEND_KEYS = ("events", "bytes", "datagrams", "send_errors")
RECV_KEYS = ("events", "bytes", "packets", "lost", "bad_headers")


def _live(row, what: str) -> None:
    click.echo(f"[{row.t:7.1f}s] {what} {row.rate('events'):10.0f} ev/s  {row.gbps():7.3f} Gb/s"
               + "".join(f"  {k}={v}" for k, v in row.deltas.items() if k not in ("events", "bytes") and v),
               err=True)


def _summary(meter: RateMeter, title: str, extra: dict) -> None:
    summary = {
        "elapsed_s": round(meter.elapsed, 3),
        **{k: meter.total(k) for k in meter.keys},
        "events_per_s": round(meter.mean_rate("events"), 1),
        "gbps": round(meter.mean_rate("bytes") * 8 / 1e9, 4),
        "active_gbps": round(meter.active_rate("bytes") * 8 / 1e9, 4),
        "peak_gbps": round(meter.peak_rate("bytes") * 8 / 1e9, 4),
        **extra,
    }
    if current_options().json:
        render.print_json(summary)
    else:
        render.console().print(render.kv_table(title, summary.items()))


@click.group()
def perf():
    """Throughput tools: `perf send` generates events, `perf recv` receives and measures them."""


@perf.command("send")
@click.option("-r", "--rate", type=click.FloatRange(0, min_open=True), default=None,
              help="Pace to this many Gb/s (UDP payload incl. headers); default unpaced.")
@click.option("-l", "--length", type=SIZE, default="1M", show_default=True, help="Event size in bytes.")
@click.option("-n", "--count", type=click.IntRange(1), default=None,
              help="Events to send (default 1000 unless --duration).")
@click.option("-t", "--duration", type=click.FloatRange(0, min_open=True), default=None, help="Seconds to send for.")
@click.option("--mtu", type=MTU, default="1500", show_default=True, help="Datagram size limit, or 'auto'.")
@click.option("--sockets", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Send sockets (source ports).")
@click.option("--data-id", type=click.IntRange(0, 0xFFFF), default=0, show_default=True)
@click.option("--lb-version", type=click.Choice(["2", "3"]), default="2", show_default=True)
@click.option("--gso", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True)
@click.option("--sync/--no-sync", default=True, show_default=True, help="Send Sync packets to the URI's sync address.")
@click.option("-i", "--interval", type=click.FloatRange(0.1), default=1.0, show_default=True,
              help="Seconds per live line.")
@click.option("--plot", type=click.Path(dir_okay=False, writable=True), help="Write a Gb/s plot to this PNG.")
def perf_send(rate, length, count, duration, mtu, sockets, data_id, lb_version, gso, sync, interval, plot):
    """Send generated events to the URI's data address (an LB, or a worker directly)."""
    from ejlb.demo import pattern
    from ejlb.shim.sender import Sender

    opts = current_options()
    if length > MAX_EVENT_LEN:
        raise CLIError(f"--length={length}: events are at most {MAX_EVENT_LEN} bytes", EXIT_USAGE)
    if count is None and duration is None:
        count = 1000
    event = pattern(length)
    meter = RateMeter(SEND_KEYS)
    sent = 0
    uri = opts.ejfat_uri()
    warn_unless_allowed_sender(opts, uri)
    with build(Sender, uri, data_id=data_id, mtu=mtu, lb_version=int(lb_version), sockets=sockets,
               rate_gbps=rate, gso=gso, sync=sync, family=opts.family) as sender:
        def snapshot():
            st = sender.stats()
            return {"events": st.events, "bytes": st.bytes, "datagrams": st.datagrams, "send_errors": st.send_errors}

        start = time.monotonic()
        meter.feed(start, snapshot())
        next_report = start + interval
        deadline = start + duration if duration else float("inf")
        try:
            while (count is None or sent < count) and time.monotonic() < deadline:
                sender.send(event)
                sent += 1
                now = time.monotonic()
                if now >= next_report:
                    _live(meter.feed(now, snapshot()), "sent")
                    next_report = now + interval
        except KeyboardInterrupt:
            click.echo("interrupted: summary so far", err=True)
        meter.feed(time.monotonic(), snapshot())
        gso_used = sender.stats().gso
    if plot:
        save_plot(meter, plot, f"ejlb perf send: {length} B events")
    _summary(meter, "perf send", {"event_bytes": length, "gso": gso_used})


@perf.command("recv")
@click.option("--ip", "ip", type=IP, default=None,
              help="Address to listen on (and register); default 127.0.0.1, or ::1 with -6.")
@click.option("-p", "--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Base UDP port (0: a free block in the EJFAT data-port range).")
@click.option("--port-range", type=click.IntRange(0, MAX_PORT_RANGE), default=None,
              help="Entropy bits: listen on PORT .. PORT + 2^bits - 1 (default: one port per thread).")
@click.option("--threads", type=click.IntRange(1, 64), default=1, show_default=True, help="Receive threads.")
@click.option("--register/--no-register", default=None,
              help="Register with the control plane (default: when the URI names a load balancer).")
@click.option("--name", default=None, help="Worker name when registering (default: perf-<host>-<port>).")
@click.option("--with-lb-header", is_flag=True, help="Datagrams carry the LB header (straight from a sender).")
@click.option("-n", "--count", type=click.IntRange(1), default=None, help="Stop after this many events.")
@click.option("-t", "--duration", type=click.FloatRange(0, min_open=True), default=None,
              help="Stop after this many seconds.")
@click.option("-i", "--interval", type=click.FloatRange(0.1), default=1.0, show_default=True,
              help="Seconds per live line.")
@click.option("--plot", type=click.Path(dir_okay=False, writable=True), help="Write a Gb/s plot to this PNG.")
@click.option("--check", is_flag=True,
              help="Compare every event with what `perf send` generates (exit 1 on a mismatch).")
def perf_recv(ip, port, port_range, threads, register, name, with_lb_header, count, duration, interval, plot,
              check):
    """Receive events, print per-interval rates and a summary (Ctrl-C ends it)."""
    import os
    import socket

    import numpy as np

    from ejlb.demo import pattern
    from ejlb.shim.receiver import Receiver

    opts = current_options()
    ip = ip or ("::1" if opts.family == 6 else "127.0.0.1")
    uri = opts.ejfat_uri() if opts.uri else None  # no control plane: no URI needed
    if register is None:
        register = bool(uri is not None and uri.lb_id)
    if register and (uri is None or not uri.lb_id):
        raise CLIError("--register needs a URI naming a load balancer (…/lb/<id>)", EXIT_USAGE)
    meter = RateMeter(RECV_KEYS)
    got = corrupt = 0
    expected: dict[int, np.ndarray] = {}  # reference payload by event length (a few lengths at most)
    with build(Receiver, uri, ip, port, threads=threads, port_range=port_range, with_lb_header=with_lb_header,
               register=register, manager=receiver_manager(opts, uri),
               name=name or f"perf-{socket.gethostname()}-{port or os.getpid()}") as rx:
        ports = rx.ports
        click.echo(f"receiving on {ip} ports {ports.start}-{ports.stop - 1}"
                   f"{' (registered)' if register else ''}", err=True)
        def snapshot():
            st = rx.stats()
            return {"events": st.events_reassembled, "bytes": st.bytes_recv, "packets": st.packets_recv,
                    "lost": st.lost, "bad_headers": st.bad_headers}

        start = time.monotonic()
        meter.feed(start, snapshot())
        next_report = start + interval
        deadline = start + duration if duration else float("inf")
        try:
            while (count is None or got < count) and time.monotonic() < deadline:
                try:
                    ev = rx.recv(timeout=min(interval, 0.2))
                except TimeoutError:
                    ev = None
                if ev is not None:
                    got += 1
                    if check:
                        n = len(ev)
                        if n not in expected:
                            if len(expected) >= 8:
                                expected.clear()
                            expected[n] = pattern(n)
                        corrupt += not np.array_equal(np.frombuffer(ev.payload, np.uint8), expected[n])
                now = time.monotonic()
                if now >= next_report:
                    _live(meter.feed(now, snapshot()), "recv")
                    next_report = now + interval
        except KeyboardInterrupt:
            click.echo("interrupted: summary so far", err=True)
        meter.feed(time.monotonic(), snapshot())
    if plot:
        save_plot(meter, plot, f"ejlb perf recv: {ip}:{port}")
    _summary(meter, "perf recv", {"events_delivered": got, **({"corrupt": corrupt} if check else {})})
    if corrupt:
        raise CLIError(f"{corrupt} of {got} events differ from what `perf send` generates")


COMMANDS = [perf]
