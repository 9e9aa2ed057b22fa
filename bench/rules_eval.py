"""The audit rules on their own: time of one rule-set evaluation and of a whole order's decision,
next to the engine's floor measured in the same run (a one-row decision table)."""

from __future__ import annotations

import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from orderhub.adapters.db import migrate
from orderhub.adapters.db.engine import create_engine
from orderhub.adapters.rules.engine import RuleEngine
from orderhub.demo.catalogue import customers, skus
from orderhub.domain.audit import RULE_SETS, AuditLine, AuditOrder, order_context
from orderhub.services.rules import RuleBook

FLOOR = {
    "nodes": [
        {"id": "in", "type": "inputNode", "name": "Request", "position": {"x": 0, "y": 0}},
        {"id": "t", "type": "decisionTableNode", "name": "floor", "position": {"x": 200, "y": 0}, "content": {
            "hitPolicy": "first", "inputs": [{"id": "i", "name": "amount", "field": "amount"}],
            "outputs": [{"id": "o", "name": "x", "field": "x"}], "rules": [{"_id": "r", "i": "> 0", "o": "1"}]}},
        {"id": "out", "type": "outputNode", "name": "Response", "position": {"x": 400, "y": 0}},
    ],
    "edges": [{"id": "a", "sourceId": "in", "targetId": "t", "type": "edge"}, {"id": "b", "sourceId": "t", "targetId": "out", "type": "edge"}],
}


def sample_orders(count: int, seed: int = 7) -> list[AuditOrder]:
    rng = random.Random(seed)
    catalogue, buyers = skus(), customers()
    now = datetime.now(UTC)
    out = []
    for n in range(count):
        picked = rng.sample(catalogue, rng.choice((1, 1, 2, 3)))
        lines = tuple(
            AuditLine(i, s.code, s.title, q, s.price, s.price * q, category=s.category, cost=s.cost, weight_g=s.weight)
            for i, s in enumerate(picked) for q in [rng.randint(1, 3)]
        )
        goods = sum(line.paid for line in lines)
        buyer = rng.choice(buyers)
        region = buyer.region
        out.append(AuditOrder(
            id=f"bench-{n}", channel=rng.choice(("douyin", "taobao", "jd", "pdd", "youzan", "wechat_channels", "kuaishou")), shop_id="s",
            created_at=now - timedelta(minutes=5), paid_at=now, goods=goods, discount=0, shipping=0, paid=goods,
            province=region.province, city=region.city, district=region.district, address_detail="***",
            buyer_level=rng.choice((None, "V1", "V3", "V5")), buyer_message=rng.choice((None, None, "请尽快发货", "需要发票")),
            seller_remark=None, lines=lines,
        ))
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(count: int = 5000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="orderhub-rules-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'rules.db'}"
        migrate.upgrade(url)
        engine = create_engine(url)
        try:
            book = RuleBook(engine)
            book.ensure_defaults()
            live = book.live()
            orders = sample_orders(count)
            contexts = [order_context(o) for o in orders]
            per_set: list[float] = []
            for name in RULE_SETS:
                if name == "split":
                    continue  # evaluated per line, only for orders of several lines
                for context in contexts:
                    t = time.perf_counter()
                    book.rule_engine.evaluate(live.keys[name], context)
                    per_set.append(time.perf_counter() - t)
            whole: list[float] = []
            for order in orders:
                t = time.perf_counter()
                book.decide(order, live=live)
                whole.append(time.perf_counter() - t)
            floor_engine = RuleEngine()
            floor_engine.load("floor@1", FLOOR)
            floor: list[float] = []
            for context in contexts:
                t = time.perf_counter()
                floor_engine.evaluate("floor@1", context)
                floor.append(time.perf_counter() - t)
        finally:
            engine.dispose()
    return {
        "rule_set_eval_p50_us": round(percentile(per_set, 0.5) * 1e6, 1),
        "rule_set_eval_p99_us": round(percentile(per_set, 0.99) * 1e6, 1),
        "rule_set_evals_per_s": round(len(per_set) / sum(per_set)),
        "floor_eval_p99_us": round(percentile(floor, 0.99) * 1e6, 1),
        "floor_evals_per_s": round(len(floor) / sum(floor)),
        "order_decision_p99_us": round(percentile(whole, 0.99) * 1e6, 1),
        "order_decisions_per_s": round(len(whole) / sum(whole)),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(measure(), ensure_ascii=False))
