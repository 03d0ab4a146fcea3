"""The exception workbook: renders a ReconResult, computes nothing.

Sheets: Summary (facts, categories, file vs records totals, charts), one sheet per
exception category (an empty one gets its headers and a "none" line), Open items,
Refund deltas. Texts from the file or database are written as text, never formulas.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from copy import copy
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import pandas as pd
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ERROR_CODES
from openpyxl.chart import BarChart, Reference
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from recon import categories as cat
from recon.calendar import WIB
from recon.matching import ReconResult
from recon.money import from_minor

MONEY_FORMAT = "#,##0.00"
DATE_FORMAT = "yyyy-mm-dd"
TIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
NUMBER_FORMATS = {"money": MONEY_FORMAT, "date": DATE_FORMAT, "time": TIME_FORMAT}
EXCEL_MAX_ROWS = 1_048_576
HEADER_FILL = PatternFill("solid", fgColor="1F4E78")
HEADER_FONT = Font(bold=True, color="FFFFFF")
ALERT_FILL = PatternFill("solid", fgColor="F8CBAD")
DELTA_FONT = Font(bold=True, color="C00000")
TITLE_FONT = Font(bold=True, size=14)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Col:
    title: str
    value: Callable[[Any], Any]
    kind: str = "text"  # text | money | int | date | time


@dataclass(frozen=True)
class WorkbookOptions:
    open_item_alert_days: int = 3
    max_rows: int = EXCEL_MAX_ROWS  # rows a sheet holds, header included


def _money(v: Any) -> Decimal | None:
    return None if v is None or pd.isna(v) else from_minor(int(v))


def _time(v: Any) -> dt.datetime | None:
    if v is None or pd.isna(v):
        return None
    return pd.Timestamp(v).tz_convert(WIB).tz_localize(None).to_pydatetime()


def _date(v: Any) -> dt.date | None:
    if v is None or (not isinstance(v, dt.date) and pd.isna(v)):
        return None
    return v


#: Per workbook (a style refers to that workbook's font, fill and format tables).
_STYLES: WeakKeyDictionary[Workbook, dict[tuple[str, Font | None, PatternFill | None], Any]] = (
    WeakKeyDictionary())


def _cell(sheet: WriteOnlyWorksheet, value: Any, kind: str = "text", font: Font | None = None,
          fill: PatternFill | None = None) -> Any:
    """One cell of a data row. Plain text and empty cells go in as bare values (the
    common case, and the fast one); anything styled, and text openpyxl would read as a
    formula or an error code, as a WriteOnlyCell whose style is built once and copied."""
    if kind == "text" and value is not None and not isinstance(value, str):
        value = str(value)
    if value == "":
        value = None
    bare = font is None and fill is None and (
        value is None or (kind == "int" and isinstance(value, int))
        or (kind == "text" and not value.startswith("=")
                          and value not in ERROR_CODES))
    if bare:
        return value
    cell = WriteOnlyCell(sheet, value=value)
    if kind == "text" and isinstance(value, str):
        cell.data_type = "s"  # never a formula, whatever the text starts with
    styles = _STYLES.setdefault(sheet.parent, {})
    key = (kind, font, fill)  # styles compare and hash by value
    style = styles.get(key)
    if style is None:
        if kind in NUMBER_FORMATS:
            cell.number_format = NUMBER_FORMATS[kind]
        if font is not None:
            cell.font = font
        if fill is not None:
            cell.fill = fill
        styles[key] = copy(cell._style)
    else:
        cell._style = copy(style)
    return cell


def _header(sheet: WriteOnlyWorksheet, titles: Sequence[str]) -> list[WriteOnlyCell]:
    cells = []
    for title in titles:
        cell = WriteOnlyCell(sheet, value=title)
        cell.data_type = "s"
        cell.fill, cell.font = HEADER_FILL, HEADER_FONT
        cells.append(cell)
    return cells


def _new_sheet(book: Workbook, title: str) -> WriteOnlyWorksheet:
    """A sheet that prints landscape, one page wide."""
    sheet = book.create_sheet(title)
    sheet.page_setup.orientation = "landscape"
    sheet.page_setup.paperSize = "9"  # A4
    sheet.sheet_properties.pageSetUpPr.fitToPage = True
    sheet.page_setup.fitToWidth = 1
    sheet.page_setup.fitToHeight = 0
    return sheet


def _width(kind: str, values: Iterable[Any], title: str) -> float:
    widest = len(title)
    for value in values:
        if value is None:
            continue
        if kind == "money":
            text = f"{value:,.2f}"
        elif kind == "time":
            text = "2026-11-30 23:59:59"
        elif kind == "date":
            text = "2026-11-30"
        else:
            text = str(value)
        widest = max(widest, len(text))
    return min(max(widest + 2, 8), 70)


def _table_sheet(book: Workbook, title: str, cols: Sequence[Col], frame: pd.DataFrame,
                 overflow: Path, options: WorkbookOptions, note: str = "none",
                 fill_when: Callable[[Any], bool] | None = None,
                 font_when: Callable[[Any], bool] | None = None) -> None:
    sheet = _new_sheet(book, title)
    count = len(frame)
    capacity = options.max_rows - 1
    spills = count > capacity
    if spills:
        capacity -= 1  # the first line says where the rest is
    first = list(frame.head(500).itertuples(index=False))
    for index, col in enumerate(cols, start=1):
        sheet.column_dimensions[get_column_letter(index)].width = _width(
            col.kind, (col.value(r) for r in first), col.title)
    header_row = 2 if spills else 1
    sheet.freeze_panes = f"A{header_row + 1}"
    last_row = header_row + max(min(count, capacity), 1)
    sheet.auto_filter.ref = f"A{header_row}:{get_column_letter(len(cols))}{last_row}"
    if spills:
        sheet.append([_cell(sheet, f"{count:,} rows: the first {capacity:,} are here, the other "
                                   f"{count - capacity:,} continue in {overflow.name}",
                            font=DELTA_FONT)])
    sheet.append(_header(sheet, [c.title for c in cols]))
    if count == 0:
        sheet.append([_cell(sheet, note)])
        return
    records = frame.itertuples(index=False)
    for written, record in enumerate(records):
        if written >= capacity:
            _spill(overflow, cols, record, records)
            break
        fill = ALERT_FILL if fill_when is not None and fill_when(record) else None
        font = DELTA_FONT if font_when is not None and font_when(record) else None
        sheet.append([_cell(sheet, c.value(record), c.kind, font, fill) for c in cols])


def _csv_value(value: Any, kind: str) -> Any:
    """A CSV cell; text that a spreadsheet would read as a formula gets a leading quote."""
    if value is None:
        return ""
    if kind == "text" and isinstance(value, str) and value[:1] in FORMULA_STARTS:
        return "'" + value
    return value


def _spill(path: Path, cols: Sequence[Col], first: Any, rest: Iterable[Any]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([c.title for c in cols])
        for record in (first, *rest):
            writer.writerow([_csv_value(c.value(record), c.kind) for c in cols])


ROW_COLUMNS = (
    Col("Line", lambda r: int(r.line_no), "int"),
    Col("Type", lambda r: r.transaction_type),
    Col("MerchantInvoice", lambda r: r.merchant_invoice),
    Col("RefundInvoice", lambda r: r.refund_invoice),
    Col("OVOReferenceNo", lambda r: r.ovo_reference_no),
    Col("PaymentSource", lambda r: r.payment_source),
    Col("TransactionDateTime (WIB)", lambda r: _time(r.transaction_time), "time"),
    Col("GrossAmount", lambda r: _money(r.gross), "money"),
    Col("MDRAmount", lambda r: _money(r.mdr), "money"),
    Col("TaxAmount", lambda r: _money(r.tax), "money"),
    Col("NetAmount", lambda r: _money(r.net), "money"),
    Col("Record key", lambda r: r.record_key),
    Col("Matched by", lambda r: r.match_rule),
    Col("Record amount", lambda r: _money(r.record_amount), "money"),
    Col("Record status", lambda r: r.record_status),
    Col("Record date", lambda r: _date(r.record_date), "date"),
    Col("Delta (file − record)", lambda r: _money(r.delta), "money"),
    Col("Reason", lambda r: r.reason),
    Col("Other findings", lambda r: r.flags),
)

MISSING_COLUMNS = (
    Col("Kind", lambda m: m.kind),
    Col("Record key", lambda m: m.record_key),
    Col("Original payment", lambda m: m.original_reference_no),
    Col("OVO reference", lambda m: m.reference_no),
    Col("Amount", lambda m: _money(m.signed_amount), "money"),
    Col("Status", lambda m: m.status),
    Col("Record time (WIB)", lambda m: _time(m.record_time), "time"),
    Col("Record date", lambda m: _date(m.record_date), "date"),
    Col("Pay option", lambda m: m.pay_option),
    Col("Settled later on", lambda m: _date(m.closed_by_date), "date"),
)

OPEN_COLUMNS = (
    Col("Due on settlement date", lambda o: _date(o.opened_date), "date"),
    Col("Kind", lambda o: o.kind),
    Col("Record key", lambda o: o.record_key),
    Col("Amount", lambda o: _money(o.amount), "money"),
    Col("Record date", lambda o: _date(o.record_date), "date"),
    Col("Age (working days)", lambda o: int(o.age_working_days), "int"),
)

REFUND_COLUMNS = (
    Col("Payment (partnerReferenceNo)", lambda d: d.payment),
    Col("Payment amount", lambda d: _money(d.payment_amount), "money"),
    Col("Refunded in records", lambda d: _money(d.refunded_in_records), "money"),
    Col("Refunded as settled", lambda d: _money(d.refunded_as_settled), "money"),
    Col("Delta (settled − records)", lambda d: _money(d.delta), "money"),
    Col("Refunds in records", lambda d: d.refunds_in_records),
    Col("Refund lines in this file", lambda d: d.file_lines),
)


def _summary_sheet(book: Workbook, result: ReconResult, summary: dict[str, Any],
                   history: pd.DataFrame) -> None:
    sheet = _new_sheet(book, "Summary")
    for letter, width in zip("ABCDEFG", (30, 20, 25, 18, 4, 16, 12), strict=True):
        sheet.column_dimensions[letter].width = width
    row = 0

    def put(cells: list[Any]) -> None:
        nonlocal row
        sheet.append(cells)
        row += 1

    put([_cell(sheet, f"OVO settlement reconciliation — {result.merchant_id} "
                      f"{result.settlement_date}", font=TITLE_FONT)])
    run = summary.get("run", {})
    started = run.get("started_at")
    run_time = (dt.datetime.fromisoformat(started).astimezone(WIB).replace(tzinfo=None)
                if started else None)
    facts: list[tuple[str, Any, str]] = [
        ("Merchant", result.merchant_id, "text"),
        ("Settlement date", result.settlement_date, "date"),
        ("Covered transaction dates",
         ", ".join(d.isoformat() for d in result.covered_dates), "text"),
        ("File", summary["file"]["name"], "text"),
        ("SHA-256", summary["file"]["sha256"][:16], "text"),
        ("Data rows", summary["file"]["rows"], "int"),
        ("Run at (WIB)", run_time, "time"),
        ("Run", f"attempt {run.get('attempt', 1)}"
                + (", re-run: replaces the earlier results" if run.get("rerun") else ""), "text"),
        ("Exceptions", summary["exceptions"], "int"),
        ("Open items from earlier dates", summary["open_items"], "int"),
        ("Closed by this file", summary["closed_items"], "int"),
    ]
    for label, value, kind in facts:
        put([_cell(sheet, label, font=Font(bold=True)), _cell(sheet, value, kind)])
    put([])
    put(_header(sheet, ["Category", "Count", "GrossAmount"]))
    first_category = row + 1
    for name in (*cat.EXCEPTION_CATEGORIES, cat.MATCHED):
        put([_cell(sheet, name), _cell(sheet, result.counts[name], "int"),
             _cell(sheet, from_minor(result.amounts[name]), "money")])
    put([])
    put(_header(sheet, ["Totals", "File", "Records (covered dates)", "Difference"]))
    for name in ("gross", "mdr", "tax", "net"):
        in_file = result.totals[name]
        in_records = result.record_totals.get(name)
        put([_cell(sheet, name.upper()), _cell(sheet, from_minor(in_file), "money"),
             _cell(sheet, _money(in_records) if in_records is not None else "no MDR rate"
                   , "money" if in_records is not None else "text"),
             _cell(sheet, _money(in_file - in_records) if in_records is not None else None,
                   "money")])
    chart = BarChart()
    chart.type = "bar"
    chart.title = "Exceptions by category"
    chart.legend = None
    chart.y_axis.title = "rows"
    chart.x_axis.scaling.orientation = "maxMin"  # categories top-down, as in the table
    last_exception_row = first_category + len(cat.EXCEPTION_CATEGORIES) - 1
    chart.add_data(Reference(sheet, min_col=2, min_row=first_category - 1,
                             max_row=last_exception_row), titles_from_data=True)
    chart.set_categories(Reference(sheet, min_col=1, min_row=first_category,
                                   max_row=last_exception_row))
    chart.height, chart.width = 8, 16
    sheet.add_chart(chart, "F2")
    if len(history) > 1:
        put([])
        put(_header(sheet, ["Settlement date", "Exceptions", "Rows"]))
        start = row + 1
        for item in history.itertuples(index=False):
            put([_cell(sheet, item.settlement_date, "date"),
                 _cell(sheet, int(item.exceptions), "int"),
                 _cell(sheet, int(item.file_rows), "int")])
        trend = BarChart()
        trend.title = f"Exceptions per settlement date (last {len(history)} runs)"
        trend.legend = None
        trend.add_data(Reference(sheet, min_col=2, min_row=start - 1, max_row=row),
                       titles_from_data=True)
        trend.set_categories(Reference(sheet, min_col=1, min_row=start, max_row=row))
        trend.height, trend.width = 8, 16
        sheet.add_chart(trend, "F20")


def write_exception_workbook(result: ReconResult, summary: dict[str, Any], path: Path,
                             history: pd.DataFrame | None = None,
                             options: WorkbookOptions | None = None) -> Path:
    """Write the workbook to `path` (temp name, then rename); returns the path.

    `history` (settlement_date, exceptions, file_rows) of the latest runs feeds the trend
    chart; categories beyond the sheet's row limit continue in CSV files beside it.
    """
    options = options or WorkbookOptions()
    path.parent.mkdir(parents=True, exist_ok=True)
    history = history if history is not None else pd.DataFrame(
        columns=["settlement_date", "exceptions", "file_rows"])
    book = Workbook(write_only=True)
    _summary_sheet(book, result, summary, history)
    rows = result.rows
    stem = path.stem
    for name in cat.ROW_CATEGORIES:
        if name != cat.MATCHED:
            _table_sheet(book, name, ROW_COLUMNS, rows.loc[rows["category"] == name],
                         path.with_name(f"{stem}_{name}.csv"), options)
    _table_sheet(book, cat.MISSING_IN_SETTLEMENT, MISSING_COLUMNS, result.missing,
                 path.with_name(f"{stem}_{cat.MISSING_IN_SETTLEMENT}.csv"), options)
    threshold = options.open_item_alert_days
    _table_sheet(book, "Open items", OPEN_COLUMNS, result.all_open_items,
                 path.with_name(f"{stem}_open_items.csv"), options,
                 note="none: nothing is waiting to be settled",
                 fill_when=lambda o: int(o.age_working_days) >= threshold)
    _table_sheet(book, "Refund deltas", REFUND_COLUMNS, result.refund_deltas,
                 path.with_name(f"{stem}_refund_deltas.csv"), options,
                 note="none: no refunds in this file or the covered dates",
                 font_when=lambda d: int(d.delta) != 0)
    temp = path.with_name(f".{path.name}.tmp")
    book.save(temp)
    temp.replace(path)
    return path
