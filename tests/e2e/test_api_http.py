"""The public API over real HTTP (uvicorn on a local port), on SQLite and PostgreSQL.

What an integrator sees: platform acks, error bodies, quarantine and replay, order search and
pagination, the order shape of DESIGN.md §3, file imports and the OpenAPI description.
The `serve` fixture (tests/e2e/conftest.py) starts the app and returns an `Api` helper.
"""

from __future__ import annotations

import asyncio
import base64
from hashlib import md5
from typing import Any

import orjson

from fakes import FakeChannel, push_body

ACK = {"code": 0, "msg": "success"}
CREATED_AT = "2025-03-18T10:12:00+08:00"  # every fake order's creation time (factories.T0), as shown


def internal_id(channel: str, original_id: str) -> str:
    return md5(f"{channel}:{original_id}".encode()).hexdigest()


def assert_error(response: Any, status: int, code: str, field: str | None = ...) -> dict[str, Any]:  # type: ignore[assignment]
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    assert "field" in body
    if field is not ...:
        assert body["field"] == field, body
    return body


async def load_orders(api: Any, count: int = 20, *, cancelled: int = 0) -> list[str]:
    """`count` orders on the platform, pushed and processed; the first `cancelled` are cancelled."""
    ids = [str(7000 + n) for n in range(count)]
    for n, oid in enumerate(ids):
        api.platform.put(oid, status="cancelled" if n < cancelled else "paid")
    responses = await asyncio.gather(*(api.push({"id": oid}) for oid in ids))
    assert all(r.status_code == 200 for r in responses)
    await api.settled()
    return ids


# ---- 1. intake keeps acknowledging while the workers are stopped ----------------------------


async def test_pushes_are_acknowledged_while_workers_are_stopped_and_become_orders_once_each_after_they_start(serve):
    api = await serve(workers=False)
    ids = [str(5000 + n) for n in range(20)]
    for oid in ids:
        api.platform.put(oid)
    semaphore = asyncio.Semaphore(20)

    async def push(oid: str):
        async with semaphore:
            return await api.push({"id": oid})

    responses = await asyncio.gather(*(push(oid) for oid in ids * 10))
    assert [r.status_code for r in responses] == [200] * 200
    assert {r.content for r in responses} == {b'{"code":0,"msg":"success"}'}
    assert all(r.json() == ACK and r.headers["content-type"].startswith("application/json") for r in responses)

    health = await api.health()
    assert (health["status"], health["workers"], health["backlog"]) == ("ok", False, 200)
    assert health["accepted"] == {"fake": 200}
    assert health["inbox_commits"] < 200  # concurrent pushes share commits
    assert await api.orders() == []

    api.runtime.start_workers()
    health = await api.settled()
    assert health["workers"] is True

    orders = await api.orders()
    assert len(orders) == 20
    assert sorted(o["original_id"] for o in orders) == sorted(ids)
    assert {o["id"] for o in orders} == {internal_id("fake", oid) for oid in ids}
    assert {o["version"] for o in orders} == {1}  # nine duplicates of each changed nothing
    events = (await api.client.get(f"/api/v1/orders/{internal_id('fake', ids[0])}/events")).json()
    assert [e["kind"] for e in events] == ["created"]


# ---- 2. refused pushes -------------------------------------------------------------------------


async def test_badly_signed_or_misaddressed_pushes_are_refused_with_an_error_body_and_nothing_is_stored(serve):
    api = await serve(workers=False)
    assert (await api.push({"id": "6001"})).status_code == 200
    body = push_body({"id": "6002"})

    wrong = await api.client.post("/api/v1/webhooks/fake", content=body, headers={"x-sign": "0" * 32})
    assert_error(wrong, 401, "signature_invalid", "x-sign")
    missing = await api.client.post("/api/v1/webhooks/fake", content=body)
    assert_error(missing, 401, "signature_missing", "x-sign")
    unknown = await api.client.post("/api/v1/webhooks/nowhere", content=body, headers={"x-sign": FakeChannel.sign(body)})
    assert_error(unknown, 404, "unknown_channel", "channel")
    tampered = await api.client.post("/api/v1/webhooks/fake", content=body + b" ", headers={"x-sign": FakeChannel.sign(body)})
    assert_error(tampered, 401, "signature_invalid")

    health = await api.health()
    assert health["backlog"] == 1  # only the good push
    assert health["accepted"] == {"fake": 1}
    assert health["rejected"] == {"fake:signature_invalid": 2, "fake:signature_missing": 1}


