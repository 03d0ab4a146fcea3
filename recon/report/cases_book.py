"""The Cases sheet: every open case of a merchant, oldest first, for the settlement team to
work in Excel or LibreOffice (state and resolution from drop-downs, owner and note typed),
and the edited rows read back for `recon cases import`.

Each row carries the case's version as the sheet was written: an import refuses a row
whose case changed since.
"""

from __future__ import annotations

import datetime as dt
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openpyxl import Workbook, load_workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation

from recon.core import cases
from recon.core.errors import ConfigError
from recon.system.paths import within

SHEET = "Cases"
#: (header, width) of each column, in order. The editable ones are marked by EDITABLE.
COLUMNS = (("Case ID", 14), ("First seen", 11), ("Age (working days)", 10), ("SLA due", 11),
           ("Overdue", 9), ("Category", 22), ("Kind", 8), ("Key", 26),
           ("Amount at risk (IDR)", 16), ("Delta (IDR)", 14), ("State", 18), ("Owner", 14),
           ("Resolution", 20), ("Note", 40), ("Version", 8))
EDITABLE = ("State", "Owner", "Resolution", "Note")
HEADER_FILL = PatternFill("solid", fgColor="1F4E78")
EDIT_FILL = PatternFill("solid", fgColor="FFF2CC")
MONEY = "#,##0.00"
DATE = "yyyy-mm-dd"


@dataclass(frozen=True)
class CaseLine:
    """One row of the sheet."""

    case_id: str
    first_seen: dt.date
    age: int
    sla_due: dt.date
    overdue: bool
    category: str
    kind: str
    key: str
    amount_at_risk: int  # minor units
    delta: int | None  # minor units; None where the case has none
    state: str
    owner: str
    resolution: str
    note: str
    version: int


def add_cases_sheet(book: Workbook, lines: Sequence[CaseLine]) -> None:
    """The Cases sheet in `book` (a normal, not write-only, workbook)."""
    sheet = book.create_sheet(SHEET)
    for number, (title, width) in enumerate(COLUMNS, start=1):
        cell = sheet.cell(row=1, column=number, value=title)
        cell.font, cell.fill = Font(bold=True, color="FFFFFF"), HEADER_FILL
        cell.alignment = Alignment(wrap_text=True, vertical="top")
        sheet.column_dimensions[get_column_letter(number)].width = width
    for at, line in enumerate(lines, start=2):
        values = (line.case_id, line.first_seen, line.age, line.sla_due,
                  "OVERDUE" if line.overdue else "", line.category, line.kind, line.key,
                  line.amount_at_risk / 100, None if line.delta is None else line.delta / 100,
                  line.state, line.owner, line.resolution, line.note, line.version)
        for number, value in enumerate(values, start=1):
            cell = sheet.cell(row=at, column=number, value=value)
            title = COLUMNS[number - 1][0]
            if isinstance(value, dt.date):
                cell.number_format = DATE
            elif title.endswith("(IDR)"):
                cell.number_format = MONEY
            elif title == "Key" or title == "Case ID":
                cell.number_format = "@"  # a key stays text, never a number or a date
            if title in EDITABLE:
                cell.fill = EDIT_FILL
    last = max(len(lines) + 1, 2)
    for title, choices in (("State", cases.STATES), ("Resolution", ("", *cases.RESOLUTIONS))):
        column = get_column_letter([c[0] for c in COLUMNS].index(title) + 1)
        listed = ",".join(choice for choice in choices if choice)
        check = DataValidation(type="list", formula1=f'"{listed}"', allow_blank=True,
                               showErrorMessage=True, errorTitle=title,
                               error=f"choose one of: {listed}")
        check.add(f"{column}2:{column}{last}")
        sheet.add_data_validation(check)
    sheet.freeze_panes = "B2"
    sheet.auto_filter.ref = f"A1:{get_column_letter(len(COLUMNS))}{last}"


def write_cases_workbook(lines: Sequence[CaseLine], folder: Path, name: str) -> Path:
    """A workbook of the Cases sheet alone, at <folder>/<name>."""
    book = Workbook()
    book.remove(book.active)
    add_cases_sheet(book, lines)
    path = within(folder, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    book.save(temp)
    temp.replace(path)
    return path


@dataclass(frozen=True)
class Edit:
    """A row of an edited Cases sheet: what the person left in the editable columns."""

    line: int
    case_id: str
    version: int
    state: str
    owner: str
    resolution: str
    note: str


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def read_edits(path: Path) -> list[Edit]:
    """The rows of a workbook's Cases sheet; ConfigError naming the file, the row and the
    column where it is not one this program wrote."""
    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{path}: not a workbook this program can read ({exc})") from exc
    try:
        if SHEET not in book.sheetnames:
            raise ConfigError(f"{path}: no {SHEET} sheet")
        rows = book[SHEET].iter_rows(values_only=True)
        header = [_text(v) for v in next(rows, ())]
        titles = [title for title, _ in COLUMNS]
        missing = [t for t in ("Case ID", *EDITABLE, "Version") if t not in header]
        if missing:
            raise ConfigError(f"{path}: {SHEET} row 1 has no {', '.join(missing)} column")
        at = {title: header.index(title) for title in titles if title in header}
        return [edit for number, row in enumerate(rows, start=2)
                if (edit := _edit(path, number, row, at)) is not None]
    finally:
        book.close()


def _edit(path: Path, number: int, row: tuple[Any, ...], at: dict[str, int]) -> Edit | None:
    def cell(title: str) -> Any:
        return row[at[title]] if at[title] < len(row) else None

    case_id = _text(cell("Case ID"))
    if not case_id:
        return None  # an empty row, as a spreadsheet leaves below the data
    version = cell("Version")
    try:
        whole = int(str(version).strip())
        if str(version).strip() != str(whole) and float(str(version)) != whole:
            raise ValueError(version)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {SHEET} row {number}, Version: {version!r} is not the "
                          "whole number this program wrote") from exc
    return Edit(line=number, case_id=case_id, version=whole, state=_text(cell("State")),
                owner=_text(cell("Owner")), resolution=_text(cell("Resolution")),
                note=_text(cell("Note")))
