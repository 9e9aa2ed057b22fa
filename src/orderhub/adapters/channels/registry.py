"""Which adapter serves which channel, and the shops configured for each."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from orderhub.adapters.channels.base import ShopConfig


class ShopRegistry:
    """In-memory ShopDirectory built from the configuration."""

    def __init__(self, shops: Iterable[ShopConfig]) -> None:
        self._by_shop: dict[tuple[str, str], ShopConfig] = {}
        self._by_app: dict[tuple[str, str], list[ShopConfig]] = {}
        for shop in shops:
            self._by_shop[(shop.channel, shop.shop_id)] = shop
            if shop.app_key:
                self._by_app.setdefault((shop.channel, shop.app_key), []).append(shop)

    def by_shop(self, channel: str, shop_id: str) -> ShopConfig | None:
        return self._by_shop.get((channel, str(shop_id)))

    def by_app_key(self, channel: str, app_key: str) -> list[ShopConfig]:
        return self._by_app.get((channel, app_key), [])

    def all(self) -> list[ShopConfig]:
        return list(self._by_shop.values())


@dataclass
class ChannelRegistry:
    """Adapters by channel code: push channels, API sources and the file channel."""

    push: dict[str, Any] = field(default_factory=dict)  # HTTP webhooks
    streams: dict[str, Any] = field(default_factory=dict)  # long-lived message connections
    sources: dict[str, Any] = field(default_factory=dict)
    pull: set[str] = field(default_factory=set)  # channels whose orders arrive by scheduled pull
    file: Any = None

    def parser(self, channel: str) -> Any:
        """The adapter that splits a kept push/stream message of `channel` into PushMessages."""
        adapter = self.push.get(channel) or self.streams.get(channel)
        if adapter is None:
            raise KeyError(channel)
        return adapter

    def transport(self, channel: str) -> str:
        if channel in self.streams:
            return "stream"
        if channel in self.push:
            return "push"
        if channel in self.pull:
            return "pull"
        return "file"

    @classmethod
    def default(cls) -> ChannelRegistry:
        from orderhub.adapters.channels.douyin import DouyinChannel
        from orderhub.adapters.channels.file_import import FileChannel
        from orderhub.adapters.channels.jd import JdChannel
        from orderhub.adapters.channels.kuaishou import KuaishouChannel
        from orderhub.adapters.channels.pdd import PddChannel
        from orderhub.adapters.channels.taobao import TaobaoChannel
        from orderhub.adapters.channels.wechat_channels import WechatChannelsChannel
        from orderhub.adapters.channels.youzan import YouzanChannel

        douyin, youzan, jd = DouyinChannel(), YouzanChannel(), JdChannel()
        taobao, pdd, wechat, kuaishou = TaobaoChannel(), PddChannel(), WechatChannelsChannel(), KuaishouChannel()
        return cls(
            push={"douyin": douyin, "youzan": youzan, "wechat_channels": wechat},
            streams={"taobao": taobao, "pdd": pdd},
            sources={
                "douyin": douyin, "taobao": taobao, "pdd": pdd, "jd": jd, "youzan": youzan,
                "wechat_channels": wechat, "kuaishou": kuaishou,
            },
            pull={"jd", "kuaishou"},
            file=FileChannel(),
        )
