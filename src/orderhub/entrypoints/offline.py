"""CLI commands that work on the database directly, without a running server."""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Any

import yaml

from orderhub.adapters.db import queries
from orderhub.adapters.db.inbox import claim
from orderhub.bootstrap import Runtime
from orderhub.config import Settings
from orderhub.domain.access import Actor
from orderhub.services import buyer_access, imports, quarantine


def cli_actor() -> Actor:
    """Who runs a command, for the audit log: `cli:<os user>`."""
    try:
        name = getpass.getuser()
    except Exception:  # no login name (a container user without a passwd entry)
        name = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return Actor(f"cli:{name}"[:64], "cli")


async def import_file(settings: Settings, file: Path, mapping_name: str, channel: str, shop_id: str) -> dict[str, Any]:
    runtime = Runtime(settings)
    try:
        report = imports.import_file(runtime.engine, file.read_bytes(), file.name, mapping_name, channel, shop_id, runtime.pii)
        rows = claim(runtime.engine, len(report["inbox_ids"]) or 1, ids=report["inbox_ids"])
        result = await runtime.processor.process(rows) if rows else None
        report["outcomes"] = dict(result.outcomes) if result else {}
        return report
    finally:
        await runtime.stop()


def save_mapping(settings: Settings, name: str, file: Path) -> None:
    runtime = Runtime(settings)
    try:
        imports.save_mapping(runtime.engine, name, yaml.safe_load(file.read_text(encoding="utf-8")), cli_actor())
    finally:
        runtime.engine.dispose()


def list_mappings(settings: Settings) -> list[str]:
    runtime = Runtime(settings)
    try:
        return imports.mapping_names(runtime.engine)
    finally:
        runtime.engine.dispose()


def list_quarantine(settings: Settings, status: str, limit: int) -> list[dict[str, Any]]:
    runtime = Runtime(settings)
    try:
        with runtime.engine.connect().execution_options(readonly=True) as conn:
            return queries.list_quarantine(conn, status, None, limit, None)
    finally:
        runtime.engine.dispose()


async def replay(settings: Settings, quarantine_id: int) -> dict[str, Any]:
    runtime = Runtime(settings)
    try:
        return await quarantine.replay(runtime.processor, quarantine_id, cli_actor())
    finally:
        await runtime.stop()


def rotate_pii(settings: Settings) -> int:
    runtime = Runtime(settings)
    try:
        return runtime.pii.rotate(runtime.engine)
    finally:
        runtime.engine.dispose()


async def reveal_pii(settings: Settings, order_id: str, fields: tuple[str, ...]) -> dict[str, str]:
    runtime = Runtime(settings)
    try:
        shown = await runtime.pii.reveal(runtime.engine, order_id, fields)
        buyer_access.log_reveal(runtime.engine, cli_actor(), order_id, sorted(shown))  # an operator's look is logged like anyone's
        return shown
    finally:
        await runtime.stop()


async def push_stock(settings: Settings) -> dict[str, Any]:
    runtime = Runtime(settings)
    try:
        return (await runtime.stock_sync.push_channels()).as_dict()
    finally:
        await runtime.stop()
