"""`orderhub switches`, `orderhub fleet` and `orderhub prune`: the peak's controls and the retention sweep from the command line, on the database directly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from orderhub.adapters.db import leases, queries
from orderhub.config import load_settings
from orderhub.entrypoints.cli import CONFIG, _Group, database, main
from orderhub.domain.access import Actor
from orderhub.entrypoints.cli_audit import ACTOR
from orderhub.services import retention
from orderhub.services.switches import SWITCHES, Switches


@main.group(cls=_Group)
def switches() -> None:
    """Degradation switches: defer non-core work at the peak (the lag watcher flips those in auto mode)."""


@switches.command("list")
@CONFIG
def switches_list(config: Path | None) -> None:
    with database(config) as engine:
        for s in Switches(engine).list():
            state = "ON " if s["on"] else "off"
            by = f"{s['set_by']} {queries.local(s['set_at'])}: {s['reason'] or ''}" if s["set_by"] else ""
            click.echo(f"{s['name']:<22} {state} {s['mode']:<6} {by}")
            click.echo(f"{'':<22} {s['description']}")


@switches.command("set")
@click.argument("name", type=click.Choice(list(SWITCHES)))
@click.argument("state", type=click.Choice(["on", "off", "auto"]))
@click.option("--reason", help="Why (kept in the audit log).")
@ACTOR
@CONFIG
def switches_set(name: str, state: str, reason: str | None, actor: Actor, config: Path | None) -> None:
    """on / off: held by hand (the lag watcher leaves it); auto: given back to the lag watcher (off for now)."""
    with database(config) as engine:
        s = Switches(engine).set(name, state == "on", mode="auto" if state == "auto" else "manual", actor=actor, reason=reason)
    click.echo(f"{s['name']}: {'on' if s['on'] else 'off'} ({s['mode']})")


@main.command()
@CONFIG
def fleet(config: Path | None) -> None:
    """Scaled mode: live workers and the partitions each holds."""
    ttl = timedelta(seconds=load_settings(config).broker.lease_s)
    now = datetime.now(UTC)
    with database(config) as engine:
        workers = leases.live_workers(engine, now, ttl)
        held = [h for h in leases.holders(engine) if h["owner"] and h["lease_until"] and h["lease_until"] > now]
    for w in workers:
        mine = sorted(int(h["name"].split(":")[1]) for h in held if h["owner"] == w["id"] and h["name"].startswith("partition:"))
        duty = " singleton" if any(h["owner"] == w["id"] and h["name"] == "duty:singleton" for h in held) else ""
        click.echo(f"{w['id']:<40} seen {queries.local(w['seen_at'])} partitions {mine}{duty}  {w['stats'] or ''}")
    if not workers:
        click.echo("no live workers (embedded mode runs its workers inside `orderhub serve`)")


@main.command()
@click.option("--dry-run", is_flag=True, help="Count what would go; delete nothing.")
@CONFIG
def prune(dry_run: bool, config: Path | None) -> None:
    """Delete finished operational rows past their retention (settings `retention`; `orderhub serve` does it hourly)."""
    settings = load_settings(config).retention
    with database(config) as engine:
        counts = retention.prune(engine, settings, dry_run=dry_run)
    for name, n in counts.items():
        click.echo(f"{name:<14} {n} {'would be deleted' if dry_run else 'deleted'}")
    if not counts:
        click.echo("every retention is 0: nothing is ever deleted")
