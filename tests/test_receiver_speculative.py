"""Speculative direct placement of the native receiver (csrc/recv.c, rx_batch): when a socket is in the
middle of an event, the next receive scatters the payloads straight into the event buffer at the
offsets that consecutive equal fragments would have. Here every guess that can go wrong goes wrong:
interleaved events on one socket, out-of-order offsets, a wrong event / a bad header / a changed
length / a duplicate in a speculative slot, a datagram spilling past a slot clamped at the event's
end, short last fragments. The outcome (events byte for byte, counters) must be the pure reference's
(ejlb.shim.reassembly) fed the same datagrams in the same order.

Each step sends one UDP message (a GSO send of several segments, which GRO hands over as one buffer,
or one datagram) and waits until the receive thread has taken it, so every receive batch is exactly
that message and the prediction made from the previous one is what the test intends."""
import socket
import time
from dataclasses import fields

import pytest

from ejlb.shim.reassembly import ReassemblyCounters, Reassembler
from ejlb.shim.receiver import Receiver
from ejlb.sockopt import UDP_SEGMENT
from receiver_tools import datagrams, piece

F = 8000  # fragment payload: above the native SPEC_MIN_PAYLOAD, so placement is attempted
COUNTERS = tuple(f.name for f in fields(ReassemblyCounters))  # compared by name with the native core's


def rnd_bytes(n, seed):
    import random
    return random.Random(seed).randbytes(n)


class Link:
    """Sends one message per step (GSO when several segments) and waits until it was received."""

    def __init__(self, rx, with_lb):
        self.rx, self.with_lb, self.sent = rx, with_lb, 0
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.ref = Reassembler(with_lb_header=with_lb, timeout=60.0)
        self.ref_events = []

    def step(self, segs, placed=None):
        """segs: datagrams of one message (equal sizes, the last may be shorter). placed: expected
        number of them received in place (None: not checked)."""
        assert all(len(s) == len(segs[0]) for s in segs[:-1]) and len(segs[-1]) <= len(segs[0])
        before = self.rx.stats().placed
        addr = ("127.0.0.1", self.rx.base_port)
        if len(segs) > 1:
            self.tx.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, len(segs[0]))
            self.tx.sendto(b"".join(segs), addr)
            self.tx.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, 0)
        else:
            self.tx.sendto(segs[0], addr)
        self.sent += len(segs)
        end = time.monotonic() + 5
        while self.rx.stats().packets_recv < self.sent:
            assert time.monotonic() < end, "datagrams not received"
            time.sleep(0.002)
        for d in segs:
            self.ref_events += self.ref.feed(d, 0.0)
        if placed is not None and self.rx.gro_enabled():
            assert self.rx.stats().placed - before == placed

    def check(self):
        got = []
        while len(got) < len(self.ref_events):
            ev = self.rx.recv(timeout=5.0)
            got.append((ev.event_number, ev.data_id, ev.tobytes()))
        assert got == self.ref_events
        s = self.rx.stats()
        assert {k: getattr(s, k) for k in COUNTERS} == self.ref.counters.as_dict()
        self.tx.close()
        return s


@pytest.fixture(params=[True, False], ids=["lb", "re-only"])
def link(request):
    with Receiver(None, "127.0.0.1", 0, threads=1, with_lb_header=request.param, event_timeout=60.0) as rx:
        yield Link(rx, request.param)


def frags(payload, evn, did, with_lb):
    return datagrams(payload, event_number=evn, data_id=did, fragment=F, with_lb=with_lb)


