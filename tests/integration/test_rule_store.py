"""The versioned rule store on SQLite and PostgreSQL: drafts, publish, roll back, switches, and the live config."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from orderhub.adapters.db.engine import create_engine
from orderhub.adapters.db.migrate import upgrade
from orderhub.adapters.db.tables import audit_versions, rule_sets
from orderhub.adapters.rules import default_content
from orderhub.domain.audit import RULE_SETS, AuditLine, AuditOrder
from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.services.rules import RuleBook

PAID_AT = datetime(2025, 3, 18, 2, 12, tzinfo=UTC)


def risky_order(amount: int = 60000) -> AuditOrder:
    """An order to Tibet over ¥500: the default rules hold it for risk review."""
    line = AuditLine(1, "SKU-1001", "纯棉T恤", 1, amount, amount, category="服装", cost=2400, weight_g=220)
    return AuditOrder(
        "o1",
        "douyin",
        "88880001",
        PAID_AT,
        PAID_AT,
        amount,
        0,
        0,
        amount,
        "西藏自治区",
        "拉萨市",
        "城关区",
        "北京中路***",
        "V3",
        None,
        None,
        (line,),
    )


@pytest.fixture
def db(database_url):
    upgrade(database_url)
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def book(db) -> RuleBook:
    rules = RuleBook(db, refresh_s=0)
    rules.ensure_defaults()
    return rules


def risk_threshold(content: dict, yuan: int) -> dict:
    for row in content["nodes"][1]["content"]["rules"]:
        if row["_id"] == "risk-xinjiang-tibet":
            row["in-amount"] = f"> {yuan}"
    return content


def hold_codes(book: RuleBook, order: AuditOrder | None = None, **kwargs) -> list[str]:
    decision, _ = book.decide(order or risky_order(), **kwargs)
    return [h.code for h in decision.holds]


def test_defaults_are_seeded_once_as_version_one_of_every_set_and_audit_one(db):
    book = RuleBook(db)
    book.ensure_defaults()
    book.ensure_defaults()
    sets = book.list_sets()
    assert [s["name"] for s in sets] == list(RULE_SETS)
    assert all(s["published_version"] == 1 and s["draft_version"] is None and s["disabled"] == [] for s in sets)
    assert [v["rule_version"] for v in book.audit_versions()] == ["audit@1"]
    live = book.live()
    assert live.label == "audit@1" and live.sets == dict.fromkeys(RULE_SETS, 1)
    assert book.get_set("holds")["content"]["nodes"][1]["content"]["rules"][0]["_id"] == "risk-xinjiang-tibet"


def test_two_processes_seeding_at_once_leave_one_audit_version(db):
    barrier = threading.Barrier(3)
    errors = []

    def start() -> None:
        try:
            barrier.wait()
            RuleBook(db).ensure_defaults()
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(audit_versions)).scalar() == 1
        assert conn.execute(sa.select(sa.func.count()).select_from(rule_sets)).scalar() == len(RULE_SETS)


def test_a_new_default_set_joins_an_existing_installation_without_touching_the_others(db):
    now = datetime.now(UTC)
    older = [name for name in RULE_SETS if name != "split"]
    with db.begin() as conn:
        for name in older:
            conn.execute(rule_sets.insert().values(
                name=name, version=1, state="retired", content=default_content(name), author="ops", created_at=now,
            ))  # fmt: skip
            conn.execute(rule_sets.insert().values(
                name=name, version=2, state="published", content=default_content(name), author="ops", created_at=now, published_at=now,
            ))  # fmt: skip
        conn.execute(audit_versions.insert().values(
            version=5, sets=dict.fromkeys(older, 2), disabled=["holds:remote-area"], author="ops", created_at=now,
        ))  # fmt: skip
    book = RuleBook(db)
    book.ensure_defaults()
    live = book.live()
    assert live.label == "audit@6"
    assert live.sets == {**dict.fromkeys(older, 2), "split": 1}
    assert live.disabled == {"holds:remote-area"}


def test_the_live_configuration_decides_orders_with_the_default_rules(book):
    decision, trace = book.decide(risky_order())
    assert [h.reason for h in decision.holds] == ["金额>¥500且收货地为新疆/西藏"]
    assert trace is None


def test_a_draft_changes_nothing_live_until_published_but_a_dry_run_shows_its_effect(book):
    draft = book.save_draft("holds", risk_threshold(book.get_set("holds")["content"], 1000), "ops", "raise risk threshold")
    assert (draft["version"], draft["state"], draft["note"]) == (2, "draft", "raise risk threshold")
    assert hold_codes(book) == ["risk_review"]
    assert hold_codes(book, live=book.with_draft("holds")) == []
    assert hold_codes(book, live=book.with_draft("holds", version=1)) == ["risk_review"]
    assert hold_codes(book, live=book.with_draft("holds", content=risk_threshold(default_content("holds"), 100))) == ["risk_review"]
    decision, trace = book.decide(risky_order(), live=book.with_draft("holds"), trace=True)
    assert decision.holds == () and "holds" in trace


def test_saving_a_draft_again_replaces_it_and_after_a_publish_starts_a_new_version(book):
    content = book.get_set("holds")["content"]
    assert book.save_draft("holds", risk_threshold(content, 800), "ops")["version"] == 2
    assert book.save_draft("holds", risk_threshold(content, 900), "ops2")["version"] == 2
    assert book.get_set("holds")["author"] == "ops2"
    book.publish("holds", "lead")
    assert book.save_draft("holds", risk_threshold(content, 700), "ops")["version"] == 3


def test_invalid_content_is_refused_with_a_reason_and_unknown_sets_are_not_found(book):
    content = book.get_set("holds")["content"]
    content["nodes"][1]["content"]["rules"][0]["in-amount"] = "> "
    with pytest.raises(OrderHubError) as caught:
        book.save_draft("holds", content, "ops")
    assert caught.value.code is ErrorCode.RULE_INVALID and caught.value.field == "content"
    assert "risk-xinjiang-tibet" in caught.value.message
    with pytest.raises(OrderHubError) as caught:
        book.save_draft("nonsense", default_content("holds"), "ops")
    assert caught.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(OrderHubError) as caught:
        book.with_draft("holds", content=content)
    assert caught.value.code is ErrorCode.RULE_INVALID


def test_a_dry_run_without_a_draft_is_not_found(book):
    with pytest.raises(OrderHubError) as caught:
        book.with_draft("holds")
    assert caught.value.code is ErrorCode.NOT_FOUND


def test_publishing_creates_the_next_audit_version_and_retires_the_previous_rule_version(book):
    book.save_draft("holds", risk_threshold(book.get_set("holds")["content"], 1000), "ops")
    result = book.publish("holds", "lead", "peak season")
    assert result == {"name": "holds", "version": 2, "audit_version": 2, "rule_version": "audit@2"}
    assert hold_codes(book) == []
    assert book.live().label == "audit@2"
    states = {v["version"]: v["state"] for v in next(s for s in book.list_sets() if s["name"] == "holds")["versions"]}
    assert states == {1: "retired", 2: "published"}
    assert book.audit_versions()[0]["note"] == "peak season"


def test_publishing_with_nothing_to_publish_is_a_conflict(book):
    with pytest.raises(OrderHubError) as caught:
        book.publish("holds", "lead")
    assert caught.value.code is ErrorCode.CONFLICT
    with pytest.raises(OrderHubError) as caught:
        book.publish("holds", "lead", version=1)
    assert caught.value.code is ErrorCode.CONFLICT
    with pytest.raises(OrderHubError) as caught:
        book.publish("holds", "lead", version=9)
    assert caught.value.code is ErrorCode.NOT_FOUND


def test_a_publish_in_another_process_takes_effect_here_without_a_restart(db, book):
    worker = RuleBook(db, refresh_s=0.2)
    assert worker.live().label == "audit@1" and hold_codes(worker) == ["risk_review"]
    book.save_draft("holds", risk_threshold(book.get_set("holds")["content"], 1000), "ops")
    book.publish("holds", "lead")
    assert worker.live().label == "audit@1"  # still within its refresh period: no query was made
    time.sleep(0.3)
    assert worker.live().label == "audit@2" and hold_codes(worker) == []


def test_rolling_back_restores_the_version_that_was_live_before(book):
    book.save_draft("holds", risk_threshold(book.get_set("holds")["content"], 1000), "ops")
    book.publish("holds", "lead")
    result = book.rollback("holds", "lead")
    assert (result["version"], result["rule_version"]) == (1, "audit@3")
    assert hold_codes(book) == ["risk_review"]
    assert book.audit_versions()[0]["note"] == "roll back holds v2 -> v1"
    holds = next(s for s in book.list_sets() if s["name"] == "holds")
    assert holds["published_version"] == 1 and {v["version"]: v["state"] for v in holds["versions"]} == {1: "published", 2: "retired"}


def test_a_roll_back_after_a_bad_version_was_replaced_skips_nothing_that_was_never_live(book):
    content = book.get_set("holds")["content"]
    book.save_draft("holds", risk_threshold(content, 1000), "ops")  # v2
    book.publish("holds", "lead")
    book.rollback("holds", "lead")  # back to v1
    book.save_draft("holds", risk_threshold(content, 2000), "ops")  # v3
    book.publish("holds", "lead")
    assert book.rollback("holds", "lead")["version"] == 1  # what was live before v3, not the bad v2


def test_rolling_back_with_no_history_is_a_conflict(book):
    with pytest.raises(OrderHubError) as caught:
        book.rollback("holds", "lead")
    assert caught.value.code is ErrorCode.CONFLICT


def test_switching_a_single_rule_off_and_on_takes_effect_as_new_audit_versions(book):
    off = book.set_switch("holds", "risk-xinjiang-tibet", False, "ops")
    assert off["rule_version"] == "audit@2"
    assert hold_codes(book) == []
    assert book.live().disabled == {"holds:risk-xinjiang-tibet"}
    assert next(s for s in book.list_sets() if s["name"] == "holds")["disabled"] == ["risk-xinjiang-tibet"]
    assert book.set_switch("holds", "risk-xinjiang-tibet", False, "ops")["rule_version"] == "audit@2"  # already off
    assert book.set_switch("holds", "risk-xinjiang-tibet", True, "ops")["rule_version"] == "audit@3"
    assert hold_codes(book) == ["risk_review"]


def test_a_switch_survives_publishing_a_new_version_of_the_set(book):
    book.set_switch("holds", "risk-xinjiang-tibet", False, "ops")
    book.save_draft("holds", risk_threshold(book.get_set("holds")["content"], 100), "ops")
    book.publish("holds", "lead")
    assert hold_codes(book) == []


def test_switching_an_unknown_rule_is_not_found(book):
    with pytest.raises(OrderHubError) as caught:
        book.set_switch("holds", "no-such-rule", False, "ops")
    assert caught.value.code is ErrorCode.NOT_FOUND


def test_a_diff_lists_rows_added_removed_and_changed_by_id(book):
    content = risk_threshold(book.get_set("holds")["content"], 1000)
    rows = content["nodes"][1]["content"]["rules"]
    rows[:] = [r for r in rows if r["_id"] != "remote-area"]
    rows.append({"_id": "vip-note", "_description": "会员留言提醒", "in-buyer_message": 'contains($, "会员")',
                 "out-action": '"tag"', "out-code": '"vip_note"', "out-reason": '"会员留言"'})  # fmt: skip
    book.save_draft("holds", content, "ops")
    diff = book.diff("holds", 1, 2)
    assert [r["_id"] for r in diff["added"]] == ["vip-note"]
    assert diff["added"][0]["code"] == '"vip_note"'
    assert [r["_id"] for r in diff["removed"]] == ["remote-area"]
    [changed] = diff["changed"]
    assert (changed["_id"], changed["from"]["amount"], changed["to"]["amount"]) == ("risk-xinjiang-tibet", "> 500", "> 1000")


def test_concurrent_publishers_never_write_the_same_audit_version(db, book):
    names = ["routing", "priority", "holds", "gifts", "carrier"]
    for name in names:
        book.save_draft(name, book.get_set(name)["content"], "ops", f"{name} v2")
    barrier = threading.Barrier(len(names))
    results, errors = [], []

    def publish(name: str) -> None:
        try:
            barrier.wait()
            results.append(RuleBook(db).publish(name, f"lead-{name}"))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=publish, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r["audit_version"] for r in results) == [2, 3, 4, 5, 6]
    latest = book.audit_versions()[0]
    assert latest["version"] == 6 and latest["sets"] == {**dict.fromkeys(RULE_SETS, 1), **dict.fromkeys(names, 2)}


def test_a_store_without_any_configuration_says_how_to_get_one(db):
    with pytest.raises(OrderHubError) as caught:
        RuleBook(db).live()
    assert caught.value.code is ErrorCode.NOT_FOUND
