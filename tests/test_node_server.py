"""LB nodes over real gRPC: the SmartNIC P4 API server (ejlb.node.server) and the control plane's
client backend (ejlb.node.client), with the reference model as the node's data plane."""
import dataclasses
import ipaddress
import time

import grpc
import pytest

from ejlb.dataplane import corpus, model
from ejlb.dataplane import tables as t
from ejlb.dataplane.backends import ReferenceBackend
from ejlb.node import rules as R
from ejlb.node import sn_p4_v2_pb2 as pb
from ejlb.node import sn_p4_v2_pb2_grpc as pb_grpc
from ejlb.node import stats as S
from ejlb.node.client import NodesBackend, parse_url
from ejlb.node.server import ERROR_METADATA, LBNode, NodeConfig

TOKEN = "node-secret"
MAC = bytes.fromhex("02ec0000a000")


def tables() -> t.Tables:
    tb = corpus.tables()
    return dataclasses.replace(tb, lbs={i: dataclasses.replace(x, mac=MAC) for i, x in tb.lbs.items()})


@pytest.fixture
def node():
    n = LBNode(NodeConfig(port=0, token=TOKEN), ReferenceBackend(), "reference").start()
    yield n
    n.stop()


def backend_for(*nodes) -> NodesBackend:
    return NodesBackend(f"snp4://{TOKEN}@" + ",".join(f"127.0.0.1:{n.port}" for n in nodes))


def stub(n):
    return pb_grpc.SmartnicP4Stub(grpc.insecure_channel(f"127.0.0.1:{n.port}"))


MD = (("authorization", f"Bearer {TOKEN}"),)


def batch(n, *requests, md=MD):
    call = stub(n).Batch(iter(requests), metadata=md)
    return list(call), dict(call.trailing_metadata() or ())


def rule_request(op, rules, replace=False):
    return pb.BatchRequest(op=op, table_rule=pb.TableRuleRequest(dev_id=-1, rules=[R.to_pb(r, replace) for r in rules]))


def test_control_plane_loads_a_node_and_frames_forward_as_the_model(node):
    be = backend_for(node)
    want = tables()
    be.apply(t.diff(t.Tables(), want))
    assert node.backend.installed == R.canonical(want)
    for frame, _ in corpus.frames(2000):
        a, b = model.process(want, frame), node.backend.process(frame)
        assert (a.verdict, a.frame) == (b.verdict, b.frame)
    assert [h.up for h in be.health()] == [True] and be.health()[0].reloads == 1
    be.close()


def test_steady_updates_send_only_what_changed_and_keep_the_node_equal(node):
    be = backend_for(node)
    a = tables()
    be.apply(t.diff(t.Tables(), a))
    cal = list(a.calendars[(0, 0)])
    cal[:5] = [1] * 5
    b = dataclasses.replace(a, calendars={**a.calendars, (0, 0): tuple(cal)},
                            epochs={**a.epochs, (0, 2): t.EpochRange(3000, 4000), (0, 3): t.EpochRange(4000, None, True)})
    d = t.diff(a, b)
    plan = R.changes(a, b, d)
    changed = sum(x != y for x, y in zip(a.calendars[(0, 0)], cal))
    assert len(plan.updates[R.CALENDAR]) == changed > 0 and R.CALENDAR not in plan.inserts  # not 512 rules
    assert len(plan) < 200  # plus the epoch prefixes of [3000, 4000) and [4000, 2^64) coming and going
    be.apply(d)
    assert node.backend.installed == R.canonical(b)
    assert be.health()[0].reloads == 1  # no reload was needed
    be.close()


def test_a_restarted_node_is_noticed_and_reloaded():
    n1 = LBNode(NodeConfig(port=0, token=TOKEN), ReferenceBackend(), "reference").start()
    port = n1.port
    be = backend_for(n1)
    be.apply(t.diff(t.Tables(), tables()))
    n1.stop()
    be.refresh()
    assert be.health()[0].up is False and "UNAVAILABLE" in be.health()[0].last_error
    n2 = LBNode(NodeConfig(port=port, token=TOKEN), ReferenceBackend(), "reference")
    n2.started = n1.started + 5  # a new process
    n2.start()
    try:
        assert n2.backend.installed == t.Tables()
        for _ in range(50):  # as the controller's ticks do, until the channel has reconnected
            be.refresh()
            if be.health()[0].up:
                break
            time.sleep(0.1)
        assert n2.backend.installed == R.canonical(tables())
        h = be.health()[0]
        assert h.up and h.reloads == 2 and h.failures >= 1
    finally:
        n2.stop()
        be.close()


