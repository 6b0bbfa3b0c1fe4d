"""XDP data plane (bpf/ejlb_xdp.c + dataplane/xdp.py) against the reference model.

The program runs in the kernel through BPF_PROG_TEST_RUN: every frame of the conformance corpus,
output bytes, verdict and counters compared with `model.process`. Tests that need the program skip,
naming what is missing (root, clang, libbpf, a kernel with BPF), on machines that cannot load it.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import random
import threading
import time
from collections import Counter

import pytest

from ejlb.dataplane import backends, corpus, model, xdp_image, xdp_layout
from ejlb.dataplane.tables import (
    UNASSIGNED,
    Counters,
    Drop,
    EpochRange,
    LBInstance,
    Member,
    Tables,
    TableError,
    diff,
)
from ejlb.wire import CALENDAR_SLOTS, LBHeader, REHeader

IP = ipaddress.ip_address
REPO = __import__("pathlib").Path(__file__).resolve().parent.parent
ETH_HLEN = 14


def test_generated_layout_header_is_current():
    text = (REPO / "bpf" / "ejlb_xdp_layout.h").read_text()
    assert text == xdp_layout.c_header(), "run: python -m ejlb.dataplane.xdp_layout > bpf/ejlb_xdp_layout.h"


# --- pure: tables -> map images --------------------------------------------------------------
def test_image_refuses_what_no_map_can_hold():
    t = corpus.tables()
    clash = dataclasses.replace(t, lbs={**t.lbs, 2: LBInstance(2, b"\x02" * 6, t.lbs[0].ipv4)})
    with pytest.raises(TableError, match=r"lbs\[2\]\.ipv4=127\.0\.10\.1: already the address of LB 0"):
        xdp_image.image(clash, 0)
    many = frozenset((0, IP(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")) for i in range(xdp_layout.MAX_SENDERS + 1))
    with pytest.raises(TableError, match=r"senders: 4097 entries, the XDP map holds 4096"):
        xdp_image.image(dataclasses.replace(t, senders=many), 0)


def test_image_changes_reach_the_target_and_keep_banks_apart():
    t = corpus.tables()
    img0, img1 = xdp_image.image(t, 0), xdp_image.image(t, 1)
    assert all(not (img0[m].keys() & img1[m].keys()) for m in img0 if img0[m])  # the bank is in every key
    smaller = dataclasses.replace(t, lbs={0: t.lbs[0]}, calendars={(0, 0): t.calendars[(0, 0)]},
                                  members={(0, 1): t.members[(0, 1)]}, senders=frozenset(list(t.senders)[:2]))
    state = {name: dict(v) for name, v in img0.items()}
    for name, key, value in xdp_image.changes(img0, xdp_image.image(smaller, 0)):
        if value is None:
            del state[name][key]
        else:
            state[name][key] = value
    target = xdp_image.image(smaller, 0)
    for name in xdp_image.HASH_MAPS:
        assert state[name] == target[name]
    for name in xdp_image.ARRAY_MAPS:  # removed entries hold the empty value, not stale data
        assert {k: v for k, v in state[name].items() if v != xdp_image.EMPTY[name]} == target[name]


def test_egress_names_a_bad_interface():
    from ejlb.dataplane import xdp

    with pytest.raises(ValueError, match=r"egress\[10.0.0.0/8\]='no-such-if0': no such interface"):
        xdp._egress_function({"10.0.0.0/8": "no-such-if0"})
    with pytest.raises(ValueError, match=r"egress network='10.0.0.0/33'"):
        xdp._egress_function({"10.0.0.0/33": "lo"})
    f = xdp._egress_function({"127.0.0.0/8": "lo", "127.0.20.0/24": "lo"})
    assert f(IP("127.0.20.1")) == f(IP("127.1.2.3")) > 0 and f(IP("10.0.0.1")) == 0 and f(IP("::1")) == 0


# --- the loaded program ------------------------------------------------------------------------
def _open(**kw):
    from ejlb.dataplane.xdp import XDPError, XDPLB

    try:
        return XDPLB(**kw)
    except XDPError as e:
        pytest.skip(f"XDP data plane unavailable here: {e}")


@pytest.fixture
def lb():
    b = _open(pass_other=False)
    yield b
    b.close()


def _nonzero(c: Counters) -> dict:
    out = {("glob", k): v for k, v in c.glob.items() if v}
    out.update({("lb", lb, k): v for lb, d in c.lb.items() for k, v in d.items() if v})
    out.update({("member", m, k): v for m, d in c.member.items() for k, v in d.items() if v})
    return out


def _verdict(r: model.Result, pass_other: bool = False) -> int:
    from ejlb.dataplane.xdp import XDP_DROP, XDP_PASS, XDP_TX

    if r.forwarded:
        return XDP_TX
    return XDP_PASS if pass_other and r.lb_id is None else XDP_DROP


def test_corpus_oracle_bytes_verdicts_and_counters(lb):
    """All 10 000 corpus frames through the program: verdict, output frame and every counter equal
    the model's. Frames shorter than an Ethernet header cannot be handed to BPF_PROG_TEST_RUN (the
    kernel refuses them, and no NIC delivers them); they are checked to be refused and left out."""
    from ejlb.dataplane.xdp import XDPError

    t = corpus.tables()
    lb.apply(diff(Tables(), t))
    want = Counters()
    kinds = Counter()
    for i, (frame, r) in enumerate(corpus.frames(10_000, seed=1)):
        if len(frame) < ETH_HLEN:
            assert r.verdict == Drop.PARSE_FAIL
            with pytest.raises(XDPError, match="Invalid argument"):
                lb.run(frame)
            kinds["runt"] += 1
            continue
        verdict, out = lb.run(frame)
        assert verdict == _verdict(r), (i, r)
        assert out == (r.frame if r.forwarded else frame), (i, r)
        r.add_to(want)
        if r.forwarded:
            p = model.parse(frame)
            kinds["ipv6" if p.ip_version == 6 else "ipv4"] += 1
            kinds["vlan"] += p.l3 == 18
            kinds["keep"] += t.members[(r.lb_id, r.member_id)].keep_lb_header
            kinds["jumbo"] += len(frame) > 3000
            kinds["no_udp_csum"] += p.udp_checksum == 0
        kinds[r.verdict.name] += 1
    assert _nonzero(lb.counters()) == _nonzero(want)
    assert all(kinds[d.name] for d in Drop), kinds  # every verdict occurred
    assert min(kinds["ipv6"], kinds["vlan"], kinds["keep"], kinds["jumbo"], kinds["no_udp_csum"]) >= 50, kinds


def test_frames_of_no_lb_go_to_the_stack_when_asked():
    from ejlb.dataplane.xdp import XDP_PASS

    b = _open(pass_other=True)
    try:
        b.apply(diff(Tables(), corpus.tables()))
        seen = Counter()
        for frame, r in corpus.frames(2000, seed=3):
            if len(frame) < ETH_HLEN:
                continue
            verdict, out = b.run(frame)
            assert verdict == _verdict(r, pass_other=True) and out == (r.frame if r.forwarded else frame)
            seen[verdict] += 1
        assert seen[XDP_PASS] > 100
        assert b.counters().glob["drop_parse_fail"] > 0
    finally:
        b.close()


def test_members_behind_another_interface_are_redirected():
    """In a namespace of its own with an interface d0: BPF_PROG_TEST_RUN's frames come in on
    that namespace's loopback, so members routed to d0 are redirected and the others sent back."""
    import os
    import subprocess
    import sys

    from ejlb.dataplane.xdp import XDP_REDIRECT, XDP_TX

    sys.path.insert(0, os.path.dirname(__file__))
    from e2e_netns_tools import netns_available
    from netns_thread import InNetns

    why = netns_available()
    if why:
        pytest.skip(why)
    ns = f"ejx{os.getpid()}-redirect"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "d0", "type", "veth", "peer", "name", "d1"], check=True)
        with InNetns(ns):
            b = _open(pass_other=False, egress={"127.0.20.0/24": "d0"})
        t = corpus.tables()
        b.apply(diff(Tables(), t))
        seen = Counter()
        for frame, r in corpus.frames(2000, seed=4):
            if len(frame) < ETH_HLEN or not r.forwarded:
                continue
            member_ip = t.members[(r.lb_id, r.member_id)].ip
            verdict, out = b.run(frame)
            assert out == r.frame
            assert verdict == (XDP_REDIRECT if member_ip in ipaddress.ip_network("127.0.20.0/24") else XDP_TX)
            seen[verdict] += 1
        assert seen[XDP_REDIRECT] > 50 and seen[XDP_TX] > 50
        b.close()
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _frame(tick: int, entropy: int = 7, src="127.0.1.1", dst="127.0.10.1", version=2) -> bytes:
    lbh = LBHeader(tick=tick, entropy=entropy, version=version, slot_select=tick & 0xFFFF if version == 3 else 0)
    data = lbh.encode() + REHeader(1, 0, 4, 9).encode() + b"abcd"
    return corpus.build_frame(IP(src), IP(dst), data)


