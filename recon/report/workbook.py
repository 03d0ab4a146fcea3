"""The exception workbook: renders a ReconResult, computes nothing.

Sheets: Summary (facts, categories, file vs records totals, charts), one sheet per
exception category (an empty one gets its headers and a "none" line), Open items,
Refund deltas. Texts from the file or database are written as text, never formulas.

openpyxl builds the Summary sheet and every sheet's frame (widths, header, frozen pane,
filter, print setup, styles). The data rows of the table sheets, which can run to a
million, are rendered column by column with Arrow into the same SpreadsheetML openpyxl
writes (inline strings, numbers with a number-format style), then put into those sheets'
`<sheetData>`: cell by cell through openpyxl, they would take most of a large run.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from copy import copy
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ERROR_CODES
from openpyxl.chart import BarChart, Reference
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from recon.core import categories as cat
from recon.core.calendar import WIB
from recon.core.money import from_minor, minor_text
from recon.core.result import FlaggedRows, ReconResult
from recon.core.schemas import joined_values, text_array
from recon.report.summary import Summary

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
    field: str  # the frame's column
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
    cell._style = copy(_style(sheet, kind, font, fill))
    return cell


def _style(sheet: WriteOnlyWorksheet, kind: str, font: Font | None,
           fill: PatternFill | None) -> Any:
    """The style of a cell of this kind and look, built once per workbook."""
    styles = _STYLES.setdefault(sheet.parent, {})
    key = (kind, font, fill)  # styles compare and hash by value
    style = styles.get(key)
    if style is None:
        cell = WriteOnlyCell(sheet)
        if kind in NUMBER_FORMATS:
            cell.number_format = NUMBER_FORMATS[kind]
        if font is not None:
            cell.font = font
        if fill is not None:
            cell.fill = fill
        style = styles[key] = copy(cell._style)
    return style


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


def _plain_text(v: Any) -> str | None:
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return None
    return str(v) or None


#: Python values of a column, for the width estimate.
_PY_VALUES: dict[str, Callable[[Any], Any]] = {
    "text": _plain_text,
    "int": int,
    "money": _money,
    "time": _time,
    "date": _date,
}


def cell_values(frame: pd.DataFrame, col: Col) -> list[Any]:
    convert = _PY_VALUES[col.kind]
    return [convert(v) for v in frame[col.field].tolist()]


class FrameRows:
    """A table sheet's rows, read a chunk at a time: a frame's, in memory."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def __len__(self) -> int:
        return len(self.frame)

    def head(self, rows: int) -> pd.DataFrame:
        return self.frame.head(rows)

    def chunks(self, start: int, stop: int, rows: int) -> Iterator[pd.DataFrame]:
        for at in range(start, stop, rows):
            yield self.frame.iloc[at:min(at + rows, stop)]


class _CategoryRows(FrameRows):
    """A category's flagged rows (`ReconResult.flagged`), in file order."""

    def __init__(self, flagged: FlaggedRows, category: str) -> None:
        self.flagged, self.category = flagged, category

    def __len__(self) -> int:
        return self.flagged.counts[self.category]

    def head(self, rows: int) -> pd.DataFrame:
        return self.flagged.head(self.category, rows)

    def chunks(self, start: int, stop: int, rows: int) -> Iterator[pd.DataFrame]:
        at = start
        for chunk in self.flagged.batches(self.category, rows, start):
            if at >= stop:
                return
            yield chunk.iloc[:stop - at]
            at += len(chunk)


@dataclass
class _SheetData:
    """Data rows still to go into a table sheet's <sheetData>, from `first_row` on."""

    sheet: WriteOnlyWorksheet
    rows: FrameRows
    count: int  # the sheet's data rows, the first `count` of `rows`
    cols: Sequence[Col]
    first_row: int
    styles: list[tuple[str, str]]  # per column: the s="" attribute plain, and flagged
    marked: Callable[[pd.DataFrame], Any] | None  # rows drawn with the flag's fill or font


def _style_attr(sheet: WriteOnlyWorksheet, kind: str, font: Font | None,
                fill: PatternFill | None) -> str:
    """' s="N"' for a cell of this kind and look (registered in the workbook), or ''."""
    if kind not in NUMBER_FORMATS and font is None and fill is None:
        return ""
    return f' s="{sheet.parent._cell_styles.add(_style(sheet, kind, font, fill))}"'


