"""Sender -> raw datagrams captured on loopback, decoded with ejlb.wire (and scapy): exactly the spec."""
import errno
import gc
import socket
import threading
import time
import tracemalloc

import numpy as np
import pytest

from ejlb.errors import ArgumentError, FieldError
from ejlb.shim.sender import Sender, SenderClosed, SendQueueFull
from ejlb.wire import HEADERS_LEN, MAX_EVENT_LEN, WireError, fragment_headers
from sender_tools import Capture, events_of


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


ipv6_only = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this host")
RNG = np.random.default_rng(3)


def payloads(fragment: int) -> list[bytes]:
    sizes = [0, 1, fragment - 1, fragment, fragment + 1, 3 * fragment, 100_000, 1 << 20]
    return [RNG.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]


@pytest.mark.parametrize("gso", ["on", "off"])
@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("::1", marks=ipv6_only)])
def test_events_arrive_exactly_per_spec(host, version, gso):
    with Capture(host) as cap, Sender(cap.uri(), data_id=9, lb_version=version, gso=gso, sync=False) as s:
        sent = payloads(s.layout.fragment)
        numbers = [s.send(p) for p in sent]
        assert numbers == list(range(len(sent)))
        dgrams = cap.take(sum(s.layout.datagrams(len(p)) for p in sent))
        st = s.stats()
    assert st.gso == (gso == "on")
    assert {d.re.data_id for d in dgrams} == {9}
    got = events_of(dgrams, fragment=s.layout.fragment, version=version)
    assert got == dict(enumerate(sent))
    ticks = [next(d.lb.tick for d in dgrams if d.re.event_number == n) for n in numbers]
    assert ticks == sorted(set(ticks))  # one tick per event, strictly increasing
    assert abs(ticks[-1] - time.time_ns() // 1000) < 60_000_000  # µs since the epoch
    assert st.events == len(sent) and st.datagrams == len(dgrams) and st.send_errors == 0
    assert st.bytes == sum(len(d.data) for d in dgrams) == sum(s.layout.udp_bytes(len(p)) for p in sent)
    assert max(len(d.data) for d in dgrams) == s.layout.segment
    ip_udp = 48 if host == "::1" else 28
    assert s.layout.segment + ip_udp == 1500


@pytest.mark.parametrize("mtu", [1500, 9000])
def test_gso_on_off_and_copy_modes_give_identical_datagrams(mtu):
    # 3 MiB + 7: more datagrams than one native batch holds (1024), so a batch boundary falls
    # inside a GSO super-datagram's worth of fragments
    events = [RNG.integers(0, 256, n, dtype=np.uint8) for n in (0, 5, 70_000, 300_001, (3 << 20) + 7)]
    captured = []
    for opts in ({"gso": "on"}, {"gso": "off"}, {"gso": "on", "zero_copy": False}):
        with Capture() as cap, Sender(cap.uri(), mtu=mtu, sync=False, sockets=1, **opts) as s:
            for k, ev in enumerate(events):
                s.send(ev, event_number=1000 + k, tick=555 + k, entropy=k)
            n = sum(s.layout.datagrams(ev.nbytes) for ev in events)
            dgrams = cap.take(n)
            assert len(dgrams) == n
            assert events_of(dgrams, fragment=s.layout.fragment) == {1000 + k: ev.tobytes() for k, ev in enumerate(events)}
            for k, ev in enumerate(events):  # header bytes exactly as ejlb.wire lays them out
                heads = sorted(d.data[:HEADERS_LEN] for d in dgrams if d.re.event_number == 1000 + k)
                want = fragment_headers(ev.nbytes, s.layout.fragment, tick=555 + k, entropy=k, data_id=0,
                                        event_number=1000 + k).view(np.uint8).reshape(-1, HEADERS_LEN)
                assert heads == sorted(row.tobytes() for row in want)
            captured.append(sorted(d.data for d in dgrams))
    assert captured[0] == captured[1] == captured[2]


def test_any_buffer_is_sent_as_its_bytes():
    arr = np.arange(10_000, dtype=np.float64)
    bufs = [
        arr,
        np.arange(6000, dtype=">i2").reshape(60, 100),
        memoryview(bytes(range(256)) * 30)[7:5000],
        bytearray(b"x" * 3333),
        arr[2000:4000],  # a contiguous slice: zero-copy from inside another array
    ]
    with Capture() as cap, Sender(cap.uri(), sync=False) as s:
        for b in bufs:
            s.send(b)
        got = events_of(cap.take(sum(s.layout.datagrams(memoryview(b).nbytes) for b in bufs)), fragment=s.layout.fragment)
    assert got == {k: memoryview(b).tobytes() for k, b in enumerate(bufs)}


@pytest.mark.parametrize("gso", ["on", "off"])
def test_send_many_shares_system_calls(gso):
    fragment = 1436
    events = [bytes([k]) * (k * 97) for k in range(200)]  # 0 B .. 19 kB
    with Capture() as cap, Sender(cap.uri(), data_id=2, gso=gso, sync=False) as s:
        assert s.send_many(events[:100]) == list(range(100))
        assert s.send(b"single") == 100
        assert s.send_many(events[100:], data_id=6) == list(range(101, 201))
        n = sum(s.layout.datagrams(len(e)) for e in events) + 1
        dgrams = cap.take(n)
        st = s.stats()
    got = events_of(dgrams, fragment=fragment)
    assert got == {**dict(enumerate(events[:100])), 100: b"single",
                   **{101 + k: e for k, e in enumerate(events[100:])}}
    assert {d.re.data_id for d in dgrams if d.re.event_number > 100} == {6}
    assert st.events == 201 and st.datagrams == n
    assert st.syscalls < (n if gso == "off" else 201) / 8  # batched, not one call per event


@pytest.mark.parametrize("gso", ["on", "off"])
def test_runs_of_equal_small_events_share_gso_super_datagrams(gso):
    # one batch: 60 x 1000 B and a shorter one that ends the run; then 2 x 1000 B and an empty one
    events = [bytes([k]) * 1000 for k in range(60)] + [b"s" * 500] + [b"a" * 1000, b"b" * 1000, b""]
    with Capture() as cap, Sender(cap.uri(), gso=gso, sync=False) as s:
        s.send_many(events)
        dgrams = cap.take(len(events))
        st = s.stats()
    assert events_of(dgrams, fragment=1436) == dict(enumerate(events))
    assert st.datagrams == len(events) and st.syscalls == 1
    assert st.messages == (len(events) if gso == "off" else 2)


@pytest.mark.parametrize("seed", range(4))
def test_random_batches_gso_on_and_off_agree(seed):
    """Runs of equal and unequal datagrams, events across batch boundaries: GSO grouping must
    never change what arrives (RE header and fragment bytes; LB tick/entropy are per run)."""
    rng = np.random.default_rng(seed)
    menu = [0, 1, 35, 36, 1000, 1000, 1000, 1435, 1436, 1437, 2872, 2873]
    sizes = [int(rng.choice(menu)) if rng.random() < 0.8 else int(rng.integers(0, 40_000)) for _ in range(150)]
    events = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]
    seen = []
    for gso in ("on", "off"):
        with Capture() as cap, Sender(cap.uri(), gso=gso, sync=False) as s:
            s.send_many(events)
            dgrams = cap.take(sum(s.layout.datagrams(n) for n in sizes))
        assert events_of(dgrams, fragment=1436) == dict(enumerate(events))
        seen.append(sorted(d.data[16:] for d in dgrams))
    assert seen[0] == seen[1]


