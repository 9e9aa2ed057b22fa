"""Two workers holding one inbox row (the first one's lease ran out mid-batch, the second claimed it):
the batch is written once — its orders, events and quarantine rows — on both databases; and a broker
batch holding one message twice is one row."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import sqlalchemy as sa

from orderhub.adapters.db.inbox import append_rows, claim, insert_keyed
from orderhub.adapters.db.tables import inbox, order_events, orders, quarantine
from orderhub.bootstrap import Runtime
from orderhub.config import Settings, ShopSettings

EXPIRED = timedelta(0)  # a lease that has run out by the next claim: the worker is "slow"


@pytest.fixture
async def runtime(database_url):
    rt = Runtime(Settings(database_url=database_url, audit=False, shops=[ShopSettings(channel="jd", shop_id="10000001", name="京东店")]))
    await rt.start(workers=False)
    yield rt
    await rt.stop()


def pages(rt: Runtime, fixtures_dir, *, with_bad: bool = True) -> None:
    data = json.loads((fixtures_dir / "jd_order_search.json").read_text(encoding="utf-8"))
    order = data["jingdong_pop_order_search_responce"]["searchorderinfo_result"]["orderInfoList"][0]
    rows = [{"channel": "jd", "shop_id": "10000001", "kind": "pull", "body": orjson.dumps({"orders": [order]})}]
    if with_bad:  # a page that is not JSON: quarantined with its reason
        rows.append({"channel": "jd", "shop_id": "10000001", "kind": "pull", "body": b"{not json"})
    with rt.engine.begin() as conn:
        append_rows(conn, rows)


def counts(rt: Runtime) -> tuple[int, int, int, list[str]]:
    with rt.engine.connect() as conn:
        n = [conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() for t in (orders, order_events, quarantine)]
        return (*n, [s for s, in conn.execute(sa.select(inbox.c.status).order_by(inbox.c.id))])


async def test_a_batch_whose_rows_another_worker_took_over_writes_nothing_and_the_other_writes_it_once(runtime, fixtures_dir):
    pages(runtime, fixtures_dir)
    slow = claim(runtime.engine, 10, lease=EXPIRED)
    fast = claim(runtime.engine, 10)  # the lease ran out: the sweep of another worker takes both rows
    assert [r.id for r in fast] == [r.id for r in slow] and len(fast) == 2
    late = await runtime.processor.process(slow)
    assert late.outcomes == {"taken_over": 2}
    assert counts(runtime) == (0, 0, 0, ["processing", "processing"])  # nothing of the slow batch was written
    await runtime.processor.process(fast)
    written = counts(runtime)
    orders_n, _, quarantined, statuses = written
    assert (orders_n, quarantined, statuses) == (1, 1, ["done", "done"])
    # the slow worker comes back once more (a retry of its own): still nothing twice
    assert (await runtime.processor.process(slow)).outcomes == {"taken_over": 2}
    assert counts(runtime) == written


async def test_the_rows_still_leased_are_written_without_the_one_taken_over(runtime, fixtures_dir):
    pages(runtime, fixtures_dir)
    slow = claim(runtime.engine, 10, lease=EXPIRED)
    [taken] = claim(runtime.engine, 10, ids=[slow[1].id])  # only the bad page changed hands
    result = await runtime.processor.process(slow)
    assert result.rows == 1 and sum(result.outcomes.values()) >= 1
    orders_n, _, quarantined, statuses = counts(runtime)
    assert (orders_n, quarantined, statuses) == (1, 0, ["done", "processing"])  # the good page; the bad one is the other's
    await runtime.processor.process([taken])
    orders_n, _, quarantined, statuses = counts(runtime)
    assert (orders_n, quarantined, statuses) == (1, 1, ["done", "done"])


async def test_one_broker_message_twice_in_a_batch_is_one_leased_row(runtime):
    now = datetime.now(UTC)
    message = {"channel": "jd", "shop_id": "10000001", "kind": "pull", "received_at": now, "body": b'{"orders": []}', "meta": None,
               "broker_key": "k-1"}
    rows = insert_keyed(runtime.engine, [message, message, {**message, "broker_key": "k-2"}])
    assert [r.id for r in rows] == sorted({r.id for r in rows}) and len(rows) == 2 and all(r.lease_until for r in rows)
    assert insert_keyed(runtime.engine, [message]) == []  # delivered again after the commit: nothing new
