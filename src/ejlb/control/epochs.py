"""Epochs: boundary prediction from sync samples, the ring of 4 live epochs, and their tick ranges
and LPM prefixes. Pure.

A new epoch takes effect at the event number predicted for now + LEAD_S, so the tables are
installed before any tick of the new epoch arrives and in-flight events keep the old calendar.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ejlb.dataplane.tables import NUM_EPOCHS, TICK_MAX, EpochRange
from ejlb.wire import TICK_RATE_HZ

LEAD_S = 0.8
MAX_SAMPLES = 10  # kept per reservation; also bounds what a sender can make us store
MAX_SAMPLE_AGE_S = 60.0
TICK_BITS = 64


@dataclass(frozen=True)
class SyncSample:
    recv_time: float  # control-plane clock, s
    event_number: int
    rate_hz: int
    src_id: int = 0  # SEED_SRC marks the reserve-time seed


SEED_SRC = -1  # never a real sender: event_src_id is a u32


def seed_sample(now: float) -> SyncSample:
    """Reserve seeds µs-timestamp ticks so an LB works before the first sync packet."""
    return SyncSample(now, int(now * TICK_RATE_HZ), TICK_RATE_HZ, SEED_SRC)


def _clamp(x: float) -> int:
    return int(min(max(x, 0), TICK_MAX))


def predict(samples: Sequence[SyncSample], at: float) -> int | None:
    """Event number expected at control-plane time `at`; None without samples.
    The reserve-time seed is ignored as soon as a real sample exists.

    With a rate in the newest sample: extrapolate from it. With rate 0: least squares through the
    last ≤ MAX_SAMPLES samples at most MAX_SAMPLE_AGE_S old (one sample: its event number)."""
    if not samples:
        return None
    real = [s for s in samples if s.src_id != SEED_SRC]
    samples = real or list(samples)  # the seed only stands in until a sender speaks
    newest = max(reversed(samples), key=lambda s: s.recv_time)  # ties: the latest arrival
    if newest.rate_hz > 0:
        return _clamp(newest.event_number + newest.rate_hz * (at - newest.recv_time))
    recent = sorted((s for s in samples if newest.recv_time - s.recv_time <= MAX_SAMPLE_AGE_S),
                    key=lambda s: s.recv_time)[-MAX_SAMPLES:]
    t = np.array([s.recv_time for s in recent], dtype=np.float64)
    e = np.array([float(s.event_number) for s in recent], dtype=np.float64)
    if len(recent) < 2 or np.ptp(t) == 0:
        return newest.event_number
    t0, e0 = t[-1], e[-1]  # centre on the newest sample: µs ticks need float64 headroom
    slope, intercept = np.polyfit(t - t0, e - e0, 1)
    return _clamp(e0 + intercept + max(slope, 0.0) * (at - t0))


# -- screening sync samples from allowed senders -----------------------------------------------------
# An allowed sender can still send absurd samples (a bug, or a compromised host). Each sample is
# judged against the line of the accepted samples taken at a reference sample at least REF_GAP_S
# older, so a burst shorter than that is judged against the line from before it and cannot walk
# it a little per sample. Rejected: a rate beyond MAX_RATE_HZ or off the line's by RATE_FACTOR, an
# event number off the line beyond the tolerance (so also "rate 0 with a jump"). Down-weighted: an
# accepted sample without a rate keeps the slope observed since the reference (or the line's rate),
# so a few close samples cannot tilt the least-squares fit. A sender that really restarted (new
# event numbers or rate) shows as CONFIRM rejected samples agreeing with each other over
# ≥ CONFIRM_S with no accepted sample in between; that new line replaces the old one.
# Not caught: an allowed sender that lies consistently for longer than REF_GAP_S can walk the line
# by up to the tolerance per REF_GAP_S (telling it from a drifting genuine sender needs per-sender
# lines).
MAX_RATE_HZ = 1_000_000_000  # ns ticks: no tick clock runs faster
RATE_FACTOR = 2.0  # a claimed rate within [r/2, 2r] of the line's rate r
JITTER_S = 0.25  # tolerance: arrival jitter, in seconds of ticks at the line's rate,
DRIFT = 0.1  # plus this fraction of the time since the reference (the line's rate is an estimate),
FLOOR_TICKS = 1000  # plus this much at any rate (low rates, rounding)
REF_GAP_S = 1.0  # the default sync period
CONFIRM = 3
CONFIRM_S = 2.0

ACCEPTED, RESTARTED, REJECTED_RATE, REJECTED_JUMP = "accepted", "restarted", "rejected_rate", "rejected_jump"
OUTCOMES = (ACCEPTED, RESTARTED, REJECTED_RATE, REJECTED_JUMP)


def _line_rate(samples: Sequence[SyncSample]) -> float | None:
    """Ticks per second of the line through `samples` (the newest one's rate, else the fitted slope)."""
    newest = max(reversed(samples), key=lambda s: s.recv_time)
    if newest.rate_hz > 0:
        return float(newest.rate_hz)
    if len(samples) < 2:
        return None
    at = newest.recv_time
    return max(float((predict(samples, at + 1.0) or 0) - (predict(samples, at) or 0)), 0.0)


def tolerance(rate: float, dt: float) -> float:
    """How far (ticks) a sample dt s after the reference may sit off a line of `rate` ticks/s."""
    return FLOOR_TICKS + rate * (JITTER_S + DRIFT * dt)


def judge(samples: Sequence[SyncSample], s: SyncSample) -> tuple[str | None, SyncSample]:
    """(None, the sample as to be kept) when `s` fits the accepted `samples`, else (REJECTED_RATE
    or REJECTED_JUMP, s). With no real sample yet, or only a line older than MAX_SAMPLE_AGE_S,
    any sample of a physical rate fits."""
    if s.rate_hz > MAX_RATE_HZ:
        return REJECTED_RATE, s
    real = [x for x in samples if x.src_id != SEED_SRC and x.recv_time <= s.recv_time]
    older = [x for x in real if x.recv_time <= s.recv_time - REF_GAP_S]
    ref = older or sorted(real, key=lambda x: x.recv_time)[:1]
    if not ref:
        return None, s
    anchor = max(ref, key=lambda x: x.recv_time)
    dt = s.recv_time - anchor.recv_time
    rate = _line_rate(ref)
    if rate is None or dt > MAX_SAMPLE_AGE_S:
        return None, s
    if s.rate_hz > 0 and rate > 0 and not rate / RATE_FACTOR <= s.rate_hz <= rate * RATE_FACTOR:
        return REJECTED_RATE, s
    if abs(s.event_number - predict(ref, s.recv_time)) > tolerance(rate, dt):
        return REJECTED_JUMP, s
    if s.rate_hz == 0 and rate > 0:
        seen = (s.event_number - predict(ref, anchor.recv_time)) / dt if older else rate
        s = SyncSample(s.recv_time, s.event_number, int(round(min(max(seen, 0.0), MAX_RATE_HZ))), s.src_id)
    return None, s


def screen(samples: Sequence[SyncSample], suspects: Sequence[SyncSample],
           s: SyncSample) -> tuple[str, tuple[SyncSample, ...]]:
    """(outcome, samples) for a new sample. ACCEPTED: add the one returned (maybe down-weighted) and
    forget the suspects. RESTARTED: the returned samples, `s` last, are a confirmed new line that
    replaces `samples`. Rejected: the returned samples are the suspects (a candidate new line) to
    pass with the next sample."""
    why, kept = judge(samples, s)
    if why is None:
        return ACCEPTED, (kept,)
    if s.rate_hz > MAX_RATE_HZ:
        return why, tuple(suspects)  # never part of any line
    line = (*suspects, s) if suspects and judge(suspects, s)[0] is None else (s,)
    line = line[-CONFIRM:]
    if len(line) >= CONFIRM and line[-1].recv_time - line[0].recv_time >= CONFIRM_S:
        return RESTARTED, line
    return why, line


def max_shift(rate: float, dt: float) -> float:
    """Bound on how far samples accepted within REF_GAP_S after the reference move the prediction for
    dt s after the reference + LEAD_S, off a line of `rate` ticks/s: the newest is within the
    tolerance, and its rate (claimed, or observed over ≥ REF_GAP_S) is off by at most
    max((RATE_FACTOR - 1)·rate, tolerance / REF_GAP_S)."""
    tol = tolerance(rate, dt)
    return tol + max((RATE_FACTOR - 1) * rate, tol / REF_GAP_S) * (dt + LEAD_S)


def next_boundary(samples: Sequence[SyncSample], now: float, previous: int | None) -> int:
    """Start tick of a new epoch: predicted for now + LEAD_S, strictly after the previous boundary."""
    b = predict(samples, now + LEAD_S)
    if b is None:
        b = int((now + LEAD_S) * TICK_RATE_HZ)
    if previous is not None and b <= previous:
        b = min(previous + 1, TICK_MAX)
    return b


@dataclass(frozen=True)
class Epoch:
    seq: int  # epochs ever started by this reservation; the table's epoch id is seq mod 4
    boundary: int
    calendar: tuple[int, ...]

    @property
    def epoch_id(self) -> int:
        return self.seq % NUM_EPOCHS


def advance(live: Sequence[Epoch], boundary: int, calendar: Sequence[int]) -> tuple[Epoch, ...]:
    """The live epochs after starting a new one (the oldest falls out beyond NUM_EPOCHS)."""
    seq = live[-1].seq + 1 if live else 0
    return (*live, Epoch(seq, boundary, tuple(calendar)))[-NUM_EPOCHS:]


def ranges(live: Sequence[Epoch]) -> dict[int, EpochRange]:
    """epoch id → tick range: [b_i, b_{i+1}) for older epochs; the newest from its boundary on and
    catch-all (it also takes ticks older than the oldest boundary)."""
    out = {}
    for older, newer in zip(live, live[1:]):
        out[older.epoch_id] = EpochRange(older.boundary, newer.boundary)
    if live:
        out[live[-1].epoch_id] = EpochRange(live[-1].boundary, None, catch_all=True)
    return out


def range_prefixes(start: int, end: int, bits: int = TICK_BITS) -> list[tuple[int, int]]:
    """[start, end) as the fewest aligned prefixes (value, prefix_len), in ascending order."""
    out = []
    while start < end:
        size = (start & -start) if start else (1 << bits)
        while size > end - start:
            size >>= 1
        out.append((start, bits - size.bit_length() + 1))
        start += size
    return out


def lpm_entries(live: Sequence[Epoch], bits: int = TICK_BITS) -> list[tuple[int, int, int]]:
    """FPGA-style epoch table: (value, prefix_len, epoch id). The newest epoch is the /0 default;
    each older epoch's range overrides it with longer prefixes, so longest-prefix match on a tick
    gives the same epoch as `ranges`."""
    if not live:
        return []
    out = [(0, 0, live[-1].epoch_id)]
    for older, newer in zip(live, live[1:]):
        out += [(v, n, older.epoch_id) for v, n in range_prefixes(older.boundary, newer.boundary, bits)]
    return out


def lpm_lookup(entries: Sequence[tuple[int, int, int]], tick: int, bits: int = TICK_BITS) -> int | None:
    """Reference longest-prefix match over `lpm_entries` (for tests and the reference model)."""
    best, best_len = None, -1
    for value, length, epoch in entries:
        shift = bits - length
        if (tick >> shift) == (value >> shift) and length > best_len:
            best, best_len = epoch, length
    return best
