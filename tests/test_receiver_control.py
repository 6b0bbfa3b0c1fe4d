"""Receiver <-> control plane over real gRPC on loopback (ejlb.control.server.ControlPlane):
register with the worker's parameters, state reports with fill, PID signal and the SendState
totals, re-registration after the session is lost, deregistration on close."""
import time

import pytest

from ejlb.control.client import LBManager
from ejlb.control.config import ControlConfig
from ejlb.control.server import ControlPlane
from ejlb import sendstate
from ejlb.control import loadbalancer_pb2 as pb
from ejlb.control.state import TOTALS
from ejlb.shim.receiver import Receiver
from receiver_tools import datagrams, send_all


def wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


@pytest.fixture(scope="module")
def cp():
    with ControlPlane(ControlConfig(port=0, backend="memory", controller_period=0.1)) as plane:
        yield plane


@pytest.fixture
def reservation(cp):
    admin = LBManager(cp.admin_uri)
    res = admin.reserve("rx-test")
    yield res
    admin.free(res.lb_id)
    admin.close()


def workers(res):
    with LBManager(res.uri) as m:
        return {w.name: w for w in m.status().workers}


def test_totals_names_match_the_proto():
    """ejlb.sendstate is the one definition; the proto's SendState and WorkerStatus must carry it."""
    for message in (pb.SendStateRequest, pb.WorkerStatus):
        names = [f.name for f in message.DESCRIPTOR.fields if f.name.startswith("total")]
        assert tuple(names) == sendstate.PROTO
    assert TOTALS == sendstate.COLUMNS


def test_register_report_and_deregister(reservation):
    rx = Receiver(reservation.uri, "127.0.0.1", 0, threads=2, name="w1", weight=2.0, min_factor=0.25,
                  max_factor=3.0, queue_size=4)
    try:
        assert rx.registration is not None
        w = workers(reservation)["w1"]
        assert (w.udpPort, w.portRange, w.ipAddress) == (rx.base_port, 1, "127.0.0.1")
        assert (w.minFactor, w.maxFactor) == (0.25, 3.0)
        for evn in range(3):  # three complete events nobody reads: queue 3/4 full
            send_all(datagrams(b"abc" * 100, event_number=evn, with_lb=False), ("127.0.0.1", rx.base_port))
        assert wait_for(lambda: workers(reservation)["w1"].fillPercent == pytest.approx(0.75))
        w = workers(reservation)["w1"]
        assert w.controlSignal < 0  # a filling queue asks for fewer slots
        assert (w.totalEventsRecv, w.totalEventsReassembled, w.totalPacketsRecv) == (3, 3, 3)
        assert w.totalBytesRecv == 3 * (20 + 300)
        assert wait_for(lambda: workers(reservation)["w1"].slotsAssigned == 512)  # the only ready worker
    finally:
        rx.close()
    assert "w1" not in workers(reservation)  # deregistered


def test_reregisters_after_losing_the_session(reservation, cp):
    with Receiver(reservation.uri, "127.0.0.1", 0, name="w2") as rx:
        first = rx.registration
        admin = LBManager(cp.admin_uri)
        admin.lb_id = reservation.lb_id
        admin.session_id, admin.session_token = first.session_id, admin.token
        admin.deregister()  # the control plane forgets the session and revokes its token
        assert wait_for(lambda: rx.registration is not None and rx.registration.session_id != first.session_id)
        assert wait_for(lambda: "w2" in workers(reservation))
        assert rx._reporter.stats.registrations == 2


def test_register_needs_a_token():
    with pytest.raises(ValueError, match="register"):
        Receiver("ejfat://127.0.0.1:18008/lb/1", "127.0.0.1", 0, register=True)


def test_no_token_means_no_registration():
    with Receiver("ejfat://127.0.0.1:18008/lb/1", "127.0.0.1", 0) as rx:
        assert rx.registration is None


def test_keep_lb_header_is_registered_and_parsed(reservation):
    with Receiver(reservation.uri, "127.0.0.1", 0, name="w3", keep_lb_header=True) as rx:
        assert workers(reservation)["w3"].keepLbHeader
        send_all(datagrams(b"kept", event_number=5, with_lb=True), ("127.0.0.1", rx.base_port))
        ev = rx.recv(timeout=5)
        assert (ev.event_number, ev.tobytes()) == (5, b"kept")
        assert rx.stats().bad_headers == 0