def test_caller_supplied_numbering_and_data_id():
    with Capture() as cap, Sender(cap.uri(), data_id=1, lb_version=3, sync=False) as s:
        assert s.send(b"a" * 3000, event_number=77, tick=0x1_2345_6789, entropy=0xBEEF, data_id=4) == 77
        assert s.send(b"b") == 78
        dgrams = cap.take(4)
    first = [d for d in dgrams if d.re.event_number == 77]
    assert len(first) == 3
    for d in first:
        assert (d.lb.tick, d.lb.entropy, d.lb.slot_select, d.re.data_id) == (0x1_2345_6789, 0xBEEF, 0x6789, 4)
    (second,) = [d for d in dgrams if d.re.event_number == 78]
    assert second.re.data_id == 1 and second.lb.tick > 0x1_2345_6789


@pytest.mark.parametrize("version", [2, 3])
def test_scapy_dissects_the_datagrams(version):
    scapy = pytest.importorskip("ejlb.scapy")
    tick = 0x1_0000_0063
    with Capture() as cap, Sender(cap.uri(), data_id=3, lb_version=version, sync=False) as s:
        s.send(b"hello" * 400, event_number=5, tick=tick, entropy=0xAB)
        dgrams = cap.take(2)
    pkts = sorted((scapy.LB(d.data) for d in dgrams), key=lambda p: p[scapy.RE].offset)
    slot = 0x63 if version == 3 else 0
    assert [(p.magic, p.tick, p.entropy, p.version, p.slot_select, p.next_proto) for p in pkts] == [
        (b"LB", tick, 0xAB, version, slot, 1)] * 2
    assert [(p[scapy.RE].version, p[scapy.RE].reserved, p[scapy.RE].reserved2) for p in pkts] == [(1, 0, 0)] * 2
    assert [(p[scapy.RE].offset, p[scapy.RE].length, p[scapy.RE].data_id, p[scapy.RE].event_number) for p in pkts] == [
        (0, 2000, 3, 5), (1436, 2000, 3, 5)]
    assert b"".join(bytes(p[scapy.RE].payload) for p in pkts) == b"hello" * 400


