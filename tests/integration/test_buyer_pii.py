"""Buyer PII through the pipeline on SQLite and PostgreSQL: decrypted once, sealed, hashed, matched."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from factories import make_order
from orderhub.adapters.channels.base import ShopConfig
from orderhub.adapters.channels.registry import ChannelRegistry
from orderhub.adapters.db import queries
from orderhub.adapters.db.inbox import append_rows
from orderhub.adapters.db.tables import metadata, orders
from orderhub.bootstrap import Runtime
from orderhub.config import Settings, ShopSettings
from orderhub.domain.errors import FetchError
from orderhub.domain.ids import order_id
from orderhub.entrypoints.serve import DEMO_POS_MAPPING
from orderhub.services import imports

PHONE, OTHER_PHONE = "13800001234", "13900005678"


class CipherPlatform:
    """A platform that sends phones as ciphertext and decrypts them for its app."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.decrypted: list[str] = []  # order ids it was asked to decrypt
        self.down = False

    def normalize(self, raw: dict[str, Any], shop: ShopConfig):
        order = make_order(raw["id"], channel=self.channel, updated=raw.get("updated", 0))
        buyer = replace(order.buyer, platform_buyer_id=raw["buyer"], phone=raw["mask"])
        return replace(order, shop_id=shop.shop_id, buyer=buyer, pii={"phone": raw["enc_phone"]}, raw=raw)

    async def decrypt(self, http: Any, shop: ShopConfig, items: list[tuple[str, dict[str, str]]], fields: tuple[str, ...]):
        if self.down:
            raise FetchError(f"{self.channel} decrypt service unavailable", retryable=True)
        self.decrypted.extend(oid for oid, _ in items)
        return {oid: {"phone": pii["phone"][4:-1][::-1]} for oid, pii in items if "phone" in fields}


@pytest.fixture
async def world(database_url, tmp_path):
    alpha, beta = CipherPlatform("alpha"), CipherPlatform("beta")
    settings = Settings(
        audit=False,  # these tests look at intake and processing on their own
        database_url=database_url, data_dir=tmp_path,
        shops=[ShopSettings(channel="alpha", shop_id="A", name="甲"), ShopSettings(channel="beta", shop_id="B", name="乙")],
    )
    from orderhub.adapters.channels.file_import import FileChannel

    registry = ChannelRegistry(sources={"alpha": alpha, "beta": beta}, file=FileChannel())
    rt = Runtime(settings, channels=registry)
    await rt.start(workers=False, streams=False)
    yield rt, alpha, beta
    await rt.stop()


def platform_order(original_id: str, buyer: str, phone: str, updated: int = 0) -> dict[str, Any]:
    """The platform's payload: the phone only as ciphertext and mask."""
    return {"id": original_id, "buyer": buyer, "enc_phone": f"ENC[{phone[::-1]}]", "mask": phone[:3] + "****" + phone[-4:], "updated": updated}


async def arrive(rt: Runtime, channel: str, shop: str, *raws: dict[str, Any]) -> None:
    with rt.engine.begin() as conn:
        append_rows(conn, [{"channel": channel, "shop_id": shop, "kind": "pull", "body": orjson.dumps({"orders": list(raws)})}])
    await rt.drain()


def stored(rt: Runtime, channel: str, original_id: str) -> Any:
    with rt.engine.connect() as conn:
        return conn.execute(sa.select(orders).where(orders.c.id == order_id(channel, original_id))).mappings().one()


def everything_stored(rt: Runtime) -> str:
    """Every row of every table as text: where plaintext must never appear."""
    out = []
    with rt.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(sa.select(table)):
                out.append(" ".join(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in row))
    return "\n".join(out)


async def test_one_customer_across_channels_by_phone_and_search_by_last_four_digits(world):
    rt, alpha, beta = world
    await arrive(rt, "alpha", "A", platform_order("A1", "a-1", PHONE))
    await arrive(rt, "beta", "B", platform_order("B1", "b-9", PHONE), platform_order("B2", "b-7", OTHER_PHONE))

    a1, b1, b2 = stored(rt, "alpha", "A1"), stored(rt, "beta", "B1"), stored(rt, "beta", "B2")
    assert a1["customer_id"] == b1["customer_id"] != b2["customer_id"]
    assert a1["pii_state"] == "done" and a1["phone_hash"] == b1["phone_hash"] != b2["phone_hash"]
    assert rt.vault.open(a1["pii_sealed"]) == {"phone": PHONE}
    with rt.engine.connect() as conn:
        customer = queries.get_customer(conn, a1["customer_id"])
        found, _ = queries.list_orders(conn, queries.OrderFilters(phone_last4_hash=rt.vault.last4_hash("1234")), 50, None)
        none, _ = queries.list_orders(conn, queries.OrderFilters(phone_last4_hash=rt.vault.last4_hash("0000")), 50, None)
    assert customer["channels"] == ["alpha", "beta"] and customer["order_count"] == 2
    assert sorted(o["original_id"] for o in found) == ["A1", "B1"] and none == []
    assert found[0]["customer"]["channels"] == ["alpha", "beta"]
    assert PHONE not in everything_stored(rt) and OTHER_PHONE not in everything_stored(rt)


