"""The sender's pure cores: layout, numbering, rotation, sync fields (no sockets, no clock)."""
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ejlb.shim.plan import Layout, Numbering, Rotation, SyncState, check_event_len
from ejlb.errors import ArgumentError
from ejlb.wire import HEADERS_LEN, MAX_EVENT_LEN, TICK_RATE_HZ, WireError, fragment_count, header_overhead


@pytest.mark.parametrize(
    "mtu, ipv6, fragment, segments",
    [(1500, False, 1436, 44), (9000, False, 8936, 7), (1500, True, 1416, 45), (9000, True, 8916, 7), (65, False, 1, 64)],
)
def test_layout_matches_spec_sizes(mtu, ipv6, fragment, segments):
    lay = Layout.for_mtu(mtu, ipv6)
    assert lay.fragment == fragment == mtu - header_overhead(ipv6)
    assert lay.segment == fragment + HEADERS_LEN
    assert lay.gso_segments == segments
    # a GSO super-datagram must fit the 16-bit IP length
    ip_len = lay.gso_segments * lay.segment + 8 + (0 if ipv6 else 20)
    assert ip_len <= 0xFFFF


@pytest.mark.parametrize("mtu", [64, 84 - 1, 9001, 0, -1, "1500", 1500.0, True, None])
def test_layout_rejects_bad_mtu(mtu):
    with pytest.raises(ArgumentError) as e:
        Layout.for_mtu(mtu, ipv6=mtu == 84 - 1)
    assert e.value.field == "mtu"


@settings(deadline=None)  # no wall-clock limits on a shared CI machine
@given(st.integers(0, 1 << 22), st.sampled_from([1500, 9000, 4000, 100]), st.booleans())
def test_layout_datagrams_cover_event(n, mtu, ipv6):
    lay = Layout.for_mtu(mtu, ipv6)
    d = lay.datagrams(n)
    assert d == fragment_count(n, lay.fragment)
    assert (d - 1) * lay.fragment < max(n, 1) <= d * lay.fragment
    assert lay.udp_bytes(n) == n + d * HEADERS_LEN


def test_event_length_bound():
    assert check_event_len(MAX_EVENT_LEN) == MAX_EVENT_LEN
    with pytest.raises(WireError, match="event.length"):
        check_event_len(MAX_EVENT_LEN + 1)


def test_numbering_defaults_are_monotonic_and_per_spec():
    num = Numbering(rng=random.Random(7))
    stamps = [num.stamp(1_000_000) for _ in range(3)] + [num.stamp(999_000), num.stamp(2_000_000)]
    ticks = [s[0] for s in stamps]
    assert ticks == [1_000_000, 1_000_001, 1_000_002, 1_000_003, 2_000_000]  # same µs -> next tick
    assert [s[1] for s in stamps] == [0, 1, 2, 3, 4]
    assert [s[3] for s in stamps] == [t & 0xFFFF for t in ticks]
    expected = random.Random(7)
    assert [s[2] for s in stamps] == [expected.getrandbits(16) for _ in stamps]


def test_numbering_caller_values():
    num = Numbering()
    assert num.stamp(5, event_number=100, entropy=0xABCD, tick=42) == (42, 100, 0xABCD, 42)
    assert not num.auto_ticks
    tick, evn, _, _ = num.stamp(5)
    assert evn == 101 and tick == 43  # counter follows the caller; auto tick stays above the last
    assert num.auto_ticks
    assert num.stamp(5, event_number=(1 << 64) - 1)[1] == (1 << 64) - 1
    assert num.stamp(5)[1] == 0  # wraps like a u64
    num.stamp(5, tick=(1 << 64) - 1)
    assert num.stamp(5)[0] == 0  # the automatic tick after the largest one wraps like a u64


@pytest.mark.parametrize(
    "kw, field",
    [({"event_number": -1}, "event_number"), ({"event_number": 1 << 64}, "event_number"),
     ({"entropy": 1 << 16}, "entropy"), ({"entropy": "7"}, "entropy"), ({"tick": 1.5}, "tick"),
     ({"tick": True}, "tick")],
)
def test_numbering_rejects_bad_values_without_changing_state(kw, field):
    num = Numbering()
    with pytest.raises(WireError) as e:
        Numbering.validate(**kw)
    assert e.value.field == field
    with pytest.raises(WireError):
        num.stamp(10, **kw)
    assert num.stamp(10)[:2] == (10, 0)


def test_rotation_spreads_sockets_and_ports():
    rot = Rotation(3, 20000, 20003)
    got = [rot.next() for _ in range(12)]
    assert [g[0] for g in got] == [0, 1, 2] * 4
    assert [g[1] for g in got] == [20000, 20001, 20002, 20003] * 3
    assert {Rotation(2, 19522, 19522).next()[1] for _ in range(4)} == {19522}


@pytest.mark.parametrize("n, lo, hi", [(0, 1, 1), (65, 1, 1), (True, 1, 1), (1, 0, 1), (1, 5, 4), (1, 1, 70000)])
def test_rotation_rejects_bad_arguments(n, lo, hi):
    with pytest.raises(ArgumentError):
        Rotation(n, lo, hi)


def test_sync_fields_auto_ticks_report_the_clock():
    num, state = Numbering(), SyncState()
    num.stamp(1_000)
    assert state.fields(num, 5_000_000, 1.0) == (5_000_000, TICK_RATE_HZ)
    num.stamp(9_000_000)  # clock behind the ticks (bursts): report the larger
    assert state.fields(num, 8_000_000, 2.0) == (9_000_000, TICK_RATE_HZ)


def test_sync_fields_caller_ticks_report_last_tick_and_event_rate():
    num, state = Numbering(), SyncState()
    assert state.fields(num, 0, 10.0) == (0, TICK_RATE_HZ)  # nothing sent yet: auto
    for t in range(100):
        num.stamp(0, tick=t * 10)
    assert state.fields(num, 0, 11.0) == (990, 100)  # 100 events over the last second
    for t in range(50):
        num.stamp(0, tick=1000 + t)
    assert state.fields(num, 0, 11.5) == (1049, 100)


def test_one_error_hierarchy():
    """Every deliberate error derives from EjlbError; field errors are ValueErrors naming field and value."""
    from ejlb.control.errors import LBError
    from ejlb.dataplane.tables import TableError
    from ejlb.errors import Closed, EjlbError, FieldError
    from ejlb.shim.events import ReceiverClosed, SenderClosed
    from ejlb.shim.sender import SendQueueFull
    from ejlb.uri import URIError
    from ejlb.wire import WireError

    for cls in (WireError, ArgumentError, URIError, TableError, LBError, SendQueueFull, ReceiverClosed, SenderClosed):
        assert issubclass(cls, EjlbError), cls
    assert issubclass(WireError, FieldError) and issubclass(ArgumentError, FieldError)
    assert issubclass(FieldError, ValueError) and not issubclass(ArgumentError, WireError)
    assert issubclass(ReceiverClosed, Closed) and issubclass(SenderClosed, Closed)
    e = ArgumentError("rate_gbps", 0, "must be within 0.001..1000")
    assert (e.field, e.value, str(e)) == ("rate_gbps", 0, "rate_gbps=0: must be within 0.001..1000")
