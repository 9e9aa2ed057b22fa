"""菜鸟 electronic waybills: `cainiao.waybill.ii.get` over the TOP router, signed like every TOP call.

The request and reply shapes are FORMATS.md §2 (`cainiao_waybill_get.json`); the signature is the
taobao adapter's `top_sign`. One waybill per package: the package's WMS order code is the
`object_id`, and the platform order ids it carries are the `trade_order_list`. Which 菜鸟 company
code (`cp_code`) a carrier has is the table below; the carrier itself was chosen by the audit's
carrier rules. Unconfirmed details are marked [U].
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import orjson

from orderhub.adapters.channels.http_common import raise_for_http_status
from orderhub.adapters.channels.taobao import API_VERSION, ROUTER_PATH, response_key, top_sign
from orderhub.adapters.channels.taobao_normalize import SHANGHAI, TIME_FORMAT
from orderhub.domain.errors import FetchError

METHOD = "cainiao.waybill.ii.get"
PARAM = "param_waybill_cloud_print_apply_new_request"
MAX_ORDERS_PER_CALL = 10  # trade_order_info_dtos: at most 10 per call (FORMATS.md §2)

# OrderHub carrier code (the carrier rules' output) -> 菜鸟 cp_code. SF/ZTO/YTO/YUNDA/STO/EMS are the
# codes 菜鸟's own docs use; DBKD (德邦快递), JTSD (极兔) and JD (京东, which mostly issues its own
# 无界面单 instead) are [U].
CP_CODES: dict[str, str] = {
    "SF": "SF", "ZTO": "ZTO", "YTO": "YTO", "YUNDA": "YUNDA", "STO": "STO", "EMS": "EMS", "POSTB": "POSTB",
    "JD": "JD", "DBL": "DBKD", "JT": "JTSD", "HTKY": "HTKY",
}
# OrderHub channel -> order_channels_type. TB/TM/JD/PDD are 菜鸟's; the others are [U] ("OTHERS" is safe).
ORDER_CHANNELS: dict[str, str] = {
    "taobao": "TB", "tmall": "TM", "jd": "JD", "pdd": "PDD", "douyin": "DOU_YIN", "kuaishou": "KUAI_SHOU",
    "youzan": "YOU_ZAN", "wechat_channels": "WEI_XIN",
}
# TOP errors worth trying again (taobao.py has the list's source): call limits, service unavailable.
RETRYABLE_CODES = frozenset({7, 8, 10})


@dataclass(frozen=True, slots=True)
class WaybillOrder:
    """One package that needs a waybill."""

    object_id: str  # the package's WMS order code: the same package asks with the same id
    carrier: str  # OrderHub's carrier code, e.g. "SF"
    channel: str
    trade_ids: tuple[str, ...]  # the platform order numbers in the package (several when merged)
    items: tuple[tuple[str, int], ...]  # (name, count)
    weight_g: int
    recipient: Mapping[str, Any]  # {name, mobile, address{province, city, district, town, detail}, oaid?, tid?}


@dataclass(frozen=True, slots=True)
class Waybill:
    carrier: str
    cp_code: str
    waybill_no: str
    print_data: str  # passed to the 菜鸟 print component as it came
    parent_waybill_no: str = ""


@dataclass(frozen=True, slots=True)
class CainiaoSettings:
    base_url: str  # TOP's host (https://eco.taobao.com) or the simulator's /cainiao
    app_key: str
    app_secret: str
    session: str  # the merchant's authorisation of the app (淘宝/菜鸟 account that pays for the waybills)
    sender: Mapping[str, Any]  # {name, mobile, address{province, city, district, town, detail}}: the warehouse
    user_id: int | None = None  # the 菜鸟 account id the waybill is charged to [U: optional in practice]
    template_url: str = "http://cloudprint.cainiao.com/template/standard/101"  # [U] the standard template per carrier
    sign_method: str = "md5"
    cp_codes: Mapping[str, str] = field(default_factory=lambda: dict(CP_CODES))


class UnknownCarrier(FetchError):
    """The order's carrier has no 菜鸟 company code: the waybill must come from elsewhere."""

    def __init__(self, carrier: str) -> None:
        super().__init__(f"carrier {carrier!r} has no 菜鸟 cp_code; known: {', '.join(CP_CODES)}", retryable=False)


