"""JD POP adapter: JOS signing, paging and errors over a mock router, normalisation of the fixture."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderhub.adapters.channels.base import ShopConfig
from orderhub.adapters.channels.jd import (
    OPTIONAL_FIELDS,
    ORDER_STATES,
    JdChannel,
    build_form,
    jos_sign,
)
from orderhub.domain.errors import ErrorCode, FetchError, NormalizationError
from orderhub.domain.ids import order_id
from orderhub.domain.status import Status

FIXTURE = Path(__file__).parents[1] / "fixtures" / "platforms" / "jd_order_search.json"
SECRET = "fake-jd-app-secret-0001"
SHOP = ShopConfig(
    channel="jd",
    shop_id="10000001",
    name="测试京东店",
    app_key="FAKEJDAPPKEY0001",
    app_secret=SECRET,
    api_base_url="http://jd.test/jd",
    extra={"access_token": "fake-jd-access-token-0001"},
)
CST = timezone(timedelta(hours=8))


def fixture_order() -> dict:
    data = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return copy.deepcopy(data["jingdong_pop_order_search_responce"]["searchorderinfo_result"]["orderInfoList"][0])


def fast_channel(**kwargs) -> JdChannel:
    return JdChannel(wait_min=0.001, wait_max=0.002, **kwargs)


def form_of(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode(), keep_blank_values=True).items()}


def independent_sign(form: dict[str, str], secret: str) -> str:
    """The JOS rule written out again, not through the adapter's helper."""
    pieces = [secret]
    for key in sorted(k for k in form if k != "sign"):
        pieces.append(key + form[key])
    pieces.append(secret)
    return hashlib.md5("".join(pieces).encode("utf-8")).hexdigest().upper()


def run(coro):
    return asyncio.run(coro)


# ---- signing ---------------------------------------------------------------------------------

VECTOR_FORM = {
    "method": "jingdong.pop.order.get",
    "app_key": "FAKEJDAPPKEY0001",
    "access_token": "fake-jd-access-token-0001",
    "timestamp": "2025-03-18 10:15:00",
    "v": "2.0",
    "format": "json",
    "360buy_param_json": '{"optional_fields":"orderId,orderState","order_id":"300000000001","order_state":"WAIT_SELLER_STOCK_OUT"}',
}
VECTOR_SIGN = "F8E5BB4CA1F1156C2D535F99B37A9829"  # also in docs/_platforms_jd_file.md (md5sum-checked)


def test_sign_matches_the_published_vector_and_an_independent_computation():
    assert independent_sign(VECTOR_FORM, SECRET) == VECTOR_SIGN
    assert jos_sign(VECTOR_FORM, SECRET) == VECTOR_SIGN


def test_sign_ignores_an_existing_sign_field():
    assert jos_sign({**VECTOR_FORM, "sign": "WHATEVER"}, SECRET) == VECTOR_SIGN


@pytest.mark.parametrize("key", sorted(VECTOR_FORM))
def test_changing_one_byte_of_any_field_changes_the_sign(key):
    changed = dict(VECTOR_FORM)
    value = changed[key]
    changed[key] = value[:-1] + chr(ord(value[-1]) ^ 1)
    assert jos_sign(changed, SECRET) != VECTOR_SIGN


def test_one_byte_of_the_secret_changes_the_sign():
    assert jos_sign(VECTOR_FORM, SECRET[:-1] + "2") != VECTOR_SIGN


def test_built_form_has_the_router_fields_and_a_valid_sign():
    now = datetime(2025, 3, 18, 2, 15, tzinfo=timezone.utc)
    form = build_form("jingdong.pop.order.get", {"order_id": "300000000001", "optional_fields": "a,b"}, SHOP, now)
    assert form["timestamp"] == "2025-03-18 10:15:00"  # GMT+8
    assert form["v"] == "2.0" and form["format"] == "json" and form["access_token"] == "fake-jd-access-token-0001"
    assert form["360buy_param_json"] == '{"optional_fields":"a,b","order_id":"300000000001"}'
    assert form["sign"] == independent_sign(form, SECRET)