def _swap_tables(k: int) -> Tables:
    """Tables whose every part differs between k = 0 and 1: any mix of the two (calendar of one,
    member or LB entry of the other) produces a frame that neither would."""
    lb = LBInstance(0, bytes([2, 0, 0, 0, 0xA0, k]), IP("127.0.10.1"))
    members = {(0, m): Member(IP(f"127.0.{20 + k}.{m + 1}"), 20000 + 1000 * k + 10 * m, mac=bytes([2, 0, 0, 0, k, m]))
               for m in range(2)}
    return Tables(
        lbs={0: lb},
        senders=frozenset({(0, IP("127.0.1.1"))}),
        epochs={(0, k): EpochRange(0, None)},
        calendars={(0, k): (k,) * CALENDAR_SLOTS},
        members=members,
    )


def test_table_swaps_under_traffic_are_atomic(lb):
    """One thread flips between two table sets as fast as it can while frames run on another CPU:
    every output is exactly one set's answer."""
    sets = [_swap_tables(0), _swap_tables(1)]
    frames = [_frame(tick) for tick in range(1000, 1064)]
    answers = [{f: model.process(t, f).frame for f in frames} for t in sets]
    assert all(answers[0][f] != answers[1][f] for f in frames)
    lb.apply(diff(Tables(), sets[0]))
    stop, flips, errors = threading.Event(), [0], []

    def flipper():
        try:
            while not stop.is_set():
                k = flips[0] % 2
                lb.apply(diff(sets[k], sets[1 - k]))
                flips[0] += 1
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    th = threading.Thread(target=flipper)
    th.start()
    seen = Counter()
    deadline = time.monotonic() + 30
    try:
        i = 0
        while flips[0] < 25 and time.monotonic() < deadline:
            f = frames[i % len(frames)]
            i += 1
            _, out = lb.run(f)
            k = 0 if out == answers[0][f] else 1 if out == answers[1][f] else None
            assert k is not None, f"torn tables: frame {i} after {flips[0]} flips"
            seen[k] += 1
    finally:
        stop.set()
        th.join()
    assert not errors, errors
    assert flips[0] >= 25 and seen[0] > 100 and seen[1] > 100, (flips, seen)