class CainiaoWaybills:
    """Waybills from 菜鸟 for the carriers it serves."""

    def __init__(self, settings: CainiaoSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._clock = clock

    def cp_code(self, carrier: str) -> str:
        code = self.settings.cp_codes.get(carrier.upper()) if carrier else None
        if code is None:
            raise UnknownCarrier(carrier)
        return code

    def request(self, packages: Sequence[WaybillOrder]) -> dict[str, Any]:
        """The `param_waybill_cloud_print_apply_new_request` object for packages of one carrier."""
        if not packages or len(packages) > MAX_ORDERS_PER_CALL:
            raise ValueError(f"one call asks for 1-{MAX_ORDERS_PER_CALL} waybills, not {len(packages)}")
        cp_codes = {self.cp_code(p.carrier) for p in packages}
        if len(cp_codes) != 1:
            raise ValueError(f"one call is for one carrier, not {sorted(cp_codes)}")
        s = self.settings
        return {
            "cp_code": cp_codes.pop(),
            "need_encrypt": True,
            "sender": dict(s.sender),
            "trade_order_info_dtos": [self._dto(p) for p in packages],
        }

    def _dto(self, p: WaybillOrder) -> dict[str, Any]:
        dto: dict[str, Any] = {
            "object_id": p.object_id,
            "template_url": self.settings.template_url,
            "order_info": {"order_channels_type": ORDER_CHANNELS.get(p.channel, "OTHERS"), "trade_order_list": list(p.trade_ids)},
            "package_info": {"id": p.object_id, "items": [{"name": name, "count": count} for name, count in p.items],
                             "weight": p.weight_g, "volume": 0},
            "recipient": dict(p.recipient),
        }
        if self.settings.user_id is not None:
            dto["user_id"] = self.settings.user_id
        return dto

    def signed_form(self, param: Mapping[str, Any], timestamp: datetime | None = None) -> dict[str, str]:
        """The whole form POSTed to the router, `sign` included; the param is compact JSON, byte for byte what is signed."""
        s = self.settings
        moment = timestamp or datetime.fromtimestamp(self._clock(), SHANGHAI)
        form = {
            "method": METHOD, "app_key": s.app_key, "session": s.session,
            "timestamp": moment.astimezone(SHANGHAI).strftime(TIME_FORMAT), "format": "json", "v": API_VERSION,
            "sign_method": s.sign_method, PARAM: orjson.dumps(param).decode(),
        }
        form["sign"] = top_sign(form, s.app_secret, s.sign_method)
        return form

    async def get(self, http: httpx.AsyncClient, packages: Sequence[WaybillOrder]) -> dict[str, Waybill]:
        """object_id -> its waybill, for every package asked (one carrier, at most 10)."""
        form = self.signed_form(self.request(packages))
        url = f"{self.settings.base_url.rstrip('/')}{ROUTER_PATH}"
        try:
            response = await http.post(url, data=form)
        except httpx.TransportError as exc:
            raise FetchError(f"cainiao {METHOD}: {type(exc).__name__}: {exc}", retryable=True) from exc
        raise_for_http_status(f"cainiao {METHOD}", response)
        found = read_reply(response.content, self.cp_code(packages[0].carrier), packages[0].carrier)
        missing = [p.object_id for p in packages if p.object_id not in found]
        if missing:
            raise FetchError(f"cainiao {METHOD}: no waybill for {', '.join(missing)}", retryable=True)
        return found

    async def get_one(self, http: httpx.AsyncClient, package: WaybillOrder) -> Waybill:
        return (await self.get(http, [package]))[package.object_id]


def read_reply(content: bytes, cp_code: str, carrier: str) -> dict[str, Waybill]:
    """object_id -> Waybill from a `cainiao_waybill_ii_get_response`; FetchError for TOP's error_response."""
    try:
        reply = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise FetchError(f"cainiao {METHOD}: reply is not JSON", retryable=True) from None
    error = reply.get("error_response") if isinstance(reply, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        detail = " ".join(str(error.get(k) or "") for k in ("code", "msg", "sub_code", "sub_msg")).strip()
        sub_code = str(error.get("sub_code") or "")
        retryable = (isinstance(code, int) and code in RETRYABLE_CODES) or sub_code.startswith("isp.")
        raise FetchError(f"cainiao {METHOD}: {detail} (request_id {error.get('request_id') or '-'})", retryable=retryable)
    body = reply.get(response_key(METHOD)) if isinstance(reply, dict) else None
    modules = body.get("modules") if isinstance(body, dict) else None
    if isinstance(modules, dict):  # TOP wraps lists: {"waybill_cloud_print_response": [...]}
        modules = modules.get("waybill_cloud_print_response")
    if not isinstance(modules, list):
        raise FetchError(f"cainiao {METHOD}: no modules in the reply", retryable=False)
    out: dict[str, Waybill] = {}
    for module in modules:
        if isinstance(module, dict) and module.get("waybill_code") and module.get("object_id") is not None:
            out[str(module["object_id"])] = Waybill(
                carrier, cp_code, str(module["waybill_code"]), str(module.get("print_data") or ""), str(module.get("parent_waybill_code") or ""),
            )
    return out
