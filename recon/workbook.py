"""The exception workbook: renders a ReconResult, computes nothing.

Summary sheet first, then one sheet per exception category (every category gets its
sheet, an empty one a "none" line), then the open items carried from earlier dates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from recon import categories as cat
from recon.calendar import WIB
from recon.matching import ReconResult
from recon.money import from_minor

MONEY_FORMAT = "#,##0.00"
DATE_FORMAT = "yyyy-mm-dd"
TIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
EXCEL_MAX_ROWS = 1_048_576
HEADER_FILL = PatternFill("solid", fgColor="1F4E78")
HEADER_FONT = Font(bold=True, color="FFFFFF")


@dataclass(frozen=True)
class Col:
    title: str
    value: Callable[[Any], Any]
    kind: str = "text"  # text | money | int | date | time
    width: int = 14


def _money(v: Any) -> Decimal | None:
    return None if v is None or pd.isna(v) else from_minor(int(v))


def _time(v: Any) -> dt.datetime | None:
    if v is None or pd.isna(v):
        return None
    return pd.Timestamp(v).tz_convert(WIB).tz_localize(None).to_pydatetime()


def _date(v: Any) -> dt.date | None:
    return None if v is None or (not isinstance(v, dt.date) and pd.isna(v)) else v


def _cell(sheet: WriteOnlyWorksheet, value: Any, kind: str, bold: bool = False) -> WriteOnlyCell:
    if kind == "text" and value is not None and not isinstance(value, str):
        value = str(value)
    cell = WriteOnlyCell(sheet, value=value if value != "" else None)
    if kind == "text" and isinstance(value, str) and value:
        cell.data_type = "s"  # never a formula, whatever the text starts with
    elif kind == "money":
        cell.number_format = MONEY_FORMAT
    elif kind == "date":
        cell.number_format = DATE_FORMAT
    elif kind == "time":
        cell.number_format = TIME_FORMAT
    if bold:
        cell.font = Font(bold=True)
    return cell


def _header(sheet: WriteOnlyWorksheet, titles: Sequence[str]) -> list[WriteOnlyCell]:
    cells = []
    for title in titles:
        cell = WriteOnlyCell(sheet, value=title)
        cell.data_type = "s"
        cell.fill, cell.font = HEADER_FILL, HEADER_FONT
        cell.alignment = Alignment(vertical="center")
        cells.append(cell)
    return cells


def _table_sheet(book: Workbook, title: str, cols: Sequence[Col], records: Iterable[Any],
                 count: int, overflow: Path | None, note: str = "") -> None:
    sheet = book.create_sheet(title)
    for index, col in enumerate(cols, start=1):
        sheet.column_dimensions[get_column_letter(index)].width = col.width
    sheet.freeze_panes = "A2"
    limit = EXCEL_MAX_ROWS - 2
    last_row = max(count, 1) + 1
    sheet.auto_filter.ref = f"A1:{get_column_letter(len(cols))}{min(last_row, limit + 1)}"
    sheet.append(_header(sheet, [c.title for c in cols]))
    if count == 0:
        sheet.append([_cell(sheet, note or "none", "text")])
        return
    written = 0
    rows_iter = iter(records)
    for record in rows_iter:
        if written >= limit:
            break
        sheet.append([_cell(sheet, c.value(record), c.kind) for c in cols])
        written += 1
    if written < count and overflow is not None:
        import csv

        with overflow.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow([c.title for c in cols])
            for record in rows_iter:
                writer.writerow(["" if (v := c.value(record)) is None else v for c in cols])
        sheet.append([_cell(sheet, f"continued in {overflow.name}: {count - written} more rows",
                            "text", bold=True)])


ROW_COLUMNS = (
    Col("Line", lambda r: int(r.line_no), "int", 7),
    Col("Type", lambda r: r.transaction_type, "text", 10),
    Col("MerchantInvoice", lambda r: r.merchant_invoice, "text", 24),
    Col("RefundInvoice", lambda r: r.refund_invoice, "text", 20),
    Col("OVOReferenceNo", lambda r: r.ovo_reference_no, "text", 22),
    Col("PaymentSource", lambda r: r.payment_source, "text", 13),
    Col("TransactionDateTime (WIB)", lambda r: _time(r.transaction_time), "time", 20),
    Col("GrossAmount", lambda r: _money(r.gross), "money", 15),
    Col("MDRAmount", lambda r: _money(r.mdr), "money", 12),
    Col("TaxAmount", lambda r: _money(r.tax), "money", 12),
    Col("NetAmount", lambda r: _money(r.net), "money", 15),
    Col("Record key", lambda r: r.record_key, "text", 24),
    Col("Record amount", lambda r: _money(r.record_amount), "money", 15),
    Col("Record status", lambda r: r.record_status, "text", 9),
    Col("Record date", lambda r: _date(r.record_date), "date", 12),
    Col("Delta (file − record)", lambda r: _money(r.delta), "money", 15),
    Col("Reason", lambda r: r.reason, "text", 60),
    Col("Other findings", lambda r: r.flags, "text", 40),
)

MISSING_COLUMNS = (
    Col("Kind", lambda m: m.kind, "text", 10),
    Col("Record key", lambda m: m.record_key, "text", 24),
    Col("Original payment", lambda m: m.original_reference_no, "text", 24),
    Col("OVO reference", lambda m: m.reference_no, "text", 22),
    Col("Amount", lambda m: _money(m.signed_amount), "money", 15),
    Col("Status", lambda m: m.status, "text", 8),
    Col("Record time (WIB)", lambda m: _time(m.record_time), "time", 20),
    Col("Record date", lambda m: _date(m.record_date), "date", 12),
    Col("Pay option", lambda m: m.pay_option, "text", 12),
    Col("Settled later on", lambda m: _date(m.closed_by_date), "date", 14),
)

OPEN_COLUMNS = (
    Col("Due on settlement date", lambda o: _date(o.opened_date), "date", 14),
    Col("Kind", lambda o: o.kind, "text", 10),
    Col("Record key", lambda o: o.record_key, "text", 24),
    Col("Amount", lambda o: _money(o.amount), "money", 15),
    Col("Record date", lambda o: _date(o.record_date), "date", 12),
    Col("Age (working days)", lambda o: int(o.age_working_days), "int", 12),
)


def _summary_sheet(book: Workbook, result: ReconResult, summary: dict[str, Any]) -> None:
    sheet = book.create_sheet("Summary")
    sheet.column_dimensions["A"].width = 28
    sheet.column_dimensions["B"].width = 22
    sheet.column_dimensions["C"].width = 22
    sheet.append([_cell(sheet, f"OVO settlement reconciliation — {result.merchant_id} "
                               f"{result.settlement_date}", "text", bold=True)])
    run = summary.get("run", {})
    facts = [
        ("Merchant", result.merchant_id, "text"),
        ("Settlement date", result.settlement_date, "date"),
        ("Covered transaction dates",
         ", ".join(d.isoformat() for d in result.covered_dates), "text"),
        ("File", summary["file"]["name"], "text"),
        ("SHA-256", summary["file"]["sha256"][:16], "text"),
        ("Data rows", summary["file"]["rows"], "int"),
        ("Run", f"#{run.get('attempt', 1)}" + (" (re-run)" if run.get("rerun") else ""), "text"),
        ("Open items from earlier dates", summary["open_items"], "int"),
        ("Closed by this file", summary["closed_items"], "int"),
    ]
    for label, value, kind in facts:
        sheet.append([_cell(sheet, label, "text", bold=True), _cell(sheet, value, kind)])
    sheet.append([])
    sheet.append(_header(sheet, ["Category", "Count", "GrossAmount"]))
    for name in cat.ALL_CATEGORIES:
        sheet.append([_cell(sheet, name, "text"), _cell(sheet, result.counts[name], "int"),
                      _cell(sheet, from_minor(result.amounts[name]), "money")])
    sheet.append([])
    sheet.append(_header(sheet, ["File totals", "Amount", ""]))
    for name in ("gross", "mdr", "tax", "net"):
        sheet.append([_cell(sheet, name.upper() if name != "gross" else "GROSS", "text"),
                      _cell(sheet, from_minor(result.totals[name]), "money")])


def write_exception_workbook(result: ReconResult, summary: dict[str, Any], path: Path) -> Path:
    """Write the workbook to `path` (temp name, then rename); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    book = Workbook(write_only=True)
    _summary_sheet(book, result, summary)
    rows = result.rows
    stem = path.stem
    for name in cat.ROW_CATEGORIES:
        if name == cat.MATCHED:
            continue
        subset = rows.loc[rows["category"] == name]
        _table_sheet(book, name, ROW_COLUMNS, subset.itertuples(index=False), len(subset),
                     path.with_name(f"{stem}_{name}.csv"))
    _table_sheet(book, cat.MISSING_IN_SETTLEMENT, MISSING_COLUMNS,
                 result.missing.itertuples(index=False), len(result.missing),
                 path.with_name(f"{stem}_{cat.MISSING_IN_SETTLEMENT}.csv"))
    _table_sheet(book, "Open items", OPEN_COLUMNS, result.open_items.itertuples(index=False),
                 len(result.open_items), path.with_name(f"{stem}_open_items.csv"),
                 note="none: no earlier item is still open")
    temp = path.with_name(f".{path.name}.tmp")
    book.save(temp)
    temp.replace(path)
    return path
