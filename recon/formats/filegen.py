"""Write settlement files in the ovo-v1 layout (for the demo, samples, tests, benchmarks)."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

HEADER = ("SettlementDate", "TransactionDateTime", "MerchantID", "StoreID", "MerchantInvoice",
          "RefundInvoice", "OVOReferenceNo", "TransactionType", "PaymentSource", "GrossAmount",
          "MDRAmount", "TaxAmount", "NetAmount")


def _total(rows: Sequence[Mapping[str, Any]], column: str) -> Decimal:
    total = Decimal("0.00")
    for row in rows:
        try:
            total += Decimal(str(row[column]))
        except ArithmeticError:
            continue
    return total


def trailer_row(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return ["TOTAL", str(len(rows)), f"{_total(rows, 'GrossAmount'):.2f}",
            f"{_total(rows, 'NetAmount'):.2f}"]


def write_settlement_csv(rows: Sequence[Mapping[str, Any]], path: Path, delimiter: str = ",",
                         trailer: bool = True, bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8-sig" if bom else "utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
        writer.writerow(HEADER)
        for row in rows:
            writer.writerow([row.get(col, "") for col in HEADER])
        if trailer:
            writer.writerow(trailer_row(rows))
    return path


def write_settlement_xlsx(rows: Sequence[Mapping[str, Any]], path: Path,
                          trailer: bool = True) -> Path:
    from openpyxl import Workbook

    path.parent.mkdir(parents=True, exist_ok=True)
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Settlement"
    sheet.append(list(HEADER))
    for row in rows:
        sheet.append([str(row.get(col, "")) for col in HEADER])
    if trailer:
        sheet.append(trailer_row(rows))
    for cells in sheet.iter_rows():
        for cell in cells:
            cell.data_type = "s"
    book.save(path)
    return path