# ---- 3. quarantine and replay ----------------------------------------------------------------


async def test_a_signed_body_that_is_not_json_is_acknowledged_and_kept_in_quarantine(serve):
    api = await serve()
    body = b"<xml>not json</xml>"
    response = await api.client.post("/api/v1/webhooks/fake", content=body, headers={"x-sign": FakeChannel.sign(body)})
    assert response.status_code == 200 and response.json() == ACK
    await api.settled()

    page = (await api.client.get("/api/v1/quarantine")).json()
    assert page["next_cursor"] is None
    (item,) = page["items"]
    assert (item["code"], item["item_kind"], item["channel"], item["status"]) == ("malformed_envelope", "body", "fake", "open")
    assert item["size"] == len(body)
    assert item["created_at"].endswith("+08:00")
    # replaying it unchanged quarantines it again, saying why
    again = (await api.client.post(f"/api/v1/quarantine/{item['id']}/replay")).json()
    assert again["result"] == "quarantined"
    assert [q["code"] for q in again["new_quarantine"]] == ["malformed_envelope"]


async def test_an_order_that_cannot_be_normalised_is_quarantined_and_replays_once_after_the_fix(serve):
    api = await serve()
    api.platform.put("6101", bad=True)
    assert (await api.push({"id": "6101"})).status_code == 200
    await api.settled()

    (item,) = (await api.client.get("/api/v1/quarantine", params={"status": "open"})).json()["items"]
    assert (item["code"], item["field"], item["original_id"], item["item_kind"]) == ("unknown_status", "status", "6101", "message")
    oid = internal_id("fake", "6101")
    assert_error(await api.client.get(f"/api/v1/orders/{oid}"), 404, "not_found")

    api.platform.put("6101")  # the platform data is fixed
    replayed = await api.client.post(f"/api/v1/quarantine/{item['id']}/replay")
    assert replayed.status_code == 200, replayed.text
    result = replayed.json()
    assert (result["quarantine_id"], result["result"], result["outcomes"], result["new_quarantine"]) == (item["id"], "processed", {"created": 1}, [])
    order = (await api.client.get(f"/api/v1/orders/{oid}")).json()
    assert (order["original_id"], order["status"]) == ("6101", "paid")

    (after,) = (await api.client.get("/api/v1/quarantine")).json()["items"]
    assert (after["status"], after["replay_inbox_id"]) == ("replayed", result["replay_inbox_id"])
    assert after["replayed_at"].endswith("+08:00")
    assert (await api.client.get("/api/v1/quarantine", params={"status": "open"})).json()["items"] == []

    assert_error(await api.client.post(f"/api/v1/quarantine/{item['id']}/replay"), 409, "conflict")
    assert_error(await api.client.post("/api/v1/quarantine/987654/replay"), 404, "not_found")
    assert len(await api.orders()) == 1


# ---- 4. orders: search, pagination, detail, events, customers -----------------------------------


async def test_orders_can_be_filtered_by_channel_shop_status_number_and_creation_time(serve):
    api = await serve()
    ids = await load_orders(api, 20, cancelled=3)

    assert len(await api.orders(channel="fake")) == 20
    assert await api.orders(channel="pos") == []
    assert len(await api.orders(shop="S1")) == 20
    assert await api.orders(shop="S2") == []
    assert sorted(o["original_id"] for o in await api.orders(status="cancelled")) == ids[:3]
    assert len(await api.orders(status="paid")) == 17
    assert len(await api.orders(channel="fake", shop="S1", status="paid")) == 17

    (by_number,) = await api.orders(q=ids[5])
    assert by_number["id"] == internal_id("fake", ids[5])
    (by_id,) = await api.orders(q=internal_id("fake", ids[6]))
    assert by_id["original_id"] == ids[6]
    (by_upper_id,) = await api.orders(q=internal_id("fake", ids[6]).upper())
    assert by_upper_id["original_id"] == ids[6]
    assert await api.orders(q="no-such-order") == []

    # created_from is inclusive, created_to exclusive; any zone offset names the same instant
    assert len(await api.orders(created_from=CREATED_AT)) == 20
    assert len(await api.orders(created_from="2025-03-18T02:12:00Z", created_to="2025-03-18T02:12:01Z")) == 20
    assert await api.orders(created_to=CREATED_AT) == []
    assert await api.orders(created_from="2025-03-18T10:12:01+08:00") == []
    assert len(await api.orders(created_from="2025-03-18T00:00:00+08:00", created_to="2025-03-19T00:00:00+08:00", status="cancelled")) == 3

    naive = await api.client.get("/api/v1/orders", params={"created_from": "2025-03-18T10:00:00"})
    assert_error(naive, 400, "invalid_request", "created_from")
    naive_to = await api.client.get("/api/v1/orders", params={"created_to": "2025-03-18T10:00:00"})
    assert_error(naive_to, 400, "invalid_request", "created_to")
    assert_error(await api.client.get("/api/v1/orders", params={"created_from": "yesterday"}), 422, "invalid_request", "created_from")
    assert_error(await api.client.get("/api/v1/orders", params={"limit": 0}), 422, "invalid_request", "limit")


