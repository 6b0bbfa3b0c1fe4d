"""ejlb.Receiver on real UDP sockets (loopback), driven by a test sender that crafts datagrams with
ejlb.wire: reordering, duplication, loss, overlap, malformed storms, timeouts, caps, shutdown."""
import gc
import random
import socket
import threading
import time

import numpy as np
import pytest

from ejlb import sendstate
from ejlb.errors import ArgumentError
from ejlb.shim.receiver import Receiver, ReceiverClosed, ReceiverConfig, ReceiverStats
from receiver_tools import datagrams, piece, send_all


def wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def events_of(rnd, n, max_len=50_000, data_ids=(0, 1, 2)):
    return [(k, rnd.choice(data_ids), rnd.randbytes(rnd.choice([0, 1, rnd.randrange(max_len)]))) for k in range(n)]


def collect(rx, n, timeout=10.0):
    out, end = {}, time.monotonic() + timeout
    while len(out) < n:
        ev = rx.recv(timeout=max(0.0, end - time.monotonic()))
        out[(ev.event_number, ev.data_id)] = ev.tobytes()
    return out


@pytest.fixture
def rx():
    with Receiver(None, "127.0.0.1", 0, with_lb_header=True) as r:
        yield r


def test_events_arrive_byte_exact_with_totals(rx):
    rnd = random.Random(5)
    evs = events_of(rnd, 60)
    for evn, did, payload in evs:
        send_all(datagrams(payload, event_number=evn, data_id=did, fragment=rnd.choice([100, 1436, 8936])),
                 ("127.0.0.1", rx.base_port))
    got = collect(rx, len(evs))
    assert got == {(evn, did): p for evn, did, p in evs}
    s = rx.stats()
    assert s.events_recv == s.events_reassembled == s.events_dequeued == len(evs)
    assert s.events_reassembly_err == s.event_enqueue_err == s.bad_headers == 0
    assert s.totals() == {k: getattr(s, k) for k in sendstate.NAMES}
    assert s.columns() == {"total_" + k: getattr(s, k) for k in sendstate.NAMES}


def test_ipv6_and_plain_recvmmsg_without_gro():
    try:
        rx = Receiver(None, "::1", 0, gro=False)
    except OSError as e:
        pytest.skip(f"no IPv6 loopback: {e}")
    with rx:
        assert not rx.gro_enabled()
        payload = random.Random(1).randbytes(30_000)
        send_all(datagrams(payload, event_number=3, fragment=1416, with_lb=False), ("::1", rx.base_port),
                 family=socket.AF_INET6)
        ev = rx.recv(timeout=5)
        assert (ev.event_number, ev.tobytes()) == (3, payload)
        assert rx.stats().gro_buffers == 0


@pytest.mark.parametrize("threads, port_range", [(2, 2), (1, 4), (3, 3)])
def test_threads_spread_over_ports(threads, port_range):
    with Receiver(None, "127.0.0.1", 0, threads=threads, port_range=port_range) as rx:
        assert len(rx.ports) == 1 << port_range
        payloads = {}
        for k, port in enumerate(rx.ports):
            payloads[(k, 0)] = bytes([k]) * 5000
            send_all(datagrams(payloads[(k, 0)], event_number=k, fragment=1000, with_lb=False), ("127.0.0.1", port))
        assert collect(rx, len(rx.ports)) == payloads


def test_reorder_duplicates_overlap_and_loss_over_udp():
    rnd = random.Random(7)
    with Receiver(None, "127.0.0.1", 0, event_timeout=0.2) as rx:
        whole = {}
        dgrams = []
        for evn in range(20):
            payload = rnd.randbytes(rnd.randrange(1, 40_000))
            ds = datagrams(payload, event_number=evn, data_id=1, fragment=1000, with_lb=False)
            ds += rnd.sample(ds, k=min(3, len(ds)))  # duplicates
            a = rnd.randrange(len(payload))
            ds.append(piece(payload, a, min(len(payload), a + 1500), event_number=evn, data_id=1, with_lb=False))
            rnd.shuffle(ds)  # first fragment often arrives late
            whole[(evn, 1)] = payload
            dgrams += ds
        lossy = rnd.randbytes(10_000)
        lossy_frags = datagrams(lossy, event_number=99, data_id=4, fragment=1000, with_lb=False)
        dgrams += lossy_frags[:4] + lossy_frags[5:]  # fragment 4 lost
        send_all(dgrams, ("127.0.0.1", rx.base_port))
        assert collect(rx, 20) == whole
        assert wait_for(lambda: rx.stats().lost == 1)
        s = rx.stats()
        assert s.duplicates >= 20 and s.events_reassembly_err == 1
        lost = rx.lost_events()
        assert [(e.event_number, e.data_id, e.fragments, e.bytes, e.reason) for e in lost] == [(99, 4, 9, 9000, "timeout")]
        with pytest.raises(TimeoutError):
            rx.recv(timeout=0.05)