def test_param_json_keeps_chinese_as_utf8():
    form = build_form("m", {"remark": "请尽快发货"}, SHOP, datetime(2025, 1, 1, tzinfo=CST))
    assert form["360buy_param_json"] == '{"remark":"请尽快发货"}'


# ---- pulling and fetching over a mock router ---------------------------------------------------


def search_page(orders: list[dict], total: int) -> dict:
    return {
        "jingdong_pop_order_search_responce": {
            "code": "0",
            "searchorderinfo_result": {"apiResult": {"success": True}, "orderInfoList": orders, "orderTotal": total},
        }
    }


def numbered(n: int) -> dict:
    order = fixture_order()
    order["orderId"] = str(300000000000 + n)
    return order


def test_pull_window_reads_every_page_with_signed_requests():
    pages = {1: [numbered(i) for i in range(100)], 2: [numbered(i) for i in range(100, 200)], 3: [numbered(200)]}
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url == "http://jd.test/jd/routerjson" and request.method == "POST"
        form = form_of(request)
        assert form["sign"] == independent_sign(form, SECRET)
        params = json.loads(form["360buy_param_json"])
        seen.append(params)
        return httpx.Response(200, json=search_page(pages[int(params["page"])], 201))

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            start = datetime(2025, 3, 18, 10, 0, tzinfo=CST)
            return await fast_channel().pull_window(http, SHOP, start, start + timedelta(minutes=10))

    orders = run(go())
    assert [o["orderId"] for o in orders] == [str(300000000000 + i) for i in range(201)]
    assert [p["page"] for p in seen] == ["1", "2", "3"]
    first = seen[0]
    assert first["start_date"] == "2025-03-18 10:00:00" and first["end_date"] == "2025-03-18 10:10:00"
    assert first["dateType"] == 0 and first["page_size"] == "100"
    assert first["order_state"] == ORDER_STATES and "TRADE_CANCELED" in first["order_state"]
    for starred in ("balanceUsed", "paymentConfirmTime", "venderRemark", "waybill", "logisticsId", "returnOrder"):
        assert starred in first["optional_fields"].split(",")
    assert first["optional_fields"] == OPTIONAL_FIELDS


def test_pull_window_stops_on_an_empty_page_even_if_the_total_says_more():
    calls = []

    def handler(request):
        page = int(json.loads(form_of(request)["360buy_param_json"])["page"])
        calls.append(page)
        return httpx.Response(200, json=search_page([numbered(i) for i in range(100)] if page == 1 else [], 500))

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            now = datetime(2025, 3, 18, tzinfo=CST)
            return await fast_channel().pull_window(http, SHOP, now, now + timedelta(hours=1))

    assert len(run(go())) == 100 and calls == [1, 2]


def test_fetch_orders_returns_known_ids_and_skips_unknown_ones():
    in_flight = 0
    peak = 0

    async def handler(request):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.005)
        in_flight -= 1
        oid = json.loads(form_of(request)["360buy_param_json"])["order_id"]
        info = numbered(int(oid) - 300000000000) if oid != "999" else None
        detail = {"apiResult": {"success": True}, "orderInfo": info}
        return httpx.Response(200, json={"jingdong_pop_order_get_responce": {"code": "0", "orderDetailInfo": detail}})

    ids = [str(300000000000 + i) for i in range(40)] + ["999"]

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            return await fast_channel().fetch_orders(http, SHOP, ids)

    result = run(go())
    assert sorted(result) == sorted(ids[:-1])
    assert result["300000000007"]["orderId"] == "300000000007"
    assert 1 < peak <= 16


def call_with(handler, channel: JdChannel | None = None):
    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            return await (channel or fast_channel()).fetch_orders(http, SHOP, ["300000000001"])

    return run(go())


def counting(response_factory):
    calls = {"n": 0}

    def handler(request):
        calls["n"] += 1
        return response_factory(calls["n"], request)

    return handler, calls


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(503, text="busy"),
        httpx.Response(429, text="slow down"),
        httpx.Response(200, json={"error_response": {"code": "7", "zh_desc": "调用频率超限", "en_desc": "Call limited"}}),
        httpx.Response(200, json={"error_response": {"code": "2", "zh_desc": "限制时间内调用失败次数", "en_desc": "App Call Limited"}}),
    ],
    ids=["503", "429", "code7-rate-limit", "code2-call-limited"],
)
def test_retryable_failures_are_retried_then_raised_as_retryable(response):
    handler, calls = counting(lambda n, request: response)
    with pytest.raises(FetchError) as info:
        call_with(handler)
    assert info.value.retryable is True and info.value.code is ErrorCode.FETCH_FAILED
    assert calls["n"] == 3