def table_sheet(book: Workbook, title: str, cols: Sequence[Col], rows: FrameRows,
                overflow: Path, options: WorkbookOptions, note: str = "none",
                fill_when: Callable[[pd.DataFrame], Any] | None = None,
                font_when: Callable[[pd.DataFrame], Any] | None = None) -> _SheetData | None:
    """The sheet's frame through openpyxl; its data rows are returned to be rendered
    into the saved file (None when the sheet has none)."""
    sheet = _new_sheet(book, title)
    count = len(rows)
    capacity = options.max_rows - 1
    spills = count > capacity
    if spills:
        capacity -= 1  # the first line says where the rest is
    head = rows.head(500)
    for index, col in enumerate(cols, start=1):
        sheet.column_dimensions[get_column_letter(index)].width = _width(
            col.kind, cell_values(head, col), col.title)
    header_row = 2 if spills else 1
    sheet.freeze_panes = f"A{header_row + 1}"
    last_row = header_row + max(min(count, capacity), 1)
    sheet.auto_filter.ref = f"A{header_row}:{get_column_letter(len(cols))}{last_row}"
    if spills:
        sheet.append([_cell(sheet, f"{count:,} rows: the first {capacity:,} are here, the other "
                                   f"{count - capacity:,} continue in {overflow.name}",
                            font=DELTA_FONT)])
        spill_rows(overflow, cols, rows.chunks(capacity, count, _CSV_BATCH_ROWS))
        count = capacity
    sheet.append(_header(sheet, [c.title for c in cols]))
    if count == 0:
        sheet.append([_cell(sheet, note)])
        return None
    marked = fill_when or font_when
    font, fill = (None, ALERT_FILL) if fill_when is not None else (
        (DELTA_FONT, None) if font_when is not None else (None, None))
    styles = [(_style_attr(sheet, c.kind, None, None), _style_attr(sheet, c.kind, font, fill))
              for c in cols]
    return _SheetData(sheet, rows, count, cols, header_row + 1, styles, marked)


def spill_rows(path: Path, cols: Sequence[Col], batches: Iterable[pd.DataFrame]) -> None:
    """The rows of `batches` as CSV, as Python's `csv` writes the rows of their Python
    values (`cell_values`; a text a spreadsheet would read as a formula with a leading quote,
    no value an empty field), made by Arrow a batch at a time: a bad day's overflow runs
    to millions of rows, which as Python objects took more memory than the run."""
    with path.open("wb") as handle:
        header = io.StringIO(newline="")
        csv.writer(header).writerow([c.title for c in cols])
        handle.write(header.getvalue().encode("utf-8"))
        for batch in batches:
            lines = _join(*_between([_csv_texts(batch, c) for c in cols], ","), "\r\n")
            handle.write(joined_values(lines))


def _between(items: list[pa.Array], separator: str) -> list[pa.Array | str]:
    out: list[pa.Array | str] = []
    for item in items:
        out += [separator, item] if out else [item]
    return out


#: Rows of the CSV overflow made at a time.
_CSV_BATCH_ROWS = 100_000
#: What makes Python's `csv` (QUOTE_MINIMAL) quote a field: the delimiter, the quote
#: character, a line end.
_CSV_QUOTED = '[,"\r\n]'


def _csv_texts(frame: pd.DataFrame, col: Col) -> pa.Array:
    """One column's CSV fields, quoted where Python's `csv` quotes them."""
    series = frame[col.field]
    if col.kind == "text":
        values = pc.fill_null(text_array(series), "")
        formula = pc.match_substring_regex(
            values, "^[" + re.escape("".join(FORMULA_STARTS)) + "]")
        values = pc.if_else(formula, _join("'", values), values)
    elif col.kind == "money":
        values = pc.fill_null(minor_text(series), "")
    elif col.kind == "int":
        values = pc.cast(pa.array(series, pa.int64()), _S)
    else:
        values = pc.fill_null(_wall_text(series, col.kind), "")
    quoted = _join('"', pc.replace_substring(values, '"', '""'), '"')
    return pc.if_else(pc.match_substring_regex(values, _CSV_QUOTED), quoted, values)


