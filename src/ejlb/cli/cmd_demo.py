"""`ejlb demo`: the whole system on loopback with a progress bar and a final table (ejlb.demo)."""
from __future__ import annotations

import click

from ejlb.cli import render
from ejlb.cli.session import current_options
from ejlb.cli.main import EXIT_FAILURE, EXIT_USAGE, CLIError
from ejlb.cli.params import SIZE
from ejlb.wire import MAX_MTU, header_overhead

_STAGES = {"setup": "starting control plane, LB and workers", "send": "sending events", "drain": "receiving"}


@click.command()
@click.option("-n", "--events", type=click.IntRange(1, 10**9), default=2000, show_default=True, help="Events to send.")
@click.option("-s", "--size", type=SIZE, default="256k", show_default=True, help="Bytes per event (64k, 1Mi, ...).")
@click.option("-w", "--workers", type=click.IntRange(1, 64), default=3, show_default=True, help="Receivers to start.")
@click.option("-r", "--rate", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Sender pacing in Gb/s (0: unpaced).")
@click.option("--mtu", type=click.IntRange(header_overhead() + 1, MAX_MTU), default=MAX_MTU, show_default=True,
              help="Datagram size limit (loopback takes jumbo datagrams).")
def demo(events, size, workers, rate, mtu):
    """Run everything on loopback: control plane, software LB, workers, a sender; print who got what."""
    from ejlb.demo import DemoConfig, DemoError, run_demo

    opts = current_options()
    try:
        config = DemoConfig(events=events, size=size, workers=workers, rate_gbps=rate or None, mtu=mtu,
                            ipv6=opts.family == 6)
    except ValueError as e:
        raise CLIError(str(e), EXIT_USAGE) from None
    try:
        if opts.json or not render.console(stderr=True).is_terminal:
            result = run_demo(config)
        else:
            result = _with_progress(run_demo, config)
    except DemoError as e:
        raise CLIError(f"demo: {e}", EXIT_FAILURE) from None
    if opts.json:
        render.print_json({"ok": result.ok,
                           "summary": {k: v for k, v in result.__dict__.items() if k not in ("workers", "lb")},
                           "workers": result.table(), "loadBalancer": result.lb})
    else:
        _print_table(result)
    if not result.ok:
        now = f"{rate:g} Gb/s" if rate else "unpaced"
        hint = f"; UDP on this machine dropped datagrams: try a lower --rate (now {now})" \
            if result.events_missing and not result.bad_events else ""
        raise CLIError(f"demo: {result.events_missing} of {result.events_sent} events missing, "
                       f"{result.lost} lost, {result.bad_events} corrupted{hint}", EXIT_FAILURE)


def _with_progress(run, config):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=render.console(stderr=True), transient=False) as bar:
        tasks: dict[str, int] = {}

        def on_progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(_STAGES.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        return run(config, on_progress)


def _print_table(result) -> None:
    rows = [(w.name, w.events, render.human_bytes(w.bytes), w.slots, f"{w.slot_share:.1%}", f"{w.event_share:.1%}",
             f"{w.gbps:.3f}", w.lost + w.bad_events) for w in result.workers]
    rows.append(("total", result.events_received, render.human_bytes(sum(w.bytes for w in result.workers)),
                 sum(w.slots for w in result.workers), "", "", f"{result.gbps:.3f}", result.lost + result.bad_events))
    out = render.console()
    out.print(render.grid(f"ejlb demo: load balancer {result.lb_id}, {result.events_sent} events sent in "
                          f"{result.elapsed_s:.2f} s", ("worker", "events", "bytes", "slots", "slot share",
                                                        "event share", "Gb/s", "lost"),
                          rows, right=range(1, 8)))
    drops = ", ".join(f"{k[5:]} {v}" for k, v in result.lb.drops.items()) or "none dropped"
    click.echo(f"software LB: {result.lb.rx_packets} datagrams in, {result.lb.tx_packets} forwarded to workers, "
               f"{drops}")
    verdict = "every event arrived whole" if result.ok else f"{result.events_missing} events missing"
    click.echo(f"{verdict}; reservation freed, control plane stopped.")


COMMANDS = [demo]
