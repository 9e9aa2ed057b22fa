"""The simulated carriers: Kuaidi100 (快递100) and SF (顺丰) scan timelines, signed pushes, and their query APIs.

Given parcels (waybill, carrier, ship time) it writes a realistic track for each — collected, a few
hops in transit, out for delivery, signed — or one of the troubles OrderHub must notice (never
collected, collected late, silent in transit, refused, damaged, lost, a bad address). Scans become
visible as simulated time passes them; `push` sends what is new, signed as each carrier signs:
Kuaidi100 a form `param` (the whole track, newest first) + `sign` = UPPER(md5(param + salt)); SF
only the new route nodes as JSON with msgDigest = base64(md5(body + checkword)) in the query
string (OrderHub's assumption for SF, docs/logistics.md). SF also takes interceptions
(EXP_RECE_WANTED_INTERCEPT on the same signed /std/service): a parcel not yet signed for is turned
back to the sender (退回) or sent on to a new address (转寄), and its track from then on says so; one it
has not collected yet is turned back at pickup. Kuaidi100 only tracks: it has no interception.
Written apart from OrderHub's client ends (adapters/carriers): nothing here is shared with them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlencode

import httpx
import orjson
from fastapi import APIRouter, HTTPException, Request, Response

DEMO_KUAIDI100 = {"customer": "FAKEKD100CUSTOMER0001", "key": "fake-kd100-key", "salt": "fake-kd100-salt"}
DEMO_SF = {"partner_id": "FAKESFPARTNER01", "checkword": "fake-sf-checkword-0001"}
PUSH_PATHS = {"kuaidi100": "/api/v1/webhooks/carriers/kuaidi100", "sf": "/api/v1/webhooks/carriers/sf"}
SCENARIOS = {"normal": 0.80, "late_collect": 0.05, "no_first_scan": 0.04, "stall_in_transit": 0.05, "exception": 0.06}
_BEIJING = timezone(timedelta(hours=8))
_CITIES = ("杭州市", "上海市", "苏州市", "南京市", "合肥市", "武汉市", "广州市", "深圳市", "成都市", "北京市")
_H = 3600
# kind -> (Kuaidi100 state, its name, SF opCode, remark); trouble text tells what kind of trouble
_CODES: dict[str, tuple[str, str, str, str]] = {
    "collected": ("1", "揽收", "50", "顺丰速运 已收取快件"),
    "in_transit": ("0", "在途", "31", "快件到达【{city}中转场】"),
    "out_for_delivery": ("5", "派件", "204", "快件交给测试员，正在派送途中"),
    "delivered": ("3", "签收", "80", "您的快件已签收，如有疑问请联系快递员"),
    "stalled": ("2", "疑难", "70", "快件滞留于【{city}营业点】"),
    "rejected": ("14", "拒签", "70", "客户拒收，快件将退回"),
    "returned": ("6", "退回", "631", "快件已退回"),
    "damaged": ("2", "疑难", "70", "快件外包装破损，已登记"),
    "address_issue": ("2", "疑难", "70", "收件地址不详，无法派送"),
    "lost": ("2", "疑难", "70", "快件丢失，正在核实"),
    "customs": ("13", "清关异常", "70", "快件清关异常"),
}
# What an accepted interception does to the rest of a track: (kind, hours after the one before, text). A scan's
# kind is the state it stands for, so the way back starts `returned` (退回) [U: SF's exact opCodes and remarks
# for 拦截/转寄 are not in any source we read].
_TURNED: dict[str, tuple[tuple[str, float, str | None], ...]] = {
    "return": (("returned", 0.5, "应寄件人要求，快件已拦截，正在退回寄件人"), ("in_transit", 6.0, "快件退回途中，到达【{city}中转场】"),
               ("returned", 12.0, "快件已退回寄件人，已签收")),
    "redirect": (("in_transit", 0.5, "应寄件人要求，快件已改址，转寄至新地址"), ("in_transit", 6.0, None), ("out_for_delivery", 4.0, None),
                 ("delivered", 2.0, None)),
}
_SF_INTERCEPT_SERVICE = {"1": "redirect", "2": "return"}  # serviceCode -> what SF does
# the simulator's own refusals of an interception (SF's real errorCodes are not documented anywhere we read) [U]
_SIGNED_FOR, _BACK_ALREADY, _BAD_SERVICE = ("8101", "快件已签收，无法拦截"), ("8102", "快件已退回，无法拦截"), ("8103", "不支持的拦截服务")


def _beijing(unix: int) -> str:
    return datetime.fromtimestamp(unix, _BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def _kd100_sign(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest().upper()


def _sf_push_digest(body: bytes, checkword: str) -> str:
    return base64.b64encode(hashlib.md5(body + checkword.encode("utf-8")).digest()).decode()


def _sf_api_digest(msg_data: str, timestamp: str, checkword: str) -> str:
    # As SF's Java SDK does it: URLEncoder.encode (space as +, ~ encoded), MD5, Base64.
    encoded = quote_plus(msg_data + timestamp + checkword, safe="*").replace("~", "%7E")
    return base64.b64encode(hashlib.md5(encoded.encode("utf-8")).digest()).decode()


@dataclass(slots=True)
class SimScan:
    at: int  # unix seconds (simulated time)
    kind: str
    text: str
    city: str


@dataclass(slots=True)
class SimParcel:
    waybill_no: str
    carrier: str  # SF, ZTO, YTO...
    provider: str  # who tracks it: sf | kuaidi100
    shipped_at: int
    scenario: str
    scans: list[SimScan]
    pushed: int = 0  # how many of the scans were delivered to OrderHub
    last_push: tuple[str, bytes, str] | None = field(default=None, repr=False)  # (path+query, body, content type)
    intercept: dict[str, Any] | None = None  # an accepted interception: {action, at, destination}

    def as_dict(self) -> dict[str, Any]:
        return {"waybill_no": self.waybill_no, "carrier": self.carrier, "provider": self.provider, "shipped_at": self.shipped_at,
                "scenario": self.scenario, "pushed": self.pushed, "intercept": self.intercept,
                "scans": [{"at": s.at, "time": _beijing(s.at), "kind": s.kind, "text": s.text, "city": s.city} for s in self.scans]}


def timeline(rng: random.Random, shipped_at: int, scenario: str, time_scale: float = 1.0) -> list[SimScan]:
    """A carrier's scans for one parcel; times are seconds after shipping drawn like real networks move.

    `time_scale` < 1 compresses the track (a day in seconds, for tests); the draws are the same, so
    a seed gives the same track at any scale. Each scan is at least a second after the one before:
    the carriers' timestamps have one-second resolution, and two scans in the same second would
    leave their order to chance.
    """
    cities = rng.sample(_CITIES, 5)
    out: list[SimScan] = []
    t = shipped_at

    def scan(kind: str, after_h: tuple[float, float], city: str | None = None) -> None:
        nonlocal t
        t += max(1, int(rng.uniform(*after_h) * _H * time_scale))
        where = city or cities[min(len(out), len(cities) - 1)]
        out.append(SimScan(t, kind, _CODES[kind][3].format(city=where), where))

    if scenario == "no_first_scan":
        return out
    scan("collected", (3.0, 10.0) if scenario == "late_collect" else (0.2, 1.5), cities[0])
    for _ in range(rng.randint(1, 2) if scenario in ("stall_in_transit", "exception") else rng.randint(2, 4)):
        scan("in_transit", (2.0, 10.0))
    if scenario == "stall_in_transit":
        return out  # then silence
    if scenario == "exception":
        trouble = rng.choice(("rejected", "damaged", "address_issue", "lost", "stalled"))
        if trouble == "rejected":
            scan("out_for_delivery", (1.0, 4.0), cities[-1])
        scan(trouble, (1.0, 8.0), cities[-1])
        if trouble == "rejected":
            scan("returned", (6.0, 24.0))
        if trouble in ("lost", "rejected"):
            return out
        if trouble in ("stalled", "address_issue"):
            scan("in_transit", (12.0, 30.0), cities[-1])
    scan("out_for_delivery", (1.0, 4.0), cities[-1])
    scan("delivered", (0.5, 5.0), cities[-1])
    return out


class CarrierSim:
    """Both carriers' state, behind one lock (the HTTP handlers and the pusher share it)."""

    def __init__(self, seed: int = 0, clock: Callable[[], float] = time.time, kuaidi100: dict[str, str] | None = None,
                 sf: dict[str, str] | None = None, target_url: str | None = None, time_scale: float = 1.0) -> None:
        self.rng = random.Random(seed)
        self.clock = clock
        self.kuaidi100 = dict(kuaidi100 or DEMO_KUAIDI100)
        self.sf = dict(sf or DEMO_SF)
        self.target_url = target_url
        self.parcels: dict[str, SimParcel] = {}
        # Kuaidi100 subscriptions (POST /kuaidi100/poll): waybill -> {company, callbackurl, salt, at}. A subscribed
        # parcel is pushed to its callback, signed with its salt; others go to target_url (subscribed elsewhere)
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.stats = {"pushes": 0, "push_failures": 0, "queries": 0, "refused": 0, "subscriptions": 0, "intercepts": 0}
        # SF interceptions of waybills it has not collected yet: applied when the parcel is handed over
        self.awaiting_pickup: dict[str, dict[str, Any]] = {}
        # How the carriers behave (PUT /_sim/carriers/config): drawn tracks' hours × time_scale, how
        # often each scenario is drawn, and the push cadence (None: push_forever's own interval).
        self.time_scale = time_scale
        self.scenarios = dict(SCENARIOS)
        self.push_interval_s: float | None = None
        self._lock = threading.Lock()

    def configure(self, values: dict[str, Any]) -> dict[str, Any]:
        """Change any of time_scale (> 0), scenarios ({name: weight >= 0}, some > 0) and push_interval_s
        (> 0, or None); checked as a whole before anything changes. Tracks drawn earlier keep their times."""
        scale = float(values.get("time_scale", self.time_scale))
        scenarios = {str(k): float(v) for k, v in dict(values.get("scenarios", self.scenarios)).items()}
        interval = values.get("push_interval_s", self.push_interval_s)
        interval = None if interval is None else float(interval)
        if scale <= 0:
            raise ValueError("time_scale must be > 0")
        if set(scenarios) - set(SCENARIOS) or any(w < 0 for w in scenarios.values()) or not any(scenarios.values()):
            raise ValueError(f"scenarios are weights >= 0 (some > 0) of {list(SCENARIOS)}")
        if interval is not None and interval <= 0:
            raise ValueError("push_interval_s must be > 0")
        with self._lock:
            self.time_scale, self.scenarios, self.push_interval_s = scale, scenarios, interval
        return self.config()

    def config(self) -> dict[str, Any]:
        return {"time_scale": self.time_scale, "scenarios": dict(self.scenarios), "push_interval_s": self.push_interval_s}

    def add(self, waybill_no: str, carrier: str, shipped_at: int, scenario: str | None = None, provider: str | None = None,
            scans: list[dict[str, Any]] | None = None) -> SimParcel:
        """A parcel to track; `scans` [{after_s, kind, text?, city?}] replaces the drawn timeline (tests; kept as given, not scaled)."""
        with self._lock:
            if scenario is None:
                scenario = self.rng.choices(list(self.scenarios), weights=list(self.scenarios.values()))[0]
            if scenario not in SCENARIOS and scans is None:
                raise ValueError(f"unknown scenario {scenario!r}; known: {list(SCENARIOS)}")
            if scans is not None:
                made = [SimScan(shipped_at + int(s["after_s"]), str(s["kind"]), str(s.get("text") or _CODES[s["kind"]][3].format(city="杭州市")),
                                str(s.get("city") or "杭州市")) for s in scans]  # fmt: skip
            else:
                made = timeline(self.rng, shipped_at, scenario, self.time_scale)
            parcel = SimParcel(waybill_no, carrier.upper(), provider or ("sf" if carrier.upper() == "SF" else "kuaidi100"),
                               shipped_at, scenario if scans is None else "scripted", made)  # fmt: skip
            self.parcels[waybill_no] = parcel
            asked = self.awaiting_pickup.pop(waybill_no, None)
            if asked is not None:  # intercepted before pickup: collected, then straight back (or on to the new address)
                first = made[0] if made and made[0].kind == "collected" else SimScan(shipped_at + 1, "collected", _CODES["collected"][3], "杭州市")
                parcel.scans = [first]
                self._turn(parcel, asked, first.at)
            return parcel

    def _turn(self, parcel: SimParcel, asked: dict[str, Any], at: int) -> None:
        """The track after an accepted interception at `at`: what is visible stays, the rest is replaced."""
        kept = [s for s in parcel.scans if s.at <= at]
        city = kept[0].city if kept else "杭州市"
        t = max([at, *(s.at for s in kept)])
        for kind, hours, text in _TURNED[asked["action"]]:
            t += max(1, int(hours * _H * self.time_scale))
            kept.append(SimScan(t, kind, (text or _CODES[kind][3]).format(city=city), city))
        parcel.scans = kept
        parcel.intercept = {**asked, "applied_at": at}

    def visible(self, parcel: SimParcel) -> list[SimScan]:
        now = self.clock()
        return [s for s in parcel.scans if s.at <= now]

    # -- what the carriers send ---------------------------------------------------------------

    def kuaidi100_result(self, parcel: SimParcel, scans: list[SimScan]) -> dict[str, Any]:
        """`lastResult` (and the query answer): the whole visible track, newest first."""
        newest = scans[-1].kind if scans else "in_transit"
        data = [{"time": _beijing(s.at), "ftime": _beijing(s.at), "context": f"[{s.city}]{s.text}", "status": _CODES[s.kind][1],
                 "areaCode": "", "areaName": s.city, "statusCode": _CODES[s.kind][0]} for s in reversed(scans)]  # fmt: skip
        com = {"SF": "shunfeng", "ZTO": "zhongtong", "YTO": "yuantong", "YUNDA": "yunda", "STO": "shentong", "EMS": "ems", "JD": "jd"}
        return {"message": "ok", "nu": parcel.waybill_no, "ischeck": "1" if newest == "delivered" else "0", "condition": "00",
                "com": com.get(parcel.carrier, parcel.carrier.lower()), "status": "200", "state": _CODES[newest][0], "data": data}

    def kuaidi100_push(self, parcel: SimParcel, scans: list[SimScan], salt: str | None = None) -> bytes:
        done = scans and scans[-1].kind in ("delivered", "returned")
        param = orjson.dumps({"status": "shutdown" if done else "polling", "billstatus": "", "message": "", "autoCheck": "0",
                              "comOld": "", "comNew": "", "lastResult": self.kuaidi100_result(parcel, scans)}).decode()
        return urlencode({"param": param, "sign": _kd100_sign(param + (self.kuaidi100["salt"] if salt is None else salt))}).encode()

    def sf_routes(self, parcel: SimParcel, scans: list[SimScan], first_id: int) -> list[dict[str, Any]]:
        routes = []
        for n, s in enumerate(scans):
            reason = "客户拒收" if s.kind == "rejected" else ""
            routes.append({"id": str(first_id + n), "mailno": parcel.waybill_no, "orderid": "", "acceptTime": _beijing(s.at),
                           "acceptAddress": s.city, "remark": s.text, "opCode": _CODES[s.kind][2], "reasonCode": "", "reasonName": reason})
        return routes

    def sf_push(self, parcel: SimParcel, scans: list[SimScan]) -> tuple[bytes, str]:
        body = orjson.dumps({"Body": {"WaybillRoute": self.sf_routes(parcel, scans, 100000000000000 + parcel.pushed + 1)}})
        return body, _sf_push_digest(body, self.sf["checkword"])

    async def push(self, http: httpx.AsyncClient, target: str | None = None, waybill_no: str | None = None, replay: bool = False) -> dict[str, int]:
        """Send every parcel's new visible scans (or, with `replay`, its last push again) to OrderHub."""
        target = (target or self.target_url or "").rstrip("/")
        if not target and not self.subscriptions:
            raise ValueError("push needs a target (OrderHub's base URL) or a subscription")
        sent = failed = 0
        for parcel in [p for p in list(self.parcels.values()) if waybill_no in (None, p.waybill_no)]:
            with self._lock:
                scans = self.visible(parcel)
                fresh = scans[parcel.pushed :]
                subscribed = self.subscriptions.get(parcel.waybill_no) if parcel.provider == "kuaidi100" else None
                base = "" if subscribed else target
                if replay:
                    request = parcel.last_push
                elif not fresh or not (subscribed or target):
                    request = None
                elif parcel.provider == "sf":
                    body, digest = self.sf_push(parcel, fresh)
                    request = (f"{PUSH_PATHS['sf']}?msgDigest={quote_plus(digest)}", body, "application/json")
                elif subscribed:
                    request = (subscribed["callbackurl"], self.kuaidi100_push(parcel, scans, subscribed["salt"]), "application/x-www-form-urlencoded")
                else:
                    request = (PUSH_PATHS["kuaidi100"], self.kuaidi100_push(parcel, scans), "application/x-www-form-urlencoded")
            if request is None:
                continue
            ok = await self._send(http, base, parcel.provider, request)
            with self._lock:
                self.stats["pushes"] += 1
                if ok:
                    sent += 1
                    parcel.last_push = request
                    parcel.pushed = max(parcel.pushed, len(scans))
                else:
                    failed += 1
                    self.stats["push_failures"] += 1
        return {"sent": sent, "failed": failed}

    @staticmethod
    async def _send(http: httpx.AsyncClient, target: str, provider: str, request: tuple[str, bytes, str]) -> bool:
        path, body, content_type = request
        try:
            reply = await http.post(target + path, content=body, headers={"content-type": content_type})
            data = orjson.loads(reply.content) if reply.status_code == 200 else {}
        except (httpx.HTTPError, orjson.JSONDecodeError):
            return False
        if provider == "sf":
            return data.get("return_code") == "0000"
        return data.get("result") is True and data.get("returnCode") == "200"  # anything else: Kuaidi100 pushes again later

    async def push_forever(self, http: httpx.AsyncClient, interval_s: float = 5.0, target: str | None = None) -> None:
        """Push what is new every `interval_s` (or every configured push_interval_s, read each round)."""
        while True:
            try:
                await self.push(http, target)
            except ValueError:
                pass  # no target yet
            await asyncio.sleep(self.push_interval_s or interval_s)

    # -- what the carriers answer -------------------------------------------------------------

    def kuaidi100_subscribe(self, form: dict[str, str]) -> dict[str, Any]:
        """The subscription API (poll): `schema=json` + `param{company, number, key, parameters{callbackurl, salt}}`."""
        try:
            param = orjson.loads(form.get("param") or "")
            parameters = param.get("parameters") or {}
            number, company, callback = str(param.get("number") or ""), str(param.get("company") or ""), str(parameters.get("callbackurl") or "")
        except (orjson.JSONDecodeError, AttributeError):
            return {"result": False, "returnCode": "700", "message": "订阅方的订阅数据存在错误（如不支持的快递公司、单号为空、单号超长等）"}
        if param.get("key") != self.kuaidi100["key"]:
            return {"result": False, "returnCode": "600", "message": "您不是合法的订阅者（即授权Key出错）"}
        if form.get("schema") != "json" or not number or not company or not callback.startswith(("http://", "https://")):
            return {"result": False, "returnCode": "700", "message": "订阅方的订阅数据存在错误（如不支持的快递公司、单号为空、单号超长等）"}
        with self._lock:
            if number in self.subscriptions:
                return {"result": False, "returnCode": "501", "message": "重复订阅"}
            self.subscriptions[number] = {"company": company, "callbackurl": callback, "salt": str(parameters.get("salt") or ""),
                                          "at": self.clock()}
            self.stats["subscriptions"] += 1
        return {"result": True, "returnCode": "200", "message": "提交成功"}

    def kuaidi100_query(self, form: dict[str, str]) -> dict[str, Any]:
        self.stats["queries"] += 1
        param, given = form.get("param", ""), form.get("sign", "")
        if form.get("customer") != self.kuaidi100["customer"]:
            return {"result": False, "returnCode": "601", "message": "customer不存在"}
        expected = _kd100_sign(param + self.kuaidi100["key"] + self.kuaidi100["customer"])
        if not hmac.compare_digest(expected, given.upper()):
            self.stats["refused"] += 1
            return {"result": False, "returnCode": "503", "message": "验证签名失败"}
        try:
            number = str(orjson.loads(param).get("num") or "")
        except (orjson.JSONDecodeError, AttributeError):
            return {"result": False, "returnCode": "400", "message": "参数错误"}
        parcel = self.parcels.get(number)
        scans = self.visible(parcel) if parcel else []
        if parcel is None or not scans:
            return {"result": False, "returnCode": "500", "message": "查询无结果，请隔段时间再查"}
        return self.kuaidi100_result(parcel, scans)

    def sf_service(self, form: dict[str, str]) -> dict[str, Any]:
        """丰桥's /std/service: checked as SF checks it (partner, msgDigest), then the route query or an interception."""
        reply = {"apiResponseID": hashlib.md5(str(form).encode()).hexdigest().upper(), "apiErrorMsg": "", "apiResultData": None}
        msg_data, timestamp = form.get("msgData", ""), form.get("timestamp", "")
        if form.get("partnerID") != self.sf["partner_id"]:
            return {**reply, "apiResultCode": "A1004", "apiErrorMsg": "无对应服务权限"}
        if not hmac.compare_digest(_sf_api_digest(msg_data, timestamp, self.sf["checkword"]), form.get("msgDigest", "")):
            self.stats["refused"] += 1
            return {**reply, "apiResultCode": "A1006", "apiErrorMsg": "数字签名无效"}
        try:
            body = orjson.loads(msg_data) or {}
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return {**reply, "apiResultCode": "A1001", "apiErrorMsg": "必传参数不可为空"}
        if form.get("serviceCode") == "EXP_RECE_SEARCH_ROUTES":
            data = self.sf_routes_of(body)
        elif form.get("serviceCode") == "EXP_RECE_WANTED_INTERCEPT":
            data = self.sf_intercept(body)
        else:
            return {**reply, "apiResultCode": "A1004", "apiErrorMsg": "无对应服务权限"}
        return {**reply, "apiResultCode": "A1000", "apiResultData": orjson.dumps(data).decode()}

    def sf_intercept(self, body: dict[str, Any]) -> dict[str, Any]:
        """截单转寄/退回 of one waybill: accepted unless it is signed for or on its way back already; asked twice,
        the same answer. A waybill not collected yet is turned back at pickup."""
        self.stats["intercepts"] += 1
        waybill, action = str(body.get("waybillNo") or ""), _SF_INTERCEPT_SERVICE.get(str(body.get("serviceCode") or ""))
        if not waybill or action is None:
            return _sf_refusal(*_BAD_SERVICE)
        asked = {"action": action, "at": self.clock(), "destination": body.get("newDestAddress")}
        with self._lock:
            parcel = self.parcels.get(waybill)
            if parcel is None:
                self.awaiting_pickup.setdefault(waybill, asked)
                return {"success": True, "errorCode": "S0000", "errorMsg": None, "msgData": None}
            if parcel.intercept is not None:
                return {"success": True, "errorCode": "S0000", "errorMsg": None, "msgData": None}  # asked again
            seen = self.visible(parcel)
            if seen and seen[-1].kind == "delivered":
                return _sf_refusal(*_SIGNED_FOR)
            if seen and seen[-1].kind in ("returned", "rejected"):
                return _sf_refusal(*_BACK_ALREADY)
            self._turn(parcel, asked, int(self.clock()))
        return {"success": True, "errorCode": "S0000", "errorMsg": None, "msgData": None}

    def sf_routes_of(self, body: dict[str, Any]) -> dict[str, Any]:
        self.stats["queries"] += 1
        numbers = body.get("trackingNumber") or []
        resps = []
        for number in numbers[:10]:
            parcel = self.parcels.get(str(number))
            routes = self.sf_routes(parcel, self.visible(parcel), 1) if parcel else []
            resps.append({"mailNo": str(number), "routes": [{k: r[k] for k in ("acceptTime", "acceptAddress", "remark", "opCode")} for r in routes]})
        return {"success": True, "errorCode": "S0000", "errorMsg": None, "msgData": {"routeResps": resps}}


