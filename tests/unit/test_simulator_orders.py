"""Generated platform orders are shaped like the real payloads and their money adds up exactly."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orderhub.demo.catalogue import REMOTE_PROVINCES, customers, skus
from orderhub.simulator import Simulator
from orderhub.simulator.amounts import split_by_weight, yuan
from orderhub.simulator.clock import FixedClock
from orderhub.simulator.scenarios import SCENARIOS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "platforms"
NOW = 1742263920 + 30 * 86400


@pytest.fixture(scope="module")
def generated():
    sim = Simulator(seed=2025, clock=FixedClock(NOW))
    result = sim.generate(2000, ["douyin", "youzan", "jd"])
    return sim, result


def fen(text: str) -> int:
    value = Decimal(text) * 100
    assert value == value.to_integral_value(), text
    return int(value)


def key_paths(value, prefix=""):
    """Every key path in a JSON value; lists contribute the keys of their first element."""
    out = set()
    if isinstance(value, dict):
        for k, v in value.items():
            out.add(f"{prefix}/{k}")
            out |= key_paths(v, f"{prefix}/{k}")
    elif isinstance(value, list) and value:
        out |= key_paths(value[0], prefix + "[]")
    return out


def fixture(name):
    return json.loads((FIXTURES / name).read_text())


def test_douyin_amounts_satisfy_the_platform_relations(generated):
    sim, result = generated
    orders = [sim.render(o) for o in result.orders if o.channel == "douyin"]
    assert len(orders) > 500
    for d in orders:
        skus_ = d["sku_order_list"]
        assert sum(s["pay_amount"] for s in skus_) == d["pay_amount"] - d["post_amount"]
        assert d["promotion_amount"] == (d["promotion_shop_amount"] + d["promotion_platform_amount"]
                                         + d["promotion_talent_amount"])
        assert d["pay_amount"] == (sum(s["origin_amount"] * s["item_num"] for s in skus_)
                                   - d["promotion_amount"] + d["post_amount"])
        assert d["order_amount"] == sum(s["sum_amount"] for s in skus_)
        assert d["total_promotion_amount"] == d["promotion_amount"] + d["post_promotion_amount"]
        assert d["platform_cost_amount"] == d["only_platform_cost_amount"] + d["author_cost_amount"]
        for s in skus_:
            assert s["sum_amount"] == s["origin_amount"] * s["item_num"]
            assert s["pay_amount"] == s["order_amount"] - s["promotion_amount"] >= 0
            assert s["promotion_amount"] == s["promotion_shop_amount"] + s["promotion_platform_amount"]
            if s["given_product_type"] == "FREE":
                assert s["origin_amount"] == s["pay_amount"] == 0
            assert isinstance(s["product_id"], int) and len(s["product_id_str"]) == 19
        assert len(d["order_id"]) == 19 and d["order_id"].isdigit()


def test_jd_amounts_satisfy_the_platform_relations(generated):
    sim, result = generated
    orders = [sim.render(o) for o in result.orders if o.channel == "jd"]
    assert len(orders) > 400
    for d in orders:
        total = sum(fen(i["jdPrice"]) * int(i["itemTotal"]) for i in d["itemInfoList"])
        coupons = sum(fen(c["couponPrice"]) for c in d["couponDetailList"])
        shop = sum(fen(c["couponPrice"]) for c in d["couponDetailList"] if c["couponType"].startswith("100-"))
        assert fen(d["orderTotalPrice"]) == total
        assert fen(d["orderPayment"]) + fen(d["balanceUsed"]) == total - coupons + fen(d["freightPrice"])
        assert fen(d["sellerDiscount"]) == shop
        assert fen(d["orderSellerPrice"]) == total - shop


def test_youzan_amounts_satisfy_the_platform_relations(generated):
    sim, result = generated
    orders = [sim.render(o)["full_order_info"] for o in result.orders if o.channel == "youzan"]
    assert len(orders) > 300
    for d in orders:
        pay = d["pay_info"]
        assert sum(fen(x["payment"]) for x in d["orders"]) == fen(pay["payment"]) - fen(pay["post_fee"])
        assert fen(pay["total_fee"]) == sum(fen(x["price"]) * x["num"] for x in d["orders"])
        for x in d["orders"]:
            if x["is_present"]:
                assert x["price"] == "0.00"


def test_money_strings_have_exactly_two_decimals(generated):
    sim, result = generated
    for o in result.orders[:300]:
        if o.channel == "jd":
            d = sim.render(o)
            for key in ("orderTotalPrice", "orderPayment", "freightPrice", "sellerDiscount", "balanceUsed"):
                assert d[key].split(".")[1].__len__() == 2


@pytest.mark.parametrize("channel,extract", [
    ("douyin", lambda f: f["data"]["shop_order_detail"]),
    ("youzan", lambda f: f["data"]),
    ("jd", lambda f: f["jingdong_pop_order_search_responce"]["searchorderinfo_result"]["orderInfoList"][0]),
])
def test_a_plain_order_has_exactly_the_keys_of_the_fixture(generated, channel, extract):
    sim, result = generated
    name = {"douyin": "douyin_order_detail.json", "youzan": "youzan_trade_get.json", "jd": "jd_order_search.json"}
    expected = key_paths(extract(fixture(name[channel])))
    plain = next(o for o in result.orders if o.channel == channel and o.scenarios == ["plain"])
    got = key_paths(sim.render(plain))
    if channel == "jd":  # a plain order has no coupons; compare those with a discounted order
        expected = {k for k in expected if not k.startswith("/couponDetailList[]")}
        both = next(o for o in result.orders if o.channel == "jd" and {"coupon_shop", "coupon_platform"} <= set(o.scenarios))
        coupon_keys = {k for k in key_paths(sim.render(both)) if k.startswith("/couponDetailList[]")}
        assert coupon_keys == {k for k in key_paths(extract(fixture(name[channel]))) if k.startswith("/couponDetailList[]")}
    assert got == expected


def test_fixture_value_types_are_kept(generated):
    sim, result = generated
    d = sim.render(next(o for o in result.orders if o.channel == "douyin"))
    f = fixture("douyin_order_detail.json")["data"]["shop_order_detail"]
    for key, value in f.items():
        assert type(d[key]) is type(value), key


def test_every_scenario_of_the_mix_appears_in_2000_orders(generated):
    sim, result = generated
    seen = Counter(s for o in result.orders for s in o.scenarios)
    missing = [s for s in SCENARIOS if not seen[s]]
    assert not missing, seen
    assert 0.2 < seen["multi_sku"] / len(result.orders) < 0.4
    assert 0.06 < seen["remote_area"] / len(result.orders) < 0.18


def test_the_same_seed_generates_the_same_orders_and_pushes():
    def run(seed):
        sim = Simulator(seed=seed, clock=FixedClock(NOW))
        result = sim.generate(200, ["douyin", "youzan", "jd"])
        return [sim.payload(o) for o in result.orders], [(p.headers, p.body) for p in result.pushes]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_buyer_pii_never_appears_in_plaintext(generated):
    sim, result = generated
    for o in result.orders[:400]:
        text = sim.payload(o).decode()
        c = o.customer
        assert c.phone not in text and o.address.detail not in text
        if o.channel != "jd":
            assert c.name not in text
    dy = next(o for o in result.orders if o.channel == "douyin")
    d = sim.render(dy)
    assert d["encrypt_post_tel"].startswith("$$") and d["encrypt_post_tel"].endswith("$1$$")
    assert d["encrypt_post_receiver"].startswith("##") and d["encrypt_post_receiver"].endswith("#1##")
    assert d["mask_post_receiver"] == dy.customer.name[0] + "*" * (len(dy.customer.name) - 1)
    assert sim.decrypt(d["encrypt_post_tel"]) == dy.customer.phone
    assert sim.decrypt(d["post_addr"]["encrypt_detail"]) == dy.address.detail
    jd = sim.render(next(o for o in result.orders if o.channel == "jd"))
    assert jd["consigneeInfo"]["mobile"][3:7] == "****" and jd["consigneeInfo"]["fullname"].endswith("**")


def test_update_times_strictly_increase_through_each_order_history(generated):
    _, result = generated
    for o in result.orders:
        times = [t for t, _ in o.history]
        assert times == sorted(times) and len(set(times)) == len(times)
        assert o.update_time == times[-1] <= NOW


def test_scenarios_change_the_platform_state(generated):
    sim, result = generated
    by = {}
    for o in result.orders:
        for s in o.scenarios:
            by.setdefault((o.channel, s), o)
    d = sim.render(by[("douyin", "refund_full")])
    assert d["order_status"] == 4 and d["main_status"] == 21
    assert {s["after_sale_info"]["refund_status"] for s in d["sku_order_list"]} == {3}
    d = sim.render(by[("douyin", "refund_partial")])
    assert d["order_status"] != 4
    assert sorted(s["after_sale_info"]["refund_status"] for s in d["sku_order_list"]).count(3) == 1
    d = sim.render(by[("douyin", "gift")])
    assert any(s["given_product_type"] == "FREE" and s["pay_amount"] == 0 for s in d["sku_order_list"])
    d = sim.render(by[("douyin", "shipped")])
    assert d["logistics_info"][0]["tracking_no"] and d["ship_time"] > 0
    d = sim.render(by[("douyin", "unpaid_closed")])
    assert d["order_status"] == 4 and d["pay_time"] == 0
    d = sim.render(by[("jd", "gift")])
    assert any(i["jdPrice"] == "0.00" for i in d["itemInfoList"])
    d = sim.render(by[("jd", "cancel_after_pay")])
    assert d["orderState"] == "TRADE_CANCELED"
    d = sim.render(by[("youzan", "gift")])["full_order_info"]
    assert any(x["is_present"] and x["price"] == "0.00" for x in d["orders"])
    d = sim.render(by[("youzan", "refund_full")])["full_order_info"]
    assert d["order_info"]["status"] == "TRADE_CLOSED" and d["order_info"]["refund_state"] == 12
    d = sim.render(by[("douyin", "remote_area")])
    assert d["post_addr"]["province"]["name"] in REMOTE_PROVINCES


def pushes_of(result, order):
    return [p for p in result.pushes if p.order_id == order.original_id]


def test_out_of_order_pushes_send_the_older_state_last(generated):
    _, result = generated
    dy = next(o for o in result.orders if o.channel == "douyin" and "out_of_order" in o.scenarios)
    tags = [p.kind for p in pushes_of(result, dy)]
    assert tags.index("106") < tags.index("101")
    yz = next(o for o in result.orders if o.channel == "youzan" and "out_of_order" in o.scenarios)
    versions = [json.loads(p.body)["version"] for p in pushes_of(result, yz)]
    assert any(later < earlier for earlier, later in zip(versions, versions[1:]))


def test_duplicate_pushes_repeat_the_same_signed_body(generated):
    _, result = generated
    o = next(o for o in result.orders if "duplicate_push" in o.scenarios)
    bodies = [p.body for p in pushes_of(result, o)]
    assert len(bodies) - len(set(bodies)) == 1


def test_youzan_push_message_field_is_url_encoded_json_of_the_trade(generated):
    _, result = generated
    p = next(p for p in result.pushes if p.channel == "youzan")
    body = json.loads(p.body)
    assert json.loads(unquote(body["msg"]))["tid"] == body["id"]
    assert list(body) == sorted(body)  # the field order of the real (and fixture) body


def test_catalogue_and_customers_are_as_big_as_promised():
    assert 190 <= len(skus()) <= 220
    assert len({s.code for s in skus()}) == len(skus())
    people = customers()
    assert len(people) == 500
    assert 0.07 <= sum(c.region.remote for c in people) / 500 <= 0.15


@given(st.integers(min_value=0, max_value=10**9), st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=8))
def test_split_by_weight_is_exact(total, weights):
    parts = split_by_weight(total, weights)
    assert sum(parts) == (total if sum(weights) else 0)
    assert all(p >= 0 for p in parts)


@given(st.integers(min_value=0, max_value=10**12))
def test_yuan_formatting_round_trips(value):
    assert fen(yuan(value)) == value
