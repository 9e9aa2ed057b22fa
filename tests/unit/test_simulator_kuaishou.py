"""The simulated 快手 gateway: payload shape, signatures, tokens, paging, refresh.

Requests are signed here by hand from docs/channels/kuaishou.md, independently of both the
simulator and OrderHub's adapter.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from orderhub.demo.shops import demo_shop
from orderhub.simulator import Simulator, create_app
from orderhub.simulator import kuaishou as ks
from orderhub.simulator import model as m
from orderhub.simulator.clock import FixedClock

NOW = 1742263920 + 30 * 86400
SHOP = demo_shop("kuaishou")
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "platforms" / "kuaishou_order_cursor_list.json"
VECTOR = {
    "appkey": "ks000000000000000001", "method": "open.order.detail", "version": "1", "param": '{"oid":2100000000000001}',
    "access_token": "fake-kuaishou-access-token-0001", "timestamp": "1742263920000",
}


@pytest.fixture(scope="module")
def world():
    shops = [dict(SHOP, extra={**SHOP["extra"], "refresh_token": "fake-kuaishou-refresh-0001"})]
    sim = Simulator(seed=21, clock=FixedClock(NOW), shops=shops)
    sim.generate(260, ["kuaishou"])
    with TestClient(create_app(sim)) as client:
        yield sim, client


def by_hand(fields: dict[str, str], secret: str, sign_method: str) -> str:
    names = ["access_token", "appkey", "method", "param", "signMethod", "timestamp", "version"]
    text = "&".join(f"{n}={fields[n]}" for n in sorted(names) if n in fields) + "&signSecret=" + secret
    if sign_method == "MD5":
        return hashlib.md5(text.encode()).hexdigest()
    return base64.b64encode(hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest()).decode()


def call(client, method: str, param: dict, *, token=SHOP["extra"]["access_token"], sign_method="HMAC_SHA256",
         secret=SHOP["extra"]["sign_secret"], tamper=None, post=False, appkey=SHOP["app_key"]):
    fields = {"appkey": appkey, "method": method, "version": "1", "param": json.dumps(param, separators=(",", ":")),
              "timestamp": "1742263920000", "signMethod": sign_method}
    if token is not None:
        fields["access_token"] = token
    fields["sign"] = by_hand(fields, secret, sign_method)
    if tamper is not None:
        tamper(fields)
    path = "/kuaishou/" + method.replace(".", "/")
    response = client.post(path, data=fields) if post else client.get(path, params=fields)
    assert response.status_code == 200
    return response.json()


def window(sim) -> tuple[int, int]:
    orders = sim.orders("kuaishou")
    return min(o.update_time for o in orders) * 1000, max(o.update_time for o in orders) * 1000


def key_paths(value, prefix=""):
    out = set()
    if isinstance(value, dict):
        for k, v in value.items():
            out.add(f"{prefix}/{k}")
            out |= key_paths(v, f"{prefix}/{k}")
    elif isinstance(value, list) and value:
        out |= key_paths(value[0], prefix + "[]")
    return out


# ---------------------------------------------------------------- payload


def test_the_worked_vectors_are_what_the_gateway_expects():
    assert ks.expected_sign({**VECTOR, "signMethod": "HMAC_SHA256"}, "fake-kuaishou-sign-secret", "HMAC_SHA256") == (
        "KgNfUZ3pfil+7Iwwx2DfwbsNTzaEfeuQxwrBDvMhuf4=")
    assert ks.expected_sign({**VECTOR, "signMethod": "MD5"}, "fake-kuaishou-sign-secret", "MD5") == "312b45482a760cdb45696b2517a272ab"


def test_rendered_orders_have_the_fixture_shape_and_types(world):
    sim, _ = world
    fixture = json.loads(FIXTURE.read_text(encoding="utf-8"))["data"]["orderList"]
    wanted = set().union(*(key_paths(o) for o in fixture))
    seen = set().union(*(key_paths(sim.render(o)) for o in sim.orders("kuaishou")))
    # The simulator writes no seller notes; everything else is in both.
    assert seen == {p for p in wanted if not p.startswith("/orderNote/orderNoteInfo[]/")}
    sample = sim.render(sim.orders("kuaishou")[0])
    for section in ("orderBaseInfo", "orderItemInfo", "orderAddress"):
        for key, value in fixture[0][section].items():
            assert type(sample[section][key]) is type(value), (section, key)


def test_every_order_carries_one_item_and_its_money_adds_up_in_fen(world):
    sim, _ = world
    for order in sim.orders("kuaishou"):
        raw = sim.render(order)
        base, item = raw["orderBaseInfo"], raw["orderItemInfo"]
        assert item["originalPrice"] * item["num"] - base["discountFee"] + base["expressFee"] == base["totalFee"] == order.paid
        assert base["oid"] == int(order.original_id) and base["updateTime"] == order.update_time * 1000
        assert raw["orderItemInfo"]["skuNick"] == order.lines[0].sku.code
        assert base["buyerOpenId"] == order.customer.kuaishou_open_id


def test_payloads_carry_masks_and_ciphertexts_never_plaintext_and_the_vault_knows_them(world):
    sim, _ = world
    for order in sim.orders("kuaishou")[:50]:
        text = sim.payload(order).decode()
        assert order.customer.phone not in text and order.address.detail not in text
        address = sim.render(order)["orderAddress"]
        assert sim.decrypt(address["encryptedMobile"]) == order.customer.phone
        assert sim.decrypt(address["encryptedConsignee"]) == order.customer.name
        assert sim.decrypt(address["encryptedAddress"]) == order.address.detail
        assert address["desensitiseMobile"] == order.customer.phone[:3] + "****" + order.customer.phone[-4:]


def test_the_platform_status_follows_the_order(world):
    sim, _ = world
    codes = {m.UNPAID: 10, m.PAID: 30, m.SHIPPED: 40, m.COMPLETED: 70, m.CANCELLED: 80, m.CLOSED: 80}
    for order in sim.orders("kuaishou"):
        assert sim.render(order)["orderBaseInfo"]["status"] == codes[order.status]


def test_no_push_is_built():
    assert ks.build_push(SHOP, None, m.PAY, "1") is None  # type: ignore[arg-type]


# ---------------------------------------------------------------- signatures and tokens


@pytest.mark.parametrize("sign_method", ["HMAC_SHA256", "MD5"])
@pytest.mark.parametrize("post", [False, True])
def test_requests_signed_by_hand_are_accepted(world, sign_method, post):
    sim, client = world
    order = sim.orders("kuaishou")[0]
    reply = call(client, "open.order.detail", {"oid": int(order.original_id)}, sign_method=sign_method, post=post)
    assert reply["result"] == 1
    assert reply["data"]["orderBaseInfo"]["oid"] == int(order.original_id)


def _flip_last(value: str) -> str:
    return value[:-1] + chr(ord(value[-1]) ^ 1)


@pytest.mark.parametrize("field", ["sign", "param", "timestamp", "access_token", "signMethod"])
def test_one_changed_byte_in_a_signed_request_is_refused(world, field):
    sim, client = world
    order = sim.orders("kuaishou")[0]

    def tamper(fields):
        if field == "signMethod":
            fields["signMethod"] = "MD5"  # same bytes signed, another algorithm claimed
        else:
            fields[field] = _flip_last(fields[field])

    reply = call(client, "open.order.detail", {"oid": int(order.original_id)}, tamper=tamper)
    assert reply["result"] == ks.SIGN_INVALID[0]
    assert "签名" in reply["error_msg"] and "data" not in reply


def test_a_wrong_sign_secret_is_refused(world):
    _, client = world
    reply = call(client, "open.order.detail", {"oid": 1}, secret="not-the-sign-secret")
    assert reply["result"] == ks.SIGN_INVALID[0]


@pytest.mark.parametrize("token", [None, "", "not-a-token"])
def test_a_missing_or_unknown_access_token_is_refused(world, token):
    _, client = world
    reply = call(client, "open.order.detail", {"oid": 1}, token=token)
    assert reply["result"] == ks.TOKEN_INVALID[0] and "access_token" in reply["error_msg"]


def test_an_unknown_appkey_is_refused(world):
    _, client = world
    assert call(client, "open.order.detail", {"oid": 1}, appkey="ks999")["result"] == ks.APP_INVALID[0]


def test_a_method_that_does_not_match_the_path_is_refused(world):
    _, client = world

    def tamper(fields):
        fields["method"] = "open.order.cursor.list"
        fields["sign"] = by_hand(fields, SHOP["extra"]["sign_secret"], "HMAC_SHA256")

    assert call(client, "open.order.detail", {"oid": 1}, tamper=tamper)["result"] == ks.PARAM_INVALID[0]


# ---------------------------------------------------------------- open.order.cursor.list


def list_all(client, begin: int, end: int, **extra) -> list[dict]:
    cursor, seen, pages = "", [], 0
    while True:
        reply = call(client, "open.order.cursor.list",
                     {"beginTime": begin, "endTime": end, "pageSize": 50, "queryType": 2, "cursor": cursor, **extra})
        assert reply["result"] == 1, reply
        seen.extend(reply["data"]["orderList"])
        pages += 1
        cursor = reply["data"]["cursor"]
        if cursor == "nomore":
            return seen
        assert pages < 100


def test_the_listing_returns_every_order_of_the_window_once_across_pages(world):
    sim, client = world
    begin, end = window(sim)
    orders = list_all(client, begin, end)
    assert len(orders) > 50  # more than one page
    assert sorted(o["orderBaseInfo"]["oid"] for o in orders) == sorted(int(o.original_id) for o in sim.orders("kuaishou"))


def test_the_listing_filters_by_update_time_with_inclusive_bounds(world):
    sim, client = world
    begin, end = window(sim)
    middle = (begin + end) // 2 // 1000 * 1000
    orders = list_all(client, middle, end)
    expected = {int(o.original_id) for o in sim.orders("kuaishou") if o.update_time * 1000 >= middle}
    assert {o["orderBaseInfo"]["oid"] for o in orders} == expected


def test_the_listing_filters_by_view_status(world):
    sim, client = world
    begin, end = window(sim)
    shipped = list_all(client, begin, end, orderViewStatus=4)
    assert shipped and {o["orderBaseInfo"]["status"] for o in shipped} == {40}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"pageSize": 51}, ks.PARAM_INVALID[0]),
        ({"cursor": "garbage!"}, ks.PARAM_INVALID[0]),
        ({"endTime": 0}, ks.END_BEFORE_BEGIN[0]),
        ({"beginTime": 0}, ks.SPAN_TOO_LONG[0]),
    ],
)
def test_the_listing_refuses_what_the_platform_refuses(world, change, code):
    sim, client = world
    begin, end = window(sim)
    reply = call(client, "open.order.cursor.list", {"beginTime": begin, "endTime": end, "pageSize": 50, "cursor": "", **change})
    assert reply["result"] == code


def test_the_listing_refuses_windows_older_than_ninety_days(world):
    _, client = world
    begin = (NOW - 91 * 86400) * 1000
    reply = call(client, "open.order.cursor.list", {"beginTime": begin, "endTime": begin + 3_600_000, "cursor": ""})
    assert reply["result"] == ks.TOO_OLD[0]


def test_the_detail_of_an_unknown_order_says_it_does_not_exist(world):
    _, client = world
    reply = call(client, "open.order.detail", {"oid": 2199999999999999})
    assert reply["result"] == ks.ORDER_NOT_FOUND[0] and "订单不存在" in reply["error_msg"]


# ---------------------------------------------------------------- token refresh


def refresh(client, refresh_token, secret=SHOP["app_secret"]):
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "app_id": SHOP["app_key"], "app_secret": secret}
    return client.post("/kuaishou/oauth2/refresh_token", data=form).json()


def test_a_refresh_token_gives_a_new_access_token_once_and_rotates():
    shops = [dict(SHOP, extra={**SHOP["extra"], "refresh_token": "refresh-a"})]
    sim = Simulator(seed=1, clock=FixedClock(NOW), shops=shops)
    with TestClient(create_app(sim)) as client:
        assert refresh(client, "refresh-a", secret="wrong")["result"] == 100200101
        sim.revoke_tokens("kuaishou")
        assert call(client, "open.order.detail", {"oid": 1})["result"] == ks.TOKEN_INVALID[0]
        first = refresh(client, "refresh-a")
        assert first["result"] == 1 and first["expires_in"] == 172800 and first["refresh_token"] != "refresh-a"
        again = refresh(client, "refresh-a")
        assert (again["result"], again["error"]) == (100200102, "access_denied")  # single use
        reply = call(client, "open.order.detail", {"oid": 1}, token=first["access_token"])
        assert reply["result"] == ks.ORDER_NOT_FOUND[0]  # authorised: the order simply does not exist
        assert refresh(client, first["refresh_token"])["result"] == 1


def test_an_outage_answers_every_gateway_call_with_503(world):
    sim, client = world
    sim.faults.set("kuaishou", "down", 30)
    try:
        response = client.get("/kuaishou/open/order/detail", params={"appkey": SHOP["app_key"]})
        assert response.status_code == 503
    finally:
        sim.faults.clear("kuaishou")