def _sf_refusal(code: str, message: str) -> dict[str, Any]:
    return {"success": False, "errorCode": code, "errorMsg": message, "msgData": None}


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def _form(request: Request) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True).items()}


def make_router(state: CarrierSim) -> APIRouter:
    """The carriers' query APIs: mount Kuaidi100 under /kuaidi100 and SF under /sf (routes carry those prefixes)."""
    router = APIRouter()

    @router.post("/kuaidi100/poll")
    async def kuaidi100_subscribe(request: Request) -> Response:
        return _json(state.kuaidi100_subscribe(await _form(request)))

    @router.post("/kuaidi100/poll/query.do")
    async def kuaidi100_query(request: Request) -> Response:
        return _json(state.kuaidi100_query(await _form(request)))

    @router.post("/sf/std/service")
    async def sf_service(request: Request) -> Response:
        return _json(state.sf_service(await _form(request)))

    return router


def make_control_router(state: CarrierSim, http: Callable[[], httpx.AsyncClient]) -> APIRouter:
    """Test and demo controls, mounted under /_sim/carriers (unsigned, like every /_sim control)."""
    router = APIRouter()

    @router.post("/parcels")
    async def add_parcels(request: Request) -> Response:
        """{"parcels": [{waybill_no, carrier, shipped_at (unix s), scenario?, provider?, scans?}], "push"?: bool, "target"?}"""
        try:
            body = orjson.loads(await request.body())
            added = [state.add(str(p["waybill_no"]), str(p.get("carrier") or "SF"), int(p["shipped_at"]), p.get("scenario"),
                               p.get("provider"), p.get("scans")) for p in body["parcels"]]  # fmt: skip
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise HTTPException(400, f'body must be {{"parcels": [{{"waybill_no", "carrier", "shipped_at"}}]}}: {exc}') from None
        pushed = await state.push(http(), body.get("target")) if body.get("push") else None
        return _json({"parcels": [p.as_dict() for p in added], "push": pushed})

    @router.get("/parcels")
    async def list_parcels() -> Response:
        return _json({"items": [p.as_dict() for p in list(state.parcels.values())], "stats": state.stats})

    @router.get("/parcels/{waybill_no}")
    async def one_parcel(waybill_no: str) -> Response:
        parcel = state.parcels.get(waybill_no)
        if parcel is None:
            raise HTTPException(404, f"no parcel {waybill_no}")
        return _json({**parcel.as_dict(), "visible": len(state.visible(parcel))})

    @router.get("/config")
    async def show_config() -> Response:
        return _json(state.config())

    @router.put("/config")
    async def set_config(request: Request) -> Response:
        """{"time_scale"?: 0.0002 (a day in ~17 s), "scenarios"?: {"normal": 0.8, ...}, "push_interval_s"?: 0.5}"""
        try:
            return _json(state.configure(orjson.loads(await request.body())))
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
            raise HTTPException(400, f"bad carriers config: {exc}") from None

    @router.post("/push")
    async def push_now(request: Request) -> Response:
        """{"target"?, "waybill_no"?, "replay"?: bool}: send what is new now (or the last push again)."""
        raw = await request.body()
        body = orjson.loads(raw) if raw else {}
        try:
            return _json(await state.push(http(), body.get("target"), body.get("waybill_no"), bool(body.get("replay"))))
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None

    return router