async def test_a_phone_is_decrypted_once_until_its_ciphertext_changes(world):
    rt, alpha, _ = world
    await arrive(rt, "alpha", "A", platform_order("A1", "a-1", PHONE))
    await arrive(rt, "alpha", "A", platform_order("A1", "a-1", PHONE, updated=30))
    assert alpha.decrypted == ["A1"]
    await arrive(rt, "alpha", "A", platform_order("A1", "a-1", OTHER_PHONE, updated=60))  # address changed
    assert alpha.decrypted == ["A1", "A1"]
    assert stored(rt, "alpha", "A1")["phone_hash"] == rt.vault.phone_hash(OTHER_PHONE)


async def test_when_the_platform_cannot_decrypt_the_order_still_lands_and_the_phone_follows_later(world):
    rt, alpha, beta = world
    await arrive(rt, "beta", "B", platform_order("B1", "b-9", PHONE))
    alpha.down = True
    await arrive(rt, "alpha", "A", platform_order("A1", "a-1", PHONE))
    a1 = stored(rt, "alpha", "A1")
    assert a1["status"] == "paid" and a1["pii_state"] == "pending" and a1["phone_hash"] is None
    assert a1["customer_id"] != stored(rt, "beta", "B1")["customer_id"]  # matched by buyer id only, for now

    assert await rt.pii.retry_pending(rt.engine) == 0  # still down: stays pending
    alpha.down = False
    assert await rt.pii.retry_pending(rt.engine) == 1
    a1 = stored(rt, "alpha", "A1")
    assert a1["pii_state"] == "done" and a1["phone_last4_hash"] == rt.vault.last4_hash("1234")
    # the phone shows both buyers are one: the two customers became one, with both channels
    assert a1["customer_id"] == stored(rt, "beta", "B1")["customer_id"]
    with rt.engine.connect() as conn:
        customer = queries.get_customer(conn, a1["customer_id"])
    assert sorted(customer["channels"]) == ["alpha", "beta"] and customer["order_count"] == 2
    assert await rt.pii.reveal(rt.engine, a1["id"], ("phone",)) == {"phone": PHONE}


async def test_a_store_import_with_a_plaintext_phone_joins_the_platform_customer_and_keeps_no_plaintext(world):
    rt, _, _ = world
    await arrive(rt, "alpha", "A", platform_order("A1", "a-1", PHONE))
    imports.save_mapping(rt.engine, "pos", DEMO_POS_MAPPING)
    csv = (
        "单号,下单时间,付款时间,状态,商品编码,商品名称,数量,单价,优惠,运费,实收,会员号,收货人,手机,省,市,区,地址,备注\n"
        f"POS1,2025-03-18 10:00:00,2025-03-18 10:00:00,已完成,SKU-1001,纯棉T恤,1,59.90,0,0,59.90,VIP1,王小明,{PHONE},浙江省,杭州市,西湖区,文三路1号,\n"
    ).encode()
    imports.import_file(rt.engine, csv, "store.csv", "pos", "pos", "S1", rt.pii)
    await rt.drain()
    pos = stored(rt, "pos", "POS1")
    assert pos["customer_id"] == stored(rt, "alpha", "A1")["customer_id"]
    assert pos["phone_last4_hash"] == rt.vault.last4_hash("1234")
    assert rt.vault.open(pos["pii_sealed"])["name"] == "王小明"
    text = everything_stored(rt)
    assert PHONE not in text and "王小明" not in text and "文三路1号" not in text


def test_sealed_pii_survives_a_key_rotation(tmp_path):
    from cryptography.fernet import Fernet

    from orderhub.adapters.pii_crypto import PiiKeyError, PiiVault

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed = PiiVault([old], "h" * 32).seal({"phone": PHONE})
    both = PiiVault([new, old], "h" * 32)
    assert both.needs_rotation(sealed)
    rotated = both.rotate(sealed)
    assert not both.needs_rotation(rotated)
    assert PiiVault([new], "h" * 32).open(rotated) == {"phone": PHONE}
    with pytest.raises(PiiKeyError):
        PiiVault([new], "h" * 32).open(sealed)  # the old key is gone: only rotated rows open


async def test_a_buyer_first_seen_without_a_phone_joins_their_customer_once_the_phone_is_known(world):
    rt, alpha, beta = world
    await arrive(rt, "beta", "B", platform_order("B1", "b-9", PHONE))
    no_phone = platform_order("A1", "a-1", PHONE)
    no_phone["enc_phone"] = ""  # e.g. an unpaid order the platform will not decrypt yet
    alpha_normalize = alpha.normalize
    alpha.normalize = lambda raw, shop: replace(alpha_normalize(raw, shop), pii={}) if not raw["enc_phone"] else alpha_normalize(raw, shop)
    await arrive(rt, "alpha", "A", no_phone)
    first = stored(rt, "alpha", "A1")["customer_id"]
    assert first != stored(rt, "beta", "B1")["customer_id"]
    await arrive(rt, "alpha", "A", platform_order("A2", "a-1", PHONE, updated=60))  # paid: the phone is decrypted
    b1, a1, a2 = stored(rt, "beta", "B1"), stored(rt, "alpha", "A1"), stored(rt, "alpha", "A2")
    assert a1["customer_id"] == a2["customer_id"] == b1["customer_id"]
    with rt.engine.connect() as conn:
        customer = queries.get_customer(conn, b1["customer_id"])
        assert queries.get_customer(conn, first) is None  # folded into the phone's customer
    assert sorted(customer["channels"]) == ["alpha", "beta"] and customer["order_count"] == 3
