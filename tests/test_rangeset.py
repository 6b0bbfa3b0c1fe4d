"""The interval set of received bytes on its own (as aioquic tests rangeset.py): the Python
RangeSet (ejlb.shim.rangeset, used by the reassembly reference) and the native ejlb_ivset
(csrc/ivset.c, used by the receiver) against a plain set of byte offsets."""
from hypothesis import given, settings
from hypothesis import strategies as st

from ejlb.native import ffi, lib
from ejlb.shim.rangeset import RangeSet

LIMIT = 200
spans = st.lists(st.tuples(st.integers(0, LIMIT - 1), st.integers(1, 40)), max_size=60)


class Native:
    def __init__(self, grow=ffi.NULL):
        self.set = ffi.new("ejlb_ivset *")
        lib.ejlb_ivset_init(self.set)
        self.grow = grow

    def add(self, s, e):
        return lib.ejlb_ivset_add(self.set, s, e, self.grow, ffi.NULL)

    def ranges(self):
        return [(self.set.iv[k].s, self.set.iv[k].e) for k in range(self.set.n)]

    def gap_end(self, at, limit):
        return lib.ejlb_ivset_gap_end(self.set, at, limit)

    def free(self):
        lib.ejlb_ivset_free(self.set)


def as_ranges(offsets):
    out = []
    for b in sorted(offsets):
        if out and out[-1][1] == b:
            out[-1][1] += 1
        else:
            out.append([b, b + 1])
    return [tuple(r) for r in out]


@settings(max_examples=300)
@given(spans)
def test_add_counts_new_bytes_and_keeps_ranges_canonical(adds):
    py, c, truth = RangeSet(), Native(), set()
    try:
        for start, n in adds:
            end = min(start + n, LIMIT)
            fresh = len(set(range(start, end)) - truth)
            truth |= set(range(start, end))
            assert py.add(start, end) == fresh
            assert c.add(start, end) == fresh
            assert list(py) == c.ranges() == as_ranges(truth)  # sorted, disjoint, non-touching
        for at in range(0, LIMIT + 1, 7):
            missing_end = next((b for b in range(at, LIMIT) if b in truth), LIMIT)
            expect = 0 if at in truth else missing_end
            assert py.gap_end(at, LIMIT) == c.gap_end(at, LIMIT) == expect
    finally:
        c.free()


def test_growth_asks_first_and_a_refusal_changes_nothing():
    asked = []

    @ffi.callback("int(void *, int64_t)")
    def refuse(ctx, nbytes):
        asked.append(nbytes)
        return -1

    c = Native(refuse)
    for k in range(lib.EJLB_IVSET_INLINE):  # disjoint ranges fill the inline room without asking
        assert c.add(10 * k, 10 * k + 1) == 1
    before = c.ranges()
    assert c.add(100, 101) == -1
    assert c.ranges() == before and asked == [lib.EJLB_IVSET_INLINE * ffi.sizeof("ejlb_iv")]
    assert c.add(1, 10) == 9  # merging needs no room
    c.free()
