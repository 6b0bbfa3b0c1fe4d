"""The C core builds headers byte-identical to ejlb.wire (one source of truth, proven)."""
from hypothesis import given, strategies as st

from ejlb.native import ffi, lib
from ejlb.wire import LBHeader, REHeader, SyncHeader

u16, u32, u64 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, (1 << 64) - 1)


@given(version=st.sampled_from([2, 3]), tick=u64, entropy=u16, slot=u16)
def test_lb_header_identical(version, tick, entropy, slot):
    buf = ffi.new("uint8_t[16]")
    lib.ejlb_put_lb(buf, version, tick, entropy, slot)
    expect = LBHeader(tick=tick, entropy=entropy, version=version, slot_select=slot if version == 3 else 0)
    assert bytes(buf) == expect.encode()


@given(data_id=u16, offset=u32, length=u32, evt=u64)
def test_re_header_identical(data_id, offset, length, evt):
    buf = ffi.new("uint8_t[20]")
    lib.ejlb_put_re(buf, data_id, offset, length, evt)
    assert bytes(buf) == REHeader(data_id, offset, length, evt).encode()


@given(src=u32, evt=u64, rate=u32, ns=u64)
def test_sync_header_identical(src, evt, rate, ns):
    buf = ffi.new("uint8_t[28]")
    lib.ejlb_put_sync(buf, src, evt, rate, ns)
    assert bytes(buf) == SyncHeader(src, evt, rate, ns).encode()
