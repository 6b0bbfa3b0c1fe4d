"""Pure control modules: permissions, bearer parsing, feedback weights, liveness, config, stubs."""
import itertools
import math

import pytest

from ejlb.control import feedback, liveness, protogen
from ejlb.control import tokens as tk
from ejlb.control.config import ConfigError, ControlConfig
from ejlb.control.errors import InvalidArgument, Unauthenticated
from ejlb.control.liveness import Liveness
from ejlb.control.tokens import Grant, Level, Resource

SESSION = tk.lineage(lb=1, reservation=4, session=9)


@pytest.mark.parametrize("level_held,level_needed", list(itertools.product(Level, Level)))
def test_levels_are_ordered(level_held, level_needed):
    g = [Grant(Resource.ALL, "", level_held)]
    assert tk.covers(g, SESSION, level_needed) == (level_held >= level_needed)


def test_scope_inheritance_and_isolation():
    for scope, rid in ((Resource.ALL, ""), (Resource.LOAD_BALANCER, "1"), (Resource.RESERVATION, "4"),
                       (Resource.SESSION, "9")):
        assert tk.covers([Grant(scope, rid, Level.UPDATE)], SESSION, Level.UPDATE)
    assert not tk.covers([Grant(Resource.SESSION, "9", Level.UPDATE)], tk.lineage(lb=1, reservation=4), Level.READ_ONLY)
    assert not tk.covers([Grant(Resource.LOAD_BALANCER, "2", Level.UPDATE)], SESSION, Level.READ_ONLY)
    assert not tk.covers([Grant(Resource.RESERVATION, "5", Level.UPDATE)], SESSION, Level.READ_ONLY)


def test_delegation_only_within_held_grants():
    held = [Grant(Resource.RESERVATION, "4", Level.UPDATE)]
    resolve = lambda r, i: {(Resource.SESSION, "9"): SESSION}.get((r, i))  # noqa: E731
    assert tk.grant_within(Grant(Resource.SESSION, "9", Level.READ_ONLY), held, resolve)
    assert tk.grant_within(Grant(Resource.RESERVATION, "4", Level.UPDATE), held, resolve)
    assert not tk.grant_within(Grant(Resource.LOAD_BALANCER, "1", Level.READ_ONLY), held, lambda r, i: tk.lineage(lb=1))
    assert not tk.grant_within(Grant(Resource.SESSION, "77", Level.READ_ONLY), held, resolve)  # unknown session


def test_grant_validation_names_field():
    with pytest.raises(InvalidArgument, match="resourceType=7"):
        Grant.make(7, "", 0)
    with pytest.raises(InvalidArgument, match="permission=9"):
        Grant.make(0, "", 9)
    with pytest.raises(InvalidArgument, match="resourceId='x1'"):
        Grant.make(2, "x1", 0)
    assert Grant.make(0, "ignored", 3) == Grant(Resource.ALL, "", Level.UPDATE)


def test_bearer_parsing():
    assert tk.bearer_token([("authorization", "Bearer abc")]) == "abc"
    with pytest.raises(Unauthenticated):
        tk.bearer_token([("x-other", "1")])
    with pytest.raises(InvalidArgument, match="Bearer"):
        tk.bearer_token([("authorization", "Token abc")])
    with pytest.raises(InvalidArgument):
        tk.bearer_token([("authorization", "Bearer   ")])
    assert tk.token_hash("a") != tk.token_hash("b") and len(tk.new_secret()) == 64


def test_feedback_deployed_rule():
    r = [feedback.Report(1000, 0, 0), feedback.Report(1000, 0, 0)]
    assert feedback.step(r) == [1000.0, 1000.0]
    w = feedback.step([feedback.Report(1000, 100, 0), feedback.Report(1000, -100, 0)])
    assert w[0] > w[1] and math.isclose(sum(w) / 2, 1000)
    assert feedback.step([feedback.Report(1000, -1e9, 0), feedback.Report(1000, 0, 0)])[0] > 0
    assert feedback.initial_weight(2.0) == 2000 and feedback.initial_weight(0) == 1000


def test_fill_feedback_moves_weight_away_from_full_workers():
    """Two workers, one half as fast, offered 90 % of their joint capacity and reporting fill with a
    zero control signal. Deployed rule: equal shares, the slow queue overflows. With fill_gain: the
    slow worker's share drops below the 0.37 it can drain, until the fills equalise, and its queue no longer overflows."""
    cap = (1 / 3, 2 / 3)  # work drained per tick, as a fraction of the offered total at load 1.0
    for gain in (0.0, 0.5):
        w, q = [1000.0, 1000.0], [0.0, 0.0]
        for _ in range(400):
            share = [x / sum(w) for x in w]
            q = [min(1.0, max(0.0, qi + 0.9 * s - c)) for qi, s, c in zip(q, share, cap)]
            w = feedback.step([feedback.Report(x, 0.0, f) for x, f in zip(w, q)], gain)
        slow_share = w[0] / sum(w)
        if gain == 0.0:
            assert slow_share == 0.5 and q[0] == 1.0
        else:
            assert 0.2 < slow_share < 0.42 and q[0] < 1.0


def test_liveness():
    assert liveness.classify(10.0, 0.0, 9.0, True) is Liveness.READY
    assert liveness.classify(10.0, 0.0, 9.0, False) is Liveness.NOT_READY
    assert liveness.classify(10.0, 0.0, 7.9, True) is Liveness.NOT_READY
    assert liveness.classify(70.0, 0.0, 9.9, True) is Liveness.REMOVED
    assert liveness.classify(9.0, 0.0, None, False) is Liveness.NOT_READY
    assert liveness.classify(10.5, 0.0, None, False) is Liveness.REMOVED


def test_config_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("listen: {host: 127.0.0.1, port: 0}\nadmin_token: abcdefgh12\nbackend: memory\n"
                 "instances:\n  - {lb_id: 3, ipv4: 127.0.0.2, ipv6: null, sync_port: 0}\n")
    c = ControlConfig.from_file(p)
    assert c.port == 0 and c.instances[0].lb_id == 3 and c.instances[0].ipv6 is None
    for text, field in (("bogus: 1", "bogus"), ("instances: [{lb_id: 9}]", "lb_id"),
                        ("instances: [{lb_id: 0, ipv4: 1.2.3}]", "ipv4"), ("port: 70000", "port"),
                        ("controller_period: 0", "controller_period"), ("admin_token: short", "admin_token"),
                        ("instances: [{lb_id: 0, data_min_port: 20, data_max_port: 10}]", "data_max_port"),
                        ("- a list", "mapping")):
        p.write_text(text)
        with pytest.raises(ConfigError, match=field):
            ControlConfig.from_file(p)


def test_committed_stubs_are_current():
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) not installed")
    assert protogen.stale() == []