def test_a_transport_error_is_retryable_and_a_later_success_wins():
    def respond(n, request):
        if n == 1:
            raise httpx.ConnectError("refused", request=request)
        detail = {"apiResult": {"success": True}, "orderInfo": fixture_order()}
        return httpx.Response(200, json={"jingdong_pop_order_get_responce": {"orderDetailInfo": detail}})

    handler, calls = counting(respond)
    assert list(call_with(handler)) == ["300000000001"] and calls["n"] == 2


@pytest.mark.parametrize(
    "error",
    [
        {"code": "19", "zh_desc": "无效签名", "en_desc": "Invalid signature"},  # docs/wire-protocols.md
        {"code": "12", "zh_desc": "无效签名", "en_desc": "Invalid Signature"},  # real JOS
        {"code": "19", "zh_desc": "无效access_token", "en_desc": "Invalid access_token"},  # real JOS
    ],
)
def test_signature_and_token_errors_are_final_and_not_retried(error):
    handler, calls = counting(lambda n, request: httpx.Response(200, json={"error_response": error}))
    with pytest.raises(FetchError) as info:
        call_with(handler)
    assert info.value.retryable is False and calls["n"] == 1
    assert error["code"] in info.value.message


def test_a_client_error_status_is_final():
    handler, calls = counting(lambda n, request: httpx.Response(400, text="bad"))
    with pytest.raises(FetchError) as info:
        call_with(handler)
    assert info.value.retryable is False and calls["n"] == 1


# ---- normalisation ---------------------------------------------------------------------------


def normalize(raw: dict):
    return JdChannel().normalize(raw, SHOP)


def test_fixture_order_normalizes_to_the_canonical_order():
    raw = fixture_order()
    order = normalize(raw)
    assert order.channel == "jd" and order.shop_id == "10000001" and order.original_id == "300000000001"
    assert order.id == order_id("jd", "300000000001")
    assert order.status is Status.PAID and order.platform_status == {"orderState": "WAIT_SELLER_STOCK_OUT"}
    a = order.amounts
    assert (a.goods, a.discount, a.discount_shop, a.discount_platform, a.shipping, a.paid) == (14970, 1600, 1000, 600, 0, 13370)
    assert [(l.sku, l.platform_sku_id, l.qty, l.unit_price, l.gift) for l in order.lines] == [
        ("TS-TEE01-WH-L", "100000000001", 2, 5990, False),
        ("TS-BAG02-BE", "100000000002", 1, 2990, False),
    ]
    # 13370 split by goods value 11980 : 2990 -> 10699.76.. : 2670.23.. -> largest remainder
    assert [l.paid for l in order.lines] == [10700, 2670]
    assert sum(l.paid for l in order.lines) == 13370
    assert order.lines[0].title == "测试纯棉T恤 白色 L"
    assert order.created_at == datetime(2025, 3, 18, 10, 12, tzinfo=CST)
    assert order.paid_at == datetime(2025, 3, 18, 10, 12, 41, tzinfo=CST)
    assert order.updated_at == datetime(2025, 3, 18, 10, 12, 45, tzinfo=CST)
    assert all(t.utcoffset() == timedelta(hours=8) for t in (order.created_at, order.paid_at, order.updated_at))
    assert order.buyer.platform_buyer_id == "FAKEopenIdBuyer0001"
    assert (order.buyer.name, order.buyer.phone) == ("张**", "138****0000")
    assert (order.address.province, order.address.city, order.address.district) == ("浙江", "杭州市", "西湖区")
    assert order.address.detail == "浙江杭州市西湖区测试街道测试路**号"
    assert order.buyer_message == "请尽快发货" and order.seller_remark is None
    assert order.shipment is None and order.pii == {} and order.raw is raw