async def test_keyset_pagination_visits_every_order_exactly_once(serve):
    api = await serve()
    ids = await load_orders(api, 20)
    seen: list[str] = []
    sizes: list[int] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 7} | ({"cursor": cursor} if cursor else {})
        response = await api.client.get("/api/v1/orders", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        sizes.append(len(page["items"]))
        seen.extend(o["original_id"] for o in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sizes == [7, 7, 6]
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))

    # a filtered walk pages just as well
    filtered = await api.client.get("/api/v1/orders", params={"limit": 19, "status": "paid"})
    assert filtered.json()["next_cursor"] is not None
    rest = await api.client.get("/api/v1/orders", params={"limit": 19, "status": "paid", "cursor": filtered.json()["next_cursor"]})
    assert len(rest.json()["items"]) == 1 and rest.json()["next_cursor"] is None

    assert_error(await api.client.get("/api/v1/orders", params={"cursor": "garbage!!"}), 400, "invalid_cursor", "cursor")
    assert_error(await api.client.get("/api/v1/orders", params={"cursor": "bm90LWpzb24"}), 400, "invalid_cursor", "cursor")


async def test_a_well_formed_cursor_with_a_time_without_zone_is_refused_as_invalid(serve):
    api = await serve()
    await load_orders(api, 3)
    forged = base64.urlsafe_b64encode(orjson.dumps(["2025-03-18T02:12:00", "f" * 32])).decode().rstrip("=")
    assert_error(await api.client.get("/api/v1/orders", params={"cursor": forged}), 400, "invalid_cursor", "cursor")


async def test_the_hold_filter_finds_orders_held_for_a_platform_cancel_after_shipping(serve):
    api = await serve()
    await load_orders(api, 3)
    api.platform.put("6201", status="shipped", updated=10)
    await api.push({"id": "6201"})
    await api.settled()
    api.platform.put("6201", status="cancelled", updated=30)
    await api.push({"id": "6201", "updated": 30})
    await api.settled()

    (held,) = await api.orders(hold="intercept_pending")
    assert held["original_id"] == "6201" and held["status"] == "shipped"
    assert [h["code"] for h in held["holds"]] == ["intercept_pending"]
    assert await api.orders(hold="risk_review") == []
    events = (await api.client.get(f"/api/v1/orders/{held['id']}/events")).json()
    assert [(e["kind"], e["from"], e["to"]) for e in events][-1] == ("status_conflict", "shipped", "cancelled")


async def test_one_order_has_the_public_shape_and_its_amounts_add_up(serve):
    api = await serve()
    await load_orders(api, 2)
    oid = internal_id("fake", "7001")
    response = await api.client.get(f"/api/v1/orders/{oid}")
    assert response.status_code == 200, response.text
    order = response.json()

    for key in (
        "id", "channel", "shop_id", "original_id", "status", "platform_status", "created_at", "paid_at", "updated_at",
        "currency", "amounts", "customer", "address", "lines", "warehouse", "priority", "holds", "tags", "shipment",
        "rule_version", "version",
    ):  # fmt: skip
        assert key in order, key
    assert (order["id"], order["channel"], order["shop_id"], order["original_id"]) == (oid, "fake", "S1", "7001")
    assert (order["status"], order["currency"], order["version"], order["holds"], order["shipment"]) == ("paid", "CNY", 1, [], None)
    assert order["created_at"] == CREATED_AT
    assert order["paid_at"].endswith("+08:00") and order["updated_at"].endswith("+08:00")

    a = order["amounts"]
    assert set(a) == {"goods", "discount", "discount_shop", "discount_platform", "shipping", "paid"}
    assert all(isinstance(a[k], int) for k in ("goods", "discount", "shipping", "paid"))
    assert a["paid"] == a["goods"] - a["discount"] + a["shipping"] == 13470
    assert a["goods"] == sum(line["unit_price"] * line["qty"] for line in order["lines"])
    assert sum(line["paid"] for line in order["lines"]) == a["paid"] - a["shipping"]
    for line in order["lines"]:
        assert {"sku", "platform_sku_id", "title", "qty", "unit_price", "paid", "gift"} <= set(line)
    assert {"id", "name", "phone", "level", "channels"} <= set(order["customer"])
    assert {"province", "city", "district", "detail"} <= set(order["address"])

    missing = await api.client.get(f"/api/v1/orders/{'0' * 32}")
    assert_error(missing, 404, "not_found")
    assert_error(await api.client.get(f"/api/v1/orders/{'0' * 32}/events"), 404, "not_found")