def test_events_rotate_over_source_sockets_and_destination_port_range():
    with Capture(nports=4) as cap, Sender(cap.uri(), sockets=3, sync=False) as s:
        for k in range(12):
            s.send(b"x" * 2000, event_number=k)
        dgrams = cap.take(24)
        sports = s.source_ports
    assert len(set(sports)) == 3
    first = {d.re.event_number: (d.sport, d.dport) for d in dgrams}
    assert [first[k][0] for k in range(12)] == sports * 4
    assert [first[k][1] for k in range(12)] == [cap.port + k % 4 for k in range(12)]
    events_of(dgrams, fragment=1436)  # every fragment of an event used the same ports


@pytest.mark.parametrize(
    "event, exc, words",
    [
        (np.arange(100)[::2], TypeError, "C-contiguous"),
        ("text", TypeError, "str"),
        ([1, 2, 3], TypeError, "list"),
        (12, TypeError, "int"),
    ],
)
def test_bad_events_raise_clear_errors(event, exc, words):
    with Capture() as cap, Sender(cap.uri(), sync=False) as s:
        with pytest.raises(exc, match=words):
            s.send(event)
        with pytest.raises(exc, match=words):
            s.submit(event)
        assert s.stats().events == 0


def test_event_over_4gib_is_refused():
    huge = np.zeros(MAX_EVENT_LEN + 1, np.uint8)  # calloc'ed: pages are never touched
    with Capture() as cap, Sender(cap.uri(), sync=False) as s:
        with pytest.raises(WireError, match="event.length"):
            s.send(huge)
        assert s.stats().events == 0


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"mtu": 9001}, "mtu"), ({"mtu": 64}, "mtu"), ({"mtu": "big"}, "mtu"),
        ({"lb_version": 4}, "lb_version"), ({"data_id": 1 << 16}, "data_id"),
        ({"event_src_id": -1}, "event_src_id"), ({"sockets": 0}, "sockets"), ({"gso": "maybe"}, "gso"),
        ({"rate_gbps": 0}, "rate_gbps"), ({"rate_gbps": "fast"}, "rate_gbps"),
        ({"sync_period": 11}, "sync_period"), ({"queue_size": 0}, "queue_size"), ({"sndbuf": -5}, "sndbuf"),
    ],
)
def test_bad_options_name_the_field(kw, field):
    uri = "ejfat://lb.example:18347/lb/1?data=127.0.0.1:19522&sync=127.0.0.1:19523"
    threads = threading.active_count()
    with pytest.raises(FieldError) as e:
        Sender(uri, **kw)
    assert e.value.field == field
    # header fields are wire errors; options (rate, queue, socket buffer, ...) argument errors
    wire_fields = {"lb_version", "data_id", "event_src_id"}
    assert isinstance(e.value, WireError if field in wire_fields else ArgumentError), type(e.value)
    assert threading.active_count() == threads  # nothing left running


def test_bad_per_event_values_name_the_field():
    with Capture() as cap, Sender(cap.uri(), sync=False) as s:
        for kw, field in [({"event_number": -1}, "event_number"), ({"entropy": 70000}, "entropy"),
                          ({"tick": "now"}, "tick"), ({"data_id": 1 << 16}, "data_id")]:
            for call in (s.send, s.submit):
                with pytest.raises(WireError) as e:
                    call(b"x", **kw)
                assert e.value.field == field
        assert s.send(b"ok") == 0  # nothing was numbered by the refusals
        assert len(cap.take(1)) == 1


