"""The audit's API over real HTTP, on both databases: inventory, rules (draft, dry run, back-test,
publish, roll back, switches), the exception queue and its actions, with their error codes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from orderhub.adapters.db import inventory_repo
from orderhub.domain.ids import order_id
from orderhub.services import catalogue

TEE, BAG = "TS-TEE01-WH-L", "TS-BAG02-BE"


async def start(serve):
    api = await serve(audit=True)
    catalogue.upsert_catalogue(
        api.runtime.engine,
        [{"code": "WH-EAST", "name": "华东仓", "city": "上海"}, {"code": "WH-SOUTH", "name": "华南仓", "city": "广州"}],
        [{"code": TEE, "title": "测试纯棉T恤", "category": "服装", "price": 5990, "cost": 2000, "weight_g": 300},
         {"code": BAG, "title": "测试帆布袋", "category": "家居", "price": 2990, "cost": 1000, "weight_g": 200}],
    )
    with api.runtime.engine.begin() as conn:
        inventory_repo.sync_on_hand(conn, [(TEE, "WH-EAST", 10), (BAG, "WH-EAST", 10), (TEE, "WH-SOUTH", 0), (BAG, "WH-SOUTH", 0)],
                                    actor="test", reason="opening stock", now=datetime.now(UTC))
    return api


async def audited(api, oid: str, timeout: float = 10.0) -> dict:
    """The order once the workers have processed and audited it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await api.client.get(f"/api/v1/orders/{order_id('fake', oid)}")
        if response.status_code == 200 and response.json()["audit"]["state"] not in (None, "pending"):
            return response.json()
        assert asyncio.get_running_loop().time() < deadline, response.text
        await asyncio.sleep(0.05)


async def test_an_order_is_audited_and_its_reservation_shows_in_inventory_and_the_ledger(serve):
    api = await start(serve)
    api.platform.put("7001")
    assert (await api.push({"id": "7001"})).status_code == 200
    order = await audited(api, "7001")
    assert (order["status"], order["warehouse"], order["rule_version"]) == ("ready", "WH-EAST", "audit@1")
    stock = (await api.client.get("/api/v1/inventory", params={"sku": "TS-", "warehouse": "WH-EAST"})).json()
    assert {(r["sku"], r["reserved"], r["available"]) for r in stock["items"]} == {(TEE, 2, 8), (BAG, 1, 9)}
    ledger = (await api.client.get(f"/api/v1/inventory/{TEE}/ledger")).json()
    assert (ledger[0]["kind"], ledger[0]["reserved_delta"], ledger[0]["order_id"]) == ("reserve", 2, order["id"])
    assert (await api.client.get("/api/v1/inventory/check")).json() == {"healthy": True, "mismatches": []}
    refused = await api.client.post(f"/api/v1/inventory/{TEE}/adjust", json={"warehouse": "WH-EAST", "delta": -9, "reason": "盘亏"})
    assert (refused.status_code, refused.json()["code"]) == (409, "insufficient_stock")