def test_two_nodes_hold_identical_tables_and_counters_sum():
    nodes = [LBNode(NodeConfig(port=0, token=TOKEN), ReferenceBackend(), "reference").start() for _ in range(2)]
    try:
        be = backend_for(*nodes)
        be.apply(t.diff(t.Tables(), tables()))
        assert nodes[0].backend.installed == nodes[1].backend.installed == R.canonical(tables())
        frames = [f for f, _ in corpus.frames(600)]
        for i, f in enumerate(frames):
            nodes[i % 2].backend.process(f)
        both = model.run(tables(), frames)[1]
        summed = be.counters()
        assert summed.glob == both.glob
        assert {k: v for k, v in summed.lb.items() if any(v.values())} == {k: v for k, v in both.lb.items() if any(v.values())}
        assert {k: v for k, v in summed.member.items() if any(v.values())} == \
               {k: v for k, v in both.member.items() if any(v.values())}
        be.close()
    finally:
        for n in nodes:
            n.stop()


def test_wrong_or_missing_token_is_unauthenticated_and_changes_nothing(node):
    rules = R.calendar_rules(0, 0, [1] * 512)[:3]
    for md in [(), (("authorization", "Bearer wrong"),), (("authorization", "Basic abc"),)]:
        with pytest.raises(grpc.RpcError) as e:
            batch(node, rule_request(pb.BOP_INSERT, rules), md=md)
        assert e.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT)
    assert node.device.rule_count == 0


def test_bad_rules_get_codes_and_a_named_reason_and_leave_the_node_as_it_was(node):
    good = R.calendar_rules(0, 0, [1] * 512, [0, 1])
    bad = R.to_pb(R.calendar_rules(0, 0, [1] * 512, [2])[0])
    bad.matches[2].key_only.key = "0xnope"
    req = pb.BatchRequest(op=pb.BOP_INSERT, table_rule=pb.TableRuleRequest(
        dev_id=-1, rules=[R.to_pb(good[0]), bad, R.to_pb(good[1])]))
    (resp,), md = batch(node, req)
    assert resp.table_rule.error_code == pb.EC_TABLE_RULE_MATCH_INVALID_KEY_FORMAT
    assert "calendar_slot" in md[ERROR_METADATA] and "0xnope" in md[ERROR_METADATA]
    assert node.device.rule_count == 1  # the agent's semantics: rules before the bad one stay

    (resp,), md = batch(node, rule_request(pb.BOP_INSERT, good[:1]))
    assert resp.table_rule.error_code == pb.EC_FAILED_INSERT_TABLE_RULE and "already holds" in md[ERROR_METADATA]
    (resp,), md = batch(node, rule_request(pb.BOP_DELETE, good[1:]))
    assert resp.table_rule.error_code == pb.EC_FAILED_DELETE_TABLE_RULE
    (resp,), md = batch(node, rule_request(pb.BOP_INSERT, good[1:], replace=True))
    assert resp.table_rule.error_code == pb.EC_FAILED_INSERT_TABLE_RULE and "no rule to replace" in md[ERROR_METADATA]

    before = node.backend.installed
    gap = [R.Rule(R.EPOCH, ((0, 7), (0, R.TICK_MAX ^ 0xF)), "do_assign_epoch", (0,)),
           R.Rule(R.EPOCH, ((0, 7), (32, R.TICK_MAX ^ 0xF)), "do_assign_epoch", (0,))]
    (resp,), md = batch(node, rule_request(pb.BOP_INSERT, gap))
    assert resp.table_rule.error_code == pb.EC_FAILED_INSERT_TABLE_RULE and "separate tick ranges" in md[ERROR_METADATA]
    assert node.backend.installed is before and not node.device.rules[R.EPOCH]

    (resp,), _ = batch(node, pb.BatchRequest(op=pb.BOP_INSERT, table_rule=pb.TableRuleRequest(dev_id=3)))
    assert resp.table_rule.error_code == pb.EC_INVALID_DEVICE_ID
    (resp,), _ = batch(node, pb.BatchRequest(op=pb.BOP_SET, table_rule=pb.TableRuleRequest()))
    assert resp.error_code == pb.EC_UNKNOWN_BATCH_OP
    (resp,), _ = batch(node, pb.BatchRequest(op=pb.BOP_GET))
    assert resp.error_code == pb.EC_UNKNOWN_BATCH_REQUEST
    (resp,) = stub(node).ClearTable(pb.TableRequest(dev_id=-1, table_name="nat"), metadata=MD)
    assert resp.error_code == pb.EC_INVALID_TABLE_NAME
    assert node.device.rule_count == 1


