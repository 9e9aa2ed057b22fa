"""SQLite writers of one process take turns on a lock (adapters/db/engine.py): every way a write
transaction can end gives the turn back, and readers never wait for it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from orderhub.adapters.db.engine import create_engine


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    engine = create_engine(f"sqlite:///{tmp_path / 'turns.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)"))
    yield engine
    engine.dispose()


def count(engine: sa.Engine) -> int:
    with engine.connect().execution_options(readonly=True) as conn:
        return conn.execute(sa.text("SELECT count(*) FROM t")).scalar_one()


def test_eight_threads_writing_at_once_all_commit(engine: sa.Engine) -> None:
    def write(n: int) -> None:
        for i in range(50):
            with engine.begin() as conn:
                conn.execute(sa.text("INSERT INTO t (v) VALUES (:v)"), {"v": n * 100 + i})

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert count(engine) == 400


def test_a_failed_transaction_and_a_dropped_connection_give_the_turn_back(engine: sa.Engine) -> None:
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO t (v) VALUES (NULL)"))
    conn = engine.connect()
    conn.begin()
    conn.execute(sa.text("INSERT INTO t (v) VALUES (1)"))
    conn.invalidate()  # the connection is gone mid-transaction (as on a crash of its thread's work)
    conn.close()
    started = time.monotonic()
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO t (v) VALUES (2)"))
    assert time.monotonic() - started < 1.0 and count(engine) == 1


def test_readers_do_not_wait_for_a_writer(engine: sa.Engine) -> None:
    with engine.begin() as writer:
        writer.execute(sa.text("INSERT INTO t (v) VALUES (1)"))
        started = time.monotonic()
        assert count(engine) == 0  # WAL: the reader sees the last commit, at once
        assert time.monotonic() - started < 0.5


def test_a_second_write_transaction_in_the_thread_holding_the_turn_fails_at_once(engine: sa.Engine) -> None:
    # it could only wait for itself: without the check it would stall every writer for the busy timeout
    with engine.begin() as outer:
        outer.execute(sa.text("INSERT INTO t (v) VALUES (1)"))
        started = time.monotonic()
        with pytest.raises(sa.exc.OperationalError, match="second write transaction"), engine.begin() as inner:
            inner.execute(sa.text("INSERT INTO t (v) VALUES (2)"))
        assert time.monotonic() - started < 1.0
        assert count(engine) == 0  # a read beside it still works
    assert count(engine) == 1  # the outer transaction commits

    def other_writer() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO t (v) VALUES (3)"))

    thread = threading.Thread(target=other_writer)
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive() and count(engine) == 2  # the turn was given back


def test_a_writer_kept_waiting_says_who_holds_the_turn(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("orderhub.adapters.db.engine.WARN_AFTER_S", 0.2)
    holding = threading.Event()

    def slow_writer_holding_the_turn() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO t (v) VALUES (1)"))
            holding.set()
            time.sleep(0.8)

    thread = threading.Thread(target=slow_writer_holding_the_turn)
    thread.start()
    holding.wait(5)
    with engine.begin() as conn:  # waits, warns after 0.2 s, then gets its turn
        conn.execute(sa.text("INSERT INTO t (v) VALUES (2)"))
    thread.join(5)
    [warning] = [r for r in caplog.records if "waiting" in r.getMessage()]
    assert "slow_writer_holding_the_turn" in warning.getMessage() and count(engine) == 2
