"""Sender -> software load balancer -> two Receivers on loopback. Equal small events share GSO
super-datagrams across events, and consecutive events carry consecutive ticks, so the LB must split
each coalesced buffer per datagram and send alternate events to alternate workers (calendar
slots alternate between two members): every event still arrives whole at exactly one worker."""
import ipaddress
import random
import threading

import numpy as np
import pytest

from ejlb.dataplane import software
from ejlb.dataplane.tables import EpochRange, LBInstance, Member, Tables, diff
from ejlb.shim.receiver import Receiver
from ejlb.shim.sender import Sender

IP = ipaddress.ip_address
LB_IP, WORKER_IP = "127.0.21.1", "127.0.21.3"


def _tables(ports: list[int]) -> Tables:
    return Tables(
        lbs={0: LBInstance(0, b"\x02" * 6, IP(LB_IP))},
        senders=frozenset({(0, IP("127.0.0.1"))}),  # the sender's unbound sockets use 127.0.0.1
        epochs={(0, 0): EpochRange(0, None)},
        calendars={(0, 0): tuple(slot % 2 for slot in range(512))},  # even ticks -> 0, odd -> 1
        members={(0, k): Member(IP(WORKER_IP), port, 0) for k, port in enumerate(ports)},
    )


@pytest.mark.parametrize("gso", ["on", "off"])
def test_events_through_the_software_lb_reach_one_worker_each(gso):
    rng = np.random.default_rng(21)
    small = [rng.integers(0, 256, 1000, dtype=np.uint8).tobytes() for _ in range(600)]
    large = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (0, 1, 5000, 300_000)]
    lb_port = random.randint(30000, 32000)
    got: dict[int, list] = {0: [], 1: []}
    with Receiver(None, WORKER_IP, 0, queue_size=4096, rcvbuf=32 << 20) as r0, \
            Receiver(None, WORKER_IP, 0, queue_size=4096, rcvbuf=32 << 20) as r1, \
            software.SoftwareLB(ports={0: (lb_port, lb_port)}) as lb:
        lb.apply(diff(Tables(), _tables([r0.base_port, r1.base_port])))
        total = len(small) + len(large)
        done = threading.Event()

        def drain(k, rx):
            while not done.is_set():
                try:
                    ev = rx.recv(timeout=0.2)
                except TimeoutError:
                    continue
                got[k].append((ev.event_number, ev.tobytes()))
                if len(got[0]) + len(got[1]) == total:
                    done.set()

        threads = [threading.Thread(target=drain, args=kr) for kr in ((0, r0), (1, r1))]
        for t in threads:
            t.start()
        with Sender(f"ejfat://lb.example:18347/lb/1?data={LB_IP}:{lb_port}", gso=gso, sync=False,
                    sndbuf=8 << 20) as s:
            for i in range(0, len(small), 100):
                s.send_many(small[i:i + 100])  # one batch: one timestamp, consecutive ticks
            for ev in large:
                s.send(ev)
            st = s.stats()
        done.wait(20)
        done.set()
        for t in threads:
            t.join()
        counters = lb.counters()
    sent = dict(enumerate(small + large))
    arrived = dict(got[0] + got[1])
    assert arrived == sent, (len(arrived), counters.lb[0])
    assert len(got[0]) + len(got[1]) == total  # nothing twice
    assert got[0] and got[1]  # both workers served
    assert st.gso == (gso == "on") and st.send_errors == 0
    if gso == "on":
        assert st.messages < st.datagrams / 10  # small events did share super-datagrams
