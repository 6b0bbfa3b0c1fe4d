"""EjfatURI: every form of the spec, what current control planes return, and malformed URIs."""
import ipaddress

import pytest
from hypothesis import given, strategies as st

from ejlb.uri import DataAddress, EjfatURI, URIError

CURRENT = (
    "ejfat://c0ffee@ejfat-lb.es.net:18008/lb/36?sync=192.0.2.10:19020&sync=[2001:db8::10]:19020"
    "&data=192.0.2.20:16384-32767&data=[2001:db8::20]:16384-32767"
)


def test_current_control_plane_reply_keeps_both_families():
    u = EjfatURI.parse(CURRENT)
    assert (u.tls, u.token, u.host, u.port, u.lb_id) == (False, "c0ffee", "ejfat-lb.es.net", 18008, "36")
    assert u.sync_address(4).ip == ipaddress.ip_address("192.0.2.10")
    assert u.sync_address(6).ip == ipaddress.ip_address("2001:db8::10") and u.sync_address(6).port == 19020
    assert u.port_range(4) == (16384, 32767) and u.port_range(6) == (16384, 32767)
    assert u.data_address().family == 4  # IPv4 preferred when no family is asked for
    assert str(u) == CURRENT


@pytest.mark.parametrize(
    "text, check",
    [
        ("ejfat://127.0.0.1:18008/", lambda u: u.token is None and u.lb_id is None and not u.data),
        ("ejfats://adm@[::1]:19523/", lambda u: u.tls and u.host == "[::1]" and u.control_target == "[::1]:19523"),
        ("ejfat://t@h:18008/lb/1?data=10.1.1.1", lambda u: u.port_range() == (16384, 32767)),
        ("ejfat://t@h:18008/lb/1?data=10.1.1.1:19522", lambda u: u.port_range() == (19522, 19522)),
        ("ejfat://t@h:18008/lb/1?data=[fe80::1]:20000-20003", lambda u: list(u.data_address(6).ports) == [20000, 20001, 20002, 20003]),
        ("ejfat://t@h:18008/lb/1?sync=10.0.0.1:19010&data=10.0.0.2", lambda u: u.sync_address().port == 19010),
        ("ejfat://sess@h:18008/lb/12?sessionid=345", lambda u: u.session_id == "345" and u.lb_id == "12"),
        ("ejfat://h.example:18008/lb/1/", lambda u: u.lb_id == "1"),
    ],
)
def test_forms(text, check):
    u = EjfatURI.parse(text)
    assert check(u)
    assert EjfatURI.parse(str(u)) == u


def test_no_port_data_renders_without_port():
    u = EjfatURI.parse("ejfat://t@h:18008/lb/1?data=10.1.1.1")
    assert str(u).endswith("data=10.1.1.1")
    assert u.data_address() == DataAddress(ipaddress.ip_address("10.1.1.1"))


@pytest.mark.parametrize(
    "text, part",
    [
        ("http://h:18008/", "scheme"),
        ("ejfat:/h:18008/", "uri"),
        ("ejfat://h/", "port"),
        ("ejfat://h:80/", "port"),
        ("ejfat://h:70000/", "port"),
        ("ejfat://h:18008/?bogus=1", "bogus"),
        ("ejfat://h:18008/?data=10.0.0.1:80", "data"),
        ("ejfat://h:18008/?data=10.0.0.1:20000-19999", "data"),
        ("ejfat://h:18008/?data=10.0.0.300", "data"),
        ("ejfat://h:18008/?sync=10.0.0.1", "sync"),
        ("ejfat://h:18008/?sync=[2001:db8::zz]:19010", "sync"),
        ("ejfat://[2001:db8::zz]:18008/", "host"),
        ("ejfat://2001:db8::1:18008/", "host"),
        ("ejfat://[::1:18008/", "host"),
        ("ejfat://h:18008/lb/x1", "path"),
        ("ejfat://h:18008/other", "path"),
        ("ejfat://@h:18008/", "token"),
        ("ejfat://h:18008/?sessionid=abc", "sessionid"),
        ("ejfat://h:18008/?data=10.0.0.1&data=10.0.0.2", "data"),
        ("ejfat://h:18008/?data", "data"),
        ("ejfat://bad_host!:18008/", "host"),
        ("ejfat://h:18008/?data=%5B2001:db8::10%5:19522", "data"),  # a '%' without two hex digits
        ("ejfat://h:18008/?data=%zz10.0.0.1", "data"),
        ("ejfat://h:18008/?sync=%5B2001:db8::10%5D%0A:19010", "sync"),  # decodes to a control character
        ("ejfat://h:18008/?sync=%5B2001:db8::zz%5D:19010", "sync"),
        ("ejfat://h:18008/?data=%5B2001:db8::10:19522", "data"),  # unterminated, encoded
    ],
)
def test_malformed_rejected_naming_part(text, part):
    with pytest.raises(URIError) as e:
        EjfatURI.parse(text)
    assert e.value.part == part and part in str(e.value)