async def test_the_event_log_shows_creation_then_a_later_platform_cancel(serve):
    api = await serve()
    await load_orders(api, 1)
    oid = internal_id("fake", "7000")
    events = (await api.client.get(f"/api/v1/orders/{oid}/events")).json()
    assert [(e["kind"], e["from"], e["to"], e["actor"]) for e in events] == [("created", None, "paid", "platform:fake")]

    api.platform.put("7000", status="cancelled", updated=30)
    assert (await api.push({"id": "7000", "updated": 30})).status_code == 200
    await api.settled()
    events = (await api.client.get(f"/api/v1/orders/{oid}/events")).json()
    assert [(e["kind"], e["from"], e["to"]) for e in events] == [("created", None, "paid"), ("status", "paid", "cancelled")]
    assert all(e["at"].endswith("+08:00") for e in events)
    assert events[0]["id"] < events[1]["id"]
    order = (await api.client.get(f"/api/v1/orders/{oid}")).json()
    assert (order["status"], order["version"]) == ("cancelled", 2)


async def test_a_customer_shows_its_channels_and_order_count(serve):
    api = await serve()
    await load_orders(api, 3)
    order = (await api.client.get(f"/api/v1/orders/{internal_id('fake', '7000')}")).json()
    customer_id = order["customer"]["id"]
    assert customer_id and order["customer"]["channels"] == ["fake"]

    response = await api.client.get(f"/api/v1/customers/{customer_id}")
    assert response.status_code == 200, response.text
    customer = response.json()
    assert customer["id"] == customer_id
    assert customer["channels"] == ["fake"]
    assert customer["order_count"] == 3  # every fake order has the same buyer
    assert customer["first_seen_at"].endswith("+08:00") and customer["last_order_at"] == CREATED_AT
    assert_error(await api.client.get("/api/v1/customers/c_nobody"), 404, "not_found")


# ---- 5. file import ------------------------------------------------------------------------------

POS_MAPPING = {
    "channel": "pos",
    "columns": {
        "order_no": "订单号", "created_at": "下单时间", "sku": "商品编码", "title": "商品名称",
        "qty": "数量", "unit_price": "单价", "paid": "实付", "shop_id": "门店",
    },
}  # fmt: skip
POS_HEADER = "订单号,下单时间,商品编码,商品名称,数量,单价,实付,门店\n"


async def upload(api: Any, csv_text: str, mapping: str = "pos", *, encoding: str = "utf-8"):
    return await api.client.post(
        "/api/v1/imports",
        files={"file": ("pos.csv", csv_text.encode(encoding), "text/csv")},
        data={"mapping": mapping, "channel": "pos", "shop": "S1"},
    )


