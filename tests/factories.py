"""Test factories: valid canonical orders with only the interesting parts spelled out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from orderhub.domain.order import Address, Amounts, Buyer, Line, NormalizedOrder
from orderhub.domain.status import Status

T0 = datetime(2025, 3, 18, 2, 12, 0, tzinfo=UTC)


def make_order(
    original_id: str = "4951234567890123456",
    *,
    channel: str = "douyin",
    status: Status = Status.PAID,
    updated: int = 0,
    province: str = "浙江省",
    detail: str = "测试路***",
    paid: int = 13470,
    **changes: Any,
) -> NormalizedOrder:
    goods = 14970
    discount = goods - paid
    order = NormalizedOrder(
        channel=channel,
        shop_id="88880001",
        original_id=original_id,
        status=status,
        platform_status={"order_status": 2},
        created_at=T0,
        paid_at=T0 + timedelta(seconds=41),
        updated_at=T0 + timedelta(seconds=41 + updated),
        amounts=Amounts(goods=goods, discount=discount, shipping=0, paid=paid, discount_shop=discount, discount_platform=0),
        lines=(
            Line("TS-TEE01-WH-L", "测试纯棉T恤", 2, 5990, paid - (paid * 2990 // goods), platform_line_id="1"),
            Line("TS-BAG02-BE", "测试帆布袋", 1, 2990, paid * 2990 // goods, platform_line_id="2"),
        ),
        address=Address(province, "杭州市", "西湖区", detail),
        buyer=Buyer("open-1", "张*", "1**********0"),
        raw={"order_id": original_id},
    )
    order = replace(order, **changes) if changes else order
    order.check()
    return order