def _wall_text(series: pd.Series, kind: str) -> pa.Array:
    """Dates as `str(date)`; times in WIB as `str(datetime)` of their wall clock (the
    microseconds only where there are any, nanoseconds dropped)."""
    wall = (pd.to_datetime(series, utc=True).dt.tz_convert(WIB).dt.tz_localize(None)
            if kind == "time" else pd.to_datetime(series))
    missing = np.asarray(wall.isna())
    ns = np.where(missing, 0, wall.to_numpy(dtype="datetime64[ns]").view(np.int64))
    seconds = pa.array(ns // 10**9, pa.timestamp("s"), mask=missing)
    if kind != "time":
        return pc.strftime(seconds, "%Y-%m-%d").cast(_S)
    text = pc.strftime(seconds, "%Y-%m-%d %H:%M:%S").cast(_S)
    micro = (ns // 1000) % 1_000_000
    if not micro.any():
        return text
    fraction = pc.utf8_lpad(pc.cast(pa.array(micro), _S), 6, "0")
    return pc.if_else(pa.array(micro != 0), _join(text, ".", fraction), text)


# ----------------------------------------------------------------- rows as SpreadsheetML

_S = pa.large_string()
#: Characters XML 1.0 cannot carry, and texts that look like Excel's own _xHHHH_ escape.
_NEEDS_ESCAPE = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x{fffe}\x{ffff}]|_x[0-9A-Fa-f]{4}_"
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_LOOKS_ESCAPED = re.compile("_x(?=[0-9A-Fa-f]{4}_)")
_EDGE_SPACE = r"^[ \t\n\r]|[ \t\n\r]$"  # kept only with xml:space="preserve"
_DAY_NS = 86_400 * 10**9
_UNIX_DAY_SERIAL = 25_569  # 1970-01-01 in Excel's 1900 date system
_ROWS_PER_CHUNK = 20_000


def _join(*parts: pa.Array | str) -> pa.Array:
    """Element-wise concatenation of text arrays and constants; null where any is null."""
    return pc.binary_join_element_wise(
        *[pa.scalar(p, _S) if isinstance(p, str) else p for p in parts], pa.scalar("", _S))


def _escape_one(text: str) -> str:
    text = _LOOKS_ESCAPED.sub("_x005F_x", text)
    return _ILLEGAL.sub(lambda m: f"_x{ord(m.group()):04X}_", text)


def _xml_text(series: pd.Series) -> pa.Array:
    """Text escaped for an XML text node; null where empty. Control characters become
    Excel's _xHHHH_ escapes, as Excel itself writes them."""
    values = text_array(series)
    values = pc.if_else(pc.equal(values, ""), pa.scalar(None, _S), values)
    odd = pc.fill_null(pc.match_substring_regex(values, _NEEDS_ESCAPE), False)
    if pc.any(odd).as_py():
        where = np.flatnonzero(np.asarray(odd))
        texts = values.to_pylist()
        for i in where:
            texts[i] = _escape_one(texts[i])
        values = pa.array(texts, _S)
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("\r", "&#13;")):
        values = pc.replace_substring(values, char, entity)
    return values


def _serial(wall_ns: np.ndarray, missing: np.ndarray, with_time: bool) -> pa.Array:
    """Excel serial numbers (1900 date system) of naive wall-clock nanoseconds."""
    days = wall_ns // _DAY_NS
    serial_days = days + _UNIX_DAY_SERIAL
    serial_days = np.where((serial_days > 0) & (serial_days <= 60), serial_days - 1, serial_days)
    if with_time:
        serial = pa.array(serial_days + (wall_ns - days * _DAY_NS) / 1e9 / 86_400,
                          mask=missing)
    else:
        serial = pa.array(serial_days, mask=missing)
    return pc.cast(serial, _S)


def _number_text(series: pd.Series, kind: str) -> pa.Array:
    if kind == "money":
        return minor_text(series)
    if kind == "int":
        return pc.cast(pa.array(series, pa.int64()), _S)
    if kind == "time":
        wall = pd.to_datetime(series, utc=True).dt.tz_convert(WIB).dt.tz_localize(None)
    else:  # date: datetime.date objects or None
        wall = pd.to_datetime(series)
    missing = np.asarray(wall.isna())
    ns = wall.to_numpy(dtype="datetime64[ns]").view(np.int64)
    return _serial(np.where(missing, 0, ns), missing, kind == "time")


