"""有赞 Youzan channel: push auth, push parsing, token flow, API calls, normalization."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, quote

import httpx
import pytest
from tenacity import wait_none

from orderhub.adapters.channels.base import ShopConfig
from orderhub.adapters.channels.youzan import YouzanChannel
from orderhub.domain.errors import EnvelopeError, ErrorCode, FetchError, NormalizationError, SignatureError
from orderhub.domain.order import RefundStatus, Shipment
from orderhub.domain.status import Status

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "platforms"
SIGNATURES = json.loads((FIXTURES / "SIGNATURES.json").read_text(encoding="utf-8"))["youzan_push_trade_paid.body.json"]
PUSH_BODY = (FIXTURES / "youzan_push_trade_paid.body.json").read_bytes()
TRADE_REPLY = json.loads((FIXTURES / "youzan_trade_get.json").read_text(encoding="utf-8"))
CLIENT_ID = SIGNATURES["header Client-Id"]
CLIENT_SECRET = SIGNATURES["client_secret (fake)"]
PUSH_SIGN = SIGNATURES["header Event-Sign (md5(client_id+body+client_secret))"]
TID = "E20250318101200012345678"
NOW = 1742263962  # 2025-03-18 10:12:42 +08:00

SHOP = ShopConfig(
    channel="youzan",
    shop_id="90000001",
    name="测试微商城",
    app_key=CLIENT_ID,
    app_secret=CLIENT_SECRET,
    api_base_url="http://sim.test/youzan",
)
SHOP_WITH_TOKEN = dataclasses.replace(SHOP, extra={"access_token": "pre-issued"})


class Shops:
    def __init__(self, *shops: ShopConfig) -> None:
        self._shops = shops

    def by_shop(self, channel: str, shop_id: str) -> ShopConfig | None:
        return next((s for s in self._shops if s.channel == channel and s.shop_id == shop_id), None)

    def by_app_key(self, channel: str, app_key: str) -> list[ShopConfig]:
        return [s for s in self._shops if s.channel == channel and s.app_key == app_key]


def trade() -> dict:
    return copy.deepcopy(TRADE_REPLY["data"])


def channel() -> YouzanChannel:
    return YouzanChannel(clock=lambda: NOW, retry_wait=wait_none())


def beijing(text: str) -> datetime:
    return datetime.fromisoformat(text + "+08:00")


# -- normalization ------------------------------------------------------------------------------


def test_fixture_trade_becomes_the_expected_canonical_order():
    order = channel().normalize(trade(), SHOP)

    assert (order.channel, order.shop_id, order.original_id) == ("youzan", "90000001", TID)
    assert order.status is Status.PAID
    assert order.platform_status == {"status": "WAIT_SELLER_SEND_GOODS", "refund_state": 0}
    assert order.created_at == beijing("2025-03-18T10:12:00")
    assert order.paid_at == beijing("2025-03-18T10:12:41")
    assert order.updated_at == beijing("2025-03-18T10:12:45")
    assert all(t.tzinfo is not None for t in (order.created_at, order.paid_at, order.updated_at))
    a = order.amounts
    assert (a.goods, a.discount, a.shipping, a.paid) == (14970, 1600, 0, 13370)
    assert (a.discount_shop, a.discount_platform) == (None, None)
    tee, bag = order.lines
    assert (tee.sku, tee.title, tee.qty, tee.unit_price, tee.paid, tee.gift) == ("TS-TEE01-WH-L", "测试纯棉T恤", 2, 5990, 10699, False)
    assert (tee.platform_sku_id, tee.platform_line_id, tee.refund_status) == ("810000001", "1600000000000000001", RefundStatus.NONE)
    assert (bag.sku, bag.qty, bag.unit_price, bag.paid) == ("TS-BAG02-BE", 1, 2990, 2671)
    assert (order.address.province, order.address.city, order.address.district, order.address.detail) == ("浙江省", "杭州市", "西湖区", None)
    assert (order.buyer.platform_buyer_id, order.buyer.name, order.buyer.phone) == ("FAKEyzOpenId0001", None, None)
    assert order.pii == {"name": "$FAKEbmFtZQ==$1$", "phone": "$FAKEcGhvbmU=$1$", "address_detail": "$FAKEYWRkcmVzcw==$1$"}
    assert order.buyer_message == "请尽快发货"
    assert order.seller_remark is None
    assert order.shipment is None


def test_normalize_is_deterministic_for_the_same_payload():
    assert channel().normalize(trade(), SHOP) == channel().normalize(trade(), SHOP)


def test_shop_comes_from_node_kdt_id_else_from_the_shop_config():
    raw = trade()
    raw["full_order_info"]["order_info"]["node_kdt_id"] = 90000099
    assert channel().normalize(raw, SHOP).shop_id == "90000099"
    raw["full_order_info"]["order_info"].pop("node_kdt_id")
    assert channel().normalize(raw, SHOP).shop_id == "90000001"


def test_present_lines_are_gifts_priced_zero():
    raw = trade()
    gift = copy.deepcopy(raw["full_order_info"]["orders"][1])
    gift.update(oid="1600000000000000003", is_present=True, price="19.90", payment="0.00", total_fee="0.00")
    raw["full_order_info"]["orders"].append(gift)
    order = channel().normalize(raw, SHOP)
    assert (order.lines[2].gift, order.lines[2].unit_price) == (True, 0)
    assert order.amounts.goods == 14970


def test_remark_and_shipment_are_read_when_present():
    raw = trade()
    raw["full_order_info"]["remark_info"]["trade_memo"] = "加急"
    raw["delivery_order"] = [{"dists": [{"express_info": {"express_id": 1, "express_name": "申通快递", "express_no": "ST123"}}]}]
    order = channel().normalize(raw, SHOP)
    assert order.seller_remark == "加急"
    assert order.shipment == Shipment(carrier="申通快递", waybill_no="ST123")


@pytest.mark.parametrize(
    ("refund_state", "expected"),
    [("NO_REFUND", "none"), ("PARTIAL_REFUNDING", "refunding"), ("FULL_REFUNDED", "refunded"), (0, "none"), (11, "refunding"), (12, "refunded")],
)
def test_line_refund_state_maps_to_refund_status(refund_state, expected):
    raw = trade()
    raw["full_order_info"]["orders"][0]["refund_state"] = refund_state
    assert channel().normalize(raw, SHOP).lines[0].refund_status == expected


@pytest.mark.parametrize(
    ("status", "pay_time", "expected"),
    [
        ("WAIT_BUYER_PAY", "", Status.PENDING_PAYMENT),
        ("TRADE_PAID", "2025-03-18 10:12:41", Status.PAID),
        ("WAIT_CONFIRM", "2025-03-18 10:12:41", Status.PAID),
        ("WAIT_SELLER_SEND_GOODS", "2025-03-18 10:12:41", Status.PAID),
        ("WAIT_BUYER_CONFIRM_GOODS", "2025-03-18 10:12:41", Status.SHIPPED),
        ("TRADE_SUCCESS", "2025-03-18 10:12:41", Status.COMPLETED),
        ("TRADE_CLOSED", "2025-03-18 10:12:41", Status.CANCELLED),
        ("TRADE_CLOSED", "", Status.CLOSED),
    ],
)
def test_status_mapping_cell_by_cell(status, pay_time, expected):
    raw = trade()
    raw["full_order_info"]["order_info"].update(status=status, pay_time=pay_time)
    order = channel().normalize(raw, SHOP)
    assert order.status is expected
    assert order.paid_at == (beijing(pay_time.replace(" ", "T")) if pay_time else None)


def test_unknown_status_is_rejected_with_unknown_status():
    raw = trade()
    raw["full_order_info"]["order_info"]["status"] = "WAIT_SOMETHING_NEW"
    with pytest.raises(NormalizationError) as err:
        channel().normalize(raw, SHOP)
    assert (err.value.code, err.value.field) == (ErrorCode.UNKNOWN_STATUS, "full_order_info.order_info.status")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda f: f["orders"][0].update(payment="100.00"), "full_order_info.orders.payment"),
        (lambda f: f["pay_info"].update(payment="200.00"), "pay_info.payment"),
    ],
)
def test_amounts_that_do_not_add_up_are_rejected(change, field):
    raw = trade()
    change(raw["full_order_info"])
    with pytest.raises(NormalizationError) as err:
        channel().normalize(raw, SHOP)
    assert (err.value.code, err.value.field) == (ErrorCode.AMOUNTS_MISMATCH, field)


@pytest.mark.parametrize(
    ("remove", "field"),
    [
        (lambda f: f["order_info"].pop("tid"), "full_order_info.order_info.tid"),
        (lambda f: f["pay_info"].pop("payment"), "full_order_info.pay_info.payment"),
        (lambda f: f["orders"][1].pop("price"), "full_order_info.orders[1].price"),
        (lambda f: f.pop("pay_info"), "full_order_info.pay_info"),
    ],
)
def test_missing_fields_are_named_in_the_error(remove, field):
    raw = trade()
    remove(raw["full_order_info"])
    with pytest.raises(NormalizationError) as err:
        channel().normalize(raw, SHOP)
    assert (err.value.code, err.value.field) == (ErrorCode.MISSING_FIELD, field)


@pytest.mark.parametrize(
    ("mangle", "code"),
    [
        (lambda f: f["orders"][0].update(price="59.901"), ErrorCode.INVALID_AMOUNT),
        (lambda f: f["order_info"].update(created="2025/03/18"), ErrorCode.INVALID_TIME),
        (lambda f: f.update(orders="x"), ErrorCode.MISSING_FIELD),
        (lambda f: f.update(orders=[7]), ErrorCode.INVALID_FIELD),
    ],
)
def test_bad_values_fail_with_a_code_not_a_crash(mangle, code):
    raw = trade()
    mangle(raw["full_order_info"])
    with pytest.raises(NormalizationError) as err:
        channel().normalize(raw, SHOP)
    assert err.value.code == code


# -- push ---------------------------------------------------------------------------------------


def test_fixture_push_verifies_with_the_recorded_signature():
    headers = {"Client-Id": CLIENT_ID, "Event-Type": "trade_TradePaid", "Event-Sign": PUSH_SIGN}
    assert channel().authenticate(headers, PUSH_BODY, Shops(SHOP)).app_key == CLIENT_ID


def test_lowercase_headers_are_accepted():
    headers = {"client-id": CLIENT_ID, "event-sign": PUSH_SIGN.upper()}
    assert channel().authenticate(headers, PUSH_BODY, Shops(SHOP)).app_key == CLIENT_ID


def test_one_byte_change_to_the_body_is_rejected():
    tampered = PUSH_BODY.replace(b'"mode":1', b'"mode":2')
    with pytest.raises(SignatureError) as err:
        channel().authenticate({"Client-Id": CLIENT_ID, "Event-Sign": PUSH_SIGN}, tampered, Shops(SHOP))
    assert err.value.code == ErrorCode.SIGNATURE_INVALID


def test_one_character_change_to_the_signature_is_rejected():
    wrong = ("f" if PUSH_SIGN[0] != "f" else "e") + PUSH_SIGN[1:]
    with pytest.raises(SignatureError) as err:
        channel().authenticate({"Client-Id": CLIENT_ID, "Event-Sign": wrong}, PUSH_BODY, Shops(SHOP))
    assert err.value.code == ErrorCode.SIGNATURE_INVALID


@pytest.mark.parametrize("headers", [{"Client-Id": CLIENT_ID}, {"Event-Sign": PUSH_SIGN}])
def test_missing_signature_headers_are_rejected(headers):
    with pytest.raises(SignatureError) as err:
        channel().authenticate(headers, PUSH_BODY, Shops(SHOP))
    assert err.value.code == ErrorCode.SIGNATURE_MISSING


def test_push_for_an_unknown_client_is_rejected():
    with pytest.raises(SignatureError) as err:
        channel().authenticate({"Client-Id": "someone", "Event-Sign": PUSH_SIGN}, PUSH_BODY, Shops(SHOP))
    assert err.value.code == ErrorCode.UNKNOWN_SHOP


def test_fixture_push_yields_the_trade_and_its_version_time():
    (message,) = channel().parse_push(PUSH_BODY)
    assert (message.shop_id, message.original_id, message.kind) == ("90000001", TID, "trade_TradePaid")
    assert message.event_time == datetime.fromtimestamp(1742263962, tz=UTC)
    assert message.raw["msg_decoded"] == {"tid": TID, "status": "WAIT_SELLER_SEND_GOODS"}


def test_test_pushes_yield_nothing():
    assert channel().parse_push(json.dumps({"test": True, "type": "trade_TradePaid"}).encode()) == []


def test_trade_number_is_taken_from_msg_when_id_is_absent():
    msg = quote(json.dumps({"tid": "E2025X", "status": "TRADE_SUCCESS"}))
    body = json.dumps({"kdt_id": 1, "type": "trade_TradeSuccess", "msg": msg, "version": 1742263962}).encode()
    assert channel().parse_push(body)[0].original_id == "E2025X"


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"kdt_id":1,"type":"trade_TradePaid"}', b'{"id":"E1","type":"trade_TradePaid"}', b'{"id":"E1","kdt_id":1}'],
)
def test_bodies_that_are_not_the_envelope_are_refused(body):
    with pytest.raises(EnvelopeError) as err:
        channel().parse_push(body)
    assert err.value.code == ErrorCode.MALFORMED_ENVELOPE


# -- the cloud API over a mock transport ---------------------------------------------------------


class FakeYouzan:
    def __init__(self, *, replies: list | None = None, token_ttl_s: int = 7 * 86400) -> None:
        self.requests: list[httpx.Request] = []
        self.replies = list(replies or [])
        self.token_ttl_s = token_ttl_s
        self.tokens_issued = 0
        self.valid_tokens: set[str] = set()

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith("/auth/token"):
            self.tokens_issued += 1
            token = f"token-{self.tokens_issued}"
            self.valid_tokens.add(token)
            expires = (NOW + self.token_ttl_s) * 1000
            return httpx.Response(200, json={"success": True, "code": 200, "data": {"access_token": token, "expires": expires, "scope": "trade"}})
        if self.replies:
            reply = self.replies.pop(0)
            if isinstance(reply, Exception):
                raise reply
            return reply if isinstance(reply, httpx.Response) else httpx.Response(200, json=reply)
        token = dict(parse_qsl(request.url.query.decode())).get("access_token")
        if token not in self.valid_tokens | {"pre-issued"}:
            return httpx.Response(200, json={"success": False, "code": 4203, "message": "access_token不存在"})
        return httpx.Response(200, json=TRADE_REPLY)


def run(fake: FakeYouzan, coro_factory):
    async def main():
        async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
            return await coro_factory(http)

    return asyncio.run(main())


def test_trade_get_is_called_with_the_token_in_the_query_and_the_tid_in_the_body():
    fake = FakeYouzan()
    orders = run(fake, lambda http: channel().fetch_orders(http, SHOP_WITH_TOKEN, [TID]))
    (request,) = fake.requests
    assert request.method == "POST"
    assert request.url.path == "/youzan/api/youzan.trade.get/4.0.0"
    assert dict(parse_qsl(request.url.query.decode())) == {"access_token": "pre-issued"}
    assert json.loads(request.content) == {"tid": TID}
    assert channel().normalize(orders[TID], SHOP).original_id == TID


def test_token_is_requested_silently_for_the_shop_and_cached():
    fake = FakeYouzan()
    ch = channel()

    async def scenario(http):
        await ch.fetch_orders(http, SHOP, [TID])
        await ch.fetch_orders(http, SHOP, [TID])

    run(fake, scenario)
    assert fake.paths() == ["/youzan/auth/token", "/youzan/api/youzan.trade.get/4.0.0", "/youzan/api/youzan.trade.get/4.0.0"]
    assert json.loads(fake.requests[0].content) == {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "authorize_type": "silent",
        "grant_id": "90000001",
        "refresh": False,
    }


def test_token_is_renewed_shortly_before_it_expires():
    fake = FakeYouzan(token_ttl_s=3600)
    clock = [NOW]
    ch = YouzanChannel(clock=lambda: clock[0], retry_wait=wait_none())

    async def scenario(http):
        await ch.fetch_orders(http, SHOP, [TID])
        clock[0] = NOW + 3600 - 100  # inside the refresh margin
        await ch.fetch_orders(http, SHOP, [TID])

    run(fake, scenario)
    assert fake.tokens_issued == 2


def test_bad_token_drops_the_cache_and_retries_once_with_a_new_token():
    fake = FakeYouzan()
    ch = channel()

    async def scenario(http):
        await ch.fetch_orders(http, SHOP, [TID])
        fake.valid_tokens.clear()
        return await ch.fetch_orders(http, SHOP, [TID])

    assert TID in run(fake, scenario)
    assert fake.tokens_issued == 2
    assert dict(parse_qsl(fake.requests[-1].url.query.decode()))["access_token"] == "token-2"


def test_a_token_refused_twice_is_a_permanent_failure():
    bad = {"success": False, "code": 4203, "message": "access_token不存在"}
    fake = FakeYouzan(replies=[bad, bad])
    with pytest.raises(FetchError) as err:
        run(fake, lambda http: channel().fetch_orders(http, SHOP, [TID]))
    assert err.value.retryable is False


@pytest.mark.parametrize(
    "failure",
    [httpx.Response(500), httpx.Response(429), httpx.ReadTimeout("slow")],
    ids=["http-500", "http-429", "timeout"],
)
def test_transient_failures_are_retried_then_raised_as_retryable(failure):
    fake = FakeYouzan(replies=[failure, failure, failure])
    with pytest.raises(FetchError) as err:
        run(fake, lambda http: channel().fetch_orders(http, SHOP_WITH_TOKEN, [TID]))
    assert err.value.retryable is True
    assert len(fake.requests) == 3


def test_permission_failures_are_not_retried():
    fake = FakeYouzan(replies=[{"success": False, "code": 40012, "message": "api not in scope"}])
    with pytest.raises(FetchError) as err:
        run(fake, lambda http: channel().fetch_orders(http, SHOP_WITH_TOKEN, [TID]))
    assert err.value.retryable is False
    assert len(fake.requests) == 1


def test_unknown_trades_are_left_out_of_the_result():
    fake = FakeYouzan(replies=[{"success": False, "code": 101300005, "message": "订单不存在"}])
    assert run(fake, lambda http: channel().fetch_orders(http, SHOP_WITH_TOKEN, ["E404"])) == {}


def test_pull_window_reads_every_page_in_beijing_time():
    def page(n: int, count: int) -> dict:
        items = []
        for i in range(count):
            item = trade()
            item["full_order_info"]["order_info"]["tid"] = f"E{n}{i:03d}"
            items.append(item)
        return {"success": True, "code": 200, "data": {"total_results": 250, "full_order_info_list": items}}

    fake = FakeYouzan(replies=[page(1, 100), page(2, 100), page(3, 50)])
    start = datetime(2025, 3, 18, 1, 0, tzinfo=UTC)
    end = datetime(2025, 3, 18, 2, 0, tzinfo=UTC)
    trades = run(fake, lambda http: channel().pull_window(http, SHOP_WITH_TOKEN, start, end))
    assert len({t["full_order_info"]["order_info"]["tid"] for t in trades}) == 250
    bodies = [json.loads(r.content) for r in fake.requests]
    assert [b["page_no"] for b in bodies] == [1, 2, 3]
    assert bodies[0] == {"start_update": "2025-03-18 09:00:00", "end_update": "2025-03-18 10:00:00", "page_no": 1, "page_size": 100}
    assert fake.requests[0].url.path == "/youzan/api/youzan.trades.sold.get/4.0.0"
    assert channel().normalize(trades[0], SHOP).original_id == "E1000"
