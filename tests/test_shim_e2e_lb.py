"""Sender -> software load balancer -> two registered Receivers, all real (control plane over gRPC,
native LB, native sender and receivers) on loopback: every event arrives whole at exactly one
worker, on the port its entropy selects, and both workers get a share."""
import time

import numpy as np

from ejlb.control.client import LBManager
from ejlb.control.config import ControlConfig, InstanceConfig
from ejlb.control.server import ControlPlane
from ejlb.shim.receiver import Receiver
from ejlb.shim.sender import Sender


def free_udp_port():
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_events_through_the_software_lb_reach_one_worker_each():
    port = free_udp_port()
    inst = InstanceConfig(lb_id=0, ipv4="127.0.0.1", ipv6=None, data_min_port=port, data_max_port=port)
    config = ControlConfig(port=0, instances=(inst,), backend="software", sync_ipv6=None, controller_period=0.1)
    rng = np.random.default_rng(4)
    pool = rng.integers(0, 256, 3 << 20, dtype=np.uint8)
    plan = [(int(rng.integers(0, 1 << 20)), int(np.exp(rng.uniform(0, np.log(2 << 20))))) for _ in range(300)]
    with ControlPlane(config) as cp, LBManager(cp.admin_uri) as admin:
        res = admin.reserve("e2e-lb", senders=["127.0.0.1"], ip_family="ipv4")
        rxs = [Receiver(res.uri, "127.0.0.1", 0, threads=2, port_range=2, name=f"w{i}", queue_size=512)
               for i in range(2)]
        try:
            end = time.monotonic() + 10
            while time.monotonic() < end:
                slots = {w.name: w.slotsAssigned for w in admin.status(res.lb_id).workers}
                if len(slots) == 2 and all(slots.values()):
                    break
                time.sleep(0.05)
            assert len(slots) == 2 and all(slots.values()), slots
            with Sender(res.uri, mtu=9000, sync=False, rate_gbps=2.0, data_id=3) as tx:
                for k, (off, n) in enumerate(plan):
                    tx.send(pool[off:off + n], event_number=k)
            got = {}
            for i, rx in enumerate(rxs):
                while True:
                    try:
                        ev = rx.recv(timeout=1.0)
                    except TimeoutError:
                        break
                    assert ev.event_number not in got  # exactly one worker per event
                    off, n = plan[ev.event_number]
                    assert ev.data_id == 3 and np.array_equal(np.frombuffer(ev.payload, np.uint8), pool[off:off + n])
                    got[ev.event_number] = i
            assert sorted(got) == list(range(len(plan)))
            shares = np.bincount(list(got.values()), minlength=2)
            assert shares.min() > 0, shares
            for rx in rxs:
                s = rx.stats()
                assert s.bad_headers == s.events_reassembly_err == 0
        finally:
            for rx in rxs:
                rx.close()
