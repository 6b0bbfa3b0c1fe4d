"""ejlb.wire against the spec: exact example bytes, round-trips, validation, batches."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ejlb import wire
from ejlb.errors import ArgumentError
from ejlb.wire import LBHeader, REHeader, SyncHeader, WireError

SPEC_EXAMPLE = bytes.fromhex(
    "4c42 0201 0000 00ab 0000000000000063" "1000 0005 000005b8 00000bb8 0000000000000063".replace(" ", "")
)

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, (1 << 64) - 1)


def test_spec_example_bytes():
    lb = LBHeader(tick=99, entropy=0xAB)
    re = REHeader(data_id=5, offset=1464, length=3000, event_number=99)
    assert lb.encode() + re.encode() == SPEC_EXAMPLE
    assert LBHeader.decode(SPEC_EXAMPLE) == lb
    assert REHeader.decode(SPEC_EXAMPLE[16:]) == re


def test_sizes_and_constants_match_spec():
    assert (wire.LB_HEADER_LEN, wire.RE_HEADER_LEN, wire.SYNC_HEADER_LEN) == (16, 20, 28)
    assert wire.header_overhead(False) == 64 and wire.header_overhead(True) == 84
    assert wire.max_payload(1500) == 1436 and wire.max_payload(9000) == 8936
    assert wire.max_payload(1500, ipv6=True) == 1416
    assert wire.DEFAULT_DATA_PORT == 0x4C42
    assert wire.DATA_PORT_MIN & 0xC000 == 0x4000 and (wire.DATA_PORT_MAX + 1) & 0xC000 != 0x4000


@pytest.mark.parametrize("mtu", [0, 64, 9001, 1500.0, "1500", True, None])
def test_max_payload_rejects_bad_mtu(mtu):
    with pytest.raises(ArgumentError, match="mtu"):
        wire.max_payload(mtu)


def test_slot_and_port_rules():
    assert wire.slot_for(0x1234) == 0x1234 % 512
    assert wire.slot_for(0x1234, bits=4, xor=0xF) == (0x1234 ^ 0xF) & 0xF
    # an addition, not an OR: base 19523 | 1 would be 19523
    assert wire.port_for(19523, 1, 2) == 19524
    assert wire.port_for(19522, 0xFFFF, 0) == 19522


@given(tick=u64, entropy=u16, slot=u16, version=st.sampled_from([2, 3]))
def test_lb_roundtrip(tick, entropy, slot, version):
    hdr = LBHeader(tick=tick, entropy=entropy, version=version, slot_select=slot if version == 3 else 0)
    raw = hdr.encode()
    assert len(raw) == 16 and raw[:2] == b"LB" and raw[2] == version
    assert LBHeader.decode(raw) == hdr
    assert hdr.slot_key == (tick & 0xFFFF if version == 2 else slot)


@given(data_id=u16, offset=u32, length=u32, evt=u64)
def test_re_roundtrip(data_id, offset, length, evt):
    hdr = REHeader(data_id, offset, length, evt)
    raw = hdr.encode()
    assert raw[0] == 0x10 and raw[1] == 0
    assert REHeader.decode(raw) == hdr


@given(src=u32, evt=u64, rate=u32, ns=u64)
def test_sync_roundtrip(src, evt, rate, ns):
    hdr = SyncHeader(src, evt, rate, ns)
    raw = hdr.encode()
    assert len(raw) == 28 and raw[:4] == b"LC\x02\x00"
    assert SyncHeader.decode(raw) == hdr


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(tick=-1), "lb.tick"),
        (dict(tick=1 << 64), "lb.tick"),
        (dict(tick=1, entropy=1 << 16), "lb.entropy"),
        (dict(tick=1, version=4), "lb.version"),
        (dict(tick=1, version=2, slot_select=5), "lb.slot_select"),
        (dict(tick="1"), "lb.tick"),
    ],
)
def test_lb_invalid_fields_named(kwargs, field):
    with pytest.raises(WireError) as e:
        LBHeader(**kwargs)
    assert e.value.field == field and field in str(e.value)


def test_decode_rejects_bad_bytes_naming_field():
    good = SPEC_EXAMPLE
    cases = [
        (LBHeader, b"XB" + good[2:16], "lb.magic"),
        (LBHeader, good[:2] + b"\x63" + good[3:16], "lb.version"),
        (LBHeader, good[:3] + b"\x02" + good[4:16], "lb.next_proto"),
        (REHeader, b"\x20" + good[17:36], "re.version"),
        (REHeader, b"\x11" + good[17:36], "re.version"),
        (REHeader, b"\x10\x01" + good[18:36], "re.reserved"),
        (LBHeader, good[:15], "lb.length"),
        (REHeader, good[16:35], "re.length"),
    ]
    for cls, raw, field in cases:
        with pytest.raises(WireError) as e:
            cls.decode(raw)
        assert e.value.field == field, (raw.hex(), e.value)
    sync = SyncHeader(1, 2, 3, 4).encode()
    for raw, field in [(sync + b"\0", "sync.length"), (sync[:27], "sync.length"),
                       (b"LD" + sync[2:], "sync.magic"), (sync[:2] + b"\x01" + sync[3:], "sync.version"),
                       (sync[:3] + b"\x01" + sync[4:], "sync.reserved")]:
        with pytest.raises(WireError) as e:
            SyncHeader.decode(raw)
        assert e.value.field == field


def test_check_fragment_bounds():
    REHeader(1, 0, 10, 1).check_fragment(10)
    REHeader(1, 0, 0, 1).check_fragment(0)  # zero-length event: one header-only datagram
    with pytest.raises(WireError, match="re.offset"):
        REHeader(1, 5, 10, 1).check_fragment(6)
    with pytest.raises(WireError, match="re.offset"):
        REHeader(1, 0, 10, 1).check_fragment(0)


def _per_fragment(event_len, frag, **kw):
    n = wire.fragment_count(event_len, frag)
    return b"".join(
        LBHeader(tick=kw["tick"], entropy=kw["entropy"], version=kw["version"],
                 slot_select=kw["tick"] & 0xFFFF if kw["version"] == 3 else 0).encode()
        + REHeader(kw["data_id"], i * frag, event_len, kw["event_number"]).encode()
        for i in range(n)
    )


@settings(max_examples=40, deadline=None)
@given(
    event_len=st.one_of(st.integers(0, 20_000), st.integers(0, 64 << 20)),
    mtu=st.sampled_from([1500, 9000]),
    ipv6=st.booleans(),
    version=st.sampled_from([2, 3]),
    tick=u64, entropy=u16, data_id=u16, event_number=u64,
)
def test_batch_encode_equals_per_fragment(event_len, mtu, ipv6, version, tick, entropy, data_id, event_number):
    frag = wire.max_payload(mtu, ipv6)
    kw = dict(tick=tick, entropy=entropy, data_id=data_id, event_number=event_number, version=version)
    batch = wire.fragment_headers(event_len, frag, **kw)
    assert batch.dtype.itemsize == 36
    assert len(batch) == wire.fragment_count(event_len, frag)
    assert batch.tobytes() == _per_fragment(event_len, frag, **kw)


def test_batch_offsets_cover_event_exactly_once():
    frag = wire.max_payload(1500)
    b = wire.fragment_headers(3000, frag, tick=99, entropy=0xAB, data_id=5, event_number=99)
    assert b.tobytes()[36:72] == SPEC_EXAMPLE.replace(bytes.fromhex("000005b8"), (frag).to_bytes(4, "big"))
    offs = b["re"]["offset"].astype(np.int64)
    sizes = np.minimum(frag, 3000 - offs)
    assert offs[0] == 0 and (offs[1:] == offs[:-1] + frag).all() and sizes.sum() == 3000


def test_parse_headers_batch_flags_bad_rows():
    frag = wire.max_payload(9000)
    good = wire.fragment_headers(100_000, frag, tick=7, entropy=3, data_id=2, event_number=11)
    rows = good.view(np.uint8).reshape(len(good), 36).copy()
    rows[1, 0] = ord("X")  # bad magic
    rows[2, 2] = 9  # bad version
    rows[3, 16] = 0x20  # bad RE version
    heads, ok = wire.parse_headers(rows)
    assert ok.tolist() == [True, False, False, False] + [True] * (len(rows) - 4)
    assert (heads["re"]["offset"][ok] == good["re"]["offset"][ok]).all()
    re_only, ok2 = wire.parse_headers(rows[:, 16:], with_lb=False)
    assert ok2.tolist() == [True, True, True, False] + [True] * (len(rows) - 4)
    assert int(re_only["event_number"][0]) == 11
    with pytest.raises(ArgumentError, match="rows.shape"):
        wire.parse_headers(rows[:, :20])


def test_c_header_is_current():
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "csrc" / "ejlb_wire.h"
    assert path.read_text() == wire.c_header(), "regenerate: python -m ejlb.wire > csrc/ejlb_wire.h"


def test_v2_reserved_field_is_ignored_on_receipt_everywhere():
    """One rule: a v2 header's reserved bytes are written 0 and ignored by every reader."""
    from ejlb.shim.reassembly import Reassembler

    raw = bytearray(SPEC_EXAMPLE)
    raw[4:6] = b"\x00\x07"
    assert LBHeader.decode(raw).slot_select == 0
    heads, ok = wire.parse_headers(np.frombuffer(bytes(raw), np.uint8)[None, :])
    assert ok.tolist() == [True]
    r = Reassembler(with_lb_header=True)
    r.feed(bytes(raw) + bytes(1464), 0.0)
    assert r.counters.bad_headers == 0 and r.counters.events_recv == 1
    assert LBHeader(tick=1).encode()[4:6] == b"\0\0"  # and written as 0
    # the C core's check: tests/test_receiver_native.py::test_v2_reserved_field_ignored_like_the_reference