async def test_a_rule_draft_is_validated_dry_run_back_tested_published_and_rolled_back(serve):
    api = await start(serve)
    api.platform.put("7101")
    await api.push({"id": "7101"})
    order = await audited(api, "7101")
    listing = (await api.client.get("/api/v1/rules")).json()
    assert listing["rule_version"] == "audit@1"
    assert {s["name"] for s in listing["sets"]} == {"routing", "priority", "holds", "gifts", "carrier", "split", "stall"}

    bad = await api.client.put("/api/v1/rules/holds", json={"content": {"nodes": "no"}, "author": "ops-lead"})
    assert (bad.status_code, bad.json()["code"], bad.json()["field"]) == (422, "rule_invalid", "content")
    missing = await api.client.put("/api/v1/rules/nope", json={"content": {}, "author": "ops-lead"})
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")

    content = (await api.client.get("/api/v1/rules/routing")).json()["content"]
    for node in content["nodes"]:
        table = node.get("content") or {}
        for column in table.get("outputs", []):
            if column["field"] == "warehouse":
                for row in table["rules"]:
                    row[column["id"]] = '"WH-SOUTH"'
    draft = await api.client.put("/api/v1/rules/routing", json={"content": content, "note": "全部走华南仓", "author": "ops-lead"})
    assert draft.status_code == 200 and draft.json()["state"] == "draft"
    run = (await api.client.post("/api/v1/rules/routing/dry-run", json={"order_id": order["id"]})).json()
    assert run["changes"]["warehouse"] == {"from": "WH-EAST", "to": "WH-SOUTH"}
    report = (await api.client.post("/api/v1/rules/routing/backtest", json={"days": 90})).json()
    assert report["rule_set"] == "routing" and report["live_rule_version"] == "audit@1"

    published = (await api.client.post("/api/v1/rules/routing/publish", json={"author": "ops-lead", "note": "大促分流"})).json()
    assert published["rule_version"] == "audit@2"
    api.platform.put("7102")
    await api.push({"id": "7102"})
    later = await audited(api, "7102")
    assert later["rule_version"] == "audit@2"
    # the new rule routes it south; 华南仓 has none of it, so the whole order ships from 华东仓 instead
    assert (later["audit"]["decisions"]["warehouse"], later["status"], later["warehouse"]) == ("WH-SOUTH", "ready", "WH-EAST")
    rolled = (await api.client.post("/api/v1/rules/routing/rollback", json={"author": "ops-lead"})).json()
    assert rolled["rule_version"] == "audit@3"
    history = (await api.client.get("/api/v1/audit-versions")).json()
    assert [h["version"] for h in history][:3] == [3, 2, 1]
    unknown = await api.client.put("/api/v1/rules/holds/switches/no-such-rule", json={"enabled": False})
    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")


async def test_the_exception_queue_counts_holds_and_its_actions_check_reason_version_and_status(serve):
    api = await start(serve)
    api.platform.put("7201")
    await api.push({"id": "7201"})
    order = await audited(api, "7201")
    oid = order["id"]
    held = await api.client.post(f"/api/v1/orders/{oid}/hold", json={"reason": "买家来电要求暂缓", "actor": "cs-wang"})
    assert held.status_code == 200 and held.json()["status"] == "on_hold"
    queue = (await api.client.get("/api/v1/exceptions")).json()
    assert queue["counts"] == {"manual": 1} and [o["id"] for o in queue["items"]] == [oid]

    no_reason = await api.client.post(f"/api/v1/orders/{oid}/release", json={"reason": "", "actor": "ops-li"})
    assert (no_reason.status_code, no_reason.json()["code"], no_reason.json()["field"]) == (422, "invalid_request", "reason")
    stale = await api.client.post(f"/api/v1/orders/{oid}/release", json={"reason": "已核实", "actor": "ops-li", "version": 1})
    assert (stale.status_code, stale.json()["code"]) == (409, "conflict")
    version = held.json()["version"]
    released = await api.client.post(f"/api/v1/orders/{oid}/release", json={"reason": "已核实", "actor": "ops-li", "version": version})
    assert released.status_code == 200
    deadline = asyncio.get_running_loop().time() + 10
    while (await api.client.get(f"/api/v1/orders/{oid}")).json()["status"] != "ready":
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    events = [e["kind"] for e in (await api.client.get(f"/api/v1/orders/{oid}/events")).json()]
    assert events == ["created", "audited", "hold_placed", "hold_released", "audited"]

    cancelled = await api.client.post(f"/api/v1/orders/{oid}/cancel", json={"reason": "买家取消", "actor": "cs-wang"})
    assert cancelled.json()["status"] == "cancelled"
    again = await api.client.post(f"/api/v1/orders/{oid}/cancel", json={"reason": "再取消", "actor": "cs-wang"})
    assert (again.status_code, again.json()["code"]) == (409, "order_state")
    nothing = await api.client.post("/api/v1/orders/0123456789abcdef0123456789abcdef/hold", json={"reason": "x"})
    assert (nothing.status_code, nothing.json()["code"]) == (404, "not_found")
    stock = (await api.client.get("/api/v1/inventory", params={"sku": TEE, "warehouse": "WH-EAST"})).json()["items"]
    assert stock[0]["reserved"] == 0
