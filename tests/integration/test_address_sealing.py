"""An address CS types into an interception is sealed at rest on both databases: the order, the freeze
instruction, the outbox and every other table keep the mask and a sealed token only, while the WMS
(the simulator's, over real HTTP) receives the street, and two typed addresses are still told apart."""

from __future__ import annotations

import logging

import sqlalchemy as sa

import test_fulfillment
from test_fulfillment import build, until
from orderhub.adapters.db.tables import freeze_instructions, metadata, outbox
from orderhub.domain.ids import order_id

world = test_fulfillment.hub  # the fixture: a Runtime wired to the simulator's WMS and 菜鸟 over real HTTP

STREET = "保密路88号3单元1201室"
OTHER_STREET = "另一条街16号"
NEW = {"province": "浙江省", "city": "杭州市", "district": "滨江区", "detail": STREET}


def everything_stored(world) -> str:
    """Every row of every table as text: where the typed street must never appear."""
    out = []
    with world.rt.engine.connect().execution_options(readonly=True) as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(sa.select(table)):
                out.append(" ".join(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in row))
    return "\n".join(out)


def raw(world, table: sa.Table, oid: str) -> list[dict]:
    return world.rows(sa.select(table).where(table.c.order_id == order_id("fake", oid)).order_by(table.c.id))


async def intercept(world, oid: str, street: str, headers: dict[str, str] | None = None):
    order_key = order_id("fake", oid)
    body = {"kind": "address", "reason": "买家来电改地址", "address": {**NEW, "detail": street}}
    return await world.client.post(f"/api/v1/orders/{order_key}/intercept", json=body, headers=headers)


async def test_a_typed_address_is_only_sealed_at_rest_while_the_wms_receives_the_street(world, caplog):
    caplog.set_level(logging.DEBUG)
    await world.control("/_sim/wms/pause")  # the order waits at the WMS unpacked: the change is applied, never too late
    await world.arrive(build("SA1"))
    await world.status("SA1", "picking")
    asked = await intercept(world, "SA1", STREET)
    assert asked.status_code == 202, asked.text
    await until(lambda: [i["outcome"] for i in world.instructions("SA1")] == ["applied"], 15, what="address applied")
    at_wms = await until(lambda: street_at_wms(world, "SA1"), 10, what="the WMS has the new address")
    assert at_wms == STREET  # the sender opened the sealed street into its request

    vault = world.rt.vault
    order = world.order("SA1")
    assert order["address"] == {**NEW, "detail": "***"}
    assert vault.open(order["pii_sealed"])["address_detail"] == STREET
    [instruction] = raw(world, freeze_instructions, "SA1")
    assert instruction["detail"]["address"]["detail"] == "***"
    assert vault.open(instruction["detail"]["sealed"]) == {"address_detail": STREET}
    [message] = [r for r in raw(world, outbox, "SA1") if r["kind"] == "wms.address"]
    assert message["status"] == "sent" and message["payload"]["address"]["detail"] == "***"
    assert message["payload"]["recipient"]["address"]["detail"] == "***"
    assert vault.open_address(message["payload"])["recipient"]["address"]["detail"] == STREET
    assert STREET not in everything_stored(world)
    assert not [r.getMessage() for r in caplog.records if STREET in r.getMessage()]

    # people see masks, with or without pii:read (the admin has it)
    page = (await world.client.get("/api/v1/interceptions", params={"order_id": order["id"]})).json()
    [shown] = page["items"]
    assert shown["detail"]["address"]["detail"] == "***" and "sealed" not in shown["detail"] and "address_hash" not in shown["detail"]
    cs = (await world.client.get("/api/v1/interceptions", params={"order_id": order["id"]}, headers=world.logins["cs-wang"])).json()
    assert STREET not in str(cs) and STREET not in str(page)


async def test_the_same_typed_address_twice_is_a_repeat_and_another_one_goes_to_a_supervisor(world):
    await world.configure(pack_s=30)
    await world.arrive(build("SA2"))
    await world.status("SA2", "picking")
    first = await intercept(world, "SA2", STREET)
    assert first.json()["action"] == "freeze"
    again = await intercept(world, "SA2", f" {STREET} ")  # the same address (typed with spaces): told by its keyed hash
    assert again.json() == {"id": first.json()["id"], "action": "duplicate", "duplicate": True}
    other = await intercept(world, "SA2", OTHER_STREET)
    assert other.json()["outcome"] == "supervisor"
    assert len({i["detail"]["address_hash"] for i in world.instructions("SA2")}) == 2
    await until(lambda: world.instructions("SA2")[0]["outcome"] == "applied", 15, what="the first address applied")

    decided = await world.client.post(f"/api/v1/interceptions/{other.json()['id']}/resolve",
                                    json={"decision": "apply", "actor": "lead-zhao", "reason": "以最新来电为准"}, headers=world.logins["lead-zhao"])
    assert decided.status_code == 200 and decided.json()["action"] == "freeze"
    await until(lambda: [i["outcome"] for i in world.instructions("SA2")] == ["applied", "applied"], 15, what="the second address applied")
    assert await until(lambda: street_is(world, "SA2", OTHER_STREET), 10, what="the WMS has the second address")
    assert world.rt.vault.open(world.order("SA2")["pii_sealed"])["address_detail"] == OTHER_STREET
    stored = everything_stored(world)
    assert STREET not in stored and OTHER_STREET not in stored


async def test_a_typed_address_too_late_for_the_wms_asks_the_carrier_with_the_street_sealed(world):
    await world.arrive(build("SA3"))
    await world.status("SA3", "shipped")
    asked = await intercept(world, "SA3", STREET)
    assert asked.json()["outcome"] == "too_late"
    [message] = world.outbox("carrier.intercept", "SA3")
    payload = message["payload"]
    assert payload["action"] == "redirect" and payload["address"]["detail"] == "***"
    assert world.rt.vault.open_address(payload)["address"] == NEW  # what a carrier sender gives the carrier
    assert world.order("SA3")["address"]["detail"] == "***"
    assert STREET not in everything_stored(world)


async def street_at_wms(world, oid: str) -> str | None:
    found = await world.wms_order(oid)
    detail = ((found or {}).get("recipient") or {}).get("address", {}).get("detail")
    return detail if detail and detail != "测试路***" else None


async def street_is(world, oid: str, street: str) -> bool:
    return await street_at_wms(world, oid) == street

