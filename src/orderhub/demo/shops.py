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
    {
        # TOP: the shop is the seller's user id; the session key is the shop's access token.
        # The app key and secret are those of SIGNATURES.json's TMC handshake vector.
        "channel": "taobao",
        "shop_id": "2200000001",
        "name": "天猫旗舰店",
        "app_key": "12345678",
        "app_secret": "fake-taobao-app-secret",
        "extra": {
            "access_token": "fake-taobao-session-0001", "group_name": "default",
            # the simulator accepts it (simulator.taobao.refresh_token_for) after a session revoke
            "refresh_token": "2200000001.6944cf77df852e724a88d193425d19fc",
        },
    },
    {
        # 拼多多: the shop is the mall id; client id and secret as in SIGNATURES.json's PMC vector.
        "channel": "pdd",
        "shop_id": "100000001",
        "name": "拼多多品牌店",
        "app_key": "fakeclientid0001",
        "app_secret": "fake-pdd-client-secret",
        "extra": {"access_token": "fake-pdd-access-token-0001", "refresh_token": "pddrt0dd94f8e089b0cfc9ff9707e6d4"},
    },
    {
        # 视频号小店: the shop is its appid; pushes are encrypted with the EncodingAESKey.
        "channel": "wechat_channels",
        "shop_id": "wxfakechannels0001",
        "name": "视频号小店",
        "app_key": "wxfakechannels0001",
        "app_secret": "fake-wechat-app-secret",
        "extra": {"token": "fakewechattoken01", "encoding_aes_key": "b3JkZXJodWItZGVtby13ZWNoYXQtY2hhbm5lbHMtayE"},
    },
    {
        # 快手小店: the shop is the seller id; requests are signed with the app's signSecret.
        "channel": "kuaishou",
        "shop_id": "1000000001",
        "name": "快手小店",
        "app_key": "ks000000000000000001",
        "app_secret": "fake-kuaishou-app-secret",
        "extra": {"access_token": "fake-kuaishou-access-token-0001", "sign_secret": "fake-kuaishou-sign-secret"},
    },
]


def demo_shop(channel: str) -> dict[str, Any]:
    """The demo shop of `channel` (one per channel)."""
    for shop in DEMO_SHOPS:
        if shop["channel"] == channel:
            return shop
    raise KeyError(channel)
