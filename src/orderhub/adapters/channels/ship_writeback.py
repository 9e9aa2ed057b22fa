"""Tell a channel a package has shipped (carrier and waybill), through that platform's own ship API.

One small function per platform, each going through its adapter's own signed, token-authorised,
retried call, as stock_push.py does. `ShipSender` delivers outbox messages of kind
`platform.ship` with them. A platform that answers "already shipped" is taken at its word: the
write-back is idempotent, so a message the relay sends again must not fail forever. Methods,
parameters, carrier tables, sources and the [U] details: docs/platforms.md, "Ship write-back";
every unconfirmed guess on OrderHub's side is in this module, marked [U].
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

import httpx

from orderhub.adapters.channels import douyin, kuaishou, pdd, taobao, wechat_channels, youzan
from orderhub.adapters.channels.base import ShopConfig, ShopDirectory
from orderhub.adapters.db.outbox_repo import DeliveryError, OutboxMessage
from orderhub.domain.errors import FetchError

KIND = "platform.ship"
CARRIERS = ("SF", "ZTO", "YTO", "YUNDA", "STO", "EMS", "JD", "DBL")  # OrderHub's carrier codes (docs/rules.md)

# OrderHub carrier -> what each platform's ship API calls it. Sources per value in docs/platforms.md;
# [U] marks values no public source confirmed.
CARRIER_CODES: dict[str, dict[str, str | int]] = {
    # company_code from order/logisticsCompanyList [U: all; the Kuaidi100-style codes integrators use]
    "douyin": {"SF": "shunfeng", "ZTO": "zhongtong", "YTO": "yuantong", "YUNDA": "yunda", "STO": "shentong",
               "EMS": "ems", "JD": "jd", "DBL": "debangkuaidi"},
    # company_code from taobao.logistics.companies.get
    "taobao": {"SF": "SF", "ZTO": "ZTO", "YTO": "YTO", "YUNDA": "YUNDA", "STO": "STO", "EMS": "EMS", "JD": "JD",
               "DBL": "DBKD"},  # [U] JD, DBKD
    # logiCoprId (the vendor's carriers in 京麦「我的配送」)
    "jd": {"SF": "467", "ZTO": "1499", "YTO": "463", "YUNDA": "1327", "STO": "470", "EMS": "465", "JD": "2087",
           "DBL": "3046"},  # [U] 3046
    # logistics_id from pdd.logistics.companies.get
    "pdd": {"SF": 44, "ZTO": 115, "YTO": 85, "YUNDA": 121, "STO": 1, "EMS": 118, "JD": 120, "DBL": 131},  # [U] all
    # out_stype from youzan.logistics.express.get
    "youzan": {"SF": "7", "ZTO": "3", "YTO": "2", "YUNDA": "4", "STO": "1", "EMS": "11", "JD": "138", "DBL": "146"},  # [U] all
    # delivery_id from order/deliverycompanylist/new/get
    "wechat_channels": {"SF": "SF", "ZTO": "ZTO", "YTO": "YTO", "YUNDA": "YD", "STO": "STO", "EMS": "EMS", "JD": "JD",
                        "DBL": "DBL"},  # [U] all
    # expressCode (快递公司编码, doc 401927)
    "kuaishou": {"SF": 4, "ZTO": 9, "YTO": 6, "YUNDA": 11, "STO": 2, "EMS": 1, "JD": 14, "DBL": 13},  # [U] STO, EMS, DBL
}
# A refusal saying the order has gone already (抖店 60110 "订单已发货，不允许再次执行发货", JD "订单已出库",
# 抖店 60113 "订单已完结"); the other platforms' wording [U].
ALREADY_SHIPPED_WORDS = ("已发货", "已出库", "已完结", "already shipped", "already delivered", "already consigned")
# The adapters' "no such order" answers (not FetchErrors: their order fetches leave such orders out).
UNKNOWN_ORDER = (douyin._UnknownOrder, taobao._UnknownTrade, pdd._UnknownOrder, youzan._UnknownOrder,
                 wechat_channels._UnknownOrder, kuaishou._UnknownOrder)
_JD_RETRY_WORDS = ("limit", "频率", "限流", "繁忙", "busy", "timeout", "超时", "unavailable", "不可用", "稍后重试")

# The adapters' business-call helpers are private by convention (`_call`): they are used here on
# purpose, as the one place that signs and authorises each platform's requests.


@dataclass(frozen=True, slots=True)
class ShipLine:
    platform_line_id: str | None  # 抖店 sku order id, 淘宝 oid, 有赞 oid; the SKU id on 拼多多 / 视频号
    platform_sku_id: str | None
    qty: int
    platform_item_id: str | None = None  # 视频号 product_id, when known (else read from the order)


@dataclass(frozen=True, slots=True)
class PackageShipment:
    """One parcel of a platform order, as a `platform.ship` outbox message carries it."""

    channel: str
    shop_id: str
    original_id: str
    carrier: str  # OrderHub code (CARRIERS)
    waybill_no: str
    package_no: str | None
    lines: tuple[ShipLine, ...]
    split: bool  # the order leaves in several parcels: this one holds `lines` only

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> PackageShipment:
        """Raises ValueError naming the field at fault."""

        def text(name: str) -> str:
            value = payload.get(name)
            if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
                raise ValueError(f"{name} is missing")
            return str(value).strip()

        lines = []
        for i, raw in enumerate(payload.get("lines") or []):
            qty = raw.get("qty") if isinstance(raw, dict) else None
            if isinstance(qty, bool) or not isinstance(qty, int) or qty < 1:
                raise ValueError(f"lines[{i}].qty must be a whole number above 0")
            ids = [raw.get(k) for k in ("platform_line_id", "platform_sku_id", "platform_item_id")]
            lines.append(ShipLine(*(str(v) if v not in (None, "") else None for v in ids[:2]), qty,
                                  str(ids[2]) if ids[2] not in (None, "") else None))
        package_no = payload.get("package_no")
        return cls(text("channel"), text("shop_id"), text("original_id"), text("carrier").upper(), text("waybill_no"),
                   str(package_no) if package_no not in (None, "") else None, tuple(lines), payload.get("split") is True)


@dataclass(frozen=True, slots=True)
class ShipResult:
    channel: str
    shop_id: str
    original_id: str
    method: str
    carrier_code: str  # what the platform was sent
    waybill_no: str
    package_no: str | None
    already_shipped: bool = False  # the platform said so: nothing new was recorded there
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def already_shipped(message: str) -> bool:
    text = message.lower()
    return any(word in text for word in ALREADY_SHIPPED_WORDS)


def _line_ids(p: PackageShipment, what: str) -> list[str]:
    ids = [line.platform_line_id or "" for line in p.lines]
    if not ids or not all(ids):
        raise FetchError(f"{p.channel}: a split package needs the {what} of every line it holds", retryable=False)
    return ids


def _int_id(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise FetchError(f"{name} {value!r} is not a number", retryable=False) from None


def _first_method(p: PackageShipment) -> str:
    """The ship method the channel's writer calls first for this package."""
    if p.channel == "douyin":
        return "order.logisticsAddMultiPack" if p.split else "order.logisticsAdd"
    return METHODS[p.channel]


