"""Read a CSV/XLSX order file into rows of text, refusing identifiers a spreadsheet has rounded.

Excel keeps 15 significant digits: a 19-digit order number typed or pasted as a number becomes
4951234567890120000 (shown as 4.95123E+18), and a CSV saved from it carries that text. Such a
value cannot be repaired, only re-exported with the column formatted as text, so the row is
refused with the spreadsheet row number and the column header, never silently imported.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from orderhub.adapters.channels.file_mapping import REQUIRED_FIELDS, ColumnMapping, FileImportError
from orderhub.domain.errors import ErrorCode

EXCEL_DIGITS = 15
_SCIENTIFIC = re.compile(r"^[+-]?\d+(\.\d+)?[eE][+-]?\d+$")
_FORMULA_TEXT = re.compile(r'^="(.*)"$', re.DOTALL)  # ="4951234567890123456", a common export trick


def read_table(data: bytes, filename: str, mapping: ColumnMapping) -> list[dict[str, str]]:
    """Rows of a CSV or XLSX file as {header: text}; item i is spreadsheet row i + 2.

    Blank rows inside the table come back as {} so row numbers stay those the user sees;
    trailing blank rows are dropped. Raises FileImportError listing every bad row.
    """
    kind = _kind(data, filename)
    grid = _xlsx_grid(data) if kind == "xlsx" else _csv_grid(data)
    if not grid:
        raise FileImportError(ErrorCode.INVALID_FILE, "文件是空的 / the file is empty")
    headers = [_header(cell) for cell in grid[0]]
    _check_headers(headers, mapping)
    id_headers = mapping.id_headers()
    while len(grid) > 1 and all(_is_blank(cell) for cell in grid[-1]):
        grid.pop()

    rows: list[dict[str, str]] = []
    errors: list[dict[str, Any]] = []
    for index, cells in enumerate(grid[1:]):
        row_number = index + 2
        if all(_is_blank(cell) for cell in cells):
            rows.append({})
            continue
        row: dict[str, str] = {}
        for position, header in enumerate(headers):
            if not header:
                continue
            cell = cells[position] if position < len(cells) else None
            is_id = header in id_headers
            try:
                row[header] = _cell_text(cell, is_id) if kind == "xlsx" else _csv_text(cell, is_id)
            except _Rounded as bad:
                errors.append(_precision_error(row_number, header, bad.shown))
        rows.append(row)
    if errors:
        raise FileImportError.from_rows(ErrorCode.PRECISION_LOST, errors)
    return rows


class _Rounded(Exception):
    def __init__(self, shown: str) -> None:
        super().__init__(shown)
        self.shown = shown


def _precision_error(row: int, column: str, shown: str) -> dict[str, Any]:
    message = (
        f"第{row}行 {column}: 数字超过15位已丢失精度 ({shown})；请把该列设为文本后重新导出 / "
        f"row {row}, column {column}: a number longer than 15 digits has lost precision ({shown}); "
        f"format the column as text and export again"
    )
    return {"row": row, "column": column, "code": ErrorCode.PRECISION_LOST.value, "message": message}


def read_grid(data: bytes, filename: str) -> list[list[Any]]:
    """The cells of a CSV (UTF-8 or GBK) or XLSX file, row by row, header included."""
    # XLSX cells keep their types (numbers, dates); CSV cells are text
    return _xlsx_grid(data) if _kind(data, filename) == "xlsx" else _csv_grid(data)


def _kind(data: bytes, filename: str) -> str:
    name = filename.lower()
    if name.endswith(".xls"):
        raise FileImportError(ErrorCode.INVALID_FILE, "不支持旧版 .xls，请另存为 .xlsx 或 CSV / save .xls files as .xlsx or CSV")
    if name.endswith((".xlsx", ".xlsm")) or data[:4] == b"PK\x03\x04":
        return "xlsx"
    return "csv"


def _header(cell: Any) -> str:
    return "" if cell is None else str(cell).replace("\ufeff", "").strip()


def _check_headers(headers: list[str], mapping: ColumnMapping) -> None:
    present = [h for h in headers if h]
    duplicates = sorted({h for h in present if present.count(h) > 1} & set(mapping.columns.values()))
    if duplicates:
        raise FileImportError(
            ErrorCode.INVALID_FILE, f"列名重复 / duplicate column header(s): {', '.join(duplicates)}", duplicates[0]
        )
    missing = [mapping.columns[f] for f in sorted(REQUIRED_FIELDS) if mapping.columns[f] not in present]
    if missing:
        raise FileImportError(
            ErrorCode.INVALID_FILE,
            f"文件缺少必需的列 / the file lacks required column(s): {', '.join(missing)} "
            f"(映射 mapping {mapping.name!r}; 文件中的列 columns found: {', '.join(present)})",
            missing[0],
            [
                {"row": 1, "column": h, "code": ErrorCode.INVALID_FILE.value, "message": f"第1行 缺少列 {h} / row 1 lacks column {h}"}
                for h in missing
            ],
        )


def _is_blank(cell: Any) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


# ---- CSV -------------------------------------------------------------------------------------


def _csv_grid(data: bytes) -> list[list[str]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            # GB18030 is a superset of GBK (what Excel "CSV" saves on Chinese Windows).
            text = data.decode("gb18030")
        except UnicodeDecodeError:
            raise FileImportError(ErrorCode.INVALID_FILE, "无法识别文件编码（UTF-8/GBK）/ file is neither UTF-8 nor GBK") from None
    try:
        return [list(record) for record in csv.reader(io.StringIO(text, newline=""))]
    except csv.Error as exc:
        raise FileImportError(ErrorCode.INVALID_FILE, f"CSV 格式错误 / malformed CSV: {exc}") from None


def _csv_text(cell: str | None, is_id: bool) -> str:
    text = (cell or "").strip()
    formula = _FORMULA_TEXT.match(text)
    if formula:
        text = formula.group(1).strip()
    text = text.lstrip("\t'")  # leading tab/apostrophe: other exporters' "keep as text" marks
    if is_id and (_SCIENTIFIC.match(text) or _padded_by_excel(text)):
        raise _Rounded(text)
    return text


def _padded_by_excel(text: str) -> bool:
    """A >15-digit number whose digits past the 15th are all 0: what Excel writes after rounding.

    A genuine id of n > 15 digits ends that way with probability 10^-(n-15); the user re-exports
    with the column as text (then the value arrives as text in XLSX, or unchanged in CSV).
    """
    digits = text.lstrip("+-")
    return digits.isdigit() and len(digits) > EXCEL_DIGITS and set(digits[EXCEL_DIGITS:]) == {"0"}


# ---- XLSX ------------------------------------------------------------------------------------


def _xlsx_grid(data: bytes) -> list[list[Any]]:
    from openpyxl import load_workbook  # imported here: CSV-only callers do not pay for it

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise FileImportError(ErrorCode.INVALID_FILE, f"无法读取 XLSX 文件 / cannot read the XLSX file: {exc}") from None
    try:
        sheet = book.worksheets[0]
        return [list(row) for row in sheet.iter_rows(values_only=True)]
    finally:
        book.close()


def _cell_text(value: Any, is_id: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, str):
        return _csv_text(value, is_id)  # text pasted from a rounded export is just as wrong
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S") if value.tzinfo is None else value.isoformat(sep=" ")
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, (int, float, Decimal)):
        return _number_text(value, is_id)
    return str(value).strip()


def _number_text(value: int | float | Decimal, is_id: bool) -> str:
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        return str(value)
    integral = number == number.to_integral_value()
    if is_id and integral and len(str(abs(int(number)))) > EXCEL_DIGITS:
        # Excel holds 15 digits: beyond that the cell already is (or will be on save) rounded.
        raise _Rounded(f"{float(number):.6G}")
    if integral:
        return str(int(number))
    return format(number.normalize(), "f")
