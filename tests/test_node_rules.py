"""The SmartNIC rule translation (ejlb.node.rules): deployed encodings, round trips, error codes."""
import dataclasses
import ipaddress

import pytest
from hypothesis import given, settings, strategies as st

from ejlb.dataplane import corpus, model, tables as t
from ejlb.node import rules as r
from ejlb.node import sn_p4_v2_pb2 as pb

MAC = bytes.fromhex("02ec0000a000")


def one_mac(tables: t.Tables) -> t.Tables:
    return dataclasses.replace(tables, lbs={i: dataclasses.replace(x, mac=MAC) for i, x in tables.lbs.items()})


ips4 = st.integers(1, 2**32 - 1).map(ipaddress.IPv4Address)
ips6 = st.integers(1, 2**128 - 1).map(ipaddress.IPv6Address)


@st.composite
def table_sets(draw):
    lbs = {}
    for lb in draw(st.sets(st.integers(0, t.NUM_LBS - 1), max_size=3)):  # each LB its own addresses
        v4 = draw(st.one_of(st.none(), st.integers(1, 2**24).map(lambda x: ipaddress.IPv4Address(x << 3 | lb))))
        v6 = draw(st.one_of(st.none(), st.integers(1, 2**100).map(lambda x: ipaddress.IPv6Address(x << 3 | lb))))
        lbs[lb] = t.LBInstance(lb, MAC, v4, v6, draw(st.integers(0, 16)), draw(st.integers(0, 0xFFFF)))
    senders = draw(st.frozensets(st.tuples(st.integers(0, 7), st.one_of(ips4, ips6)), max_size=5))
    epochs, calendars = {}, {}
    for lb in draw(st.sets(st.integers(0, 7), max_size=2)):
        cuts = sorted(draw(st.sets(st.integers(0, 2**64 - 1), min_size=1, max_size=4)))
        ids = draw(st.permutations(range(4)))
        for i, (a, b) in enumerate(zip(cuts, cuts[1:] + [None])):
            newest = b is None
            epochs[(lb, ids[i])] = t.EpochRange(a, b, catch_all=newest and draw(st.booleans()))
            calendars[(lb, ids[i])] = tuple(draw(st.lists(st.sampled_from([0, 1, 5, 1023, t.UNASSIGNED]),
                                                          min_size=512, max_size=512)))
    members = {}
    for key in draw(st.sets(st.tuples(st.integers(0, 7), st.integers(0, t.MAX_MEMBERS - 1)), max_size=4)):
        bits = draw(st.integers(0, 14))
        members[key] = t.Member(draw(st.one_of(ips4, ips6)), draw(st.integers(0, 65536 - (1 << bits))), bits,
                                draw(st.binary(min_size=6, max_size=6)), draw(st.booleans()), draw(st.booleans()))
    return t.Tables(lbs=lbs, senders=senders, epochs=epochs, calendars=calendars, members=members)


@settings(max_examples=150, deadline=None)
@given(table_sets())
def test_decode_of_encode_is_the_canonical_tables(tables):
    assert r.decode(by_table(r.encode(tables).values())) == r.canonical(tables)


@settings(max_examples=100, deadline=None)
@given(table_sets(), table_sets())
def test_plan_takes_the_old_rules_to_the_new(a, b):
    d = t.diff(a, b)
    plan = r.changes(a, b, d)
    installed = dict(r.encode(a))
    for op, _replace, _table, rules in plan.batches():
        for rule in rules:
            if op == pb.BOP_DELETE:
                del installed[rule.identity]
            else:
                installed[rule.identity] = rule
    assert installed == r.encode(b)
    assert r.decode(by_table(installed.values())) == r.canonical(b)


def by_table(rules):
    out = {}
    for rule in rules:
        out.setdefault(rule.table, {})[rule.identity] = rule
    return out


@settings(max_examples=60, deadline=None)
@given(table_sets())
def test_protobuf_round_trip(tables):
    for rule in r.encode(tables).values():
        assert r.parse_rule(r.to_pb(rule)) == rule