Writer = Callable[[Any, httpx.AsyncClient, ShopConfig, PackageShipment, Any, str], Awaitable[str]]


async def _douyin(adapter: Any, http: httpx.AsyncClient, shop: ShopConfig, p: PackageShipment, code: Any, request_id: str) -> str:
    if not p.split:
        params = {"order_id": p.original_id, "company_code": code, "logistics_code": p.waybill_no}
        await adapter._call(http, shop, "order.logisticsAdd", params)
        return "order.logisticsAdd"
    # One pack per call (one outbox message per parcel); request_id makes a resend a no-op.
    info = [{"shipped_order_id": line_id, "shipped_num": line.qty} for line_id, line in zip(_line_ids(p, "sku order id"), p.lines)]
    pack = {"shipped_order_info": info, "logistics_code": p.waybill_no, "company_code": code}
    await adapter._call(http, shop, "order.logisticsAddMultiPack",
                        {"order_id": p.original_id, "pack_list": [pack], "request_id": request_id})
    return "order.logisticsAddMultiPack"


async def _taobao(adapter: Any, http: httpx.AsyncClient, shop: ShopConfig, p: PackageShipment, code: Any, request_id: str) -> str:
    params = {"tid": p.original_id, "out_sid": p.waybill_no, "company_code": str(code)}
    if p.split:
        params |= {"sub_tid": ",".join(_line_ids(p, "oid")), "is_split": "1"}
    node = await adapter._call(http, shop, "taobao.logistics.offline.send", params)
    shipping = node.get("shipping")
    if isinstance(shipping, dict) and shipping.get("is_success") is False:
        raise FetchError("taobao taobao.logistics.offline.send: is_success false", retryable=False)
    return "taobao.logistics.offline.send"


