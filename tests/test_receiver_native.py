"""The native reassembler (csrc/recv.c) against the pure reference (ejlb.shim.reassembly): the same
datagrams, the same clock, the same completed events, counters and lost log."""
import random
from dataclasses import fields

from hypothesis import given, settings
from hypothesis import strategies as st

from ejlb.native import lib
from ejlb.shim.reassembly import EVENT_OVERHEAD, LOST_EVICTED, LOST_TIMEOUT, ReassemblyCounters, Reassembler
from receiver_tools import NativeReassembler, datagrams, piece

COUNTERS = tuple(f.name for f in fields(ReassemblyCounters))  # compared by name with the native core's
REASON = {LOST_TIMEOUT: lib.EJLB_RX_LOST_TIMEOUT, LOST_EVICTED: lib.EJLB_RX_LOST_EVICTED}


def both(**kw):
    timeout = kw.pop("timeout_us", 500_000)
    return (Reassembler(timeout=timeout, **kw),
            NativeReassembler(timeout_us=timeout, **{k: v for k, v in kw.items()}))


def gro_groups(ops):
    """Runs of datagrams as UDP GRO would coalesce them: equal sizes, the last may be shorter."""
    i = 0
    while i < len(ops):
        if ops[i][0] != "d" or not ops[i][1]:
            yield [ops[i]]
            i += 1
            continue
        size, j = len(ops[i][1]), i + 1
        while j < len(ops) and j - i < 64 and ops[j][0] == "d" and 0 < len(ops[j][1]) <= size:
            j += 1
            if len(ops[j - 1][1]) < size:
                break
        yield ops[i:j]
        i = j


def run(ops, gro=False, **kw):
    """ops: ("d", datagram, now) or ("x", now). Returns (events, counters, lost) of both, checked equal.
    With gro, the native side gets runs of datagrams as one coalesced buffer (segment size given)."""
    py, c = both(**kw)
    got_py, got_c = [], []
    for group in gro_groups(ops) if gro else ([op] for op in ops):
        op = group[0]
        if op[0] == "d":
            for d in group:
                got_py += py.feed(d[1], op[2])
            got_c += c.feed(b"".join(d[1] for d in group), op[2], seg=len(op[1]) if len(group) > 1 else 0)
        else:
            py.expire(op[1])
            c.expire(op[1])
    native = c.counters()
    assert got_c == got_py
    assert {k: native[k] for k in COUNTERS} == py.counters.as_dict()
    assert native["events_reassembly_err"] == native["lost"] + native["evicted"]
    assert c.lost() == [(e.event_number, e.data_id, e.fragments, e.bytes, e.length, REASON[e.reason])
                        for e in py.lost_log]
    return got_py, py.counters, list(py.lost_log)


def test_overhead_constant_matches_native():
    assert EVENT_OVERHEAD == lib.EJLB_RX_EVENT_OVERHEAD  # generated (ejlb.cfacts): the build is current


def test_in_order_event_with_and_without_lb_header():
    payload = bytes(range(256)) * 20
    for with_lb in (False, True):
        ops = [("d", d, 0) for d in datagrams(payload, event_number=7, data_id=3, fragment=1000, with_lb=with_lb)]
        events, c, _ = run(ops, with_lb_header=with_lb)
        assert events == [(7, 3, payload)]
        assert c.events_recv == 1 and c.packets_recv == 6


def test_first_fragment_last_and_duplicates_and_late_fragment():
    payload = random.Random(1).randbytes(5000)
    frags = datagrams(payload, event_number=1, fragment=1200, with_lb=False)
    ops = [("d", d, 0) for d in frags[1:] + [frags[2], frags[0], frags[3]]]  # dup before, late after
    events, c, _ = run(ops)
    assert events == [(1, 0, payload)]
    assert c.duplicates == 2


def test_overlap_keeps_new_bytes_only():
    payload = random.Random(2).randbytes(3000)
    cut = [piece(payload, 0, 1000, event_number=4, with_lb=False),
           piece(payload, 500, 2000, event_number=4, with_lb=False),  # half new
           piece(payload, 100, 900, event_number=4, with_lb=False),  # fully covered
           piece(payload, 1500, 3000, event_number=4, with_lb=False)]
    events, c, _ = run([("d", d, 0) for d in cut])
    assert events == [(4, 0, payload)]
    assert (c.overlaps, c.duplicates) == (2, 1)


