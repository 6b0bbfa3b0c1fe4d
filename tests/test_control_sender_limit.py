"""The sender allow-list size is the data plane's: each backend declares its SenderLimit once and the
control plane refuses, over real gRPC, what the backend in use cannot hold."""
import pytest

from control_tools import admin, config, control_plane
from ejlb.control.errors import InvalidArgument, ResourceExhausted
from ejlb.dataplane import regmap, xdp_layout
from ejlb.dataplane.fpga import FpgaBackend
from ejlb.dataplane.software import SoftwareLB
from ejlb.dataplane.tables import MemoryBackend, SenderLimit
from ejlb.dataplane.xdp import XDPLB
from ejlb.native import lib


def addrs(n, base=0):
    return [f"10.0.{(base + i) >> 8 & 255}.{(base + i) & 255}" for i in range(n)]


def test_each_backend_declares_its_limit_from_its_one_source():
    assert FpgaBackend.sender_limit == SenderLimit(total=regmap.N_SENDERS)
    assert SoftwareLB.sender_limit == SenderLimit(per_lb=lib.EJLB_SWLB_MAX_SENDERS)
    assert XDPLB.sender_limit == SenderLimit(total=xdp_layout.MAX_SENDERS)
    assert MemoryBackend.sender_limit == SenderLimit()


class SmallCam(MemoryBackend):
    sender_limit = SenderLimit(per_lb=6, total=8)


@pytest.fixture
def plane():
    with control_plane(config(n_instances=2), backend=SmallCam()) as cp:
        yield cp


def test_per_lb_limit_is_an_invalid_argument_naming_the_field(plane):
    with admin(plane) as m:
        with pytest.raises(InvalidArgument, match=r"senderAddresses=7 addresses: .* at most 6"):
            m.reserve("a", senders=addrs(7))
        r = m.reserve("a", senders=addrs(6))
        with pytest.raises(InvalidArgument, match="senderAddresses=7"):
            m.add_senders(addrs(1, base=100), lb_id=r.lb_id)
        m.add_senders(addrs(2), lb_id=r.lb_id)  # already there: still 6
        m.free(r.lb_id)


def test_shared_table_full_is_resource_exhausted(plane):
    with admin(plane) as m:
        a = m.reserve("a", senders=addrs(5))
        with pytest.raises(ResourceExhausted, match=r"would make 9 .* holds 8"):
            m.reserve("b", senders=addrs(4, base=50))
        b = m.reserve("b", senders=addrs(3, base=50))
        with pytest.raises(ResourceExhausted, match="would make 9"):
            m.add_senders(addrs(1, base=200), lb_id=b.lb_id)
        m.free(a.lb_id)
        m.add_senders(addrs(1, base=200), lb_id=b.lb_id)  # room again once a's senders are gone
        m.free(b.lb_id)
