"""`make bench-peak`: a 双十一-shaped load through the real stack on this machine, per mode.

Modes: `embedded` (one `orderhub serve` on SQLite, the default deployment), `embedded-pg` (the
same on PostgreSQL) and `scaled` (PostgreSQL + NATS JetStream: one `orderhub serve --no-workers`
API node and --workers `orderhub worker` processes). For each mode, on a fresh database:

  1. floors     the same webhook requests against a server that only answers 200 (what the
                senders and HTTP alone reach here); scaled: raw JetStream publishes of as many
                messages from one process, each awaiting its ack as the API node does;
  2. load       --base-rate orders/s for --base-seconds, then a burst of --burst-orders at
                --burst-rate orders/s (≥ 5x), every push signed by the simulator, with cancels,
                duplicate pushes and out-of-order pushes mixed in, sent open-loop on a schedule by
                --senders processes (at most --concurrency requests in flight);
  3. drain      until nothing is pending (inbox backlog + broker lag, sampled from /health every
                0.5 s), every acknowledged order is stored and none waits for its audit;
  4. invariants by SQL: every accepted message processed exactly once, no order stored twice,
                no oversold stock row, reserved == Σ active reservations;
  5. limit      the rows the pipeline wrote loaded into a fresh schema with no logic (PostgreSQL
                COPY, SQLite one batched transaction): the processing ceiling of this machine.

It prints every figure next to its limit and ends with one JSON line per mode.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))

from phases import Push, Sent, first_audits, invariants, measure_limit, percentile, prepare_pushes, send_scheduled  # noqa: E402
from stack import database, stack, trivial_http  # noqa: E402

from orderhub.adapters.db.engine import create_engine  # noqa: E402
from orderhub.adapters.db.tables import orders  # noqa: E402
from orderhub.domain.ids import order_id  # noqa: E402

WEBHOOK_CHANNELS = ["douyin", "youzan", "wechat_channels"]  # pushes the benchmark signs and sends itself
MODES = {"embedded": "sqlite", "embedded-pg": "postgresql", "scaled": "postgresql"}
TARGETS = {"intake_msgs_per_s": 5000, "ready_p99_ms": 1000, "steady_orders_per_s": 1000, "drain_s": 300, "burst_orders": 500_000}


def peak_mix(args: argparse.Namespace) -> dict[str, Any]:
    """Orders created and paid within the last minute; shipping comes hours later, not in a burst."""
    return {"shipped": 0.0, "completed": 0.0, "spread_s": 60, "cancel_after_pay": args.cancels,
            "duplicate_push": args.duplicates, "out_of_order": args.out_of_order}


class Sampler(threading.Thread):
    """Every 0.5 s: /health (inbox backlog, broker lag) and the orders stored / waiting for audit."""

    def __init__(self, hub_url: str, database_url: str) -> None:
        super().__init__(daemon=True)
        self.hub_url, self.database_url = hub_url, database_url
        self.samples: list[tuple[float, int, int, int, int]] = []  # (unix, backlog, broker lag, orders, pending audit)
        self.stopping = threading.Event()

    def run(self) -> None:
        engine = create_engine(self.database_url)
        pending = sa.func.sum(sa.case((orders.c.audit_state == "pending", 1), else_=0))
        try:
            with httpx.Client(timeout=10) as client:
                while not self.stopping.is_set():
                    at = time.time()
                    try:
                        health = client.get(f"{self.hub_url}/api/v1/health").json()
                        with engine.connect() as conn:
                            stored, waiting = conn.execute(sa.select(sa.func.count(), pending).select_from(orders)).one()
                        lag = (health.get("broker") or {}).get("lag", 0)
                        self.samples.append((at, health.get("backlog", 0), lag, stored, waiting or 0))
                    except (httpx.HTTPError, ValueError, sa.exc.DBAPIError):
                        pass  # a busy moment: the next sample counts
                    self.stopping.wait(max(0.0, at + 0.5 - time.time()))
        finally:
            engine.dispose()

    def processed_at(self, t: float) -> int:
        """Orders stored and audited (or needing no audit) at the last sample before `t`."""
        sample = self._at(t)
        return sample[3] - sample[4] if sample else 0

    def stored_at(self, t: float) -> int:
        sample = self._at(t)
        return sample[3] if sample else 0

    def _at(self, t: float) -> tuple[float, int, int, int, int] | None:
        before = [s for s in self.samples if s[0] <= t] or self.samples[:1]
        return before[-1] if before else None


def wait_drained(hub_url: str, database_url: str, expected: int, timeout: float, stall_s: float = 120.0) -> float | None:
    """Unix time when nothing was pending any more (backlog + broker lag 0, every expected order
    stored, none waiting for audit); None if that never came, or nothing moved for `stall_s`."""
    engine = create_engine(database_url)
    deadline, last, moved = time.time() + timeout, None, time.time()
    pending = sa.func.sum(sa.case((orders.c.audit_state == "pending", 1), else_=0))
    try:
        while time.time() < deadline:
            health = httpx.get(f"{hub_url}/api/v1/health", timeout=30).json()
            lag = health.get("backlog", 1) + (health.get("broker") or {}).get("lag", 0)
            with engine.connect() as conn:
                stored, waiting = conn.execute(sa.select(sa.func.count(), pending).select_from(orders)).one()
            if lag == 0 and stored >= expected and not waiting:
                return time.time()
            if (lag, stored, waiting) != last:
                last, moved = (lag, stored, waiting), time.time()
            elif time.time() - moved > stall_s:
                print(f"  stalled: lag {lag}, {stored}/{expected} orders stored, {waiting} waiting for audit", flush=True)
                return None
            time.sleep(0.25)
    finally:
        engine.dispose()
    return None


def nats_publish_floor(broker_url: str, prefix: str, bodies: list[bytes], concurrency: int) -> dict[str, float]:
    """Raw JetStream publishes of the same bytes (file storage, a message id for deduplication as
    the product sends), `concurrency` in flight, each awaiting its ack; one Python process."""
    import nats
    from nats.js.api import RetentionPolicy, StorageType, StreamConfig

    async def run() -> dict[str, float]:
        nc = await nats.connect(broker_url)
        js = nc.jetstream()
        stream = f"{prefix.upper()}_FLOOR"
        await js.add_stream(StreamConfig(name=stream, subjects=[f"{prefix}.floor.*"], retention=RetentionPolicy.LIMITS,
                                         storage=StorageType.FILE, duplicate_window=120.0))
        latencies: list[float] = []
        queue = list(enumerate(bodies))

        async def publisher() -> None:
            while queue:
                i, body = queue.pop()
                started = time.perf_counter()
                await js.publish(f"{prefix}.floor.{i % 16}", body, headers={"Nats-Msg-Id": uuid.uuid4().hex}, timeout=10)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        try:
            await asyncio.gather(*(publisher() for _ in range(concurrency)))
            seconds = time.perf_counter() - started
        finally:
            await js.delete_stream(stream)
            await nc.close()
        return {"msgs_per_s": len(bodies) / seconds, "p99_ms": percentile(latencies, 0.99) * 1000}

    return asyncio.run(run())


def cpu_ticks(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each process, and of the whole machine (`machine`: busy, all cores)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            out[name] = 0.0
    total = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    out["machine"] = (sum(total) - total[3] - total[4]) / tick  # all but idle and iowait
    return out


def rate_per_second(times: list[float]) -> int:
    """The busiest whole second of `times` (acknowledgements per second at the peak)."""
    return max(Counter(int(t) for t in times).values(), default=0)


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    backend = MODES[mode]
    scaled = mode == "scaled"
    print(f"\n=== {mode} ({backend}{' + ' + args.broker_url + f', 1 API + {args.workers} workers' if scaled else ', one process'}) ===",
          flush=True)
    keep = Path(args.keep_logs) / mode if args.keep_logs else None
    with stack(backend, broker_url=args.broker_url if scaled else None, workers=args.workers, partitions=args.partitions, keep_logs=keep) as s:
        hub, sim, db_url, workdir = s["hub"], s["sim"], s["database_url"], Path(s["workdir"])
        n_base, n_burst = int(args.base_rate * args.base_seconds), args.burst_orders
        t = time.perf_counter()
        base = prepare_pushes(sim, n_base, seed=args.seed, mix=peak_mix(args), channels=WEBHOOK_CHANNELS).webhooks
        burst = prepare_pushes(sim, n_burst, seed=args.seed + 1, mix=peak_mix(args), channels=WEBHOOK_CHANNELS).webhooks
        burst_seconds = n_burst / args.burst_rate
        pushes = base + burst
        offsets = [i * args.base_seconds / len(base) for i in range(len(base))]
        offsets += [args.base_seconds + j * burst_seconds / len(burst) for j in range(len(burst))]
        print(f"prepared {len(base)} pushes for {n_base} baseline orders ({len(base) / args.base_seconds:.0f} msg/s for {args.base_seconds:.0f} s) "
              f"and {len(burst)} for {n_burst} burst orders ({len(burst) / burst_seconds:.0f} msg/s for {burst_seconds:.1f} s) "
              f"in {time.perf_counter() - t:.1f}s", flush=True)

        floor_pushes = burst[: args.floor_messages]
        with trivial_http(workdir) as trivial:
            floor = send_scheduled(trivial, floor_pushes, [0.0] * len(floor_pushes), processes=args.senders, concurrency=args.concurrency)
        floor_rate, floor_p99 = _rate(floor, range(len(floor_pushes))), _p99_ms(floor, range(len(floor_pushes)))
        print(f"floor: the same requests against a trivial endpoint {floor_rate:.0f} msg/s (p99 {floor_p99:.1f} ms), "
              f"senders' CPU {floor.cpu_s:.1f} s", flush=True)
        nats_floor = None
        if scaled:
            from orderhub.adapters.broker.envelope import Envelope

            now = datetime.now(UTC)
            frames = [Envelope(Envelope.new_key(), p.channel, None, "push", now, p.body).encode() for p in floor_pushes]
            nats_floor = nats_publish_floor(args.broker_url, s["broker_prefix"], frames, args.concurrency)
            print(f"floor: raw JetStream publish {nats_floor['msgs_per_s']:.0f} msg/s (p99 {nats_floor['p99_ms']:.1f} ms)", flush=True)

        cpu_before = cpu_ticks(s["pids"])
        sampler = Sampler(hub, db_url)
        sent = send_scheduled(hub, pushes, offsets, processes=args.senders, concurrency=args.concurrency, on_start=sampler.start)
        base_ix, burst_ix = range(len(base)), range(len(base), len(pushes))
        ok = [i for i, status in enumerate(sent.status) if status == 200]
        burst_start = min(sent.sent_at[i] for i in burst_ix)
        burst_end = max(sent.acked_at[i] for i in burst_ix)
        print(f"load sent: {len(ok)}/{len(pushes)} accepted, senders at most {sent.late_s:.1f} s behind schedule, "
              f"senders' CPU {sent.cpu_s:.1f} s", flush=True)
        accepted_orders = {(pushes[i].channel, pushes[i].original_id) for i in ok}
        drained_at = wait_drained(hub, db_url, len(accepted_orders), args.timeout)
        sampler.stopping.set()
        sampler.join()
        cpu_after = cpu_ticks(s["pids"])
        health = httpx.get(f"{hub}/api/v1/health", timeout=30).json()
        # scaled: a push is published as one broker message per order it names; the API node counts them
        accepted_messages = health["inbox_commits"] if scaled else len(ok)
        checks = invariants(db_url, accepted_orders, accepted_messages)
        ready = ready_latencies(pushes, sent, first_audits(db_url), len(base))
        with database(backend, workdir / "limit") as limit_url:
            (workdir / "limit").mkdir(exist_ok=True)
            limit = measure_limit(db_url, limit_url)
        print(f"limit: {limit['orders']} orders' rows loaded in {limit['seconds']:.2f}s = {limit['orders_per_s']:.0f} orders/s", flush=True)

    load = Load(pushes, sent, base_ix, burst_ix, burst_start, burst_end, drained_at, sampler)
    cpu = {name: round(cpu_after[name] - cpu_before.get(name, 0.0), 1) for name in cpu_after}
    return summarise(mode, backend, args, load, floor_rate, floor_p99, nats_floor, checks, ready, limit, cpu)


@dataclass
class Load:
    pushes: list[Push]
    sent: Sent
    base: range  # indexes of the baseline pushes
    burst: range
    burst_start: float  # unix: first burst push sent
    burst_end: float  # unix: last burst push acknowledged
    drained_at: float | None
    sampler: Sampler


def _rate(sent: Sent, indexes: range) -> float:
    """Acknowledged pushes per second, from the first one sent to the last one acknowledged."""
    acked = [sent.acked_at[i] for i in indexes if sent.status[i] == 200]
    if not acked:
        return 0.0
    return len(acked) / (max(acked) - min(sent.sent_at[i] for i in indexes))


def _p99_ms(sent: Sent, indexes: range, q: float = 0.99) -> float:
    return percentile([sent.acked_at[i] - sent.sent_at[i] for i in indexes if sent.status[i] == 200], q) * 1000


def ready_latencies(pushes: list[Push], sent: Sent, audited: dict[str, float], base_count: int) -> dict[str, Any]:
    """Per order: its first push's acceptance -> its first audit decision, by the phase the order
    came in. An order the pipeline read through a neighbour's list-API window before its own push
    was accepted is counted apart (`ahead`), not as 0; orders never audited (cancelled, closed or
    shipped before their audit) are not timed."""
    first: dict[str, tuple[float, int]] = {}
    for i, push in enumerate(pushes):
        if sent.status[i] == 200:
            oid = order_id(push.channel, push.original_id)
            if oid not in first or sent.acked_at[i] < first[oid][0]:
                first[oid] = (sent.acked_at[i], i)
    latencies: dict[str, list[float]] = {"base": [], "burst": []}
    ahead: Counter[str] = Counter()
    for oid, (acked, index) in first.items():
        if oid not in audited:
            continue
        phase = "base" if index < base_count else "burst"
        if audited[oid] < acked:
            ahead[phase] += 1
        else:
            latencies[phase].append(audited[oid] - acked)
    timed = sum(len(v) for v in latencies.values()) + sum(ahead.values())
    return {"latencies": latencies, "ahead": dict(ahead), "not_audited": len(first) - timed}


def summarise(
    mode: str, backend: str, args: argparse.Namespace, load: Load, floor_rate: float, floor_p99: float,
    nats_floor: dict[str, float] | None, checks: dict[str, Any], ready: dict[str, Any], limit: dict[str, Any], cpu: dict[str, float],
) -> dict[str, Any]:
    sent, sampler = load.sent, load.sampler
    n_base_orders = len({(load.pushes[i].channel, load.pushes[i].original_id) for i in load.base})
    n_burst_orders = len({(load.pushes[i].channel, load.pushes[i].original_id) for i in load.burst})
    base_end = max(sent.acked_at[i] for i in load.base)
    base_orders_per_s = n_base_orders / (base_end - sent.started_at)
    burst_seconds = load.burst_end - load.burst_start
    burst_orders_per_s = n_burst_orders / burst_seconds
    end = load.drained_at or (sampler.samples[-1][0] if sampler.samples else load.burst_end)
    processed_end = checks["orders_stored"] - checks["pending_audit"]
    during = (sampler.processed_at(load.burst_end) - sampler.processed_at(load.burst_start)) / burst_seconds
    stored_during = (sampler.stored_at(load.burst_end) - sampler.stored_at(load.burst_start)) / burst_seconds
    drain_s = None if load.drained_at is None else max(0.0, load.drained_at - load.burst_end)
    after = (processed_end - sampler.processed_at(load.burst_end)) / drain_s if drain_s else None
    # a 500,000-order burst at the intake rate measured here, drained at the rates measured here
    big = TARGETS["burst_orders"]
    backlog_at_end = max(0.0, big - during * big / burst_orders_per_s)
    big_drain_s = backlog_at_end / after if after else None
    lat = ready["latencies"]
    burst_acks = [sent.acked_at[i] for i in load.burst if sent.status[i] == 200]
    r = {
        "mode": mode,
        "backend": backend,
        "date": date.today().isoformat(),
        "accepted_msgs_per_s": round(_rate(sent, load.burst)),  # during the burst
        "processed_orders_per_s": round((processed_end - sampler.processed_at(load.burst_start)) / (end - load.burst_start)),
        "accept_p99_ms": round(_p99_ms(sent, load.burst), 1),  # during the burst
        "ready_p99_ms": _ms(percentile(lat["base"], 0.99)),  # at the steady baseline rate
        "max_lag": max((s[1] + s[2] for s in sampler.samples), default=0),
        "drain_s": None if drain_s is None else round(drain_s, 1),
        # not drained: `lost` counts what was still unprocessed when the benchmark gave up waiting
        "drained": load.drained_at is not None,
        "lost": checks["lost"],
        "duplicated": checks["duplicated"],
        "oversold": checks["oversold"],
        "reserved_mismatch": checks["reserved_mismatch"],
        "cancelled_holding_stock": checks["cancelled_holding_stock"],
        "orders": checks["orders_stored"],
        "messages": len(load.pushes),
        "accepted_messages": checks["accepted_messages"],
        "quarantined": checks["quarantined"],
        "base_orders_per_s": round(base_orders_per_s),
        "base_msgs_per_s": round(_rate(sent, load.base)),
        "burst_orders_per_s": round(burst_orders_per_s),
        "burst_factor": round(burst_orders_per_s / base_orders_per_s, 1),
        "burst_peak_second_msgs": rate_per_second(burst_acks),
        "accept_p50_ms": round(_p99_ms(sent, load.burst, 0.5), 1),
        "base_accept_p99_ms": round(_p99_ms(sent, load.base), 1),
        "ready_p50_ms": _ms(percentile(lat["base"], 0.5)),
        "burst_ready_p50_ms": _ms(percentile(lat["burst"], 0.5)),
        "burst_ready_p99_ms": _ms(percentile(lat["burst"], 0.99)),
        "ready_timed": {k: len(v) for k, v in lat.items()},
        "ready_ahead": ready["ahead"],
        "senders_behind_s": round(sent.late_s, 2),
        "http_floor_msgs_per_s": round(floor_rate),
        "http_floor_p99_ms": round(floor_p99, 1),
        "nats_floor_msgs_per_s": None if nats_floor is None else round(nats_floor["msgs_per_s"]),
        "limit_orders_per_s": round(limit["orders_per_s"]),
        "processing_during_burst_orders_per_s": round(during),
        "stored_during_burst_orders_per_s": round(stored_during),
        "drain_orders_per_s": None if after is None else round(after),
        "drain_500k_est_s": None if big_drain_s is None else round(big_drain_s),
        "cpu_s": cpu,
        "senders_cpu_s": round(sent.cpu_s, 1),
        "load_seconds": round(end - sent.started_at, 1),
        "loadavg_end": Path("/proc/loadavg").read_text().split()[0],
    }
    print_mode(r, checks)
    return r


def _ms(seconds: float) -> float | None:
    return None if seconds != seconds else round(seconds * 1000, 1)  # nan: nothing timed


def print_mode(r: dict[str, Any], checks: dict[str, Any]) -> None:
    ours = sum(v for k, v in r["cpu_s"].items() if k != "machine") + r["senders_cpu_s"]
    print(f"intake: baseline {r['base_orders_per_s']} orders/s ({r['base_msgs_per_s']} msg/s, accept p99 {r['base_accept_p99_ms']} ms); "
          f"burst {r['burst_orders_per_s']} orders/s = {r['burst_factor']}x, {r['accepted_msgs_per_s']} msg/s accepted "
          f"(busiest second {r['burst_peak_second_msgs']}) — floor {r['http_floor_msgs_per_s']} msg/s (trivial endpoint, same senders)"
          + (f", raw JetStream publish {r['nats_floor_msgs_per_s']} msg/s" if r["nats_floor_msgs_per_s"] else "")
          + f"; accept p50 {r['accept_p50_ms']} ms p99 {r['accept_p99_ms']} ms (floor p99 {r['http_floor_p99_ms']} ms)", flush=True)
    print(f"processing: {r['processed_orders_per_s']} orders/s from the burst's start to drained "
          f"({r['processing_during_burst_orders_per_s']} during the burst, of {r['stored_during_burst_orders_per_s']} stored; "
          f"{r['drain_orders_per_s']} after it) "
          f"— limit {r['limit_orders_per_s']} orders/s (same rows, no logic)", flush=True)
    print(f"acceptance -> ready: baseline p50 {r['ready_p50_ms']} ms p99 {r['ready_p99_ms']} ms; burst p50 {r['burst_ready_p50_ms']} ms "
          f"p99 {r['burst_ready_p99_ms']} ms (timed {r['ready_timed']}, read ahead by a list window {r['ready_ahead']})", flush=True)
    est = r["drain_500k_est_s"]
    print(f"lag: max {r['max_lag']}, drained {r['drain_s']} s after the burst's end; a {TARGETS['burst_orders']:,}-order burst at these rates "
          f"would drain in {'?' if est is None else f'{est:,} s'} (target {TARGETS['drain_s']} s)", flush=True)
    if not r["drained"]:
        print("NOT DRAINED: the benchmark gave up waiting (see `stalled` above); `lost` below counts what was still unprocessed then, "
              "which is not proof that it is gone", flush=True)
    print(f"invariants: lost {r['lost']}, duplicated {r['duplicated']}, oversold {r['oversold']}, reserved != Σ active reservations "
          f"{r['reserved_mismatch']}, cancelled orders holding stock {r['cancelled_holding_stock']}; "
          f"{checks['inbox_done']}/{checks['accepted_messages']} accepted messages processed, {checks['orders_stored']} orders "
          f"({checks['orders_missing']} acknowledged orders missing), {checks['quarantined']} quarantined", flush=True)
    print(f"cpu over {r['load_seconds']} s: machine {r['cpu_s']['machine']} core-s busy, this benchmark's processes {ours:.0f} "
          f"({', '.join(f'{k} {v}' for k, v in r['cpu_s'].items() if k != 'machine')}, senders {r['senders_cpu_s']}; "
          f"PostgreSQL and NATS not counted); load average {r['loadavg_end']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="embedded,scaled", help=f"comma-separated: {', '.join(MODES)}")
    parser.add_argument("--base-rate", type=float, default=50.0, help="baseline orders/s (the issue's steady target: 1000)")
    parser.add_argument("--base-seconds", type=float, default=30.0)
    parser.add_argument("--burst-rate", type=float, default=2500.0, help="burst orders/s asked of the senders (≥ 5x --base-rate)")
    parser.add_argument("--burst-orders", type=int, default=10_000, help="orders in the burst (the issue's: 500000)")
    parser.add_argument("--cancels", type=float, default=0.08, help="share of orders cancelled after payment")
    parser.add_argument("--duplicates", type=float, default=0.10, help="share of orders with one push sent twice")
    parser.add_argument("--out-of-order", type=float, default=0.05, help="share of orders whose paid push arrives after the next one")
    parser.add_argument("--senders", type=int, default=2, help="sender processes")
    parser.add_argument("--concurrency", type=int, default=256, help="requests in flight, all senders together")
    parser.add_argument("--workers", type=int, default=2, help="scaled mode: `orderhub worker` processes")
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--broker-url", default=os.environ.get("ORDERHUB_BENCH_BROKER", "nats://127.0.0.1:4222"))
    parser.add_argument("--floor-messages", type=int, default=20_000, help="requests sent to the trivial endpoint / raw publishes")
    parser.add_argument("--seed", type=int, default=1111)
    parser.add_argument("--timeout", type=float, default=3600.0, help="longest wait for the drain")
    parser.add_argument("--keep-logs", help="copy the processes' logs (hub, sim, workers) into this directory, one folder per mode")
    args = parser.parse_args()
    if args.burst_rate < 5 * args.base_rate:
        parser.error("--burst-rate must be at least 5x --base-rate")
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown modes {unknown}: use {', '.join(MODES)}")
    print(f"peak benchmark {date.today().isoformat()} on {os.cpu_count()} cores, load average {Path('/proc/loadavg').read_text().split()[0]}",
          flush=True)
    results = [run_mode(mode, args) for mode in modes]
    print("\n| mode | burst msg/s (floor) | accept p50/p99 ms | processed orders/s (limit) | ready p50/p99 ms steady | "
          "ready p99 ms burst | max lag | drain s | 500k drain est s | lost | duplicated | oversold | reserved≠Σ |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['mode']} | {r['accepted_msgs_per_s']} ({r['http_floor_msgs_per_s']}) | {r['accept_p50_ms']}/{r['accept_p99_ms']} | "
              f"{r['processed_orders_per_s']} ({r['limit_orders_per_s']}) | {r['ready_p50_ms']}/{r['ready_p99_ms']} | {r['burst_ready_p99_ms']} | "
              f"{r['max_lag']} | {r['drain_s']} | {r['drain_500k_est_s']} | {r['lost']} | {r['duplicated']} | {r['oversold']} | "
              f"{r['reserved_mismatch']} |")
    print()
    for r in results:
        print(json.dumps(r, ensure_ascii=False))


if __name__ == "__main__":
    main()