def _cells(frame: pd.DataFrame, col: Col, refs: pa.Array, style: pa.Array | str) -> pa.Array:
    """One column's <c> elements; an empty value is left out unless it carries a style."""
    if col.kind == "text":
        values = _xml_text(frame[col.field])
        edges = pc.fill_null(pc.match_substring_regex(values, _EDGE_SPACE), False)
        opening = pc.if_else(edges, pa.scalar('<t xml:space="preserve">', _S),
                             pa.scalar("<t>", _S))
        full = _join('<c r="', refs, '"', style, ' t="inlineStr"><is>', opening, values,
                     "</t></is></c>")
    else:
        values = _number_text(frame[col.field], col.kind)
        full = _join('<c r="', refs, '"', style, "><v>", values, "</v></c>")
    empty = _join('<c r="', refs, '"', style, "/>") if style != "" else pa.scalar("", _S)
    return pc.coalesce(full, empty)


def _sheet_rows(data: _SheetData) -> Iterator[bytes]:
    """The <row> elements of `data`, a chunk of rows at a time."""
    letters = [get_column_letter(i) for i in range(1, len(data.cols) + 1)]
    first = data.first_row
    for part in data.rows.chunks(0, data.count, _ROWS_PER_CHUNK):
        numbers = pc.cast(pa.array(np.arange(first, first + len(part), dtype=np.int64)), _S)
        first += len(part)
        flagged = None if data.marked is None else pa.array(
            np.asarray(data.marked(part), dtype=bool))
        cells = []
        for col, letter, (plain, marked) in zip(data.cols, letters, data.styles, strict=True):
            style: pa.Array | str = plain
            if flagged is not None and marked != plain:
                style = pc.if_else(flagged, pa.scalar(marked, _S), pa.scalar(plain, _S))
            cells.append(_cells(part, col, _join(letter, numbers), style))
        rows = _join('<row r="', numbers, '">', *cells, "</row>")
        yield bytes(joined_values(
            rows.combine_chunks() if isinstance(rows, pa.ChunkedArray) else rows))


#: zlib's level for the workbook's parts. The rows' XML is most of a large run's
#: workbook, and at the default level most of its writing time went to compressing it,
#: for a file only a little smaller (figures: `bench/ROUNDS.md`, the constants).
_ZIP_LEVEL = 2


def save_book(book: Workbook, tables: list[_SheetData], target: Path) -> None:
    """Save `book` to `target` with the table sheets' data rows in place."""
    frame_only = io.BytesIO()
    book.save(frame_only)
    by_part = {data.sheet.path.lstrip("/"): data for data in tables}
    with zipfile.ZipFile(frame_only) as source, zipfile.ZipFile(
            target, "w", zipfile.ZIP_DEFLATED, compresslevel=_ZIP_LEVEL) as out:
        for info in source.infolist():
            content = source.read(info)
            data = by_part.pop(info.filename, None)
            if data is None:
                out.writestr(info, content)
                continue
            head, tail = content.split(b"<sheetData>", 1)
            rows, tail = tail.split(b"</sheetData>", 1)
            with out.open(info.filename, "w", force_zip64=data.count > 200_000) as handle:
                handle.write(head + b"<sheetData>" + rows)
                for chunk in _sheet_rows(data):
                    handle.write(chunk)
                handle.write(b"</sheetData>" + tail)
    if by_part:
        raise RuntimeError(f"workbook parts not found for {sorted(by_part)}")


ROW_COLUMNS = (
    Col("Line", "line_no", "int"),
    Col("Type", "transaction_type"),
    Col("MerchantInvoice", "merchant_invoice"),
    Col("RefundInvoice", "refund_invoice"),
    Col("OVOReferenceNo", "ovo_reference_no"),
    Col("PaymentSource", "payment_source"),
    Col("TransactionDateTime (WIB)", "transaction_time", "time"),
    Col("GrossAmount", "gross", "money"),
    Col("MDRAmount", "mdr", "money"),
    Col("TaxAmount", "tax", "money"),
    Col("NetAmount", "net", "money"),
    Col("Record key", "record_key"),
    Col("Matched by", "match_rule"),
    Col("Record amount", "record_amount", "money"),
    Col("Record status", "record_status"),
    Col("Record date", "record_date", "date"),
    Col("Delta (file − record)", "delta", "money"),
    Col("Reason", "reason"),
    Col("Other findings", "flags"),
)

