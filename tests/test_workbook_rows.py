"""The table sheets' data rows, rendered column by column into SpreadsheetML, read back
by openpyxl, calamine and LibreOffice: every value, type, style and row number."""

from __future__ import annotations

import csv
import datetime as dt
import os
import re
import subprocess
from decimal import Decimal
from pathlib import Path
from unittest import mock

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from openpyxl import Workbook, load_workbook
from python_calamine import CalamineWorkbook

from recon.core.calendar import WIB
from recon.report import workbook as wb
from tests.conftest import libreoffice

COLS = (wb.Col("Line", "n", "int"), wb.Col("Text", "text"), wb.Col("Amount", "amount", "money"),
        wb.Col("At (WIB)", "at", "time"), wb.Col("On", "on", "date"))
TEXTS = st.text(st.characters(exclude_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["=1+1", "@A1", " lead", "trail ", "a&b<c>d", "line\r\nbreak", "_x0041_", "\x01\x1f",
     "#N/A", "000123", "\ufffe"])
ROW = st.tuples(
    TEXTS,
    st.none() | st.integers(-10**15, 10**15),
    st.none() | st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2099, 12, 31)).map(
        lambda t: t.replace(microsecond=0)),
    st.none() | st.dates(dt.date(1990, 1, 1), dt.date(2099, 12, 31)))


def _frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame({
        "n": pd.Series(range(1, len(rows) + 1), dtype="int64"),
        "text": pd.Series([r[0] for r in rows], dtype="str"),
        "amount": pd.Series([r[1] for r in rows], dtype="Int64"),
        "at": pd.Series([r[2] for r in rows], dtype="datetime64[ns]").dt.tz_localize(WIB)
        .dt.tz_convert("UTC"),
        "on": pd.Series([r[3] for r in rows], dtype="object"),
    })


def _write(frame: pd.DataFrame, path: Path, **flag) -> Path:
    book = Workbook(write_only=True)
    data = wb.table_sheet(book, "T", COLS, wb.FrameRows(frame), path.with_suffix(".csv"),
                          wb.WorkbookOptions(), **flag)
    wb.save_book(book, [data] if data is not None else [], path)
    return path


def _unescape(text: str) -> str:
    """How Excel reads a stored text: _xHHHH_ is the character HHHH."""
    return re.sub("_x([0-9A-Fa-f]{4})_", lambda m: chr(int(m.group(1), 16)), text)


def _expected(row: tuple) -> list[object]:
    text, amount, at, on = row
    return [text or None, None if amount is None else Decimal(amount) / 100, at,
            None if on is None else dt.datetime.combine(on, dt.time())]


@settings(max_examples=60, deadline=None)
@given(st.lists(ROW, min_size=1, max_size=25), st.integers(1, 9))
def test_rows_read_back_exactly(tmp_path_factory, rows: list[tuple], chunk: int) -> None:
    path = tmp_path_factory.mktemp("rows") / "t.xlsx"
    with mock.patch.object(wb, "_ROWS_PER_CHUNK", chunk):  # rows span several chunks
        _write(_frame(rows), path)
    sheet = load_workbook(path)["T"]
    assert [c.value for c in sheet[1]] == [c.title for c in COLS]
    assert sheet.max_row == len(rows) + 1
    for number, (row, cells) in enumerate(zip(rows, sheet.iter_rows(min_row=2), strict=True), 1):
        values = {c.column: c for c in cells}
        assert values[1].value == number and values[1].data_type == "n"
        text = values.get(2)
        assert (None if text is None or text.value is None else _unescape(text.value)) == (
            row[0] or None)
        assert text is None or text.value is None or text.data_type == "s"  # never a formula
        got = [values[i].value if i in values else None for i in (3, 4, 5)]
        amount, at, on = _expected(row)[1:]
        assert got[0] == (None if amount is None else float(amount))
        assert got[1] == at and got[2] == on
        if 3 in values and got[0] is not None:
            assert values[3].number_format == wb.MONEY_FORMAT
        if got[1] is not None:
            assert values[4].number_format == wb.TIME_FORMAT
        if got[2] is not None:
            assert values[5].number_format == wb.DATE_FORMAT


def test_flagged_rows_carry_the_fill_on_every_cell_even_empty_ones(tmp_path: Path) -> None:
    rows = [("a", 1, None, None), ("b", None, None, dt.date(2026, 11, 30)), ("c", 3, None, None)]
    path = _write(_frame(rows), tmp_path / "t.xlsx",
                  fill_when=lambda frame: frame["text"].to_numpy() != "b")
    sheet = load_workbook(path)["T"]
    for row in (2, 4):
        for column in "ABCDE":
            assert sheet[f"{column}{row}"].fill.fgColor.rgb.endswith("F8CBAD"), f"{column}{row}"
    assert all(sheet[f"{c}3"].fill.fgColor.rgb in (None, "00000000") for c in "ABCDE")
    assert sheet["E3"].number_format == wb.DATE_FORMAT and sheet["E2"].value is None


def test_calamine_reads_what_openpyxl_reads(tmp_path: Path) -> None:
    rows = [("INV-1", 123450, dt.datetime(2026, 11, 27, 10, 0, 5), dt.date(2026, 11, 27)),
            ("=HYPERLINK(\"x\")", -5, None, None), ("a&b<c>", None, None, None)]
    path = _write(_frame(rows), tmp_path / "t.xlsx")
    got = CalamineWorkbook.from_path(str(path)).get_sheet_by_name("T").to_python()
    assert got[0] == [c.title for c in COLS]
    assert got[1] == [1, "INV-1", 1234.5, dt.datetime(2026, 11, 27, 10, 0, 5),
                      dt.date(2026, 11, 27)]
    assert got[2][:3] == [2, "=HYPERLINK(\"x\")", -0.05] and got[3][:2] == [3, "a&b<c>"]


def test_libreoffice_shows_the_rows_as_formatted(tmp_path: Path) -> None:
    soffice = libreoffice()
    rows = [("INV-1", 123450, dt.datetime(2026, 11, 27, 10, 0, 5), dt.date(2026, 11, 27)),
            ("+SUM(1,2)", -5, None, None), (" a&b<c> ", None, None, dt.date(2026, 1, 2))]
    path = _write(_frame(rows), tmp_path / "t.xlsx")
    # Comma, double quote, UTF-8, cell contents as shown (the sheet's number formats).
    as_shown = 'csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,true'
    done = subprocess.run([soffice, "--headless", "--norestore", "--convert-to", as_shown,
                           "--outdir", str(tmp_path / "csv"), str(path)],
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    with (tmp_path / "csv" / "t.csv").open(newline="", encoding="utf-8") as handle:
        shown = list(csv.reader(handle))
    assert shown == [[c.title for c in COLS],
                     ["1", "INV-1", "1,234.50", "2026-11-27 10:00:05", "2026-11-27"],
                     ["2", "+SUM(1,2)", "-0.05", "", ""],
                     ["3", " a&b<c> ", "", "", "2026-01-02"]]
