"""A day of the demo's offline store (POS) as the CSV export `serve --demo` imports.

The buyers are the demo's platform customers, with their plaintext phones as a till records
them, so the console shows one customer across the platforms and the store.
"""

from __future__ import annotations

import csv
import io
import random
from datetime import datetime, timedelta, timezone

from orderhub.demo.catalogue import customers, skus

_CST = timezone(timedelta(hours=8))
HEADER = ["单号", "下单时间", "付款时间", "状态", "商品编码", "商品名称", "数量", "单价", "优惠", "运费", "实收",
          "会员号", "收货人", "手机", "省", "市", "区", "地址", "备注"]


def pos_csv(count: int, now: datetime, seed: int = 0) -> bytes:
    """`count` paid store orders of the last hours before `now`, one or two lines each."""
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(HEADER)
    catalogue = [s for s in skus() if s.price > 0]
    day = now.astimezone(_CST)
    for n in range(count):
        buyer = rng.choice(customers())
        at = (day - timedelta(minutes=rng.randint(5, 600))).strftime("%Y-%m-%d %H:%M:%S")
        lines = [(sku, rng.choice((1, 1, 2))) for sku in rng.sample(catalogue, rng.choice((1, 1, 2)))]
        goods = sum(sku.price * qty for sku, qty in lines)
        discount = 1000 if goods >= 20000 else 0
        region = buyer.region
        for i, (sku, qty) in enumerate(lines):
            head = [f"POS{day:%Y%m%d}{seed % 1000:03d}{n + 1:04d}"]
            if i == 0:
                head += [at, at, "已完成", sku.code, sku.title, qty, _yuan(sku.price), _yuan(discount), "0.00",
                         _yuan(goods - discount), f"VIP{buyer.index:04d}", buyer.name, buyer.phone,
                         region.province, region.city, region.district, buyer.street + buyer.detail, ""]
            else:
                head += ["", "", "", sku.code, sku.title, qty, _yuan(sku.price)] + [""] * 11
            writer.writerow(head)
    return out.getvalue().encode("utf-8")


def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"
