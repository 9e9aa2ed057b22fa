"""The inbox writer knows what it has accepted but not yet committed: the label gate asks it, so a
cancel still on its way to disk holds the label like one already stored."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import sqlalchemy as sa

from orderhub.adapters.db import migrate
from orderhub.adapters.db.engine import create_engine
from orderhub.adapters.db.inbox import InboxWriter
from orderhub.adapters.db.tables import inbox
from orderhub.services import waybills


async def test_a_message_counts_as_unwritten_from_acceptance_until_its_commit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    migrate.upgrade(url)
    engine = create_engine(url)
    writer = InboxWriter(engine)
    writer.start()
    try:
        assert writer.oldest_unwritten() is None
        blocker = engine.connect()
        blocker.begin()  # holds SQLite's one write turn: the writer's commit has to wait for it
        blocker.execute(sa.text("SELECT 1"))
        before = datetime.now(UTC)
        first = asyncio.create_task(writer.append("douyin", "S1", "push", b'{"a":1}'))
        second = asyncio.create_task(writer.append("douyin", "S1", "push", b'{"a":2}'))
        await asyncio.sleep(0.2)
        oldest = writer.oldest_unwritten()
        assert oldest is not None and before <= oldest <= datetime.now(UTC)
        assert not first.done() and not second.done()
        blocker.rollback()
        blocker.close()
        await asyncio.wait_for(asyncio.gather(first, second), 5)
        assert writer.oldest_unwritten() is None
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(inbox)).scalar_one() == 2
    finally:
        writer.stop()
        engine.dispose()


def test_the_label_gate_waits_for_a_message_accepted_before_its_cutoff_but_not_yet_on_disk() -> None:
    cutoff = datetime.now(UTC)
    on_its_way = SimpleNamespace(unwritten=lambda: cutoff - timedelta(milliseconds=5), engine=None)
    assert waybills._grant(on_its_way, None, "P1", None, cutoff) is None  # type: ignore[arg-type]
