"""`orderhub rules|inventory|exceptions`: the audit from the command line, on the database directly."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import orjson
import sqlalchemy as sa

from orderhub.adapters.db import inventory_repo, queries
from orderhub.entrypoints.cli import CONFIG, _Group, _settings, database, main
from orderhub.domain.access import Actor
from orderhub.services import order_actions, rule_trials, stock_changes
from orderhub.bootstrap import rule_book
from orderhub.services.rules import RuleBook

ACTOR = click.option("--actor", default="cli", show_default=True, help="Who does it (kept in the event log and the audit log).",
                     callback=lambda _ctx, _param, value: Actor(value, "cli"))


@contextmanager
def _rulebook(config: Path | None) -> Iterator[tuple[sa.Engine, RuleBook]]:
    with database(config) as engine:
        book = rule_book(engine)
        book.ensure_defaults()
        yield engine, book


def _echo(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str).decode())


def _json_file(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise click.ClickException(f"{path} is not JSON: {exc}") from exc


# -- rules ------------------------------------------------------------------------------------


@main.group(cls=_Group)
def rules() -> None:
    """Audit rule sets: list, draft, test (dry run), backtest, publish, rollback, switch."""


@rules.command("list")
@CONFIG
def rules_list(config: Path | None) -> None:
    with _rulebook(config) as (_, book):
        click.echo(f"live: {book.live().label}")
        for s in book.list_sets():
            disabled = f"  off: {', '.join(s['disabled'])}" if s.get("disabled") else ""
            click.echo(f"{s['name']:<10} published v{s['published_version']}  draft {('v' + str(s['draft_version'])) if s['draft_version'] else '-'}{disabled}")


@rules.command("show")
@click.argument("name")
@click.option("--version", type=int, help="Default: the latest version.")
@CONFIG
def rules_show(name: str, version: int | None, config: Path | None) -> None:
    with _rulebook(config) as (_, book):
        _echo(book.get_set(name, version))


@rules.command("draft")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--note")
@ACTOR
@CONFIG
def rules_draft(name: str, file: Path, note: str | None, actor: str, config: Path | None) -> None:
    """Save FILE (a JDM graph, JSON) as the draft of rule set NAME."""
    with _rulebook(config) as (_, book):
        _echo(book.save_draft(name, _json_file(file) or {}, actor, note))


@rules.command("test")
@click.argument("name")
@click.option("--order", "order_id", help="A stored order id.")
@click.option("--order-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="An order body (JSON, the API's shape).")
@click.option("--file", "draft", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="An unsaved draft (default: the saved draft).")
@CONFIG
def rules_test(name: str, order_id: str | None, order_file: Path | None, draft: Path | None, config: Path | None) -> None:
    """Dry run: the draft's decision on one order, beside the live one, and why."""
    with _rulebook(config) as (engine, book):
        _echo(rule_trials.dry_run(engine, book, name, order_id=order_id, order=_json_file(order_file), content=_json_file(draft)))


@rules.command("backtest")
@click.argument("name")
@click.option("--days", default=7.0, show_default=True)
@click.option("--limit", default=20_000, show_default=True)
@click.option("--file", "draft", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="An unsaved draft (default: the saved draft).")
@CONFIG
def rules_backtest(name: str, days: float, limit: int, draft: Path | None, config: Path | None) -> None:
    """Which of the last DAYS' orders the draft would decide differently."""
    with _rulebook(config) as (engine, book):
        def progress(done: int, total: int) -> None:
            click.echo(f"\r{done}/{total} orders", nl=False, err=True)

        report = rule_trials.backtest(engine, book, name, days=days, limit=limit, content=_json_file(draft), progress=progress)
        click.echo("", err=True)
        _echo(report)


@rules.command("publish")
@click.argument("name")
@click.option("--version", type=int, help="Publish this stored version (a rollback to it) instead of the draft.")
@click.option("--note")
@ACTOR
@CONFIG
def rules_publish(name: str, version: int | None, note: str | None, actor: str, config: Path | None) -> None:
    with _rulebook(config) as (_, book):
        _echo(book.publish(name, actor, note, version))


@rules.command("rollback")
@click.argument("name")
@click.option("--note")
@ACTOR
@CONFIG
def rules_rollback(name: str, note: str | None, actor: str, config: Path | None) -> None:
    with _rulebook(config) as (_, book):
        _echo(book.rollback(name, actor, note))


@rules.command("switch")
@click.argument("name")
@click.argument("rule_id")
@click.option("--on/--off", "enabled", required=True)
@ACTOR
@CONFIG
def rules_switch(name: str, rule_id: str, enabled: bool, actor: str, config: Path | None) -> None:
    """Switch one rule of set NAME on or off (e.g. during a peak)."""
    with _rulebook(config) as (_, book):
        _echo(book.set_switch(name, rule_id, enabled, actor))


# -- inventory ------------------------------------------------------------------------------------


@main.group(cls=_Group)
def inventory() -> None:
    """Stock per SKU and warehouse, its ledger and adjustments."""