def test_a_batch_stream_installs_once_at_its_end(node):
    """ejlb's gapless reload: clear and reload in one stream; the data plane never sees the empty tables."""
    be = backend_for(node)
    be.apply(t.diff(t.Tables(), tables()))
    seen = []
    apply = node.backend.apply
    node.backend.apply = lambda d: (seen.append(d), apply(d))[1]
    by_table = {}
    for r in R.encode(tables()).values():
        by_table.setdefault(r.table, []).append(r)
    reqs = [pb.BatchRequest(op=pb.BOP_CLEAR, table=pb.TableRequest(dev_id=-1, table_name=""))]
    reqs += [rule_request(pb.BOP_INSERT, by_table[x]) for x in R.TABLE_ORDER if x in by_table]
    responses, _ = batch(node, *reqs)
    assert all(r.error_code == pb.EC_OK for r in responses) and len(responses) == len(reqs)
    assert not seen  # the same tables at the end: nothing to install, and nothing empty in between
    assert node.backend.installed == R.canonical(tables())
    be.close()


def test_info_status_and_stats_as_udplbd2_reads_them(node):
    s = stub(node)
    (info,) = s.GetPipelineInfo(pb.PipelineInfoRequest(dev_id=-1), metadata=MD)
    sizes = {x.name: x.num_entries for x in info.info.tables}
    assert sizes[R.CALENDAR] == 16384 and sizes[R.EPOCH] == 1024 and set(sizes) == set(R.TABLE_ORDER)
    (st,) = s.GetServerStatus(pb.ServerStatusRequest(), metadata=MD)
    assert abs(st.status.start_time.ToNanoseconds() / 1e9 - node.started) < 1e-3

    backend_for(node).apply(t.diff(t.Tables(), tables()))
    for f, _ in corpus.frames(300):
        node.backend.process(f)
    (stats,) = s.GetPipelineStats(pb.PipelineStatsRequest(dev_id=-1), metadata=MD)
    names = {m.name: m for m in stats.stats.metrics}
    for name in ["rx_rslt_counter", "lb_ctx_rx_pkt_counter", "lb_ctx_drop_blocked_src_pkt_counter",
                 "lb_ctx_drop_epoch_assign_miss_pkt_counter", "lb_mbr_tx_pkt_counter", "lb_mbr_tx_byte_counter"]:
        assert name in names
    rx = {v.index: v.u64 for v in names["lb_ctx_rx_pkt_counter"].values}
    assert rx[0] == node.backend.counters().lb[0]["rx_packets"] > 0

    # udplbd2's targeted clear on Reserve: the lb_ctx names at one index
    any_name = pb.StatsMetricFilter(any_set=pb.StatsMetricFilter.Set(members=[
        pb.StatsMetricFilter(match=pb.StatsMetricMatch(name=pb.StatsMetricMatchString(exact=n)))
        for n in S.LB_CTX.values()]))
    at0 = pb.StatsMetricFilter(match=pb.StatsMetricMatch(indices=pb.StatsMetricMatchIndices(
        slices=[pb.StatsMetricMatchIndexSlice(start=0, end=0, step=1)])))
    filters = pb.StatsFilters(metric_filter=pb.StatsMetricFilter(all_set=pb.StatsMetricFilter.Set(members=[any_name, at0])))
    list(s.ClearPipelineStats(pb.PipelineStatsRequest(dev_id=-1, filters=filters), metadata=MD))
    (stats,) = s.GetPipelineStats(pb.PipelineStatsRequest(dev_id=-1), metadata=MD)
    names = {m.name: {v.index: v.u64 for v in m.values} for m in stats.stats.metrics}
    assert names["lb_ctx_rx_pkt_counter"][0] == 0 and names["lb_ctx_rx_pkt_counter"][1] == rx[1]
    assert names["rx_rslt_counter"][13] > 0  # not selected, not cleared


