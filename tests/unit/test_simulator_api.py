"""The simulated platform APIs accept correctly signed requests and nothing else, and page correctly.

Requests are signed here by hand from docs/wire-protocols.md (hashlib/hmac), independently of
both the simulator and OrderHub's channel adapters.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from orderhub.demo.shops import demo_shop
from orderhub.simulator import Simulator, create_app
from orderhub.simulator.clock import FixedClock

NOW = 1742263920 + 30 * 86400
DY, YZ, JD = demo_shop("douyin"), demo_shop("youzan"), demo_shop("jd")


@pytest.fixture(scope="module")
def world():
    sim = Simulator(seed=11, clock=FixedClock(NOW))
    sim.generate(900, ["douyin", "youzan", "jd"])
    with TestClient(create_app(sim)) as client:
        yield sim, client


def cst(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts + 8 * 3600))


# ------------------------------------------------------------------ 抖店, signed by hand

def douyin_request(method, params, token=None, sign_method="md5", secret=DY["app_secret"], tamper_sign=False,
                   tamper_params=False):
    param_json = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    ts = str(int(time.time()))
    msg = (secret + "app_key" + DY["app_key"] + "method" + method + "param_json" + param_json
           + "timestamp" + ts + "v" + "2" + secret)
    if sign_method == "hmac-sha256":
        sign = hmac.new(secret.encode(), msg.encode(), hashlib.sha256).hexdigest()
    else:
        sign = hashlib.md5(msg.encode()).hexdigest()
    if tamper_sign:
        sign = ("0" if sign[0] != "0" else "1") + sign[1:]
    if tamper_params:
        param_json = param_json.replace("0", "1", 1) if "0" in param_json else param_json + " "
    query = {"app_key": DY["app_key"], "method": method, "param_json": param_json, "timestamp": ts, "v": "2",
             "sign_method": sign_method, "sign": sign}
    if token is not None:
        query["access_token"] = token
    return "/douyin/" + method.replace(".", "/") + "?" + urlencode(query), param_json.encode()


def douyin(client, *args, **kwargs):
    url, body = douyin_request(*args, **kwargs)
    return client.post(url, content=body, headers={"Content-Type": "application/json"}).json()


def douyin_token(client, sign_method="md5"):
    reply = douyin(client, "token.create", {"code": "", "grant_type": "authorization_self", "shop_id": DY["shop_id"]},
                   sign_method=sign_method)
    assert reply["code"] == 10000, reply
    return reply["data"]["access_token"]


@pytest.mark.parametrize("sign_method", ["md5", "hmac-sha256"])
def test_douyin_accepts_requests_signed_with_md5_or_hmac_sha256(world, sign_method):
    sim, client = world
    token = douyin_token(client, sign_method)
    order = next(o for o in sim.generate(5, ["douyin"]).orders)
    reply = douyin(client, "order.orderDetail", {"shop_order_id": order.original_id}, token, sign_method)
    assert reply["code"] == 10000 and reply["msg"] == "success"
    detail = reply["data"]["shop_order_detail"]
    assert detail["order_id"] == order.original_id
    assert detail["update_time"] == order.update_time


@pytest.mark.parametrize("tamper", ["tamper_sign", "tamper_params"])
def test_douyin_rejects_one_changed_byte_in_sign_or_params(world, tamper):
    _, client = world
    token = douyin_token(client)
    reply = douyin(client, "order.searchList", {"page": 0, "size": 10}, token, **{tamper: True})
    assert reply["code"] == 30001
    assert reply["sub_code"] == "isv.signature-invalid"
    assert reply["data"] == {}


def test_douyin_rejects_a_wrong_app_secret(world):
    _, client = world
    reply = douyin(client, "token.create", {"code": "", "grant_type": "authorization_self", "shop_id": DY["shop_id"]},
                   secret="not-the-secret")
    assert reply["code"] == 30001


@pytest.mark.parametrize("token", [None, "", "f" * 32])
def test_douyin_rejects_missing_or_unknown_access_token(world, token):
    _, client = world
    reply = douyin(client, "order.searchList", {"page": 0, "size": 10}, token)
    assert reply["code"] == 30002


def test_douyin_search_list_returns_every_order_exactly_once_across_pages(world):
    sim, client = world
    token = douyin_token(client)
    seen, page, total = [], 0, None
    while True:
        reply = douyin(client, "order.searchList", {"page": page, "size": 100, "update_time_start": 0,
                                                    "update_time_end": NOW + 10, "order_by": "update_time",
                                                    "order_asc": True}, token)
        assert reply["code"] == 10000, reply
        data = reply["data"]
        total = data["total"]
        if not data["shop_order_list"]:
            break
        seen += [o["order_id"] for o in data["shop_order_list"]]
        page += 1
    assert len(seen) == len(set(seen)) == total == sim.count("douyin")


def test_douyin_search_list_filters_by_update_time_window(world):
    sim, client = world
    token = douyin_token(client)
    times = sorted(o.update_time for o in sim.orders("douyin"))
    start, end = times[len(times) // 4], times[len(times) // 2]
    expected = sum(start <= t <= end for t in times)
    reply = douyin(client, "order.searchList", {"page": 0, "size": 100, "update_time_start": start,
                                                "update_time_end": end, "order_by": "update_time",
                                                "order_asc": True}, token)
    data = reply["data"]
    assert data["total"] == expected
    got = [o["update_time"] for o in data["shop_order_list"]]
    assert got == sorted(got) and all(start <= t <= end for t in got)


def test_douyin_refuses_page_size_over_100(world):
    _, client = world
    reply = douyin(client, "order.searchList", {"page": 0, "size": 101}, douyin_token(client))
    assert reply["code"] != 10000


# ------------------------------------------------------------------ 有赞

def youzan_token(client):
    reply = client.post("/youzan/auth/token", json={"client_id": YZ["app_key"], "client_secret": YZ["app_secret"],
                                                    "authorize_type": "silent", "grant_id": YZ["shop_id"],
                                                    "refresh": False}).json()
    assert reply["success"] is True and reply["code"] == 200, reply
    assert reply["data"]["expires"] > NOW * 1000
    return reply["data"]["access_token"]


def test_youzan_token_needs_the_right_client_secret(world):
    _, client = world
    reply = client.post("/youzan/auth/token", json={"client_id": YZ["app_key"], "client_secret": "wrong",
                                                    "authorize_type": "silent", "grant_id": YZ["shop_id"]}).json()
    assert reply["success"] is False


@pytest.mark.parametrize("token", ["", "unknown-token"])
def test_youzan_rejects_missing_or_unknown_access_token(world, token):
    _, client = world
    reply = client.post(f"/youzan/api/youzan.trade.get/4.0.0?access_token={token}", json={"tid": "E1"}).json()
    assert reply == {"success": False, "code": 4203, "message": "access_token不存在"}


def test_youzan_trade_get_returns_the_trade(world):
    sim, client = world
    token = youzan_token(client)
    order = sim.generate(3, ["youzan"]).orders[0]
    reply = client.post(f"/youzan/api/youzan.trade.get/4.0.0?access_token={token}", json={"tid": order.original_id}).json()
    assert reply["success"] is True and reply["code"] == 200 and reply["message"] == "successful"
    assert reply["data"]["full_order_info"]["order_info"]["tid"] == order.original_id


def test_youzan_sold_get_pages_every_trade_once_and_filters_the_window(world):
    sim, client = world
    token = youzan_token(client)
    seen, page = [], 1
    while True:
        reply = client.post(f"/youzan/api/youzan.trades.sold.get/4.0.0?access_token={token}",
                            json={"start_update": cst(0), "end_update": cst(NOW + 10), "page_no": page,
                                  "page_size": 100}).json()
        items = reply["data"]["full_order_info_list"]
        if not items:
            break
        assert set(items[0]) == {"full_order_info", "order_promotion", "refund_order", "delivery_order"}
        seen += [i["full_order_info"]["order_info"]["tid"] for i in items]
        page += 1
    assert len(seen) == len(set(seen)) == reply["data"]["total_results"] == sim.count("youzan")

    times = sorted(o.update_time for o in sim.orders("youzan"))
    start, end = times[10], times[40]
    reply = client.post(f"/youzan/api/youzan.trades.sold.get/4.0.0?access_token={token}",
                        json={"start_update": cst(start), "end_update": cst(end), "page_no": 1,
                              "page_size": 100}).json()
    got = [i["full_order_info"]["order_info"]["update_time"] for i in reply["data"]["full_order_info_list"]]
    assert reply["data"]["total_results"] == sum(start <= t <= end for t in times) == len(got)
    assert all(cst(start) <= t <= cst(end) for t in got)


# ------------------------------------------------------------------ 京东, signed by hand

def jd_form(method, params, token=JD["extra"]["access_token"], secret=JD["app_secret"], tamper=None):
    fields = {"method": method, "app_key": JD["app_key"], "access_token": token, "timestamp": cst(int(time.time())),
              "v": "2.0", "format": "json",
              "360buy_param_json": json.dumps(params, separators=(",", ":"), ensure_ascii=False)}
    text = "".join(k + fields[k] for k in sorted(fields))
    fields["sign"] = hashlib.md5((secret + text + secret).encode()).hexdigest().upper()
    if tamper == "sign":
        fields["sign"] = ("A" if fields["sign"][0] != "A" else "B") + fields["sign"][1:]
    if tamper == "params":
        fields["360buy_param_json"] = fields["360buy_param_json"].replace("1", "2", 1)
    return fields


def jd(client, *args, **kwargs):
    return client.post("/jd/routerjson", data=jd_form(*args, **kwargs)).json()


def jd_search(client, start, end, page, size=100):
    reply = jd(client, "jingdong.pop.order.search", {
        "start_date": cst(start), "end_date": cst(end), "order_state": "", "optional_fields": "",
        "page": str(page), "page_size": str(size), "sortType": "0", "dateType": "0"})
    return reply["jingdong_pop_order_search_responce"]["searchorderinfo_result"]


@pytest.mark.parametrize("tamper", ["sign", "params"])
def test_jd_rejects_one_changed_byte_in_sign_or_params(world, tamper):
    _, client = world
    reply = jd(client, "jingdong.pop.order.search", {"page": "1", "page_size": "10"}, tamper=tamper)
    assert reply["error_response"]["code"] == "12"
    assert reply["error_response"]["en_desc"] == "Invalid signature"


def test_jd_rejects_an_unknown_access_token(world):
    _, client = world
    reply = jd(client, "jingdong.pop.order.search", {"page": "1", "page_size": "10"}, token="nope")
    assert "error_response" in reply


def test_jd_order_search_pages_from_one_and_returns_every_order_once(world):
    sim, client = world
    seen, page = [], 1
    while True:
        result = jd_search(client, 0, NOW + 10, page)
        assert result["apiResult"]["success"] is True
        if not result["orderInfoList"]:
            break
        seen += [o["orderId"] for o in result["orderInfoList"]]
        page += 1
    assert len(seen) == len(set(seen)) == result["orderTotal"] == sim.count("jd")


def test_jd_order_search_filters_by_modified_and_order_get_finds_one_order(world):
    sim, client = world
    times = sorted(o.update_time for o in sim.orders("jd"))
    start, end = times[5], times[25]
    result = jd_search(client, start, end, 1)
    got = [o["modified"] for o in result["orderInfoList"]]
    assert result["orderTotal"] == sum(start <= t <= end for t in times) == len(got)
    assert all(cst(start) <= t <= cst(end) for t in got)

    order_id = result["orderInfoList"][0]["orderId"]
    reply = jd(client, "jingdong.pop.order.get", {"order_id": order_id, "optional_fields": "", "order_state": ""})
    info = reply["jingdong_pop_order_get_responce"]["orderDetailInfo"]
    assert info["apiResult"]["success"] is True and info["orderInfo"]["orderId"] == order_id
