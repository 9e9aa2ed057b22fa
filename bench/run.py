"""`make bench`: OrderHub's pipeline measured on this machine, next to the same-run limit.

For each backend (SQLite, PostgreSQL) it starts the real stack (platform simulator and
OrderHub as separate processes), then measures:
  1. intake      N pushes, one per HTTP request, C concurrent senders, workers paused;
  2. processing  the workers drain that backlog (fetching details from the simulator, pulling JD);
  3. latency     a steady R messages/s for S seconds with workers running: ack -> stored order;
  4. limit       the rows the pipeline wrote, loaded again with no logic (COPY / one transaction).
Processing includes the audit (rules, allocation, stock reservation): an order counts once it is
stored and no longer waits for audit. The rules are also timed on their own, next to the
engine's floor (a one-row table) in the same run. Then interception (bench/interception.py):
a burst of paid orders at the simulated WMS (packing ~20 s), each cancelled at a random point,
timing cancel stored -> freeze received by the WMS, and counting cancels intercepted and cancels
that arrived before packing yet came too late (must be 0). It prints a table and ends with one
JSON line per backend.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import date
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))

from phases import (  # noqa: E402
    audit_outcomes, count_orders, measure_limit, percentile, prepare_pushes, send_all, send_at_rate, stored_latencies, wait_drained,
    wait_streams_confirmed,
)
from interception import run as run_interception  # noqa: E402
from rules_eval import measure as measure_rules  # noqa: E402
from stack import database, stack  # noqa: E402


# A sales peak as it reaches the hub: orders created and paid within the last minute, with the
# usual cancels, address changes, refunds, duplicate and late pushes. Shipping and completion
# come hours later and are not part of a burst.
PEAK_MIX = {"shipped": 0.0, "completed": 0.0, "spread_s": 60}
# Channels that announce orders by message: webhooks the benchmark sends (抖店, 有赞, encrypted
# 视频号小店) and streams the simulator serves to OrderHub's own connections (淘宝 TMC, 拼多多 PMC).
PUSH_CHANNELS = ["douyin", "taobao", "pdd", "youzan", "wechat_channels"]
WEBHOOK_CHANNELS = ["douyin", "youzan", "wechat_channels"]
PULL_CHANNELS = ["jd", "kuaishou"]


INTERCEPTION_KEYS = ("cancels", "intercepted", "too_late", "arrived_before_packing", "too_late_before_packing",
                     "cancel_to_freeze_p50_ms", "cancel_to_freeze_p99_ms")


def bench_backend(backend: str, args: argparse.Namespace, rules: dict) -> dict:
    print(f"\n=== {backend} ===", flush=True)
    pulled_orders = int(args.orders * args.pull_share)

    def create_pulled_orders(sim_url: str) -> None:
        # JD and 快手 are pulled: their orders exist on the platform before OrderHub's first sync
        if pulled_orders:
            httpx.post(f"{sim_url}/_sim/generate", json={"count": pulled_orders, "channels": PULL_CHANNELS, "deliver": False},
                       timeout=600).raise_for_status()

    with stack(backend, before_hub=create_pulled_orders) as s:
        hub, sim, db_url = s["hub"], s["sim"], s["database_url"]
        httpx.post(f"{hub}/api/v1/workers/pause", headers=s["headers"], timeout=30).raise_for_status()
        t = time.perf_counter()
        prepared = prepare_pushes(sim, args.orders, seed=args.seed, mix=PEAK_MIX, channels=PUSH_CHANNELS)
        pushes = prepared.webhooks
        ids = {(p.channel, p.original_id) for p in pushes} | set(prepared.streamed)
        print(f"prepared {len(pushes)} webhook pushes and {len(prepared.streamed)} stream messages for {len(ids)} orders "
              f"(+{pulled_orders} JD/快手 orders to pull) in {time.perf_counter() - t:.1f}s", flush=True)

        # The simulator releases its stream messages as the webhooks start; OrderHub's connections
        # take them meanwhile: intake ends when both are kept.
        intake = asyncio.run(send_all(hub, pushes, args.concurrency, sim_url=sim))
        stream_tail = wait_streams_confirmed(sim, args.timeout)
        total_s = intake["seconds"] + stream_tail
        intake["all_msgs_per_s"] = (len(pushes) + len(prepared.streamed)) / total_s
        print(f"intake: webhooks {intake['msgs_per_s']:.0f} msg/s (ack p50 {intake['ack_p50_ms']:.1f} ms p99 {intake['ack_p99_ms']:.1f} ms, "
              f"failures {intake['failures']}); with the stream messages {intake['all_msgs_per_s']:.0f} msg/s kept", flush=True)

        expected = len(ids) + pulled_orders
        httpx.post(f"{hub}/api/v1/workers/resume", headers=s["headers"], timeout=30).raise_for_status()
        seconds = wait_drained(hub, db_url, expected, timeout=args.timeout)
        processed = count_orders(db_url)
        e2e = processed / seconds
        outcomes = audit_outcomes(db_url)
        print(f"processing (with audit): {processed} orders in {seconds:.1f}s = {e2e:.0f} orders/s; "
              f"statuses {dict(sorted(outcomes.items()))}", flush=True)

        latency = {"stored_p50_ms": None, "stored_p99_ms": None, "msgs_per_s": 0.0}
        if args.latency_seconds > 0:
            # New orders arriving live: each is created on the platform as its push is sent.
            count = int(args.latency_rate * args.latency_seconds)
            delay = 10 + count / 5000  # preparing takes about 0.2 ms an order
            live = {**PEAK_MIX, "start_rate": args.latency_rate, "start_delay_s": delay, "first_push": True}
            prepared_at = time.time()
            # webhooks only: the benchmark times each push it sends (stream messages go out at once)
            steady = prepare_pushes(sim, count, seed=args.seed + 1, mix=live, channels=WEBHOOK_CHANNELS).webhooks
            time.sleep(max(0.0, prepared_at + delay - time.time()))  # send each push as its order appears
            acked = asyncio.run(send_at_rate(hub, steady, args.latency_rate))
            wait_drained(hub, db_url, 0, timeout=args.timeout)
            values = stored_latencies(db_url, acked)
            latency = {"stored_p50_ms": percentile(values, 0.5) * 1000, "stored_p99_ms": percentile(values, 0.99) * 1000,
                       "msgs_per_s": len(steady) / args.latency_seconds}
            print(
                f"latency at {latency['msgs_per_s']:.0f} msg/s ({len(values)} new orders): "
                f"stored p50 {latency['stored_p50_ms']:.0f} ms p99 {latency['stored_p99_ms']:.0f} ms",
                flush=True,
            )

        with database(backend, Path(s["workdir"]) / "limit") as limit_url:
            Path(s["workdir"], "limit").mkdir(exist_ok=True)
            limit = measure_limit(db_url, limit_url)
        print(f"limit: {limit['orders']} orders' rows loaded in {limit['seconds']:.2f}s = {limit['orders_per_s']:.0f} orders/s", flush=True)

    return {
        "backend": backend,
        "date": date.today().isoformat(),
        "orders": processed,
        "messages": len(pushes) + len(prepared.streamed),
        "stream_messages": len(prepared.streamed),
        "intake_msgs_per_s": round(intake["msgs_per_s"]),  # webhooks, each its own HTTP request
        "intake_all_msgs_per_s": round(intake["all_msgs_per_s"]),  # webhooks + stream messages kept
        "ack_p50_ms": round(intake["ack_p50_ms"], 2),
        "ack_p99_ms": round(intake["ack_p99_ms"], 2),
        "intake_failures": intake["failures"],
        "e2e_orders_per_s": round(e2e),
        "limit_orders_per_s": round(limit["orders_per_s"]),
        "e2e_vs_limit": round(e2e / limit["orders_per_s"], 3),
        "latency_msgs_per_s": round(latency["msgs_per_s"]),
        "stored_p50_ms": None if latency["stored_p50_ms"] is None else round(latency["stored_p50_ms"], 1),
        "stored_p99_ms": None if latency["stored_p99_ms"] is None else round(latency["stored_p99_ms"], 1),
        "statuses": dict(sorted(outcomes.items())),
        **rules,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=100_000, help="orders announced by pushes in the intake phase (about 2.5 pushes each)")
    parser.add_argument("--pull-share", type=float, default=0.15, help="extra JD and 快手 orders (pulled), as a share of --orders")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-rate", type=float, default=1000.0)
    parser.add_argument("--latency-seconds", type=float, default=60.0)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--seed", type=int, default=1111)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--cancels", type=int, default=200, help="interception: paid orders, each cancelled once")
    parser.add_argument("--pack-s", type=float, default=20.0, help="interception: picking start -> packed at the simulated WMS")
    args = parser.parse_args()
    rules = measure_rules()
    print(f"rules: one rule-set evaluation p50 {rules['rule_set_eval_p50_us']} µs p99 {rules['rule_set_eval_p99_us']} µs "
          f"({rules['rule_set_evals_per_s']}/s; engine floor p99 {rules['floor_eval_p99_us']} µs, {rules['floor_evals_per_s']}/s); "
          f"a whole order's decision p99 {rules['order_decision_p99_us']} µs ({rules['order_decisions_per_s']}/s)", flush=True)
    results = [bench_backend(backend, args, rules) for backend in args.backends.split(",")]
    for r in results:
        found = asyncio.run(run_interception(r["backend"], args.cancels, args.pack_s, args.seed))
        r.update({key: found[key] for key in INTERCEPTION_KEYS})
    print("\n| backend | cancels | intercepted | too late | arrived before packing | too late before packing | cancel→freeze p50/p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['backend']} | {r['cancels']} | {r['intercepted']} | {r['too_late']} | {r['arrived_before_packing']} | "
              f"{r['too_late_before_packing']} | {r['cancel_to_freeze_p50_ms']}/{r['cancel_to_freeze_p99_ms']} |")
    print("\n| backend | orders | intake msg/s | ack p50/p99 ms | e2e orders/s | limit orders/s | e2e/limit | stored p50/p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['backend']} | {r['orders']} | {r['intake_msgs_per_s']} | {r['ack_p50_ms']}/{r['ack_p99_ms']} | "
            f"{r['e2e_orders_per_s']} | {r['limit_orders_per_s']} | {r['e2e_vs_limit']:.0%} | {r['stored_p50_ms']}/{r['stored_p99_ms']} |"
        )
    print()
    for r in results:
        print(json.dumps(r, ensure_ascii=False))


if __name__ == "__main__":
    main()