def test_corpus_forwards_identically_after_translation():
    """Every corpus frame: the reference model on the tables and on what a node decodes from their rules."""
    tables = one_mac(corpus.tables())
    decoded = r.decode(by_table(r.parse_rule(r.to_pb(x)) for x in r.encode(tables).values()))
    for frame, _ in corpus.frames(3000):
        a, b = model.process(tables, frame), model.process(decoded, frame)
        assert (a.verdict, a.frame, a.lb_id, a.member_id) == (b.verdict, b.frame, b.lb_id, b.member_id)


def test_udplbd2_encodings():
    inst = t.LBInstance(0, bytes.fromhex("001122334455"), ipaddress.IPv4Address("10.0.0.1"),
                        ipaddress.IPv6Address("2001:db8::abcd:1234"))
    tables = t.Tables(lbs={0: inst}, epochs={(0, 1): t.EpochRange(2, 7), (0, 2): t.EpochRange(7, None, True)})
    pbs = [r.to_pb(x) for x in r.encode(tables).values()]
    ip_dst = [x for x in pbs if x.table_name == r.IP_DST]
    assert {x.matches[1].key_only.key for x in ip_dst} == {"0x800", "0x806", "0x86dd"}
    assert all(x.matches[0].key_mask.key == "0x0" and x.matches[0].key_mask.mask == "0x0" for x in ip_dst)
    v4 = next(x for x in ip_dst if x.matches[1].key_only.key == "0x800")
    assert (v4.matches[2].key_only.key, [p.value for p in v4.action.parameters]) == ("0xa000001", ["0xa000001", "0x0"])
    macs = {x.matches[1].key_only.key for x in pbs if x.table_name == r.MAC_DST}
    assert macs == {"0x1122334455", "0xffffffffffff", "0x333300000001", "0x3333ffcd1234"}
    solicited = {x.matches[2].key_only.key for x in ip_dst} - {"0xa000001", hex(int(inst.ipv6))}
    assert solicited == {hex(int(ipaddress.IPv6Address("ff02::1:ffcd:1234")))}
    epochs = sorted((x.matches[1].key_prefix.key, x.matches[1].key_prefix.prefix_length, x.priority,
                     x.action.parameters[0].value) for x in pbs if x.table_name == r.EPOCH)
    # [2,7) -> 2/63, 4/63, 6/64 (the spec's example); the newest epoch is the lone /0 at priority 63
    assert epochs == [("0x0", 0, 63, "0x2"), ("0x2", 63, 0, "0x1"), ("0x4", 63, 0, "0x1"), ("0x6", 64, 0, "0x1")]


def test_prefixes_cover_exactly_and_never_make_a_slash_zero():
    assert r.prefixes(0, 2**64) == [(0, 63), (2**63, 63)]
    for a, b in [(0, 1), (3, 1000), (2**40 + 7, 2**41), (5, 5)]:
        blocks = r.prefixes(a, b)
        assert sum(1 << k for _, k in blocks) == b - a
        assert all(s % (1 << k) == 0 for s, k in blocks)


@pytest.mark.parametrize("text,value", [("0x800", 0x800), ("0X1F", 31), ("0b101", 5), ("017", 15), ("42", 42), ("0", 0)])
def test_numbers_in_every_form_the_agent_takes(text, value):
    assert r.parse_number(text) == value


def _cal(**over):
    rule = r.to_pb(r.calendar_rules(0, 1, [3] * 512, [7])[0])
    for k, v in over.items():
        setattr(rule, k, v) if not callable(v) else v(rule)
    return rule


