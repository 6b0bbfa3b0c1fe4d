"""ZeroMQ forwarding: reassembled events pushed as [header, payload] to a PUSH socket; a slow
consumer shows up as queue fill (what the receiver reports to the control plane)."""
import random
import time

import pytest
import zmq

from ejlb.shim.receiver import Receiver
from ejlb.shim.zmq_bridge import HEADER, decode_header
from receiver_tools import datagrams, send_all


def wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_events_forwarded_over_tcp():
    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    pull.setsockopt(zmq.RCVTIMEO, 5000)
    rnd = random.Random(3)
    sent = {(k, k % 3): rnd.randbytes(rnd.randrange(0, 30_000)) for k in range(25)}
    try:
        with Receiver(None, "127.0.0.1", 0, zmq_push=f"tcp://127.0.0.1:{port}") as rx:
            for (evn, did), payload in sent.items():
                send_all(datagrams(payload, event_number=evn, data_id=did, fragment=1400, with_lb=False),
                         ("127.0.0.1", rx.base_port))
            got = {}
            for _ in sent:
                head, body = pull.recv_multipart()
                evn, did, n = decode_header(head)
                assert n == len(body)
                got[(evn, did)] = body
            assert got == sent
            assert rx.stats().events_dequeued == len(sent)
    finally:
        pull.close(linger=0)


def test_slow_consumer_raises_fill_then_drains():
    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 1)
    pull.bind("inproc://ejlb-rx-zmq-test")
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 1)
    push.connect("inproc://ejlb-rx-zmq-test")
    try:
        with Receiver(None, "127.0.0.1", 0, zmq_push=push, queue_size=4) as rx:
            for evn in range(12):  # one at a time: the queue only overflows once zmq holds all it can
                send_all(datagrams(bytes([evn]) * 1000, event_number=evn, with_lb=False), ("127.0.0.1", rx.base_port))
                assert wait_for(lambda: rx.stats().events_reassembled == evn + 1)
                time.sleep(0.01)
            assert wait_for(lambda: rx.fill() == 1.0), rx.stats()  # nobody reads: the queue backs up
            assert rx.stats().event_enqueue_err > 0
            seen = []
            pull.setsockopt(zmq.RCVTIMEO, 2000)
            for _ in range(12 - rx.stats().event_enqueue_err):
                head, body = pull.recv_multipart()
                evn, _, _ = decode_header(head)
                assert body == bytes([evn]) * 1000
                seen.append(evn)
            assert seen == sorted(seen)
            assert wait_for(lambda: rx.fill() == 0.0)
            assert rx.stats().events_dequeued == len(seen)
    finally:
        push.close(linger=0)
        pull.close(linger=0)


def test_bad_header_frame_is_named():
    with pytest.raises(ValueError, match="zmq header length"):
        decode_header(b"\0" * (HEADER.size - 1))


def test_bad_endpoint_is_named():
    with pytest.raises(ValueError, match="zmq_push"):
        Receiver(None, "127.0.0.1", 0, zmq_push="nonsense://x")
