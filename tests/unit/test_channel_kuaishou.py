"""快手 adapter: request signing, paging, token refresh and errors over a mock gateway; the fixture normalised."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from orderhub.adapters.channels.base import ShopConfig
from orderhub.adapters.channels.http_common import backoff
from orderhub.adapters.channels.kuaishou import (
    MAX_SPAN_MS,
    PAGE_SIZE,
    KuaishouChannel,
    gateway_url,
    request_sign,
    sign_text,
    signed_query,
)
from orderhub.adapters.channels.kuaishou_normalize import REFUND_STATUS_MAP, STATUS_MAP, normalize_kuaishou_order
from orderhub.domain.errors import ErrorCode, FetchError, NormalizationError
from orderhub.domain.order import RefundStatus
from orderhub.domain.status import Status

FIXTURE = Path(__file__).parents[1] / "fixtures" / "platforms" / "kuaishou_order_cursor_list.json"
SIGN_SECRET = "fake-kuaishou-sign-secret"
SHOP = ShopConfig(
    channel="kuaishou",
    shop_id="1000000001",
    name="快手小店",
    app_key="ks000000000000000001",
    app_secret="fake-kuaishou-app-secret",
    api_base_url="http://ks.test/kuaishou",
    extra={"access_token": "fake-kuaishou-access-token-0001", "sign_secret": SIGN_SECRET},
)

# The worked vector of docs/channels/kuaishou.md (computed there with openssl, not with this code).
VECTOR_PARAMS = {
    "appkey": "ks000000000000000001",
    "method": "open.order.detail",
    "version": "1",
    "param": '{"oid":2100000000000001}',
    "access_token": "fake-kuaishou-access-token-0001",
    "timestamp": "1742263920000",
}
VECTOR_TEXT = (
    "access_token=fake-kuaishou-access-token-0001&appkey=ks000000000000000001&method=open.order.detail"
    '&param={"oid":2100000000000001}&signMethod=HMAC_SHA256&timestamp=1742263920000&version=1'
    "&signSecret=fake-kuaishou-sign-secret"
)
VECTOR_HMAC_SHA256 = "KgNfUZ3pfil+7Iwwx2DfwbsNTzaEfeuQxwrBDvMhuf4="
VECTOR_MD5 = "312b45482a760cdb45696b2517a272ab"


def fixture_orders() -> list[dict]:
    return copy.deepcopy(json.loads(FIXTURE.read_text(encoding="utf-8"))["data"]["orderList"])


def fast_channel(**kwargs) -> KuaishouChannel:
    return KuaishouChannel(retry_wait=backoff(0.001, 0.002), attempts=kwargs.pop("attempts", 2), **kwargs)


def ok(data: dict) -> httpx.Response:
    return httpx.Response(200, json={"result": 1, "msg": "success", "requestId": "r1", "data": data})


def failure(code: int, message: str) -> httpx.Response:
    return httpx.Response(200, json={"result": code, "msg": message, "error_msg": message, "requestId": "r1"})


def client(handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def param_of(request: httpx.Request) -> dict:
    return json.loads(request.url.params["param"])


# ---------------------------------------------------------------- signing


def test_the_signed_text_sorts_the_parameters_and_appends_the_sign_secret():
    assert sign_text({**VECTOR_PARAMS, "signMethod": "HMAC_SHA256"}, SIGN_SECRET) == VECTOR_TEXT


def test_the_worked_hmac_sha256_vector_signs_as_documented():
    assert request_sign({**VECTOR_PARAMS, "signMethod": "HMAC_SHA256"}, SIGN_SECRET, "HMAC_SHA256") == VECTOR_HMAC_SHA256
    # and the same, recomputed here from the rule rather than through the adapter
    digest = hmac.new(SIGN_SECRET.encode(), VECTOR_TEXT.encode(), hashlib.sha256).digest()
    assert base64.b64encode(digest).decode() == VECTOR_HMAC_SHA256


def test_the_worked_md5_vector_signs_as_documented():
    params = {**VECTOR_PARAMS, "signMethod": "MD5"}
    assert request_sign(params, SIGN_SECRET, "MD5") == VECTOR_MD5
    assert hashlib.md5(VECTOR_TEXT.replace("HMAC_SHA256", "MD5").encode()).hexdigest() == VECTOR_MD5


@pytest.mark.parametrize("field", ["param", "timestamp", "access_token", "method", "appkey", "version", "signMethod"])
def test_a_one_byte_change_of_any_signed_parameter_changes_the_sign(field):
    params = {**VECTOR_PARAMS, "signMethod": "HMAC_SHA256"}
    changed = dict(params, **{field: params[field][:-1] + chr(ord(params[field][-1]) ^ 1)})
    assert request_sign(changed, SIGN_SECRET, "HMAC_SHA256") != VECTOR_HMAC_SHA256


def test_a_one_byte_change_of_the_sign_secret_changes_the_sign():
    params = {**VECTOR_PARAMS, "signMethod": "HMAC_SHA256"}
    assert request_sign(params, SIGN_SECRET[:-1] + "u", "HMAC_SHA256") != VECTOR_HMAC_SHA256


def test_parameters_outside_the_signed_set_do_not_enter_the_signature():
    params = {**VECTOR_PARAMS, "signMethod": "HMAC_SHA256"}
    assert request_sign({**params, "sign": "x", "uid": "42"}, SIGN_SECRET, "HMAC_SHA256") == VECTOR_HMAC_SHA256


def test_a_call_carries_every_public_parameter_and_never_the_sign_secret():
    query = signed_query(SHOP, "open.order.detail", {"oid": 2100000000000001}, SHOP.extra["access_token"], 1742263920000,
                         "HMAC_SHA256")
    assert query == {**VECTOR_PARAMS, "signMethod": "HMAC_SHA256", "sign": VECTOR_HMAC_SHA256}
    assert SIGN_SECRET not in json.dumps(query)
    assert gateway_url(SHOP.api_base_url, "open.order.cursor.list") == "http://ks.test/kuaishou/open/order/cursor/list"


def test_a_shop_without_a_sign_secret_is_a_configuration_error_not_a_retry():
    shop = ShopConfig("kuaishou", "1", "x", "ks1", "s", "http://ks.test", {"access_token": "t"})
    with pytest.raises(FetchError) as info:
        signed_query(shop, "open.order.detail", {}, "t", 1, "MD5")
    assert info.value.retryable is False and "sign_secret" in info.value.message


# ---------------------------------------------------------------- the normaliser on the fixture


def test_the_fixture_shipped_order_normalises_field_by_field():
    raw = fixture_orders()[0]
    order = normalize_kuaishou_order(raw, SHOP.shop_id)
    assert (order.channel, order.shop_id, order.original_id) == ("kuaishou", "1000000001", "2109000000000101")
    assert order.status is Status.SHIPPED and order.platform_status == {"status": 40}
    assert order.created_at == datetime(2025, 3, 18, 2, 12, 0, tzinfo=UTC)
    assert order.paid_at == datetime(2025, 3, 18, 2, 13, 5, tzinfo=UTC)
    assert order.updated_at == datetime(2025, 3, 18, 9, 26, 41, tzinfo=UTC)
    assert order.created_at.utcoffset() == timedelta(0)
    amounts = order.amounts
    assert (amounts.goods, amounts.discount, amounts.shipping, amounts.paid) == (11980, 1000, 800, 11780)
    assert (amounts.discount_shop, amounts.discount_platform) == (None, None)  # 快手 gives one discount figure [U]
    (line,) = order.lines
    assert (line.sku, line.title, line.qty, line.unit_price, line.paid, line.gift) == ("SKU-1001", "纯棉T恤", 2, 5990, 10980, False)
    assert (line.platform_sku_id, line.platform_line_id, line.refund_status) == ("2100000000000977", "2109000000000101", "none")
    assert (order.address.province, order.address.city, order.address.district) == ("浙江省", "杭州市", "西湖区")
    assert order.address.detail == "学院路**号*栋***室"
    assert order.buyer.platform_buyer_id == "f3b9e1c7a20000042ks"
    assert (order.buyer.name, order.buyer.phone) == ("李*", "138****0042")
    assert order.buyer_message == "请尽快发货，谢谢"
    assert order.seller_remark == "顺丰发出"  # the latest seller note
    assert (order.shipment.carrier, order.shipment.waybill_no) == ("4", "SF1234567890123")
    assert order.pii == {
        "phone": "#ks#Z3xY5wV7uT9sR1qP3oN5mL7kJ9iH1gF3eD5cB7aA#1#",
        "name": "#ks#q8r2V0b1yQmB3xTzW5nF7kL9pD4sE6gH1jK3mN5o#1#",
        "address_detail": "#ks#Mn8Bv6Cx4Zl2Kj0Hg8Fd6Sa4Qw2Er0Ty8Ui6Op4A#1#",
    }
    assert order.raw is raw
    assert order.currency == "CNY"


def test_the_fixture_refunded_order_is_cancelled_and_its_line_refunded():
    order = normalize_kuaishou_order(fixture_orders()[1], SHOP.shop_id)
    assert order.status is Status.CANCELLED
    assert order.lines[0].refund_status == RefundStatus.REFUNDED
    assert (order.amounts.goods, order.amounts.discount, order.amounts.shipping, order.amounts.paid) == (12900, 0, 0, 12900)
    assert order.shipment is None and order.seller_remark is None and order.buyer_message is None
    assert order.address.province == "新疆维吾尔自治区"


def test_the_fixture_unpaid_closed_order_is_closed_with_no_payment_time():
    order = normalize_kuaishou_order(fixture_orders()[2], SHOP.shop_id)
    assert order.status is Status.CLOSED and order.paid_at is None
    assert order.amounts.paid == 3990


# ---------------------------------------------------------------- status table


@pytest.mark.parametrize(
    ("code", "expected"),
    [(10, Status.PENDING_PAYMENT), (30, Status.PAID), (40, Status.SHIPPED), (50, Status.DELIVERED), (70, Status.COMPLETED)],
)
def test_each_platform_status_maps_to_its_canonical_status(code, expected):
    raw = fixture_orders()[0]
    raw["orderBaseInfo"]["status"] = code
    assert STATUS_MAP[code] is expected
    assert normalize_kuaishou_order(raw, SHOP.shop_id).status is expected


@pytest.mark.parametrize(("pay_time", "expected"), [(1742263985000, Status.CANCELLED), (0, Status.CLOSED)])
def test_a_closed_order_is_cancelled_when_paid_and_closed_when_never_paid(pay_time, expected):
    raw = fixture_orders()[0]
    raw["orderBaseInfo"].update(status=80, payTime=pay_time)
    assert normalize_kuaishou_order(raw, SHOP.shop_id).status is expected


@pytest.mark.parametrize("code", [0, 20, 60, 99, "abc"])
def test_an_unknown_status_is_refused_with_its_field(code):
    raw = fixture_orders()[0]
    raw["orderBaseInfo"]["status"] = code
    with pytest.raises(NormalizationError) as info:
        normalize_kuaishou_order(raw, SHOP.shop_id)
    assert (info.value.code, info.value.field) == (ErrorCode.UNKNOWN_STATUS, "orderBaseInfo.status")


@pytest.mark.parametrize(("code", "expected"), sorted(REFUND_STATUS_MAP.items()))
def test_each_refund_status_maps_onto_the_line(code, expected):
    raw = fixture_orders()[1]
    raw["orderRefundList"][0]["refundStatus"] = code
    assert normalize_kuaishou_order(raw, SHOP.shop_id).lines[0].refund_status == expected


def test_an_unknown_refund_status_is_refused():
    raw = fixture_orders()[1]
    raw["orderRefundList"][0]["refundStatus"] = 99
    with pytest.raises(NormalizationError) as info:
        normalize_kuaishou_order(raw, SHOP.shop_id)
    assert info.value.code == ErrorCode.UNKNOWN_STATUS


# ---------------------------------------------------------------- malformed payloads


def test_amounts_that_do_not_add_up_are_refused():
    raw = fixture_orders()[0]
    raw["orderBaseInfo"]["totalFee"] = 11781
    with pytest.raises(NormalizationError) as info:
        normalize_kuaishou_order(raw, SHOP.shop_id)
    assert (info.value.code, info.value.field) == (ErrorCode.AMOUNTS_MISMATCH, "orderBaseInfo.totalFee")


@pytest.mark.parametrize("value", ["117.80", 117.8, -1, True])
def test_money_that_is_not_integer_fen_is_refused(value):
    raw = fixture_orders()[0]
    raw["orderBaseInfo"]["totalFee"] = value
    with pytest.raises(NormalizationError) as info:
        normalize_kuaishou_order(raw, SHOP.shop_id)
    assert info.value.code == ErrorCode.INVALID_AMOUNT


def test_a_list_of_items_is_refused_rather_than_guessed():
    raw = fixture_orders()[0]
    raw["orderItemInfo"] = [raw["orderItemInfo"]]
    with pytest.raises(NormalizationError) as info:
        normalize_kuaishou_order(raw, SHOP.shop_id)
    assert (info.value.code, info.value.field) == (ErrorCode.INVALID_FIELD, "orderItemInfo")


@pytest.mark.parametrize(("path", "field"), [("orderBaseInfo.oid", "orderBaseInfo.oid"), ("orderBaseInfo.createTime", "orderBaseInfo.createTime"),
                                             ("orderItemInfo.num", "orderItemInfo.num"), ("orderBaseInfo", "orderBaseInfo")])
def test_a_missing_field_is_refused_with_its_path(path, field):
    raw = fixture_orders()[0]
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[key]
    del node[last]
    with pytest.raises(NormalizationError) as info:
        normalize_kuaishou_order(raw, SHOP.shop_id)
    assert (info.value.code, info.value.field) == (ErrorCode.MISSING_FIELD, field)


def test_a_payload_that_is_not_an_object_is_refused():
    with pytest.raises(NormalizationError):
        normalize_kuaishou_order(["not", "an", "order"], SHOP.shop_id)  # type: ignore[arg-type]


# ---------------------------------------------------------------- listing over a mock gateway


def order_at(oid: int, update_ms: int) -> dict:
    raw = fixture_orders()[0]
    raw["orderBaseInfo"].update(oid=oid, updateTime=update_ms)
    return raw


async def test_a_window_is_read_page_by_page_until_the_cursor_says_nomore():
    start = datetime(2025, 3, 18, 2, 0, tzinfo=UTC)
    base_ms = int(start.timestamp() * 1000)
    pages = {"": ([order_at(1, base_ms), order_at(2, base_ms + 1)], "c1"), "c1": ([order_at(3, base_ms + 2)], "nomore")}
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "GET" and request.url.path == "/kuaishou/open/order/cursor/list"
        params = param_of(request)
        seen.append(params)
        orders, cursor = pages[params["cursor"]]
        return ok({"cursor": cursor, "orderList": orders, "pageSize": PAGE_SIZE})

    async with client(handler) as http:
        raws = await fast_channel().pull_window(http, SHOP, start, start + timedelta(hours=1))
    assert sorted(r["orderBaseInfo"]["oid"] for r in raws) == [1, 2, 3]
    assert [p["cursor"] for p in seen] == ["", "c1"]
    first = seen[0]
    assert (first["queryType"], first["orderViewStatus"], first["pageSize"]) == (2, 1, PAGE_SIZE)
    assert (first["beginTime"], first["endTime"]) == (base_ms, base_ms + 3_600_000)


async def test_orders_outside_the_half_open_window_are_left_out_and_repeats_kept_once():
    start = datetime(2025, 3, 18, 2, 0, tzinfo=UTC)
    lo = int(start.timestamp() * 1000)
    hi = lo + 60_000
    page = [order_at(1, lo), order_at(2, hi), order_at(3, lo - 1), order_at(1, lo + 5)]

    def handler(request: httpx.Request) -> httpx.Response:
        return ok({"cursor": "nomore", "orderList": page})

    async with client(handler) as http:
        raws = await fast_channel().pull_window(http, SHOP, start, start + timedelta(minutes=1))
    assert [(r["orderBaseInfo"]["oid"], r["orderBaseInfo"]["updateTime"]) for r in raws] == [(1, lo + 5)]


async def test_a_window_longer_than_seven_days_is_split_into_spans_the_platform_accepts():
    start = datetime(2025, 1, 1, tzinfo=UTC)
    end = start + timedelta(days=16)
    spans = []

    def handler(request: httpx.Request) -> httpx.Response:
        params = param_of(request)
        spans.append((params["beginTime"], params["endTime"]))
        return ok({"cursor": "nomore", "orderList": []})

    async with client(handler) as http:
        assert await fast_channel().pull_window(http, SHOP, start, end) == []
    assert len(spans) == 3
    assert all(hi - lo <= MAX_SPAN_MS for lo, hi in spans)
    assert spans[0][0] == int(start.timestamp() * 1000) and spans[-1][1] == int(end.timestamp() * 1000)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous: no gap between spans


async def test_a_cursor_that_does_not_advance_is_an_error_not_an_endless_loop():
    def handler(request: httpx.Request) -> httpx.Response:
        return ok({"cursor": "same", "orderList": [order_at(1, 1742263920000)]})

    start = datetime(2025, 3, 18, 2, 0, tzinfo=UTC)
    async with client(handler) as http:
        with pytest.raises(FetchError) as info:
            await fast_channel().pull_window(http, SHOP, start, start + timedelta(hours=1))
    assert info.value.retryable is False


async def test_orders_are_fetched_by_number_and_unknown_numbers_are_absent():
    def handler(request: httpx.Request) -> httpx.Response:
        oid = param_of(request)["oid"]
        if oid == 2109000000000101:
            return ok(fixture_orders()[0])
        return failure(36, "订单不存在")

    async with client(handler) as http:
        found = await fast_channel().fetch_orders(http, SHOP, ["2109000000000101", "2109999999999999", "not-a-number"])
    assert list(found) == ["2109000000000101"]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("response", "retryable"),
    [
        (httpx.Response(503, text="busy"), True),
        (httpx.Response(429, text="slow down"), True),
        (httpx.Response(502, text="<html>bad gateway</html>"), True),
        (httpx.Response(200, text="<html>not json</html>"), True),
        (failure(17, "Exceed qps limit, KEY [apiId:open.order.cursor.list;appkey:ks1], MAX_QPS [300.0]"), True),
        (failure(1017, "[1017] exceed quota limit"), True),
        (failure(999, "系统繁忙，请稍后重试"), True),
        (failure(28, "签名校验失败"), False),
        (failure(27, "验签失败"), False),
        (failure(25, "token中无scope权限"), False),
        (failure(300004, "SEARCH TIME RANGE EXPAND 7 DAYS"), False),
        (httpx.Response(400, text="bad request"), False),
    ],
)
async def test_platform_failures_become_fetch_errors_retryable_only_when_waiting_helps(response, retryable):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return response

    async with client(handler) as http:
        with pytest.raises(FetchError) as info:
            await fast_channel(attempts=2).fetch_orders(http, SHOP, ["2109000000000101"])
    assert info.value.retryable is retryable
    assert len(calls) == (2 if retryable else 1)  # retried quickly only when waiting can help


async def test_a_transport_failure_is_retryable():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with client(handler) as http:
        with pytest.raises(FetchError) as info:
            await fast_channel().fetch_orders(http, SHOP, ["2109000000000101"])
    assert info.value.retryable is True


async def test_a_refused_token_without_a_refresh_token_asks_the_merchant_to_reauthorise():
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path != "/kuaishou/oauth2/refresh_token"
        return failure(24, "鉴权失败，access_token已过期")

    async with client(handler) as http:
        with pytest.raises(FetchError) as info:
            await fast_channel().fetch_orders(http, SHOP, ["2109000000000101"])
    assert info.value.retryable is False
    assert "re-authorise" in info.value.message and "refresh token" in info.value.message


async def test_a_refused_token_is_refreshed_once_and_the_call_repeated_with_the_new_token():
    shop = ShopConfig(SHOP.channel, SHOP.shop_id, SHOP.name, SHOP.app_key, SHOP.app_secret, SHOP.api_base_url,
                      {**SHOP.extra, "refresh_token": "refresh-1"})
    refresh_forms = []
    tokens_used = []
    issued = iter([("token-2", "refresh-2"), ("token-3", "refresh-3")])
    valid = {"token-2"}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/kuaishou/oauth2/refresh_token":
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            refresh_forms.append(form)
            token, refresh = next(issued)
            valid.clear()
            valid.add(token)
            return httpx.Response(200, json={"result": 1, "access_token": token, "expires_in": 172800,
                                             "refresh_token": refresh, "refresh_token_expires_in": 15552000})
        token = request.url.params["access_token"]
        tokens_used.append(token)
        if token not in valid:
            return failure(24, "鉴权失败，access_token已过期")
        return ok(fixture_orders()[0])

    channel = fast_channel()
    async with client(handler) as http:
        found = await channel.fetch_orders(http, shop, ["2109000000000101"])
        assert list(found) == ["2109000000000101"]
        valid.clear()  # the refreshed token expires too: the next refresh uses the rotated refresh token
        await channel.fetch_orders(http, shop, ["2109000000000101"])
    assert tokens_used == ["fake-kuaishou-access-token-0001", "token-2", "token-2", "token-3"]
    assert refresh_forms[0] == {"grant_type": "refresh_token", "refresh_token": "refresh-1", "app_id": shop.app_key,
                                "app_secret": shop.app_secret}
    assert refresh_forms[1]["refresh_token"] == "refresh-2"


async def test_a_refused_refresh_token_asks_the_merchant_to_reauthorise():
    shop = ShopConfig(SHOP.channel, SHOP.shop_id, SHOP.name, SHOP.app_key, SHOP.app_secret, SHOP.api_base_url,
                      {**SHOP.extra, "refresh_token": "refresh-old"})

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/kuaishou/oauth2/refresh_token":
            return httpx.Response(200, json={"result": 100200102, "error": "access_denied", "error_msg": "refreshToken.discarded"})
        return failure(24, "鉴权失败，access_token已过期")

    async with client(handler) as http:
        with pytest.raises(FetchError) as info:
            await fast_channel().fetch_orders(http, shop, ["2109000000000101"])
    assert info.value.retryable is False and "re-authorise" in info.value.message
    assert "access_denied" in info.value.message