def test_uri_from_the_environment(monkeypatch):
    with Capture() as cap:
        monkeypatch.setenv("EJFAT_URI", cap.uri())
        with Sender(None, sync=False) as s:
            s.send(b"env")
        assert cap.take(1)[0].fragment == b"env"


def test_uri_without_data_address_is_an_error():
    from ejlb.uri import URIError

    with pytest.raises(URIError, match="data"):
        Sender("ejfat://lb.example:18347/lb/1?sync=127.0.0.1:19523")


def test_submit_futures_callbacks_and_close_drains_the_queue():
    done = []
    with Capture() as cap:
        s = Sender(cap.uri(), sync=False, queue_size=16)
        futs = [s.submit(bytes([k]) * 3000, callback=done.append) for k in range(200)]
        s.close()  # returns only when every queued event went out
        assert all(f.done() for f in futs)
        assert [f.result() for f in futs] == list(range(200))
        assert len(done) == 200
        got = events_of(cap.take(600), fragment=1436)
    assert got == {k: bytes([k]) * 3000 for k in range(200)}
    assert s.stats().events == 200
    with pytest.raises(SenderClosed):
        s.send(b"late")
    with pytest.raises(SenderClosed):
        s.submit(b"late")
    s.close()  # idempotent


def test_flush_waits_for_everything_submitted():
    with Capture() as cap, Sender(cap.uri(), sync=False, rate_gbps=0.002) as s:  # 250 kB/s
        assert s.flush(timeout=0)  # nothing submitted yet
        futs = [s.submit(bytes(5000)) for _ in range(10)]  # ~20 ms each after the first
        assert not s.flush(timeout=0.01)
        assert s.flush(timeout=5)
        assert all(f.done() for f in futs)
        assert len(events_of(cap.take(40), fragment=1436)) == 10


def test_close_from_a_callback_does_not_deadlock():
    with Capture() as cap:
        s = Sender(cap.uri(), sync=False)
        closed = threading.Event()
        s.submit(b"first", callback=lambda f: (s.close(), closed.set())).result(timeout=5)
        assert closed.wait(5)
        with pytest.raises(SenderClosed):
            s.send(b"late")
        assert len(cap.take(1)) == 1


def test_full_queue_blocks_with_timeout_or_fails_at_once():
    # 20 kB events at 1 Mb/s: the first leaves at once, each next one 160 ms later
    with Capture() as cap:
        s = Sender(cap.uri(), sync=False, queue_size=2, rate_gbps=0.001)
        ev = bytes(20_000)
        futs = [s.submit(ev)]
        futs[0].result(timeout=5)  # sent at once; the next one is due 160 ms later
        futs.append(s.submit(ev))
        while s.stats().queued:  # the worker took it and sleeps
            time.sleep(0.001)
        futs += [s.submit(ev, block=False), s.submit(ev, block=False)]  # fills the queue
        with pytest.raises(SendQueueFull):
            s.submit(ev, block=False)
        t0 = time.monotonic()
        with pytest.raises(SendQueueFull):
            s.submit(ev, timeout=0.02)
        assert time.monotonic() - t0 >= 0.02
        s.close()
        assert [f.result() for f in futs] == [0, 1, 2, 3]
        assert len(events_of(cap.take(4 * 14), fragment=1436)) == 4


def test_kernel_refusals_are_counted_not_raised():
    # IPv4 broadcast without SO_BROADCAST: the kernel refuses every datagram with EACCES
    with Sender("ejfat://lb.example:18347/lb/1?data=255.255.255.255:19522", sync=False) as s:
        s.send(b"x" * 5000)
        s.send(b"")
        st = s.stats()
    assert (st.events, st.datagrams, st.send_errors, st.last_errno) == (2, 0, 5, errno.EACCES)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_memory_stays_flat_over_100k_events():
    """Python objects (tracemalloc) and the whole process (RSS, which sees the C core too)."""
    with Capture(rcvbuf=1 << 20) as cap, Sender(cap.uri(), sync=False, queue_size=256) as s:
        ev = bytes(200)
        for _ in range(5000):  # warm up caches and free lists
            s.send(ev)
            s.submit(ev)
        s.submit(ev).result(timeout=10)
        rss = _rss()
        tracemalloc.start()
        gc.collect()  # futures may sit in reference cycles until the collector runs: that is no leak
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(50_000):
            s.send(ev)
            s.submit(ev)
        s.submit(ev).result(timeout=10)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        rss_grown = _rss() - rss
        assert s.stats().events == 110_002
    assert grown < 256 * 1024, f"{grown} bytes of Python objects still held after 100 000 events"
    assert rss_grown < 4 << 20, f"RSS grew by {rss_grown} bytes over 100 000 events"