def test_from_env(monkeypatch):
    monkeypatch.setenv("EJFAT_URI", "ejfat://tok@127.0.0.1:18008/lb/3")
    assert EjfatURI.from_env().lb_id == "3"
    monkeypatch.delenv("EJFAT_URI")
    with pytest.raises(URIError, match="EJFAT_URI"):
        EjfatURI.from_env()


def test_missing_family_is_a_clear_error():
    u = EjfatURI.parse("ejfat://t@h:18008/lb/1?data=10.0.0.1")
    with pytest.raises(URIError, match="IPv6 data"):
        u.data_address(6)
    with pytest.raises(URIError, match="sync"):
        u.sync_address()


ports = st.integers(1024, 65535)


@given(
    tls=st.booleans(),
    token=st.one_of(st.none(), st.text("abcdef0123456789", min_size=1, max_size=40)),
    lb=st.one_of(st.none(), st.integers(0, 10**6).map(str)),
    v4=st.ip_addresses(v=4), v6=st.ip_addresses(v=6), p=ports, q=ports, sync_port=ports,
)
def test_roundtrip_property(tls, token, lb, v4, v6, p, q, sync_port):
    lo, hi = sorted((p, q))
    u = EjfatURI(host="cp.example", port=18008, tls=tls, token=token, lb_id=lb,
                 sync={4: __import__("ejlb.uri").uri.SyncAddress(v4, sync_port)},
                 data={4: DataAddress(v4, lo, hi, True), 6: DataAddress(v6)})
    again = EjfatURI.parse(str(u))
    assert again == u and str(again) == str(u)


# -- percent-encoded brackets in the query (Boost.URL-based clients refuse literal ones) ------------
ENCODED = CURRENT.replace("[", "%5B").replace("]", "%5D")


@pytest.mark.parametrize("text", [ENCODED, ENCODED.lower(),  # escapes in either case
                                  CURRENT.replace("[2001:db8::20]", "%5b2001:db8::20%5d"),
                                  CURRENT.replace("=[2001:db8::10]", "=%5B2001%3Adb8%3A%3A10%5D")])
def test_percent_encoded_brackets_parse_like_literal_ones(text):
    u = EjfatURI.parse(text)
    assert u == EjfatURI.parse(CURRENT)
    assert str(u) == CURRENT and u.format(encode_brackets=True) == ENCODED
    assert EjfatURI.parse(u.format(encode_brackets=True)) == u


def test_the_issue_example_and_receiver_sender_paths(monkeypatch):
    u = EjfatURI.parse("ejfat://t@cp.example:18008/lb/1?data=%5B2001:db8::10%5D:19522&sync=%5B2001:db8::11%5D:19523")
    assert u.data_address(6).ip == ipaddress.ip_address("2001:db8::10") and u.data_address(6).port == 19522
    assert u.sync_address(6).port == 19523
    monkeypatch.setenv("EJFAT_URI", u.format(encode_brackets=True))
    assert EjfatURI.from_env() == u
    assert "[" not in u.format(encode_brackets=True).partition("?")[2]
    ipv4_only = EjfatURI.parse("ejfat://t@h:18008/lb/1?data=10.0.0.1:19522")
    assert ipv4_only.format(encode_brackets=True) == str(ipv4_only)  # nothing to encode
    bracketed_host = EjfatURI.parse("ejfat://t@[::1]:18008/lb/1?data=%5B::2%5D")
    assert bracketed_host.format(encode_brackets=True) == "ejfat://t@[::1]:18008/lb/1?data=%5B::2%5D"  # host stays


@given(v6=st.ip_addresses(v=6), p=ports, encode=st.booleans())
def test_encoded_roundtrip_property(v6, p, encode):
    u = EjfatURI(host="cp.example", port=18008, token="ab", lb_id="3",
                 sync={6: __import__("ejlb.uri").uri.SyncAddress(v6, p)}, data={6: DataAddress(v6, p, p, True)})
    text = u.format(encode_brackets=encode)
    assert EjfatURI.parse(text) == u and ("%5B" in text) == encode