@pytest.mark.parametrize("url,words", [
    ("http://t@h:1", "snp4://"), ("snp4://h:1", "token is missing"), ("snp4://t@h:x", "node='h:x'"),
    ("snp4://t@h:1,h:1", "listed twice"), ("snp4://t@h:1/path", "expected host:port"),
])
def test_bad_dataplane_urls_name_the_part(url, words):
    with pytest.raises(ValueError, match=words):
        parse_url(url)


def test_dataplane_url_forms():
    u = parse_url("snp4s://a%40b@[::1]:50051,node2")
    assert (u.token, u.nodes, u.tls) == ("a@b", (("::1", 50051), ("node2", 50051)), True)
    assert ipaddress.ip_address(u.nodes[0][0]).version == 6


def test_control_plane_reports_a_node_that_is_down_and_reloads_it_when_back():
    from control_tools import admin, config, control_plane

    from ejlb.control.client import LBManager
    from ejlb.dataplane.backends import create_backend

    n1 = LBNode(NodeConfig(port=0, token=TOKEN), ReferenceBackend(), "reference").start()
    port = n1.port
    be = backend_for(n1)
    with control_plane(config(), backend=be) as cp, admin(cp) as m:
        res = m.reserve("nodes", ip_family="ipv4")
        cp.tick()
        assert n1.backend.installed == R.canonical(be.installed) and n1.backend.installed.lbs
        with LBManager(res.uri) as lbm:
            assert not [h for h in lbm.status().healthIssues if h.type == "dataplane_node_down"]
            n1.stop()
            cp.tick()
            (issue,) = [h for h in lbm.status().healthIssues if h.type == "dataplane_node_down"]
            assert f"127.0.0.1:{port}" in issue.message and issue.severity == "error"
            text = node_metrics(be)
            assert f'ejlb_dataplane_node_up{{node="127.0.0.1:{port}"}} 0.0' in text
            n2 = LBNode(NodeConfig(port=port, token=TOKEN), ReferenceBackend(), "reference").start()
            try:
                for _ in range(50):
                    cp.tick()
                    if not [h for h in lbm.status().healthIssues if h.type == "dataplane_node_down"]:
                        break
                    time.sleep(0.1)
                assert n2.backend.installed == R.canonical(be.installed)
                assert not [h for h in lbm.status().healthIssues if h.type == "dataplane_node_down"]
            finally:
                n2.stop()
    with pytest.raises(ValueError, match="one port MAC"):  # config() gives each instance its own MAC
        create_backend("snp4", config(2), url=f"snp4://{TOKEN}@127.0.0.1:1")


def node_metrics(backend) -> str:
    from prometheus_client import CollectorRegistry, generate_latest as gen

    from ejlb.dataplane.metrics import CountersCollector

    reg = CollectorRegistry()
    reg.register(CountersCollector(backend))
    return gen(reg).decode()


def test_node_over_tls(tmp_path):
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem"), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    cfg = NodeConfig(port=0, token=TOKEN, tls_cert=str(tmp_path / "cert.pem"), tls_key=str(tmp_path / "key.pem"))
    with LBNode(cfg, ReferenceBackend(), "reference") as n:
        plain = NodesBackend(f"snp4://{TOKEN}@127.0.0.1:{n.port}", timeout=2.0)
        plain.apply(t.diff(t.Tables(), tables()))
        assert not plain.health()[0].up and n.device.rule_count == 0  # no TLS, no talk
        be = NodesBackend(f"snp4s://{TOKEN}@127.0.0.1:{n.port}", ca_file=str(tmp_path / "cert.pem"))
        be.apply(t.diff(t.Tables(), tables()))
        assert be.health()[0].up and n.backend.installed == R.canonical(tables())
        plain.close()
        be.close()