@ipv6_only
def test_family_picks_the_data_address_and_sndbuf_is_applied():
    with Capture("::1") as cap:
        uri = f"ejfat://lb.example:18347/lb/1?data=127.0.0.1:19522&data=[::1]:{cap.port}"
        with Sender(uri, family=6, sndbuf=4 << 20, sync=False) as s:
            assert str(s.data_address.ip) == "::1"
            assert all(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 4 << 20 for sock in s._socks)
            s.send(b"v6")
            (d,) = cap.take(1)
    assert d.fragment == b"v6"


def test_native_context_refuses_bad_arguments():
    from ejlb.native import ffi, lib

    v4 = bytes([127, 0, 0, 1])
    good = (socket.AF_INET, v4, 0, 2, 1436, 44, 1, 0)
    tx = lib.ejlb_tx_new(*good)
    assert tx != ffi.NULL
    lib.ejlb_tx_free(tx)
    for k, bad in [(0, 12345), (3, 4), (4, 0), (5, 0), (5, 65), (4, 8936)]:  # 8936 x 44: > 64 KiB
        args = list(good)
        args[k] = bad
        assert lib.ejlb_tx_new(*args) == ffi.NULL, (k, bad)


def test_the_gil_is_released_while_the_kernel_takes_an_event():
    """Another Python thread runs in the middle of one long native send."""
    stamps, stop = [], threading.Event()

    def spin():
        while not stop.is_set():
            stamps.append(time.perf_counter())
            for _ in range(1000):
                pass

    big = np.ones(32 << 20, np.uint8)
    with Capture(rcvbuf=1 << 20) as cap, Sender(cap.uri(), gso="off", sync=False, sockets=1) as s:
        t = threading.Thread(target=spin)
        t.start()
        time.sleep(0.01)
        t0 = time.perf_counter()
        s.send(big)  # ~23 000 datagrams: tens of ms in the kernel
        t1 = time.perf_counter()
        stop.set()
        t.join()
        cap.take(timeout=0)
    # the Python part of send() takes microseconds; a thread that ran in the middle half of the
    # call ran while the native code was sending
    lo, hi = t0 + (t1 - t0) / 4, t1 - (t1 - t0) / 4
    assert t1 - t0 > 0.01 and any(lo < x < hi for x in stamps), (t1 - t0, len(stamps))


def test_no_descriptor_or_thread_leaks_over_many_senders():
    import os

    def fds():
        return len(os.listdir("/proc/self/fd"))

    with Capture() as cap:
        uri = cap.uri(sync=f"127.0.0.1:{cap.port}")
        with Sender(uri, sync_period=0.01) as s:  # warm up lazy imports and caches
            s.submit(b"x").result(timeout=5)
        before_fds, before_threads = fds(), threading.active_count()
        for _ in range(30):
            with Sender(uri, sockets=4, sync_period=0.01) as s:
                s.send(b"x")
                s.submit(b"y").result(timeout=5)
        assert fds() == before_fds
        assert threading.active_count() == before_threads


@pytest.mark.parametrize("host, ip_udp", [("127.0.0.1", 28), ("::1", 48)])
def test_auto_mtu_caps_host_loopback_at_9000(host, ip_udp):
    try:
        cap = Capture(host)
    except OSError:
        pytest.skip(f"no {host} loopback address on this host")
    with cap, Sender(cap.uri(), mtu="auto", sync=False) as s:
        assert s.layout.mtu == 9000  # loopback says 65536; deployed tools stop at 9000
        s.send(bytes(20_000))
        assert max(len(d.data) for d in cap.take(3)) == 9000 - ip_udp


def test_package_exports_the_sender():
    import ejlb

    assert ejlb.Sender is Sender