@pytest.mark.parametrize(
    ("state", "paid_time", "expected"),
    [
        ("WAIT_SELLER_STOCK_OUT", "2025-03-18 10:12:41", Status.PAID),
        ("WAIT_SELLER_DELIVERY", "2025-03-18 10:12:41", Status.PAID),
        ("LOCKED", "2025-03-18 10:12:41", Status.PAID),
        ("POP_ORDER_PAUSE", "2025-03-18 10:12:41", Status.PAID),
        ("PAUSE", "2025-03-18 10:12:41", Status.PAID),
        ("WAIT_SEND_CODE", "2025-03-18 10:12:41", Status.PAID),
        ("WAIT_GOODS_RECEIVE_CONFIRM", "2025-03-18 10:12:41", Status.SHIPPED),
        ("SEND_TO_DISTRIBUTION_CENER", "2025-03-18 10:12:41", Status.SHIPPED),
        ("DISTRIBUTION_CENTER_RECEIVED", "2025-03-18 10:12:41", Status.SHIPPED),
        ("RECEIPTS_CONFIRM", "2025-03-18 10:12:41", Status.DELIVERED),
        ("FINISHED_L", "2025-03-18 10:12:41", Status.COMPLETED),
        ("TRADE_CANCELED", "2025-03-18 10:12:41", Status.CANCELLED),
        ("TRADE_CANCELED", "0001-01-01 00:00:00", Status.CLOSED),
        ("TRADE_CANCELED", "1970-01-01 00:00:00", Status.CLOSED),
        ("TRADE_CANCELED", "", Status.CLOSED),
    ],
)
def test_status_mapping(state, paid_time, expected):
    raw = fixture_order()
    raw["orderState"], raw["paymentConfirmTime"] = state, paid_time
    order = normalize(raw)
    assert order.status is expected and order.platform_status == {"orderState": state}
    assert (order.paid_at is None) == (paid_time in ("", "0001-01-01 00:00:00", "1970-01-01 00:00:00"))


def test_unknown_state_is_rejected_with_code_and_field():
    raw = fixture_order()
    raw["orderState"] = "SOMETHING_NEW"
    with pytest.raises(NormalizationError) as info:
        normalize(raw)
    assert info.value.code is ErrorCode.UNKNOWN_STATUS and info.value.field == "orderState"


def test_payment_that_does_not_add_up_is_an_amounts_mismatch():
    raw = fixture_order()
    raw["orderPayment"] = "133.69"
    with pytest.raises(NormalizationError) as info:
        normalize(raw)
    assert info.value.code is ErrorCode.AMOUNTS_MISMATCH and info.value.field == "amounts.paid"


def test_items_not_matching_order_total_is_an_amounts_mismatch():
    raw = fixture_order()
    raw["orderTotalPrice"] = "150.70"
    with pytest.raises(NormalizationError) as info:
        normalize(raw)
    assert info.value.code is ErrorCode.AMOUNTS_MISMATCH and info.value.field == "orderTotalPrice"


def test_seller_discount_above_all_coupons_is_rejected():
    raw = fixture_order()
    raw["sellerDiscount"] = "20.00"
    with pytest.raises(NormalizationError) as info:
        normalize(raw)
    assert info.value.code is ErrorCode.AMOUNTS_MISMATCH and info.value.field == "sellerDiscount"


def test_balance_counts_as_payment_not_discount():
    raw = fixture_order()
    raw["orderPayment"], raw["balanceUsed"] = "100.00", "33.70"
    order = normalize(raw)
    assert order.amounts.paid == 13370 and order.amounts.discount == 1600


def test_gift_line_and_freight():
    raw = fixture_order()
    raw["itemInfoList"].append(
        {"skuId": "100000000009", "outerSkuId": "", "skuName": "赠品 贴纸", "jdPrice": "0.00", "itemTotal": "1"}
    )
    raw["freightPrice"], raw["orderPayment"] = "8.00", "141.70"
    order = normalize(raw)
    gift = order.lines[2]
    assert gift.gift and gift.unit_price == 0 and gift.paid == 0 and gift.sku is None
    assert order.amounts.shipping == 800 and order.amounts.paid == 14170
    assert sum(l.paid for l in order.lines) == 14170 - 800