def _rule_msgs():
    from hypothesis import strategies as st

    hexes = st.one_of(st.integers(0, 2**130).map(hex), st.sampled_from(["", "0x", "zz", "0b102", "09", "-1", " 7"]))
    match = st.one_of(
        hexes.map(lambda k: pb.Match(key_only=pb.MatchKeyOnly(key=k))),
        st.tuples(hexes, hexes).map(lambda km: pb.Match(key_mask=pb.MatchKeyMask(key=km[0], mask=km[1]))),
        st.tuples(hexes, st.integers(0, 200)).map(lambda kp: pb.Match(key_prefix=pb.MatchKeyPrefix(key=kp[0], prefix_length=kp[1]))),
        st.just(pb.Match(range=pb.MatchRange(lower=1, upper=70000))), st.just(pb.Match()))
    table = st.sampled_from(list(R.TABLE_ORDER) + ["", "nat"])
    action = st.sampled_from([a for t_ in R.SCHEMA.values() for a in t_.actions] + ["", "x"])
    return st.builds(lambda tb, ms, a, ps, rep, pr: pb.TableRule(
        table_name=tb, matches=ms, action=pb.Action(name=a, parameters=[pb.ActionParameter(value=p) for p in ps]),
        replace=rep, priority=pr), table, st.lists(match, max_size=4), action, st.lists(hexes, max_size=6),
        st.booleans(), st.integers(0, 2**32 - 1))


def test_hostile_rules_never_harm_the_node():
    """Random rule batches (valid corpus rules mixed with junk): every answer is an API code, and the
    node's tables are always exactly what its rules decode to, installed on its data plane."""
    from hypothesis import given, settings, strategies as st

    good = [R.to_pb(r) for r in R.encode(tables()).values()]
    node = LBNode(NodeConfig(port=0, token=TOKEN), ReferenceBackend(), "reference")

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from([pb.BOP_INSERT, pb.BOP_DELETE]),
                              st.lists(st.one_of(_rule_msgs(), st.sampled_from(good)), max_size=8)), max_size=6))
    def run(batches):
        for op, msgs in batches:
            req = pb.TableRuleRequest(dev_id=-1, rules=msgs)
            resp, out = node.batch_item(op, "table_rule", req)
            assert resp.table_rule.error_code in pb.ErrorCode.values()
            assert out.ok or out.message
            ids = R.MemberIds()
            ids.local = dict(node.device.ids.local)
            assert node.device.tables == R.decode(node.device.rules, ids=ids)
            assert node.backend.installed == node.device.tables

    run()


def test_udplbd2_session_ids_beyond_the_data_planes_member_ids(node):
    """udplbd2 sends session id mod 65535 as member id; the node maps them onto its 1024 ids, forwards
    by them, reports counters under the wire ids, and frees them when no rule uses them any more."""
    tb = tables()
    wire = {m: 5000 + 7 * m for m in range(t.MAX_MEMBERS)}  # what a long-running udplbd2 would send
    by_table = {}
    for r in R.encode(tb).values():
        if r.table == R.CALENDAR and r.params[0] != t.UNASSIGNED:
            r = dataclasses.replace(r, params=(wire[r.params[0]],))
        elif r.table == R.MEMBER_INFO:
            (lb, eth, (m, mask)) = r.matches
            r = dataclasses.replace(r, matches=(lb, eth, (wire[m], mask)))
        by_table.setdefault(r.table, []).append(r)
    reqs = [rule_request(pb.BOP_INSERT, by_table[x]) for x in R.TABLE_ORDER if x in by_table]
    responses, md = batch(node, *reqs)
    assert all(r.table_rule.error_code == pb.EC_OK for r in responses), md
    for frame, _ in corpus.frames(1500):  # forwards exactly as the same tables with small ids
        a, b = model.process(tb, frame), node.backend.process(frame)
        assert (a.verdict, a.frame) == (b.verdict, b.frame)
    (stats,) = stub(node).GetPipelineStats(pb.PipelineStatsRequest(dev_id=-1), metadata=MD)
    sent = {v.index: v.u64 for m in stats.stats.metrics if m.name == "lb_mbr_tx_pkt_counter" for v in m.values}
    assert sent and set(sent) <= set(wire.values()) and sum(sent.values()) > 0  # indexed by the wire ids

    named = set(tb.members) | {(lb, m) for (lb, _), cal in tb.calendars.items() for m in cal if m != t.UNASSIGNED}
    assert set(node.device.ids.local) == {(lb, wire[m]) for lb, m in named}
    responses, _ = batch(node, *[rule_request(pb.BOP_DELETE, by_table[x]) for x in (R.EPOCH, R.CALENDAR, R.MEMBER_INFO)])
    assert all(r.table_rule.error_code == pb.EC_OK for r in responses)
    assert node.device.ids.local == {}  # no rule names them any more: free for the next sessions