@pytest.mark.parametrize("mutate,code,words", [
    (lambda x: setattr(x, "table_name", "nat_table"), pb.EC_INVALID_TABLE_NAME, "nat_table"),
    (lambda x: x.matches.pop(), pb.EC_TABLE_RULE_TOO_FEW_MATCHES, "2 matches"),
    (lambda x: x.matches.append(x.matches[0]), pb.EC_TABLE_RULE_TOO_MANY_MATCHES, "4 matches"),
    (lambda x: setattr(x.matches[2].key_only, "key", "0xzz"), pb.EC_TABLE_RULE_MATCH_INVALID_KEY_FORMAT, "0xzz"),
    (lambda x: setattr(x.matches[2].key_only, "key", "0x10000"), pb.EC_TABLE_RULE_MATCH_KEY_TOO_BIG, "calendar_slot"),
    (lambda x: setattr(x.matches[2].key_only, "key", "512"), pb.EC_FAILED_INSERT_TABLE_RULE, "calendar_slot=512"),
    (lambda x: setattr(x.action, "name", "do_nat"), pb.EC_INVALID_ACTION_NAME, "do_nat"),
    (lambda x: x.action.parameters.pop(), pb.EC_TABLE_RULE_TOO_FEW_ACTION_PARAMETERS, "0 parameters"),
    (lambda x: setattr(x.action.parameters[0], "value", "0x10000"), pb.EC_TABLE_RULE_PARAM_TOO_BIG, "member_id"),
    (lambda x: x.matches[0].CopyFrom(pb.Match(key_mask=pb.MatchKeyMask(key="0x0", mask="0x3"))),
     pb.EC_TABLE_RULE_MATCH_INVALID_CONSTANT_MASK, "meta_lb_id"),
    (lambda x: x.matches[0].CopyFrom(pb.Match(range=pb.MatchRange(lower=1, upper=2))),
     pb.EC_TABLE_RULE_MATCH_INVALID_FORMAT, "range"),
    (lambda x: x.matches[0].Clear(), pb.EC_UNKNOWN_TABLE_RULE_MATCH_TYPE, "unset"),
])
def test_bad_rules_get_the_api_error_code_and_name_the_field(mutate, code, words):
    rule = r.to_pb(r.calendar_rules(0, 1, [3] * 512, [7])[0])
    mutate(rule)
    with pytest.raises(r.RuleError) as e:
        r.parse_rule(rule)
    assert e.value.code == code and words in str(e.value)


def test_prefix_and_mask_checks_on_the_tick():
    rule = r.to_pb(r.epoch_rules(t.Tables(epochs={(0, 0): t.EpochRange(8, 16)}), 0)[0])
    rule.matches[1].key_prefix.prefix_length = 65
    with pytest.raises(r.RuleError) as e:
        r.parse_rule(rule)
    assert e.value.code == pb.EC_TABLE_RULE_MATCH_MASK_TOO_WIDE
    rule.matches[1].CopyFrom(pb.Match(key_mask=pb.MatchKeyMask(key="0x8", mask="0xf0f")))
    with pytest.raises(r.RuleError) as e:
        r.parse_rule(rule)
    assert e.value.code == pb.EC_TABLE_RULE_MATCH_INVALID_PREFIX_MASK


def test_sets_no_data_plane_can_hold_are_refused_by_name():
    base = one_mac(corpus.tables())
    rules = by_table(r.encode(base).values())
    gap = dict(rules)
    gap[r.EPOCH] = dict(rules[r.EPOCH])
    blocks = sorted((x.matches[1][0], k) for k, x in rules[r.EPOCH].items() if x.matches[0][0] == 0 and x.params[0] == 0)
    assert len(blocks) > 2  # [1000, 2000) of LB 0 takes several prefixes: drop one in the middle
    del gap[r.EPOCH][blocks[1][1]]
    with pytest.raises(r.RuleSetError, match="separate tick ranges"):
        r.decode(gap)
    with pytest.raises(r.RuleSetError, match="one port MAC"):
        r.encode(corpus.tables())


def test_longest_prefix_spans_while_old_and_new_prefixes_coexist():
    """Mid-update (inserts before deletes) a wide old prefix and narrower new ones overlap."""
    wide = [(s, s + (1 << k), 2) for s, k in r.prefixes(3000, 2**64)]
    narrow = [(s, s + (1 << k), 3) for s, k in r.prefixes(4000, 5000)]
    spans = r.longest_prefix_spans(wide + narrow)
    assert spans == [(3000, 4000, 2), (4000, 5000, 3), (5000, 2**64, 2)]
    assert r.longest_prefix_spans([(0, 16, 1), (4, 8, 1)]) == [(0, 16, 1)]
    assert r.longest_prefix_spans([(0, 16, 1), (4, 8, 0), (6, 7, 1)]) == [(0, 4, 1), (4, 6, 0), (6, 7, 1), (7, 8, 0), (8, 16, 1)]
