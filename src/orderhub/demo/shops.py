"""The demo shops and their fake app credentials (the simulator and `serve --demo` agree on these)."""

from __future__ import annotations

from typing import Any

DEMO_SHOPS: list[dict[str, Any]] = [
    {
        "channel": "douyin",
        "shop_id": "88880001",
        "name": "抖店旗舰店",
        "app_key": "7000000000000000001",
        "app_secret": "fake-doudian-app-secret-0001",
        "extra": {},
    },
    {
        "channel": "youzan",
        "shop_id": "90000001",
        "name": "有赞微商城",
        "app_key": "fakeyouzanclientid01",
        "app_secret": "fake-youzan-client-secret",
        "extra": {},
    },
    {
        "channel": "jd",
        "shop_id": "10000001",
        "name": "京东自营专卖店",
        "app_key": "fakejdappkey0001",
        "app_secret": "fake-jd-app-secret",
        "extra": {"access_token": "fakejdaccesstoken0001"},
    },
]


def demo_shop(channel: str) -> dict[str, Any]:
    """The demo shop of `channel` (one per channel)."""
    for shop in DEMO_SHOPS:
        if shop["channel"] == channel:
            return shop
    raise KeyError(channel)
