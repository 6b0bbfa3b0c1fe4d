"""The shared table model: validation, epoch lookup, and diff/apply as exact inverses."""
import ipaddress

import pytest
from hypothesis import given, settings, strategies as st

from ejlb.dataplane import tables as t

MAC = b"\x02\x00\x00\x00\x00\x01"


def member(i: int, keep=False, drop=False) -> t.Member:
    return t.Member(ip=ipaddress.ip_address(f"10.0.0.{i + 1}"), base_port=20000 + i, port_bits=i % 3,
                    mac=MAC, keep_lb_header=keep, drop=drop)


@st.composite
def table_sets(draw):
    lbs = {i: t.LBInstance(i, MAC, ipaddress.IPv4Address(f"192.0.2.{i + 1}")) for i in draw(st.sets(st.integers(0, 7), max_size=3))}
    senders = frozenset((lb, ipaddress.ip_address(f"198.51.100.{h}")) for lb in lbs for h in draw(st.sets(st.integers(1, 5), max_size=3)))
    epochs, calendars, members = {}, {}, {}
    for lb in lbs:
        for e in draw(st.sets(st.integers(0, 3), max_size=4)):
            start = draw(st.integers(0, 1 << 40))
            epochs[(lb, e)] = t.EpochRange(start, start + draw(st.integers(1, 1000)))
            ids = draw(st.lists(st.integers(0, 4), min_size=1, max_size=4))
            calendars[(lb, e)] = tuple(ids[s % len(ids)] for s in range(512))
        for m in draw(st.sets(st.integers(0, 4), max_size=5)):
            members[(lb, m)] = member(m, keep=draw(st.booleans()), drop=draw(st.booleans()))
    return t.Tables(lbs=lbs, senders=senders, epochs=epochs, calendars=calendars, members=members)


@settings(max_examples=60, deadline=None)
@given(a=table_sets(), b=table_sets())
def test_apply_of_diff_reaches_target(a, b):
    d = t.diff(a, b)
    assert t.apply(a, d) == b
    assert not t.diff(b, b)
    assert bool(d) == (a != b)


def test_diff_is_minimal():
    base = t.Tables(members={(0, 1): member(1), (0, 2): member(2)})
    new = t.Tables(members={(0, 1): member(1), (0, 2): member(2, keep=True), (0, 3): member(3)})
    d = t.diff(base, new)
    assert set(d.set["members"]) == {(0, 2), (0, 3)} and not d.delete["members"]


def test_epoch_lookup_with_catch_all():
    tb = t.Tables(epochs={(0, 0): t.EpochRange(100, 200), (0, 1): t.EpochRange(200, None, catch_all=True),
                          (1, 2): t.EpochRange(0, 10)})
    assert tb.epoch_for(0, 150) == 0
    assert tb.epoch_for(0, 10**12) == 1
    assert tb.epoch_for(0, 5) == 1  # older than the oldest boundary -> catch-all
    assert tb.epoch_for(1, 10) is None  # no catch-all on LB 1: miss


def test_destination_filter_lookup():
    inst = t.LBInstance(3, MAC, ipv4="192.0.2.9", ipv6="2001:db8::9")
    tb = t.Tables(lbs={3: inst})
    assert tb.lb_for_destination(ipaddress.ip_address("2001:db8::9")) is inst
    assert tb.lb_for_destination(ipaddress.ip_address("192.0.2.10")) is None


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: t.LBInstance(8, MAC), "lb_id"),
        (lambda: t.LBInstance(0, b"\x01"), "mac"),
        (lambda: t.Member(ip="10.0.0.1", base_port=65535, port_bits=1), "port_bits"),
        (lambda: t.Member(ip="10.0.0.1", base_port=70000), "base_port"),
        (lambda: t.EpochRange(10, 5), "epoch.end"),
        (lambda: t.Tables(calendars={(0, 0): (1,) * 511}), "length"),
        (lambda: t.Tables(calendars={(0, 4): (1,) * 512}), "epoch_id"),
        (lambda: t.Tables(epochs={(0, 0): t.EpochRange(0, catch_all=True), (0, 1): t.EpochRange(5, catch_all=True)}), "catch-all"),
        (lambda: t.Tables(members={(0, 1024): member(1)}), "member_id"),
        (lambda: t.parse_mac("02:00:00"), "mac"),
    ],
)
def test_bad_entries_name_the_field(make, field):
    with pytest.raises(t.TableError, match=field):
        make()


def test_mac_text_roundtrip():
    assert t.format_mac(t.parse_mac("02:aa:00:00:00:ff")) == "02:aa:00:00:00:ff"


def test_drop_counter_names_cover_the_spec():
    assert [d.counter for d in t.Drop if d] == [
        "drop_parse_fail", "drop_not_lb", "drop_no_lb_hdr", "drop_bad_version", "drop_blocked_src",
        "drop_ttl", "drop_epoch_miss", "drop_calendar_miss", "drop_member_miss"]
    c = t.Counters()
    c.lb_counters(2)["drop_ttl"] += 1
    assert c.lb[2]["drop_ttl"] == 1 and c.lb[2]["rx_v3"] == 0
