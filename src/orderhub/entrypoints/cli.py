"""The `orderhub` command line."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import orjson
import sqlalchemy as sa

from orderhub.config import ConfigError, Settings, load_settings
from orderhub.domain.errors import OrderHubError


class _Group(click.Group):
    """Shows OrderHub errors as `error: <code>: <message>` (exit 1) instead of a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except OrderHubError as exc:
            raise click.ClickException(f"{exc.code.value}: {exc.message}") from exc


def _settings(config: Path | None, **overrides: object) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


CONFIG = click.option("--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="YAML configuration file.")


@contextmanager
def database(config: Path | None) -> Iterator[sa.Engine]:
    """The configured database, migrated, for commands that work on it directly."""
    from orderhub.adapters.db import migrate
    from orderhub.adapters.db.engine import create_engine

    url = _settings(config).resolved_database_url
    migrate.upgrade(url)
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


@click.group(cls=_Group)
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
def main(verbose: bool) -> None:
    """OrderHub 订单中枢 — every channel's orders in one canonical, deduplicated store."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default 8000).")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="YAML configuration file.")
@click.option("--demo", is_flag=True, help="Seed the demo shop and run the platform simulator in this process.")
@click.option("--demo-rate", default=2.0, show_default=True, help="Simulated orders per second in --demo mode.")
@click.option("--workers/--no-workers", default=None,
              help="Run the processing workers in this process (default: yes in embedded mode, no with a broker URL).")
def serve(host: str | None, port: int | None, config: Path | None, demo: bool, demo_rate: float, workers: bool | None) -> None:
    """Run the API and the console (and, in embedded mode, the workers)."""
    from orderhub.entrypoints.serve import run_server

    settings = _settings(config, host=host, port=port)
    asyncio.run(run_server(settings, demo=demo, demo_rate=demo_rate, workers=workers))


@main.command()
@CONFIG
def worker(config: Path | None) -> None:
    """Run a processing node (scaled mode: ORDERHUB_DATABASE_URL and ORDERHUB_BROKER_URL); stop with SIGTERM."""
    from orderhub.entrypoints.serve import run_worker

    asyncio.run(run_worker(_settings(config)))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9100, show_default=True, type=int)
@click.option("--target", default="http://127.0.0.1:8000", show_default=True, help="OrderHub base URL to push to.")
@click.option("--rate", default=2.0, show_default=True, help="New orders per second (0 = API only).")
@click.option("--seed", default=20251111, show_default=True, type=int)
def simulate(host: str, port: int, target: str, rate: float, seed: int) -> None:
    """Play the platforms (抖店, 有赞, 京东) on localhost: open APIs with real signing, and pushes."""
    from orderhub.simulator.app import run

    asyncio.run(run(host, port, target, rate, seed))


@main.command("migrate")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def migrate_cmd(config: Path | None) -> None:
    """Upgrade the database schema to the newest version (alembic upgrade head)."""
    from orderhub.adapters.db import migrate

    url = _settings(config).resolved_database_url
    migrate.upgrade(url)
    click.echo("schema is up to date")


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--mapping", "mapping_name", required=True, help="Name of a saved column mapping.")
@click.option("--channel", required=True, help="Channel code of the orders, e.g. pos, distributor, jd.")
@click.option("--shop", "shop_id", default="default", show_default=True)
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_cmd(file: Path, mapping_name: str, channel: str, shop_id: str, config: Path | None) -> None:
    """Import orders from a CSV/XLSX file through the normal pipeline, then process them."""
    from orderhub.entrypoints.offline import import_file

    report = asyncio.run(import_file(_settings(config), file, mapping_name, channel, shop_id))
    click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


@main.group(cls=_Group)
def mappings() -> None:
    """Saved column mappings for file import."""


@mappings.command("set")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def mappings_set(name: str, file: Path, config: Path | None) -> None:
    """Save (or replace) mapping NAME from a YAML/JSON FILE."""
    from orderhub.entrypoints.offline import save_mapping

    save_mapping(_settings(config), name, file)
    click.echo(f"mapping {name} saved")


@mappings.command("list")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def mappings_list(config: Path | None) -> None:
    from orderhub.entrypoints.offline import list_mappings

    for name in list_mappings(_settings(config)):
        click.echo(name)


@main.group(cls=_Group)
def quarantine() -> None:
    """Input kept for review: list and replay."""


@quarantine.command("list")
@click.option("--status", default="open", show_default=True)
@click.option("--limit", default=50, show_default=True)
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def quarantine_list(status: str, limit: int, config: Path | None) -> None:
    from orderhub.entrypoints.offline import list_quarantine

    items = list_quarantine(_settings(config), status, limit)
    if not items:
        click.echo("quarantine is empty")
    for item in items:
        click.echo(f"{item['id']:>6}  {item['created_at']}  {item['channel']:<8} {item['code']:<20} {item['original_id'] or '-':<22} {item['message']}")


@quarantine.command("replay")
@click.argument("quarantine_id", type=int)
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def quarantine_replay(quarantine_id: int, config: Path | None) -> None:
    from orderhub.entrypoints.offline import replay

    result = asyncio.run(replay(_settings(config), quarantine_id))
    click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if result["result"] == "quarantined":
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()


@main.group(cls=_Group)
def pii() -> None:
    """Buyer PII keys: generate, rotate; reveal one order's buyer for an operator."""


@pii.command("new-key")
def pii_new_key() -> None:
    """Print a new key for ORDERHUB_PII_KEY (to rotate: put it first, keep the old one after a comma)."""
    from cryptography.fernet import Fernet

    click.echo(Fernet.generate_key().decode())


@pii.command("rotate")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def pii_rotate(config: Path | None) -> None:
    """Re-seal every stored buyer record under the first key of ORDERHUB_PII_KEY."""
    from orderhub.entrypoints.offline import rotate_pii

    click.echo(f"re-sealed {rotate_pii(_settings(config))} orders under the current key")


@pii.command("reveal")
@click.argument("order_id")
@click.option("--field", "fields", multiple=True, type=click.Choice(["phone", "name", "address_detail"]),
              help="Fields to show (default: all); missing ones are decrypted by the platform.")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def pii_reveal(order_id: str, fields: tuple[str, ...], config: Path | None) -> None:
    """Show one order's buyer in plaintext (operators only: the output is not masked)."""
    from orderhub.entrypoints.offline import reveal_pii

    shown = asyncio.run(reveal_pii(_settings(config), order_id, fields or ("phone", "name", "address_detail")))
    click.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())


# The audit's command groups (rules, inventory, exceptions), the outbox's and users/api-keys register themselves on `main`.
from orderhub.entrypoints import cli_audit  # noqa: E402,F401
from orderhub.entrypoints import cli_outbox  # noqa: E402,F401
from orderhub.entrypoints import cli_users  # noqa: E402,F401
from orderhub.entrypoints import cli_ops  # noqa: E402,F401