def test_malformed_storm_only_moves_counters():
    rnd = random.Random(11)
    with Receiver(None, "127.0.0.1", 0, with_lb_header=True, max_pending_bytes=8 << 20) as rx:
        addr = ("127.0.0.1", rx.base_port)
        good = {}
        for evn in range(30):
            payload = rnd.randbytes(rnd.randrange(0, 20_000))
            good[(evn, 0)] = payload
            valid = datagrams(payload, event_number=evn, fragment=1436)
            v = valid[0]
            storm = [rnd.randbytes(rnd.randrange(0, 200)) for _ in range(20)]
            storm += [v[:rnd.randrange(36)] for _ in range(5)]  # truncated headers
            storm.append(piece(payload + b"xx", len(payload), len(payload) + 2, event_number=evn,
                               length=len(payload)))  # offset beyond length
            storm.append(piece(b"x" * 100, 0, 100, event_number=evn + 2000, length=0xFFFFFFFF))  # huge claim
            storm.append(piece(b"y" * 100, 0, 100, event_number=evn + 3000, length=50))  # beyond length
            mixed = valid + storm
            rnd.shuffle(mixed)
            send_all(mixed, addr)
        assert collect(rx, len(good)) == good
        s = rx.stats()
        # random bytes are never valid LB+RE headers (p ~ 2^-40); the storm may trail the last event
        assert wait_for(lambda: rx.stats().bad_headers == 30 * 25 and rx.stats().bad_fragments == 30 * 3)
        s = rx.stats()
        assert (s.bad_headers, s.bad_fragments) == (30 * 25, 30 * 3)
        assert (s.events_recv, s.events_reassembled, s.lost, s.evicted) == (30, 30, 0, 0)


def test_eviction_bounds_pending_bytes():
    with Receiver(None, "127.0.0.1", 0, max_pending_bytes=1 << 20, event_timeout=5) as rx:
        addr = ("127.0.0.1", rx.base_port)
        for evn in range(8):  # 8 half-sent 300 kB events: only 3 fit 1 MiB
            send_all(datagrams(bytes(300_000), event_number=evn, fragment=8000, with_lb=False)[:10], addr)
        assert wait_for(lambda: rx.stats().evicted == 5)
        assert [e.event_number for e in rx.lost_events()] == [0, 1, 2, 3, 4]
        assert {e.reason for e in rx.lost_events()} == {"evicted"}
        payload = b"z" * 500_000  # a new event still fits after evicting more
        send_all(datagrams(payload, event_number=100, fragment=8000, with_lb=False), addr)
        assert rx.recv(timeout=5).tobytes() == payload


def test_queue_full_counts_enqueue_errors_and_fill():
    with Receiver(None, "127.0.0.1", 0, queue_size=3) as rx:
        for evn in range(7):
            send_all(datagrams(b"e%d" % evn, event_number=evn, with_lb=False), ("127.0.0.1", rx.base_port))
        assert wait_for(lambda: rx.stats().events_reassembled == 7)
        s = rx.stats()
        assert s.event_enqueue_err == 4 and rx.fill() == 1.0
        assert [rx.recv_nowait().event_number for _ in range(3)] == [0, 1, 2]
        assert rx.recv_nowait() is None and rx.fill() == 0.0


def test_payload_is_zero_copy_and_outlives_the_receiver():
    rx = Receiver(None, "127.0.0.1", 0)
    arr = np.arange(100_000, dtype=np.float32)
    send_all(datagrams(arr.tobytes(), event_number=1, fragment=8000, with_lb=False), ("127.0.0.1", rx.base_port))
    ev = rx.recv(timeout=5)
    view = np.frombuffer(ev.payload, np.float32)
    rx.close()
    del rx, ev
    gc.collect()
    np.testing.assert_array_equal(view, arr)


def test_close_wakes_a_blocked_recv_and_iteration_ends():
    rx = Receiver(None, "127.0.0.1", 0)
    result = []
    t = threading.Thread(target=lambda: result.append(list(rx)))
    t.start()
    time.sleep(0.3)
    rx.close()
    t.join(5)
    assert not t.is_alive() and result == [[]]
    with pytest.raises(ReceiverClosed):
        rx.recv(timeout=1)
    rx.close()  # idempotent


