"""The simulated 菜鸟 (Cainiao) waybill service: `cainiao.waybill.ii.get` on a TOP router, signature checked.

Written independently of OrderHub's adapter (adapters/waybills/cainiao.py): the TOP signature is
recomputed here from the form as received. The same package asked again (same company code,
object id and platform orders) gets the waybill it already has, so a retried request does not
use up a second number.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Request, Response

DEMO_CAINIAO_APP = {"app_key": "fake-cainiao-app-key-0001", "app_secret": "fake-cainiao-app-secret-0001",
                    "session": "fake-cainiao-session-0001"}
METHOD = "cainiao.waybill.ii.get"
PARAM = "param_waybill_cloud_print_apply_new_request"
CST = timezone(timedelta(hours=8))
MAX_SKEW = timedelta(minutes=10)  # [U] TOP refuses timestamps this far off ("Invalid timestamp")
# How each company's numbers look here (prefix, digits); invented, shaped like the real ones.
NUMBERS = {"SF": ("SF", 13), "ZTO": ("7", 13), "YTO": ("YT", 13), "YUNDA": ("4", 14), "STO": ("77", 12), "EMS": ("E", 12),
           "POSTB": ("98", 12), "JD": ("JD", 13), "DBKD": ("DPK", 12), "JTSD": ("JT", 13), "HTKY": ("55", 12)}


def top_sign(params: dict[str, str], secret: str, method: str) -> str | None:
    text = "".join(k + params[k] for k in sorted(params) if k != "sign").encode()
    key = secret.encode()
    if method == "md5":
        return hashlib.md5(key + text + key).hexdigest().upper()
    if method == "hmac":
        return hmac.new(key, text, "md5").hexdigest().upper()
    if method == "hmac-sha256":
        return hmac.new(key, text, "sha256").hexdigest().upper()
    return None


class CainiaoState:
    def __init__(self, apps: Iterable[dict[str, str]] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.apps = {a["app_key"]: a for a in (apps or [DEMO_CAINIAO_APP])}
        self.clock = clock
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._issued: dict[tuple[str, str, tuple[str, ...]], dict[str, Any]] = {}
        self.requests = 0

    def issue(self, cp_code: str, dto: dict[str, Any]) -> dict[str, Any]:
        trades = tuple(str(t) for t in (dto.get("order_info") or {}).get("trade_order_list") or ())
        key = (cp_code, str(dto["object_id"]), trades)
        with self._lock:
            found = self._issued.get(key)
            if found is None:
                prefix, digits = NUMBERS[cp_code]
                number = f"{prefix}{next(self._seq):0{digits}d}"
                found = {"cp_code": cp_code, "object_id": key[1], "waybill_code": number, "trade_order_list": list(trades),
                         "recipient": dto.get("recipient"), "issued_at": self.clock()}
                self._issued[key] = found
        return found

    def waybills(self) -> list[dict[str, Any]]:
        with self._lock:
            return sorted(self._issued.values(), key=lambda w: w["issued_at"])


class TopError(Exception):
    def __init__(self, code: int, msg: str, sub_code: str = "", sub_msg: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.sub_code, self.sub_msg = code, msg, sub_code, sub_msg


def _reply(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _check(state: CainiaoState, params: dict[str, str]) -> None:
    app = state.apps.get(params.get("app_key", ""))
    if app is None:
        raise TopError(29, "Invalid app Key")
    if params.get("method") != METHOD:
        raise TopError(22, "Invalid method")
    try:
        sent = datetime.strptime(params.get("timestamp", ""), "%Y-%m-%d %H:%M:%S").replace(tzinfo=CST)
    except ValueError:
        raise TopError(31, "Invalid timestamp") from None
    if abs(datetime.fromtimestamp(state.clock(), CST) - sent) > MAX_SKEW:
        raise TopError(31, "Invalid timestamp")
    if not params.get("sign"):
        raise TopError(24, "Missing signature")
    expected = top_sign(params, app["app_secret"], params.get("sign_method", "md5"))
    if expected is None or not hmac.compare_digest(expected, params["sign"].upper()):
        raise TopError(25, "Invalid signature")
    if params.get("session") != app["session"]:
        raise TopError(27, "Invalid session", "invalid-sessionkey", "SessionKey非法")


def _waybills(state: CainiaoState, params: dict[str, str]) -> list[dict[str, Any]]:
    try:
        request = orjson.loads(params.get(PARAM, ""))
        cp_code = str(request["cp_code"])
        dtos = list(request["trade_order_info_dtos"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise TopError(40, f"Missing required arguments:{PARAM}") from None
    if cp_code not in NUMBERS:
        raise TopError(15, "Remote service error", "isv.cp-code-not-exist", f"物流公司 {cp_code} 未开通电子面单")
    if not 1 <= len(dtos) <= 10 or any(not isinstance(d, dict) or not d.get("object_id") for d in dtos):
        raise TopError(41, "Invalid arguments:trade_order_info_dtos", "isv.invalid-parameter", "1-10 个 trade_order_info_dtos，各有 object_id")
    modules = []
    for dto in dtos:
        issued = state.issue(cp_code, dto)
        print_data = {"encryptedData": hashlib.sha256(issued["waybill_code"].encode()).hexdigest(), "signature": "SIM",
                      "templateURL": dto.get("template_url", ""), "ver": "waybill_print_secret_version_1"}
        modules.append({"object_id": issued["object_id"], "waybill_code": issued["waybill_code"], "parent_waybill_code": "",
                        "print_data": orjson.dumps(print_data).decode()})
    return modules


def make_router(state: CainiaoState) -> APIRouter:
    """The TOP router of the waybill service, mounted under /cainiao."""
    router = APIRouter()

    @router.post("/router/rest")
    async def rest(request: Request) -> Response:
        params = dict(request.query_params)
        params.update(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        state.requests += 1
        request_id = f"SIMCN{state.requests:08d}"
        try:
            _check(state, params)
            modules = _waybills(state, params)
        except TopError as err:
            error: dict[str, Any] = {"code": err.code, "msg": err.msg, "request_id": request_id}
            if err.sub_code:
                error |= {"sub_code": err.sub_code, "sub_msg": err.sub_msg}
            return _reply({"error_response": error})
        return _reply({"cainiao_waybill_ii_get_response": {"modules": {"waybill_cloud_print_response": modules}, "request_id": request_id}})

    return router


def make_control_router(state: CainiaoState) -> APIRouter:
    """`GET /_sim/cainiao/waybills`: every waybill issued, oldest first."""
    router = APIRouter()

    @router.get("/waybills")
    async def waybills() -> Response:
        return _reply({"items": state.waybills(), "requests": state.requests})

    return router
