"""Long operations the console follows (DESIGN.md §4.10): a job row per back-test or file import
that says how far it got, then its report or its error (docs/console.md, "Long operations").

- A back-test runs in a worker thread of the API process (`JobRunner`); its `progress(done, total)`
  callback writes at most every `PROGRESS_EVERY_S`, and a heartbeat keeps its row fresh while the
  process lives. A running row silent for `STALE_AFTER` belongs to a process that is gone: it is
  reported (and recorded) failed with `job_abandoned`. A heartbeat, not a sweep at startup, because
  in the scaled deployment several API nodes run jobs and one node's restart must not fail the
  jobs of the others.
- A file import is processed by the pipeline's workers, anywhere: its progress is read from its
  inbox rows when asked (no write on the processing path), and the row records the final counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from orderhub.adapters.db import jobs_repo
from orderhub.adapters.db.jobs_repo import DONE, FAILED, RUNNING
from orderhub.adapters.db.queries import local
from orderhub.domain.access import SYSTEM, Actor
from orderhub.domain.errors import ErrorCode, OrderHubError

log = logging.getLogger(__name__)

BACKTEST, IMPORT = "backtest", "import"
KINDS = (BACKTEST, IMPORT)
PROGRESS_EVERY_S = 0.5  # the console polls about this often: more writes would show nothing more
HEARTBEAT_S = 5.0
STALE_AFTER = timedelta(seconds=60)  # twelve missed heartbeats: the process is gone, not busy
MAX_PARALLEL = 2  # back-tests are CPU work on shared cores; more at once only slows each (and the audit)


class Progress:
    """A job's `progress(done, total)` callback. The first call writes (the console learns the
    total at once), then at most one write per `every_s`; calls in between only remember the
    numbers, so a caller may report as often as it likes. The job's end writes the last numbers."""

    def __init__(self, engine: sa.Engine, job_id: int, *, every_s: float = PROGRESS_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.engine, self.job_id, self.every_s, self.clock = engine, job_id, every_s, clock
        self.done, self.total = 0, None
        self.writes = 0
        self._last: float | None = None

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        now = self.clock()
        if self._last is not None and now - self._last < self.every_s:
            return
        self._last = now
        with self.engine.begin() as conn:
            jobs_repo.set_progress(conn, self.job_id, done, total, datetime.now(UTC))
        self.writes += 1


class JobRunner:
    """Runs this process's jobs in daemon threads (a job is not worth holding a shutdown for: its
    row goes stale and reads as failed), at most `max_parallel` at a time; the rest wait their turn,
    running and beating. One heartbeat thread lives while any job does."""

    def __init__(self, engine: sa.Engine, *, max_parallel: int = MAX_PARALLEL, heartbeat_s: float = HEARTBEAT_S,
                 progress_every_s: float = PROGRESS_EVERY_S) -> None:
        self.engine = engine
        self.heartbeat_s = heartbeat_s
        self.progress_every_s = progress_every_s
        self._slots = threading.BoundedSemaphore(max_parallel)
        self._lock = threading.Lock()
        self._live: set[int] = set()
        self._beating = False

    def start(self, kind: str, work: Callable[[Progress], dict[str, Any]], *, actor: Actor = SYSTEM,
              params: dict[str, Any] | None = None) -> int:
        """Record the job and start `work(progress)` in a thread; its return value is the report."""
        with self.engine.begin() as conn:
            job_id = jobs_repo.insert(conn, kind=kind, created_by=actor.name, params=params, now=datetime.now(UTC))
        with self._lock:
            self._live.add(job_id)
            if not self._beating:
                self._beating = True
                threading.Thread(target=self._beat, name="orderhub-job-heartbeat", daemon=True).start()
        threading.Thread(target=self._run, args=(job_id, work), name=f"orderhub-job-{job_id}", daemon=True).start()
        return job_id

    def running(self) -> set[int]:
        with self._lock:
            return set(self._live)

    def _run(self, job_id: int, work: Callable[[Progress], dict[str, Any]]) -> None:
        progress = Progress(self.engine, job_id, every_s=self.progress_every_s)
        try:
            with self._slots:
                result = work(progress)
        except OrderHubError as exc:  # what the synchronous call would have answered
            self._finish(job_id, progress, FAILED, error=exc.as_dict())
        except Exception as exc:
            log.exception("job %s failed", job_id)
            self._finish(job_id, progress, FAILED, error=_error(ErrorCode.JOB_FAILED, f"{type(exc).__name__}: {exc}"[:500]))
        else:
            if progress.total is not None:
                progress.done = progress.total
            self._finish(job_id, progress, DONE, result=result)
        finally:
            with self._lock:
                self._live.discard(job_id)

    def _finish(self, job_id: int, progress: Progress, state: str, **outcome: Any) -> None:
        try:
            with self.engine.begin() as conn:
                jobs_repo.finish(conn, job_id, state=state, now=datetime.now(UTC), done=progress.done, total=progress.total, **outcome)
        except Exception:  # the row stays running, goes stale and reads as abandoned: never a job spinning forever
            log.exception("could not record the end of job %s", job_id)

    def _beat(self) -> None:
        while True:
            time.sleep(self.heartbeat_s)
            with self._lock:
                ids = set(self._live)
                if not ids:
                    self._beating = False
                    return
            try:
                with self.engine.begin() as conn:
                    jobs_repo.beat(conn, ids, datetime.now(UTC))
            except Exception:  # one missed beat is harmless; STALE_AFTER allows many
                log.warning("job heartbeat failed", exc_info=True)


def read_job(engine: sa.Engine, job_id: int, kind: str, *, stale_after: timedelta = STALE_AFTER,
             now: datetime | None = None) -> dict[str, Any]:
    """A job as the API shows it. A job of another kind is not found: the kind is part of its
    address, and who may read it (access_policy.py: whoever may start that kind)."""
    now = now or datetime.now(UTC)
    with engine.connect().execution_options(readonly=True) as conn:
        row = jobs_repo.get(conn, job_id)
        if row is None or row["kind"] != kind:
            raise OrderHubError(ErrorCode.NOT_FOUND, f"{kind} job {job_id} does not exist", "job_id")
        counts = jobs_repo.import_progress(conn, row["params"]["inbox_ids"]) if kind == IMPORT else None
    if row["state"] == RUNNING:
        if kind == IMPORT:
            assert counts is not None
            row = _follow_import(engine, row, counts, now)
        elif row["updated_at"] < now - stale_after:
            row = _give_up(engine, row, now - stale_after, now)
    return view(row, counts)


def _follow_import(engine: sa.Engine, row: dict[str, Any], counts: dict[str, int], now: datetime) -> dict[str, Any]:
    """An import is done when all its inbox rows are: the first reader records the final report."""
    row = {**row, "done": counts["rows_done"], "total": counts["rows"]}
    if counts["rows_done"] < counts["rows"]:
        return row
    report = import_report(row["params"], counts)
    with engine.begin() as conn:
        jobs_repo.finish(conn, row["id"], state=DONE, now=now, done=counts["rows"], total=counts["rows"], result=report)
        return jobs_repo.get(conn, row["id"]) or row


def import_report(params: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    upload = {k: params.get(k) for k in ("import_id", "filename", "rows", "orders")}
    return {**upload, **{k: counts[k] for k in ("processed", "stored", "quarantined")}}


def _give_up(engine: sa.Engine, row: dict[str, Any], silent_since: datetime, now: datetime) -> dict[str, Any]:
    error = _error(ErrorCode.JOB_ABANDONED, f"no sign of life since {local(row['updated_at'])}: the process running it stopped; start it again")
    with engine.begin() as conn:
        jobs_repo.give_up(conn, row["id"], silent_since=silent_since, error=error, now=now)
        return jobs_repo.get(conn, row["id"]) or row


def view(row: dict[str, Any], counts: dict[str, int] | None = None) -> dict[str, Any]:
    done, total, state = row["done"], row["total"], row["state"]
    if state == DONE:
        percent = 100
    else:
        percent = min(100, done * 100 // total) if total else 0
    params = row.get("params") or {}
    if counts is not None:  # an import: its orders so far, beside the rows (done / total)
        counts = {"orders": params.get("orders"), **{k: counts[k] for k in ("processed", "stored", "quarantined")}}
    return {
        "id": row["id"], "kind": row["kind"], "state": state, "done": done, "total": total, "percent": percent,
        "counts": counts, "result": row["result"] if state == DONE else None, "error": row["error"] if state == FAILED else None,
        "params": {k: v for k, v in params.items() if k != "inbox_ids"},
        "created_by": row["created_by"], "created_at": local(row["created_at"]), "updated_at": local(row["updated_at"]),
        "finished_at": local(row["finished_at"]),
    }


def _error(code: ErrorCode, message: str) -> dict[str, Any]:
    return {"code": code.value, "message": message, "field": None}
