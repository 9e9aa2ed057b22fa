"""Long operations over real HTTP, on both databases: a back-test started as a job (202 at once,
progress, the same report as the one-request back-test, or the error it failed with), a job whose
process is gone, a file import followed through the pipeline, and who may read which job."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from auth_helpers import user_headers
from orderhub.adapters.db import jobs_repo
from orderhub.domain.access import Role

POS_MAPPING = {
    "channel": "pos",
    "columns": {"order_no": "订单号", "created_at": "下单时间", "paid_at": "付款时间", "sku": "商品编码", "title": "商品名称",
                "qty": "数量", "unit_price": "单价", "paid": "实付"},
}


def pos_csv(n: int, *, bad: frozenset[int] = frozenset()) -> bytes:
    """`n` one-line POS orders paid an hour ago (Asia/Shanghai); those in `bad` were 'paid' more than they cost."""
    at = (datetime.now(UTC) + timedelta(hours=7)).strftime("%Y-%m-%d %H:%M:%S")
    lines = ["订单号,下单时间,付款时间,商品编码,商品名称,数量,单价,实付"]
    lines += [f"JOBS-{i:04d},{at},{at},SKU-1,咖啡,1,18.00,{'99.00' if i in bad else '18.00'}" for i in range(n)]
    return ("\n".join(lines) + "\n").encode()


async def upload(api: Any, data: bytes) -> dict[str, Any]:
    assert (await api.client.put("/api/v1/import-mappings/pos", json=POS_MAPPING)).status_code == 200
    response = await api.client.post("/api/v1/imports", files={"file": ("store.csv", data, "text/csv")},
                                     data={"mapping": "pos", "channel": "pos", "shop": "S1"})
    assert response.status_code == 202, response.text
    return response.json()


async def follow(api: Any, kind: str, job_id: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Every state of the job seen while polling (as the console does), until it is no longer running."""
    seen: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await api.client.get(f"/api/v1/jobs/{kind}/{job_id}")
        assert response.status_code == 200, response.text
        seen.append(response.json())
        if seen[-1]["state"] != "running":
            return seen
        assert asyncio.get_running_loop().time() < deadline, f"{kind} job {job_id} still running after {timeout}s: {seen[-1]}"
        await asyncio.sleep(0.05)


async def test_a_backtest_job_answers_202_at_once_then_shows_progress_and_the_report_of_the_one_request_backtest(serve):
    api = await serve()
    imported = await upload(api, pos_csv(30))
    assert (await follow(api, "import", imported["job_id"]))[-1]["state"] == "done"

    draft = (await api.client.get("/api/v1/rules/routing")).json()["content"]  # an unsaved draft: the published rules
    started = await api.client.post("/api/v1/rules/routing/backtest-jobs", json={"days": 1, "content": draft})
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["kind"] == "backtest" and job["state"] in ("running", "done") and job["created_by"] == "key:tests"
    assert job["params"] == {"rule_set": "routing", "days": 1.0, "limit": 20_000, "version": None, "content": True}
    seen = await follow(api, "backtest", job["id"])
    percents = [j["percent"] for j in seen]
    assert percents == sorted(percents) and percents[-1] == 100
    done = seen[-1]
    assert (done["state"], done["done"], done["total"], done["error"], done["counts"]) == ("done", 30, 30, None, None)
    assert done["finished_at"] and done["result"]["orders"] == 30
    synchronous = await api.client.post("/api/v1/rules/routing/backtest", json={"days": 1, "content": draft})  # unchanged
    assert synchronous.status_code == 200 and synchronous.json() == done["result"]


async def test_a_backtest_job_fails_with_the_code_the_backtest_raises_and_a_bad_request_is_refused_at_once(serve):
    api = await serve(workers=False)
    invalid = await api.client.post("/api/v1/rules/holds/backtest-jobs", json={"content": {"nodes": "no"}})
    assert invalid.status_code == 202, invalid.text
    failed = (await follow(api, "backtest", invalid.json()["id"]))[-1]
    assert (failed["state"], failed["error"]["code"], failed["error"]["field"], failed["result"]) == ("failed", "rule_invalid", "content", None)
    assert failed["error"]["message"] and failed["finished_at"]

    no_draft = await api.client.post("/api/v1/rules/routing/backtest-jobs", json={})
    missing = (await follow(api, "backtest", no_draft.json()["id"]))[-1]
    assert (missing["state"], missing["error"]["code"]) == ("failed", "not_found")

    refused = await api.client.post("/api/v1/rules/routing/backtest-jobs", json={"days": 365})
    assert (refused.status_code, refused.json()["code"], refused.json()["field"]) == (422, "invalid_request", "days")


