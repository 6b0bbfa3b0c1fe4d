"""Sender -> Receiver end to end on loopback, back to back (LB header kept, no load balancer):
random-size events from 1 B to 16 MiB (log-uniform), MTU 1500 and 9000, several data_ids, every
byte checked, nothing lost."""
import threading

import numpy as np
import pytest

from ejlb.shim.receiver import Receiver
from ejlb.shim.sender import Sender

MAX_LEN = 16 << 20
POOL = np.random.default_rng(2026).integers(0, 256, MAX_LEN + 4096, dtype=np.uint8)


def plan(n, seed):
    """(event_number, data_id, offset into POOL, length) for n events; lengths log-uniform."""
    rng = np.random.default_rng(seed)
    lengths = np.exp(rng.uniform(0, np.log(MAX_LEN), n)).astype(np.int64)
    lengths[:2] = (1, MAX_LEN)  # both ends always
    offsets = rng.integers(0, 4096, n)
    data_ids = rng.choice([0, 7, 0xFFFF], n)
    return [(k, int(d), int(o), int(n_)) for k, (d, o, n_) in enumerate(zip(data_ids, offsets, lengths))]


def run(mtu, events, family="127.0.0.1", rate_gbps=4.0):
    with Receiver(None, family, 0, with_lb_header=True, queue_size=1024, rcvbuf=128 << 20) as rx:
        host = f"[{family}]" if ":" in family else family
        uri = f"ejfat://127.0.0.1:18008/lb/1?data={host}:{rx.base_port}"
        bad, seen = [], set()

        def check():
            for _ in range(len(events)):
                ev = rx.recv(timeout=10)
                k, did, off, n = events[ev.event_number]
                seen.add(ev.event_number)
                if ev.data_id != did or len(ev) != n or not np.array_equal(np.frombuffer(ev.payload, np.uint8),
                                                                             POOL[off:off + n]):
                    bad.append(ev.event_number)

        t = threading.Thread(target=check)
        t.start()
        with Sender(uri, mtu=mtu, sync=False, rate_gbps=rate_gbps, sndbuf=8 << 20) as tx:
            for k, did, off, n in events:
                tx.send(POOL[off:off + n], event_number=k, data_id=did)
        t.join(60)
        s = rx.stats()
        assert not t.is_alive(), s
        assert bad == [] and seen == set(range(len(events))), (s, tx.stats(), rx.lost_events()[:5])
        assert s.events_reassembled == s.events_dequeued == len(events)
        assert s.events_reassembly_err == s.event_enqueue_err == s.bad_headers == s.duplicates == 0
        return s


@pytest.mark.parametrize("mtu", [1500, 9000])
def test_1000_random_events_per_mtu_byte_exact(mtu):
    s = run(mtu, plan(1000, seed=mtu))
    assert s.packets_recv > 1000


def test_ipv6_back_to_back():
    try:
        s = run(9000, plan(50, seed=6), family="::1")
    except OSError as e:
        if "::1" in str(e) or e.errno in (97, 99):
            pytest.skip(f"no IPv6 loopback: {e}")
        raise
    assert s.events_recv == 50