def test_waybill_becomes_the_shipment_and_remarks_are_kept():
    raw = fixture_order()
    raw.update(orderState="WAIT_GOODS_RECEIVE_CONFIRM", waybill="JDV000000000001", logisticsId="467", venderRemark="加急")
    order = normalize(raw)
    assert order.shipment is not None and (order.shipment.carrier, order.shipment.waybill_no) == ("467", "JDV000000000001")
    assert order.seller_remark == "加急"


def test_pin_is_the_buyer_id_when_there_is_no_open_id():
    raw = fixture_order()
    del raw["open_id_buyer"]
    assert normalize(raw).buyer.platform_buyer_id == "jd_FAKEpin0001"


@pytest.mark.parametrize(
    ("mutate", "code", "field"),
    [
        (lambda r: r.pop("orderId"), ErrorCode.MISSING_FIELD, "orderId"),
        (lambda r: r.pop("orderPayment"), ErrorCode.MISSING_FIELD, "orderPayment"),
        (lambda r: r.update(orderStartTime="2025/03/18 10:12"), ErrorCode.INVALID_TIME, "orderStartTime"),
        (lambda r: r.update(itemInfoList=[]), ErrorCode.MISSING_FIELD, "itemInfoList"),
        (lambda r: r["itemInfoList"][0].update(itemTotal="two"), ErrorCode.INVALID_FIELD, "itemInfoList[0].itemTotal"),
        (lambda r: r["itemInfoList"][1].update(jdPrice="29.9x"), ErrorCode.INVALID_AMOUNT, "itemInfoList[1].jdPrice"),
        (lambda r: r.update(consigneeInfo="nope"), ErrorCode.INVALID_FIELD, "consigneeInfo"),
        (lambda r: r.update(couponDetailList=[{"couponPrice": None}]), ErrorCode.MISSING_FIELD, "couponDetailList[0].couponPrice"),
    ],
)
def test_malformed_orders_raise_normalization_errors_never_key_errors(mutate, code, field):
    raw = fixture_order()
    mutate(raw)
    with pytest.raises(NormalizationError) as info:
        normalize(raw)
    assert info.value.code is code and info.value.field == field


# ---- property: any consistent JD order normalises with sums that hold --------------------------


@settings(max_examples=80, deadline=None)
@given(
    items=st.lists(st.tuples(st.integers(0, 99_999), st.integers(1, 9)), min_size=1, max_size=6),
    coupon_parts=st.lists(st.integers(0, 5_000), max_size=3),
    shop_share=st.integers(0, 100),
    freight=st.integers(0, 2_000),
    balance=st.integers(0, 100),
)
def test_amounts_and_line_shares_always_add_up(items, coupon_parts, shop_share, freight, balance):
    goods = sum(price * qty for price, qty in items)
    discount = min(sum(coupon_parts), goods)
    paid = goods - discount + freight
    balance_used = paid * balance // 100
    seller = discount * shop_share // 100
    yuan = lambda fen: f"{fen // 100}.{fen % 100:02d}"  # noqa: E731
    raw = fixture_order()
    raw["itemInfoList"] = [
        {"skuId": str(i), "outerSkuId": f"S{i}", "skuName": "x", "jdPrice": yuan(price), "itemTotal": str(qty)}
        for i, (price, qty) in enumerate(items)
    ]
    raw["couponDetailList"] = [{"couponType": "41-京东券优惠", "couponPrice": yuan(discount)}] if discount else []
    raw.update(
        orderTotalPrice=yuan(goods), sellerDiscount=yuan(seller), freightPrice=yuan(freight),
        orderPayment=yuan(paid - balance_used), balanceUsed=yuan(balance_used),
    )  # fmt: skip
    order = normalize(raw)
    a = order.amounts
    assert (a.goods, a.discount, a.shipping, a.paid) == (goods, discount, freight, paid)
    assert a.discount_shop + a.discount_platform == discount
    assert sum(line.paid for line in order.lines) == paid - freight
    assert all(line.paid == 0 for line in order.lines if line.gift)