async def test_a_job_left_running_by_a_process_that_stopped_reads_failed_with_job_abandoned(serve):
    api = await serve(workers=False)
    now = datetime.now(UTC)
    with api.runtime.engine.begin() as conn:  # what a process killed in the middle of a back-test leaves behind
        stale = jobs_repo.insert(conn, kind="backtest", created_by="ops", params={"rule_set": "routing"}, now=now - timedelta(minutes=6))
        jobs_repo.set_progress(conn, stale, 500, 800, now - timedelta(minutes=5))
        busy = jobs_repo.insert(conn, kind="backtest", created_by="ops", params={"rule_set": "routing"}, now=now, total=800)
    response = await api.client.get(f"/api/v1/jobs/backtest/{stale}")
    assert response.status_code == 200, response.text
    job = response.json()
    assert (job["state"], job["done"], job["total"], job["percent"], job["error"]["code"]) == ("failed", 500, 800, 62, "job_abandoned")
    assert job["finished_at"] and (await api.client.get(f"/api/v1/jobs/backtest/{stale}")).json()["state"] == "failed"  # for good
    assert (await api.client.get(f"/api/v1/jobs/backtest/{busy}")).json()["state"] == "running"


async def test_an_import_job_follows_the_files_orders_through_the_pipeline_until_the_report(serve):
    api = await serve(workers=False)  # paused workers: the import waits, visibly
    report = await upload(api, pos_csv(3, bad=frozenset({1})))
    assert (report["rows"], report["orders"], len(report["inbox_ids"])) == (3, 3, 1) and report["job_id"]
    waiting = (await api.client.get(f"/api/v1/jobs/import/{report['job_id']}")).json()
    assert (waiting["kind"], waiting["state"], waiting["done"], waiting["total"], waiting["percent"]) == ("import", "running", 0, 1, 0)
    assert waiting["counts"] == {"orders": 3, "processed": 0, "stored": 0, "quarantined": 0}
    assert waiting["params"] == {"import_id": report["import_id"], "filename": "store.csv", "rows": 3, "orders": 3}

    assert (await api.client.post("/api/v1/workers/resume")).status_code == 200
    done = (await follow(api, "import", report["job_id"]))[-1]
    assert (done["state"], done["done"], done["total"], done["percent"]) == ("done", 1, 1, 100)
    assert done["counts"] == {"orders": 3, "processed": 3, "stored": 2, "quarantined": 1}
    assert done["result"] == {"import_id": report["import_id"], "filename": "store.csv", "rows": 3, "orders": 3,
                              "processed": 3, "stored": 2, "quarantined": 1}
    quarantined = (await api.client.get("/api/v1/quarantine")).json()["items"]
    assert [(q["original_id"], q["code"]) for q in quarantined] == [("JOBS-0001", "amounts_mismatch")]
    assert sorted(o["original_id"] for o in await api.orders(channel="pos")) == ["JOBS-0000", "JOBS-0002"]


async def test_a_job_is_read_only_by_roles_that_may_start_its_kind_and_only_under_its_kind(serve):
    api = await serve(workers=False)
    backtest = (await api.client.post("/api/v1/rules/routing/backtest-jobs", json={"days": 1, "content": None})).json()["id"]
    imported = (await upload(api, pos_csv(1)))["job_id"]
    engine = api.runtime.engine
    ops, cs, viewer = user_headers(engine, "ops1", Role.OPS), user_headers(engine, "cs1", Role.CS), user_headers(engine, "viewer1", Role.VIEWER)
    for kind, job_id in (("backtest", backtest), ("import", imported)):
        assert (await api.client.get(f"/api/v1/jobs/{kind}/{job_id}", headers=ops)).status_code == 200
        for headers in (cs, viewer):  # neither may back-test nor import, so neither reads such a job
            refused = await api.client.get(f"/api/v1/jobs/{kind}/{job_id}", headers=headers)
            assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    for kind, job_id in (("import", backtest), ("backtest", imported)):  # the kind is part of the address
        wrong = await api.client.get(f"/api/v1/jobs/{kind}/{job_id}")
        assert (wrong.status_code, wrong.json()["code"], wrong.json()["field"]) == (404, "not_found", "job_id")
    assert (await api.client.get("/api/v1/jobs/backtest/999999")).status_code == 404
