"""Jobs on a real database (SQLite and PostgreSQL): throttled progress, the heartbeat of a busy job,
its end (report, error code), a job whose process is gone, and an import followed row by row."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from orderhub.adapters.db import jobs_repo
from orderhub.adapters.db.inbox import claim
from orderhub.adapters.db.tables import jobs
from orderhub.bootstrap import Runtime
from orderhub.config import Settings
from orderhub.domain.access import Actor
from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.services import imports
from orderhub.services.jobs import BACKTEST, IMPORT, JobRunner, Progress, read_job

POS_MAPPING = {
    "channel": "pos",
    "columns": {"order_no": "订单号", "created_at": "下单时间", "paid_at": "付款时间", "sku": "商品编码", "title": "商品名称",
                "qty": "数量", "unit_price": "单价", "paid": "实付"},
}


def pos_file(n: int, *, bad: set[int] = frozenset()) -> bytes:
    """`n` one-line POS orders paid an hour ago; the orders in `bad` say they were paid more than they cost."""
    at = (datetime.now(UTC) + timedelta(hours=7)).strftime("%Y-%m-%d %H:%M:%S")  # Asia/Shanghai, an hour ago
    lines = ["订单号,下单时间,付款时间,商品编码,商品名称,数量,单价,实付"]
    lines += [f"JOB-{i:05d},{at},{at},SKU-1,咖啡,1,18.00,{'99.00' if i in bad else '18.00'}" for i in range(n)]
    return ("\n".join(lines) + "\n").encode()



def eventually(probe, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what} within {timeout}s"
        time.sleep(0.01)


def row(engine, job_id: int) -> dict:
    with engine.connect() as conn:
        return jobs_repo.get(conn, job_id)


def new_job(engine, kind: str = BACKTEST, *, at: datetime | None = None, params: dict | None = None, total: int | None = None) -> int:
    with engine.begin() as conn:
        return jobs_repo.insert(conn, kind=kind, created_by="tests", params=params, now=at or datetime.now(UTC), total=total)


def test_progress_writes_the_first_call_then_at_most_every_half_second(engine):
    job_id = new_job(engine)
    now = [0.0]
    progress = Progress(engine, job_id, every_s=0.5, clock=lambda: now[0])
    for i in range(1000):
        now[0] = i / 100  # ten seconds of reports, one every 10 ms
        progress(i + 1, 1000)
    assert progress.writes == 20  # t = 0, 0.5, 1.0 … 9.5 s: not 1000
    stored = row(engine, job_id)
    assert (stored["state"], stored["done"], stored["total"]) == ("running", 951, 1000)  # the write at t = 9.5 s
    assert (progress.done, progress.total) == (1000, 1000)  # remembered for the job's end


def test_a_running_job_shows_its_progress_beats_while_busy_and_ends_with_its_report(engine):
    runner = JobRunner(engine, heartbeat_s=0.05, progress_every_s=0)
    release = threading.Event()

    def work(progress):
        progress(0, 3)
        progress(1, 3)
        assert release.wait(10)
        return {"orders": 3, "changed": 1}

    job_id = runner.start(BACKTEST, work, actor=Actor("ops-lead", "user"), params={"rule_set": "routing"})
    seen = eventually(lambda: (j := read_job(engine, job_id, BACKTEST))["done"] == 1 and j, "progress 1/3")
    assert (seen["state"], seen["total"], seen["percent"], seen["result"], seen["created_by"]) == ("running", 3, 33, None, "ops-lead")
    before = row(engine, job_id)["updated_at"]
    eventually(lambda: row(engine, job_id)["updated_at"] > before, "a heartbeat while the work is busy")
    release.set()
    done = eventually(lambda: (j := read_job(engine, job_id, BACKTEST))["state"] == "done" and j, "the end")
    assert (done["done"], done["total"], done["percent"], done["result"], done["error"]) == (3, 3, 100, {"orders": 3, "changed": 1}, None)
    assert done["finished_at"] and done["params"] == {"rule_set": "routing"}
    eventually(lambda: not runner.running(), "the runner forgets the job")


def test_a_job_that_raises_fails_with_its_error_code_or_job_failed(engine):
    runner = JobRunner(engine, heartbeat_s=0.05)

    def invalid(progress):
        progress(0, 10)
        raise OrderHubError(ErrorCode.RULE_INVALID, "node 3 has no output", "content")

    def broken(_progress):
        raise ZeroDivisionError("division by zero")

    first, second = runner.start(BACKTEST, invalid), runner.start(BACKTEST, broken)
    failed = eventually(lambda: (j := read_job(engine, first, BACKTEST))["state"] == "failed" and j, "the first failure")
    assert failed["error"] == {"code": "rule_invalid", "message": "node 3 has no output", "field": "content"}
    assert (failed["done"], failed["total"], failed["percent"], failed["result"]) == (0, 10, 0, None)
    crashed = eventually(lambda: (j := read_job(engine, second, BACKTEST))["state"] == "failed" and j, "the second failure")
    assert crashed["error"] == {"code": "job_failed", "message": "ZeroDivisionError: division by zero", "field": None}


def test_a_job_left_running_by_a_process_that_is_gone_reads_failed_and_a_late_end_does_not_revive_it(engine):
    now = datetime.now(UTC)
    silent = new_job(engine, at=now - timedelta(minutes=5), total=100)
    alive = new_job(engine, at=now - timedelta(seconds=10), total=100)
    given_up = read_job(engine, silent, BACKTEST, now=now)
    assert (given_up["state"], given_up["error"]["code"], given_up["percent"]) == ("failed", "job_abandoned", 0)
    assert row(engine, silent)["state"] == "failed" and row(engine, silent)["finished_at"] is not None  # recorded, not only shown
    assert read_job(engine, alive, BACKTEST, now=now)["state"] == "running"  # ten seconds of silence is a busy process
    with engine.begin() as conn:  # the old process wakes up after all: too late
        assert not jobs_repo.finish(conn, silent, state="done", now=now, done=100, total=100, result={"orders": 100})
    assert read_job(engine, silent, BACKTEST)["error"]["code"] == "job_abandoned"


def test_a_job_is_found_only_under_its_own_kind(engine):
    job_id = new_job(engine)
    with pytest.raises(OrderHubError) as missing:
        read_job(engine, job_id, IMPORT)
    assert (missing.value.code, missing.value.field) == (ErrorCode.NOT_FOUND, "job_id")


async def test_an_import_job_counts_its_rows_and_orders_as_the_pipeline_processes_them(database_url):
    rt = Runtime(Settings(database_url=database_url, audit=False))
    await rt.start(workers=False)
    try:
        imports.save_mapping(rt.engine, "pos", POS_MAPPING)
        report = imports.import_file(rt.engine, pos_file(450, bad={7, 420}), "store.csv", "pos", "pos", "S1",
                                     actor=Actor("ops", "user"))
        assert report["orders"] == 450 and len(report["inbox_ids"]) == 3  # 200 orders per inbox row
        waiting = read_job(rt.engine, report["job_id"], IMPORT)
        assert (waiting["state"], waiting["done"], waiting["total"], waiting["percent"], waiting["created_by"]) == ("running", 0, 3, 0, "ops")
        assert waiting["counts"] == {"orders": 450, "processed": 0, "stored": 0, "quarantined": 0}
        assert "inbox_ids" not in waiting["params"] and waiting["params"]["import_id"] == report["import_id"]

        await rt.processor.process(claim(rt.engine, 1))  # the first 200 orders, JOB-00007 among them
        first = read_job(rt.engine, report["job_id"], IMPORT)
        assert (first["state"], first["done"], first["percent"]) == ("running", 1, 33)
        assert first["counts"] == {"orders": 450, "processed": 200, "stored": 199, "quarantined": 1}

        while rows := claim(rt.engine, 1):
            await rt.processor.process(rows)
        done = read_job(rt.engine, report["job_id"], IMPORT)
        assert (done["state"], done["done"], done["total"], done["percent"]) == ("done", 3, 3, 100)
        assert done["counts"] == {"orders": 450, "processed": 450, "stored": 448, "quarantined": 2}
        assert done["result"] == {"import_id": report["import_id"], "filename": "store.csv", "rows": 450, "orders": 450,
                                  "processed": 450, "stored": 448, "quarantined": 2}
        with rt.engine.connect() as conn:  # the first reader after the last row recorded the end
            stored = conn.execute(sa.select(jobs.c.state, jobs.c.done, jobs.c.result).where(jobs.c.id == report["job_id"])).one()
        assert (stored.state, stored.done, stored.result["stored"]) == ("done", 3, 448)
    finally:
        await asyncio.wait_for(rt.stop(), 10)