def test_shutdown_under_load():
    rx = Receiver(None, "127.0.0.1", 0, threads=2, port_range=1, queue_size=64)
    stop = threading.Event()
    frames = [datagrams(bytes(20_000), event_number=n, fragment=1436, with_lb=False) for n in range(50)]

    def blast(port):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not stop.is_set():
                for ds in frames:
                    for d in ds:
                        s.sendto(d, ("127.0.0.1", port))

    def consume():
        try:
            for _ in rx:
                pass
        except ReceiverClosed:
            pass

    workers = [threading.Thread(target=blast, args=(p,)) for p in rx.ports] + [threading.Thread(target=consume)]
    for w in workers:
        w.start()
    assert wait_for(lambda: rx.stats().events_dequeued > 10)
    t0 = time.monotonic()
    rx.close()
    closing = time.monotonic() - t0
    stop.set()
    for w in workers:
        w.join(5)
        assert not w.is_alive()
    assert closing < 2.0  # a hang, not a speed check: threads must see the stop promptly
    s = rx.stats()
    assert s.packets_recv > 0 and s.bad_headers == 0


@pytest.mark.parametrize("kw, field", [
    (dict(ip="localhost"), "ip"), (dict(threads=0), "threads"), (dict(port_range=15), "port_range"),
    (dict(threads=3, port_range=1), "threads"), (dict(event_timeout=0), "event_timeout"),
    (dict(queue_size=0), "queue_size"), (dict(max_pending_bytes=10), "max_pending_bytes"),
    (dict(weight=-1), "weight"), (dict(pid=(1, 2)), "pid"), (dict(base_port=65535, port_range=2), "base_port"),
    (dict(register=True), "register"),
])
def test_bad_arguments_name_the_field(kw, field):
    args = dict(ip="127.0.0.1", base_port=0) | kw
    with pytest.raises(ValueError, match=field):
        Receiver(None, args.pop("ip"), args.pop("base_port"), **args)


def test_config_object_and_keywords_are_the_same_options():
    cfg = ReceiverConfig(threads=2, queue_size=8)
    assert cfg.ports_bits == 1
    with Receiver(None, "127.0.0.1", 0, cfg) as a, Receiver(None, "127.0.0.1", 0, threads=2, queue_size=8) as b:
        assert a.config == b.config == cfg and a.ports == range(a.base_port, a.base_port + 2)
    with Receiver(None, "127.0.0.1", 0, cfg, queue_size=4) as c:  # keywords on top of a config
        assert c.config.queue_size == 4 and c.config.threads == 2
    with pytest.raises(TypeError, match="nonsense"):
        Receiver(None, "127.0.0.1", 0, nonsense=1)
    with pytest.raises(ArgumentError, match="threads"):
        ReceiverConfig(threads=3, port_range=1)  # refused before any socket exists


def test_port_in_use_names_the_port():
    with Receiver(None, "127.0.0.1", 0) as rx:
        with pytest.raises(OSError, match=str(rx.base_port)):
            Receiver(None, "127.0.0.1", rx.base_port)


def test_stats_type():
    assert ReceiverStats().totals() == dict.fromkeys(ReceiverStats().totals(), 0)
    assert ReceiverStats().cpu_ns == 0  # added last, with a default: positional order unchanged


def test_cpu_ns_counts_the_receive_threads_while_they_run(rx):
    payload = random.Random(2).randbytes(200_000)
    before = rx.stats().cpu_ns
    for evn in range(20):
        send_all(datagrams(payload, event_number=evn, fragment=8936), ("127.0.0.1", rx.base_port))
    collect(rx, 20)
    after = rx.stats().cpu_ns  # threads still running: the figure is current, not only at stop
    assert after > before
    assert after < 10e9  # nanoseconds, not a garbage value


def test_byte_cap_is_shared_by_the_threads():
    with Receiver(None, "127.0.0.1", 0, threads=2, port_range=1, max_pending_bytes=1 << 20, event_timeout=5) as rx:
        a, b = (("127.0.0.1", p) for p in rx.ports)
        one, two = b"1" * 900_000, b"2" * 900_000
        frags_one = datagrams(one, event_number=1, fragment=8000, with_lb=False)
        send_all(frags_one[:50], a)  # one thread holds 900 kB of the 1 MiB, more than half
        assert wait_for(lambda: rx.stats().events_recv == 1)
        send_all(datagrams(two, event_number=2, fragment=8000, with_lb=False), b)  # does not fit now
        assert wait_for(lambda: rx.stats().bad_fragments == 113)
        send_all(frags_one[50:], a)
        assert rx.recv(timeout=5).tobytes() == one
        send_all(datagrams(two, event_number=2, fragment=8000, with_lb=False), b)  # fits again
        assert rx.recv(timeout=5).tobytes() == two
        assert rx.stats().evicted == 0