async def _jd(adapter: Any, http: httpx.AsyncClient, shop: ShopConfig, p: PackageShipment, code: Any, request_id: str) -> str:
    # SOP 出库 ships the whole order with one waybill: a later parcel of a split order is answered
    # "已出库", i.e. already shipped [U: how JD takes further waybills].
    method = "jingdong.pop.order.shipment"
    params = {"orderId": _int_id(p.original_id, "orderId"), "logiCoprId": str(code), "logiNo": p.waybill_no}
    result = (await adapter.call(http, shop, method, params)).get("sopjosshipment_result")
    if not isinstance(result, dict) or str(result.get("success")).lower() != "true":
        fields = ("errorCode", "chineseErrCode", "englishErrCode")
        text = " ".join(str(result.get(k) or "") for k in fields) if isinstance(result, dict) else repr(result)
        raise FetchError(f"jd {method}: not shipped: {text.strip()}", retryable=any(w in text.lower() for w in _JD_RETRY_WORDS))
    return method


async def _pdd(adapter: Any, http: httpx.AsyncClient, shop: ShopConfig, p: PackageShipment, code: Any, request_id: str) -> str:
    # The whole order ships with the first parcel [U: how 拼多多 takes the waybills of further parcels].
    params = {"order_sn": p.original_id, "logistics_id": code, "tracking_number": p.waybill_no}
    node = await adapter._call(http, shop, "pdd.logistics.online.send", params)
    if node.get("is_success") is False:
        raise FetchError("pdd pdd.logistics.online.send: is_success false", retryable=False)
    return "pdd.logistics.online.send"


async def _youzan(adapter: Any, http: httpx.AsyncClient, shop: ShopConfig, p: PackageShipment, code: Any, request_id: str) -> str:
    params = {"tid": p.original_id, "out_stype": str(code), "out_sid": p.waybill_no, "is_no_express": 0}
    if p.split:
        params["oids"] = ",".join(_line_ids(p, "oid"))
    data = await adapter._call(http, shop, ("youzan.logistics.online.confirm", "3.0.0"), params)
    if data.get("is_success") is False:
        raise FetchError("youzan youzan.logistics.online.confirm: is_success false", retryable=False)
    return "youzan.logistics.online.confirm"


async def _wechat_channels(adapter: Any, http: httpx.AsyncClient, shop: ShopConfig, p: PackageShipment, code: Any,
                           request_id: str) -> str:
    # Each parcel lists its products by product_id + sku_id: read them from the order.
    raw = (await adapter.fetch_orders(http, shop, [p.original_id])).get(p.original_id)
    if raw is None:
        raise FetchError(f"wechat_channels: order {p.original_id} is unknown to the platform (order/get)", retryable=False)
    products = [x for x in (raw.get("order_detail") or {}).get("product_infos") or [] if isinstance(x, dict)]
    product_of = {str(x.get("sku_id")): str(x.get("product_id")) for x in products}
    if p.split:
        skus = [line.platform_sku_id or line.platform_line_id or "" for line in p.lines]
        infos = [{"product_id": line.platform_item_id or product_of.get(sku, ""), "sku_id": sku, "product_cnt": line.qty}
                 for sku, line in zip(skus, p.lines)]
        if not infos or not all(i["product_id"] and i["sku_id"] for i in infos):
            raise FetchError(f"wechat_channels: order {p.original_id} has no product for some sku of the parcel", retryable=False)
    else:  # every product not refunded in full
        infos = [{"product_id": str(x.get("product_id")), "sku_id": str(x.get("sku_id")), "product_cnt": x.get("sku_cnt")}
                 for x in products if (x.get("finish_aftersale_sku_cnt") or 0) < (x.get("sku_cnt") or 0)]
    delivery = {"delivery_id": code, "waybill_id": p.waybill_no, "deliver_type": 1, "product_infos": infos}
    await adapter._call(http, shop, METHODS["wechat_channels"], {"order_id": p.original_id, "delivery_list": [delivery]},
                        unknown=wechat_channels.ORDER_NOT_FOUND_CODES)
    return METHODS["wechat_channels"]


