"""A set of byte ranges: sorted, disjoint, non-touching [start, end) intervals (as aioquic's
rangeset.py). The reassembly reference keeps the received bytes of each event in one; the native
core's twin is csrc/ivset.c, and tests/test_rangeset.py checks both against a plain set of bytes.
Pure: no I/O, no ejlb imports.
"""
from __future__ import annotations

import bisect


class RangeSet:
    __slots__ = ("ranges",)

    def __init__(self) -> None:
        self.ranges: list[list[int]] = []  # sorted, disjoint, non-touching [start, end)

    def add(self, start: int, end: int) -> int:
        """Adds [start, end) (start < end); returns how many of its bytes were not in the set."""
        spans = self.ranges
        i = bisect.bisect_left([s[1] for s in spans], start)  # first range ending at or after start
        j = i
        covered = 0
        while j < len(spans) and spans[j][0] <= end:
            covered += max(0, min(end, spans[j][1]) - max(start, spans[j][0]))
            j += 1
        if i == j:
            spans.insert(i, [start, end])
        else:
            spans[i:j] = [[min(start, spans[i][0]), max(end, spans[j - 1][1])]]
        return (end - start) - covered

    def gap_end(self, at: int, limit: int) -> int:
        """End of the run of missing bytes from `at` (at most `limit`); 0 when `at` is in the set."""
        i = bisect.bisect_right([s[1] for s in self.ranges], at)  # first range ending after `at`
        if i == len(self.ranges):
            return limit
        return 0 if self.ranges[i][0] <= at else self.ranges[i][0]

    def __len__(self) -> int:
        return len(self.ranges)

    def __iter__(self):
        return (tuple(s) for s in self.ranges)