async def test_a_csv_uploaded_with_a_saved_mapping_becomes_pos_orders(serve):
    api = await serve()
    saved = await api.client.put("/api/v1/import-mappings/pos", json=POS_MAPPING)
    assert saved.status_code == 200, saved.text
    assert saved.json()["name"] == "pos" and saved.json()["columns"] == POS_MAPPING["columns"]
    assert (await api.client.get("/api/v1/import-mappings")).json() == ["pos"]

    csv_text = POS_HEADER + (
        "POS-0001,2025-03-18 10:00:00,SKU-1,咖啡,2,18.00,30.00,S1\n"
        "POS-0001,2025-03-18 10:00:00,SKU-2,蛋糕,1,12.00,,S1\n"
        "POS-0002,2025-03-18 11:30:00,SKU-1,咖啡,1,18.00,18.00,S1\n"
    )
    response = await upload(api, csv_text)
    assert response.status_code == 202, response.text
    report = response.json()
    assert (report["filename"], report["rows"], report["orders"]) == ("pos.csv", 3, 2)
    assert report["import_id"] and report["inbox_ids"]
    await api.settled()

    orders = await api.orders(channel="pos")
    assert sorted(o["original_id"] for o in orders) == ["POS-0001", "POS-0002"]
    assert (await api.client.get("/api/v1/quarantine")).json()["items"] == []
    order = (await api.client.get(f"/api/v1/orders/{internal_id('pos', 'POS-0001')}")).json()
    assert (order["channel"], order["shop_id"], order["status"]) == ("pos", "S1", "paid")
    assert order["created_at"] == "2025-03-18T10:00:00+08:00"
    a = order["amounts"]
    assert (a["goods"], a["discount"], a["shipping"], a["paid"]) == (4800, 1800, 0, 3000)
    assert [(line["sku"], line["qty"], line["unit_price"]) for line in order["lines"]] == [("SKU-1", 2, 1800), ("SKU-2", 1, 1200)]
    assert sum(line["paid"] for line in order["lines"]) == 3000
    events = (await api.client.get(f"/api/v1/orders/{order['id']}/events")).json()
    assert [(e["kind"], e["actor"]) for e in events] == [("created", "file_import")]


async def test_a_csv_whose_order_number_excel_rounded_is_refused_naming_the_row(serve):
    api = await serve()
    assert (await api.client.put("/api/v1/import-mappings/pos", json=POS_MAPPING)).status_code == 200
    csv_text = POS_HEADER + (
        "POS-0001,2025-03-18 10:00:00,SKU-1,咖啡,1,18.00,18.00,S1\n"
        "4.95123E+18,2025-03-18 10:00:00,SKU-1,咖啡,1,18.00,18.00,S1\n"
    )
    response = await upload(api, csv_text)
    body = assert_error(response, 400, "precision_lost")
    assert [(e["row"], e["column"], e["code"]) for e in body["errors"]] == [(3, "订单号", "precision_lost")]
    assert "4.95123E+18" in body["errors"][0]["message"]
    health = await api.settled()
    assert health["backlog"] == 0
    assert await api.orders() == []  # the whole file is refused, the good row too

    assert_error(await upload(api, csv_text, mapping="nope"), 400, "unknown_mapping", "mapping")
    bad_mapping = await api.client.put("/api/v1/import-mappings/broken", json={"channel": "pos", "columns": {"order_no": "订单号"}})
    assert_error(bad_mapping, 400, "invalid_field")
    assert (await api.client.get("/api/v1/import-mappings")).json() == ["pos"]


# ---- 6. OpenAPI ----------------------------------------------------------------------------------


async def test_the_openapi_description_lists_every_route_and_the_order_amounts(serve):
    api = await serve(workers=False)
    response = await api.client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    paths = spec["paths"]
    expected = {
        "/api/v1/webhooks/{channel}": "post",
        "/api/v1/orders": "get",
        "/api/v1/orders/{order_id}": "get",
        "/api/v1/orders/{order_id}/events": "get",
        "/api/v1/customers/{customer_id}": "get",
        "/api/v1/quarantine": "get",
        "/api/v1/quarantine/{quarantine_id}/replay": "post",
        "/api/v1/imports": "post",
        "/api/v1/import-mappings/{name}": "put",
        "/api/v1/health": "get",
    }
    for path, method in expected.items():
        assert method in paths.get(path, {}), f"{method.upper()} {path} missing from OpenAPI"

    schemas = spec["components"]["schemas"]
    amounts_ref = schemas["Order"]["properties"]["amounts"]["$ref"]
    amounts = schemas[amounts_ref.rsplit("/", 1)[1]]
    assert set(amounts["properties"]) >= {"goods", "discount", "discount_shop", "discount_platform", "shipping", "paid"}
    assert {"goods", "discount", "shipping", "paid"} <= set(amounts["required"])
    assert amounts["properties"]["goods"]["type"] == "integer"
    list_ref = paths["/api/v1/orders"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert list_ref.endswith("/OrderPage")
    assert "401" in paths["/api/v1/webhooks/{channel}"]["post"]["responses"]
