"""`orderhub rules | inventory | exceptions` on the embedded database."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from orderhub.entrypoints.cli import main


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("ORDERHUB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("ORDERHUB_DATABASE_URL", raising=False)
    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str]:
        result = runner.invoke(main, list(args), catch_exceptions=False)
        return result.exit_code, result.output

    return invoke


def test_rules_are_listed_switched_shown_and_refused_clearly_from_the_command_line(run, tmp_path):
    code, out = run("rules", "list")
    assert code == 0 and out.splitlines()[0] == "live: audit@1"
    assert {line.split()[0] for line in out.splitlines()[1:]} == {"routing", "priority", "holds", "gifts", "carrier", "split", "stall"}
    code, out = run("rules", "switch", "holds", "risk-xinjiang-tibet", "--off", "--actor", "ops-lead")
    assert code == 0 and json.loads(out)["rule_version"] == "audit@2"
    assert "off: risk-xinjiang-tibet" in run("rules", "list")[1]
    code, out = run("rules", "publish", "holds")  # there is no draft
    assert code == 1 and "conflict" in out
    shown = json.loads(run("rules", "show", "routing")[1])
    (tmp_path / "routing.json").write_text(json.dumps(shown["content"], ensure_ascii=False), encoding="utf-8")
    code, out = run("rules", "draft", "routing", str(tmp_path / "routing.json"), "--note", "原样")
    assert code == 0 and json.loads(out)["state"] == "draft"
    code, out = run("rules", "backtest", "routing", "--days", "1")
    assert code == 0 and json.loads(out)["orders"] == 0
    (tmp_path / "bad.json").write_text('{"nodes": []}', encoding="utf-8")
    code, out = run("rules", "draft", "holds", str(tmp_path / "bad.json"))
    assert code == 1 and "rule_invalid" in out


def test_stock_is_received_listed_and_checked_and_a_write_off_below_reserved_is_refused(run, tmp_path):
    (tmp_path / "stock.csv").write_text("商家编码,仓库,库存\nSKU-1001,WH-EAST,12\n", encoding="utf-8")
    run("migrate")
    from orderhub.adapters.db.engine import create_engine
    from orderhub.services import catalogue

    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'orderhub.db'}")
    catalogue.upsert_catalogue(engine, [{"code": "WH-EAST", "name": "华东仓", "city": "上海"}], [])
    engine.dispose()
    code, out = run("inventory", "import", str(tmp_path / "stock.csv"))
    assert code == 0 and json.loads(out)["counts"] == 1
    code, out = run("inventory", "adjust", "SKU-1001", "WH-EAST", "5", "--reason", "到货")
    assert code == 0
    listing = run("inventory", "list", "--sku", "SKU-")[1].splitlines()
    assert listing[1].split() == ["SKU-1001", "WH-EAST", "17", "0", "0", "17"]
    assert run("inventory", "check") == (0, "healthy: reserved == Σ active reservations everywhere\n")
    assert "receive" in run("inventory", "ledger", "SKU-1001")[1]
    code, out = run("inventory", "adjust", "SKU-1001", "WH-EAST", "-20", "--reason", "盘亏")
    assert code == 1 and "insufficient_stock" in out
    assert run("exceptions", "list") == (0, "no held orders\n")
