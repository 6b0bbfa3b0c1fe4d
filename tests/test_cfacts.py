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
