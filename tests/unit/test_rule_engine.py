"""The zen-engine adapter: loading, switching rows off, which row fired, tracing, and telling editors what is wrong."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderhub.adapters.rules import RuleEngine, RuleError, default_content
from orderhub.domain.audit import RULE_SETS, AuditLine, AuditOrder

PAID_AT = datetime(2025, 3, 18, 13, 5, tzinfo=UTC)


def table_graph(hit_policy: str, rows: list[dict], inputs=(("amount", "实付"),), outputs=(("code", "代码"),)) -> dict:
    return {
        "nodes": [
            {"id": "in", "type": "inputNode", "name": "订单", "position": {"x": 0, "y": 0}},
            {
                "id": "table", "type": "decisionTableNode", "name": "表", "position": {"x": 200, "y": 0},
                "content": {
                    "hitPolicy": hit_policy,
                    "inputs": [{"id": f"i-{f}", "name": n, "field": f} for f, n in inputs],
                    "outputs": [{"id": f"o-{f}", "name": n, "field": f} for f, n in outputs],
                    "rules": rows,
                },
            },
            {"id": "out", "type": "outputNode", "name": "结果", "position": {"x": 400, "y": 0}},
        ],
        "edges": [
            {"id": "e1", "sourceId": "in", "targetId": "table", "type": "edge"},
            {"id": "e2", "sourceId": "table", "targetId": "out", "type": "edge"},
        ],
    }  # fmt: skip


ROWS = [
    {"_id": "big", "_description": "大额", "i-amount": "> 500", "o-code": '"big"'},
    {"_id": "any", "_description": "所有", "i-amount": "", "o-code": '"any"'},
]


def a_line(no: int, **changes) -> AuditLine:
    return replace(AuditLine(no, f"SKU-{1000 + no}", "商品", 1, 5990, 5990, category="服装", cost=2400, weight_g=220), **changes)


def an_order(*lines: AuditLine, **changes) -> AuditOrder:
    lines = lines or (a_line(1), a_line(2))
    paid = sum(x.paid for x in lines)
    base = AuditOrder(
        "o1",
        "douyin",
        "88880001",
        PAID_AT,
        PAID_AT,
        paid,
        0,
        0,
        paid,
        "广东省",
        "深圳市",
        "南山区",
        "科技园***",
        "V3",
        None,
        None,
        lines,
        ("douyin",),
        1,
    )
    return replace(base, **changes)


@pytest.fixture
def engine() -> RuleEngine:
    return RuleEngine()


@pytest.fixture(scope="module")
def defaults() -> RuleEngine:
    rules = RuleEngine()
    for name in RULE_SETS:
        rules.load(f"{name}@1", default_content(name))
    return rules


KEYS = {name: f"{name}@1" for name in RULE_SETS}


def test_a_first_hit_table_returns_the_first_matching_row_and_says_which_it_was(engine):
    engine.load("t@1", table_graph("first", ROWS))
    assert engine.loaded("t@1") and not engine.loaded("t@2")
    result = engine.evaluate("t@1", {"amount": 600}).result
    assert result == {"code": "big", "rule": "big"}
    assert engine.evaluate("t@1", {"amount": 10}).result == {"code": "any", "rule": "any"}


def test_a_first_hit_table_with_no_match_returns_an_empty_result(engine):
    engine.load("t@1", table_graph("first", ROWS[:1]))
    assert engine.evaluate("t@1", {"amount": 10}).result == {}


def test_a_collect_table_returns_every_matching_row(engine):
    engine.load("t@1", table_graph("collect", ROWS))
    assert engine.evaluate("t@1", {"amount": 600}).result == [{"code": "big", "rule": "big"}, {"code": "any", "rule": "any"}]


def test_a_switched_off_row_no_longer_fires_and_the_stored_content_is_untouched(engine):
    content = table_graph("collect", ROWS)
    before = copy.deepcopy(content)
    engine.load("t@1#off", content, disabled=["big"])
    assert engine.evaluate("t@1#off", {"amount": 600}).result == [{"code": "any", "rule": "any"}]
    assert content == before


def test_loading_a_key_again_replaces_what_it_evaluates(engine):
    engine.load("t@1", table_graph("first", ROWS))
    engine.load("t@1", table_graph("first", [{"_id": "new", "i-amount": "> 0", "o-code": '"new"'}]))
    assert engine.evaluate("t@1", {"amount": 600}).result == {"code": "new", "rule": "new"}


def test_reloading_a_set_also_changes_what_a_whole_decision_uses(engine):
    for name in RULE_SETS:
        engine.load(f"{name}@1", default_content(name))
    order = an_order(province="新疆维吾尔自治区", lines=(a_line(1, unit_price=60000, paid=60000),), paid=60000, goods=60000)
    assert [h.code for h in engine.decide(KEYS, order)[0].holds] == ["risk_review"]
    engine.load("holds@1", default_content("holds"), disabled=["risk-xinjiang-tibet"])
    assert engine.decide(KEYS, order)[0].holds == ()


def test_evaluating_a_set_that_is_not_loaded_is_a_rule_error(engine):
    with pytest.raises(RuleError, match="not loaded"):
        engine.evaluate("nope@1", {})
    with pytest.raises(RuleError, match="not loaded"):
        engine.decide({"holds": "nope@1"}, an_order())


def test_an_evaluation_reports_its_time_and_a_trace_only_when_asked(engine):
    engine.load("t@1", table_graph("first", ROWS))
    plain = engine.evaluate("t@1", {"amount": 600})
    assert plain.trace is None and plain.micros > 0
    traced = engine.evaluate("t@1", {"amount": 600}, trace=True)
    assert traced.trace["table"]["traceData"]["rule"]["_id"] == "big"
    orjson.dumps(traced.trace)  # JSON-able, for the dry-run API


def test_zen_len_counts_utf8_bytes_not_characters(engine):
    rows = [{"_id": "long", "i-buyer_message": "len($) > 6", "o-code": '"long"'}]
    engine.load("len@1", table_graph("first", rows, inputs=(("buyer_message", "留言"),)))
    assert engine.evaluate("len@1", {"buyer_message": "发票"}).result == {}  # 2 characters, 6 bytes
    assert engine.evaluate("len@1", {"buyer_message": "开发票"}).result["rule"] == "long"  # 3 characters, 9 bytes


def test_a_dry_run_trace_shows_every_set_and_each_line_of_the_split(defaults):
    decision, trace = defaults.decide(KEYS, an_order(a_line(1), a_line(2, presale=True)), trace=True)
    assert set(trace) == set(RULE_SETS)
    assert set(trace["split"]) == {"1", "2"}
    assert decision.separate_lines == {2: "presale"}
    orjson.dumps(trace)


def test_a_whole_decision_without_trace_matches_the_traced_one(defaults):
    order = an_order(a_line(1, presale=True), a_line(2, qty=5, weight_g=7000), buyer_message="要发票", customer_channels=("a", "b"))
    fast, none = defaults.decide(KEYS, order)
    slow, _ = defaults.decide(KEYS, order, trace=True)
    assert none is None
    assert fast == slow


orders = st.builds(
    an_order,
    channel=st.sampled_from(["douyin", "taobao", "jd", "pdd", "pos", "kuaishou"]),
    province=st.sampled_from(["新疆维吾尔自治区", "西藏自治区", "广东省", "上海", "湖北省", "甘肃省", None]),
    buyer_level=st.sampled_from([None, "V1", "3", "V5", "VIP7", "黄金会员"]),
    buyer_message=st.sampled_from([None, "", "要发票", "谢谢", "加急"]),
    seller_remark=st.sampled_from([None, "拦截", "好"]),
    customer_channels=st.sampled_from([(), ("douyin",), ("douyin", "jd")]),
    paid_at=st.sampled_from([None, PAID_AT, PAID_AT - timedelta(hours=4)]),
    lines=st.lists(
        st.builds(
            a_line,
            st.just(0),
            sku=st.sampled_from(["SKU-1", "SKU-2", None]),
            qty=st.integers(1, 6),
            paid=st.integers(0, 90000),
            category=st.sampled_from(["服装", "美妆", "母婴", None]),
            weight_g=st.sampled_from([0, 300, 8000, 31000]),
            presale=st.booleans(),
            gift=st.booleans(),
        ),
        min_size=1,
        max_size=4,
    ).map(lambda ls: tuple(replace(x, line_no=i + 1) for i, x in enumerate(ls))),
)


@settings(max_examples=80, deadline=None)
@given(orders)
def test_the_combined_evaluation_always_decides_like_one_set_at_a_time(defaults, order):
    assert defaults.decide(KEYS, order)[0] == defaults.decide(KEYS, order, trace=True)[0]


def test_a_richer_graph_than_one_table_is_evaluated_on_its_own_and_still_decides(defaults):
    graph = default_content("priority")
    # an expression node in front of the table: the editor allows it, so the engine must too
    graph["nodes"].append({
        "id": "expr", "type": "expressionNode", "name": "加工", "position": {"x": 0, "y": 0},
        "content": {"expressions": [{"id": "x1", "key": "vip_level", "value": "vip_level + 2"}]},
    })  # fmt: skip
    table_id = graph["nodes"][1]["id"]
    graph["edges"] = [
        {"id": "a", "sourceId": graph["nodes"][0]["id"], "targetId": "expr", "type": "edge"},
        {"id": "b", "sourceId": "expr", "targetId": table_id, "type": "edge"},
        {"id": "c", "sourceId": table_id, "targetId": graph["nodes"][2]["id"], "type": "edge"},
    ]
    assert RuleEngine.validate(graph) == []
    defaults.load("priority@rich", graph)
    order = an_order(buyer_level="V3")
    decision, _ = defaults.decide({**KEYS, "priority": "priority@rich"}, order)
    assert decision.priority == 20  # V3 + 2 reads as V5
    assert decision == defaults.decide({**KEYS, "priority": "priority@rich"}, order, trace=True)[0]


# ---- validation -----------------------------------------------------------------------------


def test_the_default_rule_sets_validate():
    assert all(RuleEngine.validate(default_content(name)) == [] for name in RULE_SETS)


def problems_of(mutate) -> list[str]:
    graph = table_graph("first", copy.deepcopy(ROWS))
    mutate(graph)
    return RuleEngine.validate(graph)


def table(graph):
    return graph["nodes"][1]["content"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda g: g.pop("nodes"), "'nodes' list"),
        (lambda g: g["nodes"].pop(1) and g["edges"].clear(), "no decision table"),
        (lambda g: g["nodes"].pop(0) and g["edges"].pop(0), "no inputNode"),
        (lambda g: g["edges"].append({"id": "x", "sourceId": "table", "targetId": "ghost"}), "does not join"),
        (lambda g: table(g)["rules"][0].pop("_id"), "needs an '_id'"),
        (lambda g: table(g)["rules"][1].update(_id="big"), "used twice"),
        (lambda g: table(g)["rules"][0].update({"i-amount": "> "}), "row 'big', input '实付'"),
        (lambda g: table(g)["rules"][0].update({"o-code": "'big"}), "row 'big', output '代码'"),
        (lambda g: table(g)["rules"][0].update({"i-amount": 500}), "must be an expression string"),
        (lambda g: table(g).update(hitPolicy="unique"), "hitPolicy"),
        (lambda g: table(g)["outputs"].append({"id": "r", "name": "r", "field": "rule"}), "reserved"),
        (lambda g: g["edges"].append({"id": "loop", "sourceId": "table", "targetId": "in", "type": "edge"}), "zen rejects"),
    ],
)
def test_invalid_rule_content_is_explained(mutate, expected):
    problems = problems_of(mutate)
    assert problems, "expected a problem"
    assert any(expected in p for p in problems), problems


def test_content_that_is_not_a_graph_is_explained():
    assert RuleEngine.validate([]) == ["rule content must be a JSON object (a JDM graph)"]  # type: ignore[arg-type]


def test_loading_content_of_the_wrong_shape_is_a_rule_error(engine):
    with pytest.raises(RuleError, match="JDM graph"):
        engine.load("bad@1", {"nodes": "no"})