def _random_tables(rng: random.Random) -> Tables:
    """A random corner of the corpus tables: LBs, epochs, calendars, members and senders dropped,
    moved or changed, so that a sequence of them exercises every kind of map write and delete."""
    t = corpus.tables()
    lbs = {i: v for i, v in t.lbs.items() if rng.random() < 0.8}
    epochs = {k: (EpochRange(rng.randrange(0, 3000), None) if rng.random() < 0.2 else v)
              for k, v in t.epochs.items() if rng.random() < 0.8}
    calendars = {k: tuple(UNASSIGNED if rng.random() < 0.1 else m for m in v) if rng.random() < 0.5 else v
                 for k, v in t.calendars.items() if rng.random() < 0.8}
    members = {k: dataclasses.replace(v, base_port=v.base_port - rng.randrange(2), keep_lb_header=rng.random() < 0.5)
               if rng.random() < 0.3 else v for k, v in t.members.items() if rng.random() < 0.8}
    senders = frozenset(s for s in t.senders if rng.random() < 0.8)
    return Tables(lbs=lbs, senders=senders, epochs=epochs, calendars=calendars, members=members)


def test_apply_sequences_of_diffs(lb):
    """Twenty random table changes in a row (the two banks lag each other by one apply): after
    each, the program answers every sample frame as the model does with the installed tables."""
    rng = random.Random(13)
    frames = [f for f, _ in corpus.frames(600, seed=5) if len(f) >= ETH_HLEN]
    current = Tables()
    for step in range(20):
        new = corpus.tables() if step % 5 == 4 else _random_tables(rng)
        lb.apply(diff(current, new))
        current = new
        assert lb.installed == new
        for f in frames:
            r = model.process(new, f)
            verdict, out = lb.run(f)
            assert (verdict, out) == (_verdict(r), r.frame if r.forwarded else f), (step, r)


def test_a_bad_rule_is_refused_and_the_tables_stay(lb):
    t = corpus.tables()
    lb.apply(diff(Tables(), t))
    clash = dataclasses.replace(t, lbs={**t.lbs, 2: LBInstance(2, b"\x02" * 6, ipv6=t.lbs[1].ipv6)})
    with pytest.raises(TableError, match=r"lbs\[2\]\.ipv6=fd00:ec::11:1"):
        lb.apply(diff(t, clash))
    assert lb.installed == t
    for frame, r in corpus.frames(300, seed=6):
        if len(frame) >= ETH_HLEN:
            assert lb.run(frame)[1] == (r.frame if r.forwarded else frame)


def test_registered_as_a_backend():
    from ejlb.dataplane.xdp import XDPError, XDPLB

    assert "xdp" in backends.names()
    try:
        b = backends.create_backend("xdp", None, pass_other=False)
    except XDPError as e:
        pytest.skip(f"XDP data plane unavailable here: {e}")
    try:
        assert isinstance(b, XDPLB) and b.installed == Tables()
    finally:
        b.close()


def test_unknown_interface_is_named():
    from ejlb.dataplane.xdp import XDPError

    _open().close()  # skips where XDP cannot load at all
    with pytest.raises(XDPError, match=r"interface='no-such-if0': no such interface"):
        backends.create_backend("xdp", None, interface="no-such-if0")