def test_bad_fragments_and_headers_are_only_counted():
    payload = bytes(100)
    ok = piece(payload, 0, 100, event_number=9, with_lb=False)
    bad = [
        b"",  # empty
        ok[:19],  # truncated RE header
        b"\x20" + ok[1:],  # RE version 2
        ok[:1] + b"\x01" + ok[2:],  # reserved byte
        piece(payload, 50, 100, event_number=9, with_lb=False, length=60),  # beyond length
        piece(payload, 0, 0, event_number=9, with_lb=False),  # empty fragment of non-empty event
        piece(bytes(10), 0, 10, event_number=9, with_lb=False, length=0xFFFFFFFF),  # larger than the cap
    ]
    events, c, _ = run([("d", d, 0) for d in bad] + [("d", ok, 1)], max_pending_bytes=1 << 20)
    assert events == [(9, 0, payload)]
    assert (c.bad_headers, c.bad_fragments) == (4, 3)


def test_length_change_mid_event_is_a_bad_fragment():
    payload = bytes(range(200))
    a = piece(payload, 0, 100, event_number=5, with_lb=False)
    b = piece(payload, 100, 200, event_number=5, with_lb=False, length=300)
    _, c, _ = run([("d", a, 0), ("d", b, 0)])
    assert c.bad_fragments == 1


def test_bad_lb_header():
    payload = bytes(50)
    d = datagrams(payload, event_number=3)[0]
    bad = [d[:35], b"XB" + d[2:], d[:2] + b"\x04" + d[3:], d[:3] + b"\x02" + d[4:]]
    events, c, _ = run([("d", x, 0) for x in bad + [d]], with_lb_header=True)
    assert events == [(3, 0, payload)] and c.bad_headers == 4


def test_zero_length_event_and_its_duplicate():
    d = piece(b"", 0, 0, event_number=11, with_lb=False)
    events, c, _ = run([("d", d, 0), ("d", d, 10)])
    assert events == [(11, 0, b"")] and c.duplicates == 1


def test_timeout_logs_what_arrived():
    payload = bytes(4000)
    frags = datagrams(payload, event_number=21, data_id=2, fragment=1000, with_lb=False)
    events, c, lost = run([("d", frags[0], 0), ("d", frags[2], 100), ("x", 499_999), ("x", 500_000),
                           ("d", frags[1], 500_001)])
    assert events == [] and c.lost == 1 and c.duplicates == 1  # late fragment is not a new event
    assert (lost[0].event_number, lost[0].data_id, lost[0].fragments, lost[0].bytes) == (21, 2, 2, 2000)


def test_restarted_numbering_after_timeout_is_a_new_event():
    payload = bytes(10)
    d = piece(payload, 0, 10, event_number=1, with_lb=False)
    events, _, _ = run([("d", d, 0), ("d", d, 600_000)])
    assert len(events) == 2


def test_byte_cap_evicts_oldest():
    cap = 3 * (1000 + EVENT_OVERHEAD)
    ops = []
    for n in range(5):  # five half-received events of 1000 bytes: the first two are evicted
        ops.append(("d", piece(bytes(1000), 0, 500, event_number=n, with_lb=False), n))
    events, c, lost = run(ops, max_pending_bytes=cap)
    assert c.evicted == 2 and [e.event_number for e in lost] == [0, 1]
    assert all(e.reason == LOST_EVICTED for e in lost)


def test_event_count_cap_evicts_oldest():
    ops = [("d", piece(bytes(100), 0, 50, event_number=n, with_lb=False), n) for n in range(10)]
    _, c, lost = run(ops, max_pending_events=4)
    assert c.evicted == 6 and [e.event_number for e in lost] == list(range(6))


def test_gro_buffer_is_split_into_segments():
    payload = random.Random(3).randbytes(4 * 1000 + 10)
    frags = datagrams(payload, event_number=8, fragment=1000, with_lb=False)
    c = NativeReassembler()
    seg = len(frags[0])
    events = c.feed(b"".join(frags), 0, seg=seg)  # last segment shorter, as GRO delivers it
    assert events == [(8, 0, payload)]
    assert c.counters()["packets_recv"] == 5 and c.counters()["gro_buffers"] == 1


@st.composite
def scenarios(draw):
    rnd = random.Random(draw(st.integers(0, 2**32)))
    ops, now = [], 0
    for evn in range(draw(st.integers(1, 6))):
        length = draw(st.sampled_from([0, 1, 2, 100, 1499, 1500, 4097, 20000]))
        payload = rnd.randbytes(length)
        data_id = draw(st.integers(0, 3))
        frag = draw(st.integers(1, 1500))
        ds = datagrams(payload, event_number=evn, data_id=data_id, fragment=frag, with_lb=False)
        if length:
            for _ in range(draw(st.integers(0, 3))):  # overlapping pieces at odd cuts
                a = rnd.randrange(length)
                ds.append(piece(payload, a, min(length, a + rnd.randrange(1, 3000)), event_number=evn,
                                data_id=data_id, with_lb=False))
        ds += rnd.sample(ds, k=min(len(ds), draw(st.integers(0, 3))))  # duplicates
        if draw(st.booleans()) and len(ds) > 1:
            ds.pop(rnd.randrange(len(ds)))  # loss
        ops += [("d", d) for d in ds]
    garbage = [rnd.randbytes(rnd.randrange(0, 60)) for _ in range(draw(st.integers(0, 5)))]
    ops += [("d", g) for g in garbage]
    if draw(st.booleans()):  # else in send order, so that GRO-like runs of equal sizes form
        rnd.shuffle(ops)
    out = []
    for op in ops:
        now += draw(st.sampled_from([0, 1, 1000, 200_000]))
        out.append(("d", op[1], now))
        if draw(st.integers(0, 9)) == 0:
            out.append(("x", now))
    out.append(("x", now + 10**6))
    return out


