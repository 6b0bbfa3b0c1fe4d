"""Pure parts of the CLI: argument parsers, the rate meter, the exit-code mapping, status rendering."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from ejlb.cli.main import EXIT_DENIED, EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_USAGE, exit_code_for
from ejlb.cli.meter import RateMeter
from ejlb.cli.params import parse_duration, parse_ip, parse_mtu, parse_permission, parse_size, parse_until
from ejlb.cli.render import status_renderables, worker_rows
from ejlb.control import errors
from ejlb.control import loadbalancer_pb2 as pb
from ejlb.uri import URIError


@pytest.mark.parametrize("text, seconds", [
    ("12", 12 * 3600), ("0.5", 1800), ("01:30", 5400), ("1:02:03", 3723), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1.5d", 129600), ("1w", 604800), (" 5 min ", 300),
])
def test_durations(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0", "-5m", "3 fortnights", "1h30m", "m", "1:60", "0:00", "1:2:3:4"])
def test_bad_durations_name_the_value(text):
    with pytest.raises(ValueError) as e:
        parse_duration(text)
    assert repr(text) in str(e.value)


def test_until_is_utc_unless_zoned():
    assert parse_until("2030-01-02T03:04:05") == datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert parse_until("2030-01-02T03:04:05Z") == datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert parse_until("2030-01-02T05:04:05+02:00") == datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="'tomorrow' is not an ISO 8601 time"):
        parse_until("tomorrow")


@pytest.mark.parametrize("text, size", [
    ("0", 0), ("1500", 1500), ("64k", 64_000), ("64KB", 64_000), ("1Mi", 1 << 20), ("2G", 2 * 10**9),
    ("1.5k", 1500), ("4GiB", 4 << 30),
])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "1.5", "-1", "1kk", "0.3k2"])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        parse_size(text)


@given(st.integers(0, 1 << 40))
def test_size_round_trips_plain_integers(n):
    assert parse_size(str(n)) == n


def test_ips_and_permissions():
    assert parse_ip("[::1]") == "::1" and parse_ip(" 10.0.0.1 ") == "10.0.0.1"
    with pytest.raises(ValueError, match="'10.0.0.256'"):
        parse_ip("10.0.0.256")
    assert parse_permission("all:update") == (0, "", 3)
    assert parse_permission("reservation:3:read_only") == (2, "3", 0)
    assert parse_permission("LB:0:Reserve") == (1, "0", 2)
    for bad, why in (("all", "TYPE"), ("session:x:update", "decimal id"), ("host:1:update", "'host'"),
                     ("all:admin", "'admin'")):
        with pytest.raises(ValueError, match=why):
            parse_permission(bad)


def test_rate_meter_intervals_totals_and_restarts():
    m = RateMeter(("events", "bytes"))
    assert m.feed(10.0, {"events": 5, "bytes": 500}) is None  # the baseline
    row = m.feed(11.0, {"events": 15, "bytes": 1_250_000_500})
    assert row.deltas == {"events": 10, "bytes": 1_250_000_000} and row.rate("events") == 10.0
    assert row.gbps() == pytest.approx(10.0)
    m.feed(13.0, {"events": 15, "bytes": 1_250_000_500})  # two idle seconds
    restarted = m.feed(14.0, {"events": 3, "bytes": 300})  # counters went back: a fresh start
    assert restarted.deltas == {"events": 3, "bytes": 300}
    assert m.total("events") == 13 and m.elapsed == 4.0
    assert m.mean_rate("events") == 13 / 4
    assert m.active_rate("events") == 13 / 2  # idle interval left out
    assert m.peak_rate("events") == 10.0


def test_exit_codes_map_control_plane_errors_in_one_place():
    assert exit_code_for(errors.PermissionDenied("x")) == EXIT_DENIED
    assert exit_code_for(errors.Unauthenticated("x")) == EXIT_DENIED
    assert exit_code_for(errors.NotFound("x")) == EXIT_NOT_FOUND
    assert exit_code_for(errors.InvalidArgument("x")) == EXIT_USAGE
    assert exit_code_for(errors.Unavailable("x")) == EXIT_FAILURE
    assert exit_code_for(errors.LBError("x")) == EXIT_FAILURE
    assert exit_code_for(URIError("host", "h", "bad")) == EXIT_USAGE
    assert exit_code_for(OSError("x")) == EXIT_FAILURE


def test_worker_rows_show_port_range_readiness_and_counters():
    now = datetime(2030, 1, 1, 0, 0, 10, tzinfo=timezone.utc)
    w = pb.WorkerStatus(name="w", sessionId=4, ipAddress="10.0.0.2", udpPort=20000, portRange=3, fillPercent=0.5,
                        controlSignal=-0.25, slotsAssigned=100, totalEventsRecv=7, totalEventsReassembled=6,
                        totalEventsReassemblyErr=1, totalBytesRecv=2_500_000)
    w.lastUpdated.FromDatetime(now - timedelta(seconds=1))
    stale = pb.WorkerStatus(name="s", ipAddress="fd00::2", udpPort=30000)
    stale.lastUpdated.FromDatetime(now - timedelta(seconds=5))
    status = pb.LoadBalancerStatusReply(workers=[w, stale])
    row, old = worker_rows(status, now)
    assert row == ("w", 4, "10.0.0.2:20000-20007", "yes", "50.0%", "-0.250", 100, "1.0s ago", 7, 6, 1, "2.5 MB")
    assert old[2] == "[fd00::2]:30000" and old[3] == "stale" and old[7] == "5.0s ago"


def test_monitor_rates_between_two_status_replies():
    from ejlb.cli.cmd_monitor import rates

    def status(t, events, nbytes, extra=()):
        s = pb.LoadBalancerStatusReply(workers=[pb.WorkerStatus(sessionId=1, totalEventsReassembled=events,
                                                                totalBytesRecv=nbytes), *extra])
        s.timestamp.FromNanoseconds(int(t * 1e9))
        return s

    before = status(100.0, 10, 1_000)
    after = status(102.0, 30, 500_001_000, [pb.WorkerStatus(sessionId=2, totalEventsReassembled=5)])
    assert rates(before, after) == {1: (10.0, 2.0)}  # the newcomer (session 2) has no rate yet
    assert rates(after, status(102.0, 40, 0)) == {}  # no time passed: no rate rather than a division by 0


def test_status_ages_use_the_control_planes_clock():
    from rich.console import Console

    server_now = datetime(2001, 1, 1, 0, 0, 10, tzinfo=timezone.utc)  # far from this machine's clock
    w = pb.WorkerStatus(name="w", udpPort=20000)
    w.lastUpdated.FromDatetime(server_now - timedelta(seconds=1))
    status = pb.LoadBalancerStatusReply(workers=[w])
    status.timestamp.FromDatetime(server_now)
    console = Console(width=200, record=True)
    for r in status_renderables("1", status):
        console.print(r)
    text = console.export_text()
    assert "1.0s ago" in text and "yes" in text and "stale" not in text


def test_mtu_limits_come_from_the_wire_module():
    from ejlb.wire import MAX_MTU, header_overhead

    assert parse_mtu("auto") == "auto" and parse_mtu(str(MAX_MTU)) == MAX_MTU
    assert parse_mtu(str(header_overhead() + 1)) == header_overhead() + 1
    for bad in (str(MAX_MTU + 1), str(header_overhead()), "jumbo"):
        with pytest.raises(ValueError, match=repr(bad)):
            parse_mtu(bad)


def test_balancer_choices_are_the_configs():
    """The CLI lists the balancers literally (importing the config would slow every command's start);
    they must be ControlConfig's."""
    from ejlb.cli.cmd_demo import demo
    from ejlb.cli.cmd_serve import serve
    from ejlb.control.config import BALANCERS

    for command in (serve, demo):
        (opt,) = [p for p in command.params if p.name == "balancer"]
        assert tuple(opt.type.choices) == BALANCERS