def test_mispredicted_placement_matches_reference(link):
    lb = link.with_lb
    A = rnd_bytes(5 * F + 1234, 1)  # 6 fragments, the last short
    B = rnd_bytes(4 * F, 2)
    C = rnd_bytes(3 * F + 100, 3)  # same event number as A, another data_id
    a, b, c = frags(A, 7, 0, lb), frags(B, 8, 1, lb), frags(C, 7, 2, lb)
    link.step([a[0], a[1]], placed=0)  # nothing known yet; learns A, next offset 2F, 2 per buffer
    link.step([a[2], a[3]], placed=2)  # as predicted: straight into A's buffer
    link.step([a[4], b[0]], placed=0)  # another event in the second slot: all copied back
    link.step([b[2], b[1]], placed=0)  # predicted b1, got b2 first (out of order)
    link.step([a[5]], placed=0)  # B's next bytes are received already: no guess; A completes
    link.step([c[0], c[1]], placed=0)
    link.step([c[2], c[3]], placed=2)  # short last fragment in the last (clamped) slot; C completes
    link.step([b[3]], placed=0)  # B completes
    s = link.check()
    assert s.placed == 4 or not link.rx.gro_enabled()


def test_clamped_slot_spill_bad_header_length_change_duplicate(link):
    lb = link.with_lb
    D = rnd_bytes(2 * F + 500, 4)
    E = rnd_bytes(3 * F, 5)
    G = rnd_bytes(6 * F, 6)
    d, e, g = frags(D, 20, 0, lb), frags(E, 21, 0, lb), frags(G, 22, 3, lb)
    link.step([d[0], d[1]], placed=0)  # D: one 500-byte slot left, clamped at D's end
    link.step([e[0], e[1]], placed=0)  # a full datagram of E spills past the clamped slot
    link.step([d[2]], placed=0)  # predicted E at 2F, got D's short last fragment: D completes
    link.step([e[2]], placed=0)  # E completes
    link.step([g[0], g[1]], placed=0)
    wrong_len = piece(G, 2 * F, 3 * F, event_number=22, data_id=3, with_lb=lb, length=7 * F)
    link.step([wrong_len, g[2]], placed=0)  # length changed in the predicted slot: bad fragment
    garbage = b"\x00" * len(g[3])
    link.step([garbage, g[3]], placed=0)  # bad header in the predicted slot
    link.step([g[1]], placed=0)  # a duplicate where g4 was predicted
    link.step([g[4]], placed=0)  # prediction pointed at received bytes: no guess
    short = piece(G, 5 * F, 6 * F - 8, event_number=22, data_id=3, with_lb=lb)
    link.step([short], placed=1)  # right event and offset, shorter than the slot: in place
    # the rest right where that one ended, in a slot clamped to G's last 8 bytes: in place too
    link.step([piece(G, 6 * F - 8, 6 * F, event_number=22, data_id=3, with_lb=lb)], placed=1)
    link.check()


def test_interleaved_events_single_datagrams(link):
    lb = link.with_lb
    P = rnd_bytes(6 * F, 7)
    Q = rnd_bytes(6 * F - 3, 8)
    p, q = frags(P, 30, 0, lb), frags(Q, 31, 0, lb)
    for k in range(3):  # alternating: every guess (the other event) is wrong
        link.step([p[k]], placed=0)
        link.step([q[k]], placed=0)
    link.step([p[3]], placed=0)  # predicted q3 (Q's next), got p3
    link.step([p[4]], placed=1)  # one datagram per receive: one slot, hit
    link.step([p[5]], placed=1)  # P completes
    link.step([q[5]], placed=0)  # Q out of order: its last (short) fragment first
    link.step([q[3]], placed=0)  # nothing predicted (the previous one ended Q's data)
    link.step([q[4]], placed=1)  # slot [4F, 5F) lies between received runs: hit, Q completes
    link.check()


def test_placement_happens_on_a_real_stream(link):
    """A plain GSO stream of big events: most datagrams must land in place, events intact."""
    lb = link.with_lb
    events = [rnd_bytes(40 * F + 77, 100 + k) for k in range(4)]
    for n, payload in enumerate(events):
        ds = frags(payload, 40 + n, 0, lb)
        for k in range(0, len(ds), 7):
            link.step(ds[k:k + 7])
    s = link.check()
    if link.rx.gro_enabled():
        assert s.placed >= 0.8 * s.packets_recv