def test_lost_log_is_bounded_to_the_newest():
    with Receiver(None, "127.0.0.1", 0, event_timeout=0.05, lost_log_size=4) as rx:
        for evn in range(10):
            send_all([piece(bytes(100), 0, 50, event_number=evn, with_lb=False)], ("127.0.0.1", rx.base_port))
        assert wait_for(lambda: rx.stats().lost == 10)
        assert [e.event_number for e in rx.lost_events()] == [6, 7, 8, 9]
        assert all((e.fragments, e.bytes, e.length) == (1, 50, 100) for e in rx.lost_events())


def test_a_flood_of_new_partial_events_stays_within_the_event_cap():
    with Receiver(None, "127.0.0.1", 0, max_pending_events=64, event_timeout=30) as rx:
        flood = [piece(bytes(1000), 0, 10, event_number=n, data_id=n & 0xFFFF, with_lb=False) for n in range(5000)]
        send_all(flood, ("127.0.0.1", rx.base_port))
        assert wait_for(lambda: rx.stats().events_recv == 5000)
        s = rx.stats()
        assert (s.evicted, s.lost, s.events_reassembled) == (5000 - 64, 0, 0)
        assert len(rx.lost_events()) == 1024  # the log keeps the newest lost_log_size entries
        assert rx.lost_events()[-1].event_number == 5000 - 64 - 1
        payload = b"still fine"
        send_all(datagrams(payload, event_number=1 << 40, with_lb=False), ("127.0.0.1", rx.base_port))
        assert rx.recv(timeout=5).tobytes() == payload


def test_event_buffer_returns_to_the_pool_when_the_last_view_dies():
    from ejlb.native import lib
    from ejlb.shim.receiver import trim_buffer_pool

    with Receiver(None, "127.0.0.1", 0) as rx:
        trim_buffer_pool()
        assert lib.ejlb_buf_pooled_bytes() == 0
        send_all(datagrams(bytes(100_000), event_number=1, fragment=8000, with_lb=False), ("127.0.0.1", rx.base_port))
        ev = rx.recv(timeout=5)
        view = np.frombuffer(ev.payload, np.uint8)
        before = lib.ejlb_buf_pooled_bytes()
        del ev
        gc.collect()
        assert lib.ejlb_buf_pooled_bytes() == before  # the numpy view still holds the buffer
        del view
        gc.collect()
        assert lib.ejlb_buf_pooled_bytes() == before + (1 << 17)  # its size class: 128 KiB


def test_recv_many_takes_what_is_ready():
    with Receiver(None, "127.0.0.1", 0) as rx:
        for evn in range(10):
            send_all(datagrams(b"m%d" % evn, event_number=evn, with_lb=False), ("127.0.0.1", rx.base_port))
        assert wait_for(lambda: rx.stats().events_reassembled == 10)
        first = rx.recv_many(4, timeout=1)
        rest = rx.recv_many(100, timeout=1)
        assert [e.event_number for e in first + rest] == list(range(10)) and len(first) == 4
        assert [e.tobytes() for e in rest] == [b"m%d" % n for n in range(4, 10)]
        assert rx.stats().events_dequeued == 10
        with pytest.raises(TimeoutError):
            rx.recv_many(timeout=0.05)
        with pytest.raises(ValueError, match="max_events"):
            rx.recv_many(0)
    with pytest.raises(ReceiverClosed):
        rx.recv_many(timeout=1)


def test_fake_first_fragments_do_not_evict_events_still_arriving():
    """Issue 16 on real sockets: genuine events in flight, each run of their fragments followed by
    a burst of fake first fragments claiming new 10 kB events, at a byte cap of 20 such events."""
    size, frag = 10_000, 1000
    payloads = {n: random.Random(n).randbytes(size) for n in range(10)}
    frags = {n: datagrams(p, event_number=n, fragment=frag, with_lb=False) for n, p in payloads.items()}
    with Receiver(None, "127.0.0.1", 0, max_pending_bytes=20 * (size + 256), event_timeout=30) as rx:
        addr, fake = ("127.0.0.1", rx.base_port), 1000
        for k in range(0, size // frag, 2):
            send_all([d for n in payloads for d in frags[n][k:k + 2]], addr)
            send_all([piece(bytes(frag), 0, frag, event_number=f, length=size, with_lb=False)
                      for f in range(fake, fake + 50)], addr)
            fake += 50
        assert collect(rx, 10) == {(n, 0): p for n, p in payloads.items()}  # every genuine event whole
        assert wait_for(lambda: rx.stats().events_recv == 10 + 250)
        s = rx.stats()
        assert s.evicted == s.evicted_byte_cap == 250 - 20 and s.evicted_event_cap == 0 and s.lost == 0
        assert all(e.event_number >= 1000 and e.reason == "evicted" for e in rx.lost_events())
