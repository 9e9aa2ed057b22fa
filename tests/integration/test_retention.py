"""Retention on both databases: finished operational rows past their days go, in chunks; pending, leased and
dead rows, fresh rows and notifications (kept a year) stay; `orderhub prune --dry-run` counts without deleting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from click.testing import CliRunner

from orderhub.adapters.db.tables import inbox, jobs, outbox
from orderhub.config import RetentionSettings
from orderhub.entrypoints.cli import main
from orderhub.services import retention

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)



def seed(engine: sa.Engine, now: datetime = NOW) -> None:
    """Rows 45 days old (past the 30 days of inbox and outbox), 2 days old, 400 days old (past a year), as of `now`."""
    old, recent, ancient = now - timedelta(days=45), now - timedelta(days=2), now - timedelta(days=400)

    def inbox_row(n: int, status: str, at: datetime) -> dict:
        return {"channel": "jd", "shop_id": "1", "kind": "pull", "received_at": at, "body": b"{}", "status": status,
                "processed_at": at if status == "done" else None, "lease_until": at + timedelta(minutes=2) if status == "processing" else None}

    def outbox_row(key: str, kind: str, status: str, at: datetime) -> dict:
        return {"kind": kind, "endpoint": "x", "payload": {}, "idempotency_key": key, "status": status, "next_attempt_at": at,
                "created_at": at, "sent_at": at if status == "sent" else None}

    def job(state: str, at: datetime) -> dict:
        return {"kind": "import", "state": state, "created_by": "ops", "created_at": at, "updated_at": at,
                "finished_at": at if state != "running" else None}

    with engine.begin() as conn:
        conn.execute(inbox.insert(), [*(inbox_row(n, "done", old) for n in range(5)), inbox_row(5, "done", recent),
                                      inbox_row(6, "pending", old), inbox_row(7, "processing", old)])
        conn.execute(outbox.insert(), [
            *(outbox_row(f"wms-{n}", "wms.order", "sent", old) for n in range(3)), outbox_row("ship", "platform.ship", "sent", recent),
            outbox_row("dead", "wms.order", "dead", old), outbox_row("pending", "wms.freeze", "pending", old),
            outbox_row("sms-old", "notify.sms", "sent", old), outbox_row("sms-ancient", "notify.sms", "sent", ancient),
        ])
        conn.execute(jobs.insert(), [job("done", now - timedelta(days=100)), job("failed", now - timedelta(days=100)), job("running", ancient),
                                     job("done", recent)])


AFTER = {
    "inbox": ["done", "pending", "processing"],
    "outbox": ["dead", "pending", "ship", "sms-old"],  # a dead letter waits for a person; the buyer's SMS is kept a year
    "jobs": ["done", "running"],
}


def remaining(engine: sa.Engine) -> dict[str, list]:
    with engine.connect() as conn:
        return {
            "inbox": sorted(conn.execute(sa.select(inbox.c.status)).scalars()),
            "outbox": sorted(conn.execute(sa.select(outbox.c.idempotency_key)).scalars()),
            "jobs": sorted(conn.execute(sa.select(jobs.c.state)).scalars()),
        }


def test_finished_rows_past_their_days_go_in_chunks_and_everything_unfinished_or_recent_stays(engine):
    seed(engine)
    settings = RetentionSettings(chunk=2)  # 5 old inbox rows: three statements
    assert retention.prune(engine, settings, NOW, dry_run=True) == {"inbox": 5, "outbox": 3, "notifications": 1, "jobs": 2}
    assert remaining(engine)["inbox"] == ["done"] * 6 + ["pending", "processing"]  # the dry run deleted nothing
    assert retention.prune(engine, settings, NOW) == {"inbox": 5, "outbox": 3, "notifications": 1, "jobs": 2}
    assert remaining(engine) == AFTER
    assert retention.prune(engine, settings, NOW) == {"inbox": 0, "outbox": 0, "notifications": 0, "jobs": 0}


def test_zero_days_keeps_rows_for_ever(engine):
    seed(engine)
    keep = RetentionSettings(inbox_days=0, outbox_days=0, notifications_days=0, jobs_days=0)
    assert retention.prune(engine, keep, NOW) == {}
    assert len(remaining(engine)["inbox"]) == 8


def test_orderhub_prune_from_the_command_line(engine, database_url, tmp_path, monkeypatch):
    seed(engine, datetime.now(UTC))
    monkeypatch.setenv("ORDERHUB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ORDERHUB_DATABASE_URL", database_url)
    dry = CliRunner().invoke(main, ["prune", "--dry-run"], catch_exceptions=False)
    assert dry.exit_code == 0 and "inbox          5 would be deleted" in dry.output
    done = CliRunner().invoke(main, ["prune"], catch_exceptions=False)
    assert done.exit_code == 0 and "inbox          5 deleted" in done.output and "jobs           2 deleted" in done.output
    assert "notifications  1 deleted" in done.output and remaining(engine) == AFTER
