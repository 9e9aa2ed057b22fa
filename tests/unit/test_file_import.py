"""File import: CSV/XLSX with a saved column mapping -> raw file orders -> canonical orders."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from openpyxl import Workbook

from orderhub.adapters.channels.base import ShopConfig
from orderhub.adapters.channels.file_import import (
    ColumnMapping,
    FileChannel,
    FileImportError,
    group_orders,
    mask_file_order,
    read_table,
)
from orderhub.domain.errors import ErrorCode, NormalizationError, OrderHubError
from orderhub.domain.ids import order_id
from orderhub.domain.status import Status

CST = timezone(timedelta(hours=8))
SHOP = ShopConfig(channel="pos", shop_id="POS-01", name="门店一号")
PHONE = "13812345678"

HEADERS = ["订单号", "下单时间", "付款时间", "订单状态", "商家编码", "商品名称", "数量", "单价", "赠品",
           "优惠", "运费", "实付", "收货人", "手机", "省", "市", "区", "详细地址", "买家留言"]  # fmt: skip
MAPPING = ColumnMapping(
    name="门店POS导出",
    channel="pos",
    columns={
        "order_no": "订单号", "created_at": "下单时间", "paid_at": "付款时间", "status": "订单状态",
        "sku": "商家编码", "title": "商品名称", "qty": "数量", "unit_price": "单价", "gift": "赠品",
        "discount": "优惠", "shipping": "运费", "paid": "实付",
        "receiver_name": "收货人", "receiver_phone": "手机",
        "province": "省", "city": "市", "district": "区", "address": "详细地址", "buyer_message": "买家留言",
    },  # fmt: skip
    status_values={"已付款": "paid", "已取消": "cancelled", "已发货": "shipped"},
)

# Two orders, the first on three rows (with a gift), the second on one.
ROWS = [
    ["P20250318001", "2025-03-18 10:12:00", "2025-03-18 10:12:41", "已付款", "SKU-1001", "纯棉T恤", "2", "¥59.90", "",
     "10", "8", "", "张三", PHONE, "浙江省", "杭州市", "西湖区", "浙江省杭州市西湖区文三路100号", "请尽快发货"],
    ["P20250318001", "", "", "", "SKU-1002", "帆布袋", "1", "29.9", "", "", "", "", "", "", "", "", "", "", ""],
    ["P20250318001", "", "", "", "GIFT-01", "贴纸", "1", "0", "是", "", "", "", "", "", "", "", "", "", ""],
    ["P20250318002", "2025/03/18 11:00", "", "已取消", "SKU-1001", "纯棉T恤", "1", "1,299.00", "", "", "0", "1299",
     "李四", "13900001111", "上海", "上海市", "浦东新区", "世纪大道1号", ""],
]  # fmt: skip


def csv_bytes(rows: list[list[str]], headers: list[str] = HEADERS, encoding: str = "utf-8-sig") -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(headers)
    writer.writerows(rows)
    return buffer.getvalue().encode(encoding)


def xlsx_bytes(rows: list[list[object]], headers: list[str] = HEADERS) -> bytes:
    book = Workbook()
    sheet = book.active
    sheet.append(headers)
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def import_orders(data: bytes, filename: str, mapping: ColumnMapping = MAPPING, channel: str | None = None):
    rows = read_table(data, filename, mapping)
    raws = group_orders(rows, mapping, channel, "POS-01")
    return raws, [FileChannel().normalize(json.loads(json.dumps(raw)), SHOP) for raw in raws]


def check_expected_orders(orders):
    first, second = orders
    assert first.channel == "pos" and first.original_id == "P20250318001" and first.shop_id == "POS-01"
    assert first.id == order_id("pos", "P20250318001")
    assert first.status is Status.PAID and first.platform_status == {"status": "已付款"}
    assert first.created_at == datetime(2025, 3, 18, 10, 12, tzinfo=CST)
    assert first.paid_at == datetime(2025, 3, 18, 10, 12, 41, tzinfo=CST)
    assert first.updated_at == first.paid_at  # no update column: max(created, paid)
    a = first.amounts
    # goods 2*5990 + 2990 + 0 = 14970; paid derived = 14970 - 1000 + 800
    assert (a.goods, a.discount, a.shipping, a.paid) == (14970, 1000, 800, 14770)
    assert (a.discount_shop, a.discount_platform) == (None, None)
    assert [(l.sku, l.qty, l.unit_price, l.gift) for l in first.lines] == [
        ("SKU-1001", 2, 5990, False), ("SKU-1002", 1, 2990, False), ("GIFT-01", 1, 0, True)
    ]  # fmt: skip
    assert [l.paid for l in first.lines] == [11180, 2790, 0]  # 13970 by 11980:2990:0 -> 11180.2, 2790.2
    assert sum(l.paid for l in first.lines) == a.paid - a.shipping
    assert (first.buyer.name, first.buyer.phone) == ("张*", "138****5678")
    assert (first.address.province, first.address.city, first.address.district) == ("浙江省", "杭州市", "西湖区")
    assert first.address.detail == "文三***"
    assert first.buyer_message == "请尽快发货" and first.pii == {}

    assert second.status is Status.CANCELLED
    assert second.created_at == datetime(2025, 3, 18, 11, 0, tzinfo=CST) and second.paid_at is None
    b = second.amounts
    assert (b.goods, b.discount, b.shipping, b.paid) == (129900, 0, 0, 129900)
    assert second.lines[0].paid == 129900


# ---- end to end: CSV and XLSX ------------------------------------------------------------------


def test_csv_with_multi_line_orders():
    raws, orders = import_orders(csv_bytes(ROWS), "pos.csv")
    assert [r["original_id"] for r in raws] == ["P20250318001", "P20250318002"]
    assert raws[0]["source_rows"] == [2, 3, 4] and raws[1]["source_rows"] == [5]
    check_expected_orders(orders)


def test_xlsx_with_multi_line_orders_and_typed_cells():
    rows = [list(r) for r in ROWS]
    rows[0][1] = datetime(2025, 3, 18, 10, 12)  # a real date cell
    rows[0][6], rows[0][7], rows[1][7] = 2, 59.9, 29.9  # numbers, not text
    rows[3][10], rows[3][11] = 0, 1299.0
    _, orders = import_orders(xlsx_bytes(rows), "pos.xlsx")
    check_expected_orders(orders)


def test_gbk_csv_is_decoded():
    rows = [[c.replace("¥", "￥") for c in r] for r in ROWS]  # GBK has the full-width sign only
    data = csv_bytes(rows, encoding="gbk")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    _, orders = import_orders(data, "export.csv")
    check_expected_orders(orders)


def test_plain_utf8_csv_without_bom():
    _, orders = import_orders(csv_bytes(ROWS, encoding="utf-8"), "pos.csv")
    check_expected_orders(orders)


def test_file_import_of_a_jd_export_gets_the_same_id_as_the_pulled_order():
    rows = [["300000000001", "2025-03-18 10:12:00", "", "已付款", "SKU", "T恤", "1", "59.90"] + [""] * 11]
    raws, orders = import_orders(csv_bytes(rows), "jd.csv", channel="jd")
    assert raws[0]["channel"] == "jd" and orders[0].id == order_id("jd", "300000000001")


# ---- identifiers a spreadsheet has rounded -------------------------------------------------


def one_order_row(order_no: object) -> list[object]:
    return [order_no, "2025-03-18 10:12:00", "", "已付款", "SKU-1", "T恤", 1, 59.9] + [""] * 11


def test_19_digit_order_number_stored_as_a_number_is_rejected_naming_row_and_column():
    rows = [one_order_row(f"P{i}") for i in range(3)] + [one_order_row(4951234567890123456.0)]
    rows.append(one_order_row(4951234567890123457))  # an int cell: Excel could not hold it either
    with pytest.raises(FileImportError) as info:
        read_table(xlsx_bytes(rows), "orders.xlsx", MAPPING)
    error = info.value
    assert isinstance(error, OrderHubError) and error.code is ErrorCode.PRECISION_LOST
    assert [(e["row"], e["column"], e["code"]) for e in error.errors] == [(5, "订单号", "precision_lost"), (6, "订单号", "precision_lost")]
    assert error.errors[0]["message"].startswith("第5行 订单号: 数字超过15位已丢失精度 (4.95123E+18)；请把该列设为文本后重新导出")
    assert "row 5, column 订单号" in error.errors[0]["message"]
    assert "第5行" in error.message and "第6行" in error.message


def test_scientific_text_pasted_into_an_xlsx_id_cell_is_rejected():
    with pytest.raises(FileImportError) as info:
        read_table(xlsx_bytes([one_order_row("4.95123E+18")]), "orders.xlsx", MAPPING)
    assert [(e["row"], e["column"]) for e in info.value.errors] == [(2, "订单号")]


def test_19_digit_order_number_stored_as_text_is_exact():
    _, orders = import_orders(xlsx_bytes([one_order_row("4951234567890123456")]), "orders.xlsx")
    assert orders[0].original_id == "4951234567890123456"


def test_15_digit_numeric_cell_is_accepted_as_integer_text():
    rows = read_table(xlsx_bytes([one_order_row(495123456789012.0), one_order_row(123456789012345)]), "o.xlsx", MAPPING)
    assert [r["订单号"] for r in rows] == ["495123456789012", "123456789012345"]


def test_rounded_numbers_in_a_non_id_column_are_not_an_error():
    row = one_order_row("P1")
    row[HEADERS.index("买家留言")] = 4951234567890123456.0
    assert read_table(xlsx_bytes([row]), "o.xlsx", MAPPING)[0]["买家留言"] == "4951234567890124000"


@pytest.mark.parametrize("value", ["4.95123E+18", "4.95123456789012e18", "4951234567890120000"])
def test_csv_id_in_scientific_notation_or_zero_padded_by_excel_is_rejected(value):
    rows = [one_order_row("P1"), one_order_row(value)]
    with pytest.raises(FileImportError) as info:
        read_table(csv_bytes([[str(c) for c in r] for r in rows]), "o.csv", MAPPING)
    assert info.value.code is ErrorCode.PRECISION_LOST
    assert [(e["row"], e["column"]) for e in info.value.errors] == [(3, "订单号")]
    assert f"({value})" in info.value.errors[0]["message"]


def test_every_bad_id_cell_is_reported_at_once_including_phone_and_sku():
    rows = [one_order_row("4.95123E+18") for _ in range(2)]
    rows[1][HEADERS.index("手机")] = "1.38123E+10"
    rows[1][HEADERS.index("商家编码")] = "6.9012E+12"
    with pytest.raises(FileImportError) as info:
        read_table(csv_bytes([[str(c) for c in r] for r in rows]), "o.csv", MAPPING)
    assert [(e["row"], e["column"]) for e in info.value.errors] == [(2, "订单号"), (3, "订单号"), (3, "商家编码"), (3, "手机")]


def test_csv_formula_text_wrapper_keeps_long_ids_exact():
    row = [str(c) for c in one_order_row('="4951234567890123456"')]
    assert read_table(csv_bytes([row]), "o.csv", MAPPING)[0]["订单号"] == "4951234567890123456"


# ---- grouping and file-level errors --------------------------------------------------------


def test_missing_required_column_is_a_clear_error():
    headers = [h for h in HEADERS if h != "单价"]
    rows = [[c for h, c in zip(HEADERS, r) if h != "单价"] for r in ROWS]
    with pytest.raises(FileImportError) as info:
        read_table(csv_bytes(rows, headers), "o.csv", MAPPING)
    assert info.value.code is ErrorCode.INVALID_FILE and info.value.field == "单价"
    assert "单价" in info.value.message and "lacks required column" in info.value.message


def test_rows_missing_required_values_are_all_reported_with_row_numbers():
    rows = [list(r) for r in ROWS]
    rows[1][HEADERS.index("数量")] = ""
    rows[3][HEADERS.index("订单号")] = ""
    table = read_table(csv_bytes(rows), "o.csv", MAPPING)
    with pytest.raises(FileImportError) as info:
        group_orders(table, MAPPING, None, "POS-01")
    assert [(e["row"], e["column"]) for e in info.value.errors] == [(3, "数量"), (5, "订单号")]
    assert info.value.code is ErrorCode.MISSING_FIELD


def test_blank_rows_keep_spreadsheet_row_numbers():
    rows = [ROWS[0], [""] * len(HEADERS), ROWS[3]]
    raws = group_orders(read_table(csv_bytes(rows), "o.csv", MAPPING), MAPPING, None, "POS-01")
    assert [r["source_rows"] for r in raws] == [[2], [4]]


def test_old_xls_is_refused():
    with pytest.raises(FileImportError) as info:
        read_table(b"\xd0\xcf\x11\xe0", "orders.xls", MAPPING)
    assert info.value.code is ErrorCode.INVALID_FILE


# ---- amounts -----------------------------------------------------------------------------


def single(mutations: dict[str, str], extra_rows: list[dict[str, str]] = ()) -> list[list[str]]:
    base = dict(zip(HEADERS, [""] * len(HEADERS)))
    base.update({"订单号": "A1", "下单时间": "2025-03-18T10:00:00+08:00", "商家编码": "S1", "数量": "3", "单价": "10.00"})
    rows = [{**base, **mutations}] + [{**base, **r} for r in extra_rows]
    return [[r[h] for h in HEADERS] for r in rows]


def normalize_rows(rows):
    _, orders = import_orders(csv_bytes(rows), "o.csv")
    return orders[0]


def test_discount_is_derived_from_paid():
    order = normalize_rows(single({"实付": "25.50", "运费": "5"}))
    assert (order.amounts.goods, order.amounts.discount, order.amounts.shipping, order.amounts.paid) == (3000, 950, 500, 2550)


def test_paid_above_goods_plus_shipping_is_rejected():
    with pytest.raises(NormalizationError) as info:
        normalize_rows(single({"实付": "31"}))
    assert info.value.code is ErrorCode.AMOUNTS_MISMATCH


def test_paid_and_discount_that_disagree_are_rejected():
    with pytest.raises(NormalizationError) as info:
        normalize_rows(single({"实付": "25", "优惠": "1"}))
    assert info.value.code is ErrorCode.AMOUNTS_MISMATCH


def test_line_paid_column_is_used_when_every_line_has_it():
    mapping = ColumnMapping.from_dict({**MAPPING.to_dict(), "columns": {**MAPPING.columns, "line_paid": "行实付"}})
    headers = HEADERS + ["行实付"]
    rows = [r + [lp] for r, lp in zip(single({"实付": "45"}, [{"商家编码": "S2", "数量": "1", "单价": "20"}]), ["30", "15"])]
    rows_table = read_table(csv_bytes(rows, headers), "o.csv", mapping)
    order = FileChannel().normalize(group_orders(rows_table, mapping, None, "X")[0], SHOP)
    assert [l.paid for l in order.lines] == [3000, 1500] and order.amounts.discount == 500


def test_allocation_adds_up_exactly():
    order = normalize_rows(single({"优惠": "1"}, [{"商家编码": "S2", "数量": "1", "单价": "0.01"}, {"商家编码": "S3", "数量": "7", "单价": "3.33"}]))
    assert sum(l.paid for l in order.lines) == order.amounts.paid - order.amounts.shipping == 3000 + 1 + 2331 - 100


@pytest.mark.parametrize("bad", ["abc", "1.234", "-5"])
def test_bad_money_names_the_row_and_column(bad):
    with pytest.raises(NormalizationError) as info:
        normalize_rows(single({"单价": bad}))
    assert info.value.code is ErrorCode.INVALID_AMOUNT and "第2行 单价" in info.value.message


@pytest.mark.parametrize("qty", ["0", "1.5", "x"])
def test_bad_quantity(qty):
    with pytest.raises(NormalizationError) as info:
        normalize_rows(single({"数量": qty}))
    assert info.value.code is ErrorCode.INVALID_FIELD and info.value.field == "rows[0].qty"


@pytest.mark.parametrize("truthy", ["1", "是", "true", "Y", "赠品", "TRUE"])
def test_gift_markers(truthy):
    order = normalize_rows(single({}, [{"商家编码": "G", "单价": "9.9", "赠品": truthy}]))
    assert order.lines[1].gift and order.lines[1].unit_price == 0


# ---- status and time -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("已付款", Status.PAID), ("已取消", Status.CANCELLED), ("已发货", Status.SHIPPED), ("", Status.PAID), ("completed", Status.COMPLETED)],
)
def test_status_values(value, expected):
    assert normalize_rows(single({"订单状态": value})).status is expected


def test_unknown_status_value_is_named():
    with pytest.raises(NormalizationError) as info:
        normalize_rows(single({"订单状态": "待审核"}))
    assert info.value.code is ErrorCode.UNKNOWN_STATUS and "待审核" in info.value.message


def test_mapping_time_format_and_timezone():
    mapping = ColumnMapping.from_dict({**MAPPING.to_dict(), "time_format": "%d.%m.%Y %H:%M", "timezone": "UTC"})
    rows = single({"下单时间": "18.03.2025 02:00"})
    table = read_table(csv_bytes(rows), "o.csv", mapping)
    order = FileChannel().normalize(group_orders(table, mapping, None, "X")[0], SHOP)
    assert order.created_at == datetime(2025, 3, 18, 2, 0, tzinfo=timezone.utc)


def test_unparseable_time_is_invalid_time():
    with pytest.raises(NormalizationError) as info:
        normalize_rows(single({"下单时间": "昨天"}))
    assert info.value.code is ErrorCode.INVALID_TIME


# ---- PII ---------------------------------------------------------------------------------


def test_plaintext_phone_name_and_address_appear_nowhere_in_the_normalized_order():
    raws, orders = import_orders(csv_bytes(ROWS), "pos.csv")
    order = orders[0]
    text = repr(order) + json.dumps(order.raw, ensure_ascii=False)
    for secret in (PHONE, "张三", "文三路100号", "13900001111", "李四"):
        assert secret not in text and secret not in repr(orders[1])
    assert order.raw["rows"][0]["receiver_phone"] == "138****5678"
    assert order.raw["rows"][0]["receiver_name"] == "张*"
    assert order.pii == {}
    assert raws[0]["rows"][0]["receiver_phone"] == PHONE  # the caller's raw is not mutated
    assert mask_file_order(raws[0])["rows"][0]["address"] == "文三***"


# ---- the mapping itself ------------------------------------------------------------------------


def test_mapping_round_trips_through_json_and_yaml():
    data = MAPPING.to_dict()
    assert ColumnMapping.from_dict(json.loads(json.dumps(data, ensure_ascii=False))) == MAPPING
    assert ColumnMapping.from_dict(yaml.safe_load(yaml.safe_dump(data, allow_unicode=True))) == MAPPING


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"columns": {**MAPPING.columns, "colour": "颜色"}}, "columns.colour"),
        ({"columns": {k: v for k, v in MAPPING.columns.items() if k != "unit_price"}}, "columns.unit_price"),
        ({"status_values": {"已付款": "payed"}}, "status_values"),
        ({"default_status": "on_hold"}, "default_status"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"extra": 1}, "extra"),
    ],
)
def test_invalid_mappings_are_rejected(change, field):
    with pytest.raises(FileImportError) as info:
        ColumnMapping.from_dict({**MAPPING.to_dict(), **change})
    assert info.value.field == field


def test_normalize_needs_a_mapping():
    raw = group_orders(read_table(csv_bytes(ROWS), "o.csv", MAPPING), MAPPING, None, "X")[0]
    del raw["mapping"]
    with pytest.raises(NormalizationError) as info:
        FileChannel().normalize(raw, SHOP)
    assert info.value.code is ErrorCode.UNKNOWN_MAPPING
    assert FileChannel(MAPPING).normalize(raw, SHOP).original_id == "P20250318001"


def test_fixture_folder_is_where_tests_expect_it():
    assert (Path(__file__).parents[1] / "fixtures" / "platforms" / "FORMATS.md").exists()