@inventory.command("list")
@click.option("--sku", help="SKU code prefix.")
@click.option("--warehouse")
@click.option("--limit", default=50, show_default=True)
@CONFIG
def inventory_list(sku: str | None, warehouse: str | None, limit: int, config: Path | None) -> None:
    with database(config) as engine, engine.connect() as conn:
        items, _ = inventory_repo.list_stock(conn, sku=sku, warehouse=warehouse, limit=limit)
    click.echo(f"{'sku':<12} {'warehouse':<10} {'on_hand':>8} {'reserved':>8} {'safety':>7} {'available':>9}")
    for r in items:
        click.echo(f"{r['sku']:<12} {r['warehouse']:<10} {r['on_hand']:>8} {r['reserved']:>8} {r['safety']:>7} {r['available']:>9}")


@inventory.command("ledger")
@click.argument("sku")
@click.option("--limit", default=50, show_default=True)
@CONFIG
def inventory_ledger(sku: str, limit: int, config: Path | None) -> None:
    with database(config) as engine, engine.connect() as conn:
        for r in inventory_repo.ledger(conn, sku, limit=limit):
            click.echo(f"{queries.local(r['at'])}  {r['warehouse']:<9} {r['kind']:<8} on_hand {r['on_hand_delta']:+d} reserved {r['reserved_delta']:+d}  {r['order_id'] or '-'}  {r['actor']}  {r['reason'] or ''}")


@inventory.command("adjust", context_settings={"ignore_unknown_options": True})  # so "-20" is a DELTA, not an option
@click.argument("sku")
@click.argument("warehouse")
@click.argument("delta", type=int)
@click.option("--reason", required=True)
@ACTOR
@CONFIG
def inventory_adjust(sku: str, warehouse: str, delta: int, reason: str, actor: Actor, config: Path | None) -> None:
    """Receive (+DELTA) or write off (-DELTA) stock; orders held 缺货 for SKU are audited again."""
    with database(config) as engine:
        requeued = stock_changes.adjust_stock(engine, actor, sku, warehouse, delta, reason)
    click.echo(f"{sku}@{warehouse} {delta:+d}; {requeued} held orders will be audited again")


@inventory.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@CONFIG
def inventory_import(file: Path, config: Path | None) -> None:
    """Absolute stock counts from a WMS file (CSV/XLSX: sku/商家编码, warehouse/仓库, on_hand/库存)."""
    from orderhub.adapters.channels.registry import ShopRegistry
    from orderhub.adapters.wms.stock import FileWmsStock
    from orderhub.services.stock_sync import StockSync

    with database(config) as engine:
        sync = StockSync(engine, ShopRegistry([]), None, FileWmsStock.from_path(file), {})
        _echo(asyncio.run(sync.import_wms(reason=f"库存文件 {file.name}")).as_dict())


@inventory.command("push")
@CONFIG
def inventory_push(config: Path | None) -> None:
    """Push sellable stock (less each channel's buffer) to every configured channel shop now."""
    from orderhub.entrypoints.offline import push_stock

    _echo(asyncio.run(push_stock(_settings(config))))


@inventory.command("check")
@CONFIG
def inventory_check(config: Path | None) -> None:
    """Exit 1 unless reserved == Σ active reservations for every SKU and warehouse."""
    with database(config) as engine, engine.connect() as conn:
        mismatches = inventory_repo.check_invariant(conn)
    if mismatches:
        _echo(mismatches)
        raise SystemExit(1)
    click.echo("healthy: reserved == Σ active reservations everywhere")


# -- exceptions -------------------------------------------------------------------------------------


@main.group(cls=_Group)
def exceptions() -> None:
    """异常订单: orders with holds, and the actions on them."""


@exceptions.command("list")
@click.option("--code", help="One hold code, e.g. risk_review.")
@click.option("--limit", default=50, show_default=True)
@CONFIG
def exceptions_list(code: str | None, limit: int, config: Path | None) -> None:
    with database(config) as engine, engine.connect() as conn:
        counts = queries.hold_counts(conn)
        items, _ = queries.list_orders(conn, queries.OrderFilters(hold=code, held=True), limit, None)
    click.echo("  ".join(f"{c}: {n}" for c, n in counts.items()) or "no held orders")
    for o in items:
        holds = "; ".join(f"{h['code']}({h['reason']})" for h in o["holds"])
        click.echo(f"{o['id']}  {o['channel']:<15} {o['original_id']:<22} {o['status']:<9} {holds}")


def _action(name: str, fn: Any, help_text: str, with_code: bool) -> None:
    @click.argument("order_id")
    @click.option("--reason", required=True)
    @ACTOR
    @CONFIG
    def command(order_id: str, reason: str, actor: str, config: Path | None, code: str | None = None) -> None:
        with database(config) as engine:
            kwargs: dict[str, Any] = {"actor": actor, "reason": reason}
            if with_code:
                kwargs["code"] = code
            _echo(fn(engine, order_id, **kwargs))

    command.__doc__ = help_text
    if with_code:
        command = click.option("--code", help="One hold code (default: every hold).")(command)
    exceptions.command(name)(command)


_action("release", order_actions.release_hold, "放行: lift a hold and audit again.", True)
_action("resolve", order_actions.resolve_hold, "标记已处理: the cause was fixed; audit again.", True)
_action("cancel", order_actions.cancel_order, "Cancel an order not yet at the warehouse (stock goes back).", False)
