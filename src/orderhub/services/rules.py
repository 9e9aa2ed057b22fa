"""The versioned rule store: drafts, publish, roll back, single-rule switches, and the live audit configuration.

Every change is one transaction. Publishing a set or flipping a switch writes the next
`audit_versions` row (the configuration an order records as `rule_version`, e.g. "audit@7");
its primary key is what stops two concurrent publishers from both writing audit@8: the loser
gets an IntegrityError, rolls back and retries on the fresh state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import blake2b
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa

from orderhub.adapters.db import audit_log_repo
from orderhub.adapters.db.queries import local
from orderhub.adapters.db.tables import audit_versions, rule_sets
from orderhub.adapters.rules.engine import RuleEngine, RuleError, default_content, decision_tables, table_rows
from orderhub.domain.access import Actor, as_actor
from orderhub.domain.audit import RULE_SETS, AuditOrder, Decision
from orderhub.domain.errors import ErrorCode, OrderHubError

T = TypeVar("T")
_RETRIES = 8
_SET_COLUMNS = (
    rule_sets.c.version,
    rule_sets.c.state,
    rule_sets.c.author,
    rule_sets.c.note,
    rule_sets.c.created_at,
    rule_sets.c.published_at,
)


@dataclass(frozen=True, slots=True)
class LiveAudit:
    version: int  # audit_versions.version
    sets: dict[str, int]  # set -> published version
    disabled: frozenset[str]  # "<set>:<row _id>"
    keys: dict[str, str]  # set -> engine key, e.g. "holds@3#<hash of disabled for that set>"

    @property
    def label(self) -> str:
        return f"audit@{self.version}"


def _digest(value: Any) -> str:
    return blake2b(orjson.dumps(value, option=orjson.OPT_SORT_KEYS), digest_size=4).hexdigest()


def _disabled_in(name: str, disabled: Iterable[str]) -> list[str]:
    prefix = f"{name}:"
    return sorted(item[len(prefix) :] for item in disabled if item.startswith(prefix))


def _now() -> datetime:
    return datetime.now(UTC)


class RuleBook:
    """Rule sets and audit configurations in the database, loaded into one RuleEngine."""

    def __init__(
        self, engine: sa.Engine, rule_engine: RuleEngine | None = None, refresh_s: float = 1.0,
        *, extra_sets: Mapping[str, Callable[[], dict]] | None = None,
    ) -> None:
        self.db = engine
        # Sets versioned here that are not part of the audit (e.g. "stall", services/tracking.py):
        # name -> its default content. ensure_defaults seeds them; drafts, publish, roll back and
        # switches work as for any set, but publishing one writes no audit version and decide()
        # never runs it: its users read it with live_set().
        self.extra_sets = dict(extra_sets or {})
        self.rule_engine = rule_engine or RuleEngine()
        self.refresh_s = refresh_s
        self._live: LiveAudit | None = None
        self._checked = 0.0  # time.monotonic() of the last look at audit_versions
        self._lock = threading.Lock()

    # ---- the live configuration -------------------------------------------------------------

    def live(self) -> LiveAudit:
        """The latest audit configuration, loaded into the engine; the database is asked at most every refresh_s."""
        live = self._live
        if live is not None and time.monotonic() - self._checked < self.refresh_s:
            return live
        # One thread refreshes; the others go on with the configuration they have rather than queue.
        if not self._lock.acquire(blocking=live is None):
            return live  # type: ignore[return-value]
        try:
            if self._live is not None and time.monotonic() - self._checked < self.refresh_s:
                return self._live
            with self.db.connect() as conn:
                row = conn.execute(
                    sa.select(audit_versions.c.version, audit_versions.c.sets, audit_versions.c.disabled)
                    .order_by(audit_versions.c.version.desc())
                    .limit(1)
                ).first()
                if row is None:
                    raise OrderHubError(ErrorCode.NOT_FOUND, "no audit configuration yet: RuleBook.ensure_defaults() seeds one")
                if self._live is None or self._live.version != row.version:
                    self._live = self._load(conn, row.version, dict(row.sets), frozenset(row.disabled))
            self._checked = time.monotonic()
            return self._live
        finally:
            self._lock.release()

    def _load(self, conn: sa.Connection, version: int, sets: dict[str, int], disabled: frozenset[str]) -> LiveAudit:
        keys = {}
        for name in sorted(sets, key=_set_order):
            off = _disabled_in(name, disabled)
            key = f"{name}@{sets[name]}#{_digest(off)}"
            if not self.rule_engine.loaded(key):  # published versions never change, so a key is loaded once
                self.rule_engine.load(key, self._content(conn, name, sets[name]), off)
            keys[name] = key
        return LiveAudit(version, sets, disabled, keys)

    def decide(self, order: AuditOrder, *, live: LiveAudit | None = None, trace: bool = False) -> tuple[Decision, dict | None]:
        live = live or self.live()
        return self.rule_engine.decide(live.keys, order, trace=trace)

    def live_set(self, name: str) -> tuple[str, str]:
        """(label, engine key) of the published version of an extra set, e.g. ("stall@2", key), loaded
        into the engine with its switched-off rows left out (switches share audit_versions.disabled)."""
        if name not in self.extra_sets:
            raise OrderHubError(ErrorCode.NOT_FOUND, f"{name!r} is not a rule set outside the audit", field="name")
        with self.db.connect() as conn:
            query = sa.select(rule_sets.c.version).where(rule_sets.c.name == name, rule_sets.c.state == "published")
            version = conn.execute(query).scalar_one_or_none()
            if version is None:
                raise OrderHubError(ErrorCode.NOT_FOUND, f"rule set {name!r} has no published version: ensure_defaults() seeds one")
            off = _disabled_in(name, self._latest_audit(conn)[2])
            key = f"{name}@{version}#{_digest(off)}"
            if not self.rule_engine.loaded(key):
                self.rule_engine.load(key, self._content(conn, name, version), off)
        return f"{name}@{version}", key

    def with_draft(self, name: str, content: dict | None = None, version: int | None = None) -> LiveAudit:
        """The live configuration with one set replaced: by `content`, a stored `version`, or the set's latest draft."""
        live = self.live()
        with self.db.connect() as conn:
            self._require_set(conn, name)
            if content is not None:
                self._check(content)
                draft_version = 0
            else:
                if version is None:
                    latest = self._versions(conn, name)[-1]
                    if latest["state"] != "draft":
                        raise OrderHubError(ErrorCode.NOT_FOUND, f"rule set {name!r} has no draft", field="version")
                    version = latest["version"]
                content = self._content(conn, name, version)
                draft_version = version
        off = _disabled_in(name, live.disabled)
        # A draft is edited in place, so its key carries a digest of the content, not just its number.
        key = f"{name}@{draft_version or 'draft'}~{_digest(content)}#{_digest(off)}"
        if not self.rule_engine.loaded(key):
            try:
                self.rule_engine.load(key, content, off)
            except RuleError as error:
                raise OrderHubError(ErrorCode.RULE_INVALID, error.message, field="content") from None
        return LiveAudit(live.version, {**live.sets, name: draft_version}, live.disabled, {**live.keys, name: key})

    # ---- reading ---------------------------------------------------------------------------

    def list_sets(self) -> list[dict]:
        with self.db.connect() as conn:
            rows = conn.execute(sa.select(rule_sets.c.name, *_SET_COLUMNS).order_by(rule_sets.c.name, rule_sets.c.version)).all()
            disabled = self._latest_audit(conn)[2] if rows else []
        by_name: dict[str, list[dict]] = {}
        for row in rows:
            by_name.setdefault(row.name, []).append(_version_dict(row))
        result = []
        for name in sorted(by_name, key=_set_order):
            versions = by_name[name]
            published = [v["version"] for v in versions if v["state"] == "published"]
            result.append({
                "name": name,
                "published_version": published[-1] if published else None,
                "draft_version": versions[-1]["version"] if versions[-1]["state"] == "draft" else None,
                "versions": versions,
                "disabled": _disabled_in(name, disabled),
            })  # fmt: skip
        return result

    def get_set(self, name: str, version: int | None = None) -> dict:
        with self.db.connect() as conn:
            return self._get(conn, name, version)

    def diff(self, name: str, a: int, b: int) -> dict:
        """Rows added, removed and changed between two versions, matched by row `_id`."""
        with self.db.connect() as conn:
            old, new = (_readable_rows(self._content(conn, name, v)) for v in (a, b))
        return {
            "added": [row for rid, row in new.items() if rid not in old],
            "removed": [row for rid, row in old.items() if rid not in new],
            "changed": [{"_id": rid, "from": old[rid], "to": row} for rid, row in new.items() if rid in old and old[rid] != row],
        }

    def audit_versions(self, limit: int = 50) -> list[dict]:
        query = sa.select(audit_versions).order_by(audit_versions.c.version.desc()).limit(limit)
        with self.db.connect() as conn:
            return [
                {**_plain(row), "sets": dict(row.sets), "disabled": list(row.disabled), "rule_version": f"audit@{row.version}"}
                for row in conn.execute(query)
            ]

    # ---- changing --------------------------------------------------------------------------

    def ensure_defaults(self, author: str = "system") -> None:
        """Seed version 1 of every default set and audit@1; on an existing install, add only the sets it lacks."""

        def seed(conn: sa.Connection) -> None:
            existing = set(conn.execute(sa.select(rule_sets.c.name).distinct()).scalars())
            now = _now()
            missing = [name for name in (*RULE_SETS, *self.extra_sets) if name not in existing]
            for name in missing:
                content = self.extra_sets[name]() if name in self.extra_sets else default_content(name)
                conn.execute(rule_sets.insert().values(
                    name=name, version=1, state="published", content=content, note="default rules",
                    author=author, created_at=now, published_at=now,
                ))  # fmt: skip
            version, sets, disabled = self._latest_audit(conn)
            query = sa.select(rule_sets.c.name, rule_sets.c.version).where(rule_sets.c.state == "published")
            published = {row.name: row.version for row in conn.execute(query)}
            added = {name: v for name, v in published.items() if name in RULE_SETS and name not in sets}
            if version == 0 or added:
                note = "default rules" if version == 0 else "default rule sets added: " + ", ".join(sorted(added))
                self._insert_audit(conn, version + 1, {**sets, **added}, disabled, author, note)

        self._write(seed)

    def save_draft(self, name: str, content: dict, author: Actor | str, note: str | None = None) -> dict:
        """Store `content` as the set's draft: the existing draft is replaced in place, else a new version."""
        who = as_actor(author)
        author = who.name

        def save(conn: sa.Connection) -> dict:
            self._require_set(conn, name)  # an unknown set is 404 before its content is judged
            self._check(content)
            latest = self._versions(conn, name)[-1]
            now = _now()
            if latest["state"] == "draft":
                version = latest["version"]
                conn.execute(
                    rule_sets.update()
                    .where(rule_sets.c.name == name, rule_sets.c.version == version)
                    .values(content=content, note=note, author=author, created_at=now)
                )
            else:
                version = latest["version"] + 1
                conn.execute(rule_sets.insert().values(
                    name=name, version=version, state="draft", content=content, note=note, author=author, created_at=now,
                ))  # fmt: skip
            audit_log_repo.record(conn, who, "rule.save_draft", "rule_set", name, at=now,
                                  before={"version": latest["version"], "state": latest["state"]},
                                  after={"version": version, "state": "draft", "note": note, "content_digest": _digest(content)})
            return self._get(conn, name, version)

        return self._write(save)

    def publish(self, name: str, author: Actor | str, note: str | None = None, version: int | None = None, *,
                action: str = "rule.publish") -> dict:
        """Publish the latest draft, or any stored `version` (that is how a roll back works)."""
        who = as_actor(author)
        author = who.name

        def publish(conn: sa.Connection) -> dict:
            self._require_set(conn, name)
            versions = {v["version"]: v for v in self._versions(conn, name)}
            target = version
            if target is None:
                latest = versions[max(versions)]
                if latest["state"] != "draft":
                    raise OrderHubError(ErrorCode.CONFLICT, f"rule set {name!r} has no draft to publish")
                target = latest["version"]
            if target not in versions:
                raise OrderHubError(ErrorCode.NOT_FOUND, f"rule set {name!r} has no version {target}", field="version")
            if versions[target]["state"] == "published":
                raise OrderHubError(ErrorCode.CONFLICT, f"{name} version {target} is already published", field="version")
            where = rule_sets.c.name == name
            live = next((v for v, row in versions.items() if row["state"] == "published"), None)
            audit_log_repo.record(conn, who, action, "rule_set", name, before={"published": live}, after={"published": target, "note": note})
            conn.execute(rule_sets.update().where(where, rule_sets.c.state == "published").values(state="retired"))
            conn.execute(rule_sets.update().where(where, rule_sets.c.version == target).values(state="published", published_at=_now()))
            if name in self.extra_sets:
                return {"name": name, "version": target, "rule_version": f"{name}@{target}"}
            audit, sets, disabled = self._latest_audit(conn)
            self._insert_audit(conn, audit + 1, {**sets, name: target}, disabled, author, note or f"publish {name} v{target}")
            return {"name": name, "version": target, "audit_version": audit + 1, "rule_version": f"audit@{audit + 1}"}

        return self._write(publish)

    def rollback(self, name: str, author: Actor | str, note: str | None = None) -> dict:
        """Publish again the version of `name` that was live before the current one."""
        with self.db.connect() as conn:
            self._require_set(conn, name)
            history = conn.execute(sa.select(audit_versions.c.sets).order_by(audit_versions.c.version.desc())).scalars()
            if name in self.extra_sets:  # not in the audit history: each version's last publish time orders them
                query = sa.select(rule_sets.c.version).where(rule_sets.c.name == name, rule_sets.c.published_at.is_not(None))
                history = ({name: v} for v in conn.execute(query.order_by(rule_sets.c.published_at.desc())).scalars())
            current = previous = None
            for sets in history:
                live = sets.get(name)
                if current is None:
                    current = live
                elif live is not None and live != current:
                    previous = live
                    break
        if previous is None:
            raise OrderHubError(ErrorCode.CONFLICT, f"rule set {name!r} has no earlier published version to roll back to")
        return self.publish(name, author, note or f"roll back {name} v{current} -> v{previous}", version=previous, action="rule.rollback")

    def set_switch(self, name: str, rule_id: str, enabled: bool, author: Actor | str) -> dict:
        """Switch one rule (a row `_id`) off or back on, as the next audit version; no deploy, no new rule version."""
        who = as_actor(author)
        author = who.name

        def switch(conn: sa.Connection) -> dict:
            self._require_set(conn, name)
            versions = self._versions(conn, name)
            known = set()
            for v in versions:
                if v["state"] == "published" or v is versions[-1]:
                    known.update(row.get("_id") for row in table_rows(self._content(conn, name, v["version"])))
            if rule_id not in known:
                raise OrderHubError(ErrorCode.NOT_FOUND, f"rule set {name!r} has no rule {rule_id!r}", field="rule_id")
            audit, sets, disabled = self._latest_audit(conn)
            item = f"{name}:{rule_id}"
            wanted = sorted(set(disabled) - {item}) if enabled else sorted({*disabled, item})
            if wanted != sorted(disabled):
                audit_log_repo.record(conn, who, "rule.switch", "rule_set", name, before={"rule_id": rule_id, "enabled": not enabled},
                                      after={"rule_id": rule_id, "enabled": enabled})
                audit += 1
                self._insert_audit(conn, audit, sets, wanted, author, f"{'enable' if enabled else 'disable'} {item}")
            return {"name": name, "rule_id": rule_id, "enabled": enabled, "audit_version": audit, "rule_version": f"audit@{audit}"}

        return self._write(switch)

    # ---- helpers ---------------------------------------------------------------------------

    def _write(self, work: Callable[[sa.Connection], T]) -> T:
        """Run `work` in one transaction; on a primary-key race (another writer took the number) retry afresh."""
        for attempt in range(_RETRIES):
            try:
                with self.db.begin() as conn:
                    result = work(conn)
                self._checked = 0.0  # this process sees its own change at once
                return result
            except sa.exc.IntegrityError:
                if attempt == _RETRIES - 1:
                    raise
                time.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")

    @staticmethod
    def _check(content: Any) -> None:
        problems = RuleEngine.validate(content)
        if problems:
            raise OrderHubError(ErrorCode.RULE_INVALID, "; ".join(problems), field="content")

    @staticmethod
    def _require_set(conn: sa.Connection, name: str) -> None:
        if conn.execute(sa.select(rule_sets.c.version).where(rule_sets.c.name == name).limit(1)).first() is None:
            raise OrderHubError(ErrorCode.NOT_FOUND, f"unknown rule set {name!r}", field="name")

    @staticmethod
    def _versions(conn: sa.Connection, name: str) -> list[dict]:
        rows = conn.execute(sa.select(*_SET_COLUMNS).where(rule_sets.c.name == name).order_by(rule_sets.c.version)).all()
        if not rows:
            raise OrderHubError(ErrorCode.NOT_FOUND, f"unknown rule set {name!r}", field="name")
        return [_version_dict(row) for row in rows]

    @staticmethod
    def _content(conn: sa.Connection, name: str, version: int) -> dict:
        content = conn.execute(
            sa.select(rule_sets.c.content).where(rule_sets.c.name == name, rule_sets.c.version == version)
        ).scalar_one_or_none()
        if content is None:
            raise OrderHubError(ErrorCode.NOT_FOUND, f"rule set {name!r} has no version {version}", field="version")
        return content

    @staticmethod
    def _get(conn: sa.Connection, name: str, version: int | None) -> dict:
        query = sa.select(rule_sets).where(rule_sets.c.name == name)
        query = query.where(rule_sets.c.version == version) if version is not None else query.order_by(rule_sets.c.version.desc())
        row = conn.execute(query.limit(1)).first()
        if row is None:
            what = f"unknown rule set {name!r}" if version is None else f"rule set {name!r} has no version {version}"
            raise OrderHubError(ErrorCode.NOT_FOUND, what, field="version" if version is not None else "name")
        return _plain(row)

    @staticmethod
    def _latest_audit(conn: sa.Connection) -> tuple[int, dict[str, int], list[str]]:
        row = conn.execute(
            sa.select(audit_versions.c.version, audit_versions.c.sets, audit_versions.c.disabled)
            .order_by(audit_versions.c.version.desc())
            .limit(1)
        ).first()
        return (0, {}, []) if row is None else (row.version, dict(row.sets), list(row.disabled))

    @staticmethod
    def _insert_audit(conn: sa.Connection, version: int, sets: Mapping[str, int], disabled: Iterable[str], author: str, note: str) -> None:
        conn.execute(audit_versions.insert().values(
            version=version, sets=dict(sets), disabled=sorted(disabled), author=author, note=note, created_at=_now(),
        ))  # fmt: skip


def _set_order(name: str) -> tuple[int, str]:
    return (RULE_SETS.index(name) if name in RULE_SETS else len(RULE_SETS), name)


def _version_dict(row: sa.Row) -> dict:
    return {k: local(v) if isinstance(v, datetime) else v for k in ("version", "state", "author", "note", "created_at", "published_at") for v in [getattr(row, k)]}


def _plain(row: sa.Row) -> dict:
    """A row as the API shows it: plain str keys (SQLAlchemy's are a str subclass), times in Asia/Shanghai."""
    return {str(k): local(v) if isinstance(v, datetime) else v for k, v in row._mapping.items()}


def _readable_rows(content: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Rows by `_id`, their cells keyed by the column's field (or name) rather than the editor's column ids."""
    rows: dict[str, dict[str, Any]] = {}
    for node in decision_tables(content):
        table = node.get("content") or {}
        labels = {c["id"]: c.get("field") or c.get("name") or c["id"] for c in [*table.get("inputs", ()), *table.get("outputs", ())]}
        for row in table.get("rules") or ():
            rows[str(row.get("_id"))] = {labels.get(k, k): v for k, v in row.items() if v not in ("", None)}
    return rows
