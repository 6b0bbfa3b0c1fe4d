"""Sender -> lossy relay -> Receiver: a relay between the real Sender and the Receiver drops,
duplicates and reorders datagrams, and remembers what it forwarded. The receiver must deliver
exactly the events that arrived whole, byte-exact, and report every other one as lost with exactly
the fragments and bytes that reached it."""
import random
import socket
import time

import numpy as np

from ejlb.shim.receiver import Receiver
from ejlb.shim.sender import Sender
from ejlb.wire import LB_HEADER_LEN, RE_HEADER_LEN, REHeader


def test_lossy_path_reports_exactly_what_was_lost():
    rnd = random.Random(9)
    pool = np.random.default_rng(9).integers(0, 256, 1 << 20, dtype=np.uint8)
    plan = [(rnd.randrange(1 << 19), int(np.exp(rnd.uniform(0, np.log(200_000))))) for _ in range(120)]
    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    relay.bind(("127.0.0.1", 0))
    relay.settimeout(0.5)
    with relay, Receiver(None, "127.0.0.1", 0, with_lb_header=True, event_timeout=0.3) as rx:
        with Sender(f"ejfat://relay:18000/lb/1?data=127.0.0.1:{relay.getsockname()[1]}", mtu=1500, sync=False,
                    rate_gbps=1.0) as tx:
            for k, (off, n) in enumerate(plan):
                tx.send(pool[off:off + n], event_number=k)
        received = []
        try:
            while True:
                received.append(relay.recv(65536))
        except socket.timeout:
            pass
        expected_frags = sum(max(1, -(-n // 1436)) for _, n in plan)
        assert len(received) == expected_frags  # loopback into a big buffer: the relay saw all

        forwarded: dict[int, dict[int, int]] = {}  # event -> offset -> fragment length
        out, duplicates = [], 0
        for d in received:
            r = rnd.random()
            if r < 0.03:
                continue  # dropped
            re = REHeader.decode(d[LB_HEADER_LEN:LB_HEADER_LEN + RE_HEADER_LEN])
            seen = forwarded.setdefault(re.event_number, {})
            out.append(d)
            if r > 0.97:
                duplicates += 1
                out.append(d)
            seen[re.offset] = len(d) - LB_HEADER_LEN - RE_HEADER_LEN
        for i in range(0, len(out), 16):  # reorder within windows of 16
            window = out[i:i + 16]
            rnd.shuffle(window)
            out[i:i + 16] = window
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for d in out:
                s.sendto(d, ("127.0.0.1", rx.base_port))

        whole = {k for k, (_, n) in enumerate(plan) if sum(forwarded.get(k, {}).values()) == n}
        got = {}
        for _ in whole:
            ev = rx.recv(timeout=5)
            got[ev.event_number] = ev
        assert set(got) == whole
        for k, ev in got.items():
            off, n = plan[k]
            assert np.array_equal(np.frombuffer(ev.payload, np.uint8), pool[off:off + n])
        partial = {k: (len(f), sum(f.values())) for k, f in forwarded.items() if k not in whole}
        assert len(partial) > 10 and len(whole) > 10, (len(partial), len(whole))
        deadline = time.monotonic() + 5
        while rx.stats().lost < len(partial) and time.monotonic() < deadline:
            time.sleep(0.02)
        lost = {e.event_number: (e.fragments, e.bytes) for e in rx.lost_events()}
        assert lost == partial
        s = rx.stats()
        assert (s.lost, s.evicted, s.bad_headers, s.bad_fragments) == (len(partial), 0, 0, 0)
        assert s.duplicates == duplicates
        assert s.packets_recv == len(out)
