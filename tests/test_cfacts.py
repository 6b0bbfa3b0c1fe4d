"""csrc/ejlb_facts.h is generated from the Python definitions (ejlb.cfacts) and must stay current."""
import pathlib

from ejlb import cfacts, sendstate
from ejlb.native import ffi

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_c_facts_header_is_current():
    path = ROOT / "csrc" / "ejlb_facts.h"
    assert path.read_text() == cfacts.c_header(), "regenerate: python -m ejlb.cfacts > csrc/ejlb_facts.h"


def test_native_sendstate_struct_follows_the_definition():
    assert [name for name, _ in ffi.typeof("ejlb_sendstate").fields] == list(sendstate.NAMES)


def test_native_module_was_built_from_these_facts():
    """The compiled core saw the generated constants (a stale build would disagree)."""
    from ejlb.dataplane.tables import LB_RX_COUNTERS, MAX_MEMBERS, NUM_EPOCHS, NUM_LBS, UNASSIGNED, Drop
    from ejlb.native import lib
    from ejlb.shim.reassembly import EVENT_OVERHEAD

    assert (lib.EJLB_NUM_LBS, lib.EJLB_NUM_EPOCHS, lib.EJLB_MAX_MEMBERS, lib.EJLB_UNASSIGNED) == (
        NUM_LBS, NUM_EPOCHS, MAX_MEMBERS, UNASSIGNED)
    assert lib.EJLB_DROP_CODES == len(Drop) and lib.EJLB_LB_RX_COUNTERS == len(LB_RX_COUNTERS)
    assert lib.EJLB_RX_EVENT_OVERHEAD == EVENT_OVERHEAD


def test_no_hand_copied_socket_option_fallbacks():
    """Linux socket-option numbers live in ejlb.sockopt (and the generated header) only."""
    import re

    pattern = re.compile(r"#define (UDP_GRO|UDP_SEGMENT|SOL_UDP)\b|getattr\(socket, \"(UDP_GRO|UDP_SEGMENT)\"")
    for path in [*ROOT.glob("csrc/*.[ch]"), *ROOT.glob("src/ejlb/**/*.py")]:
        if path.name in ("ejlb_facts.h", "sockopt.py"):
            continue
        assert not pattern.search(path.read_text()), path
