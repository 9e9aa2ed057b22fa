"""API routes of long operations: how far a back-test or a file import got, then its report or error.

One route per kind, with one shape (schemas.Job): who may read a job is who may start its kind
(access_policy.py), and the policy grants by route, so the kind is part of the address. A job id
asked for under the other kind is 404.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from orderhub.bootstrap import Runtime
from orderhub.entrypoints.api import schemas
from orderhub.entrypoints.api.responses import JsonResponse
from orderhub.services import jobs

ERRORS: dict[int | str, dict[str, Any]] = {404: {"model": schemas.Error}}
_POLL_HINT = "Poll about every 500 ms while `state` is running; progress is written at most every 0.5 s."


def build_job_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["jobs"], responses=ERRORS)
    engine = runtime.engine

    @router.get(
        "/jobs/backtest/{job_id}", response_model=schemas.Job, summary="A back-test job: progress, then the report or the error",
        description=(
            "Started by `POST /rules/{name}/backtest-jobs`. `done`/`total` count orders re-decided; `result` is the report "
            "`POST /rules/{name}/backtest` answers; `error` the code it failed with (e.g. `rule_invalid`). A job whose process "
            f"stopped reads as failed with `job_abandoned` after 60 s without a heartbeat. {_POLL_HINT}"
        ),
    )
    async def backtest_job(job_id: int) -> JsonResponse:
        return JsonResponse(await asyncio.to_thread(jobs.read_job, engine, job_id, jobs.BACKTEST))

    @router.get(
        "/jobs/import/{job_id}", response_model=schemas.Job, summary="A file import's processing: rows done, orders stored or quarantined",
        description=(
            "`job_id` is what `POST /imports` answers. `done`/`total` count the import's inbox rows (up to 200 orders each) the "
            "pipeline has processed; `counts` its orders processed, stored and quarantined so far; once every row is done, "
            f"`result` is the final report. While the workers are paused the job waits (it is not abandoned). {_POLL_HINT}"
        ),
    )
    async def import_job(job_id: int) -> JsonResponse:
        return JsonResponse(await asyncio.to_thread(jobs.read_job, engine, job_id, jobs.IMPORT))

    return router