async def _kuaishou(adapter: Any, http: httpx.AsyncClient, shop: ShopConfig, p: PackageShipment, code: Any, request_id: str) -> str:
    order_id = _int_id(p.original_id, "orderId")
    try:
        await adapter._call(http, shop, METHODS["kuaishou"], {"orderId": order_id, "expressCode": code, "expressNo": p.waybill_no})
    except FetchError as exc:
        if not (p.split and not exc.retryable and already_shipped(exc.message)):
            raise
        # 快手 ships whole orders: the further parcels of a split order are appended (追加包裹).
        params = {"oid": order_id, "expressCode": code, "expressNo": p.waybill_no}
        await adapter._call(http, shop, "open.seller.order.goods.logistics.append", params)
        return "open.seller.order.goods.logistics.append"
    return METHODS["kuaishou"]


WRITERS: dict[str, Writer] = {
    "douyin": _douyin, "taobao": _taobao, "jd": _jd, "pdd": _pdd, "youzan": _youzan,
    "wechat_channels": _wechat_channels, "kuaishou": _kuaishou,
}
METHODS = {  # each platform's ship API (抖店: logisticsAdd, or logisticsAddMultiPack for a split parcel)
    "douyin": "order.logisticsAdd", "taobao": "taobao.logistics.offline.send", "jd": "jingdong.pop.order.shipment",
    "pdd": "pdd.logistics.online.send", "youzan": "youzan.logistics.online.confirm",
    "wechat_channels": "/channels/ec/order/delivery/send", "kuaishou": "open.seller.order.goods.deliver",
}
SHIP_CHANNELS = frozenset(WRITERS)


def new_adapters() -> dict[str, Any]:
    """One adapter per channel with a ship API (each keeps its shops' access tokens)."""
    from orderhub.adapters.channels.registry import ChannelRegistry

    sources = ChannelRegistry.default().sources
    return {channel: sources[channel] for channel in SHIP_CHANNELS}


@cache
def _shared_adapters() -> dict[str, Any]:
    return new_adapters()


async def ship(
    http: httpx.AsyncClient, shop: ShopConfig, package: PackageShipment, *, request_id: str,
    adapters: Mapping[str, Any] | None = None,
) -> ShipResult:
    """Tell the shop's platform that `package` has left; `request_id` is passed where the API takes one.

    Raises DeliveryError: retryable for rate limits, 5xx and transport failures (after the
    adapter's own retries); not retryable for what the platform refused (unknown order, bad
    waybill, unknown carrier, a bad signature). "Already shipped" is a result, not an error.
    """
    write = WRITERS.get(shop.channel)
    if write is None:
        raise DeliveryError(f"{shop.channel} has no ship write-back", retryable=False)
    code = CARRIER_CODES[shop.channel].get(package.carrier)
    if code is None:
        raise DeliveryError(f"carrier {package.carrier!r} has no {shop.channel} code (known: {', '.join(CARRIERS)})",
                            retryable=False)
    adapter = (adapters or _shared_adapters())[shop.channel]
    done = ShipResult(shop.channel, shop.shop_id, package.original_id, _first_method(package), str(code), package.waybill_no,
                      package.package_no)
    try:
        method = await write(adapter, http, shop, package, code, request_id)
    except FetchError as exc:
        if not exc.retryable and already_shipped(exc.message):
            return ShipResult(**{**done.as_dict(), "already_shipped": True, "detail": exc.message})
        raise DeliveryError(exc.message, retryable=exc.retryable) from exc
    except UNKNOWN_ORDER as exc:
        raise DeliveryError(f"{shop.channel}: order {package.original_id} is unknown to the platform: {exc}",
                            retryable=False) from exc
    return ShipResult(**{**done.as_dict(), "method": method})


class ShipSender:
    """The outbox sender for `platform.ship`: the message's shop, through its channel's adapter."""

    def __init__(self, http: httpx.AsyncClient, shops: ShopDirectory, *, adapters: Mapping[str, Any] | None = None) -> None:
        self._http = http
        self._shops = shops
        self._adapters = adapters

    async def send(self, message: OutboxMessage) -> dict[str, Any]:
        if message.kind != KIND:
            raise DeliveryError(f"ShipSender sends {KIND} messages, not {message.kind!r}", retryable=False)
        try:
            package = PackageShipment.from_payload(message.payload)
        except ValueError as exc:
            raise DeliveryError(f"{KIND} payload: {exc}", retryable=False) from None
        shop = self._shops.by_shop(package.channel, package.shop_id)
        if shop is None:  # configure the shop, then retry the dead message by hand
            raise DeliveryError(f"no {package.channel} shop {package.shop_id} is configured", retryable=False)
        result = await ship(self._http, shop, package, request_id=message.idempotency_key, adapters=self._adapters)
        return result.as_dict()
