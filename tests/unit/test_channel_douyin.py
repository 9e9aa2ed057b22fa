"""抖店 Douyin channel: push auth, push parsing, signed API calls, normalization."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tenacity import wait_none

from orderhub.adapters.channels.base import ShopConfig
from orderhub.adapters.channels.douyin import DouyinChannel, canonical_param_json
from orderhub.domain.errors import EnvelopeError, ErrorCode, FetchError, NormalizationError, SignatureError
from orderhub.domain.order import RefundStatus, Shipment
from orderhub.domain.status import Status

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "platforms"
SIGNATURES = json.loads((FIXTURES / "SIGNATURES.json").read_text(encoding="utf-8"))["douyin_push_trade_paid.body.json"]
PUSH_BODY = (FIXTURES / "douyin_push_trade_paid.body.json").read_bytes()
DETAIL_REPLY = json.loads((FIXTURES / "douyin_order_detail.json").read_text(encoding="utf-8"))
APP_KEY = SIGNATURES["header app-id"]
APP_SECRET = SIGNATURES["app_secret (fake)"]
PUSH_SIGN = SIGNATURES["header event-sign (md5(app_key+body+app_secret))"]
NOW = 1742263962  # 2025-03-18 10:12:42 +08:00

SHOP = ShopConfig(
    channel="douyin",
    shop_id="88880001",
    name="测试旗舰店",
    app_key=APP_KEY,
    app_secret=APP_SECRET,
    api_base_url="http://sim.test/douyin",
)
SHOP_WITH_TOKEN = dataclasses.replace(SHOP, extra={"access_token": "pre-issued"})


class Shops:
    def __init__(self, *shops: ShopConfig) -> None:
        self._shops = shops

    def by_shop(self, channel: str, shop_id: str) -> ShopConfig | None:
        return next((s for s in self._shops if s.channel == channel and s.shop_id == shop_id), None)

    def by_app_key(self, channel: str, app_key: str) -> list[ShopConfig]:
        return [s for s in self._shops if s.channel == channel and s.app_key == app_key]


def detail() -> dict:
    return copy.deepcopy(DETAIL_REPLY["data"]["shop_order_detail"])


def utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def channel() -> DouyinChannel:
    return DouyinChannel(clock=lambda: NOW, retry_wait=wait_none())


# -- normalization of the fixture --------------------------------------------------------------


def test_fixture_order_becomes_the_expected_canonical_order():
    order = channel().normalize(detail(), SHOP)

    assert (order.channel, order.shop_id, order.original_id) == ("douyin", "88880001", "4951234567890123456")
    assert order.status is Status.PAID
    assert order.platform_status == {"order_status": 2, "main_status": 2}
    assert order.created_at == datetime.fromisoformat("2025-03-18T10:12:00+08:00")
    assert order.paid_at == datetime.fromisoformat("2025-03-18T10:12:41+08:00")
    assert order.updated_at == datetime.fromisoformat("2025-03-18T10:12:41+08:00")
    assert all(t.tzinfo is not None for t in (order.created_at, order.paid_at, order.updated_at))
    amounts = order.amounts
    assert (amounts.goods, amounts.discount, amounts.shipping, amounts.paid) == (14970, 1500, 0, 13470)
    assert (amounts.discount_shop, amounts.discount_platform) == (1000, 500)
    tee, bag = order.lines
    assert (tee.sku, tee.title, tee.qty, tee.unit_price, tee.paid, tee.gift) == ("TS-TEE01-WH-L", "测试纯棉T恤", 2, 5990, 10780, False)
    assert (tee.platform_sku_id, tee.platform_line_id) == ("3600000000000000101", "6951234567890123401")
    assert (bag.sku, bag.qty, bag.unit_price, bag.paid) == ("TS-BAG02-BE", 1, 2990, 2690)
    assert tee.refund_status == bag.refund_status == RefundStatus.NONE
    assert (order.address.province, order.address.city, order.address.district) == ("浙江省", "杭州市", "西湖区")
    assert order.address.detail == "测试路***"
    assert (order.buyer.platform_buyer_id, order.buyer.name, order.buyer.phone) == ("FAKE_doudian_open_id_0001", "张*", "1**********0")
    assert set(order.pii) == {"phone", "name", "address_detail"}
    assert order.pii["phone"].startswith("$$") and order.pii["name"].startswith("##")
    assert order.buyer_message == "请尽快发货"
    assert order.seller_remark is None
    assert order.shipment is None
    assert order.raw["order_id"] == "4951234567890123456"


def test_normalize_is_deterministic_for_the_same_payload():
    assert channel().normalize(detail(), SHOP) == channel().normalize(detail(), SHOP)


def test_first_logistics_entry_becomes_the_shipment():
    raw = detail()
    raw["logistics_info"] = [{"tracking_no": "SF1234567890", "company": "shunfeng", "company_name": "顺丰速运"}]
    assert channel().normalize(raw, SHOP).shipment == Shipment(carrier="顺丰速运", waybill_no="SF1234567890")


def test_free_gift_line_is_flagged_and_priced_zero():
    raw = detail()
    gift = copy.deepcopy(raw["sku_order_list"][1])
    gift.update(order_id="6951234567890123403", given_product_type="FREE", origin_amount=1990, pay_amount=0, code="GIFT-1")
    raw["sku_order_list"].append(gift)
    order = channel().normalize(raw, SHOP)
    assert order.lines[2].gift is True
    assert order.lines[2].unit_price == 0
    assert order.amounts.goods == 14970  # the gift does not add to goods


@pytest.mark.parametrize(("refund_status", "expected"), [(0, "none"), (1, "refunding"), (2, "refunding"), (3, "refunded"), (4, "none")])
def test_line_refund_status_follows_after_sale_info(refund_status, expected):
    raw = detail()
    raw["sku_order_list"][0]["after_sale_info"]["refund_status"] = refund_status
    assert channel().normalize(raw, SHOP).lines[0].refund_status == expected


@pytest.mark.parametrize(
    ("order_status", "pay_time", "expected"),
    [
        (1, 0, Status.PENDING_PAYMENT),
        (105, 1742263961, Status.PAID),
        (2, 1742263961, Status.PAID),
        (101, 1742263961, Status.SHIPPED),
        (3, 1742263961, Status.SHIPPED),
        (5, 1742263961, Status.COMPLETED),
        (4, 1742263961, Status.CANCELLED),
        (4, 0, Status.CLOSED),
    ],
)
def test_status_mapping_cell_by_cell(order_status, pay_time, expected):
    raw = detail()
    raw.update(order_status=order_status, pay_time=pay_time)
    order = channel().normalize(raw, SHOP)
    assert order.status is expected
    assert order.paid_at == (utc(pay_time) if pay_time else None)


def test_unknown_order_status_is_rejected_with_unknown_status():
    raw = detail()
    raw["order_status"] = 99
    with pytest.raises(NormalizationError) as err:
        channel().normalize(raw, SHOP)
    assert (err.value.code, err.value.field) == (ErrorCode.UNKNOWN_STATUS, "order_status")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.update(pay_amount=13000), "sku_order_list.pay_amount"),  # lines no longer add up
        (lambda r: r.update(pay_amount=20000), "pay_amount"),  # paid more than goods + shipping
        (lambda r: r.update(promotion_platform_amount=1600, promotion_amount=2600), "amounts.discount_platform"),
        (lambda r: r.update(promotion_shop_amount=900), "promotion_amount"),
    ],
)
def test_amounts_that_do_not_add_up_are_rejected(change, field):
    raw = detail()
    change(raw)
    with pytest.raises(NormalizationError) as err:
        channel().normalize(raw, SHOP)
    assert (err.value.code, err.value.field) == (ErrorCode.AMOUNTS_MISMATCH, field)


@pytest.mark.parametrize(
    ("remove", "field"),
    [
        (lambda r: r.pop("order_id"), "order_id"),
        (lambda r: r.pop("pay_amount"), "pay_amount"),
        (lambda r: r.pop("create_time"), "create_time"),
        (lambda r: r["sku_order_list"][1].pop("item_num"), "sku_order_list[1].item_num"),
        (lambda r: r["sku_order_list"][0].pop("origin_amount"), "sku_order_list[0].origin_amount"),
    ],
)
def test_missing_fields_are_named_in_the_error(remove, field):
    raw = detail()
    remove(raw)
    with pytest.raises(NormalizationError) as err:
        channel().normalize(raw, SHOP)
    assert (err.value.code, err.value.field) == (ErrorCode.MISSING_FIELD, field)


@pytest.mark.parametrize(
    ("mangle", "code", "field"),
    [
        (lambda r: r.update(sku_order_list="not a list"), ErrorCode.MISSING_FIELD, "sku_order_list"),
        (lambda r: r.update(sku_order_list=[None]), ErrorCode.INVALID_FIELD, "sku_order_list[0]"),
        (lambda r: r["sku_order_list"][0].update(pay_amount="12.5"), ErrorCode.INVALID_AMOUNT, "sku_order_list[0].pay_amount"),
        (lambda r: r.update(create_time="yesterday"), ErrorCode.INVALID_TIME, "create_time"),
    ],
)
def test_odd_payload_shapes_fail_with_a_coded_error_not_a_crash(mangle, code, field):
    raw = detail()
    mangle(raw)
    with pytest.raises(NormalizationError) as err:
        channel().normalize(raw, SHOP)
    assert (err.value.code, err.value.field) == (code, field)


def test_an_address_in_an_unexpected_shape_is_left_empty_rather_than_failing_the_order():
    raw = detail()
    raw.update(post_addr="x", mask_post_addr=None)
    order = channel().normalize(raw, SHOP)
    assert (order.address.province, order.address.detail) == (None, None)
    assert "address_detail" not in order.pii


# -- push authentication --------------------------------------------------------------------


def test_fixture_push_verifies_with_the_recorded_signature():
    auth = channel().authenticate({"app-id": APP_KEY, "event-sign": PUSH_SIGN}, PUSH_BODY, Shops(SHOP))
    assert auth.app_key == APP_KEY


def test_header_names_and_signature_case_do_not_matter():
    headers = {"App-Id": APP_KEY, "Event-Sign": PUSH_SIGN.upper()}
    assert channel().authenticate(headers, PUSH_BODY, Shops(SHOP)).app_key == APP_KEY


def test_starlette_headers_are_accepted():
    from starlette.datastructures import Headers

    headers = Headers(raw=[(b"app-id", APP_KEY.encode()), (b"event-sign", PUSH_SIGN.encode())])
    assert channel().authenticate(headers, PUSH_BODY, Shops(SHOP)).app_key == APP_KEY


def test_one_byte_change_to_the_body_is_rejected():
    tampered = PUSH_BODY.replace(b"13470", b"13471")
    with pytest.raises(SignatureError) as err:
        channel().authenticate({"app-id": APP_KEY, "event-sign": PUSH_SIGN}, tampered, Shops(SHOP))
    assert err.value.code == ErrorCode.SIGNATURE_INVALID


def test_one_character_change_to_the_signature_is_rejected():
    wrong = PUSH_SIGN[:-1] + ("0" if PUSH_SIGN[-1] != "0" else "1")
    with pytest.raises(SignatureError) as err:
        channel().authenticate({"app-id": APP_KEY, "event-sign": wrong}, PUSH_BODY, Shops(SHOP))
    assert err.value.code == ErrorCode.SIGNATURE_INVALID


@pytest.mark.parametrize("headers", [{"app-id": APP_KEY}, {"event-sign": PUSH_SIGN}, {}])
def test_missing_signature_headers_are_rejected(headers):
    with pytest.raises(SignatureError) as err:
        channel().authenticate(headers, PUSH_BODY, Shops(SHOP))
    assert err.value.code == ErrorCode.SIGNATURE_MISSING


def test_push_for_an_unknown_app_is_rejected():
    with pytest.raises(SignatureError) as err:
        channel().authenticate({"app-id": "123", "event-sign": PUSH_SIGN}, PUSH_BODY, Shops(SHOP))
    assert err.value.code == ErrorCode.UNKNOWN_SHOP


# -- push parsing -------------------------------------------------------------------------------


def test_fixture_push_yields_the_order_and_its_payment_time():
    (message,) = channel().parse_push(PUSH_BODY)
    assert (message.shop_id, message.original_id, message.kind) == ("88880001", "4951234567890123456", "101")
    assert message.event_time == datetime.fromisoformat("2025-03-18T10:12:41+08:00")
    assert message.raw["data"]["pay_amount"] == 13470


def test_push_prefers_the_update_time_and_may_carry_none():
    body = json.dumps(
        [
            {"tag": "105", "msg_id": "1", "data": json.dumps({"p_id": 1, "shop_id": 2, "pay_time": 100, "update_time": 200})},
            {"tag": "200", "msg_id": "2", "data": json.dumps({"p_id": 3, "shop_id": 2})},
        ]
    ).encode()
    first, second = channel().parse_push(body)
    assert first.event_time == utc(200)
    assert second.event_time is None


def test_verification_message_yields_no_order():
    body = json.dumps([{"tag": "0", "msg_id": "0", "data": "{}"}]).encode()
    assert channel().parse_push(body) == []


def test_large_order_numbers_keep_every_digit():
    body = b'[{"tag":"101","msg_id":"9","data":"{\\"p_id\\":9223372036854775807,\\"shop_id\\":1}"}]'
    assert channel().parse_push(body)[0].original_id == "9223372036854775807"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"tag":"101"}',
        b'[{"tag":"101","msg_id":"1","data":"{not json"}]',
        b'[{"tag":"101","msg_id":"1","data":"{\\"shop_id\\":1}"}]',
        b'[{"msg_id":"1","data":"{}"}]',
        b"[1]",
    ],
)
def test_bodies_that_are_not_the_envelope_are_refused(body):
    with pytest.raises(EnvelopeError) as err:
        channel().parse_push(body)
    assert err.value.code == ErrorCode.MALFORMED_ENVELOPE


# -- the open API over a mock transport ---------------------------------------------------------


class FakeDoudian:
    """Plays the 抖店 open API: records requests, answers from a script or the fixtures."""

    def __init__(self, *, replies: list | None = None, token_ttl: int = 604800) -> None:
        self.requests: list[httpx.Request] = []
        self.replies = list(replies or [])
        self.token_ttl = token_ttl
        self.tokens_issued = 0
        self.valid_tokens = set()

    def query(self, index: int) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(str(self.requests[index].url)).query))

    def methods(self) -> list[str]:
        return [self.query(i)["method"] for i in range(len(self.requests))]

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        query = dict(parse_qsl(request.url.query.decode()))
        if query["method"] == "token.create":
            self.tokens_issued += 1
            token = f"token-{self.tokens_issued}"
            self.valid_tokens.add(token)
            data = {"access_token": token, "expires_in": self.token_ttl, "refresh_token": "r", "shop_id": "88880001"}
            return httpx.Response(200, json={"code": 10000, "msg": "success", "data": data})
        if self.replies:
            reply = self.replies.pop(0)
            if isinstance(reply, Exception):
                raise reply
            return reply if isinstance(reply, httpx.Response) else httpx.Response(200, json=reply)
        if query.get("access_token") not in self.valid_tokens | {"pre-issued"}:
            return httpx.Response(200, json={"code": 30002, "msg": "access_token invalid", "sub_code": "isv.access-token-expired"})
        return httpx.Response(200, json=DETAIL_REPLY)


def run(fake: FakeDoudian, coro_factory):
    async def main():
        async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
            return await coro_factory(http)

    return asyncio.run(main())


def test_param_json_sorts_keys_at_every_level_without_spaces_and_keeps_chinese():
    assert canonical_param_json({"b": {"z": 1, "a": "中文"}, "a": [2, 1]}) == '{"a":[2,1],"b":{"a":"中文","z":1}}'


def test_order_detail_request_is_signed_exactly_like_the_worked_vector():
    fake = FakeDoudian()
    ch = channel()
    run(fake, lambda http: ch.fetch_orders(http, SHOP_WITH_TOKEN, ["4951234567890123456"]))

    (request,) = fake.requests
    param_json = '{"shop_order_id":"4951234567890123456"}'
    sign_string = (
        f"{APP_SECRET}app_key{APP_KEY}methodorder.orderDetailparam_json{param_json}timestamp{NOW}v2{APP_SECRET}"
    )
    expected = hmac.new(APP_SECRET.encode(), sign_string.encode(), hashlib.sha256).hexdigest()
    # The same value is written into docs/platforms.md (Douyin, worked vector).
    assert expected == "a12f606a8c9b338d763f6db65c98e9ad224b412b72ecb42e37fc781e768f0838"
    assert request.method == "POST"
    assert request.url.path == "/douyin/order/orderDetail"
    assert fake.query(0) == {
        "app_key": APP_KEY,
        "method": "order.orderDetail",
        "access_token": "pre-issued",
        "param_json": param_json,
        "timestamp": str(NOW),
        "v": "2",
        "sign_method": "hmac-sha256",
        "sign": expected,
    }
    assert request.content == param_json.encode()


def test_md5_sign_method_signs_the_same_string_with_md5():
    fake = FakeDoudian()
    ch = DouyinChannel(clock=lambda: NOW, sign_method="md5", retry_wait=wait_none())
    run(fake, lambda http: ch.fetch_orders(http, SHOP_WITH_TOKEN, ["4951234567890123456"]))
    assert fake.query(0)["sign_method"] == "md5"
    assert fake.query(0)["sign"] == "2926f1b2e7585753fe74df38ff045d5f"


def test_fetched_order_is_the_shop_order_detail_and_normalizes():
    fake = FakeDoudian()
    ch = channel()
    orders = run(fake, lambda http: ch.fetch_orders(http, SHOP, ["4951234567890123456"]))
    assert list(orders) == ["4951234567890123456"]
    assert ch.normalize(orders["4951234567890123456"], SHOP).amounts.paid == 13470


def test_token_is_created_once_and_reused_until_shortly_before_expiry():
    fake = FakeDoudian(token_ttl=3600)
    clock = [NOW]
    ch = DouyinChannel(clock=lambda: clock[0], retry_wait=wait_none())

    async def scenario(http):
        await ch.fetch_orders(http, SHOP, ["1"])
        await ch.fetch_orders(http, SHOP, ["2"])
        clock[0] = NOW + 3600 - 299  # inside the refresh margin
        await ch.fetch_orders(http, SHOP, ["3"])

    run(fake, scenario)
    assert fake.methods() == ["token.create", "order.orderDetail", "order.orderDetail", "token.create", "order.orderDetail"]
    assert "access_token" not in fake.query(0)
    assert json.loads(fake.query(0)["param_json"]) == {"code": "", "grant_type": "authorization_self", "shop_id": "88880001"}
    assert fake.query(4)["access_token"] == "token-2"


def test_bad_token_drops_the_cache_and_retries_once_with_a_new_token():
    fake = FakeDoudian()
    ch = channel()

    async def scenario(http):
        await ch.fetch_orders(http, SHOP, ["1"])
        fake.valid_tokens.clear()  # the platform revokes token-1
        return await ch.fetch_orders(http, SHOP, ["4951234567890123456"])

    orders = run(fake, scenario)
    assert "4951234567890123456" in orders
    assert fake.methods() == ["token.create", "order.orderDetail", "order.orderDetail", "token.create", "order.orderDetail"]
    assert fake.query(4)["access_token"] == "token-2"


def test_many_calls_refused_at_once_fetch_only_one_new_token():
    fake = FakeDoudian()
    ch = channel()

    async def scenario(http):
        await ch.fetch_orders(http, SHOP, ["0"])
        fake.valid_tokens.clear()
        return await ch.fetch_orders(http, SHOP, [str(i) for i in range(1, 11)])

    assert len(run(fake, scenario)) == 10
    assert fake.tokens_issued == 2


def test_refused_preissued_token_falls_back_to_token_create():
    fake = FakeDoudian(replies=[{"code": 30002, "msg": "bad token", "sub_code": "isv.access-token-expired"}])
    ch = channel()
    orders = run(fake, lambda http: ch.fetch_orders(http, SHOP_WITH_TOKEN, ["4951234567890123456"]))
    assert orders
    assert fake.methods() == ["order.orderDetail", "token.create", "order.orderDetail"]


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(503, text="busy"),
        httpx.Response(429, text="slow down"),
        httpx.ConnectError("refused"),
        {"code": 30003, "msg": "rate limited", "sub_code": "isv.rate-limit"},
    ],
    ids=["http-503", "http-429", "transport", "platform-rate-limit"],
)
def test_transient_failures_are_retried_then_raised_as_retryable(failure):
    fake = FakeDoudian(replies=[failure, failure, failure])
    with pytest.raises(FetchError) as err:
        run(fake, lambda http: channel().fetch_orders(http, SHOP_WITH_TOKEN, ["1"]))
    assert err.value.retryable is True
    assert len(fake.requests) == 3


def test_a_transient_failure_followed_by_success_returns_the_order():
    fake = FakeDoudian(replies=[httpx.Response(502)])
    orders = run(fake, lambda http: channel().fetch_orders(http, SHOP_WITH_TOKEN, ["4951234567890123456"]))
    assert list(orders) == ["4951234567890123456"]
    assert len(fake.requests) == 2


@pytest.mark.parametrize(
    "failure",
    [
        {"code": 30001, "msg": "sign error", "sub_code": "isv.signature-invalid"},
        {"code": 40004, "msg": "no permission", "sub_code": "isv.permission-denied"},
        httpx.Response(403, text="forbidden"),
    ],
    ids=["signature", "permission", "http-403"],
)
def test_signature_and_permission_failures_are_not_retried(failure):
    fake = FakeDoudian(replies=[failure])
    with pytest.raises(FetchError) as err:
        run(fake, lambda http: channel().fetch_orders(http, SHOP_WITH_TOKEN, ["1"]))
    assert err.value.retryable is False
    assert len(fake.requests) == 1


def test_unknown_orders_are_left_out_of_the_result():
    not_found = {"code": 50002, "msg": "业务处理失败", "sub_code": "isv.business-failed:1040", "sub_msg": "订单不存在"}
    empty = {"code": 10000, "msg": "success", "data": {}}
    fake = FakeDoudian(replies=[not_found, empty])
    ch = DouyinChannel(clock=lambda: NOW, retry_wait=wait_none(), concurrency=1)
    assert run(fake, lambda http: ch.fetch_orders(http, SHOP_WITH_TOKEN, ["404", "405"])) == {}


def test_fetches_run_concurrently_but_never_more_than_sixteen_at_once():
    in_flight = [0, 0]

    async def handler(request: httpx.Request) -> httpx.Response:
        in_flight[0] += 1
        in_flight[1] = max(in_flight)
        await asyncio.sleep(0.01)
        in_flight[0] -= 1
        order = detail()
        order["order_id"] = json.loads(request.content)["shop_order_id"]
        return httpx.Response(200, json={"code": 10000, "data": {"shop_order_detail": order}})

    async def main():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            return await channel().fetch_orders(http, SHOP_WITH_TOKEN, [str(i) for i in range(40)])

    orders = asyncio.run(main())
    assert len(orders) == 40
    assert 1 < in_flight[1] <= 16


def test_pull_window_reads_every_page_of_the_update_time_window():
    start, end = utc(NOW - 3600), utc(NOW)
    pages: list[dict] = []

    def page(n: int, count: int) -> dict:
        items = []
        for i in range(count):
            order = detail()
            order["order_id"] = f"{n}{i:03d}"
            order["update_time"] = NOW - 10
            items.append(order)
        return {"code": 10000, "data": {"page": n, "size": 100, "total": 250, "shop_order_list": items}}

    fake = FakeDoudian(replies=[page(0, 100), page(1, 100), page(2, 50)])
    orders = run(fake, lambda http: channel().pull_window(http, SHOP_WITH_TOKEN, start, end))
    assert len(orders) == 250
    assert len({o["order_id"] for o in orders}) == 250
    for index in range(3):
        pages.append(json.loads(fake.query(index)["param_json"]))
    assert [p["page"] for p in pages] == [0, 1, 2]
    assert pages[0] == {
        "page": 0,
        "size": 100,
        "update_time_start": NOW - 3600,
        "update_time_end": NOW,
        "order_by": "update_time",
        "order_asc": True,
    }
    assert all(channel().normalize(o, SHOP).original_id == o["order_id"] for o in orders[:3])


# -- property: any consistent order normalizes, satisfies the invariants, deterministically -------


@st.composite
def douyin_orders(draw):
    raw = detail()
    template = raw["sku_order_list"][0]
    count = draw(st.integers(min_value=1, max_value=4))
    items, goods = [], 0
    for index in range(count):
        item = copy.deepcopy(template)
        gift = index > 0 and draw(st.booleans())
        unit = draw(st.integers(min_value=1, max_value=500_000))
        qty = draw(st.integers(min_value=1, max_value=20))
        item.update(order_id=f"69{index}", origin_amount=unit, item_num=qty, sum_amount=unit * qty,
                    given_product_type="FREE" if gift else "MASTER", post_amount=0)
        if not gift:
            goods += unit * qty
        items.append(item)
    shipping = draw(st.integers(min_value=0, max_value=5_000))
    discount = draw(st.integers(min_value=0, max_value=goods))
    platform = draw(st.integers(min_value=0, max_value=discount))
    talent = draw(st.integers(min_value=0, max_value=discount - platform))
    pay_subsidy = draw(st.integers(min_value=0, max_value=discount - platform - talent))
    shop_promo = draw(st.integers(min_value=0, max_value=discount - platform - talent - pay_subsidy))
    paid = goods - discount + shipping
    # Split what the buyer paid for goods over the paying lines; the last one takes the rest.
    paying = [i for i in items if i["given_product_type"] != "FREE"]
    remaining = paid - shipping
    for item in items:
        item["pay_amount"] = 0
    for item in paying[:-1]:
        share = draw(st.integers(min_value=0, max_value=remaining))
        item["pay_amount"], remaining = share, remaining - share
    paying[-1]["pay_amount"] = remaining
    raw.update(
        sku_order_list=items, post_amount=shipping, pay_amount=paid, promotion_platform_amount=platform,
        promotion_talent_amount=talent, promotion_pay_amount=pay_subsidy, promotion_shop_amount=shop_promo,
        promotion_amount=shop_promo + platform + talent,
        order_status=draw(st.sampled_from([1, 105, 2, 101, 3, 4, 5])),
    )
    return raw


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(douyin_orders())
def test_any_consistent_order_satisfies_the_amount_invariants_and_normalizes_deterministically(raw):
    ch = channel()
    order = ch.normalize(copy.deepcopy(raw), SHOP)
    a = order.amounts
    assert a.paid == a.goods - a.discount + a.shipping
    assert a.discount_shop + a.discount_platform == a.discount
    assert a.discount_shop >= 0 and a.discount_platform >= 0
    assert sum(line.unit_price * line.qty for line in order.lines) == a.goods
    assert sum(line.paid for line in order.lines) == a.paid - a.shipping
    assert all(line.unit_price == 0 for line in order.lines if line.gift)
    assert ch.normalize(copy.deepcopy(raw), SHOP) == order
