"""The claim to OVO: the "transaction issue settlement" email OVO's partner documentation
asks for, with the transactions attached as CSV and XLSX."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
from collections.abc import Sequence
from dataclasses import astuple, fields
from email.message import EmailMessage

from openpyxl import Workbook

from recon.core.cases import ClaimLine
from recon.core.money import format_amount
from recon.report.mail import XLSX_TYPE, message_to

HEADERS = ("Case ID", "MerchantInvoice", "OVOReferenceNo", "Transaction time (WIB)",
           "Settled amount (IDR)", "Recorded amount (IDR)", "Delta (IDR)", "What is wrong")


MONEY_FIELDS = ("settled_amount", "recorded_amount", "delta")


def _cells(line: ClaimLine) -> list[str]:
    return [format_amount(getattr(line, f.name)) if f.name in MONEY_FIELDS
            else str(getattr(line, f.name)) for f in fields(line)]


def claim_csv(lines: Sequence[ClaimLine]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(HEADERS)
    writer.writerows(_cells(line) for line in lines)
    return text.getvalue().encode("utf-8-sig")


def claim_xlsx(lines: Sequence[ClaimLine]) -> bytes:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Transactions"
    sheet.append(list(HEADERS))
    for line in lines:
        sheet.append([None if value is None else value / 100 if f.name in MONEY_FIELDS
                      else value for f, value in zip(fields(line), astuple(line), strict=True)])
    for cells in sheet.iter_rows(min_row=2):
        for cell in cells[1:3]:
            cell.number_format = "@"  # keys stay text
        for cell in cells[4:7]:
            cell.number_format = "#,##0.00"
    for letter, width in zip("ABCDEFGH", (14, 26, 22, 20, 16, 16, 14, 60), strict=True):
        sheet.column_dimensions[letter].width = width
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def build_claim_email(merchant_id: str, lines: Sequence[ClaimLine], due: dt.date,
                      sender: str, to: tuple[str, ...], cc: tuple[str, ...] = ()
                      ) -> EmailMessage:
    """The claim: who asks, how many transactions, by when an answer is due, the list,
    and the same list attached as CSV and XLSX."""
    count = len(lines)
    subject = (f"[OVO recon] {merchant_id}: transaction issue settlement, {count} "
               f"transaction{'s' if count != 1 else ''}")
    message = message_to(sender, to, cc, subject)
    intro = (f"Merchant {merchant_id} asks OVO's settlement team to look into the "
             f"{count} transaction{'s' if count != 1 else ''} below, whose settlement does "
             f"not agree with the merchant's records. An answer is due by {due} under the "
             "merchant's agreement. The list is attached as CSV and XLSX.")
    rows = [_cells(line) for line in lines]
    text = intro + "\n\n" + "\n".join(" | ".join(row) for row in [list(HEADERS), *rows]) + "\n"
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                    for row in rows)
    body = (f"<html><body><p>{html.escape(intro)}</p><table border='1' cellpadding='4' "
            "cellspacing='0'><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
            + "</tr>" + cells + "</table></body></html>")
    message.set_content(text)
    message.add_alternative(body, subtype="html")
    stem = f"claim_{merchant_id}_{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}"
    message.add_attachment(claim_csv(lines), maintype="text", subtype="csv",
                           filename=f"{stem}.csv", params={"charset": "utf-8"})
    message.add_attachment(claim_xlsx(lines), maintype=XLSX_TYPE[0], subtype=XLSX_TYPE[1],
                           filename=f"{stem}.xlsx")
    return message