def test_more_member_ids_than_the_data_plane_holds_are_refused_by_name(node):
    rules = [R.member_rules(0, 2000 + i, t.Member(ipaddress.IPv4Address(f"10.0.{i // 256}.{i % 256}"), 30000))[0]
             for i in range(t.MAX_MEMBERS + 1)]
    (resp,), md = batch(node, rule_request(pb.BOP_INSERT, rules))
    assert resp.table_rule.error_code == pb.EC_FAILED_INSERT_TABLE_RULE
    assert f"more than {t.MAX_MEMBERS} member ids" in md[ERROR_METADATA] and not node.device.rules[R.MEMBER_INFO]


def test_a_node_holds_only_the_senders_its_data_plane_can():
    """A node over a data plane with a small allow-list (the FPGA's CAM holds 64 over all LBs)
    refuses a set beyond it by name and says so in its pipeline info."""
    backend = ReferenceBackend()
    backend.sender_limit = t.SenderLimit(total=3)
    with LBNode(NodeConfig(port=0, token=TOKEN), backend, "reference") as n:
        (info,) = stub(n).GetPipelineInfo(pb.PipelineInfoRequest(dev_id=-1), metadata=MD)
        assert {x.name: x.num_entries for x in info.info.tables}[R.IPV4_SRC] == 3
        three = R.sender_rules({(0, ipaddress.ip_address(f"10.0.0.{i}")) for i in range(1, 4)})
        (resp,), md = batch(n, rule_request(pb.BOP_INSERT, three))
        assert resp.table_rule.error_code == pb.EC_OK
        (resp,), md = batch(n, rule_request(pb.BOP_INSERT, [R.sender_rules({(1, ipaddress.ip_address("fd00::1"))})[0]]))
        assert resp.table_rule.error_code == pb.EC_FAILED_INSERT_TABLE_RULE and "holds 3" in md[ERROR_METADATA]
        assert len(n.backend.installed.senders) == 3


def test_a_node_with_a_state_file_comes_back_forwarding_without_a_control_plane(tmp_path):
    state = tmp_path / "node.rules"
    cfg = NodeConfig(port=0, token=TOKEN, state_file=str(state))
    with LBNode(cfg, ReferenceBackend(), "reference") as n1:
        be = backend_for(n1)
        be.apply(t.diff(t.Tables(), tables()))
        be.close()
    assert state.exists() and oct(state.stat().st_mode & 0o777) == "0o600"
    with LBNode(cfg, ReferenceBackend(), "reference") as n2:  # nobody programs it
        assert n2.backend.installed == R.canonical(tables())
        for frame, _ in corpus.frames(500):
            a, b = model.process(tables(), frame), n2.backend.process(frame)
            assert (a.verdict, a.frame) == (b.verdict, b.frame)
        rules = n2.device.rule_count
    state.write_bytes(b"\xff\x00 not a rule set")
    with LBNode(cfg, ReferenceBackend(), "reference") as n3:  # damaged: starts empty, says so, serves
        assert n3.backend.installed == t.Tables() and n3.device.rule_count == 0 < rules