@settings(max_examples=120, deadline=None)
@given(scenarios(), st.sampled_from([1 << 30, 30_000]), st.booleans())
def test_native_agrees_with_reference(ops, cap, gro):
    run(ops, gro=gro, max_pending_bytes=cap)


def test_flood_of_fake_first_fragments_evicts_no_event_that_is_still_arriving():
    """Issue 16: anyone who reaches a worker can send first fragments claiming big new events. At
    the byte cap the fakes must go, not the genuine events that keep receiving fragments (the
    old rule, oldest first, evicted those: they were older than the flood)."""
    size, frag = 10_000, 1000
    payloads = {n: random.Random(n).randbytes(size) for n in range(10)}
    frags = {n: datagrams(p, event_number=n, data_id=1, fragment=frag, with_lb=False) for n, p in payloads.items()}
    fake = 1000
    ops, t = [], 0
    for k in range(0, size // frag, 2):
        for n in payloads:  # the genuine events, all in flight, a run of two fragments each per round
            ops += [("d", frags[n][k], t), ("d", frags[n][k + 1], t + 1)]
            t += 2
        for _ in range(50):  # then a burst of fakes: first fragments of 10 kB events never sent
            ops.append(("d", piece(bytes(frag), 0, frag, event_number=fake, data_id=1, with_lb=False, length=size), t))
            fake, t = fake + 1, t + 1
    cap = 20 * (size + EVENT_OVERHEAD)  # room for the genuine events and as many fakes
    events, c, lost = run(ops, max_pending_bytes=cap)
    assert sorted(events) == sorted((n, 1, p) for n, p in payloads.items())  # every genuine event whole
    assert all(e.event_number >= 1000 and e.reason == LOST_EVICTED for e in lost)
    assert c.evicted == len(lost) == (fake - 1000) - 20  # all fakes but those the cap holds at the end
    native = NativeReassembler(max_pending_bytes=cap)
    for op in ops:
        native.feed(op[1], op[2])
    counters = native.counters()
    assert counters["evicted_byte_cap"] == c.evicted and counters["evicted_event_cap"] == 0


def test_event_cap_eviction_is_counted_apart_and_spares_progressing_events():
    old = datagrams(bytes(300), event_number=1, fragment=100, with_lb=False)
    ops = [("d", old[0], 0)] + [("d", piece(bytes(100), 0, 50, event_number=n, with_lb=False), n) for n in (2, 3)]
    ops += [("d", old[1], 3)] + [("d", piece(bytes(100), 0, 50, event_number=n, with_lb=False), n) for n in (4, 5, 6)]
    ops += [("d", old[2], 7)]
    events, c, lost = run(ops, max_pending_events=3)
    assert events == [(1, 0, bytes(300))]  # the oldest event, but progressing: never evicted
    assert [e.event_number for e in lost] == [2, 3, 4]
    native = NativeReassembler(max_pending_events=3)
    for op in ops:
        native.feed(op[1], op[2])
    assert (native.counters()["evicted_event_cap"], native.counters()["evicted_byte_cap"]) == (3, 0)


def test_reassembly_counters_share_the_sendstate_names():
    """The pure reassembler counts four of the SendState totals under the same names."""
    from ejlb import sendstate

    names = {f.name for f in fields(ReassemblyCounters)}
    assert names & set(sendstate.NAMES) == {"events_recv", "events_reassembled", "bytes_recv", "packets_recv"}


def test_v2_reserved_field_ignored_like_the_reference():
    """The one validity rule (ejlb.wire): a v2 LB header's reserved bytes are not checked."""
    payload = bytes(range(200))
    good = datagrams(payload, event_number=4, fragment=100)
    odd = [d[:4] + b"\x12\x34" + d[6:] for d in good]  # v2 with non-zero reserved bytes
    events, c, _ = run([("d", d, 0) for d in odd], with_lb_header=True)
    assert events == [(4, 0, payload)] and c.bad_headers == 0
