"""The `orderhub` command line on the embedded database."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from orderhub.entrypoints.cli import main

MAPPING = {
    "channel": "pos",
    "columns": {"order_no": "单号", "created_at": "下单时间", "sku": "商品编码", "title": "商品名称", "qty": "数量", "unit_price": "单价", "paid": "实收"},
}


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("ORDERHUB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("ORDERHUB_DATABASE_URL", raising=False)
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(main, list(args), catch_exceptions=False)
        return result.exit_code, result.output

    (tmp_path / "pos.yaml").write_text(yaml.safe_dump(MAPPING, allow_unicode=True), encoding="utf-8")
    return run, tmp_path


def test_a_pos_file_is_imported_with_a_saved_mapping_and_processed(cli):
    run, tmp = cli
    assert run("migrate") == (0, "schema is up to date\n")
    assert run("mappings", "set", "pos", str(tmp / "pos.yaml"))[0] == 0
    assert run("mappings", "list")[1].split() == ["pos"]
    (tmp / "orders.csv").write_text(
        "单号,下单时间,商品编码,商品名称,数量,单价,实收\nPOS-1,2025-03-18 10:00:00,SKU-1001,纯棉T恤,2,59.90,110.00\nPOS-2,2025-03-18 11:00:00,SKU-1002,帆布袋,1,29.90,29.90\n",
        encoding="utf-8",
    )
    code, output = run("import", str(tmp / "orders.csv"), "--mapping", "pos", "--channel", "pos")
    report = json.loads(output)
    assert code == 0
    assert (report["rows"], report["orders"], report["outcomes"]) == (2, 2, {"created": 2})
    # importing the same file again creates nothing new
    again = json.loads(run("import", str(tmp / "orders.csv"), "--mapping", "pos", "--channel", "pos")[1])
    assert again["outcomes"] == {"unchanged": 2}


def test_a_file_with_a_rounded_order_number_is_refused_naming_the_row(cli):
    run, tmp = cli
    run("mappings", "set", "pos", str(tmp / "pos.yaml"))
    (tmp / "bad.csv").write_text("单号,下单时间,商品编码,商品名称,数量,单价,实收\n4.95123E+18,2025-03-18 10:00:00,SKU-1,T恤,1,10,10\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["import", str(tmp / "bad.csv"), "--mapping", "pos", "--channel", "pos"])
    assert result.exit_code == 1
    assert "precision_lost" in result.output and "第2行" in result.output


def test_quarantined_input_is_listed_and_replayed_from_the_command_line(cli):
    run, tmp = cli
    run("mappings", "set", "pos", str(tmp / "pos.yaml"))
    # amounts that do not add up: 2 x 59.90 is 119.80 but the file says 500 was paid with no discount column
    (tmp / "odd.csv").write_text("单号,下单时间,商品编码,商品名称,数量,单价,实收\nPOS-9,2025-03-18 10:00:00,SKU-1,T恤,2,59.90,500\n", encoding="utf-8")
    report = json.loads(run("import", str(tmp / "odd.csv"), "--mapping", "pos", "--channel", "pos")[1])
    assert report["outcomes"] == {"quarantined": 1}
    code, listing = run("quarantine", "list")
    assert code == 0 and "POS-9" in listing and "amounts_mismatch" in listing
    quarantine_id = listing.split()[0]
    code, output = run("quarantine", "replay", quarantine_id)
    assert code == 1 and json.loads(output)["result"] == "quarantined"
    again = CliRunner().invoke(main, ["quarantine", "replay", quarantine_id])
    assert again.exit_code == 1 and "conflict: quarantine item" in again.output and "already replayed" in again.output


def test_buyer_pii_keys_are_rotated_and_an_operator_can_reveal_a_buyer(cli, monkeypatch):
    run, tmp = cli
    mapping = {**MAPPING, "columns": {**MAPPING["columns"], "receiver_name": "收货人", "receiver_phone": "手机"}}
    (tmp / "pos.yaml").write_text(yaml.safe_dump(mapping, allow_unicode=True), encoding="utf-8")
    old = run("pii", "new-key")[1].strip()
    monkeypatch.setenv("ORDERHUB_PII_KEY", old)
    monkeypatch.setenv("ORDERHUB_HASH_KEY", "a-hash-key-of-the-merchant-000")
    assert run("mappings", "set", "pos", str(tmp / "pos.yaml"))[0] == 0
    (tmp / "orders.csv").write_text(
        "单号,下单时间,商品编码,商品名称,数量,单价,实收,收货人,手机\nPOS-9,2025-03-18 10:00:00,SKU-1001,纯棉T恤,1,59.90,59.90,王小明,13800001234\n",
        encoding="utf-8",
    )
    assert run("import", str(tmp / "orders.csv"), "--mapping", "pos", "--channel", "pos")[0] == 0
    from orderhub.domain.ids import order_id

    oid = order_id("pos", "POS-9")
    new = run("pii", "new-key")[1].strip()
    monkeypatch.setenv("ORDERHUB_PII_KEY", f"{new},{old}")
    assert run("pii", "rotate") == (0, "re-sealed 1 orders under the current key\n")
    assert run("pii", "rotate") == (0, "re-sealed 0 orders under the current key\n")
    monkeypatch.setenv("ORDERHUB_PII_KEY", new)  # the old key retired
    code, output = run("pii", "reveal", oid)
    assert code == 0 and json.loads(output) == {"phone": "13800001234", "name": "王小明"}
