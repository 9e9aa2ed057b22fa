"""Every default audit rule, each shown firing and not firing, on orders the way the platforms send them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import orjson
import pytest

from orderhub.adapters.rules import RuleEngine, default_content
from orderhub.domain.audit import (
    RULE_SETS,
    AuditLine,
    AuditOrder,
    Decision,
    decide,
    line_context,
    order_context,
    province_short,
    vip_level,
)

PAID_AT = datetime(2025, 3, 18, 2, 12, tzinfo=UTC)  # 10:12 in Shanghai
SOUTH = ["广东省", "广西壮族自治区", "海南省", "福建省", "云南省", "贵州省", "四川省", "重庆市", "湖南省", "江西省"]
REMOTE = ["新疆维吾尔自治区", "西藏自治区", "青海省", "内蒙古自治区", "宁夏回族自治区", "甘肃省"]


def line(no: int = 1, **changes) -> AuditLine:
    base = AuditLine(no, f"SKU-{1000 + no}", "纯棉T恤 白色 L", 1, 5990, 5990, category="服装", cost=2400, weight_g=220)
    return replace(base, **changes)


def order(*lines: AuditLine, paid: int | None = None, **changes) -> AuditOrder:
    lines = lines or (line(),)
    goods = sum(x.unit_price * x.qty for x in lines)
    paid = sum(x.paid for x in lines) if paid is None else paid
    base = AuditOrder(
        id="o1", channel="taobao", shop_id="66660001", created_at=PAID_AT, paid_at=PAID_AT,
        goods=goods, discount=max(0, goods - paid), shipping=0, paid=paid,
        province="上海市", city="上海市", district="浦东新区", address_detail="世纪大道***",
        buyer_level=None, buyer_message=None, seller_remark=None, lines=lines,
        customer_channels=("taobao",), customer_order_count=1,
    )  # fmt: skip
    return replace(base, **changes)


@pytest.fixture(scope="module")
def engine() -> RuleEngine:
    rules = RuleEngine()
    for name in RULE_SETS:
        rules.load(f"{name}@1", default_content(name))
    return rules


@pytest.fixture(scope="module")
def audit(engine):
    keys = {name: f"{name}@1" for name in RULE_SETS}

    def run(o: AuditOrder) -> Decision:
        decision, _ = engine.decide(keys, o)
        return decision

    return run


def holds(decision: Decision) -> list[str]:
    return [h.code for h in decision.holds]


# ---- what the rules see ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "short"),
    [
        ("新疆维吾尔自治区", "新疆"), ("西藏自治区", "西藏"), ("上海", "上海"), ("上海市", "上海"), ("广东省", "广东"),
        ("广西壮族自治区", "广西"), ("内蒙古自治区", "内蒙古"), ("宁夏回族自治区", "宁夏"), ("香港特别行政区", "香港"),
        ("黑龙江省", "黑龙江"), (None, ""), ("", ""),
    ],
)  # fmt: skip
def test_provinces_are_compared_by_their_short_name_whatever_the_platform_sent(given, short):
    assert province_short(given) == short


@pytest.mark.parametrize(("given", "level"), [("V3", 3), ("3", 3), ("VIP5", 5), ("vip5", 5), ("黄金会员", 0), ("", 0), (None, 0)])
def test_member_levels_are_read_from_the_platforms_level_text(given, level):
    assert vip_level(given) == level


def test_the_order_context_counts_lines_amounts_and_weights_as_ops_think_of_them():
    o = order(
        line(1, qty=2, unit_price=25900, paid=48334, weight_g=500, category="服装"),
        line(2, sku=None, paid=7466, category="美妆", cost=None, weight_g=150),
        line(3, sku="GIFT-01", unit_price=0, paid=0, gift=True, category="服装", cost=900, weight_g=300),
        line(4, sku="SKU-1001", paid=100, cost=2400, presale=True, refunding=True, category=None),
        paid=60900, shipping=1000, buyer_level="V3", customer_channels=("douyin", "taobao"),
    )  # fmt: skip
    ctx = order_context(o)
    assert ctx["amount"] == 609.0 and ctx["paid_fen"] == 60900 and ctx["shipping_fen"] == 1000
    assert ctx["qty"] == 4  # the gift line does not count
    assert ctx["categories"] == ["服装", "美妆"]
    assert ctx["skus"] == ["SKU-1001", "GIFT-01"]  # the unmapped line is left out, duplicates once
    assert ctx["unmapped_lines"] == 1
    assert ctx["weight_kg"] == pytest.approx((1000 + 150 + 300 + 220) / 1000)
    assert ctx["below_cost_lines"] == 1  # line 4; the gift line and the line without a cost are not anomalies
    assert ctx["presale_lines"] == 1 and ctx["refunding_lines"] == 1
    assert ctx["vip_level"] == 3 and ctx["buyer_level"] == "V3"
    assert ctx["multi_channel"] is True
    assert ctx["paid_hour"] == 10
    assert ctx["address_complete"] is True
    assert ctx["buyer_message"] == "" and ctx["seller_remark"] == ""
    assert orjson.loads(orjson.dumps(ctx)) == ctx


def test_an_unpaid_order_has_paid_hour_minus_one_and_a_missing_district_makes_the_address_incomplete():
    ctx = order_context(order(paid_at=None, district=None))
    assert ctx["paid_hour"] == -1
    assert ctx["address_complete"] is False
    assert ctx["district"] == ""


def test_the_split_set_sees_each_line_with_its_own_weight():
    o = order(line(1, qty=5, weight_g=7000, presale=True, sku=None))
    assert line_context(o, o.lines[0]) == {
        "channel": "taobao", "line_no": 1, "sku": "", "category": "服装", "qty": 5, "weight_kg": 35.0, "presale": True, "gift": False,
    }  # fmt: skip


def test_the_default_rule_sets_are_valid_and_every_row_has_an_id_and_a_chinese_description():
    for name in RULE_SETS:
        content = default_content(name)
        assert RuleEngine.validate(content) == [], name
        rows = content["nodes"][1]["content"]["rules"]
        assert rows and all(row["_id"] and any("\u4e00" <= ch <= "\u9fff" for ch in row["_description"]) for row in rows)


def test_an_ordinary_order_goes_to_the_east_warehouse_by_zto_without_holds(audit):
    d = audit(order())
    assert (d.warehouse, d.carrier, d.priority, d.holds, d.warnings, d.tags) == ("WH-EAST", "ZTO", 0, (), (), ())
    assert d.fired[0] == "routing:routing-default-east"


# ---- routing --------------------------------------------------------------------------------


@pytest.mark.parametrize("province", SOUTH)
def test_south_china_provinces_ship_from_the_south_warehouse(audit, province):
    d = audit(order(province=province))
    assert d.warehouse == "WH-SOUTH"
    assert "routing:routing-south" in d.fired


@pytest.mark.parametrize("province", ["上海", "北京市", "浙江省", "新疆维吾尔自治区", "湖北省"])
def test_other_provinces_ship_from_the_east_warehouse(audit, province):
    d = audit(order(province=province))
    assert d.warehouse == "WH-EAST"
    assert "routing:routing-default-east" in d.fired


def test_baby_products_always_ship_from_the_east_warehouse_even_to_guangdong(audit):
    d = audit(order(line(category="母婴"), province="广东省"))
    assert d.warehouse == "WH-EAST"
    assert "routing:routing-muying-east" in d.fired
    assert audit(order(line(category="服装"), province="广东省")).warehouse == "WH-SOUTH"


def test_pinduoduo_orders_from_central_china_ship_from_the_south_warehouse_other_channels_do_not(audit):
    d = audit(order(channel="pdd", province="湖北省"))
    assert d.warehouse == "WH-SOUTH"
    assert "routing:routing-pdd-central-south" in d.fired
    assert audit(order(channel="taobao", province="湖北省")).warehouse == "WH-EAST"
    assert audit(order(channel="pdd", province="浙江省")).warehouse == "WH-EAST"


# ---- priority -------------------------------------------------------------------------------


@pytest.mark.parametrize(("level", "priority"), [("V5", 20), ("VIP6", 20), ("V4", 10), ("3", 10), ("V2", 0), ("黄金会员", 0), (None, 0)])
def test_members_from_level_three_are_shipped_first(audit, level, priority):
    assert audit(order(buyer_level=level)).priority == priority


@pytest.mark.parametrize(
    ("channel", "utc_hour", "minute", "priority"),
    [("douyin", 13, 30, 5), ("kuaishou", 15, 59, 5), ("douyin", 11, 59, 0), ("douyin", 16, 0, 0), ("taobao", 13, 30, 0)],
)
def test_live_stream_orders_paid_between_eight_pm_and_midnight_are_expedited(audit, channel, utc_hour, minute, priority):
    paid_at = datetime(2025, 3, 18, utc_hour, minute, tzinfo=UTC)
    assert audit(order(channel=channel, paid_at=paid_at)).priority == priority


def test_customers_buying_on_several_channels_get_priority_and_the_highest_priority_wins(audit):
    assert audit(order(customer_channels=("douyin", "taobao"))).priority == 5
    assert audit(order(customer_channels=("taobao",))).priority == 0
    d = audit(order(buyer_level="V5", customer_channels=("douyin", "taobao")))
    assert d.priority == 20
    assert {"priority:priority-vip5", "priority:priority-multi-channel"} <= set(d.fired)


# ---- holds, warnings, tags ------------------------------------------------------------------


@pytest.mark.parametrize("province", ["新疆维吾尔自治区", "西藏自治区", "新疆", "西藏"])
def test_orders_over_500_yuan_to_xinjiang_or_tibet_are_held_for_risk_review(audit, province):
    d = audit(order(line(unit_price=50001, paid=50001), province=province))
    assert holds(d) == ["risk_review"]
    assert d.holds[0].reason == "金额>¥500且收货地为新疆/西藏"
    assert d.holds[0].rule == "holds:risk-xinjiang-tibet"


def test_risk_review_needs_both_the_amount_and_the_region(audit):
    assert holds(audit(order(line(unit_price=50000, paid=50000), province="新疆维吾尔自治区"))) == []  # exactly ¥500 is not > 500
    assert holds(audit(order(line(unit_price=90000, paid=90000), province="上海市"))) == []
    assert holds(audit(order(line(unit_price=90000, paid=90000), province="青海省"))) == []


@pytest.mark.parametrize("province", REMOTE)
def test_remote_areas_get_a_warning_that_does_not_stop_the_order(audit, province):
    d = audit(order(province=province))
    assert [(w.code, w.reason) for w in d.warnings] == [("remote_area", "偏远地区，运费与时效需确认")]
    assert d.holds == ()


def test_nearby_provinces_get_no_remote_area_warning(audit):
    assert audit(order(province="四川省")).warnings == ()


@pytest.mark.parametrize("message", ["麻烦开发票，抬头见备注", "能改地址吗", "不要了想退款", "先别发，等我通知", "加急！明天要用"])
def test_buyer_messages_with_a_keyword_are_held_for_customer_service(audit, message):
    d = audit(order(buyer_message=message))
    assert holds(d) == ["buyer_message"]
    assert d.holds[0].rule == "holds:buyer-message-keywords"


@pytest.mark.parametrize("message", ["请尽快发货，谢谢", "送人的，包装好一点", "", None])
def test_ordinary_buyer_messages_do_not_hold_the_order(audit, message):
    assert holds(audit(order(buyer_message=message))) == []


@pytest.mark.parametrize("remark", ["暂缓发货", "客户要求别发", "已发起拦截"])
def test_seller_remarks_with_a_keyword_hold_the_order(audit, remark):
    assert holds(audit(order(seller_remark=remark))) == ["seller_remark"]


def test_ordinary_seller_remarks_do_not_hold_the_order(audit):
    assert holds(audit(order(seller_remark="已核实地址，正常发货"))) == []


def test_a_line_sold_below_cost_is_held_as_a_price_anomaly(audit):
    d = audit(order(line(qty=2, cost=2400, paid=4799)))
    assert holds(d) == ["price_anomaly"]
    assert d.holds[0].rule == "holds:price-below-cost"


def test_lines_at_cost_gifts_and_lines_without_a_known_cost_are_not_price_anomalies(audit):
    assert holds(audit(order(line(qty=2, cost=2400, paid=4800)))) == []
    assert holds(audit(order(line(1), line(2, sku="GIFT-01", unit_price=0, paid=0, gift=True, cost=900)))) == []
    assert holds(audit(order(line(cost=None, paid=1)))) == []


@pytest.mark.parametrize("missing", ["province", "city", "district", "address_detail"])
def test_an_incomplete_address_is_held(audit, missing):
    d = audit(order(**{missing: None}))
    assert "address_incomplete" in holds(d)
    assert audit(order(address_detail="   ")).holds[0].code == "address_incomplete"


def test_a_complete_address_is_not_held(audit):
    assert "address_incomplete" not in holds(audit(order()))


def test_a_line_without_a_merchant_sku_is_held_instead_of_guessed(audit):
    d = audit(order(line(1), line(2, sku=None)))
    assert holds(d) == ["sku_unmapped"]
    assert d.holds[0].reason == "存在未匹配商家编码的商品"
    assert holds(audit(order(line(1), line(2)))) == []


def test_a_customer_of_several_channels_is_tagged_not_held(audit):
    d = audit(order(customer_channels=("douyin", "taobao")))
    assert d.tags == ("multi_channel_customer",)
    assert d.holds == ()
    assert audit(order(customer_channels=("douyin",))).tags == ()


def test_an_order_can_carry_several_holds_at_once(audit):
    d = audit(order(line(unit_price=80000, paid=80000), province="西藏自治区", buyer_message="要发票", seller_remark="暂缓"))
    assert holds(d) == ["risk_review", "buyer_message", "seller_remark"]
    assert [w.code for w in d.warnings] == ["remote_area"]


# ---- gifts ----------------------------------------------------------------------------------


def gifts(decision: Decision) -> list[tuple[str, bool, int, str]]:
    return [(g.sku, g.reached, g.shortfall, g.message) for g in decision.gifts]


def test_an_order_short_of_the_first_spend_tier_shows_the_shortfall_in_yuan(audit):
    d = audit(order(line(unit_price=18650, paid=18650)))
    assert gifts(d) == [("GIFT-01", False, 1250, "未达赠品门槛：差¥12.50")]


def test_shipping_does_not_count_towards_the_spend_threshold(audit):
    d = audit(order(line(unit_price=19400, paid=19400), paid=20400, shipping=1000))
    assert gifts(d) == [("GIFT-01", False, 500, "未达赠品门槛：差¥5.00")]


def test_reaching_a_spend_tier_gives_its_gift_and_shows_how_far_the_next_tier_is(audit):
    d = audit(order(line(unit_price=19900, paid=19900)))
    assert gifts(d) == [("GIFT-01", True, 0, "满¥199赠 帆布袋×1"), ("GIFT-02", False, 20000, "未达赠品门槛：差¥200.00")]
    assert d.gifts[0].rule == "gifts:gift-spend-199" and d.gifts[0].qty == 1


def test_reaching_both_spend_tiers_gives_both_gifts(audit):
    d = audit(order(line(unit_price=39900, paid=39900)))
    assert gifts(d) == [("GIFT-01", True, 0, "满¥199赠 帆布袋×1"), ("GIFT-02", True, 0, "满¥399赠 试用装小样×1")]


def test_offline_pos_orders_get_no_spend_gifts(audit):
    assert audit(order(line(unit_price=39900, paid=39900), channel="pos")).gifts == ()


def test_buying_three_beauty_items_earns_the_sample_kit(audit):
    d = audit(order(line(1, category="美妆", qty=2, unit_price=1000, paid=2000), line(2, qty=1, unit_price=1000, paid=1000)))
    assert ("GIFT-02", True, 0, "满3件赠 试用装小样×1") in gifts(d)
    assert "gifts:gift-beauty-qty3" in d.fired


def test_fewer_than_three_items_in_a_beauty_order_shows_how_many_are_missing_and_gift_lines_do_not_count(audit):
    o = order(line(1, category="美妆", unit_price=1000, paid=1000), line(2, sku="GIFT-02", unit_price=0, paid=0, gift=True, qty=2))
    assert ("GIFT-02", False, 2, "未达赠品门槛：差2件") in gifts(audit(o))


def test_orders_without_beauty_products_get_no_quantity_offer(audit):
    d = audit(order(line(qty=5, unit_price=1000, paid=5000)))
    assert "gifts:gift-beauty-qty3" not in d.fired
    assert all("件" not in g.message for g in d.gifts)


def test_level_five_members_get_the_member_gift_box(audit):
    d = audit(order(line(unit_price=1000, paid=1000), buyer_level="V5"))
    assert ("GIFT-03", True, 0, "会员等级V5赠 会员礼盒×1") in gifts(d)


def test_lower_members_see_how_many_levels_they_are_short_and_non_members_see_nothing(audit):
    assert ("GIFT-03", False, 1, "未达赠品门槛：会员等级差1级") in gifts(audit(order(buyer_level="V4")))
    assert all(g.sku != "GIFT-03" for g in audit(order(buyer_level=None)).gifts)


# ---- carrier --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "carrier"),
    [
        ({"province": "新疆维吾尔自治区"}, "EMS"),
        ({"province": "甘肃省", "lines": (line(weight_g=25000),)}, "EMS"),  # remote wins over heavy
        ({"lines": (line(weight_g=20001),)}, "DBL"),
        ({"lines": (line(weight_g=20000),)}, "ZTO"),  # exactly 20 kg is not heavy
        ({"channel": "jd"}, "JD"),
        ({"lines": (line(unit_price=30100, paid=30100),), "paid": 30100}, "SF"),
        ({"lines": (line(unit_price=30000, paid=30000),), "paid": 30000}, "ZTO"),
        ({"buyer_level": "V5"}, "SF"),
        ({"buyer_level": "V4"}, "ZTO"),
        ({}, "ZTO"),
    ],
)
def test_the_carrier_is_chosen_by_region_weight_channel_and_value(audit, changes, carrier):
    assert audit(order(**changes)).carrier == carrier


# ---- split ----------------------------------------------------------------------------------


def test_a_presale_line_is_packed_separately_from_the_rest(audit):
    d = audit(order(line(1), line(2, presale=True)))
    assert d.separate_lines == {2: "presale"}
    assert "split:split-presale" in d.fired


def test_an_oversized_line_is_packed_separately_but_thirty_kilos_exactly_is_not(audit):
    assert audit(order(line(1), line(2, qty=5, weight_g=7000))).separate_lines == {2: "oversized"}
    assert audit(order(line(1), line(2, qty=5, weight_g=6000))).separate_lines == {}


def test_a_single_line_order_is_never_split(audit):
    assert audit(order(line(presale=True))).separate_lines == {}


def test_ordinary_lines_stay_in_one_package(audit):
    assert audit(order(line(1), line(2))).separate_lines == {}


# ---- the decision itself --------------------------------------------------------------------


def test_the_decision_is_json_and_reads_back_the_same(audit):
    d = audit(order(line(1), line(2, presale=True, unit_price=80000, paid=80000), province="西藏自治区", buyer_level="V4"))
    data = orjson.loads(orjson.dumps(d.as_dict()))
    assert data["separate_lines"] == {"2": "presale"}
    assert data["holds"] == [{"code": "risk_review", "reason": "金额>¥500且收货地为新疆/西藏", "rule": "holds:risk-xinjiang-tibet"}]
    assert Decision.from_dict(data) == d


def test_fired_rules_are_listed_in_rule_set_order(audit):
    d = audit(order(line(1), line(2, presale=True), province="西藏自治区", customer_channels=("jd", "pdd")))
    sets = [rule.split(":")[0] for rule in d.fired]
    assert sets == sorted(sets, key=RULE_SETS.index)


def test_no_rule_output_at_all_means_no_opinion():
    d = decide(order(), {}, {})
    assert (d.warehouse, d.priority, d.holds, d.warnings, d.gifts, d.carrier, d.tags, d.separate_lines, d.fired) == (
        None, 0, (), (), (), None, (), {}, (),
    )  # fmt: skip


def test_odd_rule_outputs_do_not_break_the_decision():
    outputs = {
        "routing": [{"warehouse": 7, "rule": "r"}],
        "priority": [{"priority": "high", "rule": "p"}, "junk", None],
        "holds": {"code": "manual", "action": "typo", "rule": "h"},
        "gifts": [{"sku": "GIFT-01"}, {"kind": "bogus", "sku": "X"}, {"threshold": 10}],
        "carrier": None,
        "split": "??",
    }
    d = decide(order(line(1), line(2)), outputs, {1: None, 2: [{"package": "presale", "rule": "s"}]})
    assert d.warehouse is None and d.priority == 0
    assert [(h.code, h.rule) for h in d.holds] == [("manual", "holds:h")]  # an unknown action holds rather than lets through
    assert [(g.sku, g.reached) for g in d.gifts] == [("GIFT-01", True)]  # no threshold: always given
    assert d.separate_lines == {2: "presale"}