MISSING_COLUMNS = (
    Col("Kind", "kind"),
    Col("Record key", "record_key"),
    Col("Original payment", "original_reference_no"),
    Col("OVO reference", "reference_no"),
    Col("Amount", "signed_amount", "money"),
    Col("Status", "status"),
    Col("Record time (WIB)", "record_time", "time"),
    Col("Record date", "record_date", "date"),
    Col("Pay option", "pay_option"),
    Col("Settled later on", "closed_by_date", "date"),
)

OPEN_COLUMNS = (
    Col("Due on settlement date", "opened_date", "date"),
    Col("Kind", "kind"),
    Col("Record key", "record_key"),
    Col("Amount", "amount", "money"),
    Col("Record date", "record_date", "date"),
    Col("Age (working days)", "age_working_days", "int"),
)

REFUND_COLUMNS = (
    Col("Payment (partnerReferenceNo)", "payment"),
    Col("Payment amount", "payment_amount", "money"),
    Col("Refunded in records", "refunded_in_records", "money"),
    Col("Refunded as settled", "refunded_as_settled", "money"),
    Col("Delta (settled − records)", "delta", "money"),
    Col("Refunds in records", "refunds_in_records"),
    Col("Refund lines in this file", "file_lines"),
)


def _summary_sheet(book: Workbook, result: ReconResult, summary: Summary,
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
    run = summary.run
    run_time = None if run is None else run.started_at.astimezone(WIB).replace(tzinfo=None)
    facts: list[tuple[str, Any, str]] = [
        ("Merchant", result.merchant_id, "text"),
        ("Settlement date", result.settlement_date, "date"),
        ("Covered transaction dates",
         ", ".join(d.isoformat() for d in result.covered_dates), "text"),
        ("File", summary.file.name, "text"),
        ("SHA-256", summary.file.sha256[:16], "text"),
        ("Data rows", summary.file.rows, "int"),
        ("Run at (WIB)", run_time, "time"),
        ("Run", f"attempt {1 if run is None else run.attempt}"
                + (", re-run: replaces the earlier results" if run and run.rerun else ""),
         "text"),
        ("Exceptions", summary.exceptions, "int"),
        ("Open items from earlier dates", summary.open_items, "int"),
        ("Closed by this file", summary.closed_items, "int"),
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


def write_exception_workbook(result: ReconResult, summary: Summary, path: Path,
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
    stem = path.stem
    tables = []
    for name in cat.ROW_CATEGORIES:
        if name != cat.MATCHED:
            tables.append(table_sheet(
                book, name, ROW_COLUMNS, _CategoryRows(result.flagged, name),
                path.with_name(f"{stem}_{name}.csv"), options))
    tables.append(table_sheet(book, cat.MISSING_IN_SETTLEMENT, MISSING_COLUMNS,
                              FrameRows(result.missing),
                              path.with_name(f"{stem}_{cat.MISSING_IN_SETTLEMENT}.csv"),
                              options))
    threshold = options.open_item_alert_days
    tables.append(table_sheet(
        book, "Open items", OPEN_COLUMNS, FrameRows(result.all_open_items),
        path.with_name(f"{stem}_open_items.csv"), options,
        note="none: nothing is waiting to be settled",
        fill_when=lambda frame: frame["age_working_days"].to_numpy() >= threshold))
    tables.append(table_sheet(
        book, "Refund deltas", REFUND_COLUMNS, FrameRows(result.refund_deltas),
        path.with_name(f"{stem}_refund_deltas.csv"), options,
        note="none: no refunds in this file or the covered dates",
        font_when=lambda frame: frame["delta"].to_numpy() != 0))
    temp = path.with_name(f".{path.name}.tmp")
    save_book(book, [t for t in tables if t is not None], temp)
    temp.replace(path)
    return path
