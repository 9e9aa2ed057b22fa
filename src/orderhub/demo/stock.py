"""The demo's gifts, opening stock and channel SKU mappings, derived from the demo catalogue.

Deterministic, so OrderHub, the simulator's WMS and the benchmark agree. A few SKUs are kept
scarce on purpose so the demo shows 缺货 holds, splits across warehouses and re-audits.
"""

from __future__ import annotations

from orderhub.demo.catalogue import WAREHOUSES, Sku, skus

# Gift SKUs the default gift rules hand out (adapters/rules/defaults/gifts.json).
GIFTS: list[dict[str, object]] = [
    {"code": "GIFT-01", "title": "帆布袋", "category": "赠品", "price": 0, "cost": 800, "weight_g": 120},
    {"code": "GIFT-02", "title": "试用装小样", "category": "赠品", "price": 0, "cost": 500, "weight_g": 50},
    {"code": "GIFT-03", "title": "会员礼盒", "category": "赠品", "price": 0, "cost": 3000, "weight_g": 600},
]


def opening_stock() -> list[tuple[str, str, int]]:
    """(sku, warehouse, on hand): most SKUs plentiful in both warehouses; every 23rd only in the
    east with a handful; every 37th sold out everywhere."""
    rows: list[tuple[str, str, int]] = []
    east, south = (w["code"] for w in WAREHOUSES)
    for index, sku in enumerate(skus()):
        if index % 37 == 36:
            rows += [(sku.code, east, 0), (sku.code, south, 0)]
        elif index % 23 == 22:
            rows += [(sku.code, east, 4), (sku.code, south, 0)]
        else:
            rows += [(sku.code, east, 300 + (index * 17) % 400), (sku.code, south, 150 + (index * 29) % 300)]
    for gift in GIFTS:
        rows += [(str(gift["code"]), east, 500), (str(gift["code"]), south, 200)]
    return rows


def _ids(sku: Sku) -> dict[str, tuple[str, str]]:
    """channel -> (platform item id, platform SKU id) of a demo SKU."""
    return {
        "douyin": (sku.douyin_product_id, sku.douyin_sku_id),
        "youzan": (sku.youzan_item_id, sku.youzan_sku_id),
        "jd": (sku.jd_ware_id, sku.jd_sku_id),
        "taobao": (sku.taobao_num_iid, sku.taobao_sku_id),
        "pdd": (sku.pdd_goods_id, sku.pdd_sku_id),
        "wechat_channels": (sku.wechat_product_id, sku.wechat_sku_id),
        "kuaishou": (sku.kuaishou_item_id, sku.kuaishou_sku_id),
    }


def sku_mappings() -> list[dict[str, str]]:
    """Every demo SKU's listing on every channel: its SKU id maps back to the merchant SKU."""
    return [
        {"channel": channel, "platform_sku_id": sku_id, "platform_item_id": item_id, "sku": sku.code}
        for sku in skus() for channel, (item_id, sku_id) in _ids(sku).items()
    ]
