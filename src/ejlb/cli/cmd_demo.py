"""`ejlb demo`: the whole system on loopback with a progress bar and a final table (ejlb.demo)."""
from __future__ import annotations

import math
import os

import click

from ejlb.cli import render
from ejlb.cli.session import current_options
from ejlb.cli.main import EXIT_FAILURE, EXIT_USAGE, CLIError
from ejlb.cli.params import SIZE
from ejlb.wire import MAX_MTU, header_overhead

_STAGES = {"setup": "starting control plane, LB and workers", "send": "sending events", "drain": "receiving"}


def parse_speeds(text: str) -> tuple[float, ...]:
    """'1,2,4' -> (1.0, 2.0, 4.0): relative worker speeds, positive and finite, 1..64 of them."""
    parts = [p.strip() for p in text.split(",")]
    speeds = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{text!r}: {part!r} is not a positive number (give relative speeds like 1,2,4)")
        speeds.append(value)
    if len(speeds) > 64:
        raise ValueError(f"{text!r}: at most 64 workers")
    if max(speeds) / min(speeds) > 1000:
        raise ValueError(f"{text!r}: the fastest worker may be at most 1000 times the slowest")
    return tuple(speeds)


class _Speeds(click.ParamType):
    name = "speeds"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            return parse_speeds(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


SPEEDS = _Speeds()


@click.command()
@click.option("-n", "--events", type=click.IntRange(1, 10**9), default=2000, show_default=True, help="Events to send.")
@click.option("-s", "--size", type=SIZE, default="256k", show_default=True, help="Bytes per event (64k, 1Mi, ...).")
@click.option("-w", "--workers", type=click.IntRange(1, 64), default=None,
              help="Receivers to start.  [default: 3, or one per --speeds value]")
@click.option("-r", "--rate", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Sender pacing in Gb/s (0: unpaced; with --speeds the sender is paced by --event-rate).")
@click.option("--mtu", type=click.IntRange(header_overhead() + 1, MAX_MTU), default=MAX_MTU, show_default=True,
              help="Datagram size limit (loopback takes jumbo datagrams).")
@click.option("--speeds", type=SPEEDS, default=None,
              help="Relative worker speeds, one per worker (e.g. 1,2,4): each worker processes events at a "
                   "capacity proportional to its speed.  [default: workers as fast as they go]")
@click.option("--load", type=click.FloatRange(0, 1, min_open=True), default=0.75, show_default=True,
              help="With --speeds: the sender's event rate as a fraction of the workers' total capacity.")
@click.option("--event-rate", type=click.FloatRange(0, 1e6, min_open=True), default=500.0, show_default=True,
              help="With --speeds: events/s the sender is paced at (the workers' capacities follow from --load).")
@click.option("--balancer", type=click.Choice(["capacity", "signal"]), default="capacity", show_default=True,
              help="Load-balancing law of the embedded control plane.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG of slot shares, queue fill and drops over the run (needs matplotlib).")
def demo(events, size, workers, rate, mtu, speeds, load, event_rate, balancer, plot):
    """Run everything on loopback: control plane, software LB, workers, a sender; print who got what.

    With --speeds the workers are slow by design (each at a capacity proportional to its speed) and
    the table shows how the control plane's calendar follows their capacities."""
    from ejlb.demo import DemoConfig, DemoError, run_demo, write_plot

    opts = current_options()
    if speeds is not None and workers is not None and workers != len(speeds):
        raise click.UsageError(f"--workers {workers} conflicts with --speeds {','.join(f'{v:g}' for v in speeds)} "
                               f"({len(speeds)} speeds: one worker each); give one of them, or matching ones")
    if plot is not None:
        _check_plot_target(plot)
    try:
        config = DemoConfig(events=events, size=size, workers=workers, rate_gbps=rate or None, mtu=mtu,
                            ipv6=opts.family == 6, speeds=speeds, load=load, event_rate=event_rate,
                            balancer=balancer)
    except ValueError as e:
        raise CLIError(str(e), EXIT_USAGE) from None
    try:
        if opts.json or not render.console(stderr=True).is_terminal:
            result = run_demo(config)
        else:
            result = _with_progress(run_demo, config)
    except DemoError as e:
        raise CLIError(f"demo: {e}", EXIT_FAILURE) from None
    if plot is not None:
        try:
            write_plot(result, plot)
        except (OSError, ValueError) as e:
            raise CLIError(f"--plot {plot}: cannot write the PNG ({e})", EXIT_FAILURE) from None
    # With slow workers, events dropped by full queues are an outcome to show, not a failure.
    passed = result.ok or (result.speeds is not None and result.accounted)
    if opts.json:
        render.print_json({"ok": passed,
                           "summary": {k: v for k, v in result.__dict__.items()
                                       if k not in ("workers", "lb", "samples")},
                           "workers": result.table(), "loadBalancer": result.lb, "samples": result.samples,
                           "plot": plot})
    else:
        _print_table(result, plot)
    if not passed:
        if speeds is not None:
            now = f"--event-rate (now {event_rate:g} events/s)"
        else:
            now = f"--rate (now {f'{rate:g} Gb/s' if rate else 'unpaced'})"
        hint = f"; UDP on this machine dropped datagrams: try a lower {now}" \
            if result.events_missing > result.dropped and not result.bad_events else ""
        raise CLIError(f"demo: {result.events_missing} of {result.events_sent} events missing "
                       f"({result.dropped} dropped by full worker queues), {result.lost} lost, "
                       f"{result.bad_events} corrupted{hint}", EXIT_FAILURE)


def _check_plot_target(path: str) -> None:
    """Before the run: matplotlib is there and the PNG's directory exists (not after a minute of demo)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CLIError("--plot needs matplotlib: pip install matplotlib (or the package's [dev] extra)",
                       EXIT_USAGE) from None
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CLIError(f"--plot {path}: no such directory {folder}", EXIT_USAGE)
    if not os.access(folder, os.W_OK):
        raise CLIError(f"--plot {path}: directory {folder} is not writable", EXIT_USAGE)


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


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _print_table(result, plot: str | None = None) -> None:
    rows = [(w.name, _share(w.capacity_share), w.events, render.human_bytes(w.bytes), w.slots, _share(w.slot_share),
             _share(w.slot_share_avg), _share(w.event_share), f"{w.gbps:.3f}", w.dropped, w.lost + w.bad_events)
            for w in result.workers]
    rows.append(("total", "100.0%" if result.speeds is not None else "-", result.events_received,
                 render.human_bytes(sum(w.bytes for w in result.workers)), sum(w.slots for w in result.workers),
                 "", "", "", f"{result.gbps:.3f}", result.dropped, result.lost + result.bad_events))
    title = (f"ejlb demo: load balancer {result.lb_id}, {result.events_sent} events sent in {result.elapsed_s:.2f} s, "
             f"balancer {result.balancer}")
    if result.speeds is not None:
        title += (f"\nspeeds {','.join(f'{v:g}' for v in result.speeds)}: {result.event_rate:g} events/s offered = "
                  f"{result.load:.0%} of the workers' capacity (a speed-1 worker takes "
                  f"{result.base_service_time * 1e3:.2f} ms per event)")
    out = render.console()
    out.print(render.grid(title, ("worker", "capacity share", "events", "bytes", "slots", "slot share",
                                  "2nd-half avg", "event share", "Gb/s", "queue full", "lost"),
                          rows, right=range(1, 11)))
    click.echo("slot share: at the end; 2nd-half avg: time-averaged over the second half of the run; "
               "queue full: events dropped by a full worker queue")
    drops = ", ".join(f"{k[5:]} {v}" for k, v in result.lb.drops.items()) or "none dropped"
    click.echo(f"software LB: {result.lb.rx_packets} datagrams in, {result.lb.tx_packets} forwarded to workers, "
               f"{drops}")
    if result.ok:
        verdict = "every event arrived whole"
    elif result.speeds is not None and result.accounted:
        verdict = f"every event arrived whole except {result.dropped} dropped by full worker queues"
    else:
        verdict = f"{result.events_missing} events missing"
    if plot is not None:
        verdict += f"; plot written to {plot}"
    click.echo(f"{verdict}; reservation freed, control plane stopped.")


COMMANDS = [demo]
