"""`orderhub outbox`: the dead-letter queue (and the rest of the outbox) from the command line, on the database directly."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from orderhub.adapters.db import outbox_repo, queries
from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.entrypoints.cli import CONFIG, _Group, database, main


@main.group(cls=_Group)
def outbox() -> None:
    """Messages to WMS, carriers, platforms and notification channels: list them, retry dead ones."""


@outbox.command("list")
@click.option("--status", type=click.Choice(outbox_repo.STATUSES), help="e.g. dead: the messages that gave up, with their errors.")
@click.option("--kind", help="A kind (wms.freeze) or a prefix (wms).")
@click.option("--order", "order_id", help="One order's messages.")
@click.option("--limit", default=50, show_default=True)
@CONFIG
def outbox_list(status: str | None, kind: str | None, order_id: str | None, limit: int, config: Path | None) -> None:
    with database(config) as engine, engine.connect() as conn:
        counts = outbox_repo.counts(conn)
        rows = outbox_repo.list_messages(conn, status=status, kind=kind, order_id=order_id, limit=limit)
    click.echo("  ".join(f"{name}: {n}" for name, n in counts.items()))
    for r in rows:
        when = queries.local(r["sent_at"] if r["status"] == outbox_repo.SENT else r["next_attempt_at"])
        click.echo(f"{r['id']:>8}  {r['status']:<7} {r['kind']:<16} {r['endpoint']:<16} {r['order_id'] or '-':<32} "
                   f"attempts {r['attempts']:<3} {when}  {r['last_error'] or ''}")


@outbox.command("retry")
@click.argument("message_id", type=int)
@CONFIG
def outbox_retry(message_id: int, config: Path | None) -> None:
    """Send message MESSAGE_ID again now (a running relay picks it up at its next poll)."""
    with database(config) as engine, engine.begin() as conn:
        if not outbox_repo.retry(conn, message_id, now=datetime.now(UTC)):
            row = outbox_repo.get_message(conn, message_id)
            if row is None:
                raise OrderHubError(ErrorCode.NOT_FOUND, f"no outbox message {message_id}", "id")
            raise OrderHubError(ErrorCode.CONFLICT, f"outbox message {message_id} is {row['status']}: nothing to retry", "id")
    click.echo(f"outbox message {message_id} is pending again")
